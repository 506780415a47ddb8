//! Container images for Vessel: a content-addressed blob store, image configuration, safe
//! unpacking of layers, and reading and writing OCI image layouts and docker archives.
//!
//! This crate knows nothing of the daemon, HTTP or the state store.

pub mod blobs;
pub mod config;
pub mod flatten;
mod fsat;
pub mod media;
pub mod tar;
pub mod unpack;

pub use blobs::{BlobStore, Digest};
pub use config::ImageConfig;
pub use flatten::{flatten, FlattenError};
pub use unpack::{unpack_layer, UnpackError, UnpackOptions, UnpackStats};
