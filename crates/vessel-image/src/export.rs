//! Writing images: a directory tree as a gzip layer blob (overlayfs whiteouts turned back into
//! OCI `.wh.` entries), a new image from a base and layers, and an OCI archive tar that
//! `podman load` accepts.

use std::collections::{BTreeMap, HashMap};
use std::ffi::CStr;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::archive::{read_json_blob, ImportError, ImportedImage, LayerRef};
use crate::blobs::{BlobError, BlobStore, Digest, HashingWriter};
use crate::config::ImageConfig;
use crate::fsat;
use crate::media::{self, Compression};
use crate::spec::{self, Descriptor, Index, Manifest};
use crate::tar::{EntryKind, Header, TarWriter};
use crate::unpack::{opaque_name, OPAQUE_MARKER, WHITEOUT_PREFIX};

/// Why an image or layer could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Reading the tree failed.
    #[error("{op} {path}")]
    Read {
        /// File in the tree.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// Writing the output failed.
    #[error("writing {what}")]
    Write {
        /// What was being written.
        what: &'static str,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The blob store failed.
    #[error("blob store")]
    Blob(#[from] BlobError),
    /// A stored manifest or config could not be read.
    #[error("reading the image's manifest or config")]
    Image(#[from] ImportError),
    /// A blob the image needs is not in the store.
    #[error("blob {0} is not in the store; import or pull the image again")]
    MissingBlob(Digest),
}

type Result<T> = std::result::Result<T, ExportError>;

/// Tars the tree at `dir` into a gzip layer blob in `store`: entries in byte order, numeric
/// owners, mtimes kept, hard links preserved, overlayfs whiteouts (0:0 devices, opaque
/// directories) written as OCI whiteouts. The same tree always gives the same blob.
pub fn build_layer(dir: &Path, store: &BlobStore) -> Result<LayerRef> {
    let root = fsat::open_dir_path(dir).map_err(|source| ExportError::Read {
        path: dir.to_path_buf(),
        op: "open",
        source,
    })?;
    let blob = store.writer()?;
    let gz = flate2::write::GzEncoder::new(blob, flate2::Compression::default());
    let mut tar = TarWriter::new(HashingWriter::new(gz));
    let mut w = Walk {
        dir,
        links: HashMap::new(),
    };
    // The root's own entry, so the layer's "/" keeps its owner, mode and time.
    let st = fsat::fstat(root.as_fd()).map_err(w.err(b"", "stat"))?;
    let mut h = Header::new(EntryKind::Directory, "./");
    h.mode = st.st_mode & 0o7777;
    h.uid = u64::from(st.st_uid);
    h.gid = u64::from(st.st_gid);
    h.mtime = st.st_mtime;
    h.xattrs = w.xattrs(root.as_fd(), b"")?;
    tar.append(&h, &mut io::empty())
        .map_err(|source| ExportError::Write {
            what: "layer",
            source,
        })?;
    w.dir(root.as_fd(), &mut Vec::new(), &mut tar)?;
    let werr = |source| ExportError::Write {
        what: "layer",
        source,
    };
    let (diff_id, gz) = tar.finish().map_err(werr)?.finish();
    let blob = gz.finish().map_err(werr)?;
    let (digest, size) = blob.commit()?;
    Ok(LayerRef {
        blob: digest,
        diff_id,
        media_type: Compression::Gzip.oci_media_type().to_string(),
        size,
    })
}

struct Walk<'a> {
    dir: &'a Path,
    links: HashMap<(u64, u64), Vec<u8>>,
}

/// Whether an xattr belongs in a layer (overlayfs' own and SELinux labels do not).
fn keep_xattr(name: &[u8]) -> bool {
    !name.starts_with(b"trusted.overlay.") && name != b"security.selinux"
}

impl Walk<'_> {
    fn err(&self, rel: &[u8], op: &'static str) -> impl FnOnce(io::Error) -> ExportError {
        let path = self.dir.join(String::from_utf8_lossy(rel).as_ref());
        move |source| ExportError::Read { path, op, source }
    }

    fn dir<W: Write>(
        &mut self,
        d: BorrowedFd<'_>,
        rel: &mut Vec<u8>,
        tar: &mut TarWriter<W>,
    ) -> Result<()> {
        for name in fsat::list_dir(d).map_err(self.err(rel, "list"))? {
            let len = rel.len();
            if !rel.is_empty() {
                rel.push(b'/');
            }
            rel.extend_from_slice(name.to_bytes());
            self.entry(d, &name, rel, tar)?;
            rel.truncate(len);
        }
        Ok(())
    }

    fn xattrs(&self, fd: BorrowedFd<'_>, rel: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        for n in fsat::list_xattrs(fd).map_err(self.err(rel, "list xattrs"))? {
            if !keep_xattr(&n) {
                continue;
            }
            let c = fsat::cstr(&n).map_err(self.err(rel, "xattr name"))?;
            if let Some(v) = fsat::get_xattr(fd, &c).map_err(self.err(rel, "read xattr"))? {
                out.push((n, v));
            }
        }
        Ok(out)
    }

    fn entry<W: Write>(
        &mut self,
        d: BorrowedFd<'_>,
        name: &CStr,
        rel: &mut Vec<u8>,
        tar: &mut TarWriter<W>,
    ) -> Result<()> {
        let Some(st) = fsat::lstat_at(d, name).map_err(self.err(rel, "stat"))? else {
            return Ok(());
        };
        let werr = |source| ExportError::Write {
            what: "layer",
            source,
        };
        let fmt = st.st_mode & libc::S_IFMT;
        let mut h = Header::new(EntryKind::File, rel.clone());
        h.mode = st.st_mode & 0o7777;
        h.uid = u64::from(st.st_uid);
        h.gid = u64::from(st.st_gid);
        h.mtime = st.st_mtime;
        if fsat::is_whiteout(&st) {
            let cut = rel.len() - name.to_bytes().len();
            h.path = [&rel[..cut], WHITEOUT_PREFIX, name.to_bytes()].concat();
            h.mode = 0;
            h.uid = 0;
            h.gid = 0;
            return tar.append(&h, &mut io::empty()).map_err(werr);
        }
        match fmt {
            libc::S_IFDIR => {
                let fd = fsat::open_child_dir(d, name).map_err(self.err(rel, "open directory"))?;
                h.kind = EntryKind::Directory;
                h.path.push(b'/');
                let xattrs = self.xattrs(fd.as_fd(), rel)?;
                h.xattrs = xattrs;
                tar.append(&h, &mut io::empty()).map_err(werr)?;
                let opaque = fsat::get_xattr(fd.as_fd(), &opaque_name())
                    .map_err(self.err(rel, "read opaque xattr"))?
                    .is_some_and(|v| v == b"y");
                if opaque {
                    let mut m = Header::new(
                        EntryKind::File,
                        [rel.as_slice(), b"/", OPAQUE_MARKER].concat(),
                    );
                    m.mode = 0;
                    m.mtime = st.st_mtime;
                    tar.append(&m, &mut io::empty()).map_err(werr)?;
                }
                self.dir(fd.as_fd(), rel, tar)
            }
            libc::S_IFREG => {
                if st.st_nlink > 1 {
                    let key = (st.st_dev, st.st_ino);
                    if let Some(first) = self.links.get(&key) {
                        h.kind = EntryKind::HardLink;
                        h.link = first.clone();
                        return tar.append(&h, &mut io::empty()).map_err(werr);
                    }
                    self.links.insert(key, rel.clone());
                }
                let f = fsat::open_child_file(d, name).map_err(self.err(rel, "open file"))?;
                h.size = st.st_size as u64;
                h.xattrs = self.xattrs(f.as_fd(), rel)?;
                tar.append(&h, &mut (&f).take(h.size))
                    .map_err(self.err(rel, "archive file"))
            }
            libc::S_IFLNK => {
                h.kind = EntryKind::Symlink;
                h.link = fsat::readlink_at(d, name).map_err(self.err(rel, "read symlink"))?;
                tar.append(&h, &mut io::empty()).map_err(werr)
            }
            libc::S_IFCHR | libc::S_IFBLK | libc::S_IFIFO => {
                h.kind = match fmt {
                    libc::S_IFCHR => EntryKind::CharDevice,
                    libc::S_IFBLK => EntryKind::BlockDevice,
                    _ => EntryKind::Fifo,
                };
                h.dev_major = libc::major(st.st_rdev);
                h.dev_minor = libc::minor(st.st_rdev);
                tar.append(&h, &mut io::empty()).map_err(werr)
            }
            // Sockets do not belong in images.
            _ => Ok(()),
        }
    }
}

/// Makes a new image in `store`: `base`'s layers (if any) plus `layers` on top, with `config`
/// as run-time defaults. The base's other config fields (history, platform) are kept.
pub fn new_image(
    store: &BlobStore,
    base: Option<&ImportedImage>,
    layers: &[LayerRef],
    config: &ImageConfig,
    repo_tags: Vec<String>,
) -> Result<ImportedImage> {
    let mut raw = match base {
        Some(b) => read_json_blob::<serde_json::Value>(store, &b.config_digest)?.0,
        None => {
            json!({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}})
        }
    };
    let mut all: Vec<LayerRef> = base.map(|b| b.layers.clone()).unwrap_or_default();
    all.extend_from_slice(layers);
    raw["rootfs"] = json!({"type": "layers", "diff_ids": all.iter().map(|l| l.diff_id.as_str()).collect::<Vec<_>>()});
    if let Some(h) = raw.get_mut("history").and_then(|h| h.as_array_mut()) {
        for _ in layers {
            h.push(json!({"created_by": "vessel", "comment": "layer added by Vessel"}));
        }
    }
    spec::set_run_config(&mut raw, config);
    let bytes = serde_json::to_vec(&raw).map_err(|e| ExportError::Write {
        what: "image config",
        source: io::Error::other(e),
    })?;
    let config_digest = store.put_bytes(&bytes)?;
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(media::OCI_MANIFEST.into()),
        config: descriptor(media::OCI_CONFIG, &config_digest, bytes.len() as u64),
        layers: all
            .iter()
            .map(|l| descriptor(&l.media_type, &l.blob, l.size))
            .collect(),
        annotations: BTreeMap::new(),
    };
    let mbytes = serde_json::to_vec(&manifest).map_err(|e| ExportError::Write {
        what: "manifest",
        source: io::Error::other(e),
    })?;
    Ok(ImportedImage {
        manifest_digest: store.put_bytes(&mbytes)?,
        config_digest,
        config: config.clone(),
        layers: all,
        repo_tags,
    })
}

fn descriptor(media_type: &str, digest: &Digest, size: u64) -> Descriptor {
    Descriptor {
        media_type: media_type.to_string(),
        digest: digest.clone(),
        size,
        annotations: BTreeMap::new(),
        platform: None,
    }
}

fn blob_size(store: &BlobStore, d: &Digest) -> Result<u64> {
    std::fs::metadata(store.path(d))
        .map(|m| m.len())
        .map_err(|_| ExportError::MissingBlob(d.clone()))
}

/// Writes `image` as an OCI archive (an OCI image layout in a tar) to `out`, naming it with
/// each of its `repo_tags` (`org.opencontainers.image.ref.name`), as `podman load` reads it.
pub fn write_oci_archive(store: &BlobStore, image: &ImportedImage, out: impl Write) -> Result<()> {
    let (manifest, _): (Manifest, _) = read_json_blob(store, &image.manifest_digest)?;
    let manifest_type = manifest
        .media_type
        .clone()
        .unwrap_or_else(|| media::OCI_MANIFEST.into());
    let msize = blob_size(store, &image.manifest_digest)?;
    let mut entries = Vec::new();
    let tags: Vec<Option<&String>> = if image.repo_tags.is_empty() {
        vec![None]
    } else {
        image.repo_tags.iter().map(Some).collect()
    };
    for tag in tags {
        let mut d = descriptor(&manifest_type, &image.manifest_digest, msize);
        if let Some(t) = tag {
            d.annotations
                .insert(spec::ANNOTATION_REF_NAME.into(), t.clone());
        }
        entries.push(d);
    }
    let index = Index {
        schema_version: 2,
        media_type: Some(media::OCI_INDEX.into()),
        manifests: entries,
        annotations: BTreeMap::new(),
    };
    let werr = |source| ExportError::Write {
        what: "archive",
        source,
    };
    let index_bytes = serde_json::to_vec(&index).map_err(|e| werr(io::Error::other(e)))?;
    let mut tar = TarWriter::new(out);
    let file = |tar: &mut TarWriter<_>, name: &str, data: &[u8]| -> io::Result<()> {
        let mut h = Header::new(EntryKind::File, name);
        h.size = data.len() as u64;
        tar.append(&h, &mut &data[..])
    };
    file(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#).map_err(werr)?;
    file(&mut tar, "index.json", &index_bytes).map_err(werr)?;
    for d in ["blobs/", "blobs/sha256/"] {
        let mut h = Header::new(EntryKind::Directory, d);
        h.mode = 0o755;
        tar.append(&h, &mut io::empty()).map_err(werr)?;
    }
    let mut blobs = vec![
        image.manifest_digest.clone(),
        manifest.config.digest.clone(),
    ];
    blobs.extend(manifest.layers.iter().map(|l| l.digest.clone()));
    let mut seen = std::collections::HashSet::new();
    for d in blobs.into_iter().filter(|d| seen.insert(d.clone())) {
        let size = blob_size(store, &d)?;
        let mut f = store.open_blob(&d)?;
        let mut h = Header::new(EntryKind::File, format!("blobs/sha256/{}", d.hex()));
        h.size = size;
        tar.append(&h, &mut f).map_err(werr)?;
    }
    let mut out = tar.finish().map_err(werr)?;
    out.flush().map_err(werr)
}
