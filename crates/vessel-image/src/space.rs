//! Bounds on what a layer may cost: free space on the store's file system and how far a
//! compressed blob may expand. Shared by the unpacker, the importer and the registry client.

use std::io;
use std::os::fd::AsFd;
use std::path::Path;

/// How much room a writer must leave on the store's file system, and how far layers expand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpaceLimits {
    /// Bytes that must stay free (for unprivileged users) after a write: a full store's file
    /// system stops the daemon's database and every instance on it.
    pub min_free_bytes: u64,
    /// Inodes that must stay free after a write.
    pub min_free_inodes: u64,
    /// Most uncompressed bytes per compressed byte of a layer blob (a gzip stream of zeros
    /// reaches 1,030:1; real layers stay under 20:1).
    pub max_ratio: u64,
    /// Uncompressed bytes every compressed layer may reach whatever its ratio, so that small,
    /// very compressible layers are not refused.
    pub ratio_floor: u64,
}

impl Default for SpaceLimits {
    fn default() -> Self {
        Self {
            min_free_bytes: 1 << 30,
            min_free_inodes: 10_000,
            max_ratio: 100,
            ratio_floor: 256 << 20,
        }
    }
}

impl SpaceLimits {
    /// The most uncompressed bytes a layer blob of `compressed` bytes may expand to.
    pub fn max_uncompressed(&self, compressed: u64) -> u64 {
        compressed
            .saturating_mul(self.max_ratio)
            .max(self.ratio_floor)
    }
}

/// Free room on a file system, as an unprivileged writer sees it (root's reserved blocks are
/// not counted: they are the host's margin, not the store's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FreeSpace {
    /// Free bytes.
    pub bytes: u64,
    /// Free inodes (`u64::MAX` on file systems without an inode count, like btrfs).
    pub inodes: u64,
}

/// Free room on the file system holding `path`.
pub fn free_space(path: &Path) -> io::Result<FreeSpace> {
    let st = nix::sys::statvfs::statvfs(path).map_err(io::Error::from)?;
    Ok(from_statvfs(&st))
}

/// Free room on the file system holding the open file or directory `fd`.
pub fn free_space_fd(fd: impl AsFd) -> io::Result<FreeSpace> {
    let st = nix::sys::statvfs::fstatvfs(fd).map_err(io::Error::from)?;
    Ok(from_statvfs(&st))
}

fn from_statvfs(st: &nix::sys::statvfs::Statvfs) -> FreeSpace {
    let files: u64 = st.files();
    let available: u64 = st.blocks_available();
    let fragment: u64 = st.fragment_size();
    FreeSpace {
        bytes: available.saturating_mul(fragment),
        inodes: if files == 0 {
            u64::MAX
        } else {
            st.files_available()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_has_a_floor_and_saturates() {
        let l = SpaceLimits::default();
        assert_eq!(l.max_uncompressed(1), 256 << 20);
        assert_eq!(l.max_uncompressed(100 << 20), 10_000 << 20);
        assert_eq!(l.max_uncompressed(u64::MAX), u64::MAX);
    }

    #[test]
    fn free_space_of_tmp_is_known() {
        let f = free_space(Path::new("/tmp")).expect("statvfs /tmp");
        assert!(f.bytes > 0);
    }
}
