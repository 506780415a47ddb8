//! A minimal synchronous rtnetlink client over a raw `NETLINK_ROUTE` socket.
//!
//! Only what the link, address, route and FDB operations need: build one request, send it,
//! read the acknowledgement (or the single reply for a lookup).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::netns::{NetNs, NetNsError};

/// Errors from the netlink transport.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The socket could not be created or used.
    #[error("netlink socket {op} failed")]
    Socket {
        /// What was being done.
        op: &'static str,
        /// Underlying error.
        #[source]
        source: io::Error,
    },
    /// The kernel refused the request.
    #[error("kernel refused {what}")]
    Refused {
        /// Which request was refused.
        what: String,
        /// The errno the kernel returned.
        #[source]
        source: io::Error,
    },
    /// The kernel sent something this client does not understand.
    #[error("malformed netlink reply to {0}")]
    Malformed(String),
    /// The target namespace could not be entered.
    #[error(transparent)]
    Namespace(#[from] NetNsError),
}

const NLMSG_HDRLEN: usize = 16;
pub(crate) const NLM_F_REQUEST: u16 = 0x1;
pub(crate) const NLM_F_ACK: u16 = 0x4;
pub(crate) const NLM_F_REPLACE: u16 = 0x100;
pub(crate) const NLM_F_EXCL: u16 = 0x200;
pub(crate) const NLM_F_CREATE: u16 = 0x400;
pub(crate) const NLM_F_APPEND: u16 = 0x800;
pub(crate) const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLA_F_NESTED: u16 = 0x8000;

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// One netlink request being built: header, fixed family struct, then attributes.
pub(crate) struct Request {
    buf: Vec<u8>,
    nests: Vec<usize>,
}

impl Request {
    /// Starts a message of `msg_type` with `flags`; `fixed` is the family header (ifinfomsg...).
    pub(crate) fn new(msg_type: u16, flags: u16, fixed: &[u8]) -> Self {
        let mut buf = vec![0u8; NLMSG_HDRLEN];
        buf[4..6].copy_from_slice(&msg_type.to_ne_bytes());
        buf[6..8].copy_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(fixed);
        buf.resize(align4(buf.len()), 0);
        Self {
            buf,
            nests: Vec::new(),
        }
    }

    /// Appends one attribute with raw payload.
    pub(crate) fn attr(&mut self, kind: u16, payload: &[u8]) -> &mut Self {
        let len = 4 + payload.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        self.buf.resize(align4(self.buf.len()), 0);
        self
    }

    /// Appends a NUL-terminated string attribute.
    pub(crate) fn attr_str(&mut self, kind: u16, value: &str) -> &mut Self {
        let mut v = value.as_bytes().to_vec();
        v.push(0);
        self.attr(kind, &v)
    }

    /// Appends a native-endian u32 attribute.
    pub(crate) fn attr_u32(&mut self, kind: u16, value: u32) -> &mut Self {
        self.attr(kind, &value.to_ne_bytes())
    }

    /// Opens a nested attribute; close it with [`Request::end_nest`].
    pub(crate) fn begin_nest(&mut self, kind: u16) -> &mut Self {
        self.nests.push(self.buf.len());
        self.buf.extend_from_slice(&[0, 0]);
        self.buf
            .extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        self
    }

    /// Appends raw bytes (a family header inside a nest, as VETH_INFO_PEER wants).
    pub(crate) fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(bytes);
        self.buf.resize(align4(self.buf.len()), 0);
        self
    }

    /// Closes the innermost nested attribute.
    pub(crate) fn end_nest(&mut self) -> &mut Self {
        if let Some(start) = self.nests.pop() {
            let len = (self.buf.len() - start) as u16;
            self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        }
        self
    }

    /// The finished message bytes (sequence 1), for tests of request encoding.
    #[cfg(test)]
    pub(crate) fn finish_for_test(&mut self) -> Vec<u8> {
        self.finish(1).to_vec()
    }

    fn finish(&mut self, seq: u32) -> &[u8] {
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        &self.buf
    }
}

/// A `NETLINK_ROUTE` socket bound to one network namespace.
#[derive(Debug)]
pub(crate) struct Netlink {
    fd: OwnedFd,
    seq: u32,
}

fn last_err(op: &'static str) -> NetlinkError {
    NetlinkError::Socket {
        op,
        source: io::Error::last_os_error(),
    }
}

impl Netlink {
    /// Opens a socket inside `ns` (the socket keeps that namespace for its whole life).
    pub(crate) fn open(ns: &NetNs) -> Result<Self, NetlinkError> {
        let fd = ns.run(Self::open_here)??;
        Ok(Self { fd, seq: 1 })
    }

    fn open_here() -> Result<OwnedFd, NetlinkError> {
        // SAFETY: plain socket(2) call with constant arguments; the result is checked.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if raw < 0 {
            return Err(last_err("create"));
        }
        // SAFETY: `raw` is a freshly created descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_nl is plain old data; all-zero is a valid "let the kernel pick" address.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: `addr` is a valid sockaddr_nl and the length matches its size.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(last_err("bind"));
        }
        Ok(fd)
    }

    /// Sends `req` and waits for the kernel's answer. Returns the payload of the first
    /// non-error reply message (after its netlink header), or an empty vector on a plain ack.
    pub(crate) fn call(&mut self, req: &mut Request, what: &str) -> Result<Vec<u8>, NetlinkError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let msg = req.finish(seq);
        // SAFETY: `msg` is a valid, initialised buffer of the given length.
        let sent = unsafe { libc::send(self.fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
        if sent < 0 {
            return Err(last_err("send"));
        }
        let mut reply = Vec::new();
        let mut buf = vec![0u8; 65536];
        loop {
            // SAFETY: `buf` is a writable buffer of the given length that outlives the call.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(NetlinkError::Socket {
                    op: "recv",
                    source: err,
                });
            }
            let data = &buf[..n as usize];
            let mut off = 0;
            while off + NLMSG_HDRLEN <= data.len() {
                let len = u32::from_ne_bytes(word(data, off)) as usize;
                let kind = u16::from_ne_bytes([data[off + 4], data[off + 5]]);
                let mseq = u32::from_ne_bytes(word(data, off + 8));
                if len < NLMSG_HDRLEN || off + len > data.len() {
                    return Err(NetlinkError::Malformed(what.to_string()));
                }
                let body = &data[off + NLMSG_HDRLEN..off + len];
                off += align4(len);
                if mseq != seq {
                    continue;
                }
                match kind {
                    NLMSG_ERROR => {
                        if body.len() < 4 {
                            return Err(NetlinkError::Malformed(what.to_string()));
                        }
                        let errno = i32::from_ne_bytes(word(body, 0));
                        if errno == 0 {
                            return Ok(reply);
                        }
                        return Err(NetlinkError::Refused {
                            what: what.to_string(),
                            source: io::Error::from_raw_os_error(-errno),
                        });
                    }
                    NLMSG_DONE => return Ok(reply),
                    _ => {
                        if reply.is_empty() {
                            reply = body.to_vec();
                        }
                        if req_wants_single_reply(req) {
                            return Ok(reply);
                        }
                    }
                }
            }
        }
    }
}

impl Netlink {
    /// Sends a dump request (`NLM_F_DUMP`) and returns the body of every reply message of
    /// type `kind` (after its netlink header), until the kernel says it is done.
    pub(crate) fn dump(
        &mut self,
        req: &mut Request,
        kind: u16,
        what: &str,
    ) -> Result<Vec<Vec<u8>>, NetlinkError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let msg = req.finish(seq);
        // SAFETY: `msg` is a valid, initialised buffer of the given length.
        let sent = unsafe { libc::send(self.fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
        if sent < 0 {
            return Err(last_err("send"));
        }
        let mut out = Vec::new();
        let mut buf = vec![0u8; 65536];
        loop {
            // SAFETY: `buf` is a writable buffer of the given length that outlives the call.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(NetlinkError::Socket {
                    op: "recv",
                    source: err,
                });
            }
            if split_dump(&buf[..n as usize], seq, kind, what, &mut out)? {
                return Ok(out);
            }
        }
    }
}

/// Adds the bodies of the messages of type `kind` with sequence `seq` in one datagram of a
/// dump to `out`; true once the dump is done.
fn split_dump(
    data: &[u8],
    seq: u32,
    kind: u16,
    what: &str,
    out: &mut Vec<Vec<u8>>,
) -> Result<bool, NetlinkError> {
    let mut off = 0;
    while off + NLMSG_HDRLEN <= data.len() {
        let len = u32::from_ne_bytes(word(data, off)) as usize;
        let mkind = u16::from_ne_bytes([data[off + 4], data[off + 5]]);
        let mseq = u32::from_ne_bytes(word(data, off + 8));
        if len < NLMSG_HDRLEN || off + len > data.len() {
            return Err(NetlinkError::Malformed(what.to_string()));
        }
        let body = &data[off + NLMSG_HDRLEN..off + len];
        off += align4(len);
        if mseq != seq {
            continue;
        }
        match mkind {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR => {
                if body.len() < 4 {
                    return Err(NetlinkError::Malformed(what.to_string()));
                }
                let errno = i32::from_ne_bytes(word(body, 0));
                if errno == 0 {
                    return Ok(true);
                }
                return Err(NetlinkError::Refused {
                    what: what.to_string(),
                    source: io::Error::from_raw_os_error(-errno),
                });
            }
            k if k == kind => out.push(body.to_vec()),
            _ => {}
        }
    }
    Ok(false)
}

fn req_wants_single_reply(req: &Request) -> bool {
    let flags = u16::from_ne_bytes([req.buf[6], req.buf[7]]);
    flags & NLM_F_ACK == 0
}

fn word(data: &[u8], off: usize) -> [u8; 4] {
    [data[off], data[off + 1], data[off + 2], data[off + 3]]
}

/// Splits a run of netlink attributes into `(type, payload)` pairs (type without the nested
/// and byte-order flags); stops at the first malformed attribute.
pub(crate) fn parse_attrs(mut buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while buf.len() >= 4 {
        let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
        let kind = u16::from_ne_bytes([buf[2], buf[3]]) & 0x3fff;
        if len < 4 || len > buf.len() {
            break;
        }
        out.push((kind, &buf[4..len]));
        buf = &buf[align4(len).min(buf.len())..];
    }
    out
}

/// The first attribute of type `kind` in `attrs`.
pub(crate) fn find_attr<'a>(attrs: &[(u16, &'a [u8])], kind: u16) -> Option<&'a [u8]> {
    attrs.iter().find(|(k, _)| *k == kind).map(|(_, v)| *v)
}

/// Reads a native-endian u32 attribute payload.
pub(crate) fn attr_u32(payload: &[u8]) -> Option<u32> {
    (payload.len() >= 4).then(|| u32::from_ne_bytes(word(payload, 0)))
}

/// Builds a `struct ifinfomsg`.
pub(crate) fn ifinfomsg(family: u8, index: i32, flags: u32, change: u32) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[0] = family;
    b[4..8].copy_from_slice(&index.to_ne_bytes());
    b[8..12].copy_from_slice(&flags.to_ne_bytes());
    b[12..16].copy_from_slice(&change.to_ne_bytes());
    b
}

/// Reads `ifi_index` out of an ifinfomsg reply body.
pub(crate) fn ifinfo_index(body: &[u8]) -> Option<u32> {
    if body.len() < 16 {
        return None;
    }
    let idx = i32::from_ne_bytes(word(body, 4));
    u32::try_from(idx).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_aligned_and_nests_sized() {
        let mut req = Request::new(16, NLM_F_REQUEST, &ifinfomsg(0, 0, 0, 0));
        req.attr_str(3, "br0");
        req.begin_nest(18).attr_str(1, "bridge").end_nest();
        let msg = req.finish(7).to_vec();
        assert_eq!(msg.len() % 4, 0);
        assert_eq!(u32::from_ne_bytes(word(&msg, 0)) as usize, msg.len());
        // ifname attr: 4 header + "br0\0" = 8.
        assert_eq!(u16::from_ne_bytes([msg[32], msg[33]]), 8);
        // nest: 4 header + (4 + "bridge\0" = 11 -> 12) = 16.
        assert_eq!(u16::from_ne_bytes([msg[40], msg[41]]), 16);
        // Parsing the attributes back (after nlmsghdr + ifinfomsg) finds both.
        let attrs = parse_attrs(&msg[32..]);
        assert_eq!(attrs.len(), 2);
        assert_eq!(find_attr(&attrs, 3), Some(&b"br0\0"[..]));
        let nested = parse_attrs(find_attr(&attrs, 18).expect("linkinfo"));
        assert_eq!(nested, vec![(1, &b"bridge\0"[..])]);
    }

    fn message(kind: u16, seq: u32, body: &[u8]) -> Vec<u8> {
        let mut m = vec![0u8; NLMSG_HDRLEN];
        m[0..4].copy_from_slice(&((NLMSG_HDRLEN + body.len()) as u32).to_ne_bytes());
        m[4..6].copy_from_slice(&kind.to_ne_bytes());
        m[8..12].copy_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(body);
        m.resize(align4(m.len()), 0);
        m
    }

    #[test]
    fn dumps_collect_their_kind_until_done() {
        let mut out = Vec::new();
        let mut data = message(24, 5, &[1, 2, 3, 4]);
        data.extend(message(24, 4, &[9, 9, 9, 9])); // another request's
        data.extend(message(99, 5, &[7, 7, 7, 7])); // another kind
        data.extend(message(24, 5, &[5, 6, 7, 8]));
        assert!(!split_dump(&data, 5, 24, "dump", &mut out).unwrap());
        assert!(split_dump(&message(NLMSG_DONE, 5, &[0; 4]), 5, 24, "dump", &mut out).unwrap());
        assert_eq!(out, vec![vec![1, 2, 3, 4], vec![5, 6, 7, 8]]);
        let refused = message(NLMSG_ERROR, 5, &(-libc::EPERM).to_ne_bytes());
        assert!(matches!(
            split_dump(&refused, 5, 24, "dump", &mut out),
            Err(NetlinkError::Refused { .. })
        ));
        let truncated = &message(24, 5, &[1, 2, 3, 4])[..18];
        assert!(split_dump(truncated, 5, 24, "dump", &mut out).is_err());
    }
}
