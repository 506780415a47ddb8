//! Safe extraction of one layer tar into a directory, in overlayfs form.
//!
//! Every parent directory is opened with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
//! RESOLVE_NO_MAGICLINKS)` from a descriptor of the staging root, and every entry is created
//! with `*at` calls that never follow a final symlink, so the kernel itself keeps writes
//! inside. The layer is unpacked into a staging directory beside `dest` and renamed into place
//! only when every entry succeeded; on any refusal nothing is left behind.
//!
//! OCI whiteouts become overlayfs whiteouts: `.wh.NAME` a character device 0:0 named `NAME`,
//! `.wh..wh..opq` the `trusted.overlay.opaque=y` xattr on its directory.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io::{self, Read};
use std::os::unix::fs::DirBuilderExt;

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest as _, Sha256};

use crate::blobs::Digest;
use crate::fsat;
use crate::media::Compression;
use crate::space::SpaceLimits;
use crate::tar::{TarError, TarReader};

mod entry;

use entry::Unpacker;

/// Prefix of OCI whiteout names.
pub const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// Name of the OCI opaque-directory marker.
pub const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
/// The overlayfs xattr that makes a directory opaque.
pub const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// Trailing bytes after the end-of-archive marker read (to verify compression checksums).
const MAX_TRAILING: u64 = 16 << 20;
/// Longest name of one path component Linux file systems store (`NAME_MAX`).
pub const MAX_NAME_LEN: usize = 255;
/// Longest path, from the layer root, a process in the container can open (`PATH_MAX` less
/// its NUL): a deeper entry could be stored but never used.
pub const MAX_PATH_LEN: usize = 4095;
/// Mode of a layer's root directory. The root belongs to the store, not to the archive: a
/// `./` entry's mode and owner are recorded in [`UnpackStats::root`] but never applied.
pub const LAYER_ROOT_MODE: u32 = 0o755;

/// Limits and permissions of an unpack.
#[derive(Debug, Clone)]
pub struct UnpackOptions {
    /// Create device nodes; when false they are skipped with a warning (counted in stats).
    pub allow_devices: bool,
    /// Set owners from the archive (needs CAP_CHOWN); when false files belong to the caller.
    pub preserve_owners: bool,
    /// Largest size one entry may claim.
    pub max_entry_size: u64,
    /// Largest sum of entry sizes.
    pub max_total_size: u64,
    /// Most entries a layer may hold.
    pub max_entries: u64,
    /// Size of the blob as stored (compressed), when known: the decompressed stream may reach
    /// at most `space.max_uncompressed(compressed_size)` bytes.
    pub compressed_size: Option<u64>,
    /// Free space to keep on the destination's file system, and the expansion ratio.
    pub space: SpaceLimits,
    /// Most bytes of names kept in memory until the end of the layer (directories, whose
    /// metadata is applied last).
    pub max_metadata: u64,
    /// The digest the uncompressed stream must have (the config's `diff_id`): the layer is
    /// stored under it, so content that does not match would poison every image naming it.
    pub diff_id: Option<Digest>,
}

impl Default for UnpackOptions {
    fn default() -> Self {
        Self {
            allow_devices: false,
            preserve_owners: true,
            max_entry_size: 16 << 30,
            max_total_size: 64 << 30,
            max_entries: 2_000_000,
            compressed_size: None,
            space: SpaceLimits::default(),
            max_metadata: 64 << 20,
            diff_id: None,
        }
    }
}

/// Mode, owner and time the archive gave its root entry (`./`); kept for the container's view
/// of `/`, never applied to the layer directory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RootMeta {
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time.
    pub mtime: i64,
}

/// What an unpack created and skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnpackStats {
    /// Tar entries read.
    pub entries: u64,
    /// Regular files written.
    pub files: u64,
    /// Directories created or updated.
    pub dirs: u64,
    /// Symlinks created.
    pub symlinks: u64,
    /// Hard links created.
    pub hardlinks: u64,
    /// Device nodes and fifos created.
    pub special: u64,
    /// Whiteouts turned into overlayfs whiteout devices.
    pub whiteouts: u64,
    /// Directories marked opaque.
    pub opaque_dirs: u64,
    /// Bytes of file data written.
    pub bytes: u64,
    /// Device nodes skipped because `allow_devices` is false.
    pub skipped_devices: u64,
    /// Extended attributes not applied (namespaces a layer may not set, or entry types that
    /// cannot carry them).
    pub skipped_xattrs: u64,
    /// Bytes of the uncompressed tar stream read.
    pub stream_bytes: u64,
    /// What the archive's `./` entry asked for the root, if it had one.
    pub root: Option<RootMeta>,
}

/// Why a layer was refused. Each names the entry so a person can find it in the archive.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// The destination is already there.
    #[error("destination {0} already exists; unpack each layer into a new directory")]
    DestExists(PathBuf),
    /// The staging directory beside the destination could not be made or moved into place.
    #[error("{op} {path}")]
    Staging {
        /// The staging or destination path.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The media type is not a layer this crate can decode.
    #[error("layer media type {0:?} is not supported (plain tar, gzip and zstd are)")]
    UnsupportedMediaType(String),
    /// The tar stream is damaged.
    #[error("the layer is not a readable tar stream")]
    Stream(#[source] TarError),
    /// Reading an entry's data failed: truncated archive or damaged compression.
    #[error(
        "reading the data of entry {entry:?}: the layer is truncated or its compression is corrupt"
    )]
    Read {
        /// Entry name.
        entry: String,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// A name holds a NUL byte.
    #[error("entry {entry:?} has a NUL byte in its name or link target")]
    NulInName {
        /// Entry name.
        entry: String,
    },
    /// A `..` would climb out of the layer root.
    #[error("entry {entry:?} climbs out of the layer root with '..'")]
    Escapes {
        /// Entry name.
        entry: String,
    },
    /// A parent of the entry is a symlink.
    #[error("entry {entry:?} would be written through a symlink")]
    ThroughSymlink {
        /// Entry name.
        entry: String,
    },
    /// A parent of the entry is not a directory.
    #[error("a parent of entry {entry:?} is not a directory")]
    NotADirectory {
        /// Entry name.
        entry: String,
    },
    /// A hard link points outside the layer root.
    #[error("hard link {entry:?} points outside the layer root (to {target:?})")]
    HardLinkOutside {
        /// Entry name.
        entry: String,
        /// Link target.
        target: String,
    },
    /// A hard link's target was not extracted before it.
    #[error(
        "hard link {entry:?} points to {target:?}, which is not an earlier file of this layer"
    )]
    HardLinkMissing {
        /// Entry name.
        entry: String,
        /// Link target.
        target: String,
    },
    /// An entry claims more bytes than allowed.
    #[error("entry {entry:?} claims {size} bytes, more than the {limit} allowed per entry")]
    EntryTooLarge {
        /// Entry name.
        entry: String,
        /// Claimed size.
        size: u64,
        /// The limit (`UnpackOptions::max_entry_size`).
        limit: u64,
    },
    /// The entries add up to more than allowed.
    #[error("the layer holds more than the {limit} bytes allowed (at entry {entry:?})")]
    TotalTooLarge {
        /// Entry where the limit was crossed.
        entry: String,
        /// The limit (`UnpackOptions::max_total_size`).
        limit: u64,
    },
    /// Too many entries.
    #[error("the layer holds more than {limit} entries")]
    TooManyEntries {
        /// The limit (`UnpackOptions::max_entries`).
        limit: u64,
    },
    /// The decompressed stream is larger than the compressed blob allows.
    #[error(
        "the layer uncompresses to more than {limit} bytes, over {ratio} times its {compressed} \
         compressed bytes: a decompression bomb (at entry {entry:?})"
    )]
    RatioExceeded {
        /// The last entry whose header was read.
        entry: String,
        /// Size of the compressed blob.
        compressed: u64,
        /// The ratio allowed.
        ratio: u64,
        /// The uncompressed bytes allowed.
        limit: u64,
    },
    /// The destination's file system would fill up.
    #[error(
        "entry {entry:?} needs {needed} bytes, but the store's file system has {free_bytes} bytes \
         and {free_inodes} inodes free and keeps {reserve_bytes} bytes and {reserve_inodes} inodes \
         free: free space on it, or the layer is a bomb"
    )]
    NoSpace {
        /// Entry being written.
        entry: String,
        /// Bytes it needs.
        needed: u64,
        /// Bytes free.
        free_bytes: u64,
        /// Inodes free.
        free_inodes: u64,
        /// Bytes kept free (`SpaceLimits::min_free_bytes`).
        reserve_bytes: u64,
        /// Inodes kept free (`SpaceLimits::min_free_inodes`).
        reserve_inodes: u64,
    },
    /// A path component is longer than file systems store.
    #[error("entry {entry:?} has a path component of {len} bytes (at most {MAX_NAME_LEN})")]
    NameTooLong {
        /// Entry name (shortened).
        entry: String,
        /// Length of the longest component.
        len: usize,
    },
    /// A path is longer than a process can open.
    #[error(
        "entry {entry:?} has a path of {len} bytes (at most {MAX_PATH_LEN}): no process in the \
         container could open it"
    )]
    PathTooLong {
        /// Entry name (shortened).
        entry: String,
        /// Length of the path from the layer root.
        len: usize,
    },
    /// The uncompressed layer does not have the digest its image announced.
    #[error(
        "the layer uncompresses to {actual}, not to the diff_id {expected} its image announces; \
         nothing was stored"
    )]
    DiffIdMismatch {
        /// The announced digest.
        expected: Digest,
        /// The digest of what was read.
        actual: Digest,
    },
    /// The directories of the layer hold more names than may be kept in memory.
    #[error("the layer's directories hold more than {limit} bytes of names (at entry {entry:?})")]
    MetadataTooLarge {
        /// Entry where the limit was crossed.
        entry: String,
        /// The limit (`UnpackOptions::max_metadata`).
        limit: u64,
    },
    /// A whiteout names nothing (`.wh.`, `.wh..`).
    #[error("whiteout {entry:?} names no file")]
    BadWhiteout {
        /// Entry name.
        entry: String,
    },
    /// An entry type this crate does not extract (sparse files, volume labels...).
    #[error("entry {entry:?} has tar type {flag:?}, which image layers do not use")]
    UnsupportedEntry {
        /// Entry name.
        entry: String,
        /// Tar type flag.
        flag: char,
    },
    /// The root entry (`./`) is not a directory, or the owner does not fit in 32 bits.
    #[error("entry {entry:?} is invalid: {why}")]
    Invalid {
        /// Entry name.
        entry: String,
        /// What is wrong.
        why: &'static str,
    },
    /// More than a little data follows the end-of-archive marker.
    #[error("more than {MAX_TRAILING} bytes follow the end of the archive")]
    TrailingData,
    /// Creating an entry failed.
    #[error("entry {entry:?}: {op}")]
    Io {
        /// Entry name.
        entry: String,
        /// What was being done.
        op: &'static str,
        /// Cause.
        #[source]
        source: io::Error,
    },
}

type Result<T> = std::result::Result<T, UnpackError>;

/// A printable form of a raw entry name; very long names are shortened (the middle goes).
pub(crate) fn show(b: &[u8]) -> String {
    const KEEP: usize = 200;
    if b.len() <= 2 * KEEP {
        return String::from_utf8_lossy(b).into_owned();
    }
    format!(
        "{}...({} bytes)...{}",
        String::from_utf8_lossy(&b[..KEEP]),
        b.len() - 2 * KEEP,
        String::from_utf8_lossy(&b[b.len() - KEEP..])
    )
}

/// A reader that stops with an error once more than `limit` bytes passed, and counts and
/// hashes them.
pub(crate) struct Bounded<R> {
    inner: R,
    limit: u64,
    count: Rc<Cell<u64>>,
    hash: Rc<std::cell::RefCell<Sha256>>,
}

/// The digest `hash` holds (it starts again after).
fn digest_of(hash: &std::cell::RefCell<Sha256>) -> Result<Digest> {
    let hex = hex::encode(hash.replace(Sha256::new()).finalize());
    Digest::parse(&format!("sha256:{hex}"))
        .map_err(|e| UnpackError::Stream(TarError::Io(io::Error::other(e))))
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.borrow_mut().update(&buf[..n]);
        let total = self.count.get().saturating_add(n as u64);
        self.count.set(total);
        if total > self.limit {
            return Err(io::Error::other(format!(
                "the uncompressed stream exceeds {} bytes",
                self.limit
            )));
        }
        Ok(n)
    }
}

/// Splits a tar path into components, dropping empty and `.` ones and a leading `/`
/// (relative to the root, as tar does) and resolving `..` lexically; `None` if `..`
/// would climb above the root.
pub(crate) fn normalize(path: &[u8]) -> Option<Vec<&[u8]>> {
    let mut out: Vec<&[u8]> = Vec::new();
    for c in path.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                out.pop()?;
            }
            c => out.push(c),
        }
    }
    Some(out)
}

/// The digest of a layer blob's uncompressed stream (what an image config's `diff_id`
/// names), read under the same bound on expansion as [`unpack_layer`]: for a layer stored
/// already under a diff_id, to check that another blob an image names really has it.
pub fn layer_diff_id(reader: impl Read, media_type: &str, opts: &UnpackOptions) -> Result<Digest> {
    let mut stream = uncompressed(reader, media_type, opts)?;
    io::copy(&mut stream, &mut io::sink()).map_err(|e| UnpackError::Stream(TarError::Io(e)))?;
    digest_of(&stream.hash)
}

/// A layer blob's uncompressed stream (`media_type` says its compression), counted and
/// hashed as it is read, and refused past the bound `opts` puts on its expansion.
fn uncompressed<'a>(
    reader: impl Read + 'a,
    media_type: &str,
    opts: &UnpackOptions,
) -> Result<Bounded<Box<dyn Read + 'a>>> {
    let compression = Compression::from_media_type(media_type)
        .ok_or_else(|| UnpackError::UnsupportedMediaType(media_type.to_string()))?;
    let decoder = compression
        .decoder(reader)
        .map_err(|e| UnpackError::Stream(TarError::Io(e)))?;
    let limit = match (compression, opts.compressed_size) {
        (Compression::None, _) | (_, None) => u64::MAX,
        (_, Some(c)) => opts.space.max_uncompressed(c),
    };
    Ok(Bounded {
        inner: decoder,
        // The tar's own headers and padding come on top of the data sizes.
        limit,
        count: Rc::new(Cell::new(0u64)),
        hash: Rc::new(std::cell::RefCell::new(Sha256::new())),
    })
}

/// Unpacks one layer (`media_type` says its compression) into `dest`, which must not exist.
/// Whiteouts are stored in overlayfs form. On error nothing is left behind.
pub fn unpack_layer(
    reader: impl Read,
    media_type: &str,
    dest: &Path,
    opts: &UnpackOptions,
) -> Result<UnpackStats> {
    let stream = uncompressed(reader, media_type, opts)?;
    let (count, hash, ratio_limit) = (stream.count.clone(), stream.hash.clone(), stream.limit);
    let staging = make_staging(dest)?;
    let mut last_entry = String::new();
    let result = (|| {
        let root = fsat::open_dir_path(&staging).map_err(|source| UnpackError::Staging {
            path: staging.clone(),
            op: "open staging directory",
            source,
        })?;
        let mut u = Unpacker {
            root,
            opts,
            stats: UnpackStats::default(),
            dirs: BTreeMap::new(),
            total: 0,
            metadata: 0,
            unchecked_bytes: u64::MAX,
            unchecked_entries: 0,
        };
        let mut tar = TarReader::new(stream);
        while let Some(h) = tar.next_header().map_err(UnpackError::Stream)? {
            last_entry = show(&h.path);
            u.entry(h, &mut tar)?;
        }
        // Read what follows the marker so a compressed stream's checksum is verified.
        let mut rest = tar.into_inner().take(MAX_TRAILING + 1);
        let trailing = io::copy(&mut rest, &mut io::sink())
            .map_err(|e| UnpackError::Stream(TarError::Io(e)))?;
        if trailing > MAX_TRAILING {
            return Err(UnpackError::TrailingData);
        }
        if let Some(expected) = &opts.diff_id {
            let actual = digest_of(&hash)?;
            if &actual != expected {
                return Err(UnpackError::DiffIdMismatch {
                    expected: expected.clone(),
                    actual,
                });
            }
        }
        u.finish()?;
        u.stats.stream_bytes = count.get();
        fsat::rename_noreplace(&staging, dest).map_err(|source| {
            if source.raw_os_error() == Some(libc::EEXIST) {
                UnpackError::DestExists(dest.to_path_buf())
            } else {
                UnpackError::Staging {
                    path: dest.to_path_buf(),
                    op: "move the unpacked layer into place at",
                    source,
                }
            }
        })?;
        Ok(u.stats)
    })();
    // Whatever error the overflow surfaced as (a read of data or of a header), it is a bomb.
    let result = match result {
        Err(_) if count.get() > ratio_limit => Err(UnpackError::RatioExceeded {
            entry: last_entry,
            compressed: opts.compressed_size.unwrap_or(0),
            ratio: opts.space.max_ratio,
            limit: ratio_limit,
        }),
        r => r,
    };
    if result.is_err() {
        if let Err(e) = std::fs::remove_dir_all(&staging) {
            tracing::warn!(path = %staging.display(), error = %e, "cannot remove staging directory");
        }
    }
    result
}

/// Creates a fresh staging directory beside `dest` (same filesystem, so the final rename is
/// atomic).
pub(crate) fn make_staging(dest: &Path) -> Result<PathBuf> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    if dest.symlink_metadata().is_ok() {
        return Err(UnpackError::DestExists(dest.to_path_buf()));
    }
    let name = dest.file_name().ok_or_else(|| UnpackError::Staging {
        path: dest.to_path_buf(),
        op: "destination has no file name:",
        source: io::Error::from(io::ErrorKind::InvalidInput),
    })?;
    let parent = dest.parent().unwrap_or_else(|| Path::new("."));
    let staging = parent.join(format!(
        ".{}.staging-{}-{}",
        name.to_string_lossy(),
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&staging)
        .map_err(|source| UnpackError::Staging {
            path: staging.clone(),
            op: "create staging directory",
            source,
        })?;
    Ok(staging)
}

/// The xattr name marking an overlayfs opaque directory.
pub(crate) fn opaque_name() -> CString {
    CString::from(c"trusted.overlay.opaque")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_keeps_paths_inside() {
        assert_eq!(normalize(b"/etc/x").unwrap(), vec![&b"etc"[..], b"x"]);
        assert_eq!(normalize(b"./a/../b/").unwrap(), vec![&b"b"[..]]);
        assert!(normalize(b"a/../../x").is_none());
        assert!(normalize(b"../../etc/x").is_none());
        assert!(normalize(b"./").unwrap().is_empty());
    }
}
