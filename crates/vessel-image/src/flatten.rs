//! Applying unpacked layers (overlayfs form) in order into one plain tree, with the same
//! result an overlayfs mount of the stacked layers shows: a whiteout device removes the name
//! below it, an opaque directory hides everything below it, a directory over a directory
//! merges, anything else replaces.

use std::collections::HashMap;
use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use crate::fsat;
use crate::unpack::{make_staging, opaque_name, UnpackError};

/// Why flattening failed.
#[derive(Debug, thiserror::Error)]
pub enum FlattenError {
    /// The destination is already there.
    #[error("destination {0} already exists; flatten into a new directory")]
    DestExists(PathBuf),
    /// Reading a layer or writing the tree failed.
    #[error("{op} {path}")]
    Io {
        /// The file (layer directory joined with the entry path, or the destination).
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// Cause.
        #[source]
        source: io::Error,
    },
}

type Result<T> = std::result::Result<T, FlattenError>;

/// Applies `layers_bottom_to_top` (directories written by [`crate::unpack_layer`]) in order
/// into `dest`, which must not exist. On error nothing is left behind.
pub fn flatten(layers_bottom_to_top: &[&Path], dest: &Path) -> Result<()> {
    let staging = make_staging(dest).map_err(|e| match e {
        UnpackError::DestExists(p) => FlattenError::DestExists(p),
        UnpackError::Staging { path, op, source } => FlattenError::Io { path, op, source },
        other => FlattenError::Io {
            path: dest.to_path_buf(),
            op: "prepare",
            source: io::Error::other(other.to_string()),
        },
    })?;
    let result = (|| {
        let dst = fsat::open_dir_path(&staging).map_err(|source| FlattenError::Io {
            path: staging.clone(),
            op: "open",
            source,
        })?;
        for layer in layers_bottom_to_top {
            let src = fsat::open_dir_path(layer).map_err(|source| FlattenError::Io {
                path: layer.to_path_buf(),
                op: "open layer",
                source,
            })?;
            let mut a = Apply {
                layer,
                root: dst.as_fd(),
                links: HashMap::new(),
            };
            // An opaque root hides every layer below.
            let opaque_root = fsat::get_xattr(src.as_fd(), &opaque_name())
                .map_err(a.err(b"", "read opaque xattr"))?
                .is_some_and(|v| v == b"y");
            if opaque_root {
                fsat::clear_dir(dst.as_fd()).map_err(a.err(b"", "clear opaque root"))?;
            }
            a.dir(src.as_fd(), dst.as_fd(), &mut Vec::new())?;
        }
        fsat::rename_noreplace(&staging, dest).map_err(|source| FlattenError::Io {
            path: dest.to_path_buf(),
            op: "move the flattened tree into place at",
            source,
        })
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    result
}

/// One layer being applied; `links` maps a source inode to where it was first written.
struct Apply<'a> {
    layer: &'a Path,
    root: BorrowedFd<'a>,
    links: HashMap<(u64, u64), Vec<u8>>,
}

impl Apply<'_> {
    fn err(&self, rel: &[u8], op: &'static str) -> impl FnOnce(io::Error) -> FlattenError {
        let path = self.layer.join(String::from_utf8_lossy(rel).as_ref());
        move |source| FlattenError::Io { path, op, source }
    }

    /// Applies the contents of `src` onto `dst`, then `src`'s own metadata to `dst`.
    fn dir(&mut self, src: BorrowedFd<'_>, dst: BorrowedFd<'_>, rel: &mut Vec<u8>) -> Result<()> {
        for name in fsat::list_dir(src).map_err(self.err(rel, "list"))? {
            let len = rel.len();
            if !rel.is_empty() {
                rel.push(b'/');
            }
            rel.extend_from_slice(name.to_bytes());
            self.entry(src, dst, &name, rel)?;
            rel.truncate(len);
        }
        copy_meta_dir(src, dst).map_err(self.err(rel, "copy directory metadata"))
    }

    fn entry(
        &mut self,
        src: BorrowedFd<'_>,
        dst: BorrowedFd<'_>,
        name: &CStr,
        rel: &mut Vec<u8>,
    ) -> Result<()> {
        let Some(st) = fsat::lstat_at(src, name).map_err(self.err(rel, "stat"))? else {
            return Ok(());
        };
        let existing = fsat::lstat_at(dst, name).map_err(self.err(rel, "stat destination"))?;
        let fmt = st.st_mode & libc::S_IFMT;
        if fsat::is_whiteout(&st) {
            return fsat::remove_at(dst, name).map_err(self.err(rel, "remove whited-out entry"));
        }
        if fmt == libc::S_IFDIR {
            let s = fsat::open_child_dir(src, name).map_err(self.err(rel, "open directory"))?;
            let opaque = fsat::get_xattr(s.as_fd(), &opaque_name())
                .map_err(self.err(rel, "read opaque xattr"))?
                .is_some_and(|v| v == b"y");
            match existing {
                Some(e) if e.st_mode & libc::S_IFMT == libc::S_IFDIR => {
                    if opaque {
                        let d = fsat::open_child_dir(dst, name)
                            .map_err(self.err(rel, "open destination"))?;
                        fsat::clear_dir(d.as_fd())
                            .map_err(self.err(rel, "clear opaque directory"))?;
                    }
                }
                Some(_) => {
                    fsat::remove_at(dst, name).map_err(self.err(rel, "replace"))?;
                    fsat::mkdir_at(dst, name, 0o700).map_err(self.err(rel, "create directory"))?;
                }
                None => {
                    fsat::mkdir_at(dst, name, 0o700).map_err(self.err(rel, "create directory"))?
                }
            }
            let d = fsat::open_child_dir(dst, name).map_err(self.err(rel, "open destination"))?;
            return self.dir(s.as_fd(), d.as_fd(), rel);
        }
        if existing.is_some() {
            fsat::remove_at(dst, name).map_err(self.err(rel, "replace"))?;
        }
        let key = (st.st_dev, st.st_ino);
        if st.st_nlink > 1 && fmt != libc::S_IFDIR {
            if let Some(first) = self.links.get(&key) {
                if link_beneath(self.root, dst, name, first).is_ok() {
                    return Ok(());
                }
            }
            self.links.insert(key, rel.clone());
        }
        match fmt {
            libc::S_IFREG => {
                let mut from =
                    fsat::open_child_file(src, name).map_err(self.err(rel, "open file"))?;
                let mut to = fsat::create_file(dst, name).map_err(self.err(rel, "create file"))?;
                io::copy(&mut from, &mut to).map_err(self.err(rel, "copy file"))?;
                copy_meta_fd(from.as_fd(), to.as_fd(), &st).map_err(self.err(rel, "copy metadata"))
            }
            libc::S_IFLNK => {
                let target = fsat::readlink_at(src, name).map_err(self.err(rel, "read symlink"))?;
                let target = fsat::cstr(&target).map_err(self.err(rel, "read symlink"))?;
                fsat::symlink_at(&target, dst, name).map_err(self.err(rel, "create symlink"))?;
                fsat::chown_at(dst, name, st.st_uid, st.st_gid)
                    .map_err(self.err(rel, "set owner"))?;
                fsat::utimes_at(dst, name, st.st_mtime).map_err(self.err(rel, "set times"))
            }
            _ => {
                fsat::mknod_at(dst, name, fmt | 0o600, st.st_rdev)
                    .map_err(self.err(rel, "create node"))?;
                fsat::chown_at(dst, name, st.st_uid, st.st_gid)
                    .map_err(self.err(rel, "set owner"))?;
                fsat::chmod_at(dst, name, st.st_mode & 0o7777)
                    .map_err(self.err(rel, "set mode"))?;
                fsat::utimes_at(dst, name, st.st_mtime).map_err(self.err(rel, "set times"))
            }
        }
    }
}

/// Links `name` in `dst` to `first`, a path relative to the tree `root` written earlier.
fn link_beneath(
    root: BorrowedFd<'_>,
    dst: BorrowedFd<'_>,
    name: &CStr,
    first: &[u8],
) -> io::Result<()> {
    let (parent, leaf) = match first.iter().rposition(|&b| b == b'/') {
        Some(i) => (&first[..i], &first[i + 1..]),
        None => (&b""[..], first),
    };
    let tdir = fsat::open_dir_beneath(root, parent)?;
    fsat::link_at(tdir.as_fd(), &fsat::cstr(leaf)?, dst, name)
}

/// Copies the xattrs a tree may carry (not overlayfs' own).
fn copy_xattrs(src: BorrowedFd<'_>, dst: BorrowedFd<'_>) -> io::Result<()> {
    for name in fsat::list_xattrs(src)? {
        if name.starts_with(b"trusted.overlay.") {
            continue;
        }
        let c = fsat::cstr(&name)?;
        if let Some(v) = fsat::get_xattr(src, &c)? {
            fsat::set_xattr(dst, &c, &v)?;
        }
    }
    Ok(())
}

fn copy_meta_fd(src: BorrowedFd<'_>, dst: BorrowedFd<'_>, st: &libc::stat) -> io::Result<()> {
    // Owner first (chown drops security.capability), xattrs after.
    fsat::set_meta_fd(dst, st.st_uid, st.st_gid, st.st_mode & 0o7777, st.st_mtime)?;
    copy_xattrs(src, dst)
}

fn copy_meta_dir(src: BorrowedFd<'_>, dst: BorrowedFd<'_>) -> io::Result<()> {
    let st = fsat::fstat(src)?;
    let s = fsat::openat2_beneath(src, c".", libc::O_RDONLY | libc::O_DIRECTORY)?;
    let d = fsat::openat2_beneath(dst, c".", libc::O_RDONLY | libc::O_DIRECTORY)?;
    copy_xattrs(s.as_fd(), d.as_fd())?;
    fsat::set_meta_fd(
        d.as_fd(),
        st.st_uid,
        st.st_gid,
        st.st_mode & 0o7777,
        st.st_mtime,
    )
}
