//! File-tree helpers for images: a content fingerprint and a uid/gid-shifted copy.

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

/// Copies the tree at `src` to `dst` (which must not exist), adding `shift` to every owner
/// uid and gid, so that a user-namespaced container whose root maps to host uid `shift` sees
/// the files as its own.
pub fn copy_shifted(src: &Path, dst: &Path, shift: u32) -> io::Result<()> {
    fs::create_dir(dst)?;
    let shifted = |id: u32| {
        id.checked_add(shift)
            .ok_or_else(|| io::Error::other("id overflow"))
    };
    let top = fs::symlink_metadata(src)?;
    std::os::unix::fs::lchown(dst, Some(shifted(top.uid())?), Some(shifted(top.gid())?))?;
    fs::set_permissions(dst, fs::Permissions::from_mode(top.mode() & 0o7777))?;
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
        } else {
            // Device nodes, fifos and sockets do not belong in images: the runtime creates
            // the devices a container needs.
            continue;
        }
        std::os::unix::fs::lchown(&d, Some(shifted(md.uid())?), Some(shifted(md.gid())?))?;
        if !ft.is_symlink() {
            // After chown, which clears set-id bits.
            fs::set_permissions(&d, fs::Permissions::from_mode(md.mode() & 0o7777))?;
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

        let dst = d.with_extension("shifted");
        copy_shifted(&d, &dst, 1_000_000).unwrap();
        let md = fs::symlink_metadata(dst.join("a/b/f")).unwrap();
        assert_eq!((md.uid(), md.gid()), (1_000_000, 1_000_000));
        assert_eq!(fs::read(dst.join("a/b/f")).unwrap(), b"hellO");
        assert_eq!(fs::read_link(dst.join("a/l")).unwrap(), Path::new("/x"));
        fs::remove_dir_all(&d).unwrap();
        fs::remove_dir_all(&dst).unwrap();
    }
}
