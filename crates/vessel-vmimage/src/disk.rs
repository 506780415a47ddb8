//! Disk images: an ext4 file system made by `mkfs.ext4 -d` from a root directory plus the
//! Vessel init, optionally converted to qcow2.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::sys::stat::{utimensat, UtimensatFlags};
use nix::sys::time::TimeSpec;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Result, VmImageError};
use crate::guest::GuestFile;
use crate::tools::{CP, MKFS_EXT4, QEMU_IMG};

/// How a disk image is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskFormat {
    /// A plain ext4 file system image (`disk.raw`).
    Raw,
    /// The same converted with `qemu-img` (`disk.qcow2`): sparse, snapshot-friendly.
    Qcow2,
}

impl DiskFormat {
    /// The file name of a disk in this format inside an image directory.
    pub fn file_name(self) -> &'static str {
        match self {
            DiskFormat::Raw => "disk.raw",
            DiskFormat::Qcow2 => "disk.qcow2",
        }
    }

    /// The name QEMU uses for the format (`-drive format=...`).
    pub fn qemu_name(self) -> &'static str {
        match self {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
        }
    }
}

/// Smallest disk accepted: ext4's own metadata and journal need a few MiB.
pub const MIN_DISK_SIZE: u64 = 16 << 20;

/// Timestamp given to Vessel's files and to mke2fs (`E2FSPROGS_FAKE_TIME`), for repeatable
/// builds; not 0, which mke2fs takes as "now".
const FIXED_TIME: i64 = 1;

/// Builds `<out_dir>/disk.{raw,qcow2}` from `rootfs` plus `files`; returns its path.
pub(crate) fn build_disk(
    rootfs: &Path,
    size: u64,
    format: DiskFormat,
    files: &[GuestFile],
    out_dir: &Path,
) -> Result<PathBuf> {
    if !rootfs.is_dir() {
        return Err(VmImageError::RootfsMissing {
            path: rootfs.to_path_buf(),
        });
    }
    let staging = out_dir.join(".rootfs");
    let result = stage_and_format(rootfs, size, format, files, out_dir, &staging);
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(VmImageError::io("remove", &staging))?;
    }
    result
}

fn stage_and_format(
    rootfs: &Path,
    size: u64,
    format: DiskFormat,
    files: &[GuestFile],
    out_dir: &Path,
    staging: &Path,
) -> Result<PathBuf> {
    fs::create_dir(staging).map_err(VmImageError::io("create", staging))?;
    let mut source = rootfs.as_os_str().to_owned();
    source.push("/.");
    CP.run(
        ["-a".as_ref(), source.as_os_str(), staging.as_os_str()],
        None,
    )?;
    for file in files {
        place_file(staging, file)?;
    }
    for (dir, mode) in [
        ("proc", 0o555),
        ("sys", 0o555),
        ("dev", 0o755),
        ("run", 0o755),
        ("tmp", 0o1777),
    ] {
        let path = staging.join(dir);
        if !path.exists() {
            fs::create_dir(&path).map_err(VmImageError::io("create", &path))?;
            fs::set_permissions(&path, fs::Permissions::from_mode(mode))
                .map_err(VmImageError::io("chmod", &path))?;
            set_fixed_time(&path)?;
        }
    }
    set_fixed_time(staging)?;

    let (content_bytes, tree_digest) = measure_tree(staging)?;
    // ext4 metadata, journal and block rounding: ask for a quarter more than the files, plus 8 MiB.
    let minimum = (content_bytes + content_bytes / 4 + (8 << 20)).max(MIN_DISK_SIZE);
    if size < minimum {
        return Err(VmImageError::DiskTooSmall { size, minimum });
    }

    let raw = out_dir.join(DiskFormat::Raw.file_name());
    let file = fs::File::create(&raw).map_err(VmImageError::io("create", &raw))?;
    file.set_len(size)
        .map_err(VmImageError::io("resize", &raw))?;
    drop(file);
    let uuid = uuid_from(&tree_digest);
    let mut mkfs = MKFS_EXT4.command()?;
    mkfs.env("E2FSPROGS_FAKE_TIME", FIXED_TIME.to_string())
        .args(["-F", "-q", "-L", "vessel-root", "-U", &uuid])
        .arg("-E")
        .arg(format!("root_owner=0:0,hash_seed={uuid}"))
        .arg("-d")
        .arg(staging)
        .arg(&raw);
    crate::tools::run_command(MKFS_EXT4, &mut mkfs)?;
    match format {
        DiskFormat::Raw => Ok(raw),
        DiskFormat::Qcow2 => {
            let qcow2 = out_dir.join(DiskFormat::Qcow2.file_name());
            QEMU_IMG.run(
                [
                    "convert".as_ref(),
                    "-f".as_ref(),
                    "raw".as_ref(),
                    "-O".as_ref(),
                    "qcow2".as_ref(),
                    raw.as_os_str(),
                    qcow2.as_os_str(),
                ],
                None,
            )?;
            fs::remove_file(&raw).map_err(VmImageError::io("remove", &raw))?;
            Ok(qcow2)
        }
    }
}

/// Writes a Vessel file into the staged root, replacing whatever the root had there.
fn place_file(root: &Path, file: &GuestFile) -> Result<()> {
    let path = root.join(&file.path);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(VmImageError::io("create", parent))?;
    }
    if path.symlink_metadata().is_ok() {
        fs::remove_file(&path).map_err(VmImageError::io("replace", &path))?;
    }
    fs::write(&path, &file.data).map_err(VmImageError::io("write", &path))?;
    fs::set_permissions(&path, fs::Permissions::from_mode(file.mode))
        .map_err(VmImageError::io("chmod", &path))?;
    set_fixed_time(&path)?;
    let mut dir = path.parent();
    while let Some(d) = dir.filter(|d| d.starts_with(root) && *d != root) {
        set_fixed_time(d)?;
        dir = d.parent();
    }
    Ok(())
}

fn set_fixed_time(path: &Path) -> Result<()> {
    let time = TimeSpec::new(FIXED_TIME, 0);
    utimensat(None, path, &time, &time, UtimensatFlags::NoFollowSymlink).map_err(|errno| {
        VmImageError::Io {
            action: "set the time of",
            path: path.to_path_buf(),
            source: errno.into(),
        }
    })
}

/// Total size of the regular files under `root`, and a digest of its listing (paths, kinds,
/// modes and sizes) from which the file system's UUID is derived.
fn measure_tree(root: &Path) -> Result<(u64, [u8; 32])> {
    let mut total = 0u64;
    let mut listing = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = fs::read_dir(&dir).map_err(VmImageError::io("read", &dir))?;
        for entry in entries {
            let entry = entry.map_err(VmImageError::io("read", &dir))?;
            let path = entry.path();
            let meta = path
                .symlink_metadata()
                .map_err(VmImageError::io("stat", &path))?;
            if meta.is_dir() {
                stack.push(path.clone());
            } else if meta.is_file() {
                total += meta.len();
            }
            let relative = path.strip_prefix(root).unwrap_or(&path);
            listing.push(format!(
                "{} {:o} {}",
                relative.display(),
                meta.permissions().mode(),
                meta.len()
            ));
        }
    }
    listing.sort();
    let mut hasher = Sha256::new();
    for line in &listing {
        hasher.update(line.as_bytes());
        hasher.update(b"\n");
    }
    Ok((total, hasher.finalize().into()))
}

/// A version-4-shaped UUID made from a digest, so equal trees give equal file systems.
fn uuid_from(digest: &[u8; 32]) -> String {
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest[..16]);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_has_the_right_shape() {
        let uuid = uuid_from(&[0xff; 32]);
        assert_eq!(uuid, "ffffffff-ffff-4fff-bfff-ffffffffffff");
    }
}
