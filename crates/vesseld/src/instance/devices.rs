//! Devices of an instance that change while it exists: NICs (hot-plugged into a running
//! container, changed on a stopped VM) and volumes (changed while it is stopped). Every
//! change runs under the instance's lock, which a start or stop holds from its first step
//! to its last, so a change either lands before a start reads the devices or finds the
//! instance running and is refused; the services of networks and storage are told what to
//! do and never look the instance up themselves.

use vessel_api::{
    Instance, InstanceCreate, InstanceStatus, InstanceType, Network, NicAttach, StorageVolume,
    VolumeAttach,
};

use super::InstanceService;
use crate::error::{Error, Result};

impl InstanceService {
    /// The networks a new instance gets a NIC on, in order: those it names, none with
    /// `no_network`, else the default network (if the daemon has one). Checked before the
    /// instance is recorded.
    pub(super) fn initial_networks(&self, req: &InstanceCreate) -> Result<Vec<String>> {
        if req.no_network {
            if !req.networks.is_empty() {
                return Err(Error::invalid(
                    "--no-network and --network do not mix: give one or the other",
                ));
            }
            return Ok(Vec::new());
        }
        if req.networks.is_empty() {
            return Ok(self.networks.default_network()?.into_iter().collect());
        }
        let mut out: Vec<String> = Vec::new();
        for n in &req.networks {
            if out.contains(n) {
                return Err(Error::invalid(format!(
                    "network {n:?} is named twice: an instance has one NIC per network"
                )));
            }
            self.networks.get(n)?;
            out.push(n.clone());
        }
        Ok(out)
    }

    /// Gives a new instance its NICs (`eth0` on the first network); the caller holds its
    /// lock while it is being created.
    pub(super) async fn attach_initial_nics(&self, inst: &Instance, nets: &[String]) -> Result<()> {
        for network in nets {
            let (svc, network, inst) = (self.networks.clone(), network.clone(), inst.clone());
            tokio::task::spawn_blocking(move || {
                let req = NicAttach {
                    instance: inst.name.clone(),
                    ip: None,
                    mac: None,
                    vlan: None,
                    ingress: None,
                    egress: None,
                };
                svc.attach(&network, req, &inst, None)
            })
            .await
            .map_err(|e| Error::internal(format!("network task: {e}")))??;
        }
        Ok(())
    }

    /// Fills in the NICs and volumes of `list`.
    pub(super) fn with_devices(&self, list: &mut [Instance]) -> Result<()> {
        let mut nics = self.networks.nics_by_instance()?;
        let mut volumes = self.storage.volumes_by_instance()?;
        for inst in list {
            inst.nics = nics.remove(&inst.name).unwrap_or_default();
            inst.volumes = volumes.remove(&inst.name).unwrap_or_default();
        }
        Ok(())
    }

    /// The instance `name`, which must be stopped before its `what` can change.
    fn stopped(&self, name: &str, what: &str) -> Result<Instance> {
        let inst = self.get_stored(name)?;
        if inst.status != InstanceStatus::Stopped {
            return Err(Error::conflict(format!(
                "instance {name:?} is {}; stop it before changing its {what}",
                inst.status.as_str()
            )));
        }
        Ok(inst)
    }

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

    /// Attaches a volume to a stopped instance: a mount for a container, a disk for a VM.
    pub async fn volume_attach(
        &self,
        pool: String,
        volume: String,
        req: VolumeAttach,
    ) -> Result<StorageVolume> {
        let lock = self.lock_for(&req.instance);
        let _g = lock.lock().await;
        let inst = self.stopped(&req.instance, "volumes")?;
        let storage = self.storage.clone();
        tokio::task::spawn_blocking(move || {
            storage.attach(&pool, &volume, &req.instance, inst.instance_type, &req.path)
        })
        .await
        .map_err(|e| Error::internal(format!("storage task: {e}")))?
    }

    /// Detaches a volume from a stopped instance (or from one that is gone).
    pub async fn volume_detach(
        &self,
        pool: String,
        volume: String,
        instance: String,
    ) -> Result<StorageVolume> {
        let lock = self.lock_for(&instance);
        let _g = lock.lock().await;
        match self.get_stored(&instance) {
            Err(e) if e.kind == crate::error::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
            Ok(i) if i.status != InstanceStatus::Stopped => {
                return Err(Error::conflict(format!(
                    "instance {instance:?} is {}; stop it before detaching volumes",
                    i.status.as_str()
                )))
            }
            Ok(_) => {}
        }
        let storage = self.storage.clone();
        tokio::task::spawn_blocking(move || storage.detach(&pool, &volume, &instance))
            .await
            .map_err(|e| Error::internal(format!("storage task: {e}")))?
    }
}
