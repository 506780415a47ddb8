//! What the store keeps of pools and volumes.

use serde::{Deserialize, Serialize};
use vessel_api::{PoolDriver as DriverKind, VolumeAttachment, VolumeContent};

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
    pub(super) created_at: String,
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
    #[serde(default)]
    pub(super) attached_to: Vec<VolumeAttachment>,
    /// The VM whose root disk this is (deleted with it).
    #[serde(default)]
    pub(super) root_of: Option<String>,
    pub(super) created_at: String,
}

impl VolumeRecord {
    pub(super) fn key(&self) -> String {
        format!("{}/{}", self.pool, self.name)
    }
}
