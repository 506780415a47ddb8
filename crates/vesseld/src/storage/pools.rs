//! Pools: created on their sources (files Vessel makes when none are given), opened,
//! shown with capacity and health, repaired and deleted.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use vessel_api::{PoolCreate, PoolDriver as DriverKind, PoolRepair, PoolStatus, StoragePool};

use super::driver::PoolDriver;
use super::record::PoolRecord;
use super::replicas::ReplicaRef;
use super::{btrfs, ceph, dir, raid, StorageService};
use crate::error::{Error, Result};
use crate::name::validate_name;
use crate::operations::OpHandle;

impl StorageService {
    fn pool_home(&self, name: &str) -> PathBuf {
        self.inner.root.join(name)
    }

    pub(super) fn open_driver(&self, rec: &PoolRecord) -> Result<Arc<dyn PoolDriver>> {
        Ok(match rec.driver {
            DriverKind::Dir => Arc::new(dir::DirPool::open(Path::new(&rec.sources[0]))?),
            DriverKind::Btrfs => Arc::new(btrfs::BtrfsPool::open(
                &rec.sources,
                &self.pool_home(&rec.name),
            )?),
            DriverKind::Raid => Arc::new(raid::RaidPool::open(&rec.sources, &rec.config)?),
            DriverKind::Ceph => {
                let (pool, conf, user) = ceph::settings(&rec.sources, &rec.name, &rec.config);
                Arc::new(ceph::CephPool::open(&pool, &conf, &user)?)
            }
        })
    }

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
            config: rec.config.clone(),
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
        check_pool_request(req, &self.pool_records()?)
    }

    /// Creates a pool: formats its sources (blocking; run inside an operation). `far`: a
    /// replicated raid1 pool's far copy (where it is, and the member URI that reaches it),
    /// its second member beside one file Vessel creates here.
    pub fn pool_create(
        &self,
        req: PoolCreate,
        far: Option<(ReplicaRef, String)>,
        op: &OpHandle,
    ) -> Result<()> {
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
            config: req.config.clone(),
            created_at: crate::clock::now(),
            replica: far.as_ref().map(|(r, _)| r.clone()),
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
                        // A replicated pool: one member here, the far copy the other.
                        let here = if far.is_some() { 1 } else { n };
                        for i in 0..here {
                            let file = home.join(format!("member{i}.img"));
                            create_file(&file, req.size.unwrap_or(0))?;
                            rec.created_files.push(file.display().to_string());
                            rec.sources.push(file.display().to_string());
                        }
                        if let Some((_, uri)) = &far {
                            rec.sources.push(uri.clone());
                        }
                    }
                    op.progress(Some(40), "writing the array (and its far copy)");
                    Ok(Arc::new(raid::RaidPool::create(&rec.sources, &req)?))
                }
                DriverKind::Ceph => {
                    let (pool, conf, user) = ceph::settings(&rec.sources, &rec.name, &rec.config);
                    rec.sources = vec![pool.clone()];
                    op.progress(Some(40), "reaching Ceph");
                    Ok(Arc::new(ceph::CephPool::create(&pool, &conf, &user)?))
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
        self.arm_replica(&rec, &driver);
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

    /// Where a replicated pool's far copy is.
    pub fn pool_replica(&self, name: &str) -> Option<ReplicaRef> {
        self.pool_record(name).ok().and_then(|r| r.replica)
    }

    /// Deletes a pool without volumes; removes what Vessel created for it.
    pub fn pool_delete(&self, name: &str) -> Result<StoragePool> {
        let _g = self.busy();
        let rec = self.pool_record(name)?;
        let vols = self.volume_records(Some(name))?;
        // An unavailable pool (its members cannot be assembled) can always go: its
        // volumes' data cannot be reached to delete them one by one, so their records go
        // with it, once nothing uses them.
        let open = self
            .inner
            .drivers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .is_some_and(|d| d.health() != "unavailable");
        if !vols.is_empty() && open {
            let names: Vec<&str> = vols.iter().map(|v| v.name.as_str()).collect();
            return Err(Error::conflict(format!(
                "storage pool {name:?} still has volumes ({}); delete them first",
                names.join(", ")
            )));
        }
        for v in &vols {
            let exports = self.exports_of(name, &v.name)?;
            if !v.attached_to.is_empty() || !exports.is_empty() {
                let users: Vec<String> = v
                    .attached_to
                    .iter()
                    .map(|a| format!("instance {}", a.instance))
                    .chain(exports.iter().map(|e| format!("export {e}")))
                    .collect();
                return Err(Error::conflict(format!(
                    "volume {:?} of unavailable pool {name:?} is used by {}: delete or \
                     detach those first",
                    v.name,
                    users.join(", ")
                )));
            }
        }
        let view = self.pool_view(&rec);
        if let Some(d) = self.take_driver(name) {
            d.close()?;
        }
        self.inner.pools.delete(name)?;
        for v in &vols {
            self.inner.volumes.delete(&v.key())?;
        }
        self.inner
            .unavailable
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        self.forget_guard(name);
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
        check_repair(&self.pool_record(name)?, req)?;
        let m = req.member.unwrap_or(0);
        if req.replica.is_some()
            && self
                .driver(name)?
                .members()
                .iter()
                .any(|s| s.index == m && s.state == "active")
        {
            return Err(Error::conflict(format!(
                "member {m} of pool {name:?} is in use: a far copy takes the place of a member \
                 that failed or is missing"
            )));
        }
        Ok(())
    }

    /// Runs a repair (blocking; inside an operation).
    pub fn repair(&self, name: &str, req: PoolRepair, op: &OpHandle) -> Result<()> {
        self.repair_check(name, &req)?;
        let d = self.driver(name)?;
        let progress = |p: u8, stage: &str| op.progress(Some(p), stage);
        match req.action.as_str() {
            "fail" => d.fail_member(req.member.unwrap_or(0), req.force)?,
            "replace" if req.replica.is_some() => {
                return Err(Error::internal(
                    "a far copy is made by the cluster (repair_far)",
                ))
            }
            "replace" => {
                let m = req.member.unwrap_or(0);
                let path = PathBuf::from(req.path.clone().unwrap_or_default());
                // A member file Vessel makes here goes with the pool, like those it made at
                // creation.
                let made_here = !path.exists();
                let placed = || -> Result<()> {
                    let _g = self.busy();
                    let mut rec = self.pool_record(name)?;
                    rec.sources[m as usize] = path.display().to_string();
                    if made_here {
                        rec.created_files.push(path.display().to_string());
                    }
                    Ok(self.inner.pools.put(name, &rec)?)
                };
                d.replace_member(m, &path, req.rate, &placed, &progress)?;
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

/// Checks a request for a new pool against the existing `pools`: its name, sources (absolute,
/// in no other pool) and the settings its driver takes.
pub(super) fn check_pool_request(req: &PoolCreate, pools: &[PoolRecord]) -> Result<()> {
    validate_name("pool", &req.name)?;
    let ceph = req.driver == DriverKind::Ceph;
    let raid = req.driver == DriverKind::Raid;
    crate::name::validate_user_keys(
        "pool",
        req.config.iter().filter(|(k, _)| {
            !(ceph && [ceph::CONF_KEY, ceph::USER_KEY].contains(&k.as_str())
                || raid && k.as_str() == raid::CACHE_KEY)
        }),
    )?;
    if pools.iter().any(|p| p.name == req.name) {
        return Err(Error::conflict(format!(
            "storage pool {:?} already exists",
            req.name
        )));
    }
    if let Some(name) = &req.adopt {
        let only = req.driver == DriverKind::Raid
            && req.sources.is_empty()
            && req.size.is_none()
            && req.members.is_none()
            && req.level.is_none()
            && req.chunk_size.is_none()
            && req.replica.is_none();
        if !only {
            return Err(Error::invalid(format!(
                "a pool adopted from far copy {name} is a raid pool as the copy says: give no \
                 sources, size, members, level, chunk size or replica"
            )));
        }
    }
    if let Some(member) = &req.replica {
        let raid1 = req.driver == DriverKind::Raid
            && req.level.as_deref().map(|l| l.trim_start_matches("raid")) == Some("1");
        if !raid1 {
            return Err(Error::invalid(format!(
                "a far copy (--replica {member}) is for raid1 pools: give --level raid1"
            )));
        }
        if !req.sources.is_empty() || req.members.is_some_and(|m| m != 2) || req.size.is_none() {
            return Err(Error::invalid(
                "a replicated pool is one file here and one on the other member, both made by \
                 Vessel: give --size (and no --source or --members)",
            ));
        }
        validate_name("member", member)?;
    }
    let taken: Vec<&String> = pools.iter().flat_map(|p| &p.sources).collect();
    for s in &req.sources {
        if !s.starts_with('/') && !ceph {
            return Err(Error::invalid(format!(
                "source {s:?} is not an absolute path"
            )));
        }
        if taken.contains(&s) {
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
        DriverKind::Ceph => ceph::check_request(req)?,
    }
    Ok(())
}

/// Checks a repair of pool `rec`: raid pools only; `fail` and `replace` name an existing
/// member slot, `replace` an absolute path for the new member.
pub(super) fn check_repair(rec: &PoolRecord, req: &PoolRepair) -> Result<()> {
    let name = &rec.name;
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
            if req.action != "replace" {
                return Ok(());
            }
            if let Some(member) = &req.replica {
                if req.path.is_some() {
                    return Err(Error::invalid(
                        "give the new member's path (--path) or a member to keep it as a far \
                         copy (--replica), not both",
                    ));
                }
                if let Some(far) = &rec.replica {
                    return Err(Error::conflict(format!(
                        "pool {name:?} has its far copy on {} already",
                        far.member
                    )));
                }
                if rec.level.as_deref() != Some("raid1") || rec.sources.len() != 2 {
                    return Err(Error::invalid(format!(
                        "a far copy (--replica {member}) is for raid1 pools of two members"
                    )));
                }
                return Ok(());
            }
            let p = req.path.as_deref().ok_or_else(|| {
                Error::invalid(
                    "replace needs the new member's path (--path FILE), or in a cluster a \
                     member to keep it as a far copy (--replica MEMBER)",
                )
            })?;
            if !p.starts_with('/') {
                return Err(Error::invalid(format!("{p:?} is not an absolute path")));
            }
            Ok(())
        }
        other => Err(Error::invalid(format!(
            "unknown repair action {other:?}: use fail, replace or scrub"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::super::record::fixture::pool;
    use super::*;
    use crate::error::ErrorKind;

    fn req(name: &str, driver: DriverKind, sources: &[&str]) -> PoolCreate {
        PoolCreate {
            name: name.into(),
            driver,
            sources: sources.iter().map(|s| s.to_string()).collect(),
            size: None,
            members: None,
            level: None,
            chunk_size: None,
            replica: None,
            adopt: None,
            description: String::new(),
            config: Default::default(),
        }
    }

    #[test]
    fn a_replicated_pool_is_a_raid1_of_files_vessel_makes() {
        let replicated = |level: &str, sources: &[&str], size: Option<u64>| PoolCreate {
            level: Some(level.into()),
            size,
            replica: Some("m1".into()),
            ..req("rp", DriverKind::Raid, sources)
        };
        check_pool_request(&replicated("raid1", &[], Some(64 << 20)), &[]).unwrap();
        for (bad, why) in [
            (replicated("raid5", &[], Some(64 << 20)), "raid1"),
            (replicated("raid1", &["/srv/a"], Some(64 << 20)), "--size"),
            (replicated("raid1", &[], None), "--size"),
            (
                PoolCreate {
                    replica: Some("m1".into()),
                    ..req("rp", DriverKind::Dir, &[])
                },
                "raid1",
            ),
        ] {
            let e = check_pool_request(&bad, &[]).unwrap_err();
            assert_eq!(e.kind, ErrorKind::Invalid, "{}", e.message);
            assert!(e.message.contains(why), "{}", e.message);
        }
    }

    #[test]
    fn pool_requests_are_checked_against_the_other_pools() {
        let pools = [pool("local", DriverKind::Dir, &["/srv/local"])];
        check_pool_request(&req("data", DriverKind::Dir, &["/srv/data"]), &pools).unwrap();
        check_pool_request(&req("data", DriverKind::Dir, &[]), &pools).unwrap();
        let mut sized = req("fast", DriverKind::Btrfs, &[]);
        sized.size = Some(1 << 30);
        check_pool_request(&sized, &pools).unwrap();
        let mut raid_level = req("data", DriverKind::Dir, &[]);
        raid_level.level = Some("raid1".into());
        let mut chunky = req("fast", DriverKind::Btrfs, &["/dev/x"]);
        chunky.chunk_size = Some(1 << 16);
        for (r, kind, want) in [
            (
                req("a_b", DriverKind::Dir, &[]),
                ErrorKind::Invalid,
                "invalid pool name",
            ),
            (
                req("local", DriverKind::Dir, &[]),
                ErrorKind::Conflict,
                "already exists",
            ),
            (
                req("data", DriverKind::Dir, &["srv"]),
                ErrorKind::Invalid,
                "not an absolute",
            ),
            (
                req("data", DriverKind::Dir, &["/srv/local"]),
                ErrorKind::Conflict,
                "another storage pool",
            ),
            (
                req("data", DriverKind::Dir, &["/a", "/b"]),
                ErrorKind::Invalid,
                "one source",
            ),
            (raid_level, ErrorKind::Invalid, "for raid"),
            (
                req("fast", DriverKind::Btrfs, &[]),
                ErrorKind::Invalid,
                "needs sources",
            ),
            (chunky, ErrorKind::Invalid, "for raid pools"),
            (
                req("r", DriverKind::Raid, &["/a", "/b"]),
                ErrorKind::Invalid,
                "level",
            ),
        ] {
            let e = check_pool_request(&r, &pools).unwrap_err();
            assert_eq!(e.kind, kind, "{e}");
            assert!(e.message.contains(want), "{want:?} not in {e}");
        }
    }

    #[test]
    fn repairs_are_for_raid_members_that_exist() {
        let raid = pool("r", DriverKind::Raid, &["/m0", "/m1", "/m2"]);
        let repair = |action: &str, member: Option<u32>, path: Option<&str>| PoolRepair {
            action: action.into(),
            member,
            path: path.map(str::to_string),
            replica: None,
            rate: None,
            force: false,
        };
        check_repair(&raid, &repair("scrub", None, None)).unwrap();
        check_repair(&raid, &repair("fail", Some(2), None)).unwrap();
        check_repair(&raid, &repair("replace", Some(0), Some("/new"))).unwrap();
        for (r, want) in [
            (repair("fail", None, None), "needs a member slot"),
            (
                repair("fail", Some(3), None),
                "members 0..2; there is no member 3",
            ),
            (repair("replace", Some(1), None), "new member's path"),
            (
                repair("replace", Some(1), Some("new")),
                "not an absolute path",
            ),
            (repair("grow", None, None), "unknown repair action"),
        ] {
            let e = check_repair(&raid, &r).unwrap_err();
            assert!(e.message.contains(want), "{want:?} not in {e}");
        }
        let dir = pool("d", DriverKind::Dir, &["/srv"]);
        let e = check_repair(&dir, &repair("scrub", None, None)).unwrap_err();
        assert!(e.message.contains("is a dir pool"), "{e}");

        // A far copy in place of a member: raid1 of two, none yet, no path besides.
        let far = |path: Option<&str>| PoolRepair {
            replica: Some("m2".into()),
            ..repair("replace", Some(0), path)
        };
        let mut mirror = pool("rp", DriverKind::Raid, &["/lost", "/m1"]);
        mirror.level = Some("raid1".into());
        check_repair(&mirror, &far(None)).unwrap();
        let e = check_repair(&mirror, &far(Some("/new"))).unwrap_err();
        assert!(e.message.contains("not both"), "{e}");
        let e = check_repair(&raid, &far(None)).unwrap_err();
        assert!(e.message.contains("raid1 pools of two"), "{e}");
        mirror.replica = Some(super::super::replicas::ReplicaRef {
            member: "m1".into(),
            name: "m0.rp".into(),
            slot: 1,
            incomplete: false,
            id: String::new(),
        });
        let e = check_repair(&mirror, &far(None)).unwrap_err();
        assert!(e.message.contains("far copy on m1 already"), "{e}");
    }
}
