//! Pulling an image: manifest negotiation, platform selection, config and layers.

use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing::{debug, info};
use vessel_image::{BlobStore, Digest, ImageConfig};

use crate::blob::{BlobJob, BlobKind, Progress};
use crate::client::{read_limited, Client, Target};
use crate::error::{RegistryError, Result};
use crate::manifest::{
    parse_document, select_platform, DocError, Document, ImageManifest, RawConfig, ACCEPT,
    WANTED_ARCH, WANTED_OS,
};
use crate::reference::Reference;

/// One layer of a pulled image, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// Digest of the blob as stored (compressed, as the registry serves it).
    pub blob: Digest,
    /// Media type (`application/vnd.oci.image.layer.v1.tar+gzip`, ...): how to unpack it.
    pub media_type: String,
    /// Size of the blob in bytes.
    pub size: u64,
    /// Digest of the uncompressed tar (`rootfs.diff_ids` of the config), to verify unpacking.
    pub diff_id: Digest,
}

/// What a pull stored and learnt: everything needed to assemble the image's root file system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PulledImage {
    /// The reference as asked for.
    pub reference: Reference,
    /// Digest of the linux/amd64 image manifest's bytes (stored in the blob store).
    pub manifest_digest: Digest,
    /// Digest of the index (manifest list) the reference resolved to, if it did (stored too).
    /// `name@<this>` (or `name@<manifest_digest>` without an index) pins what was pulled.
    pub index_digest: Option<Digest>,
    /// Digest of the image config blob (stored).
    pub config_digest: Digest,
    /// How to run the image.
    pub config: ImageConfig,
    /// Layers, bottom first.
    pub layers: Vec<Layer>,
}

impl PulledImage {
    /// The digest that pins what the reference resolved to (the index's when there was one).
    pub fn pinned_digest(&self) -> &Digest {
        self.index_digest.as_ref().unwrap_or(&self.manifest_digest)
    }
}

impl Client {
    /// Pulls the linux/amd64 image `reference` names into `store`: manifests, config and
    /// layers, each verified against its digest. Blobs already stored are not downloaded;
    /// interrupted downloads resume. `progress` hears about each blob; `cancel` is checked
    /// between chunks and stops the pull with [`RegistryError::Cancelled`].
    pub fn pull(
        &self,
        reference: &Reference,
        store: &BlobStore,
        progress: &mut dyn FnMut(Progress),
        cancel: &AtomicBool,
    ) -> Result<PulledImage> {
        let image = reference.to_string();
        info!(%image, "pulling image");
        let t = Target { reference };
        check_cancel(cancel)?;
        let top = self.fetch_manifest(&t, reference.manifest_ref(), reference.digest(), &image)?;
        // Manifests are stored last, once everything they name is.
        let mut documents = vec![top.bytes];
        let (manifest, manifest_digest, index_digest) = match top.doc {
            Document::Manifest(m) => (m, top.digest, None),
            Document::Index(entries) => {
                let entry = select_platform(&entries).map_err(|available| {
                    RegistryError::NoMatchingPlatform {
                        image: image.clone(),
                        wanted: format!("{WANTED_OS}/{WANTED_ARCH}"),
                        available,
                    }
                })?;
                debug!(%image, digest = %entry.digest, "index entry for linux/amd64");
                check_cancel(cancel)?;
                let child =
                    self.fetch_manifest(&t, entry.digest.as_str(), Some(&entry.digest), &image)?;
                let Document::Manifest(m) = child.doc else {
                    return Err(RegistryError::Unsupported {
                        image,
                        reason: "its index points to another index".into(),
                    });
                };
                documents.push(child.bytes);
                (m, child.digest, Some(top.digest))
            }
        };
        if manifest.layers.len() > self.opts.max_layers {
            return Err(RegistryError::TooManyLayers {
                image,
                count: manifest.layers.len(),
                limit: self.opts.max_layers,
            });
        }
        let (config_digest, config, diff_ids) =
            self.fetch_config(&t, store, &manifest, &image, progress, cancel)?;
        let count = manifest.layers.len() + 1;
        let mut layers = Vec::with_capacity(manifest.layers.len());
        for (i, (desc, diff_id)) in manifest.layers.iter().zip(diff_ids).enumerate() {
            check_cancel(cancel)?;
            let job = BlobJob {
                desc,
                kind: BlobKind::Layer,
                index: i + 1,
                count,
            };
            self.fetch_blob(&t, store, &job, progress, cancel)?;
            layers.push(Layer {
                blob: desc.digest.clone(),
                media_type: desc.media_type.clone(),
                size: desc.size,
                diff_id,
            });
        }
        for bytes in &documents {
            store.put_bytes(bytes)?;
        }
        info!(%image, manifest = %manifest_digest, layers = layers.len(), "image pulled");
        Ok(PulledImage {
            reference: reference.clone(),
            manifest_digest,
            index_digest,
            config_digest,
            config,
            layers,
        })
    }

    /// Fetches a manifest or index by tag or digest; verifies it against `expected` and the
    /// registry's `Docker-Content-Digest`.
    fn fetch_manifest(
        &self,
        t: &Target<'_>,
        tag_or_digest: &str,
        expected: Option<&Digest>,
        image: &str,
    ) -> Result<Fetched> {
        let resp = self.get(
            t,
            &format!("manifests/{tag_or_digest}"),
            &[("Accept", ACCEPT)],
            true,
        )?;
        match resp.status() {
            200 => {}
            404 => {
                return Err(RegistryError::NotFound {
                    image: image.to_string(),
                })
            }
            _ => {
                return Err(self.status_error(
                    t,
                    resp,
                    &format!("the manifest request for {image}"),
                ))
            }
        }
        let content_type = resp.content_type().to_string();
        let announced = resp
            .header("docker-content-digest")
            .filter(|d| d.starts_with("sha256:"))
            .map(str::to_string);
        let bytes = read_limited(
            resp,
            self.opts.max_manifest_bytes,
            t.reference.registry(),
            &format!("the manifest of {image}"),
        )?;
        let digest = Digest::of(&bytes);
        let mismatch = |expected: Digest, what: &str| RegistryError::DigestMismatch {
            what: format!("{what} of {image}"),
            expected,
            actual: digest.clone(),
        };
        if let Some(e) = expected {
            if *e != digest {
                return Err(mismatch(e.clone(), "the manifest"));
            }
        }
        if let Some(a) = announced {
            let a = Digest::parse(&a).map_err(|_| RegistryError::Protocol {
                host: t.reference.registry().to_string(),
                what: format!("the manifest request for {image}"),
                reason: format!("Docker-Content-Digest {a:?} is not a sha256 digest"),
            })?;
            if a != digest {
                return Err(mismatch(a, "the manifest (as the registry announced it)"));
            }
        }
        let doc = parse_document(&bytes, &content_type).map_err(|e| match e {
            DocError::Malformed(reason) => RegistryError::Malformed {
                image: image.to_string(),
                what: "manifest",
                reason,
            },
            DocError::Unsupported(reason) => RegistryError::Unsupported {
                image: image.to_string(),
                reason,
            },
        })?;
        debug!(%image, %digest, %content_type, "manifest fetched");
        Ok(Fetched { bytes, digest, doc })
    }

    /// Stores and parses the config; returns its digest, run config and diff ids.
    fn fetch_config(
        &self,
        t: &Target<'_>,
        store: &BlobStore,
        manifest: &ImageManifest,
        image: &str,
        progress: &mut dyn FnMut(Progress),
        cancel: &AtomicBool,
    ) -> Result<(Digest, ImageConfig, Vec<Digest>)> {
        let desc = &manifest.config;
        let limit = self.opts.max_config_bytes;
        if desc.size > limit {
            return Err(RegistryError::TooLarge {
                host: t.reference.registry().to_string(),
                what: format!("the config of {image}"),
                limit,
            });
        }
        let job = BlobJob {
            desc,
            kind: BlobKind::Config,
            index: 0,
            count: manifest.layers.len() + 1,
        };
        self.fetch_blob(t, store, &job, progress, cancel)?;
        let mut bytes = Vec::new();
        store
            .open_blob(&desc.digest)?
            .take(limit + 1)
            .read_to_end(&mut bytes)
            .map_err(|source| RegistryError::Io {
                path: store.path(&desc.digest),
                op: "read config",
                source,
            })?;
        let malformed = |reason: String| RegistryError::Malformed {
            image: image.to_string(),
            what: "config",
            reason,
        };
        let raw: RawConfig =
            serde_json::from_slice(&bytes).map_err(|e| malformed(e.to_string()))?;
        let os = raw.os.as_deref().unwrap_or("");
        let arch = raw.architecture.as_deref().unwrap_or("");
        if (!os.is_empty() && os != WANTED_OS) || (!arch.is_empty() && arch != WANTED_ARCH) {
            return Err(RegistryError::NoMatchingPlatform {
                image: image.to_string(),
                wanted: format!("{WANTED_OS}/{WANTED_ARCH}"),
                available: format!("{os}/{arch}"),
            });
        }
        let diff_ids = raw.rootfs.map(|r| r.diff_ids).unwrap_or_default();
        if diff_ids.len() != manifest.layers.len() {
            return Err(malformed(format!(
                "it lists {} layer diff ids for {} layers",
                diff_ids.len(),
                manifest.layers.len()
            )));
        }
        let config = raw.config.unwrap_or_default().into_image_config();
        Ok((desc.digest.clone(), config, diff_ids))
    }
}

/// A fetched manifest or index.
struct Fetched {
    bytes: Vec<u8>,
    digest: Digest,
    doc: Document,
}

fn check_cancel(cancel: &AtomicBool) -> Result<()> {
    if cancel.load(Ordering::Relaxed) {
        Err(RegistryError::Cancelled)
    } else {
        Ok(())
    }
}
