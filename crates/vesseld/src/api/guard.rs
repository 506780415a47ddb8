//! Every endpoint's gate, mounted from its entry in the endpoint table: who is calling (the
//! unix socket is host root; a TLS client shows a token or a trusted certificate), whether
//! its role reaches the endpoint's, and, for changes, a line in the audit log.

use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use vessel_api::endpoints::{Body, Endpoint, Method, Role, Scope};

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
    // A browser names the page a request comes from. A page of another site must not use
    // the credentials the browser holds for this one (a client certificate is presented
    // by itself): cross-site requests and WebSockets are refused before anything else.
    if matches!(peer, Peer::Remote { .. }) {
        if let Some(origin) = req.headers().get(header::ORIGIN) {
            if !same_origin(origin.as_bytes(), req.headers().get(header::HOST)) {
                return error_response(
                    StatusCode::FORBIDDEN,
                    format!(
                        "cross-origin request refused: a page of {} may not use this server's \
                         API; open the dashboard at this server's own address",
                        crate::error::truncated(&String::from_utf8_lossy(origin.as_bytes()), 200)
                    ),
                );
            }
        }
    }
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
    // Another member forwarding a request of one of its callers: the request is that
    // caller's, with that caller's role and project (never above the member's).
    let caller = match req.headers().get(crate::auth::ON_BEHALF) {
        Some(v) if caller.kind == vessel_api::IdentityKind::Member => {
            match serde_json::from_slice::<crate::auth::Delegated>(v.as_bytes()) {
                Ok(d) => caller.on_behalf(d),
                Err(e) => {
                    return Error::invalid(format!("{}: {e}", crate::auth::ON_BEHALF))
                        .into_response()
                }
            }
        }
        _ => caller,
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
    // Changes are audited, and so are the streams a user opens into an instance (exec,
    // console, display), whatever their method.
    let stream = matches!(e.response, Body::Upgrade | Body::WebSocket) && e.role >= Role::User;
    let audited = (e.method != Method::Get || stream).then(target);
    let in_scope = Caller {
        project: scope.name().to_string(),
        ..caller.clone()
    };
    let path = req.uri().path().to_string();
    let to = match member_holding(&app, &caller, e, &path, &scope).await {
        Ok(to) => to,
        Err(err) => {
            let r = err.into_response();
            if let Some(target) = audited {
                app.audit
                    .record(&in_scope, e.id, target, r.status().as_u16());
            }
            return r;
        }
    };
    req.extensions_mut().insert(caller.clone());
    req.extensions_mut().insert(scope);
    let started = std::time::Instant::now();
    let r = match to {
        None => next.run(req).await,
        // Another member holds what the request is about: it answers, through this one.
        Some(to) => match app
            .cluster
            .forward(&to, for_caller(req, &caller, &in_scope.project, e.scope))
            .await
        {
            Ok((r, splice)) => {
                if let Some(splice) = splice {
                    super::upgrade::spawn_guarded(&app, caller, splice);
                }
                r
            }
            Err(err) => err.into_response(),
        },
    };
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
    if (caller.role < Role::Admin && project != caller.project) || !app.projects.exists(&project) {
        return Err(crate::project::not_found(&project));
    }
    Ok(ProjectScope(project))
}

/// The other member of the cluster that holds the instance (or runs the operation) a
/// request is about, if another does. A request a member forwarded is answered where it
/// arrives, never forwarded again.
async fn member_holding(
    app: &App,
    caller: &Caller,
    e: &Endpoint,
    path: &str,
    scope: &ProjectScope,
) -> Result<Option<crate::cluster::Target>, Error> {
    if caller.forwarded() || app.cluster.me().await.is_none() {
        return Ok(None);
    }
    let Some(id) = path.split('/').nth(3) else {
        return Ok(None);
    };
    if e.path.starts_with("/1.0/instances/{name}") {
        // A malformed name is the handler's to refuse; one held here is answered here.
        let Ok(qualified) = scope.q(id) else {
            return Ok(None);
        };
        if app.instances.get_stored(&qualified).is_ok() {
            return Ok(None);
        }
        return app.cluster.locate(scope.name(), id).await;
    }
    // A member's evacuation and restore are that member's work.
    if matches!(e.id, "cluster_member_evacuate" | "cluster_member_restore") {
        let name = path.split('/').nth(4).unwrap_or_default();
        return app.cluster.member_target(name).await;
    }
    if e.path.starts_with("/1.0/operations/{id}") && app.ops.get(id).is_err() {
        return Ok(app.cluster.operation_member(id));
    }
    Ok(None)
}

/// `req` as another member gets it for `caller`: who the caller is (the member's own
/// certificate vouches for it), and, for a project-scoped endpoint, `project`: the one this
/// member resolved (the caller's own when it named none).
pub(super) fn for_caller(
    mut req: Request,
    caller: &Caller,
    project: &str,
    scope: Scope,
) -> Request {
    if let Ok(v) = serde_json::to_vec(&caller.delegated()) {
        if let Ok(v) = HeaderValue::from_bytes(&v) {
            req.headers_mut().insert(crate::auth::ON_BEHALF, v);
        }
    }
    if scope == Scope::Project {
        let path = req.uri().path().to_string();
        let mut pairs: Vec<String> = req
            .uri()
            .query()
            .unwrap_or_default()
            .split('&')
            .filter(|kv| !kv.is_empty())
            .filter(|kv| kv.split('=').next() != Some(vessel_api::PROJECT_QUERY))
            .map(str::to_string)
            .collect();
        pairs.push(format!("{}={project}", vessel_api::PROJECT_QUERY));
        if let Ok(uri) = format!("{path}?{}", pairs.join("&")).parse() {
            *req.uri_mut() = uri;
        }
    }
    req
}

/// Whether `origin` (`https://HOST[:PORT]`) is the server the request was sent to (its
/// `Host`).
fn same_origin(origin: &[u8], host: Option<&HeaderValue>) -> bool {
    let (Ok(origin), Some(host)) = (std::str::from_utf8(origin), host) else {
        return false;
    };
    let Ok(host) = host.to_str() else {
        return false;
    };
    origin
        .strip_prefix("https://")
        .is_some_and(|o| o.eq_ignore_ascii_case(host))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_servers_own_pages_are_same_origin() {
        let host = HeaderValue::from_static("vessel.example:8443");
        assert!(same_origin(b"https://vessel.example:8443", Some(&host)));
        assert!(same_origin(b"https://VESSEL.example:8443", Some(&host)));
        for other in [
            &b"https://evil.example"[..],
            b"http://vessel.example:8443",
            b"https://vessel.example:8444",
            b"https://vessel.example:8443.evil.example",
            b"null",
        ] {
            assert!(
                !same_origin(other, Some(&host)),
                "{}",
                String::from_utf8_lossy(other)
            );
        }
        assert!(!same_origin(b"https://vessel.example:8443", None));
    }
}
