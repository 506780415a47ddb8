//! Write-intent bitmap: one bit per region of rows, set on every member (and made durable)
//! before any row of the region is written, cleared by the first flush after a whole
//! flush interval in which the region was not written (so hot regions are not re-marked
//! after every flush). After a crash the set bits name the only rows whose parity or mirrors may
//! disagree, and assembly resyncs just those rows (closing the RAID 5/6 write hole for
//! arrays that come back whole).

use crate::layout::DATA_OFFSET;
use crate::superblock::SUPERBLOCK_SIZE;

/// Member offset of the bitmap.
pub const BITMAP_OFFSET: u64 = SUPERBLOCK_SIZE as u64;
/// Unit in which the bitmap is written.
pub const BITMAP_BLOCK: usize = 4096;
/// Largest bitmap that fits in the header.
const BITMAP_MAX: u64 = DATA_OFFSET - BITMAP_OFFSET;
/// Smallest region: 1 MiB of member data, so sequential writes set a bit rarely.
const MIN_REGION_BYTES: u64 = 1 << 20;
/// Regions marked together, in bitmap bytes: the first write into a group sets the bits of
/// the whole group (64 regions: 64 MiB of member data with the smallest regions, md's
/// default bitmap chunk), so a sequential or scattered writer pays one bitmap write (and
/// sync) per group, not per region. Setting more bits than needed only widens a resync
/// after a crash.
const GROUP_BYTES: usize = 8;

/// The in-memory copy of the bitmap.
#[derive(Debug)]
pub struct Bitmap {
    region_rows: u64,
    bits: Vec<u8>,
    /// Regions written since the last flush.
    touched: Vec<u8>,
}

impl Bitmap {
    /// An all-clear bitmap for an array of `rows` rows of `chunk` bytes per member.
    pub fn new(rows: u64, chunk: u64) -> Self {
        let min_rows = MIN_REGION_BYTES.div_ceil(chunk).max(1);
        let fit_rows = rows.div_ceil(BITMAP_MAX * 8).max(1);
        let region_rows = min_rows.max(fit_rows);
        let regions = rows.div_ceil(region_rows).max(1);
        let bytes = (regions.div_ceil(8)).div_ceil(BITMAP_BLOCK as u64) * BITMAP_BLOCK as u64;
        Bitmap {
            region_rows,
            bits: vec![0u8; bytes as usize],
            touched: vec![0u8; bytes as usize],
        }
    }

    /// Bytes of the bitmap on disk.
    pub fn byte_len(&self) -> usize {
        self.bits.len()
    }

    /// Whether any row of `rows` lies in a marked region.
    pub fn marks_any(&self, rows: std::ops::Range<u64>) -> bool {
        self.regions(rows).any(|r| {
            let (byte, bit) = self.bit(r);
            self.bits.get(byte).is_some_and(|b| b & bit != 0)
        })
    }

    /// Rows per region.
    pub fn region_rows(&self) -> u64 {
        self.region_rows
    }

    fn region(&self, row: u64) -> (usize, u8) {
        self.bit(row / self.region_rows)
    }

    fn bit(&self, region: u64) -> (usize, u8) {
        ((region / 8) as usize, 1u8 << (region % 8))
    }

    /// The regions rows `rows` lie in.
    pub fn regions(&self, rows: std::ops::Range<u64>) -> std::ops::Range<u64> {
        if rows.is_empty() {
            return 0..0;
        }
        rows.start / self.region_rows..(rows.end - 1) / self.region_rows + 1
    }

    /// Counts `region` as written in the current flush interval (a write is in flight
    /// there), so the next [`Bitmap::clear_idle`] keeps its bit.
    pub fn touch_region(&mut self, region: u64) {
        let (byte, bit) = self.bit(region);
        if let Some(t) = self.touched.get_mut(byte) {
            *t |= bit;
        }
    }

    /// Marks `region`; returns the bitmap block to write if it changed.
    pub fn set_region(&mut self, region: u64) -> Option<usize> {
        self.set(region * self.region_rows)
    }

    /// Whether the region of `row` is marked.
    pub fn is_set(&self, row: u64) -> bool {
        let (byte, bit) = self.region(row);
        self.bits.get(byte).is_some_and(|b| b & bit != 0)
    }

    /// Marks the region of `row` (with its group); returns the bitmap block to write if
    /// it changed.
    pub fn set(&mut self, row: u64) -> Option<usize> {
        let (byte, bit) = self.region(row);
        let b = self.bits.get_mut(byte)?;
        if *b & bit != 0 {
            if let Some(t) = self.touched.get_mut(byte) {
                *t |= bit;
            }
            return None;
        }
        let _ = b;
        let first = byte / GROUP_BYTES * GROUP_BYTES;
        let last = (first + GROUP_BYTES).min(self.bits.len());
        for i in first..last {
            let newly = !self.bits[i];
            self.bits[i] = 0xff;
            self.touched[i] |= newly;
        }
        self.touched[byte] |= bit;
        Some(byte / BITMAP_BLOCK)
    }

    /// Clears the bits of regions not written since the previous call (their writes are
    /// durable by now); returns the blocks that changed.
    pub fn clear_idle(&mut self) -> Vec<usize> {
        let mut changed = Vec::new();
        for (i, (b, t)) in self
            .bits
            .iter_mut()
            .zip(self.touched.iter_mut())
            .enumerate()
        {
            if *b & !*t != 0 {
                *b &= *t;
                let block = i / BITMAP_BLOCK;
                if changed.last() != Some(&block) {
                    changed.push(block);
                }
            }
            *t = 0;
        }
        changed
    }

    /// Clears every bit; returns the blocks that changed.
    pub fn clear(&mut self) -> Vec<usize> {
        self.touched.fill(0);
        let dirty: Vec<usize> = self
            .bits
            .chunks(BITMAP_BLOCK)
            .enumerate()
            .filter(|(_, c)| c.iter().any(|b| *b != 0))
            .map(|(i, _)| i)
            .collect();
        self.bits.fill(0);
        dirty
    }

    /// Marks everything (a fresh array needs a full initial sync).
    pub fn set_all(&mut self) {
        self.bits.fill(0xff);
    }

    /// One block of the bitmap, to write at `BITMAP_OFFSET + block * BITMAP_BLOCK`.
    pub fn block(&self, block: usize) -> &[u8] {
        &self.bits[block * BITMAP_BLOCK..(block + 1) * BITMAP_BLOCK]
    }

    /// Ors in a bitmap read from a member.
    pub fn merge(&mut self, on_disk: &[u8]) {
        for (b, d) in self.bits.iter_mut().zip(on_disk) {
            *b |= *d;
        }
    }

    /// The rows of every marked region, clipped to `rows`.
    pub fn marked_rows(&self, rows: u64) -> Vec<std::ops::Range<u64>> {
        let mut out = Vec::new();
        for (i, byte) in self.bits.iter().enumerate() {
            for bit in 0..8u64 {
                if byte & (1 << bit) != 0 {
                    let start = (i as u64 * 8 + bit) * self.region_rows;
                    if start < rows {
                        out.push(start..(start + self.region_rows).min(rows));
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_regions_once() {
        let mut b = Bitmap::new(1000, 65536);
        assert_eq!(b.region_rows(), 16);
        assert_eq!(b.set(17), Some(0));
        assert_eq!(b.set(31), None);
        // The whole group of 64 regions (1024 rows) is marked at once.
        assert!(b.is_set(0) && b.is_set(16) && b.is_set(999));
        assert_eq!(b.set(100), None);
        assert_eq!(b.marked_rows(1000).len(), 63);
        // Written since the last flush: kept; quiet for a whole flush interval: cleared.
        assert!(b.clear_idle().is_empty());
        assert!(b.is_set(16));
        b.set(40);
        assert_eq!(b.clear_idle(), vec![0]);
        assert_eq!(b.marked_rows(1000), vec![32..48]);
        assert_eq!(b.clear_idle(), vec![0]);
        assert!(b.marked_rows(1000).is_empty());
        b.set(500);
        assert_eq!(b.clear(), vec![0]);
        assert!(b.marked_rows(1000).is_empty());
    }
}
