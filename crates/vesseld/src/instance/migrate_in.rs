//! The member a VM moves to live: the instance is made here stopped (its record as the
//! other member has it; its NICs with the same addresses and MACs; an empty overlay over
//! the same image), then its QEMU starts waiting for the state (`-incoming defer`) with
//! its disks exported for the other member's mirrors. At the end it runs here, or the copy
//! goes. See `migrate_live.rs` for the member it leaves.

use std::path::PathBuf;
use std::time::Duration;

use vessel_api::{InstanceStatus, InstanceType, MigrationIncoming, NicAttach};
use vessel_vm::{MigrationLinks, MigrationParams};

use super::InstanceService;
use crate::error::{chain, Error, Result};

/// The sockets of a waiting QEMU, in its run directory: the state, the disks' NBD server.
pub fn incoming_links(run: &std::path::Path) -> MigrationLinks {
    MigrationLinks {
        state: run.join("mig-state.sock"),
        disks: run.join("mig-disks.sock"),
    }
}

impl InstanceService {
    /// Makes `req.instance` here as `name` (qualified) and starts its QEMU waiting for the
    /// state; answers once it listens. The caller is the member it leaves.
    pub async fn incoming(&self, name: &str, req: MigrationIncoming) -> Result<()> {
        let (own, from) = (req.own_config.clone(), req.from_profiles.clone());
        let old = req.instance;
        if old.instance_type != InstanceType::Vm {
            return Err(Error::invalid("only a VM moves live"));
        }
        if self.get_stored(name).is_ok() {
            return Err(Error::conflict(format!(
                "instance {name} exists here already"
            )));
        }
        self.images.by_fingerprint(&old.image).map_err(|_| {
            Error::conflict(format!(
                "image {} of {name} is not here",
                crate::image::short(&old.image)
            ))
        })?;
        // Made stopped, without NICs; the fill gives it the NICs it has there.
        let mut create = self.recreate_request(&old, name, false);
        // Its profiles go along (they are the cluster's), with the keys it set itself.
        create.profiles = self.profiles_here(&old.profiles);
        create.networks.clear();
        create.no_network = true;
        let nics = old.nics.clone();
        let fill: super::create::Fill = Box::new(move |svc, inst, _op| {
            for n in &nics {
                let ip = n.ipv4.split('/').next().map(str::to_string);
                let req = NicAttach {
                    instance: inst.name.clone(),
                    ip: ip.filter(|ip| !ip.is_empty()),
                    mac: Some(n.mac.clone()),
                    vlan: n.vlan,
                    ingress: None,
                    egress: None,
                };
                svc.networks
                    .attach(&n.network, req, inst, None)
                    .map_err(|e| {
                        Error::conflict(format!(
                            "its NIC on network {} ({}, {}) cannot be made here: {e}",
                            n.network, n.ipv4, n.mac
                        ))
                    })?;
            }
            Ok(())
        });
        let op = self.create_with(create, own, from, Some(fill))?;
        let made = self.ops.wait(&op.id, None).await?;
        if made.status != vessel_api::OperationStatus::Success {
            return Err(Error::conflict(
                made.error
                    .unwrap_or_else(|| "making the instance failed".into()),
            ));
        }
        let lock = self.lock_for(name);
        let _g = lock.lock().await;
        let listening = self
            .listen_incoming(name, req.disk_size, req.multifd_channels)
            .await;
        if listening.is_err() {
            self.drop_incoming_locked(name).await;
        }
        listening
    }

    /// Starts the waiting QEMU of `name`. The caller holds its lock.
    async fn listen_incoming(&self, name: &str, disk_size: u64, channels: u8) -> Result<()> {
        let inst = self.get_stored(name)?;
        let image = self.images.by_fingerprint(&inst.image)?;
        let image_dir = self.images.image_dir(&image.fingerprint);
        self.set_status(name, InstanceStatus::Starting, None, None);
        let svc = self.clone();
        tokio::task::spawn_blocking(move || -> Result<()> {
            let user = super::vm_files::qemu_user(&inst)?;
            let volumes = svc
                .storage
                .vm_disks(&inst.name, inst.storage.as_deref(), user.uid)?;
            let (mut def, _) = svc.vms.machine(&inst, &image, &image_dir, volumes)?;
            def.nics.extend(svc.networks.vm_nics(&inst.name)?);
            def.incoming = true;
            // Grown to the size it has there (a disk grown while it ran there).
            if let Some(root) = def.disks.first().filter(|_| disk_size > 0) {
                vessel_vm::grow_image(&root.path, disk_size)
                    .map_err(|e| Error::internal(format!("root disk: {}", chain(&e))))?;
            }
            let vm = svc.vms.start(&def)?;
            let params = MigrationParams {
                multifd_channels: channels,
                ..MigrationParams::default()
            };
            vm.accept_migration(&incoming_links(&def.run_dir), &params)
                .map_err(|e| Error::internal(format!("QEMU did not listen: {}", chain(&e))))
        })
        .await
        .map_err(|e| Error::internal(format!("incoming VM task: {e}")))?
    }

    /// The socket of `name`'s waiting QEMU that `stream` (`state`, `disks`) reaches.
    pub fn incoming_socket(&self, name: &str, stream: &str) -> Result<PathBuf> {
        let vm = self
            .vms
            .get(name)
            .filter(|_| {
                self.get_stored(name)
                    .is_ok_and(|i| i.status == InstanceStatus::Starting)
            })
            .ok_or_else(|| Error::conflict(format!("no QEMU of {name} waits for a move here")))?;
        let links = incoming_links(&vm.record.paths.dir);
        match stream {
            "state" => Ok(links.state),
            "disks" => Ok(links.disks),
            other => Err(Error::invalid(format!(
                "{other:?}: the streams of a live move are `state` and `disks`"
            ))),
        }
    }

    /// The end of a live move of `name` here: `run`, it runs here once the whole state is
    /// in; otherwise the copy here goes.
    pub async fn incoming_end(&self, name: &str, run: bool) -> Result<()> {
        let lock = self.lock_for(name);
        let _g = lock.lock().await;
        let inst = self.get_stored(name)?;
        if inst.status != InstanceStatus::Starting || self.vms.get(name).is_none() {
            return Err(Error::conflict(format!(
                "instance {name} is not moving here (it is {})",
                inst.status.as_str()
            )));
        }
        if !run {
            self.drop_incoming_locked(name).await;
            return Ok(());
        }
        let vm = self.vms.get(name).expect("checked above");
        let pid = vm.pid;
        let ran = tokio::task::spawn_blocking(move || vm.finish_incoming(Duration::from_secs(60)))
            .await
            .map_err(|e| Error::internal(format!("incoming VM task: {e}")))?;
        match ran {
            Ok(()) => {
                self.mark_started(name, pid, true);
                Ok(())
            }
            Err(e) => {
                self.drop_incoming_locked(name).await;
                Err(Error::internal(format!(
                    "the guest did not run here: {}",
                    chain(&e)
                )))
            }
        }
    }

    /// Kills a waiting QEMU of `name` and removes the instance. The caller holds its lock.
    async fn drop_incoming_locked(&self, name: &str) {
        if let Some(vm) = self.vms.get(name) {
            let _ = tokio::task::spawn_blocking(move || vm.kill()).await;
        }
        let (svc, n) = (self.clone(), name.to_string());
        let _ = tokio::task::spawn_blocking(move || svc.vms.forget(&n)).await;
        self.set_status(name, InstanceStatus::Stopped, None, None);
        // Its removal as an operation of its own (the caller holds the lock it would take).
        let (svc, n) = (self.clone(), name.to_string());
        let op = self.ops.spawn(
            format!("Removing {name} after a failed move"),
            vec![super::path_of(name)],
            false,
            move |op| async move {
                let inst = svc.get_stored(&n)?;
                svc.remove_locked(&inst, &op).await
            },
        );
        let removed = self.ops.wait(&op.id, None).await;
        if let Err(e) = removed.and_then(|o| match o.error {
            Some(e) => Err(Error::internal(e)),
            None => Ok(()),
        }) {
            tracing::warn!(instance = name, error = %e, "the copy of a failed move stays");
        }
    }
}
