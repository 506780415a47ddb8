//! Vessel's virtual-machine engine: QEMU command lines, QMP, lifecycle and the guest agent's host side.
//!
//! The API is blocking (threads and `std` I/O, no async runtime): call it from
//! `tokio::task::spawn_blocking` in the daemon. Nothing here knows about projects, the store or
//! HTTP. `docs/vm.md` in the repository explains the profiles, the probe and the protocols.
//!
//! ```no_run
//! # fn main() -> vessel_vm::Result<()> {
//! use std::path::Path;
//! use std::time::Duration;
//! use vessel_vm::{probe_accel, start, MachineDef};
//!
//! let kernel = Path::new("/var/lib/vessel/images/deb/vmlinuz");
//! let initrd = Path::new("/var/lib/vessel/images/deb/initrd.img");
//! let probe = probe_accel(kernel, Some(initrd), Duration::from_secs(5),
//!                         Some(Path::new("/var/lib/vessel/accel.json")))?;
//! let mut def = MachineDef::para("web1", Path::new("/run/vessel/vms/web1"), kernel, Some(initrd));
//! def.accel = probe.accel;
//! let vm = start(&def, None)?;
//! vm.shutdown(Duration::from_secs(30))?;
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

mod accel;
mod agent;
mod cgroup;
pub mod cmdline;
mod console;
mod dirty;
mod disk;
mod error;
mod exit;
pub mod host;
mod machine;
mod migrate;
pub mod qmp;
mod resize;
mod snapshot;
mod spawn;
mod vm;

pub use accel::{kernel_version, probe_accel, qemu_version, AccelProbe};
pub use agent::{agent_exec, AgentFrame, AgentSession, ExecOutput};
pub use cgroup::{memory_limit, resources as cgroup_resources, CPU_PERIOD_US, QEMU_OVERHEAD_MIB};
pub use dirty::Extent;
pub use disk::{
    backing_file, backing_format, create_overlay, grow_image, image_info, rebase_overlay,
    refuse_external_data, ImageInfo,
};
pub use error::{Result, VmError};
pub use exit::{classify, reap_stale, ExitEvidence, StaleVm, VmExit};
pub use machine::{
    validate_name, Accel, Disk, DiskFormat, Firmware, FullBoot, LogSink, MachineDef, Media, Nic,
    NicBackend, ParaBoot, Profile, RbdSource, VmPaths,
};
pub use migrate::{MigrationLinks, MigrationParams, MigrationPhase, MigrationStats};
pub use resize::MemoryChange;
pub use snapshot::{disk_snapshot, disk_snapshots, DiskSnapshot};
pub use spawn::RunAs;
pub use vm::{
    adopt, start, start_cancellable, ProcessId, RunningVm, ShutdownHow, ShutdownOutcome, VmRecord,
    VmStatus,
};
