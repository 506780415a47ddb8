//! The error type of the container runtime.

use std::path::PathBuf;

use crate::state::Status;

/// Result of runtime operations.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong while creating, running or tearing down a container.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The container id is not usable as a directory name.
    #[error(
        "container id {0:?} is invalid: use 1 to 1024 characters from A-Z a-z 0-9 _ . - \
         (not starting with '.')"
    )]
    InvalidId(String),
    /// No container with this id exists under the state root.
    #[error("container {id:?} does not exist under {root}: check the id and the --root directory")]
    NotFound {
        /// Container id.
        id: String,
        /// State root searched.
        root: PathBuf,
    },
    /// A container with this id already exists under the state root.
    #[error("container {0:?} already exists: delete it first or choose another id")]
    AlreadyExists(String),
    /// The container is in a state that does not allow the operation.
    #[error("container {id:?} is {status}: {hint}")]
    WrongState {
        /// Container id.
        id: String,
        /// Its current status.
        status: Status,
        /// What the caller can do about it.
        hint: &'static str,
    },
    /// The OCI spec could not be read.
    #[error("cannot load the OCI spec {path}: check that the bundle has a valid config.json")]
    SpecLoad {
        /// File read.
        path: PathBuf,
        /// Cause.
        #[source]
        source: oci_spec::OciSpecError,
    },
    /// The OCI spec asks for something invalid or unsupported.
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    /// A file or directory operation failed.
    #[error("{op} {path} failed")]
    Io {
        /// What was being done.
        op: &'static str,
        /// File or directory.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A system call failed.
    #[error("{op} failed")]
    Sys {
        /// What was being done, with the objects involved.
        op: String,
        /// Cause.
        #[source]
        source: nix::Error,
    },
    /// The cgroup backend failed.
    #[error("cgroup {op} failed for {path}")]
    Cgroup {
        /// What was being done.
        op: &'static str,
        /// Cgroup path.
        path: String,
        /// Cause.
        #[source]
        source: vessel_cgroups::CgroupError,
    },
    /// The container runs without a cgroup, so a cgroup-based operation cannot be done.
    #[error(
        "container {id:?} has no cgroup ({reason}): pause, resume, stats and ps need the cgroup \
         backend; recreate the container once it is available"
    )]
    NoCgroup {
        /// Container id.
        id: String,
        /// Why it has none.
        reason: String,
    },
    /// The stored state of a container could not be read or written.
    #[error("container state {path} is unreadable: delete the container with --force")]
    StateFile {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
    /// The executable in `process.args` was not found on PATH (podman maps this to 127).
    #[error(
        "exec: {0:?}: executable file not found in $PATH: check process.args, PATH and the image"
    )]
    ExecutableNotFound(String),
    /// The executable in `process.args` (a path) cannot be looked at (podman maps "no such file
    /// or directory" to 127). Worded like runc's.
    #[error(
        "exec: {name:?}: stat {name}: {}: check process.args and the image",
        errno_text(*.errno)
    )]
    ExecutableMissing {
        /// The path as given.
        name: String,
        /// Why stat failed.
        errno: nix::Error,
    },
    /// The executable in `process.args` exists but is a directory or not executable (podman
    /// maps "permission denied" to 126). Worded like runc's.
    #[error("exec: {0:?}: permission denied: make it executable or check process.args")]
    ExecutableDenied(String),
    /// execve itself failed (a bad `#!` interpreter, a file in no executable format, ...).
    /// Printed by the process itself once its runtime has returned, worded like runc's.
    #[error("exec {path}: {}", errno_text(*.errno))]
    Execve {
        /// The resolved executable.
        path: String,
        /// Why execve failed.
        errno: nix::Error,
    },
    /// Setting up the container's init process failed (message from inside the container).
    #[error("container init failed: {0}")]
    Init(String),
    /// Setting up a process started with exec failed (message from inside the container).
    #[error("exec failed: {0}")]
    Exec(String),
    /// The seccomp profile cannot be translated.
    #[error("seccomp: {0}")]
    Seccomp(String),
    /// A capability name or operation failed.
    #[error("capabilities: {0}")]
    Capabilities(String),
    /// An OCI hook failed or ran past its timeout.
    #[error(
        "{kind} hook #{index} ({path}) failed: {reason}: fix the hook or remove it from the spec"
    )]
    Hook {
        /// Kind of hook (`prestart`, `createRuntime`, ...).
        kind: &'static str,
        /// Its position in the spec's list.
        index: usize,
        /// Its path.
        path: String,
        /// What happened, with what it printed.
        reason: String,
    },
    /// A container process did not react in time.
    #[error("container {id:?}: {what}")]
    Timeout {
        /// Container id.
        id: String,
        /// What did not happen.
        what: String,
    },
    /// The start handshake with the init process failed.
    #[error("starting container {id:?} failed: {reason}")]
    Start {
        /// Container id.
        id: String,
        /// What happened.
        reason: String,
    },
}

impl Error {
    /// Wraps a system-call error with a description of the call.
    pub(crate) fn sys(op: impl Into<String>, source: nix::Error) -> Self {
        Error::Sys {
            op: op.into(),
            source,
        }
    }

    /// Wraps an I/O error with the operation and path.
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// The message with its chain of causes, e.g. `mount /proc failed: EPERM: Operation not
    /// permitted`, for sending across a process boundary.
    pub fn chain(&self) -> String {
        let mut out = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            out.push_str(": ");
            out.push_str(&cause.to_string());
            source = cause.source();
        }
        out
    }
}

/// An errno's text as Go (and so runc) prints it: `exec format error`, `no such file or
/// directory`.
pub(crate) fn errno_text(errno: nix::Error) -> String {
    let desc = errno.desc();
    let mut chars = desc.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => format!("errno {}", errno as i32),
    }
}

/// Extension to attach a description to `nix` results.
pub(crate) trait SysContext<T> {
    /// Describes the failed call.
    fn sys(self, op: impl FnOnce() -> String) -> Result<T>;
}

impl<T> SysContext<T> for nix::Result<T> {
    fn sys(self, op: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::sys(op(), e))
    }
}
