//! Volumes that travel with their instance when it moves to another member: what a volume
//! must be to travel (attached to that instance alone, no snapshots, no export, data this
//! daemon reads itself: a file, a directory tree, or a device it serves), the volume made
//! for it on the member it moves to, and the old one removed once the move is done.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use vessel_api::{VolumeContent, VolumeCreate};

use super::driver::BlockAccess;
use super::StorageService;
use crate::error::{Error, Result};

/// What a move brings into each pool of the member it goes to (what the project's
/// `limits.disk.pool.*` count there): its root disk (`root`: its pool and size) and the
/// volumes it carries; bytes by pool.
pub fn brought<'a>(
    root: Option<(&str, u64)>,
    carried: impl IntoIterator<Item = &'a CarriedVolume>,
) -> std::collections::BTreeMap<String, u64> {
    let mut adding = std::collections::BTreeMap::<String, u64>::new();
    if let Some((pool, size)) = root {
        *adding.entry(pool.to_string()).or_default() += size;
    }
    for c in carried {
        *adding.entry(c.pool.clone()).or_default() += c.size;
    }
    adding
}

/// What a moved instance's root volume counts for in its pool on the member it goes to
/// (`None`: nothing): a container's `limits.disk` (`limit`); a VM's disk (`disk`: its size)
/// or its limit if that is larger.
pub fn root_brought(
    kind: vessel_api::InstanceType,
    disk: Option<u64>,
    limit: Option<u64>,
) -> Option<u64> {
    match kind {
        vessel_api::InstanceType::Container => limit,
        vessel_api::InstanceType::Vm => disk.map(|d| d.max(limit.unwrap_or(0))),
    }
}

/// A volume going along with its instance (the move's archive names each).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CarriedVolume {
    pub pool: String,
    /// Its name as the store keys it (qualified by its project).
    pub name: String,
    pub content: VolumeContent,
    /// Bytes: a block volume's size, a filesystem volume's quota (0: none).
    pub size: u64,
    /// Where the instance has it (a container's mount point; empty for a VM's disk).
    pub path: String,
    /// First id its files are stored with (filesystem volumes).
    #[serde(default)]
    pub id_base: Option<u32>,
    #[serde(default)]
    pub config: std::collections::BTreeMap<String, String>,
    /// When it was made (a VM's extra disks are in this order).
    #[serde(default)]
    pub created_at: String,
}

/// Where a carried volume's data is on this host.
#[derive(Clone)]
pub enum CarriedData {
    /// A block volume's file.
    File(PathBuf),
    /// A block volume the daemon serves itself (a `raid` pool's thin volume).
    Device(std::sync::Arc<dyn vessel_nbd::BlockDevice>),
    /// A filesystem volume's directory.
    Tree(PathBuf),
}

/// Where volume `name` (of `content`) of pool driver `d` has its data; `None` for an RBD
/// image, which this daemon does not read.
fn data_of(
    d: &dyn super::driver::PoolDriver,
    name: &str,
    content: VolumeContent,
) -> Result<Option<CarriedData>> {
    Ok(match content {
        VolumeContent::Filesystem => Some(CarriedData::Tree(d.fs_path(name)?)),
        VolumeContent::Block => match d.block(name)? {
            BlockAccess::File(path) => Some(CarriedData::File(path)),
            BlockAccess::Device(dev) => Some(CarriedData::Device(dev)),
            BlockAccess::Rbd(_) => None,
        },
    })
}

impl StorageService {
    /// Volume `pool`/`name` as it travels with `instance`, and where its data is; an error
    /// saying why it cannot.
    pub fn carry_out(
        &self,
        pool: &str,
        name: &str,
        instance: &str,
    ) -> Result<(CarriedVolume, CarriedData)> {
        let v = self.volume_record(pool, name)?;
        let shown = crate::project::split(name).1;
        let others: Vec<&str> = v
            .attached_to
            .iter()
            .map(|a| a.instance.as_str())
            .filter(|i| *i != instance)
            .collect();
        if !others.is_empty() {
            return Err(Error::conflict(format!(
                "volume {shown} is also attached to {}, which stay on this member: detach it \
                 from them first",
                others.join(", ")
            )));
        }
        let Some(at) = v.attached_to.iter().find(|a| a.instance == instance) else {
            return Err(Error::conflict(format!(
                "volume {shown} is not attached to {instance}"
            )));
        };
        if !v.snapshots.is_empty() {
            return Err(Error::conflict(format!(
                "volume {shown} has snapshots ({}), which do not travel: delete them first",
                v.snapshots.join(", ")
            )));
        }
        let exports = self.exports_of(pool, name)?;
        if !exports.is_empty() {
            return Err(Error::conflict(format!(
                "volume {shown} is exported as {}: delete the export first",
                exports.join(", ")
            )));
        }
        let d = self.driver(pool)?;
        if !super::volumes::clones_of(&self.volume_records(Some(pool))?, name).is_empty()
            && d.clones_depend_on_origin()
        {
            return Err(Error::conflict(format!(
                "volume {shown} has clones that share its data, which stay on this member"
            )));
        }
        let Some(data) = data_of(d.as_ref(), name, v.content)? else {
            return Err(Error::conflict(format!(
                "volume {shown} is an RBD image of ceph pool {pool:?}: it cannot travel with a \
                 move (a ceph pool is one member's); detach it first"
            )));
        };
        Ok((
            CarriedVolume {
                pool: pool.to_string(),
                name: name.to_string(),
                content: v.content,
                size: v.size,
                path: at.path.clone(),
                id_base: v.id_base,
                config: v.config.clone(),
                created_at: v.created_at.clone(),
            },
            data,
        ))
    }

    /// Makes the volume for carried `c` here, empty, and says where its data goes.
    pub fn carry_in(&self, c: &CarriedVolume) -> Result<CarriedData> {
        let req = VolumeCreate {
            name: c.name.clone(),
            content: c.content,
            size: (c.size > 0).then_some(c.size),
            source: None,
            config: c.config.clone(),
        };
        {
            let _g = self.busy();
            self.volume_check(&c.pool, &req).map_err(|e| {
                Error::conflict(format!(
                    "volume {} cannot be made in pool {}: {}",
                    crate::project::split(&c.name).1,
                    c.pool,
                    e.message
                ))
            })?;
            self.volume_create_locked(&c.pool, req, None)?;
        }
        let placed = (|| -> Result<CarriedData> {
            {
                let _g = self.busy();
                let mut v = self.volume_record(&c.pool, &c.name)?;
                v.id_base = c.id_base;
                if !c.created_at.is_empty() {
                    v.created_at = c.created_at.clone();
                }
                self.put_volume(&v)?;
            }
            let d = self.driver(&c.pool)?;
            data_of(d.as_ref(), &c.name, c.content)?.ok_or_else(|| {
                Error::conflict(format!(
                    "pool {} here is a ceph pool; volume {} cannot travel into it",
                    c.pool,
                    crate::project::split(&c.name).1
                ))
            })
        })();
        if placed.is_err() {
            let _ = self.volume_delete(&c.pool, &c.name);
        }
        placed
    }

    /// Deletes carried `c` here once its instance moved: refused, and the volume kept, if
    /// it changed since it was packed (a snapshot taken or a resize meanwhile).
    pub fn carried_away(&self, c: &CarriedVolume) -> Result<()> {
        {
            let _g = self.busy();
            let v = self.volume_record(&c.pool, &c.name)?;
            if !v.snapshots.is_empty() || v.size != c.size {
                return Err(Error::conflict(format!(
                    "volume {} changed during the move (a snapshot or a resize) and is kept \
                     here: the moved instance has it as it was packed",
                    crate::project::split(&c.name).1
                )));
            }
        }
        self.volume_delete(&c.pool, &c.name).map(drop)
    }
}
