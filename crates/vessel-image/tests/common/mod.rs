//! Helpers shared by the integration tests: temporary directories, overlay mounts, tree
//! snapshots and tar building. Everything cleans up on drop, also when a test fails.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A directory removed (after unmounting anything below it) on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "vessel-image-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).expect("create temp dir");
        Self(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        unmount_below(&self.0);
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Lazily unmounts every mount at or below `dir`, deepest first.
pub fn unmount_below(dir: &Path) {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut points: Vec<String> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| p.replace("\\040", " "))
        .filter(|p| Path::new(p).starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        if let Ok(c) = CString::new(p) {
            // SAFETY: valid path; a lazy unmount of a test's own mount.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

/// Fails with a message naming the Debian package when a tool is missing.
pub fn require_tool(tool: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "`{tool}` is missing: install the Debian package `{package}` (apt-get install {package})"
    );
}

pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "these tests mount overlays and create devices: run them as root"
    );
}

/// A read-only overlay of `lowers` (top first) mounted at `target`, unmounted on drop.
pub struct OverlayMount(PathBuf);

impl OverlayMount {
    pub fn new(lowers_top_first: &[&Path], target: &Path) -> Self {
        fs::create_dir_all(target).expect("create mount point");
        let lower = lowers_top_first
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":");
        let opts = CString::new(format!("lowerdir={lower}")).expect("options");
        let t = CString::new(target.as_os_str().as_bytes()).expect("target");
        // SAFETY: valid NUL-terminated strings; a read-only overlay mount.
        let r = unsafe {
            libc::mount(
                c"overlay".as_ptr(),
                t.as_ptr(),
                c"overlay".as_ptr(),
                libc::MS_RDONLY,
                opts.as_ptr().cast(),
            )
        };
        assert_eq!(r, 0, "mount overlay: {}", std::io::Error::last_os_error());
        Self(target.to_path_buf())
    }
}

impl Drop for OverlayMount {
    fn drop(&mut self) {
        if let Ok(t) = CString::new(self.0.as_os_str().as_bytes()) {
            // SAFETY: valid path; a lazy unmount of our own mount.
            unsafe { libc::umount2(t.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

/// What a tree walk records of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub content: Vec<u8>,
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

fn xattrs(p: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let c = CString::new(p.as_os_str().as_bytes()).expect("path");
    let mut buf = vec![0u8; 65536];
    // SAFETY: valid path and buffer.
    let n = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n <= 0 {
        return out;
    }
    buf.truncate(n as usize);
    for name in buf.split(|&b| b == 0).filter(|s| !s.is_empty()) {
        if name.starts_with(b"trusted.overlay.") || name.starts_with(b"security.selinux") {
            continue;
        }
        let cn = CString::new(name).expect("name");
        let mut v = vec![0u8; 65536];
        // SAFETY: valid path, name and buffer.
        let m = unsafe { libc::lgetxattr(c.as_ptr(), cn.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
        if m >= 0 {
            v.truncate(m as usize);
            out.insert(String::from_utf8_lossy(name).into_owned(), v);
        }
    }
    out
}

/// Records every file below `root` (path relative to it, "" for the root).
pub fn snapshot(root: &Path) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn walk(root: &Path, p: &Path, out: &mut BTreeMap<String, Node>) {
    let md = fs::symlink_metadata(p).expect("lstat");
    let ft = md.file_type();
    let (kind, content) = if ft.is_dir() {
        ("dir", Vec::new())
    } else if ft.is_symlink() {
        (
            "symlink",
            fs::read_link(p)
                .expect("readlink")
                .as_os_str()
                .as_bytes()
                .to_vec(),
        )
    } else if ft.is_file() {
        let mut v = Vec::new();
        fs::File::open(p)
            .expect("open")
            .read_to_end(&mut v)
            .expect("read");
        ("file", v)
    } else if ft.is_char_device() {
        ("chardev", md.rdev().to_string().into_bytes())
    } else if ft.is_block_device() {
        ("blockdev", md.rdev().to_string().into_bytes())
    } else {
        ("fifo", Vec::new())
    };
    let rel = p
        .strip_prefix(root)
        .expect("prefix")
        .to_string_lossy()
        .into_owned();
    out.insert(
        rel,
        Node {
            kind,
            mode: md.mode() & 0o7777,
            uid: md.uid(),
            gid: md.gid(),
            mtime: if ft.is_symlink() { 0 } else { md.mtime() },
            content,
            xattrs: if ft.is_symlink() {
                BTreeMap::new()
            } else {
                xattrs(p)
            },
        },
    );
    if ft.is_dir() {
        for e in fs::read_dir(p).expect("read_dir") {
            walk(root, &e.expect("entry").path(), out);
        }
    }
}

/// Compares two snapshots and panics with the differences.
pub fn assert_same_tree(a: &BTreeMap<String, Node>, b: &BTreeMap<String, Node>, what: &str) {
    let mut diffs = Vec::new();
    for (k, v) in a {
        match b.get(k) {
            None => diffs.push(format!("only in first: {k:?}")),
            Some(w) if w != v => diffs.push(format!("differs: {k:?}\n  {v:?}\n  {w:?}")),
            _ => {}
        }
    }
    for k in b.keys().filter(|k| !a.contains_key(*k)) {
        diffs.push(format!("only in second: {k:?}"));
    }
    assert!(diffs.is_empty(), "{what}:\n{}", diffs.join("\n"));
}

/// Builds tars entry by entry with the `tar` crate, including hostile names written raw.
pub struct TarBuilder {
    b: tar::Builder<Vec<u8>>,
}

impl Default for TarBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl TarBuilder {
    pub fn new() -> Self {
        Self {
            b: tar::Builder::new(Vec::new()),
        }
    }

    fn header(kind: tar::EntryType, name: &[u8], mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(1_600_000_000);
        h.set_uid(0);
        h.set_gid(0);
        // Written raw: the tar crate's setters refuse `..` and absolute names.
        let field = &mut h.as_old_mut().name;
        field.fill(0);
        field[..name.len()].copy_from_slice(name);
        h.set_cksum();
        h
    }

    pub fn file(mut self, name: &str, data: &[u8]) -> Self {
        self = self.file_owned(name, data, 0o644, 0, 0);
        self
    }

    pub fn file_owned(mut self, name: &str, data: &[u8], mode: u32, uid: u64, gid: u64) -> Self {
        let mut h = Self::header(
            tar::EntryType::Regular,
            name.as_bytes(),
            mode,
            data.len() as u64,
        );
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_cksum();
        self.b.append(&h, data).expect("append");
        self
    }

    pub fn dir(mut self, name: &str, mode: u32) -> Self {
        let h = Self::header(tar::EntryType::Directory, name.as_bytes(), mode, 0);
        self.b.append(&h, &[][..]).expect("append");
        self
    }

    pub fn link(mut self, kind: tar::EntryType, name: &str, target: &str) -> Self {
        let mut h = Self::header(kind, name.as_bytes(), 0o777, 0);
        let field = &mut h.as_old_mut().linkname;
        field.fill(0);
        field[..target.len()].copy_from_slice(target.as_bytes());
        h.set_cksum();
        self.b.append(&h, &[][..]).expect("append");
        self
    }

    pub fn device(mut self, name: &str, major: u32, minor: u32) -> Self {
        let mut h = Self::header(tar::EntryType::Char, name.as_bytes(), 0o666, 0);
        h.set_device_major(major).expect("major");
        h.set_device_minor(minor).expect("minor");
        h.set_cksum();
        self.b.append(&h, &[][..]).expect("append");
        self
    }

    /// A file entry with PAX records before it.
    pub fn pax_file(mut self, name: &str, pax: &[(&str, &[u8])], data: &[u8]) -> Self {
        self.b
            .append_pax_extensions(pax.iter().map(|(k, v)| (*k, *v)))
            .expect("pax");
        self.file(name, data)
    }

    /// A header claiming `size` bytes, with no data after it.
    pub fn huge_header(mut self, name: &str, size: u64) -> Self {
        let h = Self::header(tar::EntryType::Regular, name.as_bytes(), 0o644, size);
        self.b.get_mut().extend_from_slice(h.as_bytes());
        self
    }

    pub fn finish(self) -> Vec<u8> {
        self.b.into_inner().expect("finish tar")
    }
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}
