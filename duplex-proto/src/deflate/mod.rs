//! permessage-deflate (RFC 7692): parameter negotiation and the per-message codec.
//!
//! CONTRACT (being implemented; the signatures below are what `connection.rs` and the
//! handshake use — keep them):
//!
//! * `DeflateConfig` — policy: what a client offers / a server accepts.
//! * `DeflateParams` — the negotiated result.
//! * `DeflateCodec` — lazily-created compressor/decompressor for one connection.

mod codec;
mod params;

pub use codec::DeflateCodec;
pub use params::{
    client_offer, negotiate_client, negotiate_server, parse_extensions, DeflateConfig,
    DeflateParams, Extension, ExtensionError,
};
