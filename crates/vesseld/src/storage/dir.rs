//! The `dir` pool: a directory on the host file system.
//!
//! Layout: `fs/<volume>/` (filesystem volumes), `block/<volume>.raw` (sparse raw images),
//! `snapshots/<volume>/<snapshot>[.raw]`. Snapshots and clones are copies, reflinked where
//! the file system can (btrfs, XFS). Filesystem quotas are not enforced on this driver.

use std::path::{Path, PathBuf};

use vessel_api::VolumeContent;

use super::driver::{
    copy_image, copy_tree, fs_capacity, io_err, tree_usage, BlockAccess, PoolDriver,
};
use crate::error::{Error, Result};

/// A `dir` pool rooted at a directory.
pub struct DirPool {
    root: PathBuf,
}

impl DirPool {
    /// Creates the layout under `root` (which must be empty or absent).
    pub fn create(root: &Path) -> Result<Self> {
        if root.exists() {
            let mut rd = std::fs::read_dir(root).map_err(io_err("reading", root))?;
            if rd.next().is_some() {
                return Err(Error::invalid(format!(
                    "{} is not empty; give an empty or new directory for a dir pool",
                    root.display()
                )));
            }
        }
        for sub in ["fs", "block", "snapshots"] {
            let p = root.join(sub);
            std::fs::create_dir_all(&p).map_err(io_err("creating", &p))?;
        }
        super::driver::secure_layout(root)?;
        Ok(Self { root: root.into() })
    }

    /// Opens an existing pool.
    pub fn open(root: &Path) -> Result<Self> {
        for sub in ["fs", "block", "snapshots"] {
            if !root.join(sub).is_dir() {
                return Err(Error::internal(format!(
                    "{} is not a Vessel dir pool (no {sub}/)",
                    root.display()
                )));
            }
        }
        super::driver::secure_layout(root)?;
        Ok(Self { root: root.into() })
    }

    fn vol(&self, name: &str, content: VolumeContent) -> PathBuf {
        match content {
            VolumeContent::Filesystem => self.root.join("fs").join(name),
            VolumeContent::Block => self.root.join("block").join(format!("{name}.raw")),
        }
    }

    fn snap(&self, name: &str, content: VolumeContent, snap: &str) -> PathBuf {
        let dir = self.root.join("snapshots").join(name);
        match content {
            VolumeContent::Filesystem => dir.join(snap),
            VolumeContent::Block => dir.join(format!("{snap}.raw")),
        }
    }

    fn copy(&self, from: &Path, to: &Path, content: VolumeContent) -> Result<()> {
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(io_err("creating", parent))?;
        }
        let r = match content {
            VolumeContent::Filesystem => copy_tree(from, to),
            VolumeContent::Block => copy_image(from, to),
        };
        if r.is_err() {
            let _ = remove(to);
        }
        r
    }
}

fn remove(p: &Path) -> Result<()> {
    let r = if p.is_dir() {
        std::fs::remove_dir_all(p)
    } else {
        std::fs::remove_file(p)
    };
    match r {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::internal(format!("removing {}: {e}", p.display()))),
    }
}

impl PoolDriver for DirPool {
    fn capacity(&self) -> Result<(u64, u64)> {
        let (total, _) = fs_capacity(&self.root)?;
        Ok((total, tree_usage(&self.root)))
    }

    fn available(&self) -> Result<u64> {
        super::driver::fs_available(&self.root)
    }

    fn create(&self, name: &str, content: VolumeContent, size: Option<u64>) -> Result<()> {
        let p = self.vol(name, content);
        match content {
            VolumeContent::Filesystem => {
                std::fs::create_dir(&p).map_err(io_err("creating", &p))?;
            }
            VolumeContent::Block => {
                use std::os::unix::fs::OpenOptionsExt;
                // Root's alone until a VM it is attached to starts.
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&p)
                    .map_err(io_err("creating", &p))?;
                if let Err(e) = f.set_len(size.unwrap_or(0)) {
                    let _ = std::fs::remove_file(&p);
                    return Err(Error::internal(format!("sizing {}: {e}", p.display())));
                }
            }
        }
        Ok(())
    }

    fn clone_volume(
        &self,
        source: &str,
        snap: Option<&str>,
        name: &str,
        content: VolumeContent,
    ) -> Result<()> {
        let from = match snap {
            Some(s) => self.snap(source, content, s),
            None => self.vol(source, content),
        };
        self.copy(&from, &self.vol(name, content), content)
    }

    fn delete(&self, name: &str, content: VolumeContent) -> Result<()> {
        remove(&self.vol(name, content))?;
        let snaps = self.root.join("snapshots").join(name);
        remove(&snaps)
    }

    fn resize(&self, name: &str, content: VolumeContent, size: u64) -> Result<()> {
        match content {
            VolumeContent::Block => {
                let p = self.vol(name, content);
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&p)
                    .map_err(io_err("opening", &p))?;
                f.set_len(size).map_err(io_err("resizing", &p))
            }
            VolumeContent::Filesystem => Ok(()),
        }
    }

    fn snapshot(&self, name: &str, content: VolumeContent, snap: &str) -> Result<()> {
        self.copy(
            &self.vol(name, content),
            &self.snap(name, content, snap),
            content,
        )
    }

    fn delete_snapshot(&self, name: &str, content: VolumeContent, snap: &str) -> Result<()> {
        remove(&self.snap(name, content, snap))
    }

    fn restore(&self, name: &str, content: VolumeContent, snap: &str) -> Result<()> {
        let vol = self.vol(name, content);
        // Copy first, swap after: a failed copy leaves the volume as it was. Beside the
        // volume under names no volume has (a volume's name never starts with a dot; with
        // an extension, `x.restoring` was project x's volume `restoring`, removed here).
        let beside = |what: &str| {
            let file = vol.file_name().unwrap_or_default().to_string_lossy();
            vol.with_file_name(format!(".{what}-{file}"))
        };
        let staged = beside("restoring");
        let _ = remove(&staged);
        self.copy(&self.snap(name, content, snap), &staged, content)?;
        let old = beside("old");
        let _ = remove(&old);
        std::fs::rename(&vol, &old).map_err(io_err("moving", &vol))?;
        if let Err(e) = std::fs::rename(&staged, &vol) {
            let _ = std::fs::rename(&old, &vol);
            return Err(Error::internal(format!("restoring {}: {e}", vol.display())));
        }
        remove(&old)
    }

    fn used(&self, name: &str, content: VolumeContent) -> Result<u64> {
        Ok(tree_usage(&self.vol(name, content)))
    }

    fn fs_path(&self, name: &str) -> Result<PathBuf> {
        Ok(self.vol(name, VolumeContent::Filesystem))
    }

    fn block(&self, name: &str) -> Result<BlockAccess> {
        Ok(BlockAccess::File(self.vol(name, VolumeContent::Block)))
    }
}
