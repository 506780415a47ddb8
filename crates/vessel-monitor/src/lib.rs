//! The per-instance monitor: the small process that owns a running container's terminal, log
//! and exit status, so that containers outlive the daemon (like conmon for podman).
//!
//! The daemon writes a [`MonitorConfig`] as JSON and starts `vessel-monitor CONFIG`. The monitor
//! mounts the instance's overlay root (its image layers idmapped to the instance's id range,
//! see [`idmap`]), stages its volumes as idmapped mounts for the runtime to bind, creates and
//! starts the container through `vessel-container`, binds its socket, prints one [`Ready`]
//! line on its stdout (so an attach right after the start finds the socket), then serves
//! console attaches on it (frames of `vessel_api::stream`) until the container's init exits.
//! It then writes an [`ExitStatus`] file, removes the container (cgroup included), unmounts
//! the root and exits. The daemon follows it through a pidfd and can re-adopt it after a restart.
//!
//! `vessel-monitor --console-log PATH` is its second role: the sink of a VM's console log
//! (QEMU writes the log into a pipe, the sink keeps it bounded; see [`log`]).

pub mod log;

pub mod disk;
pub mod idmap;

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use disk::{DiskSource, RootDisk};
pub use idmap::{IdMap, IdmapError};

/// What the daemon tells a monitor.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MonitorConfig {
    /// Container id for the runtime (the instance name).
    pub id: String,
    /// OCI bundle directory holding `config.json`.
    pub bundle: PathBuf,
    /// Runtime state directory (like runc's `--root`).
    pub state_root: PathBuf,
    /// The OCI runtime binary (`vessel-runc`).
    pub runtime: PathBuf,
    /// Unix socket for console attaches.
    pub socket: PathBuf,
    /// Console log file.
    pub log: PathBuf,
    /// Where the monitor records its own pid, so a restarted daemon can find it.
    pub pid_file: PathBuf,
    /// Where to write the [`ExitStatus`] when the init exits.
    pub exit_file: PathBuf,
    /// Overlay root to mount before creating the container and unmount after.
    pub overlay: Option<Overlay>,
    /// Volumes staged as idmapped mounts until the runtime has bound them into the container.
    #[serde(default)]
    pub binds: Vec<StagedBind>,
}

/// An overlay mount of an image's layers and a per-instance upper layer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Overlay {
    /// Read-only image layers as stored (owned by the container's own ids), top first.
    pub lowers: Vec<PathBuf>,
    /// The instance's writable layer.
    pub upper: PathBuf,
    /// Overlayfs work directory (same file system as `upper`).
    pub work: PathBuf,
    /// Mount point (the bundle's root path).
    pub target: PathBuf,
    /// The instance's id map: each lower layer is stacked through an idmapped mount of it
    /// (`None` for a privileged instance, whose layers are stacked as stored).
    #[serde(default)]
    pub idmap: Option<IdMap>,
    /// The instance's own directory for staged idmapped mounts.
    #[serde(default)]
    pub stage: PathBuf,
    /// The disk holding `upper` and `work`, mounted before the overlay and unmounted after
    /// it (`None`: they are plain directories of the daemon's or a pool's file system).
    #[serde(default)]
    pub disk: Option<RootDisk>,
}

impl Overlay {
    /// Mount options for overlayfs over the given lower directories (top first).
    pub fn options(&self, lowers: &[PathBuf]) -> String {
        let lowers: Vec<String> = lowers.iter().map(|p| p.display().to_string()).collect();
        format!(
            "lowerdir={},upperdir={},workdir={}",
            lowers.join(":"),
            self.upper.display(),
            self.work.display()
        )
    }

    /// Mounts the root on `target`: its disk first, if it has one. With an id map, each
    /// layer is first mounted idmapped under `stage` (`layer-N`); overlayfs keeps private
    /// clones of its layers, so the staged mounts are detached again once the overlay is up,
    /// whatever happened. On failure nothing stays mounted.
    pub fn mount(&self) -> Result<(), IdmapError> {
        let Some(disk) = &self.disk else {
            return self.mount_overlay();
        };
        disk.mount()?;
        let mounted = disk.release_reserve().and_then(|()| self.mount_overlay());
        if mounted.is_err() {
            let _ = disk.unmount();
            return mounted;
        }
        // The root works without it (only a later mount on a full disk would suffer), and it
        // was just given back, so only a disk filled meanwhile by something else fails here.
        let _ = disk.keep_reserve();
        Ok(())
    }

    fn mount_overlay(&self) -> Result<(), IdmapError> {
        let lowers = match &self.idmap {
            None => self.lowers.clone(),
            Some(map) => {
                let ns = idmap::userns(map)?;
                let staged = self.stage_layers(&ns);
                if staged.is_err() {
                    let _ = self.unstage();
                }
                staged?
            }
        };
        // An unprivileged container's root opens no device node: its devices are the nodes
        // the runtime binds into its own /dev. A node in a layer or in the upper layer (one
        // an archive or a privileged neighbour left there) stays a name, whatever the devices
        // cgroup allows (the v2 backend enforces no device list).
        let flags = if self.idmap.is_some() {
            nix::mount::MsFlags::MS_NODEV
        } else {
            nix::mount::MsFlags::empty()
        };
        let mounted = nix::mount::mount(
            Some("overlay"),
            &self.target,
            Some("overlay"),
            flags,
            Some(self.options(&lowers).as_str()),
        )
        .map_err(|e| IdmapError::Sys {
            what: "mounting the overlay root",
            path: self.target.clone(),
            source: e.into(),
        });
        let unstaged = if self.idmap.is_some() {
            self.unstage()
        } else {
            Ok(())
        };
        mounted?;
        unstaged
    }

    fn stage_layers(&self, ns: &OwnedFd) -> Result<Vec<PathBuf>, IdmapError> {
        let mut out = Vec::with_capacity(self.lowers.len());
        for (i, layer) in self.lowers.iter().enumerate() {
            let at = self.stage.join(format!("layer-{i}"));
            make_mount_point(&at, true)?;
            idmap::mount(layer, &at, ns, false)?;
            out.push(at);
        }
        Ok(out)
    }

    fn unstage(&self) -> Result<(), IdmapError> {
        if self.stage.as_os_str().is_empty() {
            return Ok(());
        }
        idmap::unmount_all(&self.stage)
    }

    /// Unmounts the root, whatever is still staged and the disk; safe to call when nothing
    /// is mounted.
    pub fn unmount(&self) -> Result<(), IdmapError> {
        let mut first = None;
        if is_mountpoint(&self.target) {
            if let Err(e) = nix::mount::umount2(&self.target, nix::mount::MntFlags::MNT_DETACH) {
                first = Some(IdmapError::Sys {
                    what: "unmounting the root",
                    path: self.target.clone(),
                    source: e.into(),
                });
            }
        }
        let unstaged = self.unstage();
        let undisked = self.disk.as_ref().map_or(Ok(()), RootDisk::unmount);
        match first {
            Some(e) => Err(e),
            None => unstaged.and(undisked),
        }
    }
}

/// A directory (a filesystem volume) or a file (the daemon's resolv.conf) to show inside a
/// container through an idmapped mount staged at `target`, which the container's spec names
/// as the bind source.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StagedBind {
    /// The directory or file as stored.
    pub source: PathBuf,
    /// Where the idmapped mount is staged (under the instance's own directory).
    pub target: PathBuf,
    /// How its stored owners map to the container's host ids.
    pub idmap: IdMap,
}

/// Mounts each bind's source idmapped at its target (one user namespace per distinct map).
/// On failure nothing stays mounted.
pub fn stage_binds(binds: &[StagedBind]) -> Result<(), IdmapError> {
    let mut namespaces: Vec<(IdMap, OwnedFd)> = Vec::new();
    let result = (|| {
        for b in binds {
            let ns = match namespaces.iter().position(|(m, _)| *m == b.idmap) {
                Some(i) => &namespaces[i].1,
                None => {
                    namespaces.push((b.idmap, idmap::userns(&b.idmap)?));
                    &namespaces[namespaces.len() - 1].1
                }
            };
            make_mount_point(&b.target, b.source.is_dir())?;
            idmap::mount(&b.source, &b.target, ns, true)?;
        }
        Ok(())
    })();
    if result.is_err() {
        unstage_binds(binds);
    }
    result
}

/// Detaches staged binds (the container's own mounts of them stay).
pub fn unstage_binds(binds: &[StagedBind]) {
    for b in binds {
        let _ = idmap::unmount_all(&b.target);
    }
}

/// Makes `p` a mount point of the source's kind: a directory for a directory, an empty file
/// for a file (a file cannot be mounted on a directory, nor a directory on a file). One of the
/// other kind left by an earlier start (the staged binds are numbered) is replaced.
fn make_mount_point(p: &Path, dir: bool) -> Result<(), IdmapError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let sys = |what: &'static str| {
        move |e: std::io::Error| IdmapError::Sys {
            what,
            path: p.to_path_buf(),
            source: e,
        }
    };
    if let Some(parent) = p.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(parent)
            .map_err(|e| IdmapError::Sys {
                what: "creating the staging directory",
                path: parent.to_path_buf(),
                source: e,
            })?;
    }
    match std::fs::symlink_metadata(p) {
        Ok(md) if md.is_dir() == dir => return Ok(()),
        Ok(md) if md.is_dir() => std::fs::remove_dir(p).map_err(sys("removing a mount point"))?,
        Ok(_) => std::fs::remove_file(p).map_err(sys("removing a mount point"))?,
        Err(_) => {}
    }
    if dir {
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(p)
            .map_err(sys("creating a mount point"))
    } else {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(p)
            .map(drop)
            .map_err(sys("creating a mount point"))
    }
}

/// The one line a monitor prints on stdout once the container runs (or could not start).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Ready {
    /// The container's init runs with this host pid.
    Running {
        /// Host pid of the init.
        pid: i32,
    },
    /// Starting failed; nothing is left mounted or running.
    Failed {
        /// What went wrong.
        error: String,
    },
}

/// How the container's init ended, written to [`MonitorConfig::exit_file`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExitStatus {
    /// Exit code, or 128 + signal number when killed by a signal.
    pub exit_code: i32,
    /// Signal that killed it, if any.
    pub signal: Option<i32>,
    /// When it ended, seconds since the epoch.
    pub finished_at: u64,
}

/// Receives the terminal master an OCI runtime sends over a `--console-socket` (SCM_RIGHTS).
///
/// Waits until the runtime connects, `gave_up()` says to stop waiting (the runtime ended
/// without connecting), or `timeout` passes.
pub fn receive_console(
    listener: &UnixListener,
    timeout: Duration,
    mut gave_up: impl FnMut() -> bool,
) -> std::io::Result<OwnedFd> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};

    let deadline = Instant::now() + timeout;
    loop {
        let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        if poll(&mut fds, PollTimeout::from(100u16))? > 0 {
            break;
        }
        if gave_up() {
            return Err(std::io::Error::other(
                "the runtime ended without handing over the terminal",
            ));
        }
        if Instant::now() > deadline {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the runtime did not hand over the terminal in time",
            ));
        }
    }
    let (conn, _) = listener.accept()?;
    let mut buf = [0u8; 4096];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(
        conn.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            if let Some(&fd) = fds.first() {
                // SAFETY: SCM_RIGHTS gave us a new descriptor that nothing else owns.
                return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    Err(std::io::Error::other("the runtime sent no descriptor"))
}

/// Whether `p` is a mount point in the caller's mount namespace.
pub fn is_mountpoint(p: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let p = p.to_string_lossy();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|m| m == p)
}

/// Brings the loopback interface up in the network namespace of process `pid`: a new
/// namespace has it down, and 127.0.0.1 is unreachable until then (Docker and Incus bring it
/// up too). Refuses to act when `pid` shares the caller's own namespace, so the host's
/// loopback is never touched.
pub fn loopback_up(pid: i32) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let theirs = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
    let own = std::fs::metadata("/proc/thread-self/ns/net")?;
    let md = theirs.metadata()?;
    if (md.dev(), md.ino()) == (own.dev(), own.ino()) {
        return Err(std::io::Error::other(
            "the container shares the host's network namespace",
        ));
    }
    // A socket belongs to the namespace it was made in: a helper thread joins the container's
    // namespace (no other thread moves) and makes one; the interface ioctls act there.
    let fd = theirs.as_raw_fd();
    let sock = std::thread::scope(|s| {
        s.spawn(move || -> std::io::Result<OwnedFd> {
            // SAFETY: setns reads the descriptor number and moves only this helper thread,
            // which ends right after.
            if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // SAFETY: plain socket(2) with constant arguments; the result is checked.
            let raw =
                unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
            if raw < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // SAFETY: `raw` is a new descriptor nothing else owns.
            Ok(unsafe { OwnedFd::from_raw_fd(raw) })
        })
        .join()
        .map_err(|_| std::io::Error::other("the namespace helper thread panicked"))?
    })?;
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS fills the flags of the ifreq it is given, which lives on our stack
    // for the whole call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just wrote the flags member of the union.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    req.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
    // SAFETY: SIOCSIFFLAGS reads the ifreq, which lives on our stack for the whole call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    fn tempdir() -> PathBuf {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let d = std::env::temp_dir().join(format!(
            "vessel-monitor-test-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// Needs root and mkfs.ext4: an ext4 root filled to its last block mounts writable
    /// again, also while the last mount's overlay is still alive (a file of it held open
    /// keeps it, and the block of its work directory, after the detaching unmount).
    #[test]
    fn a_full_image_root_mounts_writable_again_while_the_last_one_lingers() {
        use nix::sys::statvfs::{statvfs, FsFlags};
        assert!(nix::unistd::geteuid().is_root(), "this test needs root");
        let d = tempdir();
        let (layer, target, mount, image) = (
            d.join("layer"),
            d.join("rootfs"),
            d.join("disk"),
            d.join("root.img"),
        );
        let template = d.join("template");
        for p in [&layer, &target, &mount, &template] {
            std::fs::create_dir(p).unwrap();
        }
        for sub in ["upper", "work"] {
            std::fs::create_dir(template.join(sub)).unwrap();
        }
        std::fs::File::create(&image)
            .unwrap()
            .set_len(32 << 20)
            .unwrap();
        let out = std::process::Command::new("mkfs.ext4")
            .args(["-q", "-F", "-m", "0", "-d"])
            .arg(&template)
            .arg(&image)
            .output()
            .expect("mkfs.ext4 (e2fsprogs) is needed");
        assert!(out.status.success(), "{out:?}");
        let o = Overlay {
            lowers: vec![layer],
            upper: mount.join("upper"),
            work: mount.join("work"),
            target: target.clone(),
            idmap: None,
            stage: d.join("mnt"),
            disk: Some(disk::RootDisk {
                source: disk::DiskSource::Image(image),
                mount: mount.clone(),
            }),
        };
        // Unmounts and removes everything, also when an assertion fails.
        struct Cleanup<'a>(&'a Overlay, PathBuf);
        impl Drop for Cleanup<'_> {
            fn drop(&mut self) {
                let _ = self.0.unmount();
                let _ = std::fs::remove_dir_all(&self.1);
            }
        }
        let _cleanup = Cleanup(&o, d.clone());
        let writable = || {
            !statvfs(&target)
                .unwrap()
                .flags()
                .contains(FsFlags::ST_RDONLY)
        };
        for round in 0..2 {
            o.mount().unwrap();
            assert!(writable(), "round {round}: the root mounted read-only");
            // Fill it: one large file, then small ones until not even a block is left.
            let mut f = std::fs::File::create(target.join("big")).unwrap();
            while std::io::Write::write_all(&mut f, &[7u8; 1 << 16]).is_ok() {}
            drop(f);
            let mut i = 0;
            while std::fs::write(target.join(format!("f{i}")), b"x").is_ok() {
                i += 1;
            }
            // Mounted again three times, full, each time while every earlier mount lingers.
            let mut held = Vec::new();
            for again in 0..3 {
                held.push(std::fs::File::open(target.join("big")).unwrap());
                o.unmount().unwrap();
                o.mount().unwrap();
                assert!(
                    writable(),
                    "round {round}, mount {again}: a full root mounted read-only"
                );
            }
            drop(held);
            // Its files can be removed, and the next round fills it again.
            std::fs::remove_file(target.join("big")).unwrap();
            for n in 0..i {
                std::fs::remove_file(target.join(format!("f{n}"))).unwrap();
            }
            o.unmount().unwrap();
        }
        assert!(idmap::mounts_under(&d).is_empty());
    }

    /// Needs root: stacks an idmapped layer under a plain upper layer for real.
    #[test]
    fn idmapped_layers_show_the_instance_ids_and_leave_nothing_mounted() {
        assert!(nix::unistd::geteuid().is_root(), "this test needs root");
        let d = tempdir();
        let (layer, upper, work, target, stage) = (
            d.join("layer"),
            d.join("upper"),
            d.join("work"),
            d.join("rootfs"),
            d.join("mnt"),
        );
        for p in [&layer, &upper, &work, &target] {
            std::fs::create_dir(p).unwrap();
        }
        let host = 3_000_000;
        std::os::unix::fs::chown(&upper, Some(host), Some(host)).unwrap();
        std::fs::write(layer.join("root-file"), b"r").unwrap();
        std::fs::write(layer.join("user-file"), b"u").unwrap();
        std::os::unix::fs::chown(layer.join("user-file"), Some(1000), Some(1000)).unwrap();
        let o = Overlay {
            lowers: vec![layer.clone()],
            upper: upper.clone(),
            work,
            target: target.clone(),
            idmap: Some(IdMap {
                inside: 0,
                host,
                size: 65_536,
            }),
            stage: stage.clone(),
            disk: None,
        };
        o.mount().unwrap();
        assert!(is_mountpoint(&target));
        assert!(
            idmap::mounts_under(&stage).is_empty(),
            "staged layers are detached once the overlay is up"
        );
        let md = std::fs::metadata(target.join("root-file")).unwrap();
        assert_eq!((md.uid(), md.gid()), (host, host));
        let md = std::fs::metadata(target.join("user-file")).unwrap();
        assert_eq!(md.uid(), host + 1000);
        // A change copies the file up, owned by the instance's ids; the layer is untouched.
        std::fs::write(target.join("user-file"), b"changed").unwrap();
        assert_eq!(
            std::fs::metadata(upper.join("user-file")).unwrap().uid(),
            host + 1000
        );
        assert_eq!(
            std::fs::metadata(layer.join("user-file")).unwrap().uid(),
            1000
        );
        assert_eq!(std::fs::read(layer.join("user-file")).unwrap(), b"u");
        o.unmount().unwrap();
        assert!(!is_mountpoint(&target));

        // A volume staged for the runtime: shown shifted, stored unshifted.
        let vol = d.join("vol");
        std::fs::create_dir(&vol).unwrap();
        let bind = StagedBind {
            source: vol.clone(),
            target: stage.join("vol-0"),
            idmap: IdMap {
                inside: 0,
                host,
                size: 65_536,
            },
        };
        stage_binds(std::slice::from_ref(&bind)).unwrap();
        assert_eq!(std::fs::metadata(&bind.target).unwrap().uid(), host);
        unstage_binds(std::slice::from_ref(&bind));
        assert!(idmap::mounts_under(&d).is_empty());
        // A file (the daemon's resolv.conf) staged where a directory was staged before.
        let file = d.join("resolv.conf");
        std::fs::write(&file, b"nameserver 10.42.0.1\n").unwrap();
        let bind = StagedBind {
            source: file,
            ..bind
        };
        stage_binds(std::slice::from_ref(&bind)).unwrap();
        assert_eq!(std::fs::metadata(&bind.target).unwrap().uid(), host);
        assert_eq!(
            std::fs::read(&bind.target).unwrap(),
            b"nameserver 10.42.0.1\n"
        );
        unstage_binds(std::slice::from_ref(&bind));
        assert!(idmap::mounts_under(&d).is_empty());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
