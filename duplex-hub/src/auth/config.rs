//! The `[auth]` section of the hub's configuration.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// The default allowance for clock skew when checking `exp` and `nbf`: 5 seconds.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(5);

/// The shortest HS256 secret accepted, in bytes: the size of the SHA-256 output, as RFC 7518
/// §3.2 requires.
pub const MIN_HMAC_SECRET_LEN: usize = 32;

/// The `[auth]` section of the hub's TOML configuration.
///
/// The default has no keys: only anonymous clients can connect, and any token is refused.
///
/// ```toml
/// [auth]
/// leeway_secs = 5                          # clock skew allowed for exp and nbf, seconds
///
/// [[auth.keys]]                            # tokens without a kid
/// algorithm = "HS256"
/// secret_env = "DUPLEX_JWT_SECRET"         # or secret_file = "/etc/duplex/jwt.secret"
///
/// [[auth.keys]]                            # tokens whose header has kid = "2024-11"
/// kid = "2024-11"
/// algorithm = "RS256"                      # or "ES256", "EdDSA"
/// public_key_file = "/etc/duplex/jwt-2024-11.pem"
/// ```
///
/// Relative paths are relative to the hub's working directory.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// The keys that verify tokens (`[[auth.keys]]`). Empty: authentication is off.
    pub keys: Vec<KeyConfig>,
    /// How far `exp` and `nbf` may be off, to allow for clocks that differ between the token
    /// issuer and the hub. In TOML, `leeway_secs`: whole seconds, 5 by default
    /// ([`DEFAULT_LEEWAY`]).
    #[serde(rename = "leeway_secs", deserialize_with = "duration_from_secs")]
    pub leeway: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            keys: Vec::new(),
            leeway: DEFAULT_LEEWAY,
        }
    }
}

fn duration_from_secs<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    u64::deserialize(deserializer).map(Duration::from_secs)
}

/// One key of `[[auth.keys]]`.
///
/// An `HS256` key takes exactly one of `secret_file` and `secret_env`; an `RS256`, `ES256` or
/// `EdDSA` key takes `public_key_file`. Any other combination is refused by
/// [`Authenticator::new`](super::Authenticator::new).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// The key id. A token whose header has a `kid` is checked only with the key of that `kid`;
    /// a token without `kid` is checked with each key that has none (the first that verifies
    /// wins, which allows rotating keys without kids). Kids must be unique and non-empty.
    #[serde(default)]
    pub kid: Option<String>,
    /// The algorithm of this key. Fixed here, never taken from the token: a token whose header
    /// `alg` differs is refused.
    pub algorithm: KeyAlgorithm,
    /// HS256: a file holding the shared secret, at least [`MIN_HMAC_SECRET_LEN`] bytes, used
    /// as raw bytes. Line endings at its end (`\n`, `\r\n`) are removed.
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// HS256: the name of an environment variable holding the shared secret, as for
    /// `secret_file` (UTF-8, trailing line endings removed).
    #[serde(default)]
    pub secret_env: Option<String>,
    /// RS256, ES256, EdDSA: a PEM file with the public key (`-----BEGIN PUBLIC KEY-----`,
    /// or `-----BEGIN RSA PUBLIC KEY-----` for RS256). RSA keys need at least 2048 bits;
    /// ES256 keys must be on P-256, EdDSA keys Ed25519.
    #[serde(default)]
    pub public_key_file: Option<PathBuf>,
}

impl KeyConfig {
    /// A key of `algorithm` with no kid and no key material; set the fields you need.
    pub fn new(algorithm: KeyAlgorithm) -> Self {
        Self {
            kid: None,
            algorithm,
            secret_file: None,
            secret_env: None,
            public_key_file: None,
        }
    }
}

/// The signature algorithm of a key, spelled as in a JWT header (RFC 7518 §3.1, RFC 8037).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[non_exhaustive]
pub enum KeyAlgorithm {
    /// HMAC with SHA-256 and a shared secret.
    HS256,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// ECDSA on P-256 with SHA-256.
    ES256,
    /// Ed25519.
    EdDSA,
}

impl KeyAlgorithm {
    /// The name, as in a JWT header's `alg`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HS256 => "HS256",
            Self::RS256 => "RS256",
            Self::ES256 => "ES256",
            Self::EdDSA => "EdDSA",
        }
    }

    /// Whether the key is a shared secret rather than a public key.
    pub fn is_symmetric(self) -> bool {
        self == Self::HS256
    }

    pub(crate) fn to_jwt(self) -> jsonwebtoken::Algorithm {
        match self {
            Self::HS256 => jsonwebtoken::Algorithm::HS256,
            Self::RS256 => jsonwebtoken::Algorithm::RS256,
            Self::ES256 => jsonwebtoken::Algorithm::ES256,
            Self::EdDSA => jsonwebtoken::Algorithm::EdDSA,
        }
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_anonymous_only() {
        let config = AuthConfig::default();
        assert!(config.keys.is_empty());
        assert_eq!(config.leeway, Duration::from_secs(5));
        assert_eq!(toml::from_str::<AuthConfig>(""), Ok(config));
    }

    #[test]
    fn parses_the_documented_shape() {
        let config: AuthConfig = toml::from_str(
            r#"
            leeway_secs = 30
            [[keys]]
            algorithm = "HS256"
            secret_env = "DUPLEX_JWT_SECRET"
            [[keys]]
            kid = "2024-11"
            algorithm = "EdDSA"
            public_key_file = "/etc/duplex/jwt.pem"
            "#,
        )
        .expect("valid config");
        assert_eq!(config.leeway, Duration::from_secs(30));
        assert_eq!(config.keys.len(), 2);
        assert_eq!(config.keys[0].algorithm, KeyAlgorithm::HS256);
        assert_eq!(
            config.keys[0].secret_env.as_deref(),
            Some("DUPLEX_JWT_SECRET")
        );
        assert_eq!(config.keys[1].kid.as_deref(), Some("2024-11"));
        assert_eq!(
            config.keys[1].public_key_file,
            Some(PathBuf::from("/etc/duplex/jwt.pem"))
        );
    }

    #[test]
    fn unknown_algorithm_is_refused() {
        let err = toml::from_str::<AuthConfig>("[[keys]]\nalgorithm = \"HS512\"\n")
            .expect_err("HS512 is not supported");
        let msg = err.to_string();
        assert!(msg.contains("HS512"), "{msg}");
        assert!(msg.contains("algorithm"), "{msg}");
        // "none" in particular.
        assert!(toml::from_str::<AuthConfig>("[[keys]]\nalgorithm = \"none\"\n").is_err());
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = toml::from_str::<AuthConfig>("leeway = 5\n").expect_err("leeway_secs");
        assert!(err.to_string().contains("leeway"), "{err}");
        let err =
            toml::from_str::<AuthConfig>("[[keys]]\nalgorithm = \"RS256\"\npublic_key = \"x\"\n")
                .expect_err("public_key_file");
        assert!(err.to_string().contains("public_key"), "{err}");
        assert!(toml::from_str::<AuthConfig>("leeway_secs = -1\n").is_err());
        assert!(toml::from_str::<AuthConfig>("[[keys]]\nkid = \"a\"\n").is_err());
    }
}
