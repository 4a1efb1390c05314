//! The opening handshake (RFC 6455 §4) in both roles, sans-IO.
//!
//! There is one implementation of the rules for every entry point. A raw TCP server finds the
//! head with [`HeadReader`], parses it with [`parse_request`] and validates it with [`accept`];
//! hyper and axum adapters call [`accept`] with their own [`http::Request`](::http::Request). Either way the
//! result is a [`ServerUpgrade`] holding the negotiated parameters and the `101` response, or a
//! [`HandshakeError`] that knows its HTTP status and how to say it.
//!
//! ```
//! use bytes::BytesMut;
//! use duplex_proto::Config;
//! use duplex_proto::handshake::{accept, parse_request, ClientHandshake, HeadReader};
//!
//! let config = Config::default();
//! let client = ClientHandshake::new(&"ws://example.com/chat".parse().unwrap(), &config)
//!     .unwrap()
//!     .protocols(["chat"]);
//! let mut wire = BytesMut::new();
//! client.write_request(&mut wire);
//!
//! // Server: find the head, validate, answer.
//! let len = HeadReader::new().poll(&wire, &config).unwrap().expect("complete head");
//! let request = parse_request(&wire[..len], &config).unwrap();
//! let mut upgrade = accept(&request, &config).unwrap();
//! upgrade.select_protocol("chat").unwrap();
//! let mut answer = BytesMut::new();
//! upgrade.write_response(&Default::default(), &mut answer);
//!
//! // Client: check the answer.
//! let len = HeadReader::new().poll(&answer, &config).unwrap().expect("complete head");
//! let upgraded = client.handle_response(&answer[..len]).unwrap();
//! assert_eq!(upgraded.protocol(), Some("chat"));
//! ```

mod client;
mod error;
mod http;
mod key;
mod server;

pub use self::http::HeadReader;
pub use client::{parse_response, ClientHandshake, ClientUpgrade};
pub use error::HandshakeError;
pub use key::accept_key;
pub use server::{accept, parse_request, ServerUpgrade};
