//! The `sys:stats` channel: every second each node publishes what it carries (connections,
//! channels, subscriptions, messages in and out) through the broker, so with Redis every
//! node's figures reach every node's subscribers (the `/status` page).
//!
//! The message counts are the node's Prometheus counters, incremented once per frame where
//! frames are read and written: this task only reads them.

use crate::broker::Data;
use crate::channel::ChannelName;
use crate::node::Node;
use bytes::Bytes;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::time::MissedTickBehavior;
use tracing::debug;

/// The channel of the stats publications.
pub const STATS_CHANNEL: &str = "sys:stats";

/// Time between two publications.
pub const STATS_INTERVAL: Duration = Duration::from_secs(1);

/// Counter readings at one instant, for rates between two of them.
#[derive(Debug, Clone, Copy)]
struct Reading {
    at: Instant,
    messages_in: u64,
    messages_out: u64,
}

impl Reading {
    fn take(node: &Node) -> Self {
        Self {
            at: Instant::now(),
            messages_in: node.metrics().messages_in.get(),
            messages_out: node.metrics().messages_out.get(),
        }
    }
}

/// Events per second between two counter values `elapsed` apart, rounded.
fn rate(before: u64, after: u64, elapsed: Duration) -> u64 {
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 {
        return 0;
    }
    (after.saturating_sub(before) as f64 / secs).round() as u64
}

/// The data of one `sys:stats` publication: the node's figures now, with the rates since
/// `previous`.
fn stats_json(node: &Node, previous: &Reading, now: &Reading) -> serde_json::Value {
    let elapsed = now.at.duration_since(previous.at);
    let unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    json!({
        "node": node.name(),
        "time": unix_ms,
        "uptime_secs": node.uptime().as_secs(),
        "connections": node.connection_count(),
        "channels": node.local_channel_count(),
        "subscriptions": node.metrics().subscriptions.get().max(0),
        "messages_in": now.messages_in,
        "messages_out": now.messages_out,
        "in_rate": rate(previous.messages_in, now.messages_in, elapsed),
        "out_rate": rate(previous.messages_out, now.messages_out, elapsed),
    })
}

/// Publishes this node's stats on [`STATS_CHANNEL`] every [`STATS_INTERVAL`] until the task is
/// aborted (when `serve` returns). Skips a tick while the broker is unavailable rather than
/// logging a failure every second.
pub(crate) async fn run(node: Arc<Node>) {
    let channel = ChannelName::new(STATS_CHANNEL).expect("a valid channel name");
    let start = tokio::time::Instant::now() + STATS_INTERVAL;
    let mut tick = tokio::time::interval_at(start, STATS_INTERVAL);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut previous = Reading::take(&node);
    loop {
        tick.tick().await;
        let now = Reading::take(&node);
        let data = stats_json(&node, &previous, &now);
        previous = now;
        if !node.broker().is_healthy() {
            continue;
        }
        let data = Data::Json(Bytes::from(data.to_string()));
        if let Err(error) = node.publish_own(&channel, data, None).await {
            debug!(%error, "sys:stats not published");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{HubConfig, MemoryBroker, Settings};

    #[test]
    fn rates_are_per_second() {
        assert_eq!(rate(100, 150, Duration::from_secs(1)), 50);
        assert_eq!(rate(100, 150, Duration::from_millis(500)), 100);
        assert_eq!(rate(100, 101, Duration::from_secs(3)), 0);
        assert_eq!(rate(100, 102, Duration::from_secs(3)), 1);
        assert_eq!(
            rate(5, 3, Duration::from_secs(1)),
            0,
            "a counter never goes back"
        );
        assert_eq!(rate(0, 10, Duration::ZERO), 0);
    }

    #[tokio::test]
    async fn stats_carry_every_field() {
        let node = Node::new(
            Settings::new(HubConfig::default()).unwrap(),
            Arc::new(MemoryBroker::new()),
        );
        let before = Reading::take(&node);
        node.metrics().messages_in.inc_by(30);
        node.metrics().messages_out.inc_by(7);
        let mut after = Reading::take(&node);
        after.at = before.at + Duration::from_secs(2);
        let v = stats_json(&node, &before, &after);
        assert_eq!(v["node"], node.name());
        assert_eq!(
            (v["messages_in"].as_u64(), v["messages_out"].as_u64()),
            (Some(30), Some(7))
        );
        assert_eq!(
            (v["in_rate"].as_u64(), v["out_rate"].as_u64()),
            (Some(15), Some(4))
        );
        assert_eq!(v["connections"], 0);
        assert_eq!(v["channels"], 0);
        assert_eq!(v["subscriptions"], 0);
        assert!(v["uptime_secs"].is_u64());
        assert!(v["time"].as_u64().unwrap() > 1_700_000_000_000);
        assert_eq!(v.as_object().unwrap().len(), 10);
    }
}
