//! Projects: made, changed and deleted by admins; seen by the identities bound to them.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use vessel_api::{Project, ProjectCreate, ProjectUpdate, Role};

use super::{ApiJson, App};
use crate::auth::Caller;
use crate::error::Result;
use crate::project::{self, quota};

/// What every project's use is counted from, read once per request.
struct Holdings {
    instances: Vec<vessel_api::Instance>,
    networks: Vec<String>,
}

impl Holdings {
    /// What every project holds: a running VM's resources as it holds them (see
    /// `InstanceService::held_records`), as quota checks count them.
    async fn read(app: &App) -> Result<Self> {
        Ok(Holdings {
            instances: app.instances.held_records().await?,
            networks: app.networks.list()?.into_iter().map(|n| n.name).collect(),
        })
    }

    /// `p` with what it uses now.
    fn usage(&self, mut p: Project) -> Project {
        let networks = self
            .networks
            .iter()
            .filter(|n| project::within(&p.name, n).is_some())
            .count() as u64;
        p.usage = Some(quota::usage_of(&p.name, &self.instances, networks));
        p
    }
}

/// A caller bound to a project sees that one only.
fn visible(caller: &Caller, name: &str) -> bool {
    caller.role >= Role::Admin || caller.project == name
}

pub async fn list(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response> {
    let recursion = matches!(q.get("recursion").map(String::as_str), Some("1" | "true"));
    let held = if recursion {
        Some(Holdings::read(&app).await?)
    } else {
        None
    };
    let elsewhere = match &held {
        Some(_) => elsewhere(&app, &caller).await,
        None => HashMap::new(),
    };
    let mut out = Vec::new();
    for p in app.projects.list()? {
        if visible(&caller, &p.name) {
            out.push(match &held {
                Some(h) => with(h.usage(p), &elsewhere),
                None => p,
            });
        }
    }
    Ok(Json(out).into_response())
}

/// What projects use on the other members of a cluster, unless a member asks (it counts
/// each member's own); nothing when they cannot be counted (etcd out of reach): reads go
/// on through an outage, as this member counts.
async fn elsewhere(app: &App, caller: &Caller) -> HashMap<String, vessel_api::ProjectUsage> {
    if caller.role == Role::Member {
        return HashMap::new();
    }
    app.cluster.usage_elsewhere_all().await.unwrap_or_else(|e| {
        tracing::debug!(error = %e, "project usage of this member only");
        HashMap::new()
    })
}

/// `p` with what it uses `elsewhere` added.
fn with(mut p: Project, elsewhere: &HashMap<String, vessel_api::ProjectUsage>) -> Project {
    if let (Some(u), Some(more)) = (p.usage.as_mut(), elsewhere.get(&p.name)) {
        quota::add(u, more);
    }
    p
}

pub async fn create(
    State(app): State<App>,
    ApiJson(req): ApiJson<ProjectCreate>,
) -> Result<Response> {
    Ok((StatusCode::CREATED, Json(app.projects.create(req)?)).into_response())
}

pub async fn get(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response> {
    if !visible(&caller, &name) {
        return Err(project::not_found(&name));
    }
    let mut p = app.projects.get(&name)?;
    if matches!(q.get("holds").map(String::as_str), Some("1" | "true")) {
        p.holds = holds_here(&app, &name)?;
    }
    let p = Holdings::read(&app).await?.usage(p);
    Ok(Json(with(p, &elsewhere(&app, &caller).await)).into_response())
}

pub async fn update(
    State(app): State<App>,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<ProjectUpdate>,
) -> Result<Response> {
    // Values are checked first (an empty one unsets its key): a bad one is the answer.
    let set: std::collections::BTreeMap<String, String> = req
        .config
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    quota::Quota::parse(&set)?;
    // Which images a project uses changes only while nothing of it depends on them.
    if let Some(v) = req.config.get(vessel_api::FEATURES_IMAGES) {
        let current = app.projects.get(&name)?;
        let was = current.config.get(vessel_api::FEATURES_IMAGES);
        if was.map(String::as_str).unwrap_or("true") != v && name != vessel_api::DEFAULT_PROJECT {
            let instances = app
                .instances
                .records()?
                .iter()
                .filter(|i| project::within(&name, &i.name).is_some())
                .count();
            let images = app.images.in_project(&name).list()?.len();
            if instances + images > 0 {
                return Err(crate::error::Error::conflict(format!(
                    "project {name:?} has {instances} instance(s) and {images} image(s) of its \
                     own; {} changes only in a project without either",
                    vessel_api::FEATURES_IMAGES
                )));
            }
        }
    }
    let p = app.projects.update(&name, req)?;
    Ok(Json(Holdings::read(&app).await?.usage(p)).into_response())
}

pub async fn delete(State(app): State<App>, Path(name): Path<String>) -> Result<Response> {
    let mut holds = holds_here(&app, &name)?;
    // In a cluster the project is every member's: what it holds on each counts.
    holds.extend(app.cluster.project_holds(&name).await?);
    Ok(Json(app.projects.delete(&name, &holds)?).into_response())
}

/// What project `name` holds on this server that keeps it from being deleted.
fn holds_here(app: &App, name: &str) -> Result<Vec<String>> {
    let name = name.to_string();
    let mut holds: Vec<String> = app
        .instances
        .records()?
        .iter()
        .filter_map(|i| project::within(&name, &i.name).map(|n| format!("instance {n}")))
        .collect();
    holds.extend(
        app.networks
            .list()?
            .iter()
            .filter_map(|n| project::within(&name, &n.name).map(|n| format!("network {n}"))),
    );
    // From the records: no pool's backend is asked (a ceph pool's would be, at length).
    holds.extend(
        app.storage.volume_keys()?.iter().filter_map(|(pool, v)| {
            project::within(&name, v).map(|n| format!("volume {pool}/{n}"))
        }),
    );
    holds.extend(
        app.images
            .in_project(&name)
            .list()?
            .iter()
            .map(|i| format!("image {}", crate::image::short(&i.fingerprint))),
    );
    holds.extend(
        app.storage
            .exports_list()?
            .iter()
            .filter_map(|e| project::within(&name, &e.name).map(|n| format!("export {n}"))),
    );
    holds.extend(
        app.profiles
            .list()?
            .iter()
            .filter_map(|p| project::within(&name, &p.name).map(|n| format!("profile {n}"))),
    );
    // Backups in the daemon's own store: a new project of its name would see them (a
    // backup's group is its instance's qualified name).
    holds.extend(app.backups.own_groups()?.into_iter().filter_map(|(g, n)| {
        project::within(&name, &g).map(|i| match n {
            1 => format!("1 backup of {i}"),
            n => format!("{n} backups of {i}"),
        })
    }));
    // Identities bound to it would come back to life with a new project of its name.
    holds.extend(
        app.auth
            .list()
            .into_iter()
            .filter(|i| i.project == name)
            .map(|i| format!("identity {}", i.name)),
    );
    Ok(holds)
}
