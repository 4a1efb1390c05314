//! Replays the committed fuzz seed corpus (`fuzz/corpus/<target>/seed-*`) through the same
//! target bodies the libFuzzer binaries run, so `cargo test` checks every seed without
//! cargo-fuzz or a nightly toolchain.
//!
//! The bodies live in `fuzz/src/targets.rs`, which only uses crates duplex-proto depends on,
//! so it is included here by path rather than as a workspace crate.

use std::fs;
use std::path::{Path, PathBuf};

#[allow(dead_code)]
#[path = "../../fuzz/src/targets.rs"]
mod targets;

/// A target body: what libFuzzer calls with each input.
type Body = fn(&[u8]);

/// Every target, with its body.
const TARGETS: &[(&str, Body)] = &[
    ("server_connection", targets::server_connection),
    ("client_connection", targets::client_connection),
    ("frame_header", targets::frame_header),
    ("handshake_request", targets::handshake_request),
    ("handshake_response", targets::handshake_response),
    ("extensions", targets::extensions),
    ("inflate", targets::inflate),
];

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

/// The committed seeds of one target (`seed-*`; files libFuzzer adds are named by hash and
/// not committed, so they are skipped even when present locally).
fn seeds(target: &str) -> Vec<PathBuf> {
    let dir = corpus_dir(target);
    let mut seeds: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("seed-"))
        })
        .collect();
    seeds.sort();
    seeds
}

fn replay(target: &str, body: Body) {
    let seeds = seeds(target);
    assert!(!seeds.is_empty(), "no seeds for {target}");
    for path in seeds {
        let data = fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let result = std::panic::catch_unwind(|| body(&data));
        assert!(result.is_ok(), "{target} panicked on {}", path.display());
    }
}

#[test]
fn every_target_has_a_corpus() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/fuzz_targets");
    for (target, _) in TARGETS {
        assert!(
            dir.join(format!("{target}.rs")).is_file(),
            "{target} has no fuzz target file"
        );
    }
    let listed = fs::read_dir(&dir).expect("fuzz_targets").count();
    assert_eq!(
        listed,
        TARGETS.len(),
        "a fuzz target is missing from this test"
    );
}

#[test]
fn server_connection_seeds() {
    replay("server_connection", targets::server_connection);
}

#[test]
fn client_connection_seeds() {
    replay("client_connection", targets::client_connection);
}

#[test]
fn frame_header_seeds() {
    replay("frame_header", targets::frame_header);
}

#[test]
fn handshake_request_seeds() {
    replay("handshake_request", targets::handshake_request);
}

#[test]
fn handshake_response_seeds() {
    replay("handshake_response", targets::handshake_response);
}

#[test]
fn extensions_seeds() {
    replay("extensions", targets::extensions);
}

#[test]
fn inflate_seeds() {
    replay("inflate", targets::inflate);
}
