//! The index of a backup: what it holds (named archives, each a list of chunks) and when it
//! was taken. It is kept as JSON followed by a line with the SHA-256 of that JSON, so that
//! any change to it is found when it is read.

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::chunk::Digest;
use crate::error::{BackupError, Result};

/// The index format this code writes and reads.
pub const FORMAT: u32 = 1;

/// A piece of an archive: a chunk and its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef(pub Digest, pub u64);

/// How an archive was cut into chunks and what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ArchiveKind {
    /// A few bytes (a configuration), one or more chunks.
    Blob,
    /// A file tree: its files' contents cut by content (FastCDC), its metadata in `meta`.
    Tree,
    /// A disk or any large file: fixed chunks of [`crate::BLOCK_CHUNK`] bytes.
    Block,
}

/// One archive of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Archive {
    /// Its name within the backup (`config`, `rootfs`, `disk-root`, ...).
    pub name: String,
    /// What it is.
    pub kind: ArchiveKind,
    /// Bytes of data it holds (a tree: its files' contents).
    pub size: u64,
    /// The data, in order (a tree: its files' contents one after another).
    pub chunks: Vec<ChunkRef>,
    /// A tree's metadata (its entries, JSON compressed with zstd), in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub meta: Vec<ChunkRef>,
    /// A disk's source as it was read ([`crate::block::stamp`]): a later backup of a source
    /// with the same stamp takes this archive's chunks unread.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// A backup's index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Index {
    /// [`FORMAT`].
    pub format: u32,
    /// What was backed up (an instance's name): backups of one group are its history.
    pub group: String,
    /// This backup's id within its group (its time, `YYYYMMDDTHHMMSSZ`, unique).
    pub id: String,
    /// When it was taken, seconds since the epoch.
    pub time: i64,
    /// The archives it holds.
    pub archives: Vec<Archive>,
    /// Free labels (the instance's type, its image, ...).
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
}

impl Index {
    /// Bytes of data it holds.
    pub fn size(&self) -> u64 {
        self.archives.iter().map(|a| a.size).sum()
    }

    /// An archive by name.
    pub fn archive(&self, name: &str) -> Result<&Archive> {
        self.archives
            .iter()
            .find(|a| a.name == name)
            .ok_or_else(|| {
                BackupError::NotFound(format!(
                    "backup {}/{} has no archive {name:?}",
                    self.group, self.id
                ))
            })
    }

    /// An archive by name, which must be of `kind`.
    pub fn archive_of(&self, name: &str, kind: ArchiveKind) -> Result<&Archive> {
        let a = self.archive(name)?;
        if a.kind != kind {
            let what = match kind {
                ArchiveKind::Blob => "a blob",
                ArchiveKind::Tree => "a file tree",
                ArchiveKind::Block => "a disk",
            };
            return Err(BackupError::Invalid(format!("{name} is not {what}")));
        }
        Ok(a)
    }

    /// Every chunk it refers to.
    pub fn chunks(&self) -> impl Iterator<Item = &ChunkRef> {
        self.archives
            .iter()
            .flat_map(|a| a.chunks.iter().chain(a.meta.iter()))
    }

    /// The file's bytes: JSON, then `sha256:HEX` of the JSON.
    pub fn encode(&self) -> Vec<u8> {
        let mut body = serde_json::to_vec_pretty(self).expect("an index serializes");
        let sum = hex::encode(Sha256::digest(&body));
        body.extend_from_slice(format!("\nsha256:{sum}\n").as_bytes());
        body
    }

    /// An index from its file's bytes, checked whole: its checksum, its format, its names
    /// and that its sizes agree with its chunks.
    pub fn decode(raw: &[u8]) -> Result<Index> {
        let bad = |why: &str| BackupError::Corrupt(format!("backup index: {why}"));
        let text = std::str::from_utf8(raw).map_err(|_| bad("not text"))?;
        let body_end = text
            .trim_end_matches('\n')
            .rfind('\n')
            .ok_or_else(|| bad("no checksum line"))?;
        let (body, tail) = text.split_at(body_end);
        let sum = tail
            .strip_prefix("\nsha256:")
            .ok_or_else(|| bad("no checksum line"))?;
        if sum != format!("{}\n", hex::encode(Sha256::digest(body.as_bytes()))) {
            return Err(bad("its checksum does not match its content"));
        }
        let index: Index =
            serde_json::from_str(body).map_err(|e| bad(&format!("unreadable: {e}")))?;
        if index.format != FORMAT {
            return Err(BackupError::Invalid(format!(
                "backup index format {} is not one this version reads ({FORMAT})",
                index.format
            )));
        }
        crate::store::check_name("group", &index.group)?;
        crate::store::check_name("backup id", &index.id)?;
        let mut names = std::collections::BTreeSet::new();
        for a in &index.archives {
            crate::store::check_name("archive", &a.name)?;
            if !names.insert(&a.name) {
                return Err(bad(&format!("archive {:?} is named twice", a.name)));
            }
            let total: u64 = a.chunks.iter().map(|c| c.1).sum();
            if total != a.size {
                return Err(bad(&format!(
                    "archive {:?} says {} bytes but its chunks hold {total}",
                    a.name, a.size
                )));
            }
            if a.chunks
                .iter()
                .chain(a.meta.iter())
                .any(|c| c.1 == 0 || c.1 > crate::chunk::MAX_CHUNK as u64)
            {
                return Err(bad(&format!(
                    "archive {:?} has a chunk of impossible size",
                    a.name
                )));
            }
            if (a.kind == ArchiveKind::Tree) == a.meta.is_empty() {
                return Err(bad(&format!(
                    "archive {:?}: metadata does not fit its kind",
                    a.name
                )));
            }
        }
        Ok(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index() -> Index {
        Index {
            format: FORMAT,
            group: "web".into(),
            id: "20261203T120000Z".into(),
            time: 1_796_299_200,
            archives: vec![Archive {
                name: "disk".into(),
                kind: ArchiveKind::Block,
                size: 10,
                chunks: vec![ChunkRef(Digest::of(b"0123456789"), 10)],
                meta: Vec::new(),
                source: None,
            }],
            labels: Default::default(),
        }
    }

    #[test]
    fn an_index_reads_back_and_every_flipped_byte_is_found() {
        let i = index();
        let raw = i.encode();
        assert_eq!(Index::decode(&raw).unwrap(), i);
        for n in 0..raw.len() {
            for bit in [0x01, 0x20] {
                let mut bad = raw.clone();
                bad[n] ^= bit;
                assert!(Index::decode(&bad).is_err(), "byte {n} bit {bit:#x}");
            }
        }
        assert!(Index::decode(&raw[..raw.len() - 10]).is_err());
    }

    #[test]
    fn hostile_indexes_are_refused() {
        let mut i = index();
        i.group = "../etc".into();
        assert!(Index::decode(&i.encode()).is_err());
        let mut i = index();
        i.archives[0].size = 11;
        assert!(Index::decode(&i.encode()).is_err());
        let mut i = index();
        i.archives.push(i.archives[0].clone());
        assert!(Index::decode(&i.encode()).is_err());
    }
}
