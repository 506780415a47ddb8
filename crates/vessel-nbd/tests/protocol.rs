//! Byte-level checks of what real clients refuse to send: the server must still answer right.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

use common::*;
use vessel_nbd::proto::*;
use vessel_nbd::{FileDevice, NbdExport, NbdServer};

/// A minimal raw NBD client over the fixture's unix socket.
struct Raw(UnixStream);

impl Raw {
    /// Connect and read the greeting; sends fixed newstyle + no zeroes.
    fn connect(fx: &Fixture) -> Raw {
        let mut s = UnixStream::connect(fx.socket()).expect("connect");
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .expect("timeout");
        let mut greet = [0u8; 18];
        s.read_exact(&mut greet).expect("greeting");
        assert_eq!(
            u64::from_be_bytes(greet[0..8].try_into().expect("8")),
            NBDMAGIC
        );
        assert_eq!(
            u64::from_be_bytes(greet[8..16].try_into().expect("8")),
            IHAVEOPT
        );
        let flags = u16::from_be_bytes([greet[16], greet[17]]);
        assert_eq!(flags, FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES);
        s.write_all(&(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES).to_be_bytes())
            .expect("flags");
        Raw(s)
    }

    fn u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.0.read_exact(&mut b).expect("u32");
        u32::from_be_bytes(b)
    }

    fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.0.read_exact(&mut b).expect("u64");
        u64::from_be_bytes(b)
    }

    fn option(&mut self, option: u32, data: &[u8]) {
        let mut m = IHAVEOPT.to_be_bytes().to_vec();
        m.extend_from_slice(&option.to_be_bytes());
        m.extend_from_slice(&(data.len() as u32).to_be_bytes());
        m.extend_from_slice(data);
        self.0.write_all(&m).expect("send option");
    }

    /// Read one option reply: (type, data).
    fn option_reply(&mut self, option: u32) -> (u32, Vec<u8>) {
        assert_eq!(self.u64(), OPT_REPLY_MAGIC);
        assert_eq!(self.u32(), option);
        let kind = self.u32();
        let len = self.u32();
        let mut data = vec![0u8; len as usize];
        self.0.read_exact(&mut data).expect("reply data");
        (kind, data)
    }

    /// NBD_OPT_GO to `name`, optionally after structured replies + base:allocation.
    fn go(&mut self, name: &str, structured: bool) {
        if structured {
            self.option(OPT_STRUCTURED_REPLY, &[]);
            assert_eq!(self.option_reply(OPT_STRUCTURED_REPLY).0, REP_ACK);
            let mut q = (name.len() as u32).to_be_bytes().to_vec();
            q.extend_from_slice(name.as_bytes());
            q.extend_from_slice(&1u32.to_be_bytes());
            q.extend_from_slice(&(META_BASE_ALLOCATION.len() as u32).to_be_bytes());
            q.extend_from_slice(META_BASE_ALLOCATION.as_bytes());
            self.option(OPT_SET_META_CONTEXT, &q);
            assert_eq!(self.option_reply(OPT_SET_META_CONTEXT).0, REP_META_CONTEXT);
            assert_eq!(self.option_reply(OPT_SET_META_CONTEXT).0, REP_ACK);
        }
        let mut d = (name.len() as u32).to_be_bytes().to_vec();
        d.extend_from_slice(name.as_bytes());
        d.extend_from_slice(&0u16.to_be_bytes());
        self.option(OPT_GO, &d);
        loop {
            let (kind, _) = self.option_reply(OPT_GO);
            if kind == REP_ACK {
                return;
            }
            assert_eq!(kind, REP_INFO, "NBD_OPT_GO to {name} failed");
        }
    }

    fn request(&mut self, kind: u16, flags: u16, offset: u64, len: u32, payload: &[u8]) {
        let mut m = REQUEST_MAGIC.to_be_bytes().to_vec();
        m.extend_from_slice(&flags.to_be_bytes());
        m.extend_from_slice(&kind.to_be_bytes());
        m.extend_from_slice(&0x1234_5678_9abc_def0u64.to_be_bytes());
        m.extend_from_slice(&offset.to_be_bytes());
        m.extend_from_slice(&len.to_be_bytes());
        m.extend_from_slice(payload);
        self.0.write_all(&m).expect("send request");
    }

    /// Read a simple reply and return its error code.
    fn simple_error(&mut self) -> u32 {
        assert_eq!(self.u32(), SIMPLE_REPLY_MAGIC);
        let error = self.u32();
        assert_eq!(self.u64(), 0x1234_5678_9abc_def0);
        error
    }

    /// Read one structured chunk header: (flags, type, payload).
    fn chunk(&mut self) -> (u16, u16, Vec<u8>) {
        assert_eq!(self.u32(), STRUCTURED_REPLY_MAGIC);
        let mut b = [0u8; 4];
        self.0.read_exact(&mut b).expect("chunk flags");
        assert_eq!(self.u64(), 0x1234_5678_9abc_def0);
        let len = self.u32();
        let mut data = vec![0u8; len as usize];
        self.0.read_exact(&mut data).expect("chunk data");
        (
            u16::from_be_bytes([b[0], b[1]]),
            u16::from_be_bytes([b[2], b[3]]),
            data,
        )
    }
}

#[test]
fn read_only_export_answers_writes_with_eperm() {
    let fx = Fixture::new("raw-ro");
    let mut c = Raw::connect(&fx);
    c.go("ro", false);
    c.request(CMD_WRITE, 0, 0, 4, b"evil");
    assert_eq!(c.simple_error(), EPERM);
    c.request(CMD_TRIM, 0, 0, 4096, &[]);
    assert_eq!(c.simple_error(), EPERM);
    c.request(CMD_WRITE_ZEROES, CMD_FLAG_NO_HOLE, 0, 4096, &[]);
    assert_eq!(c.simple_error(), EPERM);
    c.request(CMD_FLUSH, 0, 0, 0, &[]);
    assert_eq!(c.simple_error(), 0);
    let image = std::fs::read(fx.dir.join("ro.img")).expect("ro image");
    assert!(image.iter().all(|&b| b == 0x5a), "read-only image changed");
}

#[test]
fn out_of_range_and_oversized_requests_are_refused_and_the_connection_survives() {
    let fx = Fixture::new("raw-bounds");
    let mut c = Raw::connect(&fx);
    c.go("small", false);
    let size = 64 << 10;
    c.request(CMD_READ, 0, size - 512, 1024, &[]);
    assert_eq!(c.simple_error(), EINVAL);
    c.request(CMD_READ, 0, u64::MAX - 10, 100, &[]);
    assert_eq!(c.simple_error(), EINVAL);
    c.request(CMD_WRITE, 0, size, 4, b"past");
    assert_eq!(c.simple_error(), EINVAL);
    c.request(CMD_TRIM, 0, size - 1, 2, &[]);
    assert_eq!(c.simple_error(), EINVAL);
    c.request(CMD_READ, 0, 0, MAX_PAYLOAD + 1, &[]);
    assert_eq!(c.simple_error(), EINVAL);
    // An oversized write's payload is consumed, so the next request parses.
    let big = vec![7u8; MAX_PAYLOAD as usize + 4096];
    c.request(CMD_WRITE, 0, 0, big.len() as u32, &big);
    assert_eq!(c.simple_error(), EINVAL);
    // Block status needs a negotiated meta context.
    c.request(CMD_BLOCK_STATUS, 0, 0, 4096, &[]);
    assert_eq!(c.simple_error(), EINVAL);
    c.request(99, 0, 0, 0, &[]);
    assert_eq!(c.simple_error(), EINVAL);
    // Still serving: a good write and read.
    c.request(CMD_WRITE, CMD_FLAG_FUA, 100, 4, b"good");
    assert_eq!(c.simple_error(), 0);
    c.request(CMD_READ, 0, 100, 4, &[]);
    assert_eq!(c.simple_error(), 0);
    let mut b = [0u8; 4];
    c.0.read_exact(&mut b).expect("read data");
    assert_eq!(&b, b"good");
    c.request(CMD_DISC, 0, 0, 0, &[]);
    let mut rest = Vec::new();
    c.0.read_to_end(&mut rest)
        .expect("server closes after NBD_CMD_DISC");
    assert!(rest.is_empty());
}

#[test]
fn structured_reads_send_holes_and_errors_as_chunks() {
    let fx = Fixture::new("raw-structured");
    let mut c = Raw::connect(&fx);
    c.go("small", true);
    c.request(CMD_WRITE, 0, 4096, 4096, &[0xab; 4096]);
    assert_eq!(c.simple_error(), 0);
    c.request(CMD_READ, 0, 0, 16384, &[]);
    let (f1, t1, d1) = c.chunk();
    assert_eq!((f1, t1), (0, REPLY_TYPE_OFFSET_HOLE));
    assert_eq!(
        d1,
        [&0u64.to_be_bytes()[..], &4096u32.to_be_bytes()].concat()
    );
    let (f2, t2, d2) = c.chunk();
    assert_eq!((f2, t2, d2.len()), (0, REPLY_TYPE_OFFSET_DATA, 8 + 4096));
    assert!(d2[8..].iter().all(|&b| b == 0xab));
    let (f3, t3, _) = c.chunk();
    assert_eq!((f3, t3), (REPLY_FLAG_DONE, REPLY_TYPE_OFFSET_HOLE));
    c.request(CMD_BLOCK_STATUS, 0, 0, 16384, &[]);
    let (f, t, d) = c.chunk();
    assert_eq!((f, t), (REPLY_FLAG_DONE, REPLY_TYPE_BLOCK_STATUS));
    let words: Vec<u32> = d
        .chunks(4)
        .map(|w| u32::from_be_bytes(w.try_into().expect("4")))
        .collect();
    let hz = STATE_HOLE | STATE_ZERO;
    assert_eq!(
        words,
        [META_BASE_ALLOCATION_ID, 4096, hz, 4096, 0, 8192, hz]
    );
    c.request(CMD_BLOCK_STATUS, CMD_FLAG_REQ_ONE, 0, 16384, &[]);
    let (_, _, d) = c.chunk();
    assert_eq!(d.len(), 12, "REQ_ONE returns one descriptor");
    c.request(CMD_READ, 0, 60 << 10, 8192, &[]);
    let (f, t, d) = c.chunk();
    assert_eq!((f, t), (REPLY_FLAG_DONE, REPLY_TYPE_ERROR));
    assert_eq!(u32::from_be_bytes(d[0..4].try_into().expect("4")), EINVAL);
}

#[test]
fn negotiation_refusals() {
    let fx = Fixture::new("raw-options");
    let mut c = Raw::connect(&fx);
    c.option(OPT_STARTTLS, &[]);
    assert_eq!(c.option_reply(OPT_STARTTLS).0, REP_ERR_UNSUP);
    c.option(OPT_SET_META_CONTEXT, &[0, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(c.option_reply(OPT_SET_META_CONTEXT).0, REP_ERR_INVALID);
    c.option(OPT_INFO, &[0, 0, 0, 4, b'n', b'o', b'p', b'e', 0, 0]);
    assert_eq!(c.option_reply(OPT_INFO).0, REP_ERR_UNKNOWN);
    c.option(OPT_INFO, &[0, 0, 0, 40]);
    assert_eq!(c.option_reply(OPT_INFO).0, REP_ERR_INVALID);
    c.option(0x7777, &[]);
    assert_eq!(c.option_reply(0x7777).0, REP_ERR_UNSUP);
    c.option(OPT_LIST, &[]);
    let mut names = Vec::new();
    loop {
        let (kind, data) = c.option_reply(OPT_LIST);
        if kind == REP_ACK {
            break;
        }
        assert_eq!(kind, REP_SERVER);
        let n = u32::from_be_bytes(data[0..4].try_into().expect("4")) as usize;
        names.push(String::from_utf8(data[4..4 + n].to_vec()).expect("utf-8"));
    }
    assert_eq!(names, ["disk", "ro", "small"]);
    // The oldest selection form cannot carry an error: an unknown name closes the connection.
    c.option(OPT_EXPORT_NAME, b"nope");
    let mut rest = Vec::new();
    c.0.read_to_end(&mut rest).expect("closed");
    assert!(rest.is_empty());
    // A known name works, with size and flags and no zero padding.
    let mut c = Raw::connect(&fx);
    c.option(OPT_EXPORT_NAME, b"ro");
    assert_eq!(c.u64(), RO_SIZE);
    let mut f = [0u8; 2];
    c.0.read_exact(&mut f).expect("flags");
    assert_ne!(u16::from_be_bytes(f) & TFLAG_READ_ONLY, 0);
    c.request(CMD_READ, 0, 0, 4, &[]);
    assert_eq!(c.simple_error(), 0);
    // ABORT is acknowledged.
    let mut c = Raw::connect(&fx);
    c.option(OPT_ABORT, &[]);
    assert_eq!(c.option_reply(OPT_ABORT).0, REP_ACK);
}

/// A client that sends thousands of requests before it reads any reply is served: replies queue
/// while the server keeps reading (one thread for both would wait on the client forever
/// once the socket buffers fill).
#[test]
fn a_client_pipelining_many_requests_before_reading_is_served() {
    // 24 MiB of replies: far past the socket buffers, within the per-connection queue.
    const N: usize = 6_000;
    let fx = Fixture::new("pipeline");
    let mut c = Raw::connect(&fx);
    c.go("disk", false);
    c.0.set_write_timeout(Some(std::time::Duration::from_secs(30)))
        .expect("timeout");
    c.0.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .expect("timeout");
    for i in 0..N {
        c.request(CMD_READ, 0, (i as u64 * 4096) % DISK_SIZE, 4096, &[]);
    }
    let mut data = vec![0u8; 4096];
    for _ in 0..N {
        assert_eq!(c.simple_error(), 0);
        c.0.read_exact(&mut data).expect("read data");
    }
}

/// Past the connection limit a new connection is closed at once; below it, connections
/// are served.
#[test]
fn connections_past_the_limit_are_closed() {
    let fx = Fixture::new("limit");
    let held: Vec<Raw> = (0..vessel_nbd::MAX_CONNECTIONS)
        .map(|_| Raw::connect(&fx))
        .collect();
    let mut extra = UnixStream::connect(fx.socket()).expect("connect");
    extra
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("timeout");
    let mut b = [0u8; 18];
    assert_eq!(
        extra.read(&mut b).expect("read"),
        0,
        "no greeting past the limit"
    );
    drop(held);
    // The slots free again (once the server has seen the held ones go).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let mut s = UnixStream::connect(fx.socket()).expect("connect");
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .expect("timeout");
        if s.read(&mut b).expect("read") > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no slot free 20 s after the held connections closed"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let mut c = Raw::connect(&fx);
    c.go("disk", false);
}

/// A client that does not finish its handshake in time is closed.
#[test]
fn a_silent_client_is_closed_after_the_handshake_timeout() {
    let dir = TempDir::new("silent");
    let disk = FileDevice::create(dir.join("disk.img"), 1 << 20).expect("disk");
    let server = NbdServer::new([NbdExport::new("disk", std::sync::Arc::new(disk))])
        .expect("server")
        .with_handshake_timeout(std::time::Duration::from_millis(500));
    let _h = server.serve_unix(dir.join("nbd.sock")).expect("serve");
    let mut s = UnixStream::connect(dir.join("nbd.sock")).expect("connect");
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("timeout");
    let mut greet = [0u8; 18];
    s.read_exact(&mut greet).expect("greeting");
    let t = std::time::Instant::now();
    let mut b = [0u8; 1];
    assert_eq!(s.read(&mut b).expect("read"), 0, "closed");
    assert!(
        t.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        t.elapsed()
    );
}

/// A client that pipelines large reads and reads none of the replies holds their buffers
/// (tens of MiB per connection): past the stall timeout without progress its connection is
/// closed, and what it reads afterwards is what the socket held, then the end.
#[test]
fn a_client_that_reads_no_replies_is_closed_after_the_stall_timeout() {
    let dir = TempDir::new("stall");
    let disk = FileDevice::create(dir.join("disk.img"), DISK_SIZE).expect("disk");
    let server = NbdServer::new([NbdExport::new("disk", std::sync::Arc::new(disk))])
        .expect("server")
        .with_stall_timeout(std::time::Duration::from_millis(500));
    let unix = server.serve_unix(dir.join("nbd.sock")).expect("serve");
    let fx = Fixture { unix, server, dir };
    let mut c = Raw::connect(&fx);
    c.go("disk", false);
    // 64 reads of the whole 8 MiB disk: 512 MiB of replies, none read for 3 s.
    const N: usize = 64;
    for _ in 0..N {
        c.request(CMD_READ, 0, 0, DISK_SIZE as u32, &[]);
    }
    std::thread::sleep(std::time::Duration::from_secs(3));
    let mut total = 0usize;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match c.0.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => total += n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("reading after the stall: {e} ({total} bytes read)"),
        }
    }
    assert!(
        total < N * DISK_SIZE as usize / 4,
        "{total} bytes of replies came after a 3 s stall: the connection was kept"
    );
}
