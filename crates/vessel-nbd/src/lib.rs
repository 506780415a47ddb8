//! Vessel's NBD server: the SAN-like block export.
//!
//! Any [`BlockDevice`] (a sparse file today, a RAID volume later) is offered as a named
//! [`NbdExport`] by an [`NbdServer`] listening on a unix socket or TCP. The server speaks the
//! fixed newstyle handshake with structured replies, `base:allocation` block status and
//! multi-conn, and TLS (`NBD_OPT_STARTTLS`, required once the server is given a
//! rustls configuration; see `docs/nbd.md`). [`NbdClient`] is the other
//! end, small: what the RAID engine reaches a member on another host with.

mod bufs;
pub mod client;
mod device;
mod handshake;
pub mod proto;
mod replies;
mod server;
mod tls;
mod transmission;

pub use bufs::BUFFER_LIMIT;
pub use client::{ClientOp, NbdClient};
pub use device::{BlockDevice, DeviceError, DeviceReader, Extent, FileDevice};
pub use server::{
    AddressCheck, BufferBudget, ClientCheck, NbdError, NbdExport, NbdServer, ServerHandle,
    HANDSHAKE_TIMEOUT, MAX_CONNECTIONS, STALL_TIMEOUT,
};
