//! Byte-level checks of what real clients refuse to send: the server must still answer right.

mod common;

use std::io::Read;
use std::os::unix::net::UnixStream;

use common::*;
use vessel_nbd::proto::*;
use vessel_nbd::{FileDevice, NbdExport, NbdServer};

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

/// Clients that pipeline large reads and read none of the replies hold at most the bound
/// of their servers' budget between them (without it each held its in-flight requests and
/// up to 32 MiB of queued replies), here one budget shared by two servers. A server with a
/// budget of its own answers its client at once meanwhile; a server whose connections wait
/// for buffers that the other's hold stops at once; once the clients read, every reply
/// comes, right, and every buffer comes back.
#[test]
fn clients_that_read_no_replies_hold_no_more_than_their_budget() {
    const LIMIT: usize = 24 << 20;
    const READS: usize = 32;
    const LEN: u32 = 1 << 20;
    let budget = vessel_nbd::BufferBudget::new(LIMIT);
    let served = |tag: &str| {
        let dir = TempDir::new(tag);
        let disk = FileDevice::create(dir.join("disk.img"), DISK_SIZE).expect("disk");
        let server = NbdServer::new([NbdExport::new("disk", std::sync::Arc::new(disk))])
            .expect("server")
            .with_buffer_budget(&budget);
        let unix = server.serve_unix(dir.join("nbd.sock")).expect("serve");
        Fixture { unix, server, dir }
    };
    let (a, b) = (served("budget-a"), served("budget-b"));
    let silent = |fx: &Fixture| {
        let mut c = Raw::connect(fx);
        c.go("disk", false);
        for i in 0..READS {
            let offset = (i as u64 * u64::from(LEN)) % DISK_SIZE;
            c.request(CMD_READ, 0, offset, LEN, &[]);
        }
        c
    };
    let mut clients: Vec<Raw> = vec![silent(&a), silent(&a), silent(&b), silent(&b)];
    // 128 MiB of replies asked for, none read: the servers fill up to their budget.
    let mut most = 0;
    let until = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while std::time::Instant::now() < until {
        most = most.max(budget.out());
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(
        most <= LIMIT,
        "{most} bytes of buffers out with a bound of {LIMIT}"
    );
    assert!(
        most > LIMIT / 2,
        "only {most} bytes out: the clients did not reach the bound"
    );
    assert_eq!(budget.out(), a.server.buffers_out());
    // Meanwhile a server with its own budget answers its own client's large reads at once.
    let other = Fixture::new("budget-other");
    let mut c = Raw::connect(&other);
    c.go("disk", false);
    let t = std::time::Instant::now();
    let mut data = vec![0u8; LEN as usize];
    for _ in 0..8 {
        c.request(CMD_READ, 0, 0, LEN, &[]);
        assert_eq!(c.simple_error(), 0);
        c.0.read_exact(&mut data).expect("reply data");
    }
    assert!(
        t.elapsed() < std::time::Duration::from_secs(5),
        "another server's client waited {:?}",
        t.elapsed()
    );
    // b's listener stops, its connections closed, though some wait for buffers a's hold.
    let t = std::time::Instant::now();
    drop(b);
    assert!(
        t.elapsed() < std::time::Duration::from_secs(5),
        "stopping a server took {:?}",
        t.elapsed()
    );
    clients.truncate(2);
    // a's clients read, both at once: every reply comes, zeroes (the disk is new).
    std::thread::scope(|s| {
        for c in &mut clients {
            s.spawn(move || {
                let mut data = vec![0u8; LEN as usize];
                for _ in 0..READS {
                    assert_eq!(c.simple_error(), 0);
                    c.0.read_exact(&mut data).expect("reply data");
                    assert!(data.iter().all(|b| *b == 0));
                }
            });
        }
    });
    let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while budget.out() > 0 {
        assert!(
            std::time::Instant::now() < until,
            "{} bytes of buffers still out after every reply was read",
            budget.out()
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}
