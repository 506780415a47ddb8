//! Procedures on one object: GETATTR, SETATTR, ACCESS, READLINK, READ, WRITE, COMMIT.

use std::os::fd::{AsFd, AsRawFd};

use super::attr::{self, Stat};
use super::{decode_fh, status, writable, Ctx, NfsErr, NfsResult, Obj};
use crate::sys;
use crate::xdr::{Decoder, Encoder, XdrError};

/// Largest READ or WRITE the server advertises and accepts.
pub(crate) const MAX_IO: u32 = 1 << 20;

pub(super) fn getattr(ctx: &Ctx<'_>, d: &mut Decoder<'_>, e: &mut Encoder) -> Result<(), XdrError> {
    let fh = decode_fh(d)?;
    match ctx.resolve(fh) {
        Ok(obj) => {
            e.u32(status::OK);
            attr::fattr3(e, &obj.st);
        }
        Err(NfsErr(s)) => {
            e.u32(s);
        }
    }
    Ok(())
}

pub(super) fn setattr(ctx: &Ctx<'_>, d: &mut Decoder<'_>, e: &mut Encoder) -> Result<(), XdrError> {
    let fh = decode_fh(d)?;
    let sa = attr::decode_sattr(d)?;
    let guard = if d.bool()? {
        Some((d.u32()?, d.u32()?))
    } else {
        None
    };
    let obj = match ctx.resolve(fh) {
        Ok(o) => o,
        Err(NfsErr(s)) => {
            e.u32(s);
            attr::wcc_none(e);
            return Ok(());
        }
    };
    let result = (|| {
        writable(&obj)?;
        if let Some((sec, nsec)) = guard {
            if (obj.st.st_ctime, obj.st.st_ctime_nsec) != (i64::from(sec), i64::from(nsec)) {
                return Err(NfsErr(status::NOT_SYNC));
            }
        }
        let _caller = ctx.as_caller(&obj.export)?;
        attr::apply(&obj, &sa)
    })();
    e.u32(result.err().map_or(status::OK, |NfsErr(s)| s));
    attr::wcc(e, Some(&obj.st), Some(&obj));
    Ok(())
}

/// ACCESS3 bits.
const ACCESS_READ: u32 = 0x01;
const ACCESS_LOOKUP: u32 = 0x02;
const ACCESS_MODIFY: u32 = 0x04;
const ACCESS_EXTEND: u32 = 0x08;
const ACCESS_DELETE: u32 = 0x10;
const ACCESS_EXECUTE: u32 = 0x20;

pub(super) fn access(ctx: &Ctx<'_>, d: &mut Decoder<'_>, e: &mut Encoder) -> Result<(), XdrError> {
    let fh = decode_fh(d)?;
    let want = d.u32()?;
    let obj = match ctx.resolve(fh) {
        Ok(o) => o,
        Err(NfsErr(s)) => {
            e.u32(s).bool(false);
            return Ok(());
        }
    };
    let granted = (|| {
        let _caller = ctx.as_caller(&obj.export)?;
        let fd = obj.fd.as_fd();
        let (r, w, x) = (
            sys::access(fd, libc::R_OK),
            sys::access(fd, libc::W_OK) && !obj.export.config.read_only,
            sys::access(fd, libc::X_OK),
        );
        let mut g = 0;
        if r {
            g |= ACCESS_READ;
        }
        if w {
            g |= ACCESS_MODIFY | ACCESS_EXTEND;
        }
        if obj.is_dir() {
            if x {
                g |= ACCESS_LOOKUP;
            }
            if w && x {
                g |= ACCESS_DELETE;
            }
        } else if x {
            g |= ACCESS_EXECUTE;
        }
        Ok::<_, NfsErr>(g & want)
    })();
    match granted {
        Ok(g) => {
            e.u32(status::OK);
            attr::post_op(e, Some(&obj.st));
            e.u32(g);
        }
        Err(NfsErr(s)) => {
            e.u32(s);
            attr::post_op(e, Some(&obj.st));
        }
    }
    Ok(())
}

pub(super) fn readlink(
    ctx: &Ctx<'_>,
    d: &mut Decoder<'_>,
    e: &mut Encoder,
) -> Result<(), XdrError> {
    let fh = decode_fh(d)?;
    let obj = match ctx.resolve(fh) {
        Ok(o) => o,
        Err(NfsErr(s)) => {
            e.u32(s).bool(false);
            return Ok(());
        }
    };
    let target = (|| {
        if obj.st.st_mode & libc::S_IFMT != libc::S_IFLNK {
            return Err(NfsErr(status::INVAL));
        }
        let mut buf = vec![0u8; libc::PATH_MAX as usize];
        // SAFETY: `buf` is writable for its length; empty path reads the link `fd` names.
        let n = unsafe {
            libc::readlinkat(
                obj.fd.as_raw_fd(),
                c"".as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if n < 0 {
            return Err(NfsErr::from(std::io::Error::last_os_error()));
        }
        buf.truncate(n as usize);
        Ok(buf)
    })();
    match target {
        Ok(t) => {
            e.u32(status::OK);
            attr::post_op(e, Some(&obj.st));
            e.opaque(&t);
        }
        Err(NfsErr(s)) => {
            e.u32(s);
            attr::post_op(e, Some(&obj.st));
        }
    }
    Ok(())
}

/// Open a resolved regular file for I/O as the caller.
fn open_file(ctx: &Ctx<'_>, obj: &Obj, flags: libc::c_int) -> NfsResult<std::os::fd::OwnedFd> {
    match obj.st.st_mode & libc::S_IFMT {
        libc::S_IFREG => {}
        libc::S_IFDIR => return Err(NfsErr(status::ISDIR)),
        _ => return Err(NfsErr(status::INVAL)),
    }
    let _caller = ctx.as_caller(&obj.export)?;
    Ok(sys::reopen(obj.fd.as_fd(), flags)?)
}

pub(super) fn read(ctx: &Ctx<'_>, d: &mut Decoder<'_>, e: &mut Encoder) -> Result<(), XdrError> {
    let fh = decode_fh(d)?;
    let offset = d.u64()?;
    let count = d.u32()?.min(MAX_IO) as usize;
    let obj = match ctx.resolve(fh) {
        Ok(o) => o,
        Err(NfsErr(s)) => {
            e.u32(s).bool(false);
            return Ok(());
        }
    };
    let result = (|| {
        let file = open_file(ctx, &obj, libc::O_RDONLY)?;
        let off = i64::try_from(offset).map_err(|_| NfsErr(status::INVAL))?;
        let mut buf = vec![0u8; count];
        let mut got = 0;
        while got < count {
            // SAFETY: the pointer and length describe the unfilled tail of `buf`.
            let n = unsafe {
                libc::pread(
                    file.as_raw_fd(),
                    buf[got..].as_mut_ptr().cast(),
                    count - got,
                    off + got as i64,
                )
            };
            if n < 0 {
                let err = std::io::Error::last_os_error();
                if err.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(NfsErr::from(err));
            }
            if n == 0 {
                break;
            }
            got += n as usize;
        }
        buf.truncate(got);
        let st = sys::stat(file.as_fd())?;
        let eof = offset.saturating_add(got as u64) >= st.st_size.max(0) as u64;
        Ok((buf, st, eof))
    })();
    match result {
        Ok((buf, st, eof)) => {
            e.u32(status::OK);
            attr::post_op(e, Some(&st));
            e.u32(buf.len() as u32).bool(eof).opaque(&buf);
        }
        Err(NfsErr(s)) => {
            e.u32(s);
            attr::post_op(e, Some(&obj.st));
        }
    }
    Ok(())
}

/// `stable_how`.
const UNSTABLE: u32 = 0;
const DATA_SYNC: u32 = 1;
const FILE_SYNC: u32 = 2;

pub(super) fn write(ctx: &Ctx<'_>, d: &mut Decoder<'_>, e: &mut Encoder) -> Result<(), XdrError> {
    let fh = decode_fh(d)?;
    let offset = d.u64()?;
    let count = d.u32()?;
    let stable = d.u32()?;
    if stable > FILE_SYNC {
        return Err(XdrError::BadValue(stable));
    }
    let data = d.opaque(MAX_IO)?;
    let data = &data[..data.len().min(count as usize)];
    let obj = match ctx.resolve(fh) {
        Ok(o) => o,
        Err(NfsErr(s)) => {
            e.u32(s);
            attr::wcc_none(e);
            return Ok(());
        }
    };
    let result = (|| {
        writable(&obj)?;
        let file = open_file(ctx, &obj, libc::O_WRONLY)?;
        let off = i64::try_from(offset).map_err(|_| NfsErr(status::FBIG))?;
        let mut done = 0;
        while done < data.len() {
            // SAFETY: the pointer and length describe the unwritten tail of `data`.
            let n = unsafe {
                libc::pwrite(
                    file.as_raw_fd(),
                    data[done..].as_ptr().cast(),
                    data.len() - done,
                    off + done as i64,
                )
            };
            if n < 0 {
                let err = std::io::Error::last_os_error();
                if err.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(NfsErr::from(err));
            }
            done += n as usize;
        }
        let fd = file.as_raw_fd();
        let synced = match stable {
            UNSTABLE => 0,
            // SAFETY: plain sync call on a descriptor we own.
            DATA_SYNC => unsafe { libc::fdatasync(fd) },
            // SAFETY: plain sync call on a descriptor we own.
            _ => unsafe { libc::fsync(fd) },
        };
        sys::cvt(synced)?;
        Ok(done)
    })();
    match result {
        Ok(n) => {
            e.u32(status::OK);
            attr::wcc(e, Some(&obj.st), Some(&obj));
            e.u32(n as u32).u32(stable).fixed(&ctx.write_verf);
        }
        Err(NfsErr(s)) => {
            e.u32(s);
            attr::wcc(e, Some(&obj.st), Some(&obj));
        }
    }
    Ok(())
}

pub(super) fn commit(ctx: &Ctx<'_>, d: &mut Decoder<'_>, e: &mut Encoder) -> Result<(), XdrError> {
    let fh = decode_fh(d)?;
    let _offset = d.u64()?;
    let _count = d.u32()?;
    let obj = match ctx.resolve(fh) {
        Ok(o) => o,
        Err(NfsErr(s)) => {
            e.u32(s);
            attr::wcc_none(e);
            return Ok(());
        }
    };
    let pre: Stat = obj.st;
    let result = (|| {
        if obj.st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err(NfsErr(status::INVAL));
        }
        // Flushing is not an access to the data: done with the server's identity.
        let file = sys::reopen(obj.fd.as_fd(), libc::O_RDONLY)?;
        // SAFETY: plain fsync on a descriptor we own.
        sys::cvt(unsafe { libc::fsync(file.as_raw_fd()) })?;
        Ok(())
    })();
    e.u32(result.err().map_or(status::OK, |NfsErr(s)| s));
    attr::wcc(e, Some(&pre), Some(&obj));
    if result.is_ok() {
        e.fixed(&ctx.write_verf);
    }
    Ok(())
}
