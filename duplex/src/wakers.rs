//! Fan-out wakers: several tasks wait on one shared transport.
//!
//! A tokio IO resource remembers one waker per direction, the last one that polled it. When
//! the reader and the writer of a split [`WebSocket`](crate::WebSocket) both wait for the
//! socket to become writable (the reader to flush a pong, the writer to flush its data), only
//! one of them would be woken. So the transport is always polled with a waker that wakes every
//! task registered in a [`WakerSet`].

use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Wake, Waker};

/// The tasks waiting for one kind of readiness.
#[derive(Debug, Default)]
pub(crate) struct WakerSet {
    wakers: Mutex<Vec<Waker>>,
}

impl WakerSet {
    /// A set and the waker that wakes everything in it.
    pub(crate) fn new() -> (Arc<Self>, Waker) {
        let set = Arc::new(Self::default());
        let waker = Waker::from(Arc::clone(&set));
        (set, waker)
    }

    /// Adds the task behind `cx` unless it is already registered.
    pub(crate) fn register(&self, cx: &Context<'_>) {
        let mut wakers = self.wakers.lock().unwrap_or_else(PoisonError::into_inner);
        let waker = cx.waker();
        if !wakers.iter().any(|w| w.will_wake(waker)) {
            wakers.push(waker.clone());
        }
    }

    /// Wakes and forgets every registered task.
    pub(crate) fn wake_all(&self) {
        let wakers =
            std::mem::take(&mut *self.wakers.lock().unwrap_or_else(PoisonError::into_inner));
        for waker in wakers {
            waker.wake();
        }
    }
}

impl Wake for WakerSet {
    fn wake(self: Arc<Self>) {
        self.wake_all();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.wake_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Counter(AtomicUsize);

    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn wakes_every_registered_task_once() {
        let (set, fan) = WakerSet::new();
        let a = Arc::new(Counter(AtomicUsize::new(0)));
        let b = Arc::new(Counter(AtomicUsize::new(0)));
        let wa = Waker::from(Arc::clone(&a));
        let wb = Waker::from(Arc::clone(&b));
        set.register(&Context::from_waker(&wa));
        set.register(&Context::from_waker(&wa));
        set.register(&Context::from_waker(&wb));
        fan.wake_by_ref();
        fan.wake_by_ref(); // nothing registered any more
        assert_eq!(a.0.load(Ordering::SeqCst), 1);
        assert_eq!(b.0.load(Ordering::SeqCst), 1);
    }
}
