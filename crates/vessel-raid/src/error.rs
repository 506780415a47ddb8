//! Errors of the RAID engine.

use std::io;
use std::path::PathBuf;

use uuid::Uuid;

use crate::RaidLevel;

/// Everything that can go wrong while creating, assembling or driving an array.
#[derive(Debug, thiserror::Error)]
pub enum RaidError {
    /// An I/O call on a member failed.
    #[error("I/O on member {path} failed while trying to {op}")]
    Io {
        /// The member file or device.
        path: PathBuf,
        /// What the engine was doing.
        op: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The level needs more (or fewer) members than were given.
    #[error("RAID {level} needs at least {min} members, {count} given")]
    MemberCount {
        /// The requested level.
        level: RaidLevel,
        /// How many members were given.
        count: usize,
        /// The minimum for this level.
        min: usize,
    },
    /// More members than one superblock can describe.
    #[error("an array holds at most {max} members, {count} given")]
    TooManyMembers {
        /// How many members were given.
        count: usize,
        /// The supported maximum.
        max: usize,
    },
    /// The chunk size is not a power of two multiple of 4 KiB.
    #[error("chunk size {0} is not a power of two between 4 KiB and 64 MiB")]
    ChunkSize(u64),
    /// A member cannot hold the header plus the data area.
    #[error("member {path} holds {size} bytes, needs at least {needed}")]
    MemberTooSmall {
        /// The member file or device.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// What the array needs.
        needed: u64,
    },
    /// The same file was given twice.
    #[error("member {path} is listed twice")]
    DuplicateMember {
        /// The member file or device.
        path: PathBuf,
    },
    /// No Vessel RAID superblock on the member.
    #[error("member {path} carries no Vessel RAID superblock")]
    NotAMember {
        /// The member file or device.
        path: PathBuf,
    },
    /// The superblock is damaged.
    #[error("superblock of member {path} fails its checksum; the member must be replaced")]
    SuperblockChecksum {
        /// The member file or device.
        path: PathBuf,
    },
    /// The superblock was written by a newer format.
    #[error(
        "superblock of member {path} has format version {version}, this build reads {supported}"
    )]
    SuperblockVersion {
        /// The member file or device.
        path: PathBuf,
        /// The version found.
        version: u32,
        /// The version understood.
        supported: u32,
    },
    /// The member belongs to a different pool.
    #[error("member {path} belongs to pool {found}, not to pool {expected}")]
    ForeignMember {
        /// The member file or device.
        path: PathBuf,
        /// The pool being assembled.
        expected: Uuid,
        /// The pool the member belongs to.
        found: Uuid,
    },
    /// A member that already carries a superblock was given to `create`.
    #[error("member {path} already belongs to pool {pool}; wipe it or pass force to reuse it")]
    MemberInUse {
        /// The member file or device.
        path: PathBuf,
        /// The pool it belongs to.
        pool: Uuid,
    },
    /// The member was given in another position than the one it was created for.
    #[error("member {path} is slot {found} of the pool but was given as slot {expected}")]
    WrongSlot {
        /// The member file or device.
        path: PathBuf,
        /// The position it was given in.
        expected: usize,
        /// The position its superblock records.
        found: usize,
    },
    /// Members disagree on the geometry of the array.
    #[error("member {path} records {what} {found}, the other members record {expected}")]
    Geometry {
        /// The member file or device.
        path: PathBuf,
        /// Which field disagrees.
        what: &'static str,
        /// The value of the majority.
        expected: u64,
        /// The value on this member.
        found: u64,
    },
    /// A request falls outside the array.
    #[error("request at {offset} for {len} bytes is outside the array of {size} bytes")]
    OutOfRange {
        /// Start of the request.
        offset: u64,
        /// Its length.
        len: u64,
        /// The array size.
        size: u64,
    },
    /// More members are missing than the level tolerates: the data is gone.
    #[error("data loss at array offset {offset}: members {missing:?} are missing or returned corrupt data, and RAID {level} cannot rebuild them")]
    DataLoss {
        /// Array offset of the stripe that cannot be read.
        offset: u64,
        /// The members missing, or failing their checksums, in that stripe.
        missing: Vec<usize>,
        /// The level.
        level: RaidLevel,
    },
    /// Assembly was given no member at all.
    #[error("no member given; an array is assembled from at least one of its members")]
    NoMembers,
    /// A member index is out of range.
    #[error("the array has {count} members, there is no member {index}")]
    NoSuchMember {
        /// The index given.
        index: usize,
        /// The member count.
        count: usize,
    },
    /// Failing a member would leave fewer than the level needs to serve the data.
    #[error(
        "failing member {index} would leave {failed} of {members} members out, more than \
         {level} survives ({tolerated}): its data would be unreadable; force it only to \
         test that"
    )]
    TooManyFailures {
        /// The member index.
        index: usize,
        /// Members out after it.
        failed: usize,
        /// The member count.
        members: usize,
        /// Members the level can lose.
        tolerated: usize,
        /// The level.
        level: RaidLevel,
    },
    /// The operation needs a failed member but this one is healthy.
    #[error("member {index} is {state}; only a failed member can be replaced")]
    MemberNotFailed {
        /// The member index.
        index: usize,
        /// Its state.
        state: &'static str,
    },
    /// A member failed and the array's owner did not confirm that it recorded it (a far
    /// copy must be marked out of date before writes go on without it).
    #[error("member {index} failed and its failure could not be recorded ({why}); writes are held back until it is")]
    FailureUnconfirmed {
        /// The member index.
        index: usize,
        /// What the owner said.
        why: String,
    },
    /// A member given back to its slot is not the one that was there.
    #[error("{path} was not member {index} of this pool: {why}")]
    NotThisMember {
        /// The member given.
        path: PathBuf,
        /// The slot.
        index: usize,
        /// What differs.
        why: String,
    },
}

/// Result with a [`RaidError`].
pub type Result<T, E = RaidError> = std::result::Result<T, E>;
