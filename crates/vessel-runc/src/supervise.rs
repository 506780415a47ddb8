//! Waiting for a container process in the foreground (`run`, `exec` without `--detach`):
//! signals sent to vessel-runc are forwarded to it, and when it has a terminal allocated here,
//! the terminal is proxied to vessel-runc's own stdin and stdout.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use anyhow::{Context, Result};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::pty::openpty;
use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg, Termios};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// Signals forwarded to the container process.
const FORWARDED: [Signal; 9] = [
    Signal::SIGHUP,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGTERM,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGPIPE,
    Signal::SIGALRM,
    Signal::SIGCONT,
];

fn handled() -> SigSet {
    let mut set = SigSet::empty();
    for s in FORWARDED {
        set.add(s);
    }
    set.add(Signal::SIGCHLD);
    set.add(Signal::SIGWINCH);
    set
}

/// Blocks the signals to forward, before forking the process, so none is lost; they are read
/// from a signalfd in [`wait`]. (The runtime library resets the mask in its children.)
pub fn block_signals() -> Result<()> {
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&handled()), None)
        .context("blocking signals")
}

/// A pty allocated for a process whose terminal vessel-runc proxies.
pub struct Pty {
    /// Master side, kept here.
    pub master: OwnedFd,
    /// Slave side, handed to the container process.
    pub slave: OwnedFd,
}

/// Allocates a pty sized like vessel-runc's own terminal.
pub fn allocate_pty() -> Result<Pty> {
    let size = window_size(std::io::stdin().as_fd());
    let pty = openpty(size.as_ref(), None).context("allocating a pty")?;
    Ok(Pty {
        master: pty.master,
        slave: pty.slave,
    })
}

fn window_size(fd: BorrowedFd<'_>) -> Option<nix::pty::Winsize> {
    let mut ws = nix::pty::Winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes a winsize struct into `ws`, which lives across the call.
    let rc = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::TIOCGWINSZ,
            &mut ws as *mut nix::pty::Winsize,
        )
    };
    (rc == 0).then_some(ws)
}

/// Restores the terminal mode on drop.
struct RawMode(Option<Termios>);

impl RawMode {
    fn enable() -> RawMode {
        let stdin = std::io::stdin();
        let Ok(orig) = tcgetattr(stdin.as_fd()) else {
            return RawMode(None);
        };
        let mut raw = orig.clone();
        cfmakeraw(&mut raw);
        match tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw) {
            Ok(()) => RawMode(Some(orig)),
            Err(_) => RawMode(None),
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(orig) = &self.0 {
            let _ = tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, orig);
        }
    }
}

/// Exit code of a wait status, shell style (128 + signal for a killed process).
fn exit_code(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, sig, _) => Some(128 + sig as i32),
        _ => None,
    }
}

fn copy(from: BorrowedFd<'_>, to: BorrowedFd<'_>) -> bool {
    let mut buf = [0u8; 8192];
    match nix::unistd::read(from.as_raw_fd(), &mut buf) {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            let mut off = 0;
            while off < n {
                match nix::unistd::write(to, &buf[off..n]) {
                    Ok(w) => off += w,
                    Err(nix::Error::EINTR) => {}
                    Err(_) => return false,
                }
            }
            true
        }
    }
}

/// Waits for `pid` (a child of this process), forwarding signals and proxying `pty_master`;
/// returns its exit code.
pub fn wait(pid: Pid, pty_master: Option<OwnedFd>) -> Result<i32> {
    let sfd = SignalFd::with_flags(&handled(), SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .context("creating a signalfd")?;
    let _raw = pty_master.as_ref().map(|_| RawMode::enable());
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let mut stdin_open = pty_master.is_some();
    let mut master_open = pty_master.is_some();
    if let Some(m) = &pty_master {
        if let Some(ws) = window_size(stdin.as_fd()) {
            // SAFETY: TIOCSWINSZ reads the winsize struct, which lives across the call.
            unsafe {
                libc::ioctl(
                    m.as_raw_fd(),
                    libc::TIOCSWINSZ,
                    &ws as *const nix::pty::Winsize,
                )
            };
        }
    }
    loop {
        // Reap first: SIGCHLD may have been consumed before we polled.
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {}
            Ok(status) => {
                if let Some(code) = exit_code(status) {
                    if let (Some(m), true) = (&pty_master, master_open) {
                        // Drain what the process wrote last.
                        while poll(
                            &mut [PollFd::new(m.as_fd(), PollFlags::POLLIN)],
                            PollTimeout::ZERO,
                        )
                        .unwrap_or(0)
                            > 0
                            && copy(m.as_fd(), stdout.as_fd())
                        {}
                    }
                    return Ok(code);
                }
            }
            Err(e) => return Err(e).context(format!("waiting for process {pid}")),
        }
        let mut fds = vec![PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
        if let Some(m) = &pty_master {
            if stdin_open {
                fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
            }
            if master_open {
                fds.push(PollFd::new(m.as_fd(), PollFlags::POLLIN));
            }
        }
        match poll(&mut fds, PollTimeout::from(1000u16)) {
            Ok(_) | Err(nix::Error::EINTR) => {}
            Err(e) => return Err(e).context("poll"),
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        let mut i = 1;
        if let Some(m) = &pty_master {
            if stdin_open {
                if ready[i] && !copy(stdin.as_fd(), m.as_fd()) {
                    stdin_open = false;
                }
                i += 1;
            }
            if master_open && ready[i] && !copy(m.as_fd(), stdout.as_fd()) {
                master_open = false;
            }
        }
        while let Ok(Some(info)) = sfd.read_signal() {
            let Ok(sig) = Signal::try_from(info.ssi_signo as i32) else {
                continue;
            };
            match sig {
                Signal::SIGCHLD => {}
                Signal::SIGWINCH => {
                    if let (Some(m), Some(ws)) = (&pty_master, window_size(stdin.as_fd())) {
                        // SAFETY: TIOCSWINSZ reads the winsize struct, which lives across the call.
                        unsafe {
                            libc::ioctl(
                                m.as_raw_fd(),
                                libc::TIOCSWINSZ,
                                &ws as *const nix::pty::Winsize,
                            )
                        };
                    }
                }
                other => {
                    let _ = kill(pid, other);
                }
            }
        }
    }
}
