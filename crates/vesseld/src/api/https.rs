//! The HTTPS listener, started, moved and stopped while the daemon runs
//! (`core.https_address`). The router and TLS configuration are handed over once the daemon
//! serves; until then (and in tests of the router alone) there is nothing to listen with.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;

use super::listener::{self, Limits, TlsListener};
use crate::error::{Error, Result};

struct Running {
    addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct State {
    serving: Option<(Router, Arc<rustls::ServerConfig>)>,
    running: Option<Running>,
}

/// The HTTPS listener's controls.
#[derive(Clone, Default)]
pub struct HttpsControl {
    state: Arc<Mutex<State>>,
}

impl HttpsControl {
    /// Hands over what the listener serves.
    pub fn serve_with(&self, router: Router, tls: Arc<rustls::ServerConfig>) {
        self.lock().serving = Some((router, tls));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Listens on `addr` (first binding it, so a bad address leaves the old listener), or
    /// stops listening with `None`. Connections of the old listener get its grace period.
    pub async fn listen(&self, addr: Option<SocketAddr>) -> Result<()> {
        let old = {
            let mut state = self.lock();
            if let (Some(a), Some(r)) = (addr, &state.running) {
                if r.addr == a {
                    return Ok(());
                }
            }
            let new = match addr {
                None => None,
                Some(a) => {
                    let Some((router, tls)) = state.serving.clone() else {
                        return Err(Error::conflict(
                            "the daemon is not serving yet; try again in a moment",
                        ));
                    };
                    Some(start(a, router, tls)?)
                }
            };
            std::mem::replace(&mut state.running, new)
        };
        if let Some(old) = old {
            let _ = old.stop.send(());
            let _ = old.task.await;
            tracing::info!(address = %old.addr, "HTTPS API stopped listening");
        }
        Ok(())
    }
}

fn start(addr: SocketAddr, router: Router, tls: Arc<rustls::ServerConfig>) -> Result<Running> {
    let std_listener = std::net::TcpListener::bind(addr).map_err(|e| {
        Error::invalid(format!(
            "cannot listen on {addr}: {e}; pick an address of this host and a free port"
        ))
    })?;
    std_listener
        .set_nonblocking(true)
        .map_err(|e| Error::internal(format!("listening on {addr}: {e}")))?;
    let tcp = tokio::net::TcpListener::from_std(std_listener)
        .map_err(|e| Error::internal(format!("listening on {addr}: {e}")))?;
    let listener = TlsListener {
        tcp,
        tls: tokio_rustls::TlsAcceptor::from(tls),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.await;
        };
        if let Err(e) = listener::serve(listener, router, Limits::HTTPS, shutdown).await {
            tracing::error!(address = %addr, error = %e, "the HTTPS API failed");
        }
    });
    tracing::info!(address = %addr, "HTTPS API listening");
    Ok(Running { addr, stop, task })
}
