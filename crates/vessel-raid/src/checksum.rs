//! Per-block checksums: one CRC32 (IEEE) per 4 KiB of every member's data
//! area, kept in the checksum area behind the data. Written after every member write;
//! checked by scrub, so that a member returning wrong bytes without an I/O error is named
//! and repaired from the others, even where parity alone cannot say who lies (RAID 5, two
//! mirrors).

use crate::array::Inner;
use crate::layout::{CSUM_BLOCK, DATA_OFFSET};

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

    /// Records the checksums of `buf`, just written to member `m` at `off`. Returns
    /// `false` (and fails the member) if the checksum area cannot be written.
    pub fn write_checksums(&mut self, m: usize, off: u64, buf: &[u8]) -> bool {
        let (at, len, skip) = self.csum_span(off, buf.len());
        let Some(member) = &self.slots[m].member else {
            return false;
        };
        let mut area = vec![0u8; len];
        let res = member.read_at(at, &mut area).and_then(|()| {
            for (i, sum) in block_sums(buf).into_iter().enumerate() {
                area[skip + i * 4..skip + i * 4 + 4].copy_from_slice(&sum.to_le_bytes());
            }
            member.write_at(at, &area)
        });
        match res {
            Ok(()) => true,
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
        let mut area = vec![0u8; len];
        if !self.read_member(m, at, &mut area) {
            return None;
        }
        let ok = block_sums(buf).into_iter().enumerate().all(|(i, sum)| {
            let o = skip + i * 4;
            area[o..o + 4] == sum.to_le_bytes()
        });
        Some(ok)
    }
}
