//! The node's Pub/Sub connection: one task keeps it up (connect, subscribe to every wanted
//! channel, watch, reconnect), another hands what arrives to the [`BrokerHandler`] in order,
//! filling from history any gap in a channel's offsets (after an outage, say).

use super::conn::{Commands, PubSub, Subscription};
use super::envelope::{self, Message};
use super::{lock, timed, Inner};
use crate::broker::{BrokerError, BrokerHandler, Publication};
use crate::channel::ChannelName;
use ::redis::{PushInfo, PushKind, Value};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

/// How often the Pub/Sub connection is pinged: a dead connection is noticed within about
/// this (plus the command timeout) even when the operating system does not tell.
const PING_INTERVAL: Duration = Duration::from_secs(1);
const PING_TIMEOUT: Duration = Duration::from_secs(2);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Attempts of a read the dispatcher needs (a pooled connection may still be reconnecting).
const READ_ATTEMPTS: u32 = 5;
/// Channels per SUBSCRIBE when resubscribing.
const SUBSCRIBE_BATCH: usize = 500;

/// What the dispatcher receives, in order.
pub(super) enum Event {
    /// A push of a Pub/Sub connection.
    Push(PushInfo),
    /// A new connection is subscribed to every wanted channel: read what was missed.
    Resynced,
    /// The node unsubscribed from the channel: forget its position.
    Forget(ChannelName),
}

/// Keeps the Pub/Sub connection up, forever.
pub(super) async fn connect_loop(inner: Arc<Inner>) {
    let mut backoff = Duration::from_millis(100);
    let mut failures = 0u32;
    let mut connected_once = false;
    loop {
        let generation = inner.generation.fetch_add(1, Ordering::AcqRel) + 1;
        match connect(&inner, generation).await {
            Ok((conn, channels)) => {
                *lock(&inner.conn) = Some(conn.clone());
                let _ = inner.events.send(Event::Resynced);
                inner.healthy.send_replace(true);
                if connected_once {
                    info!(
                        redis = inner.address,
                        channels, "reconnected to Redis, subscribed again to every channel"
                    );
                } else {
                    info!(redis = inner.address, "connected to Redis");
                }
                connected_once = true;
                failures = 0;
                backoff = Duration::from_millis(100);
                watch(&inner, conn).await;
                inner.healthy.send_replace(false);
                *lock(&inner.conn) = None;
                warn!(
                    redis = inner.address,
                    "lost the Redis Pub/Sub connection: broker unavailable, reconnecting"
                );
            }
            Err(e) => {
                *lock(&inner.conn) = None;
                failures += 1;
                inner.set_error(&e);
                // Loud once, then every 30 or so attempts (about a minute at full backoff).
                if failures == 1 || failures.is_multiple_of(30) {
                    warn!(
                        redis = inner.address,
                        error = %e,
                        attempts = failures,
                        "cannot reach Redis; retrying"
                    );
                } else {
                    debug!(error = %e, attempts = failures, "cannot reach Redis; retrying");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Opens the Pub/Sub connection of `generation` and subscribes it to the control channel
/// and every wanted channel; returns it with the number of channels.
async fn connect(inner: &Arc<Inner>, generation: u64) -> Result<(PubSub, usize), BrokerError> {
    let events = inner.events.clone();
    let current = inner.generation.clone();
    let lost = inner.lost.clone();
    let pushes = move |push: PushInfo| {
        // In a cluster, any node's connection dropping ends this generation: the next one
        // subscribes again from the current slot map and reads what was missed.
        if push.kind == PushKind::Disconnection && current.load(Ordering::Acquire) == generation {
            lost.notify_one();
        }
        events.send(Event::Push(push))
    };
    let mut conn = timed(inner.backend.pubsub(pushes)).await?;
    warm_pool(inner).await?;
    // A permit left by an older connection must not end this one.
    let _ = tokio::time::timeout(Duration::ZERO, inner.lost.notified()).await;
    // Installed before the snapshot of wanted channels: a concurrent `subscribe` either
    // sees this connection or its channel is in the snapshot.
    *lock(&inner.conn) = Some(conn.clone());
    timed(conn.subscription(Subscription::Subscribe, &inner.control_channel())).await?;
    let channels: Vec<String> = lock(&inner.wanted)
        .iter()
        .map(|c| inner.pubsub_channel(c))
        .collect();
    let what = Subscription::new(true, inner.sharded);
    for batch in channels.chunks(SUBSCRIBE_BATCH) {
        timed(conn.subscribe_all(what, batch)).await?;
    }
    Ok((conn, channels.len()))
}

/// Makes sure every pooled command connection answers: after an outage each reconnects only
/// when a command on it failed, and healthy must mean that commands work.
async fn warm_pool(inner: &Inner) -> Result<(), BrokerError> {
    for conn in &inner.pool {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match timed(::redis::cmd("PING").exec_async(&mut conn.clone())).await {
                Ok(()) => break,
                Err(e) if attempt >= READ_ATTEMPTS => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
    Ok(())
}

/// Runs the idempotent read `f` on pooled connections until it succeeds, a few times.
async fn read<T, F, Fut>(inner: &Inner, mut f: F) -> Result<T, BrokerError>
where
    F: FnMut(Commands) -> Fut,
    Fut: std::future::Future<Output = Result<T, ::redis::RedisError>>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        match timed(f(inner.connection())).await {
            Ok(v) => return Ok(v),
            Err(e) if attempt >= READ_ATTEMPTS => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Returns when the connection dropped or stopped answering pings.
async fn watch(inner: &Arc<Inner>, mut conn: PubSub) {
    loop {
        tokio::select! {
            () = inner.lost.notified() => return,
            () = tokio::time::sleep(PING_INTERVAL) => {
                match tokio::time::timeout(PING_TIMEOUT, conn.ping()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        inner.set_error(&e);
                        return;
                    }
                    Err(_) => {
                        inner.set_error("ping timed out");
                        return;
                    }
                }
            }
        }
    }
}

/// Hands what the Pub/Sub connection receives to the handler, in order, forever.
pub(super) async fn dispatch(inner: Arc<Inner>, mut events: mpsc::UnboundedReceiver<Event>) {
    let mut dispatcher = Dispatcher {
        inner,
        last: HashMap::new(),
    };
    while let Some(event) = events.recv().await {
        match event {
            Event::Forget(channel) => {
                dispatcher.last.remove(&channel);
            }
            Event::Resynced => dispatcher.catch_up().await,
            Event::Push(push) => match push.kind {
                PushKind::Message | PushKind::SMessage => dispatcher.on_message(push.data).await,
                PushKind::SUnsubscribe => dispatcher.on_unsubscribed(push.data).await,
                _ => {}
            },
        }
    }
}

struct Dispatcher {
    inner: Arc<Inner>,
    /// Per channel with history: (epoch, offset) of the latest publication delivered.
    last: HashMap<ChannelName, (Arc<str>, u64)>,
}

fn bytes(value: &Value) -> Option<&[u8]> {
    match value {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

impl Dispatcher {
    /// A shard channel's subscription ended. Unless this node asked for it (the channel is no
    /// longer wanted), Redis Cluster ended it because the channel's slot moved to another
    /// master (resharding, failover): subscribe again, which reaches the new owner, and read
    /// from history what was published meanwhile.
    async fn on_unsubscribed(&mut self, data: Vec<Value>) {
        let Some(channel) = data
            .first()
            .and_then(bytes)
            .and_then(|name| self.inner.channel_of(name))
        else {
            return;
        };
        if !self.inner.is_wanted(&channel) {
            return;
        }
        info!(%channel, "Redis ended the subscription (its slot moved); subscribing again");
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.inner.subscription(&channel, true).await {
                Ok(()) => break,
                Err(e) if attempt >= READ_ATTEMPTS => {
                    warn!(%channel, error = %e, "cannot subscribe again; reconnecting");
                    self.inner.lost.notify_one();
                    return;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        let Some(handler) = self.inner.handler() else {
            return;
        };
        if let Some((epoch, after)) = self.last.get(&channel).cloned() {
            self.fill(&*handler, &channel, &epoch, after, None).await;
        }
    }

    async fn on_message(&mut self, data: Vec<Value>) {
        let (Some(name), Some(payload)) =
            (data.first().and_then(bytes), data.get(1).and_then(bytes))
        else {
            return;
        };
        let Some(handler) = self.inner.handler() else {
            return;
        };
        if name == self.inner.control_channel().as_bytes() {
            match envelope::decode_control(payload) {
                Some(control) => handler.handle_control(control),
                None => debug!("malformed control message"),
            }
            return;
        }
        let Some(channel) = self.inner.channel_of(name) else {
            return;
        };
        if !self.inner.is_wanted(&channel) {
            return;
        }
        match envelope::decode_message(payload) {
            Some(Message::Event(event)) => handler.handle_event(&channel, event),
            Some(Message::Publication(p)) => {
                let Some(epoch) = p.epoch.clone() else {
                    handler.handle_publication(&channel, Arc::new(p));
                    return;
                };
                if let Some((last_epoch, last)) = self.last.get(&channel).cloned() {
                    if last_epoch == epoch {
                        if p.offset <= last {
                            return; // already delivered (from history, after a gap)
                        }
                        if p.offset > last + 1 {
                            self.fill(&*handler, &channel, &epoch, last, Some(p.offset - 1))
                                .await;
                        }
                    }
                }
                self.last.insert(channel.clone(), (epoch, p.offset));
                handler.handle_publication(&channel, Arc::new(p));
            }
            None => debug!(%channel, "malformed Pub/Sub message"),
        }
    }

    /// Delivers from history the publications of `channel` after `after` (up to `until`).
    async fn fill(
        &mut self,
        handler: &dyn BrokerHandler,
        channel: &ChannelName,
        epoch: &Arc<str>,
        after: u64,
        until: Option<u64>,
    ) {
        let cmd = ::redis::cmd("XRANGE")
            .arg(self.inner.key(channel, "s"))
            .arg(format!("{after}-1"))
            .arg(until.map_or("+".to_owned(), |u| format!("{u}-0")))
            .to_owned();
        let read = read(&self.inner, |mut conn| {
            let cmd = cmd.clone();
            async move {
                cmd.query_async::<Vec<(String, Vec<Vec<u8>>)>>(&mut conn)
                    .await
            }
        })
        .await;
        let publications: Vec<Arc<Publication>> = match read {
            Ok(entries) => super::decode_entries(entries, epoch),
            Err(e) => {
                warn!(%channel, error = %e, "cannot read the publications missed from history");
                return;
            }
        };
        let missing = until.map(|u| u - after);
        if let Some(missing) = missing {
            if publications.len() as u64 != missing {
                warn!(
                    %channel,
                    missing,
                    found = publications.len(),
                    "history no longer holds every missed publication"
                );
            }
        }
        for p in publications {
            self.last.insert(channel.clone(), (epoch.clone(), p.offset));
            handler.handle_publication(channel, p);
        }
    }

    /// After a reconnect: delivers what every subscribed channel missed meanwhile.
    async fn catch_up(&mut self) {
        let Some(handler) = self.inner.handler() else {
            return;
        };
        let channels: Vec<(ChannelName, Arc<str>, u64)> = self
            .last
            .iter()
            .filter(|(c, _)| self.inner.is_wanted(c))
            .map(|(c, (e, o))| (c.clone(), e.clone(), *o))
            .collect();
        for (channel, epoch, after) in channels {
            let cmd = ::redis::cmd("HGET")
                .arg(self.inner.key(&channel, "m"))
                .arg("epoch")
                .to_owned();
            let current = read(&self.inner, |mut conn| {
                let cmd = cmd.clone();
                async move { cmd.query_async::<Option<String>>(&mut conn).await }
            })
            .await;
            match current {
                Ok(Some(e)) if *e == *epoch => {
                    self.fill(&*handler, &channel, &epoch, after, None).await;
                }
                Ok(_) => {
                    // The stream is gone or restarted (Redis lost its data): nothing to read.
                    warn!(%channel, "the stream restarted during the Redis outage");
                    self.last.remove(&channel);
                }
                Err(e) => warn!(%channel, error = %e, "cannot catch up after reconnecting"),
            }
        }
    }
}
