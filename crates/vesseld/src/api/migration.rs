//! The endpoints of a live move on the member a VM moves to, called by the member it
//! leaves (role `member` in the endpoint table: a member's own certificate, not a request
//! it forwards for someone).

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use vessel_api::stream::RAW_PROTOCOL;
use vessel_api::{MigrationEnd, MigrationIncoming};

use super::scope::ProjectScope;
use super::{ApiJson, App};
use crate::error::{Error, Result};

/// `POST /1.0/instances/{name}/incoming`: makes the instance and its waiting QEMU.
pub async fn incoming(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<MigrationIncoming>,
) -> Result<Response> {
    let name = scope.q(&name)?;
    app.instances
        .incoming(&name, req)
        .await
        .map_err(|e| scope.error(e))?;
    Ok(StatusCode::OK.into_response())
}

/// `GET /1.0/instances/{name}/incoming/{stream}`: the connection upgraded to the waiting
/// QEMU's `state` or `disks` socket.
pub async fn incoming_stream(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    Path((name, stream)): Path<(String, String)>,
    mut req: Request,
) -> Result<Response> {
    let name = scope.q(&name)?;
    super::upgrade::check_upgrade_to(&req, RAW_PROTOCOL)?;
    let socket = app
        .instances
        .incoming_socket(&name, &stream)
        .map_err(|e| scope.error(e))?;
    let qemu = tokio::net::UnixStream::connect(&socket)
        .await
        .map_err(|e| Error::conflict(format!("the waiting QEMU of {name} does not answer: {e}")))?;
    Ok(super::upgrade::splice_raw(
        &mut req,
        qemu,
        format!("migration of {name}: {stream}"),
    ))
}

/// `PUT /1.0/instances/{name}/incoming`: the guest runs here, or the copy goes.
pub async fn incoming_end(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<MigrationEnd>,
) -> Result<Response> {
    let name = scope.q(&name)?;
    app.instances
        .incoming_end(&name, req.run)
        .await
        .map_err(|e| scope.error(e))?;
    Ok(StatusCode::OK.into_response())
}
