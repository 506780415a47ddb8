//! The `btrfs` pool: a btrfs file system over one or more disks or loop-backed files,
//! mounted under the daemon's root.
//!
//! Filesystem volumes are subvolumes `fs/<volume>` with a qgroup limit as their quota; block
//! volumes are a raw image `disk.raw` inside a subvolume `block/<volume>` (with copy-on-write
//! off); snapshots are read-only btrfs snapshots under `snapshots/<volume>/<snapshot>`;
//! clones and restores are writable snapshots. Everything is done with `btrfs-progs`.

use std::path::{Path, PathBuf};

use vessel_api::{PoolMember, VolumeContent};

use super::driver::{fs_capacity, io_err, path_str, run, BlockAccess, PoolDriver};
use crate::error::{Error, Result};

/// A mounted btrfs pool.
pub struct BtrfsPool {
    mount: PathBuf,
    devices: Vec<String>,
}

/// Whether `dev` is a regular file (attached through a loop device) rather than a disk.
fn is_file(dev: &str) -> bool {
    std::fs::metadata(dev).map(|m| m.is_file()).unwrap_or(false)
}

/// The loop device backing `file`, attaching one if none is.
fn loop_for(file: &str) -> Result<String> {
    let found = run("losetup", &["-j", file, "-O", "NAME", "-n"])?;
    if let Some(dev) = found
        .lines()
        .next()
        .map(str::trim)
        .filter(|l| !l.is_empty())
    {
        return Ok(dev.to_string());
    }
    Ok(run("losetup", &["--find", "--show", file])?
        .trim()
        .to_string())
}

fn detach_loops(file: &str) {
    if let Ok(found) = run("losetup", &["-j", file, "-O", "NAME", "-n"]) {
        for dev in found.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let _ = run("losetup", &["-d", dev]);
        }
    }
}

impl BtrfsPool {
    /// Formats `devices` (files are attached through loop devices) with `profile` for data
    /// and metadata when there are several, mounts the file system at `mount` and enables
    /// quotas.
    pub fn create(devices: &[String], profile: Option<&str>, mount: &Path) -> Result<Self> {
        if devices.is_empty() {
            return Err(Error::invalid(
                "a btrfs pool needs at least one device or file",
            ));
        }
        for d in devices {
            let md = std::fs::metadata(d).map_err(|e| {
                Error::invalid(format!("source {d}: {e}; give existing disks or files"))
            })?;
            if !md.is_file() && !std::os::unix::fs::FileTypeExt::is_block_device(&md.file_type()) {
                return Err(Error::invalid(format!(
                    "source {d} is neither a block device nor a regular file"
                )));
            }
        }
        let profile = profile.unwrap_or(if devices.len() > 1 { "raid1" } else { "single" });
        if !matches!(profile, "single" | "raid0" | "raid1" | "raid10" | "dup") {
            return Err(Error::invalid(format!(
                "btrfs profile {profile:?} is not one of single, dup, raid0, raid1, raid10"
            )));
        }
        let mut args = vec!["-f", "-q", "-L", "vessel"];
        if devices.len() > 1 {
            args.extend(["-d", profile, "-m", profile]);
        }
        let devs: Vec<String> = devices
            .iter()
            .map(|d| {
                if is_file(d) {
                    loop_for(d)
                } else {
                    Ok(d.clone())
                }
            })
            .collect::<Result<_>>()?;
        args.extend(devs.iter().map(String::as_str));
        if let Err(e) = run("mkfs.btrfs", &args) {
            for d in devices.iter().filter(|d| is_file(d)) {
                detach_loops(d);
            }
            return Err(e);
        }
        let pool = Self {
            mount: mount.into(),
            devices: devices.to_vec(),
        };
        pool.mount()?;
        run("btrfs", &["quota", "enable", path_str(mount)?])?;
        for sub in ["fs", "block", "snapshots"] {
            let p = mount.join(sub);
            std::fs::create_dir_all(&p).map_err(io_err("creating", &p))?;
        }
        super::driver::secure_layout(mount)?;
        Ok(pool)
    }

    /// Opens (mounting if needed) an existing pool.
    pub fn open(devices: &[String], mount: &Path) -> Result<Self> {
        let pool = Self {
            mount: mount.into(),
            devices: devices.to_vec(),
        };
        pool.mount()?;
        super::driver::secure_layout(mount)?;
        Ok(pool)
    }

    fn mount(&self) -> Result<()> {
        std::fs::create_dir_all(&self.mount).map_err(io_err("creating", &self.mount))?;
        if vessel_monitor::is_mountpoint(&self.mount) {
            return Ok(());
        }
        let mut devs = Vec::new();
        for d in &self.devices {
            devs.push(if is_file(d) { loop_for(d)? } else { d.clone() });
        }
        let device_opts: Vec<String> = devs.iter().map(|d| format!("device={d}")).collect();
        let opts = device_opts.join(",");
        let mount = path_str(&self.mount)?;
        let mut args = vec!["-t", "btrfs"];
        if devs.len() > 1 {
            args.extend(["-o", opts.as_str()]);
        }
        args.extend([devs[0].as_str(), mount]);
        run("mount", &args).map(|_| ())
    }

    fn vol(&self, name: &str, content: VolumeContent) -> PathBuf {
        match content {
            VolumeContent::Filesystem => self.mount.join("fs").join(name),
            VolumeContent::Block => self.mount.join("block").join(name),
        }
    }

    fn snap(&self, name: &str, snap: &str) -> PathBuf {
        self.mount.join("snapshots").join(name).join(snap)
    }

    fn subvol(&self, args: &[&str]) -> Result<()> {
        let mut a = vec!["subvolume"];
        a.extend_from_slice(args);
        run("btrfs", &a).map(|_| ())
    }

    fn limit(&self, path: &Path, size: Option<u64>) -> Result<()> {
        let limit = match size {
            Some(s) if s > 0 => s.to_string(),
            _ => "none".into(),
        };
        run("btrfs", &["qgroup", "limit", &limit, path_str(path)?]).map(|_| ())
    }

    /// Exclusive bytes of the subvolume at `path`, from its qgroup.
    fn exclusive(&self, path: &Path) -> Result<u64> {
        self.qgroup(path).map(|(_, exclusive)| exclusive)
    }

    /// The referenced and exclusive bytes of the subvolume at `path` (0 and 0 without a
    /// qgroup).
    fn qgroup(&self, path: &Path) -> Result<(u64, u64)> {
        let _ = run("btrfs", &["filesystem", "sync", path_str(&self.mount)?]);
        let id = run("btrfs", &["inspect-internal", "rootid", path_str(path)?])?;
        let id = id.trim();
        let out = run(
            "btrfs",
            &["qgroup", "show", "--raw", path_str(&self.mount)?],
        )?;
        for line in out.lines() {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() >= 3 && cols[0] == format!("0/{id}") {
                let bad = || Error::internal(format!("btrfs qgroup show: bad line {line:?}"));
                let referenced = cols[1].parse().map_err(|_| bad())?;
                let exclusive = cols[2].parse().map_err(|_| bad())?;
                return Ok((referenced, exclusive));
            }
        }
        Ok((0, 0))
    }
}

impl PoolDriver for BtrfsPool {
    fn capacity(&self) -> Result<(u64, u64)> {
        fs_capacity(&self.mount)
    }

    fn create(&self, name: &str, content: VolumeContent, size: Option<u64>) -> Result<()> {
        let p = self.vol(name, content);
        self.subvol(&["create", path_str(&p)?])?;
        let r = (|| match content {
            VolumeContent::Filesystem => self.limit(&p, size),
            VolumeContent::Block => {
                run("chattr", &["+C", path_str(&p)?])?;
                let disk = p.join("disk.raw");
                use std::os::unix::fs::OpenOptionsExt;
                // Root's alone until a VM it is attached to starts.
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&disk)
                    .map_err(io_err("creating", &disk))?;
                f.set_len(size.unwrap_or(0))
                    .map_err(io_err("sizing", &disk))
            }
        })();
        if r.is_err() {
            let _ = self.subvol(&["delete", path_str(&p)?]);
        }
        r
    }

    fn clone_volume(
        &self,
        source: &str,
        snap: Option<&str>,
        name: &str,
        content: VolumeContent,
    ) -> Result<()> {
        let from = match snap {
            Some(s) => self.snap(source, s),
            None => self.vol(source, content),
        };
        self.subvol(&[
            "snapshot",
            path_str(&from)?,
            path_str(&self.vol(name, content))?,
        ])
    }

    fn delete(&self, name: &str, content: VolumeContent) -> Result<()> {
        let p = self.vol(name, content);
        if p.exists() {
            self.subvol(&["delete", path_str(&p)?])?;
        }
        let snaps = self.mount.join("snapshots").join(name);
        if snaps.exists() {
            std::fs::remove_dir(&snaps).map_err(io_err("removing", &snaps))?;
        }
        Ok(())
    }

    fn resize(&self, name: &str, content: VolumeContent, size: u64) -> Result<()> {
        let p = self.vol(name, content);
        match content {
            VolumeContent::Filesystem => self.limit(&p, Some(size)),
            VolumeContent::Block => {
                let disk = p.join("disk.raw");
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&disk)
                    .map_err(io_err("opening", &disk))?;
                f.set_len(size).map_err(io_err("resizing", &disk))
            }
        }
    }

    fn snapshot(&self, name: &str, content: VolumeContent, snap: &str) -> Result<()> {
        let dir = self.mount.join("snapshots").join(name);
        std::fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
        self.subvol(&[
            "snapshot",
            "-r",
            path_str(&self.vol(name, content))?,
            path_str(&self.snap(name, snap))?,
        ])
    }

    fn delete_snapshot(&self, name: &str, _content: VolumeContent, snap: &str) -> Result<()> {
        let p = self.snap(name, snap);
        if p.exists() {
            self.subvol(&["delete", path_str(&p)?])?;
        }
        Ok(())
    }

    fn restore(&self, name: &str, content: VolumeContent, snap: &str) -> Result<()> {
        let vol = self.vol(name, content);
        let staged = self.mount.join(format!(".restoring-{name}"));
        if staged.exists() {
            self.subvol(&["delete", path_str(&staged)?])?;
        }
        // Snapshot first, swap after: a failure leaves the volume as it was.
        self.subvol(&[
            "snapshot",
            path_str(&self.snap(name, snap))?,
            path_str(&staged)?,
        ])?;
        self.subvol(&["delete", path_str(&vol)?])?;
        std::fs::rename(&staged, &vol).map_err(io_err("restoring", &vol))
    }

    fn used(&self, name: &str, content: VolumeContent) -> Result<u64> {
        self.exclusive(&self.vol(name, content))
    }

    fn held(&self, name: &str, content: VolumeContent) -> Result<u64> {
        self.qgroup(&self.vol(name, content))
            .map(|(referenced, _)| referenced)
    }

    fn fs_path(&self, name: &str) -> Result<PathBuf> {
        Ok(self.vol(name, VolumeContent::Filesystem))
    }

    fn block(&self, name: &str) -> Result<BlockAccess> {
        Ok(BlockAccess::File(
            self.vol(name, VolumeContent::Block).join("disk.raw"),
        ))
    }

    fn members(&self) -> Vec<PoolMember> {
        self.devices
            .iter()
            .enumerate()
            .map(|(i, d)| PoolMember {
                index: i as u32,
                path: d.clone(),
                state: if Path::new(d).exists() {
                    "active"
                } else {
                    "missing"
                }
                .into(),
                checksum_errors: 0,
            })
            .collect()
    }

    fn close(&self) -> Result<()> {
        if vessel_monitor::is_mountpoint(&self.mount) {
            run("umount", &[path_str(&self.mount)?])?;
        }
        for d in self.devices.iter().filter(|d| is_file(d)) {
            detach_loops(d);
        }
        Ok(())
    }
}
