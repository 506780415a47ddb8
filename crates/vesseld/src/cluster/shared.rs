//! What the members share through the store: the link of its shared kinds (projects,
//! identities) to etcd, and what a shared project holds on the other members.

use super::{ClusterService, Membership, SharedSeed};
use crate::error::Result;
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
        let seed = match m.shared_seed {
            SharedSeed::All => Seed::All,
            SharedSeed::Projects => Seed::Projects,
            SharedSeed::Done => Seed::Nothing,
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
        if let Some(m) = held.as_mut().filter(|m| m.shared_seed != SharedSeed::Done) {
            m.shared_seed = SharedSeed::Done;
            if let Err(e) = self.save(m) {
                tracing::warn!(error = %e, "membership not saved (its objects will be added again)");
            }
        }
    }

    /// What `project` holds on the other members, each said with its member: a project
    /// the members share is not deleted from under them. A member that does not answer
    /// is named (what it holds cannot be known). Nothing outside a cluster, or before etcd
    /// answered (the project's deletion is refused then anyway).
    pub async fn project_holds(&self, project: &str) -> Result<Vec<String>> {
        let Some((cluster, me)) = self.live_member().await else {
            return Ok(Vec::new());
        };
        let mut holds = Vec::new();
        for (t, state) in self.targets(&cluster).await? {
            if t.name == me {
                continue;
            }
            if state == "offline" {
                holds.push(format!(
                    "what member {} holds (it is offline: bring it back, or remove it from the \
                     cluster)",
                    t.name
                ));
                continue;
            }
            let path = format!("/1.0/projects/{project}?holds=1");
            match self.get_json::<vessel_api::Project>(&t, &path).await {
                // (Identities are the cluster's: counted here already.)
                Ok(p) => holds.extend(
                    p.holds
                        .into_iter()
                        .filter(|h| !h.starts_with("identity "))
                        .map(|h| format!("{h} (on {})", t.name)),
                ),
                // Not there (yet): a member that has not read etcd's projects holds nothing
                // of it.
                Err(e) if e.message.contains("404") => {}
                Err(e) => holds.push(format!(
                    "what member {} holds (it did not say: {})",
                    t.name, e.message
                )),
            }
        }
        Ok(holds)
    }
}
