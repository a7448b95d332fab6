#!/usr/bin/env bash
# bench/issue10.sh: the measurements of issue 10 (parts 3 and 4) and issue 12's
# SCRAM speed figures, with run_bench against release builds of run_server.
#
# Usage: bench/issue10.sh [churn] [backlog] [connect] [fds] [fds2] [scram] [flood]   (none: all)
#   churn    whoami (--mode session, 8 conns) fresh, right after 3 s of login
#            cycles, and 12 s later, for three thread-reuse policies, interleaved
#   backlog  login cycles at 32 conns, backlog 8, RUNS runs: ListenOverflows delta
#            and the worst latency per run
#   connect  --mode login and --mode connect interleaved at 8 and 32 conns
#   fds      --max-sessions 30000 --max-sessions-per-address 0, HOLD idle sessions
#            held while logins run (vs without), RSS per idle session, and what a
#            client beyond the cap hears
#   fds2     the same with the idle sessions held from 127.0.0.2 by bench/hold_idle.py
#   scram    login-scram vs login at 8 and 32 conns, interleaved
#   flood    registrations/s, and login latency during a registration flood vs
#            alone vs on a second server during the flood (CPU without the lock)
#
# Settings (environment):
#   SECS=4          seconds per run          REPS=3   interleaved repetitions
#   RUNS=10         backlog runs             HOLD=15500 idle sessions (fds; see
#                   docs/PERFORMANCE.md: vm.max_map_count 65530 stops threads near 16,360)
#   PORT_BASE=23100 ports PORT_BASE+1 .. +9 (below 32768)
#   OUT             raw results and logs (default: a new temp dir)
#   SKIP_BUILD=1    use the release binaries already built
#   FIFO=1          scram, flood: accept threads put to SCHED_FIFO 1 with chrt first
#
# Needs: nstat (iproute2), chrt and prlimit (util-linux), python3; the backlog
# section and FIFO=1 need the right to set SCHED_FIFO (root or CAP_SYS_NICE);
# fds/fds2 need `ulimit -n` above HOLD + 100 (the run_bench process holds them).
#
# Every loop is bounded (a fixed count of runs; waits poll a fixed number of
# times); every server and background client started here is stopped by its
# PID on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SECS=${SECS:-4}
REPS=${REPS:-3}
RUNS=${RUNS:-10}
HOLD=${HOLD:-15500}
PORT_BASE=${PORT_BASE:-23100}
OUT=${OUT:-$(mktemp -d /tmp/dccn-issue10.XXXXXX)}
mkdir -p "$OUT/bin"
if ((PORT_BASE + 9 >= 32768)); then
    echo "issue10.sh: PORT_BASE too high (use ports below 32768)" >&2
    exit 2
fi
SECTIONS=("$@")
((${#SECTIONS[@]})) || SECTIONS=(churn backlog connect fds fds2 scram flood)

# Default server settings: no DCCN_* variable may change them.
for v in $(env | sed -n 's/^\(DCCN_[A-Z_]*\)=.*/\1/p'); do unset "$v"; done
export DCCN_BENCH_PASSWORD=Passw0rd1

if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    (cd "$ROOT" && cargo build --release --locked --quiet --bin run_server --bin run_bench)
fi
# Copies under distinct names: a broad pkill elsewhere on this shared machine
# must not stop them in the middle of a run.
cp "$ROOT/target/release/run_server" "$OUT/bin/i10-server"
cp "$ROOT/target/release/run_bench" "$OUT/bin/i10-bench"
SERVER=$OUT/bin/i10-server
BENCH=$OUT/bin/i10-bench

PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_port() { # port: up to 10 s until it accepts
    local i
    for ((i = 0; i < 100; i++)); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "issue10.sh: nothing listens on port $1" >&2
    exit 1
}

# start NAME PORT args...: a fresh server with a fresh database; sets SPID.
start() {
    local name=$1 port=$2
    shift 2
    rm -f "$OUT/$name.db" "$OUT/$name.db-wal" "$OUT/$name.db-shm"
    # The registration quota (100 per address per 10 min) would stop the
    # registration floods from 127.0.0.1: it has its own tests.
    "$SERVER" --port "$port" --db "$OUT/$name.db" --max-registrations-per-address 0 "$@" \
        >"$OUT/$name.out" 2>"$OUT/$name.log" &
    SPID=$!
    PIDS+=("$SPID")
    wait_port "$port"
    # The bench user u0x0 (password Passw0rd1).
    "$BENCH" --addr "127.0.0.1:$port" --mode register --conns 1 --secs 0.01 --prefix u --json >/dev/null
}
# forget PID: drop a reaped process from the cleanup list, so that the trap never
# signals a PID the system may have given to someone else since.
forget() {
    local keep=() p
    for p in "${PIDS[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}
stop() { # pid
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    forget "$1"
}
reap() { # pid: wait for a background client, then forget it
    wait "$1" || true
    forget "$1"
}

field() { sed -n "s/.*\"$2\":\([0-9.]*\).*/\1/p" <<<"$1"; }
overflows() { nstat -az TcpExtListenOverflows | awk '/TcpExtListenOverflows/ {print $2}'; }
threads() { awk '/^Threads:/ {print $2}' "/proc/$1/status"; }
session_threads() { ps -L -o comm= -p "$1" | grep -cx session || true; }
thread_names() { ps -L -o comm= -p "$1" | sort | uniq -c | awk '{printf "%s %s, ", $1, $2}'; }
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

# bench LABEL PORT args...: one run_bench run, its JSON line recorded and summed up.
bench() {
    local label=$1 port=$2 json
    shift 2
    json=$("$BENCH" --addr "127.0.0.1:$port" --json "$@" 2>>"$OUT/bench.err" || true)
    printf '%s\t%s\n' "$label" "$json" >>"$OUT/results.tsv"
    printf '  %-26s %9s/s  p50 %7s  p99 %8s  max %9s ms  failed %s errors %s  (%s s)\n' "$label" \
        "$(field "$json" rate_per_s)" "$(field "$json" p50_ms)" "$(field "$json" p99_ms)" \
        "$(field "$json" max_ms)" "$(field "$json" failed)" "$(field "$json" errors)" \
        "$(field "$json" elapsed_s)"
    LAST=$json
}

echo "== bench/issue10.sh $(date -u '+%Y-%m-%d %H:%M:%S UTC'), $(nproc) cores, kernel $(uname -r)," \
    "load average $(cut -d' ' -f1-3 /proc/loadavg); raw: $OUT/results.tsv"

churn() {
    echo "-- churn: whoami at 8 conns fresh / right after 3 s of logins at 8 conns / 12 s later"
    local rep p port name
    local -a policies=("default" "--idle-threads 0" "--idle-threads 8 --idle-thread-secs 1")
    for ((rep = 1; rep <= REPS; rep++)); do
        for p in 0 1 2; do
            port=$((PORT_BASE + 1 + p))
            name=churn$p
            # shellcheck disable=SC2086
            if ((p == 0)); then start "$name" "$port"; else start "$name" "$port" ${policies[$p]}; fi
            echo "  policy: ${policies[$p]}, rep $rep (load $(cut -d' ' -f1 /proc/loadavg))"
            echo "    threads fresh: $(threads "$SPID") ($(thread_names "$SPID"))"
            bench "churn p$p fresh" "$port" --mode session --conns 8 --secs 3
            bench "churn p$p logins" "$port" --mode login --conns 8 --secs 3
            echo "    threads after logins: $(threads "$SPID") ($(thread_names "$SPID"))"
            bench "churn p$p after" "$port" --mode session --conns 8 --secs 3
            sleep 12
            echo "    threads 12 s later: $(threads "$SPID") ($(thread_names "$SPID"))"
            bench "churn p$p later" "$port" --mode session --conns 8 --secs 3
            stop "$SPID"
        done
    done
}

# fifo_accept PID: SCHED_FIFO 1 on the server's accept threads (the main thread and
# accept-N), from outside, as run_server means to do itself (see the report: at
# the default log level its `prioritise_accept_thread` is never called).
fifo_accept() {
    local tid comm
    while read -r tid comm; do
        case $comm in accept-* | i10-server) chrt -f -p 1 "$tid" >/dev/null ;; esac
    done < <(ps -L -o tid=,comm= -p "$1")
    ps -L -o comm=,cls= -p "$1" | awk '{printf "%s %s, ", $1, $2}'
}

backlog() {
    echo "-- backlog: login cycles at 32 conns, backlog 8 (default), $RUNS runs of $SECS s each," \
        "interleaved: as shipped / accept threads made SCHED_FIFO with chrt"
    local port=$((PORT_BASE + 4)) i before after side p
    local -A with=([shipped]=0 [fifo]=0)
    start backlog "$port"
    local shipped=$SPID
    echo "  $(head -1 "$OUT/backlog.out")"
    echo "  shipped: $(ps -L -o comm=,cls= -p "$shipped" | awk '{printf "%s %s, ", $1, $2}')"
    start backlogfifo $((port + 4))
    local fifo=$SPID
    echo "  fifo:    $(fifo_accept "$fifo")"
    for ((i = 1; i <= RUNS; i++)); do
        for side in shipped fifo; do
            if [[ $side == shipped ]]; then p=$port; else p=$((port + 4)); fi
            before=$(overflows)
            bench "backlog $side run $i" "$p" --mode login --conns 32 --secs "$SECS"
            after=$(overflows)
            echo "    ListenOverflows +$((after - before))"
            ((after > before)) && with[$side]=$((with[$side] + 1))
        done
    done
    echo "  runs with overflows: shipped ${with[shipped]} of $RUNS, fifo ${with[fifo]} of $RUNS"
    stop "$shipped"
    stop "$fifo"
}

connect() {
    echo "-- login vs bare connect+close, interleaved"
    local port=$((PORT_BASE + 5)) rep
    start connect "$port"
    for ((rep = 1; rep <= REPS; rep++)); do
        bench "connect8" "$port" --mode connect --conns 8 --secs "$SECS"
        bench "login8" "$port" --mode login --conns 8 --secs "$SECS"
        bench "connect32" "$port" --mode connect --conns 32 --secs "$SECS"
        bench "login32" "$port" --mode login --conns 32 --secs "$SECS"
    done
    stop "$SPID"
}

fds() {
    echo "-- descriptors: $HOLD idle sessions, ulimit -n $(ulimit -n) (hard $(ulimit -Hn))," \
        "vm.max_map_count $(cat /proc/sys/vm/max_map_count), kernel.pid_max $(cat /proc/sys/kernel/pid_max)"
    local port=$((PORT_BASE + 6)) cap rss0 rss r i b1 maps
    start fds "$port" --max-sessions 30000 --max-sessions-per-address 0 --login-timeout 300
    echo "  $(head -1 "$OUT/fds.out")"
    grep -i 'lowered' "$OUT/fds.log" | head -1 | sed 's/^/  log: /' || true
    bench "fds login8 without" "$port" --mode login --conns 8 --secs 10
    rss0=$(rss_kb "$SPID")
    "$BENCH" --addr "127.0.0.1:$port" --json --mode idle --hold "$HOLD" --conns 8 --secs 10 \
        >"$OUT/fds.idle.json" 2>"$OUT/fds.idle.err" &
    b1=$!
    PIDS+=("$b1")
    for ((i = 0; i < 180; i++)); do # up to 90 s until the sessions are held
        r=$(threads "$SPID")
        ((r >= HOLD)) && break
        kill -0 "$b1" 2>/dev/null || break
        sleep 0.5
    done
    sleep 2
    rss=$(rss_kb "$SPID")
    maps=$(wc -l <"/proc/$SPID/maps")
    echo "  held, logins running: server threads $(threads "$SPID"), named session $(session_threads "$SPID")," \
        "fds $(ls "/proc/$SPID/fd" | wc -l), memory maps $maps, VmRSS $rss0 -> $rss kB"
    reap "$b1"
    LAST=$(cat "$OUT/fds.idle.json")
    printf '%s\t%s\n' "fds login8 with $HOLD idle" "$LAST" >>"$OUT/results.tsv"
    echo "  login8 with $HOLD idle: rate $(field "$LAST" rate_per_s)/s p50 $(field "$LAST" p50_ms)" \
        "p99 $(field "$LAST" p99_ms) ms, held $(field "$LAST" held), still open $(field "$LAST" held_open)," \
        "errors $(field "$LAST" errors)"
    head -3 "$OUT/fds.idle.err" | sed 's/^/    /'
    echo "  RSS per idle session: $(((rss - rss0) * 1024 / HOLD)) bytes"
    grep -i 'cannot start\|too many open' "$OUT/fds.log" | sed 's/^\[[^]]*\] //' | sort | uniq -c | head -3 || true
    bench "fds login8 without (after)" "$port" --mode login --conns 8 --secs 10
    stop "$SPID"

    # Past the cap: a server whose open-files limit is 2000 (cap lowered to fit),
    # filled by one bench, then one more client.
    port=$((PORT_BASE + 9))
    rm -f "$OUT/cap.db"*
    prlimit --nofile=2000:2000 "$SERVER" --port "$port" --db "$OUT/cap.db" --max-sessions 30000 \
        --max-sessions-per-address 0 >"$OUT/cap.out" 2>"$OUT/cap.log" &
    SPID=$!
    PIDS+=("$SPID")
    wait_port "$port"
    echo "  $(head -1 "$OUT/cap.out")"
    cap=$(sed -n 's/.*max sessions \([0-9]*\).*/\1/p' "$OUT/cap.out" | head -1)
    "$BENCH" --addr "127.0.0.1:$port" --json --mode idle --hold "$cap" --conns 1 --secs 6 --user nobody \
        >"$OUT/cap.idle.json" 2>"$OUT/cap.idle.err" || true &
    b1=$!
    PIDS+=("$b1")
    for ((i = 0; i < 60; i++)); do
        r=$(threads "$SPID")
        ((r >= cap)) && break
        sleep 0.5
    done
    echo "  $(threads "$SPID") threads, $(ls "/proc/$SPID/fd" | wc -l) fds; one more client hears:" \
        "$(timeout 5 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port; head -n 3 <&3" 2>&1 | tr '\n' '|')"
    reap "$b1"
    grep -i 'busy\|cap' "$OUT/cap.log" | sed 's/^\[[^]]*\] //' | sort | uniq -c | head -3 || true
    stop "$SPID"
}

# fds2: the same as fds, but the idle sessions are held by bench/hold_idle.py
# from 127.0.0.2, so that run_bench's login connections from 127.0.0.1 do not
# search the ephemeral ports past the held ones (which is where fds spends its
# time, in the load generator's connect()).
fds2() {
    echo "-- descriptors, held from 127.0.0.2: $HOLD idle sessions"
    local port=$((PORT_BASE + 6)) rss0 rss i h
    start fds2 "$port" --max-sessions 30000 --max-sessions-per-address 0 --login-timeout 300
    echo "  $(head -1 "$OUT/fds2.out")"
    bench "fds2 login8 without" "$port" --mode login --conns 8 --secs 10
    rss0=$(rss_kb "$SPID")
    python3 "$ROOT/bench/hold_idle.py" --addr "127.0.0.1:$port" --source 127.0.0.2 --hold "$HOLD" \
        --secs 25 >"$OUT/fds2.hold.json" 2>&1 &
    h=$!
    PIDS+=("$h")
    for ((i = 0; i < 240; i++)); do # up to 120 s until they are held
        grep -q '"event"' "$OUT/fds2.hold.json" && break
        kill -0 "$h" 2>/dev/null || break
        sleep 0.5
    done
    rss=$(rss_kb "$SPID")
    echo "  held: $(head -1 "$OUT/fds2.hold.json"); server threads $(threads "$SPID")," \
        "named session $(session_threads "$SPID"), fds $(ls "/proc/$SPID/fd" | wc -l), VmRSS $rss0 -> $rss kB," \
        "$(((rss - rss0) * 1024 / HOLD)) bytes per idle session"
    bench "fds2 login8 with $HOLD idle" "$port" --mode login --conns 8 --secs 10
    echo "  RSS at the end of the logins: $(rss_kb "$SPID") kB"
    reap "$h"
    echo "  hold_idle.py: $(tail -1 "$OUT/fds2.hold.json")"
    bench "fds2 login8 without (after)" "$port" --mode login --conns 8 --secs 10
    stop "$SPID"
}

scram() {
    echo "-- SCRAM: login-scram vs login, interleaved"
    local port=$((PORT_BASE + 7)) rep
    start scram "$port"
    # FIFO=1: accept threads at SCHED_FIFO (chrt), so that no run is stretched
    # by the 10 s stalls of dropped handshakes (see backlog).
    if [[ ${FIFO:-0} == 1 ]]; then echo "  accept threads: $(fifo_accept "$SPID")"; fi
    for ((rep = 1; rep <= REPS; rep++)); do
        bench "login8" "$port" --mode login --conns 8 --secs "$SECS"
        bench "scram8" "$port" --mode login-scram --conns 8 --secs "$SECS"
        bench "login32" "$port" --mode login --conns 32 --secs "$SECS"
        bench "scram32" "$port" --mode login-scram --conns 32 --secs "$SECS"
    done
    stop "$SPID"
}

# flood: registrations/s at 4096 iterations, and login cycles during a
# registration flood (8 conns registering flat out while 8 log in) vs alone; the
# control logs in on a second server (its own database, so no shared store lock)
# during a flood on the first: the same CPU contention without the lock.
flood() {
    echo "-- registrations (4096 iterations) and logins during a registration flood"
    local port=$((PORT_BASE + 7)) other=$((PORT_BASE + 5)) rep reg target
    start flood "$port"
    local first=$SPID
    start floodctl "$other"
    local second=$SPID
    if [[ ${FIFO:-0} == 1 ]]; then
        echo "  accept threads: $(fifo_accept "$first") / $(fifo_accept "$second")"
    fi
    for ((rep = 1; rep <= REPS; rep++)); do
        bench "register8 r$rep" "$port" --mode register --conns 8 --secs "$SECS" --prefix "r${rep}x"
        bench "login8 alone" "$port" --mode login --conns 8 --secs "$SECS"
        for target in same other; do
            "$BENCH" --addr "127.0.0.1:$port" --json --mode register --conns 8 \
                --secs "$(awk "BEGIN {print $SECS + 1}")" --prefix "f${rep}${target}x" \
                >"$OUT/flood$rep$target.json" 2>>"$OUT/bench.err" &
            reg=$!
            PIDS+=("$reg")
            sleep 0.5
            if [[ $target == same ]]; then
                bench "login8 during flood" "$port" --mode login --conns 8 --secs "$SECS"
            else
                bench "login8 other server, flood" "$other" --mode login --conns 8 --secs "$SECS"
            fi
            reap "$reg"
            echo "    the flood: $(field "$(cat "$OUT/flood$rep$target.json")" rate_per_s) registrations/s," \
                "p99 $(field "$(cat "$OUT/flood$rep$target.json")" p99_ms) ms"
        done
    done
    stop "$first"
    stop "$second"
}

for s in "${SECTIONS[@]}"; do
    case $s in
        churn | backlog | connect | fds | fds2 | scram | flood) "$s" ;;
        *) echo "issue10.sh: unknown section $s" >&2; exit 2 ;;
    esac
done
echo "== done $(date -u '+%H:%M:%S UTC'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
