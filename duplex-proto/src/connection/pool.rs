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
    let pooled = POOL
        .try_with(|pool| {
            let mut pool = pool.try_borrow_mut().ok()?;
            let index = pool.iter().rposition(|buf| buf.capacity() >= min)?;
            Some(pool.swap_remove(index))
        })
        .ok()
        .flatten();
    pooled.unwrap_or_else(|| BytesMut::with_capacity(min.max(MIN_POOLED)))
}

/// Gives an emptied buffer back. It is kept when nothing else shares its storage, its size is
/// within bounds and the pool has room; otherwise it is dropped.
pub(super) fn give(mut buf: BytesMut) {
    buf.clear();
    // Succeeds only for storage no `Bytes` split off it still uses, and makes all of it
    // available again.
    if !buf.try_reclaim(MIN_POOLED) || buf.capacity() > MAX_POOLED {
        return;
    }
    let _ = POOL.try_with(|pool| {
        if let Ok(mut pool) = pool.try_borrow_mut() {
            if pool.len() < POOL_LEN {
                pool.push(buf);
            }
        }
    });
}

#[cfg(test)]
pub(super) fn pooled() -> usize {
    POOL.with(|pool| pool.borrow().len())
}

#[cfg(test)]
mod tests {
    use super::*;

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
        give(BytesMut::with_capacity(64)); // too small to be worth keeping
        give(BytesMut::with_capacity(MAX_POOLED + 1)); // too large
        assert_eq!(pooled(), before);
        assert_eq!(&payload[..], b"payload");
    }

    #[test]
    fn holds_a_bounded_number() {
        for _ in 0..POOL_LEN + 4 {
            give(BytesMut::with_capacity(MIN_POOLED));
        }
        assert_eq!(pooled(), POOL_LEN);
        let taken: Vec<_> = (0..POOL_LEN + 1).map(|_| take(MIN_POOLED)).collect();
        assert_eq!(pooled(), 0);
        assert!(taken.iter().all(|b| b.capacity() >= MIN_POOLED));
    }
}
