//! The cgroup v1 (legacy or hybrid) backend: one directory per controller hierarchy.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};

use oci_spec::runtime::LinuxResources;

use crate::fs::{self, io_err};
use crate::resources::{self, Limit, Plan, Throttle};
use crate::{CgroupError, CgroupManager, CgroupStats, CgroupVersion, Result};

/// The v1 controllers this backend puts a cgroup in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Controller {
    // cpuset first: its directories must be populated before anything joins them.
    Cpuset,
    Cpu,
    Cpuacct,
    Memory,
    Pids,
    Blkio,
    Devices,
    Freezer,
    /// The `name=systemd` hierarchy (no controller: placement only).
    Systemd,
    /// A hybrid host's cgroup2 hierarchy (no controller: placement only).
    Unified,
}

impl Controller {
    const ALL: [Controller; 10] = [
        Controller::Cpuset,
        Controller::Cpu,
        Controller::Cpuacct,
        Controller::Memory,
        Controller::Pids,
        Controller::Blkio,
        Controller::Devices,
        Controller::Freezer,
        Controller::Systemd,
        Controller::Unified,
    ];

    fn name(self) -> &'static str {
        match self {
            Controller::Cpuset => "cpuset",
            Controller::Cpu => "cpu",
            Controller::Cpuacct => "cpuacct",
            Controller::Memory => "memory",
            Controller::Pids => "pids",
            Controller::Blkio => "blkio",
            Controller::Devices => "devices",
            Controller::Freezer => "freezer",
            Controller::Systemd => "name=systemd",
            Controller::Unified => "unified",
        }
    }
}

/// A cgroup in the v1 hierarchies: `<mount of controller>/<path>` for each controller
/// (cpu, cpuacct, cpuset, memory, pids, blkio, devices, freezer) the host mounts, and, for
/// placement only (as runc does), in the `name=systemd` hierarchy and a hybrid host's cgroup2
/// hierarchy (`/sys/fs/cgroup/unified`).
#[derive(Debug, Clone)]
pub struct V1Manager {
    rel: String,
    cgroup_path: String,
    /// Mount point of each controller the host has.
    mounts: BTreeMap<Controller, PathBuf>,
}

impl V1Manager {
    /// The cgroup at `path` (relative to each hierarchy's root), with the controllers' mount
    /// points (and a hybrid cgroup2 hierarchy) read from `/proc/self/mountinfo`.
    pub fn new(path: &str) -> Result<Self> {
        let info = crate::detect::read_mountinfo()?;
        Ok(
            Self::with_mounts(&crate::detect::parse_v1_mounts(&info), path)?
                .with_hybrid(crate::detect::parse_hybrid_unified(&info)),
        )
    }

    /// The same cgroup also placed in the hybrid cgroup2 hierarchy mounted at `unified`.
    pub fn with_hybrid(mut self, unified: Option<PathBuf>) -> Self {
        match unified {
            Some(mount) => self.mounts.insert(Controller::Unified, mount),
            None => self.mounts.remove(&Controller::Unified),
        };
        self
    }

    /// The cgroup's directory in every hierarchy it is placed in (whether it exists or not).
    pub fn dirs(&self) -> Vec<PathBuf> {
        self.hierarchies().into_iter().map(|(_, d, _)| d).collect()
    }

    /// The cgroup at `path` with controller mount points given as controller name → mount point
    /// (as [`crate::v1_mounts`] returns them). Controllers not listed are treated as absent.
    pub fn with_mounts(mounts: &BTreeMap<String, PathBuf>, path: &str) -> Result<Self> {
        let rel = fs::normalize_path(path)?;
        let mounts: BTreeMap<Controller, PathBuf> = Controller::ALL
            .iter()
            .filter_map(|c| mounts.get(c.name()).map(|m| (*c, m.clone())))
            .collect();
        if mounts.is_empty() {
            return Err(CgroupError::Unsupported(
                "none of the cgroup v1 controllers cpu, cpuacct, cpuset, memory, pids, blkio, \
                 devices, freezer is mounted"
                    .into(),
            ));
        }
        Ok(Self {
            cgroup_path: format!("/{rel}"),
            rel,
            mounts,
        })
    }

    /// The cgroup's directory in the hierarchy of `controller` (e.g. `"memory"`), if the host
    /// mounts that controller.
    pub fn dir(&self, controller: &str) -> Option<PathBuf> {
        Controller::ALL
            .iter()
            .find(|c| c.name() == controller)
            .and_then(|c| self.cdir(*c))
    }

    fn cdir(&self, c: Controller) -> Option<PathBuf> {
        self.mounts.get(&c).map(|m| m.join(&self.rel))
    }

    /// One entry per hierarchy (co-mounted controllers share one): mount point, directory and
    /// the controllers in it.
    fn hierarchies(&self) -> Vec<(PathBuf, PathBuf, Vec<Controller>)> {
        let mut out: Vec<(PathBuf, PathBuf, Vec<Controller>)> = Vec::new();
        for (c, mount) in &self.mounts {
            match out.iter_mut().find(|(m, _, _)| m == mount) {
                Some(entry) => entry.2.push(*c),
                None => out.push((mount.clone(), mount.join(&self.rel), vec![*c])),
            }
        }
        out
    }

    fn existing_dirs(&self) -> Vec<PathBuf> {
        self.hierarchies()
            .into_iter()
            .map(|(_, d, _)| d)
            .filter(|d| d.is_dir())
            .collect()
    }

    /// The directory of a controller a setting needs, or `Unsupported`.
    fn need(&self, c: Controller, what: &str) -> Result<PathBuf> {
        self.cdir(c).ok_or_else(|| {
            CgroupError::Unsupported(format!(
                "{what} needs the cgroup v1 {} controller, which this host does not mount",
                c.name()
            ))
        })
    }

    /// A file of a controller that only some kernels have, or `Unsupported`.
    fn need_file(&self, c: Controller, file: &str, what: &str) -> Result<PathBuf> {
        let path = self.need(c, what)?.join(file);
        if path.exists() {
            return Ok(path);
        }
        Err(CgroupError::Unsupported(format!(
            "{what} needs {}, which this kernel does not have",
            path.display()
        )))
    }

    fn ensure_exists(&self, op: &'static str) -> Result<()> {
        if self.exists() {
            return Ok(());
        }
        let first = self.hierarchies().into_iter().map(|(_, d, _)| d).next();
        Err(io_err(
            &first.unwrap_or_else(|| PathBuf::from(&self.cgroup_path)),
            op,
            io::Error::new(
                io::ErrorKind::NotFound,
                "the cgroup does not exist; create it first",
            ),
        ))
    }

    /// Creates `<mount>/<rel>` one level at a time, giving every cpuset directory on the way
    /// the parent's cpus and mems: a new v1 cpuset starts with none, and a task cannot join a
    /// cpuset without cpus.
    fn create_in(&self, mount: &Path, with_cpuset: bool) -> Result<()> {
        let mut parent = mount.to_path_buf();
        for part in self.rel.split('/') {
            let dir = parent.join(part);
            fs::mkdir(&dir)?;
            if with_cpuset {
                for file in ["cpuset.cpus", "cpuset.mems"] {
                    let own = dir.join(file);
                    if fs::read_trimmed(&own)?.is_empty() {
                        let inherited = fs::read_trimmed(&parent.join(file))?;
                        fs::write(&own, &inherited)?;
                    }
                }
            }
            parent = dir;
        }
        Ok(())
    }

    /// Turns a checked plan into `(file, value)` writes in the order they must happen, after
    /// checking every controller and file is there.
    fn render(&self, plan: &Plan) -> Result<Vec<(PathBuf, String)>> {
        let mut w: Vec<(PathBuf, String)> = Vec::new();
        if !plan.unified.is_empty() {
            return Err(CgroupError::Unsupported(
                "unified (cgroup v2) settings cannot be applied on this cgroup v1 host; remove \
                 linux.resources.unified from the spec"
                    .into(),
            ));
        }
        if let Some(cpu) = &plan.cpu {
            use Controller::Cpu;
            if let Some(shares) = cpu.shares {
                w.push((
                    self.need(Cpu, "cpu shares")?.join("cpu.shares"),
                    shares.to_string(),
                ));
            }
            if let Some(period) = cpu.period {
                let dir = self.need(Cpu, "a cpu period")?;
                w.push((dir.join("cpu.cfs_period_us"), period.to_string()));
            }
            if let Some(quota) = cpu.quota {
                let dir = self.need(Cpu, "a cpu quota")?;
                w.push((dir.join("cpu.cfs_quota_us"), quota.v1()));
            }
            if let Some(burst) = cpu.burst {
                let path = self.need_file(Cpu, "cpu.cfs_burst_us", "a cpu burst")?;
                w.push((path, burst.to_string()));
            }
            if let Some(idle) = cpu.idle {
                w.push((
                    self.need_file(Cpu, "cpu.idle", "cpu idle")?,
                    idle.to_string(),
                ));
            }
            if let Some(period) = cpu.rt_period {
                let path = self.need_file(Cpu, "cpu.rt_period_us", "a realtime period")?;
                w.push((path, period.to_string()));
            }
            if let Some(runtime) = cpu.rt_runtime {
                let path = self.need_file(Cpu, "cpu.rt_runtime_us", "a realtime runtime")?;
                w.push((path, runtime.to_string()));
            }
            for (list, file, what) in [
                (&cpu.cpus, "cpuset.cpus", "cpuset cpus"),
                (&cpu.mems, "cpuset.mems", "cpuset mems"),
            ] {
                let Some(list) = list else { continue };
                let dir = self.need(Controller::Cpuset, what)?;
                if let Some(parent) = dir.parent() {
                    let effective = parent.join(file.replace("cpuset.", "cpuset.effective_"));
                    if let Ok(available) = std::fs::read_to_string(&effective) {
                        resources::check_subset(list, &available, what)?;
                    }
                }
                w.push((dir.join(file), list.clone()));
            }
        }
        if let Some(mem) = &plan.memory {
            self.render_memory(mem, &mut w)?;
        }
        if let Some(pids) = plan.pids {
            // pids.max spells no limit "max" even on v1.
            w.push((
                self.need(Controller::Pids, "a pids limit")?
                    .join("pids.max"),
                pids.v2(),
            ));
        }
        if let Some(bio) = &plan.block_io {
            self.render_blkio(bio, &mut w)?;
        }
        if !plan.devices.is_empty() {
            let dir = self.need(Controller::Devices, "device rules")?;
            for rule in &plan.devices {
                let file = if rule.allow {
                    "devices.allow"
                } else {
                    "devices.deny"
                };
                w.push((dir.join(file), rule.line.clone()));
            }
        }
        Ok(w)
    }

    fn render_memory(
        &self,
        mem: &resources::MemoryPlan,
        w: &mut Vec<(PathBuf, String)>,
    ) -> Result<()> {
        let dir = |what| self.need(Controller::Memory, what);
        let limit_w = match mem.limit {
            Some(l) => Some((dir("a memory limit")?.join("memory.limit_in_bytes"), l.v1())),
            None => None,
        };
        let swap_w = match mem.swap {
            None => None,
            Some(total) => {
                let path = dir("a swap limit")?.join("memory.memsw.limit_in_bytes");
                match (path.exists(), total) {
                    (true, _) => Some((path, total.v1())),
                    // Nothing to lift where swap is not accounted.
                    (false, Limit::Max) => None,
                    (false, Limit::Value(v)) => {
                        return Err(CgroupError::Unsupported(format!(
                            "a swap limit was asked (memory.swap {v}) but {} is missing: the \
                             kernel has no swap accounting (boot with swapaccount=1, or \
                             CONFIG_MEMCG_SWAP is off); remove memory.swap from the spec or \
                             enable swap accounting",
                            path.display()
                        )))
                    }
                }
            }
        };
        match (limit_w, swap_w) {
            (Some(l), Some(s)) => {
                // The kernel keeps limit <= memsw limit at every step: raise memsw first when
                // the new memsw is above the current limit, else lower the limit first.
                let current = fs::read_u64(&l.0)?;
                let swap_first = match mem.swap {
                    Some(Limit::Value(total)) => current < total,
                    _ => true,
                };
                if swap_first {
                    w.push(s);
                    w.push(l);
                } else {
                    w.push(l);
                    w.push(s);
                }
            }
            (l, s) => w.extend(l.into_iter().chain(s)),
        }
        if let Some(reservation) = mem.reservation {
            let path = dir("a memory reservation")?.join("memory.soft_limit_in_bytes");
            w.push((path, reservation.v1()));
        }
        if let Some(swappiness) = mem.swappiness {
            let path = self.need_file(Controller::Memory, "memory.swappiness", "swappiness")?;
            w.push((path, swappiness.to_string()));
        }
        if mem.disable_oom_killer {
            let path = dir("disabling the OOM killer")?.join("memory.oom_control");
            w.push((path, "1".into()));
        }
        Ok(())
    }

    fn render_blkio(
        &self,
        bio: &resources::BlockIoPlan,
        w: &mut Vec<(PathBuf, String)>,
    ) -> Result<()> {
        let dir = self.need(Controller::Blkio, "block io limits")?;
        if bio.weight.is_some() || !bio.weight_devices.is_empty() {
            // CFQ (old kernels) has blkio.weight, BFQ has blkio.bfq.weight.
            let (weight, weight_device) = if dir.join("blkio.weight").exists() {
                ("blkio.weight", "blkio.weight_device")
            } else if dir.join("blkio.bfq.weight").exists() {
                ("blkio.bfq.weight", "blkio.bfq.weight_device")
            } else {
                return Err(CgroupError::Unsupported(format!(
                    "a block io weight was asked but {} has neither blkio.weight nor \
                     blkio.bfq.weight: the block devices' I/O scheduler has no weights \
                     (use bfq)",
                    dir.display()
                )));
            };
            if let Some(v) = bio.weight {
                w.push((dir.join(weight), v.to_string()));
            }
            for (major, minor, v) in &bio.weight_devices {
                w.push((dir.join(weight_device), format!("{major}:{minor} {v}")));
            }
        }
        let groups: [(&str, &Vec<Throttle>); 4] = [
            ("blkio.throttle.read_bps_device", &bio.read_bps),
            ("blkio.throttle.write_bps_device", &bio.write_bps),
            ("blkio.throttle.read_iops_device", &bio.read_iops),
            ("blkio.throttle.write_iops_device", &bio.write_iops),
        ];
        for (file, list) in groups {
            for t in list {
                w.push((
                    dir.join(file),
                    format!("{}:{} {}", t.major, t.minor, t.rate),
                ));
            }
        }
        Ok(())
    }

    fn freezer_state(&self) -> Result<String> {
        let dir = self.need(Controller::Freezer, "the freezer")?;
        fs::read_trimmed(&dir.join("freezer.state"))
    }

    fn all_pids(&self) -> Result<Vec<i32>> {
        let mut pids = BTreeSet::new();
        for dir in self.existing_dirs() {
            fs::pids_recursive(&dir, &mut pids)?;
        }
        Ok(pids.into_iter().collect())
    }
}

impl CgroupManager for V1Manager {
    fn version(&self) -> CgroupVersion {
        CgroupVersion::V1
    }

    fn create(&self) -> Result<()> {
        let existed = self.exists();
        for (mount, _, controllers) in self.hierarchies() {
            self.create_in(&mount, controllers.contains(&Controller::Cpuset))?;
        }
        if !existed {
            tracing::info!(cgroup = %self.cgroup_path, controllers = ?self.mounts.keys().map(|c| c.name()).collect::<Vec<_>>(), "created cgroup");
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
        if pid <= 0 {
            return Err(io_err(
                Path::new(&self.cgroup_path),
                "add a process",
                io::Error::new(io::ErrorKind::InvalidInput, format!("{pid} is not a pid")),
            ));
        }
        self.ensure_exists("add a process")?;
        for (_, dir, _) in self.hierarchies() {
            fs::write(&dir.join("cgroup.procs"), &pid.to_string())?;
        }
        tracing::debug!(cgroup = %self.cgroup_path, pid, "added process");
        Ok(())
    }

    fn pids(&self) -> Result<Vec<i32>> {
        self.ensure_exists("list processes")?;
        self.all_pids()
    }

    fn freeze(&self) -> Result<()> {
        self.ensure_exists("freeze")?;
        let state = self
            .need(Controller::Freezer, "freezing")?
            .join("freezer.state");
        fs::write(&state, "FROZEN")?;
        let frozen = fs::poll_until(fs::FREEZE_TIMEOUT, || {
            // FREEZING while tasks are still on their way into the fridge.
            Ok(fs::read_trimmed(&state)? == "FROZEN")
        })?;
        if !frozen {
            let _ = fs::write(&state, "THAWED");
            return Err(fs::freeze_timed_out(&state, "still FREEZING"));
        }
        tracing::info!(cgroup = %self.cgroup_path, "frozen");
        Ok(())
    }

    fn thaw(&self) -> Result<()> {
        self.ensure_exists("thaw")?;
        let state = self
            .need(Controller::Freezer, "thawing")?
            .join("freezer.state");
        fs::write(&state, "THAWED")?;
        tracing::info!(cgroup = %self.cgroup_path, "thawed");
        Ok(())
    }

    fn is_frozen(&self) -> Result<bool> {
        self.ensure_exists("read the freezer state")?;
        Ok(matches!(
            self.freezer_state()?.as_str(),
            "FROZEN" | "FREEZING"
        ))
    }

    fn stats(&self) -> Result<CgroupStats> {
        self.ensure_exists("read statistics")?;
        let file = |c: Controller, name: &str| self.cdir(c).map(|d| d.join(name));
        let number = |c: Controller, name: &str| -> Result<Option<u64>> {
            match file(c, name) {
                Some(path) => fs::read_u64_opt(&path),
                None => Ok(None),
            }
        };
        let oom_kills = match file(Controller::Memory, "memory.oom_control") {
            Some(path) if path.exists() => {
                fs::keyed_value(&fs::read(&path)?, "oom_kill").unwrap_or(0)
            }
            _ => 0,
        };
        let (io_read_bytes, io_write_bytes) =
            match file(Controller::Blkio, "blkio.throttle.io_service_bytes") {
                Some(path) if path.exists() => fs::io_bytes(&fs::read(&path)?),
                _ => (0, 0),
            };
        Ok(CgroupStats {
            cpu_usage_ns: number(Controller::Cpuacct, "cpuacct.usage")?.unwrap_or(0),
            memory_usage_bytes: number(Controller::Memory, "memory.usage_in_bytes")?.unwrap_or(0),
            memory_peak_bytes: number(Controller::Memory, "memory.max_usage_in_bytes")?,
            oom_kills,
            pids: number(Controller::Pids, "pids.current")?.unwrap_or(0),
            io_read_bytes,
            io_write_bytes,
        })
    }

    /// True when the cgroup's directory exists in any hierarchy (a half-created or
    /// half-removed cgroup still exists, and `destroy` still has work to do).
    fn exists(&self) -> bool {
        self.hierarchies().iter().any(|(_, d, _)| d.is_dir())
    }

    fn destroy(&self) -> Result<()> {
        let dirs = self.existing_dirs();
        if dirs.is_empty() {
            return Ok(());
        }
        // Frozen v1 tasks do not act on SIGKILL until thawed.
        if let Some(dir) = self.cdir(Controller::Freezer).filter(|d| d.is_dir()) {
            let state = dir.join("freezer.state");
            if fs::read_trimmed(&state)? != "THAWED" {
                fs::write(&state, "THAWED")?;
            }
        }
        fs::kill_all(&dirs[0], || self.all_pids())?;
        for dir in &dirs {
            fs::remove_tree(dir)?;
        }
        tracing::info!(cgroup = %self.cgroup_path, "destroyed cgroup");
        Ok(())
    }

    fn path(&self) -> &str {
        &self.cgroup_path
    }

    fn delegate(&self, uid: u32, gid: u32) -> Result<Vec<PathBuf>> {
        self.ensure_exists("delegate")?;
        let v2_list = crate::delegate::read_v2_list()?;
        let mut dirs = Vec::new();
        for (c, hierarchy) in [
            (Controller::Systemd, crate::delegate::Hierarchy::V1),
            (Controller::Unified, crate::delegate::Hierarchy::V2),
        ] {
            let Some(dir) = self.cdir(c).filter(|d| d.is_dir()) else {
                continue;
            };
            let paths = crate::delegate::paths(&dir, hierarchy, v2_list.as_deref());
            crate::delegate::chown_all(&paths, uid, gid)?;
            dirs.push(dir);
        }
        tracing::info!(cgroup = %self.cgroup_path, uid, gid, ?dirs, "delegated cgroup");
        Ok(dirs)
    }
}

#[cfg(test)]
#[path = "v1_tests.rs"]
mod tests;
