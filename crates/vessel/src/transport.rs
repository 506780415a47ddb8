//! Carries requests to a daemon: hyper's HTTP/1.1 client over its unix socket, or over TLS
//! to a remote one, on a current-thread tokio runtime that runs on a thread of its own, so
//! that response bodies and upgraded streams keep flowing while a synchronous caller reads.
//!
//! One request per connection, as before: the daemon's answers are streams as often as not
//! (events, logs, files), and a new unix connection costs next to nothing.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{ready, Context as TaskContext, Poll};
use std::time::Duration;

use anyhow::{anyhow, Result};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot};
use tokio_rustls::TlsConnector;

use crate::tls::{self, ClientIdentity, FingerprintMismatch};

/// How long connecting (and the TLS handshake) to a remote daemon may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Chunks of a body in flight between the runtime and a synchronous caller.
const BODY_CHANNEL_CHUNKS: usize = 8;

/// The runtime every connection lives on: current-thread, driven by one thread of its own.
pub fn runtime() -> Result<&'static Handle> {
    static RUNTIME: OnceLock<Result<Handle, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start the I/O runtime: {e}"))?;
            let handle = rt.handle().clone();
            std::thread::Builder::new()
                .name("vessel-io".into())
                .spawn(move || {
                    // Signals are for the command's own threads (Ctrl-C handlers, a session's
                    // sigwait), never for this one.
                    let _ = nix::sys::signal::SigSet::all().thread_block();
                    rt.block_on(std::future::pending::<()>())
                })
                .map_err(|e| format!("cannot start the I/O thread: {e}"))?;
            Ok(handle)
        })
        .as_ref()
        .map_err(|e| anyhow!("{e}"))
}

/// Runs `fut` on the runtime and waits for its result from a synchronous caller.
pub fn block_on<T: Send + 'static>(
    fut: impl std::future::Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    let (tx, rx) = oneshot::channel();
    runtime()?.spawn(async move {
        let _ = tx.send(fut.await);
    });
    rx.blocking_recv()
        .map_err(|_| anyhow!("the I/O runtime dropped a request"))?
}

/// `https://HOST:PORT`, as a remote is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Host name or address (an IPv6 address without its brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

/// The port a remote listens on when its URL names none.
pub const DEFAULT_PORT: u16 = 8443;

impl Endpoint {
    /// Parses `https://HOST[:PORT][/]`.
    pub fn parse(url: &str) -> Result<Self> {
        let bad = |why: &str| {
            anyhow!("invalid remote URL '{url}': {why} (expected https://HOST[:PORT], e.g. https://10.0.0.5:{DEFAULT_PORT})")
        };
        let rest = url
            .strip_prefix("https://")
            .ok_or_else(|| bad("only https:// is supported"))?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#', '@']) {
            return Err(bad("no path, query or user may follow the address"));
        }
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (addr, after) = v6
                .split_once(']')
                .ok_or_else(|| bad("unclosed '[' in the address"))?;
            if addr.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(bad("not an IPv6 address between '[' and ']'"));
            }
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or_else(|| bad("junk after ']'"))?),
            };
            (addr, port)
        } else {
            match rest.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        if !host.contains(':')
            && !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
        {
            return Err(bad("the host has characters a host name cannot have"));
        }
        let port = match port {
            None => DEFAULT_PORT,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| bad("the port is not a number from 1 to 65535"))?,
        };
        Ok(Self {
            host: host.to_string(),
            port,
        })
    }

    /// The URL: `https://HOST:PORT`.
    pub fn url(&self) -> String {
        format!("https://{}", self.authority())
    }

    /// `HOST:PORT`, an IPv6 address in brackets.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// A remote daemon over HTTPS.
#[derive(Clone)]
pub struct Https {
    /// The remote's name, for messages (none for a client made from a bare URL).
    pub remote: Option<String>,
    /// Where it listens.
    pub endpoint: Endpoint,
    /// Sent as `Authorization: Bearer TOKEN` on every request.
    pub token: Option<String>,
    /// TLS with the pinned certificate (and the client certificate, if any).
    pub tls: Arc<ClientConfig>,
}

impl fmt::Debug for Https {
    // Never the token: a client may end up in a debug message.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Https")
            .field("remote", &self.remote)
            .field("endpoint", &self.endpoint)
            .field("token", &self.token.as_ref().map(|_| "(hidden)"))
            .finish_non_exhaustive()
    }
}

/// Where a client's requests go.
#[derive(Debug, Clone)]
pub enum Target {
    /// The daemon's unix socket.
    Socket(PathBuf),
    /// A remote daemon.
    Https(Arc<Https>),
}

impl Target {
    /// The `Host` header's value.
    pub fn host(&self) -> String {
        match self {
            Self::Socket(_) => "vessel".into(),
            Self::Https(h) => h.endpoint.authority(),
        }
    }
}

/// The daemon could not be connected to.
#[derive(Debug)]
pub struct Unreachable {
    place: Place,
    source: io::Error,
}

#[derive(Debug)]
enum Place {
    Socket(PathBuf),
    Remote { name: Option<String>, url: String },
}

impl fmt::Display for Unreachable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let reason = match self.source.raw_os_error() {
            Some(code) => nix::errno::Errno::from_raw(code).desc().to_string(),
            None => self.source.to_string(),
        };
        match &self.place {
            Place::Socket(socket) => {
                let socket = socket.display();
                match self.source.kind() {
                    io::ErrorKind::PermissionDenied => write!(
                        f,
                        "cannot reach the Vessel daemon at {socket} ({reason}). \
                         Run vessel as root, or as a user allowed to open the socket"
                    ),
                    _ => write!(
                        f,
                        "cannot reach the Vessel daemon at {socket} ({reason}). Is it running? \
                         Start it with: vesseld --root-dir /var/lib/vessel"
                    ),
                }
            }
            Place::Remote { name, url } => {
                let which = match name {
                    Some(n) => format!("remote '{n}' at {url}"),
                    None => url.clone(),
                };
                write!(
                    f,
                    "cannot reach the Vessel daemon of {which} ({reason}). Is it running, and \
                     listening there?"
                )
            }
        }
    }
}

impl std::error::Error for Unreachable {}

/// The remote presented another certificate than the one trusted when it was added.
#[derive(Debug)]
pub struct CertificateChanged {
    remote: Option<String>,
    url: String,
    mismatch: FingerprintMismatch,
}

impl fmt::Display for CertificateChanged {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.remote.as_deref().unwrap_or("NAME");
        let which = match &self.remote {
            Some(n) => format!("remote '{n}' ({})", self.url),
            None => self.url.clone(),
        };
        write!(
            f,
            "the server's certificate changed since it was trusted: {which} presented a \
             certificate with fingerprint {}, but the trusted fingerprint is {}. Nothing was \
             sent to it. If the daemon's certificate was replaced on purpose, trust the new one \
             with `vessel remote remove {name}` then `vessel remote add {name} {}` (with the \
             same options as before); otherwise someone may be intercepting the connection",
            self.mismatch.presented, self.mismatch.pinned, self.url
        )
    }
}

impl std::error::Error for CertificateChanged {}

/// A byte stream to a daemon.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

fn remote_place(h: &Https) -> Place {
    Place::Remote {
        name: h.remote.clone(),
        url: h.endpoint.url(),
    }
}

async fn tcp_connect(h: &Https) -> Result<TcpStream> {
    let unreachable = |source| Unreachable {
        place: remote_place(h),
        source,
    };
    let connect = TcpStream::connect((h.endpoint.host.as_str(), h.endpoint.port));
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, connect)
        .await
        .map_err(|_| unreachable(io::ErrorKind::TimedOut.into()))?
        .map_err(unreachable)?;
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

async fn tls_handshake(
    h: &Https,
    config: Arc<ClientConfig>,
    tcp: TcpStream,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let name = ServerName::try_from(h.endpoint.host.clone())
        .map_err(|e| anyhow!("invalid host name '{}': {e}", h.endpoint.host))?;
    let handshake = TlsConnector::from(config).connect(name, tcp);
    match tokio::time::timeout(CONNECT_TIMEOUT, handshake).await {
        Err(_) => Err(Unreachable {
            place: remote_place(h),
            source: io::Error::new(io::ErrorKind::TimedOut, "the TLS handshake timed out"),
        }
        .into()),
        Ok(Ok(tls)) => Ok(tls),
        Ok(Err(e)) => match tls::mismatch_in(&e) {
            Some(mismatch) => Err(CertificateChanged {
                remote: h.remote.clone(),
                url: h.endpoint.url(),
                mismatch,
            }
            .into()),
            None => Err(anyhow!(
                "the TLS handshake with {} failed: {e}",
                h.endpoint.url()
            )),
        },
    }
}

/// Opens a connection to `target` (a verified TLS session for a remote).
pub async fn connect(target: &Target) -> Result<Box<dyn Stream>> {
    match target {
        Target::Socket(path) => {
            let stream = UnixStream::connect(path)
                .await
                .map_err(|source| Unreachable {
                    place: Place::Socket(path.clone()),
                    source,
                })?;
            Ok(Box::new(stream))
        }
        Target::Https(h) => {
            let tcp = tcp_connect(h).await?;
            Ok(Box::new(tls_handshake(h, h.tls.clone(), tcp).await?))
        }
    }
}

/// Connects once to `endpoint` and returns the fingerprint of the certificate it presents
/// (trust on first use: the caller shows it and asks). The handshake's signatures are still
/// checked: the server holds that certificate's key.
pub fn fetch_fingerprint(endpoint: &Endpoint, identity: Option<&ClientIdentity>) -> Result<String> {
    let h = Https {
        remote: None,
        endpoint: endpoint.clone(),
        token: None,
        tls: tls::probe_config(identity)?,
    };
    block_on(async move {
        let tcp = tcp_connect(&h).await?;
        let mut stream = tls_handshake(&h, h.tls.clone(), tcp).await?;
        let leaf = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|certs| certs.first())
            .map(|c| tls::fingerprint(c));
        let _ = stream.shutdown().await;
        leaf.ok_or_else(|| anyhow!("{} presented no certificate", h.endpoint.url()))
    })
}

/// Describes a hyper error with its causes (hyper's own message alone is terse).
fn describe(e: &hyper::Error) -> String {
    let mut s = if e.is_incomplete_message() {
        "the daemon closed the connection in the middle of its answer".to_string()
    } else {
        e.to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

/// A body that could not be read, as an I/O error; a connection closed early is
/// `UnexpectedEof`, as a short read of a file would be.
fn body_error(e: &hyper::Error) -> io::Error {
    let mut source = std::error::Error::source(e);
    let mut early_end = e.is_incomplete_message();
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<io::Error>() {
            early_end |= io.kind() == io::ErrorKind::UnexpectedEof;
        }
        source = cause.source();
    }
    if early_end {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the daemon closed the connection before the end of its answer",
        )
    } else {
        io::Error::other(describe(e))
    }
}

/// Sends one request on a new connection and returns the response with its body unread.
/// The connection lives on in a task until the body is read (or the stream upgraded).
pub async fn send(
    target: Target,
    request: hyper::Request<OutBody>,
) -> Result<hyper::Response<Incoming>> {
    let what = format!("{} {}", request.method(), request.uri());
    let io = connect(&target).await?;
    let state = Arc::new(Mutex::new(WriteState::default()));
    let io = StallFailedWrites {
        inner: io,
        state: state.clone(),
    };
    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| anyhow!("cannot start HTTP on the connection: {}", describe(&e)))?;
    tokio::spawn(async move {
        // Its failures show in the request's or the body's result.
        let _ = conn.with_upgrades().await;
    });
    let result = sender.send_request(request).await;
    let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
    state.answered = true;
    result.map_err(|e| match state.failed.take() {
        // The daemon stopped reading and never answered: the write failure is the news.
        Some(write) => anyhow!("cannot send {what} to the daemon: {write}"),
        None if e.is_incomplete_message() => anyhow!(
            "cannot read the daemon's answer to {what}: the daemon closed the connection \
             without answering"
        ),
        None => anyhow!("cannot send {what} to the daemon: {}", describe(&e)),
    })
}

/// What [`StallFailedWrites`] knows of its connection's writes.
#[derive(Debug, Default)]
struct WriteState {
    /// A write failed before the answer came.
    failed: Option<io::Error>,
    /// The response head arrived: failures are plain failures from now on.
    answered: bool,
}

/// A connection on which a write that fails before the answer arrives stalls instead of
/// failing. A daemon may answer a request (an error) and close the connection without
/// reading all of its body: hyper would report the failed write and drop the answer that
/// sits unread in the socket, when the answer is what the user needs. The read side decides:
/// the answer, or the end of the connection (and then the write's error is reported).
struct StallFailedWrites {
    inner: Box<dyn Stream>,
    state: Arc<Mutex<WriteState>>,
}

impl StallFailedWrites {
    fn write_with(
        &mut self,
        cx: &mut TaskContext<'_>,
        write: impl FnOnce(Pin<&mut Box<dyn Stream>>, &mut TaskContext<'_>) -> Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.failed.is_some() {
            return Poll::Pending;
        }
        match write(Pin::new(&mut self.inner), cx) {
            Poll::Ready(Err(e)) if !state.answered => {
                state.failed = Some(e);
                Poll::Pending
            }
            other => other,
        }
    }
}

impl AsyncRead for StallFailedWrites {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for StallFailedWrites {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .write_with(cx, |inner, cx| inner.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .write_with(cx, |inner, cx| inner.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let mut state = this.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.failed.is_some() {
            return Poll::Pending;
        }
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Ready(Err(e)) if !state.answered => {
                state.failed = Some(e);
                Poll::Pending
            }
            other => other,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A request body: a complete buffer, or bytes of a known length that a synchronous caller
/// feeds through a channel.
pub enum OutBody {
    /// All of it (none for an empty body).
    Full(Option<Bytes>),
    /// `remaining` more bytes, from the channel.
    Channel {
        rx: mpsc::Receiver<io::Result<Bytes>>,
        remaining: u64,
    },
}

impl OutBody {
    /// A channel body of `len` bytes and the sender that feeds it.
    pub fn channel(len: u64) -> (Self, mpsc::Sender<io::Result<Bytes>>) {
        let (tx, rx) = mpsc::channel(BODY_CHANNEL_CHUNKS);
        (Self::Channel { rx, remaining: len }, tx)
    }
}

impl Body for OutBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.get_mut() {
            Self::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Self::Channel { rx, remaining } => {
                if *remaining == 0 {
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(match ready!(rx.poll_recv(cx)) {
                    Some(Ok(b)) if b.len() as u64 <= *remaining => {
                        *remaining -= b.len() as u64;
                        Ok(Frame::data(b))
                    }
                    Some(Ok(_)) => Err(io::Error::other("the upload is longer than announced")),
                    Some(Err(e)) => Err(e),
                    None => Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the upload stopped early",
                    )),
                }))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Full(b) => b.is_none(),
            Self::Channel { remaining, .. } => *remaining == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Self::Channel { remaining, .. } => SizeHint::with_exact(*remaining),
        }
    }
}

/// A response body read by a synchronous caller: a task forwards its chunks through a
/// channel. It ends with an empty chunk, so that a task that died is not taken for the end.
pub struct BodyReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    chunk: Bytes,
    done: bool,
    /// Whatever must live as long as the body is read (an upload left pending).
    held: Option<Box<dyn Send>>,
}

impl BodyReader {
    /// Starts forwarding `body` (on the runtime, which must be running).
    pub fn new(body: Incoming) -> Result<Self> {
        let (tx, rx) = mpsc::channel(BODY_CHANNEL_CHUNKS);
        runtime()?.spawn(forward(body, tx));
        Ok(Self {
            rx,
            chunk: Bytes::new(),
            done: false,
            held: None,
        })
    }

    /// Keeps `thing` alive until the reader is dropped.
    pub fn hold<T: Send + 'static>(&mut self, thing: Option<T>) {
        if let Some(t) = thing {
            self.held = Some(Box::new(t));
        }
    }
}

async fn forward(mut body: Incoming, tx: mpsc::Sender<io::Result<Bytes>>) {
    loop {
        let frame = tokio::select! {
            // The reader went away: stop reading (and so close the connection).
            _ = tx.closed() => return,
            frame = body.frame() => frame,
        };
        let item = match frame {
            None => Ok(Bytes::new()),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) if !data.is_empty() => Ok(data),
                _ => continue,
            },
            Some(Err(e)) => Err(body_error(&e)),
        };
        let last = !matches!(&item, Ok(b) if !b.is_empty());
        if tx.send(item).await.is_err() || last {
            return;
        }
    }
}

impl io::Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        while self.chunk.is_empty() {
            if self.done {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Ok(b)) if b.is_empty() => self.done = true,
                Some(Ok(b)) => self.chunk = b,
                Some(Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                None => {
                    self.done = true;
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the connection to the daemon ended in the middle of its answer",
                    ));
                }
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}

/// Takes over an upgraded connection and bridges it to one end of a unix socket pair, whose
/// other end is returned: bytes flow both ways, and each side's end (or half-close) reaches
/// the other.
pub async fn bridge_upgrade(
    response: hyper::Response<Incoming>,
) -> Result<std::os::unix::net::UnixStream> {
    let upgraded = hyper::upgrade::on(response)
        .await
        .map_err(|e| anyhow!("cannot take over the upgraded connection: {}", describe(&e)))?;
    let (ours, theirs) = std::os::unix::net::UnixStream::pair()
        .map_err(|e| anyhow!("cannot make a socket pair: {e}"))?;
    theirs
        .set_nonblocking(true)
        .map_err(|e| anyhow!("cannot make a socket non-blocking: {e}"))?;
    let theirs =
        UnixStream::from_std(theirs).map_err(|e| anyhow!("cannot register a socket: {e}"))?;
    let (mut from_daemon, mut to_daemon) = tokio::io::split(TokioIo::new(upgraded));
    let (mut from_caller, mut to_caller) = theirs.into_split();
    tokio::spawn(async move {
        let _ = tokio::io::copy(&mut from_daemon, &mut to_caller).await;
        let _ = to_caller.shutdown().await;
    });
    tokio::spawn(async move {
        let _ = tokio::io::copy(&mut from_caller, &mut to_daemon).await;
        let _ = to_daemon.shutdown().await;
    });
    Ok(ours)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let e = Endpoint::parse("https://10.0.0.5:8443").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("10.0.0.5", 8443));
        assert_eq!(e.url(), "https://10.0.0.5:8443");
        let e = Endpoint::parse("https://vessel.example.org/").unwrap();
        assert_eq!(e.url(), "https://vessel.example.org:8443");
        let e = Endpoint::parse("https://[fd00::1]:9443").unwrap();
        assert_eq!(e.host, "fd00::1");
        assert_eq!(e.url(), "https://[fd00::1]:9443");
        for bad in [
            "http://h:8443",
            "h:8443",
            "https://",
            "https://h:0",
            "https://h:99999",
            "https://h:x",
            "https://h/1.0",
            "https://u@h",
            "https://[fd00::1",
            "https://[nope]:1",
            "https://h h",
        ] {
            let err = Endpoint::parse(bad).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("invalid remote URL '{bad}'")),
                "{err}"
            );
        }
    }
}
