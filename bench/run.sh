#!/usr/bin/env bash
# End-to-end benchmark of duplex against a raw TCP echo/relay and the Rust peers
# (tokio-tungstenite, fastwebsockets), as issue 7 asks it to be shown:
#   * the server under test runs pinned to core 0 (taskset -c 0), the load generator to core 1;
#   * the main figure is the server's CPU time per message (utime + stime from
#     /proc/PID/stat over the measured window, read by the load generator);
#   * every figure is the median of >= 3 interleaved rounds (round 1: raw, duplex,
#     tungstenite, fastwebsockets; round 2: the same ...), and is set against the raw TCP
#     baseline measured in the same run.
# The load generator (duplex-bench/examples/loadgen.rs) checks every echoed byte and every
# delivery; a run with errors is reported as such and fails the row.
#
# usage: bench/run.sh [--quick] [--rounds N] [--only REGEX] [--out FILE]
#   --quick      one round of short runs (< 3 minutes once built): checks the script works
#   --rounds N   interleaved rounds (default 3)
#   --only RE    only the scenarios whose id matches RE (pp16 pp1k pp64k lat16 pipe64 hs
#                idle deflate tls fan1k fan10k)
#   --out FILE   where the table goes (default bench/results/latest.md; --quick and --only
#                default to bench/results/quick.md so the committed results stay)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

QUICK=0
ROUNDS=3
ONLY=""
OUT=""
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --rounds) ROUNDS="$2"; shift ;;
        --only) ONLY="$2"; shift ;;
        --out) OUT="$2"; shift ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
if [ "$QUICK" = 1 ]; then
    ROUNDS=1; WARMUP=0.5; DURATION=1.5; IDLE_CONNS=1000; FAN_BIG=""
else
    WARMUP=1; DURATION=4; IDLE_CONNS=10000; FAN_BIG=10000
fi
if [ -z "$OUT" ]; then
    if [ "$QUICK" = 1 ] || [ -n "$ONLY" ]; then OUT=bench/results/quick.md; else OUT=bench/results/latest.md; fi
fi
[ "$(nproc)" -ge 2 ] || { echo "needs two cores (server on 0, load on 1)" >&2; exit 1; }

echo "building (release)..." >&2
cargo build --release --quiet -p duplex-cli
cargo build --release --quiet -p duplex-bench --examples
BIN=$ROOT/target/release
LOADGEN=$BIN/examples/loadgen

# 10,000 subscribers: as many sockets in the load generator and in the server.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" -lt 10200 ]; then
    echo "open-file limit $(ulimit -n) < 10200: idle and fan-out run with fewer connections" >&2
    IDLE_CONNS=$(( $(ulimit -n) - 200 )); [ -n "$FAN_BIG" ] && FAN_BIG=$IDLE_CONNS
fi

WORK=$(mktemp -d)
RESULTS=$WORK/results.tsv
: > "$RESULTS"
SERVER_PID=""
cleanup() {
    if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A throwaway certificate for the TLS rows (the load generator accepts any certificate).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=localhost -addext subjectAltName=DNS:localhost \
    -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null

export DUPLEX_LOG=warn
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

# server_cmd NAME: the command line of one server variant.
server_cmd() {
    case "$1" in
        raw) echo "$BIN/examples/raw_tcp" ;;
        raw-close) echo "$BIN/examples/raw_tcp --close" ;;
        raw-relay) echo "$BIN/examples/raw_tcp --broadcast" ;;
        duplex) echo "$BIN/duplex echo --listen 127.0.0.1:0" ;;
        duplex-tls) echo "$BIN/duplex echo --listen 127.0.0.1:0 --tls-cert $WORK/cert.pem --tls-key $WORK/key.pem" ;;
        duplex-serve) echo "$BIN/duplex serve --listen 127.0.0.1:0 --max-connections 20000 --publish-rate 1000000 --ping-interval 0" ;;
        tungstenite) echo "$BIN/examples/tungstenite_server" ;;
        tungstenite-bcast) echo "$BIN/examples/tungstenite_server --broadcast" ;;
        fastws) echo "$BIN/examples/fastws_server" ;;
        fastws-bcast) echo "$BIN/examples/fastws_server --broadcast" ;;
        *) echo "unknown server $1" >&2; exit 1 ;;
    esac
}

# start_server NAME: starts it on core 0; sets SERVER_PID and ADDR.
RUN=0
start_server() {
    # A fresh log per server: the previous server's ready line must never be read.
    RUN=$((RUN + 1))
    local log=$WORK/server.$RUN.log
    : > "$log"
    # shellcheck disable=SC2046
    taskset -c 0 $(server_cmd "$1") 2> "$log" > /dev/null &
    SERVER_PID=$!
    ADDR=""
    local line
    for _ in $(seq 1 200); do
        # Complete lines only (`read` fails on a last line without its newline): a ready
        # line still being written must not give half an address.
        while IFS= read -r line; do
            if [[ $line =~ listening\ on\ ([0-9.]+:[0-9]+) ]]; then ADDR=${BASH_REMATCH[1]}; break; fi
        done < "$log"
        [ -n "$ADDR" ] && return 0
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.05
    done
    echo "server $1 did not start:" >&2; cat "$log" >&2; exit 1
}

stop_server() {
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
}

# measure ROUND SCENARIO VARIANT SERVER LOADGEN-ARGS...: one measurement, one TSV line.
measure() {
    local round=$1 scenario=$2 variant=$3 server=$4; shift 4
    start_server "$server"
    local json
    json=$(taskset -c 1 "$LOADGEN" "$1" "$ADDR" "${@:2}" --server-pid "$SERVER_PID" \
        --clk-tck "$(getconf CLK_TCK)" --warmup "$WARMUP" --duration "$DURATION" 2> "$WORK/loadgen.err" || true)
    [ -n "$json" ] || json="{\"errors\":1,\"first_error\":\"loadgen: $(tr -d '"\n' < "$WORK/loadgen.err" | head -c 200)\"}"
    stop_server
    printf '%s\t%s\t%s\t%s\n' "$round" "$scenario" "$variant" "$json" >> "$RESULTS"
    printf '  round %s %-7s %-17s %s\n' "$round" "$scenario" "$variant" "$json" >&2
}

want() { [ -z "$ONLY" ] || [[ "$1" =~ ^($ONLY)$ ]]; }

peers() { # SCENARIO MODE LOADGEN-ARGS...: raw, duplex, tungstenite, fastwebsockets in turn
    local s=$1 mode=$2; shift 2
    measure "$R" "$s" raw "${RAW_SERVER:-raw}" "$mode" --raw "$@"
    measure "$R" "$s" duplex duplex "$mode" "$@"
    measure "$R" "$s" tungstenite tungstenite "$mode" "$@"
    measure "$R" "$s" fastwebsockets fastws "$mode" "$@"
}

fanout() { # SCENARIO SUBSCRIBERS
    local s=$1 n=$2
    measure "$R" "$s" raw raw-relay fanout -c "$n" --dialect raw
    measure "$R" "$s" duplex duplex-serve fanout -c "$n" --dialect rooms --path /rooms/bench
    measure "$R" "$s" duplex-v1 duplex-serve fanout -c "$n" --dialect v1 --path /ws
    measure "$R" "$s" tungstenite tungstenite-bcast fanout -c "$n" --dialect rooms
    measure "$R" "$s" fastwebsockets fastws-bcast fanout -c "$n" --dialect rooms
}

STARTED=$(date +%s)
for R in $(seq 1 "$ROUNDS"); do
    echo "round $R of $ROUNDS" >&2
    if want pp16; then peers pp16 echo -c 100 --size 16; fi
    if want pp1k; then peers pp1k echo -c 100 --size 1KiB; fi
    if want pp64k; then peers pp64k echo -c 100 --size 64KiB; fi
    if want lat16; then peers lat16 echo -c 1 --size 16; fi
    if want pipe64; then peers pipe64 echo -c 100 --depth 16 --size 64; fi
    # The raw baseline closes first, as the WebSocket servers do (see raw_tcp --close).
    if want hs; then RAW_SERVER=raw-close peers hs handshakes -c 16; fi
    if want idle; then
        for v in raw:raw:--raw duplex:duplex: duplex-deflate:duplex:--deflate tungstenite:tungstenite: fastwebsockets:fastws:; do
            IFS=: read -r variant server flag <<< "$v"
            # shellcheck disable=SC2086
            measure "$R" idle "$variant" "$server" idle -c "$IDLE_CONNS" --hold 2 $flag
        done
    fi
    if want deflate; then
        measure "$R" deflate duplex duplex echo -c 100 --size 1KiB --text
        measure "$R" deflate duplex-deflate duplex echo -c 100 --size 1KiB --text --deflate
    fi
    if want tls; then
        measure "$R" tls duplex duplex echo -c 100 --size 1KiB
        measure "$R" tls duplex-tls duplex-tls echo -c 100 --size 1KiB --tls
    fi
    if want fan1k; then fanout fan1k 1000; fi
    if [ -n "$FAN_BIG" ] && want fan10k; then fanout fan10k "$FAN_BIG"; fi
done
ELAPSED=$(( $(date +%s) - STARTED ))
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

mkdir -p "$(dirname "$OUT")"
python3 "$ROOT/bench/table.py" "$RESULTS" \
    --rounds "$ROUNDS" --duration "$DURATION" --warmup "$WARMUP" --idle-conns "$IDLE_CONNS" \
    --load-before "$LOAD_BEFORE" --load-after "$LOAD_AFTER" --elapsed "$ELAPSED" \
    --commit "$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . ':!bench/results' || echo '+dirty')" \
    --rustc "$(rustc --version)" --cpu "$(lscpu | sed -n 's/^Model name: *//p' | head -n1)" \
    --kernel "$(uname -r)" > "$OUT"
cp "$RESULTS" "${OUT%.md}.tsv"   # every run's JSON, for a second look
cat "$OUT"
echo "written to $OUT" >&2
