//! Attachments: volumes given to instances (bind mounts for containers, disks for VMs, raid
//! volumes served to QEMU over private NBD sockets), and what an instance's start and
//! deletion ask of storage.

use std::collections::BTreeMap;
use std::path::PathBuf;

use vessel_api::{InstanceType, InstanceVolume, StorageVolume, VolumeAttachment, VolumeContent};

use super::driver::BlockAccess;
use super::record::VolumeRecord;
use super::{StorageService, VolumeMount};
use crate::error::{chain, Error, Result};

impl StorageService {
    /// Attaches a volume to `instance` (of `instance_type`) at `path`. The instance's owner
    /// holds the instance's lock and has checked that it is stopped.
    pub fn attach(
        &self,
        pool: &str,
        name: &str,
        instance: &str,
        instance_type: InstanceType,
        path: &str,
    ) -> Result<StorageVolume> {
        let _g = self.busy();
        let mut v = self.volume_record(pool, name)?;
        let attachment = plan_attachment(
            &v,
            &self.volume_records(None)?,
            instance,
            instance_type,
            path,
        )?;
        v.attached_to.push(attachment);
        self.put_volume(&v)?;
        if v.content == VolumeContent::Block {
            if let Err(e) = self.serve_disk(instance, &v) {
                v.attached_to.retain(|a| a.instance != instance);
                self.put_volume(&v)?;
                return Err(e);
            }
        }
        Ok(self.volume_view(&v))
    }

    /// Detaches a volume from `instance`. The instance's owner holds the instance's lock and
    /// has checked that it is stopped (or gone).
    pub fn detach(&self, pool: &str, name: &str, instance: &str) -> Result<StorageVolume> {
        let _g = self.busy();
        let mut v = self.volume_record(pool, name)?;
        check_detach(&v, instance)?;
        v.attached_to.retain(|a| a.instance != instance);
        v.disk_owner = None;
        self.put_volume(&v)?;
        self.stop_disk(instance, &v);
        self.settle_disk_owner(&v)?;
        Ok(self.volume_view(&v))
    }

    /// Bind mounts for a container's filesystem volumes, with the first id their files are
    /// stored with. Volumes are stored with container ids (0-65535) and every unprivileged
    /// container sees them through an idmapped mount to its own range, so containers with
    /// different ranges share them; a volume from before that used the daemon's shared
    /// range (`shared_base`) keeps its files as they are and is mapped from that base.
    pub fn container_mounts(&self, instance: &str, shared_base: u32) -> Result<Vec<VolumeMount>> {
        let _g = self.busy();
        let mut out = Vec::new();
        for mut v in self.volume_records(None)? {
            let Some(a) = v
                .attached_to
                .iter()
                .find(|a| a.instance == instance)
                .cloned()
            else {
                continue;
            };
            if v.root_of.as_deref() == Some(instance) {
                continue; // its writable layer, mounted under its root, not bound
            }
            let source = self.driver(&v.pool)?.fs_path(&v.name)?;
            let id_base = match v.id_base {
                Some(b) => b,
                None => {
                    use std::os::unix::fs::MetadataExt;
                    let owner = std::fs::metadata(&source)
                        .map_err(|e| Error::internal(format!("volume {}: {e}", v.key())))?
                        .uid();
                    let b = stored_id_base(owner, shared_base);
                    v.id_base = Some(b);
                    self.put_volume(&v)?;
                    tracing::info!(volume = %v.key(), id_base = b, "recorded the ids a volume is stored with");
                    b
                }
            };
            out.push(VolumeMount {
                source,
                destination: a.path,
                id_base,
            });
        }
        out.sort_by(|a, b| a.destination.cmp(&b.destination));
        Ok(out)
    }

    /// Extra disks of a VM, in attachment order (its root volume first), given to the host
    /// uid `owner` its QEMU runs as (see [`StorageService::give_vm_disks`]). Of its root
    /// volumes only the one in `root_pool` (the pool its record names) counts: a move killed
    /// half-way leaves the old one attached until it is deleted.
    pub fn vm_disks(
        &self,
        instance: &str,
        root_pool: Option<&str>,
        owner: u32,
    ) -> Result<Vec<vessel_vm::Disk>> {
        self.give_vm_disks(instance, owner)?;
        let mut vols: Vec<VolumeRecord> = self
            .volume_records(None)?
            .into_iter()
            .filter(|v| v.attached_to.iter().any(|a| a.instance == instance))
            .filter(|v| {
                v.root_of.as_deref() != Some(instance) || Some(v.pool.as_str()) == root_pool
            })
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
                    rbd: None,
                },
                BlockAccess::Rbd(image) => vessel_vm::Disk {
                    path: PathBuf::new(),
                    format: vessel_vm::DiskFormat::Raw,
                    media: vessel_vm::Media::Disk,
                    read_only: false,
                    nbd_export: None,
                    // Its files written by give_vm_disks above.
                    rbd: Some(self.rbd_source(instance, &v, &image)),
                },
                BlockAccess::Device(_) => {
                    self.serve_disk(instance, &v)?;
                    vessel_vm::Disk {
                        path: self.disk_socket(instance, &v),
                        format: vessel_vm::DiskFormat::Raw,
                        media: vessel_vm::Media::Disk,
                        read_only: false,
                        nbd_export: Some(v.key()),
                        rbd: None,
                    }
                }
            });
        }
        Ok(out)
    }

    /// Every instance's attached volumes, by instance.
    pub fn volumes_by_instance(&self) -> Result<BTreeMap<String, Vec<InstanceVolume>>> {
        let mut out: BTreeMap<String, Vec<InstanceVolume>> = BTreeMap::new();
        for v in self.volume_records(None)? {
            for a in &v.attached_to {
                out.entry(a.instance.clone())
                    .or_default()
                    .push(InstanceVolume {
                        pool: v.pool.clone(),
                        volume: v.name.clone(),
                        content: match v.content {
                            VolumeContent::Filesystem => "filesystem",
                            VolumeContent::Block => "block",
                        }
                        .into(),
                        path: a.path.clone(),
                    });
            }
        }
        Ok(out)
    }

    /// The instances some volume is attached to.
    pub fn attachment_owners(&self) -> Result<std::collections::BTreeSet<String>> {
        Ok(self
            .volume_records(None)?
            .iter()
            .flat_map(|v| v.attached_to.iter().map(|a| a.instance.clone()))
            .collect())
    }

    /// Gives the block volumes attached to a VM to the host uid `owner` its QEMU runs as:
    /// the uid is recorded with each volume, its file or NBD socket becomes that uid's alone
    /// (0600). Called at every start of the VM and when a daemon adopts its QEMU.
    pub fn give_vm_disks(&self, instance: &str, owner: u32) -> Result<()> {
        let _g = self.busy();
        for mut v in self.volume_records(None)? {
            if v.content != VolumeContent::Block
                || !v.attached_to.iter().any(|a| a.instance == instance)
            {
                continue;
            }
            if v.disk_owner != Some(owner) {
                v.disk_owner = Some(owner);
                self.put_volume(&v)?;
            }
            self.settle_disk_owner(&v)?;
            match self.driver(&v.pool)?.block(&v.name)? {
                BlockAccess::Device(_) => self.serve_disk(instance, &v)?,
                BlockAccess::Rbd(image) => self.rbd_client(instance, &v, &image, owner)?,
                BlockAccess::File(_) => {}
            }
        }
        Ok(())
    }

    /// Gives a block volume's file and NBD sockets to its recorded owner (root when none),
    /// mode 0600.
    pub(super) fn settle_disk_owner(&self, v: &VolumeRecord) -> Result<()> {
        if v.content != VolumeContent::Block {
            return Ok(());
        }
        let owner = v.disk_owner.unwrap_or(0);
        let mut paths = Vec::new();
        if let BlockAccess::File(path) = self.driver(&v.pool)?.block(&v.name)? {
            paths.push(path);
        }
        for a in &v.attached_to {
            let sock = self.disk_socket(&a.instance, v);
            let (conf, key) = rbd_client_files(&sock);
            paths.extend([sock, conf, key].into_iter().filter(|p| p.exists()));
        }
        for p in paths {
            give(&p, owner).map_err(|e| {
                Error::internal(format!("giving {} to uid {owner}: {e}", p.display()))
            })?;
        }
        Ok(())
    }

    /// An instance is gone: its root volume is deleted, other volumes detached (and root's
    /// again).
    pub fn instance_deleted(&self, instance: &str) -> Result<()> {
        // Its root by `root_of` too: a delete that failed after detaching it (its pool's
        // backend away) finds it again when tried again.
        let vols: Vec<VolumeRecord> = self
            .volume_records(None)?
            .into_iter()
            .filter(|v| {
                v.attached_to.iter().any(|a| a.instance == instance)
                    || v.root_of.as_deref() == Some(instance)
            })
            .collect();
        for mut v in vols {
            self.stop_disk(instance, &v);
            {
                let _g = self.busy();
                v.attached_to.retain(|a| a.instance != instance);
                v.disk_owner = None;
                self.put_volume(&v)?;
                if v.root_of.as_deref() != Some(instance) {
                    self.settle_disk_owner(&v)?;
                }
            }
            if v.root_of.as_deref() == Some(instance) {
                // Its snapshots go with it.
                self.volume_delete(&v.pool, &v.name)?;
            }
        }
        Ok(())
    }

    /// Deletes stopped instance `instance`'s root volume in `pool` (after a move to another
    /// pool), with its snapshots.
    pub fn root_deleted(&self, pool: &str, instance: &str) -> Result<()> {
        let name = super::root_volume(instance);
        let Ok(mut v) = self.volume_record(pool, &name) else {
            return Ok(());
        };
        if v.root_of.as_deref() != Some(instance) {
            return Err(Error::conflict(format!(
                "volume {pool}/{name} is not the root of {instance}"
            )));
        }
        self.stop_disk(instance, &v);
        {
            let _g = self.busy();
            v.attached_to.retain(|a| a.instance != instance);
            v.disk_owner = None;
            self.put_volume(&v)?;
        }
        self.volume_delete(pool, &name).map(drop)
    }

    /// Gives a stopped instance's volume attachments its new name. Its root volume, if it
    /// has one in a pool, is named after it and stays so (`root_of` says whose it is).
    pub fn instance_renamed(&self, old: &str, new: &str) -> Result<()> {
        for mut v in self.volume_records(None)? {
            let mine = v.attached_to.iter().any(|a| a.instance == old)
                || v.root_of.as_deref() == Some(old);
            if !mine {
                continue;
            }
            // A raid volume's private NBD server is named after the instance (its socket
            // too): stopped here, served again under the new name at the next start.
            self.stop_disk(old, &v);
            let _g = self.busy();
            for a in v.attached_to.iter_mut().filter(|a| a.instance == old) {
                a.instance = new.to_string();
            }
            if v.root_of.as_deref() == Some(old) {
                v.root_of = Some(new.to_string());
            }
            self.put_volume(&v)?;
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
        if self
            .inner
            .stopping
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            return Err(Error::conflict(
                "the daemon is stopping; the next one serves this disk",
            ));
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
        // Only the VM's QEMU (its recorded owner) and root may connect.
        let owner = v.disk_owner.unwrap_or(0);
        if let Err(e) = give(&sock, owner) {
            handle.shutdown();
            return Err(Error::internal(format!(
                "giving {} to uid {owner}: {e}",
                sock.display()
            )));
        }
        disks.insert(key, handle);
        Ok(())
    }

    pub(super) fn stop_disk(&self, instance: &str, v: &VolumeRecord) {
        let (conf, key) = rbd_client_files(&self.disk_socket(instance, v));
        let _ = std::fs::remove_file(conf);
        let _ = std::fs::remove_file(key);
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

    /// Writes what VM `instance`'s QEMU (run as `owner`) needs to open the RBD image of
    /// volume `v`: a configuration naming the monitors and the user's key, in files of its
    /// own beside where a raid volume's socket would be, `owner`'s alone.
    fn rbd_client(
        &self,
        instance: &str,
        v: &VolumeRecord,
        image: &super::ceph::RbdImage,
        owner: u32,
    ) -> Result<()> {
        let (conf_text, key_text) = image.client_files()?;
        let (conf, key) = rbd_client_files(&self.disk_socket(instance, v));
        for (path, text) in [(&conf, conf_text), (&key, key_text)] {
            write_private(path, text.as_bytes(), owner)
                .map_err(|e| Error::internal(format!("writing {}: {e}", path.display())))?;
        }
        Ok(())
    }

    /// The RBD image of volume `v` as VM `instance`'s QEMU opens it, through the files
    /// [`StorageService::rbd_client`] writes.
    fn rbd_source(
        &self,
        instance: &str,
        v: &VolumeRecord,
        image: &super::ceph::RbdImage,
    ) -> vessel_vm::RbdSource {
        let (conf, key_file) = rbd_client_files(&self.disk_socket(instance, v));
        vessel_vm::RbdSource {
            pool: image.pool.clone(),
            image: image.image.clone(),
            user: image.user.clone(),
            conf,
            key_file,
        }
    }
}

/// The Ceph configuration and key files of an RBD disk whose NBD socket would be `sock`.
fn rbd_client_files(sock: &std::path::Path) -> (PathBuf, PathBuf) {
    (
        sock.with_extension("ceph.conf"),
        sock.with_extension("ceph.key"),
    )
}

/// Writes `path` anew as `owner`'s alone (0600 from its creation on).
fn write_private(path: &std::path::Path, data: &[u8], owner: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
        // Searchable, not listable, as for the disks' sockets.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))?;
    }
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(data)?;
    give(path, owner)
}

/// Makes a file or socket `owner`'s (uid and gid) alone: mode 0600.
fn give(path: &std::path::Path, owner: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::os::unix::fs::chown(path, Some(owner), Some(owner))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

/// The first id a volume from before per-container ranges is stored with, from the owner of
/// its top directory: such volumes were handed to the daemon's shared range at their first
/// use by an unprivileged container (their files then have shared-range owners); one whose
/// top directory is another owner (host root: only privileged containers used it) holds
/// plain ids.
pub(super) fn stored_id_base(top_owner: u32, shared_base: u32) -> u32 {
    if top_owner == shared_base {
        shared_base
    } else {
        0
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

/// The attachment of volume `v` to `instance` (of `instance_type`) at `path`, given every
/// volume (`all`): filesystem volumes mount into containers at a free mount point, block
/// volumes become a VM's disk and have one writer.
pub(super) fn plan_attachment(
    v: &VolumeRecord,
    all: &[VolumeRecord],
    instance: &str,
    instance_type: InstanceType,
    path: &str,
) -> Result<VolumeAttachment> {
    let name = &v.name;
    if v.attached_to.iter().any(|a| a.instance == instance) {
        return Err(Error::conflict(format!(
            "volume {name:?} is already attached to {instance:?}"
        )));
    }
    if let Some(owner) = &v.root_of {
        return Err(Error::conflict(format!(
            "volume {name:?} is the root disk of {owner:?}; it belongs to that instance alone"
        )));
    }
    let path = match (instance_type, v.content) {
        (InstanceType::Container, VolumeContent::Filesystem) => {
            check_mount_point(path)?;
            let clash = all
                .iter()
                .flat_map(|o| &o.attached_to)
                .any(|a| a.instance == instance && a.path == path);
            if clash {
                return Err(Error::conflict(format!(
                    "another volume is mounted at {path} in {instance:?}"
                )));
            }
            path.to_string()
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
    Ok(VolumeAttachment {
        instance: instance.to_string(),
        path,
    })
}

/// Checks that volume `v` can be detached from `instance`: it is attached there and is not
/// the instance's root disk.
pub(super) fn check_detach(v: &VolumeRecord, instance: &str) -> Result<()> {
    let name = &v.name;
    if !v.attached_to.iter().any(|a| a.instance == instance) {
        return Err(Error::not_found(format!(
            "volume {name:?} is not attached to {instance:?}"
        )));
    }
    if v.root_of.as_deref() == Some(instance) {
        return Err(Error::conflict(format!(
            "volume {name:?} is the root disk of {instance:?}; it goes with the instance"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::record::fixture::volume;
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn old_volumes_keep_the_ids_they_were_stored_with() {
        assert_eq!(stored_id_base(1_000_000, 1_000_000), 1_000_000);
        assert_eq!(stored_id_base(0, 1_000_000), 0);
        assert_eq!(stored_id_base(1000, 1_000_000), 0);
    }

    #[test]
    fn mount_points_stay_inside_the_container() {
        for ok in ["/data", "/srv/a-b/c", "/devices"] {
            check_mount_point(ok).unwrap();
        }
        for bad in [
            "", "data", "/", "/a/../b", "/a/./b", "/proc", "/sys/fs", "/dev/shm",
        ] {
            assert!(check_mount_point(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn filesystem_volumes_mount_into_containers_block_volumes_into_one_vm() {
        let fs = VolumeContent::Filesystem;
        let data = volume("p", "data", fs, &[("c1", "/data")]);
        let logs = volume("p", "logs", fs, &[]);
        let disk = volume("p", "disk", VolumeContent::Block, &[]);
        let used = volume("p", "used", VolumeContent::Block, &[("v1", "")]);
        let all = [data.clone(), logs.clone(), disk.clone(), used.clone()];
        let ct = InstanceType::Container;
        let vm = InstanceType::Vm;
        let a = plan_attachment(&logs, &all, "c1", ct, "/logs").unwrap();
        assert_eq!((a.instance.as_str(), a.path.as_str()), ("c1", "/logs"));
        let a = plan_attachment(&data, &all, "c2", ct, "/data").unwrap();
        assert_eq!(a.path, "/data", "another container may share it");
        let a = plan_attachment(&disk, &all, "v1", vm, "/ignored").unwrap();
        assert_eq!(a.path, "", "a disk has no mount point");
        for (v, inst, ty, path, kind, want) in [
            (
                &data,
                "c1",
                ct,
                "/other",
                ErrorKind::Conflict,
                "already attached",
            ),
            (
                &logs,
                "c1",
                ct,
                "/data",
                ErrorKind::Conflict,
                "another volume is mounted at /data",
            ),
            (
                &logs,
                "c1",
                ct,
                "/proc/x",
                ErrorKind::Invalid,
                "under /proc",
            ),
            (
                &disk,
                "c1",
                ct,
                "/d",
                ErrorKind::Invalid,
                "block volumes attach to VMs",
            ),
            (
                &logs,
                "v1",
                vm,
                "",
                ErrorKind::Invalid,
                "filesystem volumes attach to containers",
            ),
            (&used, "v2", vm, "", ErrorKind::Conflict, "one writer"),
        ] {
            let e = plan_attachment(v, &all, inst, ty, path).unwrap_err();
            assert_eq!(e.kind, kind, "{e}");
            assert!(e.message.contains(want), "{want:?} not in {e}");
        }
    }

    #[test]
    fn a_root_disk_goes_with_its_vm() {
        let mut root = volume("p", "v1-root", VolumeContent::Block, &[("v1", "")]);
        root.root_of = Some("v1".into());
        let e = check_detach(&root, "v1").unwrap_err();
        assert!(e.message.contains("root disk"), "{e}");
        // Nobody else gets it (a container's root is a filesystem volume).
        let mut fs_root = volume("p", "c1-root", VolumeContent::Filesystem, &[("c1", "")]);
        fs_root.root_of = Some("c1".into());
        let all = [fs_root.clone()];
        let e = plan_attachment(&fs_root, &all, "c2", InstanceType::Container, "/mnt").unwrap_err();
        assert!(e.message.contains("root disk of \"c1\""), "{e}");
        let e = check_detach(&root, "v2").unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotFound);
        root.root_of = None;
        check_detach(&root, "v1").unwrap();
    }
}
