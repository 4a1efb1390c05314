#!/usr/bin/env bash
# Raw rooms interop: plain WebSocket clients (Python `websockets`, Node `ws`)
# against the hub, `duplex serve`, on loopback. Run by interop/run.sh; also
# runs alone (after a release build):
#
#   interop/rooms/run.sh [--results FILE]
#
# For each of rooms.echo_to_sender = false, then true (a fresh hub each time):
#   - 3 clients per peer library join /rooms/lobby and 1 per library joins
#     /rooms/other; once all have joined, each sends its stream: ROOMS_N texts
#     (sender id, sequence number, 1- to 4-byte UTF-8) with binaries of 64,
#     70000 and 1000 B among them, then an empty binary between two marker
#     texts, which the members send in turn (an empty message cannot name its
#     sender). Every client checks that each other member's stream arrived
#     exactly once, in order, byte for byte, as text or binary as sent; that
#     none of its own came back (all of it, in order, with echo_to_sender);
#     that nothing arrived from the other room; and that its close with 1000
#     is answered with 1000.
#   - the hub then stops on SIGTERM with exit status 0.
# Once, per library: a foreign browser Origin (https://evil.example) is
# refused with 403 on /rooms/lobby, /echo and /ws, a localhost Origin is
# accepted, and /echo echoes text and binary (0 and 70000 B).
# The hub runs with --max-message-size 131072 (the 70000 B messages) and
# --publish-rate 1000 (each client sends its stream at once).
#
# Check lines go to FILE (appended) as `PASS ...`/`FAIL ...`; prints
# `rooms: N passed, M failed` and exits 1 on any failure.
#
# Environment (optional):
#   INTEROP_PEERS="python node"   peer libraries (default both)
#   DUPLEX_BIN                    the duplex binary (default <target>/release/duplex)
#   PYTHON                        Python with websockets (default .venv/bin/python)
#   ROOMS_N                       texts per client (default 50)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=SCRIPTDIR/../../scripts/lib.sh
source "$ROOT/scripts/lib.sh"
HERE="$ROOT/interop/rooms"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac
read -r -a PEERS <<<"${INTEROP_PEERS:-python node}"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
BIN="${DUPLEX_BIN:-$TARGET_DIR/release/duplex}"
N="${ROOMS_N:-50}"
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

log() { printf '[rooms] %s\n' "$*"; }
die() {
    printf '[rooms] FAILED: %s\n' "$*" >&2
    [[ -n "$OUT_RESULTS" ]] && echo "FAIL rooms harness: $*" >>"$OUT_RESULTS"
    echo "rooms: 0 passed, 1 failed"
    exit 1
}

[[ -x "$BIN" ]] || die "duplex binary not found at $BIN (cargo build --release -p duplex-cli)"
for p in "${PEERS[@]}"; do
    case "$p" in
    python) "$PY" -c 'import websockets' 2>/dev/null || die "$PY cannot import websockets" ;;
    node) [[ -f "$ROOT/interop/node_modules/ws/package.json" ]] || die "interop/node_modules/ws missing" ;;
    *) die "unknown peer '$p' in INTEROP_PEERS (python, node)" ;;
    esac
done

# --- process bookkeeping (helpers in scripts/lib.sh) ---------------------------------
WORK="$(mktemp -d "${TMPDIR:-/tmp}/duplex-rooms.XXXXXX")"
RESULTS="$WORK/results"
: >"$RESULTS"
RECORD_PREFIX="rooms harness: " RECORD_ECHO_PASS=0
PIDS=()
cleanup() {
    stop_all "${PIDS[@]}"
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# client_cmd PEER: the command line that runs the room client of PEER.
client_cmd() {
    case "$1" in
    python) printf '%s\n' "$PY" "$HERE/room_py.py" ;;
    node) printf '%s\n' node "$HERE/room_node.mjs" ;;
    esac
}

# collect LABEL LOG EXPECTED: move a client's check lines into the results and
# check that it printed every planned check.
collect() {
    local label="$1" file="$2" expected="$3" pass fail n
    grep -E '^(PASS|FAIL) ' "$file" >>"$RESULTS" || true
    pass="$(grep -c '^PASS ' "$file" || true)"
    fail="$(grep -c '^FAIL ' "$file" || true)"
    n=$((pass + fail))
    if ((n != expected)); then
        record 0 "$label: client reported all its checks" "it reported $n of $expected (crashed?)"
        show_log "$label" "$file"
    fi
    if ((fail > 0)); then
        printf '  FAIL %s (%d of %d checks failed)\n' "$label" "$fail" "$n"
        grep '^FAIL ' "$file" | head -n 5 | sed 's/^/    /'
    else
        printf '  ok   %s (%d checks)\n' "$label" "$n"
    fi
}

# start_hub LABEL ARGS...: start `duplex serve`; sets HUB_PID, HUB_PORT, HUB_LOG.
HUB_RUN=0
start_hub() {
    local label="$1"
    shift
    HUB_RUN=$((HUB_RUN + 1))
    HUB_LOG="$WORK/hub-$HUB_RUN.err"
    "$BIN" serve --listen 127.0.0.1:0 --max-message-size 131072 --publish-rate 1000 \
        --set shutdown.drain_secs=1 "$@" >/dev/null 2>"$HUB_LOG" &
    HUB_PID=$!
    PIDS+=("$HUB_PID")
    if HUB_PORT="$(wait_for_port "$HUB_LOG" "$HUB_PID")"; then
        record 1 "$label: duplex serve started"
    else
        record 0 "$label: duplex serve started" "no 'listening on 127.0.0.1:PORT' line"
        show_log "duplex serve" "$HUB_LOG"
        return 1
    fi
}

stop_hub() {
    local label="$1"
    if ! kill -0 "$HUB_PID" 2>/dev/null; then
        wait "$HUB_PID" 2>/dev/null && EXIT_STATUS=0 || EXIT_STATUS=$?
        record 0 "$label: duplex serve stops with status 0 on SIGTERM" "it had exited already (status $EXIT_STATUS)"
        show_log "duplex serve" "$HUB_LOG"
        return
    fi
    kill -TERM "$HUB_PID"
    if ! wait_exit "$HUB_PID" 15; then
        record 0 "$label: duplex serve stops with status 0 on SIGTERM" "still running 15 s after SIGTERM"
    elif ((EXIT_STATUS != 0)); then
        record 0 "$label: duplex serve stops with status 0 on SIGTERM" "exit status $EXIT_STATUS"
        show_log "duplex serve" "$HUB_LOG"
    else
        record 1 "$label: duplex serve stops with status 0 on SIGTERM"
    fi
}

# The members: 3 per library in /rooms/lobby, interleaved so that the ring of
# empty messages passes between libraries; 1 per library in /rooms/other.
LOBBY=()
OTHER=()
for i in 0 1 2; do
    for p in "${PEERS[@]}"; do LOBBY+=("$p-$i"); done
done
for p in "${PEERS[@]}"; do OTHER+=("$p-other"); done
((${#OTHER[@]} > 1)) || OTHER+=("${PEERS[0]}-other2")
join_by_comma() {
    local IFS=,
    printf '%s' "$*"
}

# room_scenario LABEL [--expect-own]: every member of both rooms against the
# running hub.
room_scenario() {
    local label="$1" extra=("${@:2}") sync="$WORK/sync-$HUB_RUN" room members id peer cmd log
    mkdir -p "$sync"
    local logs=() labels=() counts=() pids=()
    for room in lobby other; do
        if [[ "$room" == lobby ]]; then members=("${LOBBY[@]}"); else members=("${OTHER[@]}"); fi
        for id in "${members[@]}"; do
            peer="${id%%-*}"
            mapfile -t cmd < <(client_cmd "$peer")
            log="$WORK/client-$HUB_RUN-$id.log"
            labels+=("$label: $peer client $id in /rooms/$room")
            logs+=("$log")
            counts+=($((${#members[@]} + 3))) # the others + own + foreign + sent + close
            "${cmd[@]}" room --url "ws://127.0.0.1:$HUB_PORT" --room "$room" --id "$id" \
                --peers "$(join_by_comma "${members[@]}")" --n "$N" --sync "$sync" \
                --label "${labels[-1]}" "${extra[@]}" >"$log" 2>&1 &
            pids+=($!)
            PIDS+=("${pids[-1]}")
        done
    done
    # Everyone joined (the hub subscribes a room connection right after its
    # handshake; the pause covers that), then go.
    local deadline=$((SECONDS + 30)) ready all i
    while ((SECONDS < deadline)); do
        ready=0
        for log in "${logs[@]}"; do grep -q '^READY' "$log" && ready=$((ready + 1)); done
        ((ready == ${#logs[@]})) && break
        sleep 0.1
    done
    if ((ready != ${#logs[@]})); then
        record 0 "$label: every client joined its room" "$ready of ${#logs[@]} within 30 s"
    else
        record 1 "$label: every client joined its room"
    fi
    sleep 0.5
    touch "$sync/go"
    # Everyone received everything (or gave up, or died), then stop.
    deadline=$((SECONDS + 90))
    while ((SECONDS < deadline)); do
        all=1
        for i in "${!logs[@]}"; do
            if ! grep -q '^RECEIVED-ALL' "${logs[$i]}" && kill -0 "${pids[$i]}" 2>/dev/null; then
                all=0
                break
            fi
        done
        ((all)) && break
        sleep 0.1
    done
    touch "$sync/stop"
    for i in "${!logs[@]}"; do
        wait_exit "${pids[$i]}" 60 || true
        collect "${labels[$i]}" "${logs[$i]}" "${counts[$i]}"
    done
}

# --- the runs -------------------------------------------------------------------------
log "raw rooms: ${LOBBY[*]} in /rooms/lobby, ${OTHER[*]} in /rooms/other, $N texts each"
label="rooms, echo_to_sender=false"
if start_hub "$label"; then
    room_scenario "$label"
    for peer in "${PEERS[@]}"; do
        mapfile -t cmd < <(client_cmd "$peer")
        plabel="$peer probe: Origin and /echo"
        "${cmd[@]}" probe --url "ws://127.0.0.1:$HUB_PORT" --label "$plabel" --timeout 60 \
            >"$WORK/probe-$peer.log" 2>&1 &
        pid=$!
        PIDS+=("$pid")
        wait_exit "$pid" 90 || true
        collect "$plabel" "$WORK/probe-$peer.log" 9
    done
    stop_hub "$label"
fi

label="rooms, echo_to_sender=true"
if start_hub "$label" --set rooms.echo_to_sender=true; then
    room_scenario "$label" --expect-own
    stop_hub "$label"
fi

# --- summary --------------------------------------------------------------------------
[[ -n "$OUT_RESULTS" ]] && cat "$RESULTS" >>"$OUT_RESULTS"
passed="$(grep -c '^PASS ' "$RESULTS" || true)"
failed="$(grep -c '^FAIL ' "$RESULTS" || true)"
if ((failed > 0)); then
    echo "[rooms] failed checks:"
    grep '^FAIL ' "$RESULTS" | head -n 30 | sed 's/^/  /'
fi
log "took $((SECONDS - START)) s"
echo "rooms: $passed passed, $failed failed"
((failed == 0))
