//! The queue of bytes waiting to be written.

use super::pool;
use bytes::{Buf, Bytes, BytesMut};
use std::collections::VecDeque;
use std::io::IoSlice;

/// Pending output: shared chunks queued by reference, followed by a contiguous tail where
/// headers and small frames are coalesced.
#[derive(Debug, Default)]
pub(super) struct OutQueue {
    chunks: VecDeque<Bytes>,
    chunks_len: usize,
    tail: BytesMut,
}

impl OutQueue {
    /// Total pending bytes.
    pub(super) fn len(&self) -> usize {
        self.chunks_len + self.tail.len()
    }

    /// The contiguous tail, to append encoded bytes to.
    pub(super) fn tail(&mut self) -> &mut BytesMut {
        if self.tail.capacity() == 0 {
            self.tail = pool::take(pool::MIN_POOLED);
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
        for chunk in self.chunks.iter().filter(|c| !c.is_empty()) {
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
        for chunk in self.chunks.drain(..) {
            out.extend_from_slice(&chunk);
        }
        self.chunks_len = 0;
        out.extend_from_slice(&self.tail);
        self.tail.clear();
        total
    }

    /// Gives the tail's buffer back to the thread's pool, and frees the chunk list, when
    /// nothing is pending.
    pub(super) fn release_if_empty(&mut self) {
        if self.len() == 0 {
            if self.tail.capacity() > 0 {
                pool::give(std::mem::take(&mut self.tail));
            }
            if self.chunks.capacity() > 0 {
                self.chunks = VecDeque::new();
            }
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
}
