//! The broker suite and Redis-specific checks against a real `redis-server`, started by each
//! test on a free loopback port (and killed by PID at the end). A missing `redis-server`
//! fails the tests: `apt-get install redis-server` (scripts/test.sh does it).

use super::*;
use crate::broker::{Data, HistoryOptions};
use bytes::Bytes;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

/// A `redis-server` of this test only.
pub(crate) struct RedisServer {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl RedisServer {
    pub(crate) fn start() -> Self {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        Self::start_on(port)
    }

    pub(crate) fn start_on(port: u16) -> Self {
        let dir =
            std::env::temp_dir().join(format!("duplex-redis-unit-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--loglevel", "warning"])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run redis-server ({e}): the Redis broker tests need it; \
                     install the Debian package: apt-get install redis-server"
                )
            });
        let server = Self { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn config(url: &str, sharded: bool, presence_ttl_secs: u64) -> BrokerConfig {
    BrokerConfig {
        url: Some(url.to_owned()),
        sharded,
        prefix: format!("t{:08x}:", rand::random::<u32>()),
        presence_ttl_secs,
        ..BrokerConfig::default()
    }
}

async fn broker(config: &BrokerConfig) -> Arc<RedisBroker> {
    let broker = RedisBroker::new(config).unwrap();
    assert!(
        broker.wait_healthy(Duration::from_secs(10)).await,
        "not connected: {:?}",
        broker.last_error()
    );
    Arc::new(broker)
}

async fn bounded<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .expect("test timed out")
}

#[tokio::test]
async fn behaves_as_a_broker() {
    bounded(async {
        let redis = RedisServer::start();
        let broker = broker(&config(&redis.url(), false, 30)).await;
        crate::broker::suite::run(broker).await;
    })
    .await;
}

#[tokio::test]
async fn behaves_as_a_broker_with_sharded_pubsub() {
    bounded(async {
        let redis = RedisServer::start();
        let broker = broker(&config(&redis.url(), true, 30)).await;
        crate::broker::suite::run(broker.clone()).await;
        // Sharded channels are listed too.
        let ch = ChannelName::new("chat:sharded").unwrap();
        broker.subscribe(&ch).await.unwrap();
        assert!(broker.channels().await.unwrap().contains(&ch));
    })
    .await;
}

fn publication(n: u32) -> Publication {
    Publication {
        offset: 0,
        epoch: None,
        data: Data::Json(Bytes::from(n.to_string())),
        info: None,
        key: None,
        time_us: crate::broker::now_us(),
    }
}

#[tokio::test]
async fn history_entries_expire_and_the_epoch_outlives_them() {
    bounded(async {
        let redis = RedisServer::start();
        let broker = broker(&config(&redis.url(), false, 30)).await;
        let ch = ChannelName::new("chat:ttl").unwrap();
        let options = HistoryOptions {
            size: 10,
            ttl: Duration::from_millis(600),
        };
        let p1 = broker
            .publish(&ch, publication(1), Some(options))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
        broker
            .publish(&ch, publication(2), Some(options))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        // 1 expired, 2 not yet.
        let h = broker
            .history(&ch, HistoryQuery::default(), options)
            .await
            .unwrap();
        assert_eq!(
            h.publications.iter().map(|p| p.offset).collect::<Vec<_>>(),
            [2]
        );
        let since = |offset| HistoryQuery {
            since: Some(StreamPosition {
                offset,
                epoch: p1.epoch.as_deref().unwrap().to_owned(),
            }),
            limit: None,
        };
        assert!(
            !broker
                .history(&ch, since(0), options)
                .await
                .unwrap()
                .contiguous
        );
        assert!(
            broker
                .history(&ch, since(1), options)
                .await
                .unwrap()
                .contiguous
        );
        // Everything expired, then the stream itself: a new epoch.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let h = broker
            .history(&ch, HistoryQuery::default(), options)
            .await
            .unwrap();
        assert_ne!(Some(h.position.epoch.as_str()), p1.epoch.as_deref());
        assert_eq!(h.position.offset, 0);
    })
    .await;
}

#[tokio::test]
async fn presence_of_a_stopped_node_expires_and_a_live_one_is_refreshed() {
    bounded(async {
        let redis = RedisServer::start();
        let config = config(&redis.url(), false, 3);
        let live = broker(&config).await;
        let crashed = broker(&config).await;
        let ch = ChannelName::new("chat:presence").unwrap();
        let info = |c: &str| ClientInfo {
            client: c.into(),
            user: "u".into(),
            info: None,
        };
        live.add_presence(&ch, info("live")).await.unwrap();
        crashed.add_presence(&ch, info("gone")).await.unwrap();
        assert_eq!(live.presence(&ch).await.unwrap().len(), 2);
        drop(crashed); // its heartbeat stops, as if the node crashed
        let started = Instant::now();
        loop {
            let p = live.presence(&ch).await.unwrap();
            if !p.contains_key("gone") {
                assert!(p.contains_key("live"), "the live node's client stays");
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(6), "never expired");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(started.elapsed() > Duration::from_secs(1));
        // Well past the TTL the heartbeat still keeps the live client.
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert!(live.presence(&ch).await.unwrap().contains_key("live"));
        live.remove_presence(&ch, "live").await.unwrap();
        assert!(live.presence(&ch).await.unwrap().is_empty());
    })
    .await;
}

/// A broker whose Redis is not there yet: unhealthy with a reason, and publish and subscribe
/// fail fast with `Unavailable` instead of waiting for it.
async fn assert_unavailable(broker: &RedisBroker, ch: &ChannelName) {
    assert!(!broker.wait_healthy(Duration::from_millis(500)).await);
    assert!(!broker.is_healthy());
    assert!(broker.last_error().is_some());
    let started = Instant::now();
    assert!(matches!(
        broker.publish(ch, publication(1), None).await,
        Err(BrokerError::Unavailable(_))
    ));
    assert!(matches!(
        broker.subscribe(ch).await,
        Err(BrokerError::Unavailable(_))
    ));
    assert!(started.elapsed() < Duration::from_secs(8), "fails fast");
}

#[tokio::test]
async fn unreachable_at_start_is_retried_until_redis_comes() {
    bounded(async {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let url = format!("redis://127.0.0.1:{port}");
        let broker = RedisBroker::new(&config(&url, false, 30)).unwrap();
        let ch = ChannelName::new("chat:late").unwrap();
        assert_unavailable(&broker, &ch).await;
        let _redis = RedisServer::start_on(port);
        assert!(
            broker.wait_healthy(Duration::from_secs(10)).await,
            "{:?}",
            broker.last_error()
        );
        broker.subscribe(&ch).await.unwrap();
        broker.publish(&ch, publication(1), None).await.unwrap();
    })
    .await;
}

#[test]
fn urls_are_checked() {
    assert!(check_url("redis://127.0.0.1:6379").is_ok());
    assert!(check_url("redis://:secret@redis.internal/3").is_ok());
    assert!(check_url("http://127.0.0.1:6379").is_err());
    assert!(check_url("rediss://127.0.0.1:6379").is_ok());
    assert!(check_url("127.0.0.1:6379").is_err());
    assert!(check_cluster_url("redis://127.0.0.1:7000").is_ok());
    assert!(check_cluster_url("redis://127.0.0.1:7000/1").is_err());
}

/// A Redis Cluster of three masters (no replicas) of this test only, each a `redis-server`
/// with `--cluster-enabled yes` on a free loopback port (whose bus port, +10000, is free
/// too), joined by `redis-cli --cluster create`; killed by PID at the end.
pub(crate) struct RedisCluster {
    children: Vec<Child>,
    ports: Vec<u16>,
    dir: PathBuf,
    /// Over TLS only (clients and the cluster bus), with these certificates.
    tls: Option<Certificates>,
}

/// A port free now, with its cluster bus port (+10,000) free too: node ports in
/// 10,000-19,999 and bus ports in 20,000-29,999, so the two never overlap, and both below
/// Linux's ephemeral range (32768 and up), so no outgoing connection takes one before
/// redis-server binds it. Ports handed out are remembered for the test process, so two
/// clusters starting at once never pick the same one; `start_with` still retries if a node
/// cannot bind.
fn free_pair() -> u16 {
    static TAKEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = 10_000 + rand::random::<u16>() % 10_000;
        let free = |p: u16| TcpListener::bind(("127.0.0.1", p)).is_ok();
        let mut taken = TAKEN
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !taken.contains(&port) && free(port) && free(port + 10_000) {
            taken.push(port);
            return port;
        }
    }
}

fn redis_cli(args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run redis-cli ({e}): apt-get install redis-server"));
    assert!(
        out.status.success(),
        "redis-cli {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl RedisCluster {
    pub(crate) fn start() -> Self {
        Self::start_with(false)
    }

    fn start_with(tls: bool) -> Self {
        for _ in 0..4 {
            if let Some(cluster) = Self::start_on((0..3).map(|_| free_pair()).collect(), tls) {
                return cluster;
            }
        }
        panic!("redis-server exited at start four times: are ports 10000-32000 in use?");
    }

    /// `None` when a node exited at start (its port was taken meanwhile); its partners are
    /// stopped when the cluster is dropped.
    fn start_on(ports: Vec<u16>, tls: bool) -> Option<Self> {
        let dir = std::env::temp_dir().join(format!(
            "duplex-redis-cluster-{}-{}",
            std::process::id(),
            ports[0]
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut cluster = Self {
            children: Vec::new(),
            ports: ports.clone(),
            dir: dir.clone(),
            tls: tls.then(|| Certificates::new(dir.join("certs"))),
        };
        for port in &ports {
            let port = port.to_string();
            let mut command = Command::new("redis-server");
            match &cluster.tls {
                None => command.args(["--port", &port]),
                Some(certs) => command
                    .args(["--port", "0", "--tls-port", &port, "--tls-cluster", "yes"])
                    .args(["--tls-auth-clients", "no"])
                    .arg("--tls-cert-file")
                    .arg(certs.path("server.pem"))
                    .arg("--tls-key-file")
                    .arg(certs.path("server.key"))
                    .arg("--tls-ca-cert-file")
                    .arg(certs.path("ca.pem")),
            };
            let child = command
                .args(["--bind", "127.0.0.1"])
                .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "5000"])
                .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
                .args(["--save", "", "--appendonly", "no", "--loglevel", "warning"])
                .arg("--dir")
                .arg(&dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("cannot run redis-server ({e}): apt-get install redis-server")
                });
            cluster.children.push(child);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for (node, port) in ports.iter().enumerate() {
            while std::net::TcpStream::connect(("127.0.0.1", *port)).is_err() {
                if matches!(cluster.children[node].try_wait(), Ok(Some(_))) {
                    return None;
                }
                assert!(Instant::now() < deadline, "redis-server did not start");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        // A node that could not bind its bus port exits a little later.
        std::thread::sleep(Duration::from_millis(50));
        if cluster
            .children
            .iter_mut()
            .any(|child| matches!(child.try_wait(), Ok(Some(_))))
        {
            return None;
        }
        let mut create = cluster.tls_args();
        create.extend(["--cluster".to_owned(), "create".to_owned()]);
        create.extend(ports.iter().map(|p| format!("127.0.0.1:{p}")));
        create.push("--cluster-yes".to_owned());
        redis_cli(&create.iter().map(String::as_str).collect::<Vec<_>>());
        let deadline = Instant::now() + Duration::from_secs(20);
        for node in 0..ports.len() {
            while !cluster
                .cli(node, &["cluster", "info"])
                .contains("cluster_state:ok")
            {
                assert!(Instant::now() < deadline, "the cluster never became ok");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Some(cluster)
    }

    pub(crate) fn url(&self, node: usize) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}", self.ports[node])
    }

    /// redis-cli's TLS options, when the cluster speaks TLS.
    fn tls_args(&self) -> Vec<String> {
        match &self.tls {
            Some(certs) => vec![
                "--tls".to_owned(),
                "--cacert".to_owned(),
                certs.path("ca.pem").display().to_string(),
            ],
            None => Vec::new(),
        }
    }

    fn cli(&self, node: usize, args: &[&str]) -> String {
        let mut all = self.tls_args();
        all.extend(["-p".to_owned(), self.ports[node].to_string()]);
        all.extend(args.iter().map(|a| (*a).to_owned()));
        redis_cli(&all.iter().map(String::as_str).collect::<Vec<_>>())
            .trim()
            .to_owned()
    }

    fn id(&self, node: usize) -> String {
        self.cli(node, &["cluster", "myid"])
    }

    /// The index of the master owning `key`'s slot, and the slot.
    fn owner(&self, key: &str) -> (usize, u16) {
        let slot: u16 = self.cli(0, &["cluster", "keyslot", key]).parse().unwrap();
        let ids: Vec<String> = (0..3).map(|n| self.id(n)).collect();
        for line in self.cli(0, &["cluster", "nodes"]).lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            let owns = fields[8..].iter().any(|range| match range.split_once('-') {
                Some((a, b)) => (a.parse().unwrap()..=b.parse().unwrap()).contains(&slot),
                None => range.parse() == Ok(slot),
            });
            if owns {
                return (ids.iter().position(|id| id == fields[0]).unwrap(), slot);
            }
        }
        panic!("no master owns slot {slot}");
    }

    /// Moves `slot` with its keys from master `from` to master `to`, as
    /// `redis-cli --cluster reshard` does.
    fn migrate(&self, slot: u16, from: usize, to: usize) {
        let slot = slot.to_string();
        let (from_id, to_id) = (self.id(from), self.id(to));
        self.cli(to, &["cluster", "setslot", &slot, "importing", &from_id]);
        self.cli(from, &["cluster", "setslot", &slot, "migrating", &to_id]);
        loop {
            let keys = self.cli(from, &["cluster", "getkeysinslot", &slot, "100"]);
            let keys: Vec<&str> = keys.lines().filter(|k| !k.is_empty()).collect();
            if keys.is_empty() {
                break;
            }
            let port = self.ports[to].to_string();
            let mut args = vec!["migrate", "127.0.0.1", &port, "", "0", "5000", "keys"];
            args.extend(keys);
            assert_eq!(self.cli(from, &args), "OK");
        }
        for node in [to, from, 3 - to - from] {
            self.cli(node, &["cluster", "setslot", &slot, "node", &to_id]);
        }
    }

    /// How many `MOVED` replies master `node` gave (`INFO errorstats`).
    fn moved_replies(&self, node: usize) -> u64 {
        self.cli(node, &["info", "errorstats"])
            .lines()
            .find_map(|l| l.strip_prefix("errorstat_MOVED:count="))
            .map_or(0, |n| n.trim().parse().unwrap())
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn cluster_config(cluster: &RedisCluster, sharded: bool) -> BrokerConfig {
    BrokerConfig {
        cluster: true,
        tls_ca_file: cluster.tls.as_ref().map(|certs| certs.path("ca.pem")),
        // Only the first master as a seed: the others are discovered.
        ..config(&cluster.url(0), sharded, 30)
    }
}

#[tokio::test]
async fn behaves_as_a_broker_on_a_cluster() {
    bounded(async {
        let cluster = RedisCluster::start();
        let broker = broker(&cluster_config(&cluster, false)).await;
        crate::broker::suite::run(broker).await;
    })
    .await;
}

#[tokio::test]
async fn behaves_as_a_broker_on_a_cluster_with_sharded_pubsub() {
    bounded(async {
        let cluster = RedisCluster::start();
        let broker = broker(&cluster_config(&cluster, true)).await;
        crate::broker::suite::run(broker.clone()).await;
        let ch = ChannelName::new("chat:sharded").unwrap();
        broker.subscribe(&ch).await.unwrap();
        assert!(broker.channels().await.unwrap().contains(&ch));
    })
    .await;
}

#[tokio::test]
async fn behaves_as_a_broker_on_a_cluster_over_tls() {
    bounded(async {
        let cluster = RedisCluster::start_with(true);
        let broker = broker(&cluster_config(&cluster, true)).await;
        crate::broker::suite::run(broker).await;
    })
    .await;
}

#[tokio::test]
async fn cluster_unreachable_at_start_is_retried_until_it_comes() {
    bounded(async {
        let ports: Vec<u16> = (0..3).map(|_| free_pair()).collect();
        let url = format!("redis://127.0.0.1:{}", ports[0]);
        let config = BrokerConfig {
            cluster: true,
            ..config(&url, true, 30)
        };
        let broker = RedisBroker::new(&config).unwrap();
        let ch = ChannelName::new("chat:late").unwrap();
        assert_unavailable(&broker, &ch).await;
        let _cluster = RedisCluster::start_on(ports, false);
        assert!(
            broker.wait_healthy(Duration::from_secs(20)).await,
            "{:?}",
            broker.last_error()
        );
        let deliveries = Arc::new(Deliveries::default());
        let handler: Arc<dyn BrokerHandler> = deliveries.clone();
        broker.register(Arc::downgrade(&handler));
        broker.subscribe(&ch).await.unwrap();
        let options = HistoryOptions {
            size: 10,
            ttl: Duration::from_secs(60),
        };
        broker
            .publish(&ch, publication(1), Some(options))
            .await
            .unwrap();
        deliveries.wait_for(&ch, &[1]).await;
    })
    .await;
}

/// Records publications per channel.
#[derive(Default)]
struct Deliveries(Mutex<HashMap<String, Vec<u64>>>);

impl BrokerHandler for Deliveries {
    fn handle_publication(&self, channel: &ChannelName, publication: Arc<Publication>) {
        lock(&self.0)
            .entry(channel.to_string())
            .or_default()
            .push(publication.offset);
    }
    fn handle_event(&self, _: &ChannelName, _: ChannelEvent) {}
    fn handle_control(&self, _: Control) {}
}

impl Deliveries {
    async fn wait_for(&self, channel: &ChannelName, offsets: &[u64]) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = lock(&self.0)
                .get(channel.as_str())
                .cloned()
                .unwrap_or_default();
            if got == offsets {
                return;
            }
            assert!(
                Instant::now() < deadline && got.len() <= offsets.len(),
                "{channel}: delivered {got:?}, expected {offsets:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Channels on every master, through a broker that knows only the first one; then a
/// channel's slot moves to another master while the broker is subscribed: its stale slot
/// map meets `MOVED` (counted by the old master), which it follows, and the channel keeps
/// its stream (same epoch, next offsets) and its deliveries.
async fn follows_redirections(sharded: bool) {
    let cluster = RedisCluster::start();
    let config = cluster_config(&cluster, sharded);
    let broker = broker(&config).await;
    let deliveries = Arc::new(Deliveries::default());
    let handler: Arc<dyn BrokerHandler> = deliveries.clone();
    broker.register(Arc::downgrade(&handler));
    let options = HistoryOptions {
        size: 100,
        ttl: Duration::from_secs(60),
    };
    // One channel per master.
    let mut channels: Vec<Option<(ChannelName, u16)>> = vec![None, None, None];
    for i in 0.. {
        if channels.iter().all(Option::is_some) {
            break;
        }
        let ch = ChannelName::new(&format!("chat:r{i}")).unwrap();
        let (owner, slot) = cluster.owner(&broker.inner.key(&ch, "m"));
        channels[owner].get_or_insert((ch, slot));
    }
    let channels: Vec<(ChannelName, u16)> = channels.into_iter().map(Option::unwrap).collect();
    let mut epochs = Vec::new();
    for (ch, _) in &channels {
        broker.subscribe(ch).await.unwrap();
        let mut epoch = None;
        for n in 1..=3 {
            let p = broker
                .publish(ch, publication(n), Some(options))
                .await
                .unwrap();
            assert_eq!(p.offset, u64::from(n));
            epoch = p.epoch.clone();
        }
        deliveries.wait_for(ch, &[1, 2, 3]).await;
        epochs.push(epoch.unwrap());
    }

    // Move the second master's channel to the third master.
    let (moved, slot) = channels[1].clone();
    let moved_before = cluster.moved_replies(1);
    cluster.migrate(slot, 1, 2);
    assert_eq!(cluster.owner(&broker.inner.key(&moved, "m")).0, 2);
    for n in 4..=6 {
        let p = broker
            .publish(&moved, publication(n), Some(options))
            .await
            .unwrap();
        assert_eq!(
            (p.offset, p.epoch.as_ref()),
            (u64::from(n), Some(&epochs[1])),
            "the stream moved with its slot"
        );
    }
    assert!(
        cluster.moved_replies(1) > moved_before,
        "the broker's stale slot map met MOVED"
    );
    deliveries.wait_for(&moved, &[1, 2, 3, 4, 5, 6]).await;
    let h = broker
        .history(&moved, HistoryQuery::default(), options)
        .await
        .unwrap();
    assert_eq!(
        h.publications.iter().map(|p| p.offset).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 6]
    );
    // Presence lives in the moved slot too.
    let info = ClientInfo {
        client: "c".into(),
        user: "u".into(),
        info: None,
    };
    broker.add_presence(&moved, info).await.unwrap();
    assert!(broker.presence(&moved).await.unwrap().contains_key("c"));
    // The other channels were not disturbed.
    for (ch, _) in [&channels[0], &channels[2]] {
        broker
            .publish(ch, publication(4), Some(options))
            .await
            .unwrap();
        deliveries.wait_for(ch, &[1, 2, 3, 4]).await;
    }
    assert!(broker.is_healthy());
}

#[tokio::test]
async fn follows_cluster_redirections() {
    bounded(follows_redirections(false)).await;
}

#[tokio::test]
async fn follows_cluster_redirections_with_sharded_pubsub() {
    bounded(follows_redirections(true)).await;
}

/// Records join and leave events.
#[derive(Default)]
struct Events(Mutex<Vec<(String, ChannelEvent)>>);

impl BrokerHandler for Events {
    fn handle_publication(&self, _: &ChannelName, _: Arc<Publication>) {}
    fn handle_event(&self, channel: &ChannelName, event: ChannelEvent) {
        lock(&self.0).push((channel.to_string(), event));
    }
    fn handle_control(&self, _: Control) {}
}

impl Events {
    fn leaves(&self) -> Vec<String> {
        let mut leaves: Vec<String> = lock(&self.0)
            .iter()
            .filter_map(|(_, e)| match e {
                ChannelEvent::Leave(info) => Some(info.client.to_string()),
                ChannelEvent::Join(_) => None,
            })
            .collect();
        leaves.sort();
        leaves
    }
}

/// A node stops without removing its presence entries (its broker is dropped: no more
/// heartbeats, as in a crash). Two live nodes subscribed to the channel both sweep it; each
/// hears every crashed client leave exactly once, within the TTL plus a sweep period, and
/// presence stops listing them.
async fn crashed_nodes_clients_leave_once(config: BrokerConfig) {
    let live: Vec<Arc<RedisBroker>> = vec![broker(&config).await, broker(&config).await];
    let crashed = broker(&config).await;
    let ch = ChannelName::new("chat:crash").unwrap();
    let info = |c: &str| ClientInfo {
        client: c.into(),
        user: "u".into(),
        info: None,
    };
    let mut recorders = Vec::new();
    for (n, b) in live.iter().enumerate() {
        let events = Arc::new(Events::default());
        let handler: Arc<dyn BrokerHandler> = events.clone();
        b.register(Arc::downgrade(&handler));
        recorders.push((events, handler));
        b.subscribe(&ch).await.unwrap();
        b.add_presence(&ch, info(&format!("live{n}")))
            .await
            .unwrap();
    }
    crashed.add_presence(&ch, info("gone1")).await.unwrap();
    crashed.add_presence(&ch, info("gone2")).await.unwrap();
    let dropped = Instant::now();
    drop(crashed);
    let ttl = Duration::from_secs(config.presence_ttl_secs);
    let sweep = crate::broker::SWEEP_INTERVAL.min(ttl / 3);
    let deadline = dropped + ttl + sweep + Duration::from_secs(2);
    while recorders.iter().any(|(e, _)| e.leaves().len() < 2) {
        assert!(
            Instant::now() < deadline,
            "leaves after {:?}: {:?}",
            dropped.elapsed(),
            recorders
                .iter()
                .map(|(e, _)| e.leaves())
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = dropped.elapsed();
    assert!(
        took >= ttl - Duration::from_millis(500),
        "not before the TTL: {took:?}"
    );
    // Both sweeping nodes ran more sweeps meanwhile: still one leave per client.
    tokio::time::sleep(sweep * 2).await;
    for (events, _) in &recorders {
        assert_eq!(events.leaves(), ["gone1", "gone2"], "exactly once each");
    }
    let present: Vec<String> = {
        let mut p: Vec<String> = live[0].presence(&ch).await.unwrap().into_keys().collect();
        p.sort();
        p
    };
    assert_eq!(present, ["live0", "live1"]);
    for (events, _) in &recorders {
        assert_eq!(
            events.leaves().len(),
            2,
            "reading presence announced nothing more"
        );
    }
}

#[tokio::test]
async fn a_crashed_nodes_clients_leave_once() {
    bounded(async {
        let redis = RedisServer::start();
        crashed_nodes_clients_leave_once(config(&redis.url(), false, 3)).await;
    })
    .await;
}

#[tokio::test]
async fn a_crashed_nodes_clients_leave_once_on_a_cluster_with_sharded_pubsub() {
    bounded(async {
        let cluster = RedisCluster::start();
        let mut config = cluster_config(&cluster, true);
        config.presence_ttl_secs = 3;
        crashed_nodes_clients_leave_once(config).await;
    })
    .await;
}

#[tokio::test]
async fn reading_presence_announces_what_it_expires() {
    bounded(async {
        let redis = RedisServer::start();
        let config = config(&redis.url(), false, 3);
        // This node has no presence entry of its own on the channel, so it never sweeps it.
        let reader = broker(&config).await;
        let events = Arc::new(Events::default());
        let handler: Arc<dyn BrokerHandler> = events.clone();
        reader.register(Arc::downgrade(&handler));
        let ch = ChannelName::new("chat:read").unwrap();
        reader.subscribe(&ch).await.unwrap();
        let crashed = broker(&config).await;
        let gone = ClientInfo {
            client: "gone".into(),
            user: "u".into(),
            info: None,
        };
        crashed.add_presence(&ch, gone).await.unwrap();
        drop(crashed);
        tokio::time::sleep(Duration::from_millis(3300)).await;
        assert!(events.leaves().is_empty(), "nobody swept");
        assert!(reader.presence(&ch).await.unwrap().is_empty());
        let deadline = Instant::now() + Duration::from_secs(2);
        while events.leaves().is_empty() {
            assert!(Instant::now() < deadline, "no leave after the read");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(reader.presence(&ch).await.unwrap().is_empty());
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(events.leaves(), ["gone"]);
    })
    .await;
}

/// Certificates made by `openssl` for one test: a CA, a server certificate for 127.0.0.1
/// and a client certificate, all signed by the CA.
struct Certificates {
    dir: PathBuf,
}

fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl ({e}): apt-get install openssl"));
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Certificates {
    fn new(dir: PathBuf) -> Self {
        std::fs::create_dir_all(&dir).unwrap();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let mut ca = vec!["req", "-x509", "-days", "2", "-subj", "/CN=duplex test CA"];
        ca.extend(ec);
        ca.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
        openssl(&dir, &ca);
        for (name, ext) in [
            ("server", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
            ("client", "extendedKeyUsage=clientAuth"),
        ] {
            let (key, csr, pem) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.pem"),
            );
            let subject = format!("/CN=duplex test {name}");
            let mut req = vec!["req", "-new", "-subj", &subject];
            req.extend(ec);
            req.extend(["-keyout", &key, "-out", &csr]);
            openssl(&dir, &req);
            std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
            let extfile = format!("{name}.ext");
            openssl(
                &dir,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-days",
                    "2",
                    "-extfile",
                    &extfile,
                    "-out",
                    &pem,
                ],
            );
        }
        Self { dir }
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }
}

/// A `redis-server` that speaks only TLS, with the server certificate of `certs`;
/// `auth_clients`: whether it requires a client certificate signed by the CA.
struct TlsRedis {
    child: Child,
    port: u16,
    certs: Certificates,
}

impl TlsRedis {
    fn start(auth_clients: bool) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir =
            std::env::temp_dir().join(format!("duplex-redis-tls-{}-{port}", std::process::id()));
        let certs = Certificates::new(dir.clone());
        let child = Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .arg("--tls-cert-file")
            .arg(certs.path("server.pem"))
            .arg("--tls-key-file")
            .arg(certs.path("server.key"))
            .arg("--tls-ca-cert-file")
            .arg(certs.path("ca.pem"))
            .args([
                "--tls-auth-clients",
                if auth_clients { "yes" } else { "no" },
            ])
            .args(["--save", "", "--appendonly", "no", "--loglevel", "warning"])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run redis-server ({e}): apt-get install redis-server")
            });
        let server = Self { child, port, certs };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server (TLS) did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    fn config(&self, ca: bool, client_cert: bool) -> BrokerConfig {
        BrokerConfig {
            tls_ca_file: ca.then(|| self.certs.path("ca.pem")),
            tls_cert_file: client_cert.then(|| self.certs.path("client.pem")),
            tls_key_file: client_cert.then(|| self.certs.path("client.key")),
            ..config(&format!("rediss://127.0.0.1:{}", self.port), false, 30)
        }
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.certs.dir);
    }
}

#[tokio::test]
async fn behaves_as_a_broker_over_tls() {
    bounded(async {
        let redis = TlsRedis::start(false);
        let broker = broker(&redis.config(true, false)).await;
        crate::broker::suite::run(broker).await;
    })
    .await;
}

#[tokio::test]
async fn tls_checks_the_server_and_presents_the_client_certificate() {
    bounded(async {
        let redis = TlsRedis::start(true);
        // CA and client certificate: works.
        let ok = broker(&redis.config(true, true)).await;
        let ch = ChannelName::new("chat:tls").unwrap();
        ok.subscribe(&ch).await.unwrap();
        ok.publish(&ch, publication(1), None).await.unwrap();
        // Without the client certificate, the server refuses; without the CA, the server's
        // certificate is not trusted (the system's authorities did not sign it).
        for (ca, client) in [(true, false), (false, true)] {
            let refused = RedisBroker::new(&redis.config(ca, client)).unwrap();
            assert!(
                !refused.wait_healthy(Duration::from_secs(2)).await,
                "connected with ca {ca}, client certificate {client}"
            );
            let error = refused.last_error().unwrap_or_default();
            assert!(error.to_lowercase().contains("certificate"), "{error}");
            assert!(matches!(
                refused.publish(&ch, publication(2), None).await,
                Err(BrokerError::Unavailable(_))
            ));
        }
        // Plain redis:// to the TLS port gets nowhere either.
        let plain = RedisBroker::new(&config(
            &format!("redis://127.0.0.1:{}", redis.port),
            false,
            30,
        ))
        .unwrap();
        assert!(!plain.wait_healthy(Duration::from_secs(2)).await);
    })
    .await;
}
