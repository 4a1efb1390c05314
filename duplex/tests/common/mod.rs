//! Helpers shared by the integration tests: loopback servers and a raw sans-IO peer.
#![allow(dead_code)]

use bytes::BytesMut;
use duplex_proto::handshake::{self, HeadReader};
use duplex_proto::{Config, Connection, Event, Role};
use std::future::Future;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Every test body runs under this bound.
/// Echoes every message until the peer closes or the connection fails.
pub async fn echo<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut ws: duplex::WebSocket<S>,
) {
    while let Some(Ok(message)) = ws.recv().await {
        if ws.send(message).await.is_err() {
            break;
        }
    }
}

pub async fn bounded<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .expect("test timed out")
}

/// A loopback listener and its `ws://` URL.
pub async fn listener() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/test", listener.local_addr().unwrap());
    (listener, url)
}

/// A WebSocket peer driven by hand with the sans-IO core, to do what a well-behaved
/// implementation never would.
pub struct RawPeer {
    pub tcp: TcpStream,
    pub conn: Connection,
    pub buf: BytesMut,
}

/// A duplex client connected to a fresh [`RawPeer`] on loopback.
pub async fn client_and_peer() -> (duplex::WebSocket<duplex::MaybeTlsStream>, RawPeer) {
    let (listener, url) = listener().await;
    let connect = tokio::spawn(async move { duplex::connect(&url).await.unwrap() });
    let peer = RawPeer::accept(&listener).await;
    let (ws, _response) = connect.await.unwrap();
    (ws, peer)
}

impl RawPeer {
    /// Accepts one client on `listener`, without extensions.
    pub async fn accept(listener: &TcpListener) -> Self {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let config = Config::default().with_deflate(None);
        let mut buf = BytesMut::with_capacity(4096);
        let mut head = HeadReader::new();
        let len = loop {
            if let Some(len) = head.poll(&buf, &config).unwrap() {
                break len;
            }
            assert!(tcp.read_buf(&mut buf).await.unwrap() > 0);
        };
        let request = handshake::parse_request(&buf[..len], &config).unwrap();
        let upgrade = handshake::accept(&request, &config).unwrap();
        let mut out = BytesMut::new();
        upgrade.write_response(&Default::default(), &mut out);
        tcp.write_all(&out).await.unwrap();
        let mut conn = Connection::new(Role::Server, config);
        let rest = buf.split_off(len);
        conn.handle_bytes(&rest).unwrap();
        Self {
            tcp,
            conn,
            buf: BytesMut::new(),
        }
    }

    /// Writes whatever the core queued.
    pub async fn flush(&mut self) {
        let mut out = BytesMut::new();
        self.conn.poll_transmit(&mut out);
        self.tcp.write_all(&out).await.unwrap();
    }

    /// Reads until the core yields an event; `None` at EOF.
    pub async fn next_event(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.conn.poll_event() {
                return Some(event);
            }
            self.buf.clear();
            self.buf.reserve(4096);
            let n = self.tcp.read_buf(&mut self.buf).await.ok()?;
            if n == 0 {
                return None;
            }
            let _ = self.conn.handle_bytes(&self.buf);
        }
    }

    /// Whether the client shut its side down (EOF) within a second.
    pub async fn sees_eof(&mut self) -> bool {
        let mut scratch = [0u8; 1024];
        tokio::time::timeout(Duration::from_secs(1), async {
            loop {
                match self.tcp.read(&mut scratch).await {
                    Ok(0) | Err(_) => return true,
                    Ok(_) => {}
                }
            }
        })
        .await
        .unwrap_or(false)
    }
}
