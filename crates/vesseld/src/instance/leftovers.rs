//! What a daemon killed in the middle of a backup, an export, an import or a copy leaves
//! behind, removed at the next start: scratch files in instance directories (a raw read of a
//! VM's disk, the change file of an incremental backup), copy staging directories, and the
//! internal disk snapshots a VM backup takes for itself (which pin old clusters in the
//! qcow2 for good). A snapshot the user took is never touched, whatever its name.

use std::path::Path;

use vessel_api::{Instance, InstanceType};

use super::InstanceService;

/// Scratch files the backup, export and import code make in an instance's directory.
fn is_scratch(name: &str) -> bool {
    (name.starts_with(".backup-") && name.ends_with(".raw"))
        || (name.starts_with(".vessel-backup-") && name.ends_with(".qcow2"))
        || (name.starts_with(".export-") && name.ends_with(".raw"))
        || name == ".snapshot-restoring.raw"
        || name == ".root.raw.restoring"
}

/// The tag a VM backup gives its own internal snapshot: `backup-` and 12 hex digits.
fn is_backup_tag(tag: &str) -> bool {
    tag.strip_prefix("backup-")
        .is_some_and(|h| h.len() == 12 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn remove(p: &Path) {
    let r = if p.is_dir() {
        std::fs::remove_dir_all(p)
    } else {
        std::fs::remove_file(p)
    };
    match r {
        Ok(()) => {
            tracing::info!(path = %p.display(), "removed a leftover of an interrupted backup or copy")
        }
        Err(e) => tracing::warn!(path = %p.display(), error = %e, "removing a leftover"),
    }
}

impl InstanceService {
    /// Removes the leftovers described above (blocking; at start-up, before any request).
    pub(super) fn sweep_leftovers(&self, instances: &[Instance]) {
        if let Ok(rd) = std::fs::read_dir(&self.driver.instances_dir) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().starts_with(".copy-") {
                    remove(&e.path());
                }
            }
        }
        for inst in instances {
            let dir = self.driver.dir(&inst.name);
            if let Ok(rd) = std::fs::read_dir(&dir) {
                for e in rd.flatten() {
                    if is_scratch(&e.file_name().to_string_lossy()) {
                        remove(&e.path());
                    }
                }
            }
            if inst.instance_type != InstanceType::Vm {
                continue;
            }
            let disk = dir.join("root.qcow2");
            if !disk.is_file() {
                continue;
            }
            let own: Vec<String> = self
                .snap_list(&inst.name)
                .unwrap_or_default()
                .iter()
                .map(|r| r.name().to_string())
                .collect();
            let tags = vessel_vm::disk_snapshots(&disk).unwrap_or_default();
            for tag in tags.iter().filter(|t| is_backup_tag(t) && !own.contains(t)) {
                let r = match self.vms.get(&inst.name) {
                    Some(vm) => vm.delete_disk_snapshot(&disk, tag),
                    None => vessel_vm::disk_snapshot(&disk, vessel_vm::DiskSnapshot::Delete, tag),
                };
                match r {
                    Ok(()) => {
                        tracing::info!(instance = %inst.name, tag, "removed a backup's leftover disk snapshot")
                    }
                    Err(e) => {
                        tracing::warn!(instance = %inst.name, tag, error = %crate::error::chain(&e), "removing a backup's leftover disk snapshot")
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_scratch_names_and_tags() {
        assert!(is_scratch(".backup-0123456789ab.raw"));
        assert!(is_scratch(".vessel-backup-1a2b3c4d-20261204T000000Z.qcow2"));
        assert!(is_scratch(".export-s1.raw") && is_scratch(".root.raw.restoring"));
        assert!(!is_scratch("root.qcow2") && !is_scratch(".backup-x") && !is_scratch("image-a"));
        assert!(is_backup_tag("backup-0123456789ab"));
        assert!(!is_backup_tag("backup-nightly") && !is_backup_tag("backup-0123456789abc"));
    }
}
