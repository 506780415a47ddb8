//! Storage: pools behind one [`PoolDriver`] trait (`dir`, `btrfs`, `raid`, `ceph`), volumes with
//! snapshots, restore and clones, attachment to instances, and NBD/NFS exports.
//!
//! The service owns pool, volume and export records (objects in the store) and the open
//! drivers. Mutations are serialized by one lock; driver calls block, so the async API
//! runs them on the blocking pool.

mod attachments;
mod btrfs;
mod carry;
mod ceph;
mod dir;
mod driver;
mod export_credentials;
mod exports;
mod images;
mod nbd_tls;
mod pools;
mod raid;
mod rebuild;
mod record;
mod replicas;
mod roots;
pub(crate) mod servers;
mod volumes;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use vessel_api::ScrubResult;

use crate::error::{Error, Result};
use crate::events::Events;
use crate::store::{Records, Store};
pub(crate) use carry::{brought, root_brought, CarriedData, CarriedVolume};
pub(crate) use driver::fs_available;
use driver::PoolDriver;
use record::{PoolRecord, VolumeRecord};
pub(crate) use replicas::{replica_uri, ReplicaLink, ReplicaRef};
pub(crate) use roots::{check_fits, root_volume};

const POOL: &str = "pool";
const VOLUME: &str = "volume";
const EXPORT: &str = "export";

/// A filesystem volume to bind-mount into a container.
#[derive(Debug, Clone)]
pub struct VolumeMount {
    /// Host directory.
    pub source: PathBuf,
    /// Mount point inside the container.
    pub destination: String,
    /// First id its files are stored with: an unprivileged container sees stored id
    /// `id_base + n` as its own id `n` (0 for every volume made by this version).
    pub id_base: u32,
}

/// The storage service (cheap to clone).
#[derive(Clone)]
pub struct StorageService {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    events: Events,
    /// `<root>/storage`: default home of pools.
    root: PathBuf,
    /// `<run>/storage`: sockets of VM disks.
    run: PathBuf,
    pools: Records<PoolRecord>,
    volumes: Records<VolumeRecord>,
    exports: Records<record::ExportRecord>,
    /// Open drivers, by pool.
    drivers: Mutex<HashMap<String, Arc<dyn PoolDriver>>>,
    unavailable: Mutex<HashMap<String, String>>,
    scrubs: Mutex<HashMap<String, ScrubResult>>,
    /// Serializes every change of pools, volumes and exports.
    busy: Mutex<()>,
    servers: servers::ExportServers,
    /// NBD servers of raid volumes attached to VMs, by `instance/pool/volume`.
    disks: Mutex<HashMap<String, vessel_nbd::ServerHandle>>,
    /// The daemon is stopping: no disk server is started any more.
    stopping: std::sync::atomic::AtomicBool,
    /// The cluster, for replicated pools.
    link: std::sync::OnceLock<Arc<dyn ReplicaLink>>,
    /// Per replicated pool, the order of its far copy's marks.
    replica_guards: Mutex<HashMap<String, Arc<replicas::ReplicaGuard>>>,
}

impl StorageService {
    /// A service keeping pools under `root` and disk sockets under `run`.
    pub fn new(store: Arc<dyn Store>, events: Events, root: PathBuf, run: PathBuf) -> Self {
        Self {
            inner: Arc::new(Inner {
                pools: Records::new(store.clone(), POOL),
                volumes: Records::new(store.clone(), VOLUME),
                exports: Records::new(store.clone(), EXPORT),
                store,
                events,
                root,
                run,
                drivers: Mutex::default(),
                unavailable: Mutex::default(),
                scrubs: Mutex::default(),
                busy: Mutex::default(),
                servers: servers::ExportServers::default(),
                disks: Mutex::default(),
                stopping: std::sync::atomic::AtomicBool::new(false),
                link: std::sync::OnceLock::new(),
                replica_guards: Mutex::default(),
            }),
        }
    }

    /// The daemon is stopping: closes the exports and the VM disk servers (requests in
    /// progress are completed; their replies may not reach the clients, which reconnect to
    /// the next daemon), then quiesces every open pool, so that what was written reaches
    /// the disks and a raid pool is left clean (nothing to resync at the next start).
    /// Pools stay open and mounted for the instances that keep running.
    pub fn quiesce_all(&self) {
        self.inner.servers.stop_all();
        let disks: Vec<vessel_nbd::ServerHandle> = {
            let mut disks = self.inner.disks.lock().unwrap_or_else(|p| p.into_inner());
            self.inner
                .stopping
                .store(true, std::sync::atomic::Ordering::SeqCst);
            disks.drain().map(|(_, h)| h).collect()
        };
        for h in disks {
            h.shutdown();
        }
        let drivers: Vec<(String, Arc<dyn PoolDriver>)> = {
            let drivers = self.inner.drivers.lock().unwrap_or_else(|p| p.into_inner());
            drivers
                .iter()
                .map(|(n, d)| (n.clone(), d.clone()))
                .collect()
        };
        for (name, d) in drivers {
            match d.quiesce() {
                Ok(()) => tracing::debug!(pool = %name, "pool quiesced"),
                Err(e) => tracing::warn!(pool = %name, error = %e, "pool not left clean"),
            }
        }
    }

    /// Takes pool `name`'s open driver out (its pool is deleted, or stale), for closing.
    fn take_driver(&self, name: &str) -> Option<Arc<dyn PoolDriver>> {
        self.inner
            .drivers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name)
    }

    fn busy(&self) -> std::sync::MutexGuard<'_, ()> {
        self.inner.busy.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn pool_record(&self, name: &str) -> Result<PoolRecord> {
        self.inner.pools.get(name)?.ok_or_else(|| {
            Error::not_found(format!(
                "storage pool {name:?} not found; see `vessel storage pool list`"
            ))
        })
    }

    fn pool_records(&self) -> Result<Vec<PoolRecord>> {
        Ok(self.inner.pools.list()?)
    }

    fn volume_record(&self, pool: &str, name: &str) -> Result<VolumeRecord> {
        self.inner
            .volumes
            .get(&format!("{pool}/{name}"))?
            .ok_or_else(|| record::volume_not_found(pool, name))
    }

    fn volume_records(&self, pool: Option<&str>) -> Result<Vec<VolumeRecord>> {
        Ok(self
            .inner
            .volumes
            .list()?
            .into_iter()
            .filter(|v| pool.is_none_or(|p| v.pool == p))
            .collect())
    }

    /// Every volume as (pool, name), from the records alone: no pool's backend is asked.
    pub fn volume_keys(&self) -> Result<Vec<(String, String)>> {
        Ok(self
            .volume_records(None)?
            .into_iter()
            .map(|v| (v.pool, v.name))
            .collect())
    }

    fn put_volume(&self, v: &VolumeRecord) -> Result<()> {
        Ok(self.inner.volumes.put(&v.key(), v)?)
    }

    fn driver(&self, pool: &str) -> Result<Arc<dyn PoolDriver>> {
        if let Some(d) = self
            .inner
            .drivers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(pool)
        {
            return Ok(d.clone());
        }
        self.pool_record(pool)?;
        let why = self
            .inner
            .unavailable
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(pool)
            .cloned()
            .unwrap_or_else(|| "it is not open".into());
        Err(Error::conflict(format!(
            "storage pool {pool:?} is unavailable: {why}"
        )))
    }
}
