//! The building blocks on their own: unmasking, UTF-8 validation and permessage-deflate.
//!
//! * unmask: duplex's `apply_mask` against a plain byte loop and fastwebsockets' public
//!   `unmask`. tungstenite's masking function is private (`protocol::frame::mask` is not a
//!   public module), so it cannot be called here; its cost is inside the frame benchmarks.
//! * UTF-8: duplex's incremental `Utf8Validator` (which fragmented messages need) against
//!   `std::str::from_utf8` on the whole text.
//! * deflate: duplex's `DeflateCodec` against flate2 driven directly (raw deflate, sync flush,
//!   the RFC 7692 tail handled by hand) with the same zlib backend and level. Neither
//!   tungstenite nor fastwebsockets implements permessage-deflate, so flate2 is the baseline
//!   any of them would build on; the difference is duplex's own overhead and policy.

// `criterion_group!` defines a public, undocumented function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use duplex_bench::{binary, json_text, mixed_text, size_label, MASK, SIZES};
use duplex_proto::deflate::{DeflateCodec, DeflateParams};
use duplex_proto::frame::apply_mask;
use duplex_proto::utf8::Utf8Validator;
use duplex_proto::Role;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};

/// The empty stored block a sync flush ends with (RFC 7692 §7.2.1).
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

fn bytewise(buf: &mut [u8], mask: [u8; 4]) {
    for (i, byte) in buf.iter_mut().enumerate() {
        *byte ^= mask[i % 4];
    }
}

fn unmask(c: &mut Criterion) {
    let mut group = c.benchmark_group("unmask");
    for size in SIZES {
        let label = size_label(size);
        let mut buf = binary(size);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(BenchmarkId::new("duplex", &label), |b| {
            b.iter(|| apply_mask(black_box(&mut buf), MASK, 0));
        });
        group.bench_function(BenchmarkId::new("byte_loop", &label), |b| {
            b.iter(|| bytewise(black_box(&mut buf), MASK));
        });
        group.bench_function(BenchmarkId::new("fastwebsockets", &label), |b| {
            b.iter(|| fastwebsockets::unmask(black_box(&mut buf), MASK));
        });
    }
    group.finish();
}

fn utf8(c: &mut Criterion) {
    let mut group = c.benchmark_group("utf8");
    let cases = [
        ("ascii_1KiB", json_text(1024)),
        ("mixed_1KiB", mixed_text(1024)),
        ("ascii_64KiB", json_text(64 * 1024)),
        ("mixed_64KiB", mixed_text(64 * 1024)),
    ];
    for (label, text) in &cases {
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_with_input(BenchmarkId::new("duplex", label), text, |b, text| {
            b.iter(|| {
                let mut v = Utf8Validator::new();
                v.feed(black_box(text)).expect("valid");
                v.finish().expect("complete");
            });
        });
        // The same text arriving as four fragments cut inside code points.
        group.bench_with_input(
            BenchmarkId::new("duplex_4_pieces", label),
            text,
            |b, text| {
                let quarter = text.len() / 4 + 1;
                b.iter(|| {
                    let mut v = Utf8Validator::new();
                    for piece in black_box(text).chunks(quarter) {
                        v.feed(piece).expect("valid");
                    }
                    v.finish().expect("complete");
                });
            },
        );
        group.bench_with_input(BenchmarkId::new("std", label), text, |b, text| {
            b.iter(|| std::str::from_utf8(black_box(text)).expect("valid").len());
        });
    }
    group.finish();
}

fn params(no_context_takeover: bool) -> DeflateParams {
    DeflateParams {
        server_no_context_takeover: no_context_takeover,
        client_no_context_takeover: no_context_takeover,
        server_max_window_bits: 15,
        client_max_window_bits: 15,
    }
}

/// flate2 alone: raw deflate, sync flush, tail stripped; what duplex's codec does minus its
/// own bookkeeping.
fn flate2_compress(z: &mut Compress, input: &[u8], out: &mut Vec<u8>) {
    out.clear();
    z.compress_vec(input, out, FlushCompress::Sync)
        .expect("compress");
    assert!(out.ends_with(&TAIL) && z.total_in() > 0);
    out.truncate(out.len() - TAIL.len());
}

/// flate2 alone: inflate a message whose tail was appended beforehand.
fn flate2_decompress(z: &mut Decompress, input_with_tail: &[u8], out: &mut Vec<u8>) {
    out.clear();
    z.decompress_vec(input_with_tail, out, FlushDecompress::Sync)
        .expect("decompress");
}

fn deflate(c: &mut Criterion) {
    const LEVEL: u32 = 1; // duplex's default level
    let text = json_text(1024);
    let mut group = c.benchmark_group("deflate");
    group.throughput(Throughput::Bytes(text.len() as u64));

    for (suffix, no_context) in [("", false), ("_no_context_takeover", true)] {
        group.bench_function(format!("compress_1KiB{suffix}/duplex"), |b| {
            let mut codec = DeflateCodec::new(Role::Server, params(no_context), LEVEL);
            let mut out = BytesMut::with_capacity(2048);
            b.iter(|| {
                out.clear();
                codec
                    .compress(black_box(&text), &mut out)
                    .expect("compress");
                black_box(&out);
            });
        });
        group.bench_function(format!("compress_1KiB{suffix}/flate2"), |b| {
            let mut z = Compress::new_with_window_bits(Compression::new(LEVEL), false, 15);
            let mut out = Vec::with_capacity(2048);
            b.iter(|| {
                flate2_compress(&mut z, black_box(&text), &mut out);
                if no_context {
                    // The cheapest way to drop the context: keep zlib's memory, reset state.
                    z.reset();
                }
                black_box(&out);
            });
        });
    }

    // One message compressed on its own, so it inflates the same way on every iteration
    // whether or not the receiver keeps its window.
    let mut z = Compress::new_with_window_bits(Compression::new(LEVEL), false, 15);
    let mut compressed = Vec::with_capacity(2048);
    flate2_compress(&mut z, &text, &mut compressed);
    let mut with_tail = compressed.clone();
    with_tail.extend_from_slice(&TAIL);

    for (suffix, no_context) in [("", false), ("_no_context_takeover", true)] {
        group.bench_function(format!("decompress_1KiB{suffix}/duplex"), |b| {
            // The client inflates what the server compressed.
            let mut codec = DeflateCodec::new(Role::Client, params(no_context), LEVEL);
            let mut out = BytesMut::with_capacity(2048);
            b.iter(|| {
                out.clear();
                codec
                    .decompress(black_box(&compressed), true, &mut out, 1 << 20)
                    .expect("inflate");
                assert_eq!(out.len(), text.len());
            });
        });
        group.bench_function(format!("decompress_1KiB{suffix}/flate2"), |b| {
            let mut z = Decompress::new_with_window_bits(false, 15);
            let mut out = Vec::with_capacity(2048);
            b.iter(|| {
                flate2_decompress(&mut z, black_box(&with_tail), &mut out);
                if no_context {
                    z.reset(false);
                }
                assert_eq!(out.len(), text.len());
            });
        });
    }
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(30)
}

criterion_group! {
    name = benches;
    config = config();
    targets = unmask, utf8, deflate
}
criterion_main!(benches);
