//! `GET /1.0/metrics` (Prometheus text, the caller's projects only) and an instance's history.

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;
use vessel_api::endpoints::ENDPOINTS;
use vessel_api::Role;

use super::scope::ProjectScope;
use super::App;
use crate::auth::Caller;
use crate::error::Result;
use crate::metrics::render::Seen;

/// What `caller` may read: admins every project and the daemon's own figures; others their
/// project, and the pools when their role reads pools (as `GET /1.0/storage-pools` allows).
fn seen(caller: &Caller) -> Seen {
    if caller.role == Role::Admin {
        return Seen::All;
    }
    let pools_role = ENDPOINTS
        .iter()
        .find(|e| e.id == "pools_list")
        .map_or(Role::Admin, |e| e.role);
    Seen::Project {
        name: caller.project.clone(),
        pools: caller.role >= pools_role,
    }
}

pub async fn metrics(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
) -> Result<Response> {
    let text = app.metrics.text(seen(&caller)).await?;
    Ok((
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        text.as_str().to_owned(),
    )
        .into_response())
}

pub async fn history(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    Path(name): Path<String>,
) -> Result<Response> {
    let name = scope.q(&name)?;
    // The instance must exist in the caller's project (404 otherwise, as for its state).
    app.instances.get(&name).map_err(|e| scope.error(e))?;
    Ok(Json(app.metrics.history(&name)).into_response())
}
