//! Bootable virtual-machine images for Vessel.
//!
//! [`build_vm_image`] writes a directory with `vmlinuz` (Debian's cloud kernel, fetched
//! without installing it on the host), `initrd.img` (busybox, the virtio modules and the
//! Vessel init), optionally `disk.qcow2`/`disk.raw` (ext4 root), and `image.json`. The image's
//! fingerprint is the sha256 of `image.json`, which records every file's digest.
//!
//! The guest's behaviour on its console (the `VESSEL-*` lines, host name, DHCP, the agent
//! hook, power-off) is a contract described in `docs/vm-images.md`; its constants live in
//! [`guest`]. Building is blocking work (downloads, compression, mkfs): call it from a
//! blocking task.

mod cpio;
mod disk;
mod error;
pub mod guest;
mod initramfs;
mod kernel;
mod manifest;
mod modules;
mod tools;

use std::fs;
use std::path::{Path, PathBuf};

pub use disk::{DiskFormat, MIN_DISK_SIZE};
pub use error::{Result, VmImageError};
pub use guest::busybox_rootfs;
pub use kernel::{
    current_cloud_kernel_package, fetch_debian_cloud_kernel, Kernel, KernelSource,
    CLOUD_KERNEL_METAPACKAGE,
};
pub use manifest::{
    FileDigest, GuestConsole, ImageKindName, ImageManifest, VmImage, INITRD_FILE, KERNEL_FILE,
    MANIFEST_FILE,
};
pub use modules::{OPTIONAL_MODULES, REQUIRED_MODULES};

/// Where Debian's busybox-static installs busybox.
pub const DEFAULT_BUSYBOX: &str = "/bin/busybox";

/// Kernel parameters every image boots with: a panicking guest reboots at once, which
/// QEMU's `-no-reboot` turns into an exit the VM driver sees; and the kernel does not check
/// its IO-APIC timer at boot (`no_timer_check`): under TCG on a busy host the check's
/// timed ticks come late and the kernel panics ("IO-APIC + timer doesn't work"), seen in
/// this project's test runs; the check is for broken hardware.
const BASE_CMDLINE: &str = "console=ttyS0 panic=-1 no_timer_check";

/// The kind of image to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmImageKind {
    /// The guest runs entirely from the initramfs (nothing persists).
    Initramfs,
    /// An ext4 root file system on the first virtio disk (`/dev/vda`), made from a directory.
    Disk {
        /// Directory holding the guest's root file system (e.g. from [`busybox_rootfs`]).
        rootfs_dir: PathBuf,
        /// Size of the disk in bytes (at least [`MIN_DISK_SIZE`] and room for the files).
        size: u64,
        /// How the disk is stored.
        format: DiskFormat,
    },
}

/// What to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmImageSpec {
    /// The guest kernel.
    pub kernel: KernelSource,
    /// Initramfs-only or disk image.
    pub kind: VmImageKind,
    /// A statically linked busybox (Debian's busybox-static).
    pub busybox: PathBuf,
    /// A guest agent to install as [`guest::AGENT_GUEST_PATH`], if any.
    pub agent: Option<PathBuf>,
}

impl VmImageSpec {
    /// A spec with the default busybox and no agent.
    pub fn new(kernel: KernelSource, kind: VmImageKind) -> VmImageSpec {
        VmImageSpec {
            kernel,
            kind,
            busybox: PathBuf::from(DEFAULT_BUSYBOX),
            agent: None,
        }
    }
}

/// Builds the image described by `spec` into `out_dir` (created if missing; must be empty).
/// On failure what was written into `out_dir` is removed again.
pub fn build_vm_image(spec: &VmImageSpec, out_dir: &Path) -> Result<VmImage> {
    prepare_out_dir(out_dir)?;
    let result = build_into(spec, out_dir);
    if result.is_err() {
        clear_dir(out_dir);
    }
    result
}

fn build_into(spec: &VmImageSpec, out_dir: &Path) -> Result<VmImage> {
    let started = std::time::Instant::now();
    let kernel = spec.kernel.resolve()?;
    let busybox = guest::load_busybox(&spec.busybox)?;
    let agent = match &spec.agent {
        Some(path) => Some(fs::read(path).map_err(VmImageError::io("read", path))?),
        None => None,
    };
    let files = guest::vessel_files(&busybox, agent);

    let initrd = initramfs::build_initramfs(&kernel, &busybox, &files)?;
    let initrd_path = out_dir.join(INITRD_FILE);
    fs::write(&initrd_path, initrd).map_err(VmImageError::io("write", &initrd_path))?;
    let kernel_path = out_dir.join(KERNEL_FILE);
    fs::copy(&kernel.vmlinuz, &kernel_path)
        .map_err(VmImageError::io("copy the kernel to", &kernel_path))?;

    let (kind, disk, cmdline) = match &spec.kind {
        VmImageKind::Initramfs => (ImageKindName::Initramfs, None, BASE_CMDLINE.to_string()),
        VmImageKind::Disk {
            rootfs_dir,
            size,
            format,
        } => {
            let path = disk::build_disk(rootfs_dir, *size, *format, &files, out_dir)?;
            let cmdline = format!("{BASE_CMDLINE} root=/dev/vda rootfstype=ext4 rw");
            (ImageKindName::Disk, Some((path, *format)), cmdline)
        }
    };

    let mut digests = std::collections::BTreeMap::new();
    let mut names = vec![KERNEL_FILE.to_string(), INITRD_FILE.to_string()];
    if let Some((path, _)) = &disk {
        names.push(file_name(path));
    }
    for name in names {
        let digest = manifest::file_digest(&out_dir.join(&name))?;
        digests.insert(name, digest);
    }
    let image = manifest::write_manifest(
        out_dir,
        ImageManifest {
            kind,
            kernel: KERNEL_FILE.into(),
            initrd: INITRD_FILE.into(),
            disk: disk.as_ref().map(|(path, _)| file_name(path)),
            disk_format: disk.map(|(_, format)| format),
            cmdline,
            kernel_version: kernel.version,
            files: digests,
        },
    )?;
    tracing::info!(
        dir = %out_dir.display(),
        fingerprint = %image.fingerprint,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "vm image built"
    );
    Ok(image)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn prepare_out_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(VmImageError::io("create", dir))?;
    let mut entries = fs::read_dir(dir).map_err(VmImageError::io("read", dir))?;
    if entries.next().is_some() {
        return Err(VmImageError::OutputNotEmpty {
            path: dir.to_path_buf(),
        });
    }
    Ok(())
}

/// Best-effort removal of what a failed build left in its (previously empty) directory.
fn clear_dir(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let removed = if path.is_dir() && !path.is_symlink() {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        if let Err(error) = removed {
            tracing::warn!(path = %path.display(), %error, "cannot remove a partial image file");
        }
    }
}
