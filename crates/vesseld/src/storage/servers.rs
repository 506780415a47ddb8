//! Serving exports: one NBD server per listen address (exports added and removed while it
//! serves) and one NFS server per listen address.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use ipnet::IpNet;

use vessel_api::{ExportProtocol, StorageExport};

use crate::error::{chain, Error, Result};

/// Default NBD listener (the IANA NBD port, loopback only).
pub const DEFAULT_NBD: &str = "127.0.0.1:10809";
/// Default NFS listener (loopback only).
pub const DEFAULT_NFS: &str = "127.0.0.1:2049";

struct NbdListener {
    server: vessel_nbd::NbdServer,
    /// Requires TLS (with client certificates of the daemon's authority).
    tls: bool,
    _handle: vessel_nbd::ServerHandle,
}

/// Fingerprints of the client certificates a TLS export takes, shared with its server's
/// check so that issuing and revoking take effect at once.
pub type Clients = Arc<RwLock<BTreeSet<String>>>;

/// The client networks an NBD export admits (none: every client), shared with its
/// server's check so that a change takes effect at once.
type Networks = Arc<RwLock<Vec<IpNet>>>;

struct NfsListener {
    server: vessel_nfs::NfsServer,
    _handle: vessel_nfs::ServerHandle,
}

/// Live listeners and per-export errors.
#[derive(Default)]
pub struct ExportServers {
    nbd: Mutex<HashMap<String, NbdListener>>,
    nfs: Mutex<HashMap<String, NfsListener>>,
    errors: Mutex<HashMap<String, String>>,
    /// Key of NFS file handles, kept across restarts so clients' handles stay valid.
    nfs_key: Mutex<Option<[u8; 32]>>,
    /// The client certificates of each TLS export, by export name.
    clients: Mutex<HashMap<String, Clients>>,
    /// The client networks of each NBD export, by export name.
    networks: Mutex<HashMap<String, Networks>>,
    /// The NBD authority, once loaded.
    ca: Mutex<Option<Arc<super::nbd_tls::NbdCa>>>,
    /// The buffer budget of each project's NBD listeners, shared by them all: however many
    /// listeners a project opens, its clients hold at most `vessel_nbd::BUFFER_LIMIT` of
    /// buffers together, and another project's never wait for them.
    budgets: Mutex<HashMap<String, vessel_nbd::BufferBudget>>,
}

/// Where an export listens when it is not told: [`DEFAULT_NBD`], [`DEFAULT_NFS`].
pub fn default_listen(protocol: ExportProtocol) -> &'static str {
    match protocol {
        ExportProtocol::Nbd => DEFAULT_NBD,
        ExportProtocol::Nfs => DEFAULT_NFS,
    }
}

/// Checks and normalizes a listen address: `HOST:PORT` or, for NBD, an absolute socket path.
pub fn normalize_listen(protocol: ExportProtocol, listen: Option<&str>) -> Result<String> {
    let listen = listen.unwrap_or(default_listen(protocol));
    if listen.starts_with('/') {
        if protocol == ExportProtocol::Nfs {
            return Err(Error::invalid(
                "NFS exports listen on TCP (HOST:PORT), not on a unix socket",
            ));
        }
        return Ok(listen.to_string());
    }
    let addr: SocketAddr = listen.parse().map_err(|_| {
        Error::invalid(format!(
            "listen address {listen:?} is neither HOST:PORT (e.g. 127.0.0.1:10809) nor an \
             absolute socket path"
        ))
    })?;
    if addr.port() == 0 {
        return Err(Error::invalid("give a port other than 0 to listen on"));
    }
    Ok(addr.to_string())
}

/// Whether listeners on normalized addresses `a` and `b` would take the same connections:
/// the same socket path, or the same port where the addresses match or either is the
/// unspecified address (which takes every address's connections).
pub fn listens_overlap(a: &str, b: &str) -> bool {
    match (a.parse::<SocketAddr>(), b.parse::<SocketAddr>()) {
        (Ok(x), Ok(y)) => {
            x.port() == y.port()
                && (x.ip() == y.ip() || x.ip().is_unspecified() || y.ip().is_unspecified())
        }
        _ => a == b,
    }
}

/// A URI clients understand for an export.
pub fn uri(protocol: ExportProtocol, listen: &str, name: &str, tls: bool) -> String {
    match protocol {
        ExportProtocol::Nbd if listen.starts_with('/') => {
            format!("nbd+unix:///{name}?socket={listen}")
        }
        ExportProtocol::Nbd if tls => format!("nbds://{listen}/{name}"),
        ExportProtocol::Nbd => format!("nbd://{listen}/{name}"),
        // MOUNT and NFS share the port and no portmapper runs, so the ports travel in
        // the URI (libnfs's `nfsport`/`mountport`).
        ExportProtocol::Nfs => {
            let (host, port) = listen.rsplit_once(':').unwrap_or((listen, "2049"));
            format!("nfs://{host}/{name}?nfsport={port}&mountport={port}")
        }
    }
}

/// The generation of an NFS export: what it serves and how (pool, volume, read-only), so a
/// re-created export's handles stay valid only when it serves the same volume the same way;
/// the engine also binds handles to the export root's own kernel handle, so an export
/// re-created on another directory never accepts the old handles. Used for exports recorded
/// before each create drew a generation of its own.
pub fn export_generation(e: &StorageExport) -> u32 {
    use sha2::Digest;
    let h = sha2::Sha256::new()
        .chain_update(e.name.as_bytes())
        .chain_update([0])
        .chain_update(e.pool.as_bytes())
        .chain_update([0])
        .chain_update(e.volume.as_bytes())
        .chain_update([u8::from(e.read_only)])
        .finalize();
    u32::from_be_bytes([h[0], h[1], h[2], h[3]])
}

impl ExportServers {
    /// The error that keeps an export from being served.
    pub fn error(&self, name: &str) -> Option<String> {
        self.errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// Records why an export is not served.
    pub fn set_error(&self, name: &str, error: String) {
        self.errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), error);
    }

    /// The NBD authority kept in `dir`, made on first use.
    pub fn ca(&self, dir: &std::path::Path) -> Result<Arc<super::nbd_tls::NbdCa>> {
        let mut ca = self.ca.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ca) = &*ca {
            return Ok(ca.clone());
        }
        let made = Arc::new(super::nbd_tls::NbdCa::load_or_create(dir)?);
        *ca = Some(made.clone());
        Ok(made)
    }

    /// The client certificates TLS export `name` takes (an empty set for one not served).
    pub fn clients(&self, name: &str) -> Clients {
        self.clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name.to_string())
            .or_default()
            .clone()
    }

    /// Makes TLS export `name` take exactly the client certificates `fingerprints` (its
    /// record's), for new connections at once; open sessions of a client no longer taken
    /// are closed.
    pub fn set_clients(&self, name: &str, fingerprints: &[String]) {
        self.take_clients(name, fingerprints);
        let nbd = self.nbd.lock().unwrap_or_else(|p| p.into_inner());
        for l in nbd.values().filter(|l| l.tls) {
            let closed = l.server.close_disallowed();
            if closed > 0 {
                tracing::info!(export = %name, sessions = closed, "closed the NBD sessions of clients whose credentials were revoked");
            }
        }
    }

    /// The client certificates TLS export `name` takes from now on.
    fn take_clients(&self, name: &str, fingerprints: &[String]) {
        *self
            .clients(name)
            .write()
            .unwrap_or_else(|p| p.into_inner()) = fingerprints.iter().cloned().collect();
    }

    /// The client networks NBD export `name` admits.
    fn networks(&self, name: &str) -> Networks {
        self.networks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name.to_string())
            .or_default()
            .clone()
    }

    /// Serves a block device as an NBD export. A TLS export (`tls` gives its listener's
    /// configuration, made only for a new listener) takes the client certificates whose
    /// fingerprints are in `clients`; over TCP, clients in `networks` only (none: all).
    pub fn add_nbd(
        &self,
        e: &StorageExport,
        dev: Arc<dyn vessel_nbd::BlockDevice>,
        clients: &[String],
        networks: Vec<IpNet>,
        tls: impl FnOnce(SocketAddr) -> Result<Arc<rustls::ServerConfig>>,
    ) -> Result<()> {
        let nets = self.networks(&e.name);
        *nets.write().unwrap_or_else(|p| p.into_inner()) = networks;
        let mut export = vessel_nbd::NbdExport::new(e.name.clone(), dev)
            .read_only(e.read_only)
            .description(format!("vessel volume {}/{}", e.pool, e.volume))
            .addresses(move |ip| {
                vessel_nfs::nets_admit(&nets.read().unwrap_or_else(|p| p.into_inner()), ip)
            });
        let mut nbd = self.nbd.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = nbd.get(&e.listen).filter(|l| l.tls != e.tls) {
            return Err(Error::conflict(format!(
                "the listener on {} serves {}; give the same TLS setting or another --listen",
                e.listen,
                if l.tls { "with TLS" } else { "without TLS" }
            )));
        }
        if e.tls {
            self.take_clients(&e.name, clients);
            let set = self.clients(&e.name);
            export = export.clients(move |der| {
                set.read()
                    .unwrap_or_else(|p| p.into_inner())
                    .contains(&crate::auth::tls::fingerprint(der))
            });
        }
        if let Some(l) = nbd.get(&e.listen) {
            l.server
                .add_export(export)
                .map_err(|err| Error::conflict(format!("NBD export: {}", chain(&err))))?;
        } else {
            let project = crate::project::split(&e.name).0.to_string();
            let budget = self
                .budgets
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(project)
                .or_insert_with(|| vessel_nbd::BufferBudget::new(vessel_nbd::BUFFER_LIMIT))
                .clone();
            let mut server = vessel_nbd::NbdServer::new([export])
                .map_err(|err| Error::invalid(format!("NBD export: {}", chain(&err))))?
                .with_buffer_budget(&budget);
            if e.tls {
                let addr: SocketAddr = e.listen.parse().map_err(|_| {
                    Error::invalid(format!("TLS needs a TCP address, not {}", e.listen))
                })?;
                server = server.with_tls(tls(addr)?);
            }
            let handle = if e.listen.starts_with('/') {
                remove_stale_socket(&e.listen)?;
                server.serve_unix(&e.listen)
            } else {
                let addr: SocketAddr = e
                    .listen
                    .parse()
                    .map_err(|_| Error::invalid(format!("bad address {}", e.listen)))?;
                server.serve_tcp(addr)
            }
            .map_err(|err| {
                Error::conflict(format!("cannot listen on {}: {}", e.listen, chain(&err)))
            })?;
            nbd.insert(
                e.listen.clone(),
                NbdListener {
                    server,
                    tls: e.tls,
                    _handle: handle,
                },
            );
        }
        self.errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&e.name);
        Ok(())
    }

    /// Sets the key NFS file handles are signed with.
    pub fn set_nfs_key(&self, key: [u8; 32]) {
        *self.nfs_key.lock().unwrap_or_else(|p| p.into_inner()) = Some(key);
    }

    /// Serves a directory as an NFS export at `/NAME` (root squashed to nobody, other
    /// users as they are, like a default Linux export) whose handles carry `generation`:
    /// handles of an export are stale once it is served with another generation (or another
    /// root directory).
    pub fn add_nfs_generation(
        &self,
        e: &StorageExport,
        root: PathBuf,
        generation: u32,
        clients: Vec<IpNet>,
    ) -> Result<()> {
        let export = vessel_nfs::Export::new(format!("/{}", e.name), root)
            .read_only(e.read_only)
            .generation(generation)
            .clients(clients);
        let mut nfs = self.nfs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = nfs.get(&e.listen) {
            l.server
                .add_export(export)
                .map_err(|err| Error::conflict(format!("NFS export: {}", chain(&err))))?;
        } else {
            let addr: SocketAddr = e
                .listen
                .parse()
                .map_err(|_| Error::invalid(format!("bad address {}", e.listen)))?;
            let key = *self.nfs_key.lock().unwrap_or_else(|p| p.into_inner());
            let server = match key {
                Some(k) => vessel_nfs::NfsServer::with_key(
                    vec![export],
                    vessel_nfs::HandleKey::from_bytes(k),
                ),
                None => vessel_nfs::NfsServer::new(vec![export]),
            }
            .map_err(|err| Error::invalid(format!("NFS export: {}", chain(&err))))?;
            let listener = std::net::TcpListener::bind(addr)
                .map_err(|err| Error::conflict(format!("cannot listen on {}: {err}", e.listen)))?;
            // Caps on connections, idle and slow clients and buffered bytes, with the
            // daemon's descriptors in mind: NFS clients must never starve the API.
            let handle = server
                .serve_with(listener, None, vessel_nfs::ServerLimits::default())
                .map_err(|err| Error::internal(format!("NFS server: {}", chain(&err))))?;
            nfs.insert(
                e.listen.clone(),
                NfsListener {
                    server,
                    _handle: handle,
                },
            );
        }
        self.errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&e.name);
        Ok(())
    }

    /// Lets only clients in `networks` use export `e` (none: every client): over NFS from
    /// their next request, over NBD from their next connection, and an NBD client
    /// connected from elsewhere is cut off.
    pub fn set_networks(&self, e: &StorageExport, networks: Vec<IpNet>) -> Result<()> {
        if e.protocol == ExportProtocol::Nbd {
            *self
                .networks(&e.name)
                .write()
                .unwrap_or_else(|p| p.into_inner()) = networks;
            let nbd = self.nbd.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(l) = nbd.get(&e.listen) {
                let closed = l.server.close_disallowed();
                if closed > 0 {
                    tracing::info!(export = %e.name, sessions = closed, "closed the NBD sessions of clients outside the export's networks");
                }
            }
            return Ok(());
        }
        let nfs = self.nfs.lock().unwrap_or_else(|p| p.into_inner());
        let l = nfs.get(&e.listen).ok_or_else(|| {
            Error::internal(format!("export {} has no listener on {}", e.name, e.listen))
        })?;
        l.server
            .set_clients(&format!("/{}", e.name), networks)
            .map_err(|err| Error::internal(format!("NFS export: {}", chain(&err))))
    }

    /// Closes every listener and connection (the daemon is stopping), waiting for the
    /// requests in progress.
    pub fn stop_all(&self) {
        let nbd: Vec<NbdListener> = {
            let mut nbd = self.nbd.lock().unwrap_or_else(|p| p.into_inner());
            nbd.drain().map(|(_, l)| l).collect()
        };
        let nfs: Vec<NfsListener> = {
            let mut nfs = self.nfs.lock().unwrap_or_else(|p| p.into_inner());
            nfs.drain().map(|(_, l)| l).collect()
        };
        // Each handle stops its server when dropped.
        drop(nbd);
        drop(nfs);
    }

    /// Stops serving an export; a listener with no exports left is closed.
    pub fn remove(&self, e: &StorageExport) {
        self.errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&e.name);
        match e.protocol {
            ExportProtocol::Nbd => {
                self.clients
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&e.name);
                self.networks
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&e.name);
                let mut nbd = self.nbd.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(l) = nbd.get(&e.listen) {
                    l.server.remove_export(&e.name);
                    if l.server.export_names().is_empty() {
                        nbd.remove(&e.listen);
                    }
                }
            }
            ExportProtocol::Nfs => {
                let mut nfs = self.nfs.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(l) = nfs.get(&e.listen) {
                    let _ = l.server.remove_export(&format!("/{}", e.name));
                    if l.server.exports().is_empty() {
                        nfs.remove(&e.listen);
                    }
                }
            }
        }
    }
}

/// Removes the socket a unix socket export left at `path`, so that it is bound again;
/// anything else there is refused, never removed.
fn remove_stale_socket(path: &str) -> Result<()> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path)
            .map_err(|e| Error::conflict(format!("cannot replace the socket {path}: {e}"))),
        Ok(_) => Err(Error::conflict(format!(
            "{path} exists and is not a socket: give the export another path"
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::conflict(format!("{path}: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_overlap_by_port_and_address() {
        assert!(listens_overlap("127.0.0.1:10809", "127.0.0.1:10809"));
        assert!(listens_overlap("0.0.0.0:10809", "127.0.0.1:10809"));
        assert!(listens_overlap("127.0.0.2:10809", "[::]:10809"));
        assert!(!listens_overlap("127.0.0.1:10809", "127.0.0.2:10809"));
        assert!(!listens_overlap("0.0.0.0:10809", "0.0.0.0:10810"));
        assert!(listens_overlap("/run/a.sock", "/run/a.sock"));
        assert!(!listens_overlap("/run/a.sock", "/run/b.sock"));
    }
}
