//! Creating one tar entry beneath the staging root (the unpacker's inner loop).

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use super::{
    normalize, opaque_name, show, RootMeta, UnpackError, UnpackOptions, UnpackStats,
    LAYER_ROOT_MODE, MAX_NAME_LEN, MAX_PATH_LEN, OPAQUE_MARKER, WHITEOUT_PREFIX,
};
use crate::fsat;
use crate::space;
use crate::tar::{EntryKind, Header, TarReader};

type Result<T> = std::result::Result<T, UnpackError>;

/// Bytes written between two looks at the free space of the destination's file system.
const CHECK_EVERY_BYTES: u64 = 8 << 20;
/// Entries created between two looks at the free space (each takes an inode).
const CHECK_EVERY_ENTRIES: u64 = 1024;

/// Metadata applied to directories once all entries are in (children change mtimes).
pub(super) struct DirMeta {
    uid: u32,
    gid: u32,
    mode: u32,
    mtime: i64,
}

pub(super) struct Unpacker<'o> {
    pub(super) root: OwnedFd,
    pub(super) opts: &'o UnpackOptions,
    pub(super) stats: UnpackStats,
    pub(super) dirs: BTreeMap<Vec<u8>, DirMeta>,
    pub(super) total: u64,
    /// Bytes of names held in `dirs`.
    pub(super) metadata: u64,
    /// Bytes written since free space was last checked.
    pub(super) unchecked_bytes: u64,
    /// Entries created since free space was last checked.
    pub(super) unchecked_entries: u64,
}

/// Refuses a path with a component or a total length that Linux cannot use.
fn check_lengths(comps: &[&[u8]], entry: &str) -> Result<()> {
    if let Some(len) = comps
        .iter()
        .map(|c| c.len())
        .filter(|&l| l > MAX_NAME_LEN)
        .max()
    {
        return Err(UnpackError::NameTooLong {
            entry: entry.to_string(),
            len,
        });
    }
    let len = comps.iter().map(|c| c.len() + 1).sum::<usize>();
    if len > MAX_PATH_LEN {
        return Err(UnpackError::PathTooLong {
            entry: entry.to_string(),
            len,
        });
    }
    Ok(())
}

/// Whether a layer may set this extended attribute.
fn xattr_allowed(name: &[u8]) -> bool {
    name.starts_with(b"user.")
        || name == b"security.capability"
        || name == b"system.posix_acl_access"
        || name == b"system.posix_acl_default"
}

impl Unpacker<'_> {
    pub(super) fn entry<R: Read>(&mut self, h: Header, tar: &mut TarReader<R>) -> Result<()> {
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
        check_lengths(&comps, &entry)?;
        let Some((leaf, parents)) = comps.split_last() else {
            if h.kind != EntryKind::Directory {
                return Err(UnpackError::Invalid {
                    entry,
                    why: "the layer root can only be a directory",
                });
            }
            // The root is the store's directory: the archive's wishes are only recorded.
            self.stats.root = Some(RootMeta {
                mode: h.mode,
                uid,
                gid,
                mtime: h.mtime,
            });
            return Ok(());
        };
        if h.kind == EntryKind::Symlink && h.link.len() > MAX_PATH_LEN {
            return Err(UnpackError::PathTooLong {
                entry,
                len: h.link.len(),
            });
        }
        self.room(&entry, h.size)?;
        let io_err = |op| {
            let entry = entry.clone();
            move |source| UnpackError::Io { entry, op, source }
        };
        let parent = self.open_parent(parents, &entry)?;
        let p = parent.as_fd();
        if let Some(target) = leaf.strip_prefix(WHITEOUT_PREFIX) {
            return self.whiteout(p, target, &entry, h.mtime);
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
            self.metadata = self.metadata.saturating_add(rel.len() as u64 + 32);
            if self.metadata > self.opts.max_metadata {
                return Err(UnpackError::MetadataTooLarge {
                    entry,
                    limit: self.opts.max_metadata,
                });
            }
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

    /// Refuses an entry of `bytes` when the destination's file system would keep less free
    /// than the options ask. Looked at every few MiB or entries, and before every large file.
    fn room(&mut self, entry: &str, bytes: u64) -> Result<()> {
        self.unchecked_bytes = self.unchecked_bytes.saturating_add(bytes);
        self.unchecked_entries += 1;
        if self.unchecked_bytes < CHECK_EVERY_BYTES && self.unchecked_entries < CHECK_EVERY_ENTRIES
        {
            return Ok(());
        }
        self.unchecked_bytes = 0;
        self.unchecked_entries = 0;
        let free = space::free_space_fd(self.root.as_fd()).map_err(|source| UnpackError::Io {
            entry: entry.to_string(),
            op: "look at the free space of the store's file system",
            source,
        })?;
        let s = &self.opts.space;
        if free.bytes < bytes.saturating_add(s.min_free_bytes)
            || free.inodes < s.min_free_inodes.saturating_add(1)
        {
            return Err(UnpackError::NoSpace {
                entry: entry.to_string(),
                needed: bytes,
                free_bytes: free.bytes,
                free_inodes: free.inodes,
                reserve_bytes: s.min_free_bytes,
                reserve_inodes: s.min_free_inodes,
            });
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
        target: &[u8],
        entry: &str,
        mtime: i64,
    ) -> Result<()> {
        let io_err = |op| {
            move |source| UnpackError::Io {
                entry: entry.to_string(),
                op,
                source,
            }
        };
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
            // The entry's time, so that the same layer always unpacks to the same tree.
            fsat::utimes_at(p, &name, mtime).map_err(io_err("set whiteout time"))?;
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
        check_lengths(&comps, entry)?;
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

    /// Applies directory metadata, deepest first; the root gets [`LAYER_ROOT_MODE`], time 0
    /// and stays owned by the caller, whatever the archive said.
    pub(super) fn finish(&mut self) -> Result<()> {
        let own = fsat::fstat(self.root.as_fd()).map_err(|source| UnpackError::Io {
            entry: "./".into(),
            op: "stat the layer root",
            source,
        })?;
        self.dirs.insert(
            Vec::new(),
            DirMeta {
                uid: own.st_uid,
                gid: own.st_gid,
                mode: LAYER_ROOT_MODE,
                mtime: 0,
            },
        );
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
            let (uid, gid) = if self.opts.preserve_owners || rel.is_empty() {
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
