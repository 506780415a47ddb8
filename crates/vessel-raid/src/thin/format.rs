//! On-disk format of a thin pool: the header and the two metadata copies.

use std::collections::BTreeMap;

use uuid::Uuid;

use super::error::{ThinError, ThinResult};

/// Magic at the start of the pool header.
pub const HEADER_MAGIC: &[u8; 8] = b"VSLTHIN\0";
/// Magic at the start of each metadata copy.
pub const COPY_MAGIC: &[u8; 8] = b"VSLTMETA";
/// The format version this build writes and reads.
pub const VERSION: u32 = 1;
/// Size of the header block at offset 0.
pub const HEADER_SIZE: u64 = 4096;
/// Where the first metadata copy starts; the second follows it.
pub const META_OFFSET: u64 = HEADER_SIZE;
/// Bytes of a metadata copy before its payload.
pub const COPY_HEADER: usize = 48;
/// Longest volume name, in bytes.
pub const MAX_NAME: usize = 64;
/// Longest label, in bytes.
pub const MAX_LABEL: usize = 64;
/// Most volumes (snapshots and clones included) one pool holds.
pub const MAX_VOLUMES: usize = 4096;
/// Smallest extent.
pub const MIN_EXTENT: u64 = 64 << 10;
/// Largest extent.
pub const MAX_EXTENT: u64 = 1 << 30;
/// Smallest and largest metadata copy.
pub const MIN_METADATA: u64 = 64 << 10;
/// Largest metadata copy.
pub const MAX_METADATA: u64 = 1 << 30;
/// Fixed bytes of one volume record, before its name, label and extent map.
pub const VOLUME_RECORD: usize = 8 + 8 + 8 + 8 + 4 + 1 + 1 + 4;
/// Bytes of one extent mapping.
pub const MAP_ENTRY: usize = 8;
/// Fixed bytes of the payload before the volume records.
const PAYLOAD_HEADER: usize = 8 + 4;

/// The pool header: geometry written once by `format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Identity of this format of the device; metadata copies must carry it.
    pub pool: Uuid,
    /// Bytes per extent.
    pub extent_size: u64,
    /// Bytes of each metadata copy.
    pub metadata_size: u64,
    /// Byte offset of extent 0.
    pub data_offset: u64,
    /// Extents in the data area.
    pub extents: u64,
}

impl Header {
    /// Byte offset of metadata copy `slot` (0 or 1).
    pub fn copy_offset(&self, slot: usize) -> u64 {
        META_OFFSET + slot as u64 * self.metadata_size
    }

    /// Byte offset of extent `e`.
    pub fn extent_offset(&self, e: u32) -> u64 {
        self.data_offset + u64::from(e) * self.extent_size
    }

    /// Encodes the 4 KiB header block.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; HEADER_SIZE as usize];
        b[0..8].copy_from_slice(HEADER_MAGIC);
        b[8..12].copy_from_slice(&VERSION.to_le_bytes());
        b[16..24].copy_from_slice(&self.extent_size.to_le_bytes());
        b[24..32].copy_from_slice(&self.metadata_size.to_le_bytes());
        b[32..40].copy_from_slice(&self.data_offset.to_le_bytes());
        b[40..48].copy_from_slice(&self.extents.to_le_bytes());
        b[48..64].copy_from_slice(self.pool.as_bytes());
        let crc = crc32fast::hash(&b[..4092]);
        b[4092..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and checks a header block against the device size.
    pub fn decode(b: &[u8], device_size: u64) -> ThinResult<Self> {
        if b.len() < HEADER_SIZE as usize || &b[0..8] != HEADER_MAGIC {
            return Err(ThinError::NotAPool);
        }
        if crc32fast::hash(&b[..4092]) != u32le(b, 4092) {
            return Err(ThinError::HeaderChecksum);
        }
        let version = u32le(b, 8);
        if version != VERSION {
            return Err(ThinError::Version {
                found: version,
                supported: VERSION,
            });
        }
        let mut pool = [0u8; 16];
        pool.copy_from_slice(&b[48..64]);
        let h = Header {
            pool: Uuid::from_bytes(pool),
            extent_size: u64le(b, 16),
            metadata_size: u64le(b, 24),
            data_offset: u64le(b, 32),
            extents: u64le(b, 40),
        };
        if !valid_extent_size(h.extent_size) {
            return Err(ThinError::BadHeader("extent size out of range"));
        }
        if !valid_metadata_size(h.metadata_size) {
            return Err(ThinError::BadHeader("metadata size out of range"));
        }
        if h.data_offset < META_OFFSET + 2 * h.metadata_size
            || !h.data_offset.is_multiple_of(h.extent_size)
        {
            return Err(ThinError::BadHeader("data area overlaps the metadata"));
        }
        let end = h
            .extents
            .checked_mul(h.extent_size)
            .and_then(|d| d.checked_add(h.data_offset));
        if h.extents == 0 || h.extents > u64::from(u32::MAX) || end.is_none_or(|e| e > device_size)
        {
            return Err(ThinError::BadHeader("data area does not fit the device"));
        }
        Ok(h)
    }
}

/// A valid extent size: a power of two from 64 KiB to 1 GiB.
pub fn valid_extent_size(size: u64) -> bool {
    size.is_power_of_two() && (MIN_EXTENT..=MAX_EXTENT).contains(&size)
}

/// A valid metadata copy size: a multiple of 4 KiB from 64 KiB to 1 GiB.
pub fn valid_metadata_size(size: u64) -> bool {
    size.is_multiple_of(4096) && (MIN_METADATA..=MAX_METADATA).contains(&size)
}

/// One volume in the volume table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeRecord {
    /// Identity, never reused within a pool.
    pub id: u64,
    /// Name, unique in the pool.
    pub name: String,
    /// The caller's label.
    pub label: String,
    /// Size in bytes.
    pub size: u64,
    /// A snapshot: no writes.
    pub read_only: bool,
    /// The volume this one was snapshotted or cloned from.
    pub origin: Option<u64>,
    /// Creation time, seconds since the Unix epoch.
    pub created: u64,
    /// Logical extent to physical extent; logical extents not listed read as zeroes.
    pub map: BTreeMap<u32, u32>,
}

impl VolumeRecord {
    /// Bytes this record takes in the metadata.
    pub fn encoded_len(&self) -> usize {
        VOLUME_RECORD + self.name.len() + self.label.len() + MAP_ENTRY * self.map.len()
    }
}

/// The volume table, as committed in one metadata copy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    /// The id the next volume gets.
    pub next_id: u64,
    /// Volumes by id.
    pub volumes: BTreeMap<u64, VolumeRecord>,
}

impl Metadata {
    /// Bytes a copy of this metadata takes, copy header included.
    pub fn encoded_len(&self) -> usize {
        COPY_HEADER
            + PAYLOAD_HEADER
            + self
                .volumes
                .values()
                .map(VolumeRecord::encoded_len)
                .sum::<usize>()
    }

    /// Encodes a metadata copy of `generation`, padded to 4 KiB.
    pub fn encode(&self, pool: Uuid, generation: u64) -> Vec<u8> {
        let len = self.encoded_len();
        let mut b = Vec::with_capacity(len.next_multiple_of(4096));
        b.extend_from_slice(COPY_MAGIC);
        b.extend_from_slice(&generation.to_le_bytes());
        b.extend_from_slice(&((len - COPY_HEADER) as u64).to_le_bytes());
        b.extend_from_slice(&[0u8; 8]); // crc, reserved
        b.extend_from_slice(pool.as_bytes());
        b.extend_from_slice(&self.next_id.to_le_bytes());
        b.extend_from_slice(&(self.volumes.len() as u32).to_le_bytes());
        for v in self.volumes.values() {
            b.extend_from_slice(&v.id.to_le_bytes());
            b.extend_from_slice(&v.size.to_le_bytes());
            b.extend_from_slice(&v.created.to_le_bytes());
            b.extend_from_slice(&v.origin.unwrap_or(0).to_le_bytes());
            b.extend_from_slice(&u32::from(v.read_only).to_le_bytes());
            b.push(v.name.len() as u8);
            b.extend_from_slice(v.name.as_bytes());
            b.push(v.label.len() as u8);
            b.extend_from_slice(v.label.as_bytes());
            b.extend_from_slice(&(v.map.len() as u32).to_le_bytes());
            for (&l, &p) in &v.map {
                b.extend_from_slice(&l.to_le_bytes());
                b.extend_from_slice(&p.to_le_bytes());
            }
        }
        debug_assert_eq!(b.len(), len);
        let crc = copy_crc(&b);
        b[24..28].copy_from_slice(&crc.to_le_bytes());
        b.resize(len.next_multiple_of(4096), 0);
        b
    }

    /// Decodes a metadata copy: its generation and content. `extents` bounds the physical extent numbers.
    pub fn decode(b: &[u8], pool: Uuid, extents: u64) -> Result<(u64, Metadata), &'static str> {
        if b.len() < COPY_HEADER || &b[0..8] != COPY_MAGIC {
            return Err("no metadata copy");
        }
        let generation = u64le(b, 8);
        let payload = u64le(b, 16);
        let end = (COPY_HEADER as u64)
            .checked_add(payload)
            .filter(|&e| e <= b.len() as u64)
            .ok_or("payload length runs past the metadata area")? as usize;
        if copy_crc(&b[..end]) != u32le(b, 24) {
            return Err("checksum mismatch (torn or damaged write)");
        }
        if &b[32..48] != pool.as_bytes() {
            return Err("copy belongs to an earlier format of the device");
        }
        let mut r = Reader {
            b: &b[COPY_HEADER..end],
            pos: 0,
        };
        let next_id = r.u64()?;
        let count = r.u32()? as usize;
        if count > MAX_VOLUMES {
            return Err("too many volumes");
        }
        let mut meta = Metadata {
            next_id,
            volumes: BTreeMap::new(),
        };
        for _ in 0..count {
            let id = r.u64()?;
            let size = r.u64()?;
            let created = r.u64()?;
            let origin = r.u64()?;
            let flags = r.u32()?;
            let name = r.string()?;
            let label = r.string()?;
            let entries = r.u32()?;
            let mut map = BTreeMap::new();
            for _ in 0..entries {
                let l = r.u32()?;
                let p = r.u32()?;
                if u64::from(p) >= extents {
                    return Err("extent number past the data area");
                }
                if map.insert(l, p).is_some() {
                    return Err("logical extent mapped twice");
                }
            }
            if id == 0 || id >= next_id || meta.volumes.contains_key(&id) {
                return Err("bad volume id");
            }
            if meta.volumes.values().any(|v| v.name == name) {
                return Err("volume name listed twice");
            }
            meta.volumes.insert(
                id,
                VolumeRecord {
                    id,
                    name,
                    label,
                    size,
                    read_only: flags & 1 != 0,
                    origin: (origin != 0).then_some(origin),
                    created,
                    map,
                },
            );
        }
        if r.pos != r.b.len() {
            return Err("trailing bytes after the volume table");
        }
        Ok((generation, meta))
    }
}

/// CRC32 of a copy (header with the crc field zeroed, then payload).
fn copy_crc(b: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&b[..24]);
    h.update(&[0u8; 4]);
    h.update(&b[28..]);
    h.finalize()
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], &'static str> {
        let s = self
            .b
            .get(self.pos..self.pos + n)
            .ok_or("volume table cut short")?;
        self.pos += n;
        Ok(s)
    }

    fn u32(&mut self) -> Result<u32, &'static str> {
        Ok(u32le(self.take(4)?, 0))
    }

    fn u64(&mut self) -> Result<u64, &'static str> {
        Ok(u64le(self.take(8)?, 0))
    }

    fn string(&mut self) -> Result<String, &'static str> {
        let n = self.take(1)?[0] as usize;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| "name or label is not UTF-8")
    }
}

fn u32le(b: &[u8], at: usize) -> u32 {
    let mut v = [0u8; 4];
    v.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(v)
}

fn u64le(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Metadata {
        let mut m = Metadata {
            next_id: 3,
            volumes: BTreeMap::new(),
        };
        for (id, name) in [(1u64, "root"), (2, "root.snap")] {
            m.volumes.insert(
                id,
                VolumeRecord {
                    id,
                    name: name.into(),
                    label: "block".into(),
                    size: 10 << 20,
                    read_only: id == 2,
                    origin: (id == 2).then_some(1),
                    created: 1_700_000_000,
                    map: [(0, 5), (3, 7)].into_iter().collect(),
                },
            );
        }
        m
    }

    #[test]
    fn metadata_round_trips() {
        let pool = Uuid::new_v4();
        let m = sample();
        let b = m.encode(pool, 42);
        assert_eq!(b.len() % 4096, 0);
        assert_eq!(Metadata::decode(&b, pool, 8), Ok((42, m)));
    }

    #[test]
    fn damaged_or_foreign_copies_are_refused() {
        let pool = Uuid::new_v4();
        let m = sample();
        let mut b = m.encode(pool, 1);
        assert!(Metadata::decode(&b, Uuid::new_v4(), 8).is_err());
        assert!(
            Metadata::decode(&b, pool, 6).is_err(),
            "extent 7 past the end"
        );
        b[60] ^= 1;
        assert!(Metadata::decode(&b, pool, 8).is_err());
    }

    #[test]
    fn header_round_trips_and_checks_geometry() {
        let h = Header {
            pool: Uuid::new_v4(),
            extent_size: 64 << 10,
            metadata_size: 64 << 10,
            data_offset: 192 << 10,
            extents: 10,
        };
        let b = h.encode();
        assert_eq!(Header::decode(&b, (192 << 10) + (640 << 10)).ok(), Some(h));
        assert!(matches!(
            Header::decode(&b, 640 << 10),
            Err(ThinError::BadHeader(_))
        ));
        let mut bad = b.clone();
        bad[20] ^= 1;
        assert!(matches!(
            Header::decode(&bad, 1 << 30),
            Err(ThinError::HeaderChecksum)
        ));
    }
}
