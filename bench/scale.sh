#!/usr/bin/env bash
# bench/scale.sh: how far scale-out goes on this machine (docs/SCALE-OUT.md,
# issue 14). Starts, all on 127.0.0.x:
#   - a throwaway PostgreSQL cluster (temp dir, port PG_PORT, password auth);
#   - one run_server on SQLite (its own file), the yardstick;
#   - three run_servers on that one PostgreSQL database;
#   - HAProxy (tcp, leastconn, send-proxy, from source 127.0.0.2, which the
#     servers name with --trusted-proxy) with three frontends: to server 1,
#     to servers 1-2, to servers 1-3.
# then runs ROUNDS interleaved rounds of run_bench (login cycles/s, then
# registrations/s) against five configurations:
#   sqlite   the SQLite server, directly
#   pg1      PostgreSQL server 1, directly (from 127.0.0.1: no PROXY header)
#   pg1-hap  HAProxy to server 1 (the cost of the front alone)
#   pg2-hap  HAProxy to servers 1 and 2
#   pg3-hap  HAProxy to servers 1, 2 and 3
# The order of the configurations rotates from round to round. Each run is
# one table row: rate, p99, errors, and where the CPU went during it: cores
# used (CPU seconds / elapsed) and CPU microseconds per operation of
# PostgreSQL (postmaster, backends, WAL writer... and the exited children it
# reaped), HAProxy, the run_servers (all of them) and run_bench, plus the rest
# of the machine (other users of these cores, softirq) and its idle cores.
# At the end: each configuration's median and its ratio to SQLite; then one
# calibration run per mode against pg1 that counts PostgreSQL transactions and
# WAL flushes per operation (pg_stat_database, pg_stat_wal: read after 11 s, as
# PostgreSQL 15 publishes a backend's counters up to 10 s late), and the bytes
# per user of USERS + SCRAM_SHA_256 with their indexes.
#
# Settings (environment):
#   ROUNDS=3         interleaved rounds (1..20)
#   CONNS=8          run_bench --conns (1..512)
#   SECS=4           run_bench --secs per run (1..60)
#   PORT_BASE=18100  ports PORT_BASE+1 .. +23 on 127.0.0.1 (keep below 32768)
#   PG_PORT          PostgreSQL's port (default PORT_BASE+32)
#   SKIP_BUILD=1     use target/release as it is (default: cargo build --release)
#   OUT              a directory to keep the raw JSON lines and logs in
# Needs PostgreSQL's server binaries, psql and haproxy (Debian: apt-get install
# -y postgresql haproxy). As root, PostgreSQL runs as the postgres account.
#
# Every process started here is stopped by its PID on exit, however the script
# ends, and the temporary directory is deleted. Every loop has a fixed count;
# run_bench's --timeout bounds a stuck connection.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-8}
SECS=${SECS:-4}
PORT_BASE=${PORT_BASE:-18100}
PG_PORT=${PG_PORT:-$((PORT_BASE + 32))}
B=target/release

say() { printf 'scale: %s\n' "$*" >&2; }
die() {
    say "$*"
    exit 1
}
usage() { sed -n '2,42p' "$0" | sed 's/^# \{0,1\}//'; }

case "${1:-}" in
    -h | --help) usage; exit 0 ;;
    "") ;;
    *) usage >&2; exit 2 ;;
esac

# Settings are numbers in a sane range, or the run stops before starting anything.
in_range() {
    if ! [[ $2 =~ ^[0-9]+$ ]] || ((10#$2 < $3 || 10#$2 > $4)); then
        say "$1=$2: want an integer in $3..$4"
        exit 2
    fi
}
in_range ROUNDS "$ROUNDS" 1 20
in_range CONNS "$CONNS" 1 512
in_range SECS "$SECS" 1 60
in_range PORT_BASE "$PORT_BASE" 1024 32700
in_range PG_PORT "$PG_PORT" 1024 65535

pg_bin() {
    if command -v initdb >/dev/null 2>&1 && command -v postgres >/dev/null 2>&1; then
        dirname "$(command -v postgres)"
        return
    fi
    local newest
    newest=$(find /usr/lib/postgresql -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1)
    [ -n "$newest" ] && [ -x "$newest/initdb" ] || return 1
    echo "$newest"
}
PG_BIN=$(pg_bin) || die "PostgreSQL's binaries not found (apt-get install -y postgresql)"
command -v haproxy >/dev/null || die "haproxy not found (apt-get install -y haproxy)"
command -v psql >/dev/null || die "psql not found (apt-get install -y postgresql-client)"

# PostgreSQL refuses to run as root: run its commands as the postgres account.
as_pg() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

if [ "${SKIP_BUILD:-0}" != 1 ]; then
    say "building the release binaries"
    cargo build --release --bins >/dev/null
fi
if [ ! -x "$B/run_server" ] || [ ! -x "$B/run_bench" ]; then
    die "no $B/run_server or $B/run_bench (unset SKIP_BUILD)"
fi

P_SQL=$((PORT_BASE + 1))                            # SQLite server
P_PG=($((PORT_BASE + 11)) $((PORT_BASE + 12)) $((PORT_BASE + 13))) # PostgreSQL servers 1-3
P_HAP=($((PORT_BASE + 21)) $((PORT_BASE + 22)) $((PORT_BASE + 23))) # HAProxy to 1, 2, 3 of them
CONFIGS=("sqlite:$P_SQL" "pg1:${P_PG[0]}" "pg1-hap:${P_HAP[0]}" "pg2-hap:${P_HAP[1]}" "pg3-hap:${P_HAP[2]}")

T=$(mktemp -d /tmp/dccn-scale.XXXXXX)
server_pids=()
hap_pid=""
pg_pid=""

# Stops one process by its PID: signal $2 (default TERM), then KILL after 10 s.
stop_pid() {
    local pid=$1 i
    kill -"${2:-TERM}" "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}
cleanup() {
    local p
    if [ -n "$hap_pid" ]; then stop_pid "$hap_pid"; fi
    for p in "${server_pids[@]}"; do stop_pid "$p"; done
    # The postmaster's PID: INT is PostgreSQL's fast shutdown (TERM, the
    # smart one, would wait for clients); its children go with it.
    if [ -n "$pg_pid" ]; then stop_pid "$pg_pid" INT; fi
    if [ -n "${OUT:-}" ]; then
        mkdir -p "$OUT" 2>/dev/null || true
        cp "$T"/*.log "$T"/results.tsv "$OUT"/ 2>/dev/null || true
    fi
    rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Waits (at most $2 seconds) until 127.0.0.1:$1 greets like our server.
wait_greeting() {
    local port=$1 limit=$2 i line
    for ((i = 0; i < limit * 5; i++)); do
        line=$(timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port && head -n 1 <&3" 2>/dev/null) || true
        [ "${line%$'\r'}" = "Connected to server" ] && return 0
        sleep 0.2
    done
    return 1
}

# 1. PostgreSQL: a fresh cluster, password auth, 127.0.0.1 only.
umask 077
if [ "$(id -u)" = 0 ]; then chmod 711 "$T"; fi # the postgres account enters, lists nothing
PG="$T/pg"
mkdir -p "$PG/socket"
PG_PASSWORD=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
printf '%s\n' "$PG_PASSWORD" >"$PG/pwfile"
if [ "$(id -u)" = 0 ]; then chown -R postgres: "$PG"; fi
as_pg "$PG_BIN/initdb" -D "$PG/data" -U postgres -A scram-sha-256 -E UTF8 --locale=C \
    --pwfile="$PG/pwfile" --no-instructions >"$T/initdb.log" 2>&1 || die "initdb failed: $(tail -n 5 "$T/initdb.log")"
rm -f "$PG/pwfile"
as_pg "$PG_BIN/pg_ctl" -D "$PG/data" -l "$PG/server.log" -w -t 60 \
    -o "-p $PG_PORT -k $PG/socket -c listen_addresses=127.0.0.1" start >/dev/null ||
    die "PostgreSQL did not start: $(tail -n 5 "$PG/server.log")"
pg_pid=$(head -n 1 "$PG/data/postmaster.pid")
export PGPASSWORD=$PG_PASSWORD # psql's, so the password stays out of the process list
DB_URL="postgres://postgres:$PG_PASSWORD@127.0.0.1:$PG_PORT/postgres"
pg_query() { psql -X -q -A -t -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -c "$1"; }
say "PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PG_PORT (PID $pg_pid)"

# 2. The servers: quotas and per-address caps off (every client is 127.0.0.1);
#    the PostgreSQL ones trust HAProxy's source address.
server_flags=(--host 127.0.0.1 --max-registrations-per-address 0 --max-sessions-per-address 0)
"$B/run_server" "${server_flags[@]}" --port "$P_SQL" --db "$T/sqlite.db" >"$T/server-sqlite.log" 2>&1 &
server_pids+=($!)
for n in 0 1 2; do
    DCCN_DB="$DB_URL" "$B/run_server" "${server_flags[@]}" --port "${P_PG[n]}" \
        --trusted-proxy 127.0.0.2/32 >"$T/server-pg$((n + 1)).log" 2>&1 &
    server_pids+=($!)
    # The first server creates the tables; the others then find them.
    if [ "$n" = 0 ]; then
        wait_greeting "${P_PG[0]}" 30 || die "PostgreSQL server 1 did not greet: $(tail -n 5 "$T/server-pg1.log")"
    fi
done
for port in "$P_SQL" "${P_PG[@]}"; do
    wait_greeting "$port" 30 || die "no greeting on $port: see the server logs (OUT=dir keeps them)"
done

# 3. HAProxy: one backend per server count, all from 127.0.0.2.
{
    cat <<CFG
global
    maxconn 4096
defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h
    timeout check 3s
CFG
    for n in 1 2 3; do
        cat <<CFG
frontend pg$n
    bind 127.0.0.1:${P_HAP[n - 1]}
    default_backend pg$n
backend pg$n
    balance leastconn
    source 127.0.0.2
    option tcp-check
    tcp-check expect string "Connected to server"
    tcp-check send "quit\n"
    tcp-check expect string "__quit__"
    default-server send-proxy check check-send-proxy inter 2s fall 2 rise 2
CFG
        for ((s = 1; s <= n; s++)); do
            echo "    server s$s 127.0.0.1:${P_PG[s - 1]}"
        done
    done
} >"$T/haproxy.cfg"
haproxy -f "$T/haproxy.cfg" -db >"$T/haproxy.log" 2>&1 &
hap_pid=$!
for port in "${P_HAP[@]}"; do
    wait_greeting "$port" 30 || die "no greeting through HAProxy on $port: $(tail -n 5 "$T/haproxy.log")"
done
sleep 4 # every server's first health checks have passed (rise 2, inter 2s)

# 4. The bench user u0x0, in SQLite and in PostgreSQL.
export DCCN_BENCH_PASSWORD=Passw0rd1
for port in "$P_SQL" "${P_PG[0]}"; do
    "$B/run_bench" --addr "127.0.0.1:$port" --mode register --conns 1 --secs 0.01 --prefix u --json >/dev/null ||
        die "could not create the bench user on $port"
done

# CPU accounting from /proc, in clock ticks.
TICK=$(getconf CLK_TCK)
NCPU=$(getconf _NPROCESSORS_ONLN)
# utime+stime of one process (all its threads); with "reaped", also cutime+cstime.
proc_ticks() {
    local stat reaped=${2:-}
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || { echo 0; return; }
    stat=${stat##*) } # after the command name, field 3 (state) comes first
    # shellcheck disable=SC2086
    set -- $stat
    if [ "$reaped" = reaped ]; then echo $((${12} + ${13} + ${14} + ${15})); else echo $((${12} + ${13})); fi
}
pg_ticks() {
    local total child
    total=$(proc_ticks "$pg_pid" reaped)
    for child in $(ps -o pid= --ppid "$pg_pid"); do
        total=$((total + $(proc_ticks "$child")))
    done
    echo "$total"
}
servers_ticks() {
    local total=0 p
    for p in "${server_pids[@]}"; do total=$((total + $(proc_ticks "$p"))); done
    echo "$total"
}
# Machine: busy and total ticks over all CPUs (idle and iowait are not busy).
machine_ticks() {
    awk '/^cpu / { t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t }' /proc/stat
}
json_field() { sed -n "s/.*\"$1\":\([0-9.]*\).*/\1/p" "$2"; }

printf '%s\n' "round config mode rate p99_ms errors pg_cores hap_cores srv_cores bench_cores other_cores idle_cores pg_us hap_us srv_us bench_us failed" >"$T/results.tsv"
HEAD_FMT='%-5s %-8s %-8s %9s %7s %4s %5s | %5s %5s %5s %5s %5s %5s | %6s %6s %6s %6s\n'
print_head() {
    # shellcheck disable=SC2059
    printf "$HEAD_FMT" round config mode "ok/s" "p99 ms" err fail pg hap srv bench other idle pg hap srv bench
    # shellcheck disable=SC2059
    printf "$HEAD_FMT" "" "" "" "" "" "" "" "cores" "" "" "" "" "" "us/op" "" "" ""
}

# One run_bench run with the CPU accounting around it; one row.
measure() {
    local round=$1 name=$2 port=$3 mode=$4 prefix=$5
    local pg0 hap0 srv0 m0 pg1 hap1 srv1 m1 rc=0
    pg0=$(pg_ticks); hap0=$(proc_ticks "$hap_pid"); srv0=$(servers_ticks); m0=$(machine_ticks)
    TIMEFORMAT='%U %S'
    { time "$B/run_bench" --addr "127.0.0.1:$port" --mode "$mode" --conns "$CONNS" --secs "$SECS" \
        --user u0x0 --prefix "$prefix" --json >"$T/run.json" 2>"$T/run.err"; } 2>"$T/run.time" || rc=$?
    pg1=$(pg_ticks); hap1=$(proc_ticks "$hap_pid"); srv1=$(servers_ticks); m1=$(machine_ticks)
    if [ ! -s "$T/run.json" ]; then
        say "round $round $name $mode: run_bench exit $rc: $(head -n 3 "$T/run.err")"
        return 0
    fi
    cat "$T/run.json" >>"$T/runs.log"
    [ "$rc" = 0 ] || say "round $round $name $mode: run_bench exit $rc: $(head -n 3 "$T/run.err" | tr '\n' ' ')"
    local rate p99 ok failed errors bench_s
    rate=$(json_field rate_per_s "$T/run.json")
    p99=$(json_field p99_ms "$T/run.json")
    ok=$(json_field ok "$T/run.json")
    errors=$(json_field errors "$T/run.json")
    failed=$(json_field failed "$T/run.json")
    bench_s=$(awk '{ print $1 + $2 }' "$T/run.time")
    # shellcheck disable=SC2086
    awk -v r="$round" -v n="$name" -v mo="$mode" -v rate="$rate" -v p99="$p99" -v err="$errors" -v failed="$failed" \
        -v ok="$ok" -v tick="$TICK" -v ncpu="$NCPU" -v bench="$bench_s" \
        -v pg=$((pg1 - pg0)) -v hap=$((hap1 - hap0)) -v srv=$((srv1 - srv0)) \
        -v mb0="${m0% *}" -v mt0="${m0#* }" -v mb1="${m1% *}" -v mt1="${m1#* }" -v fmt="$HEAD_FMT" '
        BEGIN {
            pg /= tick; hap /= tick; srv /= tick
            wall = (mt1 - mt0) / ncpu / tick           # seconds between the snapshots
            busy = (mb1 - mb0) / tick / wall            # cores busy, whole machine
            idle = ncpu - busy
            other = busy - (pg + hap + srv + bench) / wall
            if (ok < 1) ok = 1
            printf fmt, r, n, mo, sprintf("%.0f", rate), sprintf("%.1f", p99), err, failed,
                sprintf("%.2f", pg / wall), sprintf("%.2f", hap / wall), sprintf("%.2f", srv / wall),
                sprintf("%.2f", bench / wall), sprintf("%.2f", other), sprintf("%.2f", idle),
                sprintf("%.0f", pg * 1e6 / ok), sprintf("%.0f", hap * 1e6 / ok),
                sprintf("%.0f", srv * 1e6 / ok), sprintf("%.0f", bench * 1e6 / ok)
            printf "%s %s %s %.1f %.3f %d %.3f %.3f %.3f %.3f %.3f %.3f %.0f %.0f %.0f %.0f %d\n",
                r, n, mo, rate, p99, err, pg / wall, hap / wall, srv / wall, bench / wall, other, idle,
                pg * 1e6 / ok, hap * 1e6 / ok, srv * 1e6 / ok, bench * 1e6 / ok, failed >> "'"$T/results.tsv"'"
        }'
}

say "load before: $(cut -d' ' -f1-3 /proc/loadavg); $NCPU CPUs; run_bench --conns $CONNS --secs $SECS, $ROUNDS rounds"
echo "# bench/scale.sh $(date -u '+%Y-%m-%d %H:%M UTC'), load average before: $(cut -d' ' -f1-3 /proc/loadavg), CPUs: $NCPU, run_bench --conns $CONNS --secs $SECS"
print_head
nconf=${#CONFIGS[@]}
for ((round = 1; round <= ROUNDS; round++)); do
    for mode in login register; do
        for ((i = 0; i < nconf; i++)); do
            c=${CONFIGS[(i + round - 1) % nconf]}
            measure "$round" "${c%%:*}" "${c##*:}" "$mode" "r$round.${c%%:*}."
        done
    done
done

echo
echo "# medians over $ROUNDS rounds (ratio: to sqlite's median); cores and us/op: medians too"
awk '
    NR == 1 { next }
    { key = $2 " " $3; n[key]++; for (f = 4; f <= 17; f++) v[key, f, n[key]] = $f }
    function median(key, f,    m, i, j, a, t) {
        m = n[key]
        for (i = 1; i <= m; i++) a[i] = v[key, f, i]
        for (i = 2; i <= m; i++) for (j = i; j > 1 && a[j - 1] > a[j]; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
        return m % 2 ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2
    }
    END {
        split("sqlite pg1 pg1-hap pg2-hap pg3-hap", cfg, " ")
        split("login register", modes, " ")
        printf "%-8s %-8s %9s %6s %7s %5s | %5s %5s %5s %5s %5s %5s | %6s %6s %6s %6s\n", "config", "mode", "ok/s", "ratio", "p99 ms", "fail", "pg", "hap", "srv", "bench", "other", "idle", "pg", "hap", "srv", "bench"
        for (mi = 1; mi <= 2; mi++) for (ci = 1; ci <= 5; ci++) {
            key = cfg[ci] " " modes[mi]
            if (!n[key]) continue
            base = n["sqlite " modes[mi]] ? median("sqlite " modes[mi], 4) : 0
            r = median(key, 4)
            printf "%-8s %-8s %9.0f %6s %7.1f %5d | %5.2f %5.2f %5.2f %5.2f %5.2f %5.2f | %6.0f %6.0f %6.0f %6.0f\n",
                cfg[ci], modes[mi], r, (base > 0 ? sprintf("%.2f", r / base) : "-"), median(key, 5), median(key, 17),
                median(key, 7), median(key, 8), median(key, 9), median(key, 10), median(key, 11), median(key, 12),
                median(key, 13), median(key, 14), median(key, 15), median(key, 16)
        }
    }' "$T/results.tsv"

# Calibration: PostgreSQL transactions (each a round trip or more) and WAL
# flushes per operation, on pg1 directly. Counters are read after 11 s.
pg_counters() {
    pg_query "SELECT (SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = 'postgres'),
                     (SELECT wal_sync FROM pg_stat_wal), (SELECT wal_bytes FROM pg_stat_wal)" | tr '|' ' '
}
echo
echo "# PostgreSQL per operation (pg1 directly, one run each, counters read 11 s after)"
for mode in login register; do
    sleep 11
    read -r x0 s0 w0 < <(pg_counters)
    "$B/run_bench" --addr "127.0.0.1:${P_PG[0]}" --mode "$mode" --conns "$CONNS" --secs "$SECS" \
        --user u0x0 --prefix "cal.$mode." --json >"$T/run.json" 2>"$T/run.err" || say "calibration $mode: $(head -n 3 "$T/run.err" | tr '\n' ' ')"
    ok=$(json_field ok "$T/run.json")
    failed=$(json_field failed "$T/run.json")
    sleep 11
    read -r x1 s1 w1 < <(pg_counters)
    awk -v m="$mode" -v ok="${ok:-0}" -v failed="${failed:-0}" -v x=$((x1 - x0)) -v s=$((s1 - s0)) -v w="$w0" -v w1="$w1" 'BEGIN {
        if (ok < 1) { print m ": no successful operation"; exit }
        printf "%-8s %d ok, %d failed: %.2f transactions, %.3f WAL flushes, %.0f WAL bytes per ok operation\n", m, ok, failed, x / ok, s / ok, (w1 - w) / ok }'
done

echo
echo "# bytes per user in PostgreSQL (heap + indexes + TOAST)"
pg_query "SELECT 'users: ' || (SELECT count(*) FROM users) ||
       ', USERS ' || pg_total_relation_size('users') || ' B (index ' || pg_indexes_size('users') || ' B)' ||
       ', SCRAM_SHA_256 ' || pg_total_relation_size('scram_sha_256') || ' B (index ' || pg_indexes_size('scram_sha_256') || ' B)' ||
       ', per user ' || round((pg_total_relation_size('users') + pg_total_relation_size('scram_sha_256'))::numeric
                              / greatest((SELECT count(*) FROM users), 1)) || ' B'"
echo "# sessions served (health checks included): sqlite $(grep -c 'session of' "$T/server-sqlite.log" || true)," \
    "pg1 $(grep -c 'session of' "$T/server-pg1.log" || true), pg2 $(grep -c 'session of' "$T/server-pg2.log" || true)," \
    "pg3 $(grep -c 'session of' "$T/server-pg3.log" || true)"
say "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
