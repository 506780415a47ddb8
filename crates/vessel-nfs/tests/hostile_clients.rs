//! Clients that try to outlive their export, to pass as group root, or to exhaust the
//! server: old handles after an export is re-created, gid 0 squashing, and connections that
//! flood, idle, half-send records or hold large ones, against the library's server.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::{Duration, Instant};

use common::TempDir;
use vessel_nfs::xdr::{Decoder, Encoder};
use vessel_nfs::{Export, NfsServer, ServerLimits};

const NFS: u32 = 100003;
const MOUNT: u32 = 100005;
const STALE: u32 = 70;
const ACCES: u32 = 13;

/// A TCP connection from `src` (any 127.0.0.0/8 address reaches loopback).
fn connect_from(src: Ipv4Addr, to: SocketAddr) -> TcpStream {
    use std::os::fd::{FromRawFd, OwnedFd};
    let SocketAddr::V4(to) = to else {
        panic!("IPv4 only")
    };
    let sin = |a: SocketAddrV4| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain integers; the result is checked.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    assert!(raw >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: `raw` is a fresh descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let from = sin(SocketAddrV4::new(src, 0));
    // SAFETY: `from` is a valid sockaddr_in of `len` bytes for the duration of the call.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&from as *const libc::sockaddr_in).cast(),
            len,
        )
    };
    assert_eq!(r, 0, "bind {src}: {}", std::io::Error::last_os_error());
    let dest = sin(to);
    // SAFETY: `dest` is a valid sockaddr_in of `len` bytes for the duration of the call.
    let r = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&dest as *const libc::sockaddr_in).cast(),
            len,
        )
    };
    assert_eq!(r, 0, "connect {to}: {}", std::io::Error::last_os_error());
    TcpStream::from(fd)
}

struct Client {
    s: TcpStream,
    xid: u32,
}

impl Client {
    fn connect(addr: SocketAddr) -> Self {
        Self::from(Ipv4Addr::LOCALHOST, addr)
    }

    fn from(src: Ipv4Addr, addr: SocketAddr) -> Self {
        let s = connect_from(src, addr);
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        Client { s, xid: 1 }
    }

    /// Calls a procedure as `uid`/`gid`/`gids` (AUTH_UNIX); returns the results.
    fn call_as(
        &mut self,
        (uid, gid, gids): (u32, u32, &[u32]),
        prog: u32,
        proc_: u32,
        args: &Encoder,
    ) -> Vec<u8> {
        self.xid += 1;
        let mut e = Encoder::new();
        e.u32(self.xid).u32(0).u32(2).u32(prog).u32(3).u32(proc_);
        let mut cred = Encoder::new();
        cred.u32(0)
            .string("test")
            .u32(uid)
            .u32(gid)
            .u32(gids.len() as u32);
        for g in gids {
            cred.u32(*g);
        }
        e.u32(1).opaque(cred.as_bytes()).u32(0).opaque(&[]);
        e.raw(args.as_bytes());
        let msg = e.into_bytes();
        self.s
            .write_all(&(msg.len() as u32 | 1 << 31).to_be_bytes())
            .expect("send");
        self.s.write_all(&msg).expect("send");
        let mut hdr = [0u8; 4];
        self.s.read_exact(&mut hdr).expect("reply header");
        let len = (u32::from_be_bytes(hdr) & !(1 << 31)) as usize;
        let mut reply = vec![0u8; len];
        self.s.read_exact(&mut reply).expect("reply");
        let mut d = Decoder::new(&reply);
        assert_eq!(d.u32(), Ok(self.xid));
        assert_eq!(d.u32(), Ok(1), "not a reply");
        assert_eq!(d.u32(), Ok(0), "call denied");
        d.u32().expect("verf flavor");
        d.opaque(400).expect("verf");
        assert_eq!(d.u32(), Ok(0), "call not executed");
        d.rest().to_vec()
    }

    fn call(&mut self, prog: u32, proc_: u32, args: &Encoder) -> Vec<u8> {
        self.call_as((0, 0, &[]), prog, proc_, args)
    }
}

fn fh_args(fh: &[u8]) -> Encoder {
    let mut e = Encoder::new();
    e.opaque(fh);
    e
}

fn dirop(fh: &[u8], name: &str) -> Encoder {
    let mut e = Encoder::new();
    e.opaque(fh).string(name);
    e
}

fn status(res: &[u8]) -> u32 {
    Decoder::new(res).u32().expect("status")
}

fn mount(c: &mut Client, path: &str) -> Vec<u8> {
    let mut a = Encoder::new();
    a.string(path);
    let res = c.call(MOUNT, 1, &a);
    let mut d = Decoder::new(&res);
    assert_eq!(d.u32(), Ok(0), "mount {path}");
    d.opaque(64).expect("fh").to_vec()
}

fn lookup(c: &mut Client, dir: &[u8], name: &str) -> Vec<u8> {
    let res = c.call(NFS, 3, &dirop(dir, name));
    let mut d = Decoder::new(&res);
    assert_eq!(d.u32(), Ok(0), "lookup {name}");
    d.opaque(64).expect("fh").to_vec()
}

/// READ of `count` bytes at 0 as `who`: status and data.
fn read_as(c: &mut Client, who: (u32, u32, &[u32]), fh: &[u8]) -> (u32, Vec<u8>) {
    let mut a = fh_args(fh);
    a.u64(0).u32(100);
    let res = c.call_as(who, NFS, 6, &a);
    let mut d = Decoder::new(&res);
    let st = d.u32().expect("status");
    if st != 0 {
        return (st, Vec::new());
    }
    if d.bool().expect("attrs follow") {
        d.fixed(84).expect("fattr3");
    }
    d.u32().expect("count");
    d.bool().expect("eof");
    (st, d.opaque(100).expect("data").to_vec())
}

/// WRITE of `data` at 0 (FILE_SYNC) as `who`: status.
fn write_as(c: &mut Client, who: (u32, u32, &[u32]), fh: &[u8], data: &[u8]) -> u32 {
    let mut a = fh_args(fh);
    a.u64(0).u32(data.len() as u32).u32(2).opaque(data);
    status(&c.call_as(who, NFS, 7, &a))
}

fn serve_with(exports: Vec<Export>, limits: ServerLimits) -> (NfsServer, vessel_nfs::ServerHandle) {
    let server = NfsServer::new(exports).expect("server");
    let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).expect("bind");
    let handle = server.serve_with(listener, None, limits).expect("serve");
    (server, handle)
}

#[test]
fn a_recreated_export_refuses_the_old_handles() {
    let dir = TempDir::new("gen");
    for v in ["old", "new", "outside"] {
        std::fs::create_dir(dir.join(v)).expect("mkdir");
    }
    std::fs::write(dir.join("old/f"), "old volume").expect("write");
    std::fs::write(dir.join("new/f"), "new volume").expect("write");
    let (server, handle) = serve_with(
        vec![Export::new("/share", dir.join("old")).generation(1)],
        ServerLimits::default(),
    );
    let mut c = Client::connect(handle.nfs_addr());
    let root = mount(&mut c, "/share");
    let f = lookup(&mut c, &root, "f");
    assert_eq!(read_as(&mut c, (0, 0, &[]), &f).1, b"old volume");

    // Deleted, then created again under the same name on another volume.
    server.remove_export("/share").expect("remove");
    server
        .add_export(Export::new("/share", dir.join("new")).generation(2))
        .expect("add");
    for (what, fh) in [("root", &root), ("file", &f)] {
        assert_eq!(
            status(&c.call(NFS, 1, &fh_args(fh))),
            STALE,
            "GETATTR {what}"
        );
    }
    assert_eq!(read_as(&mut c, (0, 0, &[]), &f).0, STALE);
    assert_eq!(write_as(&mut c, (0, 0, &[]), &f, b"EVIL"), STALE);
    assert_eq!(status(&c.call(NFS, 3, &dirop(&root, "f"))), STALE, "LOOKUP");
    assert_eq!(
        std::fs::read(dir.join("old/f")).expect("old"),
        b"old volume"
    );
    // The new export's own handles work.
    let new_root = mount(&mut c, "/share");
    let nf = lookup(&mut c, &new_root, "f");
    assert_eq!(read_as(&mut c, (0, 0, &[]), &nf).1, b"new volume");

    // Re-created on the same directory: a new generation makes the old handles stale too.
    server.remove_export("/share").expect("remove");
    server
        .add_export(Export::new("/share", dir.join("new")).generation(3))
        .expect("add");
    assert_eq!(read_as(&mut c, (0, 0, &[]), &nf).0, STALE);
    // The same generation and root (a restart that kept both) keeps them valid.
    server.remove_export("/share").expect("remove");
    server
        .add_export(Export::new("/share", dir.join("new")).generation(3))
        .expect("add");
    let again = mount(&mut c, "/share");
    let nf = lookup(&mut c, &again, "f");
    server.remove_export("/share").expect("remove");
    server
        .add_export(Export::new("/share", dir.join("new")).generation(3))
        .expect("add");
    assert_eq!(read_as(&mut c, (0, 0, &[]), &nf).1, b"new volume");

    // A file moved out of the export on the host is stale (directories were already).
    std::fs::rename(dir.join("new/f"), dir.join("outside/f")).expect("move out");
    assert_eq!(read_as(&mut c, (0, 0, &[]), &nf).0, STALE);
    assert_eq!(write_as(&mut c, (0, 0, &[]), &nf, b"EVIL"), STALE);
    assert_eq!(
        std::fs::read(dir.join("outside/f")).expect("outside"),
        b"new volume"
    );
    std::fs::rename(dir.join("outside/f"), dir.join("new/f")).expect("move back");
    assert_eq!(read_as(&mut c, (0, 0, &[]), &nf).1, b"new volume");
}

#[test]
fn group_root_is_squashed_primary_and_supplementary() {
    let dir = TempDir::new("gid0");
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    std::fs::write(dir.join("secret"), "root:root 0660").expect("write");
    std::fs::set_permissions(dir.join("secret"), std::fs::Permissions::from_mode(0o660))
        .expect("chmod");
    let (_server, handle) = serve_with(vec![Export::new("/v", &dir.0)], ServerLimits::default());
    let mut c = Client::connect(handle.nfs_addr());
    let root = mount(&mut c, "/v");
    let secret = lookup(&mut c, &root, "secret");
    for who in [
        (1234, 0, &[][..]),
        (1234, 5, &[0][..]),
        (1234, 0, &[0, 5][..]),
    ] {
        assert_eq!(read_as(&mut c, who, &secret).0, ACCES, "read as {who:?}");
        assert_eq!(
            write_as(&mut c, who, &secret, b"x"),
            ACCES,
            "write as {who:?}"
        );
    }
    assert_eq!(
        std::fs::read(dir.join("secret")).expect("secret"),
        b"root:root 0660"
    );
    // What such a caller creates belongs to the anonymous group, not to group 0.
    let mut a = dirop(&root, "made");
    a.u32(0).bool(true).u32(0o664);
    for _ in 0..5 {
        a.bool(false);
    }
    assert_eq!(status(&c.call_as((1234, 0, &[0]), NFS, 8, &a)), 0, "create");
    let md = std::fs::metadata(dir.join("made")).expect("made");
    assert_eq!((md.uid(), md.gid()), (1234, 65534));
    // A group other than 0 still works as itself.
    std::fs::set_permissions(dir.join("secret"), std::fs::Permissions::from_mode(0o660))
        .expect("chmod");
    std::os::unix::fs::chown(dir.join("secret"), Some(0), Some(5)).expect("chown");
    assert_eq!(read_as(&mut c, (1234, 5, &[]), &secret).0, 0);
}

/// States (`/proc/net/tcp` codes: 01 established, 08 close-wait) of the sockets whose local
/// port is `port`: the server's side of its connections. A descriptor kept for a connection
/// its client closed shows as close-wait.
fn server_sockets(port: u16) -> Vec<String> {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            let local_port = cols.get(1)?.rsplit(':').next()?;
            (u16::from_str_radix(local_port, 16).ok()? == port && cols.get(3)? != &"0A")
                .then(|| cols[3].to_string())
        })
        .filter(|st| st == "01" || st == "08")
        .collect()
}

/// Waits up to 20 s for `cond`.
fn wait_for(cond: impl Fn() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "waited 20 s for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether the server closed `s` (EOF or reset) within `within`.
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).expect("timeout");
    let mut b = [0u8; 1];
    match s.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

#[test]
fn flooding_idle_and_half_sent_connections_are_capped_and_reclaimed() {
    let dir = TempDir::new("flood");
    std::fs::write(dir.join("f"), "served").expect("write");
    let limits = ServerLimits {
        max_connections: 24,
        max_per_client: 8,
        idle_timeout: Duration::from_secs(6),
        record_timeout: Duration::from_secs(1),
        ..Default::default()
    };
    let (_server, handle) = serve_with(vec![Export::new("/v", &dir.0)], limits);
    let addr = handle.nfs_addr();
    let hostile = Ipv4Addr::new(127, 0, 0, 2);
    // 40 connections from one address: 8 are kept, the rest closed at once.
    let mut conns: Vec<TcpStream> = (0..40).map(|_| connect_from(hostile, addr)).collect();
    let started = Instant::now();
    wait_for(|| handle.stats().refused >= 32, "the server to refuse 32");
    let (mut kept, mut refused) = (Vec::new(), 0);
    for mut s in conns.drain(..) {
        if closed_within(&mut s, Duration::from_millis(50)) {
            refused += 1;
        } else {
            kept.push(s);
        }
    }
    assert_eq!((kept.len(), refused), (8, 32));
    // Half of the kept ones start a record they never finish.
    for s in kept.iter_mut().take(4) {
        s.write_all(&(((1 << 20) + 1000) as u32 | 1 << 31).to_be_bytes())
            .expect("send");
        s.write_all(&[0u8; 1000]).expect("send");
    }
    let stats = handle.stats();
    assert_eq!(
        stats.clients[&std::net::IpAddr::V4(hostile)].connections,
        8,
        "{stats:?}"
    );
    assert_eq!(stats.refused, 32);
    // Another client is served all along.
    let mut good = Client::connect(addr);
    let root = mount(&mut good, "/v");
    let f = lookup(&mut good, &root, "f");
    assert_eq!(read_as(&mut good, (0, 0, &[]), &f).1, b"served");
    // The half-sent records time out first, then the idle connections.
    let mut half: Vec<_> = kept.drain(..4).collect();
    for s in &mut half {
        assert!(
            closed_within(s, Duration::from_secs(3)),
            "a half-sent record was kept"
        );
    }
    // Before the idle ones (6 s after they connected).
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    for s in &mut kept {
        assert!(
            closed_within(s, Duration::from_secs(10)),
            "an idle connection was kept"
        );
    }
    // The good client was idle as long: it reconnects, as NFS clients do.
    let mut good = Client::connect(addr);
    let root = mount(&mut good, "/v");
    let f = lookup(&mut good, &root, "f");
    assert_eq!(read_as(&mut good, (0, 0, &[]), &f).1, b"served");
    drop(good);
    drop(half);
    drop(kept);
    let deadline = Instant::now() + Duration::from_secs(5);
    while handle.stats().connections > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let stats = handle.stats();
    assert_eq!(stats.connections, 0, "{stats:?}");
    assert_eq!(stats.buffered, 0, "{stats:?}");
    assert!(stats.timed_out >= 8, "{stats:?}");
    // Their descriptors went with them, without waiting for another accept.
    let left = server_sockets(addr.port());
    assert!(left.is_empty(), "server sockets still open: {left:?}");
}

#[test]
fn buffered_record_bytes_are_bounded_per_client_and_in_all() {
    let dir = TempDir::new("budget");
    let limits = ServerLimits {
        // Each held record reserves a little over 1 MiB: two fit a client, three the server.
        max_buffered: (3 << 20) + (512 << 10),
        max_buffered_per_client: (2 << 20) + (512 << 10),
        record_timeout: Duration::from_secs(30),
        ..Default::default()
    };
    let (_server, handle) = serve_with(vec![Export::new("/v", &dir.0)], limits);
    let addr = handle.nfs_addr();
    // Each connection holds an almost complete 1 MiB record.
    let almost = |src: Ipv4Addr| {
        let mut s = connect_from(src, addr);
        s.write_all(&(((1 << 20) + 1000) as u32 | 1 << 31).to_be_bytes())
            .expect("send");
        s.write_all(&vec![0u8; 1 << 20]).expect("send");
        s
    };
    let a = Ipv4Addr::new(127, 0, 0, 3);
    let b = Ipv4Addr::new(127, 0, 0, 4);
    let mut held = vec![almost(a), almost(a)];
    wait_for(
        || handle.stats().buffered >= 2 << 20,
        "the server to hold two records",
    );
    let mut third = almost(a);
    assert!(
        closed_within(&mut third, Duration::from_secs(5)),
        "a client passed its budget"
    );
    held.push(almost(b));
    wait_for(
        || handle.stats().buffered >= 3 << 20,
        "the server to hold three records",
    );
    let mut over_all = almost(b);
    assert!(
        closed_within(&mut over_all, Duration::from_secs(5)),
        "the server passed its budget"
    );
    let stats = handle.stats();
    assert!(stats.buffered <= (3 << 20) + (512 << 10), "{stats:?}");
    assert!(stats.over_budget >= 2, "{stats:?}");
    for s in &mut held {
        assert!(
            !closed_within(s, Duration::from_millis(10)),
            "a record within budget was dropped"
        );
    }
    // Small calls of other clients are still answered.
    let mut c = Client::connect(addr);
    c.call(NFS, 0, &Encoder::new());
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(5);
    while handle.stats().buffered > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(handle.stats().buffered, 0);
}
