//! A membership that ended while this server was away: the cluster removed the member (or
//! etcd holds another cluster now). The membership stays on file, so that its `cluster.ha`
//! instances do not start as if outside a cluster (the cluster may have made them again
//! elsewhere), but the server may join that cluster again; and it keeps looking whether
//! the membership stands after all (etcd restored from a snapshot).

use std::time::Duration;

use vessel_cluster::MemberRecord;

use super::{capacity, ClusterService, Membership};
use crate::error::{Error, ErrorKind, Result};

/// How often an ended membership is looked at again.
const LOOK_AGAIN: Duration = Duration::from_secs(5);

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

    /// Looks again, every few seconds, whether the ended membership `m` stands after all,
    /// and goes live as that member if it does: the reason may pass (etcd, wiped and
    /// restored from a snapshot, holds the cluster and this member's record again). Ends
    /// then, or once this server joins or makes a cluster. What was changed here meanwhile
    /// of the shared kinds (quotas, profiles) gives way to the cluster's again.
    pub(super) async fn look_again(&self, m: Membership) {
        loop {
            tokio::time::sleep(LOOK_AGAIN).await;
            // Not while a join or an init is under way (it may be this membership's).
            let _one = self.inner.joining.lock().await;
            let same = self
                .inner
                .membership
                .lock()
                .await
                .as_ref()
                .is_some_and(|now| now.id == m.id && now.name == m.name);
            if self.ended().is_none() || !same {
                return;
            }
            match self.go_live(&m).await {
                Ok(()) => {
                    tracing::info!(member = %m.name, cluster = %m.id, "the membership stands again");
                    self.set_ended(None);
                    self.share(&m);
                    return;
                }
                Err(e) if e.kind == ErrorKind::Conflict => self.set_ended(Some(e.message)),
                // etcd does not answer: the reason known stays.
                Err(_) => {}
            }
        }
    }

    /// Refuses to make or join a cluster while this server is a member of one. Once that
    /// membership ended, it may join the same cluster again under the same name only
    /// (`rejoin`: the cluster and name a join is for): its `cluster.ha` instances are that
    /// cluster's, which may run them elsewhere, and the cluster's index, under that name,
    /// is what says whether they may start here again.
    pub(super) async fn refuse_if_member(&self, rejoin: Option<(&str, &str)>) -> Result<()> {
        let Some(m) = self.inner.membership.lock().await.clone() else {
            return Ok(());
        };
        let Some(why) = self.ended() else {
            return Err(Error::conflict(format!(
                "this server is member {} of cluster {} already",
                m.name, m.id
            )));
        };
        if rejoin == Some((m.id.as_str(), m.name.as_str())) {
            return Ok(());
        }
        Err(Error::conflict(format!(
            "this server's membership as {name} of cluster {id} ended ({why}); it may join \
             that cluster again as {name} only (a token from `vessel cluster add {name}` on a \
             member), since its cluster.ha instances may run there still. To leave that \
             cluster for good: unset cluster.ha on them, stop the daemon and remove {file}",
            name = m.name,
            id = m.id,
            file = self.inner.root.join(super::FILE).display()
        )))
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
