//! The server: export table, listeners, one thread per connection, RPC dispatch.

use std::collections::HashMap;
use std::io::{self, BufReader, BufWriter};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::export::{Export, ExportError, ExportTable, HandleKey};
use crate::mount::MountList;
use crate::nfs::Ctx;
use crate::rpc::{self, Accept, RecordError};
use crate::sys::ServerIdentity;
use crate::{mount, nfs, portmap};

/// Why the server could not start or change its exports.
#[derive(Debug, thiserror::Error)]
pub enum NfsError {
    /// An export could not be added or removed.
    #[error(transparent)]
    Export(#[from] ExportError),
    /// Socket or listener I/O failed.
    #[error("socket I/O failed")]
    Io(#[from] io::Error),
}

struct Inner {
    exports: ExportTable,
    key: HandleKey,
    identity: ServerIdentity,
    write_verf: [u8; 8],
    mounts: MountList,
}

/// A user-space NFSv3 server (with MOUNT v3 and a portmapper) over a live set of exports.
/// Clones share the export table.
#[derive(Clone)]
pub struct NfsServer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for NfsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NfsServer")
            .field("exports", &self.exports())
            .finish()
    }
}

impl NfsServer {
    /// A server offering `exports`, with a fresh random handle key (handles go stale when
    /// the process restarts; use [`NfsServer::with_key`] to keep them).
    pub fn new(exports: Vec<Export>) -> Result<Self, NfsError> {
        Self::with_key(exports, HandleKey::random()?)
    }

    /// A server offering `exports` whose file handles are authenticated with `key`.
    pub fn with_key(exports: Vec<Export>, key: HandleKey) -> Result<Self, NfsError> {
        let boot = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let server = NfsServer {
            inner: Arc::new(Inner {
                exports: ExportTable::default(),
                key,
                identity: ServerIdentity::current(),
                write_verf: (boot ^ u64::from(std::process::id())).to_be_bytes(),
                mounts: MountList::default(),
            }),
        };
        for e in exports {
            server.add_export(e)?;
        }
        Ok(server)
    }

    /// Offer another export, from the next request on.
    pub fn add_export(&self, export: Export) -> Result<(), NfsError> {
        Ok(self.inner.exports.add(export)?)
    }

    /// Stop offering the export named `path`; its handles become stale at once.
    pub fn remove_export(&self, path: &str) -> Result<Export, NfsError> {
        Ok(self.inner.exports.remove(path)?)
    }

    /// The exports currently offered.
    pub fn exports(&self) -> Vec<Export> {
        self.inner
            .exports
            .list()
            .iter()
            .map(|e| e.config.clone())
            .collect()
    }

    /// Serve MOUNT and NFS on `nfs`, and the portmapper on `portmap` if given (clients that
    /// do not name ports find MOUNT and NFS through it; it must then be port 111).
    pub fn serve(
        &self,
        nfs: TcpListener,
        portmap: Option<TcpListener>,
    ) -> Result<ServerHandle, NfsError> {
        let nfs_addr = nfs.local_addr()?;
        let pm_addr = portmap.as_ref().map(|l| l.local_addr()).transpose()?;
        let shared = Arc::new(Shared {
            server: self.inner.clone(),
            map: portmap::mappings(nfs_addr.port(), pm_addr.map(|a| a.port())),
            stopping: AtomicBool::new(false),
            next_id: AtomicU64::new(0),
            conns: Mutex::new(HashMap::new()),
        });
        let mut accepts = Vec::new();
        for (name, listener) in std::iter::once(("nfs", nfs)).chain(portmap.map(|l| ("pmap", l))) {
            let s = shared.clone();
            let addr = listener.local_addr()?;
            let t = std::thread::Builder::new()
                .name(format!("nfs-accept-{name}"))
                .spawn(move || accept_loop(s, listener))?;
            accepts.push((addr, t));
        }
        tracing::info!(nfs = %nfs_addr, portmap = ?pm_addr, "nfs server listening");
        Ok(ServerHandle {
            shared,
            accepts,
            nfs_addr,
            portmap_addr: pm_addr,
        })
    }
}

/// A live connection: a clone of its socket (to shut it down) and its thread.
type Conn = (TcpStream, Option<JoinHandle<()>>);

struct Shared {
    server: Arc<Inner>,
    map: Vec<(u32, u32, u32)>,
    stopping: AtomicBool,
    next_id: AtomicU64,
    conns: Mutex<HashMap<u64, Conn>>,
}

fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        let (stream, peer) = match listener.accept() {
            Ok(s) => s,
            Err(e) if shared.stopping.load(Ordering::SeqCst) => {
                tracing::debug!(error = %e, "accept ended");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                std::thread::sleep(std::time::Duration::from_millis(50));
                continue;
            }
        };
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        if let Err(e) = spawn_connection(&shared, stream, peer) {
            tracing::warn!(error = %e, "could not start a connection thread");
        }
    }
}

fn spawn_connection(shared: &Arc<Shared>, stream: TcpStream, peer: SocketAddr) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
    let closer = stream.try_clone()?;
    let mut conns = shared.conns.lock().unwrap_or_else(PoisonError::into_inner);
    conns.retain(|_, (_, t)| t.as_ref().is_some_and(|t| !t.is_finished()));
    let conn_shared = shared.clone();
    let thread = std::thread::Builder::new()
        .name(format!("nfs-conn-{id}"))
        .spawn(move || {
            let host = peer.ip().to_string();
            match session(&conn_shared, &stream, &host) {
                Ok(()) => {}
                Err(e) => tracing::debug!(conn = id, %peer, error = %e, "nfs connection ended"),
            }
            let _ = stream.shutdown(Shutdown::Both);
        })?;
    conns.insert(id, (closer, Some(thread)));
    Ok(())
}

fn session(shared: &Shared, stream: &TcpStream, host: &str) -> Result<(), RecordError> {
    let mut reader = BufReader::with_capacity(256 * 1024, stream);
    let mut writer = BufWriter::with_capacity(256 * 1024, stream);
    let mut msg = Vec::new();
    loop {
        match rpc::read_record(&mut reader, &mut msg) {
            Ok(()) => {}
            Err(RecordError::Closed) => return Ok(()),
            Err(e) => return Err(e),
        }
        if let Some(reply) = answer(shared, &msg, host) {
            rpc::write_record(&mut writer, &reply)?;
        }
    }
}

/// The reply to one record, or `None` when it cannot be answered (no call header).
fn answer(shared: &Shared, msg: &[u8], host: &str) -> Option<Vec<u8>> {
    let (call, mut args) = match rpc::decode_call(msg) {
        Ok(c) => c,
        Err(refusal) => return rpc::denied_reply(&refusal),
    };
    let s = &shared.server;
    let ctx = Ctx {
        exports: &s.exports,
        key: &s.key,
        identity: &s.identity,
        cred: &call.cred,
        write_verf: s.write_verf,
    };
    let mut reply = rpc::accepted_reply(call.xid, Accept::Success);
    let (lo_hi, outcome) = match call.prog {
        portmap::PROGRAM => (
            portmap::VERSION,
            (call.vers == portmap::VERSION)
                .then(|| portmap::dispatch(&shared.map, call.proc_, &mut args, &mut reply)),
        ),
        mount::PROGRAM => (
            mount::VERSION,
            (call.vers == mount::VERSION)
                .then(|| mount::dispatch(&ctx, &s.mounts, host, call.proc_, &mut args, &mut reply)),
        ),
        nfs::PROGRAM => (
            nfs::VERSION,
            (call.vers == nfs::VERSION)
                .then(|| nfs::dispatch(&ctx, call.proc_, &mut args, &mut reply)),
        ),
        _ => return Some(rpc::accepted_reply(call.xid, Accept::ProgUnavail).into_bytes()),
    };
    let stat = match outcome {
        None => Accept::ProgMismatch(lo_hi, lo_hi),
        Some(Ok(Some(()))) => return Some(reply.into_bytes()),
        Some(Ok(None)) => Accept::ProcUnavail,
        Some(Err(e)) => {
            tracing::debug!(prog = call.prog, proc_ = call.proc_, error = %e, "garbage arguments");
            Accept::GarbageArgs
        }
    };
    Some(rpc::accepted_reply(call.xid, stat).into_bytes())
}

/// A running server; dropping it stops the listeners and closes every connection.
pub struct ServerHandle {
    shared: Arc<Shared>,
    accepts: Vec<(SocketAddr, JoinHandle<()>)>,
    nfs_addr: SocketAddr,
    portmap_addr: Option<SocketAddr>,
}

impl ServerHandle {
    /// Where MOUNT and NFS are served.
    pub fn nfs_addr(&self) -> SocketAddr {
        self.nfs_addr
    }

    /// Where the portmapper is served, if it is.
    pub fn portmap_addr(&self) -> Option<SocketAddr> {
        self.portmap_addr
    }

    /// Stop accepting, close every connection and wait for their threads.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if self.accepts.is_empty() {
            return;
        }
        self.shared.stopping.store(true, Ordering::SeqCst);
        for (addr, thread) in self.accepts.drain(..) {
            // Wake the blocking accept with a connection of our own.
            let _ = TcpStream::connect(addr);
            let _ = thread.join();
        }
        let conns: Vec<_> = {
            let mut c = self
                .shared
                .conns
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            c.drain().map(|(_, c)| c).collect()
        };
        for (sock, thread) in conns {
            let _ = sock.shutdown(Shutdown::Both);
            if let Some(t) = thread {
                let _ = t.join();
            }
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.stop();
    }
}
