//! The far copies of replicated pools, between members (role `member`): keep one, drop
//! one, and the NBD connection to one (upgraded to the far copies' NBD server here).

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use vessel_api::stream::RAW_PROTOCOL;
use vessel_api::ReplicaCreate;

use super::{ApiJson, App};
use crate::error::{Error, Result};

/// `POST /1.0/cluster/replicas`: keep a far copy here.
pub async fn create(
    State(app): State<App>,
    ApiJson(req): ApiJson<ReplicaCreate>,
) -> Result<Response> {
    let c = app.cluster.clone();
    tokio::task::spawn_blocking(move || c.replica_create(&req))
        .await
        .map_err(|e| Error::internal(format!("replica task: {e}")))??;
    Ok(StatusCode::OK.into_response())
}

/// `DELETE /1.0/cluster/replicas/{name}`: drop a far copy kept here.
pub async fn delete(State(app): State<App>, Path(name): Path<String>) -> Result<Response> {
    // Ending its NBD server waits for its connections' threads.
    let c = app.cluster.clone();
    tokio::task::spawn_blocking(move || c.replica_delete(&name))
        .await
        .map_err(|e| Error::internal(format!("replica task: {e}")))??;
    Ok(StatusCode::OK.into_response())
}

/// `GET /1.0/cluster/replicas/{name}/nbd`: the connection upgraded to the NBD server of
/// the far copies kept here (the client names the copy as the export).
pub async fn nbd(
    State(app): State<App>,
    Path(name): Path<String>,
    mut req: Request,
) -> Result<Response> {
    super::upgrade::check_upgrade_to(&req, RAW_PROTOCOL)?;
    let socket = app.cluster.replica_socket(&name)?;
    let server = tokio::net::UnixStream::connect(&socket)
        .await
        .map_err(|e| Error::conflict(format!("the far copies' NBD server does not answer: {e}")))?;
    Ok(super::upgrade::splice_raw(
        &mut req,
        server,
        format!("far copy {name}"),
    ))
}
