//! Prometheus metrics, served at `/metrics`.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

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
    pub publish_to_write: Histogram,
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
            publish_to_write: Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(0.00005, 2.0, 17),
            ),
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
}
