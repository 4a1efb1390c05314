#!/usr/bin/env bash
# Autobahn conformance for duplex, with kosoku (the Autobahn TestSuite cases,
# from PyPI) as the peer.
#
#   conformance/autobahn/run.sh [server|client|all]      (default: all)
#
# server: `duplex echo` on a free loopback port, driven by
#         `kosoku -m fuzzingclient`; report in reports/servers/.
# client: `kosoku -m fuzzingserver` on a free loopback port, driven by the
#         autobahn_client example (duplex/examples/autobahn_client.rs),
#         the suite split in three parts run side by side; reports in
#         reports/clients/1/ to reports/clients/3/.
# Each report is then checked by check.py against expectations.json.
#
# Environment (all optional):
#   AUTOBAHN_CASES        space-separated case globs to run, e.g. "1.* 9.7.1"
#                         (default: every case)
#   AUTOBAHN_PARALLELISM  kosoku -p for the server role (default 4: kosoku, in
#                         Python, is most of the CPU; 4 cases at a time keep both
#                         cores busy, 2 left a third of them idle)
#   AUTOBAHN_TIMEOUT      seconds allowed per role (default 900)
#   AUTOBAHN_REPORTS      report root (default <repo>/reports)
#   AUTOBAHN_NO_BUILD=1   skip `cargo build` (binaries must already exist)
#   DUPLEX_BIN            the duplex binary (default <target>/release/duplex)
#   AUTOBAHN_CLIENT_BIN   the client example binary
#                         (default <target>/release/examples/autobahn_client)
#   KOSOKU                kosoku command (default .venv/bin/kosoku, then PATH)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=SCRIPTDIR/../../scripts/lib.sh
source "$ROOT/scripts/lib.sh"
HERE="$ROOT/conformance/autobahn"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac
REPORTS="${AUTOBAHN_REPORTS:-$ROOT/reports}"
PARALLELISM="${AUTOBAHN_PARALLELISM:-4}"
ROLE_TIMEOUT="${AUTOBAHN_TIMEOUT:-900}"
read -r -a CASES <<<"${AUTOBAHN_CASES:-}"
export NO_COLOR=1

ROLE="${1:-all}"
case "$ROLE" in
server | client | all) ;;
-h | --help)
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
    exit 0
    ;;
*)
    echo "usage: $0 [server|client|all]" >&2
    exit 2
    ;;
esac

log() { printf '[autobahn] %s\n' "$*"; }
die() {
    printf '[autobahn] FAILED: %s\n' "$*" >&2
    exit 1
}

# --- tools --------------------------------------------------------------------
if [[ -n "${KOSOKU:-}" ]]; then
    :
elif [[ -x "$ROOT/.venv/bin/kosoku" ]]; then
    KOSOKU="$ROOT/.venv/bin/kosoku"
elif command -v kosoku >/dev/null 2>&1; then
    KOSOKU="$(command -v kosoku)"
else
    die "kosoku not found: run scripts/test.sh once (it creates .venv/), or pip install -r scripts/requirements.txt"
fi
if [[ -x "$ROOT/.venv/bin/python" ]]; then PY="$ROOT/.venv/bin/python"; else PY=python3; fi
command -v timeout >/dev/null || die "timeout (coreutils) not found"

KOSOKU_ARGS=()
CHECK_ARGS=()
for c in "${CASES[@]}"; do
    KOSOKU_ARGS+=(-i "$c")
    CHECK_ARGS+=(--include "$c")
done

# --- process bookkeeping (helpers in scripts/lib.sh) ------------------------
# Each role runs in its own background subshell with its own work dir, PID
# list and EXIT trap, so `all` runs both roles even when the first one fails.
WORK=""
PIDS=()
cleanup() {
    stop_all "${PIDS[@]}"
    [[ -z "$WORK" ]] || rm -rf "$WORK"
}

# role_shell ROLE_FUNCTION: the body of a role's background subshell (started
# with `role_shell ... &`, which is the subshell: no inner one, so a SIGTERM
# sent to its PID reaches the shell that holds the traps).
role_shell() {
    WORK="$(mktemp -d "${TMPDIR:-/tmp}/duplex-autobahn.XXXXXX")"
    PIDS=()
    trap cleanup EXIT
    trap 'exit 143' TERM
    "$@"
}

# show_err NAME FILE: show_log (scripts/lib.sh) with 30 lines, on stderr, to
# help explain a failure.
show_err() { show_log "$1" "$2" 30 >&2; }

# stop_gracefully PID NAME: SIGTERM, wait up to 10 s; fail unless it exits 0.
stop_gracefully() {
    local pid="$1" name="$2" i rc
    kill -0 "$pid" 2>/dev/null || {
        wait "$pid" && rc=0 || rc=$?
        echo "$name had already exited (status $rc) before SIGTERM" >&2
        return 1
    }
    kill -TERM "$pid"
    for i in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "$name did not stop within 10 s of SIGTERM" >&2
        return 1
    fi
    wait "$pid" && rc=0 || rc=$?
    if ((rc != 0)); then
        echo "$name exited with status $rc on SIGTERM (expected a clean exit, 0)" >&2
        return 1
    fi
}

# --- build --------------------------------------------------------------------
build() {
    [[ "${AUTOBAHN_NO_BUILD:-0}" == 1 ]] && return 0
    local want_server="$1" want_client="$2"
    if [[ "$want_server" == 1 && -z "${DUPLEX_BIN:-}" ]]; then
        log "cargo build --release -p duplex-cli"
        run_child cargo build --release -p duplex-cli --manifest-path "$ROOT/Cargo.toml" ||
            die "building duplex-cli failed"
    fi
    if [[ "$want_client" == 1 && -z "${AUTOBAHN_CLIENT_BIN:-}" ]]; then
        log "cargo build --release -p duplex --example autobahn_client"
        run_child cargo build --release -p duplex --example autobahn_client --manifest-path "$ROOT/Cargo.toml" ||
            die "building the autobahn_client example failed"
    fi
}

# --- roles --------------------------------------------------------------------
run_server_role() {
    local bin="${DUPLEX_BIN:-$TARGET_DIR/release/duplex}" out="$REPORTS/servers" addr port rc start
    [[ -x "$bin" ]] || die "duplex binary not found at $bin"
    start=$SECONDS
    rm -rf "$out"
    mkdir -p "$out"

    "$bin" echo --listen 127.0.0.1:0 >"$WORK/echo.out" 2>"$WORK/echo.err" &
    local server_pid=$!
    PIDS+=("$server_pid")
    if ! port="$(wait_for_port "$WORK/echo.err" "$server_pid" 30)"; then
        show_err "duplex echo stderr" "$WORK/echo.err"
        die "duplex echo did not print 'listening on 127.0.0.1:PORT' within 30 s"
    fi
    addr="127.0.0.1:$port"
    log "server role: duplex echo (pid $server_pid) on $addr; kosoku fuzzingclient -p $PARALLELISM${CASES[*]:+, cases: ${CASES[*]}}"

    rc=0
    run_child timeout --kill-after=10 "$ROLE_TIMEOUT" \
        "$KOSOKU" -m fuzzingclient "$addr" -p "$PARALLELISM" -o "$out" "${KOSOKU_ARGS[@]}" \
        >"$WORK/kosoku-client.log" 2>&1 || rc=$?
    tail -n 3 "$WORK/kosoku-client.log" | sed 's/^/  kosoku: /'
    if ((rc == 124 || rc == 137)); then
        show_err "kosoku" "$WORK/kosoku-client.log"
        die "server role timed out after ${ROLE_TIMEOUT}s"
    fi
    # kosoku exits 1 when a case fails its own (looser) bar; check.py decides.
    if [[ ! -s "$out/index.json" ]]; then
        show_err "kosoku" "$WORK/kosoku-client.log"
        show_err "duplex echo stderr" "$WORK/echo.err"
        die "kosoku wrote no report (exit status $rc)"
    fi
    if ! kill -0 "$server_pid" 2>/dev/null; then
        show_err "duplex echo stderr" "$WORK/echo.err"
        die "duplex echo exited during the run"
    fi
    local stop_ok=1
    stop_gracefully "$server_pid" "duplex echo" || stop_ok=0

    local check_rc=0
    "$PY" "$HERE/check.py" --role server --report "$out" "${CHECK_ARGS[@]}" || check_rc=$?
    log "server role took $((SECONDS - start)) s; report: $out/index.html"
    if ((stop_ok == 0)); then
        show_err "duplex echo stderr" "$WORK/echo.err"
        die "duplex echo did not stop cleanly on SIGTERM"
    fi
    ((check_rc == 0)) || die "server role: report does not match expectations.json"
}

# The client role has no parallelism of its own (one client, one case at a
# time), so unless AUTOBAHN_CASES picks cases, the suite is split in three parts
# of about equal run time (the 12.x and 13.x deflate cases are nine tenths of
# it), each with its own fuzzingserver and client, run side by side. The third
# part is "everything else", so a case added to the suite is never left out.
CLIENT_PARTS=(
    "-i 12.1.* -i 12.2.* -i 13.1.* -i 13.2.*"
    "-i 12.4.* -i 12.5.* -i 13.3.* -i 13.4.*"
    "-x 12.1.* -x 12.2.* -x 13.1.* -x 13.2.* -x 12.4.* -x 12.5.* -x 13.3.* -x 13.4.*"
)

run_client_role() {
    local bin="${AUTOBAHN_CLIENT_BIN:-$TARGET_DIR/release/examples/autobahn_client}"
    local out="$REPORTS/clients" start=$SECONDS i n
    [[ -x "$bin" ]] || die "autobahn_client example not found at $bin"
    rm -rf "$out"
    mkdir -p "$out"

    local parts=()
    if ((${#CASES[@]})); then parts=("${KOSOKU_ARGS[*]}"); else parts=("${CLIENT_PARTS[@]}"); fi
    n=${#parts[@]}
    local kosoku_pids=() client_pids=() dirs=() part_args url
    for ((i = 1; i <= n; i++)); do
        # read -a splits without globbing, so `12.1.*` reaches kosoku as is.
        read -r -a part_args <<<"${parts[i - 1]}"
        dirs+=("$out/$i")
        "$KOSOKU" -m fuzzingserver 127.0.0.1:0 -o "$out/$i" "${part_args[@]}" \
            >"$WORK/kosoku-server-$i.out" 2>"$WORK/kosoku-server-$i.err" &
        kosoku_pids+=($!)
        PIDS+=($!)
        if ! url="$(wait_for_addr "$WORK/kosoku-server-$i.err" "${kosoku_pids[i - 1]}" 'ws://127\.0\.0\.1:[0-9]+' 30)"; then
            show_err "kosoku fuzzingserver" "$WORK/kosoku-server-$i.err"
            die "kosoku fuzzingserver did not start within 30 s"
        fi
        log "client role, part $i/$n (${part_args[*]}): kosoku fuzzingserver (pid ${kosoku_pids[i - 1]}) on $url; running $(basename "$bin")"
        timeout --kill-after=10 "$ROLE_TIMEOUT" "$bin" "$url" duplex >"$WORK/client-$i.log" 2>&1 &
        client_pids+=($!)
        PIDS+=($!)
    done

    local failed=0 rc
    for ((i = 1; i <= n; i++)); do
        rc=0
        wait "${client_pids[i - 1]}" || rc=$?
        if ((rc == 124 || rc == 137)); then
            show_err "autobahn_client part $i" "$WORK/client-$i.log"
            echo "client role part $i timed out after ${ROLE_TIMEOUT}s" >&2
            failed=1
        elif ((rc != 0)); then
            show_err "autobahn_client part $i" "$WORK/client-$i.log"
            echo "autobahn_client (part $i) exited with status $rc" >&2
            failed=1
        fi
        # The fuzzingserver writes its report and exits once the client has
        # asked for /updateReports after its last case.
        for _ in $(seq 1 300); do
            kill -0 "${kosoku_pids[i - 1]}" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "${kosoku_pids[i - 1]}" 2>/dev/null; then
            show_err "kosoku fuzzingserver part $i" "$WORK/kosoku-server-$i.err"
            echo "kosoku fuzzingserver (part $i) still running 30 s after its client finished (no /updateReports?)" >&2
            failed=1
        fi
        wait "${kosoku_pids[i - 1]}" 2>/dev/null || true
        tail -n 2 "$WORK/kosoku-server-$i.out" | sed "s/^/  kosoku part $i: /"
        if [[ ! -s "$out/$i/index.json" ]]; then
            show_err "kosoku fuzzingserver part $i" "$WORK/kosoku-server-$i.err"
            echo "kosoku fuzzingserver (part $i) wrote no report" >&2
            failed=1
        fi
    done
    ((failed == 0)) || die "client role did not complete"

    local check_args=("${CHECK_ARGS[@]}")
    for d in "${dirs[@]}"; do check_args+=(--report "$d"); done
    local check_rc=0
    "$PY" "$HERE/check.py" --role client "${check_args[@]}" || check_rc=$?
    log "client role took $((SECONDS - start)) s; reports: $(printf '%s/index.html ' "${dirs[@]}")"
    ((check_rc == 0)) || die "client role: report does not match expectations.json"
}

# The roles run as background children waited for here, so a SIGTERM to this
# script is passed on at once and each role's EXIT trap stops what it started.
CHILD=""
on_signal() {
    if [[ -n "$CHILD" ]]; then
        kill -TERM "$CHILD" 2>/dev/null || true
        wait "$CHILD" 2>/dev/null || true
    fi
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    exit "$1"
}
trap 'on_signal 130' INT
trap 'on_signal 143' TERM

case "$ROLE" in
server) build 1 0 ;;
client) build 0 1 ;;
all) build 1 1 ;;
esac
status=0
if [[ "$ROLE" == server || "$ROLE" == all ]]; then
    role_shell run_server_role &
    CHILD=$!
    wait "$CHILD" || status=1
fi
if [[ "$ROLE" == client || "$ROLE" == all ]]; then
    role_shell run_client_role &
    CHILD=$!
    wait "$CHILD" || status=1
fi
CHILD=""
if ((status != 0)); then
    log "FAILED ($ROLE)"
    exit 1
fi
log "passed ($ROLE)"
