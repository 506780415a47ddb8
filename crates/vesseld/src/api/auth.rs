//! Identities, the audit log and the server's settings.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use vessel_api::{CertificateTrust, ServerConfig, TokenCreate};

use super::{ApiJson, App};
use crate::auth::Caller;
use crate::error::{Error, Result};
use crate::settings;

pub async fn auth_self(State(app): State<App>, Extension(caller): Extension<Caller>) -> Response {
    let shown = app
        .auth
        .list()
        .into_iter()
        .find(|i| i.name == caller.name && i.kind == caller.kind)
        .unwrap_or_else(|| caller.identity());
    Json(shown).into_response()
}

pub async fn identities_list(State(app): State<App>) -> Response {
    Json(app.auth.list()).into_response()
}

pub async fn tokens_create(
    State(app): State<App>,
    ApiJson(req): ApiJson<TokenCreate>,
) -> Result<Response> {
    known_project(&app, req.project.as_deref())?;
    let made = app.auth.create_token(&req)?;
    Ok((StatusCode::CREATED, Json(made)).into_response())
}

pub async fn certificates_add(
    State(app): State<App>,
    ApiJson(req): ApiJson<CertificateTrust>,
) -> Result<Response> {
    known_project(&app, req.project.as_deref())?;
    let made = app.auth.trust_certificate(&req)?;
    Ok((StatusCode::CREATED, Json(made)).into_response())
}

/// An identity is bound to a project that exists.
fn known_project(app: &App, project: Option<&str>) -> Result<()> {
    match project {
        Some(p) if !app.projects.exists(p) => Err(crate::project::not_found(p)),
        _ => Ok(()),
    }
}

pub async fn identity_delete(State(app): State<App>, Path(name): Path<String>) -> Result<Response> {
    Ok(Json(app.auth.revoke(&name)?).into_response())
}

pub async fn audit_list(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response> {
    let limit = match q.get("limit") {
        None => None,
        Some(l) => Some(
            l.parse::<usize>()
                .map_err(|_| Error::invalid(format!("limit={l:?} is not a whole number")))?,
        ),
    };
    let entries = app.audit.read(
        &caller,
        q.get("project").map(String::as_str),
        q.get("since").map(String::as_str),
        limit,
    )?;
    Ok(Json(entries).into_response())
}

pub async fn config_get(State(app): State<App>) -> Result<Response> {
    Ok(Json(app.settings.all()?).into_response())
}

/// Checks every key first, applies what takes effect at once (the HTTPS listener), then
/// stores: a bad key or value changes nothing.
pub async fn config_set(
    State(app): State<App>,
    ApiJson(req): ApiJson<ServerConfig>,
) -> Result<Response> {
    let mut https = None;
    for (k, v) in &req.values {
        if settings::known_key(k)? == settings::HTTPS_ADDRESS {
            https = Some(settings::https_address(v)?);
        }
    }
    if let Some(addr) = https {
        app.https.listen(addr).await?;
    }
    for (k, v) in &req.values {
        app.settings.set(k, v)?;
    }
    Ok(Json(app.settings.all()?).into_response())
}
