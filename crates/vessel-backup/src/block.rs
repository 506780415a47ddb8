//! Disks and other large files: cut into fixed chunks of [`BLOCK_CHUNK`] bytes (so that an
//! unchanged region is the same chunk in every backup), restored to a new file with holes
//! where the disk was zeros.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::chunk::{Chunks, Digest};
use crate::error::{io, Result};
use crate::index::ChunkRef;
use crate::pipeline::{Reader, Stats, Storer};

/// The size of a disk's chunks.
pub const BLOCK_CHUNK: usize = 4 << 20;

/// Backs up the file or block device at `path`.
pub fn backup(
    chunks: &Chunks,
    path: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<(Vec<ChunkRef>, Stats)> {
    let f = File::open(path).map_err(io("opening", path))?;
    backup_from(chunks, f, path, progress)
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

/// Restores a disk into new file `target` (made beside it first and renamed into place,
/// so a failure leaves nothing): zeros are left as holes.
pub fn restore(
    chunks: &Chunks,
    refs: &[ChunkRef],
    target: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<()> {
    crate::tree::into_place(target, |stage| {
        write_to(chunks, refs, stage, true, progress)
    })
}

/// Writes a disk's chunks over `path` (a new file when `create`, else an existing file or
/// device of the disk's size or more), leaving zeros as holes in a new file.
pub fn write_to(
    chunks: &Chunks,
    refs: &[ChunkRef],
    path: &Path,
    create: bool,
    progress: &mut dyn FnMut(u64),
) -> Result<()> {
    let size: u64 = refs.iter().map(|c| c.1).sum();
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
    let zero = Digest::of(&vec![0u8; BLOCK_CHUNK]);
    let mut at = 0u64;
    let reads = Reader::new(chunks, refs.to_vec());
    for (c, data) in refs.iter().zip(reads) {
        let data = data?;
        if !(create && c.0 == zero) {
            f.write_all_at(&data, at).map_err(io("writing", path))?;
        }
        at += c.1;
        progress(at);
    }
    f.sync_all().map_err(io("syncing", path))?;
    Ok(())
}
