//! File helpers shared by both backends: reading and writing cgroup files with errors that name
//! the file, polling, killing every process of a cgroup tree and removing a cgroup tree.

use std::collections::BTreeSet;
use std::io::{self, ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::{CgroupError, Result};

/// How long [`kill_all`] waits for the processes of a cgroup to go away.
pub(crate) const KILL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long freezing may take before it is given up and undone.
pub(crate) const FREEZE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `rmdir` is retried while the kernel still reports the cgroup busy.
pub(crate) const RMDIR_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between two polls.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// An [`CgroupError::Io`] for `path`.
pub(crate) fn io_err(path: &Path, op: &'static str, source: io::Error) -> CgroupError {
    CgroupError::Io {
        path: path.to_path_buf(),
        op,
        source,
    }
}

/// The error of a freeze that did not complete within [`FREEZE_TIMEOUT`] (the cgroup has been
/// thawed again); `state` says what the kernel still reported.
pub(crate) fn freeze_timed_out(path: &Path, state: &str) -> CgroupError {
    io_err(
        path,
        "freeze within 5s",
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "{state} after {}s; thawed it again",
                FREEZE_TIMEOUT.as_secs()
            ),
        ),
    )
}

/// Reads a whole cgroup file.
pub(crate) fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| io_err(path, "read", e))
}

/// Reads a cgroup file and trims surrounding white space.
pub(crate) fn read_trimmed(path: &Path) -> Result<String> {
    Ok(read(path)?.trim().to_owned())
}

/// Reads a file holding one unsigned number (`max` is read as `u64::MAX`).
pub(crate) fn read_u64(path: &Path) -> Result<u64> {
    let text = read_trimmed(path)?;
    parse_u64(&text).ok_or_else(|| {
        io_err(
            path,
            "parse",
            io::Error::new(
                ErrorKind::InvalidData,
                format!("expected a number, found {text:?}"),
            ),
        )
    })
}

/// Like [`read_u64`], but a missing file reads as `None`.
pub(crate) fn read_u64_opt(path: &Path) -> Result<Option<u64>> {
    if !path.exists() {
        return Ok(None);
    }
    read_u64(path).map(Some)
}

/// Parses a number as cgroup files print it; `max` is `u64::MAX`.
pub(crate) fn parse_u64(text: &str) -> Option<u64> {
    let text = text.trim();
    if text == "max" {
        return Some(u64::MAX);
    }
    text.parse().ok()
}

/// The value of `key` in a flat-keyed file such as `cpu.stat` or `memory.events`
/// (`key value` per line). A missing key is `None`.
pub(crate) fn keyed_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let mut parts = line.split_whitespace();
        (parts.next() == Some(key))
            .then(|| parts.next().and_then(parse_u64))
            .flatten()
    })
}

/// Sums of bytes read and written over every device of a v1 `blkio.throttle.io_service_bytes`
/// (`8:0 Read 4096` lines) or a v2 `io.stat` (`8:0 rbytes=4096 wbytes=0 ...` lines).
pub(crate) fn io_bytes(text: &str) -> (u64, u64) {
    let (mut read, mut written) = (0u64, 0u64);
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let Some(first) = parts.next() else { continue };
        if !first.contains(':') {
            continue;
        }
        let rest: Vec<&str> = parts.collect();
        match rest.as_slice() {
            ["Read", n] => read = read.saturating_add(parse_u64(n).unwrap_or(0)),
            ["Write", n] => written = written.saturating_add(parse_u64(n).unwrap_or(0)),
            fields => {
                for f in fields {
                    if let Some(n) = f.strip_prefix("rbytes=") {
                        read = read.saturating_add(parse_u64(n).unwrap_or(0));
                    } else if let Some(n) = f.strip_prefix("wbytes=") {
                        written = written.saturating_add(parse_u64(n).unwrap_or(0));
                    }
                }
            }
        }
    }
    (read, written)
}

/// Writes `value` to a cgroup control file in a single `write(2)`. Errors are plain I/O errors.
pub(crate) fn write(path: &Path, value: &str) -> Result<()> {
    write_raw(path, value).map_err(|e| io_err(path, "write", e))
}

/// Writes a limit. The kernel's refusals of a value (`EINVAL`, `EBUSY`, `ERANGE`, `EOVERFLOW`)
/// become [`CgroupError::InvalidLimit`] naming the file and the value.
pub(crate) fn write_limit(path: &Path, value: &str) -> Result<()> {
    tracing::debug!(file = %path.display(), value, "writing cgroup limit");
    write_raw(path, value).map_err(|e| match e.raw_os_error() {
        Some(libc::EINVAL) | Some(libc::ERANGE) | Some(libc::EOVERFLOW) => {
            CgroupError::InvalidLimit(format!(
                "the kernel refused {value:?} for {}: {e}",
                path.display()
            ))
        }
        Some(libc::EBUSY) => CgroupError::InvalidLimit(format!(
            "the kernel refused {value:?} for {} because the cgroup is busy ({e}); \
             a memory limit below current usage or a cpuset that excludes cpus in use \
             causes this",
            path.display()
        )),
        _ => io_err(path, "write", e),
    })
}

fn write_raw(path: &Path, value: &str) -> io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)?;
    // cgroup files take one value per write(2): never split it.
    let n = file.write(value.as_bytes())?;
    if n != value.len() {
        return Err(io::Error::new(
            ErrorKind::WriteZero,
            format!("short write: {n} of {} bytes", value.len()),
        ));
    }
    Ok(())
}

/// Parses a `cgroup.procs` file.
pub(crate) fn parse_pids(path: &Path, text: &str) -> Result<Vec<i32>> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.parse::<i32>().map_err(|_| {
                io_err(
                    path,
                    "parse",
                    io::Error::new(ErrorKind::InvalidData, format!("not a pid: {l:?}")),
                )
            })
        })
        .collect()
}

/// Pids in `dir/cgroup.procs` and in every descendant cgroup's. A cgroup that vanished while
/// being read counts as empty.
pub(crate) fn pids_recursive(dir: &Path, out: &mut BTreeSet<i32>) -> Result<()> {
    let procs = dir.join("cgroup.procs");
    match std::fs::read_to_string(&procs) {
        Ok(text) => out.extend(parse_pids(&procs, &text)?),
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(&procs, "read", e)),
    }
    for child in child_dirs(dir)? {
        pids_recursive(&child, out)?;
    }
    Ok(())
}

/// Sub-directories (child cgroups) of `dir`; none if `dir` is gone.
pub(crate) fn child_dirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(dir, "list", e)),
    };
    let mut dirs = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_err(dir, "list", e))?;
        let file_type = entry
            .file_type()
            .map_err(|e| io_err(&entry.path(), "stat", e))?;
        if file_type.is_dir() {
            dirs.push(entry.path());
        }
    }
    Ok(dirs)
}

/// Calls `check` every [`POLL_INTERVAL`] until it returns true or `timeout` passes; returns
/// whether it became true.
pub(crate) fn poll_until(
    timeout: Duration,
    mut check: impl FnMut() -> Result<bool>,
) -> Result<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        if check()? {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Sends SIGKILL to every pid `list` returns, again and again (a process may fork between
/// listing and killing), until `list` comes back empty or [`KILL_TIMEOUT`] passes.
/// `where_` names the cgroup in the error.
pub(crate) fn kill_all(where_: &Path, mut list: impl FnMut() -> Result<Vec<i32>>) -> Result<()> {
    let deadline = Instant::now() + KILL_TIMEOUT;
    loop {
        let pids = list()?;
        if pids.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let shown: Vec<String> = pids.iter().take(20).map(i32::to_string).collect();
            return Err(io_err(
                where_,
                "kill every process within 10s",
                io::Error::new(
                    ErrorKind::TimedOut,
                    format!(
                        "{} process(es) still in the cgroup {}s after SIGKILL (pids {}); \
                         a process stuck in uninterruptible sleep (state D) causes this",
                        pids.len(),
                        KILL_TIMEOUT.as_secs(),
                        shown.join(" ")
                    ),
                ),
            ));
        }
        for pid in pids {
            if pid <= 0 {
                continue;
            }
            match kill(Pid::from_raw(pid), Signal::SIGKILL) {
                Ok(()) | Err(Errno::ESRCH) => {}
                Err(e) => {
                    return Err(io_err(
                        where_,
                        "send SIGKILL to a process in the cgroup",
                        io::Error::from(e),
                    ))
                }
            }
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Removes `dir` and every child cgroup below it, deepest first. A missing directory is fine;
/// `EBUSY` (the kernel not yet done with exiting tasks) is retried for [`RMDIR_TIMEOUT`].
pub(crate) fn remove_tree(dir: &Path) -> Result<()> {
    for child in child_dirs(dir)? {
        remove_tree(&child)?;
    }
    let deadline = Instant::now() + RMDIR_TIMEOUT;
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => {
                tracing::debug!(dir = %dir.display(), "removed cgroup directory");
                return Ok(());
            }
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(POLL_INTERVAL);
            }
            Err(e) => return Err(io_err(dir, "remove the cgroup directory", e)),
        }
    }
}

/// Creates `dir` if missing (a concurrent creation is fine).
pub(crate) fn mkdir(dir: &Path) -> Result<bool> {
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(io_err(dir, "create the cgroup directory", e)),
    }
}

/// Checks and normalises a cgroup path relative to a hierarchy's root: `/a/b/` becomes `a/b`.
/// Empty paths (the root cgroup itself), `.`, `..` and empty components are refused: the
/// manager kills and removes what it manages, so it must never point at a shared cgroup by
/// accident.
pub(crate) fn normalize_path(path: &str) -> Result<String> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let bad = parts
        .iter()
        .any(|p| p.is_empty() || *p == "." || *p == ".." || p.contains('\0'));
    if bad {
        return Err(io_err(
            Path::new(path),
            "use as a cgroup path",
            io::Error::new(
                ErrorKind::InvalidInput,
                "a cgroup path must name a cgroup below the root, like \"vessel/c1\", \
                 without empty, \".\" or \"..\" components",
            ),
        ));
    }
    Ok(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_paths() {
        assert_eq!(normalize_path("/vessel/c1/").unwrap(), "vessel/c1");
        assert_eq!(normalize_path("vessel").unwrap(), "vessel");
        for bad in ["", "/", "a//b", "a/../b", "./a", "a/.."] {
            assert!(normalize_path(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn reads_keyed_values() {
        let text = "usage_usec 1234\nuser_usec 1000\nsystem_usec 234\n";
        assert_eq!(keyed_value(text, "usage_usec"), Some(1234));
        assert_eq!(keyed_value(text, "user_usec"), Some(1000));
        assert_eq!(keyed_value(text, "nope"), None);
        assert_eq!(keyed_value("frozen 1\npopulated 0", "frozen"), Some(1));
    }

    #[test]
    fn parses_pids_strictly() {
        let p = Path::new("cgroup.procs");
        assert_eq!(parse_pids(p, "1\n22\n\n333\n").unwrap(), vec![1, 22, 333]);
        assert!(parse_pids(p, "1\nx\n").is_err());
    }

    #[test]
    fn limit_write_errors_name_file_and_value() {
        let dir = std::env::temp_dir().join(format!("vessel-cg-fs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("memory.max");
        std::fs::write(&f, "max\n").unwrap();
        write_limit(&f, "1024").unwrap();
        assert_eq!(read_u64(&f).unwrap(), 1024);
        write(&f, "max").unwrap();
        assert_eq!(read_u64(&f).unwrap(), u64::MAX);
        let missing = dir.join("absent");
        let err = write_limit(&missing, "1").unwrap_err();
        assert!(err.to_string().contains("absent"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
