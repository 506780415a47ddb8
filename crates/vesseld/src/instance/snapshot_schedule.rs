//! The daemon's loop for scheduled snapshots: at the start of every minute it takes the
//! snapshots that instances' `snapshots.schedule` calls for (named `auto-YYYYMMDD-HHMM`,
//! UTC) and deletes the snapshots whose `snapshots.expiry` has passed.

use std::time::Duration;

use vessel_api::{InstanceSnapshotCreate, InstanceStatus};

use super::schedule::Schedule;
use super::InstanceService;
use crate::error::Result;

/// What a scheduled snapshot of an instance (its qualified name) asks first: an error when
/// it is not to be taken (its project's limits would be passed), else what to hold until
/// it is taken (the project's quota lock).
pub type SnapshotGate = std::sync::Arc<
    dyn Fn(
            String,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<Option<Box<dyn Send>>>> + Send>,
        > + Send
        + Sync,
>;

impl InstanceService {
    /// Runs the schedule until the daemon stops, each snapshot admitted by `admit` first.
    pub async fn snapshot_schedule(&self, admit: SnapshotGate) {
        loop {
            let now = super::schedule::now_secs();
            // A second into the next minute.
            let wait = 60 - now.rem_euclid(60) + 1;
            tokio::time::sleep(Duration::from_secs(wait as u64)).await;
            let minute = super::schedule::now_secs() / 60 * 60;
            self.scheduled_snapshots(minute, &admit);
            self.expired_snapshots(super::schedule::now_secs());
        }
    }

    /// Takes the snapshots due in the minute starting at `minute`.
    fn scheduled_snapshots(&self, minute: i64, admit: &SnapshotGate) {
        let Ok(list) = self.store.instance_list() else {
            return;
        };
        for inst in list {
            let Some(text) = inst.config.get("snapshots.schedule") else {
                continue;
            };
            let due = Schedule::parse(text).is_ok_and(|s| s.matches(minute));
            if !due
                || matches!(
                    inst.status,
                    InstanceStatus::Creating | InstanceStatus::Error
                )
            {
                continue;
            }
            let stamp = vessel_backup::utc_id(minute);
            // YYYYMMDDTHHMMSSZ → auto-YYYYMMDD-HHMM
            let name = format!("auto-{}-{}", &stamp[..8], &stamp[9..13]);
            let req = InstanceSnapshotCreate {
                name: Some(name.clone()),
                stateful: false,
            };
            // Each on its own: admission waits for its project's quota lock, which a long
            // import of that project may hold, and no other project waits for it.
            let (svc, admit) = (self.clone(), admit.clone());
            tokio::spawn(async move {
                let held = match admit(inst.name.clone()).await {
                    Ok(held) => held,
                    Err(e) => {
                        tracing::warn!(instance = %inst.name, snapshot = %name, error = %e, "scheduled snapshot not taken");
                        return;
                    }
                };
                match svc.snapshot_create(&inst.name, req, true) {
                    Ok((op, _)) => {
                        tracing::info!(instance = %inst.name, snapshot = %name, "scheduled snapshot");
                        if let Some(held) = held {
                            let _ = svc.ops.wait(&op.id, None).await;
                            drop(held);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(instance = %inst.name, error = %e, "scheduled snapshot")
                    }
                }
            });
        }
    }

    /// Deletes the snapshots whose expiry is at or before `now`.
    fn expired_snapshots(&self, now: i64) {
        let Ok(list) = self.store.instance_list() else {
            return;
        };
        for inst in list {
            for r in self.snap_list(&inst.name).unwrap_or_default() {
                if r.expires_at().is_some_and(|t| t <= now) {
                    match self.snapshot_delete(&inst.name, r.name()) {
                        Ok(_) => {
                            tracing::info!(instance = %inst.name, snapshot = %r.name(), "expired snapshot deleted")
                        }
                        Err(e) => {
                            tracing::warn!(instance = %inst.name, error = %e, "deleting an expired snapshot")
                        }
                    }
                }
            }
        }
    }
}
