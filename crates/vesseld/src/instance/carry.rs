//! An instance's volumes when it moves to another member or is deleted with them: the
//! volumes attached to it alone travel in its move's archive (`volumes`, and each volume's
//! data as `volume.N`: a block volume as a disk, a filesystem volume as a file tree), are
//! made and filled on the member it moves to and attached there as they were, and are
//! deleted here once the move is done.

use std::path::Path;

use vessel_api::Instance;
use vessel_backup::{Index, Store, Writer};

use super::InstanceService;
use crate::backup::error as store_error;
use crate::error::{Error, Result};
use crate::operations::OpHandle;
use crate::storage::{CarriedData, CarriedVolume};

/// The archive listing the volumes a move carries.
const CARRIED: &str = "volumes";

/// The volumes a move's backup carries (none: nothing).
pub fn carried_in(store: &Store, index: &Index) -> Result<Vec<CarriedVolume>> {
    if index.archive(CARRIED).is_err() {
        return Ok(Vec::new());
    }
    let raw = store.read_blob(index, CARRIED).map_err(store_error)?;
    serde_json::from_slice(&raw).map_err(|e| Error::invalid(format!("the archive's volumes: {e}")))
}

/// The archive of the `i`th carried volume's data.
fn archive_of(i: usize) -> String {
    format!("volume.{i}")
}

impl InstanceService {
    /// The volumes attached to `inst` other than its root disk (pool, name), each attached
    /// to it alone; an error naming one another instance also has.
    pub(super) fn own_volumes(&self, inst: &Instance) -> Result<Vec<(String, String)>> {
        let root = crate::storage::root_volume(&inst.name);
        let all = self.storage.volumes_by_instance()?;
        let mut out = Vec::new();
        for v in all.get(&inst.name).into_iter().flatten() {
            if v.volume == root {
                continue;
            }
            let others: Vec<&str> = all
                .iter()
                .filter(|(i, vs)| {
                    *i != &inst.name && vs.iter().any(|w| w.pool == v.pool && w.volume == v.volume)
                })
                .map(|(i, _)| crate::project::split(i).1)
                .collect();
            if !others.is_empty() {
                return Err(Error::conflict(format!(
                    "volume {} is also attached to {}: detach it there first, or delete {} \
                     without its volumes",
                    crate::project::split(&v.volume).1,
                    others.join(", "),
                    crate::project::split(&inst.name).1
                )));
            }
            out.push((v.pool.clone(), v.volume.clone()));
        }
        Ok(out)
    }

    /// Deletes `volumes` (pool, name), detached already; an error names those left.
    pub(super) async fn drop_volumes(&self, volumes: &[(String, String)]) -> Result<()> {
        let left = self
            .each_volume(
                volumes.to_vec(),
                |(pool, name)| (pool.clone(), name.clone()),
                |st, (pool, name)| st.volume_delete(pool, name).map(drop),
            )
            .await?;
        if left.is_empty() {
            return Ok(());
        }
        Err(Error::conflict(format!(
            "volume(s) not deleted: {}; delete them with `vessel storage volume delete`",
            left.join("; ")
        )))
    }

    /// Deletes the `carried` volumes here once their instance moved (see
    /// [`crate::storage::StorageService::carried_away`]); an error names those kept.
    pub(super) async fn carried_away(&self, carried: &[CarriedVolume]) -> Result<()> {
        let left = self
            .each_volume(
                carried.to_vec(),
                |c| (c.pool.clone(), c.name.clone()),
                |st, c| st.carried_away(c),
            )
            .await?;
        if left.is_empty() {
            return Ok(());
        }
        Err(Error::conflict(format!(
            "volume(s) still here: {}; delete them with `vessel storage volume delete` once \
             no longer needed",
            left.join("; ")
        )))
    }

    /// Runs `delete` on each of `items` (volume `key`: pool, name) off the async runtime:
    /// the failures, each as `POOL/NAME: why`.
    async fn each_volume<T: Send + 'static>(
        &self,
        items: Vec<T>,
        key: fn(&T) -> (String, String),
        delete: fn(&crate::storage::StorageService, &T) -> Result<()>,
    ) -> Result<Vec<String>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let st = self.storage.clone();
        tokio::task::spawn_blocking(move || {
            items
                .iter()
                .filter_map(|item| {
                    delete(&st, item).err().map(|e| {
                        let (pool, name) = key(item);
                        let shown = crate::project::split(&name).1;
                        format!("{pool}/{shown}: {}", e.message)
                    })
                })
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| Error::internal(format!("volume task: {e}")))
    }

    /// The volumes that travel with `inst` when it moves (every volume attached to it but
    /// its root disk), each with where its data is; an error naming one that cannot.
    pub(super) fn carried(&self, inst: &Instance) -> Result<Vec<(CarriedVolume, CarriedData)>> {
        let root = crate::storage::root_volume(&inst.name);
        let all = self.storage.volumes_by_instance()?;
        all.get(&inst.name)
            .into_iter()
            .flatten()
            .filter(|v| v.volume != root)
            .map(|v| {
                self.storage
                    .carry_out(&v.pool, &v.volume, &inst.name)
                    .map_err(|e| {
                        Error::conflict(format!(
                            "instance {} cannot move with its volumes: {}",
                            crate::project::split(&inst.name).1,
                            e.message
                        ))
                    })
            })
            .collect()
    }

    /// Adds the `carried` volumes to a move's backup (the instance is stopped).
    pub(super) fn backup_carried(
        &self,
        carried: &[(CarriedVolume, CarriedData)],
        w: &mut Writer,
        op: &OpHandle,
    ) -> Result<()> {
        let list: Vec<&CarriedVolume> = carried.iter().map(|(c, _)| c).collect();
        w.blob(
            CARRIED,
            &serde_json::to_vec(&list).expect("carried volumes serialize"),
        )
        .map_err(store_error)?;
        for (i, (c, data)) in carried.iter().enumerate() {
            let what = format!("reading volume {}", crate::project::split(&c.name).1);
            op.progress(Some(90), &what);
            let mut p = |_| {};
            match data {
                CarriedData::File(f) => w.block(&archive_of(i), f, &mut p),
                CarriedData::Device(dev) => {
                    let input = vessel_nbd::DeviceReader::new(dev.as_ref());
                    w.block_from(&archive_of(i), input, Path::new(&c.name), &mut p)
                }
                CarriedData::Tree(d) => w.tree(&archive_of(i), d, &mut p),
            }
            .map_err(store_error)?;
        }
        Ok(())
    }

    /// Makes, fills and attaches here the volumes a move's backup carries for `inst` (none:
    /// nothing); on a failure the ones made are deleted again.
    pub(super) fn restore_carried(
        &self,
        store: &Store,
        index: &Index,
        inst: &Instance,
        op: &OpHandle,
    ) -> Result<()> {
        let list = carried_in(store, index)?;
        if list.is_empty() {
            return Ok(());
        }
        let project = crate::project::split(&inst.name).0;
        let mut made: Vec<&CarriedVolume> = Vec::new();
        let r = (|| -> Result<()> {
            for (i, c) in list.iter().enumerate() {
                crate::name::validate_qualified("volume", &c.name)?;
                if crate::project::split(&c.name).0 != project {
                    return Err(Error::invalid(format!(
                        "the archive carries volume {} of another project",
                        c.name
                    )));
                }
                let shown = crate::project::split(&c.name).1;
                if c.content == vessel_api::VolumeContent::Block {
                    let packed = index.archive(&archive_of(i)).map_err(store_error)?.size;
                    if packed != c.size {
                        return Err(Error::invalid(format!(
                            "the archive holds {packed} bytes of volume {shown}, not its {}",
                            c.size
                        )));
                    }
                }
                op.progress(Some(85), &format!("making volume {shown}"));
                let data = self.storage.carry_in(c)?;
                made.push(c);
                let mut p = |_| {};
                match data {
                    CarriedData::File(f) => store
                        .write_block_into_zeroed(index, &archive_of(i), &f, &mut p)
                        .map_err(store_error)?,
                    // A new thin volume reads as zeros: only what holds data is written.
                    CarriedData::Device(dev) => {
                        let mut write = |at: u64, data: &[u8]| {
                            dev.write_at(data, at).map_err(std::io::Error::other)
                        };
                        let what = Path::new(&c.name);
                        store
                            .write_block_with(index, &archive_of(i), true, &mut write, what, &mut p)
                            .map_err(store_error)?;
                        dev.flush()
                            .map_err(|e| Error::internal(format!("volume {shown}: {e}")))?;
                    }
                    CarriedData::Tree(d) => fill_tree(store, index, &archive_of(i), &d)?,
                }
                self.storage
                    .attach(&c.pool, &c.name, &inst.name, inst.instance_type, &c.path)?;
            }
            Ok(())
        })();
        if r.is_err() {
            for c in made {
                let _ = self.storage.detach(&c.pool, &c.name, &inst.name);
                if let Err(e) = self.storage.volume_delete(&c.pool, &c.name) {
                    tracing::warn!(volume = %c.name, pool = %c.pool, error = %e, "a carried volume not deleted after a failed move");
                }
            }
        }
        r
    }
}

/// Restores tree archive `name` into the existing, empty directory `dir` (a volume's: it
/// may be a mount point or a subvolume, which stays), its top directory's owner and mode
/// included.
fn fill_tree(store: &Store, index: &Index, name: &str, dir: &Path) -> Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let io = |p: &Path, e: std::io::Error| Error::internal(format!("{}: {e}", p.display()));
    let staging = dir.join(format!(
        ".vessel-carried-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    ));
    store
        .restore_tree(index, name, &staging, &mut |_| {})
        .map_err(store_error)?;
    let entries = std::fs::read_dir(&staging).map_err(|e| io(&staging, e))?;
    for e in entries {
        let e = e.map_err(|e| io(&staging, e))?;
        let to = dir.join(e.file_name());
        std::fs::rename(e.path(), &to).map_err(|err| io(&to, err))?;
    }
    let top = std::fs::metadata(&staging).map_err(|e| io(&staging, e))?;
    std::os::unix::fs::chown(dir, Some(top.uid()), Some(top.gid())).map_err(|e| io(dir, e))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(top.mode() & 0o7777))
        .map_err(|e| io(dir, e))?;
    std::fs::remove_dir(&staging).map_err(|e| io(&staging, e))
}
