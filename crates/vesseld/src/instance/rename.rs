//! `rename`: a stopped instance takes a new name, with everything that holds its name: its
//! record, its directory (files, snapshots' files, console log), its snapshots, its volume
//! attachments, its NICs' leases, forwards and balancer backends (and the DNS name its
//! network gives it). A running instance is refused, as Incus does: its name is in its
//! cgroup, its sockets and its guest's view. Each step is undone if a later one fails.
//!
//! Its backups keep the name they were taken under (`vessel backup list OLD`; a restore
//! takes a new name).

use std::path::Path;

use vessel_api::{Instance, InstanceStatus, InstanceType, Operation};

use super::InstanceService;
use crate::error::{chain, Error, Result};

impl InstanceService {
    /// Starts the operation that renames instance `old` (qualified) to `new` (qualified, in
    /// the same project).
    pub fn rename(&self, old: &str, new: &str) -> Result<Operation> {
        crate::name::validate_qualified("instance", new)?;
        let inst = self.get_stored(old)?;
        if old == new {
            return Err(Error::invalid(format!("{old} has that name already")));
        }
        let project = |n: &str| n.rsplit_once('.').map(|(p, _)| p.to_string());
        if project(old) != project(new) {
            return Err(Error::invalid(
                "an instance is renamed within its project".to_string(),
            ));
        }
        Self::renamable(&inst)?;
        if self.get_stored(new).is_ok() {
            return Err(Error::conflict(format!(
                "an instance named {new:?} already exists; pick another name or delete it first"
            )));
        }
        let new = new.to_string();
        Ok(self.spawn_locked(
            format!("Renaming instance {old} to {new}"),
            old,
            move |svc, inst, _op| async move {
                // Nothing may be made under the new name meanwhile.
                let lock = svc.lock_for(&new);
                let _g = lock.lock().await;
                Self::renamable(&inst)?;
                let s = svc.clone();
                tokio::task::spawn_blocking(move || s.rename_locked(&inst, &new))
                    .await
                    .map_err(|e| Error::internal(format!("rename task: {e}")))?
            },
        ))
    }

    fn renamable(inst: &Instance) -> Result<()> {
        let name = &inst.name;
        if inst.status != InstanceStatus::Stopped {
            return Err(Error::conflict(format!(
                "instance {name} is {}: stop it first (`vessel stop {name}`); a running \
                 instance's name is in its cgroup, its sockets and its guest",
                inst.status.as_str()
            )));
        }
        if let Some(pool) = &inst.storage {
            return Err(Error::invalid(format!(
                "{name}'s root disk is volume {name}-root in pool {pool:?}, named after it: \
                 renaming such instances is not supported yet (back it up and restore the \
                 backup under the new name)"
            )));
        }
        Ok(())
    }

    /// Renames; the caller holds both names' locks (blocking).
    fn rename_locked(&self, inst: &Instance, new: &str) -> Result<()> {
        let old = inst.name.as_str();
        let (from, to) = (self.driver.dir(old), self.driver.dir(new));
        if to.exists() {
            return Err(Error::conflict(format!(
                "{} exists already (left by an instance of that name?); remove it first",
                to.display()
            )));
        }
        self.store.instance_rename(old, new)?;
        let undo_record = || {
            if let Err(e) = self.store.instance_rename(new, old) {
                tracing::error!(instance = old, error = %e, "undoing a rename's record");
            }
        };
        let moved = from.exists();
        if moved {
            if let Err(e) = std::fs::rename(&from, &to) {
                undo_record();
                return Err(Error::internal(format!(
                    "moving {} to {}: {e}",
                    from.display(),
                    to.display()
                )));
            }
        }
        let undo_dir = || {
            if moved {
                if let Err(e) = std::fs::rename(&to, &from) {
                    tracing::error!(instance = old, error = %e, "undoing a rename's move");
                }
            }
        };
        let steps = || -> Result<()> {
            if inst.instance_type == InstanceType::Vm {
                repoint_disk(&from, &to)?;
            }
            self.rename_snapshots(old, new, &from, &to)?;
            self.storage.instance_renamed(old, new)?;
            self.networks.instance_renamed(old, new)
        };
        if let Err(e) = steps() {
            // Back the other way: each step is its own inverse.
            let _ = self.networks.instance_renamed(new, old);
            let _ = self.storage.instance_renamed(new, old);
            let _ = self.rename_snapshots(new, old, &to, &from);
            undo_dir();
            // The overlay is back under `from` and names its backing under `to`.
            if inst.instance_type == InstanceType::Vm {
                let _ = repoint_disk(&to, &from);
            }
            undo_record();
            return Err(e);
        }
        self.pending.forget(old);
        tracing::info!(instance = old, new, "renamed");
        self.events
            .lifecycle("instance-renamed", &super::path_of(new));
        Ok(())
    }
}

/// Points a VM's root disk (moved from directory `from` to `to`) at its image's disk under
/// `to`: the overlay names its backing file by its path (the header alone changes).
fn repoint_disk(from: &Path, to: &Path) -> Result<()> {
    let overlay = to.join("root.qcow2");
    if !overlay.is_file() {
        return Ok(());
    }
    let err =
        |e: vessel_vm::VmError| Error::internal(format!("{}: {}", overlay.display(), chain(&e)));
    let Some(backing) = vessel_vm::backing_file(&overlay).map_err(err)? else {
        return Ok(());
    };
    if let Ok(rest) = backing.strip_prefix(from) {
        // The format the overlay records for it (every overlay made here records one).
        let format = vessel_vm::backing_format(&overlay)
            .map_err(err)?
            .ok_or_else(|| {
                Error::internal(format!(
                    "{} records no format of its backing file",
                    overlay.display()
                ))
            })?;
        vessel_vm::rebase_overlay(&overlay, &to.join(rest), format).map_err(err)?;
    }
    Ok(())
}
