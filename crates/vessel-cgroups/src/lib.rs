//! Cgroup management for Vessel instances: one [`CgroupManager`] trait with a v1 (legacy or
//! hybrid hierarchy) and a v2 (unified hierarchy) backend, chosen at run time by [`detect`].
//!
//! Paths given to [`manager`] are relative to the root of each hierarchy, e.g. `vessel/c1`.

use std::path::PathBuf;

use oci_spec::runtime::LinuxResources;

/// Which cgroup layout the host uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum CgroupVersion {
    /// Legacy or hybrid: one hierarchy per controller under /sys/fs/cgroup/<controller>.
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
    /// Creates the cgroup (and parents) if missing.
    fn create(&self) -> Result<()>;
    /// Applies cpu, cpuset, memory/swap, pids and block-io limits from an OCI resources block.
    fn apply(&self, resources: &LinuxResources) -> Result<()>;
    /// Moves a process into the cgroup.
    fn add_process(&self, pid: i32) -> Result<()>;
    /// Pids of every process in the cgroup.
    fn pids(&self) -> Result<Vec<i32>>;
    /// Freezes every process; returns once the kernel reports the cgroup frozen.
    fn freeze(&self) -> Result<()>;
    /// Thaws a frozen cgroup.
    fn thaw(&self) -> Result<()>;
    /// Whether the cgroup is frozen.
    fn is_frozen(&self) -> Result<bool>;
    /// Usage figures.
    fn stats(&self) -> Result<CgroupStats>;
    /// Whether the cgroup exists.
    fn exists(&self) -> bool;
    /// Kills every process left (thawing first if needed), then removes the cgroup.
    fn destroy(&self) -> Result<()>;
    /// The path of the cgroup a process inside it sees as its own (for /proc/self/cgroup checks
    /// and for mounting the container's /sys/fs/cgroup).
    fn path(&self) -> &str;
}

/// Detects the host's cgroup layout.
pub fn detect() -> Result<CgroupVersion> {
    Err(CgroupError::Unsupported("cgroup detection not implemented yet".into()))
}

/// A manager for the cgroup at `path` (relative to each hierarchy's root) on this host.
pub fn manager(path: &str) -> Result<Box<dyn CgroupManager>> {
    Err(CgroupError::Unsupported(format!(
        "no cgroup backend yet for {path}"
    )))
}
