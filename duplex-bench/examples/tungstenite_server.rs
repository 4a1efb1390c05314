//! tokio-tungstenite's echo and broadcast servers for `bench/run.sh`, written the way its
//! documentation shows: `accept_async`, then `StreamExt::next` / `SinkExt::send`.
//!
//! * echo (default): every text or binary message comes back unchanged;
//! * `--broadcast`: every text or binary message goes to every other connection; a
//!   connection joins before its `101` goes out, and each subscriber feeds what is queued
//!   and flushes once.
//!
//! ```text
//! cargo run --release -p duplex-bench --example tungstenite_server -- [--listen ADDR] [--broadcast]
//! ```

mod common;

use futures_util::{SinkExt as _, StreamExt as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Message;

fn main() -> std::process::ExitCode {
    let args = common::ServerArgs::parse("tungstenite_server [--listen ADDR] [--broadcast]");
    common::run(|| async move {
        let listener = common::listen(args.listen).await?;
        if args.broadcast {
            let (tx, _) = broadcast::channel::<(u64, Message)>(4096);
            let ids = Arc::new(AtomicU64::new(0));
            common::accept_loop(listener, move |tcp| {
                member(tcp, ids.fetch_add(1, Ordering::Relaxed), tx.clone())
            })
            .await
        } else {
            common::accept_loop(listener, echo).await
        }
    })
}

async fn echo(tcp: TcpStream) {
    let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
        return;
    };
    // Pings are answered and the close handshake completed by tungstenite itself; the
    // stream ends after the close reply has been flushed.
    while let Some(Ok(message)) = ws.next().await {
        if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err() {
            return;
        }
    }
}

async fn member(tcp: TcpStream, id: u64, tx: broadcast::Sender<(u64, Message)>) {
    let mut rx = tx.subscribe();
    let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
        return;
    };
    loop {
        tokio::select! {
            message = ws.next() => match message {
                Some(Ok(message)) => {
                    if message.is_text() || message.is_binary() {
                        let _ = tx.send((id, message));
                    }
                }
                _ => return,
            },
            received = rx.recv() => {
                let mut next = received;
                loop {
                    match next {
                        Ok((from, message)) => {
                            if from != id && ws.feed(message).await.is_err() {
                                return;
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
                if ws.flush().await.is_err() {
                    return;
                }
            }
        }
    }
}
