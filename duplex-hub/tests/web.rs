//! What the browser side relies on, end to end over real sockets: the embedded pages and SDK
//! with their types and ETags, `connect` `info`, the `sys:stats` channel (on one node and
//! across two nodes on a real `redis-server`) and the demo price feed.

mod e2e;

use duplex_hub::auth::{AuthConfig, KeyAlgorithm, KeyConfig};
use duplex_hub::broker::HistoryQuery;
use duplex_hub::broker::RedisBroker;
use duplex_hub::config::BrokerConfig;
use duplex_hub::{ChannelName, HubConfig, Node};
use e2e::{bounded, Client, Hub};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn web_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../web")
}

/// A response: status, headers (lower-case names), body.
struct Response {
    status: u16,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

/// `method path` with `extra` header lines, over a fresh TCP connection.
async fn request(addr: SocketAddr, method: &str, path: &str, extra: &str) -> Response {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut raw = Vec::new();
    tcp.read_to_end(&mut raw).await.unwrap();
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8(raw[..end].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap()[9..12].parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Response {
        status,
        headers,
        body: raw[end + 4..].to_vec(),
    }
}

/// The routes of the contract with the browser work, and the file each serves.
fn routes() -> Vec<(String, String, &'static str)> {
    let mut routes: Vec<(String, String, &str)> = [
        ("/", "index.html", "text/html"),
        ("/chat", "chat.html", "text/html"),
        ("/prices", "prices.html", "text/html"),
        ("/status", "status.html", "text/html"),
        ("/plain", "plain.html", "text/html"),
        ("/style.css", "style.css", "text/css"),
        ("/duplex.js", "duplex.js", "text/javascript"),
        ("/duplex.d.ts", "duplex.d.ts", "application/typescript"),
    ]
    .into_iter()
    .map(|(r, f, t)| (r.to_owned(), f.to_owned(), t))
    .collect();
    if let Ok(dir) = std::fs::read_dir(web_dir().join("js")) {
        for entry in dir {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            if name.ends_with(".js") {
                routes.push((
                    format!("/js/{name}"),
                    format!("js/{name}"),
                    "text/javascript",
                ));
            }
        }
    }
    routes
}

#[tokio::test]
async fn pages_and_sdk_are_served_with_types_and_etags() {
    bounded(async {
        let hub = Hub::start(HubConfig::default()).await;
        let mut tags = Vec::new();
        for (route, file, content_type) in routes() {
            let r = request(hub.addr, "GET", &route, "").await;
            assert_eq!(r.status, 200, "{route}");
            let disk = std::fs::read(web_dir().join(&file)).unwrap();
            assert!(r.body == disk, "{route} does not serve web/{file}");
            let served_type = &r.headers["content-type"];
            assert!(
                served_type.starts_with(content_type) && served_type.contains("charset=utf-8"),
                "{route}: {served_type}"
            );
            assert_eq!(r.headers["cache-control"], "no-cache", "{route}");
            assert_eq!(r.headers["x-content-type-options"], "nosniff", "{route}");
            let tag = r.headers["etag"].clone();
            assert!(tag.starts_with('"') && tag.ends_with('"'), "{route}: {tag}");

            // Revalidation: the same tag gives 304 without a body; another tag the file.
            let again = request(
                hub.addr,
                "GET",
                &route,
                &format!("If-None-Match: \"nope\", {tag}\r\n"),
            )
            .await;
            assert_eq!(again.status, 304, "{route}");
            assert!(again.body.is_empty(), "{route}");
            assert_eq!(again.headers["etag"], tag, "{route}");
            assert_eq!(again.headers["cache-control"], "no-cache", "{route}");
            let other = request(hub.addr, "GET", &route, "If-None-Match: \"nope\"\r\n").await;
            assert_eq!(other.status, 200, "{route}");
            assert_eq!(other.headers["etag"], tag, "{route}: the tag is stable");

            let head = request(hub.addr, "HEAD", &route, "").await;
            assert_eq!((head.status, head.body.len()), (200, 0), "{route}");
            tags.push(tag);
        }
        tags.sort();
        tags.dedup();
        assert_eq!(tags.len(), routes().len(), "two files share an ETag");

        for missing in [
            "/js/nope.js",
            "/js/..%2FCargo.toml",
            "/js/",
            "/index.html",
            "/e2e/package.json",
            "/test/sdk.test.mjs",
            "/README.md",
        ] {
            let r = request(hub.addr, "GET", missing, "").await;
            assert_eq!(r.status, 404, "{missing}");
        }
        // The documents the index links to are still served.
        let doc = request(hub.addr, "GET", "/docs/protocol.md", "").await;
        assert_eq!(doc.status, 200);
    })
    .await;
}

const KEYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys");

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token(claims: Value) -> String {
    let secret = std::fs::read_to_string(format!("{KEYS}/hs256_secret.txt")).unwrap();
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.trim_end().as_bytes()),
    )
    .unwrap()
}

fn config_with_auth() -> HubConfig {
    let mut config = HubConfig::default();
    let mut hs = KeyConfig::new(KeyAlgorithm::HS256);
    hs.secret_file = Some(format!("{KEYS}/hs256_secret.txt").into());
    config.auth = AuthConfig {
        keys: vec![hs],
        leeway: Duration::ZERO,
    };
    config
}

/// A client connected with `connect` carrying `info` (and `token`, if any).
async fn client_with_info(hub: &Hub, info: Value, token: Option<&str>) -> Client {
    let mut c = Client::open(hub, None).await.unwrap();
    let reply = c
        .cmd(json!({"cmd": "connect", "info": info, "token": token}))
        .await;
    assert!(reply.get("result").is_some(), "{reply}");
    c.info = reply["result"].clone();
    c
}

/// The next push of kind `kind`, skipping others.
async fn next_push(c: &mut Client, kind: &str) -> Value {
    loop {
        let push = c.push().await;
        if push["push"] == kind {
            return push;
        }
    }
}

#[tokio::test]
async fn connect_info_shows_in_presence_join_and_publications() {
    bounded(async {
        let hub = Hub::start(config_with_auth()).await;
        let mut ann = client_with_info(&hub, json!({"name": "Ann"}), None).await;
        ann.cmd(json!({"cmd": "subscribe", "channel": "chat:lobby"}))
            .await;
        let mut bob = client_with_info(&hub, json!({"name": "Bob", "color": [1, 2]}), None).await;
        bob.cmd(json!({"cmd": "subscribe", "channel": "chat:lobby"}))
            .await;
        let join = next_push(&mut ann, "join").await;
        assert_eq!(join["info"]["client"], bob.client_id().as_str());
        assert_eq!(join["info"]["info"], json!({"name": "Bob", "color": [1, 2]}));

        bob.cmd(json!({"cmd": "publish", "channel": "chat:lobby", "data": {"nick": "Bob", "text": "hi"}}))
            .await;
        let publication = next_push(&mut ann, "publication").await;
        assert_eq!(publication["info"]["info"]["name"], "Bob");
        assert_eq!(publication["data"]["text"], "hi");

        // A token's info claim wins over the client's own.
        let signed = token(json!({"sub": "7", "exp": now_secs() + 600, "info": {"name": "Verified"}}));
        let mut eve = client_with_info(&hub, json!({"name": "Impostor"}), Some(&signed)).await;
        eve.cmd(json!({"cmd": "subscribe", "channel": "chat:lobby"}))
            .await;
        let join = next_push(&mut ann, "join").await;
        assert_eq!(join["info"]["user"], "7");
        assert_eq!(join["info"]["info"], json!({"name": "Verified"}));
        // A token without the claim leaves the client's.
        let plain = token(json!({"sub": "8", "exp": now_secs() + 600}));
        let mut dan = client_with_info(&hub, json!({"name": "Dan"}), Some(&plain)).await;
        dan.cmd(json!({"cmd": "subscribe", "channel": "chat:lobby"}))
            .await;

        let presence = ann
            .cmd(json!({"cmd": "presence", "channel": "chat:lobby"}))
            .await;
        let clients = presence["result"]["clients"].as_object().unwrap();
        let mut names: Vec<&str> = clients
            .values()
            .map(|c| c["info"]["name"].as_str().unwrap())
            .collect();
        names.sort_unstable();
        assert_eq!(names, ["Ann", "Bob", "Dan", "Verified"]);
        assert_eq!(clients[&ann.client_id()]["info"], json!({"name": "Ann"}));

        // Leave carries it too.
        drop(bob);
        let leave = next_push(&mut ann, "leave").await;
        assert_eq!(leave["info"]["info"]["name"], "Bob");
        drop((eve, dan));
    })
    .await;
}

#[tokio::test]
async fn a_bad_connect_info_is_answered_with_107_then_closed() {
    bounded(async {
        let hub = Hub::start(HubConfig::default()).await;
        let too_big = json!({"name": "x".repeat(1100)});
        for info in [json!("Ann"), json!([1]), json!(5), too_big] {
            let mut c = Client::open(&hub, None).await.unwrap();
            let reply = c.cmd(json!({"cmd": "connect", "info": info})).await;
            assert_eq!(reply["error"]["code"], 107, "{info}: {reply}");
            let (code, reason, push) = c.closed().await;
            assert_eq!(code, 4500, "{info}");
            assert!(reason.contains("info"), "{reason}");
            assert_eq!(push.unwrap()["reconnect"], false);
        }
        // 1 KiB of compact JSON is fine.
        let fits = json!({"n": "a".repeat(1024 - 8)});
        assert_eq!(fits.to_string().len(), 1024);
        let c = client_with_info(&hub, fits, None).await;
        assert!(!c.client_id().is_empty());
    })
    .await;
}

#[tokio::test]
async fn sys_stats_every_second_and_clients_cannot_publish_there() {
    bounded(async {
        let hub = Hub::start(config_with_auth()).await;
        let mut watcher = hub.client().await;
        let reply = watcher
            .cmd(json!({"cmd": "subscribe", "channel": "sys:stats"}))
            .await;
        assert_eq!(reply["result"]["channel"], "sys:stats", "{reply}");
        let mut other = hub.client().await;
        other
            .cmd(json!({"cmd": "subscribe", "channel": "chat:a"}))
            .await;

        let started = Instant::now();
        let first = next_push(&mut watcher, "publication").await;
        let second = next_push(&mut watcher, "publication").await;
        let gap = started.elapsed();
        // Generous bounds: a loaded CI machine delays ticks; the schedule is what is checked.
        assert!(gap < Duration::from_secs(6), "two stats took {gap:?}");
        for stats in [&first, &second] {
            assert_eq!(stats["channel"], "sys:stats");
            assert!(stats.get("offset").is_none() && stats.get("key").is_none());
            assert!(stats.get("info").is_none(), "published by the hub itself");
        }
        let s = &second["data"];
        assert_eq!(s["node"], watcher.info["node"]);
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        assert!(now_ms.abs_diff(s["time"].as_u64().unwrap()) < 5_000, "{s}");
        let t1 = first["data"]["time"].as_u64().unwrap();
        let t2 = s["time"].as_u64().unwrap();
        assert!((300..=3_000).contains(&(t2 - t1)), "stats {t1} then {t2}");
        assert_eq!(s["connections"], 2, "{s}");
        assert_eq!(s["channels"], 2, "sys:stats and chat:a: {s}");
        assert_eq!(s["subscriptions"], 2, "{s}");
        // connect + subscribe from each client at least.
        assert!(s["messages_in"].as_u64().unwrap() >= 4, "{s}");
        // Their replies, and the first stats publication.
        assert!(s["messages_out"].as_u64().unwrap() >= 5, "{s}");
        assert!(s["uptime_secs"].as_u64().unwrap() <= 10, "{s}");
        for field in ["in_rate", "out_rate"] {
            assert!(s[field].as_u64().is_some(), "{field}: {s}");
        }

        // Traffic shows in the counts and the rates.
        let before_in = s["messages_in"].as_u64().unwrap();
        for _ in 0..20 {
            other.cmd(json!({"cmd": "ping"})).await;
        }
        let s = next_push(&mut watcher, "publication").await["data"].clone();
        assert!(s["messages_in"].as_u64().unwrap() >= before_in + 20, "{s}");
        let s2 = next_push(&mut watcher, "publication").await["data"].clone();
        assert!(
            s["in_rate"].as_u64().unwrap() + s2["in_rate"].as_u64().unwrap() >= 18,
            "20 pings in about a second: {s} {s2}"
        );

        // Nobody publishes there but the hub, whatever the token grants.
        let reply = other
            .cmd(json!({"cmd": "publish", "channel": "sys:stats", "data": {"connections": 1e9}}))
            .await;
        assert_eq!(reply["error"]["code"], 103, "{reply}");
        let all = token(json!({"sub": "root", "exp": now_secs() + 600,
            "channels": {"publish": ["*"], "subscribe": ["*"]}}));
        let mut root = Client::open(&hub, None).await.unwrap();
        root.connect(Some(&all)).await;
        let reply = root
            .cmd(json!({"cmd": "publish", "channel": "sys:other", "data": 1}))
            .await;
        assert_eq!(reply["error"]["code"], 103, "{reply}");
        // No history there either.
        let reply = root
            .cmd(json!({"cmd": "history", "channel": "sys:stats"}))
            .await;
        assert_eq!(reply["error"]["code"], 108, "{reply}");
    })
    .await;
}

#[tokio::test]
async fn the_background_tasks_stop_with_the_server() {
    bounded(async {
        let mut config = HubConfig::default();
        config.demo.feed = true;
        // History on sys, so the stats publications get offsets to watch.
        let sys = config.namespaces.get_mut("sys").unwrap();
        sys.history_size = 1;
        sys.history_ttl_secs = 60;
        config.shutdown.drain_secs = 0;
        config.shutdown.timeout_secs = 2;
        let mut hub = Hub::start(config).await;
        let stats = ChannelName::new("sys:stats").unwrap();
        let feed = ChannelName::new("prices:BTC-USD").unwrap();
        let offset = |node: Arc<Node>, channel: ChannelName| async move {
            let query = HistoryQuery {
                since: None,
                limit: Some(0),
            };
            node.history(&channel, query)
                .await
                .unwrap()
                .unwrap()
                .position
                .offset
        };
        tokio::time::sleep(Duration::from_millis(1_300)).await;
        assert!(offset(hub.node.clone(), stats.clone()).await >= 1);
        assert!(offset(hub.node.clone(), feed.clone()).await >= 2);
        // The hub's own publications are not in the metric of accepted publications.
        assert_eq!(hub.node.metrics().publications.get(), 0);
        hub.stop();
        hub.wait().await;
        // An abort takes effect at the task's next await.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let stopped = (
            offset(hub.node.clone(), stats.clone()).await,
            offset(hub.node.clone(), feed.clone()).await,
        );
        tokio::time::sleep(Duration::from_millis(1_300)).await;
        let later = (
            offset(hub.node.clone(), stats).await,
            offset(hub.node.clone(), feed).await,
        );
        assert_eq!(stopped, later, "published after the server stopped");
    })
    .await;
}

/// Publications of the demo feed on `channel` for about `window`.
async fn feed(c: &mut Client, window: Duration) -> Vec<Value> {
    let end = tokio::time::Instant::now() + window;
    let mut out = Vec::new();
    while let Ok(push) = tokio::time::timeout_at(end, next_push(c, "publication")).await {
        out.push(push);
    }
    out
}

#[tokio::test]
async fn the_demo_feed_publishes_every_symbol_several_times_a_second() {
    bounded(async {
        // Off by default.
        let hub = Hub::start(HubConfig::default()).await;
        let mut c = hub.client().await;
        c.cmd(json!({"cmd": "subscribe", "channel": "prices:BTC-USD"}))
            .await;
        c.no_push(Duration::from_millis(700)).await;
        drop((c, hub));

        let mut config = HubConfig::default();
        config.demo.feed = true;
        let hub = Hub::start(config).await;
        let mut c = hub.client().await;
        let symbols = [
            "BTC-USD", "ETH-USD", "SOL-USD", "EUR-USD", "GBP-USD", "AAPL", "MSFT", "NVDA",
        ];
        for symbol in symbols {
            let reply = c
                .cmd(json!({"cmd": "subscribe", "channel": format!("prices:{symbol}")}))
                .await;
            assert!(reply.get("result").is_some(), "{reply}");
        }
        let pushes = feed(&mut c, Duration::from_secs(2)).await;
        let mut by_symbol: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
        for push in &pushes {
            let data = &push["data"];
            let symbol = data["symbol"].as_str().unwrap();
            assert_eq!(push["channel"], format!("prices:{symbol}"));
            assert_eq!(push["key"], symbol);
            assert!(push["offset"].as_u64().unwrap() >= 1, "{push}");
            assert!(data["price"].as_f64().unwrap() > 0.0, "{push}");
            assert!(data["change"].is_number(), "{push}");
            assert!(data["time"].as_u64().unwrap() > 1_700_000_000_000, "{push}");
            assert_eq!(data.as_object().unwrap().len(), 4, "{push}");
            let symbol = *symbols
                .iter()
                .find(|s| **s == symbol)
                .expect("a known symbol");
            by_symbol.entry(symbol).or_default().push(push);
        }
        assert_eq!(by_symbol.len(), symbols.len(), "{pushes:?}");
        for (symbol, ticks) in &by_symbol {
            // About 8 in 2 s; the gaps are random within 100..400 ms.
            assert!((4..=20).contains(&ticks.len()), "{symbol}: {}", ticks.len());
            for pair in ticks.windows(2) {
                let (a, b) = (&pair[0], &pair[1]);
                assert_eq!(
                    b["offset"].as_u64().unwrap(),
                    a["offset"].as_u64().unwrap() + 1,
                    "{symbol}"
                );
                let change =
                    b["data"]["price"].as_f64().unwrap() - a["data"]["price"].as_f64().unwrap();
                assert!(
                    (change - b["data"]["change"].as_f64().unwrap()).abs() < 1e-6,
                    "{symbol}: {a} then {b}"
                );
            }
        }
        let btc = by_symbol["BTC-USD"][0]["data"]["price"].as_f64().unwrap();
        assert!((50_000.0..80_000.0).contains(&btc), "{btc}");
        let eur = by_symbol["EUR-USD"][0]["data"]["price"].as_f64().unwrap();
        assert!((0.9..1.3).contains(&eur), "{eur}");

        // A late subscriber recovers the latest price from history (1 kept).
        let mut late = hub.client().await;
        let reply = late
            .cmd(json!({"cmd": "history", "channel": "prices:NVDA"}))
            .await;
        let latest = &reply["result"]["publications"][0];
        assert_eq!(latest["key"], "NVDA", "{reply}");
    })
    .await;
}

/// A `redis-server` on a free loopback port, killed (by PID) on drop.
struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--loglevel", "warning"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run redis-server ({e}): apt-get install redis-server")
            });
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, port }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn every_nodes_stats_reach_every_node_over_redis() {
    let redis = RedisServer::start();
    bounded(async {
        let prefix = format!("web{:08x}:", rand::random::<u32>());
        let mut nodes = Vec::new();
        for name in ["node-a", "node-b"] {
            let mut config = HubConfig::default();
            config.node_name = Some(name.to_owned());
            config.broker = BrokerConfig {
                url: Some(format!("redis://127.0.0.1:{}", redis.port)),
                prefix: prefix.clone(),
                ..BrokerConfig::default()
            };
            let broker = RedisBroker::new(&config.broker).unwrap();
            assert!(broker.wait_healthy(Duration::from_secs(10)).await);
            nodes.push(Hub::start_with(config, Arc::new(broker)).await);
        }
        let mut watcher = nodes[0].client().await;
        watcher
            .cmd(json!({"cmd": "subscribe", "channel": "sys:stats"}))
            .await;
        let _idle = nodes[1].client().await;
        let mut seen = BTreeMap::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while seen.len() < 2 && Instant::now() < deadline {
            let stats = next_push(&mut watcher, "publication").await;
            seen.insert(
                stats["data"]["node"].as_str().unwrap().to_owned(),
                stats["data"].clone(),
            );
        }
        assert_eq!(
            seen.keys().map(String::as_str).collect::<Vec<_>>(),
            ["node-a", "node-b"]
        );
        // Each node counts its own: node-b has the idle client and no subscription.
        assert_eq!(seen["node-b"]["subscriptions"], 0, "{:?}", seen["node-b"]);
        assert_eq!(seen["node-a"]["subscriptions"], 1, "{:?}", seen["node-a"]);
    })
    .await;
}
