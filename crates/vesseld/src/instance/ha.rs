//! Instances marked `cluster.ha=true`: what a member that fences itself stops.

use vessel_api::{InstanceStatus, StateAction, StateChange};

use super::InstanceService;

impl InstanceService {
    /// Stops every `cluster.ha` instance that is not stopped, forced (a fenced member must
    /// stop writing now, not after a clean shutdown's grace), one after another. Returns
    /// the names stopped; a failure is logged and the next one stopped.
    pub async fn stop_ha(&self) -> Vec<String> {
        let list = match self.store.instance_list() {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "fenced, but the instances cannot be listed");
                return Vec::new();
            }
        };
        let mut stopped = Vec::new();
        for i in list.into_iter().filter(|i| {
            i.config.get("cluster.ha").map(String::as_str) == Some("true")
                && i.status != InstanceStatus::Stopped
        }) {
            tracing::warn!(instance = %i.name, "fenced: stopping an HA instance");
            let change = StateChange {
                action: StateAction::Stop,
                timeout: None,
                force: true,
            };
            let done = match self.change_state(&i.name, change) {
                Ok(op) => self.ops.wait(&op.id, None).await.map(|_| ()),
                Err(e) => Err(e),
            };
            match done {
                Ok(()) => stopped.push(i.name),
                Err(e) => {
                    tracing::error!(instance = %i.name, error = %e, "fenced: the HA instance did not stop")
                }
            }
        }
        stopped
    }
}
