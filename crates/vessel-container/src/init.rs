//! The container side of `create`: the intermediate process (namespaces) and the init (rootfs,
//! process setup, waiting for start, execve). Everything here runs in forked children and
//! reports failures to the runtime over the channel.

use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use nix::fcntl::{open, OFlag};
use nix::sched::CloneFlags;
use nix::sys::stat::Mode;
use nix::unistd::{setgroups, sethostname, setresgid, setresuid, Gid, Uid};
use oci_spec::runtime::{LinuxNamespaceType, Spec};

use crate::console::{self, Prepared};
use crate::error::{Error, Result, SysContext};
use crate::hooks::{self, HookState, Kind};
use crate::namespaces::{self, Plan};
use crate::process::{self, Ready};
use crate::rootfs;
use crate::seccomp::Filter;
use crate::state::Status;
use crate::sync::{Channel, Msg};

/// Everything the container processes need, prepared by the runtime before forking.
#[derive(Debug)]
pub(crate) struct InitContext<'a> {
    /// Container id (for the hooks' state).
    pub id: &'a str,
    pub spec: &'a Spec,
    pub plan: &'a Plan,
    pub rootfs: &'a Path,
    pub bundle: &'a Path,
    pub cgroup_path: Option<&'a str>,
    pub console: &'a Prepared,
    /// O_PATH descriptor of the exec fifo.
    pub fifo: &'a OwnedFd,
    pub seccomp: Option<&'a Filter>,
    pub preserve_fds: u32,
    pub no_pivot: bool,
}

/// Waits for `want` from the runtime.
pub(crate) fn expect(ch: &Channel, want: Msg) -> Result<()> {
    match ch.recv()? {
        Some(m) if m == want => Ok(()),
        other => Err(Error::Init(format!(
            "expected {want:?} from the runtime, got {other:?}"
        ))),
    }
}

/// Enters the namespaces: joins those given by path (user first), creates the user namespace
/// and has the runtime write its maps, becomes root in it, creates the other namespaces.
pub(crate) fn enter_namespaces(
    ch: &Channel,
    plan: &Plan,
    join: &[(LinuxNamespaceType, std::path::PathBuf)],
) -> Result<()> {
    expect(ch, Msg::Go)?;
    namespaces::join(join)?;
    if plan.new_user {
        namespaces::create(CloneFlags::CLONE_NEWUSER)?;
        ch.send(&Msg::NeedIdMaps)?;
        expect(ch, Msg::IdMapsDone)?;
    }
    if plan.has_user() {
        // Act as the namespace's root from here on (files created get its owner).
        setgroups(&[]).sys(|| "clear supplementary groups in the user namespace".into())?;
        setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0))
            .sys(|| "become gid 0 in the user namespace (is gid 0 mapped?)".into())?;
        setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0))
            .sys(|| "become uid 0 in the user namespace (is uid 0 mapped?)".into())?;
    }
    Ok(())
}

/// The intermediate process of `create`. Returns its exit code.
pub(crate) fn intermediate(ch: &Channel, ctx: &InitContext<'_>) -> i32 {
    let run = || -> Result<()> {
        enter_namespaces(ch, ctx.plan, &ctx.plan.join)?;
        namespaces::create(ctx.plan.new)?;
        let pid = crate::fork::fork_as_sibling(|| init(ch, ctx))?;
        ch.send(&Msg::Child(pid.as_raw()))
    };
    match run() {
        Ok(()) => 0,
        Err(e) => {
            ch.fail(&e);
            1
        }
    }
}

/// The container's init: pid 1 of its pid namespace. Returns an exit code only on failure.
fn init(ch: &Channel, ctx: &InitContext<'_>) -> i32 {
    // Nothing may be sent before the runtime has the pid (see `sync`); if the runtime is gone
    // there is nobody to report to.
    let host_pid = match ch.wait_for_pid() {
        Ok(pid) => pid,
        Err(_) => return 1,
    };
    let state = HookState::new(ctx.spec, ctx.id, ctx.bundle, Status::Creating, host_pid);
    let ready = match setup(ch, ctx, &state) {
        Ok(ready) => ready,
        Err(e) => {
            ch.fail(&e);
            return 1;
        }
    };
    // The runtime has returned: from here on the exec fifo carries the outcome to `start`, and
    // stderr is all that is left for the rest. It stays open (close-on-exec) until execve, so
    // `start` sees end of file once the user process is executed.
    let _fifo = match wait_for_start(ctx, &state.with_status(Status::Created)) {
        Ok(fd) => fd,
        Err(e) => {
            crate::process::report_exec_failure(&e);
            return 1;
        }
    };
    let err = ready.exec(ctx.preserve_fds);
    // Like runc, a failed execve reads "exec PATH: REASON" and the container exits with 1.
    crate::process::report_exec_failure(&err);
    1
}

fn setup(ch: &Channel, ctx: &InitContext<'_>, state: &HookState) -> Result<Ready> {
    crate::fork::reset_signals();
    let _ = nix::unistd::setsid();
    let spec = ctx.spec;
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| Error::InvalidSpec("the spec has no process section".into()))?;
    let terminal = process.terminal() == Some(true);
    if matches!(ctx.console, Prepared::Socket(_)) && !terminal {
        return Err(Error::InvalidSpec(
            "a console socket was given but process.terminal is false".into(),
        ));
    }
    let mount_ns = ctx.plan.has(LinuxNamespaceType::Mount);
    let console_host_path = match ctx.console {
        Prepared::Pty { host_path, .. } => Some(host_path.clone()),
        _ => None,
    };
    rootfs::prepare(
        spec,
        &rootfs::Context {
            rootfs: ctx.rootfs,
            bundle: ctx.bundle,
            user_ns: ctx.plan.has_user(),
            mount_ns,
            cgroup_ns: ctx.plan.has(LinuxNamespaceType::Cgroup),
            cgroup_path: ctx.cgroup_path,
            console: console_host_path,
        },
    )?;
    // The namespaces and mounts exist, pivot_root is still to come: the runtime runs the
    // prestart and createRuntime hooks, then the init the createContainer hooks.
    if !hooks::of(spec, Kind::Prestart).is_empty()
        || !hooks::of(spec, Kind::CreateRuntime).is_empty()
    {
        ch.send(&Msg::Hooks)?;
        expect(ch, Msg::HooksDone)?;
    }
    hooks::run(spec, Kind::CreateContainer, state)?;
    let how = match (mount_ns, ctx.no_pivot) {
        (false, _) => rootfs::SwitchRoot::Chroot,
        (true, true) => rootfs::SwitchRoot::Move,
        (true, false) => rootfs::SwitchRoot::Pivot,
    };
    rootfs::switch_root(ctx.rootfs, how)?;
    match ctx.console {
        Prepared::Socket(sock) => {
            let size = process.console_size().map(|b| {
                (
                    b.height().min(u16::MAX as u64) as u16,
                    b.width().min(u16::MAX as u64) as u16,
                )
            });
            let slave = console::open_socket_console(sock, true, size)?;
            console::attach(&slave)?;
        }
        Prepared::Pty { slave, .. } => console::attach(slave)?,
        Prepared::Inherit => {}
    }
    set_hostname(spec, ctx.plan)?;
    set_sysctls(spec)?;
    rootfs::finalize(spec)?;
    let ready = process::apply(process, ctx.seccomp.cloned())?;
    ch.send(&Msg::Ready)?;
    Ok(ready)
}

fn set_hostname(spec: &Spec, plan: &Plan) -> Result<()> {
    let hostname = spec.hostname().as_deref().filter(|h| !h.is_empty());
    let domainname = spec.domainname().as_deref().filter(|h| !h.is_empty());
    if (hostname.is_some() || domainname.is_some()) && !plan.has(LinuxNamespaceType::Uts) {
        return Err(Error::InvalidSpec(
            "hostname or domainname set without a UTS namespace: add one or drop them".into(),
        ));
    }
    if let Some(h) = hostname {
        sethostname(h).sys(|| format!("sethostname {h}"))?;
    }
    if let Some(d) = domainname {
        // SAFETY: the pointer and length describe the bytes of `d`, which outlives the call.
        let rc = unsafe { libc::setdomainname(d.as_ptr().cast(), d.len()) };
        if rc != 0 {
            return Err(Error::sys(format!("setdomainname {d}"), nix::Error::last()));
        }
    }
    Ok(())
}

fn set_sysctls(spec: &Spec) -> Result<()> {
    let sysctls = spec
        .linux()
        .as_ref()
        .and_then(|l| l.sysctl().clone())
        .unwrap_or_default();
    for (key, value) in sysctls {
        if key.is_empty() || key.contains('/') || key.split('.').any(|c| c.is_empty() || c == "..")
        {
            return Err(Error::InvalidSpec(format!(
                "sysctl {key:?} is not a valid name"
            )));
        }
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        fs::write(&path, &value).map_err(|e| Error::io("write sysctl", path, e))?;
    }
    Ok(())
}

/// What the init writes to the exec fifo when it goes on to exec the user process.
pub(crate) const FIFO_GO: u8 = b'0';
/// What the init writes, followed by the reason, when a startContainer hook failed.
pub(crate) const FIFO_FAILED: u8 = b'1';

/// Blocks until `start` opens the exec fifo for reading, runs the startContainer hooks, and
/// tells `start` the outcome. Returns the fifo's write end, to be kept open until execve.
fn wait_for_start(ctx: &InitContext<'_>, state: &HookState) -> Result<OwnedFd> {
    let path = format!("/proc/self/fd/{}", ctx.fifo.as_raw_fd());
    let fd = open(
        Path::new(&path),
        OFlag::O_WRONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .sys(|| format!("open the exec fifo through {path} (is /proc mounted?)"))?;
    // SAFETY: `open` returned a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    if let Err(e) = hooks::run(ctx.spec, Kind::StartContainer, state) {
        // One write below PIPE_BUF arrives whole.
        let mut msg = vec![FIFO_FAILED];
        msg.extend(e.chain().bytes().take(libc::PIPE_BUF - 1));
        let _ = nix::unistd::write(&fd, &msg);
        return Err(e);
    }
    nix::unistd::write(&fd, &[FIFO_GO]).sys(|| "write to the exec fifo".into())?;
    Ok(fd)
}
