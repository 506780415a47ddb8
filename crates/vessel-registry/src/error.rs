//! Errors of registry pulls, worded so a person knows what to do next.

use std::io;
use std::path::PathBuf;

use vessel_image::blobs::BlobError;
use vessel_image::Digest;

use crate::reference::ReferenceError;

/// Why a pull failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The reference could not be parsed.
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    /// The registry has no such repository, tag or digest.
    #[error("image {image} not found: check the name and tag")]
    NotFound {
        /// The reference as the user would write it.
        image: String,
    },
    /// The registry's manifest names a blob it does not serve.
    #[error("registry {host} has no blob {digest} of {repository}: the image is incomplete there")]
    BlobNotFound {
        /// Registry.
        host: String,
        /// Repository.
        repository: String,
        /// The missing blob.
        digest: Digest,
    },
    /// Nothing answered, or the connection failed before an HTTP answer.
    #[error("cannot reach {host}: {detail}{hint}")]
    Unreachable {
        /// Registry (or token server) host.
        host: String,
        /// What went wrong, from the transport.
        detail: String,
        /// A suggestion (e.g. `--insecure` when TLS failed), empty or starting with "; ".
        hint: String,
    },
    /// The registry wants credentials, or refused those given.
    #[error("registry {host} denied access to {repository}: {detail}")]
    Unauthorized {
        /// Registry.
        host: String,
        /// Repository.
        repository: String,
        /// What to do.
        detail: String,
    },
    /// The registry answered with an unexpected status.
    #[error("registry {host} answered {status} to {what}: {message}")]
    Http {
        /// Registry.
        host: String,
        /// HTTP status.
        status: u16,
        /// The request, in words ("manifest busybox:1").
        what: String,
        /// The registry's own error text, when it sent one.
        message: String,
    },
    /// The registry's answer was not what the protocol allows.
    #[error("registry {host} sent a bad answer to {what}: {reason}")]
    Protocol {
        /// Registry or token server.
        host: String,
        /// The request, in words.
        what: String,
        /// What was wrong.
        reason: String,
    },
    /// The registry's token server is plain HTTP and not listed as insecure.
    #[error("registry {host} sends clients to the plain-HTTP token server {realm}; list {realm_host} as insecure to allow it")]
    InsecureRealm {
        /// Registry.
        host: String,
        /// The token realm URL.
        realm: String,
        /// Its `host[:port]`.
        realm_host: String,
    },
    /// Content did not hash to the digest it was asked for by; nothing was stored.
    #[error(
        "{what} does not match its digest: expected {expected}, got {actual}; nothing was stored"
    )]
    DigestMismatch {
        /// Which content ("the manifest of IMAGE", "a layer of IMAGE").
        what: String,
        /// The digest asked for.
        expected: Digest,
        /// What the bytes hash to.
        actual: Digest,
    },
    /// A blob's length differs from the size its descriptor announced.
    #[error("blob {digest} is {actual} bytes or more where the manifest says {expected}; nothing was stored")]
    SizeMismatch {
        /// The blob.
        digest: Digest,
        /// Announced size.
        expected: u64,
        /// Bytes received.
        actual: u64,
    },
    /// A manifest, config or token response was larger than allowed.
    #[error("{what} from {host} is larger than the {limit} bytes allowed")]
    TooLarge {
        /// Registry.
        host: String,
        /// What it was.
        what: String,
        /// The cap.
        limit: u64,
    },
    /// The manifest is of a kind Vessel cannot pull (schema 1, an artifact, ...).
    #[error("image {image} has an unsupported manifest: {reason}")]
    Unsupported {
        /// The reference.
        image: String,
        /// Why.
        reason: String,
    },
    /// The manifest or config is malformed.
    #[error("image {image} has a malformed {what}: {reason}")]
    Malformed {
        /// The reference.
        image: String,
        /// "manifest", "index", "config".
        what: &'static str,
        /// The parse error.
        reason: String,
    },
    /// The image exists only for other platforms.
    #[error("image {image} has no {wanted} variant, only: {available}")]
    NoMatchingPlatform {
        /// The reference.
        image: String,
        /// The platform wanted ("linux/amd64").
        wanted: String,
        /// Platforms the image has, comma-separated.
        available: String,
    },
    /// The pull was cancelled; its partial downloads were removed.
    #[error("pull cancelled; its partial downloads were removed")]
    Cancelled,
    /// A blob arrives too slowly to be a working registry.
    #[error(
        "registry {host} sent only {got} bytes of blob {digest} in {window:?} (at least {min} \
         are expected): the download is stalled; nothing was stored"
    )]
    Stalled {
        /// Registry.
        host: String,
        /// The blob.
        digest: Digest,
        /// Bytes received in the window.
        got: u64,
        /// The window.
        window: std::time::Duration,
        /// Bytes expected per window.
        min: u64,
    },
    /// A blob took longer than its size allows.
    #[error(
        "registry {host} took more than {limit:?} for blob {digest} ({have} of {size} bytes \
         arrived); nothing was stored"
    )]
    TimedOut {
        /// Registry.
        host: String,
        /// The blob.
        digest: Digest,
        /// Bytes received.
        have: u64,
        /// Its size.
        size: u64,
        /// The time allowed.
        limit: std::time::Duration,
    },
    /// The store's file system has no room for a blob.
    #[error(
        "blob {digest} needs {needed} more bytes, but the store's file system has {free} free and \
         keeps {reserve} free; nothing was downloaded"
    )]
    NoSpace {
        /// The blob.
        digest: Digest,
        /// Bytes still to download.
        needed: u64,
        /// Bytes free.
        free: u64,
        /// Bytes kept free.
        reserve: u64,
    },
    /// The image has more layers than can be stacked into an instance's root.
    #[error(
        "image {image} has {count} layers, more than the {limit} an instance's root file system \
         can stack (overlayfs); nothing was downloaded"
    )]
    TooManyLayers {
        /// The reference.
        image: String,
        /// Layers in the manifest.
        count: usize,
        /// The limit (`ClientOptions::max_layers`).
        limit: usize,
    },
    /// The registry redirected to a URL the client refuses.
    #[error("registry {host} redirected {what} to {location:?}, which is refused: {reason}")]
    BadRedirect {
        /// Registry.
        host: String,
        /// The request, in words.
        what: String,
        /// The `Location` given.
        location: String,
        /// Why it is refused.
        reason: String,
    },
    /// The blob store refused the content.
    #[error("storing a blob")]
    Store(#[from] BlobError),
    /// Local files (partial downloads) could not be read or written.
    #[error("{op} {path}")]
    Io {
        /// File.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The client could not be set up.
    #[error("invalid registry client option: {0}")]
    Options(String),
}

/// Result of registry calls.
pub type Result<T> = std::result::Result<T, RegistryError>;
