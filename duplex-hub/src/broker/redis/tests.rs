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

#[tokio::test]
async fn unreachable_at_start_is_retried_until_redis_comes() {
    bounded(async {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let url = format!("redis://127.0.0.1:{port}");
        let broker = RedisBroker::new(&config(&url, false, 30)).unwrap();
        assert!(!broker.wait_healthy(Duration::from_millis(500)).await);
        assert!(!broker.is_healthy());
        assert!(broker.last_error().is_some());
        let ch = ChannelName::new("chat:late").unwrap();
        let started = Instant::now();
        assert!(matches!(
            broker.publish(&ch, publication(1), None).await,
            Err(BrokerError::Unavailable(_))
        ));
        assert!(matches!(
            broker.subscribe(&ch).await,
            Err(BrokerError::Unavailable(_))
        ));
        assert!(started.elapsed() < Duration::from_secs(8), "fails fast");
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
    assert!(check_url("rediss://127.0.0.1:6379").is_err());
    assert!(check_url("127.0.0.1:6379").is_err());
}
