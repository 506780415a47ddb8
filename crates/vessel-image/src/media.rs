//! Media types of image parts, and how layer blobs are compressed.

use std::io::Read;

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Uncompressed OCI layer.
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// Gzip-compressed OCI layer.
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// Zstd-compressed OCI layer.
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// Docker schema 2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip (possibly several members).
    Gzip,
    /// zstd (possibly several frames).
    Zstd,
}

impl Compression {
    /// The compression a layer media type announces, `None` for a media type that is not a
    /// layer.
    pub fn from_media_type(media_type: &str) -> Option<Self> {
        let base = media_type.split(';').next().unwrap_or_default().trim();
        if base.ends_with("+gzip") || base.ends_with(".tar.gzip") {
            Some(Self::Gzip)
        } else if base.ends_with("+zstd") {
            Some(Self::Zstd)
        } else if base.ends_with(".tar") || base.ends_with("layer.v1.tar") {
            Some(Self::None)
        } else {
            None
        }
    }

    /// The compression the first bytes of a blob show (magic numbers).
    pub fn sniff(head: &[u8]) -> Self {
        if head.starts_with(&[0x1f, 0x8b]) {
            Self::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Self::Zstd
        } else {
            Self::None
        }
    }

    /// The OCI layer media type for this compression.
    pub fn oci_media_type(self) -> &'static str {
        match self {
            Self::None => OCI_LAYER_TAR,
            Self::Gzip => OCI_LAYER_GZIP,
            Self::Zstd => OCI_LAYER_ZSTD,
        }
    }

    /// Wraps `r` in a decoder for this compression.
    pub fn decoder<'a>(self, r: impl Read + 'a) -> std::io::Result<Box<dyn Read + 'a>> {
        Ok(match self {
            Self::None => Box::new(r),
            Self::Gzip => Box::new(flate2::read::MultiGzDecoder::new(r)),
            Self::Zstd => Box::new(zstd::stream::read::Decoder::new(r)?),
        })
    }
}
