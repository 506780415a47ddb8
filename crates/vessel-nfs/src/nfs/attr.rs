//! File attributes: `fattr3`, `wcc_data`, `sattr3` and applying them.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use super::{status, NfsErr, NfsResult, Obj};
use crate::sys;
use crate::xdr::{Decoder, Encoder, XdrError};

/// Attributes as `lstat` returns them.
pub(crate) type Stat = libc::stat;

fn ftype(mode: u32) -> u32 {
    match mode & libc::S_IFMT {
        libc::S_IFREG => 1,
        libc::S_IFDIR => 2,
        libc::S_IFBLK => 3,
        libc::S_IFCHR => 4,
        libc::S_IFLNK => 5,
        libc::S_IFSOCK => 6,
        libc::S_IFIFO => 7,
        _ => 1,
    }
}

fn time(e: &mut Encoder, sec: i64, nsec: i64) {
    // nfstime3 seconds are unsigned 32-bit; times before 1970 clamp to 0.
    e.u32(sec.clamp(0, i64::from(u32::MAX)) as u32)
        .u32(nsec.clamp(0, 999_999_999) as u32);
}

/// Encode an `fattr3`.
pub(crate) fn fattr3(e: &mut Encoder, st: &Stat) {
    e.u32(ftype(st.st_mode))
        .u32(st.st_mode & 0o7777)
        .u32(st.st_nlink.min(u64::from(u32::MAX)) as u32)
        .u32(st.st_uid)
        .u32(st.st_gid)
        .u64(st.st_size.max(0) as u64)
        .u64((st.st_blocks.max(0) as u64).saturating_mul(512))
        .u32(libc::major(st.st_rdev))
        .u32(libc::minor(st.st_rdev))
        .u64(st.st_dev)
        .u64(st.st_ino);
    time(e, st.st_atime, st.st_atime_nsec);
    time(e, st.st_mtime, st.st_mtime_nsec);
    time(e, st.st_ctime, st.st_ctime_nsec);
}

/// Encode a `post_op_attr` from a stat result (absent on error).
pub(crate) fn post_op(e: &mut Encoder, st: Option<&Stat>) {
    match st {
        Some(st) => {
            e.bool(true);
            fattr3(e, st);
        }
        None => {
            e.bool(false);
        }
    }
}

/// Encode a `post_op_attr` by stat-ing `fd` now.
pub(crate) fn post_op_fd(e: &mut Encoder, fd: BorrowedFd<'_>) {
    post_op(e, sys::stat(fd).ok().as_ref());
}

/// Encode `wcc_data`: the attributes before (if known) and after the change.
pub(crate) fn wcc(e: &mut Encoder, pre: Option<&Stat>, obj: Option<&Obj>) {
    match pre {
        Some(st) => {
            e.bool(true).u64(st.st_size.max(0) as u64);
            time(e, st.st_mtime, st.st_mtime_nsec);
            time(e, st.st_ctime, st.st_ctime_nsec);
        }
        None => {
            e.bool(false);
        }
    }
    match obj {
        Some(o) => post_op_fd(e, o.fd.as_fd()),
        None => post_op(e, None),
    }
}

/// An empty `wcc_data` (nothing known), for handles that did not resolve.
pub(crate) fn wcc_none(e: &mut Encoder) {
    e.bool(false).bool(false);
}

/// How a time attribute is to be set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SetTime {
    ServerNow,
    Client(u32, u32),
}

/// A decoded `sattr3`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Sattr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<SetTime>,
    pub mtime: Option<SetTime>,
}

fn opt_u32(d: &mut Decoder<'_>) -> Result<Option<u32>, XdrError> {
    Ok(if d.bool()? { Some(d.u32()?) } else { None })
}

fn set_time(d: &mut Decoder<'_>) -> Result<Option<SetTime>, XdrError> {
    Ok(match d.u32()? {
        0 => None,
        1 => Some(SetTime::ServerNow),
        2 => Some(SetTime::Client(d.u32()?, d.u32()?)),
        v => return Err(XdrError::BadValue(v)),
    })
}

/// Decode an `sattr3`.
pub(crate) fn decode_sattr(d: &mut Decoder<'_>) -> Result<Sattr, XdrError> {
    Ok(Sattr {
        mode: opt_u32(d)?,
        uid: opt_u32(d)?,
        gid: opt_u32(d)?,
        size: if d.bool()? { Some(d.u64()?) } else { None },
        atime: set_time(d)?,
        mtime: set_time(d)?,
    })
}

fn timespec(t: Option<SetTime>) -> libc::timespec {
    match t {
        None => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        Some(SetTime::ServerNow) => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        },
        Some(SetTime::Client(s, n)) => libc::timespec {
            tv_sec: s.into(),
            tv_nsec: i64::from(n.min(999_999_999)),
        },
    }
}

/// Apply `sa` to the object, with the caller's credentials already assumed: ownership
/// first (it may clear set-id bits), then size, mode and times.
pub(crate) fn apply(obj: &Obj, sa: &Sattr) -> NfsResult<()> {
    let fd = obj.fd.as_fd();
    let is_link = obj.st.st_mode & libc::S_IFMT == libc::S_IFLNK;
    if sa.uid.is_some() || sa.gid.is_some() {
        let uid = sa.uid.unwrap_or(u32::MAX);
        let gid = sa.gid.unwrap_or(u32::MAX);
        // SAFETY: empty static path with AT_EMPTY_PATH on a descriptor we own.
        sys::cvt(unsafe {
            libc::fchownat(
                fd.as_raw_fd(),
                c"".as_ptr(),
                uid,
                gid,
                libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
            )
        })?;
    }
    let more = sa.size.is_some() || sa.mode.is_some() || sa.atime.is_some() || sa.mtime.is_some();
    if more && is_link {
        // Symlinks have no settable mode, size or times over NFS here.
        return Err(NfsErr(status::INVAL));
    }
    let path = sys::proc_path(fd);
    if let Some(size) = sa.size {
        if obj.is_dir() {
            return Err(NfsErr(status::ISDIR));
        }
        let size = i64::try_from(size).map_err(|_| NfsErr(status::FBIG))?;
        sys::at_name(path.as_bytes(), |p| {
            // SAFETY: `p` is a valid C string for the duration of the call.
            sys::cvt(unsafe { libc::truncate(p, size) })
        })??;
    }
    if let Some(mode) = sa.mode {
        sys::at_name(path.as_bytes(), |p| {
            // SAFETY: `p` is a valid C string for the duration of the call.
            sys::cvt(unsafe { libc::chmod(p, mode & 0o7777) })
        })??;
    }
    if sa.atime.is_some() || sa.mtime.is_some() {
        let times = [timespec(sa.atime), timespec(sa.mtime)];
        sys::at_name(path.as_bytes(), |p| {
            // SAFETY: `p` and `times` are valid for the duration of the call.
            sys::cvt(unsafe { libc::utimensat(libc::AT_FDCWD, p, times.as_ptr(), 0) })
        })??;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sattr_decodes_every_field_and_rejects_bad_time_modes() {
        let mut e = Encoder::new();
        e.bool(true).u32(0o640);
        e.bool(false);
        e.bool(true).u32(7);
        e.bool(true).u64(4096);
        e.u32(1);
        e.u32(2).u32(100).u32(5);
        let bytes = e.into_bytes();
        let sa = decode_sattr(&mut Decoder::new(&bytes)).expect("sattr");
        assert_eq!(
            sa,
            Sattr {
                mode: Some(0o640),
                uid: None,
                gid: Some(7),
                size: Some(4096),
                atime: Some(SetTime::ServerNow),
                mtime: Some(SetTime::Client(100, 5)),
            }
        );
        let mut e = Encoder::new();
        e.bool(false).bool(false).bool(false).bool(false).u32(3);
        assert_eq!(
            decode_sattr(&mut Decoder::new(e.as_bytes())),
            Err(XdrError::BadValue(3))
        );
    }
}
