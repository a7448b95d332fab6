#!/usr/bin/env bash
# Chat across servers (docs/SCALE-OUT.md, "Chat across servers"): run_bench
# --mode chat against one SQLite server, one PostgreSQL server (the room on
# LISTEN/NOTIFY, all members on that one server) and HAProxy in front of two
# PostgreSQL servers (members spread over both), interleaved, ROUNDS times.
# CONNS members (default 20), RATE messages/s in all (default 200), SECS each
# (default 5). Uses contrib/scale-out-demo.sh for PostgreSQL, the two servers
# and HAProxy (DEMO_DIR, DEMO_PORT default 7930, PG_PORT default 55533), and
# starts the SQLite server and the direct PostgreSQL server itself (ports
# DEMO_PORT+10 and +15). Every process is stopped by its PID on exit.
# Servers allow 50 lines/s per member here (DCCN_CHAT_RATE), so the offered
# rate, not the rate limit, sets the load. Needs PostgreSQL and haproxy.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-20}
RATE=${RATE:-200}
SECS=${SECS:-5}
export DEMO_DIR=${DEMO_DIR:-/tmp/dccn-chat-scale}
export DEMO_PORT=${DEMO_PORT:-7930}
export PG_PORT=${PG_PORT:-55533}
export DCCN_CHAT_RATE=50 DCCN_CHAT_BURST=50 DCCN_BENCH_PASSWORD=Passw0rd1
cargo build --release --bins >/dev/null
B=target/release
T=$(mktemp -d /tmp/chat-scale.XXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    contrib/scale-out-demo.sh stop >/dev/null 2>&1 || true
    rm -rf "$T"
}
trap cleanup EXIT
contrib/scale-out-demo.sh start
P_SQL=$((DEMO_PORT + 10))
P_PG=$((DEMO_PORT + 15))
"$B/run_server" --port "$P_SQL" --db "$T/s.db" >"$T/sqlite.log" 2>&1 &
pids+=($!)
DCCN_DB="$(cat "$DEMO_DIR/pg.url")" "$B/run_server" --port "$P_PG" >"$T/pg.log" 2>&1 &
pids+=($!)
sleep 1
echo "load before: $(uptime)"
for ((r = 1; r <= ROUNDS; r++)); do
    for target in "SQLite:$P_SQL" "PostgreSQL-1-server:$P_PG" "HAProxy-2-servers:$DEMO_PORT"; do
        echo "== round $r ${target%%:*} (127.0.0.1:${target##*:})"
        timeout $((SECS + 60)) "$B/run_bench" --mode chat --addr "127.0.0.1:${target##*:}" \
            --conns "$CONNS" --rate "$RATE" --secs "$SECS" 2>&1 | tail -n 4
    done
done
echo "load after: $(uptime)"
