//! Several hub nodes on one Redis, end to end: two `duplex_hub::serve` instances in this
//! process, each with its own `RedisBroker` on a `redis-server` that the test starts on a
//! free loopback port (and kills by PID). A missing `redis-server` fails the tests:
//! `apt-get install redis-server` (scripts/test.sh does it).

mod e2e;

use duplex_hub::broker::RedisBroker;
use duplex_hub::config::BrokerConfig;
use duplex_hub::HubConfig;
use e2e::{bounded, get_text, Client, Hub};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A `redis-server` of one test, with an append-only file fsynced at every write, so that
/// every acknowledged publication survives a restart.
struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl RedisServer {
    fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir =
            std::env::temp_dir().join(format!("duplex-redis-e2e-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut server = Self {
            child: None,
            port,
            dir,
        };
        server.run();
        server
    }

    fn run(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .args(["--loglevel", "warning"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run redis-server ({e}): the Redis broker tests need it; \
                     install the Debian package: apt-get install redis-server"
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: a crash, not a shutdown.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The broker section of a hub on `redis`, with keys under `prefix`.
fn broker_config(redis: &RedisServer, prefix: &str) -> BrokerConfig {
    BrokerConfig {
        url: Some(redis.url()),
        prefix: prefix.to_owned(),
        presence_ttl_secs: 3,
        ..BrokerConfig::default()
    }
}

/// A node of the hub on `redis`.
async fn node(redis: &RedisServer, prefix: &str, name: &str) -> Hub {
    let mut config = HubConfig::default();
    config.broker = broker_config(redis, prefix);
    config.node_name = Some(name.to_owned());
    let broker = RedisBroker::new(&config.broker).unwrap();
    assert!(
        broker.wait_healthy(Duration::from_secs(10)).await,
        "{:?}",
        broker.last_error()
    );
    Hub::start_with(config, Arc::new(broker)).await
}

fn prefix() -> String {
    format!("e2e{:08x}:", rand::random::<u32>())
}

/// The next publication push, skipping join and leave.
async fn publication(c: &mut Client) -> Value {
    loop {
        let push = c.push().await;
        if push["push"] == "publication" {
            return push;
        }
        assert!(
            push["push"] == "join" || push["push"] == "leave",
            "unexpected push {push}"
        );
    }
}

async fn presence_clients(c: &mut Client, channel: &str) -> BTreeSet<String> {
    let p = c.cmd(json!({"cmd": "presence", "channel": channel})).await;
    p["result"]["clients"]
        .as_object()
        .unwrap_or_else(|| panic!("{p}"))
        .keys()
        .cloned()
        .collect()
}

async fn readyz(addr: SocketAddr) -> u16 {
    let text = get_text(addr, "/readyz").await;
    text[9..12].parse().unwrap()
}

#[tokio::test]
async fn two_nodes_are_one_hub() {
    bounded(async {
        let redis = RedisServer::start();
        let prefix = prefix();
        let a = node(&redis, &prefix, "node-a").await;
        let b = node(&redis, &prefix, "node-b").await;
        assert_eq!(readyz(a.addr).await, 200);

        let mut on_a = a.client().await;
        let mut on_b = b.client().await;
        let mut publisher = b.client().await;
        on_a.cmd(json!({"cmd": "subscribe", "channel": "chat:x"}))
            .await;
        on_b.cmd(json!({"cmd": "subscribe", "channel": "chat:x"}))
            .await;
        // The join of on_b, published on node B, reaches node A.
        let join = on_a.push().await;
        assert_eq!(join["push"], "join", "{join}");
        assert_eq!(join["info"]["client"], on_b.client_id().as_str());

        // Published on node B, over WebSocket and through its HTTP API, alternately.
        let mut epoch = String::new();
        for n in 1..=40u64 {
            let result = if n % 2 == 0 {
                let (status, body) = b
                    .api(
                        "POST",
                        "/api/publish",
                        Some(json!({"channel": "chat:x", "data": {"n": n}})),
                    )
                    .await;
                assert_eq!(status, 200, "{body}");
                body["result"].clone()
            } else {
                let r = publisher
                    .cmd(json!({"cmd": "publish", "channel": "chat:x", "data": {"n": n}}))
                    .await;
                r["result"].clone()
            };
            assert_eq!(result["offset"], n, "{result}");
            epoch = result["epoch"].as_str().unwrap().to_owned();
        }
        for client in [&mut on_a, &mut on_b] {
            for n in 1..=40u64 {
                let push = publication(client).await;
                assert_eq!(push["offset"], n, "in order, exactly once: {push}");
                assert_eq!(push["data"]["n"], n);
                assert_eq!(push["epoch"], epoch.as_str());
            }
            client.no_push(Duration::from_millis(200)).await;
        }

        // Presence agrees on both nodes, over WebSocket and HTTP.
        let both: BTreeSet<String> = [on_a.client_id(), on_b.client_id()].into();
        assert_eq!(presence_clients(&mut on_a, "chat:x").await, both);
        assert_eq!(presence_clients(&mut publisher, "chat:x").await, both);
        for hub in [&a, &b] {
            let (status, body) = hub.api("GET", "/api/presence/chat:x", None).await;
            assert_eq!(status, 200);
            let clients: BTreeSet<String> = body["result"]["clients"]
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect();
            assert_eq!(clients, both);
            let (_, channels) = hub.api("GET", "/api/channels", None).await;
            assert!(channels.to_string().contains("chat:x"), "{channels}");
        }

        // on_a leaves; what it misses is published on node A; it comes back on node B and
        // recovers it there.
        let a_id = on_a.client_id();
        drop(on_a);
        for n in 41..=45u64 {
            let (status, _) = a
                .api(
                    "POST",
                    "/api/publish",
                    Some(json!({"channel": "chat:x", "data": {"n": n}})),
                )
                .await;
            assert_eq!(status, 200);
        }
        let mut back = b.client().await;
        let r = back
            .cmd(json!({"cmd": "subscribe", "channel": "chat:x", "recover": {"offset": 40, "epoch": epoch}}))
            .await;
        assert_eq!(r["result"]["recovered"], true, "{r}");
        let recovered: Vec<u64> = r["result"]["publications"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["offset"].as_u64().unwrap())
            .collect();
        assert_eq!(recovered, [41, 42, 43, 44, 45]);
        let (status, _) = a
            .api(
                "POST",
                "/api/publish",
                Some(json!({"channel": "chat:x", "data": {"n": 46}})),
            )
            .await;
        assert_eq!(status, 200);
        assert_eq!(publication(&mut back).await["offset"], 46);

        // History reads the same on both nodes.
        for hub in [&a, &b] {
            let (status, body) = hub
                .api("GET", "/api/history/chat:x?limit=3", None)
                .await;
            assert_eq!(status, 200, "{body}");
            let offsets: Vec<u64> = body["result"]["publications"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["offset"].as_u64().unwrap())
                .collect();
            assert_eq!(offsets, [44, 45, 46]);
        }

        // on_a's disconnect removed it from presence everywhere.
        let now: BTreeSet<String> = [on_b.client_id(), back.client_id()].into();
        assert!(!now.contains(&a_id));
        assert_eq!(presence_clients(&mut publisher, "chat:x").await, now);
    })
    .await;
}

/// A node that shuts down takes its clients out of presence everywhere, and the other nodes'
/// subscribers see them leave. (A node that crashes cannot: its entries expire after
/// `presence_ttl_secs` and a live node's sweep announces their leave; see the broker's unit
/// tests and the failover check of scale/run.sh.)
#[tokio::test]
async fn a_stopped_nodes_clients_leave_everywhere() {
    bounded(async {
        let redis = RedisServer::start();
        let prefix = prefix();
        let a = node(&redis, &prefix, "node-a").await;
        let mut b = node(&redis, &prefix, "node-b").await;
        let mut on_a = a.client().await;
        let mut on_b = b.client().await;
        on_a.cmd(json!({"cmd": "subscribe", "channel": "chat:stop"}))
            .await;
        on_b.cmd(json!({"cmd": "subscribe", "channel": "chat:stop"}))
            .await;
        assert_eq!(on_a.push().await["push"], "join");
        assert_eq!(presence_clients(&mut on_a, "chat:stop").await.len(), 2);
        let b_id = on_b.client_id();
        b.stop();
        assert_eq!(on_b.closed().await.0, 1001);
        b.wait().await;
        let leave = on_a.push().await;
        assert_eq!(
            (leave["push"].as_str(), leave["info"]["client"].as_str()),
            (Some("leave"), Some(b_id.as_str()))
        );
        assert_eq!(
            presence_clients(&mut on_a, "chat:stop").await,
            [on_a.client_id()].into()
        );
    })
    .await;
}

/// Redis is killed (SIGKILL) and restarted while a node publishes; the subscriber stays
/// connected to the other node. Every acknowledged publication reaches it exactly once and in
/// order, the outage included, and /readyz says 503 meanwhile.
#[tokio::test]
async fn redis_restart_while_publishing() {
    bounded(async {
        let mut redis = RedisServer::start();
        let prefix = prefix();
        let a = node(&redis, &prefix, "node-a").await;
        let b = Arc::new(node(&redis, &prefix, "node-b").await);
        let mut sub = a.client().await;
        sub.cmd(json!({"cmd": "subscribe", "channel": "chat:fault"}))
            .await;

        // The publisher: node B's HTTP API, every 10 ms, until told to stop.
        let acked = Arc::new(Mutex::new(Vec::<u64>::new()));
        let failed = Arc::new(Mutex::new(0u32));
        let stop = Arc::new(AtomicBool::new(false));
        let publisher = {
            let (b, acked, failed, stop) = (b.clone(), acked.clone(), failed.clone(), stop.clone());
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let (status, body) = b
                        .api(
                            "POST",
                            "/api/publish",
                            Some(json!({"channel": "chat:fault", "data": {"n": n}})),
                        )
                        .await;
                    if status == 200 {
                        acked
                            .lock()
                            .unwrap()
                            .push(body["result"]["offset"].as_u64().unwrap());
                    } else {
                        *failed.lock().unwrap() += 1;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
        };
        tokio::time::sleep(Duration::from_millis(500)).await;

        let killed = Instant::now();
        redis.kill();
        let mut down = None;
        while down.is_none() {
            if readyz(a.addr).await == 503 && readyz(b.addr).await == 503 {
                down = Some(killed.elapsed());
            }
            assert!(killed.elapsed() < Duration::from_secs(10), "readyz stayed 200");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let body = get_text(a.addr, "/readyz").await;
        assert!(body.contains("broker unavailable"), "{body}");
        tokio::time::sleep(Duration::from_secs(1)).await;
        let acked_before_restart = acked.lock().unwrap().len();

        let restarted = Instant::now();
        redis.run();
        let mut up = None;
        while up.is_none() {
            if readyz(a.addr).await == 200 && readyz(b.addr).await == 200 {
                up = Some(restarted.elapsed());
            }
            assert!(restarted.elapsed() < Duration::from_secs(15), "readyz stayed 503");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(800)).await;
        stop.store(true, Ordering::Relaxed);
        publisher.await.unwrap();

        let acked = acked.lock().unwrap().clone();
        let failed = *failed.lock().unwrap();
        assert!(acked.len() > acked_before_restart, "published after the restart");
        let last = *acked.last().unwrap();
        // Everything up to the last acknowledged offset, in order, each once.
        let mut received = Vec::new();
        let mut epochs = BTreeSet::new();
        while received.last().is_none_or(|&o| o < last) {
            let push = publication(&mut sub).await;
            epochs.insert(push["epoch"].as_str().unwrap().to_owned());
            received.push(push["offset"].as_u64().unwrap());
        }
        sub.no_push(Duration::from_millis(300)).await;
        let duplicates_or_disorder = received.windows(2).filter(|w| w[1] <= w[0]).count();
        let got: BTreeSet<u64> = received.iter().copied().collect();
        let lost = acked.iter().filter(|o| !got.contains(o)).count();
        let acked_set: BTreeSet<u64> = acked.iter().copied().collect();
        let unacked_but_delivered = got.difference(&acked_set).count();
        eprintln!(
            "redis restart: readyz 503 after {down:?}, 200 again {up:?} after the restart; \
             {} acknowledged, {failed} refused during the outage, {} received, lost {lost}, \
             duplicates or out of order {duplicates_or_disorder}, delivered though the \
             publisher saw an error {unacked_but_delivered}",
            acked.len(),
            received.len(),
        );
        assert_eq!(epochs.len(), 1, "history survived the restart: {epochs:?}");
        assert_eq!(lost, 0, "acked {acked:?}, received {received:?}");
        assert_eq!(duplicates_or_disorder, 0, "received {received:?}");
        assert!(failed > 0, "the outage was seen by the publisher");

        // A client that reconnects now, to either node, recovers across the outage (history
        // keeps the latest 100 of chat:*).
        let mut late = b.client().await;
        let epoch = epochs.first().unwrap();
        let since = last.saturating_sub(90);
        let r = late
            .cmd(json!({"cmd": "subscribe", "channel": "chat:fault", "recover": {"offset": since, "epoch": epoch}}))
            .await;
        assert_eq!(r["result"]["recovered"], true, "{r}");
        assert_eq!(
            r["result"]["publications"].as_array().unwrap().len() as u64,
            r["result"]["offset"].as_u64().unwrap() - since
        );
    })
    .await;
}
