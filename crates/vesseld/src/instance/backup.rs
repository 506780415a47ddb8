//! An instance's backups, taken and restored by its owner under its lock.
//!
//! A backup holds the instance's record (`instance`, with the keys it set itself), and its
//! data: a container's writable layer as a file tree (`rootfs`, owners as the host sees
//! them, with the id shift noted in the labels), a VM's root disk as a disk (`root.qcow2`,
//! its copy-on-write overlay over the image's disk, or `root`, its volume in a pool). A
//! running instance is paused while its data is read (a container's cgroup frozen, a VM's
//! vCPUs stopped, which also flushes QEMU's disk caches), so what is read is consistent; a
//! file unchanged since the instance's last backup is not read again, so later pauses are
//! short.
//!
//! A restore makes a new instance (the normal creation, rolled back whole on any failure)
//! and fills its files from the backup before it first starts, each chunk checked as it is
//! read; owners of a container's files move to the new instance's id range. The instance's
//! image must be on this host (same fingerprint).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use vessel_api::{Instance, InstanceCreate, InstanceStatus, InstanceType, Operation};
use vessel_backup::{Index, Store, Writer};
use vessel_vm::RunningVm;

use super::InstanceService;
use crate::backup::error as store_error;
use crate::error::{Error, Result};
use crate::operations::OpHandle;

/// The `instance` archive.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    instance: Instance,
    /// Keys it set itself (the rest came from profiles).
    #[serde(default)]
    own_config: BTreeMap<String, String>,
    /// The networks and volumes its profiles gave it.
    #[serde(default)]
    from_profiles: vessel_api::ProfileDevices,
}

/// Names of the dirty bitmaps that backups start: `PREFIX`, the store's id, `-`, the
/// backup's id (unique within its group in its store).
const BITMAP_PREFIX: &str = "vessel-backup-";
/// The label of a VM's backup naming the dirty bitmap started when it was taken.
const BITMAP_LABEL: &str = "disk.bitmap";

/// A dirty bitmap started by a backup being taken: once the backup is finished, [`Tracking::keep`]
/// keeps it and removes the ones before; dropped without that, it is removed.
struct Tracking {
    vm: std::sync::Arc<RunningVm>,
    disk: std::path::PathBuf,
    /// `BITMAP_PREFIX` and the store's id: the bitmaps of backups into this store.
    prefix: String,
    next: String,
    done: bool,
}

impl Tracking {
    fn keep(mut self) {
        self.done = true;
        if let Ok(names) = self.vm.dirty_bitmaps(&self.disk) {
            for n in names
                .iter()
                .filter(|n| n.starts_with(&self.prefix) && **n != self.next)
            {
                let _ = self.vm.remove_bitmap(&self.disk, n);
            }
        }
    }
}

impl Drop for Tracking {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.vm.remove_bitmap(&self.disk, &self.next);
        }
    }
}

/// Progress of reading or writing `total` bytes (0: not known), as an operation shows it.
fn progress<'a>(
    op: &'a OpHandle,
    what: &'a str,
    from: u8,
    to: u8,
    total: u64,
) -> impl FnMut(u64) + 'a {
    let (mut last_pct, mut last_done) = (u8::MAX, 0u64);
    move |done: u64| {
        let pct = (done.min(total) * u64::from(to - from))
            .checked_div(total)
            .map_or(from, |p| from + p as u8);
        if pct != last_pct || done >= last_done + (64 << 20) {
            (last_pct, last_done) = (pct, done);
            op.progress(
                Some(pct),
                &format!("{what}: {}", vessel_api::size::format_size(done)),
            );
        }
    }
}

/// Un-pauses an instance paused for a backup, a snapshot or a copy when dropped.
pub(super) struct Paused<'a> {
    svc: &'a InstanceService,
    inst: &'a Instance,
}

impl Drop for Paused<'_> {
    fn drop(&mut self) {
        let r = match self.inst.instance_type {
            InstanceType::Container => self.svc.driver.resume(&self.inst.name),
            InstanceType::Vm => match self.svc.vms.get(&self.inst.name) {
                Some(vm) => vm
                    .resume()
                    .map_err(|e| Error::internal(crate::error::chain(&e))),
                None => Ok(()),
            },
        };
        if let Err(e) = r {
            tracing::warn!(instance = %self.inst.name, error = %e, "resuming after a pause");
        }
    }
}

impl InstanceService {
    /// Pauses `inst` if it runs (a container's cgroup frozen, a VM's vCPUs stopped, which
    /// also flushes QEMU's disk caches) until the guard drops; a frozen or stopped instance
    /// is left as it is.
    pub(super) fn pause_while<'a>(&'a self, inst: &'a Instance) -> Result<Option<Paused<'a>>> {
        if inst.status != InstanceStatus::Running {
            return Ok(None);
        }
        let name = &inst.name;
        match inst.instance_type {
            InstanceType::Container => self.driver.pause(name)?,
            InstanceType::Vm => self
                .vms
                .get(name)
                .ok_or_else(|| Error::conflict(format!("{name} is not running here")))?
                .pause()
                .map_err(|e| {
                    Error::internal(format!("pausing {name}: {}", crate::error::chain(&e)))
                })?,
        }
        Ok(Some(Paused { svc: self, inst }))
    }
}

/// The instance a backup is of, as it was (blocking).
pub fn backed_up(store: &Store, index: &Index) -> Result<Instance> {
    let raw = store.read_blob(index, "instance").map_err(store_error)?;
    let rec: Record = serde_json::from_slice(&raw)
        .map_err(|e| Error::conflict(format!("the backup's instance record: {e}")))?;
    let mut inst = rec.instance;
    inst.own_config = rec.own_config;
    inst.from_profiles = rec.from_profiles;
    Ok(inst)
}

impl InstanceService {
    /// Starts the operation that backs instance `name` up into `store`; returns it and the
    /// backup's id.
    /// With `snapshots`, the instance's snapshots go in too (for a portable archive). `once`:
    /// the store is used once (an archive's), so a running VM's dirty bitmap started for the
    /// next backup into it is removed again, not left in QEMU for good.
    pub fn backup(
        &self,
        name: &str,
        store: Store,
        snapshots: bool,
        once: bool,
    ) -> Result<(Operation, String)> {
        let inst = self.get_stored(name)?;
        if matches!(
            inst.status,
            InstanceStatus::Creating | InstanceStatus::Error
        ) {
            return Err(Error::conflict(format!(
                "instance {name} is {}: nothing consistent to back up",
                inst.status.as_str()
            )));
        }
        let writer = store.writer(name).map_err(store_error)?;
        let id = writer.id().to_string();
        let (svc, n) = (self.clone(), name.to_string());
        let op = self.ops.spawn(
            format!("Backing up instance {name}"),
            vec![super::path_of(name), format!("/1.0/backups/{name}/{id}")],
            false,
            move |op| async move {
                let lock = svc.lock_for(&n);
                let _g = lock.lock().await;
                let inst = svc.get_stored(&n)?;
                tokio::task::spawn_blocking(move || {
                    svc.backup_locked(&inst, writer, (snapshots, once), &[], &op)
                })
                .await
                .map_err(|e| Error::internal(format!("backup task: {e}")))?
            },
        );
        Ok((op, id))
    }

    /// Takes the backup; the caller holds the instance's lock (blocking). `(snapshots, once)`
    /// as for [`InstanceService::backup`]; `carried`: the volumes a move takes along (see
    /// `carry.rs`).
    pub(super) fn backup_locked(
        &self,
        inst: &Instance,
        mut w: Writer,
        (snapshots, once): (bool, bool),
        carried: &[(crate::storage::CarriedVolume, crate::storage::CarriedData)],
        op: &OpHandle,
    ) -> Result<()> {
        let name = &inst.name;
        // Its NICs and volumes as they are, for a restore to know its networks.
        let mut whole = inst.clone();
        self.with_devices(std::slice::from_mut(&mut whole))?;
        let record = Record {
            instance: whole,
            own_config: inst.own_config.clone(),
            from_profiles: inst.from_profiles.clone(),
        };
        w.blob(
            "instance",
            &serde_json::to_vec_pretty(&record).expect("an instance serializes"),
        )
        .map_err(store_error)?;
        let mut labels = BTreeMap::from([
            (
                "type".to_string(),
                match inst.instance_type {
                    InstanceType::Container => "container",
                    InstanceType::Vm => "virtual-machine",
                }
                .to_string(),
            ),
            ("image".to_string(), inst.image.clone()),
        ]);
        let mut tracking = None;
        let running = matches!(
            inst.status,
            InstanceStatus::Running | InstanceStatus::Frozen
        );
        // Paused only if it was not already (a frozen instance stays frozen); a VM whose
        // disk is a qcow2 image is not: its disk is read from an internal snapshot.
        let snapshot_read = inst.instance_type == InstanceType::Vm && inst.storage.is_none();
        let _paused = if snapshot_read {
            None
        } else {
            op.progress(Some(5), "pausing the instance");
            self.pause_while(inst)?
        };
        match inst.instance_type {
            InstanceType::Container => {
                // A running container's root disk is mounted already.
                let (upper, _disk) = if running {
                    let upper = match self.root_place(inst)? {
                        super::root_disk::RootPlace::Shared => self.driver.dir(name).join("upper"),
                        super::root_disk::RootPlace::Disk(_) => {
                            self.driver.disk_mount(name).join("upper")
                        }
                    };
                    (upper, None)
                } else {
                    self.open_writable(inst)?
                };
                let mut p = progress(op, "reading files", 10, 10, 0);
                w.tree("rootfs", &upper, &mut p).map_err(store_error)?;
                if let Some(shift) = self.driver.shift(inst) {
                    labels.insert("shift".into(), shift.to_string());
                }
            }
            InstanceType::Vm => {
                // A VM without a disk of its own (its image boots from memory, or it never
                // started and its overlay is not made yet) is its record alone.
                match self.vm_root_file(inst)? {
                    Some((_, file)) if snapshot_read => {
                        tracking = self.vm_disk_backup(inst, &file, running, &mut w, op)?;
                        if let Some(t) = &tracking {
                            labels.insert(BITMAP_LABEL.into(), t.next.clone());
                        }
                    }
                    Some((archive, file)) => {
                        let total = std::fs::metadata(&file).map_or(0, |m| m.len());
                        let mut p = progress(op, "reading the disk", 10, 95, total);
                        w.block(archive, &file, &mut p).map_err(store_error)?;
                    }
                    None => {}
                }
            }
        }
        drop(_paused);
        if !carried.is_empty() {
            self.backup_carried(carried, &mut w, op)?;
        }
        if snapshots {
            op.progress(Some(95), "reading its snapshots");
            let left = self.backup_snapshots(inst, &mut w)?;
            if !left.is_empty() {
                // Pool snapshots and saved VM state stay where they are.
                labels.insert("snapshots.left".into(), left.join(","));
            }
        }
        op.progress(Some(97), "writing the index");
        // What it cost: bytes read from the instance (what did not change since the backup
        // before is not read again).
        labels.insert("read".into(), w.stats().read.to_string());
        let (index, stats) = w.finish(labels).map_err(store_error)?;
        match tracking {
            // Dropped, it removes its bitmap: no later backup goes into a store used once.
            Some(t) if once => drop(t),
            Some(t) => t.keep(),
            None => {}
        }
        tracing::info!(
            instance = %name,
            backup = %index.id,
            bytes = stats.bytes,
            read = stats.read,
            new_bytes = stats.new_bytes,
            files_reused = stats.files_reused,
            "backed up"
        );
        self.events.lifecycle(
            "instance-backup-created",
            &format!("/1.0/backups/{name}/{}", index.id),
        );
        Ok(())
    }

    /// Backs up a VM's qcow2 root disk as the guest sees it (`root.raw`). Of a stopped VM:
    /// as it is, or taken unread from the backup before if the image file has not changed
    /// since. Of a running VM (the guest runs on meanwhile): if QEMU tracks what changed
    /// since the backup before (its dirty bitmap), only that is read, copied out by QEMU at
    /// one point in time; else the whole disk, from an internal snapshot taken for it. Either
    /// way a new bitmap starts at that point, for the next backup; the returned guard keeps
    /// it if the backup is finished, and removes it if not. Disks of instances made from one
    /// image share the image's chunks.
    fn vm_disk_backup(
        &self,
        inst: &Instance,
        disk: &Path,
        running: bool,
        w: &mut Writer,
        op: &OpHandle,
    ) -> Result<Option<Tracking>> {
        const ARCHIVE: &str = "root.raw";
        let Some(vm) = running.then(|| self.vms.get(&inst.name)).flatten() else {
            let stamp = vessel_backup::stamp(disk).map_err(store_error)?;
            if w.reuse_disk(ARCHIVE, &stamp).map_err(store_error)? {
                op.progress(Some(90), "the disk is unchanged since the backup before");
                return Ok(None);
            }
            self.vm_disk_read(inst, disk, None, Some(stamp), w, op)?;
            return Ok(None);
        };
        // Bitmaps are per store: backups into another store (an export's, an admin's) start
        // and drop their own, and leave this one's be.
        let prefix = format!("{BITMAP_PREFIX}{}-", w.store().id());
        let next = format!("{prefix}{}", w.id());
        let since = w
            .base()
            .and_then(|b| b.labels.get(BITMAP_LABEL))
            .filter(|_| w.base_disk(ARCHIVE).is_some())
            .cloned()
            .filter(|b| vm.dirty_bitmaps(disk).is_ok_and(|have| have.contains(b)));
        let tracking = Tracking {
            vm: vm.clone(),
            disk: disk.to_path_buf(),
            prefix,
            next,
            done: false,
        };
        if let Some(since) = since {
            op.progress(Some(10), "copying out what changed since the backup before");
            let target = disk.with_file_name(format!(".{}.qcow2", tracking.next));
            let r = (|| -> Result<()> {
                let (size, extents) = vm
                    .copy_changes(disk, &since, &tracking.next, &target)
                    .map_err(|e| Error::conflict(crate::error::chain(&e)))?;
                let f = std::fs::File::open(&target)
                    .map_err(|e| Error::internal(format!("{}: {e}", target.display())))?;
                let dirty: Vec<(u64, u64)> = extents.iter().map(|e| (e.start, e.len)).collect();
                let mut read = |at: u64, buf: &mut [u8]| {
                    use std::os::unix::fs::FileExt;
                    let i = extents.partition_point(|e| e.start <= at) - 1;
                    match extents[i].at {
                        Some(o) => f.read_exact_at(buf, o + (at - extents[i].start)),
                        None => {
                            buf.fill(0);
                            Ok(())
                        }
                    }
                };
                let mut p = progress(op, "storing the changes", 40, 95, size);
                w.block_changed(ARCHIVE, size, &dirty, &target, &mut read, &mut p)
                    .map_err(store_error)?;
                Ok(())
            })();
            let _ = std::fs::remove_file(&target);
            match r {
                Ok(()) => return Ok(Some(tracking)),
                // The disk grew, or the backup before cannot be built on: read it all.
                Err(e) => {
                    tracing::warn!(instance = %inst.name, error = %e, "reading what changed; reading the whole disk");
                    let _ = vm.remove_bitmap(disk, &tracking.next);
                }
            }
        }
        self.vm_disk_read(inst, disk, Some((&vm, &tracking.next)), None, w, op)?;
        Ok(Some(tracking))
    }

    /// Reads a VM's qcow2 disk whole into archive `root.raw`: of a running VM (`vm`) from
    /// an internal snapshot taken with dirty bitmap `bitmap` started, else as it is.
    fn vm_disk_read(
        &self,
        inst: &Instance,
        disk: &Path,
        vm: Option<(&RunningVm, &str)>,
        source: Option<String>,
        w: &mut Writer,
        op: &OpHandle,
    ) -> Result<()> {
        let tag = format!(
            "backup-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        if let Some((vm, bitmap)) = vm {
            op.progress(Some(10), "taking a disk snapshot");
            vm.snapshot_disk_tracked(disk, &tag, bitmap)
                .map_err(|e| Error::conflict(crate::error::chain(&e)))?;
        }
        let raw = disk.with_file_name(format!(".{tag}.raw"));
        let r = (|| -> Result<()> {
            op.progress(Some(20), "reading the disk");
            let mut cmd = std::process::Command::new("qemu-img");
            cmd.args(["convert", "-U", "-O", "raw"]);
            if vm.is_some() {
                cmd.arg("-l").arg(format!("snapshot.name={tag}"));
            }
            let out = cmd
                .arg(disk)
                .arg(&raw)
                .output()
                .map_err(|e| Error::internal(format!("qemu-img convert: {e}")))?;
            if !out.status.success() {
                return Err(Error::internal(format!(
                    "reading the disk of {}: {}",
                    inst.name,
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
            let total = std::fs::metadata(&raw).map_or(0, |m| m.len());
            let mut p = progress(op, "storing the disk", 40, 95, total);
            w.block_stamped("root.raw", &raw, source, &mut p)
                .map_err(store_error)?;
            Ok(())
        })();
        let _ = std::fs::remove_file(&raw);
        if let Some((vm, bitmap)) = vm {
            if let Err(e) = vm.delete_disk_snapshot(disk, &tag) {
                tracing::warn!(instance = %inst.name, error = %crate::error::chain(&e), "deleting a backup's disk snapshot");
            }
            if r.is_err() {
                let _ = vm.remove_bitmap(disk, bitmap);
            }
        }
        r
    }

    /// A VM's root disk, if it has one: the archive it goes to and its file.
    fn vm_root_file(&self, inst: &Instance) -> Result<Option<(&'static str, std::path::PathBuf)>> {
        match &inst.storage {
            Some(pool) => {
                let vol = crate::storage::root_volume(&inst.name);
                let file = self.storage.volume_file(pool, &vol)?.ok_or_else(|| {
                    Error::conflict(format!(
                        "the root volume of {} in pool {pool:?} is not a file this daemon \
                         can read as a disk; backups of VMs on such pools are not supported",
                        inst.name
                    ))
                })?;
                Ok(Some(("root", file)))
            }
            None => {
                let file = self.vms.instances_dir.join(&inst.name).join("root.qcow2");
                Ok(file.is_file().then_some(("root.qcow2", file)))
            }
        }
    }

    /// Starts the operation that makes instance `name` (qualified) from backup `index` of
    /// `store`, and starts it when `start`; `carried`: with the volumes a move's backup
    /// carries (a member moving it here).
    pub fn restore(
        &self,
        store: Store,
        index: Index,
        name: &str,
        start: bool,
        carried: bool,
    ) -> Result<Operation> {
        let old = backed_up(&store, &index)?;
        if old.instance_type == InstanceType::Container {
            index.archive("rootfs").map_err(store_error)?;
        }
        // Its snapshots are checked before anything is made (they are made last).
        let snapshots = super::archive_snapshots::carried_list(&store, &index, &old)?;
        self.images.by_fingerprint(&old.image).map_err(|_| {
            Error::conflict(format!(
                "the backup's image {} is not on this host: bring it here first (vessel \
                 image export on the host it is on, vessel image import here)",
                crate::image::short(&old.image)
            ))
        })?;
        let mut req = self.recreate_request(&old, name, start);
        // On the networks of its new project only, by their names there: a backup or an
        // archive names its networks as its old project did (or as anyone wrote them).
        let project = crate::project::split(name).0;
        req.networks = old
            .nics
            .iter()
            .map(|n| crate::project::qualify(project, crate::project::split(&n.network).1))
            .filter(|n| self.networks.get(n).is_ok())
            .collect();
        req.no_network = req.networks.is_empty();
        // A member's move keeps its profiles (they are the cluster's), with its own keys.
        let (own, from) = if carried {
            req.profiles = self.profiles_here(&old.profiles);
            (old.own_config.clone(), old.from_profiles.clone())
        } else {
            Default::default()
        };
        let shift: Option<u32> = index.labels.get("shift").and_then(|s| s.parse().ok());
        let fill: super::create::Fill = Box::new(move |svc, inst, op| {
            svc.restore_data(&store, &index, inst, shift, op)?;
            if let Some(list) = &snapshots {
                svc.restore_snapshots(&store, &index, inst, shift, list, op)?;
            }
            if carried {
                svc.restore_carried(&store, &index, inst, op)?;
            }
            Ok(())
        });
        self.create_with(req, own, from, Some(fill))
    }

    /// The request that makes instance `name` as `old` was: its type, image, limits,
    /// command, environment and keys (its own; profiles are not taken along), on the
    /// networks of its that exist here, and no volumes.
    pub(super) fn recreate_request(
        &self,
        old: &Instance,
        name: &str,
        start: bool,
    ) -> InstanceCreate {
        // Networks it had that exist here; none else.
        let networks: Vec<String> = old
            .nics
            .iter()
            .map(|n| n.network.clone())
            .filter(|n| self.networks.get(n).is_ok())
            .collect();
        InstanceCreate {
            name: name.to_string(),
            image: old.image.clone(),
            instance_type: old.instance_type,
            privileged: old.privileged,
            idmap_isolated: match old.instance_type {
                InstanceType::Container if !old.privileged => {
                    Some(old.idmap.is_none_or(|m| m.isolated))
                }
                _ => None,
            },
            limits: old.limits.clone(),
            start,
            command: (!old.command.is_empty()).then(|| old.command.clone()),
            environment: old.environment.clone(),
            ssh_keys: old.ssh_keys.clone(),
            storage: old.storage.clone(),
            no_network: networks.is_empty(),
            networks,
            profiles: Vec::new(),
            config: old.config.clone(),
            volumes: Vec::new(),
        }
    }

    /// Of `profiles` (qualified), those this member has, in order.
    pub(super) fn profiles_here(&self, profiles: &[String]) -> Vec<String> {
        let known = crate::profile::ProfileService::new(self.store.clone());
        profiles
            .iter()
            .filter(|p| known.get(p).is_ok())
            .cloned()
            .collect()
    }

    /// A VM's image disk and its format as the image records it (never probed: a raw
    /// disk's bytes may look like a qcow2 naming a host file): what its qcow2 overlays are
    /// made over.
    pub(super) fn image_backing(&self, inst: &Instance) -> Result<(std::path::PathBuf, String)> {
        let image = self.images.by_fingerprint(&inst.image)?;
        let (backing, format) =
            super::vm::image_disk_format(&self.images.image_dir(&image.fingerprint))
                .ok_or_else(|| Error::conflict("the instance's image has no disk"))?;
        Ok((backing, format.to_string()))
    }

    /// Makes a VM's root disk from `root.raw`: an overlay over its image's disk holding
    /// what differs from it.
    fn restore_vm_raw(
        &self,
        store: &Store,
        index: &Index,
        inst: &Instance,
        op: &OpHandle,
    ) -> Result<()> {
        let user = super::vm_files::qemu_user(inst)?;
        let dir = self.vms.instances_dir.join(&inst.name);
        let disk = dir.join("root.qcow2");
        let raw = dir.join(".root.raw.restoring");
        let _ = std::fs::remove_file(&raw);
        let a = index.archive("root.raw").map_err(store_error)?;
        let mut p = progress(op, "restoring the disk", 30, 80, a.size);
        let r = (|| -> Result<()> {
            store
                .restore_block(index, "root.raw", &raw, &mut p)
                .map_err(store_error)?;
            let (backing, format) = self.image_backing(inst)?;
            let _ = std::fs::remove_file(&disk);
            let out = std::process::Command::new("qemu-img")
                .args(["convert", "-q", "-f", "raw", "-O", "qcow2", "-B"])
                .arg(&backing)
                .args(["-F", &format])
                .arg(&raw)
                .arg(&disk)
                .output()
                .map_err(|e| Error::internal(format!("qemu-img convert: {e}")))?;
            if !out.status.success() {
                let _ = std::fs::remove_file(&disk);
                return Err(Error::internal(format!(
                    "making the disk of {}: {}",
                    inst.name,
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
            use std::os::unix::fs::PermissionsExt;
            std::os::unix::fs::chown(&disk, Some(user.uid), Some(user.gid))
                .and_then(|()| {
                    std::fs::set_permissions(&disk, std::fs::Permissions::from_mode(0o600))
                })
                .map_err(|e| Error::internal(format!("{}: {e}", disk.display())))
        })();
        let _ = std::fs::remove_file(&raw);
        r
    }

    /// Fills a new instance's files from a backup (blocking; inside its creation).
    fn restore_data(
        &self,
        store: &Store,
        index: &Index,
        inst: &Instance,
        shift: Option<u32>,
        op: &OpHandle,
    ) -> Result<()> {
        match inst.instance_type {
            InstanceType::Container => {
                let (upper, _disk) = self.open_writable(inst)?;
                let empty = std::fs::read_dir(&upper)
                    .map(|mut d| d.next().is_none())
                    .unwrap_or(false);
                if !empty {
                    return Err(Error::internal(format!(
                        "the new writable layer {} is not empty",
                        upper.display()
                    )));
                }
                std::fs::remove_dir(&upper)
                    .map_err(|e| Error::internal(format!("{}: {e}", upper.display())))?;
                let total = index.archive("rootfs").map_err(store_error)?.size;
                let mut p = progress(op, "restoring files", 30, 90, total);
                // Device nodes only for a privileged container (whiteouts for any): one
                // of an archive's choosing would give the container the host's disks.
                store
                    .restore_tree_as(index, "rootfs", &upper, inst.privileged, &mut p)
                    .map_err(store_error)?;
                if let (Some(from), Some(to)) = (shift, self.driver.shift(inst)) {
                    super::remap::remap(&upper, from, to).map_err(|e| {
                        Error::internal(format!("moving file owners to {}'s ids: {e}", inst.name))
                    })?;
                }
                Ok(())
            }
            InstanceType::Vm => {
                let user = super::vm_files::qemu_user(inst)?;
                match &inst.storage {
                    Some(pool) => {
                        let a = index.archive("root").map_err(store_error)?;
                        let vol = crate::storage::root_volume(&inst.name);
                        let size = self.storage.volume_get(pool, &vol)?.size_bytes;
                        if a.size > size {
                            self.storage.volume_update(
                                pool,
                                &vol,
                                vessel_api::VolumeUpdate { size: a.size },
                            )?;
                        }
                        let Some((_, file)) = self.vm_root_file(inst)? else {
                            return Err(Error::internal("the new root volume is missing"));
                        };
                        let mut p = progress(op, "restoring the disk", 30, 90, a.size);
                        store
                            .write_block_into(index, "root", &file, &mut p)
                            .map_err(store_error)?;
                        Ok(())
                    }
                    None if index.archive("root.raw").is_ok() => {
                        self.restore_vm_raw(store, index, inst, op)
                    }
                    None => {
                        let Ok(a) = index.archive("root.qcow2") else {
                            // Its disk was its image's, untouched: made afresh at its start.
                            return Ok(());
                        };
                        let file = self.vms.instances_dir.join(&inst.name).join("root.qcow2");
                        let _ = std::fs::remove_file(&file);
                        let mut p = progress(op, "restoring the disk", 30, 90, a.size);
                        store
                            .restore_block(index, "root.qcow2", &file, &mut p)
                            .map_err(store_error)?;
                        // Another host's (or anyone's): made safe before anything opens it.
                        super::vm_files::adopt_root_disk(
                            &file,
                            &self.vms.instances_dir.join(&inst.name),
                            &self.images.image_dir(&inst.image),
                        )?;
                        use std::os::unix::fs::PermissionsExt;
                        std::os::unix::fs::chown(&file, Some(user.uid), Some(user.gid))
                            .and_then(|()| {
                                std::fs::set_permissions(
                                    &file,
                                    std::fs::Permissions::from_mode(0o600),
                                )
                            })
                            .map_err(|e| Error::internal(format!("{}: {e}", file.display())))
                    }
                }
            }
        }
    }
}
