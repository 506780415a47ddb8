//! The `raid` pool: Vessel's own RAID engine over member files or disks, carved into
//! thin-provisioned block volumes. Snapshots are thin snapshots named `VOLUME.SNAPSHOT`
//! inside the thin pool; clones share extents with their origin until written.
//!
//! The array and the thin pool live inside the daemon. Volumes reach QEMU and other clients
//! over NBD (a private unix socket per VM disk, or an export).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use vessel_api::{PoolCreate, PoolMember, ScrubResult, VolumeContent};
use vessel_nbd::{BlockDevice, DeviceError, Extent};
use vessel_raid::thin::{ThinError, ThinOptions, ThinPool, Volume};
use vessel_raid::{MemberIo, RaidArray, RaidConfig, RaidError, RaidLevel, SlotState};

use super::driver::{BlockAccess, PoolDriver, Progress};
use crate::error::{chain, Error, Result};

/// A raid pool: the array and the thin pool on it.
pub struct RaidPool {
    array: Arc<RaidArray>,
    thin: Arc<ThinPool>,
    rebuild: AtomicU8,
}

/// Parses `raid0`..`raid6` (or `0`, `1`, `5`, `6`).
fn level(s: &str) -> Result<RaidLevel> {
    Ok(match s.trim_start_matches("raid") {
        "0" => RaidLevel::Raid0,
        "1" => RaidLevel::Raid1,
        "5" => RaidLevel::Raid5,
        "6" => RaidLevel::Raid6,
        _ => {
            return Err(Error::invalid(format!(
                "unknown raid level {s:?}: use raid0, raid1, raid5 or raid6"
            )))
        }
    })
}

/// The config key saying how the pool reaches its member files: `none` (the default,
/// `O_DIRECT`: no second copy in the host's memory, for VM disks that cache themselves, as
/// QEMU's `cache=none`) or `writeback` (through the host's page cache, as QEMU's
/// `cache=writeback`: recent data read from memory, writes durable at the next flush as
/// always). Set when the pool is created.
pub(crate) const CACHE_KEY: &str = "raid.cache";

/// How the pool's members are reached, from its config.
pub(crate) fn member_io(config: &std::collections::BTreeMap<String, String>) -> Result<MemberIo> {
    match config.get(CACHE_KEY).map(String::as_str) {
        None | Some("none") => Ok(MemberIo::Direct),
        Some("writeback") => Ok(MemberIo::Cached),
        Some(other) => Err(Error::invalid(format!(
            "{CACHE_KEY} {other:?} is not a cache mode: use none (members opened with O_DIRECT, \
             the default) or writeback (through the host's page cache)"
        ))),
    }
}

/// Checks the request's shape before anything is created.
pub fn check_request(req: &PoolCreate) -> Result<()> {
    member_io(&req.config)?;
    // Adopted from a far copy: its shape is the copy's (checked by the caller).
    if req.adopt.is_some() {
        return Ok(());
    }
    let lvl = level(req.level.as_deref().ok_or_else(|| {
        Error::invalid("a raid pool needs a level (--level raid0|raid1|raid5|raid6)")
    })?)?;
    let n = if req.sources.is_empty() {
        if req.size.is_none() {
            return Err(Error::invalid(
                "a raid pool needs member files or disks (--source, repeatable), or --members N \
                 and --size BYTES for member files Vessel creates",
            ));
        }
        // A replicated pool: one file here, its far copy on another member.
        let implied = req.replica.as_ref().map(|_| 2);
        req.members.or(implied).ok_or_else(|| {
            Error::invalid("give --members N with --size, or the members themselves with --source")
        })? as usize
    } else {
        if req.members.is_some_and(|m| m as usize != req.sources.len()) {
            return Err(Error::invalid(
                "--members disagrees with the number of --source members",
            ));
        }
        req.sources.len()
    };
    let min = match lvl {
        RaidLevel::Raid0 | RaidLevel::Raid1 => 2,
        RaidLevel::Raid5 => 3,
        RaidLevel::Raid6 => 4,
    };
    if n < min {
        return Err(Error::invalid(format!(
            "{} needs at least {min} members, not {n}",
            req.level.as_deref().unwrap_or_default()
        )));
    }
    if let Some(c) = req.chunk_size {
        if !c.is_power_of_two() || !(4096..=(16 << 20)).contains(&c) {
            return Err(Error::invalid(format!(
                "chunk size {c} is not a power of two between 4 KiB and 16 MiB"
            )));
        }
    }
    for s in &req.sources {
        if !Path::new(s).exists() {
            return Err(Error::invalid(format!(
                "member {s} does not exist; create the file (e.g. truncate -s 1G {s}) or give a \
                 disk"
            )));
        }
    }
    Ok(())
}

/// Whether a member can be opened now: a file that exists, or an NBD export (a far copy)
/// that answers.
fn reachable(p: &Path) -> bool {
    match vessel_raid::member::parse_nbd_uri(p) {
        Some((export, socket)) => {
            vessel_nbd::NbdClient::connect_unix(&socket, &export, std::time::Duration::from_secs(2))
                .is_ok()
        }
        None => p.exists(),
    }
}

fn raid_err(e: RaidError) -> Error {
    match e {
        RaidError::Io { .. } | RaidError::DataLoss { .. } => Error::internal(chain(&e)),
        _ => Error::invalid(chain(&e)),
    }
}

fn thin_err(e: ThinError) -> Error {
    match e {
        ThinError::NameInUse(_) => Error::conflict(chain(&e)),
        ThinError::NoSuchVolume(_) => Error::not_found(chain(&e)),
        ThinError::NoSpace { .. }
        | ThinError::InvalidName { .. }
        | ThinError::InvalidSize { .. }
        | ThinError::MetadataFull { .. }
        | ThinError::TooManyVolumes { .. } => Error::invalid(chain(&e)),
        _ => Error::internal(chain(&e)),
    }
}

fn snap_name(vol: &str, snap: &str) -> Result<String> {
    // Volume names have no '.', so `VOLUME.SNAPSHOT` cannot clash with a volume.
    let n = format!("{vol}.{snap}");
    if n.len() > vessel_raid::thin::MAX_NAME {
        return Err(Error::invalid(format!(
            "on raid pools a volume and snapshot name together take at most {} characters",
            vessel_raid::thin::MAX_NAME - 1
        )));
    }
    Ok(n)
}

impl RaidPool {
    /// Writes a new array over `sources` and an empty thin pool on it.
    pub fn create(sources: &[String], req: &PoolCreate) -> Result<Self> {
        let lvl = level(req.level.as_deref().unwrap_or_default())?;
        let mut config = RaidConfig::new(lvl).member_io(member_io(&req.config)?);
        if let Some(c) = req.chunk_size {
            config = config.chunk_size(c);
        }
        let paths: Vec<PathBuf> = sources.iter().map(PathBuf::from).collect();
        let array = Arc::new(RaidArray::create(&paths, &config).map_err(raid_err)?);
        let thin = ThinPool::format(array.clone(), &ThinOptions::default()).map_err(thin_err)?;
        Ok(Self {
            array,
            thin: Arc::new(thin),
            rebuild: AtomicU8::new(u8::MAX),
        })
    }

    /// Assembles the array (degraded when members are missing, as far as the level allows)
    /// and opens its thin pool; `config` is the pool's (its `raid.cache`).
    pub fn open(
        sources: &[String],
        config: &std::collections::BTreeMap<String, String>,
    ) -> Result<Self> {
        let paths: Vec<Option<PathBuf>> = sources
            .iter()
            .map(|s| Some(PathBuf::from(s)).filter(|p| reachable(p)))
            .collect();
        let array = RaidArray::open_with(&paths, member_io(config)?).map_err(raid_err)?;
        let array = Arc::new(array);
        let thin = ThinPool::open(array.clone()).map_err(thin_err)?;
        Ok(Self {
            array,
            thin: Arc::new(thin),
            rebuild: AtomicU8::new(u8::MAX),
        })
    }

    /// Rebuilds every member marked rebuilding, from its checkpoint.
    fn run_rebuild(&self, rate: Option<u64>, progress: Progress) -> Result<()> {
        self.rebuild.store(0, Ordering::Relaxed);
        let options = vessel_raid::RebuildOptions {
            max_bytes_per_sec: rate,
        };
        let r = self.array.rebuild_with(&options, |done, total| {
            let p = (done * 100).checked_div(total).unwrap_or(100).min(100) as u8;
            self.rebuild.store(p, Ordering::Relaxed);
            progress(p, "rebuilding");
        });
        self.rebuild.store(u8::MAX, Ordering::Relaxed);
        r.map_err(raid_err)
    }

    fn volume(&self, name: &str) -> Result<Volume> {
        self.thin.volume(name).map_err(thin_err)
    }
}

impl PoolDriver for RaidPool {
    fn capacity(&self) -> Result<(u64, u64)> {
        let u = self.thin.usage();
        Ok((u.total, u.used))
    }

    fn create(&self, name: &str, _content: VolumeContent, size: Option<u64>) -> Result<()> {
        self.thin
            .create_volume(name, size.unwrap_or(0), "block")
            .map_err(thin_err)
    }

    fn clone_volume(
        &self,
        source: &str,
        snap: Option<&str>,
        name: &str,
        _content: VolumeContent,
    ) -> Result<()> {
        let from = match snap {
            Some(s) => snap_name(source, s)?,
            None => source.to_string(),
        };
        self.thin.clone_volume(&from, name).map_err(thin_err)
    }

    fn delete(&self, name: &str, _content: VolumeContent) -> Result<()> {
        self.thin.delete(name).map_err(thin_err)
    }

    fn resize(&self, name: &str, _content: VolumeContent, size: u64) -> Result<()> {
        self.thin.resize(name, size).map_err(thin_err)
    }

    fn snapshot(&self, name: &str, _content: VolumeContent, snap: &str) -> Result<()> {
        self.thin
            .snapshot(name, &snap_name(name, snap)?)
            .map_err(thin_err)
    }

    fn delete_snapshot(&self, name: &str, _content: VolumeContent, snap: &str) -> Result<()> {
        match self.thin.delete(&snap_name(name, snap)?) {
            Ok(()) | Err(ThinError::NoSuchVolume(_)) => Ok(()),
            Err(e) => Err(thin_err(e)),
        }
    }

    fn restore(&self, name: &str, _content: VolumeContent, snap: &str) -> Result<()> {
        self.thin
            .restore(name, &snap_name(name, snap)?)
            .map_err(thin_err)
    }

    fn used(&self, name: &str, _content: VolumeContent) -> Result<u64> {
        Ok(self
            .thin
            .list()
            .into_iter()
            .find(|v| v.name == name)
            .map_or(0, |v| v.allocated_bytes))
    }

    fn fs_path(&self, _name: &str) -> Result<PathBuf> {
        Err(Error::invalid("raid pools hold block volumes only"))
    }

    fn block(&self, name: &str) -> Result<BlockAccess> {
        Ok(BlockAccess::Device(Arc::new(ThinDevice(
            self.volume(name)?,
        ))))
    }

    fn health(&self) -> String {
        if self.array.is_unavailable() {
            "unavailable".into()
        } else if self.array.is_degraded() {
            "degraded".into()
        } else {
            "online".into()
        }
    }

    fn members(&self) -> Vec<PoolMember> {
        self.array
            .status()
            .into_iter()
            .map(|m| PoolMember {
                index: m.index as u32,
                path: m.path.map(|p| p.display().to_string()).unwrap_or_default(),
                state: match m.state {
                    SlotState::Active => "active",
                    SlotState::Failed => "failed",
                    SlotState::Rebuilding => "rebuilding",
                }
                .into(),
                checksum_errors: m.checksum_errors,
            })
            .collect()
    }

    fn rebuild_percent(&self) -> Option<u8> {
        let p = self.rebuild.load(Ordering::Relaxed);
        (p != u8::MAX).then_some(p)
    }

    fn stored_volumes(&self) -> Vec<(String, u64, bool)> {
        self.thin
            .list()
            .into_iter()
            .map(|v| (v.name, v.size, v.read_only))
            .collect()
    }

    fn readd_member(&self, member: u32, path: &str) -> Result<()> {
        self.array
            .readd_member(member as usize, path)
            .map_err(raid_err)?;
        self.run_rebuild(None, &|_, _| {})?;
        self.array.flush().map_err(raid_err)
    }

    fn on_member_failed(&self, hook: vessel_raid::array::FailureHook) {
        self.array.on_member_failed(hook);
    }

    fn fail_member(&self, member: u32, force: bool) -> Result<()> {
        let m = member as usize;
        if force {
            self.array.fail_member_forced(m)
        } else {
            self.array.fail_member(m)
        }
        .map_err(raid_err)
    }

    fn replace_member(
        &self,
        member: u32,
        path: &Path,
        rate: Option<u64>,
        placed: &dyn Fn() -> Result<()>,
        progress: Progress,
    ) -> Result<()> {
        // A far copy (an NBD URI) is made by its keeper; a file that is not there, here.
        if !path.exists() && vessel_raid::member::parse_nbd_uri(path).is_none() {
            let size = self
                .array
                .status()
                .iter()
                .filter_map(|m| m.path.as_ref())
                .filter_map(|p| std::fs::metadata(p).ok())
                .map(|m| m.len())
                .max()
                .unwrap_or(0)
                // Members that are not files here (a far copy over NBD): what a member needs.
                .max(self.array.geometry().member_bytes());
            let f = std::fs::File::create(path)
                .map_err(|e| Error::internal(format!("creating {}: {e}", path.display())))?;
            f.set_len(size)
                .map_err(|e| Error::internal(format!("sizing {}: {e}", path.display())))?;
        }
        self.array
            .replace_member(member as usize, path)
            .map_err(raid_err)?;
        placed()?;
        self.run_rebuild(rate, progress)
    }

    fn resume_rebuild(&self) -> Result<bool> {
        if !self
            .array
            .status()
            .iter()
            .any(|m| m.state == SlotState::Rebuilding)
        {
            return Ok(false);
        }
        self.run_rebuild(None, &|_, _| {})?;
        Ok(true)
    }

    fn scrub(&self, progress: Progress) -> Result<ScrubResult> {
        progress(0, "scrubbing");
        let r = self.array.scrub(true).map_err(raid_err)?;
        let mut bad: Vec<u32> = r
            .mismatches
            .iter()
            .flat_map(|m| m.members.iter().map(|&i| i as u32))
            .collect();
        bad.sort_unstable();
        bad.dedup();
        Ok(ScrubResult {
            finished_at: crate::clock::now(),
            rows_checked: r.rows_checked,
            mismatches: r.mismatches.len() as u64,
            repaired: r.mismatches.iter().filter(|m| m.repaired).count() as u64,
            bad_members: bad,
        })
    }

    fn close(&self) -> Result<()> {
        self.thin.flush().map_err(thin_err)
    }

    fn quiesce(&self) -> Result<()> {
        self.thin.flush().map_err(thin_err)?;
        // The write-intent bits of regions nothing writes now cleared, so the next
        // assembly has nothing to resync.
        self.array.settle().map_err(raid_err)
    }
}

/// A thin volume as an NBD block device.
struct ThinDevice(Volume);

fn dev_err(e: ThinError) -> DeviceError {
    match e {
        ThinError::OutOfRange { .. } => DeviceError::Io(io::Error::from_raw_os_error(libc::EINVAL)),
        ThinError::ReadOnly(_) => DeviceError::ReadOnly,
        ThinError::NoSpace { .. } | ThinError::MetadataFull { .. } => {
            DeviceError::Io(io::Error::from_raw_os_error(libc::ENOSPC))
        }
        e => DeviceError::Io(io::Error::other(chain(&e))),
    }
}

impl BlockDevice for ThinDevice {
    fn size(&self) -> u64 {
        self.0.size().unwrap_or(0)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::result::Result<(), DeviceError> {
        self.0.read_at(offset, buf).map_err(dev_err)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> std::result::Result<(), DeviceError> {
        self.0.write_at(offset, buf).map_err(dev_err)
    }

    fn flush(&self) -> std::result::Result<(), DeviceError> {
        self.0.flush().map_err(dev_err)
    }

    fn trim(&self, offset: u64, len: u64) -> std::result::Result<(), DeviceError> {
        self.0.discard(offset, len).map_err(dev_err)
    }

    fn write_zeroes(
        &self,
        offset: u64,
        len: u64,
        _may_trim: bool,
    ) -> std::result::Result<(), DeviceError> {
        self.0.write_zeroes(offset, len).map_err(dev_err)
    }

    fn block_status(&self, offset: u64, len: u64) -> std::result::Result<Vec<Extent>, DeviceError> {
        Ok(self
            .0
            .extents(offset, len)
            .map_err(dev_err)?
            .into_iter()
            .map(|(l, allocated)| {
                if allocated {
                    Extent::data(l)
                } else {
                    Extent::hole(l)
                }
            })
            .collect())
    }
}
