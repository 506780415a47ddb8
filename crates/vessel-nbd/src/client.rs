//! A small NBD client: the fixed newstyle handshake with `NBD_OPT_GO`, then reads, writes
//! and flushes with simple replies. What the RAID engine uses to reach a member exported by
//! another host (a replicated volume's far copy); one connection, requests in flight
//! together when a caller hands several at once ([`NbdClient::batch`]).
//!
//! A connection that fails once (an error on the socket, a reply out of protocol, no answer
//! within the timeout) stays failed: every later request fails at once, and the caller
//! connects again when it wants the export back.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::handshake::{read_u32, read_u64};
use crate::proto::*;

/// The largest request sent; longer reads and writes are split.
const MAX_REQUEST: usize = 16 << 20;

/// One request of a [`NbdClient::batch`].
pub enum ClientOp<'a> {
    /// Fill the buffer from the export at the offset.
    Read(u64, &'a mut [u8]),
    /// Write the buffer at the offset.
    Write(u64, &'a [u8]),
    /// Make everything written so far durable.
    Flush,
}

/// A connection to one export.
pub struct NbdClient {
    stream: Mutex<UnixStream>,
    size: u64,
    flags: u16,
    export: String,
    next: AtomicU64,
    broken: AtomicBool,
}

impl std::fmt::Debug for NbdClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NbdClient")
            .field("export", &self.export)
            .field("size", &self.size)
            .finish()
    }
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn read_u16(r: &mut impl Read) -> io::Result<u16> {
    let mut b = [0u8; 2];
    r.read_exact(&mut b)?;
    Ok(u16::from_be_bytes(b))
}

/// Appends a transmission request's header to `out`.
fn request(out: &mut Vec<u8>, kind: u16, cookie: u64, offset: u64, len: u32) {
    out.extend_from_slice(&REQUEST_MAGIC.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&cookie.to_be_bytes());
    out.extend_from_slice(&offset.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
}

impl NbdClient {
    /// Connects to the server on the unix socket `socket` and opens `export`, waiting up
    /// to `timeout` for each answer.
    pub fn connect_unix(socket: &Path, export: &str, timeout: Duration) -> io::Result<Self> {
        let stream = UnixStream::connect(socket)?;
        Self::handshake(stream, export, timeout)
    }

    /// Negotiates `export` on a connected stream.
    pub fn handshake(mut s: UnixStream, export: &str, timeout: Duration) -> io::Result<Self> {
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        if read_u64(&mut s)? != NBDMAGIC || read_u64(&mut s)? != IHAVEOPT {
            return Err(bad("not an NBD server (no newstyle greeting)"));
        }
        let hflags = read_u16(&mut s)?;
        if hflags & FLAG_FIXED_NEWSTYLE == 0 {
            return Err(bad("the NBD server does not speak fixed newstyle"));
        }
        let cflags = FLAG_C_FIXED_NEWSTYLE
            | if hflags & FLAG_NO_ZEROES != 0 {
                FLAG_C_NO_ZEROES
            } else {
                0
            };
        s.write_all(&cflags.to_be_bytes())?;
        // NBD_OPT_GO: the export's name, no information requests.
        let name = export.as_bytes();
        let mut data = Vec::with_capacity(name.len() + 6);
        data.extend_from_slice(&(name.len() as u32).to_be_bytes());
        data.extend_from_slice(name);
        data.extend_from_slice(&0u16.to_be_bytes());
        let mut opt = Vec::with_capacity(16 + data.len());
        opt.extend_from_slice(&IHAVEOPT.to_be_bytes());
        opt.extend_from_slice(&OPT_GO.to_be_bytes());
        opt.extend_from_slice(&(data.len() as u32).to_be_bytes());
        opt.extend_from_slice(&data);
        s.write_all(&opt)?;
        let mut info: Option<(u64, u16)> = None;
        loop {
            if read_u64(&mut s)? != OPT_REPLY_MAGIC {
                return Err(bad("bad option reply magic"));
            }
            let option = read_u32(&mut s)?;
            let kind = read_u32(&mut s)?;
            let len = read_u32(&mut s)? as usize;
            if len > 64 << 10 {
                return Err(bad("option reply too long"));
            }
            let mut body = vec![0u8; len];
            s.read_exact(&mut body)?;
            if option != OPT_GO {
                return Err(bad(format!("reply to option {option}, not to NBD_OPT_GO")));
            }
            match kind {
                REP_ACK => break,
                REP_INFO if body.len() >= 12 && body[..2] == INFO_EXPORT.to_be_bytes() => {
                    let size = u64::from_be_bytes(body[2..10].try_into().expect("8 bytes"));
                    let flags = u16::from_be_bytes([body[10], body[11]]);
                    info = Some((size, flags));
                }
                REP_INFO => {}
                k if k & REP_FLAG_ERROR != 0 => {
                    let why = String::from_utf8_lossy(&body);
                    let kind = if k == REP_ERR_UNKNOWN {
                        io::ErrorKind::NotFound
                    } else {
                        io::ErrorKind::PermissionDenied
                    };
                    return Err(io::Error::new(
                        kind,
                        format!("the NBD server refused export {export:?}: {why}"),
                    ));
                }
                k => return Err(bad(format!("unexpected option reply {k}"))),
            }
        }
        let (size, flags) = info.ok_or_else(|| bad("no export information before the ack"))?;
        Ok(NbdClient {
            stream: Mutex::new(s),
            size,
            flags,
            export: export.to_string(),
            next: AtomicU64::new(1),
            broken: AtomicBool::new(false),
        })
    }

    /// The export's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Whether the export is read-only.
    pub fn read_only(&self) -> bool {
        self.flags & TFLAG_READ_ONLY != 0
    }

    /// The export's name.
    pub fn export(&self) -> &str {
        &self.export
    }

    /// Whether the connection failed (every request fails from then on).
    pub fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Acquire)
    }

    /// Reads exactly `buf.len()` bytes at `offset`.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.batch(&mut [ClientOp::Read(offset, buf)]).remove(0)
    }

    /// Writes all of `buf` at `offset`.
    pub fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.batch(&mut [ClientOp::Write(offset, buf)]).remove(0)
    }

    /// Makes what was written durable on the server.
    pub fn flush(&self) -> io::Result<()> {
        self.batch(&mut [ClientOp::Flush]).remove(0)
    }

    /// Sends every request, then reads the replies (the server may answer them in any
    /// order): one result per request, in order.
    pub fn batch(&self, ops: &mut [ClientOp<'_>]) -> Vec<io::Result<()>> {
        let fail = |e: &io::Error| io::Error::new(e.kind(), e.to_string());
        if self.is_broken() {
            return ops
                .iter()
                .map(|_| {
                    Err(io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        "NBD connection lost",
                    ))
                })
                .collect();
        }
        let mut s = self.stream.lock().unwrap_or_else(|p| p.into_inner());
        match self.exchange(&mut s, ops) {
            Ok(results) => results,
            Err(e) => {
                // A socket timeout reads as "try again": say what it is.
                let e = if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) {
                    let t = s.read_timeout().ok().flatten().unwrap_or_default();
                    io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("the NBD server did not answer within {} s", t.as_secs()),
                    )
                } else {
                    e
                };
                self.broken.store(true, Ordering::Release);
                let _ = s.shutdown(std::net::Shutdown::Both);
                tracing::warn!(export = %self.export, error = %e, "NBD connection failed");
                ops.iter().map(|_| Err(fail(&e))).collect()
            }
        }
    }

    /// The requests of `ops` (split at `MAX_REQUEST`) sent and answered; an error of the
    /// connection itself is the outer one.
    fn exchange(
        &self,
        s: &mut UnixStream,
        ops: &mut [ClientOp<'_>],
    ) -> io::Result<Vec<io::Result<()>>> {
        if self.read_only() && ops.iter().any(|o| matches!(o, ClientOp::Write(..))) {
            return Ok(ops
                .iter()
                .map(|o| match o {
                    ClientOp::Write(..) => Err(io::Error::new(
                        io::ErrorKind::PermissionDenied,
                        "the NBD export is read-only",
                    )),
                    _ => Ok(()),
                })
                .collect());
        }
        // (op index, byte offset in its buffer, length) per cookie.
        let mut pending: std::collections::HashMap<u64, (usize, usize, usize)> =
            std::collections::HashMap::new();
        let mut results: Vec<io::Result<()>> = ops.iter().map(|_| Ok(())).collect();
        let mut out = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            let (kind, offset, len, data): (u16, u64, usize, Option<&[u8]>) = match op {
                ClientOp::Read(off, buf) => (CMD_READ, *off, buf.len(), None),
                ClientOp::Write(off, buf) => (CMD_WRITE, *off, buf.len(), Some(buf)),
                ClientOp::Flush => (CMD_FLUSH, 0, 0, None),
            };
            if kind != CMD_FLUSH && offset.saturating_add(len as u64) > self.size {
                results[i] = Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "beyond the end of the NBD export",
                ));
                continue;
            }
            let mut at = 0usize;
            loop {
                let piece = (len - at).min(MAX_REQUEST);
                let cookie = self.next.fetch_add(1, Ordering::Relaxed);
                request(&mut out, kind, cookie, offset + at as u64, piece as u32);
                if let Some(d) = data {
                    out.extend_from_slice(&d[at..at + piece]);
                }
                pending.insert(cookie, (i, at, piece));
                at += piece;
                if at >= len {
                    break;
                }
                // Large writes go out as they are built, not all held in memory.
                if out.len() >= MAX_REQUEST {
                    s.write_all(&out)?;
                    out.clear();
                }
            }
        }
        s.write_all(&out)?;
        s.flush()?;
        while !pending.is_empty() {
            if read_u32(s)? != SIMPLE_REPLY_MAGIC {
                return Err(bad(
                    "bad reply magic (structured replies are not asked for)",
                ));
            }
            let error = read_u32(s)?;
            let cookie = read_u64(s)?;
            let (i, at, piece) = pending
                .remove(&cookie)
                .ok_or_else(|| bad(format!("reply to unknown request {cookie}")))?;
            if error != 0 {
                // A read's data does not follow an error.
                if results[i].is_ok() {
                    results[i] = Err(io::Error::from_raw_os_error(error as i32));
                }
                continue;
            }
            if let ClientOp::Read(_, buf) = &mut ops[i] {
                s.read_exact(&mut buf[at..at + piece])?;
            }
        }
        Ok(results)
    }
}

impl Drop for NbdClient {
    fn drop(&mut self) {
        if self.is_broken() {
            return;
        }
        let s = self.stream.get_mut().unwrap_or_else(|p| p.into_inner());
        let mut req = Vec::with_capacity(28);
        request(&mut req, CMD_DISC, 0, 0, 0);
        let _ = s.write_all(&req);
    }
}
