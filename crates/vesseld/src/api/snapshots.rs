//! Instance snapshots: each request goes to the instance's owner (under its lock).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use vessel_api::{InstanceSnapshotCreate, InstanceSnapshotRestore};

use super::scope::ProjectScope;
use super::{ApiJson, App};
use crate::error::Result;

fn accepted<T: serde::Serialize>(v: T) -> Response {
    (StatusCode::ACCEPTED, Json(v)).into_response()
}

pub async fn list(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    Path(name): Path<String>,
) -> Result<Response> {
    let list = app
        .instances
        .snapshots(&scope.q(&name)?)
        .map_err(|e| scope.error(e))?;
    Ok(Json(list).into_response())
}

pub async fn create(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<InstanceSnapshotCreate>,
) -> Result<Response> {
    let (op, _) = app
        .instances
        .snapshot_create(&scope.q(&name)?, req, false)
        .map_err(|e| scope.error(e))?;
    Ok(accepted(scope.operation(op)))
}

pub async fn get(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    Path((name, snap)): Path<(String, String)>,
) -> Result<Response> {
    let s = app
        .instances
        .snapshot(&scope.q(&name)?, &snap)
        .map_err(|e| scope.error(e))?;
    Ok(Json(s).into_response())
}

pub async fn delete(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    Path((name, snap)): Path<(String, String)>,
) -> Result<Response> {
    let op = app
        .instances
        .snapshot_delete(&scope.q(&name)?, &snap)
        .map_err(|e| scope.error(e))?;
    Ok(accepted(scope.operation(op)))
}

pub async fn restore(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    Path((name, snap)): Path<(String, String)>,
    ApiJson(req): ApiJson<InstanceSnapshotRestore>,
) -> Result<Response> {
    let op = app
        .instances
        .snapshot_restore(&scope.q(&name)?, &snap, req.force)
        .map_err(|e| scope.error(e))?;
    Ok(accepted(scope.operation(op)))
}
