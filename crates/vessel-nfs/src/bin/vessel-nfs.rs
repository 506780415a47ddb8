//! `vessel-nfs`: serves directories over NFSv3 until SIGTERM or SIGINT — a standalone
//! NAS-like export (the daemon will serve volumes the same way).

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use nix::sys::signal::{SigSet, Signal};
use vessel_nfs::{Export, HandleKey, NfsServer, Squash};

/// Serve directories over NFSv3 (MOUNT v3 and NFS v3 on one TCP port, plus an optional
/// portmapper) to any NFSv3 client.
#[derive(Debug, Parser)]
#[command(
    version,
    after_help = "Clients that name the ports need no portmapper:\n  \
vessel-nfs --export /vol1=/srv/dir --listen 127.0.0.1:20490 --squash none\n  \
nfs-ls 'nfs://127.0.0.1/vol1?nfsport=20490&mountport=20490'\n  \
nfs-cp big.iso 'nfs://127.0.0.1/vol1/big.iso?nfsport=20490&mountport=20490'\n\n\
Clients that do not (mount -t nfs, plain nfs:// URLs) ask the portmapper on port 111:\n  \
vessel-nfs --export /vol1=/srv/dir --export /iso=/srv/iso --read-only /iso \\\n      \
--listen 0.0.0.0:2049 --portmap 0.0.0.0:111\n  \
nfs-ls nfs://server/vol1\n\n\
The server must run as root: it opens objects by file handle and acts as each caller.\n\
On start it prints one line, `listening nfs=ADDR portmap=ADDR|none`, to stdout."
)]
struct Args {
    /// An export, as NAME=DIR (NAME is what clients mount, e.g. /vol1). Repeatable.
    #[arg(long = "export", required = true, value_name = "NAME=DIR")]
    exports: Vec<String>,
    /// Offer the export NAME read-only (writes fail with NFS3ERR_ROFS); repeatable.
    /// Without a value, every export is read-only.
    #[arg(long, value_name = "NAME", num_args = 0..=1, default_missing_value = "*")]
    read_only: Vec<String>,
    /// Let only these clients use the export NAME, as NAME=NET[,NET...] where a NET is an
    /// address or ADDRESS/PREFIX (e.g. /vol1=10.0.0.0/24,192.0.2.7); others can neither
    /// mount it, nor use its handles, nor see it listed. Repeatable. Without it, every
    /// client that reaches the server may.
    #[arg(long = "clients", value_name = "NAME=NETS")]
    clients: Vec<String>,
    /// TCP address for MOUNT and NFS (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:2049")]
    listen: SocketAddr,
    /// TCP address for the portmapper (clients expect port 111). Off when not given.
    #[arg(long)]
    portmap: Option<SocketAddr>,
    /// How AUTH_UNIX identities are mapped: `root` maps uid 0 to the anonymous user,
    /// `all` maps everyone to it, `none` trusts every claimed uid (root included).
    #[arg(long, value_enum, default_value_t = SquashArg::Root)]
    squash: SquashArg,
    /// The anonymous identity squashed callers act as, as UID:GID.
    #[arg(long, default_value = "65534:65534")]
    anon: String,
    /// File holding a 32-byte key that authenticates file handles; with it, handles stay
    /// valid across restarts (without it a random key is used).
    #[arg(long)]
    handle_key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum SquashArg {
    None,
    Root,
    All,
}

fn main() {
    if let Err(e) = run() {
        eprintln!("Error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("VESSEL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let args = Args::parse();
    let (anon_uid, anon_gid) = args
        .anon
        .split_once(':')
        .and_then(|(u, g)| Some((u.parse().ok()?, g.parse().ok()?)))
        .with_context(|| format!("--anon {:?} is not UID:GID", args.anon))?;
    let squash = match args.squash {
        SquashArg::None => Squash::None,
        SquashArg::Root => Squash::Root,
        SquashArg::All => Squash::All,
    };
    let mut clients = std::collections::HashMap::new();
    for c in &args.clients {
        let (name, nets) = c.split_once('=').with_context(|| {
            format!("--clients {c:?} is not NAME=NET[,NET...] (e.g. /vol1=10.0.0.0/24)")
        })?;
        let nets = nets
            .split(',')
            .map(vessel_nfs::parse_client_net)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("--clients {c:?}: {e}"))?;
        if !args
            .exports
            .iter()
            .any(|e| e.split_once('=').map(|p| p.0) == Some(name))
        {
            bail!("--clients {c:?} names no --export");
        }
        clients
            .entry(name.to_string())
            .or_insert_with(Vec::new)
            .extend(nets);
    }
    let mut exports = Vec::new();
    for e in &args.exports {
        let (name, dir) = e
            .split_once('=')
            .with_context(|| format!("--export {e:?} is not NAME=DIR (e.g. /vol1=/srv/dir)"))?;
        let read_only = args.read_only.iter().any(|r| r == "*" || r == name);
        exports.push(
            Export::new(name, dir)
                .read_only(read_only)
                .squash(squash)
                .anon(anon_uid, anon_gid)
                .clients(clients.get(name).cloned().unwrap_or_default()),
        );
    }
    for r in &args.read_only {
        if r != "*" && !exports.iter().any(|e| &e.path == r) {
            bail!("--read-only {r:?} names no --export");
        }
    }
    let key = match &args.handle_key_file {
        Some(p) => {
            let bytes = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
            let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
                anyhow::anyhow!(
                    "{} must hold exactly 32 bytes (e.g. head -c32 /dev/urandom)",
                    p.display()
                )
            })?;
            HandleKey::from_bytes(key)
        }
        None => HandleKey::random().context("generating a handle key")?,
    };
    let server = NfsServer::with_key(exports, key)?;
    let nfs =
        TcpListener::bind(args.listen).with_context(|| format!("listening on {}", args.listen))?;
    let portmap = args
        .portmap
        .map(|a| TcpListener::bind(a).with_context(|| format!("listening on {a} (portmapper)")))
        .transpose()?;
    // Block the stop signals before any thread starts, so only sigwait sees them.
    let mut stop = SigSet::empty();
    stop.add(Signal::SIGTERM);
    stop.add(Signal::SIGINT);
    stop.thread_block().context("blocking signals")?;
    let handle = server.serve(nfs, portmap)?;
    let pm = handle
        .portmap_addr()
        .map_or_else(|| "none".to_string(), |a| a.to_string());
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening nfs={} portmap={pm}", handle.nfs_addr())?;
    out.flush()?;
    drop(out);
    let sig = stop.wait().context("waiting for a stop signal")?;
    tracing::info!(?sig, "stopping");
    handle.shutdown();
    Ok(())
}
