//! `vesseld`: the Vessel daemon. Serves the REST API on a unix socket, keeps state in the
//! embedded store, and runs instances through per-instance monitors that outlive it.

mod api;
mod error;
mod events;
mod image;
mod instance;
mod lock;
mod network;
mod operations;
mod storage;
mod store;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::Parser;
use sha2::{Digest, Sha256};
use vessel_api::{HostInfo, ServerInfo};

use crate::events::Events;
use crate::image::ImageService;
use crate::instance::driver::ContainerDriver;
use crate::instance::InstanceService;
use crate::operations::Operations;
use crate::store::{SqliteStore, Store};

/// Default directory of persistent state.
const DEFAULT_ROOT: &str = "/var/lib/vessel";

/// The Vessel daemon.
#[derive(Debug, Parser)]
#[command(
    version,
    about = "The Vessel daemon: serves the REST API and runs instances",
    after_help = "Examples:\n  vesseld                                  # system daemon, state in /var/lib/vessel\n  vesseld --root-dir /tmp/v1 --run-dir /tmp/v1/run --socket /tmp/v1/vessel.sock\n                                            # an isolated second daemon (tests do this)\n\nInstances keep running when vesseld stops; the next vesseld re-adopts them."
)]
struct Args {
    /// Directory for persistent state: database, images, instances.
    #[arg(long, default_value = DEFAULT_ROOT, env = "VESSEL_ROOT_DIR")]
    root_dir: PathBuf,
    /// Directory for runtime state: monitor sockets, runtime state (a tmpfs like /run).
    #[arg(long, default_value = "/run/vessel", env = "VESSEL_RUN_DIR")]
    run_dir: PathBuf,
    /// Unix socket to serve the API on (root only).
    #[arg(long, default_value = vessel_api::DEFAULT_SOCKET, env = "VESSEL_SOCKET")]
    socket: PathBuf,
    /// First host uid/gid of the 65536 ids given to unprivileged containers.
    #[arg(long, default_value_t = 1_000_000)]
    idmap_base: u32,
    /// Log as JSON lines instead of text.
    #[arg(long)]
    log_json: bool,
}

/// Current time, RFC 3339, UTC.
pub fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("Error: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("VESSEL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    if args.log_json {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt()
            .with_ansi(ansi)
            .with_env_filter(filter)
            .init();
    }
    if !nix::unistd::geteuid().is_root() {
        bail!("vesseld must run as root (it manages namespaces, cgroups and mounts); try: sudo vesseld");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(run(args));
    // Blocking work still running (a VM start gives up at its next step once told) gets a
    // moment, not forever: QEMU outlives the daemon, and the next one (which waits for this
    // process to be gone) adopts or cleans up whatever is left.
    runtime.shutdown_timeout(BLOCKING_GRACE);
    result
}

/// How long requests in flight get to finish when the daemon is told to stop.
const REQUEST_GRACE: std::time::Duration = std::time::Duration::from_secs(1);
/// How long blocking work gets after that.
const BLOCKING_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

async fn run(args: Args) -> anyhow::Result<()> {
    let root = absolute(&args.root_dir)?;
    let run_dir = absolute(&args.run_dir)?;
    for d in [
        root.join("images"),
        root.join("instances"),
        run_dir.join("monitors"),
    ] {
        std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
    }
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o711))
        .with_context(|| format!("securing {}", root.display()))?;
    lock::hold_until_exit(&root.join("vesseld.lock"))?;
    check_searchable(&root)?;
    if args.socket.exists() {
        if std::os::unix::net::UnixStream::connect(&args.socket).is_ok() {
            bail!(
                "another vesseld already serves {}; stop it first or pick another --socket",
                args.socket.display()
            );
        }
        std::fs::remove_file(&args.socket)
            .with_context(|| format!("removing stale socket {}", args.socket.display()))?;
    }
    if let Some(parent) = args.socket.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }

    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(&root.join("vessel.db")).context("opening the state database")?);
    let cgroup_version = vessel_cgroups::detect().context("detecting the cgroup layout")?;
    let events = Events::new();
    let ops = Operations::new(store.clone(), events.clone());
    let images = ImageService::new(root.join("images"), store.clone(), events.clone());
    let libexec = match std::env::var_os("VESSEL_LIBEXEC") {
        Some(p) => PathBuf::from(p),
        None => std::env::current_exe()
            .context("locating vesseld")?
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default(),
    };
    for helper in ["vessel-monitor", "vessel-runc"] {
        if !libexec.join(helper).is_file() {
            bail!(
                "{} is missing; install every Vessel binary side by side (or set VESSEL_LIBEXEC)",
                libexec.join(helper).display()
            );
        }
    }
    let agent = std::env::var_os("VESSEL_AGENT")
        .map(PathBuf::from)
        .unwrap_or_else(|| libexec.join("vessel-agent"));
    let agent = match is_static_elf(&agent) {
        Ok(true) => Some(agent),
        Ok(false) => {
            tracing::warn!(
                agent = %agent.display(),
                "the guest agent is dynamically linked and cannot run in VM images; build it with \
                 scripts/build-agent.sh; VMs built now will have no exec"
            );
            None
        }
        Err(e) => {
            tracing::warn!(agent = %agent.display(), error = %e, "no guest agent for VM images; VMs built now will have no exec");
            None
        }
    };
    let images = images.with_agent(agent);
    let driver = ContainerDriver {
        instances_dir: root.join("instances"),
        monitors_dir: run_dir.join("monitors"),
        state_root: run_dir.join("runtime"),
        cgroup_parent: cgroup_parent(&root),
        idmap_base: args.idmap_base,
        libexec,
        cgroup_version,
    };
    let vms = instance::vm::VmDriver::new(
        run_dir.join("vms"),
        root.join("instances"),
        root.join("accel.json"),
        driver.cgroup_parent.clone(),
    );
    let storage = storage::StorageService::new(
        store.clone(),
        events.clone(),
        root.join("storage"),
        run_dir.join("storage"),
    );
    storage
        .reconcile()
        .context("opening storage pools and exports")?;
    let networks =
        network::NetworkService::new(store.clone(), events.clone(), run_dir.join("networks"));
    networks
        .reconcile()
        .context("rebuilding networks from the store")?;
    let instances = InstanceService::new(
        store.clone(),
        images.clone(),
        ops.clone(),
        events.clone(),
        driver,
        vms,
        storage.clone(),
        networks.clone(),
    );
    images.remove_staging_leftovers();
    instances
        .reconcile()
        .context("reconciling instances with the host")?;

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
        },
    };
    let vms = instances.vms.clone();
    let app = api::App {
        instances,
        images,
        storage,
        networks,
        ops,
        events,
        info,
    };
    let listener = tokio::net::UnixListener::bind(&args.socket)
        .with_context(|| format!("binding {}", args.socket.display()))?;
    std::fs::set_permissions(&args.socket, std::fs::Permissions::from_mode(0o600))
        .context("restricting the API socket to root")?;
    tracing::info!(socket = %args.socket.display(), root = %root.display(), "vesseld ready");
    let socket = args.socket.clone();
    let stopping = Arc::new(tokio::sync::Notify::new());
    let told = stopping.clone();
    let server = axum::serve(listener, api::router(app)).with_graceful_shutdown(async move {
        shutdown_signal().await;
        tracing::info!("vesseld stopping");
        told.notify_one();
    });
    // Requests still open after the grace (long polls, event streams) are dropped.
    tokio::select! {
        served = std::future::IntoFuture::into_future(server) => {
            served.context("serving the API")?
        }
        () = async {
            stopping.notified().await;
            tokio::time::sleep(REQUEST_GRACE).await;
        } => tracing::info!("closing the requests still open"),
    }
    vms.shutting_down();
    let _ = std::fs::remove_file(&socket);
    tracing::info!("vesseld stopped; instances keep running");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// Unprivileged containers' root users are unprivileged host uids: they must be able to walk
/// down to their root file systems.
fn check_searchable(root: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    for dir in root.ancestors() {
        let md = std::fs::metadata(dir).with_context(|| format!("inspecting {}", dir.display()))?;
        if md.mode() & 0o001 == 0 {
            bail!(
                "{} (mode {:04o}) is not searchable by other users, so unprivileged containers \
                 cannot reach their files under {}; run `chmod o+x {}` or pick another --root-dir",
                dir.display(),
                md.mode() & 0o7777,
                root.display(),
                dir.display()
            );
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

fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    if p.is_absolute() {
        Ok(p.to_path_buf())
    } else {
        Ok(std::env::current_dir()?.join(p))
    }
}

/// Parent cgroup of this daemon's instances: `vessel` for the default root directory, and a
/// name derived from the root directory otherwise, so isolated daemons never share cgroups.
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
}
