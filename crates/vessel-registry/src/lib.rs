//! A client of the OCI distribution API that pulls container images into Vessel's
//! content-addressed [`BlobStore`](vessel_image::BlobStore).
//!
//! Blocking (call it from a blocking task): [`Client::pull`] negotiates the manifest (OCI or
//! Docker v2, picking linux/amd64 from an index), authenticates with anonymous or
//! credentialed bearer tokens or basic auth, and streams the config and layers into the store,
//! verifying every digest, skipping blobs already stored and resuming interrupted downloads
//! with HTTP `Range` requests. See `docs/registry.md`.

mod auth;
mod blob;
mod client;
mod error;
pub mod manifest;
mod pull;
pub mod reference;

pub use auth::Credentials;
pub use blob::{BlobKind, Progress, ProgressEvent, PARTIAL_DIR};
pub use client::{Client, ClientOptions};
pub use error::{RegistryError, Result};
pub use pull::{Layer, PulledImage};
pub use reference::{Reference, ReferenceError};
