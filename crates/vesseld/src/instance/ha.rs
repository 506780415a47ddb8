//! Instances marked `cluster.ha=true`: what a member that fences itself stops, the gate a
//! start of one passes (the cluster must say it lives here), and what a member an instance
//! is failed over to does (its image fetched, the instance made again and started).

use std::collections::BTreeMap;
use std::path::PathBuf;

use vessel_api::{InstanceCreate, InstanceStatus, OperationStatus, StateAction, StateChange};

use super::InstanceService;
use crate::error::{Error, Result};

/// Whether an instance with `config` is highly available (`cluster.ha=true`).
pub fn is_ha(config: &BTreeMap<String, String>) -> bool {
    config.get("cluster.ha").map(String::as_str) == Some("true")
}

/// What a start of an HA instance asks first and again once it runs (given its qualified
/// name and whether it runs now): an error when it must not run here.
pub type HaGate = std::sync::Arc<
    dyn Fn(String, bool) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send>>
        + Send
        + Sync,
>;

/// What a failover keeps of an HA instance's profiles beside its creation request: its
/// profiles as its member had them, the keys it set itself and the devices its profiles
/// gave.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct RestartKeeps {
    /// Its profiles, in order, with what they held when the index was written.
    #[serde(default)]
    pub profiles: Vec<vessel_api::Profile>,
    /// Its own configuration keys.
    #[serde(default)]
    pub own_config: BTreeMap<String, String>,
    /// The networks and volumes its profiles gave it.
    #[serde(default)]
    pub from_profiles: vessel_api::ProfileDevices,
}

impl InstanceService {
    /// Has every start of an HA instance ask `gate` first (the cluster: it may run only on
    /// the member the cluster's index names).
    pub fn on_ha_start(&self, gate: HaGate) {
        let _ = self.ha_gate.set(gate);
    }

    /// The gate's answer for `name`, an HA instance about to start, or just started
    /// (`runs`).
    pub(super) async fn check_ha_start(
        &self,
        name: &str,
        config: &BTreeMap<String, String>,
        runs: bool,
    ) -> Result<()> {
        match self.ha_gate.get() {
            Some(gate) if is_ha(config) => gate(name.to_string(), runs).await,
            _ => Ok(()),
        }
    }

    /// Notes `inst` if it is an HA instance that ran when the daemon stopped and is gone
    /// now (its fence watchdog stopped it while the daemon was away).
    pub(super) fn note_lost_ha(&self, inst: &vessel_api::Instance) {
        if is_ha(&inst.config)
            && matches!(
                inst.status,
                InstanceStatus::Running | InstanceStatus::Frozen
            )
        {
            self.note_held(&inst.name);
        }
    }

    fn note_held(&self, name: &str) {
        let mut held = self.ha_lost.lock().unwrap_or_else(|p| p.into_inner());
        if !held.iter().any(|n| n == name) {
            held.push(name.to_string());
        }
    }

    /// Starts again the HA instances the fence stopped, or the fence watchdog while the
    /// daemon was away (called when this member is live again, and when its fence is
    /// lowered), each once the cluster lets it: this member live, unfenced, and still the one
    /// the index names (an instance failed over meanwhile is not, and its copy here goes).
    /// Tried for about two minutes; one still not started is tried again at the next call.
    pub async fn restart_lost_ha(&self) {
        let lost = std::mem::take(&mut *self.ha_lost.lock().unwrap_or_else(|p| p.into_inner()));
        for name in lost {
            let mut done = false;
            for attempt in 0..40 {
                let started = match self.change_state(
                    &name,
                    StateChange {
                        action: StateAction::Start,
                        timeout: None,
                        force: false,
                    },
                ) {
                    Ok(op) => self.wait_ok(&op.id).await,
                    Err(e) => Err(e),
                };
                match started {
                    Ok(()) => {
                        tracing::warn!(instance = %name, "HA instance stopped by the fence: started again");
                        done = true;
                        break;
                    }
                    // Moved, failed over, deleted or started meanwhile: nothing to do.
                    Err(e)
                        if e.message.contains("lives on member")
                            || e.kind == crate::error::ErrorKind::NotFound
                            || e.message.contains("cannot start it") =>
                    {
                        tracing::info!(instance = %name, reason = %e.message, "HA instance not started again here");
                        done = true;
                        break;
                    }
                    Err(e) => {
                        if attempt == 0 {
                            tracing::warn!(instance = %name, error = %e.message, "HA instance not started again yet; retrying");
                        }
                        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
                    }
                }
            }
            if !done {
                self.note_held(&name);
            }
        }
    }

    /// The creation request that makes `inst` again elsewhere, started (what a failover
    /// makes from the cluster's index), with what it keeps of its profiles: only for one
    /// that runs (its status as it is now, including what the store has not recorded yet).
    pub fn restart_request(
        &self,
        inst: &vessel_api::Instance,
    ) -> Option<(InstanceCreate, RestartKeeps)> {
        let now = self.pending.apply(inst.clone());
        if !matches!(now.status, InstanceStatus::Running | InstanceStatus::Frozen) {
            return None;
        }
        let mut req = self.recreate_request(&now, &now.name, true);
        // Its profiles (the cluster's: every member has them) as they are here, with the
        // keys it set itself, as a move keeps them. (Beside the request, not in it: a member
        // that does not know them makes it from its configuration alone.)
        let known = crate::profile::ProfileService::new(self.store.clone());
        let keeps = RestartKeeps {
            profiles: now
                .profiles
                .iter()
                .filter_map(|p| known.get(p).ok())
                .collect(),
            own_config: now.own_config.clone(),
            from_profiles: now.from_profiles.clone(),
        };
        // Its volumes too (those of a replicated pool are there after a failover; one of a
        // pool without a far copy keeps it from failing over). Not its root disk: that is
        // made again from the image (`storage`), as it always was.
        let root = crate::storage::root_volume(&now.name);
        req.volumes = self
            .storage
            .volumes_by_instance()
            .ok()?
            .remove(&now.name)
            .unwrap_or_default()
            .into_iter()
            .filter(|v| v.volume != root)
            .map(|v| vessel_api::VolumeDevice {
                pool: v.pool,
                volume: v.volume,
                path: v.path,
            })
            .collect();
        Some((req, keeps))
    }

    /// Makes pool `pool` of far copy `name` kept here, for the failover of an HA instance
    /// whose volumes are on it (the cluster swapped the roles and gave the copy's `file`;
    /// `from` is the lost primary).
    pub async fn adopt_pool(
        &self,
        pool: &str,
        name: &str,
        file: PathBuf,
        from: &str,
    ) -> Result<()> {
        let req = vessel_api::PoolCreate {
            name: pool.to_string(),
            driver: vessel_api::PoolDriver::Raid,
            sources: Vec::new(),
            size: None,
            members: None,
            level: None,
            chunk_size: None,
            replica: None,
            adopt: Some(name.to_string()),
            config: Default::default(),
            description: format!("adopted from far copy {name} for a failover"),
        };
        let (storage, from) = (self.storage.clone(), from.to_string());
        let op = self.ops.spawn(
            format!("Adopting far copy {name} as pool {pool} for a failover"),
            vec![format!("/1.0/storage/pools/{pool}")],
            false,
            move |op| async move {
                tokio::task::spawn_blocking(move || storage.pool_adopt(req, file, &from, &op))
                    .await
                    .map_err(|e| Error::internal(format!("storage task: {e}")))?
            },
        );
        self.wait_ok(&op.id).await
    }

    /// Imports the image archive `upload` (in `staging`, which goes) under `fingerprint`.
    pub async fn import_image_file(
        &self,
        staging: PathBuf,
        upload: PathBuf,
        fingerprint: &str,
        project: Option<&str>,
    ) -> Result<()> {
        let images = match project {
            Some(p) => self.images.in_project(p),
            None => self.images.clone(),
        };
        let fp = fingerprint.to_string();
        let op = self.ops.spawn(
            format!("Fetching image {}", crate::image::short(fingerprint)),
            vec![images.path(None)],
            false,
            move |op| async move {
                images
                    .import(staging, upload, None, false, Some(fp), op)
                    .await
                    .map(|_| ())
            },
        );
        self.wait_ok(&op.id).await
    }

    /// The processes of the HA instances running here (pid and start time): a container's
    /// init, a VM's QEMU. What the fence watchdog kills if the daemon falls silent.
    pub fn ha_pids(&self) -> Vec<(i32, u64)> {
        let Ok(list) = self.store.instance_list() else {
            return Vec::new();
        };
        list.into_iter()
            .map(|i| self.pending.apply(i))
            .filter(|i| is_ha(&i.config) && i.status != InstanceStatus::Stopped)
            .filter_map(|i| {
                let pid = match i.instance_type {
                    vessel_api::InstanceType::Vm => self.vms.get(&i.name).map(|v| v.pid),
                    vessel_api::InstanceType::Container => self.driver.init_pid(&i.name),
                }?;
                Some((pid, vessel_vm::host::start_time(pid)?))
            })
            .collect()
    }

    /// A staging directory for an image on its way in.
    pub fn image_staging(&self) -> Result<PathBuf> {
        self.images.staging()
    }

    /// Whether the image `fingerprint` is here.
    pub fn has_image(&self, fingerprint: &str) -> bool {
        self.images.by_fingerprint(fingerprint).is_ok()
    }

    /// Makes `spec` here and starts it: an HA instance failed over to this member.
    pub async fn fail_over_here(
        &self,
        mut spec: InstanceCreate,
        keeps: RestartKeeps,
    ) -> Result<()> {
        let known = crate::profile::ProfileService::new(self.store.clone());
        // (A request from before the profiles travelled beside it names none.)
        let names: Vec<String> = match keeps.profiles.is_empty() {
            true => spec.profiles.clone(),
            false => keeps.profiles.iter().map(|p| p.name.clone()).collect(),
        };
        spec.profiles = self.profiles_here(&names);
        let op = self.create(spec, keeps.own_config, keeps.from_profiles)?;
        self.wait_ok(&op.id).await?;
        // Made with its profiles as its old member had them: a change that member missed
        // reaches it here (see `api/profile_catch_up.rs`), once it is made.
        for p in keeps.profiles.iter().filter(|p| known.get(&p.name).is_ok()) {
            if let Err(e) = known.note_missed(&p.name, p) {
                tracing::warn!(profile = %p.name, error = %e.message, "a failed-over instance's profile not noted: a change its old member missed may not reach it");
            }
        }
        Ok(())
    }

    /// Deletes this member's copy of `name` (stopped first, forced): the cluster failed it
    /// over to another member while this one was cut off, so this copy is stale.
    pub async fn delete_stale(&self, name: &str) -> Result<()> {
        let op = self.delete(name, true, false)?;
        self.wait_ok(&op.id).await
    }

    async fn wait_ok(&self, id: &str) -> Result<()> {
        let done = self.ops.wait(id, None).await?;
        if done.status == OperationStatus::Success {
            Ok(())
        } else {
            Err(Error::conflict(
                done.error.unwrap_or_else(|| "the operation failed".into()),
            ))
        }
    }

    /// Stops every `cluster.ha` instance that is not stopped, forced (a fenced member must
    /// stop writing now, not after a clean shutdown's grace), one after another. Returns
    /// the names stopped; a failure is logged and the next one stopped.
    pub async fn stop_ha(&self) -> Vec<String> {
        let list = match self.store.instance_list() {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "fenced, but the instances cannot be listed");
                return Vec::new();
            }
        };
        let mut stopped = Vec::new();
        for i in list
            .into_iter()
            .map(|i| self.pending.apply(i))
            .filter(|i| is_ha(&i.config) && i.status != InstanceStatus::Stopped)
        {
            tracing::warn!(instance = %i.name, "fenced: stopping an HA instance");
            let change = StateChange {
                action: StateAction::Stop,
                timeout: None,
                force: true,
            };
            let done = match self.change_state(&i.name, change) {
                Ok(op) => self.ops.wait(&op.id, None).await.map(|_| ()),
                Err(e) => Err(e),
            };
            let ended = match done {
                Ok(()) => true,
                // Stopped meanwhile all the same (the fence watchdog kills what a slow
                // stop left at its deadline): started again when the fence lowers, too.
                Err(_)
                    if self
                        .get_stored(&i.name)
                        .is_ok_and(|now| now.status == InstanceStatus::Stopped) =>
                {
                    true
                }
                Err(e) => {
                    tracing::error!(instance = %i.name, error = %e, "fenced: the HA instance did not stop");
                    false
                }
            };
            if ended {
                self.note_held(&i.name);
                stopped.push(i.name)
            }
        }
        stopped
    }
}
