//! Snapshots carried by a portable archive (`vessel export --snapshots`): each snapshot's
//! copy of a container's layer (a tree) or root disk image (a disk), or the content of a VM's
//! internal disk snapshot (a disk, read with `qemu-img convert -l`), beside a `snapshots`
//! blob listing them in the order they were taken. An import makes them again: a container's
//! as copies in its snapshot directory (owners moved to the new instance's ids), a VM's as
//! internal snapshots of its new qcow2 disk, each written in turn and snapshotted, the
//! current state written last. Pool snapshots and saved VM state stay behind (the export
//! notes which, in the backup's label `snapshots.left`).

use std::path::Path;

use serde::{Deserialize, Serialize};
use vessel_api::{Instance, InstanceType};
use vessel_backup::{Index, Store, Writer};
use vessel_monitor::{DiskSource, RootDisk};

use super::backup::remap;
use super::root_disk::DiskGuard;
use super::snapshots::Carried;
use super::InstanceService;
use crate::backup::error as store_error;
use crate::error::{Error, Result};
use crate::operations::OpHandle;

/// The blob listing the carried snapshots.
const LIST: &str = "snapshots";

/// One carried snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CarriedSnapshot {
    name: String,
    created_at: String,
    time: i64,
    /// `upper`, `disk` or `qcow2`.
    kind: String,
    /// The archive holding it.
    archive: String,
}

fn run(cmd: &mut std::process::Command, what: &str) -> Result<()> {
    let out = cmd
        .output()
        .map_err(|e| Error::internal(format!("{what}: {e}")))?;
    if !out.status.success() {
        return Err(Error::internal(format!(
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

impl InstanceService {
    /// Adds `inst`'s snapshots to backup `w` (blocking; its lock held); returns the names of
    /// those an archive cannot carry.
    pub(super) fn backup_snapshots(&self, inst: &Instance, w: &mut Writer) -> Result<Vec<String>> {
        let (mut list, mut left) = (Vec::new(), Vec::new());
        for r in self.snap_list(&inst.name)? {
            let name = r.name().to_string();
            let (created_at, time) = r.taken();
            let (kind, archive) = match r.carried() {
                Some(Carried::Upper(path)) => {
                    let a = format!("snapshot.{name}.rootfs");
                    w.tree(&a, &path, &mut |_| {}).map_err(store_error)?;
                    ("upper", a)
                }
                Some(Carried::Disk(path)) => {
                    let a = format!("snapshot.{name}.root.img");
                    w.block(&a, &path, &mut |_| {}).map_err(store_error)?;
                    ("disk", a)
                }
                Some(Carried::Qcow2 { path, tag }) => {
                    let a = format!("snapshot.{name}.root.raw");
                    let raw = path.with_file_name(format!(".export-{tag}.raw"));
                    let _ = std::fs::remove_file(&raw);
                    let r = run(
                        std::process::Command::new("qemu-img")
                            .args(["convert", "-U", "-O", "raw", "-l"])
                            .arg(format!("snapshot.name={tag}"))
                            .arg(&path)
                            .arg(&raw),
                        &format!("reading snapshot {name}"),
                    )
                    .and_then(|()| {
                        w.block_stamped(&a, &raw, None, &mut |_| {})
                            .map_err(store_error)
                            .map(drop)
                    });
                    let _ = std::fs::remove_file(&raw);
                    r?;
                    ("qcow2", a)
                }
                None => {
                    left.push(name);
                    continue;
                }
            };
            list.push(CarriedSnapshot {
                name,
                created_at: created_at.to_string(),
                time,
                kind: kind.into(),
                archive,
            });
        }
        w.blob(
            LIST,
            &serde_json::to_vec(&list).expect("a snapshot list serializes"),
        )
        .map_err(store_error)?;
        Ok(left)
    }

    /// Makes again the snapshots a backup carries, for new instance `inst` whose files are
    /// restored (blocking; inside its creation); `shift` is the old instance's id base.
    pub(super) fn restore_snapshots(
        &self,
        store: &Store,
        index: &Index,
        inst: &Instance,
        shift: Option<u32>,
        op: &OpHandle,
    ) -> Result<()> {
        if index.archive(LIST).is_err() {
            return Ok(());
        }
        let raw = store.read_blob(index, LIST).map_err(store_error)?;
        let mut list: Vec<CarriedSnapshot> = serde_json::from_slice(&raw)
            .map_err(|e| Error::conflict(format!("the backup's snapshot list: {e}")))?;
        list.sort_by_key(|c| c.time);
        let want = match inst.instance_type {
            InstanceType::Container => ["upper", "disk"].as_slice(),
            InstanceType::Vm => ["qcow2"].as_slice(),
        };
        for c in &list {
            crate::name::validate_name("snapshot", &c.name)?;
            if !want.contains(&c.kind.as_str()) {
                return Err(Error::conflict(format!(
                    "the backup's snapshot {} is of kind {:?}, which {} cannot have",
                    c.name, c.kind, inst.name
                )));
            }
        }
        let name = &inst.name;
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |e: std::io::Error| Error::internal(format!("{}: {e}", p.display()))
        };
        let mut vm_snaps = Vec::new();
        for c in &list {
            op.progress(None, &format!("restoring snapshot {}", c.name));
            let dir = self.driver.dir(name).join("snapshots").join(&c.name);
            let carried = match c.kind.as_str() {
                "upper" => {
                    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
                    let upper = dir.join("upper");
                    store
                        .restore_tree(index, &c.archive, &upper, &mut |_| {})
                        .map_err(store_error)?;
                    if let (Some(from), Some(to)) = (shift, self.driver.shift(inst)) {
                        remap(&upper, from, to).map_err(io(&upper))?;
                    }
                    Carried::Upper(upper)
                }
                "disk" => {
                    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
                    let image = dir.join("root.img");
                    store
                        .restore_block(index, &c.archive, &image, &mut |_| {})
                        .map_err(store_error)?;
                    if let (Some(from), Some(to)) = (shift, self.driver.shift(inst)) {
                        let mount = dir.join("mnt");
                        std::fs::create_dir_all(&mount).map_err(io(&mount))?;
                        let r = DiskGuard::mount(RootDisk {
                            source: DiskSource::Image(image.clone()),
                            mount: mount.clone(),
                        })
                        .and_then(|g| {
                            let r = remap(&mount.join("upper"), from, to).map_err(io(&mount));
                            drop(g);
                            r
                        });
                        let _ = std::fs::remove_dir(&mount);
                        r?;
                    }
                    Carried::Disk(image)
                }
                _ => {
                    vm_snaps.push(c);
                    continue;
                }
            };
            self.adopt_snapshot(name, &c.name, (&c.created_at, c.time), carried)?;
        }
        if !vm_snaps.is_empty() {
            self.restore_vm_snapshots(store, index, inst, &vm_snaps)?;
        }
        Ok(())
    }

    /// Writes each carried disk snapshot into VM `inst`'s new qcow2 disk in turn and takes
    /// it as an internal snapshot; then its current state again.
    fn restore_vm_snapshots(
        &self,
        store: &Store,
        index: &Index,
        inst: &Instance,
        snaps: &[&CarriedSnapshot],
    ) -> Result<()> {
        let dir = self.vms.instances_dir.join(&inst.name);
        let disk = dir.join("root.qcow2");
        if !disk.is_file() {
            return Err(Error::conflict(format!(
                "{} has no qcow2 disk to hold its snapshots",
                inst.name
            )));
        }
        let write = |archive: &str| -> Result<()> {
            let raw = dir.join(".snapshot-restoring.raw");
            let _ = std::fs::remove_file(&raw);
            let r = store
                .restore_block(index, archive, &raw, &mut |_| {})
                .map_err(store_error)
                .and_then(|()| {
                    run(
                        std::process::Command::new("qemu-img")
                            .args(["convert", "-q", "-n", "-f", "raw", "-O", "qcow2"])
                            .arg(&raw)
                            .arg(&disk),
                        "writing a snapshot into the disk",
                    )
                });
            let _ = std::fs::remove_file(&raw);
            r
        };
        for c in snaps {
            write(&c.archive)?;
            vessel_vm::disk_snapshot(&disk, vessel_vm::DiskSnapshot::Create, &c.name)
                .map_err(|e| Error::internal(crate::error::chain(&e)))?;
            self.adopt_snapshot(
                &inst.name,
                &c.name,
                (&c.created_at, c.time),
                Carried::Qcow2 {
                    path: disk.clone(),
                    tag: c.name.clone(),
                },
            )?;
        }
        write("root.raw")
    }
}
