#!/usr/bin/env bash
# bench/compare.sh: our run_server against the nullserver yardstick (issue 5).
#
# Builds the yardsticks (shared/bench: loadgen, nullserver; built in a copy,
# since shared/ is read-only) and our release binaries, starts nullserver and
# run_server (default settings, fresh temporary database) on 127.0.0.1, then
# runs each workload with the shared loadgen, interleaved null/ours/null/ours,
# and prints every run and a summary with the ratios and goals (see
# docs/PERFORMANCE.md). Servers are stopped on exit, however the script ends.
#
# Settings (environment):
#   SECS=5          seconds per run
#   HOLD=5000       idle sessions held in the idle workload
#   PORT_BASE=21100 ports PORT_BASE+1 .. +4 are used (keep below 32768)
#   SHARED_BENCH    the yardsticks' sources (default: ../shared/bench beside the repo)
#   YARDSTICKS      where they are copied and built (default: /tmp/dccn-yardsticks)
#   OUT             directory for the raw results and logs (default: a new temp dir)
#   SKIP_BUILD=1    use the binaries already built
#
# Every loop below is bounded: a fixed number of runs of SECS each; loadgen's
# own timeout (10 s per read) bounds a stuck connection.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SECS=${SECS:-5}
HOLD=${HOLD:-5000}
PORT_BASE=${PORT_BASE:-21100}
SHARED_BENCH=${SHARED_BENCH:-$ROOT/../shared/bench}
YARDSTICKS=${YARDSTICKS:-/tmp/dccn-yardsticks}
OUT=${OUT:-$(mktemp -d /tmp/dccn-compare.XXXXXX)}
mkdir -p "$OUT"

NULL_PORT=$((PORT_BASE + 1))   # nullserver
OURS_PORT=$((PORT_BASE + 2))   # run_server, default settings but the registration quota off (register workload)
IDLE_PORT=$((PORT_BASE + 3))   # run_server, --max-sessions raised for the idle workload
DIAG_PORT=$((PORT_BASE + 4))   # run_server --backlog 128 (diagnostic only)
if ((DIAG_PORT >= 32768)); then
    echo "compare.sh: PORT_BASE too high (use ports below 32768)" >&2
    exit 2
fi

# Default server settings: no DCCN_* variable may change them.
for v in $(env | sed -n 's/^\(DCCN_[A-Z_]*\)=.*/\1/p'); do unset "$v"; done

# ---- build ----------------------------------------------------------------
LOADGEN=$YARDSTICKS/loadgen/target/release/loadgen
NULLSERVER=$YARDSTICKS/nullserver/target/release/nullserver
RUN_SERVER=$ROOT/target/release/run_server
RUN_BENCH=$ROOT/target/release/run_bench
if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    echo "== build (one cargo at a time)"
    mkdir -p "$YARDSTICKS"
    for tool in loadgen nullserver; do
        mkdir -p "$YARDSTICKS/$tool"
        cp -r "$SHARED_BENCH/$tool/Cargo.toml" "$SHARED_BENCH/$tool/src" "$YARDSTICKS/$tool/"
        [[ -f $SHARED_BENCH/$tool/Cargo.lock ]] && cp "$SHARED_BENCH/$tool/Cargo.lock" "$YARDSTICKS/$tool/"
        (cd "$YARDSTICKS/$tool" && cargo build --release --quiet)
    done
    (cd "$ROOT" && cargo build --release --quiet --bin run_server --bin run_bench)
fi
for b in "$LOADGEN" "$NULLSERVER" "$RUN_SERVER" "$RUN_BENCH"; do
    [[ -x $b ]] || { echo "compare.sh: missing $b" >&2; exit 2; }
done

# The idle workload needs a descriptor per held socket in loadgen and one per
# session in run_server (issue 10 part 4: the socket alone); 2x is the margin.
need=$((2 * HOLD + 1024))
if (($(ulimit -n) < need)); then
    ulimit -n "$need" 2>/dev/null || {
        echo "compare.sh: ulimit -n is $(ulimit -n), the idle workload needs $need" >&2
        exit 2
    }
fi

# ---- servers ----------------------------------------------------------------
# The servers run from copies under distinct names: the machine is shared, and
# a broad `pkill run_server` elsewhere must not stop them in the middle of a run.
mkdir -p "$OUT/bin"
cp "$NULLSERVER" "$OUT/bin/cmp-nullserver"
cp "$RUN_SERVER" "$OUT/bin/cmp-ours-server"
NULLSERVER=$OUT/bin/cmp-nullserver
RUN_SERVER=$OUT/bin/cmp-ours-server
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_port() { # port: up to 5 s until it accepts
    local i
    for ((i = 0; i < 50; i++)); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "compare.sh: nothing listens on port $1" >&2
    exit 1
}

"$NULLSERVER" --port "$NULL_PORT" 2>"$OUT/null.log" &
PIDS+=($!); NULL_PID=$!
"$RUN_SERVER" --port "$OURS_PORT" --db "$OUT/ours.db" --max-registrations-per-address 0 >"$OUT/ours.out" 2>"$OUT/ours.log" &
PIDS+=($!); OURS_PID=$!
# --max-sessions-per-address 0: loadgen holds every idle session from 127.0.0.1,
# which the per-address cap (issue 10, default 64) would otherwise refuse.
"$RUN_SERVER" --port "$IDLE_PORT" --db "$OUT/idle.db" --max-sessions $((HOLD + 1000)) \
    --max-sessions-per-address 0 \
    >"$OUT/idle.out" 2>"$OUT/idle.log" &
PIDS+=($!); IDLE_PID=$!
"$RUN_SERVER" --port "$DIAG_PORT" --db "$OUT/diag.db" --backlog 128 --max-registrations-per-address 0 >"$OUT/diag.out" 2>"$OUT/diag.log" &
PIDS+=($!)
# The machine is shared: if a server is gone (killed from outside), stop, rather
# than record a run against a dead server.
check_alive() {
    local pid
    for pid in "${PIDS[@]}"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "compare.sh: server process $pid is gone (see the logs in $OUT); stopping" >&2
            exit 1
        fi
    done
}
for p in "$NULL_PORT" "$OURS_PORT" "$IDLE_PORT" "$DIAG_PORT"; do wait_port "$p"; done

# The bench user u0x0 (password Passw0rd1) on every server.
for p in "$NULL_PORT" "$OURS_PORT" "$IDLE_PORT" "$DIAG_PORT"; do
    "$LOADGEN" --addr "127.0.0.1:$p" --mode register --conns 1 --secs 0.01 --prefix u >/dev/null
done

# ---- runs -------------------------------------------------------------------
RESULTS=$OUT/results.tsv
: >"$RESULTS"
field() { sed -n "s/.*\"$2\":\([0-9.]*\).*/\1/p" <<<"$1"; }
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
overflows() { awk '/^TcpExt:/ {if (!h) {for (i = 1; i <= NF; i++) if ($i == "ListenOverflows") c = i; h = 1} else print $c}' /proc/net/netstat; }

# run WORKLOAD SIDE PORT loadgen-args...: one loadgen run, recorded.
run() {
    local workload=$1 side=$2 port=$3
    shift 3
    local before after json
    before=$(overflows)
    json=$("$LOADGEN" --addr "127.0.0.1:$port" --secs "$SECS" "$@" 2>>"$OUT/loadgen.err")
    after=$(overflows)
    check_alive
    printf '%s\t%s\t%s\t%s\n' "$workload" "$side" "$((after - before))" "$json" >>"$RESULTS"
    printf '  %-9s %-10s rate %9s/s  p99 %8s ms  errors %s  listen overflows %s\n' \
        "$workload" "$side" "$(field "$json" rate_per_s)" "$(field "$json" p99_ms)" \
        "$(field "$json" errors)" "$((after - before))"
}

START=$(date +%s)
echo "== runs of ${SECS} s, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, kernel $(uname -r); raw: $RESULTS"

echo "-- login cycles, 8 connections"
for rep in 1 2; do
    run login8 null "$NULL_PORT" --mode login --conns 8 --user u0x0
    run login8 ours "$OURS_PORT" --mode login --conns 8 --user u0x0
done

echo "-- whoami round trips on held sessions, 8 connections"
for rep in 1 2; do
    run session8 null "$NULL_PORT" --mode session --conns 8 --user u0x0
    run session8 ours "$OURS_PORT" --mode session --conns 8 --user u0x0
done

echo "-- login cycles, 32 connections (our backlog: 8, the default; nullserver: 128)"
for rep in 1 2; do
    run login32 null "$NULL_PORT" --mode login --conns 32 --user u0x0
    run login32 ours "$OURS_PORT" --mode login --conns 32 --user u0x0
done
echo "   diagnostic, not a goal: the same against run_server --backlog 128"
run login32 ours-b128 "$DIAG_PORT" --mode login --conns 32 --user u0x0

echo "-- registrations, 8 connections (ours: durable before the ack, group commit)"
for rep in 1 2; do
    run register8 null "$NULL_PORT" --mode register --conns 8 --prefix "n${rep}r"
    run register8 ours "$OURS_PORT" --mode register --conns 8 --prefix "o${rep}r"
done

echo "-- $HOLD idle sessions held, login cycles at 8 connections (run_server --max-sessions $((HOLD + 1000)))"
# RSS of run_server: before (no session) and the peak while the sessions are held.
RSS_BEFORE=$(rss_kb "$IDLE_PID")
NULL_RSS_BEFORE=$(rss_kb "$NULL_PID")
RSS_PEAK=0
NULL_RSS_PEAK=0
sample_rss() { # pid: peak VmRSS (kB) while loadgen runs, sampled every 0.2 s
    local pid=$1 peak=0 r i
    for ((i = 0; i < 5 * (SECS + 60); i++)); do
        [[ -f $OUT/idle.running ]] || break
        r=$(rss_kb "$pid")
        if ((r > peak)); then peak=$r; fi
        sleep 0.2
    done
    echo "$peak"
}
idle_run() { # side port pid: one idle run; its peak RSS goes to $OUT/rss.peak
    touch "$OUT/idle.running"
    sample_rss "$3" >"$OUT/rss.peak" &
    local sampler=$!
    run idle "$1" "$2" --mode idle --hold "$HOLD" --conns 8 --user u0x0
    rm -f "$OUT/idle.running"
    wait "$sampler" || true
}
for rep in 1 2; do
    run idle-base ours "$IDLE_PORT" --mode login --conns 8 --user u0x0
    idle_run ours "$IDLE_PORT" "$IDLE_PID"
    peak=$(cat "$OUT/rss.peak")
    if ((peak > RSS_PEAK)); then RSS_PEAK=$peak; fi
    # Let the server see the held sockets close before the next baseline.
    sleep 1
done
run idle-base null "$NULL_PORT" --mode login --conns 8 --user u0x0
idle_run null "$NULL_PORT" "$NULL_PID"
NULL_RSS_PEAK=$(cat "$OUT/rss.peak")
sleep 1

echo "-- run_bench, the project's tool, once against each server (login, 8 connections)"
for side in null ours; do
    port=$NULL_PORT
    [[ $side == ours ]] && port=$OURS_PORT
    echo "$side:"
    DCCN_BENCH_PASSWORD=Passw0rd1 "$RUN_BENCH" --addr "127.0.0.1:$port" --mode login \
        --conns 8 --secs "$SECS" --user u0x0 | tee -a "$OUT/run_bench.txt"
done

# ---- summary ----------------------------------------------------------------
# mean RATE of WORKLOAD SIDE, max p99, sum of errors, sum of listen overflows
stats() {
    awk -F'\t' -v w="$1" -v s="$2" '
        $1 == w && $2 == s {
            n++; ov += $3
            if (match($4, /"rate_per_s":[0-9.]+/)) r += substr($4, RSTART + 13, RLENGTH - 13)
            if (match($4, /"p99_ms":[0-9.]+/)) { p = substr($4, RSTART + 9, RLENGTH - 9) + 0; if (p > p99) p99 = p }
            if (match($4, /"errors":[0-9]+/)) e += substr($4, RSTART + 9, RLENGTH - 9)
            if (match($4, /"held_open":[0-9]+/)) { h = substr($4, RSTART + 12, RLENGTH - 12) + 0; if (!hn || h < hmin) hmin = h; hn = 1 }
        }
        END { if (n) printf "%.1f %.3f %d %d %d\n", r / n, p99, e, ov, hmin; else print "0 0 0 0 0" }' "$RESULTS"
}
verdict() { awk -v r="$1" -v g="$2" 'BEGIN { print (r >= g ? "met" : "MISSED") }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }

echo
echo "== summary (mean of the interleaved runs; ratio = ours / null)"
printf '| %-44s | %10s | %10s | %6s | %9s | %6s | %-30s | %-7s |\n' \
    workload "null /s" "ours /s" ratio "ours p99" errors goal verdict
printf '|%s|\n' "----------------------------------------------|------------|------------|--------|-----------|--------|--------------------------------|---------"
row() { # label workload goal extra-check
    local label=$1 w=$2 goal=$3
    read -r nr _ _ _ _ <<<"$(stats "$w" null)"
    read -r orr op99 oerr _ _ <<<"$(stats "$w" ours)"
    local q v
    q=$(ratio "$orr" "$nr")
    v=$(verdict "$q" "$goal")
    if [[ $w == login32 ]]; then
        if ((oerr > 0)) || awk -v p="$op99" 'BEGIN { exit !(p >= 50) }'; then v=MISSED; fi
        goal=">= ${goal}x, p99 < 50 ms, 0 err"
    else
        goal=">= ${goal}x"
    fi
    printf '| %-44s | %10s | %10s | %6s | %6s ms | %6s | %-30s | %-7s |\n' \
        "$label" "$nr" "$orr" "$q" "$op99" "$oerr" "$goal" "$v"
}
row "login cycles, 8 conns" login8 0.85
row "whoami round trips, 8 conns" session8 0.90
row "login cycles, 32 conns (backlog 8)" login32 0.80
row "registrations, 8 conns (durable)" register8 0.40
# Idle: ours with the held sessions against ours without.
read -r base _ _ _ _ <<<"$(stats idle-base ours)"
read -r idle ip99 ierr _ iheld <<<"$(stats idle ours)"
read -r nbase _ _ _ _ <<<"$(stats idle-base null)"
read -r nidle _ _ _ nheld <<<"$(stats idle null)"
q=$(ratio "$idle" "$base")
printf '| %-44s | %10s | %10s | %6s | %6s ms | %6s | %-30s | %-7s |\n' \
    "logins, 8 conns, $HOLD idle held (vs none)" "$base" "$idle" "$q" "$ip99" "$ierr" \
    ">= 0.80x of no idle" "$(verdict "$q" 0.80)"
echo
read -r b128 b128p99 b128err b128ov _ <<<"$(stats login32 ours-b128)"
read -r _ _ _ ov8 _ <<<"$(stats login32 ours)"
read -r _ _ _ ovnull _ <<<"$(stats login32 null)"
echo "login32 diagnostic: run_server --backlog 128: ${b128}/s, p99 ${b128p99} ms, errors ${b128err}, listen overflows ${b128ov}"
echo "listen overflows during login32 runs (system-wide counter): ours (backlog 8) ${ov8}, null ${ovnull}"
echo "idle, nullserver (reference): ${nidle}/s with $HOLD held vs ${nbase}/s without; held open at the end: ours ${iheld}, null ${nheld}"
per() { awk -v a="$1" -v b="$2" -v n="$HOLD" 'BEGIN { printf "%.1f", (b - a) / n }'; }
echo "resident memory, run_server: ${RSS_BEFORE} kB before, ${RSS_PEAK} kB peak with $HOLD held: $(per "$RSS_BEFORE" "$RSS_PEAK") kB per idle session"
echo "resident memory, nullserver: ${NULL_RSS_BEFORE} kB before, ${NULL_RSS_PEAK} kB peak with $HOLD held: $(per "$NULL_RSS_BEFORE" "$NULL_RSS_PEAK") kB per idle session"
echo "raw results and server logs: $OUT ($(($(date +%s) - START)) s of runs)"
