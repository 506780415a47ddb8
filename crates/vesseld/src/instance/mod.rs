//! The instance service: the one owner of instance state. Routes hand it actions; it checks
//! them, records the outcome in the store, drives the container driver, and announces events.

mod archive_snapshots;
pub mod autostart;
pub mod backup;
mod carry;
pub use carry::carried_in;
pub mod config;
mod copy;
mod create;
mod devices;
pub mod driver;
pub mod exec;
pub mod files;
pub mod ha;
mod leftovers;
pub mod limits;
pub mod logs;
mod migrate;
pub mod migrate_in;
mod migrate_live;
mod move_pool;
pub mod publish;
mod rebuild;
mod remap;
mod rename;
mod resize;
mod resolv;
pub mod root_disk;
pub mod schedule;
mod snapshot_schedule;
pub use snapshot_schedule::SnapshotGate;
mod snapshots;
mod status;
pub mod systemd;
pub mod users;
pub mod vm;
mod vm_files;
mod vm_lifecycle;
use vm_lifecycle::check_memory;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use vessel_api::{
    Instance, InstanceState, InstanceStatus, InstanceType, Operation, StateAction, StateChange,
};

use crate::error::{Error, Result};
use crate::events::Events;
use crate::image::ImageService;
use crate::operations::{OpHandle, Operations};
use crate::store::{Store, StoreError};
use driver::ContainerDriver;

/// Seconds a graceful stop waits by default before killing.
const DEFAULT_STOP_TIMEOUT: u64 = 30;
/// Longest graceful stop a request may ask for: an hour.
const MAX_STOP_TIMEOUT: u64 = 3600;

/// Owns instances.
#[derive(Clone)]
pub struct InstanceService {
    store: Arc<dyn Store>,
    images: ImageService,
    ops: Operations,
    events: Events,
    /// The container driver.
    pub driver: Arc<ContainerDriver>,
    /// The VM driver.
    pub vms: Arc<vm::VmDriver>,
    /// Volumes attached to instances.
    pub storage: crate::storage::StorageService,
    /// NICs of instances.
    pub networks: crate::network::NetworkService,
    locks: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
    /// Per running instance: becomes true when its monitor has ended and the store says so.
    exits: Arc<Mutex<HashMap<String, watch::Receiver<bool>>>>,
    /// Statuses the store has not recorded yet.
    pending: status::PendingStatus,
    /// Told the qualified name of each instance removed (the cluster lets its name go).
    removed: Arc<std::sync::OnceLock<RemovalHook>>,
    /// Asked before an HA instance starts (the cluster: whether it lives here).
    ha_gate: Arc<std::sync::OnceLock<ha::HaGate>>,
    /// HA instances that ran when the daemon stopped and were gone at its start (stopped
    /// by the fence watchdog): started again once the cluster lets them.
    ha_lost: Arc<Mutex<Vec<String>>>,
}

/// What is told of a removed instance (see [`InstanceService::on_removed`]).
pub type RemovalHook = Arc<
    dyn Fn(String) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> + Send + Sync,
>;

/// Signal number for a name like "SIGTERM", "TERM", "15" or "SIGRTMIN+3".
pub fn signal_number(name: &str) -> Option<i32> {
    vessel_container::parse_signal(name)
}

impl InstanceService {
    /// The service.
    #[allow(clippy::too_many_arguments)] // one per service it coordinates
    pub fn new(
        store: Arc<dyn Store>,
        images: ImageService,
        ops: Operations,
        events: Events,
        driver: ContainerDriver,
        vms: vm::VmDriver,
        storage: crate::storage::StorageService,
        networks: crate::network::NetworkService,
    ) -> Self {
        let mut vms = vms;
        vms.console_log_sink = Some(driver.libexec.join("vessel-monitor"));
        Self {
            store,
            images,
            ops,
            events,
            driver: Arc::new(driver),
            vms: Arc::new(vms),
            storage,
            networks,
            locks: Arc::default(),
            exits: Arc::default(),
            pending: status::PendingStatus::default(),
            removed: Arc::default(),
            ha_gate: Arc::default(),
            ha_lost: Arc::default(),
        }
    }

    fn lock_for(&self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(name.to_string()).or_default().clone()
    }

    pub(crate) fn get_stored(&self, name: &str) -> Result<Instance> {
        self.store
            .instance_get(name)
            .map(|i| self.pending.apply(i))
            .map_err(|e| match e {
                StoreError::NotFound(_) => {
                    Error::not_found(format!("instance {name:?} not found; see `vessel list`"))
                }
                e => e.into(),
            })
    }

    /// Records a status; when the store cannot (a full disk), the service keeps it, shows
    /// it, and records it as soon as it can.
    fn set_status(&self, name: &str, status: InstanceStatus, code: Option<i32>, err: Option<&str>) {
        self.pending.set(&self.store, name, status, code, err);
    }

    fn set_exit(&self, name: &str, exit: &vessel_vm::VmExit) {
        let reason = exit.describe();
        if let Err(e) = self
            .store
            .instance_set_exit(name, exit.exit_code(), Some(&reason))
        {
            tracing::warn!(instance = name, error = %e, "could not record the exit reason");
        }
    }

    /// One instance with its live state.
    pub fn get(&self, name: &str) -> Result<Instance> {
        let mut inst = self.get_stored(name)?;
        inst.state = Some(self.live_state(&inst));
        if inst.instance_type == InstanceType::Vm {
            inst.vm = self.vms.details(name);
        }
        self.with_devices(std::slice::from_mut(&mut inst))?;
        inst.root_disk = self.root_disk_view(&inst);
        Ok(inst)
    }

    /// Every instance; with `state`, each with its live usage.
    pub fn list(&self, state: bool) -> Result<Vec<Instance>> {
        self.list_where(state, |_| true)
    }

    /// The instances whose (qualified) name `keep` takes, with their devices and, with
    /// `state`, their live usage: what others have is neither read nor shown.
    pub fn list_where(&self, state: bool, keep: impl Fn(&str) -> bool) -> Result<Vec<Instance>> {
        let mut list: Vec<Instance> = self
            .records()?
            .into_iter()
            .filter(|i| keep(&i.name))
            .collect();
        if state {
            for inst in &mut list {
                inst.state = Some(self.live_state(inst));
            }
        }
        self.with_devices(&mut list)?;
        Ok(list)
    }

    /// Every instance as stored (its status as a change in progress makes it), without its
    /// devices or live usage: what quotas count.
    pub fn records(&self) -> Result<Vec<Instance>> {
        Ok(self
            .store
            .instance_list()?
            .into_iter()
            .map(|i| self.pending.apply(i))
            .collect())
    }

    fn live_state(&self, inst: &Instance) -> InstanceState {
        if inst.instance_type == InstanceType::Vm {
            return self.vms.usage(&inst.name);
        }
        match inst.status {
            InstanceStatus::Running | InstanceStatus::Frozen | InstanceStatus::Stopping => {
                self.driver.usage(&inst.name).unwrap_or_default()
            }
            _ => InstanceState::default(),
        }
    }

    /// Live usage of one instance.
    pub fn state(&self, name: &str) -> Result<InstanceState> {
        let inst = self.get_stored(name)?;
        Ok(self.live_state(&inst))
    }

    /// Starts a stopped instance; the caller holds the instance's lock. An HA instance asks
    /// the cluster before, and again once it runs (a fence that went up meanwhile, or a
    /// failover, stops it again at once; the fence watchdog learns of its process then).
    async fn start_locked(&self, inst: &Instance, op: &OpHandle) -> Result<()> {
        self.check_ha_start(&inst.name, &inst.config, false).await?;
        self.start_unchecked(inst, op).await?;
        if let Err(e) = self.check_ha_start(&inst.name, &inst.config, true).await {
            tracing::warn!(instance = %inst.name, error = %e, "HA instance stopped right after its start");
            let now = self.get_stored(&inst.name)?;
            self.stop_locked(&now, std::time::Duration::ZERO, true, op)
                .await?;
            return Err(e);
        }
        Ok(())
    }

    async fn start_unchecked(&self, inst: &Instance, op: &OpHandle) -> Result<()> {
        if inst.instance_type == InstanceType::Vm {
            return self.start_vm(inst, op).await;
        }
        let image = self.images.by_fingerprint(&inst.image)?;
        op.progress(Some(30), "preparing root file system");
        let lowers = self.images.lower_layers(&image)?;
        let place = self.root_place(inst)?;
        self.driver.prepare(inst)?;
        // Defaults, then what the image asks for, then what the instance says.
        let mut env: BTreeMap<String, String> = [
            (
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            ),
            ("TERM", "xterm"),
            ("HOME", "/root"),
            ("container", "vessel"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for kv in &image.environment {
            if let Some((k, v)) = kv.split_once('=') {
                env.insert(k.to_string(), v.to_string());
            }
        }
        env.extend(inst.environment.clone());
        let env: Vec<String> = env.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
        let run = {
            let (user, cwd, layers) = (
                image.user.clone(),
                image.working_dir.clone(),
                lowers.clone(),
            );
            tokio::task::spawn_blocking(move || {
                driver::RunAs::resolve(user.as_deref(), cwd.as_deref(), &layers)
            })
            .await
            .map_err(|e| Error::internal(format!("user lookup task: {e}")))??
        };
        let mut volumes = {
            let (st, n, shared) = (
                self.storage.clone(),
                inst.name.clone(),
                self.driver.idmap_base,
            );
            tokio::task::spawn_blocking(move || st.container_mounts(&n, shared))
                .await
                .map_err(|e| Error::internal(format!("volume task: {e}")))??
        };
        // The network's resolver rides with the volume mounts (see resolv.rs).
        volumes.extend(self.resolv_mount(inst, &lowers, &volumes).await?);
        let boots_systemd =
            systemd::is_systemd_init(&inst.command, &image.command, &image.stop_signal);
        let binds = self
            .driver
            .write_bundle(inst, &env, &run, &volumes, boots_systemd)?;
        op.progress(Some(60), "starting");
        if inst.status != InstanceStatus::Creating {
            self.set_status(&inst.name, InstanceStatus::Starting, None, None);
        }
        let overlay = self.driver.overlay(inst, &lowers, &place);
        match self.driver.spawn_monitor(inst, overlay, binds).await {
            Ok((pid, monitor)) => {
                tracing::info!(instance = %inst.name, pid, monitor, "instance started");
                self.mark_started(&inst.name, monitor, false);
                op.progress(Some(90), "plugging NICs");
                let (nets, n) = (self.networks.clone(), inst.name.clone());
                tokio::task::spawn_blocking(move || nets.plug_container(&n, pid))
                    .await
                    .map_err(|e| Error::internal(format!("network task: {e}")))?
            }
            Err(e) => {
                // A monitor killed while it launched leaves its mounts (the root disk's loop
                // device with them): nothing of the failed start stays.
                if self.driver.live_monitor(&inst.name).is_none() {
                    self.driver.cleanup_orphan(&inst.name);
                }
                if inst.status != InstanceStatus::Creating {
                    self.set_status(&inst.name, InstanceStatus::Stopped, None, None);
                }
                Err(e)
            }
        }
    }

    /// Records that an instance runs and follows its monitor (for a VM: QEMU).
    fn mark_started(&self, name: &str, monitor_pid: i32, is_vm: bool) {
        self.set_status(name, InstanceStatus::Running, None, None);
        self.follow(name, monitor_pid, is_vm);
        self.events.lifecycle("instance-started", &path_of(name));
    }

    /// Follows a running instance's monitor; when it ends, records the exit in the store.
    fn follow(&self, name: &str, monitor_pid: i32, is_vm: bool) {
        let (tx, rx) = watch::channel(false);
        self.exits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), rx);
        let svc = self.clone();
        let name = name.to_string();
        tokio::spawn(async move {
            ContainerDriver::wait_monitor(monitor_pid).await;
            let mut vm_exit = None;
            let code = if is_vm {
                let (s, n) = (svc.clone(), name.clone());
                vm_exit = tokio::task::spawn_blocking(move || s.vms.forget(&n))
                    .await
                    .ok()
                    .flatten();
                vm_exit.as_ref().and_then(|e| e.exit_code())
            } else {
                let exit = svc.driver.exit_status(&name);
                // A monitor that crashed leaves its container's leftovers: remove them.
                svc.driver.cleanup_orphan(&name);
                // Its veths went with its namespace; their IFB devices go too.
                let nets = svc.networks.clone();
                let _ = tokio::task::spawn_blocking(move || nets.prune_ifbs()).await;
                exit.as_ref().map(|e| e.exit_code)
            };
            if svc.store.instance_get(&name).is_ok() {
                svc.set_status(&name, InstanceStatus::Stopped, code, None);
                if let Some(exit) = &vm_exit {
                    svc.set_exit(&name, exit);
                }
                svc.events.lifecycle("instance-stopped", &path_of(&name));
            }
            tracing::info!(instance = %name, exit_code = ?code, exit = ?vm_exit, "instance stopped");
            svc.exits
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&name);
            let _ = tx.send(true);
        });
    }

    fn exit_watch(&self, name: &str) -> Option<watch::Receiver<bool>> {
        self.exits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// Starts the operation that applies a state change.
    pub fn change_state(&self, name: &str, change: StateChange) -> Result<Operation> {
        let inst = self.get_stored(name)?;
        use InstanceStatus as S;
        let status = inst.status;
        let bad = |what: &str, hint: &str| {
            Err(Error::conflict(format!(
                "instance {name} is {}; cannot {what}{hint}",
                status.as_str()
            )))
        };
        match (change.action, status) {
            (StateAction::Start, S::Stopped | S::Error) => {}
            (StateAction::Start, _) => return bad("start it", ""),
            (StateAction::Stop | StateAction::Restart, S::Running | S::Frozen | S::Stopping) => {}
            (StateAction::Stop, _) => return bad("stop it", ""),
            (StateAction::Restart, _) => return bad("restart it", "; use start"),
            (StateAction::Pause, S::Running) => {}
            (StateAction::Pause, _) => return bad("pause it", ""),
            (StateAction::Resume, S::Frozen) => {}
            (StateAction::Resume, _) => return bad("resume it", ""),
        }
        if let Some(t) = change.timeout.filter(|t| *t > MAX_STOP_TIMEOUT) {
            return Err(Error::invalid(format!(
                "a stop timeout of {t} s is too long: use at most {MAX_STOP_TIMEOUT} s (or --force)"
            )));
        }
        if change.force && matches!(change.action, StateAction::Stop | StateAction::Restart) {
            self.force_in_progress_stop(&inst);
        }
        let verb = match change.action {
            StateAction::Start => "Starting",
            StateAction::Stop => "Stopping",
            StateAction::Restart => "Restarting",
            StateAction::Pause => "Pausing",
            StateAction::Resume => "Resuming",
        };
        Ok(self.spawn_locked(
            format!("{verb} instance {name}"),
            name,
            move |svc, inst, op| async move {
                let name = inst.name.clone();
                let timeout = Duration::from_secs(change.timeout.unwrap_or(DEFAULT_STOP_TIMEOUT));
                match change.action {
                    StateAction::Start => svc.start_locked(&inst, &op).await,
                    StateAction::Stop => svc.stop_locked(&inst, timeout, change.force, &op).await,
                    StateAction::Restart => {
                        svc.stop_locked(&inst, timeout, change.force, &op).await?;
                        let inst = svc.get_stored(&name)?;
                        svc.start_locked(&inst, &op).await?;
                        svc.events.lifecycle("instance-restarted", &path_of(&name));
                        Ok(())
                    }
                    StateAction::Pause => {
                        if inst.instance_type == InstanceType::Vm {
                            svc.pause_vm(&name, true).await?;
                        } else {
                            svc.driver.pause(&name)?;
                        }
                        svc.set_status(&name, InstanceStatus::Frozen, None, None);
                        svc.events.lifecycle("instance-paused", &path_of(&name));
                        Ok(())
                    }
                    StateAction::Resume => {
                        if inst.instance_type == InstanceType::Vm {
                            svc.pause_vm(&name, false).await?;
                        } else {
                            svc.driver.resume(&name)?;
                        }
                        svc.set_status(&name, InstanceStatus::Running, None, None);
                        svc.events.lifecycle("instance-resumed", &path_of(&name));
                        Ok(())
                    }
                }
            },
        ))
    }

    /// A forced stop or delete wins over a graceful stop in progress (which holds the
    /// instance's lock while it waits): the instance is killed now, without the lock, so the
    /// graceful stop sees it end and the forced request runs right after.
    fn force_in_progress_stop(&self, inst: &Instance) {
        if inst.status != InstanceStatus::Stopping {
            return;
        }
        tracing::info!(instance = %inst.name, "a forced request overtakes the stop in progress");
        if inst.instance_type == InstanceType::Vm {
            if let Some(vm) = self.vms.get(&inst.name) {
                tokio::task::spawn_blocking(move || vm.kill());
            }
        } else if let Err(e) = self.driver.kill(&inst.name, libc::SIGKILL, true) {
            tracing::debug!(instance = %inst.name, error = %e, "forced kill");
        }
    }

    /// Starts an operation on one instance that runs `body` under the instance's lock, with
    /// the instance as stored once the lock is held.
    fn spawn_locked<F, Fut>(&self, description: String, name: &str, body: F) -> Operation
    where
        F: FnOnce(InstanceService, Instance, OpHandle) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<()>> + Send + 'static,
    {
        let svc = self.clone();
        let name = name.to_string();
        self.ops.spawn(
            description,
            vec![path_of(&name)],
            false,
            move |op| async move {
                let lock = svc.lock_for(&name);
                let _g = lock.lock().await;
                let inst = svc.get_stored(&name)?;
                body(svc.clone(), inst, op).await
            },
        )
    }

    /// Stops a running instance: its stop signal, then SIGKILL after `timeout` (or at once
    /// with `force`). The caller holds the instance's lock.
    async fn stop_locked(
        &self,
        inst: &Instance,
        timeout: Duration,
        force: bool,
        op: &OpHandle,
    ) -> Result<()> {
        if inst.instance_type == InstanceType::Vm {
            return self.stop_vm(inst, timeout, force, op).await;
        }
        let name = &inst.name;
        let Some(mut exited) = self.exit_watch(name) else {
            // Nothing follows it: it is already down.
            self.set_status(name, InstanceStatus::Stopped, None, None);
            return Ok(());
        };
        if inst.status == InstanceStatus::Frozen {
            self.driver.resume(name)?;
        }
        self.set_status(name, InstanceStatus::Stopping, None, None);
        let wait = |rx: &mut watch::Receiver<bool>, t: Duration| {
            let mut rx = rx.clone();
            async move {
                tokio::time::timeout(t, rx.wait_for(|done| *done))
                    .await
                    .is_ok()
            }
        };
        if !force {
            op.progress(Some(20), "asking the init to stop");
            let sig = match self.images.by_fingerprint(&inst.image) {
                Ok(i) => systemd::stop_signal(&inst.command, &i.command, &i.stop_signal),
                Err(_) => systemd::stop_signal(&inst.command, &[], ""),
            };
            if let Err(e) = self.driver.kill(name, sig, false) {
                tracing::debug!(instance = %name, error = %e, "stop signal");
            }
            if wait(&mut exited, timeout).await {
                self.set_status(name, InstanceStatus::Stopped, None, None);
                return Ok(());
            }
            tracing::info!(instance = %name, "graceful stop timed out; killing");
        }
        op.progress(Some(60), "killing");
        if let Err(e) = self.driver.kill(name, libc::SIGKILL, true) {
            tracing::debug!(instance = %name, error = %e, "kill");
        }
        if wait(&mut exited, Duration::from_secs(15)).await {
            self.set_status(name, InstanceStatus::Stopped, None, None);
            return Ok(());
        }
        self.set_status(
            name,
            InstanceStatus::Error,
            None,
            Some("did not stop after SIGKILL"),
        );
        Err(Error::internal(format!(
            "instance {name} did not stop within 15 s of SIGKILL; see its monitor.log"
        )))
    }

    /// Has `hook` told of every instance removed, once it is gone (awaited, at most a few
    /// seconds, before the removal's operation ends).
    pub fn on_removed(&self, hook: RemovalHook) {
        let _ = self.removed.set(hook);
    }

    /// Starts the operation that deletes an instance.
    /// `volumes`: the volumes attached to it are deleted too (see
    /// [`InstanceService::own_volumes`]).
    pub fn delete(&self, name: &str, force: bool, volumes: bool) -> Result<Operation> {
        let inst = self.get_stored(name)?;
        if matches!(
            inst.status,
            InstanceStatus::Running | InstanceStatus::Frozen | InstanceStatus::Stopping
        ) && !force
        {
            return Err(Error::conflict(format!(
                "instance {name} is {}; stop it first or delete with --force",
                inst.status.as_str()
            )));
        }
        // A start in progress holds the instance's lock: a forced delete waits for it behind
        // that lock and then stops what it started. (A copy that waits for a live move holds
        // no lock while it waits: that one is not deleted from under the move.)
        let start_running = inst.status == InstanceStatus::Starting
            && force
            && self.lock_for(name).try_lock().is_err();
        if inst.status == InstanceStatus::Creating
            || (inst.status == InstanceStatus::Starting && !start_running)
        {
            return Err(Error::conflict(format!(
                "instance {name} is {}; wait for that operation to end{}",
                inst.status.as_str(),
                if force { "" } else { " or delete with --force" }
            )));
        }
        if force {
            self.force_in_progress_stop(&inst);
        }
        Ok(self.spawn_locked(
            format!("Deleting instance {name}"),
            name,
            move |svc, inst, op| async move {
                let own = if volumes {
                    svc.own_volumes(&inst)?
                } else {
                    Vec::new()
                };
                svc.remove_locked(&inst, &op).await?;
                svc.drop_volumes(&own).await
            },
        ))
    }

    /// Removes an instance: stopped (killed) if it runs, its snapshots, files, volumes'
    /// attachments, NICs and record. The caller holds the instance's lock.
    pub(crate) async fn remove_locked(&self, inst: &Instance, op: &OpHandle) -> Result<()> {
        let svc = self;
        let name = &inst.name;
        if svc.exit_watch(name).is_some() {
            svc.stop_locked(inst, Duration::ZERO, true, op).await?;
        }
        op.progress(Some(60), "removing snapshots");
        let (s, i) = (svc.clone(), inst.clone());
        tokio::task::spawn_blocking(move || s.forget_snapshots(&i))
            .await
            .map_err(|e| Error::internal(format!("snapshot task: {e}")))?;
        op.progress(Some(70), "removing files");
        if inst.instance_type == InstanceType::Vm {
            let (s, n) = (svc.clone(), name.clone());
            tokio::task::spawn_blocking(move || s.vms.remove_files(&n))
                .await
                .map_err(|e| Error::internal(format!("removal task: {e}")))??;
        } else {
            svc.driver.remove_files(name)?;
        }
        let (st, nets, n) = (svc.storage.clone(), svc.networks.clone(), name.clone());
        tokio::task::spawn_blocking(move || {
            st.instance_deleted(&n)?;
            nets.instance_deleted(&n)
        })
        .await
        .map_err(|e| Error::internal(format!("volume task: {e}")))??;
        svc.store.instance_delete(name)?;
        svc.pending.forget(name);
        svc.events.lifecycle("instance-deleted", &path_of(name));
        if let Some(hook) = svc.removed.get() {
            let _ = tokio::time::timeout(Duration::from_secs(5), hook(name.clone())).await;
        }
        Ok(())
    }

    /// Where to attach a console: a container's monitor (frames) or a VM's console (raw).
    pub fn console_target(&self, name: &str) -> Result<ConsoleTarget> {
        let inst = self.get_stored(name)?;
        self.require_running(&inst)?;
        if inst.instance_type == InstanceType::Vm {
            let vm = self
                .vms
                .get(name)
                .ok_or_else(|| Error::conflict(format!("VM {name} is not running")))?;
            return Ok(ConsoleTarget::Raw(
                vm.console_socket.clone(),
                self.vms.console_slot(name),
            ));
        }
        Ok(ConsoleTarget::Framed(self.driver.socket(name)))
    }

    /// The VNC socket of a running VM with a display.
    pub fn vnc_socket(&self, name: &str) -> Result<std::path::PathBuf> {
        let inst = self.get_stored(name)?;
        if inst.instance_type != InstanceType::Vm {
            return Err(Error::invalid(format!(
                "{name} is a container: it has no display; use `vessel console {name}`"
            )));
        }
        self.require_running(&inst)?;
        self.vms
            .get(name)
            .and_then(|vm| vm.vnc_socket.clone())
            .ok_or_else(|| {
                Error::conflict(format!(
                    "VM {name} has no display: only the full profile has one; use \
                     `vessel console {name}`"
                ))
            })
    }

    /// Fails unless the instance runs.
    pub fn require_running(&self, inst: &Instance) -> Result<()> {
        match inst.status {
            InstanceStatus::Running => Ok(()),
            InstanceStatus::Frozen => Err(Error::conflict(format!(
                "instance {} is frozen; resume it first",
                inst.name
            ))),
            s => Err(Error::conflict(format!(
                "instance {} is {}; start it first",
                inst.name,
                s.as_str()
            ))),
        }
    }
}

/// Where a console attach goes.
pub enum ConsoleTarget {
    /// A socket speaking `vessel_api::stream` frames (a container's monitor).
    Framed(std::path::PathBuf),
    /// A socket carrying the console's raw bytes (QEMU's serial console), and the slot that
    /// gives its one connection to one attach at a time.
    Raw(std::path::PathBuf, vm::ConsoleSlot),
}

/// API path of an instance.
pub fn path_of(name: &str) -> String {
    format!("/1.0/instances/{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals() {
        assert_eq!(signal_number("SIGUSR2"), Some(libc::SIGUSR2));
        assert_eq!(signal_number("TERM"), Some(libc::SIGTERM));
        assert_eq!(signal_number("9"), Some(9));
        assert_eq!(signal_number("SIGNOPE"), None);
        assert_eq!(signal_number("SIGRTMIN+3"), Some(libc::SIGRTMIN() + 3));
    }
}
