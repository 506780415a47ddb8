//! `image.json`: what an image directory holds and how to boot it, with a digest per file.
//! The image's fingerprint is the sha256 of `image.json` itself, so it covers every file.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::disk::DiskFormat;
use crate::error::{Result, VmImageError};

/// Name of the manifest inside an image directory.
pub const MANIFEST_FILE: &str = "image.json";
/// Name of the kernel inside an image directory.
pub const KERNEL_FILE: &str = "vmlinuz";
/// Name of the initramfs inside an image directory.
pub const INITRD_FILE: &str = "initrd.img";

/// Which kind of image a directory holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageKindName {
    /// The guest runs from the initramfs (state is lost at power-off).
    Initramfs,
    /// The initramfs switches into an ext4 root on the first virtio disk.
    Disk,
}

/// Size and sha256 of one file of an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDigest {
    /// Length in bytes.
    pub size: u64,
    /// Lower-case hex sha256 of the contents.
    pub sha256: String,
}

/// Contents of `image.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageManifest {
    /// Initramfs-only or disk image.
    pub kind: ImageKindName,
    /// Kernel file name (QEMU `-kernel`), relative to the image directory.
    pub kernel: String,
    /// Initramfs file name (QEMU `-initrd`).
    pub initrd: String,
    /// Disk file name (QEMU `-drive file=...,if=virtio`), for disk images.
    pub disk: Option<String>,
    /// Format of the disk file.
    pub disk_format: Option<DiskFormat>,
    /// Default kernel command line (QEMU `-append`); see [`ImageManifest::cmdline_for`].
    pub cmdline: String,
    /// Release of the kernel (`uname -r` in the guest).
    pub kernel_version: String,
    /// Every file of the image except this manifest, by name.
    pub files: BTreeMap<String, FileDigest>,
}

/// Which device the guest's console (and root shell) is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestConsole {
    /// The first UART, `ttyS0` (`-serial ...` on q35 and pc).
    Serial,
    /// The first virtio console port, `hvc0` (`-device virtconsole`).
    Virtio,
}

impl GuestConsole {
    /// The guest's device name.
    pub fn device(self) -> &'static str {
        match self {
            GuestConsole::Serial => "ttyS0",
            GuestConsole::Virtio => "hvc0",
        }
    }
}

impl ImageManifest {
    /// The kernel command line for booting as `hostname` with the console on `console`:
    /// the image's own line with its `console=` and `vessel.hostname=` replaced.
    pub fn cmdline_for(&self, hostname: &str, console: GuestConsole) -> Result<String> {
        if !valid_hostname(hostname) {
            return Err(VmImageError::InvalidHostname {
                hostname: hostname.to_string(),
            });
        }
        let mut words: Vec<String> = self
            .cmdline
            .split_whitespace()
            .filter(|w| !w.starts_with("console=") && !w.starts_with("vessel.hostname="))
            .map(str::to_string)
            .collect();
        words.insert(0, format!("console={}", console.device()));
        words.push(format!("{}={hostname}", crate::guest::HOSTNAME_PARAM));
        Ok(words.join(" "))
    }
}

/// RFC 1123 host name: labels of letters, digits and inner dashes, 253 characters at most.
fn valid_hostname(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// A built image: its directory, manifest and fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmImage {
    /// The image directory.
    pub dir: PathBuf,
    /// Its `image.json`.
    pub manifest: ImageManifest,
    /// `sha256:<hex>` of `image.json`, which records every file's digest: the content address.
    pub fingerprint: String,
}

impl VmImage {
    /// Opens an image directory, checking that every file its manifest names is there with
    /// the recorded size (digests are checked by [`VmImage::verify`]).
    pub fn open(dir: &Path) -> Result<VmImage> {
        let path = dir.join(MANIFEST_FILE);
        let bytes = fs::read(&path).map_err(VmImageError::io("read", &path))?;
        let manifest: ImageManifest =
            serde_json::from_slice(&bytes).map_err(|e| VmImageError::ManifestInvalid {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        let named = [
            Some(&manifest.kernel),
            Some(&manifest.initrd),
            manifest.disk.as_ref(),
        ];
        for name in named.into_iter().flatten() {
            if !manifest.files.contains_key(name) {
                return Err(VmImageError::ManifestInvalid {
                    path,
                    reason: format!("{name} has no digest"),
                });
            }
        }
        for (name, digest) in &manifest.files {
            if name.contains('/') || name.starts_with('.') {
                return Err(VmImageError::ManifestInvalid {
                    path,
                    reason: format!("bad file name {name:?}"),
                });
            }
            let file = dir.join(name);
            let size = file
                .metadata()
                .map_err(VmImageError::io("stat", &file))?
                .len();
            if size != digest.size {
                return Err(VmImageError::DigestMismatch { path: file });
            }
        }
        Ok(VmImage {
            dir: dir.to_path_buf(),
            manifest,
            fingerprint: fingerprint_of(&bytes),
        })
    }

    /// Recomputes every file's sha256 and compares it with the manifest.
    pub fn verify(&self) -> Result<()> {
        for (name, digest) in &self.manifest.files {
            let path = self.dir.join(name);
            if file_digest(&path)? != *digest {
                return Err(VmImageError::DigestMismatch { path });
            }
        }
        Ok(())
    }

    /// Path of the kernel.
    pub fn kernel_path(&self) -> PathBuf {
        self.dir.join(&self.manifest.kernel)
    }

    /// Path of the initramfs.
    pub fn initrd_path(&self) -> PathBuf {
        self.dir.join(&self.manifest.initrd)
    }

    /// Path of the disk, for disk images.
    pub fn disk_path(&self) -> Option<PathBuf> {
        self.manifest.disk.as_ref().map(|d| self.dir.join(d))
    }
}

/// Writes `image.json` into `dir` (deterministically) and returns the image.
pub(crate) fn write_manifest(dir: &Path, manifest: ImageManifest) -> Result<VmImage> {
    let mut bytes =
        serde_json::to_vec_pretty(&manifest).map_err(|e| VmImageError::ManifestInvalid {
            path: dir.join(MANIFEST_FILE),
            reason: e.to_string(),
        })?;
    bytes.push(b'\n');
    let path = dir.join(MANIFEST_FILE);
    fs::write(&path, &bytes).map_err(VmImageError::io("write", &path))?;
    Ok(VmImage {
        dir: dir.to_path_buf(),
        manifest,
        fingerprint: fingerprint_of(&bytes),
    })
}

fn fingerprint_of(manifest_bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(manifest_bytes)))
}

/// Size and sha256 of a file, read in chunks (disks can be large).
pub(crate) fn file_digest(path: &Path) -> Result<FileDigest> {
    let mut file = fs::File::open(path).map_err(VmImageError::io("open", path))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file
            .read(&mut buffer)
            .map_err(VmImageError::io("read", path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        size += n as u64;
    }
    Ok(FileDigest {
        size,
        sha256: hex::encode(hasher.finalize()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> ImageManifest {
        ImageManifest {
            kind: ImageKindName::Initramfs,
            kernel: KERNEL_FILE.into(),
            initrd: INITRD_FILE.into(),
            disk: None,
            disk_format: None,
            cmdline: "console=ttyS0 panic=-1 vessel.hostname=old".into(),
            kernel_version: "6.1.0-56-cloud-amd64".into(),
            files: BTreeMap::new(),
        }
    }

    #[test]
    fn cmdline_replaces_console_and_hostname() {
        let line = manifest()
            .cmdline_for("web-1", GuestConsole::Virtio)
            .expect("valid host name");
        assert_eq!(line, "console=hvc0 panic=-1 vessel.hostname=web-1");
    }

    #[test]
    fn cmdline_refuses_bad_hostnames() {
        for bad in ["", "a b", "-a", "a..b", "x=1 init=/bin/sh"] {
            assert!(
                manifest().cmdline_for(bad, GuestConsole::Serial).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn manifest_json_uses_the_documented_keys() {
        let value = serde_json::to_value(manifest()).expect("serialise");
        for key in [
            "kind",
            "kernel",
            "initrd",
            "disk",
            "disk_format",
            "cmdline",
            "kernel_version",
            "files",
        ] {
            assert!(value.get(key).is_some(), "{key}");
        }
        assert_eq!(value["kind"], "initramfs");
    }
}
