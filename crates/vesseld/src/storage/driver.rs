//! The pool driver trait every storage backend implements, and helpers shared by drivers.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use vessel_api::{PoolMember, ScrubResult, VolumeContent};
use vessel_nbd::BlockDevice;

use crate::error::{Error, Result};

/// How a block volume is reached.
pub enum BlockAccess {
    /// A raw image file on the host (dir, btrfs): QEMU opens it directly.
    File(PathBuf),
    /// A device inside the daemon (raid): served to QEMU and clients over NBD.
    Device(Arc<dyn BlockDevice>),
    /// An RBD image in a Ceph cluster (ceph): QEMU opens it through librbd.
    Rbd(super::ceph::RbdImage),
}

/// Progress callback of long pool work: (percent, stage).
pub type Progress<'a> = &'a (dyn Fn(u8, &str) + Sync);

/// One storage backend. Volumes are named by the service (validated names); snapshots are
/// per volume. Every method is blocking (the service calls them off the async runtime).
pub trait PoolDriver: Send + Sync {
    /// (capacity, used) in bytes.
    fn capacity(&self) -> Result<(u64, u64)>;
    /// Bytes new data can still take.
    fn available(&self) -> Result<u64> {
        let (capacity, used) = self.capacity()?;
        Ok(capacity.saturating_sub(used))
    }
    /// Creates an empty volume.
    fn create(&self, name: &str, content: VolumeContent, size: Option<u64>) -> Result<()>;
    /// Creates `name` as a writable copy of `source` (or of its snapshot `snap`).
    fn clone_volume(
        &self,
        source: &str,
        snap: Option<&str>,
        name: &str,
        content: VolumeContent,
    ) -> Result<()>;
    /// Removes a volume (its snapshots are removed first by the service).
    fn delete(&self, name: &str, content: VolumeContent) -> Result<()>;
    /// Changes a block volume's size or a filesystem volume's quota.
    fn resize(&self, name: &str, content: VolumeContent, size: u64) -> Result<()>;
    /// Takes a read-only snapshot.
    fn snapshot(&self, name: &str, content: VolumeContent, snap: &str) -> Result<()>;
    /// Removes a snapshot.
    fn delete_snapshot(&self, name: &str, content: VolumeContent, snap: &str) -> Result<()>;
    /// Makes the volume's content that of its snapshot.
    fn restore(&self, name: &str, content: VolumeContent, snap: &str) -> Result<()>;
    /// Bytes the volume uses in the pool.
    fn used(&self, name: &str, content: VolumeContent) -> Result<u64>;
    /// Bytes the volume's files take, those it shares with snapshots and clones included
    /// (what a copy of it holds; [`PoolDriver::used`] may count only its own).
    fn held(&self, name: &str, content: VolumeContent) -> Result<u64> {
        self.used(name, content)
    }
    /// Host directory of a filesystem volume.
    fn fs_path(&self, name: &str) -> Result<PathBuf>;
    /// A block volume.
    fn block(&self, name: &str) -> Result<BlockAccess>;
    /// `online`, `degraded`, or `unavailable` (more members out than the level survives).
    fn health(&self) -> String {
        "online".into()
    }
    /// Members (raid) or devices (btrfs).
    fn members(&self) -> Vec<PoolMember> {
        Vec::new()
    }
    /// Rebuild progress in percent, while one runs.
    fn rebuild_percent(&self) -> Option<u8> {
        None
    }
    /// Fails a member.
    /// Fails a member (`force`: also beyond what the level survives).
    fn fail_member(&self, _member: u32, _force: bool) -> Result<()> {
        Err(Error::invalid(
            "only raid pools have members to fail or replace",
        ))
    }
    /// Rebuilds a member onto `path`, at most `rate` bytes per second; `placed` is called
    /// once the new member holds its slot, before the rebuild (to record it: a daemon that
    /// dies during the rebuild must find the new member at its restart).
    fn replace_member(
        &self,
        _member: u32,
        _path: &Path,
        _rate: Option<u64>,
        _placed: &dyn Fn() -> Result<()>,
        _progress: Progress,
    ) -> Result<()> {
        Err(Error::invalid(
            "only raid pools have members to fail or replace",
        ))
    }
    /// The volumes the pool itself holds (name, bytes, whether a snapshot): what a pool
    /// adopted from a far copy is given records of.
    fn stored_volumes(&self) -> Vec<(String, u64, bool)> {
        Vec::new()
    }
    /// Gives failed slot `member` back the member that was in it (`path`: a far copy
    /// reachable again) and resyncs what it missed.
    fn readd_member(&self, _member: u32, _path: &str) -> Result<()> {
        Err(Error::invalid("only raid pools have members to re-add"))
    }
    /// Has `hook(slot)` confirm a member's failure before writes go on without it.
    fn on_member_failed(&self, _hook: vessel_raid::array::FailureHook) {}
    /// Finishes a rebuild an earlier daemon left unfinished (from its checkpoint).
    fn resume_rebuild(&self) -> Result<bool> {
        Ok(false)
    }
    /// Checks every stripe and repairs what disagrees.
    fn scrub(&self, _progress: Progress) -> Result<ScrubResult> {
        Err(Error::invalid(
            "only raid pools can be scrubbed by Vessel (btrfs pools: btrfs scrub)",
        ))
    }
    /// Whether clones keep reading their origin's data, so the origin cannot go first.
    fn clones_depend_on_origin(&self) -> bool {
        false
    }
    /// Releases what the pool holds open or mounted (the pool is being deleted, or another
    /// member took it over).
    fn close(&self) -> Result<()> {
        Ok(())
    }
    /// Makes what was written durable and leaves the pool as a clean stop would, still
    /// open (the daemon is stopping; running instances keep using it).
    fn quiesce(&self) -> Result<()> {
        Ok(())
    }
}

/// Runs a host tool; its stderr becomes the error.
pub fn run(tool: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(tool).args(args).output().map_err(|e| {
        Error::internal(format!(
            "cannot run {tool}: {e}; install it (see scripts/debian-packages.txt)"
        ))
    })?;
    if !out.status.success() {
        return Err(Error::internal(format!(
            "{tool} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// An I/O error with the path, as an internal error.
/// Sets who may reach a dir or btrfs pool's layout under `root`: filesystem volumes and
/// their snapshots hold containers' files with the containers' own ids (a file of container
/// root is a host-root file there, setuid bits included), so only host root enters `fs/`
/// and `snapshots/`; `block/` stays traversable because QEMU, run as its VM's own uid, opens
/// its disk files by path: each is 0600, root's or (while attached to a VM that started) that
/// VM's uid's. Disk files made before they were 0600 lose their group and other bits here.
pub fn secure_layout(root: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for (sub, mode) in [
        ("", 0o711),
        ("fs", 0o700),
        ("snapshots", 0o700),
        ("block", 0o711),
    ] {
        let p = root.join(sub);
        if p.is_dir() {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))
                .map_err(io_err("securing", &p))?;
        }
    }
    // dir pools: block/NAME.raw; btrfs pools: block/NAME/disk.raw.
    let block = root.join("block");
    for e in std::fs::read_dir(&block).into_iter().flatten().flatten() {
        let p = e.path();
        let disk = if p.is_dir() { p.join("disk.raw") } else { p };
        let Ok(md) = std::fs::symlink_metadata(&disk) else {
            continue;
        };
        let mode = md.permissions().mode();
        if md.is_file() && mode & 0o077 != 0 {
            std::fs::set_permissions(&disk, std::fs::Permissions::from_mode(mode & 0o700))
                .map_err(io_err("securing", &disk))?;
        }
    }
    Ok(())
}

pub fn io_err<'a>(what: &str, path: &'a Path) -> impl Fn(std::io::Error) -> Error + 'a {
    let what = what.to_string();
    move |e| Error::internal(format!("{what} {}: {e}", path.display()))
}

/// Bytes allocated under `path` (each inode once), like `du -s`.
pub fn tree_usage(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::HashSet::new();
    let mut total = 0u64;
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(md) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if seen.insert((md.dev(), md.ino())) {
            total += md.blocks() * 512;
        }
        if md.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
        }
    }
    total
}

/// Bytes the file system holding `path` has free for the daemon (root).
pub fn fs_available(path: &Path) -> Result<u64> {
    let st = nix::sys::statvfs::statvfs(path)
        .map_err(|e| Error::internal(format!("statvfs {}: {e}", path.display())))?;
    Ok(st.blocks_available() * st.fragment_size())
}

/// (capacity, used) of the file system holding `path`.
pub fn fs_capacity(path: &Path) -> Result<(u64, u64)> {
    let st = nix::sys::statvfs::statvfs(path)
        .map_err(|e| Error::internal(format!("statvfs {}: {e}", path.display())))?;
    let frsize = st.fragment_size();
    let total = st.blocks() * frsize;
    let free = st.blocks_available() * frsize;
    Ok((total, total.saturating_sub(free)))
}

/// Copies a tree keeping owners, modes, times, links and xattrs (reflinks where the file
/// system can).
pub fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    let (f, t) = (path_str(from)?, path_str(to)?);
    run(
        "cp",
        &["-a", "--reflink=auto", "--no-target-directory", f, t],
    )
    .map(|_| ())
}

/// Copies a sparse image file (reflinked where the file system can).
pub fn copy_image(from: &Path, to: &Path) -> Result<()> {
    let (f, t) = (path_str(from)?, path_str(to)?);
    run("cp", &["--reflink=auto", "--sparse=always", f, t]).map(|_| ())
}

/// A path as UTF-8 (pool paths are made by Vessel or given as UTF-8 JSON).
pub fn path_str(p: &Path) -> Result<&str> {
    p.to_str()
        .ok_or_else(|| Error::invalid(format!("path {} is not UTF-8", p.display())))
}
