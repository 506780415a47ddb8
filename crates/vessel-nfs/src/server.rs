//! The server: export table, listeners, one thread per connection, RPC dispatch.
//!
//! Connections are capped in all and per client address (over a cap, a connection is closed
//! as soon as it is accepted), time out when idle or when a record takes too long to arrive,
//! and buffer record bytes against a budget in all and per client (see [`ServerLimits`]). A
//! connection's descriptors are released by its own thread as it ends.

use std::collections::HashMap;
use std::io::{self, BufReader, BufWriter, Read};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::export::{Export, ExportError, ExportTable, HandleKey};
use crate::limits::{Accounts, ServerLimits, ServerStats};
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

    /// Let only clients in `nets` use the export named `path` (empty: every client), from
    /// the next request on: a client left out can no longer mount it nor use the handles
    /// it holds (`NFS3ERR_ACCES`).
    pub fn set_clients(&self, path: &str, nets: Vec<ipnet::IpNet>) -> Result<(), NfsError> {
        Ok(self.inner.exports.set_clients(path, nets)?)
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
            .map(|e| e.current())
            .collect()
    }

    /// Serve MOUNT and NFS on `nfs`, and the portmapper on `portmap` if given (clients that
    /// do not name ports find MOUNT and NFS through it; it must then be port 111), with the
    /// default [`ServerLimits`].
    pub fn serve(
        &self,
        nfs: TcpListener,
        portmap: Option<TcpListener>,
    ) -> Result<ServerHandle, NfsError> {
        self.serve_with(nfs, portmap, ServerLimits::default())
    }

    /// [`NfsServer::serve`] with these limits on what clients may cost.
    pub fn serve_with(
        &self,
        nfs: TcpListener,
        portmap: Option<TcpListener>,
        limits: ServerLimits,
    ) -> Result<ServerHandle, NfsError> {
        let nfs_addr = nfs.local_addr()?;
        let pm_addr = portmap.as_ref().map(|l| l.local_addr()).transpose()?;
        let accounts = Accounts::new(limits);
        tracing::info!(
            max_connections = accounts.stats().max_connections,
            max_per_client = accounts.limits().max_per_client,
            "nfs connection limits"
        );
        let shared = Arc::new(Shared {
            server: self.inner.clone(),
            map: portmap::mappings(nfs_addr.port(), pm_addr.map(|a| a.port())),
            stopping: AtomicBool::new(false),
            next_id: AtomicU64::new(0),
            conns: Mutex::new(HashMap::new()),
            accounts,
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
    accounts: Accounts,
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
        let ip = peer.ip();
        if !shared.accounts.open(ip) {
            // Closed at once: a cap is reached (the stream drops here).
            tracing::debug!(%peer, "nfs connection refused: connection cap reached");
            continue;
        }
        if let Err(e) = spawn_connection(&shared, stream, peer) {
            shared.accounts.close(ip, 0);
            tracing::warn!(error = %e, "could not start a connection thread");
        }
    }
}

/// Socket buffers of a connection (the record itself is buffered against the budget).
const SOCKET_BUFFER: usize = 16 * 1024;
/// A record buffer larger than this is given back to the allocator between records.
const KEEP_CAPACITY: usize = 128 * 1024;

fn spawn_connection(shared: &Arc<Shared>, stream: TcpStream, peer: SocketAddr) -> io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_write_timeout(Some(shared.accounts.limits().write_timeout))?;
    let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
    let closer = stream.try_clone()?;
    let mut conns = shared.conns.lock().unwrap_or_else(PoisonError::into_inner);
    let conn_shared = shared.clone();
    let thread = std::thread::Builder::new()
        .name(format!("nfs-conn-{id}"))
        .spawn(move || {
            let mut held = 0;
            match session(&conn_shared, &stream, peer.ip(), &mut held) {
                Ok(()) => {}
                Err(RecordError::Io(e))
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    conn_shared.accounts.timed_out();
                    tracing::debug!(conn = id, %peer, "nfs connection closed: idle or too slow");
                }
                Err(e) => tracing::debug!(conn = id, %peer, error = %e, "nfs connection ended"),
            }
            let _ = stream.shutdown(Shutdown::Both);
            drop(stream);
            // Our entry holds the clone of the socket: remove it now, not at the next accept.
            conn_shared
                .conns
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&id);
            conn_shared.accounts.close(peer.ip(), held);
        })?;
    conns.insert(id, (closer, Some(thread)));
    Ok(())
}

/// The socket as read by a connection: idle until a record's first byte, then the record
/// must be whole within `record` of it. Read timeouts are set before each read.
struct Timed<'a> {
    stream: &'a TcpStream,
    idle: Duration,
    record: Duration,
    started: Option<Instant>,
}

impl Read for Timed<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let timeout = match self.started {
            None => self.idle,
            Some(t) => self.record.saturating_sub(t.elapsed()),
        };
        if timeout.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        self.stream.set_read_timeout(Some(timeout))?;
        let n = (&mut &*self.stream).read(buf)?;
        if n > 0 && self.started.is_none() {
            self.started = Some(Instant::now());
        }
        Ok(n)
    }
}

/// Serves one connection; `held` is what it has reserved of the budgets when it returns.
fn session(
    shared: &Shared,
    stream: &TcpStream,
    ip: IpAddr,
    held: &mut usize,
) -> Result<(), RecordError> {
    let limits = shared.accounts.limits();
    let timed = Timed {
        stream,
        idle: limits.idle_timeout,
        record: limits.record_timeout,
        started: None,
    };
    let mut reader = BufReader::with_capacity(SOCKET_BUFFER, timed);
    let mut writer = BufWriter::with_capacity(SOCKET_BUFFER, stream);
    let host = ip.to_string();
    let mut msg = Vec::new();
    loop {
        // Bytes of the next record may already be buffered (pipelined calls).
        reader.get_mut().started = (!reader.buffer().is_empty()).then(Instant::now);
        let accounts = &shared.accounts;
        let r = rpc::read_record_within(&mut reader, &mut msg, &mut |n| {
            let ok = accounts.reserve(ip, n);
            if ok {
                *held += n;
            }
            ok
        });
        match r {
            Ok(()) => {}
            Err(RecordError::Closed) => return Ok(()),
            Err(e) => return Err(e),
        }
        let reply = answer(shared, &msg, ip, &host);
        shared.accounts.release(ip, *held);
        *held = 0;
        if msg.capacity() > KEEP_CAPACITY {
            msg = Vec::new();
        }
        if let Some(reply) = reply {
            rpc::write_record(&mut writer, &reply)?;
        }
    }
}

/// The reply to one record, or `None` when it cannot be answered (no call header).
fn answer(shared: &Shared, msg: &[u8], peer: IpAddr, host: &str) -> Option<Vec<u8>> {
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
        peer,
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

    /// What the clients cost now: connections and buffered bytes, in all and per address.
    pub fn stats(&self) -> ServerStats {
        self.shared.accounts.stats()
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
