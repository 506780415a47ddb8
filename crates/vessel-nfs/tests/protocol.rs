//! NFSv3 procedures the libnfs tools do not reach (MKDIR, RENAME, LINK, SYMLINK, RMDIR,
//! MKNOD, READDIRPLUS, ...), handle checks, run-time export changes and hostile input,
//! driven over TCP by a minimal RPC client against the library's server.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use common::TempDir;
use vessel_nfs::xdr::{Decoder, Encoder};
use vessel_nfs::{Export, NfsServer, Squash};

const NFS: u32 = 100003;
const MOUNT: u32 = 100005;

struct Client {
    s: TcpStream,
    xid: u32,
}

impl Client {
    fn connect(addr: SocketAddr) -> Self {
        Self::with(TcpStream::connect(addr).expect("connect"))
    }

    /// A client whose connection comes from `src` (any 127/8 address is the host's own).
    fn connect_from(src: Ipv4Addr, addr: SocketAddr) -> Self {
        use std::os::fd::FromRawFd;
        let SocketAddr::V4(dst) = addr else {
            panic!("{addr} is not IPv4")
        };
        let sin = |ip: Ipv4Addr, port: u16| libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(ip).to_be(),
            },
            sin_zero: [0; 8],
        };
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        // SAFETY: a new socket, owned by the stream at once; the addresses are valid
        // sockaddr_in values of the length given.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
            let s = TcpStream::from_raw_fd(fd);
            let from = sin(src, 0);
            let r = libc::bind(fd, std::ptr::addr_of!(from).cast(), len);
            assert_eq!(r, 0, "bind to {src}: {}", std::io::Error::last_os_error());
            let to = sin(*dst.ip(), dst.port());
            let r = libc::connect(fd, std::ptr::addr_of!(to).cast(), len);
            assert_eq!(
                r,
                0,
                "connect to {addr}: {}",
                std::io::Error::last_os_error()
            );
            Self::with(s)
        }
    }

    fn with(s: TcpStream) -> Self {
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        Client { s, xid: 1 }
    }

    /// Call a procedure as root (AUTH_UNIX) and return its results.
    fn call(&mut self, prog: u32, proc_: u32, args: &Encoder) -> Vec<u8> {
        self.xid += 1;
        let mut e = Encoder::new();
        e.u32(self.xid).u32(0).u32(2).u32(prog).u32(3).u32(proc_);
        let mut cred = Encoder::new();
        cred.u32(0).string("test").u32(0).u32(0).u32(0);
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

/// An empty sattr3 (mode given).
fn sattr(e: &mut Encoder, mode: u32) {
    e.bool(true)
        .u32(mode)
        .bool(false)
        .bool(false)
        .bool(false)
        .u32(0)
        .u32(0);
}

fn skip_post_op(d: &mut Decoder<'_>) {
    if d.bool().expect("attr follows") {
        d.fixed(84).expect("fattr3");
    }
}

fn skip_wcc(d: &mut Decoder<'_>) {
    if d.bool().expect("pre follows") {
        d.fixed(24).expect("wcc_attr");
    }
    skip_post_op(d);
}

/// Status and new handle of CREATE/MKDIR/SYMLINK/MKNOD.
fn created(res: &[u8]) -> (u32, Option<Vec<u8>>) {
    let mut d = Decoder::new(res);
    let st = d.u32().expect("status");
    if st != 0 {
        return (st, None);
    }
    assert!(d.bool().expect("handle follows"));
    (st, Some(d.opaque(64).expect("fh").to_vec()))
}

fn status(res: &[u8]) -> u32 {
    Decoder::new(res).u32().expect("status")
}

fn lookup(c: &mut Client, dir: &[u8], name: &str) -> (u32, Option<(Vec<u8>, u32, u64)>) {
    let res = c.call(NFS, 3, &dirop(dir, name));
    let mut d = Decoder::new(&res);
    let st = d.u32().expect("status");
    if st != 0 {
        return (st, None);
    }
    let fh = d.opaque(64).expect("fh").to_vec();
    assert!(d.bool().expect("attrs"));
    let ftype = d.u32().expect("type");
    d.fixed(4 * 4 + 8 * 2 + 8 + 8).expect("middle of fattr3");
    let fileid = d.u64().expect("fileid");
    (st, Some((fh, ftype, fileid)))
}

fn mount(c: &mut Client, path: &str) -> (u32, Option<Vec<u8>>) {
    let mut a = Encoder::new();
    a.string(path);
    let res = c.call(MOUNT, 1, &a);
    let mut d = Decoder::new(&res);
    let st = d.u32().expect("status");
    (st, (st == 0).then(|| d.opaque(64).expect("fh").to_vec()))
}

fn serve(dir: &TempDir) -> (NfsServer, vessel_nfs::ServerHandle) {
    let server =
        NfsServer::new(vec![Export::new("/vol", &dir.0).squash(Squash::None)]).expect("server");
    let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).expect("bind");
    let handle = server.serve(listener, None).expect("serve");
    (server, handle)
}

#[test]
fn directory_operations_change_the_tree_as_asked() {
    let dir = TempDir::new("proto-ops");
    let (_server, handle) = serve(&dir);
    let mut c = Client::connect(handle.nfs_addr());
    let root = mount(&mut c, "/vol").1.expect("mount");

    let mut a = dirop(&root, "d");
    sattr(&mut a, 0o750);
    let d_fh = created(&c.call(NFS, 9, &a)).1.expect("mkdir");
    assert_eq!(
        std::fs::metadata(dir.join("d")).expect("d").mode() & 0o7777,
        0o750
    );

    let mut a = dirop(&d_fh, "f");
    a.u32(1); // GUARDED
    sattr(&mut a, 0o640);
    let f_fh = created(&c.call(NFS, 8, &a)).1.expect("create");
    let mut a = dirop(&d_fh, "f");
    a.u32(1);
    sattr(&mut a, 0o640);
    assert_eq!(
        created(&c.call(NFS, 8, &a)).0,
        17,
        "GUARDED create of an existing name"
    );

    let mut a = fh_args(&f_fh);
    a.u64(0).u32(3).u32(2).opaque(b"abc"); // FILE_SYNC
    assert_eq!(status(&c.call(NFS, 7, &a)), 0);
    let mut a = fh_args(&f_fh);
    a.u64(0).u32(100);
    let res = c.call(NFS, 6, &a);
    let mut d = Decoder::new(&res);
    assert_eq!(d.u32(), Ok(0));
    skip_post_op(&mut d);
    assert_eq!(d.u32(), Ok(3));
    assert_eq!(d.bool(), Ok(true), "eof");
    assert_eq!(d.opaque(100), Ok(&b"abc"[..]));
    let mut a = fh_args(&f_fh);
    a.u64(0).u32(0);
    assert_eq!(status(&c.call(NFS, 21, &a)), 0, "commit");

    // RENAME d/f -> g, LINK g -> d/h.
    let mut a = dirop(&d_fh, "f");
    a.opaque(&root).string("g");
    assert_eq!(status(&c.call(NFS, 14, &a)), 0);
    assert_eq!(std::fs::read(dir.join("g")).expect("renamed"), b"abc");
    let mut a = fh_args(&f_fh);
    a.opaque(&d_fh).string("h");
    assert_eq!(status(&c.call(NFS, 15, &a)), 0);
    assert_eq!(std::fs::metadata(dir.join("g")).expect("g").nlink(), 2);

    // SYMLINK and READLINK store and return the text; LOOKUP does not follow it.
    let mut a = dirop(&root, "s");
    sattr(&mut a, 0o777);
    a.string("/etc");
    let s_fh = created(&c.call(NFS, 10, &a)).1.expect("symlink");
    let res = c.call(NFS, 5, &fh_args(&s_fh));
    let mut d = Decoder::new(&res);
    assert_eq!(d.u32(), Ok(0));
    skip_post_op(&mut d);
    assert_eq!(d.string(100), Ok("/etc"));
    assert_eq!(
        lookup(&mut c, &root, "s").1.expect("lookup s").1,
        5,
        "a symlink"
    );
    assert_eq!(
        lookup(&mut c, &s_fh, "passwd").0,
        20,
        "NOTDIR through a symlink"
    );

    // READDIRPLUS lists the entries with handles.
    let mut a = fh_args(&root);
    a.u64(0).fixed(&[0; 8]).u32(8192).u32(65536);
    let res = c.call(NFS, 17, &a);
    let mut d = Decoder::new(&res);
    assert_eq!(d.u32(), Ok(0));
    skip_post_op(&mut d);
    d.fixed(8).expect("verf");
    let mut names = Vec::new();
    while d.bool().expect("entry follows") {
        d.u64().expect("fileid");
        names.push(d.string(255).expect("name").to_string());
        d.u64().expect("cookie");
        skip_post_op(&mut d);
        if d.bool().expect("fh follows") {
            d.opaque(64).expect("fh");
        }
    }
    assert_eq!(d.bool(), Ok(true), "eof");
    for n in ["d", "g", "s", ".", ".."] {
        assert!(names.iter().any(|x| x == n), "{n} not in {names:?}");
    }

    // MKNOD of a device is refused; a FIFO is made.
    let mut a = dirop(&root, "dev");
    a.u32(4);
    sattr(&mut a, 0o600);
    a.u32(1).u32(3);
    assert_eq!(created(&c.call(NFS, 11, &a)).0, 10004, "NOTSUPP");
    let mut a = dirop(&root, "fifo");
    a.u32(7);
    sattr(&mut a, 0o600);
    assert_eq!(created(&c.call(NFS, 11, &a)).0, 0);

    // RMDIR of a non-empty directory fails; REMOVE then RMDIR succeed.
    assert_eq!(status(&c.call(NFS, 13, &dirop(&root, "d"))), 66, "NOTEMPTY");
    assert_eq!(status(&c.call(NFS, 12, &dirop(&d_fh, "h"))), 0);
    assert_eq!(status(&c.call(NFS, 13, &dirop(&root, "d"))), 0);
    assert_eq!(status(&c.call(NFS, 12, &dirop(&root, "g"))), 0);
    assert!(!dir.join("d").exists() && !dir.join("g").exists());
    assert_eq!(status(&c.call(NFS, 12, &dirop(&root, "g"))), 2, "NOENT");
    let res = c.call(NFS, 12, &dirop(&root, "a/b"));
    assert_eq!(status(&res), 22, "names with a slash are refused");
    let mut d = Decoder::new(&res);
    d.u32().expect("status");
    skip_wcc(&mut d);
}

#[test]
fn handles_stay_inside_the_export() {
    let dir = TempDir::new("proto-handles");
    std::fs::create_dir(dir.join("sub")).expect("mkdir");
    let (server, handle) = serve(&dir);
    let mut c = Client::connect(handle.nfs_addr());
    let root = mount(&mut c, "/vol").1.expect("mount");
    let (_, root_id) = {
        let (st, found) = lookup(&mut c, &root, ".");
        assert_eq!(st, 0);
        let (_, _, id) = found.expect("dot");
        ((), id)
    };
    // `..` of the root is the root.
    let (_, _, up) = lookup(&mut c, &root, "..").1.expect("dotdot");
    assert_eq!(up, root_id);
    // Forged or corrupted handles are refused.
    for i in 0..root.len() {
        let mut bad = root.clone();
        bad[i] ^= 0x40;
        let st = status(&c.call(NFS, 1, &fh_args(&bad)));
        assert!(st == 70 || st == 10001, "byte {i}: status {st}");
    }
    assert_eq!(status(&c.call(NFS, 1, &fh_args(&root[..5]))), 10001);
    // Mount paths cannot climb out.
    assert_eq!(mount(&mut c, "/vol/../..").0, 13);
    assert_eq!(mount(&mut c, "/vol/sub/../../..").0, 13);
    assert!(
        mount(&mut c, "/vol/sub/..").1.is_some(),
        "staying inside is fine"
    );
    assert_eq!(mount(&mut c, "/elsewhere").0, 2);
    // Removing the export makes its handles stale at once; adding it back revives them.
    let export = server.remove_export("/vol").expect("remove");
    assert_eq!(status(&c.call(NFS, 1, &fh_args(&root))), 70);
    assert_eq!(mount(&mut c, "/vol").0, 2);
    server.add_export(export).expect("add back");
    assert_eq!(status(&c.call(NFS, 1, &fh_args(&root))), 0);
    // Exports added at run time are mountable.
    let other = TempDir::new("proto-other");
    server
        .add_export(Export::new("/other", &other.0).read_only(true))
        .expect("add");
    let other_root = mount(&mut c, "/other").1.expect("mount other");
    let mut a = dirop(&other_root, "x");
    sattr(&mut a, 0o755);
    assert_eq!(created(&c.call(NFS, 9, &a)).0, 30, "ROFS");
    assert!(
        server.add_export(Export::new("/other", &other.0)).is_err(),
        "duplicate"
    );
    assert!(server
        .add_export(Export::new("relative", &other.0))
        .is_err());
}

/// The exports MOUNT's EXPORT procedure lists, each with its groups.
fn export_list(c: &mut Client) -> Vec<(String, Vec<String>)> {
    let res = c.call(MOUNT, 5, &Encoder::new());
    let mut d = Decoder::new(&res);
    let mut out = Vec::new();
    while d.bool().expect("export follows") {
        let dir = d.string(1024).expect("dir").to_string();
        let mut groups = Vec::new();
        while d.bool().expect("group follows") {
            groups.push(d.string(255).expect("group").to_string());
        }
        out.push((dir, groups));
    }
    out
}

#[test]
fn an_export_admits_only_the_client_networks_it_names() {
    let dir = TempDir::new("proto-clients");
    let (server, handle) = serve(&dir);
    let addr = handle.nfs_addr();
    let one = Ipv4Addr::new(127, 0, 0, 1);
    let two = Ipv4Addr::new(127, 0, 0, 2);
    let net = |s: &str| vessel_nfs::parse_client_net(s).expect("net");
    // Open to all: both clients mount and use the handle.
    let (mut c1, mut c2) = (
        Client::connect_from(one, addr),
        Client::connect_from(two, addr),
    );
    let root = mount(&mut c1, "/vol").1.expect("mount from .1");
    assert_eq!(status(&c2.call(NFS, 1, &fh_args(&root))), 0);
    assert_eq!(export_list(&mut c1), vec![("/vol".to_string(), vec![])]);

    // Only 127.0.0.2: the other client can neither mount, nor use a handle it holds, nor
    // see the export; the admitted one can, on the same server at the same time.
    server
        .set_clients("/vol", vec![net("127.0.0.2")])
        .expect("set");
    // MOUNT answers as for an export that does not exist (its name is not c1's to learn).
    assert_eq!(mount(&mut c1, "/vol").0, 2, "MNT3ERR_NOENT");
    assert_eq!(
        status(&c1.call(NFS, 1, &fh_args(&root))),
        13,
        "NFS3ERR_ACCES"
    );
    let mut a = dirop(&root, "made-by-1");
    a.u32(1); // GUARDED
    sattr(&mut a, 0o644);
    assert_eq!(created(&c1.call(NFS, 8, &a)).0, 13);
    assert!(!dir.join("made-by-1").exists());
    assert_eq!(export_list(&mut c1), vec![]);
    assert_eq!(dump(&mut c1), vec![], "DUMP shows c1 another's mounts");
    let root2 = mount(&mut c2, "/vol").1.expect("mount from .2");
    assert_eq!(
        dump(&mut c2),
        vec![
            ("127.0.0.1".to_string(), "/vol".to_string()),
            ("127.0.0.2".to_string(), "/vol".to_string())
        ]
    );
    assert_eq!(status(&c2.call(NFS, 1, &fh_args(&root2))), 0);
    assert_eq!(
        export_list(&mut c2),
        vec![("/vol".to_string(), vec!["127.0.0.2/32".to_string()])]
    );
    assert_eq!(server.exports()[0].clients, vec![net("127.0.0.2/32")]);

    // Narrowed to the other side: the handle held from before is refused at once.
    server
        .set_clients("/vol", vec![net("127.0.0.1/32"), net("10.9.9.9/8")])
        .expect("set");
    assert_eq!(status(&c2.call(NFS, 1, &fh_args(&root2))), 13);
    assert_eq!(status(&c1.call(NFS, 1, &fh_args(&root))), 0);
    assert_eq!(
        export_list(&mut c1),
        vec![(
            "/vol".to_string(),
            vec!["127.0.0.1/32".to_string(), "10.0.0.0/8".to_string()]
        )]
    );
    // A network holds its addresses; open to all again, both are back.
    server
        .set_clients("/vol", vec![net("127.0.0.0/30")])
        .expect("set");
    assert_eq!(status(&c2.call(NFS, 1, &fh_args(&root2))), 0);
    server.set_clients("/vol", vec![]).expect("set");
    assert_eq!(status(&c1.call(NFS, 1, &fh_args(&root))), 0);
    assert_eq!(status(&c2.call(NFS, 1, &fh_args(&root))), 0);
    assert!(
        server.set_clients("/nope", vec![]).is_err(),
        "unknown export"
    );
    for bad in [
        "",
        "10.0.0.0/33",
        "host.example",
        "10.0.0.0/8/1",
        "0.0.0.0",
        "::",
        "0.0.0.0/32",
    ] {
        assert!(vessel_nfs::parse_client_net(bad).is_err(), "{bad:?}");
    }
    assert_eq!(net("::ffff:192.0.2.7").to_string(), "192.0.2.7/32");
    assert_eq!(net("::ffff:192.0.2.7/120").to_string(), "192.0.2.0/24");
    assert_eq!(net("::ffff:10.1.2.3/104").to_string(), "10.0.0.0/8");
    assert_eq!(net("fd00::1/64").to_string(), "fd00::/64");
}

#[test]
fn an_ipv4_client_of_an_ipv6_listener_is_known_by_its_ipv4_address() {
    let dir = TempDir::new("proto-clients6");
    let server = NfsServer::new(vec![Export::new("/vol", &dir.0)
        .squash(Squash::None)
        .clients(vec![
            vessel_nfs::parse_client_net("::ffff:127.0.0.2/128").expect("net")
        ])])
    .expect("server");
    let listener = TcpListener::bind("[::]:0").expect("bind [::]:0 (IPv6 must be on)");
    let handle = server.serve(listener, None).expect("serve");
    let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, handle.nfs_addr().port()));
    let mut admitted = Client::connect_from(Ipv4Addr::new(127, 0, 0, 2), v4);
    let root = mount(&mut admitted, "/vol")
        .1
        .expect("mount from 127.0.0.2");
    assert_eq!(status(&admitted.call(NFS, 1, &fh_args(&root))), 0);
    let mut other = Client::connect_from(Ipv4Addr::LOCALHOST, v4);
    assert_eq!(mount(&mut other, "/vol").0, 2);
    assert_eq!(status(&other.call(NFS, 1, &fh_args(&root))), 13);
    // `::/0` is every address, IPv4 clients (mapped) too.
    let every = vessel_nfs::parse_client_net("::/0").expect("net");
    assert_eq!(every.to_string(), "::/0");
    server.set_clients("/vol", vec![every]).expect("set");
    assert_eq!(status(&other.call(NFS, 1, &fh_args(&root))), 0);
    // Any other IPv6 network holds no IPv4 client.
    server
        .set_clients(
            "/vol",
            vec![vessel_nfs::parse_client_net("fd00::/8").expect("net")],
        )
        .expect("set");
    assert_eq!(status(&admitted.call(NFS, 1, &fh_args(&root))), 13);
}

/// Who mounted what, as MOUNT's DUMP tells the caller.
fn dump(c: &mut Client) -> Vec<(String, String)> {
    let res = c.call(MOUNT, 2, &Encoder::new());
    let mut d = Decoder::new(&res);
    let mut out = Vec::new();
    while d.bool().expect("entry follows") {
        let host = d.string(255).expect("host").to_string();
        let dir = d.string(1024).expect("dir").to_string();
        out.push((host, dir));
    }
    out.sort();
    out
}

#[test]
fn hostile_input_closes_only_that_connection() {
    let dir = TempDir::new("proto-hostile");
    let (_server, handle) = serve(&dir);
    let addr = handle.nfs_addr();
    let closed = |mut s: TcpStream| {
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut b = [0u8; 1];
        matches!(s.read(&mut b), Ok(0) | Err(_))
    };
    // A record announcing 2 GiB.
    let mut s = TcpStream::connect(addr).expect("connect");
    s.write_all(&0xffff_ffffu32.to_be_bytes()).expect("send");
    s.write_all(&[0; 64]).expect("send");
    assert!(closed(s), "oversized record kept open");
    // A record that is not a call gets no reply; a truncated call header neither.
    let mut s = TcpStream::connect(addr).expect("connect");
    s.write_all(&(8u32 | 1 << 31).to_be_bytes()).expect("send");
    s.write_all(&[0, 0, 0, 1, 0, 0, 0, 1]).expect("send");
    drop(s);
    // Garbage arguments get GARBAGE_ARGS, unknown programs PROG_UNAVAIL, and the
    // connection stays usable.
    let mut c = Client::connect(addr);
    let mut e = Encoder::new();
    e.u32(99).u32(0).u32(2).u32(NFS).u32(3).u32(1);
    e.u32(0).opaque(&[]).u32(0).opaque(&[]);
    e.u32(0xffff_fff0); // a handle length far beyond the message
    let msg = e.into_bytes();
    c.s.write_all(&(msg.len() as u32 | 1 << 31).to_be_bytes())
        .expect("send");
    c.s.write_all(&msg).expect("send");
    let mut hdr = [0u8; 4];
    c.s.read_exact(&mut hdr).expect("reply");
    let mut reply = vec![0u8; (u32::from_be_bytes(hdr) & 0x7fff_ffff) as usize];
    c.s.read_exact(&mut reply).expect("reply");
    let mut d = Decoder::new(&reply);
    assert_eq!(d.u32(), Ok(99));
    d.u32().expect("reply");
    assert_eq!(d.u32(), Ok(0));
    d.u32().expect("flavor");
    d.opaque(400).expect("verf");
    assert_eq!(d.u32(), Ok(4), "GARBAGE_ARGS");
    // NULL still answers, on this connection and on new ones.
    c.call(NFS, 0, &Encoder::new());
    Client::connect(addr).call(MOUNT, 0, &Encoder::new());
}
