//! How a VM ended, and what is left of one whose QEMU ended while nobody watched.
//!
//! QEMU is not its caller's child (it is detached), so its exit status cannot be waited for.
//! What tells how it ended: QMP's `SHUTDOWN` event (with `guest` and QEMU's `reason`) before
//! the connection closes, or the connection closing without one (SIGKILL, a crash); what the
//! caller itself asked ([`RunningVm::shutdown`], [`RunningVm::kill`]); QEMU's own last words
//! in `qemu.log` (`terminating on signal 15 from pid …`, an assertion); the cgroup's OOM
//! kill counter; and, when nobody watched, the guest's last console lines (`VESSEL-SHUTDOWN
//! poweroff` from Vessel's init, `reboot: Power down` from Linux).

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::error::{Result, VmError};
use crate::host::{self, Process};
use crate::machine::VmPaths;
use crate::qmp::{EventKind, EventSink, QmpEvent};
use crate::vm::{cgroup_oom_kills, strip_qemu_prefix, RunningVm, ShutdownHow, VmRecord};

/// How long [`RunningVm::exit_reason`] waits for the QMP connection to deliver its last events.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// How a VM's QEMU ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmExit {
    /// The guest powered itself off.
    GuestPoweredOff,
    /// The guest kernel panicked (and QEMU was set to end on that).
    GuestPanicked,
    /// The guest ended the VM another way (QEMU's reason, e.g. `guest-reset`).
    Guest {
        /// QEMU's shutdown reason.
        reason: String,
    },
    /// The caller stopped it ([`RunningVm::shutdown`] or [`RunningVm::kill`]).
    Stopped(ShutdownHow),
    /// QEMU was sent a signal it ends on (SIGTERM, SIGINT, SIGHUP) and shut the guest down.
    Signal {
        /// The signal.
        signal: i32,
        /// Who sent it, as QEMU logged it (`pid 1234 (kill)`).
        from: Option<String>,
    },
    /// QEMU was asked to end from the host by someone else (its reason, e.g. `host-qmp-quit`).
    HostRequest {
        /// QEMU's shutdown reason.
        reason: String,
    },
    /// The kernel's OOM killer killed QEMU: the VM's cgroup reached its memory limit.
    OutOfMemory,
    /// QEMU ended without shutting the guest down while watched: killed (SIGKILL) or crashed.
    Vanished {
        /// QEMU's last message, if it left one.
        message: Option<String>,
    },
    /// QEMU ended while nobody watched, and nothing tells how.
    Unobserved {
        /// QEMU's last message, if it left one.
        message: Option<String>,
    },
}

impl VmExit {
    /// The exit code to report, where one is meaningful: 0 after a shutdown (QEMU's own exit
    /// code then), 128+N for signal N, none when QEMU vanished without a trace.
    pub fn exit_code(&self) -> Option<i32> {
        match self {
            VmExit::GuestPoweredOff
            | VmExit::GuestPanicked
            | VmExit::Guest { .. }
            | VmExit::HostRequest { .. } => Some(0),
            VmExit::Stopped(ShutdownHow::Killed) | VmExit::OutOfMemory => Some(128 + libc::SIGKILL),
            VmExit::Stopped(_) => Some(0),
            VmExit::Signal { signal, .. } => Some(128 + signal),
            VmExit::Vanished { .. } | VmExit::Unobserved { .. } => None,
        }
    }

    /// What happened, in words for `vessel info`.
    pub fn describe(&self) -> String {
        let last = |m: &Option<String>| match m {
            Some(m) => format!("; QEMU's last message: {m}"),
            None => String::new(),
        };
        match self {
            VmExit::GuestPoweredOff => "the guest powered off".into(),
            VmExit::GuestPanicked => "the guest kernel panicked".into(),
            VmExit::Guest { reason } => format!("the guest ended the VM ({reason})"),
            VmExit::Stopped(ShutdownHow::Graceful) => {
                "stopped: the guest powered off after the ACPI power button".into()
            }
            VmExit::Stopped(ShutdownHow::Quit) => {
                "stopped: the guest did not power off in time, so QEMU was told to quit".into()
            }
            VmExit::Stopped(ShutdownHow::Killed) => "stopped: QEMU was killed (forced)".into(),
            VmExit::Stopped(ShutdownHow::AlreadyStopped) => "stopped".into(),
            VmExit::Signal { signal, from } => format!(
                "QEMU was terminated by signal {signal} ({}){}",
                signal_name(*signal),
                from.as_ref()
                    .map_or(String::new(), |f| format!(" from {f}"))
            ),
            VmExit::HostRequest { reason } => format!("QEMU was told to shut down ({reason})"),
            VmExit::OutOfMemory => "QEMU was killed by the kernel's OOM killer: the VM's cgroup \
                                    reached its memory limit"
                .into(),
            VmExit::Vanished { message } => format!(
                "QEMU ended without shutting the guest down: it was killed (SIGKILL) or crashed{}",
                last(message)
            ),
            VmExit::Unobserved { message } => format!(
                "QEMU ended while vesseld was not running (killed, crashed, or the guest shut \
                 down){}",
                last(message)
            ),
        }
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        _ => "signal",
    }
}

/// What is known about a VM's end; [`classify`] turns it into a [`VmExit`].
#[derive(Debug, Clone, Default)]
pub struct ExitEvidence {
    /// QMP's `SHUTDOWN` event: (guest initiated, QEMU's reason).
    pub shutdown: Option<(bool, String)>,
    /// What the caller did last to stop it.
    pub requested: Option<ShutdownHow>,
    /// OOM kills in the VM's cgroup during this run.
    pub oom_kills: u64,
    /// What QEMU wrote to `qemu.log` in this run.
    pub qemu_log: String,
    /// The end of the console log (used only when nobody watched).
    pub console_tail: String,
    /// Whether a QMP connection was open when QEMU ended.
    pub watched: bool,
}

/// How the VM ended, from what is known (pure: the rules are unit-tested).
pub fn classify(e: &ExitEvidence) -> VmExit {
    if let Some(how) = e.requested.filter(|h| *h != ShutdownHow::AlreadyStopped) {
        return VmExit::Stopped(how);
    }
    let signal = signal_line(&e.qemu_log);
    match &e.shutdown {
        Some((true, reason)) => {
            return match reason.as_str() {
                "guest-shutdown" => VmExit::GuestPoweredOff,
                "guest-panic" => VmExit::GuestPanicked,
                _ => VmExit::Guest {
                    reason: reason.clone(),
                },
            }
        }
        Some((false, reason)) if reason != "host-signal" || signal.is_none() => {
            return VmExit::HostRequest {
                reason: reason.clone(),
            }
        }
        _ => {}
    }
    if let Some((signal, from)) = signal {
        return VmExit::Signal { signal, from };
    }
    if e.oom_kills > 0 {
        return VmExit::OutOfMemory;
    }
    let message = last_line(&e.qemu_log);
    if e.watched {
        return VmExit::Vanished { message };
    }
    // Nobody watched: the guest's last console words may tell a power-off (Vessel's init
    // announces it; a Linux kernel that still prints says so too).
    if e.console_tail.contains("VESSEL-SHUTDOWN poweroff")
        || e.console_tail.contains("reboot: Power down")
    {
        return VmExit::GuestPoweredOff;
    }
    VmExit::Unobserved { message }
}

/// QEMU's `terminating on signal N[ from pid P (cmd)]`, the last one in the log.
fn signal_line(log: &str) -> Option<(i32, Option<String>)> {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("terminating on signal "))?;
    let rest = &line[line.find("terminating on signal ")? + "terminating on signal ".len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let signal = digits.parse().ok()?;
    let from = rest
        .find("from ")
        .map(|i| rest[i + "from ".len()..].trim().to_string());
    Some((signal, from))
}

fn last_line(log: &str) -> Option<String> {
    log.lines()
        .rev()
        .map(|l| strip_qemu_prefix(l).trim())
        .find(|l| !l.is_empty())
        .map(|l| l.chars().take(300).collect())
}

/// What a caller learns from QMP while a VM runs: its `SHUTDOWN` event, whether the
/// connection closed, what the caller asked for, and the OOM counter at the start.
#[derive(Debug, Default)]
pub(crate) struct ExitWatch {
    state: Mutex<WatchState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct WatchState {
    shutdown: Option<(bool, String)>,
    closed: bool,
    requested: Option<ShutdownHow>,
    oom_base: u64,
}

impl ExitWatch {
    fn lock(&self) -> std::sync::MutexGuard<'_, WatchState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An event sink that records what matters here, then hands every event to `inner`.
    pub(crate) fn sink(self: &Arc<Self>, mut inner: Option<EventSink>) -> Option<EventSink> {
        let watch = self.clone();
        Some(Box::new(move |e: QmpEvent| {
            {
                let mut s = watch.lock();
                match &e.kind {
                    EventKind::Shutdown { guest, reason } => {
                        s.shutdown = Some((*guest, reason.clone()))
                    }
                    EventKind::Closed => s.closed = true,
                    _ => {}
                }
            }
            watch.changed.notify_all();
            if let Some(f) = inner.as_mut() {
                f(e);
            }
        }))
    }

    /// Records that the caller is stopping the VM this way.
    pub(crate) fn requested(&self, how: ShutdownHow) {
        self.lock().requested = Some(how);
    }

    /// OOM kills counted before this run (or adoption) started.
    pub(crate) fn set_oom_base(&self, n: u64) {
        self.lock().oom_base = n;
    }

    /// Waits up to `timeout` for the connection to close (QEMU's last events are in then).
    fn wait_closed(&self, timeout: Duration) -> (Option<(bool, String)>, Option<ShutdownHow>, u64) {
        let deadline = Instant::now() + timeout;
        let mut s = self.lock();
        while !s.closed {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            s = self
                .changed
                .wait_timeout(s, left)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        (s.shutdown.clone(), s.requested, s.oom_base)
    }
}

impl RunningVm {
    /// How QEMU ended; `None` while it runs. Call it before [`RunningVm::cleanup`] (which
    /// removes the cgroup and with it the OOM counter). Waits up to 2 s for QMP's last events.
    pub fn exit_reason(&self) -> Option<VmExit> {
        if self.process.is_alive() {
            return None;
        }
        let (shutdown, requested, oom_base) = self.exit.wait_closed(CLOSE_WAIT);
        let oom = cgroup_oom_kills(self.cgroup.as_deref());
        Some(classify(&ExitEvidence {
            shutdown,
            requested,
            oom_kills: oom.saturating_sub(oom_base),
            qemu_log: read_from(&self.record.paths.qemu_log, self.record.qemu_log_offset),
            console_tail: String::new(),
            watched: true,
        }))
    }
}

/// What [`reap_stale`] found in a run directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StaleVm {
    /// The QEMU that `vm.json` describes still runs: nothing was touched.
    Running {
        /// Its pid.
        pid: i32,
    },
    /// No QEMU runs there (any left by an unfinished start was killed) and the run's
    /// leftovers are gone; how the last run ended, when one had started.
    Reaped {
        /// How it ended (`None`: no run had finished starting).
        exit: Option<VmExit>,
    },
}

/// Cleans up after a VM whose caller was not there when it ended (a daemon restart): kills a
/// QEMU and a log sink left by a start that never finished, tells how the last run ended
/// (from `qemu.log`, the cgroup's OOM counter and the console), removes the cgroup (`cgroup`,
/// or the one `vm.json` names) and the sockets, pid file and `vm.json`. Logs and the UEFI
/// variable store stay. A QEMU that `vm.json` describes and still runs is left alone.
pub fn reap_stale(run_dir: &Path, cgroup: Option<&str>) -> Result<StaleVm> {
    let paths = VmPaths::new(run_dir);
    let record: Option<VmRecord> = std::fs::read(&paths.state)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let pidfile = paths.pidfile.to_string_lossy().into_owned();
    let mut unfinished = false;
    for pid in host::find_processes(|args| {
        args.first().is_some_and(|a| a.contains("qemu-system"))
            && args
                .windows(2)
                .any(|w| w[0] == "-pidfile" && w[1] == pidfile)
    }) {
        let recorded = record
            .as_ref()
            .is_some_and(|r| r.pid == pid && host::start_time(pid) == Some(r.start_time));
        if recorded {
            return Ok(StaleVm::Running { pid });
        }
        tracing::warn!(pid, dir = %run_dir.display(), "killing the QEMU of a start that never finished");
        if let Some(p) = Process::watch(pid) {
            p.kill();
            // Gone before anything else is cleaned up (its cgroup cannot go while it exits,
            // and nobody must see a VM stopped whose QEMU still runs).
            if !p.wait_exit(Duration::from_secs(10)) {
                tracing::warn!(pid, "the killed QEMU has not exited after 10 s");
            }
        }
        unfinished = true;
    }
    let log = paths.console_log.to_string_lossy().into_owned();
    for pid in host::find_processes(|args| {
        args.windows(2)
            .any(|w| w[0] == "--console-log" && w[1] == log)
    }) {
        if let Some(p) = Process::watch(pid) {
            // Its QEMU is gone: it has read everything there was.
            if !p.wait_exit(Duration::from_secs(1)) {
                p.kill();
            }
        }
    }
    let cgroup_path = cgroup
        .map(str::to_string)
        .or_else(|| record.as_ref().and_then(|r| r.cgroup.clone()));
    let cg = match &cgroup_path {
        Some(path) => Some(
            vessel_cgroups::manager(path).map_err(|source| VmError::Cgroup {
                path: path.clone(),
                source,
            })?,
        ),
        None => None,
    };
    let exit = record.as_ref().filter(|_| !unfinished).map(|r| {
        let console = read_from(&paths.console_log, 0);
        let tail_at = console.len().saturating_sub(2000);
        classify(&ExitEvidence {
            oom_kills: cgroup_oom_kills(cg.as_deref()),
            qemu_log: read_from(&paths.qemu_log, r.qemu_log_offset),
            console_tail: console.get(tail_at..).unwrap_or_default().to_string(),
            ..ExitEvidence::default()
        })
    });
    if let Some(cg) = cg.as_ref().filter(|c| c.exists()) {
        // Only this VM's QEMU and sink ever live there, and they are gone or were killed.
        cg.destroy().map_err(|source| VmError::Cgroup {
            path: cg.path().to_string(),
            source,
        })?;
    }
    for f in [
        &paths.qmp,
        &paths.console,
        &paths.agent,
        &paths.vnc,
        &paths.pidfile,
        &paths.state,
    ] {
        let _ = std::fs::remove_file(f);
    }
    let _ = std::fs::remove_file(paths.state.with_extension("json.tmp"));
    Ok(StaleVm::Reaped { exit })
}

/// A file's text from byte `from` (all of it when it is shorter: it was rotated).
fn read_from(path: &Path, from: u64) -> String {
    let bytes = std::fs::read(path).unwrap_or_default();
    let from = if (from as usize) <= bytes.len() {
        from as usize
    } else {
        0
    };
    String::from_utf8_lossy(&bytes[from..]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev() -> ExitEvidence {
        ExitEvidence {
            watched: true,
            ..ExitEvidence::default()
        }
    }

    #[test]
    fn shutdown_events_say_who_ended_it() {
        let mut e = ev();
        e.shutdown = Some((true, "guest-shutdown".into()));
        assert_eq!(classify(&e), VmExit::GuestPoweredOff);
        assert_eq!(classify(&e).exit_code(), Some(0));
        e.shutdown = Some((true, "guest-panic".into()));
        assert_eq!(classify(&e), VmExit::GuestPanicked);
        e.shutdown = Some((false, "host-qmp-quit".into()));
        assert!(matches!(classify(&e), VmExit::HostRequest { .. }));
        // What the caller asked wins: its own quit also shows as host-qmp-quit.
        e.requested = Some(ShutdownHow::Quit);
        assert_eq!(classify(&e), VmExit::Stopped(ShutdownHow::Quit));
        e.requested = Some(ShutdownHow::Killed);
        assert_eq!(classify(&e).exit_code(), Some(137));
    }

    #[test]
    fn signals_are_read_from_qemus_log() {
        let mut e = ev();
        e.shutdown = Some((false, "host-signal".into()));
        e.qemu_log = "2026-01-01T00:00:00.000000Z qemu-system-x86_64: terminating on signal 15 \
                      from pid 4242 (kill)\n"
            .into();
        let x = classify(&e);
        assert_eq!(
            x,
            VmExit::Signal {
                signal: 15,
                from: Some("pid 4242 (kill)".into())
            }
        );
        assert_eq!(x.exit_code(), Some(143));
        assert!(x.describe().contains("SIGTERM"), "{}", x.describe());
        // Without the event (nobody watched), the log line alone tells it.
        e.shutdown = None;
        e.watched = false;
        assert!(matches!(classify(&e), VmExit::Signal { signal: 15, .. }));
    }

    #[test]
    fn no_event_means_killed_crashed_or_out_of_memory() {
        let mut e = ev();
        assert_eq!(classify(&e), VmExit::Vanished { message: None });
        assert_eq!(classify(&e).exit_code(), None);
        assert!(classify(&e).describe().contains("SIGKILL"));
        e.qemu_log = "2026-01-01T00:00:00.000000Z qemu-system-x86_64: ../hw/x.c:12: boom: \
                      Assertion failed\n\n"
            .into();
        assert_eq!(
            classify(&e),
            VmExit::Vanished {
                message: Some("../hw/x.c:12: boom: Assertion failed".into())
            }
        );
        e.oom_kills = 1;
        assert_eq!(classify(&e), VmExit::OutOfMemory);
        assert_eq!(classify(&e).exit_code(), Some(137));
    }

    #[test]
    fn unwatched_ends_use_the_console() {
        let mut e = ExitEvidence::default();
        assert!(matches!(classify(&e), VmExit::Unobserved { .. }));
        assert!(classify(&e).describe().contains("not running"));
        e.console_tail = "vm1:/# VESSEL-SHUTDOWN poweroff\r\n".into();
        assert_eq!(classify(&e), VmExit::GuestPoweredOff);
        e.console_tail = "[   12.3] reboot: Power down\r\n".into();
        assert_eq!(classify(&e), VmExit::GuestPoweredOff);
        // A power-off the caller watched is told by QMP, not by the console.
        e.watched = true;
        assert!(matches!(classify(&e), VmExit::Vanished { .. }));
    }
}
