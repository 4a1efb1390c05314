//! Fuzz target bodies for duplex-proto.
//!
//! Each libFuzzer binary in `fuzz_targets/` is a one-line wrapper around a function here, and
//! `duplex-proto/tests/fuzz_corpus.rs` includes [`targets`]'s source file directly to replay
//! the committed seed corpus during `cargo test`. That is why the bodies live in a file that
//! depends only on crates `duplex-proto` itself depends on (`bytes`, `http`).
#![forbid(unsafe_code)]

#[path = "targets.rs"]
pub mod targets;

pub use targets::*;
