//! The connection side of the API: accepting, bounding and closing connections. Whatever a
//! client does, the daemon keeps serving others: connections are capped, a client that sends
//! nothing (no request, or half a header, or a stalled body) is dropped after a timeout, and
//! on shutdown open connections get a short grace period, then go.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::Router;
use http_body::Frame;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::Semaphore;
use tower::ServiceExt;

pub use crate::auth::Peer;

/// Bounds of one listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most connections served at once; more wait in the kernel's accept queue.
    pub max_connections: usize,
    /// How long a connection may take to send a request's head, and how long it may sit idle
    /// between requests.
    pub header_timeout: Duration,
    /// How long a request body may stall (no bytes) before the request fails.
    pub body_idle_timeout: Duration,
    /// How long open connections may finish their requests once shutdown begins.
    pub shutdown_grace: Duration,
}

impl Limits {
    /// The unix socket's bounds (its clients are root, but tools and scripts misbehave too).
    pub const SOCKET: Limits = Limits {
        max_connections: 4096,
        header_timeout: Duration::from_secs(15),
        body_idle_timeout: Duration::from_secs(30),
        shutdown_grace: Duration::from_secs(1),
    };
    /// The HTTPS listener's bounds: clients are anyone on the network, so a connection that
    /// sends nothing goes sooner; the TLS handshake counts against the header timeout.
    pub const HTTPS: Limits = Limits {
        max_connections: 4096,
        header_timeout: Duration::from_secs(10),
        body_idle_timeout: Duration::from_secs(30),
        shutdown_grace: Duration::from_secs(1),
    };
}

/// Something that accepts connections: the unix socket, or TLS over TCP.
pub trait Accept: Send + 'static {
    /// A connection as accepted.
    type Raw: Send + 'static;
    /// One connection's stream, ready for HTTP.
    type Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static;
    /// Waits for the next connection.
    fn accept(&self) -> impl Future<Output = std::io::Result<Self::Raw>> + Send;
    /// Readies an accepted connection (the TLS handshake), in the connection's own task and
    /// within the header timeout, and says who is at its other end.
    fn handshake(
        &self,
        raw: Self::Raw,
    ) -> impl Future<Output = std::io::Result<(Self::Stream, Peer)>> + Send + 'static;
}

impl Accept for tokio::net::UnixListener {
    type Raw = tokio::net::UnixStream;
    type Stream = tokio::net::UnixStream;
    async fn accept(&self) -> std::io::Result<Self::Raw> {
        tokio::net::UnixListener::accept(self).await.map(|(s, _)| s)
    }
    fn handshake(
        &self,
        raw: Self::Raw,
    ) -> impl Future<Output = std::io::Result<(Self::Stream, Peer)>> + Send + 'static {
        std::future::ready(Ok((raw, Peer::Local)))
    }
}

/// TLS over a TCP listener: the HTTPS API.
pub struct TlsListener {
    /// The TCP side.
    pub tcp: tokio::net::TcpListener,
    /// The TLS side.
    pub tls: tokio_rustls::TlsAcceptor,
}

impl Accept for TlsListener {
    type Raw = (tokio::net::TcpStream, std::net::SocketAddr);
    type Stream = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    async fn accept(&self) -> std::io::Result<Self::Raw> {
        let (s, addr) = self.tcp.accept().await?;
        let _ = s.set_nodelay(true);
        Ok((s, addr))
    }
    fn handshake(
        &self,
        (tcp, addr): Self::Raw,
    ) -> impl Future<Output = std::io::Result<(Self::Stream, Peer)>> + Send + 'static {
        let accept = self.tls.accept(tcp);
        async move {
            let stream = accept.await?;
            let certificate = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| crate::auth::tls::fingerprint(c));
            let peer = Peer::Remote {
                addr: addr.ip().to_canonical(),
                certificate,
            };
            Ok((stream, peer))
        }
    }
}

/// Serves `router` on `listener` within `limits` until `shutdown` completes; then stops
/// accepting, lets open requests finish for the grace period and drops what is left
/// (streams such as exec or events end; instances keep running).
pub async fn serve<L: Accept>(
    listener: L,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (stopping_tx, stopping) = tokio::sync::watch::channel(false);
    let mut conns = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let stream = tokio::select! {
            _ = &mut shutdown => break,
            s = listener.accept() => match s {
                Ok(s) => s,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let router = router.clone();
        let body_timeout = limits.body_idle_timeout;
        let handshake = listener.handshake(stream);
        let mut stopping = stopping.clone();
        conns.spawn(async move {
            // A client that never finishes its handshake holds a slot no longer than one that
            // never sends its request head.
            let (stream, peer) = match tokio::time::timeout(limits.header_timeout, handshake).await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!("handshake timed out");
                    return;
                }
            };
            let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                let mut req = req.map(|b| Body::new(IdleBody::new(b, body_timeout)));
                req.extensions_mut().insert(peer.clone());
                let router = router.clone();
                async move {
                    Ok::<_, Infallible>(router.oneshot(req).await.unwrap_or_else(|e| match e {}))
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .max_buf_size(64 * 1024)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            let _permit = permit;
            tokio::pin!(conn);
            let ended = tokio::select! {
                r = conn.as_mut() => Some(r),
                _ = stopping.wait_for(|s| *s) => None,
            };
            let ended = match ended {
                Some(r) => r,
                None => {
                    // Finish the request in flight, then close.
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = ended {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
        // Reap finished connection tasks as we go.
        while conns.try_join_next().is_some() {}
    }
    drop(listener);
    let _ = stopping_tx.send(true);
    let all_done = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(limits.shutdown_grace, all_done)
        .await
        .is_err()
    {
        tracing::info!(
            open = conns.len(),
            "closing connections still open after the grace period"
        );
    }
    conns.abort_all();
    Ok(())
}

/// A request body that fails when no bytes arrive for `timeout` (a client that stops
/// sending half-way cannot hold a request, and the memory behind it, forever).
struct IdleBody {
    inner: Incoming,
    timeout: Duration,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl IdleBody {
    fn new(inner: Incoming, timeout: Duration) -> Self {
        IdleBody {
            inner,
            timeout,
            sleep: None,
        }
    }
}

/// The error of a stalled body.
#[derive(Debug, thiserror::Error)]
#[error("the request body stalled: no data for {0:?}")]
struct BodyStalled(Duration);

impl http_body::Body for IdleBody {
    type Data = bytes::Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(r) => {
                this.sleep = None;
                Poll::Ready(r.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let timeout = this.timeout;
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyStalled(timeout))))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
