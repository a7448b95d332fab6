#!/usr/bin/env bash
# The cost of the front (docs/SCALE-OUT.md): run_bench against one run_server
# directly, through HAProxy with send-proxy to that server, and through
# HAProxy to two servers (leastconn), interleaved, ROUNDS times, 5 s each.
# MODE (login, session; default login), CONNS (default 8). Each server has its
# own SQLite file with the bench user u0x0 (until --db takes PostgreSQL).
# HAProxy connects from 127.0.0.2, the servers' --trusted-proxy, so run_bench
# reaches a server directly from 127.0.0.1. Everything on 127.0.0.x, ports
# 17941-17960. Needs haproxy; builds the release binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bins >/dev/null
B=target/release
T=$(mktemp -d /tmp/pg-front-bench.XXXX)
export DCCN_BENCH_PASSWORD=Passw0rd1
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; sleep 0.5; rm -rf "$T"; }
trap cleanup EXIT
for n in 1 2; do
  "$B/run_server" --port $((17940 + n)) --db "$T/s$n.db" --trusted-proxy 127.0.0.2/32 > "$T/s$n.log" 2>&1 &
  pids+=($!)
done
cat > "$T/h.cfg" <<CFG
global
    maxconn 4096
defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h
    timeout check 3s
frontend one
    bind 127.0.0.1:17950
    default_backend one
frontend two
    bind 127.0.0.1:17960
    default_backend two
backend one
    balance leastconn
    source 127.0.0.2
    option tcp-check
    tcp-check expect string "Connected to server"
    tcp-check send "quit\n"
    tcp-check expect string "__quit__"
    default-server send-proxy check check-send-proxy inter 2s
    server s1 127.0.0.1:17941
backend two
    balance leastconn
    source 127.0.0.2
    option tcp-check
    tcp-check expect string "Connected to server"
    tcp-check send "quit\n"
    tcp-check expect string "__quit__"
    default-server send-proxy check check-send-proxy inter 2s
    server s1 127.0.0.1:17941
    server s2 127.0.0.1:17942
CFG
haproxy -f "$T/h.cfg" -db > "$T/h.log" 2>&1 &
pids+=($!)
sleep 2
for port in 17941 17942; do
  "$B/run_bench" --addr 127.0.0.1:$port --mode register --conns 1 --secs 0.01 --prefix u > /dev/null
done
CONNS=${CONNS:-8}
for round in $(seq 1 ${ROUNDS:-2}); do
  for target in direct:17941 haproxy1:17950 haproxy2:17960; do
    echo -n "round $round ${target%%:*} conns $CONNS: "
    "$B/run_bench" --addr 127.0.0.1:${target##*:} --mode ${MODE:-login} --conns $CONNS --secs 5 --user u0x0 --json
  done
done
echo "sessions served: server 1 $(grep -c 'session of' "$T/s1.log"), server 2 $(grep -c 'session of' "$T/s2.log") (health checks included)"
