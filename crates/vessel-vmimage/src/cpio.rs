//! A deterministic newc cpio writer (the initramfs format the kernel unpacks), gzip-compressed.
//!
//! Entries are kept in a sorted tree, so parents precede children and the archive depends
//! only on its contents: every entry has uid 0, gid 0 and the same mtime.

use std::collections::BTreeMap;
use std::io::Write;

/// What an archive entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EntryKind {
    Directory,
    File(Vec<u8>),
    Symlink(String),
    CharDevice { major: u32, minor: u32 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    kind: EntryKind,
    permissions: u32,
}

/// An initramfs being assembled: paths are relative (`bin/sh`), parents are added implicitly.
#[derive(Debug, Default)]
pub(crate) struct CpioArchive {
    entries: BTreeMap<String, Entry>,
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

impl CpioArchive {
    /// Adds (or replaces) an entry at `path`, creating missing parent directories (0755).
    pub fn add(&mut self, path: &str, kind: EntryKind, permissions: u32) {
        let path = path.trim_matches('/');
        if path.is_empty() {
            return;
        }
        let mut parent = String::new();
        for component in path.split('/').take(path.split('/').count() - 1) {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(component);
            self.entries.entry(parent.clone()).or_insert(Entry {
                kind: EntryKind::Directory,
                permissions: 0o755,
            });
        }
        self.entries.insert(
            path.to_string(),
            Entry {
                kind,
                permissions: permissions & 0o7777,
            },
        );
    }

    /// Adds a directory.
    pub fn dir(&mut self, path: &str, permissions: u32) {
        self.add(path, EntryKind::Directory, permissions);
    }

    /// Adds a regular file.
    pub fn file(&mut self, path: &str, data: Vec<u8>, permissions: u32) {
        self.add(path, EntryKind::File(data), permissions);
    }

    /// Adds a symbolic link to `target`.
    pub fn symlink(&mut self, path: &str, target: &str) {
        self.add(path, EntryKind::Symlink(target.to_string()), 0o777);
    }

    /// Whether something exists at `path`.
    pub fn contains(&self, path: &str) -> bool {
        self.entries.contains_key(path.trim_matches('/'))
    }

    /// The archive in newc format, every entry with this `mtime`.
    pub fn to_newc(&self, mtime: u32) -> Vec<u8> {
        let mut out = Vec::new();
        for (ino, (path, entry)) in self.entries.iter().enumerate() {
            let (mode, data, nlink, rdev): (u32, &[u8], u32, (u32, u32)) = match &entry.kind {
                EntryKind::Directory => (S_IFDIR, &[], 2, (0, 0)),
                EntryKind::File(data) => (S_IFREG, data, 1, (0, 0)),
                EntryKind::Symlink(target) => (S_IFLNK, target.as_bytes(), 1, (0, 0)),
                EntryKind::CharDevice { major, minor } => (S_IFCHR, &[], 1, (*major, *minor)),
            };
            let header = Header {
                ino: ino as u32 + 1,
                mode: mode | entry.permissions,
                nlink,
                mtime,
                rdev,
            };
            write_entry(&mut out, &header, path, data);
        }
        let trailer = Header {
            ino: 0,
            mode: 0,
            nlink: 1,
            mtime: 0,
            rdev: (0, 0),
        };
        write_entry(&mut out, &trailer, "TRAILER!!!", &[]);
        out
    }

    /// The archive gzip-compressed with a fixed header (no name, no time), ready for `-initrd`.
    pub fn to_gzip(&self, mtime: u32) -> std::io::Result<Vec<u8>> {
        let mut encoder = flate2::GzBuilder::new()
            .mtime(0)
            .operating_system(3)
            .write(Vec::new(), flate2::Compression::best());
        encoder.write_all(&self.to_newc(mtime))?;
        encoder.finish()
    }
}

struct Header {
    ino: u32,
    mode: u32,
    nlink: u32,
    mtime: u32,
    rdev: (u32, u32),
}

fn write_entry(out: &mut Vec<u8>, header: &Header, name: &str, data: &[u8]) {
    let fields = [
        header.ino,
        header.mode,
        0, // uid
        0, // gid
        header.nlink,
        header.mtime,
        data.len() as u32,
        0, // dev major
        0, // dev minor
        header.rdev.0,
        header.rdev.1,
        name.len() as u32 + 1,
        0, // check
    ];
    out.extend_from_slice(b"070701");
    for field in fields {
        out.extend_from_slice(format!("{field:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(data);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    let padding = (4 - out.len() % 4) % 4;
    out.resize(out.len() + padding, 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_precede_children_and_layout_is_newc() {
        let mut archive = CpioArchive::default();
        archive.file("usr/bin/tool", b"hi".to_vec(), 0o755);
        archive.symlink("bin/sh", "/bin/busybox");
        archive.add(
            "dev/console",
            EntryKind::CharDevice { major: 5, minor: 1 },
            0o600,
        );
        let names: Vec<&str> = archive.entries.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "bin",
                "bin/sh",
                "dev",
                "dev/console",
                "usr",
                "usr/bin",
                "usr/bin/tool"
            ]
        );
        let bytes = archive.to_newc(0);
        assert_eq!(&bytes[..6], b"070701");
        assert_eq!(bytes.len() % 4, 0);
        // First entry: "bin", a directory with mode 040755.
        assert_eq!(&bytes[14..22], b"000041ed");
        assert!(bytes.windows(10).any(|w| w == b"TRAILER!!!"));
    }

    #[test]
    fn output_is_deterministic() {
        let build = || {
            let mut archive = CpioArchive::default();
            archive.file("b", vec![1; 1000], 0o644);
            archive.file("a", vec![2; 10], 0o644);
            archive.to_gzip(0).expect("gzip into memory")
        };
        assert_eq!(build(), build());
    }
}
