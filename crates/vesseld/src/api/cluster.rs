//! The cluster: membership on etcd (`ClusterService`).

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use vessel_api::{ClusterInit, ClusterJoin, ClusterTokenCreate};

use super::{ApiJson, App};
use crate::error::Result;

pub async fn get(State(app): State<App>) -> Result<Response> {
    Ok(Json(app.cluster.info().await?).into_response())
}

pub async fn init(State(app): State<App>, ApiJson(req): ApiJson<ClusterInit>) -> Result<Response> {
    Ok((StatusCode::CREATED, Json(app.cluster.init(req).await?)).into_response())
}

pub async fn join(State(app): State<App>, ApiJson(req): ApiJson<ClusterJoin>) -> Result<Response> {
    Ok(Json(app.cluster.join(req).await?).into_response())
}

pub async fn tokens_create(
    State(app): State<App>,
    ApiJson(req): ApiJson<ClusterTokenCreate>,
) -> Result<Response> {
    Ok((StatusCode::CREATED, Json(app.cluster.token(req).await?)).into_response())
}

pub async fn members(State(app): State<App>) -> Result<Response> {
    Ok(Json(app.cluster.members().await?).into_response())
}

pub async fn member_delete(
    State(app): State<App>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response> {
    let force = matches!(
        q.get("force").map(String::as_str),
        Some("1" | "true" | "yes")
    );
    app.cluster.remove(&name, force).await?;
    Ok(Json(app.cluster.members().await?).into_response())
}

pub async fn placement(
    State(app): State<App>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response> {
    let cpu = match q.get("cpu") {
        None => 0.0,
        Some(v) => v
            .parse::<f64>()
            .ok()
            .filter(|c| c.is_finite() && *c >= 0.0)
            .ok_or_else(|| {
                crate::error::Error::invalid(format!("cpu={v:?}: give cores, e.g. 0.5"))
            })?,
    };
    let memory = match q.get("memory") {
        None => 0,
        Some(v) => vessel_api::size::parse_size(v)
            .map_err(|e| crate::error::Error::invalid(format!("memory={v:?}: {e}")))?,
    };
    let policy = q.get("policy").map(String::as_str).unwrap_or("spread");
    Ok(Json(app.cluster.place(cpu, memory, policy).await?).into_response())
}
