//! Backup stores: the daemon's own (under its root) and any directory an admin names. This
//! service opens stores and answers for what is in them (list, show, delete, verify, prune,
//! gc); taking and restoring an instance's backup goes through the instance's owner
//! (`instance::backup`), under the instance's lock.

use std::path::{Path, PathBuf};

use vessel_backup::{BackupError, Index, Listed, Store};

use crate::error::{Error, Result};

/// The daemon's backup stores.
#[derive(Debug, Clone)]
pub struct BackupService {
    own: PathBuf,
}

/// A store error as the API answers it.
pub fn error(e: BackupError) -> Error {
    match e {
        BackupError::NotFound(m) => Error::not_found(m),
        BackupError::Invalid(m) => Error::invalid(m),
        BackupError::Busy(m) => Error::conflict(m),
        e @ BackupError::Corrupt(_) => Error::conflict(format!(
            "{e}; run `vessel backup verify` to see every damaged backup"
        )),
        e @ BackupError::Io { .. } => Error::internal(e.to_string()),
    }
}

impl BackupService {
    /// Stores of a daemon whose root is `root`: its own is `ROOT/backups`.
    pub fn new(root: &Path) -> BackupService {
        BackupService {
            own: root.join("backups"),
        }
    }

    /// The store at `path` (an absolute directory; made a store if new and empty), or the
    /// daemon's own (blocking).
    pub fn store(&self, path: Option<&str>) -> Result<Store> {
        let dir = match path {
            None => self.own.clone(),
            Some(p) if Path::new(p).is_absolute() => PathBuf::from(p),
            Some(p) => {
                return Err(Error::invalid(format!(
                    "backup store {p:?}: give an absolute directory on the daemon's host"
                )))
            }
        };
        Store::open_or_create(&dir).map_err(error)
    }

    /// The groups of the daemon's own store that hold backups, with how many (none if it
    /// was never made; blocking).
    pub fn own_groups(&self) -> Result<Vec<(String, usize)>> {
        if !self.own.exists() {
            return Ok(Vec::new());
        }
        Store::open(&self.own)
            .and_then(|s| s.groups())
            .map_err(error)
    }

    /// A listed backup as the API shows it (`instance` as its group is named).
    pub fn show(l: &Listed) -> vessel_api::Backup {
        match &l.index {
            Ok(i) => Self::show_index(i, l.damaged.clone()),
            Err(why) => vessel_api::Backup {
                instance: l.group.clone(),
                id: l.id.clone(),
                created_at: String::new(),
                size: 0,
                archives: Vec::new(),
                damaged: Some(why.clone()),
                labels: Default::default(),
            },
        }
    }

    /// A backup's index as the API shows it.
    pub fn show_index(i: &Index, damaged: Option<String>) -> vessel_api::Backup {
        vessel_api::Backup {
            instance: i.group.clone(),
            id: i.id.clone(),
            created_at: crate::clock::rfc3339(i.time),
            size: i.size(),
            archives: i
                .archives
                .iter()
                .map(|a| vessel_api::BackupArchive {
                    name: a.name.clone(),
                    kind: match a.kind {
                        vessel_backup::ArchiveKind::Blob => "blob",
                        vessel_backup::ArchiveKind::Tree => "tree",
                        vessel_backup::ArchiveKind::Block => "block",
                    }
                    .into(),
                    size: a.size,
                    chunks: (a.chunks.len() + a.meta.len()) as u64,
                })
                .collect(),
            damaged,
            labels: i.labels.clone(),
        }
    }
}
