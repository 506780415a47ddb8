//! Network routes. Kernel work blocks briefly (netlink, nft, dnsmasq), so it runs on the
//! blocking pool.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use vessel_api::{
    AdminInit, Network, NetworkAclSet, NetworkCreate, NetworkForward, NetworkLoadBalancer,
    NicAttach, NicLimits,
};

use super::scope::ProjectScope;
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

/// Runs `f` on the blocking pool and shows its network as `scope`'s clients see it.
async fn scoped(
    app: &App,
    scope: &ProjectScope,
    f: impl FnOnce(NetworkService) -> Result<Network> + Send + 'static,
) -> Result<Response> {
    let s = app.networks.clone();
    let n = tokio::task::spawn_blocking(move || f(s))
        .await
        .map_err(|e| Error::internal(format!("network task: {e}")))?
        .map_err(|e| scope.error(e))?;
    Ok(Json(scope.network(n)).into_response())
}

pub async fn networks_list(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
) -> Result<Response> {
    let s = app.networks.clone();
    let all = tokio::task::spawn_blocking(move || s.list())
        .await
        .map_err(|e| Error::internal(format!("network task: {e}")))??;
    let own: Vec<Network> = all
        .into_iter()
        .filter(|n| scope.own(&n.name).is_some())
        .map(|n| scope.network(n))
        .collect();
    Ok(Json(own).into_response())
}

pub async fn networks_create(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    Extension(caller): Extension<crate::auth::Caller>,
    ApiJson(mut req): ApiJson<NetworkCreate>,
) -> Result<Response> {
    crate::name::validate_name("network", &req.name)?;
    // An overlay's VNI, peers and local address are the hosts' underlay, which every
    // project's overlays share (a VNI another project uses on a peer would join them).
    if req.vni.is_some() && caller.role < vessel_api::Role::Admin {
        return Err(Error::forbidden(
            "an overlay (--vni, --peer, --local) is made on the hosts' underlay, which all \
             projects share: only an admin makes one",
        ));
    }
    if caller.role < vessel_api::Role::Admin {
        let (s, r) = (app.networks.clone(), req.clone());
        tokio::task::spawn_blocking(move || s.check_tenant_subnets(&r))
            .await
            .map_err(|e| Error::internal(format!("network task: {e}")))??;
    }
    req.name = scope.q(&req.name)?;
    // The quota check and the record it allows are made under one lock.
    let quota = app.projects.quota(scope.name())?;
    let _held = app.projects.quota_guard(scope.name()).await;
    if let Some(limit) = quota.networks {
        let used = app
            .networks
            .list()?
            .iter()
            .filter(|n| scope.own(&n.name).is_some())
            .count() as u64;
        if used + 1 > limit {
            return Err(Error::conflict(format!(
                "the project's limits.networks is {limit} and it has {used}: delete one, or \
                 ask an admin to raise the limit"
            )));
        }
    }
    if req.cluster {
        // On every member: made through the cluster.
        if !scope.is_default() {
            return Err(Error::invalid(
                "cluster networks belong to the default project for now",
            ));
        }
        let n = app.cluster.create_network(req).await?;
        return Ok((StatusCode::CREATED, Json(n)).into_response());
    }
    let r = scoped(&app, &scope, move |s| s.create(req)).await?;
    Ok((StatusCode::CREATED, r).into_response())
}

pub async fn network_get(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    Path(name): Path<String>,
) -> Result<Response> {
    let name = scope.q(&name)?;
    scoped(&app, &scope, move |s| s.get(&name)).await
}

pub async fn network_delete(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    Path(name): Path<String>,
) -> Result<Response> {
    let name = scope.q(&name)?;
    let n = app.networks.get(&name).map_err(|e| scope.error(e))?;
    if n.network_type == "cluster" {
        // On every member: deleted through the cluster.
        app.cluster.delete_network(&name).await?;
        return Ok(Json(n).into_response());
    }
    scoped(&app, &scope, move |s| s.delete(&name)).await
}

pub async fn network_attach(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    Path(name): Path<String>,
    ApiJson(mut req): ApiJson<NicAttach>,
) -> Result<Response> {
    req.instance = scope.q(&req.instance)?;
    let n = app
        .instances
        .nic_attach(scope.q(&name)?, req)
        .await
        .map_err(|e| scope.error(e))?;
    Ok(Json(scope.network(n)).into_response())
}

pub async fn network_detach(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<NicAttach>,
) -> Result<Response> {
    let n = app
        .instances
        .nic_detach(scope.q(&name)?, scope.q(&req.instance)?)
        .await
        .map_err(|e| scope.error(e))?;
    Ok(Json(scope.network(n)).into_response())
}

pub async fn network_nic_limits(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    Path((name, instance)): Path<(String, String)>,
    ApiJson(req): ApiJson<NicLimits>,
) -> Result<Response> {
    let (name, instance) = (scope.q(&name)?, scope.q(&instance)?);
    scoped(&app, &scope, move |s| s.set_limits(&name, &instance, req)).await
}

pub async fn network_lb_add(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    Extension(caller): Extension<crate::auth::Caller>,
    Path(name): Path<String>,
    ApiJson(mut req): ApiJson<NetworkLoadBalancer>,
) -> Result<Response> {
    let name = scope.q(&name)?;
    req.backends = req
        .backends
        .iter()
        .map(|b| scope.q(b))
        .collect::<Result<_>>()?;
    let admin = caller.role >= vessel_api::Role::Admin;
    scoped(&app, &scope, move |s| s.lb_add(&name, req, admin)).await
}

pub async fn network_lb_delete(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    Path((name, lb)): Path<(String, String)>,
) -> Result<Response> {
    let name = scope.q(&name)?;
    scoped(&app, &scope, move |s| s.lb_delete(&name, &lb)).await
}

pub async fn network_forward_add(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    Extension(caller): Extension<crate::auth::Caller>,
    Path(name): Path<String>,
    ApiJson(mut req): ApiJson<NetworkForward>,
) -> Result<Response> {
    let name = scope.q(&name)?;
    req.instance = scope.q(&req.instance)?;
    let admin = caller.role >= vessel_api::Role::Admin;
    scoped(&app, &scope, move |s| s.forward_add(&name, req, admin)).await
}

pub async fn network_forward_delete(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    Path((name, protocol, port)): Path<(String, String, u16)>,
) -> Result<Response> {
    let name = scope.q(&name)?;
    scoped(&app, &scope, move |s| {
        s.forward_delete(&name, &protocol, port)
    })
    .await
}

pub async fn network_acl_set(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<NetworkAclSet>,
) -> Result<Response> {
    let name = scope.q(&name)?;
    scoped(&app, &scope, move |s| s.acl_set(&name, req)).await
}

pub async fn network_nic_acl_set(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    Path((name, instance)): Path<(String, String)>,
    ApiJson(req): ApiJson<NetworkAclSet>,
) -> Result<Response> {
    let (name, instance) = (scope.q(&name)?, scope.q(&instance)?);
    scoped(&app, &scope, move |s| s.nic_acl_set(&name, &instance, req)).await
}

pub async fn admin_init(
    State(app): State<App>,
    ApiJson(req): ApiJson<AdminInit>,
) -> Result<Response> {
    blocking(&app, move |s| s.init_default(req.subnet)).await
}
