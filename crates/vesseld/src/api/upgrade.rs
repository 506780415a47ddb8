//! Endpoints that upgrade the connection to a framed stream: exec and console.

use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use hyper_util::rt::TokioIo;
use vessel_api::stream::{PROTOCOL, RAW_PROTOCOL};
use vessel_api::ExecRequest;

use super::scope::ProjectScope;
use super::App;
use crate::auth::Caller;
use crate::error::{Error, Result};
use crate::instance::vm::ConsoleSlot;
use crate::instance::{exec, ConsoleTarget};

fn check_upgrade(req: &Request) -> Result<()> {
    check_upgrade_to(req, PROTOCOL)
}

pub(super) fn check_upgrade_to(req: &Request, protocol: &'static str) -> Result<()> {
    let wants = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(protocol));
    if wants {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "this endpoint upgrades the connection: send `Connection: Upgrade` and `Upgrade: {protocol}`"
        )))
    }
}

/// Runs a stream's work until it ends or its caller's identity is revoked or expires; then
/// the work is dropped, and with it the client's connection.
pub(super) fn spawn_guarded(
    app: &App,
    caller: Caller,
    work: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let auth = app.auth.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = work => {}
            _ = auth.until_invalid(caller) => {}
        }
    });
}

fn switching() -> Response {
    switching_to(PROTOCOL)
}

pub(super) fn switching_to(protocol: &'static str) -> Response {
    let mut r = StatusCode::SWITCHING_PROTOCOLS.into_response();
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    r.headers_mut()
        .insert(header::UPGRADE, HeaderValue::from_static(protocol));
    r
}

/// Splices the connection of `req`, once upgraded to the raw protocol, to `peer` (a unix
/// socket of this daemon: a waiting QEMU, a far copy's NBD server) until either side ends;
/// answers the switch. `what` names it in the log.
pub(super) fn splice_raw(
    req: &mut axum::extract::Request,
    mut peer: tokio::net::UnixStream,
    what: String,
) -> Response {
    let on_upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let mut member = hyper_util::rt::TokioIo::new(upgraded);
                if let Err(e) = tokio::io::copy_bidirectional(&mut member, &mut peer).await {
                    tracing::debug!(stream = %what, error = %e, "raw stream ended");
                }
            }
            Err(e) => tracing::warn!(stream = %what, error = %e, "raw upgrade failed"),
        }
    });
    switching_to(vessel_api::stream::RAW_PROTOCOL)
}

/// The display socket of a VM, connected before the client's connection is upgraded.
pub(super) async fn vnc_display(app: &App, name: &str) -> Result<tokio::net::UnixStream> {
    let socket = app.instances.vnc_socket(name)?;
    tokio::net::UnixStream::connect(&socket)
        .await
        .map_err(|e| Error::internal(format!("cannot reach the display of {name}: {e}")))
}

pub async fn vnc(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    Extension(scope): Extension<ProjectScope>,
    Path(name): Path<String>,
    mut req: Request,
) -> Result<Response> {
    let name = scope.q(&name)?;
    check_upgrade_to(&req, RAW_PROTOCOL)?;
    let mut display = vnc_display(&app, &name).await.map_err(|e| scope.error(e))?;
    let on_upgrade = hyper::upgrade::on(&mut req);
    spawn_guarded(&app, caller, async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let mut client = TokioIo::new(upgraded);
                let _ = tokio::io::copy_bidirectional(&mut client, &mut display).await;
            }
            Err(e) => tracing::warn!(instance = %name, error = %e, "vnc upgrade failed"),
        }
    });
    Ok(switching_to(RAW_PROTOCOL))
}

pub async fn exec(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    Extension(scope): Extension<ProjectScope>,
    Path(name): Path<String>,
    mut req: Request,
) -> Result<Response> {
    let name = scope.q(&name)?;
    check_upgrade(&req)?;
    let on_upgrade = hyper::upgrade::on(&mut req);
    let body = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .map_err(|e| Error::invalid(format!("reading the request body: {e}")))?;
    let exec_req: ExecRequest = serde_json::from_slice(&body)
        .map_err(|e| Error::invalid(format!("invalid exec request: {e}")))?;
    // Starting the command waits briefly for the runtime (the terminal's hand-over).
    let session = tokio::task::block_in_place(|| app.instances.exec(&name, exec_req))
        .map_err(|e| scope.error(e))?;
    spawn_guarded(&app, caller, async move {
        match on_upgrade.await {
            Ok(upgraded) => exec::serve(TokioIo::new(upgraded), session).await,
            Err(e) => tracing::warn!(instance = %name, error = %e, "exec upgrade failed"),
        }
    });
    Ok(switching())
}

/// A console attach, made before the client's connection is upgraded (so that a refusal is
/// an HTTP answer), then run over whatever the client's connection is.
pub(super) enum ConsoleAttach {
    /// A container's monitor, speaking frames.
    Framed(tokio::net::UnixStream),
    /// A VM's serial port, raw; `held` is QEMU's one console connection.
    Raw {
        held: tokio::sync::OwnedMutexGuard<()>,
        target: tokio::net::UnixStream,
        slot: ConsoleSlot,
    },
}

impl ConsoleAttach {
    /// Attaches to the console of `name` (qualified).
    pub(super) async fn open(app: &App, name: &str) -> Result<Self> {
        Ok(match app.instances.console_target(name)? {
            ConsoleTarget::Framed(socket) => Self::Framed(connect_console(name, &socket).await?),
            ConsoleTarget::Raw(socket, slot) => {
                // QEMU serves one console client: the attach before this one lets go of it.
                let held = take_console(name, &slot).await?;
                let target = connect_console(name, &socket).await?;
                Self::Raw { held, target, slot }
            }
        })
    }

    /// Carries the console to and from `client` (frames both ways) until either ends.
    pub(super) async fn run<C>(self, mut client: C)
    where
        C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        match self {
            Self::Framed(mut target) => {
                let _ = tokio::io::copy_bidirectional(&mut client, &mut target).await;
            }
            Self::Raw { held, target, slot } => {
                let _held = held;
                raw_console(client, target, &slot.kick).await;
            }
        }
    }
}

pub async fn console(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    Extension(scope): Extension<ProjectScope>,
    Path(name): Path<String>,
    mut req: Request,
) -> Result<Response> {
    let name = scope.q(&name)?;
    check_upgrade(&req)?;
    let on_upgrade = hyper::upgrade::on(&mut req);
    let attach = ConsoleAttach::open(&app, &name)
        .await
        .map_err(|e| scope.error(e))?;
    spawn_guarded(&app, caller, async move {
        if let Some(client) = upgraded(on_upgrade, &name).await {
            attach.run(client).await;
        }
    });
    Ok(switching())
}

async fn connect_console(name: &str, socket: &std::path::Path) -> Result<tokio::net::UnixStream> {
    tokio::net::UnixStream::connect(socket).await.map_err(|e| {
        tracing::warn!(instance = %name, socket = %socket.display(), error = %e, "console connect");
        Error::internal(format!("cannot reach the console of {name}: {e}"))
    })
}

async fn upgraded(
    on_upgrade: hyper::upgrade::OnUpgrade,
    name: &str,
) -> Option<TokioIo<hyper::upgrade::Upgraded>> {
    match on_upgrade.await {
        Ok(u) => Some(TokioIo::new(u)),
        Err(e) => {
            tracing::warn!(instance = %name, error = %e, "console upgrade failed");
            None
        }
    }
}

/// How long a new console attach waits for the previous one to let go of QEMU's console.
const TAKEOVER_WAIT: Duration = Duration::from_secs(5);

/// Takes a VM's console slot, kicking out the attach that holds it.
async fn take_console(name: &str, slot: &ConsoleSlot) -> Result<tokio::sync::OwnedMutexGuard<()>> {
    let deadline = tokio::time::Instant::now() + TAKEOVER_WAIT;
    loop {
        slot.kick.notify_waiters();
        let step = tokio::time::sleep(Duration::from_millis(100));
        tokio::select! {
            g = slot.holder.clone().lock_owned() => return Ok(g),
            _ = step => {}
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::conflict(format!(
                "the console of {name} is held by another attach that does not let go; try again"
            )));
        }
    }
}

/// Largest amount of typed input queued for a guest that does not read its console.
const INPUT_QUEUE: usize = 64;

/// Carries a raw console (a VM's serial port) over frames: Stdin frames in, Stdout out. The
/// client is watched at all times, so QEMU's one console connection is let go as soon as the
/// client leaves, the output ends, or a newer attach `kick`s this one, even while the guest
/// reads no input (input it cannot take is dropped past a small queue, never waited for).
async fn raw_console<C>(client: C, target: tokio::net::UnixStream, kick: &tokio::sync::Notify)
where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use vessel_api::stream::{encode, FrameKind};

    let kicked = kick.notified();
    tokio::pin!(kicked);
    kicked.as_mut().enable();
    let (mut cr, mut cw) = tokio::io::split(client);
    let (mut tr, mut tw) = target.into_split();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(INPUT_QUEUE);
    let read_client = async move {
        while let Ok(Some((kind, payload))) = exec::read_frame(&mut cr).await {
            if kind == FrameKind::Stdin && tx.try_send(payload).is_err() {
                tracing::debug!("the guest reads no console input: dropping typed input");
            }
        }
    };
    let write_guest = async move {
        while let Some(p) = rx.recv().await {
            if tw.write_all(&p).await.is_err() {
                return;
            }
        }
        // The client's input ended; the session lasts until its output does.
        std::future::pending::<()>().await
    };
    let output = async {
        let mut buf = vec![0u8; 16384];
        loop {
            match tr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if cw
                        .write_all(&encode(FrameKind::Stdout, &buf[..n]))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
        let _ = cw.shutdown().await;
    };
    let taken_over = tokio::select! {
        _ = read_client => false,
        _ = write_guest => false,
        _ = output => false,
        _ = kicked => true,
    };
    if taken_over {
        let msg = "another console attach took over this VM's console";
        let _ = cw
            .write_all(&encode(FrameKind::Error, msg.as_bytes()))
            .await;
        let _ = cw.shutdown().await;
    }
}
