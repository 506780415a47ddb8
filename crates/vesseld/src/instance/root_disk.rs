//! Root disks: a container with `limits.disk` keeps its writable layer (the overlay's
//! `upper` and `work`) on a disk of that size, mounted at `<instance>/disk` under its root,
//! so that what it writes fails with "no space" inside instead of filling the host.
//!
//! Without `--storage` the disk is an ext4 image `<instance>/root.img` (sparse, 0600); with a
//! pool it is the pool's volume `NAME-root` (a btrfs subvolume with a qgroup limit, or an ext4
//! image in a dir pool; see `storage/roots.rs`). It is made when the instance is created,
//! mounted by whoever mounts the root (the monitor at start, the daemon for file work and
//! publish on a stopped instance), unmounted on every exit path (and by start-up
//! reconciliation), and removed with the instance. Instances without `limits.disk` keep
//! plain directories, as before.

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use vessel_api::{Instance, InstanceType};
use vessel_monitor::{DiskSource, RootDisk};

use super::InstanceService;
use crate::error::{chain, Error, Result};

/// Smallest root disk: an ext4 file system with its journal and a little room.
pub const MIN_DISK: u64 = 16 << 20;
/// Largest root disk accepted: 1 PiB, more than any host has.
pub const MAX_DISK: u64 = 1 << 50;

/// Where a container's writable layer lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootPlace {
    /// Plain `upper` and `work` directories in the instance's directory, on the daemon's
    /// file system (no `limits.disk`).
    Shared,
    /// A disk of its own, mounted at `<instance>/disk`.
    Disk(DiskSource),
}

/// Checks a root disk size (the message names the accepted range).
pub fn check_size(size: u64) -> Result<()> {
    if !(MIN_DISK..=MAX_DISK).contains(&size) {
        return Err(Error::invalid(format!(
            "invalid limit disk={size}: a root disk is 16 MiB ({MIN_DISK} bytes) to 1 PiB \
             ({MAX_DISK} bytes); leave it out for none"
        )));
    }
    Ok(())
}

fn io(what: &str, p: &Path) -> impl Fn(std::io::Error) -> Error {
    let what = format!("{what} {}", p.display());
    move |e| Error::internal(format!("{what}: {e}"))
}

/// Runs a tool of e2fsprogs; its stderr becomes the error. `ok` are the exit codes that
/// mean success.
fn e2fs(tool: &str, args: &[&std::ffi::OsStr], ok: &[i32]) -> Result<()> {
    let out = Command::new(tool)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            Error::internal(format!(
                "cannot run {tool}: {e}; install e2fsprogs (see scripts/debian-packages.txt)"
            ))
        })?;
    if !out.status.code().is_some_and(|c| ok.contains(&c)) {
        return Err(Error::internal(format!(
            "{tool} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Makes `image` an ext4 file system of `size` bytes (sparse: nothing but its metadata is
/// written) holding empty `upper` and `work` directories owned by `owner`; `create` makes
/// the file (which must not exist), else it is an existing empty one. The file is root's
/// alone (0600): a host user who could write it would hand the kernel a file system to
/// mount. `scratch` holds the template directory meanwhile.
pub fn format_image(
    image: &Path,
    size: u64,
    owner: u32,
    create: bool,
    scratch: &Path,
) -> Result<()> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(create)
        .mode(0o600)
        .open(image)
        .map_err(io("creating", image))?;
    let made = (|| {
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(io("securing", image))?;
        file.set_len(size).map_err(io("sizing", image))?;
        let template = scratch.join(".disk-template");
        let _ = std::fs::remove_dir_all(&template);
        std::fs::create_dir(&template).map_err(io("creating", &template))?;
        let made = make_layer_dirs(&template, owner).and_then(|()| {
            // The file is new and reads as zeros: nothing needs zeroing (lazy_*_init).
            e2fs(
                "mkfs.ext4",
                &[
                    "-q".as_ref(),
                    "-F".as_ref(),
                    "-m".as_ref(),
                    "0".as_ref(),
                    "-E".as_ref(),
                    "lazy_itable_init=1,lazy_journal_init=1".as_ref(),
                    "-d".as_ref(),
                    template.as_os_str(),
                    image.as_os_str(),
                ],
                &[0],
            )
        });
        let _ = std::fs::remove_dir_all(&template);
        made
    })();
    if made.is_err() && create {
        let _ = std::fs::remove_file(image);
    }
    made
}

/// Makes the overlay's `upper` (0755) and `work` directories in `dir`, owned by `owner`
/// (the container's root on the host).
pub fn make_layer_dirs(dir: &Path, owner: u32) -> Result<()> {
    for sub in ["upper", "work"] {
        let p = dir.join(sub);
        match std::fs::create_dir(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io("creating", &p)(e)),
        }
        std::os::unix::fs::chown(&p, Some(owner), Some(owner)).map_err(io("chowning", &p))?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))
            .map_err(io("securing", &p))?;
    }
    Ok(())
}

/// Grows an unmounted ext4 image to `size` bytes: the file, then its file system (checked
/// first, as resize2fs wants).
pub fn grow_offline(image: &Path, size: u64) -> Result<()> {
    if let Some(dev) = vessel_monitor::disk::loop_devices_of(image).first() {
        return Err(Error::conflict(format!(
            "the root disk is still in use through {}; try again once it is released",
            dev.display()
        )));
    }
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(image)
        .map_err(io("opening", image))?;
    if file.metadata().map_err(io("reading", image))?.len() < size {
        file.set_len(size).map_err(io("growing", image))?;
    }
    drop(file);
    // 0: clean, 1: errors fixed.
    e2fs(
        "e2fsck",
        &["-f".as_ref(), "-p".as_ref(), image.as_os_str()],
        &[0, 1],
    )?;
    e2fs("resize2fs", &["-p".as_ref(), image.as_os_str()], &[0])
}

/// Checks a change of a root disk from `old` to `new` bytes: never below what it holds
/// (`used`), an ext4 image never smaller at all (`shrinks` is false), growth within the
/// `free` bytes of `place`.
pub fn check_resize(
    name: &str,
    (old, new): (u64, u64),
    used: Option<u64>,
    shrinks: bool,
    (free, place): (u64, &str),
) -> Result<()> {
    if let Some(used) = used.filter(|u| new < *u) {
        return Err(Error::invalid(format!(
            "the root disk of {name} holds {used} bytes; it cannot shrink to {new} bytes: \
             remove files in it first, or give at least that much"
        )));
    }
    if new < old && !shrinks {
        let held = used.map_or(String::new(), |u| format!(", holding {u} bytes"));
        return Err(Error::invalid(format!(
            "the root disk of {name} is an ext4 image of {old} bytes{held}, and it only \
             grows: give more than {old} bytes (a btrfs pool's root disk can shrink)"
        )));
    }
    if new > old {
        crate::storage::check_fits(new - old, free, place).map_err(|_| {
            Error::invalid(format!(
                "growing the root disk of {name} by {} bytes is more than {place} has free \
                 ({free} bytes)",
                new - old
            ))
        })?;
    }
    Ok(())
}

/// What `info` says a root disk is.
fn kind(source: &DiskSource) -> &'static str {
    match source {
        DiskSource::Image(_) => "ext4 image",
        DiskSource::Directory(_) => "btrfs subvolume",
    }
}

/// Unmounts a root disk mounted for the daemon's own work when dropped.
pub struct DiskGuard(RootDisk);

impl DiskGuard {
    /// Mounts `disk` (blocking).
    pub fn mount(disk: RootDisk) -> Result<Self> {
        disk.mount().map_err(|e| {
            Error::internal(format!(
                "mounting the root disk: {} ({})",
                chain(&e),
                e.path().display()
            ))
        })?;
        Ok(Self(disk))
    }
}

impl Drop for DiskGuard {
    fn drop(&mut self) {
        if let Err(e) = self.0.unmount() {
            tracing::warn!(path = %e.path().display(), error = %e, "unmounting a root disk");
        }
    }
}

impl InstanceService {
    /// Where a container's writable layer lives.
    pub(crate) fn root_place(&self, inst: &Instance) -> Result<RootPlace> {
        if inst.instance_type != InstanceType::Container || inst.limits.disk.is_none() {
            return Ok(RootPlace::Shared);
        }
        Ok(RootPlace::Disk(match &inst.storage {
            None => DiskSource::Image(self.driver.root_image(&inst.name)),
            Some(pool) => self
                .storage
                .container_root(pool, &inst.name)?
                .ok_or_else(|| {
                    Error::internal(format!(
                        "the root disk of {} (volume {}-root) is missing from pool {pool:?}",
                        inst.name, inst.name
                    ))
                })?,
        }))
    }

    /// Checks a new container's root disk: a pool needs a size and must be able to hold it;
    /// without a pool the size must fit the file system of the instances' directory.
    pub(crate) fn root_disk_check(&self, req: &vessel_api::InstanceCreate) -> Result<()> {
        match (&req.storage, req.limits.disk) {
            (Some(pool), None) => Err(Error::invalid(format!(
                "--storage {pool} puts a container's root disk into a pool, which needs its \
                 size: add -l disk=SIZE (e.g. -l disk=2GiB)"
            ))),
            (Some(pool), Some(size)) => self.storage.container_root_check(pool, &req.name, size),
            (None, Some(size)) => crate::storage::check_fits(
                size,
                crate::storage::fs_available(&self.driver.instances_dir)?,
                "the file system of Vessel's instances",
            ),
            (None, None) => Ok(()),
        }
    }

    /// Makes a new container's root disk (blocking; inside the creating operation). A
    /// failed creation's rollback removes it with the instance's files and volumes.
    pub(crate) fn make_root_disk(&self, inst: &Instance) -> Result<()> {
        let Some(size) = inst.limits.disk else {
            return Ok(());
        };
        let owner = self.driver.shift(inst).unwrap_or(0);
        let dir = self.driver.dir(&inst.name);
        match &inst.storage {
            None => format_image(&self.driver.root_image(&inst.name), size, owner, true, &dir),
            Some(pool) => match self.storage.create_container_root(pool, &inst.name, size)? {
                DiskSource::Image(image) => format_image(&image, size, owner, false, &dir),
                DiskSource::Directory(sub) => make_layer_dirs(&sub, owner),
            },
        }
    }

    /// The writable layer of a stopped container for the daemon's own reading (publish):
    /// its `upper` directory, and the guard of its disk, mounted meanwhile (blocking).
    pub(crate) fn open_writable(&self, inst: &Instance) -> Result<(PathBuf, Option<DiskGuard>)> {
        match self.root_place(inst)? {
            RootPlace::Shared => Ok((self.driver.dir(&inst.name).join("upper"), None)),
            RootPlace::Disk(source) => {
                let mount = self.driver.disk_mount(&inst.name);
                let guard = DiskGuard::mount(RootDisk {
                    source,
                    mount: mount.clone(),
                })?;
                Ok((mount.join("upper"), Some(guard)))
            }
        }
    }

    /// Starts the operation that changes a container's root disk size (`limits.disk`).
    pub fn root_disk_resize(&self, name: &str, size: u64) -> Result<vessel_api::Operation> {
        resize_check(&self.get_stored(name)?, size)?;
        Ok(self.spawn_locked(
            format!("Resizing the root disk of {name}"),
            name,
            move |svc, inst, _op| async move { svc.root_disk_resize_locked(&inst, size).await },
        ))
    }

    /// Changes the root disk's size; the caller holds the instance's lock.
    pub(crate) async fn root_disk_resize_locked(&self, inst: &Instance, size: u64) -> Result<()> {
        resize_check(inst, size)?;
        let (svc, inst) = (self.clone(), inst.clone());
        tokio::task::spawn_blocking(move || svc.resize_locked(&inst, size))
            .await
            .map_err(|e| Error::internal(format!("resize task: {e}")))?
    }

    /// Changes the root disk's size; the caller holds the instance's lock (blocking).
    fn resize_locked(&self, inst: &Instance, size: u64) -> Result<()> {
        let name = &inst.name;
        let old = inst
            .limits
            .disk
            .ok_or_else(|| Error::invalid(format!("{name} has no root disk of its own")))?;
        if size == old {
            return Ok(());
        }
        let RootPlace::Disk(source) = self.root_place(inst)? else {
            return Err(Error::internal(format!("{name} has no root disk")));
        };
        let mount = self.driver.disk_mount(name);
        match &source {
            DiskSource::Image(image) => {
                let mounted = vessel_monitor::is_mountpoint(&mount);
                let used = if mounted {
                    vessel_monitor::disk::mounted_usage(&mount).ok()
                } else {
                    vessel_monitor::disk::image_usage(image).ok()
                };
                let dir = image.parent().unwrap_or(Path::new("/"));
                let free = crate::storage::fs_available(dir)?;
                let place = match &inst.storage {
                    Some(pool) => format!("pool {pool:?}"),
                    None => "the file system of Vessel's instances".into(),
                };
                check_resize(name, (old, size), used, false, (free, &place))?;
                if mounted {
                    if !vessel_monitor::disk::can_grow_online() {
                        return Err(Error::conflict(format!(
                            "growing the root disk of {name} while it runs needs \
                             CAP_SYS_RESOURCE, which vesseld does not have here: stop {name}, \
                             resize it, then start it"
                        )));
                    }
                    let disk = RootDisk {
                        source: source.clone(),
                        mount,
                    };
                    disk.grow_online(size).map_err(|e| {
                        Error::internal(format!(
                            "growing the root disk of {name}: {} ({})",
                            chain(&e),
                            e.path().display()
                        ))
                    })?;
                } else {
                    grow_offline(image, size)?;
                    // resize2fs clears the superblock's count of the file system's own
                    // blocks, which `info` reads while it is stopped; a mount records it.
                    drop(DiskGuard::mount(RootDisk {
                        source: source.clone(),
                        mount,
                    })?);
                }
                if let Some(pool) = &inst.storage {
                    self.storage.container_root_resize(pool, name, size)?;
                }
            }
            DiskSource::Directory(_) => {
                let pool = inst.storage.as_deref().unwrap_or("?");
                let (used, free) = self.storage.container_root_usage(pool, name)?;
                check_resize(
                    name,
                    (old, size),
                    Some(used),
                    true,
                    (free, &format!("pool {pool:?}")),
                )?;
                self.storage.container_root_resize(pool, name, size)?;
            }
        }
        let mut limits = inst.limits.clone();
        limits.disk = Some(size);
        self.store.instance_set_limits(name, &limits)?;
        tracing::info!(instance = %name, old, size, "resized the root disk");
        Ok(())
    }

    /// A container's root disk as `info` shows it: its size and use.
    pub(crate) fn root_disk_view(&self, inst: &Instance) -> Option<vessel_api::RootDisk> {
        let size = inst.limits.disk?;
        let RootPlace::Disk(source) = self.root_place(inst).ok()? else {
            return None;
        };
        let mount = self.driver.disk_mount(&inst.name);
        let used = match &source {
            DiskSource::Image(_) if vessel_monitor::is_mountpoint(&mount) => {
                vessel_monitor::disk::mounted_usage(&mount).ok()
            }
            DiskSource::Image(image) => vessel_monitor::disk::image_usage(image).ok(),
            DiskSource::Directory(_) => self
                .storage
                .container_root_usage(inst.storage.as_deref()?, &inst.name)
                .ok()
                .map(|(used, _)| used),
        };
        Some(vessel_api::RootDisk {
            size_bytes: size,
            used_bytes: used,
            kind: kind(&source).into(),
            pool: inst.storage.clone(),
        })
    }
}

/// Whether `inst` has a root disk of its own that may take `size`.
pub(crate) fn resize_check(inst: &Instance, size: u64) -> Result<()> {
    let name = &inst.name;
    if inst.instance_type == InstanceType::Vm {
        return Err(Error::invalid(format!(
            "{name} is a VM: its root disk is its image's disk (resize its volume when it \
             is in a pool: vessel storage volume update)"
        )));
    }
    if inst.limits.disk.is_none() {
        return Err(Error::invalid(format!(
            "{name} has no root disk of its own (it was created without limits.disk): \
             its writable layer lies on the daemon's file system; a size is given at \
             creation (vessel launch IMAGE NAME -l disk=SIZE)"
        )));
    }
    check_size(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resizes_keep_what_is_held_and_fit() {
        let fs = (1 << 30, "pool \"p\"");
        check_resize("c1", (64 << 20, 128 << 20), Some(1 << 20), false, fs).unwrap();
        check_resize("c1", (64 << 20, 32 << 20), Some(1 << 20), true, fs).unwrap();
        for (old_new, used, shrinks, free, want) in [
            (
                (64 << 20, 32 << 20),
                Some(40 << 20),
                true,
                1 << 30,
                "holds 41943040 bytes",
            ),
            (
                (64 << 20, 32 << 20),
                Some(40 << 20),
                false,
                1 << 30,
                "holds 41943040 bytes",
            ),
            (
                (64 << 20, 32 << 20),
                Some(1 << 20),
                false,
                1 << 30,
                "only grows",
            ),
            ((64 << 20, 32 << 20), None, false, 1 << 30, "only grows"),
            (
                (64 << 20, 2 << 30),
                None,
                false,
                1 << 30,
                "more than pool \"p\" has free",
            ),
        ] {
            let e = check_resize("c1", old_new, used, shrinks, (free, "pool \"p\"")).unwrap_err();
            assert!(e.message.contains(want), "{want:?} not in {e}");
        }
    }

    #[test]
    fn sizes_are_checked_with_the_range() {
        check_size(MIN_DISK).unwrap();
        check_size(2 << 30).unwrap();
        check_size(MAX_DISK).unwrap();
        for bad in [0, 1, MIN_DISK - 1, MAX_DISK + 1, u64::MAX] {
            let e = check_size(bad).unwrap_err();
            assert!(e.message.contains("16 MiB"), "{e}");
        }
    }

    /// Needs root and e2fsprogs: an image is sparse, root's alone, holds the layer
    /// directories owned by the container's root, and grows offline.
    #[test]
    fn images_are_sparse_private_and_grow() {
        use std::os::unix::fs::MetadataExt;
        assert!(nix::unistd::geteuid().is_root(), "this test needs root");
        let d = std::env::temp_dir().join(format!("vessel-root-disk-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let image = d.join("root.img");
        format_image(&image, 64 << 20, 1_000_000, true, &d).unwrap();
        let md = std::fs::metadata(&image).unwrap();
        assert_eq!(md.len(), 64 << 20);
        assert_eq!(md.mode() & 0o777, 0o600);
        assert!(
            md.blocks() * 512 < 8 << 20,
            "{} bytes allocated",
            md.blocks() * 512
        );
        assert!(!d.join(".disk-template").exists());
        let used = vessel_monitor::disk::image_usage(&image).unwrap();
        assert!(used < 1 << 20, "a new disk uses {used} bytes");
        // A second creation does not replace it.
        assert!(format_image(&image, 32 << 20, 0, true, &d).is_err());
        assert!(image.exists());
        grow_offline(&image, 96 << 20).unwrap();
        let mount = d.join("disk");
        std::fs::create_dir(&mount).unwrap();
        let disk = RootDisk {
            source: DiskSource::Image(image.clone()),
            mount: mount.clone(),
        };
        disk.mount().unwrap();
        let upper = std::fs::metadata(mount.join("upper")).unwrap();
        assert_eq!(
            (upper.uid(), upper.gid(), upper.mode() & 0o777),
            (1_000_000, 1_000_000, 0o755)
        );
        let st = nix::sys::statvfs::statvfs(&mount).unwrap();
        assert!(st.blocks() * st.fragment_size() > 80 << 20, "not grown");
        disk.unmount().unwrap();
        std::fs::remove_dir_all(&d).unwrap();
    }
}
