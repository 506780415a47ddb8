//! Container images for Vessel: a content-addressed blob store, image configuration, safe
//! unpacking of layers, flattening, and reading and writing OCI image layouts and docker
//! archives.
//!
//! This crate knows nothing of the daemon, HTTP or the state store. See `docs/images.md`.

pub mod archive;
pub mod blobs;
pub mod config;
pub mod export;
pub mod flatten;
mod fsat;
pub mod media;
pub mod space;
pub mod spec;
pub mod tar;
pub mod unpack;

pub use archive::{import_image, ImportError, ImportOptions, ImportedImage, LayerRef};
pub use blobs::{BlobStore, BlobWriter, Digest};
pub use config::ImageConfig;
pub use export::{build_layer, new_image, write_oci_archive, ExportError};
pub use flatten::{flatten, FlattenError};
pub use space::SpaceLimits;
pub use unpack::{layer_diff_id, unpack_layer, RootMeta, UnpackError, UnpackOptions, UnpackStats};
