//! Snapshots carried by a portable archive (`vessel export --snapshots`): each snapshot's
//! copy of a container's layer (a tree; for a root disk image, the tree of its layer and
//! the image's size), or the content of a VM's internal disk snapshot (a disk, read with
//! `qemu-img convert -l`), beside a `snapshots` blob listing them in the order they were
//! taken. An import makes them again: a container's as copies in its snapshot directory
//! (owners moved to the new instance's ids; a root disk's as a new image the daemon formats
//! and fills, never a file system image from the archive, which the host kernel would have
//! to mount), a VM's as internal snapshots of its new qcow2 disk, each written in turn and
//! snapshotted, the current state written last. Pool snapshots and saved VM state stay
//! behind (the export notes which, in the backup's label `snapshots.left`).

use std::path::Path;

use serde::{Deserialize, Serialize};
use vessel_api::{Instance, InstanceType};
use vessel_backup::{Index, Store, Writer};
use vessel_monitor::{DiskSource, RootDisk};

use super::remap::remap;
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
pub(super) struct CarriedSnapshot {
    name: String,
    created_at: String,
    time: i64,
    /// `upper`, `disk-tree` or `qcow2` (`disk`, a root disk's image, from before: refused).
    kind: String,
    /// The archive holding it.
    archive: String,
    /// A root disk's size (`disk-tree`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
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

/// The snapshots backup `index` carries, oldest first, checked for instance `inst` (as the
/// backup makes it: its type and `limits.disk`); `None` if it carries none. An archive is
/// anyone's making: a root disk's snapshot is no larger than the instance's root disk (an
/// ext4 image only grows), and none is a file system image to mount.
pub(super) fn carried_list(
    store: &Store,
    index: &Index,
    inst: &Instance,
) -> Result<Option<Vec<CarriedSnapshot>>> {
    if index.archive(LIST).is_err() {
        return Ok(None);
    }
    let raw = store.read_blob(index, LIST).map_err(store_error)?;
    let mut list: Vec<CarriedSnapshot> = serde_json::from_slice(&raw)
        .map_err(|e| Error::invalid(format!("the backup's snapshot list: {e}")))?;
    list.sort_by_key(|c| c.time);
    let want = match inst.instance_type {
        InstanceType::Container => ["upper", "disk-tree"].as_slice(),
        InstanceType::Vm => ["qcow2"].as_slice(),
    };
    for c in &list {
        crate::name::validate_name("snapshot", &c.name)?;
        if c.kind == "disk" {
            return Err(Error::invalid(format!(
                "the archive's snapshot {} is a file system image (an archive of an earlier \
                 Vessel), which the host would have to mount: export the instance again with \
                 this version, or without --snapshots",
                c.name
            )));
        }
        if !want.contains(&c.kind.as_str()) {
            return Err(Error::invalid(format!(
                "the backup's snapshot {} is of kind {:?}, which {} cannot have",
                c.name, c.kind, inst.name
            )));
        }
        if c.kind == "disk-tree" {
            let size = c.size.unwrap_or(0);
            super::root_disk::check_size(size)?;
            if inst.limits.disk.is_none_or(|d| size > d) {
                return Err(Error::invalid(format!(
                    "the backup's snapshot {} has a root disk of {size} bytes, larger than \
                     the instance's ({}): a root disk only grows",
                    c.name,
                    inst.limits
                        .disk
                        .map_or("none".into(), |d| format!("{d} bytes"))
                )));
            }
        }
    }
    Ok(Some(list))
}

/// Runs `f` on the layer (`upper`) of the daemon's own root disk image `image`, mounted at
/// `mount` (made here, and removed with the mount whatever `f` did).
fn in_image(image: &Path, mount: &Path, f: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    std::fs::create_dir_all(mount).map_err(io(mount))?;
    let r = DiskGuard::mount(RootDisk {
        source: DiskSource::Image(image.to_path_buf()),
        mount: mount.to_path_buf(),
    })
    .and_then(|g| {
        let r = f(&mount.join("upper"));
        drop(g);
        r
    });
    let _ = std::fs::remove_dir(mount);
    r
}

fn io(p: &Path) -> impl Fn(std::io::Error) -> Error {
    let p = p.to_path_buf();
    move |e| Error::internal(format!("{}: {e}", p.display()))
}

impl InstanceService {
    /// Adds `inst`'s snapshots to backup `w` (blocking; its lock held); returns the names of
    /// those an archive cannot carry.
    pub(super) fn backup_snapshots(&self, inst: &Instance, w: &mut Writer) -> Result<Vec<String>> {
        let (mut list, mut left) = (Vec::new(), Vec::new());
        for r in self.snap_list(&inst.name)? {
            let name = r.name().to_string();
            let (created_at, time) = r.taken();
            let mut size = None;
            let (kind, archive) = match r.carried() {
                Some(Carried::Upper(path)) => {
                    let a = format!("snapshot.{name}.rootfs");
                    w.tree(&a, &path, &mut |_| {}).map_err(store_error)?;
                    ("upper", a)
                }
                Some(Carried::Disk(path)) => {
                    // The layer's files, read through a mount of the daemon's own image.
                    let a = format!("snapshot.{name}.disk.rootfs");
                    size = Some(std::fs::metadata(&path).map_err(io(&path))?.len());
                    in_image(&path, &path.with_file_name(".export-mnt"), |upper| {
                        w.tree(&a, upper, &mut |_| {})
                            .map(drop)
                            .map_err(store_error)
                    })?;
                    ("disk-tree", a)
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
                size,
            });
        }
        w.blob(
            LIST,
            &serde_json::to_vec(&list).expect("a snapshot list serializes"),
        )
        .map_err(store_error)?;
        Ok(left)
    }

    /// Makes again the snapshots a backup carries (`list`, from [`carried_list`]), for new
    /// instance `inst` whose files are restored (blocking; inside its creation); `shift` is
    /// the old instance's id base.
    pub(super) fn restore_snapshots(
        &self,
        store: &Store,
        index: &Index,
        inst: &Instance,
        shift: Option<u32>,
        list: &[CarriedSnapshot],
        op: &OpHandle,
    ) -> Result<()> {
        let name = &inst.name;
        let mut vm_snaps = Vec::new();
        for c in list {
            op.progress(None, &format!("restoring snapshot {}", c.name));
            let dir = self.driver.dir(name).join("snapshots").join(&c.name);
            let carried = match c.kind.as_str() {
                "upper" => {
                    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
                    let upper = dir.join("upper");
                    store
                        .restore_tree_as(index, &c.archive, &upper, inst.privileged, &mut |_| {})
                        .map_err(store_error)?;
                    if let (Some(from), Some(to)) = (shift, self.driver.shift(inst)) {
                        remap(&upper, from, to).map_err(io(&upper))?;
                    }
                    Carried::Upper(upper)
                }
                "disk-tree" => {
                    // A new image of the daemon's making, filled with the layer's files.
                    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
                    let image = dir.join("root.img");
                    let owner = self.driver.shift(inst).unwrap_or(0);
                    let size = c.size.unwrap_or(0);
                    super::root_disk::format_image(&image, size, owner, true, &dir)?;
                    in_image(&image, &dir.join("mnt"), |upper| {
                        std::fs::remove_dir(upper).map_err(io(upper))?;
                        store
                            .restore_tree_as(index, &c.archive, upper, inst.privileged, &mut |_| {})
                            .map_err(store_error)?;
                        match (shift, self.driver.shift(inst)) {
                            (Some(from), Some(to)) => remap(upper, from, to).map_err(io(upper)),
                            _ => Ok(()),
                        }
                    })?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn container(disk: Option<u64>) -> Instance {
        let mut i: Instance = serde_json::from_value(serde_json::json!({
            "name": "c", "type": "container", "status": "stopped", "image": "x",
            "privileged": false, "limits": {}, "command": ["sh"], "environment": {},
            "created_at": "t"
        }))
        .unwrap();
        i.limits.disk = disk;
        i
    }

    /// A backup in a new store carrying the snapshot list `list`.
    fn carrying(dir: &Path, list: serde_json::Value) -> (Store, Index) {
        let store = Store::create(dir, Default::default()).unwrap();
        let mut w = store.writer("c").unwrap();
        w.blob(LIST, list.to_string().as_bytes()).unwrap();
        let (index, _) = w.finish(Default::default()).unwrap();
        (store, index)
    }

    #[test]
    fn an_archives_snapshots_are_no_image_to_mount_and_no_larger_than_the_root_disk() {
        let dir = std::env::temp_dir().join(format!("vessel-carried-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let snap = |kind: &str, size: Option<u64>| {
            serde_json::json!([{"name": "s1", "created_at": "t", "time": 1, "kind": kind,
                "archive": "snapshot.s1.x", "size": size}])
        };
        let cases = [
            (
                snap("disk", None),
                Some(64 << 20),
                Some("file system image"),
            ),
            (
                snap("disk-tree", Some(1 << 50)),
                Some(64 << 20),
                Some("larger than"),
            ),
            (snap("disk-tree", Some(64 << 20)), None, Some("larger than")),
            (
                snap("disk-tree", Some(1 << 20)),
                Some(64 << 20),
                Some("16 MiB"),
            ),
            (snap("qcow2", None), Some(64 << 20), Some("cannot have")),
            (snap("disk-tree", Some(64 << 20)), Some(64 << 20), None),
            (snap("disk-tree", Some(32 << 20)), Some(64 << 20), None),
            (snap("upper", None), None, None),
        ];
        for (i, (list, disk, refused)) in cases.into_iter().enumerate() {
            let (store, index) = carrying(&dir.join(i.to_string()), list.clone());
            let r = carried_list(&store, &index, &container(disk));
            match refused {
                Some(word) => {
                    let e = r.expect_err(&list.to_string());
                    assert!(e.message.contains(word), "{list}: {}", e.message);
                }
                None => assert_eq!(r.unwrap().unwrap().len(), 1, "{list}"),
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
