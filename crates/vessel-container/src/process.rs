//! The last steps of every container process (init and exec alike): rlimits, no_new_privs,
//! user and groups, capabilities, working directory, seccomp, then execve of `process.args`
//! resolved on the container's PATH.

use std::ffi::CString;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::sys::stat::{umask, Mode};
use nix::unistd::{access, chdir, setgroups, setresgid, setresuid, AccessFlags, Gid, Uid};
use oci_spec::runtime::{PosixRlimitType, Process};

use crate::capabilities;
use crate::error::{Error, Result, SysContext};
use crate::seccomp::Filter;

/// PATH used when the process environment has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A process ready to exec: everything is applied but (maybe) seccomp.
#[derive(Debug)]
pub(crate) struct Ready {
    path: CString,
    args: Vec<CString>,
    env: Vec<CString>,
    /// Seccomp loaded just before execve (with no_new_privs, so the filter can be unprivileged
    /// and the runtime's own setup syscalls need not be allowed).
    late_seccomp: Option<Filter>,
}

fn cstring(s: &str, what: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::InvalidSpec(format!("{what} {s:?} contains a NUL byte")))
}

/// Applies the process attributes in order and resolves the executable. The caller is still
/// root in the container (and holds every capability) when this starts.
pub(crate) fn apply(process: &Process, seccomp: Option<Filter>) -> Result<Ready> {
    let args = process.args().as_deref().unwrap_or(&[]);
    let Some(arg0) = args.first() else {
        return Err(Error::InvalidSpec(
            "process.args is empty: give the command to run".into(),
        ));
    };
    let mut env: Vec<String> = process.env().clone().unwrap_or_default();
    set_rlimits(process)?;
    if let Some(adj) = process.oom_score_adj() {
        let path = "/proc/self/oom_score_adj";
        fs::write(path, adj.to_string()).map_err(|e| Error::io("write", path, e))?;
    }
    let nnp = process.no_new_privileges() == Some(true);
    if nnp {
        nix::sys::prctl::set_no_new_privs().sys(|| "set no_new_privs".into())?;
    }
    let caps = process
        .capabilities()
        .clone()
        .unwrap_or_else(capabilities::none);
    capabilities::limit_bounding(&caps)?;
    let late_seccomp = match seccomp {
        // Without no_new_privs loading a filter needs CAP_SYS_ADMIN: load it while we have it.
        Some(f) if !nnp => {
            f.load()?;
            None
        }
        other => other,
    };
    switch_user(process)?;
    capabilities::apply(&caps)?;
    let cwd = process.cwd();
    chdir(cwd).sys(|| format!("chdir to process.cwd {}", cwd.display()))?;
    umask(Mode::from_bits_truncate(
        process.user().umask().unwrap_or(0o022),
    ));
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", home_of(process.user().uid())));
    }
    let path_var = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    let path = find_executable(arg0, path_var, cwd)?;
    Ok(Ready {
        path: cstring(&path.to_string_lossy(), "executable path")?,
        args: args
            .iter()
            .map(|a| cstring(a, "argument"))
            .collect::<Result<_>>()?,
        env: env
            .iter()
            .map(|e| cstring(e, "environment entry"))
            .collect::<Result<_>>()?,
        late_seccomp,
    })
}

impl Ready {
    /// Loads the late seccomp filter, marks inherited descriptors above the preserved ones
    /// close-on-exec, and execs. Returns only on failure.
    pub(crate) fn exec(self, preserve_fds: u32) -> Error {
        if let Some(f) = &self.late_seccomp {
            if let Err(e) = f.load() {
                return e;
            }
        }
        if let Err(e) = close_fds_on_exec(3 + preserve_fds as i32) {
            return e;
        }
        let errno = match nix::unistd::execve(&self.path, &self.args, &self.env) {
            Err(e) => e,
            Ok(never) => match never {},
        };
        Error::Execve {
            path: self.path.to_string_lossy().into(),
            errno,
        }
    }
}

/// Prints why the last step before the user process failed on the process's own stderr (its
/// runtime has returned already): an execve failure in runc's words, anything else with its
/// cause.
pub(crate) fn report_exec_failure(err: &Error) {
    match err {
        Error::Execve { .. } => eprintln!("{err}"),
        other => eprintln!("vessel: container process: {}", other.chain()),
    }
}

fn set_rlimits(process: &Process) -> Result<()> {
    for rl in process.rlimits().as_deref().unwrap_or(&[]) {
        let resource = match rl.typ() {
            PosixRlimitType::RlimitCpu => libc::RLIMIT_CPU,
            PosixRlimitType::RlimitFsize => libc::RLIMIT_FSIZE,
            PosixRlimitType::RlimitData => libc::RLIMIT_DATA,
            PosixRlimitType::RlimitStack => libc::RLIMIT_STACK,
            PosixRlimitType::RlimitCore => libc::RLIMIT_CORE,
            PosixRlimitType::RlimitRss => libc::RLIMIT_RSS,
            PosixRlimitType::RlimitNproc => libc::RLIMIT_NPROC,
            PosixRlimitType::RlimitNofile => libc::RLIMIT_NOFILE,
            PosixRlimitType::RlimitMemlock => libc::RLIMIT_MEMLOCK,
            PosixRlimitType::RlimitAs => libc::RLIMIT_AS,
            PosixRlimitType::RlimitLocks => libc::RLIMIT_LOCKS,
            PosixRlimitType::RlimitSigpending => libc::RLIMIT_SIGPENDING,
            PosixRlimitType::RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
            PosixRlimitType::RlimitNice => libc::RLIMIT_NICE,
            PosixRlimitType::RlimitRtprio => libc::RLIMIT_RTPRIO,
            PosixRlimitType::RlimitRttime => libc::RLIMIT_RTTIME,
        };
        let limit = libc::rlimit {
            rlim_cur: rl.soft(),
            rlim_max: rl.hard(),
        };
        // SAFETY: setrlimit reads the rlimit struct, which lives across the call.
        let rc = unsafe { libc::setrlimit(resource, &limit) };
        if rc != 0 {
            return Err(Error::sys(
                format!(
                    "setrlimit {:?} soft {} hard {}",
                    rl.typ(),
                    rl.soft(),
                    rl.hard()
                ),
                nix::Error::last(),
            ));
        }
    }
    Ok(())
}

/// Switches to `process.user`, keeping the permitted capabilities for `capabilities::apply`.
fn switch_user(process: &Process) -> Result<()> {
    let user = process.user();
    let (uid, gid) = (Uid::from_raw(user.uid()), Gid::from_raw(user.gid()));
    let groups: Vec<Gid> = user
        .additional_gids()
        .as_deref()
        .unwrap_or(&[])
        .iter()
        .map(|g| Gid::from_raw(*g))
        .collect();
    nix::sys::prctl::set_keepcaps(true).sys(|| "set keepcaps".into())?;
    setgroups(&groups).sys(|| format!("setgroups {:?}", user.additional_gids()))?;
    setresgid(gid, gid, gid)
        .sys(|| format!("setgid {gid} (is it mapped in the user namespace?)"))?;
    setresuid(uid, uid, uid)
        .sys(|| format!("setuid {uid} (is it mapped in the user namespace?)"))?;
    nix::sys::prctl::set_keepcaps(false).sys(|| "clear keepcaps".into())
}

/// The home directory of `uid` from the container's /etc/passwd, or `/`.
fn home_of(uid: u32) -> String {
    fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|text| {
            text.lines().find_map(|line| {
                let f: Vec<&str> = line.split(':').collect();
                (f.len() >= 6 && f[2].parse() == Ok(uid)).then(|| f[5].to_string())
            })
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "/".into())
}

/// Resolves `name` like runc (Go's `exec.LookPath`, then an access check): a name with a slash
/// is used as is (relative to `cwd`), others are searched on `path_var`. The errors match
/// runc's, which podman turns into exit codes: a missing path or a name not found on PATH
/// gives 127, a directory or a file without execute permission 126.
pub(crate) fn find_executable(name: &str, path_var: &str, cwd: &Path) -> Result<PathBuf> {
    // Go's findExecutable: a file (not a directory) with an execute bit.
    let executable = |m: &fs::Metadata| !m.is_dir() && m.permissions().mode() & 0o111 != 0;
    let found = if name.contains('/') {
        let md = fs::metadata(cwd.join(name)).map_err(|e| Error::ExecutableMissing {
            name: name.to_string(),
            errno: nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
        })?;
        if !executable(&md) {
            return Err(Error::ExecutableDenied(name.to_string()));
        }
        PathBuf::from(name)
    } else {
        path_var
            .split(':')
            .map(|dir| Path::new(if dir.is_empty() { "." } else { dir }).join(name))
            .find(|p| fs::metadata(p).is_ok_and(|m| executable(&m)))
            .ok_or_else(|| Error::ExecutableNotFound(name.to_string()))?
    };
    // The execute bit may be set for others only, or the file may be on a noexec mount.
    if access(&found, AccessFlags::X_OK).is_err() {
        return Err(Error::ExecutableDenied(found.to_string_lossy().into()));
    }
    Ok(found)
}

/// Marks every descriptor from `first` up close-on-exec, so the container gets only its stdio
/// and the preserved descriptors.
fn close_fds_on_exec(first: i32) -> Result<()> {
    let fds: Vec<i32> = fs::read_dir("/proc/self/fd")
        .map_err(|e| Error::io("read directory", "/proc/self/fd", e))?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd >= first)
        .collect();
    for fd in fds {
        // SAFETY: F_GETFD/F_SETFD only change descriptor flags; a descriptor that was the
        // directory listing and is closed by now just fails with EBADF.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_executables_on_path() {
        assert_eq!(
            find_executable("sh", "/nonexistent:/bin", Path::new("/")).unwrap(),
            Path::new("/bin/sh")
        );
        assert!(matches!(
            find_executable("no-such-cmd", "/bin", Path::new("/")),
            Err(Error::ExecutableNotFound(_))
        ));
        assert!(find_executable("/bin/sh", "", Path::new("/")).is_ok());
    }

    #[test]
    fn errors_are_worded_like_runc() {
        let msg = |name: &str| find_executable(name, "/bin", Path::new("/")).unwrap_err();
        let e = msg("/etc/passwd");
        assert!(matches!(e, Error::ExecutableDenied(_)), "{e:?}");
        assert!(e
            .to_string()
            .starts_with("exec: \"/etc/passwd\": permission denied"));
        assert!(
            matches!(msg("/etc"), Error::ExecutableDenied(_)),
            "a directory"
        );
        assert!(msg("/nonexistent")
            .to_string()
            .starts_with("exec: \"/nonexistent\": stat /nonexistent: no such file or directory"));
        assert!(msg("no-such-command")
            .to_string()
            .starts_with("exec: \"no-such-command\": executable file not found in $PATH"));
        let e = Error::Execve {
            path: "/x".into(),
            errno: nix::Error::ENOEXEC,
        };
        assert_eq!(e.to_string(), "exec /x: exec format error");
    }
}
