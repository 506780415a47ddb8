//! Per-block checksums: one CRC32 (IEEE) per 4 KiB of every member's data
//! area, kept in the checksum area behind the data. Written after every member write;
//! checked on every read and by scrub, so that a member returning wrong bytes without an
//! I/O error is read around and repaired from the others, even where parity alone cannot
//! say who lies (RAID 5, two mirrors).

use crate::array::Inner;
use crate::layout::{CSUM_BLOCK, DATA_OFFSET};

/// Checksum blocks kept in memory (4 KiB each, covering 4 MiB of member data each).
const CACHE_BLOCKS: usize = 2048;

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

impl Inner {
    /// The member byte range of the checksum area covering data at member offset `off`
    /// for `len` bytes, widened to whole blocks: (start, length, skip to first sum).
    fn csum_span(&self, off: u64, len: usize) -> (u64, usize, usize) {
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

    /// The checksum area bytes `at..at + len` of member `m` (whole blocks), through the
    /// cache. `None` if the member fails.
    fn csum_area(&mut self, m: usize, at: u64, len: usize) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(len);
        for block in (at..at + len as u64).step_by(CSUM_BLOCK as usize) {
            if let Some(b) = self.csum_cache.get(&(m, block)) {
                out.extend_from_slice(b);
                continue;
            }
            let mut b = vec![0u8; CSUM_BLOCK as usize];
            if !self.read_member(m, block, &mut b) {
                return None;
            }
            out.extend_from_slice(&b);
            self.cache_insert(m, block, b);
        }
        Some(out)
    }

    fn cache_insert(&mut self, m: usize, block: u64, data: Vec<u8>) {
        if self.csum_cache.len() >= CACHE_BLOCKS {
            self.csum_cache.clear();
        }
        self.csum_cache.insert((m, block), data);
    }

    /// Forgets the cached checksums of member `m` (it failed or was replaced).
    pub fn forget_checksums(&mut self, m: usize) {
        self.csum_cache.retain(|(member, _), _| *member != m);
    }

    /// Records the checksums of `buf`, just written to member `m` at `off`. Returns
    /// `false` (and fails the member) if the checksum area cannot be written.
    pub fn write_checksums(&mut self, m: usize, off: u64, buf: &[u8]) -> bool {
        let (at, len, skip) = self.csum_span(off, buf.len());
        let Some(mut area) = self.csum_area(m, at, len) else {
            return false;
        };
        for (i, sum) in block_sums(buf).into_iter().enumerate() {
            area[skip + i * 4..skip + i * 4 + 4].copy_from_slice(&sum.to_le_bytes());
        }
        let res = match &self.slots[m].member {
            Some(member) => member.write_at(at, &area),
            None => return false,
        };
        match res {
            Ok(()) => {
                for (i, block) in area.chunks(CSUM_BLOCK as usize).enumerate() {
                    self.cache_insert(m, at + (i as u64) * CSUM_BLOCK, block.to_vec());
                }
                true
            }
            Err(e) => {
                tracing::warn!(member = m, error = %e, "checksum write failed; member taken out");
                self.last_io_error = Some(e);
                self.fail(m);
                false
            }
        }
    }

    /// Whether `buf`, read from member `m` at `off`, matches its recorded checksums.
    /// `None` when the checksums cannot be read (the member is failed).
    pub fn checksums_match(&mut self, m: usize, off: u64, buf: &[u8]) -> Option<bool> {
        let (at, len, skip) = self.csum_span(off, buf.len());
        let area = self.csum_area(m, at, len)?;
        let ok = block_sums(buf).into_iter().enumerate().all(|(i, sum)| {
            let o = skip + i * 4;
            area[o..o + 4] == sum.to_le_bytes()
        });
        Some(ok)
    }

    /// Reads member `m` and checks the bytes against their checksums.
    pub fn read_verified(&mut self, m: usize, off: u64, buf: &mut [u8]) -> Verified {
        if !self.read_member(m, off, buf) {
            return Verified::Failed;
        }
        match self.checksums_match(m, off, buf) {
            Some(true) => Verified::Good,
            Some(false) => {
                tracing::warn!(pool = %self.pool, member = m, offset = off, "checksum mismatch; reading around the member");
                if let Some(n) = self.checksum_errors.get_mut(m) {
                    *n += 1;
                }
                Verified::Corrupt
            }
            None => Verified::Failed,
        }
    }
}
