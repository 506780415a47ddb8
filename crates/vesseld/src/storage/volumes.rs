//! Volumes: created (empty or cloned from a volume or snapshot), resized, snapshotted,
//! restored and deleted.

use vessel_api::{
    InstanceStatus, PoolDriver as DriverKind, SnapshotCreate, StorageVolume, VolumeContent,
    VolumeCreate, VolumeRestore, VolumeUpdate,
};

use super::record::VolumeRecord;
use super::StorageService;
use crate::error::{Error, Result};
use crate::name::validate_name;

impl StorageService {
    pub(super) fn volume_view(&self, v: &VolumeRecord) -> StorageVolume {
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

    pub(super) fn volume_create_locked(
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

    pub(super) fn exports_of(&self, pool: &str, name: &str) -> Result<Vec<String>> {
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

    pub(super) fn running_users(&self, v: &VolumeRecord) -> Result<Vec<String>> {
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
}
