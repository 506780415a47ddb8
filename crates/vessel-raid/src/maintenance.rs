//! Keeping redundancy whole: resync after a crash, rebuild onto a replacement, scrub.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::array::RaidArray;
use crate::checksum::Verified;
use crate::error::{RaidError, Result};
use crate::gf;
use crate::io::Ctx;
use crate::layout::Role;
use crate::member::{AlignedBuf, Member, Scratch};
use crate::superblock::SlotState;
use crate::RaidLevel;

/// A rebuild records its checkpoint on the members after this many member bytes, or
/// after an eighth of the member, or every [`CHECKPOINT_EVERY`], whichever comes first.
const CHECKPOINT_BYTES: u64 = 256 << 20;
/// Longest time between two rebuild checkpoints.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(5);
/// Member bytes a rebuild reads from each survivor at once.
const REBUILD_SPAN: u64 = 1 << 20;

/// How to run a rebuild.
#[derive(Debug, Clone, Default)]
pub struct RebuildOptions {
    /// Upper bound on bytes rebuilt per second; `None` runs at full speed.
    pub max_bytes_per_sec: Option<u64>,
}

/// What a scrub found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScrubReport {
    /// Rows whose redundancy was verified.
    pub rows_checked: u64,
    /// Rows that could not be verified because members are missing.
    pub rows_skipped: u64,
    /// Rows where parity or mirrors disagreed.
    pub mismatches: Vec<ScrubMismatch>,
}

impl ScrubReport {
    /// True when every checked row was consistent.
    pub fn is_clean(&self) -> bool {
        self.mismatches.is_empty()
    }
}

/// One inconsistent row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrubMismatch {
    /// The row.
    pub row: u64,
    /// Array offset of the row's first byte.
    pub offset: u64,
    /// The members found to hold wrong data: those failing their block checksums, or the
    /// one RAID 6 syndromes or a mirror majority point at. Empty when nobody can tell.
    pub members: Vec<usize>,
    /// Whether the row was rewritten consistent.
    pub repaired: bool,
    /// Whether only the block checksums of `members` were wrong: their data agrees with
    /// the row's redundancy (mirrors equal, parity matching), so the checksums, not the
    /// data, are what a repair rewrites.
    pub checksums: bool,
}

/// The survivors' bytes of a span of rows, read and verified, for rebuilding one member.
pub(crate) struct SpanData {
    rows: std::ops::Range<u64>,
    sources: Vec<usize>,
    bufs: Vec<Scratch>,
}

impl RaidArray {
    /// Puts a fresh member into failed slot `index`; [`RaidArray::rebuild`] then fills it.
    pub fn replace_member(&self, index: usize, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let mut inner = self.lock();
        inner.failed_slot(index)?;
        let member = Member::open_with(path, self.member_io)?;
        let needed = inner.geo.member_bytes();
        if member.size() < needed {
            return Err(RaidError::MemberTooSmall {
                path: path.to_path_buf(),
                size: member.size(),
                needed,
            });
        }
        if let Ok(sb) = member.read_superblock()? {
            if sb.pool != inner.pool {
                return Err(RaidError::MemberInUse {
                    path: path.to_path_buf(),
                    pool: sb.pool,
                });
            }
        }
        let slot = &mut inner.slots[index];
        slot.member = Some(Arc::new(member));
        slot.state = SlotState::Rebuilding;
        slot.checkpoint = 0;
        slot.partial = false;
        // Replaced: writes reach the new member from now on; the old one's failure needs
        // no confirming any more.
        inner.unconfirmed.retain(|&u| u != index);
        inner.write_superblocks()?;
        let pool = inner.pool;
        drop(inner);
        self.write_bitmap_all()?;
        tracing::info!(pool = %pool, member = index, "replacement added; rebuild pending");
        Ok(())
    }

    /// Has `hook(slot)` called when a member fails, before any write or flush is
    /// acknowledged without it; while it returns `Err` those writes and flushes fail
    /// (`FailureUnconfirmed`) and it is asked again by the next one. The owner of a
    /// replicated volume marks the far copy out of date there (in the cluster's store), so
    /// that a copy missing acknowledged writes is never promoted, as DRBD's fencing does.
    /// Members out when it is set (assembled without them) count as failed just now.
    /// Set once.
    pub fn on_member_failed(
        &self,
        hook: impl Fn(usize) -> std::result::Result<(), String> + Send + Sync + 'static,
    ) {
        if self.failure_hook.0.set(Box::new(hook)).is_ok() {
            let mut inner = self.lock();
            let out: Vec<usize> = (0..inner.slots.len())
                .filter(|&m| inner.slots[m].state == SlotState::Failed)
                .collect();
            for m in out {
                if !inner.unconfirmed.contains(&m) {
                    inner.unconfirmed.push(m);
                }
            }
        }
    }

    /// Gives failed slot `index` back the member that was in it (a far copy reachable
    /// again, a disk that came back): [`RaidArray::rebuild`] then rewrites only the rows the
    /// write-intent bitmap marks (written while it was out, or in flight on it when it
    /// left: its own bitmap is merged in), as md's re-add with a bitmap does. The member
    /// must carry this pool's superblock for this slot, at a generation not newer than the
    /// array's. A member that left in the middle of a rebuild (its own superblock says its
    /// slot was rebuilding: a replacement's first copy, or a resync) is rebuilt whole: the
    /// bitmap does not know which rows it still lacks.
    pub fn readd_member(&self, index: usize, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let member = Member::open_with(path, self.member_io)?;
        let not_it = |why: String| RaidError::NotThisMember {
            path: path.to_path_buf(),
            index,
            why,
        };
        let sb = member
            .read_superblock()?
            .map_err(|e| not_it(format!("its superblock is unusable ({e:?})")))?;
        // What it may have written that the others did not: its own marked regions (read
        // before any lock: it may be a far member, slow to answer).
        let mut own = AlignedBuf::new(self.intents().bitmap.byte_len());
        member.read_at(crate::bitmap::BITMAP_OFFSET, own.as_mut_slice())?;
        let check = |inner: &crate::array::State| -> Result<()> {
            inner.failed_slot(index)?;
            if sb.pool != inner.pool {
                return Err(not_it(format!("it belongs to pool {}", sb.pool)));
            }
            if sb.index as usize != index {
                return Err(not_it(format!("it was member {}", sb.index)));
            }
            if sb.generation > inner.generation {
                return Err(not_it(format!(
                    "it is newer than the array (generation {} > {}): it was written without \
                     this array; assemble from it instead, or replace it",
                    sb.generation, inner.generation
                )));
            }
            if member.size() < inner.geo.member_bytes() {
                return Err(RaidError::MemberTooSmall {
                    path: path.to_path_buf(),
                    size: member.size(),
                    needed: inner.geo.member_bytes(),
                });
            }
            Ok(())
        };
        check(&self.lock())?;
        if sb.states.get(index) == Some(&SlotState::Rebuilding) {
            drop(member);
            tracing::info!(
                member = index,
                "re-added member left in the middle of a rebuild: rebuilt whole"
            );
            return self.replace_member(index, path);
        }
        // The bitmap's lock is never taken under the member table's (writes take them the
        // other way round).
        self.intents().bitmap.merge(own.as_slice());
        let mut inner = self.lock();
        check(&inner)?;
        let slot = &mut inner.slots[index];
        slot.member = Some(Arc::new(member));
        slot.state = SlotState::Rebuilding;
        slot.checkpoint = 0;
        slot.partial = true;
        inner.write_superblocks()?;
        let pool = inner.pool;
        drop(inner);
        self.write_bitmap_all()?;
        let marked: u64 = self
            .intents()
            .bitmap
            .marked_rows(self.geo.rows())
            .iter()
            .map(|r| r.end - r.start)
            .sum();
        tracing::info!(pool = %pool, member = index, rows = marked, "member re-added; resync of the marked rows pending");
        Ok(())
    }

    /// Rebuilds every member in the `Rebuilding` state, resuming from its checkpoint.
    /// `progress` is called with (bytes done, bytes total) after each row. The array
    /// stays usable between rows.
    pub fn rebuild(&self, progress: impl FnMut(u64, u64)) -> Result<()> {
        self.rebuild_with(&RebuildOptions::default(), progress)
    }

    /// [`RaidArray::rebuild`] with options (a rate limit, so a rebuild leaves I/O capacity
    /// to the instances using the pool).
    pub fn rebuild_with(
        &self,
        options: &RebuildOptions,
        mut progress: impl FnMut(u64, u64),
    ) -> Result<()> {
        let started = Instant::now();
        let mut written = 0u64;
        let (rebuilding, total, chunk) = {
            let inner = self.lock();
            let list: Vec<usize> = (0..inner.slots.len())
                .filter(|&m| inner.slots[m].state == SlotState::Rebuilding)
                .collect();
            let total = list.len() as u64 * inner.geo.data_size;
            (list, total, inner.geo.chunk)
        };
        let rows_per_step = (REBUILD_SPAN / chunk).max(1);
        // Unthrottled, the next span's survivors are read while this span is written
        // (its rows stay locked from that read until they are written); throttled, a
        // rebuild holds no rows while it waits.
        let read_ahead = options.max_bytes_per_sec.is_none_or(|r| r == 0);
        let mut done_before = 0;
        for m in rebuilding {
            let mut since_checkpoint = 0u64;
            let mut last_checkpoint = Instant::now();
            let mut ahead: Option<(SpanData, crate::io::RowGuard<'_>)> = None;
            loop {
                let row = {
                    let inner = self.lock();
                    if inner.slots[m].state != SlotState::Rebuilding {
                        drop(inner);
                        let err = self.lock().last_io_error.take();
                        return Err(err.unwrap_or(RaidError::MemberNotFailed {
                            index: m,
                            state: self.lock().slots[m].state.name(),
                        }));
                    }
                    inner.slots[m].checkpoint / chunk
                };
                if row >= self.geo.rows() {
                    self.csums.write_back();
                    let mut inner = self.lock();
                    if let Some(member) = &inner.slots[m].member {
                        member.sync()?;
                    }
                    inner.slots[m].state = SlotState::Active;
                    inner.slots[m].checkpoint = 0;
                    inner.write_superblocks()?;
                    tracing::info!(pool = %inner.pool, member = m, "rebuild finished");
                    break;
                }
                let rows = row..(row + rows_per_step).min(self.geo.rows());
                let step = (rows.end - rows.start) * chunk;
                // A re-added member holds every row the bitmap does not mark.
                let partial = self.lock().slots[m].partial;
                if partial && !self.intents().bitmap.marks_any(rows.clone()) {
                    ahead = None;
                    let mut inner = self.lock();
                    if inner.slots[m].state == SlotState::Rebuilding {
                        inner.slots[m].checkpoint = rows.end * chunk;
                    }
                    drop(inner);
                    progress(done_before + rows.end * chunk, total);
                    continue;
                }
                {
                    let (have, _rows) = match ahead.take() {
                        Some((data, guard)) if data.rows == rows => (Some(data), guard),
                        _ => (None, self.rows.lock(rows.clone())),
                    };
                    let next = rows.end..(rows.end + rows_per_step).min(self.geo.rows());
                    let next_guard =
                        (read_ahead && !next.is_empty()).then(|| self.rows.lock(next.clone()));
                    let mut ctx = Ctx::new(self);
                    let res = if next_guard.is_some() {
                        ctx.rebuild_step(m, rows.clone(), have, next).map(|got| {
                            if let (Some(data), Some(guard)) = (got, next_guard) {
                                ahead = Some((data, guard));
                            }
                        })
                    } else {
                        ctx.rebuild_rows(m, rows.clone())
                    };
                    if res.is_ok() {
                        let mut inner = self.lock();
                        if inner.slots[m].state == SlotState::Rebuilding {
                            inner.slots[m].checkpoint = rows.end * chunk;
                        }
                    }
                    let err = ctx.error.take();
                    ctx.finish()?;
                    if let Err(e) = res {
                        return Err(err.unwrap_or(e));
                    }
                }
                since_checkpoint += step;
                if since_checkpoint >= CHECKPOINT_BYTES.min(self.geo.data_size / 8)
                    || last_checkpoint.elapsed() >= CHECKPOINT_EVERY
                {
                    since_checkpoint = 0;
                    last_checkpoint = Instant::now();
                    // The rebuilt rows' checksums and data first, then the checkpoint.
                    self.csums.write_back();
                    let mut inner = self.lock();
                    if let Some(member) = inner.slots[m].member.clone() {
                        member.sync()?;
                    }
                    inner.write_superblocks()?;
                }
                let done = done_before + rows.end * chunk;
                progress(done, total);
                written += step;
                if let Some(rate) = options.max_bytes_per_sec.filter(|r| *r > 0) {
                    let due = Duration::from_secs_f64(written as f64 / rate as f64);
                    if let Some(wait) = due.checked_sub(started.elapsed()) {
                        std::thread::sleep(wait);
                    }
                }
            }
            done_before += self.geo.data_size;
        }
        Ok(())
    }

    /// Verifies every row's parity or mirrors. With `repair`, rewrites inconsistent rows:
    /// the member RAID 6 syndromes or a mirror majority point at is corrected; otherwise
    /// (RAID 5, two-way mirrors) parity is recomputed from data, as md's repair does.
    /// Checksums are compared as the members hold them (the in-memory copies are dropped
    /// first), so damage to the checksum area is found too.
    pub fn scrub(&self, repair: bool) -> Result<ScrubReport> {
        let mut report = ScrubReport::default();
        self.csums.drop_all();
        for row in 0..self.geo.rows() {
            let _row = self.rows.lock(row..row + 1);
            let mut inner = Ctx::new(self);
            if (0..inner.slots.len()).any(|m| !inner.readable(m, row)) {
                report.rows_skipped += 1;
                continue;
            }
            report.rows_checked += 1;
            let checked = inner.check_row(row);
            if let Some(mut mismatch) = checked? {
                let tolerated = inner.geo.level.tolerated_failures(inner.geo.members);
                if repair && mismatch.checksums {
                    self.begin_write(row..row + 1)?;
                    inner.refresh_checksums(row);
                    self.end_write(row..row + 1);
                    mismatch.repaired = true;
                } else if repair && mismatch.members.len() <= tolerated {
                    self.begin_write(row..row + 1)?;
                    let res = inner.repair_row(row, &mismatch.members);
                    self.end_write(row..row + 1);
                    res?;
                    mismatch.repaired = inner.geo.level != RaidLevel::Raid0;
                }
                tracing::warn!(pool = %self.pool, row, members = ?mismatch.members, repaired = mismatch.repaired, "scrub mismatch");
                report.mismatches.push(mismatch);
            }
            inner.finish()?;
        }
        if repair && !report.mismatches.is_empty() {
            self.flush()?;
        }
        Ok(report)
    }
}

impl Ctx<'_> {
    /// Reads the whole of `row` from every member.
    fn read_full_row(&mut self, row: u64) -> Result<Vec<Vec<u8>>> {
        let len = self.geo.chunk as usize;
        let off = self.geo.member_offset(row);
        let mut out = vec![vec![0u8; len]; self.slots.len()];
        let mut reads: Vec<(usize, u64, &mut [u8])> = out
            .iter_mut()
            .enumerate()
            .map(|(m, b)| (m, off, b.as_mut_slice()))
            .collect();
        let ok = self.read_batch(&mut reads);
        drop(reads);
        if let Some(m) = ok.iter().position(|ok| !ok) {
            return Err(self.error.take().unwrap_or(RaidError::DataLoss {
                offset: row * self.geo.row_bytes(),
                missing: vec![m],
                level: self.geo.level,
            }));
        }
        Ok(out)
    }

    /// Compares a fully readable row against its redundancy.
    fn check_row(&mut self, row: u64) -> Result<Option<ScrubMismatch>> {
        let all = self.read_full_row(row)?;
        let off = self.geo.member_offset(row);
        let mut liars = Vec::new();
        for (m, chunk) in all.iter().enumerate() {
            match self.checksums_match(m, off, chunk) {
                Some(true) => {}
                Some(false) => liars.push(m),
                None => return Err(self.data_loss_for(row)),
            }
        }
        let mismatch = |member: Option<usize>| ScrubMismatch {
            row,
            offset: row * self.geo.row_bytes(),
            members: member.into_iter().collect(),
            repaired: false,
            checksums: false,
        };
        if !liars.is_empty() {
            let mut m = mismatch(None);
            m.members = liars;
            // Data that agrees with its redundancy is right: its checksums are what is
            // damaged. Without redundancy (RAID 0) nobody can tell.
            m.checksums = self.redundancy_agrees(row, &all) == Some(true);
            return Ok(Some(m));
        }
        match self.geo.level {
            RaidLevel::Raid0 => Ok(None),
            RaidLevel::Raid1 => {
                if all.iter().all(|c| *c == all[0]) {
                    return Ok(None);
                }
                // With three or more copies, one that differs from all the others, which
                // agree with each other, is the liar.
                let liar = (0..all.len()).find(|&i| {
                    let mut others = (0..all.len()).filter(|&j| j != i).map(|j| &all[j]);
                    let first = others.next();
                    first.is_some_and(|f| *f != all[i] && others.all(|o| o == f))
                });
                Ok(Some(mismatch(liar.filter(|_| all.len() > 2))))
            }
            RaidLevel::Raid5 | RaidLevel::Raid6 => {
                let dm = self.geo.data_members();
                let data: Vec<Vec<u8>> = (0..dm)
                    .map(|d| all[self.geo.data_member(row, d)].clone())
                    .collect();
                let (p, q) = self.parity(&data);
                let pm = self.geo.p_member(row).unwrap_or(0);
                let p_bad = p.as_ref().is_some_and(|p| *p != all[pm]);
                let q_bad = match (self.geo.q_member(row), &q) {
                    (Some(qm), Some(q)) => *q != all[qm],
                    _ => false,
                };
                if !p_bad && !q_bad {
                    return Ok(None);
                }
                if self.geo.level == RaidLevel::Raid5 {
                    return Ok(Some(mismatch(None)));
                }
                let qm = self.geo.q_member(row).unwrap_or(0);
                let liar = match (p_bad, q_bad) {
                    (true, false) => Some(pm),
                    (false, true) => Some(qm),
                    _ => locate_bad_data(
                        &all[pm],
                        p.as_deref().unwrap_or(&[]),
                        &all[qm],
                        q.as_deref().unwrap_or(&[]),
                        dm,
                    )
                    .map(|d| self.geo.data_member(row, d)),
                };
                Ok(Some(mismatch(liar)))
            }
        }
    }

    /// Whether a row's chunks as read agree with its redundancy: mirrors equal, parity
    /// matching the data. `None` for RAID 0, which has none.
    fn redundancy_agrees(&self, row: u64, all: &[Vec<u8>]) -> Option<bool> {
        match self.geo.level {
            RaidLevel::Raid0 => None,
            RaidLevel::Raid1 => Some(all.iter().all(|c| *c == all[0])),
            RaidLevel::Raid5 | RaidLevel::Raid6 => {
                let data: Vec<Vec<u8>> = (0..self.geo.data_members())
                    .map(|d| all[self.geo.data_member(row, d)].clone())
                    .collect();
                let (p, q) = self.parity(&data);
                let p_ok = match (self.geo.p_member(row), &p) {
                    (Some(pm), Some(p)) => *p == all[pm],
                    _ => true,
                };
                let q_ok = match (self.geo.q_member(row), &q) {
                    (Some(qm), Some(q)) => *q == all[qm],
                    _ => true,
                };
                Some(p_ok && q_ok)
            }
        }
    }

    /// Rewrites a row consistent, trusting everything but `liars`.
    fn repair_row(&mut self, row: u64, liars: &[usize]) -> Result<()> {
        let chunk = self.geo.chunk;
        let off = self.geo.member_offset(row);
        match self.geo.level {
            RaidLevel::Raid0 => Ok(()),
            RaidLevel::Raid1 => {
                let good = (0..self.slots.len())
                    .find(|m| !liars.contains(m))
                    .unwrap_or(0);
                let mut buf = vec![0u8; chunk as usize];
                if !self.read_member(good, off, &mut buf) {
                    return Err(self.data_loss_for(row));
                }
                for m in 0..self.slots.len() {
                    if m != good {
                        self.write_member(m, off, &buf);
                    }
                }
                Ok(())
            }
            RaidLevel::Raid5 | RaidLevel::Raid6 => {
                // Lying data chunks are rebuilt from the others; parity is then recomputed.
                let data = self.reconstruct_row_without(row, 0..chunk, liars)?;
                for &m in liars {
                    if let Role::Data(d) = self.geo.role(row, m) {
                        self.write_member(m, off, &data[d]);
                    }
                }
                let (p, q) = self.parity(&data);
                for (member, parity) in [(self.geo.p_member(row), p), (self.geo.q_member(row), q)] {
                    if let (Some(m), Some(buf)) = (member, parity) {
                        self.write_member(m, off, &buf);
                    }
                }
                Ok(())
            }
        }
    }

    /// Rewrites the block checksums of every member's chunk of `row` from its contents.
    fn refresh_checksums(&mut self, row: u64) {
        let off = self.geo.member_offset(row);
        for m in 0..self.slots.len() {
            let mut buf = vec![0u8; self.geo.chunk as usize];
            if self.readable(m, row) && self.read_member(m, off, &mut buf) {
                if let Some(member) = self.slots[m].member.clone() {
                    if let Err(e) = self.a.csums.update(&member, off, &buf) {
                        self.fail(m, e);
                    }
                }
            }
        }
    }

    fn data_loss_for(&self, row: u64) -> RaidError {
        RaidError::DataLoss {
            offset: row * self.geo.row_bytes(),
            missing: (0..self.slots.len())
                .filter(|&m| !self.readable(m, row))
                .collect(),
            level: self.geo.level,
        }
    }

    /// One step of a rebuild with read-ahead: member `m`'s chunks of `rows` from the
    /// survivors' bytes (`have`, read by the previous step, or read now), written in the
    /// same batch as the survivors of `next` are read. Returns those, verified, or `None`
    /// (the next step reads them itself). Row by row where the span way fails.
    fn rebuild_step(
        &mut self,
        m: usize,
        rows: std::ops::Range<u64>,
        have: Option<SpanData>,
        next: std::ops::Range<u64>,
    ) -> Result<Option<SpanData>> {
        let data = match have {
            Some(d) => Some(d),
            None => self.read_span(m, rows.clone())?,
        };
        let Some(out) = data.as_ref().and_then(|d| self.compute_span(m, d)) else {
            self.rebuild_rows(m, rows.clone())?;
            return Ok(None);
        };
        let off = self.geo.member_offset(rows.start);
        let (sources, mut bufs) = self.span_buffers(m, next.clone())?;
        let next_off = self.geo.member_offset(next.start);
        let mut reads: Vec<(usize, u64, &mut [u8])> = sources
            .iter()
            .zip(bufs.iter_mut())
            .map(|(&s, b)| (s, next_off, b.as_mut_slice()))
            .collect();
        let (wok, got) = self.write_read_batch(&[(m, off, out.as_slice())], &mut reads);
        drop(reads);
        if !wok[0] {
            return Err(self
                .error
                .take()
                .unwrap_or_else(|| self.data_loss_for(rows.start)));
        }
        let good = !sources.is_empty() && got.iter().all(|v| *v == Verified::Good);
        Ok(good.then_some(SpanData {
            rows: next,
            sources,
            bufs,
        }))
    }

    /// The survivors to read for rebuilding `m` over `rows`, with buffers for them.
    fn span_buffers(
        &self,
        m: usize,
        rows: std::ops::Range<u64>,
    ) -> Result<(Vec<usize>, Vec<Scratch>)> {
        let span = (rows.end - rows.start) as usize * self.geo.chunk as usize;
        let last = rows.end - 1;
        let sources: Vec<usize> = match self.geo.level {
            RaidLevel::Raid0 => return Err(self.data_loss_for(rows.start)),
            RaidLevel::Raid1 => (0..self.slots.len())
                .filter(|&s| s != m && self.readable(s, last))
                .take(1)
                .collect(),
            RaidLevel::Raid5 | RaidLevel::Raid6 => (0..self.slots.len())
                .filter(|&s| s != m && self.readable(s, last))
                .collect(),
        };
        let bufs = sources.iter().map(|_| Scratch::new(span)).collect();
        Ok((sources, bufs))
    }

    /// The survivors' bytes of `rows`, read and verified; `None` if that fails.
    fn read_span(&mut self, m: usize, rows: std::ops::Range<u64>) -> Result<Option<SpanData>> {
        let (sources, mut bufs) = self.span_buffers(m, rows.clone())?;
        if sources.is_empty() {
            return Ok(None);
        }
        let off = self.geo.member_offset(rows.start);
        let mut reads: Vec<(usize, u64, &mut [u8])> = sources
            .iter()
            .zip(bufs.iter_mut())
            .map(|(&s, b)| (s, off, b.as_mut_slice()))
            .collect();
        let got = self.read_verified_batch(&mut reads, false);
        drop(reads);
        Ok(got
            .iter()
            .all(|v| *v == Verified::Good)
            .then_some(SpanData {
                rows,
                sources,
                bufs,
            }))
    }

    /// Member `m`'s chunks over a span, from the survivors' bytes; `None` if the span
    /// cannot be solved (the caller goes row by row).
    fn compute_span(&self, m: usize, d: &SpanData) -> Option<Scratch> {
        let chunk = self.geo.chunk as usize;
        let span = (d.rows.end - d.rows.start) as usize * chunk;
        let mut out = Scratch::new(span);
        if self.geo.level == RaidLevel::Raid1 {
            out.as_mut_slice()
                .copy_from_slice(d.bufs.first()?.as_slice());
            return Some(out);
        }
        let missing_others = (0..self.slots.len()).any(|s| s != m && !d.sources.contains(&s));
        if self.geo.level == RaidLevel::Raid5 && !missing_others {
            // Whatever the member held in a row, data or parity, is the xor of the
            // others' chunks of that row; so is the whole span.
            out.as_mut_slice()
                .copy_from_slice(d.bufs.first()?.as_slice());
            for b in &d.bufs[1..] {
                gf::xor_into(out.as_mut_slice(), b.as_slice());
            }
            return Some(out);
        }
        if self.geo.level == RaidLevel::Raid6 && !missing_others {
            // Every other member read: a data chunk or P is the xor of the row's chunks
            // but Q's; Q is computed from the data chunks. No solving, no copies per row.
            let of = |s: usize| d.sources.iter().position(|&x| x == s);
            for (i, row) in d.rows.clone().enumerate() {
                let at = i * chunk;
                let chunk_of = |s: usize| Some(&d.bufs[of(s)?].as_slice()[at..at + chunk]);
                let dst = &mut out.as_mut_slice()[at..at + chunk];
                if self.geo.role(row, m) == Role::Q {
                    let data: Vec<&[u8]> = (0..self.geo.data_members())
                        .map(|x| chunk_of(self.geo.data_member(row, x)))
                        .collect::<Option<_>>()?;
                    let mut p = Scratch::new(chunk);
                    gf::gen_pq(&data, p.as_mut_slice(), dst);
                    continue;
                }
                let q = self.geo.q_member(row);
                let mut first = true;
                for s in (0..self.slots.len()).filter(|&s| s != m && Some(s) != q) {
                    let src = chunk_of(s)?;
                    if first {
                        dst.copy_from_slice(src);
                        first = false;
                    } else {
                        gf::xor_into(dst, src);
                    }
                }
            }
            return Some(out);
        }
        for (i, row) in d.rows.clone().enumerate() {
            let at = i * chunk;
            let mut chunks: Vec<Option<Vec<u8>>> = vec![None; self.slots.len()];
            for (s, b) in d.sources.iter().zip(&d.bufs) {
                chunks[*s] = Some(b.as_slice()[at..at + chunk].to_vec());
            }
            let data = self.solve(row, chunks)?;
            // Parity is computed only for a row where the member holds it.
            let mine = match self.geo.role(row, m) {
                Role::Data(x) => data.into_iter().nth(x),
                Role::P => {
                    let refs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
                    let mut p = vec![0u8; chunk];
                    gf::gen_p(&refs, &mut p);
                    Some(p)
                }
                Role::Q => self.parity(&data).1,
            }?;
            out.as_mut_slice()[at..at + chunk].copy_from_slice(&mine);
        }
        Some(out)
    }

    /// Rebuilds member `m`'s chunks of `rows` from the others: one large read per
    /// survivor, all at once, and one write; row by row where that fails.
    fn rebuild_rows(&mut self, m: usize, rows: std::ops::Range<u64>) -> Result<()> {
        if self.rebuild_span(m, rows.clone())? {
            return Ok(());
        }
        for row in rows {
            self.rebuild_row(m, row)?;
        }
        Ok(())
    }

    /// The fast rebuild of `rows`: `false` (nothing written) if a survivor is not
    /// readable over all of them, fails, or returns bytes that fail their checksums.
    fn rebuild_span(&mut self, m: usize, rows: std::ops::Range<u64>) -> Result<bool> {
        let Some(data) = self.read_span(m, rows.clone())? else {
            return Ok(false);
        };
        let Some(out) = self.compute_span(m, &data) else {
            return Ok(false);
        };
        let off = self.geo.member_offset(rows.start);
        self.write_rebuilt(m, off, out.as_slice(), rows.start)
    }

    fn write_rebuilt(&mut self, m: usize, off: u64, buf: &[u8], row: u64) -> Result<bool> {
        if !self.write_member(m, off, buf) {
            return Err(self.error.take().unwrap_or_else(|| self.data_loss_for(row)));
        }
        Ok(true)
    }

    /// Rebuilds member `m`'s chunk of `row` from the others.
    fn rebuild_row(&mut self, m: usize, row: u64) -> Result<()> {
        let chunk = self.geo.chunk;
        let off = self.geo.member_offset(row);
        let buf = match (self.geo.level, self.geo.role(row, m)) {
            (RaidLevel::Raid0, _) => return Err(self.data_loss_for(row)),
            (RaidLevel::Raid1, _) => self.read_data_cols(row, 0..chunk, 0..1)?.remove(0),
            (_, Role::Data(d)) => self.reconstruct_row(row, 0..chunk)?.swap_remove(d),
            (_, role) => {
                let data = self.read_data_cols(row, 0..chunk, 0..self.geo.data_members())?;
                let (p, q) = self.parity(&data);
                let parity = if role == Role::P { p } else { q };
                parity.unwrap_or_default()
            }
        };
        if !self.write_member(m, off, &buf) {
            return Err(self.error.take().unwrap_or_else(|| self.data_loss_for(row)));
        }
        Ok(())
    }

    /// Makes the rows of every marked bitmap region consistent again (after a crash or on
    /// creation), then clears the bitmap.
    pub fn resync_marked(&mut self) -> Result<()> {
        let rows = self.geo.rows();
        let ranges = self.a.intents().bitmap.marked_rows(rows);
        let whole = (0..self.slots.len()).all(|m| self.writable(m));
        if !whole && self.geo.level != RaidLevel::Raid0 {
            tracing::warn!(pool = %self.a.pool, "dirty regions on a degraded array cannot be resynced; parity of interrupted writes may be stale");
        }
        for range in ranges.iter().cloned() {
            for row in range {
                // An interrupted write may have reached the data but not its checksum.
                self.refresh_checksums(row);
            }
        }
        if self.geo.level != RaidLevel::Raid0 {
            for range in ranges {
                for row in range {
                    if (0..self.slots.len()).all(|m| self.readable(m, row)) {
                        self.repair_row(row, &[])?;
                    }
                }
            }
        }
        self.finish()?;
        self.a.flush_with(true)
    }
}

/// RAID 6: given stored and computed P and Q of a row where both disagree, finds the one
/// data chunk `z` that explains both (`Qdelta = g^z · Pdelta` at every differing byte).
fn locate_bad_data(p: &[u8], p_calc: &[u8], q: &[u8], q_calc: &[u8], dm: usize) -> Option<usize> {
    let mut found = None;
    for i in 0..p.len() {
        let pd = p[i] ^ p_calc[i];
        let qd = q[i] ^ q_calc[i];
        match (pd, qd) {
            (0, 0) => continue,
            (0, _) | (_, 0) => return None,
            _ => {}
        }
        let ratio = gf::mul(qd, gf::inv(pd));
        let z = (0..dm).find(|&z| gf::pow2(z) == ratio)?;
        if found.is_some_and(|f| f != z) {
            return None;
        }
        found = Some(z);
    }
    found
}
