//! One task per connection: the `duplex.v1` session and the raw-room session. Each owns its
//! WebSocket and `select!`s over the socket, its outbox, its token's expiry and nothing else.

use crate::auth::{AuthError, Identity};
use crate::broker::{
    BrokerError, ChannelEvent, ClientInfo, Data, HistoryQuery, Publication, StreamPosition,
};
use crate::channel::ChannelName;
use crate::config::SYS_NAMESPACE;
use crate::node::{
    permitted, ConnectionGuard, Node, NodeError, CLOSE_BAD_REQUEST, CLOSE_RATE_LIMIT,
    CLOSE_SERVER_ERROR, CLOSE_TOKEN_EXPIRED, CLOSE_UNAUTHORIZED,
};
use crate::outbox::{CloseOrder, Outbox, Outgoing};
use crate::protocol::{self, Command, ErrorCode, ReplyError};
use duplex::{CloseCode, Message, Outbound, PreparedFrame, WebSocket};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::future::{poll_fn, Future};
use std::hash::BuildHasher;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::debug;

/// Items written per outbox drain before the session looks at its socket again.
const BATCH: usize = 256;
/// Bytes (estimated) taken from the outbox per drain.
const BATCH_BYTES: usize = 128 * 1024;

/// How a connection talks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// `duplex.v1`.
    V1,
    /// A raw room.
    Raw,
}

/// What other tasks may touch of a session: its outbox and who it is.
///
/// In field order (`repr(C)`): a fan-out reads the outbox, the dialect and the client tag
/// of every subscriber, which at thousands of subscribers are out of the cache; together
/// they span few cache lines.
#[derive(Debug)]
#[repr(C)]
pub(crate) struct SessionHandle {
    /// [`client_tag`] of the client id once `info` is set (0 before): a fan-out compares it
    /// with the publisher's before it compares the ids, so it reads no id from the heap for
    /// every subscriber.
    client_tag: AtomicU64,
    pub dialect: Dialect,
    pub outbox: Outbox,
    pub id: u64,
    info: OnceLock<ClientInfo>,
}

/// A hash of a client id, for [`SessionHandle::is_client`].
pub(crate) fn client_tag(client: &str) -> u64 {
    foldhash::fast::FixedState::default().hash_one(client)
}

impl SessionHandle {
    pub(crate) fn new(id: u64, dialect: Dialect, queue_limit: usize) -> Self {
        Self {
            id,
            dialect,
            outbox: Outbox::new(queue_limit),
            info: OnceLock::new(),
            client_tag: AtomicU64::new(0),
        }
    }

    /// Sets who the client is (once; later calls change nothing).
    pub(crate) fn set_info(&self, info: ClientInfo) {
        let tag = client_tag(&info.client);
        if self.info.set(info).is_ok() {
            self.client_tag.store(tag, Ordering::Release);
        }
    }

    pub(crate) fn client_id(&self) -> Option<&str> {
        self.info.get().map(|i| &*i.client)
    }

    /// Whether this is the connection of `client`, whose [`client_tag`] is `tag`.
    pub(crate) fn is_client(&self, client: &str, tag: u64) -> bool {
        self.client_tag.load(Ordering::Acquire) == tag && self.client_id() == Some(client)
    }

    pub(crate) fn user(&self) -> Option<&str> {
        self.info.get().map(|i| &*i.user)
    }
}

/// What the upgrade learned before the connection opened.
pub(crate) struct Opening {
    pub identity: Option<Identity>,
    pub guard: ConnectionGuard,
}

fn new_client_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A token bucket: `rate` per second, holding at most `rate`.
struct Bucket {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: u32) -> Self {
        Self {
            rate: f64::from(rate),
            tokens: f64::from(rate),
            at: Instant::now(),
        }
    }

    fn take(&mut self) -> bool {
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.at).as_secs_f64() * self.rate).min(self.rate);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

struct Subscription {
    /// The stream position the subscribe reply covered (the current one, or the last
    /// recovered publication): queued publications at or before it, in the same epoch, were
    /// part of the reply or of the state the client reloads, and are dropped. Later ones are
    /// all sent, whatever their order (conflation may reorder keys).
    covered_offset: u64,
    epoch: Option<String>,
}

/// A session's subscriptions, with the last one a delivery looked up remembered by the
/// name's pointer: deliveries carry the registry's copy of their channel's name (see
/// `Registry::for_each`), so a session fed by one channel finds its subscription without
/// hashing the name, probing the map and comparing strings, three other places in memory.
#[derive(Default)]
struct Subscriptions {
    /// Looked up for every delivery that misses `last`: a fast (randomly seeded) hasher.
    map: HashMap<ChannelName, Subscription, foldhash::fast::RandomState>,
    /// The channel last found and its `covered_offset`; cleared by every change of `map`.
    last: Option<(ChannelName, u64)>,
}

impl Subscriptions {
    fn get(&self, channel: &ChannelName) -> Option<&Subscription> {
        self.map.get(channel)
    }

    fn contains_key(&self, channel: &ChannelName) -> bool {
        self.map.contains_key(channel)
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    fn insert(&mut self, channel: ChannelName, sub: Subscription) {
        self.last = None;
        self.map.insert(channel, sub);
    }

    fn remove(&mut self, channel: &ChannelName) -> Option<Subscription> {
        self.last = None;
        self.map.remove(channel)
    }

    /// Empties the map, returning the channels.
    fn take_channels(&mut self) -> Vec<ChannelName> {
        self.last = None;
        self.map.drain().map(|(channel, _)| channel).collect()
    }

    /// The offset the subscribe reply of `channel` covered; `None` when not subscribed.
    fn covered_offset(&mut self, channel: &ChannelName) -> Option<u64> {
        if let Some((last, covered)) = &self.last {
            if last.same(channel) {
                return Some(*covered);
            }
        }
        let covered = self.map.get(channel)?.covered_offset;
        self.last = Some((channel.clone(), covered));
        Some(covered)
    }
}

struct V1<S> {
    node: Arc<Node>,
    ws: WebSocket<S>,
    handle: Arc<SessionHandle>,
    identity: Option<Identity>,
    /// The token came with the handshake (a token in `connect` is then ignored).
    handshake_identity: bool,
    connected: bool,
    /// Looked up for every delivery: a fast (randomly seeded) hasher.
    subs: Subscriptions,
    bucket: Bucket,
    commands: Bucket,
}

enum Flow {
    Continue,
    Close(u16, String),
}

/// Runs a `duplex.v1` connection to its end.
///
/// This future is every session's task, touched at each delivery, so it is kept small: a
/// function returning an `async move` block (an `async fn` keeps its arguments twice), and
/// the rare or once-per-connection steps (a command, the close, the clean-up) boxed. The
/// session is registered when this is called, not when the future is first polled: await it
/// at once (as `on_upgrade` does), or its clean-up never runs.
pub(crate) fn run_v1<S>(
    node: Arc<Node>,
    ws: WebSocket<S>,
    opening: Opening,
) -> impl Future<Output = ()> + Send
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Built before the task's future, which then holds each part once.
    let Opening { identity, guard } = opening;
    let handle = node.new_session(Dialect::V1);
    let gauge = node.metrics().connection_opened("v1");
    let mut session = V1 {
        bucket: Bucket::new(node.settings().limits.publish_rate),
        commands: Bucket::new(node.settings().limits.command_rate),
        handshake_identity: identity.is_some(),
        node,
        ws,
        handle,
        identity,
        connected: false,
        subs: Subscriptions::default(),
    };
    async move {
        session.run().await;
        Box::pin(session.cleanup()).await;
        gauge.dec();
        drop(guard);
    }
}

/// Ready once the token expiring at `expires_at` (Unix seconds) has expired; never without
/// one. The timer is made once (and again only if the expiry changes), not at every poll:
/// a timer made per wake-up would be registered and cancelled for every delivery. The wall
/// clock is read only when a timer is made: a token already expired is ready at once, and
/// a timer that fires early by the wall clock (set back meanwhile) is made again for what
/// is left.
fn poll_expiry(
    timer: &mut Option<(u64, Pin<Box<tokio::time::Sleep>>)>,
    expires_at: Option<u64>,
    cx: &mut Context<'_>,
) -> Poll<()> {
    let Some(at) = expires_at else {
        return Poll::Pending;
    };
    if timer.as_ref().is_some_and(|(armed, _)| *armed != at) {
        *timer = None;
    }
    loop {
        if timer.is_none() {
            let now = unix_now();
            if now >= at {
                return Poll::Ready(());
            }
            let left = Duration::from_secs(at - now);
            *timer = Some((at, Box::pin(tokio::time::sleep(left))));
        }
        if let Some((_, sleep)) = timer {
            ready!(sleep.as_mut().poll(cx));
        }
        // Fired: the wall clock decides at the top.
        *timer = None;
    }
}

impl<S> V1<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    async fn run(&mut self) {
        // Grown on demand and released after a large batch: an idle connection holds none.
        let mut batch = Vec::new();
        let mut expiry = None;
        loop {
            let expires_at = self.identity.as_ref().map(|i| i.expires_at);
            let expired = poll_fn(|cx| poll_expiry(&mut expiry, expires_at, cx));
            let flow = tokio::select! {
                biased;
                () = self.handle.outbox.ready() => {
                    let flow = self.write_outbox(&mut batch).await;
                    if batch.capacity() > 16 {
                        batch = Vec::new();
                    }
                    flow
                }
                received = self.ws.recv() => match received {
                    None => return,
                    Some(Err(error)) => {
                        count_too_big(&self.node, &error);
                        debug!(%error, "duplex.v1 connection ended");
                        return;
                    }
                    Some(Ok(message)) => Box::pin(self.on_message(message)).await,
                },
                () = expired => Flow::Close(CLOSE_TOKEN_EXPIRED, "token expired".into()),
            };
            if let Flow::Close(code, reason) = flow {
                Box::pin(self.close(code, &reason)).await;
                return;
            }
        }
    }

    async fn close(&mut self, code: u16, reason: &str) {
        if code == 1006 {
            return; // the connection failed: nothing can be sent
        }
        if code != 1001 && code != 1000 {
            let reconnect = (4000..4500).contains(&code) || code < 4000;
            let _ = self
                .ws
                .feed(protocol::disconnect_push(code, reason, reconnect))
                .await;
        }
        let _ = self.ws.close(CloseCode::from(code), reason).await;
    }

    async fn write_outbox(&mut self, batch: &mut Vec<Outgoing>) -> Flow {
        if let Some(CloseOrder { code, reason }) =
            self.handle.outbox.drain(batch, BATCH, BATCH_BYTES)
        {
            return Flow::Close(code, reason);
        }
        let metrics = self.node.metrics();
        let now = crate::broker::now_us();
        // Counted per batch, not per item: the counters are shared by every connection.
        let mut sent = Sent::default();
        let items = v1_items(batch, &mut self.subs, metrics, now, &mut sent);
        let result = self.ws.send_all(items).await;
        sent.record(metrics);
        batch.clear();
        if result.is_err() {
            return Flow::Close(1006, String::new());
        }
        Flow::Continue
    }

    async fn send(&mut self, message: Message) -> Flow {
        let metrics = self.node.metrics();
        metrics.messages_out.inc();
        metrics.bytes_out.inc_by(message.len() as u64);
        match self.ws.send(message).await {
            Ok(()) => Flow::Continue,
            Err(_) => Flow::Close(1006, String::new()),
        }
    }

    async fn on_message(&mut self, message: Message) -> Flow {
        let metrics = self.node.metrics();
        metrics.messages_in.inc();
        metrics.bytes_in.inc_by(message.len() as u64);
        let (id, command) = match protocol::parse(&message) {
            Ok(parsed) => parsed,
            Err(bad) => {
                debug!(error = %bad, "closing a duplex.v1 connection");
                return Flow::Close(CLOSE_BAD_REQUEST, truncate(&bad.to_string()));
            }
        };
        if !self.connected {
            match &command {
                Ok(Command::Connect { .. }) => {}
                Ok(_) => {
                    return Flow::Close(
                        CLOSE_BAD_REQUEST,
                        "the first command must be connect".into(),
                    )
                }
                Err(error) => {
                    // A connect with a bad field (or a first command that is not one): answer
                    // why, then close as for any bad first command.
                    if let Flow::Close(c, r) = self.send(protocol::error_reply(id, error)).await {
                        return Flow::Close(c, r);
                    }
                    return Flow::Close(CLOSE_BAD_REQUEST, truncate(&error.message));
                }
            }
        }
        let command = match command {
            Ok(command) => command,
            Err(error) => return self.send(protocol::error_reply(id, &error)).await,
        };
        if !matches!(command, Command::Connect { .. } | Command::Publish { .. })
            && !self.commands.take()
        {
            self.node.metrics().limit_hit("command_rate");
            let error =
                ReplyError::new(ErrorCode::TOO_MANY_REQUESTS, "too many commands: slow down");
            return self.send(protocol::error_reply(id, &error)).await;
        }
        let outcome = match command {
            Command::Connect { token, info, .. } => return self.connect(id, token, info).await,
            Command::Subscribe { channel, recover } => self.subscribe(id, &channel, recover).await,
            Command::Unsubscribe { channel } => self.unsubscribe(&channel).await.map(Reply::Json),
            Command::Publish { channel, data, key } => {
                if !self.bucket.take() {
                    self.node.metrics().limit_hit("publish_rate");
                    return Flow::Close(CLOSE_RATE_LIMIT, "publish rate limit exceeded".into());
                }
                self.publish(&channel, data, key).await.map(Reply::Json)
            }
            Command::Presence { channel } => self.presence(&channel, false).await.map(Reply::Json),
            Command::PresenceStats { channel } => {
                self.presence(&channel, true).await.map(Reply::Json)
            }
            Command::History {
                channel,
                limit,
                since,
            } => self.history(id, &channel, limit, since).await,
            Command::Ping => Ok(Reply::Json(json!({}))),
        };
        let message = match outcome {
            Ok(Reply::Json(result)) => protocol::reply(id, result),
            Ok(Reply::Message(message)) => message,
            Err(error) => protocol::error_reply(id, &error),
        };
        self.send(message).await
    }

    /// `info` is the client's own display data, used when the token has no `info` claim.
    async fn connect(&mut self, id: u64, token: Option<String>, info: Option<Value>) -> Flow {
        if self.connected {
            return self
                .send(protocol::error_reply(
                    id,
                    &ReplyError::new(ErrorCode::ALREADY, "already connected"),
                ))
                .await;
        }
        if !self.handshake_identity {
            if let Some(token) = token {
                match self
                    .node
                    .settings()
                    .authenticator()
                    .verify(&token, SystemTime::now())
                {
                    Ok(identity) => self.identity = Some(identity),
                    Err(error) => return self.refuse(id, &error).await,
                }
            }
        }
        let client = new_client_id();
        let info = ClientInfo {
            client: client.as_str().into(),
            user: self
                .identity
                .as_ref()
                .map_or("", |i| i.user.as_str())
                .into(),
            // The token's claim wins: it is verified, the client's own is not.
            info: self
                .identity
                .as_ref()
                .and_then(|i| i.info.clone())
                .or(info)
                .map(Arc::new),
        };
        self.handle.set_info(info.clone());
        self.connected = true;
        let mut result = json!({
            "client": client,
            "user": &*info.user,
            "node": self.node.name(),
            "version": env!("CARGO_PKG_VERSION"),
            "ping": self.node.settings().ping.interval_secs,
        });
        if let Some(identity) = &self.identity {
            result["expires"] = json!(identity.expires_at);
        }
        self.send(protocol::reply(id, result)).await
    }

    async fn refuse(&mut self, id: u64, error: &AuthError) -> Flow {
        let metrics = self.node.metrics();
        let (code, close, reason) = if error.is_expired() {
            metrics.auth_failure("expired");
            (
                ErrorCode::TOKEN_EXPIRED,
                CLOSE_TOKEN_EXPIRED,
                "token expired",
            )
        } else {
            metrics.auth_failure("invalid");
            (ErrorCode::UNAUTHORIZED, CLOSE_UNAUTHORIZED, "unauthorized")
        };
        debug!(%error, "token refused in connect");
        if let Flow::Close(c, r) = self
            .send(protocol::error_reply(
                id,
                &ReplyError::new(code, error.to_string()),
            ))
            .await
        {
            return Flow::Close(c, r);
        }
        Flow::Close(close, reason.into())
    }

    fn channel(&self, name: &str) -> Result<ChannelName, ReplyError> {
        let channel = ChannelName::new(name)
            .map_err(|e| ReplyError::new(ErrorCode::UNKNOWN_CHANNEL, format!("{name:?}: {e}")))?;
        if self.node.namespace(&channel).is_none() {
            return Err(ReplyError::new(
                ErrorCode::UNKNOWN_CHANNEL,
                format!("namespace {:?} is not configured", channel.namespace()),
            ));
        }
        Ok(channel)
    }

    fn may_subscribe(&self, channel: &ChannelName) -> Result<(), ReplyError> {
        let ns = self.node.namespace(channel).expect("checked by channel()");
        let identity = self.identity.as_ref();
        let granted = identity.is_some_and(|i| i.may_subscribe(channel.as_str()));
        if permitted(&ns.subscribe, identity, channel, granted) {
            Ok(())
        } else {
            Err(ReplyError::new(
                ErrorCode::PERMISSION_DENIED,
                format!("permission denied: subscribe to {channel}"),
            ))
        }
    }

    async fn subscribe(
        &mut self,
        id: u64,
        name: &str,
        recover: Option<StreamPosition>,
    ) -> Result<Reply, ReplyError> {
        let channel = self.channel(name)?;
        self.may_subscribe(&channel)?;
        if self.subs.contains_key(&channel) {
            return Err(ReplyError::new(
                ErrorCode::ALREADY,
                format!("already subscribed to {channel}"),
            ));
        }
        let limits = &self.node.settings().limits;
        if self.subs.len() >= limits.max_subscriptions {
            self.node.metrics().limit_hit("max_subscriptions");
            return Err(ReplyError::new(
                ErrorCode::LIMIT_EXCEEDED,
                format!(
                    "at most {} subscriptions per connection",
                    limits.max_subscriptions
                ),
            ));
        }
        let ns = self.node.namespace(&channel).expect("checked").clone();
        match self.node.subscribe(&channel, &self.handle).await {
            Ok(()) => {}
            Err(NodeError::ChannelFull(_)) => {
                return Err(ReplyError::new(
                    ErrorCode::LIMIT_EXCEEDED,
                    format!("{channel} has its maximum of subscribers"),
                ))
            }
            Err(e) => return Err(ReplyError::new(ErrorCode::INTERNAL, e.to_string())),
        }
        // Registered first, history second: whatever is published from now on is either in
        // the history read below or queued in the outbox (or both: duplicates are dropped
        // by offset when written).
        let mut result = serde_json::Map::new();
        result.insert("channel".into(), json!(channel.as_str()));
        result.insert("recoverable".into(), json!(ns.recover));
        result.insert("presence".into(), json!(ns.presence));
        let mut sub = Subscription {
            covered_offset: 0,
            epoch: None,
        };
        let mut publications = Vec::new();
        if ns.has_history() {
            let query = match (&recover, ns.recover) {
                (Some(position), true) => HistoryQuery {
                    since: Some(position.clone()),
                    limit: None,
                },
                _ => HistoryQuery {
                    since: None,
                    limit: Some(0),
                },
            };
            let history = match self.node.history(&channel, query).await {
                Ok(Some(h)) => Some(h),
                Ok(None) => None,
                Err(NodeError::Broker(BrokerError::EpochMismatch(_))) => {
                    // Another epoch: read the current position and say "not recovered".
                    let query = HistoryQuery {
                        since: None,
                        limit: Some(0),
                    };
                    match self.node.history(&channel, query).await {
                        Ok(h) => h.map(|mut h| {
                            h.contiguous = false;
                            h
                        }),
                        Err(e) => return self.undo_subscribe(&channel, e).await,
                    }
                }
                Err(e) => return self.undo_subscribe(&channel, e).await,
            };
            if let Some(history) = history {
                result.insert("epoch".into(), json!(history.position.epoch));
                result.insert("offset".into(), json!(history.position.offset));
                sub.epoch = Some(history.position.epoch.clone());
                sub.covered_offset = history.position.offset;
                if recover.is_some() && ns.recover {
                    result.insert("recovered".into(), json!(history.contiguous));
                    if history.contiguous {
                        publications = history.publications;
                        if let Some(last) = publications.last() {
                            sub.covered_offset = last.offset;
                        } else if let Some(position) = &recover {
                            sub.covered_offset = position.offset;
                        }
                    }
                }
            }
        }
        if recover.is_some() && !result.contains_key("recovered") {
            // Recovery is off for this namespace: say so rather than stay silent.
            result.insert("recovered".into(), json!(false));
        }
        self.subs.insert(channel.clone(), sub);
        if ns.presence {
            let info = self.handle.info.get().cloned().expect("connected");
            if let Err(e) = self
                .node
                .broker()
                .add_presence(&channel, info.clone())
                .await
            {
                self.node.metrics().broker_errors.inc();
                debug!(error = %e, "presence add failed");
            }
            if ns.join_leave {
                let _ = self
                    .node
                    .broker()
                    .publish_event(&channel, ChannelEvent::Join(info))
                    .await;
            }
        }
        if publications.is_empty() && !result.contains_key("recovered") {
            return Ok(Reply::Json(Value::Object(result)));
        }
        Ok(Reply::Message(protocol::reply_with_publications(
            id,
            result,
            &publications,
        )))
    }

    async fn undo_subscribe(
        &mut self,
        channel: &ChannelName,
        error: NodeError,
    ) -> Result<Reply, ReplyError> {
        self.node.unsubscribe(channel, self.handle.id).await;
        Err(ReplyError::new(ErrorCode::INTERNAL, error.to_string()))
    }

    async fn unsubscribe(&mut self, name: &str) -> Result<Value, ReplyError> {
        let channel = ChannelName::new(name)
            .map_err(|e| ReplyError::new(ErrorCode::UNKNOWN_CHANNEL, e.to_string()))?;
        if self.subs.remove(&channel).is_none() {
            return Err(ReplyError::new(
                ErrorCode::NOT_SUBSCRIBED,
                format!("not subscribed to {channel}"),
            ));
        }
        self.leave(&channel).await;
        Ok(json!({}))
    }

    async fn leave(&self, channel: &ChannelName) {
        self.node.unsubscribe(channel, self.handle.id).await;
        let Some(ns) = self.node.namespace(channel) else {
            return;
        };
        if ns.presence {
            if let Some(info) = self.handle.info.get() {
                let _ = self
                    .node
                    .broker()
                    .remove_presence(channel, &info.client)
                    .await;
                if ns.join_leave {
                    let _ = self
                        .node
                        .broker()
                        .publish_event(channel, ChannelEvent::Leave(info.clone()))
                        .await;
                }
            }
        }
    }

    async fn publish(
        &mut self,
        name: &str,
        data: Data,
        key: Option<String>,
    ) -> Result<Value, ReplyError> {
        let channel = self.channel(name)?;
        if channel.namespace() == SYS_NAMESPACE {
            // Whatever the namespace's rule or the token's grants: these are the hub's own.
            return Err(ReplyError::new(
                ErrorCode::PERMISSION_DENIED,
                format!("permission denied: only the hub publishes to {channel}"),
            ));
        }
        let ns = self.node.namespace(&channel).expect("checked");
        let identity = self.identity.as_ref();
        let granted = identity.is_some_and(|i| i.may_publish(channel.as_str()));
        if !permitted(&ns.publish, identity, &channel, granted) {
            return Err(ReplyError::new(
                ErrorCode::PERMISSION_DENIED,
                format!("permission denied: publish to {channel}"),
            ));
        }
        // The parser only makes JSON or binary data; raw text comes from rooms alone.
        debug_assert!(!matches!(data, Data::Text(_)));
        let info = self.handle.info.get().cloned();
        let publication = self
            .node
            .publish(&channel, data, info, key.as_deref())
            .await
            .map_err(|e| ReplyError::new(ErrorCode::INTERNAL, e.to_string()))?;
        Ok(match &publication.epoch {
            Some(epoch) => json!({"offset": publication.offset, "epoch": &**epoch}),
            None => json!({}),
        })
    }

    async fn presence(&mut self, name: &str, stats: bool) -> Result<Value, ReplyError> {
        let channel = self.channel(name)?;
        self.may_subscribe(&channel)?;
        if !self.node.namespace(&channel).expect("checked").presence {
            return Err(ReplyError::new(
                ErrorCode::NOT_AVAILABLE,
                format!("presence is off for {channel}"),
            ));
        }
        let presence = self
            .node
            .presence(&channel)
            .await
            .map_err(|e| ReplyError::new(ErrorCode::INTERNAL, e.to_string()))?;
        Ok(presence_json(&presence, stats))
    }

    async fn history(
        &mut self,
        id: u64,
        name: &str,
        limit: Option<usize>,
        since: Option<StreamPosition>,
    ) -> Result<Reply, ReplyError> {
        let channel = self.channel(name)?;
        self.may_subscribe(&channel)?;
        let history = self
            .node
            .history(&channel, HistoryQuery { since, limit })
            .await;
        match history {
            Ok(Some(h)) => {
                let mut result = serde_json::Map::new();
                result.insert("epoch".into(), json!(h.position.epoch));
                result.insert("offset".into(), json!(h.position.offset));
                Ok(Reply::Message(protocol::reply_with_publications(
                    id,
                    result,
                    &h.publications,
                )))
            }
            Ok(None) => Err(ReplyError::new(
                ErrorCode::NOT_AVAILABLE,
                format!("history is off for {channel}"),
            )),
            Err(NodeError::Broker(BrokerError::EpochMismatch(e))) => Err(ReplyError::new(
                ErrorCode::EPOCH_MISMATCH,
                format!("epoch {e:?} is not the channel's current epoch"),
            )),
            Err(e) => Err(ReplyError::new(ErrorCode::INTERNAL, e.to_string())),
        }
    }

    async fn cleanup(&mut self) {
        let channels = self.subs.take_channels();
        for channel in channels {
            self.leave(&channel).await;
        }
        self.node.end_session(self.handle.id);
    }
}

/// Counts a message over `limits.max_message_size` (the engine closed with 1009).
fn count_too_big(node: &Node, error: &duplex::Error) {
    use duplex::ProtocolError;
    if let duplex::Error::Protocol(
        ProtocolError::MessageTooBig { .. } | ProtocolError::FrameTooBig { .. },
    ) = error
    {
        node.metrics().limit_hit("max_message_size");
    }
}

/// The JSON of a presence reply (`stats`: counts only).
pub(crate) fn presence_json(presence: &crate::broker::PresenceMap, stats: bool) -> Value {
    if stats {
        let users: std::collections::HashSet<&str> = presence.values().map(|i| &*i.user).collect();
        json!({"clients": presence.len(), "users": users.len()})
    } else {
        json!({"clients": presence})
    }
}

enum Reply {
    Json(Value),
    Message(Message),
}

fn truncate(reason: &str) -> String {
    // A close reason is at most 123 bytes (RFC 6455 §5.5).
    let mut end = reason.len().min(120);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_owned()
}

/// Runs a raw-room connection: messages in become publications of `channel`; publications
/// of `channel` go out as plain messages.
/// A raw-room member that already joined its room (before the `101` went out, so that
/// everything published after the client sees `open` reaches it). Leaves the room when
/// dropped, should the upgrade never complete.
pub(crate) struct RoomMember {
    node: Arc<Node>,
    handle: Arc<SessionHandle>,
    channel: ChannelName,
    info: ClientInfo,
    left: bool,
}

impl RoomMember {
    /// Joins `channel` for a client that is about to be upgraded.
    pub(crate) async fn join(
        node: &Arc<Node>,
        channel: ChannelName,
        identity: Option<&Identity>,
    ) -> Result<Self, NodeError> {
        let handle = node.new_session(Dialect::Raw);
        let info = ClientInfo {
            client: new_client_id().into(),
            user: identity.map_or("", |i| i.user.as_str()).into(),
            info: identity.and_then(|i| i.info.clone()).map(Arc::new),
        };
        handle.set_info(info.clone());
        // The guard exists before the first await: if this future is dropped while the
        // broker subscribes, its Drop still takes the session out of the registry.
        let member = Self {
            node: node.clone(),
            handle,
            channel,
            info,
            left: false,
        };
        node.subscribe(&member.channel, &member.handle).await?;
        Ok(member)
    }

    async fn leave(mut self) {
        self.left = true;
        self.node.unsubscribe(&self.channel, self.handle.id).await;
        self.node.end_session(self.handle.id);
    }
}

impl Drop for RoomMember {
    fn drop(&mut self) {
        if !self.left {
            let (node, channel, id) = (self.node.clone(), self.channel.clone(), self.handle.id);
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    node.unsubscribe(&channel, id).await;
                    node.end_session(id);
                });
            }
        }
    }
}

/// Runs a raw-room connection: messages in become publications of the room's channel;
/// publications of the channel go out as plain messages.
///
/// A function returning an `async move` block rather than an `async fn`: an `async fn`
/// keeps its arguments twice in its future (as arguments and as locals), and this future is
/// every room member's task, touched at each delivery.
#[allow(clippy::manual_async_fn)] // an `async fn` would hold its arguments twice
pub(crate) fn run_room<S>(
    member: RoomMember,
    mut ws: WebSocket<S>,
    may_publish: bool,
    guard: ConnectionGuard,
) -> impl Future<Output = ()> + Send
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    async move {
        let node = member.node.clone();
        let gauge = node.metrics().connection_opened("rooms");
        let result = room_loop(
            &node,
            &mut ws,
            &member.handle,
            &member.channel,
            member.info.clone(),
            may_publish,
        )
        .await;
        // Once per connection: boxed, so they do not make the task larger.
        if let Some((code, reason)) = result {
            let _ = Box::pin(ws.close(CloseCode::from(code), &reason)).await;
        }
        Box::pin(member.leave()).await;
        gauge.dec();
        drop(guard);
    }
}

/// A raw room's frames of an outbox batch: its publications (join and leave events are for
/// duplex.v1 sessions only). A function rather than a closure at the call site, so the
/// iterator's lifetimes are named and the session's future stays `Send`.
fn raw_frames<'a>(
    batch: &'a [Outgoing],
    metrics: &'a crate::metrics::Metrics,
    now: u64,
    sent: &'a mut Sent,
) -> impl Iterator<Item = Outbound<'a>> + Send + 'a {
    batch.iter().filter_map(move |item| match item {
        Outgoing::Publication(delivery) => {
            Some(sent.publication(delivery.raw(), &delivery.publication, metrics, now))
        }
        Outgoing::Event(_) => None,
    })
}

/// A duplex.v1 session's items of an outbox batch: publications of channels it is still
/// subscribed to and not covered by a subscribe reply, join and leave events of channels it
/// is still in.
fn v1_items<'a>(
    batch: &'a [Outgoing],
    subs: &'a mut Subscriptions,
    metrics: &'a crate::metrics::Metrics,
    now: u64,
    sent: &'a mut Sent,
) -> impl Iterator<Item = Outbound<'a>> + Send + 'a {
    batch.iter().filter_map(move |item| match item {
        Outgoing::Publication(delivery) => {
            let (channel, publication) = (&delivery.channel, &delivery.publication);
            let covered = subs.covered_offset(channel)?;
            // The offsets first: the epochs (strings) are compared only for the few
            // publications at or before what the subscribe reply covered.
            if publication.offset > 0
                && publication.offset <= covered
                && subs
                    .get(channel)
                    .is_some_and(|sub| sub.epoch.as_deref() == publication.epoch.as_deref())
            {
                return None; // covered by the subscribe reply
            }
            Some(sent.publication(delivery.v1(), publication, metrics, now))
        }
        Outgoing::Event(event) => {
            if !subs.contains_key(&event.channel) {
                return None; // left the channel meanwhile
            }
            sent.add(event.message.len());
            Some(Outbound::Message(event.message.clone()))
        }
    })
}

/// Messages and bytes written from one outbox batch, added to the shared counters once.
#[derive(Default)]
struct Sent {
    messages: u64,
    bytes: u64,
}

impl Sent {
    fn add(&mut self, len: usize) {
        self.messages += 1;
        self.bytes += len as u64;
    }

    /// Counts a publication's `frame` going out `now` (and its publish-to-write time).
    fn publication<'a>(
        &mut self,
        frame: &'a PreparedFrame,
        publication: &Publication,
        metrics: &crate::metrics::Metrics,
        now: u64,
    ) -> Outbound<'a> {
        metrics
            .publish_to_write
            .observe_us(now.saturating_sub(publication.time_us));
        self.add(frame.message().len());
        Outbound::Prepared(frame)
    }

    fn record(self, metrics: &crate::metrics::Metrics) {
        if self.messages > 0 {
            metrics.messages_out.inc_by(self.messages);
            metrics.bytes_out.inc_by(self.bytes);
        }
    }
}

/// A raw room member's loop (see [`run_room`] for why it is not an `async fn`).
#[allow(clippy::manual_async_fn)] // see run_room: not an `async fn` on purpose
fn room_loop<'a, S>(
    node: &'a Arc<Node>,
    ws: &'a mut WebSocket<S>,
    handle: &'a Arc<SessionHandle>,
    channel: &'a ChannelName,
    info: ClientInfo,
    may_publish: bool,
) -> impl Future<Output = Option<(u16, String)>> + Send + 'a
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    async move {
        let metrics = node.metrics();
        let mut bucket = Bucket::new(node.settings().limits.publish_rate);
        let mut batch = Vec::new();
        loop {
            tokio::select! {
                biased;
                () = handle.outbox.ready() => {
                    if let Some(order) = handle.outbox.drain(&mut batch, BATCH, BATCH_BYTES) {
                        return Some((order.code, order.reason));
                    }
                    let now = crate::broker::now_us();
                    let mut sent = Sent::default();
                    let frames = raw_frames(&batch, metrics, now, &mut sent);
                    let result = ws.send_all(frames).await;
                    sent.record(metrics);
                    batch.clear();
                    if result.is_err() {
                        return None;
                    }
                    if batch.capacity() > 16 {
                        batch = Vec::new();
                    }
                }
                received = ws.recv() => {
                    let message = match received {
                        None => return None,
                        Some(Err(error)) => {
                            count_too_big(node, &error);
                            debug!(%error, "room connection ended");
                            return None;
                        }
                        Some(Ok(message)) => message,
                    };
                    metrics.messages_in.inc();
                    metrics.bytes_in.inc_by(message.len() as u64);
                    if !may_publish {
                        return Some((CloseCode::POLICY.into(), format!("not allowed to publish to {channel}")));
                    }
                    if !bucket.take() {
                        metrics.limit_hit("publish_rate");
                        return Some((CLOSE_RATE_LIMIT, "publish rate limit exceeded".into()));
                    }
                    let data = match message {
                        Message::Text(text) => Data::Text(text.into_bytes()),
                        Message::Binary(bytes) => Data::Binary(bytes),
                    };
                    // Boxed: a member publishes far less often than it is woken to deliver,
                    // and the publish future inline would make every member's task larger.
                    let publish = Box::pin(node.publish(channel, data, Some(info.clone()), None));
                    if let Err(e) = publish.await {
                        return Some((CLOSE_SERVER_ERROR, truncate(&e.to_string())));
                    }
                }
            }
        }
    }
}

/// Runs an echo connection: `duplex echo`'s behaviour.
pub(crate) async fn run_echo<S>(node: Arc<Node>, mut ws: WebSocket<S>, guard: ConnectionGuard)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let handle = node.new_session(Dialect::Raw);
    let gauge = node.metrics().connection_opened("echo");
    loop {
        tokio::select! {
            biased;
            () = handle.outbox.ready() => {
                // Nothing is queued for an echo connection but a close order; anything
                // else is dropped, so the wait does not return again at once.
                let mut none = Vec::new();
                if let Some(order) = handle.outbox.drain(&mut none, usize::MAX, usize::MAX) {
                    let _ = ws.close(CloseCode::from(order.code), &order.reason).await;
                    break;
                }
            }
            received = ws.recv() => match received {
                Some(Ok(message)) => {
                    node.metrics().messages_in.inc();
                    if ws.send(message).await.is_err() {
                        break;
                    }
                    node.metrics().messages_out.inc();
                }
                _ => break,
            }
        }
    }
    node.end_session(handle.id);
    gauge.dec();
    drop(guard);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(client: &str) -> ClientInfo {
        ClientInfo {
            client: client.into(),
            user: "".into(),
            info: None,
        }
    }

    #[test]
    fn is_client_compares_tags_then_ids() {
        let handle = SessionHandle::new(1, Dialect::Raw, 1024);
        let me = "c-1234";
        assert!(
            !handle.is_client(me, client_tag(me)),
            "no one before it connected"
        );
        handle.set_info(info(me));
        assert!(handle.is_client(me, client_tag(me)));
        assert!(!handle.is_client("c-5678", client_tag("c-5678")));
        // The tag decides first: a wrong tag is not the client, even with the right id...
        assert!(!handle.is_client(me, client_tag(me) ^ 1));
        // ...and a right tag with another id is not either (a collision stays harmless).
        assert!(!handle.is_client("c-5678", client_tag(me)));
        // Set once.
        handle.set_info(info("c-5678"));
        assert_eq!(handle.client_id(), Some(me));
    }

    #[tokio::test]
    async fn the_expiry_timer_is_made_once_per_expiry() {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut timer = None;
        assert!(poll_expiry(&mut timer, None, &mut cx).is_pending());
        assert!(timer.is_none(), "no token, no timer");
        let later = unix_now() + 3600;
        assert!(poll_expiry(&mut timer, Some(later), &mut cx).is_pending());
        let armed = |t: &Option<(u64, Pin<Box<tokio::time::Sleep>>)>| {
            t.as_ref().map(|(at, sleep)| (*at, &**sleep as *const _))
        };
        let first = armed(&timer);
        assert!(poll_expiry(&mut timer, Some(later), &mut cx).is_pending());
        assert_eq!(
            armed(&timer),
            first,
            "the same timer, not a new one per poll"
        );
        assert!(poll_expiry(&mut timer, Some(later + 60), &mut cx).is_pending());
        assert_eq!(timer.as_ref().map(|(at, _)| *at), Some(later + 60));
        assert!(poll_expiry(&mut timer, Some(unix_now() - 1), &mut cx).is_ready());
    }

    #[test]
    fn the_last_subscription_found_is_remembered_until_the_map_changes() {
        let sub = |covered_offset| Subscription {
            covered_offset,
            epoch: None,
        };
        let name = ChannelName::new("chat:a").unwrap();
        // An equal name that is another copy (what a publication's name was before it
        // went through the registry).
        let copy = ChannelName::new("chat:a").unwrap();
        let mut subs = Subscriptions::default();
        assert_eq!(subs.covered_offset(&name), None);
        subs.insert(name.clone(), sub(5));
        assert_eq!(subs.covered_offset(&name), Some(5));
        assert!(subs.last.as_ref().is_some_and(|(n, _)| n.same(&name)));
        assert_eq!(
            subs.covered_offset(&copy),
            Some(5),
            "found by value as well"
        );
        // Unsubscribed: the remembered pointer must not answer any more.
        subs.remove(&copy);
        assert_eq!(subs.covered_offset(&copy), None);
        assert_eq!(subs.covered_offset(&name), None);
        subs.insert(copy.clone(), sub(9));
        assert_eq!(subs.covered_offset(&copy), Some(9));
        assert_eq!(subs.take_channels().len(), 1);
        assert_eq!(subs.covered_offset(&copy), None);
    }

    #[tokio::test]
    async fn deliveries_carry_the_registrys_copy_of_the_name() {
        use crate::broker::MemoryBroker;
        use crate::config::{HubConfig, Settings};
        let node = Node::new(
            Settings::new(HubConfig::default()).unwrap(),
            Arc::new(MemoryBroker::new()),
        );
        let registered = ChannelName::new("chat:a").unwrap();
        let handle = node.new_session(Dialect::V1);
        node.subscribe(&registered, &handle).await.unwrap();
        for _ in 0..2 {
            let published = ChannelName::new("chat:a").unwrap();
            node.publish(&published, Data::Text("x".into()), None, None)
                .await
                .unwrap();
        }
        let mut batch = Vec::new();
        assert!(handle.outbox.drain(&mut batch, 16, usize::MAX).is_none());
        assert_eq!(batch.len(), 2);
        for item in &batch {
            let Outgoing::Publication(delivery) = item else {
                panic!("not a publication");
            };
            assert!(delivery.channel.same(&registered));
        }
    }

    /// A connection's task is touched at every delivery and held for the connection's
    /// life: the sessions' futures stay small (rare steps boxed, no `async fn` arguments
    /// held twice). Measured with a pipe; a TCP connection's `WebSocket` is as large (a
    /// pointer). In a debug build 760 and 952 bytes; before they were made so, 936 and
    /// 2,000 (in a release build the whole tasks went from 1,280 to 768 bytes and from
    /// 2,432 to 1,024).
    #[tokio::test]
    async fn session_tasks_stay_small() {
        use crate::broker::MemoryBroker;
        use crate::config::HubConfig;
        use crate::config::Settings;
        use duplex::{Role, WebSocketConfig};
        let node = Node::new(
            Settings::new(HubConfig::default()).unwrap(),
            Arc::new(MemoryBroker::new()),
        );
        let ws = || {
            let (stream, _) = tokio::io::duplex(64);
            WebSocket::from_raw(stream, Role::Server, WebSocketConfig::default())
        };
        let guard = node.try_open_connection().unwrap();
        let v1 = run_v1(
            node.clone(),
            ws(),
            Opening {
                identity: None,
                guard,
            },
        );
        assert!(size_of_val(&v1) <= 1024, "duplex.v1: {}", size_of_val(&v1));
        let channel = ChannelName::new("rooms:size").unwrap();
        let member = RoomMember::join(&node, channel, None).await.unwrap();
        let guard = node.try_open_connection().unwrap();
        let room = run_room(member, ws(), true, guard);
        assert!(
            size_of_val(&room) <= 800,
            "raw room: {}",
            size_of_val(&room)
        );
    }

    #[test]
    fn what_a_fan_out_reads_comes_first() {
        use std::mem::{offset_of, size_of};
        // The tag, the dialect and the outbox's hot part first, in 112 bytes (two or three
        // cache lines wherever the allocation starts); the id and client info behind them.
        assert_eq!(offset_of!(SessionHandle, client_tag), 0);
        assert!(offset_of!(SessionHandle, dialect) < 16);
        assert_eq!(offset_of!(SessionHandle, outbox), 16);
        assert!(offset_of!(SessionHandle, info) >= 112);
        assert!(
            size_of::<SessionHandle>() <= 168,
            "{}",
            size_of::<SessionHandle>()
        );
    }
}
