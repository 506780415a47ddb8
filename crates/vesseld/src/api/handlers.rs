//! Plain request/response handlers.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::StreamExt;
use vessel_api::{
    ImageAlias, ImageBuild, ImagePull, InstanceCreate, InstancePublish, RootDiskResize, StateChange,
};

use super::scope::ProjectScope;
use super::{ApiJson, App};
use crate::auth::Caller;
use crate::error::{Error, Result};
use crate::image::ImageService;

type Params = Query<HashMap<String, String>>;

fn flag(q: &HashMap<String, String>, name: &str) -> bool {
    matches!(q.get(name).map(String::as_str), Some("1" | "true" | "yes"))
}

use super::accepted;
pub(super) use crate::transfer::receive_body as receive_upload;

pub async fn server_info(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
) -> impl IntoResponse {
    let mut info = app.info.clone();
    // Where the daemon keeps its state is for the host's root only.
    if caller.kind != vessel_api::IdentityKind::Host {
        info.root_dir = String::new();
    }
    if let Some((accel, why)) = app.instances.vms.accel_summary() {
        info.host.vm_accelerator = Some(accel);
        info.host.vm_accelerator_reason = Some(why);
    }
    Json(info)
}

pub async fn instances_list(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    Extension(caller): Extension<Caller>,
    Query(q): Params,
    uri: axum::http::Uri,
) -> Result<Response> {
    let state = flag(&q, "recursion");
    let path = uri
        .path_and_query()
        .map_or("/1.0/instances", |p| p.as_str());
    // Every project's, for an admin: each named as its project knows it, with the project.
    if flag(&q, "all-projects") {
        if caller.role < vessel_api::Role::Admin {
            return Err(Error::forbidden(
                "all-projects=1 lists every project's instances: that needs the role admin",
            ));
        }
        let list: Vec<_> = app
            .instances
            .list(state)?
            .into_iter()
            .map(|i| {
                let project = crate::project::split(&i.name).0.to_string();
                super::scope::ProjectScope(project).instance(i)
            })
            .collect();
        let list = super::cluster::list_everywhere(&app, &caller, path, None, list).await?;
        return Ok(Json(list).into_response());
    }
    let list: Vec<_> = app
        .instances
        .list_where(state, |n| scope.own(n).is_some())?
        .into_iter()
        .map(|i| scope.instance(i))
        .collect();
    let list =
        super::cluster::list_everywhere(&app, &caller, path, Some(scope.name()), list).await?;
    Ok(Json(list).into_response())
}

/// Refuses what reaches past a project into the host unless the caller is an admin: a
/// privileged container (its root is the host's root) and one on the shared id range
/// (its ids are other containers' too). A project's operator manages its instances, not
/// the host. (`shared_ids`: a container that is not on an id range of its own.)
pub(super) fn admits_host_level(caller: &Caller, privileged: bool, shared_ids: bool) -> Result<()> {
    if caller.role >= vessel_api::Role::Admin {
        return Ok(());
    }
    if privileged {
        return Err(Error::forbidden(
            "a privileged container runs as the host's root: only an admin makes one (an \
             unprivileged container, the default, runs on host ids of its own)",
        ));
    }
    if shared_ids {
        return Err(Error::forbidden(
            "a container on the shared id range (--idmap-shared) shares host ids with other \
             containers: only an admin makes one (the default gives it a range of its own)",
        ));
    }
    Ok(())
}

pub async fn instances_create(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    Extension(caller): Extension<Caller>,
    Query(q): Params,
    ApiJson(mut req): ApiJson<InstanceCreate>,
) -> Result<Response> {
    crate::name::validate_name("instance", &req.name)?;
    admits_host_level(&caller, req.privileged, req.idmap_isolated == Some(false))?;
    // In a cluster it may be another member's to make.
    if let Some(r) = super::cluster::create_elsewhere(&app, &caller, &q, &scope, &mut req).await? {
        return Ok(r);
    }
    let name = req.name.clone();
    // The quota check and the insert it allows happen under the project's quota lock:
    // concurrent creates cannot both take the last place, and a profile read here cannot be
    // deleted before the instance that uses it exists.
    let quota = app.projects.quota(scope.name())?;
    let _held = app.projects.instances_quota_guard(scope.name()).await?;
    let (own, from_profiles) = super::profiles::for_create(&app, &scope, &mut req)?;
    // The default network is default's: an instance of another project is on the networks
    // it names, of its own project, or on none.
    if !scope.is_default() && req.networks.is_empty() {
        req.no_network = true;
    }
    req.networks = req
        .networks
        .iter()
        .map(|n| scope.q(n))
        .collect::<Result<_>>()?;
    req.name = scope.q(&req.name)?;
    // The image is named as the project names it; the instance keeps its fingerprint.
    req.image = images_of(&app, &scope)?.get(&req.image)?.fingerprint;
    let usage =
        crate::project::quota::usage_of(scope.name(), &app.instances.held_records().await?, 0);
    let usage = app
        .cluster
        .project_usage(scope.name(), usage, &quota)
        .await?;
    quota.admits(&usage, req.instance_type, &req.limits, None)?;
    if let Some(pool) = &req.storage {
        let sizes = super::storage::own_sizes(&app, &scope, pool, None).await?;
        quota.admits_in_pool(pool, &sizes, req.limits.disk)?;
    }
    // No name twice in a cluster: it is claimed before it is made.
    app.cluster
        .claim(scope.name(), &name, &req.limits, &req.config)
        .await?;
    let op = app.instances.create(req, own, from_profiles).map_err(|e| {
        app.cluster.unclaim(scope.name(), &name);
        scope.error(e)
    })?;
    Ok(accepted(scope.operation(op)))
}

pub async fn instance_get(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    Path(name): Path<String>,
) -> Result<Response> {
    let mut i = app
        .instances
        .get(&scope.q(&name)?)
        .map_err(|e| scope.error(e))?;
    // On a member of a cluster: where it lives (this member, which answers for it).
    i.location = app.cluster.me().await;
    Ok(Json(scope.instance(i)).into_response())
}

pub async fn instance_delete(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    Path(name): Path<String>,
    Query(q): Params,
) -> Result<Response> {
    let op = app
        .instances
        .delete(&scope.q(&name)?, flag(&q, "force"), flag(&q, "volumes"))
        .map_err(|e| scope.error(e))?;
    Ok(accepted(scope.operation(op)))
}

pub async fn instance_state_get(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    Path(name): Path<String>,
) -> Result<Response> {
    let state = app
        .instances
        .state(&scope.q(&name)?)
        .map_err(|e| scope.error(e))?;
    Ok(Json(state).into_response())
}

pub async fn instance_state_put(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    Path(name): Path<String>,
    ApiJson(change): ApiJson<StateChange>,
) -> Result<Response> {
    let op = app
        .instances
        .change_state(&scope.q(&name)?, change)
        .map_err(|e| scope.error(e))?;
    Ok(accepted(scope.operation(op)))
}

pub async fn instance_logs(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response> {
    let name = scope.q(&name)?;
    let tail = match q.get("tail") {
        None => None,
        Some(v) => Some(v.parse::<usize>().map_err(|_| {
            Error::invalid(format!(
                "tail={:?} is not a number of lines",
                crate::error::truncated(v, 32)
            ))
        })?),
    };
    let follow = flag(&q, "follow");
    let text = [(header::CONTENT_TYPE, "text/plain; charset=utf-8")];
    let log = app
        .instances
        .logs(&name, tail)
        .map_err(|e| scope.error(e))?;
    if !follow {
        return Ok((text, log).into_response());
    }
    // What is there (or its tail) first, then new output as it comes.
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
    tx.send(log)
        .await
        .map_err(|_| Error::internal("log stream closed"))?;
    app.instances.follow_logs(&name, tx)?;
    let stream = until_revoked(
        &app,
        caller,
        tokio_stream::wrappers::ReceiverStream::new(rx),
    )
    .map(|chunk| Ok::<_, Infallible>(Bytes::from(chunk)));
    Ok((text, Body::from_stream(stream)).into_response())
}

fn required<'a>(q: &'a HashMap<String, String>, name: &str) -> Result<&'a str> {
    q.get(name)
        .map(String::as_str)
        .ok_or_else(|| Error::invalid(format!("query parameter {name:?} is required")))
}

fn number(q: &HashMap<String, String>, name: &str, radix: u32, default: u32) -> Result<u32> {
    match q.get(name) {
        None => Ok(default),
        Some(v) => u32::from_str_radix(v, radix)
            .map_err(|_| Error::invalid(format!("query parameter {name}={v:?} is not a number"))),
    }
}

pub async fn file_get(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    Path(name): Path<String>,
    Query(q): Params,
) -> Result<Response> {
    use crate::instance::files::Fetched;
    let name = scope.q(&name)?;
    let path = required(&q, "path")?.to_string();
    let svc = app.instances.clone();
    let root = app
        .instances
        .open_root(&name)
        .await
        .map_err(|e| scope.error(e))?;
    let (fetched, root) = tokio::task::spawn_blocking(move || {
        let fetched = svc.file_get(&root, &name, &path);
        (fetched, root)
    })
    .await
    .map_err(|e| Error::internal(format!("file task: {e}")))?;
    let kind = header::HeaderName::from_static("x-vessel-type");
    let (file, info) = match fetched? {
        Fetched::Directory(entries) => {
            return Ok(([(kind, "directory")], Json(entries)).into_response());
        }
        Fetched::File(file, info) => (file, info),
    };
    // Streamed as read, never more than its size when opened (a running instance may grow
    // it meanwhile); the root stays mounted and locked until the last byte is sent.
    use std::io::Read;
    let data = crate::transfer::reader_body(file.take(info.size), root);
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, info.size.to_string()),
            (kind, "file".to_string()),
            (
                header::HeaderName::from_static("x-vessel-mode"),
                format!("{:04o}", info.mode),
            ),
            (
                header::HeaderName::from_static("x-vessel-uid"),
                info.uid.to_string(),
            ),
            (
                header::HeaderName::from_static("x-vessel-gid"),
                info.gid.to_string(),
            ),
        ],
        data,
    )
        .into_response())
}

pub async fn file_put(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    Path(name): Path<String>,
    Query(q): Params,
    body: Body,
) -> Result<Response> {
    let name = scope.q(&name)?;
    use crate::instance::files::Put;
    use vessel_api::FileKind;
    let path = required(&q, "path")?.to_string();
    let kind = match q.get("type").map(String::as_str) {
        None | Some("file") => FileKind::File,
        Some("directory") => FileKind::Directory,
        Some("symlink") => FileKind::Symlink,
        Some(other) => {
            return Err(Error::invalid(format!(
                "type={:?}: use file, directory or symlink",
                crate::error::truncated(other, 32)
            )))
        }
    };
    let default_mode = if kind == FileKind::Directory {
        0o755
    } else {
        0o644
    };
    let put = Put {
        kind,
        mode: number(&q, "mode", 8, default_mode)?,
        uid: number(&q, "uid", 10, 0)?,
        gid: number(&q, "gid", 10, 0)?,
        parents: flag(&q, "parents"),
    };
    let svc = app.instances.clone();
    let root = app
        .instances
        .open_root(&name)
        .await
        .map_err(|e| scope.error(e))?;
    // The file is written as its bytes arrive, on a blocking thread fed chunk by chunk.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let writer = tokio::task::spawn_blocking(move || {
        let mut data = crate::instance::files::ChannelReader::new(rx);
        svc.file_put(&root, &name, &path, &mut data, &put)
    });
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(std::io::Error::other);
        let failed = chunk.is_err();
        if tx.send(chunk).await.is_err() || failed {
            break;
        }
    }
    drop(tx);
    let info = writer
        .await
        .map_err(|e| Error::internal(format!("file task: {e}")))??;
    Ok(Json(info).into_response())
}

/// The images a project's requests read: its own, or default's for a project without
/// images of its own (`features.images=false`).
pub(super) fn images_of(app: &App, scope: &ProjectScope) -> Result<ImageService> {
    Ok(app
        .images
        .in_project(&app.projects.image_project(scope.name())?))
}

/// The images a project's requests change: its own; a project using default's images
/// changes none.
fn own_images(app: &App, scope: &ProjectScope) -> Result<ImageService> {
    let images = images_of(app, scope)?;
    if images.project() != scope.name() {
        return Err(Error::invalid(format!(
            "project {} uses the images of default ({}=false): images are built, pulled, \
             imported, named and deleted in default, or set {}=true while the project holds \
             no instance",
            scope.name(),
            vessel_api::FEATURES_IMAGES,
            vessel_api::FEATURES_IMAGES
        )));
    }
    Ok(images)
}

/// The project's images on this member; with `members=all`, in a cluster, every member's,
/// each with the members holding it (a member asking gets its own).
pub async fn images_list(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response> {
    let local = images_of(&app, &scope)?.list()?;
    let all = q.get("members").map(String::as_str) == Some("all");
    if !all || caller.role == vessel_api::Role::Member {
        return Ok(Json(local).into_response());
    }
    let Some(me) = app.cluster.me().await else {
        return Ok(Json(local).into_response());
    };
    let elsewhere = app.cluster.images_elsewhere(scope.name()).await;
    Ok(Json(crate::cluster::merge_images(&me, local, elsewhere)).into_response())
}

pub async fn images_build(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    ApiJson(req): ApiJson<ImageBuild>,
) -> Result<Response> {
    let images = own_images(&app, &scope)?;
    let op = app.ops.spawn(
        format!(
            "Building image {:?}",
            crate::image::ImageService::build_name(&req)
        ),
        vec![images.path(None)],
        true,
        move |op| async move { images.build(req, op).await.map(|_| ()) },
    );
    Ok(accepted(op))
}

pub async fn images_pull(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    Extension(caller): Extension<Caller>,
    ApiJson(req): ApiJson<ImagePull>,
) -> Result<Response> {
    let images = own_images(&app, &scope)?;
    // A project's operator reaches registries away from the host only: not its loopback
    // services, nor the cloud's metadata service (an admin pulls into a project from there).
    let reach_local = caller.role >= vessel_api::Role::Admin;
    // Nor the host's instances' networks (other projects', kept apart from it).
    let unreachable = if reach_local {
        Vec::new()
    } else {
        instance_networks(&app)?
    };
    let op = app.ops.spawn(
        format!("Pulling image {}", req.reference),
        vec![images.path(None)],
        true,
        move |op| async move {
            images
                .pull(req, (reach_local, unreachable), op)
                .await
                .map(|_| ())
        },
    );
    Ok(accepted(op))
}

/// Every network of the host's instances, IPv4 and IPv6, as (address, prefix length).
fn instance_networks(app: &App) -> Result<Vec<(std::net::IpAddr, u8)>> {
    let prefix = |text: &str| -> Option<(std::net::IpAddr, u8)> {
        let (addr, len) = text.split_once('/')?;
        Some((addr.parse().ok()?, len.parse().ok()?))
    };
    Ok(app
        .networks
        .list()?
        .iter()
        .flat_map(|n| [Some(n.subnet.as_str()), n.ipv6.as_deref()])
        .flatten()
        .filter_map(prefix)
        .collect())
}

/// Largest upload accepted for an import.
const MAX_IMPORT: u64 = 64 << 30;

pub async fn images_import(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    Extension(caller): Extension<Caller>,
    Query(q): Params,
    body: Body,
) -> Result<Response> {
    // A member moving an instance sends its image under the fingerprint the instance names.
    let fingerprint = match q.get("fingerprint") {
        None => None,
        Some(_) if caller.kind != vessel_api::IdentityKind::Member => {
            return Err(Error::forbidden(
                "fingerprint= is for the members of a cluster moving an instance",
            ))
        }
        Some(f) if f.len() == 64 && f.bytes().all(|b| b.is_ascii_hexdigit()) => Some(f.clone()),
        Some(f) => {
            return Err(Error::invalid(format!(
                "fingerprint={f:?}: not 64 hex digits"
            )))
        }
    };
    let images = own_images(&app, &scope)?;
    let staging = images.staging()?;
    let upload = staging.join("upload");
    let received = receive_upload(body, &upload, MAX_IMPORT, "archive").await;
    if let Err(e) = received {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e);
    }
    let alias = q.get("alias").cloned();
    let raw_is_vm = flag(&q, "vm");
    let op = app.ops.spawn(
        "Importing an image".into(),
        vec![images.path(None)],
        true,
        move |op| async move {
            images
                .import(staging, upload, alias, raw_is_vm, fingerprint, op)
                .await
                .map(|_| ())
        },
    );
    Ok(accepted(op))
}

pub async fn image_export(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    Path(image): Path<String>,
) -> Result<Response> {
    let images = images_of(&app, &scope)?;
    let staging = images.staging()?;
    let archive = match images.export(&image, &staging).await {
        Ok(a) => a,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    let file = std::fs::File::open(&archive);
    // The open file stays readable after its directory is gone.
    let _ = std::fs::remove_dir_all(&staging);
    let file = file.map_err(|e| Error::internal(format!("opening the archive: {e}")))?;
    Ok(tar_response(file, ()))
}

/// A tar archive in an open file as a response, sent off the async runtime; `keep` is held
/// until the last byte is sent (a scratch directory the file lies in, say).
pub(super) fn tar_response<K: Send + 'static>(file: std::fs::File, keep: K) -> Response {
    let (len, body) = crate::transfer::file_body(file, keep);
    (
        [
            (header::CONTENT_TYPE, "application/x-tar".to_string()),
            (header::CONTENT_LENGTH, len.to_string()),
        ],
        body,
    )
        .into_response()
}

pub async fn image_get(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    Path(image): Path<String>,
) -> Result<Response> {
    Ok(Json(images_of(&app, &scope)?.get(&image)?).into_response())
}

pub async fn image_delete(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    Path(image): Path<String>,
) -> Result<Response> {
    let images = own_images(&app, &scope)?;
    // The instances that hold this project's images: its own, and for default also those
    // of the projects that use default's images.
    let projects = app.projects.clone();
    let own = images.project().to_string();
    let in_project = move |instance: &str| {
        let p = crate::project::split(instance).0;
        projects
            .image_project(p)
            .map(|ip| ip == own)
            .unwrap_or(true)
    };
    Ok(Json(images.delete(&image, in_project).await?).into_response())
}

pub async fn image_alias_add(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    Path(image): Path<String>,
    ApiJson(req): ApiJson<ImageAlias>,
) -> Result<Response> {
    Ok(Json(own_images(&app, &scope)?.alias_add(&image, &req.alias)?).into_response())
}

pub async fn image_alias_delete(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    Path(alias): Path<String>,
) -> Result<Response> {
    Ok(Json(own_images(&app, &scope)?.alias_delete(&alias)?).into_response())
}

pub async fn instance_publish(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<InstancePublish>,
) -> Result<Response> {
    let images = own_images(&app, &scope)?;
    let op = app
        .instances
        .publish(&scope.q(&name)?, req, images)
        .map_err(|e| scope.error(e))?;
    Ok(accepted(scope.operation(op)))
}

pub async fn instance_root_disk(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<RootDiskResize>,
) -> Result<Response> {
    let name = scope.q(&name)?;
    // Checked, and where a limit counts it held until the new size is recorded: two resizes
    // at once count each other.
    let quota = app.projects.quota(scope.name())?;
    let held = app.projects.instances_quota_guard(scope.name()).await?;
    let all = app.instances.held_records().await?;
    let mut limited = false;
    if let Some(inst) = all.iter().find(|i| i.name == name) {
        limited = quota.disk.is_some()
            || inst
                .storage
                .as_ref()
                .is_some_and(|p| quota.disk_pool.contains_key(p));
        let after = vessel_api::Limits {
            disk: Some(req.size),
            ..inst.limits.clone()
        };
        let mut growth = super::profiles::Growth::default();
        super::profiles::admit_growth(&app, &scope, &quota, &all, inst, &after, &mut growth)
            .await?;
    }
    let op = app
        .instances
        .root_disk_resize(&name, req.size)
        .map_err(|e| scope.error(e))?;
    if limited {
        super::hold_until_done(&app, &op.id, Box::new(held));
    }
    Ok(accepted(scope.operation(op)))
}

pub async fn operations_list(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
) -> Result<Response> {
    let ops: Vec<_> = app
        .ops
        .list()?
        .into_iter()
        .filter(|o| scope.owns_operation(o))
        .map(|o| scope.operation(o))
        .collect();
    Ok(Json(ops).into_response())
}

/// The operation `id` if it is `scope`'s; another project's answers as an unknown id.
fn own_operation(app: &App, scope: &ProjectScope, id: &str) -> Result<()> {
    let op = app.ops.get(id)?;
    if scope.owns_operation(&op) {
        Ok(())
    } else {
        Err(Error::not_found(format!("operation {id} not found")))
    }
}

pub async fn operation_get(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    Path(id): Path<String>,
) -> Result<Response> {
    own_operation(&app, &scope, &id)?;
    Ok(Json(scope.operation(app.ops.get(&id)?)).into_response())
}

pub async fn operation_cancel(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    Path(id): Path<String>,
) -> Result<Response> {
    own_operation(&app, &scope, &id)?;
    Ok(Json(scope.operation(app.ops.cancel(&id)?)).into_response())
}

pub async fn operation_wait(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    Path(id): Path<String>,
    Query(q): Params,
) -> Result<Response> {
    own_operation(&app, &scope, &id)?;
    let timeout = match q.get("timeout") {
        None => None,
        Some(t) => Some(Duration::from_secs_f64(
            t.parse::<f64>()
                .ok()
                .filter(|t| t.is_finite() && *t >= 0.0 && *t < 1e9)
                .ok_or_else(|| {
                    Error::invalid(format!("timeout={t:?} is not a number of seconds"))
                })?,
        )),
    };
    Ok(Json(scope.operation(app.ops.wait(&id, timeout).await?)).into_response())
}

pub async fn events(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    Extension(scope): Extension<ProjectScope>,
) -> Response {
    let lines = BroadcastStream::new(app.events.subscribe()).filter_map(move |ev| {
        let ev = scope.event(ev.ok()?)?;
        let mut line = serde_json::to_vec(&ev).ok()?;
        line.push(b'\n');
        Some(Ok::<_, Infallible>(Bytes::from(line)))
    });
    let stream = until_revoked(&app, caller, lines);
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response()
}

/// `items` as a stream that ends when `caller`'s identity is revoked or expires (or when
/// `items` ends, or its reader goes).
fn until_revoked<T: Send + 'static>(
    app: &App,
    caller: Caller,
    items: impl tokio_stream::Stream<Item = T> + Send + 'static,
) -> tokio_stream::wrappers::ReceiverStream<T> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let auth = app.auth.clone();
    tokio::spawn(async move {
        tokio::pin!(items);
        let until = auth.until_invalid(caller);
        tokio::pin!(until);
        loop {
            tokio::select! {
                _ = &mut until => break,
                item = items.next() => match item {
                    Some(i) => if tx.send(i).await.is_err() { break },
                    None => break,
                },
                _ = tx.closed() => break,
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
