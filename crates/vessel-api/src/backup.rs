//! Backups of instances: kept in a chunk store (chunks named by SHA-256, compressed, checked
//! on every read; see the `vessel-backup` crate), listed, verified, pruned, restored.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Body of `POST /1.0/instances/{name}/backups`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct BackupCreate {
    /// A backup store directory on the daemon's host (admins only; default: the daemon's own
    /// store). A new directory becomes a store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
}

/// One archive of a backup.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct BackupArchive {
    /// `instance` (its record), `rootfs` (a container's writable layer), `root.qcow2` or
    /// `root` (a VM's disk), ...
    pub name: String,
    /// `blob`, `tree` (files) or `block` (a disk).
    pub kind: String,
    /// Bytes of data it holds.
    pub size: u64,
    /// Chunks it is made of.
    pub chunks: u64,
}

/// A backup, as listed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct Backup {
    /// The instance it is of.
    pub instance: String,
    /// Its id (the time it was taken, UTC).
    pub id: String,
    /// When it was taken, RFC 3339 (empty when its index cannot be read).
    pub created_at: String,
    /// Bytes of data it holds.
    pub size: u64,
    /// Its archives.
    pub archives: Vec<BackupArchive>,
    /// What `verify` found damaged, or why its index cannot be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub damaged: Option<String>,
    /// The instance's type and image, and what else was noted when it was taken.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// Body of `POST /1.0/backups/{instance}/{id}/restore`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct BackupRestore {
    /// The new instance's name (default: the instance's own, which must not exist).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Start it once restored.
    #[serde(default)]
    pub start: bool,
    /// The store it is in (as `BackupCreate::store`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
}

/// Body of `POST /1.0/backups/verify`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct BackupVerify {
    /// Only this instance's backups (default: every backup the caller can see).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// Only this backup of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The store (as `BackupCreate::store`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
}

/// Body of `POST /1.0/backups/prune`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct BackupPrune {
    /// The instance whose backups are pruned.
    pub instance: String,
    /// Keep the newest N.
    #[serde(default)]
    pub keep_last: usize,
    /// Keep the newest of each of the newest N days (UTC) that have one.
    #[serde(default)]
    pub keep_daily: usize,
    /// The store (as `BackupCreate::store`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
}

/// Answer of a prune.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct BackupPruned {
    /// Ids of the backups deleted (their chunks go at the next gc).
    pub removed: Vec<String>,
    /// Ids of those kept.
    pub kept: Vec<String>,
}

/// Body of `POST /1.0/backups/gc`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct BackupGc {
    /// The store (as `BackupCreate::store`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
}

/// What a gc did.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct BackupGcReport {
    /// Chunks a backup names.
    pub used_chunks: u64,
    /// Chunks removed, and the bytes they took.
    pub removed_chunks: u64,
    pub removed_bytes: u64,
    /// Chunks no backup names yet kept: a backup being taken may need them.
    pub recent_chunks: u64,
    /// Chunks kept, and the bytes they take.
    pub kept_chunks: u64,
    pub kept_bytes: u64,
}

/// A snapshot of an instance: its writable layer or disks (and attached volumes) at one
/// moment, and for a VM taken `stateful`, its memory and devices.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct InstanceSnapshot {
    /// Its name.
    pub name: String,
    /// When it was taken, RFC 3339.
    pub created_at: String,
    /// Whether it holds a VM's memory and device state (a restore resumes the guest).
    #[serde(default)]
    pub stateful: bool,
    /// When the daemon deletes it (`snapshots.expiry`), RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// How it is kept: `copy`, `reflink`, `pool` (the pool's own snapshots), `qcow2`.
    pub kind: String,
    /// Attached volumes it holds too, as POOL/VOLUME.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<String>,
}

/// Body of `POST /1.0/instances/{name}/snapshots`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct InstanceSnapshotCreate {
    /// Its name (default: `snapN`, the first free).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A running VM's memory and device state too.
    #[serde(default)]
    pub stateful: bool,
}

/// Body of `POST /1.0/instances/{name}/snapshots/{snapshot}/restore`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct InstanceSnapshotRestore {
    /// Stop a running instance for the restore (and start it again after); without it a
    /// running instance is refused. A stateful snapshot is restored into the running guest.
    #[serde(default)]
    pub force: bool,
}

/// Body of `POST /1.0/instances/{name}/rename`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct InstanceRename {
    /// Its new name (in the same project).
    pub name: String,
}

/// Body of `POST /1.0/instances/{name}/move`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct InstanceMove {
    /// The storage pool its root disk moves into.
    pub pool: String,
}

/// Body of `POST /1.0/instances/{name}/migrate`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct InstanceMigrate {
    /// The cluster member it moves to (online).
    pub target: String,
    /// Live (a running VM moves while it runs: disks mirrored, memory sent, a pause of a
    /// fraction of a second) or cold (stopped, moved, started there). Unset: live for a
    /// running VM, cold for everything else; `true` for what cannot move live is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live: Option<bool>,
}

/// Body of `POST /1.0/instances/{name}/incoming`, sent by the member a VM moves live from
/// to the member it moves to: the instance as it is there (its record, NICs with their
/// addresses and MACs); it is made here stopped and its QEMU waits for the state.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MigrationIncoming {
    /// The instance on the member it leaves.
    pub instance: crate::Instance,
    /// Its root disk's size there, bytes (the copy here is grown to it).
    pub disk_size: u64,
    /// Parallel connections for its memory (multifd); 0: one.
    pub multifd_channels: u8,
    /// The keys set on the instance itself (its profiles' keep reaching it).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub own_config: std::collections::BTreeMap<String, String>,
    /// The networks and volumes its profiles gave it.
    #[serde(
        default,
        skip_serializing_if = "crate::config::ProfileDevices::is_empty"
    )]
    pub from_profiles: crate::config::ProfileDevices,
}

/// Body of `PUT /1.0/instances/{name}/incoming`: the end of a live move to this member.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MigrationEnd {
    /// `true`: everything arrived, the guest runs here now; `false`: the move failed, the
    /// copy here goes.
    pub run: bool,
}

/// Body of `POST /1.0/instances/{name}/copy`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct InstanceCopy {
    /// The new instance's name.
    pub name: String,
    /// Copy this snapshot of it rather than the instance as it is now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// Start the copy once made.
    #[serde(default)]
    pub start: bool,
}
