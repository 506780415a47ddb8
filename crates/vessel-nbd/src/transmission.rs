//! The transmission phase: requests served concurrently, replies simple or structured.

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use crate::bufs::Buf;
use crate::device::{BlockDevice, DeviceError, Extent};
use crate::handshake::Session;
use crate::proto::*;
use crate::server::NbdError;

/// One request header as read from the wire.
struct Request {
    flags: u16,
    kind: u16,
    cookie: u64,
    offset: u64,
    len: u32,
}

fn read_request(r: &mut impl Read) -> io::Result<Option<Request>> {
    let mut h = [0u8; 28];
    match r.read_exact(&mut h) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let be32 = |i: usize| u32::from_be_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    let be64 = |i: usize| (u64::from(be32(i)) << 32) | u64::from(be32(i + 4));
    if be32(0) != REQUEST_MAGIC {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "bad request magic",
        ));
    }
    Ok(Some(Request {
        flags: u16::from_be_bytes([h[4], h[5]]),
        kind: u16::from_be_bytes([h[6], h[7]]),
        cookie: be64(8),
        offset: be64(16),
        len: be32(24),
    }))
}

fn simple_reply(w: &mut impl Write, cookie: u64, error: u32, data: &[u8]) -> io::Result<()> {
    w.write_all(&SIMPLE_REPLY_MAGIC.to_be_bytes())?;
    w.write_all(&error.to_be_bytes())?;
    w.write_all(&cookie.to_be_bytes())?;
    w.write_all(data)
}

fn chunk_header(out: &mut Vec<u8>, cookie: u64, flags: u16, kind: u16, len: usize) {
    out.extend_from_slice(&STRUCTURED_REPLY_MAGIC.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&cookie.to_be_bytes());
    out.extend_from_slice(&(len as u32).to_be_bytes());
}

fn structured_error(w: &mut impl Write, cookie: u64, error: u32, msg: &str) -> io::Result<()> {
    let msg = &msg.as_bytes()[..msg.len().min(4096)];
    let mut out = Vec::with_capacity(32 + msg.len());
    chunk_header(
        &mut out,
        cookie,
        REPLY_FLAG_DONE,
        REPLY_TYPE_ERROR,
        6 + msg.len(),
    );
    out.extend_from_slice(&error.to_be_bytes());
    out.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    out.extend_from_slice(msg);
    w.write_all(&out)
}

/// A failed request: the NBD error code and a message for structured replies.
struct Failure(u32, String);

impl From<DeviceError> for Failure {
    fn from(e: DeviceError) -> Self {
        tracing::warn!(error = %e, "nbd request failed on the device");
        Failure(e.nbd_errno(), e.to_string())
    }
}

fn fail(code: u32, msg: &str) -> Failure {
    Failure(code, msg.to_owned())
}

/// Threads serving one connection at most. They take turns at reading (one at a time,
/// under the connection's read lock); each serves the request it read, after giving the
/// socket to the next. The first one serves a request while still holding the socket when
/// nothing else is in flight and no more request bytes wait (a client waiting for each
/// reply): no other thread is woken for it. The others start only when requests come
/// faster than one thread serves them.
const THREADS: usize = 5;
/// Write payloads read ahead of their replies at most, in bytes (one is always taken).
const MAX_IN_FLIGHT_BYTES: usize = 64 << 20;

/// A request read from the wire, with its write payload.
struct Job {
    req: Request,
    payload: Buf,
}

#[derive(Default)]
struct State {
    /// Requests read and handed over, not yet answered.
    in_flight: usize,
    in_flight_bytes: usize,
    threads: usize,
    /// Threads waiting on `done`: a notification with nobody waiting is a system call for
    /// nothing (a futex wake per request).
    waiting: usize,
    /// How the connection ended, set by the thread that read its end.
    outcome: Option<Result<bool, NbdError>>,
    /// A reply could not be queued: the connection is going down.
    failed: Option<io::ErrorKind>,
}

/// One connection's serving threads' shared state.
struct Conn<'r, R> {
    reader: std::sync::Mutex<Reader<'r, R>>,
    /// Threads waiting for the read lock (a thread is started only when none waits).
    queued: std::sync::atomic::AtomicUsize,
    /// The connection's end was read: threads stop at their next turn.
    closed: std::sync::atomic::AtomicBool,
    state: std::sync::Mutex<State>,
    done: std::sync::Condvar,
}

impl<R> Conn<'_, R> {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits for a handed-over request to be answered.
    fn wait_done<'a>(
        &self,
        mut st: std::sync::MutexGuard<'a, State>,
    ) -> std::sync::MutexGuard<'a, State> {
        st.waiting += 1;
        let mut st = self
            .done
            .wait(st)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        st.waiting -= 1;
        st
    }

    /// Waits until every request handed over has been answered.
    fn drain(&self) -> io::Result<()> {
        let mut st = self.lock();
        while st.in_flight > 0 && st.failed.is_none() {
            st = self.wait_done(st);
        }
        st.failed
            .map_or(Ok(()), |k| Err(io::Error::new(k, "writing replies failed")))
    }

    /// Records how the connection ended (the first end read counts); called with the read
    /// lock held, so no thread reads after it.
    fn end(&self, outcome: Result<bool, NbdError>) {
        self.closed
            .store(true, std::sync::atomic::Ordering::Release);
        self.lock().outcome.get_or_insert(outcome);
    }
}

/// The reading end of a connection, with how long to poll it before a blocking read.
struct Reader<'r, R> {
    r: &'r mut R,
    poll: Duration,
}

/// How long a thread polls for the next request at most before it sleeps in the read.
/// A sleeping thread costs the next request the wake-up of its CPU: on this project's
/// virtual machines a halted vCPU (a host's deep C-state likewise) answers tens of
/// microseconds later, longer than serving a 4 KiB request from the page cache. QEMU
/// polls its event loop for the same reason (`poll-max-ns`), as does Linux for sockets
/// (`net.core.busy_poll`). The cap is what a client of depth 1 takes between a reply and its
/// next request on a slow day here (40–60 µs of client CPU per request): with 50 µs the
/// polling missed most requests and depth-1 reads ran at 6.5–8.7 k per second, with 100 µs
/// at 15.5–18.6 k (nbdkit 8.4–10.4 k; alternating rounds).
const POLL_MAX: Duration = Duration::from_micros(100);

/// Polls `r` for up to `budget` (spinning on [`Pending::pending`]); when it started and
/// whether a request came within it.
fn poll(r: &impl Pending, budget: Duration) -> (Instant, bool) {
    let from = Instant::now();
    if budget.is_zero() {
        return (from, false);
    }
    while from.elapsed() < budget {
        if r.pending() {
            return (from, true);
        }
        std::hint::spin_loop();
    }
    (from, false)
}

/// The next poll's budget after a request took `waited` (polling included) to come and
/// was not caught by polling, as QEMU adapts its `poll-ns`: longer while the requests come
/// within [`POLL_MAX`] (a client waiting for each reply), none once one comes later (an
/// idle client costs no spinning).
fn adapt(budget: Duration, waited: Duration) -> Duration {
    if waited > POLL_MAX {
        Duration::ZERO
    } else if budget.is_zero() {
        Duration::from_micros(4)
    } else {
        (budget * 2).min(POLL_MAX)
    }
}

/// Whether more request bytes wait to be read, in the buffer or on the socket.
pub(crate) trait Pending {
    fn pending(&self) -> bool;
}

/// Serve requests until the client disconnects. Requests are read as they come; while
/// earlier ones are still being served, later ones are read and served by other threads
/// (up to [`THREADS`] in all), and replies go out as each finishes (out of order, as the
/// protocol allows). A flush waits for the requests before it, so it covers every write
/// answered before it was received. Returns whether the client asked to disconnect
/// (`NBD_CMD_DISC`, every request before it answered) rather than just closing the socket.
pub(crate) fn serve(
    r: &mut (impl Read + Pending + Send),
    replies: &crate::replies::Replies,
    session: &Session,
) -> Result<bool, NbdError> {
    let conn = Conn {
        reader: std::sync::Mutex::new(Reader {
            r,
            poll: Duration::ZERO,
        }),
        queued: std::sync::atomic::AtomicUsize::new(0),
        closed: std::sync::atomic::AtomicBool::new(false),
        state: std::sync::Mutex::new(State {
            threads: 1,
            ..State::default()
        }),
        done: std::sync::Condvar::new(),
    };
    let queue = replies.queue();
    // A thread that panicked (a defect in a device) has been counted out of the requests
    // in flight (the others went on); its panic, which the scope passes on once every
    // thread is done, ends the connection like an error instead of leaving it open.
    let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        std::thread::scope(|s| take_turns(&conn, &queue, session, s))
    }));
    if served.is_err() {
        return Err(io::Error::other("serving a request panicked").into());
    }
    let outcome = conn.lock().outcome.take();
    outcome.unwrap_or(Ok(false))
}

/// One serving thread: reads a request when its turn comes, serves it, and again.
fn take_turns<'s, 'e: 's, R: Read + Pending + Send>(
    conn: &'e Conn<'e, R>,
    queue: &'e crate::replies::ReplyQueue,
    session: &'e Session,
    scope: &'s std::thread::Scope<'s, 'e>,
) {
    use std::sync::atomic::Ordering;
    loop {
        conn.queued.fetch_add(1, Ordering::Relaxed);
        let mut r = conn
            .reader
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        conn.queued.fetch_sub(1, Ordering::Relaxed);
        // Requests are read and, while nothing else is in flight and nothing more waits,
        // served with the read lock held; the first one handed over ends the turn.
        let job = loop {
            if conn.closed.load(Ordering::Acquire) {
                return;
            }
            // Without a budget the read is timed all the same (a request come already
            // starts polling), without asking the socket first.
            let polled = if !r.poll.is_zero() && r.r.pending() {
                None
            } else {
                Some(poll(&*r.r, r.poll))
            };
            let job = read_job(&mut *r.r, queue.bufs());
            if let Some((from, caught)) = polled {
                if !caught {
                    r.poll = adapt(r.poll, from.elapsed());
                }
            }
            let job = match job {
                Ok(Some(job)) => job,
                Ok(None) => {
                    conn.end(conn.drain().map(|()| false).map_err(NbdError::from));
                    return;
                }
                Err(e) => {
                    conn.end(Err(e.into()));
                    return;
                }
            };
            match job.req.kind {
                CMD_DISC => {
                    // The caller closes the connection, then flushes: the client waits for
                    // the close, not for the disk.
                    conn.end(conn.drain().map(|()| true).map_err(NbdError::from));
                    return;
                }
                CMD_FLUSH => {
                    let sent = conn
                        .drain()
                        .and_then(|()| queue.send(answer(session, &job, queue.bufs())));
                    if let Err(e) = sent {
                        conn.end(Err(e.into()));
                        return;
                    }
                    continue;
                }
                _ => {}
            }
            let pending = r.r.pending();
            let mut st = conn.lock();
            // Nothing waits here when nothing else is in flight.
            while st.in_flight > 0
                && st.in_flight_bytes + job.payload.len() > MAX_IN_FLIGHT_BYTES
                && st.failed.is_none()
            {
                st = conn.wait_done(st);
            }
            if let Some(k) = st.failed {
                drop(st);
                conn.end(Err(io::Error::new(k, "writing replies failed").into()));
                return;
            }
            if st.in_flight == 0 && !pending {
                drop(st);
                let sent = queue.send(answer(session, &job, queue.bufs()));
                queue.bufs().give(job.payload);
                if let Err(e) = sent {
                    conn.end(Err(e.into()));
                    return;
                }
                continue;
            }
            st.in_flight += 1;
            st.in_flight_bytes += job.payload.len();
            // Someone to read the next request while this one is served.
            let start = conn.queued.load(Ordering::Relaxed) == 0 && st.threads < THREADS;
            if start {
                st.threads += 1;
            }
            drop(st);
            if start {
                let spawned = std::thread::Builder::new()
                    .name("nbd-conn".into())
                    .spawn_scoped(scope, move || take_turns(conn, queue, session, scope));
                if let Err(e) = spawned {
                    // The threads there are serve on (this one reads again when done).
                    tracing::warn!(error = %e, "no further thread for an nbd connection");
                    conn.lock().threads -= 1;
                }
            }
            break job;
        };
        drop(r);
        // Answered (or failed) whatever happens while it is served, a panic included: a
        // flush or the end waits for it.
        let mut done = Handed {
            conn,
            bytes: job.payload.len(),
            failed: None,
        };
        let sent = queue.send(answer(session, &job, queue.bufs()));
        queue.bufs().give(job.payload);
        done.failed = sent.err().map(|e| e.kind());
        drop(done);
    }
}

/// A request handed over and being served: counted out of the connection's in-flight ones
/// when dropped, the waiting thread woken.
struct Handed<'c, 'r, R> {
    conn: &'c Conn<'r, R>,
    bytes: usize,
    /// Its reply could not be queued.
    failed: Option<io::ErrorKind>,
}

impl<R> Drop for Handed<'_, '_, R> {
    fn drop(&mut self) {
        let mut st = self.conn.lock();
        st.in_flight -= 1;
        st.in_flight_bytes -= self.bytes;
        if let Some(k) = self.failed {
            st.failed.get_or_insert(k);
        }
        let wake = st.waiting > 0;
        drop(st);
        if wake {
            self.conn.done.notify_all();
        }
    }
}

/// The next request and its write payload (an oversized one is read and dropped: the
/// request is refused); `None` at the end of the stream.
fn read_job(r: &mut impl Read, bufs: &crate::bufs::Pool) -> io::Result<Option<Job>> {
    let Some(req) = read_request(r)? else {
        return Ok(None);
    };
    let mut payload = Buf::default();
    if req.kind == CMD_WRITE {
        if req.len > MAX_PAYLOAD {
            io::copy(&mut r.take(u64::from(req.len)), &mut io::sink())?;
        } else {
            payload = bufs.take(req.len as usize);
            r.read_exact(&mut payload)?;
        }
    }
    Ok(Some(Job { req, payload }))
}

/// Serves one request; the whole reply (a read's in a buffer of `bufs`).
fn answer(session: &Session, job: &Job, bufs: &crate::bufs::Pool) -> Buf {
    let req = &job.req;
    let dev = session.export.device.as_ref();
    let mut w = Vec::new();
    let range_ok = req
        .offset
        .checked_add(u64::from(req.len))
        .is_some_and(|end| end <= dev.size());
    let cut = session.cut.load(std::sync::atomic::Ordering::Acquire);
    let result = match req.kind {
        // Read before the session was cut off, served after: not served.
        _ if cut => Err(fail(
            ESHUTDOWN,
            "the server closed this connection (export removed or credentials revoked)",
        )),
        CMD_READ => {
            if req.len > MAX_PAYLOAD {
                Err(fail(EINVAL, "read larger than the maximum block size"))
            } else if !range_ok {
                Err(fail(EINVAL, "read beyond the end of the export"))
            } else {
                match read(dev, req, session.structured, bufs) {
                    Ok(reply) => return reply,
                    Err(e) => Err(e),
                }
            }
        }
        CMD_WRITE => {
            if req.len > MAX_PAYLOAD {
                Err(fail(EINVAL, "write larger than the maximum block size"))
            } else {
                checked_write(session, range_ok, req, |d| {
                    d.write_at(&job.payload, req.offset)
                })
            }
        }
        CMD_FLUSH => dev.flush().map_err(Failure::from),
        CMD_TRIM => checked_write(session, range_ok, req, |d| {
            d.trim(req.offset, u64::from(req.len))
        }),
        CMD_WRITE_ZEROES => checked_write(session, range_ok, req, |d| {
            let may_trim = req.flags & CMD_FLAG_NO_HOLE == 0;
            d.write_zeroes(req.offset, u64::from(req.len), may_trim)
        }),
        CMD_BLOCK_STATUS => {
            if !session.meta_allocation {
                Err(fail(EINVAL, "no metadata context was negotiated"))
            } else if !range_ok || req.len == 0 {
                Err(fail(
                    EINVAL,
                    "block status range is empty or beyond the end",
                ))
            } else {
                match block_status(dev, req) {
                    Ok(reply) => return reply.into(),
                    Err(e) => Err(e),
                }
            }
        }
        _ => Err(fail(EINVAL, "unknown command")),
    };
    // Writes into a Vec cannot fail.
    let _ = match result {
        Ok(()) => simple_reply(&mut w, req.cookie, 0, &[]),
        Err(Failure(code, msg)) => {
            tracing::debug!(command = req.kind, code, msg, "nbd request refused");
            let structured_only = req.kind == CMD_READ || req.kind == CMD_BLOCK_STATUS;
            if session.structured && structured_only {
                structured_error(&mut w, req.cookie, code, &msg)
            } else {
                simple_reply(&mut w, req.cookie, code, &[])
            }
        }
    };
    w.into()
}

/// Common checks for commands that modify the export, then FUA.
fn checked_write(
    session: &Session,
    range_ok: bool,
    req: &Request,
    op: impl FnOnce(&dyn BlockDevice) -> Result<(), DeviceError>,
) -> Result<(), Failure> {
    if session.export.read_only {
        return Err(fail(EPERM, "the export is read-only"));
    }
    if !range_ok {
        return Err(fail(EINVAL, "request beyond the end of the export"));
    }
    let dev = session.export.device.as_ref();
    op(dev)?;
    if req.flags & CMD_FLAG_FUA != 0 {
        dev.flush()?;
    }
    Ok(())
}

/// The whole reply to a successful read: a simple reply with the data, or data and hole
/// chunks (structured). Headers and data are written into one buffer of `bufs`, every
/// byte of it (a buffer used again holds an earlier reply's bytes).
fn read(
    dev: &dyn BlockDevice,
    req: &Request,
    structured: bool,
    bufs: &crate::bufs::Pool,
) -> Result<Buf, Failure> {
    let len = u64::from(req.len);
    if !structured {
        // The data 4 KiB-aligned after the 16-byte header.
        let mut out = bufs.take_aligned(16 + req.len as usize, 16);
        // The header into its 16 bytes (a slice takes exactly that much).
        let _ = simple_reply(&mut &mut out[..16], req.cookie, 0, &[]);
        dev.read_at(&mut out[16..], req.offset)?;
        return Ok(out);
    }
    if len == 0 {
        let mut out = Vec::with_capacity(20);
        chunk_header(&mut out, req.cookie, REPLY_FLAG_DONE, REPLY_TYPE_NONE, 0);
        return Ok(out.into());
    }
    let extents = if req.flags & CMD_FLAG_DF != 0 {
        vec![Extent::data(len)]
    } else {
        covering(dev.block_status(req.offset, len).unwrap_or_default(), len)
    };
    // A chunk is a 20-byte header, the offset (8), then a hole's length (4) or the data.
    let total: usize = extents
        .iter()
        .map(|e| 28 + if e.zero { 4 } else { e.len as usize })
        .sum();
    // The first data chunk's data 4 KiB-aligned: after the hole chunks before it (32 bytes
    // each) and its own header (20 bytes and the offset).
    let holes_first = extents.iter().take_while(|e| e.zero).count();
    let mut out = bufs.take_aligned(total, 32 * holes_first + 28);
    let mut at = 0;
    let mut head = Vec::with_capacity(32);
    let mut pos = req.offset;
    let last = extents.len() - 1;
    for (i, e) in extents.iter().enumerate() {
        let flags = if i == last { REPLY_FLAG_DONE } else { 0 };
        head.clear();
        if e.zero {
            chunk_header(&mut head, req.cookie, flags, REPLY_TYPE_OFFSET_HOLE, 12);
            head.extend_from_slice(&pos.to_be_bytes());
            head.extend_from_slice(&(e.len as u32).to_be_bytes());
        } else {
            chunk_header(
                &mut head,
                req.cookie,
                flags,
                REPLY_TYPE_OFFSET_DATA,
                8 + e.len as usize,
            );
            head.extend_from_slice(&pos.to_be_bytes());
        }
        out[at..at + head.len()].copy_from_slice(&head);
        at += head.len();
        if !e.zero {
            dev.read_at(&mut out[at..at + e.len as usize], pos)?;
            at += e.len as usize;
        }
        pos += e.len;
    }
    debug_assert_eq!(at, total);
    // Never more than was written for this reply (a buffer used again holds old bytes).
    out.truncate(at);
    Ok(out)
}

/// Clip `extents` to exactly `len` bytes, dropping empty runs and padding with data.
fn covering(extents: Vec<Extent>, len: u64) -> Vec<Extent> {
    let mut out: Vec<Extent> = Vec::with_capacity(extents.len() + 1);
    let mut covered = 0;
    for mut e in extents {
        if covered >= len {
            break;
        }
        e.len = e.len.min(len - covered);
        if e.len == 0 {
            continue;
        }
        covered += e.len;
        match out.last_mut() {
            Some(prev) if prev.hole == e.hole && prev.zero == e.zero => prev.len += e.len,
            _ => out.push(e),
        }
    }
    if covered < len {
        out.push(Extent::data(len - covered));
    }
    out
}

/// The structured reply to `NBD_CMD_BLOCK_STATUS` for `base:allocation`.
fn block_status(dev: &dyn BlockDevice, req: &Request) -> Result<Vec<u8>, Failure> {
    let len = u64::from(req.len);
    let mut extents = covering(dev.block_status(req.offset, len)?, len);
    if req.flags & CMD_FLAG_REQ_ONE != 0 {
        extents.truncate(1);
    }
    let mut out = Vec::with_capacity(24 + 8 * extents.len());
    chunk_header(
        &mut out,
        req.cookie,
        REPLY_FLAG_DONE,
        REPLY_TYPE_BLOCK_STATUS,
        4 + 8 * extents.len(),
    );
    out.extend_from_slice(&META_BASE_ALLOCATION_ID.to_be_bytes());
    for e in extents {
        let mut state = 0;
        if e.hole {
            state |= STATE_HOLE;
        }
        if e.zero {
            state |= STATE_ZERO;
        }
        out.extend_from_slice(&(e.len as u32).to_be_bytes());
        out.extend_from_slice(&state.to_be_bytes());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Data after a hole; records whether every read went to an aligned buffer.
    struct HoleThenData(std::sync::atomic::AtomicBool);

    impl BlockDevice for HoleThenData {
        fn size(&self) -> u64 {
            1 << 20
        }
        fn read_at(&self, buf: &mut [u8], _offset: u64) -> Result<(), DeviceError> {
            if !(buf.as_ptr() as usize).is_multiple_of(4096) {
                self.0.store(false, std::sync::atomic::Ordering::Relaxed);
            }
            buf.fill(7);
            Ok(())
        }
        fn write_at(&self, _buf: &[u8], _offset: u64) -> Result<(), DeviceError> {
            Ok(())
        }
        fn flush(&self) -> Result<(), DeviceError> {
            Ok(())
        }
        fn block_status(&self, _offset: u64, _len: u64) -> Result<Vec<Extent>, DeviceError> {
            Ok(vec![Extent::hole(4096), Extent::data(64 << 10)])
        }
    }

    #[test]
    fn a_structured_reads_data_after_a_hole_is_read_into_an_aligned_buffer() {
        let dev = HoleThenData(std::sync::atomic::AtomicBool::new(true));
        let bufs =
            crate::bufs::Pool::new(Default::default(), Default::default(), Default::default());
        let req = Request {
            flags: 0,
            kind: CMD_READ,
            cookie: 9,
            offset: 0,
            len: 4096 + (64 << 10),
        };
        let Ok(reply) = read(&dev, &req, true, &bufs) else {
            panic!("the read failed");
        };
        assert!(
            dev.0.load(std::sync::atomic::Ordering::Relaxed),
            "data read unaligned"
        );
        // A hole chunk (32 bytes), then the data chunk's header (28) and its data.
        assert_eq!(reply.len(), 32 + 28 + (64 << 10));
        assert!(reply[60..].iter().all(|b| *b == 7));
    }

    #[test]
    fn polling_grows_while_requests_come_soon_and_stops_for_an_idle_client() {
        let us = Duration::from_micros;
        // Caught by no polling yet, but soon: start polling, then double up to the cap.
        assert_eq!(adapt(Duration::ZERO, us(10)), us(4));
        assert_eq!(adapt(us(4), us(10)), us(8));
        assert_eq!(adapt(us(64), us(40)), POLL_MAX);
        assert_eq!(adapt(POLL_MAX, POLL_MAX), POLL_MAX);
        // Later than polling would ever wait: no more polling.
        assert_eq!(adapt(POLL_MAX, POLL_MAX + us(1)), Duration::ZERO);
        assert_eq!(
            adapt(Duration::ZERO, Duration::from_secs(5)),
            Duration::ZERO
        );

        struct Never;
        impl Pending for Never {
            fn pending(&self) -> bool {
                false
            }
        }
        struct Ready;
        impl Pending for Ready {
            fn pending(&self) -> bool {
                true
            }
        }
        let (from, caught) = poll(&Never, us(200));
        assert!(
            !caught && from.elapsed() >= us(200),
            "polled its whole budget"
        );
        assert!(poll(&Ready, us(200)).1, "a waiting request is caught");
        assert!(!poll(&Ready, Duration::ZERO).1, "no budget, no polling");
    }

    #[test]
    fn covering_clips_merges_and_pads() {
        let got = covering(
            vec![Extent::hole(10), Extent::hole(5), Extent::data(100)],
            50,
        );
        assert_eq!(got, vec![Extent::hole(15), Extent::data(35)]);
        assert_eq!(covering(vec![], 7), vec![Extent::data(7)]);
        assert_eq!(
            covering(vec![Extent::data(0), Extent::hole(3)], 7),
            vec![Extent::hole(3), Extent::data(4)]
        );
    }
}
