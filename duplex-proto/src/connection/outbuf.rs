//! The queue of bytes waiting to be written.

use super::pool;
use bytes::{Buf, Bytes, BytesMut};
use std::collections::VecDeque;
use std::io::IoSlice;

/// The largest lone chunk [`OutQueue::tail`] copies into the tail: copying that much costs
/// less than the second slice of a `writev` would.
const COALESCE_CHUNK: usize = 4096;

/// Pending output: shared chunks queued by reference, followed by a contiguous tail where
/// headers and small frames are coalesced.
#[derive(Debug, Default)]
pub(super) struct OutQueue {
    chunks: Chunks,
    /// Bytes in `chunks`.
    chunks_len: usize,
    tail: BytesMut,
}

/// The chunks queued by reference, oldest first. A single chunk needs no list: a connection
/// that sends one shared frame at a time (a fan-out subscriber, say) queues and writes it
/// without allocating. A list, once needed, is kept until the queue is empty and released.
/// Boxed, and `List(None)` for nothing queued: 32 bytes of every connection's state, where
/// a `None` variant beside an inline list made it 40.
#[derive(Debug)]
enum Chunks {
    One(Bytes),
    #[allow(clippy::box_collection)]
    List(Option<Box<VecDeque<Bytes>>>),
}

impl Default for Chunks {
    fn default() -> Self {
        Chunks::EMPTY
    }
}

impl Chunks {
    const EMPTY: Chunks = Chunks::List(None);

    fn push_back(&mut self, bytes: Bytes) {
        match self {
            Chunks::List(None) => *self = Chunks::One(bytes),
            Chunks::One(_) => {
                let Chunks::One(first) = std::mem::take(self) else {
                    unreachable!("matched One above")
                };
                *self = Chunks::List(Some(Box::new(VecDeque::from([first, bytes]))));
            }
            Chunks::List(Some(list)) => list.push_back(bytes),
        }
    }

    fn as_slices(&self) -> (&[Bytes], &[Bytes]) {
        match self {
            Chunks::List(None) => (&[], &[]),
            Chunks::One(bytes) => (std::slice::from_ref(bytes), &[]),
            Chunks::List(Some(list)) => list.as_slices(),
        }
    }

    fn front_mut(&mut self) -> Option<&mut Bytes> {
        match self {
            Chunks::List(None) => None,
            Chunks::One(bytes) => Some(bytes),
            Chunks::List(Some(list)) => list.front_mut(),
        }
    }

    fn pop_front(&mut self) {
        match self {
            Chunks::List(None) => {}
            Chunks::One(_) => *self = Chunks::EMPTY,
            Chunks::List(Some(list)) => {
                list.pop_front();
            }
        }
    }
}

impl OutQueue {
    /// Total pending bytes.
    pub(super) fn len(&self) -> usize {
        self.chunks_len + self.tail.len()
    }

    /// The contiguous tail, to append encoded bytes to.
    ///
    /// A lone small chunk queued before it (a shared frame sent while nothing else was
    /// pending) is first copied into the tail, so that a batch of small frames stays one
    /// slice: one slice goes out with a plain `send`, which costs the kernel less than a
    /// `writev` of two (see docs/performance.md, sixth pass).
    // Always inlined: called per frame sent; its usual work is two comparisons.
    #[inline(always)]
    pub(super) fn tail(&mut self) -> &mut BytesMut {
        if self.tail.capacity() == 0 {
            self.tail = pool::take(pool::MIN_POOLED);
        }
        if self.tail.is_empty() {
            if let Chunks::One(chunk) = &self.chunks {
                if chunk.len() <= COALESCE_CHUNK && chunk.len() <= self.tail.capacity() {
                    self.tail.extend_from_slice(chunk);
                    self.chunks = Chunks::EMPTY;
                    self.chunks_len = 0;
                }
            }
        }
        &mut self.tail
    }

    /// Queues `bytes` by reference after everything pending.
    pub(super) fn push(&mut self, bytes: Bytes) {
        if !self.tail.is_empty() {
            let head = self.tail.split().freeze();
            self.chunks_len += head.len();
            self.chunks.push_back(head);
        }
        self.chunks_len += bytes.len();
        self.chunks.push_back(bytes);
    }

    #[cfg(test)]
    pub(super) fn tail_capacity(&self) -> usize {
        self.tail.capacity()
    }

    pub(super) fn slices<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        let (front, back) = self.chunks.as_slices();
        for chunk in front.iter().chain(back) {
            if chunk.is_empty() {
                continue;
            }
            if n == dst.len() {
                return n;
            }
            dst[n] = IoSlice::new(chunk);
            n += 1;
        }
        if n < dst.len() && !self.tail.is_empty() {
            dst[n] = IoSlice::new(&self.tail);
            n += 1;
        }
        n
    }

    pub(super) fn advance(&mut self, mut n: usize) {
        while n > 0 {
            let Some(front) = self.chunks.front_mut() else {
                break;
            };
            let step = n.min(front.len());
            front.advance(step);
            self.chunks_len -= step;
            n -= step;
            if front.is_empty() {
                self.chunks.pop_front();
            }
        }
        let step = n.min(self.tail.len());
        self.tail.advance(step);
    }

    pub(super) fn drain_into(&mut self, out: &mut BytesMut) -> usize {
        let total = self.len();
        out.reserve(total);
        let (front, back) = self.chunks.as_slices();
        for chunk in front.iter().chain(back) {
            out.extend_from_slice(chunk);
        }
        self.chunks = Chunks::EMPTY;
        self.chunks_len = 0;
        out.extend_from_slice(&self.tail);
        self.tail.clear();
        total
    }

    /// Gives the tail's buffer back to the thread's pool, and frees the chunk list, when
    /// nothing is pending.
    pub(super) fn release_if_empty(&mut self) {
        if self.len() == 0 {
            // Empty chunks may remain (a zero-length frame payload queued by reference).
            self.chunks = Chunks::EMPTY;
            if self.tail.capacity() > 0 {
                pool::give(std::mem::take(&mut self.tail));
            }
        }
    }

    #[cfg(test)]
    fn chunk_list_capacity(&self) -> usize {
        match &self.chunks {
            Chunks::List(Some(list)) => list.capacity(),
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_across_tail_and_chunks() {
        let mut q = OutQueue::default();
        q.tail().extend_from_slice(b"ab");
        q.push(Bytes::from_static(b"cdef"));
        q.tail().extend_from_slice(b"gh");
        assert_eq!(q.len(), 8);
        let mut slices = [IoSlice::new(&[]); 8];
        let n = q.slices(&mut slices);
        let joined: Vec<u8> = slices[..n].iter().flat_map(|s| s.iter().copied()).collect();
        assert_eq!(joined, b"abcdefgh");
        q.advance(3);
        let mut out = BytesMut::new();
        assert_eq!(q.drain_into(&mut out), 5);
        assert_eq!(&out[..], b"defgh");
        assert_eq!(q.len(), 0);
    }

    /// What `slices` offers, slice by slice.
    fn pending(q: &OutQueue) -> Vec<Vec<u8>> {
        let mut slices = [IoSlice::new(&[]); 8];
        let n = q.slices(&mut slices);
        slices[..n].iter().map(|s| s.to_vec()).collect()
    }

    #[test]
    fn a_lone_small_chunk_joins_the_tail_so_a_batch_is_one_slice() {
        let mut q = OutQueue::default();
        q.push(Bytes::from_static(b"abcd"));
        q.advance(1); // part of it already written
        q.tail().extend_from_slice(b"ef");
        q.tail().extend_from_slice(b"gh");
        assert_eq!(pending(&q), [&b"bcdefgh"[..]]);
        assert_eq!(q.len(), 7);
        q.advance(7);
        assert_eq!(q.len(), 0);

        // A large chunk is not copied: it stays a slice of its own.
        let mut q = OutQueue::default();
        let big = Bytes::from(vec![7u8; COALESCE_CHUNK + 1]);
        q.push(big.clone());
        q.tail().extend_from_slice(b"x");
        assert_eq!(pending(&q), [big.to_vec(), b"x".to_vec()]);

        // Nor a chunk that became small by being partly written while the tail already
        // held bytes behind it: copying it in then would put it after them.
        let mut q = OutQueue::default();
        let big = Bytes::from(vec![5u8; 5000]);
        q.push(big.clone());
        q.tail().extend_from_slice(b"x");
        q.advance(1000);
        q.tail().extend_from_slice(b"y");
        assert_eq!(pending(&q), [big[1000..].to_vec(), b"xy".to_vec()]);
    }

    #[test]
    fn a_lone_chunk_needs_no_list_and_order_holds_across_the_slot() {
        assert!(
            std::mem::size_of::<OutQueue>() <= 72,
            "the queue is in every connection, idle ones too"
        );
        let mut q = OutQueue::default();
        q.push(Bytes::from_static(b"ab"));
        assert_eq!(q.chunk_list_capacity(), 0, "one chunk takes the slot");
        q.push(Bytes::from_static(b""));
        q.push(Bytes::from_static(b"cd"));
        q.tail().extend_from_slice(b"ef");
        q.push(Bytes::from_static(b"gh"));
        // Empty chunks are skipped.
        assert_eq!(pending(&q), [&b"ab"[..], b"cd", b"ef", b"gh"]);
        // Across the slot into the list: "ab" and "c" written.
        q.advance(3);
        assert_eq!(q.len(), 5);
        assert_eq!(pending(&q), [&b"d"[..], b"ef", b"gh"]);
        q.advance(5);
        assert_eq!(q.len(), 0);
        q.release_if_empty();
        assert_eq!(q.chunk_list_capacity(), 0);
        assert_eq!(q.tail_capacity(), 0);
        assert!(pending(&q).is_empty());
    }
}
