//! A bounded property run over the request path a remote client reaches first: parsing of
//! the method, path, query, headers and body, authentication and the role check, through the
//! daemon's real router. Whatever arrives, the answer is an HTTP answer (no panic), never a
//! 5xx, never a success without credentials, and a viewer's token never changes anything.
//! `PROPTEST_CASES` raises the number of cases for a longer run (docs/api.md, "Fuzzing").

use std::net::IpAddr;

use axum::body::Body;
use axum::http::StatusCode;
use proptest::prelude::*;
use tower::ServiceExt;
use vessel_api::endpoints::ENDPOINTS;

use super::tests::router_in;
use crate::auth::Peer;

const METHODS: &[&str] = &[
    "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "BREW",
];

/// A path: mostly shaped like the API's (so routes are reached), with hostile segments.
fn path() -> impl Strategy<Value = String> {
    let template = proptest::sample::select(ENDPOINTS.iter().map(|e| e.path).collect::<Vec<_>>());
    let segment = prop_oneof![
        "[a-z][a-z0-9-]{0,20}",
        Just("..".to_string()),
        Just("%2e%2e".to_string()),
        Just("%00".to_string()),
        "[!-~]{0,12}".prop_map(|s| s.replace(['?', '#', '/'], "")),
        "\\PC{0,6}".prop_map(|s| s.bytes().map(|b| format!("%{b:02X}")).collect()),
    ];
    let query = proptest::option::of("[a-z]{1,9}=[!-~]{0,20}".prop_map(|q| q.replace('#', "")));
    (template, proptest::collection::vec(segment, 0..4), query).prop_map(|(t, segs, q)| {
        let mut segs = segs.into_iter();
        let mut p: String = t
            .split('/')
            .map(|s| {
                if s.starts_with('{') {
                    segs.next().unwrap_or_else(|| "x".into())
                } else {
                    s.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        if let Some(q) = q {
            p.push('?');
            p.push_str(&q);
        }
        p
    })
}

fn authorization() -> impl Strategy<Value = Option<Vec<u8>>> {
    proptest::option::of(prop_oneof![
        "Bearer [ -~]{0,80}".prop_map(String::into_bytes),
        "[ -~]{0,40}".prop_map(String::into_bytes),
        proptest::collection::vec(0x20u8..0xff, 0..100),
    ])
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"{}".to_vec()),
        "\\{\"[a-z_]{1,10}\": ?(\"[ -~]{0,20}\"|[0-9]{1,5}|null|\\[\\])\\}"
            .prop_map(String::into_bytes),
        proptest::collection::vec(any::<u8>(), 0..256),
    ]
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

fn request(
    method: &str,
    path: &str,
    auth: Option<&[u8]>,
    body: Vec<u8>,
    peer: Peer,
) -> Option<axum::http::Request<Body>> {
    let mut b = axum::http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .extension(peer);
    if let Some(a) = auth {
        b = b.header(
            "authorization",
            axum::http::HeaderValue::from_bytes(a).ok()?,
        );
    }
    b.body(Body::from(body)).ok()
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(600),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Without valid credentials nothing succeeds, whatever the request.
    #[test]
    fn strangers_get_nothing(
        method in proptest::sample::select(METHODS),
        path in path(),
        auth in authorization(),
        body in body(),
        addr in any::<[u8; 4]>(),
        cert in proptest::option::of("[0-9a-f]{64}"),
    ) {
        let dir = std::env::temp_dir().join(format!("vessel-fuzz-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let rt = runtime();
        let peer = Peer::Remote { addr: IpAddr::from(addr), certificate: cert };
        if let Some(req) = request(method, &path, auth.as_deref(), body, peer) {
            let router = rt.block_on(async { router_in(&dir) });
            let resp = rt.block_on(router.oneshot(req)).unwrap();
            let s = resp.status();
            prop_assert!(
                matches!(s, StatusCode::UNAUTHORIZED | StatusCode::TOO_MANY_REQUESTS
                    | StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED),
                "{method} {path}: {s}"
            );
            // (A HEAD answer has no body to tell.)
            if method != "HEAD" && (s == StatusCode::NOT_FOUND || s == StatusCode::METHOD_NOT_ALLOWED) {
                let b = rt.block_on(axum::body::to_bytes(resp.into_body(), 1 << 20)).unwrap();
                let b = String::from_utf8_lossy(&b);
                // Only the router's own answers: no handler ran.
                prop_assert!(b.contains(super::NO_ROUTE) || b.contains("is not allowed on"), "{b}");
            }
        }
        drop(rt);
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A viewer's token reads and is refused everything else; no request makes the daemon
    /// fail (5xx) or panic.
    #[test]
    fn a_viewer_reads_and_changes_nothing(
        method in proptest::sample::select(METHODS),
        path in path(),
        body in body(),
    ) {
        let dir = std::env::temp_dir().join(format!("vessel-fuzz-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let rt = runtime();
        let (router, token) = rt.block_on(async {
            let store: std::sync::Arc<dyn crate::store::Store> = std::sync::Arc::new(
                crate::store::SqliteStore::open(&dir.join("db")).unwrap(),
            );
            let auth = crate::auth::AuthService::new(store);
            let made = auth
                .create_token(&vessel_api::TokenCreate {
                    name: "v".into(),
                    project: None,
                    role: "viewer".into(),
                    expires: None,
                })
                .unwrap();
            (router_in(&dir), made.token)
        });
        let peer = Peer::Remote { addr: IpAddr::from([192, 0, 2, 1]), certificate: None };
        let auth = format!("Bearer {token}").into_bytes();
        // Events never end: the route is covered by the table walk over HTTPS.
        if !path.starts_with("/1.0/events") {
            if let Some(req) = request(method, &path, Some(&auth), body, peer) {
                let changes = method != "GET" && method != "HEAD";
                let resp = rt.block_on(router.oneshot(req)).unwrap();
                let s = resp.status();
                prop_assert!(!s.is_server_error(), "{method} {path}: {s}");
                if changes {
                    prop_assert!(!s.is_success(), "{method} {path}: {s}");
                }
            }
        }
        drop(rt);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
