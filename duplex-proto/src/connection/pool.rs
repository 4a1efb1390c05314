//! A per-thread pool of empty buffers.
//!
//! A connection that goes idle gives its read buffer and its output buffer back (see
//! [`Connection::release_idle_memory`](super::Connection::release_idle_memory)), so an idle
//! connection holds none. Without a pool, a connection that exchanges one message at a time
//! would allocate and free both buffers for every message; with it, it takes them back from
//! the thread that runs it, without asking the allocator. The pool keeps a few buffers of
//! bounded size per thread, so what it holds does not grow with the number of connections.

use bytes::BytesMut;
use std::cell::RefCell;
use std::thread::LocalKey;

/// A per-thread free list: a thread-local, bounded `Vec` of reusable values.
pub(super) type FreeList<T> = LocalKey<RefCell<Vec<T>>>;

/// Takes the value `pick` chooses from this thread's `list`, if any. `None` also when the
/// thread is being torn down or the list is in use further up the stack.
pub(super) fn take_from<T: 'static>(
    list: &'static FreeList<T>,
    pick: impl FnOnce(&mut Vec<T>) -> Option<T>,
) -> Option<T> {
    list.try_with(|list| pick(&mut *list.try_borrow_mut().ok()?))
        .ok()
        .flatten()
}

/// Keeps `value` in this thread's `list` when it holds fewer than `max_len`; otherwise (or
/// when the list cannot be reached) drops it.
pub(super) fn give_to<T: 'static>(list: &'static FreeList<T>, value: T, max_len: usize) {
    let _ = list.try_with(|list| {
        if let Ok(mut list) = list.try_borrow_mut() {
            if list.len() < max_len {
                list.push(value);
            }
        }
    });
}

/// Smallest buffer worth keeping (and what [`take`] allocates at least).
pub(super) const MIN_POOLED: usize = 4 << 10;
/// Larger buffers go back to the allocator.
const MAX_POOLED: usize = 128 << 10;
/// Buffers kept per thread.
const POOL_LEN: usize = 8;

thread_local! {
    static POOL: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

/// An empty buffer with room for at least `min` bytes: a pooled one if one is large enough,
/// otherwise a new one of at least [`MIN_POOLED`] bytes.
pub(super) fn take(min: usize) -> BytesMut {
    let pooled = take_from(&POOL, |pool| {
        let index = pool.iter().rposition(|buf| buf.capacity() >= min)?;
        Some(pool.swap_remove(index))
    });
    pooled.unwrap_or_else(|| BytesMut::with_capacity(min.max(MIN_POOLED)))
}

/// Gives an emptied buffer back. It is kept when nothing else shares its storage, its whole
/// allocation is within bounds and the pool has room; otherwise it is dropped. Only buffers
/// that end where their allocation ends come here (the read buffer and the output tail:
/// heads are split off their front, never their back), so one `try_reclaim` recovers the
/// whole allocation and its size can be judged.
pub(super) fn give(mut buf: BytesMut) {
    buf.clear();
    // `capacity()` is only what lies after the consumed front of the buffer, and
    // `try_reclaim` answers at once when that much is asked, without looking at who else
    // uses the storage. So ask for one byte more than is visible: that succeeds only when
    // nothing else shares the storage and a consumed front can be taken back, and makes
    // all of it visible again. A buffer never consumed from (rare: a read that got
    // nothing) is dropped too, as it cannot be told apart from a shared one. Then the
    // whole allocation is known, and one too small or too large for the pool goes back
    // to the allocator. (One `try_reclaim`, not two: it is most of the cost of a give,
    // and a give happens twice per message for a connection that goes idle in between.)
    let visible = buf.capacity();
    if !buf.try_reclaim(visible + 1) || !(MIN_POOLED..=MAX_POOLED).contains(&buf.capacity()) {
        return;
    }
    give_to(&POOL, buf, POOL_LEN);
}

/// Puts back an empty buffer that nothing was read into since [`take`] gave it: it is as
/// `take` returned it, so the checks of [`give`] are not needed. (Even a buffer that was
/// split would be safe here: an empty `BytesMut` only ever hands out its own visible room.)
pub(super) fn give_unused(buf: BytesMut) {
    debug_assert!(buf.is_empty());
    if (MIN_POOLED..=MAX_POOLED).contains(&buf.capacity()) {
        give_to(&POOL, buf, POOL_LEN);
    }
}

#[cfg(test)]
pub(super) fn pooled() -> usize {
    POOL.with(|pool| pool.borrow().len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Buf;

    #[test]
    fn reuses_a_returned_buffer() {
        let mut buf = take(100);
        assert!(buf.capacity() >= MIN_POOLED);
        buf.extend_from_slice(&[1; 300]);
        let _ = buf.split_to(200); // dropped at once: the storage is not shared any more
        let before = pooled();
        let storage = buf.as_ptr() as usize - 200;
        give(buf);
        assert_eq!(pooled(), before + 1);
        let again = take(MIN_POOLED);
        assert!(again.is_empty());
        assert_eq!(
            again.as_ptr() as usize,
            storage,
            "the same storage, from its start"
        );
        assert_eq!(pooled(), before);
    }

    #[test]
    fn keeps_no_shared_small_or_huge_buffers() {
        let before = pooled();
        let mut shared = BytesMut::with_capacity(MIN_POOLED);
        shared.extend_from_slice(b"payload");
        let payload = shared.split().freeze();
        give(shared); // `payload` still uses the storage
        give(used(64, 1)); // too small to be worth keeping
        give(used(MAX_POOLED + 1, 1)); // too large
        assert_eq!(pooled(), before);
        assert_eq!(&payload[..], b"payload");
    }

    /// A buffer as a connection gives it back: some bytes were read into it and consumed.
    fn used(capacity: usize, consumed: usize) -> BytesMut {
        let mut buf = BytesMut::with_capacity(capacity);
        buf.extend_from_slice(&vec![7; consumed]);
        buf.advance(consumed);
        buf
    }

    #[test]
    fn keeps_no_buffer_still_shared_with_a_message() {
        let before = pooled();
        // Plenty of visible room left after the message was split off.
        let mut buf = BytesMut::with_capacity(64 << 10);
        buf.extend_from_slice(&[1; 10]);
        let message = buf.split_to(10).freeze();
        assert!(buf.capacity() >= MIN_POOLED);
        give(buf);
        assert_eq!(pooled(), before, "the message still uses the storage");
        assert_eq!(&message[..], &[1; 10]);
    }

    #[test]
    fn judges_the_whole_allocation_not_what_is_visible() {
        let before = pooled();
        // 1 MiB, consumed down to 8 KiB visible: too large to keep.
        give(used(1 << 20, (1 << 20) - (8 << 10)));
        assert_eq!(pooled(), before);
        // 65,550 bytes, 22 consumed: kept, and all of it is available again.
        let buf = used(65_550, 22);
        let storage = buf.as_ptr() as usize - 22;
        give(buf);
        assert_eq!(pooled(), before + 1);
        let again = take(65_550);
        assert_eq!(pooled(), before, "taken from the pool");
        assert_eq!(again.as_ptr() as usize, storage);
        assert!(again.capacity() >= 65_550);
    }

    #[test]
    fn holds_a_bounded_number() {
        for _ in 0..POOL_LEN + 4 {
            give(used(MIN_POOLED, 1));
        }
        assert_eq!(pooled(), POOL_LEN);
        let taken: Vec<_> = (0..POOL_LEN + 1).map(|_| take(MIN_POOLED)).collect();
        assert_eq!(pooled(), 0);
        assert!(taken.iter().all(|b| b.capacity() >= MIN_POOLED));
    }
}
