//! Every endpoint's gate, mounted from its entry in the endpoint table: who is calling (the
//! unix socket is host root; a TLS client shows a token or a trusted certificate), whether
//! its role reaches the endpoint's, and, for changes, a line in the audit log.

use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use vessel_api::endpoints::{Endpoint, Method, Role, Scope};

use super::scope::ProjectScope;
use super::{error_response, App};
use crate::auth::{Caller, Denied, Peer};
use crate::error::Error;

/// Longest target recorded in the audit log, in characters.
const MAX_TARGET: usize = 1024;

/// Authenticates, authorizes and audits one request to `e`.
pub async fn guard(app: App, e: &'static Endpoint, mut req: Request, next: Next) -> Response {
    // Only the listeners make requests, and each says where it came from: a request that
    // does not is refused rather than taken for root.
    let Some(peer) = req.extensions().get::<Peer>().cloned() else {
        return error_response(StatusCode::UNAUTHORIZED, "no connection information".into());
    };
    // A browser's WebSocket cannot carry an Authorization header: its token rides in a
    // subprotocol instead.
    let ws_bearer = ws_token(req.headers())
        .map(|t| format!("{} {t}", vessel_api::AUTHORIZATION_SCHEME).into_bytes());
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes())
        .or(ws_bearer.as_deref());
    let caller = match app.auth.authenticate(&peer, authorization) {
        Ok(c) => c,
        Err(Denied::Unauthenticated(m)) => {
            tracing::info!(?peer, endpoint = e.id, reason = %m, "authentication failed");
            let mut r = error_response(StatusCode::UNAUTHORIZED, m);
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
        Err(Denied::TooMany(wait)) => {
            let secs = wait.as_secs().max(1);
            let mut r = error_response(
                StatusCode::TOO_MANY_REQUESTS,
                format!("too many failed authentications from this address; try again in {secs} s"),
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            return r;
        }
    };
    let target = || {
        let t = format!("{} {}", e.method.as_str(), req_target(&req));
        crate::error::truncated(&t, MAX_TARGET)
    };
    if caller.role < e.role {
        let r = Error::forbidden(format!(
            "{} (role {}) may not call {} {} ({}): that needs the role {} or above",
            caller.name,
            caller.role,
            e.method.as_str(),
            e.path,
            e.id,
            e.role
        ))
        .into_response();
        if e.method != Method::Get {
            app.audit
                .record(&caller, e.id, target(), r.status().as_u16());
        }
        return r;
    }
    let scope = match project_of(&app, &caller, e, &req) {
        Ok(s) => s,
        Err(err) => return err.into_response(),
    };
    let audited = (e.method != Method::Get).then(target);
    let in_scope = Caller {
        project: scope.name().to_string(),
        ..caller.clone()
    };
    req.extensions_mut().insert(caller);
    req.extensions_mut().insert(scope);
    let started = std::time::Instant::now();
    let r = next.run(req).await;
    app.metrics
        .observe_request(e.id, r.status().as_u16(), started.elapsed());
    if let Some(target) = audited {
        app.audit
            .record(&in_scope, e.id, target, r.status().as_u16());
    }
    r
}

/// The project a request is about: `?project=` or the caller's own. An identity bound to a
/// project names no other (another project answers exactly as one that does not exist);
/// admins name any.
fn project_of(
    app: &App,
    caller: &Caller,
    e: &Endpoint,
    req: &Request,
) -> Result<ProjectScope, Error> {
    if e.scope != Scope::Project {
        return Ok(ProjectScope(caller.project.clone()));
    }
    let asked = req.uri().query().and_then(|q| {
        q.split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == vessel_api::PROJECT_QUERY)
            .map(|(_, v)| v.to_string())
    });
    let project = asked.unwrap_or_else(|| caller.project.clone());
    if (caller.role != Role::Admin && project != caller.project) || !app.projects.exists(&project) {
        return Err(crate::project::not_found(&project));
    }
    Ok(ProjectScope(project))
}

/// The token of a `vessel.token.TOKEN` WebSocket subprotocol, if one is offered.
fn ws_token(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|p| p.trim().strip_prefix(vessel_api::WS_TOKEN_PREFIX))
        .filter(|t| !t.is_empty())
        .map(str::to_string)
}

fn req_target(req: &Request) -> &str {
    req.uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
}
