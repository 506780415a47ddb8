//! Procedures on directory entries: LOOKUP, CREATE, MKDIR, SYMLINK, MKNOD, REMOVE, RMDIR,
//! RENAME, LINK. Every name is a single component resolved beneath its directory.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use super::attr::{self, Sattr, Stat};
use super::{
    check_name, check_new_name, decode_fh, decode_name, status, writable, Ctx, NfsErr, NfsResult,
    Obj,
};
use crate::sys;
use crate::xdr::{Decoder, Encoder, XdrError};

/// Open the child `name` of `dir` as `O_PATH`, with the caller's credentials already assumed.
/// `..` of the export root is the root itself.
pub(super) fn lookup_child(dir: &Obj, name: &[u8]) -> NfsResult<OwnedFd> {
    check_name(name)?;
    if name == b".." {
        return if dir.is_root() {
            Ok(sys::open_beneath(dir.fd.as_fd(), b".")?)
        } else {
            Ok(sys::open_parent(dir.fd.as_fd())?)
        };
    }
    Ok(sys::open_beneath(dir.fd.as_fd(), name)?)
}

fn child(dir: &Obj, fd: OwnedFd) -> NfsResult<Obj> {
    let st = sys::stat(fd.as_fd())?;
    Ok(Obj {
        export: dir.export.clone(),
        fd,
        st,
    })
}

pub(super) fn lookup(ctx: &Ctx<'_>, d: &mut Decoder<'_>, e: &mut Encoder) -> Result<(), XdrError> {
    let fh = decode_fh(d)?;
    let name = decode_name(d)?;
    let dir = match ctx.resolve_dir(fh) {
        Ok(o) => o,
        Err(NfsErr(s)) => {
            e.u32(s).bool(false);
            return Ok(());
        }
    };
    let found = (|| {
        let fd = {
            let _caller = ctx.as_caller(&dir.export)?;
            lookup_child(&dir, name)?
        };
        let obj = child(&dir, fd)?;
        let handle = ctx.handle(&obj.export, &obj.fd)?;
        Ok::<_, NfsErr>((obj, handle))
    })();
    match found {
        Ok((obj, handle)) => {
            e.u32(status::OK).opaque(&handle);
            attr::post_op(e, Some(&obj.st));
            attr::post_op(e, Some(&dir.st));
        }
        Err(NfsErr(s)) => {
            e.u32(s);
            attr::post_op(e, Some(&dir.st));
        }
    }
    Ok(())
}

/// Encode the result shared by CREATE, MKDIR, SYMLINK and MKNOD.
fn created(ctx: &Ctx<'_>, e: &mut Encoder, dir: &Obj, pre: &Stat, result: NfsResult<Obj>) {
    match result {
        Ok(obj) => {
            e.u32(status::OK);
            match ctx.handle(&obj.export, &obj.fd) {
                Ok(h) => {
                    e.bool(true).opaque(&h);
                }
                Err(_) => {
                    e.bool(false);
                }
            }
            attr::post_op_fd(e, obj.fd.as_fd());
        }
        Err(NfsErr(s)) => {
            e.u32(s);
        }
    }
    attr::wcc(e, Some(pre), Some(dir));
}

/// Resolve the directory of a change and run `f` in it as the caller, encoding the result.
fn in_dir(
    ctx: &Ctx<'_>,
    e: &mut Encoder,
    fh: &[u8],
    name: &[u8],
    f: impl FnOnce(&Obj) -> NfsResult<Obj>,
) {
    let dir = match ctx.resolve_dir(fh) {
        Ok(o) => o,
        Err(NfsErr(s)) => {
            e.u32(s);
            attr::wcc_none(e);
            return;
        }
    };
    let result = (|| {
        writable(&dir)?;
        check_new_name(name)?;
        let _caller = ctx.as_caller(&dir.export)?;
        f(&dir)
    })();
    created(ctx, e, &dir, &dir.st, result);
}

fn mode_of(sa: &Sattr, default: u32) -> libc::mode_t {
    sa.mode.unwrap_or(default) & 0o7777
}

/// Create a new regular file (never opening an existing one, never following a symlink).
fn open_create(dir: &Obj, name: &[u8], mode: libc::mode_t) -> std::io::Result<()> {
    let flags = libc::O_CREAT | libc::O_EXCL | libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    let fd = sys::at_name(name, |n| {
        // SAFETY: `n` is a valid C string for the duration of the call.
        unsafe { libc::openat(dir.fd.as_raw_fd(), n, flags, mode) }
    })?;
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the descriptor was just returned by openat and is closed once here.
    unsafe { libc::close(fd) };
    Ok(())
}

pub(super) fn create(ctx: &Ctx<'_>, d: &mut Decoder<'_>, e: &mut Encoder) -> Result<(), XdrError> {
    let fh = decode_fh(d)?;
    let name = decode_name(d)?;
    let how = d.u32()?;
    let (sa, verf) = match how {
        0 | 1 => (attr::decode_sattr(d)?, None),
        2 => {
            let v = d.fixed(8)?;
            (
                Sattr::default(),
                Some((
                    u32::from_be_bytes([v[0], v[1], v[2], v[3]]),
                    u32::from_be_bytes([v[4], v[5], v[6], v[7]]),
                )),
            )
        }
        v => return Err(XdrError::BadValue(v)),
    };
    tracing::trace!(how, ?sa, name = %String::from_utf8_lossy(name), "nfs create");
    in_dir(ctx, e, fh, name, |dir| {
        match open_create(dir, name, mode_of(&sa, 0o644)) {
            Ok(()) => {}
            Err(err) if err.raw_os_error() == Some(libc::EEXIST) && how != 1 => {
                // UNCHECKED keeps an existing file; EXCLUSIVE succeeds when the existing
                // file carries this request's verifier (a retransmission).
                let obj = child(dir, sys::open_beneath(dir.fd.as_fd(), name)?)?;
                if obj.st.st_mode & libc::S_IFMT != libc::S_IFREG {
                    return Err(NfsErr(status::EXIST));
                }
                if let Some((hi, lo)) = verf {
                    if (obj.st.st_atime, obj.st.st_mtime) != (i64::from(hi), i64::from(lo)) {
                        return Err(NfsErr(status::EXIST));
                    }
                    return Ok(obj);
                }
                attr::apply(&obj, &sa)?;
                return Ok(obj);
            }
            Err(err) if err.raw_os_error() == Some(libc::ELOOP) => {
                return Err(NfsErr(status::EXIST));
            }
            Err(err) => return Err(err.into()),
        }
        let obj = child(dir, sys::open_beneath(dir.fd.as_fd(), name)?)?;
        let sa = match verf {
            // The verifier lives in atime/mtime until the client's SETATTR replaces it.
            Some((hi, lo)) => Sattr {
                atime: Some(attr::SetTime::Client(hi, 0)),
                mtime: Some(attr::SetTime::Client(lo, 0)),
                ..Sattr::default()
            },
            None => sa,
        };
        attr::apply(&obj, &sa)?;
        Ok(obj)
    });
    Ok(())
}

pub(super) fn mkdir(ctx: &Ctx<'_>, d: &mut Decoder<'_>, e: &mut Encoder) -> Result<(), XdrError> {
    let fh = decode_fh(d)?;
    let name = decode_name(d)?;
    let sa = attr::decode_sattr(d)?;
    in_dir(ctx, e, fh, name, |dir| {
        sys::cvt(sys::at_name(name, |n| {
            // SAFETY: `n` is a valid C string for the duration of the call.
            unsafe { libc::mkdirat(dir.fd.as_raw_fd(), n, mode_of(&sa, 0o755)) }
        })?)?;
        let obj = child(dir, sys::open_beneath(dir.fd.as_fd(), name)?)?;
        attr::apply(&obj, &sa)?;
        Ok(obj)
    });
    Ok(())
}

pub(super) fn symlink(ctx: &Ctx<'_>, d: &mut Decoder<'_>, e: &mut Encoder) -> Result<(), XdrError> {
    let fh = decode_fh(d)?;
    let name = decode_name(d)?;
    let _sa = attr::decode_sattr(d)?;
    let target = d.bytes_string(libc::PATH_MAX as u32)?;
    in_dir(ctx, e, fh, name, |dir| {
        // The target is stored as text; the server never follows it.
        let target = std::ffi::CString::new(target).map_err(|_| NfsErr(status::INVAL))?;
        sys::cvt(sys::at_name(name, |n| {
            // SAFETY: both strings are valid C strings for the duration of the call.
            unsafe { libc::symlinkat(target.as_ptr(), dir.fd.as_raw_fd(), n) }
        })?)?;
        child(dir, sys::open_beneath(dir.fd.as_fd(), name)?)
    });
    Ok(())
}

/// `ftype3` values MKNOD accepts.
const NF3CHR: u32 = 4;
const NF3BLK: u32 = 3;
const NF3SOCK: u32 = 6;
const NF3FIFO: u32 = 7;
const BADTYPE: u32 = 10007;

pub(super) fn mknod(ctx: &Ctx<'_>, d: &mut Decoder<'_>, e: &mut Encoder) -> Result<(), XdrError> {
    let fh = decode_fh(d)?;
    let name = decode_name(d)?;
    let kind = d.u32()?;
    let sa = match kind {
        NF3CHR | NF3BLK => {
            let sa = attr::decode_sattr(d)?;
            let (_major, _minor) = (d.u32()?, d.u32()?);
            sa
        }
        NF3SOCK | NF3FIFO => attr::decode_sattr(d)?,
        _ => Sattr::default(),
    };
    in_dir(ctx, e, fh, name, |dir| {
        let fmt = match kind {
            NF3FIFO => libc::S_IFIFO,
            NF3SOCK => libc::S_IFSOCK,
            // Device nodes in a shared export would bypass the host's device policy.
            NF3CHR | NF3BLK => return Err(NfsErr(status::NOTSUPP)),
            _ => return Err(NfsErr(BADTYPE)),
        };
        sys::cvt(sys::at_name(name, |n| {
            // SAFETY: `n` is a valid C string for the duration of the call.
            unsafe { libc::mknodat(dir.fd.as_raw_fd(), n, fmt | mode_of(&sa, 0o644), 0) }
        })?)?;
        let obj = child(dir, sys::open_beneath(dir.fd.as_fd(), name)?)?;
        attr::apply(&obj, &Sattr { mode: None, ..sa })?;
        Ok(obj)
    });
    Ok(())
}

pub(super) fn remove(
    ctx: &Ctx<'_>,
    d: &mut Decoder<'_>,
    e: &mut Encoder,
    rmdir: bool,
) -> Result<(), XdrError> {
    let fh = decode_fh(d)?;
    let name = decode_name(d)?;
    let dir = match ctx.resolve_dir(fh) {
        Ok(o) => o,
        Err(NfsErr(s)) => {
            e.u32(s);
            attr::wcc_none(e);
            return Ok(());
        }
    };
    let result = (|| {
        writable(&dir)?;
        check_name(name)?;
        match name {
            b"." => return Err(NfsErr(status::INVAL)),
            b".." => return Err(NfsErr(status::NOTEMPTY)),
            _ => {}
        }
        let _caller = ctx.as_caller(&dir.export)?;
        let flags = if rmdir { libc::AT_REMOVEDIR } else { 0 };
        sys::cvt(sys::at_name(name, |n| {
            // SAFETY: `n` is a valid C string for the duration of the call.
            unsafe { libc::unlinkat(dir.fd.as_raw_fd(), n, flags) }
        })?)
        .map_err(NfsErr::from)
    })();
    e.u32(result.err().map_or(status::OK, |NfsErr(s)| s));
    attr::wcc(e, Some(&dir.st), Some(&dir));
    Ok(())
}

pub(super) fn rename(ctx: &Ctx<'_>, d: &mut Decoder<'_>, e: &mut Encoder) -> Result<(), XdrError> {
    let from_fh = decode_fh(d)?;
    let from_name = decode_name(d)?;
    let to_fh = decode_fh(d)?;
    let to_name = decode_name(d)?;
    let dirs = ctx
        .resolve_dir(from_fh)
        .and_then(|f| Ok((f, ctx.resolve_dir(to_fh)?)));
    let (from, to) = match dirs {
        Ok(p) => p,
        Err(NfsErr(s)) => {
            e.u32(s);
            attr::wcc_none(e);
            attr::wcc_none(e);
            return Ok(());
        }
    };
    let result = (|| {
        writable(&from)?;
        if from.export.id != to.export.id {
            return Err(NfsErr(status::XDEV));
        }
        check_new_name(from_name)?;
        check_new_name(to_name)?;
        let _caller = ctx.as_caller(&from.export)?;
        let from_c = std::ffi::CString::new(from_name).map_err(|_| NfsErr(status::INVAL))?;
        let to_c = std::ffi::CString::new(to_name).map_err(|_| NfsErr(status::INVAL))?;
        // SAFETY: both names are valid C strings for the duration of the call.
        sys::cvt(unsafe {
            libc::renameat(
                from.fd.as_raw_fd(),
                from_c.as_ptr(),
                to.fd.as_raw_fd(),
                to_c.as_ptr(),
            )
        })
        .map_err(NfsErr::from)
    })();
    e.u32(result.err().map_or(status::OK, |NfsErr(s)| s));
    attr::wcc(e, Some(&from.st), Some(&from));
    attr::wcc(e, Some(&to.st), Some(&to));
    Ok(())
}

pub(super) fn link(ctx: &Ctx<'_>, d: &mut Decoder<'_>, e: &mut Encoder) -> Result<(), XdrError> {
    let file_fh = decode_fh(d)?;
    let dir_fh = decode_fh(d)?;
    let name = decode_name(d)?;
    let objs = ctx
        .resolve(file_fh)
        .and_then(|f| Ok((f, ctx.resolve_dir(dir_fh)?)));
    let (file, dir) = match objs {
        Ok(p) => p,
        Err(NfsErr(s)) => {
            e.u32(s).bool(false);
            attr::wcc_none(e);
            return Ok(());
        }
    };
    let result = (|| {
        writable(&dir)?;
        if file.export.id != dir.export.id {
            return Err(NfsErr(status::XDEV));
        }
        if file.is_dir() {
            return Err(NfsErr(status::ISDIR));
        }
        check_new_name(name)?;
        let _caller = ctx.as_caller(&dir.export)?;
        let src = std::ffi::CString::new(sys::proc_path(file.fd.as_fd()))
            .map_err(|_| NfsErr(status::SERVERFAULT))?;
        sys::cvt(sys::at_name(name, |n| {
            // SAFETY: both strings are valid C strings for the duration of the call.
            unsafe {
                libc::linkat(
                    libc::AT_FDCWD,
                    src.as_ptr(),
                    dir.fd.as_raw_fd(),
                    n,
                    libc::AT_SYMLINK_FOLLOW,
                )
            }
        })?)
        .map_err(NfsErr::from)
    })();
    e.u32(result.err().map_or(status::OK, |NfsErr(s)| s));
    attr::post_op_fd(e, file.fd.as_fd());
    attr::wcc(e, Some(&dir.st), Some(&dir));
    Ok(())
}
