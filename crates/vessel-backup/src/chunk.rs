//! Chunks: pieces of data stored once, named by the SHA-256 of their content, compressed
//! with zstd where that helps, and checked against their name on every read.
//!
//! A chunk file is `chunks/XY/DIGEST`: a 5-byte header (`VCK1`, then 0 for stored as is or 1
//! for zstd) and the data. A chunk is written to a temporary name and renamed, so a chunk
//! file is whole or absent; its durability comes from one `syncfs` before the index that
//! names it is written.
//!
//! Writers and the garbage collector meet at `chunks.lock`: a writer holds it shared while
//! it finds a chunk present (and touches it, so that its modification time is recent) or
//! writes it; the collector holds it exclusively while it looks at a chunk's time a last
//! time and removes it. A chunk a writer relies on is thus either touched before the
//! collector looks (and kept) or removed before the writer looks (and written again).

use std::fmt;
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

use crate::error::{io, BackupError, Result};

/// The largest chunk the store accepts (larger ones are refused as damaged on read).
pub const MAX_CHUNK: usize = 16 << 20;

const MAGIC: &[u8; 4] = b"VCK1";
const RAW: u8 = 0;
const ZSTD: u8 = 1;

/// A chunk's name: the SHA-256 of its content.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// The digest of `data`.
    pub fn of(data: &[u8]) -> Digest {
        Digest(Sha256::digest(data).into())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

impl FromStr for Digest {
    type Err = BackupError;
    fn from_str(s: &str) -> Result<Digest> {
        let mut d = [0u8; 32];
        if s.len() != 64 || hex::decode_to_slice(s, &mut d).is_err() {
            return Err(BackupError::Corrupt(format!(
                "{:?} is not a chunk name (64 hex digits)",
                s.chars().take(80).collect::<String>()
            )));
        }
        Ok(Digest(d))
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Digest, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The chunk files of a store.
#[derive(Debug, Clone)]
pub struct Chunks {
    dir: PathBuf,
    lock: PathBuf,
    level: i32,
}

/// One thread's handle on `chunks.lock` (a lock belongs to an open file, so each thread
/// opens its own).
pub struct ChunkLock(File);

impl ChunkLock {
    fn flock(&self, op: libc::c_int) -> std::io::Result<()> {
        loop {
            // SAFETY: flock on a file descriptor this handle owns.
            if unsafe { libc::flock(self.0.as_raw_fd(), op) } == 0 {
                return Ok(());
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

/// Holds a [`ChunkLock`] until dropped.
pub struct Held<'a>(&'a ChunkLock);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let _ = self.0.flock(libc::LOCK_UN);
    }
}

/// What storing a chunk did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// It was there already (and was touched).
    Present,
    /// It was written, taking this many bytes.
    Written(u64),
}

impl Chunks {
    /// The chunks under store root `root`, compressed at zstd `level`.
    pub fn new(root: &Path, level: i32) -> Chunks {
        Chunks {
            dir: root.join("chunks"),
            lock: root.join("chunks.lock"),
            level,
        }
    }

    /// Makes the chunk directories (256 of them).
    pub fn create(&self) -> Result<()> {
        for i in 0..=255u8 {
            let d = self.dir.join(hex::encode([i]));
            std::fs::create_dir_all(&d).map_err(io("creating", &d))?;
        }
        File::create(&self.lock).map_err(io("creating", &self.lock))?;
        Ok(())
    }

    /// The file of chunk `d`.
    pub fn path(&self, d: &Digest) -> PathBuf {
        let name = d.to_string();
        self.dir.join(&name[..2]).join(name)
    }

    /// A handle on the lock for this thread.
    pub fn lock(&self) -> Result<ChunkLock> {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.lock)
            .map_err(io("opening", &self.lock))?;
        Ok(ChunkLock(f))
    }

    /// Holds `lock` shared (writers) or exclusively (the collector).
    pub fn hold<'a>(&self, lock: &'a ChunkLock, exclusive: bool) -> Result<Held<'a>> {
        let op = if exclusive {
            libc::LOCK_EX
        } else {
            libc::LOCK_SH
        };
        lock.flock(op).map_err(io("locking", &self.lock))?;
        Ok(Held(lock))
    }

    /// Stores `data` as chunk `d` (its digest, computed by the caller) unless it is stored
    /// already, in which case it is touched; holds `lock` shared meanwhile. A chunk file
    /// too short to be one (a crash before the file system wrote what a rename made
    /// visible leaves it empty) is written again, not taken as stored: every later backup
    /// would name it.
    pub fn insert(&self, lock: &ChunkLock, d: &Digest, data: &[u8]) -> Result<Stored> {
        let path = self.path(d);
        let _held = self.hold(lock, false)?;
        if touch(&path).map_err(io("touching", &path))? {
            let len = std::fs::metadata(&path)
                .map_err(io("inspecting", &path))?
                .len();
            if len > 5 || (len == 5 && data.is_empty()) {
                return Ok(Stored::Present);
            }
        }
        let body = encode(data, self.level)?;
        let tmp = path.with_file_name(format!(".{}.{}.tmp", d, uuid::Uuid::new_v4().simple()));
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(&body)?;
            std::fs::rename(&tmp, &path)
        };
        if let Err(e) = write() {
            let _ = std::fs::remove_file(&tmp);
            return Err(BackupError::Io {
                what: "writing chunk",
                path,
                source: e,
            });
        }
        Ok(Stored::Written(body.len() as u64))
    }

    /// Stores a chunk file's bytes as they came (from an archive), once they decode to
    /// content matching `d`.
    pub fn put_raw(&self, d: &Digest, raw: &[u8]) -> Result<()> {
        let data = decode(raw).map_err(|why| BackupError::Corrupt(format!("chunk {d}: {why}")))?;
        if Digest::of(&data) != *d {
            return Err(BackupError::Corrupt(format!(
                "chunk {d}: its content does not match its name"
            )));
        }
        let path = self.path(d);
        let tmp = path.with_file_name(format!(".{d}.import.tmp"));
        std::fs::write(&tmp, raw)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(io("writing chunk", &path))
    }

    /// Chunk `d`'s content, checked against its name. Only a regular file of at most a
    /// chunk's size is read, never through a link (the store may be on a share someone
    /// else writes: a link to /dev/zero would be read without end).
    pub fn read(&self, d: &Digest) -> Result<Vec<u8>> {
        use std::io::Read;
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.path(d);
        let f = match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(BackupError::Corrupt(format!("chunk {d} is missing")));
            }
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Err(BackupError::Corrupt(format!("chunk {d} is a link")));
            }
            Err(e) => return Err(io("reading chunk", &path)(e)),
        };
        let meta = f.metadata().map_err(io("reading chunk", &path))?;
        let most = MAX_CHUNK as u64 + 5;
        if !meta.is_file() || meta.len() > most {
            return Err(BackupError::Corrupt(format!(
                "chunk {d} is not a chunk file (not a regular file of at most {most} bytes)"
            )));
        }
        let mut raw = Vec::with_capacity(meta.len() as usize);
        f.take(most + 1)
            .read_to_end(&mut raw)
            .map_err(io("reading chunk", &path))?;
        let data = decode(&raw).map_err(|why| BackupError::Corrupt(format!("chunk {d}: {why}")))?;
        if Digest::of(&data) != *d {
            return Err(BackupError::Corrupt(format!(
                "chunk {d}: its content does not match its name"
            )));
        }
        Ok(data)
    }

    /// Every chunk file: its digest (`None` for a file that is not a chunk's), path and
    /// modification time (seconds).
    pub fn walk(&self, mut f: impl FnMut(Option<Digest>, &Path, i64) -> Result<()>) -> Result<()> {
        for i in 0..=255u8 {
            let d = self.dir.join(hex::encode([i]));
            let rd = match std::fs::read_dir(&d) {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io("reading", &d)(e)),
            };
            for e in rd {
                let e = e.map_err(io("reading", &d))?;
                let path = e.path();
                let Ok(meta) = std::fs::symlink_metadata(&path) else {
                    continue;
                };
                let digest = std::str::from_utf8(e.file_name().as_bytes())
                    .ok()
                    .and_then(|n| n.parse().ok());
                use std::os::unix::fs::MetadataExt;
                f(digest, &path, meta.mtime())?;
            }
        }
        Ok(())
    }

    /// Makes every chunk written so far durable (one `syncfs` of the store's file system).
    pub fn sync(&self) -> Result<()> {
        let f = File::open(&self.dir).map_err(io("opening", &self.dir))?;
        // SAFETY: syncfs on a file descriptor this function owns.
        if unsafe { libc::syncfs(f.as_raw_fd()) } != 0 {
            return Err(io("syncing", &self.dir)(std::io::Error::last_os_error()));
        }
        Ok(())
    }
}

/// Sets `path`'s times to now; `false` if it does not exist.
fn touch(path: &Path) -> std::io::Result<bool> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: a valid C string and a null times pointer (now).
    let r = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), std::ptr::null(), 0) };
    if r == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.kind() == std::io::ErrorKind::NotFound {
        Ok(false)
    } else {
        Err(e)
    }
}

/// The bytes of a chunk file for `data`: compressed when that saves something.
fn encode(data: &[u8], level: i32) -> Result<Vec<u8>> {
    let packed = zstd::bulk::compress(data, level)
        .map_err(|e| BackupError::Invalid(format!("compressing a chunk: {e}")))?;
    let (kind, body) = if packed.len() < data.len() {
        (ZSTD, &packed[..])
    } else {
        (RAW, data)
    };
    let mut out = Vec::with_capacity(body.len() + 5);
    out.extend_from_slice(MAGIC);
    out.push(kind);
    out.extend_from_slice(body);
    Ok(out)
}

/// The data of a chunk file.
fn decode(raw: &[u8]) -> std::result::Result<Vec<u8>, String> {
    if raw.len() < 5 || &raw[..4] != MAGIC {
        return Err("not a chunk file (bad header)".into());
    }
    match raw[4] {
        RAW if raw.len() - 5 <= MAX_CHUNK => Ok(raw[5..].to_vec()),
        RAW => Err("larger than a chunk can be".into()),
        ZSTD => zstd::bulk::decompress(&raw[5..], MAX_CHUNK)
            .map_err(|e| format!("does not decompress: {e}")),
        k => Err(format!("unknown kind {k}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (PathBuf, Chunks) {
        let root = std::env::temp_dir().join(format!("vessel-chunks-{}", uuid::Uuid::new_v4()));
        let c = Chunks::new(&root, 3);
        c.create().unwrap();
        (root, c)
    }

    #[test]
    fn a_chunk_is_stored_once_and_read_back_checked() {
        let (root, c) = store();
        let lock = c.lock().unwrap();
        let data = b"hello hello hello hello hello hello".repeat(100);
        let d = Digest::of(&data);
        assert!(matches!(c.insert(&lock, &d, &data).unwrap(), Stored::Written(n) if n < 200));
        assert_eq!(c.insert(&lock, &d, &data).unwrap(), Stored::Present);
        assert_eq!(c.read(&d).unwrap(), data);
        // Random data is kept as it is.
        let noise: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let n = Digest::of(&noise);
        c.insert(&lock, &n, &noise).unwrap();
        assert_eq!(c.read(&n).unwrap(), noise);
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn a_chunk_file_that_is_a_link_or_no_file_is_not_read() {
        let (root, c) = store();
        let lock = c.lock().unwrap();
        let data = b"linked".repeat(100);
        let d = Digest::of(&data);
        c.insert(&lock, &d, &data).unwrap();
        let path = c.path(&d);
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink("/dev/zero", &path).unwrap();
        let err = c.read(&d).unwrap_err();
        assert!(err.to_string().contains("is a link"), "{err}");
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        assert!(c.read(&d).is_err());
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn a_chunk_file_left_empty_by_a_crash_is_written_again() {
        let (root, c) = store();
        let lock = c.lock().unwrap();
        let data = b"torn".repeat(500);
        let d = Digest::of(&data);
        c.insert(&lock, &d, &data).unwrap();
        std::fs::write(c.path(&d), b"").unwrap();
        assert!(c.read(&d).is_err());
        assert!(matches!(
            c.insert(&lock, &d, &data).unwrap(),
            Stored::Written(_)
        ));
        assert_eq!(c.read(&d).unwrap(), data);
        assert_eq!(c.insert(&lock, &d, &data).unwrap(), Stored::Present);
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn every_byte_flipped_in_a_chunk_file_is_found() {
        let (root, c) = store();
        let lock = c.lock().unwrap();
        for data in [
            b"abc".repeat(300),
            (0..600u32).map(|i| (i * 7919 % 251) as u8).collect(),
        ] {
            let d = Digest::of(&data);
            c.insert(&lock, &d, &data).unwrap();
            let path = c.path(&d);
            let good = std::fs::read(&path).unwrap();
            for i in 0..good.len() {
                let mut bad = good.clone();
                bad[i] ^= 0x01;
                std::fs::write(&path, &bad).unwrap();
                let e = c.read(&d).unwrap_err();
                assert!(matches!(e, BackupError::Corrupt(_)), "byte {i}: {e}");
            }
            std::fs::write(&path, &good[..good.len() - 1]).unwrap();
            assert!(matches!(c.read(&d), Err(BackupError::Corrupt(_))));
            std::fs::remove_file(&path).unwrap();
            assert!(c.read(&d).unwrap_err().to_string().contains("missing"));
        }
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn names_that_are_not_digests_are_refused() {
        for bad in [
            "",
            "ab",
            &"g".repeat(64),
            &"a".repeat(63),
            "../../etc/passwd",
        ] {
            assert!(bad.parse::<Digest>().is_err(), "{bad}");
        }
        let d = Digest::of(b"x");
        assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
    }
}
