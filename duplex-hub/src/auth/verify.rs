//! Loading keys and verifying tokens.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER;
use jsonwebtoken::DecodingKey;
use serde_json::{Map, Value};

use super::config::MIN_HMAC_SECRET_LEN;
use super::{AuthConfig, AuthConfigError, AuthError, ChannelPattern, KeyAlgorithm, KeyConfig};

/// The longest token [`Authenticator::verify`] looks at, in bytes (16 KiB). Longer ones are
/// refused as malformed before any decoding, which bounds the work a client can cause.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// The smallest RSA modulus accepted, in bits.
const MIN_RSA_BITS: usize = 2048;

/// Verifies tokens with the keys of an [`AuthConfig`].
///
/// Built once at startup by [`Authenticator::new`], which reads every key file then; cloning
/// is cheap (the keys are shared), and it is `Send + Sync`.
#[derive(Clone)]
pub struct Authenticator {
    keys: Arc<[Key]>,
    leeway: Duration,
}

struct Key {
    kid: Option<String>,
    algorithm: KeyAlgorithm,
    decoding: DecodingKey,
}

impl fmt::Debug for Authenticator {
    // Key material stays out of logs; kids and algorithms are enough to tell keys apart.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys: Vec<_> = self
            .keys
            .iter()
            .map(|key| (key.kid.as_deref(), key.algorithm))
            .collect();
        f.debug_struct("Authenticator")
            .field("keys", &keys)
            .field("leeway", &self.leeway)
            .finish()
    }
}

impl Authenticator {
    /// Reads and checks every key of `config`.
    ///
    /// # Errors
    ///
    /// An [`AuthConfigError`] naming the configuration key at fault when a file or environment
    /// variable cannot be read, an HS256 secret is shorter than [`MIN_HMAC_SECRET_LEN`] bytes,
    /// a key lacks its material or has material of another algorithm, a public key is not a
    /// PEM public key of its algorithm (or is an RSA key under 2048 bits), or a kid is empty
    /// or repeated.
    pub fn new(config: &AuthConfig) -> Result<Self, AuthConfigError> {
        let mut keys = Vec::with_capacity(config.keys.len());
        for (index, key) in config.keys.iter().enumerate() {
            let at = format!("auth.keys[{index}]");
            if let Some(kid) = &key.kid {
                if kid.is_empty() {
                    return Err(AuthConfigError::invalid(
                        format!("{at}.kid"),
                        "must not be empty",
                    ));
                }
                if let Some(other) = config.keys[..index]
                    .iter()
                    .position(|other| other.kid.as_ref() == Some(kid))
                {
                    return Err(AuthConfigError::invalid(
                        format!("{at}.kid"),
                        format!("{kid:?} is already the kid of auth.keys[{other}]"),
                    ));
                }
            }
            keys.push(Key {
                kid: key.kid.clone(),
                algorithm: key.algorithm,
                decoding: load_key(&at, key)?,
            });
        }
        Ok(Self {
            keys: keys.into(),
            leeway: config.leeway,
        })
    }

    /// Whether any key is configured. Without keys every token is refused
    /// ([`AuthError::NotConfigured`]) and only anonymous clients can connect.
    pub fn is_enabled(&self) -> bool {
        !self.keys.is_empty()
    }

    /// The clock skew allowed for `exp` and `nbf`.
    pub fn leeway(&self) -> Duration {
        self.leeway
    }

    /// Checks `token` (a compact JWS) and returns whom it identifies.
    ///
    /// The key is chosen by the header's `kid` (see [`KeyConfig::kid`]); the header's `alg`
    /// must be that key's algorithm. `exp` and `nbf` are compared with `now`, not the system
    /// clock, allowing [`leeway`](Self::leeway) either way: the token is valid from
    /// `nbf - leeway` until just before `exp + leeway`.
    ///
    /// # Errors
    ///
    /// An [`AuthError`] saying why the token is refused. Any input, however broken, gives an
    /// error rather than a panic.
    pub fn verify(&self, token: &str, now: SystemTime) -> Result<Identity, AuthError> {
        if self.keys.is_empty() {
            return Err(AuthError::NotConfigured);
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::Malformed("longer than 16 KiB"));
        }
        let mut parts = token.split('.');
        let (Some(header_b64), Some(claims_b64), Some(signature_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed(
                "not three dot-separated parts (header.claims.signature)",
            ));
        };
        let header = Header::parse(header_b64)?;

        let selected: Vec<&Key> = self
            .keys
            .iter()
            .filter(|key| key.kid == header.kid)
            .collect();
        if selected.is_empty() {
            return Err(AuthError::UnknownKey {
                kid: header.kid.map(|kid| truncate(kid, 64)),
            });
        }
        let candidates: Vec<&Key> = selected
            .iter()
            .copied()
            .filter(|key| key.algorithm.as_str() == header.alg)
            .collect();
        if candidates.is_empty() {
            let mut expected: Vec<&str> = Vec::new();
            for key in &selected {
                if !expected.contains(&key.algorithm.as_str()) {
                    expected.push(key.algorithm.as_str());
                }
            }
            return Err(AuthError::WrongAlgorithm {
                found: truncate(header.alg, 32),
                expected: expected.join(" or "),
            });
        }

        let signature = URL_SAFE_NO_PAD
            .decode(signature_b64)
            .map_err(|_| AuthError::Malformed("the signature is not base64url"))?;
        // The signature covers the header and claims exactly as sent (RFC 7515 §5.2). The end
        // is the second '.', so `get` cannot fail; it is only there to rule out a panic.
        let signed = token
            .get(..header_b64.len() + 1 + claims_b64.len())
            .ok_or(AuthError::Malformed("not three dot-separated parts"))?;
        if !candidates
            .iter()
            .any(|key| key.verifies(signed.as_bytes(), &signature))
        {
            return Err(AuthError::InvalidSignature);
        }

        // Only now, with the signature checked, are the claims looked at.
        let claims = URL_SAFE_NO_PAD
            .decode(claims_b64)
            .map_err(|_| AuthError::Malformed("the claims are not base64url"))?;
        let claims: Map<String, Value> = serde_json::from_slice(&claims)
            .map_err(|_| AuthError::Malformed("the claims are not a JSON object"))?;
        Identity::from_claims(claims, now, self.leeway)
    }
}

impl Key {
    fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        match (DEFAULT_PROVIDER.verifier_factory)(&self.algorithm.to_jwt(), &self.decoding) {
            Ok(verifier) => verifier.verify(message, &signature.to_vec()).is_ok(),
            Err(err) => {
                // `new` checked the key, so this is our fault, not the client's.
                tracing::warn!(kid = ?self.kid, algorithm = %self.algorithm, %err, "JWT key unusable");
                false
            }
        }
    }
}

/// The parts of a JOSE header that matter here.
struct Header {
    alg: String,
    kid: Option<String>,
}

impl Header {
    fn parse(encoded: &str) -> Result<Self, AuthError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(encoded)
            .map_err(|_| AuthError::Malformed("the header is not base64url"))?;
        let mut header: Map<String, Value> = serde_json::from_slice(&bytes)
            .map_err(|_| AuthError::Malformed("the header is not a JSON object"))?;
        // RFC 7515 §4.1.11: extensions listed in `crit` must be understood; we know none.
        if header.contains_key("crit") {
            return Err(AuthError::Malformed(
                "the header has critical extensions (crit), which are not supported",
            ));
        }
        let alg = match header.remove("alg") {
            Some(Value::String(alg)) => alg,
            _ => return Err(AuthError::Malformed("the header has no string alg")),
        };
        let kid = match header.remove("kid") {
            None => None,
            Some(Value::String(kid)) => Some(kid),
            Some(_) => return Err(AuthError::Malformed("the header's kid is not a string")),
        };
        Ok(Self { alg, kid })
    }
}

fn truncate(mut text: String, max_chars: usize) -> String {
    if let Some((at, _)) = text.char_indices().nth(max_chars) {
        text.truncate(at);
    }
    text
}

fn load_key(at: &str, key: &KeyConfig) -> Result<DecodingKey, AuthConfigError> {
    let algorithm = key.algorithm;
    if algorithm.is_symmetric() {
        if key.public_key_file.is_some() {
            return Err(AuthConfigError::invalid(
                format!("{at}.public_key_file"),
                format!("{algorithm} keys use secret_file or secret_env, not a public key"),
            ));
        }
        let (field, mut secret) = match (&key.secret_file, &key.secret_env) {
            (Some(_), Some(_)) => {
                return Err(AuthConfigError::invalid(
                    at,
                    "give only one of secret_file and secret_env",
                ))
            }
            (None, None) => {
                return Err(AuthConfigError::invalid(
                    at,
                    format!("{algorithm} needs secret_file or secret_env"),
                ))
            }
            (Some(path), None) => {
                let field = format!("{at}.secret_file");
                let secret = read(&field, path)?;
                (field, secret)
            }
            (None, Some(var)) => {
                let field = format!("{at}.secret_env");
                let secret = match std::env::var(var) {
                    Ok(secret) => secret.into_bytes(),
                    Err(std::env::VarError::NotPresent) => {
                        return Err(AuthConfigError::invalid(
                            field,
                            format!("environment variable {var} is not set"),
                        ))
                    }
                    Err(std::env::VarError::NotUnicode(_)) => {
                        return Err(AuthConfigError::invalid(
                            field,
                            format!("environment variable {var} is not UTF-8"),
                        ))
                    }
                };
                (field, secret)
            }
        };
        // `echo secret > file` and many secret stores add a line ending nobody means.
        while secret.last().is_some_and(|b| matches!(b, b'\n' | b'\r')) {
            secret.pop();
        }
        if secret.len() < MIN_HMAC_SECRET_LEN {
            return Err(AuthConfigError::invalid(
                field,
                format!(
                    "the {algorithm} secret is {} bytes; at least {MIN_HMAC_SECRET_LEN} are needed",
                    secret.len()
                ),
            ));
        }
        return Ok(DecodingKey::from_secret(&secret));
    }

    for (name, set) in [
        ("secret_file", key.secret_file.is_some()),
        ("secret_env", key.secret_env.is_some()),
    ] {
        if set {
            return Err(AuthConfigError::invalid(
                format!("{at}.{name}"),
                format!("{algorithm} keys verify with public_key_file; {name} is for HS256"),
            ));
        }
    }
    let Some(path) = &key.public_key_file else {
        return Err(AuthConfigError::invalid(
            at,
            format!("{algorithm} needs public_key_file"),
        ));
    };
    let field = format!("{at}.public_key_file");
    let pem = read(&field, path)?;
    let not_a_key = |why: String| {
        AuthConfigError::invalid(field.clone(), format!("{} is not {why}", path.display()))
    };
    if pem
        .windows(b"PRIVATE KEY".len())
        .any(|w| w == b"PRIVATE KEY")
    {
        return Err(AuthConfigError::invalid(
            field.clone(),
            format!(
                "{} holds a private key; give the public key (openssl pkey -in KEY -pubout)",
                path.display()
            ),
        ));
    }
    let parse: fn(&[u8]) -> jsonwebtoken::errors::Result<DecodingKey> = match algorithm {
        KeyAlgorithm::RS256 => DecodingKey::from_rsa_pem,
        KeyAlgorithm::ES256 => DecodingKey::from_ec_pem,
        KeyAlgorithm::EdDSA => DecodingKey::from_ed_pem,
        KeyAlgorithm::HS256 => return Err(not_a_key("used: HS256 has no public key".into())),
    };
    let decoding =
        parse(&pem).map_err(|err| not_a_key(format!("a PEM {algorithm} public key ({err})")))?;

    if algorithm == KeyAlgorithm::RS256 {
        // The RustCrypto verifier parses RSA keys at each verification and reports a bad key
        // as a bad signature, so check the key (and its size) here, once.
        let der = decoding
            .try_get_as_bytes()
            .map_err(|err| not_a_key(format!("an RSA public key ({err})")))?;
        let (modulus, _exponent) = (DEFAULT_PROVIDER
            .key_utils
            .rsa_pub_components_from_public_key)(der)
        .map_err(|err| not_a_key(format!("an RSA public key ({err})")))?;
        let bits = modulus
            .iter()
            .position(|&b| b != 0)
            .and_then(|first| {
                let lead = modulus.get(first)?;
                Some((modulus.len() - first) * 8 - lead.leading_zeros() as usize)
            })
            .unwrap_or(0);
        if bits < MIN_RSA_BITS {
            return Err(AuthConfigError::invalid(
                field,
                format!(
                    "{} is a {bits}-bit RSA key; at least {MIN_RSA_BITS} bits are needed",
                    path.display()
                ),
            ));
        }
    } else if let Err(err) = (DEFAULT_PROVIDER.verifier_factory)(&algorithm.to_jwt(), &decoding) {
        // ECDSA and Ed25519 verifiers parse the key when built: a P-384 key given for ES256
        // fails here rather than on every token.
        return Err(not_a_key(format!(
            "a usable {algorithm} public key ({err})"
        )));
    }
    Ok(decoding)
}

fn read(field: &str, path: &Path) -> Result<Vec<u8>, AuthConfigError> {
    std::fs::read(path).map_err(|error| AuthConfigError::Read {
        key: field.to_owned(),
        path: path.to_owned(),
        error,
    })
}

/// Who a verified token says the client is, and what it grants.
#[derive(Clone, Debug, PartialEq)]
pub struct Identity {
    /// The user id: the `sub` claim (may be empty for an authenticated but unnamed client).
    pub user: String,
    /// The `info` claim, a JSON object shown in presence and publication `info`.
    pub info: Option<Value>,
    /// The `exp` claim: when the token expires, in seconds since the Unix epoch.
    pub expires_at: u64,
    /// Channels the token lets the client subscribe to, beyond the namespace rules
    /// (`channels.subscribe`).
    pub subscribe: Vec<ChannelPattern>,
    /// Channels the token lets the client publish to, beyond the namespace rules
    /// (`channels.publish`).
    pub publish: Vec<ChannelPattern>,
    /// Every claim of the token, for namespace rules such as `{claim = "role", equals =
    /// "admin"}`.
    pub claims: Map<String, Value>,
}

impl Identity {
    /// Whether the token grants subscribing to `channel`.
    pub fn may_subscribe(&self, channel: &str) -> bool {
        self.subscribe.iter().any(|p| p.matches(channel))
    }

    /// Whether the token grants publishing to `channel`.
    pub fn may_publish(&self, channel: &str) -> bool {
        self.publish.iter().any(|p| p.matches(channel))
    }

    /// The claim called `name`, if the token has it.
    pub fn claim(&self, name: &str) -> Option<&Value> {
        self.claims.get(name)
    }

    /// How long until the token expires (`exp`, without leeway), zero if it has. For the timer
    /// that closes the connection with 4003.
    pub fn expires_in(&self, now: SystemTime) -> Duration {
        let now = now.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        Duration::from_secs(self.expires_at).saturating_sub(now)
    }

    fn from_claims(
        claims: Map<String, Value>,
        now: SystemTime,
        leeway: Duration,
    ) -> Result<Self, AuthError> {
        let expires_at = numeric_date(&claims, "exp")?.ok_or(AuthError::MissingClaim("exp"))?;
        let not_before = numeric_date(&claims, "nbf")?;
        let user = match claims.get("sub") {
            Some(Value::String(sub)) => sub.clone(),
            Some(_) => return Err(AuthError::InvalidClaim("sub", "must be a string")),
            None => return Err(AuthError::MissingClaim("sub")),
        };
        let info = match claims.get("info") {
            None | Some(Value::Null) => None,
            Some(info @ Value::Object(_)) => Some(info.clone()),
            Some(_) => return Err(AuthError::InvalidClaim("info", "must be a JSON object")),
        };
        let (subscribe, publish) = grants(claims.get("channels"))?;

        // Sub-second precision on our side: a token with exp = T is refused from T + leeway.
        let now = now.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        if now >= Duration::from_secs(expires_at).saturating_add(leeway) {
            return Err(AuthError::Expired);
        }
        if let Some(nbf) = not_before {
            if now.saturating_add(leeway) < Duration::from_secs(nbf) {
                return Err(AuthError::NotYetValid);
            }
        }
        Ok(Self {
            user,
            info,
            expires_at,
            subscribe,
            publish,
            claims,
        })
    }
}

/// Reads a NumericDate claim (RFC 7519 §2): seconds since the epoch, fractions dropped.
fn numeric_date(claims: &Map<String, Value>, name: &'static str) -> Result<Option<u64>, AuthError> {
    const INVALID: &str = "must be a non-negative number of seconds since the epoch";
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => match (n.as_u64(), n.as_f64()) {
            (Some(secs), _) => Ok(Some(secs)),
            // `as` saturates, so 1e300 becomes u64::MAX: far future, which is what it says.
            (None, Some(secs)) if secs.is_finite() && secs >= 0.0 => Ok(Some(secs as u64)),
            _ => Err(AuthError::InvalidClaim(name, INVALID)),
        },
        Some(_) => Err(AuthError::InvalidClaim(name, INVALID)),
    }
}

type Grants = (Vec<ChannelPattern>, Vec<ChannelPattern>);

fn grants(channels: Option<&Value>) -> Result<Grants, AuthError> {
    const INVALID: &str = r#"must be {"subscribe": [patterns], "publish": [patterns]}"#;
    let channels = match channels {
        None | Some(Value::Null) => return Ok((Vec::new(), Vec::new())),
        Some(Value::Object(channels)) => channels,
        Some(_) => return Err(AuthError::InvalidClaim("channels", INVALID)),
    };
    let list = |name: &str| match channels.get(name) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(pattern) => Ok(ChannelPattern::new(pattern.as_str())),
                _ => Err(AuthError::InvalidClaim("channels", INVALID)),
            })
            .collect(),
        Some(_) => Err(AuthError::InvalidClaim("channels", INVALID)),
    };
    Ok((list("subscribe")?, list("publish")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(json: &str) -> Map<String, Value> {
        serde_json::from_str(json).expect("test claims are valid JSON")
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn authenticator_is_send_sync_clone() {
        fn check<T: Send + Sync + Clone + 'static>() {}
        check::<Authenticator>();
        check::<Identity>();
    }

    #[test]
    fn exp_boundaries() {
        let c = claims(r#"{"sub": "1", "exp": 100}"#);
        let leeway = Duration::from_secs(5);
        assert!(Identity::from_claims(c.clone(), at(99), Duration::ZERO).is_ok());
        assert_eq!(
            Identity::from_claims(c.clone(), at(100), Duration::ZERO),
            Err(AuthError::Expired)
        );
        assert!(Identity::from_claims(c.clone(), at(104), leeway).is_ok());
        assert_eq!(
            Identity::from_claims(c, at(105), leeway),
            Err(AuthError::Expired)
        );
    }

    #[test]
    fn nbf_boundaries() {
        let c = claims(r#"{"sub": "1", "exp": 1000, "nbf": 100}"#);
        let leeway = Duration::from_secs(5);
        assert!(Identity::from_claims(c.clone(), at(100), Duration::ZERO).is_ok());
        assert_eq!(
            Identity::from_claims(c.clone(), at(99), Duration::ZERO),
            Err(AuthError::NotYetValid)
        );
        assert!(Identity::from_claims(c.clone(), at(95), leeway).is_ok());
        assert_eq!(
            Identity::from_claims(c, at(94), leeway),
            Err(AuthError::NotYetValid)
        );
    }

    #[test]
    fn claim_types_are_checked() {
        let check = |json: &str| Identity::from_claims(claims(json), at(0), Duration::ZERO);
        assert_eq!(
            check(r#"{"sub": "1"}"#),
            Err(AuthError::MissingClaim("exp"))
        );
        assert_eq!(check(r#"{"exp": 10}"#), Err(AuthError::MissingClaim("sub")));
        assert!(matches!(
            check(r#"{"sub": 1, "exp": 10}"#),
            Err(AuthError::InvalidClaim("sub", _))
        ));
        assert!(matches!(
            check(r#"{"sub": "", "exp": "10"}"#),
            Err(AuthError::InvalidClaim("exp", _))
        ));
        assert!(matches!(
            check(r#"{"sub": "", "exp": -1}"#),
            Err(AuthError::InvalidClaim("exp", _))
        ));
        assert!(matches!(
            check(r#"{"sub": "", "exp": 10, "nbf": true}"#),
            Err(AuthError::InvalidClaim("nbf", _))
        ));
        assert!(matches!(
            check(r#"{"sub": "", "exp": 10, "info": [1]}"#),
            Err(AuthError::InvalidClaim("info", _))
        ));
        assert!(matches!(
            check(r#"{"sub": "", "exp": 10, "channels": []}"#),
            Err(AuthError::InvalidClaim("channels", _))
        ));
        assert!(matches!(
            check(r#"{"sub": "", "exp": 10, "channels": {"publish": ["a", 1]}}"#),
            Err(AuthError::InvalidClaim("channels", _))
        ));
        // Fractional and huge dates are fine.
        assert_eq!(
            check(r#"{"sub": "", "exp": 10.7}"#).map(|i| i.expires_at),
            Ok(10)
        );
        assert_eq!(
            check(r#"{"sub": "", "exp": 1e300}"#).map(|i| i.expires_at),
            Ok(u64::MAX)
        );
    }

    #[test]
    fn identity_fields() {
        let id = Identity::from_claims(
            claims(
                r#"{"sub": "42", "exp": 100, "role": "admin", "info": {"name": "Ann"},
                    "channels": {"subscribe": ["chat:*"], "publish": ["chat:lobby"], "x": 1}}"#,
            ),
            at(40),
            Duration::ZERO,
        )
        .expect("valid claims");
        assert_eq!(id.user, "42");
        assert_eq!(id.expires_at, 100);
        assert_eq!(id.expires_in(at(40)), Duration::from_secs(60));
        assert_eq!(id.expires_in(at(200)), Duration::ZERO);
        assert_eq!(id.info, Some(serde_json::json!({"name": "Ann"})));
        assert_eq!(id.claim("role"), Some(&Value::from("admin")));
        assert_eq!(id.claim("nope"), None);
        assert!(id.may_subscribe("chat:anything"));
        assert!(!id.may_subscribe("news"));
        assert!(id.may_publish("chat:lobby"));
        assert!(!id.may_publish("chat:other"));
    }

    #[test]
    fn truncates_on_char_boundaries() {
        assert_eq!(truncate("ééé".into(), 2), "éé");
        assert_eq!(truncate("ab".into(), 5), "ab");
    }
}
