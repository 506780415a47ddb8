//! The container driver: lays out an instance's files, writes its OCI bundle, starts its
//! monitor, follows the monitor through a pidfd, and stops it.
//!
//! The fork-based parts of `vessel-container` run in the single-threaded `vessel-monitor` and
//! `vessel-runc` processes, never inside this multi-threaded daemon; calls that only read
//! state or send signals (`state`, `stats`, `kill`, `pause`, `resume`) run in-process.

use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use vessel_api::{Instance, InstanceState};
use vessel_monitor::{is_mountpoint, ExitStatus, IdMap, MonitorConfig, Overlay, Ready, StagedBind};

use super::limits;
use super::root_disk::RootPlace;
use crate::error::{chain, Error, Result};

/// Who the init runs as and where, from the image's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    /// User id inside the container.
    pub uid: u32,
    /// Group id inside the container.
    pub gid: u32,
    /// Working directory inside the container.
    pub cwd: String,
}

impl RunAs {
    /// Resolves an image's `user` ("uid", "uid:gid", "name", "name:group") against the
    /// passwd and group files of its layers (top first), each read inside its own layer
    /// (never the host's files, whatever links the image holds). Blocking: file reads.
    pub fn resolve(user: Option<&str>, cwd: Option<&str>, layers: &[PathBuf]) -> Result<Self> {
        let cwd = cwd
            .filter(|c| c.starts_with('/'))
            .unwrap_or("/")
            .to_string();
        let Some(user) = user.filter(|u| !u.is_empty()) else {
            return Ok(Self {
                uid: 0,
                gid: 0,
                cwd,
            });
        };
        let (uid, gid) = super::users::resolve(user, "the image", |file| layer_db(layers, file))?;
        if uid >= IDMAP_SIZE || gid >= IDMAP_SIZE {
            return Err(Error::invalid(format!(
                "the image runs as {uid}:{gid}, outside the container's id range 0-{}",
                IDMAP_SIZE - 1
            )));
        }
        Ok(Self { uid, gid, cwd })
    }
}

/// The text of `rel` as the stacked `layers` (top first) show it: from the topmost layer
/// that has it, read inside that layer; a whiteout there hides the lower ones.
fn layer_db(layers: &[PathBuf], rel: &str) -> Result<Option<String>> {
    use std::os::unix::fs::FileTypeExt;
    for layer in layers {
        let root: std::os::fd::OwnedFd = std::fs::File::open(layer)
            .map_err(|e| Error::internal(format!("opening an image layer: {e}")))?
            .into();
        // An overlay whiteout (a 0:0 character device) means the file was deleted.
        if let Ok(fd) = super::files::open_in_root(&root, Path::new(rel), libc::O_PATH, 0) {
            let md = std::fs::File::from(fd).metadata();
            if md.is_ok_and(|m| {
                use std::os::unix::fs::MetadataExt;
                m.file_type().is_char_device() && m.rdev() == 0
            }) {
                return Ok(None);
            }
        }
        match super::users::read_db_file(&root, rel) {
            Ok(Some(text)) => return Ok(Some(text)),
            Ok(None) => continue,
            Err(e) => {
                return Err(Error::invalid(format!(
                    "the image's /{rel} cannot be used: {e}"
                )))
            }
        }
    }
    Ok(None)
}

/// Size of the uid/gid range given to each unprivileged container.
pub const IDMAP_SIZE: u32 = 65_536;

/// Host paths and settings of the container driver.
#[derive(Debug, Clone)]
pub struct ContainerDriver {
    /// `<root>/instances`.
    pub instances_dir: PathBuf,
    /// `<run>/monitors`: monitor sockets and pid files.
    pub monitors_dir: PathBuf,
    /// `<run>/runtime`: the runtime's state root.
    pub state_root: PathBuf,
    /// Parent cgroup of every instance of this daemon.
    pub cgroup_parent: String,
    /// First host uid/gid of the shared id range; isolated ranges are allocated above it.
    pub idmap_base: u32,
    /// Directory holding `vessel-monitor` and `vessel-runc`.
    pub libexec: PathBuf,
    /// The host's cgroup layout.
    pub cgroup_version: vessel_cgroups::CgroupVersion,
}

impl ContainerDriver {
    /// Directory of one instance (also its OCI bundle).
    pub fn dir(&self, name: &str) -> PathBuf {
        self.instances_dir.join(name)
    }

    /// Where the instance's root is mounted while it runs.
    pub fn rootfs(&self, name: &str) -> PathBuf {
        self.dir(name).join("rootfs")
    }

    /// The monitor's console socket.
    pub fn socket(&self, name: &str) -> PathBuf {
        self.monitors_dir.join(format!("{name}.sock"))
    }

    fn pid_file(&self, name: &str) -> PathBuf {
        self.monitors_dir.join(format!("{name}.pid"))
    }

    /// Console log written by the monitor.
    pub fn log(&self, name: &str) -> PathBuf {
        self.dir(name).join("console.log")
    }

    /// Cgroup path of an instance, relative to the hierarchy roots.
    pub fn cgroup(&self, name: &str) -> String {
        format!("{}/{name}", self.cgroup_parent)
    }

    /// The shared id range (the daemon's `--idmap-base`): for containers launched with
    /// `--idmap-shared`, and those made before ranges were per container.
    pub fn shared_idmap(&self) -> vessel_api::InstanceIdmap {
        vessel_api::InstanceIdmap {
            host_base: self.idmap_base,
            size: IDMAP_SIZE,
            isolated: false,
        }
    }

    /// Where isolated ranges are allocated from: above the shared range.
    pub fn id_pool(&self) -> crate::store::IdPool {
        crate::store::IdPool {
            shared_base: self.idmap_base,
            size: IDMAP_SIZE,
        }
    }

    /// The host uid and gid of an instance's root (`None` when privileged): its recorded
    /// range, or the shared one for an instance stored before ranges were recorded.
    pub fn shift(&self, inst: &Instance) -> Option<u32> {
        (!inst.privileged).then(|| inst.idmap.map_or(self.idmap_base, |m| m.host_base))
    }

    /// The map of an instance's user namespace for files stored with ids from `inside`.
    fn idmap(&self, inst: &Instance, inside: u32) -> Option<IdMap> {
        self.shift(inst).map(|host| IdMap {
            inside,
            host,
            size: IDMAP_SIZE,
        })
    }

    /// The instance's directory for staged idmapped mounts.
    pub fn stage_dir(&self, name: &str) -> PathBuf {
        self.dir(name).join("mnt")
    }

    /// The image file of a root disk kept in the instance's directory.
    pub fn root_image(&self, name: &str) -> PathBuf {
        self.dir(name).join("root.img")
    }

    /// Where an instance's root disk is mounted (holding `upper` and `work`).
    pub fn disk_mount(&self, name: &str) -> PathBuf {
        self.dir(name).join("disk")
    }

    /// The instance's root: `lowers` (canonical layers, top first) idmapped to its range,
    /// under its writable layer, which is at `place`.
    pub fn overlay(&self, inst: &Instance, lowers: &[PathBuf], place: &RootPlace) -> Overlay {
        let dir = self.dir(&inst.name);
        let (layer, disk) = match place {
            RootPlace::Shared => (dir.clone(), None),
            RootPlace::Disk(source) => {
                let mount = self.disk_mount(&inst.name);
                let disk = vessel_monitor::RootDisk {
                    source: source.clone(),
                    mount: mount.clone(),
                };
                (mount, Some(disk))
            }
        };
        Overlay {
            lowers: lowers.to_vec(),
            upper: layer.join("upper"),
            work: layer.join("work"),
            target: dir.join("rootfs"),
            idmap: self.idmap(inst, 0),
            stage: self.stage_dir(&inst.name),
            disk,
        }
    }

    /// Creates the instance's directories (a VM's: see below). The writable layer is owned
    /// by the container's root; with a root disk it is on the disk, and `disk` (root's) is
    /// where that is mounted. The instance directory itself is mode 0100, owned by the container's root host
    /// uid (LXD's layout): the container's init can walk through it to its root and staged
    /// volumes, no other host user can enter it, and nobody can list it.
    pub fn prepare(&self, inst: &Instance) -> Result<()> {
        let dir = self.dir(&inst.name);
        let io = |p: &Path, e: std::io::Error| {
            Error::internal(format!("preparing {}: {e}", p.display()))
        };
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        if inst.instance_type == vessel_api::InstanceType::Vm {
            // QEMU runs as nobody and opens the VM's root disk here by path; the disk is
            // handed to it, the directory is searchable (not listable).
            return std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711))
                .map_err(|e| io(&dir, e));
        }
        let owner = self.shift(inst).unwrap_or(0);
        let has_disk = inst.limits.disk.is_some();
        let subs: &[&str] = if has_disk {
            &["rootfs"]
        } else {
            &["upper", "work", "rootfs"]
        };
        for sub in subs {
            let p = dir.join(sub);
            std::fs::create_dir_all(&p).map_err(|e| io(&p, e))?;
            std::os::unix::fs::chown(&p, Some(owner), Some(owner)).map_err(|e| io(&p, e))?;
        }
        if has_disk {
            let p = self.disk_mount(&inst.name);
            std::fs::create_dir_all(&p).map_err(|e| io(&p, e))?;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| io(&p, e))?;
        } else {
            std::fs::set_permissions(dir.join("upper"), std::fs::Permissions::from_mode(0o755))
                .map_err(|e| io(&dir, e))?;
        }
        let stage = self.stage_dir(&inst.name);
        std::fs::create_dir_all(&stage).map_err(|e| io(&stage, e))?;
        std::os::unix::fs::chown(&stage, Some(0), Some(0)).map_err(|e| io(&stage, e))?;
        std::fs::set_permissions(&stage, std::fs::Permissions::from_mode(0o711))
            .map_err(|e| io(&stage, e))?;
        std::os::unix::fs::chown(&dir, Some(owner), Some(owner)).map_err(|e| io(&dir, e))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o100))
            .map_err(|e| io(&dir, e))?;
        Ok(())
    }

    /// Writes the OCI bundle's `config.json` for the instance (with what systemd needs when
    /// the init is systemd); returns the volumes its monitor stages as idmapped mounts (the
    /// spec binds the staged mounts).
    pub fn write_bundle(
        &self,
        inst: &Instance,
        env: &[String],
        run: &RunAs,
        volumes: &[crate::storage::VolumeMount],
        systemd: bool,
    ) -> Result<Vec<StagedBind>> {
        let opts = vessel_container::spec::SpecOptions {
            rootfs: "rootfs".into(),
            root_readonly: false,
            args: inst.command.clone(),
            env: env.to_vec(),
            cwd: run.cwd.clone().into(),
            // The name its project knows it by.
            hostname: crate::project::split(&inst.name).1.to_string(),
            terminal: true,
            user_namespace: self.shift(inst).map(|base| vessel_container::spec::IdMap {
                host_uid_base: base,
                host_gid_base: base,
                size: IDMAP_SIZE,
            }),
            resources: Some(limits::to_oci(&inst.limits, self.cgroup_version)?),
            cgroups_path: Some(format!("/{}", self.cgroup(&inst.name))),
        };
        let mut spec = vessel_container::spec::default_spec(&opts);
        isolate_network(&mut spec);
        if systemd {
            super::systemd::apply(&mut spec)?;
        }
        let mut binds = Vec::new();
        if !volumes.is_empty() {
            let mut mounts = spec.mounts().clone().unwrap_or_default();
            for (i, v) in volumes.iter().enumerate() {
                // A privileged container binds the volume as stored; an unprivileged one a
                // mount of it idmapped to its range, staged in its own directory.
                let source = match self.idmap(inst, v.id_base) {
                    None => v.source.clone(),
                    Some(idmap) => {
                        let target = self.stage_dir(&inst.name).join(format!("vol-{i}"));
                        binds.push(StagedBind {
                            source: v.source.clone(),
                            target: target.clone(),
                            idmap,
                        });
                        target
                    }
                };
                let m = oci_spec::runtime::MountBuilder::default()
                    .destination(&v.destination)
                    .typ("bind")
                    .source(&source)
                    .options(
                        ["rbind", "rw", "nosuid", "nodev"]
                            .map(String::from)
                            .to_vec(),
                    )
                    .build()
                    .map_err(|e| Error::internal(format!("volume mount: {e}")))?;
                mounts.push(m);
            }
            spec.set_mounts(Some(mounts));
        }
        if let Some(process) = spec.process_mut() {
            let mut user = process.user().clone();
            user.set_uid(run.uid);
            user.set_gid(run.gid);
            process.set_user(user);
        }
        let path = self.dir(&inst.name).join("config.json");
        spec.save(&path).map_err(|e| {
            tracing::warn!(path = %path.display(), error = %crate::error::chain(&e), "writing the OCI bundle");
            Error::internal(format!(
                "writing the instance's runtime configuration: {}",
                crate::error::chain(&e)
            ))
        })?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| Error::internal(format!("securing the runtime configuration: {e}")))?;
        Ok(binds)
    }

    /// Starts the instance's monitor with its root (see [`ContainerDriver::overlay`]) and
    /// staged volumes; returns the init and monitor pids once the container runs.
    pub async fn spawn_monitor(
        &self,
        inst: &Instance,
        overlay: Overlay,
        binds: Vec<StagedBind>,
    ) -> Result<(i32, i32)> {
        let dir = self.dir(&inst.name);
        std::fs::create_dir_all(&self.monitors_dir)
            .map_err(|e| Error::internal(format!("creating the monitors' directory: {e}")))?;
        let _ = std::fs::remove_file(dir.join("exit.json"));
        let config = MonitorConfig {
            id: inst.name.clone(),
            bundle: dir.clone(),
            state_root: self.state_root.clone(),
            runtime: self.libexec.join("vessel-runc"),
            socket: self.socket(&inst.name),
            log: self.log(&inst.name),
            pid_file: self.pid_file(&inst.name),
            exit_file: dir.join("exit.json"),
            overlay: Some(overlay),
            binds,
        };
        let config_path = dir.join("monitor.json");
        let body = serde_json::to_vec_pretty(&config)
            .map_err(|e| Error::internal(format!("monitor config: {e}")))?;
        write_private(&config_path, &body)
            .map_err(|e| Error::internal(format!("writing the monitor's configuration: {e}")))?;
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(dir.join("monitor.log"))
            .map_err(|e| Error::internal(format!("opening monitor log: {e}")))?;
        let exe = self.libexec.join("vessel-monitor");
        let mut child = tokio::process::Command::new(&exe)
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|e| {
                Error::internal(format!(
                    "starting {}: {e}; is Vessel installed completely?",
                    exe.display()
                ))
            })?;
        let monitor_pid = child.id().map(|p| p as i32).unwrap_or(-1);
        let stdout = child.stdout.take();
        // Reap the monitor whenever it ends; the pidfd watcher reports the exit.
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
        let Some(stdout) = stdout else {
            return Err(Error::internal("monitor has no stdout"));
        };
        let mut line = String::new();
        let read = tokio::time::timeout(
            Duration::from_secs(120),
            BufReader::new(stdout).read_line(&mut line),
        )
        .await;
        let ready: Ready = match read {
            Ok(Ok(n)) if n > 0 => serde_json::from_str(line.trim()).map_err(|e| {
                Error::internal(format!("monitor said {line:?}, not a ready line: {e}"))
            })?,
            Ok(_) => {
                let log = std::fs::read_to_string(dir.join("monitor.log")).unwrap_or_default();
                return Err(Error::internal(format!(
                    "monitor ended before the container started: {}",
                    log.lines().last().unwrap_or("no message")
                )));
            }
            Err(_) => {
                // SAFETY: kill takes plain integers.
                unsafe { libc::kill(monitor_pid, libc::SIGKILL) };
                return Err(Error::internal(
                    "the container did not start within 120 s; its monitor was killed",
                ));
            }
        };
        match ready {
            Ready::Running { pid } => Ok((pid, monitor_pid)),
            Ready::Failed { error } => Err(Error::internal(format!(
                "cannot start instance {}: {error}",
                inst.name
            ))),
        }
    }

    /// The pid of the instance's live monitor, if there is one.
    pub fn live_monitor(&self, name: &str) -> Option<i32> {
        let pid: i32 = std::fs::read_to_string(self.pid_file(name))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let config = self.dir(name).join("monitor.json");
        let expected = config.as_os_str().as_encoded_bytes();
        let is_ours = cmdline.split(|&b| b == 0).any(|arg| arg == expected);
        // A zombie has an empty cmdline: it has ended.
        is_ours.then_some(pid)
    }

    /// The lower layers the instance's monitor stacks, as its configuration names them.
    pub fn monitor_lowers(&self, name: &str) -> Vec<PathBuf> {
        std::fs::read(self.dir(name).join("monitor.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<MonitorConfig>(&b).ok())
            .and_then(|c| c.overlay)
            .map(|o| o.lowers)
            .unwrap_or_default()
    }

    /// Waits until the monitor with this pid has ended.
    pub async fn wait_monitor(pid: i32) {
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return; // already gone
        }
        // SAFETY: fd was just returned by pidfd_open and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        // SAFETY: the OwnedFd is moved into the AsyncFd, which owns it until it is dropped,
        // so the descriptor stays open and the same for the AsyncFd's whole life.
        match unsafe { tokio::io::unix::AsyncFd::register(fd) } {
            Ok(afd) => {
                let _ = afd.readable().await;
            }
            Err(_) => {
                while std::path::Path::new(&format!("/proc/{pid}")).exists() {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    /// Reads how the instance's last run ended, once its monitor is gone.
    pub fn exit_status(&self, name: &str) -> Option<ExitStatus> {
        let body = std::fs::read(self.dir(name).join("exit.json")).ok()?;
        serde_json::from_slice(&body).ok()
    }

    /// Forgets the monitor's pid file.
    pub fn clear_monitor(&self, name: &str) {
        let _ = std::fs::remove_file(self.pid_file(name));
    }

    /// Host pid of the running init.
    pub fn init_pid(&self, name: &str) -> Option<i32> {
        vessel_container::state(&self.state_root, name)
            .ok()
            .map(|s| s.pid)
    }

    /// Sends a signal to the instance's init (or, with `all`, every process in it).
    pub fn kill(&self, name: &str, signal: i32, all: bool) -> Result<()> {
        // Real-time signals included: SIGRTMIN+3 stops systemd.
        if !(1..=libc::SIGRTMAX()).contains(&signal) {
            return Err(Error::invalid(format!("{signal} is not a signal number")));
        }
        vessel_container::kill(&self.state_root, name, signal, all)
            .map_err(|e| Error::internal(format!("signalling {name}: {}", chain(&e))))
    }

    /// Freezes every process.
    pub fn pause(&self, name: &str) -> Result<()> {
        vessel_container::pause(&self.state_root, name)
            .map_err(|e| Error::internal(format!("pausing {name}: {}", chain(&e))))
    }

    /// Thaws every process.
    pub fn resume(&self, name: &str) -> Result<()> {
        vessel_container::resume(&self.state_root, name)
            .map_err(|e| Error::internal(format!("resuming {name}: {}", chain(&e))))
    }

    /// The CPUs the instances' parent cgroup may use (what a lifted cpuset gives back): its
    /// own effective set where the cpuset controller shows it, else every CPU online.
    fn parent_cpus(&self) -> String {
        let fs = Path::new("/sys/fs/cgroup");
        let candidates = [
            fs.join("cpuset")
                .join(&self.cgroup_parent)
                .join("cpuset.effective_cpus"),
            fs.join("cpuset")
                .join(&self.cgroup_parent)
                .join("cpuset.cpus"),
            fs.join(&self.cgroup_parent).join("cpuset.cpus.effective"),
            fs.join("cpuset/cpuset.effective_cpus"),
            fs.join("cpuset.cpus.effective"),
            PathBuf::from("/sys/devices/system/cpu/online"),
        ];
        candidates
            .iter()
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .map(|s| s.trim().to_string())
            .find(|s| !s.is_empty())
            .unwrap_or_else(|| "0".into())
    }

    /// Gives running container `name` the limits `new` in place of `old` through its cgroup
    /// (a limit `new` lacks is lifted). Memory below what the container holds is refused, never
    /// met by killing: cgroup v1 reclaims what it can and refuses the rest; on v2, whose
    /// kernel would kill instead, a limit below current use is refused before it is written.
    pub fn update_limits(
        &self,
        name: &str,
        old: &vessel_api::Limits,
        new: &vessel_api::Limits,
    ) -> Result<()> {
        let all_cpus = self.parent_cpus();
        let res = limits::to_oci_update(old, new, self.cgroup_version, &all_cpus)?;
        let lowering = match (old.memory, new.memory) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(o), Some(n)) => n < o,
        };
        let used = || {
            vessel_container::stats(&self.state_root, name)
                .map(|s| s.memory_usage_bytes)
                .unwrap_or(0)
        };
        let refuse = |used: u64, limit: u64| {
            Error::conflict(format!(
                "{name} holds {} of memory and it cannot be given back to fit in {}: nothing \
                 was changed; free memory in {name}, or choose a higher limit",
                vessel_api::size::format_size(used),
                vessel_api::size::format_size(limit)
            ))
        };
        if lowering && self.cgroup_version == vessel_cgroups::CgroupVersion::V2 {
            let (u, limit) = (used(), new.memory.unwrap_or(0));
            if u > limit {
                return Err(refuse(u, limit));
            }
        }
        let result = vessel_container::update(&self.state_root, name, &res);
        if result.is_err() {
            // Settings written before the refusal go back to what they were.
            if let Ok(back) = limits::to_oci_update(new, old, self.cgroup_version, &all_cpus) {
                if let Err(e) = vessel_container::update(&self.state_root, name, &back) {
                    tracing::warn!(instance = name, error = %chain(&e), "restoring the limits");
                }
            }
        }
        match result {
            Ok(()) => Ok(()),
            Err(e) if lowering => {
                tracing::info!(instance = name, error = %chain(&e), "lower memory limit refused");
                Err(refuse(used(), new.memory.unwrap_or(0)))
            }
            Err(e) => Err(Error::invalid(format!(
                "the kernel refused the new limits of {name}: {}",
                chain(&e)
            ))),
        }
    }

    /// Live usage read from the instance's cgroups.
    pub fn usage(&self, name: &str) -> Result<InstanceState> {
        let stats = vessel_container::stats(&self.state_root, name)
            .map_err(|e| Error::internal(format!("reading usage of {name}: {}", chain(&e))))?;
        Ok(InstanceState {
            pid: self.init_pid(name),
            cpu_usage_ns: stats.cpu_usage_ns,
            memory_usage_bytes: stats.memory_usage_bytes,
            memory_peak_bytes: stats.memory_peak_bytes,
            oom_kills: stats.oom_kills,
            pids: stats.pids,
            disk_read_bytes: stats.io_read_bytes,
            disk_write_bytes: stats.io_write_bytes,
        })
    }

    /// Removes leftovers of a run whose monitor died without cleaning up: the runtime state,
    /// the cgroup, the root mount, staged mounts and the root disk's mount.
    pub fn cleanup_orphan(&self, name: &str) {
        if let Err(e) = vessel_container::delete(&self.state_root, name, true) {
            tracing::debug!(instance = name, error = %chain(&e), "no runtime state to remove");
        }
        if let Ok(cg) = vessel_cgroups::manager(&self.cgroup(name)) {
            if cg.exists() {
                if let Err(e) = cg.destroy() {
                    tracing::warn!(instance = name, error = %e, "removing orphan cgroup");
                }
            }
        }
        let root = self.rootfs(name);
        if is_mountpoint(&root) {
            if let Err(e) = nix::mount::umount2(&root, nix::mount::MntFlags::MNT_DETACH) {
                tracing::warn!(instance = name, error = %e, "unmounting orphan root");
            }
        }
        // Idmapped layers and volumes a crash left staged.
        if let Err(e) = vessel_monitor::idmap::unmount_all(&self.stage_dir(name)) {
            tracing::warn!(instance = name, error = %e, path = %e.path().display(), "unmounting staged mounts");
        }
        // The root disk under the root (an image's loop device goes with its last mount).
        if let Err(e) = vessel_monitor::idmap::unmount_all(&self.disk_mount(name)) {
            tracing::warn!(instance = name, error = %e, path = %e.path().display(), "unmounting the root disk");
        }
        let _ = std::fs::remove_file(self.socket(name));
        self.clear_monitor(name);
    }

    /// Removes every file of the instance.
    pub fn remove_files(&self, name: &str) -> Result<()> {
        self.cleanup_orphan(name);
        let dir = self.dir(name);
        // Removing a tree descends into mounts: through a staged layer it would delete the
        // image's files.
        let left = vessel_monitor::idmap::mounts_under(&dir);
        if !left.is_empty() {
            return Err(Error::internal(format!(
                "{} is still mounted; not removing the instance's files",
                left[0].display()
            )));
        }
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .map_err(|e| Error::internal(format!("removing {}: {e}", dir.display())))?;
        }
        Ok(())
    }
}

/// Writes a file only root may read (replacing what was there).
pub(super) fn write_private(path: &Path, body: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(body)
}

/// Gives every container its own network namespace (loopback only until networks exist),
/// and with it a sysfs of its own instead of the host's.
fn isolate_network(spec: &mut oci_spec::runtime::Spec) {
    use oci_spec::runtime::{LinuxNamespaceBuilder, LinuxNamespaceType};
    if let Some(linux) = spec.linux_mut() {
        let mut ns = linux.namespaces().clone().unwrap_or_default();
        if !ns.iter().any(|n| n.typ() == LinuxNamespaceType::Network) {
            if let Ok(net) = LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::Network)
                .build()
            {
                ns.push(net);
            }
        }
        linux.set_namespaces(Some(ns));
    }
    if let Some(mounts) = spec.mounts_mut() {
        for m in mounts.iter_mut() {
            if m.destination() == Path::new("/sys") {
                m.set_typ(Some("sysfs".into()));
                m.set_source(Some("sysfs".into()));
                m.set_options(Some(
                    ["nosuid", "noexec", "nodev", "ro"]
                        .map(String::from)
                        .to_vec(),
                ));
            }
        }
    }
}
