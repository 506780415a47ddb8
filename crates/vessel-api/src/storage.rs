//! Request and response bodies of the storage API: pools, volumes, snapshots, exports.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Pool driver.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum PoolDriver {
    /// A directory on the host file system. Filesystem volumes are directories, block volumes
    /// sparse files; snapshots are copies (reflinked where the file system can).
    Dir,
    /// A btrfs file system over one or more disks or loop-backed files: volumes are
    /// subvolumes with quota limits, snapshots are btrfs snapshots.
    Btrfs,
    /// Vessel's own RAID engine (RAID 0/1/5/6) over member files or disks, carved into
    /// thin-provisioned block volumes.
    Raid,
    /// RBD images in a RADOS pool of a Ceph cluster the user runs (block volumes for VMs,
    /// opened by QEMU's librbd).
    Ceph,
}

impl PoolDriver {
    /// Lower-case name as on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dir => "dir",
            Self::Btrfs => "btrfs",
            Self::Raid => "raid",
            Self::Ceph => "ceph",
        }
    }
}

/// Body of `POST /1.0/storage/pools`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PoolCreate {
    /// Pool name: 1-63 characters, letters, digits and '-', starting with a letter.
    pub name: String,
    /// Driver.
    pub driver: PoolDriver,
    /// Where the pool lives. `dir`: one directory (default: under the daemon's root).
    /// `btrfs`: block devices or files to format (default: one loop-backed file of `size`
    /// bytes under the daemon's root). `raid`: member files or block devices (default:
    /// `members` files of `size` bytes each under the daemon's root). `ceph`: the RADOS
    /// pool its images go in (default: the pool's name; made if Ceph has none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<String>,
    /// Bytes: the loop file of a `btrfs` pool, or each member file of a `raid` pool that
    /// Vessel creates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// `raid`: number of member files to create when no sources are given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<u32>,
    /// `raid`: level, one of raid0, raid1, raid5, raid6. `btrfs`: data profile for several
    /// devices (single, raid0, raid1, raid10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    /// `raid`: chunk size in bytes (a power of two, default 64 KiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk_size: Option<u64>,
    /// `raid1` in a cluster: the member that keeps the pool's second copy. Vessel makes
    /// one member file of `size` here and one there, reached over the members' mutual TLS;
    /// every write reaches both before it is acknowledged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
    /// `raid` in a cluster: make the pool of the far copy `NAME` kept on this member (its
    /// primary is lost), with its volumes; refused unless the cluster records the copy
    /// current. The old primary can write to it no more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adopt: Option<String>,
    /// Labels: `user.*` keys, free-form (a stack marks what it made with `user.stack`).
    /// `ceph` pools also take `ceph.conf` (the cluster's configuration, default
    /// `/etc/ceph/ceph.conf`) and `ceph.user.name` (default `admin`); `raid` pools
    /// `raid.cache`: `none` (members opened with `O_DIRECT`, the default) or `writeback`
    /// (through the host's page cache).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub config: std::collections::BTreeMap<String, String>,
    /// Free text.
    #[serde(default)]
    pub description: String,
}

/// A storage pool as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct StoragePool {
    /// Unique name.
    pub name: String,
    /// Driver.
    pub driver: PoolDriver,
    /// Directory, devices or member files the pool lives on.
    pub sources: Vec<String>,
    /// `raid` level or `btrfs` profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    /// `online`, `degraded` (a `raid` pool running without a member) or `unavailable`
    /// (its sources could not be opened; see `error`).
    pub status: String,
    /// Why the pool is unavailable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Capacity in bytes.
    pub size_bytes: u64,
    /// Bytes in use by volumes and snapshots.
    pub used_bytes: u64,
    /// Labels: `user.*` keys, free-form (a stack marks what it made with `user.stack`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub config: std::collections::BTreeMap<String, String>,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Creation time, RFC 3339.
    pub created_at: String,
}

/// One member of a `raid` pool.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct PoolMember {
    /// Slot in the array.
    pub index: u32,
    /// File or device.
    pub path: String,
    /// `active`, `failed`, `missing` or `rebuilding`.
    pub state: String,
    /// Blocks whose checksum did not match when read from this member.
    pub checksum_errors: u64,
}

/// Result of the last scrub of a pool.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct ScrubResult {
    /// When it finished, RFC 3339.
    pub finished_at: String,
    /// Stripes (rows) checked.
    pub rows_checked: u64,
    /// Stripes whose parity or checksums disagreed.
    pub mismatches: u64,
    /// Of those, stripes rewritten with correct data.
    pub repaired: u64,
    /// Members found lying (wrong data under a good checksum elsewhere).
    pub bad_members: Vec<u32>,
}

/// `GET /1.0/storage/pools/{name}/status`: health of a pool.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct PoolStatus {
    /// Pool name.
    pub name: String,
    /// Driver.
    pub driver: PoolDriver,
    /// As in [`StoragePool::status`].
    pub status: String,
    /// Members of a `raid` pool (devices of a `btrfs` pool).
    pub members: Vec<PoolMember>,
    /// Percentage of a rebuild in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebuild_percent: Option<u8>,
    /// The last scrub, if any ran since the pool was opened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scrub: Option<ScrubResult>,
}

/// Body of `POST /1.0/storage/pools/{name}/repair`: a `raid` member action.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PoolRepair {
    /// `fail` (take a member out), `replace` (rebuild a member onto `path`) or `scrub`
    /// (check every stripe and repair what disagrees).
    pub action: String,
    /// Member slot for `fail` and `replace`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<u32>,
    /// The replacement file or device for `replace` (a file is created with the member
    /// size when it does not exist).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `replace` in a cluster, instead of `path`: the member to keep the new member as a far
    /// copy (a `raid1` pool without one, such as a pool adopted from a far copy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
    /// `replace`: upper bound on bytes rebuilt per second, leaving I/O to the instances
    /// (default: full speed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<u64>,
    /// `fail`: also when the level cannot serve its data without the member (to test
    /// that its reads then fail).
    #[serde(default)]
    pub force: bool,
}

/// What a volume holds.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum VolumeContent {
    /// A file tree, mounted into containers, exportable over NFS.
    #[default]
    Filesystem,
    /// A disk of fixed size, attached to VMs, exportable over NBD.
    Block,
}

/// Body of `POST /1.0/storage/pools/{pool}/volumes`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct VolumeCreate {
    /// Volume name: 1-63 characters, letters, digits and '-', starting with a letter.
    pub name: String,
    /// Filesystem (default) or block.
    #[serde(default)]
    pub content: VolumeContent,
    /// Bytes: the disk size of a block volume, the quota of a filesystem volume (not
    /// enforced on `dir` pools). Required for block volumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Create as a writable clone of `VOLUME/SNAPSHOT` (or of a whole volume) in the same
    /// pool instead of empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Labels: `user.*` keys, free-form (a stack marks what it made with `user.stack`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub config: std::collections::BTreeMap<String, String>,
}

/// Where a volume is attached.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct VolumeAttachment {
    /// Instance name.
    pub instance: String,
    /// Mount point inside a container; empty for a VM disk.
    #[serde(default)]
    pub path: String,
}

/// A volume as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct StorageVolume {
    /// Pool it lives in.
    pub pool: String,
    /// Name, unique in its pool.
    pub name: String,
    /// Filesystem or block.
    pub content: VolumeContent,
    /// Block size or filesystem quota in bytes (0: no quota).
    pub size_bytes: u64,
    /// Bytes it uses in its pool.
    pub used_bytes: u64,
    /// `VOLUME/SNAPSHOT` it was cloned from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Its snapshots, oldest first.
    pub snapshots: Vec<String>,
    /// What the project's `limits.disk.pool.POOL` counts for its snapshots: each at the
    /// volume's size when it was taken (what it may pin; in a `dir` pool a whole copy).
    #[serde(default)]
    pub snapshot_bytes: u64,
    /// Instances using it.
    pub attached_to: Vec<VolumeAttachment>,
    /// Labels: `user.*` keys, free-form (a stack marks what it made with `user.stack`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub config: std::collections::BTreeMap<String, String>,
    /// Creation time, RFC 3339.
    pub created_at: String,
}

/// Body of `PATCH /1.0/storage/pools/{pool}/volumes/{name}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct VolumeUpdate {
    /// New size in bytes (block volumes grow or shrink; filesystem quotas change).
    pub size: u64,
}

/// Body of `POST /1.0/storage/pools/{pool}/volumes/{name}/snapshots`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SnapshotCreate {
    /// Snapshot name, unique per volume.
    pub name: String,
}

/// Body of `POST /1.0/storage/pools/{pool}/volumes/{name}/restore`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct VolumeRestore {
    /// Snapshot to roll the volume back to (later snapshots are kept).
    pub snapshot: String,
}

/// Body of `POST /1.0/storage/pools/{pool}/volumes/{name}/attach` and `.../detach`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct VolumeAttach {
    /// Instance name (it must be stopped).
    pub instance: String,
    /// Mount point inside a container (filesystem volumes); ignored for VM disks.
    #[serde(default)]
    pub path: String,
}

/// Export protocol.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ExportProtocol {
    /// Block export (SAN-like) with Vessel's NBD server: block volumes.
    Nbd,
    /// File export (NAS-like) with Vessel's NFSv3 server: filesystem volumes.
    Nfs,
}

/// Body of `POST /1.0/storage/exports`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ExportCreate {
    /// Export name: the NBD export name, or the NFS path `/NAME`.
    pub name: String,
    /// Pool of the volume.
    pub pool: String,
    /// Volume to export.
    pub volume: String,
    /// NBD or NFS.
    pub protocol: ExportProtocol,
    /// `HOST:PORT` to listen on (TCP), or an absolute path for a unix socket (NBD only).
    /// Several exports of one protocol may share a listener. Default: NBD on
    /// 127.0.0.1:10809, NFS on 127.0.0.1:2049.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// Serve read-only.
    #[serde(default)]
    pub read_only: bool,
    /// NBD over TCP: require TLS with a client certificate from
    /// `POST /1.0/storage/exports/{name}/credentials` (the default there). `false` serves
    /// plain NBD, to anyone who reaches the address. Not for unix sockets (their file mode
    /// decides who connects) nor NFS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<bool>,
    /// On TCP: the client networks that may use the export, each an address (`192.0.2.7`)
    /// or `ADDRESS/PREFIX` (`10.0.0.0/24`, `fd00::/64`); clients elsewhere can neither open
    /// it (NFS: mount it or use its file handles) nor see it listed. Empty: every client
    /// that reaches the listener (and, for NBD with TLS, holds credentials).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
}

/// Body of `PATCH /1.0/storage/exports/{name}`: what changes while the export serves.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ExportUpdate {
    /// The client networks that may use the export from now on (as in `ExportCreate`): an
    /// NFS client left out loses access at its next request, handles it holds included;
    /// an NBD client left out is disconnected. Empty only with `allow_all` (an empty list
    /// alone is refused: a script that filtered out its last network would open the export
    /// to everyone).
    #[serde(default)]
    pub allow: Vec<String>,
    /// Every client that reaches the export may use it (with TLS: every client with
    /// credentials); `allow` is then empty.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_all: bool,
}

/// Credentials of one client of an export served with TLS: the files libnbd
/// (`nbds://…?tls-certificates=DIR`) and QEMU (`tls-creds-x509,dir=DIR`) read from one
/// directory, by these names.
#[derive(Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct ExportCredentials {
    /// The export.
    pub export: String,
    /// The URI to use with them (`nbds://HOST:PORT/NAME`).
    pub uri: String,
    /// `ca-cert.pem`: the authority the server's certificate is checked against.
    pub ca_cert: String,
    /// `client-cert.pem`: this client's certificate.
    pub client_cert: String,
    /// `client-key.pem`: its private key (shown once; keep it private).
    pub client_key: String,
    /// SHA-256 of the client certificate's DER (what the export knows it by).
    pub fingerprint: String,
}

impl std::fmt::Debug for ExportCredentials {
    /// Everything but the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExportCredentials")
            .field("export", &self.export)
            .field("uri", &self.uri)
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

/// An export as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct StorageExport {
    /// Name.
    pub name: String,
    /// Pool of the volume.
    pub pool: String,
    /// Volume.
    pub volume: String,
    /// NBD or NFS.
    pub protocol: ExportProtocol,
    /// Listener address or socket path.
    pub listen: String,
    /// Read-only.
    pub read_only: bool,
    /// A URI a client can use (`nbds://…` with TLS, `nbd://…`, `nbd+unix:///…?socket=…`,
    /// `nfs://…`).
    pub uri: String,
    /// Served with TLS: clients need credentials (`…/credentials`).
    #[serde(default)]
    pub tls: bool,
    /// How many client credentials are valid (TLS exports).
    #[serde(default)]
    pub clients: usize,
    /// On TCP: the client networks that may use the export (empty: every client that
    /// reaches the listener).
    #[serde(default)]
    pub allow: Vec<String>,
    /// `serving`, or `failed` with `error`.
    pub status: String,
    /// Why the export is not served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
