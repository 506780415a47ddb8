//! The per-instance monitor: the small process that owns a running container's terminal, log
//! and exit status, so that containers outlive the daemon (like conmon for podman).
//!
//! The daemon writes a [`MonitorConfig`] as JSON and starts `vessel-monitor CONFIG`. The monitor
//! mounts the instance's overlay root, creates and starts the container through
//! `vessel-container`, prints one [`Ready`] line on its stdout, then serves console attaches
//! on its socket (frames of `vessel_api::stream`) until the container's init exits. It then
//! writes an [`ExitStatus`] file, removes the container (cgroup included), unmounts the root
//! and exits. The daemon follows it through a pidfd and can re-adopt it after a restart.

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// What the daemon tells a monitor.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MonitorConfig {
    /// Container id for the runtime (the instance name).
    pub id: String,
    /// OCI bundle directory holding `config.json`.
    pub bundle: PathBuf,
    /// Runtime state directory (like runc's `--root`).
    pub state_root: PathBuf,
    /// The OCI runtime binary (`vessel-runc`).
    pub runtime: PathBuf,
    /// Unix socket for console attaches.
    pub socket: PathBuf,
    /// Console log file.
    pub log: PathBuf,
    /// Where the monitor records its own pid, so a restarted daemon can find it.
    pub pid_file: PathBuf,
    /// Where to write the [`ExitStatus`] when the init exits.
    pub exit_file: PathBuf,
    /// Overlay root to mount before creating the container and unmount after.
    pub overlay: Option<Overlay>,
}

/// An overlay mount of an image's layers and a per-instance upper layer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Overlay {
    /// Read-only image layers, top first.
    pub lowers: Vec<PathBuf>,
    /// The instance's writable layer.
    pub upper: PathBuf,
    /// Overlayfs work directory (same file system as `upper`).
    pub work: PathBuf,
    /// Mount point (the bundle's root path).
    pub target: PathBuf,
}

impl Overlay {
    /// Mount options for overlayfs.
    pub fn options(&self) -> String {
        let lowers: Vec<String> = self
            .lowers
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        format!(
            "lowerdir={},upperdir={},workdir={}",
            lowers.join(":"),
            self.upper.display(),
            self.work.display()
        )
    }
}

/// The one line a monitor prints on stdout once the container runs (or could not start).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Ready {
    /// The container's init runs with this host pid.
    Running {
        /// Host pid of the init.
        pid: i32,
    },
    /// Starting failed; nothing is left mounted or running.
    Failed {
        /// What went wrong.
        error: String,
    },
}

/// How the container's init ended, written to [`MonitorConfig::exit_file`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExitStatus {
    /// Exit code, or 128 + signal number when killed by a signal.
    pub exit_code: i32,
    /// Signal that killed it, if any.
    pub signal: Option<i32>,
    /// When it ended, seconds since the epoch.
    pub finished_at: u64,
}

/// Receives the terminal master an OCI runtime sends over a `--console-socket` (SCM_RIGHTS).
///
/// Waits until the runtime connects, `gave_up()` says to stop waiting (the runtime ended
/// without connecting), or `timeout` passes.
pub fn receive_console(
    listener: &UnixListener,
    timeout: Duration,
    mut gave_up: impl FnMut() -> bool,
) -> std::io::Result<OwnedFd> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};

    let deadline = Instant::now() + timeout;
    loop {
        let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        if poll(&mut fds, PollTimeout::from(100u16))? > 0 {
            break;
        }
        if gave_up() {
            return Err(std::io::Error::other(
                "the runtime ended without handing over the terminal",
            ));
        }
        if Instant::now() > deadline {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the runtime did not hand over the terminal in time",
            ));
        }
    }
    let (conn, _) = listener.accept()?;
    let mut buf = [0u8; 4096];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(
        conn.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            if let Some(&fd) = fds.first() {
                // SAFETY: SCM_RIGHTS gave us a new descriptor that nothing else owns.
                return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    Err(std::io::Error::other("the runtime sent no descriptor"))
}

/// Whether `p` is a mount point in the caller's mount namespace.
pub fn is_mountpoint(p: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let p = p.to_string_lossy();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|m| m == p)
}

/// Brings the loopback interface up in the network namespace of process `pid`: a new
/// namespace has it down, and 127.0.0.1 is unreachable until then (Docker and Incus bring it
/// up too). Refuses to act when `pid` shares the caller's own namespace, so the host's
/// loopback is never touched.
pub fn loopback_up(pid: i32) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let theirs = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
    let own = std::fs::metadata("/proc/thread-self/ns/net")?;
    let md = theirs.metadata()?;
    if (md.dev(), md.ino()) == (own.dev(), own.ino()) {
        return Err(std::io::Error::other(
            "the container shares the host's network namespace",
        ));
    }
    // A socket belongs to the namespace it was made in: a helper thread joins the container's
    // namespace (no other thread moves) and makes one; the interface ioctls act there.
    let fd = theirs.as_raw_fd();
    let sock = std::thread::scope(|s| {
        s.spawn(move || -> std::io::Result<OwnedFd> {
            // SAFETY: setns reads the descriptor number and moves only this helper thread,
            // which ends right after.
            if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // SAFETY: plain socket(2) with constant arguments; the result is checked.
            let raw =
                unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
            if raw < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // SAFETY: `raw` is a new descriptor nothing else owns.
            Ok(unsafe { OwnedFd::from_raw_fd(raw) })
        })
        .join()
        .map_err(|_| std::io::Error::other("the namespace helper thread panicked"))?
    })?;
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS fills the flags of the ifreq it is given, which lives on our stack
    // for the whole call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just wrote the flags member of the union.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    req.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
    // SAFETY: SIOCSIFFLAGS reads the ifreq, which lives on our stack for the whole call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
