//! `vesseld`: the Vessel daemon. Serves the REST API on a unix socket, keeps state in the
//! embedded store, and runs instances through per-instance monitors that outlive it. The
//! daemon itself is the `vesseld` library; this binary reads the command line, sets up
//! logging, takes the root directory's lock and the socket, and serves.

mod lock;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Parser;
use vesseld::{Config, Daemon, DEFAULT_ROOT};

/// The Vessel daemon.
#[derive(Debug, Parser)]
#[command(
    version,
    about = "The Vessel daemon: serves the REST API and runs instances",
    after_help = "Examples:\n  vesseld                                  # system daemon, state in /var/lib/vessel\n  vesseld --root-dir /tmp/v1 --run-dir /tmp/v1/run --socket /tmp/v1/vessel.sock --no-default-network\n                                            # an isolated second daemon (tests do this)\n\nOn its first start the daemon makes the network `default` (on the first of 10.42.0.0/24,\n10.43.0.0/24, ... that no route or address of its network namespace uses), which new\ninstances get a NIC on.\n\nInstances keep running when vesseld stops; the next vesseld re-adopts them."
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
    /// Serve the HTTPS API on this address too, e.g. 0.0.0.0:8443 (for this run; `vessel
    /// config set core.https_address ADDR` keeps one across restarts).
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Option<std::net::SocketAddr>,
    /// Log as JSON lines instead of text.
    #[arg(long)]
    log_json: bool,
    /// Do not make the default network on the first start (for a second daemon in the same
    /// network namespace; `vessel admin init` still makes it).
    #[arg(long)]
    no_default_network: bool,
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some(vesseld::FENCE_WATCHDOG_ARG) {
        // The fence watchdog a cluster member's daemon keeps (see its module).
        vesseld::run_fence_watchdog();
    }
    if let Err(e) = real_main() {
        eprintln!("Error: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("VESSEL_LOG")
        // rustls warns of every TLS client that names an IP address in SNI (libnbd and
        // QEMU on an NBD export, curl on the API): nothing an operator can act on.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rustls=error"));
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
    raise_fd_limit();
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

/// How long blocking work gets once requests are done, when the daemon is told to stop.
const BLOCKING_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

async fn run(args: Args) -> anyhow::Result<()> {
    // Another daemon on the socket means its state must not be touched: checked first.
    claim_socket(&args.socket)?;
    // One daemon per root directory, until its process is gone (a stopping one may still be
    // finishing a VM start).
    std::fs::create_dir_all(&args.root_dir)
        .with_context(|| format!("creating {}", args.root_dir.display()))?;
    lock::hold_until_exit(&args.root_dir.join("vesseld.lock"))?;
    let libexec = match std::env::var_os("VESSEL_LIBEXEC") {
        Some(p) => PathBuf::from(p),
        None => std::env::current_exe()
            .context("locating vesseld")?
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default(),
    };
    let agent = std::env::var_os("VESSEL_AGENT")
        .map(PathBuf::from)
        .unwrap_or_else(|| libexec.join("vessel-agent"));
    let daemon = Daemon::open(Config {
        root_dir: args.root_dir,
        run_dir: args.run_dir,
        idmap_base: args.idmap_base,
        libexec,
        agent,
        default_network: !args.no_default_network,
    })?;
    daemon
        .serve(&args.socket, args.listen, shutdown_signal())
        .await
        .context("serving the API")?;
    let _ = std::fs::remove_file(&args.socket);
    tracing::info!("vesseld stopped; instances keep running");
    Ok(())
}

/// How long a daemon that still answers on the socket may take to let go of it (one told to
/// stop closes its socket at once, but its process may be busy for a moment).
const SOCKET_HANDOVER: std::time::Duration = std::time::Duration::from_secs(5);

/// Makes `socket` free to bind: fails when another daemon answers on it (and keeps answering
/// for [`SOCKET_HANDOVER`]: one that is stopping lets go within it), removes a stale one, and
/// creates its directory.
fn claim_socket(socket: &Path) -> anyhow::Result<()> {
    if socket.exists() {
        let deadline = std::time::Instant::now() + SOCKET_HANDOVER;
        while std::os::unix::net::UnixStream::connect(socket).is_ok() {
            if std::time::Instant::now() >= deadline {
                bail!(
                    "another vesseld already serves {}; stop it first or pick another --socket",
                    socket.display()
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        std::fs::remove_file(socket)
            .with_context(|| format!("removing stale socket {}", socket.display()))?;
    }
    if let Some(parent) = socket.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    Ok(())
}

/// Raises the soft limit on open files to the hard one (at most 65536): the listeners cap
/// their connections well below it, and what is left serves monitors, pools and exports.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let want = hard.min(65_536);
        if soft < want {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, want, hard) {
                tracing::warn!(error = %e, "could not raise the open-files limit");
            }
        }
    }
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
