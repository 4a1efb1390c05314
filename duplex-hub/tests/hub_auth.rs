//! End-to-end tests of authentication and the Origin check over real sockets.

mod e2e;

use duplex::ClientBuilder;
use duplex_hub::auth::{AuthConfig, KeyAlgorithm, KeyConfig};
use duplex_hub::config::{NamespaceConfig, Permission};
use duplex_hub::HubConfig;
use e2e::{bounded, Client, Hub};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

const KEYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys");

fn key(name: &str) -> Vec<u8> {
    std::fs::read(format!("{KEYS}/{name}")).unwrap()
}

fn hs_token(claims: Value) -> String {
    let secret = String::from_utf8(key("hs256_secret.txt")).unwrap();
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.trim_end().as_bytes()),
    )
    .unwrap()
}

fn config() -> HubConfig {
    let mut config = HubConfig::default();
    let mut hs = KeyConfig::new(KeyAlgorithm::HS256);
    hs.secret_file = Some(format!("{KEYS}/hs256_secret.txt").into());
    let mut es = KeyConfig::new(KeyAlgorithm::ES256);
    es.kid = Some("ec".into());
    es.public_key_file = Some(format!("{KEYS}/ec_public.pem").into());
    config.auth = AuthConfig {
        keys: vec![hs, es],
        leeway: Duration::ZERO,
    };
    let ns = |subscribe, publish| NamespaceConfig {
        subscribe,
        publish,
        ..NamespaceConfig::default()
    };
    config
        .namespaces
        .insert("secret".into(), ns(Permission::Grant, Permission::Grant));
    config
        .namespaces
        .insert("user".into(), ns(Permission::Owner, Permission::Owner));
    config.namespaces.insert(
        "admin".into(),
        ns(
            Permission::Claim {
                claim: "role".into(),
                equals: json!("admin"),
            },
            Permission::Authenticated,
        ),
    );
    config
}

fn claims(sub: &str) -> Value {
    json!({"sub": sub, "exp": now() + 600, "info": {"name": "Ann"}})
}

async fn status_of(result: Result<Client, duplex::Error>) -> Option<u16> {
    result
        .err()
        .and_then(|e| e.handshake_status())
        .map(|s| s.as_u16())
}

#[tokio::test]
async fn tokens_at_the_handshake() {
    bounded(async {
        let hub = Hub::start(config()).await;
        // Accepted (bearer header): the user is the token's sub.
        let mut c = Client::open(&hub, Some(&hs_token(claims("42"))))
            .await
            .unwrap();
        let result = c.connect(None).await;
        assert_eq!(result["user"], "42");
        assert!(result["expires"].as_u64().unwrap() > now());
        // Authenticated users may publish to prices (the built-in rule).
        let r = c
            .cmd(json!({"cmd": "publish", "channel": "prices:BTC", "data": 1}))
            .await;
        assert!(r.get("result").is_some(), "{r}");

        // ES256 with a kid.
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("ec".into());
        let token = encode(
            &header,
            &claims("7"),
            &EncodingKey::from_ec_pem(&key("ec_private.pem")).unwrap(),
        )
        .unwrap();
        let mut c = Client::open(&hub, Some(&token)).await.unwrap();
        assert_eq!(c.connect(None).await["user"], "7");

        // Refused with 401 before the upgrade.
        let expired = hs_token(json!({"sub": "1", "exp": now() - 10}));
        assert_eq!(
            status_of(Client::open(&hub, Some(&expired)).await).await,
            Some(401)
        );
        let early = hs_token(json!({"sub": "1", "exp": now() + 600, "nbf": now() + 300}));
        assert_eq!(
            status_of(Client::open(&hub, Some(&early)).await).await,
            Some(401)
        );
        let no_exp = hs_token(json!({"sub": "1"}));
        assert_eq!(
            status_of(Client::open(&hub, Some(&no_exp)).await).await,
            Some(401)
        );
        // Wrong key: signed by another EC key under the configured kid.
        let wrong = encode(
            &header,
            &claims("7"),
            &EncodingKey::from_ec_pem(&key("ec2_private.pem")).unwrap(),
        )
        .unwrap();
        assert_eq!(
            status_of(Client::open(&hub, Some(&wrong)).await).await,
            Some(401)
        );
        // Wrong algorithm: an HS256 token naming the EC key's kid.
        let mut hs_header = Header::new(Algorithm::HS256);
        hs_header.kid = Some("ec".into());
        let secret = String::from_utf8(key("hs256_secret.txt")).unwrap();
        let confused = encode(
            &hs_header,
            &claims("7"),
            &EncodingKey::from_secret(secret.trim_end().as_bytes()),
        )
        .unwrap();
        assert_eq!(
            status_of(Client::open(&hub, Some(&confused)).await).await,
            Some(401)
        );
        assert_eq!(
            status_of(Client::open(&hub, Some("garbage")).await).await,
            Some(401)
        );

        // Missing: anonymous, and anonymous may not publish to prices.
        let mut anon = hub.client().await;
        assert_eq!(anon.info["user"], "");
        let r = anon
            .cmd(json!({"cmd": "publish", "channel": "prices:BTC", "data": 1}))
            .await;
        assert_eq!(r["error"]["code"], 103);

        // Query parameter and subprotocol entry.
        let token = hs_token(claims("q"));
        let (mut ws, _) = ClientBuilder::new(hub.url(&format!("/ws?token={token}")))
            .protocols(["duplex.v1"])
            .connect()
            .await
            .unwrap();
        ws.send(duplex::Message::text(r#"{"id":1,"cmd":"connect"}"#))
            .await
            .unwrap();
        let reply: Value =
            serde_json::from_str(ws.recv().await.unwrap().unwrap().as_text().unwrap()).unwrap();
        assert_eq!(reply["result"]["user"], "q");
        let entry = format!("duplex.token.{}", hs_token(claims("s")));
        let (mut ws, response) = ClientBuilder::new(hub.url("/ws"))
            .protocols(["duplex.v1", entry.as_str()])
            .connect()
            .await
            .unwrap();
        assert_eq!(response.headers()["sec-websocket-protocol"], "duplex.v1");
        ws.send(duplex::Message::text(r#"{"id":1,"cmd":"connect"}"#))
            .await
            .unwrap();
        let reply: Value =
            serde_json::from_str(ws.recv().await.unwrap().unwrap().as_text().unwrap()).unwrap();
        assert_eq!(reply["result"]["user"], "s");

        let metrics = e2e::get_text(hub.addr, "/metrics").await;
        assert!(
            metrics.contains("duplex_auth_failures_total{reason=\"expired\"} 1"),
            "{metrics}"
        );
        assert!(
            metrics.contains("duplex_auth_failures_total{reason=\"invalid\"} 5"),
            "{metrics}"
        );
    })
    .await;
}

#[tokio::test]
async fn tokens_in_connect() {
    bounded(async {
        let hub = Hub::start(config()).await;
        let mut c = Client::open(&hub, None).await.unwrap();
        assert_eq!(c.connect(Some(&hs_token(claims("9")))).await["user"], "9");

        let mut c = Client::open(&hub, None).await.unwrap();
        let r = c
            .cmd(json!({"cmd": "connect", "token": "not.a.token"}))
            .await;
        assert_eq!(r["error"]["code"], 101);
        assert_eq!(c.closed().await.0, 4501);

        let mut c = Client::open(&hub, None).await.unwrap();
        let expired = hs_token(json!({"sub": "1", "exp": now() - 10}));
        let r = c.cmd(json!({"cmd": "connect", "token": expired})).await;
        assert_eq!(r["error"]["code"], 109);
        assert_eq!(c.closed().await.0, 4003);

        // A token that expires during the session closes it with 4003.
        let mut c = Client::open(&hub, None).await.unwrap();
        c.connect(Some(&hs_token(json!({"sub": "1", "exp": now() + 2}))))
            .await;
        let (code, _, push) = c.closed().await;
        assert_eq!(code, 4003);
        assert_eq!(push.unwrap()["reconnect"], true);
    })
    .await;
}

#[tokio::test]
async fn grants_owner_and_claim_rules() {
    bounded(async {
        let hub = Hub::start(config()).await;
        let granted = hs_token(json!({"sub": "42", "exp": now() + 600, "role": "admin",
            "channels": {"subscribe": ["secret:a*"], "publish": ["secret:alpha"]}}));
        let mut c = Client::open(&hub, Some(&granted)).await.unwrap();
        c.connect(None).await;
        let ok = |v: &Value| v.get("result").is_some();
        let code = |v: &Value| v["error"]["code"].as_u64();
        assert!(ok(&c
            .cmd(json!({"cmd": "subscribe", "channel": "secret:alpha"}))
            .await));
        assert_eq!(
            code(
                &c.cmd(json!({"cmd": "subscribe", "channel": "secret:beta"}))
                    .await
            ),
            Some(103)
        );
        assert!(ok(&c
            .cmd(json!({"cmd": "publish", "channel": "secret:alpha", "data": 1}))
            .await));
        assert_eq!(
            code(
                &c.cmd(json!({"cmd": "publish", "channel": "secret:alps", "data": 1}))
                    .await
            ),
            Some(103)
        );
        assert!(ok(&c
            .cmd(json!({"cmd": "subscribe", "channel": "user:42"}))
            .await));
        assert_eq!(
            code(
                &c.cmd(json!({"cmd": "subscribe", "channel": "user:43"}))
                    .await
            ),
            Some(103)
        );
        assert!(ok(&c
            .cmd(json!({"cmd": "subscribe", "channel": "admin:ops"}))
            .await));

        let mut other = Client::open(
            &hub,
            Some(&hs_token(
                json!({"sub": "43", "exp": now() + 600, "role": "user"}),
            )),
        )
        .await
        .unwrap();
        other.connect(None).await;
        assert_eq!(
            code(
                &other
                    .cmd(json!({"cmd": "subscribe", "channel": "admin:ops"}))
                    .await
            ),
            Some(103)
        );
        assert_eq!(
            code(
                &other
                    .cmd(json!({"cmd": "subscribe", "channel": "secret:alpha"}))
                    .await
            ),
            Some(103)
        );
        let mut anon = hub.client().await;
        assert_eq!(
            code(
                &anon
                    .cmd(json!({"cmd": "subscribe", "channel": "user:42"}))
                    .await
            ),
            Some(103)
        );
    })
    .await;
}

async fn with_origin(hub: &Hub, origin: &str) -> Option<u16> {
    match ClientBuilder::new(hub.url("/ws"))
        .protocols(["duplex.v1"])
        .origin(origin.parse().unwrap())
        .connect()
        .await
    {
        Ok(_) => Some(101),
        Err(e) => e.handshake_status().map(|s| s.as_u16()),
    }
}

#[tokio::test]
async fn origin_allow_list() {
    bounded(async {
        let mut config = HubConfig::default();
        config.allowed_origins = vec!["https://app.example.com".into()];
        let hub = Hub::start(config).await;
        let port = hub.addr.port();
        assert_eq!(with_origin(&hub, "https://evil.example").await, Some(403));
        assert_eq!(with_origin(&hub, "null").await, Some(403));
        assert_eq!(
            with_origin(&hub, "https://app.example.com").await,
            Some(101)
        );
        assert_eq!(with_origin(&hub, "http://app.example.com").await, Some(403));
        assert_eq!(with_origin(&hub, "http://localhost:3000").await, Some(101));
        assert_eq!(
            with_origin(&hub, &format!("http://127.0.0.1:{port}")).await,
            Some(101)
        );
        // Rooms and echo are checked too.
        let err = ClientBuilder::new(hub.url("/rooms/lobby"))
            .origin("https://evil.example".parse().unwrap())
            .connect()
            .await
            .unwrap_err();
        assert_eq!(err.handshake_status().map(|s| s.as_u16()), Some(403));

        // Without the localhost allowance, only same-origin and the list remain.
        let mut config = HubConfig::default();
        config.allow_localhost_origins = false;
        let hub = Hub::start(config).await;
        let port = hub.addr.port();
        assert_eq!(
            with_origin(&hub, &format!("http://localhost:{port}")).await,
            Some(403)
        );
        assert_eq!(
            with_origin(&hub, &format!("http://127.0.0.1:{port}")).await,
            Some(101),
            "same origin"
        );
        assert_eq!(with_origin(&hub, "http://127.0.0.1:1").await, Some(403));
    })
    .await;
}

#[tokio::test]
async fn api_disconnect_closes_a_users_connections_only() {
    bounded(async {
        let hub = Hub::start(config()).await;
        let mut first = Client::open(&hub, Some(&hs_token(claims("42"))))
            .await
            .unwrap();
        first.connect(None).await;
        let mut room = ClientBuilder::new(hub.url("/rooms/lobby"))
            .header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", hs_token(claims("42")))
                    .parse()
                    .unwrap(),
            )
            .connect()
            .await
            .unwrap()
            .0;
        let mut other = Client::open(&hub, Some(&hs_token(claims("43"))))
            .await
            .unwrap();
        other.connect(None).await;
        let mut anon = hub.client().await;

        let (status, body) = hub
            .api("POST", "/api/disconnect", Some(json!({"user": ""})))
            .await;
        assert_eq!(status, 400, "{body}");
        let (status, body) = hub
            .api("POST", "/api/disconnect", Some(json!({"user": "42"})))
            .await;
        assert_eq!((status, body), (200, json!({"result": {}})));
        let (code, _, push) = first.closed().await;
        assert_eq!(code, 4502);
        assert_eq!(push.unwrap()["reconnect"], false);
        assert!(room.recv().await.is_none());
        assert_eq!(u16::from(room.close_frame().unwrap().code), 4502);
        // Others stay connected.
        assert!(other
            .cmd(json!({"cmd": "ping"}))
            .await
            .get("result")
            .is_some());
        assert!(anon
            .cmd(json!({"cmd": "ping"}))
            .await
            .get("result")
            .is_some());
    })
    .await;
}
