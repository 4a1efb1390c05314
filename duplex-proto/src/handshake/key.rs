//! `Sec-WebSocket-Key` and `Sec-WebSocket-Accept` (RFC 6455 §4.1, §4.2.2).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use http::StatusCode;
use sha1::{Digest, Sha1};

use super::HandshakeError;

/// The GUID RFC 6455 §1.3 appends to the key before hashing.
const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The `Sec-WebSocket-Accept` value for a `Sec-WebSocket-Key`: base64 of the SHA-1 of the key
/// (as sent, base64 text with surrounding whitespace removed) followed by the RFC 6455 GUID.
///
/// ```
/// use duplex_proto::handshake::accept_key;
///
/// // RFC 6455 §1.3
/// assert_eq!(accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
/// ```
pub fn accept_key(key: &[u8]) -> String {
    let mut sha1 = Sha1::new();
    sha1.update(key);
    sha1.update(GUID);
    STANDARD.encode(sha1.finalize())
}

/// A fresh client key: 16 random bytes, base64-encoded (RFC 6455 §4.1 item 7).
///
/// # Errors
/// `500 Internal Server Error` when the system has no randomness to give.
pub(crate) fn generate_key() -> Result<String, HandshakeError> {
    let mut nonce = [0u8; 16];
    getrandom::fill(&mut nonce).map_err(|e| {
        HandshakeError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("no randomness for Sec-WebSocket-Key: {e}"),
        )
    })?;
    Ok(STANDARD.encode(nonce))
}

/// Whether `key` is the base64 encoding of exactly 16 bytes (RFC 6455 §4.2.1 item 5).
pub(crate) fn is_valid_key(key: &[u8]) -> bool {
    // 16 bytes are always 24 characters with `==` padding; checking the length first keeps
    // the decode bounded whatever the client sends.
    let mut decoded = [0u8; 18];
    key.len() == 24 && STANDARD.decode_slice(key, &mut decoded) == Ok(16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6455_section_1_3_vector() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn generated_keys_are_valid_and_differ() {
        let a = generate_key().unwrap();
        let b = generate_key().unwrap();
        assert!(is_valid_key(a.as_bytes()));
        assert!(is_valid_key(b.as_bytes()));
        assert_ne!(a, b);
    }

    #[test]
    fn key_must_be_sixteen_bytes() {
        assert!(is_valid_key(b"dGhlIHNhbXBsZSBub25jZQ=="));
        // 15 and 17 bytes
        assert!(!is_valid_key(STANDARD.encode([0u8; 15]).as_bytes()));
        assert!(!is_valid_key(STANDARD.encode([0u8; 17]).as_bytes()));
        // right length, not base64 / missing padding / non-canonical trailing bits
        assert!(!is_valid_key(b"dGhlIHNhbXBsZSBub25jZQ!!"));
        assert!(!is_valid_key(b"dGhlIHNhbXBsZSBub25jZQAA"));
        assert!(!is_valid_key(b"dGhlIHNhbXBsZSBub25jZR=="));
        assert!(!is_valid_key(b""));
    }
}
