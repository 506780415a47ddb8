//! Pulls from OCI distribution registries, and turns stored layer blobs into layer trees.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use vessel_api::{Image, ImageKind, ImagePull};
use vessel_image::{BlobStore, Digest, ImageConfig, UnpackOptions};
use vessel_registry::{Client, ClientOptions, Reference};

use super::{validate_alias, ImageService};
use crate::error::{chain, Error, Result};
use crate::operations::OpHandle;

/// A layer blob to unpack: its stored digest, media type and uncompressed digest.
pub struct LayerBlob {
    /// Digest of the blob as stored.
    pub blob: Digest,
    /// How it is compressed.
    pub media_type: String,
    /// Digest of the uncompressed layer: the layer's id.
    pub diff_id: Digest,
}

/// Layer `l`'s blob, opened, with the options it is read under: its size bounds how far it
/// may expand (a decompression bomb), and the layer is stored under its diff_id, which its
/// content must have.
fn layer_blob(store: &BlobStore, l: &LayerBlob) -> Result<(std::fs::File, UnpackOptions)> {
    let blob = store
        .open_blob(&l.blob)
        .map_err(|e| Error::internal(format!("layer {}: {}", l.blob, chain(&e))))?;
    let opts = UnpackOptions {
        compressed_size: blob.metadata().ok().map(|m| m.len()),
        diff_id: Some(l.diff_id.clone()),
        ..UnpackOptions::default()
    };
    Ok((blob, opts))
}

impl ImageService {
    /// The blob store of pulled and imported images.
    pub fn blobs(&self) -> Result<BlobStore> {
        BlobStore::open(self.image_root().join("blobs"))
            .map_err(|e| Error::internal(format!("opening the blob store: {}", chain(&e))))
    }

    /// Unpacks every layer not stored yet (bottom first), each into its own directory named
    /// by its uncompressed digest. Progress runs from `from` to `to` percent.
    pub async fn unpack_layers(
        &self,
        store: &BlobStore,
        layers: &[LayerBlob],
        op: &OpHandle,
        (from, to): (u8, u8),
    ) -> Result<Vec<String>> {
        let mut ids = Vec::with_capacity(layers.len());
        for (i, l) in layers.iter().enumerate() {
            op.check_cancel()?;
            let id = l.diff_id.hex().to_string();
            let pct = from + ((to - from) as usize * i / layers.len().max(1)) as u8;
            op.progress(
                Some(pct),
                &format!("unpacking layer {}/{}", i + 1, layers.len()),
            );
            if self.layer_dir(&id).is_dir() {
                // Stored under its diff_id already: this image's blob must have that content
                // (a config may name any diff_id, another project's layer's among them).
                // The blob it was unpacked from has; another one is read through.
                let source = std::fs::read_to_string(self.layer_source_file(&id)).ok();
                if source.as_deref().map(str::trim) != Some(l.blob.as_str()) {
                    let (blob, opts) = layer_blob(store, l)?;
                    let media = l.media_type.clone();
                    let actual = tokio::task::spawn_blocking(move || {
                        vessel_image::layer_diff_id(std::io::BufReader::new(blob), &media, &opts)
                    })
                    .await
                    .map_err(|e| Error::internal(format!("layer check task: {e}")))?
                    .map_err(|e| Error::invalid(format!("layer {}: {}", l.blob, chain(&e))))?;
                    if actual != l.diff_id {
                        return Err(Error::invalid(format!(
                            "layer {} uncompresses to {actual}, not to the diff_id {} its \
                             image's config names",
                            l.blob, l.diff_id
                        )));
                    }
                }
            } else {
                let staging = self.staging()?;
                let dest = staging.join("layer");
                let (blob, opts) = layer_blob(store, l)?;
                let media = l.media_type.clone();
                let d = dest.clone();
                let unpacked = tokio::task::spawn_blocking(move || {
                    vessel_image::unpack_layer(std::io::BufReader::new(blob), &media, &d, &opts)
                })
                .await
                .map_err(|e| Error::internal(format!("unpack task: {e}")))?;
                let placed = match unpacked {
                    Ok(stats) => {
                        tracing::debug!(layer = %id, ?stats, "layer unpacked");
                        let _g = self.lock.lock().await;
                        self.place_layer(&dest, &id).and_then(|()| {
                            // Remember the blob the layer came from, to remove both together.
                            std::fs::write(self.layer_source_file(&id), l.blob.as_str()).map_err(
                                |e| Error::internal(format!("recording layer source: {e}")),
                            )
                        })
                    }
                    Err(e) => Err(Error::invalid(format!(
                        "layer {} cannot be unpacked safely: {}",
                        l.blob,
                        chain(&e)
                    ))),
                };
                let _ = std::fs::remove_dir_all(&staging);
                placed?;
            }
            ids.push(id);
        }
        Ok(ids)
    }

    /// An image record from an image configuration.
    pub fn image_from_config(
        fingerprint: String,
        alias: &str,
        source: String,
        layers: Vec<String>,
        size: u64,
        config: &ImageConfig,
    ) -> Image {
        Image {
            fingerprint,
            aliases: vec![alias.to_string()],
            source,
            kind: ImageKind::Container,
            size_bytes: size,
            layers,
            command: config.command(),
            environment: config.env.clone(),
            working_dir: config.working_dir.clone(),
            user: config.user.clone(),
            exposed_ports: config.exposed_ports.clone(),
            stop_signal: config
                .stop_signal
                .clone()
                .unwrap_or_else(|| "SIGTERM".into()),
            created_at: crate::clock::now(),
            locations: Vec::new(),
        }
    }

    /// Pulls an image as part of an operation; `reach_local`: whether the registry may be
    /// at an address of this host or its link (an admin's pull); `unreachable`: networks it
    /// may not be in.
    pub async fn pull(
        &self,
        req: ImagePull,
        (reach_local, unreachable): (bool, Vec<(std::net::IpAddr, u8)>),
        op: OpHandle,
    ) -> Result<Image> {
        let reference = Reference::parse(&req.reference).map_err(|e| Error::invalid(chain(&e)))?;
        let alias = match &req.alias {
            Some(a) => a.clone(),
            None => {
                let name = reference.repository().to_string();
                match (reference.tag(), reference.digest()) {
                    (_, Some(d)) => format!("{name}@{d}"),
                    (Some(t), None) => format!("{name}:{t}"),
                    (None, None) => name,
                }
            }
        };
        validate_alias(&alias)?;
        // Projects share the blob store: every blob is fetched from the registry and
        // verified, stored or not, so that a manifest of a tenant's registry naming another
        // project's blobs by digest gets nothing it does not serve.
        let mut opts = ClientOptions {
            max_layers: self.max_layers(),
            verify_stored: true,
            reach_local,
            unreachable,
            ..ClientOptions::default()
        };
        if req.insecure || on_loopback(reference.registry()) {
            opts.insecure_hosts.push(reference.registry().to_string());
        }
        let client = Client::new(opts)
            .map_err(|e| Error::internal(format!("registry client: {}", chain(&e))))?;
        let store = self.blobs()?;
        let cancel = Arc::new(AtomicBool::new(false));
        let watcher = {
            let (cancel, op) = (cancel.clone(), op.clone());
            tokio::spawn(async move {
                loop {
                    if op.is_cancelled() {
                        cancel.store(true, Ordering::Relaxed);
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
            })
        };
        let (r, s, o, c) = (reference.clone(), store.clone(), op.clone(), cancel.clone());
        let pulled = tokio::task::spawn_blocking(move || {
            let mut last = (usize::MAX, 0u8);
            client.pull(
                &r,
                &s,
                &mut |p| {
                    let within = (p.done * 100).checked_div(p.total).unwrap_or(100) as usize;
                    let pct = ((p.index * 100 + within) * 70 / (p.count.max(1) * 100)) as u8;
                    if (p.index, pct) != last {
                        last = (p.index, pct);
                        o.progress(
                            Some(pct),
                            &format!("downloading blob {}/{}", p.index + 1, p.count),
                        );
                    }
                },
                &c,
            )
        })
        .await
        .map_err(|e| Error::internal(format!("pull task: {e}")));
        watcher.abort();
        let pulled = pulled?.map_err(|e| {
            if cancel.load(Ordering::Relaxed) {
                Error::conflict("operation cancelled")
            } else {
                Error::invalid(chain(&e))
            }
        })?;
        let blobs: Vec<LayerBlob> = pulled
            .layers
            .iter()
            .map(|l| LayerBlob {
                blob: l.blob.clone(),
                media_type: l.media_type.clone(),
                diff_id: l.diff_id.clone(),
            })
            .collect();
        let ids = self.unpack_layers(&store, &blobs, &op, (70, 95)).await?;
        op.set_may_cancel(false);
        let size = pulled.layers.iter().map(|l| l.size).sum();
        let image = Self::image_from_config(
            pulled.manifest_digest.hex().to_string(),
            &alias,
            format!("pull {}", req.reference),
            ids,
            size,
            &pulled.config,
        );
        let image = self.register(image, &alias)?;
        op.add_resource(self.path(Some(&image.fingerprint)));
        Ok(image)
    }
}

/// Whether a registry host (`name[:port]`) is this machine's loopback (127.0.0.0/8, `[::1]`,
/// `localhost`): such a registry is spoken to over plain HTTP without `--insecure`, as Docker
/// does, since its traffic never leaves the machine.
fn on_loopback(host: &str) -> bool {
    let bare = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    bare.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|a| a.is_loopback())
}

#[cfg(test)]
mod loopback_tests {
    use super::on_loopback;

    #[test]
    fn loopback_registries_are_recognised() {
        for h in [
            "127.0.0.1:5000",
            "127.1.2.3",
            "[::1]:5000",
            "[::1]",
            "localhost:5000",
            "LOCALHOST",
        ] {
            assert!(on_loopback(h), "{h}");
        }
        for h in [
            "registry.example.org",
            "10.0.0.1:5000",
            "[fd00::1]:5000",
            "localhost.example",
            "1.2.3.4",
        ] {
            assert!(!on_loopback(h), "{h}");
        }
    }
}
