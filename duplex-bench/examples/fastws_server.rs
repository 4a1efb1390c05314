//! fastwebsockets' echo and broadcast servers for `bench/run.sh`, upgraded through hyper as
//! its `upgrade` feature and examples do.
//!
//! * echo (default): its `echo_server` example: a `FragmentCollector`, every text or binary
//!   message written back; pings and the close handshake handled by the library;
//! * `--broadcast`: the socket split in two (`unstable-split`): the reader publishes every
//!   text or binary message to the other connections, the writer (behind a `BufWriter`)
//!   writes what is queued and flushes once. A connection joins before its `101` goes out.
//!
//! ```text
//! cargo run --release -p duplex-bench --example fastws_server -- [--listen ADDR] [--broadcast]
//! ```

mod common;

use bytes::Bytes;
use fastwebsockets::{upgrade, FragmentCollectorRead, Frame, OpCode, Payload, WebSocketError};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::io::BufWriter;
use tokio::net::TcpStream;
use tokio::sync::{broadcast, mpsc};

/// One relayed message: the sender, whether it is text, the payload.
type Relayed = (u64, bool, Bytes);

fn main() -> std::process::ExitCode {
    let args = common::ServerArgs::parse("fastws_server [--listen ADDR] [--broadcast]");
    common::run(|| async move {
        let listener = common::listen(args.listen).await?;
        let hub = args.broadcast.then(|| {
            let (tx, _) = broadcast::channel::<Relayed>(4096);
            (tx, Arc::new(AtomicU64::new(0)))
        });
        common::accept_loop(listener, move |tcp| http(tcp, hub.clone())).await
    })
}

/// Serves the HTTP/1 connection that carries the upgrade request.
async fn http(tcp: TcpStream, hub: Option<(broadcast::Sender<Relayed>, Arc<AtomicU64>)>) {
    let io = hyper_util::rt::TokioIo::new(tcp);
    let service = service_fn(move |mut request: Request<Incoming>| {
        let hub = hub.clone();
        async move {
            let (response, upgraded) = upgrade::upgrade(&mut request)?;
            match hub {
                Some((tx, ids)) => {
                    let rx = tx.subscribe();
                    let id = ids.fetch_add(1, Ordering::Relaxed);
                    tokio::spawn(async move {
                        if let Ok(ws) = upgraded.await {
                            member(ws, id, tx, rx).await;
                        }
                    });
                }
                None => {
                    tokio::spawn(async move {
                        if let Ok(ws) = upgraded.await {
                            let _ = echo(ws).await;
                        }
                    });
                }
            }
            Ok::<Response<Empty<Bytes>>, WebSocketError>(response)
        }
    });
    let _ = http1::Builder::new()
        .serve_connection(io, service)
        .with_upgrades()
        .await;
}

type Upgraded = fastwebsockets::WebSocket<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>>;

async fn echo(ws: Upgraded) -> Result<(), WebSocketError> {
    let mut ws = fastwebsockets::FragmentCollector::new(ws);
    loop {
        let frame = ws.read_frame().await?;
        match frame.opcode {
            OpCode::Close => return Ok(()),
            OpCode::Text | OpCode::Binary => ws.write_frame(frame).await?,
            _ => {}
        }
    }
}

async fn member(
    ws: Upgraded,
    id: u64,
    tx: broadcast::Sender<Relayed>,
    mut rx: broadcast::Receiver<Relayed>,
) {
    let (read, mut write) = ws.split(|io| {
        let (r, w) = tokio::io::split(io);
        (r, BufWriter::new(w))
    });
    let mut read = FragmentCollectorRead::new(read);
    // Pongs and the close reply the reader owes go to the writer through this channel.
    let (owed_tx, mut owed_rx) = mpsc::unbounded_channel::<(OpCode, Vec<u8>)>();
    let writer = tokio::spawn(async move {
        loop {
            tokio::select! {
                owed = owed_rx.recv() => match owed {
                    Some((opcode, payload)) => {
                        let close = opcode == OpCode::Close;
                        let frame = Frame::new(true, opcode, None, Payload::Owned(payload));
                        if write.write_frame(frame).await.is_err()
                            || write.flush().await.is_err()
                            || close
                        {
                            return;
                        }
                    }
                    None => return,
                },
                received = rx.recv() => {
                    let mut next = received;
                    loop {
                        match next {
                            Ok((from, text, payload)) => {
                                if from != id {
                                    let payload = Payload::Borrowed(&payload);
                                    let frame =
                                        if text { Frame::text(payload) } else { Frame::binary(payload) };
                                    if write.write_frame(frame).await.is_err() {
                                        return;
                                    }
                                }
                            }
                            Err(_) => return,
                        }
                        next = match rx.try_recv() {
                            Ok(item) => Ok(item),
                            Err(broadcast::error::TryRecvError::Empty) => break,
                            Err(_) => return,
                        };
                    }
                    if write.flush().await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    let mut owe = |frame: Frame<'_>| {
        let _ = owed_tx.send((frame.opcode, frame.payload.to_vec()));
        std::future::ready(Ok::<(), WebSocketError>(()))
    };
    while let Ok(frame) = read.read_frame(&mut owe).await {
        match frame.opcode {
            OpCode::Close => break,
            OpCode::Text | OpCode::Binary => {
                let text = frame.opcode == OpCode::Text;
                let _ = tx.send((id, text, Bytes::copy_from_slice(&frame.payload)));
            }
            _ => {}
        }
    }
    drop(owed_tx);
    let _ = writer.await;
}
