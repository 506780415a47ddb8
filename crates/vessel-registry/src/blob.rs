//! Resumable, verified blob downloads into the blob store.
//!
//! A blob being downloaded lives in `<store>/partial/<hex>`, locked with `flock` so two pulls
//! never write it at once. After an interruption (a dropped connection, a cancel, a new
//! process) the download continues with `Range: bytes=<len>-`; a server that answers `200`
//! instead of `206` is read from the start. The whole content is hashed, and only a blob whose
//! size and digest match its descriptor is renamed into the store.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

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
    /// partial download) and verified.
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
        if store.has(digest) {
            debug!(%digest, "blob already stored");
            report(job.desc.size, ProgressEvent::Skipped);
            return Ok(());
        }
        let dir = store.dir().join(PARTIAL_DIR);
        fs::create_dir_all(&dir).map_err(|e| io_err(&dir, "create directory", e))?;
        let path = dir.join(digest.hex());
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io_err(&path, "open partial download", e))?;
        let mut file = lock(file, &path, cancel)?;
        if store.has(digest) {
            // Another pull stored it while we waited for the lock.
            report(job.desc.size, ProgressEvent::Skipped);
            if file.metadata().is_ok_and(|m| m.len() == 0) {
                let _ = fs::remove_file(&path);
            }
            return Ok(());
        }
        let mut failures = 0;
        loop {
            match self.download_once(t, &mut file, &path, job, &mut report, cancel) {
                Ok(()) => break,
                Err(Step::Fatal(e)) => return Err(e),
                Err(Step::Retry(e)) if failures < self.opts.retries => {
                    failures += 1;
                    warn!(%digest, error = %e, failures, "blob download interrupted; resuming");
                    sleep_unless_cancelled(Duration::from_millis(250 << failures), cancel)?;
                }
                Err(Step::Retry(e)) => return Err(e),
            }
        }
        let dest = store.path(digest);
        fs::rename(&path, &dest)
            .map_err(|e| io_err(&dest, "move verified blob into the store", e))?;
        info!(%digest, size = job.desc.size, "blob stored");
        report(job.desc.size, ProgressEvent::Finished);
        Ok(())
    }

    /// One request: continues the partial file, verifies it when complete.
    fn download_once(
        &self,
        t: &Target<'_>,
        file: &mut File,
        path: &Path,
        job: &BlobJob<'_>,
        report: &mut dyn FnMut(u64, ProgressEvent),
        cancel: &AtomicBool,
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
            loop {
                if cancel.load(Ordering::Relaxed) {
                    let _ = w.flush();
                    info!(%digest, have, "blob download cancelled; partial data kept");
                    return Err(Step::Fatal(RegistryError::Cancelled));
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
                if have + n as u64 > size {
                    let _ = fs::remove_file(path);
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
            let _ = fs::remove_file(path);
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

/// Takes the partial file's lock, waiting (cancellably) while another pull holds it.
fn lock(mut file: File, path: &Path, cancel: &AtomicBool) -> Result<Flock<File>> {
    let mut waited = false;
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(f) => return Ok(f),
            Err((f, Errno::EWOULDBLOCK)) => {
                if !waited {
                    info!(path = %path.display(), "another pull is downloading this blob; waiting");
                    waited = true;
                }
                file = f;
                sleep_unless_cancelled(Duration::from_millis(100), cancel)?;
            }
            Err((_, e)) => return Err(io_err(path, "lock partial download", io::Error::from(e))),
        }
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
