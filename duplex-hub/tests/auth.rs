//! JWT authentication with real keys: tokens are signed with the test fixtures in
//! `tests/keys/` (see its README) and checked by `duplex_hub::auth::Authenticator`.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use duplex_hub::auth::{
    token_from_request, AuthConfig, AuthConfigError, AuthError, Authenticator, KeyAlgorithm,
    KeyConfig, TokenSource,
};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

/// The tests' "now": 2027-01-15.
const NOW: u64 = 1_800_000_000;

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW)
}

fn key_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/keys")
        .join(name)
}

fn read_key(name: &str) -> Vec<u8> {
    std::fs::read(key_path(name)).expect("test key fixture exists")
}

/// The HS256 fixture secret without its trailing newline, as the hub uses it.
fn hs_secret() -> Vec<u8> {
    let mut secret = read_key("hs256_secret.txt");
    assert_eq!(secret.pop(), Some(b'\n'), "the fixture ends with a newline");
    secret
}

fn hs_key() -> KeyConfig {
    KeyConfig {
        secret_file: Some(key_path("hs256_secret.txt")),
        ..KeyConfig::new(KeyAlgorithm::HS256)
    }
}

fn public_key(algorithm: KeyAlgorithm, file: &str) -> KeyConfig {
    KeyConfig {
        public_key_file: Some(key_path(file)),
        ..KeyConfig::new(algorithm)
    }
}

fn with_kid(kid: &str, key: KeyConfig) -> KeyConfig {
    KeyConfig {
        kid: Some(kid.to_owned()),
        ..key
    }
}

fn authenticator(keys: Vec<KeyConfig>) -> Authenticator {
    Authenticator::new(&AuthConfig {
        keys,
        ..AuthConfig::default()
    })
    .expect("valid test config")
}

fn config_error(keys: Vec<KeyConfig>) -> String {
    let err = Authenticator::new(&AuthConfig {
        keys,
        ..AuthConfig::default()
    })
    .expect_err("config must be refused");
    err.to_string()
}

enum Signer<'a> {
    Secret(&'a [u8]),
    Pem(&'a str),
}

fn sign(alg: Algorithm, kid: Option<&str>, signer: Signer<'_>, claims: &Value) -> String {
    let key = match signer {
        Signer::Secret(secret) => EncodingKey::from_secret(secret),
        Signer::Pem(file) => {
            let pem = read_key(file);
            match alg {
                Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem),
                Algorithm::ES256 => EncodingKey::from_ec_pem(&pem),
                Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem),
                other => panic!("no PEM signer for {other:?} in these tests"),
            }
            .expect("test private key parses")
        }
    };
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    encode(&header, claims, &key).expect("signing works")
}

fn claims() -> Value {
    json!({"sub": "42", "exp": NOW + 60})
}

/// A token from raw header and claims JSON, with an arbitrary signature.
fn unsigned(header: &str, claims: &str, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

// ---- accepted tokens -------------------------------------------------------------------------

#[test]
fn accepts_hs256() {
    let auth = authenticator(vec![hs_key()]);
    let token = sign(
        Algorithm::HS256,
        None,
        Signer::Secret(&hs_secret()),
        &claims(),
    );
    let id = auth.verify(&token, now()).expect("valid HS256 token");
    assert_eq!(id.user, "42");
    assert_eq!(id.expires_at, NOW + 60);
}

#[test]
fn accepts_hs256_secret_from_env() {
    let var = "DUPLEX_HUB_TEST_AUTH_SECRET_ENV";
    let secret = "an environment secret of at least 32 bytes";
    std::env::set_var(var, format!("{secret}\n"));
    let auth = authenticator(vec![KeyConfig {
        secret_env: Some(var.to_owned()),
        ..KeyConfig::new(KeyAlgorithm::HS256)
    }]);
    let token = sign(
        Algorithm::HS256,
        None,
        Signer::Secret(secret.as_bytes()),
        &claims(),
    );
    assert!(auth.verify(&token, now()).is_ok());
}

#[test]
fn hs256_secret_file_loses_only_its_trailing_newline() {
    let auth = authenticator(vec![hs_key()]);
    let with_newline = read_key("hs256_secret.txt");
    let token = sign(
        Algorithm::HS256,
        None,
        Signer::Secret(&with_newline),
        &claims(),
    );
    assert_eq!(auth.verify(&token, now()), Err(AuthError::InvalidSignature));
}

#[test]
fn accepts_rs256() {
    let auth = authenticator(vec![public_key(KeyAlgorithm::RS256, "rsa_public.pem")]);
    let token = sign(
        Algorithm::RS256,
        None,
        Signer::Pem("rsa_private.pem"),
        &claims(),
    );
    assert_eq!(
        auth.verify(&token, now()).map(|id| id.user),
        Ok("42".to_owned())
    );
}

#[test]
fn accepts_es256() {
    let auth = authenticator(vec![public_key(KeyAlgorithm::ES256, "ec_public.pem")]);
    let token = sign(
        Algorithm::ES256,
        None,
        Signer::Pem("ec_private.pem"),
        &claims(),
    );
    assert_eq!(
        auth.verify(&token, now()).map(|id| id.user),
        Ok("42".to_owned())
    );
}

#[test]
fn accepts_eddsa() {
    let auth = authenticator(vec![public_key(KeyAlgorithm::EdDSA, "ed25519_public.pem")]);
    let token = sign(
        Algorithm::EdDSA,
        None,
        Signer::Pem("ed25519_private.pem"),
        &claims(),
    );
    assert_eq!(
        auth.verify(&token, now()).map(|id| id.user),
        Ok("42".to_owned())
    );
}

#[test]
fn identity_carries_info_grants_and_claims() {
    let auth = authenticator(vec![public_key(KeyAlgorithm::EdDSA, "ed25519_public.pem")]);
    let token = sign(
        Algorithm::EdDSA,
        None,
        Signer::Pem("ed25519_private.pem"),
        &json!({
            "sub": "",
            "exp": NOW + 3600,
            "nbf": NOW - 10,
            "role": "admin",
            "info": {"name": "Ann"},
            "channels": {"subscribe": ["chat:*", "user:42"], "publish": ["chat:lobby"]}
        }),
    );
    let id = auth.verify(&token, now()).expect("valid token");
    assert_eq!(
        id.user, "",
        "an empty sub is an authenticated, unnamed client"
    );
    assert_eq!(id.info, Some(json!({"name": "Ann"})));
    assert_eq!(id.claim("role"), Some(&json!("admin")));
    assert!(id.may_subscribe("chat:lobby"));
    assert!(id.may_subscribe("user:42"));
    assert!(!id.may_subscribe("user:43"));
    assert!(id.may_publish("chat:lobby"));
    assert!(!id.may_publish("chat:other"));
    assert_eq!(id.expires_in(now()), Duration::from_secs(3600));
}

// ---- time ------------------------------------------------------------------------------------

#[test]
fn refuses_expired() {
    let auth = authenticator(vec![hs_key()]);
    let token = sign(
        Algorithm::HS256,
        None,
        Signer::Secret(&hs_secret()),
        &json!({"sub": "1", "exp": NOW - 10}),
    );
    let err = auth.verify(&token, now()).expect_err("expired");
    assert_eq!(err, AuthError::Expired);
    assert!(err.is_expired());
}

#[test]
fn accepts_expired_within_leeway() {
    let auth = authenticator(vec![hs_key()]); // default leeway: 5 s
    assert_eq!(auth.leeway(), Duration::from_secs(5));
    let token = sign(
        Algorithm::HS256,
        None,
        Signer::Secret(&hs_secret()),
        &json!({"sub": "1", "exp": NOW - 3}),
    );
    assert!(auth.verify(&token, now()).is_ok());
    // The same token, 3 s later, is past the leeway.
    let later = now() + Duration::from_secs(3);
    assert_eq!(auth.verify(&token, later), Err(AuthError::Expired));
}

#[test]
fn zero_leeway_is_exact() {
    let config: AuthConfig = toml::from_str(&format!(
        "leeway_secs = 0\n[[keys]]\nalgorithm = \"HS256\"\nsecret_file = {:?}\n",
        key_path("hs256_secret.txt")
    ))
    .expect("valid TOML");
    let auth = Authenticator::new(&config).expect("valid config");
    let token = sign(
        Algorithm::HS256,
        None,
        Signer::Secret(&hs_secret()),
        &json!({"sub": "1", "exp": NOW}),
    );
    assert_eq!(auth.verify(&token, now()), Err(AuthError::Expired));
    assert!(auth
        .verify(&token, now() - Duration::from_millis(1))
        .is_ok());
}

#[test]
fn refuses_nbf_in_the_future() {
    let auth = authenticator(vec![hs_key()]);
    let token = sign(
        Algorithm::HS256,
        None,
        Signer::Secret(&hs_secret()),
        &json!({"sub": "1", "exp": NOW + 600, "nbf": NOW + 60}),
    );
    assert_eq!(auth.verify(&token, now()), Err(AuthError::NotYetValid));
    // Within the leeway it is fine.
    assert!(auth.verify(&token, now() + Duration::from_secs(56)).is_ok());
}

// ---- algorithm and key -----------------------------------------------------------------------

#[test]
fn refuses_hs256_token_for_rs256_key() {
    let auth = authenticator(vec![public_key(KeyAlgorithm::RS256, "rsa_public.pem")]);
    let token = sign(
        Algorithm::HS256,
        None,
        Signer::Secret(&hs_secret()),
        &claims(),
    );
    assert_eq!(
        auth.verify(&token, now()),
        Err(AuthError::WrongAlgorithm {
            found: "HS256".into(),
            expected: "RS256".into()
        })
    );
}

#[test]
fn refuses_alg_confusion_with_rsa_public_key_as_hmac_secret() {
    // The classic attack: the public key is public, so an attacker can HMAC with its bytes
    // and hope the server verifies with "the key" using the token's own alg.
    let auth = authenticator(vec![public_key(KeyAlgorithm::RS256, "rsa_public.pem")]);
    let public_pem = read_key("rsa_public.pem");
    for secret in [public_pem.as_slice(), public_pem.trim_ascii_end()] {
        let token = sign(Algorithm::HS256, None, Signer::Secret(secret), &claims());
        assert!(matches!(
            auth.verify(&token, now()),
            Err(AuthError::WrongAlgorithm { .. })
        ));
    }
}

#[test]
fn refuses_other_asymmetric_algorithms() {
    let auth = authenticator(vec![public_key(KeyAlgorithm::EdDSA, "ed25519_public.pem")]);
    let token = sign(
        Algorithm::ES256,
        None,
        Signer::Pem("ec_private.pem"),
        &claims(),
    );
    assert!(matches!(
        auth.verify(&token, now()),
        Err(AuthError::WrongAlgorithm { .. })
    ));
}

#[test]
fn refuses_alg_none() {
    let auth = authenticator(vec![hs_key()]);
    let token = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(claims().to_string())
    );
    assert_eq!(
        auth.verify(&token, now()),
        Err(AuthError::WrongAlgorithm {
            found: "none".into(),
            expected: "HS256".into()
        })
    );
}

#[test]
fn refuses_token_signed_by_another_key() {
    let auth = authenticator(vec![public_key(KeyAlgorithm::RS256, "rsa_public.pem")]);
    let token = sign(
        Algorithm::RS256,
        None,
        Signer::Pem("rsa2_private.pem"),
        &claims(),
    );
    assert_eq!(auth.verify(&token, now()), Err(AuthError::InvalidSignature));

    let auth = authenticator(vec![public_key(KeyAlgorithm::ES256, "ec_public.pem")]);
    let token = sign(
        Algorithm::ES256,
        None,
        Signer::Pem("ec2_private.pem"),
        &claims(),
    );
    assert_eq!(auth.verify(&token, now()), Err(AuthError::InvalidSignature));

    let auth = authenticator(vec![hs_key()]);
    let other = b"another secret that is long enough!!";
    let token = sign(Algorithm::HS256, None, Signer::Secret(other), &claims());
    assert_eq!(auth.verify(&token, now()), Err(AuthError::InvalidSignature));
}

#[test]
fn refuses_tampered_claims() {
    let auth = authenticator(vec![public_key(KeyAlgorithm::ES256, "ec_public.pem")]);
    let token = sign(
        Algorithm::ES256,
        None,
        Signer::Pem("ec_private.pem"),
        &claims(),
    );
    let parts: Vec<&str> = token.split('.').collect();
    let forged = URL_SAFE_NO_PAD.encode(json!({"sub": "admin", "exp": NOW + 60}).to_string());
    let tampered = format!("{}.{}.{}", parts[0], forged, parts[2]);
    assert_eq!(
        auth.verify(&tampered, now()),
        Err(AuthError::InvalidSignature)
    );
}

#[test]
fn every_single_character_change_is_refused() {
    let auth = authenticator(vec![
        hs_key(),
        with_kid("ec", public_key(KeyAlgorithm::ES256, "ec_public.pem")),
    ]);
    let tokens = [
        sign(
            Algorithm::HS256,
            None,
            Signer::Secret(&hs_secret()),
            &claims(),
        ),
        sign(
            Algorithm::ES256,
            Some("ec"),
            Signer::Pem("ec_private.pem"),
            &claims(),
        ),
    ];
    for token in tokens {
        assert!(auth.verify(&token, now()).is_ok());
        for i in 0..token.len() {
            for replacement in ['A', 'x', '-', '_', '.', '='] {
                let mut bytes = token.clone().into_bytes();
                if bytes[i] == replacement as u8 {
                    continue;
                }
                bytes[i] = replacement as u8;
                let mutated = String::from_utf8(bytes).expect("ASCII");
                assert!(
                    auth.verify(&mutated, now()).is_err(),
                    "accepted {mutated} (changed byte {i})"
                );
            }
        }
    }
}

// ---- claims ----------------------------------------------------------------------------------

#[test]
fn refuses_missing_exp() {
    let auth = authenticator(vec![public_key(KeyAlgorithm::RS256, "rsa_public.pem")]);
    let token = sign(
        Algorithm::RS256,
        None,
        Signer::Pem("rsa_private.pem"),
        &json!({"sub": "1"}),
    );
    assert_eq!(
        auth.verify(&token, now()),
        Err(AuthError::MissingClaim("exp"))
    );
}

#[test]
fn refuses_missing_sub() {
    let auth = authenticator(vec![hs_key()]);
    let token = sign(
        Algorithm::HS256,
        None,
        Signer::Secret(&hs_secret()),
        &json!({"exp": NOW + 60, "name": "x"}),
    );
    assert_eq!(
        auth.verify(&token, now()),
        Err(AuthError::MissingClaim("sub"))
    );
}

#[test]
fn refuses_signed_claims_that_are_not_an_object() {
    let auth = authenticator(vec![hs_key()]);
    let token = sign(
        Algorithm::HS256,
        None,
        Signer::Secret(&hs_secret()),
        &json!([1, 2]),
    );
    assert!(matches!(
        auth.verify(&token, now()),
        Err(AuthError::Malformed(_))
    ));
}

// ---- malformed input -------------------------------------------------------------------------

#[test]
fn garbage_is_refused_without_panic() {
    let auth = authenticator(vec![
        hs_key(),
        public_key(KeyAlgorithm::RS256, "rsa_public.pem"),
        with_kid("ed", public_key(KeyAlgorithm::EdDSA, "ed25519_public.pem")),
    ]);
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256"}"#);
    let long = "a".repeat(20_000);
    let inputs = [
        String::new(),
        ".".into(),
        "..".into(),
        "...".into(),
        "a.b.c".into(),
        "a.b.c.d".into(),
        "not a token".into(),
        "é.ü.日本".into(),
        "\0\0\0".into(),
        format!("{header}.."),
        format!("{header}.!!!.sig"),
        format!("{header}.e30.%%%"),
        format!("{header}=.e30.AAAA"),
        format!("{long}.{long}.{long}"),
        unsigned("[]", "{}", b"x"),
        unsigned("{", "{}", b"x"),
        unsigned(r#"{"alg":5}"#, "{}", b"x"),
        unsigned(r#"{"alg":"RS256","kid":7}"#, "{}", b"x"),
        unsigned(r#"{"alg":"RS256"}"#, "{}", b""),
        unsigned(r#"{"alg":"RS256"}"#, "{}", &[0; 256]),
        unsigned(r#"{"alg":"EdDSA","kid":"ed"}"#, "{}", &[0xff; 64]),
        unsigned(r#"{"alg":"EdDSA","kid":"ed"}"#, "{}", &[1; 3]),
        unsigned(r#"{"alg":"HS256","crit":["b64"]}"#, "{}", b"x"),
    ];
    for input in &inputs {
        let result = auth.verify(input, now());
        assert!(result.is_err(), "accepted {input:?}");
        // Every refusal has a readable message.
        assert!(!result.unwrap_err().to_string().is_empty());
    }
    assert!(matches!(
        auth.verify("", now()),
        Err(AuthError::Malformed(_))
    ));
}

#[test]
fn overlong_kid_and_alg_are_cut_in_errors() {
    let auth = authenticator(vec![hs_key()]);
    let header = json!({"alg": "X".repeat(1000), "kid": "k".repeat(1000)}).to_string();
    match auth.verify(&unsigned(&header, "{}", b"x"), now()) {
        Err(AuthError::UnknownKey { kid: Some(kid) }) => assert_eq!(kid.len(), 64),
        other => panic!("expected UnknownKey, got {other:?}"),
    }
    let header = json!({"alg": "X".repeat(1000)}).to_string();
    match auth.verify(&unsigned(&header, "{}", b"x"), now()) {
        Err(AuthError::WrongAlgorithm { found, .. }) => assert_eq!(found.len(), 32),
        other => panic!("expected WrongAlgorithm, got {other:?}"),
    }
}

#[test]
fn no_keys_means_no_tokens() {
    let auth = Authenticator::new(&AuthConfig::default()).expect("default config");
    assert!(!auth.is_enabled());
    let token = sign(
        Algorithm::HS256,
        None,
        Signer::Secret(&hs_secret()),
        &claims(),
    );
    assert_eq!(auth.verify(&token, now()), Err(AuthError::NotConfigured));
    assert!(authenticator(vec![hs_key()]).is_enabled());
}

// ---- kid selection ---------------------------------------------------------------------------

#[test]
fn kid_selects_the_key() {
    let auth = authenticator(vec![
        with_kid("rsa", public_key(KeyAlgorithm::RS256, "rsa_public.pem")),
        with_kid("ec", public_key(KeyAlgorithm::ES256, "ec_public.pem")),
        hs_key(),
    ]);
    let rsa = sign(
        Algorithm::RS256,
        Some("rsa"),
        Signer::Pem("rsa_private.pem"),
        &claims(),
    );
    let ec = sign(
        Algorithm::ES256,
        Some("ec"),
        Signer::Pem("ec_private.pem"),
        &claims(),
    );
    let hs = sign(
        Algorithm::HS256,
        None,
        Signer::Secret(&hs_secret()),
        &claims(),
    );
    assert!(auth.verify(&rsa, now()).is_ok());
    assert!(auth.verify(&ec, now()).is_ok());
    assert!(auth.verify(&hs, now()).is_ok());

    // An unknown kid.
    let other = sign(
        Algorithm::RS256,
        Some("nope"),
        Signer::Pem("rsa_private.pem"),
        &claims(),
    );
    assert_eq!(
        auth.verify(&other, now()),
        Err(AuthError::UnknownKey {
            kid: Some("nope".into())
        })
    );
    // A kid names one key; the token's algorithm must be that key's.
    let mixed = sign(
        Algorithm::ES256,
        Some("rsa"),
        Signer::Pem("ec_private.pem"),
        &claims(),
    );
    assert_eq!(
        auth.verify(&mixed, now()),
        Err(AuthError::WrongAlgorithm {
            found: "ES256".into(),
            expected: "RS256".into()
        })
    );
    // A kid-less token only tries kid-less keys, even if a kid'd key would verify it.
    let no_kid = sign(
        Algorithm::RS256,
        None,
        Signer::Pem("rsa_private.pem"),
        &claims(),
    );
    assert!(matches!(
        auth.verify(&no_kid, now()),
        Err(AuthError::WrongAlgorithm { .. })
    ));
    // And a token with a kid never falls back to kid-less keys.
    let hs_kid = sign(
        Algorithm::HS256,
        Some("hs"),
        Signer::Secret(&hs_secret()),
        &claims(),
    );
    assert!(matches!(
        auth.verify(&hs_kid, now()),
        Err(AuthError::UnknownKey { .. })
    ));
}

#[test]
fn kidless_token_when_every_key_has_a_kid() {
    let auth = authenticator(vec![with_kid("a", hs_key())]);
    let token = sign(
        Algorithm::HS256,
        None,
        Signer::Secret(&hs_secret()),
        &claims(),
    );
    assert_eq!(
        auth.verify(&token, now()),
        Err(AuthError::UnknownKey { kid: None })
    );
}

#[test]
fn kidless_keys_rotate() {
    let auth = authenticator(vec![
        public_key(KeyAlgorithm::RS256, "rsa_public.pem"),
        public_key(KeyAlgorithm::EdDSA, "ed25519_public.pem"),
        public_key(KeyAlgorithm::RS256, "rsa2_public.pem"),
    ]);
    for private in ["rsa_private.pem", "rsa2_private.pem"] {
        let token = sign(Algorithm::RS256, None, Signer::Pem(private), &claims());
        assert!(auth.verify(&token, now()).is_ok(), "{private}");
    }
    let token = sign(
        Algorithm::EdDSA,
        None,
        Signer::Pem("ed25519_private.pem"),
        &claims(),
    );
    assert!(auth.verify(&token, now()).is_ok());
    let token = sign(
        Algorithm::HS256,
        None,
        Signer::Secret(&hs_secret()),
        &claims(),
    );
    assert_eq!(
        auth.verify(&token, now()),
        Err(AuthError::WrongAlgorithm {
            found: "HS256".into(),
            expected: "RS256 or EdDSA".into()
        })
    );
}

// ---- configuration ---------------------------------------------------------------------------

#[test]
fn config_from_toml_end_to_end() {
    let toml = format!(
        r#"
        leeway_secs = 10
        [[keys]]
        algorithm = "HS256"
        secret_file = {hs:?}
        [[keys]]
        kid = "ed-1"
        algorithm = "EdDSA"
        public_key_file = {ed:?}
        "#,
        hs = key_path("hs256_secret.txt"),
        ed = key_path("ed25519_public.pem"),
    );
    let config: AuthConfig = toml::from_str(&toml).expect("valid TOML");
    assert_eq!(config.leeway, Duration::from_secs(10));
    let auth = Authenticator::new(&config).expect("valid config");
    let token = sign(
        Algorithm::EdDSA,
        Some("ed-1"),
        Signer::Pem("ed25519_private.pem"),
        &json!({"sub": "7", "exp": NOW - 9}),
    );
    assert_eq!(auth.verify(&token, now()).map(|id| id.user), Ok("7".into()));
    // Debug output names keys but never holds their material.
    let debug = format!("{auth:?}");
    assert!(debug.contains("ed-1") && debug.contains("HS256"), "{debug}");
    let secret = String::from_utf8(hs_secret()).expect("ASCII secret");
    assert!(!debug.contains(&secret));
}

#[test]
fn config_unknown_algorithm_in_toml() {
    let err = toml::from_str::<AuthConfig>(
        "[[keys]]\nalgorithm = \"PS256\"\npublic_key_file = \"x.pem\"\n",
    )
    .expect_err("PS256 is not offered");
    let msg = err.to_string();
    assert!(msg.contains("PS256") && msg.contains("algorithm"), "{msg}");
}

#[test]
fn config_missing_file_names_the_key() {
    let missing = key_path("does-not-exist.pem");
    let msg = config_error(vec![
        hs_key(),
        KeyConfig {
            public_key_file: Some(missing.clone()),
            ..KeyConfig::new(KeyAlgorithm::RS256)
        },
    ]);
    let prefix = format!(
        "auth.keys[1].public_key_file: cannot read {}: ",
        missing.display()
    );
    assert!(msg.starts_with(&prefix), "{msg}");

    let err = Authenticator::new(&AuthConfig {
        keys: vec![KeyConfig {
            secret_file: Some(missing),
            ..KeyConfig::new(KeyAlgorithm::HS256)
        }],
        ..AuthConfig::default()
    })
    .expect_err("missing secret file");
    assert_eq!(err.key(), "auth.keys[0].secret_file");
    assert!(matches!(err, AuthConfigError::Read { .. }));
}

#[test]
fn config_short_hs_secret() {
    let msg = config_error(vec![KeyConfig {
        secret_file: Some(key_path("hs256_short_secret.txt")),
        ..KeyConfig::new(KeyAlgorithm::HS256)
    }]);
    assert_eq!(
        msg,
        "auth.keys[0].secret_file: the HS256 secret is 16 bytes; at least 32 are needed"
    );
    let var = "DUPLEX_HUB_TEST_AUTH_SHORT_SECRET";
    std::env::set_var(var, "short");
    let msg = config_error(vec![KeyConfig {
        secret_env: Some(var.into()),
        ..KeyConfig::new(KeyAlgorithm::HS256)
    }]);
    assert!(
        msg.starts_with("auth.keys[0].secret_env: the HS256 secret is 5 bytes"),
        "{msg}"
    );
    assert!(
        !msg.contains("short"),
        "secrets stay out of messages: {msg}"
    );
}

#[test]
fn config_missing_key_material() {
    assert_eq!(
        config_error(vec![hs_key(), KeyConfig::new(KeyAlgorithm::RS256)]),
        "auth.keys[1]: RS256 needs public_key_file"
    );
    assert_eq!(
        config_error(vec![KeyConfig::new(KeyAlgorithm::HS256)]),
        "auth.keys[0]: HS256 needs secret_file or secret_env"
    );
    let msg = config_error(vec![KeyConfig {
        secret_env: Some("DUPLEX_HUB_TEST_AUTH_UNSET_VARIABLE".into()),
        ..KeyConfig::new(KeyAlgorithm::HS256)
    }]);
    assert_eq!(
        msg,
        "auth.keys[0].secret_env: environment variable DUPLEX_HUB_TEST_AUTH_UNSET_VARIABLE is not set"
    );
}

#[test]
fn config_conflicting_key_material() {
    let msg = config_error(vec![KeyConfig {
        secret_env: Some("X".into()),
        ..hs_key()
    }]);
    assert_eq!(
        msg,
        "auth.keys[0]: give only one of secret_file and secret_env"
    );
    let msg = config_error(vec![KeyConfig {
        public_key_file: Some(key_path("rsa_public.pem")),
        ..hs_key()
    }]);
    assert!(
        msg.starts_with("auth.keys[0].public_key_file: HS256 keys use"),
        "{msg}"
    );
    let msg = config_error(vec![KeyConfig {
        secret_file: Some(key_path("hs256_secret.txt")),
        ..public_key(KeyAlgorithm::ES256, "ec_public.pem")
    }]);
    assert!(
        msg.starts_with("auth.keys[0].secret_file: ES256 keys verify with"),
        "{msg}"
    );
}

#[test]
fn config_unusable_public_keys() {
    let cases = [
        (
            KeyAlgorithm::RS256,
            "rsa_private.pem",
            "holds a private key",
        ),
        (
            KeyAlgorithm::RS256,
            "rsa1024_public.pem",
            "1024-bit RSA key",
        ),
        (
            KeyAlgorithm::RS256,
            "ec_public.pem",
            "is not a PEM RS256 public key",
        ),
        (
            KeyAlgorithm::ES256,
            "p384_public.pem",
            "is not a usable ES256 public key",
        ),
        (
            KeyAlgorithm::ES256,
            "ed25519_public.pem",
            "is not a PEM ES256 public key",
        ),
        (
            KeyAlgorithm::EdDSA,
            "ec_public.pem",
            "is not a PEM EdDSA public key",
        ),
        (
            KeyAlgorithm::EdDSA,
            "hs256_secret.txt",
            "is not a PEM EdDSA public key",
        ),
    ];
    for (algorithm, file, expected) in cases {
        let msg = config_error(vec![public_key(algorithm, file)]);
        assert!(
            msg.starts_with("auth.keys[0].public_key_file: ") && msg.contains(expected),
            "{algorithm} {file}: {msg}"
        );
    }
}

#[test]
fn config_kids_are_unique_and_non_empty() {
    assert_eq!(
        config_error(vec![with_kid("", hs_key())]),
        "auth.keys[0].kid: must not be empty"
    );
    assert_eq!(
        config_error(vec![
            with_kid("a", hs_key()),
            with_kid("b", hs_key()),
            with_kid("a", public_key(KeyAlgorithm::RS256, "rsa_public.pem")),
        ]),
        r#"auth.keys[2].kid: "a" is already the kid of auth.keys[0]"#
    );
}

// ---- from the upgrade request to an identity -------------------------------------------------

#[test]
fn token_from_each_place_of_a_request_verifies() {
    let auth = authenticator(vec![public_key(KeyAlgorithm::ES256, "ec_public.pem")]);
    let token = sign(
        Algorithm::ES256,
        None,
        Signer::Pem("ec_private.pem"),
        &claims(),
    );
    let requests = [
        (
            http::Request::get("/ws").header("authorization", format!("Bearer {token}")),
            TokenSource::Header,
        ),
        (
            http::Request::get(format!("/ws?token={token}")),
            TokenSource::Query,
        ),
        (
            http::Request::get("/ws").header(
                "sec-websocket-protocol",
                format!("duplex.v1, duplex.token.{token}"),
            ),
            TokenSource::Subprotocol,
        ),
    ];
    for (builder, source) in requests {
        let request = builder.body(()).expect("valid request");
        let (found, from) = token_from_request(&request)
            .expect("one token")
            .expect("a token");
        assert_eq!(from, source);
        assert_eq!(
            auth.verify(&found, now()).map(|id| id.user),
            Ok("42".into())
        );
    }
}
