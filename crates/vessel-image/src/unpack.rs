//! Safe extraction of one layer tar into a directory, in overlayfs form.
//!
//! Every parent directory is opened with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
//! RESOLVE_NO_MAGICLINKS)` from a descriptor of the staging root, and every entry is created
//! with `*at` calls that never follow a final symlink, so the kernel itself keeps writes
//! inside. The layer is unpacked into a staging directory beside `dest` and renamed into place
//! only when every entry succeeded; on any refusal nothing is left behind.
//!
//! OCI whiteouts become overlayfs whiteouts: `.wh.NAME` a character device 0:0 named `NAME`,
//! `.wh..wh..opq` the `trusted.overlay.opaque=y` xattr on its directory.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::fsat;
use crate::media::Compression;
use crate::tar::{EntryKind, Header, TarError, TarReader};

/// Prefix of OCI whiteout names.
pub const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// Name of the OCI opaque-directory marker.
pub const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
/// The overlayfs xattr that makes a directory opaque.
pub const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// Trailing bytes after the end-of-archive marker read (to verify compression checksums).
const MAX_TRAILING: u64 = 16 << 20;

/// Limits and permissions of an unpack.
#[derive(Debug, Clone)]
pub struct UnpackOptions {
    /// Create device nodes; when false they are skipped with a warning (counted in stats).
    pub allow_devices: bool,
    /// Set owners from the archive (needs CAP_CHOWN); when false files belong to the caller.
    pub preserve_owners: bool,
    /// Largest size one entry may claim.
    pub max_entry_size: u64,
    /// Largest sum of entry sizes.
    pub max_total_size: u64,
    /// Most entries a layer may hold.
    pub max_entries: u64,
}

impl Default for UnpackOptions {
    fn default() -> Self {
        Self {
            allow_devices: false,
            preserve_owners: true,
            max_entry_size: 16 << 30,
            max_total_size: 64 << 30,
            max_entries: 2_000_000,
        }
    }
}

/// What an unpack created and skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnpackStats {
    /// Tar entries read.
    pub entries: u64,
    /// Regular files written.
    pub files: u64,
    /// Directories created or updated.
    pub dirs: u64,
    /// Symlinks created.
    pub symlinks: u64,
    /// Hard links created.
    pub hardlinks: u64,
    /// Device nodes and fifos created.
    pub special: u64,
    /// Whiteouts turned into overlayfs whiteout devices.
    pub whiteouts: u64,
    /// Directories marked opaque.
    pub opaque_dirs: u64,
    /// Bytes of file data written.
    pub bytes: u64,
    /// Device nodes skipped because `allow_devices` is false.
    pub skipped_devices: u64,
    /// Extended attributes not applied (namespaces a layer may not set, or entry types that
    /// cannot carry them).
    pub skipped_xattrs: u64,
}

/// Why a layer was refused. Each names the entry so a person can find it in the archive.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// The destination is already there.
    #[error("destination {0} already exists; unpack each layer into a new directory")]
    DestExists(PathBuf),
    /// The staging directory beside the destination could not be made or moved into place.
    #[error("{op} {path}")]
    Staging {
        /// The staging or destination path.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The media type is not a layer this crate can decode.
    #[error("layer media type {0:?} is not supported (plain tar and gzip are)")]
    UnsupportedMediaType(String),
    /// The tar stream is damaged.
    #[error("the layer is not a readable tar stream")]
    Stream(#[source] TarError),
    /// Reading an entry's data failed: truncated archive or damaged compression.
    #[error(
        "reading the data of entry {entry:?}: the layer is truncated or its compression is corrupt"
    )]
    Read {
        /// Entry name.
        entry: String,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// A name holds a NUL byte.
    #[error("entry {entry:?} has a NUL byte in its name or link target")]
    NulInName {
        /// Entry name.
        entry: String,
    },
    /// A `..` would climb out of the layer root.
    #[error("entry {entry:?} climbs out of the layer root with '..'")]
    Escapes {
        /// Entry name.
        entry: String,
    },
    /// A parent of the entry is a symlink.
    #[error("entry {entry:?} would be written through a symlink")]
    ThroughSymlink {
        /// Entry name.
        entry: String,
    },
    /// A parent of the entry is not a directory.
    #[error("a parent of entry {entry:?} is not a directory")]
    NotADirectory {
        /// Entry name.
        entry: String,
    },
    /// A hard link points outside the layer root.
    #[error("hard link {entry:?} points outside the layer root (to {target:?})")]
    HardLinkOutside {
        /// Entry name.
        entry: String,
        /// Link target.
        target: String,
    },
    /// A hard link's target was not extracted before it.
    #[error(
        "hard link {entry:?} points to {target:?}, which is not an earlier file of this layer"
    )]
    HardLinkMissing {
        /// Entry name.
        entry: String,
        /// Link target.
        target: String,
    },
    /// An entry claims more bytes than allowed.
    #[error("entry {entry:?} claims {size} bytes, more than the {limit} allowed per entry")]
    EntryTooLarge {
        /// Entry name.
        entry: String,
        /// Claimed size.
        size: u64,
        /// The limit (`UnpackOptions::max_entry_size`).
        limit: u64,
    },
    /// The entries add up to more than allowed.
    #[error("the layer holds more than the {limit} bytes allowed (at entry {entry:?})")]
    TotalTooLarge {
        /// Entry where the limit was crossed.
        entry: String,
        /// The limit (`UnpackOptions::max_total_size`).
        limit: u64,
    },
    /// Too many entries.
    #[error("the layer holds more than {limit} entries")]
    TooManyEntries {
        /// The limit (`UnpackOptions::max_entries`).
        limit: u64,
    },
    /// A whiteout names nothing (`.wh.`, `.wh..`).
    #[error("whiteout {entry:?} names no file")]
    BadWhiteout {
        /// Entry name.
        entry: String,
    },
    /// An entry type this crate does not extract (sparse files, volume labels...).
    #[error("entry {entry:?} has tar type {flag:?}, which image layers do not use")]
    UnsupportedEntry {
        /// Entry name.
        entry: String,
        /// Tar type flag.
        flag: char,
    },
    /// The root entry (`./`) is not a directory, or the owner does not fit in 32 bits.
    #[error("entry {entry:?} is invalid: {why}")]
    Invalid {
        /// Entry name.
        entry: String,
        /// What is wrong.
        why: &'static str,
    },
    /// More than a little data follows the end-of-archive marker.
    #[error("more than {MAX_TRAILING} bytes follow the end of the archive")]
    TrailingData,
    /// Creating an entry failed.
    #[error("entry {entry:?}: {op}")]
    Io {
        /// Entry name.
        entry: String,
        /// What was being done.
        op: &'static str,
        /// Cause.
        #[source]
        source: io::Error,
    },
}

type Result<T> = std::result::Result<T, UnpackError>;

/// A printable form of a raw entry name.
pub(crate) fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Splits a tar path into components, dropping empty and `.` ones and a leading `/`
/// (relative to the root, as tar does) and resolving `..` lexically; `None` if `..`
/// would climb above the root.
pub(crate) fn normalize(path: &[u8]) -> Option<Vec<&[u8]>> {
    let mut out: Vec<&[u8]> = Vec::new();
    for c in path.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                out.pop()?;
            }
            c => out.push(c),
        }
    }
    Some(out)
}

/// Unpacks one layer (`media_type` says its compression) into `dest`, which must not exist.
/// Whiteouts are stored in overlayfs form. On error nothing is left behind.
pub fn unpack_layer(
    reader: impl Read,
    media_type: &str,
    dest: &Path,
    opts: &UnpackOptions,
) -> Result<UnpackStats> {
    let compression = Compression::from_media_type(media_type)
        .ok_or_else(|| UnpackError::UnsupportedMediaType(media_type.to_string()))?;
    let stream = compression
        .decoder(reader)
        .ok_or_else(|| UnpackError::UnsupportedMediaType(media_type.to_string()))?;
    let staging = make_staging(dest)?;
    let result = (|| {
        let root = fsat::open_dir_path(&staging).map_err(|source| UnpackError::Staging {
            path: staging.clone(),
            op: "open staging directory",
            source,
        })?;
        let mut u = Unpacker {
            root,
            opts,
            stats: UnpackStats::default(),
            dirs: BTreeMap::new(),
            total: 0,
        };
        let mut tar = TarReader::new(stream);
        while let Some(h) = tar.next_header().map_err(UnpackError::Stream)? {
            u.entry(h, &mut tar)?;
        }
        // Read what follows the marker so a compressed stream's checksum is verified.
        let mut rest = tar.into_inner().take(MAX_TRAILING + 1);
        let trailing = io::copy(&mut rest, &mut io::sink())
            .map_err(|e| UnpackError::Stream(TarError::Io(e)))?;
        if trailing > MAX_TRAILING {
            return Err(UnpackError::TrailingData);
        }
        u.finish()?;
        fsat::rename_noreplace(&staging, dest).map_err(|source| {
            if source.raw_os_error() == Some(libc::EEXIST) {
                UnpackError::DestExists(dest.to_path_buf())
            } else {
                UnpackError::Staging {
                    path: dest.to_path_buf(),
                    op: "move the unpacked layer into place at",
                    source,
                }
            }
        })?;
        Ok(u.stats)
    })();
    if result.is_err() {
        if let Err(e) = std::fs::remove_dir_all(&staging) {
            tracing::warn!(path = %staging.display(), error = %e, "cannot remove staging directory");
        }
    }
    result
}

/// Creates a fresh staging directory beside `dest` (same filesystem, so the final rename is
/// atomic).
pub(crate) fn make_staging(dest: &Path) -> Result<PathBuf> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    if dest.symlink_metadata().is_ok() {
        return Err(UnpackError::DestExists(dest.to_path_buf()));
    }
    let name = dest.file_name().ok_or_else(|| UnpackError::Staging {
        path: dest.to_path_buf(),
        op: "destination has no file name:",
        source: io::Error::from(io::ErrorKind::InvalidInput),
    })?;
    let parent = dest.parent().unwrap_or_else(|| Path::new("."));
    let staging = parent.join(format!(
        ".{}.staging-{}-{}",
        name.to_string_lossy(),
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&staging)
        .map_err(|source| UnpackError::Staging {
            path: staging.clone(),
            op: "create staging directory",
            source,
        })?;
    Ok(staging)
}

use std::os::unix::fs::DirBuilderExt;

/// Metadata applied to directories once all entries are in (children change mtimes).
struct DirMeta {
    uid: u32,
    gid: u32,
    mode: u32,
    mtime: i64,
}

struct Unpacker<'o> {
    root: OwnedFd,
    opts: &'o UnpackOptions,
    stats: UnpackStats,
    dirs: BTreeMap<Vec<u8>, DirMeta>,
    total: u64,
}

/// Whether a layer may set this extended attribute.
fn xattr_allowed(name: &[u8]) -> bool {
    name.starts_with(b"user.")
        || name == b"security.capability"
        || name == b"system.posix_acl_access"
        || name == b"system.posix_acl_default"
}

impl Unpacker<'_> {
    fn entry<R: Read>(&mut self, h: Header, tar: &mut TarReader<R>) -> Result<()> {
        let entry = show(&h.path);
        self.stats.entries += 1;
        if self.stats.entries > self.opts.max_entries {
            return Err(UnpackError::TooManyEntries {
                limit: self.opts.max_entries,
            });
        }
        if h.path.contains(&0) || h.link.contains(&0) {
            return Err(UnpackError::NulInName { entry });
        }
        if let EntryKind::Other(f) = h.kind {
            return Err(UnpackError::UnsupportedEntry {
                entry,
                flag: char::from(f),
            });
        }
        if h.size > self.opts.max_entry_size {
            return Err(UnpackError::EntryTooLarge {
                entry,
                size: h.size,
                limit: self.opts.max_entry_size,
            });
        }
        self.total = self.total.saturating_add(h.size);
        if self.total > self.opts.max_total_size {
            return Err(UnpackError::TotalTooLarge {
                entry,
                limit: self.opts.max_total_size,
            });
        }
        let (Ok(uid), Ok(gid)) = (u32::try_from(h.uid), u32::try_from(h.gid)) else {
            return Err(UnpackError::Invalid {
                entry,
                why: "owner or group does not fit in 32 bits",
            });
        };
        let comps = normalize(&h.path).ok_or_else(|| UnpackError::Escapes {
            entry: entry.clone(),
        })?;
        let Some((leaf, parents)) = comps.split_last() else {
            if h.kind != EntryKind::Directory {
                return Err(UnpackError::Invalid {
                    entry,
                    why: "the layer root can only be a directory",
                });
            }
            self.dirs.insert(
                Vec::new(),
                DirMeta {
                    uid,
                    gid,
                    mode: h.mode,
                    mtime: h.mtime,
                },
            );
            return Ok(());
        };
        let io_err = |op| {
            let entry = entry.clone();
            move |source| UnpackError::Io { entry, op, source }
        };
        let parent = self.open_parent(parents, &entry)?;
        let p = parent.as_fd();
        if let Some(target) = leaf.strip_prefix(WHITEOUT_PREFIX) {
            return self.whiteout(p, parents, target, &entry);
        }
        let name = fsat::cstr(leaf).map_err(io_err("name"))?;
        let existing = fsat::lstat_at(p, &name).map_err(io_err("inspect existing entry"))?;
        let is_dir = |st: &libc::stat| st.st_mode & libc::S_IFMT == libc::S_IFDIR;
        if h.kind == EntryKind::Directory {
            let mut opaque = false;
            match existing {
                Some(st) if is_dir(&st) => {}
                Some(st) => {
                    // A directory that replaces a whiteout of this layer hides lower contents.
                    opaque = fsat::is_whiteout(&st);
                    fsat::remove_at(p, &name).map_err(io_err("remove existing entry"))?;
                    fsat::mkdir_at(p, &name, 0o700).map_err(io_err("create directory"))?;
                }
                None => fsat::mkdir_at(p, &name, 0o700).map_err(io_err("create directory"))?,
            }
            let dir = fsat::open_child_dir(p, &name).map_err(io_err("open directory"))?;
            if opaque {
                fsat::set_xattr(dir.as_fd(), &opaque_name(), b"y")
                    .map_err(io_err("mark directory opaque"))?;
            }
            self.set_xattrs(dir.as_fd(), &h, &entry)?;
            let rel = comps.join(&b'/');
            self.dirs.insert(
                rel,
                DirMeta {
                    uid,
                    gid,
                    mode: h.mode,
                    mtime: h.mtime,
                },
            );
            self.stats.dirs += 1;
            return Ok(());
        }
        let special_mode = match h.kind {
            EntryKind::CharDevice | EntryKind::BlockDevice if !self.opts.allow_devices => {
                tracing::warn!(entry = %entry, "skipping device node (devices are not allowed)");
                self.stats.skipped_devices += 1;
                return Ok(());
            }
            EntryKind::CharDevice => libc::S_IFCHR,
            EntryKind::BlockDevice => libc::S_IFBLK,
            EntryKind::Fifo => libc::S_IFIFO,
            _ => 0,
        };
        // A hard link's target is resolved before anything is replaced.
        let link_target = if h.kind == EntryKind::HardLink {
            Some(self.link_target(&h, &entry)?)
        } else {
            None
        };
        if existing.is_some() {
            fsat::remove_at(p, &name).map_err(io_err("remove existing entry"))?;
        }
        match h.kind {
            EntryKind::File => {
                let mut f = fsat::create_file(p, &name).map_err(io_err("create file"))?;
                copy_data(tar, &mut f, h.size, &entry)?;
                self.stats.bytes += h.size;
                self.stats.files += 1;
                self.finish_fd(f.as_fd(), &h, uid, gid, &entry)?;
            }
            EntryKind::HardLink => {
                let (tdir, tname) = link_target.ok_or_else(|| UnpackError::Invalid {
                    entry: entry.clone(),
                    why: "hard link without target",
                })?;
                fsat::link_at(tdir.as_fd(), &tname, p, &name)
                    .map_err(io_err("create hard link"))?;
                self.stats.hardlinks += 1;
            }
            EntryKind::Symlink => {
                if h.link.is_empty() {
                    return Err(UnpackError::Invalid {
                        entry,
                        why: "symlink with an empty target",
                    });
                }
                let target = fsat::cstr(&h.link).map_err(io_err("symlink target"))?;
                fsat::symlink_at(&target, p, &name).map_err(io_err("create symlink"))?;
                self.stats.skipped_xattrs += h.xattrs.len() as u64;
                self.finish_at(p, &name, &h, uid, gid, None, &entry)?;
                self.stats.symlinks += 1;
            }
            _ => {
                let dev = libc::makedev(h.dev_major, h.dev_minor);
                fsat::mknod_at(p, &name, special_mode | 0o600, dev)
                    .map_err(io_err("create node"))?;
                self.stats.skipped_xattrs += h.xattrs.len() as u64;
                self.finish_at(p, &name, &h, uid, gid, Some(h.mode), &entry)?;
                self.stats.special += 1;
            }
        }
        Ok(())
    }

    /// Opens (creating missing directories) the parent of an entry, beneath the root.
    fn open_parent(&self, parents: &[&[u8]], entry: &str) -> Result<OwnedFd> {
        let map = |e: io::Error, op| match e.raw_os_error() {
            Some(libc::ELOOP) => UnpackError::ThroughSymlink {
                entry: entry.to_string(),
            },
            Some(libc::EXDEV) => UnpackError::Escapes {
                entry: entry.to_string(),
            },
            Some(libc::ENOTDIR) => UnpackError::NotADirectory {
                entry: entry.to_string(),
            },
            _ => UnpackError::Io {
                entry: entry.to_string(),
                op,
                source: e,
            },
        };
        match fsat::open_dir_beneath(self.root.as_fd(), &parents.join(&b'/')) {
            Ok(fd) => return Ok(fd),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(map(e, "open parent directory")),
        }
        let mut cur = fsat::open_dir_beneath(self.root.as_fd(), b"")
            .map_err(|e| map(e, "open layer root"))?;
        for c in parents {
            let name = fsat::cstr(c).map_err(|e| map(e, "name"))?;
            cur = match fsat::open_dir_beneath(cur.as_fd(), c) {
                Ok(fd) => fd,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    fsat::mkdir_at(cur.as_fd(), &name, 0o755)
                        .map_err(|e| map(e, "create parent directory"))?;
                    fsat::open_dir_beneath(cur.as_fd(), c)
                        .map_err(|e| map(e, "open parent directory"))?
                }
                Err(e) => return Err(map(e, "open parent directory")),
            };
        }
        Ok(cur)
    }

    fn whiteout(
        &mut self,
        p: BorrowedFd<'_>,
        parents: &[&[u8]],
        target: &[u8],
        entry: &str,
    ) -> Result<()> {
        let io_err = |op| {
            move |source| UnpackError::Io {
                entry: entry.to_string(),
                op,
                source,
            }
        };
        let _ = parents;
        if target == &OPAQUE_MARKER[WHITEOUT_PREFIX.len()..] {
            let dir = fsat::open_child_dir(p, c".").map_err(io_err("open directory"))?;
            fsat::set_xattr(dir.as_fd(), &opaque_name(), b"y")
                .map_err(io_err("mark directory opaque"))?;
            self.stats.opaque_dirs += 1;
            return Ok(());
        }
        if target.starts_with(WHITEOUT_PREFIX) {
            // Other `.wh..wh.` names are aufs bookkeeping, meaningless here.
            tracing::warn!(entry = %entry, "skipping aufs metadata entry");
            return Ok(());
        }
        if target.is_empty() || target == b"." || target == b".." {
            return Err(UnpackError::BadWhiteout {
                entry: entry.to_string(),
            });
        }
        let name = fsat::cstr(target).map_err(io_err("name"))?;
        // A name this layer also adds hides the lower one by itself.
        if fsat::lstat_at(p, &name)
            .map_err(io_err("inspect whited-out name"))?
            .is_none()
        {
            fsat::mknod_at(p, &name, libc::S_IFCHR, 0).map_err(io_err("create whiteout"))?;
        }
        self.stats.whiteouts += 1;
        Ok(())
    }

    /// Resolves a hard link target: an earlier non-directory entry of this layer.
    fn link_target(&self, h: &Header, entry: &str) -> Result<(OwnedFd, CString)> {
        let target = show(&h.link);
        let outside = || UnpackError::HardLinkOutside {
            entry: entry.to_string(),
            target: target.clone(),
        };
        let missing = || UnpackError::HardLinkMissing {
            entry: entry.to_string(),
            target: target.clone(),
        };
        let comps = normalize(&h.link).ok_or_else(outside)?;
        let (leaf, parents) = comps.split_last().ok_or_else(missing)?;
        let dir =
            fsat::open_dir_beneath(self.root.as_fd(), &parents.join(&b'/')).map_err(|e| match e
                .raw_os_error()
            {
                Some(libc::EXDEV) | Some(libc::ELOOP) => outside(),
                _ => missing(),
            })?;
        let name = fsat::cstr(leaf).map_err(|_| missing())?;
        match fsat::lstat_at(dir.as_fd(), &name) {
            Ok(Some(st))
                if st.st_mode & libc::S_IFMT != libc::S_IFDIR && !fsat::is_whiteout(&st) =>
            {
                Ok((dir, name))
            }
            _ => Err(missing()),
        }
    }

    fn set_xattrs(&mut self, fd: BorrowedFd<'_>, h: &Header, entry: &str) -> Result<()> {
        for (k, v) in &h.xattrs {
            if !xattr_allowed(k) {
                tracing::warn!(entry = %entry, xattr = %show(k), "skipping extended attribute");
                self.stats.skipped_xattrs += 1;
                continue;
            }
            let name = fsat::cstr(k).map_err(|_| UnpackError::NulInName {
                entry: entry.to_string(),
            })?;
            fsat::set_xattr(fd, &name, v).map_err(|source| UnpackError::Io {
                entry: entry.to_string(),
                op: "set extended attribute",
                source,
            })?;
        }
        Ok(())
    }

    /// Owner, mode, then xattrs (chown drops security.capability), then times.
    fn finish_fd(
        &mut self,
        fd: BorrowedFd<'_>,
        h: &Header,
        uid: u32,
        gid: u32,
        entry: &str,
    ) -> Result<()> {
        let st = fsat::fstat(fd).map_err(|source| UnpackError::Io {
            entry: entry.to_string(),
            op: "stat",
            source,
        })?;
        let (uid, gid) = if self.opts.preserve_owners {
            (uid, gid)
        } else {
            (st.st_uid, st.st_gid)
        };
        fsat::set_meta_fd(fd, uid, gid, h.mode, h.mtime).map_err(|source| UnpackError::Io {
            entry: entry.to_string(),
            op: "set owner, mode and times",
            source,
        })?;
        self.set_xattrs(fd, h, entry)?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn finish_at(
        &self,
        p: BorrowedFd<'_>,
        name: &CString,
        h: &Header,
        uid: u32,
        gid: u32,
        mode: Option<u32>,
        entry: &str,
    ) -> Result<()> {
        let err = |op| {
            move |source| UnpackError::Io {
                entry: entry.to_string(),
                op,
                source,
            }
        };
        if self.opts.preserve_owners {
            fsat::chown_at(p, name, uid, gid).map_err(err("set owner"))?;
        }
        if let Some(mode) = mode {
            fsat::chmod_at(p, name, mode).map_err(err("set mode"))?;
        }
        fsat::utimes_at(p, name, h.mtime).map_err(err("set times"))
    }

    /// Applies directory metadata, deepest first, then the root's.
    fn finish(&mut self) -> Result<()> {
        self.dirs.entry(Vec::new()).or_insert(DirMeta {
            uid: 0,
            gid: 0,
            mode: 0o755,
            mtime: 0,
        });
        let mut dirs: Vec<_> = std::mem::take(&mut self.dirs).into_iter().collect();
        dirs.sort_by_key(|(p, _)| {
            std::cmp::Reverse(p.iter().filter(|&&b| b == b'/').count() + usize::from(!p.is_empty()))
        });
        for (rel, m) in dirs {
            let entry = show(&rel);
            let fd = match fsat::openat2_beneath(
                self.root.as_fd(),
                &fsat::cstr(if rel.is_empty() { b"." } else { &rel }).map_err(|_| {
                    UnpackError::NulInName {
                        entry: entry.clone(),
                    }
                })?,
                libc::O_RDONLY | libc::O_DIRECTORY,
            ) {
                Ok(fd) => fd,
                // Replaced by a later entry of another type.
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ENOENT | libc::ENOTDIR | libc::ELOOP)
                    ) =>
                {
                    continue
                }
                Err(source) => {
                    return Err(UnpackError::Io {
                        entry,
                        op: "open directory",
                        source,
                    })
                }
            };
            let st = fsat::fstat(fd.as_fd()).map_err(|source| UnpackError::Io {
                entry: entry.clone(),
                op: "stat",
                source,
            })?;
            let (uid, gid) = if self.opts.preserve_owners {
                (m.uid, m.gid)
            } else {
                (st.st_uid, st.st_gid)
            };
            fsat::set_meta_fd(fd.as_fd(), uid, gid, m.mode, m.mtime).map_err(|source| {
                UnpackError::Io {
                    entry,
                    op: "set directory owner, mode and times",
                    source,
                }
            })?;
        }
        Ok(())
    }
}

/// The xattr name marking an overlayfs opaque directory.
pub(crate) fn opaque_name() -> CString {
    CString::from(c"trusted.overlay.opaque")
}

/// Copies exactly `size` bytes of entry data into `out`, telling read errors (truncation,
/// corrupt compression) from write errors.
fn copy_data<R: Read>(
    tar: &mut TarReader<R>,
    out: &mut impl Write,
    size: u64,
    entry: &str,
) -> Result<()> {
    let mut data = tar.data();
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = size;
    while left > 0 {
        let n = match data.read(&mut buf) {
            Ok(0) => {
                return Err(UnpackError::Read {
                    entry: entry.to_string(),
                    source: io::Error::from(io::ErrorKind::UnexpectedEof),
                })
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(UnpackError::Read {
                    entry: entry.to_string(),
                    source,
                })
            }
        };
        out.write_all(&buf[..n]).map_err(|source| UnpackError::Io {
            entry: entry.to_string(),
            op: "write file data",
            source,
        })?;
        left -= n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_keeps_paths_inside() {
        assert_eq!(normalize(b"/etc/x").unwrap(), vec![&b"etc"[..], b"x"]);
        assert_eq!(normalize(b"./a/../b/").unwrap(), vec![&b"b"[..]]);
        assert!(normalize(b"a/../../x").is_none());
        assert!(normalize(b"../../etc/x").is_none());
        assert!(normalize(b"./").unwrap().is_empty());
    }
}
