//! Vessel's own RAID engine: RAID 0, 1, 5 and 6 over member files or block devices, in
//! user space.
//!
//! An array is a set of members, each carrying a [`superblock`] that names its pool, its
//! slot and the geometry. [`RaidArray`] presents the members as one block device
//! (`read_at`, `write_at`, `flush`, `size`), keeps working with failed members as far as
//! the level allows, rebuilds replacements and scrubs parity. A write-intent [`bitmap`]
//! lets assembly resync only the rows an interrupted write may have left inconsistent,
//! and per-block checksums, checked on every read and by scrub, catch a member that
//! returns wrong data so it is read around and repaired. Pools, thin volumes and the
//! NBD/NFS exports sit on top of this API. The on-disk format and the parity math are in
//! `docs/raid.md`.
//!
//! ```
//! use vessel_raid::{RaidArray, RaidConfig, RaidLevel};
//!
//! let dir = std::env::temp_dir().join(format!("vessel-raid-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir)?;
//! let paths: Vec<_> = (0..4).map(|i| dir.join(format!("disk{i}"))).collect();
//! for p in &paths {
//!     std::fs::File::create(p)?.set_len(4 << 20)?;
//! }
//! let array = RaidArray::create(&paths, &RaidConfig::new(RaidLevel::Raid6))?;
//! array.write_at(12345, b"hello")?;
//! array.flush()?;
//! array.fail_member(0)?;
//! array.fail_member(3)?;
//! let mut buf = [0u8; 5];
//! array.read_at(12345, &mut buf)?;
//! assert_eq!(&buf, b"hello");
//! std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;

pub mod array;
pub mod bitmap;
mod checksum;
mod degraded;
pub mod error;
pub mod gf;
mod io;
pub mod layout;
pub mod maintenance;
pub mod member;
mod rebuild;
pub mod superblock;
pub mod thin;
mod uring;

pub use array::{MemberStatus, RaidArray, RaidConfig};
pub use error::{RaidError, Result};
pub use maintenance::{ScrubMismatch, ScrubReport};
pub use member::MemberIo;
pub use rebuild::RebuildOptions;
pub use superblock::SlotState;
pub use thin::{
    Backing, BackingError, ThinError, ThinOptions, ThinPool, ThinResult, Usage, Volume, VolumeInfo,
};

/// The RAID levels the engine implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RaidLevel {
    /// Striping, no redundancy.
    Raid0,
    /// N-way mirroring.
    Raid1,
    /// Striping with one rotating parity chunk (left-symmetric, as md).
    Raid5,
    /// Striping with rotating P and Q parity (GF(2^8), polynomial 0x11d).
    Raid6,
}

impl RaidLevel {
    /// The fewest members the level works with.
    pub fn min_members(self) -> usize {
        match self {
            RaidLevel::Raid0 => 1,
            RaidLevel::Raid1 => 2,
            RaidLevel::Raid5 => 3,
            RaidLevel::Raid6 => 4,
        }
    }

    /// How many members may be missing before data is lost.
    pub fn tolerated_failures(self, members: usize) -> usize {
        match self {
            RaidLevel::Raid0 => 0,
            RaidLevel::Raid1 => members.saturating_sub(1),
            RaidLevel::Raid5 => 1,
            RaidLevel::Raid6 => 2,
        }
    }

    /// How many chunks of one stripe row carry data.
    pub fn data_members(self, members: usize) -> usize {
        match self {
            RaidLevel::Raid0 => members,
            RaidLevel::Raid1 => 1,
            RaidLevel::Raid5 => members - 1,
            RaidLevel::Raid6 => members - 2,
        }
    }

    /// The number stored on disk.
    pub fn code(self) -> u32 {
        match self {
            RaidLevel::Raid0 => 0,
            RaidLevel::Raid1 => 1,
            RaidLevel::Raid5 => 5,
            RaidLevel::Raid6 => 6,
        }
    }

    /// The level for a number stored on disk.
    pub fn from_code(code: u32) -> Option<Self> {
        match code {
            0 => Some(RaidLevel::Raid0),
            1 => Some(RaidLevel::Raid1),
            5 => Some(RaidLevel::Raid5),
            6 => Some(RaidLevel::Raid6),
            _ => None,
        }
    }
}

impl fmt::Display for RaidLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code())
    }
}

/// A file under the temporary directory, removed when dropped (the unit tests' member
/// files).
#[cfg(test)]
pub(crate) struct TempFile(pub std::path::PathBuf);

#[cfg(test)]
impl TempFile {
    /// A sparse file of `len` bytes named after `tag` and the process.
    pub fn new(tag: &str, len: u64) -> Self {
        let p = std::env::temp_dir().join(format!("vessel-raid-{tag}-{}", std::process::id()));
        let f = std::fs::File::create(&p).expect("create");
        f.set_len(len).expect("size");
        TempFile(p)
    }
}

#[cfg(test)]
impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[cfg(test)]
mod tests {
    /// The array is shared between the daemon's threads (NBD connections, rebuild).
    #[test]
    fn array_is_send_and_sync() {
        fn shared<T: Send + Sync>() {}
        shared::<crate::RaidArray>();
    }
}
