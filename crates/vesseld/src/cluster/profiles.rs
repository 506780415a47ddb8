//! Profiles across members: a profile is the cluster's (its record is a shared kind, kept in
//! etcd), but only the member holding an instance can change it, so a profile's change made
//! on one member is sent to every other one for its own instances using the profile, and a
//! profile is deleted only while no instance on any member uses it.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use vessel_api::{Profile, ProfileApply, ProfileChange};

use super::forward::Target;
use super::ClusterService;
use crate::error::{Error, ErrorKind, Result};

/// How long a member may take to apply a profile's change to its instances.
const APPLY_WAIT: Duration = Duration::from_secs(60);

impl ClusterService {
    /// The other members (every one: a member cut off from etcd still answers over HTTPS);
    /// none outside a cluster.
    async fn others(&self) -> Result<Vec<Target>> {
        let why = "a profile is changed on every member";
        let Some((cluster, me)) = self.live_member_or_unavailable(why).await? else {
            return Ok(Vec::new());
        };
        Ok(self
            .targets(&cluster)
            .await?
            .into_iter()
            .map(|(t, _)| t)
            .filter(|t| t.name != me)
            .collect())
    }

    /// Has every other member's instances using profile `name` of `project` take `change`
    /// (all asked at once): per member, what changed there, or why not.
    pub async fn profile_applied_elsewhere(
        &self,
        project: &str,
        name: &str,
        change: &ProfileApply,
    ) -> Vec<(String, Result<ProfileChange>)> {
        let others = match self.others().await {
            Ok(o) => o,
            Err(e) => return vec![("the cluster".into(), Err(e))],
        };
        let q = vessel_api::PROJECT_QUERY;
        let path = format!("/1.0/profiles/{name}/apply?{q}={project}");
        let body = serde_json::to_vec(change).expect("a profile change serializes");
        let asks = others.iter().map(|t| {
            let (path, body) = (path.clone(), body.clone());
            async move {
                let req = Request::builder()
                    .method("POST")
                    .uri(path)
                    .header(axum::http::header::CONTENT_TYPE, "application/json")
                    .body(Body::from(body))
                    .map_err(|e| Error::internal(e.to_string()))?;
                match tokio::time::timeout(APPLY_WAIT, self.json_of::<ProfileChange>(t, req)).await
                {
                    Ok(answer) => answer,
                    Err(_) => Err(Error::internal(format!(
                        "did not answer within {} s",
                        APPLY_WAIT.as_secs()
                    ))),
                }
            }
        });
        let answers = futures_util::future::join_all(asks).await;
        others.into_iter().map(|t| t.name).zip(answers).collect()
    }

    /// The instances on the other members using profile `name` of `project`, each said with
    /// its member; a member that does not say is named (what it holds cannot be known).
    pub async fn profile_users_elsewhere(&self, project: &str, name: &str) -> Result<Vec<String>> {
        let others = self.others().await?;
        let q = vessel_api::PROJECT_QUERY;
        let path = format!("/1.0/profiles/{name}?{q}={project}&{HERE}=1");
        let answers = self.ask_each::<Profile>(&others, &path).await;
        let mut users = Vec::new();
        for (t, answer) in others.iter().zip(answers) {
            match answer {
                Ok(p) => users.extend(
                    p.used_by
                        .into_iter()
                        .map(|i| format!("{i} (on {})", t.name)),
                ),
                // Not there (yet): a member that has not read etcd's profiles uses none.
                Err(e) if e.kind == ErrorKind::NotFound => {}
                Err(e) => users.push(format!(
                    "those on member {} (it did not say: {}; bring it back, or remove it from \
                     the cluster)",
                    t.name, e.message
                )),
            }
        }
        Ok(users)
    }

    /// Profile `name` (qualified) as the cluster holds it now, read from etcd (this
    /// member's copy may lag behind); outside a cluster, as this member holds it. `None`:
    /// there is none.
    pub async fn profile_now(&self, name: &str) -> Result<Option<Profile>> {
        let why = "a profile is read as the cluster holds it";
        let Some((cluster, _)) = self.live_member_or_unavailable(why).await? else {
            let known = crate::profile::ProfileService::new(self.inner.store.clone());
            return Ok(known.get(name).ok());
        };
        match cluster.shared_object("profile", name).await {
            Ok(Some(o)) => crate::profile::ProfileService::parse(&o.body).map(Some),
            Ok(None) => Ok(None),
            Err(e) => Err(super::from_cluster(e)),
        }
    }

    /// The instances of `project` on the other members that answer (online ones, asked at
    /// once; one that does not answer is left out), by the profile they use (its name in
    /// the project); nothing outside a cluster or while this member is not connected.
    pub async fn profile_users(&self, project: &str) -> BTreeMap<String, Vec<String>> {
        let Some((cluster, me)) = self.live_member().await else {
            return BTreeMap::new();
        };
        let others: Vec<Target> = match self.targets(&cluster).await {
            Ok(all) => all
                .into_iter()
                .filter(|(t, state)| t.name != me && state != "offline")
                .map(|(t, _)| t)
                .collect(),
            Err(_) => return BTreeMap::new(),
        };
        let q = vessel_api::PROJECT_QUERY;
        let path = format!("/1.0/profiles?{q}={project}&{HERE}=1");
        let mut users = BTreeMap::<String, Vec<String>>::new();
        for (t, answer) in others
            .iter()
            .zip(self.ask_each::<Vec<Profile>>(&others, &path).await)
        {
            match answer {
                Ok(list) => {
                    for p in list {
                        users.entry(p.name).or_default().extend(p.used_by);
                    }
                }
                Err(e) => {
                    tracing::debug!(member = %t.name, error = %e.message, "profiles' users not told")
                }
            }
        }
        users
    }
}

/// The query a member asks the others' profiles with: their own users only.
pub const HERE: &str = "here";
