//! The `efficiency` reference: the member I/O a RAID level must do for each request, done by
//! hand on the raw files, the I/Os of one request all in flight at once (an io_uring per
//! thread), reads before the writes that depend on them.
//!
//! What "must do" means, per request (after md):
//! - reads: the data pieces from the members holding them (RAID 1: one mirror, taking
//!   turns by megabyte); a piece on a failed member: every surviving member of that row
//!   over the piece's columns.
//! - RAID 0 writes: the data pieces. RAID 1: the data to every mirror.
//! - RAID 5/6 writes: a full row: every member's chunk (data and parity), nothing read;
//!   a partial row: md's read-modify-write, reading the touched data pieces and the
//!   parity over their columns and writing them back.
//! - rebuild: every survivor read over a 1 MiB span, then the new member written.
//!
//! Contiguous pieces of one member in one request are joined, as the engine joins them.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use io_uring::{opcode, types, IoUring};
use vessel_raid::layout::Geometry;
use vessel_raid::member::AlignedBuf;
use vessel_raid::RaidLevel;

const ALIGN: u64 = 4096;

/// One member I/O: member, member offset, length.
#[derive(Debug, Clone, Copy)]
pub struct Io {
    pub m: usize,
    pub off: u64,
    pub len: usize,
}

/// The I/Os of one request.
#[derive(Debug, Default)]
pub struct Phases {
    pub reads: Vec<Io>,
    pub writes: Vec<Io>,
}

fn push(list: &mut Vec<Io>, io: Io) {
    if let Some(last) = list
        .iter_mut()
        .rev()
        .find(|l| l.m == io.m && l.off + l.len as u64 == io.off)
    {
        last.len += io.len;
        return;
    }
    list.push(io);
}

/// The member I/Os of a request of `len` bytes at array `offset`, with `failed` members out.
pub fn plan(geo: &Geometry, offset: u64, len: u64, write: bool, failed: &[usize]) -> Phases {
    let mut ph = Phases::default();
    let rb = geo.row_bytes();
    let chunk = geo.chunk;
    let n = geo.members;
    let alive = |m: usize| !failed.contains(&m);
    let mut pos = offset;
    let end = offset + len;
    while pos < end {
        let row = pos / rb;
        let within = pos % rb;
        let seg = (rb - within).min(end - pos);
        let base = geo.member_offset(row);
        // The data pieces of this row: (data index, aligned columns).
        let mut pieces = Vec::new();
        let mut p = within;
        while p < within + seg {
            let d = (p / chunk) as usize;
            let col = p % chunk;
            let l = (chunk - col).min(within + seg - p);
            let c0 = col / ALIGN * ALIGN;
            let c1 = (col + l).div_ceil(ALIGN) * ALIGN;
            pieces.push((d, c0, c1));
            p += l;
        }
        let full_row = within == 0 && seg == rb;
        match (geo.level, write) {
            (RaidLevel::Raid1, false) => {
                let turn = ((1 << 20) / chunk).max(1);
                let first = (row / turn % n as u64) as usize;
                let m = (0..n)
                    .map(|i| (first + i) % n)
                    .find(|&m| alive(m))
                    .unwrap_or(0);
                for &(_, c0, c1) in &pieces {
                    push(
                        &mut ph.reads,
                        Io {
                            m,
                            off: base + c0,
                            len: (c1 - c0) as usize,
                        },
                    );
                }
            }
            (RaidLevel::Raid1, true) => {
                for m in (0..n).filter(|&m| alive(m)) {
                    for &(_, c0, c1) in &pieces {
                        push(
                            &mut ph.writes,
                            Io {
                                m,
                                off: base + c0,
                                len: (c1 - c0) as usize,
                            },
                        );
                    }
                }
            }
            (_, false) => {
                for &(d, c0, c1) in &pieces {
                    let m = geo.data_member(row, d);
                    let io = |m| Io {
                        m,
                        off: base + c0,
                        len: (c1 - c0) as usize,
                    };
                    if alive(m) {
                        push(&mut ph.reads, io(m));
                    } else {
                        for s in (0..n).filter(|&s| alive(s)) {
                            push(&mut ph.reads, io(s));
                        }
                    }
                }
            }
            (RaidLevel::Raid0, true) => {
                for &(d, c0, c1) in &pieces {
                    let m = geo.data_member(row, d);
                    push(
                        &mut ph.writes,
                        Io {
                            m,
                            off: base + c0,
                            len: (c1 - c0) as usize,
                        },
                    );
                }
            }
            (_, true) if full_row => {
                for m in (0..n).filter(|&m| alive(m)) {
                    push(
                        &mut ph.writes,
                        Io {
                            m,
                            off: base,
                            len: chunk as usize,
                        },
                    );
                }
            }
            (_, true) => {
                let (u0, u1) = pieces
                    .iter()
                    .fold((chunk, 0), |(a, b), &(_, c0, c1)| (a.min(c0), b.max(c1)));
                let parity = [geo.p_member(row), geo.q_member(row)];
                for &(d, c0, c1) in &pieces {
                    let io = Io {
                        m: geo.data_member(row, d),
                        off: base + c0,
                        len: (c1 - c0) as usize,
                    };
                    push(&mut ph.reads, io);
                    push(&mut ph.writes, io);
                }
                for m in parity.into_iter().flatten() {
                    let io = Io {
                        m,
                        off: base + u0,
                        len: (u1 - u0) as usize,
                    };
                    push(&mut ph.reads, io);
                    push(&mut ph.writes, io);
                }
            }
        }
        pos += seg;
    }
    ph
}

/// The member I/Os of rebuilding member `target` over rows `rows`, with `missing` members
/// out besides it.
pub fn rebuild_plan(
    geo: &Geometry,
    rows: std::ops::Range<u64>,
    target: usize,
    missing: &[usize],
) -> Phases {
    let off = geo.member_offset(rows.start);
    let len = ((rows.end - rows.start) * geo.chunk) as usize;
    let survivors: Vec<usize> = (0..geo.members)
        .filter(|&m| m != target && !missing.contains(&m))
        .collect();
    let take = if geo.level == RaidLevel::Raid1 {
        1
    } else {
        survivors.len()
    };
    Phases {
        reads: survivors
            .into_iter()
            .take(take)
            .map(|m| Io { m, off, len })
            .collect(),
        writes: vec![Io {
            m: target,
            off,
            len,
        }],
    }
}

/// The raw files, opened for the hand-made I/O.
pub struct Hand {
    files: Vec<File>,
}

/// Per-thread state: a ring and a scratch buffer.
pub struct Worker {
    ring: IoUring,
    scratch: AlignedBuf,
}

impl Worker {
    pub fn new() -> io::Result<Self> {
        Ok(Worker {
            ring: IoUring::new(256)?,
            scratch: AlignedBuf::new(0),
        })
    }
}

impl Hand {
    pub fn open(paths: &[impl AsRef<Path>]) -> io::Result<Self> {
        let files = paths
            .iter()
            .map(|p| {
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .custom_flags(libc::O_DIRECT)
                    .open(p)
            })
            .collect::<io::Result<_>>()?;
        Ok(Hand { files })
    }

    /// Runs one request's I/Os: all reads at once, then all writes at once.
    pub fn run(&self, w: &mut Worker, ph: &Phases) -> io::Result<()> {
        self.batch(w, &ph.reads, false)?;
        self.batch(w, &ph.writes, true)
    }

    fn batch(&self, w: &mut Worker, ios: &[Io], write: bool) -> io::Result<()> {
        if ios.is_empty() {
            return Ok(());
        }
        let total: usize = ios.iter().map(|io| io.len).sum();
        if w.scratch.len() < total {
            w.scratch = AlignedBuf::new(total);
        }
        let base = w.scratch.as_mut_slice().as_mut_ptr();
        let mut at = 0usize;
        for (i, io) in ios.iter().enumerate() {
            let fd = types::Fd(self.files[io.m].as_raw_fd());
            // SAFETY: `at + len <= total <= scratch.len()`.
            let ptr = unsafe { base.add(at) };
            let sqe = if write {
                opcode::Write::new(fd, ptr, io.len as u32)
                    .offset(io.off)
                    .build()
            } else {
                opcode::Read::new(fd, ptr, io.len as u32)
                    .offset(io.off)
                    .build()
            };
            // SAFETY: the scratch buffer outlives the I/O: we wait for every completion
            // below before returning.
            unsafe {
                w.ring
                    .submission()
                    .push(&sqe.user_data(i as u64))
                    .map_err(|_| io::Error::other("ring full"))?;
            }
            at += io.len;
        }
        let mut done = 0;
        let mut first_err = None;
        while done < ios.len() {
            w.ring.submit_and_wait(ios.len() - done)?;
            for cqe in w.ring.completion() {
                done += 1;
                let io = ios[cqe.user_data() as usize];
                if cqe.result() < 0 {
                    first_err.get_or_insert(io::Error::from_raw_os_error(-cqe.result()));
                } else if (cqe.result() as usize) < io.len {
                    first_err.get_or_insert(io::Error::other("short transfer"));
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// `fdatasync` of every file.
    pub fn sync(&self) -> io::Result<()> {
        for f in &self.files {
            f.sync_data()?;
        }
        Ok(())
    }
}
