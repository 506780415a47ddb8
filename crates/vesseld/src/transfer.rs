//! What carries a large file from one place to another: a scratch directory under the
//! daemon's root (removed when dropped), and an open file as a streamed HTTP body (read off
//! the async runtime). Archives use both when they are sent to a client or to another member.

use std::path::{Path, PathBuf};

use axum::body::Body;
use bytes::Bytes;

use crate::error::{Error, Result};

/// A temporary directory under the daemon's root, removed when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    /// A new one under `<root>/archives`.
    pub fn new(root: &Path) -> Result<Scratch> {
        let dir = root
            .join("archives")
            .join(uuid::Uuid::new_v4().simple().to_string());
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::internal(format!("{}: {e}", dir.display())))?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An open file as a body, read in a blocking task; `keep` is held until the last byte is
/// sent (the scratch directory the file lies in, say). Returns the body and its length.
pub fn file_body<K: Send + 'static>(file: std::fs::File, keep: K) -> (u64, Body) {
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    (len, reader_body(file, keep))
}

/// Longest wait for a client to take more of a body before the body is cut short.
const BODY_STALL: std::time::Duration = std::time::Duration::from_secs(60);

/// What `reader` reads, to its end, as a body read in a blocking task; `keep` is held until
/// the last byte is sent (a file's instance root, mounted and locked, say), or until the
/// client has taken nothing for [`BODY_STALL`].
pub fn reader_body<R, K>(mut reader: R, keep: K) -> Body
where
    R: std::io::Read + Send + 'static,
    K: Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(8);
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let _keep = keep;
        let mut buf = vec![0u8; 256 << 10];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    // A client that takes nothing for this long loses the rest (and `keep`
                    // goes: an instance's lock is not held for a reader that went away).
                    let chunk = Ok(Bytes::copy_from_slice(&buf[..n]));
                    if runtime
                        .block_on(tx.send_timeout(chunk, BODY_STALL))
                        .is_err()
                    {
                        break;
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    break;
                }
            }
        }
    });
    Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// Free room an upload leaves on the daemon's file system at least (its database and every
/// instance on it stop when it is full).
const UPLOAD_KEEPS_FREE: u64 = 1 << 30;
/// How often, in bytes received, an upload looks at the room left.
const ROOM_CHECK_EVERY: u64 = 16 << 20;

/// Streams a body (an upload, or another member's answer) into `dest`: at most `max` bytes,
/// not empty, and never past the last [`UPLOAD_KEEPS_FREE`] bytes of its file system. On
/// failure `dest` is removed.
pub async fn receive_body(body: Body, dest: &std::path::Path, max: u64, what: &str) -> Result<()> {
    let received = receive_into(body, dest, max, what).await;
    if received.is_err() {
        let _ = tokio::fs::remove_file(dest).await;
    }
    received
}

async fn receive_into(body: Body, dest: &std::path::Path, max: u64, what: &str) -> Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut file = tokio::fs::File::create(dest)
        .await
        .map_err(|e| Error::internal(format!("storing the upload: {e}")))?;
    let mut stream = body.into_data_stream();
    let mut total = 0u64;
    let mut checked = 0u64;
    while let Some(chunk) = tokio_stream::StreamExt::next(&mut stream).await {
        let chunk = chunk.map_err(|e| Error::invalid(format!("reading the upload: {e}")))?;
        total += chunk.len() as u64;
        if total > max {
            return Err(Error::invalid(format!(
                "the upload is larger than the {max} bytes accepted here"
            )));
        }
        if total >= checked {
            let free = vessel_image::space::free_space(dest).map(|f| f.bytes);
            if free.is_ok_and(|f| f < UPLOAD_KEEPS_FREE + ROOM_CHECK_EVERY) {
                return Err(Error::invalid(format!(
                    "the daemon's file system has less than {} MiB free: the upload stopped \
                     at {total} bytes (free room on the host first)",
                    (UPLOAD_KEEPS_FREE + ROOM_CHECK_EVERY) >> 20
                )));
            }
            checked = total + ROOM_CHECK_EVERY;
        }
        file.write_all(&chunk)
            .await
            .map_err(|e| Error::internal(format!("storing the upload: {e}")))?;
    }
    file.flush()
        .await
        .map_err(|e| Error::internal(format!("storing the upload: {e}")))?;
    if total == 0 {
        return Err(Error::invalid(format!(
            "the upload is empty: send the {what} as the body"
        )));
    }
    Ok(())
}
