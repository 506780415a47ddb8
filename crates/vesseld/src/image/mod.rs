//! The image service: builds images, stores them content-addressed under
//! `<root>/images/<fingerprint>/rootfs`, and hands out read-only lower layers for instances.

mod busybox;
pub mod tree;

use std::path::PathBuf;
use std::sync::Arc;

use vessel_api::{Image, ImageBuild, ImageSource};

use crate::error::{Error, Result};
use crate::events::Events;
use crate::operations::OpHandle;
use crate::store::{Store, StoreError};

/// Owns images on disk and in the store.
#[derive(Clone)]
pub struct ImageService {
    dir: PathBuf,
    store: Arc<dyn Store>,
    events: Events,
    /// Serializes builds and shifted-copy creation.
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl ImageService {
    /// Service storing images under `dir`.
    pub fn new(dir: PathBuf, store: Arc<dyn Store>, events: Events) -> Self {
        Self {
            dir,
            store,
            events,
            lock: Arc::default(),
        }
    }

    /// Every image.
    pub fn list(&self) -> Result<Vec<Image>> {
        Ok(self.store.image_list()?)
    }

    /// One image by alias or fingerprint.
    pub fn get(&self, key: &str) -> Result<Image> {
        self.store.image_get(key).map_err(|e| match e {
            StoreError::NotFound(_) => Error::not_found(format!(
                "image {key:?} not found; see `vessel image list`, or build one with \
                 `vessel image build busybox`"
            )),
            e => e.into(),
        })
    }

    /// Directory of an image's canonical root file system.
    pub fn rootfs(&self, fingerprint: &str) -> PathBuf {
        self.dir.join(fingerprint).join("rootfs")
    }

    /// Builds an image as part of an operation.
    pub async fn build(&self, req: ImageBuild, op: OpHandle) -> Result<Image> {
        let _guard = self.lock.lock().await;
        let (source, alias) = match req.source {
            ImageSource::Busybox => ("busybox", req.alias.unwrap_or_else(|| "busybox".into())),
        };
        validate_alias(&alias)?;
        let tmp = self.dir.join(format!(".build-{}", uuid::Uuid::new_v4()));
        let staged = tmp.join("rootfs");
        std::fs::create_dir_all(&staged)
            .map_err(|e| Error::internal(format!("creating {}: {e}", staged.display())))?;
        let result = async {
            op.progress(Some(10), "assembling root file system");
            let s = staged.clone();
            tokio::task::spawn_blocking(move || busybox::build(&s))
                .await
                .map_err(|e| Error::internal(format!("image build task: {e}")))??;
            op.check_cancel()?;
            op.progress(Some(60), "computing fingerprint");
            let s = staged.clone();
            let (fp, size) = tokio::task::spawn_blocking(move || tree::fingerprint(&s))
                .await
                .map_err(|e| Error::internal(format!("fingerprint task: {e}")))?
                .map_err(|e| Error::internal(format!("fingerprinting image: {e}")))?;
            op.check_cancel()?;
            op.set_may_cancel(false);
            op.progress(Some(90), "storing");
            op.add_resource(format!("/1.0/images/{fp}"));
            if let Ok(existing) = self.store.image_get(&fp) {
                self.store.image_alias_set(&alias, &fp)?;
                return Ok(Image {
                    aliases: self.store.image_get(&existing.fingerprint)?.aliases,
                    ..existing
                });
            }
            let final_dir = self.dir.join(&fp);
            if final_dir.exists() {
                // Left by an interrupted build that never reached the store.
                std::fs::remove_dir_all(&final_dir).map_err(|e| {
                    Error::internal(format!("removing stale {}: {e}", final_dir.display()))
                })?;
            }
            std::fs::rename(&tmp, &final_dir)
                .map_err(|e| Error::internal(format!("storing image: {e}")))?;
            let image = Image {
                fingerprint: fp,
                aliases: vec![alias],
                source: source.into(),
                size_bytes: size,
                command: busybox::COMMAND.iter().map(|s| s.to_string()).collect(),
                stop_signal: busybox::STOP_SIGNAL.into(),
                created_at: crate::now(),
            };
            if let Err(e) = self.store.image_insert(&image) {
                let _ = std::fs::remove_dir_all(&final_dir);
                return Err(e.into());
            }
            self.events.lifecycle(
                "image-created",
                &format!("/1.0/images/{}", image.fingerprint),
            );
            Ok(image)
        }
        .await;
        if tmp.exists() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        result
    }

    /// Deletes an image no instance uses.
    pub async fn delete(&self, key: &str) -> Result<Image> {
        let _guard = self.lock.lock().await;
        let image = self.get(key)?;
        let users = self.store.instances_using_image(&image.fingerprint)?;
        if !users.is_empty() {
            return Err(Error::conflict(format!(
                "image {} is used by instance(s) {}; delete them first",
                &image.fingerprint[..12],
                users.join(", ")
            )));
        }
        self.store.image_delete(&image.fingerprint)?;
        let dir = self.dir.join(&image.fingerprint);
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            tracing::warn!(path = %dir.display(), error = %e, "could not remove image files");
        }
        self.events.lifecycle(
            "image-deleted",
            &format!("/1.0/images/{}", image.fingerprint),
        );
        Ok(image)
    }

    /// The lower layer for an instance: the canonical tree for privileged instances, or a
    /// copy owned by the user namespace's root (`shift`) for unprivileged ones, made once.
    pub async fn lower_layer(&self, fingerprint: &str, shift: Option<u32>) -> Result<PathBuf> {
        let canonical = self.rootfs(fingerprint);
        if !canonical.is_dir() {
            return Err(Error::internal(format!(
                "image {fingerprint} has no files at {}; delete and rebuild it",
                canonical.display()
            )));
        }
        let Some(shift) = shift else {
            return Ok(canonical);
        };
        let shifted = self.dir.join(fingerprint).join(format!("shifted-{shift}"));
        let _guard = self.lock.lock().await;
        if shifted.is_dir() {
            return Ok(shifted);
        }
        let tmp = shifted.with_extension("tmp");
        let (c, t, s) = (canonical.clone(), tmp.clone(), shifted.clone());
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            if t.exists() {
                std::fs::remove_dir_all(&t)?;
            }
            tree::copy_shifted(&c, &t, shift)?;
            std::fs::rename(&t, &s)
        })
        .await
        .map_err(|e| Error::internal(format!("shift task: {e}")))?
        .map_err(|e| Error::internal(format!("preparing unprivileged copy of image: {e}")))?;
        Ok(shifted)
    }
}

/// Checks an image alias.
fn validate_alias(alias: &str) -> Result<()> {
    let ok = !alias.is_empty()
        && alias.len() <= 64
        && alias
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | ':'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "invalid image alias {alias:?}: use 1-64 letters, digits, '-', '_', '.', '/', ':'"
        )))
    }
}
