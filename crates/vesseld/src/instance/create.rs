//! Creating an instance: the request checked, then an operation that prepares its files,
//! root disk, NICs and storage, and starts it.

use vessel_api::InstanceCreate;

use super::*;

/// Work on a new instance's files before it first starts (see
/// [`InstanceService::create_with`]).
pub(crate) type Fill =
    Box<dyn FnOnce(&InstanceService, &Instance, &crate::operations::OpHandle) -> Result<()> + Send>;

impl InstanceService {
    /// Validates a create request and starts the operation that creates (and starts) it.
    pub fn create(
        &self,
        req: InstanceCreate,
        own: std::collections::BTreeMap<String, String>,
        from_profiles: vessel_api::ProfileDevices,
    ) -> Result<Operation> {
        self.create_with(req, own, from_profiles, None)
    }

    /// As [`InstanceService::create`], with `fill` run on the new instance's files (a
    /// restore's) once its disks exist and before it starts; a failure rolls the creation
    /// back like any other.
    pub(crate) fn create_with(
        &self,
        req: InstanceCreate,
        own: std::collections::BTreeMap<String, String>,
        from_profiles: vessel_api::ProfileDevices,
        fill: Option<Fill>,
    ) -> Result<Operation> {
        crate::name::validate_qualified("instance", &req.name)?;
        limits::validate(&req.limits)?;
        exec::check_environment(&req.environment)?;
        if let Some(cmd) = &req.command {
            exec::check_command(cmd)?;
        }
        let image = self.images.by_fingerprint(&req.image)?;
        let networks = self.initial_networks(&req)?;
        match (req.instance_type, image.kind) {
            (InstanceType::Container, vessel_api::ImageKind::Vm) => {
                return Err(Error::invalid(format!(
                    "image {} is a VM image; launch it with --vm",
                    req.image
                )))
            }
            (InstanceType::Vm, vessel_api::ImageKind::Container) => {
                return Err(Error::invalid(format!(
                    "image {} is a container image; launch it without --vm, or build a VM \
                     image with `vessel image build vm`",
                    req.image
                )))
            }
            _ => {}
        }
        if req.instance_type == InstanceType::Vm {
            if req.command.is_some() || req.privileged {
                return Err(Error::invalid(
                    "a VM runs its image's own init: --privileged and a command do not apply",
                ));
            }
            check_memory(&req.limits)?;
            if req.limits.disk.is_some() {
                return Err(Error::invalid(
                    "limits.disk sizes a container's root disk; a VM's root disk is its \
                     image's disk (resize its volume with --storage, or the image)",
                ));
            }
            vm::check_ssh_keys(&req.ssh_keys)?;
            if let Some(pool) = &req.storage {
                if vm::image_disk(&self.images.image_dir(&image.fingerprint)).is_none() {
                    return Err(Error::invalid(format!(
                        "image {} has no disk to put into pool {pool:?}; use a disk image (e.g.                          `vessel image build vm --layout disk`)",
                        req.image
                    )));
                }
                self.storage.root_check(pool, &req.name)?;
            }
        } else if !req.ssh_keys.is_empty() {
            return Err(Error::invalid(
                "SSH keys are installed in VM guests; for a container, push an authorized_keys \
                 file with `vessel file push`",
            ));
        } else if req.command.is_none() && image.command.is_empty() {
            return Err(Error::invalid(format!(
                "image {} has no default command; give one after --, e.g. \
                 vessel launch {} {} -- /bin/sh",
                req.image, req.image, req.name
            )));
        } else {
            self.root_disk_check(&req)?;
        }
        // Unprivileged containers get a host id range of their own unless asked to share; a
        // VM always gets one, whose first id its QEMU runs as.
        let isolated = match (req.instance_type, req.privileged, req.idmap_isolated) {
            (InstanceType::Container, false, asked) => Some(asked.unwrap_or(true)),
            (InstanceType::Vm, _, None) => Some(true),
            (_, _, None) => None,
            _ => {
                return Err(Error::invalid(
                    "security.idmap.isolated applies to unprivileged containers: a privileged \
                     container has no id map and a VM's QEMU always runs as a host id of its \
                     own (drop --idmap-shared)",
                ))
            }
        };
        let mut inst = Instance {
            project: None,
            name: req.name.clone(),
            instance_type: req.instance_type,
            status: InstanceStatus::Creating,
            image: image.fingerprint.clone(),
            privileged: req.privileged,
            idmap: (isolated == Some(false)).then(|| self.driver.shared_idmap()),
            limits: req.limits,
            command: req.command.unwrap_or_else(|| image.command.clone()),
            environment: req.environment,
            config: req.config.clone(),
            profiles: req.profiles.clone(),
            own_config: own,
            from_profiles,
            ssh_keys: req.ssh_keys,
            storage: req.storage.clone(),
            created_at: crate::clock::now(),
            last_exit_code: None,
            last_exit_reason: None,
            error: None,
            state: None,
            vm: None,
            nics: Vec::new(),
            volumes: Vec::new(),
            root_disk: None,
            location: None,
        };
        let inserted = if isolated == Some(true) {
            self.store
                .instance_insert_isolated(&inst, self.driver.id_pool())
                .map(|m| inst.idmap = Some(m))
        } else {
            self.store.instance_insert(&inst)
        };
        inserted.map_err(|e| match e {
            StoreError::Exists(_) => Error::conflict(format!(
                "an instance named {:?} already exists; pick another name or delete it first",
                inst.name
            )),
            e => e.into(),
        })?;
        self.events
            .lifecycle("instance-created", &path_of(&inst.name));
        let svc = self.clone();
        let volumes = req.volumes.clone();
        let start = req.start;
        let name = inst.name.clone();
        Ok(self.ops.spawn(
            format!("Creating instance {name}"),
            vec![path_of(&name)],
            true,
            move |op| async move {
                let lock = svc.lock_for(&name);
                let _g = lock.lock().await;
                let result = async {
                    op.progress(Some(10), "preparing files");
                    if inst.instance_type == InstanceType::Vm {
                        svc.vms.prepare(&inst)?;
                    } else {
                        svc.driver.prepare(&inst)?;
                    }
                    if inst.instance_type == InstanceType::Container && inst.limits.disk.is_some() {
                        op.progress(Some(20), "making the root disk");
                        let (s, i) = (svc.clone(), inst.clone());
                        tokio::task::spawn_blocking(move || s.make_root_disk(&i))
                            .await
                            .map_err(|e| Error::internal(format!("root disk task: {e}")))??;
                    }
                    svc.attach_initial_nics(&inst, &networks).await?;
                    for v in &volumes {
                        op.progress(Some(25), &format!("attaching volume {}", v.volume));
                        let (st, n, t, v) = (
                            svc.storage.clone(),
                            name.clone(),
                            inst.instance_type,
                            v.clone(),
                        );
                        tokio::task::spawn_blocking(move || {
                            st.attach(&v.pool, &v.volume, &n, t, &v.path)
                        })
                        .await
                        .map_err(|e| Error::internal(format!("storage task: {e}")))??;
                    }
                    op.check_cancel()?;
                    if let Some(pool) = inst
                        .storage
                        .clone()
                        .filter(|_| inst.instance_type == InstanceType::Vm)
                    {
                        let image = svc.images.by_fingerprint(&inst.image)?;
                        let (disk, format) =
                            vm::image_disk_format(&svc.images.image_dir(&image.fingerprint))
                                .ok_or_else(|| Error::invalid("the image has no disk"))?;
                        let (st, n, o) = (svc.storage.clone(), name.clone(), op.clone());
                        tokio::task::spawn_blocking(move || {
                            st.create_root_volume(&pool, &n, (&disk, format), &o)
                        })
                        .await
                        .map_err(|e| Error::internal(format!("root volume task: {e}")))??;
                    }
                    if let Some(fill) = fill {
                        op.progress(Some(30), "restoring its files");
                        let (s, i, o) = (svc.clone(), inst.clone(), op.clone());
                        tokio::task::spawn_blocking(move || fill(&s, &i, &o))
                            .await
                            .map_err(|e| Error::internal(format!("restore task: {e}")))??;
                    }
                    if start {
                        op.set_may_cancel(false);
                        svc.start_locked(&inst, &op).await?;
                    } else {
                        svc.set_status(&name, InstanceStatus::Stopped, None, None);
                    }
                    Ok(())
                }
                .await;
                if let Err(e) = &result {
                    // Nothing of a failed creation stays behind.
                    tracing::warn!(instance = %name, error = %e, "creation failed; rolling back");
                    if let Err(e) = svc.driver.remove_files(&name) {
                        tracing::warn!(instance = %name, error = %e, "rollback");
                    }
                    if let Err(e) = svc.storage.instance_deleted(&name) {
                        tracing::warn!(instance = %name, error = %e, "rollback of volumes");
                    }
                    if let Err(e) = svc.networks.instance_deleted(&name) {
                        tracing::warn!(instance = %name, error = %e, "rollback of NICs");
                    }
                    let _ = svc.store.instance_delete(&name);
                    svc.pending.forget(&name);
                    svc.events.lifecycle("instance-deleted", &path_of(&name));
                }
                result
            },
        ))
    }
}
