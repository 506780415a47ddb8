//! The pool's in-memory state: the volume table, extent reference counts, the allocator
//! and the commit protocol.

use std::sync::Arc;

use super::backing::Backing;
use super::error::{ThinError, ThinResult};
use super::format::{Header, Metadata, MAP_ENTRY};

/// What every operation needs besides the state: the device and its geometry.
pub(crate) struct Core {
    pub backing: Arc<dyn Backing>,
    pub header: Header,
}

impl Core {
    pub fn read(&self, offset: u64, buf: &mut [u8], op: &'static str) -> ThinResult<()> {
        self.backing
            .read_at(offset, buf)
            .map_err(ThinError::backing(op))
    }

    pub fn write(&self, offset: u64, buf: &[u8], op: &'static str) -> ThinResult<()> {
        self.backing
            .write_at(offset, buf)
            .map_err(ThinError::backing(op))
    }

    fn extent_bytes(&self) -> usize {
        self.header.extent_size as usize
    }
}

/// Everything behind the pool's lock.
///
/// Reference counts are not stored on disk; they are counted from the maps. Besides the
/// counts of the current (possibly uncommitted) state, the counts of both metadata copies
/// on disk are kept: an extent either copy names is never handed out again, and is only
/// written in place when no copy shares it, so neither copy can end up naming data that
/// was overwritten for another volume.
pub(crate) struct State {
    pub meta: Metadata,
    /// Generation of the newest durable metadata copy.
    pub generation: u64,
    /// Slot (0 or 1) holding the newest durable copy; the next commit goes to the other.
    pub newest_slot: usize,
    /// References per extent in the current state.
    pub refs: Vec<u32>,
    /// References per extent in each metadata copy on disk.
    pub disk_refs: [Vec<u32>; 2],
    /// Extents with a reference in the current state.
    pub used: u64,
    /// No extent below this one can be handed out before the next commit.
    cursor: usize,
    /// The current state differs from the newest copy.
    pub dirty: bool,
}

/// Reference counts of every extent named by `meta`.
pub(crate) fn count_refs(meta: &Metadata, extents: u64) -> Vec<u32> {
    let mut refs = vec![0u32; extents as usize];
    for v in meta.volumes.values() {
        for &p in v.map.values() {
            refs[p as usize] = refs[p as usize].saturating_add(1);
        }
    }
    refs
}

impl State {
    /// State loaded from the newest copy in `newest_slot`, with the reference counts of the
    /// other copy if it is intact.
    pub fn new(
        meta: Metadata,
        generation: u64,
        newest_slot: usize,
        other: Option<&Metadata>,
        extents: u64,
    ) -> Self {
        let refs = count_refs(&meta, extents);
        let other_refs =
            other.map_or_else(|| vec![0; extents as usize], |m| count_refs(m, extents));
        let mut disk_refs = [refs.clone(), other_refs];
        if newest_slot == 1 {
            disk_refs.swap(0, 1);
        }
        let used = refs.iter().filter(|&&r| r > 0).count() as u64;
        State {
            meta,
            generation,
            newest_slot,
            refs,
            disk_refs,
            used,
            cursor: 0,
            dirty: false,
        }
    }

    /// Bytes the metadata would take with `extra` more bytes; refuses past the area.
    pub fn check_metadata(&self, core: &Core, extra: usize) -> ThinResult<()> {
        let needed = (self.meta.encoded_len() + extra) as u64;
        if needed > core.header.metadata_size {
            return Err(ThinError::MetadataFull {
                needed,
                capacity: core.header.metadata_size,
            });
        }
        Ok(())
    }

    /// Writes the current state as the next metadata copy: data first, then the copy,
    /// each made durable by a device flush.
    pub fn commit(&mut self, core: &Core) -> ThinResult<()> {
        self.check_metadata(core, 0)?;
        let generation = self.generation + 1;
        let slot = 1 - self.newest_slot;
        let bytes = self.meta.encode(core.header.pool, generation);
        core.backing.flush().map_err(ThinError::backing(
            "make volume data durable before a commit",
        ))?;
        let res = core
            .backing
            .write_at(core.header.copy_offset(slot), &bytes)
            .and_then(|()| core.backing.flush());
        match res {
            Ok(()) => {
                self.generation = generation;
                self.newest_slot = slot;
                self.disk_refs[slot].copy_from_slice(&self.refs);
                self.dirty = false;
                self.cursor = 0;
                tracing::debug!(generation, slot, "thin pool metadata committed");
                Ok(())
            }
            Err(source) => {
                // The slot may hold the old copy, the new one or neither: protect both.
                for (d, r) in self.disk_refs[slot].iter_mut().zip(&self.refs) {
                    *d = (*d).max(*r);
                }
                Err(ThinError::Backing {
                    op: "write the pool metadata",
                    source,
                })
            }
        }
    }

    /// Commits if the state changed, else only flushes the device.
    pub fn flush(&mut self, core: &Core) -> ThinResult<()> {
        if self.dirty {
            self.commit(core)
        } else {
            core.backing
                .flush()
                .map_err(ThinError::backing("flush volume data"))
        }
    }

    /// Runs a change to the volume table and commits it; if either fails, the state
    /// goes back to what it was.
    pub fn transact<T>(
        &mut self,
        core: &Core,
        change: impl FnOnce(&mut Self) -> ThinResult<T>,
    ) -> ThinResult<T> {
        let saved = (self.meta.clone(), self.refs.clone(), self.used, self.dirty);
        self.dirty = true;
        let res = change(self).and_then(|t| self.commit(core).map(|()| t));
        if res.is_err() {
            (self.meta, self.refs, self.used, self.dirty) = saved;
        }
        res
    }

    /// Adds a reference to extent `e`.
    pub fn take(&mut self, e: u32) {
        let r = &mut self.refs[e as usize];
        if *r == 0 {
            self.used += 1;
        }
        *r = r.saturating_add(1);
    }

    /// Drops a reference to extent `e`. It becomes reusable once no metadata copy on disk
    /// names it.
    pub fn release(&mut self, e: u32) {
        let r = &mut self.refs[e as usize];
        debug_assert!(*r > 0, "extent {e} released more often than taken");
        *r = r.saturating_sub(1);
        if *r == 0 {
            self.used = self.used.saturating_sub(1);
        }
    }

    fn reusable(&self, e: usize) -> bool {
        self.refs[e] == 0 && self.disk_refs[0][e] == 0 && self.disk_refs[1][e] == 0
    }

    /// An extent only this mapping names, now and in both copies on disk.
    fn exclusive(&self, e: u32) -> bool {
        let e = e as usize;
        self.refs[e] == 1 && self.disk_refs[0][e] <= 1 && self.disk_refs[1][e] <= 1
    }

    /// The lowest free extent (not referenced now nor by a copy on disk), which keeps the
    /// data packed at the start of the device. When the only free extents are still named
    /// by a metadata copy, the state is committed (twice at most) to release them.
    fn allocate(&mut self, core: &Core) -> ThinResult<u32> {
        let total = self.refs.len();
        for attempt in 0..3 {
            if let Some(e) = (self.cursor..total).find(|&e| self.reusable(e)) {
                self.cursor = e + 1;
                return Ok(e as u32);
            }
            if self.used as usize >= total || attempt == 2 {
                break;
            }
            self.commit(core)?;
        }
        Err(ThinError::NoSpace {
            total: total as u64,
        })
    }

    /// Physical extent behind logical extent `l` of volume `id`.
    pub fn lookup(&self, id: u64, l: u32) -> Option<u32> {
        self.meta
            .volumes
            .get(&id)
            .and_then(|v| v.map.get(&l).copied())
    }

    /// Points logical extent `l` of volume `id` at `e` (or at nothing), adjusting counts.
    fn remap(&mut self, id: u64, l: u32, e: Option<u32>) {
        let Some(v) = self.meta.volumes.get_mut(&id) else {
            return;
        };
        let old = match e {
            Some(e) => v.map.insert(l, e),
            None => v.map.remove(&l),
        };
        if let Some(e) = e {
            self.take(e);
        }
        if let Some(old) = old {
            self.release(old);
        }
        self.dirty = true;
    }

    /// Reads from volume `id` at `offset`; unmapped extents read as zeroes.
    pub fn read(&self, core: &Core, id: u64, offset: u64, buf: &mut [u8]) -> ThinResult<()> {
        for (l, within, range) in pieces(core.header.extent_size, offset, buf.len()) {
            let part = &mut buf[range];
            match self.lookup(id, l) {
                Some(p) => core.read(
                    core.header.extent_offset(p) + within as u64,
                    part,
                    "read volume data",
                )?,
                None => part.fill(0),
            }
        }
        Ok(())
    }

    /// Writes `buf` to volume `id` at `offset` if every extent it touches is mapped and
    /// owned by the volume alone (nothing to allocate or copy); `false`, with nothing
    /// written, otherwise.
    pub fn write_in_place(
        &self,
        core: &Core,
        id: u64,
        offset: u64,
        buf: &[u8],
    ) -> ThinResult<bool> {
        let es = core.header.extent_size;
        let all_owned = pieces(es, offset, buf.len())
            .all(|(l, _, _)| self.lookup(id, l).is_some_and(|p| self.exclusive(p)));
        if !all_owned {
            return Ok(false);
        }
        for (l, within, range) in pieces(es, offset, buf.len()) {
            if let Some(p) = self.lookup(id, l) {
                core.write(
                    core.header.extent_offset(p) + within as u64,
                    &buf[range],
                    "write volume data",
                )?;
            }
        }
        Ok(true)
    }

    /// Writes `buf` to volume `id` at `offset`, allocating and copying extents as needed.
    pub fn write(&mut self, core: &Core, id: u64, offset: u64, buf: &[u8]) -> ThinResult<()> {
        for (l, within, range) in pieces(core.header.extent_size, offset, buf.len()) {
            self.write_extent(core, id, l, within, &buf[range])?;
        }
        Ok(())
    }

    /// Writes inside one logical extent. An extent someone else may see (another volume,
    /// or a metadata copy on disk) is never written: the data goes to a new extent, which
    /// the next commit names.
    pub fn write_extent(
        &mut self,
        core: &Core,
        id: u64,
        l: u32,
        within: usize,
        data: &[u8],
    ) -> ThinResult<()> {
        let es = core.extent_bytes();
        let current = self.lookup(id, l);
        if let Some(p) = current.filter(|&p| self.exclusive(p)) {
            return core.write(
                core.header.extent_offset(p) + within as u64,
                data,
                "write volume data",
            );
        }
        if current.is_none() {
            self.check_metadata(core, MAP_ENTRY)?;
        }
        let full = within == 0 && data.len() == es;
        let mut fresh = Vec::new();
        if !full {
            fresh = vec![0u8; es];
            if let Some(p) = current {
                core.read(
                    core.header.extent_offset(p),
                    &mut fresh,
                    "copy a shared extent",
                )?;
            }
            fresh[within..within + data.len()].copy_from_slice(data);
        }
        let e = self.allocate(core)?;
        let out = if full { data } else { &fresh };
        core.write(core.header.extent_offset(e), out, "write volume data")?;
        self.remap(id, l, Some(e));
        Ok(())
    }

    /// Unmaps whole extents of the range and zeroes the partial ones at its ends.
    pub fn discard(&mut self, core: &Core, id: u64, offset: u64, len: u64) -> ThinResult<()> {
        let es = core.header.extent_size;
        let mut pos = offset;
        let end = offset + len;
        while pos < end {
            let l = (pos / es) as u32;
            let within = pos % es;
            let n = (es - within).min(end - pos);
            if n == es {
                self.remap(id, l, None);
            } else if self.lookup(id, l).is_some() {
                let zeroes = vec![0u8; n as usize];
                self.write_extent(core, id, l, within as usize, &zeroes)?;
            }
            pos += n;
        }
        Ok(())
    }

    /// Unmaps every logical extent from `first` on (a shrink).
    pub fn unmap_from(&mut self, id: u64, first: u32) {
        let tail: Vec<u32> = self
            .meta
            .volumes
            .get(&id)
            .map(|v| v.map.range(first..).map(|(&l, _)| l).collect())
            .unwrap_or_default();
        for l in tail {
            self.remap(id, l, None);
        }
    }

    /// Allocated and unallocated runs of a range, merged.
    pub fn extents(&self, es: u64, id: u64, offset: u64, len: u64) -> Vec<(u64, bool)> {
        let mut runs: Vec<(u64, bool)> = Vec::new();
        let mut pos = offset;
        let end = offset + len;
        while pos < end {
            let l = (pos / es) as u32;
            let n = (es - pos % es).min(end - pos);
            let allocated = self.lookup(id, l).is_some();
            match runs.last_mut() {
                Some((run, a)) if *a == allocated => *run += n,
                _ => runs.push((n, allocated)),
            }
            pos += n;
        }
        runs
    }
}

/// Splits a request into (logical extent, offset inside it, range of the buffer).
fn pieces(
    es: u64,
    offset: u64,
    len: usize,
) -> impl Iterator<Item = (u32, usize, std::ops::Range<usize>)> {
    let mut done = 0usize;
    std::iter::from_fn(move || {
        if done >= len {
            return None;
        }
        let pos = offset + done as u64;
        let within = pos % es;
        let n = ((es - within) as usize).min(len - done);
        let piece = ((pos / es) as u32, within as usize, done..done + n);
        done += n;
        Some(piece)
    })
}
