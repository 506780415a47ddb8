//! The initramfs: busybox with its applets, the guest's virtio/vsock/ext4 modules, and the
//! Vessel init. The same initramfs boots on its own or mounts a disk given by `root=`.

use std::fs;

use crate::cpio::{CpioArchive, EntryKind};
use crate::error::{Result, VmImageError};
use crate::guest::{base_etc_files, Busybox, GuestFile, GUEST_DIR, INITRAMFS_MARKER, MODULES_LIST};
use crate::kernel::Kernel;
use crate::modules::{guest_modules, read_module};

/// Modification time of every initramfs entry, so equal inputs give equal archives.
pub(crate) const FIXED_MTIME: u32 = 0;

/// Builds the gzip-compressed newc initramfs for `kernel` holding `files`.
pub(crate) fn build_initramfs(
    kernel: &Kernel,
    busybox: &Busybox,
    files: &[GuestFile],
) -> Result<Vec<u8>> {
    let mut archive = CpioArchive::default();
    for (dir, mode) in [
        ("dev", 0o755),
        ("proc", 0o555),
        ("sys", 0o555),
        ("run", 0o755),
        ("tmp", 0o1777),
        ("root", 0o700),
        ("newroot", 0o755),
        ("etc", 0o755),
    ] {
        archive.dir(dir, mode);
    }
    // The kernel opens /dev/console for the init before devtmpfs is mounted.
    archive.add(
        "dev/console",
        EntryKind::CharDevice { major: 5, minor: 1 },
        0o600,
    );
    archive.add(
        "dev/null",
        EntryKind::CharDevice { major: 1, minor: 3 },
        0o666,
    );
    for (path, data) in base_etc_files() {
        archive.file(path, data.as_bytes().to_vec(), 0o644);
    }
    for file in files {
        archive.file(&file.path, file.data.clone(), file.mode);
    }
    let busybox_target = format!("/{GUEST_DIR}/busybox");
    archive.symlink("bin/busybox", &busybox_target);
    for applet in &busybox.applets {
        if !archive.contains(applet) {
            archive.symlink(applet, &busybox_target);
        }
    }
    archive.file(INITRAMFS_MARKER, Vec::new(), 0o644);

    let modules = guest_modules(kernel)?;
    let modules_root = format!("lib/modules/{}", kernel.version);
    let mut load_list = String::new();
    for module in &modules.files {
        archive.file(
            &format!("{modules_root}/{}", module.relative),
            read_module(&module.source)?,
            0o644,
        );
        load_list.push_str(&module.relative);
        load_list.push('\n');
    }
    tracing::debug!(kernel = %kernel.version, modules = modules.files.len(), "initramfs modules");
    archive.file(
        &format!("{modules_root}/modules.dep"),
        modules.modules_dep.into_bytes(),
        0o644,
    );
    let builtin_path = kernel.modules_dir.join("modules.builtin");
    let builtin = fs::read(&builtin_path).map_err(VmImageError::io("read", &builtin_path))?;
    archive.file(&format!("{modules_root}/modules.builtin"), builtin, 0o644);
    archive.file(MODULES_LIST, load_list.into_bytes(), 0o644);

    archive
        .to_gzip(FIXED_MTIME)
        .map_err(VmImageError::io("compress", "initrd.img"))
}
