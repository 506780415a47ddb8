//! File push and pull. Paths are resolved with `openat2(RESOLVE_IN_ROOT)` against the
//! instance's root, so a symlink inside the container can never lead outside it; owners are
//! translated between the container's ids and the host's shifted ids.

use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use vessel_api::{FileEntry, FileInfo, FileKind};

use super::InstanceService;
use crate::error::{chain, Error, Result};

/// Largest file moved in one request.
pub const MAX_FILE: u64 = 1 << 30;

/// Opens `path` (relative to `root`, which acts as `/`) with `openat2(RESOLVE_IN_ROOT)`.
pub(crate) fn open_in_root(
    root: &OwnedFd,
    path: &Path,
    flags: i32,
    mode: u32,
) -> std::io::Result<OwnedFd> {
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
pub(crate) fn reopen(fd: &OwnedFd, flags: i32) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags & !libc::O_ACCMODE)
        .open(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// What a pull found: a regular file open for reading and its metadata (its size as
/// opened: read no more), or a directory's entries.
pub enum Fetched {
    /// A regular file.
    File(File, FileInfo),
    /// A directory's entries, sorted by name.
    Directory(Vec<FileEntry>),
}

/// What a push makes, and how.
#[derive(Debug, Clone, Copy)]
pub struct Put {
    /// File, directory or symbolic link (whose target is the body).
    pub kind: FileKind,
    /// Permission bits.
    pub mode: u32,
    /// Owner inside the instance.
    pub uid: u32,
    /// Group inside the instance.
    pub gid: u32,
    /// Make missing parent directories.
    pub parents: bool,
}

/// Most entries one directory listing returns.
const MAX_ENTRIES: usize = 100_000;

/// Lists a directory opened inside the instance (names never resolved outside it).
fn list_dir(dir: File, path: &str, shift: u32) -> Result<Vec<FileEntry>> {
    use std::os::fd::IntoRawFd;
    let mut d = nix::dir::Dir::from_fd(dir.into_raw_fd())
        .map_err(|e| Error::internal(format!("listing {path}: {e}")))?;
    let dfd = d.as_raw_fd();
    let mut out = Vec::new();
    for entry in d.iter() {
        let entry = entry.map_err(|e| Error::internal(format!("listing {path}: {e}")))?;
        let name = entry.file_name();
        if name.to_bytes() == b"." || name.to_bytes() == b".." {
            continue;
        }
        if out.len() == MAX_ENTRIES {
            return Err(Error::invalid(format!(
                "{path} holds more than {MAX_ENTRIES} entries; pull its subdirectories one by one"
            )));
        }
        let Ok(st) =
            nix::sys::stat::fstatat(Some(dfd), name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
        else {
            continue; // gone meanwhile
        };
        let kind = match st.st_mode & libc::S_IFMT {
            libc::S_IFREG => FileKind::File,
            libc::S_IFDIR => FileKind::Directory,
            libc::S_IFLNK => FileKind::Symlink,
            _ => FileKind::Other,
        };
        let target = (kind == FileKind::Symlink)
            .then(|| nix::fcntl::readlinkat(Some(dfd), name).ok())
            .flatten()
            .map(|t| t.to_string_lossy().into_owned());
        out.push(FileEntry {
            name: name.to_string_lossy().into_owned(),
            kind,
            size: st.st_size as u64,
            mode: st.st_mode & 0o7777,
            uid: st.st_uid.saturating_sub(shift),
            gid: st.st_gid.saturating_sub(shift),
            target,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Makes every missing directory of `dir` (0755, owned by the instance's root), one
/// component at a time inside the root, never following a symlink out of it.
fn make_parents(root: &OwnedFd, dir: &Path, shift: u32) -> std::io::Result<()> {
    let mut cur = std::path::PathBuf::from("/");
    for comp in dir.components().skip(1) {
        let std::path::Component::Normal(part) = comp else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "'..' is not allowed in a pushed path",
            ));
        };
        let parent = open_in_root(root, &cur, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
        cur.push(part);
        match make_dir(&parent, part, 0o755, (shift, shift)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Makes directory `name` in `dir` with `mode` and `owner` (host ids); an existing
/// directory is left as it is and is not an error for a push, an existing non-directory is.
fn make_dir(
    dir: &OwnedFd,
    name: &std::ffi::OsStr,
    mode: u32,
    owner: (u32, u32),
) -> std::io::Result<()> {
    let c = CString::new(name.as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: mkdirat reads a NUL-terminated name alive for the call.
    if unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), 0o700) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            let st = nix::sys::stat::fstatat(
                Some(dir.as_raw_fd()),
                c.as_c_str(),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            )?;
            if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
                return Err(e);
            }
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "it exists and is not a directory",
            ));
        }
        return Err(e);
    }
    let made = (|| -> std::io::Result<()> {
        let fd = nix::fcntl::openat(
            Some(dir.as_raw_fd()),
            c.as_c_str(),
            nix::fcntl::OFlag::O_RDONLY
                | nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_NOFOLLOW
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )?;
        // SAFETY: openat returned a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        nix::unistd::fchown(
            fd.as_raw_fd(),
            Some(nix::unistd::Uid::from_raw(owner.0)),
            Some(nix::unistd::Gid::from_raw(owner.1)),
        )?;
        nix::sys::stat::fchmod(
            fd.as_raw_fd(),
            nix::sys::stat::Mode::from_bits_truncate(mode),
        )?;
        Ok(())
    })();
    if made.is_err() {
        // SAFETY: unlinkat reads a NUL-terminated name alive for the call.
        unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), libc::AT_REMOVEDIR) };
    }
    made
}

/// Makes symbolic link `name` in `dir` pointing at `target` (the link itself is owned by
/// `owner`, host ids; the target is never followed here).
fn make_symlink(
    dir: &OwnedFd,
    name: &std::ffi::OsStr,
    target: &[u8],
    owner: (u32, u32),
) -> std::io::Result<()> {
    if target.is_empty() || target.len() > 4095 || target.contains(&0) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "a link target is 1 to 4095 bytes without NUL",
        ));
    }
    let c = CString::new(name.as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let t =
        CString::new(target).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: symlinkat reads two NUL-terminated strings alive for the call.
    if unsafe { libc::symlinkat(t.as_ptr(), dir.as_raw_fd(), c.as_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    nix::unistd::fchownat(
        Some(dir.as_raw_fd()),
        c.as_c_str(),
        Some(nix::unistd::Uid::from_raw(owner.0)),
        Some(nix::unistd::Gid::from_raw(owner.1)),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )?;
    Ok(())
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
    fd: Option<OwnedFd>,
    shift: u32,
    mounted: Option<vessel_monitor::Overlay>,
    _lock: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl RootGuard {
    fn fd(&self) -> Result<&OwnedFd> {
        self.fd
            .as_ref()
            .ok_or_else(|| Error::internal("the instance's root is closed"))
    }
}

impl Drop for RootGuard {
    fn drop(&mut self) {
        // The descriptor first: an open directory would keep the overlay busy.
        self.fd = None;
        if let Some(o) = &self.mounted {
            if let Err(e) = o.unmount() {
                tracing::warn!(path = %e.path().display(), error = %e, "unmounting a stopped instance's root");
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
                fd: Some(open(&target)?),
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
                let image = self.images.by_fingerprint(&inst.image)?;
                let lowers = self.images.lower_layers(&image)?;
                let place = self.root_place(&inst)?;
                self.driver.prepare(&inst)?;
                // The same root the monitor mounts: layers idmapped to the instance's range,
                // over its writable layer (on its root disk, mounted first, if it has one).
                let overlay = self.driver.overlay(&inst, &lowers, &place);
                let o = overlay.clone();
                tokio::task::spawn_blocking(move || o.mount())
                    .await
                    .map_err(|e| Error::internal(format!("mount task: {e}")))?
                    .map_err(|e| {
                        Error::internal(format!(
                            "mounting the root of {name}: {} ({})",
                            chain(&e),
                            e.path().display()
                        ))
                    })?;
                // From here the guard unmounts, whatever happens.
                let mut guard = RootGuard {
                    fd: None,
                    shift,
                    mounted: Some(overlay),
                    _lock: Some(lock),
                };
                guard.fd = Some(open(&target)?);
                Ok(guard)
            }
            s => Err(Error::conflict(format!(
                "instance {name} is {}; wait for it to settle",
                s.as_str()
            ))),
        }
    }

    /// Reads a regular file inside the instance (following symbolic links within it), or
    /// lists a directory.
    pub fn file_get(&self, root: &RootGuard, name: &str, path: &str) -> Result<Fetched> {
        let p = check_path(path)?;
        let shift = root.shift;
        let root = root.fd()?;
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
        if md.is_dir() {
            let dir = reopen(&fd, libc::O_RDONLY | libc::O_DIRECTORY)
                .map_err(|e| Error::internal(format!("opening {path}: {e}")))?;
            return list_dir(dir, path, shift).map(Fetched::Directory);
        }
        if !md.is_file() {
            return Err(Error::invalid(format!(
                "{path} in {name} is not a regular file or a directory"
            )));
        }
        let f = reopen(&fd, libc::O_RDONLY | libc::O_NOCTTY | libc::O_NONBLOCK)
            .map_err(|e| Error::internal(format!("opening {path}: {e}")))?;
        if md.len() > MAX_FILE {
            return Err(Error::invalid(format!(
                "{path} is {} bytes; files over {MAX_FILE} bytes cannot be pulled",
                md.len()
            )));
        }
        let info = FileInfo {
            path: path.to_string(),
            size: md.len(),
            mode: md.mode() & 0o7777,
            uid: md.uid().saturating_sub(shift),
            gid: md.gid().saturating_sub(shift),
        };
        Ok(Fetched::File(f, info))
    }

    /// Writes a file inside the instance atomically (a temporary file, then a rename), owned
    /// by `uid`:`gid` as seen inside the instance, from `data` as it arrives (at most
    /// [`MAX_FILE`] bytes); or makes a directory, or a symbolic link to the target in `data`.
    pub fn file_put(
        &self,
        root: &RootGuard,
        name: &str,
        path: &str,
        data: &mut dyn Read,
        put: &Put,
    ) -> Result<FileInfo> {
        let Put {
            kind,
            mode,
            uid,
            gid,
            parents,
        } = *put;
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
        let root = root.fd()?;
        let parent = p.parent().unwrap_or(Path::new("/"));
        if parents {
            make_parents(root, parent, shift).map_err(|e| {
                Error::invalid(format!("making the parents of {path} in {name}: {e}"))
            })?;
        }
        let dir =
            open_in_root(root, parent, libc::O_RDONLY | libc::O_DIRECTORY, 0).map_err(|e| {
                Error::invalid(format!(
                    "cannot open directory {} in {name}: {e}; create it first (or push with -p)",
                    parent.display()
                ))
            })?;
        let owner = (uid + shift, gid + shift);
        match kind {
            FileKind::Directory => {
                match make_dir(&dir, base, mode, owner) {
                    // Pushing a tree into one that is there already merges them.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    r => r.map_err(|e| {
                        Error::invalid(format!("making directory {path} in {name}: {e}"))
                    })?,
                }
                return Ok(FileInfo {
                    path: path.to_string(),
                    size: 0,
                    mode,
                    uid,
                    gid,
                });
            }
            FileKind::Symlink => {
                let mut target = Vec::new();
                data.take(4096)
                    .read_to_end(&mut target)
                    .map_err(|e| Error::invalid(format!("reading the link's target: {e}")))?;
                let data = &target;
                make_symlink(&dir, base, data, owner).map_err(|e| {
                    Error::invalid(format!("making symbolic link {path} in {name}: {e}"))
                })?;
                return Ok(FileInfo {
                    path: path.to_string(),
                    size: data.len() as u64,
                    mode: 0o777,
                    uid,
                    gid,
                });
            }
            FileKind::File => {}
            FileKind::Other => {
                return Err(Error::invalid(
                    "only files, directories and symbolic links can be pushed",
                ))
            }
        }
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
        let mut size = 0;
        let written = (|| -> std::io::Result<()> {
            size = std::io::copy(&mut data.take(MAX_FILE + 1), &mut f)?;
            if size > MAX_FILE {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::FileTooLarge,
                    format!("files over {MAX_FILE} bytes cannot be pushed"),
                ));
            }
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
            size,
            mode,
            uid,
            gid,
        })
    }
}

/// Reads the chunks a request's body task sends, on a blocking thread: what lets a push
/// write a file as it arrives instead of holding it whole in memory.
pub struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>,
    chunk: bytes::Bytes,
}

impl ChannelReader {
    /// A reader of what `rx` receives; it ends when the sender is dropped.
    pub fn new(rx: tokio::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>) -> Self {
        ChannelReader {
            rx,
            chunk: bytes::Bytes::new(),
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.chunk.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(c)) => self.chunk = c,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}
