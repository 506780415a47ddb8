//! A membership that ended while this server was away: the cluster removed the member (or
//! etcd holds another cluster now). The membership stays on file, so that its `cluster.ha`
//! instances do not start as if outside a cluster (the cluster may have made them again
//! elsewhere), but the server may join a cluster, or make one, again.

use vessel_cluster::MemberRecord;

use super::{capacity, ClusterService};
use crate::error::{Error, Result};

impl ClusterService {
    /// Why this server's membership ended, if it did.
    pub(super) fn ended(&self) -> Option<String> {
        self.inner
            .ended
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Notes why the membership ended (`None`: it stands, joined or made again).
    pub(super) fn set_ended(&self, why: Option<String>) {
        *self.inner.ended.lock().unwrap_or_else(|p| p.into_inner()) = why;
    }

    /// Refuses to make or join a cluster while this server is a member of one (not one
    /// whose membership ended).
    pub(super) async fn refuse_if_member(&self) -> Result<()> {
        if let Some(m) = self.inner.membership.lock().await.as_ref() {
            if self.ended().is_none() {
                return Err(Error::conflict(format!(
                    "this server is member {} of cluster {} already",
                    m.name, m.id
                )));
            }
        }
        Ok(())
    }

    /// This server's record as member `name` at `address`.
    pub(super) fn record(&self, name: &str, address: &str) -> Result<MemberRecord> {
        Ok(MemberRecord {
            name: name.into(),
            address: address.into(),
            fingerprint: self.fingerprint()?,
            roles: Vec::new(),
            capacity: capacity(),
            joined_at: crate::clock::now(),
            evacuated: false,
        })
    }
}
