//! Network routes. Kernel work blocks briefly (netlink, nft, dnsmasq), so it runs on the
//! blocking pool.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use vessel_api::{
    AdminInit, NetworkAclSet, NetworkCreate, NetworkForward, NetworkLoadBalancer, NicAttach,
    NicLimits,
};

use super::{ApiJson, App};
use crate::error::{Error, Result};
use crate::network::NetworkService;

async fn blocking<T: serde::Serialize + Send + 'static>(
    app: &App,
    f: impl FnOnce(NetworkService) -> Result<T> + Send + 'static,
) -> Result<Response> {
    let s = app.networks.clone();
    let v = tokio::task::spawn_blocking(move || f(s))
        .await
        .map_err(|e| Error::internal(format!("network task: {e}")))??;
    Ok(Json(v).into_response())
}

pub async fn networks_list(State(app): State<App>) -> Result<Response> {
    blocking(&app, |s| s.list()).await
}

pub async fn networks_create(
    State(app): State<App>,
    ApiJson(req): ApiJson<NetworkCreate>,
) -> Result<Response> {
    let r = blocking(&app, move |s| s.create(req)).await?;
    Ok((StatusCode::CREATED, r).into_response())
}

pub async fn network_get(State(app): State<App>, Path(name): Path<String>) -> Result<Response> {
    blocking(&app, move |s| s.get(&name)).await
}

pub async fn network_delete(State(app): State<App>, Path(name): Path<String>) -> Result<Response> {
    blocking(&app, move |s| s.delete(&name)).await
}

pub async fn network_attach(
    State(app): State<App>,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<NicAttach>,
) -> Result<Response> {
    Ok(Json(app.instances.nic_attach(name, req).await?).into_response())
}

pub async fn network_detach(
    State(app): State<App>,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<NicAttach>,
) -> Result<Response> {
    Ok(Json(app.instances.nic_detach(name, req.instance).await?).into_response())
}

pub async fn network_nic_limits(
    State(app): State<App>,
    Path((name, instance)): Path<(String, String)>,
    ApiJson(req): ApiJson<NicLimits>,
) -> Result<Response> {
    blocking(&app, move |s| s.set_limits(&name, &instance, req)).await
}

pub async fn network_lb_add(
    State(app): State<App>,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<NetworkLoadBalancer>,
) -> Result<Response> {
    blocking(&app, move |s| s.lb_add(&name, req)).await
}

pub async fn network_lb_delete(
    State(app): State<App>,
    Path((name, lb)): Path<(String, String)>,
) -> Result<Response> {
    blocking(&app, move |s| s.lb_delete(&name, &lb)).await
}

pub async fn network_forward_add(
    State(app): State<App>,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<NetworkForward>,
) -> Result<Response> {
    blocking(&app, move |s| s.forward_add(&name, req)).await
}

pub async fn network_forward_delete(
    State(app): State<App>,
    Path((name, protocol, port)): Path<(String, String, u16)>,
) -> Result<Response> {
    blocking(&app, move |s| s.forward_delete(&name, &protocol, port)).await
}

pub async fn network_acl_set(
    State(app): State<App>,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<NetworkAclSet>,
) -> Result<Response> {
    blocking(&app, move |s| s.acl_set(&name, req)).await
}

pub async fn network_nic_acl_set(
    State(app): State<App>,
    Path((name, instance)): Path<(String, String)>,
    ApiJson(req): ApiJson<NetworkAclSet>,
) -> Result<Response> {
    blocking(&app, move |s| s.nic_acl_set(&name, &instance, req)).await
}

pub async fn admin_init(
    State(app): State<App>,
    ApiJson(req): ApiJson<AdminInit>,
) -> Result<Response> {
    blocking(&app, move |s| s.init_default(req.subnet)).await
}
