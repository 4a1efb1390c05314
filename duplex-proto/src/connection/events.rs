//! The queue of events waiting for [`Connection::poll_event`](super::Connection::poll_event).

use super::pool::{give_to, take_from};
use crate::message::Event;
use std::cell::RefCell;
use std::collections::VecDeque;

/// Spilled lists kept per thread for the next burst (see [`EventQueue::release_if_empty`]).
const POOL_LEN: usize = 8;
/// Larger lists go back to the allocator.
const MAX_POOLED_EVENTS: usize = 64;

/// A spilled list, boxed so that the queue holds 8 bytes for it, not a `VecDeque`'s 32.
#[allow(clippy::box_collection)]
type List = Box<VecDeque<Event>>;

thread_local! {
    static POOL: RefCell<Vec<List>> = const { RefCell::new(Vec::new()) };
}

/// Events in arrival order. The oldest is kept inline: a connection that receives one message
/// at a time (the common case) queues and takes it without allocating; a burst spills into
/// the list behind it.
#[derive(Debug, Default)]
pub(super) struct EventQueue {
    /// The oldest event, whenever it is not in `rest`.
    first: Option<Event>,
    /// Behind the oldest event; an idle connection holds none.
    rest: Option<List>,
}

impl EventQueue {
    pub(super) fn is_empty(&self) -> bool {
        self.first.is_none() && self.rest.as_ref().is_none_or(|rest| rest.is_empty())
    }

    // Always inlined: called per message, and a call moves the 48-byte event once more.
    #[inline(always)]
    pub(super) fn push_back(&mut self, event: Event) {
        // `first` may only take an event when nothing older waits in `rest`.
        if self.is_empty() {
            self.first = Some(event);
        } else {
            self.rest.get_or_insert_with(take_list).push_back(event);
        }
    }

    pub(super) fn pop_front(&mut self) -> Option<Event> {
        self.first
            .take()
            .or_else(|| self.rest.as_mut()?.pop_front())
    }

    /// Gives the list's memory up when it is empty: to the thread's pool, from which the next
    /// burst of any connection on this thread takes it, so pipelined traffic does not
    /// allocate, grow and free a list for every read, and an idle connection holds none.
    pub(super) fn release_if_empty(&mut self) {
        if let Some(rest) = self.rest.take_if(|rest| rest.is_empty()) {
            give_list(rest);
        }
    }
}

fn take_list() -> List {
    take_from(&POOL, Vec::pop).unwrap_or_default()
}

fn give_list(mut list: List) {
    debug_assert!(list.is_empty());
    // Back to the start of its storage: the next burst fills it from there.
    list.clear();
    if list.capacity() > MAX_POOLED_EVENTS {
        return;
    }
    give_to(&POOL, list, POOL_LEN);
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn ping(n: u8) -> Event {
        Event::Ping(Bytes::from(vec![n]))
    }

    #[test]
    fn keeps_arrival_order_across_the_inline_slot_and_the_list() {
        let mut q = EventQueue::default();
        assert!(q.pop_front().is_none());
        q.push_back(ping(1));
        assert!(q.rest.is_none(), "one event needs no allocation");
        q.push_back(ping(2));
        assert_eq!(q.pop_front(), Some(ping(1)));
        // The slot is free but 2 is still waiting: 3 must go behind it.
        q.push_back(ping(3));
        assert_eq!(q.pop_front(), Some(ping(2)));
        q.push_back(ping(4));
        assert_eq!(q.pop_front(), Some(ping(3)));
        assert_eq!(q.pop_front(), Some(ping(4)));
        assert!(q.is_empty());
        q.release_if_empty();
        assert!(q.rest.is_none());
    }

    #[test]
    fn a_released_list_is_reused_by_the_next_burst_on_the_thread() {
        let mut a = EventQueue::default();
        for n in 0..10 {
            a.push_back(ping(n));
        }
        let spilled = a.rest.as_ref().unwrap().as_slices().0.as_ptr();
        while a.pop_front().is_some() {}
        a.release_if_empty();
        assert!(a.rest.is_none(), "an empty queue holds no list");
        // Another connection's burst on this thread gets the same storage back.
        let mut b = EventQueue::default();
        b.push_back(ping(1));
        b.push_back(ping(2));
        let rest = b.rest.as_ref().unwrap();
        assert!(rest.capacity() >= 9);
        assert_eq!(rest.as_slices().0.as_ptr(), spilled);
        assert_eq!(b.pop_front(), Some(ping(1)));
        assert_eq!(b.pop_front(), Some(ping(2)));
    }

    #[test]
    fn large_lists_go_back_to_the_allocator() {
        let mut big = Box::new(VecDeque::with_capacity(MAX_POOLED_EVENTS + 1));
        big.push_back(ping(0));
        big.clear();
        give_list(big);
        assert!(POOL.with(|pool| pool
            .borrow()
            .iter()
            .all(|list| list.capacity() <= MAX_POOLED_EVENTS)));
    }
}
