//! The one public [`Error`] of this crate.

use duplex_proto::{ConfigError, HandshakeError, ProtocolError, SendError};

/// Anything that can go wrong on a WebSocket connection, from the URL to the last byte.
///
/// The protocol layers keep their own error types ([`ProtocolError`], [`HandshakeError`],
/// [`SendError`], [`ConfigError`]); this type wraps them together with IO and TLS failures.
/// A normal close is not an error: [`WebSocket::recv`](crate::WebSocket::recv) returns `None`.
///
/// Wrapped errors display as themselves (and pass their `source` on), so a chain printed
/// by an error reporter says everything once.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The peer broke RFC 6455 / RFC 7692 or exceeded a limit; the close frame saying so was
    /// sent. [`ProtocolError::AbnormalClosure`] means the connection ended without a close
    /// frame.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// The opening handshake failed; [`HandshakeError::status`] is the HTTP status (the one
    /// we answered with as a server, the one we got as a client).
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    /// A local misuse of the send side, such as sending after close.
    #[error(transparent)]
    Send(#[from] SendError),
    /// Invalid configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The transport failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// TLS setup or the TLS handshake failed (bad certificate, unknown CA, invalid name...).
    #[error(transparent)]
    Tls(Box<dyn std::error::Error + Send + Sync>),
    /// Something took longer than its configured limit; names what.
    #[error("timed out: {0}")]
    Timeout(&'static str),
    /// The URL cannot be used for a WebSocket connection.
    #[error("invalid URL: {0}")]
    Url(String),
    /// The connection is already finished (closed, failed or timed out).
    #[error("connection closed")]
    ConnectionClosed,
    /// The HTTP server (hyper) failed to hand over the upgraded connection.
    #[cfg(feature = "hyper")]
    #[error(transparent)]
    Upgrade(hyper::Error),
}

#[cfg(feature = "tls")]
impl From<rustls::Error> for Error {
    fn from(e: rustls::Error) -> Self {
        Error::Tls(Box::new(e))
    }
}

impl Error {
    /// The HTTP status of a failed handshake, if that is what this is.
    pub fn handshake_status(&self) -> Option<http::StatusCode> {
        match self {
            Error::Handshake(e) => Some(e.status()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_small() {
        assert!(
            std::mem::size_of::<Error>() <= 48,
            "{}",
            std::mem::size_of::<Error>()
        );
    }
}
