//! A content-addressed store of blobs (`<dir>/sha256/<hex>`), written atomically and verified.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

/// A `sha256:<64 hex>` content digest.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct Digest(String);

/// Errors of the blob store.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// A digest string is not `sha256:` followed by 64 lower-case hex digits.
    #[error("invalid digest {0:?}: expected sha256:<64 hex digits>")]
    InvalidDigest(String),
    /// Content did not hash to the digest it was announced with.
    #[error("content does not match its digest: expected {expected}, got {actual}")]
    Mismatch {
        /// The announced digest.
        expected: Digest,
        /// What the bytes hash to.
        actual: Digest,
    },
    /// Content was larger than announced or allowed.
    #[error("blob larger than the {limit} bytes allowed")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// The store's files could not be read or written.
    #[error("blob store {path}: {op}")]
    Io {
        /// File or directory.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// Cause.
        #[source]
        source: io::Error,
    },
}

/// Result of blob store calls.
pub type Result<T> = std::result::Result<T, BlobError>;

impl Digest {
    /// Parses `sha256:<hex>`.
    pub fn parse(s: &str) -> Result<Self> {
        let ok = s.strip_prefix("sha256:").is_some_and(|h| {
            h.len() == 64
                && h.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        });
        if ok {
            Ok(Self(s.to_string()))
        } else {
            Err(BlobError::InvalidDigest(s.to_string()))
        }
    }

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(format!("sha256:{}", hex::encode(Sha256::digest(bytes))))
    }

    /// The 64 hex digits.
    pub fn hex(&self) -> &str {
        &self.0[7..]
    }

    /// The whole `sha256:<hex>` string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Digest {
    type Error = BlobError;
    fn try_from(s: String) -> Result<Self> {
        Self::parse(&s)
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.0
    }
}

/// A writer that hashes what passes through it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> HashingWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            written: 0,
        }
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The digest of everything written, and the inner writer.
    pub fn finish(self) -> (Digest, W) {
        (
            Digest(format!("sha256:{}", hex::encode(self.hasher.finalize()))),
            self.inner,
        )
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Content-addressed blobs under one directory.
#[derive(Debug, Clone)]
pub struct BlobStore {
    dir: PathBuf,
}

impl BlobStore {
    /// A store rooted at `dir` (created when missing).
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        let sha = dir.join("sha256");
        fs::create_dir_all(&sha).map_err(|source| BlobError::Io {
            path: sha.clone(),
            op: "create directory",
            source,
        })?;
        Ok(Self { dir })
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the blob with this digest lives (whether or not it is there).
    pub fn path(&self, d: &Digest) -> PathBuf {
        self.dir.join("sha256").join(d.hex())
    }

    /// Whether the blob is stored.
    pub fn has(&self, d: &Digest) -> bool {
        self.path(d).is_file()
    }

    /// Opens a stored blob.
    pub fn open_blob(&self, d: &Digest) -> Result<File> {
        let p = self.path(d);
        File::open(&p).map_err(|source| BlobError::Io {
            path: p,
            op: "open blob",
            source,
        })
    }

    /// Stores everything `r` yields (at most `limit` bytes); when `expected` is given the
    /// content must hash to it, else nothing is stored. Returns the digest and size.
    pub fn put(
        &self,
        r: &mut dyn Read,
        expected: Option<&Digest>,
        limit: u64,
    ) -> Result<(Digest, u64)> {
        let tmp = self.dir.join(format!(
            ".tmp-{}-{:x}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        let io = |op, source| BlobError::Io {
            path: tmp.clone(),
            op,
            source,
        };
        let file = File::create(&tmp).map_err(|e| io("create", e))?;
        let result = (|| {
            let (digest, size, file) = checked_copy(r, file, expected, limit, |e| io("write", e))?;
            file.sync_all().map_err(|e| io("sync", e))?;
            let dest = self.path(&digest);
            fs::rename(&tmp, &dest).map_err(|e| io("rename into place", e))?;
            Ok((digest, size))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// Reads everything `r` yields (at most `limit` bytes) and checks that it hashes to
    /// `expected`, storing nothing: for content the store has already, which a source must
    /// still prove it holds. Returns the size.
    pub fn verify(r: &mut dyn Read, expected: &Digest, limit: u64) -> Result<u64> {
        let io = |source| BlobError::Io {
            path: PathBuf::from(expected.as_str()),
            op: "read",
            source,
        };
        checked_copy(r, io::sink(), Some(expected), limit, io).map(|(_, size, _)| size)
    }

    /// A writer whose content becomes a blob when committed (and is discarded otherwise), for
    /// producers that compute a blob while writing it.
    pub fn writer(&self) -> Result<BlobWriter> {
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let tmp = self.dir.join(format!(
            ".tmp-w-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let file = File::create(&tmp).map_err(|source| BlobError::Io {
            path: tmp.clone(),
            op: "create",
            source,
        })?;
        Ok(BlobWriter {
            store: self.clone(),
            tmp,
            w: Some(HashingWriter::new(file)),
        })
    }

    /// Stores a byte slice.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<Digest> {
        self.put(&mut &bytes[..], None, bytes.len() as u64)
            .map(|(d, _)| d)
    }
}

/// Copies at most `limit` bytes of `r` into `w`, hashing them: their digest and size, and
/// `w`. More than `limit` bytes, or a digest other than `expected`, is refused.
fn checked_copy<W: Write>(
    r: &mut dyn Read,
    w: W,
    expected: Option<&Digest>,
    limit: u64,
    io_err: impl Fn(io::Error) -> BlobError,
) -> Result<(Digest, u64, W)> {
    let mut w = HashingWriter::new(w);
    io::copy(&mut r.take(limit + 1), &mut w).map_err(io_err)?;
    if w.written() > limit {
        return Err(BlobError::TooLarge { limit });
    }
    let size = w.written();
    let (digest, w) = w.finish();
    match expected {
        Some(exp) if *exp != digest => Err(BlobError::Mismatch {
            expected: exp.clone(),
            actual: digest,
        }),
        _ => Ok((digest, size, w)),
    }
}

/// A blob being written (see [`BlobStore::writer`]); removed unless committed.
pub struct BlobWriter {
    store: BlobStore,
    tmp: PathBuf,
    w: Option<HashingWriter<File>>,
}

impl BlobWriter {
    /// Syncs the content and moves it into place under its digest; returns digest and size.
    pub fn commit(mut self) -> Result<(Digest, u64)> {
        let io = |op, source| BlobError::Io {
            path: self.tmp.clone(),
            op,
            source,
        };
        let Some(w) = self.w.take() else {
            return Err(io("commit", io::Error::other("already committed")));
        };
        let size = w.written();
        let (digest, file) = w.finish();
        let r = file.sync_all().map_err(|e| io("sync", e)).and_then(|()| {
            fs::rename(&self.tmp, self.store.path(&digest)).map_err(|e| io("rename into place", e))
        });
        if r.is_err() {
            let _ = fs::remove_file(&self.tmp);
        }
        r.map(|()| (digest, size))
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.w {
            Some(w) => w.write(buf),
            None => Err(io::Error::other("blob already committed")),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match &mut self.w {
            Some(w) => w.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if self.w.is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_parse_strictly() {
        assert!(Digest::parse(&format!("sha256:{}", "a".repeat(64))).is_ok());
        for bad in [
            "sha256:abc",
            "md5:00",
            &format!("sha256:{}", "A".repeat(64)),
            &format!("sha256:{}/..", "a".repeat(62)),
        ] {
            assert!(Digest::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn put_verifies_and_leaves_nothing_on_mismatch() {
        let dir = std::env::temp_dir().join(format!("vessel-blobs-{}", std::process::id()));
        let store = BlobStore::open(&dir).unwrap();
        let d = store.put_bytes(b"hello").unwrap();
        assert_eq!(d, Digest::of(b"hello"));
        assert!(store.has(&d));
        let wrong = Digest::of(b"other");
        assert!(matches!(
            store.put(&mut &b"hello!"[..], Some(&wrong), 100),
            Err(BlobError::Mismatch { .. })
        ));
        assert!(matches!(
            store.put(&mut &b"toolong"[..], None, 3),
            Err(BlobError::TooLarge { .. })
        ));
        let leftovers: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
        fs::remove_dir_all(dir).unwrap();
    }
}
