//! Start-up reconciliation: the store brought in line with what runs after a daemon
//! (re)start.

use vessel_api::{Instance, InstanceStatus, InstanceType};

use super::InstanceService;
use crate::error::Result;

impl InstanceService {
    /// Brings the store in line with what runs after a daemon (re)start: re-adopts live
    /// monitors, rolls back interrupted creations, marks the rest stopped, removes leftovers.
    pub fn reconcile(&self) -> Result<()> {
        let failed = self.store.operations_fail_unfinished(
            "interrupted: vesseld stopped while this operation was running",
            &crate::clock::now(),
        )?;
        for op in failed {
            tracing::warn!(op = %op.id, description = %op.description, "marked interrupted operation failed");
        }
        let instances = self.store.instance_list()?;
        for inst in &instances {
            let name = &inst.name;
            let legacy = inst.instance_type == InstanceType::Container
                && !inst.privileged
                && inst.idmap.is_none();
            if legacy {
                // Made before ranges were recorded: it keeps the shared range it has used.
                self.store
                    .instance_set_idmap(name, &self.driver.shared_idmap())?;
                tracing::info!(instance = %name, "recorded the shared id range of an older instance");
            }
            if inst.instance_type == InstanceType::Vm {
                if inst.idmap.is_none() {
                    // Made when every QEMU ran as nobody: its next start runs it as this id.
                    let m = self
                        .store
                        .instance_assign_isolated(name, self.driver.id_pool())?;
                    tracing::info!(instance = %name, uid = m.host_base, "gave a VM its own host id");
                }
                if !self.adopt_vm(name) {
                    self.note_lost_ha(inst);
                    self.reconcile_stopped_vm(inst)?;
                }
                continue;
            }
            if let Some(monitor) = self.driver.live_monitor(name) {
                if !self.init_alive(name, monitor) {
                    // A monitor whose init is gone (a zombie it never reaped, say) serves
                    // nothing: it is ended and the instance cleaned up as stopped.
                    tracing::warn!(instance = %name, monitor, "the monitor outlived its init; ending it");
                    // SAFETY: kill takes plain integers; the pid is the instance's own monitor,
                    // checked against its command line just now.
                    unsafe { libc::kill(monitor, libc::SIGKILL) };
                    self.driver.cleanup_orphan(name);
                    let code = self.driver.exit_status(name).map(|e| e.exit_code);
                    self.set_status(name, InstanceStatus::Stopped, code, None);
                    continue;
                }
                let frozen = vessel_container::state(&self.driver.state_root, name)
                    .map(|s| s.status == vessel_container::Status::Paused)
                    .unwrap_or(false);
                let status = if frozen {
                    InstanceStatus::Frozen
                } else {
                    InstanceStatus::Running
                };
                self.set_status(name, status, None, None);
                self.follow(name, monitor, false);
                tracing::info!(instance = %name, monitor, "re-adopted running instance");
                // A daemon stopped between starting it and plugging its NICs left them out.
                if let Some(pid) = self.driver.init_pid(name) {
                    if let Err(e) = self.networks.plug_missing(name, pid) {
                        tracing::warn!(instance = %name, error = %e.message, "plugging its NICs");
                    }
                }
                continue;
            }
            self.driver.cleanup_orphan(name);
            match inst.status {
                InstanceStatus::Creating => {
                    tracing::warn!(instance = %name, "rolling back creation interrupted by a daemon stop");
                    if let Err(e) = self.driver.remove_files(name) {
                        tracing::warn!(instance = %name, error = %e, "rollback");
                    }
                    // A root disk it got in a pool goes too.
                    if let Err(e) = self.storage.instance_deleted(name) {
                        tracing::warn!(instance = %name, error = %e, "rollback of volumes");
                    }
                    self.store.instance_delete(name)?;
                }
                InstanceStatus::Stopped | InstanceStatus::Error => {}
                _ => {
                    self.note_lost_ha(inst);
                    let code = self.driver.exit_status(name).map(|e| e.exit_code);
                    self.set_status(name, InstanceStatus::Stopped, code, None);
                    tracing::info!(instance = %name, "instance stopped while the daemon was away");
                }
            }
        }
        // Directories no instance owns (a deletion interrupted after the store forgot it).
        let known: std::collections::HashSet<String> = self
            .store
            .instance_list()?
            .into_iter()
            .map(|i| i.name)
            .collect();
        if let Ok(rd) = std::fs::read_dir(&self.driver.instances_dir) {
            for entry in rd.flatten() {
                let n = entry.file_name().to_string_lossy().into_owned();
                if !known.contains(&n) {
                    tracing::warn!(dir = %entry.path().display(), "removing files of unknown instance");
                    let _ = self.driver.remove_files(&n);
                }
            }
        }
        // NICs and volume attachments of instances the store no longer has (a creation or
        // a deletion cut short between the store and the other services).
        for owner in self.networks.lease_owners()? {
            if !known.contains(&owner) {
                tracing::warn!(instance = %owner, "removing the NICs of an unknown instance");
                if let Err(e) = self.networks.instance_deleted(&owner) {
                    tracing::warn!(instance = %owner, error = %e.message, "removing its NICs");
                }
            }
        }
        for owner in self.storage.attachment_owners()? {
            if !known.contains(&owner) {
                tracing::warn!(instance = %owner, "detaching the volumes of an unknown instance");
                if let Err(e) = self.storage.instance_deleted(&owner) {
                    tracing::warn!(instance = %owner, error = %e.message, "detaching its volumes");
                }
            }
        }
        for n in self.vms.run_dirs() {
            if !known.contains(&n) {
                tracing::warn!(instance = %n, "removing the run directory and cgroup of an unknown VM");
                if let Err(e) = self.vms.remove_files(&n) {
                    tracing::warn!(instance = %n, error = %e, "removing an unknown VM");
                }
            }
        }
        // Shifted layer copies of earlier versions go, unless a monitor they started still
        // stacks them.
        let in_use: std::collections::HashSet<std::path::PathBuf> = instances
            .iter()
            .filter(|i| i.instance_type == InstanceType::Container)
            .filter(|i| self.driver.live_monitor(&i.name).is_some())
            .flat_map(|i| self.driver.monitor_lowers(&i.name))
            .collect();
        self.images.remove_shifted_copies(&in_use);
        self.sweep_leftovers(&instances);
        Ok(())
    }

    /// Whether the container's init lives, giving a monitor whose init just ended a few
    /// seconds to finish its own clean-up and exit (which is not a wedge).
    fn init_alive(&self, name: &str, monitor: i32) -> bool {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        loop {
            let alive = vessel_container::state(&self.driver.state_root, name).is_ok_and(|s| {
                matches!(
                    s.status,
                    vessel_container::Status::Running
                        | vessel_container::Status::Paused
                        | vessel_container::Status::Created
                )
            });
            if alive {
                return true;
            }
            if self.driver.live_monitor(name) != Some(monitor)
                || std::time::Instant::now() > deadline
            {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// A VM that was not adopted at start-up: its leftovers go (the QEMU of a start that never
    /// finished, cgroup, sockets, pid file), an interrupted creation is rolled back, and a VM
    /// that ended while the daemon was away is stopped with what is known of how.
    fn reconcile_stopped_vm(&self, inst: &Instance) -> Result<()> {
        let name = &inst.name;
        let exit = match self.vms.cleanup_orphan(name) {
            Ok(exit) => exit,
            Err(e) => {
                tracing::warn!(instance = %name, error = %e, "VM left as it is");
                self.set_status(name, InstanceStatus::Error, None, Some(&e.message));
                return Ok(());
            }
        };
        match inst.status {
            InstanceStatus::Creating => {
                tracing::warn!(instance = %name, "rolling back a VM creation interrupted by a daemon stop");
                let _ = self.vms.remove_files(name);
                self.store.instance_delete(name)?;
            }
            InstanceStatus::Stopped | InstanceStatus::Error => {}
            _ => {
                let code = exit.as_ref().and_then(|e| e.exit_code());
                self.set_status(name, InstanceStatus::Stopped, code, None);
                if let Some(e) = &exit {
                    self.set_exit(name, e);
                }
                tracing::info!(instance = %name, exit = ?exit, "VM stopped while the daemon was away");
            }
        }
        Ok(())
    }
}
