//! The daemon as one value: [`Daemon::open`] prepares the state directories, opens the store,
//! builds the service graph once and brings it in line with the host (storage pools, networks,
//! running instances); [`Daemon::serve`] then answers the API on a unix socket.

use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use vessel_api::{HostInfo, ServerInfo};

use crate::api;
use crate::events::Events;
use crate::image::ImageService;
use crate::instance::driver::ContainerDriver;
use crate::instance::vm::VmDriver;
use crate::instance::InstanceService;
use crate::network::NetworkService;
use crate::operations::Operations;
use crate::storage::StorageService;
use crate::store::{SharedStore, SqliteStore, Store, StoreError};

/// Default directory of persistent state; its instances use the cgroup parent `vessel`.
pub const DEFAULT_ROOT: &str = "/var/lib/vessel";

/// Where a daemon keeps its state and finds its helpers.
#[derive(Debug, Clone)]
pub struct Config {
    /// Persistent state: database, images, instances, storage.
    pub root_dir: PathBuf,
    /// Runtime state (a tmpfs like /run): monitor pid files, runtime state, sockets.
    pub run_dir: PathBuf,
    /// First host uid/gid of the 65536 ids given to unprivileged containers.
    pub idmap_base: u32,
    /// Directory holding `vessel-monitor` and `vessel-runc`.
    pub libexec: PathBuf,
    /// The guest agent put into VM images built here (it must be statically linked).
    pub agent: PathBuf,
    /// Make the default network on the first start (off for a daemon beside another in the
    /// same network namespace, which would fight over it).
    pub default_network: bool,
}

/// Why a daemon could not open.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The host or the installation cannot run the daemon; the message says what to do.
    #[error("{0}")]
    Setup(String),
    /// A file or directory of the daemon's own could not be made or read.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The state database could not be opened.
    #[error("opening the state database")]
    Store(#[source] StoreError),
    /// The host's cgroup layout could not be read.
    #[error("detecting the cgroup layout")]
    Cgroups(#[source] vessel_cgroups::CgroupError),
    /// A service could not be brought in line with the host.
    #[error("{what}")]
    Service {
        /// Which service, doing what.
        what: &'static str,
        /// Cause.
        #[source]
        source: crate::error::Error,
    },
}

fn io_err(what: String) -> impl FnOnce(std::io::Error) -> DaemonError {
    move |source| DaemonError::Io { what, source }
}

/// A daemon's services, built once.
pub struct Daemon {
    app: api::App,
}

impl Daemon {
    /// Opens the daemon of `config`: makes its directories, opens the store, builds the
    /// services and reconciles them with the host (re-adopting running instances). Runs
    /// inside a Tokio runtime, whose tasks then follow the running instances.
    pub fn open(config: Config) -> Result<Self, DaemonError> {
        let root = absolute(&config.root_dir)?;
        let run_dir = absolute(&config.run_dir)?;
        crate::error::set_host_dirs(&[&root, &run_dir]);
        for (d, mode) in state_dirs(&root, &run_dir) {
            std::fs::create_dir_all(&d).map_err(io_err(format!("creating {}", d.display())))?;
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode))
                .map_err(io_err(format!("securing {}", d.display())))?;
        }
        check_searchable(&root)?;
        for helper in ["vessel-monitor", "vessel-runc"] {
            if !config.libexec.join(helper).is_file() {
                return Err(DaemonError::Setup(format!(
                    "{} is missing; install every Vessel binary side by side (or set \
                     VESSEL_LIBEXEC)",
                    config.libexec.join(helper).display()
                )));
            }
        }
        let agent = match is_static_elf(&config.agent) {
            Ok(true) => Some(config.agent.clone()),
            Ok(false) => {
                tracing::warn!(
                    agent = %config.agent.display(),
                    "the guest agent is dynamically linked and cannot run in VM images; build \
                     it with scripts/build-agent.sh; VMs built now will have no exec"
                );
                None
            }
            Err(e) => {
                tracing::warn!(agent = %config.agent.display(), error = %e, "no guest agent for VM images; VMs built now will have no exec");
                None
            }
        };
        let db = root.join("vessel.db");
        let local: Arc<dyn Store> = Arc::new(SqliteStore::open(&db).map_err(DaemonError::Store)?);
        let shared = SharedStore::new(local);
        let store: Arc<dyn Store> = Arc::new(shared.clone());
        // SQLite makes its journal files with the database's mode.
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o600))
            .map_err(io_err(format!("securing {}", db.display())))?;
        let cgroup_version = vessel_cgroups::detect().map_err(DaemonError::Cgroups)?;
        let config = Config {
            root_dir: root,
            run_dir,
            ..config
        };
        let daemon = Self::assemble(&config, store, cgroup_version, agent);
        // In a cluster, identities another member changes are read again here.
        let auth = daemon.app.auth.clone();
        shared.on_change(Arc::new(move |kind| {
            if kind == "identity" {
                auth.reload_shared();
            }
        }));
        daemon.app.cluster.set_shared(shared);
        daemon.reconcile()?;
        if config.default_network {
            daemon.app.networks.first_start();
        }
        Ok(daemon)
    }

    /// Builds the service graph of `config` (absolute paths) over `store`, changing nothing
    /// on the host.
    pub(crate) fn assemble(
        config: &Config,
        store: Arc<dyn Store>,
        cgroup_version: vessel_cgroups::CgroupVersion,
        agent: Option<PathBuf>,
    ) -> Self {
        let (root, run_dir) = (&config.root_dir, &config.run_dir);
        let events = Events::new();
        let ops = Operations::new(store.clone(), events.clone());
        let images =
            ImageService::new(root.join("images"), store.clone(), events.clone()).with_agent(agent);
        let driver = ContainerDriver {
            instances_dir: root.join("instances"),
            monitors_dir: run_dir.join("monitors"),
            state_root: run_dir.join("runtime"),
            cgroup_parent: cgroup_parent(root),
            idmap_base: config.idmap_base,
            libexec: config.libexec.clone(),
            cgroup_version,
        };
        let vms = VmDriver::new(
            run_dir.join("vms"),
            root.join("instances"),
            root.join("accel.json"),
            driver.cgroup_parent.clone(),
        );
        let storage = StorageService::new(
            store.clone(),
            events.clone(),
            root.join("storage"),
            run_dir.join("storage"),
        );
        let networks = NetworkService::new(store.clone(), events.clone(), run_dir.join("networks"));
        let auth = crate::auth::AuthService::new(store.clone());
        let audit = crate::audit::AuditLog::new(store.clone());
        let settings = crate::settings::Settings::new(store.clone());
        let projects = crate::project::ProjectService::new(store.clone());
        let profiles = crate::profile::ProfileService::new(store.clone());
        let cluster = crate::cluster::ClusterService::new(root.clone(), store.clone());
        let instances = InstanceService::new(
            store,
            images.clone(),
            ops.clone(),
            events.clone(),
            driver,
            vms,
            storage.clone(),
            networks.clone(),
        );
        let info = ServerInfo {
            api_version: vessel_api::API_VERSION.into(),
            server_version: env!("CARGO_PKG_VERSION").into(),
            pid: std::process::id(),
            root_dir: root.display().to_string(),
            store: "sqlite".into(),
            host: HostInfo {
                kernel: nix::sys::utsname::uname()
                    .map(|u| u.release().to_string_lossy().into_owned())
                    .unwrap_or_default(),
                cgroup_version: match cgroup_version {
                    vessel_cgroups::CgroupVersion::V1 => "v1".into(),
                    vessel_cgroups::CgroupVersion::V2 => "v2".into(),
                },
                user_namespaces: Path::new("/proc/self/ns/user").exists(),
                vm_accelerator: None,
                vm_accelerator_reason: None,
            },
        };
        cluster.set_instances(instances.clone());
        cluster.set_events(events.clone());
        let c = cluster.clone();
        instances.on_removed(Arc::new(move |name| {
            let c = c.clone();
            Box::pin(async move { c.released(&name).await })
        }));
        let c = cluster.clone();
        instances.on_ha_start(Arc::new(move |name, runs| {
            let c = c.clone();
            Box::pin(async move { c.may_start_ha(&name, runs).await })
        }));
        let c = cluster.clone();
        projects.set_cluster_lock(Arc::new(move |project| {
            let c = c.clone();
            Box::pin(async move {
                let held = c.quota_lock(&project).await?;
                Ok(held.map(|l| Box::new(l) as Box<dyn Send + Sync>))
            })
        }));
        cluster.set_auth(auth.clone());
        cluster.set_networks(networks.clone());
        // Far copies kept here are served; replicated pools here reach theirs through it.
        cluster.serve_replicas();
        storage.set_replica_link(Arc::new(cluster.clone()));
        let metrics = crate::metrics::MetricsService::new(
            crate::metrics::collect::Sources {
                instances: instances.clone(),
                networks: networks.clone(),
                storage: storage.clone(),
                projects: projects.clone(),
            },
            Some(root.join("history.json")),
        );
        Self {
            app: api::App {
                cluster,
                metrics,
                instances,
                images,
                storage,
                networks,
                ops,
                events,
                info,
                auth,
                audit,
                settings,
                https: api::https::HttpsControl::default(),
                projects,
                profiles,
                backups: crate::backup::BackupService::new(root),
            },
        }
    }

    /// Brings the services in line with the host, in dependency order: pools and exports,
    /// networks, then instances (whose volumes and NICs those provide).
    fn reconcile(&self) -> Result<(), DaemonError> {
        let app = &self.app;
        // Scratch of exports and imports a previous run did not finish.
        let _ = std::fs::remove_dir_all(Path::new(&app.info.root_dir).join("archives"));
        app.storage
            .reconcile()
            .map_err(|source| DaemonError::Service {
                what: "opening storage pools and exports",
                source,
            })?;
        app.networks
            .reconcile()
            .map_err(|source| DaemonError::Service {
                what: "rebuilding networks from the store",
                source,
            })?;
        app.images.remove_staging_leftovers();
        app.instances
            .reconcile()
            .map_err(|source| DaemonError::Service {
                what: "reconciling instances with the host",
                source,
            })
    }

    /// The root directory the daemon keeps its state in (absolute).
    pub fn root_dir(&self) -> &str {
        &self.app.info.root_dir
    }

    /// The API over this daemon's services.
    pub fn router(&self) -> axum::Router {
        api::router(self.app.clone())
    }

    /// Serves the API on the unix socket `socket` until `shutdown` completes, and over HTTPS
    /// on `https` (or, without one, on the stored `core.https_address`, if any). The socket is
    /// bound once the HTTPS API listens (and before any background work starts): a client
    /// that reaches the socket finds both ready.
    pub async fn serve(
        self,
        socket: &Path,
        https: Option<std::net::SocketAddr>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), DaemonError> {
        let parent = self.app.instances.driver.cgroup_parent.clone();
        let vms = self.app.instances.vms.clone();
        let router = api::router(self.app.clone());
        let tls = crate::auth::tls::server_config(Path::new(&self.app.info.root_dir)).map_err(
            |source| DaemonError::Service {
                what: "preparing the HTTPS API's certificate",
                source,
            },
        )?;
        let control = self.app.https.clone();
        control.serve_with(router.clone(), tls);
        let https = match https {
            Some(a) => Some(a),
            None => {
                let stored = self
                    .app
                    .settings
                    .get(crate::settings::HTTPS_ADDRESS)
                    .and_then(|v| crate::settings::https_address(v.as_deref().unwrap_or("")));
                stored.map_err(|source| DaemonError::Service {
                    what: "reading core.https_address",
                    source,
                })?
            }
        };
        if let Some(addr) = https {
            control
                .listen(Some(addr))
                .await
                .map_err(|source| DaemonError::Service {
                    what: "starting the HTTPS API",
                    source,
                })?;
        }
        // Bound before anything starts in the background: a socket that cannot be bound
        // stops the daemon with nothing begun.
        let bound = tokio::net::UnixListener::bind(socket)
            .map_err(io_err(format!("binding {}", socket.display())))
            .and_then(|l| {
                std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
                    .map_err(io_err("restricting the API socket to root".into()))
                    .map(|()| l)
            });
        let listener = match bound {
            Ok(l) => l,
            Err(e) => {
                let _ = control.listen(None).await;
                return Err(e);
            }
        };
        // The first start after a host boot starts what is marked to start with the host.
        {
            let instances = self.app.instances.clone();
            let app = self.app.clone();
            let admit: crate::instance::SnapshotGate = std::sync::Arc::new(move |name| {
                let app = app.clone();
                Box::pin(async move { api::scheduled_snapshot_admitted(&app, &name).await })
            });
            tokio::spawn(async move { instances.snapshot_schedule(admit).await });
            let metrics = self.app.metrics.clone();
            tokio::spawn(async move { metrics.sample_history().await });
            let cluster = self.app.cluster.clone();
            tokio::spawn(async move { cluster.resume().await });
            let storage = self.app.storage.clone();
            tokio::spawn(async move { storage.keep_replicas().await });
            tokio::spawn(api::keep_catching_up(self.app.clone()));
        }
        let root = std::path::PathBuf::from(&self.app.info.root_dir);
        if let Some(boot) = crate::instance::autostart::host_booted(&root) {
            let instances = self.app.instances.clone();
            tokio::spawn(async move {
                instances.autostart().await;
                crate::instance::autostart::record_boot(&root, &boot);
            });
        }
        tracing::info!(socket = %socket.display(), root = %self.app.info.root_dir, "vesseld ready");
        let served =
            api::listener::serve(listener, router, api::listener::Limits::SOCKET, shutdown)
                .await
                .map_err(io_err("serving the API on the unix socket".into()));
        let _ = control.listen(None).await;
        // VM starts in progress give up (their QEMU killed) at their next step: the process
        // exits within its blocking grace, and the next daemon adopts what runs. Told
        // first, so that none serves a disk from a pool after it was quiesced.
        vms.shutting_down();
        // Exports closed and pools flushed while the cluster link still works (a replicated
        // pool's far copy is reached through it), bounded: a disk that does not answer
        // must not keep the daemon from stopping (the next start resyncs what was left).
        let storage = self.app.storage.clone();
        let quiescing = tokio::task::spawn_blocking(move || storage.quiesce_all());
        if tokio::time::timeout(STORAGE_QUIESCE_LIMIT, quiescing)
            .await
            .is_err()
        {
            tracing::warn!(
                limit_s = STORAGE_QUIESCE_LIMIT.as_secs(),
                "storage pools not left clean in time; the next start resyncs them"
            );
        }
        self.app.cluster.shutdown().await;
        self.app.metrics.save_history();
        remove_empty_cgroups(&parent);
        served
    }
}

/// How long the daemon waits, when stopping, for its exports to close and its pools to
/// flush.
const STORAGE_QUIESCE_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The directories the daemon makes at start, with their modes (all owned by root). No host
/// user but root may list any of them or reach what they hold, except where noted:
/// - the root and `instances/` are searchable (0711), not listable: an unprivileged
///   container's init, a host uid of its own range, walks `<root>/instances/<name>/` (mode
///   0100, owned by that uid, see `ContainerDriver::prepare`) to its root and staged volumes,
///   and a VM's QEMU, run as the first uid of the VM's range, walks its own (also 0100, see
///   `VmDriver::prepare`) to its root disk and the image files linked there;
/// - `images/` and everything under it are root's alone (0700): `images/layers` (layers
///   carry the setuid files and file capabilities of images), `images/blobs`, staging
///   directories, and VM images, whose files QEMU reaches only through the hard links in
///   its VM's instance directory (`instance::vm_files`);
/// - `<run>/monitors` and `<run>/runtime` (consoles, runtime state) are root's alone (0700);
/// - `storage/` and the run directory are searchable (0711) for QEMU and dnsmasq, which open
///   their own files by path: `<run>/vms/<vm>/` (QEMU's sockets; 0700, owned by the VM's
///   uid), `<run>/storage/disks/` (NBD sockets of raid disks, 0600, the VM's uid's),
///   `<run>/networks/<net>/` (dnsmasq's hosts files; dnsmasq runs as `nobody`), and disk
///   files in a pool's `block/` (0600, root's or the VM's uid's; each pool's `fs/` and
///   `snapshots/`, which hold containers' files, are 0700: `storage::driver::secure_layout`).
fn state_dirs(root: &Path, run: &Path) -> [(PathBuf, u32); 13] {
    [
        (root.to_path_buf(), 0o711),
        (root.join("images"), 0o700),
        (root.join("images/layers"), 0o700),
        (root.join("images/blobs"), 0o700),
        (root.join("instances"), 0o711),
        (root.join("storage"), 0o711),
        (run.to_path_buf(), 0o711),
        (run.join("monitors"), 0o700),
        (run.join("runtime"), 0o700),
        (run.join("vms"), 0o711),
        (run.join("storage"), 0o711),
        (run.join("storage/disks"), 0o711),
        (run.join("networks"), 0o711),
    ]
}

/// Unprivileged containers' root users are unprivileged host uids: they must be able to walk
/// down to their root file systems.
fn check_searchable(root: &Path) -> Result<(), DaemonError> {
    use std::os::unix::fs::MetadataExt;
    for dir in root.ancestors() {
        let md = std::fs::metadata(dir).map_err(io_err(format!("inspecting {}", dir.display())))?;
        if md.mode() & 0o001 == 0 {
            return Err(DaemonError::Setup(format!(
                "{} (mode {:04o}) is not searchable by other users, so unprivileged containers \
                 cannot reach their files under {}; run `chmod o+x {}` or pick another --root-dir",
                dir.display(),
                md.mode() & 0o7777,
                root.display(),
                dir.display()
            )));
        }
    }
    Ok(())
}

/// Whether an ELF executable is statically linked (has no program interpreter).
fn is_static_elf(path: &Path) -> std::io::Result<bool> {
    let bytes = std::fs::read(path)?;
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "not a 64-bit ELF file");
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" || bytes[4] != 2 {
        return Err(bad());
    }
    let u64_at = |o: usize| {
        bytes
            .get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
    };
    let u16_at = |o: usize| {
        bytes
            .get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let (phoff, phentsize, phnum) = (
        u64_at(0x20).ok_or_else(bad)? as usize,
        u16_at(0x36).ok_or_else(bad)? as usize,
        u16_at(0x38).ok_or_else(bad)? as usize,
    );
    const PT_INTERP: u32 = 3;
    for i in 0..phnum {
        let at = phoff + i * phentsize;
        let kind = bytes
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or_else(bad)?;
        if kind == PT_INTERP {
            return Ok(false);
        }
    }
    Ok(true)
}

fn absolute(p: &Path) -> Result<PathBuf, DaemonError> {
    if p.is_absolute() {
        Ok(p.to_path_buf())
    } else {
        Ok(std::env::current_dir()
            .map_err(io_err("reading the current directory".into()))?
            .join(p))
    }
}

/// Parent cgroup of this daemon's instances: `vessel` for the default root directory, and a
/// name derived from the root directory otherwise, so isolated daemons never share cgroups.
/// Removes this daemon's parent cgroup in every hierarchy where nothing runs under it any
/// more (rmdir only: a cgroup holding a process or a running instance's cgroup stays, so
/// instances that outlive the daemon are untouched).
fn remove_empty_cgroups(parent: &str) {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    for line in mounts.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        if !matches!(right.split(' ').next(), Some("cgroup" | "cgroup2")) {
            continue;
        }
        let Some(mount) = left.split(' ').nth(4) else {
            continue;
        };
        remove_empty_tree(&Path::new(mount).join(parent));
    }
}

fn remove_empty_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_empty_tree(&e.path());
            }
        }
    }
    match std::fs::remove_dir(dir) {
        Ok(()) => tracing::debug!(cgroup = %dir.display(), "removed an empty cgroup"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::debug!(cgroup = %dir.display(), error = %e, "cgroup kept"),
    }
}

fn cgroup_parent(root: &Path) -> String {
    if root == Path::new(DEFAULT_ROOT) {
        return "vessel".into();
    }
    let h = Sha256::digest(root.as_os_str().as_encoded_bytes());
    format!("vessel-{}", &hex::encode(h)[..10])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_static_from_dynamic_executables() {
        // busybox-static is static; the shell Debian ships is not.
        assert!(is_static_elf(Path::new("/bin/busybox")).unwrap());
        assert!(!is_static_elf(Path::new("/bin/dash")).unwrap());
        assert!(is_static_elf(Path::new("/etc/hostname")).is_err());
    }

    #[test]
    fn isolated_daemons_get_their_own_cgroup_parent() {
        assert_eq!(cgroup_parent(Path::new(DEFAULT_ROOT)), "vessel");
        let a = cgroup_parent(Path::new("/tmp/v1"));
        let b = cgroup_parent(Path::new("/tmp/v2"));
        assert!(
            a.starts_with("vessel-") && a.len() == "vessel-".len() + 10,
            "{a}"
        );
        assert_ne!(a, b);
    }
}
