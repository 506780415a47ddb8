//! Listeners, export table and connection threads.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

/// Connections served at once; more are closed as they come (each has a thread).
pub const MAX_CONNECTIONS: usize = 256;
/// Time a client has to finish the handshake (an idle client in transmission is fine: a
/// kernel client keeps its connection open between requests).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// Time a client may leave the server's replies unread (a write to its socket that makes
/// no progress) before its connection is closed: replies waiting for it hold their buffers,
/// tens of MiB for a client that pipelines large reads and reads nothing.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(60);

use crate::device::BlockDevice;
use crate::handshake::{Negotiated, TlsState};
use crate::{handshake, tls, transmission};

/// Which client certificates may use an export (given the DER of the first one).
pub type ClientCheck = Arc<dyn Fn(&[u8]) -> bool + Send + Sync>;

/// Which TCP client addresses may use an export.
pub type AddressCheck = Arc<dyn Fn(IpAddr) -> bool + Send + Sync>;

/// Why the server could not start or a connection ended abnormally.
#[derive(Debug, thiserror::Error)]
pub enum NbdError {
    /// Two exports were given the same name.
    #[error("export {0:?} is defined twice; export names must be unique")]
    DuplicateExport(String),
    /// An export name is not valid UTF-8 or is longer than 4096 bytes.
    #[error("export name {0:?} is too long (at most 4096 bytes)")]
    BadExportName(String),
    /// The peer broke the protocol.
    #[error("protocol violation by the client: {0}")]
    Protocol(&'static str),
    /// Socket or listener I/O failed.
    #[error("socket I/O failed")]
    Io(#[from] io::Error),
}

/// One named export: a block device plus how it is offered.
#[derive(Clone)]
pub struct NbdExport {
    pub(crate) name: String,
    pub(crate) description: String,
    pub(crate) device: Arc<dyn BlockDevice>,
    pub(crate) read_only: bool,
    /// Buffers its connections used, for their next requests.
    pub(crate) bufs: Arc<crate::bufs::Bufs>,
    /// On a server with TLS: which client certificates may see and use it (any the
    /// server's verifier accepted when `None`).
    pub(crate) clients: Option<ClientCheck>,
    /// Which TCP client addresses may see and use it (any when `None`).
    pub(crate) addresses: Option<AddressCheck>,
}

impl std::fmt::Debug for NbdExport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NbdExport")
            .field("name", &self.name)
            .field("size", &self.device.size())
            .field("read_only", &self.read_only)
            .finish()
    }
}

impl NbdExport {
    /// A writable export called `name` serving `device`.
    pub fn new(name: impl Into<String>, device: Arc<dyn BlockDevice>) -> Self {
        NbdExport {
            name: name.into(),
            description: String::new(),
            device,
            read_only: false,
            bufs: Arc::default(),
            clients: None,
            addresses: None,
        }
    }

    /// Offer the export only to TCP clients whose address (an IPv4 client on an IPv6
    /// socket as its IPv4 address) `check` accepts: the others neither see it listed nor
    /// can open it. Clients on a unix socket are not asked (its file mode decides who
    /// connects).
    pub fn addresses(mut self, check: impl Fn(IpAddr) -> bool + Send + Sync + 'static) -> Self {
        self.addresses = Some(Arc::new(check));
        self
    }

    /// Whether a client from `ip` (`None`: a unix socket's) may use the export.
    fn reaches(&self, ip: Option<IpAddr>) -> bool {
        match (&self.addresses, ip) {
            (Some(check), Some(ip)) => check(ip),
            _ => true,
        }
    }

    /// On a server with TLS, offer the export only to clients whose certificate (its DER)
    /// `check` accepts: the others neither see it listed nor can open it.
    pub fn clients(mut self, check: impl Fn(&[u8]) -> bool + Send + Sync + 'static) -> Self {
        self.clients = Some(Arc::new(check));
        self
    }

    /// Whether a client with certificate `peer` may use the export.
    fn allows(&self, peer: Option<&[u8]>) -> bool {
        match (&self.clients, peer) {
            (None, _) => true,
            (Some(check), Some(cert)) => check(cert),
            (Some(_), None) => false,
        }
    }

    /// Offer the export read-only: writes, trims and write-zeroes fail with `EPERM`.
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    /// A human-readable description shown by `nbdinfo --list`.
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    /// Name clients use to select the export.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// A bound on the large buffers (write payloads, read replies) that the connections of
/// the servers sharing it hold at once ([`NbdServer::with_buffer_budget`]).
#[derive(Debug, Clone)]
pub struct BufferBudget(Arc<crate::bufs::Budget>);

impl BufferBudget {
    /// A budget of `bytes` (one buffer larger is taken when no other is out).
    pub fn new(bytes: usize) -> Self {
        BufferBudget(Arc::new(crate::bufs::Budget::with_limit(bytes)))
    }

    /// Bytes of large buffers its servers' connections hold now.
    pub fn out(&self) -> usize {
        self.0.out()
    }
}

/// The set of exports a server offers, by name.
pub(crate) type Exports = BTreeMap<String, NbdExport>;

/// An NBD server: a set of exports that can be served on several listeners. Exports can be
/// added and removed while it serves; a client negotiates with the set as it was when it
/// connected, and a removed export's clients are cut off.
#[derive(Debug, Clone)]
pub struct NbdServer {
    exports: Arc<RwLock<Exports>>,
    handshake_timeout: Duration,
    stall_timeout: Duration,
    tls: Option<Arc<rustls::ServerConfig>>,
    /// Sessions in transmission, on every listener of this server.
    sessions: Arc<Sessions>,
    /// The bound on the large buffers its connections hold at once.
    budget: Arc<crate::bufs::Budget>,
}

/// A session in transmission: its export (by name, and its buffers, which only that export
/// and its clones share), its client's certificate (over TLS) and address (over TCP), how
/// to end it.
struct Live {
    export: String,
    bufs: Arc<crate::bufs::Bufs>,
    peer: Option<Vec<u8>>,
    ip: Option<IpAddr>,
    /// The session's own mark: set once it is cut off (its threads may still be ending).
    cut: Arc<AtomicBool>,
    /// Shuts the session's connection down.
    hang_up: Closer,
}

impl Live {
    /// The entry of `session`, on the connection `hang_up` shuts down.
    fn of(
        session: &handshake::Session,
        peer: Option<Vec<u8>>,
        ip: Option<IpAddr>,
        hang_up: impl Fn() + Send + 'static,
    ) -> Live {
        Live {
            export: session.export.name.clone(),
            bufs: session.export.bufs.clone(),
            peer,
            ip,
            cut: session.cut.clone(),
            hang_up: Box::new(hang_up),
        }
    }

    /// Cuts the session off: marked first, so that requests read but not yet served are
    /// not, then its connection shut down.
    fn close(&self) {
        self.cut.store(true, Ordering::Release);
        (self.hang_up)();
    }

    /// Whether `exports` still offer this session's export (the same one, not another
    /// made under its name since) to its client.
    fn offered(&self, exports: &Exports) -> bool {
        exports
            .get(&self.export)
            .filter(|e| Arc::ptr_eq(&e.bufs, &self.bufs) && e.reaches(self.ip))
            .is_some_and(|e| match &self.peer {
                Some(peer) => e.allows(Some(peer)),
                None => true,
            })
    }
}

/// The sessions in transmission, so that the clients of a removed export, or whose
/// certificate their export no longer takes, can be cut off ([`NbdServer::remove_export`],
/// [`NbdServer::close_disallowed`]).
#[derive(Default)]
struct Sessions {
    next: AtomicU64,
    live: Mutex<HashMap<u64, Live>>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        f.debug_struct("Sessions").field("live", &n).finish()
    }
}

impl Sessions {
    /// Notes a session until the returned guard drops. A session whose export was removed,
    /// or stopped taking its client, while it negotiated is closed at once: checked and
    /// noted under the locks a sweep takes, it cannot slip between a change and the sweep
    /// that follows it.
    fn enter(self: &Arc<Self>, exports: &RwLock<Exports>, live: Live) -> SessionGuard {
        let id = self.next.fetch_add(1, Ordering::SeqCst);
        // Both locks held from the check to the insert: a sweep after a change (which
        // takes them in the same order) either sees this session or ran before the check.
        let exports = exports.read().unwrap_or_else(PoisonError::into_inner);
        let mut sessions = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        if !live.offered(&exports) {
            live.close();
        }
        sessions.insert(id, live);
        SessionGuard {
            sessions: self.clone(),
            id,
        }
    }

    /// Closes the sessions `exports` no longer offer to their clients; how many (not
    /// counting those cut off before, still ending).
    fn sweep(&self, exports: &Exports) -> usize {
        let live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        let mut closed = 0;
        for s in live
            .values()
            .filter(|s| !s.cut.load(Ordering::Acquire) && !s.offered(exports))
        {
            tracing::info!(export = %s.export, client = ?s.ip, "nbd session closed: its export is no longer offered to its client (removed, or its certificate or address no longer taken)");
            s.close();
            closed += 1;
        }
        closed
    }
}

struct SessionGuard {
    sessions: Arc<Sessions>,
    id: u64,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.sessions
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}

impl NbdServer {
    /// A server offering `exports`; names must be unique.
    pub fn new(exports: impl IntoIterator<Item = NbdExport>) -> Result<Self, NbdError> {
        let mut map = Exports::new();
        for export in exports {
            if export.name.len() > 4096 {
                return Err(NbdError::BadExportName(export.name));
            }
            if map.contains_key(&export.name) {
                return Err(NbdError::DuplicateExport(export.name));
            }
            map.insert(export.name.clone(), export);
        }
        Ok(NbdServer {
            exports: Arc::new(RwLock::new(map)),
            handshake_timeout: HANDSHAKE_TIMEOUT,
            stall_timeout: STALL_TIMEOUT,
            tls: None,
            sessions: Arc::default(),
            budget: Arc::default(),
        })
    }

    /// Bounds the bytes of large buffers (write payloads, read replies) its connections
    /// hold at once (default [`crate::BUFFER_LIMIT`]): past it a request waits for others'
    /// buffers to come back (one larger than the bound is taken when none is out). Many
    /// clients that pipeline large requests and read no replies would otherwise hold tens
    /// of MiB each until the stall timeout closed them.
    pub fn with_buffer_limit(self, bytes: usize) -> Self {
        self.budget.set_limit(bytes);
        self
    }

    /// Counts its connections' large buffers in `budget`, shared with other servers (a
    /// daemon's export listeners of one project), instead of a bound of its own: on
    /// listeners started from here on.
    pub fn with_buffer_budget(mut self, budget: &BufferBudget) -> Self {
        self.budget = budget.0.clone();
        self
    }

    /// Bytes of large buffers its connections hold now.
    pub fn buffers_out(&self) -> usize {
        self.budget.out()
    }

    /// Require TLS (`NBD_OPT_STARTTLS`) on listeners started from here on: before it, a
    /// client can only start TLS or leave. `config` says which certificate the server shows
    /// and which client certificates it takes; [`NbdExport::clients`] narrows each export.
    pub fn with_tls(mut self, config: Arc<rustls::ServerConfig>) -> Self {
        self.tls = Some(config);
        self
    }

    /// The time a client has to finish its handshake on listeners started from here on
    /// (default [`HANDSHAKE_TIMEOUT`]).
    pub fn with_handshake_timeout(mut self, t: Duration) -> Self {
        self.handshake_timeout = t;
        self
    }

    /// The time a client may leave replies unread on listeners started from here on
    /// (default [`STALL_TIMEOUT`]).
    pub fn with_stall_timeout(mut self, t: Duration) -> Self {
        self.stall_timeout = t;
        self
    }

    /// Offers one more export on every listener of this server.
    pub fn add_export(&self, export: NbdExport) -> Result<(), NbdError> {
        if export.name.len() > 4096 {
            return Err(NbdError::BadExportName(export.name));
        }
        let mut map = self.exports.write().unwrap_or_else(PoisonError::into_inner);
        if map.contains_key(&export.name) {
            return Err(NbdError::DuplicateExport(export.name));
        }
        map.insert(export.name.clone(), export);
        Ok(())
    }

    /// Stops offering an export and closes its clients' connections (a request not yet
    /// served is not served). Returns whether it was offered.
    pub fn remove_export(&self, name: &str) -> bool {
        let mut exports = self.exports.write().unwrap_or_else(PoisonError::into_inner);
        let removed = exports.remove(name).is_some();
        if removed {
            self.sessions.sweep(&exports);
        }
        removed
    }

    /// Ends the open sessions whose client their export no longer takes (its
    /// [`NbdExport::clients`] check says no to its certificate now: credentials revoked;
    /// or its [`NbdExport::addresses`] check to its address), on every listener of this
    /// server; returns how many. The client sees its connection closed;
    /// requests it had in flight get no reply.
    pub fn close_disallowed(&self) -> usize {
        let exports = self.exports.read().unwrap_or_else(PoisonError::into_inner);
        self.sessions.sweep(&exports)
    }

    /// Names of the exports offered.
    pub fn export_names(&self) -> Vec<String> {
        self.exports
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect()
    }

    /// Serve on a unix socket at `path` (removed again when the handle drops).
    pub fn serve_unix(&self, path: impl AsRef<Path>) -> Result<ServerHandle, NbdError> {
        let path = path.as_ref().to_path_buf();
        let listener = UnixListener::bind(&path)?;
        let shared = self.shared();
        let accept_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("nbd-accept-unix".into())
            .spawn(move || accept_loop(accept_shared, || listener.accept().map(|(s, _)| s)))?;
        tracing::info!(socket = %path.display(), "nbd server listening");
        Ok(ServerHandle {
            shared,
            accept: Some(thread),
            endpoint: Endpoint::Unix(path),
        })
    }

    /// Serve on TCP at `addr` (port 0 picks a free port; see [`ServerHandle::tcp_addr`]).
    pub fn serve_tcp(&self, addr: SocketAddr) -> Result<ServerHandle, NbdError> {
        let listener = TcpListener::bind(addr)?;
        let local = listener.local_addr()?;
        let shared = self.shared();
        let accept_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("nbd-accept-tcp".into())
            .spawn(move || {
                accept_loop(accept_shared, || {
                    let (s, _) = listener.accept()?;
                    s.set_nodelay(true)?;
                    Ok(s)
                })
            })?;
        tracing::info!(addr = %local, "nbd server listening");
        Ok(ServerHandle {
            shared,
            accept: Some(thread),
            endpoint: Endpoint::Tcp(local),
        })
    }

    fn shared(&self) -> Arc<Shared> {
        Arc::new(Shared {
            exports: self.exports.clone(),
            stopping: AtomicBool::new(false),
            next_id: AtomicU64::new(0),
            conns: Mutex::new(HashMap::new()),
            handshake_timeout: self.handshake_timeout,
            stall_timeout: self.stall_timeout,
            tls: self.tls.clone(),
            sessions: self.sessions.clone(),
            budget: self.budget.clone(),
        })
    }
}

impl<S: Stream> transmission::Pending for io::BufReader<S> {
    fn pending(&self) -> bool {
        if !self.buffer().is_empty() {
            return true;
        }
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int through the valid pointer it is given.
        let rc = unsafe { libc::ioctl(self.get_ref().as_raw_fd(), libc::FIONREAD, &mut n) };
        rc == 0 && n > 0
    }
}

/// A socket stream the server can split into a reader and a writer and shut down.
pub(crate) trait Stream: Read + Write + Send + Sized + AsRawFd + 'static {
    fn clone_stream(&self) -> io::Result<Self>;
    fn shutdown_both(&self);
    fn read_timeout(&self, t: Option<Duration>) -> io::Result<()>;
    fn write_timeout(&self, t: Option<Duration>) -> io::Result<()>;
    fn set_nonblocking(&self, on: bool) -> io::Result<()>;
    /// The client's address (TCP), as IPv4 for an IPv4 client on an IPv6 socket.
    fn peer_ip(&self) -> Option<IpAddr>;
}

impl Stream for UnixStream {
    fn clone_stream(&self) -> io::Result<Self> {
        self.try_clone()
    }
    fn read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.set_read_timeout(t)
    }
    fn write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.set_write_timeout(t)
    }
    fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        // The type's own method (inherent methods come before the trait's).
        Self::set_nonblocking(self, on)
    }
    fn shutdown_both(&self) {
        let _ = self.shutdown(Shutdown::Both);
    }
    fn peer_ip(&self) -> Option<IpAddr> {
        None
    }
}

impl Stream for TcpStream {
    fn clone_stream(&self) -> io::Result<Self> {
        self.try_clone()
    }
    fn read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.set_read_timeout(t)
    }
    fn write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.set_write_timeout(t)
    }
    fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        // The type's own method (inherent methods come before the trait's).
        Self::set_nonblocking(self, on)
    }
    fn shutdown_both(&self) {
        let _ = self.shutdown(Shutdown::Both);
    }
    fn peer_ip(&self) -> Option<IpAddr> {
        self.peer_addr().ok().map(|a| a.ip().to_canonical())
    }
}

type Closer = Box<dyn Fn() + Send>;

/// A live connection: how to close its socket, and its thread.
type Conn = (Closer, Option<JoinHandle<()>>);

struct Shared {
    exports: Arc<RwLock<Exports>>,
    stopping: AtomicBool,
    next_id: AtomicU64,
    conns: Mutex<HashMap<u64, Conn>>,
    handshake_timeout: Duration,
    stall_timeout: Duration,
    tls: Option<Arc<rustls::ServerConfig>>,
    sessions: Arc<Sessions>,
    budget: Arc<crate::bufs::Budget>,
}

fn accept_loop<S: Stream>(shared: Arc<Shared>, mut accept: impl FnMut() -> io::Result<S>) {
    loop {
        let stream = match accept() {
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
        if let Err(e) = spawn_connection(&shared, stream) {
            tracing::warn!(error = %e, "could not start a connection thread");
        }
    }
}

fn spawn_connection<S: Stream>(shared: &Arc<Shared>, stream: S) -> io::Result<()> {
    let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
    let closer_stream = stream.clone_stream()?;
    let mut conns = shared.conns.lock().unwrap_or_else(PoisonError::into_inner);
    // Reap finished connections so the table does not grow forever.
    conns.retain(|_, (_, t)| t.as_ref().is_some_and(|t| !t.is_finished()));
    if conns.len() >= MAX_CONNECTIONS {
        tracing::warn!(
            limit = MAX_CONNECTIONS,
            "nbd connection refused: too many connections"
        );
        stream.shutdown_both();
        return Ok(());
    }
    let conn_shared = shared.clone();
    // Set when the server closes the connection (its listener stopped): a request waiting
    // for buffers gives up waiting.
    let closing = Arc::new(AtomicBool::new(false));
    let closed = closing.clone();
    let thread = std::thread::Builder::new()
        .name(format!("nbd-conn-{id}"))
        .spawn(move || {
            if let Err(e) = serve_connection(&conn_shared, stream, &closing) {
                tracing::debug!(conn = id, error = %e, "nbd connection ended with an error");
            }
        })?;
    conns.insert(
        id,
        (
            Box::new(move || {
                closed.store(true, Ordering::Release);
                closer_stream.shutdown_both()
            }),
            Some(thread),
        ),
    );
    Ok(())
}

fn serve_connection<S: Stream>(
    shared: &Shared,
    stream: S,
    closing: &Arc<AtomicBool>,
) -> Result<(), NbdError> {
    // The closer in the connection table holds another descriptor of this socket, so
    // dropping ours would not close it: shut it down explicitly when the session ends.
    let closer = stream.clone_stream()?;
    let result = session(shared, stream, closing);
    closer.shutdown_both();
    result
}

/// The handshake's deadline: a thread that shuts the client's socket down when the deadline
/// passes before the negotiation ends. Stopped (and joined) by [`Watchdog::stop`] or when
/// dropped, so that no path leaves it waiting out its deadline.
struct Watchdog {
    negotiated: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    fn start<S: Stream>(socket: S, limit: Duration) -> io::Result<Watchdog> {
        let negotiated = Arc::new(AtomicBool::new(false));
        let done = negotiated.clone();
        let thread = std::thread::Builder::new()
            .name("nbd-handshake".into())
            .spawn(move || {
                let deadline = std::time::Instant::now() + limit;
                while !done.load(Ordering::SeqCst) {
                    let now = std::time::Instant::now();
                    if now >= deadline {
                        tracing::debug!("nbd handshake took too long; closing");
                        socket.shutdown_both();
                        return;
                    }
                    std::thread::park_timeout(deadline - now);
                }
            })?;
        Ok(Watchdog {
            negotiated,
            thread: Some(thread),
        })
    }

    fn stop(&mut self) {
        if let Some(t) = self.thread.take() {
            self.negotiated.store(true, Ordering::SeqCst);
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop();
    }
}

fn session<S: Stream>(
    shared: &Shared,
    stream: S,
    closing: &Arc<AtomicBool>,
) -> Result<(), NbdError> {
    let ip = stream.peer_ip();
    let writer = stream.clone_stream()?;
    let timeouts = stream.clone_stream()?;
    timeouts.read_timeout(Some(shared.handshake_timeout))?;
    // A write to the socket that makes no progress for this long fails, and the connection
    // ends (in transmission: the reply thread's; through TLS, whose pump writes without
    // blocking, the pump ends the session itself after as long without progress).
    timeouts.write_timeout(Some(shared.stall_timeout))?;
    // The whole handshake has a deadline too (a client trickling options would reset a
    // per-read timeout forever): past it the socket is shut down.
    let mut watchdog = Watchdog::start(stream.clone_stream()?, shared.handshake_timeout)?;
    let mut reader = io::BufReader::with_capacity(64 * 1024, stream);
    let mut writer = io::BufWriter::with_capacity(64 * 1024, writer);
    // What this client may see and use, by its address (by its certificate too, inside
    // TLS): an export it may not is one that does not exist.
    let exports: Exports = shared
        .exports
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .filter(|(_, e)| e.reaches(ip))
        .map(|(n, e)| (n.clone(), e.clone()))
        .collect();
    let state = match shared.tls {
        Some(_) => TlsState::Required,
        None => TlsState::Off,
    };
    let no_zeroes = handshake::greet(&mut reader, &mut writer)?;
    let session = match handshake::negotiate(&mut reader, &mut writer, &exports, no_zeroes, state)?
    {
        Negotiated::Leave => return Ok(()),
        Negotiated::Export(session) => session,
        Negotiated::StartTls => {
            // The client waits for the reply before its first TLS record.
            if !reader.buffer().is_empty() {
                return Err(NbdError::Protocol("data after NBD_OPT_STARTTLS"));
            }
            let config = shared.tls.clone().expect("TLS was offered");
            // The TLS handshake and the haggling inside TLS stay under the watchdog: past
            // its deadline it shuts the client's socket down, which ends the pump.
            let tls = tls::start(reader.into_inner(), config, shared.stall_timeout)?;
            let served = inside_tls(&tls, shared, exports, ip, no_zeroes, watchdog, closing);
            // The pump sends what the connection wrote, then close_notify, and ends.
            drop(tls.plain);
            let _ = tls.pump.join();
            return served;
        }
    };
    watchdog.stop();
    timeouts.read_timeout(None)?;
    let end = timeouts.clone_stream()?;
    let _live = shared.sessions.enter(
        &shared.exports,
        Live::of(&session, None, ip, move || end.shutdown_both()),
    );
    transmit(
        reader,
        writer,
        &timeouts,
        session,
        (&shared.budget, closing),
    )
}

/// The rest of a session once TLS is up: the haggling again, over the plain end of the
/// TLS session, with the exports the client's certificate may use; then transmission.
/// The watchdog is stopped when the haggling ends (or dropped on an error before). In
/// transmission the session is in the server's sessions.
fn inside_tls(
    tls: &tls::Tls,
    shared: &Shared,
    exports: Exports,
    ip: Option<IpAddr>,
    no_zeroes: bool,
    mut watchdog: Watchdog,
    closing: &Arc<AtomicBool>,
) -> Result<(), NbdError> {
    let exports: Exports = exports
        .into_iter()
        .filter(|(_, e)| e.allows(tls.peer.as_deref()))
        .collect();
    let mut reader = io::BufReader::with_capacity(64 * 1024, tls.plain.try_clone()?);
    let mut writer = io::BufWriter::with_capacity(64 * 1024, tls.plain.try_clone()?);
    let result = handshake::negotiate(&mut reader, &mut writer, &exports, no_zeroes, TlsState::On);
    watchdog.stop();
    match result? {
        Negotiated::Export(session) => {
            // Both ends: the connection's threads stop at once, and so does the pump,
            // even while it waits to send to a client that reads nothing.
            let end = tls.plain.try_clone()?;
            let client = tls.hang_up.clone();
            let _live = shared.sessions.enter(
                &shared.exports,
                Live::of(&session, tls.peer.clone(), ip, move || {
                    end.shutdown_both();
                    client();
                }),
            );
            transmit(
                reader,
                writer,
                &tls.plain,
                session,
                (&shared.budget, closing),
            )
        }
        Negotiated::Leave | Negotiated::StartTls => Ok(()),
    }
}

/// The transmission phase of a negotiated session, then the flush a disconnect asks for.
/// `closer` shuts the connection down (the client's socket, or the plain end of its TLS).
fn transmit<S: Stream>(
    mut reader: io::BufReader<S>,
    writer: io::BufWriter<S>,
    closer: &S,
    session: handshake::Session,
    (budget, closing): (&Arc<crate::bufs::Budget>, &Arc<AtomicBool>),
) -> Result<(), NbdError> {
    tracing::debug!(export = %session.export.name, "nbd client entered transmission");
    // Replies go out from a thread of their own, so that reading requests never waits on a
    // client that sends many before it reads any replies.
    let writer = writer
        .into_inner()
        .map_err(|e| NbdError::Io(e.into_error()))?;
    let (replies, sender) = crate::replies::Replies::start(
        writer,
        crate::bufs::Pool::new(
            session.export.bufs.clone(),
            budget.clone(),
            [session.cut.clone(), closing.clone()],
        ),
    )?;
    let served = transmission::serve(&mut reader, &replies, &session);
    drop(replies);
    let sent = sender.join();
    // A session cut off (its export removed, its client no longer taken) touches the
    // device no more: no flush either.
    let cut = session.cut.load(Ordering::Acquire);
    if let (Ok(true), false) = (&served, cut) {
        // A client that disconnects has its writes made durable, as a flush would, but it
        // does not wait for that (neither qemu-nbd nor nbdkit flushes at all): the
        // connection is closed first, every reply sent.
        closer.shutdown_both();
        if let Err(e) = session.export.device.flush() {
            tracing::warn!(export = %session.export.name, error = %e, "flush after a disconnect failed");
        }
    }
    served?;
    sent.map_err(NbdError::Io)
}

enum Endpoint {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

/// A running listener; dropping it stops the listener and closes every connection.
pub struct ServerHandle {
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
    endpoint: Endpoint,
}

impl ServerHandle {
    /// The TCP address the server listens on, if it is a TCP listener.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        match &self.endpoint {
            Endpoint::Tcp(a) => Some(*a),
            Endpoint::Unix(_) => None,
        }
    }

    /// The unix socket path the server listens on, if it is a unix listener.
    pub fn socket_path(&self) -> Option<&Path> {
        match &self.endpoint {
            Endpoint::Unix(p) => Some(p),
            Endpoint::Tcp(_) => None,
        }
    }

    /// Stop accepting, close every connection and wait for their threads.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let Some(accept) = self.accept.take() else {
            return;
        };
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Wake the blocking accept with a connection of our own.
        let _ = match &self.endpoint {
            Endpoint::Unix(p) => UnixStream::connect(p).map(drop),
            Endpoint::Tcp(a) => TcpStream::connect(a).map(drop),
        };
        let _ = accept.join();
        let conns: Vec<_> = {
            let mut conns = self
                .shared
                .conns
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            conns.drain().map(|(_, c)| c).collect()
        };
        // Every connection closed before any is waited for: one waiting for buffers that
        // another still holds ends once that one is closed too.
        for (close, _) in &conns {
            close();
        }
        for (_, thread) in conns {
            if let Some(t) = thread {
                let _ = t.join();
            }
        }
        if let Endpoint::Unix(p) = &self.endpoint {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.stop();
    }
}
