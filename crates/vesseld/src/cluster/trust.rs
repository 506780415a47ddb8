//! The members' certificates, trusted as etcd's records of the members say.

use vessel_cluster::Cluster;

use super::{ClusterService, TRUST_RECHECK, TRUST_REFRESH};

impl ClusterService {
    /// Keeps the members' certificates trusted as the members' records in etcd say: read
    /// again at each change etcd reports (a member joined is trusted at once, a removed one
    /// refused), and every [`TRUST_RECHECK`] whatever it reports.
    pub(super) async fn keep_trust(cluster: Cluster, auth: crate::auth::AuthService) {
        loop {
            let mut watch = match cluster.watch_members().await {
                Ok(w) => Some(w),
                Err(e) => {
                    tracing::debug!(error = %e, "members not watched; reading them again in a while");
                    None
                }
            };
            loop {
                match cluster.members().await {
                    Ok(members) => auth.set_members(
                        members
                            .into_iter()
                            .map(|m| (m.record.fingerprint, m.record.name))
                            .collect(),
                    ),
                    Err(e) => tracing::debug!(error = %e, "members' certificates not refreshed"),
                }
                let Some(w) = watch.as_mut() else {
                    tokio::time::sleep(TRUST_REFRESH).await;
                    break;
                };
                tokio::select! {
                    changed = w.changed() => if changed.is_err() {
                        tokio::time::sleep(TRUST_REFRESH).await;
                        break;
                    },
                    _ = tokio::time::sleep(TRUST_RECHECK) => {}
                }
            }
        }
    }
}
