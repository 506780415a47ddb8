//! The block device trait the server exports, and its implementation over a sparse file.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{fallocate, FallocateFlags};
use nix::unistd::{lseek, Whence};

use crate::proto;

/// Why a block device operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The range does not lie inside the device.
    #[error("range {offset}+{len} lies beyond the device end {size}")]
    OutOfRange {
        /// First byte of the range.
        offset: u64,
        /// Length of the range.
        len: u64,
        /// Size of the device.
        size: u64,
    },
    /// The device cannot be written.
    #[error("the device is read-only")]
    ReadOnly,
    /// The device does not implement this operation.
    #[error("operation not supported by this device")]
    Unsupported,
    /// The backing store failed.
    #[error("backing store I/O failed")]
    Io(#[from] io::Error),
}

impl DeviceError {
    /// The NBD error code a client receives for this error.
    pub fn nbd_errno(&self) -> u32 {
        match self {
            DeviceError::OutOfRange { .. } => proto::EINVAL,
            DeviceError::ReadOnly => proto::EPERM,
            DeviceError::Unsupported => proto::ENOTSUP,
            DeviceError::Io(e) => match e.raw_os_error().map(Errno::from_raw) {
                Some(Errno::EPERM | Errno::EROFS | Errno::EACCES) => proto::EPERM,
                Some(Errno::ENOSPC | Errno::EDQUOT) => proto::ENOSPC,
                Some(Errno::ENOMEM) => proto::ENOMEM,
                Some(Errno::EINVAL) => proto::EINVAL,
                Some(Errno::EOPNOTSUPP) => proto::ENOTSUP,
                _ => proto::EIO,
            },
        }
    }
}

/// One run of bytes with the same allocation state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// Length of the run in bytes.
    pub len: u64,
    /// True if the run is not allocated (and therefore reads as zeroes).
    pub hole: bool,
    /// True if the run is known to read as zeroes.
    pub zero: bool,
}

impl Extent {
    /// An allocated run with data.
    pub fn data(len: u64) -> Self {
        Extent {
            len,
            hole: false,
            zero: false,
        }
    }

    /// An unallocated run that reads as zeroes.
    pub fn hole(len: u64) -> Self {
        Extent {
            len,
            hole: true,
            zero: true,
        }
    }
}

/// Anything the NBD server can export: a file, a volume, a RAID array.
///
/// Implementations are shared by every connection to the export, so they take `&self` and
/// must make a `flush` on one connection cover writes completed on any other.
pub trait BlockDevice: Send + Sync {
    /// Size of the device in bytes.
    fn size(&self) -> u64;

    /// Fill `buf` from `offset`; the range is inside the device. Every byte of `buf` must
    /// be written (or an error returned): the buffer may hold an earlier request's bytes.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), DeviceError>;

    /// Write `buf` at `offset`; the range is inside the device.
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), DeviceError>;

    /// Make every completed write durable.
    fn flush(&self) -> Result<(), DeviceError>;

    /// Tell the device the range is no longer needed; its contents become unspecified.
    fn trim(&self, _offset: u64, _len: u64) -> Result<(), DeviceError> {
        Ok(())
    }

    /// Make the range read as zeroes; `may_trim` allows deallocating it.
    fn write_zeroes(&self, offset: u64, len: u64, _may_trim: bool) -> Result<(), DeviceError> {
        const CHUNK: u64 = 1 << 20;
        let zeroes = vec![0u8; CHUNK.min(len) as usize];
        let mut done = 0;
        while done < len {
            let n = CHUNK.min(len - done) as usize;
            self.write_at(&zeroes[..n], offset + done)?;
            done += n as u64;
        }
        Ok(())
    }

    /// Allocation map of the range, in order from `offset`; it may stop short of `len`.
    ///
    /// The default reports everything as allocated data.
    fn block_status(&self, _offset: u64, len: u64) -> Result<Vec<Extent>, DeviceError> {
        Ok(vec![Extent::data(len)])
    }
}

/// A block device backed by a regular (sparse) file.
///
/// Trim and write-zeroes punch holes; block status reports holes found with
/// `SEEK_DATA`/`SEEK_HOLE`. A file without holes when it is opened, and none punched since,
/// is reported all data without asking (a read's structured reply then costs no `lseek`);
/// a hole made behind the device's back is then reported as data, which the protocol
/// allows (it reads as zeroes either way).
#[derive(Debug)]
pub struct FileDevice {
    file: File,
    path: PathBuf,
    size: u64,
    read_only: bool,
    /// No hole in the file as far as this device knows.
    whole: std::sync::atomic::AtomicBool,
    /// Where large writes are streaming, for their writeback.
    streams: Streams,
}

/// A write at least this large (a copy streaming an image in) counts towards its stream's
/// next writeback; small writes (random I/O) are left to the page cache.
const WRITEBACK_FROM: usize = 64 << 10;
/// Once a stream of large writes spans this many bytes since its last writeback, the kernel
/// is told to start writing them back, without waiting: a flush, or the one a disconnect
/// makes, then finds little left to do, and the transfer and the disk work overlap. One call
/// per 4 MiB rather than one per request: a 256 MiB `nbdcopy` write of 256 KiB requests took
/// 204 ms against 233, its flushed copy 209 against 218 (medians of 12 alternating rounds;
/// without any early writeback 186 and 274, nbdkit's 188 and 264).
const WRITEBACK_BATCH: u64 = 4 << 20;
/// Streams followed at once (a copy's threads each write a region of their own); a new
/// stream beyond them replaces the one written least recently, whose span goes to writeback.
const STREAMS: usize = 4;
/// A write this close to a stream's span (before or after it) continues the stream, or
/// twice its own length if that is more: a copy's concurrent requests arrive a little out
/// of order.
const STREAM_GAP: u64 = 1 << 20;

/// The streams of large writes into a device: for each, the span written since its last
/// writeback (from its lowest to its highest byte).
#[derive(Debug, Default)]
struct Streams(std::sync::Mutex<StreamSet>);

#[derive(Debug, Default)]
struct StreamSet {
    /// `(start, end, last write)`, the last write counted by `writes`.
    spans: Vec<(u64, u64, u64)>,
    writes: u64,
}

impl Streams {
    /// Counts a large write of `start..end`; the spans for the kernel to write back: a
    /// stream's once it reaches [`WRITEBACK_BATCH`] bytes, and one that made way for a new
    /// stream. None is empty.
    fn add(&self, start: u64, end: u64) -> Vec<std::ops::Range<u64>> {
        let mut set = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        set.writes += 1;
        let now = set.writes;
        let gap = STREAM_GAP.max((end - start).saturating_mul(2));
        let near = |&(s, e, _): &(u64, u64, u64)| {
            end.saturating_add(gap) >= s && start <= e.saturating_add(gap)
        };
        let mut back = Vec::new();
        let i = match set.spans.iter().position(near) {
            Some(i) => {
                let r = &mut set.spans[i];
                *r = (r.0.min(start), r.1.max(end), now);
                i
            }
            None if set.spans.len() < STREAMS => {
                set.spans.push((start, end, now));
                set.spans.len() - 1
            }
            None => {
                let oldest = (0..set.spans.len())
                    .min_by_key(|&i| set.spans[i].2)
                    .unwrap_or(0);
                let (s, e, _) = std::mem::replace(&mut set.spans[oldest], (start, end, now));
                back.extend((e > s).then_some(s..e));
                oldest
            }
        };
        let (s, e, _) = set.spans[i];
        if e - s >= WRITEBACK_BATCH {
            set.spans[i].0 = e;
            back.push(s..e);
        }
        back
    }
}

/// A write goes to the page cache in pieces of at most this many bytes. The page cache keeps
/// a write's pages in folios as large as the write, and ext4 walks every block of a folio on
/// each later write into it: a 4 KiB write into a file written in 256 KiB pieces cost the
/// server 15–18 µs of CPU, in 64 KiB pieces 11–12.6 (measured, alternating rounds).
const WRITE_PIECE: usize = 64 << 10;

impl FileDevice {
    /// Open an existing file; its current length is the device size.
    pub fn open(path: impl AsRef<Path>, read_only: bool) -> Result<Self, DeviceError> {
        let path = path.as_ref().to_path_buf();
        let file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(&path)?;
        let size = file.metadata()?.len();
        let dev = FileDevice {
            file,
            path,
            size,
            read_only,
            whole: std::sync::atomic::AtomicBool::new(false),
            streams: Streams::default(),
        };
        let whole = dev
            .seek(0, Whence::SeekHole)?
            .is_none_or(|hole| hole >= size);
        dev.whole.store(whole, std::sync::atomic::Ordering::Relaxed);
        Ok(dev)
    }

    /// Create (or truncate) a sparse file of `size` bytes.
    pub fn create(path: impl AsRef<Path>, size: u64) -> Result<Self, DeviceError> {
        let path = path.as_ref().to_path_buf();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        file.set_len(size)?;
        Ok(FileDevice {
            file,
            path,
            size,
            read_only: false,
            whole: std::sync::atomic::AtomicBool::new(size == 0),
            streams: Streams::default(),
        })
    }

    /// Path of the backing file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn writable(&self) -> Result<(), DeviceError> {
        if self.read_only {
            Err(DeviceError::ReadOnly)
        } else {
            Ok(())
        }
    }

    fn fallocate(&self, mode: FallocateFlags, offset: u64, len: u64) -> Result<(), DeviceError> {
        if mode.contains(FallocateFlags::FALLOC_FL_PUNCH_HOLE) {
            self.whole
                .store(false, std::sync::atomic::Ordering::Relaxed);
        }
        let off = i64::try_from(offset).map_err(|_| self.out_of_range(offset, len))?;
        let l = i64::try_from(len).map_err(|_| self.out_of_range(offset, len))?;
        fallocate(self.file.as_raw_fd(), mode, off, l).map_err(|e| io::Error::from(e).into())
    }

    fn out_of_range(&self, offset: u64, len: u64) -> DeviceError {
        DeviceError::OutOfRange {
            offset,
            len,
            size: self.size,
        }
    }

    fn seek(&self, pos: u64, whence: Whence) -> Result<Option<u64>, DeviceError> {
        let off = i64::try_from(pos).map_err(|_| self.out_of_range(pos, 0))?;
        match lseek(self.file.as_raw_fd(), off, whence) {
            Ok(p) => Ok(Some(p as u64)),
            Err(Errno::ENXIO) => Ok(None),
            Err(e) => Err(io::Error::from(e).into()),
        }
    }
}

impl BlockDevice for FileDevice {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), DeviceError> {
        Ok(self.file.read_exact_at(buf, offset)?)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), DeviceError> {
        self.writable()?;
        let mut at = offset;
        for piece in buf.chunks(WRITE_PIECE) {
            self.file.write_all_at(piece, at)?;
            at += piece.len() as u64;
        }
        if buf.len() < WRITEBACK_FROM {
            return Ok(());
        }
        for range in self.streams.add(offset, at) {
            // A length of 0 would mean "to the end of the file": never asked for.
            let (Ok(off), Ok(len @ 1..)) = (
                i64::try_from(range.start),
                i64::try_from(range.end - range.start),
            ) else {
                continue;
            };
            // SAFETY: a plain system call on a descriptor this device owns; it only starts
            // writeback of a range written before. Advice: its failure changes nothing a
            // flush does not do again.
            unsafe {
                libc::sync_file_range(self.file.as_raw_fd(), off, len, libc::SYNC_FILE_RANGE_WRITE);
            }
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), DeviceError> {
        if self.read_only {
            return Ok(());
        }
        Ok(self.file.sync_data()?)
    }

    fn trim(&self, offset: u64, len: u64) -> Result<(), DeviceError> {
        self.writable()?;
        let mode = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
        match self.fallocate(mode, offset, len) {
            // Trim is advisory: a file system without hole punching just keeps the data.
            Err(DeviceError::Io(e)) if e.raw_os_error() == Some(libc_eopnotsupp()) => Ok(()),
            r => r,
        }
    }

    fn write_zeroes(&self, offset: u64, len: u64, may_trim: bool) -> Result<(), DeviceError> {
        self.writable()?;
        let mode = if may_trim {
            FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE
        } else {
            FallocateFlags::FALLOC_FL_ZERO_RANGE | FallocateFlags::FALLOC_FL_KEEP_SIZE
        };
        match self.fallocate(mode, offset, len) {
            Err(DeviceError::Io(e)) if e.raw_os_error() == Some(libc_eopnotsupp()) => {
                // Fall back to writing zero bytes.
                const CHUNK: u64 = 1 << 20;
                let zeroes = vec![0u8; CHUNK.min(len) as usize];
                let mut done = 0;
                while done < len {
                    let n = CHUNK.min(len - done) as usize;
                    self.file.write_all_at(&zeroes[..n], offset + done)?;
                    done += n as u64;
                }
                Ok(())
            }
            r => r,
        }
    }

    fn block_status(&self, offset: u64, len: u64) -> Result<Vec<Extent>, DeviceError> {
        let end = offset.saturating_add(len).min(self.size);
        if self.whole.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(vec![Extent::data(end.saturating_sub(offset))]);
        }
        let mut extents = Vec::new();
        let mut pos = offset;
        while pos < end {
            // SEEK_HOLE first: a range with no hole (the common case for a read of a
            // written image) costs one call.
            let hole = self.seek(pos, Whence::SeekHole)?.unwrap_or(end).min(end);
            if hole > pos {
                extents.push(Extent::data(hole - pos));
                pos = hole;
                continue;
            }
            let data = self.seek(pos, Whence::SeekData)?.unwrap_or(end).min(end);
            // At a hole, the next data (or the end) lies beyond `pos`.
            let data = data.max(pos + 1);
            extents.push(Extent::hole(data - pos));
            pos = data;
        }
        Ok(extents)
    }
}

fn libc_eopnotsupp() -> i32 {
    Errno::EOPNOTSUPP as i32
}

/// A block device read from its start to its end as a stream (1 MiB at most per read).
pub struct DeviceReader<'a> {
    dev: &'a dyn BlockDevice,
    at: u64,
}

impl<'a> DeviceReader<'a> {
    /// `dev` from its first byte.
    pub fn new(dev: &'a dyn BlockDevice) -> Self {
        DeviceReader { dev, at: 0 }
    }
}

impl std::io::Read for DeviceReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.dev.size().saturating_sub(self.at);
        let n = (buf.len() as u64).min(left).min(1 << 20) as usize;
        if n == 0 {
            return Ok(0);
        }
        self.dev
            .read_at(&mut buf[..n], self.at)
            .map_err(std::io::Error::other)?;
        self.at += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A temp file path removed on drop, also when the test fails.
    struct TempPath(PathBuf);

    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn temp_path(name: &str) -> TempPath {
        TempPath(std::env::temp_dir().join(format!("vessel-nbd-dev-{}-{name}", std::process::id())))
    }

    #[test]
    fn sparse_file_reports_holes_after_trim_and_zeroes() {
        let path = temp_path("sparse");
        let dev = FileDevice::create(&path.0, 4 << 20).expect("create");
        assert_eq!(
            dev.block_status(0, 4 << 20).expect("status"),
            vec![Extent::hole(4 << 20)]
        );
        dev.write_at(&vec![0xab; 2 << 20], 0).expect("write");
        let map = dev.block_status(0, 4 << 20).expect("status");
        assert_eq!(map, vec![Extent::data(2 << 20), Extent::hole(2 << 20)]);
        dev.trim(0, 1 << 20).expect("trim");
        dev.write_zeroes(1 << 20, 1 << 20, true).expect("zero");
        assert_eq!(
            dev.block_status(0, 4 << 20).expect("status"),
            vec![Extent::hole(4 << 20)]
        );
        let mut buf = vec![1u8; 4096];
        dev.read_at(&mut buf, 1 << 20).expect("read");
        assert!(buf.iter().all(|&b| b == 0));
    }

    #[test]
    fn a_file_without_holes_is_all_data_until_one_is_punched() {
        let path = temp_path("whole");
        std::fs::write(&path.0, vec![7u8; 2 << 20]).expect("write");
        let dev = FileDevice::open(&path.0, false).expect("open");
        assert_eq!(
            dev.block_status(4096, 8192).expect("status"),
            vec![Extent::data(8192)]
        );
        assert_eq!(
            dev.block_status(0, 4 << 20).expect("status"),
            vec![Extent::data(2 << 20)]
        );
        dev.trim(1 << 20, 1 << 20).expect("trim");
        assert_eq!(
            dev.block_status(0, 2 << 20).expect("status"),
            vec![Extent::data(1 << 20), Extent::hole(1 << 20)]
        );
        // Opened again with the hole: asked from the start.
        let dev = FileDevice::open(&path.0, false).expect("open");
        assert_eq!(
            dev.block_status(0, 2 << 20).expect("status"),
            vec![Extent::data(1 << 20), Extent::hole(1 << 20)]
        );
    }

    #[test]
    fn a_stream_of_large_writes_is_written_back_every_batch() {
        let streams = Streams::default();
        let w = 256 << 10;
        let mut back = Vec::new();
        for i in 0..40 {
            back.extend(streams.add(i * w, (i + 1) * w));
        }
        assert_eq!(back, vec![0..4 << 20, 4 << 20..8 << 20]);
        // Two copies' regions interleaved: each stream has its own batches.
        let streams = Streams::default();
        let far = 1 << 30;
        let mut back = Vec::new();
        for i in 0..16 {
            back.extend(streams.add(i * w, (i + 1) * w));
            back.extend(streams.add(far + i * w, far + (i + 1) * w));
        }
        assert_eq!(back, vec![0..4 << 20, far..far + (4 << 20)]);
    }

    #[test]
    fn a_stream_takes_writes_a_little_out_of_order() {
        let streams = Streams::default();
        let w = 256 << 10;
        assert_eq!(streams.add(w, 2 * w), vec![]);
        assert_eq!(
            streams.add(0, w),
            vec![],
            "just before the stream: the same stream"
        );
        let mut back = Vec::new();
        for i in 2..16 {
            back.extend(streams.add(i * w, (i + 1) * w));
        }
        assert_eq!(back, vec![0..4 << 20]);
        // A request that arrives after its stream's batch went to writeback is counted in
        // the next one.
        assert_eq!(streams.add(3 << 20, (3 << 20) + w), vec![]);
        let mut back = Vec::new();
        for i in 16..32 {
            back.extend(streams.add(i * w, (i + 1) * w));
        }
        assert_eq!(back, vec![3 << 20..7 << 20]);
    }

    #[test]
    fn a_new_stream_beyond_the_limit_sends_the_stalest_to_writeback() {
        let streams = Streams::default();
        let gb = 1u64 << 30;
        for k in 0..STREAMS as u64 {
            assert_eq!(streams.add(k * gb, k * gb + (1 << 20)), vec![]);
        }
        // Stream 0 written again: stream 1 is now the stalest.
        assert_eq!(streams.add(1 << 20, 2 << 20), vec![]);
        let fifth = STREAMS as u64 * gb;
        assert_eq!(
            streams.add(fifth, fifth + (1 << 20)),
            vec![gb..gb + (1 << 20)]
        );
        // A single write of a whole batch as a new stream: its own span too.
        let sixth = fifth + gb;
        assert_eq!(
            streams.add(sixth, sixth + (4 << 20)),
            vec![2 * gb..2 * gb + (1 << 20), sixth..sixth + (4 << 20)]
        );
    }

    #[test]
    fn a_stream_just_written_back_makes_way_without_an_empty_span() {
        // An empty span would reach sync_file_range as length 0: the whole rest of the file.
        let streams = Streams::default();
        let gb = 1u64 << 30;
        assert_eq!(streams.add(0, 4 << 20), vec![0..4 << 20]);
        let mut back = Vec::new();
        for k in 1..=STREAMS as u64 {
            back.extend(streams.add(k * gb, k * gb + (1 << 20)));
        }
        assert_eq!(
            back,
            vec![],
            "the emptied stream made way with nothing to write back"
        );
    }

    #[test]
    fn large_requests_out_of_order_stay_one_stream() {
        // 2 MiB requests (qemu-img's) arriving one behind another: farther apart than 1 MiB.
        let streams = Streams::default();
        let m = 2u64 << 20;
        let mut back = Vec::new();
        for i in [1u64, 0, 3, 2, 5, 4, 7, 6] {
            back.extend(streams.add(i * m, (i + 1) * m));
        }
        assert_eq!(streams.0.lock().unwrap().spans.len(), 1, "one stream");
        // A request that comes after its neighbours' batch went out is in a later one: the
        // spans, in order, cover every byte.
        back.sort_by_key(|r| r.start);
        let mut covered = 0;
        for r in &back {
            assert!(r.start <= covered, "a gap before {r:?} in {back:?}");
            covered = covered.max(r.end);
        }
        assert_eq!(covered, 16 << 20, "{back:?}");
    }

    #[test]
    fn read_only_file_refuses_writes() {
        let path = temp_path("ro");
        drop(FileDevice::create(&path.0, 4096).expect("create"));
        let dev = FileDevice::open(&path.0, true).expect("open");
        let err = dev.write_at(&[1, 2, 3], 0).expect_err("must refuse");
        assert_eq!(err.nbd_errno(), proto::EPERM);
    }
}
