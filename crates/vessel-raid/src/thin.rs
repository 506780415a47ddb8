//! Thin provisioning: many volumes, snapshots and clones carved out of one device (a
//! [`RaidArray`](crate::RaidArray) or a plain file).
//!
//! The device is cut into extents (4 MiB by default). A volume maps its logical extents
//! to physical ones on first write; unmapped ranges read as zeroes. Snapshots and clones
//! share extents with their origin, counted by reference; a write to a shared extent
//! copies it first. The volume table and extent maps live in two alternating metadata
//! copies at the start of the device, each with a generation and a CRC32, so a torn
//! metadata write falls back to the previous copy. Data always goes to its extent before
//! the metadata naming it is committed, and an extent a commit releases is not reused
//! until no copy on disk names it. The format and the commit protocol are in
//! `docs/raid.md` ("Thin volumes").
//!
//! ```
//! use std::sync::Arc;
//! use vessel_raid::thin::{ThinOptions, ThinPool};
//!
//! let path = std::env::temp_dir().join(format!("vessel-thin-doc-{}", std::process::id()));
//! let file = std::fs::OpenOptions::new().read(true).write(true).create(true).open(&path)?;
//! file.set_len(16 << 20)?;
//! let options = ThinOptions { extent_size: 64 << 10, ..ThinOptions::default() };
//! let pool = Arc::new(ThinPool::format(Arc::new(file), &options)?);
//! pool.create_volume("root", 8 << 20, "block")?;
//! let root = pool.volume("root")?;
//! root.write_at(4096, b"hello")?;
//! pool.snapshot("root", "root.1")?;
//! root.write_at(4096, b"HELLO")?;
//! let mut buf = [0u8; 5];
//! pool.volume("root.1")?.read_at(4096, &mut buf)?;
//! assert_eq!(&buf, b"hello");
//! root.flush()?;
//! std::fs::remove_file(&path)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod backing;
mod error;
mod format;
mod state;

use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use uuid::Uuid;

pub use backing::{Backing, BackingError};
pub use error::{ThinError, ThinResult};
pub use format::{MAP_ENTRY, MAX_LABEL, MAX_NAME, MAX_VOLUMES, VOLUME_RECORD};

use format::{Header, Metadata, VolumeRecord, COPY_HEADER, HEADER_SIZE, META_OFFSET};
use state::{Core, State};

/// Default extent size: 4 MiB.
pub const DEFAULT_EXTENT: u64 = 4 << 20;

/// How to format a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThinOptions {
    /// Bytes per extent, the unit of allocation and copy-on-write: a power of two from
    /// 64 KiB to 1 GiB.
    pub extent_size: u64,
    /// Bytes of each of the two metadata copies (a multiple of 4 KiB, 64 KiB – 1 GiB).
    /// By default 32 bytes per extent of the device (room for every extent to be mapped
    /// four times over), at least 256 KiB and at most 64 MiB.
    pub metadata_size: Option<u64>,
}

impl Default for ThinOptions {
    fn default() -> Self {
        ThinOptions {
            extent_size: DEFAULT_EXTENT,
            metadata_size: None,
        }
    }
}

/// One volume, as `list` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeInfo {
    /// Name, unique in the pool.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Bytes of extents mapped, shared ones included.
    pub allocated_bytes: u64,
    /// A snapshot (no writes).
    pub read_only: bool,
    /// The volume it was snapshotted or cloned from, while that volume exists.
    pub origin: Option<String>,
    /// The caller's label (e.g. "block" or "filesystem").
    pub label: String,
    /// When it was created (second precision).
    pub created: SystemTime,
}

/// Space accounting of a pool, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Bytes per extent.
    pub extent_size: u64,
    /// Bytes of the data area.
    pub total: u64,
    /// Bytes of extents some volume maps (shared extents counted once).
    pub used: u64,
    /// `total - used`.
    pub free: u64,
    /// Bytes the metadata takes now.
    pub metadata_used: u64,
    /// Bytes one metadata copy may take.
    pub metadata_capacity: u64,
}

/// A thin pool on a device. Shared between threads as `Arc<ThinPool>`; every call takes
/// the pool's lock, so volume I/O is serialized (the RAID engine serializes it anyway).
pub struct ThinPool {
    core: Core,
    /// Data I/O to extents a volume owns alone runs under the read side, concurrently;
    /// everything that changes the maps takes the write side.
    state: RwLock<State>,
}

impl std::fmt::Debug for ThinPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThinPool")
            .field("header", &self.core.header)
            .finish_non_exhaustive()
    }
}

impl ThinPool {
    /// Writes an empty pool on `backing`, replacing whatever it held.
    pub fn format(backing: Arc<dyn Backing>, options: &ThinOptions) -> ThinResult<Self> {
        let es = options.extent_size;
        if !format::valid_extent_size(es) {
            return Err(ThinError::ExtentSize(es));
        }
        let size = backing
            .size()
            .map_err(ThinError::backing("size the device"))?;
        let metadata_size = match options.metadata_size {
            Some(m) if !format::valid_metadata_size(m) => return Err(ThinError::MetadataSize(m)),
            Some(m) => m,
            None => (size / es * 32)
                .next_multiple_of(64 << 10)
                .clamp(256 << 10, 64 << 20),
        };
        let data_offset = (META_OFFSET + 2 * metadata_size).next_multiple_of(es);
        if size < data_offset + es {
            return Err(ThinError::DeviceTooSmall {
                size,
                needed: data_offset + es,
            });
        }
        let header = Header {
            pool: Uuid::new_v4(),
            extent_size: es,
            metadata_size,
            data_offset,
            extents: ((size - data_offset) / es).min(u64::from(u32::MAX)),
        };
        let meta = Metadata {
            next_id: 1,
            volumes: Default::default(),
        };
        let core = Core { backing, header };
        // Both copies first, the header last: a format cut short leaves no pool behind.
        core.write(
            header.copy_offset(1),
            &meta.encode(header.pool, 0),
            "format",
        )?;
        core.write(
            header.copy_offset(0),
            &meta.encode(header.pool, 1),
            "format",
        )?;
        core.backing.flush().map_err(ThinError::backing("format"))?;
        core.write(0, &header.encode(), "write the pool header")?;
        core.backing.flush().map_err(ThinError::backing("format"))?;
        tracing::info!(pool = %header.pool, extent_size = es, extents = header.extents, metadata_size, "thin pool formatted");
        let state = State::new(meta, 1, 0, None, header.extents);
        Ok(ThinPool {
            core,
            state: RwLock::new(state),
        })
    }

    /// Opens the pool on `backing` from its newest intact metadata copy. Nothing is written.
    pub fn open(backing: Arc<dyn Backing>) -> ThinResult<Self> {
        let size = backing
            .size()
            .map_err(ThinError::backing("size the device"))?;
        if size < HEADER_SIZE {
            return Err(ThinError::NotAPool);
        }
        let mut block = vec![0u8; HEADER_SIZE as usize];
        backing
            .read_at(0, &mut block)
            .map_err(ThinError::backing("read the pool header"))?;
        let header = Header::decode(&block, size)?;
        let core = Core { backing, header };
        let [c0, c1] = [read_copy(&core, 0)?, read_copy(&core, 1)?];
        // The newest intact copy wins; the other is kept only to protect its extents.
        let (newest, (generation, meta), other) = match (c0, c1) {
            (Ok(a), Ok(b)) if b.0 > a.0 => (1, b, Some(a.1)),
            (Ok(a), Ok(b)) => (0, a, Some(b.1)),
            (Ok(a), Err(reason)) => (0, a, warn_copy(&header, 1, reason)),
            (Err(reason), Ok(b)) => (1, b, warn_copy(&header, 0, reason)),
            (Err(a), Err(b)) => {
                return Err(ThinError::MetadataCorrupt(format!(
                    "copy 0: {a}; copy 1: {b}"
                )))
            }
        };
        check_maps(&meta, header.extent_size)?;
        let state = State::new(meta, generation, newest, other.as_ref(), header.extents);
        tracing::info!(pool = %header.pool, generation, volumes = state.meta.volumes.len(), "thin pool opened");
        Ok(ThinPool {
            core,
            state: RwLock::new(state),
        })
    }

    fn lock(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    fn read_lock(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The pool's identity, chosen at format.
    pub fn pool_id(&self) -> Uuid {
        self.core.header.pool
    }

    /// Bytes per extent.
    pub fn extent_size(&self) -> u64 {
        self.core.header.extent_size
    }

    /// Creates an empty writable volume of `size` bytes (a multiple of 512) with a label.
    pub fn create_volume(&self, name: &str, size: u64, label: &str) -> ThinResult<()> {
        validate_name(name)?;
        validate_label(label)?;
        self.validate_size(size)?;
        let mut st = self.lock();
        check_new_name(&st, &self.core, name, label.len(), 0)?;
        st.transact(&self.core, |st| {
            let id = st.meta.next_id;
            st.meta.next_id += 1;
            st.meta.volumes.insert(
                id,
                VolumeRecord {
                    id,
                    name: name.to_string(),
                    label: label.to_string(),
                    size,
                    read_only: false,
                    origin: None,
                    created: now(),
                    map: Default::default(),
                },
            );
            Ok(())
        })?;
        tracing::info!(pool = %self.pool_id(), volume = name, size, "thin volume created");
        Ok(())
    }

    /// Changes a writable volume's size. Shrinking frees the extents past the new end;
    /// growing reads as zeroes past the old end.
    pub fn resize(&self, name: &str, new_size: u64) -> ThinResult<()> {
        self.validate_size(new_size)?;
        let es = self.core.header.extent_size;
        let mut st = self.lock();
        let v = find(&st, name)?;
        if v.read_only {
            return Err(ThinError::ReadOnly(name.to_string()));
        }
        let (id, old) = (v.id, v.size);
        st.transact(&self.core, |st| {
            if new_size > old
                && !old.is_multiple_of(es)
                && st.lookup(id, (old / es) as u32).is_some()
            {
                // Bytes past the old end of its last extent may hold data from before a
                // shrink: zero them so the grown range reads as zeroes.
                let end = new_size.min(old.next_multiple_of(es));
                let zeroes = vec![0u8; (end - old) as usize];
                st.write(&self.core, id, old, &zeroes)?;
            }
            st.unmap_from(id, new_size.div_ceil(es) as u32);
            if let Some(v) = st.meta.volumes.get_mut(&id) {
                v.size = new_size;
            }
            Ok(())
        })
    }

    /// Deletes a volume and releases its extents (shared ones stay with the volumes that
    /// share them). A volume with snapshots is refused: delete the snapshots first.
    /// Clones do not hold their origin back; they keep the extents they share.
    pub fn delete(&self, name: &str) -> ThinResult<()> {
        let mut st = self.lock();
        let id = find(&st, name)?.id;
        let snapshots: Vec<String> = st
            .meta
            .volumes
            .values()
            .filter(|v| v.read_only && v.origin == Some(id))
            .map(|v| v.name.clone())
            .collect();
        if !snapshots.is_empty() {
            return Err(ThinError::HasSnapshots {
                name: name.to_string(),
                snapshots,
            });
        }
        st.transact(&self.core, |st| {
            st.unmap_from(id, 0);
            st.meta.volumes.remove(&id);
            Ok(())
        })?;
        tracing::info!(pool = %self.pool_id(), volume = name, "thin volume deleted");
        Ok(())
    }

    /// Takes a read-only snapshot of `volume` sharing all its extents.
    pub fn snapshot(&self, volume: &str, snap_name: &str) -> ThinResult<()> {
        self.derive(volume, snap_name, true)
    }

    /// Makes a writable copy of `from` sharing all its extents. (Not named `clone`: on an
    /// `Arc<ThinPool>` that would resolve to `Arc::clone`.)
    pub fn clone_volume(&self, from: &str, new_name: &str) -> ThinResult<()> {
        self.derive(from, new_name, false)
    }

    fn derive(&self, from: &str, name: &str, read_only: bool) -> ThinResult<()> {
        validate_name(name)?;
        let mut st = self.lock();
        let src = find(&st, from)?.clone();
        check_new_name(&st, &self.core, name, src.label.len(), src.map.len())?;
        st.transact(&self.core, |st| {
            let id = st.meta.next_id;
            st.meta.next_id += 1;
            for &p in src.map.values() {
                st.take(p);
            }
            st.meta.volumes.insert(
                id,
                VolumeRecord {
                    id,
                    name: name.to_string(),
                    read_only,
                    origin: Some(src.id),
                    created: now(),
                    ..src
                },
            );
            Ok(())
        })?;
        tracing::info!(pool = %self.pool_id(), volume = from, name, read_only, "thin volume derived");
        Ok(())
    }

    /// Makes `volume`'s content and size those of `snapshot`, one of its own snapshots.
    /// The two share extents afterwards; the snapshot is kept.
    pub fn restore(&self, volume: &str, snapshot: &str) -> ThinResult<()> {
        let mut st = self.lock();
        let v = find(&st, volume)?;
        if v.read_only {
            return Err(ThinError::ReadOnly(volume.to_string()));
        }
        let id = v.id;
        let snap = find(&st, snapshot)?.clone();
        if !snap.read_only {
            return Err(ThinError::NotASnapshot(snapshot.to_string()));
        }
        if snap.origin != Some(id) {
            return Err(ThinError::ForeignSnapshot {
                volume: volume.to_string(),
                snapshot: snapshot.to_string(),
            });
        }
        let old = st.meta.volumes.get(&id).map_or(0, |v| v.map.len());
        st.check_metadata(&self.core, MAP_ENTRY * snap.map.len().saturating_sub(old))?;
        st.transact(&self.core, |st| {
            st.unmap_from(id, 0);
            for &p in snap.map.values() {
                st.take(p);
            }
            if let Some(v) = st.meta.volumes.get_mut(&id) {
                v.map = snap.map;
                v.size = snap.size;
            }
            Ok(())
        })?;
        tracing::info!(pool = %self.pool_id(), volume, snapshot, "thin volume restored");
        Ok(())
    }

    /// Every volume, snapshots and clones included, by name.
    pub fn list(&self) -> Vec<VolumeInfo> {
        let st = self.lock();
        let es = self.core.header.extent_size;
        let mut out: Vec<VolumeInfo> = st
            .meta
            .volumes
            .values()
            .map(|v| VolumeInfo {
                name: v.name.clone(),
                size: v.size,
                allocated_bytes: v.map.len() as u64 * es,
                read_only: v.read_only,
                origin: v
                    .origin
                    .and_then(|o| st.meta.volumes.get(&o))
                    .map(|o| o.name.clone()),
                label: v.label.clone(),
                created: UNIX_EPOCH + Duration::from_secs(v.created),
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Space used and free.
    pub fn usage(&self) -> Usage {
        let st = self.lock();
        let h = &self.core.header;
        let total = h.extents * h.extent_size;
        let used = st.used * h.extent_size;
        Usage {
            extent_size: h.extent_size,
            total,
            used,
            free: total - used,
            metadata_used: st.meta.encoded_len() as u64,
            metadata_capacity: h.metadata_size,
        }
    }

    /// Commits every change and makes all written data durable.
    pub fn flush(&self) -> ThinResult<()> {
        self.lock().flush(&self.core)
    }

    /// A handle for I/O on volume `name`.
    pub fn volume(self: &Arc<Self>, name: &str) -> ThinResult<Volume> {
        let st = self.lock();
        let id = find(&st, name)?.id;
        Ok(Volume {
            pool: Arc::clone(self),
            id,
            name: name.to_string(),
        })
    }

    fn validate_size(&self, size: u64) -> ThinResult<()> {
        let reason = if size == 0 {
            "a volume holds at least 512 bytes"
        } else if !size.is_multiple_of(512) {
            "not a multiple of 512 bytes"
        } else if size.div_ceil(self.core.header.extent_size) > u64::from(u32::MAX) {
            "more than 2^32 - 1 extents"
        } else {
            return Ok(());
        };
        Err(ThinError::InvalidSize { size, reason })
    }
}

/// Closing the pool commits what is not committed yet, as a last `flush` would.
impl Drop for ThinPool {
    fn drop(&mut self) {
        let core = &self.core;
        let st = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        if st.dirty {
            if let Err(e) = st.commit(core) {
                tracing::error!(pool = %core.header.pool, error = %e, "thin pool closed without committing its last changes");
            }
        }
    }
}

/// Reads and decodes metadata copy `slot`; a damaged copy is an `Err` inside.
fn read_copy(core: &Core, slot: usize) -> ThinResult<Result<(u64, Metadata), String>> {
    let h = &core.header;
    let mut head = vec![0u8; 4096];
    core.read(h.copy_offset(slot), &mut head, "read the pool metadata")?;
    let payload = u64::from_le_bytes(head[16..24].try_into().unwrap_or_default());
    let len = (COPY_HEADER as u64)
        .saturating_add(payload)
        .min(h.metadata_size)
        .next_multiple_of(4096);
    let mut buf = head;
    if len > 4096 {
        buf.resize(len as usize, 0);
        core.read(
            h.copy_offset(slot) + 4096,
            &mut buf[4096..],
            "read the pool metadata",
        )?;
    }
    Ok(Metadata::decode(&buf, h.pool, h.extents).map_err(str::to_string))
}

/// Logs a metadata copy that cannot be used.
fn warn_copy(header: &Header, copy: usize, reason: String) -> Option<Metadata> {
    tracing::warn!(pool = %header.pool, copy, reason, "thin pool metadata copy unusable; using the other");
    None
}

/// Every mapped logical extent lies inside its volume.
fn check_maps(meta: &Metadata, es: u64) -> ThinResult<()> {
    for v in meta.volumes.values() {
        let extents = v.size.div_ceil(es);
        if v.map
            .keys()
            .next_back()
            .is_some_and(|&l| u64::from(l) >= extents)
        {
            return Err(ThinError::MetadataCorrupt(format!(
                "volume {} maps an extent past its end",
                v.name
            )));
        }
    }
    Ok(())
}

fn find<'a>(st: &'a State, name: &str) -> ThinResult<&'a VolumeRecord> {
    st.meta
        .volumes
        .values()
        .find(|v| v.name == name)
        .ok_or_else(|| ThinError::NoSuchVolume(name.to_string()))
}

/// Refuses a new volume whose name is taken or that would not fit the table.
fn check_new_name(
    st: &State,
    core: &Core,
    name: &str,
    label_len: usize,
    entries: usize,
) -> ThinResult<()> {
    if st.meta.volumes.values().any(|v| v.name == name) {
        return Err(ThinError::NameInUse(name.to_string()));
    }
    if st.meta.volumes.len() >= MAX_VOLUMES {
        return Err(ThinError::TooManyVolumes { max: MAX_VOLUMES });
    }
    st.check_metadata(
        core,
        VOLUME_RECORD + name.len() + label_len + MAP_ENTRY * entries,
    )
}

/// Names: 1 to 64 bytes of ASCII letters, digits, `-`, `_`, `.`, not starting with `-`
/// or `.`.
fn validate_name(name: &str) -> ThinResult<()> {
    let reason = if name.is_empty() {
        "empty"
    } else if name.len() > MAX_NAME {
        "longer than 64 bytes"
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        "only ASCII letters, digits, '-', '_' and '.' are allowed"
    } else if name.starts_with(['-', '.']) {
        "must not start with '-' or '.'"
    } else {
        return Ok(());
    };
    Err(ThinError::InvalidName {
        name: name.to_string(),
        reason,
    })
}

/// Labels: up to 64 bytes of UTF-8 without control characters.
fn validate_label(label: &str) -> ThinResult<()> {
    let reason = if label.len() > MAX_LABEL {
        "longer than 64 bytes"
    } else if label.chars().any(char::is_control) {
        "contains control characters"
    } else {
        return Ok(());
    };
    Err(ThinError::InvalidLabel {
        label: label.to_string(),
        reason,
    })
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A handle on one volume for block I/O (what an NBD export serves). Handles stay valid
/// across restores; after the volume is deleted every call fails with `NoSuchVolume`.
#[derive(Debug, Clone)]
pub struct Volume {
    pool: Arc<ThinPool>,
    id: u64,
    name: String,
}

impl Volume {
    /// The volume's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The pool the volume lives in.
    pub fn pool(&self) -> &Arc<ThinPool> {
        &self.pool
    }

    /// Current size in bytes.
    pub fn size(&self) -> ThinResult<u64> {
        let st = self.pool.read_lock();
        Ok(self.record(&st)?.size)
    }

    /// Whether the volume is a read-only snapshot.
    pub fn is_read_only(&self) -> ThinResult<bool> {
        let st = self.pool.read_lock();
        Ok(self.record(&st)?.read_only)
    }

    fn record<'a>(&self, st: &'a State) -> ThinResult<&'a VolumeRecord> {
        st.meta
            .volumes
            .get(&self.id)
            .ok_or_else(|| ThinError::NoSuchVolume(self.name.clone()))
    }

    /// Checks a request against the volume (and, for writes, that it is writable).
    fn check(&self, st: &State, offset: u64, len: u64, write: bool) -> ThinResult<()> {
        let v = self.record(st)?;
        if write && v.read_only {
            return Err(ThinError::ReadOnly(self.name.clone()));
        }
        if offset.checked_add(len).is_none_or(|end| end > v.size) {
            return Err(ThinError::OutOfRange {
                volume: self.name.clone(),
                offset,
                len,
                size: v.size,
            });
        }
        Ok(())
    }

    /// Reads `buf.len()` bytes at `offset`; unallocated ranges read as zeroes.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> ThinResult<()> {
        let st = self.pool.read_lock();
        self.check(&st, offset, buf.len() as u64, false)?;
        st.read(&self.pool.core, self.id, offset, buf)
    }

    /// Writes `buf` at `offset`, allocating extents and copying shared ones. Durable, and
    /// visible after a crash, once `flush` returns.
    pub fn write_at(&self, offset: u64, buf: &[u8]) -> ThinResult<()> {
        {
            // Extents this volume owns alone are written in place, concurrently with other
            // I/O; anything else (allocation, copy on write) takes the write side.
            let st = self.pool.read_lock();
            self.check(&st, offset, buf.len() as u64, true)?;
            if st.write_in_place(&self.pool.core, self.id, offset, buf)? {
                return Ok(());
            }
        }
        let mut st = self.pool.lock();
        self.check(&st, offset, buf.len() as u64, true)?;
        st.write(&self.pool.core, self.id, offset, buf)
    }

    /// Commits the pool's metadata and makes every write durable.
    pub fn flush(&self) -> ThinResult<()> {
        let mut st = self.pool.lock();
        self.record(&st)?;
        st.flush(&self.pool.core)
    }

    /// Releases the range: whole extents are unmapped (freed once the change is
    /// committed and no other volume shares them), partial ones are zeroed.
    pub fn discard(&self, offset: u64, len: u64) -> ThinResult<()> {
        let mut st = self.pool.lock();
        self.check(&st, offset, len, true)?;
        st.discard(&self.pool.core, self.id, offset, len)
    }

    /// Makes the range read as zeroes, releasing whole extents as `discard` does.
    pub fn write_zeroes(&self, offset: u64, len: u64) -> ThinResult<()> {
        self.discard(offset, len)
    }

    /// Allocation status of a range as runs of `(length, allocated)`, in order, for NBD
    /// `BLOCK_STATUS`. Unallocated runs read as zeroes.
    pub fn extents(&self, offset: u64, len: u64) -> ThinResult<Vec<(u64, bool)>> {
        let st = self.pool.read_lock();
        self.check(&st, offset, len, false)?;
        Ok(st.extents(self.pool.core.header.extent_size, self.id, offset, len))
    }
}
