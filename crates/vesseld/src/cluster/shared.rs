//! What the members share through the store: the link of its shared kinds (projects,
//! identities, profiles) to etcd, what a shared project holds on the other members, and
//! the cluster-wide locks of quota checks and profile changes.

use super::{from_cluster, ClusterService, Membership, SharedSeed};
use crate::error::Result;

/// How long a member is waited for when asked what it holds or uses of a project.
const ASK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
/// How long a cluster-wide lock is waited for (another member's quota check or profile
/// change of the same project or profile).
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(15);
use crate::store::Seed;

impl ClusterService {
    /// Gives the service the store whose shared kinds it links to etcd while a member.
    /// A member links it at once (before the API serves: a change made meanwhile would be
    /// this member's alone, and undone when the link reads etcd's).
    pub fn set_shared(&self, shared: crate::store::SharedStore) {
        let _ = self.inner.shared.set(shared);
        let m = self
            .inner
            .membership
            .try_lock()
            .ok()
            .and_then(|m| m.clone());
        if let Some(m) = m {
            self.share(&m);
        }
    }

    /// Links the store's shared kinds to `m`'s etcd, adding this server's own as its
    /// membership says is still to be done (and noting once it is).
    pub(super) fn share(&self, m: &Membership) {
        let Some(s) = self.inner.shared.get() else {
            return;
        };
        let seed = match (m.shared_seed, m.profiles_shared) {
            (SharedSeed::All, _) => Seed::All,
            (SharedSeed::Projects, _) => Seed::Projects,
            (SharedSeed::Done, false) => Seed::Profiles,
            (SharedSeed::Done, true) => Seed::Nothing,
        };
        let svc = self.clone();
        let seeded: Box<dyn FnOnce() + Send> = Box::new(move || {
            // Off the link's runtime: the membership's lock is the daemon's.
            std::thread::spawn(move || svc.seeded());
        });
        s.attach(&m.etcd, &m.id, seed, seeded);
    }

    /// Notes that this server's own shared objects were added to the cluster's.
    fn seeded(&self) {
        let mut held = self.inner.membership.blocking_lock();
        if let Some(m) = held
            .as_mut()
            .filter(|m| m.shared_seed != SharedSeed::Done || !m.profiles_shared)
        {
            m.shared_seed = SharedSeed::Done;
            m.profiles_shared = true;
            if let Err(e) = self.save(m) {
                tracing::warn!(error = %e, "membership not saved (its objects will be added again)");
            }
        }
    }

    /// What `project` holds on the other members, each said with its member: a project
    /// the members share is not deleted from under them. A member that does not answer
    /// within [`ASK_WAIT`] (offline or not; all are asked at once) is named: what it holds
    /// cannot be known. Nothing outside a cluster, or before etcd answered (the project's
    /// deletion is refused then anyway).
    pub async fn project_holds(&self, project: &str) -> Result<Vec<String>> {
        let Some((cluster, me)) = self.live_member().await else {
            return Ok(Vec::new());
        };
        // Offline ones too: a member cut off from etcd still answers over HTTPS.
        let others: Vec<_> = self
            .targets(&cluster)
            .await?
            .into_iter()
            .map(|(t, _)| t)
            .filter(|t| t.name != me)
            .collect();
        let path = format!("/1.0/projects/{project}?holds=1");
        let answers = self.ask_each::<vessel_api::Project>(&others, &path).await;
        let mut holds = Vec::new();
        for (t, answer) in others.iter().zip(answers) {
            match answer {
                // (Identities and profiles are the cluster's: counted here already.)
                Ok(p) => holds.extend(
                    p.holds
                        .into_iter()
                        .filter(|h| !h.starts_with("identity ") && !h.starts_with("profile "))
                        .map(|h| format!("{h} (on {})", t.name)),
                ),
                // Not there (yet): a member that has not read etcd's projects holds nothing
                // of it.
                Err(e) if e.kind == crate::error::ErrorKind::NotFound => {}
                Err(e) => holds.push(format!(
                    "what member {} holds (it did not say: {}; bring it back, or remove it \
                     from the cluster)",
                    t.name, e.message
                )),
            }
        }
        Ok(holds)
    }

    /// Takes `project`'s quota lock across the cluster for this member (see
    /// [`ClusterService::lock`]).
    pub async fn quota_lock(&self, project: &str) -> Result<Option<vessel_cluster::ClusterLock>> {
        self.lock(&format!("quota/{project}")).await
    }

    /// Takes the cluster-wide lock `what` for this member, waiting up to [`LOCK_WAIT`] for
    /// another member to let it go: `None` outside a cluster; an error while this server is
    /// a member not connected to etcd.
    pub async fn lock(&self, what: &str) -> Result<Option<vessel_cluster::ClusterLock>> {
        let why = format!("{what} is locked across the cluster");
        let Some((cluster, me)) = self.live_member_or_unavailable(&why).await? else {
            return Ok(None);
        };
        let unavailable = |why: String| crate::error::Error {
            kind: crate::error::ErrorKind::Unavailable,
            message: format!(
                "{what} is locked across the cluster, and etcd did not give the lock \
                 ({why}); see `vessel cluster info`"
            ),
        };
        if self.fenced().await {
            return Err(unavailable(
                "this member is fenced: cut off from etcd".into(),
            ));
        }
        let taken = tokio::time::timeout(
            LOCK_WAIT + std::time::Duration::from_secs(5),
            cluster.lock(what, &me, LOCK_WAIT),
        )
        .await
        .map_err(|_| unavailable("no answer in time".into()))?;
        match taken {
            Ok(lock) => Ok(Some(lock)),
            Err(vessel_cluster::Error::Conflict(why)) => Err(crate::error::Error::conflict(
                format!("{why}; try again once it is done"),
            )),
            Err(e) => Err(unavailable(e.to_string())),
        }
    }

    /// As [`ClusterService::live_member`], but an error (`why` it is needed, and that this
    /// member is not connected to etcd yet) while this server is a member that is not
    /// live; `None` outside a cluster.
    pub(super) async fn live_member_or_unavailable(
        &self,
        why: &str,
    ) -> Result<Option<(vessel_cluster::Cluster, String)>> {
        if let Some(live) = self.live_member().await {
            return Ok(Some(live));
        }
        // Outside a cluster, or in one no more: what it holds is its own.
        if self.inner.membership.lock().await.is_none() || self.ended().is_some() {
            return Ok(None);
        }
        Err(crate::error::Error {
            kind: crate::error::ErrorKind::Unavailable,
            message: format!(
                "{why}, and this member is not connected to etcd yet; see `vessel cluster info`"
            ),
        })
    }

    /// Asks each of `targets` for `path`, all at once, [`ASK_WAIT`] at most each: the
    /// answers in their order.
    pub(super) async fn ask_each<T: serde::de::DeserializeOwned>(
        &self,
        targets: &[super::forward::Target],
        path: &str,
    ) -> Vec<Result<T>> {
        futures_util::future::join_all(targets.iter().map(|t| self.ask::<T>(t, path))).await
    }

    /// Asks `to` for `path`, for [`ASK_WAIT`] at most.
    async fn ask<T: serde::de::DeserializeOwned>(
        &self,
        to: &super::forward::Target,
        path: &str,
    ) -> Result<T> {
        match tokio::time::timeout(ASK_WAIT, self.get_json::<T>(to, path)).await {
            Ok(answer) => answer,
            Err(_) => Err(crate::error::Error::internal(format!(
                "member {} did not answer within {} s",
                to.name,
                ASK_WAIT.as_secs()
            ))),
        }
    }

    /// `local` (what `project` uses on this member) with what it uses on the other members
    /// when `quota` counts instances: each online member's own count (asked as a member:
    /// it answers its own), an offline one's from the cluster's index (its instances'
    /// recorded CPU and memory; each counted as a container). Outside a cluster: `local`.
    /// (The caller holds the cluster's quota lock of the project:
    /// `ProjectService::instances_quota_guard`.)
    pub async fn project_usage(
        &self,
        project: &str,
        mut local: vessel_api::ProjectUsage,
        quota: &crate::project::quota::Quota,
    ) -> Result<vessel_api::ProjectUsage> {
        if quota.counts_instances() {
            crate::project::quota::add(&mut local, &self.usage_elsewhere(project).await?);
        }
        Ok(local)
    }

    /// What `project` uses on the other members (see [`ClusterService::project_usage`]);
    /// nothing outside a cluster.
    pub async fn usage_elsewhere(&self, project: &str) -> Result<vessel_api::ProjectUsage> {
        Ok(self
            .usage_elsewhere_all()
            .await?
            .remove(project)
            .unwrap_or_default())
    }

    /// What every project uses on the other members, by project: one question to each
    /// online member, an offline one counted from the cluster's index. An error, soon,
    /// when etcd does not answer.
    pub async fn usage_elsewhere_all(
        &self,
    ) -> Result<std::collections::HashMap<String, vessel_api::ProjectUsage>> {
        let mut total = std::collections::HashMap::<String, vessel_api::ProjectUsage>::new();
        let Some((cluster, me)) = self.live_member().await else {
            return Ok(total);
        };
        let unavailable = || crate::error::Error {
            kind: crate::error::ErrorKind::Unavailable,
            message: "etcd does not answer: what projects use on the other members cannot be \
                      counted"
                .into(),
        };
        if self.fenced().await {
            return Err(unavailable());
        }
        // Not for long while etcd does not answer: the caller says what then.
        let read = async {
            let locations = cluster.instance_locations().await.map_err(from_cluster)?;
            Ok::<_, crate::error::Error>((locations, self.targets(&cluster).await?))
        };
        let (locations, targets) = tokio::time::timeout(std::time::Duration::from_secs(3), read)
            .await
            .map_err(|_| unavailable())??;
        let mut add = |project: &str, u: &vessel_api::ProjectUsage| {
            crate::project::quota::add(total.entry(project.to_string()).or_default(), u);
        };
        // The online ones are asked; an offline one (or one that does not answer) is
        // counted from the index.
        let others: std::collections::HashSet<String> = targets
            .iter()
            .map(|(t, _)| t.name.clone())
            .filter(|n| *n != me)
            .collect();
        let online: Vec<_> = targets
            .into_iter()
            .filter(|(t, state)| t.name != me && state != "offline")
            .map(|(t, _)| t)
            .collect();
        let answers = self
            .ask_each::<Vec<vessel_api::Project>>(&online, "/1.0/projects?recursion=1")
            .await;
        let mut counted = std::collections::HashSet::new();
        for (t, answer) in online.iter().zip(answers) {
            match answer {
                Ok(all) => {
                    counted.insert(t.name.clone());
                    for p in all {
                        add(&p.name, &p.usage.unwrap_or_default());
                    }
                }
                Err(e) => {
                    tracing::debug!(member = %t.name, error = %e, "project usage from the index")
                }
            }
        }
        for l in locations
            .iter()
            .filter(|l| others.contains(&l.member) && !counted.contains(&l.member))
        {
            let u = vessel_api::ProjectUsage {
                instances: 1,
                containers: 1,
                cpu: l.asks.cpu,
                memory: l.asks.memory,
                ..Default::default()
            };
            add(&l.project, &u);
        }
        Ok(total)
    }
}
