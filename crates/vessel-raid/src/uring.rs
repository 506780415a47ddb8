//! Batched member I/O. The member I/Os of one request (the chunks of a stripe, a mirror's
//! copies, a rebuild's survivors, the syncs of a flush) are handed to the kernel together
//! through an io_uring owned by the calling thread, so the members work in parallel and
//! queue depth reaches them; the caller waits for all of them. Where io_uring cannot be set
//! up (disabled by `kernel.io_uring_disabled` or a seccomp filter) the I/Os run one after
//! the other, which is correct and only slower.

use std::cell::RefCell;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

use io_uring::{opcode, types, IoUring};

use crate::error::Result;
use crate::member::{AlignedBuf, Member, IO_ALIGN};

/// Submission queue entries per thread's ring; larger batches go in rounds.
const RING_ENTRIES: u32 = 128;
/// Larger single I/Os are done synchronously (the ring takes 32-bit lengths).
const MAX_RING_IO: usize = 1 << 30;

/// One member I/O of a batch.
pub(crate) enum Op<'a> {
    /// Fill the buffer from the member offset.
    Read(u64, &'a mut [u8]),
    /// Write the buffer at the member offset.
    Write(u64, &'a [u8]),
    /// `fdatasync` the member.
    Sync,
}

/// A member and what to do on it.
pub(crate) struct Req<'a> {
    pub member: &'a Member,
    pub op: Op<'a>,
}

impl<'a> Req<'a> {
    pub fn read(member: &'a Member, off: u64, buf: &'a mut [u8]) -> Self {
        Req {
            member,
            op: Op::Read(off, buf),
        }
    }

    pub fn write(member: &'a Member, off: u64, buf: &'a [u8]) -> Self {
        Req {
            member,
            op: Op::Write(off, buf),
        }
    }

    pub fn sync(member: &'a Member) -> Self {
        Req {
            member,
            op: Op::Sync,
        }
    }
}

thread_local! {
    static RING: RefCell<Option<IoUring>> = RefCell::new(new_ring());
}

static WARNED: AtomicBool = AtomicBool::new(false);

fn new_ring() -> Option<IoUring> {
    match IoUring::new(RING_ENTRIES) {
        Ok(r) => Some(r),
        Err(e) => {
            if !WARNED.swap(true, Ordering::Relaxed) {
                tracing::warn!(error = %e, "io_uring unavailable; RAID member I/O runs one at a time");
            }
            None
        }
    }
}

/// Runs every request, in parallel where the kernel allows; one result per request, in
/// order. Returns only when every I/O is complete.
pub(crate) fn run(reqs: &mut [Req<'_>]) -> Vec<Result<()>> {
    run_during(reqs, || {})
}

/// [`run`], calling `during` while the I/O is in flight (CPU work that does not depend on
/// it, such as checksums of data being written).
pub(crate) fn run_during(reqs: &mut [Req<'_>], during: impl FnOnce()) -> Vec<Result<()>> {
    let small = reqs.len() <= 1
        && reqs.iter().all(|r| match &r.op {
            Op::Read(_, b) => b.len() < 64 << 10,
            Op::Write(_, b) => b.len() < 64 << 10,
            Op::Sync => true,
        });
    if small {
        let out = reqs.iter_mut().map(run_one).collect();
        during();
        return out;
    }
    let mut during = Some(during);
    let out = RING.with(|r| match r.borrow_mut().as_mut() {
        Some(ring) => {
            let mut out = Vec::with_capacity(reqs.len());
            for round in reqs.chunks_mut(RING_ENTRIES as usize) {
                out.extend(run_ring(ring, round, &mut during));
            }
            out
        }
        None => reqs.iter_mut().map(run_one).collect(),
    });
    if let Some(f) = during.take() {
        f();
    }
    out
}

fn run_one(req: &mut Req<'_>) -> Result<()> {
    match &mut req.op {
        Op::Read(off, buf) => req.member.read_at(*off, buf),
        Op::Write(off, buf) => req.member.write_at(*off, buf),
        Op::Sync => req.member.sync(),
    }
}

fn unaligned(member: &Member, ptr: *const u8) -> bool {
    member.is_direct() && !(ptr as usize).is_multiple_of(IO_ALIGN)
}

fn run_ring<F: FnOnce()>(
    ring: &mut IoUring,
    reqs: &mut [Req<'_>],
    during: &mut Option<F>,
) -> Vec<Result<()>> {
    let n = reqs.len();
    let mut results: Vec<Option<io::Result<usize>>> = (0..n).map(|_| None).collect();
    // O_DIRECT needs aligned buffers: unaligned ones go through a bounce buffer.
    let mut bounce: Vec<Option<AlignedBuf>> = (0..n).map(|_| None).collect();
    let mut queued = 0usize;
    // Members over NBD are not files: their I/O goes on their connection, while the
    // kernel does the rest.
    let mut remote = Vec::new();
    for (i, req) in reqs.iter_mut().enumerate() {
        let Some(fd) = req.member.fd() else {
            remote.push(i);
            continue;
        };
        let fd = types::Fd(fd);
        let sqe = match &mut req.op {
            Op::Read(off, buf) => {
                if buf.len() > MAX_RING_IO {
                    results[i] = Some(
                        req.member
                            .read_at(*off, buf)
                            .map(|()| buf.len())
                            .map_err(to_io),
                    );
                    continue;
                }
                let ptr = if unaligned(req.member, buf.as_ptr()) {
                    bounce[i]
                        .insert(AlignedBuf::new(buf.len()))
                        .as_mut_slice()
                        .as_mut_ptr()
                } else {
                    buf.as_mut_ptr()
                };
                opcode::Read::new(fd, ptr, buf.len() as u32)
                    .offset(*off)
                    .build()
            }
            Op::Write(off, buf) => {
                if buf.len() > MAX_RING_IO {
                    results[i] = Some(
                        req.member
                            .write_at(*off, buf)
                            .map(|()| buf.len())
                            .map_err(to_io),
                    );
                    continue;
                }
                let ptr = if unaligned(req.member, buf.as_ptr()) {
                    let b = bounce[i].insert(AlignedBuf::new(buf.len()));
                    b.as_mut_slice().copy_from_slice(buf);
                    b.as_slice().as_ptr()
                } else {
                    buf.as_ptr()
                };
                opcode::Write::new(fd, ptr, buf.len() as u32)
                    .offset(*off)
                    .build()
            }
            Op::Sync => opcode::Fsync::new(fd)
                .flags(types::FsyncFlags::DATASYNC)
                .build(),
        };
        // SAFETY: every buffer an entry points at (the caller's, borrowed for this call,
        // or a bounce buffer in `bounce`) outlives the entry: this function does not
        // return before the kernel has completed every entry it queued.
        let pushed = unsafe { ring.submission().push(&sqe.user_data(i as u64)) };
        if pushed.is_err() {
            // Cannot happen: a round is never larger than the ring.
            results[i] = Some(Err(io::Error::other("io_uring submission queue full")));
            continue;
        }
        queued += 1;
    }
    let mut reaped = 0usize;
    if !remote.is_empty() {
        submit(ring);
        run_remote(reqs, &remote, &mut results);
    }
    if let Some(f) = during.take() {
        // Hand the I/O to the kernel first, then do the caller's work meanwhile.
        submit(ring);
        f();
    }
    while reaped < queued {
        match ring.submit_and_wait(queued - reaped) {
            Ok(_) => {}
            Err(e) if again(&e) => {}
            Err(e) => {
                // The kernel may still own the buffers; returning would free them under it.
                tracing::error!(error = %e, "io_uring submit failed with I/O in flight");
                std::process::abort();
            }
        }
        for cqe in ring.completion() {
            let i = cqe.user_data() as usize;
            let res = cqe.result();
            results[i] = Some(if res < 0 {
                Err(io::Error::from_raw_os_error(-res))
            } else {
                Ok(res as usize)
            });
            reaped += 1;
        }
    }
    reqs.iter_mut()
        .zip(results)
        .zip(bounce)
        .map(|((req, res), bounce)| {
            let res = res.unwrap_or_else(|| Err(io::Error::other("I/O not completed")));
            finish(req, res, bounce)
        })
        .collect()
}

/// Whether an `io_uring_enter` error only asks to try again.
fn again(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINTR | libc::EAGAIN | libc::EBUSY)
    )
}

/// Hands what is queued to the kernel without waiting for it.
fn submit(ring: &mut IoUring) {
    loop {
        match ring.submit() {
            Ok(_) => break,
            Err(e) if again(&e) => {}
            Err(e) => {
                tracing::error!(error = %e, "io_uring submit failed with I/O queued");
                std::process::abort();
            }
        }
    }
}

/// Runs the requests `which` of `reqs`, on members over NBD: each member's requests in one
/// batch on its connection (in flight together).
fn run_remote(reqs: &mut [Req<'_>], which: &[usize], results: &mut [Option<io::Result<usize>>]) {
    let mut left: Vec<usize> = which.to_vec();
    while let Some(&first) = left.first() {
        let id = reqs[first].member.id();
        let (mine, rest): (Vec<usize>, Vec<usize>) =
            left.iter().partition(|&&i| reqs[i].member.id() == id);
        left = rest;
        let Some(client) = reqs[first].member.nbd() else {
            continue;
        };
        let mut lens = Vec::with_capacity(mine.len());
        let mut ops = Vec::with_capacity(mine.len());
        for (_, req) in reqs
            .iter_mut()
            .enumerate()
            .filter(|(j, _)| mine.contains(j))
        {
            match &mut req.op {
                Op::Read(off, buf) => {
                    lens.push(buf.len());
                    ops.push(vessel_nbd::ClientOp::Read(*off, buf));
                }
                Op::Write(off, buf) => {
                    lens.push(buf.len());
                    ops.push(vessel_nbd::ClientOp::Write(*off, buf));
                }
                Op::Sync => {
                    lens.push(0);
                    ops.push(vessel_nbd::ClientOp::Flush);
                }
            }
        }
        for ((i, len), res) in mine.iter().zip(lens).zip(client.batch(&mut ops)) {
            results[*i] = Some(res.map(|()| len));
        }
    }
}

fn to_io(e: crate::error::RaidError) -> io::Error {
    match e {
        crate::error::RaidError::Io { source, .. } => source,
        other => io::Error::other(other.to_string()),
    }
}

/// Completes a short transfer synchronously and copies bounce buffers back.
fn finish(req: &mut Req<'_>, res: io::Result<usize>, bounce: Option<AlignedBuf>) -> Result<()> {
    let member = req.member;
    match &mut req.op {
        Op::Read(off, buf) => {
            let done = res.map_err(|e| member.err("read", e))?;
            if let Some(b) = &bounce {
                buf[..done].copy_from_slice(&b.as_slice()[..done]);
            }
            if done < buf.len() {
                member.read_at(*off + done as u64, &mut buf[done..])?;
            }
            Ok(())
        }
        Op::Write(off, buf) => {
            let done = res.map_err(|e| member.err("write", e))?;
            if done < buf.len() {
                member.write_at(*off + done as u64, &buf[done..])?;
            }
            Ok(())
        }
        Op::Sync => res.map(|_| ()).map_err(|e| member.err("flush", e)),
    }
}
