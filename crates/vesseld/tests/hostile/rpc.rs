//! A minimal ONC RPC client for NFSv3 and MOUNT v3 over TCP, with chosen credentials and a
//! chosen source address (any 127.0.0.0/8 address reaches loopback): what the hostile NFS
//! tests need that libnfs's tools cannot do.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Duration;

use vessel_nfs::xdr::{Decoder, Encoder};

pub const NFS: u32 = 100003;
pub const MOUNT: u32 = 100005;
pub const STALE: u32 = 70;
pub const ACCES: u32 = 13;

/// A TCP connection from `src` (any 127.0.0.0/8 address reaches loopback).
pub fn connect_from(src: Ipv4Addr, to: SocketAddr) -> TcpStream {
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

pub struct Client {
    pub s: TcpStream,
    xid: u32,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Self {
        Self::from(Ipv4Addr::LOCALHOST, addr)
    }

    pub fn from(src: Ipv4Addr, addr: SocketAddr) -> Self {
        let s = connect_from(src, addr);
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        Client { s, xid: 1 }
    }

    /// Calls a procedure as `uid`/`gid`/`gids` (AUTH_UNIX); returns the results.
    pub fn call_as(
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

    pub fn call(&mut self, prog: u32, proc_: u32, args: &Encoder) -> Vec<u8> {
        self.call_as((0, 0, &[]), prog, proc_, args)
    }
}

pub fn fh_args(fh: &[u8]) -> Encoder {
    let mut e = Encoder::new();
    e.opaque(fh);
    e
}

pub fn dirop(fh: &[u8], name: &str) -> Encoder {
    let mut e = Encoder::new();
    e.opaque(fh).string(name);
    e
}

pub fn status(res: &[u8]) -> u32 {
    Decoder::new(res).u32().expect("status")
}

pub fn mount(c: &mut Client, path: &str) -> Vec<u8> {
    let mut a = Encoder::new();
    a.string(path);
    let res = c.call(MOUNT, 1, &a);
    let mut d = Decoder::new(&res);
    assert_eq!(d.u32(), Ok(0), "mount {path}");
    d.opaque(64).expect("fh").to_vec()
}

pub fn lookup(c: &mut Client, dir: &[u8], name: &str) -> Vec<u8> {
    let res = c.call(NFS, 3, &dirop(dir, name));
    let mut d = Decoder::new(&res);
    assert_eq!(d.u32(), Ok(0), "lookup {name}");
    d.opaque(64).expect("fh").to_vec()
}

/// READ of `count` bytes at 0 as `who`: status and data.
pub fn read_as(c: &mut Client, who: (u32, u32, &[u32]), fh: &[u8]) -> (u32, Vec<u8>) {
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
pub fn write_as(c: &mut Client, who: (u32, u32, &[u32]), fh: &[u8], data: &[u8]) -> u32 {
    let mut a = fh_args(fh);
    a.u64(0).u32(data.len() as u32).u32(2).opaque(data);
    status(&c.call_as(who, NFS, 7, &a))
}
