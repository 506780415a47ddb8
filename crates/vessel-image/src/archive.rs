//! Importing images from an OCI image layout (a directory or a tar of one) and from
//! `docker save` / `podman save` archives. Every blob is copied into a [`BlobStore`] and every
//! digest is verified, the layers' uncompressed digests against the config's `diff_ids`.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::blobs::{BlobError, BlobStore, Digest, HashingWriter};
use crate::config::ImageConfig;
use crate::media::{self, Compression};
use crate::space::{self, SpaceLimits};
use crate::spec::{self, ConfigFile, Descriptor, Index, Manifest};
use crate::tar::{EntryKind, TarError, TarReader};
use crate::unpack::normalize;

/// Largest manifest, index or config accepted.
const MAX_JSON: u64 = 4 << 20;
/// Most files an archive may hold (an image needs a few per layer).
const MAX_ARCHIVE_FILES: usize = 100_000;
/// Most bytes of file names of an archive kept in its index.
const MAX_ARCHIVE_NAMES: usize = 16 << 20;
/// Most layers overlayfs stacks in one mount (`OVL_MAX_STACK`).
pub const OVERLAY_MAX_STACK: usize = 500;

/// A layer of an image, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRef {
    /// Digest of the blob as stored (compressed or not).
    pub blob: Digest,
    /// Digest of the uncompressed tar (the config's `rootfs.diff_ids` entry).
    pub diff_id: Digest,
    /// Media type of the blob.
    pub media_type: String,
    /// Size of the blob in bytes.
    pub size: u64,
}

/// An image whose manifest, config and layers are all in a [`BlobStore`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportedImage {
    /// Digest of the (OCI) manifest blob.
    pub manifest_digest: Digest,
    /// Digest of the config blob.
    pub config_digest: Digest,
    /// Run-time defaults from the config.
    pub config: ImageConfig,
    /// Layers, bottom first.
    pub layers: Vec<LayerRef>,
    /// Names the archive gave the image (`localhost/app:1`).
    pub repo_tags: Vec<String>,
}

/// Which image to take from an archive.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// A name or tag to pick when the archive holds several images.
    pub reference: Option<String>,
    /// Operating system wanted from a multi-platform index.
    pub os: String,
    /// Architecture wanted from a multi-platform index.
    pub architecture: String,
    /// Largest blob accepted.
    pub max_blob_size: u64,
    /// Most layers accepted: more cannot be stacked into an instance's root, so the image
    /// could be stored but never run.
    pub max_layers: usize,
    /// Free space kept on the store's file system, and how far a layer may expand.
    pub space: SpaceLimits,
    /// Largest uncompressed layer accepted, whatever the ratio allows.
    pub max_layer_size: u64,
}

impl Default for ImportOptions {
    fn default() -> Self {
        Self {
            reference: None,
            os: "linux".into(),
            architecture: "amd64".into(),
            max_blob_size: 64 << 30,
            max_layers: OVERLAY_MAX_STACK,
            space: SpaceLimits::default(),
            max_layer_size: 64 << 30,
        }
    }
}

/// Why an image could not be imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The archive could not be read.
    #[error("{op} {path}")]
    Io {
        /// Archive path.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The archive is not a readable tar.
    #[error("{path} is not a readable tar archive")]
    Tar {
        /// Archive path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: TarError,
    },
    /// Neither layout is recognised.
    #[error("{0} is neither an OCI image layout (oci-layout, index.json) nor a docker archive (manifest.json)")]
    NotAnImage(PathBuf),
    /// A file the format requires is missing.
    #[error("the archive has no {0}")]
    Missing(String),
    /// A JSON document is malformed.
    #[error("{what} is not valid JSON of the expected shape")]
    Json {
        /// Which document.
        what: String,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
    /// Storing or verifying a blob failed.
    #[error("blob {what}")]
    Blob {
        /// Which blob.
        what: String,
        /// Cause.
        #[source]
        source: BlobError,
    },
    /// A blob's size differs from its descriptor's.
    #[error("blob {digest} is {actual} bytes, its descriptor says {expected}")]
    SizeMismatch {
        /// The blob.
        digest: Digest,
        /// Size in the descriptor.
        expected: u64,
        /// Size found.
        actual: u64,
    },
    /// No manifest for the wanted platform.
    #[error("no image for {wanted} in the archive (it has: {available})")]
    NoPlatform {
        /// `os/arch` wanted.
        wanted: String,
        /// What is there.
        available: String,
    },
    /// Several images and no reference to choose.
    #[error("the archive holds several images ({0}); name one with ImportOptions::reference")]
    Ambiguous(String),
    /// The named image is not in the archive.
    #[error("no image named {0:?} in the archive")]
    NoSuchReference(String),
    /// Layer count differs between manifest and config.
    #[error("the manifest lists {layers} layers but the config {diff_ids} diff_ids")]
    LayerCount {
        /// Layers in the manifest.
        layers: usize,
        /// diff_ids in the config.
        diff_ids: usize,
    },
    /// A layer does not decompress to its diff_id.
    #[error("layer {index} ({blob}) uncompresses to {actual}, the config says {expected}")]
    DiffIdMismatch {
        /// Layer position, bottom 0.
        index: usize,
        /// The layer blob.
        blob: Digest,
        /// diff_id in the config.
        expected: Digest,
        /// Digest of the uncompressed tar.
        actual: Digest,
    },
    /// A media type this crate does not read.
    #[error("unsupported media type {0:?}")]
    UnsupportedMediaType(String),
    /// More layers than an instance's root can stack.
    #[error(
        "the image has {count} layers, more than the {limit} an instance's root file system can \
         stack (overlayfs); flatten it into fewer layers"
    )]
    TooManyLayers {
        /// Layers in the image.
        count: usize,
        /// The limit (`ImportOptions::max_layers`).
        limit: usize,
    },
    /// A layer expands beyond what its compressed size allows.
    #[error(
        "layer {index} ({blob}) uncompresses to more than {limit} bytes, over {ratio} times its \
         {compressed} bytes: a decompression bomb"
    )]
    LayerTooLarge {
        /// Layer position, bottom 0.
        index: usize,
        /// The layer blob.
        blob: Digest,
        /// Its size.
        compressed: u64,
        /// The ratio allowed.
        ratio: u64,
        /// Uncompressed bytes allowed.
        limit: u64,
    },
    /// The store's file system has no room for a blob.
    #[error(
        "blob {what} of {needed} bytes does not fit: the store's file system has {free} bytes \
         free and keeps {reserve} free"
    )]
    NoSpace {
        /// The blob.
        what: String,
        /// Its size.
        needed: u64,
        /// Bytes free.
        free: u64,
        /// Bytes kept free.
        reserve: u64,
    },
    /// The archive holds more files or longer names than an image needs.
    #[error(
        "the archive holds more than {files} files or {names} bytes of names; it is not an image"
    )]
    TooManyFiles {
        /// Most files.
        files: usize,
        /// Most bytes of names.
        names: usize,
    },
}

type Result<T> = std::result::Result<T, ImportError>;

/// Where the archive's files are: a directory or an indexed tar.
enum Source {
    Dir(PathBuf),
    Tar {
        path: PathBuf,
        files: HashMap<String, (u64, u64)>,
    },
}

impl Source {
    fn open(path: &Path) -> Result<Self> {
        let md = std::fs::metadata(path).map_err(|source| ImportError::Io {
            path: path.to_path_buf(),
            op: "inspect",
            source,
        })?;
        if md.is_dir() {
            return Ok(Self::Dir(path.to_path_buf()));
        }
        let f = File::open(path).map_err(|source| ImportError::Io {
            path: path.to_path_buf(),
            op: "open",
            source,
        })?;
        let mut tar = TarReader::new(BufReader::new(f));
        let mut files = HashMap::new();
        let mut links = Vec::new();
        let mut names = 0usize;
        let tar_err = |source| ImportError::Tar {
            path: path.to_path_buf(),
            source,
        };
        while let Some(h) = tar.next_header().map_err(tar_err)? {
            let Some(comps) = normalize(&h.path) else {
                continue;
            };
            let key = String::from_utf8_lossy(&comps.join(&b'/')).into_owned();
            names += key.len() + h.link.len();
            if files.len() + links.len() >= MAX_ARCHIVE_FILES || names > MAX_ARCHIVE_NAMES {
                return Err(ImportError::TooManyFiles {
                    files: MAX_ARCHIVE_FILES,
                    names: MAX_ARCHIVE_NAMES,
                });
            }
            match h.kind {
                EntryKind::File => {
                    files.insert(key, (tar.offset(), h.size));
                }
                EntryKind::Symlink | EntryKind::HardLink => links.push((key, h.kind, h.link)),
                _ => {}
            }
        }
        // Old docker archives link identical layers to one another.
        for (key, kind, link) in links {
            let base = match kind {
                EntryKind::Symlink => key.rsplit_once('/').map_or("", |(d, _)| d).to_string(),
                _ => String::new(),
            };
            let joined = [base.as_bytes(), b"/", &link].concat();
            if let Some(comps) = normalize(&joined) {
                let target = String::from_utf8_lossy(&comps.join(&b'/')).into_owned();
                if let Some(&loc) = files.get(&target) {
                    files.insert(key, loc);
                }
            }
        }
        Ok(Self::Tar {
            path: path.to_path_buf(),
            files,
        })
    }

    /// Size of a file of the archive, when it is there.
    fn size(&self, name: &str) -> Option<u64> {
        let comps = normalize(name.as_bytes())?;
        let name = String::from_utf8_lossy(&comps.join(&b'/')).into_owned();
        match self {
            Self::Dir(d) => std::fs::metadata(d.join(name)).ok().map(|m| m.len()),
            Self::Tar { files, .. } => files.get(&name).map(|&(_, size)| size),
        }
    }

    fn exists(&self, name: &str) -> bool {
        match self {
            Self::Dir(d) => d.join(name).is_file(),
            Self::Tar { files, .. } => files.contains_key(name),
        }
    }

    /// Opens a file of the archive; `name` is a normalised relative path.
    fn read(&self, name: &str) -> Result<Box<dyn Read + '_>> {
        let comps = normalize(name.as_bytes()).ok_or_else(|| ImportError::Missing(name.into()))?;
        let name = String::from_utf8_lossy(&comps.join(&b'/')).into_owned();
        match self {
            Self::Dir(d) => {
                let p = d.join(&name);
                let f = File::open(&p).map_err(|_| ImportError::Missing(name.clone()))?;
                Ok(Box::new(BufReader::new(f)))
            }
            Self::Tar { path, files } => {
                let &(offset, size) = files
                    .get(&name)
                    .ok_or_else(|| ImportError::Missing(name.clone()))?;
                let io = |source| ImportError::Io {
                    path: path.clone(),
                    op: "read",
                    source,
                };
                let mut f = File::open(path).map_err(io)?;
                f.seek(SeekFrom::Start(offset)).map_err(io)?;
                Ok(Box::new(BufReader::new(f).take(size)))
            }
        }
    }

    fn read_json<T: for<'de> Deserialize<'de>>(&self, name: &str) -> Result<T> {
        let mut v = Vec::new();
        self.read(name)?
            .take(MAX_JSON)
            .read_to_end(&mut v)
            .map_err(|source| ImportError::Io {
                path: PathBuf::from(name),
                op: "read",
                source,
            })?;
        serde_json::from_slice(&v).map_err(|source| ImportError::Json {
            what: name.into(),
            source,
        })
    }
}

/// Imports the image at `path`: an OCI layout directory or tar, or a docker/podman archive.
pub fn import_image(path: &Path, store: &BlobStore, opts: &ImportOptions) -> Result<ImportedImage> {
    let src = Source::open(path)?;
    if src.exists("oci-layout") && src.exists("index.json") {
        import_oci(&src, store, opts)
    } else if src.exists("manifest.json") {
        import_docker(&src, store, opts)
    } else {
        Err(ImportError::NotAnImage(path.to_path_buf()))
    }
}

fn blob_err(what: impl std::fmt::Display) -> impl FnOnce(BlobError) -> ImportError {
    let what = what.to_string();
    move |source| ImportError::Blob { what, source }
}

/// Refuses a blob of `needed` bytes when the store's file system would keep less free than
/// `limits` asks.
fn check_room(store: &BlobStore, limits: &SpaceLimits, what: &str, needed: u64) -> Result<()> {
    let free = space::free_space(store.dir()).map_err(|source| ImportError::Io {
        path: store.dir().to_path_buf(),
        op: "look at the free space of",
        source,
    })?;
    if free.bytes < needed.saturating_add(limits.min_free_bytes) {
        return Err(ImportError::NoSpace {
            what: what.to_string(),
            needed,
            free: free.bytes,
            reserve: limits.min_free_bytes,
        });
    }
    Ok(())
}

/// Copies a blob of an OCI layout into the store, verifying digest and size. One the store
/// has already (from anyone's import or pull) is still read from the archive and checked:
/// knowing a digest is not having the content, and an archive that only names another
/// project's image must not get it.
fn copy_blob(
    src: &Source,
    store: &BlobStore,
    d: &Descriptor,
    limit: u64,
    opts: &ImportOptions,
) -> Result<()> {
    let mut r = src.read(&format!("blobs/sha256/{}", d.digest.hex()))?;
    if store.has(&d.digest) {
        BlobStore::verify(&mut r, &d.digest, limit.min(d.size)).map_err(blob_err(&d.digest))?;
    } else {
        check_room(store, &opts.space, d.digest.as_str(), d.size.min(limit))?;
        store
            .put(&mut r, Some(&d.digest), limit.min(d.size))
            .map_err(blob_err(&d.digest))?;
    }
    let actual = std::fs::metadata(store.path(&d.digest)).map_or(0, |m| m.len());
    if actual != d.size {
        return Err(ImportError::SizeMismatch {
            digest: d.digest.clone(),
            expected: d.size,
            actual,
        });
    }
    Ok(())
}

/// Reads a small JSON blob from the store.
pub(crate) fn read_json_blob<T: for<'de> Deserialize<'de>>(
    store: &BlobStore,
    d: &Digest,
) -> Result<(T, Vec<u8>)> {
    let mut v = Vec::new();
    store
        .open_blob(d)
        .map_err(blob_err(d))?
        .take(MAX_JSON)
        .read_to_end(&mut v)
        .map_err(|source| ImportError::Io {
            path: store.path(d),
            op: "read",
            source,
        })?;
    let t = serde_json::from_slice(&v).map_err(|source| ImportError::Json {
        what: d.to_string(),
        source,
    })?;
    Ok((t, v))
}

/// The digest of a layer blob's uncompressed content; `None` when it is longer than `limit`.
pub(crate) fn diff_id_of(
    store: &BlobStore,
    blob: &Digest,
    compression: Compression,
    limit: u64,
) -> Result<Option<Digest>> {
    let f = store.open_blob(blob).map_err(blob_err(blob))?;
    let r = compression
        .decoder(BufReader::new(f))
        .map_err(|source| ImportError::Io {
            path: store.path(blob),
            op: "start decompressing layer",
            source,
        })?;
    let mut w = HashingWriter::new(io::sink());
    let n = io::copy(&mut r.take(limit.saturating_add(1)), &mut w).map_err(|source| {
        ImportError::Io {
            path: store.path(blob),
            op: "decompress layer",
            source,
        }
    })?;
    if n > limit {
        return Ok(None);
    }
    Ok(Some(w.finish().0))
}

fn names_of(d: &Descriptor) -> Vec<String> {
    if let Some(n) = d.annotations.get(spec::ANNOTATION_CONTAINERD_NAME) {
        return vec![n.clone()];
    }
    d.annotations
        .get(spec::ANNOTATION_REF_NAME)
        .cloned()
        .into_iter()
        .collect()
}

fn matches_reference(names: &[String], wanted: &str) -> bool {
    names.iter().any(|n| {
        n == wanted
            || n.rsplit_once(':').is_some_and(|(_, tag)| tag == wanted)
            || n.strip_prefix("localhost/") == Some(wanted)
            || n.strip_prefix("docker.io/library/") == Some(wanted)
    })
}

fn import_oci(src: &Source, store: &BlobStore, opts: &ImportOptions) -> Result<ImportedImage> {
    let index: Index = src.read_json("index.json")?;
    // (manifest descriptor, names) of every manifest reachable from index.json.
    let mut found: Vec<(Descriptor, Vec<String>)> = Vec::new();
    let mut queue: Vec<(Descriptor, Vec<String>, u32)> = index
        .manifests
        .into_iter()
        .map(|d| {
            let n = names_of(&d);
            (d, n, 0)
        })
        .collect();
    while let Some((d, names, depth)) = queue.pop() {
        match d.media_type.as_str() {
            media::OCI_MANIFEST | media::DOCKER_MANIFEST => found.push((d, names)),
            media::OCI_INDEX | media::DOCKER_MANIFEST_LIST if depth < 4 => {
                copy_blob(src, store, &d, MAX_JSON, opts)?;
                let (sub, _): (Index, _) = read_json_blob(store, &d.digest)?;
                for m in sub.manifests {
                    queue.push((m, names.clone(), depth + 1));
                }
            }
            other => tracing::debug!(media_type = other, "skipping index entry"),
        }
    }
    if let Some(r) = &opts.reference {
        found.retain(|(_, n)| matches_reference(n, r));
        if found.is_empty() {
            return Err(ImportError::NoSuchReference(r.clone()));
        }
    }
    let available = found
        .iter()
        .map(|(d, _)| {
            d.platform.as_ref().map_or("unspecified".into(), |p| {
                format!("{}/{}", p.os, p.architecture)
            })
        })
        .collect::<Vec<_>>()
        .join(", ");
    found.retain(|(d, _)| {
        d.platform
            .as_ref()
            .is_none_or(|p| p.os == opts.os && p.architecture == opts.architecture)
    });
    found.dedup_by(|a, b| a.0.digest == b.0.digest);
    let (desc, names) = match found.len() {
        0 => {
            return Err(ImportError::NoPlatform {
                wanted: format!("{}/{}", opts.os, opts.architecture),
                available,
            })
        }
        1 => found.remove(0),
        _ => {
            let list = found
                .iter()
                .map(|(d, n)| format!("{} {}", d.digest, n.join(",")))
                .collect::<Vec<_>>();
            return Err(ImportError::Ambiguous(list.join("; ")));
        }
    };
    copy_blob(src, store, &desc, MAX_JSON, opts)?;
    let (manifest, _): (Manifest, _) = read_json_blob(store, &desc.digest)?;
    check_layer_count(manifest.layers.len(), opts)?;
    copy_blob(src, store, &manifest.config, MAX_JSON, opts)?;
    let (config, _): (ConfigFile, _) = read_json_blob(store, &manifest.config.digest)?;
    check_platform(&config, opts)?;
    let layers = verify_layers(
        &config,
        manifest.layers.len(),
        |i| {
            let d = &manifest.layers[i];
            copy_blob(src, store, d, opts.max_blob_size, opts)?;
            Ok((d.digest.clone(), d.media_type.clone(), d.size))
        },
        store,
        opts,
    )?;
    Ok(ImportedImage {
        manifest_digest: desc.digest,
        config_digest: manifest.config.digest,
        config: config.config.map(ImageConfig::from).unwrap_or_default(),
        layers,
        repo_tags: names,
    })
}

/// Refuses images with more layers than can be stacked.
fn check_layer_count(count: usize, opts: &ImportOptions) -> Result<()> {
    if count > opts.max_layers {
        return Err(ImportError::TooManyLayers {
            count,
            limit: opts.max_layers,
        });
    }
    Ok(())
}

/// Refuses a config for another platform than the one asked for (an empty field, which old
/// docker versions wrote, is taken for the wanted one).
fn check_platform(config: &ConfigFile, opts: &ImportOptions) -> Result<()> {
    let os_ok = config.os.is_empty() || config.os == opts.os;
    let arch_ok = config.architecture.is_empty() || config.architecture == opts.architecture;
    if os_ok && arch_ok {
        return Ok(());
    }
    Err(ImportError::NoPlatform {
        wanted: format!("{}/{}", opts.os, opts.architecture),
        available: format!("{}/{}", config.os, config.architecture),
    })
}

/// Stores each layer (through `store_layer`, which returns digest, media type and size) and
/// checks its uncompressed digest against the config.
fn verify_layers(
    config: &ConfigFile,
    count: usize,
    mut store_layer: impl FnMut(usize) -> Result<(Digest, String, u64)>,
    store: &BlobStore,
    opts: &ImportOptions,
) -> Result<Vec<LayerRef>> {
    let diff_ids = &config.rootfs.diff_ids;
    if diff_ids.len() != count {
        return Err(ImportError::LayerCount {
            layers: count,
            diff_ids: diff_ids.len(),
        });
    }
    let mut out = Vec::with_capacity(count);
    for (i, expected) in diff_ids.iter().enumerate() {
        let (blob, media_type, size) = store_layer(i)?;
        let compression = Compression::from_media_type(&media_type)
            .ok_or_else(|| ImportError::UnsupportedMediaType(media_type.clone()))?;
        let limit = match compression {
            Compression::None => size,
            _ => opts.space.max_uncompressed(size),
        }
        .min(opts.max_layer_size);
        let actual = diff_id_of(store, &blob, compression, limit)?.ok_or_else(|| {
            ImportError::LayerTooLarge {
                index: i,
                blob: blob.clone(),
                compressed: size,
                ratio: opts.space.max_ratio,
                limit,
            }
        })?;
        if &actual != expected {
            return Err(ImportError::DiffIdMismatch {
                index: i,
                blob,
                expected: expected.clone(),
                actual,
            });
        }
        out.push(LayerRef {
            blob,
            diff_id: actual,
            media_type,
            size,
        });
    }
    Ok(out)
}

/// One image of a docker archive's `manifest.json`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// The digest a docker archive's file name promises (`<hex>.json`, `blobs/sha256/<hex>`).
fn digest_in_name(name: &str) -> Option<Digest> {
    let base = name.rsplit('/').next()?;
    let hex = base
        .strip_suffix(".json")
        .or(base.strip_suffix(".tar"))
        .unwrap_or(base);
    Digest::parse(&format!("sha256:{hex}")).ok()
}

fn import_docker(src: &Source, store: &BlobStore, opts: &ImportOptions) -> Result<ImportedImage> {
    let mut entries: Vec<DockerEntry> = src.read_json("manifest.json")?;
    if let Some(r) = &opts.reference {
        entries.retain(|e| matches_reference(e.repo_tags.as_deref().unwrap_or_default(), r));
        if entries.is_empty() {
            return Err(ImportError::NoSuchReference(r.clone()));
        }
    }
    let entry = match entries.len() {
        0 => return Err(ImportError::Missing("image in manifest.json".into())),
        1 => entries.remove(0),
        _ => {
            let list: Vec<String> = entries
                .iter()
                .map(|e| e.repo_tags.clone().unwrap_or_default().join(","))
                .collect();
            return Err(ImportError::Ambiguous(list.join("; ")));
        }
    };
    check_layer_count(entry.layers.len(), opts)?;
    // A name that looks like a digest must be one; other names are simply hashed.
    let put = |name: &str, limit: u64| -> Result<(Digest, u64)> {
        if let Some(size) = src.size(name) {
            check_room(store, &opts.space, name, size.min(limit))?;
        }
        let mut r = src.read(name)?;
        store
            .put(
                &mut r,
                digest_in_name(name)
                    .as_ref()
                    .filter(|_| name.ends_with(".json")),
                limit,
            )
            .map_err(blob_err(name))
    };
    let (config_digest, config_size) = put(&entry.config, MAX_JSON)?;
    let (config, _): (ConfigFile, _) = read_json_blob(store, &config_digest)?;
    check_platform(&config, opts)?;
    let layers = verify_layers(
        &config,
        entry.layers.len(),
        |i| {
            let (blob, size) = put(&entry.layers[i], opts.max_blob_size)?;
            let mut head = [0u8; 4];
            let n = store
                .open_blob(&blob)
                .map_err(blob_err(&blob))?
                .read(&mut head)
                .unwrap_or(0);
            Ok((
                blob,
                Compression::sniff(&head[..n]).oci_media_type().to_string(),
                size,
            ))
        },
        store,
        opts,
    )?;
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(media::OCI_MANIFEST.into()),
        config: Descriptor {
            media_type: media::OCI_CONFIG.into(),
            digest: config_digest.clone(),
            size: config_size,
            annotations: Default::default(),
            platform: None,
        },
        layers: layers
            .iter()
            .map(|l| Descriptor {
                media_type: l.media_type.clone(),
                digest: l.blob.clone(),
                size: l.size,
                annotations: Default::default(),
                platform: None,
            })
            .collect(),
        annotations: Default::default(),
    };
    let bytes = serde_json::to_vec(&manifest).map_err(|source| ImportError::Json {
        what: "the generated manifest".into(),
        source,
    })?;
    let manifest_digest = store.put_bytes(&bytes).map_err(blob_err("manifest"))?;
    Ok(ImportedImage {
        manifest_digest,
        config_digest,
        config: config.config.map(ImageConfig::from).unwrap_or_default(),
        layers,
        repo_tags: entry.repo_tags.unwrap_or_default(),
    })
}
