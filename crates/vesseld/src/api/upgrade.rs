//! Endpoints that upgrade the connection to a framed stream: exec and console.

use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use vessel_api::stream::{PROTOCOL, RAW_PROTOCOL};
use vessel_api::ExecRequest;

use super::App;
use crate::error::{Error, Result};
use crate::instance::{exec, ConsoleTarget};

fn check_upgrade(req: &Request) -> Result<()> {
    check_upgrade_to(req, PROTOCOL)
}

fn check_upgrade_to(req: &Request, protocol: &'static str) -> Result<()> {
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

fn switching() -> Response {
    switching_to(PROTOCOL)
}

fn switching_to(protocol: &'static str) -> Response {
    let mut r = StatusCode::SWITCHING_PROTOCOLS.into_response();
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    r.headers_mut()
        .insert(header::UPGRADE, HeaderValue::from_static(protocol));
    r
}

pub async fn vnc(
    State(app): State<App>,
    Path(name): Path<String>,
    mut req: Request,
) -> Result<Response> {
    check_upgrade_to(&req, RAW_PROTOCOL)?;
    let socket = app.instances.vnc_socket(&name)?;
    let mut display = tokio::net::UnixStream::connect(&socket)
        .await
        .map_err(|e| Error::internal(format!("cannot reach the display of {name}: {e}")))?;
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
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
    Path(name): Path<String>,
    mut req: Request,
) -> Result<Response> {
    check_upgrade(&req)?;
    let on_upgrade = hyper::upgrade::on(&mut req);
    let body = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .map_err(|e| Error::invalid(format!("reading the request body: {e}")))?;
    let exec_req: ExecRequest = serde_json::from_slice(&body)
        .map_err(|e| Error::invalid(format!("invalid exec request: {e}")))?;
    // Starting the command waits briefly for the runtime (the terminal's hand-over).
    let session = tokio::task::block_in_place(|| app.instances.exec(&name, exec_req))?;
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => exec::serve(TokioIo::new(upgraded), session).await,
            Err(e) => tracing::warn!(instance = %name, error = %e, "exec upgrade failed"),
        }
    });
    Ok(switching())
}

pub async fn console(
    State(app): State<App>,
    Path(name): Path<String>,
    mut req: Request,
) -> Result<Response> {
    check_upgrade(&req)?;
    let (socket, raw) = match app.instances.console_target(&name)? {
        ConsoleTarget::Framed(p) => (p, false),
        ConsoleTarget::Raw(p) => (p, true),
    };
    let mut target = tokio::net::UnixStream::connect(&socket)
        .await
        .map_err(|e| {
            Error::internal(format!(
                "cannot reach the console of {name} at {}: {e}",
                socket.display()
            ))
        })?;
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(instance = %name, error = %e, "console upgrade failed");
                return;
            }
        };
        let mut client = TokioIo::new(upgraded);
        if raw {
            raw_console(client, target).await;
        } else {
            let _ = tokio::io::copy_bidirectional(&mut client, &mut target).await;
        }
    });
    Ok(switching())
}

/// Carries a raw console (a VM's serial port) over frames: Stdin frames in, Stdout out.
async fn raw_console<C>(client: C, target: tokio::net::UnixStream)
where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use vessel_api::stream::{encode, FrameKind};

    let (mut cr, mut cw) = tokio::io::split(client);
    let (mut tr, mut tw) = target.into_split();
    let input = async {
        while let Ok(Some((kind, payload))) = exec::read_frame(&mut cr).await {
            if kind == FrameKind::Stdin && tw.write_all(&payload).await.is_err() {
                break;
            }
        }
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
    tokio::select! {
        _ = input => {}
        _ = output => {}
    }
}
