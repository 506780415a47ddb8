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
