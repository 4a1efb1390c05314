//! Local subscribers per channel, in sharded maps whose locks are short and never held
//! across `.await`.

use crate::channel::ChannelName;
use crate::session::SessionHandle;
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

const SHARDS: usize = 32;

type Subscribers = HashMap<u64, Arc<SessionHandle>>;

/// channel → local subscribers.
pub(crate) struct Registry {
    shards: Vec<Mutex<HashMap<ChannelName, Subscribers>>>,
}

pub(crate) fn shard_of(channel: &ChannelName, shards: usize) -> usize {
    let mut hasher = DefaultHasher::new();
    channel.hash(&mut hasher);
    (hasher.finish() as usize) % shards
}

impl Registry {
    pub(crate) fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    fn shard(&self, channel: &ChannelName) -> MutexGuard<'_, HashMap<ChannelName, Subscribers>> {
        self.shards[shard_of(channel, SHARDS)]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a subscriber unless the channel already has `max` (0: no limit); returns whether
    /// it was added.
    pub(crate) fn add(
        &self,
        channel: &ChannelName,
        session: Arc<SessionHandle>,
        max: usize,
    ) -> bool {
        let mut shard = self.shard(channel);
        let subs = shard.entry(channel.clone()).or_default();
        if max > 0 && subs.len() >= max && !subs.contains_key(&session.id) {
            if subs.is_empty() {
                shard.remove(channel);
            }
            return false;
        }
        subs.insert(session.id, session);
        true
    }

    /// Removes a subscriber; returns whether it was there.
    pub(crate) fn remove(&self, channel: &ChannelName, session: u64) -> bool {
        let mut shard = self.shard(channel);
        let Some(subs) = shard.get_mut(channel) else {
            return false;
        };
        let removed = subs.remove(&session).is_some();
        if subs.is_empty() {
            shard.remove(channel);
        }
        removed
    }

    /// Subscribers of `channel` on this node.
    pub(crate) fn count(&self, channel: &ChannelName) -> usize {
        self.shard(channel).get(channel).map_or(0, HashMap::len)
    }

    /// Channels with at least one local subscriber (an empty channel is removed at once).
    pub(crate) fn channel_count(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }

    /// Calls `f` for each local subscriber of `channel`, under the shard lock (`f` must not
    /// block), with the registry's own copy of the name: the same shared name for as long
    /// as the channel has subscribers, whichever copy the caller holds, so what is handed
    /// on with it can be recognised by pointer ([`ChannelName::same`]).
    pub(crate) fn for_each(
        &self,
        channel: &ChannelName,
        mut f: impl FnMut(&ChannelName, &Arc<SessionHandle>),
    ) {
        if let Some((name, subs)) = self.shard(channel).get_key_value(channel) {
            subs.values().for_each(|session| f(name, session));
        }
    }
}
