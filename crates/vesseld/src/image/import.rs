//! Imports: an uploaded file is detected by its content. Tar archives are container images
//! (an OCI layout or a `docker save`/`podman save` archive); qcow2, raw disks and ISO 9660
//! images are VM images booted from firmware by the `full` profile.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use vessel_api::{Image, ImageKind};

use super::{short, validate_alias, ImageService};
use crate::error::{Error, Result};
use crate::operations::OpHandle;

/// What an uploaded file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upload {
    /// A tar archive: a container image.
    Archive,
    /// A qcow2 disk image.
    Qcow2,
    /// An ISO 9660 image (installer or live CD).
    Iso,
    /// A raw disk image (only when the caller says it is a VM image).
    Raw,
}

/// Tells an upload's kind from its first bytes.
pub fn detect(path: &Path, raw_is_vm: bool) -> Result<Upload> {
    let io = |e: std::io::Error| Error::internal(format!("reading the upload: {e}"));
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut head = [0u8; 512];
    let n = read_full(&mut f, &mut head).map_err(io)?;
    if n >= 4 && head[..4] == *b"QFI\xfb" {
        return Ok(Upload::Qcow2);
    }
    if n >= 262 && &head[257..262] == b"ustar" {
        return Ok(Upload::Archive);
    }
    let mut cd = [0u8; 5];
    if f.seek(SeekFrom::Start(0x8001)).is_ok()
        && read_full(&mut f, &mut cd).map_err(io)? == 5
        && cd == *b"CD001"
    {
        return Ok(Upload::Iso);
    }
    if raw_is_vm && n > 0 {
        return Ok(Upload::Raw);
    }
    Err(Error::invalid(
        "the upload is neither a tar archive (OCI layout, docker or podman save) nor a qcow2 or \
         ISO image; for a raw disk image pass --vm",
    ))
}

fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// How a firmware-booted VM image boots, written as `firmware.json` in its directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirmwareBoot {
    /// `disk` or `cdrom`.
    pub boot: String,
    /// File name inside the image directory.
    pub file: String,
    /// `qcow2`, `raw` or `iso`.
    pub format: String,
    /// Size the guest sees, bytes.
    pub virtual_size: u64,
}

/// Name of the firmware-boot description in an image directory.
pub const FIRMWARE_FILE: &str = "firmware.json";

/// What `qemu-img info` says of a disk.
#[derive(Debug, Deserialize)]
struct QemuImgInfo {
    format: String,
    #[serde(rename = "virtual-size")]
    virtual_size: u64,
    #[serde(rename = "backing-filename")]
    backing_filename: Option<String>,
    #[serde(rename = "format-specific")]
    format_specific: Option<serde_json::Value>,
}

fn qemu_img(args: &[&str]) -> Result<std::process::Output> {
    std::process::Command::new("qemu-img")
        .args(args)
        .output()
        .map_err(|e| {
            Error::invalid(format!(
                "cannot run qemu-img ({e}); install it with apt-get install qemu-utils"
            ))
        })
}

/// Checks a disk image with `qemu-img`: its format must be the expected one, it must not
/// name a backing file (which could be any file of the host), and it must not be corrupt.
pub(super) fn check_disk(path: &Path, format: &str) -> Result<u64> {
    let p = path.to_string_lossy();
    if format == "qcow2" {
        vessel_vm::refuse_external_data(path)
            .map_err(|e| Error::invalid(format!("the disk image: {}", crate::error::chain(&e))))?;
    } else {
        // A raw disk whose first bytes are another format's header (a qcow2 naming a backing
        // file, a VMDK descriptor naming extents: host paths) would be opened as that by
        // anything that probes: refused, so that no probe ever sees anything but raw. Read
        // here, not by a probing qemu-img, which would open what such a header names.
        let mut head = Vec::with_capacity(2048);
        std::fs::File::open(path)
            .and_then(|f| f.take(2048).read_to_end(&mut head))
            .map_err(|e| Error::invalid(format!("reading the disk image: {e}")))?;
        if let Some(f) = other_format(&head) {
            return Err(Error::invalid(format!(
                "the raw disk image starts like a {f} image (whose header may name other \
                 files): convert it to a plain raw or qcow2 disk first (qemu-img convert)"
            )));
        }
    }
    let out = qemu_img(&["info", "--output=json", "-f", format, &p])?;
    if !out.status.success() {
        return Err(Error::invalid(format!(
            "the disk image is unreadable as {format}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let info: QemuImgInfo = serde_json::from_slice(&out.stdout)
        .map_err(|e| Error::internal(format!("qemu-img info answered unreadable JSON: {e}")))?;
    if info.format != format {
        return Err(Error::invalid(format!(
            "expected a {format} image, got {}",
            info.format
        )));
    }
    if let Some(b) = info.backing_filename {
        return Err(Error::invalid(format!(
            "the qcow2 image names a backing file ({b}); flatten it first with \
             `qemu-img convert -O qcow2 IN OUT`"
        )));
    }
    let corrupt = info
        .format_specific
        .as_ref()
        .and_then(|f| f.pointer("/data/corrupt"))
        .and_then(|c| c.as_bool())
        .unwrap_or(false);
    if format == "qcow2" {
        let check = qemu_img(&["check", "-f", "qcow2", &p])?;
        if corrupt || !check.status.success() {
            return Err(Error::invalid(format!(
                "the qcow2 image is corrupt: {}",
                String::from_utf8_lossy(&check.stdout)
                    .lines()
                    .chain(String::from_utf8_lossy(&check.stderr).lines())
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("qemu-img check failed")
            )));
        }
    }
    Ok(info.virtual_size)
}

/// The format other than raw whose header `head` (a file's first 2048 bytes) carries, as
/// QEMU's format probes would find it.
fn other_format(head: &[u8]) -> Option<&'static str> {
    const MAGIC: &[(usize, &[u8], &str)] = &[
        (0, b"QFI\xfb", "qcow2"),
        (0, b"QED\0", "qed"),
        (0, b"KDMV", "vmdk"),
        (0, b"COWD", "vmdk"),
        (0, b"conectix", "vpc"),
        (0, b"vhdxfile", "vhdx"),
        (0, b"LUKS\xba\xbe", "luks"),
        (0, b"WithoutFreeSpace", "parallels"),
        (0, b"WithouFreSpacExt", "parallels"),
        (0, b"Bochs Virtual HD Image", "bochs"),
        (0, b"#!/bin/sh\n#V2.0 Format", "cloop"),
        (0x40, b"\x7f\x10\xda\xbe", "vdi"),
    ];
    for (at, magic, name) in MAGIC {
        if head.get(*at..at + magic.len()) == Some(*magic) {
            return Some(name);
        }
    }
    // A VMDK descriptor is text with a `version=` line.
    head.split(|b| *b == b'\n')
        .any(|l| l.starts_with(b"version="))
        .then_some("vmdk")
}

pub(super) fn sha256_file(path: &Path) -> std::io::Result<(String, u64)> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        h.update(&buf[..n]);
    }
    Ok((hex::encode(h.finalize()), size))
}

impl ImageService {
    /// Imports an uploaded file (left by the caller in `staging`, which this removes).
    pub async fn import(
        &self,
        staging: PathBuf,
        upload: PathBuf,
        alias: Option<String>,
        raw_is_vm: bool,
        fingerprint: Option<String>,
        op: OpHandle,
    ) -> Result<Image> {
        let result = async {
            if let Some(a) = &alias {
                validate_alias(a)?;
            }
            op.progress(Some(5), "inspecting the upload");
            let u = upload.clone();
            let kind = tokio::task::spawn_blocking(move || detect(&u, raw_is_vm))
                .await
                .map_err(|e| Error::internal(format!("import task: {e}")))??;
            match kind {
                Upload::Archive if super::vmbundle::is_vm_bundle(&upload)? => {
                    self.import_vm_bundle(&staging, &upload, alias, &op).await
                }
                Upload::Archive => self.import_archive(&upload, alias, fingerprint, &op).await,
                disk => self.import_disk(&upload, disk, alias, &op).await,
            }
        }
        .await;
        let _ = std::fs::remove_dir_all(&staging);
        result
    }

    async fn import_disk(
        &self,
        upload: &Path,
        kind: Upload,
        alias: Option<String>,
        op: &OpHandle,
    ) -> Result<Image> {
        let (format, boot, file) = match kind {
            Upload::Qcow2 => ("qcow2", "disk", "disk.qcow2"),
            Upload::Raw => ("raw", "disk", "disk.raw"),
            Upload::Iso => ("iso", "cdrom", "install.iso"),
            Upload::Archive => unreachable!("archives are imported as containers"),
        };
        op.progress(Some(20), "checking the disk image");
        let (u, f) = (upload.to_path_buf(), format);
        let (virtual_size, fp, size) = tokio::task::spawn_blocking(move || -> Result<_> {
            let vsize = if f == "iso" {
                std::fs::metadata(&u).map(|m| m.len()).unwrap_or(0)
            } else {
                check_disk(&u, f)?
            };
            let (fp, size) =
                sha256_file(&u).map_err(|e| Error::internal(format!("hashing the upload: {e}")))?;
            Ok((vsize, fp, size))
        })
        .await
        .map_err(|e| Error::internal(format!("import task: {e}")))??;
        op.set_may_cancel(false);
        op.progress(Some(80), "storing");
        let dir = self.image_dir(&fp);
        if !dir.join(FIRMWARE_FILE).is_file() {
            // The directory of an image of another kind whose fingerprint the upload has
            // (its bytes are that image's manifest, say) is that image's, not a leftover.
            if self.by_fingerprint(&fp).is_ok() {
                return Err(Error::conflict(format!(
                    "the upload's fingerprint {} is that of an image here of another kind: \
                     it is no disk image",
                    short(&fp)
                )));
            }
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir)
                .map_err(|e| Error::internal(format!("creating {}: {e}", dir.display())))?;
            std::fs::rename(upload, dir.join(file))
                .map_err(|e| Error::internal(format!("storing the disk image: {e}")))?;
            let desc = FirmwareBoot {
                boot: boot.into(),
                file: file.into(),
                format: format.into(),
                virtual_size,
            };
            let body = serde_json::to_vec_pretty(&desc)
                .map_err(|e| Error::internal(format!("firmware description: {e}")))?;
            std::fs::write(dir.join(FIRMWARE_FILE), body)
                .map_err(|e| Error::internal(format!("writing {FIRMWARE_FILE}: {e}")))?;
        }
        let alias = alias.unwrap_or_else(|| format!("imported/{}", short(&fp)));
        self.register_vm(fp, &alias, format!("import {format}"), size, op)
    }
}

impl ImageService {
    /// Imports a container image archive: blobs into the store (verified), new layers
    /// unpacked, the image recorded under its manifest digest (or under `fingerprint`: the
    /// one it has on the member that sent it, so its instances find it here).
    async fn import_archive(
        &self,
        upload: &Path,
        alias: Option<String>,
        fingerprint: Option<String>,
        op: &OpHandle,
    ) -> Result<Image> {
        op.progress(Some(10), "reading the archive");
        let store = self.blobs()?;
        let (u, s) = (upload.to_path_buf(), store.clone());
        let opts = vessel_image::ImportOptions {
            max_layers: self.max_layers(),
            ..Default::default()
        };
        let imported =
            tokio::task::spawn_blocking(move || vessel_image::import_image(&u, &s, &opts))
                .await
                .map_err(|e| Error::internal(format!("import task: {e}")))?
                .map_err(|e| {
                    Error::invalid(format!(
                        "cannot import the archive: {}",
                        crate::error::chain(&e)
                    ))
                })?;
        let blobs: Vec<super::pull::LayerBlob> = imported
            .layers
            .iter()
            .map(|l| super::pull::LayerBlob {
                blob: l.blob.clone(),
                media_type: l.media_type.clone(),
                diff_id: l.diff_id.clone(),
            })
            .collect();
        let ids = self.unpack_layers(&store, &blobs, op, (40, 95)).await?;
        op.set_may_cancel(false);
        let alias = match alias {
            Some(a) => a,
            // Sent by a member with an instance: its own name, taking no alias here.
            None if fingerprint.is_some() => {
                format!(
                    "imported/{}",
                    short(fingerprint.as_deref().unwrap_or_default())
                )
            }
            None => imported
                .repo_tags
                .first()
                .map(|t| t.trim_start_matches("localhost/").to_string())
                .filter(|t| validate_alias(t).is_ok())
                .unwrap_or_else(|| format!("imported/{}", short(imported.manifest_digest.hex()))),
        };
        let size = imported.layers.iter().map(|l| l.size).sum();
        let image = Self::image_from_config(
            fingerprint.unwrap_or_else(|| imported.manifest_digest.hex().to_string()),
            &alias,
            "import".into(),
            ids,
            size,
            &imported.config,
        );
        let image = self.register(image, &alias)?;
        op.add_resource(self.path(Some(&image.fingerprint)));
        Ok(image)
    }

    /// Writes a container image as an OCI archive into `staging`; returns its path. The
    /// layers' blobs are built in a store inside `staging`, which the caller removes.
    pub async fn export(&self, key: &str, staging: &Path) -> Result<PathBuf> {
        let image = self.get(key)?;
        if image.kind == ImageKind::Vm {
            return self.export_vm(&image, staging);
        }
        if image.layers.is_empty() {
            return Err(Error::conflict(format!(
                "image {} was stored before images had layers; rebuild it to export it",
                short(&image.fingerprint)
            )));
        }
        let layers: Vec<PathBuf> = image.layers.iter().map(|l| self.layer_dir(l)).collect();
        let config = vessel_image::ImageConfig {
            entrypoint: vec![],
            cmd: image.command.clone(),
            env: image.environment.clone(),
            working_dir: image.working_dir.clone(),
            user: image.user.clone(),
            exposed_ports: image.exposed_ports.clone(),
            stop_signal: Some(image.stop_signal.clone()),
            labels: Default::default(),
        };
        let tags: Vec<String> = image
            .aliases
            .iter()
            .map(|a| {
                if a.contains(':') {
                    a.clone()
                } else {
                    format!("{a}:latest")
                }
            })
            .collect();
        let staging = staging.to_path_buf();
        tokio::task::spawn_blocking(move || -> Result<PathBuf> {
            fn err(e: &(dyn std::error::Error + 'static)) -> Error {
                Error::internal(format!("exporting: {}", crate::error::chain(e)))
            }
            let store =
                vessel_image::BlobStore::open(staging.join("blobs")).map_err(|e| err(&e))?;
            let mut refs = Vec::with_capacity(layers.len());
            for l in &layers {
                refs.push(vessel_image::build_layer(l, &store).map_err(|e| err(&e))?);
            }
            let img =
                vessel_image::new_image(&store, None, &refs, &config, tags).map_err(|e| err(&e))?;
            let out = staging.join("image.tar");
            let file = std::fs::File::create(&out)
                .map_err(|e| Error::internal(format!("creating the archive: {e}")))?;
            let mut w = std::io::BufWriter::new(file);
            vessel_image::write_oci_archive(&store, &img, &mut w).map_err(|e| err(&e))?;
            std::io::Write::flush(&mut w)
                .map_err(|e| Error::internal(format!("writing the archive: {e}")))?;
            Ok(out)
        })
        .await
        .map_err(|e| Error::internal(format!("export task: {e}")))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_raw_disk_that_starts_like_another_format_is_told_apart() {
        let mut vdi = vec![0u8; 512];
        vdi[0x40..0x44].copy_from_slice(&0xbeda_107f_u32.to_le_bytes());
        for (head, want) in [
            (b"QFI\xfb\0\0\0\x03".to_vec(), Some("qcow2")),
            (b"KDMV\x01\0\0\0".to_vec(), Some("vmdk")),
            (
                b"# Disk DescriptorFile\nversion=1\nRW 8 FLAT \"/dev/sda\" 0\n".to_vec(),
                Some("vmdk"),
            ),
            (b"conectix".to_vec(), Some("vpc")),
            (vdi, Some("vdi")),
            (vec![0u8; 2048], None),
            (b"\xeb\x63\x90 an MBR boot sector".to_vec(), None),
            (b"QFI".to_vec(), None),
        ] {
            assert_eq!(
                other_format(&head),
                want,
                "{:?}",
                String::from_utf8_lossy(&head)
            );
        }
    }
}
