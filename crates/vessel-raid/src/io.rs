//! The block-device face of the array: reads that reconstruct around missing members,
//! writes that keep parity and mirrors in step, and flush.

use std::ops::Range;

use crate::array::{Inner, RaidArray};
use crate::checksum::Verified;
use crate::error::{RaidError, Result};
use crate::gf;
use crate::layout::Role;
use crate::member::IO_ALIGN;
use crate::RaidLevel;

const ALIGN: u64 = IO_ALIGN as u64;

fn align_down(x: u64) -> u64 {
    x / ALIGN * ALIGN
}

fn align_up(x: u64) -> u64 {
    x.div_ceil(ALIGN) * ALIGN
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

    /// Reads `buf.len()` bytes at array `offset`. Missing data is reconstructed from the
    /// other members; if that is impossible the read fails with [`RaidError::DataLoss`].
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.check_range(offset, buf.len())?;
        let mut inner = self.lock();
        let res = inner.read(offset, buf);
        inner.record_failures()?;
        res
    }

    /// Writes `buf` at array `offset`, updating parity or mirrors. Works degraded as long
    /// as the level tolerates the missing members.
    pub fn write_at(&self, offset: u64, buf: &[u8]) -> Result<()> {
        self.check_range(offset, buf.len())?;
        let mut inner = self.lock();
        let res = inner.write(offset, buf);
        // A member that failed during the write must be recorded as failed before the
        // write is acknowledged, or a restart would trust its stale data.
        inner.record_failures()?;
        res
    }

    /// Makes every completed write durable on the members, then clears the write-intent
    /// bitmap.
    pub fn flush(&self) -> Result<()> {
        let mut inner = self.lock();
        let res = inner.flush();
        inner.record_failures()?;
        res
    }
}

impl Inner {
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<()> {
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

    fn write(&mut self, offset: u64, buf: &[u8]) -> Result<()> {
        let row_bytes = self.geo.row_bytes();
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let row = pos / row_bytes;
            let within = pos % row_bytes;
            let len = ((row_bytes - within) as usize).min(buf.len() - done);
            self.write_row(row, within, &buf[done..done + len])?;
            done += len;
        }
        Ok(())
    }

    /// Writes the superblocks if a member failed since they were last written.
    pub fn record_failures(&mut self) -> Result<()> {
        if self.failures_pending {
            self.failures_pending = false;
            self.write_superblocks()?;
        }
        Ok(())
    }

    /// Reads member `m` at member offset `off`; on failure fails the member and returns
    /// `false` so the caller can reconstruct instead.
    pub fn read_member(&mut self, m: usize, off: u64, buf: &mut [u8]) -> bool {
        let res = match &self.slots[m].member {
            Some(member) => member.read_at(off, buf),
            None => return false,
        };
        match res {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(member = m, error = %e, "read failed; member taken out");
                self.last_io_error = Some(e);
                self.fail(m);
                false
            }
        }
    }

    /// Writes member `m`; on failure fails the member and returns `false`.
    pub fn write_member(&mut self, m: usize, off: u64, buf: &[u8]) -> bool {
        if !self.writable(m) {
            return false;
        }
        let res = match &self.slots[m].member {
            Some(member) => member.write_at(off, buf),
            None => return false,
        };
        match res {
            Ok(()) => self.write_checksums(m, off, buf),
            Err(e) => {
                tracing::warn!(member = m, error = %e, "write failed; member taken out");
                self.last_io_error = Some(e);
                self.fail(m);
                false
            }
        }
    }

    fn data_loss(&self, row: u64) -> RaidError {
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
                    tracing::info!(pool = %self.pool, member = m, row, "corrupt chunk rewritten from redundancy");
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
        let mut out = Vec::with_capacity(want.len());
        let mut corrupt = Vec::new();
        for d in want.clone() {
            let m = self.geo.data_member(row, d);
            let mut buf = vec![0u8; len];
            if !self.readable(m, row) {
                break;
            }
            match self.read_verified(m, off, &mut buf) {
                Verified::Good => out.push(buf),
                Verified::Corrupt => {
                    corrupt.push(m);
                    break;
                }
                Verified::Failed => break,
            }
        }
        if out.len() == want.len() {
            return Ok(out);
        }
        let mut all = self.solve_row(row, cols, &corrupt, true)?;
        Ok(all.drain(want).collect())
    }

    /// Reads every readable member of a row (columns `cols`) and solves for the missing
    /// data chunks. Returns all data chunks of the row.
    pub fn reconstruct_row(&mut self, row: u64, cols: Range<u64>) -> Result<Vec<Vec<u8>>> {
        self.solve_row(row, cols, &[], false)
    }

    /// Like [`Inner::reconstruct_row`], treating the members in `exclude` as missing too.
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
        let dm = self.geo.data_members();
        'retry: loop {
            let mut data: Vec<Option<Vec<u8>>> = vec![None; dm];
            let (mut p, mut q) = (None, None);
            let mut corrupt = Vec::new();
            for m in 0..self.slots.len() {
                if !self.readable(m, row) || exclude.contains(&m) {
                    continue;
                }
                let mut buf = vec![0u8; len];
                match self.read_verified(m, off, &mut buf) {
                    Verified::Good => {}
                    Verified::Corrupt => {
                        corrupt.push(m);
                        continue;
                    }
                    Verified::Failed => continue 'retry,
                }
                match self.geo.role(row, m) {
                    Role::Data(d) => data[d] = Some(buf),
                    Role::P => p = Some(buf),
                    Role::Q => q = Some(buf),
                }
            }
            let missing: Vec<usize> = (0..dm).filter(|&d| data[d].is_none()).collect();
            match (missing.as_slice(), p, q) {
                ([], _, _) => {}
                ([x], Some(p), _) => {
                    let mut dx = p;
                    for d in data.iter().flatten() {
                        gf::xor_into(&mut dx, d);
                    }
                    data[*x] = Some(dx);
                }
                ([x], None, Some(q)) => {
                    // Q ^ sum(g^i·Di, i != x) = g^x·Dx.
                    let mut dx = q;
                    for (i, d) in data.iter().enumerate() {
                        if let Some(d) = d {
                            gf::mul_xor_into(&mut dx, gf::pow2(i), d);
                        }
                    }
                    gf::scale(&mut dx, gf::inv(gf::pow2(*x)));
                    data[*x] = Some(dx);
                }
                ([x, y], Some(mut pxy), Some(mut qxy)) => {
                    for (i, d) in data.iter().enumerate() {
                        if let Some(d) = d {
                            gf::xor_into(&mut pxy, d);
                            gf::mul_xor_into(&mut qxy, gf::pow2(i), d);
                        }
                    }
                    let (mut dx, mut dy) = (vec![0u8; len], vec![0u8; len]);
                    gf::recover_two(*x, *y, &pxy, &qxy, &mut dx, &mut dy);
                    data[*x] = Some(dx);
                    data[*y] = Some(dy);
                }
                _ => {
                    corrupt.extend_from_slice(exclude);
                    return Err(self.data_loss_with(row, &corrupt));
                }
            }
            let data: Vec<Vec<u8>> = data.into_iter().flatten().collect();
            if heal_excluded {
                corrupt.extend_from_slice(exclude);
            }
            self.heal(row, cols.start, &data, &corrupt);
            return Ok(data);
        }
    }

    /// Computes the parity chunks of a row from its data chunks.
    pub fn parity(&self, data: &[Vec<u8>]) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
        let len = data.first().map_or(0, Vec::len);
        let refs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
        match self.geo.level {
            RaidLevel::Raid5 => {
                let mut p = vec![0u8; len];
                gf::gen_p(&refs, &mut p);
                (Some(p), None)
            }
            RaidLevel::Raid6 => {
                let (mut p, mut q) = (vec![0u8; len], vec![0u8; len]);
                gf::gen_pq(&refs, &mut p, &mut q);
                (Some(p), Some(q))
            }
            RaidLevel::Raid0 | RaidLevel::Raid1 => (None, None),
        }
    }

    /// Sets the write-intent bit of `row`'s region, durably, before the row is touched.
    fn mark_dirty(&mut self, row: u64) -> Result<()> {
        if let Some(block) = self.bitmap.set(row) {
            self.write_bitmap_block(block)?;
        }
        Ok(())
    }

    /// Fails with data loss if a write left the row with more missing members than the
    /// level tolerates.
    fn check_row_survives(&self, row: u64) -> Result<()> {
        let missing = (0..self.slots.len()).filter(|&m| !self.writable(m)).count();
        if missing > self.geo.level.tolerated_failures(self.geo.members) {
            return Err(self.data_loss(row));
        }
        Ok(())
    }

    /// Writes `data` at byte `within` of `row`'s data.
    fn write_row(&mut self, row: u64, within: u64, data: &[u8]) -> Result<()> {
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
        let mut chunks = if need_read {
            self.read_data_cols(row, cols.clone(), range.clone())?
        } else {
            vec![vec![0u8; clen]; range.len()]
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
        self.mark_dirty(row)?;
        match self.geo.level {
            RaidLevel::Raid0 => {
                for d in d0..=d1 {
                    let m = self.geo.data_member(row, d);
                    if !self.write_member(m, off, &chunks[d - d0]) {
                        return Err(self.data_loss(row));
                    }
                }
            }
            RaidLevel::Raid1 => {
                for m in 0..self.slots.len() {
                    self.write_member(m, off, &chunks[0]);
                }
                if !(0..self.slots.len()).any(|m| self.writable(m)) {
                    return Err(self.data_loss(row));
                }
            }
            RaidLevel::Raid5 | RaidLevel::Raid6 => {
                let (p, q) = self.parity(&chunks);
                for (d, buf) in chunks.iter().enumerate().take(d1 + 1).skip(d0) {
                    let m = self.geo.data_member(row, d);
                    self.write_member(m, off, buf);
                }
                for (member, parity) in [(self.geo.p_member(row), p), (self.geo.q_member(row), q)] {
                    if let (Some(m), Some(buf)) = (member, parity) {
                        self.write_member(m, off, &buf);
                    }
                }
                self.check_row_survives(row)?;
            }
        }
        Ok(())
    }

    /// Syncs every live member, then clears the write-intent bits of regions not
    /// written since the previous flush. Regions still being written keep their bit, so a
    /// steady writer that flushes often does not pay a bitmap sync per flush.
    pub fn flush(&mut self) -> Result<()> {
        self.sync_members()?;
        for block in self.bitmap.clear_idle() {
            self.write_bitmap_block(block)?;
        }
        Ok(())
    }

    /// Syncs every live member, then clears the whole write-intent bitmap.
    pub fn flush_all(&mut self) -> Result<()> {
        self.sync_members()?;
        for block in self.bitmap.clear() {
            self.write_bitmap_block(block)?;
        }
        Ok(())
    }

    /// Makes every member write so far durable.
    fn sync_members(&mut self) -> Result<()> {
        for m in 0..self.slots.len() {
            if !self.writable(m) {
                continue;
            }
            let res = match &self.slots[m].member {
                Some(member) => member.sync(),
                None => Ok(()),
            };
            if let Err(e) = res {
                self.last_io_error = Some(e);
                self.fail(m);
            }
        }
        let missing = (0..self.slots.len()).filter(|&m| !self.writable(m)).count();
        if missing > self.geo.level.tolerated_failures(self.geo.members) {
            return Err(self.data_loss(0));
        }
        Ok(())
    }
}
