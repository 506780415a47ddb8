//! Container images for Vessel: a content-addressed blob store, image configuration, safe
//! unpacking of layers, and reading and writing OCI image layouts and docker archives.
//!
//! This crate knows nothing of the daemon, HTTP or the state store.

pub mod blobs;
pub mod config;

pub use blobs::{BlobStore, Digest};
pub use config::ImageConfig;
