//! Delegation: handing a cgroup to a container's root user, so that an init like systemd can
//! make cgroups below it and move its processes between them, while the limits set on the
//! cgroup itself stay out of its reach.
//!
//! The delegatee gets the directory (to create and remove sub-cgroups, whose files the kernel
//! then gives it) and the files that move processes; never the controllers' limit files of the
//! delegated cgroup itself, which distribute the parent's resources. On cgroup v2 the files are
//! those the kernel lists in `/sys/kernel/cgroup/delegate` (`cgroup.procs`, `cgroup.threads`,
//! `cgroup.subtree_control`, ...), as systemd and runc read them; on v1, as LXC does,
//! `cgroup.procs` and `tasks`. See the kernel's `Documentation/admin-guide/cgroup-v2.rst`
//! ("Delegation").

use std::io;
use std::path::{Path, PathBuf};

use crate::fs::io_err;
use crate::Result;

/// Where the kernel lists the files of a cgroup v2 directory that may be delegated.
pub const DELEGATE_LIST: &str = "/sys/kernel/cgroup/delegate";

/// What kernels without [`DELEGATE_LIST`] (before 4.15) allow delegating on cgroup v2.
const V2_FALLBACK: &[&str] = &["cgroup.procs", "cgroup.threads", "cgroup.subtree_control"];

/// The files of a v1 cgroup that move processes into it.
const V1_FILES: &[&str] = &["cgroup.procs", "tasks"];

/// The kind of hierarchy a delegated directory is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hierarchy {
    /// A cgroup v1 hierarchy (here only ever `name=systemd`, which has no controller).
    V1,
    /// A cgroup2 hierarchy (a unified host's, or a hybrid host's `/sys/fs/cgroup/unified`).
    V2,
}

/// The paths to give the delegatee for the cgroup directory `dir`: the directory first, then
/// its files. `v2_list` is the text of [`DELEGATE_LIST`] (`None` when the kernel has none);
/// only plain file names from it are taken.
pub fn paths(dir: &Path, hierarchy: Hierarchy, v2_list: Option<&str>) -> Vec<PathBuf> {
    let files: Vec<&str> = match hierarchy {
        Hierarchy::V1 => V1_FILES.to_vec(),
        Hierarchy::V2 => match v2_list {
            Some(list) => list
                .split_whitespace()
                .filter(|f| !f.contains('/') && !f.starts_with('.'))
                .collect(),
            None => V2_FALLBACK.to_vec(),
        },
    };
    let mut out = vec![dir.to_path_buf()];
    out.extend(files.into_iter().map(|f| dir.join(f)));
    out
}

/// The kernel's list of delegatable cgroup v2 files, `None` when it has none.
pub(crate) fn read_v2_list() -> Result<Option<String>> {
    match std::fs::read_to_string(DELEGATE_LIST) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(Path::new(DELEGATE_LIST), "read", e)),
    }
}

/// Changes the owner of each path (not following symlinks); a file this kernel does not have
/// is skipped.
pub(crate) fn chown_all(paths: &[PathBuf], uid: u32, gid: u32) -> Result<()> {
    for p in paths {
        match std::os::unix::fs::lchown(p, Some(uid), Some(gid)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound && Some(p) != paths.first() => {}
            Err(e) => return Err(io_err(p, "chown (delegate)", e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_delegation_follows_the_kernels_list() {
        let dir = Path::new("/sys/fs/cgroup/vessel/c1");
        let list = "cgroup.procs\ncgroup.threads\ncgroup.subtree_control\nmemory.oom.group\n\
                    memory.reclaim\n";
        let got = paths(dir, Hierarchy::V2, Some(list));
        assert_eq!(got[0], dir, "the directory comes first");
        let names: Vec<_> = got[1..]
            .iter()
            .map(|p| p.file_name().unwrap().to_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "cgroup.procs",
                "cgroup.threads",
                "cgroup.subtree_control",
                "memory.oom.group",
                "memory.reclaim"
            ]
        );
        // Limits are never handed over.
        assert!(!got
            .iter()
            .any(|p| p.ends_with("memory.max") || p.ends_with("pids.max")));
        // Names that would leave the directory are ignored.
        let odd = paths(dir, Hierarchy::V2, Some("cgroup.procs ../x a/b .hidden"));
        assert_eq!(odd, [dir.to_path_buf(), dir.join("cgroup.procs")]);
    }

    #[test]
    fn v2_without_a_list_and_v1() {
        let dir = Path::new("/c");
        assert_eq!(
            paths(dir, Hierarchy::V2, None),
            [
                "/c",
                "/c/cgroup.procs",
                "/c/cgroup.threads",
                "/c/cgroup.subtree_control"
            ]
            .map(PathBuf::from)
        );
        assert_eq!(
            paths(dir, Hierarchy::V1, Some("cgroup.subtree_control")),
            ["/c", "/c/cgroup.procs", "/c/tasks"].map(PathBuf::from),
            "v1 ignores the v2 list"
        );
    }

    #[test]
    fn chown_skips_missing_files_but_not_a_missing_directory() {
        let base = std::env::temp_dir().join(format!("vessel-delegate-{}", std::process::id()));
        std::fs::create_dir_all(&base).unwrap();
        std::fs::write(base.join("cgroup.procs"), "").unwrap();
        let uid = nix::unistd::geteuid().as_raw();
        let gid = nix::unistd::getegid().as_raw();
        let ps = paths(&base, Hierarchy::V1, None);
        chown_all(&ps, uid, gid).unwrap();
        let missing = paths(&base.join("gone"), Hierarchy::V1, None);
        assert!(chown_all(&missing, uid, gid).is_err());
        std::fs::remove_dir_all(&base).unwrap();
    }
}
