//! The queue of events waiting for [`Connection::poll_event`](super::Connection::poll_event).

use crate::message::Event;
use std::collections::VecDeque;

/// Events in arrival order. The oldest is kept inline: a connection that receives one message
/// at a time (the common case) queues and takes it without allocating; a burst spills into
/// the list behind it.
#[derive(Debug, Default)]
pub(super) struct EventQueue {
    /// The oldest event, whenever it is not in `rest`.
    first: Option<Event>,
    rest: VecDeque<Event>,
}

impl EventQueue {
    pub(super) fn is_empty(&self) -> bool {
        self.first.is_none() && self.rest.is_empty()
    }

    pub(super) fn push_back(&mut self, event: Event) {
        // `first` may only take an event when nothing older waits in `rest`.
        if self.is_empty() {
            self.first = Some(event);
        } else {
            self.rest.push_back(event);
        }
    }

    pub(super) fn pop_front(&mut self) -> Option<Event> {
        self.first.take().or_else(|| self.rest.pop_front())
    }

    /// Frees the list's memory when it is empty.
    pub(super) fn release_if_empty(&mut self) {
        if self.rest.is_empty() && self.rest.capacity() > 0 {
            self.rest = VecDeque::new();
        }
    }
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
        assert_eq!(q.rest.capacity(), 0, "one event needs no allocation");
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
        assert_eq!(q.rest.capacity(), 0);
    }
}
