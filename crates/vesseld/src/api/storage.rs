//! Storage routes: pools, volumes, snapshots, attachments, exports. Driver work blocks, so
//! it runs on the blocking pool; long work runs as operations.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use vessel_api::{
    ExportCreate, PoolCreate, PoolRepair, SnapshotCreate, StorageVolume, VolumeAttach,
    VolumeCreate, VolumeRestore, VolumeUpdate,
};

use super::scope::ProjectScope;
use super::{ApiJson, App};
use crate::error::{Error, Result};
use crate::storage::StorageService;

/// Runs blocking storage work off the async runtime.
async fn blocking<T: Send + 'static>(
    app: &App,
    f: impl FnOnce(StorageService) -> Result<T> + Send + 'static,
) -> Result<T> {
    let s = app.storage.clone();
    tokio::task::spawn_blocking(move || f(s))
        .await
        .map_err(|e| Error::internal(format!("storage task: {e}")))?
}

fn json<T: serde::Serialize>(v: T) -> Response {
    Json(v).into_response()
}

use super::accepted;

pub async fn pools_list(State(app): State<App>) -> Result<Response> {
    Ok(json(blocking(&app, |s| s.pools_list()).await?))
}

pub async fn pools_create(
    State(app): State<App>,
    ApiJson(req): ApiJson<PoolCreate>,
) -> Result<Response> {
    let check = req.clone();
    blocking(&app, move |s| s.pool_check(&check)).await?;
    let (s, cluster) = (app.storage.clone(), app.cluster.clone());
    let op = app.ops.spawn(
        format!("Creating storage pool {}", req.name),
        vec![format!("/1.0/storage/pools/{}", req.name)],
        false,
        move |op| async move {
            // A far copy kept here, made a pool: the cluster swaps the roles first.
            if let Some(name) = req.adopt.clone() {
                op.progress(Some(5), &format!("adopting far copy {name}"));
                let (file, from) = cluster.replica_adopt(&name).await?;
                return tokio::task::spawn_blocking(move || s.pool_adopt(req, file, &from, &op))
                    .await
                    .map_err(|e| Error::internal(format!("storage task: {e}")))?;
            }
            // A replicated pool: its far copy is made on the other member first.
            let far = match req.replica.clone() {
                Some(member) => {
                    op.progress(Some(5), &format!("making the far copy on {member}"));
                    let size = req.size.unwrap_or(0);
                    Some(
                        cluster
                            .replica_prepare(&req.name, &member, size, 1, false)
                            .await?,
                    )
                }
                None => None,
            };
            let forget = far.as_ref().map(|(r, _)| r.clone());
            let made = tokio::task::spawn_blocking(move || s.pool_create(req, far, &op))
                .await
                .map_err(|e| Error::internal(format!("storage task: {e}")))?;
            if made.is_err() {
                if let Some(r) = forget {
                    cluster.replica_forget(&r.member, &r.name).await;
                }
            }
            made
        },
    );
    Ok(accepted(op))
}

pub async fn pool_get(State(app): State<App>, Path(pool): Path<String>) -> Result<Response> {
    Ok(json(blocking(&app, move |s| s.pool_get(&pool)).await?))
}

pub async fn pool_delete(State(app): State<App>, Path(pool): Path<String>) -> Result<Response> {
    let p = pool.clone();
    let far = blocking(&app, move |s| Ok(s.pool_replica(&p))).await?;
    let view = blocking(&app, move |s| s.pool_delete(&pool)).await?;
    if let Some(r) = far {
        app.cluster.replica_forget(&r.member, &r.name).await;
    }
    Ok(json(view))
}

pub async fn pool_status(State(app): State<App>, Path(pool): Path<String>) -> Result<Response> {
    Ok(json(blocking(&app, move |s| s.pool_status(&pool)).await?))
}

pub async fn pool_repair(
    State(app): State<App>,
    Path(pool): Path<String>,
    ApiJson(req): ApiJson<PoolRepair>,
) -> Result<Response> {
    let (p, r) = (pool.clone(), req.clone());
    blocking(&app, move |s| s.repair_check(&p, &r)).await?;
    let (s, cluster) = (app.storage.clone(), app.cluster.clone());
    let what = match req.action.as_str() {
        "scrub" => format!("Scrubbing storage pool {pool}"),
        "replace" => format!("Rebuilding a member of storage pool {pool}"),
        _ => format!("Failing a member of storage pool {pool}"),
    };
    let op = app.ops.spawn(
        what,
        vec![format!("/1.0/storage/pools/{pool}")],
        false,
        move |op| async move {
            let Some(member) = req.replica.clone() else {
                return tokio::task::spawn_blocking(move || s.repair(&pool, req, &op))
                    .await
                    .map_err(|e| Error::internal(format!("storage task: {e}")))?;
            };
            // A new far copy: made on its member (recorded out of date until it is
            // rebuilt), then rebuilt onto from here.
            op.progress(Some(5), &format!("making the far copy on {member}"));
            let (p, st) = (pool.clone(), s.clone());
            let size = tokio::task::spawn_blocking(move || st.far_copy_size(&p))
                .await
                .map_err(|e| Error::internal(format!("storage task: {e}")))??;
            let slot = req.member.unwrap_or(0);
            let (far, uri) = cluster
                .replica_prepare(&pool, &member, size, slot, true)
                .await?;
            let forget = far.clone();
            let (s2, p2) = (s.clone(), pool.clone());
            let made = tokio::task::spawn_blocking(move || s.repair_far(&pool, req, far, uri, &op))
                .await
                .map_err(|e| Error::internal(format!("storage task: {e}")))?;
            // Not placed in the pool: dropped. Placed: kept, and rebuilt whole when it
            // answers (the pool's loop).
            if made.is_err() && s2.pool_replica(&p2).is_none() {
                cluster.replica_forget(&forget.member, &forget.name).await;
            }
            made
        },
    );
    Ok(accepted(op))
}

pub async fn volumes_list(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    Path(pool): Path<String>,
) -> Result<Response> {
    let all = blocking(&app, move |s| s.volumes_list(&pool))
        .await
        .map_err(|e| scope.error(e))?;
    let own: Vec<_> = all
        .into_iter()
        .filter(|v| scope.own(&v.name).is_some())
        .map(|v| scope.volume(v))
        .collect();
    Ok(json(own))
}

pub async fn volumes_create(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    Path(pool): Path<String>,
    ApiJson(mut req): ApiJson<VolumeCreate>,
) -> Result<Response> {
    crate::name::validate_name("volume", &req.name)?;
    req.name = scope.q(&req.name)?;
    req.source = req.source.map(|s| scope.q(&s)).transpose()?;
    let (p, r) = (pool.clone(), req.clone());
    blocking(&app, move |s| s.volume_check(&p, &r))
        .await
        .map_err(|e| scope.error(e))?;
    // limits.disk.pool.POOL: checked, and held until the volume exists.
    let quota = app.projects.quota(scope.name())?;
    let held = app.projects.quota_guard(scope.name()).await;
    let sizes = own_sizes(&app, &scope, &pool, None).await?;
    quota.admits_in_pool(&pool, &sizes, req.size)?;
    let s = app.storage.clone();
    let op = app.ops.spawn(
        format!("Creating volume {}/{}", pool, req.name),
        vec![format!("/1.0/storage/pools/{pool}/volumes/{}", req.name)],
        false,
        move |op| async move {
            let _held = held;
            op.progress(Some(10), "creating");
            tokio::task::spawn_blocking(move || s.volume_create(&pool, req).map(|_| ()))
                .await
                .map_err(|e| Error::internal(format!("storage task: {e}")))?
        },
    );
    Ok(accepted(scope.operation(op)))
}

/// The sizes of `scope`'s volumes in `pool`, but for volume `except` (qualified; one about
/// to change size), and their snapshots' (each at its volume's size when taken: what it
/// may pin; a `dir` pool's snapshot is a whole copy, a `btrfs` or `raid` one keeps what is
/// overwritten).
pub(super) async fn own_sizes(
    app: &App,
    scope: &ProjectScope,
    pool: &str,
    except: Option<&str>,
) -> Result<Vec<Option<u64>>> {
    let p = pool.to_string();
    let all = blocking(app, move |s| s.volumes_list(&p)).await?;
    let mut sizes: Vec<Option<u64>> = all
        .iter()
        .filter(|v| scope.own(&v.name).is_some() && Some(v.name.as_str()) != except)
        .map(|v| Some(v.size_bytes))
        .collect();
    sizes.extend(
        all.iter()
            .filter(|v| scope.own(&v.name).is_some())
            .map(|v| Some(v.snapshot_bytes)),
    );
    // Launches on this pool whose root volume their operation has not made yet count with
    // the size they were admitted with: the quota lock is held only up to their instance's
    // row, so a second launch must see the first's disk before it exists.
    for i in app.instances.records()? {
        let root = crate::storage::root_volume(&i.name);
        if scope.own(&i.name).is_some()
            && Some(root.as_str()) != except
            && i.storage.as_deref() == Some(pool)
            && !all.iter().any(|v| v.name == root)
        {
            sizes.push(Some(i.limits.disk.unwrap_or(0)));
        }
    }
    Ok(sizes)
}

/// Runs storage work on one of `scope`'s volumes and shows the volume as its clients see it.
async fn on_volume(
    app: &App,
    scope: &ProjectScope,
    f: impl FnOnce(StorageService) -> Result<StorageVolume> + Send + 'static,
) -> Result<Response> {
    let v = blocking(app, f).await.map_err(|e| scope.error(e))?;
    Ok(json(scope.volume(v)))
}

pub async fn volume_get(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    Path((pool, name)): Path<(String, String)>,
) -> Result<Response> {
    let name = scope.q(&name)?;
    on_volume(&app, &scope, move |s| s.volume_get(&pool, &name)).await
}

pub async fn volume_update(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    Path((pool, name)): Path<(String, String)>,
    ApiJson(req): ApiJson<VolumeUpdate>,
) -> Result<Response> {
    let name = scope.q(&name)?;
    let size = req.size;
    // Growth is checked against limits.disk.pool.POOL, under the project's quota lock.
    let quota = app.projects.quota(scope.name())?;
    let held = app.projects.quota_guard(scope.name()).await;
    if quota.disk_pool.contains_key(&pool) {
        let (p, n) = (pool.clone(), name.clone());
        let v = blocking(&app, move |s| s.volume_get(&p, &n))
            .await
            .map_err(|e| scope.error(e))?;
        if size > v.size_bytes {
            let sizes = own_sizes(&app, &scope, &pool, Some(&name)).await?;
            quota.admits_in_pool(&pool, &sizes, Some(size))?;
        }
    }
    let (p, n) = (pool.clone(), name.clone());
    let v = blocking(&app, move |s| s.volume_update(&p, &n, req))
        .await
        .map_err(|e| scope.error(e))?;
    drop(held);
    // A running VM's disk on it grows under the guest, through the VM's owner.
    let file = blocking(&app, move |s| s.volume_file(&pool, &name)).await?;
    if let Some(file) = file {
        for a in &v.attached_to {
            app.instances
                .disk_grown(&a.instance, &file, size)
                .await
                .map_err(|e| scope.error(e))?;
        }
    }
    Ok(json(scope.volume(v)))
}

pub async fn volume_delete(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    Path((pool, name)): Path<(String, String)>,
) -> Result<Response> {
    let name = scope.q(&name)?;
    on_volume(&app, &scope, move |s| s.volume_delete(&pool, &name)).await
}

pub async fn volume_snapshot(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    Path((pool, name)): Path<(String, String)>,
    ApiJson(req): ApiJson<SnapshotCreate>,
) -> Result<Response> {
    let name = scope.q(&name)?;
    let quota = app.projects.quota(scope.name())?;
    let _held = app.projects.quota_guard(scope.name()).await;
    let (p, n) = (pool.clone(), name.clone());
    let v = blocking(&app, move |s| s.volume_get(&p, &n))
        .await
        .map_err(|e| scope.error(e))?;
    // limits.disk.pool.POOL counts a snapshot as its volume's size.
    let sizes = own_sizes(&app, &scope, &pool, None).await?;
    quota.admits_in_pool(&pool, &sizes, Some(v.size_bytes))?;
    if let Some(limit) = quota.snapshots {
        if v.snapshots.len() as u64 + 1 > limit {
            return Err(Error::conflict(format!(
                "the project's limits.snapshots is {limit} and this volume has {}: delete \
                 one, or ask an admin to raise the limit",
                v.snapshots.len()
            )));
        }
    }
    on_volume(&app, &scope, move |s| s.snapshot_create(&pool, &name, req)).await
}

pub async fn volume_snapshot_delete(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    Path((pool, name, snap)): Path<(String, String, String)>,
) -> Result<Response> {
    let name = scope.q(&name)?;
    on_volume(&app, &scope, move |s| {
        s.snapshot_delete(&pool, &name, &snap)
    })
    .await
}

pub async fn volume_restore(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    Path((pool, name)): Path<(String, String)>,
    ApiJson(req): ApiJson<VolumeRestore>,
) -> Result<Response> {
    let name = scope.q(&name)?;
    on_volume(&app, &scope, move |s| s.volume_restore(&pool, &name, req)).await
}

pub async fn volume_attach(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    Path((pool, name)): Path<(String, String)>,
    ApiJson(mut req): ApiJson<VolumeAttach>,
) -> Result<Response> {
    req.instance = scope.q(&req.instance)?;
    let v = app
        .instances
        .volume_attach(pool, scope.q(&name)?, req)
        .await
        .map_err(|e| scope.error(e))?;
    Ok(json(scope.volume(v)))
}

pub async fn volume_detach(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    Path((pool, name)): Path<(String, String)>,
    ApiJson(req): ApiJson<VolumeAttach>,
) -> Result<Response> {
    let v = app
        .instances
        .volume_detach(pool, scope.q(&name)?, scope.q(&req.instance)?)
        .await
        .map_err(|e| scope.error(e))?;
    Ok(json(scope.volume(v)))
}

/// Largest disk image a volume import accepts.
const MAX_IMAGE: u64 = 64 << 30;

pub async fn volume_import(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    Path((pool, name)): Path<(String, String)>,
    body: Body,
) -> Result<Response> {
    let name = scope.q(&name)?;
    // Fail before the upload when the volume is not there; take no more than an image of
    // its size can be (a qcow2's tables are a small fraction of its data).
    let (p, n) = (pool.clone(), name.clone());
    let volume = blocking(&app, move |s| s.volume_get(&p, &n))
        .await
        .map_err(|e| scope.error(e))?;
    let most = MAX_IMAGE.min(
        volume
            .size_bytes
            .saturating_add(volume.size_bytes / 16)
            .saturating_add(16 << 20),
    );
    let staging = app.images.staging()?;
    let upload = staging.join("disk");
    let received = super::handlers::receive_upload(body, &upload, most, "disk image").await;
    if let Err(e) = received {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e);
    }
    let s = app.storage.clone();
    let op = app.ops.spawn(
        format!("Importing a disk image into {pool}/{name}"),
        vec![format!("/1.0/storage/pools/{pool}/volumes/{name}")],
        false,
        move |op| async move {
            let r =
                tokio::task::spawn_blocking(move || s.volume_import(&pool, &name, &upload, &op))
                    .await
                    .map_err(|e| Error::internal(format!("storage task: {e}")));
            let _ = std::fs::remove_dir_all(&staging);
            r?
        },
    );
    Ok(accepted(scope.operation(op)))
}

pub async fn exports_list(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
) -> Result<Response> {
    let list: Vec<_> = blocking(&app, |s| s.exports_list())
        .await?
        .into_iter()
        .filter(|e| scope.own(&e.name).is_some())
        .map(|e| scope.export(e))
        .collect();
    Ok(json(list))
}

pub async fn exports_create(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    Extension(caller): Extension<crate::auth::Caller>,
    ApiJson(mut req): ApiJson<ExportCreate>,
) -> Result<Response> {
    crate::name::validate_name("export", &req.name)?;
    // A unix socket is a path of the host's, made (and one left there replaced) by the
    // daemon as root: an admin's to choose.
    if req.listen.as_deref().is_some_and(|l| l.starts_with('/'))
        && caller.role < vessel_api::Role::Admin
    {
        return Err(Error::forbidden(
            "an export on a unix socket is made at a host path by the daemon: only an admin \
             chooses one; listen on TCP (--listen HOST:PORT)",
        ));
    }
    // Ports below 1024 are where the host's own services listen (and clients trust that
    // only root answers there): an admin's to give to an export.
    if let Some(port) = req
        .listen
        .as_deref()
        .and_then(|l| l.parse::<std::net::SocketAddr>().ok())
        .map(|a| a.port())
        .filter(|p| *p < 1024)
    {
        if caller.role < vessel_api::Role::Admin {
            return Err(Error::forbidden(format!(
                "port {port} is below 1024, where the host's own services listen: only an \
                 admin exports on one; choose a port from 1024 up"
            )));
        }
    }
    // Where it listens, as for a published port: not on the host's loopback (but for the
    // default listener of the default project's exports) nor on another project's
    // gateway.
    if let Some(addr) = req
        .listen
        .as_deref()
        .and_then(|l| l.parse::<std::net::SocketAddr>().ok())
    {
        let default = crate::storage::servers::default_listen(req.protocol);
        let admin = caller.role >= vessel_api::Role::Admin
            || (scope.is_default() && addr.to_string() == default);
        // Every address of the host is its loopback and every project's gateway too.
        if !admin && addr.ip().to_canonical().is_unspecified() {
            return Err(Error::forbidden(format!(
                "{}: an export on every address of the host listens on its loopback and on \
                 other projects' gateways too; only an admin listens there (listen on your \
                 network's gateway or another address of the host)",
                addr.ip()
            )));
        }
        let (project, networks) = (scope.name().to_string(), app.networks.clone());
        blocking(&app, move |_| {
            networks.check_listen_address(&project, addr.ip(), admin)
        })
        .await?;
    }
    if !scope.is_default() {
        // NBD and NFS carry no identity: a project's exports are served on listeners of
        // their own (on TCP: a host path is not a tenant's to choose), which no other
        // project's exports share.
        match req.listen.as_deref() {
            None => {
                return Err(Error::invalid(format!(
                    "exports of project {} listen on an address of their own: give --listen \
                     HOST:PORT",
                    scope.name()
                )))
            }
            Some(l) if l.starts_with('/') => {
                return Err(Error::invalid(format!(
                    "exports of project {} listen on TCP (HOST:PORT), not on a unix socket",
                    scope.name()
                )))
            }
            Some(_) => {}
        }
    }
    req.name = scope.q(&req.name)?;
    req.volume = scope.q(&req.volume)?;
    let e = blocking(&app, move |s| s.export_create(req))
        .await
        .map_err(|e| scope.error(e))?;
    Ok((StatusCode::CREATED, Json(scope.export(e))).into_response())
}

pub async fn export_update(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<vessel_api::ExportUpdate>,
) -> Result<Response> {
    crate::name::validate_name("export", &name)?;
    let name = scope.q(&name)?;
    let e = blocking(&app, move |s| s.export_update(&name, req))
        .await
        .map_err(|e| scope.error(e))?;
    Ok(json(scope.export(e)))
}

pub async fn export_delete(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    Path(name): Path<String>,
) -> Result<Response> {
    crate::name::validate_name("export", &name)?;
    let name = scope.q(&name)?;
    let e = blocking(&app, move |s| s.export_delete(&name))
        .await
        .map_err(|e| scope.error(e))?;
    Ok(json(scope.export(e)))
}

pub async fn export_credentials_create(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    Path(name): Path<String>,
) -> Result<Response> {
    crate::name::validate_name("export", &name)?;
    let name = scope.q(&name)?;
    let mut c = blocking(&app, move |s| s.export_credentials_create(&name))
        .await
        .map_err(|e| scope.error(e))?;
    c.export = scope.own(&c.export).unwrap_or(c.export);
    Ok((StatusCode::CREATED, Json(c)).into_response())
}

pub async fn export_credentials_revoke(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    Path(name): Path<String>,
) -> Result<Response> {
    crate::name::validate_name("export", &name)?;
    let name = scope.q(&name)?;
    let e = blocking(&app, move |s| s.export_credentials_revoke(&name))
        .await
        .map_err(|e| scope.error(e))?;
    Ok(json(scope.export(e)))
}
