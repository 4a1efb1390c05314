//! The hub's configuration: TOML, then `DUPLEX__*` environment variables, then flags, all
//! validated once into [`Settings`], which cannot hold an invalid value.
//!
//! Every key of the TOML file can be overridden without a file:
//! * by an environment variable `DUPLEX__` + the key path in upper case with `__` between
//!   levels: `DUPLEX__LIMITS__MAX_CONNECTIONS=5000`,
//!   `DUPLEX__NAMESPACES__CHAT__HISTORY_SIZE=50`;
//! * by a flag `--set limits.max_connections=5000` (the `duplex serve` command line), or one
//!   of its named flags.
//!
//! Values are TOML values (`5000`, `true`, `["https://a.example"]`); anything that does not
//! parse as one is taken as a string.

use crate::auth::{AuthConfig, Authenticator};
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The environment variable prefix of key overrides.
pub const ENV_PREFIX: &str = "DUPLEX__";

/// The namespace of the hub's own channels (`sys:stats`): always configured (a configuration
/// without it gets the built-in one), and no client may publish in it, whatever its
/// `publish` rule or a token's grants say.
pub const SYS_NAMESPACE: &str = "sys";

/// A configuration that cannot be used; the message names the key.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

impl ConfigError {
    fn at(key: &str, message: impl std::fmt::Display) -> Self {
        Self(format!("{key}: {message}"))
    }
}

/// The whole configuration, as written in the TOML file. Every field has a default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct HubConfig {
    /// Address to listen on. Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// This node's name in logs, metrics and the connect reply. Default: random.
    pub node_name: Option<String>,
    /// Browser origins allowed to connect besides same-origin and (if
    /// `allow_localhost_origins`) localhost ones, as `scheme://host[:port]`; `"*"` allows
    /// every origin (switches off the cross-site WebSocket hijacking protection).
    pub allowed_origins: Vec<String>,
    /// Allow origins on localhost, `127.0.0.1` and `[::1]` (any port). Default `true`.
    pub allow_localhost_origins: bool,
    /// permessage-deflate for clients that offer it (with `server_no_context_takeover`,
    /// so a publication is compressed once for all subscribers). Default `true`.
    pub compression: bool,
    /// Serve TLS (wss://, https://) with these PEM files.
    pub tls: Option<TlsConfig>,
    /// Limits.
    pub limits: LimitsConfig,
    /// Server pings.
    pub ping: PingConfig,
    /// Graceful shutdown.
    pub shutdown: ShutdownConfig,
    /// The HTTP API.
    pub api: ApiConfig,
    /// Raw rooms (`/rooms/{room}`).
    pub rooms: RoomsConfig,
    /// JWT keys.
    pub auth: AuthConfig,
    /// The broker between nodes: in memory (one node) unless `broker.url` names a Redis.
    pub broker: BrokerConfig,
    /// The demo pages' simulated data.
    pub demo: DemoConfig,
    /// Options of channels without a namespace (`news`).
    pub default_namespace: NamespaceConfig,
    /// Options per namespace (`[namespaces.chat]` for `chat:*`). A channel whose namespace is
    /// not here is refused. Default: `chat`, `prices`, `rooms` and `sys` (see the docs);
    /// [`Settings`] adds the built-in `sys` ([`SYS_NAMESPACE`]) to a map without it.
    pub namespaces: BTreeMap<String, NamespaceConfig>,
}

/// `[demo]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DemoConfig {
    /// Publish a simulated price feed on `prices:<SYMBOL>` (about 4 updates per second per
    /// symbol), for the `/prices` page. Needs the `prices` namespace. Every node with it on
    /// publishes its own feed, so turn it on for one node only. Default `false`.
    pub feed: bool,
}

/// `[tls]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert_file: PathBuf,
    /// PEM private key.
    pub key_file: PathBuf,
}

/// `[limits]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// WebSocket connections at once; more are refused with 503 and `Retry-After`.
    /// Default 10000.
    pub max_connections: usize,
    /// Largest inbound message, bytes; larger ones close with 1009. Default 65536.
    pub max_message_size: usize,
    /// Subscriptions per connection (error 106 beyond). Default 128.
    pub max_subscriptions: usize,
    /// Publications per second per connection (a token bucket holding as many); exceeding
    /// it closes with 4002. Default 50.
    pub publish_rate: u32,
    /// Other commands (subscribe, unsubscribe, presence, history, ping) per second per
    /// connection (a token bucket holding as many); beyond it they are answered with error
    /// 111. Default 100.
    pub command_rate: u32,
    /// Time for a new TCP connection to send its request head. Default 10.
    pub handshake_timeout_secs: u64,
    /// Bytes queued for one slow connection before the slow-consumer policy acts.
    /// Default 1048576.
    pub outbound_queue_bytes: usize,
}

/// `[ping]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PingConfig {
    /// Seconds between server pings (0: none). Default 25 (nginx closes idle proxied
    /// connections after 60 s).
    pub interval_secs: u64,
    /// Seconds without any frame from the client after a ping before it is dropped.
    /// Default 20.
    pub timeout_secs: u64,
}

/// `[shutdown]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// Seconds over which clients are closed with 1001, spread out so their reconnects do
    /// not arrive at once. Default 5.
    pub drain_secs: u64,
    /// Seconds after the signal at which the process exits whatever is left. Default 15.
    pub timeout_secs: u64,
}

/// `[api]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Keys accepted as `Authorization: apikey <key>` (at least 16 characters each). With
    /// none, the HTTP API answers 403 to everything.
    pub keys: Vec<String>,
}

/// `[rooms]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoomsConfig {
    /// Deliver a room message to its sender too. Default `false`.
    pub echo_to_sender: bool,
}

/// `[broker]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerConfig {
    /// `redis://[user:password@]host[:port][/db]` (`rediss://` for TLS): publications,
    /// history and presence go through this Redis, shared by every node using it. Default:
    /// none (the in-memory broker, a single node).
    pub url: Option<String>,
    /// With `rediss://`: PEM file of the certificate authorities to trust for the Redis
    /// server's certificate, instead of the system's. Default: none.
    pub tls_ca_file: Option<PathBuf>,
    /// With `rediss://`: PEM file of this node's client certificate, for a Redis that
    /// authenticates clients (`tls-auth-clients yes`); with `tls_key_file`. Default: none.
    pub tls_cert_file: Option<PathBuf>,
    /// The private key (PEM) of `tls_cert_file`. Default: none.
    pub tls_key_file: Option<PathBuf>,
    /// `url` is a node of a Redis Cluster: connect to every master, route each command to the
    /// master of its slot and follow `MOVED`/`ASK` redirections. Default `false`.
    pub cluster: bool,
    /// More Redis Cluster nodes to discover the cluster from when the node of `url` does not
    /// answer (with `cluster` only). Default: none.
    pub cluster_seeds: Vec<String>,
    /// Use sharded Pub/Sub (`SSUBSCRIBE`/`SPUBLISH`, Redis 7), the mode meant for Redis
    /// Cluster: a message goes to the shard of its channel only. Default `false`.
    pub sharded: bool,
    /// Prefix of every Redis key and Pub/Sub channel, so hubs can share a Redis.
    /// Default `"duplex:"`.
    pub prefix: String,
    /// Seconds a presence entry lives without a heartbeat (sent every third of it), so the
    /// clients of a crashed node disappear. Default 30.
    pub presence_ttl_secs: u64,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            url: None,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            cluster: false,
            cluster_seeds: Vec::new(),
            sharded: false,
            prefix: "duplex:".to_owned(),
            presence_ttl_secs: 30,
        }
    }
}

/// Who may subscribe to or publish in a namespace. A token's `channels` grants allow more.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Permission {
    /// Everyone, with or without a token.
    Anonymous,
    /// Clients with a valid token.
    Authenticated,
    /// The user whose id is the channel's local name (`user:42` for `sub` 42).
    Owner,
    /// Only clients whose token grants the channel.
    Grant,
    /// Clients whose token has `claim` equal to `equals`.
    Claim {
        /// The claim's name.
        claim: String,
        /// The value it must have.
        equals: serde_json::Value,
    },
}

impl<'de> Deserialize<'de> for Permission {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        let expected = "expected \"anonymous\", \"authenticated\", \"owner\", \"grant\" or \
                        { claim = \"name\", equals = value }";
        match value {
            serde_json::Value::String(word) => match word.as_str() {
                "anonymous" => Ok(Self::Anonymous),
                "authenticated" => Ok(Self::Authenticated),
                "owner" => Ok(Self::Owner),
                "grant" => Ok(Self::Grant),
                other => Err(serde::de::Error::custom(format!(
                    "unknown permission {other:?}; {expected}"
                ))),
            },
            serde_json::Value::Object(mut map) if map.len() == 2 => {
                match (map.remove("claim"), map.remove("equals")) {
                    (Some(serde_json::Value::String(claim)), Some(equals)) => {
                        Ok(Self::Claim { claim, equals })
                    }
                    _ => Err(serde::de::Error::custom(expected)),
                }
            }
            _ => Err(serde::de::Error::custom(expected)),
        }
    }
}

/// What happens when a subscriber's outbound queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlowConsumerPolicy {
    /// Close the connection with 4001 (reconnect and recover). The default.
    #[default]
    Disconnect,
    /// Keep only the latest undelivered publication per `key` for that subscriber (price
    /// boards); a publication without a key, or a new key on a full queue, disconnects.
    Conflate,
}

/// Options of one namespace (`[namespaces.NAME]`, or `[default_namespace]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NamespaceConfig {
    /// Who may subscribe. Default `"anonymous"`.
    pub subscribe: Permission,
    /// Who may publish from a client connection (the HTTP API always may). Default
    /// `"authenticated"`.
    pub publish: Permission,
    /// Keep presence (who is subscribed). Default `false`.
    pub presence: bool,
    /// Push join and leave to subscribers (needs `presence`). Default `false`.
    pub join_leave: bool,
    /// Publications kept per channel (0: no history). Default 0.
    pub history_size: usize,
    /// Seconds a publication stays in history. Default 0.
    pub history_ttl_secs: u64,
    /// Let a resubscribing client recover what it missed (needs history). Default `false`.
    pub recover: bool,
    /// Subscribers per channel on this node (0: unlimited). Default 0.
    pub max_subscribers: usize,
    /// The slow-consumer policy. Default `"disconnect"`.
    pub slow_consumer: SlowConsumerPolicy,
}

impl Default for NamespaceConfig {
    fn default() -> Self {
        Self {
            subscribe: Permission::Anonymous,
            publish: Permission::Authenticated,
            presence: false,
            join_leave: false,
            history_size: 0,
            history_ttl_secs: 0,
            recover: false,
            max_subscribers: 0,
            slow_consumer: SlowConsumerPolicy::Disconnect,
        }
    }
}

impl NamespaceConfig {
    /// Whether the namespace keeps history.
    pub fn has_history(&self) -> bool {
        self.history_size > 0 && self.history_ttl_secs > 0
    }

    /// How long a publication stays in history.
    pub fn history_ttl(&self) -> Duration {
        Duration::from_secs(self.history_ttl_secs)
    }
}

/// The namespaces a configuration starts with. A file (or override) that names any
/// `[namespaces.*]` replaces the built-in map only if the file itself has a `namespaces`
/// table; overrides of single keys (`DUPLEX__NAMESPACES__CHAT__HISTORY_SIZE=50`) apply to
/// the built-ins. Keys of `[default_namespace]` are merged over the built-in one.
pub const BUILTIN_NAMESPACES: &str = r#"
[default_namespace]
publish = "anonymous"

[namespaces.chat]
publish = "anonymous"
presence = true
join_leave = true
history_size = 100
history_ttl_secs = 600
recover = true

[namespaces.prices]
history_size = 1
history_ttl_secs = 60
recover = true
slow_consumer = "conflate"

[namespaces.rooms]
publish = "anonymous"

[namespaces.sys]
publish = "grant"
"#;

fn builtin_table() -> toml::Table {
    BUILTIN_NAMESPACES
        .parse()
        .expect("the built-in namespaces are valid TOML")
}

#[derive(Deserialize)]
struct Builtins {
    default_namespace: NamespaceConfig,
    namespaces: BTreeMap<String, NamespaceConfig>,
}

impl Default for HubConfig {
    fn default() -> Self {
        let builtins = Builtins::deserialize(toml::Value::Table(builtin_table()))
            .expect("the built-in namespaces are valid");
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            node_name: None,
            allowed_origins: Vec::new(),
            allow_localhost_origins: true,
            compression: true,
            tls: None,
            limits: LimitsConfig::default(),
            ping: PingConfig::default(),
            shutdown: ShutdownConfig::default(),
            api: ApiConfig::default(),
            rooms: RoomsConfig::default(),
            auth: AuthConfig::default(),
            broker: BrokerConfig::default(),
            demo: DemoConfig::default(),
            default_namespace: builtins.default_namespace,
            namespaces: builtins.namespaces,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            max_message_size: 64 * 1024,
            max_subscriptions: 128,
            publish_rate: 50,
            command_rate: 100,
            handshake_timeout_secs: 10,
            outbound_queue_bytes: 1024 * 1024,
        }
    }
}

impl Default for PingConfig {
    fn default() -> Self {
        Self {
            interval_secs: 25,
            timeout_secs: 20,
        }
    }
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            drain_secs: 5,
            timeout_secs: 15,
        }
    }
}

/// A validated configuration; constructed only by [`Settings::new`] or [`Settings::load`],
/// so every value in it is usable. Read it through `Deref` to [`HubConfig`].
#[derive(Debug, Clone)]
pub struct Settings {
    config: HubConfig,
    authenticator: Authenticator,
}

impl Deref for Settings {
    type Target = HubConfig;
    fn deref(&self) -> &HubConfig {
        &self.config
    }
}

impl Settings {
    /// Validates `config`.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first bad key.
    pub fn new(mut config: HubConfig) -> Result<Self, ConfigError> {
        if !config.namespaces.contains_key(SYS_NAMESPACE) {
            let mut builtins = Builtins::deserialize(toml::Value::Table(builtin_table()))
                .expect("the built-in namespaces are valid");
            let sys = builtins
                .namespaces
                .remove(SYS_NAMESPACE)
                .expect("sys is a built-in namespace");
            config.namespaces.insert(SYS_NAMESPACE.to_owned(), sys);
        }
        validate(&config)?;
        let authenticator =
            Authenticator::new(&config.auth).map_err(|e| ConfigError(e.to_string()))?;
        Ok(Self {
            config,
            authenticator,
        })
    }

    /// Reads the TOML file (if any), applies `DUPLEX__*` variables from `env`, then
    /// `overrides` (`("limits.max_connections", "5000")`, from flags), and validates.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file, variable or key at fault.
    pub fn load<E>(
        file: Option<&Path>,
        env: E,
        overrides: &[(String, String)],
    ) -> Result<Self, ConfigError>
    where
        E: IntoIterator<Item = (String, String)>,
    {
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
                text.parse::<toml::Table>()
                    .map_err(|e| ConfigError(format!("{}: {e}", path.display())))?
            }
            None => toml::Table::new(),
        };
        let mut builtin = builtin_table();
        if !table.contains_key("namespaces") {
            if let Some(namespaces) = builtin.remove("namespaces") {
                table.insert("namespaces".into(), namespaces);
            }
        }
        if let Some(toml::Value::Table(mut default_ns)) = builtin.remove("default_namespace") {
            match table.remove("default_namespace") {
                Some(toml::Value::Table(file)) => default_ns.extend(file),
                Some(other) => {
                    table.insert("default_namespace".into(), other);
                }
                None => {}
            }
            table
                .entry("default_namespace")
                .or_insert(toml::Value::Table(default_ns));
        }
        let mut env_overrides: Vec<(String, String)> = env
            .into_iter()
            .filter_map(|(k, v)| {
                let path = k.strip_prefix(ENV_PREFIX)?;
                Some((
                    path.split("__")
                        .map(str::to_ascii_lowercase)
                        .collect::<Vec<_>>()
                        .join("."),
                    v,
                ))
            })
            .collect();
        env_overrides.sort();
        for (key, raw) in env_overrides.iter().chain(overrides) {
            set_key(&mut table, key, raw)?;
        }
        let config: HubConfig = HubConfig::deserialize(toml::Value::Table(table)).map_err(|e| {
            let message = e.to_string();
            ConfigError(message.trim_end().replace('\n', " "))
        })?;
        Self::new(config)
    }

    /// The JWT verifier built from `[auth]`.
    pub fn authenticator(&self) -> &Authenticator {
        &self.authenticator
    }

    /// The options of `namespace` (`""` is the default namespace), if configured.
    pub fn namespace(&self, namespace: &str) -> Option<&NamespaceConfig> {
        if namespace.is_empty() {
            Some(&self.config.default_namespace)
        } else {
            self.config.namespaces.get(namespace)
        }
    }

    /// Server ping interval, if pings are on.
    pub fn ping_interval(&self) -> Option<Duration> {
        (self.ping.interval_secs > 0).then(|| Duration::from_secs(self.ping.interval_secs))
    }
}

/// `value` as a TOML string literal, for an override whose value must stay a string.
pub fn quote(value: &str) -> String {
    toml::Value::String(value.to_owned()).to_string()
}

/// Sets the dotted `key` of `table` to `raw`, parsed as a TOML value or else taken as a string.
fn set_key(table: &mut toml::Table, key: &str, raw: &str) -> Result<(), ConfigError> {
    let value = format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()));
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(ConfigError::at(key, "not a key path"));
    }
    let mut current = table;
    for part in &parts[..parts.len() - 1] {
        let entry = current
            .entry((*part).to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = match entry {
            toml::Value::Table(t) => t,
            _ => return Err(ConfigError::at(key, format!("{part} is not a table"))),
        };
    }
    current.insert(parts[parts.len() - 1].to_owned(), value);
    Ok(())
}

fn validate(c: &HubConfig) -> Result<(), ConfigError> {
    let l = &c.limits;
    if l.max_connections == 0 {
        return Err(ConfigError::at(
            "limits.max_connections",
            "must be at least 1",
        ));
    }
    if !(125..=16 * 1024 * 1024).contains(&l.max_message_size) {
        return Err(ConfigError::at(
            "limits.max_message_size",
            "must be between 125 and 16777216 bytes",
        ));
    }
    if l.max_subscriptions == 0 {
        return Err(ConfigError::at(
            "limits.max_subscriptions",
            "must be at least 1",
        ));
    }
    if l.publish_rate == 0 {
        return Err(ConfigError::at(
            "limits.publish_rate",
            "must be at least 1 per second",
        ));
    }
    if l.command_rate == 0 {
        return Err(ConfigError::at(
            "limits.command_rate",
            "must be at least 1 per second",
        ));
    }
    if l.handshake_timeout_secs == 0 {
        return Err(ConfigError::at(
            "limits.handshake_timeout_secs",
            "must be at least 1",
        ));
    }
    if l.outbound_queue_bytes < 2 * l.max_message_size {
        return Err(ConfigError::at(
            "limits.outbound_queue_bytes",
            format!(
                "must be at least twice limits.max_message_size ({} bytes)",
                2 * l.max_message_size
            ),
        ));
    }
    if c.ping.interval_secs > 0 && c.ping.timeout_secs == 0 {
        return Err(ConfigError::at(
            "ping.timeout_secs",
            "must be at least 1 when pings are on",
        ));
    }
    if c.shutdown.timeout_secs <= c.shutdown.drain_secs {
        return Err(ConfigError::at(
            "shutdown.timeout_secs",
            "must be longer than shutdown.drain_secs",
        ));
    }
    if let Some(name) = &c.node_name {
        if name.is_empty()
            || name.len() > 64
            || !name
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch))
        {
            return Err(ConfigError::at(
                "node_name",
                "1 to 64 ASCII letters, digits, '-', '_' or '.'",
            ));
        }
    }
    for (i, origin) in c.allowed_origins.iter().enumerate() {
        if origin != "*" && parse_origin(origin).is_none() {
            return Err(ConfigError::at(
                &format!("allowed_origins[{i}]"),
                format!(
                    "{origin:?} is not an origin like https://app.example.com[:port], nor \"*\""
                ),
            ));
        }
    }
    for (i, key) in c.api.keys.iter().enumerate() {
        if key.len() < 16 || !key.chars().all(|ch| ch.is_ascii_graphic()) {
            return Err(ConfigError::at(
                &format!("api.keys[{i}]"),
                "must be at least 16 printable ASCII characters",
            ));
        }
    }
    if let Some(tls) = &c.tls {
        for (key, path) in [
            ("tls.cert_file", &tls.cert_file),
            ("tls.key_file", &tls.key_file),
        ] {
            if let Err(e) = std::fs::metadata(path) {
                return Err(ConfigError::at(key, format!("{}: {e}", path.display())));
            }
        }
    }
    validate_broker(&c.broker)?;
    if c.demo.feed && !c.namespaces.contains_key("prices") {
        return Err(ConfigError::at(
            "demo.feed",
            "needs the namespace prices (the feed publishes on prices:<SYMBOL>)",
        ));
    }
    validate_namespace("default_namespace", &c.default_namespace)?;
    for (name, ns) in &c.namespaces {
        if name.is_empty()
            || !name
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "_-=@.,;/+*!".contains(ch))
        {
            return Err(ConfigError::at(
                &format!("namespaces.{name}"),
                "a namespace name is ASCII letters, digits and _-=@.,;/+*! (no ':')",
            ));
        }
        validate_namespace(&format!("namespaces.{name}"), ns)?;
    }
    Ok(())
}

fn validate_broker(b: &BrokerConfig) -> Result<(), ConfigError> {
    if let Some(url) = &b.url {
        if let Err(e) = crate::broker::redis::check_url(url) {
            return Err(ConfigError::at("broker.url", e));
        }
        if b.cluster {
            if let Err(e) = crate::broker::redis::check_cluster_url(url) {
                return Err(ConfigError::at("broker.url", e));
            }
        }
    }
    if !b.cluster_seeds.is_empty() && !b.cluster {
        return Err(ConfigError::at(
            "broker.cluster_seeds",
            "only with broker.cluster = true",
        ));
    }
    if b.cluster && b.url.is_none() {
        return Err(ConfigError::at(
            "broker.cluster",
            "needs broker.url (a node of the cluster)",
        ));
    }
    let tls = b.url.as_deref().is_some_and(|u| u.starts_with("rediss:"));
    for seed in &b.cluster_seeds {
        if let Err(e) = crate::broker::redis::check_url(seed)
            .and_then(|()| crate::broker::redis::check_cluster_url(seed))
        {
            return Err(ConfigError::at("broker.cluster_seeds", e));
        }
        if seed.starts_with("rediss:") != tls {
            return Err(ConfigError::at(
                "broker.cluster_seeds",
                format!("{seed:?}: every seed uses the scheme of broker.url"),
            ));
        }
    }
    for (key, path, what) in [
        ("broker.tls_ca_file", &b.tls_ca_file, "CERTIFICATE"),
        ("broker.tls_cert_file", &b.tls_cert_file, "CERTIFICATE"),
        ("broker.tls_key_file", &b.tls_key_file, "PRIVATE KEY"),
    ] {
        let Some(path) = path else { continue };
        if !tls {
            return Err(ConfigError::at(key, "only with a rediss:// broker.url"));
        }
        match std::fs::read_to_string(path) {
            Ok(pem) if pem.contains("-----BEGIN ") && pem.contains(what) => {}
            Ok(_) => {
                return Err(ConfigError::at(
                    key,
                    format!("{}: no PEM {what} in it", path.display()),
                ))
            }
            Err(e) => return Err(ConfigError::at(key, format!("{}: {e}", path.display()))),
        }
    }
    if b.tls_cert_file.is_some() != b.tls_key_file.is_some() {
        return Err(ConfigError::at(
            "broker.tls_cert_file",
            "tls_cert_file and tls_key_file go together",
        ));
    }
    if b.prefix.is_empty()
        || b.prefix.len() > 64
        || !b
            .prefix
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ":_-.".contains(ch))
    {
        return Err(ConfigError::at(
            "broker.prefix",
            "1 to 64 ASCII letters, digits, ':', '_', '-' or '.'",
        ));
    }
    if !(3..=86_400).contains(&b.presence_ttl_secs) {
        return Err(ConfigError::at(
            "broker.presence_ttl_secs",
            "must be between 3 and 86400",
        ));
    }
    Ok(())
}

fn validate_namespace(key: &str, ns: &NamespaceConfig) -> Result<(), ConfigError> {
    if ns.history_size > 100_000 {
        return Err(ConfigError::at(
            &format!("{key}.history_size"),
            "at most 100000",
        ));
    }
    if (ns.history_size > 0) != (ns.history_ttl_secs > 0) {
        return Err(ConfigError::at(
            &format!("{key}.history_ttl_secs"),
            "history_size and history_ttl_secs must both be set (or both 0)",
        ));
    }
    if ns.recover && !ns.has_history() {
        return Err(ConfigError::at(
            &format!("{key}.recover"),
            "needs history_size and history_ttl_secs",
        ));
    }
    if ns.join_leave && !ns.presence {
        return Err(ConfigError::at(
            &format!("{key}.join_leave"),
            "needs presence = true",
        ));
    }
    Ok(())
}

/// Parses `scheme://host[:port]` into its lower-cased parts (the port defaulted from the
/// scheme), or `None`.
pub(crate) fn parse_origin(origin: &str) -> Option<(String, String, u16)> {
    let (scheme, rest) = origin.split_once("://")?;
    // Browsers send http and https origins; ws and wss in the configuration mean the same.
    let (scheme, default_port) = match scheme.to_ascii_lowercase().as_str() {
        "http" | "ws" => ("http".to_owned(), 80),
        "https" | "wss" => ("https".to_owned(), 443),
        _ => return None,
    };
    if rest.is_empty() || rest.contains('/') || rest.contains('@') {
        return None;
    }
    let authority: http::uri::Authority = rest.parse().ok()?;
    let host = authority.host().to_ascii_lowercase();
    if host.is_empty() {
        return None;
    }
    Some((scheme, host, authority.port_u16().unwrap_or(default_port)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(
        toml: &str,
        env: &[(&str, &str)],
        flags: &[(&str, &str)],
    ) -> Result<Settings, ConfigError> {
        let dir = std::env::temp_dir().join(format!("duplex-hub-config-{}", rand::random::<u64>()));
        std::fs::write(&dir, toml).unwrap();
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        let flags: Vec<(String, String)> = flags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let result = Settings::load(Some(&dir), env, &flags);
        std::fs::remove_file(&dir).unwrap();
        result
    }

    #[test]
    fn defaults_are_valid() {
        let s = Settings::new(HubConfig::default()).unwrap();
        assert_eq!(s.listen.to_string(), "127.0.0.1:8080");
        assert!(s.namespace("chat").unwrap().recover);
        assert!(s.namespace("nope").is_none());
        assert_eq!(s.namespace("").unwrap().publish, Permission::Anonymous);
    }

    #[test]
    fn file_then_env_then_flags() {
        let s = load(
            "listen = \"127.0.0.1:9000\"\n[limits]\nmax_connections = 10\nmax_subscriptions = 7\n[namespaces.game]\npresence = true\nsubscribe = { claim = \"role\", equals = \"player\" }\n",
            &[("DUPLEX__LIMITS__MAX_CONNECTIONS", "20"), ("DUPLEX__LIMITS__PUBLISH_RATE", "5"), ("OTHER", "x")],
            &[("limits.publish_rate", "9"), ("namespaces.game.history_size", "3"), ("namespaces.game.history_ttl_secs", "30")],
        )
        .unwrap();
        assert_eq!(s.listen.port(), 9000);
        assert_eq!(s.limits.max_connections, 20);
        assert_eq!(s.limits.max_subscriptions, 7);
        assert_eq!(s.limits.publish_rate, 9);
        let game = s.namespace("game").unwrap();
        assert_eq!(game.history_size, 3);
        assert_eq!(
            game.subscribe,
            Permission::Claim {
                claim: "role".into(),
                equals: serde_json::json!("player")
            }
        );
        // A file that names namespaces replaces the built-in ones, but for sys.
        assert!(s.namespace("chat").is_none());
        assert_eq!(
            s.namespace(SYS_NAMESPACE).unwrap().subscribe,
            Permission::Anonymous
        );
        assert!(!s.demo.feed);
    }

    #[test]
    fn sys_is_always_there_and_may_be_restricted() {
        let mut config = HubConfig::default();
        config.namespaces.clear();
        let s = Settings::new(config).unwrap();
        let sys = s.namespace(SYS_NAMESPACE).unwrap();
        assert_eq!(
            (&sys.subscribe, sys.presence, sys.has_history()),
            (&Permission::Anonymous, false, false)
        );
        let s = load(
            "[namespaces.chat]\n[namespaces.sys]\nsubscribe = \"authenticated\"\n",
            &[],
            &[],
        )
        .unwrap();
        assert_eq!(
            s.namespace(SYS_NAMESPACE).unwrap().subscribe,
            Permission::Authenticated
        );
    }

    #[test]
    fn demo_feed() {
        let s = load("", &[("DUPLEX__DEMO__FEED", "true")], &[]).unwrap();
        assert!(s.demo.feed);
        let s = load("[demo]\nfeed = true\n", &[], &[("demo.feed", "false")]).unwrap();
        assert!(!s.demo.feed);
        let e = load("[demo]\nfeed = true\n[namespaces.chat]\n", &[], &[])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("demo.feed:"), "{e}");
        let e = load("[demo]\nfeed = \"yes\"\n", &[], &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("feed"), "{e}");
    }

    #[test]
    fn overrides_apply_to_the_builtin_namespaces() {
        let s = load(
            "[default_namespace]\npresence = true\n",
            &[("DUPLEX__NAMESPACES__CHAT__HISTORY_SIZE", "50")],
            &[],
        )
        .unwrap();
        let chat = s.namespace("chat").unwrap();
        assert_eq!((chat.history_size, chat.history_ttl_secs), (50, 600));
        assert!(s.namespace("prices").is_some());
        let default_ns = s.namespace("").unwrap();
        assert!(default_ns.presence);
        assert_eq!(
            default_ns.publish,
            Permission::Anonymous,
            "merged over the built-in one"
        );
    }

    #[test]
    fn errors_name_the_key() {
        let e = load("[limits]\nmax_conections = 1\n", &[], &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_conections"), "{e}");
        let e = load("[limits]\nmax_connections = \"many\"\n", &[], &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_connections"), "{e}");
        let e = load("", &[("DUPLEX__LIMITS__MAX_CONNECTIONS", "0")], &[])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("limits.max_connections:"), "{e}");
        let e = load("[namespaces.x]\nrecover = true\n", &[], &[])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("namespaces.x.recover:"), "{e}");
        let e = load("[namespaces.x]\nsubscribe = \"everyone\"\n", &[], &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("everyone") && e.contains("subscribe"), "{e}");
        let e = load("allowed_origins = [\"example.com\"]\n", &[], &[])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("allowed_origins[0]:"), "{e}");
        let e = load("[api]\nkeys = [\"short\"]\n", &[], &[])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("api.keys[0]:"), "{e}");
        let e = load("[limits]\noutbound_queue_bytes = 1000\n", &[], &[])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("limits.outbound_queue_bytes:"), "{e}");
        let e = load("listen = \"nowhere\"\n", &[], &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("listen"), "{e}");
        let e = load(
            "[tls]\ncert_file = \"/nonexistent/c.pem\"\nkey_file = \"/nonexistent/k.pem\"\n",
            &[],
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("tls.cert_file:"), "{e}");
    }

    #[test]
    fn broker_section() {
        let s = load(
            "[broker]\nurl = \"redis://127.0.0.1:6379/2\"\nsharded = true\nprefix = \"app1:\"\n",
            &[("DUPLEX__BROKER__PRESENCE_TTL_SECS", "9")],
            &[],
        )
        .unwrap();
        assert_eq!(s.broker.url.as_deref(), Some("redis://127.0.0.1:6379/2"));
        assert!(s.broker.sharded);
        assert_eq!(
            (s.broker.prefix.as_str(), s.broker.presence_ttl_secs),
            ("app1:", 9)
        );
        assert_eq!(HubConfig::default().broker.url, None, "memory by default");
        let s = load(
            "[broker]\nurl = \"redis://redis-1.internal:7000\"\ncluster = true\n\
             cluster_seeds = [\"redis://redis-2.internal:7000\"]\n",
            &[],
            &[],
        )
        .unwrap();
        assert!(s.broker.cluster);
        assert_eq!(s.broker.cluster_seeds, ["redis://redis-2.internal:7000"]);
        for (toml, key) in [
            ("url = \"redis://h/2\"\ncluster = true", "broker.url:"),
            ("cluster = true", "broker.cluster:"),
            (
                "url = \"redis://h\"\ncluster_seeds = [\"redis://g\"]",
                "broker.cluster_seeds:",
            ),
            (
                "url = \"redis://h\"\ncluster = true\ncluster_seeds = [\"h:1\"]",
                "broker.cluster_seeds:",
            ),
            ("url = \"http://127.0.0.1:6379\"", "broker.url:"),
            ("url = \"redis://\"", "broker.url:"),
            ("url = \"rediss://\"", "broker.url:"),
            (
                "url = \"redis://h\"\ntls_ca_file = \"/etc/hostname\"",
                "broker.tls_ca_file:",
            ),
            (
                "url = \"rediss://h\"\ntls_ca_file = \"/nonexistent/ca.pem\"",
                "broker.tls_ca_file:",
            ),
            (
                "url = \"rediss://h\"\ntls_ca_file = \"/etc/hostname\"",
                "broker.tls_ca_file:",
            ),
            (
                "url = \"rediss://h\"\ntls_key_file = \"/etc/hostname\"",
                "broker.tls_key_file:",
            ),
            (
                "url = \"rediss://h\"\ncluster = true\ncluster_seeds = [\"redis://g\"]",
                "broker.cluster_seeds:",
            ),
            ("prefix = \"a{b}\"", "broker.prefix:"),
            ("prefix = \"\"", "broker.prefix:"),
            ("presence_ttl_secs = 1", "broker.presence_ttl_secs:"),
        ] {
            let e = load(&format!("[broker]\n{toml}\n"), &[], &[])
                .unwrap_err()
                .to_string();
            assert!(e.starts_with(key), "{toml}: {e}");
        }
    }

    #[test]
    fn origins_parse() {
        assert_eq!(
            parse_origin("https://App.Example.com"),
            Some(("https".into(), "app.example.com".into(), 443))
        );
        assert_eq!(
            parse_origin("http://localhost:8080"),
            Some(("http".into(), "localhost".into(), 8080))
        );
        assert_eq!(
            parse_origin("http://[::1]:3000"),
            Some(("http".into(), "[::1]".into(), 3000))
        );
        assert_eq!(
            parse_origin("wss://a.example"),
            Some(("https".into(), "a.example".into(), 443))
        );
        assert_eq!(parse_origin("null"), None);
        assert_eq!(parse_origin("ftp://x"), None);
        assert_eq!(parse_origin("https://x/path"), None);
    }
}
