//! The error type of the VM engine.

use std::path::PathBuf;

use crate::qmp::QmpError;

/// Result of VM engine operations.
pub type Result<T> = std::result::Result<T, VmError>;

/// Everything that can go wrong while defining, starting or driving a VM.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// A program the engine runs is not installed.
    #[error("{tool} is not installed: install the Debian package {package}")]
    MissingTool {
        /// Program looked for in PATH.
        tool: &'static str,
        /// Debian package that provides it.
        package: &'static str,
    },
    /// The machine definition asks for something invalid.
    #[error("invalid machine definition: {0}")]
    InvalidDefinition(String),
    /// The guest would get more memory than the host has available.
    #[error(
        "not enough memory: the VM asks for {requested_mib} MiB but the host has only \
         {available_mib} MiB available (MemAvailable); give it less memory or free some"
    )]
    NotEnoughMemory {
        /// Guest RAM asked for, MiB.
        requested_mib: u64,
        /// The host's MemAvailable, MiB.
        available_mib: u64,
    },
    /// A file the VM needs (kernel, initrd, firmware, disk) is missing or unreadable.
    #[error("{what} {path} cannot be used: {reason}")]
    BadFile {
        /// What the file is for ("kernel", "disk image", ...).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A disk image is damaged or not what it claims to be.
    #[error("disk image {path} is not usable: {reason}")]
    BadImage {
        /// The image.
        path: PathBuf,
        /// What `qemu-img` said.
        reason: String,
    },
    /// A helper program (qemu-img) failed.
    #[error("{command} failed: {message}")]
    Command {
        /// The program and its sub-command.
        command: String,
        /// Its error output.
        message: String,
    },
    /// QEMU refused to start or died while starting.
    #[error("QEMU did not start: {0}")]
    StartFailed(String),
    /// The caller cancelled a start (it is shutting down); nothing was left behind.
    #[error("the start was cancelled: the caller is shutting down")]
    Cancelled,
    /// No live QEMU matches what the caller asked to adopt.
    #[error("cannot adopt the VM: {0}")]
    Adopt(String),
    /// The VM is not running (its QEMU is gone).
    #[error("the VM {0:?} is not running")]
    NotRunning(String),
    /// Talking to QEMU's monitor failed.
    #[error(transparent)]
    Qmp(#[from] QmpError),
    /// The guest agent did not answer or broke the protocol.
    #[error("guest agent: {0}")]
    Agent(String),
    /// The VM's cgroup could not be set up.
    #[error("cgroup {path} for the VM")]
    Cgroup {
        /// Cgroup path.
        path: String,
        /// Cause.
        #[source]
        source: vessel_cgroups::CgroupError,
    },
    /// A timeout elapsed.
    #[error("timed out after {secs:.1} s waiting for {what}")]
    Timeout {
        /// What was waited for.
        what: String,
        /// How long, seconds.
        secs: f64,
    },
    /// A file or socket operation failed.
    #[error("{op} {path} failed")]
    Io {
        /// What was being done.
        op: &'static str,
        /// File, directory or socket.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

impl VmError {
    /// A closure that wraps an I/O error with the operation and path, for `map_err`.
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> VmError {
        let path = path.into();
        move |source| VmError::Io { op, path, source }
    }
}
