//! Replicated raid pools: a `raid1` pool whose second member is a far copy on another
//! member of the cluster, an NBD export reached through a unix socket here that the
//! cluster relays over the members' mutual TLS (`cluster/replicas.rs`). Writes reach both
//! copies before they are acknowledged. When the far copy fails, writes go on only once the
//! cluster has recorded it out of date (the link's `mark`); while it is out, the write-intent
//! bitmap keeps what it misses, and this loop gives it back its slot as soon as it answers
//! again (re-add: only the marked rows are copied) and records it current.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::driver::PoolDriver;
use super::record::PoolRecord;
use super::StorageService;
use crate::error::{Error, Result};

/// How often a far copy that is out is tried again.
const RETRY_EVERY: Duration = Duration::from_secs(2);

/// The slot of the far copy in a replicated pool.
const FAR_SLOT: u32 = 1;

/// What a replicated pool needs of the cluster.
pub trait ReplicaLink: Send + Sync {
    /// The unix socket here that reaches far copy `name` on `member` (its relay, started
    /// if it is not running).
    fn relay(&self, member: &str, name: &str) -> Result<PathBuf>;
    /// Records (blocking, bounded) that far copy `name` on `member` is out of date or
    /// current again.
    fn mark(&self, name: &str, member: &str, outdated: bool) -> std::result::Result<(), String>;
}

/// Where a replicated pool's far copy is.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReplicaRef {
    /// The member keeping it.
    pub member: String,
    /// Its name there (`MEMBER-POOL` of the primary).
    pub name: String,
}

/// The member URI of far copy `name` reached through `socket`.
pub fn replica_uri(name: &str, socket: &std::path::Path) -> String {
    format!("nbd+unix:///{name}?socket={}", socket.display())
}

impl StorageService {
    /// Connects replicated pools to the cluster: their failures are recorded there, and
    /// a far copy that is out is given back its slot when it answers.
    pub fn set_replica_link(&self, link: Arc<dyn ReplicaLink>) {
        if self.inner.link.set(link).is_err() {
            return;
        }
        let Ok(recs) = self.pool_records() else {
            return;
        };
        for rec in recs {
            if let Ok(d) = self.driver(&rec.name) {
                self.arm_replica(&rec, &d);
            }
        }
    }

    /// Has the far copy's failure recorded before writes go on without it.
    pub(super) fn arm_replica(&self, rec: &PoolRecord, driver: &Arc<dyn PoolDriver>) {
        let (Some(far), Some(link)) = (rec.replica.clone(), self.inner.link.get().cloned()) else {
            return;
        };
        let pool = rec.name.clone();
        driver.on_member_failed(Box::new(move |slot| {
            if slot as u32 != FAR_SLOT {
                return Ok(());
            }
            tracing::warn!(pool = %pool, member = %far.member, "far copy out: recording it out of date");
            link.mark(&far.name, &far.member, true)
        }));
    }

    /// Gives the far copies that are out their slots back as soon as they answer; runs for
    /// the daemon's life.
    pub async fn keep_replicas(self) {
        loop {
            tokio::time::sleep(RETRY_EVERY).await;
            let Some(link) = self.inner.link.get().cloned() else {
                continue;
            };
            let Ok(recs) = self.pool_records() else {
                continue;
            };
            for rec in recs {
                let Some(far) = rec.replica.clone() else {
                    continue;
                };
                let Ok(driver) = self.driver(&rec.name) else {
                    continue;
                };
                let out = driver
                    .members()
                    .iter()
                    .any(|m| m.index == FAR_SLOT && m.state == "failed");
                if !out {
                    continue;
                }
                let (link, pool) = (link.clone(), rec.name.clone());
                // Ok(false): it does not answer yet.
                let done = tokio::task::spawn_blocking(move || -> Result<bool> {
                    let socket = link.relay(&far.member, &far.name)?;
                    let uri = replica_uri(&far.name, &socket);
                    let (export, sock) = vessel_raid::member::parse_nbd_uri(uri.as_ref())
                        .ok_or_else(|| Error::internal("a far copy's URI does not parse"))?;
                    // Quietly not yet while it does not answer.
                    if vessel_nbd::NbdClient::connect_unix(&sock, &export, Duration::from_secs(2))
                        .is_err()
                    {
                        return Ok(false);
                    }
                    let started = std::time::Instant::now();
                    driver.readd_member(FAR_SLOT, &uri)?;
                    link.mark(&far.name, &far.member, false)
                        .map_err(Error::conflict)?;
                    tracing::info!(pool = %pool, member = %far.member, secs = started.elapsed().as_secs_f64(), "far copy back: resynced and current");
                    Ok(true)
                })
                .await;
                match done {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(pool = %rec.name, error = %e.message, "far copy not re-added")
                    }
                    Err(e) => tracing::warn!(pool = %rec.name, error = %e, "re-add task failed"),
                }
            }
        }
    }
}
