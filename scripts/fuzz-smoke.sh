#!/usr/bin/env bash
# Fuzz smoke test: runs every cargo-fuzz target in fuzz/ for a short, bounded time and fails
# on any crash, panic, timeout or out-of-memory. Prints one line per target.
#
#   scripts/fuzz-smoke.sh                 # every target, FUZZ_SECONDS (default 12) each
#   FUZZ_SECONDS=60 scripts/fuzz-smoke.sh inflate frame_header
#   FUZZ_JOBS=1 scripts/fuzz-smoke.sh     # one target at a time (default: one per core)
#
# Toolchain: this runs on *stable* Rust. With `-s none` (no sanitizer) cargo-fuzz only passes
# stable rustc flags (`-Cpasses=sancov-module`, `-Cllvm-args=-sanitizer-coverage-*`,
# `--cfg fuzzing`), so neither nightly nor RUSTC_BOOTSTRAP=1 is needed. Sanitizers
# (`-s address`, the cargo-fuzz default) use `-Zsanitizer` and need nightly; the code under
# test is safe Rust but for one call (the AVX2 unmasking loop in duplex-proto, whose only
# requirement is a CPU with AVX2), so the smoke test does without. libFuzzer's C++ runtime
# is built by the `libfuzzer-sys` crate, which needs a C++ compiler (g++ or clang++).
#
# New inputs libFuzzer finds go to a temporary directory, not to fuzz/corpus/, so the
# committed seeds (fuzz/corpus/<target>/seed-*) stay as they are. A crash is saved under
# fuzz/artifacts/<target>/ (git-ignored) and the command to reproduce it is printed.
set -euo pipefail

cd "$(dirname "$0")/../fuzz"
seconds="${FUZZ_SECONDS:-12}"

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "fuzz-smoke: installing cargo-fuzz"
    cargo install cargo-fuzz --locked --quiet
fi

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

echo "fuzz-smoke: building ${#targets[@]} targets (release, no sanitizer)"
cargo fuzz build -s none

work="$(mktemp -d)"
# On any exit (a failure, Ctrl-C), no new run starts: the ones still going are stopped where
# they can be (their shells), and each ends within FUZZ_SECONDS anyway (-max_total_time).
# (`set -e` holds in the trap too: nothing in it may fail.)
trap 'kill $(jobs -p) 2>/dev/null || true; wait || true; rm -rf "$work"' EXIT

# One target per core at a time: libFuzzer runs on one thread, so this halves the step on
# two cores. Each run writes its own log; results are printed in target order afterwards.
jobs="${FUZZ_JOBS:-$(nproc)}"
if ! [[ "$jobs" =~ ^[1-9][0-9]*$ ]]; then
    echo "fuzz-smoke: FUZZ_JOBS must be a whole number of at least 1, not '$jobs'" >&2
    exit 2
fi
run_target() {
    local target="$1"
    mkdir -p "$work/$target"
    # Bounded: -max_total_time stops the run; -timeout fails any single input slower than
    # 10 s; -rss_limit_mb fails runaway memory (a decompression bomb, say).
    if cargo fuzz run -s none "$target" "$work/$target" "corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 >"$work/$target.log" 2>&1; then
        echo ok >"$work/$target.status"
    else
        echo failed >"$work/$target.status"
    fi
}
for target in "${targets[@]}"; do
    while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do
        wait -n || true
    done
    run_target "$target" &
done
wait

passed=0
failed=0
for target in "${targets[@]}"; do
    log="$work/$target.log"
    if [ "$(cat "$work/$target.status" 2>/dev/null)" = ok ]; then
        execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)"
        found="$(find "$work/$target" -type f | wc -l)"
        echo "fuzz $target: ok, ${execs:-?} execs in ${seconds}s, ${found} new corpus entries"
        passed=$((passed + 1))
    else
        echo "fuzz $target: FAILED"
        grep -E "panicked at|^SUMMARY|Test unit written|cargo fuzz run" "$log" | head -n 10 ||
            tail -n 40 "$log"
        echo "--- last lines of the log"
        tail -n 20 "$log"
        failed=$((failed + 1))
    fi
done

echo "fuzz-smoke: ${passed} passed, ${failed} failed"
[ "$failed" -eq 0 ]
