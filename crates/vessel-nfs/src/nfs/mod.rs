//! NFS version 3 (RFC 1813): procedure dispatch, handle resolution, identities and errors.

mod attr;
mod dir;
mod file;
mod fsinfo;
mod readdir;

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use crate::export::{BadHandle, ExportState, ExportTable, HandleKey, Squash, FHSIZE3};
use crate::rpc::Credentials;
use crate::sys::{self, CallerCreds, ServerIdentity};
use crate::xdr::{Decoder, Encoder, XdrError};

/// NFS program number.
pub const PROGRAM: u32 = 100003;
/// NFS version served.
pub const VERSION: u32 = 3;

/// `nfsstat3` values.
#[allow(missing_docs)]
pub mod status {
    pub const OK: u32 = 0;
    pub const PERM: u32 = 1;
    pub const NOENT: u32 = 2;
    pub const IO: u32 = 5;
    pub const NXIO: u32 = 6;
    pub const ACCES: u32 = 13;
    pub const EXIST: u32 = 17;
    pub const XDEV: u32 = 18;
    pub const NODEV: u32 = 19;
    pub const NOTDIR: u32 = 20;
    pub const ISDIR: u32 = 21;
    pub const INVAL: u32 = 22;
    pub const FBIG: u32 = 27;
    pub const NOSPC: u32 = 28;
    pub const ROFS: u32 = 30;
    pub const MLINK: u32 = 31;
    pub const NAMETOOLONG: u32 = 63;
    pub const NOTEMPTY: u32 = 66;
    pub const DQUOT: u32 = 69;
    pub const STALE: u32 = 70;
    pub const BADHANDLE: u32 = 10001;
    pub const NOT_SYNC: u32 = 10002;
    pub const BAD_COOKIE: u32 = 10003;
    pub const NOTSUPP: u32 = 10004;
    pub const TOOSMALL: u32 = 10005;
    pub const SERVERFAULT: u32 = 10006;
}

/// An `nfsstat3` error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NfsErr(pub u32);

/// The `nfsstat3` for an errno.
pub fn errno_to_status(errno: i32) -> u32 {
    use status::*;
    match errno {
        libc::EPERM => PERM,
        libc::ENOENT => NOENT,
        libc::EIO => IO,
        libc::ENXIO => NXIO,
        libc::EACCES => ACCES,
        libc::EEXIST => EXIST,
        libc::EXDEV => XDEV,
        libc::ENODEV => NODEV,
        libc::ENOTDIR => NOTDIR,
        libc::EISDIR => ISDIR,
        libc::EINVAL => INVAL,
        libc::EFBIG => FBIG,
        libc::ENOSPC => NOSPC,
        libc::EROFS => ROFS,
        libc::EMLINK => MLINK,
        libc::ENAMETOOLONG => NAMETOOLONG,
        libc::ENOTEMPTY => NOTEMPTY,
        libc::EDQUOT => DQUOT,
        libc::ESTALE => STALE,
        libc::EOPNOTSUPP => NOTSUPP,
        // A symlink met where the server refuses to follow one.
        libc::ELOOP => ACCES,
        libc::EBADF => BADHANDLE,
        libc::EOVERFLOW => FBIG,
        _ => SERVERFAULT,
    }
}

impl From<io::Error> for NfsErr {
    fn from(e: io::Error) -> Self {
        NfsErr(
            e.raw_os_error()
                .map_or(status::SERVERFAULT, errno_to_status),
        )
    }
}

pub(crate) type NfsResult<T> = Result<T, NfsErr>;

/// Everything a procedure needs besides its arguments.
pub(crate) struct Ctx<'a> {
    pub exports: &'a ExportTable,
    pub key: &'a HandleKey,
    pub identity: &'a ServerIdentity,
    pub cred: &'a Credentials,
    /// The client's address: an export admits the networks it names.
    pub peer: std::net::IpAddr,
    /// Write verifier: changes only when the server restarts (unstable data may be lost).
    pub write_verf: [u8; 8],
}

/// A resolved file handle: its export, an `O_PATH` descriptor and its attributes.
pub(crate) struct Obj {
    pub export: Arc<ExportState>,
    pub fd: OwnedFd,
    pub st: libc::stat,
}

impl Obj {
    pub fn is_dir(&self) -> bool {
        self.st.st_mode & libc::S_IFMT == libc::S_IFDIR
    }

    pub fn is_root(&self) -> bool {
        self.export.is_root(&self.st)
    }
}

impl Ctx<'_> {
    /// Resolve a file handle with the server's own identity (decoding needs
    /// `CAP_DAC_READ_SEARCH`). The handle must have been issued for the export as it is now
    /// (its generation and root), and the object must lie beneath the export root.
    pub fn resolve(&self, fh: &[u8]) -> NfsResult<Obj> {
        let mut found = None;
        let (_, kh) = self
            .key
            .decode(fh, |id| {
                let e = self.exports.by_id(id)?;
                let identity = e.identity.clone();
                found = Some(e);
                Some(identity)
            })
            .map_err(|e| match e {
                BadHandle::Malformed => NfsErr(status::BADHANDLE),
                BadHandle::Forged => NfsErr(status::STALE),
            })?;
        let export = found.ok_or(NfsErr(status::STALE))?;
        // A handle is a capability only in the hands of a client the export admits.
        if !export.admits(self.peer) {
            return Err(NfsErr(status::ACCES));
        }
        let fd = sys::open_handle(export.root.as_fd(), &kh).map_err(|e| {
            if e.raw_os_error() == Some(libc::ESTALE) || e.raw_os_error() == Some(libc::ENOENT) {
                NfsErr(status::STALE)
            } else {
                NfsErr::from(e)
            }
        })?;
        let st = sys::stat(fd.as_fd())?;
        if st.st_dev != export.root_dev {
            return Err(NfsErr(status::STALE));
        }
        let obj = Obj { export, fd, st };
        let inside = if obj.is_dir() {
            beneath_root(&obj)?
        } else {
            file_beneath_root(&obj)
        };
        if !inside {
            return Err(NfsErr(status::STALE));
        }
        Ok(obj)
    }

    /// Resolve a handle that must name a directory.
    pub fn resolve_dir(&self, fh: &[u8]) -> NfsResult<Obj> {
        let obj = self.resolve(fh)?;
        if !obj.is_dir() {
            return Err(NfsErr(status::NOTDIR));
        }
        Ok(obj)
    }

    /// Act as the (mapped) caller until the guard drops.
    pub fn as_caller(&self, export: &ExportState) -> NfsResult<CallerCreds<'_>> {
        let (uid, gid, gids) = mapped_identity(self.cred, &export.config);
        CallerCreds::assume(self.identity, uid, gid, &gids).map_err(NfsErr::from)
    }

    /// The handle of `fd` inside `export`.
    pub fn handle(&self, export: &ExportState, fd: &OwnedFd) -> NfsResult<Vec<u8>> {
        Ok(self.key.encode(export, fd.as_fd())?)
    }
}

/// The uid, gid and groups a caller acts as on `export`. Root squash maps uid 0 to the
/// anonymous identity and, like the kernel's `root_squash`, gid 0 too, primary and
/// supplementary: group root owns as much on a host as user root reads.
pub(crate) fn mapped_identity(
    cred: &Credentials,
    export: &crate::export::Export,
) -> (u32, u32, Vec<u32>) {
    let anon = (export.anon_uid, export.anon_gid, Vec::new());
    let squash_gid = |g: u32| if g == 0 { export.anon_gid } else { g };
    match cred {
        Credentials::None => anon,
        Credentials::Unix { uid, gid, gids, .. } => match export.squash {
            Squash::All => anon,
            Squash::Root if *uid == 0 => anon,
            Squash::Root => (
                *uid,
                squash_gid(*gid),
                gids.iter().map(|&g| squash_gid(g)).collect(),
            ),
            Squash::None => (*uid, *gid, gids.clone()),
        },
    }
}

/// Whether a non-directory lies beneath the export root, as far as the kernel can tell: its
/// path (when its dentry is connected and that path still names it) must be below the root's.
/// A file reached only through a disconnected dentry (not in the cache since the server
/// started), or with several links, cannot be placed and is accepted on the strength of its
/// handle's tag; it is on the export's file system (checked by the caller).
fn file_beneath_root(obj: &Obj) -> bool {
    if obj.st.st_nlink > 1 {
        return true;
    }
    let (Some(path), Some(root)) = (
        sys::fd_path(obj.fd.as_fd()),
        sys::fd_path(obj.export.root.as_fd()),
    ) else {
        return true;
    };
    let names_it = std::fs::symlink_metadata(&path).is_ok_and(|m| {
        use std::os::unix::fs::MetadataExt;
        m.dev() == obj.st.st_dev && m.ino() == obj.st.st_ino
    });
    if !names_it {
        return true;
    }
    path.starts_with(&root)
}

/// Walk `..` from a directory up to the export root; false if the file system's root comes
/// first (the directory was moved out of the export, or the handle names a foreign tree).
fn beneath_root(obj: &Obj) -> NfsResult<bool> {
    if obj.is_root() {
        return Ok(true);
    }
    let mut cur = sys::open_parent(obj.fd.as_fd())?;
    let mut prev = (obj.st.st_dev, obj.st.st_ino);
    for _ in 0..4096 {
        let st = sys::stat(cur.as_fd())?;
        if obj.export.is_root(&st) {
            return Ok(true);
        }
        if (st.st_dev, st.st_ino) == prev {
            return Ok(false);
        }
        prev = (st.st_dev, st.st_ino);
        cur = sys::open_parent(cur.as_fd())?;
    }
    Ok(false)
}

/// Decode an `nfs_fh3`.
pub(crate) fn decode_fh<'a>(d: &mut Decoder<'a>) -> Result<&'a [u8], XdrError> {
    d.opaque(FHSIZE3 as u32)
}

/// Longest name accepted from the wire before `NAMETOOLONG` is answered.
const NAME_WIRE_MAX: u32 = 4096;
/// Longest name on the file systems served.
pub(crate) const NAME_MAX: usize = 255;

/// Decode a `filename3`.
pub(crate) fn decode_name<'a>(d: &mut Decoder<'a>) -> Result<&'a [u8], XdrError> {
    d.bytes_string(NAME_WIRE_MAX)
}

/// Check one path component a client sent: not empty, no `/` or NUL, not too long.
pub(crate) fn check_name(name: &[u8]) -> NfsResult<()> {
    if name.len() > NAME_MAX {
        return Err(NfsErr(status::NAMETOOLONG));
    }
    if name.is_empty() || name.contains(&b'/') || name.contains(&0) {
        return Err(NfsErr(status::INVAL));
    }
    Ok(())
}

/// A name that creates or removes something: `.` and `..` are refused.
pub(crate) fn check_new_name(name: &[u8]) -> NfsResult<()> {
    check_name(name)?;
    if name == b"." || name == b".." {
        return Err(NfsErr(status::EXIST));
    }
    Ok(())
}

/// Refuse changes on read-only exports.
pub(crate) fn writable(obj: &Obj) -> NfsResult<()> {
    if obj.export.config.read_only {
        Err(NfsErr(status::ROFS))
    } else {
        Ok(())
    }
}

/// Answer one NFS call: `Ok(None)` for an unknown procedure, `Err` for undecodable arguments.
pub(crate) fn dispatch(
    ctx: &Ctx<'_>,
    proc_: u32,
    args: &mut Decoder<'_>,
    out: &mut Encoder,
) -> Result<Option<()>, XdrError> {
    match proc_ {
        0 => {}
        1 => file::getattr(ctx, args, out)?,
        2 => file::setattr(ctx, args, out)?,
        3 => dir::lookup(ctx, args, out)?,
        4 => file::access(ctx, args, out)?,
        5 => file::readlink(ctx, args, out)?,
        6 => file::read(ctx, args, out)?,
        7 => file::write(ctx, args, out)?,
        8 => dir::create(ctx, args, out)?,
        9 => dir::mkdir(ctx, args, out)?,
        10 => dir::symlink(ctx, args, out)?,
        11 => dir::mknod(ctx, args, out)?,
        12 => dir::remove(ctx, args, out, false)?,
        13 => dir::remove(ctx, args, out, true)?,
        14 => dir::rename(ctx, args, out)?,
        15 => dir::link(ctx, args, out)?,
        16 => readdir::readdir(ctx, args, out, false)?,
        17 => readdir::readdir(ctx, args, out, true)?,
        18 => fsinfo::fsstat(ctx, args, out)?,
        19 => fsinfo::fsinfo(ctx, args, out)?,
        20 => fsinfo::pathconf(ctx, args, out)?,
        21 => file::commit(ctx, args, out)?,
        _ => return Ok(None),
    }
    Ok(Some(()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::Export;

    #[test]
    fn errno_mapping_covers_the_common_failures() {
        assert_eq!(errno_to_status(libc::ENOENT), status::NOENT);
        assert_eq!(errno_to_status(libc::EACCES), status::ACCES);
        assert_eq!(errno_to_status(libc::ENOTEMPTY), status::NOTEMPTY);
        assert_eq!(errno_to_status(libc::EROFS), status::ROFS);
        assert_eq!(errno_to_status(libc::EDQUOT), status::DQUOT);
        assert_eq!(errno_to_status(libc::ENOMEM), status::SERVERFAULT);
    }

    #[test]
    fn names_are_validated() {
        assert!(check_name(b"a.txt").is_ok());
        assert_eq!(check_name(b""), Err(NfsErr(status::INVAL)));
        assert_eq!(check_name(b"a/b"), Err(NfsErr(status::INVAL)));
        assert_eq!(check_name(b"a\0"), Err(NfsErr(status::INVAL)));
        assert_eq!(check_name(&[b'x'; 256]), Err(NfsErr(status::NAMETOOLONG)));
        assert_eq!(check_new_name(b".."), Err(NfsErr(status::EXIST)));
    }

    #[test]
    fn squash_maps_identities() {
        let root = Credentials::Unix {
            machine: "h".into(),
            uid: 0,
            gid: 0,
            gids: vec![0],
        };
        let user = Credentials::Unix {
            machine: "h".into(),
            uid: 1000,
            gid: 100,
            gids: vec![5],
        };
        let e = Export::new("/v", "/tmp").anon(99, 98);
        assert_eq!(mapped_identity(&root, &e), (99, 98, vec![]));
        assert_eq!(mapped_identity(&user, &e), (1000, 100, vec![5]));
        // Group root is squashed too, primary and supplementary.
        let group_root = Credentials::Unix {
            machine: "h".into(),
            uid: 1234,
            gid: 0,
            gids: vec![5, 0, 7],
        };
        assert_eq!(mapped_identity(&group_root, &e), (1234, 98, vec![5, 98, 7]));
        assert_eq!(mapped_identity(&Credentials::None, &e), (99, 98, vec![]));
        let none = e.clone().squash(Squash::None);
        assert_eq!(mapped_identity(&root, &none), (0, 0, vec![0]));
        assert_eq!(
            mapped_identity(&group_root, &none),
            (1234, 0, vec![5, 0, 7])
        );
        let all = e.squash(Squash::All);
        assert_eq!(mapped_identity(&user, &all), (99, 98, vec![]));
    }
}
