//! # duplex-proto
//!
//! The sans-IO core of duplex: RFC 6455 (WebSocket) and RFC 7692 (permessage-deflate) for
//! both roles, with no sockets, no async runtime and no clock. Bytes go in, events come out;
//! messages go in, bytes come out. The `duplex` crate drives it over tokio, and anything else
//! (a blocking socket, a fuzzer, a test) can drive it the same way.
//!
//! ```text
//! duplex-cli → duplex-hub → duplex (tokio) → duplex-proto (this crate)
//! ```
//!
//! ## Driving a connection
//!
//! ```
//! use duplex_proto::{Connection, Config, Event, Message, Role};
//! use bytes::BytesMut;
//!
//! let mut client = Connection::new(Role::Client, Config::default());
//! let mut server = Connection::new(Role::Server, Config::default());
//! let mut wire = BytesMut::new();
//!
//! client.send(Message::text("hello")).unwrap();
//! client.poll_transmit(&mut wire);
//! server.handle_bytes(&wire).unwrap();
//! wire.clear();
//! while let Some(event) = server.poll_event() {
//!     if let Event::Message(msg) = event {
//!         assert_eq!(msg.as_text(), Some("hello"));
//!         server.send(msg).unwrap(); // echo
//!     }
//! }
//! server.poll_transmit(&mut wire);
//! client.handle_bytes(&wire).unwrap();
//! assert_eq!(client.poll_event(), Some(Event::Message(Message::text("hello"))));
//! ```
//!
//! The opening handshake lives in [`handshake`]: it parses and validates requests and
//! responses and produces the negotiated parameters that [`Connection`] is built with.
// Denied, not forbidden: one module may allow it (the AVX2 unmasking loop, frame/mask.rs),
// as docs/performance.md's eleventh pass measured the need for.
#![deny(unsafe_code)]

pub mod close;
pub mod config;
pub mod connection;
pub mod deflate;
pub mod error;
pub mod frame;
pub mod handshake;
pub mod message;
pub mod role;
pub mod utf8;

pub use close::{CloseCode, CloseFrame};
pub use config::Config;
pub use connection::Connection;
pub use deflate::{DeflateConfig, DeflateParams};
pub use error::{ConfigError, ProtocolError, SendError};
pub use handshake::HandshakeError;
pub use message::{Event, Message};
pub use role::Role;
pub use utf8::Utf8Bytes;
