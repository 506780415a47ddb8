//! Starting QEMU detached from its caller.
//!
//! QEMU's own `-daemonize` forks and calls `setsid`, and `-runas` calls `setuid`; the sandbox
//! this engine always applies (`spawn=deny`, `elevateprivileges=deny`) kills QEMU for either
//! (QEMU 7.2 installs the seccomp filter before it daemonizes). So the engine does both itself
//! before `exec`: a new session, a double fork (QEMU is re-parented away from the caller, so it
//! outlives it and never becomes its zombie), and the user switch. QEMU still writes its pid
//! file (`-pidfile`), which [`crate::adopt`] reads.
//!
//! The program is opened by the caller (root) and executed through that descriptor
//! (`execveat(AT_EMPTY_PATH)`) after the user switch, so the user needs the right to execute
//! the file but not to reach it: a daemon run from a build tree under a `0700` home still
//! starts its console log sink as the VM's user.

use std::ffi::{CString, OsString};
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use crate::error::{Result, VmError};

/// A user QEMU (and its console log sink) runs as: numeric ids, so it needs no entry in the
/// host's user database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunAs {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups: the user's own, plus `kvm` (for /dev/kvm) when it exists.
    pub groups: Vec<libc::gid_t>,
}

impl RunAs {
    /// The user `uid` with primary group `gid` and no supplementary group but `kvm` (for
    /// /dev/kvm) when the host has that group. Neither id needs to exist in the host's user
    /// or group database.
    pub fn ids(uid: u32, gid: u32) -> RunAs {
        RunAs {
            uid,
            gid,
            groups: group_id("kvm").into_iter().collect(),
        }
    }

    /// Looks a user up in the host's user database.
    pub fn lookup(user: &str) -> Result<RunAs> {
        let name = CString::new(user)
            .map_err(|_| VmError::InvalidDefinition(format!("user {user:?} contains NUL")))?;
        let mut buf = vec![0 as libc::c_char; 16384];
        // SAFETY: an all-zero passwd is a valid value for getpwnam_r to fill in.
        let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: all pointers refer to live locals; buf's length is passed.
        let r = unsafe {
            libc::getpwnam_r(
                name.as_ptr(),
                &mut pw,
                buf.as_mut_ptr(),
                buf.len(),
                &mut result,
            )
        };
        if r != 0 || result.is_null() {
            return Err(VmError::InvalidDefinition(format!(
                "user {user:?} does not exist on this host: create it or run QEMU as another user"
            )));
        }
        let (uid, gid) = (pw.pw_uid, pw.pw_gid);
        let mut groups = vec![0 as libc::gid_t; 256];
        let mut n = groups.len() as libc::c_int;
        // SAFETY: groups has room for n entries; name is a valid C string.
        let r = unsafe { libc::getgrouplist(name.as_ptr(), gid, groups.as_mut_ptr(), &mut n) };
        groups.truncate(if r < 0 { 0 } else { n.max(0) as usize });
        if let Some(kvm) = group_id("kvm") {
            if !groups.contains(&kvm) {
                groups.push(kvm);
            }
        }
        Ok(RunAs { uid, gid, groups })
    }
}

fn group_id(name: &str) -> Option<libc::gid_t> {
    let cname = CString::new(name).ok()?;
    let mut buf = vec![0 as libc::c_char; 16384];
    // SAFETY: an all-zero group is a valid value for getgrnam_r to fill in.
    let mut gr: libc::group = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::group = std::ptr::null_mut();
    // SAFETY: all pointers refer to live locals; buf's length is passed.
    let r = unsafe {
        libc::getgrnam_r(
            cname.as_ptr(),
            &mut gr,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    (r == 0 && !result.is_null()).then_some(gr.gr_gid)
}

/// Runs `program args` detached (new session, re-parented away from us), optionally as
/// another user (then with umask 077: what it makes is that user's alone), with stdin from
/// /dev/null and stdout/stderr appended to `log`. The descriptors in `inherit` stay open in
/// the program at the same numbers (all others are closed on exec). Returns the detached
/// process's pid once it has exec'd.
pub fn spawn_detached(
    program: &Path,
    args: &[OsString],
    log: &Path,
    run_as: Option<&RunAs>,
    inherit: &[RawFd],
) -> Result<i32> {
    spawn_detached_io(program, args, Stdio::null(), log, run_as, inherit)
}

/// Like [`spawn_detached`], with `stdin` as the program's standard input (the console log
/// sink reads its pipe there).
pub fn spawn_detached_with_stdin(
    program: &Path,
    args: &[OsString],
    stdin: OwnedFd,
    log: &Path,
    run_as: Option<&RunAs>,
) -> Result<i32> {
    spawn_detached_io(program, args, Stdio::from(stdin), log, run_as, &[])
}

fn spawn_detached_io(
    program: &Path,
    args: &[OsString],
    stdin: Stdio,
    log: &Path,
    run_as: Option<&RunAs>,
    inherit: &[RawFd],
) -> Result<i32> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(VmError::io("open", log))?;
    let err = out.try_clone().map_err(VmError::io("open", log))?;
    let (pid_rd, pid_wr) = pipe()?;
    let wr = pid_wr.as_raw_fd();
    let user = run_as.cloned();
    let inherit = inherit.to_vec();
    let exe = ExecByFd::new(program, args)?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(stdin)
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err));
    // SAFETY: between fork and exec the closure calls only async-signal-safe functions
    // (setsid, fork, write, _exit, fcntl, setgroups, setgid, setuid, umask) and allocates
    // nothing: the group and descriptor lists were built before.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let pid = libc::fork();
            if pid < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if pid > 0 {
                // The intermediate: report the grandchild's pid and go, so that it is
                // re-parented to init (or the nearest subreaper).
                let bytes = pid.to_ne_bytes();
                libc::write(wr, bytes.as_ptr().cast(), bytes.len());
                libc::_exit(0);
            }
            for fd in &inherit {
                // Only this process's copy loses close-on-exec; the caller's keeps it.
                if libc::fcntl(*fd, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if let Some(u) = &user {
                if libc::setgroups(u.groups.len(), u.groups.as_ptr()) < 0
                    || libc::setgid(u.gid) < 0
                    || libc::setuid(u.uid) < 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                // Sockets, logs and files QEMU or the sink make are the user's alone.
                libc::umask(0o077);
            }
            // Returns only when the exec failed.
            Err(exe.exec())
        });
    }
    let spawned = cmd.spawn();
    drop(pid_wr);
    drop(cmd);
    let mut intermediate = spawned
        .map_err(|e| VmError::StartFailed(format!("cannot run {}: {e}", program.display())))?;
    let _ = intermediate.wait();
    let mut buf = [0u8; 4];
    let mut f = File::from(pid_rd);
    f.read_exact(&mut buf).map_err(|e| {
        VmError::StartFailed(format!("the detached QEMU did not report its pid: {e}"))
    })?;
    Ok(i32::from_ne_bytes(buf))
}

/// A program opened for execution through its descriptor, with its argument vector built
/// beforehand (nothing is allocated between fork and exec).
struct ExecByFd {
    file: File,
    _args: Vec<CString>,
    argv: Vec<*const libc::c_char>,
}

// SAFETY: the pointers point into `_args`, owned by the same value and never changed.
unsafe impl Send for ExecByFd {}
// SAFETY: as above; `exec` only reads them.
unsafe impl Sync for ExecByFd {}

impl ExecByFd {
    fn new(program: &Path, args: &[OsString]) -> Result<Self> {
        use std::os::unix::ffi::OsStrExt;
        let file = File::open(program)
            .map_err(|e| VmError::StartFailed(format!("cannot run {}: {e}", program.display())))?;
        let cstr = |s: &std::ffi::OsStr| {
            CString::new(s.as_bytes()).map_err(|_| {
                VmError::StartFailed(format!(
                    "a NUL byte in an argument of {}",
                    program.display()
                ))
            })
        };
        let mut owned = vec![cstr(program.as_os_str())?];
        for a in args {
            owned.push(cstr(a)?);
        }
        let mut argv: Vec<*const libc::c_char> = owned.iter().map(|c| c.as_ptr()).collect();
        argv.push(std::ptr::null());
        Ok(ExecByFd {
            file,
            _args: owned,
            argv,
        })
    }

    /// `execveat(fd, "", argv, environ, AT_EMPTY_PATH)`: the file's own mode decides, not the
    /// directories above it. Returns the error when it fails.
    fn exec(&self) -> std::io::Error {
        extern "C" {
            static environ: *const *const libc::c_char;
        }
        // SAFETY: execveat with a descriptor we hold, a NUL-terminated argument vector that
        // outlives the call, and the process's own environment; async-signal-safe.
        unsafe {
            libc::syscall(
                libc::SYS_execveat,
                self.file.as_raw_fd(),
                c"".as_ptr(),
                self.argv.as_ptr(),
                environ,
                libc::AT_EMPTY_PATH,
            );
        }
        std::io::Error::last_os_error()
    }
}

/// A pipe, both ends close-on-exec: (read, write).
pub fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into our array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(VmError::StartFailed(format!(
            "pipe: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: pipe2 succeeded; both descriptors are new and owned by nothing else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Hands a file or directory to the user QEMU runs as, with `mode` (0600 for a file, 0700
/// for a directory: no other host user reaches it).
pub fn hand_over(path: &Path, user: &RunAs, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid))
        .map_err(VmError::io("chown", path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(VmError::io("chmod", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detached_process_is_not_our_child() {
        let dir = std::env::temp_dir().join(format!("vessel-vm-spawn-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("log");
        let pid = spawn_detached(
            Path::new("/bin/sh"),
            &["-c".into(), "echo started; sleep 0.2".into()],
            &log,
            None,
            &[],
        )
        .unwrap();
        assert!(pid > 0);
        let mut status = 0;
        // SAFETY: waitpid on a pid with WNOHANG.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        assert_eq!(r, -1, "the detached process must not be our child");
        let p = crate::host::Process::watch(pid);
        if let Some(p) = p {
            assert!(p.wait_exit(std::time::Duration::from_secs(5)));
        }
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "started\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn users_are_looked_up() {
        let root = RunAs::lookup("root").unwrap();
        assert_eq!(root.uid, 0);
        assert!(RunAs::lookup("no-such-user-here").is_err());
    }

    #[test]
    fn numeric_users_need_no_passwd_entry_and_keep_kvm() {
        let u = RunAs::ids(3_000_000, 3_000_001);
        assert_eq!((u.uid, u.gid), (3_000_000, 3_000_001));
        assert_eq!(u.groups, group_id("kvm").into_iter().collect::<Vec<_>>());
    }

    #[test]
    fn a_detached_user_process_runs_with_its_ids_and_umask_077() {
        let dir = std::env::temp_dir().join(format!("vessel-vm-runas-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let user = RunAs::ids(3_000_000, 3_000_000);
        hand_over(&dir, &user, 0o700).unwrap();
        let log = dir.join("log");
        let made = dir.join("made");
        let pid = spawn_detached(
            Path::new("/bin/sh"),
            &[
                "-c".into(),
                format!("id -u; id -g; umask; : > {}", made.display()).into(),
            ],
            &log,
            Some(&user),
            &[],
        )
        .unwrap();
        if let Some(p) = crate::host::Process::watch(pid) {
            assert!(p.wait_exit(std::time::Duration::from_secs(5)));
        }
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            "3000000\n3000000\n0077\n"
        );
        use std::os::unix::fs::MetadataExt;
        let md = std::fs::metadata(&made).unwrap();
        assert_eq!((md.uid(), md.mode() & 0o777), (3_000_000, 0o600));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_user_process_starts_from_a_directory_it_cannot_reach() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("vessel-vm-private-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // A program in root's 0700 directory (as a build tree under /root is), 0755 itself.
        let program = dir.join("sh");
        std::fs::copy("/bin/sh", &program).unwrap();
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let log = dir.join("log");
        let user = RunAs::ids(3_000_001, 3_000_001);
        let pid = spawn_detached(
            &program,
            &["-c".into(), "id -u; echo \"$0\"".into()],
            &log,
            Some(&user),
            &[],
        )
        .unwrap();
        if let Some(p) = crate::host::Process::watch(pid) {
            assert!(p.wait_exit(std::time::Duration::from_secs(5)));
        }
        // It ran as the user, under its own name (argv[0] is the program's path).
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            format!("3000001\n{}\n", program.display())
        );
        // A file that is not executable is refused with the reason.
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = spawn_detached(&program, &[], &log, Some(&user), &[]).unwrap_err();
        assert!(err.to_string().contains("ermission denied"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
