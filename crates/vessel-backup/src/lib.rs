//! Vessel's backup store, in the manner of Proxmox Backup Server: a directory (local, or on
//! another host's export) of chunks named by the SHA-256 of their content, each compressed
//! with zstd and checked against its name on every read, and one index per backup naming
//! the chunks of its archives. Disks are cut into fixed chunks of 4 MiB; file trees are cut
//! per file by content (FastCDC), so that an insertion moves no chunk boundary but its own.
//! Two backups of the same thing share every unchanged chunk, backups of two things made
//! from the same image share the image's, and a file unchanged since the backup before
//! (same size, times and inode) is not even read.
//!
//! This crate knows nothing of instances, projects or the daemon: it backs up and restores
//! directories, files and bytes.

mod archive;
mod block;
mod chunk;
mod error;
mod index;
mod maint;
mod pipeline;
mod store;
mod tree;

pub use block::{stamp, BLOCK_CHUNK};
pub use chunk::{Digest, MAX_CHUNK};
pub use error::{BackupError, Result};
pub use index::{Archive, ArchiveKind, ChunkRef, Index};
pub use maint::{by_group, prune_plan, GcReport, Verified};
pub use pipeline::Stats;
pub use store::{check_name, utc_id, Listed, Store, StoreConfig, Writer};
pub use tree::{ChunkSizes, Entry, Kind, Meta};
