//! File operations relative to directory descriptors, with the kernel enforcing that paths
//! stay beneath a root (`openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
//! RESOLVE_NO_MAGICLINKS`) and that no final symlink is followed (`O_NOFOLLOW`,
//! `AT_SYMLINK_NOFOLLOW`).

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// `RESOLVE_*` flags used for every lookup beneath a root.
const RESOLVE: u64 =
    libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;

/// A C string from bytes; a NUL inside is an `InvalidInput` error.
pub(crate) fn cstr(b: &[u8]) -> io::Result<CString> {
    CString::new(b).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name contains NUL"))
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Opens `path` (a trusted host path) as a directory descriptor, not following a final symlink.
pub(crate) fn open_dir_path(path: &Path) -> io::Result<OwnedFd> {
    let c = cstr(path.as_os_str().as_bytes())?;
    // SAFETY: `c` is a valid NUL-terminated string; the returned fd is checked and owned.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `openat2` of `path` beneath `root`, refusing any symlink and any escape (`EXDEV`, `ELOOP`).
pub(crate) fn openat2_beneath(
    root: BorrowedFd<'_>,
    path: &CStr,
    flags: i32,
) -> io::Result<OwnedFd> {
    // SAFETY: `open_how` is plain data; all-zero is its documented "no options" value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.resolve = RESOLVE;
    for _ in 0..16 {
        // SAFETY: valid dirfd, NUL-terminated path, and a correctly sized open_how.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                root.as_raw_fd(),
                path.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if fd >= 0 {
            // SAFETY: a fresh descriptor returned by the kernel, owned from here on.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) });
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            // The kernel asks for a retry when a rename raced with the lookup.
            Some(libc::EAGAIN) => continue,
            Some(libc::ENOSYS) => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "openat2 is missing: Linux 5.6 or newer is needed to unpack layers safely",
                ))
            }
            _ => return Err(e),
        }
    }
    Err(io::Error::from_raw_os_error(libc::EAGAIN))
}

/// Opens a directory (`O_PATH`) at a relative path beneath `root`.
pub(crate) fn open_dir_beneath(root: BorrowedFd<'_>, rel: &[u8]) -> io::Result<OwnedFd> {
    let rel = if rel.is_empty() { &b"."[..] } else { rel };
    openat2_beneath(root, &cstr(rel)?, libc::O_PATH | libc::O_DIRECTORY)
}

/// Opens a child directory for reading (listing, xattrs), never following a symlink.
pub(crate) fn open_child_dir(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<OwnedFd> {
    openat2_beneath(dir, name, libc::O_RDONLY | libc::O_DIRECTORY)
}

/// Opens a child file for reading, never following a symlink.
pub(crate) fn open_child_file(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<File> {
    openat2_beneath(dir, name, libc::O_RDONLY | libc::O_NOFOLLOW).map(File::from)
}

/// Creates a new regular file (never through a symlink, never over an existing name).
pub(crate) fn create_file(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<File> {
    // SAFETY: valid dirfd and NUL-terminated name; the fd is checked and owned.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0o600 as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor, owned from here on.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// `lstat` of a child; `None` when it does not exist.
pub(crate) fn lstat_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Option<libc::stat>> {
    // SAFETY: `stat` is plain data, fully written by a successful fstatat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid dirfd, name and out-pointer.
    let r = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENOENT) {
            return Ok(None);
        }
        return Err(e);
    }
    Ok(Some(st))
}

/// `fstat` of an open descriptor.
pub(crate) fn fstat(fd: BorrowedFd<'_>) -> io::Result<libc::stat> {
    // SAFETY: `stat` is plain data, fully written by a successful fstat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd and out-pointer.
    check(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    Ok(st)
}

/// Whether a stat describes an overlayfs whiteout (character device 0:0).
pub(crate) fn is_whiteout(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFCHR && st.st_rdev == 0
}

/// Creates a directory.
pub(crate) fn mkdir_at(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<()> {
    // SAFETY: valid dirfd and NUL-terminated name.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) })
}

/// Creates a symlink `name -> target`.
pub(crate) fn symlink_at(target: &CStr, dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    // SAFETY: valid strings and dirfd.
    check(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) })
}

/// Creates a hard link, not following a symlink at the old name.
pub(crate) fn link_at(
    odir: BorrowedFd<'_>,
    oname: &CStr,
    ndir: BorrowedFd<'_>,
    nname: &CStr,
) -> io::Result<()> {
    // SAFETY: valid dirfds and names; flags 0 does not follow a final symlink.
    check(unsafe {
        libc::linkat(
            odir.as_raw_fd(),
            oname.as_ptr(),
            ndir.as_raw_fd(),
            nname.as_ptr(),
            0,
        )
    })
}

/// Creates a device node or fifo (`mode` includes the file type).
pub(crate) fn mknod_at(dir: BorrowedFd<'_>, name: &CStr, mode: u32, dev: u64) -> io::Result<()> {
    // SAFETY: valid dirfd and name.
    check(unsafe { libc::mknodat(dir.as_raw_fd(), name.as_ptr(), mode, dev) })
}

/// Changes owner without following a symlink.
pub(crate) fn chown_at(dir: BorrowedFd<'_>, name: &CStr, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: valid dirfd and name.
    check(unsafe {
        libc::fchownat(
            dir.as_raw_fd(),
            name.as_ptr(),
            uid,
            gid,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
}

/// Changes mode of a child known not to be a symlink.
pub(crate) fn chmod_at(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<()> {
    // SAFETY: valid dirfd and name.
    check(unsafe { libc::fchmodat(dir.as_raw_fd(), name.as_ptr(), mode, 0) })
}

fn times(mtime: i64) -> [libc::timespec; 2] {
    let t = libc::timespec {
        tv_sec: mtime as libc::time_t,
        tv_nsec: 0,
    };
    [t, t]
}

/// Sets access and modification time of a child without following a symlink.
pub(crate) fn utimes_at(dir: BorrowedFd<'_>, name: &CStr, mtime: i64) -> io::Result<()> {
    let ts = times(mtime);
    // SAFETY: valid dirfd, name and a two-element timespec array.
    check(unsafe {
        libc::utimensat(
            dir.as_raw_fd(),
            name.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
}

/// Sets owner, mode and times of an open file or directory (in that order: chown clears
/// setuid bits).
pub(crate) fn set_meta_fd(
    fd: BorrowedFd<'_>,
    uid: u32,
    gid: u32,
    mode: u32,
    mtime: i64,
) -> io::Result<()> {
    let raw = fd.as_raw_fd();
    // SAFETY: valid fd.
    check(unsafe { libc::fchown(raw, uid, gid) })?;
    // SAFETY: valid fd.
    check(unsafe { libc::fchmod(raw, mode) })?;
    let ts = times(mtime);
    // SAFETY: valid fd and a two-element timespec array.
    check(unsafe { libc::futimens(raw, ts.as_ptr()) })
}

/// Sets an extended attribute on an open file or directory.
pub(crate) fn set_xattr(fd: BorrowedFd<'_>, name: &CStr, value: &[u8]) -> io::Result<()> {
    // SAFETY: valid fd, name and value buffer with its length.
    check(unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
}

/// Reads an extended attribute; `None` when absent.
pub(crate) fn get_xattr(fd: BorrowedFd<'_>, name: &CStr) -> io::Result<Option<Vec<u8>>> {
    let mut buf = vec![0u8; 4096];
    // SAFETY: valid fd and name; the buffer is writable for its length.
    let n = unsafe {
        libc::fgetxattr(
            fd.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENODATA) | Some(libc::ENOTSUP) => Ok(None),
            _ => Err(e),
        };
    }
    buf.truncate(n as usize);
    Ok(Some(buf))
}

/// Lists extended attribute names of an open file or directory.
pub(crate) fn list_xattrs(fd: BorrowedFd<'_>) -> io::Result<Vec<Vec<u8>>> {
    let mut buf = vec![0u8; 65536];
    // SAFETY: valid fd; the buffer is writable for its length.
    let n = unsafe { libc::flistxattr(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENOTSUP) => Ok(Vec::new()),
            _ => Err(e),
        };
    }
    buf.truncate(n as usize);
    Ok(buf
        .split(|&c| c == 0)
        .filter(|s| !s.is_empty())
        .map(<[u8]>::to_vec)
        .collect())
}

/// Reads a symlink's target.
pub(crate) fn readlink_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    // SAFETY: valid dirfd and name; the buffer is writable for its length.
    let n = unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

/// Names in a directory (without `.` and `..`), sorted bytewise.
pub(crate) fn list_dir(dir: BorrowedFd<'_>) -> io::Result<Vec<CString>> {
    let fd = openat2_beneath(dir, c".", libc::O_RDONLY | libc::O_DIRECTORY)?;
    let mut d = nix::dir::Dir::from(fd).map_err(io::Error::from)?;
    let mut names = Vec::new();
    for e in d.iter() {
        let e = e.map_err(io::Error::from)?;
        let n = e.file_name();
        if n != c"." && n != c".." {
            names.push(n.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// Removes a child of any type, directories recursively, never following symlinks.
pub(crate) fn remove_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    let Some(st) = lstat_at(dir, name)? else {
        return Ok(());
    };
    if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
        let child = open_child_dir(dir, name)?;
        for n in list_dir(child.as_fd())? {
            remove_at(child.as_fd(), &n)?;
        }
        // SAFETY: valid dirfd and name.
        check(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), libc::AT_REMOVEDIR) })
    } else {
        // SAFETY: valid dirfd and name.
        check(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) })
    }
}

/// Removes every child of a directory.
pub(crate) fn clear_dir(dir: BorrowedFd<'_>) -> io::Result<()> {
    for n in list_dir(dir)? {
        remove_at(dir, &n)?;
    }
    Ok(())
}

/// Renames `from` to `to` (host paths in one directory), failing if `to` exists.
pub(crate) fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    let f = cstr(from.as_os_str().as_bytes())?;
    let t = cstr(to.as_os_str().as_bytes())?;
    // SAFETY: valid NUL-terminated paths; AT_FDCWD for both.
    check(unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    })
}
