//! Idmapped mounts: a directory shown with its owners shifted into an instance's id range,
//! without copying or changing a file on disk.
//!
//! A throw-away user namespace carries the instance's map (a child process unshares it, the
//! caller writes its maps, opens `/proc/<child>/ns/user` and reaps the child); the directory is
//! cloned as a detached mount (`open_tree(OPEN_TREE_CLONE)`), the mount gets the namespace's
//! map (`mount_setattr(MOUNT_ATTR_IDMAP)`) and is attached where it is wanted (`move_mount`).
//! On-disk id `inside + n` then shows as host id `host + n`, and writes through the mount
//! store the reverse; ids outside the map show as the overflow id and cannot be written.
//!
//! Everything here forks only a child that makes raw system calls, so it is safe in the
//! multi-threaded daemon as well as in the monitor.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One contiguous id mapping, the same for uids and gids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMap {
    /// First id as stored on disk (0 for image layers and new volumes).
    pub inside: u32,
    /// Host id that `inside` shows as (the instance's root on the host).
    pub host: u32,
    /// Number of ids mapped.
    pub size: u32,
}

/// Why an idmapped mount could not be made. Messages name no host path (they reach users);
/// [`IdmapError::path`] gives it for logs.
#[derive(Debug, thiserror::Error)]
pub enum IdmapError {
    /// A system call failed.
    #[error("{what}")]
    Sys {
        /// What was being done.
        what: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The file system holding the directory cannot be idmapped.
    #[error(
        "the {fs} file system does not support idmapped mounts (FS_ALLOW_IDMAP), which \
         unprivileged instances need for their image layers and volumes: keep Vessel's root \
         directory and storage pools on ext4, xfs, btrfs or tmpfs, or launch the instance \
         privileged"
    )]
    Unsupported {
        /// The directory.
        path: PathBuf,
        /// The file system type, as /proc/self/mountinfo names it.
        fs: String,
    },
}

impl IdmapError {
    /// The host path the failure concerns.
    pub fn path(&self) -> &Path {
        match self {
            Self::Sys { path, .. } | Self::Unsupported { path, .. } => path,
        }
    }
}

fn sys(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> IdmapError {
    let path = path.to_path_buf();
    move |source| IdmapError::Sys { what, path, source }
}

fn cstr(p: &Path) -> Result<CString, IdmapError> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| IdmapError::Sys {
        what: "a path holds a NUL byte",
        path: p.to_path_buf(),
        source: std::io::ErrorKind::InvalidInput.into(),
    })
}

const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

/// `struct mount_attr` of `mount_setattr(2)` (version 0, 32 bytes).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// A pipe, both ends close-on-exec: (read end, write end).
fn pipe() -> Result<(OwnedFd, OwnedFd), IdmapError> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array, which has room for them.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(sys("making a pipe", Path::new("pipe"))(
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: pipe2 returned two new descriptors that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// A user namespace holding `map`, alive as long as the descriptor is.
pub fn userns(map: &IdMap) -> Result<OwnedFd, IdmapError> {
    // `ready`: the child says whether it made its namespace; `done`: the parent closes its
    // end once it holds the namespace, and the child exits.
    let (ready_rd, ready_wr) = pipe()?;
    let (done_rd, done_wr) = pipe()?;
    // SAFETY: clone without a new stack behaves like fork; the child below makes only raw
    // system calls (unshare, write, read, _exit), which is sound after forking a
    // multi-threaded process.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            libc::SIGCHLD as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid < 0 {
        return Err(sys("forking the id-map helper", Path::new("clone"))(
            std::io::Error::last_os_error(),
        ));
    }
    if pid == 0 {
        // SAFETY: only async-signal-safe calls on descriptors this process owns; the parent's
        // ends are closed first so that its death or its closing reads as end-of-file.
        unsafe {
            libc::close(ready_rd.as_raw_fd());
            libc::close(done_wr.as_raw_fd());
            let ok: u8 = u8::from(libc::unshare(libc::CLONE_NEWUSER) == 0);
            libc::write(ready_wr.as_raw_fd(), (&ok as *const u8).cast(), 1);
            let mut b = 0u8;
            libc::read(done_rd.as_raw_fd(), (&mut b as *mut u8).cast(), 1);
            libc::_exit(0);
        }
    }
    let pid = pid as libc::pid_t;
    drop(ready_wr);
    drop(done_rd);
    let result = (|| {
        let mut ok = 0u8;
        // SAFETY: read writes at most one byte into `ok`.
        let n = unsafe { libc::read(ready_rd.as_raw_fd(), (&mut ok as *mut u8).cast(), 1) };
        if n != 1 || ok != 1 {
            return Err(IdmapError::Sys {
                what: "the id-map helper could not make a user namespace",
                path: PathBuf::from(format!("/proc/{pid}")),
                source: std::io::Error::other("unshare(CLONE_NEWUSER) failed"),
            });
        }
        let line = format!("{} {} {}\n", map.inside, map.host, map.size);
        for file in ["uid_map", "gid_map"] {
            let p = format!("/proc/{pid}/{file}");
            std::fs::write(&p, &line).map_err(sys("writing the id map", Path::new(&p)))?;
        }
        let p = format!("/proc/{pid}/ns/user");
        std::fs::File::open(&p)
            .map(OwnedFd::from)
            .map_err(sys("opening the id map's user namespace", Path::new(&p)))
    })();
    // Let the child go and reap it.
    drop(done_wr);
    // SAFETY: waitpid takes plain integers and writes the status into a live local; `pid`
    // is our own child.
    unsafe {
        let mut status = 0;
        while libc::waitpid(pid, &mut status, 0) < 0
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
        {}
    }
    result
}

/// The file system type of the mount holding `path`, as /proc/self/mountinfo names it.
fn fs_type(path: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let Ok(dev) = std::fs::metadata(path).map(|m| m.dev()) else {
        return "unknown".into();
    };
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let want = format!("{major}:{minor}");
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.split(' ').nth(2) == Some(want.as_str()))
        .and_then(|l| l.split(" - ").nth(1))
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or("unknown")
        .to_string()
}

/// Mounts `source` on `target` (an existing directory) with its owners mapped through the
/// user namespace `userns`; `recursive` takes the mounts below `source` along.
pub fn mount(
    source: &Path,
    target: &Path,
    userns: &OwnedFd,
    recursive: bool,
) -> Result<(), IdmapError> {
    let src = cstr(source)?;
    let mut flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: open_tree reads a NUL-terminated path alive for the call.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, src.as_ptr(), flags) };
    if fd < 0 {
        return Err(sys("cloning a mount to idmap", source)(
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: open_tree returned a new descriptor that nothing else owns.
    let tree = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    let mut at = libc::AT_EMPTY_PATH;
    if recursive {
        at |= libc::AT_RECURSIVE;
    }
    // SAFETY: mount_setattr reads the empty NUL-terminated path and `attr`, both alive for
    // the call; the size passed is that of the struct.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            at,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EINVAL) {
            return Err(IdmapError::Unsupported {
                path: source.to_path_buf(),
                fs: fs_type(source),
            });
        }
        return Err(sys("idmapping a mount", source)(e));
    }
    let dst = cstr(target)?;
    // SAFETY: move_mount reads the empty path and the NUL-terminated target, alive for the
    // call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            dst.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if rc != 0 {
        return Err(sys("attaching an idmapped mount", target)(
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Mount points at or below `dir`, deepest first, in the caller's mount namespace.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut out: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape)
        .filter(|p| p.starts_with(dir))
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    out.dedup();
    out
}

/// A mountinfo path with its octal escapes (`\040` for a space, ...) decoded.
fn unescape(s: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let d = |k: usize| u32::from(b[i + k] - b'0');
            let v = d(1) * 64 + d(2) * 8 + d(3);
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// Detaches every mount at or below `dir` (deepest first); returns the first failure.
pub fn unmount_all(dir: &Path) -> Result<(), IdmapError> {
    let mut first = None;
    for m in mounts_under(dir) {
        if let Err(e) = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH) {
            if e != nix::Error::EINVAL && e != nix::Error::ENOENT && first.is_none() {
                first = Some(IdmapError::Sys {
                    what: "unmounting a staged mount",
                    path: m.clone(),
                    source: e.into(),
                });
            }
        }
    }
    first.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape("/a\\040b/c"), PathBuf::from("/a b/c"));
        assert_eq!(unescape("/plain"), PathBuf::from("/plain"));
        assert_eq!(unescape("/end\\04"), PathBuf::from("/end\\04"));
    }
}
