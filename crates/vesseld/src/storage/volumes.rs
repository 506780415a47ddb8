//! Volumes: created (empty or cloned from a volume or snapshot), resized, snapshotted,
//! restored and deleted.

use vessel_api::{
    InstanceStatus, PoolDriver as DriverKind, SnapshotCreate, StorageVolume, VolumeContent,
    VolumeCreate, VolumeRestore, VolumeUpdate,
};

use super::record::{volume_not_found, PoolRecord, VolumeRecord};
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
            snapshot_bytes: v
                .snapshots
                .iter()
                .map(|s| v.snapshot_sizes.get(s).copied().unwrap_or(v.size))
                .sum(),
            attached_to: v.attached_to.clone(),
            config: v.config.clone(),
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
        crate::name::validate_qualified("volume", &req.name)?;
        let rec = self.pool_record(pool)?;
        let volumes = self.volume_records(Some(pool))?;
        check_volume_request(&rec, &volumes, req, || Ok(self.driver(pool)?.capacity()?.0))?;
        // A clone of a filesystem volume holds its source's files whatever its size says (a
        // quota below them frees nothing): its size is at least what they may take (the
        // source's size, which bounds them, when it has one; a snapshot's as taken).
        if let (Some(src), Some(size), VolumeContent::Filesystem) =
            (&req.source, req.size, req.content)
        {
            let (vol, snap) = split_source(src);
            let from = self.volume_record(pool, vol)?;
            let bound = snap
                .and_then(|s| from.snapshot_sizes.get(s).copied())
                .unwrap_or(from.size);
            let least = if bound > 0 {
                bound
            } else {
                self.driver(pool)?.held(vol, req.content)?
            };
            if size < least {
                return Err(Error::invalid(format!(
                    "volume {vol:?} may hold {least} bytes, which its copy holds too: give \
                     the copy a size of at least that"
                )));
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
        // A clone holds its source's files, stored with the same ids.
        let id_base = match &req.source {
            Some(src) => self.volume_record(pool, split_source(src).0)?.id_base,
            None => Some(0),
        };
        match &req.source {
            Some(src) => {
                let (vol, snap) = split_source(src);
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
            snapshot_sizes: Default::default(),
            attached_to: Vec::new(),
            root_of,
            container_root: false,
            id_base,
            disk_owner: None,
            config: req.config.clone(),
            created_at: crate::clock::now(),
        };
        // A clone of a VM's disk copies its owner (btrfs snapshots do): the new volume is
        // root's until a VM it is attached to starts.
        if let Err(e) = self.settle_disk_owner(&rec) {
            let _ = d.delete(&req.name, req.content);
            return Err(e);
        }
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
            .map(|r| r.export)
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
        let clones = clones_of(&self.volume_records(Some(pool))?, name);
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
        if v.container_root {
            let owner = v.root_of.as_deref().unwrap_or("?");
            return Err(Error::invalid(format!(
                "volume {name:?} is the root disk of container {owner:?}; change its size \
                 with `vessel resize {owner} SIZE`"
            )));
        }
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
        if v.content == VolumeContent::Filesystem
            && self.pool_record(pool)?.driver == DriverKind::Dir
        {
            return Err(Error::invalid(DIR_SIZE_REFUSED));
        }
        let d = self.driver(pool)?;
        if v.content == VolumeContent::Filesystem && req.size < v.size {
            // A quota below what the files take frees nothing: the size would undercount.
            let held = d.held(name, v.content)?;
            if req.size < held {
                return Err(Error::invalid(format!(
                    "volume {name:?} holds {held} bytes: a size below that frees nothing; \
                     remove files first"
                )));
            }
        }
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

    /// The file a block volume is (`None`: not a block volume, or one served as a device
    /// over NBD).
    pub fn volume_file(&self, pool: &str, name: &str) -> Result<Option<std::path::PathBuf>> {
        let v = self.volume_record(pool, name)?;
        if v.content != VolumeContent::Block {
            return Ok(None);
        }
        Ok(match self.driver(pool)?.block(name)? {
            super::driver::BlockAccess::File(path) => Some(path),
            super::driver::BlockAccess::Device(_) | super::driver::BlockAccess::Rbd(_) => None,
        })
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
        v.snapshot_sizes.insert(req.name.clone(), v.size);
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
        v.snapshot_sizes.remove(snap);
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
        // The snapshot's file had the owner of its time.
        self.settle_disk_owner(&v)?;
        self.inner.events.lifecycle(
            "storage-volume-restored",
            &format!("/1.0/storage/pools/{pool}/volumes/{name}"),
        );
        Ok(self.volume_view(&v))
    }
}

/// Why a `dir` pool takes no size for a filesystem volume.
const DIR_SIZE_REFUSED: &str = "a dir pool cannot hold a filesystem volume to a size (it is \
     a plain directory on the host's file system): leave --size out, or use a btrfs pool, \
     whose quotas enforce it (vessel storage pool create NAME btrfs --size 4GiB)";

/// Checks a request for a new volume in pool `rec`, which holds `volumes`; `capacity` tells
/// the pool's size when the request gives one.
pub(super) fn check_volume_request(
    rec: &PoolRecord,
    volumes: &[VolumeRecord],
    req: &VolumeCreate,
    capacity: impl FnOnce() -> Result<u64>,
) -> Result<()> {
    let pool = &rec.name;
    crate::name::validate_user_keys("volume", &req.config)?;
    if volumes.iter().any(|v| v.name == req.name) {
        return Err(Error::conflict(format!(
            "volume {:?} already exists in pool {pool:?}",
            req.name
        )));
    }
    if rec.driver == DriverKind::Ceph && req.content == VolumeContent::Filesystem {
        return Err(Error::invalid(super::ceph::NO_FILESYSTEMS));
    }
    if rec.driver == DriverKind::Raid && req.content == VolumeContent::Filesystem {
        return Err(Error::invalid(
            "raid pools hold block volumes (--type block): this kernel has no nbd, ublk or \
             dm to mount a user-space block device, so put filesystem volumes on a dir or \
             btrfs pool",
        ));
    }
    if rec.driver == DriverKind::Dir
        && req.content == VolumeContent::Filesystem
        && req.size.is_some()
    {
        return Err(Error::invalid(DIR_SIZE_REFUSED));
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
        let cap = capacity()?;
        if size > cap {
            return Err(Error::invalid(format!(
                "{size} bytes is more than pool {pool:?} holds ({cap} bytes)"
            )));
        }
    }
    if let Some(src) = &req.source {
        let (vol, snap) = split_source(src);
        let v = volumes
            .iter()
            .find(|v| v.name == vol)
            .ok_or_else(|| volume_not_found(pool, vol))?;
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

/// The volume and snapshot a clone's `source` names: `VOLUME` or `VOLUME/SNAPSHOT`.
pub(super) fn split_source(src: &str) -> (&str, Option<&str>) {
    match src.split_once('/') {
        Some((v, s)) => (v, Some(s)),
        None => (src, None),
    }
}

/// The volumes among `volumes` cloned from volume `name` or one of its snapshots.
pub(super) fn clones_of(volumes: &[VolumeRecord], name: &str) -> Vec<String> {
    volumes
        .iter()
        .filter(|c| {
            c.source
                .as_deref()
                .is_some_and(|s| split_source(s).0 == name)
        })
        .map(|c| c.name.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::record::fixture::{pool, volume};
    use super::*;
    use crate::error::ErrorKind;

    fn req(
        name: &str,
        content: VolumeContent,
        size: Option<u64>,
        source: Option<&str>,
    ) -> VolumeCreate {
        VolumeCreate {
            name: name.into(),
            content,
            size,
            source: source.map(str::to_string),
            config: Default::default(),
        }
    }

    #[test]
    fn volume_requests_fit_the_pool_and_their_source() {
        let dir = pool("local", DriverKind::Dir, &["/srv"]);
        let mut data = volume("local", "data", VolumeContent::Filesystem, &[]);
        data.snapshots.push("s1".into());
        let vols = [data, volume("local", "disk", VolumeContent::Block, &[])];
        let cap = || Ok(1 << 30);
        let fs = VolumeContent::Filesystem;
        let block = VolumeContent::Block;
        check_volume_request(&dir, &vols, &req("new", fs, None, None), cap).unwrap();
        check_volume_request(&dir, &vols, &req("new", block, Some(1 << 20), None), cap).unwrap();
        check_volume_request(&dir, &vols, &req("new", fs, None, Some("data/s1")), cap).unwrap();
        check_volume_request(&dir, &vols, &req("new", block, None, Some("disk")), cap).unwrap();
        // The capacity is asked only for a size.
        let no_cap = || -> Result<u64> { panic!("capacity asked") };
        check_volume_request(&dir, &vols, &req("new", fs, None, None), no_cap).unwrap();
        for (r, kind, want) in [
            (
                req("data", fs, None, None),
                ErrorKind::Conflict,
                "already exists in pool \"local\"",
            ),
            (
                req("new", block, None, None),
                ErrorKind::Invalid,
                "needs a size",
            ),
            (
                req("new", block, Some(0), None),
                ErrorKind::Invalid,
                "cannot be 0 bytes",
            ),
            (
                req("new", block, Some(2 << 30), None),
                ErrorKind::Invalid,
                "more than pool",
            ),
            (
                req("new", fs, Some(1 << 20), None),
                ErrorKind::Invalid,
                "a dir pool cannot hold a filesystem volume to a size",
            ),
            (
                req("new", block, None, Some("data")),
                ErrorKind::Invalid,
                "holds Filesystem content",
            ),
            (
                req("new", fs, None, Some("nope")),
                ErrorKind::NotFound,
                "\"nope\" not found in pool",
            ),
            (
                req("new", fs, None, Some("data/s2")),
                ErrorKind::NotFound,
                "no snapshot \"s2\"",
            ),
        ] {
            let e = check_volume_request(&dir, &vols, &r, cap).unwrap_err();
            assert_eq!(e.kind, kind, "{e}");
            assert!(e.message.contains(want), "{want:?} not in {e}");
        }
        let raid = pool("r", DriverKind::Raid, &["/a", "/b"]);
        let e = check_volume_request(&raid, &[], &req("new", fs, None, None), cap).unwrap_err();
        assert!(e.message.contains("raid pools hold block volumes"), "{e}");
    }

    #[test]
    fn clones_are_found_by_their_source() {
        assert_eq!(split_source("data"), ("data", None));
        assert_eq!(split_source("data/s1"), ("data", Some("s1")));
        let fs = VolumeContent::Filesystem;
        let mut a = volume("p", "a", fs, &[]);
        a.source = Some("data".into());
        let mut b = volume("p", "b", fs, &[]);
        b.source = Some("data/s1".into());
        let mut c = volume("p", "c", fs, &[]);
        c.source = Some("data2/s1".into());
        let vols = [a, b, c, volume("p", "data", fs, &[])];
        assert_eq!(clones_of(&vols, "data"), ["a", "b"]);
        assert!(clones_of(&vols, "a").is_empty());
    }
}
