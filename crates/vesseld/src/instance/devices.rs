//! Devices of an instance that change while it exists: NICs (hot-plugged into a running
//! container, changed on a stopped VM). Changes go through the instance's lock, so they
//! never race its start or stop.

use vessel_api::{Instance, InstanceStatus, InstanceType, Network, NicAttach};

use super::InstanceService;
use crate::error::{Error, Result};

impl InstanceService {
    /// The init pid of a container whose NICs may change now: `None` when it is stopped
    /// (they are plugged at start), `Some` when it runs or is frozen (hot add and remove).
    /// A VM's NICs change only while it is stopped.
    fn nic_target(&self, name: &str) -> Result<(Instance, Option<i32>)> {
        let inst = self.get_stored(name)?;
        use InstanceStatus as S;
        match (inst.instance_type, inst.status) {
            (_, S::Stopped) => Ok((inst, None)),
            (InstanceType::Container, S::Running | S::Frozen) => {
                let pid = self.driver.init_pid(name).ok_or_else(|| {
                    Error::conflict(format!(
                        "instance {name:?} is running but its init is not found; try again"
                    ))
                })?;
                Ok((inst, Some(pid)))
            }
            (InstanceType::Vm, S::Running | S::Frozen) => Err(Error::conflict(format!(
                "virtual machine {name:?} is running; stop it to change its NICs (containers \
                 take NICs while running)"
            ))),
            (_, s) => Err(Error::conflict(format!(
                "instance {name:?} is {}; wait until it is running or stopped",
                s.as_str()
            ))),
        }
    }

    /// Gives an instance a NIC on a network, plugged at once into a running container.
    pub async fn nic_attach(&self, network: String, req: NicAttach) -> Result<Network> {
        let lock = self.lock_for(&req.instance);
        let _g = lock.lock().await;
        let (inst, pid) = self.nic_target(&req.instance)?;
        let nets = self.networks.clone();
        tokio::task::spawn_blocking(move || nets.attach(&network, req, &inst, pid))
            .await
            .map_err(|e| Error::internal(format!("network task: {e}")))?
    }

    /// Removes an instance's NIC from a network, at once from a running container.
    pub async fn nic_detach(&self, network: String, instance: String) -> Result<Network> {
        let lock = self.lock_for(&instance);
        let _g = lock.lock().await;
        // A NIC left by an instance that is gone can always go; a live container's NIC goes
        // with its host end, which needs no pid.
        match self.get_stored(&instance) {
            Err(e) if e.kind == crate::error::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
            Ok(i) if i.instance_type == InstanceType::Vm && i.status != InstanceStatus::Stopped => {
                return Err(Error::conflict(format!(
                    "virtual machine {instance:?} is {}; stop it to change its NICs",
                    i.status.as_str()
                )))
            }
            Ok(_) => {}
        }
        let nets = self.networks.clone();
        tokio::task::spawn_blocking(move || nets.detach(&network, &instance))
            .await
            .map_err(|e| Error::internal(format!("network task: {e}")))?
    }
}
