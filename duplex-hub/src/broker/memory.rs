//! The embedded broker: one process, everything in memory.

use super::{
    Broker, BrokerError, BrokerFuture, BrokerHandler, ChannelEvent, ClientInfo, Control,
    HistoryOptions, HistoryQuery, HistoryResult, PresenceMap, Publication, StreamPosition,
};
use crate::channel::ChannelName;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, Weak};
use std::time::Instant;

/// The in-memory broker, the default: delivery is a direct call, history and presence live
/// in this process (and are lost with it: a restart starts new epochs, so recovering clients
/// learn that they must reload).
pub struct MemoryBroker {
    handler: RwLock<Option<Weak<dyn BrokerHandler>>>,
    subscribed: Mutex<HashSet<ChannelName>>,
    streams: Mutex<HashMap<ChannelName, Stream>>,
    presence: Mutex<HashMap<ChannelName, PresenceMap>>,
}

struct Stream {
    epoch: Arc<str>,
    top: u64,
    /// (expires at, publication), oldest first.
    items: VecDeque<(Instant, Arc<Publication>)>,
    /// Until when the stream is kept once empty: its epoch and offset must outlive its
    /// publications for at least a TTL, or a client that saw an empty stream could not tell
    /// that it restarted.
    keep_until: Instant,
}

impl Stream {
    fn new() -> Self {
        Self {
            epoch: new_epoch().into(),
            top: 0,
            items: VecDeque::new(),
            keep_until: Instant::now(),
        }
    }

    fn expire(&mut self, now: Instant, options: HistoryOptions) {
        self.keep_until = self.keep_until.max(now + options.ttl);
        let size = options.size;
        while self.items.len() > size || self.items.front().is_some_and(|(at, _)| *at <= now) {
            self.items.pop_front();
        }
    }

    fn position(&self) -> StreamPosition {
        StreamPosition {
            offset: self.top,
            epoch: self.epoch.to_string(),
        }
    }
}

fn new_epoch() -> String {
    format!("{:08x}", rand::random::<u32>())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks cannot leave the maps half-updated in a way
    // that matters more than losing the hub, so carry on with the data.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Default for MemoryBroker {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for MemoryBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBroker").finish_non_exhaustive()
    }
}

impl MemoryBroker {
    /// An empty broker.
    pub fn new() -> Self {
        Self {
            handler: RwLock::new(None),
            subscribed: Mutex::new(HashSet::new()),
            streams: Mutex::new(HashMap::new()),
            presence: Mutex::new(HashMap::new()),
        }
    }

    fn handler(&self) -> Option<Arc<dyn BrokerHandler>> {
        self.handler
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .and_then(Weak::upgrade)
    }

    fn is_subscribed(&self, channel: &ChannelName) -> bool {
        lock(&self.subscribed).contains(channel)
    }

    fn publish_now(
        &self,
        channel: &ChannelName,
        mut publication: Publication,
        history: Option<HistoryOptions>,
    ) -> Arc<Publication> {
        let publication = match history {
            Some(options) => {
                let now = Instant::now();
                let mut streams = lock(&self.streams);
                let stream = streams.entry(channel.clone()).or_insert_with(Stream::new);
                stream.expire(now, options);
                stream.top += 1;
                publication.offset = stream.top;
                publication.epoch = Some(stream.epoch.clone());
                let publication = Arc::new(publication);
                stream
                    .items
                    .push_back((now + options.ttl, publication.clone()));
                if stream.items.len() > options.size {
                    stream.items.pop_front();
                }
                // Deliver while still holding the stream lock, so publications of one channel
                // reach the node in offset order even from concurrent publishers.
                if self.is_subscribed(channel) {
                    if let Some(handler) = self.handler() {
                        handler.handle_publication(channel, publication.clone());
                    }
                }
                return publication;
            }
            None => {
                publication.offset = 0;
                publication.epoch = None;
                Arc::new(publication)
            }
        };
        if self.is_subscribed(channel) {
            if let Some(handler) = self.handler() {
                handler.handle_publication(channel, publication.clone());
            }
        }
        publication
    }
}

fn ready<'a, T: Send + 'a>(value: Result<T, BrokerError>) -> BrokerFuture<'a, T> {
    Box::pin(std::future::ready(value))
}

impl Broker for MemoryBroker {
    fn register(&self, handler: Weak<dyn BrokerHandler>) {
        *self.handler.write().unwrap_or_else(PoisonError::into_inner) = Some(handler);
    }

    fn publish<'a>(
        &'a self,
        channel: &'a ChannelName,
        publication: Publication,
        history: Option<HistoryOptions>,
    ) -> BrokerFuture<'a, Arc<Publication>> {
        ready(Ok(self.publish_now(channel, publication, history)))
    }

    fn publish_event<'a>(
        &'a self,
        channel: &'a ChannelName,
        event: ChannelEvent,
    ) -> BrokerFuture<'a, ()> {
        if self.is_subscribed(channel) {
            if let Some(handler) = self.handler() {
                handler.handle_event(channel, event);
            }
        }
        ready(Ok(()))
    }

    fn publish_control(&self, control: Control) -> BrokerFuture<'_, ()> {
        if let Some(handler) = self.handler() {
            handler.handle_control(control);
        }
        ready(Ok(()))
    }

    fn subscribe<'a>(&'a self, channel: &'a ChannelName) -> BrokerFuture<'a, ()> {
        lock(&self.subscribed).insert(channel.clone());
        ready(Ok(()))
    }

    fn unsubscribe<'a>(&'a self, channel: &'a ChannelName) -> BrokerFuture<'a, ()> {
        lock(&self.subscribed).remove(channel);
        ready(Ok(()))
    }

    fn history<'a>(
        &'a self,
        channel: &'a ChannelName,
        query: HistoryQuery,
        options: HistoryOptions,
    ) -> BrokerFuture<'a, HistoryResult> {
        let now = Instant::now();
        let mut streams = lock(&self.streams);
        let Some(stream) = streams.get_mut(channel) else {
            // Reading never creates a stream (clients may read any name): a channel without
            // one is at offset 0 of the empty epoch "", and its first publication starts a
            // real epoch, so a client that saw "" learns that it must reload.
            let empty = StreamPosition {
                offset: 0,
                epoch: String::new(),
            };
            return ready(match query.since {
                Some(since) if since != empty => Err(BrokerError::EpochMismatch(since.epoch)),
                _ => Ok(HistoryResult {
                    position: empty,
                    publications: Vec::new(),
                    contiguous: true,
                }),
            });
        };
        stream.expire(now, options);
        let position = stream.position();
        let limit = query.limit.unwrap_or(usize::MAX);
        let result = match query.since {
            Some(since) => {
                if since.epoch != *stream.epoch {
                    Err(BrokerError::EpochMismatch(since.epoch))
                } else {
                    let publications: Vec<_> = stream
                        .items
                        .iter()
                        .filter(|(_, p)| p.offset > since.offset)
                        .take(limit)
                        .map(|(_, p)| p.clone())
                        .collect();
                    let first_kept = stream
                        .items
                        .front()
                        .map_or(stream.top + 1, |(_, p)| p.offset);
                    let contiguous = since.offset <= stream.top && first_kept <= since.offset + 1;
                    Ok(HistoryResult {
                        position,
                        publications,
                        contiguous,
                    })
                }
            }
            None => {
                let skip = stream.items.len().saturating_sub(limit);
                Ok(HistoryResult {
                    position,
                    publications: stream
                        .items
                        .iter()
                        .skip(skip)
                        .map(|(_, p)| p.clone())
                        .collect(),
                    contiguous: true,
                })
            }
        };
        ready(result)
    }

    fn add_presence<'a>(
        &'a self,
        channel: &'a ChannelName,
        info: ClientInfo,
    ) -> BrokerFuture<'a, ()> {
        lock(&self.presence)
            .entry(channel.clone())
            .or_default()
            .insert(info.client.to_string(), info);
        ready(Ok(()))
    }

    fn remove_presence<'a>(
        &'a self,
        channel: &'a ChannelName,
        client: &'a str,
    ) -> BrokerFuture<'a, ()> {
        let mut presence = lock(&self.presence);
        if let Some(map) = presence.get_mut(channel) {
            map.remove(client);
            if map.is_empty() {
                presence.remove(channel);
            }
        }
        ready(Ok(()))
    }

    fn presence<'a>(&'a self, channel: &'a ChannelName) -> BrokerFuture<'a, PresenceMap> {
        ready(Ok(lock(&self.presence)
            .get(channel)
            .cloned()
            .unwrap_or_default()))
    }

    /// Drops expired history: streams whose publications all expired (and that were kept a
    /// TTL after that) are forgotten; their next publication starts a new epoch.
    fn sweep(&self) {
        let now = Instant::now();
        lock(&self.streams).retain(|_, s| {
            while s.items.front().is_some_and(|(at, _)| *at <= now) {
                s.items.pop_front();
            }
            !s.items.is_empty() || s.keep_until > now
        });
    }

    fn channels(&self) -> BrokerFuture<'_, Vec<ChannelName>> {
        let mut channels: Vec<_> = lock(&self.subscribed).iter().cloned().collect();
        channels.sort();
        ready(Ok(channels))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reading_history_stores_nothing() {
        let broker = MemoryBroker::new();
        let options = HistoryOptions {
            size: 10,
            ttl: std::time::Duration::from_secs(600),
        };
        for i in 0..1000 {
            let channel = ChannelName::new(&format!("chat:{i}")).unwrap();
            let h = broker
                .history(&channel, HistoryQuery::default(), options)
                .await
                .unwrap();
            assert_eq!(h.position.offset, 0);
        }
        assert!(lock(&broker.streams).is_empty());
    }

    #[tokio::test]
    async fn behaves_as_a_broker() {
        crate::broker::suite::run(Arc::new(MemoryBroker::new())).await;
    }
}
