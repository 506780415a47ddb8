//! Mount helpers: fstab-style option parsing, bind remounts that keep the flags the kernel
//! locks in a user namespace, and resolving container paths without escaping the rootfs.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use nix::mount::{mount, MsFlags};
use nix::sys::statvfs::{statvfs, FsFlags};

use crate::error::{Error, Result, SysContext};

/// Mount options this runtime understands (others are passed to the filesystem as data).
pub const KNOWN_OPTIONS: &[&str] = &[
    "async",
    "atime",
    "bind",
    "defaults",
    "dev",
    "diratime",
    "dirsync",
    "exec",
    "iversion",
    "lazytime",
    "loud",
    "mand",
    "noatime",
    "nodev",
    "nodiratime",
    "noexec",
    "noiversion",
    "nolazytime",
    "nomand",
    "norelatime",
    "nostrictatime",
    "nosuid",
    "nosymfollow",
    "private",
    "rbind",
    "relatime",
    "remount",
    "ro",
    "rprivate",
    "rshared",
    "rslave",
    "runbindable",
    "rw",
    "shared",
    "silent",
    "slave",
    "strictatime",
    "suid",
    "symfollow",
    "sync",
    "tmpcopyup",
    "unbindable",
];

/// Parsed mount options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MountOptions {
    /// Flags to set.
    pub flags: MsFlags,
    /// Propagation changes to apply after mounting, in order.
    pub propagation: Vec<MsFlags>,
    /// Filesystem-specific data (`mode=755,size=64k`).
    pub data: Vec<String>,
    /// Copy the overmounted directory's contents into a new tmpfs (runc/crun extension).
    pub tmpcopyup: bool,
}

impl MountOptions {
    /// Parses fstab-style options; unknown options are passed to the filesystem as data.
    pub(crate) fn parse(options: &[String]) -> Result<MountOptions> {
        let mut out = MountOptions {
            flags: MsFlags::empty(),
            propagation: Vec::new(),
            data: Vec::new(),
            tmpcopyup: false,
        };
        for opt in options {
            let (set, clear) = match opt.as_str() {
                "defaults" | "z" | "Z" | "notmpcopyup" | "copy-symlink" => continue,
                "tmpcopyup" => {
                    out.tmpcopyup = true;
                    continue;
                }
                "idmap" | "ridmap" => {
                    return Err(Error::InvalidSpec(format!(
                        "mount option {opt:?} (id-mapped mounts) is not supported"
                    )))
                }
                "private" => prop(&mut out, MsFlags::MS_PRIVATE),
                "rprivate" => prop(&mut out, MsFlags::MS_PRIVATE | MsFlags::MS_REC),
                "shared" => prop(&mut out, MsFlags::MS_SHARED),
                "rshared" => prop(&mut out, MsFlags::MS_SHARED | MsFlags::MS_REC),
                "slave" => prop(&mut out, MsFlags::MS_SLAVE),
                "rslave" => prop(&mut out, MsFlags::MS_SLAVE | MsFlags::MS_REC),
                "unbindable" => prop(&mut out, MsFlags::MS_UNBINDABLE),
                "runbindable" => prop(&mut out, MsFlags::MS_UNBINDABLE | MsFlags::MS_REC),
                "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS),
                "atime" => (MsFlags::empty(), MsFlags::MS_NOATIME),
                "bind" => (MsFlags::MS_BIND, MsFlags::empty()),
                "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
                "diratime" => (MsFlags::empty(), MsFlags::MS_NODIRATIME),
                "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty()),
                "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
                "iversion" => (MsFlags::MS_I_VERSION, MsFlags::empty()),
                "lazytime" => (MsFlags::MS_LAZYTIME, MsFlags::empty()),
                "loud" => (MsFlags::empty(), MsFlags::MS_SILENT),
                "mand" => (MsFlags::MS_MANDLOCK, MsFlags::empty()),
                "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
                "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
                "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
                "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
                "noiversion" => (MsFlags::empty(), MsFlags::MS_I_VERSION),
                "nolazytime" => (MsFlags::empty(), MsFlags::MS_LAZYTIME),
                "nomand" => (MsFlags::empty(), MsFlags::MS_MANDLOCK),
                "norelatime" => (MsFlags::empty(), MsFlags::MS_RELATIME),
                "nostrictatime" => (MsFlags::empty(), MsFlags::MS_STRICTATIME),
                "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
                "nosymfollow" => (MsFlags::from_bits_retain(256), MsFlags::empty()),
                "rbind" => (MsFlags::MS_BIND | MsFlags::MS_REC, MsFlags::empty()),
                "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
                "remount" => (MsFlags::MS_REMOUNT, MsFlags::empty()),
                "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
                "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
                "silent" => (MsFlags::MS_SILENT, MsFlags::empty()),
                "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
                "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
                "symfollow" => (MsFlags::empty(), MsFlags::from_bits_retain(256)),
                "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
                other => {
                    out.data.push(other.to_string());
                    continue;
                }
            };
            out.flags.insert(set);
            out.flags.remove(clear);
        }
        Ok(out)
    }

    /// Whether this is a bind mount.
    pub(crate) fn is_bind(&self) -> bool {
        self.flags.contains(MsFlags::MS_BIND)
    }

    /// The data string for mount(2), if any.
    pub(crate) fn data_string(&self) -> Option<String> {
        (!self.data.is_empty()).then(|| self.data.join(","))
    }
}

fn prop(out: &mut MountOptions, flag: MsFlags) -> (MsFlags, MsFlags) {
    out.propagation.push(flag);
    (MsFlags::empty(), MsFlags::empty())
}

/// Mounts with a readable error.
pub(crate) fn mount_at(
    source: Option<&str>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<()> {
    mount(source, target, fstype, flags, data).sys(|| {
        format!(
            "mount {} on {} (type {}, flags {:?}, data {:?})",
            source.unwrap_or("none"),
            target.display(),
            fstype.unwrap_or("none"),
            flags,
            data.unwrap_or("")
        )
    })
}

/// Changes the propagation of the mount at `target`.
pub(crate) fn set_propagation(target: &Path, flags: MsFlags) -> Result<()> {
    mount_at(None, target, None, flags, None)
}

/// The flags of the mount at `path` that the kernel locks when a less privileged user
/// namespace owns the mount namespace: a remount has to repeat them.
pub(crate) fn locked_flags(path: &Path) -> Result<MsFlags> {
    let st = statvfs(path).sys(|| format!("statvfs {}", path.display()))?;
    let f = st.flags();
    let mut out = MsFlags::empty();
    for (fs_flag, ms_flag) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
        (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
    ] {
        if f.contains(fs_flag) {
            out |= ms_flag;
        }
    }
    Ok(out)
}

/// Remounts the bind mount at `path` with `flags` added to the flags it already has.
pub(crate) fn bind_remount(path: &Path, flags: MsFlags) -> Result<()> {
    let current = locked_flags(path)?;
    let atime = MsFlags::MS_NOATIME | MsFlags::MS_RELATIME | MsFlags::MS_STRICTATIME;
    // An explicit atime choice replaces the current one.
    let keep = if flags.intersects(atime) {
        current - atime
    } else {
        current
    };
    mount_at(
        None,
        path,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | keep | flags,
        None,
    )
}

/// Resolves the container path `path` under `root` like the container will see it: symlinks
/// are followed relative to `root` and `..` stops at `root`, so the result is inside `root`.
pub(crate) fn resolve_in_root(root: &Path, path: &Path) -> Result<PathBuf> {
    let mut resolved = PathBuf::new(); // relative to root
    let mut links = 0;
    // Components still to walk, in reverse order (a stack).
    let mut stack: Vec<std::ffi::OsString> = Vec::new();
    push_components(&mut stack, path);
    while let Some(comp) = stack.pop() {
        if comp == ".." {
            resolved.pop();
            continue;
        }
        if comp == "." || comp.is_empty() {
            continue;
        }
        let candidate = resolved.join(&comp);
        let host = root.join(&candidate);
        match fs::symlink_metadata(&host) {
            Ok(md) if md.file_type().is_symlink() => {
                links += 1;
                if links > 40 {
                    return Err(Error::InvalidSpec(format!(
                        "too many symlinks resolving {} in the rootfs",
                        path.display()
                    )));
                }
                let target = fs::read_link(&host).map_err(|e| Error::io("readlink", &host, e))?;
                if target.is_absolute() {
                    resolved = PathBuf::new();
                }
                push_components(&mut stack, &target);
            }
            _ => resolved = candidate,
        }
    }
    Ok(root.join(resolved))
}

fn push_components(stack: &mut Vec<std::ffi::OsString>, path: &Path) {
    let comps: Vec<std::ffi::OsString> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    stack.extend(comps.into_iter().rev());
}

/// The id of the topmost mount at mount point `path` in this process's mount namespace (the
/// last one `/proc/self/mountinfo` lists there), if any.
pub(crate) fn top_mount_id(path: &Path) -> Option<u64> {
    let text = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let want = escape_mountinfo(&path.to_string_lossy());
    text.lines().rev().find_map(|line| {
        let mut fields = line.split(' ');
        let id = fields.next()?.parse().ok()?;
        (fields.nth(3)? == want).then_some(id)
    })
}

/// A path as `/proc/self/mountinfo` writes it (space, tab, newline and backslash escaped).
fn escape_mountinfo(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        match c {
            ' ' => out.push_str("\\040"),
            '\t' => out.push_str("\\011"),
            '\n' => out.push_str("\\012"),
            '\\' => out.push_str("\\134"),
            c => out.push(c),
        }
    }
    out
}

/// Creates `path` as a directory (with parents) if missing.
pub(crate) fn ensure_dir(path: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(path)
        .map_err(|e| Error::io("create directory", path, e))
}

/// Creates `path` as an empty file (and its parent directories) if missing, as a mount point
/// for a file.
pub(crate) fn ensure_file(path: &Path) -> Result<()> {
    if path.exists() {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        ensure_dir(parent)?;
    }
    fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o644)
        .open(path)
        .map(drop)
        .map_err(|e| Error::io("create mount point", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(list: &[&str]) -> MountOptions {
        MountOptions::parse(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn parses_flags_propagation_and_data() {
        let o = opts(&["rbind", "ro", "nosuid", "rprivate", "mode=755", "size=64k"]);
        assert!(o
            .flags
            .contains(MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_RDONLY));
        assert_eq!(o.propagation, vec![MsFlags::MS_PRIVATE | MsFlags::MS_REC]);
        assert_eq!(o.data_string().as_deref(), Some("mode=755,size=64k"));
        let o = opts(&["ro", "rw"]);
        assert!(!o.flags.contains(MsFlags::MS_RDONLY));
        assert!(opts(&["tmpcopyup"]).tmpcopyup);
    }

    #[test]
    fn mount_ids_and_escapes() {
        assert!(top_mount_id(Path::new("/")).is_some());
        assert!(top_mount_id(Path::new("/surely/not/a/mount/point")).is_none());
        assert_eq!(escape_mountinfo("/a b\\c"), "/a\\040b\\134c");
    }

    #[test]
    fn resolution_stays_in_root() {
        let root = std::env::temp_dir().join(format!("vessel-resolve-{}", std::process::id()));
        fs::create_dir_all(root.join("a/b")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("a/abs")).unwrap();
        std::os::unix::fs::symlink("../../..", root.join("a/b/up")).unwrap();
        assert_eq!(
            resolve_in_root(&root, Path::new("/a/abs/x")).unwrap(),
            root.join("etc/x")
        );
        assert_eq!(
            resolve_in_root(&root, Path::new("/a/b/up/y")).unwrap(),
            root.join("y")
        );
        assert_eq!(
            resolve_in_root(&root, Path::new("/../../z")).unwrap(),
            root.join("z")
        );
        fs::remove_dir_all(&root).unwrap();
    }
}
