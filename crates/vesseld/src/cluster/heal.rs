//! Failover: with `healing_threshold` set, the `cluster.ha` instances of a member that stays
//! offline that long are made again and started on another member.
//!
//! Every member watches; the one the scheduler chooses for an instance takes it over (a
//! scheduler's answer that changes meanwhile, or two members that both think themselves
//! chosen, are settled by the transaction). Taking over is one etcd transaction that
//! holds only while the offline member's heartbeat key is absent and the index entry is
//! unchanged since it was read: of two members trying, one wins, and the revision of that
//! change is the instance's fencing token. The member that lost it cannot be running it by
//! then: it fenced itself (its HA instances stopped) half a lease's TTL after its last
//! renewal, its watchdog does the same if its daemon is dead (`watchdog.rs`), and the
//! lease lives a whole TTL. When that member is back, its copy is stale and goes (see
//! `keep_index`), and an HA instance starts only where the index says it lives.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use vessel_api::InstanceCreate;
use vessel_cluster::{Cluster, Location};

use super::{from_cluster, ClusterService};
use crate::error::{Error, Result};
use crate::instance::ha::RestartKeeps;

/// How often the members' states are looked at.
const HEAL_EVERY: Duration = Duration::from_secs(1);
/// The largest image fetched from another member for a failover.
const MAX_IMAGE: u64 = 64 << 30;

/// The request that makes `loc` again, from the index.
fn restart_spec(loc: &Location) -> Result<InstanceCreate> {
    let spec = loc
        .asks
        .restart
        .clone()
        .ok_or_else(|| Error::conflict("not highly available"))?;
    serde_json::from_value(spec)
        .map_err(|e| Error::internal(format!("the index's restart request does not parse: {e}")))
}

/// What `loc` keeps of its profiles when it is made again (an index written by a member from
/// before: nothing, it is made from its configuration alone).
fn keeps_of(loc: &Location) -> RestartKeeps {
    let Some(v) = loc.asks.keeps.clone() else {
        return RestartKeeps::default();
    };
    serde_json::from_value(v).unwrap_or_else(|e| {
        tracing::warn!(instance = %loc.name, project = %loc.project, error = %e, "the index's record of what the instance keeps of its profiles does not parse: made from its configuration alone");
        RestartKeeps::default()
    })
}

/// The pool of far copy `name` (`MEMBER.POOL`).
fn pool_of(name: &str) -> &str {
    name.split_once('.').map_or(name, |(_, p)| p)
}

impl ClusterService {
    /// Fails over the HA instances of members offline for longer than the cluster's
    /// `healing_threshold`, while this member is live.
    pub(super) async fn keep_healing(self, cluster: Cluster, me: String) {
        let mut offline_since: HashMap<String, Instant> = HashMap::new();
        // Index entries (project, name, revision) tried once already: a failure is not
        // repeated every second; a change of the entry tries again.
        let mut tried: HashSet<(String, String, i64)> = HashSet::new();
        loop {
            tokio::time::sleep(HEAL_EVERY).await;
            if self.fenced().await {
                offline_since.clear();
                continue;
            }
            let threshold = match cluster.healing_threshold().await {
                Ok(Some(t)) => Duration::from_secs(t),
                Ok(None) => {
                    offline_since.clear();
                    continue;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "healing: the cluster's settings not read");
                    continue;
                }
            };
            let members = match cluster.members().await {
                Ok(m) => m,
                Err(e) => {
                    tracing::debug!(error = %e, "healing: members not read");
                    continue;
                }
            };
            let offline: HashSet<String> = members
                .into_iter()
                .filter(|m| m.state == "offline")
                .map(|m| m.record.name)
                .collect();
            offline_since.retain(|n, _| offline.contains(n));
            for n in offline {
                offline_since.entry(n.clone()).or_insert_with(|| {
                    tracing::info!(member = %n, threshold_s = threshold.as_secs(), "healing: member offline; its HA instances go elsewhere after the threshold");
                    Instant::now()
                });
            }
            let due: HashSet<&String> = offline_since
                .iter()
                .filter(|(_, t)| t.elapsed() >= threshold)
                .map(|(n, _)| n)
                .collect();
            if due.is_empty() {
                continue;
            }
            let locations = match cluster.instance_locations().await {
                Ok(l) => l,
                Err(e) => {
                    tracing::debug!(error = %e, "healing: the index not read");
                    continue;
                }
            };
            tried.retain(|(p, n, r)| {
                locations
                    .iter()
                    .any(|l| l.project == *p && l.name == *n && l.revision == *r)
            });
            for loc in locations {
                if !due.contains(&loc.member) {
                    continue;
                }
                if loc.asks.restart.is_none() {
                    tracing::debug!(instance = %loc.name, member = %loc.member, "healing: not highly available, or not running when its member was lost");
                    continue;
                }
                let id = (loc.project.clone(), loc.name.clone(), loc.revision);
                if tried.contains(&id) {
                    continue;
                }
                // Volumes on replicated pools: only the keeper of their far copies can.
                let keeper = match self.keeper(&cluster, &loc).await {
                    Ok(k) => k,
                    Err(e) if e.kind == crate::error::ErrorKind::Conflict => {
                        tracing::warn!(instance = %loc.name, project = %loc.project, error = %e.message, "healing: it cannot fail over");
                        tried.insert(id);
                        continue;
                    }
                    // (etcd not read: asked again next time)
                    Err(e) => {
                        tracing::debug!(instance = %loc.name, error = %e.message, "healing: its far copies not read");
                        continue;
                    }
                };
                if keeper.as_deref().is_some_and(|k| k != me) {
                    tracing::debug!(instance = %loc.name, keeper = ?keeper, "healing: the keeper of its volumes' far copies takes it over");
                    continue;
                }
                match self
                    .place(
                        loc.asks.cpu,
                        loc.asks.memory,
                        None,
                        loc.asks.group.as_deref(),
                        keeper.as_deref(),
                    )
                    .await
                {
                    Ok(p) if p.member == me => {}
                    Ok(p) => {
                        tracing::debug!(instance = %loc.name, member = %p.member, "healing: another member's to take over");
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(instance = %loc.name, project = %loc.project, error = %e, "healing: no member can take it");
                        tried.insert(id);
                        continue;
                    }
                }
                tried.insert(id);
                let t = Instant::now();
                match self.fail_over(&cluster, &me, &loc).await {
                    Ok(true) => tracing::warn!(
                        instance = %loc.name, project = %loc.project, from = %loc.member,
                        secs = t.elapsed().as_secs_f64(),
                        "healing: failed over here and started"
                    ),
                    Ok(false) => {}
                    Err(e) => tracing::error!(
                        instance = %loc.name, project = %loc.project, from = %loc.member, error = %e,
                        "healing: the failover did not complete"
                    ),
                }
            }
        }
    }

    /// Whether this member is fenced now (or not live at all).
    pub(super) async fn fenced(&self) -> bool {
        match self.inner.live.lock().await.as_ref() {
            Some(j) => *j.beat.fenced().borrow(),
            None => true,
        }
    }

    /// Whether this member is still fenced after waiting up to `within` for its fence to
    /// lower. A member back from a cut is online to the others once its lease is in etcd
    /// again, but its fence lowers at the lease watchdog's next look (every 100 ms, later on
    /// a loaded host), which can come after: a start sent to it in between waits for that
    /// instead of failing (seen once in a full test run).
    pub(super) async fn fenced_after(&self, within: Duration) -> bool {
        let mut fenced = match self.inner.live.lock().await.as_ref() {
            Some(j) => j.beat.fenced(),
            None => return true,
        };
        let lowered = tokio::time::timeout(within, fenced.wait_for(|f| !f)).await;
        !matches!(lowered, Ok(Ok(_)))
    }

    /// The member that alone can take `loc` over: the one keeping the far copies of the
    /// replicated pools its volumes are on (`None`: it has no such volumes, any member can).
    /// An error when it cannot fail over at all: a volume on a pool without a far copy, a
    /// copy out of date (its primary acknowledged writes the copy lacks), copies on different
    /// members.
    async fn keeper(&self, cluster: &Cluster, loc: &Location) -> Result<Option<String>> {
        let spec = restart_spec(loc)?;
        let replicated: Vec<&str> = loc.asks.replicas.iter().map(|r| pool_of(r)).collect();
        if let Some(v) = spec
            .volumes
            .iter()
            .find(|v| !replicated.contains(&v.pool.as_str()))
        {
            return Err(Error::conflict(format!(
                "its volume {}/{} is on a pool without a far copy on another member (an HA \
                 instance's volumes fail over with it only from a replicated pool: `vessel \
                 storage pool create POOL raid --replica MEMBER`)",
                v.pool, v.volume
            )));
        }
        let mut keeper: Option<String> = None;
        for name in &loc.asks.replicas {
            let state = cluster
                .replica(name)
                .await
                .map_err(from_cluster)?
                .ok_or_else(|| Error::conflict(format!("far copy {name} has no record")))?;
            let k = if state.primary == loc.member {
                if state.outdated {
                    return Err(Error::conflict(format!(
                        "far copy {name} on {} is out of date ({} acknowledged writes it \
                         lacks): the data is on {} alone",
                        state.member, loc.member, loc.member
                    )));
                }
                state.member
            } else {
                // Adopted already (for another instance on the same pool): its adopter.
                state.primary
            };
            match &keeper {
                Some(other) if *other != k => {
                    return Err(Error::conflict(format!(
                        "its volumes' far copies are on different members ({other}, {k})"
                    )))
                }
                _ => keeper = Some(k),
            }
        }
        Ok(keeper)
    }

    /// Makes the pool of far copy `name` kept here this member's own, unless it is already
    /// (adopted for another instance on it).
    async fn adopt_for_failover(
        &self,
        cluster: &Cluster,
        me: &str,
        instances: &crate::instance::InstanceService,
        name: &str,
    ) -> Result<()> {
        let pool = pool_of(name);
        if self.adopted_here(cluster, me, instances, name).await? {
            return Ok(());
        }
        let (file, from) = self.replica_adopt(name).await?;
        instances.adopt_pool(pool, name, file, &from).await
    }

    /// Whether far copy `name` is this member's pool already (adopted for another instance
    /// on it); an error when a pool of its name is in the way.
    async fn adopted_here(
        &self,
        cluster: &Cluster,
        me: &str,
        instances: &crate::instance::InstanceService,
        name: &str,
    ) -> Result<bool> {
        let pool = pool_of(name);
        let state = cluster.replica(name).await.map_err(from_cluster)?;
        let exists = instances.storage.pool_get(pool).is_ok();
        if state.as_ref().is_some_and(|s| s.primary == me) && exists {
            return Ok(true);
        }
        if exists {
            return Err(Error::conflict(format!(
                "a pool named {pool} exists here already: far copy {name} cannot become it"
            )));
        }
        Ok(false)
    }

    /// Takes `loc` over for this member and makes and starts it here; `false` when another
    /// member took it first or its own came back.
    async fn fail_over(&self, cluster: &Cluster, me: &str, loc: &Location) -> Result<bool> {
        let spec = restart_spec(loc)?;
        let Some(instances) = self.inner.instances.get().cloned() else {
            return Ok(false);
        };
        // Noted as a claim first, for as long as the failover takes (an image fetch may take
        // long): the index's pass keeps the entry, and with it the fencing token, while it is
        // made here. After it, the instance in the store keeps it (or, if it could not be
        // made, the entry goes and the member it came from holds its copy again).
        let id = (loc.project.clone(), loc.name.clone());
        let held_until = Instant::now() + Duration::from_secs(7 * 24 * 3600);
        self.inner
            .claims
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), (held_until, loc.asks.clone()));
        let made = async {
            // What can fail is done before anything is taken: the image here, no pool in
            // the way of the copies to adopt.
            for name in &loc.asks.replicas {
                self.adopted_here(cluster, me, &instances, name).await?;
            }
            if !instances.has_image(&spec.image) {
                self.fetch_image(&loc.project, &spec.image, None).await?;
            }
            let token = match cluster.take_over(loc, me).await.map_err(from_cluster)? {
                Some(t) => t,
                None => return Ok(false),
            };
            tracing::warn!(
                instance = %loc.name, project = %loc.project, from = %loc.member, token,
                "healing: taken over; making it here"
            );
            for name in &loc.asks.replicas {
                self.adopt_for_failover(cluster, me, &instances, name)
                    .await?;
            }
            instances.fail_over_here(spec, keeps_of(loc)).await?;
            Ok(true)
        }
        .await;
        self.unclaim(&id.0, &id.1);
        made
    }

    /// Fetches the image `fingerprint` from a member that has it (for `project`), into the
    /// images of `into` (none: the daemon's own handle's).
    pub async fn fetch_image(
        &self,
        project: &str,
        fingerprint: &str,
        into: Option<&str>,
    ) -> Result<()> {
        let instances = self
            .inner
            .instances
            .get()
            .cloned()
            .ok_or_else(|| Error::internal("no instances"))?;
        let q = vessel_api::PROJECT_QUERY;
        let mut why = Vec::new();
        for peer in self.peers().await? {
            let req = super::instances::get_request(&format!(
                "/1.0/images/{fingerprint}/export?{q}={project}"
            ))?;
            let (resp, _) = match self.forward(&peer, req).await {
                Ok(r) => r,
                Err(e) => {
                    why.push(format!("{}: {e}", peer.name));
                    continue;
                }
            };
            if resp.status() != StatusCode::OK {
                why.push(format!("{}: {}", peer.name, resp.status()));
                continue;
            }
            let staging = instances.image_staging()?;
            let upload = staging.join("upload");
            if let Err(e) =
                crate::transfer::receive_body(resp.into_body(), &upload, MAX_IMAGE, "image").await
            {
                let _ = std::fs::remove_dir_all(&staging);
                why.push(format!("{}: {e}", peer.name));
                continue;
            }
            return instances
                .import_image_file(staging, upload, fingerprint, into)
                .await;
        }
        Err(Error::conflict(format!(
            "image {} is not here and no other member gave it ({})",
            crate::image::short(fingerprint),
            why.join("; ")
        )))
    }
}
