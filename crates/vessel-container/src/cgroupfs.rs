//! `/sys/fs/cgroup` in the container (a mount of type `cgroup` or `cgroup2`), as runc makes it:
//!
//! - on a unified (v2) host, a cgroup2 mount; where the kernel refuses one, a bind mount of the
//!   container's own cgroup;
//! - on a v1 or hybrid host, a read-write tmpfs (nosuid, nodev, noexec) holding one directory
//!   per v1 hierarchy, named like the host's mount point, and a symlink per controller of a
//!   co-mounted hierarchy (`cpu -> cpu,cpuacct`). With a cgroup namespace each directory is a
//!   new cgroupfs mount, whose root is the container's cgroup. Without one (podman's default on
//!   cgroup v1) it is the container's own cgroup directory bind-mounted, so the container sees
//!   its own limits and never the host's tree. Both carry the mount's flags: read-only for
//!   podman's default, read-write with `--privileged` or for systemd (a new cgroup made there
//!   is below the container's own). The hybrid cgroup2 hierarchy is not mounted (runc does not
//!   either).

use std::fs;
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;

use crate::error::{Error, Result};
use crate::mounts::{bind_remount, ensure_dir, mount_at, MountOptions};
use crate::rootfs::{apply_propagation, Context};

/// Where the host mounts its cgroup hierarchies.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Mounts the container's cgroup filesystem at `dest` (already resolved in the rootfs).
pub(crate) fn mount(dest: &Path, opts: &MountOptions, ctx: &Context<'_>) -> Result<()> {
    ensure_dir(dest)?;
    let flags = opts.flags & !(MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT);
    let hierarchies = host_hierarchies()?;
    let unified = hierarchies
        .iter()
        .any(|h| h.mount_point == Path::new(CGROUP_ROOT) && h.fstype == "cgroup2");
    if unified {
        mount_new_or_bind(
            "cgroup2",
            "cgroup2",
            "",
            Path::new(CGROUP_ROOT),
            dest,
            flags,
            ctx,
        )?;
        return apply_propagation(dest, opts);
    }
    // runc's tmpfs: read-write whatever the mount's flags, so that directories below it can
    // be mounted read-write (systemd mode) and symlinks exist; like runc, it keeps the mode of
    // the directory it covers (sysfs shows /sys/fs/cgroup as 0555).
    let covered = fs::metadata(dest).map_err(|e| Error::io("stat", dest, e))?;
    mount_at(
        Some("tmpfs"),
        dest,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=755"),
    )?;
    fs::set_permissions(dest, covered.permissions()).map_err(|e| Error::io("chmod", dest, e))?;
    let own = if ctx.cgroup_ns {
        Vec::new()
    } else {
        own_cgroups()?
    };
    for h in hierarchies.iter().filter(|h| h.fstype == "cgroup") {
        let Some(name) = h.mount_point.file_name() else {
            continue;
        };
        let sub = dest.join(name);
        ensure_dir(&sub)?;
        if ctx.cgroup_ns {
            // runc names the source of the systemd hierarchy "systemd".
            let source = if h.controllers == ["name=systemd"] {
                "systemd"
            } else {
                "cgroup"
            };
            mount_new_or_bind(
                source,
                "cgroup",
                &h.options,
                &h.mount_point,
                &sub,
                flags,
                ctx,
            )?;
        } else {
            bind(&own_dir(h, &own)?, &sub, flags)?;
        }
        let name = name.to_string_lossy();
        if name.contains(',') {
            for controller in name.split(',') {
                match std::os::unix::fs::symlink(name.as_ref(), dest.join(controller)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(Error::io("symlink", dest.join(controller), e)),
                }
            }
        }
    }
    apply_propagation(dest, opts)
}

/// Bind-mounts `src` on `dest` with `flags`.
fn bind(src: &Path, dest: &Path, flags: MsFlags) -> Result<()> {
    let src_str = src.to_string_lossy();
    mount_at(
        Some(&src_str),
        dest,
        Some("bind"),
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )?;
    if flags.is_empty() {
        return Ok(());
    }
    bind_remount(dest, flags)
}

/// A new cgroupfs mount (in a cgroup namespace its root is the container's cgroup); where the
/// kernel refuses it (a user namespace without its own cgroup namespace), the container's
/// cgroup directory under `host`, or `host` itself, bind-mounted.
fn mount_new_or_bind(
    source: &str,
    fstype: &str,
    data: &str,
    host: &Path,
    dest: &Path,
    flags: MsFlags,
    ctx: &Context<'_>,
) -> Result<()> {
    let data = (!data.is_empty()).then_some(data);
    match mount_at(Some(source), dest, Some(fstype), flags, data) {
        Ok(()) => Ok(()),
        Err(Error::Sys {
            source: nix::Error::EPERM | nix::Error::EBUSY | nix::Error::EINVAL,
            ..
        }) => {
            let own = ctx.cgroup_path.map(|p| host.join(p)).filter(|p| p.is_dir());
            let src = own.unwrap_or_else(|| host.to_path_buf());
            tracing::debug!(source = %src.display(), "cgroupfs refused; bind-mounting");
            bind(&src, dest, flags)
        }
        Err(e) => Err(e),
    }
}

/// A cgroup hierarchy mounted on the host under /sys/fs/cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Hierarchy {
    /// Where it is mounted.
    mount_point: PathBuf,
    /// `cgroup` or `cgroup2`.
    fstype: String,
    /// The cgroup of the hierarchy this mount shows as its root (`/` for the host's own).
    root: String,
    /// Its super options but `rw`/`ro` (the data for mounting it again).
    options: String,
    /// Its controllers (`cpu`, `name=systemd`), sorted.
    controllers: Vec<String>,
}

/// The cgroup hierarchies this process sees mounted under /sys/fs/cgroup (in the init, before
/// pivot_root: the host's).
fn host_hierarchies() -> Result<Vec<Hierarchy>> {
    let path = "/proc/self/mountinfo";
    let text = fs::read_to_string(path).map_err(|e| Error::io("read", path, e))?;
    Ok(parse_hierarchies(&text))
}

fn parse_hierarchies(mountinfo: &str) -> Vec<Hierarchy> {
    let mut out = Vec::new();
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let left: Vec<&str> = left.split(' ').collect();
        let mut right = right.split(' ');
        let (Some(fstype), Some(_src), Some(opts)) = (right.next(), right.next(), right.next())
        else {
            continue;
        };
        if left.len() < 5
            || !(fstype == "cgroup" || fstype == "cgroup2")
            || !Path::new(left[4]).starts_with(CGROUP_ROOT)
        {
            continue;
        }
        let options: Vec<&str> = opts
            .split(',')
            .filter(|o| !matches!(*o, "rw" | "ro"))
            .collect();
        let mut controllers: Vec<String> = options
            .iter()
            .filter(|o| {
                !matches!(
                    **o,
                    "noprefix" | "clone_children" | "xattr" | "cpuset_v2_mode" | "none" | ""
                ) && !o.starts_with("release_agent=")
            })
            .map(|o| o.to_string())
            .collect();
        controllers.sort();
        out.push(Hierarchy {
            mount_point: PathBuf::from(left[4]),
            fstype: fstype.to_string(),
            root: left[3].to_string(),
            options: options.join(","),
            controllers,
        });
    }
    out
}

/// This process's cgroup in each v1 hierarchy, from `/proc/self/cgroup`: (sorted controllers,
/// path).
fn own_cgroups() -> Result<Vec<(Vec<String>, String)>> {
    let path = "/proc/self/cgroup";
    let text = fs::read_to_string(path).map_err(|e| Error::io("read", path, e))?;
    Ok(parse_own(&text))
}

fn parse_own(text: &str) -> Vec<(Vec<String>, String)> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            let mut controllers: Vec<String> = controllers
                .split(',')
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect();
            controllers.sort();
            Some((controllers, path.to_string()))
        })
        .collect()
}

/// The directory of this process's own cgroup in hierarchy `h` (host path).
fn own_dir(h: &Hierarchy, own: &[(Vec<String>, String)]) -> Result<PathBuf> {
    let path = own
        .iter()
        .find(|(controllers, _)| !controllers.is_empty() && *controllers == h.controllers)
        .map(|(_, p)| p.as_str())
        .ok_or_else(|| {
            Error::Init(format!(
                "no cgroup of the container in the {} hierarchy ({}) in /proc/self/cgroup",
                h.controllers.join(","),
                h.mount_point.display()
            ))
        })?;
    // The mount may show a sub-cgroup as its root (a runtime in a container).
    let rel = if h.root == "/" {
        Some(path)
    } else {
        path.strip_prefix(h.root.as_str())
            .filter(|r| r.is_empty() || r.starts_with('/'))
    };
    let rel = rel.ok_or_else(|| {
        Error::Init(format!(
            "the container's cgroup {path} is outside what {} shows ({})",
            h.mount_point.display(),
            h.root
        ))
    })?;
    Ok(h.mount_point.join(rel.trim_start_matches('/')))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset,clone_children
35 31 0:32 /nested /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
37 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
50 23 0:40 / /mnt/other rw,relatime - cgroup cgroup rw,pids
";

    const OWN: &str = "\
9:name=systemd:/vessel/c1
4:memory:/nested/vessel/c1
3:cpuset:/vessel/c1
2:cpu,cpuacct:/vessel/c1
0::/vessel/c1
";

    #[test]
    fn own_cgroup_directories_per_hierarchy() {
        let hs = parse_hierarchies(HYBRID);
        assert_eq!(hs.len(), 5, "{hs:?}");
        assert_eq!(hs[0].controllers, ["cpu", "cpuacct"]);
        assert_eq!(hs[1].controllers, ["cpuset"]);
        assert_eq!(hs[1].options, "cpuset,clone_children");
        assert_eq!(hs[3].controllers, ["name=systemd"]);
        assert_eq!(hs[4].fstype, "cgroup2");
        let own = parse_own(OWN);
        let dir = |i: usize| own_dir(&hs[i], &own).unwrap();
        assert_eq!(dir(0), Path::new("/sys/fs/cgroup/cpu,cpuacct/vessel/c1"));
        assert_eq!(dir(1), Path::new("/sys/fs/cgroup/cpuset/vessel/c1"));
        assert_eq!(dir(2), Path::new("/sys/fs/cgroup/memory/vessel/c1"));
        assert_eq!(dir(3), Path::new("/sys/fs/cgroup/systemd/vessel/c1"));
        let elsewhere = parse_own("4:memory:/other/c1\n");
        assert!(own_dir(&hs[2], &elsewhere).is_err());
        assert!(own_dir(&hs[1], &elsewhere).is_err(), "no cpuset line");
    }
}
