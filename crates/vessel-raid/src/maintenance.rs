//! Keeping redundancy whole: resync after a crash, rebuild onto a replacement, scrub.

use std::path::Path;
use std::sync::Arc;

use crate::array::RaidArray;
use crate::error::{RaidError, Result};
use crate::gf;
use crate::io::Ctx;
use crate::layout::Role;
use crate::member::{AlignedBuf, Member};
use crate::superblock::SlotState;
use crate::RaidLevel;

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
            let mut inner = Ctx::for_pass(self);
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

    pub(crate) fn data_loss_for(&self, row: u64) -> RaidError {
        RaidError::DataLoss {
            offset: row * self.geo.row_bytes(),
            missing: (0..self.slots.len())
                .filter(|&m| !self.readable(m, row))
                .collect(),
            level: self.geo.level,
        }
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
