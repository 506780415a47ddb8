//! A VM's files on the host and who reaches them. Each VM's QEMU (and its console log sink)
//! runs as a host uid of its own, the first id of the range recorded with the instance, so
//! what QEMU opens is that uid's alone: its run directory (0700, made by the engine), its
//! instance directory (0100: QEMU walks through it, nobody lists it), its root disk overlay
//! (0600). The image files QEMU reads (kernel, initramfs, the disk under the overlay, an
//! ISO) stay root's, under `images/` (0700): each is hard-linked into the instance directory,
//! the one path to it QEMU's uid has, so a VM reaches its own image's files and no other's.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use vessel_api::Instance;
use vessel_vm::{Disk, DiskFormat, Media, RunAs};

use super::vm::VmDriver;
use crate::error::{chain, Error, Result};

/// Prefix of the image files linked into a VM's instance directory.
const IMAGE_LINK_PREFIX: &str = "image-";

/// The host user a VM's QEMU and console log sink run as: the first id of the VM's own range,
/// as uid and gid (no entry in the host's user database needed), plus `kvm` for /dev/kvm.
pub fn qemu_user(inst: &Instance) -> Result<RunAs> {
    let m = inst.idmap.filter(|m| m.isolated).ok_or_else(|| {
        Error::internal(format!(
            "VM {} has no host id of its own yet; restart vesseld, which gives it one",
            inst.name
        ))
    })?;
    Ok(RunAs::ids(m.host_base, m.host_base))
}

fn io(what: &str, p: &Path) -> impl Fn(std::io::Error) -> Error {
    let what = format!("{what} {}", p.display());
    move |e| Error::internal(format!("{what}: {e}"))
}

impl VmDriver {
    /// Makes a VM's instance directory (again: at creation and at every start) mode 0100,
    /// owned by its QEMU's uid: QEMU walks through it to its root disk and image files, no
    /// other host user enters it, and nobody lists it.
    pub fn prepare(&self, inst: &Instance) -> Result<PathBuf> {
        let user = qemu_user(inst)?;
        let dir = self.instances_dir.join(&inst.name);
        std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
        std::os::unix::fs::chown(&dir, Some(user.uid), Some(user.gid))
            .map_err(io("securing", &dir))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o100))
            .map_err(io("securing", &dir))?;
        Ok(dir)
    }

    /// The instance's root disk: a copy-on-write overlay of the image's disk (`backing`, as
    /// linked into the instance directory, of the `format` its image records), made once. An overlay made before image files
    /// were linked names the disk under `images/`, which QEMU cannot reach: it is pointed at
    /// the link (the header only; the content is the same file).
    pub(super) fn root_disk(
        &self,
        inst_dir: &Path,
        (backing, format): (&Path, DiskFormat),
        media: Media,
    ) -> Result<Disk> {
        let err = |what: &'static str| {
            move |e: vessel_vm::VmError| Error::internal(format!("{what}: {}", chain(&e)))
        };
        let overlay = inst_dir.join("root.qcow2");
        if !overlay.is_file() {
            vessel_vm::create_overlay(backing, format, &overlay)
                .map_err(err("creating the root disk"))?;
        } else if vessel_vm::backing_file(&overlay)
            .map_err(err("reading the root disk"))?
            .as_deref()
            != Some(backing)
        {
            tracing::info!(overlay = %overlay.display(), backing = %backing.display(), "pointing a root disk at its image's linked disk");
            vessel_vm::rebase_overlay(&overlay, backing, format)
                .map_err(err("pointing the root disk at the image's disk"))?;
        } else if vessel_vm::backing_format(&overlay).ok().flatten() != Some(format) {
            // Made before overlays were told the image's format: they record what its
            // bytes looked like then (a raw disk may look like a qcow2 naming any file,
            // or like a format not taken here at all), which QEMU follows at every start.
            // The image's own is recorded, once (the header only).
            tracing::info!(overlay = %overlay.display(), "recording the image's format as a root disk's backing format");
            vessel_vm::rebase_overlay(&overlay, backing, format)
                .map_err(err("recording the root disk's backing format"))?;
        }
        Ok(Disk {
            path: overlay,
            format: DiskFormat::Qcow2,
            media,
            read_only: false,
            nbd_export: None,
            rbd: None,
        })
    }
}

/// A VM's root disk brought from elsewhere (a backup, an archive: `overlay`, in
/// `inst_dir`), made safe before any `qemu-img` or QEMU opens it: one that names an
/// external data file is refused, and its backing file, which names another host's path
/// (or any path its maker chose), is pointed at this instance's link of its image's disk
/// (`image_dir`) by its header alone (`qemu-img rebase -u` does not open the old one).
pub fn adopt_root_disk(overlay: &Path, inst_dir: &Path, image_dir: &Path) -> Result<()> {
    let bad = |e: vessel_vm::VmError| Error::invalid(format!("the disk brought: {}", chain(&e)));
    vessel_vm::refuse_external_data(overlay).map_err(bad)?;
    if vessel_vm::backing_file(overlay).map_err(bad)?.is_none() {
        return Ok(());
    }
    let (disk, format) = super::vm::image_disk_format(image_dir).ok_or_else(|| {
        Error::invalid("the disk brought has a backing file, and its image has no disk")
    })?;
    let link = link_image_file(inst_dir, &disk)?;
    vessel_vm::rebase_overlay(overlay, &link, super::vm::disk_format(format)).map_err(|e| {
        Error::internal(format!(
            "pointing the disk brought at its image's: {}",
            chain(&e)
        ))
    })
}

/// Gives a VM's instance directory `inst_dir` the image file `src` as `image-NAME`: a hard
/// link (no copy: every VM of an image shares its files, and linking costs a few system
/// calls per start), or a copy when the two directories are on different file systems. The
/// file is made 0644: what keeps other host users out is that its only paths lie under
/// `images/` (0700) and in instance directories only their VM's uid enters; with the kernel's
/// `fs.protected_hardlinks` (Debian's default) QEMU cannot link it anywhere else, as it may
/// not write it. A link left from another file of that name is replaced.
pub fn link_image_file(inst_dir: &Path, src: &Path) -> Result<PathBuf> {
    let name = src
        .file_name()
        .ok_or_else(|| Error::internal(format!("{} is not an image file", src.display())))?;
    let dst = inst_dir.join(format!("{IMAGE_LINK_PREFIX}{}", name.to_string_lossy()));
    let from = std::fs::metadata(src).map_err(|e| {
        Error::internal(format!(
            "the image's {}: {e}; the image is damaged: delete and import or build it again",
            src.display()
        ))
    })?;
    if from.mode() & 0o7777 != 0o644 {
        std::fs::set_permissions(src, std::fs::Permissions::from_mode(0o644))
            .map_err(io("making readable", src))?;
    }
    match std::fs::symlink_metadata(&dst) {
        Ok(to) if same_file(&to, &from) || copy_of(&to, &from) => return Ok(dst),
        Ok(_) => std::fs::remove_file(&dst).map_err(io("replacing", &dst))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("inspecting", &dst)(e)),
    }
    match std::fs::hard_link(src, &dst) {
        Ok(()) => Ok(dst),
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            tracing::warn!(image_file = %src.display(), bytes = from.len(), "images/ and instances/ are on different file systems: copying an image file for a VM (keep them on one to share it)");
            copy_image_file(src, &dst, &from)?;
            Ok(dst)
        }
        Err(e) => Err(io("linking", &dst)(e)),
    }
}

fn same_file(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    a.dev() == b.dev() && a.ino() == b.ino()
}

/// Whether `to` is a copy `copy_image_file` made of the file `from` describes.
fn copy_of(to: &std::fs::Metadata, from: &std::fs::Metadata) -> bool {
    to.is_file()
        && to.nlink() == 1
        && to.len() == from.len()
        && (to.mtime(), to.mtime_nsec()) == (from.mtime(), from.mtime_nsec())
}

/// Copies an image file (0644, with its modification time, so the copy is recognised).
fn copy_image_file(src: &Path, dst: &Path, from: &std::fs::Metadata) -> Result<()> {
    let tmp = dst.with_extension("copying");
    let copied = (|| {
        std::fs::copy(src, &tmp)?;
        let f = std::fs::File::options().write(true).open(&tmp)?;
        f.set_permissions(std::fs::Permissions::from_mode(0o644))?;
        f.set_modified(from.modified()?)?;
        std::fs::rename(&tmp, dst)
    })();
    copied.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io("copying the image file to", dst)(e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_files_are_linked_once_and_relinked_when_replaced() {
        let dir = std::env::temp_dir().join(format!("vessel-vm-files-{}", std::process::id()));
        let (images, inst) = (dir.join("images"), dir.join("inst"));
        std::fs::create_dir_all(&images).unwrap();
        std::fs::create_dir_all(&inst).unwrap();
        let src = images.join("vmlinuz");
        std::fs::write(&src, "kernel").unwrap();
        std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o600)).unwrap();
        let link = link_image_file(&inst, &src).unwrap();
        assert_eq!(link, inst.join("image-vmlinuz"));
        let (a, b) = (
            std::fs::metadata(&src).unwrap(),
            std::fs::metadata(&link).unwrap(),
        );
        assert!(same_file(&a, &b), "a hard link");
        assert_eq!(a.mode() & 0o7777, 0o644, "readable through the link");
        assert_eq!(link_image_file(&inst, &src).unwrap(), link, "kept");
        // Another file of that name (a rebuilt image): the link follows it.
        std::fs::remove_file(&src).unwrap();
        std::fs::write(&src, "other").unwrap();
        link_image_file(&inst, &src).unwrap();
        assert_eq!(std::fs::read_to_string(&link).unwrap(), "other");
        // A copy (what different file systems get) is recognised and kept.
        std::fs::remove_file(&link).unwrap();
        copy_image_file(&src, &link, &std::fs::metadata(&src).unwrap()).unwrap();
        let copy = std::fs::metadata(&link).unwrap();
        assert!(copy_of(&copy, &std::fs::metadata(&src).unwrap()));
        assert_eq!(link_image_file(&inst, &src).unwrap(), link);
        assert_eq!(std::fs::metadata(&link).unwrap().ino(), copy.ino());
        // A missing image file is named.
        let err = link_image_file(&inst, &images.join("initrd.img")).unwrap_err();
        assert!(err.message.contains("initrd.img"), "{}", err.message);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
