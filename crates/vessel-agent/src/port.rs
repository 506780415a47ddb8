//! The channel to the host: the virtio-serial port (or stdin/stdout for tests), read and
//! written through `poll(2)` so that a host that goes away never leaves a thread blocked.
//!
//! A virtio-serial port reads as end-of-file while no host client is connected (the QEMU
//! chardev behind it has no peer), and its `poll` reports `POLLHUP` then; a `write` would block
//! until a host connects again, which would hand stale output to the next client. So writes
//! wait with `poll` for `POLLOUT` and give up on `POLLHUP`.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use vessel_api::stream::{self, FrameKind};

/// What one read from the host gave.
pub enum Input {
    /// Bytes from the host.
    Data(usize),
    /// No host is connected (port) or the input ended (stdio).
    Disconnected,
}

/// The host channel: one descriptor to read, one to write (the same for a port).
pub struct Port {
    read_fd: OwnedFd,
    write_fd: OwnedFd,
    /// Whether end-of-file ends the agent (stdio) or means "wait for the next host" (port).
    pub is_stdio: bool,
    /// The session whose frames may be written now; `None` between sessions.
    current: Mutex<Option<u64>>,
}

impl Port {
    /// Opens a virtio-serial port (non-blocking, close-on-exec).
    pub fn open(path: &Path) -> io::Result<Port> {
        let file: File = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(path)?;
        let read_fd: OwnedFd = file.into();
        let write_fd = read_fd.try_clone()?;
        Ok(Port {
            read_fd,
            write_fd,
            is_stdio: false,
            current: Mutex::new(None),
        })
    }

    /// Uses the agent's own stdin and stdout (tests, or a host that spawns the agent).
    pub fn stdio() -> io::Result<Port> {
        let read_fd = io::stdin().as_raw_fd_owned()?;
        let write_fd = io::stdout().as_raw_fd_owned()?;
        set_nonblocking(read_fd.as_raw_fd())?;
        set_nonblocking(write_fd.as_raw_fd())?;
        Ok(Port {
            read_fd,
            write_fd,
            is_stdio: true,
            current: Mutex::new(None),
        })
    }

    /// Reads what the host sent, waiting for it; `Disconnected` when no host is there.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<Input> {
        let fd = self.read_fd.as_raw_fd();
        loop {
            let revents = poll_one(fd, libc::POLLIN, -1)?;
            if revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) == 0 {
                continue;
            }
            // SAFETY: reads into the caller's buffer, at most its length.
            let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n > 0 {
                return Ok(Input::Data(n as usize));
            }
            if n == 0 {
                return Ok(Input::Disconnected);
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EINTR) => {
                    if revents & libc::POLLHUP != 0 {
                        return Ok(Input::Disconnected);
                    }
                }
                _ => return Err(err),
            }
        }
    }

    /// Starts a session: from now on its frames reach the host.
    pub fn begin(&self, session: u64) {
        *self.lock() = Some(session);
    }

    /// Ends a session: later frames of it are dropped.
    pub fn end(&self, session: u64) {
        let mut cur = self.lock();
        if *cur == Some(session) {
            *cur = None;
        }
    }

    /// Writes one frame of `session`; an error once the session is over or the host is gone.
    pub fn send(&self, session: u64, kind: FrameKind, payload: &[u8]) -> io::Result<()> {
        let cur = self.lock();
        if *cur != Some(session) {
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, "session over"));
        }
        let frame = stream::encode(kind, payload);
        write_all(self.write_fd.as_raw_fd(), &frame)
    }

    /// Writes the last frame of `session` (exit code or error) and ends it.
    pub fn finish(&self, session: u64, kind: FrameKind, payload: &[u8]) -> io::Result<()> {
        let mut cur = self.lock();
        if *cur != Some(session) {
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, "session over"));
        }
        *cur = None;
        write_all(self.write_fd.as_raw_fd(), &stream::encode(kind, payload))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<u64>> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Waits for POLLOUT before each write; `POLLHUP`/`POLLERR` mean the host went away.
fn write_all(fd: RawFd, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        let revents = poll_one(fd, libc::POLLOUT, -1)?;
        if revents & libc::POLLOUT == 0 && revents & (libc::POLLHUP | libc::POLLERR) != 0 {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "host disconnected",
            ));
        }
        // SAFETY: writes from a live slice, at most its length.
        let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
        if n < 0 {
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EINTR) => continue,
                _ => return Err(err),
            }
        }
        data = &data[n as usize..];
    }
    Ok(())
}

/// `poll` on one descriptor; returns its `revents`. `timeout_ms` < 0 waits forever.
pub fn poll_one(fd: RawFd, events: libc::c_short, timeout_ms: i32) -> io::Result<libc::c_short> {
    let mut pfd = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    loop {
        // SAFETY: one pollfd on our stack, count 1.
        let r = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
        if r >= 0 {
            return Ok(pfd.revents);
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINTR) {
            return Err(err);
        }
    }
}

/// Sets `O_NONBLOCK` on a descriptor.
pub fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_GETFL/F_SETFL on a descriptor we hold; no memory is passed.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// How long to wait before looking again for a host on a port nobody is connected to.
pub const RECONNECT_POLL: Duration = Duration::from_millis(100);

trait DupOwned {
    fn as_raw_fd_owned(&self) -> io::Result<OwnedFd>;
}

impl<T: std::os::fd::AsFd> DupOwned for T {
    fn as_raw_fd_owned(&self) -> io::Result<OwnedFd> {
        self.as_fd().try_clone_to_owned()
    }
}
