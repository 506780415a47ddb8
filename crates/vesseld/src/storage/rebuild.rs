//! Start-up: every pool opened (an interrupted rebuild resumed), every export and every
//! raid disk of a VM served again.

use super::StorageService;
use crate::error::{Error, Result};

impl StorageService {
    /// Opens every pool, serves every export and every raid disk of a VM. A pool that
    /// cannot be opened is shown as unavailable with the reason; nothing is changed on it.
    pub fn reconcile(&self) -> Result<()> {
        self.inner.servers.set_nfs_key(self.nfs_key()?);
        for rec in self.pool_records()? {
            match self.open_driver(&rec) {
                Ok(d) => {
                    self.arm_replica(&rec, &d);
                    // A rebuild an earlier daemon did not finish goes on from its checkpoint.
                    let (bg, name) = (d.clone(), rec.name.clone());
                    std::thread::spawn(move || match bg.resume_rebuild() {
                        Ok(true) => tracing::info!(pool = %name, "interrupted rebuild finished"),
                        Ok(false) => {}
                        Err(e) => {
                            tracing::error!(pool = %name, error = %e.message, "resumed rebuild failed")
                        }
                    });
                    self.inner
                        .drivers
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(rec.name.clone(), d);
                }
                Err(e) => {
                    tracing::error!(pool = %rec.name, error = %e.message, "storage pool unavailable");
                    self.inner
                        .unavailable
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(rec.name.clone(), e.message);
                }
            }
        }
        for e in self.inner.exports.list()? {
            if let Err(err) = self.serve_export(&e) {
                tracing::error!(export = %e.export.name, error = %err.message, "export not served");
            }
        }
        for v in self.volume_records(None)? {
            for a in &v.attached_to {
                if a.path.is_empty() {
                    if let Err(e) = self.serve_disk(&a.instance, &v) {
                        tracing::error!(volume = %v.key(), error = %e.message, "VM disk not served");
                    }
                }
            }
        }
        Ok(())
    }

    /// The NFS handle key, made once per daemon root.
    fn nfs_key(&self) -> Result<[u8; 32]> {
        use std::io::Read;
        let path = self.inner.root.join("nfs-handle.key");
        if let Ok(b) = std::fs::read(&path) {
            if let Ok(k) = <[u8; 32]>::try_from(b.as_slice()) {
                return Ok(k);
            }
        }
        let mut k = [0u8; 32];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut k))
            .map_err(|e| Error::internal(format!("reading /dev/urandom: {e}")))?;
        std::fs::create_dir_all(&self.inner.root)
            .map_err(|e| Error::internal(format!("creating {}: {e}", self.inner.root.display())))?;
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .and_then(|mut f| f.write_all(&k))
            .map_err(|e| Error::internal(format!("writing {}: {e}", path.display())))?;
        Ok(k)
    }
}
