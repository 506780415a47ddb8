//! Vessel's user-space NFSv3 server: the NAS-like file export of a filesystem volume.
//!
//! An [`NfsServer`] offers directories as named [`Export`]s over ONC RPC on TCP: NFS v3,
//! MOUNT v3 and (optionally, on its own listener) a portmapper, so stock clients find it.
//! Objects are named by kernel file handles authenticated with a server key; every name is
//! resolved beneath its directory without following symlinks; each request runs with the
//! caller's (optionally squashed) uid and gids, so the kernel enforces permissions. See
//! `docs/nfs.md`.

mod export;
mod limits;
mod mount;
mod nfs;
mod portmap;
pub mod rpc;
mod server;
mod sys;
pub mod xdr;

pub use export::{nets_admit, parse_client_net, Export, ExportError, HandleKey, Squash};
pub use ipnet::IpNet;
pub use limits::{ClientStats, ServerLimits, ServerStats, FDS_PER_CONNECTION};
pub use server::{NfsError, NfsServer, ServerHandle};
