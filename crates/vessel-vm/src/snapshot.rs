//! Snapshots of a VM's qcow2 disks, kept inside the images themselves (internal snapshots):
//! of a running VM through QMP, its disks only or with its memory and device state (`savevm`,
//! so that a restore resumes the guest where it was), and of a stopped VM's disks with
//! `qemu-img snapshot`.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::error::{Result, VmError};
use crate::host::QEMU_IMG;
use crate::qmp::{
    BlockdevSnapshotDeleteInternalSync, BlockdevSnapshotInternalSync, HumanMonitorCommand,
};
use crate::vm::RunningVm;

/// A snapshot tag: what QEMU and qemu-img take (letters, digits, '-', '_' and '.').
pub(crate) fn check_tag(tag: &str) -> Result<()> {
    let ok = !tag.is_empty()
        && tag.len() <= 128
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(VmError::InvalidDefinition(format!(
            "snapshot name {tag:?}: use letters, digits, '-', '_' and '.'"
        )))
    }
}

impl RunningVm {
    fn hmp(&self, line: &str) -> Result<()> {
        let out = self.qmp().execute(&HumanMonitorCommand {
            command_line: line.to_string(),
        })?;
        let out = out.trim();
        if out.is_empty() {
            Ok(())
        } else {
            Err(VmError::Command {
                command: line.to_string(),
                message: out.to_string(),
            })
        }
    }

    /// Saves the guest's memory and device state with an internal snapshot of every
    /// writable disk (each must be qcow2), all as `tag`; the guest runs on after.
    pub fn save_state(&self, tag: &str) -> Result<()> {
        check_tag(tag)?;
        self.hmp(&format!("savevm {tag}"))?;
        tracing::info!(vm = %self.name, tag, "state saved");
        Ok(())
    }

    /// Puts the guest back into state `tag` (memory, devices, disks): it resumes there.
    /// Dirty bitmaps go first: they could not tell what loading the state changed.
    pub fn load_state(&self, tag: &str) -> Result<()> {
        check_tag(tag)?;
        self.remove_bitmaps("")?;
        self.hmp(&format!("loadvm {tag}"))?;
        tracing::info!(vm = %self.name, tag, "state loaded");
        Ok(())
    }

    /// Deletes state `tag` from every disk holding it.
    pub fn delete_state(&self, tag: &str) -> Result<()> {
        check_tag(tag)?;
        self.hmp(&format!("delvm {tag}"))
    }

    fn node_of(&self, path: &Path) -> Result<String> {
        Ok(self.disk_node(path)?.0)
    }

    /// An internal snapshot `tag` of the qcow2 disk on `path` (the disk only).
    pub fn snapshot_disk(&self, path: &Path, tag: &str) -> Result<()> {
        check_tag(tag)?;
        let device = self.node_of(path)?;
        self.qmp().execute(&BlockdevSnapshotInternalSync {
            device,
            name: tag.to_string(),
        })?;
        Ok(())
    }

    /// Deletes internal snapshot `tag` of the disk on `path`.
    pub fn delete_disk_snapshot(&self, path: &Path, tag: &str) -> Result<()> {
        check_tag(tag)?;
        let device = self.node_of(path)?;
        self.qmp().execute(&BlockdevSnapshotDeleteInternalSync {
            device,
            name: tag.to_string(),
        })?;
        Ok(())
    }
}

/// What `qemu-img snapshot` does to a stopped VM's disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskSnapshot {
    /// Takes one.
    Create,
    /// Puts the disk back to it (later snapshots are kept).
    Apply,
    /// Deletes it.
    Delete,
}

/// Runs `qemu-img snapshot` on the qcow2 image at `path` (no QEMU may hold it).
pub fn disk_snapshot(path: &Path, what: DiskSnapshot, tag: &str) -> Result<()> {
    check_tag(tag)?;
    let flag = match what {
        DiskSnapshot::Create => "-c",
        DiskSnapshot::Apply => "-a",
        DiskSnapshot::Delete => "-d",
    };
    let out = Command::new(QEMU_IMG.find()?)
        .args(["snapshot", "-q", flag, tag])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| VmError::Command {
            command: "qemu-img snapshot".into(),
            message: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(VmError::Command {
            command: format!("qemu-img snapshot {flag} {tag}"),
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

/// The internal snapshots of the qcow2 image at `path` (names), read with `qemu-img
/// snapshot -l` (also while QEMU holds it: shared read).
pub fn disk_snapshots(path: &Path) -> Result<Vec<String>> {
    let out = Command::new(QEMU_IMG.find()?)
        .args(["snapshot", "-U", "-l"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| VmError::Command {
            command: "qemu-img snapshot -l".into(),
            message: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(VmError::Command {
            command: "qemu-img snapshot -l".into(),
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    // ID  TAG  VM SIZE  DATE  VM CLOCK  ICOUNT, after two header lines.
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(2)
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
        .collect())
}
