//! Disks and other large files: cut into fixed chunks of [`BLOCK_CHUNK`] bytes (so that an
//! unchanged region is the same chunk in every backup), restored to a new file with holes
//! where the disk was zeros.
//!
//! Three ways to back a disk up, from the most work to the least:
//! - [`backup`] / [`backup_from`] read it all (a file's holes are not read: a chunk that
//!   lies in a hole is the zero chunk);
//! - [`backup_changed`] reads only the ranges that changed since an earlier backup of the
//!   same disk (a dirty bitmap kept by QEMU says which): an unchanged chunk is the earlier
//!   backup's, a changed one is the earlier chunk with the changes written over it;
//! - a file whose [`stamp`] is the one recorded with the earlier backup is not read at all
//!   (see `Writer::block`).

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;

use crate::chunk::{Chunks, Digest};
use crate::error::{io, BackupError, Result};
use crate::index::ChunkRef;
use crate::pipeline::{Reader, Stats, Storer};

/// The size of a disk's chunks.
pub const BLOCK_CHUNK: usize = 4 << 20;

/// What identifies a regular file's content without reading it: its device, inode, size and
/// modification and change times (the change time moves on every write, and cannot be set
/// back). Two equal stamps, the same content, as far as anyone but the kernel can tell.
pub fn stamp(path: &Path) -> Result<String> {
    let m = std::fs::metadata(path).map_err(io("reading", path))?;
    Ok(format!(
        "{}:{}:{}:{}.{:09}:{}.{:09}",
        m.dev(),
        m.ino(),
        m.len(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec()
    ))
}

/// Zero chunks of each length met, hashed once.
#[derive(Default)]
struct Zeros(HashMap<u64, Digest>);

impl Zeros {
    /// Pushes a chunk of `len` zeros: the first of a length is stored (it may not be yet),
    /// the others are that one's reference.
    fn push(&mut self, storer: &mut Storer, len: u64) -> Result<()> {
        match self.0.get(&len) {
            Some(d) => storer.push_ref(ChunkRef(*d, len)),
            None => {
                let data = vec![0u8; len as usize];
                self.0.insert(len, Digest::of(&data));
                storer.push(data)?;
            }
        }
        Ok(())
    }
}

/// Whether the file range `from..to` of `f` is all hole (`SEEK_DATA` finds no data in it).
fn is_hole(f: &File, from: u64, to: u64) -> bool {
    // SAFETY: lseek on a file descriptor we own; it moves only that descriptor's offset,
    // which positional reads do not use.
    let r = unsafe { libc::lseek(f.as_raw_fd(), from as libc::off_t, libc::SEEK_DATA) };
    if r < 0 {
        // ENXIO: no data after `from`; anything else (no SEEK_DATA here): read it.
        return std::io::Error::last_os_error().raw_os_error() == Some(libc::ENXIO);
    }
    r as u64 >= to
}

/// Backs up the file or block device at `path`. A regular file's holes are not read.
pub fn backup(
    chunks: &Chunks,
    path: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<(Vec<ChunkRef>, Stats)> {
    let f = File::open(path).map_err(io("opening", path))?;
    let m = f.metadata().map_err(io("reading", path))?;
    if !m.is_file() {
        return backup_from(chunks, f, path, progress);
    }
    let size = m.len();
    let mut storer = Storer::new(chunks)?;
    let mut stats = Stats::default();
    let mut zeros = Zeros::default();
    let mut at = 0u64;
    while at < size {
        let len = (size - at).min(BLOCK_CHUNK as u64);
        if is_hole(&f, at, at + len) {
            zeros.push(&mut storer, len)?;
        } else {
            let mut buf = vec![0u8; len as usize];
            f.read_exact_at(&mut buf, at).map_err(io("reading", path))?;
            storer.push(buf)?;
            stats.read += len;
        }
        at += len;
        progress(at);
    }
    let (refs, s) = storer.finish()?;
    stats.add(&s);
    stats.bytes = size;
    Ok((refs, stats))
}

/// Backs up a disk read from `input` (a file, or a stream such as `qemu-img convert`'s);
/// `what` names it in errors.
pub fn backup_from(
    chunks: &Chunks,
    mut input: impl Read,
    what: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<(Vec<ChunkRef>, Stats)> {
    let mut storer = Storer::new(chunks)?;
    let mut stats = Stats::default();
    loop {
        let mut buf = vec![0u8; BLOCK_CHUNK];
        let mut n = 0;
        while n < BLOCK_CHUNK {
            let r = input.read(&mut buf[n..]).map_err(io("reading", what))?;
            if r == 0 {
                break;
            }
            n += r;
        }
        if n == 0 {
            break;
        }
        buf.truncate(n);
        storer.push(buf)?;
        stats.read += n as u64;
        progress(stats.read);
        if n < BLOCK_CHUNK {
            break;
        }
    }
    let (refs, s) = storer.finish()?;
    stats.add(&s);
    stats.bytes = stats.read;
    Ok((refs, stats))
}

/// Backs up a disk of `size` bytes of which only the byte ranges `dirty` (sorted, not
/// overlapping) changed since the backup whose chunks are `base`: a chunk no range touches
/// is taken from it unread; one that a range touches is read from the store (checked) and
/// `read(offset, buf)` fills in the changed bytes (from `what`, named in errors). `base`
/// must be a disk of the same size.
pub fn backup_changed(
    chunks: &Chunks,
    what: &Path,
    base: &[ChunkRef],
    size: u64,
    dirty: &[(u64, u64)],
    read: &mut dyn FnMut(u64, &mut [u8]) -> std::io::Result<()>,
    progress: &mut dyn FnMut(u64),
) -> Result<(Vec<ChunkRef>, Stats)> {
    let bc = BLOCK_CHUNK as u64;
    let count = size.div_ceil(bc);
    let fits = base.len() as u64 == count
        && base
            .iter()
            .enumerate()
            .all(|(i, c)| c.1 == (size - i as u64 * bc).min(bc));
    if !fits {
        return Err(BackupError::Invalid(format!(
            "the earlier backup is not of a disk of {size} bytes: it cannot be built on"
        )));
    }
    let mut storer = Storer::new(chunks)?;
    let mut stats = Stats::default();
    let mut ranges = dirty.iter().peekable();
    for (i, c) in base.iter().enumerate() {
        let (from, to) = (i as u64 * bc, i as u64 * bc + c.1);
        // Ranges that end before this chunk are done with.
        while ranges.next_if(|r| r.0 + r.1 <= from).is_some() {}
        let touching: Vec<(u64, u64)> = ranges
            .clone()
            .take_while(|r| r.0 < to)
            .map(|&(s, l)| (s.max(from), (s + l).min(to)))
            .filter(|(s, e)| s < e)
            .collect();
        if touching.is_empty() {
            storer.push_ref(*c);
        } else {
            let mut buf = chunks.read(&c.0)?;
            if buf.len() as u64 != c.1 {
                return Err(BackupError::Corrupt(format!(
                    "chunk {} holds {} bytes, its reference says {}",
                    c.0,
                    buf.len(),
                    c.1
                )));
            }
            for (s, e) in touching {
                read(s, &mut buf[(s - from) as usize..(e - from) as usize])
                    .map_err(io("reading changes from", what))?;
                stats.read += e - s;
            }
            storer.push(buf)?;
        }
        progress(to);
    }
    let (refs, s) = storer.finish()?;
    stats.add(&s);
    stats.bytes = size;
    Ok((refs, stats))
}

/// Restores a disk into new file `target` (made beside it first and renamed into place,
/// so a failure leaves nothing): zeros are left as holes.
pub fn restore(
    chunks: &Chunks,
    refs: &[ChunkRef],
    target: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<()> {
    crate::tree::into_place(target, |stage| {
        write_to(chunks, refs, stage, Target::New, progress)
    })
}

/// What a disk archive is written into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A new file, made of the archive's size: its zero chunks stay holes.
    New,
    /// An existing file or device that reads as zeros (just made): its zero chunks are
    /// left unwritten (holes stay holes).
    Zeroed,
    /// An existing file or device with other data: every chunk written.
    Existing,
}

/// Writes a disk's chunks over `path` (see [`Target`]: a new file, else an existing file
/// or device of the disk's size or more), leaving zeros as holes where it can.
pub fn write_to(
    chunks: &Chunks,
    refs: &[ChunkRef],
    path: &Path,
    target: Target,
    progress: &mut dyn FnMut(u64),
) -> Result<()> {
    let size: u64 = refs.iter().map(|c| c.1).sum();
    let create = target == Target::New;
    let f = if create {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(io("making", path))?;
        f.set_len(size).map_err(io("sizing", path))?;
        f
    } else {
        std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io("opening", path))?
    };
    let mut write = |at: u64, data: &[u8]| f.write_all_at(data, at);
    let zeroed = target != Target::Existing;
    write_with(chunks, refs, zeroed, &mut write, path, progress)?;
    f.sync_all().map_err(io("syncing", path))?;
    Ok(())
}

/// Writes a disk's chunks through `write` (offset, bytes): a device this crate does not
/// open itself. Zero chunks are left out when the target reads as zeros (`zeroed`); `what`
/// names it in errors. The caller makes it durable.
pub fn write_with(
    chunks: &Chunks,
    refs: &[ChunkRef],
    zeroed: bool,
    write: &mut dyn FnMut(u64, &[u8]) -> std::io::Result<()>,
    what: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<()> {
    let zero = Digest::of(&vec![0u8; BLOCK_CHUNK]);
    let mut at = 0u64;
    let reads = Reader::new(chunks, refs.to_vec());
    for (c, data) in refs.iter().zip(reads) {
        let data = data?;
        if !zeroed || c.0 != zero {
            write(at, &data).map_err(io("writing", what))?;
        }
        at += c.1;
        progress(at);
    }
    Ok(())
}
