//! End-to-end tests of the hub over real sockets: the duplex.v1 protocol, permissions,
//! history and recovery, presence, limits and slow consumers.

mod e2e;

use duplex::{ClientBuilder, Message};
use duplex_hub::config::{NamespaceConfig, Permission, SlowConsumerPolicy};
use duplex_hub::HubConfig;
use e2e::{bounded, Client, Hub};
use serde_json::{json, Value};
use std::time::Duration;

#[tokio::test]
async fn subscribe_publish_unsubscribe() {
    bounded(async {
        let hub = Hub::start(HubConfig::default()).await;
        let mut alice = hub.client().await;
        let mut bob = hub.client().await;
        let reply = alice
            .cmd(json!({"cmd": "subscribe", "channel": "chat:lobby"}))
            .await;
        let result = &reply["result"];
        assert_eq!(result["channel"], "chat:lobby");
        assert_eq!(result["offset"], 0);
        assert_eq!(result["recoverable"], true);
        // Nothing was ever published: the empty epoch, which no stream has.
        assert_eq!(result["epoch"], "");

        let reply = bob
            .cmd(json!({"cmd": "publish", "channel": "chat:lobby", "data": {"text": "hi"}}))
            .await;
        assert_eq!(reply["result"]["offset"], 1);
        let epoch = reply["result"]["epoch"].as_str().unwrap().to_owned();
        assert!(!epoch.is_empty());
        let push = alice.push().await;
        assert_eq!(push["push"], "publication");
        assert_eq!(push["channel"], "chat:lobby");
        assert_eq!(push["data"], json!({"text": "hi"}));
        assert_eq!(push["offset"], 1);
        assert_eq!(push["epoch"], epoch.as_str());
        assert_eq!(push["info"]["client"], bob.client_id().as_str());

        // Binary data travels in a binary frame, without base64.
        let header = br#"{"id":99,"cmd":"publish","channel":"chat:lobby"}"#;
        let mut frame = (header.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(header);
        frame.extend_from_slice(&[0, 1, 2, 255]);
        bob.send(Message::binary(frame)).await;
        assert_eq!(bob.reply(99).await["result"]["offset"], 2);
        let push = alice.push().await;
        assert_eq!(push["offset"], 2);
        assert_eq!(push["_binary"], json!([0, 1, 2, 255]));

        assert_eq!(
            alice
                .cmd(json!({"cmd": "unsubscribe", "channel": "chat:lobby"}))
                .await["result"],
            json!({})
        );
        bob.cmd(json!({"cmd": "publish", "channel": "chat:lobby", "data": 3}))
            .await;
        alice.no_push(Duration::from_millis(200)).await;
        let reply = alice
            .cmd(json!({"cmd": "unsubscribe", "channel": "chat:lobby"}))
            .await;
        assert_eq!(reply["error"]["code"], 110);
        assert_eq!(alice.cmd(json!({"cmd": "ping"})).await["result"], json!({}));
    })
    .await;
}

#[tokio::test]
async fn errors_are_replies_and_bad_frames_close() {
    bounded(async {
        let hub = Hub::start(HubConfig::default()).await;
        let mut c = hub.client().await;
        let code = |v: &Value| v["error"]["code"].as_u64().unwrap();
        assert_eq!(
            code(
                &c.cmd(json!({"cmd": "subscribe", "channel": "nope:x"}))
                    .await
            ),
            102
        );
        assert_eq!(
            code(
                &c.cmd(json!({"cmd": "subscribe", "channel": "bad name"}))
                    .await
            ),
            102
        );
        assert_eq!(code(&c.cmd(json!({"cmd": "subscribe"})).await), 107);
        assert_eq!(code(&c.cmd(json!({"cmd": "fly"})).await), 104);
        assert_eq!(code(&c.cmd(json!({"cmd": "connect"})).await), 105);
        c.cmd(json!({"cmd": "subscribe", "channel": "chat:a"}))
            .await;
        assert_eq!(
            code(
                &c.cmd(json!({"cmd": "subscribe", "channel": "chat:a"}))
                    .await
            ),
            105
        );
        // prices: publish needs a token.
        assert_eq!(
            code(
                &c.cmd(json!({"cmd": "publish", "channel": "prices:BTC", "data": 1}))
                    .await
            ),
            103
        );
        // presence is off for the default namespace, history too.
        assert_eq!(
            code(&c.cmd(json!({"cmd": "presence", "channel": "news"})).await),
            108
        );
        assert_eq!(
            code(&c.cmd(json!({"cmd": "history", "channel": "news"})).await),
            108
        );
        // Not JSON: closed with 4500 and a disconnect push.
        c.send(Message::text("hello?")).await;
        let (close, _, push) = c.closed().await;
        assert_eq!(close, 4500);
        assert_eq!(push.unwrap()["reconnect"], false);

        // The first command must be connect.
        let mut c = Client::open(&hub, None).await.unwrap();
        c.send(Message::text(
            r#"{"id":1,"cmd":"subscribe","channel":"chat:a"}"#,
        ))
        .await;
        assert_eq!(c.closed().await.0, 4500);

        // Without the subprotocol: 400 before the upgrade.
        let err = ClientBuilder::new(hub.url("/ws"))
            .connect()
            .await
            .unwrap_err();
        assert_eq!(err.handshake_status().map(|s| s.as_u16()), Some(400));
    })
    .await;
}

fn history_config(size: usize) -> HubConfig {
    let mut config = HubConfig::default();
    let chat = config.namespaces.get_mut("chat").unwrap();
    chat.history_size = size;
    config
}

async fn publish_n(c: &mut Client, channel: &str, from: u64, to: u64) {
    for i in from..=to {
        let reply = c
            .cmd(json!({"cmd": "publish", "channel": channel, "data": {"n": i}}))
            .await;
        assert_eq!(reply["result"]["offset"], i, "{reply}");
    }
}

#[tokio::test]
async fn recovery_after_reconnect_is_complete_ordered_and_without_duplicates() {
    bounded(async {
        let hub = Hub::start(history_config(1000)).await;
        let mut publisher = hub.client().await;
        let mut sub = hub.client().await;
        sub.cmd(json!({"cmd": "subscribe", "channel": "chat:r"})).await;
        publish_n(&mut publisher, "chat:r", 1, 3).await;
        // A client recovers from the last position it saw: the last push's.
        let mut epoch = String::new();
        for i in 1..=3 {
            let push = sub.push().await;
            assert_eq!(push["data"]["n"], i);
            epoch = push["epoch"].as_str().unwrap().to_owned();
        }
        drop(sub);

        // Missed while away: 4..=10.
        publish_n(&mut publisher, "chat:r", 4, 10).await;
        let mut sub = hub.client().await;
        // Publications keep flowing while the client resubscribes.
        let flood = {
            let mut p = hub.client().await;
            tokio::spawn(async move {
                publish_n(&mut p, "chat:r", 11, 40).await;
            })
        };
        let r = sub
            .cmd(json!({"cmd": "subscribe", "channel": "chat:r", "recover": {"offset": 3, "epoch": epoch}}))
            .await;
        let result = &r["result"];
        assert_eq!(result["recovered"], true, "{r}");
        let recovered: Vec<u64> = result["publications"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["offset"].as_u64().unwrap())
            .collect();
        assert!(recovered.len() >= 7);
        assert_eq!(recovered, (4..4 + recovered.len() as u64).collect::<Vec<_>>());
        flood.await.unwrap();
        let mut next = 4 + recovered.len() as u64;
        while next <= 40 {
            let push = sub.push().await;
            assert_eq!(push["offset"], next, "gap or duplicate: {push}");
            assert_eq!(push["data"]["n"], next);
            next += 1;
        }
        sub.no_push(Duration::from_millis(200)).await;
    })
    .await;
}

#[tokio::test]
async fn not_recovered_when_history_is_too_short_or_epoch_differs() {
    bounded(async {
        let hub = Hub::start(history_config(3)).await;
        let mut p = hub.client().await;
        let mut sub = hub.client().await;
        let r = sub.cmd(json!({"cmd": "subscribe", "channel": "chat:s"})).await;
        let empty = r["result"]["epoch"].as_str().unwrap().to_owned();
        drop(sub);
        publish_n(&mut p, "chat:s", 1, 5).await;
        let mut sub = hub.client().await;
        // From the empty epoch of a channel that had no stream yet: not recovered, as the
        // hub cannot tell which stream the client saw.
        let r = sub
            .cmd(json!({"cmd": "subscribe", "channel": "chat:s", "recover": {"offset": 0, "epoch": empty}}))
            .await;
        assert_eq!(r["result"]["recovered"], false, "{r}");
        assert!(r["result"]["publications"].as_array().is_none_or(|a| a.is_empty()));
        assert_eq!(r["result"]["offset"], 5);
        let epoch = r["result"]["epoch"].as_str().unwrap().to_owned();
        // History too short: 1..=5 needed, 3..=5 kept.
        sub.cmd(json!({"cmd": "unsubscribe", "channel": "chat:s"})).await;
        let r = sub
            .cmd(json!({"cmd": "subscribe", "channel": "chat:s", "recover": {"offset": 0, "epoch": epoch}}))
            .await;
        assert_eq!(r["result"]["recovered"], false, "{r}");
        // Exactly at the edge: 2..=5 are needed, 3..=5 kept.
        sub.cmd(json!({"cmd": "unsubscribe", "channel": "chat:s"})).await;
        let r = sub
            .cmd(json!({"cmd": "subscribe", "channel": "chat:s", "recover": {"offset": 1, "epoch": epoch}}))
            .await;
        assert_eq!(r["result"]["recovered"], false);
        sub.cmd(json!({"cmd": "unsubscribe", "channel": "chat:s"})).await;
        let r = sub
            .cmd(json!({"cmd": "subscribe", "channel": "chat:s", "recover": {"offset": 2, "epoch": epoch}}))
            .await;
        assert_eq!(r["result"]["recovered"], true);
        assert_eq!(r["result"]["publications"].as_array().unwrap().len(), 3);
        sub.cmd(json!({"cmd": "unsubscribe", "channel": "chat:s"})).await;
        let r = sub
            .cmd(json!({"cmd": "subscribe", "channel": "chat:s", "recover": {"offset": 2, "epoch": "another"}}))
            .await;
        assert_eq!(r["result"]["recovered"], false);
        assert_eq!(r["result"]["epoch"], epoch.as_str());

        // Recovery asked for where the namespace has none: an explicit "not recovered".
        let r = sub
            .cmd(json!({"cmd": "subscribe", "channel": "news", "recover": {"offset": 0, "epoch": "e"}}))
            .await;
        assert_eq!(r["result"]["recovered"], false, "{r}");

        // History command.
        let h = sub.cmd(json!({"cmd": "history", "channel": "chat:s", "limit": 2})).await;
        let offsets: Vec<_> = h["result"]["publications"].as_array().unwrap().iter().map(|p| p["offset"].clone()).collect();
        assert_eq!(offsets, [json!(4), json!(5)]);
        let h = sub
            .cmd(json!({"cmd": "history", "channel": "chat:s", "since": {"offset": 4, "epoch": epoch}}))
            .await;
        assert_eq!(h["result"]["publications"][0]["data"], json!({"n": 5}));
        let h = sub
            .cmd(json!({"cmd": "history", "channel": "chat:s", "since": {"offset": 4, "epoch": "x"}}))
            .await;
        assert_eq!(h["error"]["code"], 112);
    })
    .await;
}

#[tokio::test]
async fn presence_join_and_leave() {
    bounded(async {
        let hub = Hub::start(HubConfig::default()).await;
        let mut a = hub.client().await;
        let mut b = hub.client().await;
        a.cmd(json!({"cmd": "subscribe", "channel": "chat:p"}))
            .await;
        b.cmd(json!({"cmd": "subscribe", "channel": "chat:p"}))
            .await;
        let join = a.push().await;
        assert_eq!(join["push"], "join");
        assert_eq!(join["info"]["client"], b.client_id().as_str());
        let p = a.cmd(json!({"cmd": "presence", "channel": "chat:p"})).await;
        let clients = p["result"]["clients"].as_object().unwrap();
        assert_eq!(clients.len(), 2);
        assert!(clients.contains_key(&a.client_id()) && clients.contains_key(&b.client_id()));
        let s = a
            .cmd(json!({"cmd": "presence_stats", "channel": "chat:p"}))
            .await;
        assert_eq!(s["result"], json!({"clients": 2, "users": 1}));
        b.cmd(json!({"cmd": "unsubscribe", "channel": "chat:p"}))
            .await;
        let leave = a.push().await;
        assert_eq!(
            (leave["push"].as_str(), leave["info"]["client"].as_str()),
            (Some("leave"), Some(b.client_id().as_str()))
        );
        b.cmd(json!({"cmd": "subscribe", "channel": "chat:p"}))
            .await;
        assert_eq!(a.push().await["push"], "join");
        let b_id = b.client_id();
        drop(b);
        let leave = a.push().await;
        assert_eq!(
            (leave["push"].as_str(), leave["info"]["client"].as_str()),
            (Some("leave"), Some(b_id.as_str()))
        );
        let s = a
            .cmd(json!({"cmd": "presence_stats", "channel": "chat:p"}))
            .await;
        assert_eq!(s["result"]["clients"], 1);
        // b saw no join of its own.
    })
    .await;
}

#[tokio::test]
async fn limits_have_their_documented_results() {
    bounded(async {
        let mut config = HubConfig::default();
        config.limits.max_connections = 3;
        config.limits.max_subscriptions = 2;
        config.limits.publish_rate = 5;
        config.limits.max_message_size = 1024;
        config.limits.outbound_queue_bytes = 4096;
        config.namespaces.get_mut("chat").unwrap().max_subscribers = 1;
        let hub = Hub::start(config).await;
        let mut a = hub.client().await;
        let mut b = hub.client().await;
        let mut c = hub.client().await;
        // max_connections: 503 with Retry-After.
        let err = Client::open(&hub, None).await.err().expect("refused");
        assert_eq!(err.handshake_status().map(|s| s.as_u16()), Some(503));
        // max_subscriptions: 106.
        a.cmd(json!({"cmd": "subscribe", "channel": "news"})).await;
        a.cmd(json!({"cmd": "subscribe", "channel": "chat:one"}))
            .await;
        let r = a.cmd(json!({"cmd": "subscribe", "channel": "other"})).await;
        assert_eq!(r["error"]["code"], 106);
        // max_subscribers of the namespace: 106.
        let r = b
            .cmd(json!({"cmd": "subscribe", "channel": "chat:one"}))
            .await;
        assert_eq!(r["error"]["code"], 106);
        // max_message_size: 1009.
        b.send(Message::text(format!(
            r#"{{"id":5,"cmd":"publish","channel":"news","data":"{}"}}"#,
            "x".repeat(2000)
        )))
        .await;
        assert_eq!(b.closed().await.0, 1009);
        // publish_rate: 4002 once the bucket of 5 is empty.
        let mut closed = None;
        for i in 0..20 {
            c.ws.send(Message::text(format!(
                r#"{{"id":{},"cmd":"publish","channel":"news","data":1}}"#,
                i + 10
            )))
            .await
            .ok();
        }
        if closed.is_none() {
            closed = Some(c.closed().await);
        }
        let (code, _, push) = closed.unwrap();
        assert_eq!(code, 4002);
        assert_eq!(push.unwrap()["reconnect"], true);
        let text = raw_get(&hub, "/metrics").await;
        for limit in [
            "max_connections",
            "max_subscriptions",
            "max_subscribers",
            "publish_rate",
            "max_message_size",
        ] {
            assert!(
                text.contains(&format!("duplex_limit_hits_total{{limit=\"{limit}\"}}")),
                "{limit} in\n{text}"
            );
        }
    })
    .await;
}

async fn raw_get(hub: &Hub, path: &str) -> String {
    e2e::get_text(hub.addr, path).await
}

#[tokio::test]
async fn handshake_timeout_closes_silent_connections() {
    bounded(async {
        use tokio::io::AsyncReadExt;
        let mut config = HubConfig::default();
        config.limits.handshake_timeout_secs = 1;
        let hub = Hub::start(config).await;
        let mut tcp = tokio::net::TcpStream::connect(hub.addr).await.unwrap();
        let started = std::time::Instant::now();
        let mut buf = [0u8; 256];
        let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
            .await
            .expect("closed by the hub");
        assert!(started.elapsed() >= Duration::from_millis(900));
        let _ = n; // EOF, or a 408 response: either way the connection ends
        let text = raw_get(&hub, "/metrics").await;
        assert!(
            text.contains("duplex_limit_hits_total{limit=\"handshake_timeout\"} 1"),
            "{text}"
        );
    })
    .await;
}

#[tokio::test]
async fn slow_consumer_is_disconnected_while_fast_ones_get_everything() {
    bounded(async {
        let mut config = HubConfig::default();
        config.limits.outbound_queue_bytes = 64 * 1024 * 2;
        config.limits.publish_rate = 100_000;
        let hub = Hub::start(config).await;
        let mut slow = hub.client().await;
        let mut fast = hub.client().await;
        slow.cmd(json!({"cmd": "subscribe", "channel": "news"}))
            .await;
        fast.cmd(json!({"cmd": "subscribe", "channel": "news"}))
            .await;
        let mut p = hub.client().await;
        // 8 MB: more than the hub's socket send buffer (4 MB at most) and its queue hold.
        let n = 1000u64;
        // Incompressible, as permessage-deflate is on.
        let payload = noise(8 * 1024);
        // The slow client reads nothing while n × 8 KiB are published; the fast one reads
        // concurrently.
        let fast_task = tokio::spawn(async move {
            for i in 1..=n {
                let push = fast.push().await;
                assert_eq!(push["data"]["i"], i, "fast subscriber lost or reordered");
            }
            fast
        });
        for i in 1..=n {
            let r = p
                .cmd(json!({"cmd": "publish", "channel": "news", "data": {"i": i, "pad": payload}}))
                .await;
            assert!(r.get("result").is_some());
        }
        let _fast = fast_task.await.unwrap();
        let (code, reason, push) = slow.closed().await;
        assert_eq!((code, reason.as_str()), (4001, "slow consumer"));
        assert_eq!(push.unwrap()["reconnect"], true);
        let text = raw_get(&hub, "/metrics").await;
        assert!(
            text.contains("duplex_slow_consumer_disconnects_total 1"),
            "{text}"
        );
    })
    .await;
}

#[tokio::test]
async fn conflation_keeps_the_latest_per_key() {
    bounded(async {
        let mut config = HubConfig::default();
        config.limits.outbound_queue_bytes = 256 * 1024;
        config.limits.publish_rate = 100_000;
        config.namespaces.insert(
            "board".into(),
            NamespaceConfig {
                publish: Permission::Anonymous,
                slow_consumer: SlowConsumerPolicy::Conflate,
                ..NamespaceConfig::default()
            },
        );
        let hub = Hub::start(config).await;
        let mut slow = Client::open_slow(&hub).await;
        let mut fast = hub.client().await;
        slow.cmd(json!({"cmd": "subscribe", "channel": "board:prices"})).await;
        fast.cmd(json!({"cmd": "subscribe", "channel": "board:prices"})).await;
        let keys = ["BTC", "ETH", "SOL"];
        let n = 3000u64;
        let pad = noise(1024);
        // A subscriber that reads at once may still see superseded publications skipped when
        // its task runs behind the publisher: that is what conflation promises. Every key
        // only moves forward, and its last value arrives.
        let fast_task = tokio::spawn(async move { read_conflated(&mut fast, n).await });
        let mut p = hub.client().await;
        for i in 1..=n {
            let key = keys[(i % 3) as usize];
            let cmd = json!({"cmd": "publish", "channel": "board:prices", "key": key, "data": {"i": i, "key": key, "pad": pad}});
            p.send(Message::text({
                let mut c = cmd;
                c["id"] = json!(i + 10);
                c.to_string()
            }))
            .await;
        }
        p.reply(n + 10).await;
        // The slow subscriber now reads: each key's pushes only move forward, and the last
        // one of each key is its latest publication; it was never disconnected.
        let fast_received = fast_task.await.unwrap();
        let received = read_conflated(&mut slow, n).await;
        assert!(received < n, "nothing was conflated ({received} of {n})");
        assert!(fast_received <= n);
        slow.no_push(Duration::from_millis(300)).await;
        let text = raw_get(&hub, "/metrics").await;
        assert!(text.contains("duplex_slow_consumer_disconnects_total 0"), "{text}");
    })
    .await;
}

/// `len` characters that deflate cannot shrink much.
fn noise(len: usize) -> String {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'!' + (x % 90) as u8)
        })
        .collect()
}

/// Reads conflated pushes until every key reached its last value; returns how many arrived.
async fn read_conflated(c: &mut Client, n: u64) -> u64 {
    let mut last = std::collections::HashMap::new();
    let mut received = 0;
    while last.values().filter(|&&i| i + 3 > n).count() < 3 {
        let push = c.push().await;
        assert_eq!(push["push"], "publication", "{push}");
        let key = push["key"].as_str().unwrap().to_owned();
        let i = push["data"]["i"].as_u64().unwrap();
        assert_eq!(push["data"]["key"], key.as_str());
        let prev = last.insert(key, i).unwrap_or(0);
        assert!(i > prev, "a key went backwards");
        received += 1;
    }
    received
}

#[tokio::test]
async fn echo_endpoint_echoes() {
    bounded(async {
        let hub = Hub::start(HubConfig::default()).await;
        let (mut ws, _) = duplex::connect(&hub.url("/echo")).await.unwrap();
        ws.send(Message::text("hello")).await.unwrap();
        assert_eq!(ws.recv().await.unwrap().unwrap(), Message::text("hello"));
        ws.send(Message::binary(vec![1, 2, 3])).await.unwrap();
        assert_eq!(
            ws.recv().await.unwrap().unwrap(),
            Message::binary(vec![1, 2, 3])
        );
    })
    .await;
}

#[tokio::test]
async fn graceful_shutdown_closes_everyone_with_1001() {
    bounded(async {
        let mut config = HubConfig::default();
        config.shutdown.drain_secs = 1;
        let mut hub = Hub::start(config).await;
        let mut clients = Vec::new();
        for _ in 0..5 {
            clients.push(hub.client().await);
        }
        let (mut room, _) = duplex::connect(&hub.url("/rooms/lobby")).await.unwrap();
        assert!(raw_get(&hub, "/readyz").await.starts_with("HTTP/1.1 200"));
        hub.stop();
        // While draining, HTTP still answers: readiness is off and new upgrades get 503.
        let mut readyz = String::new();
        for _ in 0..50 {
            readyz = raw_get(&hub, "/readyz").await;
            if readyz.starts_with("HTTP/1.1 503") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            readyz.starts_with("HTTP/1.1 503") && readyz.contains("draining"),
            "{readyz}"
        );
        let refused = Client::open(&hub, None)
            .await
            .err()
            .expect("refused while draining");
        assert_eq!(refused.handshake_status().map(|s| s.as_u16()), Some(503));
        for c in &mut clients {
            assert_eq!(c.closed().await.0, 1001);
        }
        assert!(room.recv().await.is_none());
        assert_eq!(
            room.close_frame().unwrap().code,
            duplex::CloseCode::GOING_AWAY
        );
        hub.wait().await;
        assert_eq!(hub.node.connection_count(), 0);
    })
    .await;
}

#[tokio::test]
async fn silent_clients_are_dropped_after_the_pong_timeout() {
    bounded(async {
        let mut config = HubConfig::default();
        config.ping.interval_secs = 1;
        config.ping.timeout_secs = 1;
        let hub = Hub::start(config).await;
        let mut alive = hub.client().await;
        let mut silent = Client::open_slow(&hub).await;
        // The live client reads (and so answers pings) for 3.5 s; the silent one reads nothing.
        let deadline = tokio::time::Instant::now() + Duration::from_millis(3500);
        while tokio::time::Instant::now() < deadline {
            let _ = tokio::time::timeout(Duration::from_millis(200), alive.ws.recv()).await;
        }
        assert!(alive
            .cmd(json!({"cmd": "ping"}))
            .await
            .get("result")
            .is_some());
        assert_eq!(
            hub.node.connection_count(),
            1,
            "the silent client was dropped"
        );
        // Its socket was closed by the hub (no close handshake: it did not answer).
        let ended = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(Ok(_)) = silent.ws.recv().await {}
        })
        .await;
        assert!(ended.is_ok());
    })
    .await;
}

#[tokio::test]
async fn conflation_never_drops_the_latest_value_of_another_key() {
    bounded(async {
        let hub = Hub::start(HubConfig::default()).await;
        let mut sub = hub.client().await;
        sub.cmd(json!({"cmd": "subscribe", "channel": "prices:X"}))
            .await;
        // Three publications before the subscriber's task runs (the test runtime has one
        // thread and the memory broker never yields): BTC@1, ETH@2, BTC@3. BTC@3 takes BTC@1's
        // place in the queue, ahead of ETH@2; both must still arrive.
        let channel = duplex_hub::ChannelName::new("prices:X").unwrap();
        for key in ["BTC", "ETH", "BTC"] {
            let data = duplex_hub::broker::Data::Json(format!("{{\"k\":\"{key}\"}}").into());
            hub.node
                .publish(&channel, data, None, Some(key))
                .await
                .unwrap();
        }
        let mut got = Vec::new();
        for _ in 0..2 {
            let push = sub.push().await;
            got.push((
                push["key"].as_str().unwrap().to_owned(),
                push["offset"].as_u64().unwrap(),
            ));
        }
        got.sort();
        assert_eq!(got, [("BTC".to_owned(), 3), ("ETH".to_owned(), 2)]);
        sub.no_push(Duration::from_millis(200)).await;
    })
    .await;
}

#[tokio::test]
async fn command_rate_is_limited_with_error_111() {
    bounded(async {
        let mut config = HubConfig::default();
        config.limits.command_rate = 5;
        let hub = Hub::start(config).await;
        let mut c = hub.client().await;
        let mut codes = Vec::new();
        for _ in 0..8 {
            let r = c.cmd(json!({"cmd": "history", "channel": "chat:x"})).await;
            codes.push(r["error"]["code"].as_u64());
        }
        // The bucket holds 5: the rest are refused, and the connection stays open.
        assert_eq!(
            codes.iter().filter(|c| **c == Some(111)).count(),
            3,
            "{codes:?}"
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(c.cmd(json!({"cmd": "ping"})).await.get("result").is_some());
    })
    .await;
}

#[tokio::test]
async fn index_page_links_documents_that_are_served() {
    bounded(async {
        let hub = Hub::start(HubConfig::default()).await;
        let index = raw_get(&hub, "/").await;
        assert!(
            index.starts_with("HTTP/1.1 200") && index.contains("duplex serve"),
            "{index}"
        );
        let links: Vec<&str> = index
            .split("href=\"")
            .skip(1)
            .filter_map(|rest| rest.split('"').next())
            .filter(|link| link.starts_with('/')) // not `#sdk` nor a `data:` icon
            .collect();
        assert!(links.contains(&"/docs/protocol.md"), "{links:?}");
        for link in links {
            let page = raw_get(&hub, link).await;
            assert!(page.starts_with("HTTP/1.1 200"), "{link}: {page}");
        }
        assert!(raw_get(&hub, "/docs/protocol.md")
            .await
            .contains("# The duplex protocol"));
        assert!(raw_get(&hub, "/docs/secret")
            .await
            .starts_with("HTTP/1.1 404"));
    })
    .await;
}

/// A member of a busy room still gets its own messages read: a backlog of publications
/// must not keep its connection from reading what the client sends (here: a message for
/// the room, then a close frame).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooded_room_member_is_still_read() {
    bounded(async {
        let mut config = HubConfig::default();
        // Room for the backlog below: the member is slow for a while, not a slow consumer.
        config.limits.outbound_queue_bytes = 256 << 20;
        let hub = Hub::start(config).await;
        let (member, _) = duplex::connect(&hub.url("/rooms/busy")).await.unwrap();
        let (mut other, _) = duplex::connect(&hub.url("/rooms/busy")).await.unwrap();
        // The other member reads everything, and reports the member's message.
        let watch = tokio::spawn(async move {
            loop {
                match other.recv().await {
                    Some(Ok(Message::Text(t))) if t.as_str() == "from the member" => return,
                    Some(Ok(_)) => {}
                    end => panic!("the other member's connection ended: {end:?}"),
                }
            }
        });
        // Publications, as fast as the hub takes them, until the test ends.
        let floods: Vec<_> = (0..4)
            .map(|_| {
                let node = hub.node.clone();
                tokio::spawn(async move {
                    let channel = duplex_hub::ChannelName::new("rooms:busy").unwrap();
                    loop {
                        let data = duplex_hub::broker::Data::Text("x".repeat(1024).into());
                        node.publish(&channel, data, None, None).await.unwrap();
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        let (mut reader, mut writer) = member.split();
        // The member does not read for a while: its socket fills and publications queue
        // up in its outbox. Then it sends, and starts reading.
        tokio::time::sleep(Duration::from_millis(500)).await;
        writer.send(Message::text("from the member")).await.unwrap();
        let drain = tokio::spawn(async move {
            let mut n = 0u64;
            while let Some(Ok(_)) = reader.recv().await {
                n += 1;
            }
            (n, reader.close_frame().map(|f| f.code))
        });
        let got = tokio::time::timeout(Duration::from_secs(5), watch).await;
        assert!(
            matches!(got, Ok(Ok(()))),
            "the member's message was not read within 5 s: {got:?}"
        );
        // Its close frame is read, and answered, while publications keep coming.
        let closed = tokio::time::timeout(
            Duration::from_secs(5),
            writer.close(duplex::CloseCode::NORMAL, "bye"),
        )
        .await;
        assert!(
            closed.is_ok(),
            "the close handshake did not finish within 5 s"
        );
        closed.unwrap().unwrap();
        let (n, code) = drain.await.unwrap();
        assert!(n >= 100, "the member was flooded: {n} publications");
        assert_eq!(code, Some(duplex::CloseCode::NORMAL));
        for flood in floods {
            flood.abort();
        }
    })
    .await;
}
