//! The Redis broker: several hub nodes share one Redis, so a client may connect to any of
//! them.
//!
//! * **Delivery** goes through Redis Pub/Sub, one Redis channel per hub channel
//!   (`duplex:{chat:lobby}:p`). A node subscribes to it only while it has local subscribers
//!   (the [`Node`](crate::Node) asks once per channel, not once per client), on one RESP3
//!   connection per node whose messages one task hands to the [`BrokerHandler`]. Sharded
//!   Pub/Sub (`SSUBSCRIBE`/`SPUBLISH`) is used with `broker.sharded`.
//! * **Redis Cluster** (`broker.cluster`): commands and subscriptions go to the master of
//!   their slot, redirections (`MOVED`, `ASK`) are followed, and every key of a channel carries
//!   the channel as its hash tag, so a script's keys are always in one slot.
//! * **History**: a Lua script assigns the offset, appends to a capped stream and publishes,
//!   atomically, so delivery order is offset order whichever node published (see
//!   `scripts.rs` for the keys).
//! * **Presence** is a hash per channel with a per-client expiry; this node refreshes its
//!   own clients every third of `broker.presence_ttl_secs`, so the clients of a crashed node
//!   disappear after that TTL. Every node sweeps the channels where it has presence entries
//!   of its own (so: subscribers) every [`SWEEP_INTERVAL`](crate::broker::SWEEP_INTERVAL) at
//!   most; a script removes the expired entries and publishes their leave in one step, so
//!   the subscribers on every node hear each crashed client leave once.
//! * **TLS**: `rediss://` URLs, trusting the system's certificate authorities or those of
//!   `broker.tls_ca_file`, with a client certificate when `broker.tls_cert_file` is set.
//! * **Outages**: commands go through a pool of multiplexed connections that reconnect by
//!   themselves. The Pub/Sub connection is watched (pings); when it drops, the broker reports
//!   itself unhealthy (`/readyz` answers 503), reconnects with backoff, subscribes again to
//!   every channel, and reads from history what its subscribed channels missed meanwhile, so
//!   clients that stayed connected lose nothing that history still holds. The same check
//!   fills any gap in offsets between two deliveries.

mod conn;
mod envelope;
mod scripts;
mod subscriber;

use super::{
    Broker, BrokerError, BrokerFuture, BrokerHandler, ChannelEvent, ClientInfo, Control,
    HistoryOptions, HistoryQuery, HistoryResult, PresenceMap, Publication, StreamPosition,
};
use crate::channel::ChannelName;
use crate::config::BrokerConfig;
use ::redis::{ClientTlsConfig, IntoConnectionInfo, ProtocolVersion, RedisError, TlsCertificates};
use conn::{Backend, Commands, PubSub, Subscription};
use futures_util::StreamExt;
use scripts::SCRIPTS;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, Weak};
use std::time::Duration;
use subscriber::Event;
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;
use tracing::debug;

/// Connections in the command pool. Each is multiplexed (requests are pipelined), so a few
/// are plenty; more than one keeps a large reply from delaying every other request.
const POOL_SIZE: usize = 4;
/// Longest wait for one Redis command before the broker call fails.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest wait for a TCP connection to Redis.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Checks that `url` is a Redis URL this broker can use: `redis://host[:port][/db]`, or
/// `rediss://...` for TLS.
///
/// # Errors
/// A message saying what is wrong.
pub fn check_url(url: &str) -> Result<(), String> {
    let parsed = ::redis::parse_redis_url(url)
        .ok_or_else(|| format!("{url:?} is not a URL like redis://127.0.0.1:6379"))?;
    match parsed.scheme() {
        "redis" | "rediss" => {}
        other => {
            return Err(format!(
                "unsupported scheme {other:?}: expected redis://host[:port][/db] \
                 (rediss:// for TLS)"
            ))
        }
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("{url:?} names no host"));
    }
    url.into_connection_info()
        .map(|_| ())
        .map_err(|e| format!("{url:?}: {e}"))
}

/// Checks that `url` can name a Redis Cluster node: database 0 (a cluster has no other).
///
/// # Errors
/// A message saying what is wrong.
pub fn check_cluster_url(url: &str) -> Result<(), String> {
    let info = url
        .into_connection_info()
        .map_err(|e| format!("{url:?}: {e}"))?;
    if info.redis_settings().db() != 0 {
        return Err(format!(
            "{url:?}: a Redis Cluster has only database 0; remove the /{} from the URL",
            info.redis_settings().db()
        ));
    }
    Ok(())
}

/// The Redis broker; see the [module docs](self). Cheap to share behind an `Arc`; dropping
/// it stops its tasks and closes its connections.
pub struct RedisBroker {
    inner: Arc<Inner>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBroker")
            .field("address", &self.inner.address)
            .field("prefix", &self.inner.prefix)
            .field("sharded", &self.inner.sharded)
            .field("cluster", &self.inner.cluster)
            .field("healthy", &self.is_healthy())
            .finish_non_exhaustive()
    }
}

/// State shared by the broker and its tasks.
struct Inner {
    /// `host:port/db` (or `cluster host:port,...`), without credentials, for logs.
    address: String,
    prefix: String,
    sharded: bool,
    cluster: bool,
    presence_ttl: Duration,
    /// Where Redis is; opens the Pub/Sub connection (RESP3, so one connection carries both
    /// pushes and replies).
    backend: Backend,
    pool: Vec<Commands>,
    next: AtomicUsize,
    handler: RwLock<Option<Weak<dyn BrokerHandler>>>,
    /// Channels this node wants delivered.
    wanted: Mutex<HashSet<ChannelName>>,
    /// The Pub/Sub connection while it is up.
    conn: Mutex<Option<PubSub>>,
    /// Generation of the current Pub/Sub connection (pushes of older ones are stale).
    generation: Arc<AtomicU64>,
    /// Signalled when the current Pub/Sub connection dropped.
    lost: Arc<Notify>,
    /// Up (connected and subscribed to everything wanted) or not.
    healthy: watch::Sender<bool>,
    /// To the dispatcher task, in order.
    events: mpsc::UnboundedSender<Event>,
    /// The presence entries this node added, refreshed by the heartbeat.
    presence: Mutex<HashMap<ChannelName, HashMap<String, ClientInfo>>>,
    last_error: Mutex<Option<String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn unavailable(e: RedisError) -> BrokerError {
    BrokerError::Unavailable(format!("redis: {e}"))
}

/// Runs one Redis call with [`COMMAND_TIMEOUT`].
async fn timed<T>(f: impl Future<Output = Result<T, RedisError>>) -> Result<T, BrokerError> {
    match tokio::time::timeout(COMMAND_TIMEOUT, f).await {
        Ok(result) => result.map_err(unavailable),
        Err(_) => Err(BrokerError::Unavailable("redis: command timed out".into())),
    }
}

fn new_epoch() -> String {
    format!("{:08x}", rand::random::<u32>())
}

impl Inner {
    fn handler(&self) -> Option<Arc<dyn BrokerHandler>> {
        self.handler
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .and_then(Weak::upgrade)
    }

    fn connection(&self) -> Commands {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.pool.len();
        self.pool[i].clone()
    }

    /// `duplex:{chat:lobby}:<suffix>`: the hash tag keeps a channel's keys in one slot.
    fn key(&self, channel: &ChannelName, suffix: &str) -> String {
        format!("{}{{{}}}:{suffix}", self.prefix, channel.as_str())
    }

    fn pubsub_channel(&self, channel: &ChannelName) -> String {
        self.key(channel, "p")
    }

    fn control_channel(&self) -> String {
        format!("{}control", self.prefix)
    }

    /// The hub channel of a Redis Pub/Sub channel name.
    fn channel_of(&self, pubsub: &[u8]) -> Option<ChannelName> {
        let name = std::str::from_utf8(pubsub).ok()?;
        let inner = name.strip_prefix(&self.prefix)?.strip_prefix('{')?;
        ChannelName::new(inner.strip_suffix("}:p")?).ok()
    }

    fn is_wanted(&self, channel: &ChannelName) -> bool {
        lock(&self.wanted).contains(channel)
    }

    fn set_error(&self, error: impl std::fmt::Display) {
        *lock(&self.last_error) = Some(error.to_string());
    }

    /// `1` when scripts must `SPUBLISH`.
    fn sharded_flag(&self) -> &'static str {
        if self.sharded {
            "1"
        } else {
            "0"
        }
    }

    fn publish_command(&self) -> &'static str {
        if self.sharded {
            "SPUBLISH"
        } else {
            "PUBLISH"
        }
    }

    /// (UN)SUBSCRIBE or S(UN)SUBSCRIBE `channel` on the Pub/Sub connection; resolves once
    /// Redis confirmed it.
    async fn subscription(&self, channel: &ChannelName, on: bool) -> Result<(), BrokerError> {
        let conn = lock(&self.conn).clone();
        let Some(mut conn) = conn else {
            return Err(BrokerError::Unavailable(
                "redis: not connected (reconnecting)".into(),
            ));
        };
        let what = Subscription::new(on, self.sharded);
        timed(conn.subscription(what, &self.pubsub_channel(channel))).await
    }
}

impl RedisBroker {
    /// A broker on the Redis at `config.url`. Returns at once: connections are made in the
    /// background, and retried until Redis answers; meanwhile [`is_healthy`](Broker::is_healthy)
    /// is `false` and calls fail with [`BrokerError::Unavailable`].
    ///
    /// # Errors
    /// [`BrokerError::Unavailable`] when `config.url` is missing or not a usable Redis URL.
    ///
    /// # Panics
    /// Outside a Tokio runtime.
    pub fn new(config: &BrokerConfig) -> Result<Self, BrokerError> {
        let url = config
            .url
            .as_deref()
            .ok_or_else(|| BrokerError::Unavailable("broker.url is not set".into()))?;
        check_url(url).map_err(BrokerError::Unavailable)?;
        let certificates = tls_certificates(config)?;
        let (backend, address) = if config.cluster {
            let mut seeds = Vec::new();
            for seed in std::iter::once(url).chain(config.cluster_seeds.iter().map(String::as_str))
            {
                check_url(seed)
                    .and_then(|()| check_cluster_url(seed))
                    .map_err(BrokerError::Unavailable)?;
                seeds.push(seed.into_connection_info().map_err(unavailable)?);
            }
            let address = format!(
                "cluster {}",
                seeds
                    .iter()
                    .map(|s| s.addr().to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            );
            (
                Backend::Cluster {
                    seeds,
                    certificates,
                },
                address,
            )
        } else {
            let info = url.into_connection_info().map_err(unavailable)?;
            let address = format!("{}/{}", info.addr(), info.redis_settings().db());
            let resp3 = info
                .redis_settings()
                .clone()
                .set_protocol(ProtocolVersion::RESP3);
            let open = |info: ::redis::ConnectionInfo| match &certificates {
                Some(certificates) => ::redis::Client::build_with_tls(info, certificates.clone()),
                None => ::redis::Client::open(info),
            };
            let pubsub = open(info.clone().set_redis_settings(resp3)).map_err(unavailable)?;
            let commands = open(info).map_err(unavailable)?;
            (Backend::Single { pubsub, commands }, address)
        };
        let pool = backend.pool(POOL_SIZE).map_err(unavailable)?;
        let (events, events_rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            address,
            prefix: config.prefix.clone(),
            sharded: config.sharded,
            cluster: config.cluster,
            presence_ttl: Duration::from_secs(config.presence_ttl_secs),
            backend,
            pool,
            next: AtomicUsize::new(0),
            handler: RwLock::new(None),
            wanted: Mutex::new(HashSet::new()),
            conn: Mutex::new(None),
            generation: Arc::new(AtomicU64::new(0)),
            lost: Arc::new(Notify::new()),
            healthy: watch::Sender::new(false),
            events,
            presence: Mutex::new(HashMap::new()),
            last_error: Mutex::new(None),
        });
        let tasks = vec![
            tokio::spawn(subscriber::connect_loop(inner.clone())),
            tokio::spawn(subscriber::dispatch(inner.clone(), events_rx)),
            tokio::spawn(heartbeat(inner.clone())),
            tokio::spawn(sweep_presence(inner.clone())),
        ];
        Ok(Self { inner, tasks })
    }

    /// Waits until the broker is connected and subscribed, at most `timeout`; returns whether
    /// it is.
    pub async fn wait_healthy(&self, timeout: Duration) -> bool {
        let mut rx = self.inner.healthy.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|up| *up))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// The Redis server, `host:port/db` (without credentials: for logs).
    pub fn address(&self) -> &str {
        &self.inner.address
    }

    /// The latest connection error, if any (for logs).
    pub fn last_error(&self) -> Option<String> {
        lock(&self.inner.last_error).clone()
    }
}

/// The CA and client certificate files of `config`, read; `None` when it names none.
fn tls_certificates(config: &BrokerConfig) -> Result<Option<TlsCertificates>, BrokerError> {
    let read = |key: &str, path: &std::path::Path| {
        std::fs::read(path)
            .map_err(|e| BrokerError::Unavailable(format!("broker.{key}: {}: {e}", path.display())))
    };
    let root_cert = match &config.tls_ca_file {
        Some(path) => Some(read("tls_ca_file", path)?),
        None => None,
    };
    let client_tls = match (&config.tls_cert_file, &config.tls_key_file) {
        (Some(cert), Some(key)) => Some(ClientTlsConfig {
            client_cert: read("tls_cert_file", cert)?,
            client_key: read("tls_key_file", key)?,
        }),
        (None, None) => None,
        _ => {
            return Err(BrokerError::Unavailable(
                "broker.tls_cert_file and broker.tls_key_file go together".into(),
            ))
        }
    };
    Ok(
        (root_cert.is_some() || client_tls.is_some()).then_some(TlsCertificates {
            client_tls,
            root_cert,
        }),
    )
}

impl Drop for RedisBroker {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Refreshes this node's presence entries every third of the presence TTL.
async fn heartbeat(inner: Arc<Inner>) {
    let period = inner.presence_ttl / 3;
    loop {
        tokio::time::sleep(period).await;
        refresh_presence(&inner).await;
    }
}

/// Sends this node's presence entries again: one pipeline per channel (its keys share a
/// slot, as a Redis Cluster requires), several channels at once.
async fn refresh_presence(inner: &Inner) {
    let ttl_ms = inner.presence_ttl.as_millis() as u64;
    let channels: Vec<(ChannelName, Vec<(String, String)>)> = lock(&inner.presence)
        .iter()
        .map(|(channel, clients)| {
            let entries = clients
                .iter()
                .map(|(client, info)| {
                    let json = serde_json::to_string(info).expect("ClientInfo serialises");
                    (client.clone(), json)
                })
                .collect();
            (channel.clone(), entries)
        })
        .collect();
    if channels.is_empty() {
        return;
    }
    // Pipelined invocations are EVALSHA only: load the script first (on every master).
    if let Err(e) = timed(
        SCRIPTS
            .presence_add
            .prepare_invoke()
            .load_async(&mut inner.connection()),
    )
    .await
    {
        debug!(error = %e, "presence heartbeat failed");
        return;
    }
    futures_util::stream::iter(channels)
        .for_each_concurrent(conn::CLUSTER_CONCURRENCY, |(channel, entries)| async move {
            let mut conn = inner.connection();
            for chunk in entries.chunks(256) {
                let mut pipe = ::redis::pipe();
                for (client, json) in chunk {
                    let mut invocation = SCRIPTS.presence_add.prepare_invoke();
                    invocation
                        .key(inner.key(&channel, "pr"))
                        .key(inner.key(&channel, "pe"))
                        .arg(client)
                        .arg(json)
                        .arg(ttl_ms);
                    pipe.invoke_script(&invocation).ignore();
                }
                if let Err(e) = timed(pipe.exec_async(&mut conn)).await {
                    debug!(%channel, error = %e, "presence heartbeat failed");
                    return;
                }
            }
            // A client removed while the heartbeat was on its way may have been added back:
            // remove it again rather than leave it for a TTL.
            let mut pipe = ::redis::pipe();
            {
                let presence = lock(&inner.presence);
                let current = presence.get(&channel);
                for (client, _) in &entries {
                    if !current.is_some_and(|clients| clients.contains_key(client)) {
                        remove_presence_commands(&mut pipe, inner, &channel, client);
                    }
                }
            }
            if !pipe.is_empty() {
                if let Err(e) = timed(pipe.exec_async(&mut conn)).await {
                    debug!(%channel, error = %e, "presence heartbeat failed");
                }
            }
        })
        .await;
}

/// Every [`SWEEP_INTERVAL`](super::SWEEP_INTERVAL) (a third of the presence TTL if
/// shorter), expires the presence entries of the channels where this node has entries of its
/// own, announcing each expired client's leave.
async fn sweep_presence(inner: Arc<Inner>) {
    let period = super::SWEEP_INTERVAL.min(inner.presence_ttl / 3);
    loop {
        tokio::time::sleep(period).await;
        let channels: Vec<ChannelName> = lock(&inner.presence).keys().cloned().collect();
        let inner = &inner;
        futures_util::stream::iter(channels)
            .for_each_concurrent(conn::CLUSTER_CONCURRENCY, |channel| async move {
                let swept = timed(
                    SCRIPTS
                        .presence_sweep
                        .key(inner.key(&channel, "pr"))
                        .key(inner.key(&channel, "pe"))
                        .arg(inner.pubsub_channel(&channel))
                        .arg(inner.sharded_flag())
                        .invoke_async::<u64>(&mut inner.connection()),
                )
                .await;
                match swept {
                    Ok(0) => {}
                    Ok(n) => debug!(%channel, n, "expired presence entries of a stopped node"),
                    Err(e) => debug!(%channel, error = %e, "presence sweep failed"),
                }
            })
            .await;
    }
}

fn remove_presence_commands(
    pipe: &mut ::redis::Pipeline,
    inner: &Inner,
    channel: &ChannelName,
    client: &str,
) {
    pipe.cmd("HDEL")
        .arg(inner.key(channel, "pr"))
        .arg(client)
        .ignore()
        .cmd("ZREM")
        .arg(inner.key(channel, "pe"))
        .arg(client)
        .ignore();
}

/// Decodes history stream entries (`[id, [x, expiry, d, body]]`) of `epoch`.
fn decode_entries(entries: Vec<(String, Vec<Vec<u8>>)>, epoch: &Arc<str>) -> Vec<Arc<Publication>> {
    entries
        .into_iter()
        .filter_map(|(id, fields)| {
            let offset: u64 = id.split_once('-')?.0.parse().ok()?;
            let body = fields
                .chunks(2)
                .find(|pair| pair.first().is_some_and(|name| name == b"d"))?
                .get(1)?;
            let publication = envelope::decode_body(body, offset, Some(epoch.clone()));
            if publication.is_none() {
                debug!(id, "malformed history entry");
            }
            publication.map(Arc::new)
        })
        .collect()
}

impl Broker for RedisBroker {
    fn register(&self, handler: Weak<dyn BrokerHandler>) {
        *self
            .inner
            .handler
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(handler);
    }

    fn publish<'a>(
        &'a self,
        channel: &'a ChannelName,
        mut publication: Publication,
        history: Option<HistoryOptions>,
    ) -> BrokerFuture<'a, Arc<Publication>> {
        Box::pin(async move {
            let inner = &self.inner;
            let body = envelope::encode_body(&publication);
            let mut conn = inner.connection();
            match history {
                Some(options) => {
                    let (offset, epoch): (u64, String) = timed(
                        SCRIPTS
                            .publish
                            .key(inner.key(channel, "m"))
                            .key(inner.key(channel, "s"))
                            .arg(&body)
                            .arg(options.size)
                            .arg(options.ttl.as_millis().max(1) as u64)
                            .arg(new_epoch())
                            .arg(inner.pubsub_channel(channel))
                            .arg(inner.sharded_flag())
                            .invoke_async(&mut conn),
                    )
                    .await?;
                    publication.offset = offset;
                    publication.epoch = Some(epoch.into());
                }
                None => {
                    publication.offset = 0;
                    publication.epoch = None;
                    let cmd = ::redis::cmd(inner.publish_command())
                        .arg(inner.pubsub_channel(channel))
                        .arg(envelope::publication_message(&body))
                        .to_owned();
                    timed(cmd.exec_async(&mut conn)).await?;
                }
            }
            Ok(Arc::new(publication))
        })
    }

    fn publish_event<'a>(
        &'a self,
        channel: &'a ChannelName,
        event: ChannelEvent,
    ) -> BrokerFuture<'a, ()> {
        Box::pin(async move {
            let inner = &self.inner;
            let cmd = ::redis::cmd(inner.publish_command())
                .arg(inner.pubsub_channel(channel))
                .arg(envelope::event_message(&event))
                .to_owned();
            timed(cmd.exec_async(&mut inner.connection())).await
        })
    }

    fn publish_control(&self, control: Control) -> BrokerFuture<'_, ()> {
        Box::pin(async move {
            let inner = &self.inner;
            // Control always uses classic Pub/Sub: it must reach every node.
            let cmd = ::redis::cmd("PUBLISH")
                .arg(inner.control_channel())
                .arg(envelope::control_message(&control))
                .to_owned();
            timed(cmd.exec_async(&mut inner.connection())).await
        })
    }

    fn subscribe<'a>(&'a self, channel: &'a ChannelName) -> BrokerFuture<'a, ()> {
        Box::pin(async move {
            // Wanted first: a reconnect that happens meanwhile subscribes it too.
            lock(&self.inner.wanted).insert(channel.clone());
            let result = self.inner.subscription(channel, true).await;
            if result.is_err() {
                lock(&self.inner.wanted).remove(channel);
            }
            result
        })
    }

    fn unsubscribe<'a>(&'a self, channel: &'a ChannelName) -> BrokerFuture<'a, ()> {
        Box::pin(async move {
            lock(&self.inner.wanted).remove(channel);
            let _ = self.inner.events.send(Event::Forget(channel.clone()));
            match self.inner.subscription(channel, false).await {
                // Without a connection there is no subscription left to end.
                Err(_) if lock(&self.inner.conn).is_none() => Ok(()),
                result => result,
            }
        })
    }

    fn history<'a>(
        &'a self,
        channel: &'a ChannelName,
        query: HistoryQuery,
        options: HistoryOptions,
    ) -> BrokerFuture<'a, HistoryResult> {
        Box::pin(async move {
            let inner = &self.inner;
            let since = query
                .since
                .as_ref()
                .map_or(String::new(), |s| s.offset.to_string());
            let limit = query.limit.map_or(String::new(), |l| l.to_string());
            type Reply = (String, u64, u64, Vec<(String, Vec<Vec<u8>>)>);
            let (epoch, top, first, entries): Reply = timed(
                SCRIPTS
                    .history
                    .key(inner.key(channel, "m"))
                    .key(inner.key(channel, "s"))
                    .arg(options.size)
                    .arg(options.ttl.as_millis().max(1) as u64)
                    .arg(since)
                    .arg(limit)
                    .invoke_async(&mut inner.connection()),
            )
            .await?;
            if epoch.is_empty() {
                // No stream (reading never creates one): offset 0 of the empty epoch, as in
                // the memory broker; its first publication starts a real epoch.
                let empty = StreamPosition {
                    offset: 0,
                    epoch: String::new(),
                };
                return match query.since {
                    Some(since) if since != empty => Err(BrokerError::EpochMismatch(since.epoch)),
                    _ => Ok(HistoryResult {
                        position: empty,
                        publications: Vec::new(),
                        contiguous: true,
                    }),
                };
            }
            let epoch: Arc<str> = epoch.into();
            let position = StreamPosition {
                offset: top,
                epoch: epoch.to_string(),
            };
            let mut publications = decode_entries(entries, &epoch);
            let contiguous = match query.since {
                Some(since) => {
                    if since.epoch != *epoch {
                        return Err(BrokerError::EpochMismatch(since.epoch));
                    }
                    since.offset <= top && first <= since.offset.saturating_add(1)
                }
                None => {
                    if query.limit.is_some() {
                        // XREVRANGE: newest first.
                        publications.reverse();
                    }
                    true
                }
            };
            Ok(HistoryResult {
                position,
                publications,
                contiguous,
            })
        })
    }

    fn add_presence<'a>(
        &'a self,
        channel: &'a ChannelName,
        info: ClientInfo,
    ) -> BrokerFuture<'a, ()> {
        Box::pin(async move {
            let inner = &self.inner;
            let json = serde_json::to_string(&info).expect("ClientInfo serialises");
            let client = info.client.to_string();
            lock(&inner.presence)
                .entry(channel.clone())
                .or_default()
                .insert(client.clone(), info);
            timed(
                SCRIPTS
                    .presence_add
                    .key(inner.key(channel, "pr"))
                    .key(inner.key(channel, "pe"))
                    .arg(client)
                    .arg(json)
                    .arg(inner.presence_ttl.as_millis() as u64)
                    .invoke_async::<i64>(&mut inner.connection()),
            )
            .await
            .map(drop)
        })
    }

    fn remove_presence<'a>(
        &'a self,
        channel: &'a ChannelName,
        client: &'a str,
    ) -> BrokerFuture<'a, ()> {
        Box::pin(async move {
            let inner = &self.inner;
            {
                let mut presence = lock(&inner.presence);
                if let Some(clients) = presence.get_mut(channel) {
                    clients.remove(client);
                    if clients.is_empty() {
                        presence.remove(channel);
                    }
                }
            }
            let mut pipe = ::redis::pipe();
            remove_presence_commands(&mut pipe, inner, channel, client);
            timed(pipe.exec_async(&mut inner.connection())).await
        })
    }

    fn presence<'a>(&'a self, channel: &'a ChannelName) -> BrokerFuture<'a, PresenceMap> {
        Box::pin(async move {
            let inner = &self.inner;
            let flat: Vec<Vec<u8>> = timed(
                SCRIPTS
                    .presence_get
                    .key(inner.key(channel, "pr"))
                    .key(inner.key(channel, "pe"))
                    .arg(inner.pubsub_channel(channel))
                    .arg(inner.sharded_flag())
                    .invoke_async(&mut inner.connection()),
            )
            .await?;
            let mut map = PresenceMap::new();
            for pair in flat.chunks_exact(2) {
                match serde_json::from_slice::<ClientInfo>(&pair[1]) {
                    Ok(info) => {
                        map.insert(String::from_utf8_lossy(&pair[0]).into_owned(), info);
                    }
                    Err(e) => debug!(error = %e, "malformed presence entry"),
                }
            }
            Ok(map)
        })
    }

    fn channels(&self) -> BrokerFuture<'_, Vec<ChannelName>> {
        Box::pin(async move {
            let inner = &self.inner;
            let which = if inner.sharded {
                "SHARDCHANNELS"
            } else {
                "CHANNELS"
            };
            let names: Vec<Vec<u8>> = timed(
                ::redis::cmd("PUBSUB")
                    .arg(which)
                    .arg(format!("{}{{*}}:p", inner.prefix))
                    .query_async(&mut inner.connection()),
            )
            .await?;
            let mut channels: Vec<ChannelName> =
                names.iter().filter_map(|n| inner.channel_of(n)).collect();
            channels.sort();
            channels.dedup();
            Ok(channels)
        })
    }

    fn is_healthy(&self) -> bool {
        *self.inner.healthy.borrow()
    }
}

#[cfg(test)]
mod tests;
