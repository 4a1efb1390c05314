//! The [`Node`]: channels, subscriptions, presence and history of one hub process, on top of
//! a [`Broker`].

use crate::auth::Identity;
use crate::broker::{
    now_us, Broker, BrokerError, BrokerHandler, ChannelEvent, ClientInfo, Control, Data,
    HistoryOptions, HistoryQuery, HistoryResult, PresenceMap, Publication,
};
use crate::channel::ChannelName;
use crate::config::{NamespaceConfig, Permission, Settings, SlowConsumerPolicy};
use crate::metrics::Metrics;
use crate::outbox::{ChannelEventPush, Delivery, Outgoing};
use crate::protocol;
use crate::registry::{shard_of, Registry};
use crate::session::{client_tag, Dialect, SessionHandle};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tracing::{debug, warn};

/// Close code: the outbound queue overflowed; reconnect and recover.
pub const CLOSE_SLOW: u16 = 4001;
/// Close code: publish rate limit exceeded.
pub const CLOSE_RATE_LIMIT: u16 = 4002;
/// Close code: the token expired.
pub const CLOSE_TOKEN_EXPIRED: u16 = 4003;
/// Close code: server error (the broker failed).
pub const CLOSE_SERVER_ERROR: u16 = 4004;
/// Close code: bad request.
pub const CLOSE_BAD_REQUEST: u16 = 4500;
/// Close code: invalid token in `connect`.
pub const CLOSE_UNAUTHORIZED: u16 = 4501;
/// Close code: disconnected through the HTTP API.
pub const CLOSE_API_DISCONNECT: u16 = 4502;

const SUB_LOCKS: usize = 32;

/// One hub process.
pub struct Node {
    name: String,
    settings: Arc<Settings>,
    broker: Arc<dyn Broker>,
    registry: Registry,
    sessions: Mutex<HashMap<u64, Arc<SessionHandle>>>,
    next_session: AtomicU64,
    /// Serialises broker subscribe/unsubscribe per channel shard; holds the channels the
    /// broker delivers to us.
    broker_subs: Vec<tokio::sync::Mutex<HashSet<ChannelName>>>,
    connections: AtomicUsize,
    draining: AtomicBool,
    metrics: Metrics,
    started: Instant,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Why a node operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The broker failed.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// The channel has `max_subscribers`.
    #[error("channel {0} has reached its subscriber limit")]
    ChannelFull(ChannelName),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whether `identity` (None: anonymous) may act on `channel` by `rule`, or by a grant
/// (`granted`) of its token.
pub fn permitted(
    rule: &Permission,
    identity: Option<&Identity>,
    channel: &ChannelName,
    granted: bool,
) -> bool {
    if identity.is_some() && granted {
        return true;
    }
    match rule {
        Permission::Anonymous => true,
        Permission::Authenticated => identity.is_some(),
        Permission::Owner => {
            identity.is_some_and(|i| !i.user.is_empty() && i.user == channel.local_name())
        }
        Permission::Grant => false,
        Permission::Claim { claim, equals } => {
            identity.and_then(|i| i.claim(claim)) == Some(equals)
        }
    }
}

impl Node {
    /// A node over `broker`; it registers itself as the broker's handler.
    pub fn new(settings: Settings, broker: Arc<dyn Broker>) -> Arc<Self> {
        let name = settings
            .node_name
            .clone()
            .unwrap_or_else(|| format!("{:08x}", rand::random::<u32>()));
        let node = Arc::new(Self {
            name,
            settings: Arc::new(settings),
            broker,
            registry: Registry::new(),
            sessions: Mutex::new(HashMap::new()),
            next_session: AtomicU64::new(1),
            broker_subs: (0..SUB_LOCKS)
                .map(|_| tokio::sync::Mutex::new(HashSet::new()))
                .collect(),
            connections: AtomicUsize::new(0),
            draining: AtomicBool::new(false),
            metrics: Metrics::new(),
            started: Instant::now(),
        });
        let handler: Arc<dyn BrokerHandler> = node.clone();
        node.broker.register(Arc::downgrade(&handler));
        node
    }

    /// This node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The broker.
    pub fn broker(&self) -> &Arc<dyn Broker> {
        &self.broker
    }

    /// The options of `channel`'s namespace, if it is configured.
    pub fn namespace(&self, channel: &ChannelName) -> Option<&NamespaceConfig> {
        self.settings.namespace(channel.namespace())
    }

    /// Publishes `data` to `channel` through the broker; subscribers on every node receive
    /// it. Permissions are the caller's business.
    ///
    /// # Errors
    /// [`NodeError::Broker`].
    pub async fn publish(
        &self,
        channel: &ChannelName,
        data: Data,
        info: Option<ClientInfo>,
        key: Option<&str>,
    ) -> Result<Arc<Publication>, NodeError> {
        let publication = self.publish_unmetered(channel, data, info, key).await?;
        self.metrics.publications.inc();
        Ok(publication)
    }

    /// Publishes the hub's own data (`sys:stats`, the demo feed) like [`publish`](Self::publish),
    /// but leaves it out of the `publications` metric, which counts what clients and the
    /// HTTP API publish.
    pub(crate) async fn publish_own(
        &self,
        channel: &ChannelName,
        data: Data,
        key: Option<&str>,
    ) -> Result<Arc<Publication>, NodeError> {
        self.publish_unmetered(channel, data, None, key).await
    }

    async fn publish_unmetered(
        &self,
        channel: &ChannelName,
        data: Data,
        info: Option<ClientInfo>,
        key: Option<&str>,
    ) -> Result<Arc<Publication>, NodeError> {
        let history = self.namespace(channel).and_then(history_options);
        let publication = Publication {
            offset: 0,
            epoch: None,
            data,
            info,
            key: key.map(Arc::from),
            time_us: now_us(),
        };
        match self.broker.publish(channel, publication, history).await {
            Ok(p) => Ok(p),
            Err(e) => {
                self.metrics.broker_errors.inc();
                warn!(%channel, error = %e, "publish failed");
                Err(e.into())
            }
        }
    }

    /// Reads history of `channel`.
    ///
    /// # Errors
    /// [`NodeError::Broker`], including an epoch mismatch of `query.since`.
    pub async fn history(
        &self,
        channel: &ChannelName,
        query: HistoryQuery,
    ) -> Result<Option<HistoryResult>, NodeError> {
        let Some(options) = self.namespace(channel).and_then(history_options) else {
            return Ok(None);
        };
        match self.broker.history(channel, query, options).await {
            Ok(r) => Ok(Some(r)),
            Err(e @ BrokerError::EpochMismatch(_)) => Err(e.into()),
            Err(e) => {
                self.metrics.broker_errors.inc();
                Err(e.into())
            }
        }
    }

    /// Presence of `channel` on every node.
    ///
    /// # Errors
    /// [`NodeError::Broker`].
    pub async fn presence(&self, channel: &ChannelName) -> Result<PresenceMap, NodeError> {
        self.broker.presence(channel).await.map_err(|e| {
            self.metrics.broker_errors.inc();
            e.into()
        })
    }

    /// Channels with subscribers (on any node), with this node's subscriber counts.
    ///
    /// # Errors
    /// [`NodeError::Broker`].
    pub async fn channels(&self) -> Result<Vec<(ChannelName, usize)>, NodeError> {
        let all = self.broker.channels().await?;
        Ok(all
            .into_iter()
            .map(|c| {
                let n = self.registry.count(&c);
                (c, n)
            })
            .collect())
    }

    /// Closes every connection of `user`, on every node, with `code` and `reason`; returns
    /// how many were on this node... the count is only known locally, so it returns nothing.
    ///
    /// # Errors
    /// [`NodeError::Broker`].
    pub async fn disconnect_user(
        &self,
        user: &str,
        code: u16,
        reason: &str,
    ) -> Result<(), NodeError> {
        self.broker
            .publish_control(Control::DisconnectUser {
                user: user.to_owned(),
                code,
                reason: reason.to_owned(),
            })
            .await
            .map_err(Into::into)
    }

    pub(crate) fn new_session(&self, dialect: Dialect) -> Arc<SessionHandle> {
        let id = self.next_session.fetch_add(1, Ordering::Relaxed);
        let handle = Arc::new(SessionHandle::new(
            id,
            dialect,
            self.settings.limits.outbound_queue_bytes,
        ));
        lock(&self.sessions).insert(id, handle.clone());
        if self.is_draining() {
            // Admitted just before the shutdown started, registered after its last pass.
            handle.outbox.close(1001, "server shutting down");
        }
        handle
    }

    pub(crate) fn end_session(&self, id: u64) {
        lock(&self.sessions).remove(&id);
    }

    /// Subscribes a session: local registry first, then the broker, so nothing published
    /// after this returns is missed.
    pub(crate) async fn subscribe(
        &self,
        channel: &ChannelName,
        session: &Arc<SessionHandle>,
    ) -> Result<(), NodeError> {
        let max = self.namespace(channel).map_or(0, |ns| ns.max_subscribers);
        if !self.registry.add(channel, session.clone(), max) {
            self.metrics.limit_hit("max_subscribers");
            return Err(NodeError::ChannelFull(channel.clone()));
        }
        if let Err(e) = self.sync_broker(channel).await {
            self.registry.remove(channel, session.id);
            return Err(e.into());
        }
        self.metrics.subscriptions.inc();
        Ok(())
    }

    pub(crate) async fn unsubscribe(&self, channel: &ChannelName, session: u64) {
        if self.registry.remove(channel, session) {
            self.metrics.subscriptions.dec();
        }
        if let Err(e) = self.sync_broker(channel).await {
            debug!(%channel, error = %e, "broker unsubscribe failed");
        }
    }

    /// Makes the broker's subscription match whether this node has local subscribers.
    async fn sync_broker(&self, channel: &ChannelName) -> Result<(), BrokerError> {
        let mut subscribed = self.broker_subs[shard_of(channel, SUB_LOCKS)].lock().await;
        let wanted = self.registry.count(channel) > 0;
        let have = subscribed.contains(channel);
        if wanted && !have {
            if let Err(e) = self.broker.subscribe(channel).await {
                self.metrics.broker_errors.inc();
                return Err(e);
            }
            subscribed.insert(channel.clone());
        } else if !wanted && have {
            subscribed.remove(channel);
            self.broker.unsubscribe(channel).await?;
        }
        Ok(())
    }

    /// Counts a new WebSocket connection unless `max_connections` are open.
    pub(crate) fn try_open_connection(self: &Arc<Self>) -> Option<ConnectionGuard> {
        let max = self.settings.limits.max_connections;
        let mut current = self.connections.load(Ordering::Relaxed);
        loop {
            if current >= max {
                self.metrics.limit_hit("max_connections");
                return None;
            }
            match self.connections.compare_exchange_weak(
                current,
                current + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(ConnectionGuard(self.clone())),
                Err(now) => current = now,
            }
        }
    }

    /// Open WebSocket connections.
    pub fn connection_count(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// Channels with at least one subscriber on this node.
    pub fn local_channel_count(&self) -> usize {
        self.registry.channel_count()
    }

    /// Time since this node was created.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Whether a shutdown started.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Refuses new connections from now on (503) and turns readiness off.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Starts a graceful shutdown: no new connections; every open one is closed with 1001,
    /// spread evenly over `drain` so reconnects do not all arrive at once. Returns when every
    /// close was ordered (not when connections are gone; see [`connection_count`](Self::connection_count)).
    pub async fn shutdown(&self, drain: Duration) {
        self.start_draining();
        let sessions: Vec<_> = lock(&self.sessions).values().cloned().collect();
        let n = sessions.len().max(1) as u32;
        let step = drain / n;
        for (i, session) in sessions.iter().enumerate() {
            if i > 0 && !step.is_zero() {
                tokio::time::sleep(step).await;
            }
            session.outbox.close(1001, "server shutting down");
        }
        // Sessions that started while we were closing the others.
        for session in lock(&self.sessions).values() {
            session.outbox.close(1001, "server shutting down");
        }
    }
}

fn history_options(ns: &NamespaceConfig) -> Option<HistoryOptions> {
    ns.has_history().then(|| HistoryOptions {
        size: ns.history_size,
        ttl: ns.history_ttl(),
    })
}

/// Holds one of `max_connections`; released on drop.
#[derive(Debug)]
pub(crate) struct ConnectionGuard(Arc<Node>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

impl BrokerHandler for Node {
    fn handle_publication(&self, channel: &ChannelName, publication: Arc<Publication>) {
        let ns = self.namespace(channel);
        let conflate = ns.is_some_and(|ns| ns.slow_consumer == SlowConsumerPolicy::Conflate);
        let echo_rooms = self.settings.rooms.echo_to_sender;
        let size = publication.data.len() + channel.as_str().len() + 160;
        let publisher = publication
            .info
            .as_ref()
            .map(|i| (&*i.client, client_tag(&i.client)));
        let mut delivery = None;
        let mut delivered = 0u64;
        self.registry.for_each(channel, |name, session| {
            if session.dialect == Dialect::Raw
                && !echo_rooms
                && publisher
                    .as_ref()
                    .is_some_and(|(client, tag)| session.is_client(client, *tag))
            {
                return;
            }
            let slot = match (&publication.key, conflate) {
                (Some(key), true) => Some((channel.clone(), key.clone())),
                _ => None,
            };
            // With the registry's copy of the name: the same for every publication of the
            // channel, so a session recognises it by pointer (`Subscriptions`).
            let delivery = delivery
                .get_or_insert_with(|| Arc::new(Delivery::new(name.clone(), publication.clone())));
            let item = Outgoing::Publication(delivery.clone());
            if session.outbox.push(item, size, slot).is_err() {
                session.outbox.close(CLOSE_SLOW, "slow consumer");
                self.metrics.slow_consumer_disconnects.inc();
            } else {
                delivered += 1;
            }
        });
        self.metrics.deliveries.inc_by(delivered);
    }

    fn handle_event(&self, channel: &ChannelName, event: ChannelEvent) {
        // A broker announces the leave of every expired presence entry (the clients of a
        // crashed node); only namespaces with join/leave pass it on.
        if !self.namespace(channel).is_some_and(|ns| ns.join_leave) {
            return;
        }
        let (kind, info) = match &event {
            ChannelEvent::Join(info) => ("join", info),
            ChannelEvent::Leave(info) => ("leave", info),
        };
        let message = protocol::event_push(kind, channel.as_str(), info);
        let size = message.len() + 64;
        let push = Arc::new(ChannelEventPush {
            channel: channel.clone(),
            message,
        });
        let tag = client_tag(&info.client);
        self.registry.for_each(channel, |_, session| {
            if session.dialect != Dialect::V1 || session.is_client(&info.client, tag) {
                return;
            }
            let event = Outgoing::Event(push.clone());
            if session.outbox.push(event, size, None).is_err() {
                session.outbox.close(CLOSE_SLOW, "slow consumer");
                self.metrics.slow_consumer_disconnects.inc();
            }
        });
    }

    fn handle_control(&self, control: Control) {
        match control {
            Control::DisconnectUser { user, code, reason } => {
                for session in lock(&self.sessions).values() {
                    if session.user().is_some_and(|u| u == user) {
                        session.outbox.close(code, &reason);
                    }
                }
            }
        }
    }
}
