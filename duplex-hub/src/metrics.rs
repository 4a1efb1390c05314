//! Prometheus metrics, served at `/metrics`.

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

type Labels = Vec<(&'static str, &'static str)>;

/// Every counter of the hub.
#[derive(Debug)]
#[non_exhaustive]
pub struct Metrics {
    registry: Registry,
    /// Open WebSocket connections, by dialect (`v1`, `rooms`, `echo`).
    pub connections: Family<Labels, Gauge>,
    /// WebSocket connections accepted since start, by dialect.
    pub connections_total: Family<Labels, Counter>,
    /// Subscriptions held now (a connection on a channel).
    pub subscriptions: Gauge,
    /// Messages received from clients, every dialect (also the `messages_in` of
    /// `sys:stats`).
    pub messages_in: Counter,
    /// Messages sent to clients, every dialect (also the `messages_out` of `sys:stats`).
    pub messages_out: Counter,
    /// Payload bytes received from clients.
    pub bytes_in: Counter,
    /// Payload bytes sent to clients.
    pub bytes_out: Counter,
    /// Publications accepted from clients, rooms and the HTTP API (not the hub's own:
    /// `sys:stats`, the demo feed).
    pub publications: Counter,
    /// Publications queued for a subscriber.
    pub deliveries: Counter,
    /// Seconds from a publication's acceptance to its write to a subscriber's socket.
    pub publish_to_write: LatencyHistogram,
    /// Connections closed with 4001 because their outbound queue was full.
    pub slow_consumer_disconnects: Counter,
    /// Refused tokens, by reason (`invalid`, `expired`).
    pub auth_failures: Family<Labels, Counter>,
    /// Limits hit, by limit.
    pub limit_hits: Family<Labels, Counter>,
    /// Upgrades refused for their Origin.
    pub origin_refusals: Counter,
    /// Broker calls that failed.
    pub broker_errors: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// All metrics at zero, registered under the `duplex_` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("duplex");
        let m = Self {
            connections: Family::default(),
            connections_total: Family::default(),
            subscriptions: Gauge::default(),
            messages_in: Counter::default(),
            messages_out: Counter::default(),
            bytes_in: Counter::default(),
            bytes_out: Counter::default(),
            publications: Counter::default(),
            deliveries: Counter::default(),
            // 50 µs … ~3.3 s
            publish_to_write: LatencyHistogram::default(),
            slow_consumer_disconnects: Counter::default(),
            auth_failures: Family::default(),
            limit_hits: Family::default(),
            origin_refusals: Counter::default(),
            broker_errors: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "connections",
            "Open WebSocket connections",
            m.connections.clone(),
        );
        registry.register(
            "connections_accepted",
            "WebSocket connections accepted",
            m.connections_total.clone(),
        );
        registry.register(
            "subscriptions",
            "Channel subscriptions held",
            m.subscriptions.clone(),
        );
        registry.register(
            "messages_received",
            "Messages received from clients",
            m.messages_in.clone(),
        );
        registry.register(
            "messages_sent",
            "Messages sent to clients",
            m.messages_out.clone(),
        );
        registry.register(
            "bytes_received",
            "Payload bytes received from clients",
            m.bytes_in.clone(),
        );
        registry.register(
            "bytes_sent",
            "Payload bytes sent to clients",
            m.bytes_out.clone(),
        );
        registry.register(
            "publications",
            "Publications accepted",
            m.publications.clone(),
        );
        registry.register(
            "deliveries",
            "Publications queued for subscribers",
            m.deliveries.clone(),
        );
        registry.register(
            "publish_to_write_seconds",
            "Time from a publication's acceptance to its write to a subscriber",
            m.publish_to_write.clone(),
        );
        registry.register(
            "slow_consumer_disconnects",
            "Connections closed with 4001 for a full outbound queue",
            m.slow_consumer_disconnects.clone(),
        );
        registry.register("auth_failures", "Refused tokens", m.auth_failures.clone());
        registry.register("limit_hits", "Limits hit", m.limit_hits.clone());
        registry.register(
            "origin_refusals",
            "Upgrades refused for their Origin",
            m.origin_refusals.clone(),
        );
        registry.register(
            "broker_errors",
            "Broker calls that failed",
            m.broker_errors.clone(),
        );
        Self { registry, ..m }
    }

    /// Counts a connection of `dialect` opened (`connections` and `connections_total`);
    /// returns its `connections` gauge, to decrement when the connection ends.
    pub(crate) fn connection_opened(&self, dialect: &'static str) -> Gauge {
        let labels = vec![("dialect", dialect)];
        let gauge = self.connections.get_or_create(&labels).clone();
        gauge.inc();
        self.connections_total.get_or_create(&labels).inc();
        gauge
    }

    /// Counts a hit of `limit`.
    pub fn limit_hit(&self, limit: &'static str) {
        self.limit_hits.get_or_create(&vec![("limit", limit)]).inc();
    }

    /// Counts a refused token.
    pub fn auth_failure(&self, reason: &'static str) {
        self.auth_failures
            .get_or_create(&vec![("reason", reason)])
            .inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// Upper bounds of [`LatencyHistogram`]'s buckets: 50 µs doubling 16 times (to about 3.3 s),
/// then +Inf.
const LATENCY_BUCKETS: usize = 17;
const LATENCY_BASE_US: u64 = 50;

/// A latency histogram observed once per delivery, from every worker thread: its counts are
/// plain atomics, so an observation takes no lock (prometheus-client's `Histogram` takes a
/// write lock for each) and finds its bucket by arithmetic instead of a search. Buckets:
/// 50 µs × 2^i for i in 0..17, and +Inf. Cheap to clone (shared).
#[derive(Debug, Clone, Default)]
pub struct LatencyHistogram(Arc<LatencyCounts>);

#[derive(Debug, Default)]
struct LatencyCounts {
    /// Not cumulative: `buckets[i]` counts observations in (bound(i-1), bound(i)]; the last
    /// one those above every bound.
    buckets: [AtomicU64; LATENCY_BUCKETS + 1],
    sum_us: AtomicU64,
}

impl LatencyHistogram {
    /// Counts one observation of `us` microseconds.
    pub fn observe_us(&self, us: u64) {
        // The smallest i with us <= 50 * 2^i: i = ceil(log2(ceil(us / 50))).
        let units = us.div_ceil(LATENCY_BASE_US);
        let index = if units <= 1 {
            0
        } else {
            (u64::BITS - (units - 1).leading_zeros()) as usize
        };
        let counts = &self.0;
        counts.buckets[index.min(LATENCY_BUCKETS)].fetch_add(1, Relaxed);
        counts.sum_us.fetch_add(us, Relaxed);
    }

    /// Counts one observation of `seconds` (negative counts as 0).
    pub fn observe(&self, seconds: f64) {
        self.observe_us((seconds.max(0.0) * 1e6).round() as u64);
    }

    /// Observations so far (the sum of the buckets: no counter of its own to update).
    pub fn count(&self) -> u64 {
        self.0.buckets.iter().map(|n| n.load(Relaxed)).sum()
    }
}

impl TypedMetric for LatencyHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for LatencyHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let counts = &self.0;
        // Read the buckets first and derive the count from them, so a scrape during
        // observations stays consistent (the count is the +Inf bucket).
        let buckets: Vec<(f64, u64)> = (0..=LATENCY_BUCKETS)
            .map(|i| {
                let bound = if i == LATENCY_BUCKETS {
                    f64::MAX // written as +Inf
                } else {
                    (LATENCY_BASE_US << i) as f64 / 1e6
                };
                (bound, counts.buckets[i].load(Relaxed))
            })
            .collect();
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = counts.sum_us.load(Relaxed) as f64 / 1e6;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders() {
        let m = Metrics::new();
        m.publications.inc();
        m.limit_hit("max_connections");
        m.connections.get_or_create(&vec![("dialect", "v1")]).inc();
        m.publish_to_write.observe(0.001);
        let text = m.render();
        assert!(text.contains("duplex_publications_total 1"), "{text}");
        assert!(
            text.contains("duplex_limit_hits_total{limit=\"max_connections\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("duplex_connections{dialect=\"v1\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("duplex_publish_to_write_seconds_count 1"),
            "{text}"
        );
    }

    #[test]
    fn latency_buckets_are_cumulative_with_their_bounds() {
        let h = LatencyHistogram::default();
        // Bounds: 50 µs, 100 µs, 200 µs, ... 50 µs * 2^16 = 3.2768 s, +Inf.
        for us in [0, 50, 51, 100, 101, 3_276_800, 3_276_801, 10_000_000] {
            h.observe_us(us);
        }
        h.observe(0.000_2); // 200 µs
        h.observe(-1.0); // a clock step back: 0
        assert_eq!(h.count(), 10);
        let mut registry = Registry::default();
        registry.register("lat", "test", h.clone());
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        for line in [
            "lat_bucket{le=\"0.00005\"} 3",
            "lat_bucket{le=\"0.0001\"} 5",
            "lat_bucket{le=\"0.0002\"} 7",
            "lat_bucket{le=\"0.0004\"} 7",
            "lat_bucket{le=\"3.2768\"} 8",
            "lat_bucket{le=\"+Inf\"} 10",
            "lat_count 10",
            "lat_sum 16.554103", // the microseconds above, in seconds
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}
