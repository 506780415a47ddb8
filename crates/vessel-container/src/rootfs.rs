//! The container's root filesystem: mount propagation, the rootfs bind mount, the spec's
//! mounts, devices, pivot_root, and the read-only and masked paths applied afterwards.

use std::fs;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{open, OFlag};
use nix::mount::{umount2, MntFlags, MsFlags};
use nix::sys::stat::Mode;
use nix::unistd::{chdir, chroot, pivot_root};
use oci_spec::runtime::{Mount, Spec};

use crate::cgroupfs;
use crate::devices;
use crate::error::{Error, Result, SysContext};
use crate::mounts::{
    bind_remount, ensure_dir, ensure_file, mount_at, resolve_in_root, set_propagation, MountOptions,
};

/// What the rootfs setup needs besides the spec.
#[derive(Debug)]
pub(crate) struct Context<'a> {
    /// Absolute rootfs path on the host.
    pub rootfs: &'a Path,
    /// Bundle directory (relative bind sources are resolved against it).
    pub bundle: &'a Path,
    /// Whether the container runs in a user namespace (mknod is not allowed there).
    pub user_ns: bool,
    /// Whether the container has a mount namespace of its own. Without one its mounts are made
    /// in the runtime's, and the propagation of `/` is left alone.
    pub mount_ns: bool,
    /// The container's cgroup path, for bind-mounting it when cgroupfs cannot be mounted.
    pub cgroup_path: Option<&'a str>,
    /// Whether the container has a cgroup namespace of its own (its cgroupfs mounts then show
    /// its own cgroup as their root).
    pub cgroup_ns: bool,
    /// Host path of a terminal to bind-mount on /dev/console.
    pub console: Option<PathBuf>,
}

/// Everything up to (not including) pivot_root: propagation, the rootfs bind, the spec's
/// mounts in order, devices, /dev symlinks and /dev/console.
pub(crate) fn prepare(spec: &Spec, ctx: &Context<'_>) -> Result<()> {
    if ctx.mount_ns {
        // Keep the container's mounts from propagating to the host.
        set_propagation(Path::new("/"), MsFlags::MS_SLAVE | MsFlags::MS_REC)?;
    }
    let root = ctx.rootfs.to_string_lossy();
    match mount_at(
        Some(&root),
        ctx.rootfs,
        Some("bind"),
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    ) {
        Err(Error::Sys {
            source: nix::Error::EACCES,
            ..
        }) if ctx.user_ns => {
            return Err(Error::InvalidSpec(format!(
                "the rootfs {root} is not reachable by the container's root user: make it and \
                 every parent directory searchable (o+x) by the mapped host uid"
            )))
        }
        r => r?,
    }
    let mounts: &[Mount] = spec.mounts().as_deref().unwrap_or(&[]);
    for m in mounts {
        mount_one(m, ctx)?;
    }
    let mut devs = Vec::new();
    if mounts.iter().any(|m| m.destination() == Path::new("/dev")) {
        devs = devices::default_devices();
    }
    let spec_devices = spec.linux().as_ref().and_then(|l| l.devices().clone());
    for d in spec_devices.unwrap_or_default() {
        let dev = devices::from_spec(&d)?;
        devs.retain(|x| x.path != dev.path);
        devs.push(dev);
    }
    devices::create(ctx.rootfs, &devs, ctx.user_ns)?;
    devices::create_symlinks(ctx.rootfs)?;
    if let Some(console) = &ctx.console {
        let dest = resolve_in_root(ctx.rootfs, Path::new("/dev/console"))?;
        ensure_file(&dest)?;
        let src = console.to_string_lossy();
        mount_at(Some(&src), &dest, Some("bind"), MsFlags::MS_BIND, None)?;
    }
    Ok(())
}

fn mount_one(m: &Mount, ctx: &Context<'_>) -> Result<()> {
    let typ = m.typ().as_deref().unwrap_or("");
    let opts = MountOptions::parse(m.options().as_deref().unwrap_or(&[]))?;
    if !m.destination().is_absolute() {
        return Err(Error::InvalidSpec(format!(
            "mount destination {} must be absolute",
            m.destination().display()
        )));
    }
    let dest = resolve_in_root(ctx.rootfs, m.destination())?;
    let source = m
        .source()
        .as_ref()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| typ.to_string());
    tracing::debug!(destination = %m.destination().display(), typ, source, "mount");
    if typ == "bind" || opts.is_bind() {
        let src = if Path::new(&source).is_absolute() {
            PathBuf::from(&source)
        } else {
            ctx.bundle.join(&source)
        };
        return bind_mount(&src, &dest, &opts);
    }
    match typ {
        "cgroup" | "cgroup2" => cgroupfs::mount(&dest, &opts, ctx),
        "sysfs" => fs_or_bind("sysfs", "sysfs", Path::new("/sys"), &dest, &opts),
        "mqueue" => fs_or_bind("mqueue", "mqueue", Path::new("/dev/mqueue"), &dest, &opts),
        _ => {
            ensure_dir(&dest)?;
            let original = if opts.tmpcopyup && typ == "tmpfs" {
                Some(open_dir(&dest)?)
            } else {
                None
            };
            let data = opts.data_string();
            mount_at(Some(&source), &dest, Some(typ), opts.flags, data.as_deref())?;
            if let Some(original) = original {
                copy_up(&original, &dest)?;
            }
            apply_propagation(&dest, &opts)
        }
    }
}

pub(crate) fn apply_propagation(dest: &Path, opts: &MountOptions) -> Result<()> {
    for p in &opts.propagation {
        set_propagation(dest, *p)?;
    }
    Ok(())
}

/// Bind-mounts `src` on `dest`, then remounts with the requested flags.
fn bind_mount(src: &Path, dest: &Path, opts: &MountOptions) -> Result<()> {
    let md = fs::metadata(src).map_err(|e| Error::io("stat bind source", src, e))?;
    if md.is_dir() {
        ensure_dir(dest)?;
    } else {
        ensure_file(dest)?;
    }
    let recursive = opts.flags & MsFlags::MS_REC;
    let src_str = src.to_string_lossy();
    mount_at(
        Some(&src_str),
        dest,
        Some("bind"),
        MsFlags::MS_BIND | recursive,
        None,
    )?;
    let extra = opts.flags - (MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT);
    if !extra.is_empty() {
        bind_remount(dest, extra)?;
    }
    apply_propagation(dest, opts)
}

/// Mounts a new instance of `fstype`; where the kernel refuses (a user namespace that does not
/// own the network or ipc namespace), bind-mounts the host's `fallback` instead, like runc.
fn fs_or_bind(
    source: &str,
    fstype: &str,
    fallback: &Path,
    dest: &Path,
    opts: &MountOptions,
) -> Result<()> {
    ensure_dir(dest)?;
    let data = opts.data_string();
    match mount_at(
        Some(source),
        dest,
        Some(fstype),
        opts.flags,
        data.as_deref(),
    ) {
        Ok(()) => apply_propagation(dest, opts),
        Err(Error::Sys {
            source: nix::Error::EPERM,
            ..
        }) => {
            tracing::debug!(fstype, "mount refused; bind-mounting the host's instance");
            let mut bind = opts.clone();
            bind.flags |= MsFlags::MS_BIND | MsFlags::MS_REC;
            bind_mount(fallback, dest, &bind)
        }
        Err(e) => Err(e),
    }
}

fn open_dir(path: &Path) -> Result<OwnedFd> {
    let fd = open(
        path,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .sys(|| format!("open {}", path.display()))?;
    // SAFETY: `open` returned a fresh descriptor that nothing else owns.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

/// Copies the contents of the overmounted directory (still reachable through `original`) into
/// the new tmpfs at `dest`.
fn copy_up(original: &OwnedFd, dest: &Path) -> Result<()> {
    let src = PathBuf::from(format!("/proc/self/fd/{}", original.as_raw_fd()));
    let md = fs::metadata(&src).map_err(|e| Error::io("stat", &src, e))?;
    copy_tree(&src, dest)?;
    fs::set_permissions(dest, fs::Permissions::from_mode(md.mode() & 0o7777))
        .map_err(|e| Error::io("chmod", dest, e))?;
    std::os::unix::fs::lchown(dest, Some(md.uid()), Some(md.gid()))
        .map_err(|e| Error::io("chown", dest, e))
}

fn copy_tree(src: &Path, dest: &Path) -> Result<()> {
    let entries = fs::read_dir(src).map_err(|e| Error::io("read directory", src, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("read directory", src, e))?;
        let from = entry.path();
        let to = dest.join(entry.file_name());
        let md = fs::symlink_metadata(&from).map_err(|e| Error::io("stat", &from, e))?;
        let ft = md.file_type();
        if ft.is_symlink() {
            let target = fs::read_link(&from).map_err(|e| Error::io("readlink", &from, e))?;
            std::os::unix::fs::symlink(target, &to).map_err(|e| Error::io("symlink", &to, e))?;
        } else if ft.is_dir() {
            fs::create_dir(&to).map_err(|e| Error::io("mkdir", &to, e))?;
            copy_tree(&from, &to)?;
        } else if ft.is_file() {
            fs::copy(&from, &to).map_err(|e| Error::io("copy", &to, e))?;
        } else {
            continue; // sockets, fifos and devices are not copied
        }
        if !ft.is_symlink() {
            fs::set_permissions(&to, fs::Permissions::from_mode(md.mode() & 0o7777))
                .map_err(|e| Error::io("chmod", &to, e))?;
        }
        std::os::unix::fs::lchown(&to, Some(md.uid()), Some(md.gid()))
            .map_err(|e| Error::io("chown", &to, e))?;
    }
    Ok(())
}

/// How the init makes the rootfs its root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SwitchRoot {
    /// pivot_root, then the old root is made private and detached.
    Pivot,
    /// Move the rootfs onto / and chroot (`--no-pivot`, for ramfs roots).
    Move,
    /// chroot only: the container shares the runtime's mount namespace, whose root must stay.
    Chroot,
}

/// Makes `rootfs` the root, the way `how` says.
pub(crate) fn switch_root(rootfs: &Path, how: SwitchRoot) -> Result<()> {
    chdir(rootfs).sys(|| format!("chdir {}", rootfs.display()))?;
    if how == SwitchRoot::Chroot {
        chroot(".").sys(|| "chroot into the rootfs".into())?;
    } else if how == SwitchRoot::Move {
        let root = rootfs.to_string_lossy();
        mount_at(Some(&root), Path::new("/"), None, MsFlags::MS_MOVE, None)?;
        chroot(".").sys(|| "chroot into the rootfs".into())?;
    } else {
        // pivot_root(".", ".") stacks the old root on top of the new one; unmounting "."
        // then removes it without needing a directory for it in the rootfs.
        pivot_root(".", ".").sys(|| format!("pivot_root to {}", rootfs.display()))?;
        set_propagation(Path::new("."), MsFlags::MS_PRIVATE | MsFlags::MS_REC)?;
        umount2(".", MntFlags::MNT_DETACH).sys(|| "detach the old root".into())?;
    }
    chdir("/").sys(|| "chdir / in the new root".into())
}

/// After switching root: the requested rootfs propagation, read-only paths, masked paths and a
/// read-only root.
pub(crate) fn finalize(spec: &Spec) -> Result<()> {
    let linux = spec.linux().as_ref();
    if let Some(prop) = linux.and_then(|l| l.rootfs_propagation().as_deref()) {
        let flags = match prop {
            "" => None,
            "private" => Some(MsFlags::MS_PRIVATE),
            "rprivate" => Some(MsFlags::MS_PRIVATE | MsFlags::MS_REC),
            "slave" => Some(MsFlags::MS_SLAVE),
            "rslave" => Some(MsFlags::MS_SLAVE | MsFlags::MS_REC),
            "shared" => Some(MsFlags::MS_SHARED),
            "rshared" => Some(MsFlags::MS_SHARED | MsFlags::MS_REC),
            "unbindable" => Some(MsFlags::MS_UNBINDABLE),
            "runbindable" => Some(MsFlags::MS_UNBINDABLE | MsFlags::MS_REC),
            other => {
                return Err(Error::InvalidSpec(format!(
                    "linux.rootfsPropagation {other:?} is not a propagation mode"
                )))
            }
        };
        if let Some(flags) = flags {
            set_propagation(Path::new("/"), flags)?;
        }
    }
    for p in linux
        .and_then(|l| l.readonly_paths().clone())
        .unwrap_or_default()
    {
        readonly_path(Path::new(&p))?;
    }
    for p in linux
        .and_then(|l| l.masked_paths().clone())
        .unwrap_or_default()
    {
        mask_path(Path::new(&p))?;
    }
    if spec.root().as_ref().and_then(|r| r.readonly()) == Some(true) {
        bind_remount(Path::new("/"), MsFlags::MS_RDONLY)?;
    }
    Ok(())
}

fn readonly_path(path: &Path) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    let s = path.to_string_lossy();
    mount_at(
        Some(&s),
        path,
        Some("bind"),
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )?;
    bind_remount(path, MsFlags::MS_RDONLY)
}

fn mask_path(path: &Path) -> Result<()> {
    let md = match fs::metadata(path) {
        Ok(md) => md,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("stat masked path", path, e)),
    };
    if md.is_dir() {
        mount_at(Some("tmpfs"), path, Some("tmpfs"), MsFlags::MS_RDONLY, None)
    } else {
        mount_at(
            Some("/dev/null"),
            path,
            Some("bind"),
            MsFlags::MS_BIND,
            None,
        )
    }
}
