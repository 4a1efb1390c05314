//! Errors of the `[auth]` configuration and of token verification.

use std::io;
use std::path::PathBuf;

use super::request::TokenSource;

/// The `[auth]` configuration cannot be used. Returned by
/// [`Authenticator::new`](super::Authenticator::new), which the hub calls once at startup.
///
/// The message starts with the configuration key at fault, such as
/// `auth.keys[1].public_key_file: cannot read /etc/duplex/jwt.pem: No such file or directory
/// (os error 2)`. Secrets never appear in it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthConfigError {
    /// A key or secret file could not be read.
    #[error("{key}: cannot read {}: {error}", path.display())]
    Read {
        /// The configuration key, such as `auth.keys[0].secret_file`.
        key: String,
        /// The file named by it.
        path: PathBuf,
        /// Why it could not be read.
        error: io::Error,
    },
    /// A value is missing, conflicts with another or is unusable.
    #[error("{key}: {message}")]
    Invalid {
        /// The configuration key, such as `auth.keys[0]` or `auth.keys[2].kid`.
        key: String,
        /// What is wrong, in words.
        message: String,
    },
}

impl AuthConfigError {
    /// The configuration key at fault, such as `auth.keys[1].public_key_file`.
    pub fn key(&self) -> &str {
        match self {
            Self::Read { key, .. } | Self::Invalid { key, .. } => key,
        }
    }

    pub(crate) fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Why a token, or the way a request carries it, was refused.
///
/// These are the client's problems: log them at `debug`. Every one means HTTP 401 at the
/// handshake (protocol §1) and error 101 in `connect` (closing with 4501), except that an
/// expired token is error 109 there ([`AuthError::is_expired`]). Messages are safe to send to the
/// client: they quote at most a short, escaped piece of the token's header, never a secret.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The token is not a well-formed signed JWT (three base64url parts, JSON header and
    /// claims), or is longer than [`MAX_TOKEN_LEN`](super::MAX_TOKEN_LEN).
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// No key is configured, so no token can be accepted (only anonymous clients).
    #[error("token authentication is not configured on this server")]
    NotConfigured,
    /// No configured key may check this token: its `kid` is unknown, or it has no `kid` and
    /// every key has one.
    #[error("{}", match kid {
        Some(kid) => format!("no key with kid {kid:?} is configured"),
        None => "the token has no kid and every configured key has one".to_owned(),
    })]
    UnknownKey {
        /// The token's `kid`, cut to 64 characters.
        kid: Option<String>,
    },
    /// The token's `alg` is not the algorithm of the key(s) it selects.
    #[error("token algorithm {found:?} is not allowed here (expected {expected})")]
    WrongAlgorithm {
        /// The token's `alg`, cut to 32 characters.
        found: String,
        /// The algorithm(s) of the selected keys, such as `RS256` or `RS256 or EdDSA`.
        expected: String,
    },
    /// The signature does not verify with any selected key.
    #[error("invalid token signature")]
    InvalidSignature,
    /// `exp` has passed, beyond the leeway.
    #[error("token expired")]
    Expired,
    /// `nbf` is still in the future, beyond the leeway.
    #[error("token not yet valid (nbf is in the future)")]
    NotYetValid,
    /// A required claim is absent (`exp` or `sub`).
    #[error("token lacks the required claim {0:?}")]
    MissingClaim(&'static str),
    /// A claim has the wrong type: the claim's name, then what it must be.
    #[error("token claim {0:?} {1}")]
    InvalidClaim(&'static str, &'static str),
    /// The `Authorization` header does not use the `Bearer` scheme.
    #[error("the Authorization header must be \"Bearer <jwt>\"")]
    NotBearer,
    /// The request holds different tokens in two places.
    #[error("different tokens in the {first} and the {second}")]
    ConflictingTokens {
        /// Where the first token was found.
        first: TokenSource,
        /// Where a different one was found.
        second: TokenSource,
    },
    /// A place meant for a token holds something unusable (an empty token, or bytes that are
    /// not text).
    #[error("unusable token in the {place}: {reason}")]
    BadTokenField {
        /// Where.
        place: TokenSource,
        /// What is wrong.
        reason: &'static str,
    },
}

impl AuthError {
    /// Whether the token was refused only because it expired: the client should fetch a new
    /// one (protocol error 109, close code 4003).
    pub fn is_expired(&self) -> bool {
        matches!(self, Self::Expired)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_read_well() {
        let e = AuthError::UnknownKey {
            kid: Some("k\n1".into()),
        };
        assert_eq!(e.to_string(), r#"no key with kid "k\n1" is configured"#);
        let e = AuthError::WrongAlgorithm {
            found: "HS256".into(),
            expected: "RS256".into(),
        };
        assert_eq!(
            e.to_string(),
            r#"token algorithm "HS256" is not allowed here (expected RS256)"#
        );
        let e = AuthError::ConflictingTokens {
            first: TokenSource::Header,
            second: TokenSource::Query,
        };
        assert_eq!(
            e.to_string(),
            "different tokens in the Authorization header and the token query parameter"
        );
        assert_eq!(
            AuthError::MissingClaim("exp").to_string(),
            r#"token lacks the required claim "exp""#
        );
        assert!(AuthError::Expired.is_expired());
        assert!(!AuthError::NotYetValid.is_expired());
    }

    #[test]
    fn config_error_names_the_key() {
        let e = AuthConfigError::Read {
            key: "auth.keys[1].public_key_file".into(),
            path: "/x/y.pem".into(),
            error: io::Error::from(io::ErrorKind::NotFound),
        };
        assert!(e
            .to_string()
            .starts_with("auth.keys[1].public_key_file: cannot read /x/y.pem: "));
        assert_eq!(e.key(), "auth.keys[1].public_key_file");
    }
}
