//! One member device: a file or block device, opened with `O_DIRECT` where it is accepted.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::{RaidError, Result};
use crate::superblock::{DecodeError, Superblock, SUPERBLOCK_SIZE};

/// Alignment of every member I/O (offsets, lengths and buffers).
pub const IO_ALIGN: usize = 4096;

/// A heap buffer whose start is aligned to [`IO_ALIGN`], as `O_DIRECT` requires.
pub struct AlignedBuf {
    raw: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    /// A zeroed buffer of `len` bytes.
    pub fn new(len: usize) -> Self {
        let raw = vec![0u8; len + IO_ALIGN];
        let misalign = raw.as_ptr() as usize % IO_ALIGN;
        let start = if misalign == 0 {
            0
        } else {
            IO_ALIGN - misalign
        };
        AlignedBuf { raw, start, len }
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.raw[self.start..self.start + self.len]
    }

    /// The bytes, mutable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.raw[self.start..self.start + self.len]
    }
}

/// An open member.
#[derive(Debug)]
pub struct Member {
    path: PathBuf,
    file: File,
    direct: bool,
    size: u64,
}

impl Member {
    /// Opens a member read-write, with `O_DIRECT` if the file system accepts it and
    /// buffered I/O plus `fdatasync` otherwise.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_mode(path, true)
    }

    /// Opens a member; `try_direct` false goes straight to buffered I/O.
    fn open_mode(path: &Path, try_direct: bool) -> Result<Self> {
        let io_err = |op, source| RaidError::Io {
            path: path.to_path_buf(),
            op,
            source,
        };
        let direct = if try_direct {
            OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_DIRECT)
                .open(path)
        } else {
            Err(io::Error::from_raw_os_error(libc::EINVAL))
        };
        let (file, direct) = match direct {
            Ok(f) if probe_direct(&f) => (f, true),
            Ok(_) | Err(_) => {
                let f = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(path)
                    .map_err(|e| io_err("open", e))?;
                (f, false)
            }
        };
        let size = device_size(&file).map_err(|e| io_err("find the size", e))?;
        tracing::debug!(member = %path.display(), direct, size, "member opened");
        Ok(Member {
            path: path.to_path_buf(),
            file,
            direct,
            size,
        })
    }

    /// The path it was opened by.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Whether I/O bypasses the page cache.
    pub fn is_direct(&self) -> bool {
        self.direct
    }

    fn err(&self, op: &'static str, source: io::Error) -> RaidError {
        RaidError::Io {
            path: self.path.clone(),
            op,
            source,
        }
    }

    /// Reads exactly `buf.len()` bytes at `offset`; both must be multiples of [`IO_ALIGN`].
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        if self.direct && !(buf.as_ptr() as usize).is_multiple_of(IO_ALIGN) {
            let mut b = AlignedBuf::new(buf.len());
            self.file
                .read_exact_at(b.as_mut_slice(), offset)
                .map_err(|e| self.err("read", e))?;
            buf.copy_from_slice(b.as_slice());
            return Ok(());
        }
        self.file
            .read_exact_at(buf, offset)
            .map_err(|e| self.err("read", e))
    }

    /// Writes all of `buf` at `offset`; both must be multiples of [`IO_ALIGN`].
    pub fn write_at(&self, offset: u64, buf: &[u8]) -> Result<()> {
        if self.direct && !(buf.as_ptr() as usize).is_multiple_of(IO_ALIGN) {
            let mut b = AlignedBuf::new(buf.len());
            b.as_mut_slice().copy_from_slice(buf);
            return self
                .file
                .write_all_at(b.as_slice(), offset)
                .map_err(|e| self.err("write", e));
        }
        self.file
            .write_all_at(buf, offset)
            .map_err(|e| self.err("write", e))
    }

    /// Makes written data durable (also needed with `O_DIRECT`, for the device cache).
    pub fn sync(&self) -> Result<()> {
        self.file.sync_data().map_err(|e| self.err("flush", e))
    }

    /// Reads the superblock block: `Ok(Err(_))` when it is missing or unusable.
    pub fn read_superblock(&self) -> Result<Result<Superblock, DecodeError>> {
        if self.size < SUPERBLOCK_SIZE as u64 {
            return Ok(Err(DecodeError::Magic));
        }
        let mut b = AlignedBuf::new(SUPERBLOCK_SIZE);
        self.read_at(0, b.as_mut_slice())?;
        Ok(Superblock::decode(b.as_slice()))
    }

    /// Writes the superblock and makes it durable.
    pub fn write_superblock(&self, sb: &Superblock) -> Result<()> {
        self.write_at(0, &sb.encode())?;
        self.sync()
    }
}

/// Whether `O_DIRECT` reads work on this file (some file systems accept the flag at open
/// and refuse the I/O).
fn probe_direct(file: &File) -> bool {
    let mut b = AlignedBuf::new(IO_ALIGN);
    match file.read_at(b.as_mut_slice(), 0) {
        Ok(_) => true,
        Err(e) => e.raw_os_error() != Some(libc::EINVAL),
    }
}

/// Size of a regular file or a block device.
fn device_size(file: &File) -> io::Result<u64> {
    use std::io::{Seek, SeekFrom};
    let meta = file.metadata()?;
    if meta.is_file() {
        return Ok(meta.len());
    }
    // Block devices report length 0 in metadata; seeking to the end gives their size.
    let mut f = file;
    let end = f.seek(SeekFrom::End(0))?;
    f.seek(SeekFrom::Start(0))?;
    Ok(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sparse file removed on drop.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(tag: &str, len: u64) -> Self {
            let p = std::env::temp_dir()
                .join(format!("vessel-raid-member-{tag}-{}", std::process::id()));
            let f = File::create(&p).expect("create");
            f.set_len(len).expect("size");
            TempFile(p)
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    /// Both I/O modes read and write the same bytes, from aligned and unaligned buffers.
    #[test]
    fn direct_and_buffered_modes_agree() {
        for direct in [true, false] {
            let file = TempFile::new(if direct { "direct" } else { "buffered" }, 64 << 10);
            let m = Member::open_mode(&file.0, direct).expect("open");
            assert_eq!(m.is_direct(), direct);
            assert_eq!(m.size(), 64 << 10);
            let mut aligned = AlignedBuf::new(8192);
            aligned.as_mut_slice().fill(0xa5);
            m.write_at(4096, aligned.as_slice()).expect("aligned write");
            // An unaligned buffer goes through a bounce buffer under O_DIRECT.
            let raw = vec![0x3cu8; 4097];
            m.write_at(16384, &raw[1..]).expect("unaligned write");
            m.sync().expect("sync");
            let mut back = vec![0u8; 4097];
            m.read_at(16384, &mut back[1..]).expect("unaligned read");
            assert!(back[1..].iter().all(|b| *b == 0x3c));
            m.read_at(4096, aligned.as_mut_slice())
                .expect("aligned read");
            assert!(aligned.as_slice().iter().all(|b| *b == 0xa5));
        }
    }
}
