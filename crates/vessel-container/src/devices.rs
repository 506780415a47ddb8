//! Device nodes in the container's /dev: the default set (null, zero, full, random, urandom,
//! tty) and `linux.devices`, made with mknod when the runtime is privileged in the container's
//! user namespace, or bind-mounted from the host inside a user namespace (where mknod is not
//! allowed). Also the standard /dev symlinks and /dev/ptmx.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use nix::unistd::{chown, Gid, Uid};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType};

use crate::error::{Error, Result, SysContext};
use crate::mounts::{ensure_dir, ensure_file, mount_at, resolve_in_root};

/// A device node to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Device {
    /// Path in the container.
    pub path: PathBuf,
    /// `S_IFCHR`, `S_IFBLK` or `S_IFIFO`.
    pub kind: SFlag,
    pub major: u64,
    pub minor: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// The devices every container gets.
pub(crate) fn default_devices() -> Vec<Device> {
    [
        ("/dev/null", 1, 3),
        ("/dev/zero", 1, 5),
        ("/dev/full", 1, 7),
        ("/dev/random", 1, 8),
        ("/dev/urandom", 1, 9),
        ("/dev/tty", 5, 0),
    ]
    .into_iter()
    .map(|(path, major, minor)| Device {
        path: path.into(),
        kind: SFlag::S_IFCHR,
        major,
        minor,
        mode: 0o666,
        uid: 0,
        gid: 0,
    })
    .collect()
}

/// Converts a spec device.
pub(crate) fn from_spec(d: &LinuxDevice) -> Result<Device> {
    let kind = match d.typ() {
        LinuxDeviceType::C | LinuxDeviceType::U => SFlag::S_IFCHR,
        LinuxDeviceType::B => SFlag::S_IFBLK,
        LinuxDeviceType::P => SFlag::S_IFIFO,
        LinuxDeviceType::A => {
            return Err(Error::InvalidSpec(format!(
                "device {} has type \"a\", which is only valid in cgroup device rules",
                d.path().display()
            )))
        }
    };
    let num = |n: i64, what: &str| {
        u64::try_from(n).map_err(|_| {
            Error::InvalidSpec(format!(
                "device {} has a negative {what}",
                d.path().display()
            ))
        })
    };
    if !d.path().is_absolute() {
        return Err(Error::InvalidSpec(format!(
            "device path {} must be absolute",
            d.path().display()
        )));
    }
    Ok(Device {
        path: d.path().clone(),
        kind,
        major: num(d.major(), "major")?,
        minor: num(d.minor(), "minor")?,
        mode: d.file_mode().unwrap_or(0o666) & 0o7777,
        uid: d.uid().unwrap_or(0),
        gid: d.gid().unwrap_or(0),
    })
}

/// Creates `devices` under `rootfs` (before pivot_root). With `bind`, each is a bind mount of
/// the same path on the host.
pub(crate) fn create(rootfs: &Path, devices: &[Device], bind: bool) -> Result<()> {
    for dev in devices {
        let dest = resolve_in_root(rootfs, &dev.path)?;
        if let Some(parent) = dest.parent() {
            ensure_dir(parent)?;
        }
        if bind {
            ensure_file(&dest)?;
            let src = dev.path.to_string_lossy();
            mount_at(Some(&src), &dest, Some("bind"), MsFlags::MS_BIND, None)?;
            continue;
        }
        match fs::remove_file(&dest) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("remove existing device", &dest, e)),
        }
        mknod(
            &dest,
            dev.kind,
            Mode::from_bits_truncate(dev.mode),
            makedev(dev.major, dev.minor),
        )
        .sys(|| format!("mknod {} ({}:{})", dest.display(), dev.major, dev.minor))?;
        // mknod applies the umask: set the mode exactly.
        fs::set_permissions(
            &dest,
            std::os::unix::fs::PermissionsExt::from_mode(dev.mode),
        )
        .map_err(|e| Error::io("chmod", &dest, e))?;
        chown(
            &dest,
            Some(Uid::from_raw(dev.uid)),
            Some(Gid::from_raw(dev.gid)),
        )
        .sys(|| format!("chown {}", dest.display()))?;
    }
    Ok(())
}

/// The standard symlinks: /dev/fd, stdin, stdout, stderr, and /dev/ptmx pointing at the
/// container's own devpts instance.
pub(crate) fn create_symlinks(rootfs: &Path) -> Result<()> {
    let dev = resolve_in_root(rootfs, Path::new("/dev"))?;
    for (target, name) in [
        ("/proc/self/fd", "fd"),
        ("/proc/self/fd/0", "stdin"),
        ("/proc/self/fd/1", "stdout"),
        ("/proc/self/fd/2", "stderr"),
    ] {
        let link = dev.join(name);
        match symlink(target, &link) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io("create symlink", link, e)),
        }
    }
    if dev.join("pts/ptmx").exists() {
        let ptmx = dev.join("ptmx");
        match fs::remove_file(&ptmx) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("remove", &ptmx, e)),
        }
        symlink("pts/ptmx", &ptmx).map_err(|e| Error::io("create symlink", &ptmx, e))?;
    }
    Ok(())
}

/// Cgroup device rules for `resources`: the spec's rules, then (when the spec restricts
/// devices at all) rules allowing the default devices, /dev/pts, /dev/ptmx, mknod of any node
/// and the spec's `linux.devices`, as runc adds them. Without these a deny-all rule (podman's
/// default) would forbid even /dev/null.
pub(crate) fn with_device_rules(
    resources: &oci_spec::runtime::LinuxResources,
    spec_devices: &[LinuxDevice],
) -> oci_spec::runtime::LinuxResources {
    use oci_spec::runtime::LinuxDeviceCgroup;
    let mut rules: Vec<LinuxDeviceCgroup> = resources.devices().clone().unwrap_or_default();
    if rules.is_empty() {
        return resources.clone();
    }
    let rule = |typ: LinuxDeviceType, major: Option<i64>, minor: Option<i64>, access: &str| {
        let mut r = LinuxDeviceCgroup::default();
        r.set_allow(true);
        r.set_typ(Some(typ));
        r.set_major(major);
        r.set_minor(minor);
        r.set_access(Some(access.to_string()));
        r
    };
    rules.push(rule(LinuxDeviceType::C, None, None, "m"));
    rules.push(rule(LinuxDeviceType::B, None, None, "m"));
    for d in default_devices() {
        rules.push(rule(
            LinuxDeviceType::C,
            Some(d.major as i64),
            Some(d.minor as i64),
            "rwm",
        ));
    }
    rules.push(rule(LinuxDeviceType::C, Some(136), None, "rwm")); // /dev/pts/*
    rules.push(rule(LinuxDeviceType::C, Some(5), Some(2), "rwm")); // /dev/ptmx
    for d in spec_devices {
        if matches!(
            d.typ(),
            LinuxDeviceType::C | LinuxDeviceType::U | LinuxDeviceType::B
        ) {
            let typ = if d.typ() == LinuxDeviceType::B {
                LinuxDeviceType::B
            } else {
                LinuxDeviceType::C
            };
            rules.push(rule(typ, Some(d.major()), Some(d.minor()), "rwm"));
        }
    }
    let mut out = resources.clone();
    out.set_devices(Some(rules));
    out
}
