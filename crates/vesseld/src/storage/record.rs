//! What the store keeps of pools, volumes and exports.

use serde::{Deserialize, Serialize};
use vessel_api::{PoolDriver as DriverKind, StorageExport, VolumeAttachment, VolumeContent};

use crate::error::Error;

/// What the store keeps of a pool.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct PoolRecord {
    pub(super) name: String,
    pub(super) driver: DriverKind,
    pub(super) sources: Vec<String>,
    #[serde(default)]
    pub(super) level: Option<String>,
    /// Files Vessel created for the pool (removed with it).
    #[serde(default)]
    pub(super) created_files: Vec<String>,
    /// The directory Vessel created for a `dir` pool or as a mount point (removed with it).
    #[serde(default)]
    pub(super) created_dir: Option<String>,
    #[serde(default)]
    pub(super) description: String,
    /// Labels (`user.*` keys).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub(super) config: std::collections::BTreeMap<String, String>,
    pub(super) created_at: String,
    /// A replicated pool's far copy (its second member, on another cluster member).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) replica: Option<super::replicas::ReplicaRef>,
}

/// What the store keeps of a volume.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct VolumeRecord {
    pub(super) pool: String,
    pub(super) name: String,
    pub(super) content: VolumeContent,
    pub(super) size: u64,
    #[serde(default)]
    pub(super) source: Option<String>,
    #[serde(default)]
    pub(super) snapshots: Vec<String>,
    /// The volume's size when each snapshot was taken: what the snapshot may pin, counted
    /// by the project's limits (a snapshot from before sizes were kept counts the volume's
    /// size now).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub(super) snapshot_sizes: std::collections::BTreeMap<String, u64>,
    #[serde(default)]
    pub(super) attached_to: Vec<VolumeAttachment>,
    /// The instance whose root disk this is (deleted with it).
    #[serde(default)]
    pub(super) root_of: Option<String>,
    /// Whether it holds a container's writable layer (its size is the instance's
    /// `limits.disk`, changed through the instance).
    #[serde(default)]
    pub(super) container_root: bool,
    /// First id of the container id range its files are stored with: 0 (the container's own
    /// ids, as every container sees them through an idmapped mount) for volumes made since
    /// ranges became per container; `None` for older ones until their first use by a
    /// container decides (see `attachments::stored_id_base`).
    #[serde(default)]
    pub(super) id_base: Option<u32>,
    /// The host uid a block volume's file or NBD socket belongs to: its VM's QEMU user,
    /// recorded at each start of the VM, so that a socket served again after a daemon
    /// restart is that user's; `None`: root's alone (not attached, or never started since).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) disk_owner: Option<u32>,
    /// Labels (`user.*` keys).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub(super) config: std::collections::BTreeMap<String, String>,
    pub(super) created_at: String,
}

impl VolumeRecord {
    pub(super) fn key(&self) -> String {
        format!("{}/{}", self.pool, self.name)
    }
}

/// The error for a volume that pool `pool` does not hold.
pub(super) fn volume_not_found(pool: &str, name: &str) -> Error {
    Error::not_found(format!(
        "volume {name:?} not found in pool {pool:?}; see `vessel storage volume list {pool}`"
    ))
}

/// Records for the unit tests of the storage module.
#[cfg(test)]
pub(super) mod fixture {
    use vessel_api::{PoolDriver as DriverKind, VolumeAttachment, VolumeContent};

    use super::{PoolRecord, VolumeRecord};

    /// A pool of `driver` on `sources`.
    pub fn pool(name: &str, driver: DriverKind, sources: &[&str]) -> PoolRecord {
        PoolRecord {
            name: name.into(),
            driver,
            sources: sources.iter().map(|s| s.to_string()).collect(),
            level: None,
            created_files: Vec::new(),
            created_dir: None,
            description: String::new(),
            config: Default::default(),
            created_at: "2024-01-01T00:00:00Z".into(),
            replica: None,
        }
    }

    /// A volume of `size` bytes in `pool`, attached to `attached` (instance, path).
    pub fn volume(
        pool: &str,
        name: &str,
        content: VolumeContent,
        attached: &[(&str, &str)],
    ) -> VolumeRecord {
        VolumeRecord {
            pool: pool.into(),
            name: name.into(),
            content,
            size: 1 << 20,
            source: None,
            snapshots: Vec::new(),
            snapshot_sizes: Default::default(),
            attached_to: attached
                .iter()
                .map(|(i, p)| VolumeAttachment {
                    instance: i.to_string(),
                    path: p.to_string(),
                })
                .collect(),
            root_of: None,
            container_root: false,
            id_base: Some(0),
            config: Default::default(),
            disk_owner: None,
            created_at: "2024-01-01T00:00:00Z".into(),
        }
    }
}

/// What the store keeps of an export: the export, and the generation its NFS file handles
/// carry — drawn anew at every create, so handles taken from an export that was deleted and
/// created again are stale, whatever it serves now.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct ExportRecord {
    #[serde(flatten)]
    pub(super) export: StorageExport,
    /// `None` in records made before generations were kept (derived from the export then).
    #[serde(default)]
    pub(super) generation: Option<u32>,
    /// A TLS export's client certificates, by fingerprint (issued and not revoked).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) client_certs: Vec<String>,
}
