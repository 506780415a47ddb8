//! The block device a thin pool lives on.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use crate::{RaidArray, RaidError};

/// Why the device under a thin pool failed a request.
#[derive(Debug, thiserror::Error)]
pub enum BackingError {
    /// The RAID array refused or failed the request.
    #[error(transparent)]
    Raid(#[from] RaidError),
    /// A plain file failed the request.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// A byte-addressed device a [`ThinPool`](super::ThinPool) can be formatted on: a
/// [`RaidArray`], or a plain [`File`] for tests and single-disk pools.
///
/// Every method takes `&self`: the pool calls them from its own threads. `flush` must make
/// every write that returned before it durable; the pool relies on it to order its data
/// before the metadata that names it.
pub trait Backing: Send + Sync {
    /// The usable size in bytes.
    fn size(&self) -> Result<u64, BackingError>;
    /// Fills `buf` from byte `offset`.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), BackingError>;
    /// Writes `buf` at byte `offset`.
    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<(), BackingError>;
    /// Makes every completed write durable.
    fn flush(&self) -> Result<(), BackingError>;
}

impl Backing for RaidArray {
    fn size(&self) -> Result<u64, BackingError> {
        Ok(RaidArray::size(self))
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), BackingError> {
        Ok(RaidArray::read_at(self, offset, buf)?)
    }

    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<(), BackingError> {
        Ok(RaidArray::write_at(self, offset, buf)?)
    }

    fn flush(&self) -> Result<(), BackingError> {
        Ok(RaidArray::flush(self)?)
    }
}

impl Backing for File {
    fn size(&self) -> Result<u64, BackingError> {
        Ok(self.metadata()?.len())
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), BackingError> {
        Ok(self.read_exact_at(buf, offset)?)
    }

    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<(), BackingError> {
        Ok(self.write_all_at(buf, offset)?)
    }

    fn flush(&self) -> Result<(), BackingError> {
        Ok(self.sync_data()?)
    }
}
