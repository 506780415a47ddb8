//! Per-block checksums: one CRC32 (IEEE) per 4 KiB of every member's data area, kept in
//! the checksum area behind the data. Checked on every read and by scrub, so that a member
//! returning wrong bytes without an I/O error is read around and repaired from the others,
//! even where parity alone cannot say who lies (RAID 5, two mirrors).
//!
//! The checksum area is cached, and written back rather than after every member write:
//! updated blocks are written at the next flush (before the members are synced and before
//! any write-intent bit is cleared) or when the cache is full. Until then the region's
//! write-intent bit is set, so after a crash assembly recomputes the checksums of exactly
//! the rows whose checksums may be stale (see `resync_marked`); a flushed write's checksum
//! is always on disk. One member write therefore costs one member I/O, as in md.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::{RaidError, Result};
use crate::layout::{Geometry, CSUM_BLOCK, DATA_OFFSET};
use crate::member::Member;
use crate::uring::{self, Req};

/// Checksum blocks kept in memory (4 KiB each, covering 4 MiB of member data each).
const CACHE_BLOCKS: usize = 4096;

/// Outcome of a verified member read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verified {
    /// The bytes match their checksums.
    Good,
    /// The read failed; the member has been failed.
    Failed,
    /// The bytes were read but do not match their checksums.
    Corrupt,
}

/// Checksums of consecutive 4 KiB blocks of `buf`.
pub fn block_sums(buf: &[u8]) -> Vec<u32> {
    buf.chunks(CSUM_BLOCK as usize)
        .map(crc32fast::hash)
        .collect()
}

/// [`block_sums`] of segments that follow one another (a vectored I/O's).
pub fn seg_sums(segs: &[&[u8]]) -> Vec<u32> {
    let block = CSUM_BLOCK as usize;
    if segs
        .iter()
        .rev()
        .skip(1)
        .all(|s| s.len().is_multiple_of(block))
    {
        return segs.iter().flat_map(|s| block_sums(s)).collect();
    }
    block_sums(&segs.concat())
}

/// The `n` checksums stored from byte `skip` of the checksum area at `at` on, split by the
/// cache block they fall in: (block offset, byte in the block, indices of the checksums).
/// One cache lookup per block, not per checksum.
fn block_runs(
    at: u64,
    skip: usize,
    n: usize,
) -> impl Iterator<Item = (u64, usize, std::ops::Range<usize>)> {
    let block = CSUM_BLOCK as usize;
    let mut i = 0;
    std::iter::from_fn(move || {
        if i >= n {
            return None;
        }
        let pos = skip + i * 4;
        let o = pos % block;
        let take = ((block - o) / 4).min(n - i);
        let run = i..i + take;
        i += take;
        Some((at + (pos / block * block) as u64, o, run))
    })
}

#[derive(Debug)]
struct Block {
    member: Arc<Member>,
    data: Box<[u8]>,
    dirty: bool,
}

#[derive(Debug, Default)]
struct Cache {
    /// By (member id, member offset of the block).
    blocks: HashMap<(u64, u64), Block>,
    /// Bumped whenever blocks leave the cache, so a block read from disk meanwhile is not
    /// taken for current.
    epoch: u64,
}

/// The checksum areas of all members, cached with write-back.
#[derive(Debug)]
pub(crate) struct CsumCache {
    geo: Geometry,
    cache: Mutex<Cache>,
    /// Write-backs that failed, by member id, for the next operation to fail the member.
    failed: Mutex<Vec<(u64, RaidError)>>,
    any_failed: AtomicBool,
}

impl CsumCache {
    pub fn new(geo: Geometry) -> Self {
        CsumCache {
            geo,
            cache: Mutex::new(Cache::default()),
            failed: Mutex::new(Vec::new()),
            any_failed: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The member byte range of the checksum area covering data at member offset `off`
    /// for `len` bytes, widened to whole blocks: (start, length, skip to first sum).
    fn span(&self, off: u64, len: usize) -> (u64, usize, usize) {
        let first = (off - DATA_OFFSET) / CSUM_BLOCK;
        let count = (len as u64).div_ceil(CSUM_BLOCK);
        let byte0 = first * 4;
        let byte1 = (first + count) * 4;
        let start = byte0 / CSUM_BLOCK * CSUM_BLOCK;
        let end = byte1.div_ceil(CSUM_BLOCK) * CSUM_BLOCK;
        (
            self.geo.csum_offset() + start,
            (end - start) as usize,
            (byte0 - start) as usize,
        )
    }

    /// The cache, with every block of `at..at + len` of `member` in it; blocks not in it
    /// yet are read from `member`, or past the host's page cache if `past_cache`
    /// ([`Member::reader`]).
    fn with_blocks(
        &self,
        member: &Arc<Member>,
        at: u64,
        len: usize,
        past_cache: bool,
    ) -> Result<MutexGuard<'_, Cache>> {
        let key = |b: u64| (member.id(), b);
        loop {
            let mut cache = self.lock();
            let missing: Vec<u64> = (at..at + len as u64)
                .step_by(CSUM_BLOCK as usize)
                .filter(|b| !cache.blocks.contains_key(&key(*b)))
                .collect();
            let (Some(&first), Some(&last)) = (missing.first(), missing.last()) else {
                return Ok(cache);
            };
            if cache.blocks.len() + missing.len() > CACHE_BLOCKS {
                self.write_back_locked(&mut cache);
                cache.blocks.clear();
                cache.epoch += 1;
            }
            let epoch = cache.epoch;
            drop(cache);
            let span = (last + CSUM_BLOCK - first) as usize;
            let mut buf = crate::member::AlignedBuf::new(span);
            member
                .reader(past_cache)
                .read_at(first, buf.as_mut_slice())?;
            let mut cache = self.lock();
            if cache.epoch != epoch {
                continue;
            }
            if !member.is_failed() {
                for (i, b) in buf.as_slice().chunks(CSUM_BLOCK as usize).enumerate() {
                    let at = first + i as u64 * CSUM_BLOCK;
                    cache.blocks.entry(key(at)).or_insert_with(|| Block {
                        member: Arc::clone(member),
                        data: b.into(),
                        dirty: false,
                    });
                }
            }
            drop(cache);
        }
    }

    /// Whether the `len` bytes read from `member` at `off`, whose checksums are `sums`,
    /// match the recorded ones (those not cached yet read past the host's page cache if
    /// `past_cache`: a scrub's or a rebuild's check). An error when those cannot be read.
    pub fn matches_sums(
        &self,
        member: &Arc<Member>,
        off: u64,
        len: usize,
        sums: &[u32],
        past_cache: bool,
    ) -> Result<bool> {
        let (at, len, skip) = self.span(off, len);
        let cache = self.with_blocks(member, at, len, past_cache)?;
        Ok(block_runs(at, skip, sums.len()).all(|(block, o, run)| {
            cache.blocks.get(&(member.id(), block)).is_some_and(|b| {
                b.data[o..o + run.len() * 4]
                    .chunks_exact(4)
                    .zip(&sums[run])
                    .all(|(rec, sum)| *rec == sum.to_le_bytes())
            })
        }))
    }

    /// Records the checksums of `buf`, just written to `member` at `off` (written back
    /// later). An error when the checksum area cannot be read.
    pub fn update(&self, member: &Arc<Member>, off: u64, buf: &[u8]) -> Result<()> {
        self.update_sums(member, off, buf.len(), &block_sums(buf))
    }

    /// [`CsumCache::update`] with the checksums of the `len` bytes written already
    /// computed.
    pub fn update_sums(
        &self,
        member: &Arc<Member>,
        off: u64,
        len: usize,
        sums: &[u32],
    ) -> Result<()> {
        let (at, len, skip) = self.span(off, len);
        let mut cache = self.with_blocks(member, at, len, false)?;
        if member.is_failed() {
            return Ok(());
        }
        for (block, o, run) in block_runs(at, skip, sums.len()) {
            if let Some(b) = cache.blocks.get_mut(&(member.id(), block)) {
                let dst = b.data[o..o + run.len() * 4].chunks_exact_mut(4);
                for (rec, sum) in dst.zip(&sums[run]) {
                    rec.copy_from_slice(&sum.to_le_bytes());
                }
                b.dirty = true;
            }
        }
        Ok(())
    }

    /// Writes every updated block to its member (in parallel, contiguous blocks as one
    /// write). Members whose write fails are reported by [`CsumCache::take_failures`].
    pub fn write_back(&self) {
        let mut cache = self.lock();
        self.write_back_locked(&mut cache);
    }

    fn write_back_locked(&self, cache: &mut Cache) {
        let mut dirty: Vec<(u64, u64)> = cache
            .blocks
            .iter()
            .filter(|(_, b)| b.dirty && !b.member.is_failed())
            .map(|(k, _)| *k)
            .collect();
        if dirty.is_empty() {
            return;
        }
        dirty.sort_unstable();
        // Runs of consecutive blocks of one member.
        let mut runs: Vec<(Arc<Member>, u64, Vec<u8>)> = Vec::new();
        for (id, at) in dirty {
            let b = &cache.blocks[&(id, at)];
            match runs.last_mut() {
                Some((m, start, buf))
                    if m.id() == id && *start + buf.len() as u64 == at && buf.len() < 1 << 20 =>
                {
                    buf.extend_from_slice(&b.data);
                }
                _ => runs.push((Arc::clone(&b.member), at, b.data.to_vec())),
            }
        }
        let mut reqs: Vec<Req<'_>> = runs
            .iter()
            .map(|(m, at, buf)| Req::write(m, *at, buf))
            .collect();
        let results = uring::run(&mut reqs);
        drop(reqs);
        let mut failed = Vec::new();
        for ((m, at, buf), res) in runs.iter().zip(results) {
            match res {
                Ok(()) => {
                    for i in 0..buf.len() as u64 / CSUM_BLOCK {
                        if let Some(b) = cache.blocks.get_mut(&(m.id(), at + i * CSUM_BLOCK)) {
                            b.dirty = false;
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(member = %m.path().display(), error = %e, "checksum write failed; member taken out");
                    failed.push((m.id(), e));
                }
            }
        }
        if !failed.is_empty() {
            self.failed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(failed);
            self.any_failed.store(true, Ordering::Release);
        }
    }

    /// Write-backs that failed since the last call, by member id.
    pub fn take_failures(&self) -> Vec<(u64, RaidError)> {
        if !self.any_failed.swap(false, Ordering::AcqRel) {
            return Vec::new();
        }
        std::mem::take(&mut *self.failed.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Forgets the cached checksums of a member that failed or was replaced.
    pub fn forget(&self, member_id: u64) {
        let mut cache = self.lock();
        cache.blocks.retain(|(id, _), _| *id != member_id);
        cache.epoch += 1;
    }

    /// Writes back and forgets every cached block, so that the next checks read the
    /// checksum areas as the members hold them.
    pub fn drop_all(&self) {
        let mut cache = self.lock();
        self.write_back_locked(&mut cache);
        cache.blocks.retain(|_, b| b.dirty && !b.member.is_failed());
        cache.epoch += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_runs_split_where_a_block_ends() {
        // 1024 checksums per 4 KiB block; two of five before the boundary.
        let runs: Vec<_> = block_runs(8192, 4088, 5).collect();
        assert_eq!(runs, vec![(8192, 4088, 0..2), (12288, 0, 2..5)]);
        let runs: Vec<_> = block_runs(0, 0, 2048).collect();
        assert_eq!(runs, vec![(0, 0, 0..1024), (4096, 0, 1024..2048)]);
        let runs: Vec<_> = block_runs(4096, 8200, 3).collect();
        assert_eq!(runs, vec![(12288, 8, 0..3)]);
        assert_eq!(block_runs(0, 12, 0).count(), 0);
    }
}
