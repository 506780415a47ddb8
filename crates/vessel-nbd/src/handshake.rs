//! Fixed newstyle negotiation: greeting, option haggling, export selection.

use std::io::{self, Read, Write};

use crate::proto::*;
use crate::server::{Exports, NbdError, NbdExport};

/// How a negotiation ended.
pub(crate) enum Negotiated {
    /// The client selected an export.
    Export(Session),
    /// The client asked for TLS and was told yes: the TLS handshake comes next, then the
    /// haggling goes on inside it.
    StartTls,
    /// The client left (or asked for an export that does not exist by the old option).
    Leave,
}

/// Where a connection stands with TLS.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum TlsState {
    /// The server has no TLS: `NBD_OPT_STARTTLS` is unsupported.
    Off,
    /// The server requires TLS and the client has not started it: every option but
    /// `NBD_OPT_STARTTLS` and `NBD_OPT_ABORT` is refused.
    Required,
    /// The haggling goes on inside TLS.
    On,
}

/// What negotiation settled for the transmission phase.
pub(crate) struct Session {
    /// The selected export.
    pub export: NbdExport,
    /// Structured replies were negotiated.
    pub structured: bool,
    /// `base:allocation` was selected for block status.
    pub meta_allocation: bool,
    /// Set when the server cuts the session off (its export removed, its client no longer
    /// taken): requests not yet served are answered `ESHUTDOWN` without touching the device.
    pub cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// Reads big-endian fields from an option payload; `None` when it runs short.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn string(&mut self) -> Option<&'a str> {
        let len = self.u32()? as usize;
        std::str::from_utf8(self.take(len)?).ok()
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

pub(crate) fn read_u32(r: &mut impl Read) -> io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_be_bytes(b))
}

pub(crate) fn read_u64(r: &mut impl Read) -> io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_be_bytes(b))
}

fn reply(w: &mut impl Write, option: u32, kind: u32, data: &[u8]) -> io::Result<()> {
    let len = u32::try_from(data.len()).map_err(io::Error::other)?;
    w.write_all(&OPT_REPLY_MAGIC.to_be_bytes())?;
    w.write_all(&option.to_be_bytes())?;
    w.write_all(&kind.to_be_bytes())?;
    w.write_all(&len.to_be_bytes())?;
    w.write_all(data)
}

fn reply_error(w: &mut impl Write, option: u32, kind: u32, message: &str) -> io::Result<()> {
    tracing::debug!(option, kind, message, "nbd option refused");
    reply(w, option, kind, message.as_bytes())?;
    w.flush()
}

/// Transmission flags of an export.
pub(crate) fn transmission_flags(export: &NbdExport) -> u16 {
    let flags = TFLAG_HAS_FLAGS | TFLAG_SEND_FLUSH | TFLAG_SEND_DF | TFLAG_CAN_MULTI_CONN;
    if export.read_only {
        flags | TFLAG_READ_ONLY
    } else {
        flags | TFLAG_SEND_FUA | TFLAG_SEND_TRIM | TFLAG_SEND_WRITE_ZEROES
    }
}

/// Greets the client; returns whether it asked for no zeroes after `NBD_OPT_EXPORT_NAME`.
pub(crate) fn greet(r: &mut impl Read, w: &mut impl Write) -> Result<bool, NbdError> {
    w.write_all(&NBDMAGIC.to_be_bytes())?;
    w.write_all(&IHAVEOPT.to_be_bytes())?;
    w.write_all(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes())?;
    w.flush()?;
    let client_flags = read_u32(r)?;
    if client_flags & !(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES) != 0 {
        return Err(NbdError::Protocol("unknown client flags"));
    }
    Ok(client_flags & FLAG_C_NO_ZEROES != 0)
}

/// Answers options until the client selects an export, asks for TLS or leaves. After TLS
/// the client starts again as the protocol says: structured replies and meta contexts
/// negotiated before it are forgotten.
pub(crate) fn negotiate(
    r: &mut impl Read,
    w: &mut impl Write,
    exports: &Exports,
    no_zeroes: bool,
    tls: TlsState,
) -> Result<Negotiated, NbdError> {
    let mut structured = false;
    let mut meta_allocation = false;
    loop {
        if read_u64(r)? != IHAVEOPT {
            return Err(NbdError::Protocol("option without IHAVEOPT magic"));
        }
        let option = read_u32(r)?;
        let len = read_u32(r)?;
        if len > MAX_OPTION_LEN {
            if option == OPT_EXPORT_NAME {
                return Err(NbdError::Protocol("export name too long"));
            }
            io::copy(&mut r.take(u64::from(len)), &mut io::sink())?;
            reply_error(w, option, REP_ERR_TOO_BIG, "option data too large")?;
            continue;
        }
        let mut data = vec![0u8; len as usize];
        r.read_exact(&mut data)?;
        if tls == TlsState::Required && !matches!(option, OPT_STARTTLS | OPT_ABORT) {
            if option == OPT_EXPORT_NAME {
                // No error reply exists for it: the connection is closed.
                tracing::debug!("client selected an export without TLS; closing");
                return Ok(Negotiated::Leave);
            }
            reply_error(
                w,
                option,
                REP_ERR_TLS_REQD,
                "TLS is required: connect with TLS (nbds://, with this export's credentials)",
            )?;
            continue;
        }
        match option {
            OPT_EXPORT_NAME => {
                let name = std::str::from_utf8(&data)
                    .map_err(|_| NbdError::Protocol("export name is not UTF-8"))?;
                let Some(export) = exports.get(name) else {
                    tracing::debug!(export = name, "client asked for an unknown export");
                    return Ok(Negotiated::Leave);
                };
                w.write_all(&export.device.size().to_be_bytes())?;
                w.write_all(&transmission_flags(export).to_be_bytes())?;
                if !no_zeroes {
                    w.write_all(&[0u8; 124])?;
                }
                w.flush()?;
                let export = export.clone();
                return Ok(Negotiated::Export(Session {
                    export,
                    structured,
                    meta_allocation,
                    cut: Default::default(),
                }));
            }
            OPT_ABORT => {
                reply(w, option, REP_ACK, &[])?;
                w.flush()?;
                return Ok(Negotiated::Leave);
            }
            OPT_LIST => {
                if !data.is_empty() {
                    reply_error(w, option, REP_ERR_INVALID, "NBD_OPT_LIST takes no data")?;
                    continue;
                }
                for export in exports.values() {
                    let mut item = Vec::with_capacity(4 + export.name.len());
                    item.extend_from_slice(&(export.name.len() as u32).to_be_bytes());
                    item.extend_from_slice(export.name.as_bytes());
                    item.extend_from_slice(export.description.as_bytes());
                    reply(w, option, REP_SERVER, &item)?;
                }
                reply(w, option, REP_ACK, &[])?;
                w.flush()?;
            }
            OPT_INFO | OPT_GO => {
                if let Some(export) = info(w, option, &data, exports)? {
                    return Ok(Negotiated::Export(Session {
                        export,
                        structured,
                        meta_allocation,
                        cut: Default::default(),
                    }));
                }
            }
            OPT_STRUCTURED_REPLY => {
                if !data.is_empty() {
                    reply_error(w, option, REP_ERR_INVALID, "takes no data")?;
                    continue;
                }
                structured = true;
                reply(w, option, REP_ACK, &[])?;
                w.flush()?;
            }
            OPT_LIST_META_CONTEXT | OPT_SET_META_CONTEXT => {
                let set = option == OPT_SET_META_CONTEXT;
                if set && !structured {
                    reply_error(
                        w,
                        option,
                        REP_ERR_INVALID,
                        "negotiate structured replies first",
                    )?;
                    continue;
                }
                if let Some(selected) = meta_context(w, option, &data, exports)? {
                    if set {
                        meta_allocation = selected;
                    }
                }
            }
            OPT_STARTTLS => match tls {
                TlsState::Off => {
                    reply_error(w, option, REP_ERR_UNSUP, "this server does not offer TLS")?
                }
                TlsState::On => {
                    reply_error(w, option, REP_ERR_INVALID, "TLS is on already")?;
                }
                TlsState::Required if !data.is_empty() => {
                    reply_error(w, option, REP_ERR_INVALID, "NBD_OPT_STARTTLS takes no data")?;
                }
                TlsState::Required => {
                    reply(w, option, REP_ACK, &[])?;
                    w.flush()?;
                    return Ok(Negotiated::StartTls);
                }
            },
            _ => reply_error(w, option, REP_ERR_UNSUP, "unknown option")?,
        }
    }
}

/// Answer `NBD_OPT_INFO` or `NBD_OPT_GO`; returns the export when GO succeeded.
fn info(
    w: &mut impl Write,
    option: u32,
    data: &[u8],
    exports: &Exports,
) -> io::Result<Option<NbdExport>> {
    let mut f = Fields(data);
    let parsed = (|| {
        let name = f.string()?;
        let n = f.u16()?;
        let requests: Option<Vec<u16>> = (0..n).map(|_| f.u16()).collect();
        let requests = requests?;
        f.is_empty().then_some((name, requests))
    })();
    let Some((name, requests)) = parsed else {
        reply_error(w, option, REP_ERR_INVALID, "malformed info request")?;
        return Ok(None);
    };
    let Some(export) = exports.get(name) else {
        reply_error(
            w,
            option,
            REP_ERR_UNKNOWN,
            &format!("no export named {name:?}"),
        )?;
        return Ok(None);
    };
    let mut item = Vec::with_capacity(12);
    item.extend_from_slice(&INFO_EXPORT.to_be_bytes());
    item.extend_from_slice(&export.device.size().to_be_bytes());
    item.extend_from_slice(&transmission_flags(export).to_be_bytes());
    reply(w, option, REP_INFO, &item)?;
    if requests.contains(&INFO_NAME) {
        let mut item = INFO_NAME.to_be_bytes().to_vec();
        item.extend_from_slice(export.name.as_bytes());
        reply(w, option, REP_INFO, &item)?;
    }
    if requests.contains(&INFO_DESCRIPTION) && !export.description.is_empty() {
        let mut item = INFO_DESCRIPTION.to_be_bytes().to_vec();
        item.extend_from_slice(export.description.as_bytes());
        reply(w, option, REP_INFO, &item)?;
    }
    let mut item = INFO_BLOCK_SIZE.to_be_bytes().to_vec();
    item.extend_from_slice(&1u32.to_be_bytes());
    item.extend_from_slice(&PREFERRED_BLOCK.to_be_bytes());
    item.extend_from_slice(&MAX_PAYLOAD.to_be_bytes());
    reply(w, option, REP_INFO, &item)?;
    reply(w, option, REP_ACK, &[])?;
    w.flush()?;
    Ok((option == OPT_GO).then(|| export.clone()))
}

/// Answer a list/set meta context option; `Some(selected)` when it succeeded.
fn meta_context(
    w: &mut impl Write,
    option: u32,
    data: &[u8],
    exports: &Exports,
) -> io::Result<Option<bool>> {
    let mut f = Fields(data);
    let parsed = (|| {
        let name = f.string()?;
        let n = f.u32()?;
        let mut queries = Vec::new();
        for _ in 0..n {
            queries.push(f.string()?);
        }
        f.is_empty().then_some((name, queries))
    })();
    let Some((name, queries)) = parsed else {
        reply_error(w, option, REP_ERR_INVALID, "malformed meta context request")?;
        return Ok(None);
    };
    if !exports.contains_key(name) {
        reply_error(
            w,
            option,
            REP_ERR_UNKNOWN,
            &format!("no export named {name:?}"),
        )?;
        return Ok(None);
    }
    let list = option == OPT_LIST_META_CONTEXT;
    let matches = if list && queries.is_empty() {
        true
    } else {
        queries
            .iter()
            .any(|q| *q == META_BASE_ALLOCATION || (list && *q == "base:"))
    };
    if matches {
        let mut item = META_BASE_ALLOCATION_ID.to_be_bytes().to_vec();
        item.extend_from_slice(META_BASE_ALLOCATION.as_bytes());
        reply(w, option, REP_META_CONTEXT, &item)?;
    }
    reply(w, option, REP_ACK, &[])?;
    w.flush()?;
    Ok(Some(matches))
}
