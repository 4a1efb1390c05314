#!/usr/bin/env bash
# Scale-out test: three `duplex serve` nodes sharing one Redis broker, behind
# nginx and then behind HAProxy, configured with deploy/nginx.conf and
# deploy/haproxy.cfg (node addresses and the listening port substituted). All
# on loopback; run by `scripts/test.sh scaleout`, also alone after a release
# build:
#
#   scale/run.sh [--results FILE]
#
# Starts its own redis-server on a free port (no persistence), then for each
# proxy a fresh trio of nodes A, B, C (--broker, --api-key, --publish-rate
# 10000) and the proxy itself (nginx -c/-p/-e in a temporary directory with
# `daemon off`; haproxy -W -db -f), and checks with scale/check.py:
#   fanout    clients through the proxy receive, once and in order, what a
#             duplex.v1 client on node B and node C's HTTP API publish;
#             presence and history are the same on every node;
#   rooms     raw-room clients on every node and one through the proxy hear
#             each other;
#   reload    `nginx -s reload`, or SIGUSR2 to HAProxy's master (master-worker
#             mode, -W), under traffic: established clients keep receiving
#             until the old workers' deadline (worker_shutdown_timeout,
#             hard-stop-after: 10 s here), then reconnect and recover; nothing
#             lost or repeated;
#   failover  node A is killed (SIGKILL by PID): its clients reconnect
#             through the proxy to another node and recover the gap; after the
#             presence TTL (3 s here) the other subscribers get one `leave`
#             per client A had, and presence stops listing them.
# The system's nginx and haproxy services are never touched. A missing
# nginx, haproxy or redis-server is a failure (scripts/test.sh setup installs
# them). Every process started here is stopped by PID on exit.
#
# Check lines go to FILE (appended) as `PASS ...`/`FAIL ...`; prints
# `scaleout: N passed, M failed` and exits 1 on any failure.
#
# Environment (optional):
#   SCALE_PROXIES="nginx haproxy"   proxies to test (default both)
#   DUPLEX_BIN                      the duplex binary (default <target>/release/duplex)
#   PYTHON                          Python with websockets (default .venv/bin/python)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=SCRIPTDIR/../scripts/lib.sh
source "$ROOT/scripts/lib.sh"
HERE="$ROOT/scale"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac
read -r -a PROXIES <<<"${SCALE_PROXIES:-nginx haproxy}"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
BIN="${DUPLEX_BIN:-$TARGET_DIR/release/duplex}"
KEY="scale-test-api-key-0123456789"
# Short, so that the crashed node's clients leave within the failover check.
PRESENCE_TTL=3
export NO_COLOR=1
START=$SECONDS

OUT_RESULTS=""
case "${1:-}" in
-h | --help)
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
    exit 0
    ;;
--results)
    OUT_RESULTS="${2:?--results needs a file}"
    ;;
"") ;;
*)
    echo "usage: $0 [--results FILE]" >&2
    exit 2
    ;;
esac

log() { printf '[scaleout] %s\n' "$*"; }
die() {
    printf '[scaleout] FAILED: %s\n' "$*" >&2
    [[ -n "$OUT_RESULTS" ]] && echo "FAIL scaleout harness: $*" >>"$OUT_RESULTS"
    echo "scaleout: 0 passed, 1 failed"
    exit 1
}

[[ -x "$BIN" ]] || die "duplex binary not found at $BIN (cargo build --release -p duplex-cli)"
"$PY" -c 'import websockets' 2>/dev/null || die "$PY cannot import websockets (scripts/test.sh setup)"
for cmd in redis-server nginx haproxy; do
    # Debian puts nginx and haproxy in /usr/sbin, which a non-root PATH may lack.
    command -v "$cmd" >/dev/null || [[ -x "/usr/sbin/$cmd" ]] ||
        die "$cmd not found: install it (scripts/test.sh setup installs nginx, haproxy and redis-server)"
done
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
HAPROXY="$(command -v haproxy || echo /usr/sbin/haproxy)"
for p in "${PROXIES[@]}"; do
    case "$p" in nginx | haproxy) ;; *) die "unknown proxy '$p' in SCALE_PROXIES (nginx, haproxy)" ;; esac
done

# --- process bookkeeping (helpers in scripts/lib.sh) ---------------------------------
WORK="$(mktemp -d "${TMPDIR:-/tmp}/duplex-scale.XXXXXX")"
chmod 755 "$WORK" # nginx's workers run as nobody when started by root
RESULTS="$WORK/results"
: >"$RESULTS"
RECORD_PREFIX="" RECORD_ECHO_PASS=1 # record (scripts/lib.sh) prints PASS lines too
PIDS=()
cleanup() {
    stop_all "${PIDS[@]}"
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# run_check LABEL SUBCOMMAND ARGS...: scale/check.py, its PASS/FAIL lines into
# the results; a crash or timeout is a failure of its own.
run_check() {
    local label="$1" sub="$2" out="$WORK/check-$2-$RANDOM.log" rc=0
    shift 2
    timeout 150 "$PY" "$HERE/check.py" "$sub" --label "$label $sub" --key "$KEY" \
        --node "$PROXY_NAME-a=$PORT_A" \
        --node "$PROXY_NAME-b=$PORT_B" --node "$PROXY_NAME-c=$PORT_C" "$@" >"$out" 2>&1 || rc=$?
    grep -E '^(PASS|FAIL) ' "$out" >>"$RESULTS" || true
    grep -E '^(PASS|FAIL) ' "$out" | sed 's/^/  /' || true
    grep -E '^# ' "$out" | grep -v 'reconnecting$' | sed 's/^# /  ... /' || true
    if ((rc != 0)); then
        record 0 "$label $sub: check.py finished" "exit status $rc"
        tail -n 20 "$out" | sed 's/^/    /'
    fi
}

# --- Redis ----------------------------------------------------------------------------
REDIS_PORT="$(free_port)"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$WORK" \
    --logfile "$WORK/redis.log" >/dev/null 2>&1 &
REDIS_PID=$!
PIDS+=("$REDIS_PID")
redis_up=0
for _ in $(seq 1 100); do
    if "$PY" -c 'import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1)
s.sendall(b"PING\r\n")
sys.exit(0 if s.recv(16).startswith(b"+PONG") else 1)' "$REDIS_PORT" 2>/dev/null; then
        redis_up=1
        break
    fi
    kill -0 "$REDIS_PID" 2>/dev/null || break
    sleep 0.1
done
((redis_up)) || {
    show_log redis "$WORK/redis.log"
    die "redis-server did not start on 127.0.0.1:$REDIS_PORT"
}
log "redis-server on 127.0.0.1:$REDIS_PORT (pid $REDIS_PID)"

# --- the nodes --------------------------------------------------------------------------
# start_nodes PROXY: nodes A, B, C named PROXY-a, ...; sets PORT_A/B/C, PID_A/B/C.
start_nodes() {
    local proxy="$1" n name logf pid port
    # shellcheck disable=SC2034 # PID_B and PID_C are read as ${!pid} in stop_nodes
    PORT_A="" PORT_B="" PORT_C="" PID_A="" PID_B="" PID_C=""
    for n in A B C; do
        name="$proxy-${n,,}"
        logf="$WORK/node-$name.err"
        "$BIN" serve --broker "redis://127.0.0.1:$REDIS_PORT" --listen 127.0.0.1:0 --api-key "$KEY" \
            --publish-rate 10000 --node-name "$name" --set shutdown.drain_secs=1 \
            --set broker.presence_ttl_secs="$PRESENCE_TTL" >/dev/null 2>"$logf" &
        pid=$!
        PIDS+=("$pid")
        if ! port="$(wait_for_port "$logf" "$pid")"; then
            record 0 "$proxy: node $n started" "no 'listening on' line"
            show_log "node $name" "$logf"
            return 1
        fi
        if ! "$PY" "$HERE/check.py" wait-http "http://127.0.0.1:$port/readyz" --timeout 20; then
            record 0 "$proxy: node $n ready" "/readyz not 200 within 20 s"
            show_log "node $name" "$logf"
            return 1
        fi
        printf -v "PORT_$n" '%s' "$port"
        printf -v "PID_$n" '%s' "$pid"
    done
    record 1 "$proxy: nodes A, B, C started and ready (ports $PORT_A $PORT_B $PORT_C)"
}

stop_nodes() {
    local proxy="$1" n pid
    for n in A B C; do
        pid="PID_$n"
        pid="${!pid}"
        [[ -n "$pid" ]] || continue
        if [[ "$n" == A && "$KILLED_A" == 1 ]]; then
            stop_pid "$pid" 1 # reaps it
            if ((EXIT_STATUS == 137)); then
                record 1 "$proxy: node A had been killed by SIGKILL"
            else
                record 0 "$proxy: node A had been killed by SIGKILL" "exit status $EXIT_STATUS"
            fi
        elif kill -0 "$pid" 2>/dev/null; then
            stop_pid "$pid" 15
            if ((EXIT_STATUS != 0)); then
                record 0 "$proxy: node $n stops with status 0 on SIGTERM" "exit status $EXIT_STATUS"
            fi
        fi
    done
}

# substitute TEMPLATE PROXY_PORT: the template with the nodes' and the proxy's
# addresses in place of the deploy defaults.
substitute() {
    sed -e "s/127\.0\.0\.1:8081/127.0.0.1:$PORT_A/; s/127\.0\.0\.1:8082/127.0.0.1:$PORT_B/" \
        -e "s/127\.0\.0\.1:8083/127.0.0.1:$PORT_C/" \
        -e "s/^\( *\)listen 80;/\1listen 127.0.0.1:$2;/; s/^\( *\)bind :80$/\1bind 127.0.0.1:$2/" \
        -e "s|^\( *\)log /dev/log local0$|\1log stdout format raw local0|" \
        -e "s/^\( *\)hard-stop-after 10m$/\1hard-stop-after 10s/" "$1"
}

# --- the proxies ----------------------------------------------------------------------
# start_nginx: sets PROXY_PID, PROXY_PORT, NGINX_ARGS.
start_nginx() {
    local dir="$WORK/nginx"
    mkdir -p "$dir/logs"
    PROXY_PORT="$(free_port)"
    substitute "$ROOT/deploy/nginx.conf" "$PROXY_PORT" >"$dir/duplex.conf"
    grep -q "listen 127.0.0.1:$PROXY_PORT;" "$dir/duplex.conf" || {
        record 0 "nginx: deploy/nginx.conf substituted" "no 'listen 80;' line to replace"
        return 1
    }
    # The main context a package's /etc/nginx/nginx.conf would give, in $dir;
    # worker_shutdown_timeout: after a reload, old workers close the WebSockets
    # they still hold after 10 s (docs/deploy.md).
    cat >"$dir/nginx.conf" <<EOF
daemon off;
pid $dir/nginx.pid;
error_log $dir/logs/error.log info;
worker_processes 2;
worker_shutdown_timeout 10s;
events { worker_connections 4096; }
http {
    access_log $dir/logs/access.log;
    client_body_temp_path $dir/client_body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    include $dir/duplex.conf;
}
EOF
    NGINX_ARGS=(-c "$dir/nginx.conf" -p "$dir" -e "$dir/logs/error.log")
    if ! "$NGINX" -t -q "${NGINX_ARGS[@]}" 2>"$dir/t.err"; then
        record 0 "nginx: nginx -t accepts the configuration" "$(tail -n 3 "$dir/t.err")"
        return 1
    fi
    "$NGINX" "${NGINX_ARGS[@]}" >"$dir/stdout" 2>&1 &
    PROXY_PID=$!
    PIDS+=("$PROXY_PID")
    if "$PY" "$HERE/check.py" wait-http "http://127.0.0.1:$PROXY_PORT/readyz" --timeout 20; then
        record 1 "nginx: started on 127.0.0.1:$PROXY_PORT, /readyz answers 200 through it"
    else
        record 0 "nginx: started on 127.0.0.1:$PROXY_PORT" "/readyz not 200 through it within 20 s"
        show_log "nginx error.log" "$dir/logs/error.log"
        return 1
    fi
}

start_haproxy() {
    local dir="$WORK/haproxy"
    mkdir -p "$dir"
    PROXY_PORT="$(free_port)"
    substitute "$ROOT/deploy/haproxy.cfg" "$PROXY_PORT" >"$dir/haproxy.cfg"
    if ! "$HAPROXY" -c -q -f "$dir/haproxy.cfg" >"$dir/c.err" 2>&1; then
        record 0 "haproxy: haproxy -c accepts the configuration" "$(tail -n 3 "$dir/c.err")"
        return 1
    fi
    # Master-worker mode (-W), in the foreground (-db): SIGUSR2 to the master
    # ($!) reloads, as `systemctl reload haproxy` does.
    "$HAPROXY" -W -db -f "$dir/haproxy.cfg" >"$dir/haproxy.log" 2>&1 &
    PROXY_PID=$!
    PIDS+=("$PROXY_PID")
    if "$PY" "$HERE/check.py" wait-http "http://127.0.0.1:$PROXY_PORT/readyz" --timeout 20; then
        record 1 "haproxy: started on 127.0.0.1:$PROXY_PORT, /readyz answers 200 through it"
    else
        record 0 "haproxy: started on 127.0.0.1:$PROXY_PORT" "/readyz not 200 through it within 20 s"
        show_log haproxy "$dir/haproxy.log"
        return 1
    fi
    # The health checks mark every node up (rise 2, inter 1s) before the checks.
    sleep 2.5
}

# --- the runs -------------------------------------------------------------------------
for proxy in "${PROXIES[@]}"; do
    log "$proxy in front of three nodes"
    PROXY_NAME="$proxy"
    KILLED_A=0
    if start_nodes "$proxy" && "start_$proxy"; then
        WS="ws://127.0.0.1:$PROXY_PORT"
        run_check "$proxy" fanout --proxy "$WS/ws" --channel "chat:fanout-$proxy"
        run_check "$proxy" rooms --proxy-base "$WS" --room "scale-$proxy"
        if [[ "$proxy" == nginx ]]; then
            run_check "$proxy" reload --proxy "$WS/ws" --channel "chat:reload-$proxy" \
                --reload-cmd "$NGINX -s reload ${NGINX_ARGS[*]}"
            if grep -q 'reconfiguring' "$WORK/nginx/logs/error.log"; then
                record 1 "nginx reload: the master logged 'reconfiguring'"
            else
                record 0 "nginx reload: the master logged 'reconfiguring'" "not in error.log"
            fi
        else
            run_check "$proxy" reload --proxy "$WS/ws" --channel "chat:reload-$proxy" \
                --reload-cmd "kill -USR2 $PROXY_PID"
            HA_LOG="$WORK/haproxy/haproxy.log"
            if grep -q 'Reloading HAProxy' "$HA_LOG" &&
                [[ "$(grep -c 'Loading success' "$HA_LOG")" -ge 2 ]]; then
                record 1 "haproxy reload: the master logged 'Reloading HAProxy' and loaded new workers"
            else
                record 0 "haproxy reload: the master reloaded" "no 'Reloading HAProxy' and second 'Loading success'"
                show_log haproxy "$HA_LOG"
            fi
            if grep -q 'performing a hard-stop' "$HA_LOG" && grep -q 'Former worker .* exited' "$HA_LOG"; then
                record 1 "haproxy reload: the old worker closed what it held at hard-stop-after and exited"
            else
                record 0 "haproxy reload: the old worker stopped at hard-stop-after" "not in its output"
                show_log haproxy "$HA_LOG"
            fi
        fi
        KILLED_A=1
        # (stderr: bash's notice that node A was "Killed", which is the point)
        run_check "$proxy" failover --proxy "$WS/ws" --channel "chat:failover-$proxy" --kill-pid "$PID_A" \
            --presence-ttl "$PRESENCE_TTL" 2>/dev/null
        if kill -0 "$PROXY_PID" 2>/dev/null; then
            stop_pid "$PROXY_PID" 10
            record 1 "$proxy: still running at the end, stopped by PID"
        else
            record 0 "$proxy: still running at the end" "it exited"
        fi
    fi
    stop_nodes "$proxy"
done

# --- summary --------------------------------------------------------------------------
[[ -n "$OUT_RESULTS" ]] && cat "$RESULTS" >>"$OUT_RESULTS"
passed="$(grep -c '^PASS ' "$RESULTS" || true)"
failed="$(grep -c '^FAIL ' "$RESULTS" || true)"
if ((failed > 0)); then
    echo "[scaleout] failed checks:"
    grep '^FAIL ' "$RESULTS" | head -n 30 | sed 's/^/  /'
fi
log "took $((SECONDS - START)) s"
echo "scaleout: $passed passed, $failed failed"
((failed == 0))
