//! Every endpoint's gate, mounted from its entry in the endpoint table: who is calling (the
//! unix socket is host root; a TLS client shows a token or a trusted certificate), whether
//! its role reaches the endpoint's, and, for changes, a line in the audit log.

use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use vessel_api::endpoints::{Endpoint, Method};

use super::{error_response, App};
use crate::auth::{Denied, Peer};
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
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
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
    let audited = (e.method != Method::Get).then(target);
    req.extensions_mut().insert(caller.clone());
    let r = next.run(req).await;
    if let Some(target) = audited {
        app.audit.record(&caller, e.id, target, r.status().as_u16());
    }
    r
}

fn req_target(req: &Request) -> &str {
    req.uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
}
