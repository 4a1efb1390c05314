# shellcheck shell=bash
# Shell helpers shared by the test scripts (interop/run.sh, interop/rooms/run.sh,
# scale/run.sh, web/e2e/run.sh, conformance/autobahn/run.sh). Each sources it
# once ROOT (the repository) is set:
#
#   source "$ROOT/scripts/lib.sh"
#
# Sourcing only defines functions. They stop processes by PID only, never by
# name, and return non-zero only where their comment says so, so that they are
# safe to call as plain commands under `set -euo pipefail`. Some use the
# caller's variables: PIDS (array of the PIDs to stop on exit), RESULTS (the
# results file), RECORD_PREFIX and RECORD_ECHO_PASS (see record); wait_exit
# and stop_pid set EXIT_STATUS for them.
# shellcheck disable=SC2034 # EXIT_STATUS is read by the sourcing scripts

# show_log NAME FILE [LINES]: print the last LINES (default 15) lines of FILE,
# indented, under a "----- last lines of NAME -----" header, to stdout; prints
# nothing if FILE is missing or empty. Returns 0.
show_log() {
    local name="$1" file="$2" lines="${3:-15}"
    [[ -s "$file" ]] || return 0
    echo "  ----- last lines of $name -----"
    tail -n "$lines" "$file" | sed 's/^/    /'
}

# wait_for_addr FILE PID REGEX [TIMEOUT]: print the first match of REGEX (an
# extended regex) in FILE, ANSI colour codes removed; returns 1 if PID exits or
# TIMEOUT seconds (default 30) pass first.
wait_for_addr() {
    local file="$1" pid="$2" regex="$3" deadline=$((SECONDS + ${4:-30})) match
    while ((SECONDS < deadline)); do
        match="$(sed 's/\x1b\[[0-9;]*m//g' "$file" 2>/dev/null | grep -oE "$regex" | head -n1 || true)"
        if [[ -n "$match" ]]; then
            printf '%s\n' "$match"
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# wait_for_port FILE PID [TIMEOUT]: print PORT from the first `listening on
# 127.0.0.1:PORT` (or ws://, wss://127.0.0.1:PORT) in FILE; returns 1 if PID
# exits or TIMEOUT seconds (default 30) pass first.
wait_for_port() {
    local match
    match="$(wait_for_addr "$1" "$2" 'listening on (wss?://)?127\.0\.0\.1:[0-9]+' "${3:-30}")" || return 1
    printf '%s\n' "${match##*:}"
}

# wait_exit PID SECONDS: wait up to SECONDS for PID (a child) to exit, then
# SIGTERM it and SIGKILL it 5 s later; reaps it and sets EXIT_STATUS to its
# exit status. Returns 1 if it had to be stopped, else 0.
wait_exit() {
    local pid="$1" limit="$2" stopped=0
    for _ in $(seq 1 $((limit * 10))); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        stopped=1
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    EXIT_STATUS=0
    wait "$pid" 2>/dev/null || EXIT_STATUS=$?
    return "$stopped"
}

# stop_pid PID [SECONDS]: SIGTERM PID, SIGKILL it if still running after
# SECONDS (default 5); reaps it if it is a child and sets EXIT_STATUS to its
# exit status (127 if it is not a child). Returns 0.
stop_pid() {
    local pid="$1" limit="${2:-5}"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 $((limit * 10))); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
    EXIT_STATUS=0
    # (braces: bash's own "Killed" notice goes to /dev/null too)
    { wait "$pid"; } 2>/dev/null || EXIT_STATUS=$?
    return 0
}

# stop_all PID...: SIGTERM every PID still running, then give each 5 s before
# a SIGKILL, and reap them (for an EXIT trap). Returns 0.
stop_all() {
    local pid
    for pid in "$@"; do
        if kill -0 "$pid" 2>/dev/null; then kill -TERM "$pid" 2>/dev/null || true; fi
    done
    for pid in "$@"; do
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}

# run_child CMD...: run CMD in the background, add its PID to PIDS and wait for
# it; returns CMD's exit status. (bash runs a trap only once the foreground
# command ends, so long commands are waited for this way: a SIGTERM then stops
# the run at once and the EXIT trap cleans up.)
run_child() {
    "$@" &
    local pid=$!
    PIDS+=("$pid")
    wait "$pid"
}

# free_port: print a TCP port that is free on 127.0.0.1 right now (python3).
# Returns non-zero only if python3 fails.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# record OK LABEL [WHY]: a check made by the script itself. Appends
# "PASS <RECORD_PREFIX>LABEL" (OK=1) or "FAIL <RECORD_PREFIX>LABEL: WHY" to
# $RESULTS; prints "  FAIL LABEL: WHY", and "  PASS LABEL" too when
# RECORD_ECHO_PASS=1. Returns 0.
record() {
    local ok="$1" label="$2" why="${3:-}"
    if [[ "$ok" == 1 ]]; then
        echo "PASS ${RECORD_PREFIX:-}$label" >>"$RESULTS"
        if [[ "${RECORD_ECHO_PASS:-0}" == 1 ]]; then echo "  PASS $label"; fi
    else
        echo "FAIL ${RECORD_PREFIX:-}$label: $why" >>"$RESULTS"
        echo "  FAIL $label: $why"
    fi
    return 0
}
