//! `copy`: a new instance from an instance as it is now (a running container's cgroup
//! frozen, a running VM's vCPUs stopped while its files are copied, so the copy is of one
//! moment) or from one of its snapshots. Files are copied with reflinks where the file system
//! can, into a staging directory under the source's lock; the new instance is then made by
//! the normal creation, which takes the staged files before its first start (and is rolled
//! back whole if anything fails). It gets NICs of its own on the source's networks.

use std::path::{Path, PathBuf};

use vessel_api::{Instance, InstanceStatus, InstanceType, Operation, OperationStatus};

use super::snapshots::{copy, sync_fs};
use super::InstanceService;
use crate::error::{Error, Result};

/// What was staged: the source's writable layer, its root disk image, a VM's qcow2 disk,
/// or a VM's raw root volume (of a pool).
enum Staged {
    Upper(PathBuf),
    RootImage(PathBuf),
    VmDisk(PathBuf),
    VmVolume(PathBuf),
    Nothing,
}

/// Moves tree `src` to `dst`: a rename, or a copy and a removal across file systems (into a
/// root disk mounted from a pool).
fn move_tree(src: &Path, dst: &Path) -> Result<()> {
    match std::fs::rename(src, dst) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            copy(src, dst)?;
            let _ = std::fs::remove_dir_all(src);
            Ok(())
        }
        Err(e) => Err(Error::internal(format!("{}: {e}", dst.display()))),
    }
}

impl InstanceService {
    /// Starts the operation that makes instance `dst` (qualified) a copy of `src` (or of its
    /// snapshot `snap`), started after when `start`. `held` (the project's quota lock, under
    /// which the copy was admitted) is let go once the copy's row exists, not before: two
    /// copies admitted for the last place would both be made otherwise.
    pub fn copy(
        &self,
        src: &str,
        snap: Option<&str>,
        dst: &str,
        start: bool,
        held: Box<dyn Send>,
    ) -> Result<Operation> {
        crate::name::validate_qualified("instance", dst)?;
        let from = self.get_stored(src)?;
        if let Some(s) = snap {
            self.snapshot(src, s)?;
        }
        if let (Some(pool), Some(_)) = (&from.storage, snap) {
            return Err(Error::invalid(format!(
                "{src}'s root disk is a volume in pool {pool:?}, whose snapshots the pool keeps: \
                 copying from them is not supported yet (copy the instance as it is, or \
                 restore the snapshot first)"
            )));
        }
        if self.get_stored(dst).is_ok() {
            return Err(Error::conflict(format!(
                "an instance named {dst:?} already exists; pick another name or delete it first"
            )));
        }
        let (svc, src, dst, snap) = (
            self.clone(),
            src.to_string(),
            dst.to_string(),
            snap.map(str::to_string),
        );
        let what = match &snap {
            Some(s) => format!("{src}/{s}"),
            None => src.clone(),
        };
        Ok(self.ops.spawn(
            format!("Copying instance {what} to {dst}"),
            vec![super::path_of(&src), super::path_of(&dst)],
            false,
            move |op| async move {
                let staging = svc
                    .driver
                    .instances_dir
                    .join(format!(".copy-{}", uuid::Uuid::new_v4().simple()));
                let result = async {
                    op.progress(Some(10), "copying files");
                    let (from, staged) = {
                        let lock = svc.lock_for(&src);
                        let _g = lock.lock().await;
                        let inst = svc.get_stored(&src)?;
                        let (s, i, st, sn) =
                            (svc.clone(), inst.clone(), staging.clone(), snap.clone());
                        let staged = tokio::task::spawn_blocking(move || {
                            s.stage_copy(&i, sn.as_deref(), &st)
                        })
                        .await
                        .map_err(|e| Error::internal(format!("copy task: {e}")))??;
                        let mut whole = inst;
                        svc.with_devices(std::slice::from_mut(&mut whole))?;
                        (whole, staged)
                    };
                    op.progress(Some(60), "making the new instance");
                    let req = svc.recreate_request(&from, &dst, start);
                    let shift = svc.driver.shift(&from);
                    let fill: super::create::Fill =
                        Box::new(move |svc, inst, _op| svc.take_staged(inst, staged, shift));
                    let made =
                        svc.create_with(req, Default::default(), Default::default(), Some(fill));
                    drop(held);
                    let made = made?;
                    let done = svc.ops.wait(&made.id, None).await?;
                    if done.status != OperationStatus::Success {
                        return Err(Error::conflict(
                            done.error
                                .unwrap_or_else(|| "making the copy failed".into()),
                        ));
                    }
                    Ok(())
                }
                .await;
                if staging.exists() {
                    let _ = std::fs::remove_dir_all(&staging);
                }
                result
            },
        ))
    }

    /// Copies the source's files into `staging` (blocking; the caller holds its lock).
    fn stage_copy(&self, inst: &Instance, snap: Option<&str>, staging: &Path) -> Result<Staged> {
        let name = &inst.name;
        std::fs::create_dir_all(staging)
            .map_err(|e| Error::internal(format!("{}: {e}", staging.display())))?;
        if let Some(s) = snap {
            return self.stage_snapshot(inst, s, staging);
        }
        let running = inst.status == InstanceStatus::Running;
        match inst.instance_type {
            InstanceType::Container => {
                let _frozen = self.pause_while(inst)?;
                match self.root_place(inst)? {
                    super::root_disk::RootPlace::Shared => {
                        let dst = staging.join("upper");
                        copy(&self.driver.dir(name).join("upper"), &dst)?;
                        Ok(Staged::Upper(dst))
                    }
                    super::root_disk::RootPlace::Disk(_) if inst.storage.is_none() => {
                        if running {
                            sync_fs(&self.driver.disk_mount(name))?;
                        }
                        let dst = staging.join("root.img");
                        copy(&self.driver.root_image(name), &dst)?;
                        Ok(Staged::RootImage(dst))
                    }
                    // A root volume of a pool: its layer, read through its mount (the
                    // copy's root is a volume of its own).
                    super::root_disk::RootPlace::Disk(_) => {
                        let (upper, _disk) = if running {
                            (self.driver.disk_mount(name).join("upper"), None)
                        } else {
                            self.open_writable(inst)?
                        };
                        let dst = staging.join("upper");
                        copy(&upper, &dst)?;
                        Ok(Staged::Upper(dst))
                    }
                }
            }
            InstanceType::Vm if inst.storage.is_some() => {
                let pool = inst.storage.as_deref().unwrap_or_default();
                let file = self
                    .storage
                    .volume_file(pool, &crate::storage::root_volume(name))?
                    .ok_or_else(|| {
                        Error::invalid(format!(
                            "{name}'s root volume in pool {pool:?} is no file the daemon \
                             copies (a raid volume inside the daemon or an RBD image in Ceph): \
                             copying it is not supported yet"
                        ))
                    })?;
                let dst = staging.join("root.raw");
                {
                    let _paused = self.pause_while(inst)?;
                    copy(&file, &dst)?;
                }
                Ok(Staged::VmVolume(dst))
            }
            InstanceType::Vm => {
                let disk = self.vms.instances_dir.join(name).join("root.qcow2");
                if !disk.is_file() {
                    return Ok(Staged::Nothing);
                }
                let dst = staging.join("root.qcow2");
                {
                    let _paused = self.pause_while(inst)?;
                    copy(&disk, &dst)?;
                }
                // Its internal snapshots are the source's, not the copy's.
                for tag in vessel_vm::disk_snapshots(&dst).unwrap_or_default() {
                    let _ = vessel_vm::disk_snapshot(&dst, vessel_vm::DiskSnapshot::Delete, &tag);
                }
                Ok(Staged::VmDisk(dst))
            }
        }
    }

    /// Copies what snapshot `snap` holds of the source into `staging`.
    fn stage_snapshot(&self, inst: &Instance, snap: &str, staging: &Path) -> Result<Staged> {
        let view = self.snapshot(&inst.name, snap)?;
        match inst.instance_type {
            InstanceType::Container => {
                let dir = self.driver.dir(&inst.name).join("snapshots").join(snap);
                if dir.join("upper").is_dir() {
                    let dst = staging.join("upper");
                    copy(&dir.join("upper"), &dst)?;
                    Ok(Staged::Upper(dst))
                } else if dir.join("root.img").is_file() {
                    let dst = staging.join("root.img");
                    copy(&dir.join("root.img"), &dst)?;
                    Ok(Staged::RootImage(dst))
                } else {
                    Err(Error::invalid(format!(
                        "snapshot {snap} of {} is kept by its pool ({}): copying from it is \
                         not supported yet",
                        inst.name, view.kind
                    )))
                }
            }
            InstanceType::Vm => {
                let disk = self.vms.instances_dir.join(&inst.name).join("root.qcow2");
                let dst = staging.join("root.qcow2");
                // The snapshot as the guest saw it, read shared (QEMU may hold the image),
                // written as an overlay over the image's disk: clusters left unallocated read
                // the image, so every cluster that differs from it (zeros included) is
                // written.
                let (backing, format) = self.image_backing(inst)?;
                let out = std::process::Command::new("qemu-img")
                    .args(["convert", "-U", "-O", "qcow2", "-B"])
                    .arg(&backing)
                    .args(["-F", &format, "-l"])
                    .arg(format!("snapshot.name={snap}"))
                    .arg(&disk)
                    .arg(&dst)
                    .output()
                    .map_err(|e| Error::internal(format!("qemu-img convert: {e}")))?;
                if !out.status.success() {
                    return Err(Error::conflict(format!(
                        "reading snapshot {snap} of {}: {}",
                        inst.name,
                        String::from_utf8_lossy(&out.stderr).trim()
                    )));
                }
                Ok(Staged::VmDisk(dst))
            }
        }
    }

    /// Moves staged files into the new instance `inst` (blocking; inside its creation).
    fn take_staged(&self, inst: &Instance, staged: Staged, shift: Option<u32>) -> Result<()> {
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |e: std::io::Error| Error::internal(format!("{}: {e}", p.display()))
        };
        match staged {
            Staged::Nothing => Ok(()),
            Staged::Upper(src) => {
                let (upper, _disk) = self.open_writable(inst)?;
                std::fs::remove_dir(&upper).map_err(io(&upper))?;
                move_tree(&src, &upper)?;
                if let (Some(from), Some(to)) = (shift, self.driver.shift(inst)) {
                    super::remap::remap(&upper, from, to).map_err(io(&upper))?;
                }
                Ok(())
            }
            Staged::RootImage(src) => {
                let image = self.driver.root_image(&inst.name);
                std::fs::rename(&src, &image).map_err(io(&image))?;
                if let (Some(from), Some(to)) = (shift, self.driver.shift(inst)) {
                    let (upper, _disk) = self.open_writable(inst)?;
                    super::remap::remap(&upper, from, to).map_err(io(&upper))?;
                }
                Ok(())
            }
            Staged::VmVolume(src) => {
                // Over the root volume its creation wrote from the image, grown first to
                // the source's size if that was grown.
                let pool = inst.storage.as_deref().unwrap_or_default();
                let vol = crate::storage::root_volume(&inst.name);
                let size = std::fs::metadata(&src).map_err(io(&src))?.len();
                if size > self.storage.volume_get(pool, &vol)?.size_bytes {
                    self.storage
                        .volume_update(pool, &vol, vessel_api::VolumeUpdate { size })?;
                }
                let file = self
                    .storage
                    .volume_file(pool, &vol)?
                    .ok_or_else(|| Error::internal("the copy's root volume is not a file"))?;
                let out = std::process::Command::new("qemu-img")
                    .args(["convert", "-n", "-f", "raw", "-O", "raw"])
                    .arg(&src)
                    .arg(&file)
                    .output()
                    .map_err(|e| Error::internal(format!("qemu-img convert: {e}")))?;
                if !out.status.success() {
                    return Err(Error::internal(format!(
                        "writing the copy's root volume: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    )));
                }
                Ok(())
            }
            Staged::VmDisk(src) => {
                let user = super::vm_files::qemu_user(inst)?;
                let disk = self.vms.instances_dir.join(&inst.name).join("root.qcow2");
                let _ = std::fs::remove_file(&disk);
                std::fs::rename(&src, &disk).map_err(io(&disk))?;
                std::os::unix::fs::chown(&disk, Some(user.uid), Some(user.gid)).map_err(io(&disk))
            }
        }
    }
}
