//! What the engine needs from the host: its programs, its free memory, and ways to watch and
//! end processes that are not our children (QEMU is detached from its starter).

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Result, VmError};

/// A program the engine runs, with the Debian package that provides it.
#[derive(Debug, Clone, Copy)]
pub struct Tool {
    /// Program name, looked up in PATH.
    pub name: &'static str,
    /// Debian package to install when it is missing.
    pub package: &'static str,
}

/// The x86-64 system emulator.
pub const QEMU: Tool = Tool {
    name: "qemu-system-x86_64",
    package: "qemu-system-x86",
};
/// The disk image tool.
pub const QEMU_IMG: Tool = Tool {
    name: "qemu-img",
    package: "qemu-utils",
};

/// SeaBIOS, the default firmware of the `full` profile.
pub const SEABIOS: &str = "/usr/share/seabios/bios-256k.bin";
/// Debian package of [`SEABIOS`].
pub const SEABIOS_PACKAGE: &str = "seabios";
/// OVMF code (UEFI, without Secure Boot so that it needs no SMM).
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
/// Template of the UEFI variable store each VM gets a copy of.
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// Debian package of [`OVMF_CODE`] and [`OVMF_VARS`].
pub const OVMF_PACKAGE: &str = "ovmf";

impl Tool {
    /// The program's path, or [`VmError::MissingTool`] naming the package to install.
    pub fn find(&self) -> Result<PathBuf> {
        let path =
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
        std::env::split_paths(&path)
            .map(|d| d.join(self.name))
            .find(|p| is_executable(p))
            .ok_or(VmError::MissingTool {
                tool: self.name,
                package: self.package,
            })
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The host's `MemAvailable`, bytes.
pub fn mem_available() -> Result<u64> {
    let path = "/proc/meminfo";
    let text = std::fs::read_to_string(path).map_err(VmError::io("read", path))?;
    parse_meminfo(&text, "MemAvailable").ok_or_else(|| VmError::Io {
        op: "parse MemAvailable from",
        path: path.into(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, "no MemAvailable line"),
    })
}

fn parse_meminfo(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(key)?.strip_prefix(':')?;
        let kib: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kib * 1024)
    })
}

/// A process's start time (field 22 of `/proc/<pid>/stat`, clock ticks since boot), which
/// with the pid identifies it across pid reuse. `None` when it is gone or a zombie whose
/// threads have all ended. A multi-threaded process (QEMU) killed shows its first thread as a
/// zombie while the others are still exiting and still hold its files (an image's lock):
/// that counts as running, as its pidfd does.
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain anything; fields follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state), so field 22 is fields[19].
    if fields.first() == Some(&"X") {
        return None;
    }
    if fields.first() == Some(&"Z") {
        let threads = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?.count();
        if threads <= 1 {
            return None;
        }
    }
    fields.get(19)?.parse().ok()
}

/// The process's command line, split at NULs.
pub fn cmdline(pid: i32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|&b| b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect(),
    )
}

/// Pids of live processes (other than this one) whose command line satisfies `pred`.
pub fn find_processes(pred: impl Fn(&[String]) -> bool) -> Vec<i32> {
    let me = std::process::id() as i32;
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me && start_time(pid).is_some())
        .filter(|&pid| cmdline(pid).is_some_and(|a| pred(&a)))
        .collect()
}

/// A live process we watch: pid, start time, and a pidfd to wait on it without being its
/// parent.
#[derive(Debug)]
pub struct Process {
    /// Its pid.
    pub pid: i32,
    start: u64,
    pidfd: Option<OwnedFd>,
}

impl Process {
    /// Watches `pid`; `None` if no such live process exists.
    pub fn watch(pid: i32) -> Option<Process> {
        let start = start_time(pid)?;
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        let pidfd = (fd >= 0).then(|| {
            // SAFETY: the syscall returned a new descriptor that nothing else owns.
            unsafe { OwnedFd::from_raw_fd(fd as i32) }
        });
        // The pid may have been reused between the two reads; check again.
        (start_time(pid) == Some(start)).then_some(Process { pid, start, pidfd })
    }

    /// Whether it still runs (a zombie counts as gone; a zombie child of ours is reaped).
    pub fn is_alive(&self) -> bool {
        self.reap();
        start_time(self.pid) == Some(self.start)
    }

    /// Waits up to `timeout` for it to exit; true when it did.
    pub fn wait_exit(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if !self.is_alive() {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            // A pidfd becomes readable when the process exits; without one, poll /proc.
            let step = left.min(Duration::from_millis(if self.pidfd.is_some() {
                500
            } else {
                50
            }));
            match &self.pidfd {
                Some(fd) => {
                    let mut p = libc::pollfd {
                        fd: fd.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    // SAFETY: one pollfd on our stack.
                    unsafe { libc::poll(&mut p, 1, step.as_millis() as i32) };
                }
                None => std::thread::sleep(step),
            }
        }
    }

    /// Sends a signal if it is still the same process.
    pub fn signal(&self, sig: i32) {
        if !self.is_alive() {
            return;
        }
        match &self.pidfd {
            Some(fd) => {
                // SAFETY: pidfd_send_signal on our pidfd, no siginfo.
                unsafe {
                    libc::syscall(
                        libc::SYS_pidfd_send_signal,
                        fd.as_raw_fd(),
                        sig,
                        std::ptr::null::<libc::siginfo_t>(),
                        0,
                    )
                };
            }
            None => {
                // SAFETY: kill(2) on a pid whose start time we just checked.
                unsafe { libc::kill(self.pid, sig) };
            }
        }
    }

    /// SIGKILL, then waits up to 5 s for it to be gone.
    pub fn kill(&self) -> bool {
        self.signal(libc::SIGKILL);
        self.wait_exit(Duration::from_secs(5))
    }

    /// A descriptor that becomes readable when the process exits (a pidfd), for an async
    /// caller to wait on (`tokio::io::unix::AsyncFd`). `None` on kernels without pidfds.
    pub fn exit_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        self.pidfd.as_ref().map(|f| f.as_fd())
    }

    /// Reaps it if it is our own zombie child (no effect otherwise).
    fn reap(&self) {
        let mut status = 0;
        // SAFETY: waitpid on one pid with WNOHANG; fails with ECHILD if not our child.
        unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
    }
}

/// The real uid a process runs as (from `/proc/PID/status`), `None` once it is gone.
pub fn process_uid(pid: i32) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Opens `path` for reading to check it exists and is readable.
pub fn check_readable(what: &'static str, path: &Path) -> Result<()> {
    match File::open(path) {
        Ok(f) => match f.metadata() {
            Ok(m) if m.is_file() => Ok(()),
            Ok(_) => Err(VmError::BadFile {
                what,
                path: path.into(),
                reason: "not a regular file".into(),
            }),
            Err(e) => Err(VmError::BadFile {
                what,
                path: path.into(),
                reason: e.to_string(),
            }),
        },
        Err(e) => Err(VmError::BadFile {
            what,
            path: path.into(),
            reason: e.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    extern "C" fn linger(_: *mut libc::c_void) -> *mut libc::c_void {
        // SAFETY: sleep has no preconditions.
        unsafe { libc::sleep(30) };
        std::ptr::null_mut()
    }

    #[test]
    fn a_process_whose_first_thread_ended_runs_until_its_last_thread_ends() {
        // SAFETY: the child only calls pthread_create, exit (of its thread) and _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            // SAFETY: a thread that sleeps; the first thread ends, the process lives on
            // (as a killed QEMU's threads outlive its first one for a moment).
            unsafe {
                let mut t: libc::pthread_t = std::mem::zeroed();
                if libc::pthread_create(&mut t, std::ptr::null(), linger, std::ptr::null_mut()) != 0
                {
                    libc::_exit(1);
                }
                // The exit system call ends this thread only (pthread_exit would unwind).
                libc::syscall(libc::SYS_exit, 0);
                libc::_exit(1);
            }
        }
        let p = Process::watch(pid).expect("the child runs");
        let deadline = Instant::now() + Duration::from_secs(10);
        let zombie_leader = || {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s[s.rfind(')').unwrap() + 1..].trim_start().starts_with('Z'))
        };
        while !zombie_leader() {
            assert!(Instant::now() < deadline, "the first thread never ended");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            p.is_alive(),
            "its second thread still runs: {:?}",
            std::fs::read_dir(format!("/proc/{pid}/task")).map(|d| d.count())
        );
        assert!(!p.wait_exit(Duration::from_millis(200)));
        // SAFETY: a signal to our own child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        assert!(p.wait_exit(Duration::from_secs(10)));
        assert_eq!(start_time(pid), None);
    }

    #[test]
    fn meminfo_is_parsed() {
        let text = "MemTotal:       32000000 kB\nMemAvailable:   23792488 kB\n";
        assert_eq!(parse_meminfo(text, "MemAvailable"), Some(23792488 * 1024));
        assert_eq!(parse_meminfo(text, "SwapFree"), None);
    }

    #[test]
    fn process_uids_are_read() {
        // SAFETY: getuid has no preconditions.
        let me = unsafe { libc::getuid() };
        assert_eq!(process_uid(std::process::id() as i32), Some(me));
        assert_eq!(process_uid(-1), None);
    }

    #[test]
    fn own_process_is_watched() {
        let me = Process::watch(std::process::id() as i32).expect("self");
        assert!(me.is_alive());
        assert!(!me.wait_exit(Duration::from_millis(10)));
    }
}
