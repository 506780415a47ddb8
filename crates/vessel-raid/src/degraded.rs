//! Degraded reads solved in place. Where a read is 4 KiB-aligned and each row it needs to
//! solve misses exactly one data chunk and has its P readable (RAID 5 with a member out;
//! RAID 6 with one out, or, with two out, a request whose rows all miss data and Q), the
//! missing chunk is the xor of P and the row's other data chunks over the same columns:
//! the chunks the caller asked for are read straight into its buffer, only P and the
//! chunks it did not ask for into scratch buffers, and the missing chunk is computed where
//! the caller wants it (P copied there first, the rest xored in). A request with any other
//! row goes the general way (`Ctx::read_direct`).

use crate::checksum::Verified;
use crate::gf;
use crate::io::{push_run, Ctx, Piece};
use crate::layout::DATA_OFFSET;
use crate::member::Scratch;

/// Where one source of a solved chunk is, once read.
enum Src {
    /// In the caller's buffer, from this offset of it (a piece asked for covers the
    /// solved columns).
    Caller(usize),
    /// In the scratch buffer of this extra read (by index).
    Extra(usize),
}

/// How to solve one missing piece: P first, then the other data chunks of its row.
struct XorRow {
    /// The missing piece, by index.
    piece: usize,
    sources: Vec<Src>,
}

/// A read solved in place: the rows, and the member ranges read besides the caller's
/// pieces (member, offset, length).
pub(crate) struct XorPlan {
    rows: Vec<XorRow>,
    extras: Vec<(usize, u64, usize)>,
}

impl Ctx<'_> {
    /// The plan for solving every missing piece of a read by xor, or `None` where a row
    /// misses more than one data chunk or its P (the general solver does those).
    pub(crate) fn xor_plan(
        &self,
        pieces: &[Piece],
        solve_rows: &[(u64, u64, u64)],
    ) -> Option<XorPlan> {
        let geo = self.geo;
        let dm = geo.data_members();
        let mut plan = XorPlan {
            rows: Vec::new(),
            extras: Vec::new(),
        };
        let row_of = |p: &Piece| (p.at - DATA_OFFSET) / geo.chunk;
        for &(row, _, _) in solve_rows {
            let mut missing = (0..pieces.len())
                .filter(|&i| pieces[i].m == usize::MAX && row_of(&pieces[i]) == row);
            let piece = missing.next()?;
            if missing.next().is_some() {
                return None;
            }
            let gone: Vec<usize> = (0..dm)
                .filter(|&d| !self.readable(geo.data_member(row, d), row))
                .collect();
            let [x] = gone[..] else {
                return None;
            };
            let p = geo.p_member(row).filter(|&p| self.readable(p, row))?;
            let (at, len) = (pieces[piece].at, pieces[piece].len);
            let mut sources = Vec::with_capacity(dm);
            plan.extras.push((p, at, len));
            sources.push(Src::Extra(plan.extras.len() - 1));
            for d in (0..dm).filter(|&d| d != x) {
                let m = geo.data_member(row, d);
                let covers =
                    |q: &&Piece| q.m == m && q.at <= at && at + len as u64 <= q.at + q.len as u64;
                match pieces.iter().find(covers) {
                    Some(q) => sources.push(Src::Caller(q.dst + (at - q.at) as usize)),
                    None => {
                        plan.extras.push((m, at, len));
                        sources.push(Src::Extra(plan.extras.len() - 1));
                    }
                }
            }
            plan.rows.push(XorRow { piece, sources });
        }
        Some(plan)
    }

    /// Reads aligned `pieces` (`skip` 0, `len` = `n`) into `buf`, solving the missing
    /// ones as `plan` says; `false` (nothing trusted) if a member fails or returns bytes
    /// that fail their checksums.
    pub(crate) fn read_solving(
        &mut self,
        buf: &mut [u8],
        pieces: &[Piece],
        plan: &XorPlan,
    ) -> bool {
        let mut scratch: Vec<Scratch> = plan.extras.iter().map(|e| Scratch::new(e.2)).collect();
        {
            // Every member range to read, in member order so that a member's adjacent
            // ranges go in one vectored read.
            let mut segs: Vec<(usize, u64, &mut [u8])> = Vec::new();
            let mut rest = &mut buf[..];
            for p in pieces {
                let (seg, tail) = std::mem::take(&mut rest).split_at_mut(p.n);
                rest = tail;
                if p.m != usize::MAX {
                    segs.push((p.m, p.at, seg));
                }
            }
            for (e, s) in plan.extras.iter().zip(scratch.iter_mut()) {
                segs.push((e.0, e.1, s.as_mut_slice()));
            }
            segs.sort_by_key(|s| (s.0, s.1));
            let mut runs = Vec::new();
            for (m, at, seg) in segs {
                push_run(&mut runs, m, at, seg.len(), seg);
            }
            let mut reads: Vec<(usize, u64, Vec<&mut [u8]>)> = runs
                .into_iter()
                .map(|(m, at, _, segs)| (m, at, segs))
                .collect();
            let got = self.read_verified_segs(&mut reads, false);
            if got.iter().any(|v| *v != Verified::Good) {
                return false;
            }
        }
        for r in &plan.rows {
            let p = &pieces[r.piece];
            for (i, src) in r.sources.iter().enumerate() {
                let first = i == 0;
                match *src {
                    Src::Extra(e) => {
                        let s = &scratch[e].as_slice()[..p.n];
                        let d = &mut buf[p.dst..p.dst + p.n];
                        if first {
                            d.copy_from_slice(s);
                        } else {
                            gf::xor_into(d, s);
                        }
                    }
                    Src::Caller(at) => xor_within(buf, p.dst, at, p.n, first),
                }
            }
        }
        true
    }
}

/// `buf[dst..dst + n]` = (or ^=, unless `copy`) `buf[src..src + n]`; the ranges do not
/// overlap.
fn xor_within(buf: &mut [u8], dst: usize, src: usize, n: usize, copy: bool) {
    let (d, s) = if dst < src {
        let (a, b) = buf.split_at_mut(src);
        (&mut a[dst..dst + n], &b[..n])
    } else {
        let (a, b) = buf.split_at_mut(dst);
        (&mut b[..n], &a[src..src + n])
    };
    if copy {
        d.copy_from_slice(s);
    } else {
        gf::xor_into(d, s);
    }
}
