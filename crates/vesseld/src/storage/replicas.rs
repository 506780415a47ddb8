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

/// The slot of the far copy in a replicated pool made with it (an adopted pool given a
/// far copy has it where the lost copy was).
const FAR_SLOT: u32 = 1;

fn far_slot() -> u32 {
    FAR_SLOT
}

/// What a replicated pool needs of the cluster.
pub trait ReplicaLink: Send + Sync {
    /// The unix socket here that reaches far copy `name` on `member` (its relay, started
    /// if it is not running).
    fn relay(&self, member: &str, name: &str) -> Result<PathBuf>;
    /// Records (blocking, bounded) that far copy `name` (the one with `id`) is out of date
    /// or current again.
    fn mark(&self, name: &str, id: &str, outdated: bool) -> std::result::Result<(), String>;
    /// Stops the relay to far copy `name`.
    fn unrelay(&self, name: &str);
    /// The member that adopted far copy `name` if one other than this member did (this
    /// member's pool was taken for lost: its copy is stale); `None` when not, or unknown.
    fn adopted_by(&self, name: &str) -> Option<String>;
}

/// Per replicated pool: orders the failure hook's "out of date" and the loop's "current"
/// (a failure after the loop found the copy in takes the order after it, so its mark
/// lands last), and remembers a "current" that etcd did not take yet.
#[derive(Default)]
pub(super) struct ReplicaGuard {
    order: std::sync::Mutex<()>,
    current_pending: std::sync::atomic::AtomicBool,
    /// The far copy whose failures the hook records (none: failures are a raid pool's
    /// usual ones).
    far: std::sync::Mutex<Option<ReplicaRef>>,
}

/// Where a replicated pool's far copy is.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReplicaRef {
    /// The member keeping it.
    pub member: String,
    /// Its name there (`MEMBER.POOL` of the primary).
    pub name: String,
    /// Its slot in the pool.
    #[serde(default = "far_slot")]
    pub slot: u32,
    /// Made in place of a lost copy and not yet copied whole: whenever it comes back before
    /// that, it is rebuilt whole (not resynced from the bitmap, which does not know what it
    /// lacks).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub incomplete: bool,
    /// Its id in its record (a copy made again under the same name has another).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
}

/// The member URI of far copy `name` reached through `socket`.
pub fn replica_uri(name: &str, socket: &std::path::Path) -> String {
    format!("nbd+unix:///{name}?socket={}", socket.display())
}

impl StorageService {
    /// Makes pool `req.name` of far copy `file` kept here (`req.adopt`), whose primary
    /// `from` is lost: the file becomes its second member (the first, the old primary's
    /// copy, is missing: the pool runs degraded), and every volume and snapshot on it gets
    /// its record. The cluster has swapped the roles already.
    pub fn pool_adopt(
        &self,
        req: vessel_api::PoolCreate,
        file: PathBuf,
        from: &str,
        op: &crate::operations::OpHandle,
    ) -> Result<()> {
        let _g = self.busy();
        self.pool_check(&req)?;
        let home = self.inner.root.join(&req.name);
        std::fs::create_dir_all(&home)
            .map_err(|e| Error::internal(format!("creating {}: {e}", home.display())))?;
        // The copy's slot, as its superblock says (1, unless its pool got it in place of a
        // lost member); the other was the copy on the lost member: a path not here.
        let slot = vessel_raid::member::Member::open(&file)
            .ok()
            .and_then(|m| m.read_superblock().ok()?.ok())
            .map_or(1, |sb| sb.index as usize);
        let member = home.join(format!("member{slot}.img"));
        std::fs::rename(&file, &member)
            .map_err(|e| Error::internal(format!("{}: {e}", file.display())))?;
        let lost = home.join(format!("member{}-on-{from}.img", 1 - slot.min(1)));
        let mut sources = vec![lost.display().to_string(); 2];
        sources[slot.min(1)] = member.display().to_string();
        let rec = PoolRecord {
            name: req.name.clone(),
            driver: vessel_api::PoolDriver::Raid,
            sources,
            level: Some("raid1".into()),
            created_files: vec![member.display().to_string()],
            created_dir: Some(home.display().to_string()),
            description: req.description.clone(),
            config: req.config.clone(),
            created_at: crate::clock::now(),
            replica: None,
        };
        op.progress(Some(30), "assembling the copy");
        let driver: Arc<dyn PoolDriver> =
            match super::raid::RaidPool::open(&rec.sources, &rec.config) {
                Ok(d) => Arc::new(d),
                Err(e) => {
                    // Back where it was, for another try.
                    let _ = std::fs::rename(&member, &file);
                    return Err(e);
                }
            };
        let stored = driver.stored_volumes();
        let mut vols: Vec<super::record::VolumeRecord> = Vec::new();
        for (name, size, snapshot) in &stored {
            if *snapshot || name.contains('.') {
                continue;
            }
            let snapshots = stored
                .iter()
                .filter_map(|(n, _, _)| n.strip_prefix(&format!("{name}.")))
                .map(str::to_string)
                .collect();
            vols.push(super::record::VolumeRecord {
                pool: req.name.clone(),
                name: name.clone(),
                content: vessel_api::VolumeContent::Block,
                size: *size,
                source: None,
                snapshots,
                snapshot_sizes: Default::default(),
                attached_to: Vec::new(),
                root_of: None,
                container_root: false,
                id_base: None,
                disk_owner: None,
                config: Default::default(),
                created_at: crate::clock::now(),
            });
        }
        self.inner.pools.insert(&rec.name, &rec)?;
        for v in &vols {
            self.inner.volumes.insert(&v.key(), v)?;
        }
        self.inner
            .drivers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(rec.name.clone(), driver);
        tracing::warn!(pool = %rec.name, from, volumes = vols.len(), "pool adopted from a far copy");
        self.inner.events.lifecycle(
            "storage-pool-created",
            &format!("/1.0/storage/pools/{}", rec.name),
        );
        Ok(())
    }

    /// The size of a far copy of pool `name`: that of its member files here.
    pub fn far_copy_size(&self, name: &str) -> Result<u64> {
        let rec = self.pool_record(name)?;
        rec.sources
            .iter()
            .filter_map(|s| std::fs::metadata(s).ok())
            .map(|m| m.len())
            .max()
            .ok_or_else(|| Error::conflict(format!("pool {name:?} has no member file here")))
    }

    /// Gives raid1 pool `name` a far copy (`far`, reached at member URI `uri`) in the slot
    /// `req.member`, which must be out (an adopted pool's lost copy): the failure hook is
    /// armed first, then the slot is given the far copy and rebuilt onto it. The loop
    /// records it current once it is in.
    pub fn repair_far(
        &self,
        name: &str,
        req: vessel_api::PoolRepair,
        far: ReplicaRef,
        uri: String,
        op: &crate::operations::OpHandle,
    ) -> Result<()> {
        self.repair_check(name, &req)?;
        let d = self.driver(name)?;
        let m = req.member.unwrap_or(0);
        let far = ReplicaRef {
            slot: m,
            incomplete: true,
            ..far
        };
        let mut rec = self.pool_record(name)?;
        rec.replica = Some(far.clone());
        self.arm_replica(&rec, &d);
        let placed = || -> Result<()> {
            let _g = self.busy();
            let mut rec = self.pool_record(name)?;
            rec.sources[m as usize] = uri.clone();
            rec.replica = Some(far.clone());
            Ok(self.inner.pools.put(name, &rec)?)
        };
        let progress = |p: u8, stage: &str| op.progress(Some(p), stage);
        if let Err(e) =
            d.replace_member(m, std::path::Path::new(&uri), req.rate, &placed, &progress)
        {
            if self.pool_replica(name).is_none() {
                // Not placed: the pool is as it was, without a far copy.
                *self
                    .replica_guard(name)
                    .far
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = None;
            }
            // Placed: the pool keeps it, and the loop rebuilds it whole when it answers.
            return Err(e);
        }
        self.far_complete(name)?;
        self.replica_guard(name)
            .current_pending
            .store(true, std::sync::atomic::Ordering::SeqCst);
        tracing::info!(pool = name, member = %far.member, slot = m, "far copy made and rebuilt; recorded current next");
        self.inner.events.lifecycle(
            "storage-pool-replace",
            &format!("/1.0/storage/pools/{name}"),
        );
        Ok(())
    }

    /// Records that pool `name`'s far copy has been copied whole.
    fn far_complete(&self, name: &str) -> Result<()> {
        let _g = self.busy();
        let mut rec = self.pool_record(name)?;
        if let Some(far) = rec.replica.as_mut().filter(|f| f.incomplete) {
            far.incomplete = false;
            let far = far.clone();
            self.inner.pools.put(name, &rec)?;
            *self
                .replica_guard(name)
                .far
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(far);
        }
        Ok(())
    }

    /// Takes pool `pool` out: its far copy was adopted by `by`, so what is here is stale
    /// (and every write to it is held back already).
    fn stale(&self, pool: &str, by: &str) {
        if let Some(d) = self.take_driver(pool) {
            let _ = d.close();
        }
        self.forget_guard(pool);
        tracing::error!(
            pool,
            by,
            "far copy adopted by another member: this pool is stale"
        );
        self.inner
            .unavailable
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                pool.to_string(),
                format!(
                    "member {by} made its own pool of this pool's far copy (this member was \
                     taken for lost): what is here is stale; delete the pool"
                ),
            );
    }

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

    /// Has the far copy's failure recorded before writes go on without it. The hook reads
    /// the far copy of the pool as it is then (given, changed or taken away later).
    pub(super) fn arm_replica(&self, rec: &PoolRecord, driver: &Arc<dyn PoolDriver>) {
        let guard = self.replica_guard(&rec.name);
        *guard.far.lock().unwrap_or_else(|p| p.into_inner()) = rec.replica.clone();
        let (Some(_), Some(link)) = (rec.replica.as_ref(), self.inner.link.get().cloned()) else {
            return;
        };
        let pool = rec.name.clone();
        driver.on_member_failed(Box::new(move |slot| {
            let Some(far) = guard.far.lock().unwrap_or_else(|p| p.into_inner()).clone() else {
                return Ok(());
            };
            if slot as u32 != far.slot {
                // Going on with the far copy alone would leave the copy here stale, and a
                // restart could assemble the pool from it: writes stop instead.
                let why = format!(
                    "the copy of pool {pool} on this member failed: a replicated pool does not \
                     go on with its far copy alone (repair this member's copy with `vessel \
                     storage pool repair {pool} replace --member {slot}`, or adopt the copy \
                     on {} from there)",
                    far.member
                );
                tracing::error!("{why}");
                return Err(why);
            }
            let _order = guard.order.lock().unwrap_or_else(|p| p.into_inner());
            guard
                .current_pending
                .store(false, std::sync::atomic::Ordering::SeqCst);
            tracing::warn!(pool = %pool, member = %far.member, "recording the far copy out of date");
            link.mark(&far.name, &far.id, true)
        }));
    }

    /// Lets go of pool `pool`'s guard (the pool is gone or stale): a pool made again under
    /// its name gets a guard of its own, which the old pool's failure hook never reads.
    pub(super) fn forget_guard(&self, pool: &str) {
        self.inner
            .replica_guards
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(pool);
    }

    fn replica_guard(&self, pool: &str) -> Arc<ReplicaGuard> {
        self.inner
            .replica_guards
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(pool.to_string())
            .or_default()
            .clone()
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
                let (l, n) = (link.clone(), far.name.clone());
                let adopted = tokio::task::spawn_blocking(move || l.adopted_by(&n))
                    .await
                    .ok()
                    .flatten();
                if let Some(by) = adopted {
                    let (svc, pool) = (self.clone(), rec.name.clone());
                    let _ = tokio::task::spawn_blocking(move || svc.stale(&pool, &by)).await;
                    link.unrelay(&far.name);
                    continue;
                }
                let far_state = driver
                    .members()
                    .iter()
                    .find(|m| m.index == far.slot)
                    .map(|m| m.state.clone())
                    .unwrap_or_default();
                let guard = self.replica_guard(&rec.name);
                let pending = guard
                    .current_pending
                    .load(std::sync::atomic::Ordering::SeqCst);
                if far_state != "failed" && !(pending && far_state == "active") {
                    continue;
                }
                let (link, pool, svc) = (link.clone(), rec.name.clone(), self.clone());
                // Ok(false): it does not answer yet.
                let done = tokio::task::spawn_blocking(move || -> Result<bool> {
                    let started = std::time::Instant::now();
                    if far_state == "failed" {
                        let socket = link.relay(&far.member, &far.name)?;
                        let uri = replica_uri(&far.name, &socket);
                        let (export, sock) = vessel_raid::member::parse_nbd_uri(uri.as_ref())
                            .ok_or_else(|| Error::internal("a far copy's URI does not parse"))?;
                        // Quietly not yet while it does not answer.
                        if vessel_nbd::NbdClient::connect_unix(
                            &sock,
                            &export,
                            Duration::from_secs(2),
                        )
                        .is_err()
                        {
                            return Ok(false);
                        }
                        // Out of date while it is resynced (its superblock says rebuilding
                        // then: not a copy to adopt), then re-added, resynced and flushed.
                        {
                            let _order = guard.order.lock().unwrap_or_else(|p| p.into_inner());
                            link.mark(&far.name, &far.id, true)
                                .map_err(Error::conflict)?;
                        }
                        if far.incomplete {
                            // Never copied whole: rebuilt whole.
                            driver.replace_member(
                                far.slot,
                                std::path::Path::new(&uri),
                                None,
                                &|| Ok(()),
                                &|_, _| {},
                            )?;
                            svc.far_complete(&pool)?;
                        } else {
                            driver.readd_member(far.slot, &uri)?;
                        }
                    }
                    // Current only if it is still in: a failure since then marks it out
                    // of date after this, in this order.
                    let _order = guard.order.lock().unwrap_or_else(|p| p.into_inner());
                    let still_in = driver
                        .members()
                        .iter()
                        .any(|m| m.index == far.slot && m.state == "active");
                    if !still_in {
                        return Ok(false);
                    }
                    if let Err(e) = link.mark(&far.name, &far.id, false) {
                        guard
                            .current_pending
                            .store(true, std::sync::atomic::Ordering::SeqCst);
                        return Err(Error::conflict(format!(
                            "the far copy is back but could not be recorded current: {e}"
                        )));
                    }
                    guard
                        .current_pending
                        .store(false, std::sync::atomic::Ordering::SeqCst);
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
