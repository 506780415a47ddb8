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
use crate::member::{Member, Scratch, IO_ALIGN};

/// Submission queue entries per thread's ring; larger batches go in rounds.
const RING_ENTRIES: u32 = 128;
/// Larger single I/Os are done synchronously (the ring takes 32-bit lengths).
const MAX_RING_IO: usize = 1 << 30;
/// Most segments one vectored I/O takes (`IOV_MAX`); more are gathered first.
const MAX_SEGS: usize = 1024;
/// Writes through the page cache (members not `O_DIRECT`) go to the kernel in pieces of at
/// most this many bytes. The page cache keeps a write's pages in folios as large as the
/// write (up to 2 MiB), and ext4 walks every block of a folio on each later write into it:
/// after a thin extent's first write (4 MiB, 1 MiB per member of a 4-member RAID 0) a 4 KiB
/// write cost the server 18 µs of CPU where the file servers, whose clients' 256 KiB writes
/// made 256 KiB folios, spent 9 (measured; a third of it in `ext4_block_write_begin`); a
/// file written in 64 KiB pieces cost 11–12.6 µs per 4 KiB write against 15–18 in 256 KiB
/// pieces (alternating rounds). NBD's file export writes in the same pieces.
const BUFFERED_WRITE_PIECE: usize = 64 << 10;

/// One member I/O of a batch. Reads and writes take a list of segments that lie one after
/// the other on the member (a `readv`/`writev`): a request's pieces go to and from the
/// caller's buffer without being gathered into one first.
pub(crate) enum Op<'a> {
    /// Fill the segments from the member offset on.
    Read(u64, Vec<&'a mut [u8]>),
    /// Write the segments at the member offset on.
    Write(u64, Vec<&'a [u8]>),
    /// `fdatasync` the member.
    Sync,
}

impl Op<'_> {
    /// A read's or write's member offset, whether it writes, and its segments as the
    /// kernel takes them; `None` for a sync.
    fn iovecs(&mut self) -> Option<(u64, bool, Vec<libc::iovec>)> {
        let iovec = |base: *mut u8, len: usize| libc::iovec {
            iov_base: base.cast(),
            iov_len: len,
        };
        match self {
            Op::Read(off, segs) => Some((
                *off,
                false,
                segs.iter_mut()
                    .map(|s| iovec(s.as_mut_ptr(), s.len()))
                    .collect(),
            )),
            Op::Write(off, segs) => Some((
                *off,
                true,
                segs.iter()
                    .map(|s| iovec(s.as_ptr().cast_mut(), s.len()))
                    .collect(),
            )),
            Op::Sync => None,
        }
    }

    /// Bytes the I/O moves.
    fn len(&self) -> usize {
        match self {
            Op::Read(_, segs) => segs.iter().map(|s| s.len()).sum(),
            Op::Write(_, segs) => segs.iter().map(|s| s.len()).sum(),
            Op::Sync => 0,
        }
    }
}

/// A member and what to do on it.
pub(crate) struct Req<'a> {
    pub member: &'a Member,
    pub op: Op<'a>,
}

impl<'a> Req<'a> {
    pub fn read(member: &'a Member, off: u64, buf: &'a mut [u8]) -> Self {
        Self::readv(member, off, vec![buf])
    }

    pub fn write(member: &'a Member, off: u64, buf: &'a [u8]) -> Self {
        Self::writev(member, off, vec![buf])
    }

    /// Reads the member from `off` on into `segs`, one after the other.
    pub fn readv(member: &'a Member, off: u64, segs: Vec<&'a mut [u8]>) -> Self {
        Req {
            member,
            op: Op::Read(off, segs),
        }
    }

    /// Writes `segs` to the member from `off` on, one after the other.
    pub fn writev(member: &'a Member, off: u64, segs: Vec<&'a [u8]>) -> Self {
        Req {
            member,
            op: Op::Write(off, segs),
        }
    }

    pub fn sync(member: &'a Member) -> Self {
        Req {
            member,
            op: Op::Sync,
        }
    }
}

/// The bytes of `segs` from byte `from` on, in one aligned buffer.
fn gather(segs: &[&[u8]], from: usize) -> Scratch {
    let mut b = Scratch::empty(segs.iter().map(|s| s.len()).sum::<usize>() - from);
    let mut skip = from;
    for s in segs {
        if skip >= s.len() {
            skip -= s.len();
            continue;
        }
        b.extend_from_slice(&s[skip..]);
        skip = 0;
    }
    b
}

/// Copies `data` into `segs` from byte `from` of the segments on.
fn scatter(segs: &mut [&mut [u8]], from: usize, data: &[u8]) {
    let (mut skip, mut data) = (from, data);
    for s in segs.iter_mut() {
        if data.is_empty() {
            break;
        }
        if skip >= s.len() {
            skip -= s.len();
            continue;
        }
        let n = (s.len() - skip).min(data.len());
        s[skip..skip + n].copy_from_slice(&data[..n]);
        data = &data[n..];
        skip = 0;
    }
}

/// Reads the member from `off` on into `segs`, from byte `from` of them on.
fn read_rest(member: &Member, off: u64, segs: &mut [&mut [u8]], from: usize) -> Result<()> {
    let total: usize = segs.iter().map(|s| s.len()).sum();
    if segs.len() == 1 {
        return member.read_at(off, &mut segs[0][from..]);
    }
    let mut b = Scratch::new(total - from);
    member.read_at(off, b.as_mut_slice())?;
    scatter(segs, from, b.as_slice());
    Ok(())
}

/// Writes `segs` from byte `from` of them on to the member at `off`.
fn write_rest(member: &Member, off: u64, segs: &[&[u8]], from: usize) -> Result<()> {
    if segs.len() == 1 {
        return member.write_at(off, &segs[0][from..]);
    }
    member.write_at(off, gather(segs, from).as_slice())
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
/// order. Returns only when every I/O is complete. The requests' operations may have been
/// moved out by then (buffered writes cut into pieces): drop them after.
pub(crate) fn run(reqs: &mut [Req<'_>]) -> Vec<Result<()>> {
    // No work to do meanwhile: the I/O is handed over and waited for in one system call.
    run_with(reqs, None::<fn()>)
}

/// [`run`], calling `during` while the I/O is in flight (CPU work that does not depend on
/// it, such as checksums of data being written).
pub(crate) fn run_during(reqs: &mut [Req<'_>], during: impl FnOnce()) -> Vec<Result<()>> {
    run_with(reqs, Some(during))
}

fn run_with(reqs: &mut [Req<'_>], mut during: Option<impl FnOnce()>) -> Vec<Result<()>> {
    if let Some((mut pieces, owner)) = split_buffered_writes(reqs) {
        let mut out: Vec<Result<()>> = (0..reqs.len()).map(|_| Ok(())).collect();
        for (i, res) in owner.into_iter().zip(run_with(&mut pieces, during)) {
            if let (Err(e), true) = (res, out[i].is_ok()) {
                out[i] = Err(e);
            }
        }
        return out;
    }
    let small = reqs.len() <= 1 && reqs.iter().all(|r| r.op.len() < 64 << 10);
    if small {
        let out = reqs.iter_mut().map(run_one).collect();
        if let Some(f) = during.take() {
            f();
        }
        return out;
    }
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

/// The requests with every write through the page cache larger than
/// [`BUFFERED_WRITE_PIECE`] cut into pieces of that size, and for each piece the index of
/// the request it belongs to; `None` when no write needs cutting. The requests are left
/// empty (their operations moved into the pieces).
fn split_buffered_writes<'a>(reqs: &mut [Req<'a>]) -> Option<(Vec<Req<'a>>, Vec<usize>)> {
    let oversized = |r: &Req<'_>| {
        matches!(r.op, Op::Write(..))
            && !r.member.is_direct()
            && r.member.fd().is_some()
            && r.op.len() > BUFFERED_WRITE_PIECE
    };
    if !reqs.iter().any(oversized) {
        return None;
    }
    let (mut pieces, mut owner) = (Vec::new(), Vec::new());
    for (i, req) in reqs.iter_mut().enumerate() {
        let member = req.member;
        let cut = oversized(req);
        let op = std::mem::replace(&mut req.op, Op::Write(0, Vec::new()));
        let (off, segs) = match op {
            Op::Write(off, segs) if cut => (off, segs),
            op => {
                pieces.push(Req { member, op });
                owner.push(i);
                continue;
            }
        };
        let (mut at, mut cur, mut cur_len) = (off, Vec::new(), 0usize);
        for seg in segs {
            let mut seg: &'a [u8] = seg;
            while !seg.is_empty() {
                let n = (BUFFERED_WRITE_PIECE - cur_len).min(seg.len());
                cur.push(&seg[..n]);
                cur_len += n;
                seg = &seg[n..];
                if cur_len == BUFFERED_WRITE_PIECE {
                    pieces.push(Req::writev(member, at, std::mem::take(&mut cur)));
                    owner.push(i);
                    at += cur_len as u64;
                    cur_len = 0;
                }
            }
        }
        if cur_len > 0 {
            pieces.push(Req::writev(member, at, cur));
            owner.push(i);
        }
    }
    Some((pieces, owner))
}

fn run_one(req: &mut Req<'_>) -> Result<()> {
    match &mut req.op {
        Op::Read(off, segs) => read_rest(req.member, *off, segs, 0),
        Op::Write(off, segs) => write_rest(req.member, *off, segs, 0),
        Op::Sync => req.member.sync(),
    }
}

/// Whether `O_DIRECT` refuses these segments as they are: a start or a length (but the
/// last's) off the alignment.
fn unaligned(member: &Member, iov: &[libc::iovec]) -> bool {
    let last = iov.len().saturating_sub(1);
    member.is_direct()
        && iov.iter().enumerate().any(|(i, v)| {
            !(v.iov_base as usize).is_multiple_of(IO_ALIGN)
                || (i < last && !v.iov_len.is_multiple_of(IO_ALIGN))
        })
}

fn run_ring<F: FnOnce()>(
    ring: &mut IoUring,
    reqs: &mut [Req<'_>],
    during: &mut Option<F>,
) -> Vec<Result<()>> {
    let n = reqs.len();
    let mut results: Vec<Option<io::Result<usize>>> = (0..n).map(|_| None).collect();
    // O_DIRECT needs aligned buffers: unaligned segments go through one bounce buffer, as
    // do more segments than one I/O takes.
    let mut bounce: Vec<Option<Scratch>> = (0..n).map(|_| None).collect();
    // The segment lists of vectored I/Os, kept until the kernel is done with them.
    let mut iovs: Vec<Vec<libc::iovec>> = (0..n).map(|_| Vec::new()).collect();
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
        let len = req.op.len();
        if len > MAX_RING_IO {
            results[i] = Some(run_one(req).map(|()| len).map_err(to_io));
            continue;
        }
        let member = req.member;
        let sqe = match req.op.iovecs() {
            None => opcode::Fsync::new(fd)
                .flags(types::FsyncFlags::DATASYNC)
                .build(),
            Some((off, write, segs)) => {
                // Through one bounce buffer where O_DIRECT refuses the segments as they
                // are, or where there are more than one I/O takes.
                let iov = &mut iovs[i];
                *iov = segs;
                if iov.len() > MAX_SEGS || unaligned(member, iov) {
                    let b = bounce[i].insert(match &req.op {
                        Op::Write(_, segs) => gather(segs, 0),
                        _ => Scratch::new(len),
                    });
                    *iov = vec![libc::iovec {
                        iov_base: b.as_mut_slice().as_mut_ptr().cast(),
                        iov_len: len,
                    }];
                }
                let (ptr, n) = (iov.as_ptr(), iov.len() as u32);
                match (write, iov.as_slice()) {
                    (false, [one]) => opcode::Read::new(fd, one.iov_base.cast(), len as u32)
                        .offset(off)
                        .build(),
                    (true, [one]) => {
                        opcode::Write::new(fd, one.iov_base.cast_const().cast(), len as u32)
                            .offset(off)
                            .build()
                    }
                    (false, _) => opcode::Readv::new(fd, ptr, n).offset(off).build(),
                    (true, _) => opcode::Writev::new(fd, ptr, n).offset(off).build(),
                }
            }
        };
        // SAFETY: every buffer an entry points at (the caller's, borrowed for this call,
        // or a bounce buffer in `bounce`) and every segment list (in `iovs`, not touched
        // again) outlives the entry: this function does not return before the kernel has
        // completed every entry it queued.
        let pushed = unsafe { ring.submission().push(&sqe.user_data(i as u64)) };
        if pushed.is_err() {
            // Cannot happen: a round is never larger than the ring.
            results[i] = Some(Err(io::Error::other("io_uring submission queue full")));
            continue;
        }
        queued += 1;
    }
    let mut reaped = 0usize;
    // From here until every entry is reaped the kernel may own the buffers: a panic in
    // between (the remote I/O, the caller's work) must not unwind and free them.
    let in_flight = AbortOnUnwind;
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
    std::mem::forget(in_flight);
    reqs.iter_mut()
        .zip(results)
        .zip(bounce)
        .map(|((req, res), bounce)| {
            let res = res.unwrap_or_else(|| Err(io::Error::other("I/O not completed")));
            finish(req, res, bounce)
        })
        .collect()
}

/// Aborts the process if dropped, which only unwinding does (it is forgotten otherwise).
struct AbortOnUnwind;

impl Drop for AbortOnUnwind {
    fn drop(&mut self) {
        tracing::error!("panic with member I/O in flight; aborting");
        std::process::abort();
    }
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
        // The client takes one buffer per request: more segments are gathered first
        // (writes) or read into one and scattered after (reads).
        let mut temps: Vec<Option<Scratch>> = mine
            .iter()
            .map(|&i| match &reqs[i].op {
                Op::Read(_, segs) if segs.len() != 1 => Some(Scratch::new(reqs[i].op.len())),
                Op::Write(_, segs) if segs.len() != 1 => Some(gather(segs, 0)),
                _ => None,
            })
            .collect();
        let mut lens = Vec::with_capacity(mine.len());
        let mut ops = Vec::with_capacity(mine.len());
        let mine_reqs = reqs
            .iter_mut()
            .enumerate()
            .filter(|(j, _)| mine.contains(j))
            .map(|(_, req)| req);
        for (req, temp) in mine_reqs.zip(temps.iter_mut()) {
            lens.push(req.op.len());
            ops.push(match (&mut req.op, temp) {
                (Op::Read(off, _), Some(t)) => vessel_nbd::ClientOp::Read(*off, t.as_mut_slice()),
                (Op::Read(off, segs), None) => vessel_nbd::ClientOp::Read(*off, &mut *segs[0]),
                (Op::Write(off, _), Some(t)) => vessel_nbd::ClientOp::Write(*off, t.as_slice()),
                (Op::Write(off, segs), None) => vessel_nbd::ClientOp::Write(*off, segs[0]),
                (Op::Sync, _) => vessel_nbd::ClientOp::Flush,
            });
        }
        let done = client.batch(&mut ops);
        drop(ops);
        for ((&i, temp), res) in mine.iter().zip(&temps).zip(&done) {
            if let (Op::Read(_, segs), Some(t), Ok(())) = (&mut reqs[i].op, temp, res) {
                scatter(segs, 0, t.as_slice());
            }
        }
        for ((i, len), res) in mine.iter().zip(lens).zip(done) {
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
fn finish(req: &mut Req<'_>, res: io::Result<usize>, bounce: Option<Scratch>) -> Result<()> {
    let member = req.member;
    let total = req.op.len();
    match &mut req.op {
        Op::Read(off, segs) => {
            let done = res.map_err(|e| member.err("read", e))?;
            if let Some(b) = &bounce {
                scatter(segs, 0, &b.as_slice()[..done]);
            }
            if done < total {
                read_rest(member, *off + done as u64, segs, done)?;
            }
            Ok(())
        }
        Op::Write(off, segs) => {
            let done = res.map_err(|e| member.err("write", e))?;
            if done < total {
                write_rest(member, *off + done as u64, segs, done)?;
            }
            Ok(())
        }
        Op::Sync => res.map(|_| ()).map_err(|e| member.err("flush", e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::member::AlignedBuf;
    use crate::{MemberIo, TempFile};

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[test]
    fn gather_and_scatter_start_anywhere() {
        let (a, b, c) = (pattern(5, 1), pattern(3, 2), pattern(7, 3));
        let all = [a.clone(), b.clone(), c.clone()].concat();
        for from in 0..all.len() {
            assert_eq!(gather(&[&a, &b, &c], from).as_slice(), &all[from..]);
            let (mut x, mut y, mut z) = (vec![0u8; 5], vec![0u8; 3], vec![0u8; 7]);
            scatter(&mut [&mut x, &mut y, &mut z], from, &all[from..]);
            let mut want = all.clone();
            want[..from].fill(0);
            assert_eq!([x, y, z].concat(), want);
        }
    }

    /// Writes through the page cache larger than a piece are cut into pieces that follow
    /// each other on the member and carry the same bytes; `O_DIRECT` writes, reads and
    /// syncs pass as they are, and each piece names its request.
    #[test]
    fn buffered_writes_are_cut_into_pieces() {
        let file = TempFile::new("uring-pieces", 4 << 20);
        let cached = Member::open_with(&file.0, MemberIo::Cached).expect("open");
        let direct = Member::open_with(&file.0, MemberIo::Direct).expect("open");
        assert!(
            direct.is_direct(),
            "the test expects O_DIRECT on its temp file"
        );
        let data = pattern(BUFFERED_WRITE_PIECE * 2 + 12345, 3);
        let (a, b) = data.split_at(100_000);
        let mut buf = vec![0u8; 4096];
        let mut reqs = vec![
            Req::sync(&cached),
            Req::writev(&cached, 8192, vec![a, b]),
            Req::write(&direct, 0, &data),
            Req::read(&cached, 0, &mut buf),
            Req::write(&cached, 0, &data[..BUFFERED_WRITE_PIECE]),
        ];
        let (pieces, owner) = split_buffered_writes(&mut reqs).expect("a write to cut");
        assert_eq!(owner, vec![0, 1, 1, 1, 2, 3, 4]);
        let mut at = 8192;
        let mut carried = Vec::new();
        for p in &pieces[1..4] {
            let Op::Write(off, segs) = &p.op else {
                panic!("a write's piece is a write")
            };
            assert_eq!(*off, at, "pieces follow each other");
            let len: usize = segs.iter().map(|s| s.len()).sum();
            assert!(len <= BUFFERED_WRITE_PIECE && len > 0);
            at += len as u64;
            carried.extend(segs.iter().flat_map(|s| s.iter().copied()));
        }
        assert!(
            carried == data,
            "the pieces carry the write's bytes in order"
        );
        assert!(matches!(pieces[0].op, Op::Sync));
        assert!(
            matches!(&pieces[4].op, Op::Write(0, s) if s.len() == 1 && s[0].len() == data.len())
        );
        assert!(matches!(pieces[5].op, Op::Read(0, _)));
        assert!(matches!(&pieces[6].op, Op::Write(0, s) if s[0].len() == BUFFERED_WRITE_PIECE));
        // Nothing to cut: no copy of the list.
        let mut small = vec![Req::write(&cached, 0, &data[..BUFFERED_WRITE_PIECE])];
        assert!(split_buffered_writes(&mut small).is_none());
    }

    /// Vectored reads and writes land where one contiguous I/O would, with the members
    /// opened either way, from aligned segments (one `readv`/`writev`), unaligned ones (a
    /// bounce buffer under `O_DIRECT`) and more segments than one I/O takes (gathered).
    #[test]
    fn vectored_io_matches_contiguous_io() {
        for io in [MemberIo::Direct, MemberIo::Cached] {
            let file = TempFile::new(&format!("uring-{io:?}"), 12 << 20);
            let m = Member::open_with(&file.0, io).expect("open");
            let data = pattern(3 << 20, 7);
            // Aligned segments of unequal sizes from an aligned buffer.
            let mut src = AlignedBuf::new(data.len());
            src.as_mut_slice().copy_from_slice(&data);
            let (s1, rest) = src.as_slice().split_at(64 << 10);
            let (s2, s3) = rest.split_at(1 << 20);
            // Unaligned segments: the same bytes one byte into a plain buffer.
            let mut shifted = vec![0u8; data.len() + 1];
            shifted[1..].copy_from_slice(&data);
            let (u1, u2) = shifted[1..].split_at(4096);
            // Many small segments.
            let big = pattern((MAX_SEGS + 5) * 4096, 9);
            let many: Vec<&[u8]> = big.chunks(4096).collect();
            let mut reqs = vec![
                Req::writev(&m, 0, vec![s1, s2, s3]),
                Req::writev(&m, 4 << 20, vec![u1, u2]),
            ];
            for r in run(&mut reqs) {
                r.expect("write");
            }
            let mut reqs = vec![Req::writev(&m, 7 << 20, many)];
            run(&mut reqs).remove(0).expect("many segments");
            drop(reqs);
            let mut whole = AlignedBuf::new(12 << 20);
            m.read_at(0, whole.as_mut_slice()).expect("read back");
            let whole = whole.as_slice();
            assert!(whole[..3 << 20] == data[..], "aligned segments ({io:?})");
            assert!(whole[4 << 20..7 << 20] == data[..], "unaligned ({io:?})");
            assert!(whole[7 << 20..(7 << 20) + big.len()] == big[..]);
            // And back through segments of each kind.
            let mut dst = AlignedBuf::new(3 << 20);
            let mut odd = vec![0u8; (3 << 20) + 1];
            {
                let (d1, rest) = dst.as_mut_slice().split_at_mut(4096);
                let (d2, d3) = rest.split_at_mut(2 << 20);
                let (o1, o2) = odd[1..].split_at_mut(12288);
                let mut reqs = vec![
                    Req::readv(&m, 0, vec![d1, d2, d3]),
                    Req::readv(&m, 4 << 20, vec![o1, o2]),
                ];
                for r in run(&mut reqs) {
                    r.expect("read");
                }
            }
            assert!(dst.as_slice() == &data[..], "aligned read ({io:?})");
            assert!(odd[1..] == data[..], "unaligned read ({io:?})");
            let mut small = vec![[0u8; 4096]; MAX_SEGS + 5];
            let segs: Vec<&mut [u8]> = small.iter_mut().map(|b| &mut b[..]).collect();
            let mut reqs = vec![Req::readv(&m, 7 << 20, segs)];
            run(&mut reqs).remove(0).expect("many segments read");
            drop(reqs);
            assert!(small.concat() == big);
        }
    }
}
