//! Storage: pools behind one [`PoolDriver`] trait (`dir`, `btrfs`, `raid`), volumes with
//! snapshots, restore and clones, attachment to instances, and NBD/NFS exports.
//!
//! The service owns pool, volume and export records (objects in the store) and the open
//! drivers. Mutations are serialized by one lock; driver calls block, so the async API
//! runs them on the blocking pool.

mod btrfs;
mod dir;
mod export;
pub mod pool;
mod raid;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use vessel_api::{
    ExportCreate, InstanceStatus, InstanceType, PoolCreate, PoolDriver as DriverKind, PoolRepair,
    PoolStatus, ScrubResult, SnapshotCreate, StorageExport, StoragePool, StorageVolume,
    VolumeAttach, VolumeAttachment, VolumeContent, VolumeCreate, VolumeRestore, VolumeUpdate,
};

use crate::error::{chain, Error, Result};
use crate::events::Events;
use crate::name::validate_name;
use crate::operations::OpHandle;
use crate::store::{Records, Store};
use pool::{BlockAccess, PoolDriver};

const POOL: &str = "pool";
const VOLUME: &str = "volume";
const EXPORT: &str = "export";

/// What the store keeps of a pool.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PoolRecord {
    name: String,
    driver: DriverKind,
    sources: Vec<String>,
    #[serde(default)]
    level: Option<String>,
    /// Files Vessel created for the pool (removed with it).
    #[serde(default)]
    created_files: Vec<String>,
    /// The directory Vessel created for a `dir` pool or as a mount point (removed with it).
    #[serde(default)]
    created_dir: Option<String>,
    #[serde(default)]
    description: String,
    created_at: String,
}

/// What the store keeps of a volume.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct VolumeRecord {
    pool: String,
    name: String,
    content: VolumeContent,
    size: u64,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    snapshots: Vec<String>,
    #[serde(default)]
    attached_to: Vec<VolumeAttachment>,
    /// The VM whose root disk this is (deleted with it).
    #[serde(default)]
    root_of: Option<String>,
    created_at: String,
}

impl VolumeRecord {
    fn key(&self) -> String {
        format!("{}/{}", self.pool, self.name)
    }
}

/// A filesystem volume to bind-mount into a container.
#[derive(Debug, Clone)]
pub struct VolumeMount {
    /// Host directory.
    pub source: PathBuf,
    /// Mount point inside the container.
    pub destination: String,
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
    exports: Records<StorageExport>,
    /// Open drivers, by pool.
    drivers: Mutex<HashMap<String, Arc<dyn PoolDriver>>>,
    unavailable: Mutex<HashMap<String, String>>,
    scrubs: Mutex<HashMap<String, ScrubResult>>,
    /// Serializes every change of pools, volumes and exports.
    busy: Mutex<()>,
    servers: export::Exports,
    /// NBD servers of raid volumes attached to VMs, by `instance/pool/volume`.
    disks: Mutex<HashMap<String, vessel_nbd::ServerHandle>>,
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
                servers: export::Exports::default(),
                disks: Mutex::default(),
            }),
        }
    }

    fn busy(&self) -> std::sync::MutexGuard<'_, ()> {
        self.inner.busy.lock().unwrap_or_else(|p| p.into_inner())
    }

    // ---- records ------------------------------------------------------------------------

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
        self.inner.volumes.get(&format!("{pool}/{name}"))?.ok_or_else(|| {
            Error::not_found(format!(
                "volume {name:?} not found in pool {pool:?}; see `vessel storage volume list {pool}`"
            ))
        })
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

    // ---- start-up -----------------------------------------------------------------------

    /// Opens every pool, serves every export and every raid disk of a VM. A pool that
    /// cannot be opened is shown as unavailable with the reason; nothing is changed on it.
    pub fn reconcile(&self) -> Result<()> {
        self.inner.servers.set_nfs_key(self.nfs_key()?);
        for rec in self.pool_records()? {
            match self.open_driver(&rec) {
                Ok(d) => {
                    // A rebuild an earlier daemon did not finish goes on from its checkpoint.
                    let (bg, name) = (d.clone(), rec.name.clone());
                    std::thread::spawn(move || match bg.resume_rebuild() {
                        Ok(true) => tracing::info!(pool = %name, "interrupted rebuild finished"),
                        Ok(false) => {}
                        Err(e) => {
                            tracing::error!(pool = %name, error = %e.message, "resumed rebuild failed")
                        }
                    });
                    self.inner
                        .drivers
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(rec.name.clone(), d);
                }
                Err(e) => {
                    tracing::error!(pool = %rec.name, error = %e.message, "storage pool unavailable");
                    self.inner
                        .unavailable
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(rec.name.clone(), e.message);
                }
            }
        }
        for e in self.inner.exports.list()? {
            if let Err(err) = self.serve_export(&e) {
                tracing::error!(export = %e.name, error = %err.message, "export not served");
            }
        }
        for v in self.volume_records(None)? {
            for a in &v.attached_to {
                if a.path.is_empty() {
                    if let Err(e) = self.serve_disk(&a.instance, &v) {
                        tracing::error!(volume = %v.key(), error = %e.message, "VM disk not served");
                    }
                }
            }
        }
        Ok(())
    }

    /// The NFS handle key, made once per daemon root.
    fn nfs_key(&self) -> Result<[u8; 32]> {
        use std::io::Read;
        let path = self.inner.root.join("nfs-handle.key");
        if let Ok(b) = std::fs::read(&path) {
            if let Ok(k) = <[u8; 32]>::try_from(b.as_slice()) {
                return Ok(k);
            }
        }
        let mut k = [0u8; 32];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut k))
            .map_err(|e| Error::internal(format!("reading /dev/urandom: {e}")))?;
        std::fs::create_dir_all(&self.inner.root)
            .map_err(|e| Error::internal(format!("creating {}: {e}", self.inner.root.display())))?;
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .and_then(|mut f| f.write_all(&k))
            .map_err(|e| Error::internal(format!("writing {}: {e}", path.display())))?;
        Ok(k)
    }

    fn pool_home(&self, name: &str) -> PathBuf {
        self.inner.root.join(name)
    }

    fn open_driver(&self, rec: &PoolRecord) -> Result<Arc<dyn PoolDriver>> {
        Ok(match rec.driver {
            DriverKind::Dir => Arc::new(dir::DirPool::open(Path::new(&rec.sources[0]))?),
            DriverKind::Btrfs => Arc::new(btrfs::BtrfsPool::open(
                &rec.sources,
                &self.pool_home(&rec.name),
            )?),
            DriverKind::Raid => Arc::new(raid::RaidPool::open(&rec.sources)?),
        })
    }

    // ---- pools --------------------------------------------------------------------------

    fn pool_view(&self, rec: &PoolRecord) -> StoragePool {
        let (status, error, size, used) = match self.driver(&rec.name) {
            Ok(d) => match d.capacity() {
                Ok((size, used)) => (d.health(), None, size, used),
                Err(e) => ("unavailable".into(), Some(e.message), 0, 0),
            },
            Err(e) => ("unavailable".into(), Some(e.message), 0, 0),
        };
        StoragePool {
            name: rec.name.clone(),
            driver: rec.driver,
            sources: rec.sources.clone(),
            level: rec.level.clone(),
            status,
            error,
            size_bytes: size,
            used_bytes: used,
            description: rec.description.clone(),
            created_at: rec.created_at.clone(),
        }
    }

    /// Every pool with capacity and usage.
    pub fn pools_list(&self) -> Result<Vec<StoragePool>> {
        Ok(self
            .pool_records()?
            .iter()
            .map(|r| self.pool_view(r))
            .collect())
    }

    /// One pool.
    pub fn pool_get(&self, name: &str) -> Result<StoragePool> {
        Ok(self.pool_view(&self.pool_record(name)?))
    }

    /// Checks a pool creation request without changing anything.
    pub fn pool_check(&self, req: &PoolCreate) -> Result<()> {
        validate_name("pool", &req.name)?;
        if self.inner.pools.contains(&req.name)? {
            return Err(Error::conflict(format!(
                "storage pool {:?} already exists",
                req.name
            )));
        }
        let taken: Vec<String> = self
            .pool_records()?
            .into_iter()
            .flat_map(|p| p.sources)
            .collect();
        for s in &req.sources {
            if !s.starts_with('/') {
                return Err(Error::invalid(format!(
                    "source {s:?} is not an absolute path"
                )));
            }
            if taken.contains(s) {
                return Err(Error::conflict(format!(
                    "source {s} already belongs to another storage pool"
                )));
            }
        }
        match req.driver {
            DriverKind::Dir => {
                if req.sources.len() > 1 {
                    return Err(Error::invalid("a dir pool has one source directory"));
                }
                if req.level.is_some() || req.members.is_some() || req.chunk_size.is_some() {
                    return Err(Error::invalid(
                        "level, members and chunk_size are for raid (and btrfs) pools",
                    ));
                }
            }
            DriverKind::Btrfs => {
                if req.sources.is_empty() && req.size.is_none() {
                    return Err(Error::invalid(
                        "a btrfs pool needs sources (disks or files) or a size for a loop file \
                         Vessel creates (e.g. --size 2GiB)",
                    ));
                }
                if req.members.is_some() || req.chunk_size.is_some() {
                    return Err(Error::invalid("members and chunk_size are for raid pools"));
                }
            }
            DriverKind::Raid => raid::check_request(req)?,
        }
        Ok(())
    }

    /// Creates a pool: formats its sources (blocking; run inside an operation).
    pub fn pool_create(&self, req: PoolCreate, op: &OpHandle) -> Result<()> {
        let _g = self.busy();
        self.pool_check(&req)?;
        let home = self.pool_home(&req.name);
        let mut rec = PoolRecord {
            name: req.name.clone(),
            driver: req.driver,
            sources: req.sources.clone(),
            level: req.level.clone(),
            created_files: Vec::new(),
            created_dir: None,
            description: req.description.clone(),
            created_at: crate::clock::now(),
        };
        op.progress(Some(10), "preparing sources");
        let made = (|| -> Result<Arc<dyn PoolDriver>> {
            match req.driver {
                DriverKind::Dir => {
                    if rec.sources.is_empty() {
                        rec.sources.push(home.display().to_string());
                    }
                    let path = PathBuf::from(&rec.sources[0]);
                    if !path.exists() {
                        rec.created_dir = Some(rec.sources[0].clone());
                    }
                    Ok(Arc::new(dir::DirPool::create(&path)?))
                }
                DriverKind::Btrfs => {
                    if rec.sources.is_empty() {
                        let file = self.inner.root.join(format!("{}.btrfs", req.name));
                        create_file(&file, req.size.unwrap_or(0))?;
                        rec.created_files.push(file.display().to_string());
                        rec.sources.push(file.display().to_string());
                    }
                    rec.created_dir = Some(home.display().to_string());
                    op.progress(Some(40), "formatting btrfs");
                    Ok(Arc::new(btrfs::BtrfsPool::create(
                        &rec.sources,
                        req.level.as_deref(),
                        &home,
                    )?))
                }
                DriverKind::Raid => {
                    if rec.sources.is_empty() {
                        let n = req.members.unwrap_or(0);
                        std::fs::create_dir_all(&home).map_err(|e| {
                            Error::internal(format!("creating {}: {e}", home.display()))
                        })?;
                        rec.created_dir = Some(home.display().to_string());
                        for i in 0..n {
                            let file = home.join(format!("member{i}.img"));
                            create_file(&file, req.size.unwrap_or(0))?;
                            rec.created_files.push(file.display().to_string());
                            rec.sources.push(file.display().to_string());
                        }
                    }
                    op.progress(Some(40), "writing the array");
                    Ok(Arc::new(raid::RaidPool::create(&rec.sources, &req)?))
                }
            }
        })();
        let driver = match made {
            Ok(d) => d,
            Err(e) => {
                remove_created(&rec);
                return Err(e);
            }
        };
        if let Err(e) = self.inner.pools.insert(&rec.name, &rec) {
            let _ = driver.close();
            remove_created(&rec);
            return Err(e.into());
        }
        self.inner
            .drivers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(rec.name.clone(), driver);
        self.inner.events.lifecycle(
            "storage-pool-created",
            &format!("/1.0/storage/pools/{}", rec.name),
        );
        Ok(())
    }

    /// Deletes a pool without volumes; removes what Vessel created for it.
    pub fn pool_delete(&self, name: &str) -> Result<StoragePool> {
        let _g = self.busy();
        let rec = self.pool_record(name)?;
        let vols = self.volume_records(Some(name))?;
        if !vols.is_empty() {
            let names: Vec<&str> = vols.iter().map(|v| v.name.as_str()).collect();
            return Err(Error::conflict(format!(
                "storage pool {name:?} still has volumes ({}); delete them first",
                names.join(", ")
            )));
        }
        let view = self.pool_view(&rec);
        let driver = self
            .inner
            .drivers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        if let Some(d) = driver {
            d.close()?;
        }
        self.inner.pools.delete(name)?;
        self.inner
            .unavailable
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        remove_created(&rec);
        if rec.driver == DriverKind::Dir && rec.created_dir.is_none() {
            // A dir pool in a directory the user gave: remove only Vessel's layout.
            for sub in ["fs", "block", "snapshots"] {
                let _ = std::fs::remove_dir(Path::new(&rec.sources[0]).join(sub));
            }
        }
        self.inner.events.lifecycle(
            "storage-pool-deleted",
            &format!("/1.0/storage/pools/{name}"),
        );
        Ok(view)
    }

    /// Health of a pool.
    pub fn pool_status(&self, name: &str) -> Result<PoolStatus> {
        let rec = self.pool_record(name)?;
        let view = self.pool_view(&rec);
        let (members, rebuild) = match self.driver(name) {
            Ok(d) => (d.members(), d.rebuild_percent()),
            Err(_) => (Vec::new(), None),
        };
        Ok(PoolStatus {
            name: rec.name.clone(),
            driver: rec.driver,
            status: view.status,
            members,
            rebuild_percent: rebuild,
            last_scrub: self
                .inner
                .scrubs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(name)
                .cloned(),
        })
    }

    /// Checks a repair request.
    pub fn repair_check(&self, name: &str, req: &PoolRepair) -> Result<()> {
        let rec = self.pool_record(name)?;
        if rec.driver != DriverKind::Raid {
            return Err(Error::invalid(format!(
                "storage pool {name:?} is a {} pool; fail, replace and scrub are for raid pools",
                rec.driver.as_str()
            )));
        }
        match req.action.as_str() {
            "scrub" => Ok(()),
            "fail" | "replace" => {
                let m = req.member.ok_or_else(|| {
                    Error::invalid(format!("{} needs a member slot (--member N)", req.action))
                })?;
                if m as usize >= rec.sources.len() {
                    return Err(Error::invalid(format!(
                        "pool {name:?} has members 0..{}; there is no member {m}",
                        rec.sources.len() - 1
                    )));
                }
                if req.action == "replace" {
                    let p = req.path.as_deref().ok_or_else(|| {
                        Error::invalid("replace needs the new member's path (--path FILE)")
                    })?;
                    if !p.starts_with('/') {
                        return Err(Error::invalid(format!("{p:?} is not an absolute path")));
                    }
                }
                Ok(())
            }
            other => Err(Error::invalid(format!(
                "unknown repair action {other:?}: use fail, replace or scrub"
            ))),
        }
    }

    /// Runs a repair (blocking; inside an operation).
    pub fn repair(&self, name: &str, req: PoolRepair, op: &OpHandle) -> Result<()> {
        self.repair_check(name, &req)?;
        let d = self.driver(name)?;
        let progress = |p: u8, stage: &str| op.progress(Some(p), stage);
        match req.action.as_str() {
            "fail" => d.fail_member(req.member.unwrap_or(0))?,
            "replace" => {
                let m = req.member.unwrap_or(0);
                let path = PathBuf::from(req.path.clone().unwrap_or_default());
                d.replace_member(m, &path, req.rate, &progress)?;
                let _g = self.busy();
                let mut rec = self.pool_record(name)?;
                rec.sources[m as usize] = path.display().to_string();
                self.inner.pools.put(name, &rec)?;
            }
            _ => {
                let r = d.scrub(&progress)?;
                self.inner
                    .scrubs
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(name.to_string(), r);
            }
        }
        self.inner.events.lifecycle(
            &format!("storage-pool-{}", req.action),
            &format!("/1.0/storage/pools/{name}"),
        );
        Ok(())
    }

    // ---- volumes ------------------------------------------------------------------------

    fn volume_view(&self, v: &VolumeRecord) -> StorageVolume {
        let used = self
            .driver(&v.pool)
            .and_then(|d| d.used(&v.name, v.content))
            .unwrap_or(0);
        StorageVolume {
            pool: v.pool.clone(),
            name: v.name.clone(),
            content: v.content,
            size_bytes: v.size,
            used_bytes: used,
            source: v.source.clone(),
            snapshots: v.snapshots.clone(),
            attached_to: v.attached_to.clone(),
            created_at: v.created_at.clone(),
        }
    }

    /// The volumes of a pool.
    pub fn volumes_list(&self, pool: &str) -> Result<Vec<StorageVolume>> {
        self.pool_record(pool)?;
        Ok(self
            .volume_records(Some(pool))?
            .iter()
            .map(|v| self.volume_view(v))
            .collect())
    }

    /// One volume.
    pub fn volume_get(&self, pool: &str, name: &str) -> Result<StorageVolume> {
        Ok(self.volume_view(&self.volume_record(pool, name)?))
    }

    /// Checks a volume creation request; returns the size it will have.
    pub fn volume_check(&self, pool: &str, req: &VolumeCreate) -> Result<()> {
        validate_name("volume", &req.name)?;
        let rec = self.pool_record(pool)?;
        if self.volume_record(pool, &req.name).is_ok() {
            return Err(Error::conflict(format!(
                "volume {:?} already exists in pool {pool:?}",
                req.name
            )));
        }
        if rec.driver == DriverKind::Raid && req.content == VolumeContent::Filesystem {
            return Err(Error::invalid(
                "raid pools hold block volumes (--type block): this kernel has no nbd, ublk or \
                 dm to mount a user-space block device, so put filesystem volumes on a dir or \
                 btrfs pool",
            ));
        }
        if req.content == VolumeContent::Block && req.size.is_none() && req.source.is_none() {
            return Err(Error::invalid(
                "a block volume needs a size (e.g. --size 1GiB)",
            ));
        }
        if req.size == Some(0) && req.content == VolumeContent::Block {
            return Err(Error::invalid("a block volume cannot be 0 bytes"));
        }
        if let Some(size) = req.size {
            let (cap, _) = self.driver(pool)?.capacity()?;
            if size > cap {
                return Err(Error::invalid(format!(
                    "{size} bytes is more than pool {pool:?} holds ({cap} bytes)"
                )));
            }
        }
        if let Some(src) = &req.source {
            let (vol, snap) = match src.split_once('/') {
                Some((v, s)) => (v, Some(s)),
                None => (src.as_str(), None),
            };
            let v = self.volume_record(pool, vol)?;
            if v.content != req.content {
                return Err(Error::invalid(format!(
                    "volume {vol:?} holds {:?} content, not {:?}",
                    v.content, req.content
                )));
            }
            if let Some(s) = snap {
                if !v.snapshots.iter().any(|x| x == s) {
                    return Err(Error::not_found(format!(
                        "volume {vol:?} has no snapshot {s:?}"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Creates a volume (blocking).
    pub fn volume_create(&self, pool: &str, req: VolumeCreate) -> Result<StorageVolume> {
        let _g = self.busy();
        self.volume_check(pool, &req)?;
        self.volume_create_locked(pool, req, None)
    }

    fn volume_create_locked(
        &self,
        pool: &str,
        req: VolumeCreate,
        root_of: Option<String>,
    ) -> Result<StorageVolume> {
        let d = self.driver(pool)?;
        let mut size = req.size.unwrap_or(0);
        match &req.source {
            Some(src) => {
                let (vol, snap) = match src.split_once('/') {
                    Some((v, s)) => (v, Some(s)),
                    None => (src.as_str(), None),
                };
                if size == 0 {
                    size = self.volume_record(pool, vol)?.size;
                }
                d.clone_volume(vol, snap, &req.name, req.content)?;
                if req.size.is_some() {
                    if let Err(e) = d.resize(&req.name, req.content, size) {
                        let _ = d.delete(&req.name, req.content);
                        return Err(e);
                    }
                }
            }
            None => d.create(&req.name, req.content, req.size)?,
        }
        let rec = VolumeRecord {
            pool: pool.into(),
            name: req.name.clone(),
            content: req.content,
            size,
            source: req.source.clone(),
            snapshots: Vec::new(),
            attached_to: Vec::new(),
            root_of,
            created_at: crate::clock::now(),
        };
        if let Err(e) = self.inner.volumes.insert(&rec.key(), &rec) {
            let _ = d.delete(&req.name, req.content);
            return Err(e.into());
        }
        self.inner.events.lifecycle(
            "storage-volume-created",
            &format!("/1.0/storage/pools/{pool}/volumes/{}", req.name),
        );
        Ok(self.volume_view(&rec))
    }

    fn exports_of(&self, pool: &str, name: &str) -> Result<Vec<String>> {
        Ok(self
            .inner
            .exports
            .entries()?
            .into_iter()
            .filter_map(|(_, e)| e.ok())
            .filter(|e| e.pool == pool && e.volume == name)
            .map(|e| e.name)
            .collect())
    }

    /// Deletes a volume with its snapshots; refused while attached or exported.
    pub fn volume_delete(&self, pool: &str, name: &str) -> Result<StorageVolume> {
        let _g = self.busy();
        let v = self.volume_record(pool, name)?;
        if !v.attached_to.is_empty() {
            let who: Vec<&str> = v.attached_to.iter().map(|a| a.instance.as_str()).collect();
            return Err(Error::conflict(format!(
                "volume {name:?} is attached to {}; detach it first",
                who.join(", ")
            )));
        }
        let exports = self.exports_of(pool, name)?;
        if !exports.is_empty() {
            return Err(Error::conflict(format!(
                "volume {name:?} is exported as {}; delete the export first",
                exports.join(", ")
            )));
        }
        let clones: Vec<String> = self
            .volume_records(Some(pool))?
            .into_iter()
            .filter(|c| {
                c.source
                    .as_deref()
                    .is_some_and(|s| s == name || s.starts_with(&format!("{name}/")))
            })
            .map(|c| c.name)
            .collect();
        let d = self.driver(pool)?;
        if !clones.is_empty() && d.clones_depend_on_origin() {
            return Err(Error::conflict(format!(
                "volume {name:?} has clones ({}) that share its data; delete them first",
                clones.join(", ")
            )));
        }
        let view = self.volume_view(&v);
        for s in v.snapshots.iter().rev() {
            d.delete_snapshot(name, v.content, s)?;
        }
        d.delete(name, v.content)?;
        self.inner.volumes.delete(&v.key())?;
        self.inner.events.lifecycle(
            "storage-volume-deleted",
            &format!("/1.0/storage/pools/{pool}/volumes/{name}"),
        );
        Ok(view)
    }

    /// Resizes a volume.
    pub fn volume_update(
        &self,
        pool: &str,
        name: &str,
        req: VolumeUpdate,
    ) -> Result<StorageVolume> {
        let _g = self.busy();
        let mut v = self.volume_record(pool, name)?;
        if v.content == VolumeContent::Block {
            if req.size == 0 {
                return Err(Error::invalid("a block volume cannot be 0 bytes"));
            }
            if req.size < v.size && !self.running_users(&v)?.is_empty() {
                return Err(Error::conflict(format!(
                    "volume {name:?} is in use by a running instance; stop it before shrinking"
                )));
            }
        }
        let d = self.driver(pool)?;
        let (cap, _) = d.capacity()?;
        if req.size > cap {
            return Err(Error::invalid(format!(
                "{} bytes is more than pool {pool:?} holds ({cap} bytes)",
                req.size
            )));
        }
        d.resize(name, v.content, req.size)?;
        v.size = req.size;
        self.put_volume(&v)?;
        Ok(self.volume_view(&v))
    }

    /// Takes a snapshot.
    pub fn snapshot_create(
        &self,
        pool: &str,
        name: &str,
        req: SnapshotCreate,
    ) -> Result<StorageVolume> {
        let _g = self.busy();
        validate_name("snapshot", &req.name)?;
        let mut v = self.volume_record(pool, name)?;
        if v.snapshots.contains(&req.name) {
            return Err(Error::conflict(format!(
                "volume {name:?} already has a snapshot {:?}",
                req.name
            )));
        }
        let d = self.driver(pool)?;
        d.snapshot(name, v.content, &req.name)?;
        v.snapshots.push(req.name.clone());
        if let Err(e) = self.put_volume(&v) {
            let _ = d.delete_snapshot(name, v.content, &req.name);
            return Err(e);
        }
        self.inner.events.lifecycle(
            "storage-volume-snapshot-created",
            &format!(
                "/1.0/storage/pools/{pool}/volumes/{name}/snapshots/{}",
                req.name
            ),
        );
        Ok(self.volume_view(&v))
    }

    /// Removes a snapshot.
    pub fn snapshot_delete(&self, pool: &str, name: &str, snap: &str) -> Result<StorageVolume> {
        let _g = self.busy();
        let mut v = self.volume_record(pool, name)?;
        if !v.snapshots.iter().any(|s| s == snap) {
            return Err(Error::not_found(format!(
                "volume {name:?} has no snapshot {snap:?}"
            )));
        }
        let clone_src = format!("{name}/{snap}");
        let d = self.driver(pool)?;
        if d.clones_depend_on_origin() {
            if let Some(c) = self
                .volume_records(Some(pool))?
                .into_iter()
                .find(|c| c.source.as_deref() == Some(&clone_src))
            {
                return Err(Error::conflict(format!(
                    "volume {:?} was cloned from this snapshot and shares its data; delete it first",
                    c.name
                )));
            }
        }
        d.delete_snapshot(name, v.content, snap)?;
        v.snapshots.retain(|s| s != snap);
        self.put_volume(&v)?;
        Ok(self.volume_view(&v))
    }

    fn running_users(&self, v: &VolumeRecord) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for a in &v.attached_to {
            if let Ok(i) = self.inner.store.instance_get(&a.instance) {
                if i.status != InstanceStatus::Stopped {
                    out.push(a.instance.clone());
                }
            }
        }
        Ok(out)
    }

    /// Rolls a volume back to a snapshot; refused while a running instance uses it.
    pub fn volume_restore(
        &self,
        pool: &str,
        name: &str,
        req: VolumeRestore,
    ) -> Result<StorageVolume> {
        let _g = self.busy();
        let v = self.volume_record(pool, name)?;
        if !v.snapshots.contains(&req.snapshot) {
            return Err(Error::not_found(format!(
                "volume {name:?} has no snapshot {:?}",
                req.snapshot
            )));
        }
        let running = self.running_users(&v)?;
        if !running.is_empty() {
            return Err(Error::conflict(format!(
                "volume {name:?} is in use by running {}; stop them before restoring",
                running.join(", ")
            )));
        }
        if !self.exports_of(pool, name)?.is_empty() && v.content == VolumeContent::Filesystem {
            return Err(Error::conflict(format!(
                "volume {name:?} is exported; delete the export before restoring"
            )));
        }
        self.driver(pool)?.restore(name, v.content, &req.snapshot)?;
        self.inner.events.lifecycle(
            "storage-volume-restored",
            &format!("/1.0/storage/pools/{pool}/volumes/{name}"),
        );
        Ok(self.volume_view(&v))
    }

    /// Attaches a volume to a stopped instance.
    pub fn attach(&self, pool: &str, name: &str, req: VolumeAttach) -> Result<StorageVolume> {
        let _g = self.busy();
        let mut v = self.volume_record(pool, name)?;
        let inst =
            crate::instance::stored_stopped(self.inner.store.as_ref(), &req.instance, "volumes")?;
        if v.attached_to.iter().any(|a| a.instance == req.instance) {
            return Err(Error::conflict(format!(
                "volume {name:?} is already attached to {:?}",
                req.instance
            )));
        }
        let path = match (inst.instance_type, v.content) {
            (InstanceType::Container, VolumeContent::Filesystem) => {
                check_mount_point(&req.path)?;
                let clash = self
                    .volume_records(None)?
                    .into_iter()
                    .flat_map(|o| o.attached_to)
                    .any(|a| a.instance == req.instance && a.path == req.path);
                if clash {
                    return Err(Error::conflict(format!(
                        "another volume is mounted at {} in {:?}",
                        req.path, req.instance
                    )));
                }
                req.path.clone()
            }
            (InstanceType::Vm, VolumeContent::Block) => String::new(),
            (InstanceType::Container, VolumeContent::Block) => {
                return Err(Error::invalid(
                    "block volumes attach to VMs; give containers a filesystem volume",
                ))
            }
            (InstanceType::Vm, VolumeContent::Filesystem) => {
                return Err(Error::invalid(
                    "filesystem volumes attach to containers; give VMs a block volume (or \
                     export the volume over NFS)",
                ))
            }
        };
        if v.content == VolumeContent::Block && !v.attached_to.is_empty() {
            return Err(Error::conflict(format!(
                "block volume {name:?} is attached to {:?}; a disk has one writer",
                v.attached_to[0].instance
            )));
        }
        v.attached_to.push(VolumeAttachment {
            instance: req.instance.clone(),
            path,
        });
        self.put_volume(&v)?;
        if v.content == VolumeContent::Block {
            if let Err(e) = self.serve_disk(&req.instance, &v) {
                v.attached_to.retain(|a| a.instance != req.instance);
                self.put_volume(&v)?;
                return Err(e);
            }
        }
        Ok(self.volume_view(&v))
    }

    /// Detaches a volume from a stopped instance.
    pub fn detach(&self, pool: &str, name: &str, req: VolumeAttach) -> Result<StorageVolume> {
        let _g = self.busy();
        let mut v = self.volume_record(pool, name)?;
        if !v.attached_to.iter().any(|a| a.instance == req.instance) {
            return Err(Error::not_found(format!(
                "volume {name:?} is not attached to {:?}",
                req.instance
            )));
        }
        if v.root_of.as_deref() == Some(&req.instance) {
            return Err(Error::conflict(format!(
                "volume {name:?} is the root disk of {:?}; it goes with the instance",
                req.instance
            )));
        }
        if let Ok(i) = self.inner.store.instance_get(&req.instance) {
            if i.status != InstanceStatus::Stopped {
                return Err(Error::conflict(format!(
                    "instance {:?} is {:?}; stop it before detaching volumes",
                    i.name, i.status
                )));
            }
        }
        v.attached_to.retain(|a| a.instance != req.instance);
        self.put_volume(&v)?;
        self.stop_disk(&req.instance, &v);
        Ok(self.volume_view(&v))
    }

    /// Writes a disk image (raw or qcow2) into a block volume with `qemu-img convert`
    /// (blocking; inside an operation). The image is resized to the volume's size first.
    pub fn volume_import(&self, pool: &str, name: &str, image: &Path, op: &OpHandle) -> Result<()> {
        let v = self.volume_record(pool, name)?;
        if v.content != VolumeContent::Block {
            return Err(Error::invalid(format!(
                "volume {name:?} is a filesystem volume; images go into block volumes"
            )));
        }
        if !v.attached_to.is_empty() || !self.running_users(&v)?.is_empty() {
            return Err(Error::conflict(format!(
                "volume {name:?} is attached; detach it before importing into it"
            )));
        }
        let info = pool::run(
            "qemu-img",
            &["info", "--output=json", pool::path_str(image)?],
        )?;
        let info: serde_json::Value = serde_json::from_str(&info)
            .map_err(|e| Error::invalid(format!("qemu-img info: {e}")))?;
        let format = info["format"].as_str().unwrap_or("raw").to_string();
        if !matches!(format.as_str(), "raw" | "qcow2") {
            return Err(Error::invalid(format!(
                "the upload is a {format} image; give a raw or qcow2 disk image"
            )));
        }
        if info.get("backing-filename").is_some() {
            return Err(Error::invalid(
                "the image has a backing file; flatten it first (qemu-img convert)",
            ));
        }
        let virtual_size = info["virtual-size"].as_u64().unwrap_or(0);
        if virtual_size > v.size {
            return Err(Error::invalid(format!(
                "the image is {virtual_size} bytes but volume {name:?} is {} bytes; resize the \
                 volume first",
                v.size
            )));
        }
        op.progress(Some(5), "writing the image");
        self.write_image(&v, image, &format, op)?;
        self.inner.events.lifecycle(
            "storage-volume-imported",
            &format!("/1.0/storage/pools/{pool}/volumes/{name}"),
        );
        Ok(())
    }

    /// Converts `image` into the volume: straight into the file, or through a private NBD
    /// socket for volumes inside the daemon.
    fn write_image(
        &self,
        v: &VolumeRecord,
        image: &Path,
        format: &str,
        op: &OpHandle,
    ) -> Result<()> {
        let d = self.driver(&v.pool)?;
        let src = pool::path_str(image)?.to_string();
        match d.block(&v.name)? {
            BlockAccess::File(path) => convert(&src, format, &[pool::path_str(&path)?], op),
            BlockAccess::Device(dev) => {
                let sock = self
                    .inner
                    .run
                    .join(format!("import-{}-{}.sock", v.pool, v.name));
                let _ = std::fs::remove_file(&sock);
                let server =
                    vessel_nbd::NbdServer::new([vessel_nbd::NbdExport::new(v.name.clone(), dev)])
                        .map_err(|e| Error::internal(format!("NBD server: {}", chain(&e))))?;
                std::fs::create_dir_all(&self.inner.run)
                    .map_err(|e| Error::internal(format!("creating run dir: {e}")))?;
                let handle = server
                    .serve_unix(&sock)
                    .map_err(|e| Error::internal(format!("NBD socket: {}", chain(&e))))?;
                let uri = format!("nbd+unix:///{}?socket={}", v.name, sock.display());
                let r = convert(&src, format, &["--target-is-zero", "-n", &uri], op);
                handle.shutdown();
                r
            }
        }
    }

    // ---- instances ----------------------------------------------------------------------

    /// Bind mounts for a container's filesystem volumes. For an unprivileged container
    /// (`shift` = host uid of its root) a volume's top directory still owned by host root is
    /// handed to the container's root, so it can write there.
    pub fn container_mounts(&self, instance: &str, shift: Option<u32>) -> Result<Vec<VolumeMount>> {
        let mut out = Vec::new();
        for v in self.volume_records(None)? {
            for a in v.attached_to.iter().filter(|a| a.instance == instance) {
                let source = self.driver(&v.pool)?.fs_path(&v.name)?;
                if let Some(base) = shift {
                    use std::os::unix::fs::MetadataExt;
                    let md = std::fs::metadata(&source)
                        .map_err(|e| Error::internal(format!("volume {}: {e}", v.key())))?;
                    if md.uid() == 0 && base != 0 {
                        std::os::unix::fs::chown(&source, Some(base), Some(base)).map_err(|e| {
                            Error::internal(format!("handing volume {} over: {e}", v.key()))
                        })?;
                    }
                }
                out.push(VolumeMount {
                    source,
                    destination: a.path.clone(),
                });
            }
        }
        out.sort_by(|a, b| a.destination.cmp(&b.destination));
        Ok(out)
    }

    /// Extra disks of a VM, in attachment order (its root volume first).
    pub fn vm_disks(&self, instance: &str) -> Result<Vec<vessel_vm::Disk>> {
        let mut vols: Vec<VolumeRecord> = self
            .volume_records(None)?
            .into_iter()
            .filter(|v| v.attached_to.iter().any(|a| a.instance == instance))
            .collect();
        vols.sort_by_key(|v| (v.root_of.is_none(), v.created_at.clone()));
        let mut out = Vec::new();
        for v in vols {
            let d = self.driver(&v.pool)?;
            out.push(match d.block(&v.name)? {
                BlockAccess::File(path) => vessel_vm::Disk {
                    path,
                    format: vessel_vm::DiskFormat::Raw,
                    media: vessel_vm::Media::Disk,
                    read_only: false,
                    nbd_export: None,
                },
                BlockAccess::Device(_) => {
                    self.serve_disk(instance, &v)?;
                    vessel_vm::Disk {
                        path: self.disk_socket(instance, &v),
                        format: vessel_vm::DiskFormat::Raw,
                        media: vessel_vm::Media::Disk,
                        read_only: false,
                        nbd_export: Some(v.key()),
                    }
                }
            });
        }
        Ok(out)
    }

    /// Checks that a VM can get a root volume in `pool`.
    pub fn root_check(&self, pool: &str, instance: &str) -> Result<()> {
        let rec = self.pool_record(pool)?;
        self.driver(pool)?;
        let name = format!("{instance}-root");
        validate_name("volume", &name)?;
        if self.volume_record(&rec.name, &name).is_ok() {
            return Err(Error::conflict(format!(
                "pool {pool:?} already has a volume {name:?}"
            )));
        }
        Ok(())
    }

    /// Creates a VM's root volume in `pool` from the image's disk (blocking; inside the
    /// creating operation) and attaches it.
    pub fn create_root_volume(
        &self,
        pool: &str,
        instance: &str,
        image_disk: &Path,
        op: &OpHandle,
    ) -> Result<()> {
        let info = pool::run(
            "qemu-img",
            &["info", "--output=json", pool::path_str(image_disk)?],
        )?;
        let info: serde_json::Value = serde_json::from_str(&info)
            .map_err(|e| Error::internal(format!("qemu-img info: {e}")))?;
        let size = info["virtual-size"].as_u64().unwrap_or(0);
        let format = info["format"].as_str().unwrap_or("raw").to_string();
        let name = format!("{instance}-root");
        let v = {
            let _g = self.busy();
            self.root_check(pool, instance)?;
            self.volume_create_locked(
                pool,
                VolumeCreate {
                    name: name.clone(),
                    content: VolumeContent::Block,
                    size: Some(size.max(1 << 20)),
                    source: None,
                },
                Some(instance.to_string()),
            )?;
            self.volume_record(pool, &name)?
        };
        op.progress(Some(20), "writing the root disk into the pool");
        let written = self.write_image(&v, image_disk, &format, op);
        let attached = written.and_then(|_| {
            let _g = self.busy();
            let mut v = self.volume_record(pool, &name)?;
            v.attached_to.push(VolumeAttachment {
                instance: instance.into(),
                path: String::new(),
            });
            self.put_volume(&v)
        });
        if let Err(e) = attached {
            let _ = self.volume_delete(pool, &name);
            return Err(e);
        }
        Ok(())
    }

    /// An instance is gone: its root volume is deleted, other volumes detached.
    pub fn instance_deleted(&self, instance: &str) -> Result<()> {
        let vols: Vec<VolumeRecord> = self
            .volume_records(None)?
            .into_iter()
            .filter(|v| v.attached_to.iter().any(|a| a.instance == instance))
            .collect();
        for mut v in vols {
            self.stop_disk(instance, &v);
            {
                let _g = self.busy();
                v.attached_to.retain(|a| a.instance != instance);
                self.put_volume(&v)?;
            }
            if v.root_of.as_deref() == Some(instance) {
                // Its snapshots go with it.
                self.volume_delete(&v.pool, &v.name)?;
            }
        }
        Ok(())
    }

    fn disk_socket(&self, instance: &str, v: &VolumeRecord) -> PathBuf {
        self.inner
            .run
            .join("disks")
            .join(format!("{instance}--{}--{}.sock", v.pool, v.name))
    }

    /// Serves a raid volume to one VM on a private unix socket (idempotent).
    fn serve_disk(&self, instance: &str, v: &VolumeRecord) -> Result<()> {
        let key = format!("{instance}/{}", v.key());
        let mut disks = self.inner.disks.lock().unwrap_or_else(|p| p.into_inner());
        if disks.contains_key(&key) {
            return Ok(());
        }
        let BlockAccess::Device(dev) = self.driver(&v.pool)?.block(&v.name)? else {
            return Ok(());
        };
        let sock = self.disk_socket(instance, v);
        if let Some(dir) = sock.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::internal(format!("creating {}: {e}", dir.display())))?;
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711));
        }
        let _ = std::fs::remove_file(&sock);
        let server = vessel_nbd::NbdServer::new([vessel_nbd::NbdExport::new(v.key(), dev)])
            .map_err(|e| Error::internal(format!("NBD server: {}", chain(&e))))?;
        let handle = server
            .serve_unix(&sock)
            .map_err(|e| Error::internal(format!("serving {}: {}", sock.display(), chain(&e))))?;
        // Only QEMU (run as nobody) and root may connect.
        let _ = std::os::unix::fs::chown(&sock, Some(65534), Some(65534));
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o600));
        disks.insert(key, handle);
        Ok(())
    }

    fn stop_disk(&self, instance: &str, v: &VolumeRecord) {
        let key = format!("{instance}/{}", v.key());
        if let Some(h) = self
            .inner
            .disks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key)
        {
            h.shutdown();
        }
    }

    // ---- exports ------------------------------------------------------------------------

    /// Every export with its state.
    pub fn exports_list(&self) -> Result<Vec<StorageExport>> {
        Ok(self
            .inner
            .exports
            .list()?
            .into_iter()
            .map(|e| self.export_view(e))
            .collect())
    }

    fn export_view(&self, mut e: StorageExport) -> StorageExport {
        match self.inner.servers.error(&e.name) {
            None => e.status = "serving".into(),
            Some(err) => {
                e.status = "failed".into();
                e.error = Some(err);
            }
        }
        e
    }

    fn serve_export(&self, e: &StorageExport) -> Result<()> {
        let d = self.driver(&e.pool)?;
        let r = match e.protocol {
            vessel_api::ExportProtocol::Nbd => {
                let dev: Arc<dyn vessel_nbd::BlockDevice> = match d.block(&e.volume)? {
                    BlockAccess::Device(dev) => dev,
                    BlockAccess::File(path) => Arc::new(
                        vessel_nbd::FileDevice::open(&path, e.read_only).map_err(|err| {
                            Error::internal(format!("opening {}: {}", path.display(), chain(&err)))
                        })?,
                    ),
                };
                self.inner.servers.add_nbd(e, dev)
            }
            vessel_api::ExportProtocol::Nfs => {
                let root = d.fs_path(&e.volume)?;
                self.inner.servers.add_nfs(e, root)
            }
        };
        if let Err(err) = &r {
            self.inner.servers.set_error(&e.name, err.message.clone());
        }
        r
    }

    /// Exports a volume.
    pub fn export_create(&self, req: ExportCreate) -> Result<StorageExport> {
        let _g = self.busy();
        validate_name("export", &req.name)?;
        if self.inner.exports.contains(&req.name)? {
            return Err(Error::conflict(format!(
                "export {:?} already exists",
                req.name
            )));
        }
        let v = self.volume_record(&req.pool, &req.volume)?;
        match (req.protocol, v.content) {
            (vessel_api::ExportProtocol::Nbd, VolumeContent::Filesystem) => {
                return Err(Error::invalid(
                    "NBD exports block volumes; export a filesystem volume over NFS",
                ))
            }
            (vessel_api::ExportProtocol::Nfs, VolumeContent::Block) => {
                return Err(Error::invalid(
                    "NFS exports filesystem volumes; export a block volume over NBD",
                ))
            }
            _ => {}
        }
        if v.content == VolumeContent::Block && !req.read_only && !v.attached_to.is_empty() {
            return Err(Error::conflict(format!(
                "block volume {:?} is attached to {:?}; export it read-only or detach it",
                req.volume, v.attached_to[0].instance
            )));
        }
        let listen = export::normalize_listen(req.protocol, req.listen.as_deref())?;
        let e = StorageExport {
            name: req.name.clone(),
            pool: req.pool.clone(),
            volume: req.volume.clone(),
            protocol: req.protocol,
            uri: export::uri(req.protocol, &listen, &req.name),
            listen,
            read_only: req.read_only,
            status: "serving".into(),
            error: None,
        };
        self.serve_export(&e)?;
        if let Err(err) = self.inner.exports.insert(&e.name, &e) {
            self.inner.servers.remove(&e);
            return Err(err.into());
        }
        self.inner.events.lifecycle(
            "storage-export-created",
            &format!("/1.0/storage/exports/{}", e.name),
        );
        Ok(e)
    }

    /// Stops serving an export.
    pub fn export_delete(&self, name: &str) -> Result<StorageExport> {
        let _g = self.busy();
        let e = self.inner.exports.get(name)?.ok_or_else(|| {
            Error::not_found(format!(
                "export {name:?} not found; see `vessel storage export list`"
            ))
        })?;
        self.inner.servers.remove(&e);
        self.inner.exports.delete(name)?;
        self.inner.events.lifecycle(
            "storage-export-deleted",
            &format!("/1.0/storage/exports/{name}"),
        );
        Ok(e)
    }
}

/// `qemu-img convert` with progress reported to the operation.
fn convert(src: &str, format: &str, target: &[&str], op: &OpHandle) -> Result<()> {
    use std::io::Read;
    let mut args = vec!["convert", "-p", "-f", format, "-O", "raw", src];
    args.extend_from_slice(target);
    let mut child = std::process::Command::new("qemu-img")
        .args(&args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| Error::internal(format!("cannot run qemu-img: {e}; install qemu-utils")))?;
    let mut stdout = child.stdout.take();
    let mut buf = [0u8; 256];
    let mut text = String::new();
    while let Some(out) = stdout.as_mut() {
        match out.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                text.push_str(&String::from_utf8_lossy(&buf[..n]));
                // Lines look like "    (42.17/100%)\r".
                if let Some(p) = text.rsplit('(').next().and_then(|t| t.split('/').next()) {
                    if let Ok(p) = p.trim().parse::<f64>() {
                        op.progress(Some(5 + (p * 0.9) as u8), "writing the image");
                    }
                }
                if text.len() > 4096 {
                    text.drain(..2048);
                }
            }
        }
    }
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let status = child
        .wait()
        .map_err(|e| Error::internal(format!("qemu-img: {e}")))?;
    if !status.success() {
        return Err(Error::internal(format!(
            "qemu-img convert failed: {}",
            err.trim()
        )));
    }
    Ok(())
}

fn check_mount_point(path: &str) -> Result<()> {
    if !path.starts_with('/') || path == "/" {
        return Err(Error::invalid(format!(
            "mount point {path:?} must be an absolute path other than /"
        )));
    }
    if path.split('/').any(|c| c == ".." || c == ".") {
        return Err(Error::invalid(format!(
            "mount point {path:?} must not contain . or .."
        )));
    }
    for top in ["/proc", "/sys", "/dev"] {
        if path == top || path.starts_with(&format!("{top}/")) {
            return Err(Error::invalid(format!(
                "volumes cannot be mounted under {top}"
            )));
        }
    }
    Ok(())
}

fn create_file(path: &Path, size: u64) -> Result<()> {
    if size == 0 {
        return Err(Error::invalid(
            "give a size for the files Vessel creates (e.g. --size 1GiB)",
        ));
    }
    if path.exists() {
        return Err(Error::conflict(format!(
            "{} exists already; remove it or give it as a source",
            path.display()
        )));
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| Error::internal(format!("creating {}: {e}", parent.display())))?;
    }
    let f = std::fs::File::create(path)
        .map_err(|e| Error::internal(format!("creating {}: {e}", path.display())))?;
    f.set_len(size)
        .map_err(|e| Error::internal(format!("sizing {}: {e}", path.display())))
}

fn remove_created(rec: &PoolRecord) {
    for f in &rec.created_files {
        let _ = std::fs::remove_file(f);
    }
    if let Some(d) = &rec.created_dir {
        // Never recurse into a file system that is still mounted there.
        if !vessel_monitor::is_mountpoint(Path::new(d)) {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}
