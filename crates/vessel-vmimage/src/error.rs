//! Errors of image building: each says what is missing and, for host tools, which Debian
//! package provides it.

use std::path::PathBuf;
use std::process::ExitStatus;

/// Why a VM image could not be built or opened.
#[derive(Debug, thiserror::Error)]
pub enum VmImageError {
    /// A host program is not installed.
    #[error("`{tool}` was not found: install the Debian package {package}")]
    ToolMissing {
        /// Program name.
        tool: &'static str,
        /// Debian package that provides it.
        package: &'static str,
    },
    /// A host program ran and failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    ToolFailed {
        /// The command line that failed.
        command: String,
        /// Its exit status.
        status: ExitStatus,
        /// The end of what it wrote to stderr.
        stderr: String,
    },
    /// Reading or writing a file failed.
    #[error("cannot {action} {}", path.display())]
    Io {
        /// What was being done ("read", "create", ...).
        action: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// apt knows no kernel behind the `linux-image-cloud-amd64` metapackage.
    #[error(
        "apt-cache names no kernel package behind {metapackage}: run `apt-get update` (the \
         package lists may be missing or stale)"
    )]
    KernelPackageUnresolved {
        /// The metapackage asked about.
        metapackage: &'static str,
    },
    /// `apt-get download` of the kernel package failed.
    #[error("cannot download {package} ({stderr}): check the network, or run `apt-get update` if the package lists are stale")]
    KernelDownloadFailed {
        /// The kernel package.
        package: String,
        /// What apt-get said.
        stderr: String,
    },
    /// A kernel package or directory does not hold what a guest kernel needs.
    #[error("{} has no {what}", path.display())]
    KernelIncomplete {
        /// The directory or package looked into.
        path: PathBuf,
        /// What was missing (vmlinuz, lib/modules/VERSION, modules.dep, ...).
        what: String,
    },
    /// A module the guest cannot work without is neither built in nor shipped.
    #[error(
        "kernel {kernel_version} has module {module} neither built in nor in its modules directory"
    )]
    ModuleMissing {
        /// Module name (as in modules.dep, dashes as underscores).
        module: String,
        /// The kernel's version.
        kernel_version: String,
    },
    /// modules.dep names a module whose file is not there.
    #[error("modules.dep of {kernel_version} names {} which does not exist", path.display())]
    ModuleFileMissing {
        /// The missing file.
        path: PathBuf,
        /// The kernel's version.
        kernel_version: String,
    },
    /// The busybox binary is dynamically linked, so it would not run inside the guest.
    #[error("{} is dynamically linked: install the Debian package busybox-static", path.display())]
    BusyboxNotStatic {
        /// The busybox binary looked at.
        path: PathBuf,
    },
    /// The busybox binary is missing.
    #[error("{} does not exist: install the Debian package busybox-static", path.display())]
    BusyboxMissing {
        /// Where busybox was expected.
        path: PathBuf,
    },
    /// The output directory already holds files.
    #[error("output directory {} is not empty", path.display())]
    OutputNotEmpty {
        /// The output directory.
        path: PathBuf,
    },
    /// The disk is too small for the root file system or for ext4 itself.
    #[error("disk size {size} bytes is too small: give at least {minimum} bytes")]
    DiskTooSmall {
        /// Size asked for.
        size: u64,
        /// Smallest size accepted.
        minimum: u64,
    },
    /// The root file system directory for a disk image does not exist.
    #[error("root file system directory {} does not exist", path.display())]
    RootfsMissing {
        /// The directory given.
        path: PathBuf,
    },
    /// image.json could not be parsed or names files that are not there.
    #[error("image manifest {} is invalid: {reason}", path.display())]
    ManifestInvalid {
        /// The manifest file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A host name that cannot go on the kernel command line.
    #[error("{hostname:?} is not a valid host name (letters, digits, dashes and dots)")]
    InvalidHostname {
        /// The name given.
        hostname: String,
    },
    /// A file of an image no longer has the digest its manifest records.
    #[error("{} does not match the digest recorded in image.json", path.display())]
    DigestMismatch {
        /// The changed file.
        path: PathBuf,
    },
}

impl VmImageError {
    /// An I/O error on `path` while doing `action`.
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| VmImageError::Io {
            action,
            path,
            source,
        }
    }
}

/// Result of this crate's functions.
pub type Result<T, E = VmImageError> = std::result::Result<T, E>;
