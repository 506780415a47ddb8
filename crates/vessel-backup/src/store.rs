//! A backup store: a directory holding chunks and one index per backup.
//!
//! ```text
//! ROOT/store.json                 format and how files are cut
//! ROOT/chunks/XY/DIGEST           chunks (see `chunk`)
//! ROOT/backups/GROUP/ID/index     a backup's index (see `index`); a directory without one
//!                                 is a backup being taken, or one that never finished
//! ROOT/backups/GROUP/ID/damaged   what `verify` found wrong with it, if anything
//! ROOT/writers/UUID               a backup being taken (locked while its writer lives)
//! ROOT/store.lock                 held while writers start, backups go and `gc` marks
//! ```

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::chunk::Chunks;
use crate::error::{io, BackupError, Result};
use crate::index::{Archive, ArchiveKind, ChunkRef, Index, FORMAT};
use crate::pipeline::Stats;
use crate::tree::{self, ChunkSizes, Earlier, Meta};

/// The most bytes a blob archive (an instance's record, a snapshot list) may hold.
pub const MAX_BLOB: u64 = 16 << 20;

/// The most bytes a tree archive's metadata may hold, packed or unpacked (a file tree of
/// a few million entries).
pub const MAX_META: u64 = 1 << 30;

/// The settings of a store, in `store.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreConfig {
    pub format: u32,
    /// How files of trees are cut.
    pub chunk: ChunkSizes,
    /// zstd level of chunks.
    pub level: i32,
}

impl Default for StoreConfig {
    /// An average of 1 MiB (256 KiB to 4 MiB): see `docs/PERFORMANCE.md` for the measurement.
    fn default() -> Self {
        StoreConfig {
            format: FORMAT,
            chunk: ChunkSizes::around(1 << 20),
            level: 3,
        }
    }
}

/// A backup store.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    pub(crate) chunks: Chunks,
    config: StoreConfig,
}

/// Checks a name the store makes a path of: 1-128 of letters, digits, `.`, `_` and `-`,
/// not starting with `.`.
pub fn check_name(what: &str, name: &str) -> Result<()> {
    let ok = (1..=128).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(BackupError::Invalid(format!(
            "invalid {what} {:?}: use 1-128 letters, digits, '.', '_' and '-', not starting \
             with '.'",
            name.chars().take(130).collect::<String>()
        )))
    }
}

/// A `store.lock` held until dropped.
pub(crate) struct StoreLock(#[allow(dead_code)] File);

/// A backup as listed: its index if it reads whole, else why not.
#[derive(Debug, Clone)]
pub struct Listed {
    pub group: String,
    pub id: String,
    pub index: std::result::Result<Index, String>,
    /// What `verify` found wrong with it.
    pub damaged: Option<String>,
    /// It had no index when listed: being taken, or never finished.
    pub unfinished: bool,
}

impl Store {
    /// A short name of this store (a hash of its directory's path), for naming what is
    /// kept for it elsewhere.
    pub fn id(&self) -> String {
        use sha2::Digest as _;
        let root = std::fs::canonicalize(&self.root).unwrap_or_else(|_| self.root.clone());
        let h = sha2::Sha256::digest(root.as_os_str().as_encoded_bytes());
        hex::encode(&h[..4])
    }

    /// Makes a store in `root` (a new or empty directory).
    pub fn create(root: &Path, config: StoreConfig) -> Result<Store> {
        std::fs::create_dir_all(root).map_err(io("making", root))?;
        if std::fs::read_dir(root)
            .map_err(io("reading", root))?
            .next()
            .is_some()
        {
            return Err(BackupError::Invalid(format!(
                "{} is not empty: a new store needs an empty directory",
                root.display()
            )));
        }
        let c = config.chunk;
        if !(64 <= c.min
            && c.min <= c.avg
            && c.avg <= c.max
            && c.max as usize <= crate::chunk::MAX_CHUNK)
        {
            return Err(BackupError::Invalid(format!(
                "impossible chunk sizes {c:?}"
            )));
        }
        let chunks = Chunks::new(root, config.level);
        chunks.create()?;
        for d in ["backups", "writers"] {
            let p = root.join(d);
            std::fs::create_dir(&p).map_err(io("making", &p))?;
        }
        File::create(root.join("store.lock")).map_err(io("making", root))?;
        let p = root.join("store.json");
        write_whole(&p, &serde_json::to_vec_pretty(&config).expect("serializes"))?;
        Ok(Store {
            root: root.to_path_buf(),
            chunks,
            config,
        })
    }

    /// Opens the store in `root`.
    pub fn open(root: &Path) -> Result<Store> {
        let p = root.join("store.json");
        let raw = match std::fs::read(&p) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(BackupError::NotFound(format!(
                    "no backup store in {} (no store.json)",
                    root.display()
                )))
            }
            Err(e) => return Err(io("reading", &p)(e)),
        };
        let config: StoreConfig = serde_json::from_slice(&raw)
            .map_err(|e| BackupError::Corrupt(format!("{}: {e}", p.display())))?;
        if config.format != FORMAT {
            return Err(BackupError::Invalid(format!(
                "the store in {} has format {}; this version reads {FORMAT}",
                root.display(),
                config.format
            )));
        }
        Ok(Store {
            root: root.to_path_buf(),
            chunks: Chunks::new(root, config.level),
            config,
        })
    }

    /// Opens the store in `root`, making it first if there is none.
    pub fn open_or_create(root: &Path) -> Result<Store> {
        match Store::open(root) {
            Err(BackupError::NotFound(_)) => Store::create(root, StoreConfig::default()),
            r => r,
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn config(&self) -> StoreConfig {
        self.config
    }

    pub(crate) fn lock(&self) -> Result<StoreLock> {
        let p = self.root.join("store.lock");
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&p)
            .map_err(io("opening", &p))?;
        // SAFETY: flock on a descriptor this function owns.
        while unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(io("locking", &p)(e));
            }
        }
        Ok(StoreLock(f))
    }

    pub(crate) fn backup_dir(&self, group: &str, id: &str) -> PathBuf {
        self.root.join("backups").join(group).join(id)
    }

    /// Every backup (of `group`), oldest first within a group.
    pub fn list(&self, group: Option<&str>) -> Result<Vec<Listed>> {
        let dir = self.root.join("backups");
        let groups = match group {
            Some(g) => {
                check_name("group", g)?;
                vec![g.to_string()]
            }
            None => names(&dir)?,
        };
        let mut out = Vec::new();
        for g in groups {
            for id in names(&dir.join(&g))? {
                out.push(self.listed_at(&g, &id));
            }
        }
        Ok(out)
    }

    /// Every group that holds backups, with how many (complete or not), by name.
    pub fn groups(&self) -> Result<Vec<(String, usize)>> {
        let dir = self.root.join("backups");
        let mut out = Vec::new();
        for g in names(&dir)? {
            let n = names(&dir.join(&g))?.len();
            if n > 0 {
                out.push((g, n));
            }
        }
        Ok(out)
    }

    /// Backup `id` of `group` as listed (whether or not its index reads whole).
    pub fn listed(&self, group: &str, id: &str) -> Result<Listed> {
        check_name("group", group)?;
        check_name("backup id", id)?;
        if !self.backup_dir(group, id).is_dir() {
            return Err(BackupError::NotFound(format!("no backup {group}/{id}")));
        }
        Ok(self.listed_at(group, id))
    }

    fn listed_at(&self, group: &str, id: &str) -> Listed {
        let d = self.backup_dir(group, id);
        let mut unfinished = false;
        let index = match std::fs::read(d.join("index")) {
            Ok(raw) => Index::decode(&raw)
                .and_then(|i| {
                    if i.group == group && i.id == id {
                        Ok(i)
                    } else {
                        Err(BackupError::Corrupt(
                            "its index names another backup".into(),
                        ))
                    }
                })
                .map_err(|e| e.to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                unfinished = true;
                Err("incomplete: it is being taken, or never finished".to_string())
            }
            Err(e) => Err(format!("reading its index: {e}")),
        };
        Listed {
            group: group.to_string(),
            id: id.to_string(),
            index,
            damaged: std::fs::read_to_string(d.join("damaged")).ok(),
            unfinished,
        }
    }

    /// Backup `id` of `group`, its index checked.
    pub fn get(&self, group: &str, id: &str) -> Result<Index> {
        check_name("group", group)?;
        check_name("backup id", id)?;
        let p = self.backup_dir(group, id).join("index");
        let raw = match std::fs::read(&p) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(BackupError::NotFound(format!(
                    "no backup {group}/{id}; see `vessel backup list`"
                )))
            }
            Err(e) => return Err(io("reading", &p)(e)),
        };
        let i = Index::decode(&raw)?;
        if i.group != group || i.id != id {
            return Err(BackupError::Corrupt(format!(
                "the index of {group}/{id} names {}/{}",
                i.group, i.id
            )));
        }
        Ok(i)
    }

    /// The newest complete backup of `group`, if any.
    pub fn latest(&self, group: &str) -> Result<Option<Index>> {
        Ok(self
            .list(Some(group))?
            .into_iter()
            .filter(|l| l.damaged.is_none())
            .filter_map(|l| l.index.ok())
            .max_by(|a, b| (a.time, &a.id).cmp(&(b.time, &b.id))))
    }

    /// Deletes a backup (its chunks go at the next `gc`). A backup a running backup builds
    /// on is refused.
    pub fn delete(&self, group: &str, id: &str) -> Result<()> {
        check_name("group", group)?;
        check_name("backup id", id)?;
        let _l = self.lock()?;
        let d = self.backup_dir(group, id);
        if !d.exists() {
            return Err(BackupError::NotFound(format!("no backup {group}/{id}")));
        }
        if self
            .live_writers()?
            .iter()
            .any(|w| w.group == group && (w.base.as_deref() == Some(id) || w.id == id))
        {
            return Err(BackupError::Busy(format!(
                "a backup being taken builds on {group}/{id}; delete it when that is done"
            )));
        }
        std::fs::remove_dir_all(&d).map_err(io("deleting", &d))?;
        let g = d.parent().expect("a group directory");
        let _ = std::fs::remove_dir(g);
        Ok(())
    }

    /// Starts a backup of `group` (building on its latest complete backup, whose unchanged
    /// files are taken without being read).
    pub fn writer(&self, group: &str) -> Result<Writer> {
        check_name("group", group)?;
        let _l = self.lock()?;
        let time = now();
        let gdir = self.root.join("backups").join(group);
        std::fs::create_dir_all(&gdir).map_err(io("making", &gdir))?;
        let base = self.latest(group)?;
        let stamp = utc_id(time);
        let mut id = stamp.clone();
        let mut n = 1;
        while std::fs::create_dir(gdir.join(&id)).is_err() {
            n += 1;
            if n > 1000 {
                return Err(BackupError::Busy(format!(
                    "cannot make a backup of {group} now"
                )));
            }
            id = format!("{stamp}-{n}");
        }
        let reg = WriterRecord {
            group: group.to_string(),
            id: id.clone(),
            start: time,
            base: base.as_ref().map(|b| b.id.clone()),
        };
        let path = self
            .root
            .join("writers")
            .join(uuid::Uuid::new_v4().simple().to_string());
        let mut f = File::create(&path).map_err(io("making", &path))?;
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(io("locking", &path)(std::io::Error::last_os_error()));
        }
        f.write_all(&serde_json::to_vec(&reg).expect("serializes"))
            .map_err(io("writing", &path))?;
        Ok(Writer {
            store: self.clone(),
            group: group.to_string(),
            id,
            time,
            archives: Vec::new(),
            base,
            reg: Some((path, f)),
            stats: Stats::default(),
        })
    }

    /// The store's file system's clock: the time a file of it takes when touched now (on
    /// NFS, the server's clock, which chunk times follow).
    pub(crate) fn fs_now(&self) -> Result<i64> {
        use std::os::unix::fs::OpenOptionsExt;
        let p = self.root.join("clock");
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&p)
            .map_err(io("making", &p))?;
        // SAFETY: futimens on a descriptor this function owns; null sets both times to now.
        if unsafe { libc::futimens(f.as_raw_fd(), std::ptr::null()) } != 0 {
            return Err(io("touching", &p)(std::io::Error::last_os_error()));
        }
        use std::os::unix::fs::MetadataExt;
        Ok(f.metadata().map_err(io("reading", &p))?.mtime())
    }

    /// The backups being taken now (their writers hold their records' locks), each one's
    /// `start` the earlier of what it wrote and its record's time on the store's file
    /// system; records of writers that died are removed, with the backup they did not
    /// finish.
    pub(crate) fn live_writers(&self) -> Result<Vec<WriterRecord>> {
        let dir = self.root.join("writers");
        let mut out = Vec::new();
        for n in names(&dir)? {
            let p = dir.join(&n);
            let Ok(f) = File::open(&p) else { continue };
            // SAFETY: flock on a descriptor this function owns.
            let free = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
            let mut rec: Option<WriterRecord> = std::fs::read(&p)
                .ok()
                .and_then(|r| serde_json::from_slice(&r).ok());
            if let (Some(r), Ok(m)) = (rec.as_mut(), f.metadata()) {
                use std::os::unix::fs::MetadataExt;
                r.start = r.start.min(m.mtime());
            }
            if free {
                // (Names checked: a record's words are the store's, which may be on a
                // share someone else writes.)
                if let Some(r) = rec.as_ref().filter(|r| {
                    check_name("group", &r.group).is_ok() && check_name("backup id", &r.id).is_ok()
                }) {
                    let d = self.backup_dir(&r.group, &r.id);
                    if !d.join("index").exists() {
                        let _ = std::fs::remove_dir_all(d);
                    }
                }
                let _ = std::fs::remove_file(&p);
            } else if let Some(r) = rec {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// The content of blob archive `name` of a backup (at most [`MAX_BLOB`] bytes).
    pub fn read_blob(&self, index: &Index, name: &str) -> Result<Vec<u8>> {
        let a = index.archive_of(name, ArchiveKind::Blob)?;
        self.read_all(&a.chunks, MAX_BLOB, name)
    }

    /// The content of the chunks `refs`, refused before anything is read when they say
    /// they hold more than `limit` bytes (an index, from an archive say, may name one chunk
    /// a million times), and as soon as they do.
    fn read_all(&self, refs: &[ChunkRef], limit: u64, what: &str) -> Result<Vec<u8>> {
        let too_big = || {
            BackupError::Corrupt(format!(
                "{what}: more than {limit} bytes, more than it can be"
            ))
        };
        let said = refs.iter().try_fold(0u64, |sum, r| sum.checked_add(r.1));
        if said.is_none_or(|n| n > limit) {
            return Err(too_big());
        }
        let mut out = Vec::new();
        for r in crate::pipeline::Reader::new(&self.chunks, refs.to_vec()) {
            out.extend(r?);
            if out.len() as u64 > limit {
                return Err(too_big());
            }
        }
        Ok(out)
    }

    /// A tree archive's metadata (at most [`MAX_META`] bytes, packed and unpacked).
    pub fn tree_meta(&self, a: &Archive) -> Result<Meta> {
        use std::io::Read;
        let packed = self.read_all(&a.meta, MAX_META, "tree metadata")?;
        let bad = |e: std::io::Error| BackupError::Corrupt(format!("tree metadata: {e}"));
        let mut raw = Vec::new();
        zstd::stream::read::Decoder::new(&packed[..])
            .map_err(bad)?
            .take(MAX_META + 1)
            .read_to_end(&mut raw)
            .map_err(bad)?;
        if raw.len() as u64 > MAX_META {
            return Err(BackupError::Corrupt(format!(
                "tree metadata: more than {MAX_META} bytes unpacked"
            )));
        }
        serde_json::from_slice(&raw)
            .map_err(|e| BackupError::Corrupt(format!("tree metadata: {e}")))
    }

    /// Restores tree archive `name` into new directory `target`, device nodes included.
    pub fn restore_tree(
        &self,
        index: &Index,
        name: &str,
        target: &Path,
        progress: &mut dyn FnMut(u64),
    ) -> Result<()> {
        self.restore_tree_as(index, name, target, true, progress)
    }

    /// As [`Store::restore_tree`]; without `devices`, a tree holding a device node other
    /// than overlayfs's whiteouts is refused before anything is made.
    pub fn restore_tree_as(
        &self,
        index: &Index,
        name: &str,
        target: &Path,
        devices: bool,
        progress: &mut dyn FnMut(u64),
    ) -> Result<()> {
        let a = index.archive_of(name, ArchiveKind::Tree)?;
        let meta = self.tree_meta(a)?;
        tree::restore(&self.chunks, &meta, &a.chunks, target, devices, progress)
    }

    /// Restores disk archive `name` into new file `target`.
    pub fn restore_block(
        &self,
        index: &Index,
        name: &str,
        target: &Path,
        progress: &mut dyn FnMut(u64),
    ) -> Result<()> {
        let a = index.archive_of(name, ArchiveKind::Block)?;
        crate::block::restore(&self.chunks, &a.chunks, target, progress)
    }
}

impl Store {
    /// Writes disk archive `name` over the existing file or device `target` (of its size
    /// or more), every chunk checked as it is read.
    pub fn write_block_into(
        &self,
        index: &Index,
        name: &str,
        target: &Path,
        progress: &mut dyn FnMut(u64),
    ) -> Result<()> {
        self.write_block(
            index,
            name,
            target,
            crate::block::Target::Existing,
            progress,
        )
    }

    fn write_block(
        &self,
        index: &Index,
        name: &str,
        target: &Path,
        how: crate::block::Target,
        progress: &mut dyn FnMut(u64),
    ) -> Result<()> {
        let a = index.archive_of(name, ArchiveKind::Block)?;
        crate::block::write_to(&self.chunks, &a.chunks, target, how, progress)
    }

    /// Writes disk archive `name` through `write` (offset, bytes), every chunk checked as it
    /// is read; zero chunks left out when the target reads as zeros (`zeroed`). `what`
    /// names the target in errors.
    pub fn write_block_with(
        &self,
        index: &Index,
        name: &str,
        zeroed: bool,
        write: &mut dyn FnMut(u64, &[u8]) -> std::io::Result<()>,
        what: &Path,
        progress: &mut dyn FnMut(u64),
    ) -> Result<()> {
        let a = index.archive_of(name, ArchiveKind::Block)?;
        crate::block::write_with(&self.chunks, &a.chunks, zeroed, write, what, progress)
    }

    /// As [`Store::write_block_into`], into a file or device just made, which reads as
    /// zeros: the archive's zero chunks are not written (a sparse file stays sparse).
    pub fn write_block_into_zeroed(
        &self,
        index: &Index,
        name: &str,
        target: &Path,
        progress: &mut dyn FnMut(u64),
    ) -> Result<()> {
        self.write_block(index, name, target, crate::block::Target::Zeroed, progress)
    }
}

/// What `writers/UUID` says.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct WriterRecord {
    pub group: String,
    pub id: String,
    pub start: i64,
    pub base: Option<String>,
}

/// A backup being taken: archives are added one by one, then [`Writer::finish`] writes its
/// index. Dropped unfinished, it leaves nothing a later `gc` keeps.
pub struct Writer {
    store: Store,
    group: String,
    id: String,
    time: i64,
    archives: Vec<Archive>,
    base: Option<Index>,
    reg: Option<(PathBuf, File)>,
    stats: Stats,
}

impl Writer {
    /// This backup's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The backup it builds on (its group's latest complete one when it started).
    pub fn base(&self) -> Option<&Index> {
        self.base.as_ref()
    }

    /// The store it writes into.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// What it did so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The group it belongs to.
    pub fn group(&self) -> &str {
        &self.group
    }

    fn add(&mut self, a: Archive) -> Result<()> {
        check_name("archive", &a.name)?;
        if self.archives.iter().any(|b| b.name == a.name) {
            return Err(BackupError::Invalid(format!(
                "archive {:?} added twice",
                a.name
            )));
        }
        self.archives.push(a);
        Ok(())
    }

    fn store_bytes(&mut self, data: &[u8]) -> Result<Vec<ChunkRef>> {
        let mut s = crate::pipeline::Storer::new(&self.store.chunks)?;
        for piece in data.chunks(crate::block::BLOCK_CHUNK) {
            s.push(piece.to_vec())?;
        }
        let (refs, st) = s.finish()?;
        self.stats.add(&st);
        Ok(refs)
    }

    /// Adds a few bytes (a configuration) as archive `name`.
    pub fn blob(&mut self, name: &str, data: &[u8]) -> Result<()> {
        let chunks = self.store_bytes(data)?;
        self.stats.bytes += data.len() as u64;
        self.add(Archive {
            name: name.to_string(),
            kind: ArchiveKind::Blob,
            size: data.len() as u64,
            chunks,
            meta: Vec::new(),
            source: None,
        })
    }

    /// Adds the file tree at `path` as archive `name`.
    pub fn tree(
        &mut self,
        name: &str,
        path: &Path,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Stats> {
        let earlier = match self
            .base
            .as_ref()
            .and_then(|b| b.archive(name).ok())
            .filter(|a| a.kind == ArchiveKind::Tree)
        {
            Some(a) => match self
                .store
                .tree_meta(a)
                .and_then(|m| Earlier::new(&m, &a.chunks))
            {
                Ok(e) => Some(e),
                Err(e) => {
                    tracing::warn!(error = %e, "the backup before cannot be built on; reading every file");
                    None
                }
            },
            None => None,
        };
        let (meta, chunks, stats) = tree::backup(
            &self.store.chunks,
            path,
            self.store.config.chunk,
            earlier.as_ref(),
            progress,
        )?;
        let raw = serde_json::to_vec(&meta).expect("serializes");
        let packed = zstd::bulk::compress(&raw, 3)
            .map_err(|e| BackupError::Invalid(format!("compressing metadata: {e}")))?;
        let meta_refs = self.store_bytes(&packed)?;
        self.stats.add(&stats);
        self.add(Archive {
            name: name.to_string(),
            kind: ArchiveKind::Tree,
            size: stats.bytes,
            chunks,
            meta: meta_refs,
            source: None,
        })?;
        Ok(stats)
    }

    /// The archive `name` of the backup this one builds on, if it is a disk.
    pub fn base_disk(&self, name: &str) -> Option<&Archive> {
        self.base
            .as_ref()
            .and_then(|b| b.archive(name).ok())
            .filter(|a| a.kind == ArchiveKind::Block)
    }

    /// Adds disk archive `name` as the backup this one builds on holds it, if that was read
    /// from a source with stamp `source` ([`crate::block::stamp`]): returns whether it did.
    pub fn reuse_disk(&mut self, name: &str, source: &str) -> Result<bool> {
        let Some(a) = self
            .base_disk(name)
            .filter(|a| a.source.as_deref() == Some(source))
        else {
            return Ok(false);
        };
        let a = a.clone();
        self.stats.add(&Stats {
            bytes: a.size,
            known_chunks: a.chunks.len() as u64,
            files_reused: 1,
            ..Stats::default()
        });
        self.add(a)?;
        Ok(true)
    }

    /// Adds the file or block device at `path` as disk archive `name`. A regular file
    /// unchanged since the backup this one builds on (same [`crate::block::stamp`]) is not
    /// read again; nor are its holes.
    pub fn block(
        &mut self,
        name: &str,
        path: &Path,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Stats> {
        let is_file = std::fs::metadata(path)
            .map_err(io("reading", path))?
            .is_file();
        let source = if is_file {
            let s = crate::block::stamp(path)?;
            if self.reuse_disk(name, &s)? {
                let size = self.archives.last().map_or(0, |a| a.size);
                return Ok(Stats {
                    bytes: size,
                    files_reused: 1,
                    ..Stats::default()
                });
            }
            Some(s)
        } else {
            None
        };
        self.block_stamped(name, path, source, progress)
    }

    /// Adds the file or block device at `path` as disk archive `name`, read whole (but for a
    /// file's holes), recording `source` as what it was read from.
    pub fn block_stamped(
        &mut self,
        name: &str,
        path: &Path,
        source: Option<String>,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Stats> {
        let (chunks, stats) = crate::block::backup(&self.store.chunks, path, progress)?;
        self.stats.add(&stats);
        self.add(Archive {
            name: name.to_string(),
            kind: ArchiveKind::Block,
            size: stats.bytes,
            chunks,
            meta: Vec::new(),
            source,
        })?;
        Ok(stats)
    }

    /// Adds disk archive `name`, of which only the byte ranges `dirty` changed since the
    /// backup this one builds on: see [`crate::block::backup_changed`].
    pub fn block_changed(
        &mut self,
        name: &str,
        size: u64,
        dirty: &[(u64, u64)],
        what: &Path,
        read: &mut dyn FnMut(u64, &mut [u8]) -> std::io::Result<()>,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Stats> {
        let base = self
            .base_disk(name)
            .ok_or_else(|| {
                BackupError::Invalid(format!("no earlier backup of disk {name:?} to build on"))
            })?
            .chunks
            .clone();
        let (chunks, stats) = crate::block::backup_changed(
            &self.store.chunks,
            what,
            &base,
            size,
            dirty,
            read,
            progress,
        )?;
        self.stats.add(&stats);
        self.add(Archive {
            name: name.to_string(),
            kind: ArchiveKind::Block,
            size,
            chunks,
            meta: Vec::new(),
            source: None,
        })?;
        Ok(stats)
    }

    /// Adds a disk read from `input` (a stream) as archive `name`; `what` names it in errors.
    pub fn block_from(
        &mut self,
        name: &str,
        input: impl std::io::Read,
        what: &Path,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Stats> {
        let (chunks, stats) = crate::block::backup_from(&self.store.chunks, input, what, progress)?;
        self.stats.add(&stats);
        self.add(Archive {
            name: name.to_string(),
            kind: ArchiveKind::Block,
            size: stats.bytes,
            chunks,
            meta: Vec::new(),
            source: None,
        })?;
        Ok(stats)
    }

    /// Writes the index once every chunk it names is durable: the backup exists from here.
    pub fn finish(
        mut self,
        labels: std::collections::BTreeMap<String, String>,
    ) -> Result<(Index, Stats)> {
        let index = Index {
            format: FORMAT,
            group: self.group.clone(),
            id: self.id.clone(),
            time: self.time,
            archives: std::mem::take(&mut self.archives),
            labels,
        };
        self.store.chunks.sync()?;
        let p = self.store.backup_dir(&self.group, &self.id).join("index");
        write_whole(&p, &index.encode())?;
        if let Some((path, _f)) = self.reg.take() {
            let _ = std::fs::remove_file(path);
        }
        Ok((index, self.stats))
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if let Some((path, _f)) = self.reg.take() {
            let _ = std::fs::remove_dir_all(self.store.backup_dir(&self.group, &self.id));
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Writes `data` to `path` whole: a temporary file, synced, renamed over it, the directory
/// synced.
pub(crate) fn write_whole(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let r = (|| -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(d) = path.parent() {
            File::open(d)?.sync_all()?;
        }
        Ok(())
    })();
    r.map_err(io("writing", path))
}

/// Names in a directory (none if it does not exist), sorted, hidden ones left out.
fn names(dir: &Path) -> Result<Vec<String>> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io("reading", dir)(e)),
    };
    let mut out: Vec<String> = rd
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| !n.starts_with('.') && !n.ends_with(".tmp"))
        .collect();
    out.sort();
    Ok(out)
}

pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `YYYYMMDDTHHMMSSZ` of a time (seconds since the epoch, UTC).
pub fn utc_id(secs: i64) -> String {
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    let (y, m, d) = civil(days);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The UTC day of a time, as days since the epoch.
pub fn day_of(secs: i64) -> i64 {
    secs.div_euclid(86400)
}

/// Year, month, day of days since 1970-01-01 (Howard Hinnant's algorithm).
fn civil(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_utc_times() {
        assert_eq!(utc_id(0), "19700101T000000Z");
        assert_eq!(utc_id(1_796_299_261), "20261203T120101Z");
        assert_eq!(utc_id(951_782_400), "20000229T000000Z");
    }

    #[test]
    fn names_that_would_leave_the_store_are_refused() {
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            ".hidden",
            &"x".repeat(129),
            "a b",
        ] {
            assert!(check_name("group", bad).is_err(), "{bad:?}");
        }
        check_name("group", "web-01.acme_x").unwrap();
    }
}
