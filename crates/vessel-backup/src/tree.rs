//! File trees: walked in name order, each file's content cut into chunks by content
//! (FastCDC), the metadata of every entry (type, mode, owner, times, extended attributes,
//! link targets, device numbers, hard links) kept beside; and restored whole into a new
//! directory, refusing any description that would write outside it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::chunk::Chunks;
use crate::error::{io, BackupError, Result};
use crate::index::ChunkRef;
use crate::pipeline::{Reader, Stats, Storer};

/// How files are cut: FastCDC's minimum, average and maximum chunk sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkSizes {
    pub min: u32,
    pub avg: u32,
    pub max: u32,
}

impl ChunkSizes {
    /// Sizes around an average (a quarter of it to four times it).
    pub fn around(avg: u32) -> ChunkSizes {
        ChunkSizes {
            min: avg / 4,
            avg,
            max: avg * 4,
        }
    }
}

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    #[serde(rename = "d")]
    Dir,
    #[serde(rename = "f")]
    File,
    #[serde(rename = "l")]
    Symlink,
    /// A second name of a file before it (`target`).
    #[serde(rename = "h")]
    HardLink,
    #[serde(rename = "c")]
    Char,
    #[serde(rename = "b")]
    Block,
    #[serde(rename = "p")]
    Fifo,
    #[serde(rename = "s")]
    Socket,
}

/// A name as bytes, kept as text when it is UTF-8 and as hex when not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Name {
    #[serde(rename = "t")]
    Text(String),
    #[serde(rename = "x")]
    Hex(String),
}

impl Name {
    fn of(s: &OsStr) -> Name {
        match s.to_str() {
            Some(t) => Name::Text(t.to_string()),
            None => Name::Hex(hex::encode(s.as_bytes())),
        }
    }

    fn bytes(&self) -> Result<OsString> {
        match self {
            Name::Text(t) => Ok(OsString::from(t)),
            Name::Hex(h) => hex::decode(h)
                .map(OsString::from_vec)
                .map_err(|_| BackupError::Corrupt(format!("tree entry: bad hex name {h:?}"))),
        }
    }
}

/// One entry of a tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Its path under the tree's root (the root itself: empty).
    pub path: Name,
    pub kind: Kind,
    /// Permission bits, with set-id and sticky bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Modification time: seconds and nanoseconds.
    pub mtime: (i64, u32),
    /// A file's size.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub size: u64,
    /// How many of the archive's chunks, in order, hold a file's content.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub chunks: u64,
    /// A symbolic link's target, or the path of the file a hard link names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Name>,
    /// A device's number.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rdev: u64,
    /// Extended attributes: name, value in hex.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub xattrs: BTreeMap<String, String>,
    /// What tells an unchanged file next time: inode, change time (s, ns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seen: Option<(u64, i64, i64)>,
}

fn is_zero<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// A tree's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub entries: Vec<Entry>,
}

/// A file's content in a tree backup: chunks from the backup before, or chunks handed to
/// the storer (a range of its sequence numbers).
enum Content {
    Reused(Vec<ChunkRef>),
    Stored(usize, usize),
}

/// The chunks of an earlier backup's files, by path, for files unchanged since.
pub struct Earlier {
    files: HashMap<Vec<u8>, (Entry, Vec<ChunkRef>)>,
}

impl Earlier {
    /// From an earlier backup's metadata and its archive's chunks.
    pub fn new(meta: &Meta, chunks: &[ChunkRef]) -> Result<Earlier> {
        let mut files = HashMap::new();
        let mut at = 0usize;
        for e in &meta.entries {
            if e.kind != Kind::File {
                continue;
            }
            let n = e.chunks as usize;
            let Some(c) = chunks.get(at..at + n) else {
                return Err(BackupError::Corrupt(
                    "tree: fewer chunks than its files".into(),
                ));
            };
            at += n;
            files.insert(e.path.bytes()?.into_vec(), (e.clone(), c.to_vec()));
        }
        Ok(Earlier { files })
    }
}

/// Backs up the tree at `root`: returns its metadata, its chunks and what was done.
/// `progress` is told the bytes read so far.
pub fn backup(
    chunks: &Chunks,
    root: &Path,
    sizes: ChunkSizes,
    earlier: Option<&Earlier>,
    progress: &mut dyn FnMut(u64),
) -> Result<(Meta, Vec<ChunkRef>, Stats)> {
    let meta = std::fs::symlink_metadata(root).map_err(io("reading", root))?;
    if !meta.is_dir() {
        return Err(BackupError::Invalid(format!(
            "{} is not a directory",
            root.display()
        )));
    }
    let mut w = Walk {
        storer: Storer::new(chunks)?,
        sizes,
        earlier,
        entries: Vec::new(),
        contents: Vec::new(),
        links: HashMap::new(),
        dev: meta.dev(),
        stats: Stats::default(),
        progress,
    };
    w.entry(root, PathBuf::new(), &meta)?;
    w.dir(root, PathBuf::new())?;
    let Walk {
        storer,
        entries,
        contents,
        mut stats,
        ..
    } = w;
    let (stored, s) = storer.finish()?;
    stats.add(&s);
    let mut refs = Vec::new();
    for c in contents {
        match c {
            Content::Reused(r) => refs.extend(r),
            Content::Stored(from, to) => refs.extend_from_slice(&stored[from..to]),
        }
    }
    stats.bytes = refs.iter().map(|c| c.1).sum();
    Ok((Meta { entries }, refs, stats))
}

struct Walk<'a> {
    storer: Storer,
    sizes: ChunkSizes,
    earlier: Option<&'a Earlier>,
    entries: Vec<Entry>,
    contents: Vec<Content>,
    links: HashMap<(u64, u64), Name>,
    dev: u64,
    stats: Stats,
    progress: &'a mut dyn FnMut(u64),
}

impl Walk<'_> {
    fn dir(&mut self, dir: &Path, rel: PathBuf) -> Result<()> {
        let mut names: Vec<OsString> = std::fs::read_dir(dir)
            .map_err(io("reading", dir))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<std::io::Result<_>>()
            .map_err(io("reading", dir))?;
        names.sort();
        for name in names {
            let path = dir.join(&name);
            let meta = match std::fs::symlink_metadata(&path) {
                Ok(m) => m,
                // Gone since the directory was read.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io("reading", &path)(e)),
            };
            let rel = rel.join(&name);
            self.entry(&path, rel.clone(), &meta)?;
            // Another file system's content is not this tree's.
            if meta.is_dir() && meta.dev() == self.dev {
                self.dir(&path, rel)?;
            }
        }
        Ok(())
    }

    fn entry(&mut self, path: &Path, rel: PathBuf, m: &std::fs::Metadata) -> Result<()> {
        use std::os::unix::fs::FileTypeExt;
        let ft = m.file_type();
        let name = Name::of(rel.as_os_str());
        let mut e = Entry {
            path: name.clone(),
            kind: Kind::Dir,
            mode: m.mode() & 0o7777,
            uid: m.uid(),
            gid: m.gid(),
            mtime: (m.mtime(), m.mtime_nsec() as u32),
            size: 0,
            chunks: 0,
            target: None,
            rdev: 0,
            xattrs: xattrs(path)?,
            seen: None,
        };
        if ft.is_dir() {
        } else if ft.is_symlink() {
            e.kind = Kind::Symlink;
            let t = std::fs::read_link(path).map_err(io("reading", path))?;
            e.target = Some(Name::of(t.as_os_str()));
        } else if ft.is_file() {
            if m.nlink() > 1 {
                if let Some(first) = self.links.get(&(m.dev(), m.ino())) {
                    e.kind = Kind::HardLink;
                    e.target = Some(first.clone());
                    self.entries.push(e);
                    return Ok(());
                }
                self.links.insert((m.dev(), m.ino()), name);
            }
            e.kind = Kind::File;
            e.seen = Some((m.ino(), m.ctime(), m.ctime_nsec()));
            self.file(path, m, &mut e)?;
        } else if ft.is_char_device() || ft.is_block_device() {
            e.kind = if ft.is_char_device() {
                Kind::Char
            } else {
                Kind::Block
            };
            e.rdev = m.rdev();
        } else if ft.is_fifo() {
            e.kind = Kind::Fifo;
        } else if ft.is_socket() {
            e.kind = Kind::Socket;
        }
        self.entries.push(e);
        Ok(())
    }

    fn file(&mut self, path: &Path, m: &std::fs::Metadata, e: &mut Entry) -> Result<()> {
        if let Some(earlier) = self.earlier {
            if let Some((old, refs)) = earlier.files.get(e.path.bytes()?.as_bytes()) {
                if old.size == m.len() && old.mtime == e.mtime && old.seen == e.seen {
                    e.size = old.size;
                    e.chunks = refs.len() as u64;
                    self.stats.files_reused += 1;
                    self.contents.push(Content::Reused(refs.clone()));
                    return Ok(());
                }
            }
        }
        let mut f = File::open(path).map_err(io("opening", path))?;
        let from = self.seq();
        let mut size = 0u64;
        let max = self.sizes.max as usize;
        // Read a window of several maximum chunks at a time and cut it; what follows the
        // last cut starts the next window. The buffer grows with what is read (most files
        // are far smaller than a window: no window-sized buffer is cleared for them).
        let window = max * 4;
        let mut buf: Vec<u8> = Vec::with_capacity((m.len() as usize).min(window) + 1);
        let mut eof = false;
        while !eof || !buf.is_empty() {
            if !eof && buf.len() < window {
                let want = (window - buf.len()) as u64;
                let n = (&mut f)
                    .take(want)
                    .read_to_end(&mut buf)
                    .map_err(io("reading", path))?;
                if (n as u64) < want {
                    eof = true;
                }
            }
            if buf.is_empty() {
                break;
            }
            let cuts: Vec<(usize, usize)> =
                fastcdc::v2020::FastCDC::new(&buf, self.sizes.min, self.sizes.avg, self.sizes.max)
                    .map(|c| (c.offset, c.length))
                    .collect();
            // Without the end in the window, the last cut may move when more is read.
            let keep = if eof {
                cuts.len()
            } else {
                cuts.len().saturating_sub(1).max(1)
            };
            let mut used = 0;
            for (off, len) in cuts.into_iter().take(keep) {
                self.storer.push(buf[off..off + len].to_vec())?;
                used = off + len;
                size += len as u64;
            }
            buf.drain(..used);
            self.stats.read += used as u64;
            (self.progress)(self.stats.read);
        }
        e.size = size;
        e.chunks = (self.seq() - from) as u64;
        self.contents.push(Content::Stored(from, self.seq()));
        Ok(())
    }

    fn seq(&self) -> usize {
        self.storer.next_seq()
    }
}

/// Extended attributes of `path` (not following a link): name, value in hex.
fn xattrs(path: &Path) -> Result<BTreeMap<String, String>> {
    let c = cpath(path)?;
    let mut out = BTreeMap::new();
    let mut names = vec![0u8; 1024];
    let len = loop {
        // SAFETY: the buffer is valid for its length.
        let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
        if n >= 0 {
            break n as usize;
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ERANGE) => names.resize(names.len() * 4, 0),
            Some(libc::ENOTSUP) => return Ok(out),
            _ => return Err(io("listing extended attributes of", path)(e)),
        }
    };
    for name in names[..len].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let Ok(text) = std::str::from_utf8(name) else {
            tracing::warn!(path = %path.display(), "an extended attribute with a non-UTF-8 name is not kept");
            continue;
        };
        let cname = CString::new(name).expect("no NUL in a split name");
        let mut value = vec![0u8; 256];
        loop {
            // SAFETY: the buffer is valid for its length.
            let n = unsafe {
                libc::lgetxattr(
                    c.as_ptr(),
                    cname.as_ptr(),
                    value.as_mut_ptr().cast(),
                    value.len(),
                )
            };
            if n >= 0 {
                value.truncate(n as usize);
                break;
            }
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ERANGE) {
                value.resize(value.len() * 4, 0);
                continue;
            }
            return Err(io("reading an extended attribute of", path)(e));
        }
        out.insert(text.to_string(), hex::encode(&value));
    }
    Ok(out)
}

fn cpath(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| BackupError::Invalid(format!("{} has a NUL byte", path.display())))
}

/// A relative path of an entry, checked: plain names only (no `..`, no root, no `.`).
fn safe_rel(name: &Name) -> Result<PathBuf> {
    let p = PathBuf::from(name.bytes()?);
    if p.as_os_str().as_bytes().contains(&0) {
        return Err(BackupError::Corrupt("tree entry: a NUL in a path".into()));
    }
    for c in p.components() {
        if !matches!(c, Component::Normal(_)) {
            return Err(BackupError::Corrupt(format!(
                "tree entry {:?}: a path must stay inside the tree",
                p.display()
            )));
        }
    }
    // `a//b` and `a/` are not how the walker names entries.
    let canonical: PathBuf = p.components().collect();
    if canonical.as_os_str() != p.as_os_str() {
        return Err(BackupError::Corrupt(format!(
            "tree entry {:?}: not a plain path",
            p.display()
        )));
    }
    Ok(p)
}

/// Checks a tree's metadata against its chunks before anything is made: every path inside
/// the tree and under a directory entry before it, no path twice, hard links to files
/// before them, each file's size equal to its chunks' lengths and every chunk used.
pub fn check(meta: &Meta, refs: &[ChunkRef]) -> Result<()> {
    let bad = |why: String| Err(BackupError::Corrupt(format!("tree: {why}")));
    let Some(first) = meta.entries.first() else {
        return bad("no root entry".into());
    };
    if first.kind != Kind::Dir || first.path != Name::Text(String::new()) {
        return bad("the first entry is not the root directory".into());
    }
    let mut dirs: HashSet<PathBuf> = HashSet::from([PathBuf::new()]);
    let mut files: HashSet<PathBuf> = HashSet::new();
    let mut seen: HashSet<PathBuf> = HashSet::from([PathBuf::new()]);
    let mut at = 0usize;
    for e in &meta.entries[1..] {
        let p = safe_rel(&e.path)?;
        if p.as_os_str().is_empty() {
            return bad("a second root entry".into());
        }
        let parent = p.parent().unwrap_or(Path::new("")).to_path_buf();
        if !dirs.contains(&parent) {
            return bad(format!(
                "{:?} is not under a directory before it",
                p.display()
            ));
        }
        if !seen.insert(p.clone()) {
            return bad(format!("{:?} is there twice", p.display()));
        }
        match e.kind {
            Kind::Dir => {
                dirs.insert(p.clone());
            }
            Kind::File => {
                let n = e.chunks as usize;
                let Some(cs) = refs.get(at..at + n) else {
                    return bad(format!(
                        "{:?} names chunks the tree does not have",
                        p.display()
                    ));
                };
                at += n;
                if cs.iter().map(|c| c.1).sum::<u64>() != e.size {
                    return bad(format!("{:?}: size and chunks disagree", p.display()));
                }
                files.insert(p.clone());
            }
            Kind::HardLink => {
                let t = safe_rel(e.target.as_ref().ok_or_else(|| {
                    BackupError::Corrupt("tree: a hard link without a target".into())
                })?)?;
                if !files.contains(&t) {
                    return bad(format!("{:?} links to no file before it", p.display()));
                }
            }
            Kind::Symlink if e.target.is_none() => {
                return bad(format!("{:?}: a link without a target", p.display()));
            }
            _ => {}
        }
        if e.kind != Kind::File && (e.size != 0 || e.chunks != 0) {
            return bad(format!(
                "{:?}: content on something not a file",
                p.display()
            ));
        }
        for v in e.xattrs.values() {
            if hex::decode(v).is_err() {
                return bad(format!("{:?}: a bad extended attribute value", p.display()));
            }
        }
    }
    if at != refs.len() {
        return bad("chunks no file uses".into());
    }
    Ok(())
}

/// Restores a tree into `target`, which must not exist: made as a sibling first and renamed
/// into place whole, so a failure (a damaged chunk found on the way) leaves nothing. Without
/// `devices`, a tree holding a device node (but overlayfs's whiteouts, character devices
/// 0:0) is refused before anything is made: one a tree's maker chose would give whoever
/// uses the restored files the host's disks or memory.
pub fn restore(
    chunks: &Chunks,
    meta: &Meta,
    refs: &[ChunkRef],
    target: &Path,
    devices: bool,
    progress: &mut dyn FnMut(u64),
) -> Result<()> {
    check(meta, refs)?;
    if !devices {
        if let Some(e) = meta
            .entries
            .iter()
            .find(|e| e.kind == Kind::Block || (e.kind == Kind::Char && e.rdev != 0))
        {
            return Err(BackupError::Invalid(format!(
                "{:?} is a device node ({}:{}), which only a privileged instance may hold",
                e.path
                    .bytes()
                    .map_or_else(|_| "?".into(), |b| b.to_string_lossy().into_owned()),
                libc::major(e.rdev as libc::dev_t),
                libc::minor(e.rdev as libc::dev_t)
            )));
        }
    }
    into_place(target, |stage| make(chunks, meta, refs, stage, progress))
}

/// Makes new path `target` (which must not exist) whole: `make` builds it beside `target`
/// under a hidden name, then it is renamed into place; on any failure what was built goes.
pub(crate) fn into_place(target: &Path, make: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    if target.symlink_metadata().is_ok() {
        return Err(BackupError::Invalid(format!(
            "{} exists: restore into a new path",
            target.display()
        )));
    }
    let parent = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let stage = parent.join(format!(
        ".{}.restore-{}",
        target
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        uuid::Uuid::new_v4().simple()
    ));
    let r = make(&stage)
        .and_then(|()| std::fs::rename(&stage, target).map_err(io("renaming into place", target)));
    if r.is_err() {
        let _ = remove_tree(&stage);
    }
    r
}

fn remove_tree(p: &Path) -> std::io::Result<()> {
    // Directories made read-only by the tree are opened up first.
    if let Ok(m) = p.symlink_metadata() {
        if m.is_dir() {
            let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700));
            for e in std::fs::read_dir(p)?.flatten() {
                remove_tree(&e.path())?;
            }
            return std::fs::remove_dir(p);
        }
    }
    std::fs::remove_file(p)
}

fn make(
    chunks: &Chunks,
    meta: &Meta,
    refs: &[ChunkRef],
    stage: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<()> {
    let mut data = Reader::new(chunks, refs.to_vec());
    let mut written = 0u64;
    for e in &meta.entries {
        let rel = safe_rel(&e.path)?;
        let path = stage.join(&rel);
        match e.kind {
            Kind::Dir => {
                std::fs::create_dir(&path).map_err(io("making", &path))?;
                // Owner-writable while it is filled; its own mode comes at the end.
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700))
                    .map_err(io("making", &path))?;
            }
            Kind::File => {
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .map_err(io("making", &path))?;
                for _ in 0..e.chunks {
                    let chunk = data
                        .next()
                        .ok_or_else(|| BackupError::Corrupt("tree: chunks ran out".into()))??;
                    f.write_all(&chunk).map_err(io("writing", &path))?;
                    written += chunk.len() as u64;
                    progress(written);
                }
            }
            Kind::HardLink => {
                let t = stage.join(safe_rel(e.target.as_ref().expect("checked"))?);
                std::fs::hard_link(&t, &path).map_err(io("linking", &path))?;
                continue;
            }
            Kind::Symlink => {
                let t = e.target.as_ref().expect("checked").bytes()?;
                std::os::unix::fs::symlink(&t, &path).map_err(io("making", &path))?;
            }
            Kind::Char | Kind::Block | Kind::Fifo | Kind::Socket => {
                let fmt = match e.kind {
                    Kind::Char => libc::S_IFCHR,
                    Kind::Block => libc::S_IFBLK,
                    Kind::Fifo => libc::S_IFIFO,
                    _ => libc::S_IFSOCK,
                };
                let c = cpath(&path)?;
                // SAFETY: a valid C string.
                if unsafe { libc::mknod(c.as_ptr(), fmt | 0o600, e.rdev as libc::dev_t) } != 0 {
                    return Err(io("making", &path)(std::io::Error::last_os_error()));
                }
            }
        }
        if e.kind != Kind::Dir {
            finish(&path, e)?;
        }
    }
    // Directories last, deepest first: their modes and times after their content.
    for e in meta.entries.iter().rev().filter(|e| e.kind == Kind::Dir) {
        finish(&stage.join(safe_rel(&e.path)?), e)?;
    }
    Ok(())
}

/// Gives `path` the owner, extended attributes, mode and time of `e` (never following a
/// link): the owner first, since a change of owner clears set-id bits.
fn finish(path: &Path, e: &Entry) -> Result<()> {
    let c = cpath(path)?;
    // SAFETY: a valid C string.
    if unsafe { libc::lchown(c.as_ptr(), e.uid, e.gid) } != 0 {
        return Err(io("setting the owner of", path)(
            std::io::Error::last_os_error(),
        ));
    }
    for (name, value) in &e.xattrs {
        let v = hex::decode(value).map_err(|_| BackupError::Corrupt("bad xattr".into()))?;
        let n = CString::new(name.as_bytes())
            .map_err(|_| BackupError::Corrupt("an xattr name with a NUL".into()))?;
        // SAFETY: valid C strings and a buffer valid for its length.
        let r = unsafe { libc::lsetxattr(c.as_ptr(), n.as_ptr(), v.as_ptr().cast(), v.len(), 0) };
        if r != 0 {
            let err = std::io::Error::last_os_error();
            tracing::warn!(path = %path.display(), xattr = %name, error = %err, "an extended attribute was not restored");
        }
    }
    if e.kind != Kind::Symlink {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(e.mode))
            .map_err(io("setting the mode of", path))?;
    }
    let times = [
        libc::timespec {
            tv_sec: e.mtime.0,
            tv_nsec: e.mtime.1 as _,
        },
        libc::timespec {
            tv_sec: e.mtime.0,
            tv_nsec: e.mtime.1 as _,
        },
    ];
    // SAFETY: a valid C string and two timespecs.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r != 0 {
        return Err(io("setting the time of", path)(
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::Digest;

    fn entry(path: &str, kind: Kind) -> Entry {
        Entry {
            path: Name::Text(path.into()),
            kind,
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime: (0, 0),
            size: 0,
            chunks: 0,
            target: None,
            rdev: 0,
            xattrs: BTreeMap::new(),
            seen: None,
        }
    }

    fn file(path: &str, size: u64, chunks: u64) -> Entry {
        Entry {
            size,
            chunks,
            ..entry(path, Kind::File)
        }
    }

    fn link(path: &str, kind: Kind, target: &str) -> Entry {
        Entry {
            target: Some(Name::Text(target.into())),
            ..entry(path, kind)
        }
    }

    #[test]
    fn hostile_trees_are_refused_before_anything_is_made() {
        let c = ChunkRef(Digest::of(b"abc"), 3);
        let root = entry("", Kind::Dir);
        let ok = Meta {
            entries: vec![root.clone(), entry("d", Kind::Dir), file("d/f", 3, 1)],
        };
        check(&ok, &[c]).unwrap();
        let cases: Vec<(Vec<Entry>, Vec<ChunkRef>, &str)> = vec![
            (vec![root.clone(), file("../f", 3, 1)], vec![c], "inside"),
            (
                vec![root.clone(), file("/etc/passwd", 3, 1)],
                vec![c],
                "inside",
            ),
            (
                vec![root.clone(), file("a/../../f", 3, 1)],
                vec![c],
                "inside",
            ),
            (vec![root.clone(), file("./f", 3, 1)], vec![c], "inside"),
            (
                vec![root.clone(), file("nodir/f", 3, 1)],
                vec![c],
                "not under",
            ),
            (
                vec![
                    root.clone(),
                    link("l", Kind::Symlink, "/etc"),
                    file("l/passwd", 3, 1),
                ],
                vec![c],
                "not under",
            ),
            (
                vec![root.clone(), file("f", 3, 1), file("f", 3, 1)],
                vec![c, c],
                "twice",
            ),
            (vec![root.clone(), file("f", 4, 1)], vec![c], "disagree"),
            (
                vec![root.clone(), file("f", 3, 2)],
                vec![c],
                "does not have",
            ),
            (vec![root.clone(), file("f", 0, 0)], vec![c], "no file uses"),
            (
                vec![
                    root.clone(),
                    link("h", Kind::HardLink, "later"),
                    file("later", 3, 1),
                ],
                vec![c],
                "links to no file",
            ),
            (
                vec![root.clone(), link("h", Kind::HardLink, "../x")],
                vec![],
                "inside",
            ),
            (vec![file("f", 3, 1)], vec![c], "root"),
            (vec![], vec![], "root"),
            (
                vec![root.clone(), entry("", Kind::Dir)],
                vec![],
                "second root",
            ),
            (
                vec![root.clone(), entry("s", Kind::Symlink)],
                vec![],
                "without a target",
            ),
            (
                vec![
                    root.clone(),
                    Entry {
                        size: 5,
                        ..entry("d", Kind::Dir)
                    },
                ],
                vec![],
                "content",
            ),
        ];
        for (entries, refs, says) in cases {
            let e = check(
                &Meta {
                    entries: entries.clone(),
                },
                &refs,
            )
            .unwrap_err();
            assert!(
                matches!(e, BackupError::Corrupt(_)) && e.to_string().contains(says),
                "{entries:?}: {e}"
            );
        }
    }

    #[test]
    fn names_that_are_not_text_travel_as_hex() {
        let raw = OsStr::from_bytes(b"caf\xe9");
        let n = Name::of(raw);
        assert!(matches!(n, Name::Hex(_)));
        assert_eq!(n.bytes().unwrap(), raw);
    }
}
