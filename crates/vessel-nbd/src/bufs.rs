//! Buffers of a connection, used again: a large request payload or reply (a copy streams
//! 256 KiB pieces) taken fresh from the allocator each time costs a zeroing `memset` and,
//! above the allocator's mapping threshold, a page fault per page and an `munmap` when
//! freed; together about a fifth of a streaming read's time. An export keeps the ones its
//! connections are done with (up to [`KEEP_BYTES`]) and takes them again (a client such as
//! `nbdcopy` opens new connections for each copy). Only its own: a buffer never carries one
//! export's bytes to another's client.

use std::sync::{Mutex, PoisonError};

/// Buffers smaller than this are left to the allocator.
const KEEP_FROM: usize = 64 << 10;
/// What an export keeps at most.
const KEEP_BYTES: usize = 32 << 20;

#[derive(Default)]
pub(crate) struct Bufs(Mutex<Free>);

#[derive(Default)]
struct Free {
    bufs: Vec<Vec<u8>>,
    bytes: usize,
}

impl Bufs {
    /// A buffer of `len` bytes. Its contents are unspecified (what an earlier request to
    /// this export left there, or zeroes): the caller overwrites every byte it sends.
    pub(crate) fn take(&self, len: usize) -> Vec<u8> {
        if len >= KEEP_FROM {
            let mut free = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(i) = free.bufs.iter().position(|b| b.capacity() >= len) {
                let mut b = free.bufs.swap_remove(i);
                free.bytes -= b.capacity();
                drop(free);
                // Zeroes only beyond what it held before.
                b.resize(len, 0);
                return b;
            }
        }
        vec![0u8; len]
    }

    /// Gives back a buffer the connection is done with.
    pub(crate) fn give(&self, b: Vec<u8>) {
        if b.capacity() < KEEP_FROM {
            return;
        }
        let mut free = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if free.bytes + b.capacity() <= KEEP_BYTES {
            free.bytes += b.capacity();
            free.bufs.push(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_buffers_come_back_small_ones_do_not() {
        let bufs = Bufs::default();
        let mut a = bufs.take(256 << 10);
        assert_eq!(a.len(), 256 << 10);
        a.fill(7);
        let at = a.as_ptr();
        bufs.give(a);
        // The same memory again, at the length asked (shorter, then longer: zeroes added).
        let b = bufs.take(128 << 10);
        assert_eq!((b.as_ptr(), b.len()), (at, 128 << 10));
        bufs.give(b);
        let c = bufs.take(200 << 10);
        assert_eq!((c.as_ptr(), c.len()), (at, 200 << 10));
        assert!(c[128 << 10..].iter().all(|x| *x == 0));
        // None kept fits a larger one; small ones are not kept.
        let d = bufs.take(512 << 10);
        assert_ne!(d.as_ptr(), at);
        bufs.give(vec![1u8; 4096]);
        assert!(bufs.0.lock().unwrap().bufs.is_empty());
        // At most KEEP_BYTES are kept.
        for _ in 0..(KEEP_BYTES / (1 << 20)) + 4 {
            bufs.give(vec![0u8; 1 << 20]);
        }
        assert!(bufs.0.lock().unwrap().bytes <= KEEP_BYTES);
        drop((c, d));
    }
}
