//! READDIR and READDIRPLUS, with `getdents64` offsets as cookies.

use std::os::fd::AsFd;

use super::attr;
use super::dir::lookup_child;
use super::{decode_fh, status, Ctx, NfsErr, NfsResult, Obj};
use crate::sys;
use crate::xdr::{pad, Decoder, Encoder, XdrError};

/// Bytes of a READDIR(PLUS) reply besides its entries: status, dir attributes, verifier,
/// list end and eof.
const OVERHEAD: usize = 4 + 4 + 84 + 8 + 4 + 4;

pub(super) fn readdir(
    ctx: &Ctx<'_>,
    d: &mut Decoder<'_>,
    e: &mut Encoder,
    plus: bool,
) -> Result<(), XdrError> {
    let fh = decode_fh(d)?;
    let cookie = d.u64()?;
    let _verf = d.fixed(8)?;
    let (dircount, maxcount) = if plus {
        (d.u32()? as usize, d.u32()? as usize)
    } else {
        let c = d.u32()? as usize;
        (usize::MAX, c)
    };
    // Never build more than 1 MiB, whatever the client asks.
    let maxcount = maxcount.min(1 << 20);
    let dir = match ctx.resolve_dir(fh) {
        Ok(o) => o,
        Err(NfsErr(s)) => {
            e.u32(s).bool(false);
            return Ok(());
        }
    };
    match list(ctx, &dir, cookie, dircount, maxcount, plus) {
        Ok((entries, eof)) => {
            e.u32(status::OK);
            attr::post_op(e, Some(&dir.st));
            e.fixed(&[0; 8])
                .raw(entries.as_bytes())
                .bool(false)
                .bool(eof);
        }
        Err(NfsErr(s)) => {
            e.u32(s);
            attr::post_op(e, Some(&dir.st));
        }
    }
    Ok(())
}

/// Encode entries from `cookie` on until the budget is spent; returns them and eof.
fn list(
    ctx: &Ctx<'_>,
    dir: &Obj,
    cookie: u64,
    dircount: usize,
    maxcount: usize,
    plus: bool,
) -> NfsResult<(Encoder, bool)> {
    let _caller = ctx.as_caller(&dir.export)?;
    let handle = sys::reopen(dir.fd.as_fd(), libc::O_RDONLY | libc::O_DIRECTORY)?;
    let mut out = Encoder::new();
    let mut dir_bytes = 0usize;
    let mut pos = cookie;
    let mut count = 0usize;
    loop {
        let chunk = sys::read_dir_chunk(handle.as_fd(), pos).map_err(|err| {
            if err.raw_os_error() == Some(libc::EINVAL) {
                NfsErr(status::BAD_COOKIE)
            } else {
                NfsErr::from(err)
            }
        })?;
        if chunk.is_empty() {
            return Ok((out, true));
        }
        for ent in chunk {
            let mut one = Encoder::new();
            one.bool(true).u64(ent.ino).opaque(&ent.name).u64(ent.next);
            let name_bytes = 8 + 4 + ent.name.len() + pad(ent.name.len()) + 8;
            if plus {
                match lookup_child(dir, &ent.name)
                    .and_then(|fd| Ok((sys::stat(fd.as_fd())?, ctx.handle(&dir.export, &fd)?)))
                {
                    Ok((st, fh)) => {
                        attr::post_op(&mut one, Some(&st));
                        one.bool(true).opaque(&fh);
                    }
                    Err(_) => {
                        one.bool(false).bool(false);
                    }
                }
            }
            if OVERHEAD + out.len() + one.len() > maxcount
                || dir_bytes.saturating_add(name_bytes) > dircount
            {
                if count == 0 {
                    return Err(NfsErr(status::TOOSMALL));
                }
                return Ok((out, false));
            }
            out.raw(one.as_bytes());
            dir_bytes += name_bytes;
            count += 1;
            pos = ent.next;
        }
    }
}
