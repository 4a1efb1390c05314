//! permessage-deflate (RFC 7692): parameter negotiation and the per-message codec.
//!
//! * [`DeflateConfig`] is the policy: what a client offers, what a server accepts.
//! * [`negotiate_server`] picks the first acceptable offer from the request and writes the
//!   response header; [`client_offer`] and [`negotiate_client`] are the client's half. Both
//!   sides end up with the same [`DeflateParams`].
//! * [`DeflateCodec`] compresses whole outgoing messages and inflates incoming ones frame by
//!   frame, with the message size limit enforced while inflating.
//!
//! ```
//! use duplex_proto::deflate::{self, DeflateCodec, DeflateConfig};
//! use duplex_proto::Role;
//! use bytes::BytesMut;
//!
//! let config = DeflateConfig::default();
//! let offer = deflate::client_offer(&config);
//! let (params, response) = deflate::negotiate_server([offer.as_str()], &config)?.unwrap();
//! assert_eq!(deflate::negotiate_client([response.as_str()], &config)?, Some(params));
//!
//! let mut server = DeflateCodec::new(Role::Server, params, config.compression_level);
//! let mut client = DeflateCodec::new(Role::Client, params, config.compression_level);
//! let (mut wire, mut text) = (BytesMut::new(), BytesMut::new());
//! server.compress(b"Hello", &mut wire).unwrap();
//! client.decompress(&wire, true, &mut text, 1 << 20).unwrap();
//! assert_eq!(&text[..], b"Hello");
//! # Ok::<(), deflate::ExtensionError>(())
//! ```

mod codec;
mod header;
mod params;

pub use codec::DeflateCodec;
pub use header::{parse_extensions, Extension, ExtensionError};
pub use params::{client_offer, negotiate_client, negotiate_server, DeflateConfig, DeflateParams};
