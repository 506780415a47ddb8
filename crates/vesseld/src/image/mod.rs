//! The image service: builds, imports and deletes images. Container images are stacks of
//! layers stored once each under `<root>/images/layers/<id>` (an id is the digest of the
//! layer's content) and shared between images; an instance's root is an overlay of its
//! image's layers under its own writable layer. VM images keep their files under
//! `<root>/images/<fingerprint>/`.

mod busybox;
mod debian;
pub mod import;
pub mod pull;
pub mod tree;
mod vm;
pub mod vmbundle;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use vessel_api::{Image, ImageBuild, ImageKind, ImageSource};

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
    /// Serializes changes to the image files (builds, deletions).
    pub(crate) lock: Arc<tokio::sync::Mutex<()>>,
    /// The guest agent put into built VM images, when installed.
    agent: Option<PathBuf>,
    /// The project whose images this handle lists, names and changes (`in_project`).
    project: String,
}

/// What a built root file system runs by default.
struct Defaults {
    command: &'static [&'static str],
    stop_signal: &'static str,
}

impl ImageService {
    /// Service storing images under `dir`.
    pub fn new(dir: PathBuf, store: Arc<dyn Store>, events: Events) -> Self {
        Self {
            dir,
            store,
            events,
            lock: Arc::default(),
            agent: None,
            project: vessel_api::DEFAULT_PROJECT.into(),
        }
    }

    /// This service as seen from `project`: its images and aliases only. Image files are
    /// stored once whatever the number of projects holding them.
    pub fn in_project(&self, project: &str) -> Self {
        let mut s = self.clone();
        s.project = project.to_string();
        s
    }

    /// The project this handle works in.
    pub fn project(&self) -> &str {
        &self.project
    }

    /// The API path of the images of this handle's project (`/1.0/images`, with
    /// `?project=P` outside `default`): what operations and events name.
    pub fn path(&self, fingerprint: Option<&str>) -> String {
        let mut p = "/1.0/images".to_string();
        if let Some(fp) = fingerprint {
            p = format!("{p}/{fp}");
        }
        if self.project != vessel_api::DEFAULT_PROJECT {
            p = format!("{p}?project={}", self.project);
        }
        p
    }

    /// Puts this guest agent binary into built VM images.
    pub fn with_agent(mut self, agent: Option<PathBuf>) -> Self {
        self.agent = agent;
        self
    }

    /// Every image of the project.
    pub fn list(&self) -> Result<Vec<Image>> {
        Ok(self.store.image_list(Some(&self.project))?)
    }

    /// A stored image by its full fingerprint, whichever project holds it: what an instance
    /// made from it reads.
    pub fn by_fingerprint(&self, fingerprint: &str) -> Result<Image> {
        self.store
            .image_get(None, fingerprint)
            .map_err(|e| match e {
                StoreError::NotFound(_) => {
                    Error::not_found(format!("image {} is no longer stored", short(fingerprint)))
                }
                e => e.into(),
            })
    }

    /// One image of the project by alias or fingerprint.
    pub fn get(&self, key: &str) -> Result<Image> {
        self.store
            .image_get(Some(&self.project), key)
            .map_err(|e| match e {
                StoreError::NotFound(_) => Error::not_found(format!(
                    "image {key:?} not found; see `vessel image list`, or build one with \
                 `vessel image build busybox`"
                )),
                e => e.into(),
            })
    }

    /// The images directory.
    pub fn image_root(&self) -> &Path {
        &self.dir
    }

    /// Most layers an image may have and still run here. An instance's root is mounted with
    /// mount(2), whose options (`lowerdir=` with every layer's path, `upperdir=`, `workdir=`)
    /// must fit one page: the kernel copies 4,096 bytes and cuts the string at 4,095, so a
    /// longer one loses its end and the mount fails with a misleading ENOENT. The layers'
    /// paths are counted as the longest of the two ways they are stacked (a privileged
    /// instance's canonical `layers/<id>`, an unprivileged one's idmapped `mnt/layer-N`), the
    /// upper and work directories for the longest instance name (63) on a root disk (under
    /// `disk/`, the longer of the two layouts); overlayfs also stacks at most 500 layers.
    pub fn max_layers(&self) -> usize {
        const PAGE_STRING: usize = 4095;
        let root = self.dir.parent().unwrap_or(&self.dir);
        let inst = root.join("instances").join("x".repeat(63));
        let fixed = vessel_monitor::Overlay {
            lowers: Vec::new(),
            upper: inst.join("disk/upper"),
            work: inst.join("disk/work"),
            target: inst.join("rootfs"),
            idmap: None,
            stage: inst.join("mnt"),
            disk: None,
        }
        .options(&[])
        .len();
        let canonical = self.layer_dir(&"0".repeat(64)).display().to_string().len();
        let staged = inst
            .join("mnt")
            .join("layer-499")
            .display()
            .to_string()
            .len();
        let layer = canonical.max(staged);
        // `fixed` + n layers + (n - 1) colons <= PAGE_STRING.
        let fit = (PAGE_STRING + 1).saturating_sub(fixed) / (layer + 1);
        fit.min(vessel_image::archive::OVERLAY_MAX_STACK)
    }

    /// The file naming the blob a layer was unpacked from.
    pub fn layer_source_file(&self, id: &str) -> PathBuf {
        self.dir.join("layers").join(format!("{id}.source"))
    }

    /// Directory of one layer.
    pub fn layer_dir(&self, id: &str) -> PathBuf {
        self.dir.join("layers").join(id)
    }

    /// Directory of an image's own files (VM images; root of legacy one-tree images).
    pub fn image_dir(&self, fingerprint: &str) -> PathBuf {
        self.dir.join(fingerprint)
    }

    /// A fresh staging directory under the images directory (same file system, so the
    /// result can be renamed into place).
    pub fn staging(&self) -> Result<PathBuf> {
        use std::os::unix::fs::DirBuilderExt;
        let p = self
            .dir
            .join(format!(".staging-{}", uuid::Uuid::new_v4().simple()));
        // Root only: a layer being unpacked holds the image's setuid files already.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&p)
            .map_err(|e| Error::internal(format!("creating {}: {e}", p.display())))?;
        Ok(p)
    }

    /// What a build is called before it runs: its alias, given or the source's default
    /// (`busybox`, `debian/<release>`, `vm/busybox`, `vm/busybox-disk`).
    pub fn build_name(req: &ImageBuild) -> String {
        if let Some(a) = &req.alias {
            return a.clone();
        }
        match req.source {
            ImageSource::Busybox => "busybox".into(),
            ImageSource::Debian => {
                format!("debian/{}", req.release.as_deref().unwrap_or("bookworm"))
            }
            ImageSource::Vm => match req.vm_layout.unwrap_or_default() {
                vessel_api::VmLayout::Initramfs => "vm/busybox".into(),
                vessel_api::VmLayout::Disk => "vm/busybox-disk".into(),
            },
        }
    }

    /// Builds an image as part of an operation.
    pub async fn build(&self, req: ImageBuild, op: OpHandle) -> Result<Image> {
        match req.source {
            ImageSource::Busybox => {
                let alias = req.alias.unwrap_or_else(|| "busybox".into());
                validate_alias(&alias)?;
                let staged = self.staging()?;
                let tree = staged.join("tree");
                op.progress(Some(10), "assembling root file system");
                let t = tree.clone();
                let built = tokio::task::spawn_blocking(move || {
                    std::fs::create_dir(&t)
                        .map_err(|e| Error::internal(format!("staging: {e}")))?;
                    busybox::build(&t)
                })
                .await
                .map_err(|e| Error::internal(format!("image build task: {e}")));
                let result = match built.and_then(|r| r) {
                    Ok(()) => {
                        let defaults = Defaults {
                            command: busybox::COMMAND,
                            stop_signal: busybox::STOP_SIGNAL,
                        };
                        self.store_tree(&tree, "busybox".into(), &alias, defaults, &op)
                            .await
                    }
                    Err(e) => Err(e),
                };
                let _ = std::fs::remove_dir_all(&staged);
                result
            }
            ImageSource::Debian => {
                let release = req.release.unwrap_or_else(|| "bookworm".into());
                debian::validate_release(&release)?;
                let source = format!("debian/{release}");
                let alias = req.alias.unwrap_or_else(|| source.clone());
                validate_alias(&alias)?;
                let staged = self.staging()?;
                let tree = staged.join("tree");
                let result = async {
                    std::fs::create_dir(&tree)
                        .map_err(|e| Error::internal(format!("staging: {e}")))?;
                    debian::build(&tree, &release, &op).await?;
                    let defaults = Defaults {
                        command: debian::COMMAND,
                        stop_signal: debian::STOP_SIGNAL,
                    };
                    self.store_tree(&tree, source, &alias, defaults, &op).await
                }
                .await;
                let _ = std::fs::remove_dir_all(&staged);
                result
            }
            ImageSource::Vm => {
                let layout = req.vm_layout.unwrap_or_default();
                self.build_vm(layout, req.alias, &op).await
            }
        }
    }

    /// Stores a built tree as a one-layer image (the layer's id is the tree's fingerprint).
    async fn store_tree(
        &self,
        tree: &Path,
        source: String,
        alias: &str,
        defaults: Defaults,
        op: &OpHandle,
    ) -> Result<Image> {
        op.check_cancel()?;
        op.progress(Some(92), "computing fingerprint");
        let t = tree.to_path_buf();
        let (id, size) = tokio::task::spawn_blocking(move || tree::fingerprint(&t))
            .await
            .map_err(|e| Error::internal(format!("fingerprint task: {e}")))?
            .map_err(|e| Error::internal(format!("fingerprinting image: {e}")))?;
        op.set_may_cancel(false);
        op.progress(Some(97), "storing");
        {
            let _g = self.lock.lock().await;
            self.place_layer(tree, &id)?;
        }
        let image = Image {
            fingerprint: id.clone(),
            aliases: vec![alias.to_string()],
            source,
            kind: ImageKind::Container,
            size_bytes: size,
            layers: vec![id],
            command: defaults.command.iter().map(|s| s.to_string()).collect(),
            environment: vec![],
            working_dir: None,
            user: None,
            exposed_ports: vec![],
            stop_signal: defaults.stop_signal.into(),
            created_at: crate::clock::now(),
            locations: Vec::new(),
        };
        let image = self.register(image, alias)?;
        op.add_resource(self.path(Some(&image.fingerprint)));
        Ok(image)
    }

    /// Moves a staged layer tree into place under its id, unless that layer is stored already.
    pub fn place_layer(&self, tree: &Path, id: &str) -> Result<()> {
        let dest = self.layer_dir(id);
        if dest.is_dir() {
            return Ok(());
        }
        std::fs::create_dir_all(self.dir.join("layers"))
            .map_err(|e| Error::internal(format!("creating the layer store: {e}")))?;
        std::fs::rename(tree, &dest)
            .map_err(|e| Error::internal(format!("storing layer {id}: {e}")))
    }

    /// Records a VM image stored in its own directory, and names it among the operation's
    /// resources.
    pub fn register_vm(
        &self,
        fingerprint: String,
        alias: &str,
        source: String,
        size_bytes: u64,
        op: &OpHandle,
    ) -> Result<Image> {
        let image = Image {
            fingerprint,
            aliases: vec![alias.to_string()],
            source,
            kind: ImageKind::Vm,
            size_bytes,
            layers: vec![],
            command: vec![],
            environment: vec![],
            working_dir: None,
            user: None,
            exposed_ports: vec![],
            stop_signal: "ACPI power button".into(),
            created_at: crate::clock::now(),
            locations: Vec::new(),
        };
        let image = self.register(image, alias)?;
        op.add_resource(self.path(Some(&image.fingerprint)));
        Ok(image)
    }

    /// Records a new image held by the project, or lets the project hold an image stored
    /// already with the same fingerprint; either way the alias is the project's name for it.
    pub fn register(&self, image: Image, alias: &str) -> Result<Image> {
        if self.store.image_get(None, &image.fingerprint).is_ok() {
            self.store.image_hold(&self.project, &image.fingerprint)?;
            self.store
                .image_alias_set(&self.project, alias, &image.fingerprint)?;
            return self.get(&image.fingerprint);
        }
        // An alias names one image: it moves from its previous holder.
        self.store.image_insert(&self.project, &image)?;
        self.events
            .lifecycle("image-created", &self.path(Some(&image.fingerprint)));
        self.get(&image.fingerprint)
    }

    /// Deletes an image from the project unless an instance of it (`in_project` tells which
    /// instances are) was made from it; the files go with the last project holding the
    /// image, with the layers no other image uses.
    pub async fn delete(&self, key: &str, in_project: impl Fn(&str) -> bool) -> Result<Image> {
        let _guard = self.lock.lock().await;
        let image = self.get(key)?;
        let users = self.store.instances_using_image(&image.fingerprint)?;
        let own: Vec<&String> = users.iter().filter(|u| in_project(u)).collect();
        if !own.is_empty() {
            let names: Vec<&str> = own.iter().map(|u| crate::project::split(u).1).collect();
            return Err(Error::conflict(format!(
                "image {} is used by instance(s) {}; delete them first",
                short(&image.fingerprint),
                names.join(", ")
            )));
        }
        let holders = self.store.image_holders(&image.fingerprint)?;
        if holders.len() <= 1 && !users.is_empty() {
            return Err(Error::conflict(format!(
                "image {} is used by instances of other projects",
                short(&image.fingerprint)
            )));
        }
        let gone = self
            .store
            .image_release(&self.project, &image.fingerprint)?;
        if gone {
            let dir = self.image_dir(&image.fingerprint);
            if dir.exists() {
                if let Err(e) = std::fs::remove_dir_all(&dir) {
                    tracing::warn!(path = %dir.display(), error = %e, "could not remove image files");
                }
            }
            self.collect_layers()?;
        }
        self.events
            .lifecycle("image-deleted", &self.path(Some(&image.fingerprint)));
        Ok(image)
    }

    /// Removes layers that no image names. Caller holds the lock.
    fn collect_layers(&self) -> Result<()> {
        let used: HashSet<String> = self
            .store
            .image_list(None)?
            .into_iter()
            .flat_map(|i| i.layers)
            .collect();
        let Ok(rd) = std::fs::read_dir(self.dir.join("layers")) else {
            return Ok(());
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let id = name.split('.').next().unwrap_or_default();
            if used.contains(id) {
                continue;
            }
            tracing::info!(layer = %name, "removing unused layer");
            let removed = if e.path().is_dir() {
                std::fs::remove_dir_all(e.path())
            } else {
                // The layer's source record: its blob goes too.
                if let Some(blob) = std::fs::read_to_string(e.path())
                    .ok()
                    .and_then(|d| vessel_image::Digest::parse(d.trim()).ok())
                {
                    if let Ok(store) = self.blobs() {
                        let _ = std::fs::remove_file(store.path(&blob));
                    }
                }
                std::fs::remove_file(e.path())
            };
            if let Err(err) = removed {
                tracing::warn!(layer = %name, error = %err, "could not remove layer");
            }
        }
        Ok(())
    }

    /// Adds an alias to an image.
    pub fn alias_add(&self, key: &str, alias: &str) -> Result<Image> {
        validate_alias(alias)?;
        let image = self.get(key)?;
        self.store
            .image_alias_set(&self.project, alias, &image.fingerprint)?;
        self.get(&image.fingerprint)
    }

    /// Removes an alias; the image stays.
    pub fn alias_delete(&self, alias: &str) -> Result<Image> {
        let fp = self
            .store
            .image_alias_delete(&self.project, alias)
            .map_err(|e| match e {
                StoreError::NotFound(_) => Error::not_found(format!(
                    "no image has the alias {alias:?}; see `vessel image list`"
                )),
                e => e.into(),
            })?;
        self.get(&fp)
    }

    /// The lower layers of an instance's root, top first, as stored: owned by the image's
    /// own ids. Unprivileged instances stack idmapped mounts of them (see
    /// `vessel_monitor::idmap`), so no layer is ever copied per id range.
    pub fn lower_layers(&self, image: &Image) -> Result<Vec<PathBuf>> {
        if image.kind != ImageKind::Container {
            return Err(Error::invalid(format!(
                "image {} is a VM image; launch it with --vm",
                short(&image.fingerprint)
            )));
        }
        let canonical: Vec<PathBuf> = if image.layers.is_empty() {
            // Images stored before layers existed keep one tree in their own directory.
            vec![self.image_dir(&image.fingerprint).join("rootfs")]
        } else {
            image.layers.iter().map(|l| self.layer_dir(l)).collect()
        };
        let mut out = Vec::with_capacity(canonical.len());
        for layer in canonical.iter().rev() {
            if !layer.is_dir() {
                return Err(Error::internal(format!(
                    "image {} is missing its layer {}; delete and rebuild it",
                    short(&image.fingerprint),
                    layer.display()
                )));
            }
            out.push(layer.clone());
        }
        Ok(out)
    }

    /// Removes the uid-shifted layer copies earlier versions made for unprivileged instances
    /// (`layers/<id>.shifted-<base>`, `<fingerprint>/shifted-<base>`), except those in
    /// `in_use` (lower layers of roots still mounted by monitors of an earlier version).
    pub fn remove_shifted_copies(&self, in_use: &HashSet<PathBuf>) {
        let mut dirs = Vec::new();
        if let Ok(rd) = std::fs::read_dir(&self.dir) {
            dirs.extend(rd.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
        }
        for dir in dirs {
            let Ok(rd) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                // `<id>.tmp`: a copy interrupted while being made.
                let shifted = name.starts_with("shifted-")
                    || name.contains(".shifted-")
                    || (dir.ends_with("layers") && name.ends_with(".tmp"));
                if !shifted || in_use.contains(&e.path()) {
                    continue;
                }
                tracing::info!(path = %e.path().display(), "removing a shifted layer copy (layers are idmapped now)");
                if let Err(err) = std::fs::remove_dir_all(e.path()) {
                    tracing::warn!(path = %e.path().display(), error = %err, "could not remove a shifted layer copy");
                }
            }
        }
    }

    /// Removes staging directories left by an interrupted build or import.
    pub fn remove_staging_leftovers(&self) {
        if let Ok(rd) = std::fs::read_dir(&self.dir) {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if n.starts_with(".staging-") || n.starts_with(".build-") {
                    tracing::warn!(dir = %e.path().display(), "removing an interrupted image build");
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    }
}

/// The first 12 characters of a fingerprint.
pub fn short(fp: &str) -> &str {
    &fp[..fp.len().min(12)]
}

/// Checks an image alias.
pub fn validate_alias(alias: &str) -> Result<()> {
    let ok = !alias.is_empty()
        && alias.len() <= 128
        && !alias.starts_with('/')
        && !alias.contains("..")
        && alias
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | ':' | '@'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "invalid image alias {alias:?}: use 1-128 letters, digits, '-', '_', '.', '/', ':', '@'"
        )))
    }
}
