//! Cgroup management for Vessel instances: one [`CgroupManager`] trait with a v1 (legacy or
//! hybrid hierarchy) and a v2 (unified hierarchy) backend, chosen at run time by [`detect`].
//!
//! Paths given to [`manager`] are relative to the root of each hierarchy, e.g. `vessel/c1`.
//!
//! ```no_run
//! # fn main() -> vessel_cgroups::Result<()> {
//! let cg = vessel_cgroups::manager("vessel/c1")?;
//! cg.create()?;
//! cg.add_process(1234)?;
//! // ... later, when the instance stops:
//! cg.destroy()?;
//! # Ok(())
//! # }
//! ```
//!
//! `docs/cgroups.md` in the repository maps each OCI setting to its v1 and v2 files.

#![deny(missing_docs)]

use std::path::PathBuf;

use oci_spec::runtime::LinuxResources;

pub mod delegate;
mod detect;
mod fs;
mod resources;
mod v1;
mod v2;

pub use detect::{v1_mounts, CGROUP_ROOT};
pub use resources::{blkio_weight_to_io_weight, shares_to_weight};
pub use v1::V1Manager;
pub use v2::{V2Manager, V2_CONTROLLERS};

/// Which cgroup layout the host uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum CgroupVersion {
    /// Legacy or hybrid: one hierarchy per controller under `/sys/fs/cgroup/<controller>`.
    V1,
    /// Unified: one hierarchy at /sys/fs/cgroup.
    V2,
}

/// Usage figures read from a cgroup.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct CgroupStats {
    /// Total CPU time, nanoseconds.
    pub cpu_usage_ns: u64,
    /// Memory in use, bytes.
    pub memory_usage_bytes: u64,
    /// Highest memory use seen, bytes, where the kernel records it.
    pub memory_peak_bytes: Option<u64>,
    /// OOM kills inside the cgroup.
    pub oom_kills: u64,
    /// Processes and threads.
    pub pids: u64,
    /// Bytes read from block devices (v1 `blkio.throttle.io_service_bytes`, v2 `io.stat`).
    pub io_read_bytes: u64,
    /// Bytes written to block devices.
    pub io_write_bytes: u64,
}

/// Errors of cgroup management.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// A cgroup file or directory could not be read or written.
    #[error("cgroup {path}: {op} failed")]
    Io {
        /// File or directory.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A limit has a value the kernel or Vessel does not accept.
    #[error("invalid limit: {0}")]
    InvalidLimit(String),
    /// The host lacks what is needed.
    #[error("{0}")]
    Unsupported(String),
}

/// Result of cgroup operations.
pub type Result<T> = std::result::Result<T, CgroupError>;

/// One instance's cgroup, in whichever hierarchy the host has.
pub trait CgroupManager: Send + Sync + std::fmt::Debug {
    /// Which backend this is.
    fn version(&self) -> CgroupVersion;
    /// Creates the cgroup (and parents) if missing. Idempotent.
    ///
    /// v1: one directory in each controller hierarchy the host mounts, and in the
    /// `name=systemd` and hybrid cgroup2 hierarchies where the host has them (for placement
    /// only, as runc does: systemd in a container expects to find itself there); every cpuset
    /// directory created on the way gets its parent's cpus and mems (a new v1 cpuset has
    /// none). v2: the
    /// cpuset, cpu, io, memory and pids controllers that each ancestor offers are enabled in
    /// its `cgroup.subtree_control`.
    fn create(&self) -> Result<()>;
    /// Applies cpu, cpuset, memory/swap, pids and block-io limits from an OCI resources block
    /// (v1 also applies device rules).
    ///
    /// The whole block is checked before anything is written: a value out of range is
    /// [`CgroupError::InvalidLimit`] and a setting the host cannot honour (no swap accounting,
    /// a controller missing) is [`CgroupError::Unsupported`], both leaving the cgroup as it was.
    /// A value the kernel itself refuses while writing is also `InvalidLimit`. Following runc,
    /// 0 leaves a setting as it is and -1 lifts a limit.
    fn apply(&self, resources: &LinuxResources) -> Result<()>;
    /// Moves a process (all its threads) into the cgroup, in every hierarchy. The cgroup must
    /// exist.
    fn add_process(&self, pid: i32) -> Result<()>;
    /// Pids of every process in the cgroup and in cgroups below it, sorted, as seen from this
    /// process's pid namespace. An error if the cgroup does not exist.
    fn pids(&self) -> Result<Vec<i32>>;
    /// Freezes every process; returns once the kernel reports the cgroup frozen (v1
    /// `freezer.state` reads `FROZEN`, v2 `cgroup.events` shows `frozen 1`). Gives up after 5 s,
    /// thawing again, with an error.
    fn freeze(&self) -> Result<()>;
    /// Thaws a frozen cgroup.
    fn thaw(&self) -> Result<()>;
    /// Whether the cgroup is frozen or being frozen.
    fn is_frozen(&self) -> Result<bool>;
    /// Usage figures. Figures of a controller the host lacks read as 0 (or `None`).
    fn stats(&self) -> Result<CgroupStats>;
    /// Whether the cgroup exists (v1: in at least one hierarchy, so that a half-created or
    /// half-removed cgroup still counts and [`CgroupManager::destroy`] still cleans it up).
    fn exists(&self) -> bool;
    /// Kills every process left (thawing first if needed), then removes the cgroup.
    ///
    /// Sends SIGKILL to every process of the cgroup and of cgroups below it until none is
    /// left (at most 10 s, then an error listing the survivors), then removes the cgroup's
    /// directories in every hierarchy, child cgroups first. Succeeds at once when the cgroup
    /// does not exist. Parent directories are left alone.
    fn destroy(&self) -> Result<()>;
    /// The path of the cgroup a process inside it sees as its own (for /proc/self/cgroup checks
    /// and for mounting the container's /sys/fs/cgroup).
    fn path(&self) -> &str;
    /// Delegates the cgroup to `uid`/`gid` (a container's root user): it may then create
    /// cgroups below it and move its processes between them, as systemd does, but not change
    /// the cgroup's own limits (see [`delegate`]). v2: the cgroup's directory. v1: only its
    /// directories in the `name=systemd` hierarchy and a hybrid host's cgroup2, which have no
    /// limits; the controllers' hierarchies stay root's. Returns the directories delegated.
    /// The cgroup must exist.
    fn delegate(&self, uid: u32, gid: u32) -> Result<Vec<PathBuf>>;
}

/// Detects the host's cgroup layout: [`CgroupVersion::V2`] when `/sys/fs/cgroup` is a cgroup2
/// mount (statfs magic `CGROUP2_SUPER_MAGIC`), else [`CgroupVersion::V1`] when
/// `/proc/self/mountinfo` lists v1 controller hierarchies (legacy, or hybrid with an empty
/// cgroup2 at `/sys/fs/cgroup/unified`). `Unsupported` when neither.
pub fn detect() -> Result<CgroupVersion> {
    detect::detect_at(
        std::path::Path::new(CGROUP_ROOT),
        &detect::read_mountinfo()?,
    )
}

/// A manager for the cgroup at `path` (relative to each hierarchy's root, like `vessel/c1`;
/// a leading `/` is allowed, `..` and the root cgroup itself are not) on this host, with the
/// backend [`detect`] picks. Nothing is created until [`CgroupManager::create`].
///
/// The layout is read once per process (mount tables grow with every container, and a
/// daemon asks for managers on every request); a failed read is tried again next time.
pub fn manager(path: &str) -> Result<Box<dyn CgroupManager>> {
    let layout = layout()?;
    Ok(match layout.version {
        CgroupVersion::V1 => Box::new(
            V1Manager::with_mounts(&layout.v1_mounts, path)?.with_hybrid(layout.hybrid.clone()),
        ),
        CgroupVersion::V2 => Box::new(V2Manager::new(path)?),
    })
}

/// The host's cgroup layout: its version, v1 mount points and hybrid cgroup2 hierarchy.
struct Layout {
    version: CgroupVersion,
    v1_mounts: std::collections::BTreeMap<String, PathBuf>,
    hybrid: Option<PathBuf>,
}

/// The host's cgroup layout, read once.
fn layout() -> Result<&'static Layout> {
    static LAYOUT: std::sync::OnceLock<Layout> = std::sync::OnceLock::new();
    if let Some(l) = LAYOUT.get() {
        return Ok(l);
    }
    let info = detect::read_mountinfo()?;
    let version = detect::detect_at(std::path::Path::new(CGROUP_ROOT), &info)?;
    Ok(LAYOUT.get_or_init(|| Layout {
        version,
        v1_mounts: detect::parse_v1_mounts(&info),
        hybrid: match version {
            CgroupVersion::V1 => detect::parse_hybrid_unified(&info),
            CgroupVersion::V2 => None,
        },
    }))
}
