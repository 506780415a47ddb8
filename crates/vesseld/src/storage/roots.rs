//! Containers' root disks in pools: a volume `INSTANCE-root` holding the container's
//! writable layer, sized by its `limits.disk`. On btrfs it is a filesystem volume (a
//! subvolume whose qgroup limit is the size), on dir a block volume (a sparse file the
//! instance service formats as ext4). It is attached to its container (so it cannot be
//! deleted, attached elsewhere or restored while the container runs) and deleted with it.

use vessel_api::{PoolDriver as DriverKind, VolumeAttachment, VolumeContent, VolumeCreate};
use vessel_monitor::DiskSource;

use super::driver::BlockAccess;
use super::record::VolumeRecord;
use super::StorageService;
use crate::error::{Error, Result};

/// The name of an instance's root volume in a pool (a container's root disk, a VM's disk).
pub(crate) fn root_volume(instance: &str) -> String {
    format!("{instance}-root")
}

/// The content of a container's root volume in a pool of `driver`.
fn root_content(driver: DriverKind, pool: &str) -> Result<VolumeContent> {
    match driver {
        DriverKind::Btrfs => Ok(VolumeContent::Filesystem),
        DriverKind::Dir => Ok(VolumeContent::Block),
        DriverKind::Raid => Err(Error::invalid(format!(
            "pool {pool:?} is a raid pool, which cannot hold a container's root disk: its \
             volumes are block devices inside the daemon, and this kernel has no nbd, ublk \
             or dm to mount one; use a btrfs or dir pool, or leave --storage out"
        ))),
        DriverKind::Ceph => Err(Error::invalid(format!(
            "pool {pool:?} is a ceph pool, which cannot hold a container's root disk: {}",
            super::ceph::NO_FILESYSTEMS
        ))),
    }
}

/// Refuses `size` bytes where only `free` are left.
pub(crate) fn check_fits(size: u64, free: u64, place: &str) -> Result<()> {
    if size > free {
        return Err(Error::invalid(format!(
            "a root disk of {size} bytes is more than {place} has free ({free} bytes); \
             give a smaller limits.disk"
        )));
    }
    Ok(())
}

impl StorageService {
    /// Checks that container `instance` can get a root disk of `size` bytes in `pool`.
    pub fn container_root_check(&self, pool: &str, instance: &str, size: u64) -> Result<()> {
        root_content(self.pool_record(pool)?.driver, pool)?;
        let d = self.driver(pool)?;
        let name = root_volume(instance);
        crate::name::validate_qualified("volume", &name)?;
        if self.volume_record(pool, &name).is_ok() {
            return Err(Error::conflict(format!(
                "pool {pool:?} already has a volume {name:?}"
            )));
        }
        check_fits(size, d.available()?, &format!("pool {pool:?}"))
    }

    /// Creates container `instance`'s root volume of `size` bytes in `pool`, attached to it
    /// (blocking); returns what its writable layer goes on. The volume goes with
    /// [`StorageService::instance_deleted`].
    pub fn create_container_root(
        &self,
        pool: &str,
        instance: &str,
        size: u64,
    ) -> Result<DiskSource> {
        let _g = self.busy();
        self.container_root_check(pool, instance, size)?;
        let content = root_content(self.pool_record(pool)?.driver, pool)?;
        let name = root_volume(instance);
        self.volume_create_locked(
            pool,
            VolumeCreate {
                name: name.clone(),
                content,
                size: Some(size),
                source: None,
                config: Default::default(),
            },
            Some(instance.to_string()),
        )?;
        let made = (|| {
            let mut v = self.volume_record(pool, &name)?;
            v.container_root = true;
            v.attached_to.push(VolumeAttachment {
                instance: instance.into(),
                path: String::new(),
            });
            self.put_volume(&v)?;
            self.root_source(&v)
        })();
        if made.is_err() {
            if let Ok(d) = self.driver(pool) {
                let _ = d.delete(&name, content);
            }
            let _ = self.inner.volumes.delete(&format!("{pool}/{name}"));
        }
        made
    }

    /// Container `instance`'s root volume in `pool` (by name: while a move makes its new
    /// root in another pool, each pool holds one).
    fn container_root_record(&self, pool: &str, instance: &str) -> Result<Option<VolumeRecord>> {
        Ok(self
            .volume_record(pool, &root_volume(instance))
            .ok()
            .filter(|v| v.container_root && v.root_of.as_deref() == Some(instance)))
    }

    fn root_source(&self, v: &VolumeRecord) -> Result<DiskSource> {
        let d = self.driver(&v.pool)?;
        match v.content {
            VolumeContent::Filesystem => Ok(DiskSource::Directory(d.fs_path(&v.name)?)),
            VolumeContent::Block => match d.block(&v.name)? {
                BlockAccess::File(path) => Ok(DiskSource::Image(path)),
                BlockAccess::Device(_) | BlockAccess::Rbd(_) => Err(Error::internal(format!(
                    "volume {} is not a file; a container's root disk cannot be mounted from it",
                    v.key()
                ))),
            },
        }
    }

    /// What container `instance`'s writable layer goes on, when its root disk is in a pool.
    pub fn container_root(&self, pool: &str, instance: &str) -> Result<Option<DiskSource>> {
        self.container_root_record(pool, instance)?
            .map(|v| self.root_source(&v))
            .transpose()
    }

    /// Bytes the root volume of `instance` uses in its pool, and what the pool has free.
    pub fn container_root_usage(&self, pool: &str, instance: &str) -> Result<(u64, u64)> {
        let v = self.container_root_record(pool, instance)?.ok_or_else(|| {
            Error::not_found(format!("container {instance:?} has no root disk in a pool"))
        })?;
        let d = self.driver(&v.pool)?;
        Ok((d.used(&v.name, v.content)?, d.available()?))
    }

    /// Sets the size of container `instance`'s root volume (blocking): a btrfs subvolume's
    /// qgroup limit, a dir pool's image file (whose file system the caller grows).
    pub fn container_root_resize(&self, pool: &str, instance: &str, size: u64) -> Result<()> {
        let _g = self.busy();
        let mut v = self.container_root_record(pool, instance)?.ok_or_else(|| {
            Error::not_found(format!("container {instance:?} has no root disk in a pool"))
        })?;
        self.driver(&v.pool)?.resize(&v.name, v.content, size)?;
        v.size = size;
        self.put_volume(&v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_fit_their_pool() {
        assert_eq!(
            root_content(DriverKind::Btrfs, "p").unwrap(),
            VolumeContent::Filesystem
        );
        assert_eq!(
            root_content(DriverKind::Dir, "p").unwrap(),
            VolumeContent::Block
        );
        let e = root_content(DriverKind::Raid, "r").unwrap_err();
        assert!(e.message.contains("no nbd, ublk or dm"), "{e}");
        check_fits(10, 10, "pool \"p\"").unwrap();
        let e = check_fits(11, 10, "pool \"p\"").unwrap_err();
        assert!(
            e.message
                .contains("more than pool \"p\" has free (10 bytes)"),
            "{e}"
        );
        assert_eq!(root_volume("c1"), "c1-root");
    }
}
