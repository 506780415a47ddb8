//! Requests on one connection are served concurrently: a slow request does not hold back
//! the replies of later ones (they come out of order, by cookie), and a flush answers only
//! after the writes sent before it.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::TempDir;
use vessel_nbd::proto::*;
use vessel_nbd::{BlockDevice, DeviceError, FileDevice, NbdExport, NbdServer};

/// A file device whose reads of the first block take half a second, and which records
/// whether a write finished before a flush began.
struct Slow {
    inner: FileDevice,
    wrote: AtomicBool,
    flushed_after_write: AtomicBool,
}

impl Slow {
    fn new(dir: &TempDir) -> Arc<Slow> {
        Arc::new(Slow {
            inner: FileDevice::create(dir.join("disk.img"), 1 << 20).expect("disk"),
            wrote: AtomicBool::new(false),
            flushed_after_write: AtomicBool::new(false),
        })
    }
}

impl BlockDevice for Slow {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), DeviceError> {
        if offset == 0 {
            std::thread::sleep(Duration::from_millis(500));
        }
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), DeviceError> {
        std::thread::sleep(Duration::from_millis(200));
        self.inner.write_at(buf, offset)?;
        self.wrote.store(true, Ordering::SeqCst);
        Ok(())
    }
    fn flush(&self) -> Result<(), DeviceError> {
        if self.wrote.load(Ordering::SeqCst) {
            self.flushed_after_write.store(true, Ordering::SeqCst);
        }
        self.inner.flush()
    }
}

fn u32_of(s: &mut UnixStream) -> u32 {
    let mut b = [0u8; 4];
    s.read_exact(&mut b).expect("read");
    u32::from_be_bytes(b)
}

fn u64_of(s: &mut UnixStream) -> u64 {
    (u64::from(u32_of(s)) << 32) | u64::from(u32_of(s))
}

fn option(s: &mut UnixStream, option: u32, data: &[u8]) {
    let mut m = IHAVEOPT.to_be_bytes().to_vec();
    m.extend_from_slice(&option.to_be_bytes());
    m.extend_from_slice(&(data.len() as u32).to_be_bytes());
    m.extend_from_slice(data);
    s.write_all(&m).expect("option");
}

fn request(s: &mut UnixStream, kind: u16, cookie: u64, offset: u64, payload: &[u8], len: u32) {
    s.write_all(&encode(kind, cookie, offset, payload, len))
        .expect("request");
}

fn encode(kind: u16, cookie: u64, offset: u64, payload: &[u8], len: u32) -> Vec<u8> {
    let mut m = REQUEST_MAGIC.to_be_bytes().to_vec();
    m.extend_from_slice(&0u16.to_be_bytes());
    m.extend_from_slice(&kind.to_be_bytes());
    m.extend_from_slice(&cookie.to_be_bytes());
    m.extend_from_slice(&offset.to_be_bytes());
    m.extend_from_slice(&len.to_be_bytes());
    m.extend_from_slice(payload);
    m
}

/// A connection to export `disk` at `sock`, in transmission (fixed newstyle handshake, no
/// zeroes, then NBD_OPT_GO without structured replies).
fn connect(sock: &std::path::Path) -> UnixStream {
    let mut s = UnixStream::connect(sock).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    assert_eq!(u64_of(&mut s), NBDMAGIC);
    assert_eq!(u64_of(&mut s), IHAVEOPT);
    let mut flags = [0u8; 2];
    s.read_exact(&mut flags).expect("flags");
    s.write_all(&(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES).to_be_bytes())
        .expect("client flags");
    let mut go = 4u32.to_be_bytes().to_vec();
    go.extend_from_slice(b"disk");
    go.extend_from_slice(&0u16.to_be_bytes());
    option(&mut s, OPT_GO, &go);
    loop {
        assert_eq!(u64_of(&mut s), OPT_REPLY_MAGIC);
        assert_eq!(u32_of(&mut s), OPT_GO);
        let kind = u32_of(&mut s);
        let mut data = vec![0u8; u32_of(&mut s) as usize];
        s.read_exact(&mut data).expect("option data");
        if kind == REP_ACK {
            break;
        }
        assert_eq!(kind, REP_INFO);
    }
    s
}

/// The next simple reply: (cookie, error), with `data_len` data bytes after it skipped.
fn reply(s: &mut UnixStream, data_len: impl Fn(u64) -> usize) -> (u64, u32) {
    assert_eq!(u32_of(s), SIMPLE_REPLY_MAGIC);
    let error = u32_of(s);
    let cookie = u64_of(s);
    let mut data = vec![0u8; data_len(cookie)];
    s.read_exact(&mut data).expect("reply data");
    (cookie, error)
}

#[test]
fn a_slow_request_does_not_hold_back_later_replies_and_flush_waits_for_earlier_writes() {
    let dir = TempDir::new("concurrency");
    let dev = Slow::new(&dir);
    let server = NbdServer::new([NbdExport::new("disk", dev.clone())]).expect("server");
    let handle = server.serve_unix(dir.join("nbd.sock")).expect("serve");
    let mut s = connect(&dir.join("nbd.sock"));

    // Cookie 1 reads the slow block, cookie 2 a fast one (sent together): 2 is answered
    // first.
    let both = [
        encode(CMD_READ, 1, 0, &[], 4096),
        encode(CMD_READ, 2, 8192, &[], 4096),
    ]
    .concat();
    s.write_all(&both).expect("requests");
    let first = reply(&mut s, |_| 4096);
    let second = reply(&mut s, |_| 4096);
    assert_eq!(
        (first, second),
        ((2, 0), (1, 0)),
        "replies were not out of order"
    );

    // Two slow writes, then a flush: the flush is answered last and ran after the writes.
    let three = [
        encode(CMD_WRITE, 3, 4096, &[7u8; 4096], 4096),
        encode(CMD_WRITE, 4, 12288, &[8u8; 4096], 4096),
        encode(CMD_FLUSH, 5, 0, &[], 0),
    ]
    .concat();
    s.write_all(&three).expect("requests");
    let mut order: Vec<u64> = (0..3).map(|_| reply(&mut s, |_| 0).0).collect();
    assert_eq!(order.pop(), Some(5), "the flush overtook a write");
    order.sort_unstable();
    assert_eq!(order, vec![3, 4]);
    assert!(dev.flushed_after_write.load(Ordering::SeqCst));
    request(&mut s, CMD_READ, 6, 4096, &[], 4096);
    assert_eq!(u32_of(&mut s), SIMPLE_REPLY_MAGIC);
    assert_eq!((u32_of(&mut s), u64_of(&mut s)), (0, 6));
    let mut data = vec![0u8; 4096];
    s.read_exact(&mut data).expect("data");
    assert!(data.iter().all(|b| *b == 7));
    request(&mut s, CMD_DISC, 7, 0, &[], 0);
    drop(s);
    handle.shutdown();
}

/// A device that counts its flushes; each waits until the test opens the gate.
struct SlowFlush {
    inner: FileDevice,
    flushes: std::sync::atomic::AtomicUsize,
    gate: std::sync::Mutex<bool>,
    opened: std::sync::Condvar,
}

impl SlowFlush {
    fn open_gate(&self) {
        *self.gate.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.opened.notify_all();
    }
}

/// Opens the gate when dropped: a failing test ends (its server's threads can finish their
/// flush and be joined) instead of hanging.
struct OpenOnExit(Arc<SlowFlush>);

impl Drop for OpenOnExit {
    fn drop(&mut self) {
        self.0.open_gate();
    }
}

impl BlockDevice for SlowFlush {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), DeviceError> {
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), DeviceError> {
        self.inner.write_at(buf, offset)
    }
    fn flush(&self) -> Result<(), DeviceError> {
        let mut open = self.gate.lock().unwrap();
        while !*open {
            open = self.opened.wait(open).unwrap();
        }
        drop(open);
        self.inner.flush()?;
        self.flushes.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[test]
fn a_disconnect_closes_the_connection_then_flushes() {
    let dir = TempDir::new("disc");
    let dev = Arc::new(SlowFlush {
        inner: FileDevice::create(dir.join("disk.img"), 1 << 20).expect("disk"),
        flushes: 0.into(),
        gate: std::sync::Mutex::new(false),
        opened: std::sync::Condvar::new(),
    });
    let server = NbdServer::new([NbdExport::new("disk", dev.clone())]).expect("server");
    let handle = server.serve_unix(dir.join("nbd.sock")).expect("serve");
    // Dropped before the handle, whose drop joins the connection's threads.
    let _open_on_exit = OpenOnExit(dev.clone());
    let mut s = connect(&dir.join("nbd.sock"));
    request(&mut s, CMD_WRITE, 1, 0, &[9u8; 4096], 4096);
    assert_eq!(reply(&mut s, |_| 0), (1, 0));
    request(&mut s, CMD_DISC, 2, 0, &[], 0);
    // The server closes (end of file, nothing more sent) while the flush cannot end: the
    // device's flush waits for the gate, opened only after the close was seen. A
    // disconnect that waited for the flush would run into the read timeout.
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut rest = Vec::new();
    let closed = s.read_to_end(&mut rest);
    assert!(
        closed.is_ok(),
        "the connection was not closed before the flush ended: {closed:?}"
    );
    assert!(rest.is_empty(), "bytes after a disconnect: {rest:?}");
    assert_eq!(dev.flushes.load(Ordering::SeqCst), 0);
    dev.open_gate();
    // The flush still comes, right after.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while dev.flushes.load(Ordering::SeqCst) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no flush after the disconnect"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(s);
    handle.shutdown();
    assert_eq!(dev.flushes.load(Ordering::SeqCst), 1);
}

/// A device whose writes of the first block panic (a defect in a device).
struct Panics(FileDevice);

impl BlockDevice for Panics {
    fn size(&self) -> u64 {
        self.0.size()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), DeviceError> {
        self.0.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), DeviceError> {
        assert_ne!(offset, 0, "a device defect (this test's own panic)");
        self.0.write_at(buf, offset)
    }
    fn flush(&self) -> Result<(), DeviceError> {
        self.0.flush()
    }
}

/// A request whose serving thread panics is still counted out: a flush after it is
/// answered and the connection ends, instead of waiting for it for ever.
#[test]
fn a_request_that_panics_does_not_hold_up_a_flush_or_the_end() {
    let dir = TempDir::new("panics");
    let dev = Arc::new(Panics(
        FileDevice::create(dir.join("disk.img"), 1 << 20).expect("disk"),
    ));
    let server = NbdServer::new([NbdExport::new("disk", dev)]).expect("server");
    let handle = server.serve_unix(dir.join("nbd.sock")).expect("serve");
    let client = std::panic::catch_unwind(|| {
        let mut s = connect(&dir.join("nbd.sock"));
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        // Sent together, so the panicking write is handed to a thread of its own; then a
        // read and a flush.
        let all = [
            encode(CMD_WRITE, 1, 0, &[5u8; 4096], 4096),
            encode(CMD_READ, 2, 8192, &[], 4096),
            encode(CMD_FLUSH, 3, 0, &[], 0),
        ]
        .concat();
        s.write_all(&all).expect("requests");
        let first = reply(&mut s, |c| if c == 2 { 4096 } else { 0 });
        let second = reply(&mut s, |c| if c == 2 { 4096 } else { 0 });
        let mut got = [first, second];
        got.sort_unstable();
        assert_eq!(got, [(2, 0), (3, 0)], "the read and the flush are answered");
        request(&mut s, CMD_DISC, 4, 0, &[], 0);
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).expect("the server closes");
        assert!(
            rest.is_empty(),
            "no reply to the write that panicked: {rest:?}"
        );
    });
    if let Err(e) = client {
        // Stopping the server would wait for the connection that hangs: the test fails
        // instead of hanging with it.
        std::mem::forget(handle);
        std::panic::resume_unwind(e);
    }
    handle.shutdown();
}

/// A client that shuts down its reading side while requests are served: their replies
/// cannot be written, and the server ends the connection instead of waiting in `recv` for
/// a request that may never come.
#[test]
fn a_connection_whose_replies_cannot_be_written_is_ended() {
    use std::os::fd::AsRawFd;
    let dir = TempDir::new("hangup");
    let dev = Slow::new(&dir);
    let server = NbdServer::new([NbdExport::new("disk", dev)]).expect("server");
    let handle = server.serve_unix(dir.join("nbd.sock")).expect("serve");
    let mut s = connect(&dir.join("nbd.sock"));
    s.shutdown(std::net::Shutdown::Read).expect("shutdown");
    // Two slow reads at once: both are being served (their replies fail half a second
    // later) while a third thread already waits for the next request.
    let both = [
        encode(CMD_READ, 1, 0, &[], 4096),
        encode(CMD_READ, 2, 0, &[], 4096),
    ]
    .concat();
    s.write_all(&both).expect("requests");
    let mut p = libc::pollfd {
        fd: s.as_raw_fd(),
        events: libc::POLLHUP,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    let n = unsafe { libc::poll(&mut p, 1, 10_000) };
    assert!(
        n == 1 && p.revents & libc::POLLHUP != 0,
        "the server did not end the connection (poll {n}, revents {:#x})",
        p.revents
    );
    drop(s);
    handle.shutdown();
}
