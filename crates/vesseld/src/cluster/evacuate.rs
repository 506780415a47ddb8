//! Evacuation: a member emptied for maintenance. It is marked `evacuated` in etcd (nothing
//! new is placed on it), then each of its instances is moved to the member the scheduler
//! chooses (cold, as `vessel move`) or stopped where it is, as its `cluster.evacuate` key
//! (or the request) says; the cluster's index notes where each came from. `restore` clears
//! the mark and brings them back: moved ones home again, stopped ones started.

use axum::body::Body;
use axum::extract::Request;
use vessel_api::{InstanceStatus, StateAction, StateChange};

use super::forward::Target;
use super::{from_cluster, ClusterService};
use crate::error::{Error, Result};
use crate::operations::{OpHandle, Operations};

/// What evacuation does with an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvacuateAction {
    /// Moved to another member: live if it is a running VM, cold otherwise.
    Auto,
    /// Moved to another member cold (stopped, moved, started there if it ran).
    Migrate,
    /// Moved live (a running VM; anything else fails).
    LiveMigrate,
    /// Stopped where it is.
    Stop,
}

impl EvacuateAction {
    /// `auto`, `migrate`, `live-migrate` or `stop`.
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "migrate" => Ok(Self::Migrate),
            "live-migrate" => Ok(Self::LiveMigrate),
            "stop" => Ok(Self::Stop),
            _ => Err("give auto, migrate, live-migrate or stop".to_string()),
        }
    }
}

impl ClusterService {
    /// The member `name` when it is another one (it must answer); `None` when it is this
    /// server.
    pub async fn member_target(&self, name: &str) -> Result<Option<Target>> {
        let Some((cluster, me)) = self.live_member().await else {
            return Err(Error::conflict(
                "this server is not a live member of a cluster: see `vessel cluster info`",
            ));
        };
        if name == me {
            return Ok(None);
        }
        self.reachable(&cluster, name, "it must answer to be evacuated or restored")
            .await
            .map(Some)
    }

    /// Waits for the local operation `id`; its failure is an error.
    async fn finished(ops: &Operations, id: &str) -> Result<()> {
        let done = ops.wait(id, None).await?;
        match done.status {
            vessel_api::OperationStatus::Success => Ok(()),
            _ => Err(Error::conflict(
                done.error.unwrap_or_else(|| "the operation failed".into()),
            )),
        }
    }

    /// Marks this member evacuated (or no longer) in its record; returns the cluster, this
    /// member's name and the instance service.
    async fn mark_evacuated(
        &self,
        evacuated: bool,
    ) -> Result<(
        vessel_cluster::Cluster,
        String,
        crate::instance::InstanceService,
    )> {
        let Some((cluster, me)) = self.live_member().await else {
            return Err(Error::conflict(
                "this server is not a live member of a cluster",
            ));
        };
        let instances = self
            .inner
            .instances
            .get()
            .cloned()
            .ok_or_else(|| Error::internal("no instance service"))?;
        cluster
            .set_evacuated(&me, evacuated)
            .await
            .map_err(from_cluster)?;
        Ok((cluster, me, instances))
    }

    /// Empties this member: every instance moved elsewhere or stopped, by `action` or by
    /// its own `cluster.evacuate` key (default: moved).
    pub async fn evacuate_here(
        &self,
        ops: &Operations,
        action: Option<EvacuateAction>,
        op: &OpHandle,
    ) -> Result<()> {
        let (cluster, me, instances) = self.mark_evacuated(true).await?;
        let list = instances.list(false)?;
        let total = list.len().max(1);
        let mut failed = Vec::new();
        for (n, inst) in list.iter().enumerate() {
            let (project, plain) = crate::project::split(&inst.name);
            let percent = (n * 100 / total) as u8;
            let what = match action {
                Some(a) => a,
                None => match inst.config.get("cluster.evacuate") {
                    Some(v) => EvacuateAction::parse(v).unwrap_or(EvacuateAction::Auto),
                    None => EvacuateAction::Auto,
                },
            };
            let result = match what {
                EvacuateAction::Stop => {
                    op.progress(Some(percent), &format!("stopping {}", inst.name));
                    self.stop_in_place(ops, &instances, &inst.name, inst.status)
                        .await
                }
                EvacuateAction::Auto | EvacuateAction::Migrate | EvacuateAction::LiveMigrate => {
                    let live = match what {
                        EvacuateAction::Migrate => Some(false),
                        EvacuateAction::LiveMigrate => Some(true),
                        _ => None,
                    };
                    let cpu = inst.limits.cpu.unwrap_or(0.0);
                    let memory = inst.limits.memory.unwrap_or(0);
                    let group = super::instances::group_of(project, &inst.config);
                    match self.place(cpu, memory, None, group.as_deref(), None).await {
                        Err(e) => Err(e),
                        Ok(p) => {
                            op.progress(
                                Some(percent),
                                &format!("moving {} to {}", inst.name, p.member),
                            );
                            match self
                                .reachable(&cluster, &p.member, "chosen for an evacuated instance")
                                .await
                            {
                                Err(e) => Err(e),
                                Ok(to) => {
                                    let root = self.inner.root.clone();
                                    match instances.migrate(
                                        &inst.name,
                                        to,
                                        self.clone(),
                                        root,
                                        Some(me.clone()),
                                        live,
                                    ) {
                                        Ok(o) => Self::finished(ops, &o.id).await,
                                        Err(e) => Err(e),
                                    }
                                }
                            }
                        }
                    }
                }
            };
            match result {
                Ok(())
                    if what == EvacuateAction::Stop && inst.status == InstanceStatus::Running =>
                {
                    // Stopped by the evacuation: restore starts it again.
                    if let Err(e) = cluster.hand_over(project, plain, &me, &me, Some(&me)).await {
                        failed.push(format!("{}: {e}", inst.name));
                    }
                }
                Ok(()) => {}
                Err(e) => failed.push(format!("{}: {}", inst.name, e.message)),
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(Error::conflict(format!(
                "{} of {} instances not evacuated (the member stays evacuated; evacuate again \
                 once fixed): {}",
                failed.len(),
                list.len(),
                failed.join("; ")
            )))
        }
    }

    async fn stop_in_place(
        &self,
        ops: &Operations,
        instances: &crate::instance::InstanceService,
        name: &str,
        status: InstanceStatus,
    ) -> Result<()> {
        if status != InstanceStatus::Running && status != InstanceStatus::Frozen {
            return Ok(());
        }
        let o = instances.change_state(
            name,
            StateChange {
                action: StateAction::Stop,
                timeout: None,
                force: false,
            },
        )?;
        Self::finished(ops, &o.id).await
    }

    /// Ends this member's evacuation: nothing keeps new instances away, instances moved
    /// away are brought back, instances stopped in place are started.
    pub async fn restore_here(&self, ops: &Operations, op: &OpHandle) -> Result<()> {
        let (cluster, me, instances) = self.mark_evacuated(false).await?;
        let ours: Vec<_> = self
            .locations()
            .await?
            .into_iter()
            .filter(|l| l.origin.as_deref() == Some(me.as_str()))
            .collect();
        let total = ours.len().max(1);
        let mut failed = Vec::new();
        for (n, loc) in ours.iter().enumerate() {
            let percent = (n * 100 / total) as u8;
            let result = if loc.member == me {
                op.progress(Some(percent), &format!("starting {}", loc.name));
                let name = crate::project::qualify(&loc.project, &loc.name);
                let start = match instances.get_stored(&name) {
                    Ok(i) if i.status == InstanceStatus::Stopped => instances
                        .change_state(
                            &name,
                            StateChange {
                                action: StateAction::Start,
                                timeout: None,
                                force: false,
                            },
                        )
                        .map(Some),
                    Ok(_) => Ok(None),
                    Err(e) => Err(e),
                };
                match start {
                    Ok(Some(o)) => Self::finished(ops, &o.id).await,
                    Ok(None) => Ok(()),
                    Err(e) => Err(e),
                }
            } else {
                op.progress(
                    Some(percent),
                    &format!("bringing {} back from {}", loc.name, loc.member),
                );
                self.bring_back(&cluster, &me, loc).await
            };
            let result = match result {
                Ok(()) if loc.member == me => cluster
                    .hand_over(&loc.project, &loc.name, &me, &me, None)
                    .await
                    .map_err(from_cluster),
                other => other,
            };
            if let Err(e) = result {
                failed.push(format!("{}: {}", loc.name, e.message));
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(Error::conflict(format!(
                "{} of {} instances not restored: {}",
                failed.len(),
                ours.len(),
                failed.join("; ")
            )))
        }
    }

    /// Asks the member holding `loc` to move it back to this one, and waits.
    async fn bring_back(
        &self,
        cluster: &vessel_cluster::Cluster,
        me: &str,
        loc: &vessel_cluster::Location,
    ) -> Result<()> {
        let holder = self
            .reachable(
                cluster,
                &loc.member,
                "it holds an instance evacuated from here",
            )
            .await?;
        let q = vessel_api::PROJECT_QUERY;
        // Back as it left: live if it is a running VM that can.
        let body = serde_json::to_vec(&vessel_api::InstanceMigrate {
            target: me.to_string(),
            live: None,
        })
        .map_err(|e| Error::internal(e.to_string()))?;
        let req = Request::builder()
            .method("POST")
            .uri(format!(
                "/1.0/instances/{}/migrate?{q}={}",
                loc.name, loc.project
            ))
            .header(axum::http::header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .map_err(|e| Error::internal(e.to_string()))?;
        self.operation_on(&holder, &loc.project, req, "the move back")
            .await
    }
}
