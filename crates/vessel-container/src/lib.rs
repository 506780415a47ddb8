//! Vessel's container runtime: creates and runs OCI containers from a runtime spec, like runc,
//! on namespaces, cgroups (through `vessel-cgroups`), mounts, capabilities and seccomp.
//!
//! The lifecycle follows the OCI runtime spec: [`create`] sets a container up and leaves its
//! init blocked, [`start`] lets it exec the user process, [`kill`], [`delete`]; [`exec`] runs
//! more processes inside; [`state`], [`list`], [`ps`], [`stats`], [`pause`], [`resume`];
//! [`update`] changes its resource limits live.
//! States live under a state root directory (see [`DEFAULT_STATE_ROOT`]), one directory per
//! container, so separate processes can drive the same container.
//!
//! # Single-threaded callers only
//!
//! [`create`] and [`exec`] fork and keep running Rust code in the children (they cannot exec a
//! helper: the container's processes must be children of the caller). That is only sound in a
//! single-threaded process. A multi-threaded program (the daemon) runs them through the
//! `vessel-runc` binary or a single-threaded monitor process instead of calling them
//! in-process. The other functions do not fork.
//!
//! Every process [`create`] and [`exec`] start is a direct child of the caller, which should
//! `waitpid` it (a subreaper keeps them when the caller exits first, as conmon does).

mod capabilities;
mod cgroup;
mod cgroupfs;
mod console;
mod create;
mod delete;
mod devices;
mod error;
mod exec;
mod features;
mod fork;
mod hooks;
mod init;
mod kill;
mod mounts;
mod namespaces;
mod process;
mod rootfs;
mod seccomp;
pub mod spec;
mod start;
mod state;
mod sync;
mod syscall_table;
mod syscall_table_i386;
mod syscall_table_x32;
mod update;

pub use console::Console;
pub use create::{create, CreateOptions};
pub use delete::delete;
pub use error::{Error, Result};
pub use exec::{container_spec, exec, ExecOptions};
pub use features::features;
pub use kill::{kill, parse_signal, pause, ps, resume, stats};
pub use namespaces::to_host_id;
pub use start::start;
pub use state::{list, state, State, Status, DEFAULT_STATE_ROOT, OCI_VERSION};
pub use update::update;
