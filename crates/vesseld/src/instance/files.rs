//! File push and pull. Paths are resolved with `openat2(RESOLVE_IN_ROOT)` against the
//! instance's root, so a symlink inside the container can never lead outside it; owners are
//! translated between the container's ids and the host's shifted ids.

use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use vessel_api::FileInfo;

use super::InstanceService;
use crate::error::{Error, Result};

/// Largest file moved in one request.
pub const MAX_FILE: u64 = 1 << 30;

/// Opens `path` (relative to `root`, which acts as `/`) with `openat2(RESOLVE_IN_ROOT)`.
fn open_in_root(root: &OwnedFd, path: &Path, flags: i32, mode: u32) -> std::io::Result<OwnedFd> {
    let rel = path.strip_prefix("/").unwrap_or(path);
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let c = CString::new(rel.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: open_how is a plain C struct for which all-zero is a valid value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.mode = if flags & libc::O_CREAT != 0 {
        mode as u64
    } else {
        0
    };
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: openat2 reads the NUL-terminated path and the open_how struct, both alive for
    // the call; the size passed is that of the struct.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: openat2 returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Opens the file an `O_PATH` descriptor names, with `flags` (through its `/proc/self/fd`
/// link, which is that very inode whatever happened to the path since).
fn reopen(fd: &OwnedFd, flags: i32) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags & !libc::O_ACCMODE)
        .open(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

fn check_path(path: &str) -> Result<&Path> {
    let p = Path::new(path);
    if !p.is_absolute() || path.contains('\0') {
        return Err(Error::invalid(format!(
            "invalid path {path:?}: give an absolute path inside the instance, like /etc/hostname"
        )));
    }
    Ok(p)
}

/// An instance's root opened for file work. For a stopped instance the root is mounted for
/// the guard's life, under the instance's lock so that it cannot start meanwhile.
pub struct RootGuard {
    fd: OwnedFd,
    shift: u32,
    mounted: Option<std::path::PathBuf>,
    _lock: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for RootGuard {
    fn drop(&mut self) {
        if let Some(target) = &self.mounted {
            if let Err(e) = nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH) {
                tracing::warn!(path = %target.display(), error = %e, "unmounting a stopped instance's root");
            }
        }
    }
}

impl InstanceService {
    /// Opens the root of an instance, running or stopped.
    pub async fn open_root(&self, name: &str) -> Result<RootGuard> {
        use vessel_api::InstanceStatus as S;
        let inst = self.get_stored(name)?;
        if inst.instance_type == vessel_api::InstanceType::Vm {
            return Err(Error::invalid(format!(
                "{name} is a VM: its files live in the guest's own file system; use \
                 `vessel exec {name} -- cat FILE` (or a shared volume) instead"
            )));
        }
        let shift = self.driver.shift(&inst).unwrap_or(0);
        let target = self.driver.rootfs(name);
        let open = |p: &Path| {
            File::open(p)
                .map(OwnedFd::from)
                .map_err(|e| Error::internal(format!("opening the root of {name}: {e}")))
        };
        match inst.status {
            S::Running | S::Frozen => Ok(RootGuard {
                fd: open(&target)?,
                shift,
                mounted: None,
                _lock: None,
            }),
            S::Stopped | S::Error => {
                let lock = self.lock_for(name).lock_owned().await;
                // The state may have changed while waiting for the lock.
                let inst = self.get_stored(name)?;
                if !matches!(inst.status, S::Stopped | S::Error) {
                    return Err(Error::conflict(format!(
                        "instance {name} changed state to {}; try again",
                        inst.status.as_str()
                    )));
                }
                let image = self.images.get(&inst.image)?;
                let lowers = self
                    .images
                    .lower_layers(&image, self.driver.shift(&inst))
                    .await?;
                self.driver.prepare(&inst)?;
                let dir = self.driver.dir(name);
                let opts = vessel_monitor::Overlay {
                    lowers,
                    upper: dir.join("upper"),
                    work: dir.join("work"),
                    target: target.clone(),
                }
                .options();
                nix::mount::mount(
                    Some("overlay"),
                    &target,
                    Some("overlay"),
                    nix::mount::MsFlags::empty(),
                    Some(opts.as_str()),
                )
                .map_err(|e| Error::internal(format!("mounting the root of {name}: {e}")))?;
                let guard = RootGuard {
                    fd: open(&target).inspect_err(|_| {
                        let _ = nix::mount::umount2(&target, nix::mount::MntFlags::MNT_DETACH);
                    })?,
                    shift,
                    mounted: Some(target),
                    _lock: Some(lock),
                };
                Ok(guard)
            }
            s => Err(Error::conflict(format!(
                "instance {name} is {}; wait for it to settle",
                s.as_str()
            ))),
        }
    }

    /// Reads a regular file inside the instance.
    pub fn file_get(
        &self,
        root: &RootGuard,
        name: &str,
        path: &str,
    ) -> Result<(Vec<u8>, FileInfo)> {
        let p = check_path(path)?;
        let shift = root.shift;
        let root = &root.fd;
        // O_PATH first: opening a FIFO or a device for reading could block forever (and hold
        // the instance's lock) or act on the device; only a regular file is opened for real.
        let fd = open_in_root(root, p, libc::O_PATH, 0).map_err(|e| {
            let m = format!("cannot open {path} in {name}: {e}");
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::not_found(m)
            } else {
                Error::invalid(m)
            }
        })?;
        let md = File::from(fd.try_clone().map_err(|e| Error::internal(e.to_string()))?)
            .metadata()
            .map_err(|e| Error::internal(format!("stat {path}: {e}")))?;
        if !md.is_file() {
            return Err(Error::invalid(format!(
                "{path} in {name} is not a regular file"
            )));
        }
        let mut f = reopen(&fd, libc::O_RDONLY | libc::O_NOCTTY | libc::O_NONBLOCK)
            .map_err(|e| Error::internal(format!("opening {path}: {e}")))?;
        if md.len() > MAX_FILE {
            return Err(Error::invalid(format!(
                "{path} is {} bytes; files over {MAX_FILE} bytes cannot be pulled",
                md.len()
            )));
        }
        let mut data = Vec::with_capacity(md.len() as usize);
        // A running instance may grow the file meanwhile: never read past the bound.
        (&mut f)
            .take(MAX_FILE)
            .read_to_end(&mut data)
            .map_err(|e| Error::internal(format!("reading {path}: {e}")))?;
        let info = FileInfo {
            path: path.to_string(),
            size: data.len() as u64,
            mode: md.mode() & 0o7777,
            uid: md.uid().saturating_sub(shift),
            gid: md.gid().saturating_sub(shift),
        };
        Ok((data, info))
    }

    /// Writes a file inside the instance atomically (a temporary file, then a rename), owned
    /// by `uid`:`gid` as seen inside the instance.
    #[allow(clippy::too_many_arguments)]
    pub fn file_put(
        &self,
        root: &RootGuard,
        name: &str,
        path: &str,
        data: &[u8],
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<FileInfo> {
        let p = check_path(path)?;
        let base = p
            .file_name()
            .filter(|b| b.as_bytes() != b"..")
            .ok_or_else(|| Error::invalid(format!("{path:?} does not name a file")))?;
        if mode > 0o7777 {
            return Err(Error::invalid(format!(
                "invalid mode {mode:o}: use 0000 to 7777"
            )));
        }
        if uid >= super::driver::IDMAP_SIZE || gid >= super::driver::IDMAP_SIZE {
            return Err(Error::invalid(format!(
                "owner {uid}:{gid} is outside the instance's id range 0-{}",
                super::driver::IDMAP_SIZE - 1
            )));
        }
        let shift = root.shift;
        let root = &root.fd;
        let parent = p.parent().unwrap_or(Path::new("/"));
        let dir =
            open_in_root(root, parent, libc::O_RDONLY | libc::O_DIRECTORY, 0).map_err(|e| {
                Error::invalid(format!(
                    "cannot open directory {} in {name}: {e}; create it first",
                    parent.display()
                ))
            })?;
        let tmp_name = format!(".vessel-push-{}", uuid::Uuid::new_v4().simple());
        let tmp = CString::new(tmp_name).expect("no NUL in a uuid");
        let target = CString::new(base.as_bytes())
            .map_err(|_| Error::invalid("path contains a NUL byte"))?;
        // SAFETY: openat reads a NUL-terminated name alive for the call.
        let fd = unsafe {
            libc::openat(
                dir.as_raw_fd(),
                tmp.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                0o600,
            )
        };
        if fd < 0 {
            return Err(Error::internal(format!(
                "creating {path} in {name}: {}",
                std::io::Error::last_os_error()
            )));
        }
        // SAFETY: openat returned a new descriptor that nothing else owns.
        let mut f = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        let unlink_tmp = || {
            // SAFETY: unlinkat reads a NUL-terminated name alive for the call.
            unsafe { libc::unlinkat(dir.as_raw_fd(), tmp.as_ptr(), 0) };
        };
        let written = (|| -> std::io::Result<()> {
            f.write_all(data)?;
            nix::unistd::fchown(
                f.as_raw_fd(),
                Some(nix::unistd::Uid::from_raw(uid + shift)),
                Some(nix::unistd::Gid::from_raw(gid + shift)),
            )?;
            nix::sys::stat::fchmod(
                f.as_raw_fd(),
                nix::sys::stat::Mode::from_bits_truncate(mode),
            )?;
            f.sync_all()
        })();
        if let Err(e) = written {
            unlink_tmp();
            return Err(Error::internal(format!("writing {path} in {name}: {e}")));
        }
        // SAFETY: renameat reads two NUL-terminated names alive for the call.
        let rc = unsafe {
            libc::renameat(
                dir.as_raw_fd(),
                tmp.as_ptr(),
                dir.as_raw_fd(),
                target.as_ptr(),
            )
        };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            unlink_tmp();
            return Err(Error::invalid(format!("replacing {path} in {name}: {e}")));
        }
        Ok(FileInfo {
            path: path.to_string(),
            size: data.len() as u64,
            mode,
            uid,
            gid,
        })
    }
}
