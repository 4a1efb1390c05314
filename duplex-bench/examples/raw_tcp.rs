//! The raw TCP baseline of `bench/run.sh`: no WebSocket at all.
//!
//! * echo (default): every byte read is written back unparsed;
//! * `--broadcast`: a relay; the bytes read from any connection are written to every other
//!   connection, each subscriber draining what is queued into one write. A new connection
//!   first gets one byte, `+`, once it is registered (the raw counterpart of the `101` that
//!   tells a WebSocket client it is in the room).
//!
//! ```text
//! cargo run --release -p duplex-bench --example raw_tcp -- [--listen ADDR] [--broadcast]
//! ```

mod common;

use bytes::Bytes;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::broadcast;

/// Read buffer of one connection: a 64 KiB message fits in one read.
const BUF: usize = 64 * 1024;

fn main() -> std::process::ExitCode {
    let args = common::ServerArgs::parse("raw_tcp [--listen ADDR] [--broadcast | --close]");
    if args.broadcast && args.close {
        eprintln!("raw_tcp: --broadcast and --close exclude each other");
        return std::process::ExitCode::from(2);
    }
    common::run(|| async move {
        let listener = common::listen(args.listen).await?;
        if args.broadcast {
            let (tx, _) = broadcast::channel::<(u64, Bytes)>(4096);
            let ids = Arc::new(AtomicU64::new(0));
            common::accept_loop(listener, move |tcp| {
                relay(tcp, ids.fetch_add(1, Ordering::Relaxed), tx.clone())
            })
            .await
        } else if args.close {
            // The server closes first, as a WebSocket server does after the close
            // handshake (RFC 6455 §7.1.1): the TIME_WAIT stays on the server's side, so
            // the load generator's connects do not slow down searching for a free port.
            common::accept_loop(listener, |tcp| async move { drop(tcp) }).await
        } else {
            common::accept_loop(listener, echo).await
        }
    })
}

async fn echo(mut tcp: TcpStream) {
    let mut buf = vec![0u8; BUF];
    loop {
        match tcp.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if tcp.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn relay(mut tcp: TcpStream, id: u64, tx: broadcast::Sender<(u64, Bytes)>) {
    let mut rx = tx.subscribe();
    if tcp.write_all(b"+").await.is_err() {
        return;
    }
    let mut buf = vec![0u8; BUF];
    let mut out = Vec::with_capacity(BUF);
    loop {
        tokio::select! {
            read = tcp.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let _ = tx.send((id, Bytes::copy_from_slice(&buf[..n])));
                }
            },
            received = rx.recv() => {
                let mut next = received;
                loop {
                    match next {
                        Ok((from, bytes)) => {
                            if from != id {
                                out.extend_from_slice(&bytes);
                            }
                        }
                        // Too slow: drop the subscriber, as a hub would.
                        Err(_) => return,
                    }
                    next = match rx.try_recv() {
                        Ok(item) => Ok(item),
                        Err(broadcast::error::TryRecvError::Empty) => break,
                        Err(_) => return,
                    };
                }
                if !out.is_empty() {
                    if tcp.write_all(&out).await.is_err() {
                        return;
                    }
                    out.clear();
                }
            }
        }
    }
}
