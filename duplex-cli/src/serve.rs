//! `duplex serve`: the real-time hub.

use crate::echo::Signals;
use anyhow::Context;
use clap::builder::BoolishValueParser;
use clap::Args;
use duplex_hub::broker::{Broker, RedisBroker};
use duplex_hub::config::quote;
use duplex_hub::{MemoryBroker, Node, Settings};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tracing::{error, info};

/// Flags of `duplex serve`. Each setting also comes from the TOML file (`--config`) and from
/// `DUPLEX__*` variables; precedence: file < `DUPLEX__*` < flags (and their `DUPLEX_*`
/// variables) < `--set`.
#[derive(Debug, Args)]
#[command(
    after_help = "CONFIGURATION:\n  Every key of the TOML file (see docs/configuration.md) can also be set by\n  \
    an environment variable DUPLEX__<KEY PATH> (upper case, '__' between levels),\n  \
    e.g. DUPLEX__LIMITS__PUBLISH_RATE=20 or DUPLEX__NAMESPACES__CHAT__HISTORY_SIZE=50,\n  \
    or by --set limits.publish_rate=20. Values are TOML values; anything else is a string.\n  \
    Precedence: file < DUPLEX__* < the flags above (and their DUPLEX_* variables) < --set.\n  \
    An invalid configuration is refused at start with a message naming the key.\n\n\
    ENDPOINTS:\n  /ws (duplex.v1, docs/protocol.md), /rooms/{room}, /echo, /api/* (docs/http-api.md),\n  \
    /metrics, /healthz, /readyz; pages: / /chat /prices /status /plain, SDK: /duplex.js"
)]
pub struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, short = 'c', env = "DUPLEX_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on (port 0: any free port). [default: 127.0.0.1:8080]
    #[arg(long, env = "DUPLEX_LISTEN", value_name = "ADDR")]
    listen: Option<String>,
    /// Key for the HTTP API (`Authorization: apikey KEY`), at least 16 characters; may be
    /// repeated. Without any, the HTTP API is off.
    #[arg(
        long = "api-key",
        env = "DUPLEX_API_KEY",
        value_name = "KEY",
        value_delimiter = ','
    )]
    api_keys: Vec<String>,
    /// A browser origin allowed besides same-origin and localhost (`scheme://host[:port]`, or
    /// "*" for all); may be repeated.
    #[arg(
        long = "allowed-origin",
        env = "DUPLEX_ALLOWED_ORIGINS",
        value_name = "ORIGIN",
        value_delimiter = ','
    )]
    allowed_origins: Vec<String>,
    /// Maximum WebSocket connections (then 503). [default: 10000]
    #[arg(long, env = "DUPLEX_MAX_CONNECTIONS", value_name = "N")]
    max_connections: Option<usize>,
    /// Largest inbound message in bytes (then close 1009). [default: 65536]
    #[arg(long, env = "DUPLEX_MAX_MESSAGE_SIZE", value_name = "BYTES")]
    max_message_size: Option<usize>,
    /// Publications per second per connection (then close 4002). [default: 50]
    #[arg(long, env = "DUPLEX_PUBLISH_RATE", value_name = "N")]
    publish_rate: Option<u32>,
    /// Seconds between server pings; 0 turns them off. [default: 25]
    #[arg(long, env = "DUPLEX_PING_INTERVAL", value_name = "SECS")]
    ping_interval: Option<u64>,
    /// Serve TLS with this PEM certificate chain (with --tls-key).
    #[arg(
        long,
        env = "DUPLEX_TLS_CERT",
        requires = "tls_key",
        value_name = "PEM"
    )]
    tls_cert: Option<PathBuf>,
    /// Serve TLS with this PEM private key (with --tls-cert).
    #[arg(
        long,
        env = "DUPLEX_TLS_KEY",
        requires = "tls_cert",
        value_name = "PEM"
    )]
    tls_key: Option<PathBuf>,
    /// Turn permessage-deflate off.
    #[arg(long, env = "DUPLEX_NO_COMPRESSION", value_parser = BoolishValueParser::new())]
    no_compression: bool,
    /// This node's name in logs and the connect reply. [default: random]
    #[arg(long, env = "DUPLEX_NODE_NAME", value_name = "NAME")]
    node_name: Option<String>,
    /// Share channels, history and presence with other nodes through this Redis
    /// (`redis://host[:port][/db]`). [default: in memory, one node]
    #[arg(long, env = "DUPLEX_BROKER", value_name = "URL")]
    broker: Option<String>,
    /// Publish a simulated price feed on `prices:<SYMBOL>` for the /prices page (turn it on
    /// for one node only: each node with it publishes its own).
    #[arg(long, env = "DUPLEX_DEMO_FEED", value_parser = BoolishValueParser::new())]
    demo_feed: bool,
    /// Set any configuration key: KEY=VALUE (a TOML value); may be repeated.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

impl ServeArgs {
    fn overrides(&self) -> anyhow::Result<Vec<(String, String)>> {
        let mut o = Vec::new();
        let mut put = |k: &str, v: String| o.push((k.to_owned(), v));
        if let Some(listen) = &self.listen {
            put("listen", quote(listen));
        }
        if !self.api_keys.is_empty() {
            put(
                "api.keys",
                format!(
                    "[{}]",
                    self.api_keys
                        .iter()
                        .map(|k| quote(k))
                        .collect::<Vec<_>>()
                        .join(",")
                ),
            );
        }
        if !self.allowed_origins.is_empty() {
            put(
                "allowed_origins",
                format!(
                    "[{}]",
                    self.allowed_origins
                        .iter()
                        .map(|k| quote(k))
                        .collect::<Vec<_>>()
                        .join(",")
                ),
            );
        }
        if let Some(n) = self.max_connections {
            put("limits.max_connections", n.to_string());
        }
        if let Some(n) = self.max_message_size {
            put("limits.max_message_size", n.to_string());
        }
        if let Some(n) = self.publish_rate {
            put("limits.publish_rate", n.to_string());
        }
        if let Some(n) = self.ping_interval {
            put("ping.interval_secs", n.to_string());
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            put("tls.cert_file", quote(&cert.to_string_lossy()));
            put("tls.key_file", quote(&key.to_string_lossy()));
        }
        if self.no_compression {
            put("compression", "false".into());
        }
        if let Some(name) = &self.node_name {
            put("node_name", quote(name));
        }
        if let Some(url) = &self.broker {
            put("broker.url", quote(url));
        }
        if self.demo_feed {
            put("demo.feed", "true".into());
        }
        for set in &self.set {
            let (k, v) = set
                .split_once('=')
                .with_context(|| format!("--set {set:?}: expected KEY=VALUE"))?;
            o.push((k.trim().to_owned(), v.trim().to_owned()));
        }
        Ok(o)
    }
}

/// Runs the hub until SIGTERM or SIGINT, then drains.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let overrides = args.overrides()?;
    let settings = Settings::load(args.config.as_deref(), std::env::vars(), &overrides)
        .context("invalid configuration")?;
    let mut stop = Signals::new()?;
    let listener = crate::listen(settings.listen).await?;
    let local = listener.local_addr()?;
    let tls = settings.tls.is_some();
    let (broker, broker_kind): (Arc<dyn Broker>, &str) = match &settings.broker.url {
        Some(_) => {
            let redis = Arc::new(RedisBroker::new(&settings.broker).context("broker.url")?);
            // Redis may come later: the hub starts anyway, /readyz says 503 until it does.
            let watched = redis.clone();
            tokio::spawn(async move {
                if !watched.wait_healthy(Duration::from_secs(3)).await {
                    error!(
                        redis = watched.address(),
                        error = watched.last_error().as_deref().unwrap_or("no answer"),
                        "cannot reach Redis: retrying in the background; /readyz answers 503 \
                         and publishing fails until it is reachable"
                    );
                }
            });
            (redis, "redis")
        }
        None => (Arc::new(MemoryBroker::new()), "memory"),
    };
    let node = Node::new(settings, broker);
    eprintln!("listening on {local}");
    info!(
        addr = %local,
        node = node.name(),
        tls,
        broker = broker_kind,
        demo_feed = node.settings().demo.feed,
        "duplex hub ready: {}://{local}/",
        if tls { "https" } else { "http" }
    );
    duplex_hub::serve(node, listener, async move {
        let signal = stop.recv().await;
        info!(
            signal,
            "stopping: readiness off, closing every connection with 1001"
        );
    })
    .await
    .context("serving")?;
    Ok(())
}
