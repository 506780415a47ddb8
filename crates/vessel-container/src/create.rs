//! `create`: sets up a container whose init waits for `start`.
//!
//! The caller forks an intermediate child, which joins the namespaces given by path, creates
//! the user namespace (the caller then writes its id maps), creates the other namespaces, and
//! forks the init with `CLONE_PARENT`: the init is a direct child of the caller (so the caller
//! can `waitpid` it) and pid 1 of the new pid namespace. The init sets up the rootfs and the
//! process, reports `Ready`, and blocks opening the exec fifo until `start` opens it.

use std::collections::BTreeMap;
use std::fs;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{open, OFlag};
use nix::mount::{umount2, MntFlags};
use nix::sys::signal::{kill, Signal};
use nix::sys::stat::Mode;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{mkfifo, Pid};
use oci_spec::runtime::{LinuxNamespaceType, Spec};
use vessel_cgroups::CgroupManager;

use crate::cgroup;
use crate::console::Console;
use crate::error::{Error, Result, SysContext};
use crate::hooks::{self, HookState, Kind};
use crate::init;
use crate::mounts;
use crate::namespaces::{self, Plan};
use crate::state::{self, State, Status, CONFIG_FILE, EXEC_FIFO, OCI_VERSION};
use crate::sync::{Channel, Msg};

/// What [`create`] needs.
#[derive(Debug)]
pub struct CreateOptions {
    /// Container id (a directory name under `state_root`).
    pub id: String,
    /// Bundle directory (holds config.json and usually the rootfs).
    pub bundle: PathBuf,
    /// Where container states live (like runc's `--root`); see [`crate::DEFAULT_STATE_ROOT`].
    pub state_root: PathBuf,
    /// The container's terminal.
    pub console: Console,
    /// File to write the init's pid to.
    pub pid_file: Option<PathBuf>,
    /// The spec; `None` reads `bundle/config.json`.
    pub spec: Option<Spec>,
    /// Number of descriptors after stdio (3, 4, ...) the init keeps, like runc's
    /// `--preserve-fds`.
    pub preserve_fds: u32,
    /// Use MS_MOVE and chroot instead of pivot_root (for a rootfs on ramfs).
    pub no_pivot: bool,
}

impl CreateOptions {
    /// Options with defaults: inherited stdio, the default state root, the bundle's config.
    pub fn new(id: impl Into<String>, bundle: impl Into<PathBuf>) -> Self {
        CreateOptions {
            id: id.into(),
            bundle: bundle.into(),
            state_root: state::DEFAULT_STATE_ROOT.into(),
            console: Console::Inherit,
            pid_file: None,
            spec: None,
            preserve_fds: 0,
            no_pivot: false,
        }
    }
}

/// Undoes a half-made container when creation fails, then runs its poststop hooks (the
/// runtime spec's lifecycle continues with destroying the container, as runc does).
struct Cleanup<'a> {
    dir: &'a Path,
    cgroup: Option<Box<dyn CgroupManager>>,
    children: Vec<Pid>,
    spec: &'a Spec,
    /// The state the poststop hooks get.
    stopped: HookState,
    /// For a container sharing the runtime's mount namespace: its rootfs and the topmost mount
    /// there before the init ran (a new one on top is the init's, to detach).
    shared_mounts: Option<(&'a Path, Option<u64>)>,
    armed: bool,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        for pid in &self.children {
            let _ = kill(*pid, Signal::SIGKILL);
            let _ = waitpid(*pid, None);
        }
        if let Some(cg) = &self.cgroup {
            if let Err(e) = cg.destroy() {
                tracing::warn!(error = %e, "removing the cgroup of a failed container");
            }
        }
        if let Some((rootfs, before)) = self.shared_mounts {
            if mounts::top_mount_id(rootfs) != before {
                if let Err(e) = umount2(rootfs, MntFlags::MNT_DETACH) {
                    tracing::warn!(error = %e, rootfs = %rootfs.display(), "detaching the mounts of a failed container");
                }
            }
        }
        let _ = fs::remove_dir_all(self.dir);
        hooks::run_warn(self.spec, Kind::Poststop, &self.stopped);
    }
}

/// Creates container `opts.id`: when this returns, the init process is a child of the caller,
/// fully set up and blocked until [`crate::start`]. The caller must be single-threaded.
pub fn create(opts: CreateOptions) -> Result<State> {
    state::validate_id(&opts.id)?;
    let bundle =
        fs::canonicalize(&opts.bundle).map_err(|e| Error::io("resolve bundle", &opts.bundle, e))?;
    let spec = match opts.spec {
        Some(s) => s,
        None => {
            let path = bundle.join("config.json");
            Spec::load(&path).map_err(|source| Error::SpecLoad { path, source })?
        }
    };
    let rootfs = rootfs_path(&spec, &bundle)?;
    hooks::validate(&spec)?;
    let plan = Plan::from_spec(&spec)?;
    namespaces::check_shared_mount_namespace(&spec, &plan)?;
    let shares_mounts = !plan.has(LinuxNamespaceType::Mount);
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| Error::InvalidSpec("the spec has no process section".into()))?;
    if process.args().as_ref().is_none_or(|a| a.is_empty()) {
        return Err(Error::InvalidSpec(
            "process.args is empty: give the command to run".into(),
        ));
    }
    let seccomp = match spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) {
        Some(s) => Some(crate::seccomp::compile(s)?),
        None => None,
    };

    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o711)
        .create(&opts.state_root)
        .map_err(|e| Error::io("create state root", &opts.state_root, e))?;
    let dir = opts.state_root.join(&opts.id);
    match fs::DirBuilder::new().mode(0o711).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(Error::AlreadyExists(opts.id))
        }
        Err(e) => return Err(Error::io("create state directory", &dir, e)),
    }
    let mut cleanup = Cleanup {
        dir: &dir,
        cgroup: None,
        children: Vec::new(),
        spec: &spec,
        stopped: HookState::new(&spec, &opts.id, &bundle, Status::Stopped, 0),
        shared_mounts: shares_mounts.then(|| (rootfs.as_path(), mounts::top_mount_id(&rootfs))),
        armed: true,
    };
    spec.save(dir.join(CONFIG_FILE))
        .map_err(|e| Error::Init(format!("saving the spec in the state directory: {e}")))?;
    let fifo_path = dir.join(EXEC_FIFO);
    mkfifo(&fifo_path, Mode::from_bits_truncate(0o622))
        .sys(|| format!("mkfifo {}", fifo_path.display()))?;
    // Any container uid must be able to open it for writing: mkfifo applied the umask.
    fs::set_permissions(
        &fifo_path,
        std::os::unix::fs::PermissionsExt::from_mode(0o622),
    )
    .map_err(|e| Error::io("chmod", &fifo_path, e))?;
    let fifo_raw = open(&fifo_path, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty())
        .sys(|| format!("open {}", fifo_path.display()))?;
    // SAFETY: `open` returned a fresh descriptor that nothing else owns.
    let fifo = unsafe { OwnedFd::from_raw_fd(fifo_raw) };

    // The cgroup, before any process exists, so the init starts inside it.
    let cgroup_spec_path = spec
        .linux()
        .as_ref()
        .and_then(|l| l.cgroups_path().as_ref())
        .map(|p| p.to_string_lossy().into_owned());
    let cg_path = cgroup::resolve_path(cgroup_spec_path.as_deref(), &opts.id)?;
    let (cgroup_path, cgroup_error) = match cgroup::open(&cg_path)? {
        Ok(m) => {
            m.create().map_err(cgroup::err("create", &cg_path))?;
            cleanup.cgroup = Some(m);
            let m = cleanup
                .cgroup
                .as_ref()
                .ok_or_else(|| Error::Init("cgroup vanished".into()))?;
            if let Some(res) = spec.linux().as_ref().and_then(|l| l.resources().as_ref()) {
                let devices = spec
                    .linux()
                    .as_ref()
                    .and_then(|l| l.devices().clone())
                    .unwrap_or_default();
                let res = crate::devices::with_device_rules(res, &devices);
                m.apply(&res)
                    .map_err(cgroup::err("apply limits", &cg_path))?;
            }
            if let Some((uid, gid)) = cgroup::delegation_owner(&spec, &plan) {
                m.delegate(uid, gid)
                    .map_err(cgroup::err("delegate", &cg_path))?;
            }
            (Some(cg_path), None)
        }
        Err(reason) => {
            tracing::warn!(
                container = %opts.id,
                %reason,
                "no cgroup backend: the container runs without a cgroup and its resource limits \
                 are not applied"
            );
            (None, Some(reason))
        }
    };

    let console = opts.console.prepare()?;
    let (parent, child) = Channel::pair()?;
    let ctx = init::InitContext {
        id: &opts.id,
        spec: &spec,
        plan: &plan,
        rootfs: &rootfs,
        bundle: &bundle,
        cgroup_path: cgroup_path.as_deref(),
        console: &console,
        fifo: &fifo,
        seccomp: seccomp.as_ref(),
        preserve_fds: opts.preserve_fds,
        no_pivot: opts.no_pivot,
    };
    let intermediate = crate::fork::fork(|| {
        parent.close_inherited();
        init::intermediate(&child, &ctx)
    })?;
    drop(child);
    cleanup.children.push(intermediate);
    if let Some(cg) = &cleanup.cgroup {
        cg.add_process(intermediate.as_raw())
            .map_err(cgroup::err("add the init process", cg.path()))?;
    }
    parent.send(&Msg::Go)?;
    let mut init_pid = None;
    loop {
        match parent.recv()? {
            Some(Msg::NeedIdMaps) => {
                namespaces::write_id_maps(intermediate, &spec)?;
                parent.send(&Msg::IdMapsDone)?;
            }
            Some(Msg::Child(pid)) if init_pid.is_none() => {
                let pid = Pid::from_raw(pid);
                cleanup.children.push(pid);
                init_pid = Some(pid);
                match waitpid(intermediate, None) {
                    Ok(WaitStatus::Exited(_, 0)) => {}
                    other => {
                        return Err(Error::Init(format!(
                            "intermediate process ended with {other:?}"
                        )))
                    }
                }
                cleanup.children.retain(|p| *p != intermediate);
                // The init waits for this before it sends anything.
                parent.send(&Msg::Pid(pid.as_raw()))?;
            }
            Some(Msg::Hooks) => {
                let pid = init_pid.ok_or_else(|| Error::Init("hooks asked before pid".into()))?;
                let state =
                    HookState::new(&spec, &opts.id, &bundle, Status::Creating, pid.as_raw());
                hooks::run(&spec, Kind::Prestart, &state)?;
                hooks::run(&spec, Kind::CreateRuntime, &state)?;
                parent.send(&Msg::HooksDone)?;
            }
            Some(Msg::Ready) if init_pid.is_some() => break,
            Some(Msg::Failed(msg)) => return Err(Error::Init(msg)),
            Some(other) => return Err(Error::Init(format!("unexpected message {other:?}"))),
            None => {
                let who = init_pid.unwrap_or(intermediate);
                let status = waitpid(who, None);
                cleanup.children.retain(|p| *p != who);
                return Err(Error::Init(format!(
                    "the container process exited during setup ({status:?})"
                )));
            }
        }
    }
    let pid = init_pid.ok_or_else(|| Error::Init("the init's pid never arrived".into()))?;
    drop(console);
    let mut namespace_paths = BTreeMap::new();
    for typ in &plan.types {
        namespace_paths.insert(
            namespaces::oci_name(*typ).to_string(),
            PathBuf::from(format!("/proc/{pid}/ns/{}", namespaces::proc_name(*typ))),
        );
    }
    // The bind mount of the rootfs the init made on top of what was there.
    let host_mount_id = cleanup.shared_mounts.and_then(|(rootfs, before)| {
        mounts::top_mount_id(rootfs).filter(|now| Some(*now) != before)
    });
    let state = State {
        oci_version: OCI_VERSION.into(),
        id: opts.id.clone(),
        status: Status::Created,
        pid: pid.as_raw(),
        bundle: bundle.clone(),
        rootfs: rootfs.clone(),
        created: state::now_rfc3339(),
        annotations: spec.annotations().clone().unwrap_or_default(),
        cgroup_path,
        cgroup_error,
        namespace_paths,
        init_start_time: state::process_start_time(pid.as_raw()).unwrap_or(0),
        host_mount_id,
    };
    state.save(&dir)?;
    if let Some(pid_file) = &opts.pid_file {
        write_pid_file(pid_file, pid)?;
    }
    cleanup.armed = false;
    tracing::info!(container = %opts.id, pid = pid.as_raw(), "created");
    Ok(state)
}

/// The rootfs path: `root.path`, relative to the bundle unless absolute.
fn rootfs_path(spec: &Spec, bundle: &Path) -> Result<PathBuf> {
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| Error::InvalidSpec("the spec has no root section".into()))?;
    let path = bundle.join(root.path());
    let path = fs::canonicalize(&path).map_err(|e| Error::io("resolve root.path", &path, e))?;
    if !path.is_dir() {
        return Err(Error::InvalidSpec(format!(
            "root.path {} is not a directory",
            path.display()
        )));
    }
    Ok(path)
}

/// Writes a pid file atomically (conmon and podman read it as soon as it appears).
pub(crate) fn write_pid_file(path: &Path, pid: Pid) -> Result<()> {
    let tmp = path.with_extension("vessel-tmp");
    fs::write(&tmp, pid.as_raw().to_string()).map_err(|e| Error::io("write pid file", &tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| Error::io("rename pid file", path, e))
}
