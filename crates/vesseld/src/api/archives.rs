//! Portable instance archives: `export` takes a backup of the instance into a store of its
//! own, packs it (the backup and every chunk it names) into one file and sends it; `import`
//! receives such a file, reads it into a store of its own (every entry and chunk checked
//! before anything is made) and restores the instance from it. Both stores are temporary.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use vessel_api::OperationStatus;
use vessel_backup::Store;

use super::backups::blocking;
use super::scope::ProjectScope;
use super::App;
use crate::backup::error as store_error;
use crate::error::{Error, Result};

/// The largest archive taken.
const MAX_ARCHIVE: u64 = 1 << 40;

use crate::transfer::Scratch;

fn scratch(app: &App) -> Result<Scratch> {
    Scratch::new(std::path::Path::new(&app.info.root_dir))
}

pub async fn export(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response> {
    let snapshots = matches!(q.get("snapshots").map(String::as_str), Some("1" | "true"));
    let name = scope.q(&name)?;
    let scratch = scratch(&app)?;
    let dir = scratch.0.join("store");
    let store =
        blocking(move || Store::create(&dir, Default::default()).map_err(store_error)).await?;
    let (op, id) = app
        .instances
        .backup(&name, store.clone(), snapshots, true)
        .map_err(|e| scope.error(e))?;
    let done = app.ops.wait(&op.id, None).await?;
    if done.status != OperationStatus::Success {
        return Err(scope.error(Error::conflict(
            done.error.unwrap_or_else(|| "the backup failed".into()),
        )));
    }
    let file = scratch.0.join("archive.tar");
    let (s, f, n) = (store.clone(), file.clone(), name.clone());
    blocking(move || {
        let index = s.get(&n, &id).map_err(store_error)?;
        let out = std::fs::File::create(&f)
            .map_err(|e| Error::internal(format!("{}: {e}", f.display())))?;
        s.export_archive(&index, std::io::BufWriter::new(out), &mut |_| {})
            .map_err(store_error)
    })
    .await?;
    let archive = std::fs::File::open(&file)
        .map_err(|e| Error::internal(format!("opening the archive: {e}")))?;
    // The scratch directory goes once the archive is sent (the open file stays readable).
    Ok(super::handlers::tar_response(archive, scratch))
}

pub async fn export_backup(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    Extension(caller): Extension<crate::auth::Caller>,
    Path((instance, id)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response> {
    let group = scope.q(&instance)?;
    let store = super::backups::store(&app, &caller, q.get("store").cloned()).await?;
    let scratch = scratch(&app)?;
    let file = scratch.0.join("archive.tar");
    let f = file.clone();
    blocking(move || {
        let index = store.get(&group, &id).map_err(|e| match e {
            vessel_backup::BackupError::NotFound(_) => Error::not_found(format!(
                "no backup {instance}/{id}; see `vessel backup list {instance}`"
            )),
            e => store_error(e),
        })?;
        let out = std::fs::File::create(&f)
            .map_err(|e| Error::internal(format!("{}: {e}", f.display())))?;
        store
            .export_archive(&index, std::io::BufWriter::new(out), &mut |_| {})
            .map_err(store_error)
    })
    .await
    .map_err(|e| scope.error(e))?;
    let archive = std::fs::File::open(&file)
        .map_err(|e| Error::internal(format!("opening the archive: {e}")))?;
    Ok(super::handlers::tar_response(archive, scratch))
}

/// The refusal of an instance whose image is not one of the project's.
pub(super) fn not_its_image(fingerprint: &str) -> Error {
    Error::conflict(format!(
        "the instance's image {} is not one of this project's images: build, pull or import \
         it in the project first (vessel image import FILE --project P)",
        crate::image::short(fingerprint)
    ))
}

pub async fn import(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    Extension(caller): Extension<crate::auth::Caller>,
    Query(q): Query<HashMap<String, String>>,
    body: Body,
) -> Result<Response> {
    // A member moving an instance here holds its name in the index already (it hands it
    // over once this is made); anyone else's import claims the name first.
    let claim = !(caller.kind == vessel_api::IdentityKind::Member && caller.via.is_none());
    let new_name = match q.get("name") {
        Some(n) => {
            crate::name::validate_name("instance", n)?;
            // No name twice in a cluster: a name given is claimed first.
            if claim {
                app.cluster
                    .claim(scope.name(), n, &Default::default(), &Default::default())
                    .await?;
            }
            Some(scope.q(n)?)
        }
        None => None,
    };
    let start = matches!(q.get("start").map(String::as_str), Some("1" | "true"));
    let scratch = scratch(&app)?;
    let upload = scratch.0.join("upload.tar");
    super::handlers::receive_upload(body, &upload, MAX_ARCHIVE, "archive").await?;
    let (here, svc, ops, projects, project, cluster) = (
        app.clone(),
        app.instances.clone(),
        app.ops.clone(),
        app.projects.clone(),
        scope.clone(),
        app.cluster.clone(),
    );
    let keeps_name = new_name.is_none();
    // Its project's (the instance's name is known only once the archive is read): what
    // a client of the project waits for.
    let resource = if project.is_default() {
        "/1.0/instances".to_string()
    } else {
        format!(
            "/1.0/instances?{}={}",
            vessel_api::PROJECT_QUERY,
            project.name()
        )
    };
    let op = app.ops.spawn(
        "Importing an instance".into(),
        vec![resource],
        false,
        move |op| async move {
            let _scratch = scratch;
            op.progress(Some(10), "checking the archive");
            let (u, d) = (upload.clone(), _scratch.0.join("store"));
            let (store, index) = blocking(move || {
                let f = std::fs::File::open(&u)
                    .map_err(|e| Error::internal(format!("{}: {e}", u.display())))?;
                Store::import_archive(std::io::BufReader::new(f), &d).map_err(store_error)
            })
            .await?;
            let (s, i) = (store.clone(), index.clone());
            let old = blocking(move || crate::instance::backup::backed_up(&s, &i)).await?;
            super::handlers::admits_host_level(
                &caller,
                old.privileged,
                super::backups::shares_ids(&old),
            )?;
            // From an image the project has (a member's move brings its own along).
            if claim {
                super::handlers::images_of(&here, &project)?
                    .get(&old.image)
                    .map_err(|_| not_its_image(&old.image))?;
            }
            // As the project names it: an archive of another project's instance keeps its
            // name within this one.
            let name = match new_name {
                Some(n) => n,
                None => {
                    let (_, plain) = crate::project::split(&old.name);
                    project.q(plain)?
                }
            };
            let quota = projects.quota(project.name())?;
            // A member's own move is counted here alone: this member's lock is enough.
            let _held: Box<dyn Send> = if claim {
                Box::new(projects.instances_quota_guard(project.name()).await?)
            } else {
                Box::new(projects.quota_guard(project.name()).await)
            };
            // A member's own move adds nothing to what the project holds in the cluster (the
            // instance leaves its old member): counted here alone, as before.
            let usage =
                crate::project::quota::usage_of(project.name(), &svc.held_records().await?, 0);
            let usage = if claim {
                cluster.project_usage(project.name(), usage, &quota).await?
            } else {
                usage
            };
            quota.admits(&usage, old.instance_type, &old.limits, None)?;
            // limits.disk.pool.*: what it brings into each pool here (its root disk, and the
            // volumes a member's move carries: an import makes none), as a create and a
            // volume's creation count (a volume without a size as nothing, as one here).
            let carried = if claim {
                Vec::new()
            } else {
                let (s, i) = (store.clone(), index.clone());
                blocking(move || crate::instance::carried_in(&s, &i)).await?
            };
            // (A VM's root volume is made as large as its disk in the archive.)
            let disk = index.archive("root").ok().map(|a| a.size);
            let root = crate::storage::root_brought(old.instance_type, disk, old.limits.disk);
            let root = old.storage.as_deref().zip(root);
            let adding = crate::storage::brought(root, &carried);
            let mut limited = false;
            for (pool, bytes) in adding
                .iter()
                .filter(|(p, _)| quota.disk_pool.contains_key(*p))
            {
                let sizes = super::storage::own_sizes(&here, &project, pool, None).await?;
                quota.admits_in_pool(pool, &sizes, Some(*bytes))?;
                limited = true;
            }
            // Counted above, the carried volumes exist only once the instance is made: the
            // project's lock is held until then (its root disk counts through its record).
            // A VM's root volume, made as large as its disk, likewise.
            let hold_through = limited
                && (!carried.is_empty() || old.instance_type == vessel_api::InstanceType::Vm);
            // The archive's own name: claimed now that it is known.
            let plain = crate::project::split(&name).1.to_string();
            if claim && keeps_name {
                cluster
                    .claim(project.name(), &plain, &old.limits, &old.config)
                    .await?;
            }
            op.progress(Some(40), "making the instance");
            let made = svc
                .restore(store, index, &name, start, !claim)
                .inspect_err(|_| {
                    cluster.unclaim(project.name(), &plain);
                })?;
            if !hold_through {
                drop(_held);
            }
            let done = ops.wait(&made.id, None).await?;
            if done.status != OperationStatus::Success {
                return Err(Error::conflict(
                    done.error
                        .unwrap_or_else(|| "making the instance failed".into()),
                ));
            }
            Ok(())
        },
    );
    Ok((StatusCode::ACCEPTED, Json(scope.operation(op))).into_response())
}
