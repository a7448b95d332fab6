#!/usr/bin/env bash
# Scale-out demo on one machine (docs/SCALE-OUT.md): a throwaway PostgreSQL,
# two run_server processes and HAProxy in front of them, all on 127.0.0.1.
#
#   contrib/scale-out-demo.sh start    # start all, print the address to use
#   contrib/scale-out-demo.sh status   # which parts run
#   contrib/scale-out-demo.sh stop     # stop all (by the PIDs it wrote) and delete
#
# Environment: DEMO_DIR (state, default /tmp/dccn-scale-out-demo), DEMO_PORT
# (HAProxy, default 7900; the servers take the next two ports), PG_PORT
# (default 55432), BIN_DIR (run_server's directory, default target/release,
# built when missing). Needs PostgreSQL's server binaries and haproxy
# (Debian: apt-get install -y postgresql haproxy).
#
# Both servers use the one PostgreSQL database (--db postgres://..., given in
# DCCN_DB so the password stays out of the process list): accounts, the fake
# salts, the login throttle and the chat room are shared; a user registered through one
# server logs in through the other.
set -euo pipefail
cd "$(dirname "$0")/.."

DEMO_DIR="${DEMO_DIR:-/tmp/dccn-scale-out-demo}"
DEMO_PORT="${DEMO_PORT:-7900}"
PG_PORT="${PG_PORT:-55432}"
BIN_DIR="${BIN_DIR:-target/release}"
S1_PORT=$((DEMO_PORT + 1))
S2_PORT=$((DEMO_PORT + 2))

say() { printf 'scale-out-demo: %s\n' "$*"; }
die() { say "$*" >&2; exit 1; }

pg_bin() {
    if command -v initdb >/dev/null 2>&1 && command -v postgres >/dev/null 2>&1; then
        dirname "$(command -v postgres)"
        return
    fi
    local newest
    newest=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    [ -n "$newest" ] && [ -x "$newest/initdb" ] || return 1
    echo "$newest"
}

# PostgreSQL refuses to run as root: run its commands as the postgres account.
as_pg() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

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

start() {
    [ -e "$DEMO_DIR" ] && die "$DEMO_DIR exists: run '$0 stop' first"
    local bin haproxy_bin
    bin=$(pg_bin) || die "PostgreSQL's binaries not found (apt-get install -y postgresql)"
    haproxy_bin=$(command -v haproxy) || die "haproxy not found (apt-get install -y haproxy)"
    if [ ! -x "$BIN_DIR/run_server" ]; then
        say "building run_server (release)"
        cargo build --release --bin run_server
    fi
    umask 077
    mkdir -p "$DEMO_DIR"
    # As root, the postgres account must reach its folder inside (not list).
    [ "$(id -u)" = 0 ] && chmod 711 "$DEMO_DIR"

    # 1. PostgreSQL: a fresh cluster, password auth, 127.0.0.1 only.
    local pg="$DEMO_DIR/pg" password
    password=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
    mkdir -p "$pg/socket"
    printf '%s\n' "$password" > "$pg/pwfile"
    [ "$(id -u)" = 0 ] && chown -R postgres: "$pg"
    as_pg "$bin/initdb" -D "$pg/data" -U postgres -A scram-sha-256 -E UTF8 --locale=C \
        --pwfile="$pg/pwfile" --no-instructions > "$DEMO_DIR/initdb.log" 2>&1 \
        || die "initdb failed: see $DEMO_DIR/initdb.log"
    rm -f "$pg/pwfile"
    as_pg "$bin/pg_ctl" -D "$pg/data" -l "$pg/server.log" -w -t 60 \
        -o "-p $PG_PORT -k $pg/socket -c listen_addresses=127.0.0.1" start > /dev/null \
        || die "PostgreSQL did not start: see $pg/server.log"
    head -n 1 "$pg/data/postmaster.pid" > "$DEMO_DIR/pg.pid"
    local url="postgres://postgres:$password@127.0.0.1:$PG_PORT/postgres"
    printf '%s\n' "$url" > "$DEMO_DIR/pg.url"
    chmod 600 "$DEMO_DIR/pg.url"
    say "PostgreSQL on 127.0.0.1:$PG_PORT (URL in $DEMO_DIR/pg.url)"

    # 2. Two servers on that one database, taking the PROXY header from
    #    HAProxy (127.0.0.1).
    local n port
    for n in 1 2; do
        port=$((DEMO_PORT + n))
        DCCN_DB="$url" "$BIN_DIR/run_server" --host 127.0.0.1 --port "$port" \
            --trusted-proxy 127.0.0.1/32 > "$DEMO_DIR/server$n.log" 2>&1 &
        echo $! > "$DEMO_DIR/server$n.pid"
    done
    say "two servers on the PostgreSQL database: shared accounts, throttling and chat room"

    # 3. HAProxy in front.
    sed -e "s/@DEMO_PORT@/$DEMO_PORT/; s/@S1_PORT@/$S1_PORT/; s/@S2_PORT@/$S2_PORT/" \
        contrib/haproxy.cfg > "$DEMO_DIR/haproxy.cfg"
    "$haproxy_bin" -f "$DEMO_DIR/haproxy.cfg" -db > "$DEMO_DIR/haproxy.log" 2>&1 &
    echo $! > "$DEMO_DIR/haproxy.pid"

    wait_greeting "$DEMO_PORT" 30 || die "no greeting through HAProxy on $DEMO_PORT: see $DEMO_DIR/*.log"
    say "ready: run_client --host 127.0.0.1 --port $DEMO_PORT (servers on $S1_PORT, $S2_PORT)"
}

# Stops one process by the PID in its file (TERM, then KILL after 10 s).
stop_pid() {
    local file=$1 pid i
    [ -f "$file" ] || return 0
    pid=$(cat "$file")
    if kill -TERM "$pid" 2>/dev/null; then
        for ((i = 0; i < 100; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$file"
}

stop() {
    [ -d "$DEMO_DIR" ] || { say "nothing to stop ($DEMO_DIR absent)"; return 0; }
    stop_pid "$DEMO_DIR/haproxy.pid"
    stop_pid "$DEMO_DIR/server1.pid"
    stop_pid "$DEMO_DIR/server2.pid"
    stop_pid "$DEMO_DIR/pg.pid"
    rm -rf "$DEMO_DIR"
    say "stopped and deleted $DEMO_DIR"
}

status() {
    local part
    for part in pg server1 server2 haproxy; do
        if [ -f "$DEMO_DIR/$part.pid" ] && kill -0 "$(cat "$DEMO_DIR/$part.pid")" 2>/dev/null; then
            say "$part: running (PID $(cat "$DEMO_DIR/$part.pid"))"
        else
            say "$part: not running"
        fi
    done
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    -h | --help | help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//' ;;
    *) die "usage: $0 start|status|stop (--help for more)" ;;
esac
