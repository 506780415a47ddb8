//! Finding out which cgroup layout the host has and where the v1 controllers are mounted.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use nix::sys::statfs::{statfs, CGROUP2_SUPER_MAGIC};

use crate::fs::io_err;
use crate::{CgroupError, CgroupVersion, Result};

/// Where the cgroup filesystems are mounted on every supported host.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The mount table of this process.
const MOUNTINFO: &str = "/proc/self/mountinfo";

/// Detects the layout of the cgroup filesystem mounted at `root` (normally [`CGROUP_ROOT`]):
/// [`CgroupVersion::V2`] when `root` itself is a cgroup2 mount, else [`CgroupVersion::V1`] when
/// `mountinfo` shows at least one v1 controller hierarchy. A hybrid host (v1 controllers plus an
/// empty cgroup2 at `root/unified`) is V1: the controllers live in the v1 hierarchies.
pub(crate) fn detect_at(root: &Path, mountinfo: &str) -> Result<CgroupVersion> {
    let fs = statfs(root).map_err(|e| io_err(root, "statfs", io::Error::from(e)))?;
    if fs.filesystem_type() == CGROUP2_SUPER_MAGIC {
        tracing::debug!(root = %root.display(), "cgroup v2 (unified hierarchy)");
        return Ok(CgroupVersion::V2);
    }
    let mounts = parse_v1_mounts(mountinfo);
    if mounts.is_empty() {
        return Err(CgroupError::Unsupported(format!(
            "{} is not a cgroup2 mount and {MOUNTINFO} lists no cgroup v1 hierarchy: \
             mount cgroup2 at {} or the v1 controllers under it",
            root.display(),
            root.display()
        )));
    }
    tracing::debug!(controllers = ?mounts.keys().collect::<Vec<_>>(), "cgroup v1 (legacy or hybrid)");
    Ok(CgroupVersion::V1)
}

/// Reads this process's mount table.
pub(crate) fn read_mountinfo() -> Result<String> {
    std::fs::read_to_string(MOUNTINFO).map_err(|e| io_err(Path::new(MOUNTINFO), "read", e))
}

/// Where each cgroup v1 controller of this host is mounted, keyed by controller name
/// (`cpu`, `cpuacct`, `memory`, ...; named hierarchies as `name=systemd`), from
/// `/proc/self/mountinfo`. Co-mounted controllers (`cpu,cpuacct`) share one mount point.
pub fn v1_mounts() -> Result<BTreeMap<String, PathBuf>> {
    Ok(parse_v1_mounts(&read_mountinfo()?))
}

/// Parses `/proc/self/mountinfo` text into controller → mount point for every `cgroup` (v1)
/// mount. When a hierarchy is mounted more than once, the mount of its root (`/`) wins over
/// bind mounts of a sub-cgroup, and otherwise the first one listed.
pub(crate) fn parse_v1_mounts(mountinfo: &str) -> BTreeMap<String, PathBuf> {
    let mut found: BTreeMap<String, (PathBuf, bool)> = BTreeMap::new();
    for line in mountinfo.lines() {
        // id parent major:minor root mountpoint options [optional fields...] - fstype source super
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let left: Vec<&str> = left.split(' ').collect();
        let right: Vec<&str> = right.split(' ').collect();
        if left.len() < 5 || right.len() < 3 || right[0] != "cgroup" {
            continue;
        }
        let is_root = left[3] == "/";
        let mount_point = PathBuf::from(unescape(left[4]));
        for opt in right[2].split(',') {
            if !is_controller_option(opt) {
                continue;
            }
            let better = match found.get(opt) {
                None => true,
                Some((_, had_root)) => is_root && !had_root,
            };
            if better {
                found.insert(opt.to_owned(), (mount_point.clone(), is_root));
            }
        }
    }
    found.into_iter().map(|(k, (p, _))| (k, p)).collect()
}

/// The cgroup2 hierarchy a hybrid host mounts beside its v1 controllers (normally
/// `/sys/fs/cgroup/unified`, without controllers: systemd tracks processes in it), from
/// `/proc/self/mountinfo` text: the first cgroup2 mount of the hierarchy's root.
pub(crate) fn parse_hybrid_unified(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let left: Vec<&str> = left.split(' ').collect();
        (left.len() >= 5 && right.split(' ').next() == Some("cgroup2") && left[3] == "/")
            .then(|| PathBuf::from(unescape(left[4])))
    })
}

/// Super options of a v1 cgroup mount that are not controller names.
fn is_controller_option(opt: &str) -> bool {
    !matches!(
        opt,
        "rw" | "ro" | "noprefix" | "clone_children" | "xattr" | "cpuset_v2_mode" | "none" | ""
    ) && !opt.starts_with("release_agent=")
}

/// Undoes mountinfo's octal escapes (`\040` for a space, etc.).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let digits = &bytes[i + 1..i + 4];
            if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let v = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                if let Ok(v) = u8::try_from(v) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset,clone_children
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/my\\040pids rw,relatime - cgroup cgroup rw,pids
37 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
38 31 0:32 /sub /mnt/memsub rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
";

    #[test]
    fn parses_co_mounted_and_named_hierarchies() {
        let m = parse_v1_mounts(HYBRID);
        assert_eq!(m["cpu"], PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(m["cpuacct"], PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(m["cpuset"], PathBuf::from("/sys/fs/cgroup/cpuset"));
        assert_eq!(m["memory"], PathBuf::from("/sys/fs/cgroup/memory"));
        assert_eq!(m["pids"], PathBuf::from("/sys/fs/cgroup/my pids"));
        assert_eq!(m["name=systemd"], PathBuf::from("/sys/fs/cgroup/systemd"));
        assert!(!m.contains_key("clone_children"));
        assert!(!m.contains_key("rw"));
        assert!(!m.contains_key("xattr"));
        assert_eq!(m.len(), 6);
    }

    #[test]
    fn root_mount_beats_a_bind_mount_of_a_sub_cgroup() {
        let text = "\
38 31 0:32 /sub /mnt/memsub rw,relatime - cgroup cgroup rw,memory
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
";
        assert_eq!(
            parse_v1_mounts(text)["memory"],
            PathBuf::from("/sys/fs/cgroup/memory")
        );
    }

    #[test]
    fn hybrid_unified_hierarchy_is_found() {
        assert_eq!(
            parse_hybrid_unified(HYBRID),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let legacy: String = HYBRID
            .lines()
            .filter(|l| !l.contains("cgroup2"))
            .collect::<Vec<_>>()
            .join("\n");
        assert_eq!(parse_hybrid_unified(&legacy), None);
    }

    #[test]
    fn v2_only_table_has_no_v1_mounts() {
        let text = "25 20 0:24 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        assert!(parse_v1_mounts(text).is_empty());
    }

    #[test]
    fn unescapes_octal() {
        assert_eq!(unescape("a\\040b"), "a b");
        assert_eq!(unescape("tab\\011"), "tab\t");
        assert_eq!(unescape("plain"), "plain");
        assert_eq!(unescape("end\\"), "end\\");
    }
}
