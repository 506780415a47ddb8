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
    if caller.role >= Role::Admin {
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

/// `?headroom=` in percent (`20` or `20%`), as a fraction; 20 % when not given.
fn headroom(q: &std::collections::HashMap<String, String>) -> Result<f64> {
    let Some(raw) = q.get("headroom") else {
        return Ok(0.2);
    };
    raw.trim()
        .trim_end_matches('%')
        .parse::<f64>()
        .ok()
        .filter(|p| p.is_finite() && (0.0..=1000.0).contains(p))
        .map(|p| p / 100.0)
        .ok_or_else(|| {
            crate::error::Error::invalid(format!(
                "headroom {raw:?} is not a percentage from 0 to 1000 (e.g. 20)"
            ))
        })
}

pub async fn plan_consolidate(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Result<Response> {
    let headroom = headroom(&q)?;
    let mine: Vec<_> = app
        .instances
        .records()?
        .into_iter()
        .filter_map(|i| {
            let shown = crate::project::within(scope.name(), &i.name)?.to_string();
            Some((i.name.clone(), shown, i.limits.cpu, i.limits.memory))
        })
        .collect();
    Ok(Json(app.metrics.consolidation(mine, headroom)).into_response())
}

pub async fn host_history(State(app): State<App>) -> Result<Response> {
    Ok(Json(app.metrics.history(crate::metrics::host::HOST_KEY)).into_response())
}
