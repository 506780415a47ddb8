//! MOUNT version 3 (RFC 1813 appendix I): hands out export root handles.

use std::os::fd::AsFd;
use std::sync::{Mutex, PoisonError};

use crate::export::ExportTable;
use crate::nfs::{self, Ctx};
use crate::sys;
use crate::xdr::{Decoder, Encoder, XdrError};

/// MOUNT program number.
pub const PROGRAM: u32 = 100005;
/// MOUNT version served.
pub const VERSION: u32 = 3;
/// Longest mount path (`MNTPATHLEN`).
const MNTPATHLEN: u32 = 1024;

/// `mountstat3` values.
const MNT3_OK: u32 = 0;
const MNT3ERR_NOENT: u32 = 2;
const MNT3ERR_ACCES: u32 = 13;
const MNT3ERR_NOTDIR: u32 = 20;
const MNT3ERR_INVAL: u32 = 22;
const MNT3ERR_NAMETOOLONG: u32 = 63;
const MNT3ERR_SERVERFAULT: u32 = 10006;

/// Who mounted what (for DUMP); advisory only, as in every NFSv3 server.
#[derive(Debug, Default)]
pub(crate) struct MountList(Mutex<Vec<(String, String)>>);

impl MountList {
    fn add(&self, host: &str, dir: &str) {
        let mut l = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if !l.iter().any(|(h, d)| h == host && d == dir) && l.len() < 4096 {
            l.push((host.to_string(), dir.to_string()));
        }
    }

    fn remove(&self, host: &str, dir: Option<&str>) {
        let mut l = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        l.retain(|(h, d)| !(h == host && dir.is_none_or(|dir| dir == d)));
    }

    fn snapshot(&self) -> Vec<(String, String)> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Answer one MOUNT call; `Ok(None)` for an unknown procedure.
pub(crate) fn dispatch(
    ctx: &Ctx<'_>,
    mounts: &MountList,
    host: &str,
    proc_: u32,
    d: &mut Decoder<'_>,
    e: &mut Encoder,
) -> Result<Option<()>, XdrError> {
    match proc_ {
        0 => {}
        1 => {
            let dir = d.string(MNTPATHLEN)?;
            match mnt(ctx, dir) {
                Ok(fh) => {
                    mounts.add(host, dir);
                    tracing::debug!(host, dir, "nfs mount");
                    e.u32(MNT3_OK).opaque(&fh);
                    e.u32(1).u32(crate::rpc::AUTH_UNIX);
                }
                Err(s) => {
                    tracing::debug!(host, dir, status = s, "nfs mount refused");
                    e.u32(s);
                }
            }
        }
        2 => {
            // Only the mounts of exports the caller may use: the others' names, and who
            // mounts them, are not its to know.
            for (h, dir) in mounts.snapshot() {
                let visible = ctx
                    .exports
                    .for_mount_path(&dir)
                    .is_some_and(|(ex, _)| ex.admits(ctx.peer));
                if visible {
                    e.bool(true).string(&h).string(&dir);
                }
            }
            e.bool(false);
        }
        3 => {
            let dir = d.string(MNTPATHLEN)?;
            mounts.remove(host, Some(dir));
        }
        4 => mounts.remove(host, None),
        5 => export_list(ctx.exports, ctx.peer, e),
        _ => return Ok(None),
    }
    Ok(Some(()))
}

/// The root handle for a mount path: an export name, or a directory below one.
fn mnt(ctx: &Ctx<'_>, dir: &str) -> Result<Vec<u8>, u32> {
    if !dir.starts_with('/') {
        return Err(MNT3ERR_INVAL);
    }
    // An export the caller may not use is one that does not exist, as in its list.
    let (export, rest) = ctx
        .exports
        .for_mount_path(dir)
        .filter(|(ex, _)| ex.admits(ctx.peer))
        .ok_or(MNT3ERR_NOENT)?;
    let errno = |e: std::io::Error| match e.raw_os_error() {
        Some(libc::ENOENT) => MNT3ERR_NOENT,
        Some(libc::ENOTDIR) => MNT3ERR_NOTDIR,
        Some(libc::ENAMETOOLONG) => MNT3ERR_NAMETOOLONG,
        // Climbing out of the export, a symlink or another mount on the way.
        Some(libc::EXDEV | libc::ELOOP | libc::EACCES | libc::EPERM) => MNT3ERR_ACCES,
        Some(e) => nfs::errno_to_status(e),
        None => MNT3ERR_SERVERFAULT,
    };
    let fd = if rest.is_empty() {
        sys::open_beneath(export.root.as_fd(), b".")
    } else {
        // A directory below the export, resolved like any lookup: beneath the root, no
        // symlinks, no other mounts, with the caller's permissions.
        let _caller = ctx.as_caller(&export).map_err(|e| e.0)?;
        sys::open_beneath(export.root.as_fd(), rest.as_bytes())
    }
    .map_err(errno)?;
    let st = sys::stat(fd.as_fd()).map_err(errno)?;
    if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
        return Err(MNT3ERR_NOTDIR);
    }
    ctx.handle(&export, &fd).map_err(|e| e.0)
}

/// The exports `peer` may mount, each with the networks it admits as its groups (none:
/// every client); exports it may not mount are left out.
fn export_list(exports: &ExportTable, peer: std::net::IpAddr, e: &mut Encoder) {
    for ex in exports.list() {
        // One reading of the networks, for both the check and the groups.
        let nets = ex.clients();
        if !crate::export::nets_admit(&nets, peer) {
            continue;
        }
        e.bool(true).string(&ex.config.path);
        for net in nets {
            e.bool(true).string(&net.to_string());
        }
        e.bool(false);
    }
    e.bool(false);
}
