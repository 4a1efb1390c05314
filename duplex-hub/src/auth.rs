//! JWT authentication at connect (protocol §1 and §6).
//!
//! A client may present a JSON Web Token at the WebSocket handshake (an `Authorization: Bearer`
//! header, a `token` query parameter or a `duplex.token.<jwt>` subprotocol entry; see
//! [`token_from_request`]) or in its `connect` command. [`Authenticator::verify`] checks it
//! against the keys of the `[auth]` configuration ([`AuthConfig`]) and yields the client's
//! [`Identity`]: its user id, `info`, expiry and channel grants.
//!
//! The rules, in short:
//!
//! * The algorithm of every key is fixed by the configuration (`HS256`, `RS256`, `ES256` or
//!   `EdDSA`) and never taken from the token: a token whose header `alg` differs from its key's
//!   is refused with [`AuthError::WrongAlgorithm`]. This is what stops the "alg confusion"
//!   attack, where an HS256 token is signed with the bytes of a server's RSA public key.
//! * A token whose header has a `kid` is checked only with the key of that `kid`; a token
//!   without `kid` is checked with each key that has no `kid` (so keys can be rotated).
//! * `exp` and `sub` are required, `nbf` is honoured when present; `exp` and `nbf` are compared
//!   with the `now` passed to [`Authenticator::verify`], allowing [`AuthConfig::leeway`] of clock
//!   skew either way.
//! * An `aud` or `iss` claim is not checked (the hub has no audience or issuer setting yet).
//!
//! ```
//! use std::time::SystemTime;
//! use duplex_hub::auth::{AuthConfig, Authenticator};
//!
//! let config: AuthConfig = toml::from_str("leeway_secs = 5").unwrap();
//! let auth = Authenticator::new(&config).unwrap();
//! assert!(!auth.is_enabled()); // no keys: only anonymous clients
//! assert!(auth.verify("a.b.c", SystemTime::now()).is_err());
//! ```

mod config;
mod error;
mod pattern;
mod request;
mod verify;

pub use config::{AuthConfig, KeyAlgorithm, KeyConfig, DEFAULT_LEEWAY, MIN_HMAC_SECRET_LEN};
pub use error::{AuthConfigError, AuthError};
pub use pattern::ChannelPattern;
pub use request::{token_from_request, TokenSource, SUBPROTOCOL_TOKEN_PREFIX};
pub use verify::{Authenticator, Identity, MAX_TOKEN_LEN};
