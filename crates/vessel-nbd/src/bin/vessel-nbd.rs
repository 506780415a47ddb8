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
    after_help = "Examples:\n  vessel-nbd --socket /run/disk.sock disk=/srv/disk.img\n  nbdinfo 'nbd+unix:///disk?socket=/run/disk.sock'\n  vessel-nbd --tcp 127.0.0.1:10809 --read-only base=/srv/base.img\n  vessel-nbd --tcp 0.0.0.0:10809 --tls-certificates /etc/vessel-nbd/pki disk=/srv/disk.img\n  nbdinfo 'nbds://HOST:10809/disk?tls-certificates=DIR'   # DIR: ca-cert.pem, client-cert.pem, client-key.pem"
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
    /// Require TLS with a client certificate: DIR holds ca-cert.pem (the authority client
    /// certificates must chain to), server-cert.pem and server-key.pem, as for nbdkit's
    /// --tls-certificates and QEMU's tls-creds-x509.
    #[arg(long, value_name = "DIR")]
    tls_certificates: Option<PathBuf>,
    /// Exports as NAME=FILE.
    #[arg(required = true, value_name = "NAME=FILE")]
    exports: Vec<String>,
}

/// The TLS configuration from a directory laid out as nbdkit's.
fn tls_config(dir: &std::path::Path) -> Result<Arc<rustls::ServerConfig>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let file = |name: &str| dir.join(name);
    let certs = |name: &str| -> Result<Vec<CertificateDer<'static>>> {
        let found = CertificateDer::pem_file_iter(file(name))
            .and_then(|i| i.collect::<std::result::Result<Vec<_>, _>>())
            .with_context(|| format!("reading certificates from {}", file(name).display()))?;
        if found.is_empty() {
            bail!("{} holds no certificate", file(name).display());
        }
        Ok(found)
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for ca in certs("ca-cert.pem")? {
        roots.add(ca).context("ca-cert.pem")?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .context("client certificate verifier")?;
    let key = PrivateKeyDer::from_pem_file(file("server-key.pem"))
        .with_context(|| format!("reading the key {}", file("server-key.pem").display()))?;
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs("server-cert.pem")?, key)
        .context("server-cert.pem and server-key.pem")?;
    Ok(Arc::new(config))
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
                // rustls warns of every client that names an IP address in SNI (libnbd,
                // QEMU): not the operator's to act on.
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,rustls=error")),
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
    let mut server = NbdServer::new(exports)?;
    if let Some(dir) = &args.tls_certificates {
        server = server.with_tls(tls_config(dir)?);
    }
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
