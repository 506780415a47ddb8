//! Root disks: an instance's writable layer on a file system of its own size, so that what a
//! container writes is bounded by it and never fills the host's file system.
//!
//! A disk is mounted at one place in the instance's directory, whatever it is, and holds the
//! overlay's `upper` and `work` directories. It is an ext4 image file (made by the daemon) or
//! a directory that has a size of its own (a btrfs subvolume with a qgroup limit), bound
//! there `nosuid,nodev`. Mounting an image attaches it to a loop
//! device with `LO_FLAGS_AUTOCLEAR` and mounts that `nosuid,nodev`: the kernel releases the
//! loop device by itself once the file system is unmounted, or when the process that attached
//! it dies before mounting, so no exit path (a SIGKILLed monitor or daemon included) leaks
//! one. An image never gets a second loop device while one still backs it (two ext4 drivers
//! over one file would corrupt it): a device that still backs the image is mounted again,
//! which gives the same file system.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::idmap::{self, IdmapError};

/// What holds an instance's writable layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskSource {
    /// An ext4 image file, mounted through a loop device.
    Image(PathBuf),
    /// A directory with a size of its own (a btrfs subvolume with a qgroup limit), bound.
    Directory(PathBuf),
}

/// The disk holding an instance's writable layer, and where it is mounted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootDisk {
    /// What is mounted.
    pub source: DiskSource,
    /// Its mount point (the overlay's upper and work directories are inside).
    pub mount: PathBuf,
}

const LOOP_SET_CAPACITY: libc::c_ulong = 0x4C07;
const LOOP_GET_STATUS64: libc::c_ulong = 0x4C05;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
/// Bytes a directory disk keeps for overlayfs's own work, and the file that holds them.
///
/// Overlayfs makes its `work/work` directory anew at every mount. Under a full btrfs quota
/// that fails (EDQUOT), and the root then mounts read-only (or not at all below 256 KiB
/// free, measured): a container that filled its disk could never start writable again, not
/// even to delete files. So the disk holds this much in a file outside the layer, given back
/// (and committed) just before the overlay is mounted and taken again right after.
pub const RESERVE: u64 = 1 << 20;
/// The same for an ext4 image, which needs a block or two. A full image lets overlayfs
/// make its directory only if removing the old one frees a block; while the last mount's
/// overlay is still alive (detached, a file of it still open) the old directory's block
/// stays taken, and the root mounted read-only (ENOSPC, seen in a full test run).
pub const IMAGE_RESERVE: u64 = 64 << 10;
const RESERVE_FILE: &str = ".vessel-reserve";
/// `_IOW('f', 16, __u64)`: grow a mounted ext4 file system to a number of blocks.
const EXT4_IOC_RESIZE_FS: libc::c_ulong = 0x4008_6610;

/// `struct loop_info64` of `<linux/loop.h>`.
#[repr(C)]
#[derive(Clone, Copy)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// `struct loop_config` of `<linux/loop.h>`.
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

fn sys(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> IdmapError {
    let path = path.to_path_buf();
    move |source| IdmapError::Sys { what, path, source }
}

fn open_rw(p: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(p)
}

/// The loop devices (`/dev/loopN`) whose backing file is `image` (by path and inode).
pub fn loop_devices_of(image: &Path) -> Vec<PathBuf> {
    let Ok(md) = std::fs::metadata(image) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in std::fs::read_dir("/sys/block")
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name();
        let Some(n) = name.to_str().filter(|n| n.starts_with("loop")) else {
            continue;
        };
        let Ok(backing) = std::fs::read(e.path().join("loop/backing_file")) else {
            continue;
        };
        let backing = backing.strip_suffix(b"\n").unwrap_or(&backing);
        if backing != image.as_os_str().as_bytes() {
            continue;
        }
        let dev = PathBuf::from(format!("/dev/{n}"));
        if let Ok(f) = File::open(&dev) {
            if status(&f).is_ok_and(|i| i.lo_inode == md.ino()) {
                out.push(dev);
            }
        }
    }
    out.sort();
    out
}

fn status(dev: &File) -> std::io::Result<LoopInfo64> {
    // SAFETY: LoopInfo64 is plain data for which all-zero is a valid value.
    let mut info: LoopInfo64 = unsafe { std::mem::zeroed() };
    // SAFETY: LOOP_GET_STATUS64 writes one struct loop_info64 into `info`, which lives for
    // the call.
    let rc = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_GET_STATUS64, &mut info) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(info)
}

/// A loop device backing `image`, held open: one that already does, or a new one that
/// releases itself once nothing holds it (autoclear).
fn attach(image: &Path) -> Result<(File, PathBuf), IdmapError> {
    let file = open_rw(image).map_err(sys("opening the root disk", image))?;
    for dev in loop_devices_of(image) {
        // Still backing the image once held open: it cannot be released under us now.
        if let Ok(f) = open_rw(&dev) {
            let ino = file.metadata().map(|m| m.ino()).unwrap_or(0);
            if status(&f).is_ok_and(|i| i.lo_inode == ino) {
                return Ok((f, dev));
            }
        }
    }
    let ctl_path = Path::new("/dev/loop-control");
    let ctl = open_rw(ctl_path).map_err(sys(
        "opening the loop device control (is the loop module loaded?)",
        ctl_path,
    ))?;
    let mut last = std::io::Error::from_raw_os_error(libc::EBUSY);
    // Another process may take the free device between asking and configuring it.
    for _ in 0..32 {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number or -1.
        let n = unsafe { libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE) };
        if n < 0 {
            return Err(sys("finding a free loop device", ctl_path)(
                std::io::Error::last_os_error(),
            ));
        }
        let dev = PathBuf::from(format!("/dev/loop{n}"));
        let f = open_rw(&dev).map_err(sys("opening a loop device", &dev))?;
        // SAFETY: LoopConfig is plain data for which all-zero is a valid value.
        let mut cfg: LoopConfig = unsafe { std::mem::zeroed() };
        cfg.fd = file.as_raw_fd() as u32;
        cfg.info.lo_flags = LO_FLAGS_AUTOCLEAR;
        let name = image.as_os_str().as_bytes();
        let len = name.len().min(cfg.info.lo_file_name.len() - 1);
        cfg.info.lo_file_name[..len].copy_from_slice(&name[..len]);
        // SAFETY: LOOP_CONFIGURE reads one struct loop_config, which lives for the call; the
        // descriptor it names stays open until the call returns (the kernel takes its own
        // reference).
        let rc = unsafe { libc::ioctl(f.as_raw_fd(), LOOP_CONFIGURE, &cfg) };
        if rc == 0 {
            return Ok((f, dev));
        }
        last = std::io::Error::last_os_error();
        if last.raw_os_error() != Some(libc::EBUSY) {
            break;
        }
    }
    Err(sys("attaching the root disk to a loop device", image)(last))
}

impl RootDisk {
    /// Whether the disk is mounted at its mount point.
    pub fn is_mounted(&self) -> bool {
        crate::is_mountpoint(&self.mount)
    }

    /// Mounts the disk (`nosuid,nodev`); what an earlier run left mounted there is detached
    /// first. An image's loop device goes with the last unmount of its file system.
    pub fn mount(&self) -> Result<(), IdmapError> {
        use nix::mount::MsFlags;
        idmap::unmount_all(&self.mount)?;
        let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
        match &self.source {
            DiskSource::Image(image) => {
                let (dev, path) = attach(image)?;
                let mounted = nix::mount::mount(
                    Some(path.as_path()),
                    &self.mount,
                    Some("ext4"),
                    flags,
                    None::<&str>,
                );
                // The mount holds the device now; had it failed, closing it releases it.
                drop(dev);
                mounted.map_err(|e| IdmapError::Sys {
                    what: "mounting the root disk",
                    path: image.clone(),
                    source: e.into(),
                })
            }
            DiskSource::Directory(dir) => {
                let none = None::<&str>;
                nix::mount::mount(
                    Some(dir.as_path()),
                    &self.mount,
                    none,
                    MsFlags::MS_BIND,
                    none,
                )
                .map_err(|e| IdmapError::Sys {
                    what: "binding the root disk",
                    path: dir.clone(),
                    source: e.into(),
                })?;
                let remount = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | flags;
                nix::mount::mount(none, &self.mount, none, remount, none).map_err(|e| {
                    let _ = idmap::unmount_all(&self.mount);
                    IdmapError::Sys {
                        what: "making the root disk nosuid,nodev",
                        path: dir.clone(),
                        source: e.into(),
                    }
                })
            }
        }
    }

    /// Bytes this disk keeps for overlayfs (see [`RESERVE`], [`IMAGE_RESERVE`]).
    pub fn reserve(&self) -> u64 {
        match self.source {
            DiskSource::Directory(_) => RESERVE,
            DiskSource::Image(_) => IMAGE_RESERVE,
        }
    }

    /// Gives the disk's reserve back, committed, so that overlayfs finds room for its work
    /// directory (see [`RESERVE`]).
    pub fn release_reserve(&self) -> Result<(), IdmapError> {
        let p = self.mount.join(RESERVE_FILE);
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(sys("releasing the root disk's reserve", &p)(e)),
        }
        let dir = File::open(&self.mount).map_err(sys("opening the root disk", &self.mount))?;
        // SAFETY: syncfs takes a descriptor that stays open for the call.
        if unsafe { libc::syncfs(dir.as_raw_fd()) } != 0 {
            return Err(sys("committing the root disk", &self.mount)(
                std::io::Error::last_os_error(),
            ));
        }
        Ok(())
    }

    /// Takes the disk's reserve again (a disk that cannot hold it goes without).
    pub fn keep_reserve(&self) -> Result<(), IdmapError> {
        let p = self.mount.join(RESERVE_FILE);
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(&p)
            .map_err(sys("making the root disk's reserve", &p))?;
        // As much of it as the disk holds: the mount just took a block or two of the
        // reserve given back, which a full disk may not have again (and half a reserve
        // still lets the next mount make its directories).
        let mut size = self.reserve();
        loop {
            match nix::fcntl::fallocate(
                f.as_raw_fd(),
                nix::fcntl::FallocateFlags::empty(),
                0,
                size as libc::off_t,
            ) {
                Ok(()) => return Ok(()),
                Err(nix::Error::ENOSPC) | Err(nix::Error::EDQUOT) if size > 4096 => size /= 2,
                Err(e) => {
                    drop(std::fs::remove_file(&p));
                    return Err(IdmapError::Sys {
                        what: "making the root disk's reserve",
                        path: p.clone(),
                        source: e.into(),
                    });
                }
            }
        }
    }

    /// Unmounts the disk, which releases an image's loop device once nothing else holds the
    /// file system; safe to call when it is not mounted.
    pub fn unmount(&self) -> Result<(), IdmapError> {
        idmap::unmount_all(&self.mount)
    }

    /// Grows a mounted image to `size` bytes: the file, the loop device's capacity, then the
    /// file system (ext4 grows online). Without `CAP_SYS_RESOURCE` nothing is changed and
    /// the error is `EPERM`.
    pub fn grow_online(&self, size: u64) -> Result<(), IdmapError> {
        let DiskSource::Image(image) = &self.source else {
            return Err(sys("only an image grows online", &self.mount)(
                std::io::ErrorKind::Unsupported.into(),
            ));
        };
        if !can_grow_online() {
            return Err(sys(
                "growing a mounted root disk needs CAP_SYS_RESOURCE",
                &self.mount,
            )(std::io::Error::from_raw_os_error(
                libc::EPERM,
            )));
        }
        // Held open, the mount stays what it is for the whole resize.
        let dir = File::open(&self.mount).map_err(sys("opening the root disk", &self.mount))?;
        let md = dir
            .metadata()
            .map_err(sys("reading the root disk", &self.mount))?;
        let parent = self.mount.parent().unwrap_or(Path::new("/"));
        let parent_dev = std::fs::metadata(parent).map(|m| m.dev()).unwrap_or(0);
        if md.dev() == parent_dev {
            return Err(sys("the root disk is not mounted", &self.mount)(
                std::io::ErrorKind::NotFound.into(),
            ));
        }
        let (major, minor) = (libc::major(md.dev()), libc::minor(md.dev()));
        let sysfs = PathBuf::from(format!("/sys/dev/block/{major}:{minor}"));
        let backing = std::fs::read(sysfs.join("loop/backing_file"))
            .map_err(sys("finding the root disk's loop device", &sysfs))?;
        let backing = backing.strip_suffix(b"\n").unwrap_or(&backing);
        if backing != image.as_os_str().as_bytes() {
            return Err(sys(
                "the root disk's mount is backed by another file",
                &self.mount,
            )(std::io::ErrorKind::InvalidData.into()));
        }
        let name = std::fs::read_link(&sysfs)
            .ok()
            .and_then(|l| l.file_name().map(|n| n.to_owned()))
            .ok_or_else(|| {
                sys("finding the root disk's loop device", &sysfs)(
                    std::io::ErrorKind::NotFound.into(),
                )
            })?;
        let dev_path = Path::new("/dev").join(name);
        let dev = open_rw(&dev_path).map_err(sys("opening a loop device", &dev_path))?;
        let st = nix::sys::statvfs::fstatvfs(&dir).map_err(|e| IdmapError::Sys {
            what: "reading the root disk's block size",
            path: self.mount.clone(),
            source: e.into(),
        })?;
        let block = st.block_size().max(1);
        let file = open_rw(image).map_err(sys("opening the root disk", image))?;
        let current = file
            .metadata()
            .map_err(sys("reading the root disk", image))?
            .len();
        if size > current {
            file.set_len(size)
                .map_err(sys("growing the root disk's image", image))?;
        }
        // SAFETY: LOOP_SET_CAPACITY takes no argument.
        if unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_SET_CAPACITY, 0) } != 0 {
            return Err(sys("growing the loop device", &dev_path)(
                std::io::Error::last_os_error(),
            ));
        }
        let blocks: u64 = size / block;
        // SAFETY: EXT4_IOC_RESIZE_FS reads one u64 (the new block count), alive for the call.
        if unsafe { libc::ioctl(dir.as_raw_fd(), EXT4_IOC_RESIZE_FS, &blocks) } != 0 {
            return Err(sys("growing the root disk's file system", &self.mount)(
                std::io::Error::last_os_error(),
            ));
        }
        Ok(())
    }
}

/// Whether this process may grow a mounted ext4 file system (`CAP_SYS_RESOURCE`, which
/// `EXT4_IOC_RESIZE_FS` needs; a sandbox may withhold it even from root).
pub fn can_grow_online() -> bool {
    const CAP_SYS_RESOURCE: u32 = 24;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << CAP_SYS_RESOURCE) != 0)
}

/// Bytes the files of an unmounted ext4 image use, as `df` would count them once mounted
/// (the journal and inode tables not included), read from its superblock.
pub fn image_usage(image: &Path) -> std::io::Result<u64> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = File::open(image)?;
    let mut sb = [0u8; 1024];
    f.seek(SeekFrom::Start(1024))?;
    f.read_exact(&mut sb)?;
    let u32_at = |o: usize| u64::from(u32::from_le_bytes([sb[o], sb[o + 1], sb[o + 2], sb[o + 3]]));
    if u16::from_le_bytes([sb[0x38], sb[0x39]]) != 0xEF53 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not an ext4 file system",
        ));
    }
    let wide = u32_at(0x60) & 0x80 != 0; // INCOMPAT_64BIT
    let hi = |o: usize| if wide { u32_at(o) << 32 } else { 0 };
    let blocks = u32_at(0x04) | hi(0x150);
    let free = u32_at(0x0C) | hi(0x158);
    let overhead = u32_at(0x248);
    let block_size = 1024u64 << u32_at(0x18).min(16);
    Ok(blocks.saturating_sub(overhead).saturating_sub(free) * block_size)
}

/// Bytes the files of a mounted file system use, as `df` counts them.
pub fn mounted_usage(mount: &Path) -> std::io::Result<u64> {
    let st = nix::sys::statvfs::statvfs(mount)?;
    Ok((st.blocks() - st.blocks_free()) * st.fragment_size())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn tempdir() -> PathBuf {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let d =
            std::env::temp_dir().join(format!("vessel-disk-test-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// Needs root and mkfs.ext4: a 32 MiB disk is mounted, filled, grown online and
    /// unmounted, and its loop device goes with the mount.
    #[test]
    fn a_root_disk_bounds_writes_grows_and_leaves_no_loop_device() {
        assert!(nix::unistd::geteuid().is_root(), "this test needs root");
        let d = tempdir();
        let (image, mount) = (d.join("root.img"), d.join("disk"));
        std::fs::create_dir(&mount).unwrap();
        File::create(&image).unwrap().set_len(32 << 20).unwrap();
        let out = std::process::Command::new("mkfs.ext4")
            .args(["-q", "-F", "-m", "0"])
            .arg(&image)
            .output()
            .expect("mkfs.ext4 (e2fsprogs) is needed");
        assert!(out.status.success(), "{out:?}");
        let disk = RootDisk {
            source: DiskSource::Image(image.clone()),
            mount: mount.clone(),
        };
        disk.mount().unwrap();
        assert!(disk.is_mounted());
        assert_eq!(loop_devices_of(&image).len(), 1);
        // Mounting again (a leftover of an earlier run) keeps one device and one mount.
        disk.mount().unwrap();
        assert_eq!(loop_devices_of(&image).len(), 1);
        assert_eq!(idmap::mounts_under(&mount).len(), 1);
        let mut f = File::create(mount.join("big")).unwrap();
        let chunk = vec![7u8; 1 << 20];
        let err = (0..64)
            .find_map(|_| f.write_all(&chunk).and_then(|_| f.sync_all()).err())
            .expect("64 MiB fit into a 32 MiB disk");
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
        drop(f);
        std::fs::remove_file(mount.join("big")).unwrap();
        std::fs::write(mount.join("kept"), vec![1u8; 4 << 20]).unwrap();
        let before = nix::sys::statvfs::statvfs(&mount).unwrap();
        let grown = disk.grow_online(48 << 20);
        let after = nix::sys::statvfs::statvfs(&mount).unwrap();
        if can_grow_online() {
            grown.unwrap();
            assert!(
                (after.blocks() - before.blocks()) * after.fragment_size() >= 15 << 20,
                "grown by {} blocks",
                after.blocks() - before.blocks()
            );
        } else {
            // Without CAP_SYS_RESOURCE ext4 refuses, and the file system stays as it was.
            let e = grown.unwrap_err();
            let source = std::error::Error::source(&e).map(|s| s.to_string());
            assert!(source.is_some_and(|s| s.contains("not permitted")), "{e:?}");
            assert_eq!(after.blocks(), before.blocks());
        }
        let used = mounted_usage(&mount).unwrap();
        disk.unmount().unwrap();
        assert!(!disk.is_mounted());
        assert!(loop_devices_of(&image).is_empty(), "the loop device stayed");
        let stored = image_usage(&image).unwrap();
        assert!(
            stored.abs_diff(used) <= 64 << 10 && stored >= 4 << 20,
            "superblock says {stored}, df said {used}"
        );
        let len = if can_grow_online() {
            48 << 20
        } else {
            32 << 20
        };
        assert_eq!(std::fs::metadata(&image).unwrap().len(), len);
        // Unmounted, the image still mounts and holds its file.
        disk.mount().unwrap();
        assert_eq!(
            std::fs::metadata(mount.join("kept")).unwrap().len(),
            4 << 20
        );
        disk.unmount().unwrap();
        assert!(loop_devices_of(&image).is_empty(), "the loop device stayed");

        // A directory is bound nosuid,nodev.
        let sub = d.join("subvolume");
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(sub.join("f"), b"x").unwrap();
        let bound = RootDisk {
            source: DiskSource::Directory(sub),
            mount: mount.clone(),
        };
        bound.mount().unwrap();
        assert_eq!(std::fs::read(mount.join("f")).unwrap(), b"x");
        let flags = nix::sys::statvfs::statvfs(&mount).unwrap().flags();
        assert!(flags.contains(
            nix::sys::statvfs::FsFlags::ST_NOSUID | nix::sys::statvfs::FsFlags::ST_NODEV
        ));
        bound.unmount().unwrap();
        assert!(!bound.is_mounted());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
