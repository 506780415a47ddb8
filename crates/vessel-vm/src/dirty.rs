//! What changed on a running VM's disk since a point in time, for backups that read only
//! that: QEMU keeps a dirty bitmap per disk (in memory, so a restart of QEMU loses it and
//! the next backup reads everything), started at the moment a backup read the disk; the
//! next backup has QEMU copy the clusters that bitmap marks into a new qcow2 file, as they
//! were at one point in time (a cluster the guest writes meanwhile is copied before it is
//! overwritten), and starts the next bitmap at that same point.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::error::{Result, VmError};
use crate::host::QEMU_IMG;
use crate::qmp::{
    BlockDirtyBitmapRemove, BlockdevAdd, BlockdevDel, JobCancel, JobDismiss, QueryBlock, QueryJobs,
    Transaction, TransactionAction,
};
use crate::vm::RunningVm;

/// A changed range of a disk, and where its bytes are in the file [`RunningVm::copy_changes`]
/// wrote (`None`: they are zeros).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// Offset on the disk.
    pub start: u64,
    /// Bytes.
    pub len: u64,
    /// Offset of those bytes in the file.
    pub at: Option<u64>,
}

const JOB: &str = "vessel-changes";
const TARGET: &str = "vessel-changes-target";

fn failed(command: &str, message: impl std::fmt::Display) -> VmError {
    VmError::Command {
        command: command.to_string(),
        message: message.to_string(),
    }
}

impl RunningVm {
    /// The format node of the disk on `path` and its dirty bitmaps.
    pub(crate) fn disk_node(&self, path: &Path) -> Result<(String, Vec<crate::qmp::DirtyBitmap>)> {
        let want = path.to_string_lossy();
        self.qmp()
            .execute(&QueryBlock)?
            .into_iter()
            .filter_map(|b| b.inserted)
            .find(|i| i.file == want)
            .and_then(|i| Some((i.node_name?, i.dirty_bitmaps)))
            .ok_or_else(|| {
                VmError::InvalidDefinition(format!("{} has no disk on {want}", self.name))
            })
    }

    /// Names of the dirty bitmaps of the disk on `path` that can be trusted.
    pub fn dirty_bitmaps(&self, path: &Path) -> Result<Vec<String>> {
        Ok(self
            .disk_node(path)?
            .1
            .into_iter()
            .filter(|b| !b.inconsistent && b.recording)
            .map(|b| b.name)
            .collect())
    }

    /// Removes dirty bitmap `name` of the disk on `path`.
    pub fn remove_bitmap(&self, path: &Path, name: &str) -> Result<()> {
        let (node, _) = self.disk_node(path)?;
        self.qmp().execute(&BlockDirtyBitmapRemove {
            node,
            name: name.to_string(),
        })?;
        Ok(())
    }

    /// Removes every dirty bitmap of every disk whose name starts with `prefix` (before the
    /// disks change in a way no bitmap sees, as when a snapshot is loaded).
    pub fn remove_bitmaps(&self, prefix: &str) -> Result<()> {
        for b in self.qmp().execute(&QueryBlock)? {
            let Some(i) = b.inserted else { continue };
            let Some(node) = i.node_name else { continue };
            for d in i
                .dirty_bitmaps
                .iter()
                .filter(|d| d.name.starts_with(prefix))
            {
                self.qmp().execute(&BlockDirtyBitmapRemove {
                    node: node.clone(),
                    name: d.name.clone(),
                })?;
            }
        }
        Ok(())
    }

    /// Takes internal snapshot `tag` of the qcow2 disk on `path` and starts dirty bitmap
    /// `bitmap` on it at the same point in time.
    pub fn snapshot_disk_tracked(&self, path: &Path, tag: &str, bitmap: &str) -> Result<()> {
        crate::snapshot::check_tag(tag)?;
        let (node, _) = self.disk_node(path)?;
        self.qmp().execute(&Transaction {
            actions: vec![
                TransactionAction {
                    kind: "blockdev-snapshot-internal-sync",
                    data: json!({ "device": node, "name": tag }),
                },
                TransactionAction {
                    kind: "block-dirty-bitmap-add",
                    data: json!({ "node": node, "name": bitmap, "persistent": false }),
                },
            ],
        })?;
        Ok(())
    }

    /// Copies what changed on the disk on `path` since dirty bitmap `since` started, as it
    /// is now, into new qcow2 file `target`, and starts bitmap `next` at this point; returns
    /// the disk's size and the changed extents. `since` is left as it is. On failure nothing
    /// is left: no `next`, no job, no node (`target` is the caller's to remove).
    pub fn copy_changes(
        &self,
        path: &Path,
        since: &str,
        next: &str,
        target: &Path,
    ) -> Result<(u64, Vec<Extent>)> {
        let (node, _) = self.disk_node(path)?;
        let size = crate::disk::image_info(path, None)?.virtual_size;
        let qemu_img = QEMU_IMG.find()?;
        let out = Command::new(&qemu_img)
            .args(["create", "-q", "-f", "qcow2"])
            .arg(target)
            .arg(size.to_string())
            .stdin(Stdio::null())
            .output()
            .map_err(|e| failed("qemu-img create", e))?;
        if !out.status.success() {
            return Err(failed(
                "qemu-img create",
                String::from_utf8_lossy(&out.stderr).trim(),
            ));
        }
        // QEMU opens it as the user it runs as, who owns the disk.
        {
            use std::os::unix::fs::MetadataExt;
            let m = std::fs::metadata(path).map_err(VmError::io("reading", path))?;
            std::os::unix::fs::chown(target, Some(m.uid()), Some(m.gid()))
                .map_err(VmError::io("chown", target))?;
        }
        self.qmp().execute(&BlockdevAdd(json!({
            "driver": "qcow2",
            "node-name": TARGET,
            "file": { "driver": "file", "filename": target.to_string_lossy() },
        })))?;
        let copied = self.run_copy(&node, since, next);
        if let Err(e) = self.qmp().execute(&BlockdevDel {
            node_name: TARGET.into(),
        }) {
            tracing::warn!(vm = %self.name, error = %e, "removing the changes' node");
        }
        if let Err(e) = copied {
            let _ = self.qmp().execute(&BlockDirtyBitmapRemove {
                node,
                name: next.to_string(),
            });
            return Err(e);
        }
        Ok((size, map(target)?))
    }

    /// The copy job itself: started with bitmap `next` in one transaction, waited for.
    fn run_copy(&self, node: &str, since: &str, next: &str) -> Result<()> {
        self.qmp().execute(&Transaction {
            actions: vec![
                TransactionAction {
                    kind: "blockdev-backup",
                    data: json!({
                        "job-id": JOB, "device": node, "target": TARGET,
                        "sync": "bitmap", "bitmap": since, "bitmap-mode": "never",
                        "auto-dismiss": false,
                    }),
                },
                TransactionAction {
                    kind: "block-dirty-bitmap-add",
                    data: json!({ "node": node, "name": next, "persistent": false }),
                },
            ],
        })?;
        let started = Instant::now();
        loop {
            let job = match self.qmp().execute(&QueryJobs) {
                Ok(jobs) => jobs.into_iter().find(|j| j.id == JOB),
                Err(e) => {
                    // Not left running: the target node could not be removed under it.
                    let _ = self.qmp().execute(&JobCancel { id: JOB.into() });
                    let _ = self.qmp().execute(&JobDismiss { id: JOB.into() });
                    return Err(e.into());
                }
            }
            .ok_or_else(|| failed("blockdev-backup", "the copy job is gone"))?;
            if job.status == "concluded" {
                self.qmp().execute(&JobDismiss { id: JOB.into() })?;
                return match job.error {
                    None => Ok(()),
                    Some(e) => Err(failed("blockdev-backup", e)),
                };
            }
            if started.elapsed() > Duration::from_secs(3600) {
                let _ = self.qmp().execute(&JobCancel { id: JOB.into() });
                std::thread::sleep(Duration::from_secs(1));
                let _ = self.qmp().execute(&JobDismiss { id: JOB.into() });
                return Err(failed("blockdev-backup", "no end after an hour; cancelled"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The extents a qcow2 file without backing holds (`qemu-img map`): its clusters that are
/// present, with their offsets in the file (zero clusters have none).
fn map(file: &Path) -> Result<Vec<Extent>> {
    #[derive(serde::Deserialize)]
    struct Entry {
        start: u64,
        length: u64,
        present: bool,
        data: bool,
        #[serde(default)]
        offset: Option<u64>,
    }
    let out = Command::new(QEMU_IMG.find()?)
        .args(["map", "--output=json", "-f", "qcow2"])
        .arg(file)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| failed("qemu-img map", e))?;
    if !out.status.success() {
        return Err(failed(
            "qemu-img map",
            String::from_utf8_lossy(&out.stderr).trim(),
        ));
    }
    let entries: Vec<Entry> = serde_json::from_slice(&out.stdout)
        .map_err(|e| failed("qemu-img map", format!("unexpected output: {e}")))?;
    let mut extents = Vec::new();
    for e in entries.into_iter().filter(|e| e.present) {
        let at = if e.data {
            Some(
                e.offset
                    .ok_or_else(|| failed("qemu-img map", "a data extent without an offset"))?,
            )
        } else {
            None
        };
        extents.push(Extent {
            start: e.start,
            len: e.length,
            at,
        });
    }
    Ok(extents)
}
