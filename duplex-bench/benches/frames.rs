//! Frame decode and encode: duplex-proto's `Connection` against tungstenite and fastwebsockets
//! doing the same work on the same bytes.
//!
//! * duplex is the sans-IO core, driven directly: bytes in with `handle_bytes`, messages out
//!   with `poll_event`; `send` then `poll_transmit` (one copy out) or `transmit_slices` (what a
//!   vectored write would take, no copy).
//! * tungstenite is its blocking `WebSocket` over an in-memory stream.
//! * fastwebsockets is its async `WebSocket` over an in-memory stream on a current-thread
//!   tokio runtime; the timing loop runs inside one `block_on`, so the runtime costs nothing
//!   per frame beyond polling.
//!
//! The in-memory stream replays the same frames forever, as a socket whose data is always
//! ready, and discards writes. All decoders see binary messages (text is measured separately,
//! where UTF-8 validation is part of the work).

// `criterion_group!` defines a public, undocumented function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use duplex_bench::{binary, json_text, size_label, MASK, SIZES};
use duplex_proto::frame::{encode_frame, OpCode};
use duplex_proto::{Config, Connection, Event, Message, Role};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A stream that yields `data` over and over and swallows whatever is written to it.
struct Replay {
    data: Vec<u8>,
    pos: usize,
}

impl Replay {
    fn new(data: Vec<u8>) -> Self {
        Self { data, pos: 0 }
    }

    /// An output-only stream (reading from it is a bug in the benchmark).
    fn sink() -> Self {
        Self::new(Vec::new())
    }

    /// The next `want` bytes of the endless replay, as slices of `data`.
    fn next_chunk(&mut self, want: usize) -> &[u8] {
        assert!(!self.data.is_empty(), "read from an output-only stream");
        let take = want.min(self.data.len() - self.pos);
        let chunk = &self.data[self.pos..self.pos + take];
        self.pos = (self.pos + take) % self.data.len();
        chunk
    }
}

impl io::Read for Replay {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut n = 0;
        while n < buf.len() {
            let chunk = self.next_chunk(buf.len() - n);
            let len = chunk.len();
            buf[n..n + len].copy_from_slice(chunk);
            n += len;
        }
        Ok(n)
    }
}

impl io::Write for Replay {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsyncRead for Replay {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // `put_slice` writes into the unfilled part without zeroing it first, as a socket
        // read does.
        while buf.remaining() > 0 {
            let want = buf.remaining();
            let chunk = this.next_chunk(want);
            buf.put_slice(chunk);
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Replay {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(bufs.iter().map(|b| b.len()).sum()))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime")
}

/// `count` copies of one frame carrying `payload`, masked when a client sends it.
fn frames(from: Role, opcode: OpCode, payload: &[u8], count: usize) -> Vec<u8> {
    let mask = (from == Role::Client).then_some(MASK);
    let mut out = BytesMut::new();
    for _ in 0..count {
        encode_frame(&mut out, true, false, opcode, mask, payload);
    }
    out.to_vec()
}

fn tungstenite_role(role: Role) -> tungstenite::protocol::Role {
    match role {
        Role::Server => tungstenite::protocol::Role::Server,
        Role::Client => tungstenite::protocol::Role::Client,
    }
}

fn fastwebsockets_role(role: Role) -> fastwebsockets::Role {
    match role {
        Role::Server => fastwebsockets::Role::Server,
        Role::Client => fastwebsockets::Role::Client,
    }
}

/// Decodes `per_iter` messages per iteration from `wire` (which holds exactly `per_iter`
/// frames) with each implementation, as `role`.
fn decode_group(
    c: &mut Criterion,
    group_name: &str,
    role: Role,
    opcode: OpCode,
    cases: &[(String, Vec<u8>, usize, u64)],
) {
    let rt = runtime();
    let mut group = c.benchmark_group(group_name);
    for (label, wire, per_iter, payload_bytes) in cases {
        let per_iter = *per_iter;
        group.throughput(Throughput::Bytes(*payload_bytes));

        group.bench_with_input(BenchmarkId::new("duplex", label), wire, |b, wire| {
            let mut conn = Connection::new(role, Config::default());
            b.iter(|| {
                conn.handle_bytes(wire).expect("valid frames");
                for _ in 0..per_iter {
                    match conn.poll_event() {
                        Some(Event::Message(m)) => {
                            black_box(m);
                        }
                        other => panic!("expected a message, got {other:?}"),
                    }
                }
            });
        });

        group.bench_with_input(BenchmarkId::new("tungstenite", label), wire, |b, wire| {
            let stream = Replay::new(wire.clone());
            let mut ws =
                tungstenite::WebSocket::from_raw_socket(stream, tungstenite_role(role), None);
            b.iter(|| {
                for _ in 0..per_iter {
                    let message = ws.read().expect("valid frames");
                    assert!(message.is_binary() || message.is_text());
                    black_box(message);
                }
            });
        });

        group.bench_with_input(
            BenchmarkId::new("fastwebsockets", label),
            wire,
            |b, wire| {
                let stream = Replay::new(wire.clone());
                let mut ws =
                    fastwebsockets::WebSocket::after_handshake(stream, fastwebsockets_role(role));
                let expected = if opcode == OpCode::TEXT {
                    fastwebsockets::OpCode::Text
                } else {
                    fastwebsockets::OpCode::Binary
                };
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        let start = Instant::now();
                        for _ in 0..iters {
                            for _ in 0..per_iter {
                                let frame = ws.read_frame().await.expect("valid frames");
                                assert!(frame.opcode == expected);
                                black_box(frame);
                            }
                        }
                        start.elapsed()
                    })
                });
            },
        );
    }
    group.finish();
}

fn decode(c: &mut Criterion) {
    // Servers read masked client frames, clients read unmasked server frames.
    for (name, role) in [
        ("decode/server_binary", Role::Server),
        ("decode/client_binary", Role::Client),
    ] {
        let cases: Vec<_> = SIZES
            .iter()
            .map(|&size| {
                let wire = frames(role.peer(), OpCode::BINARY, &binary(size), 1);
                (size_label(size), wire, 1, size as u64)
            })
            .collect();
        decode_group(c, name, role, OpCode::BINARY, &cases);
    }

    // Text: UTF-8 validation is part of every implementation's work here.
    let cases: Vec<_> = [1024, 64 * 1024]
        .iter()
        .map(|&size| {
            let wire = frames(Role::Client, OpCode::TEXT, &json_text(size), 1);
            (size_label(size), wire, 1, size as u64)
        })
        .collect();
    decode_group(c, "decode/server_text", Role::Server, OpCode::TEXT, &cases);

    // Many small frames already in one buffer: per-frame overhead dominates.
    const COUNT: usize = 100;
    let cases = vec![(
        format!("{COUNT}x16B"),
        frames(Role::Client, OpCode::BINARY, &binary(16), COUNT),
        COUNT,
        (COUNT * 16) as u64,
    )];
    decode_group(
        c,
        "decode/server_many_frames",
        Role::Server,
        OpCode::BINARY,
        &cases,
    );
}

fn encode(c: &mut Criterion) {
    let rt = runtime();
    for (name, role) in [
        ("encode/server_binary", Role::Server),
        ("encode/client_binary", Role::Client),
    ] {
        let mut group = c.benchmark_group(name);
        for size in SIZES {
            let label = size_label(size);
            let payload = Bytes::from(binary(size));
            group.throughput(Throughput::Bytes(size as u64));

            group.bench_function(BenchmarkId::new("duplex", &label), |b| {
                let mut conn = Connection::new(role, Config::default());
                let mut out = BytesMut::with_capacity(size + 14);
                b.iter(|| {
                    conn.send(Message::Binary(payload.clone())).expect("open");
                    conn.poll_transmit(&mut out);
                    black_box(&out);
                    out.clear();
                });
            });

            group.bench_function(BenchmarkId::new("duplex_vectored", &label), |b| {
                let mut conn = Connection::new(role, Config::default());
                b.iter(|| {
                    conn.send(Message::Binary(payload.clone())).expect("open");
                    let written = {
                        let mut slices = [IoSlice::new(&[]); 4];
                        let n = conn.transmit_slices(&mut slices);
                        black_box(&slices[..n]);
                        slices[..n].iter().map(|s| s.len()).sum::<usize>()
                    };
                    conn.advance_transmit(written);
                });
            });

            group.bench_function(BenchmarkId::new("tungstenite", &label), |b| {
                let mut ws = tungstenite::WebSocket::from_raw_socket(
                    Replay::sink(),
                    tungstenite_role(role),
                    None,
                );
                b.iter(|| {
                    ws.send(tungstenite::Message::Binary(payload.clone()))
                        .expect("sink accepts everything");
                });
            });

            group.bench_function(BenchmarkId::new("fastwebsockets", &label), |b| {
                let mut ws = fastwebsockets::WebSocket::after_handshake(
                    Replay::sink(),
                    fastwebsockets_role(role),
                );
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        let start = Instant::now();
                        for _ in 0..iters {
                            let frame = fastwebsockets::Frame::binary(
                                fastwebsockets::Payload::Borrowed(&payload),
                            );
                            ws.write_frame(frame)
                                .await
                                .expect("sink accepts everything");
                        }
                        start.elapsed()
                    })
                });
            });
        }
        group.finish();
    }
}

fn config() -> Criterion {
    // Short runs: the whole suite takes a few minutes on 2 cores. Override on the command
    // line (`-- --measurement-time 5`) for tighter intervals.
    Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(30)
}

criterion_group! {
    name = benches;
    config = config();
    targets = decode, encode
}
criterion_main!(benches);
