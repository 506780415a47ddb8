//! Attachments: volumes given to instances (bind mounts for containers, disks for VMs, raid
//! volumes served to QEMU over private NBD sockets), and what an instance's start and
//! deletion ask of storage.

use std::path::PathBuf;

use vessel_api::{
    InstanceStatus, InstanceType, StorageVolume, VolumeAttach, VolumeAttachment, VolumeContent,
};

use super::driver::BlockAccess;
use super::record::VolumeRecord;
use super::{StorageService, VolumeMount};
use crate::error::{chain, Error, Result};

impl StorageService {
    /// Attaches a volume to a stopped instance.
    pub fn attach(&self, pool: &str, name: &str, req: VolumeAttach) -> Result<StorageVolume> {
        let _g = self.busy();
        let mut v = self.volume_record(pool, name)?;
        let inst =
            crate::instance::stored_stopped(self.inner.store.as_ref(), &req.instance, "volumes")?;
        if v.attached_to.iter().any(|a| a.instance == req.instance) {
            return Err(Error::conflict(format!(
                "volume {name:?} is already attached to {:?}",
                req.instance
            )));
        }
        let path = match (inst.instance_type, v.content) {
            (InstanceType::Container, VolumeContent::Filesystem) => {
                check_mount_point(&req.path)?;
                let clash = self
                    .volume_records(None)?
                    .into_iter()
                    .flat_map(|o| o.attached_to)
                    .any(|a| a.instance == req.instance && a.path == req.path);
                if clash {
                    return Err(Error::conflict(format!(
                        "another volume is mounted at {} in {:?}",
                        req.path, req.instance
                    )));
                }
                req.path.clone()
            }
            (InstanceType::Vm, VolumeContent::Block) => String::new(),
            (InstanceType::Container, VolumeContent::Block) => {
                return Err(Error::invalid(
                    "block volumes attach to VMs; give containers a filesystem volume",
                ))
            }
            (InstanceType::Vm, VolumeContent::Filesystem) => {
                return Err(Error::invalid(
                    "filesystem volumes attach to containers; give VMs a block volume (or \
                     export the volume over NFS)",
                ))
            }
        };
        if v.content == VolumeContent::Block && !v.attached_to.is_empty() {
            return Err(Error::conflict(format!(
                "block volume {name:?} is attached to {:?}; a disk has one writer",
                v.attached_to[0].instance
            )));
        }
        v.attached_to.push(VolumeAttachment {
            instance: req.instance.clone(),
            path,
        });
        self.put_volume(&v)?;
        if v.content == VolumeContent::Block {
            if let Err(e) = self.serve_disk(&req.instance, &v) {
                v.attached_to.retain(|a| a.instance != req.instance);
                self.put_volume(&v)?;
                return Err(e);
            }
        }
        Ok(self.volume_view(&v))
    }

    /// Detaches a volume from a stopped instance.
    pub fn detach(&self, pool: &str, name: &str, req: VolumeAttach) -> Result<StorageVolume> {
        let _g = self.busy();
        let mut v = self.volume_record(pool, name)?;
        if !v.attached_to.iter().any(|a| a.instance == req.instance) {
            return Err(Error::not_found(format!(
                "volume {name:?} is not attached to {:?}",
                req.instance
            )));
        }
        if v.root_of.as_deref() == Some(&req.instance) {
            return Err(Error::conflict(format!(
                "volume {name:?} is the root disk of {:?}; it goes with the instance",
                req.instance
            )));
        }
        if let Ok(i) = self.inner.store.instance_get(&req.instance) {
            if i.status != InstanceStatus::Stopped {
                return Err(Error::conflict(format!(
                    "instance {:?} is {:?}; stop it before detaching volumes",
                    i.name, i.status
                )));
            }
        }
        v.attached_to.retain(|a| a.instance != req.instance);
        self.put_volume(&v)?;
        self.stop_disk(&req.instance, &v);
        Ok(self.volume_view(&v))
    }

    /// Bind mounts for a container's filesystem volumes. For an unprivileged container
    /// (`shift` = host uid of its root) a volume's top directory still owned by host root is
    /// handed to the container's root, so it can write there.
    pub fn container_mounts(&self, instance: &str, shift: Option<u32>) -> Result<Vec<VolumeMount>> {
        let mut out = Vec::new();
        for v in self.volume_records(None)? {
            for a in v.attached_to.iter().filter(|a| a.instance == instance) {
                let source = self.driver(&v.pool)?.fs_path(&v.name)?;
                if let Some(base) = shift {
                    use std::os::unix::fs::MetadataExt;
                    let md = std::fs::metadata(&source)
                        .map_err(|e| Error::internal(format!("volume {}: {e}", v.key())))?;
                    if md.uid() == 0 && base != 0 {
                        std::os::unix::fs::chown(&source, Some(base), Some(base)).map_err(|e| {
                            Error::internal(format!("handing volume {} over: {e}", v.key()))
                        })?;
                    }
                }
                out.push(VolumeMount {
                    source,
                    destination: a.path.clone(),
                });
            }
        }
        out.sort_by(|a, b| a.destination.cmp(&b.destination));
        Ok(out)
    }

    /// Extra disks of a VM, in attachment order (its root volume first).
    pub fn vm_disks(&self, instance: &str) -> Result<Vec<vessel_vm::Disk>> {
        let mut vols: Vec<VolumeRecord> = self
            .volume_records(None)?
            .into_iter()
            .filter(|v| v.attached_to.iter().any(|a| a.instance == instance))
            .collect();
        vols.sort_by_key(|v| (v.root_of.is_none(), v.created_at.clone()));
        let mut out = Vec::new();
        for v in vols {
            let d = self.driver(&v.pool)?;
            out.push(match d.block(&v.name)? {
                BlockAccess::File(path) => vessel_vm::Disk {
                    path,
                    format: vessel_vm::DiskFormat::Raw,
                    media: vessel_vm::Media::Disk,
                    read_only: false,
                    nbd_export: None,
                },
                BlockAccess::Device(_) => {
                    self.serve_disk(instance, &v)?;
                    vessel_vm::Disk {
                        path: self.disk_socket(instance, &v),
                        format: vessel_vm::DiskFormat::Raw,
                        media: vessel_vm::Media::Disk,
                        read_only: false,
                        nbd_export: Some(v.key()),
                    }
                }
            });
        }
        Ok(out)
    }

    /// An instance is gone: its root volume is deleted, other volumes detached.
    pub fn instance_deleted(&self, instance: &str) -> Result<()> {
        let vols: Vec<VolumeRecord> = self
            .volume_records(None)?
            .into_iter()
            .filter(|v| v.attached_to.iter().any(|a| a.instance == instance))
            .collect();
        for mut v in vols {
            self.stop_disk(instance, &v);
            {
                let _g = self.busy();
                v.attached_to.retain(|a| a.instance != instance);
                self.put_volume(&v)?;
            }
            if v.root_of.as_deref() == Some(instance) {
                // Its snapshots go with it.
                self.volume_delete(&v.pool, &v.name)?;
            }
        }
        Ok(())
    }

    fn disk_socket(&self, instance: &str, v: &VolumeRecord) -> PathBuf {
        self.inner
            .run
            .join("disks")
            .join(format!("{instance}--{}--{}.sock", v.pool, v.name))
    }

    /// Serves a raid volume to one VM on a private unix socket (idempotent).
    pub(super) fn serve_disk(&self, instance: &str, v: &VolumeRecord) -> Result<()> {
        let key = format!("{instance}/{}", v.key());
        let mut disks = self.inner.disks.lock().unwrap_or_else(|p| p.into_inner());
        if disks.contains_key(&key) {
            return Ok(());
        }
        let BlockAccess::Device(dev) = self.driver(&v.pool)?.block(&v.name)? else {
            return Ok(());
        };
        let sock = self.disk_socket(instance, v);
        if let Some(dir) = sock.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::internal(format!("creating {}: {e}", dir.display())))?;
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711));
        }
        let _ = std::fs::remove_file(&sock);
        let server = vessel_nbd::NbdServer::new([vessel_nbd::NbdExport::new(v.key(), dev)])
            .map_err(|e| Error::internal(format!("NBD server: {}", chain(&e))))?;
        let handle = server
            .serve_unix(&sock)
            .map_err(|e| Error::internal(format!("serving {}: {}", sock.display(), chain(&e))))?;
        // Only QEMU (run as nobody) and root may connect.
        let _ = std::os::unix::fs::chown(&sock, Some(65534), Some(65534));
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o600));
        disks.insert(key, handle);
        Ok(())
    }

    pub(super) fn stop_disk(&self, instance: &str, v: &VolumeRecord) {
        let key = format!("{instance}/{}", v.key());
        if let Some(h) = self
            .inner
            .disks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key)
        {
            h.shutdown();
        }
    }
}

fn check_mount_point(path: &str) -> Result<()> {
    if !path.starts_with('/') || path == "/" {
        return Err(Error::invalid(format!(
            "mount point {path:?} must be an absolute path other than /"
        )));
    }
    if path.split('/').any(|c| c == ".." || c == ".") {
        return Err(Error::invalid(format!(
            "mount point {path:?} must not contain . or .."
        )));
    }
    for top in ["/proc", "/sys", "/dev"] {
        if path == top || path.starts_with(&format!("{top}/")) {
            return Err(Error::invalid(format!(
                "volumes cannot be mounted under {top}"
            )));
        }
    }
    Ok(())
}
