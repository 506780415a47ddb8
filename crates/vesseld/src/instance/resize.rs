//! A running instance's resources changed in place by its owner, under its lock: a VM's
//! memory (virtio-mem) and vCPUs (hot-plug) for a configuration change, a VM's disk when its
//! volume grew, and what an instance's profiles gave it.

use vessel_api::{ConfigEffect, InstanceStatus, InstanceType};

use super::InstanceService;
use crate::error::{Error, Result};

impl InstanceService {
    /// Gives running VM `name` `memory` bytes of RAM now, if it can take them; says when the
    /// new size takes effect and why, if not now.
    pub(super) async fn vm_memory(
        &self,
        name: &str,
        memory: Option<u64>,
    ) -> (ConfigEffect, Option<String>) {
        let later = |why: String| (ConfigEffect::NextStart, Some(why));
        let Some(bytes) = memory else {
            return later("a VM's memory is fixed at start without a limit; restart it".into());
        };
        let Some(vm) = self.vms.get(name) else {
            return later("the VM is not running here".into());
        };
        let mib = bytes >> 20;
        match tokio::task::spawn_blocking(move || vm.set_memory(mib)).await {
            Ok(Ok(change)) if change.complete => (ConfigEffect::Live, None),
            Ok(Ok(_)) => (
                ConfigEffect::Live,
                Some("the guest gives the memory back as it frees it".into()),
            ),
            Ok(Err(e)) => later(format!(
                "{}; it boots with the new size at its next start",
                crate::error::chain(&e)
            )),
            Err(e) => later(format!("memory task: {e}")),
        }
    }

    /// Gives running VM `name` the vCPUs `cpu` cores ask for (rounded up) now, if it can take
    /// them; says when the new count takes effect and why, if not now.
    pub(super) async fn vm_cpus(
        &self,
        name: &str,
        cpu: Option<f64>,
    ) -> (ConfigEffect, Option<String>) {
        let later = |why: String| (ConfigEffect::NextStart, Some(why));
        let Some(cores) = cpu else {
            return later("a VM without a cpu limit has one vCPU from its next start".into());
        };
        let Some(vm) = self.vms.get(name) else {
            return later("the VM is not running here".into());
        };
        let n = cores.ceil().max(1.0) as u32;
        match tokio::task::spawn_blocking(move || vm.add_vcpus(n)).await {
            Ok(Ok(_)) => (ConfigEffect::Live, None),
            Ok(Err(e)) => later(format!(
                "{}; it boots with the new count at its next start",
                crate::error::chain(&e)
            )),
            Err(e) => later(format!("vCPU task: {e}")),
        }
    }

    /// Every instance as project limits count it: a running VM with what it holds where that
    /// is more than its limits say (a lowered limit that waits for its next start, memory the
    /// guest has not given back yet), so that lowering a limit frees nothing before it does.
    pub async fn held_records(&self) -> Result<Vec<vessel_api::Instance>> {
        let mut all = self.records()?;
        let vms = self.vms.clone();
        let running: Vec<(usize, std::sync::Arc<vessel_vm::RunningVm>)> = all
            .iter()
            .enumerate()
            .filter(|(_, i)| i.instance_type == InstanceType::Vm)
            .filter_map(|(n, i)| vms.get(&i.name).map(|vm| (n, vm)))
            .collect();
        if running.is_empty() {
            return Ok(all);
        }
        let held = tokio::task::spawn_blocking(move || {
            running
                .into_iter()
                .map(|(n, vm)| {
                    // Not known: the most it could hold.
                    let held = vm.held().unwrap_or((
                        vm.record.vcpus_max,
                        vm.record.memory_max_mib.unwrap_or(vm.record.memory_mib),
                    ));
                    (n, held)
                })
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| Error::internal(format!("held resources task: {e}")))?;
        for (n, (vcpus, memory_mib)) in held {
            let l = &mut all[n].limits;
            if let (Some(v), Some(cpu)) = (vcpus, l.cpu) {
                l.cpu = Some(cpu.max(v as f64));
            }
            if let Some(m) = l.memory {
                l.memory = Some(m.max(memory_mib << 20));
            }
        }
        Ok(all)
    }

    /// Records the networks and volumes `name`'s profiles gave it.
    pub fn set_profile_devices(&self, name: &str, d: &vessel_api::ProfileDevices) -> Result<()> {
        Ok(self.store.instance_set_profile_devices(name, d)?)
    }

    /// A block volume file of `name` grew to `size`: a running VM's disk on it is resized
    /// under the guest, under the instance's lock (a stopped VM reads the new size at start).
    pub async fn disk_grown(&self, name: &str, file: &std::path::Path, size: u64) -> Result<()> {
        let lock = self.lock_for(name);
        let _g = lock.lock().await;
        let inst = self.get_stored(name)?;
        if inst.instance_type != InstanceType::Vm || inst.status != InstanceStatus::Running {
            return Ok(());
        }
        let Some(vm) = self.vms.get(name) else {
            return Ok(());
        };
        let file = file.to_path_buf();
        let grown = tokio::task::spawn_blocking(move || vm.grow_disk(&file, size))
            .await
            .map_err(|e| Error::internal(format!("disk resize task: {e}")))?
            .map_err(|e| {
                Error::internal(format!(
                    "the volume grew but {name} was not told: {}",
                    crate::error::chain(&e)
                ))
            })?;
        if !grown {
            tracing::info!(instance = %name, "no disk of the VM reads the grown file");
        }
        Ok(())
    }
}
