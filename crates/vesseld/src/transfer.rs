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
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(8);
    tokio::task::spawn_blocking(move || {
        let _keep = keep;
        use std::io::Read;
        let mut file = file;
        let mut buf = vec![0u8; 256 << 10];
        loop {
            match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if tx
                        .blocking_send(Ok(Bytes::copy_from_slice(&buf[..n])))
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
    (
        len,
        Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
}
