//! What the members share through the store: the link of its shared kinds (projects,
//! identities, profiles) to etcd, and what a shared project holds on other members.

use super::{from_cluster, ClusterService, Membership};
use crate::error::Result;

impl ClusterService {
    /// Gives the service the store whose shared kinds it links to etcd while a member.
    pub fn set_shared(&self, shared: crate::store::SharedStore) {
        let _ = self.inner.shared.set(shared);
    }

    /// Links the store's shared kinds to `m`'s etcd (`seed`: this member's own are added
    /// where the cluster has none).
    pub(super) fn share(&self, m: &Membership, seed: bool) {
        if let Some(s) = self.inner.shared.get() {
            s.attach(&m.etcd, seed);
        }
    }

    /// The instances of `project` the cluster's index places on other members, as
    /// `instance NAME (on MEMBER)`: a project the members share is not deleted from under
    /// them. Nothing outside a cluster, or before etcd answered (the project's deletion is
    /// refused then anyway).
    pub async fn held_elsewhere(&self, project: &str) -> Result<Vec<String>> {
        let me = match self.inner.membership.lock().await.as_ref() {
            Some(m) => m.name.clone(),
            None => return Ok(Vec::new()),
        };
        let Some(cluster) = self
            .inner
            .live
            .lock()
            .await
            .as_ref()
            .map(|j| j.cluster.clone())
        else {
            return Ok(Vec::new());
        };
        Ok(cluster
            .instance_locations()
            .await
            .map_err(from_cluster)?
            .into_iter()
            .filter(|l| l.project == project && l.member != me)
            .map(|l| format!("instance {} (on {})", l.name, l.member))
            .collect())
    }
}
