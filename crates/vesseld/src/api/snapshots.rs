//! Instance snapshots and copies: each request goes to the instance's owner (under its
//! lock); a copy is checked against the project's limits as a create is.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use vessel_api::{
    InstanceCopy, InstanceMove, InstanceRename, InstanceSnapshotCreate, InstanceSnapshotRestore,
};

use super::scope::ProjectScope;
use super::{ApiJson, App};
use crate::error::{Error, Result};

use super::accepted;

pub async fn list(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    Path(name): Path<String>,
) -> Result<Response> {
    let list = app
        .instances
        .snapshots(&scope.q(&name)?)
        .map_err(|e| scope.error(e))?;
    Ok(Json(list).into_response())
}

pub async fn create(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<InstanceSnapshotCreate>,
) -> Result<Response> {
    let name = scope.q(&name)?;
    let held = admitted(&app, &scope, &name).await?;
    let (op, _) = app
        .instances
        .snapshot_create(&name, req, false)
        .map_err(|e| scope.error(e))?;
    if let Some(held) = held {
        super::hold_until_done(&app, &op.id, held);
    }
    Ok(accepted(scope.operation(op)))
}

/// Whether the project's `limits.disk.pool.POOL` admit a snapshot of instance `name`
/// (qualified), which counts a snapshot of each of its volumes in POOL (its root volume
/// too) at the volume's size; the quota lock, to be held until the snapshot is made, if
/// the project has such limits. Asked for snapshots taken by the API and by the schedule.
pub(crate) async fn admitted(
    app: &App,
    scope: &ProjectScope,
    name: &str,
) -> Result<Option<Box<dyn Send>>> {
    let quota = app.projects.quota(scope.name())?;
    if quota.disk_pool.is_empty() {
        return Ok(None);
    }
    let held = app.projects.quota_guard(scope.name()).await;
    for (pool, adding) in snapshot_adds(app, name)? {
        if quota.disk_pool.contains_key(&pool) {
            let sizes = super::storage::own_sizes(app, scope, &pool, None).await?;
            quota.admits_in_pool(&pool, &sizes, Some(adding))?;
        }
    }
    Ok(Some(Box::new(held)))
}

/// The bytes a snapshot of instance `name` adds in each pool: its volumes' sizes there
/// (attached ones and its root volume).
fn snapshot_adds(app: &App, name: &str) -> Result<std::collections::BTreeMap<String, u64>> {
    let mut volumes: Vec<(String, String)> = app
        .storage
        .volumes_by_instance()?
        .remove(name)
        .unwrap_or_default()
        .into_iter()
        .map(|v| (v.pool, v.volume))
        .collect();
    // (An instance not there is answered by the snapshot itself.)
    if let Some(pool) = app.instances.get_stored(name).ok().and_then(|i| i.storage) {
        let root = crate::storage::root_volume(name);
        if !volumes.iter().any(|(p, v)| *p == pool && *v == root) {
            volumes.push((pool, root));
        }
    }
    let mut adds = std::collections::BTreeMap::new();
    for (pool, volume) in volumes {
        // A root volume not made yet (a launch under way) adds nothing yet.
        if let Ok(v) = app.storage.volume_get(&pool, &volume) {
            *adds.entry(pool).or_insert(0) += v.size_bytes;
        }
    }
    Ok(adds)
}

pub async fn get(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    Path((name, snap)): Path<(String, String)>,
) -> Result<Response> {
    let s = app
        .instances
        .snapshot(&scope.q(&name)?, &snap)
        .map_err(|e| scope.error(e))?;
    Ok(Json(s).into_response())
}

pub async fn delete(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    Path((name, snap)): Path<(String, String)>,
) -> Result<Response> {
    let op = app
        .instances
        .snapshot_delete(&scope.q(&name)?, &snap)
        .map_err(|e| scope.error(e))?;
    Ok(accepted(scope.operation(op)))
}

pub async fn restore(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    Path((name, snap)): Path<(String, String)>,
    ApiJson(req): ApiJson<InstanceSnapshotRestore>,
) -> Result<Response> {
    let op = app
        .instances
        .snapshot_restore(&scope.q(&name)?, &snap, req.force)
        .map_err(|e| scope.error(e))?;
    Ok(accepted(scope.operation(op)))
}

pub async fn rename(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<InstanceRename>,
) -> Result<Response> {
    crate::name::validate_name("instance", &req.name)?;
    let from = app
        .instances
        .get_stored(&scope.q(&name)?)
        .map_err(|e| scope.error(e))?;
    // No name twice in a cluster: the new one is claimed first.
    app.cluster
        .claim(scope.name(), &req.name, &from.limits, &from.config)
        .await?;
    let op = app
        .instances
        .rename(&scope.q(&name)?, &scope.q(&req.name)?)
        .map_err(|e| {
            app.cluster.unclaim(scope.name(), &req.name);
            scope.error(e)
        })?;
    Ok(accepted(scope.operation(op)))
}

pub async fn move_to_pool(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<InstanceMove>,
) -> Result<Response> {
    let name = scope.q(&name)?;
    // The root disk counts against limits.disk.pool.POOL there, checked under the project's
    // quota lock, held until the move is done (the disk is counted in the pool then).
    let quota = app.projects.quota(scope.name())?;
    let held = app.projects.quota_guard(scope.name()).await;
    let limited = quota.disk_pool.contains_key(&req.pool);
    if limited {
        let (svc, n) = (app.instances.clone(), name.clone());
        let size = tokio::task::spawn_blocking(move || svc.move_size(&n))
            .await
            .map_err(|e| Error::internal(format!("move task: {e}")))?
            .map_err(|e| scope.error(e))?;
        let sizes = super::storage::own_sizes(&app, &scope, &req.pool, None).await?;
        quota.admits_in_pool(&req.pool, &sizes, size)?;
    }
    let op = app
        .instances
        .move_to_pool(&name, &req.pool)
        .map_err(|e| scope.error(e))?;
    if limited {
        super::hold_until_done(&app, &op.id, Box::new(held));
    }
    Ok(accepted(scope.operation(op)))
}

pub async fn copy(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<InstanceCopy>,
) -> Result<Response> {
    crate::name::validate_name("instance", &req.name)?;
    let (src, dst) = (scope.q(&name)?, scope.q(&req.name)?);
    if let Some(s) = &req.snapshot {
        crate::name::validate_name("snapshot", s)?;
    }
    // The copy counts against the project's limits as a new instance, checked and held up
    // to its row.
    let quota = app.projects.quota(scope.name())?;
    let held = app.projects.instances_quota_guard(scope.name()).await?;
    let all = app.instances.held_records().await?;
    let mut hold_through = false;
    if let Some(from) = all.iter().find(|i| i.name == src) {
        let usage = crate::project::quota::usage_of(scope.name(), &all, 0);
        let usage = app
            .cluster
            .project_usage(scope.name(), usage, &quota)
            .await?;
        quota.admits(&usage, from.instance_type, &from.limits, None)?;
        // Its root volume, in the source's pool: a VM's as large as the source's volume,
        // counted through the copy's row only once made, so the lock is held until then.
        if let Some(pool) = from
            .storage
            .clone()
            .filter(|p| quota.disk_pool.contains_key(p))
        {
            let (s, p, v) = (
                app.storage.clone(),
                pool.clone(),
                crate::storage::root_volume(&src),
            );
            let disk = tokio::task::spawn_blocking(move || s.volume_get(&p, &v))
                .await
                .map_err(|e| Error::internal(format!("copy task: {e}")))?
                .map_err(|e| scope.error(e))?
                .size_bytes;
            let adding =
                crate::storage::root_brought(from.instance_type, Some(disk), from.limits.disk);
            let sizes = super::storage::own_sizes(&app, &scope, &pool, None).await?;
            quota.admits_in_pool(&pool, &sizes, adding)?;
            hold_through = from.instance_type == vessel_api::InstanceType::Vm;
        }
        // No name twice in a cluster: the copy's is claimed first.
        app.cluster
            .claim(scope.name(), &req.name, &from.limits, &from.config)
            .await?;
    }
    let (to_row, through): (Box<dyn Send>, _) = if hold_through {
        (Box::new(()), Some(held))
    } else {
        (Box::new(held), None)
    };
    let op = app
        .instances
        .copy(&src, req.snapshot.as_deref(), &dst, req.start, to_row)
        .map_err(|e| {
            app.cluster.unclaim(scope.name(), &req.name);
            scope.error(e)
        })?;
    if let Some(held) = through {
        super::hold_until_done(&app, &op.id, Box::new(held));
    }
    Ok(accepted(scope.operation(op)))
}
