//! VM image bundles: a plain tar of an image directory — its description (`image.json` for
//! direct kernel boot, `firmware.json` for firmware boot) and the files it names. `vessel image
//! export` writes one; `vessel image import` reads it back, extracting only known top-level
//! file names and verifying them before anything is stored.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use vessel_api::Image;
use vessel_image::tar::{EntryKind, Header, TarReader, TarWriter};

use super::import::{FirmwareBoot, FIRMWARE_FILE};
use super::{short, validate_alias, ImageService};
use crate::error::{chain, Error, Result};
use crate::operations::OpHandle;

/// The only names a bundle may hold.
const ALLOWED: &[&str] = &[
    vessel_vmimage::MANIFEST_FILE,
    FIRMWARE_FILE,
    vessel_vmimage::KERNEL_FILE,
    vessel_vmimage::INITRD_FILE,
    "disk.qcow2",
    "disk.raw",
    "install.iso",
];

/// Whether a tar archive is a VM bundle (it names a VM description at its top level).
pub fn is_vm_bundle(path: &Path) -> Result<bool> {
    let f = File::open(path).map_err(|e| Error::internal(format!("reading the upload: {e}")))?;
    let mut tar = TarReader::new(BufReader::new(f));
    while let Ok(Some(h)) = tar.next_header() {
        let name = String::from_utf8_lossy(&h.path);
        let name = name.trim_start_matches("./");
        if name == vessel_vmimage::MANIFEST_FILE || name == FIRMWARE_FILE {
            return Ok(true);
        }
        if name == "oci-layout" || name == "manifest.json" {
            return Ok(false);
        }
    }
    Ok(false)
}

impl ImageService {
    /// Writes a VM image directory as a bundle into `staging`; returns its path.
    pub fn export_vm(&self, image: &Image, staging: &Path) -> Result<PathBuf> {
        let dir = self.image_dir(&image.fingerprint);
        let mut names: Vec<String> = Vec::new();
        if dir.join(vessel_vmimage::MANIFEST_FILE).is_file() {
            let vm = vessel_vmimage::VmImage::open(&dir)
                .map_err(|e| Error::internal(format!("reading the image: {}", chain(&e))))?;
            names.push(vessel_vmimage::MANIFEST_FILE.into());
            names.extend(vm.manifest.files.keys().cloned());
        } else {
            let desc: FirmwareBoot = serde_json::from_slice(
                &std::fs::read(dir.join(FIRMWARE_FILE))
                    .map_err(|e| Error::internal(format!("reading {FIRMWARE_FILE}: {e}")))?,
            )
            .map_err(|e| Error::internal(format!("{FIRMWARE_FILE}: {e}")))?;
            names.push(FIRMWARE_FILE.into());
            names.push(desc.file);
        }
        let out = staging.join("bundle.tar");
        let io = |e: std::io::Error| Error::internal(format!("writing the bundle: {e}"));
        let mut tar = TarWriter::new(BufWriter::new(File::create(&out).map_err(io)?));
        for name in names {
            let mut f = File::open(dir.join(&name)).map_err(io)?;
            let mut h = Header::new(EntryKind::File, name.as_bytes().to_vec());
            h.size = f.metadata().map_err(io)?.len();
            tar.append(&h, &mut f).map_err(io)?;
        }
        tar.finish().map_err(io)?.flush().map_err(io)?;
        Ok(out)
    }

    /// Imports a VM bundle (already uploaded to `upload`).
    pub(super) async fn import_vm_bundle(
        &self,
        staging: &Path,
        upload: &Path,
        alias: Option<String>,
        op: &OpHandle,
    ) -> Result<Image> {
        op.progress(Some(10), "unpacking the bundle");
        let dir = staging.join("bundle");
        let (u, d) = (upload.to_path_buf(), dir.clone());
        tokio::task::spawn_blocking(move || extract(&u, &d))
            .await
            .map_err(|e| Error::internal(format!("import task: {e}")))??;
        op.progress(Some(50), "verifying");
        let d = dir.clone();
        let (fp, source, size) = tokio::task::spawn_blocking(move || -> Result<_> {
            if d.join(vessel_vmimage::MANIFEST_FILE).is_file() {
                let vm = vessel_vmimage::VmImage::open(&d)
                    .and_then(|vm| vm.verify().map(|()| vm))
                    .map_err(|e| {
                        Error::invalid(format!("the bundle does not verify: {}", chain(&e)))
                    })?;
                // Its disk as its manifest says, checked as an imported disk is.
                if let Some((disk, format)) = crate::instance::vm::image_disk_format(&d) {
                    super::import::check_disk(&disk, format)?;
                }
                let size = vm.manifest.files.values().map(|f| f.size).sum();
                let fp = vm.fingerprint.trim_start_matches("sha256:").to_string();
                Ok((
                    fp,
                    format!("import vm/{:?}", vm.manifest.kind).to_lowercase(),
                    size,
                ))
            } else {
                let desc: FirmwareBoot = serde_json::from_slice(
                    &std::fs::read(d.join(FIRMWARE_FILE))
                        .map_err(|e| Error::invalid(format!("reading {FIRMWARE_FILE}: {e}")))?,
                )
                .map_err(|e| Error::invalid(format!("{FIRMWARE_FILE} is invalid: {e}")))?;
                if !ALLOWED.contains(&desc.file.as_str()) || desc.file.contains('/') {
                    return Err(Error::invalid(format!(
                        "{FIRMWARE_FILE} names an unexpected file {:?}",
                        desc.file
                    )));
                }
                let disk = d.join(&desc.file);
                if desc.format != "iso" {
                    super::import::check_disk(&disk, &desc.format)?;
                }
                let (fp, size) = super::import::sha256_file(&disk)
                    .map_err(|e| Error::invalid(format!("reading {}: {e}", desc.file)))?;
                Ok((fp, format!("import {}", desc.format), size))
            }
        })
        .await
        .map_err(|e| Error::internal(format!("import task: {e}")))??;
        op.set_may_cancel(false);
        let dest = self.image_dir(&fp);
        if !dest.exists() {
            std::fs::rename(&dir, &dest)
                .map_err(|e| Error::internal(format!("storing the VM image: {e}")))?;
        }
        let alias = alias.unwrap_or_else(|| format!("imported/{}", short(&fp)));
        validate_alias(&alias)?;
        self.register_vm(fp, &alias, source, size, op)
    }
}

/// Extracts the allowed top-level regular files of a bundle into `dir`; anything else
/// (directories, links, devices, other names, a second copy of a name) is refused.
fn extract(upload: &Path, dir: &Path) -> Result<()> {
    let bad = |m: String| Error::invalid(format!("not a VM image bundle: {m}"));
    std::fs::create_dir(dir).map_err(|e| Error::internal(format!("staging: {e}")))?;
    let f = File::open(upload).map_err(|e| Error::internal(format!("reading the upload: {e}")))?;
    let mut tar = TarReader::new(BufReader::new(f));
    while let Some(h) = tar.next_header().map_err(|e| bad(e.to_string()))? {
        let name = String::from_utf8_lossy(&h.path)
            .trim_start_matches("./")
            .to_string();
        if name.is_empty() || name == "." {
            continue;
        }
        if !ALLOWED.contains(&name.as_str()) {
            return Err(bad(format!(
                "it holds {name:?}, which a VM image does not have"
            )));
        }
        if h.kind != EntryKind::File {
            return Err(bad(format!("{name} is not a regular file")));
        }
        let path = dir.join(&name);
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| bad(format!("{name} twice or unwritable: {e}")))?;
        let mut data = tar.data();
        let copied = std::io::copy(&mut data as &mut dyn Read, &mut out)
            .map_err(|e| bad(format!("reading {name}: {e}")))?;
        if copied != h.size {
            return Err(bad(format!("{name} is truncated")));
        }
    }
    Ok(())
}
