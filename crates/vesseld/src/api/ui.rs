//! The web dashboard's files under `/ui/`, embedded in the binary at build time (see
//! `build.rs`; `VESSEL_UI_DIR` serves them from a directory instead, for working on the
//! dashboard). They are public, like any login page: every figure the dashboard shows comes
//! from the API, which asks for credentials. Every answer carries a Content-Security-Policy
//! that allows the page's own scripts and connections only.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/ui_files.rs"));
}

/// What the dashboard's pages may load and reach: their own origin only.
const CSP: &str = "default-src 'self'; img-src 'self' data: blob:; style-src 'self' \
                   'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'; \
                   base-uri 'none'; form-action 'self'";

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json" | "map") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("woff2") => "font/woff2",
        _ => "application/octet-stream",
    }
}

/// The file at `path` (relative to the dashboard's root), if there is one.
fn file(path: &str) -> Option<Vec<u8>> {
    if path
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return None;
    }
    if let Some(dir) = std::env::var_os("VESSEL_UI_DIR") {
        return std::fs::read(std::path::Path::new(&dir).join(path)).ok();
    }
    embedded::FILES
        .iter()
        .find(|(p, _)| *p == path)
        .map(|(_, b)| b.to_vec())
}

fn serve(path: &str) -> Response {
    let Some(body) = file(path) else {
        if path == "index.html" {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "The dashboard was not built into this vesseld: run ui/build.sh (the set-up \
                 scripts/setup.sh does), then build vesseld again.\n",
            )
                .into_response();
        }
        return (StatusCode::NOT_FOUND, "no such file of the dashboard\n").into_response();
    };
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(path)),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// The dashboard's routes: `/` and `/ui` lead to `/ui/`.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/") }))
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/", get(|| async { serve("index.html") }))
        .route(
            "/ui/{*path}",
            get(|Path(path): Path<String>| async move { serve(&path) }),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_the_dashboard() {
        for bad in ["../etc/passwd", "a/../../b", "/etc/passwd", "a//b", "./x"] {
            assert_eq!(file(bad), None, "{bad}");
        }
    }

    #[test]
    fn types_by_extension() {
        assert_eq!(content_type("app.js"), "text/javascript; charset=utf-8");
        assert_eq!(
            content_type("vendor/novnc/core/rfb.js"),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(content_type("index.html"), "text/html; charset=utf-8");
        assert_eq!(content_type("x"), "application/octet-stream");
    }
}
