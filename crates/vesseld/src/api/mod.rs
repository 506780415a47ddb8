//! HTTP layer: parses requests, hands them to the services, renders their answers. Routes are
//! mounted from `vessel_api::endpoints::ENDPOINTS`, so the daemon serves exactly the paths
//! the OpenAPI document names. No syscalls and no store access here.

mod handlers;
mod upgrade;

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
    /// Operations.
    pub ops: Operations,
    /// Event bus.
    pub events: Events,
    /// Static part of `GET /1.0`.
    pub info: ServerInfo,
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
        };
        error_response(status, self.message)
    }
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
            Err(e) => Err(Error::invalid(format!("invalid request body: {}", e.body_text()))),
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
        "instances_list" => on(f, h::instances_list),
        "instances_create" => on(f, h::instances_create),
        "instance_get" => on(f, h::instance_get),
        "instance_delete" => on(f, h::instance_delete),
        "instance_state_get" => on(f, h::instance_state_get),
        "instance_state_put" => on(f, h::instance_state_put),
        "instance_exec" => on(f, upgrade::exec),
        "instance_console" => on(f, upgrade::console),
        "instance_logs" => on(f, h::instance_logs),
        "instance_file_get" => on(f, h::file_get),
        "instance_file_put" => on(f, h::file_put),
        "images_list" => on(f, h::images_list),
        "images_build" => on(f, h::images_build),
        "image_get" => on(f, h::image_get),
        "image_delete" => on(f, h::image_delete),
        "operations_list" => on(f, h::operations_list),
        "operation_get" => on(f, h::operation_get),
        "operation_cancel" => on(f, h::operation_cancel),
        "operation_wait" => on(f, h::operation_wait),
        "events" => on(f, h::events),
        other => panic!("endpoint {other} has no handler in vesseld"),
    }
}

/// The daemon's router.
pub fn router(app: App) -> Router {
    let mut r = Router::new();
    for e in ENDPOINTS {
        r = r.route(e.path, handler_for(e));
    }
    r.fallback(|| async { error_response(StatusCode::NOT_FOUND, format!("{NO_ROUTE}; see the OpenAPI document")) })
        .layer(DefaultBodyLimit::max(crate::instance::files::MAX_FILE as usize))
        .with_state(app)
}
