//! The container's terminal: a pty allocated inside the container (its master sent over the
//! OCI console socket, as conmon expects), or a pty slave given by the caller.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use nix::fcntl::{open, OFlag};
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use nix::sys::stat::Mode;
use nix::unistd::{dup2, setsid};

use crate::error::{Error, Result, SysContext};

/// Where a container process's terminal comes from.
#[derive(Debug, Default)]
pub enum Console {
    /// No terminal: the process inherits the caller's stdin, stdout and stderr.
    #[default]
    Inherit,
    /// Use this pty slave (allocated by the caller, who keeps the master) as the process's
    /// controlling terminal and stdio.
    Pty(OwnedFd),
    /// OCI `--console-socket`: allocate a pty inside the container and send its master over
    /// the unix socket at this path (`SCM_RIGHTS`), like runc does for conmon.
    Socket(PathBuf),
}

/// The console as prepared in the caller before forking.
#[derive(Debug)]
pub(crate) enum Prepared {
    Inherit,
    Pty { slave: OwnedFd, host_path: PathBuf },
    Socket(UnixStream),
}

impl Console {
    /// Opens what the child will need (connects the socket) while the caller's paths apply.
    pub(crate) fn prepare(self) -> Result<Prepared> {
        Ok(match self {
            Console::Inherit => Prepared::Inherit,
            Console::Pty(slave) => {
                let link = format!("/proc/self/fd/{}", slave.as_raw_fd());
                let host_path =
                    std::fs::read_link(&link).map_err(|e| Error::io("readlink", link, e))?;
                Prepared::Pty { slave, host_path }
            }
            Console::Socket(path) => Prepared::Socket(
                UnixStream::connect(&path)
                    .map_err(|e| Error::io("connect to console socket", &path, e))?,
            ),
        })
    }
}

/// In the container process: allocates a pty from the container's /dev/ptmx, sends the master
/// to the socket, and returns the slave. `console` (for init) also bind-mounts the slave on
/// /dev/console.
pub(crate) fn open_socket_console(
    socket: &UnixStream,
    mount_console: bool,
    size: Option<(u16, u16)>,
) -> Result<OwnedFd> {
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .sys(|| "open /dev/ptmx in the container".into())?;
    grantpt(&master).sys(|| "grantpt".into())?;
    unlockpt(&master).sys(|| "unlockpt".into())?;
    let name = ptsname_r(&master).sys(|| "ptsname".into())?;
    let slave_fd = open(
        Path::new(&name),
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .sys(|| format!("open pty slave {name}"))?;
    // SAFETY: `open` returned a fresh descriptor that nothing else owns.
    let slave = unsafe { OwnedFd::from_raw_fd(slave_fd) };
    if let Some((rows, cols)) = size {
        set_size(slave.as_raw_fd(), rows, cols)?;
    }
    if mount_console {
        let console = Path::new("/dev/console");
        crate::mounts::ensure_file(console)?;
        crate::mounts::mount_at(
            Some(&name),
            console,
            Some("bind"),
            nix::mount::MsFlags::MS_BIND,
            None,
        )?;
    }
    let fds = [master.as_raw_fd()];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let iov = [IoSlice::new(name.as_bytes())];
    sendmsg::<()>(socket.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None)
        .sys(|| "send the pty master over the console socket".into())?;
    Ok(slave)
}

/// Sets the window size of a terminal.
pub(crate) fn set_size(fd: RawFd, rows: u16, cols: u16) -> Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize struct that lives across the call.
    let rc = unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws as *const libc::winsize) };
    if rc != 0 {
        return Err(Error::sys(
            "set the terminal size (TIOCSWINSZ)",
            nix::Error::last(),
        ));
    }
    Ok(())
}

/// Makes `slave` the controlling terminal and the stdio of the calling process (which becomes
/// a session leader).
pub(crate) fn attach(slave: &OwnedFd) -> Result<()> {
    // Already a session leader is fine (EPERM).
    let _ = setsid();
    // SAFETY: TIOCSCTTY takes an integer argument (0: do not steal from another session).
    let rc = unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) };
    if rc != 0 {
        return Err(Error::sys(
            "make the pty the controlling terminal (TIOCSCTTY)",
            nix::Error::last(),
        ));
    }
    for target in 0..3 {
        dup2(slave.as_raw_fd(), target).sys(|| format!("dup2 the pty onto fd {target}"))?;
    }
    Ok(())
}
