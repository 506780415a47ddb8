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
pub fn copy_mapped(src: &Path, dst: &Path, map: &dyn Fn(u32) -> io::Result<u32>) -> io::Result<()> {
    fs::create_dir(dst)?;
    let top = fs::symlink_metadata(src)?;
    std::os::unix::fs::lchown(dst, Some(map(top.uid())?), Some(map(top.gid())?))?;
    fs::set_permissions(dst, fs::Permissions::from_mode(top.mode() & 0o7777))?;
    copy_xattrs(src, dst)?;
    for rel in walk(src)? {
        let (s, d) = (src.join(&rel), dst.join(&rel));
        let md = fs::symlink_metadata(&s)?;
        let ft = md.file_type();
        if ft.is_dir() {
            fs::create_dir(&d)?;
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&s)?, &d)?;
        } else if ft.is_file() {
            fs::copy(&s, &d)?;
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

    #[test]
    fn fingerprint_is_stable_and_sensitive() {
        let d = std::env::temp_dir().join(format!("vessel-tree-{}", uuid::Uuid::new_v4()));
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
        let dst = d.with_extension("mapped");
        copy_mapped(&d, &dst, &|id| Ok(id + 1_000_000)).unwrap();
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
        fs::remove_dir_all(&d).unwrap();
        fs::remove_dir_all(&dst).unwrap();
    }
}
