//! Instance snapshots, taken, restored and deleted by the instance's owner under its lock.
//!
//! A container's snapshot holds its writable layer, taken with its cgroup frozen: a copy of
//! the layer (reflinked where the file system can) when it lies on the daemon's file system,
//! a copy of its root disk image, or the pool's own snapshot of its root volume; and the
//! pool's snapshot of every volume attached to it. A VM's snapshot holds an internal qcow2
//! snapshot of its root disk (taken through QMP while it runs, with `qemu-img` while it is
//! stopped), or its root volume's pool snapshot; `stateful`, also its memory and device state
//! (`savevm`), so that a restore resumes the guest where it was. Each snapshot is a record
//! of the parts it is made of.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use vessel_api::{
    Instance, InstanceSnapshot, InstanceSnapshotCreate, InstanceStatus, InstanceType, Operation,
    SnapshotCreate, VolumeRestore,
};

use super::root_disk::RootPlace;
use super::InstanceService;
use crate::error::{chain, Error, Result};
use crate::operations::OpHandle;
use crate::store::Records;
use vessel_monitor::DiskSource;

/// One thing a snapshot is made of.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "part", rename_all = "snake_case")]
enum Part {
    /// A copy of a container's writable layer.
    Upper { path: PathBuf },
    /// A copy of a container's root disk image.
    Disk { path: PathBuf },
    /// A pool's snapshot of a volume.
    Volume {
        pool: String,
        volume: String,
        snapshot: String,
    },
    /// An internal snapshot of a VM's qcow2 disk.
    Qcow2 { path: PathBuf, tag: String },
    /// A VM's memory, devices and qcow2 disks (`savevm`).
    State { path: PathBuf, tag: String },
}

/// What the store keeps of a snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SnapRecord {
    instance: String,
    name: String,
    created_at: String,
    /// Seconds since the epoch.
    time: i64,
    #[serde(default)]
    expires_at: Option<i64>,
    /// Taken by the schedule (`snapshots.schedule`).
    #[serde(default)]
    scheduled: bool,
    parts: Vec<Part>,
}

/// What a portable archive carries of a snapshot: a copy of a container's layer or of its
/// root disk image, or an internal snapshot of a VM's qcow2 disk (pool snapshots and saved
/// VM state stay behind).
pub(super) enum Carried {
    Upper(PathBuf),
    Disk(PathBuf),
    Qcow2 { path: PathBuf, tag: String },
}

impl SnapRecord {
    /// What an archive can carry of it, if anything.
    pub(super) fn carried(&self) -> Option<Carried> {
        match self.parts.first()? {
            Part::Upper { path } => Some(Carried::Upper(path.clone())),
            Part::Disk { path } => Some(Carried::Disk(path.clone())),
            Part::Qcow2 { path, tag } => Some(Carried::Qcow2 {
                path: path.clone(),
                tag: tag.clone(),
            }),
            Part::Volume { .. } | Part::State { .. } => None,
        }
    }

    /// When it was taken: RFC 3339, and seconds since the epoch.
    pub(super) fn taken(&self) -> (&str, i64) {
        (&self.created_at, self.time)
    }

    /// When it expires, seconds since the epoch.
    pub(crate) fn expires_at(&self) -> Option<i64> {
        self.expires_at
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    fn view(&self) -> InstanceSnapshot {
        let kind = match self.parts.first() {
            Some(Part::Upper { .. }) => "copy",
            Some(Part::Disk { .. }) => "reflink",
            Some(Part::Volume { .. }) => "pool",
            Some(Part::Qcow2 { .. }) | Some(Part::State { .. }) => "qcow2",
            None => "none",
        };
        InstanceSnapshot {
            name: self.name.clone(),
            created_at: self.created_at.clone(),
            stateful: self.parts.iter().any(|p| matches!(p, Part::State { .. })),
            expires_at: self.expires_at.map(crate::clock::rfc3339),
            kind: kind.into(),
            volumes: self
                .parts
                .iter()
                .skip(1)
                .filter_map(|p| match p {
                    Part::Volume { pool, volume, .. } => Some(format!("{pool}/{volume}")),
                    _ => None,
                })
                .collect(),
        }
    }
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd
        .output()
        .map_err(|e| Error::internal(format!("{cmd:?}: {e}")))?;
    if !out.status.success() {
        return Err(Error::internal(format!(
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Copies a tree or file whole, with owners, modes, times, extended attributes and holes,
/// sharing blocks where the file system can (reflinks).
pub(super) fn copy(src: &Path, dst: &Path) -> Result<()> {
    run(Command::new("cp")
        .args(["-a", "--reflink=auto", "--sparse=always", "--"])
        .arg(src)
        .arg(dst))
}

fn remove(p: &Path) {
    let r = if p.is_dir() {
        std::fs::remove_dir_all(p)
    } else {
        std::fs::remove_file(p)
    };
    if let Err(e) = r {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %p.display(), error = %e, "removing a snapshot's files");
        }
    }
}

/// Writes a mounted file system's dirty data to its disk (`syncfs`).
pub(super) fn sync_fs(mount: &Path) -> Result<()> {
    run(Command::new("sync").arg("-f").arg(mount))
}

impl InstanceService {
    fn snap_records(&self) -> Records<SnapRecord> {
        Records::new(self.store.clone(), "instance-snapshot")
    }

    fn snap_key(name: &str, snap: &str) -> String {
        format!("{name}/{snap}")
    }

    fn snap_record(&self, name: &str, snap: &str) -> Result<SnapRecord> {
        self.snap_records()
            .get(&Self::snap_key(name, snap))?
            .ok_or_else(|| {
                Error::not_found(format!(
                    "instance {name:?} has no snapshot {snap:?}; see `vessel snapshot list {name}`"
                ))
            })
    }

    /// The snapshots of `name`, oldest first.
    pub(crate) fn snap_list(&self, name: &str) -> Result<Vec<SnapRecord>> {
        let mut v: Vec<SnapRecord> = self
            .snap_records()
            .list()?
            .into_iter()
            .filter(|r| r.instance == name)
            .collect();
        v.sort_by(|a, b| (a.time, &a.name).cmp(&(b.time, &b.name)));
        Ok(v)
    }

    /// The snapshots of instance `name`, oldest first.
    pub fn snapshots(&self, name: &str) -> Result<Vec<InstanceSnapshot>> {
        self.get_stored(name)?;
        Ok(self.snap_list(name)?.iter().map(SnapRecord::view).collect())
    }

    /// One snapshot of instance `name`.
    pub fn snapshot(&self, name: &str, snap: &str) -> Result<InstanceSnapshot> {
        self.get_stored(name)?;
        Ok(self.snap_record(name, snap)?.view())
    }

    /// Starts the operation that snapshots instance `name`; returns it and the snapshot's
    /// name. `expiry`: seconds it is kept; `scheduled`: taken by the schedule.
    pub fn snapshot_create(
        &self,
        name: &str,
        req: InstanceSnapshotCreate,
        scheduled: bool,
    ) -> Result<(Operation, String)> {
        let inst = self.get_stored(name)?;
        let snap = match req.name {
            Some(s) => {
                crate::name::validate_name("snapshot", &s)?;
                s
            }
            None => {
                let taken = self.snap_list(name)?;
                (0..)
                    .map(|n| format!("snap{n}"))
                    .find(|n| !taken.iter().any(|t| &t.name == n))
                    .expect("a free name")
            }
        };
        if self.snap_records().contains(&Self::snap_key(name, &snap))? {
            return Err(Error::conflict(format!(
                "instance {name} has a snapshot {snap:?} already; pick another name"
            )));
        }
        if req.stateful && inst.instance_type != InstanceType::Vm {
            return Err(Error::invalid(
                "--stateful keeps a VM's memory; a container's snapshot is its files",
            ));
        }
        let (stateful, s) = (req.stateful, snap.clone());
        let op = self.spawn_locked(
            format!("Snapshotting instance {name} as {snap}"),
            name,
            move |svc, inst, op| async move {
                let o = op.clone();
                tokio::task::spawn_blocking(move || {
                    svc.snapshot_locked(&inst, &s, stateful, scheduled, &o)
                })
                .await
                .map_err(|e| Error::internal(format!("snapshot task: {e}")))?
            },
        );
        Ok((op, snap))
    }

    /// Takes a snapshot; the caller holds the instance's lock (blocking).
    fn snapshot_locked(
        &self,
        inst: &Instance,
        snap: &str,
        stateful: bool,
        scheduled: bool,
        op: &OpHandle,
    ) -> Result<()> {
        let name = &inst.name;
        if matches!(
            inst.status,
            InstanceStatus::Creating | InstanceStatus::Error
        ) {
            return Err(Error::conflict(format!(
                "instance {name} is {}: nothing consistent to snapshot",
                inst.status.as_str()
            )));
        }
        let running = matches!(
            inst.status,
            InstanceStatus::Running | InstanceStatus::Frozen
        );
        let mut parts = Vec::new();
        // Parts made so far go if a later one fails.
        let result = (|| -> Result<()> {
            match inst.instance_type {
                InstanceType::Container => {
                    op.progress(Some(10), "freezing");
                    let _frozen = self.pause_while(inst)?;
                    op.progress(Some(30), "copying the writable layer");
                    parts.push(self.container_part(inst, snap, running)?);
                    self.volume_parts(inst, snap, &mut parts)?;
                }
                InstanceType::Vm => self.vm_parts(inst, snap, stateful, running, &mut parts)?,
            }
            Ok(())
        })();
        if let Err(e) = result {
            self.drop_parts(inst, &parts);
            return Err(e);
        }
        let time = super::schedule::now_secs();
        let expires_at = inst
            .config
            .get("snapshots.expiry")
            .and_then(|e| super::schedule::expiry_secs(e).ok())
            .filter(|s| *s > 0)
            .map(|s| time + s);
        let rec = SnapRecord {
            instance: name.clone(),
            name: snap.to_string(),
            created_at: crate::clock::rfc3339(time),
            time,
            expires_at,
            scheduled,
            parts,
        };
        if let Err(e) = self
            .snap_records()
            .insert(&Self::snap_key(name, snap), &rec)
        {
            self.drop_parts(inst, &rec.parts);
            return Err(e.into());
        }
        tracing::info!(instance = %name, snapshot = snap, stateful, "snapshot taken");
        self.events.lifecycle(
            "instance-snapshot-created",
            &format!("{}/snapshots/{snap}", super::path_of(name)),
        );
        Ok(())
    }

    /// A container's writable layer, copied (frozen, if it runs).
    fn container_part(&self, inst: &Instance, snap: &str, running: bool) -> Result<Part> {
        let name = &inst.name;
        let dir = self.driver.dir(name).join("snapshots").join(snap);
        match self.root_place(inst)? {
            RootPlace::Shared => {
                std::fs::create_dir_all(&dir)
                    .map_err(|e| Error::internal(format!("{}: {e}", dir.display())))?;
                let path = dir.join("upper");
                copy(&self.driver.dir(name).join("upper"), &path)?;
                Ok(Part::Upper { path })
            }
            RootPlace::Disk(source) => {
                if running {
                    sync_fs(&self.driver.disk_mount(name))?;
                }
                match source {
                    DiskSource::Image(image) => {
                        std::fs::create_dir_all(&dir)
                            .map_err(|e| Error::internal(format!("{}: {e}", dir.display())))?;
                        let path = dir.join("root.img");
                        copy(&image, &path)?;
                        Ok(Part::Disk { path })
                    }
                    _ => {
                        let pool = inst.storage.clone().unwrap_or_default();
                        self.pool_part(&pool, &crate::storage::root_volume(name), snap)
                    }
                }
            }
        }
    }

    /// The pool's snapshot of volume `volume`, named for this instance snapshot.
    fn pool_part(&self, pool: &str, volume: &str, snap: &str) -> Result<Part> {
        let tag = format!(
            "i-{snap}-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        self.storage.snapshot_create(
            pool,
            volume,
            SnapshotCreate {
                name: tag.chars().take(63).collect(),
            },
        )?;
        Ok(Part::Volume {
            pool: pool.to_string(),
            volume: volume.to_string(),
            snapshot: tag.chars().take(63).collect(),
        })
    }

    /// The volumes attached to `inst` (its root volume aside).
    fn attached(&self, inst: &Instance) -> Result<Vec<vessel_api::InstanceVolume>> {
        let root = crate::storage::root_volume(&inst.name);
        Ok(self
            .storage
            .volumes_by_instance()?
            .remove(&inst.name)
            .unwrap_or_default()
            .into_iter()
            .filter(|v| v.volume != root)
            .collect())
    }

    /// The pool snapshots of the volumes attached to `inst`.
    fn volume_parts(&self, inst: &Instance, snap: &str, parts: &mut Vec<Part>) -> Result<()> {
        for v in &self.attached(inst)? {
            parts.push(self.pool_part(&v.pool, &v.volume, snap)?);
        }
        Ok(())
    }

    /// A VM's disks (and state): through QMP while it runs, else with qemu-img.
    fn vm_parts(
        &self,
        inst: &Instance,
        snap: &str,
        stateful: bool,
        running: bool,
        parts: &mut Vec<Part>,
    ) -> Result<()> {
        let name = &inst.name;
        let vm_err = |e: vessel_vm::VmError| Error::conflict(chain(&e));
        if stateful && !running {
            return Err(Error::conflict(format!(
                "{name} is not running: a stateful snapshot keeps a running guest's memory"
            )));
        }
        let root = self.vms.instances_dir.join(name).join("root.qcow2");
        if let Some(pool) = &inst.storage {
            if stateful {
                return Err(Error::invalid(format!(
                    "{name}'s root disk is a volume in pool {pool:?}, which keeps no memory: \
                     take a snapshot without --stateful"
                )));
            }
        } else if !root.is_file() {
            return Err(Error::conflict(format!(
                "{name} has no disk of its own yet (it never started, or its image boots \
                 from memory): nothing to snapshot"
            )));
        }
        let vm = if running { self.vms.get(name) } else { None };
        if running && vm.is_none() {
            return Err(Error::conflict(format!("{name} is not running here")));
        }
        if stateful {
            if !self.attached(inst)?.is_empty() {
                return Err(Error::invalid(format!(
                    "{name} has volumes attached, whose disks keep no saved state: detach \
                     them or take a snapshot without --stateful"
                )));
            }
            let vm = vm.expect("running");
            vm.save_state(snap).map_err(vm_err)?;
            parts.push(Part::State {
                path: root,
                tag: snap.to_string(),
            });
            return Ok(());
        }
        // Disks only: the guest paused meanwhile, so that every disk is of one moment.
        let _paused = self.pause_while(inst)?;
        match &inst.storage {
            Some(pool) => {
                parts.push(self.pool_part(pool, &crate::storage::root_volume(name), snap)?)
            }
            None => {
                match &vm {
                    Some(vm) => vm.snapshot_disk(&root, snap).map_err(vm_err)?,
                    None => vessel_vm::disk_snapshot(&root, vessel_vm::DiskSnapshot::Create, snap)
                        .map_err(vm_err)?,
                }
                parts.push(Part::Qcow2 {
                    path: root.clone(),
                    tag: snap.to_string(),
                });
            }
        }
        self.volume_parts(inst, snap, parts)
    }

    /// Removes what `parts` hold (a failed snapshot's, or a deleted one's).
    fn drop_parts(&self, inst: &Instance, parts: &[Part]) {
        let vm = self.vms.get(&inst.name);
        for p in parts {
            let r = match p {
                Part::Upper { path } | Part::Disk { path } => {
                    if let Some(dir) = path.parent() {
                        remove(dir);
                    }
                    Ok(())
                }
                Part::Volume {
                    pool,
                    volume,
                    snapshot,
                } => self
                    .storage
                    .snapshot_delete(pool, volume, snapshot)
                    .map(|_| ()),
                Part::Qcow2 { path, tag } => match &vm {
                    Some(vm) => vm
                        .delete_disk_snapshot(path, tag)
                        .map_err(|e| Error::internal(chain(&e))),
                    None => vessel_vm::disk_snapshot(path, vessel_vm::DiskSnapshot::Delete, tag)
                        .map_err(|e| Error::internal(chain(&e))),
                },
                Part::State { path, tag } => match &vm {
                    Some(vm) => vm.delete_state(tag).map_err(|e| Error::internal(chain(&e))),
                    None => vessel_vm::disk_snapshot(path, vessel_vm::DiskSnapshot::Delete, tag)
                        .map_err(|e| Error::internal(chain(&e))),
                },
            };
            if let Err(e) = r {
                tracing::warn!(instance = %inst.name, error = %e, "removing a snapshot part");
            }
        }
    }

    /// Starts the operation that deletes snapshot `snap` of instance `name`.
    pub fn snapshot_delete(&self, name: &str, snap: &str) -> Result<Operation> {
        self.snap_record(name, snap)?;
        let snap = snap.to_string();
        Ok(self.spawn_locked(
            format!("Deleting snapshot {snap} of instance {name}"),
            name,
            move |svc, inst, _op| async move {
                tokio::task::spawn_blocking(move || svc.snapshot_delete_locked(&inst, &snap))
                    .await
                    .map_err(|e| Error::internal(format!("snapshot task: {e}")))?
            },
        ))
    }

    /// Deletes a snapshot; the caller holds the instance's lock (blocking).
    pub(super) fn snapshot_delete_locked(&self, inst: &Instance, snap: &str) -> Result<()> {
        let rec = self.snap_record(&inst.name, snap)?;
        self.drop_parts(inst, &rec.parts);
        self.snap_records()
            .delete(&Self::snap_key(&inst.name, snap))?;
        self.events.lifecycle(
            "instance-snapshot-deleted",
            &format!("{}/snapshots/{snap}", super::path_of(&inst.name)),
        );
        Ok(())
    }

    /// Every snapshot of an instance being deleted goes (its volumes' pool snapshots too).
    pub(super) fn forget_snapshots(&self, inst: &Instance) {
        for r in self.snap_list(&inst.name).unwrap_or_default() {
            if let Err(e) = self.snapshot_delete_locked(inst, &r.name) {
                tracing::warn!(instance = %inst.name, snapshot = %r.name, error = %e, "deleting a snapshot");
            }
        }
    }

    /// Records snapshot `snap` of instance `name` made from what an archive carried.
    pub(super) fn adopt_snapshot(
        &self,
        name: &str,
        snap: &str,
        (created_at, time): (&str, i64),
        carried: Carried,
    ) -> Result<()> {
        let part = match carried {
            Carried::Upper(path) => Part::Upper { path },
            Carried::Disk(path) => Part::Disk { path },
            Carried::Qcow2 { path, tag } => Part::Qcow2 { path, tag },
        };
        let rec = SnapRecord {
            instance: name.to_string(),
            name: snap.to_string(),
            created_at: created_at.to_string(),
            time,
            expires_at: None,
            scheduled: false,
            parts: vec![part],
        };
        self.snap_records()
            .insert(&Self::snap_key(name, snap), &rec)?;
        Ok(())
    }

    /// Gives instance `old`'s snapshots to `new`, the paths of their files moved from `from`
    /// (the instance's old directory) to `to`.
    pub(super) fn rename_snapshots(
        &self,
        old: &str,
        new: &str,
        from: &Path,
        to: &Path,
    ) -> Result<()> {
        let records = self.snap_records();
        for mut r in self.snap_list(old)? {
            let old_key = Self::snap_key(old, &r.name);
            r.instance = new.to_string();
            for p in &mut r.parts {
                match p {
                    Part::Upper { path }
                    | Part::Disk { path }
                    | Part::Qcow2 { path, .. }
                    | Part::State { path, .. } => {
                        if let Ok(rest) = path.strip_prefix(from) {
                            *path = to.join(rest);
                        }
                    }
                    Part::Volume { .. } => {}
                }
            }
            records.put(&Self::snap_key(new, &r.name), &r)?;
            records.delete(&old_key)?;
        }
        Ok(())
    }

    /// Starts the operation that puts instance `name` back as snapshot `snap` has it.
    pub fn snapshot_restore(&self, name: &str, snap: &str, force: bool) -> Result<Operation> {
        let rec = self.snap_record(name, snap)?;
        let inst = self.get_stored(name)?;
        let stateful = rec.parts.iter().any(|p| matches!(p, Part::State { .. }));
        let running = matches!(
            inst.status,
            InstanceStatus::Running | InstanceStatus::Frozen
        );
        if running && !force && !stateful {
            return Err(Error::conflict(format!(
                "instance {name} is running: stop it first, or give --force to stop it for \
                 the restore and start it again after"
            )));
        }
        let snap = snap.to_string();
        Ok(self.spawn_locked(
            format!("Restoring instance {name} from snapshot {snap}"),
            name,
            move |svc, inst, op| async move {
                let rec = svc.snap_record(&inst.name, &snap)?;
                let was_running = matches!(
                    inst.status,
                    InstanceStatus::Running | InstanceStatus::Frozen
                );
                if let Some(Part::State { tag, .. }) =
                    rec.parts.iter().find(|p| matches!(p, Part::State { .. }))
                {
                    // Into the running guest: started first if it is not.
                    if !was_running {
                        op.progress(Some(20), "starting the VM");
                        svc.start_locked(&inst, &op).await?;
                    }
                    op.progress(Some(60), "loading the saved state");
                    let vm = svc.vms.get(&inst.name).ok_or_else(|| {
                        Error::conflict(format!("{} is not running here", inst.name))
                    })?;
                    let t = tag.clone();
                    tokio::task::spawn_blocking(move || vm.load_state(&t))
                        .await
                        .map_err(|e| Error::internal(format!("restore task: {e}")))?
                        .map_err(|e| Error::conflict(chain(&e)))?;
                    return Ok(());
                }
                if was_running {
                    op.progress(Some(10), "stopping");
                    svc.stop_locked(&inst, Duration::from_secs(30), false, &op)
                        .await?;
                }
                op.progress(Some(40), "restoring");
                let (s, i) = (svc.clone(), inst.clone());
                tokio::task::spawn_blocking(move || s.restore_parts(&i, &rec.parts))
                    .await
                    .map_err(|e| Error::internal(format!("restore task: {e}")))??;
                if was_running {
                    op.progress(Some(80), "starting");
                    let inst = svc.get_stored(&inst.name)?;
                    svc.start_locked(&inst, &op).await?;
                }
                svc.events.lifecycle(
                    "instance-snapshot-restored",
                    &format!("{}/snapshots/{snap}", super::path_of(&inst.name)),
                );
                Ok(())
            },
        ))
    }

    /// Puts a stopped instance's parts back (blocking).
    fn restore_parts(&self, inst: &Instance, parts: &[Part]) -> Result<()> {
        let name = &inst.name;
        for p in parts {
            match p {
                Part::Upper { path } => {
                    let upper = self.driver.dir(name).join("upper");
                    let fresh = upper.with_file_name("upper.restoring");
                    let old = upper.with_file_name("upper.replaced");
                    remove(&fresh);
                    remove(&old);
                    copy(path, &fresh)?;
                    std::fs::rename(&upper, &old)
                        .and_then(|()| std::fs::rename(&fresh, &upper))
                        .map_err(|e| Error::internal(format!("{}: {e}", upper.display())))?;
                    remove(&old);
                }
                Part::Disk { path } => {
                    let RootPlace::Disk(DiskSource::Image(image)) = self.root_place(inst)? else {
                        return Err(Error::internal(format!("{name} has no root disk image")));
                    };
                    let fresh = image.with_extension("restoring");
                    remove(&fresh);
                    copy(path, &fresh)?;
                    std::fs::rename(&fresh, &image)
                        .map_err(|e| Error::internal(format!("{}: {e}", image.display())))?;
                }
                Part::Volume {
                    pool,
                    volume,
                    snapshot,
                } => {
                    self.storage.volume_restore(
                        pool,
                        volume,
                        VolumeRestore {
                            snapshot: snapshot.clone(),
                        },
                    )?;
                }
                Part::Qcow2 { path, tag } | Part::State { path, tag } => {
                    vessel_vm::disk_snapshot(path, vessel_vm::DiskSnapshot::Apply, tag)
                        .map_err(|e| Error::conflict(chain(&e)))?;
                }
            }
        }
        Ok(())
    }
}
