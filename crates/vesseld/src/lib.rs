//! `vesseld`, the Vessel daemon, as a library: its services (instances, images, storage,
//! networks, operations, events) behind the REST API, and [`Daemon`], which builds them once
//! from a [`Config`]. The `vesseld` binary turns its command line into a `Config`, opens the
//! daemon and serves the API on a unix socket.

mod api;
mod audit;
mod auth;
mod backup;
mod clock;
mod cluster;
mod daemon;
mod error;
mod events;
mod image;
mod instance;
mod metrics;
mod name;
mod network;
mod operations;
mod profile;
mod project;
mod settings;
mod storage;
mod store;
mod transfer;

pub use cluster::watchdog::{run as run_fence_watchdog, ARG as FENCE_WATCHDOG_ARG};
pub use daemon::{Config, Daemon, DaemonError, DEFAULT_ROOT};
