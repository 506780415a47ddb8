//! Errors of the thin-provisioning layer.

use super::backing::BackingError;

/// Everything that can go wrong while formatting, opening or using a thin pool.
#[derive(Debug, thiserror::Error)]
pub enum ThinError {
    /// The device under the pool failed a request.
    #[error("the pool's device failed while trying to {op}")]
    Backing {
        /// What the pool was doing.
        op: &'static str,
        /// The underlying error.
        #[source]
        source: BackingError,
    },
    /// The extent size is not a power of two of at least 64 KiB.
    #[error("extent size {0} is not a power of two between 64 KiB and 1 GiB")]
    ExtentSize(u64),
    /// The metadata area size is not a multiple of 4 KiB in the supported range.
    #[error("metadata size {0} is not a multiple of 4 KiB between 64 KiB and 1 GiB")]
    MetadataSize(u64),
    /// The device cannot hold the header, both metadata copies and one extent.
    #[error("the device holds {size} bytes, a pool with these options needs at least {needed}")]
    DeviceTooSmall {
        /// The device size.
        size: u64,
        /// What the pool needs.
        needed: u64,
    },
    /// The device carries no thin pool header.
    #[error("the device carries no Vessel thin pool; format it first")]
    NotAPool,
    /// The pool header is damaged.
    #[error("the thin pool header fails its checksum")]
    HeaderChecksum,
    /// The pool was written by a newer format.
    #[error("the thin pool has format version {found}, this build reads {supported}")]
    Version {
        /// The version found.
        found: u32,
        /// The version understood.
        supported: u32,
    },
    /// The header describes a geometry the device cannot hold.
    #[error("the thin pool header is inconsistent: {0}")]
    BadHeader(&'static str),
    /// Neither metadata copy is intact.
    #[error("neither metadata copy of the thin pool is intact: {0}")]
    MetadataCorrupt(String),
    /// The metadata no longer fits its area: too many volumes or mapped extents.
    #[error(
        "pool metadata would need {needed} bytes, its area holds {capacity}; delete volumes or snapshots"
    )]
    MetadataFull {
        /// Bytes the metadata would need.
        needed: u64,
        /// Bytes one metadata copy may use.
        capacity: u64,
    },
    /// The volume table is full.
    #[error("the pool holds at most {max} volumes")]
    TooManyVolumes {
        /// The limit.
        max: usize,
    },
    /// No extent is free.
    #[error("the pool has no free extent left ({total} extents, all in use); free space or grow the pool")]
    NoSpace {
        /// Extents in the pool.
        total: u64,
    },
    /// A volume name breaks the naming rules.
    #[error("invalid volume name {name:?}: {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A label breaks the rules.
    #[error("invalid label {label:?}: {reason}")]
    InvalidLabel {
        /// The label given.
        label: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A volume size is not usable.
    #[error("invalid volume size {size}: {reason}")]
    InvalidSize {
        /// The size given.
        size: u64,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A volume of that name exists.
    #[error("volume {0} already exists")]
    NameInUse(String),
    /// No volume of that name (or the handle's volume was deleted).
    #[error("no volume named {0}")]
    NoSuchVolume(String),
    /// The volume is a read-only snapshot.
    #[error("volume {0} is a read-only snapshot")]
    ReadOnly(String),
    /// The volume is writable where a snapshot is needed.
    #[error("volume {0} is not a snapshot")]
    NotASnapshot(String),
    /// A restore named a snapshot of another volume.
    #[error("snapshot {snapshot} was not taken of volume {volume}")]
    ForeignSnapshot {
        /// The volume to restore.
        volume: String,
        /// The snapshot given.
        snapshot: String,
    },
    /// A volume with snapshots cannot be deleted.
    #[error("volume {name} has snapshots {snapshots:?}; delete them first")]
    HasSnapshots {
        /// The volume.
        name: String,
        /// Its snapshots.
        snapshots: Vec<String>,
    },
    /// A request falls outside the volume.
    #[error("request at {offset} for {len} bytes is outside volume {volume} of {size} bytes")]
    OutOfRange {
        /// The volume.
        volume: String,
        /// Start of the request.
        offset: u64,
        /// Its length.
        len: u64,
        /// The volume size.
        size: u64,
    },
}

impl ThinError {
    /// Wraps a device error with what the pool was doing.
    pub(crate) fn backing(op: &'static str) -> impl FnOnce(BackingError) -> ThinError {
        move |source| ThinError::Backing { op, source }
    }
}

/// Result with a [`ThinError`].
pub type ThinResult<T> = std::result::Result<T, ThinError>;
