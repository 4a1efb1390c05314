#!/usr/bin/env bash
# Interop tests: duplex against real WebSocket peers, Python `websockets` and
# Node `ws`, all on loopback.
#
#   interop/run.sh
#
# 1. Peers as CLIENTS of `duplex echo` (plain and TLS, server with and without
#    permessage-deflate, client offering it or not): every payload (text and
#    binary; 0, 1, 125, 126, 65535, 65536 B, 1 MiB, 16 MiB) is echoed byte for
#    byte, the negotiated extension is what both sides allow, and a close with
#    1000 is answered with 1000. Each server must then stop cleanly on SIGTERM.
# 2. Peers as SERVERS for the duplex client:
#    - `duplex connect URL --echo`: the peer sends every payload and checks the
#      echo, then closes with 1000 (plain and TLS, peer with and without
#      compression, client with and without --no-deflate);
#    - pipe mode, `duplex connect URL` with text lines on stdin: the lines
#      come back on stdout and the client closes with 1000 at EOF;
#    - TLS verification: --insecure connects to an unknown CA, and no --ca
#      refuses to.
# 3. Peers as plain clients of the hub's raw rooms, `duplex serve`: see
#    interop/rooms/run.sh (6 clients in one room and 2 in another, every
#    message delivered once, in order, byte for byte, to every other member;
#    echo_to_sender; a foreign Origin refused with 403; /echo).
# TLS certificates (a CA and a 127.0.0.1 leaf) are made by openssl in a temp
# dir. Prints `interop: N passed, M failed` and exits 1 on any failure.
#
# Environment (optional):
#   INTEROP_PEERS="python node"   which peers to run (default both)
#   INTEROP_NO_BUILD=1            skip `cargo build --release -p duplex-cli` (and the examples)
#   DUPLEX_BIN                    the duplex binary (default <target>/release/duplex)
#   PYTHON                        Python with websockets (default .venv/bin/python)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=SCRIPTDIR/../scripts/lib.sh
source "$ROOT/scripts/lib.sh"
HERE="$ROOT/interop"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac
read -r -a PEERS <<<"${INTEROP_PEERS:-python node}"
export NO_COLOR=1
START=$SECONDS

log() { printf '[interop] %s\n' "$*"; }
die() {
    printf '[interop] FAILED: %s\n' "$*" >&2
    echo "interop: 0 passed, 1 failed"
    exit 1
}

case "${1:-}" in
-h | --help)
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
    exit 0
    ;;
"") ;;
*)
    echo "usage: $0" >&2
    exit 2
    ;;
esac

# --- tools ------------------------------------------------------------------
PY="${PYTHON:-$ROOT/.venv/bin/python}"
for p in "${PEERS[@]}"; do
    case "$p" in
    python)
        [[ -x "$PY" ]] || die "no Python at $PY: run scripts/test.sh once (it creates .venv/), or set PYTHON"
        "$PY" -c 'import websockets' 2>/dev/null ||
            die "$PY cannot import websockets: pip install -r scripts/requirements.txt"
        ;;
    node)
        command -v node >/dev/null || die "node not found (Node 20 is required)"
        [[ -f "$HERE/node_modules/ws/package.json" ]] || die "interop/node_modules/ws missing: run (cd interop && npm ci)"
        ;;
    *) die "unknown peer '$p' in INTEROP_PEERS (python, node)" ;;
    esac
done
command -v openssl >/dev/null || die "openssl not found"
command -v timeout >/dev/null || die "timeout (coreutils) not found"

if [[ -z "${DUPLEX_BIN:-}" && "${INTEROP_NO_BUILD:-0}" != 1 ]]; then
    log "cargo build --release -p duplex-cli -p duplex --examples"
    cargo build --release -p duplex-cli --manifest-path "$ROOT/Cargo.toml" || die "building duplex-cli failed"
    cargo build --release -p duplex --examples --manifest-path "$ROOT/Cargo.toml" ||
        die "building the duplex examples failed"
fi
BIN="${DUPLEX_BIN:-$TARGET_DIR/release/duplex}"
[[ -x "$BIN" ]] || die "duplex binary not found at $BIN"

# --- process bookkeeping (helpers in scripts/lib.sh) ---------------------------
WORK="$(mktemp -d "${TMPDIR:-/tmp}/duplex-interop.XXXXXX")"
RESULTS="$WORK/results"
: >"$RESULTS"
# record: checks made by this script rather than by a peer.
RECORD_PREFIX="harness: " RECORD_ECHO_PASS=0
PIDS=()
cleanup() {
    stop_all "${PIDS[@]}"
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# peer_cmd NAME: the command line that runs peer NAME.
peer_cmd() {
    case "$1" in
    python) printf '%s\n' "$PY" "$HERE/python/peer.py" ;;
    node) printf '%s\n' node "$HERE/node/peer.mjs" ;;
    esac
}

# collect LABEL LOG EXPECTED SECONDS: move a peer's PASS/FAIL lines into the
# results and check that it printed every planned check.
collect() {
    local label="$1" file="$2" expected="$3" took="$4" n pass fail
    grep -E '^(PASS|FAIL) ' "$file" >>"$RESULTS" || true
    pass="$(grep -c '^PASS ' "$file" || true)"
    fail="$(grep -c '^FAIL ' "$file" || true)"
    n=$((pass + fail))
    if ((n != expected)); then
        record 0 "$label: peer reported all its checks" "it reported $n of $expected (crashed?)"
        show_log "$label" "$file"
    fi
    if ((fail > 0)); then
        printf '  FAIL %s (%d of %d checks failed, %d s)\n' "$label" "$fail" "$n" "$took"
        grep '^FAIL ' "$file" | head -n 5 | sed 's/^/    /'
    else
        printf '  ok   %s (%d checks, %d s)\n' "$label" "$n" "$took"
    fi
}

# --- certificates ---------------------------------------------------------------
CERTS="$WORK/certs"
mkdir -p "$CERTS"
(
    cd "$CERTS"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout ca.key -out ca.pem -days 2 -subj "/CN=duplex interop test CA" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout server.key -out server.csr -subj "/CN=127.0.0.1"
    printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
        "extendedKeyUsage=serverAuth" "subjectAltName=IP:127.0.0.1,DNS:localhost" >server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
        -out server.pem -days 2 -extfile server.ext
) >"$WORK/openssl.log" 2>&1 || {
    cat "$WORK/openssl.log" >&2
    die "openssl could not make the test certificates"
}
CA="$CERTS/ca.pem"
CERT="$CERTS/server.pem"
KEY="$CERTS/server.key"

DRIVE_CHECKS=18 # extension + 2 kinds x 8 sizes + close
ECHO_CHECKS=2   # extension + close

# --- 1. peers as clients of `duplex echo` ---------------------------------------------
log "1. Python/Node clients -> duplex echo ($BIN)"
declare -A ECHO_PORT ECHO_PID
for tls in ws wss; do
    for deflate in on off; do
        key="$tls-$deflate"
        args=(echo --listen 127.0.0.1:0)
        [[ "$deflate" == off ]] && args+=(--no-deflate)
        [[ "$tls" == wss ]] && args+=(--tls-cert "$CERT" --tls-key "$KEY")
        "$BIN" "${args[@]}" >"$WORK/echo-$key.out" 2>"$WORK/echo-$key.err" &
        ECHO_PID[$key]=$!
        PIDS+=("${ECHO_PID[$key]}")
        if ! ECHO_PORT[$key]="$(wait_for_port "$WORK/echo-$key.err" "${ECHO_PID[$key]}")"; then
            show_log "duplex ${args[*]}" "$WORK/echo-$key.err"
            die "duplex ${args[*]} did not print 'listening on 127.0.0.1:PORT'"
        fi
    done
done

for peer in "${PEERS[@]}"; do
    mapfile -t cmd < <(peer_cmd "$peer")
    for tls in ws wss; do
        for deflate in on off; do
            key="$tls-$deflate"
            for offer in on off; do
                label="$peer client -> duplex echo [$tls, server deflate $deflate, client offers $offer]"
                expect=no
                [[ "$deflate" == on && "$offer" == on ]] && expect=yes
                args=(client --url "$tls://127.0.0.1:${ECHO_PORT[$key]}" --expect-deflate "$expect" --label "$label")
                [[ "$tls" == wss ]] && args+=(--ca "$CA")
                [[ "$offer" == off ]] && args+=(--no-compression)
                t0=$SECONDS
                run_child timeout --kill-after=5 400 "${cmd[@]}" "${args[@]}" >"$WORK/peer.log" 2>&1 || true
                collect "$label" "$WORK/peer.log" "$DRIVE_CHECKS" $((SECONDS - t0))
            done
        done
    done
done

for key in ws-on ws-off wss-on wss-off; do
    label="duplex echo [$key] still running after the clients, then stops cleanly on SIGTERM"
    pid="${ECHO_PID[$key]}"
    if ! kill -0 "$pid" 2>/dev/null; then
        wait "$pid" 2>/dev/null && st=0 || st=$?
        record 0 "$label" "it had exited during the tests (status $st)"
        show_log "duplex echo [$key] stderr" "$WORK/echo-$key.err"
        continue
    fi
    kill -TERM "$pid"
    if ! wait_exit "$pid" 10; then
        record 0 "$label" "still running 10 s after SIGTERM"
    elif ((EXIT_STATUS != 0)); then
        record 0 "$label" "exit status $EXIT_STATUS"
    else
        record 1 "$label"
    fi
done

# --- 2. peers as servers for `duplex connect` -----------------------------------------
# start_peer_server NAME MODE TLS COMPRESSION EXPECT LABEL: start it; sets
# PEER_PID, PEER_PORT and PEER_LOG.
RUN=0
start_peer_server() {
    local peer="$1" mode="$2" tls="$3" compression="$4" expect="$5" label="$6" cmd
    mapfile -t cmd < <(peer_cmd "$peer")
    local args=(server --mode "$mode" --expect-deflate "$expect" --label "$label" --timeout 300)
    # A fresh log per run: reusing one file races with the shell truncating it
    # and could show the previous run's port.
    RUN=$((RUN + 1))
    PEER_LOG="$WORK/peer-$RUN.log"
    [[ "$tls" == wss ]] && args+=(--tls-cert "$CERT" --tls-key "$KEY")
    [[ "$compression" == off ]] && args+=(--no-compression)
    "${cmd[@]}" "${args[@]}" >"$PEER_LOG" 2>&1 &
    PEER_PID=$!
    PIDS+=("$PEER_PID")
    PEER_PORT="$(wait_for_port "$PEER_LOG" "$PEER_PID")" || {
        show_log "$peer server" "$PEER_LOG"
        return 1
    }
}

log "2. duplex connect -> Python/Node servers"
for peer in "${PEERS[@]}"; do
    for tls in ws wss; do
        for compression in on off; do
            for deflate in on off; do
                label="duplex connect --echo -> $peer server [$tls, server compression $compression, client deflate $deflate]"
                expect=no
                [[ "$compression" == on && "$deflate" == on ]] && expect=yes
                t0=$SECONDS
                if ! start_peer_server "$peer" drive "$tls" "$compression" "$expect" "$label"; then
                    record 0 "$label: peer server started" "no 'listening on' line"
                    continue
                fi
                args=(connect "$tls://127.0.0.1:$PEER_PORT" --echo)
                [[ "$tls" == wss ]] && args+=(--ca "$CA")
                [[ "$deflate" == off ]] && args+=(--no-deflate)
                rc=0
                run_child timeout --kill-after=5 300 "$BIN" "${args[@]}" </dev/null >"$WORK/client.out" 2>"$WORK/client.err" || rc=$?
                if ((rc == 0)); then
                    record 1 "$label: duplex connect exited 0"
                else
                    record 0 "$label: duplex connect exited 0" "exit status $rc"
                    show_log "duplex connect stderr" "$WORK/client.err"
                fi
                wait_exit "$PEER_PID" 15 || true
                collect "$label" "$PEER_LOG" "$DRIVE_CHECKS" $((SECONDS - t0))
            done
        done
    done
done

# Lines for the pipe-mode test: ASCII, an empty line, multi-byte UTF-8, a long line.
LINES="$WORK/lines.txt"
{
    echo "hello from duplex interop"
    echo ""
    echo "caf$(printf '\xc3\xa9') $(printf '\xe2\x98\x83') $(printf '\xe6\x97\xa5\xe6\x9c\xac') $(printf '\xf0\x9f\x98\x80')"
    head -c 30000 /dev/zero | tr '\0' 'y'
    echo
    for i in $(seq 1 200); do echo "line $i"; done
    echo "last line"
} >"$LINES"

# pipe_test PEER TLS DEFLATE SUFFIX EXTRA_CLIENT_ARGS...: pipe mode against an
# echoing peer. stdin is a FIFO that stays open until every line has come back
# on stdout, so the test does not depend on whether the peer answers a close
# before echoing what it still has queued (Python websockets does not wait).
pipe_test() {
    local peer="$1" tls="$2" deflate="$3" suffix="$4"
    shift 4
    local label="duplex connect (pipe mode) -> $peer echo server [$tls, client deflate $deflate$suffix]"
    local expect=no t0=$SECONDS want got deadline
    [[ "$deflate" == on ]] && expect=yes
    if ! start_peer_server "$peer" echo "$tls" on "$expect" "$label"; then
        record 0 "$label: peer server started" "no 'listening on' line"
        return
    fi
    local args=(connect "$tls://127.0.0.1:$PEER_PORT" "$@")
    [[ "$deflate" == off ]] && args+=(--no-deflate)
    local out="$WORK/pipe-$RUN.out" err="$WORK/pipe-$RUN.err" fifo="$WORK/pipe-$RUN.fifo"
    : >"$out" # created here, so the wait loop never reads an older file
    mkfifo "$fifo"
    "$BIN" "${args[@]}" <"$fifo" >"$out" 2>"$err" &
    local client_pid=$!
    PIDS+=("$client_pid")
    exec 3>"$fifo"
    cat "$LINES" >&3 || true # the client may have died; the checks below say so
    want="$(wc -l <"$LINES")"
    deadline=$((SECONDS + 30))
    while got="$(wc -l <"$out")" && ((got < want && SECONDS < deadline)); do
        kill -0 "$client_pid" 2>/dev/null || break
        sleep 0.1
    done
    exec 3>&- # EOF: the client closes the connection
    if cmp -s "$LINES" "$out"; then
        record 1 "$label: every stdin line comes back on stdout, in order"
    else
        record 0 "$label: every stdin line comes back on stdout, in order" \
            "$(cmp "$LINES" "$out" 2>&1 | head -n1) ($(wc -l <"$out") of $want lines)"
    fi
    if ! wait_exit "$client_pid" 30; then
        record 0 "$label: duplex connect exits 0 at stdin EOF" "still running 30 s after EOF"
    elif ((EXIT_STATUS != 0)); then
        record 0 "$label: duplex connect exits 0 at stdin EOF" "exit status $EXIT_STATUS"
        show_log "duplex connect stderr" "$err"
    else
        record 1 "$label: duplex connect exits 0 at stdin EOF"
    fi
    wait_exit "$PEER_PID" 15 || true
    collect "$label" "$PEER_LOG" "$ECHO_CHECKS" $((SECONDS - t0))
}

for peer in "${PEERS[@]}"; do
    pipe_test "$peer" ws on ""
    pipe_test "$peer" ws off ""
    pipe_test "$peer" wss on "" --ca "$CA"
    pipe_test "$peer" wss off "" --ca "$CA"
done
pipe_test "${PEERS[0]}" wss on ", --insecure instead of --ca" --insecure

# Without --ca or --insecure the test CA is unknown: the client must refuse.
label="duplex connect refuses a certificate from an unknown CA"
if start_peer_server "${PEERS[0]}" echo wss on yes "$label"; then
    rc=0
    run_child timeout --kill-after=5 30 "$BIN" connect "wss://127.0.0.1:$PEER_PORT" </dev/null \
        >"$WORK/client.out" 2>"$WORK/client.err" || rc=$?
    if ((rc != 0 && rc != 124 && rc != 137)); then
        record 1 "$label"
    else
        record 0 "$label" "exit status $rc"
    fi
    kill -TERM "$PEER_PID" 2>/dev/null || true
    wait_exit "$PEER_PID" 5 || true
else
    record 0 "$label: peer server started" "no 'listening on' line"
fi

# The README's two examples (duplex/examples/echo_server.rs and client.rs) against each
# other: the client's message must come back and the client must exit 0 after its close.
label="README examples: the client example's message comes back from the echo_server example"
EXAMPLES="$TARGET_DIR/release/examples"
"$EXAMPLES/echo_server" 127.0.0.1:0 >"$WORK/example-server.out" 2>&1 &
EXAMPLE_PID=$!
PIDS+=("$EXAMPLE_PID")
if EXAMPLE_PORT="$(wait_for_port "$WORK/example-server.out" "$EXAMPLE_PID")"; then
    rc=0
    run_child timeout --kill-after=5 30 "$EXAMPLES/client" "ws://127.0.0.1:$EXAMPLE_PORT" \
        </dev/null >"$WORK/example-client.out" 2>&1 || rc=$?
    if ((rc == 0)) && grep -q 'hello from duplex' "$WORK/example-client.out"; then
        record 1 "$label"
    else
        record 0 "$label" "exit status $rc, output: $(head -c 300 "$WORK/example-client.out")"
    fi
else
    record 0 "$label" "the echo_server example printed no 'listening on' line"
fi
kill -TERM "$EXAMPLE_PID" 2>/dev/null || true
wait "$EXAMPLE_PID" 2>/dev/null || true

# --- 3. peers as clients of the hub's raw rooms -----------------------------------------
log "3. Python/Node clients in the raw rooms of duplex serve"
rc=0
run_child env DUPLEX_BIN="$BIN" PYTHON="$PY" bash "$HERE/rooms/run.sh" --results "$WORK/rooms.results" || rc=$?
[[ -f "$WORK/rooms.results" ]] && cat "$WORK/rooms.results" >>"$RESULTS"
if ((rc != 0)) && ! grep -q '^FAIL ' "$WORK/rooms.results" 2>/dev/null; then
    record 0 "interop/rooms/run.sh" "exit status $rc without a failed check"
fi

# --- summary ------------------------------------------------------------------------
passed="$(grep -c '^PASS ' "$RESULTS" || true)"
failed="$(grep -c '^FAIL ' "$RESULTS" || true)"
if ((failed > 0)); then
    echo "[interop] failed checks:"
    grep '^FAIL ' "$RESULTS" | head -n 60 | sed 's/^FAIL /  /'
    ((failed <= 60)) || echo "  ... and $((failed - 60)) more"
fi
log "took $((SECONDS - START)) s"
echo "interop: $passed passed, $failed failed"
((failed == 0))
