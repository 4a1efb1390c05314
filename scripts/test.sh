#!/usr/bin/env bash
# The one command that tests everything, on a fresh Debian 12 machine (Rust
# stable, Python 3.11, Node 20) or a developer's:
#
#   scripts/test.sh [--keep-going] [STEP...]
#
# Steps, in order (default: all of them):
#   setup            install what is missing: Debian packages (openssl, g++,
#                    redis-server, tmux, nginx, haproxy, python3-venv, chromium,
#                    only if absent; nginx and haproxy without starting their
#                    services), the Python packages of
#                    scripts/requirements.txt into .venv/, npm ci in interop/
#                    and web/e2e/, cargo-fuzz
#   fmt              cargo fmt --all -- --check
#   clippy           cargo clippy --workspace --all-targets --all-features -- -D warnings
#   doc              cargo doc --no-deps --workspace --all-features, warnings denied
#   test             cargo test --workspace --all-features (6 test threads)
#   build            cargo build --release --workspace --exclude duplex-bench
#                    --bins --examples (bench/run.sh builds duplex-bench itself;
#                    clippy and test compile its examples)
#   fuzz             scripts/fuzz-smoke.sh (required; one target per core)
#   autobahn-server  conformance/autobahn/run.sh server
#   autobahn-client  conformance/autobahn/run.sh client
#   interop          interop/run.sh
#   scaleout         scale/run.sh (3 nodes, one Redis, behind nginx and HAProxy)
#   browser          node --test web/test/ (the browser SDK's unit tests), then
#                    web/e2e/run.sh (the web pages in headless Chromium)
#
# Stops at the first failing step unless --keep-going. Naming steps runs only
# those (setup is then still run first, as the others need it). Ends with a
# summary line per step and `N passed, M failed` counting steps, where a step
# not run because an earlier one failed counts as failed.
#
# Where the time goes (fresh clone on the 2-core machine, CI=true, cargo-fuzz
# and Chromium already installed, 2026-12-07, commit 7a2f75f, on the VM's newer
# Intel host): setup 6 s, fmt 0 s, clippy 98 s, doc 16 s, test 125 s, release
# build 244 s, fuzz smoke 81 s, Autobahn server role 234 s, client role 163 s,
# interop 56 s, scaleout 53 s, browser 30 s; 18.4 min in all (17 min for ed46d0b
# the same morning, 27 min on 2026-11-22 on the older AMD host; the Autobahn server
# role has varied from 326 s to 412 s between runs of nearly the same code there:
# the machine is shared).
# Autobahn's 12.x/13.x permessage-deflate cases are most of its time, and most
# of that is kosoku's own CPU (it runs 4 cases at a time, the client role in 3
# parts side by side). The release build is mostly compiling dependencies: a
# profile without LTO and debug info built no faster.
# A machine without cargo-fuzz also pays for `cargo install cargo-fuzz`.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 1
[[ -d "$HOME/.cargo/bin" ]] && export PATH="$HOME/.cargo/bin:$PATH"
export NO_COLOR=1 PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1 DEBIAN_FRONTEND=noninteractive
if [[ "${CI:-}" == true || "${CI:-}" == 1 ]]; then
    # Fresh builds only in CI: incremental artifacts cost disk and time there.
    # Test binaries keep line tables (file and line in backtraces) but not full
    # debug info, which is a large part of their compile and link time.
    export CARGO_INCREMENTAL=0 CARGO_TERM_COLOR=never
    export CARGO_PROFILE_DEV_DEBUG="${CARGO_PROFILE_DEV_DEBUG:-line-tables-only}"
fi

ALL_STEPS=(setup fmt clippy doc test build fuzz autobahn-server autobahn-client interop scaleout browser)
KEEP_GOING=0
SELECTED=()
for arg in "$@"; do
    case "$arg" in
    --keep-going) KEEP_GOING=1 ;;
    -h | --help)
        sed -n '2,/^set -uo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
        exit 0
        ;;
    *)
        if [[ " ${ALL_STEPS[*]} " != *" $arg "* ]]; then
            echo "unknown step '$arg'; steps: ${ALL_STEPS[*]}" >&2
            exit 2
        fi
        SELECTED+=("$arg")
        ;;
    esac
done
if ((${#SELECTED[@]} == 0)); then
    STEPS=("${ALL_STEPS[@]}")
else
    STEPS=(setup)
    for s in "${ALL_STEPS[@]}"; do
        [[ "$s" != setup && " ${SELECTED[*]} " == *" $s "* ]] && STEPS+=("$s")
    done
fi

say() { printf '[test.sh] %s\n' "$*"; }
fail() {
    printf '[test.sh] ERROR: %s\n' "$*" >&2
    return 1
}

# --- setup ----------------------------------------------------------------------
APT_UPDATED=0
apt_install() {
    command -v apt-get >/dev/null || fail "missing $*, and there is no apt-get to install it" || return 1
    if [[ "$(id -u)" != 0 ]]; then
        fail "missing Debian package(s) $*: install them (as root: apt-get install $*)" || return 1
    fi
    if ((APT_UPDATED == 0)); then
        say "apt-get update"
        apt-get update -qq || fail "apt-get update failed" || return 1
        APT_UPDATED=1
    fi
    say "apt-get install $*"
    apt-get install -y -qq --no-install-recommends "$@" || fail "apt-get install $* failed"
}

step_setup() {
    local missing=() cmd
    for cmd in cargo rustc python3 node npm; do
        command -v "$cmd" >/dev/null || fail "$cmd not found: this script needs Rust stable, Python 3.11 and Node 20 installed" || return 1
    done
    cargo fmt --version >/dev/null 2>&1 || fail "rustfmt is missing from the Rust toolchain (rustup component add rustfmt)" || return 1
    cargo clippy --version >/dev/null 2>&1 || fail "clippy is missing from the Rust toolchain (rustup component add clippy)" || return 1
    local node_major
    node_major="$(node -p 'process.versions.node.split(".")[0]')"
    ((node_major >= 18)) || fail "node $(node --version) is too old: Node 20 is expected (18 at least)" || return 1

    # Debian packages, only those whose command is missing.
    command -v openssl >/dev/null || missing+=(openssl)
    command -v c++ >/dev/null || missing+=(g++) # libFuzzer (cargo fuzz) is C++
    command -v make >/dev/null || missing+=(make) # jemalloc, the duplex binary's allocator, builds with make
    command -v timeout >/dev/null || missing+=(coreutils)
    command -v cmp >/dev/null || missing+=(diffutils)
    command -v tmux >/dev/null || missing+=(tmux) # duplex connect's interactive-mode tests
    command -v redis-server >/dev/null || missing+=(redis-server) # duplex-hub's Redis broker tests
    command -v redis-cli >/dev/null || missing+=(redis-tools) # redis-cli --cluster create, for the Cluster tests
    [[ -e /etc/ssl/certs/ca-certificates.crt ]] || missing+=(ca-certificates)
    [[ -x /usr/bin/chromium ]] || missing+=(chromium) # the browser step's headless Chromium
    if ((${#missing[@]})); then apt_install "${missing[@]}" || return 1; fi
    # The scale-out test's proxies (in /usr/sbin, which a user's PATH may lack),
    # installed with a policy-rc.d that denies service starts: the test runs its own.
    missing=()
    command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || missing+=(nginx)
    command -v haproxy >/dev/null || [[ -x /usr/sbin/haproxy ]] || missing+=(haproxy)
    if ((${#missing[@]})); then
        local policy="" rc=0
        if [[ "$(id -u)" == 0 && ! -e /usr/sbin/policy-rc.d ]]; then
            policy=/usr/sbin/policy-rc.d
            printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy"
        fi
        apt_install "${missing[@]}" || rc=1
        if [[ -n "$policy" ]]; then rm -f "$policy"; fi
        ((rc == 0)) || return 1
    fi

    # Python venv with the pinned packages.
    if [[ -e .venv ]] && ! .venv/bin/python -c 'import sys' >/dev/null 2>&1; then
        say "removing a broken .venv/"
        rm -rf .venv
    fi
    if [[ ! -e .venv ]]; then
        say "python3 -m venv .venv"
        if ! python3 -m venv .venv 2>/dev/null; then
            rm -rf .venv
            # Debian's own python3 keeps venv/ensurepip in a separate package.
            apt_install python3-venv || return 1
            python3 -m venv .venv || fail "python3 -m venv .venv failed" || return 1
        fi
    fi
    say "pip install -r scripts/requirements.txt (into .venv/)"
    .venv/bin/python -m pip install -q -r scripts/requirements.txt || fail "pip install failed" || return 1
    .venv/bin/kosoku --help >/dev/null || fail ".venv/bin/kosoku does not run" || return 1

    # Node packages, from the lockfiles: the interop peers (ws) and the browser
    # tests (playwright-core, which drives the system's Chromium: it downloads none).
    local dir
    for dir in interop web/e2e; do
        if node -e '
            const dir = process.argv[1];
            const lock = require("./" + dir + "/package-lock.json");
            for (const [path, meta] of Object.entries(lock.packages)) {
                if (!path) continue;
                const have = require("./" + dir + "/" + path + "/package.json").version;
                if (have !== meta.version) process.exit(1);
            }' "$dir" 2>/dev/null; then
            say "$dir/node_modules matches package-lock.json"
        else
            say "npm ci ($dir/)"
            (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error) || fail "npm ci in $dir/ failed" || return 1
        fi
    done

    if cargo fuzz --version >/dev/null 2>&1; then
        say "$(cargo fuzz --version)"
    else
        say "cargo install cargo-fuzz --locked"
        cargo install cargo-fuzz --locked || fail "cargo install cargo-fuzz failed" || return 1
    fi
}

# --- the other steps ----------------------------------------------------------------
step_fmt() { cargo fmt --all -- --check; }
step_clippy() { cargo clippy --workspace --all-targets --all-features -- -D warnings; }
step_doc() { RUSTDOCFLAGS="${RUSTDOCFLAGS:-} -D warnings" cargo doc --no-deps --workspace --all-features; }
# Most tests wait on sockets, Redis nodes and timers rather than the CPU: six at a
# time in each test binary (libtest's default is one per core) took the run from
# 68 s to 46-48 s on the 2-core machine.
step_test() { RUST_TEST_THREADS="${RUST_TEST_THREADS:-6}" cargo test --workspace --all-features; }
# --bins --examples: the Autobahn client is an example, and examples build in CI.
step_build() { cargo build --release --workspace --exclude duplex-bench --bins --examples; }
step_fuzz() {
    [[ -f scripts/fuzz-smoke.sh ]] || fail "scripts/fuzz-smoke.sh is missing (the fuzz smoke test is required)" || return 1
    bash scripts/fuzz-smoke.sh
}
step_autobahn-server() { bash conformance/autobahn/run.sh server; }
step_autobahn-client() { bash conformance/autobahn/run.sh client; }
step_interop() { bash interop/run.sh; }
step_scaleout() { bash scale/run.sh; }
# The SDK's unit tests (one of them runs the release binary with the ws package
# of interop/), then the pages in headless Chromium.
step_browser() {
    local target="${CARGO_TARGET_DIR:-$ROOT/target}"
    case "$target" in /*) ;; *) target="$ROOT/$target" ;; esac
    DUPLEX_BIN="${DUPLEX_BIN:-$target/release/duplex}" node --test web/test/ || return 1
    bash web/e2e/run.sh
}

describe() {
    case "$1" in
    setup) echo "install missing tools (apt, .venv/, npm ci, cargo-fuzz)" ;;
    fmt) echo "cargo fmt --all -- --check" ;;
    clippy) echo "cargo clippy --workspace --all-targets --all-features -- -D warnings" ;;
    doc) echo "cargo doc --no-deps --workspace --all-features (warnings denied)" ;;
    test) echo "cargo test --workspace --all-features" ;;
    build) echo "cargo build --release --workspace --exclude duplex-bench --bins --examples" ;;
    fuzz) echo "scripts/fuzz-smoke.sh" ;;
    autobahn-server) echo "conformance/autobahn/run.sh server (kosoku fuzzingclient -> duplex echo)" ;;
    autobahn-client) echo "conformance/autobahn/run.sh client (autobahn_client -> kosoku fuzzingserver)" ;;
    interop) echo "interop/run.sh (Python websockets and Node ws peers)" ;;
    scaleout) echo "scale/run.sh (3 nodes + Redis behind nginx and HAProxy)" ;;
    browser) echo "node --test web/test/, web/e2e/run.sh (the web pages in headless Chromium)" ;;
    esac
}

# --- run ------------------------------------------------------------------------------
# Each step runs as a background job in its own process group (set -m), waited
# for here: on SIGINT/SIGTERM the whole group of the running step (cargo, the
# servers and peers a script started) is sent SIGTERM, and each script's own
# trap cleans up what it started.
STEP_PID=""
on_signal() {
    if [[ -n "$STEP_PID" ]]; then
        kill -TERM -- "-$STEP_PID" 2>/dev/null || true
        wait "$STEP_PID" 2>/dev/null || true
    fi
    echo
    echo "[test.sh] interrupted"
    exit "$1"
}
trap 'on_signal 130' INT
trap 'on_signal 143' TERM
set -m

declare -A RESULT DURATION
TOTAL_START=$SECONDS
stop=0
n=0
for step in "${STEPS[@]}"; do
    n=$((n + 1))
    if ((stop)); then
        RESULT[$step]="not run"
        continue
    fi
    echo
    echo "==== [$n/${#STEPS[@]}] $step: $(describe "$step") ===="
    t0=$SECONDS
    "step_$step" </dev/null &
    STEP_PID=$!
    wait "$STEP_PID"
    rc=$?
    STEP_PID=""
    DURATION[$step]=$((SECONDS - t0))
    if ((rc == 0)); then
        RESULT[$step]=passed
        echo "==== $step passed in ${DURATION[$step]} s ===="
    else
        RESULT[$step]=FAILED
        echo "==== $step FAILED (exit status $rc) after ${DURATION[$step]} s; see its output above ===="
        ((KEEP_GOING)) || stop=1
    fi
done

echo
echo "==== summary ===="
passed=0
failed=0
for step in "${STEPS[@]}"; do
    case "${RESULT[$step]}" in
    passed)
        passed=$((passed + 1))
        printf '  %-16s passed   %5d s\n' "$step" "${DURATION[$step]}"
        ;;
    FAILED)
        failed=$((failed + 1))
        printf '  %-16s FAILED   %5d s\n' "$step" "${DURATION[$step]}"
        ;;
    *)
        failed=$((failed + 1))
        printf '  %-16s not run (an earlier step failed)\n' "$step"
        ;;
    esac
done
printf '  %-16s          %5d s\n' total $((SECONDS - TOTAL_START))
echo "$passed passed, $failed failed"
((failed == 0))
