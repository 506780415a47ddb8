//! The `ceph` pool: block volumes as RBD images in a RADOS pool of a Ceph cluster the user
//! runs (as Incus and Proxmox users do).
//!
//! The daemon manages images with Ceph's own tools (`rbd`, `ceph`), each call bounded in
//! time; VMs reach their disks through QEMU's librbd (`-blockdev driver=rbd`), with a small
//! configuration (the monitors) and the user's key handed to each VM's QEMU user alone, so
//! no kernel `rbd` module is needed. Filesystem volumes (containers' roots and volumes) would
//! need the kernel's `rbd` module or device-mapper to mount an image, which this host lacks:
//! they are refused. Snapshots are RBD snapshots; clones are RBD clones of a protected
//! snapshot (they share the origin's data, so the origin's snapshot stays while they live).

use std::path::{Path, PathBuf};

use vessel_api::VolumeContent;

use super::driver::{BlockAccess, PoolDriver};
use crate::error::{Error, Result};

/// Configuration keys of a ceph pool (beside `user.*` labels).
pub(crate) const CONF_KEY: &str = "ceph.conf";
pub(crate) const USER_KEY: &str = "ceph.user.name";
const DEFAULT_CONF: &str = "/etc/ceph/ceph.conf";
const DEFAULT_USER: &str = "admin";

/// How long one call of Ceph's tools may take: a cluster out of reach makes them wait for
/// minutes by default.
const CALL_SECONDS: u32 = 60;
/// How long a tool waits for the monitors.
const CONNECT_SECONDS: u32 = 10;
/// How long one operation on an OSD may take.
const OP_SECONDS: u32 = 30;

/// The refusal of filesystem content.
pub(crate) const NO_FILESYSTEMS: &str =
    "ceph pools hold block volumes (--type block), for VMs: mounting an RBD image needs the \
     kernel's rbd module or device-mapper, which this host lacks; put filesystem volumes and \
     containers' root disks on a dir or btrfs pool";

/// One RBD image, as a VM's QEMU opens it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RbdImage {
    /// The RADOS pool.
    pub pool: String,
    /// The image.
    pub image: String,
    /// The Ceph configuration the daemon uses.
    pub conf: PathBuf,
    /// The Ceph user (without `client.`).
    pub user: String,
}

impl RbdImage {
    /// `qemu-img`'s name of the image (colons in the configuration path escaped), with
    /// the same bounds on the monitors and on each operation as the daemon's own calls.
    pub fn qemu_uri(&self) -> String {
        format!(
            "rbd:{}/{}:conf={}:id={}:client_mount_timeout={CONNECT_SECONDS}:\
             rados_osd_op_timeout={OP_SECONDS}",
            self.pool,
            self.image,
            self.conf.display().to_string().replace(':', "\\:"),
            self.user
        )
    }

    /// What a QEMU run as another user needs: a configuration naming only the monitors
    /// (the daemon's may point at keyrings only root reads) and the user's key (base64, as
    /// in the keyring).
    pub fn client_files(&self) -> Result<(String, String)> {
        let conf = path(&self.conf)?;
        let mons = bounded(
            "ceph-conf",
            &["-c", conf, "--name", &self.client(), "--lookup", "mon_host"],
            Some(CALL_SECONDS),
        )?;
        let mons = mons.trim();
        if mons.is_empty() {
            return Err(Error::invalid(format!(
                "{conf} names no monitors (mon_host)"
            )));
        }
        let key = self.key()?;
        Ok((format!("[global]\nmon host = {mons}\n"), format!("{key}\n")))
    }

    fn client(&self) -> String {
        format!("client.{}", self.user)
    }

    /// The user's key, from the keyring the configuration names.
    fn key(&self) -> Result<String> {
        let conf = path(&self.conf)?;
        let keyrings = bounded(
            "ceph-conf",
            &["-c", conf, "--name", &self.client(), "--lookup", "keyring"],
            Some(CALL_SECONDS),
        )
        .unwrap_or_default();
        for keyring in keyrings.trim().split(',').map(str::trim) {
            if keyring.is_empty() || !Path::new(keyring).is_file() {
                continue;
            }
            let print = ["-p", "-n", &self.client(), keyring];
            if let Ok(key) = bounded("ceph-authtool", &print, Some(CALL_SECONDS)) {
                let key = key.trim().to_string();
                if !key.is_empty() {
                    return Ok(key);
                }
            }
        }
        Err(Error::invalid(format!(
            "no key for {} in the keyrings {conf} names ({}): give the user a keyring \
             the daemon can read",
            self.client(),
            keyrings.trim()
        )))
    }
}

/// A `ceph` pool.
pub struct CephPool {
    osd_pool: String,
    conf: PathBuf,
    user: String,
}

/// The RADOS pool, configuration and user a pool record names.
pub(crate) fn settings(
    sources: &[String],
    name: &str,
    config: &std::collections::BTreeMap<String, String>,
) -> (String, PathBuf, String) {
    (
        sources.first().cloned().unwrap_or_else(|| name.to_string()),
        PathBuf::from(
            config
                .get(CONF_KEY)
                .map(String::as_str)
                .unwrap_or(DEFAULT_CONF),
        ),
        config
            .get(USER_KEY)
            .map(String::as_str)
            .unwrap_or(DEFAULT_USER)
            .to_string(),
    )
}

/// Checks what a new ceph pool is given: one RADOS pool name at most, a configuration
/// path, a user name.
pub(crate) fn check_request(req: &vessel_api::PoolCreate) -> Result<()> {
    if req.sources.len() > 1 {
        return Err(Error::invalid(
            "a ceph pool has one source: the RADOS pool its images go in (default: the pool's \
             name)",
        ));
    }
    if let Some(s) = req.sources.first() {
        let ok = !s.is_empty()
            && s.len() <= 128
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !ok || s.starts_with('.') {
            return Err(Error::invalid(format!(
                "{s:?} is not a RADOS pool name (letters, digits, '-', '_' and '.')"
            )));
        }
    }
    if req.size.is_some()
        || req.members.is_some()
        || req.level.is_some()
        || req.chunk_size.is_some()
        || req.replica.is_some()
        || req.adopt.is_some()
    {
        return Err(Error::invalid(
            "a ceph pool takes its size and redundancy from Ceph: give only --source (the \
             RADOS pool) and the config keys ceph.conf and ceph.user.name",
        ));
    }
    if let Some(conf) = req.config.get(CONF_KEY) {
        if !conf.starts_with('/') {
            return Err(Error::invalid(format!(
                "{CONF_KEY} {conf:?} is not an absolute path"
            )));
        }
    }
    if let Some(user) = req.config.get(USER_KEY) {
        let ok = !user.is_empty()
            && user
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !ok {
            return Err(Error::invalid(format!(
                "{USER_KEY} {user:?} is not a Ceph user name (without \"client.\")"
            )));
        }
    }
    Ok(())
}

/// A tool of Ceph's that failed: its exit status (rbd exits with the errno: 2 no such
/// image, 16 busy, 17 exists) and the error for people.
struct Failed {
    code: Option<i32>,
    error: Error,
}

impl From<Failed> for Error {
    fn from(f: Failed) -> Self {
        f.error
    }
}

impl From<Error> for Failed {
    fn from(error: Error) -> Self {
        Failed { code: None, error }
    }
}

/// Runs one of Ceph's tools, killed after `limit` seconds if given (calls whose time grows
/// with an image's size get none: each of their operations is bounded by the timeouts
/// [`CephPool::rbd`] gives); its stderr becomes the error.
fn bounded(tool: &str, args: &[&str], limit: Option<u32>) -> std::result::Result<String, Failed> {
    let seconds = limit.map(|l| l.to_string());
    let mut cmd = match &seconds {
        Some(l) => {
            let mut c = std::process::Command::new("timeout");
            c.args(["--kill-after=5", l.as_str(), tool]);
            c
        }
        None => std::process::Command::new(tool),
    };
    let out = cmd.args(args).output().map_err(|e| Failed {
        code: None,
        error: Error::internal(format!("cannot run {tool}: {e}")),
    })?;
    let code = out.status.code();
    let error = match code {
        Some(0) => return Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
        Some(124) | Some(137) if limit.is_some() => Error::unavailable(format!(
            "{tool} {} got no answer from Ceph in {} s: is the cluster up?",
            args.join(" "),
            limit.unwrap_or_default()
        )),
        Some(127) => Error::internal(format!(
            "{tool} is not installed: install ceph-common (see scripts/debian-packages.txt)"
        )),
        _ => {
            let err = String::from_utf8_lossy(&out.stderr);
            // The tool's own line says it (librados' log lines around it carry timestamps).
            let mine = format!("{tool}:");
            let lines: Vec<&str> = err
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            let said = lines
                .iter()
                .rev()
                .find(|l| l.starts_with(&mine) || l.starts_with("Error"))
                .or(lines.last())
                .copied()
                .unwrap_or("failed");
            let out_of_reach = code == Some(110)
                || said.contains("timed out")
                || said.contains("couldn't connect");
            if out_of_reach {
                Error::unavailable(format!(
                    "Ceph did not answer ({tool} {}: {said}): is the cluster up, and does \
                     its configuration name its monitors?",
                    args.join(" ")
                ))
            } else {
                Error::internal(format!("{tool} {}: {said}", args.join(" ")))
            }
        }
    };
    Err(Failed { code, error })
}

fn path(p: &Path) -> Result<&str> {
    super::driver::path_str(p)
}

impl CephPool {
    /// Opens a pool on `osd_pool` through `conf` as `user`, without asking Ceph anything
    /// (a daemon starting while Ceph is away starts; the pool says `unavailable` and why
    /// until Ceph answers).
    pub fn open(osd_pool: &str, conf: &Path, user: &str) -> Result<Self> {
        if !conf.is_file() {
            return Err(Error::invalid(format!(
                "no Ceph configuration at {}: give its path as config ceph.conf",
                conf.display()
            )));
        }
        Ok(Self {
            osd_pool: osd_pool.into(),
            conf: conf.into(),
            user: user.into(),
        })
    }

    /// Opens a new pool: checks that Ceph answers, and makes the RADOS pool (for RBD) if
    /// there is none.
    pub fn create(osd_pool: &str, conf: &Path, user: &str) -> Result<Self> {
        let p = Self::open(osd_pool, conf, user)?;
        let pools = p.ceph(&["osd", "pool", "ls"])?;
        if !pools.lines().any(|l| l.trim() == osd_pool) {
            p.ceph(&["osd", "pool", "create", osd_pool])?;
            p.rbd(&["pool", "init", osd_pool])?;
        }
        Ok(p)
    }

    fn args<'a>(&'a self, conf: &'a str, rest: &[&'a str]) -> Vec<&'a str> {
        let mut a = vec!["--conf", conf, "--id", &self.user];
        a.extend_from_slice(rest);
        a
    }

    fn ceph(&self, args: &[&str]) -> Result<String> {
        let conf = path(&self.conf)?;
        let timeout = CONNECT_SECONDS.to_string();
        let mut a = self.args(conf, &["--connect-timeout", &timeout]);
        a.extend_from_slice(args);
        Ok(bounded("ceph", &a, Some(CALL_SECONDS))?)
    }

    /// Runs `rbd` (bounded as a whole unless `long`); every call waits at most
    /// [`CONNECT_SECONDS`] for the monitors and [`OP_SECONDS`] for each operation, so a
    /// Ceph whose OSDs are away fails the call instead of holding it.
    fn rbd_call(&self, args: &[&str], long: bool) -> std::result::Result<String, Failed> {
        let conf = path(&self.conf)?;
        let connect = CONNECT_SECONDS.to_string();
        let op = OP_SECONDS.to_string();
        let mut a = self.args(
            conf,
            &[
                "--client_mount_timeout",
                &connect,
                "--rados_mon_op_timeout",
                &connect,
                "--rados_osd_op_timeout",
                &op,
            ],
        );
        a.extend_from_slice(args);
        bounded("rbd", &a, (!long).then_some(CALL_SECONDS))
    }

    fn rbd(&self, args: &[&str]) -> Result<String> {
        Ok(self.rbd_call(args, false)?)
    }

    fn spec(&self, name: &str) -> String {
        format!("{}/{name}", self.osd_pool)
    }

    fn snap_spec(&self, name: &str, snap: &str) -> String {
        format!("{}/{name}@{snap}", self.osd_pool)
    }

    fn block_only(content: VolumeContent) -> Result<()> {
        match content {
            VolumeContent::Block => Ok(()),
            VolumeContent::Filesystem => Err(Error::invalid(NO_FILESYSTEMS)),
        }
    }

    /// The image's snapshot, protected so that it can be cloned (protecting twice is fine).
    fn protect(&self, name: &str, snap: &str) -> Result<()> {
        let spec = self.snap_spec(name, snap);
        match self.rbd_call(&["snap", "protect", &spec], false) {
            Ok(_) => Ok(()),
            // EBUSY: protected already.
            Err(f) if f.code == Some(16) => Ok(()),
            Err(f) => Err(f.into()),
        }
    }
}

/// Whether a JSON number of bytes is there.
fn bytes(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

impl PoolDriver for CephPool {
    fn capacity(&self) -> Result<(u64, u64)> {
        let df = self.ceph(&["df", "--format", "json"])?;
        let df: serde_json::Value =
            serde_json::from_str(&df).map_err(|e| Error::internal(format!("ceph df: {e}")))?;
        let pool = df["pools"]
            .as_array()
            .and_then(|pools| pools.iter().find(|p| p["name"] == self.osd_pool.as_str()));
        match pool {
            Some(pool) => {
                let stored = bytes(&pool["stats"]["stored"]);
                let avail = bytes(&pool["stats"]["max_avail"]);
                Ok((stored + avail, stored))
            }
            // A pool made a moment ago is not in the manager's figures yet: what the
            // cluster has free, nothing used.
            None if df["stats"]["total_avail_bytes"].is_u64() => {
                Ok((bytes(&df["stats"]["total_avail_bytes"]), 0))
            }
            None => Err(Error::unavailable(format!(
                "ceph df says nothing of pool {:?}: is a ceph-mgr running?",
                self.osd_pool
            ))),
        }
    }

    fn create(&self, name: &str, content: VolumeContent, size: Option<u64>) -> Result<()> {
        Self::block_only(content)?;
        let size = format!("{}B", size.unwrap_or(0));
        match self.rbd_call(&["create", &self.spec(name), "--size", &size], false) {
            Ok(_) => Ok(()),
            // EEXIST
            Err(f) if f.code == Some(17) => Err(Error::conflict(format!(
                "Ceph pool {:?} already has an image {name:?} (another pool or user of the \
                 cluster made it): choose another name",
                self.osd_pool
            ))),
            Err(f) => Err(f.into()),
        }
    }

    fn clone_volume(
        &self,
        source: &str,
        snap: Option<&str>,
        name: &str,
        content: VolumeContent,
    ) -> Result<()> {
        Self::block_only(content)?;
        match snap {
            Some(snap) => {
                self.protect(source, snap)?;
                self.rbd(&["clone", &self.snap_spec(source, snap), &self.spec(name)])?;
            }
            // A clone of the volume as it is now: a full copy (a clone would need a
            // snapshot of the origin that no one asked for).
            None => {
                let to = self.spec(name);
                let copied = self.rbd_call(&["cp", "--no-progress", &self.spec(source), &to], true);
                if let Err(f) = copied {
                    // No half copy left under the name.
                    let _ = self.rbd_call(&["rm", "--no-progress", &to], true);
                    return Err(f.into());
                }
            }
        }
        Ok(())
    }

    fn delete(&self, name: &str, content: VolumeContent) -> Result<()> {
        Self::block_only(content)?;
        match self.rbd_call(&["rm", "--no-progress", &self.spec(name)], true) {
            Ok(_) => Ok(()),
            // ENOENT: gone already.
            Err(f) if f.code == Some(2) => Ok(()),
            Err(f) => Err(f.into()),
        }
    }

    fn resize(&self, name: &str, content: VolumeContent, size: u64) -> Result<()> {
        Self::block_only(content)?;
        let size = format!("{size}B");
        let spec = self.spec(name);
        let args = [
            "resize",
            "--no-progress",
            "--allow-shrink",
            &spec,
            "--size",
            &size,
        ];
        self.rbd_call(&args, true)?;
        Ok(())
    }

    fn snapshot(&self, name: &str, content: VolumeContent, snap: &str) -> Result<()> {
        Self::block_only(content)?;
        self.rbd(&["snap", "create", &self.snap_spec(name, snap)])
            .map(|_| ())
    }

    fn delete_snapshot(&self, name: &str, content: VolumeContent, snap: &str) -> Result<()> {
        Self::block_only(content)?;
        let spec = self.snap_spec(name, snap);
        // EBUSY: clones of it live (another Vessel pool's, or made outside Vessel); any
        // other failure is a snapshot not protected, which is fine.
        if let Err(f) = self.rbd_call(&["snap", "unprotect", &spec], false) {
            if f.code == Some(16) {
                return Err(Error::conflict(format!(
                    "snapshot {snap:?} of {name:?} has clones in Ceph: delete them first"
                )));
            }
        }
        match self.rbd_call(&["snap", "rm", "--no-progress", &spec], true) {
            Ok(_) => Ok(()),
            Err(f) if f.code == Some(2) => Ok(()),
            Err(f) => Err(f.into()),
        }
    }

    fn restore(&self, name: &str, content: VolumeContent, snap: &str) -> Result<()> {
        Self::block_only(content)?;
        let spec = self.snap_spec(name, snap);
        self.rbd_call(&["snap", "rollback", "--no-progress", &spec], true)?;
        Ok(())
    }

    fn used(&self, name: &str, content: VolumeContent) -> Result<u64> {
        Self::block_only(content)?;
        let du = self.rbd(&["du", &self.spec(name), "--format", "json"])?;
        let du: serde_json::Value =
            serde_json::from_str(&du).map_err(|e| Error::internal(format!("rbd du: {e}")))?;
        Ok(du["images"]
            .as_array()
            .map(|images| images.iter().map(|i| bytes(&i["used_size"])).sum())
            .unwrap_or(0))
    }

    fn fs_path(&self, _name: &str) -> Result<PathBuf> {
        Err(Error::invalid(NO_FILESYSTEMS))
    }

    fn block(&self, name: &str) -> Result<BlockAccess> {
        Ok(BlockAccess::Rbd(RbdImage {
            pool: self.osd_pool.clone(),
            image: name.into(),
            conf: self.conf.clone(),
            user: self.user.clone(),
        }))
    }

    fn clones_depend_on_origin(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(sources: &[&str]) -> vessel_api::PoolCreate {
        vessel_api::PoolCreate {
            name: "fast".into(),
            driver: vessel_api::PoolDriver::Ceph,
            sources: sources.iter().map(|s| s.to_string()).collect(),
            size: None,
            members: None,
            level: None,
            chunk_size: None,
            replica: None,
            adopt: None,
            config: Default::default(),
            description: String::new(),
        }
    }

    #[test]
    fn a_ceph_pool_names_a_rados_pool_a_conf_and_a_user() {
        check_request(&req(&[])).unwrap();
        check_request(&req(&["rbd"])).unwrap();
        let e = check_request(&req(&["a", "b"])).unwrap_err();
        assert!(e.message.contains("one source"), "{e}");
        let e = check_request(&req(&["/srv/x"])).unwrap_err();
        assert!(e.message.contains("not a RADOS pool name"), "{e}");
        let mut sized = req(&[]);
        sized.size = Some(1 << 30);
        let e = check_request(&sized).unwrap_err();
        assert!(e.message.contains("from Ceph"), "{e}");
        let mut conf = req(&[]);
        conf.config.insert(CONF_KEY.into(), "ceph.conf".into());
        let e = check_request(&conf).unwrap_err();
        assert!(e.message.contains("absolute"), "{e}");
        let mut user = req(&[]);
        user.config.insert(USER_KEY.into(), "client admin".into());
        let e = check_request(&user).unwrap_err();
        assert!(e.message.contains("Ceph user name"), "{e}");

        let (pool, conf, user) = settings(&[], "fast", &Default::default());
        assert_eq!(
            (pool.as_str(), conf.to_str().unwrap(), user.as_str()),
            ("fast", DEFAULT_CONF, DEFAULT_USER)
        );
        let image = RbdImage {
            pool: "rbd".into(),
            image: "vm-root".into(),
            conf: "/etc/ceph/a:b.conf".into(),
            user: "vessel".into(),
        };
        assert_eq!(
            image.qemu_uri(),
            "rbd:rbd/vm-root:conf=/etc/ceph/a\\:b.conf:id=vessel:client_mount_timeout=10:\
             rados_osd_op_timeout=30"
        );
    }
}
