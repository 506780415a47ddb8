//! HTTP layer: parses requests, hands them to the services, renders their answers. Routes are
//! mounted from `vessel_api::endpoints::ENDPOINTS`, so the daemon serves exactly the paths
//! the OpenAPI document names. No syscalls and no store access here.

mod archives;
mod auth;
mod backups;
mod cluster;
mod guard;
mod handlers;
pub mod https;
pub mod listener;
mod metrics;
mod migration;
mod network;
mod profile_catch_up;
mod profiles;
pub(crate) use profile_catch_up::keep_catching_up;
mod projects;
mod replicas;
pub mod scope;
mod snapshots;
mod storage;
mod ui;
mod upgrade;
mod websocket;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::Router;
use vessel_api::endpoints::{Endpoint, Method, ENDPOINTS};
use vessel_api::{ErrorResponse, ServerInfo};

use crate::error::{Error, ErrorKind};
use crate::events::Events;
use crate::image::ImageService;
use crate::instance::InstanceService;
use crate::operations::Operations;

/// What every handler can reach.
#[derive(Clone)]
pub struct App {
    /// Instances.
    pub instances: InstanceService,
    /// Images.
    pub images: ImageService,
    /// Storage pools, volumes and exports.
    pub storage: crate::storage::StorageService,
    /// Networks and NICs.
    pub networks: crate::network::NetworkService,
    /// Operations.
    pub ops: Operations,
    /// Event bus.
    pub events: Events,
    /// Static part of `GET /1.0`.
    pub info: ServerInfo,
    /// Identities.
    pub auth: crate::auth::AuthService,
    /// The audit log.
    pub audit: crate::audit::AuditLog,
    /// The server's settings.
    pub settings: crate::settings::Settings,
    /// The HTTPS listener.
    pub https: https::HttpsControl,
    /// Projects and their quotas.
    pub projects: crate::project::ProjectService,
    /// Profiles.
    pub profiles: crate::profile::ProfileService,
    /// Backup stores.
    pub backups: crate::backup::BackupService,
    /// Metrics and the instances' history.
    pub metrics: crate::metrics::MetricsService,
    /// Membership of a cluster.
    pub cluster: crate::cluster::ClusterService,
}

/// Marker in the body of the router's own 404, told apart from a handler's "not found".
pub const NO_ROUTE: &str = "no such API endpoint";

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = match self.kind {
            ErrorKind::Invalid => StatusCode::BAD_REQUEST,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::Conflict => StatusCode::CONFLICT,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorKind::Unauthenticated => StatusCode::UNAUTHORIZED,
            ErrorKind::Forbidden => StatusCode::FORBIDDEN,
            ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        };
        let shown = crate::error::redact_host_paths(&self.message);
        if shown != self.message {
            tracing::info!(error = %self.message, "answered with host paths hidden");
        }
        // No message echoes an unbounded field back, whatever quoted it.
        error_response(status, crate::error::truncated(&shown, MAX_MESSAGE))
    }
}

/// Longest error message a client gets, in characters.
const MAX_MESSAGE: usize = 2048;

/// Whether a scheduled snapshot of instance `name` (qualified) is admitted by its
/// project's limits, and the project's quota lock to hold until it is taken.
pub async fn scheduled_snapshot_admitted(
    app: &App,
    name: &str,
) -> crate::error::Result<Option<Box<dyn Send>>> {
    let scope = scope::ProjectScope(crate::project::split(name).0.to_string());
    snapshots::admitted(app, &scope, name).await
}

/// A JSON error body with the given status.
pub fn error_response(status: StatusCode, message: String) -> Response {
    (
        status,
        axum::Json(ErrorResponse {
            error: message,
            code: status.as_u16(),
        }),
    )
        .into_response()
}

/// Keeps `held` (a project's quota lock) until operation `id` has ended: for what a limit
/// counted that exists only once its operation is done (a resized root disk, a moved one,
/// a VM's root volume made as large as its source's).
fn hold_until_done(app: &App, id: &str, held: Box<dyn Send>) {
    let (ops, id) = (app.ops.clone(), id.to_string());
    tokio::spawn(async move {
        let _ = ops.wait(&id, None).await;
        drop(held);
    });
}

/// `202 Accepted` with the operation (or anything else) that says what goes on.
fn accepted<T: serde::Serialize>(v: T) -> Response {
    (StatusCode::ACCEPTED, axum::Json(v)).into_response()
}

/// JSON body extractor whose rejections are API errors with the parser's message.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    axum::Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Self(v)),
            Err(e) => Err(Error::invalid(format!(
                "invalid request body: {}",
                e.body_text()
            ))),
        }
    }
}

fn filter(m: Method) -> MethodFilter {
    match m {
        Method::Get => MethodFilter::GET,
        Method::Post => MethodFilter::POST,
        Method::Put => MethodFilter::PUT,
        Method::Patch => MethodFilter::PATCH,
        Method::Delete => MethodFilter::DELETE,
    }
}

fn handler_for(e: &Endpoint) -> MethodRouter<App> {
    use handlers as h;
    let f = filter(e.method);
    match e.id {
        "server_info" => on(f, h::server_info),
        "cluster_get" => on(f, cluster::get),
        "cluster_update" => on(f, cluster::update),
        "cluster_init" => on(f, cluster::init),
        "cluster_replica_create" => on(f, replicas::create),
        "cluster_replica_delete" => on(f, replicas::delete),
        "cluster_replica_nbd" => on(f, replicas::nbd),
        "cluster_join" => on(f, cluster::join),
        "cluster_tokens_create" => on(f, cluster::tokens_create),
        "cluster_members_list" => on(f, cluster::members),
        "cluster_member_delete" => on(f, cluster::member_delete),
        "cluster_member_evacuate" => on(f, cluster::member_evacuate),
        "cluster_member_restore" => on(f, cluster::member_restore),
        "cluster_placement" => on(f, cluster::placement),
        "instances_list" => on(f, h::instances_list),
        "instances_create" => on(f, h::instances_create),
        "instance_get" => on(f, h::instance_get),
        "instance_delete" => on(f, h::instance_delete),
        "instance_state_get" => on(f, h::instance_state_get),
        "instance_state_put" => on(f, h::instance_state_put),
        "instance_exec" => on(f, upgrade::exec),
        "instance_console" => on(f, upgrade::console),
        "instance_vnc" => on(f, upgrade::vnc),
        "instance_logs" => on(f, h::instance_logs),
        "instance_file_get" => on(f, h::file_get),
        "instance_file_put" => on(f, h::file_put),
        "images_list" => on(f, h::images_list),
        "images_build" => on(f, h::images_build),
        "images_pull" => on(f, h::images_pull),
        "images_import" => on(f, h::images_import),
        "image_export" => on(f, h::image_export),
        "image_get" => on(f, h::image_get),
        "image_delete" => on(f, h::image_delete),
        "image_alias_add" => on(f, h::image_alias_add),
        "image_alias_delete" => on(f, h::image_alias_delete),
        "instance_publish" => on(f, h::instance_publish),
        "instance_config_get" => on(f, profiles::instance_config_get),
        "instance_config_update" => on(f, profiles::instance_config_update),
        "profiles_list" => on(f, profiles::list),
        "profiles_create" => on(f, profiles::create),
        "profile_get" => on(f, profiles::get),
        "profile_put" => on(f, profiles::put),
        "profile_apply" => on(f, profiles::apply_here),
        "profile_delete" => on(f, profiles::delete),
        "instance_root_disk" => on(f, h::instance_root_disk),
        "instance_copy" => on(f, snapshots::copy),
        "instance_rename" => on(f, snapshots::rename),
        "instance_move" => on(f, snapshots::move_to_pool),
        "instance_migrate" => on(f, cluster::migrate),
        "instance_incoming" => on(f, migration::incoming),
        "instance_incoming_stream" => on(f, migration::incoming_stream),
        "instance_incoming_end" => on(f, migration::incoming_end),
        "instance_export" => on(f, archives::export),
        "backup_export" => on(f, archives::export_backup),
        "archives_import" => on(f, archives::import),
        "instance_snapshots_list" => on(f, snapshots::list),
        "instance_snapshot_create" => on(f, snapshots::create),
        "instance_snapshot_get" => on(f, snapshots::get),
        "instance_snapshot_delete" => on(f, snapshots::delete),
        "instance_snapshot_restore" => on(f, snapshots::restore),
        "backups_list" => on(f, backups::list),
        "instance_backup" => on(f, backups::create),
        "backup_get" => on(f, backups::get),
        "backup_delete" => on(f, backups::delete),
        "backup_restore" => on(f, backups::restore),
        "backups_verify" => on(f, backups::verify),
        "backups_prune" => on(f, backups::prune),
        "backups_gc" => on(f, backups::gc),
        "operations_list" => on(f, h::operations_list),
        "operation_get" => on(f, h::operation_get),
        "operation_cancel" => on(f, h::operation_cancel),
        "operation_wait" => on(f, h::operation_wait),
        "events" => on(f, h::events),
        "events_websocket" => on(f, websocket::events),
        "metrics" => on(f, metrics::metrics),
        "instance_history" => on(f, metrics::history),
        "plan_consolidate" => on(f, metrics::plan_consolidate),
        "host_history" => on(f, metrics::host_history),
        "instance_exec_websocket" => on(f, websocket::exec),
        "instance_console_websocket" => on(f, websocket::console),
        "instance_vnc_websocket" => on(f, websocket::vnc),
        "networks_list" => on(f, network::networks_list),
        "networks_create" => on(f, network::networks_create),
        "network_get" => on(f, network::network_get),
        "network_delete" => on(f, network::network_delete),
        "network_attach" => on(f, network::network_attach),
        "network_detach" => on(f, network::network_detach),
        "network_forward_add" => on(f, network::network_forward_add),
        "network_forward_delete" => on(f, network::network_forward_delete),
        "network_acl_set" => on(f, network::network_acl_set),
        "admin_init" => on(f, network::admin_init),
        "network_nic_acl_set" => on(f, network::network_nic_acl_set),
        "network_nic_limits" => on(f, network::network_nic_limits),
        "network_lb_add" => on(f, network::network_lb_add),
        "network_lb_delete" => on(f, network::network_lb_delete),
        "pools_list" => on(f, storage::pools_list),
        "pools_create" => on(f, storage::pools_create),
        "pool_get" => on(f, storage::pool_get),
        "pool_delete" => on(f, storage::pool_delete),
        "pool_status" => on(f, storage::pool_status),
        "pool_repair" => on(f, storage::pool_repair),
        "volumes_list" => on(f, storage::volumes_list),
        "volumes_create" => on(f, storage::volumes_create),
        "volume_get" => on(f, storage::volume_get),
        "volume_update" => on(f, storage::volume_update),
        "volume_delete" => on(f, storage::volume_delete),
        "volume_snapshot" => on(f, storage::volume_snapshot),
        "volume_snapshot_delete" => on(f, storage::volume_snapshot_delete),
        "volume_restore" => on(f, storage::volume_restore),
        "volume_attach" => on(f, storage::volume_attach),
        "volume_detach" => on(f, storage::volume_detach),
        "volume_import" => on(f, storage::volume_import),
        "exports_list" => on(f, storage::exports_list),
        "exports_create" => on(f, storage::exports_create),
        "export_update" => on(f, storage::export_update),
        "export_delete" => on(f, storage::export_delete),
        "export_credentials_create" => on(f, storage::export_credentials_create),
        "export_credentials_revoke" => on(f, storage::export_credentials_revoke),
        "auth_self" => on(f, auth::auth_self),
        "auth_identities_list" => on(f, auth::identities_list),
        "auth_tokens_create" => on(f, auth::tokens_create),
        "auth_certificates_add" => on(f, auth::certificates_add),
        "auth_identity_delete" => on(f, auth::identity_delete),
        "audit_list" => on(f, auth::audit_list),
        "config_get" => on(f, auth::config_get),
        "config_set" => on(f, auth::config_set),
        "projects_list" => on(f, projects::list),
        "projects_create" => on(f, projects::create),
        "project_get" => on(f, projects::get),
        "project_update" => on(f, projects::update),
        "project_delete" => on(f, projects::delete),
        other => panic!("endpoint {other} has no handler in vesseld"),
    }
}

/// The daemon's router.
/// Answers 413 at once to a request that announces a body over `max` bytes, before reading
/// any of it (the extractors' own limit only trips once that much has arrived).
async fn refuse_oversized(req: Request, next: axum::middleware::Next, max: usize) -> Response {
    let announced = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(len) = announced.filter(|l| *l > max as u64) {
        return error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is {len} bytes; this endpoint takes at most {max}"),
        );
    }
    next.run(req).await
}

pub fn router(app: App) -> Router {
    let mut r = Router::new();
    for e in ENDPOINTS {
        // Each endpoint reads at most what its table entry allows; uploads stream.
        let gate = app.clone();
        let route = match e.max_body() {
            Some(n) => {
                handler_for(e)
                    .layer(DefaultBodyLimit::max(n))
                    .layer(axum::middleware::from_fn(move |req: Request, next| {
                        refuse_oversized(req, next, n)
                    }))
            }
            None => handler_for(e).layer(DefaultBodyLimit::disable()),
        }
        // Outermost: nobody reaches a handler, or learns its limits, unauthenticated.
        .layer(axum::middleware::from_fn(move |req: Request, next| {
            guard::guard(gate.clone(), e, req, next)
        }));
        r = r.route(e.path, route);
    }
    r.merge(ui::routes())
        .fallback(|| async {
            error_response(
                StatusCode::NOT_FOUND,
                format!("{NO_ROUTE}; see the OpenAPI document"),
            )
        })
        .method_not_allowed_fallback(|req: Request| async move {
            error_response(
                StatusCode::METHOD_NOT_ALLOWED,
                format!(
                    "{} is not allowed on {}; see the OpenAPI document",
                    req.method(),
                    req.uri().path()
                ),
            )
        })
        .layer(DefaultBodyLimit::max(vessel_api::endpoints::MAX_EMPTY_BODY))
        .with_state(app)
}

#[cfg(test)]
mod fuzz_tests;

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::body::Body;
    use tower::ServiceExt;

    use super::*;
    use crate::daemon::{Config, Daemon};
    use crate::store::{SqliteStore, Store};

    pub(super) fn router_in(dir: &std::path::Path) -> Router {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.join("db")).unwrap());
        let config = Config {
            root_dir: dir.to_path_buf(),
            run_dir: dir.join("run"),
            idmap_base: 1_000_000,
            libexec: dir.to_path_buf(),
            agent: dir.join("vessel-agent"),
            default_network: false,
        };
        Daemon::assemble(&config, store, vessel_cgroups::CgroupVersion::V1, None).router()
    }

    /// Every endpoint of the contract is mounted: none falls through to the router's 404 or
    /// gets 405, and a path outside the contract does.
    #[tokio::test]
    async fn every_endpoint_is_served() {
        let dir = std::env::temp_dir().join(format!("vessel-router-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let router = router_in(&dir);
        for e in ENDPOINTS {
            if e.id == "events" {
                continue; // a never-ending stream; mounted like the rest
            }
            let path = e
                .path
                .split('/')
                .map(|s| if s.starts_with('{') { "zz-test" } else { s })
                .collect::<Vec<_>>()
                .join("/");
            let req = axum::http::Request::builder()
                .method(e.method.as_str())
                .uri(&path)
                .header("content-type", "application/json")
                .extension(crate::auth::Peer::Local)
                // A subnet that does not parse: admin init answers 400 before it would make
                // a network in the test's namespace.
                .body(Body::from(if e.id == "admin_init" {
                    r#"{"subnet": "not-a-subnet"}"#
                } else {
                    "{}"
                }))
                .unwrap();
            let resp = router.clone().oneshot(req).await.unwrap();
            let status = resp.status();
            let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
                .await
                .unwrap();
            let body = String::from_utf8_lossy(&body);
            assert!(
                !body.contains(NO_ROUTE) && status != StatusCode::METHOD_NOT_ALLOWED,
                "{} {} is not mounted ({status}: {body})",
                e.method.as_str(),
                e.path
            );
        }
        let req = axum::http::Request::builder()
            .uri("/1.0/not-an-endpoint")
            .body(Body::empty())
            .unwrap();
        let resp = router.oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
