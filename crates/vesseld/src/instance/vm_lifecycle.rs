//! The instance service's VM paths: start, stop, pause, resume and adoption of QEMU.

use std::time::Duration;

use tokio::sync::watch;
use vessel_api::{Instance, InstanceStatus, Limits};

use super::InstanceService;
use crate::error::{Error, Result};
use crate::operations::OpHandle;

/// Refuses guest memory the host cannot give.
pub fn check_memory(limits: &Limits) -> Result<()> {
    let Some(m) = limits.memory else {
        return Ok(());
    };
    let available = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("MemAvailable:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024);
    if let Some(avail) = available {
        if m > avail {
            return Err(Error::invalid(format!(
                "a VM with {} MiB of memory does not fit: the host has {} MiB available",
                m >> 20,
                avail >> 20
            )));
        }
    }
    Ok(())
}

impl InstanceService {
    /// Boots a VM instance; the caller holds the instance's lock.
    pub(super) async fn start_vm(&self, inst: &Instance, op: &OpHandle) -> Result<()> {
        let image = self.images.by_fingerprint(&inst.image)?;
        let image_dir = self.images.image_dir(&image.fingerprint);
        op.progress(Some(30), "preparing the machine");
        if inst.status != InstanceStatus::Creating {
            self.set_status(&inst.name, InstanceStatus::Starting, None, None);
        }
        let (svc, i) = (self.clone(), inst.clone());
        let started = tokio::task::spawn_blocking(move || {
            let user = super::vm_files::qemu_user(&i)?;
            let volumes = svc
                .storage
                .vm_disks(&i.name, i.storage.as_deref(), user.uid)?;
            let (mut def, _profile) = svc.vms.machine(&i, &image, &image_dir, volumes)?;
            def.nics.extend(svc.networks.vm_nics(&i.name)?);
            svc.vms.start(&def)
        })
        .await
        .unwrap_or_else(|e| Err(Error::internal(format!("VM start task: {e}"))));
        match started {
            Ok(vm) => {
                tracing::info!(instance = %inst.name, pid = vm.pid, "VM started");
                self.mark_started(&inst.name, vm.pid, true);
                Ok(())
            }
            Err(e) => {
                if inst.status != InstanceStatus::Creating {
                    self.set_status(&inst.name, InstanceStatus::Stopped, None, None);
                }
                Err(e)
            }
        }
    }

    /// Stops a VM: the ACPI power button, then `quit` after `timeout` (or at once with
    /// `force`), then SIGKILL. The caller holds the instance's lock.
    pub(super) async fn stop_vm(
        &self,
        inst: &Instance,
        timeout: Duration,
        force: bool,
        op: &OpHandle,
    ) -> Result<()> {
        let name = &inst.name;
        let (Some(exited), Some(vm)) = (self.exit_watch(name), self.vms.get(name)) else {
            self.set_status(name, InstanceStatus::Stopped, None, None);
            return Ok(());
        };
        self.set_status(name, InstanceStatus::Stopping, None, None);
        op.progress(
            Some(20),
            if force {
                "killing"
            } else {
                "pressing the power button"
            },
        );
        let outcome = tokio::task::spawn_blocking(move || {
            if force {
                vm.kill().map(|()| "killed".to_string())
            } else {
                vm.shutdown(timeout).map(|o| format!("{:?}", o.how))
            }
        })
        .await
        .map_err(|e| Error::internal(format!("VM stop task: {e}")))?;
        match outcome {
            Ok(how) => tracing::info!(instance = %name, how, "VM stopped"),
            Err(e) => tracing::warn!(instance = %name, error = %crate::error::chain(&e), "VM stop"),
        }
        let mut rx: watch::Receiver<bool> = exited;
        if tokio::time::timeout(Duration::from_secs(15), rx.wait_for(|d| *d))
            .await
            .is_ok()
        {
            self.set_status(name, InstanceStatus::Stopped, None, None);
            return Ok(());
        }
        self.set_status(name, InstanceStatus::Error, None, Some("QEMU did not exit"));
        Err(Error::internal(format!(
            "VM {name} did not stop; see its qemu.log"
        )))
    }

    /// Pauses or resumes a VM's vCPUs through QMP.
    pub(super) async fn pause_vm(&self, name: &str, pause: bool) -> Result<()> {
        let vm = self
            .vms
            .get(name)
            .ok_or_else(|| Error::conflict(format!("VM {name} is not running")))?;
        tokio::task::spawn_blocking(move || if pause { vm.pause() } else { vm.resume() })
            .await
            .map_err(|e| Error::internal(format!("QMP task: {e}")))?
            .map_err(|e| Error::internal(format!("QMP: {}", crate::error::chain(&e))))
    }

    /// Adopts a VM left running by a previous daemon; false when there is none. Its block
    /// volumes (NBD sockets served again at start-up) are given to the uid its QEMU runs as.
    pub(super) fn adopt_vm(&self, name: &str) -> bool {
        match self.vms.adopt(name) {
            Some(vm) => {
                match vessel_vm::host::process_uid(vm.pid) {
                    Some(uid) => {
                        if let Err(e) = self.storage.give_vm_disks(name, uid) {
                            tracing::warn!(instance = name, error = %e, "could not give an adopted VM its disks");
                        }
                    }
                    None => tracing::warn!(
                        instance = name,
                        pid = vm.pid,
                        "the uid of an adopted QEMU is unknown"
                    ),
                }
                let paused = matches!(vm.status(), Ok(vessel_vm::VmStatus::Paused));
                let status = if paused {
                    InstanceStatus::Frozen
                } else {
                    InstanceStatus::Running
                };
                self.set_status(name, status, None, None);
                self.follow(name, vm.pid, true);
                tracing::info!(instance = name, pid = vm.pid, "re-adopted running VM");
                true
            }
            None => false,
        }
    }
}
