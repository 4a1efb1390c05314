//! A connection's outbound queue: bounded in bytes, filled by the broadcaster without
//! waiting, drained by the connection's task.

use crate::broker::Publication;
use crate::channel::ChannelName;
use duplex::PreparedFrame;
use duplex_proto::Message;
use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::{Context, Poll, Waker};

/// One publication on its way to the subscribers of a channel: shared by all of them, so
/// queueing it costs each one reference count. Its frames are built once, by the first
/// subscriber that writes them, and shared by every other.
#[derive(Debug)]
pub(crate) struct Delivery {
    pub channel: ChannelName,
    pub publication: Arc<Publication>,
    v1: OnceLock<PreparedFrame>,
    raw: OnceLock<PreparedFrame>,
}

impl Delivery {
    pub(crate) fn new(channel: ChannelName, publication: Arc<Publication>) -> Self {
        Self {
            channel,
            publication,
            v1: OnceLock::new(),
            raw: OnceLock::new(),
        }
    }

    /// The `duplex.v1` push.
    pub(crate) fn v1(&self) -> &PreparedFrame {
        self.v1.get_or_init(|| {
            PreparedFrame::new(crate::protocol::publication_push(
                self.channel.as_str(),
                &self.publication,
            ))
        })
    }

    /// The raw-room message: the data alone.
    pub(crate) fn raw(&self) -> &PreparedFrame {
        self.raw
            .get_or_init(|| PreparedFrame::new(crate::protocol::raw_push(&self.publication)))
    }
}

/// What waits in an outbox.
#[derive(Debug, Clone)]
pub(crate) enum Outgoing {
    /// A publication of a subscribed channel.
    Publication(Arc<Delivery>),
    /// A join or leave of a channel (dropped if the session left the channel meanwhile).
    Event(Arc<ChannelEventPush>),
}

/// A join or leave, shared by the subscribers it goes to.
#[derive(Debug)]
pub(crate) struct ChannelEventPush {
    pub channel: ChannelName,
    pub message: Message,
}

/// Why the connection must close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CloseOrder {
    pub code: u16,
    pub reason: String,
}

/// A conflation slot: a channel and a publication key.
pub(crate) type Slot = (ChannelName, Arc<str>);

/// In field order (`repr(C)`): what every push touches first, in 72 bytes, so a fan-out
/// to many connections, which finds each outbox out of the cache, loads few lines per
/// subscriber; the rare parts are boxed, the conflation slots last.
#[derive(Debug)]
#[repr(C)]
struct Inner {
    /// (sequence number, item, its size, its conflation slot). Small (40 bytes): entries
    /// move in and out for every delivery; the slot, rare, is boxed.
    queue: VecDeque<(u64, Outgoing, usize, Option<Box<Slot>>)>,
    close: Option<Box<CloseOrder>>,
    bytes: usize,
    next_seq: u64,
    /// The connection's task while it waits in [`Outbox::ready`] with nothing to do; taken
    /// by the first push (or close) that wakes it, so the pushes that follow before it runs
    /// cost no wake-up.
    waiter: Option<Waker>,
    /// Conflation slot → sequence number of the queued item holding it (only conflating
    /// namespaces have any).
    #[allow(clippy::box_collection)]
    slots: Option<Box<HashMap<Slot, u64>>>,
}

/// The queue.
#[derive(Debug)]
#[repr(C)]
pub(crate) struct Outbox {
    inner: Mutex<Inner>,
    limit: usize,
}

/// The queue is full; the caller applies the slow-consumer policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Full;

impl Outbox {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                queue: VecDeque::new(),
                close: None,
                bytes: 0,
                next_seq: 0,
                waiter: None,
                slots: None,
            }),
            limit,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `item` of `size` bytes. With a conflation `slot`, an undelivered item holding
    /// the same slot is replaced in place instead (the queue does not grow). Never waits.
    pub(crate) fn push(
        &self,
        item: Outgoing,
        size: usize,
        slot: Option<(ChannelName, Arc<str>)>,
    ) -> Result<(), Full> {
        let mut inner = self.lock();
        if inner.close.is_some() {
            return Ok(()); // closing: nothing more will be written
        }
        if let Some(slot) = &slot {
            if let Some(&seq) = inner.slots.as_ref().and_then(|slots| slots.get(slot)) {
                let head = inner.queue.front().map_or(seq, |(s, ..)| *s);
                let index = (seq - head) as usize;
                let old_size = inner.queue[index].2;
                if inner.bytes - old_size + size <= self.limit {
                    inner.bytes = inner.bytes - old_size + size;
                    let entry = &mut inner.queue[index];
                    entry.1 = item;
                    entry.2 = size;
                    return Ok(());
                }
                return Err(Full);
            }
        }
        if inner.bytes + size > self.limit && !inner.queue.is_empty() {
            return Err(Full);
        }
        let seq = inner.next_seq;
        inner.next_seq += 1;
        if let Some(slot) = &slot {
            inner
                .slots
                .get_or_insert_with(Box::default)
                .insert(slot.clone(), seq);
        }
        inner.bytes += size;
        inner.queue.push_back((seq, item, size, slot.map(Box::new)));
        let waiter = inner.waiter.take();
        drop(inner);
        if let Some(waiter) = waiter {
            waiter.wake();
        }
        Ok(())
    }

    /// Orders the connection closed (the first order wins) and wakes its task.
    pub(crate) fn close(&self, code: u16, reason: &str) {
        let mut inner = self.lock();
        if inner.close.is_none() {
            inner.close = Some(Box::new(CloseOrder {
                code,
                reason: reason.to_owned(),
            }));
            inner.queue.clear();
            inner.slots = None;
            inner.bytes = 0;
        }
        let waiter = inner.waiter.take();
        drop(inner);
        if let Some(waiter) = waiter {
            waiter.wake();
        }
    }

    /// Moves up to `max` items, and not many more than `max_bytes`, into `out`; returns the
    /// close order, if any (then nothing is moved). Bounding the batch keeps what a blocked
    /// writer holds outside the queue small, so the queue's limit is what counts.
    pub(crate) fn drain(
        &self,
        out: &mut Vec<Outgoing>,
        max: usize,
        max_bytes: usize,
    ) -> Option<CloseOrder> {
        let mut inner = self.lock();
        if let Some(order) = &inner.close {
            return Some(CloseOrder::clone(order));
        }
        let mut taken = 0;
        for _ in 0..max {
            if taken >= max_bytes {
                break;
            }
            let Some((seq, item, size, slot)) = inner.queue.pop_front() else {
                break;
            };
            taken += size;
            inner.bytes -= size;
            if let (Some(slot), Some(slots)) = (slot, &mut inner.slots) {
                if slots.get(&*slot) == Some(&seq) {
                    slots.remove(&*slot);
                }
            }
            out.push(item);
        }
        None
    }

    /// Waits until something is queued or a close was ordered: returns at once while
    /// anything is (drain it, or this keeps returning).
    ///
    /// # Cancel safety
    /// Cancel safe: it takes nothing from the queue.
    pub(crate) async fn ready(&self) {
        poll_fn(|cx| self.poll_ready(cx)).await;
    }

    fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut inner = self.lock();
        if !inner.queue.is_empty() || inner.close.is_some() {
            return Poll::Ready(());
        }
        match &mut inner.waiter {
            Some(waiter) if waiter.will_wake(cx.waker()) => {}
            waiter => *waiter = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// Bytes queued.
    #[cfg(test)]
    pub(crate) fn queued_bytes(&self) -> usize {
        self.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(s: &str) -> Outgoing {
        Outgoing::Event(Arc::new(ChannelEventPush {
            channel: ChannelName::new("c").unwrap(),
            message: Message::text(s.to_owned()),
        }))
    }

    fn texts(items: &[Outgoing]) -> Vec<String> {
        items
            .iter()
            .map(|i| match i {
                Outgoing::Event(event) => event.message.as_text().unwrap().to_owned(),
                Outgoing::Publication(_) => "publication".into(),
            })
            .collect()
    }

    #[test]
    fn bounded_in_bytes() {
        let o = Outbox::new(10);
        o.push(msg("a"), 6, None).unwrap();
        assert_eq!(o.push(msg("b"), 6, None), Err(Full));
        o.push(msg("c"), 4, None).unwrap();
        let mut out = Vec::new();
        assert_eq!(o.drain(&mut out, 10, usize::MAX), None);
        assert_eq!(texts(&out), ["a", "c"]);
        assert_eq!(o.queued_bytes(), 0);
        // An item larger than the limit fits an empty queue, so nothing is ever unsendable.
        o.push(msg("big"), 50, None).unwrap();
    }

    #[test]
    fn conflates_by_slot() {
        let o = Outbox::new(100);
        let ch = ChannelName::new("prices:x").unwrap();
        let slot = |k: &str| Some((ch.clone(), Arc::<str>::from(k)));
        o.push(msg("btc1"), 10, slot("btc")).unwrap();
        o.push(msg("eth1"), 10, slot("eth")).unwrap();
        o.push(msg("btc2"), 10, slot("btc")).unwrap();
        o.push(msg("btc3"), 10, slot("btc")).unwrap();
        let mut out = Vec::new();
        o.drain(&mut out, 1, usize::MAX);
        assert_eq!(texts(&out), ["btc3"]);
        o.push(msg("btc4"), 10, slot("btc")).unwrap(); // its slot was delivered: queued anew
        out.clear();
        o.drain(&mut out, 10, usize::MAX);
        assert_eq!(texts(&out), ["eth1", "btc4"]);
        assert_eq!(o.queued_bytes(), 0);
    }

    #[test]
    fn close_wins_and_clears() {
        let o = Outbox::new(100);
        o.push(msg("a"), 10, None).unwrap();
        o.close(4001, "slow");
        o.close(1001, "later");
        let mut out = Vec::new();
        assert_eq!(
            o.drain(&mut out, 10, usize::MAX),
            Some(CloseOrder {
                code: 4001,
                reason: "slow".into()
            })
        );
        assert!(out.is_empty());
    }

    #[test]
    fn queue_entries_stay_small() {
        assert!(std::mem::size_of::<(u64, Outgoing, usize, Option<Box<Slot>>)>() <= 40);
    }

    #[test]
    fn what_a_push_touches_comes_first() {
        use std::mem::offset_of;
        assert_eq!(offset_of!(Inner, slots), 72, "the hot part is 72 bytes");
        assert!(std::mem::size_of::<Inner>() <= 80);
    }

    #[test]
    fn ready_wakes_once_per_wait_and_stays_ready_while_anything_is_queued() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::task::Wake;
        struct Count(AtomicUsize);
        impl Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let wakes = || count.0.load(Ordering::SeqCst);

        let o = Outbox::new(100);
        assert_eq!(o.poll_ready(&mut cx), Poll::Pending);
        o.push(msg("a"), 1, None).unwrap();
        assert_eq!(wakes(), 1, "the waiting task is woken");
        o.push(msg("b"), 1, None).unwrap();
        assert_eq!(wakes(), 1, "no second wake-up before it ran");
        assert_eq!(o.poll_ready(&mut cx), Poll::Ready(()));
        let mut out = Vec::new();
        o.drain(&mut out, 1, usize::MAX);
        assert_eq!(o.poll_ready(&mut cx), Poll::Ready(()), "b is still queued");
        o.drain(&mut out, 1, usize::MAX);
        assert_eq!(texts(&out), ["a", "b"]);
        assert_eq!(o.poll_ready(&mut cx), Poll::Pending);
        o.close(1001, "bye");
        assert_eq!(wakes(), 2, "a close order wakes it too");
        assert_eq!(o.poll_ready(&mut cx), Poll::Ready(()));
    }
}
