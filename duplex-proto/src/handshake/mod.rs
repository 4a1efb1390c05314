//! The opening handshake (RFC 6455 §4) in both roles. Placeholder until the module lands.

/// A failed opening handshake; knows the HTTP status to answer with.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct HandshakeError {
    status: u16,
    message: String,
}

impl HandshakeError {
    /// The HTTP status code to answer with.
    pub fn status(&self) -> u16 {
        self.status
    }
}
