//! File-system procedures: FSSTAT, FSINFO, PATHCONF.

use std::os::fd::AsRawFd;

use super::attr;
use super::file::MAX_IO;
use super::{decode_fh, status, Ctx, NfsErr};
use crate::xdr::{Decoder, Encoder, XdrError};

pub(super) fn fsstat(ctx: &Ctx<'_>, d: &mut Decoder<'_>, e: &mut Encoder) -> Result<(), XdrError> {
    let fh = decode_fh(d)?;
    let obj = match ctx.resolve(fh) {
        Ok(o) => o,
        Err(NfsErr(s)) => {
            e.u32(s).bool(false);
            return Ok(());
        }
    };
    // SAFETY: an all-zero statvfs is a valid value of this plain C struct.
    let mut vfs: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `vfs` is writable; fstatvfs works on O_PATH descriptors.
    if unsafe { libc::fstatvfs(obj.fd.as_raw_fd(), &mut vfs) } != 0 {
        e.u32(NfsErr::from(std::io::Error::last_os_error()).0);
        attr::post_op(e, Some(&obj.st));
        return Ok(());
    }
    let frsize = vfs.f_frsize.max(1);
    e.u32(status::OK);
    attr::post_op(e, Some(&obj.st));
    e.u64(vfs.f_blocks.saturating_mul(frsize))
        .u64(vfs.f_bfree.saturating_mul(frsize))
        .u64(vfs.f_bavail.saturating_mul(frsize))
        .u64(vfs.f_files)
        .u64(vfs.f_ffree)
        .u64(vfs.f_favail)
        .u32(0);
    Ok(())
}

/// FSINFO properties: hard links, symlinks, homogeneous PATHCONF, settable times.
const FSF3_LINK: u32 = 0x1;
const FSF3_SYMLINK: u32 = 0x2;
const FSF3_HOMOGENEOUS: u32 = 0x8;
const FSF3_CANSETTIME: u32 = 0x10;

pub(super) fn fsinfo(ctx: &Ctx<'_>, d: &mut Decoder<'_>, e: &mut Encoder) -> Result<(), XdrError> {
    let fh = decode_fh(d)?;
    let obj = match ctx.resolve(fh) {
        Ok(o) => o,
        Err(NfsErr(s)) => {
            e.u32(s).bool(false);
            return Ok(());
        }
    };
    e.u32(status::OK);
    attr::post_op(e, Some(&obj.st));
    e.u32(MAX_IO) // rtmax
        .u32(128 * 1024) // rtpref
        .u32(4096) // rtmult
        .u32(MAX_IO) // wtmax
        .u32(128 * 1024) // wtpref
        .u32(4096) // wtmult
        .u32(64 * 1024) // dtpref
        .u64(i64::MAX as u64) // maxfilesize
        .u32(0)
        .u32(1) // time_delta: 1 ns
        .u32(FSF3_LINK | FSF3_SYMLINK | FSF3_HOMOGENEOUS | FSF3_CANSETTIME);
    Ok(())
}

pub(super) fn pathconf(
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
    e.u32(status::OK);
    attr::post_op(e, Some(&obj.st));
    e.u32(65000) // linkmax (ext4's limit)
        .u32(super::NAME_MAX as u32)
        .bool(true) // no_trunc: long names are refused
        .bool(true) // chown_restricted
        .bool(false) // case_insensitive
        .bool(true); // case_preserving
    Ok(())
}
