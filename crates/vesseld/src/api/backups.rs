//! Backups of the caller's project's instances: taken and restored through the instance
//! service (under each instance's lock), listed, verified, pruned and deleted through the
//! backup service. A backup's group is its instance's qualified name, so a project sees
//! only its own. A store other than the daemon's own is a directory on the host: admins
//! only.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use vessel_api::{
    Backup, BackupCreate, BackupGc, BackupGcReport, BackupPrune, BackupPruned, BackupRestore,
    BackupVerify, Role,
};
use vessel_backup::{BackupError, Store};

use super::scope::ProjectScope;
use super::{ApiJson, App};
use crate::auth::Caller;
use crate::backup::{error as store_error, BackupService};
use crate::error::{Error, Result};

/// The store a request names, opened off the async runtime: another directory than the
/// daemon's own only for admins.
pub(super) async fn store(app: &App, caller: &Caller, path: Option<String>) -> Result<Store> {
    if path.is_some() && caller.role < Role::Admin {
        return Err(Error::forbidden(
            "only an admin names a backup store directory; leave --store out to use the \
             daemon's own store",
        ));
    }
    let b = app.backups.clone();
    tokio::task::spawn_blocking(move || b.store(path.as_deref()))
        .await
        .map_err(|e| Error::internal(format!("backup task: {e}")))?
}

/// Runs store work off the async runtime.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::internal(format!("backup task: {e}")))?
}

/// A backup as the project's clients see it.
fn shown(scope: &ProjectScope, mut b: Backup) -> Backup {
    b.instance = scope.own(&b.instance).unwrap_or(b.instance);
    b.damaged = b.damaged.map(|d| scope.text(&d));
    b
}

use super::accepted;

pub async fn list(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response> {
    let group = q.get("instance").map(|i| scope.q(i)).transpose()?;
    let store = store(&app, &caller, q.get("store").cloned()).await?;
    let listed = blocking(move || store.list(group.as_deref()).map_err(store_error)).await?;
    let out: Vec<Backup> = listed
        .iter()
        .filter(|l| scope.own(&l.group).is_some())
        .map(|l| shown(&scope, BackupService::show(l)))
        .collect();
    Ok(Json(out).into_response())
}

pub async fn create(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<BackupCreate>,
) -> Result<Response> {
    let name = scope.q(&name)?;
    let store = store(&app, &caller, req.store).await?;
    let (op, _id) = app
        .instances
        .backup(&name, store, false, false)
        .map_err(|e| scope.error(e))?;
    Ok(accepted(scope.operation(op)))
}

pub async fn get(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    Extension(caller): Extension<Caller>,
    Path((instance, id)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response> {
    let group = scope.q(&instance)?;
    let store = store(&app, &caller, q.get("store").cloned()).await?;
    let listed = blocking(move || {
        store.listed(&group, &id).map_err(|e| match e {
            BackupError::NotFound(_) => Error::not_found(format!(
                "no backup {instance}/{id}; see `vessel backup list {instance}`"
            )),
            e => store_error(e),
        })
    })
    .await
    .map_err(|e| scope.error(e))?;
    Ok(Json(shown(&scope, BackupService::show(&listed))).into_response())
}

pub async fn delete(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    Extension(caller): Extension<Caller>,
    Path((instance, id)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response> {
    let group = scope.q(&instance)?;
    let store = store(&app, &caller, q.get("store").cloned()).await?;
    let b = blocking(move || {
        let l = store.listed(&group, &id).map_err(|e| match e {
            BackupError::NotFound(_) => Error::not_found(format!("no backup {instance}/{id}")),
            e => store_error(e),
        })?;
        store.delete(&group, &id).map_err(store_error)?;
        Ok(BackupService::show(&l))
    })
    .await
    .map_err(|e| scope.error(e))?;
    Ok(Json(shown(&scope, b)).into_response())
}

/// Whether instance `old` (as backed up or archived) is a container on the shared id
/// range, not on one of its own.
pub(super) fn shares_ids(old: &vessel_api::Instance) -> bool {
    old.instance_type == vessel_api::InstanceType::Container
        && !old.privileged
        && old.idmap.as_ref().is_some_and(|m| !m.isolated)
}

pub async fn restore(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    Extension(caller): Extension<Caller>,
    Path((instance, id)): Path<(String, String)>,
    ApiJson(req): ApiJson<BackupRestore>,
) -> Result<Response> {
    let group = scope.q(&instance)?;
    let plain = req.name.clone().unwrap_or_else(|| instance.clone());
    crate::name::validate_name("instance", &plain)?;
    let new_name = scope.q(&plain)?;
    let store = store(&app, &caller, req.store).await?;
    let (s, g, i) = (store.clone(), group.clone(), id.clone());
    let (index, damaged) = blocking(move || {
        let index = s.get(&g, &i).map_err(store_error)?;
        Ok((index, s.listed(&g, &i).map_err(store_error)?.damaged))
    })
    .await
    .map_err(|e| scope.error(e))?;
    if let Some(why) = damaged {
        return Err(Error::conflict(format!(
            "backup {instance}/{id} is marked damaged: {}",
            scope.text(&why)
        )));
    }
    // The project's limits hold for what the restore makes, checked and held up to the
    // instance's row as for a create.
    let quota = app.projects.quota(scope.name())?;
    let held = app.projects.instances_quota_guard(scope.name()).await?;
    let (s, i) = (store.clone(), index.clone());
    let old = blocking(move || crate::instance::backup::backed_up(&s, &i))
        .await
        .map_err(|e| scope.error(e))?;
    super::handlers::admits_host_level(&caller, old.privileged, shares_ids(&old))?;
    super::handlers::images_of(&app, &scope)?
        .get(&old.image)
        .map_err(|_| super::archives::not_its_image(&old.image))?;
    let (kind, limits) = (old.instance_type, old.limits.clone());
    let usage =
        crate::project::quota::usage_of(scope.name(), &app.instances.held_records().await?, 0);
    let usage = app
        .cluster
        .project_usage(scope.name(), usage, &quota)
        .await?;
    quota.admits(&usage, kind, &limits, None)?;
    // A VM's root volume is made as large as its backed-up disk: counted through the
    // instance's row only once made, so the lock is held until then.
    let mut hold_through = false;
    if let Some(pool) = old
        .storage
        .as_ref()
        .filter(|p| quota.disk_pool.contains_key(*p))
    {
        let disk = index.archive("root").ok().map(|a| a.size);
        let adding = crate::storage::root_brought(kind, disk, limits.disk);
        let sizes = super::storage::own_sizes(&app, &scope, pool, None).await?;
        quota.admits_in_pool(pool, &sizes, adding)?;
        hold_through = kind == vessel_api::InstanceType::Vm;
    }
    // No name twice in a cluster: it is claimed before it is made.
    app.cluster
        .claim(scope.name(), &plain, &limits, &old.config)
        .await?;
    let op = app
        .instances
        .restore(store, index, &new_name, req.start, false)
        .map_err(|e| {
            app.cluster.unclaim(scope.name(), &plain);
            scope.error(e)
        })?;
    if hold_through {
        super::hold_until_done(&app, &op.id, Box::new(held));
    }
    Ok(accepted(scope.operation(op)))
}

pub async fn verify(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    Extension(caller): Extension<Caller>,
    ApiJson(req): ApiJson<BackupVerify>,
) -> Result<Response> {
    let group = req.instance.as_deref().map(|i| scope.q(i)).transpose()?;
    let store = store(&app, &caller, req.store).await?;
    let id = req.id;
    let project = scope.clone();
    // The project's (as the import's): its clients wait for it, no other project's see it.
    let resource = if scope.is_default() {
        "/1.0/backups".to_string()
    } else {
        format!(
            "/1.0/backups?{}={}",
            vessel_api::PROJECT_QUERY,
            scope.name()
        )
    };
    let op = app.ops.spawn(
        "Verifying backups".to_string(),
        vec![resource],
        false,
        move |op| async move {
            let results = blocking(move || {
                let mut done = |bytes: u64| {
                    op.progress(
                        None,
                        &format!("read {}", vessel_api::size::format_size(bytes)),
                    )
                };
                let listed = store.list(group.as_deref()).map_err(store_error)?;
                let mut out = Vec::new();
                for l in listed.iter().filter(|l| project.own(&l.group).is_some()) {
                    if id.as_deref().is_some_and(|i| i != l.id) {
                        continue;
                    }
                    out.extend(
                        store
                            .verify(Some(&l.group), Some(&l.id), &mut done)
                            .map_err(store_error)?,
                    );
                }
                Ok(out)
            })
            .await?;
            let bad = results.iter().filter(|r| !r.problems.is_empty()).count();
            if bad > 0 {
                return Err(Error::conflict(format!(
                    "{bad} of {} backups are damaged: see `vessel backup list`",
                    results.len()
                )));
            }
            Ok(())
        },
    );
    Ok(accepted(scope.operation(op)))
}

pub async fn prune(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    Extension(caller): Extension<Caller>,
    ApiJson(req): ApiJson<BackupPrune>,
) -> Result<Response> {
    let group = scope.q(&req.instance)?;
    let store = store(&app, &caller, req.store).await?;
    let (last, daily) = (req.keep_last, req.keep_daily);
    let out = blocking(move || {
        let removed = store.prune(&group, last, daily).map_err(store_error)?;
        let kept = store
            .list(Some(&group))
            .map_err(store_error)?
            .into_iter()
            .map(|l| l.id)
            .collect();
        Ok(BackupPruned { removed, kept })
    })
    .await?;
    Ok(Json(out).into_response())
}

pub async fn gc(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    ApiJson(req): ApiJson<BackupGc>,
) -> Result<Response> {
    let store = store(&app, &caller, req.store).await?;
    let r = blocking(move || store.gc().map_err(store_error)).await?;
    Ok(Json(BackupGcReport {
        used_chunks: r.used_chunks,
        removed_chunks: r.removed_chunks,
        removed_bytes: r.removed_bytes,
        recent_chunks: r.recent_chunks,
        kept_chunks: r.kept_chunks,
        kept_bytes: r.kept_bytes,
    })
    .into_response())
}
