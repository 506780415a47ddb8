//! Rebuilding a member onto a replacement: span by span, resumable from the checkpoint
//! recorded on the members, optionally throttled.

use std::time::{Duration, Instant};

use crate::array::RaidArray;
use crate::checksum::Verified;
use crate::error::{RaidError, Result};
use crate::gf;
use crate::io::Ctx;
use crate::layout::Role;
use crate::member::Scratch;
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

/// The survivors' bytes of a span of rows, read and verified, for rebuilding one member.
pub(crate) struct SpanData {
    rows: std::ops::Range<u64>,
    sources: Vec<usize>,
    bufs: Vec<Scratch>,
}

impl RaidArray {
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
}

impl Ctx<'_> {
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
}
