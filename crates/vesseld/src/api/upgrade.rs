//! Endpoints that upgrade the connection to a framed stream: exec and console.

use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use vessel_api::stream::PROTOCOL;
use vessel_api::ExecRequest;

use super::App;
use crate::error::{Error, Result};
use crate::instance::exec;

fn check_upgrade(req: &Request) -> Result<()> {
    let wants = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(PROTOCOL));
    if wants {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "this endpoint upgrades the connection: send `Connection: Upgrade` and `Upgrade: {PROTOCOL}`"
        )))
    }
}

fn switching() -> Response {
    let mut r = StatusCode::SWITCHING_PROTOCOLS.into_response();
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    r.headers_mut()
        .insert(header::UPGRADE, HeaderValue::from_static(PROTOCOL));
    r
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
    let socket = app.instances.console_socket(&name)?;
    let mut monitor = tokio::net::UnixStream::connect(&socket)
        .await
        .map_err(|e| {
            Error::internal(format!(
                "cannot reach the console of {name} at {}: {e}",
                socket.display()
            ))
        })?;
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let mut client = TokioIo::new(upgraded);
                let _ = tokio::io::copy_bidirectional(&mut client, &mut monitor).await;
            }
            Err(e) => tracing::warn!(instance = %name, error = %e, "console upgrade failed"),
        }
    });
    Ok(switching())
}
