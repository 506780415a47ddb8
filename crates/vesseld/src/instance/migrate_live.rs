//! Moving a running VM to another member live, under its lock: the other member makes it
//! stopped (same record, NICs with the same addresses and MACs, an empty overlay over the
//! same image, sent first if it lacks it) and starts its QEMU waiting; this member's QEMU
//! mirrors its disk and sends its memory there (`vessel-vm`'s migration, its two streams
//! relayed over the members' mutual TLS); with the guest stopped for the switchover, the
//! instance is handed over in the cluster's index, and only then runs there. It never runs
//! on both: until the hand-over the copy there has not run, and after a failure it is
//! dropped there and the guest runs on here.

use std::time::{Duration, Instant};

use vessel_api::{Instance, InstanceStatus, InstanceType, MigrationIncoming, Operation};
use vessel_vm::{MigrationLinks, MigrationParams, MigrationPhase};

use super::InstanceService;
use crate::cluster::{ClusterService, Target};
use crate::error::{chain, Error, Result};
use crate::operations::OpHandle;

/// Parallel connections for a VM's memory.
const MULTIFD_CHANNELS: u8 = 2;
/// How long the end of the state may take to go through the relay once QEMU calls the
/// migration complete.
const RELAY_DRAIN: std::time::Duration = std::time::Duration::from_secs(30);

impl InstanceService {
    /// Whether `inst` moves live: `true` for a running VM that can; `false` for what moves
    /// cold (not a running VM) unless the caller `asked` for live; an error saying why for
    /// a running VM that cannot.
    pub(super) fn live_migratable(&self, inst: &Instance, asked: bool) -> Result<bool> {
        let name = &inst.name;
        if inst.instance_type != InstanceType::Vm || inst.status != InstanceStatus::Running {
            if asked {
                return Err(Error::conflict(format!(
                    "only a running VM moves live; {name} is a {} {}: move it without --live",
                    inst.status.as_str(),
                    match inst.instance_type {
                        InstanceType::Vm => "VM",
                        InstanceType::Container => "container",
                    }
                )));
            }
            return Ok(false);
        }
        if let Some(pool) = &inst.storage {
            return Err(Error::conflict(format!(
                "VM {name}'s root disk is a volume of pool {pool:?}, which stays on this \
                 member: move it cold (--cold)"
            )));
        }
        let root = crate::storage::root_volume(name);
        let attached = self.storage.volumes_by_instance()?;
        if let Some(v) = attached
            .get(name)
            .into_iter()
            .flatten()
            .find(|v| v.volume != root)
        {
            return Err(Error::conflict(format!(
                "VM {name} has volume {} attached, which a live move does not carry: move it \
                 cold (--cold), which takes it along, or detach it",
                crate::project::split(&v.volume).1
            )));
        }
        if !self.snapshots(name)?.is_empty() {
            return Err(Error::conflict(format!(
                "VM {name} has snapshots, which a live move does not carry: move it cold \
                 (--cold), which takes them along, or delete them"
            )));
        }
        Ok(true)
    }

    /// Starts the operation that moves the running VM `name` to `to` live.
    pub(super) fn migrate_live(
        &self,
        name: &str,
        to: Target,
        cluster: ClusterService,
        origin: Option<String>,
    ) -> Operation {
        self.spawn_locked(
            format!("Moving instance {name} to member {} live", to.name),
            name,
            move |svc, inst, op| async move {
                svc.migratable(&inst)?;
                if !svc.live_migratable(&inst, true)? {
                    return Err(Error::conflict(format!("{} cannot move live", inst.name)));
                }
                svc.migrate_live_locked(&inst, &to, &cluster, origin.as_deref(), &op)
                    .await
            },
        )
    }

    async fn migrate_live_locked(
        &self,
        inst: &Instance,
        to: &Target,
        cluster: &ClusterService,
        origin: Option<&str>,
        op: &OpHandle,
    ) -> Result<()> {
        let started = Instant::now();
        let name = &inst.name;
        let (project, plain) = crate::project::split(name);
        let vm = self
            .vms
            .get(name)
            .ok_or_else(|| Error::conflict(format!("VM {name} is not running here")))?;
        if !cluster.has_image(to, project, &inst.image).await? {
            op.progress(Some(5), &format!("sending its image to {}", to.name));
            self.send_image(inst, project, to, cluster).await?;
        }
        // The instance as the other member makes it: with its NICs.
        let mut whole = inst.clone();
        self.with_devices(std::slice::from_mut(&mut whole))?;
        // Its root disk, unless its image boots without one (an initramfs).
        let root = self.vms.instances_dir.join(name).join("root.qcow2");
        let disk_size = if root.is_file() {
            vessel_vm::image_info(&root, Some(vessel_vm::DiskFormat::Qcow2))
                .map_err(|e| Error::internal(format!("root disk: {}", chain(&e))))?
                .virtual_size
        } else {
            0
        };
        op.progress(Some(10), &format!("preparing it on {}", to.name));
        let req = MigrationIncoming {
            own_config: inst.own_config.clone(),
            from_profiles: inst.from_profiles.clone(),
            instance: whole,
            disk_size,
            multifd_channels: MULTIFD_CHANNELS,
        };
        cluster.settle(project, plain, &to.name).await?;
        cluster.incoming_on(to, project, plain, &req).await?;
        // From here on a failure drops the copy there.
        let moved = self.send_live(&vm, to, cluster, project, plain, op).await;
        let (took_ms, downtime_ms) = match moved {
            Ok(v) => v,
            Err(e) => {
                if let Err(why) = cluster.incoming_end_on(to, project, plain, false).await {
                    tracing::warn!(instance = %name, error = %why, "the copy of a failed live move stays on the other member");
                }
                return Err(e);
            }
        };
        // The state is there; the guest is stopped here for good. Hand it over, then run it.
        let paused = Instant::now();
        if let Err(e) = cluster.hand_over(project, plain, &to.name, origin).await {
            // Not handed over: the copy there goes and the guest runs on here.
            let _ = cluster.incoming_end_on(to, project, plain, false).await;
            let v = vm.clone();
            let resumed = tokio::task::spawn_blocking(move || v.resume()).await;
            tracing::warn!(instance = %name, error = %e, ?resumed, "not handed over at the switchover; the guest runs on here");
            return Err(e);
        }
        if let Err(e) = cluster.incoming_end_on(to, project, plain, true).await {
            return Err(Error::conflict(format!(
                "{name} was handed over to {} but did not run there: {e}; see `vessel info \
                 {plain}` there",
                to.name
            )));
        }
        let pause_ms = downtime_ms + paused.elapsed().as_millis() as u64;
        // Gone from here: this QEMU holds nothing the guest needs any more.
        op.progress(Some(95), "removing it here");
        let timeout = Duration::from_secs(1);
        self.stop_locked(inst, timeout, true, op).await?;
        let now = self.get_stored(name)?;
        self.remove_locked(&now, op).await?;
        op.progress(
            Some(100),
            &format!(
                "live: {:.1} s in all, the guest paused {} ms",
                started.elapsed().as_secs_f64().max(took_ms as f64 / 1000.0),
                pause_ms
            ),
        );
        Ok(())
    }

    /// Sends the running `vm`'s disks and memory to the waiting QEMU on `to`; returns
    /// (total ms, ms the guest has been stopped so far).
    async fn send_live(
        &self,
        vm: &std::sync::Arc<vessel_vm::RunningVm>,
        to: &Target,
        cluster: &ClusterService,
        project: &str,
        plain: &str,
        op: &OpHandle,
    ) -> Result<(u64, u64)> {
        let uid = vessel_vm::host::process_uid(vm.pid)
            .ok_or_else(|| Error::internal("the uid of its QEMU is unknown"))?;
        let relay = cluster.relay(&vm.record.paths.dir, uid, to, project, plain)?;
        let links = MigrationLinks {
            state: relay.state.clone(),
            disks: relay.disks.clone(),
        };
        let params = MigrationParams {
            multifd_channels: MULTIFD_CHANNELS,
            ..MigrationParams::default()
        };
        let (v, o) = (vm.clone(), op.clone());
        let stopped_at = std::sync::Arc::new(std::sync::Mutex::new(None::<Instant>));
        let at = stopped_at.clone();
        let sent = tokio::task::spawn_blocking(move || {
            v.migrate_to(&links, &params, &mut |phase| match phase {
                MigrationPhase::Disks { done, total } => {
                    let pct = 15 + (done * 35).checked_div(total).unwrap_or(0) as u8;
                    o.progress(
                        Some(pct),
                        &format!("mirroring its disk: {} of {} MiB", done >> 20, total >> 20),
                    );
                }
                MigrationPhase::Memory {
                    remaining,
                    total,
                    passes,
                } => {
                    let done = total.saturating_sub(remaining);
                    let pct = 50 + (done * 40).checked_div(total).unwrap_or(0) as u8;
                    o.progress(
                        Some(pct),
                        &format!(
                            "sending its memory: {} MiB left of {} MiB (pass {})",
                            remaining >> 20,
                            total >> 20,
                            passes + 1
                        ),
                    );
                }
                MigrationPhase::Switchover => {
                    at.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get_or_insert_with(Instant::now);
                    o.progress(Some(90), "switching over: the guest is paused");
                }
            })
        })
        .await
        .map_err(|e| Error::internal(format!("migration task: {e}")))?
        .map_err(|e| Error::conflict(format!("the live move failed: {}", chain(&e))))?;
        // What QEMU wrote last is still on its way: through before the other side runs.
        relay.finish(RELAY_DRAIN).await;
        let paused = stopped_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map_or(sent.downtime_ms, |t| t.elapsed().as_millis() as u64);
        Ok((sent.total_ms, paused))
    }
}
