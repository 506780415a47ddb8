//! Portable archives: one backup with the chunks it names, as one tar file that another
//! host's daemon makes an instance from. Entries are `vessel-archive.json` (what it is),
//! `store.json`, `index` and `chunks/XY/DIGEST`, each a plain file; chunks stay as the
//! store keeps them (compressed, named by their SHA-256). Reading one is strict: any other
//! entry, a link, a name that is not a chunk's, a size beyond what the entry can be, a
//! chunk whose content does not match its name, a missing chunk or a damaged index refuses
//! the whole archive, and the directory it was being read into is removed.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::chunk::Digest;
use crate::error::{io, BackupError, Result};
use crate::index::Index;
use crate::store::{Store, StoreConfig};

/// `vessel-archive.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct Marker {
    /// Always `vessel-archive`.
    kind: String,
    format: u32,
    group: String,
    id: String,
}

const KIND: &str = "vessel-archive";
const FORMAT: u32 = 1;
/// The largest `store.json` / marker accepted.
const MAX_SMALL: u64 = 64 << 10;
/// The largest index accepted.
const MAX_INDEX: u64 = 256 << 20;
/// The largest chunk file accepted (header and incompressible data).
const MAX_CHUNK_FILE: u64 = crate::chunk::MAX_CHUNK as u64 + 1024;

fn corrupt(why: impl Into<String>) -> BackupError {
    BackupError::Corrupt(format!("archive: {}", why.into()))
}

fn append(tar: &mut tar::Builder<impl Write>, name: &str, data: &[u8]) -> Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o600);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    tar.append_data(&mut h, name, data)
        .map_err(|e| BackupError::Invalid(format!("writing the archive: {e}")))
}

impl Store {
    /// Writes backup `index` and every chunk it names as an archive to `out`; `progress`
    /// is told the bytes written.
    pub fn export_archive(
        &self,
        index: &Index,
        out: impl Write,
        progress: &mut dyn FnMut(u64),
    ) -> Result<()> {
        let mut tar = tar::Builder::new(out);
        let marker = Marker {
            kind: KIND.into(),
            format: FORMAT,
            group: index.group.clone(),
            id: index.id.clone(),
        };
        append(
            &mut tar,
            "vessel-archive.json",
            &serde_json::to_vec(&marker).expect("serializes"),
        )?;
        append(
            &mut tar,
            "store.json",
            &serde_json::to_vec(&self.config()).expect("serializes"),
        )?;
        append(&mut tar, "index", &index.encode())?;
        let mut seen = HashSet::new();
        let mut done = 0u64;
        for c in index.chunks() {
            if !seen.insert(c.0) {
                continue;
            }
            let path = self.chunks.path(&c.0);
            let raw = std::fs::read(&path).map_err(io("reading chunk", &path))?;
            let name = c.0.to_string();
            append(&mut tar, &format!("chunks/{}/{name}", &name[..2]), &raw)?;
            done += raw.len() as u64;
            progress(done);
        }
        tar.into_inner()
            .and_then(|mut w| w.flush())
            .map_err(|e| BackupError::Invalid(format!("writing the archive: {e}")))
    }

    /// Reads an archive into a new store in `dir` (which must not exist), every entry and
    /// every chunk checked; returns the store and the backup's index. On any failure `dir`
    /// is removed.
    pub fn import_archive(input: impl Read, dir: &Path) -> Result<(Store, Index)> {
        if dir.exists() {
            return Err(BackupError::Invalid(format!("{} exists", dir.display())));
        }
        let r = read_archive(input, dir);
        if r.is_err() {
            let _ = std::fs::remove_dir_all(dir);
        }
        r
    }
}

fn read_archive(input: impl Read, dir: &Path) -> Result<(Store, Index)> {
    let mut tar = tar::Archive::new(input);
    let entries = tar
        .entries()
        .map_err(|e| corrupt(format!("not a tar file: {e}")))?;
    let mut marker: Option<Marker> = None;
    let mut store: Option<Store> = None;
    let mut index: Option<Index> = None;
    let mut chunks: HashSet<Digest> = HashSet::new();
    for entry in entries {
        let mut e = entry.map_err(|e| corrupt(format!("truncated or not a tar file: {e}")))?;
        if e.header().entry_type() != tar::EntryType::Regular {
            return Err(corrupt("an entry that is not a plain file"));
        }
        let name = e
            .path()
            .map_err(|_| corrupt("an entry with an unreadable name"))?
            .to_string_lossy()
            .into_owned();
        let size = e
            .header()
            .size()
            .map_err(|_| corrupt("an entry without a size"))?;
        let limit = match name.as_str() {
            "vessel-archive.json" | "store.json" => MAX_SMALL,
            "index" => MAX_INDEX,
            _ => MAX_CHUNK_FILE,
        };
        if size > limit {
            return Err(corrupt(format!(
                "{name:?} is larger than such an entry can be"
            )));
        }
        let mut data = Vec::with_capacity(size as usize);
        e.by_ref()
            .take(limit + 1)
            .read_to_end(&mut data)
            .map_err(|e| corrupt(format!("{name:?}: {e}")))?;
        if data.len() as u64 != size {
            return Err(corrupt(format!("{name:?} is truncated")));
        }
        match name.as_str() {
            "vessel-archive.json" => {
                let m: Marker = serde_json::from_slice(&data)
                    .map_err(|e| corrupt(format!("vessel-archive.json: {e}")))?;
                if m.kind != KIND || m.format != FORMAT {
                    return Err(BackupError::Invalid(format!(
                        "not a Vessel archive of a format this version reads ({} {})",
                        m.kind, m.format
                    )));
                }
                marker = Some(m);
            }
            "store.json" => {
                if marker.is_none() || store.is_some() {
                    return Err(corrupt("store.json out of place"));
                }
                let config: StoreConfig = serde_json::from_slice(&data)
                    .map_err(|e| corrupt(format!("store.json: {e}")))?;
                store = Some(Store::create(dir, config)?);
            }
            "index" => {
                if store.is_none() || index.is_some() {
                    return Err(corrupt("index out of place"));
                }
                let i = Index::decode(&data)?;
                let m = marker.as_ref().expect("before the store");
                if i.group != m.group || i.id != m.id {
                    return Err(corrupt(
                        "the index is of another backup than the archive says",
                    ));
                }
                index = Some(i);
            }
            other => {
                let s = store
                    .as_ref()
                    .ok_or_else(|| corrupt("a chunk before the store"))?;
                let digest = chunk_name(other)?;
                if !chunks.insert(digest) {
                    return Err(corrupt(format!("chunk {digest} is there twice")));
                }
                s.chunks.put_raw(&digest, &data)?;
            }
        }
    }
    let (Some(store), Some(index), Some(m)) = (store, index, marker) else {
        return Err(corrupt("truncated: its marker, store or index is missing"));
    };
    for c in index.chunks() {
        if !chunks.contains(&c.0) {
            return Err(corrupt(format!(
                "the index names chunk {} the archive lacks",
                c.0
            )));
        }
    }
    // The backup's directory, as the store keeps it.
    let bdir = store.backup_dir(&m.group, &m.id);
    std::fs::create_dir_all(&bdir).map_err(io("making", &bdir))?;
    crate::store::write_whole(&bdir.join("index"), &index.encode())?;
    Ok((store, index))
}

/// The digest of a chunk entry's name, `chunks/XY/DIGEST` with XY its first two digits.
fn chunk_name(name: &str) -> Result<Digest> {
    let bad = || {
        corrupt(format!(
            "unexpected entry {:?}",
            name.chars().take(100).collect::<String>()
        ))
    };
    let rest = name.strip_prefix("chunks/").ok_or_else(bad)?;
    let (dir, file) = rest.split_once('/').ok_or_else(bad)?;
    let d: Digest = file.parse().map_err(|_| bad())?;
    if dir != &file[..2] {
        return Err(bad());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_entries_are_named_as_the_store_names_them() {
        let d = Digest::of(b"x").to_string();
        assert!(chunk_name(&format!("chunks/{}/{d}", &d[..2])).is_ok());
        for bad in [
            format!("chunks/00/{d}"),
            format!("chunks/{}/../{d}", &d[..2]),
            format!("/chunks/{}/{d}", &d[..2]),
            format!("chunks/{}/{d}/x", &d[..2]),
            "chunks/ab/cd".to_string(),
            "../../etc/passwd".to_string(),
        ] {
            assert!(chunk_name(&bad).is_err(), "{bad}");
        }
    }
}
