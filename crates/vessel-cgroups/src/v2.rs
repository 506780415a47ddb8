//! The cgroup v2 (unified hierarchy) backend.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};

use oci_spec::runtime::LinuxResources;

use crate::fs::{self, io_err};
use crate::resources::{
    self, blkio_weight_to_io_weight, shares_to_weight, Limit, Plan, Throttle, DEFAULT_CFS_PERIOD_US,
};
use crate::{CgroupError, CgroupManager, CgroupStats, CgroupVersion, Result};

/// Controllers the v2 backend enables for the cgroups it creates, when the host offers them.
pub const V2_CONTROLLERS: [&str; 5] = ["cpuset", "cpu", "io", "memory", "pids"];

/// A cgroup in the unified hierarchy: one directory, `<root>/<path>`.
#[derive(Debug, Clone)]
pub struct V2Manager {
    root: PathBuf,
    rel: String,
    dir: PathBuf,
    cgroup_path: String,
}

impl V2Manager {
    /// The cgroup at `path` (relative to the hierarchy's root) under `/sys/fs/cgroup`.
    pub fn new(path: &str) -> Result<Self> {
        Self::with_root(crate::detect::CGROUP_ROOT, path)
    }

    /// The cgroup at `path` under a cgroup2 hierarchy mounted at `root` (tests point this at a
    /// directory that imitates the layout).
    pub fn with_root(root: impl Into<PathBuf>, path: &str) -> Result<Self> {
        let root = root.into();
        let rel = fs::normalize_path(path)?;
        Ok(Self {
            dir: root.join(&rel),
            cgroup_path: format!("/{rel}"),
            root,
            rel,
        })
    }

    /// The cgroup's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The directories from the root down to the cgroup's parent: every one whose
    /// `cgroup.subtree_control` must enable controllers for the cgroup to have them.
    fn ancestors(&self) -> Vec<PathBuf> {
        let mut dirs = vec![self.root.clone()];
        let parts: Vec<&str> = self.rel.split('/').collect();
        let mut cur = self.root.clone();
        for part in &parts[..parts.len() - 1] {
            cur = cur.join(part);
            dirs.push(cur.clone());
        }
        dirs
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A file of a controller, or `Unsupported` naming what is missing.
    fn require(&self, name: &str, controller: &str) -> Result<PathBuf> {
        let path = self.file(name);
        if path.exists() {
            return Ok(path);
        }
        Err(CgroupError::Unsupported(format!(
            "{} is missing: the {controller} controller is not enabled for cgroup {} \
             (it must be listed in the parent's cgroup.controllers and enabled in its \
             cgroup.subtree_control), or this kernel is too old for it",
            path.display(),
            self.cgroup_path
        )))
    }

    fn ensure_exists(&self, op: &'static str) -> Result<()> {
        if self.dir.is_dir() {
            return Ok(());
        }
        Err(io_err(
            &self.dir,
            op,
            io::Error::new(
                io::ErrorKind::NotFound,
                "the cgroup does not exist; create it first",
            ),
        ))
    }

    /// Turns a checked plan into `(file, value)` writes in the order they must happen, after
    /// checking every file exists. Reads current values where a partial setting needs them.
    pub(crate) fn render(&self, plan: &Plan) -> Result<Vec<(PathBuf, String)>> {
        let mut w: Vec<(PathBuf, String)> = Vec::new();
        if let Some(cpu) = &plan.cpu {
            if cpu.quota.is_some() || cpu.period.is_some() {
                let path = self.require("cpu.max", "cpu")?;
                let current = fs::read_trimmed(&path)?;
                let mut cur = current.split_whitespace();
                let cur_quota = cur.next().unwrap_or("max").to_owned();
                let cur_period = cur.next().and_then(fs::parse_u64);
                let quota = cpu.quota.map(Limit::v2).unwrap_or(cur_quota);
                let period = cpu.period.or(cur_period).unwrap_or(DEFAULT_CFS_PERIOD_US);
                w.push((path, format!("{quota} {period}")));
            }
            if let Some(burst) = cpu.burst {
                let path = self.require("cpu.max.burst", "cpu (with burst, Linux 5.14+)")?;
                w.push((path, burst.to_string()));
            }
            if let Some(shares) = cpu.shares {
                let path = self.require("cpu.weight", "cpu")?;
                w.push((path, shares_to_weight(shares).to_string()));
            }
            if let Some(idle) = cpu.idle {
                let path = self.require("cpu.idle", "cpu (with idle, Linux 5.15+)")?;
                w.push((path, idle.to_string()));
            }
            if cpu.rt_runtime.is_some() || cpu.rt_period.is_some() {
                return Err(CgroupError::Unsupported(
                    "realtime cpu limits (cpu.realtimeRuntime/realtimePeriod) exist only on \
                     cgroup v1; remove them from the spec"
                        .into(),
                ));
            }
            for (list, file, what) in [
                (&cpu.cpus, "cpuset.cpus", "cpuset cpus"),
                (&cpu.mems, "cpuset.mems", "cpuset mems"),
            ] {
                if let Some(list) = list {
                    let path = self.require(file, "cpuset")?;
                    let parent = self.dir.parent().unwrap_or(&self.root);
                    let effective = parent.join(format!("{file}.effective"));
                    if let Ok(available) = std::fs::read_to_string(&effective) {
                        resources::check_subset(list, &available, what)?;
                    }
                    w.push((path, list.clone()));
                }
            }
        }
        if let Some(mem) = &plan.memory {
            if let Some(limit) = mem.limit {
                w.push((self.require("memory.max", "memory")?, limit.v2()));
            }
            match mem.swap {
                None => {}
                Some(Limit::Max) => {
                    // Lifting a limit that cannot exist (no swap accounting) needs nothing.
                    let path = self.file("memory.swap.max");
                    if path.exists() {
                        w.push((path, "max".into()));
                    }
                }
                Some(Limit::Value(total)) => {
                    let Some(Limit::Value(limit)) = mem.limit else {
                        return Err(CgroupError::InvalidLimit(format!(
                            "memory+swap limit {total} needs a memory limit as well on cgroup \
                             v2, which limits swap alone (memory.swap.max = memory+swap - memory)"
                        )));
                    };
                    let path = self.file("memory.swap.max");
                    if !path.exists() {
                        return Err(CgroupError::Unsupported(format!(
                            "a swap limit was asked (memory.swap {total}) but {} is missing: \
                             the kernel has no swap accounting (CONFIG_MEMCG_SWAP, or \
                             swapaccount=0 on the kernel command line); remove memory.swap \
                             from the spec or enable swap accounting",
                            path.display()
                        )));
                    }
                    w.push((path, (total - limit).to_string()));
                }
            }
            if let Some(reservation) = mem.reservation {
                w.push((self.require("memory.low", "memory")?, reservation.v2()));
            }
            if mem.swappiness.is_some() {
                tracing::warn!(cgroup = %self.cgroup_path, "memory swappiness has no cgroup v2 equivalent and is ignored");
            }
            if mem.disable_oom_killer {
                tracing::warn!(cgroup = %self.cgroup_path, "disabling the OOM killer has no cgroup v2 equivalent and is ignored");
            }
        }
        if let Some(pids) = plan.pids {
            w.push((self.require("pids.max", "pids")?, pids.v2()));
        }
        if let Some(bio) = &plan.block_io {
            self.render_io(bio, &mut w)?;
        }
        if !plan.devices.is_empty() {
            tracing::warn!(
                cgroup = %self.cgroup_path,
                rules = plan.devices.len(),
                "device rules are not enforced by the cgroup v2 backend (v2 needs an eBPF \
                 device program); restrict devices through the container's /dev instead"
            );
        }
        for (key, value) in &plan.unified {
            let path = self.file(key);
            if !path.exists() {
                return Err(CgroupError::InvalidLimit(format!(
                    "unified key {key:?}: {} does not exist (unknown file, or its controller \
                     is not enabled for this cgroup)",
                    path.display()
                )));
            }
            w.push((path, value.clone()));
        }
        Ok(w)
    }

    fn render_io(
        &self,
        bio: &resources::BlockIoPlan,
        w: &mut Vec<(PathBuf, String)>,
    ) -> Result<()> {
        let bfq = self.file("io.bfq.weight");
        let weight_file = if bfq.exists() {
            Some((bfq, true))
        } else {
            let plain = self.file("io.weight");
            plain.exists().then_some((plain, false))
        };
        let scale = |weight: u16, is_bfq: bool| {
            if is_bfq {
                u64::from(weight)
            } else {
                blkio_weight_to_io_weight(weight)
            }
        };
        if bio.weight.is_some() || !bio.weight_devices.is_empty() {
            let Some((path, is_bfq)) = weight_file else {
                return Err(CgroupError::Unsupported(format!(
                    "a block io weight was asked but cgroup {} has neither io.bfq.weight nor \
                     io.weight: the io controller is not enabled for it or the block devices' \
                     scheduler has no weights",
                    self.cgroup_path
                )));
            };
            if let Some(weight) = bio.weight {
                w.push((path.clone(), scale(weight, is_bfq).to_string()));
            }
            for (major, minor, weight) in &bio.weight_devices {
                w.push((
                    path.clone(),
                    format!("{major}:{minor} {}", scale(*weight, is_bfq)),
                ));
            }
        }
        let lines = io_max_lines(bio);
        if !lines.is_empty() {
            let path = self.require("io.max", "io")?;
            for line in lines {
                w.push((path.clone(), line));
            }
        }
        Ok(())
    }
}

/// `io.max` lines, one per device: `8:0 rbps=1048576 wbps=max riops=max wiops=100`
/// (only the keys that were given; a rate of 0 lifts that limit).
pub(crate) fn io_max_lines(bio: &resources::BlockIoPlan) -> Vec<String> {
    let mut per_device: BTreeMap<(u64, u64), Vec<(&str, u64)>> = BTreeMap::new();
    let groups: [(&str, &Vec<Throttle>); 4] = [
        ("rbps", &bio.read_bps),
        ("wbps", &bio.write_bps),
        ("riops", &bio.read_iops),
        ("wiops", &bio.write_iops),
    ];
    for (key, list) in groups {
        for t in list {
            per_device
                .entry((t.major, t.minor))
                .or_default()
                .push((key, t.rate));
        }
    }
    per_device
        .into_iter()
        .map(|((major, minor), settings)| {
            let mut line = format!("{major}:{minor}");
            for (key, rate) in settings {
                if rate == 0 {
                    line.push_str(&format!(" {key}=max"));
                } else {
                    line.push_str(&format!(" {key}={rate}"));
                }
            }
            line
        })
        .collect()
}

/// Enables in `dir/cgroup.subtree_control` each of `wanted` that `dir/cgroup.controllers` lists
/// and that is not enabled yet. A controller the kernel refuses is logged and skipped: only a
/// limit that needs it fails, later, with a message saying which file is missing.
pub(crate) fn enable_controllers(dir: &Path, wanted: &[&str]) -> Result<()> {
    let available = fs::read(&dir.join("cgroup.controllers"))?;
    let available: BTreeSet<&str> = available.split_whitespace().collect();
    let control = dir.join("cgroup.subtree_control");
    let enabled = fs::read(&control)?;
    let enabled: BTreeSet<&str> = enabled.split_whitespace().collect();
    let missing: Vec<&str> = wanted
        .iter()
        .copied()
        .filter(|c| available.contains(c) && !enabled.contains(c))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let all: Vec<String> = missing.iter().map(|c| format!("+{c}")).collect();
    if fs::write(&control, &all.join(" ")).is_ok() {
        tracing::debug!(dir = %dir.display(), controllers = ?missing, "enabled controllers");
        return Ok(());
    }
    // One refused controller fails the whole write: enable them one by one instead.
    for controller in missing {
        match fs::write(&control, &format!("+{controller}")) {
            Ok(()) => tracing::debug!(dir = %dir.display(), controller, "enabled controller"),
            Err(e) => tracing::warn!(
                dir = %dir.display(),
                controller,
                error = %e,
                "could not enable controller in cgroup.subtree_control"
            ),
        }
    }
    Ok(())
}

impl CgroupManager for V2Manager {
    fn version(&self) -> CgroupVersion {
        CgroupVersion::V2
    }

    fn create(&self) -> Result<()> {
        let ancestors = self.ancestors();
        for dir in &ancestors {
            fs::mkdir(dir)?;
            enable_controllers(dir, &V2_CONTROLLERS)?;
        }
        if fs::mkdir(&self.dir)? {
            tracing::info!(cgroup = %self.cgroup_path, dir = %self.dir.display(), "created cgroup");
        }
        Ok(())
    }

    fn apply(&self, resources: &LinuxResources) -> Result<()> {
        self.ensure_exists("apply limits")?;
        let plan = resources::plan(resources)?;
        let writes = self.render(&plan)?;
        for (path, value) in &writes {
            fs::write_limit(path, value)?;
        }
        tracing::info!(cgroup = %self.cgroup_path, files = writes.len(), "applied limits");
        Ok(())
    }

    fn add_process(&self, pid: i32) -> Result<()> {
        let procs = self.file("cgroup.procs");
        if pid <= 0 {
            return Err(io_err(
                &procs,
                "add a process",
                io::Error::new(io::ErrorKind::InvalidInput, format!("{pid} is not a pid")),
            ));
        }
        self.ensure_exists("add a process")?;
        fs::write(&procs, &pid.to_string())?;
        tracing::debug!(cgroup = %self.cgroup_path, pid, "added process");
        Ok(())
    }

    fn pids(&self) -> Result<Vec<i32>> {
        self.ensure_exists("list processes")?;
        let mut pids = BTreeSet::new();
        fs::pids_recursive(&self.dir, &mut pids)?;
        Ok(pids.into_iter().collect())
    }

    fn freeze(&self) -> Result<()> {
        self.ensure_exists("freeze")?;
        let control = self.require("cgroup.freeze", "freezer (Linux 5.2+)")?;
        let events = self.file("cgroup.events");
        fs::write(&control, "1")?;
        let frozen = fs::poll_until(fs::FREEZE_TIMEOUT, || {
            Ok(fs::keyed_value(&fs::read(&events)?, "frozen") == Some(1))
        })?;
        if !frozen {
            let _ = fs::write(&control, "0");
            return Err(fs::freeze_timed_out(&events, "not frozen"));
        }
        tracing::info!(cgroup = %self.cgroup_path, "frozen");
        Ok(())
    }

    fn thaw(&self) -> Result<()> {
        self.ensure_exists("thaw")?;
        let control = self.require("cgroup.freeze", "freezer (Linux 5.2+)")?;
        fs::write(&control, "0")?;
        let events = self.file("cgroup.events");
        let thawed = fs::poll_until(fs::FREEZE_TIMEOUT, || {
            Ok(fs::keyed_value(&fs::read(&events)?, "frozen") != Some(1))
        })?;
        if !thawed {
            tracing::warn!(cgroup = %self.cgroup_path, "still frozen after thawing: an ancestor cgroup is frozen");
        }
        tracing::info!(cgroup = %self.cgroup_path, "thawed");
        Ok(())
    }

    fn is_frozen(&self) -> Result<bool> {
        self.ensure_exists("read the freezer state")?;
        let control = self.file("cgroup.freeze");
        if !control.exists() {
            return Ok(false);
        }
        if fs::read_trimmed(&control)? == "1" {
            return Ok(true);
        }
        Ok(fs::keyed_value(&fs::read(&self.file("cgroup.events"))?, "frozen") == Some(1))
    }

    fn stats(&self) -> Result<CgroupStats> {
        self.ensure_exists("read statistics")?;
        let keyed = |file: &str, key: &str| -> Result<u64> {
            let path = self.file(file);
            if !path.exists() {
                return Ok(0);
            }
            Ok(fs::keyed_value(&fs::read(&path)?, key).unwrap_or(0))
        };
        let io = self.file("io.stat");
        let (io_read_bytes, io_write_bytes) = if io.exists() {
            fs::io_bytes(&fs::read(&io)?)
        } else {
            (0, 0)
        };
        Ok(CgroupStats {
            cpu_usage_ns: keyed("cpu.stat", "usage_usec")?.saturating_mul(1000),
            memory_usage_bytes: fs::read_u64_opt(&self.file("memory.current"))?.unwrap_or(0),
            memory_peak_bytes: fs::read_u64_opt(&self.file("memory.peak"))?,
            oom_kills: keyed("memory.events", "oom_kill")?,
            pids: fs::read_u64_opt(&self.file("pids.current"))?.unwrap_or(0),
            io_read_bytes,
            io_write_bytes,
        })
    }

    fn exists(&self) -> bool {
        self.dir.is_dir()
    }

    fn destroy(&self) -> Result<()> {
        if !self.dir.is_dir() {
            return Ok(());
        }
        // A frozen task dies on SIGKILL under the v2 freezer, but thawing first keeps
        // whatever the processes do on their way out (exit handlers in the kernel) moving.
        if self.is_frozen().unwrap_or(false) {
            self.thaw()?;
        }
        let kill_file = self.file("cgroup.kill");
        if kill_file.exists() {
            // Kills the whole subtree at once, forks in flight included (Linux 5.14+).
            fs::write(&kill_file, "1")?;
        }
        fs::kill_all(&self.dir, || {
            let mut pids = BTreeSet::new();
            fs::pids_recursive(&self.dir, &mut pids)?;
            Ok(pids.into_iter().collect())
        })?;
        fs::remove_tree(&self.dir)?;
        tracing::info!(cgroup = %self.cgroup_path, "destroyed cgroup");
        Ok(())
    }

    fn path(&self) -> &str {
        &self.cgroup_path
    }

    fn delegate(&self, uid: u32, gid: u32) -> Result<Vec<PathBuf>> {
        self.ensure_exists("delegate")?;
        let v2_list = crate::delegate::read_v2_list()?;
        let paths = crate::delegate::paths(
            &self.dir,
            crate::delegate::Hierarchy::V2,
            v2_list.as_deref(),
        );
        crate::delegate::chown_all(&paths, uid, gid)?;
        tracing::info!(cgroup = %self.cgroup_path, uid, gid, "delegated cgroup");
        Ok(vec![self.dir.clone()])
    }
}

#[cfg(test)]
#[path = "v2_tests.rs"]
mod tests;
