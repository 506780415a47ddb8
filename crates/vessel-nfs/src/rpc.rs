//! ONC RPC v2 (RFC 5531): record marking over TCP, call headers, credentials and replies.

use std::io::{self, Read, Write};

use crate::xdr::{Decoder, Encoder, XdrError};

/// The largest record the server accepts: a 1 MiB WRITE plus its headers.
pub const MAX_RECORD: usize = (1 << 20) + 64 * 1024;

/// Last-fragment bit of a record-marking header.
const LAST_FRAGMENT: u32 = 1 << 31;

/// Why a record could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The peer closed the connection between records.
    #[error("connection closed")]
    Closed,
    /// The record is larger than [`MAX_RECORD`].
    #[error("record of at least {0} bytes exceeds the limit of {MAX_RECORD}")]
    TooLarge(usize),
    /// Buffering the record would pass the server's memory budget for this client or all.
    #[error("buffering {0} more bytes would pass the server's memory budget")]
    OverBudget(usize),
    /// Socket I/O failed (including a close in the middle of a record).
    #[error("socket I/O failed")]
    Io(#[from] io::Error),
}

/// Read one record (all its fragments) into `buf`, which is cleared first.
///
/// Memory grows only as bytes arrive: a fragment header announcing 2 GiB allocates nothing
/// up front, and the total is capped at [`MAX_RECORD`].
pub fn read_record(r: &mut impl Read, buf: &mut Vec<u8>) -> Result<(), RecordError> {
    read_record_within(r, buf, &mut |_| true)
}

/// Bytes read into a record at a time, each asked of the budget first.
const CHUNK: usize = 64 * 1024;

/// [`read_record`], asking `reserve(n)` before `n` more bytes are buffered: when it answers
/// false the record is abandoned with [`RecordError::OverBudget`]. The caller releases what
/// it reserved (the record's length) once the record is handled.
pub fn read_record_within(
    r: &mut impl Read,
    buf: &mut Vec<u8>,
    reserve: &mut dyn FnMut(usize) -> bool,
) -> Result<(), RecordError> {
    buf.clear();
    let mut first = true;
    loop {
        let mut hdr = [0u8; 4];
        if first {
            // A clean close is only a close before the first byte of a record.
            let n = read_full_or_eof(r, &mut hdr)?;
            if n == 0 {
                return Err(RecordError::Closed);
            }
            if n < 4 {
                return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
            }
            first = false;
        } else {
            r.read_exact(&mut hdr)?;
        }
        let word = u32::from_be_bytes(hdr);
        let len = (word & !LAST_FRAGMENT) as usize;
        let total = buf.len().saturating_add(len);
        if total > MAX_RECORD {
            return Err(RecordError::TooLarge(total));
        }
        let mut left = len;
        while left > 0 {
            let n = left.min(CHUNK);
            if !reserve(n) {
                return Err(RecordError::OverBudget(n));
            }
            let start = buf.len();
            buf.resize(start + n, 0);
            if let Err(e) = r.read_exact(&mut buf[start..]) {
                buf.truncate(start);
                return Err(e.into());
            }
            left -= n;
        }
        if word & LAST_FRAGMENT != 0 {
            return Ok(());
        }
    }
}

fn read_full_or_eof(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Write `msg` as one record of a single fragment.
pub fn write_record(w: &mut impl Write, msg: &[u8]) -> io::Result<()> {
    let len = u32::try_from(msg.len())
        .ok()
        .filter(|l| *l < LAST_FRAGMENT)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "reply too large"))?;
    w.write_all(&(len | LAST_FRAGMENT).to_be_bytes())?;
    w.write_all(msg)?;
    w.flush()
}

/// Message type of a call.
const CALL: u32 = 0;
/// Message type of a reply.
const REPLY: u32 = 1;
/// RPC protocol version spoken.
const RPC_VERSION: u32 = 2;

/// `AUTH_NONE` flavor.
pub const AUTH_NONE: u32 = 0;
/// `AUTH_UNIX` (`AUTH_SYS`) flavor.
pub const AUTH_UNIX: u32 = 1;

/// Credentials of a call, as the client claims them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// `AUTH_NONE`: an anonymous caller.
    None,
    /// `AUTH_UNIX`: the client's word for the caller's uid, gid and groups.
    Unix {
        /// Client host name.
        machine: String,
        /// Caller's uid.
        uid: u32,
        /// Caller's primary gid.
        gid: u32,
        /// Supplementary groups (at most 16).
        gids: Vec<u32>,
    },
}

/// A decoded call header; the procedure's arguments follow in the same message.
#[derive(Debug, Clone)]
pub struct Call {
    /// Transaction id, echoed in the reply.
    pub xid: u32,
    /// Program number.
    pub prog: u32,
    /// Program version.
    pub vers: u32,
    /// Procedure number.
    pub proc_: u32,
    /// Caller's credentials.
    pub cred: Credentials,
}

/// A call that cannot be answered normally, and how it is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Not a call, or undecodable header: nothing can be answered (no xid).
    Garbage,
    /// `MSG_DENIED` / `RPC_MISMATCH`: wrong RPC version.
    RpcMismatch(u32),
    /// `MSG_DENIED` / `AUTH_ERROR` with the given `auth_stat`.
    AuthError(u32, u32),
}

/// `auth_stat`: bad credentials (seal broken).
pub const AUTH_BADCRED: u32 = 1;
/// `auth_stat`: rejected credentials flavor.
pub const AUTH_REJECTEDCRED: u32 = 2;
/// `auth_stat`: too weak.
pub const AUTH_TOOWEAK: u32 = 5;

/// Decode a call header from a record; returns the header and a decoder positioned at the
/// arguments.
pub fn decode_call(msg: &[u8]) -> Result<(Call, Decoder<'_>), Refusal> {
    let mut d = Decoder::new(msg);
    let xid = d.u32().map_err(|_| Refusal::Garbage)?;
    if d.u32() != Ok(CALL) {
        return Err(Refusal::Garbage);
    }
    let rpcvers = d.u32().map_err(|_| Refusal::Garbage)?;
    if rpcvers != RPC_VERSION {
        return Err(Refusal::RpcMismatch(xid));
    }
    let (prog, vers, proc_) =
        (|| Ok::<_, XdrError>((d.u32()?, d.u32()?, d.u32()?)))().map_err(|_| Refusal::Garbage)?;
    let cred = decode_cred(&mut d).map_err(|e| match e {
        CredError::Xdr => Refusal::AuthError(xid, AUTH_BADCRED),
        CredError::Flavor => Refusal::AuthError(xid, AUTH_REJECTEDCRED),
    })?;
    // The verifier: any flavor, at most 400 bytes, ignored.
    (|| {
        d.u32()?;
        d.opaque(400)
    })()
    .map_err(|_| Refusal::AuthError(xid, AUTH_BADCRED))?;
    Ok((
        Call {
            xid,
            prog,
            vers,
            proc_,
            cred,
        },
        d,
    ))
}

enum CredError {
    Xdr,
    Flavor,
}

impl From<XdrError> for CredError {
    fn from(_: XdrError) -> Self {
        CredError::Xdr
    }
}

fn decode_cred(d: &mut Decoder<'_>) -> Result<Credentials, CredError> {
    let flavor = d.u32()?;
    let body = d.opaque(400)?;
    match flavor {
        AUTH_NONE => Ok(Credentials::None),
        AUTH_UNIX => {
            let mut b = Decoder::new(body);
            let _stamp = b.u32()?;
            let machine = String::from_utf8_lossy(b.opaque(255)?).into_owned();
            let uid = b.u32()?;
            let gid = b.u32()?;
            let n = b.u32()?;
            if n > 16 {
                return Err(CredError::Xdr);
            }
            let gids = (0..n).map(|_| b.u32()).collect::<Result<Vec<_>, _>>()?;
            Ok(Credentials::Unix {
                machine,
                uid,
                gid,
                gids,
            })
        }
        _ => Err(CredError::Flavor),
    }
}

/// `accept_stat` of an accepted reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accept {
    /// Executed; results follow.
    Success,
    /// The program is not served here.
    ProgUnavail,
    /// The program is served, but not this version (lowest, highest).
    ProgMismatch(u32, u32),
    /// No such procedure.
    ProcUnavail,
    /// The arguments could not be decoded.
    GarbageArgs,
    /// The server failed (e.g. out of memory).
    SystemErr,
}

/// Start an accepted reply for `xid` with `stat`; for `Success` the caller appends results.
pub fn accepted_reply(xid: u32, stat: Accept) -> Encoder {
    let mut e = Encoder::with_capacity(128);
    e.u32(xid).u32(REPLY).u32(0); // MSG_ACCEPTED
    e.u32(AUTH_NONE).opaque(&[]); // verifier
    match stat {
        Accept::Success => e.u32(0),
        Accept::ProgUnavail => e.u32(1),
        Accept::ProgMismatch(lo, hi) => e.u32(2).u32(lo).u32(hi),
        Accept::ProcUnavail => e.u32(3),
        Accept::GarbageArgs => e.u32(4),
        Accept::SystemErr => e.u32(5),
    };
    e
}

/// A denied reply for a refused call, or `None` when there is no xid to answer.
pub fn denied_reply(refusal: &Refusal) -> Option<Vec<u8>> {
    let mut e = Encoder::new();
    match refusal {
        Refusal::Garbage => return None,
        Refusal::RpcMismatch(xid) => {
            e.u32(*xid).u32(REPLY).u32(1).u32(0); // MSG_DENIED, RPC_MISMATCH
            e.u32(RPC_VERSION).u32(RPC_VERSION);
        }
        Refusal::AuthError(xid, stat) => {
            e.u32(*xid).u32(REPLY).u32(1).u32(1).u32(*stat); // MSG_DENIED, AUTH_ERROR
        }
    }
    Some(e.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call_bytes(cred: &[u8], flavor: u32) -> Vec<u8> {
        let mut e = Encoder::new();
        e.u32(0x1234).u32(CALL).u32(2).u32(100003).u32(3).u32(1);
        e.u32(flavor).opaque(cred);
        e.u32(AUTH_NONE).opaque(&[]);
        e.u32(0xdead_beef); // first argument
        e.into_bytes()
    }

    fn unix_cred(ngids: u32) -> Vec<u8> {
        let mut c = Encoder::new();
        c.u32(1).string("host").u32(1000).u32(100).u32(ngids);
        for g in 0..ngids {
            c.u32(g);
        }
        c.into_bytes()
    }

    #[test]
    fn call_with_auth_unix_decodes() {
        let msg = call_bytes(&unix_cred(2), AUTH_UNIX);
        let (call, mut args) = decode_call(&msg).expect("call");
        assert_eq!(
            (call.xid, call.prog, call.vers, call.proc_),
            (0x1234, 100003, 3, 1)
        );
        assert_eq!(
            call.cred,
            Credentials::Unix {
                machine: "host".into(),
                uid: 1000,
                gid: 100,
                gids: vec![0, 1]
            }
        );
        assert_eq!(args.u32(), Ok(0xdead_beef));
    }

    #[test]
    fn hostile_headers_are_refused_not_panicking() {
        let good = call_bytes(&unix_cred(1), AUTH_UNIX);
        for cut in 0..good.len() - 4 {
            assert!(decode_call(&good[..cut]).is_err(), "cut {cut}");
        }
        // Too many groups is a bad credential.
        let msg = call_bytes(&unix_cred(17), AUTH_UNIX);
        assert_eq!(
            decode_call(&msg).err(),
            Some(Refusal::AuthError(0x1234, AUTH_BADCRED))
        );
        // Unknown flavors are rejected.
        let msg = call_bytes(&[], 6);
        assert_eq!(
            decode_call(&msg).err(),
            Some(Refusal::AuthError(0x1234, AUTH_REJECTEDCRED))
        );
        // A reply is not a call.
        let mut e = Encoder::new();
        e.u32(1).u32(REPLY);
        assert_eq!(decode_call(e.as_bytes()).err(), Some(Refusal::Garbage));
        // Wrong RPC version.
        let mut e = Encoder::new();
        e.u32(9).u32(CALL).u32(3);
        assert_eq!(
            decode_call(e.as_bytes()).err(),
            Some(Refusal::RpcMismatch(9))
        );
        assert!(denied_reply(&Refusal::RpcMismatch(9)).is_some());
        assert!(denied_reply(&Refusal::Garbage).is_none());
    }

    #[test]
    fn records_join_fragments() {
        let mut wire = Vec::new();
        wire.extend_from_slice(&3u32.to_be_bytes());
        wire.extend_from_slice(b"abc");
        wire.extend_from_slice(&(2 | LAST_FRAGMENT).to_be_bytes());
        wire.extend_from_slice(b"de");
        write_record(&mut wire, b"next").expect("write");
        let mut r = &wire[..];
        let mut buf = Vec::new();
        read_record(&mut r, &mut buf).expect("first");
        assert_eq!(buf, b"abcde");
        read_record(&mut r, &mut buf).expect("second");
        assert_eq!(buf, b"next");
        assert!(matches!(
            read_record(&mut r, &mut buf),
            Err(RecordError::Closed)
        ));
    }

    #[test]
    fn oversized_and_truncated_records_fail_without_big_allocations() {
        // A header announcing 2 GiB with 4 bytes behind it.
        let mut wire = (0x7fff_ffffu32 | LAST_FRAGMENT).to_be_bytes().to_vec();
        wire.extend_from_slice(b"abcd");
        let mut buf = Vec::new();
        assert!(matches!(
            read_record(&mut &wire[..], &mut buf),
            Err(RecordError::TooLarge(_))
        ));
        assert!(buf.capacity() < 1 << 20);
        // Many fragments that together exceed the limit.
        let mut wire = Vec::new();
        for _ in 0..20 {
            wire.extend_from_slice(&(64u32 << 10).to_be_bytes());
            wire.extend(std::iter::repeat_n(0u8, 64 << 10));
        }
        assert!(matches!(
            read_record(&mut &wire[..], &mut buf),
            Err(RecordError::TooLarge(_))
        ));
        // A record cut short is an I/O error, not a clean close.
        let mut wire = (10u32 | LAST_FRAGMENT).to_be_bytes().to_vec();
        wire.extend_from_slice(b"abc");
        assert!(matches!(
            read_record(&mut &wire[..], &mut buf),
            Err(RecordError::Io(_))
        ));
        assert!(matches!(
            read_record(&mut &[0u8, 0][..], &mut buf),
            Err(RecordError::Io(_))
        ));
    }
}
