//! The block-device face of the array: reads that reconstruct around missing members,
//! writes that keep parity and mirrors in step, and flush.
//!
//! Every request locks the rows it touches ([`RowLocks`]), takes a snapshot of the member
//! table ([`Ctx`]) and issues the member I/Os it needs in parallel batches (`uring`).
//! Requests on other rows run at the same time.

use std::ops::Range;
use std::sync::{Arc, Condvar, Mutex};

use crate::array::{RaidArray, Slot};
use crate::checksum::{seg_sums, Verified};
use crate::error::{RaidError, Result};
use crate::gf;
use crate::layout::{Geometry, Role, DATA_OFFSET};
use crate::member::{Member, Scratch, IO_ALIGN};
use crate::superblock::SlotState;
use crate::uring::{self, Req};
use crate::RaidLevel;

const ALIGN: u64 = IO_ALIGN as u64;
/// Least time between two clearings of idle write-intent bits.
const CLEAR_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

pub(crate) fn align_down(x: u64) -> u64 {
    x / ALIGN * ALIGN
}

pub(crate) fn align_up(x: u64) -> u64 {
    x.div_ceil(ALIGN) * ALIGN
}

/// Row ranges held by requests in progress; a request waits until no held range overlaps
/// its own.
#[derive(Debug, Default)]
pub(crate) struct RowLocks {
    held: Mutex<Held>,
    freed: Condvar,
}

/// The row ranges held, and how many threads wait for one of them to be freed (an unlock
/// with nobody waiting wakes nobody: no system call per request).
#[derive(Debug, Default)]
struct Held {
    ranges: Vec<Range<u64>>,
    waiting: usize,
}

/// Rows held until dropped.
pub(crate) struct RowGuard<'a> {
    locks: &'a RowLocks,
    rows: Range<u64>,
}

impl RowLocks {
    /// Waits for and takes `rows`.
    pub fn lock(&self, rows: Range<u64>) -> RowGuard<'_> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        while held
            .ranges
            .iter()
            .any(|r| r.start < rows.end && rows.start < r.end)
        {
            held.waiting += 1;
            held = self.freed.wait(held).unwrap_or_else(|e| e.into_inner());
            held.waiting -= 1;
        }
        held.ranges.push(rows.clone());
        RowGuard { locks: self, rows }
    }
}

impl Drop for RowGuard<'_> {
    fn drop(&mut self) {
        let mut held = self.locks.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = held.ranges.iter().position(|r| *r == self.rows) {
            held.ranges.swap_remove(i);
        }
        let wake = held.waiting > 0;
        drop(held);
        if wake {
            self.locks.freed.notify_all();
        }
    }
}

impl RaidArray {
    fn check_range(&self, offset: u64, len: usize) -> Result<()> {
        let size = self.size();
        match offset.checked_add(len as u64) {
            Some(end) if end <= size => Ok(()),
            _ => Err(RaidError::OutOfRange {
                offset,
                len: len as u64,
                size,
            }),
        }
    }

    /// The rows bytes `offset..offset + len` of the array lie in.
    fn row_span(&self, offset: u64, len: usize) -> Range<u64> {
        let rb = self.geo.row_bytes();
        offset / rb..(offset + len as u64).div_ceil(rb)
    }

    /// Reads `buf.len()` bytes at array `offset`. Missing data is reconstructed from the
    /// other members; if that is impossible the read fails with [`RaidError::DataLoss`].
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.check_range(offset, buf.len())?;
        if buf.is_empty() {
            return Ok(());
        }
        let _rows = self.rows.lock(self.row_span(offset, buf.len()));
        let mut ctx = Ctx::new(self);
        let res = ctx.read(offset, buf);
        ctx.finish()?;
        res
    }

    /// Writes `buf` at array `offset`, updating parity or mirrors. Works degraded as long
    /// as the level tolerates the missing members.
    pub fn write_at(&self, offset: u64, buf: &[u8]) -> Result<()> {
        self.check_range(offset, buf.len())?;
        if buf.is_empty() {
            return Ok(());
        }
        let rows = self.row_span(offset, buf.len());
        let _rows = self.rows.lock(rows.clone());
        self.begin_write(rows.clone())?;
        let mut ctx = Ctx::new(self);
        let res = ctx.write(offset, buf);
        self.end_write(rows);
        // A member that failed during the write must be recorded as failed before the
        // write is acknowledged, or a restart would trust its stale data.
        ctx.finish()?;
        res?;
        self.confirm_failures()
    }

    /// Has the failure hook confirm every member failure it has not confirmed yet; an
    /// error while one stays unconfirmed (the write or flush is then not acknowledged).
    pub(crate) fn confirm_failures(&self) -> Result<()> {
        let Some(hook) = self.failure_hook.0.get() else {
            return Ok(());
        };
        let waiting = self.lock().unconfirmed.clone();
        for m in waiting {
            if let Err(why) = hook(m) {
                return Err(RaidError::FailureUnconfirmed { index: m, why });
            }
            self.lock().unconfirmed.retain(|&u| u != m);
        }
        Ok(())
    }

    /// Makes every completed write durable on the members, then clears the write-intent
    /// bits of regions not written since the previous flush. Regions still being written
    /// keep their bit, so a steady writer that flushes often does not pay a bitmap sync
    /// per flush.
    pub fn flush(&self) -> Result<()> {
        self.flush_with(false)
    }

    /// Like [`RaidArray::flush`], clearing the bits of every region with no write in
    /// flight now instead of waiting for the bitmap's interval: what an idle array's
    /// bitmap looks like a few seconds after its last write. Before a member is taken out
    /// on purpose (a far copy's host going down for maintenance), this keeps its resync
    /// to what is written while it is out.
    pub fn settle(&self) -> Result<()> {
        // Twice, each a sync and then a clearing: the first forgets what the last interval
        // touched; the second clears what nothing touched since (a write that ended after
        // the first sync touched its region at its end, so its bit is kept until a sync
        // that covers it).
        self.flush_clearing(Clearing::Idle)?;
        self.flush_clearing(Clearing::Idle)
    }

    /// Like [`RaidArray::flush`], clearing the whole write-intent bitmap.
    pub(crate) fn flush_with(&self, all: bool) -> Result<()> {
        self.flush_clearing(if all { Clearing::All } else { Clearing::Due })
    }

    fn flush_clearing(&self, clearing: Clearing) -> Result<()> {
        self.csums.write_back();
        let mut ctx = Ctx::new(self);
        let res = ctx.sync_members();
        let mut it = self.intents();
        // Bits are cleared at most every few seconds (md's bitmap daemon waits 5 s), so a
        // writer that flushes often does not clear and set the same bits over and over.
        let due = clearing != Clearing::Due || it.last_clear.elapsed() >= CLEAR_EVERY;
        // Not while a member is out or coming back: the bits are what it missed.
        let whole = self.lock().is_whole();
        if res.is_ok() && due && whole {
            it.last_clear = std::time::Instant::now();
            let regions: Vec<u64> = it.inflight.keys().copied().collect();
            for r in regions {
                it.bitmap.touch_region(r);
            }
            let blocks = if clearing == Clearing::All {
                it.bitmap.clear()
            } else {
                it.bitmap.clear_idle()
            };
            self.write_bitmap_blocks(&it.bitmap, &blocks)?;
        }
        drop(it);
        ctx.finish()?;
        res?;
        self.confirm_failures()
    }

    /// Sets the write-intent bits of `rows`, durably, before they are written, and counts
    /// the write in flight there.
    pub(crate) fn begin_write(&self, rows: Range<u64>) -> Result<()> {
        let mut it = self.intents();
        let mut blocks = Vec::new();
        for region in it.bitmap.regions(rows) {
            *it.inflight.entry(region).or_default() += 1;
            if let Some(b) = it.bitmap.set_region(region) {
                if !blocks.contains(&b) {
                    blocks.push(b);
                }
            }
        }
        self.write_bitmap_blocks(&it.bitmap, &blocks)
    }

    /// The write to `rows` is done.
    pub(crate) fn end_write(&self, rows: Range<u64>) {
        let mut it = self.intents();
        for region in it.bitmap.regions(rows) {
            // Written in this interval until a flush after its end: the next clearing
            // keeps its bit even if no write is in flight there by then.
            it.bitmap.touch_region(region);
            if let Some(n) = it.inflight.get_mut(&region) {
                *n -= 1;
                if *n == 0 {
                    it.inflight.remove(&region);
                }
            }
        }
    }
}

/// Which write-intent bits a flush clears.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Clearing {
    /// Those idle for a whole interval, once the interval is over.
    Due,
    /// Those with no write in flight, now.
    Idle,
    /// All (a clean close or a finished resync).
    All,
}

/// One piece of a read: array bytes at `dst` of the caller's buffer come from member
/// `m` at `off` (aligned range `at..at + len`).
pub(crate) struct Piece {
    /// The member it is read from; `usize::MAX` for a chunk to solve from the others.
    pub m: usize,
    /// Member offset and length of the aligned member range read.
    pub at: u64,
    pub len: usize,
    /// Bytes of that range before the caller's.
    pub skip: usize,
    /// Offset in the caller's buffer, and bytes.
    pub dst: usize,
    pub n: usize,
}

/// A piece of a member write: the caller's bytes, or bytes the request made (parity, a
/// chunk patched after a read).
enum Seg<'b> {
    Caller(&'b [u8]),
    Own(Scratch),
}

impl Seg<'_> {
    fn bytes(&self) -> &[u8] {
        match self {
            Seg::Caller(b) => b,
            Seg::Own(b) => b.as_slice(),
        }
    }

    /// A copy of `data`.
    fn copy(data: &[u8]) -> Self {
        let mut b = Scratch::empty(data.len());
        b.extend_from_slice(data);
        Seg::Own(b)
    }
}

/// Member writes of a request: per member run (member, offset, length), the pieces that
/// follow one another there, written as one vectored I/O.
#[derive(Default)]
pub(crate) struct Plan<'b> {
    runs: Vec<(usize, u64, usize, Vec<Seg<'b>>)>,
}

impl<'b> Plan<'b> {
    fn push(&mut self, m: usize, off: u64, seg: Seg<'b>) {
        let len = seg.bytes().len();
        push_run(&mut self.runs, m, off, len, seg);
    }
}

/// Adds `len` bytes of member `m` at `off` (piece `seg`) to the run of that member it
/// continues, or as a run of its own: (member, offset, length, pieces).
pub(crate) fn push_run<S>(
    runs: &mut Vec<(usize, u64, usize, Vec<S>)>,
    m: usize,
    off: u64,
    len: usize,
    seg: S,
) {
    match runs
        .iter_mut()
        .rev()
        .find(|(rm, at, rlen, _)| *rm == m && *at + *rlen as u64 == off)
    {
        Some(run) => {
            run.2 += len;
            run.3.push(seg);
        }
        None => runs.push((m, off, len, vec![seg])),
    }
}

/// One request's view of the array: the member table as it was when the request's rows
/// were locked, and the members that failed under it.
pub(crate) struct Ctx<'a> {
    pub a: &'a RaidArray,
    pub geo: Geometry,
    pub slots: Vec<Slot>,
    /// The error that last took a member out during this request.
    pub error: Option<RaidError>,
    /// Members read through the page cache are read past it ([`Member::reader`]): a
    /// scrub's, a rebuild's or a resync's context.
    pub past_cache: bool,
}

impl<'a> Ctx<'a> {
    pub fn new(a: &'a RaidArray) -> Self {
        let slots = a.lock().slots.clone();
        Ctx {
            a,
            geo: a.geo,
            slots,
            error: None,
            past_cache: false,
        }
    }

    /// The context of a pass over whole members (a scrub, a rebuild, a resync): its reads
    /// go past the host's page cache ([`Member::reader`]).
    pub fn for_pass(a: &'a RaidArray) -> Self {
        Ctx {
            past_cache: true,
            ..Ctx::new(a)
        }
    }

    /// The member to read `m`'s data from in this context.
    pub fn reader<'m>(&self, m: &'m Member) -> &'m Member {
        m.reader(self.past_cache)
    }

    /// Whether member `m` may be written.
    pub fn writable(&self, m: usize) -> bool {
        self.slots[m].member.is_some() && self.slots[m].state != SlotState::Failed
    }

    /// Whether member `m` holds valid data for `row`.
    pub fn readable(&self, m: usize, row: u64) -> bool {
        let s = &self.slots[m];
        s.member.is_some()
            && match s.state {
                SlotState::Active => true,
                SlotState::Rebuilding => (row + 1) * self.geo.chunk <= s.checkpoint,
                SlotState::Failed => false,
            }
    }

    /// Takes member `m` out after an I/O error: in this view and, if the array still has
    /// the same member in the slot, in the array (recorded by [`Ctx::finish`]).
    pub fn fail(&mut self, m: usize, e: RaidError) {
        let Some(member) = self.slots[m].member.take() else {
            return;
        };
        self.slots[m].state = SlotState::Failed;
        tracing::warn!(member = m, error = %e, "member I/O failed; member taken out");
        self.a.fail_if_current(m, &member);
        self.error = Some(e);
    }

    /// Records what this request changed: members whose checksum write-back failed are
    /// taken out, and the superblocks are written if a member failed.
    pub fn finish(&mut self) -> Result<()> {
        self.a.apply_writeback_failures();
        let mut st = self.a.lock();
        if st.failures_pending {
            st.write_superblocks()?;
        }
        Ok(())
    }

    fn member(&self, m: usize) -> Option<Arc<Member>> {
        self.slots[m].member.clone()
    }

    /// Reads in parallel; per read, whether it succeeded (members that fail are failed).
    pub fn read_batch(&mut self, reads: &mut [(usize, u64, &mut [u8])]) -> Vec<bool> {
        self.read_segs(&mut one_seg(reads))
    }

    /// [`Ctx::read_batch`] of reads into segments that follow one another on the member.
    fn read_segs(&mut self, reads: &mut [(usize, u64, Vec<&mut [u8]>)]) -> Vec<bool> {
        let members: Vec<Option<Arc<Member>>> =
            reads.iter().map(|(m, _, _)| self.member(*m)).collect();
        let mut reqs = Vec::new();
        let mut at = Vec::new();
        for (i, ((_, off, segs), member)) in reads.iter_mut().zip(&members).enumerate() {
            if let Some(member) = member {
                let segs = segs.iter_mut().map(|s| &mut **s).collect();
                reqs.push(Req::readv(self.reader(member), *off, segs));
                at.push(i);
            }
        }
        let results = uring::run(&mut reqs);
        drop(reqs);
        let mut ok = vec![false; reads.len()];
        for (i, res) in at.into_iter().zip(results) {
            match res {
                Ok(()) => ok[i] = true,
                Err(e) => self.fail(reads[i].0, e),
            }
        }
        ok
    }

    /// Reads in parallel and checks each against its checksums; mismatches are counted
    /// against the member if `count`.
    pub fn read_verified_batch(
        &mut self,
        reads: &mut [(usize, u64, &mut [u8])],
        count: bool,
    ) -> Vec<Verified> {
        self.read_verified_segs(&mut one_seg(reads), count)
    }

    /// [`Ctx::read_verified_batch`] of reads into segments.
    pub(crate) fn read_verified_segs(
        &mut self,
        reads: &mut [(usize, u64, Vec<&mut [u8]>)],
        count: bool,
    ) -> Vec<Verified> {
        let ok = self.read_segs(reads);
        let mut out = Vec::with_capacity(reads.len());
        for ((m, off, segs), ok) in reads.iter().zip(ok) {
            if !ok {
                out.push(Verified::Failed);
                continue;
            }
            let segs: Vec<&[u8]> = segs.iter().map(|s| &**s).collect();
            out.push(match self.segs_match(*m, *off, &segs) {
                Some(true) => Verified::Good,
                Some(false) => {
                    if count {
                        tracing::warn!(pool = %self.a.pool, member = m, offset = off, "checksum mismatch; reading around the member");
                        if let Some(n) = self.a.lock().checksum_errors.get_mut(*m) {
                            *n += 1;
                        }
                    }
                    Verified::Corrupt
                }
                None => Verified::Failed,
            });
        }
        out
    }

    /// Whether `buf`, read from member `m` at `off`, matches its recorded checksums.
    /// `None` when the checksums cannot be read (the member is failed).
    pub fn checksums_match(&mut self, m: usize, off: u64, buf: &[u8]) -> Option<bool> {
        self.segs_match(m, off, &[buf])
    }

    /// [`Ctx::checksums_match`] of segments read one after the other.
    fn segs_match(&mut self, m: usize, off: u64, segs: &[&[u8]]) -> Option<bool> {
        let member = self.member(m)?;
        let len = segs.iter().map(|s| s.len()).sum();
        match self
            .a
            .csums
            .matches_sums(&member, off, len, &seg_sums(segs), self.past_cache)
        {
            Ok(ok) => Some(ok),
            Err(e) => {
                self.fail(m, e);
                None
            }
        }
    }

    /// Reads member `m`, checked against its checksums.
    pub fn read_verified(&mut self, m: usize, off: u64, buf: &mut [u8]) -> Verified {
        self.read_verified_batch(&mut [(m, off, buf)], true)[0]
    }

    /// Reads member `m`; `false` (and the member failed) if it cannot be read.
    pub fn read_member(&mut self, m: usize, off: u64, buf: &mut [u8]) -> bool {
        self.read_batch(&mut [(m, off, buf)])[0]
    }

    /// Writes in parallel to the writable members among `writes` and records the
    /// checksums of what was written; per write, whether it succeeded.
    pub fn write_batch(&mut self, writes: &[(usize, u64, &[u8])]) -> Vec<bool> {
        let writes: Vec<(usize, u64, Vec<&[u8]>)> = writes
            .iter()
            .map(|(m, off, buf)| (*m, *off, vec![*buf]))
            .collect();
        self.write_segs(&writes)
    }

    /// [`Ctx::write_batch`] of writes of segments that follow one another on the member.
    fn write_segs(&mut self, writes: &[(usize, u64, Vec<&[u8]>)]) -> Vec<bool> {
        let members: Vec<Option<Arc<Member>>> = writes
            .iter()
            .map(|(m, _, _)| self.member(*m).filter(|_| self.writable(*m)))
            .collect();
        let mut reqs = Vec::new();
        let mut at = Vec::new();
        for (i, ((_, off, segs), member)) in writes.iter().zip(&members).enumerate() {
            if let Some(member) = member {
                reqs.push(Req::writev(member, *off, segs.clone()));
                at.push(i);
            }
        }
        // The checksums are computed while the writes are in flight.
        let mut sums: Vec<Vec<u32>> = Vec::new();
        let results = uring::run_during(&mut reqs, || {
            sums = at.iter().map(|&i| seg_sums(&writes[i].2)).collect();
        });
        drop(reqs);
        let mut ok = vec![false; writes.len()];
        for ((i, res), sums) in at.into_iter().zip(results).zip(sums) {
            let (m, off, segs) = &writes[i];
            let len = segs.iter().map(|s| s.len()).sum();
            let res = res.and_then(|()| match &members[i] {
                Some(member) => self.a.csums.update_sums(member, *off, len, &sums),
                None => Ok(()),
            });
            match res {
                Ok(()) => ok[i] = true,
                Err(e) => self.fail(*m, e),
            }
        }
        ok
    }

    /// Writes member `m`; `false` (and the member failed) if it cannot be written.
    pub fn write_member(&mut self, m: usize, off: u64, buf: &[u8]) -> bool {
        self.write_batch(&[(m, off, buf)])[0]
    }

    /// Writes a plan's runs in parallel.
    fn write_plan(&mut self, plan: &Plan<'_>) -> Vec<bool> {
        let writes: Vec<(usize, u64, Vec<&[u8]>)> = plan
            .runs
            .iter()
            .map(|(m, off, _, segs)| (*m, *off, segs.iter().map(Seg::bytes).collect()))
            .collect();
        self.write_segs(&writes)
    }

    /// Makes every member write so far durable (all members at once).
    pub fn sync_members(&mut self) -> Result<()> {
        let live: Vec<(usize, Arc<Member>)> = (0..self.slots.len())
            .filter(|&m| self.writable(m))
            .filter_map(|m| Some((m, self.member(m)?)))
            .collect();
        let mut reqs: Vec<Req<'_>> = live.iter().map(|(_, m)| Req::sync(m)).collect();
        let results = uring::run(&mut reqs);
        drop(reqs);
        for ((m, _), res) in live.iter().zip(results) {
            if let Err(e) = res {
                self.fail(*m, e);
            }
        }
        let missing = (0..self.slots.len()).filter(|&m| !self.writable(m)).count();
        if missing > self.geo.level.tolerated_failures(self.geo.members) {
            return Err(self.data_loss(0));
        }
        Ok(())
    }

    pub fn data_loss(&self, row: u64) -> RaidError {
        self.data_loss_with(row, &[])
    }

    /// Data loss in `row`, where `corrupt` members returned wrong bytes besides the
    /// missing ones.
    pub fn data_loss_with(&self, row: u64, corrupt: &[usize]) -> RaidError {
        RaidError::DataLoss {
            offset: row * self.geo.row_bytes(),
            missing: (0..self.slots.len())
                .filter(|&m| !self.readable(m, row) || corrupt.contains(&m))
                .collect(),
            level: self.geo.level,
        }
    }

    /// The member to read data chunk `d` of `row` from, if it is readable.
    fn source(&self, row: u64, d: usize) -> Option<usize> {
        if self.geo.level == RaidLevel::Raid1 {
            // Mirrors take turns by megabyte, so one large read uses them all.
            let n = self.slots.len() as u64;
            let rows_per_turn = ((1 << 20) / self.geo.chunk).max(1);
            let first = (row / rows_per_turn % n) as usize;
            return (0..self.slots.len())
                .map(|i| (first + i) % self.slots.len())
                .find(|&m| self.readable(m, row));
        }
        let m = self.geo.data_member(row, d);
        self.readable(m, row).then_some(m)
    }

    pub fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<()> {
        if self.read_direct(offset, buf) {
            return Ok(());
        }
        self.read_reconstructing(offset, buf)
    }

    /// Reads straight from the members, every member I/O of the request at once: the
    /// members holding the data, and for a row whose data member is missing the rest of
    /// the row, solved in memory (in the caller's buffer where the request is aligned and
    /// every such row has P and misses one data chunk: `degraded.rs`; otherwise every
    /// readable member of the row). `false` (nothing trusted) if a member fails or
    /// returns bytes that fail their checksums.
    fn read_direct(&mut self, offset: u64, buf: &mut [u8]) -> bool {
        let geo = self.geo;
        let row_bytes = geo.row_bytes();
        let mut pieces: Vec<Piece> = Vec::new();
        // Rows to solve: (row, union of the columns wanted).
        let mut solve_rows: Vec<(u64, u64, u64)> = Vec::new();
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let row = pos / row_bytes;
            let within = pos % row_bytes;
            let d = (within / geo.chunk) as usize;
            let col = within % geo.chunk;
            let n = ((geo.chunk - col) as usize).min(buf.len() - done);
            let (c0, c1) = (align_down(col), align_up(col + n as u64));
            let m = match self.source(row, d) {
                Some(m) => m,
                None if geo.level == RaidLevel::Raid5 || geo.level == RaidLevel::Raid6 => {
                    match solve_rows.last_mut() {
                        Some(last) if last.0 == row => {
                            last.1 = last.1.min(c0);
                            last.2 = last.2.max(c1);
                        }
                        _ => solve_rows.push((row, c0, c1)),
                    }
                    usize::MAX
                }
                None => return false,
            };
            pieces.push(Piece {
                m,
                at: geo.member_offset(row) + c0,
                len: (c1 - c0) as usize,
                skip: (col - c0) as usize,
                dst: done,
                n,
            });
            done += n;
        }
        if solve_rows.is_empty() && pieces.iter().all(|p| p.skip == 0 && p.len == p.n) {
            // Aligned pieces: straight into the caller's buffer, the pieces of one member
            // run in one vectored read.
            let mut runs: Vec<(usize, u64, usize, Vec<&mut [u8]>)> = Vec::new();
            let mut rest = &mut buf[..];
            for p in &pieces {
                let (seg, tail) = std::mem::take(&mut rest).split_at_mut(p.n);
                rest = tail;
                push_run(&mut runs, p.m, p.at, p.n, seg);
            }
            let mut reads: Vec<(usize, u64, Vec<&mut [u8]>)> = runs
                .into_iter()
                .map(|(m, at, _, segs)| (m, at, segs))
                .collect();
            let got = self.read_verified_segs(&mut reads, false);
            return got.iter().all(|v| *v == Verified::Good);
        }
        if pieces.iter().all(|p| p.skip == 0 && p.len == p.n) {
            if let Some(plan) = self.xor_plan(&pieces, &solve_rows) {
                return self.read_solving(buf, &pieces, &plan);
            }
        }
        // The member ranges to read, in order; contiguous ones of a member joined.
        let mut runs: Vec<(usize, u64, usize)> = Vec::new();
        let add = |runs: &mut Vec<(usize, u64, usize)>, m: usize, at: u64, len: usize| {
            if let Some(r) = runs
                .iter_mut()
                .rev()
                .find(|(rm, rat, rlen)| *rm == m && *rat + *rlen as u64 == at)
            {
                r.2 += len;
            } else if !runs.iter().any(|(rm, rat, rlen)| {
                *rm == m && *rat <= at && at + len as u64 <= *rat + *rlen as u64
            }) {
                runs.push((m, at, len));
            }
        };
        // A row to solve is read over the columns of all its pieces.
        for p in &pieces {
            let row = (p.at - DATA_OFFSET) / geo.chunk;
            if let Some(s) = solve_rows.iter_mut().find(|s| s.0 == row) {
                let c0 = p.at - geo.member_offset(row);
                s.1 = s.1.min(c0);
                s.2 = s.2.max(c0 + p.len as u64);
            }
        }
        for p in &pieces {
            let row = (p.at - DATA_OFFSET) / geo.chunk;
            if let Some(&(srow, u0, u1)) = solve_rows.iter().find(|s| s.0 == row) {
                // The whole row over the wanted columns, from every readable member.
                let at = geo.member_offset(srow) + u0;
                for m in (0..self.slots.len()).filter(|&m| self.readable(m, srow)) {
                    add(&mut runs, m, at, (u1 - u0) as usize);
                }
                continue;
            }
            add(&mut runs, p.m, p.at, p.len);
        }
        let mut bufs: Vec<Scratch> = runs.iter().map(|r| Scratch::new(r.2)).collect();
        let mut reads: Vec<(usize, u64, &mut [u8])> = runs
            .iter()
            .zip(bufs.iter_mut())
            .map(|((m, at, _), b)| (*m, *at, b.as_mut_slice()))
            .collect();
        let got = self.read_verified_batch(&mut reads, false);
        drop(reads);
        if got.iter().any(|v| *v != Verified::Good) {
            return false;
        }
        // Where member `m`'s bytes at member offset `at` are, in the read buffers.
        let find = |m: usize, at: u64, len: usize| -> Option<&[u8]> {
            runs.iter().zip(&bufs).find_map(|((rm, rat, rlen), b)| {
                (*rm == m && *rat <= at && at + len as u64 <= *rat + *rlen as u64).then(|| {
                    let s = (at - rat) as usize;
                    &b.as_slice()[s..s + len]
                })
            })
        };
        for p in &pieces {
            if p.m != usize::MAX {
                let Some(src) = find(p.m, p.at, p.len) else {
                    return false;
                };
                buf[p.dst..p.dst + p.n].copy_from_slice(&src[p.skip..p.skip + p.n]);
                continue;
            }
            let row = (p.at - DATA_OFFSET) / geo.chunk;
            let Some(&(_, u0, u1)) = solve_rows.iter().find(|s| s.0 == row) else {
                return false;
            };
            let at = geo.member_offset(row) + u0;
            let len = (u1 - u0) as usize;
            let within = p.at - at;
            let d = ((offset + p.dst as u64) % row_bytes / geo.chunk) as usize;
            let chunks: Vec<Option<Vec<u8>>> = (0..self.slots.len())
                .map(|m| {
                    self.readable(m, row)
                        .then(|| find(m, at, len).map(<[u8]>::to_vec))
                        .flatten()
                })
                .collect();
            let Some(data) = self.solve(row, chunks) else {
                return false;
            };
            let s = within as usize + p.skip;
            buf[p.dst..p.dst + p.n].copy_from_slice(&data[d][s..s + p.n]);
        }
        true
    }

    /// Reads chunk by chunk, reconstructing around missing or lying members.
    fn read_reconstructing(&mut self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let geo = self.geo;
        let row_bytes = geo.row_bytes();
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let row = pos / row_bytes;
            let within = pos % row_bytes;
            let d = (within / geo.chunk) as usize;
            let col = within % geo.chunk;
            let len = ((geo.chunk - col) as usize).min(buf.len() - done);
            let (c0, c1) = (align_down(col), align_up(col + len as u64));
            let chunks = self.read_data_cols(row, c0..c1, d..d + 1)?;
            let skip = (col - c0) as usize;
            buf[done..done + len].copy_from_slice(&chunks[0][skip..skip + len]);
            done += len;
        }
        Ok(())
    }

    pub fn write(&mut self, offset: u64, buf: &[u8]) -> Result<()> {
        let row_bytes = self.geo.row_bytes();
        let mut plan = Plan::default();
        let mut rows = Vec::new();
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let row = pos / row_bytes;
            let within = pos % row_bytes;
            let len = ((row_bytes - within) as usize).min(buf.len() - done);
            self.plan_row(&mut plan, row, within, &buf[done..done + len])?;
            rows.push(row);
            done += len;
        }
        let ok = self.write_plan(&plan);
        match self.geo.level {
            RaidLevel::Raid0 => {
                if let Some(i) = ok.iter().position(|ok| !ok) {
                    let row = (plan.runs[i].1 - self.geo.member_offset(0)) / self.geo.chunk;
                    return Err(self.data_loss(row));
                }
            }
            RaidLevel::Raid1 | RaidLevel::Raid5 | RaidLevel::Raid6 => {
                let missing = (0..self.slots.len()).filter(|&m| !self.writable(m)).count();
                if missing > self.geo.level.tolerated_failures(self.geo.members) {
                    return Err(self.data_loss(rows[0]));
                }
            }
        }
        Ok(())
    }

    /// Adds the member writes that put `data` at byte `within` of `row`'s data to
    /// `plan`, reading what a partial update needs first.
    fn plan_row<'b>(
        &mut self,
        plan: &mut Plan<'b>,
        row: u64,
        within: u64,
        data: &'b [u8],
    ) -> Result<()> {
        let chunk = self.geo.chunk;
        let end = within + data.len() as u64;
        let (d0, d1) = ((within / chunk) as usize, ((end - 1) / chunk) as usize);
        let cols = if d0 == d1 {
            align_down(within % chunk)..align_up((end - 1) % chunk + 1)
        } else {
            0..chunk
        };
        let clen = (cols.end - cols.start) as usize;
        let off = self.geo.member_offset(row) + cols.start;
        let full_row = within == 0 && end == self.geo.row_bytes();
        let partial = |d: usize| {
            let start = d as u64 * chunk + cols.start;
            within > start || end < start + clen as u64
        };
        let need_read = match self.geo.level {
            RaidLevel::Raid0 | RaidLevel::Raid1 => partial(d0) || (d0 != d1 && partial(d1)),
            RaidLevel::Raid5 | RaidLevel::Raid6 => !full_row,
        };
        let range = match self.geo.level {
            RaidLevel::Raid0 | RaidLevel::Raid1 => d0..d1 + 1,
            RaidLevel::Raid5 | RaidLevel::Raid6 => 0..self.geo.data_members(),
        };
        if !need_read {
            // Every chunk written is covered by the new bytes: write them from the caller's
            // buffer, no copy.
            let slice = |d: usize| {
                let s = (d as u64 * chunk + cols.start - within) as usize;
                &data[s..s + clen]
            };
            match self.geo.level {
                RaidLevel::Raid0 => {
                    for d in d0..=d1 {
                        plan.push(self.geo.data_member(row, d), off, Seg::Caller(slice(d)));
                    }
                }
                RaidLevel::Raid1 => {
                    for m in 0..self.slots.len() {
                        if self.writable(m) {
                            plan.push(m, off, Seg::Caller(slice(0)));
                        }
                    }
                }
                RaidLevel::Raid5 | RaidLevel::Raid6 => {
                    let refs: Vec<&'b [u8]> = range.clone().map(slice).collect();
                    let (p, q) = parity_scratch(self.geo.level, &refs);
                    let segs = refs.into_iter().map(|r| Some(Seg::Caller(r))).collect();
                    self.push_row(plan, row, off, segs, p, q);
                }
            }
            return Ok(());
        }
        let mut chunks = match self.geo.level {
            RaidLevel::Raid5 | RaidLevel::Raid6 => {
                // Chunks the new bytes cover whole need not be read.
                let covered: Vec<bool> = range
                    .clone()
                    .map(|d| (d0..=d1).contains(&d) && !partial(d))
                    .collect();
                match self.read_uncovered(row, off, clen, &covered) {
                    Some(chunks) => chunks,
                    None => self.read_data_cols(row, cols.clone(), range.clone())?,
                }
            }
            RaidLevel::Raid0 | RaidLevel::Raid1 => {
                self.read_data_cols(row, cols.clone(), range.clone())?
            }
        };
        // Patch the new bytes in.
        for d in d0..=d1 {
            let chunk_start = d as u64 * chunk + cols.start;
            let s = within.max(chunk_start);
            let e = end.min(chunk_start + clen as u64);
            if s >= e {
                continue;
            }
            let dst = &mut chunks[d - range.start];
            dst[(s - chunk_start) as usize..(e - chunk_start) as usize]
                .copy_from_slice(&data[(s - within) as usize..(e - within) as usize]);
        }
        match self.geo.level {
            RaidLevel::Raid0 => {
                for d in d0..=d1 {
                    let seg = Seg::copy(&chunks[d - d0]);
                    plan.push(self.geo.data_member(row, d), off, seg);
                }
            }
            RaidLevel::Raid1 => {
                for m in 0..self.slots.len() {
                    if self.writable(m) {
                        plan.push(m, off, Seg::copy(&chunks[0]));
                    }
                }
            }
            RaidLevel::Raid5 | RaidLevel::Raid6 => {
                let refs: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
                let (p, q) = parity_scratch(self.geo.level, &refs);
                // Only the chunks that changed, and parity.
                let touched = refs
                    .iter()
                    .enumerate()
                    .map(|(d, c)| (d0..=d1).contains(&d).then(|| Seg::copy(c)))
                    .collect();
                self.push_row(plan, row, off, touched, p, q);
            }
        }
        Ok(())
    }

    /// The data chunks of a parity row at member offset `off`, reading only those not
    /// `covered`; `None` if one of those is not readable as it is (the caller then reads
    /// the row the general way).
    fn read_uncovered(
        &mut self,
        row: u64,
        off: u64,
        len: usize,
        covered: &[bool],
    ) -> Option<Vec<Vec<u8>>> {
        let members: Vec<usize> = (0..covered.len())
            .map(|d| self.geo.data_member(row, d))
            .collect();
        if (0..covered.len()).any(|d| !covered[d] && !self.readable(members[d], row)) {
            return None;
        }
        let mut chunks = vec![vec![0u8; len]; covered.len()];
        let mut reads: Vec<(usize, u64, &mut [u8])> = chunks
            .iter_mut()
            .enumerate()
            .filter(|(d, _)| !covered[*d])
            .map(|(d, c)| (members[d], off, c.as_mut_slice()))
            .collect();
        let got = self.read_verified_batch(&mut reads, false);
        drop(reads);
        got.iter().all(|v| *v == Verified::Good).then_some(chunks)
    }

    /// Adds a parity row's writes: its data chunks (`None` ones skipped) and parity.
    fn push_row<'b>(
        &self,
        plan: &mut Plan<'b>,
        row: u64,
        off: u64,
        data: Vec<Option<Seg<'b>>>,
        p: Option<Scratch>,
        q: Option<Scratch>,
    ) {
        for (d, seg) in data.into_iter().enumerate() {
            let m = self.geo.data_member(row, d);
            if let Some(seg) = seg.filter(|_| self.writable(m)) {
                plan.push(m, off, seg);
            }
        }
        for (member, parity) in [(self.geo.p_member(row), p), (self.geo.q_member(row), q)] {
            if let (Some(m), Some(buf)) = (member, parity) {
                if self.writable(m) {
                    plan.push(m, off, Seg::Own(buf));
                }
            }
        }
    }

    /// Rewrites the chunks (columns from `col`) of members that returned wrong bytes,
    /// from a row's solved data.
    fn heal(&mut self, row: u64, col: u64, data: &[Vec<u8>], corrupt: &[usize]) {
        if corrupt.is_empty() {
            return;
        }
        let off = self.geo.member_offset(row) + col;
        let (p, q) = self.parity(data);
        for &m in corrupt {
            let buf = match self.geo.role(row, m) {
                Role::Data(d) => data.get(d).cloned(),
                Role::P => p.clone(),
                Role::Q => q.clone(),
            };
            if let Some(buf) = buf {
                if self.write_member(m, off, &buf) {
                    tracing::info!(pool = %self.a.pool, member = m, row, "corrupt chunk rewritten from redundancy");
                }
            }
        }
    }

    /// Data chunks `want` of `row`, columns `cols` (aligned), reconstructing as needed.
    pub fn read_data_cols(
        &mut self,
        row: u64,
        cols: Range<u64>,
        want: Range<usize>,
    ) -> Result<Vec<Vec<u8>>> {
        let len = (cols.end - cols.start) as usize;
        let off = self.geo.member_offset(row) + cols.start;
        if self.geo.level == RaidLevel::Raid1 {
            let mut buf = vec![0u8; len];
            let mut corrupt = Vec::new();
            for m in 0..self.slots.len() {
                if !self.readable(m, row) {
                    continue;
                }
                match self.read_verified(m, off, &mut buf) {
                    Verified::Good => {
                        // Heal the mirrors that returned wrong bytes.
                        for bad in corrupt {
                            self.write_member(bad, off, &buf);
                        }
                        return Ok(vec![buf]);
                    }
                    Verified::Corrupt => corrupt.push(m),
                    Verified::Failed => {}
                }
            }
            return Err(self.data_loss_with(row, &corrupt));
        }
        let members: Vec<usize> = want.clone().map(|d| self.geo.data_member(row, d)).collect();
        if members.iter().all(|&m| self.readable(m, row)) {
            let mut bufs = vec![vec![0u8; len]; members.len()];
            let mut reads: Vec<(usize, u64, &mut [u8])> = members
                .iter()
                .zip(bufs.iter_mut())
                .map(|(&m, b)| (m, off, b.as_mut_slice()))
                .collect();
            let got = self.read_verified_batch(&mut reads, true);
            drop(reads);
            if got.iter().all(|v| *v == Verified::Good) {
                return Ok(bufs);
            }
            let corrupt: Vec<usize> = members
                .iter()
                .zip(&got)
                .filter(|(_, v)| **v == Verified::Corrupt)
                .map(|(m, _)| *m)
                .collect();
            let mut all = self.solve_row(row, cols, &corrupt, true)?;
            return Ok(all.drain(want).collect());
        }
        let mut all = self.solve_row(row, cols, &[], true)?;
        Ok(all.drain(want).collect())
    }

    /// Reads every readable member of a row (columns `cols`) and solves for the missing
    /// data chunks. Returns all data chunks of the row.
    pub fn reconstruct_row(&mut self, row: u64, cols: Range<u64>) -> Result<Vec<Vec<u8>>> {
        self.solve_row(row, cols, &[], false)
    }

    /// Like [`Ctx::reconstruct_row`], treating the members in `exclude` as missing too.
    pub fn reconstruct_row_without(
        &mut self,
        row: u64,
        cols: Range<u64>,
        exclude: &[usize],
    ) -> Result<Vec<Vec<u8>>> {
        self.solve_row(row, cols, exclude, false)
    }

    /// Solves a row around missing members, members in `exclude`, and members whose bytes
    /// fail their checksums; the latter (and `exclude` too if `heal_excluded`) are
    /// rewritten from the solution.
    fn solve_row(
        &mut self,
        row: u64,
        cols: Range<u64>,
        exclude: &[usize],
        heal_excluded: bool,
    ) -> Result<Vec<Vec<u8>>> {
        let len = (cols.end - cols.start) as usize;
        let off = self.geo.member_offset(row) + cols.start;
        'retry: loop {
            let members: Vec<usize> = (0..self.slots.len())
                .filter(|&m| self.readable(m, row) && !exclude.contains(&m))
                .collect();
            let mut bufs = vec![vec![0u8; len]; members.len()];
            let mut reads: Vec<(usize, u64, &mut [u8])> = members
                .iter()
                .zip(bufs.iter_mut())
                .map(|(&m, b)| (m, off, b.as_mut_slice()))
                .collect();
            let got = self.read_verified_batch(&mut reads, true);
            drop(reads);
            let mut chunks: Vec<Option<Vec<u8>>> = vec![None; self.slots.len()];
            let mut corrupt = Vec::new();
            for ((m, buf), v) in members.into_iter().zip(bufs).zip(got) {
                match v {
                    Verified::Good => chunks[m] = Some(buf),
                    Verified::Corrupt => corrupt.push(m),
                    Verified::Failed => continue 'retry,
                }
            }
            let Some(data) = self.solve(row, chunks) else {
                corrupt.extend_from_slice(exclude);
                return Err(self.data_loss_with(row, &corrupt));
            };
            if heal_excluded {
                corrupt.extend_from_slice(exclude);
            }
            self.heal(row, cols.start, &data, &corrupt);
            return Ok(data);
        }
    }

    /// The data chunks of `row` from the chunks at hand (indexed by member; `None` where
    /// missing), or `None` if too many are missing.
    pub fn solve(&self, row: u64, chunks: Vec<Option<Vec<u8>>>) -> Option<Vec<Vec<u8>>> {
        let dm = self.geo.data_members();
        let len = chunks.iter().flatten().map(Vec::len).next()?;
        let mut data: Vec<Option<Vec<u8>>> = vec![None; dm];
        let (mut p, mut q) = (None, None);
        for (m, c) in chunks.into_iter().enumerate() {
            let Some(c) = c else { continue };
            match self.geo.role(row, m) {
                Role::Data(d) => data[d] = Some(c),
                Role::P => p = Some(c),
                Role::Q => q = Some(c),
            }
        }
        let missing: Vec<usize> = (0..dm).filter(|&d| data[d].is_none()).collect();
        let mut solved = vec![vec![0u8; len]; missing.len()];
        let mut into: Vec<(usize, &mut [u8])> = missing
            .iter()
            .copied()
            .zip(solved.iter_mut().map(Vec::as_mut_slice))
            .collect();
        let have = |d: usize| data[d].as_deref();
        gf::solve_missing(dm, have, p.as_deref(), q.as_deref(), &mut into)?;
        drop(into);
        let mut solved = solved.into_iter();
        data.into_iter()
            .map(|c| c.or_else(|| solved.next()))
            .collect()
    }

    /// Computes the parity chunks of a row from its data chunks.
    pub fn parity(&self, data: &[Vec<u8>]) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
        parity(self.geo.level, data)
    }
}

/// [`parity_refs`] into pooled aligned buffers (a write's parity goes to a member as is).
fn parity_scratch(level: RaidLevel, refs: &[&[u8]]) -> (Option<Scratch>, Option<Scratch>) {
    parity_in(level, refs, Scratch::new)
}

/// Single-buffer reads as reads into one segment each.
fn one_seg<'b>(reads: &'b mut [(usize, u64, &mut [u8])]) -> Vec<(usize, u64, Vec<&'b mut [u8]>)> {
    reads
        .iter_mut()
        .map(|(m, off, buf)| (*m, *off, vec![&mut **buf]))
        .collect()
}

/// The parity chunks of a row's data chunks at `level`.
pub(crate) fn parity(level: RaidLevel, data: &[Vec<u8>]) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
    let refs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
    parity_refs(level, &refs)
}

/// [`parity`] of borrowed chunks.
pub(crate) fn parity_refs(level: RaidLevel, refs: &[&[u8]]) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
    parity_in(level, refs, |len| vec![0u8; len])
}

/// The parity chunks of `refs` at `level`, in buffers of the chunk's length from `new`
/// (whose bytes are all overwritten).
fn parity_in<B: AsMut<[u8]>>(
    level: RaidLevel,
    refs: &[&[u8]],
    new: impl Fn(usize) -> B,
) -> (Option<B>, Option<B>) {
    let len = refs.first().map_or(0, |r| r.len());
    match level {
        RaidLevel::Raid5 => {
            let mut p = new(len);
            gf::gen_p(refs, p.as_mut());
            (Some(p), None)
        }
        RaidLevel::Raid6 => {
            let (mut p, mut q) = (new(len), new(len));
            gf::gen_pq(refs, p.as_mut(), q.as_mut());
            (Some(p), Some(q))
        }
        RaidLevel::Raid0 | RaidLevel::Raid1 => (None, None),
    }
}

impl RaidArray {
    /// Takes `member` out of slot `m` if it is still the member there.
    pub(crate) fn fail_if_current(&self, m: usize, member: &Arc<Member>) {
        let mut st = self.lock();
        let current = st.slots[m]
            .member
            .as_ref()
            .is_some_and(|x| Arc::ptr_eq(x, member));
        if current {
            st.fail(m);
        }
        drop(st);
        member.mark_failed();
        self.csums.forget(member.id());
    }

    /// Takes out the members whose checksum write-back failed.
    pub(crate) fn apply_writeback_failures(&self) {
        for (id, e) in self.csums.take_failures() {
            let found = {
                let st = self.lock();
                st.slots.iter().enumerate().find_map(|(i, s)| {
                    s.member
                        .as_ref()
                        .filter(|m| m.id() == id)
                        .map(|m| (i, Arc::clone(m)))
                })
            };
            if let Some((i, member)) = found {
                tracing::warn!(member = i, error = %e, "checksum write-back failed; member taken out");
                self.fail_if_current(i, &member);
                self.lock().last_io_error = Some(e);
            }
        }
    }
}
