#!/usr/bin/env bash
# End-to-end tests of the hub's web pages in real headless Chromium (Debian's
# `chromium`, driven by playwright-core), all on loopback; run by
# `scripts/test.sh browser`, also alone after a release build and
# `(cd web/e2e && npm ci)`:
#
#   web/e2e/run.sh [TEST_FILE...]
#
# Starts a redis-server on a free port (no persistence) and runs the
# node:test files web/e2e/*.test.mjs one after the other; each starts the
# `duplex serve` nodes it needs (on free ports, with --api-key, on the Redis
# when it needs two nodes) and one Chromium:
#   chat      two contexts chat in a room, see each other in the member list
#             and every message once; a third one joining later gets the history
#   prices    the price board follows the node's --demo-feed
#   status    the status page shows the node's sys:stats and a chart
#   restart   node A is killed (SIGKILL): the chat page shows it is
#             reconnecting; 3 messages published meanwhile through node B's
#             HTTP API appear once, in order, after A restarts on its port
#   origin    a page from an origin the hub does not allow cannot open a
#             WebSocket (error, close 1006); from an allowed one it can
#   plain     the plain-WebSocket page talks to a raw room
#   pages     the index links to every page, each loads without an error;
#             the chat page's nickname form
# Each test saves a screenshot of its page in web/e2e/screenshots/ (not
# committed). The pages are compiled into the binary: one that does not serve
# exactly the files of web/ fails every test with "rebuild it". A missing
# binary, redis-server or Chromium is a failure. Every process started is
# stopped by PID: by the tests, and by this script's exit trap for whatever
# they left.
#
# Environment (optional):
#   DUPLEX_BIN      the duplex binary (default <target>/release/duplex)
#   E2E_CHROMIUM    the browser (default /usr/bin/chromium)
#   E2E_TIMEOUT     seconds for the whole node --test run (default 600)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=SCRIPTDIR/../../scripts/lib.sh
source "$ROOT/scripts/lib.sh"
HERE="$ROOT/web/e2e"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac
BIN="${DUPLEX_BIN:-$TARGET_DIR/release/duplex}"
CHROMIUM="${E2E_CHROMIUM:-/usr/bin/chromium}"
export NO_COLOR=1
START=$SECONDS

log() { printf '[browser] %s\n' "$*"; }
die() {
    printf '[browser] FAILED: %s\n' "$*" >&2
    echo "browser: 0 passed, 1 failed"
    exit 1
}

FILES=()
for arg in "$@"; do
    case "$arg" in
    -h | --help)
        sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
        exit 0
        ;;
    -*)
        echo "usage: $0 [TEST_FILE...]" >&2
        exit 2
        ;;
    *)
        [[ -f "$arg" ]] || die "no test file $arg"
        FILES+=("$(cd "$(dirname "$arg")" && pwd)/$(basename "$arg")")
        ;;
    esac
done
if ((${#FILES[@]} == 0)); then
    FILES=("$HERE"/*.test.mjs)
fi

# --- what the tests need ------------------------------------------------------------------
[[ -x "$BIN" ]] || die "duplex binary not found at $BIN (cargo build --release -p duplex-cli, or set DUPLEX_BIN)"
command -v node >/dev/null || die "node not found (Node 20 is required)"
command -v redis-server >/dev/null || die "redis-server not found: install it (scripts/test.sh setup does)"
[[ -x "$CHROMIUM" ]] || die "$CHROMIUM not found: install Debian's chromium package (scripts/test.sh setup does)"
[[ -f "$HERE/node_modules/playwright-core/package.json" ]] ||
    die "web/e2e/node_modules/playwright-core missing: run (cd web/e2e && npm ci)"

# --- process bookkeeping (helpers in scripts/lib.sh) -------------------------------------
WORK="$(mktemp -d "${TMPDIR:-/tmp}/duplex-e2e.XXXXXX")"
mkdir -p "$WORK/pids"
PIDS=()
# stop_pid (scripts/lib.sh): SIGTERM, SIGKILL after 5 s.
# shellcheck disable=SC2317 # cleanup runs from the EXIT trap
cleanup() {
    local pid file
    if [[ -n "${TEST_PID:-}" ]]; then
        stop_pid "$TEST_PID"
        wait "$TEST_PID" 2>/dev/null || true
    fi
    # Processes the tests started and did not see exit (a test process that was killed).
    for file in "$WORK"/pids/*; do
        [[ -e "$file" ]] || continue
        pid="$(basename "$file")"
        # Only if it is still what was recorded (the PID may have been reused).
        if grep -qE 'duplex|chromium' "/proc/$pid/cmdline" 2>/dev/null; then
            log "stopping leftover $(cat "$file") (pid $pid)"
            stop_pid "$pid"
        fi
    done
    for pid in "${PIDS[@]}"; do
        stop_pid "$pid"
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- Redis --------------------------------------------------------------------------------
REDIS_PORT="$(free_port)"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$WORK" \
    --logfile "$WORK/redis.log" >/dev/null 2>&1 &
REDIS_PID=$!
PIDS+=("$REDIS_PID")
redis_ping() {
    local reply=""
    exec 3<>"/dev/tcp/127.0.0.1/$REDIS_PORT" || return 1
    printf 'PING\r\n' >&3
    read -r -t 1 reply <&3 || true
    exec 3>&- 3<&-
    [[ "$reply" == +PONG* ]]
}
redis_up=0
for _ in $(seq 1 100); do
    if redis_ping 2>/dev/null; then
        redis_up=1
        break
    fi
    kill -0 "$REDIS_PID" 2>/dev/null || break
    sleep 0.1
done
if ((!redis_up)); then
    show_log redis "$WORK/redis.log"
    die "redis-server did not start on 127.0.0.1:$REDIS_PORT"
fi
log "redis-server on 127.0.0.1:$REDIS_PORT (pid $REDIS_PID), $BIN, $("$CHROMIUM" --version 2>/dev/null | head -n1)"

# --- the tests ----------------------------------------------------------------------------
rm -rf "$HERE/screenshots"
mkdir -p "$HERE/screenshots"
export E2E_DUPLEX_BIN="$BIN" E2E_REDIS_URL="redis://127.0.0.1:$REDIS_PORT" E2E_WORK="$WORK"
export E2E_SCREENSHOTS="$HERE/screenshots" E2E_CHROMIUM="$CHROMIUM"
rc=0
# One file at a time: each runs its own Chromium, and the machine may have 2 cores.
timeout -k 10 "${E2E_TIMEOUT:-600}" node --test --test-concurrency=1 --test-reporter=spec "${FILES[@]}" &
TEST_PID=$!
wait "$TEST_PID" || rc=$?
TEST_PID=""
if ((rc == 124)); then
    log "node --test did not finish within ${E2E_TIMEOUT:-600} s"
fi
if ((rc != 0)); then
    for f in "$WORK"/hub-*.log; do
        show_log "$(basename "$f")" "$f" 8
    done
fi
shopt -s nullglob
shots=("$HERE"/screenshots/*.png)
log "screenshots in web/e2e/screenshots/: ${shots[*]##*/}"
log "took $((SECONDS - START)) s"
exit "$rc"
