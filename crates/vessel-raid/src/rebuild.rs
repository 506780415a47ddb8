//! Rebuilding a member onto a replacement: span by span, resumable from the checkpoint
//! recorded on the members, optionally throttled.

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::array::RaidArray;
use crate::checksum::{block_sums, Verified};
use crate::error::{RaidError, Result};
use crate::gf;
use crate::io::{Ctx, RowGuard};
use crate::layout::Role;
use crate::member::{Member, Scratch};
use crate::superblock::SlotState;
use crate::uring::{self, Req};
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

/// The survivors' bytes of a span of rows, read for rebuilding one member.
pub(crate) struct SpanData {
    rows: Range<u64>,
    sources: Vec<usize>,
    bufs: Vec<Scratch>,
}

/// A span of the rebuilt member's chunks, computed from survivors whose checksums matched,
/// to be written by the next step (its rows stay locked until then).
pub(crate) struct Rebuilt {
    rows: Range<u64>,
    out: Scratch,
    /// The checksums of `out`, recorded once it is written.
    sums: Vec<u32>,
}

/// The checksums of a span's survivors, and the rebuilt chunks with theirs.
type Computed = (Vec<Vec<u32>>, Option<(Scratch, Vec<u32>)>);

impl RaidArray {
    /// Rebuilds every member in the `Rebuilding` state, resuming from its checkpoint.
    /// `progress` is called with (bytes done, bytes total) as the rebuilt part grows
    /// (after each span written), while the rebuild holds the row locks of up to two
    /// spans ahead: it must not do I/O on the array itself. The array stays usable.
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
        // Unthrottled, three spans are in flight: the survivors of one are read and the
        // rebuilt chunks of the one before it written while the span between is checked
        // and computed (each span's rows stay locked from its read until it is written);
        // throttled, a rebuild goes span by span and holds no rows while it waits.
        let read_ahead = options.max_bytes_per_sec.is_none_or(|r| r == 0);
        let mut done_before = 0;
        // Moves member `m`'s checkpoint to `row` (the rows before it are rebuilt), if the
        // slot still holds the member this rebuild writes.
        let checkpoint = |m: usize, member: &Option<Arc<Member>>, row: u64| {
            let mut inner = self.lock();
            let slot = &mut inner.slots[m];
            if slot.state == SlotState::Rebuilding && same(&slot.member, member) {
                slot.checkpoint = row * chunk;
            }
        };
        for m in rebuilding {
            let mut since_checkpoint = 0u64;
            let mut last_checkpoint = Instant::now();
            let mut ahead: Option<(SpanData, RowGuard<'_>)> = None;
            let mut pending: Option<(Rebuilt, RowGuard<'_>)> = None;
            let (mut row, mut member) = {
                let inner = self.lock();
                (
                    inner.slots[m].checkpoint / chunk,
                    inner.slots[m].member.clone(),
                )
            };
            // Progress is reported as the checkpoint moves.
            let mut reported = row;
            let mut report = |to: u64| {
                if to > reported {
                    reported = to;
                    progress(done_before + to * chunk, total);
                }
            };
            loop {
                {
                    let inner = self.lock();
                    let slot = &inner.slots[m];
                    if slot.state != SlotState::Rebuilding {
                        drop(inner);
                        let err = self.lock().last_io_error.take();
                        return Err(err.unwrap_or(RaidError::MemberNotFailed {
                            index: m,
                            state: self.lock().slots[m].state.name(),
                        }));
                    }
                    // The member failed and was replaced or re-added meanwhile: start again
                    // from its checkpoint, with nothing read or computed for the old one.
                    // Where this loop left it: the start of the span waiting to be written,
                    // else the next row.
                    let left = pending.as_ref().map_or(row, |(p, _)| p.rows.start);
                    if slot.checkpoint != left * chunk || !same(&slot.member, &member) {
                        (row, member) = (slot.checkpoint / chunk, slot.member.clone());
                        (pending, ahead) = (None, None);
                    }
                }
                let rows = row..(row + rows_per_step).min(self.geo.rows());
                // A re-added member holds every row the bitmap does not mark.
                let partial = self.lock().slots[m].partial;
                let skip =
                    rows.is_empty() || (partial && !self.intents().bitmap.marks_any(rows.clone()));
                if skip {
                    if let Some((p, _guard)) = pending.take() {
                        let mut ctx = Ctx::for_pass(self);
                        let res = ctx.write_rebuilt(m, &p);
                        let err = ctx.error.take();
                        ctx.finish()?;
                        res.map_err(|e| err.unwrap_or(e))?;
                        checkpoint(m, &member, p.rows.end);
                        report(p.rows.end);
                    }
                    ahead = None;
                }
                if rows.is_empty() {
                    self.csums.write_back();
                    let mut inner = self.lock();
                    if let Some(member) = &inner.slots[m].member {
                        member.sync()?;
                    }
                    inner.slots[m].state = SlotState::Active;
                    inner.slots[m].checkpoint = 0;
                    inner.write_superblocks()?;
                    tracing::info!(pool = %inner.pool, member = m, "rebuild finished");
                    let rebuilt = inner.slots[m].member.clone().filter(|_| !partial);
                    drop(inner);
                    // A whole rebuild wrote every row of the new member through the page
                    // cache, and it is synced: its pages are dropped (the instances' writes
                    // during the rebuild with them; clean pages are read from the disk when
                    // next needed), or the copy of a whole member would push the instances'
                    // cached data out. A re-added member's rebuild wrote the marked rows only.
                    if let Some(member) = rebuilt {
                        member.drop_cached();
                    }
                    break;
                }
                let step = (rows.end - rows.start) * chunk;
                row = rows.end;
                if skip {
                    checkpoint(m, &member, rows.end);
                    report(rows.end);
                    continue;
                }
                let done_to = {
                    let (have, guard) = match ahead.take() {
                        Some((data, guard)) if data.rows == rows => (Some(data), guard),
                        _ => (None, self.rows.lock(rows.clone())),
                    };
                    let mut ctx = Ctx::for_pass(self);
                    // The span before stays locked until the checkpoint is past it.
                    let prev = pending.take();
                    let res = if read_ahead {
                        let next = rows.end..(rows.end + rows_per_step).min(self.geo.rows());
                        let next_guard = (!next.is_empty()).then(|| self.rows.lock(next.clone()));
                        let done = ctx.rebuild_step(
                            m,
                            rows.clone(),
                            have,
                            prev.as_ref().map(|p| &p.0),
                            next,
                        );
                        done.map(|(got, mine)| {
                            if let (Some(data), Some(g)) = (got, next_guard) {
                                ahead = Some((data, g));
                            }
                            mine
                        })
                    } else {
                        ctx.rebuild_rows(m, rows.clone()).map(|()| None)
                    };
                    // Rebuilt up to here: this span if it is written, else the one before.
                    let to = match &res {
                        Ok(Some(_)) => rows.start,
                        _ => rows.end,
                    };
                    if res.is_ok() {
                        checkpoint(m, &member, to);
                    }
                    drop(prev);
                    let err = ctx.error.take();
                    ctx.finish()?;
                    if let Some(r) = res.map_err(|e| err.unwrap_or(e))? {
                        pending = Some((r, guard));
                    }
                    to
                };
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
                report(done_to);
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
}

impl Ctx<'_> {
    /// One step of an unthrottled rebuild of member `m`, three spans at a time: while the
    /// survivors of `next` are read and the span before (`prev`, computed and checked by
    /// the step before) is written, the survivors of `rows` (`have`, read by the step
    /// before, or read now) are checksummed and `m`'s chunks computed from them. Returns
    /// the survivors of `next` as read (checked by the next step; `None` if a read failed:
    /// the next step reads them itself), and `rows`' chunks for the next step to write, or
    /// `None` when the survivors' checksums did not match and `rows` was rebuilt row by
    /// row here, reading around the member that lies (written already).
    fn rebuild_step(
        &mut self,
        m: usize,
        rows: Range<u64>,
        have: Option<SpanData>,
        prev: Option<&Rebuilt>,
        next: Range<u64>,
    ) -> Result<(Option<SpanData>, Option<Rebuilt>)> {
        let data = match have {
            Some(d) => Some(d),
            None => self.read_span(m, rows.clone(), false)?,
        };
        let (sources, mut bufs) = match next.is_empty() {
            true => (Vec::new(), Vec::new()),
            false => self.span_buffers(m, next.clone())?,
        };
        let target: Option<Arc<Member>> = match prev {
            Some(p) => match self.slots[m].member.clone().filter(|_| self.writable(m)) {
                Some(t) => Some(t),
                None => return Err(self.data_loss_for(p.rows.start)),
            },
            None => None,
        };
        let readers: Vec<Option<Arc<Member>>> = sources
            .iter()
            .map(|&s| self.slots[s].member.clone())
            .collect();
        let mut reqs = Vec::new();
        if let (Some(p), Some(t)) = (prev, &target) {
            let off = self.geo.member_offset(p.rows.start);
            reqs.push(Req::write(t, off, p.out.as_slice()));
        }
        let next_off = self.geo.member_offset(next.start);
        let mut read = Vec::new();
        for (i, (b, r)) in bufs.iter_mut().zip(&readers).enumerate() {
            if let Some(r) = r {
                reqs.push(Req::read(self.reader(r), next_off, b.as_mut_slice()));
                read.push(i);
            }
        }
        let mut work = None;
        let this = &*self;
        let results = uring::run_during(&mut reqs, || {
            work = data.as_ref().map(|d| this.checksum_and_compute(m, d));
        });
        drop(reqs);
        let mut results = results.into_iter();
        if let (Some(p), Some(t)) = (prev, &target) {
            let off = self.geo.member_offset(p.rows.start);
            let res = results
                .next()
                .expect("uring::run gives one result per request")
                .and_then(|()| self.a.csums.update_sums(t, off, p.out.len(), &p.sums));
            if let Err(e) = res {
                self.fail(m, e);
                return Err(self
                    .error
                    .take()
                    .unwrap_or_else(|| self.data_loss_for(p.rows.start)));
            }
        }
        let mut next_ok = !sources.is_empty() && read.len() == sources.len();
        for (i, res) in read.into_iter().zip(results) {
            if let Err(e) = res {
                self.fail(sources[i], e);
                next_ok = false;
            }
        }
        let next_data = next_ok.then_some(SpanData {
            rows: next,
            sources,
            bufs,
        });
        let mine = match (data, work) {
            (Some(d), Some((sums, Some((out, out_sums))))) if self.span_matches(&d, &sums) => {
                Some(Rebuilt {
                    rows: rows.clone(),
                    out,
                    sums: out_sums,
                })
            }
            _ => None,
        };
        if mine.is_none() {
            self.rebuild_rows(m, rows)?;
        }
        Ok((next_data, mine))
    }

    /// The checksums of the survivors' bytes, and member `m`'s chunks computed from them
    /// with their checksums (`None` if the span cannot be solved).
    fn checksum_and_compute(&self, m: usize, d: &SpanData) -> Computed {
        let sums = d.bufs.iter().map(|b| block_sums(b.as_slice())).collect();
        let out = self.compute_span(m, d).map(|out| {
            let sums = block_sums(out.as_slice());
            (out, sums)
        });
        (sums, out)
    }

    /// Whether the survivors' bytes `d`, whose checksums are `sums`, match the recorded
    /// ones (a mismatch is not counted: the caller reads the span again, row by row).
    fn span_matches(&mut self, d: &SpanData, sums: &[Vec<u32>]) -> bool {
        let off = self.geo.member_offset(d.rows.start);
        for ((&s, b), sums) in d.sources.iter().zip(&d.bufs).zip(sums) {
            let Some(member) = self.slots[s].member.clone() else {
                return false;
            };
            match self
                .a
                .csums
                .matches_sums(&member, off, b.as_slice().len(), sums, self.past_cache)
            {
                Ok(true) => {}
                Ok(false) => return false,
                Err(e) => {
                    self.fail(s, e);
                    return false;
                }
            }
        }
        true
    }

    /// The survivors to read for rebuilding `m` over `rows`, with buffers for them.
    fn span_buffers(&self, m: usize, rows: Range<u64>) -> Result<(Vec<usize>, Vec<Scratch>)> {
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

    /// The survivors' bytes of `rows`, read (and verified if `verify`); `None` if that
    /// fails.
    fn read_span(&mut self, m: usize, rows: Range<u64>, verify: bool) -> Result<Option<SpanData>> {
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
        let good = match verify {
            true => self
                .read_verified_batch(&mut reads, false)
                .iter()
                .all(|v| *v == Verified::Good),
            false => self.read_batch(&mut reads).iter().all(|ok| *ok),
        };
        drop(reads);
        Ok(good.then_some(SpanData {
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
            let mut chunks: Vec<Option<&[u8]>> = vec![None; self.slots.len()];
            for (s, b) in d.sources.iter().zip(&d.bufs) {
                chunks[*s] = Some(&b.as_slice()[at..at + chunk]);
            }
            self.solve_member(row, &chunks, m, &mut out.as_mut_slice()[at..at + chunk])?;
        }
        Some(out)
    }

    /// Member `m`'s chunk of `row` into `out`, from the chunks of the others that are
    /// there (`chunks`, by member), without copying them: the missing data chunks (at most
    /// two) are solved into scratch buffers, or into `out` when `m` holds one of them, and
    /// parity is computed from the data. `None` if the row cannot be solved.
    fn solve_member(
        &self,
        row: u64,
        chunks: &[Option<&[u8]>],
        m: usize,
        out: &mut [u8],
    ) -> Option<()> {
        let geo = self.geo;
        let dm = geo.data_members();
        let data = |d: usize| chunks[geo.data_member(row, d)];
        let p = geo.p_member(row).and_then(|x| chunks[x]);
        let q = geo.q_member(row).and_then(|x| chunks[x]);
        let missing: Vec<usize> = (0..dm).filter(|&d| data(d).is_none()).collect();
        let mine = match geo.role(row, m) {
            Role::Data(x) => Some(x),
            Role::P | Role::Q => None,
        };
        // The solved data chunks: in `out` for the member's own, else in scratch.
        let mut solved: Vec<(usize, Scratch)> = missing
            .iter()
            .filter(|&&d| Some(d) != mine)
            .map(|&d| (d, Scratch::new(out.len())))
            .collect();
        {
            let mut into: Vec<(usize, &mut [u8])> = Vec::with_capacity(2);
            if let Some(x) = mine.filter(|x| missing.contains(x)) {
                into.push((x, &mut *out));
            }
            for (d, b) in solved.iter_mut() {
                into.push((*d, b.as_mut_slice()));
            }
            gf::solve_missing(dm, data, p, q, &mut into)?;
        }
        if let Some(x) = mine {
            // Solved into `out` (the member being rebuilt is never among the sources).
            return missing.contains(&x).then_some(());
        }
        // Parity: from every data chunk, read or solved.
        let all: Vec<&[u8]> = (0..dm)
            .map(|d| {
                data(d).or_else(|| {
                    solved
                        .iter()
                        .find(|(s, _)| *s == d)
                        .map(|(_, b)| b.as_slice())
                })
            })
            .collect::<Option<_>>()?;
        match geo.role(row, m) {
            Role::P => gf::gen_p(&all, out),
            _ => {
                let mut p = Scratch::new(out.len());
                gf::gen_pq(&all, p.as_mut_slice(), out);
            }
        }
        Some(())
    }

    /// Rebuilds member `m`'s chunks of `rows` from the others: one large read per
    /// survivor, all at once, and one write; row by row where that fails.
    fn rebuild_rows(&mut self, m: usize, rows: Range<u64>) -> Result<()> {
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
    fn rebuild_span(&mut self, m: usize, rows: Range<u64>) -> Result<bool> {
        let Some(data) = self.read_span(m, rows.clone(), true)? else {
            return Ok(false);
        };
        let Some(out) = self.compute_span(m, &data) else {
            return Ok(false);
        };
        self.write_span(m, rows, out.as_slice())?;
        Ok(true)
    }

    /// Writes member `m`'s rebuilt chunks of a span.
    fn write_rebuilt(&mut self, m: usize, r: &Rebuilt) -> Result<()> {
        self.write_span(m, r.rows.clone(), r.out.as_slice())
    }

    fn write_span(&mut self, m: usize, rows: Range<u64>, buf: &[u8]) -> Result<()> {
        let off = self.geo.member_offset(rows.start);
        if !self.write_member(m, off, buf) {
            return Err(self
                .error
                .take()
                .unwrap_or_else(|| self.data_loss_for(rows.start)));
        }
        Ok(())
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
}

/// Whether two slot entries hold the same member.
fn same(a: &Option<Arc<Member>>, b: &Option<Arc<Member>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        (None, None) => true,
        _ => false,
    }
}
