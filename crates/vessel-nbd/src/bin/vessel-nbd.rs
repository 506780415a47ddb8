//! `vessel-nbd`: serves files as NBD exports until SIGTERM or SIGINT — a standalone SAN-like
//! block export (the daemon will serve volumes the same way).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Parser;
use nix::sys::signal::{SigSet, Signal};
use vessel_nbd::{FileDevice, NbdExport, NbdServer};

/// Serve files as NBD exports.
#[derive(Debug, Parser)]
#[command(
    version,
    after_help = "Examples:\n  vessel-nbd --socket /run/disk.sock disk=/srv/disk.img\n  nbdinfo 'nbd+unix:///disk?socket=/run/disk.sock'\n  vessel-nbd --tcp 127.0.0.1:10809 --read-only base=/srv/base.img"
)]
struct Args {
    /// Unix socket to listen on.
    #[arg(long)]
    socket: Option<PathBuf>,
    /// TCP address to listen on (e.g. 127.0.0.1:10809).
    #[arg(long)]
    tcp: Option<SocketAddr>,
    /// Refuse writes to every export.
    #[arg(long)]
    read_only: bool,
    /// Exports as NAME=FILE.
    #[arg(required = true, value_name = "NAME=FILE")]
    exports: Vec<String>,
}

fn main() {
    if let Err(e) = run() {
        eprintln!("Error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("VESSEL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let args = Args::parse();
    if args.socket.is_none() && args.tcp.is_none() {
        bail!("give --socket PATH, --tcp ADDR or both");
    }
    let mut exports = Vec::new();
    for e in &args.exports {
        let (name, file) = e
            .split_once('=')
            .with_context(|| format!("{e:?} is not NAME=FILE"))?;
        let dev = FileDevice::open(file, args.read_only)
            .with_context(|| format!("opening {file} for export {name}"))?;
        exports.push(NbdExport::new(name, Arc::new(dev)).read_only(args.read_only));
    }
    let server = NbdServer::new(exports)?;
    // Block the stop signals before any thread starts, so only sigwait sees them.
    let mut stop = SigSet::empty();
    stop.add(Signal::SIGTERM);
    stop.add(Signal::SIGINT);
    stop.thread_block().context("blocking signals")?;
    let mut handles = Vec::new();
    if let Some(p) = &args.socket {
        handles.push(server.serve_unix(p)?);
    }
    if let Some(a) = args.tcp {
        handles.push(server.serve_tcp(a)?);
    }
    let sig = stop.wait().context("waiting for a stop signal")?;
    tracing::info!(?sig, "stopping");
    for h in handles {
        h.shutdown();
    }
    Ok(())
}
