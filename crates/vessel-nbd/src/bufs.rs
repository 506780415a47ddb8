//! Buffers of a connection, used again: a large request payload or reply (a copy streams
//! 256 KiB pieces) taken fresh from the allocator each time costs a zeroing `memset` and,
//! above the allocator's mapping threshold, a page fault per page and an `munmap` when
//! freed; together about a fifth of a streaming read's time. An export keeps the ones its
//! connections are done with (up to [`KEEP_BYTES`]) and takes them again (a client such as
//! `nbdcopy` opens new connections for each copy). Only its own: a buffer never carries one
//! export's bytes to another's client. All exports together keep at most [`KEEP_ALL`] (a
//! daemon serves an export per attached VM disk, most of them idle).
//!
//! A buffer's data sits 4 KiB-aligned where the disk I/O needs it ([`Bufs::take_aligned`]:
//! a write payload from its start, a read reply after its header), so that a device that
//! reads and writes with `O_DIRECT` (a `raid` pool's members) takes it as it is instead of
//! copying it through a bounce buffer of its own.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The alignment of the data a device reads or writes (`O_DIRECT`'s).
const ALIGN: usize = 4096;

/// Buffers smaller than this are left to the allocator.
const KEEP_FROM: usize = 64 << 10;
/// What an export keeps at most.
const KEEP_BYTES: usize = 32 << 20;
/// What all exports of the process keep at most.
const KEEP_ALL: usize = 128 << 20;
/// What all exports keep now.
static KEPT: AtomicUsize = AtomicUsize::new(0);

/// Bytes of large buffers (from [`KEEP_FROM`] on: write payloads and read replies) one
/// server's connections hold at once, at most, unless one alone is larger (see
/// [`Budget`]).
pub const BUFFER_LIMIT: usize = 256 << 20;
/// How long a buffer waits for others to come back before it is taken anyway: longer than
/// the stall timeout, which closes a connection whose client reads no replies (and with
/// it the buffers its replies held).
const WAIT_MAX: Duration = Duration::from_secs(90);
/// How often a waiting request looks whether its connection was cut off.
const CUT_LOOK: Duration = Duration::from_millis(100);

/// The large buffers a server's connections hold, bounded.
///
/// Every connection may hold tens of MiB (write payloads read ahead, read replies its
/// client has not taken yet), so many connections that pipeline large requests and read no
/// replies would otherwise hold many GiB until their stall timeout closes them. Past the
/// bound a request waits for buffers to come back (a slower client, never a failed
/// request); one buffer larger than the bound is taken when no other is out. A server has
/// one of its own, or one it shares with other servers ([`crate::BufferBudget`]: a
/// daemon's export listeners of one project), so that one server's clients never wait
/// for an unrelated one's.
#[derive(Debug)]
pub(crate) struct Budget {
    limit: AtomicUsize,
    out: Mutex<Out>,
    given_back: Condvar,
}

#[derive(Debug)]
struct Out {
    bytes: usize,
    /// Waiting on `given_back`: with none, giving back wakes nobody (a futex call saved
    /// per request).
    waiting: usize,
}

impl Default for Budget {
    fn default() -> Self {
        Budget::with_limit(BUFFER_LIMIT)
    }
}

impl Budget {
    pub(crate) fn with_limit(limit: usize) -> Self {
        Budget {
            limit: AtomicUsize::new(limit),
            out: Mutex::new(Out {
                bytes: 0,
                waiting: 0,
            }),
            given_back: Condvar::new(),
        }
    }

    pub(crate) fn set_limit(&self, bytes: usize) {
        // Under the lock, so that no waiter misses the news between its look and its wait.
        let _out = self.out.lock().unwrap_or_else(PoisonError::into_inner);
        self.limit.store(bytes, Ordering::Relaxed);
        self.given_back.notify_all();
    }

    /// Bytes of large buffers out now.
    pub(crate) fn out(&self) -> usize {
        self.out
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .bytes
    }

    /// Counts `n` bytes out, waiting while they would pass the limit, unless one of
    /// `stop` is set (the connection is being closed or its session cut off: whoever
    /// closes it must not wait for buffers that others hold).
    fn take(&self, n: usize, stop: &[Arc<AtomicBool>]) {
        let deadline = Instant::now() + WAIT_MAX;
        let mut out = self.out.lock().unwrap_or_else(PoisonError::into_inner);
        while out.bytes > 0 && out.bytes + n > self.limit.load(Ordering::Relaxed) {
            let left = deadline.saturating_duration_since(Instant::now());
            if stop.iter().any(|s| s.load(Ordering::Acquire)) {
                break;
            }
            if left.is_zero() {
                tracing::warn!(
                    out = out.bytes,
                    bytes = n,
                    "nbd buffers past their bound for {WAIT_MAX:?}: taking one more"
                );
                break;
            }
            out.waiting += 1;
            // A connection cut off sets its mark without telling the budget: looked at
            // every 100 ms.
            out = self
                .given_back
                .wait_timeout(out, left.min(CUT_LOOK))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
            out.waiting -= 1;
        }
        out.bytes += n;
    }

    fn give_back(&self, n: usize) {
        let mut out = self.out.lock().unwrap_or_else(PoisonError::into_inner);
        out.bytes -= n;
        let wake = out.waiting > 0;
        drop(out);
        if wake {
            self.given_back.notify_all();
        }
    }
}

#[derive(Default)]
pub(crate) struct Bufs {
    free: Mutex<Free>,
}

/// A connection's way to its export's buffers: large ones counted against its server's
/// budget, and waited for unless the connection is closed or its session cut off.
pub(crate) struct Pool {
    bufs: Arc<Bufs>,
    budget: Arc<Budget>,
    stop: [Arc<AtomicBool>; 2],
}

impl Pool {
    pub(crate) fn new(bufs: Arc<Bufs>, budget: Arc<Budget>, stop: [Arc<AtomicBool>; 2]) -> Pool {
        Pool { bufs, budget, stop }
    }

    /// [`Bufs::take`], counted.
    pub(crate) fn take(&self, len: usize) -> Buf {
        self.take_aligned(len, 0)
    }

    /// [`Bufs::take_aligned`], counted (from [`KEEP_FROM`] on): waits while the budget
    /// is spent.
    pub(crate) fn take_aligned(&self, len: usize, lead: usize) -> Buf {
        let need = len + ALIGN - 1;
        let counted = (need >= KEEP_FROM).then(|| {
            self.budget.take(need, &self.stop);
            (self.budget.clone(), need)
        });
        let mut b = self.bufs.take_aligned(len, lead);
        b.counted = counted;
        b
    }

    /// [`Bufs::give`].
    pub(crate) fn give(&self, b: impl Into<Buf>) {
        self.bufs.give(b);
    }
}

#[derive(Default)]
struct Free {
    bufs: Vec<Vec<u8>>,
    bytes: usize,
}

/// Bytes of a request or reply: `v[start..]`, a `Vec` whose first `start` bytes are
/// skipped (to align what follows, or what a partial send already took).
#[derive(Debug, Default)]
pub(crate) struct Buf {
    v: Vec<u8>,
    start: usize,
    /// Bytes it counts among its server's large buffers out, given back when it goes.
    counted: Option<(Arc<Budget>, usize)>,
}

impl Drop for Buf {
    fn drop(&mut self) {
        if let Some((budget, n)) = self.counted.take() {
            budget.give_back(n);
        }
    }
}

impl Buf {
    /// Drops the first `n` bytes (sent already).
    pub(crate) fn advance(&mut self, n: usize) {
        self.start = (self.start + n).min(self.v.len());
    }

    /// Keeps the first `n` bytes.
    pub(crate) fn truncate(&mut self, n: usize) {
        self.v.truncate(self.start + n);
    }
}

impl From<Vec<u8>> for Buf {
    fn from(v: Vec<u8>) -> Self {
        Buf {
            v,
            start: 0,
            counted: None,
        }
    }
}

impl std::ops::Deref for Buf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.v[self.start..]
    }
}

impl std::ops::DerefMut for Buf {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.v[self.start..]
    }
}

impl Bufs {
    /// A buffer of `len` bytes, its data 4 KiB-aligned from its start. Its contents are
    /// unspecified (what an earlier request to this export left there, or zeroes): the
    /// caller overwrites every byte it sends.
    #[cfg(test)]
    pub(crate) fn take(&self, len: usize) -> Buf {
        self.take_aligned(len, 0)
    }

    /// [`Bufs::take`] with byte `lead` 4 KiB-aligned (the data after a reply's header).
    pub(crate) fn take_aligned(&self, len: usize, lead: usize) -> Buf {
        let need = len + ALIGN - 1;
        let mut v = None;
        // Whatever `give` keeps (a capacity from KEEP_FROM on) may serve it.
        if need >= KEEP_FROM {
            let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(i) = free.bufs.iter().position(|b| b.capacity() >= need) {
                let b = free.bufs.swap_remove(i);
                free.bytes -= b.capacity();
                KEPT.fetch_sub(b.capacity(), Ordering::Relaxed);
                v = Some(b);
            }
        }
        let fresh = v.is_none();
        // A fresh one zeroed by the allocator (pages it has not touched yet), cut to size.
        let mut v = v.unwrap_or_else(|| vec![0u8; need]);
        let start = (ALIGN - (v.as_ptr() as usize + lead) % ALIGN) % ALIGN;
        if fresh {
            v.truncate(start + len);
        } else {
            // Zeroes only beyond what it held before; within its capacity, so it stays
            // where it is and `start` keeps its alignment.
            v.resize(start + len, 0);
        }
        Buf {
            v,
            start,
            counted: None,
        }
    }

    /// Gives back a buffer the connection is done with.
    pub(crate) fn give(&self, b: impl Into<Buf>) {
        let b = std::mem::take(&mut b.into().v);
        if b.capacity() < KEEP_FROM {
            return;
        }
        let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        if free.bytes + b.capacity() > KEEP_BYTES {
            return;
        }
        let cap = b.capacity();
        let fits = KEPT
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |k| {
                (k + cap <= KEEP_ALL).then_some(k + cap)
            })
            .is_ok();
        if fits {
            free.bytes += cap;
            free.bufs.push(b);
        }
    }
}

impl Drop for Bufs {
    fn drop(&mut self) {
        let free = self.free.get_mut().unwrap_or_else(PoisonError::into_inner);
        KEPT.fetch_sub(free.bytes, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The process's total is shared: these tests take turns.
    static TURN: Mutex<()> = Mutex::new(());

    #[test]
    fn large_buffers_come_back_small_ones_do_not() {
        let _turn = TURN.lock().unwrap_or_else(PoisonError::into_inner);
        let bufs = Bufs::default();
        let mut a = bufs.take(256 << 10);
        assert_eq!(a.len(), 256 << 10);
        assert_eq!(a.as_ptr() as usize % ALIGN, 0);
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
        assert!(bufs.free.lock().unwrap().bufs.is_empty());
        // At most KEEP_BYTES are kept, and what is kept counts in the process's total
        // until the export goes.
        for _ in 0..(KEEP_BYTES / (1 << 20)) + 4 {
            bufs.give(vec![0u8; 1 << 20]);
        }
        let kept = bufs.free.lock().unwrap().bytes;
        assert!(kept <= KEEP_BYTES && kept > 0);
        assert!(KEPT.load(Ordering::Relaxed) >= kept);
        drop((c, d));
    }

    #[test]
    fn data_is_aligned_where_asked_also_in_a_buffer_used_again() {
        let _turn = TURN.lock().unwrap_or_else(PoisonError::into_inner);
        let bufs = Bufs::default();
        // A reply's data after its 16-byte header.
        let a = bufs.take_aligned(16 + (64 << 10), 16);
        assert_eq!((a.as_ptr() as usize + 16) % ALIGN, 0);
        let base = a.v.as_ptr();
        bufs.give(a);
        // The same memory for a structured reply: aligned after 28 bytes.
        let mut b = bufs.take_aligned(64 << 10, 28);
        assert_eq!(b.v.as_ptr(), base);
        assert_eq!((b.as_ptr() as usize + 28) % ALIGN, 0);
        b.truncate(50);
        b.advance(20);
        assert_eq!(b.len(), 30);
        drop(b);
        // A buffer just under KEEP_FROM long has a capacity past it: it is kept, and serves
        // the next one of its size (else it would hold a place in the keep forever).
        let c = bufs.take(KEEP_FROM - 100);
        let base = c.v.as_ptr();
        bufs.give(c);
        assert_eq!(bufs.free.lock().unwrap().bufs.len(), 1);
        let d = bufs.take(KEEP_FROM - 100);
        assert_eq!(d.v.as_ptr(), base, "the kept buffer was not used again");
    }

    #[test]
    fn all_exports_together_keep_at_most_keep_all() {
        let _turn = TURN.lock().unwrap_or_else(PoisonError::into_inner);
        let exports: Vec<Bufs> = (0..KEEP_ALL / KEEP_BYTES + 2)
            .map(|_| Bufs::default())
            .collect();
        for b in &exports {
            for _ in 0..KEEP_BYTES / (1 << 20) {
                b.give(vec![0u8; 1 << 20]);
            }
        }
        let kept: usize = exports.iter().map(|b| b.free.lock().unwrap().bytes).sum();
        assert!(kept <= KEEP_ALL, "{kept}");
        assert_eq!(KEPT.load(Ordering::Relaxed), kept);
        drop(exports);
        assert_eq!(
            KEPT.load(Ordering::Relaxed),
            0,
            "an export gone still counts"
        );
    }
}
