//! Network namespace handles: every engine operation is scoped to one of these.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};

/// Errors opening or entering a network namespace.
#[derive(Debug, thiserror::Error)]
pub enum NetNsError {
    /// The namespace file could not be opened (no such namespace, or the process is gone).
    #[error("cannot open network namespace {path}")]
    Open {
        /// Path that was tried.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// setns(2) into the namespace failed (needs CAP_SYS_ADMIN).
    #[error("cannot enter network namespace")]
    Enter(#[source] std::io::Error),
    /// The helper thread running inside the namespace panicked.
    #[error("helper thread inside the network namespace panicked")]
    ThreadPanicked,
}

/// A network namespace: either the caller's own, or one held open by a file descriptor.
#[derive(Debug)]
pub struct NetNs {
    file: Option<File>,
    label: String,
}

impl NetNs {
    /// The namespace of the calling thread (the daemon's own, usually).
    pub fn current() -> Self {
        Self {
            file: None,
            label: "current".into(),
        }
    }

    /// A namespace bound at an arbitrary path (`/proc/PID/ns/net`, `/run/netns/NAME`, ...).
    pub fn from_path(path: impl AsRef<Path>) -> Result<Self, NetNsError> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|source| NetNsError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self {
            file: Some(file),
            label: path.display().to_string(),
        })
    }

    /// A namespace named by `ip netns add NAME` (bound under `/run/netns`).
    pub fn named(name: &str) -> Result<Self, NetNsError> {
        Self::from_path(Path::new("/run/netns").join(name))
    }

    /// The namespace a process lives in, e.g. a container's init.
    pub fn from_pid(pid: u32) -> Result<Self, NetNsError> {
        Self::from_path(format!("/proc/{pid}/ns/net"))
    }

    /// The open namespace file, or `None` for the caller's own namespace.
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.file.as_ref().map(|f| f.as_fd())
    }

    /// A short description for logs and errors.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Runs `f` on a helper thread that has entered this namespace, and returns its result.
    ///
    /// Sockets created inside `f` stay bound to this namespace after the thread ends, which
    /// is how netlink sockets and test listeners are scoped without moving the whole process.
    pub fn run<T, F>(&self, f: F) -> Result<T, NetNsError>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        let Some(file) = &self.file else {
            return Ok(f());
        };
        let raw = file.as_raw_fd();
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    enter(raw)?;
                    Ok(f())
                })
                .join()
                .map_err(|_| NetNsError::ThreadPanicked)?
        })
    }
}

impl NetNs {
    /// A command that runs inside this namespace: the child `setns`es in `pre_exec`, so no
    /// thread of this (multi-threaded) process ever moves. The namespace must stay open until
    /// the command is spawned.
    pub(crate) fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> std::process::Command {
        use std::os::unix::process::CommandExt;
        let mut cmd = std::process::Command::new(program);
        if let Some(fd) = self.fd() {
            let raw = fd.as_raw_fd();
            // SAFETY: the closure runs in the forked child before exec and only calls setns(2),
            // which is async-signal-safe and allocates nothing; `raw` stays open until exec.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setns(raw, libc::CLONE_NEWNET) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        cmd
    }
}

/// Moves the calling thread into the network namespace open at `fd`.
pub(crate) fn enter(fd: libc::c_int) -> Result<(), NetNsError> {
    // SAFETY: setns only reads the fd number and changes this thread's namespace; it does not
    // touch memory owned by Rust.
    let rc = unsafe { libc::setns(fd, libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(NetNsError::Enter(std::io::Error::last_os_error()));
    }
    Ok(())
}
