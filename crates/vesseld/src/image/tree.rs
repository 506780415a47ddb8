//! File-tree helpers for images: a content fingerprint and a copy with owners mapped.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Every path under `root`, parents before children, in a stable order.
fn walk(root: &Path) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let mut names: Vec<_> = fs::read_dir(root.join(&rel))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()?;
        names.sort();
        for name in names.into_iter().rev() {
            let child = rel.join(name);
            if fs::symlink_metadata(root.join(&child))?.is_dir() {
                stack.push(child.clone());
            }
            out.push(child);
        }
    }
    out.sort();
    Ok(out)
}

/// SHA-256 over every entry's path, type, mode, owner and content (or link target), so the
/// same tree always has the same fingerprint and any change gives another.
pub fn fingerprint(root: &Path) -> io::Result<(String, u64)> {
    let mut h = Sha256::new();
    let mut size = 0u64;
    for rel in walk(root)? {
        let p = root.join(&rel);
        let md = fs::symlink_metadata(&p)?;
        h.update(rel.as_os_str().as_encoded_bytes());
        h.update(format!("\0{:o}\0{}\0{}\0", md.mode(), md.uid(), md.gid()).as_bytes());
        let ft = md.file_type();
        if ft.is_symlink() {
            h.update(fs::read_link(&p)?.as_os_str().as_encoded_bytes());
        } else if ft.is_file() {
            size += md.len();
            let mut f = fs::File::open(&p)?;
            let mut buf = vec![0u8; 1 << 16];
            loop {
                let n = f.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
        }
        h.update(b"\n");
    }
    Ok((hex::encode(h.finalize()), size))
}

/// Copies the tree at `src` to `dst` (which must not exist), mapping every owner through
/// `map`. Overlayfs whiteouts (0:0 character devices) and the xattrs overlayfs and file
/// capabilities use are kept; other device nodes, fifos and sockets are left out (the runtime
/// makes the devices a container needs).
///
/// The copy takes no more room than the tree does: a file's holes stay holes, and a file
/// linked under several names is one file linked under the same names. Before anything is
/// copied, the room the tree takes (its allocated blocks and inodes) is checked against the
/// free room of `dst`'s file system, which must keep `keep` free afterwards.
pub fn copy_mapped(
    src: &Path,
    dst: &Path,
    map: &dyn Fn(u32) -> io::Result<u32>,
    keep: &vessel_image::SpaceLimits,
) -> io::Result<()> {
    let entries = walk(src)?;
    check_room(src, &entries, dst, keep)?;
    fs::create_dir(dst)?;
    let top = fs::symlink_metadata(src)?;
    std::os::unix::fs::lchown(dst, Some(map(top.uid())?), Some(map(top.gid())?))?;
    fs::set_permissions(dst, fs::Permissions::from_mode(top.mode() & 0o7777))?;
    copy_xattrs(src, dst)?;
    let mut linked: std::collections::HashMap<(u64, u64), PathBuf> = Default::default();
    for rel in entries {
        let (s, d) = (src.join(&rel), dst.join(&rel));
        let md = fs::symlink_metadata(&s)?;
        let ft = md.file_type();
        if ft.is_dir() {
            fs::create_dir(&d)?;
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&s)?, &d)?;
        } else if ft.is_file() && md.nlink() > 1 && linked.contains_key(&(md.dev(), md.ino())) {
            // Owner, mode and xattrs are the first name's.
            fs::hard_link(&linked[&(md.dev(), md.ino())], &d)?;
            continue;
        } else if ft.is_file() {
            copy_sparse(&s, &d)?;
            if md.nlink() > 1 {
                linked.insert((md.dev(), md.ino()), d.clone());
            }
        } else if is_whiteout(&md) {
            nix::sys::stat::mknod(
                &d,
                nix::sys::stat::SFlag::S_IFCHR,
                nix::sys::stat::Mode::from_bits_truncate(0o000),
                0,
            )?;
        } else {
            continue;
        }
        std::os::unix::fs::lchown(&d, Some(map(md.uid())?), Some(map(md.gid())?))?;
        if !ft.is_symlink() {
            // After chown, which clears set-id bits.
            fs::set_permissions(&d, fs::Permissions::from_mode(md.mode() & 0o7777))?;
            copy_xattrs(&s, &d)?;
        }
    }
    Ok(())
}

/// Refuses a copy of `entries` (under `src`) into `dst`'s file system that would leave it with
/// less than `keep` free.
fn check_room(
    src: &Path,
    entries: &[PathBuf],
    dst: &Path,
    keep: &vessel_image::SpaceLimits,
) -> io::Result<()> {
    let mut seen = std::collections::HashSet::new();
    let (mut bytes, mut inodes) = (0u64, 1u64);
    for rel in entries {
        let md = fs::symlink_metadata(src.join(rel))?;
        if md.nlink() > 1 && !md.is_dir() && !seen.insert((md.dev(), md.ino())) {
            continue;
        }
        bytes = bytes.saturating_add(md.blocks().saturating_mul(512));
        inodes += 1;
    }
    let parent = dst.parent().unwrap_or(dst);
    let free = vessel_image::space::free_space(parent)?;
    if free.bytes.saturating_sub(bytes) < keep.min_free_bytes
        || free.bytes < bytes
        || free.inodes.saturating_sub(inodes) < keep.min_free_inodes
        || free.inodes < inodes
    {
        return Err(io::Error::new(
            io::ErrorKind::StorageFull,
            format!(
                "the copy takes {bytes} bytes in {inodes} inodes; the store's file system has \
                 {} bytes and {} inodes free and keeps {} bytes and {} inodes free: free room \
                 in the store (or in the instance) first",
                free.bytes, free.inodes, keep.min_free_bytes, keep.min_free_inodes
            ),
        ));
    }
    Ok(())
}

/// Copies a regular file's data, leaving its holes holes (`SEEK_DATA`/`SEEK_HOLE`).
fn copy_sparse(src: &Path, dst: &Path) -> io::Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    use std::os::fd::AsRawFd;
    let mut from = fs::File::open(src)?;
    let mut to = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dst)?;
    let len = from.metadata()?.len();
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    while at < len {
        // SAFETY: lseek on a descriptor `from` owns.
        let data = unsafe { libc::lseek(from.as_raw_fd(), at as i64, libc::SEEK_DATA) };
        if data < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENXIO) {
                break; // only a hole is left
            }
            return Err(e);
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(from.as_raw_fd(), data, libc::SEEK_HOLE) };
        if hole < 0 {
            return Err(io::Error::last_os_error());
        }
        let (start, end) = (data as u64, (hole as u64).min(len));
        from.seek(SeekFrom::Start(start))?;
        to.seek(SeekFrom::Start(start))?;
        let mut left = end.saturating_sub(start);
        while left > 0 {
            let want = left.min(buf.len() as u64) as usize;
            let n = from.read(&mut buf[..want])?;
            if n == 0 {
                break; // shrunk meanwhile
            }
            to.write_all(&buf[..n])?;
            left -= n as u64;
        }
        at = end.max(start + 1);
    }
    to.set_len(len)?;
    Ok(())
}

/// Whether a file is an overlayfs whiteout: a character device with device number 0:0.
pub fn is_whiteout(md: &fs::Metadata) -> bool {
    use std::os::unix::fs::FileTypeExt;
    md.file_type().is_char_device() && md.rdev() == 0
}

/// Extended attributes that carry meaning in a layer.
const KEPT_XATTRS: &[&str] = &["trusted.overlay.opaque", "security.capability"];

fn copy_xattrs(src: &Path, dst: &Path) -> io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let cs = CString::new(src.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let cd = CString::new(dst.as_os_str().as_bytes()).map_err(io::Error::other)?;
    for name in KEPT_XATTRS {
        let cn = CString::new(*name).map_err(io::Error::other)?;
        let mut buf = [0u8; 256];
        // SAFETY: lgetxattr writes at most buf.len() bytes into buf; the strings are
        // NUL-terminated and alive for the call.
        let n = unsafe {
            libc::lgetxattr(cs.as_ptr(), cn.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
        };
        if n < 0 {
            continue; // absent (ENODATA) or unsupported: nothing to copy
        }
        // SAFETY: lsetxattr reads n bytes from buf, which lgetxattr filled; the strings are
        // NUL-terminated and alive for the call.
        let rc = unsafe {
            libc::lsetxattr(cd.as_ptr(), cn.as_ptr(), buf.as_ptr().cast(), n as usize, 0)
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch directory under the temporary directory and its copy beside it (`name.copy`),
    /// removed when dropped, also when the test fails.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new() -> Self {
            let d = std::env::temp_dir().join(format!("vessel-tree-{}", uuid::Uuid::new_v4()));
            fs::create_dir_all(&d).unwrap();
            Self(d)
        }
        fn copy(&self) -> PathBuf {
            self.0.with_extension("copy")
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
            let _ = fs::remove_dir_all(self.copy());
        }
    }

    #[test]
    fn fingerprint_is_stable_and_sensitive() {
        let scratch = Scratch::new();
        let d = scratch.0.clone();
        fs::create_dir_all(d.join("a/b")).unwrap();
        fs::write(d.join("a/b/f"), b"hello").unwrap();
        std::os::unix::fs::symlink("/x", d.join("a/l")).unwrap();
        let (f1, size) = fingerprint(&d).unwrap();
        assert_eq!(size, 5);
        assert_eq!(fingerprint(&d).unwrap().0, f1);
        fs::write(d.join("a/b/f"), b"hellO").unwrap();
        assert_ne!(fingerprint(&d).unwrap().0, f1);

        // A whiteout and an opaque directory, as overlayfs and imported layers have them.
        nix::sys::stat::mknod(
            &d.join("a/gone"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::empty(),
            0,
        )
        .unwrap();
        let opaque = std::ffi::CString::new(d.join("a/b").to_str().unwrap()).unwrap();
        // SAFETY: the path and name are NUL-terminated; the value is one byte long.
        let rc = unsafe {
            libc::lsetxattr(
                opaque.as_ptr(),
                c"trusted.overlay.opaque".as_ptr(),
                b"y".as_ptr().cast(),
                1,
                0,
            )
        };
        assert_eq!(
            rc, 0,
            "setting an opaque xattr needs root on a file system with xattrs"
        );
        let dst = scratch.copy();
        let keep = vessel_image::SpaceLimits {
            min_free_bytes: 0,
            min_free_inodes: 0,
            ..Default::default()
        };
        copy_mapped(&d, &dst, &|id| Ok(id + 1_000_000), &keep).unwrap();
        assert!(is_whiteout(
            &fs::symlink_metadata(dst.join("a/gone")).unwrap()
        ));
        let copied = std::ffi::CString::new(dst.join("a/b").to_str().unwrap()).unwrap();
        let mut v = [0u8; 4];
        // SAFETY: lgetxattr writes at most 4 bytes into v; the strings are NUL-terminated.
        let n = unsafe {
            libc::lgetxattr(
                copied.as_ptr(),
                c"trusted.overlay.opaque".as_ptr(),
                v.as_mut_ptr().cast(),
                4,
            )
        };
        assert_eq!(&v[..n as usize], b"y");
        let md = fs::symlink_metadata(dst.join("a/b/f")).unwrap();
        assert_eq!((md.uid(), md.gid()), (1_000_000, 1_000_000));
        assert_eq!(fs::read(dst.join("a/b/f")).unwrap(), b"hellO");
        assert_eq!(fs::read_link(dst.join("a/l")).unwrap(), Path::new("/x"));
    }

    /// Holes stay holes, hard links stay links, and a copy the file system has no room for is
    /// refused before anything is made.
    #[test]
    fn a_copy_takes_the_room_of_the_tree() {
        use std::io::{Seek, SeekFrom, Write};
        let scratch = Scratch::new();
        let d = scratch.0.clone();
        fs::create_dir_all(d.join("a")).unwrap();
        // 4 GiB long, 8 KiB of data.
        let mut f = fs::File::create(d.join("a/sparse")).unwrap();
        f.seek(SeekFrom::Start(1 << 31)).unwrap();
        f.write_all(&[7u8; 4096]).unwrap();
        f.set_len((4 << 30) - 4096).unwrap();
        f.seek(SeekFrom::End(0)).unwrap();
        f.write_all(&[9u8; 4096]).unwrap();
        drop(f);
        fs::write(d.join("a/h1"), vec![1u8; 1 << 20]).unwrap();
        fs::hard_link(d.join("a/h1"), d.join("a/h2")).unwrap();
        fs::hard_link(d.join("a/h1"), d.join("h3")).unwrap();
        let dst = scratch.copy();
        let none = vessel_image::SpaceLimits {
            min_free_bytes: 0,
            min_free_inodes: 0,
            ..Default::default()
        };
        copy_mapped(&d, &dst, &Ok, &none).unwrap();
        let md = fs::metadata(dst.join("a/sparse")).unwrap();
        assert_eq!(md.len(), 4 << 30);
        assert!(
            md.blocks() * 512 <= 1 << 20,
            "{} bytes allocated",
            md.blocks() * 512
        );
        let mut f = fs::File::open(dst.join("a/sparse")).unwrap();
        let mut at = |offset: u64| {
            let mut b = [0u8; 2];
            f.seek(SeekFrom::Start(offset)).unwrap();
            f.read_exact(&mut b).unwrap();
            b
        };
        assert_eq!(at(0), [0, 0]);
        assert_eq!(at((1 << 31) + 4094), [7, 7]);
        assert_eq!(at((1 << 31) + 4095), [7, 0]);
        assert_eq!(at((4 << 30) - 2), [9, 9]);
        let inode = |p: &str| fs::metadata(dst.join(p)).unwrap().ino();
        assert_eq!(inode("a/h1"), inode("a/h2"));
        assert_eq!(inode("a/h1"), inode("h3"));
        assert_eq!(fs::metadata(dst.join("h3")).unwrap().nlink(), 3);
        assert_eq!(fs::read(dst.join("h3")).unwrap(), vec![1u8; 1 << 20]);
        fs::remove_dir_all(&dst).unwrap();

        // All but 1 MiB kept free, less than the tree takes: nothing is made.
        let free = vessel_image::space::free_space(&std::env::temp_dir()).unwrap();
        let keep = vessel_image::SpaceLimits {
            min_free_bytes: free.bytes - (1 << 20),
            min_free_inodes: 0,
            ..Default::default()
        };
        let err = copy_mapped(&d, &dst, &Ok, &keep).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::StorageFull, "{err}");
        assert!(err.to_string().contains("free room"), "{err}");
        assert!(!dst.exists());
    }
}
