//! `move NAME --pool P`: a stopped instance's root disk moves into storage pool `P` (from its
//! own directory or from another pool); its record, NICs, volumes and name stay. The new root
//! is made and filled first; the instance's record then names the new pool, and only then is
//! the old root removed, so a failure before leaves the instance as it was (the new volume
//! removed) and a failure after leaves at most a stray old root.
//!
//! A container's writable layer is copied (owners, modes, extended attributes and overlay
//! whiteouts kept) onto a root volume of its `limits.disk` size; a VM's disk (its qcow2
//! overlay over the image, or its old volume) is written into a raw volume. Snapshots are of
//! the storage where they were taken: an instance with snapshots is refused until they are
//! deleted (its backups are not affected).

use std::path::PathBuf;

use vessel_api::{Instance, InstanceStatus, InstanceType, Operation};
use vessel_monitor::{DiskSource, RootDisk};

use super::root_disk::{format_image, make_layer_dirs, DiskGuard, RootPlace};
use super::snapshots::copy;
use super::InstanceService;
use crate::error::{Error, Result};
use crate::operations::OpHandle;

impl InstanceService {
    /// Starts the operation that moves instance `name`'s root disk into pool `pool`.
    pub fn move_to_pool(&self, name: &str, pool: &str) -> Result<Operation> {
        let inst = self.get_stored(name)?;
        self.movable(&inst, pool)?;
        let pool = pool.to_string();
        Ok(self.spawn_locked(
            format!("Moving instance {name} to pool {pool}"),
            name,
            move |svc, inst, op| async move {
                svc.movable(&inst, &pool)?;
                let s = svc.clone();
                tokio::task::spawn_blocking(move || s.move_locked(&inst, &pool, &op))
                    .await
                    .map_err(|e| Error::internal(format!("move task: {e}")))?
            },
        ))
    }

    fn movable(&self, inst: &Instance, pool: &str) -> Result<()> {
        let name = &inst.name;
        if inst.status != InstanceStatus::Stopped {
            return Err(Error::conflict(format!(
                "instance {name} is {}: stop it first (`vessel stop {name}`)",
                inst.status.as_str()
            )));
        }
        if inst.storage.as_deref() == Some(pool) {
            return Err(Error::invalid(format!(
                "{name}'s root disk is in pool {pool:?} already"
            )));
        }
        let snaps = self.snap_list(name)?;
        if !snaps.is_empty() {
            return Err(Error::conflict(format!(
                "{name} has {} snapshot(s), which are of its storage where it is now: delete \
                 them first (`vessel snapshot list {name}`; a backup keeps what you need)",
                snaps.len()
            )));
        }
        match inst.instance_type {
            InstanceType::Container => {
                let Some(size) = inst.limits.disk else {
                    return Err(Error::invalid(format!(
                        "a container's root disk in a pool has a size: give {name} one first \
                         (`vessel config set {name} limits.disk=2GiB`)"
                    )));
                };
                self.storage.container_root_check(pool, name, size)
            }
            InstanceType::Vm => self.storage.root_check(pool, name),
        }
    }

    /// Moves; the caller holds the instance's lock (blocking).
    fn move_locked(&self, inst: &Instance, pool: &str, op: &OpHandle) -> Result<()> {
        let name = &inst.name;
        op.progress(Some(5), &format!("making its root disk in pool {pool}"));
        let made = match inst.instance_type {
            InstanceType::Container => self.move_container(inst, pool, op),
            InstanceType::Vm => self.move_vm(inst, pool, op),
        };
        let committed =
            made.and_then(|()| Ok(self.store.instance_set_storage(name, Some(pool))?));
        if let Err(e) = committed {
            if let Err(e2) = self.storage.root_deleted(pool, name) {
                tracing::warn!(instance = %name, pool, error = %e2, "removing a failed move's new root");
            }
            return Err(e);
        }
        op.progress(Some(95), "removing its old root disk");
        let old = match (&inst.storage, inst.instance_type) {
            (Some(from), _) => self.storage.root_deleted(from, name),
            (None, InstanceType::Vm) => remove(self.driver.dir(name).join("root.qcow2")),
            (None, InstanceType::Container) => match self.root_place(inst) {
                Ok(RootPlace::Disk(DiskSource::Image(image))) => remove(image),
                _ => {
                    let dir = self.driver.dir(name);
                    remove(dir.join("upper")).and(remove(dir.join("work")))
                }
            },
        };
        if let Err(e) = old {
            tracing::warn!(instance = %name, error = %e, "removing a moved instance's old root disk");
        }
        tracing::info!(instance = %name, pool, "moved");
        self.events
            .lifecycle("instance-updated", &super::path_of(name));
        Ok(())
    }

    /// Makes container `inst`'s root in `pool` and copies its writable layer onto it.
    fn move_container(&self, inst: &Instance, pool: &str, op: &OpHandle) -> Result<()> {
        let name = &inst.name;
        let size = inst.limits.disk.unwrap_or_default();
        let owner = self.driver.shift(inst).unwrap_or(0);
        let dir = self.driver.dir(name);
        let source = self.storage.create_container_root(pool, name, size)?;
        match &source {
            DiskSource::Image(image) => format_image(image, size, owner, false, &dir)?,
            DiskSource::Directory(sub) => make_layer_dirs(sub, owner)?,
        }
        let (upper, _old) = self.open_writable(inst)?;
        let mount = dir.join(".move");
        std::fs::create_dir_all(&mount)
            .map_err(|e| Error::internal(format!("{}: {e}", mount.display())))?;
        let r = (|| {
            let new = DiskGuard::mount(RootDisk {
                source,
                mount: mount.clone(),
            })?;
            op.progress(Some(20), "copying its files");
            let target = mount.join("upper");
            std::fs::remove_dir(&target)
                .map_err(|e| Error::internal(format!("{}: {e}", target.display())))?;
            copy(&upper, &target)?;
            drop(new);
            Ok(())
        })();
        let _ = std::fs::remove_dir(&mount);
        r
    }

    /// The bytes instance `name`'s root disk takes in a pool it moves into (what the
    /// project's `limits.disk.pool.POOL` counts): a container's `limits.disk`, a VM's disk
    /// size.
    pub fn move_size(&self, name: &str) -> Result<Option<u64>> {
        let inst = self.get_stored(name)?;
        Ok(match inst.instance_type {
            InstanceType::Container => inst.limits.disk,
            InstanceType::Vm => {
                let (disk, format) = self.vm_move_source(&inst)?;
                let format = match format {
                    "qcow2" => vessel_vm::DiskFormat::Qcow2,
                    _ => vessel_vm::DiskFormat::Raw,
                };
                let info = vessel_vm::image_info(&disk, Some(format))
                    .map_err(|e| Error::internal(crate::error::chain(&e)))?;
                Some(info.virtual_size)
            }
        })
    }

    /// Writes VM `inst`'s disk into a new root volume in `pool`.
    fn move_vm(&self, inst: &Instance, pool: &str, op: &OpHandle) -> Result<()> {
        let (disk, format) = self.vm_move_source(inst)?;
        self.storage
            .create_root_volume(pool, &inst.name, (&disk, format), op)
    }

    /// What a VM's disk is read from when it moves, with its format (known, never probed: a
    /// raw volume's bytes are its guest's): its old root volume's file (raw), its qcow2
    /// overlay, or (never started) its image's disk as the image records it.
    fn vm_move_source(&self, inst: &Instance) -> Result<(PathBuf, &'static str)> {
        let name = &inst.name;
        Ok(match &inst.storage {
            Some(from) => (
                self.storage
                    .volume_file(from, &crate::storage::root_volume(name))?
                    .ok_or_else(|| {
                        Error::invalid(format!(
                            "{name}'s root volume in pool {from:?} is no file the daemon copies \
                             (a raid volume inside the daemon or an RBD image in Ceph): moving \
                             it to another pool is not supported yet"
                        ))
                    })?,
                "raw",
            ),
            None => {
                let overlay = self.driver.dir(name).join("root.qcow2");
                if overlay.is_file() {
                    (overlay, "qcow2")
                } else {
                    // Never started: its disk is still the image's.
                    let image = self.images.by_fingerprint(&inst.image)?;
                    super::vm::image_disk_format(&self.images.image_dir(&image.fingerprint))
                        .ok_or_else(|| Error::invalid("the image has no disk"))?
                }
            }
        })
    }
}

fn remove(p: PathBuf) -> Result<()> {
    let r = if p.is_dir() {
        std::fs::remove_dir_all(&p)
    } else {
        std::fs::remove_file(&p)
    };
    match r {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(Error::internal(format!("removing {}: {e}", p.display())))
        }
        _ => Ok(()),
    }
}
