//! Lifecycle of one VM: start, adopt, status, pause/resume/reset, shutdown.
//!
//! A VM is its QEMU process (detached from the caller, see [`crate::spawn`]) plus files under
//! its run directory: QMP, console and agent sockets, the console log, QEMU's pid file and
//! `vm.json`, the description [`adopt`] reads back after the caller restarts.

use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use vessel_cgroups::{CgroupManager, CgroupStats};

use crate::cmdline::{qemu_args, TapFds};
use crate::error::{Result, VmError};
use crate::exit::ExitWatch;
use crate::host::{self, Process, QEMU};
use crate::machine::{Accel, Firmware, LogSink, MachineDef, Media, NicBackend, Profile, VmPaths};
use crate::qmp::{EventSink, Qmp, QmpError, RunState};
use crate::spawn::{self, RunAs};

/// How long QEMU may take to set the machine up and answer on QMP.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a QMP command may take.
const QMP_TIMEOUT: Duration = Duration::from_secs(15);
/// How long QEMU gets to exit after `quit` before SIGKILL.
const QUIT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a graceful shutdown presses the power button again while it waits.
const POWER_BUTTON_REPEAT: Duration = Duration::from_secs(5);
/// How long the console log sink gets to drain the pipe and exit after QEMU is gone.
const SINK_EXIT_TIMEOUT: Duration = Duration::from_secs(2);
/// Capacity of the pipe into the console log sink: QEMU's writes wait on the sink (and its
/// disk) only when it is this far behind.
const SINK_PIPE_SIZE: i32 = 1 << 20;

/// A process named by pid and start time (which tells it from a later one with the same pid).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessId {
    /// Pid.
    pub pid: i32,
    /// Start time, clock ticks after boot.
    pub start_time: u64,
}

impl ProcessId {
    /// Watches the process if it is still the one recorded.
    pub(crate) fn watch(&self) -> Option<Process> {
        Process::watch(self.pid).filter(|_| host::start_time(self.pid) == Some(self.start_time))
    }
}

/// What [`adopt`] needs to find a VM again; stored as `vm.json` in the run directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmRecord {
    /// Instance name.
    pub name: String,
    /// QEMU's pid.
    pub pid: i32,
    /// QEMU's start time (clock ticks after boot), which tells it from a later process with
    /// the same pid.
    pub start_time: u64,
    /// `para` or `full`.
    pub profile: String,
    /// The VM's files.
    pub paths: VmPaths,
    /// Whether the VM has a guest agent port.
    pub has_agent: bool,
    /// Whether the VM has a VNC socket.
    pub has_vnc: bool,
    /// Its cgroup, if any.
    pub cgroup: Option<String>,
    /// The console log sink, if the VM has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_sink: Option<ProcessId>,
    /// Length of `qemu.log` when this run started: what QEMU wrote in this run follows.
    #[serde(default)]
    pub qemu_log_offset: u64,
    /// Guest RAM it booted with, MiB.
    #[serde(default)]
    pub memory_mib: u64,
    /// The most guest RAM can grow to, MiB, when it can.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_max_mib: Option<u64>,
    /// What its cgroup's memory limit allows QEMU above guest RAM, MiB.
    #[serde(default)]
    pub memory_overhead_mib: u64,
    /// The most vCPUs it may have, when more can be plugged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpus_max: Option<u32>,
    /// vCPUs it booted with (0 in a record from before this was kept).
    #[serde(default)]
    pub vcpus: u32,
}

/// A running VM.
#[derive(Debug)]
pub struct RunningVm {
    /// Instance name.
    pub name: String,
    /// QEMU's pid.
    pub pid: i32,
    /// QMP socket (this handle holds the one QMP connection QEMU accepts).
    pub qmp_socket: PathBuf,
    /// Console socket: connect to read and type on the console.
    pub console_socket: PathBuf,
    /// Everything the console printed so far.
    pub console_log: PathBuf,
    /// Guest agent socket (`para`), for [`crate::agent_exec`].
    pub agent_socket: Option<PathBuf>,
    /// VNC socket (`full`).
    pub vnc_socket: Option<PathBuf>,
    /// QEMU's pid file.
    pub pidfile: PathBuf,
    /// The record written to `vm.json`.
    pub record: VmRecord,
    pub(crate) process: Process,
    qmp: Qmp,
    pub(crate) cgroup: Option<Box<dyn CgroupManager>>,
    /// The console log sink.
    sink: Option<Process>,
    /// What QMP told about the VM's end, and how the caller stopped it.
    pub(crate) exit: Arc<ExitWatch>,
}

/// The state of a VM as QEMU reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmStatus {
    /// vCPUs run.
    Running,
    /// Paused by [`RunningVm::pause`].
    Paused,
    /// QEMU is up, the guest has not started.
    Prelaunch,
    /// QEMU has exited.
    Stopped,
    /// Another QEMU run state (I/O error, guest panicked, ...).
    Other(RunState),
}

/// How [`RunningVm::shutdown`] ended the VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownHow {
    /// The guest powered off after the ACPI power button.
    Graceful,
    /// The guest did not react in time; QEMU was told to `quit`.
    Quit,
    /// QEMU did not quit; it was killed.
    Killed,
    /// QEMU had already exited.
    AlreadyStopped,
}

/// Result of [`RunningVm::shutdown`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownOutcome {
    /// Which step ended it.
    pub how: ShutdownHow,
    /// How long it took.
    pub took: Duration,
}

/// Undoes a half-done start: kills QEMU and the log sink, removes the cgroup and every file
/// made.
struct StartGuard<'a> {
    paths: &'a VmPaths,
    created_dir: bool,
    process: Option<Process>,
    sink: Option<Process>,
    cgroup: Option<Box<dyn CgroupManager>>,
    armed: bool,
}

impl Drop for StartGuard<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Some(p) = &self.process {
            p.kill();
        }
        if let Some(p) = &self.sink {
            p.kill();
        }
        if let Some(cg) = &self.cgroup {
            let _ = cg.destroy();
        }
        if self.created_dir {
            let _ = std::fs::remove_dir_all(&self.paths.dir);
            return;
        }
        let p = self.paths;
        for f in [
            &p.qmp,
            &p.console,
            &p.agent,
            &p.vnc,
            &p.pidfile,
            &p.state,
            &p.console_log,
            &p.kernel_log,
            &p.qemu_log,
        ] {
            let _ = std::fs::remove_file(f);
        }
    }
}

/// Starts a VM: checks the definition, memory, files and disk images, starts the console log
/// sink and QEMU detached and paused, connects QMP (events go to `events`), places both into
/// the cgroup and lets the guest run. Blocking (about a second); call it from `spawn_blocking`
/// in async code. On any error QEMU is killed and nothing is left behind (a run directory made
/// here is removed).
pub fn start(def: &MachineDef, events: Option<EventSink>) -> Result<RunningVm> {
    start_cancellable(def, events, &AtomicBool::new(false))
}

/// [`start`] that gives up with [`VmError::Cancelled`], leaving nothing behind, once `cancel`
/// is set (checked before QEMU starts, while waiting for it, and before the guest runs).
pub fn start_cancellable(
    def: &MachineDef,
    events: Option<EventSink>,
    cancel: &AtomicBool,
) -> Result<RunningVm> {
    let check = || {
        if cancel.load(Ordering::SeqCst) {
            Err(VmError::Cancelled)
        } else {
            Ok(())
        }
    };
    check()?;
    def.validate()?;
    let qemu = QEMU.find()?;
    let available = host::mem_available()?;
    if def.memory_mib.saturating_mul(1 << 20) > available {
        return Err(VmError::NotEnoughMemory {
            requested_mib: def.memory_mib,
            available_mib: available >> 20,
        });
    }
    check_files(def)?;
    let run_as = def.run_as.as_ref();
    let paths = VmPaths::new(&def.run_dir);
    if let Some(pid) = read_pidfile(&paths.pidfile) {
        if Process::watch(pid).is_some() {
            return Err(VmError::StartFailed(format!(
                "{} names the live process {pid}: the VM is running already (adopt it)",
                paths.pidfile.display()
            )));
        }
    }
    let created_dir = !paths.dir.exists();
    std::fs::create_dir_all(&paths.dir).map_err(VmError::io("create", &paths.dir))?;
    let mut guard = StartGuard {
        paths: &paths,
        created_dir,
        process: None,
        sink: None,
        cgroup: None,
        armed: true,
    };
    for stale in [
        &paths.qmp,
        &paths.console,
        &paths.agent,
        &paths.vnc,
        &paths.pidfile,
        &paths.state,
    ] {
        let _ = std::fs::remove_file(stale);
    }
    // Each run gets a fresh console log; the previous run's is kept as console.log.1 (until
    // the sink rotates this run's log there).
    if paths.console_log.exists() {
        let _ = std::fs::rename(&paths.console_log, paths.dir.join("console.log.1"));
    }
    let qemu_log_offset = std::fs::metadata(&paths.qemu_log).map_or(0, |m| m.len());
    if let Profile::Full(f) = &def.profile {
        if f.firmware == Firmware::Uefi && !paths.uefi_vars.exists() {
            std::fs::copy(host::OVMF_VARS, &paths.uefi_vars).map_err(VmError::io(
                "copy the UEFI variable store to",
                &paths.uefi_vars,
            ))?;
        }
    }
    if let Some(u) = run_as {
        // The run directory (QEMU makes its sockets there) and what QEMU writes (disk files,
        // or the NBD sockets they are served on) are the VM user's alone.
        spawn::hand_over(&paths.dir, u, 0o700)?;
        for d in def
            .disks
            .iter()
            .filter(|d| !d.read_only && d.media == Media::Disk)
        {
            match &d.rbd {
                // An RBD image is no file: QEMU reads its configuration and key.
                Some(rbd) => {
                    spawn::hand_over(&rbd.conf, u, 0o600)?;
                    spawn::hand_over(&rbd.key_file, u, 0o600)?;
                }
                None => spawn::hand_over(&d.path, u, 0o600)?,
            }
        }
        if paths.uefi_vars.exists() {
            spawn::hand_over(&paths.uefi_vars, u, 0o600)?;
        }
    }
    let log_pipe = match &def.console_log_sink {
        Some(sink) => {
            let (process, pipe) = start_sink(sink, &paths, run_as)?;
            guard.sink = Some(process);
            Some(pipe)
        }
        None => None,
    };
    let taps = open_taps(def)?;
    let fds: Vec<Option<TapFds>> = taps
        .iter()
        .map(|t| {
            t.as_ref().map(|(tap, vhost)| TapFds {
                tap: tap.as_raw_fd(),
                vhost: vhost.as_ref().map(|v| v.as_raw_fd()),
            })
        })
        .collect();
    let log_fd = log_pipe.as_ref().map(|p| p.as_raw_fd());
    let inherit: Vec<RawFd> = fds
        .iter()
        .flatten()
        .flat_map(|f| [Some(f.tap), f.vhost])
        .flatten()
        .chain(log_fd)
        .collect();
    let args = qemu_args(def, &paths, &fds, log_fd)?;
    tracing::debug!(vm = %def.name, ?args, "starting QEMU");
    check()?;
    let pid = spawn::spawn_detached(&qemu, &args, &paths.qemu_log, run_as, &inherit)?;
    // QEMU holds its own copies now (the sink sees end-of-file once QEMU's copy is closed).
    drop(taps);
    drop(log_pipe);
    let watched = || {
        Process::watch(pid)
            .ok_or_else(|| VmError::StartFailed(log_tail(&paths.qemu_log, "QEMU exited at once")))
    };
    let process = watched()?;
    guard.process = Some(watched()?);
    let exit = Arc::new(ExitWatch::default());
    let qmp = connect_while_alive(&process, &paths, exit.sink(events), cancel)?;
    if let Some(path) = &def.cgroup {
        let cg = crate::cgroup::place(path, def, pid)?;
        let sink_placed = match &guard.sink {
            Some(s) => cg.add_process(s.pid),
            None => Ok(()),
        };
        guard.cgroup = Some(cg);
        sink_placed.map_err(|source| VmError::Cgroup {
            path: path.clone(),
            source,
        })?;
    }
    check()?;
    if !def.incoming {
        qmp.cont()?;
    }
    let record = VmRecord {
        name: def.name.clone(),
        pid,
        start_time: host::start_time(pid)
            .ok_or_else(|| VmError::StartFailed(log_tail(&paths.qemu_log, "QEMU exited")))?,
        profile: match def.profile {
            Profile::Para(_) => "para".into(),
            Profile::Full(_) => "full".into(),
        },
        paths: paths.clone(),
        has_agent: matches!(def.profile, Profile::Para(_)),
        has_vnc: matches!(def.profile, Profile::Full(_)),
        cgroup: def.cgroup.clone(),
        memory_mib: def.memory_mib,
        memory_max_mib: def.memory_max_mib.filter(|_| def.memory_hotplug()),
        memory_overhead_mib: (crate::cgroup::memory_limit(def) >> 20) - def.memory_mib,
        vcpus_max: def.vcpus_max.filter(|m| *m > def.vcpus),
        vcpus: def.vcpus,
        log_sink: guard.sink.as_ref().and_then(|s| {
            Some(ProcessId {
                pid: s.pid,
                start_time: host::start_time(s.pid)?,
            })
        }),
        qemu_log_offset,
    };
    write_record(&record)?;
    let cgroup = guard.cgroup.take();
    let sink = guard.sink.take();
    guard.armed = false;
    drop(guard);
    tracing::info!(vm = %def.name, pid, "VM started");
    let oom_base = cgroup_oom_kills(cgroup.as_deref());
    exit.set_oom_base(oom_base);
    Ok(RunningVm::new(record, process, qmp, cgroup, sink, exit))
}

/// Starts the console log sink (detached, as the VM's user) reading a new pipe; returns it
/// and the pipe's write end for QEMU.
fn start_sink(
    sink: &LogSink,
    paths: &VmPaths,
    run_as: Option<&RunAs>,
) -> Result<(Process, OwnedFd)> {
    let (read, write) = spawn::pipe()?;
    // SAFETY: F_SETPIPE_SZ on our own pipe; a refusal (over the system's limit) only leaves
    // the default 64 KiB.
    unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, SINK_PIPE_SIZE) };
    let mut args: Vec<OsString> = sink.args.iter().map(OsString::from).collect();
    args.push(paths.console_log.clone().into_os_string());
    let pid =
        spawn::spawn_detached_with_stdin(&sink.program, &args, read, &paths.qemu_log, run_as)?;
    let process = Process::watch(pid).ok_or_else(|| {
        VmError::StartFailed(log_tail(
            &paths.qemu_log,
            &format!(
                "the console log sink {} exited at once",
                sink.program.display()
            ),
        ))
    })?;
    Ok((process, write))
}

/// The OOM kills counted in a cgroup so far (0 without one).
pub(crate) fn cgroup_oom_kills(cg: Option<&dyn CgroupManager>) -> u64 {
    cg.and_then(|c| c.stats().ok()).map_or(0, |s| s.oom_kills)
}

/// Opens a queue of each tap NIC's device (as root, in the caller's network namespace) and,
/// under KVM, `/dev/vhost-net` for virtio NICs: QEMU, unprivileged, inherits the descriptors
/// and never needs access to `/dev/net/tun` itself (whatever its mode).
fn open_taps(def: &MachineDef) -> Result<Vec<Option<OpenTap>>> {
    let vhost_wanted = def.accel == Accel::Kvm && matches!(def.profile, Profile::Para(_));
    def.nics
        .iter()
        .map(|nic| {
            let NicBackend::Tap { ifname } = &nic.backend else {
                return Ok(None);
            };
            let tap = vessel_net::open_tap(&vessel_net::NetNs::current(), ifname, true, false)
                .map_err(|e| {
                    VmError::StartFailed(format!("cannot open tap {ifname}: {}", chain(&e)))
                })?;
            let vhost = if vhost_wanted {
                std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(VHOST_NET)
                    .map_err(
                        |e| tracing::debug!(error = %e, "no vhost-net: QEMU's virtio-net backend"),
                    )
                    .ok()
                    .map(OwnedFd::from)
            } else {
                None
            };
            Ok(Some((OwnedFd::from(tap), vhost)))
        })
        .collect()
}

/// A tap queue and, with vhost, the vhost-net device, held until QEMU has inherited them.
type OpenTap = (OwnedFd, Option<OwnedFd>);

/// The kernel's virtio-net backend.
const VHOST_NET: &str = "/dev/vhost-net";

/// An error and its sources, one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Finds a VM started earlier (by this or another process) through its pid file and QMP
/// socket, checking that the pid is still that QEMU, and connects QMP (events go to `events`).
pub fn adopt(pidfile: &Path, qmp_socket: &Path, events: Option<EventSink>) -> Result<RunningVm> {
    let pid = read_pidfile(pidfile).ok_or_else(|| {
        VmError::Adopt(format!(
            "{} is missing or holds no pid: the VM is not running",
            pidfile.display()
        ))
    })?;
    let dir = pidfile.parent().unwrap_or(Path::new("."));
    let state = VmPaths::new(dir).state;
    let record: VmRecord = std::fs::read(&state)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| {
            VmError::Adopt(format!(
                "{} is missing or unreadable: this run directory was not made by vessel-vm",
                state.display()
            ))
        })?;
    let process = Process::watch(pid).ok_or_else(|| {
        VmError::Adopt(format!(
            "process {pid} from {} is not running",
            pidfile.display()
        ))
    })?;
    if record.pid != pid || host::start_time(pid) != Some(record.start_time) {
        return Err(VmError::Adopt(format!(
            "process {pid} is not the QEMU recorded in {} (pid reused?)",
            state.display()
        )));
    }
    let is_ours = host::cmdline(pid).is_some_and(|args| {
        args.first().is_some_and(|a| a.contains("qemu-system"))
            && args
                .windows(2)
                .any(|w| w[0] == "-pidfile" && Path::new(&w[1]) == record.paths.pidfile)
    });
    if !is_ours {
        return Err(VmError::Adopt(format!(
            "process {pid} is not a QEMU with pid file {}",
            record.paths.pidfile.display()
        )));
    }
    if qmp_socket != record.paths.qmp {
        return Err(VmError::Adopt(format!(
            "QMP socket {} is not the VM's ({})",
            qmp_socket.display(),
            record.paths.qmp.display()
        )));
    }
    let exit = Arc::new(ExitWatch::default());
    let qmp = Qmp::connect(qmp_socket, QMP_TIMEOUT, exit.sink(events))?;
    let sink = record.log_sink.as_ref().and_then(ProcessId::watch);
    let cgroup = match &record.cgroup {
        Some(path) => Some(
            vessel_cgroups::manager(path).map_err(|source| VmError::Cgroup {
                path: path.clone(),
                source,
            })?,
        ),
        None => None,
    };
    tracing::info!(vm = %record.name, pid, "VM adopted");
    // OOM kills before the adoption (of the sink, say) are not QEMU's end.
    exit.set_oom_base(cgroup_oom_kills(cgroup.as_deref()));
    Ok(RunningVm::new(record, process, qmp, cgroup, sink, exit))
}

impl RunningVm {
    fn new(
        record: VmRecord,
        process: Process,
        qmp: Qmp,
        cgroup: Option<Box<dyn CgroupManager>>,
        sink: Option<Process>,
        exit: Arc<ExitWatch>,
    ) -> RunningVm {
        let p = &record.paths;
        RunningVm {
            name: record.name.clone(),
            pid: record.pid,
            qmp_socket: p.qmp.clone(),
            console_socket: p.console.clone(),
            console_log: p.console_log.clone(),
            agent_socket: record.has_agent.then(|| p.agent.clone()),
            vnc_socket: record.has_vnc.then(|| p.vnc.clone()),
            pidfile: p.pidfile.clone(),
            record,
            process,
            qmp,
            cgroup,
            sink,
            exit,
        }
    }

    /// The QMP client, for commands this type has no method for.
    pub fn qmp(&self) -> &Qmp {
        &self.qmp
    }

    /// Whether QEMU still runs.
    pub fn is_alive(&self) -> bool {
        self.process.is_alive()
    }

    /// QEMU's run state, or [`VmStatus::Stopped`] once it has exited.
    pub fn status(&self) -> Result<VmStatus> {
        if !self.process.is_alive() {
            return Ok(VmStatus::Stopped);
        }
        match self.qmp.query_status() {
            Ok(s) => Ok(match s.status {
                RunState::Running => VmStatus::Running,
                RunState::Paused => VmStatus::Paused,
                RunState::Prelaunch => VmStatus::Prelaunch,
                RunState::Shutdown => VmStatus::Stopped,
                other => VmStatus::Other(other),
            }),
            Err(QmpError::Disconnected { .. })
                if !self.process.wait_exit(Duration::from_secs(1)) =>
            {
                Err(VmError::Qmp(QmpError::Disconnected {
                    command: "query-status",
                }))
            }
            Err(QmpError::Disconnected { .. }) => Ok(VmStatus::Stopped),
            Err(e) => Err(e.into()),
        }
    }

    /// Pauses the vCPUs.
    pub fn pause(&self) -> Result<()> {
        self.alive()?;
        Ok(self.qmp.stop()?)
    }

    /// Resumes the vCPUs.
    pub fn resume(&self) -> Result<()> {
        self.alive()?;
        Ok(self.qmp.cont()?)
    }

    /// Resets the VM (a hardware reset: the guest reboots without shutting down).
    pub fn reset(&self) -> Result<()> {
        self.alive()?;
        Ok(self.qmp.system_reset()?)
    }

    /// Stops the VM: the ACPI power button (a paused guest is resumed first so it can react),
    /// up to `graceful` for the guest to power off; then `quit`, up to 5 s; then SIGKILL.
    /// Afterwards the cgroup and the runtime files are removed ([`RunningVm::cleanup`]).
    pub fn shutdown(&self, graceful: Duration) -> Result<ShutdownOutcome> {
        let started = Instant::now();
        let how = if !self.process.is_alive() {
            ShutdownHow::AlreadyStopped
        } else {
            self.exit.requested(ShutdownHow::Graceful);
            if matches!(self.status(), Ok(VmStatus::Paused)) {
                let _ = self.qmp.cont();
            }
            if self.press_power_button(graceful) {
                ShutdownHow::Graceful
            } else {
                self.exit.requested(ShutdownHow::Quit);
                if self.qmp.quit().is_ok() && self.process.wait_exit(QUIT_TIMEOUT) {
                    ShutdownHow::Quit
                } else {
                    self.exit.requested(ShutdownHow::Killed);
                    if !self.process.kill() {
                        return Err(VmError::StartFailed(format!(
                            "QEMU {} survived SIGKILL",
                            self.pid
                        )));
                    }
                    ShutdownHow::Killed
                }
            }
        };
        self.cleanup()?;
        tracing::info!(vm = %self.name, ?how, "VM stopped");
        Ok(ShutdownOutcome {
            how,
            took: started.elapsed(),
        })
    }

    /// Presses the ACPI power button and waits up to `graceful` for the guest to power off,
    /// pressing again every [`POWER_BUTTON_REPEAT`]: a guest that was still booting (its
    /// ACPI handling not up yet) loses a press, and would otherwise be quit at the end of the
    /// wait. Guests ignore presses while they are already shutting down. False at once if
    /// QEMU refuses the first press.
    fn press_power_button(&self, graceful: Duration) -> bool {
        let deadline = Instant::now() + graceful;
        let mut pressed = false;
        loop {
            match self.qmp.system_powerdown() {
                Ok(()) => pressed = true,
                Err(e) => {
                    tracing::warn!(vm = %self.name, error = %e, "system_powerdown failed");
                    if !pressed {
                        return false;
                    }
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if self.process.wait_exit(left.min(POWER_BUTTON_REPEAT)) {
                return true;
            }
            if left <= POWER_BUTTON_REPEAT {
                return false;
            }
        }
    }

    /// Kills QEMU at once (SIGKILL) and cleans up.
    pub fn kill(&self) -> Result<()> {
        if self.process.is_alive() {
            self.exit.requested(ShutdownHow::Killed);
        }
        self.process.kill();
        self.cleanup()
    }

    /// A descriptor that becomes readable when QEMU exits (a pidfd), so that async code can
    /// await the exit without a thread: wrap it in `tokio::io::unix::AsyncFd`.
    pub fn exit_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.process.exit_fd()
    }

    /// Waits up to `timeout` for QEMU to exit (the guest powered off, or someone quit it).
    pub fn wait_exit(&self, timeout: Duration) -> bool {
        self.process.wait_exit(timeout)
    }

    /// After QEMU exited: lets the console log sink finish (killing it after 2 s), removes
    /// the cgroup, the sockets, the pid file and `vm.json` (logs and the UEFI variable store
    /// stay). An error while QEMU still runs.
    pub fn cleanup(&self) -> Result<()> {
        if self.process.is_alive() {
            return Err(VmError::StartFailed(format!(
                "cannot clean up the VM {:?}: QEMU {} still runs",
                self.name, self.pid
            )));
        }
        if let Some(sink) = &self.sink {
            if !sink.wait_exit(SINK_EXIT_TIMEOUT) {
                tracing::warn!(vm = %self.name, pid = sink.pid, "the console log sink did not exit; killing it");
                sink.kill();
            }
        }
        if let Some(cg) = &self.cgroup {
            crate::cgroup::remove_empty(cg.as_ref())?;
        }
        let p = &self.record.paths;
        for f in [&p.qmp, &p.console, &p.agent, &p.vnc, &p.pidfile, &p.state] {
            let _ = std::fs::remove_file(f);
        }
        Ok(())
    }

    /// The cgroup's usage figures, if the VM has a cgroup.
    pub fn cgroup_stats(&self) -> Result<Option<CgroupStats>> {
        self.cgroup
            .as_ref()
            .map(|cg| {
                cg.stats().map_err(|source| VmError::Cgroup {
                    path: cg.path().to_string(),
                    source,
                })
            })
            .transpose()
    }

    /// The cgroup manager, if the VM has a cgroup.
    pub fn cgroup(&self) -> Option<&dyn CgroupManager> {
        self.cgroup.as_deref()
    }

    fn alive(&self) -> Result<()> {
        if self.process.is_alive() {
            Ok(())
        } else {
            Err(VmError::NotRunning(self.name.clone()))
        }
    }
}

fn check_files(def: &MachineDef) -> Result<()> {
    match &def.profile {
        Profile::Para(p) => {
            host::check_readable("kernel", &p.kernel)?;
            if let Some(i) = &p.initrd {
                host::check_readable("initrd", i)?;
            }
        }
        Profile::Full(f) => {
            let (files, package): (&[&str], _) = match f.firmware {
                Firmware::Bios => (&[host::SEABIOS], host::SEABIOS_PACKAGE),
                Firmware::Uefi => (&[host::OVMF_CODE, host::OVMF_VARS], host::OVMF_PACKAGE),
            };
            for file in files {
                if !Path::new(file).is_file() {
                    return Err(VmError::BadFile {
                        what: "firmware",
                        path: file.into(),
                        reason: format!("missing: install the Debian package {package}"),
                    });
                }
            }
        }
    }
    for d in &def.disks {
        if let Some(rbd) = &d.rbd {
            for (what, path) in [
                ("Ceph configuration", &rbd.conf),
                ("Ceph key", &rbd.key_file),
            ] {
                if !path.is_file() {
                    return Err(VmError::BadFile {
                        what,
                        path: path.clone(),
                        reason: "missing".into(),
                    });
                }
            }
            continue;
        }
        if d.nbd_export.is_some() {
            use std::os::unix::fs::FileTypeExt;
            let is_socket = std::fs::metadata(&d.path).is_ok_and(|m| m.file_type().is_socket());
            if !is_socket {
                return Err(VmError::BadFile {
                    what: "NBD server socket",
                    path: d.path.clone(),
                    reason: "no server listens there".into(),
                });
            }
            continue;
        }
        crate::disk::image_info(&d.path, Some(d.format))?;
    }
    Ok(())
}

/// Waits for QEMU to answer on QMP, failing early (with QEMU's own message) when it exits.
fn connect_while_alive(
    p: &Process,
    paths: &VmPaths,
    events: Option<EventSink>,
    cancel: &AtomicBool,
) -> Result<Qmp> {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    while !paths.qmp.exists() {
        if cancel.load(Ordering::SeqCst) {
            return Err(VmError::Cancelled);
        }
        if !p.is_alive() {
            return Err(VmError::StartFailed(log_tail(
                &paths.qemu_log,
                "QEMU exited",
            )));
        }
        if Instant::now() > deadline {
            return Err(VmError::Timeout {
                what: format!("QEMU to create {}", paths.qmp.display()),
                secs: STARTUP_TIMEOUT.as_secs_f64(),
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let left = deadline.saturating_duration_since(Instant::now());
    match Qmp::connect(&paths.qmp, left.max(QMP_TIMEOUT), events) {
        Ok(q) => Ok(q),
        Err(e) => {
            p.wait_exit(Duration::from_millis(500));
            if p.is_alive() {
                Err(e.into())
            } else {
                Err(VmError::StartFailed(log_tail(
                    &paths.qemu_log,
                    "QEMU exited",
                )))
            }
        }
    }
}

/// The last lines QEMU wrote (its error), or `fallback`.
fn log_tail(log: &Path, fallback: &str) -> String {
    log_tail_from(log, 0, fallback)
}

/// The last lines QEMU wrote to `log` after byte `from` (this run's), or `fallback`.
pub(crate) fn log_tail_from(log: &Path, from: u64, fallback: &str) -> String {
    let bytes = std::fs::read(log).unwrap_or_default();
    let from = (from as usize).min(bytes.len());
    let text = String::from_utf8_lossy(&bytes[from..]);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return fallback.to_string();
    }
    lines[lines.len().saturating_sub(5)..]
        .iter()
        .map(|l| strip_qemu_prefix(l))
        .collect::<Vec<_>>()
        .join("; ")
}

/// `2024-01-01T00:00:00.000000Z qemu-system-x86_64: msg` → `msg`.
pub(crate) fn strip_qemu_prefix(line: &str) -> &str {
    let l = line.trim();
    let l = match l.split_once(' ') {
        Some((ts, rest)) if ts.ends_with('Z') && ts.contains('T') => rest,
        _ => l,
    };
    l.strip_prefix("qemu-system-x86_64: ")
        .or_else(|| l.strip_prefix("qemu: "))
        .unwrap_or(l)
}

fn read_pidfile(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn write_record(r: &VmRecord) -> Result<()> {
    let path = &r.paths.state;
    let tmp = path.with_extension("json.tmp");
    let data = serde_json::to_vec_pretty(r).map_err(|e| VmError::Io {
        op: "serialise",
        path: path.clone(),
        source: e.into(),
    })?;
    std::fs::write(&tmp, data).map_err(VmError::io("write", &tmp))?;
    std::fs::rename(&tmp, path).map_err(VmError::io("rename", path))
}

/// The daemon shares a `RunningVm` between tasks.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<RunningVm>();
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_messages_lose_their_prefix() {
        assert_eq!(
            strip_qemu_prefix("2026-11-21T10:00:00.123456Z qemu-system-x86_64: -m 1: bad"),
            "-m 1: bad"
        );
        assert_eq!(strip_qemu_prefix("plain"), "plain");
    }
}
