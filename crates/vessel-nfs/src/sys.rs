//! The system calls the server is built on: `openat2` beneath a directory, file handles,
//! per-thread file-system credentials, `getdents64`.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The largest kernel file handle (`MAX_HANDLE_SZ`).
pub(crate) const MAX_HANDLE: usize = 128;

fn cstr(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn check(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn owned(fd: libc::c_long) -> io::Result<OwnedFd> {
    let fd = check(fd)? as RawFd;
    // SAFETY: the kernel just returned this descriptor to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Open the directory `path` (on the host) for reading. Not `O_PATH`: the descriptor also
/// serves as the mount descriptor of `open_by_handle_at`, which refuses `O_PATH` ones.
pub(crate) fn open_dir_path(path: &Path) -> io::Result<OwnedFd> {
    let c = cstr(path.as_os_str().as_bytes())?;
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    owned(fd.into())
}

/// Resolve `path` (one or more components) below `dir` as an `O_PATH` descriptor, never
/// leaving `dir`, following no symlink (not even the last component), crossing no mount.
pub(crate) fn open_beneath(dir: BorrowedFd<'_>, path: &[u8]) -> io::Result<OwnedFd> {
    let c = cstr(path)?;
    // struct open_how (linux/openat2.h): flags, mode, resolve.
    let how: [u64; 3] = [
        (libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC) as u64,
        0,
        libc::RESOLVE_BENEATH
            | libc::RESOLVE_NO_SYMLINKS
            | libc::RESOLVE_NO_MAGICLINKS
            | libc::RESOLVE_NO_XDEV,
    ];
    // SAFETY: `c` and `how` outlive the call and the size passed is the struct's size.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            c.as_ptr(),
            how.as_ptr(),
            std::mem::size_of_val(&how),
        )
    };
    owned(fd)
}

/// Open the parent of directory `dir` as `O_PATH` (the caller checks it stays in the export).
pub(crate) fn open_parent(dir: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    // SAFETY: the path is a static NUL-terminated string.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c"..".as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    owned(fd.into())
}

/// Re-open an `O_PATH` descriptor with real access `flags`, checked against the thread's
/// current file-system credentials.
pub(crate) fn reopen(fd: BorrowedFd<'_>, flags: libc::c_int) -> io::Result<OwnedFd> {
    let c = cstr(proc_path(fd).as_bytes())?;
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC | libc::O_NOCTTY) };
    owned(fd.into())
}

/// `/proc/self/fd/N` naming an open descriptor (for calls that take no descriptor).
pub(crate) fn proc_path(fd: BorrowedFd<'_>) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// The path the kernel shows for an open descriptor, when it is an absolute path (not
/// `anon_inode:…`, not ending in ` (deleted)`).
pub(crate) fn fd_path(fd: BorrowedFd<'_>) -> Option<std::path::PathBuf> {
    let p = std::fs::read_link(proc_path(fd)).ok()?;
    let bytes = p.as_os_str().as_encoded_bytes();
    (bytes.starts_with(b"/") && !bytes.ends_with(b" (deleted)")).then_some(p)
}

/// A kernel file handle as `name_to_handle_at` returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KernelHandle {
    pub handle_type: i32,
    pub bytes: Vec<u8>,
}

#[repr(C)]
struct RawHandle {
    handle_bytes: u32,
    handle_type: libc::c_int,
    f_handle: [u8; MAX_HANDLE],
}

/// The kernel file handle of the object `fd` refers to.
pub(crate) fn handle_of(fd: BorrowedFd<'_>) -> io::Result<KernelHandle> {
    let mut raw = RawHandle {
        handle_bytes: MAX_HANDLE as u32,
        handle_type: 0,
        f_handle: [0; MAX_HANDLE],
    };
    let mut mount_id: libc::c_int = 0;
    // SAFETY: `raw` has room for MAX_HANDLE bytes as announced in `handle_bytes`; the path
    // is a static empty string used with AT_EMPTY_PATH.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_name_to_handle_at,
            fd.as_raw_fd(),
            c"".as_ptr(),
            &mut raw as *mut RawHandle,
            &mut mount_id as *mut libc::c_int,
            libc::AT_EMPTY_PATH,
        )
    };
    check(ret)?;
    let len = (raw.handle_bytes as usize).min(MAX_HANDLE);
    Ok(KernelHandle {
        handle_type: raw.handle_type,
        bytes: raw.f_handle[..len].to_vec(),
    })
}

/// Open the object `handle` names on the file system of `mount_fd`, as `O_PATH`.
/// Needs `CAP_DAC_READ_SEARCH`, so it runs with the server's own credentials.
pub(crate) fn open_handle(mount_fd: BorrowedFd<'_>, handle: &KernelHandle) -> io::Result<OwnedFd> {
    if handle.bytes.len() > MAX_HANDLE {
        return Err(io::Error::from_raw_os_error(libc::ESTALE));
    }
    let mut raw = RawHandle {
        handle_bytes: handle.bytes.len() as u32,
        handle_type: handle.handle_type,
        f_handle: [0; MAX_HANDLE],
    };
    raw.f_handle[..handle.bytes.len()].copy_from_slice(&handle.bytes);
    // SAFETY: `raw` is a complete handle structure that lives across the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_by_handle_at,
            mount_fd.as_raw_fd(),
            &mut raw as *mut RawHandle,
            libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    owned(fd)
}

/// `lstat` of the object itself.
pub(crate) fn stat(fd: BorrowedFd<'_>) -> io::Result<libc::stat> {
    // SAFETY: an all-zero `stat` is a valid value of this plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is writable and the path is a static empty string used with AT_EMPTY_PATH.
    let ret = unsafe {
        libc::fstatat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            &mut st,
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    check(ret.into())?;
    Ok(st)
}

/// Whether the caller's current credentials grant `mode` (`R_OK`, `W_OK`, `X_OK`) on `fd`.
pub(crate) fn access(fd: BorrowedFd<'_>, mode: libc::c_int) -> bool {
    // SAFETY: the path is a static empty string used with AT_EMPTY_PATH.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_faccessat2,
            fd.as_raw_fd(),
            c"".as_ptr(),
            mode,
            libc::AT_EACCESS | libc::AT_EMPTY_PATH,
        )
    };
    ret == 0
}

/// Run a `*at` call that takes a directory and a single name.
pub(crate) fn at_name<T>(name: &[u8], f: impl FnOnce(*const libc::c_char) -> T) -> io::Result<T> {
    let c = cstr(name)?;
    Ok(f(c.as_ptr()))
}

/// Turn a C return value into a result.
pub(crate) fn cvt(ret: libc::c_int) -> io::Result<()> {
    check(ret.into()).map(drop)
}

/// One entry read by [`read_dir_chunk`].
#[derive(Debug, Clone)]
pub(crate) struct DirEntry {
    pub ino: u64,
    /// Position just after this entry: the cookie to resume from.
    pub next: u64,
    pub name: Vec<u8>,
}

/// Read entries of the open directory `dir` starting at position `from` (0 = start).
/// Returns an empty list at the end.
pub(crate) fn read_dir_chunk(dir: BorrowedFd<'_>, from: u64) -> io::Result<Vec<DirEntry>> {
    let off = i64::try_from(from).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: plain lseek on a descriptor we own.
    check(unsafe { libc::lseek(dir.as_raw_fd(), off, libc::SEEK_SET) })?;
    let mut buf = vec![0u8; 32 * 1024];
    // SAFETY: `buf` is writable for its full length.
    let n = unsafe {
        libc::syscall(
            libc::SYS_getdents64,
            dir.as_raw_fd(),
            buf.as_mut_ptr(),
            buf.len(),
        )
    };
    let n = check(n)? as usize;
    Ok(parse_dirents(&buf[..n.min(buf.len())]))
}

/// Parse `linux_dirent64` records; a malformed record ends the list.
fn parse_dirents(buf: &[u8]) -> Vec<DirEntry> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + 19 <= buf.len() {
        let rec = &buf[pos..];
        let ino = u64::from_ne_bytes(rec[0..8].try_into().unwrap_or_default());
        let next = u64::from_ne_bytes(rec[8..16].try_into().unwrap_or_default());
        let reclen = u16::from_ne_bytes([rec[16], rec[17]]) as usize;
        if reclen < 19 || reclen > rec.len() {
            break;
        }
        let name_area = &rec[19..reclen];
        let end = name_area
            .iter()
            .position(|b| *b == 0)
            .unwrap_or(name_area.len());
        out.push(DirEntry {
            ino,
            next,
            name: name_area[..end].to_vec(),
        });
        pos += reclen;
    }
    out
}

/// The server's own file-system identity, restored after every request.
#[derive(Debug, Clone)]
pub(crate) struct ServerIdentity {
    uid: u32,
    gid: u32,
    groups: Vec<libc::gid_t>,
}

impl ServerIdentity {
    /// The identity of the calling process.
    pub(crate) fn current() -> Self {
        let groups = nix::unistd::getgroups()
            .map(|g| g.into_iter().map(|g| g.as_raw()).collect())
            .unwrap_or_default();
        ServerIdentity {
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
            groups,
        }
    }

    /// Whether the server may act as other users (it runs as root).
    pub(crate) fn can_switch(&self) -> bool {
        self.uid == 0
    }
}

/// While alive, this thread's file-system uid, gid and groups are the caller's, so the kernel
/// checks permissions and assigns ownership of new files as for that user. Only this thread
/// changes: the raw system calls are used, not the libc wrappers that change every thread.
pub(crate) struct CallerCreds<'a> {
    server: &'a ServerIdentity,
}

impl<'a> CallerCreds<'a> {
    /// Become `uid`/`gid` with `groups` for file-system purposes.
    pub(crate) fn assume(
        server: &'a ServerIdentity,
        uid: u32,
        gid: u32,
        groups: &[u32],
    ) -> io::Result<Self> {
        let guard = CallerCreds { server };
        if !server.can_switch() {
            return Ok(guard);
        }
        set_thread_ids(uid, gid, groups)?;
        Ok(guard)
    }
}

fn set_thread_ids(uid: u32, gid: u32, groups: &[u32]) -> io::Result<()> {
    // SAFETY: `groups` is a valid array of `len` gids for the duration of the call.
    check(unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) })?;
    // setfsuid/setfsgid report the previous value and never fail loudly: read back.
    // SAFETY: plain system calls on integer arguments.
    unsafe {
        libc::syscall(libc::SYS_setfsgid, gid);
        libc::syscall(libc::SYS_setfsuid, uid);
    }
    // SAFETY: -1 is an invalid id, so these calls only report the current value.
    let (now_uid, now_gid) = unsafe {
        (
            libc::syscall(libc::SYS_setfsuid, u32::MAX),
            libc::syscall(libc::SYS_setfsgid, u32::MAX),
        )
    };
    if now_uid != i64::from(uid) || now_gid != i64::from(gid) {
        return Err(io::Error::from_raw_os_error(libc::EPERM));
    }
    Ok(())
}

impl Drop for CallerCreds<'_> {
    fn drop(&mut self) {
        if self.server.can_switch() {
            if let Err(e) = set_thread_ids(self.server.uid, self.server.gid, &self.server.groups) {
                // A thread that cannot get its identity back must not serve anything else.
                tracing::error!(error = %e, "cannot restore the server's credentials");
                std::process::abort();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dirent_parser_stops_at_malformed_records() {
        let mut rec = Vec::new();
        rec.extend_from_slice(&5u64.to_ne_bytes());
        rec.extend_from_slice(&77u64.to_ne_bytes());
        rec.extend_from_slice(&24u16.to_ne_bytes());
        rec.push(8);
        rec.extend_from_slice(b"abc\0\0");
        assert_eq!(rec.len(), 24);
        let mut two = rec.clone();
        two.extend_from_slice(&rec);
        let e = parse_dirents(&two);
        assert_eq!(e.len(), 2);
        assert_eq!((e[0].ino, e[0].next, &e[0].name[..]), (5, 77, &b"abc"[..]));
        // A record claiming more bytes than present, or a zero length, ends the list.
        let mut bad = rec.clone();
        bad[16..18].copy_from_slice(&200u16.to_ne_bytes());
        assert!(parse_dirents(&bad).is_empty());
        bad[16..18].copy_from_slice(&0u16.to_ne_bytes());
        assert!(parse_dirents(&bad).is_empty());
        assert!(parse_dirents(&rec[..10]).is_empty());
    }
}
