//! Resumable, verified, bounded blob downloads into the blob store.
//!
//! Each download writes its own file, `<store>/partial/<hex>.<pid>.<n>`, held with `flock`
//! only to say "alive": no pull ever waits for another one's lock, so a registry that trickles
//! one pull's blob cannot hold up other pulls of the same blob. A dropped connection is resumed
//! within the pull with `Range: bytes=<len>-` (a server that answers `200` instead of `206` is
//! read from the start); a partial file left by a crashed process (its lock is free) is adopted
//! and resumed by the next pull of that blob. On failure and on cancel the file is removed.
//!
//! A download is bounded: the descriptor's size (refused above `max_blob_bytes`, or when the
//! store's file system could not keep its free reserve), never more bytes than that size, at
//! least `min_window_bytes` every `stall_window`, and at most `blob_time_base` plus the size at
//! `min_average_rate` in all. Only a blob whose size and digest match its descriptor is renamed
//! into the store.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use tracing::{debug, info, warn};
use vessel_image::blobs::HashingWriter;
use vessel_image::{BlobStore, Digest};

use crate::client::{Client, Target};
use crate::error::{RegistryError, Result};
use crate::manifest::Descriptor;

/// Largest read from the network; cancel is checked between reads.
const CHUNK: usize = 64 << 10;
/// Bytes between two progress reports of one blob.
const REPORT_EVERY: u64 = 256 << 10;
/// Subdirectory of the store holding partial downloads.
pub const PARTIAL_DIR: &str = "partial";

/// Which blob of an image a [`Progress`] report is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobKind {
    /// The image config.
    Config,
    /// A layer.
    Layer,
}

/// What happened to a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressEvent {
    /// It was already in the store; nothing is downloaded.
    Skipped,
    /// A download started, continuing a partial one from `resumed_from` bytes.
    Started {
        /// Bytes already there (0 for a fresh download).
        resumed_from: u64,
    },
    /// More bytes arrived.
    Bytes,
    /// It was verified and stored.
    Finished,
}

/// A progress report for one blob, so a caller can draw a bar per blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// The blob.
    pub digest: Digest,
    /// Config or layer.
    pub kind: BlobKind,
    /// Position among the image's blobs (config first, then layers bottom first), from 0.
    pub index: usize,
    /// Number of blobs in the image (config and layers).
    pub count: usize,
    /// Bytes of this blob present so far.
    pub done: u64,
    /// Size of this blob.
    pub total: u64,
    /// What happened.
    pub event: ProgressEvent,
}

/// One blob to fetch.
pub(crate) struct BlobJob<'a> {
    pub desc: &'a Descriptor,
    pub kind: BlobKind,
    pub index: usize,
    pub count: usize,
}

/// How one download attempt ended when it did not store the blob.
enum Step {
    /// Try again (resuming): the network failed.
    Retry(RegistryError),
    /// Give up.
    Fatal(RegistryError),
}

/// Discards the first `skip` bytes written, then appends to the file: lets a
/// [`HashingWriter`] hash the bytes already on disk before the new ones.
struct AppendAfter<'a> {
    file: &'a mut File,
    skip: u64,
}

impl Write for AppendAfter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.skip > 0 {
            let n = buf
                .len()
                .min(usize::try_from(self.skip).unwrap_or(usize::MAX));
            self.skip -= n as u64;
            return Ok(n);
        }
        self.file.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Client {
    /// Makes sure the blob is in `store`: skipped when present, else downloaded (resuming a
    /// partial download a crashed process left) and verified.
    pub(crate) fn fetch_blob(
        &self,
        t: &Target<'_>,
        store: &BlobStore,
        job: &BlobJob<'_>,
        progress: &mut dyn FnMut(Progress),
        cancel: &AtomicBool,
    ) -> Result<()> {
        let digest = &job.desc.digest;
        let mut report = |done: u64, event: ProgressEvent| {
            progress(Progress {
                digest: digest.clone(),
                kind: job.kind,
                index: job.index,
                count: job.count,
                done,
                total: job.desc.size,
                event,
            })
        };
        if store.has(digest) && !self.opts.verify_stored {
            debug!(%digest, "blob already stored");
            report(job.desc.size, ProgressEvent::Skipped);
            return Ok(());
        }
        if job.desc.size > self.opts.max_blob_bytes {
            return Err(RegistryError::TooLarge {
                host: t.reference.registry().to_string(),
                what: format!("blob {digest} (the manifest says {} bytes)", job.desc.size),
                limit: self.opts.max_blob_bytes,
            });
        }
        let dir = store.dir().join(PARTIAL_DIR);
        fs::create_dir_all(&dir).map_err(|e| io_err(&dir, "create directory", e))?;
        let (file, path) = claim_partial(&dir, digest)?;
        let have = file.metadata().map_or(0, |m| m.len()).min(job.desc.size);
        self.check_room(store, digest, job.desc.size - have)?;
        let result = self.download(t, file, &path, job, &mut report, cancel);
        let stored = result.and_then(|()| {
            let dest = store.path(digest);
            fs::rename(&path, &dest)
                .map_err(|e| io_err(&dest, "move verified blob into the store", e))
        });
        if let Err(e) = &stored {
            // A failed or cancelled download leaves nothing behind.
            if let Err(rm) = fs::remove_file(&path) {
                if rm.kind() != io::ErrorKind::NotFound {
                    warn!(path = %path.display(), error = %rm, "cannot remove a partial download");
                }
            }
            info!(%digest, error = %e, "blob download failed; partial data removed");
            return stored;
        }
        info!(%digest, size = job.desc.size, "blob stored");
        report(job.desc.size, ProgressEvent::Finished);
        Ok(())
    }

    /// Refuses a download of `needed` more bytes the store's file system has no room for.
    fn check_room(&self, store: &BlobStore, digest: &Digest, needed: u64) -> Result<()> {
        let free = vessel_image::space::free_space(store.dir())
            .map_err(|e| io_err(store.dir(), "look at the free space of", e))?;
        let reserve = self.opts.space.min_free_bytes;
        if free.bytes < needed.saturating_add(reserve) {
            return Err(RegistryError::NoSpace {
                digest: digest.clone(),
                needed,
                free: free.bytes,
                reserve,
            });
        }
        Ok(())
    }

    /// Downloads into the claimed partial file, resuming after network failures.
    fn download(
        &self,
        t: &Target<'_>,
        file: Flock<File>,
        path: &Path,
        job: &BlobJob<'_>,
        report: &mut dyn FnMut(u64, ProgressEvent),
        cancel: &AtomicBool,
    ) -> Result<()> {
        let mut file = file;
        let file: &mut File = &mut file;
        let digest = &job.desc.digest;
        let deadline = Instant::now() + self.blob_time_limit(job.desc.size);
        let mut failures = 0;
        loop {
            match self.download_once(t, file, path, job, report, cancel, deadline) {
                Ok(()) => return Ok(()),
                Err(Step::Fatal(e)) => return Err(e),
                Err(Step::Retry(e)) if failures < self.opts.retries => {
                    failures += 1;
                    warn!(%digest, error = %e, failures, "blob download interrupted; resuming");
                    sleep_unless_cancelled(Duration::from_millis(250 << failures), cancel)?;
                }
                Err(Step::Retry(e)) => return Err(e),
            }
        }
    }

    /// The longest one blob of `size` bytes may take.
    fn blob_time_limit(&self, size: u64) -> Duration {
        let rate = self.opts.min_average_rate.max(1);
        self.opts.blob_time_base + Duration::from_secs(size / rate)
    }

    /// One request: continues the partial file, verifies it when complete.
    #[allow(clippy::too_many_arguments)]
    fn download_once(
        &self,
        t: &Target<'_>,
        file: &mut File,
        path: &Path,
        job: &BlobJob<'_>,
        report: &mut dyn FnMut(u64, ProgressEvent),
        cancel: &AtomicBool,
        deadline: Instant,
    ) -> std::result::Result<(), Step> {
        let digest = &job.desc.digest;
        let size = job.desc.size;
        let fatal_io = |op, e| Step::Fatal(io_err(path, op, e));
        let mut have = file
            .metadata()
            .map_err(|e| fatal_io("read size of", e))?
            .len();
        if have > size {
            file.set_len(0).map_err(|e| fatal_io("truncate", e))?;
            have = 0;
        }
        if cancel.load(Ordering::Relaxed) {
            return Err(Step::Fatal(RegistryError::Cancelled));
        }
        let resumed_from = have;
        let mut resp = None;
        if have < size || size == 0 {
            let range = format!("bytes={have}-");
            let headers: &[(&str, &str)] = if have > 0 { &[("Range", &range)] } else { &[] };
            let r = match self.get(t, &format!("blobs/{digest}"), headers, false) {
                Ok(r) => r,
                Err(e @ RegistryError::Unreachable { .. }) => return Err(Step::Retry(e)),
                Err(e) => return Err(Step::Fatal(e)),
            };
            match r.status() {
                200 => {
                    if have > 0 {
                        debug!(%digest, "the registry ignored Range; downloading from the start");
                        file.set_len(0).map_err(|e| fatal_io("truncate", e))?;
                        have = 0;
                    }
                }
                206 if content_range_start(&r) == Some(have) => {}
                300..=399 => {
                    return Err(Step::Fatal(self.protocol(
                        t,
                        "answered a blob request with a redirect that was not followed",
                    )))
                }
                206 | 416 => {
                    // The registry disagrees about what we have: start over.
                    file.set_len(0).map_err(|e| fatal_io("truncate", e))?;
                    return Err(Step::Retry(self.protocol(
                        t,
                        "answered a range request with a range we did not ask for",
                    )));
                }
                404 => {
                    return Err(Step::Fatal(RegistryError::BlobNotFound {
                        host: t.reference.registry().to_string(),
                        repository: t.reference.repository().to_string(),
                        digest: digest.clone(),
                    }))
                }
                502..=504 => {
                    return Err(Step::Retry(self.status_error(
                        t,
                        r,
                        &format!("blob {digest}"),
                    )))
                }
                _ => {
                    return Err(Step::Fatal(self.status_error(
                        t,
                        r,
                        &format!("blob {digest}"),
                    )))
                }
            }
            // A length beyond the descriptor's size is refused before a byte is read.
            let announced = r
                .header("content-length")
                .and_then(|v| v.trim().parse::<u64>().ok());
            if let Some(len) = announced.filter(|&len| have.saturating_add(len) > size) {
                return Err(Step::Fatal(RegistryError::SizeMismatch {
                    digest: digest.clone(),
                    expected: size,
                    actual: have.saturating_add(len),
                }));
            }
            resp = Some(r);
        }
        report(have, ProgressEvent::Started { resumed_from: have });

        // Hash what is on disk, then append what arrives.
        file.seek(SeekFrom::End(0))
            .map_err(|e| fatal_io("seek", e))?;
        let read_back = file.try_clone().map_err(|e| fatal_io("reopen", e))?;
        let mut w = HashingWriter::new(AppendAfter { file, skip: have });
        let mut buf = vec![0u8; CHUNK];
        let mut pos = 0u64;
        while pos < have {
            let want = CHUNK.min(usize::try_from(have - pos).unwrap_or(CHUNK));
            let n = read_back
                .read_at(&mut buf[..want], pos)
                .map_err(|e| fatal_io("read partial download", e))?;
            if n == 0 {
                break;
            }
            w.write_all(&buf[..n])
                .map_err(|e| fatal_io("hash partial download", e))?;
            pos += n as u64;
        }

        if let Some(r) = resp {
            let mut body = r.into_reader();
            let mut reported = have;
            let window = self.opts.stall_window;
            let mut window_start = Instant::now();
            let mut window_bytes = 0u64;
            loop {
                if cancel.load(Ordering::Relaxed) {
                    info!(%digest, have, "blob download cancelled");
                    return Err(Step::Fatal(RegistryError::Cancelled));
                }
                let now = Instant::now();
                if now >= deadline {
                    return Err(Step::Fatal(RegistryError::TimedOut {
                        host: t.reference.registry().to_string(),
                        digest: digest.clone(),
                        have,
                        size,
                        limit: self.blob_time_limit(size),
                    }));
                }
                if now.duration_since(window_start) >= window {
                    if window_bytes < self.opts.min_window_bytes {
                        return Err(Step::Fatal(RegistryError::Stalled {
                            host: t.reference.registry().to_string(),
                            digest: digest.clone(),
                            got: window_bytes,
                            window,
                            min: self.opts.min_window_bytes,
                        }));
                    }
                    window_start = now;
                    window_bytes = 0;
                }
                let n = match body.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        return Err(Step::Retry(self.lost(
                            t,
                            digest,
                            have,
                            size,
                            &e.to_string(),
                        )))
                    }
                };
                window_bytes += n as u64;
                if have + n as u64 > size {
                    return Err(Step::Fatal(RegistryError::SizeMismatch {
                        digest: digest.clone(),
                        expected: size,
                        actual: have + n as u64,
                    }));
                }
                w.write_all(&buf[..n])
                    .map_err(|e| fatal_io("write partial download", e))?;
                have += n as u64;
                if have - reported >= REPORT_EVERY || have == size {
                    report(have, ProgressEvent::Bytes);
                    reported = have;
                }
            }
        }
        if have < size {
            return Err(Step::Retry(self.lost(
                t,
                digest,
                have,
                size,
                "the connection closed early",
            )));
        }
        let (actual, inner) = w.finish();
        if actual != *digest {
            if resumed_from > 0 {
                // The kept part may be what is wrong: download it all once more.
                warn!(%digest, "resumed blob does not verify; downloading it again from the start");
                inner.file.set_len(0).map_err(|e| fatal_io("truncate", e))?;
                return Err(Step::Retry(RegistryError::DigestMismatch {
                    what: what(t, job),
                    expected: digest.clone(),
                    actual,
                }));
            }
            return Err(Step::Fatal(RegistryError::DigestMismatch {
                what: what(t, job),
                expected: digest.clone(),
                actual,
            }));
        }
        inner.file.sync_all().map_err(|e| fatal_io("sync", e))?;
        Ok(())
    }

    fn lost(
        &self,
        t: &Target<'_>,
        digest: &Digest,
        have: u64,
        size: u64,
        why: &str,
    ) -> RegistryError {
        RegistryError::Unreachable {
            host: t.reference.registry().to_string(),
            detail: format!("download of blob {digest} stopped at {have} of {size} bytes: {why}"),
            hint: "; the next pull resumes it".into(),
        }
    }

    fn protocol(&self, t: &Target<'_>, reason: &str) -> RegistryError {
        RegistryError::Protocol {
            host: t.reference.registry().to_string(),
            what: "a blob request".into(),
            reason: reason.into(),
        }
    }
}

/// "a layer of IMAGE", "the config of IMAGE".
fn what(t: &Target<'_>, job: &BlobJob<'_>) -> String {
    match job.kind {
        BlobKind::Config => format!("the config of {}", t.reference),
        BlobKind::Layer => format!("a layer of {}", t.reference),
    }
}

/// The first byte position of a `Content-Range: bytes START-END/TOTAL` header.
fn content_range_start(r: &ureq::Response) -> Option<u64> {
    let v = r.header("content-range")?.trim();
    let rest = v.strip_prefix("bytes")?.trim_start();
    rest.split('-').next()?.trim().parse().ok()
}

/// A partial download of `digest` this process owns: one a crashed process left (its lock is
/// free), or a new one. Never waits: a file whose lock is held belongs to a live download.
fn claim_partial(dir: &Path, digest: &Digest) -> Result<(Flock<File>, PathBuf)> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let hex = digest.hex();
    let entries = fs::read_dir(dir).map_err(|e| io_err(dir, "list partial downloads in", e))?;
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        let stale_new = name.starts_with(&format!(".{hex}."));
        if name != hex && !name.starts_with(&format!("{hex}.")) && !stale_new {
            continue;
        }
        // A file still being made (`.HEX.PID.N.new`) is locked only after it exists: one of a
        // live process (this one included) is never taken for a dead one's, even in the
        // moment before its maker locks it.
        if stale_new && maker_alive(&name) {
            continue;
        }
        let path = e.path();
        let Ok(file) = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
            .open(&path)
        else {
            continue;
        };
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(f) if stale_new => {
                // Created by a process that died before naming it: nothing to resume.
                drop(f);
                let _ = fs::remove_file(&path);
            }
            Ok(f) if f.metadata().is_ok_and(|m| m.is_file()) => {
                info!(path = %path.display(), "resuming a partial download a stopped process left");
                return Ok((f, path));
            }
            Ok(_) => {}
            Err((_, Errno::EWOULDBLOCK)) => {
                debug!(path = %path.display(), "another pull is downloading this blob too");
            }
            Err((_, e)) => {
                return Err(io_err(&path, "lock partial download", io::Error::from(e)));
            }
        }
    }
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".{hex}.{}.{n}.new", std::process::id()));
    let path = dir.join(format!("{hex}.{}.{n}", std::process::id()));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(|e| io_err(&tmp, "create partial download", e))?;
    let file = Flock::lock(file, FlockArg::LockExclusiveNonblock)
        .map_err(|(_, e)| io_err(&tmp, "lock partial download", io::Error::from(e)))?;
    // Named only once locked, so no other pull can mistake it for a crashed one's.
    if let Err(e) = fs::rename(&tmp, &path) {
        let _ = fs::remove_file(&tmp);
        return Err(io_err(&path, "name partial download", e));
    }
    Ok((file, path))
}

/// Whether the process named in a `.HEX.PID.N.new` file name is alive.
fn maker_alive(name: &str) -> bool {
    let mut parts = name.trim_start_matches('.').split('.');
    let pid = parts.nth(1).and_then(|p| p.parse::<u32>().ok());
    match pid {
        Some(pid) => pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists(),
        None => false,
    }
}

fn sleep_unless_cancelled(d: Duration, cancel: &AtomicBool) -> Result<()> {
    let step = Duration::from_millis(50);
    let mut left = d;
    while !left.is_zero() {
        if cancel.load(Ordering::Relaxed) {
            return Err(RegistryError::Cancelled);
        }
        let s = left.min(step);
        std::thread::sleep(s);
        left -= s;
    }
    if cancel.load(Ordering::Relaxed) {
        return Err(RegistryError::Cancelled);
    }
    Ok(())
}

fn io_err(path: &Path, op: &'static str, source: io::Error) -> RegistryError {
    RegistryError::Io {
        path: path.to_path_buf(),
        op,
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_being_made_by_a_live_process_is_not_stale() {
        let me = std::process::id();
        assert!(maker_alive(&format!(".abc.{me}.3.new")));
        assert!(maker_alive(".abc.1.0.new"), "init is alive");
        assert!(!maker_alive(".abc.4294967295.0.new"));
        assert!(!maker_alive(".abc.x.0.new"));
    }
}
