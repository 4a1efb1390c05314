//! # duplex
//!
//! WebSocket client and server for tokio: `ws://` and `wss://` (rustls), raw TCP servers,
//! and upgrades from hyper 1.x and axum 0.8.
//!
//! duplex drives the sans-IO protocol core [`duplex_proto`] over tokio streams: the core
//! decides everything RFC 6455 and RFC 7692 (permessage-deflate) decide, this crate reads,
//! writes, waits and keeps time.
//!
//! ```text
//! duplex-cli → duplex-hub → duplex (this crate: tokio, TLS, hyper, axum) → duplex-proto
//! ```
//!
//! ## Example
//!
//! An echo server and a client on loopback:
//!
//! ```
//! use duplex::{CloseCode, Message};
//! use tokio::net::TcpListener;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), duplex::Error> {
//! let listener = TcpListener::bind("127.0.0.1:0").await?;
//! let url = format!("ws://{}/echo", listener.local_addr()?);
//!
//! tokio::spawn(async move {
//!     let (tcp, _) = listener.accept().await?;
//!     let mut ws = duplex::accept(tcp).await?;
//!     while let Some(message) = ws.recv().await {
//!         ws.send(message?).await?;
//!     }
//!     Ok::<_, duplex::Error>(())
//! });
//!
//! let (mut ws, _response) = duplex::connect(&url).await?;
//! ws.send(Message::text("hello")).await?;
//! assert_eq!(ws.recv().await.transpose()?, Some(Message::text("hello")));
//! ws.close(CloseCode::NORMAL, "done").await?;
//! assert!(ws.recv().await.is_none());
//! # Ok(())
//! # }
//! ```
//!
//! ## What the driver does for you
//!
//! * Pings are answered, close frames replied to, and protocol violations reported to the
//!   peer with the right close code, all by [`WebSocket::recv`] (or the [`WsReader`] of a
//!   [split](WebSocket::split) socket, which keeps doing so while the [`WsWriter`] is busy).
//! * Writes are coalesced (one vectored write for a burst of frames) and bounded: senders
//!   wait when more than [`WebSocketConfig::write_buffer_high_water`] bytes are queued.
//! * Idle connections hold no buffers; optional keepalive pings and idle timeout.
//!
//! For a server's listener, [`net::defer_accept`] has the kernel hand over a connection only
//! once its request has arrived: one wake-up per connection instead of two.
//!
//! ## Features
//!
//! * `tls` (default): `wss://` clients with rustls, and the `tls` module's helpers for
//!   servers (`tls::server_config`, `TlsAcceptor`).
//! * `hyper`: `hyper::upgrade` / `hyper::upgrade_with` for hyper 1.x servers.
//! * `axum`: the `axum::WebSocketUpgrade` extractor.

mod client;
mod config;
mod driver;
mod error;
pub mod net;
mod server;
mod split;
mod stream;
mod wakers;
mod websocket;

#[cfg(feature = "axum")]
pub mod axum;
#[cfg(feature = "hyper")]
pub mod hyper;
#[cfg(feature = "tls")]
pub mod tls;

pub use client::{connect, ClientBuilder};
pub use config::WebSocketConfig;
pub use driver::Outbound;
pub use error::Error;
pub use server::{accept, ServerBuilder};
pub use split::{WsReader, WsWriter};
pub use stream::MaybeTlsStream;
pub use websocket::WebSocket;

pub use duplex_proto;
pub use duplex_proto::connection::PreparedFrame;
pub use duplex_proto::handshake::ServerUpgrade;
pub use duplex_proto::{
    CloseCode, CloseFrame, Config, ConfigError, DeflateConfig, Event, HandshakeError, Message,
    ProtocolError, Role, SendError, Utf8Bytes,
};
pub use http;

/// The README's Rust examples, compiled as doctests so they cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
