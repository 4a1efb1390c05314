//! The broker: every publication, join, leave and control message passes through it, and
//! reaches subscribers only when the broker hands it back to the [`BrokerHandler`] (the
//! [`Node`](crate::Node)). The in-memory broker does that at once; a networked broker (Redis)
//! does it from its subscriber task, so both behave the same.
//!
//! The broker also owns the state that must be shared by every node: history streams
//! (offsets and epochs) and presence.

mod memory;
pub mod redis;

pub use self::redis::RedisBroker;
pub use memory::MemoryBroker;

use crate::channel::ChannelName;
use bytes::Bytes;
use serde::Serialize;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// A boxed future returned by [`Broker`] methods.
pub type BrokerFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, BrokerError>> + Send + 'a>>;

/// A broker failed (its connection dropped, say). Clients get error 100 or close 4004.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// The broker cannot be reached or answered with an error.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// A `since` position names another epoch than the stream's current one.
    #[error("the stream's epoch is not {0:?}")]
    EpochMismatch(String),
}

/// Who published, or who joined or left.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct ClientInfo {
    /// The connection's id.
    pub client: Arc<str>,
    /// The token's `sub` (empty for anonymous clients).
    pub user: Arc<str>,
    /// The token's `info` claim.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub info: Option<Arc<serde_json::Value>>,
}

/// A publication's payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    /// A JSON value, as valid JSON text.
    Json(Bytes),
    /// Text that is not (necessarily) JSON, from a raw room; valid UTF-8.
    Text(Bytes),
    /// Bytes.
    Binary(Bytes),
}

impl Data {
    /// Payload size in bytes.
    pub fn len(&self) -> usize {
        match self {
            Data::Json(b) | Data::Text(b) | Data::Binary(b) => b.len(),
        }
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A position in a channel's stream: the offset of a publication within an epoch. A new
/// epoch (a restarted memory broker, an expired stream) means offsets started again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct StreamPosition {
    /// Offset of the latest publication (0: none yet).
    pub offset: u64,
    /// The stream's epoch.
    pub epoch: String,
}

/// One publication.
#[derive(Debug, Clone, PartialEq)]
pub struct Publication {
    /// Offset in the channel's stream; 0 when the namespace keeps no history.
    pub offset: u64,
    /// The stream's epoch, with history.
    pub epoch: Option<Arc<str>>,
    /// The payload.
    pub data: Data,
    /// The publisher (none for the HTTP API).
    pub info: Option<ClientInfo>,
    /// What the publication is about, for conflation.
    pub key: Option<Arc<str>>,
    /// When it was published, microseconds since the Unix epoch (for the latency metric).
    pub time_us: u64,
}

/// Join or leave.
#[derive(Debug, Clone, PartialEq)]
pub enum ChannelEvent {
    /// A client subscribed.
    Join(ClientInfo),
    /// A client unsubscribed or disconnected.
    Leave(ClientInfo),
}

/// A message for every node.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum Control {
    /// Close every connection of `user` with `code` and `reason`.
    DisconnectUser {
        /// The user id.
        user: String,
        /// The close code.
        code: u16,
        /// The close reason.
        reason: String,
    },
}

/// History options of a channel's namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryOptions {
    /// Publications kept.
    pub size: usize,
    /// How long each is kept.
    pub ttl: Duration,
}

/// What to read from history.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryQuery {
    /// Only publications after this position (oldest first); `None`: the latest ones.
    pub since: Option<StreamPosition>,
    /// At most this many (`None`: all kept).
    pub limit: Option<usize>,
}

/// What history holds.
#[derive(Debug, Clone)]
pub struct HistoryResult {
    /// The current position of the stream.
    pub position: StreamPosition,
    /// Publications, oldest first.
    pub publications: Vec<Arc<Publication>>,
    /// With `since`: whether `publications` starts right after it (nothing is missing before
    /// the first one). Always `true` without `since`.
    pub contiguous: bool,
}

/// Receives what the broker delivers: the [`Node`](crate::Node).
pub trait BrokerHandler: Send + Sync {
    /// A publication in a channel this node subscribed to.
    fn handle_publication(&self, channel: &ChannelName, publication: Arc<Publication>);
    /// A join or leave in a channel this node subscribed to.
    fn handle_event(&self, channel: &ChannelName, event: ChannelEvent);
    /// A control message for every node.
    fn handle_control(&self, control: Control);
}

/// Presence: connection id → who.
pub type PresenceMap = HashMap<String, ClientInfo>;

/// The broker interface, implemented by [`MemoryBroker`] and [`RedisBroker`].
pub trait Broker: Send + Sync + 'static {
    /// Sets the handler that receives deliveries. Called once by the node.
    fn register(&self, handler: Weak<dyn BrokerHandler>);

    /// Publishes: gives the publication its offset (when `history` is set), stores it and
    /// delivers it to every node subscribed to `channel`. Returns the publication as stored.
    fn publish<'a>(
        &'a self,
        channel: &'a ChannelName,
        publication: Publication,
        history: Option<HistoryOptions>,
    ) -> BrokerFuture<'a, Arc<Publication>>;

    /// Delivers a join or leave to every node subscribed to `channel`.
    fn publish_event<'a>(
        &'a self,
        channel: &'a ChannelName,
        event: ChannelEvent,
    ) -> BrokerFuture<'a, ()>;

    /// Delivers a control message to every node.
    fn publish_control(&self, control: Control) -> BrokerFuture<'_, ()>;

    /// Starts delivering `channel` to this node; resolves once deliveries are guaranteed.
    fn subscribe<'a>(&'a self, channel: &'a ChannelName) -> BrokerFuture<'a, ()>;

    /// Stops delivering `channel` to this node.
    fn unsubscribe<'a>(&'a self, channel: &'a ChannelName) -> BrokerFuture<'a, ()>;

    /// Reads history.
    ///
    /// # Errors
    /// [`BrokerError::EpochMismatch`] when `query.since` names another epoch.
    fn history<'a>(
        &'a self,
        channel: &'a ChannelName,
        query: HistoryQuery,
        options: HistoryOptions,
    ) -> BrokerFuture<'a, HistoryResult>;

    /// Adds (or refreshes) `info` to the presence of `channel`.
    fn add_presence<'a>(
        &'a self,
        channel: &'a ChannelName,
        info: ClientInfo,
    ) -> BrokerFuture<'a, ()>;

    /// Removes the connection `client` from the presence of `channel`.
    fn remove_presence<'a>(
        &'a self,
        channel: &'a ChannelName,
        client: &'a str,
    ) -> BrokerFuture<'a, ()>;

    /// Who is subscribed to `channel`, on every node.
    fn presence<'a>(&'a self, channel: &'a ChannelName) -> BrokerFuture<'a, PresenceMap>;

    /// Channels with at least one subscriber on some node.
    fn channels(&self) -> BrokerFuture<'_, Vec<ChannelName>>;

    /// Whether the broker can serve now (its connections are up). `/readyz` answers 503
    /// while it is not. Always `true` for an in-process broker.
    fn is_healthy(&self) -> bool {
        true
    }

    /// Housekeeping the hub runs every [`SWEEP_INTERVAL`] (expiring history kept in
    /// memory). Must not block.
    fn sweep(&self) {}
}

/// How often the hub calls [`Broker::sweep`].
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Microseconds since the Unix epoch, now.
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

#[cfg(test)]
pub(crate) mod suite;
