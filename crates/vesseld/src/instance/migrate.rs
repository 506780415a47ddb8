//! Moving an instance to another member of the cluster, cold: under its lock it is stopped
//! (if it runs), packed as an archive (its record, data and snapshots, as `export` makes
//! one, and the volumes attached to it: `carry.rs`), made on the other member from that
//! archive (started there if it ran here), handed over in the cluster's index, and only
//! then removed here, its volumes with it. It never runs on both: it is
//! stopped here before it is made there. A failure before the hand-over leaves it here,
//! started again if it ran.

use std::path::PathBuf;
use std::time::Duration;

use vessel_api::{Instance, InstanceStatus, Operation};
use vessel_backup::Store;

use super::{InstanceService, DEFAULT_STOP_TIMEOUT};
use crate::backup::error as store_error;
use crate::cluster::{ClusterService, Target};
use crate::error::{Error, Result};
use crate::operations::OpHandle;
use crate::transfer::Scratch;

impl InstanceService {
    /// Starts the operation that moves `name` to the member `to`; the archive is made under
    /// `root` (the daemon's root directory). `origin`: the member it is evacuated from, if
    /// it is (noted in the cluster's index for `restore`). `live`: see
    /// [`vessel_api::InstanceMigrate::live`].
    pub fn migrate(
        &self,
        name: &str,
        to: Target,
        cluster: ClusterService,
        root: PathBuf,
        origin: Option<String>,
        live: Option<bool>,
    ) -> Result<Operation> {
        let inst = self.get_stored(name)?;
        self.migratable(&inst)?;
        // A running VM moves live unless asked otherwise; one that cannot says why.
        let live = match live {
            Some(false) => false,
            Some(true) | None => self.live_migratable(&inst, live.is_some())?,
        };
        if live {
            return Ok(self.migrate_live(name, to, cluster, origin));
        }
        Ok(self.spawn_locked(
            format!("Moving instance {name} to member {}", to.name),
            name,
            move |svc, inst, op| async move {
                let carried = svc.migratable(&inst)?;
                let (project, plain) = crate::project::split(&inst.name);
                for (c, _) in &carried {
                    cluster.volume_room_on(&to, project, c).await?;
                }
                // The project's pool limits there, as the target counts them when the
                // archive arrives: asked before anything stops.
                let quota = crate::project::ProjectService::new(svc.store.clone()).quota(project)?;
                if !quota.disk_pool.is_empty() {
                    // Counted as the target counts it (its disk: what the archive holds).
                    let root = inst.storage.as_deref().and_then(|pool| {
                        let disk = svc
                            .storage
                            .volume_get(pool, &crate::storage::root_volume(&inst.name))
                            .ok()
                            .map(|v| v.size_bytes);
                        crate::storage::root_brought(inst.instance_type, disk, inst.limits.disk)
                            .map(|size| (pool, size))
                    });
                    let adding = crate::storage::brought(root, carried.iter().map(|(c, _)| c));
                    cluster.pool_room_on(&to, project, &quota, &adding).await?;
                }
                let ran = matches!(
                    inst.status,
                    InstanceStatus::Running | InstanceStatus::Frozen
                );
                if ran {
                    op.progress(Some(5), "stopping");
                    let timeout = Duration::from_secs(DEFAULT_STOP_TIMEOUT);
                    svc.stop_locked(&inst, timeout, false, &op).await?;
                }
                // As it is now: stopped.
                let inst = svc.get_stored(&inst.name)?;
                // Made there stopped; it starts there only once the index names that member.
                let sent = match cluster.settle(project, plain, &to.name).await {
                    Ok(()) => {
                        svc.send_stopped(&inst, &carried, &to, &cluster, &root, &op)
                            .await
                    }
                    Err(e) => Err(e),
                };
                // Its volumes there before it is handed over: a member that took the
                // instance without them (a daemon that does not carry volumes) keeps it here.
                let list: Vec<_> = carried.iter().map(|(c, _)| c.clone()).collect();
                let sent = match sent {
                    Ok(()) => cluster.volumes_arrived_on(&to, project, plain, &list).await,
                    Err(e) => Err(e),
                };
                let handed = match sent {
                    Ok(()) => cluster
                        .hand_over(project, plain, &to.name, origin.as_deref())
                        .await,
                    Err(e) => Err(e),
                };
                if let Err(e) = handed {
                    // Not handed over: whatever the other member made must go before this
                    // copy runs again, or it could run on both.
                    let gone = match cluster.holds(&to, project, plain).await {
                        Ok(false) => Ok(()),
                        Ok(true) => {
                            let with_volumes = !carried.is_empty();
                            cluster
                                .delete_on(&to, project, plain, with_volumes)
                                .await
                        }
                        Err(why) => Err(why),
                    };
                    if let Err(why) = gone {
                        return Err(Error::conflict(format!(
                            "{e}; whether member {} made a copy of {name} is unknown ({why}): \
                             it stays stopped here; see `vessel list` and delete one of the two",
                            to.name,
                            name = inst.name
                        )));
                    }
                    if ran {
                        op.progress(Some(95), "starting it here again");
                        let now = svc.get_stored(&inst.name)?;
                        if let Err(again) = svc.start_locked(&now, &op).await {
                            tracing::error!(instance = %inst.name, error = %again, "not started again after a failed move");
                        }
                    }
                    return Err(e);
                }
                // Handed over: it is the other member's now, and never runs here again.
                let started = if ran {
                    op.progress(Some(85), &format!("starting it on {}", to.name));
                    cluster.start_on(&to, project, plain).await
                } else {
                    Ok(())
                };
                op.progress(Some(90), "removing it here");
                svc.remove_locked(&inst, &op).await?;
                let dropped = svc.carried_away(&list).await;
                let mut problems = Vec::new();
                if let Err(e) = started {
                    problems.push(format!("it did not start there: {e}"));
                }
                if let Err(e) = dropped {
                    problems.push(e.message);
                }
                if problems.is_empty() {
                    return Ok(());
                }
                tracing::warn!(instance = %inst.name, member = %to.name, problems = %problems.join("; "), "moved");
                Err(Error::conflict(format!(
                    "{} moved to {}, but {}",
                    inst.name,
                    to.name,
                    problems.join("; ")
                )))
            },
        ))
    }

    /// Whether `inst` can move now: settled, and with nothing that stays on this member;
    /// the volumes that go along with it.
    pub(super) fn migratable(
        &self,
        inst: &Instance,
    ) -> Result<Vec<(crate::storage::CarriedVolume, crate::storage::CarriedData)>> {
        let name = &inst.name;
        if matches!(
            inst.status,
            InstanceStatus::Creating
                | InstanceStatus::Starting
                | InstanceStatus::Stopping
                | InstanceStatus::Error
        ) {
            return Err(Error::conflict(format!(
                "instance {name} is {}: it moves once it is running or stopped",
                inst.status.as_str()
            )));
        }
        // Its root disk in a pool is its own and travels in the archive; its other volumes
        // travel with it if they can.
        self.carried(inst)
    }

    /// The stopped `inst` packed and made on `to`, stopped. The caller holds the instance's
    /// lock.
    async fn send_stopped(
        &self,
        inst: &Instance,
        carried: &[(crate::storage::CarriedVolume, crate::storage::CarriedData)],
        to: &Target,
        cluster: &ClusterService,
        root: &std::path::Path,
        op: &OpHandle,
    ) -> Result<()> {
        op.progress(Some(20), "packing");
        let scratch = Scratch::new(root)?;
        let dir = scratch.0.join("store");
        let (svc, i, o, c) = (self.clone(), inst.clone(), op.clone(), carried.to_vec());
        let file = tokio::task::spawn_blocking(move || -> Result<std::fs::File> {
            let store = Store::create(&dir, Default::default()).map_err(store_error)?;
            let writer = store.writer(&i.name).map_err(store_error)?;
            let id = writer.id().to_string();
            svc.backup_locked(&i, writer, (true, true), &c, &o)?;
            let index = store.get(&i.name, &id).map_err(store_error)?;
            let path = dir.with_file_name("archive.tar");
            let out = std::fs::File::create(&path)
                .map_err(|e| Error::internal(format!("{}: {e}", path.display())))?;
            store
                .export_archive(&index, std::io::BufWriter::new(out), &mut |_| {})
                .map_err(store_error)?;
            std::fs::File::open(&path)
                .map_err(|e| Error::internal(format!("{}: {e}", path.display())))
        })
        .await
        .map_err(|e| Error::internal(format!("packing task: {e}")))??;
        let project = crate::project::split(&inst.name).0;
        if !cluster.has_image(to, project, &inst.image).await? {
            op.progress(Some(40), &format!("sending its image to {}", to.name));
            self.send_image(inst, project, to, cluster).await?;
        }
        op.progress(Some(50), &format!("making it on {}", to.name));
        cluster.import_on(to, project, file, false).await
    }

    /// Sends the image `inst` was made from to `to`, which lacks it.
    pub(super) async fn send_image(
        &self,
        inst: &Instance,
        project: &str,
        to: &Target,
        cluster: &ClusterService,
    ) -> Result<()> {
        // The project's own images, or default's for a project that uses those.
        let own = self.images.in_project(project);
        let (images, images_project) = if own.get(&inst.image).is_ok() {
            (own, project)
        } else {
            (self.images.clone(), vessel_api::DEFAULT_PROJECT)
        };
        cluster
            .send_image(&images, images_project, &inst.image, to)
            .await
    }
}
