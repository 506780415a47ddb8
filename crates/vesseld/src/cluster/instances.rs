//! The cluster's instances: where each lives (an index in etcd that each member keeps true
//! of its own), which member a new one goes to (the scheduler, or `--target`), and the
//! requests this member forwards to the member holding an instance.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::Response;
use vessel_api::InstanceCreate;
use vessel_cluster::{Asks, Cluster};

use super::forward::{self, Splice, Target};
use super::{from_cluster, ClusterService};
use crate::error::{Error, Result};

/// How often a member writes its instances into the index.
const INDEX_EVERY: Duration = Duration::from_secs(2);
/// How long a claimed name is kept for an instance not made yet.
const CLAIM_GRACE: Duration = Duration::from_secs(60);
/// How many forwarded operations are remembered (the oldest go first).
const OPS_KEPT: usize = 4096;
/// The longest operation body read back from another member.
const MAX_OPERATION_BODY: usize = 1 << 20;

/// What an error answer of another member says (its `error`, or the body as it is).
pub(super) fn error_text(bytes: &[u8]) -> String {
    serde_json::from_slice::<vessel_api::ErrorResponse>(bytes)
        .map(|e| e.error)
        .unwrap_or_else(|_| String::from_utf8_lossy(bytes).into_owned())
}

/// The placement group of an instance of `project` whose configuration is `config`
/// (`cluster.group`), as the cluster knows it: `PROJECT/GROUP`.
pub fn group_of(
    project: &str,
    config: &std::collections::BTreeMap<String, String>,
) -> Option<String> {
    config
        .get("cluster.group")
        .map(|g| format!("{project}/{g}"))
}

/// What an instance of `project` with `limits` and `config` asks of its member.
fn asks(
    project: &str,
    limits: &vessel_api::Limits,
    config: &std::collections::BTreeMap<String, String>,
) -> Asks {
    Asks {
        cpu: limits.cpu.unwrap_or(0.0),
        memory: limits.memory.unwrap_or(0),
        group: group_of(project, config),
        restart: None,
        keeps: None,
        replicas: Vec::new(),
    }
}

/// A GET of `uri` (a path with its query) for another member.
pub fn get_request(uri: &str) -> Result<Request> {
    Request::builder()
        .method("GET")
        .uri(uri)
        .body(Body::empty())
        .map_err(|e| Error::internal(e.to_string()))
}

/// The far copies of the replicated pools `spec`'s volumes are on, each once.
fn replicas_of(instances: &crate::instance::InstanceService, spec: &InstanceCreate) -> Vec<String> {
    let pools: BTreeSet<&str> = spec.volumes.iter().map(|v| v.pool.as_str()).collect();
    pools
        .into_iter()
        .filter_map(|p| instances.storage.pool_replica(p))
        .map(|r| r.name)
        .collect()
}

impl ClusterService {
    /// The connection and this member's name, while it is a live member.
    pub(super) async fn live_member(&self) -> Option<(Cluster, String)> {
        let name = self.inner.membership.lock().await.as_ref()?.name.clone();
        let cluster = self.inner.live.lock().await.as_ref()?.cluster.clone();
        Some((cluster, name))
    }

    /// This member's name, while it is a live member of a cluster.
    pub async fn me(&self) -> Option<String> {
        self.live_member().await.map(|(_, me)| me)
    }

    /// The members with where to reach them, and their states (`online`, `evacuated`,
    /// `offline`).
    pub(super) async fn targets(&self, cluster: &Cluster) -> Result<Vec<(Target, String)>> {
        Ok(cluster
            .members()
            .await
            .map_err(from_cluster)?
            .into_iter()
            .map(|m| {
                (
                    Target {
                        name: m.record.name,
                        address: m.record.address,
                        fingerprint: m.record.fingerprint,
                    },
                    m.state,
                )
            })
            .collect())
    }

    /// The member `name`, which must answer (online or evacuated).
    pub(super) async fn reachable(
        &self,
        cluster: &Cluster,
        name: &str,
        why: &str,
    ) -> Result<Target> {
        let all = self.targets(cluster).await?;
        match all.into_iter().find(|(t, _)| t.name == name) {
            Some((t, state)) if state != "offline" => Ok(t),
            Some((t, _)) => Err(Error::conflict(format!(
                "member {} is offline: {why} (see `vessel cluster list`)",
                t.name
            ))),
            None => Err(Error::not_found(format!(
                "no member {name} in the cluster (see `vessel cluster list`)"
            ))),
        }
    }

    /// The other member holding `project`/`name`, if another holds it. An instance on an
    /// offline member is refused with its place.
    pub async fn locate(&self, project: &str, name: &str) -> Result<Option<Target>> {
        let Some((cluster, me)) = self.live_member().await else {
            return Ok(None);
        };
        let Some(loc) = cluster
            .locate_instance(project, name)
            .await
            .map_err(from_cluster)?
        else {
            return Ok(None);
        };
        if loc.member == me {
            return Ok(None);
        }
        let why = format!("instance {name} lives there and cannot be reached until it is back");
        self.reachable(&cluster, &loc.member, &why).await.map(Some)
    }

    /// Where a new instance asking for `cpu` cores and `memory` bytes goes: `target` when
    /// given (online), else the member the scheduler chooses. `None`: this member.
    pub async fn choose(
        &self,
        target: Option<&str>,
        cpu: f64,
        memory: u64,
        group: Option<&str>,
    ) -> Result<Option<Target>> {
        let Some((cluster, me)) = self.live_member().await else {
            return match target {
                Some(t) => Err(Error::invalid(format!(
                    "--target {t}: this server is not a member of a cluster"
                ))),
                None => Ok(None),
            };
        };
        let chosen = match target {
            Some(t) => t.to_string(),
            None => self.place(cpu, memory, None, group, None).await?.member,
        };
        if chosen == me {
            return Ok(None);
        }
        let why = "no instance can be placed there; choose another with --target, or none to \
                   let the scheduler choose";
        let to = self.reachable(&cluster, &chosen, why).await?;
        let evacuated = self
            .targets(&cluster)
            .await?
            .iter()
            .any(|(t, state)| t.name == chosen && state == "evacuated");
        if evacuated {
            return Err(Error::conflict(format!(
                "member {chosen} is evacuated: nothing new goes there until `vessel cluster \
                 restore {chosen}`"
            )));
        }
        Ok(Some(to))
    }

    /// Claims `project`/`name` for this member before it makes the instance: refused if
    /// another member holds the name.
    pub async fn claim(
        &self,
        project: &str,
        name: &str,
        limits: &vessel_api::Limits,
        config: &std::collections::BTreeMap<String, String>,
    ) -> Result<()> {
        let Some((cluster, me)) = self.live_member().await else {
            return Ok(());
        };
        let asks = asks(project, limits, config);
        // Noted before it is written: the index's pass that reads etcd after the write
        // reads the note too (see `keep_index`), so it never takes the claim for stale.
        let id = (project.to_string(), name.to_string());
        self.inner
            .claims
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), (Instant::now(), asks.clone()));
        let claimed = cluster
            .claim_instance(project, name, &me, asks)
            .await
            .map_err(from_cluster);
        if claimed.is_err() {
            self.inner
                .claims
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
        }
        claimed
    }

    /// The other members that are online.
    pub async fn peers(&self) -> Result<Vec<Target>> {
        let Some((cluster, me)) = self.live_member().await else {
            return Ok(Vec::new());
        };
        Ok(self
            .targets(&cluster)
            .await?
            .into_iter()
            .filter(|(t, state)| state != "offline" && t.name != me)
            .map(|(t, _)| t)
            .collect())
    }

    /// Every instance's place in the cluster (none outside one).
    pub async fn locations(&self) -> Result<Vec<vessel_cluster::Location>> {
        let Some((cluster, _)) = self.live_member().await else {
            return Ok(Vec::new());
        };
        cluster.instance_locations().await.map_err(from_cluster)
    }

    /// The instance `qualified` is gone from this member: its name is let go in the index
    /// now (not at the next pass), so it can be used again at once anywhere.
    pub async fn released(&self, qualified: &str) {
        let (project, name) = crate::project::split(qualified);
        self.unclaim(project, name);
        let Some((cluster, me)) = self.live_member().await else {
            return;
        };
        if let Err(e) = cluster.release_instance(project, name, &me).await {
            tracing::debug!(instance = qualified, error = %e, "name not let go yet; the index's next pass will");
        }
    }

    /// Forgets a claim whose instance was not made: the index lets the name go.
    pub fn unclaim(&self, project: &str, name: &str) {
        self.inner
            .claims
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(project.to_string(), name.to_string()));
    }

    /// The member an operation forwarded from here runs on.
    pub fn operation_member(&self, id: &str) -> Option<Target> {
        let ops = self.inner.ops.lock().unwrap_or_else(|p| p.into_inner());
        ops.1.get(id).cloned()
    }

    fn remember_operation(&self, id: String, to: &Target) {
        let mut ops = self.inner.ops.lock().unwrap_or_else(|p| p.into_inner());
        let (order, map) = &mut *ops;
        if map.insert(id.clone(), to.clone()).is_none() {
            order.push_back(id);
        }
        while order.len() > OPS_KEPT {
            if let Some(old) = order.pop_front() {
                map.remove(&old);
            }
        }
    }

    /// Forwards `req` to `to`. An operation it starts there is remembered, so that its
    /// progress and end can be asked of this member too.
    pub async fn forward(&self, to: &Target, req: Request) -> Result<(Response, Option<Splice>)> {
        let me = self.me().await.unwrap_or_default();
        let (resp, splice) = forward::send(&self.inner.root, &me, to, req).await?;
        if resp.status() != StatusCode::ACCEPTED {
            return Ok((resp, splice));
        }
        let (parts, body) = resp.into_parts();
        let bytes = axum::body::to_bytes(body, MAX_OPERATION_BODY)
            .await
            .map_err(|e| Error::internal(format!("member {}: {e}", to.name)))?;
        if let Some(id) = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("id")?.as_str().map(str::to_string))
        {
            self.remember_operation(id, to);
        }
        Ok((Response::from_parts(parts, Body::from(bytes)), splice))
    }

    /// Asks `to` for `path` (a GET) and reads its JSON answer.
    pub async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        to: &Target,
        path: &str,
    ) -> Result<T> {
        self.json_of(to, get_request(path)?).await
    }

    /// Sends `req` to `to` and reads its JSON answer (an error answer is an error).
    pub async fn json_of<T: serde::de::DeserializeOwned>(
        &self,
        to: &Target,
        req: Request,
    ) -> Result<T> {
        let (resp, _) = self.forward(to, req).await?;
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 64 << 20)
            .await
            .map_err(|e| Error::internal(format!("member {}: {e}", to.name)))?;
        if !status.is_success() {
            let why = error_text(&bytes);
            let said = format!("member {} answered {status}: {why}", to.name);
            return Err(if status == StatusCode::NOT_FOUND {
                Error::not_found(said)
            } else {
                Error::internal(said)
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| {
            Error::internal(format!(
                "member {} answered what does not parse: {e}",
                to.name
            ))
        })
    }

    /// Makes the instance in the archive `file` (of `export`) on `to`, in `project`,
    /// started when `start`; answers once it is made there.
    pub async fn import_on(
        &self,
        to: &Target,
        project: &str,
        file: std::fs::File,
        start: bool,
    ) -> Result<()> {
        let q = vessel_api::PROJECT_QUERY;
        let uri = format!("/1.0/archives?{q}={project}&start={}", u8::from(start));
        self.post_file(to, project, &uri, file, "the instance")
            .await
    }

    /// Posts `file` to `uri` on `to` and waits for the operation it starts there.
    pub(super) async fn post_file(
        &self,
        to: &Target,
        project: &str,
        uri: &str,
        file: std::fs::File,
        what: &str,
    ) -> Result<()> {
        let (len, body) = crate::transfer::file_body(file, ());
        let req = Request::builder()
            .method("POST")
            .uri(uri)
            .header(axum::http::header::CONTENT_TYPE, "application/x-tar")
            .header(axum::http::header::CONTENT_LENGTH, len)
            .body(body)
            .map_err(|e| Error::internal(e.to_string()))?;
        self.operation_on(to, project, req, what).await
    }

    /// Sends `req` (which starts an operation) to `to` and waits for that operation.
    pub async fn operation_on(
        &self,
        to: &Target,
        project: &str,
        req: Request,
        what: &str,
    ) -> Result<()> {
        let (resp, _) = self.forward(to, req).await?;
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), MAX_OPERATION_BODY)
            .await
            .map_err(|e| Error::internal(format!("member {}: {e}", to.name)))?;
        if status != StatusCode::ACCEPTED {
            let why = error_text(&bytes);
            return Err(Error::conflict(format!(
                "member {} did not take {what}: {why}",
                to.name
            )));
        }
        let op: vessel_api::Operation = serde_json::from_slice(&bytes)
            .map_err(|e| Error::internal(format!("member {}: {e}", to.name)))?;
        self.wait_on(to, project, &op.id).await
    }

    /// Whether `to` holds `project`/`name` (an error when it cannot say).
    pub async fn holds(&self, to: &Target, project: &str, name: &str) -> Result<bool> {
        let q = vessel_api::PROJECT_QUERY;
        let req = get_request(&format!("/1.0/instances/{name}?{q}={project}"))?;
        let (resp, _) = self.forward(to, req).await?;
        match resp.status() {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            other => Err(Error::internal(format!(
                "member {} answered {other} about instance {name}",
                to.name
            ))),
        }
    }

    /// Starts `project`/`name` on `to`, and waits.
    pub async fn start_on(&self, to: &Target, project: &str, name: &str) -> Result<()> {
        let q = vessel_api::PROJECT_QUERY;
        let body = serde_json::to_vec(&vessel_api::StateChange {
            action: vessel_api::StateAction::Start,
            timeout: None,
            force: false,
        })
        .map_err(|e| Error::internal(e.to_string()))?;
        let req = Request::builder()
            .method("PUT")
            .uri(format!("/1.0/instances/{name}/state?{q}={project}"))
            .header(axum::http::header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .map_err(|e| Error::internal(e.to_string()))?;
        self.operation_on(to, project, req, "the start").await
    }

    /// Deletes `project`/`name` on `to` (forced), with the volumes attached to it when
    /// `volumes` (a copy a move made there, which has only the volumes the move carried),
    /// and waits.
    pub async fn delete_on(
        &self,
        to: &Target,
        project: &str,
        name: &str,
        volumes: bool,
    ) -> Result<()> {
        let q = vessel_api::PROJECT_QUERY;
        let also = if volumes { "&volumes=1" } else { "" };
        let req = Request::builder()
            .method("DELETE")
            .uri(format!("/1.0/instances/{name}?{q}={project}&force=1{also}"))
            .body(Body::empty())
            .map_err(|e| Error::internal(e.to_string()))?;
        self.operation_on(to, project, req, "the deletion").await
    }

    /// Waits for the operation `id` on `to` to end; its failure is this one's.
    pub async fn wait_on(&self, to: &Target, project: &str, id: &str) -> Result<()> {
        use vessel_api::OperationStatus as S;
        let q = vessel_api::PROJECT_QUERY;
        loop {
            let op: vessel_api::Operation = self
                .get_json(
                    to,
                    &format!("/1.0/operations/{id}/wait?timeout=30&{q}={project}"),
                )
                .await?;
            match op.status {
                S::Success => return Ok(()),
                S::Failure | S::Cancelled => {
                    return Err(Error::conflict(format!(
                        "on member {}: {}",
                        to.name,
                        op.error
                            .unwrap_or_else(|| format!("{:?}", op.status).to_lowercase())
                    )))
                }
                S::Pending | S::Running => {}
            }
        }
    }

    /// Hands `project`/`name` over to `to` in the cluster's index (this member must hold
    /// it), noting `origin`: the member it was evacuated from, if it was.
    pub async fn hand_over(
        &self,
        project: &str,
        name: &str,
        to: &str,
        origin: Option<&str>,
    ) -> Result<()> {
        let Some((cluster, me)) = self.live_member().await else {
            return Err(Error::conflict(
                "this server is no longer a live member of its cluster",
            ));
        };
        cluster
            .hand_over(project, name, &me, to, origin)
            .await
            .map_err(from_cluster)
    }

    /// Clears the mark of a failover on `project`/`name`, held here, before it moves to
    /// `to`: a copy made on the member it was failed over from is the moving one, not a
    /// stale one (any other keeps its copy marked stale).
    pub async fn settle(&self, project: &str, name: &str, to: &str) -> Result<()> {
        let Some((cluster, me)) = self.live_member().await else {
            return Ok(());
        };
        cluster
            .settle_failover(project, name, &me, to)
            .await
            .map_err(from_cluster)
    }

    /// Deletes this member's copy of `c`, which was failed over to `c.member` while this
    /// member was cut off (it was fenced then: stopped); whether it is gone.
    async fn drop_stale(&self, c: &vessel_cluster::Location) -> bool {
        let Some(instances) = self.inner.instances.get() else {
            return false;
        };
        let name = crate::project::qualify(&c.project, &c.name);
        tracing::warn!(
            instance = %c.name, project = %c.project, member = %c.member,
            "failed over to another member while this one was cut off: deleting the stale copy here"
        );
        match instances.delete_stale(&name).await {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(instance = %name, error = %e, "the stale copy was not deleted");
                false
            }
        }
    }

    /// Whether the HA instance `qualified` may start here: only on a live, unfenced member
    /// that the cluster's index names for it (or none yet). A daemon just started waits up
    /// to a lease's TTL for etcd, and a fence about to lower is waited for. Once it `runs`,
    /// the fence watchdog is told of its process first (a daemon killed during the checks,
    /// or right after, must not leave it running unwatched), then the same checks, without
    /// waiting: a fence up during the start stops it at once.
    pub async fn may_start_ha(&self, qualified: &str, runs: bool) -> Result<()> {
        // Outside a cluster the mark waits for one: nothing fences the instance or fails
        // it over, and it starts as any other. A membership file that is there but could
        // not be read is no way out of the watchdog: such a start is refused (may_run_ha)
        // before the instance runs.
        if self.inner.membership.lock().await.is_none()
            && !self.inner.root.join(super::FILE).exists()
        {
            return Ok(());
        }
        if !runs {
            return self.may_run_ha(qualified, true).await;
        }
        if !self.watchdog_told().await {
            return Err(Error::conflict(format!(
                "{qualified} is highly available (cluster.ha), and the fence watchdog of this \
                 member could not be told of its process (fenced, or no lease renewal \
                 confirmed lately); see the daemon's log"
            )));
        }
        self.may_run_ha(qualified, false).await
    }

    /// Tells the fence watchdog now which HA processes run; whether it was told.
    async fn watchdog_told(&self) -> bool {
        let tell = match self.inner.live.lock().await.as_ref() {
            Some(j) => j.tell_watchdog.clone(),
            None => None,
        };
        let Some(tell) = tell else {
            return false;
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        tell.send(tx).is_ok() && rx.await.unwrap_or(false)
    }

    async fn may_run_ha(&self, qualified: &str, wait_fence: bool) -> Result<()> {
        if self.inner.membership.lock().await.is_none() {
            let file = self.inner.root.join(super::FILE);
            if file.exists() {
                return Err(Error::conflict(format!(
                    "{qualified} is highly available (cluster.ha), and this server's cluster \
                     membership ({}) cannot be read (see the daemon's log at its start): the \
                     cluster may run it elsewhere. Mend the file and restart the daemon, or \
                     unset cluster.ha to run it here outside a cluster",
                    file.display()
                )));
            }
            return Ok(());
        }
        if let Some(why) = self.ended() {
            return Err(Error::conflict(format!(
                "{qualified} is highly available (cluster.ha), and this server's membership \
                 ended ({why}); the cluster may run it elsewhere. Join that cluster again \
                 under the same name (vessel cluster join TOKEN), or unset cluster.ha to run \
                 it here outside one"
            )));
        }
        let deadline = Instant::now() + super::LEASE_TTL;
        let (cluster, me) = loop {
            if let Some(live) = self.live_member().await {
                break live;
            }
            if Instant::now() >= deadline {
                return Err(Error::conflict(format!(
                    "{qualified} is highly available (cluster.ha): it starts only while this \
                     member's cluster answers, and etcd has not answered since the daemon \
                     started; see the daemon's log"
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let fenced = if wait_fence {
            self.fenced_after(super::LEASE_TTL / 2).await
        } else {
            self.fenced().await
        };
        if fenced {
            return Err(Error::conflict(format!(
                "this member is fenced (its lease has not been renewed): {qualified} is highly \
                 available (cluster.ha) and does not start here until etcd answers again"
            )));
        }
        if !self
            .inner
            .watchdog_ok
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            return Err(Error::conflict(format!(
                "{qualified} is highly available (cluster.ha), and no fence watchdog runs on \
                 this member to stop it should the daemon die; see the daemon's log"
            )));
        }
        let (project, name) = crate::project::split(qualified);
        match cluster
            .locate_instance(project, name)
            .await
            .map_err(from_cluster)?
        {
            // Not in the index (let go meanwhile): held here in one transaction, or not at
            // all.
            None => cluster
                .claim_instance(project, name, &me, Asks::default())
                .await
                .map_err(from_cluster),
            Some(loc) if loc.member != me => Err(Error::conflict(format!(
                "instance {name} lives on member {} now{}: this copy does not start",
                loc.member,
                if loc.failed_over_from.as_deref() == Some(me.as_str()) {
                    " (failed over while this member was offline)"
                } else {
                    ""
                }
            ))),
            _ => Ok(()),
        }
    }

    /// Keeps the index true of this member's instances: those in its store and the names
    /// it claimed for instances being made.
    pub(super) async fn keep_index(self, cluster: Cluster, me: String) {
        let mut told = BTreeSet::new();
        let mut events = self.inner.events.get().map(|e| e.subscribe());
        let mut first = true;
        loop {
            // Every INDEX_EVERY, and at once when an instance is made, renamed, deleted,
            // started or stopped here (so its name is held or let go without waiting).
            if !first {
                match events.as_mut() {
                    Some(rx) => {
                        let changed = async {
                            loop {
                                match rx.recv().await {
                                    Ok(ev) => {
                                        let ours = ev.action.as_deref().is_some_and(|a| {
                                            // Started and stopped too: whether an HA
                                            // instance is failed over follows at once.
                                            matches!(
                                                a,
                                                "instance-created"
                                                    | "instance-deleted"
                                                    | "instance-renamed"
                                                    | "instance-started"
                                                    | "instance-stopped"
                                            )
                                        });
                                        if ours {
                                            return;
                                        }
                                    }
                                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                                        return
                                    }
                                    Err(_) => std::future::pending::<()>().await,
                                }
                            }
                        };
                        tokio::select! {
                            _ = changed => {}
                            _ = tokio::time::sleep(INDEX_EVERY) => {}
                        }
                    }
                    None => tokio::time::sleep(INDEX_EVERY).await,
                }
            }
            first = false;
            // etcd's revision before the instances and claims are read: an entry made after
            // it is not taken for stale by this pass.
            let since = match cluster.revision().await {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(error = %e, "the cluster's index not written");
                    continue;
                }
            };
            let instances = self.inner.instances.get();
            let mut ha = BTreeSet::new();
            let mut keep: BTreeMap<(String, String), Asks> = match self.inner.store.instance_list()
            {
                Ok(list) => list
                    .iter()
                    .map(|i| {
                        let (p, n) = crate::project::split(&i.name);
                        let mut asks = asks(p, &i.limits, &i.config);
                        if crate::instance::ha::is_ha(&i.config) {
                            ha.insert((p.to_string(), n.to_string()));
                            // Only what runs is started elsewhere when this member is lost.
                            let spec = instances.and_then(|s| s.restart_request(i));
                            if let (Some(s), Some((spec, _))) = (instances, &spec) {
                                asks.replicas = replicas_of(s, spec);
                            }
                            if let Some((spec, keeps)) = spec {
                                asks.restart = serde_json::to_value(spec).ok();
                                asks.keeps = serde_json::to_value(keeps).ok();
                            }
                        }
                        ((p.to_string(), n.to_string()), asks)
                    })
                    .collect(),
                Err(e) => {
                    tracing::warn!(error = %e, "instances not read for the cluster's index");
                    continue;
                }
            };
            {
                let mut claims = self.inner.claims.lock().unwrap_or_else(|p| p.into_inner());
                claims.retain(|_, (at, _)| at.elapsed() < CLAIM_GRACE);
                for (id, (_, asks)) in claims.iter() {
                    keep.entry(id.clone()).or_insert_with(|| asks.clone());
                }
            }
            match cluster.sync_instances(&me, &keep, since).await {
                Ok(clashes) => {
                    for c in clashes {
                        let id = (c.project.clone(), c.name.clone());
                        // (A move clears the mark before it makes a copy anywhere: a copy
                        // moving here is never taken for stale.)
                        // (A copy marked stale goes whatever it is now: HA or not.)
                        if c.failed_over_from.as_deref() == Some(me.as_str())
                            && (ha.contains(&id) || c.stale)
                        {
                            if self.drop_stale(&c).await {
                                if let Err(e) =
                                    cluster.stale_dropped(&me, &c.project, &c.name).await
                                {
                                    tracing::debug!(error = %e, "the stale mark stays for now");
                                }
                            }
                            continue;
                        }
                        if told.insert(id) {
                            tracing::warn!(
                                instance = %c.name, project = %c.project, member = %c.member,
                                "an instance of this name lives on another member too; rename one"
                            );
                        }
                    }
                }
                Err(e) => tracing::debug!(error = %e, "the cluster's index not written"),
            }
        }
    }
}
