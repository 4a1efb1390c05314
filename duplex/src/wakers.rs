//! Waking the tasks that wait on one shared transport.
//!
//! A tokio IO resource (and a timer) remembers one waker per direction: the last one that
//! polled it. While a single task drives a [`WebSocket`](crate::WebSocket), that is all it
//! takes, and the transport is polled with the task's own waker. But when two tasks wait in
//! the same direction at once (the reader and the writer of a split socket both waiting for
//! it to drain, one to flush a pong and the other its data), only the last one would be
//! woken. So the first time a direction is polled on behalf of a second task, it switches to
//! a fan-out waker that wakes every task registered in a [`WakerSet`].

use futures_task::{waker_ref, ArcWake};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

/// The tasks waiting for one direction of a transport (reads and timers, or writes).
#[derive(Debug, Default)]
pub(crate) struct Waiters {
    /// The task that polled, while only one has.
    owner: Option<Waker>,
    /// The fan-out, from the first time a second task polled.
    fan: Option<Box<Fan>>,
}

#[derive(Debug)]
struct Fan {
    set: Arc<WakerSet>,
    waker: Waker,
}

impl Fan {
    /// A fan-out that starts with the task that polled alone so far.
    #[cold]
    fn new(owner: Option<Waker>) -> Box<Self> {
        let (set, waker) = WakerSet::new();
        if let Some(owner) = owner {
            set.register(&owner);
        }
        Box::new(Self { set, waker })
    }
}

impl Waiters {
    /// A context to poll the transport (or a timer) with on behalf of the task behind `cx`:
    /// its own waker while it is the only task, the fan-out waker otherwise. (Inlined: it
    /// runs several times per message, and its usual case is two comparisons.)
    #[inline]
    pub(crate) fn context<'a>(&'a mut self, cx: &'a Context<'_>) -> Context<'a> {
        let waker = cx.waker();
        if self.fan.is_none() {
            match &self.owner {
                Some(owner) if owner.will_wake(waker) => return Context::from_waker(waker),
                None => {
                    self.owner = Some(waker.clone());
                    return Context::from_waker(waker);
                }
                Some(_) => {}
            }
        }
        // A second task polls: from now on every task is registered in the fan-out's set.
        let fan = self.fan.get_or_insert_with(|| Fan::new(self.owner.take()));
        fan.set.register(waker);
        Context::from_waker(&fan.waker)
    }

    /// Wakes every task waiting (the connection is over).
    pub(crate) fn wake_all(&mut self) {
        if let Some(owner) = self.owner.take() {
            owner.wake();
        }
        if let Some(fan) = &self.fan {
            fan.set.wake_all();
        }
    }

    /// Whether the fan-out is in use.
    #[cfg(test)]
    pub(crate) fn is_fanned_out(&self) -> bool {
        self.fan.is_some()
    }
}

/// Whether the transport may have become readable since a read last found nothing.
///
/// The transport is polled for reading with a signal's waker, which raises the signal's flag
/// before it wakes the waiting task. A read that found nothing (`Pending`) left that waker
/// with the transport, and by `AsyncRead`'s rule the transport wakes it when data (or the
/// end, or an error) arrives. So while the flag is down, polling the transport again cannot
/// find anything, and [`poll_read`] skips it: a task woken for something else (its outbox, a
/// timer, a writer) does not take a read buffer and poll the socket just to find it empty.
///
/// A signal wakes one waker, fixed when it is made (no lock on the wake path): when another
/// waker polls (the reading handle moved to another task, or a second task waits and the
/// fan-out takes over), a new signal replaces it and the transport is polled at once, so
/// that it holds the new one.
///
/// This relies on the transport's read side being polled only through [`poll_read`]: TCP
/// and rustls (once its handshake is done) never read from inside a write.
#[derive(Debug)]
pub(crate) struct ReadSignal {
    /// Raised by a wake from the transport; lowered before each read.
    woken: AtomicBool,
    /// The task (or the fan-out) to wake.
    task: Waker,
}

/// Reads with `read` on behalf of the task behind `cx`, unless the last read was `Pending`
/// (`parked`) and the transport has not signalled through `signal` since: then `Pending` at
/// once, the task being registered already. Makes the signal at the first read and when
/// the waker changes; updates `parked`.
pub(crate) fn poll_read<T>(
    signal: &mut Option<Arc<ReadSignal>>,
    parked: &mut bool,
    cx: &Context<'_>,
    read: impl FnOnce(&mut Context<'_>) -> Poll<T>,
) -> Poll<T> {
    let signal = match signal {
        Some(signal) if signal.task.will_wake(cx.waker()) => {
            // Lowered before the read: a wake from here on is for data it may not see.
            let woken = signal.woken.swap(false, Ordering::AcqRel);
            if *parked && !woken {
                return Poll::Pending;
            }
            signal
        }
        _ => signal.insert(Arc::new(ReadSignal {
            woken: AtomicBool::new(false),
            task: cx.waker().clone(),
        })),
    };
    let result = read(&mut Context::from_waker(&waker_ref(signal)));
    *parked = result.is_pending();
    result
}

impl ArcWake for ReadSignal {
    fn wake_by_ref(arc_self: &Arc<Self>) {
        arc_self.woken.store(true, Ordering::Release);
        arc_self.task.wake_by_ref();
    }
}

/// The tasks that wait for one kind of readiness, once several do.
#[derive(Debug, Default)]
struct WakerSet {
    wakers: Mutex<Vec<Waker>>,
}

impl WakerSet {
    /// A set and the waker that wakes everything in it.
    fn new() -> (Arc<Self>, Waker) {
        let set = Arc::new(Self::default());
        let waker = Waker::from(Arc::clone(&set));
        (set, waker)
    }

    /// Adds the task behind `waker` unless it is already registered.
    fn register(&self, waker: &Waker) {
        let mut wakers = self.wakers.lock().unwrap_or_else(PoisonError::into_inner);
        if !wakers.iter().any(|w| w.will_wake(waker)) {
            wakers.push(waker.clone());
        }
    }

    /// Wakes and forgets every registered task, keeping the list's memory for the next ones.
    fn wake_all(&self) {
        let mut wakers = self.wakers.lock().unwrap_or_else(PoisonError::into_inner);
        // Waking only schedules the tasks; none of them runs (or takes this lock) here.
        for waker in wakers.drain(..) {
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

    fn counter() -> (Arc<Counter>, Waker) {
        let counter = Arc::new(Counter(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&counter));
        (counter, waker)
    }

    fn count(counter: &Counter) -> usize {
        counter.0.load(Ordering::SeqCst)
    }

    #[test]
    fn wakes_every_registered_task_once() {
        let (set, fan) = WakerSet::new();
        let (a, wa) = counter();
        let (b, wb) = counter();
        set.register(&wa);
        set.register(&wa);
        set.register(&wb);
        fan.wake_by_ref();
        fan.wake_by_ref(); // nothing registered any more
        assert_eq!((count(&a), count(&b)), (1, 1));
    }

    #[test]
    fn one_task_is_polled_with_its_own_waker() {
        let mut waiters = Waiters::default();
        let (a, wa) = counter();
        for _ in 0..3 {
            let cx = Context::from_waker(&wa);
            let inner = waiters.context(&cx);
            assert!(inner.waker().will_wake(&wa));
        }
        assert!(!waiters.is_fanned_out());
        waiters.wake_all();
        assert_eq!(count(&a), 1);
    }

    #[test]
    fn a_second_task_switches_to_the_fan_out_and_both_are_woken() {
        let mut waiters = Waiters::default();
        let (a, wa) = counter();
        let (b, wb) = counter();
        let resource_waker = {
            let cx = Context::from_waker(&wa);
            waiters.context(&cx).waker().clone()
        };
        assert!(resource_waker.will_wake(&wa));
        // The second task polls; the resource now holds the fan-out waker only.
        let resource_waker = {
            let cx = Context::from_waker(&wb);
            waiters.context(&cx).waker().clone()
        };
        assert!(waiters.is_fanned_out());
        assert!(!resource_waker.will_wake(&wb));
        // Readiness: the first task, which may still be waiting, is woken too.
        resource_waker.wake_by_ref();
        assert_eq!((count(&a), count(&b)), (1, 1));
        // Later polls register again; wake_all reaches them.
        let cx = Context::from_waker(&wa);
        let _ = waiters.context(&cx);
        waiters.wake_all();
        assert_eq!((count(&a), count(&b)), (2, 1));
    }
}
