//! `exec`: starts another process in a running container.
//!
//! An intermediate child of the caller joins the container's cgroup (the caller moves it) and
//! its namespaces through `/proc/<init>/ns/*` (user first). Joining a pid namespace only
//! applies to children, so it then forks the final process with `CLONE_PARENT`: a direct child
//! of the caller, inside the container's pid namespace. That process applies the process
//! attributes and execs; a failure before execve comes back over the close-on-exec channel,
//! and the channel closing tells the caller the execve succeeded.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::sys::signal::{kill, Signal};
use nix::sys::stat::Mode;
use nix::sys::wait::waitpid;
use nix::unistd::{chdir, chroot, fchdir, Pid};
use oci_spec::runtime::{LinuxNamespaceType, Process, Spec};

use crate::cgroup;
use crate::console::{self, Console, Prepared};
use crate::create::write_pid_file;
use crate::error::{Error, Result, SysContext};
use crate::init::enter_namespaces;
use crate::namespaces::{self, Plan, JOIN_ORDER};
use crate::process;
use crate::seccomp::Filter;
use crate::state::{State, Status, CONFIG_FILE};
use crate::sync::{Channel, Msg};

/// What [`exec`] runs.
#[derive(Debug)]
pub struct ExecOptions {
    /// The process (args, env, cwd, user, capabilities, rlimits, no_new_privs, terminal).
    pub process: Process,
    /// Its terminal.
    pub console: Console,
    /// File to write its pid to.
    pub pid_file: Option<PathBuf>,
    /// Number of descriptors after stdio the process keeps.
    pub preserve_fds: u32,
}

impl ExecOptions {
    /// Runs `process` with inherited stdio.
    pub fn new(process: Process) -> Self {
        ExecOptions {
            process,
            console: Console::Inherit,
            pid_file: None,
            preserve_fds: 0,
        }
    }
}

/// The spec container `id` was created with.
pub fn container_spec(root: &Path, id: &str) -> Result<Spec> {
    let dir = crate::state::container_dir(root, id)?;
    let path = dir.join(CONFIG_FILE);
    Spec::load(&path).map_err(|source| Error::SpecLoad { path, source })
}

/// Starts `opts.process` in container `id` and returns its pid once it has exec'd. The process
/// is a direct child of the caller, which must be single-threaded and should `waitpid` it.
/// The container's seccomp profile applies to it too.
pub fn exec(root: &Path, id: &str, opts: ExecOptions) -> Result<Pid> {
    let (state, _) = State::load(root, id)?;
    if !matches!(state.status, Status::Created | Status::Running) {
        return Err(Error::WrongState {
            id: id.to_string(),
            status: state.status,
            hint: "exec needs a created or running container",
        });
    }
    let spec = container_spec(root, id)?;
    let seccomp = match spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) {
        Some(s) => Some(crate::seccomp::compile(s)?),
        None => None,
    };
    let spec_plan = Plan::from_spec(&spec)?;
    let join: Vec<(LinuxNamespaceType, PathBuf)> = JOIN_ORDER
        .into_iter()
        .filter(|t| spec_plan.has(*t))
        .map(|t| {
            (
                t,
                PathBuf::from(format!(
                    "/proc/{}/ns/{}",
                    state.pid,
                    namespaces::proc_name(t)
                )),
            )
        })
        .collect();
    let plan = Plan {
        join: join.clone(),
        new_user: false,
        new: nix::sched::CloneFlags::empty(),
        types: spec_plan.types.clone(),
    };
    // Without a mount namespace of its own the container is chrooted into its rootfs; the
    // process is put in the same root (runc leaves it in the runtime's).
    let shared_root = if spec_plan.has(LinuxNamespaceType::Mount) {
        None
    } else {
        let path = format!("/proc/{}/root", state.pid);
        let fd = nix::fcntl::open(
            path.as_str(),
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .sys(|| format!("open the container's root {path}"))?;
        // SAFETY: `open` returned a fresh descriptor that nothing else owns.
        Some(unsafe { OwnedFd::from_raw_fd(fd) })
    };
    let cg = match &state.cgroup_path {
        Some(_) => Some(cgroup::of_state(&state)?),
        None => None,
    };
    let console = opts.console.prepare()?;
    let (parent, child) = Channel::pair()?;
    let intermediate = crate::fork::fork(|| {
        parent.close_inherited();
        let run = || -> Result<()> {
            enter_namespaces(&child, &plan, &join)?;
            let pid = crate::fork::fork_as_sibling(|| {
                final_process(
                    &child,
                    shared_root.as_ref(),
                    &opts.process,
                    &console,
                    seccomp.as_ref(),
                    opts.preserve_fds,
                )
            })?;
            child.send(&Msg::Child(pid.as_raw()))
        };
        match run() {
            Ok(()) => 0,
            Err(e) => {
                child.fail(&e);
                1
            }
        }
    })?;
    drop(child);
    let reap = |pid: Pid| {
        let _ = kill(pid, Signal::SIGKILL);
        let _ = waitpid(pid, None);
    };
    if let Some(cg) = &cg {
        if let Err(e) = cgroup::add_exec_process(cg.as_ref(), intermediate.as_raw(), state.pid) {
            reap(intermediate);
            return Err(cgroup::err("add the exec process", cg.path())(e));
        }
    }
    if let Err(e) = parent.send(&Msg::Go) {
        reap(intermediate);
        return Err(e);
    }
    let mut final_pid: Option<Pid> = None;
    loop {
        let msg = match parent.recv() {
            Ok(m) => m,
            Err(e) => {
                final_pid.into_iter().chain([intermediate]).for_each(reap);
                return Err(e);
            }
        };
        match msg {
            Some(Msg::Child(pid)) if final_pid.is_none() => {
                let pid = Pid::from_raw(pid);
                final_pid = Some(pid);
                let _ = waitpid(intermediate, None);
                // The process waits for this before it sends anything.
                if let Err(e) = parent.send(&Msg::Pid(pid.as_raw())) {
                    reap(pid);
                    return Err(e);
                }
            }
            Some(Msg::Failed(m)) => {
                final_pid.into_iter().chain([intermediate]).for_each(reap);
                return Err(Error::Exec(m));
            }
            Some(other) => {
                final_pid.into_iter().chain([intermediate]).for_each(reap);
                return Err(Error::Exec(format!("unexpected message {other:?}")));
            }
            None => break,
        }
    }
    let Some(pid) = final_pid else {
        let status = waitpid(intermediate, None);
        return Err(Error::Exec(format!(
            "the exec process exited during setup ({status:?})"
        )));
    };
    if let Some(f) = &opts.pid_file {
        write_pid_file(f, pid)?;
    }
    tracing::info!(container = %id, pid = pid.as_raw(), "exec");
    Ok(pid)
}

/// The process that execs. Returns an exit code only on failure.
fn final_process(
    ch: &Channel,
    shared_root: Option<&OwnedFd>,
    process: &Process,
    console: &Prepared,
    seccomp: Option<&Filter>,
    preserve_fds: u32,
) -> i32 {
    // Nothing may be sent before the runtime has the pid (see `sync`).
    if ch.wait_for_pid().is_err() {
        return 1;
    }
    let run = || -> Result<process::Ready> {
        crate::fork::reset_signals();
        if let Some(root) = shared_root {
            fchdir(root.as_raw_fd()).sys(|| "fchdir to the container's root".into())?;
            chroot(".").sys(|| "chroot into the container's root".into())?;
        }
        chdir("/").sys(|| "chdir / in the container".into())?;
        match console {
            Prepared::Socket(sock) => {
                let size = process.console_size().map(|b| {
                    (
                        b.height().min(u16::MAX as u64) as u16,
                        b.width().min(u16::MAX as u64) as u16,
                    )
                });
                let slave = console::open_socket_console(sock, false, size)?;
                console::attach(&slave)?;
            }
            Prepared::Pty { slave, .. } => console::attach(slave)?,
            Prepared::Inherit => {}
        }
        process::apply(process, seccomp.cloned())
    };
    match run() {
        Ok(ready) => match ready.exec(preserve_fds) {
            // Like runc, a failed execve is the process's own failure: it says why on its
            // stderr and exits with 1, and the exec itself succeeded (the channel closes).
            err @ Error::Execve { .. } => {
                process::report_exec_failure(&err);
                1
            }
            err => {
                ch.fail(&err);
                127
            }
        },
        Err(err) => {
            ch.fail(&err);
            127
        }
    }
}
