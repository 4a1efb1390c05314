#!/usr/bin/env bash
# Where the server's user-space instructions go, per message: runs one server under
# valgrind's callgrind twice (a short and a long run of the same load) and divides the
# difference in instructions by the difference in messages, so start-up, handshakes and
# shutdown cancel out. Kernel work (the socket calls themselves) is not counted.
#
# usage: bench/callgrind.sh SERVER 'LOADGEN ARGS' [SHORT LONG]
#   SERVER: raw | duplex | tungstenite | fastws (echo servers),
#           raw-relay | duplex-serve (fan-out: give --dialect raw or rooms/v1 and --path)
#   e.g.    bench/callgrind.sh duplex 'echo -c 100 --size 16' 4 12
#           bench/callgrind.sh duplex-serve 'fanout -c 1000 --dialect rooms --path /rooms/bench'
# (per message: per echo, or per delivery for fanout)
# prints instructions per message and writes the two runs' profiles to
# bench/results/callgrind.SERVER.{short,long}.out (read them with callgrind_annotate; what a
# function costs per message is its difference between the two over the messages').
# With CACHE_SIM=1, valgrind also simulates the caches and every event is printed per
# message: D1mr/D1mw are first-level data misses, DLmr/DLmw last-level ones (lines that
# came from memory). Repeatable, unlike this machine's (absent) hardware counters.
# DUPLEX_BIN=PATH runs another build of `duplex` (an A/B against an older commit's binary).
set -euo pipefail
cd "$(dirname "$0")/.."
SERVER=$1 LOAD=$2 SHORT=${3:-4} LONG=${4:-12}
command -v valgrind > /dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 1; }
[ -z "${CACHE_SIM:-}" ] || command -v python3 > /dev/null || { echo "CACHE_SIM needs python3" >&2; exit 1; }
cargo build --release --quiet -p duplex-cli
cargo build --release --quiet -p duplex-bench --examples
BIN=$PWD/target/release
DUPLEX=${DUPLEX_BIN:-$BIN/duplex}
case "$SERVER" in
    raw) CMD="$BIN/examples/raw_tcp"; RAW=--raw ;;
    duplex) CMD="$DUPLEX echo --listen 127.0.0.1:0"; RAW= ;;
    tungstenite) CMD="$BIN/examples/tungstenite_server"; RAW= ;;
    fastws) CMD="$BIN/examples/fastws_server"; RAW= ;;
    raw-relay) CMD="$BIN/examples/raw_tcp --broadcast"; RAW= ;;
    duplex-serve) CMD="$DUPLEX serve --listen 127.0.0.1:0 --max-connections 20000 --publish-rate 1000000 --ping-interval 0"; RAW= ;;
    *) echo "unknown server $SERVER" >&2; exit 2 ;;
esac
WORK=$(mktemp -d)
PID=""
trap '[ -n "$PID" ] && kill "$PID" 2>/dev/null; rm -rf "$WORK"' EXIT
export DUPLEX_LOG=warn

# run SECONDS LABEL: writes "messages event-totals..." to $WORK/result.LABEL and the
# event names to $WORK/events. Called in this shell, not a subshell, so an error stops the
# script and the trap ends the server.
run() {
    local out=$WORK/callgrind.$1.out log=$WORK/server.$1.log
    : > "$log"
    # shellcheck disable=SC2086
    taskset -c 0 valgrind --tool=callgrind ${CACHE_SIM:+--cache-sim=yes} \
        --callgrind-out-file="$out" $CMD 2> "$log" &
    PID=$!
    local addr="" line
    for _ in $(seq 1 600); do
        # Complete lines only: a ready line still being written must not give half an address.
        while IFS= read -r line; do
            if [[ $line =~ listening\ on\ ([0-9.]+:[0-9]+) ]]; then addr=${BASH_REMATCH[1]}; break; fi
        done < "$log"
        [ -n "$addr" ] && break
        sleep 0.1
    done
    [ -n "$addr" ] || { cat "$log" >&2; exit 1; }
    local json count
    # shellcheck disable=SC2086
    # Under valgrind the server is ~50x slower: answers still in flight at the end may miss
    # the load generator's drain; the count of checked round trips stays right.
    json=$(taskset -c 1 "$BIN/examples/loadgen" ${LOAD%% *} "$addr" ${LOAD#* } $RAW \
        --warmup 0 --duration "$1" || true)
    count=$(sed -n 's/.*"count":\([0-9]*\).*/\1/p' <<< "$json")
    kill -TERM "$PID"; wait "$PID" 2>/dev/null || true; PID=""
    [ -n "$count" ] || { echo "no message count from the load generator: $json" >&2; exit 1; }
    local totals
    totals=$(sed -n 's/^totals: *//p;s/^summary: *//p' "$out" | head -n1)
    sed -n 's/^events: *//p' "$out" | head -n1 > "$WORK/events"
    cp "$out" "bench/results/callgrind.$SERVER.$2.out"
    echo "$count $totals" > "$WORK/result.$2"
}
run "$SHORT" short
run "$LONG" long
read -r N1 IR1 REST1 < "$WORK/result.short"
read -r N2 IR2 REST2 < "$WORK/result.long"
echo "$SERVER '$LOAD': $(( (IR2 - IR1) / (N2 - N1) )) instructions per message ($N1 and $N2 messages; $IR1 and $IR2 instructions)"
if [ -n "${CACHE_SIM:-}" ]; then
    python3 - "$N1" "$N2" "$(cat "$WORK/events")" "$IR1 $REST1" "$IR2 $REST2" <<'PY'
import sys
n1, n2, names, a, b = sys.argv[1:]
names = names.split()
# callgrind leaves trailing zero counts out of its totals line
pad = lambda v: v.split() + ["0"] * (len(names) - len(v.split()))
for name, x, y in zip(names, pad(a), pad(b)):
    print(f"  {name}: {(int(y) - int(x)) / (int(n2) - int(n1)):.1f} per message")
PY
fi
