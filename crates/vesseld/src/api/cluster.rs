//! The cluster: membership on etcd (`ClusterService`).

use std::collections::{BTreeSet, HashMap};

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use vessel_api::{
    ClusterEvacuate, ClusterInit, ClusterJoin, ClusterTokenCreate, Instance, InstanceCreate,
    InstanceMigrate,
};

use super::scope::ProjectScope;
use super::{ApiJson, App};
use crate::auth::Caller;
use crate::error::{Error, Result};

pub async fn get(State(app): State<App>) -> Result<Response> {
    Ok(Json(app.cluster.info().await?).into_response())
}

pub async fn update(
    State(app): State<App>,
    ApiJson(req): ApiJson<vessel_api::ClusterUpdate>,
) -> Result<Response> {
    Ok(Json(app.cluster.update(req).await?).into_response())
}

pub async fn init(State(app): State<App>, ApiJson(req): ApiJson<ClusterInit>) -> Result<Response> {
    Ok((StatusCode::CREATED, Json(app.cluster.init(req).await?)).into_response())
}

pub async fn join(State(app): State<App>, ApiJson(req): ApiJson<ClusterJoin>) -> Result<Response> {
    Ok(Json(app.cluster.join(req).await?).into_response())
}

pub async fn tokens_create(
    State(app): State<App>,
    ApiJson(req): ApiJson<ClusterTokenCreate>,
) -> Result<Response> {
    Ok((StatusCode::CREATED, Json(app.cluster.token(req).await?)).into_response())
}

pub async fn members(State(app): State<App>) -> Result<Response> {
    Ok(Json(app.cluster.members().await?).into_response())
}

pub async fn member_delete(
    State(app): State<App>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response> {
    let force = matches!(
        q.get("force").map(String::as_str),
        Some("1" | "true" | "yes")
    );
    app.cluster.remove(&name, force).await?;
    Ok(Json(app.cluster.members().await?).into_response())
}

pub async fn placement(
    State(app): State<App>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response> {
    let cpu = match q.get("cpu") {
        None => 0.0,
        Some(v) => v
            .parse::<f64>()
            .ok()
            .filter(|c| c.is_finite() && *c >= 0.0)
            .ok_or_else(|| Error::invalid(format!("cpu={v:?}: give cores, e.g. 0.5")))?,
    };
    let memory = match q.get("memory") {
        None => 0,
        Some(v) => vessel_api::size::parse_size(v)
            .map_err(|e| Error::invalid(format!("memory={v:?}: {e}")))?,
    };
    let policy = q.get("policy").map(String::as_str);
    let group = q
        .get("group")
        .map(|g| format!("{}/{g}", vessel_api::DEFAULT_PROJECT));
    Ok(Json(
        app.cluster
            .place(cpu, memory, policy, group.as_deref(), None)
            .await?,
    )
    .into_response())
}

/// In a cluster, the member a new instance goes to (`?target=`, or the scheduler's choice
/// from its limits): when it is another member, the request is made there and its answer
/// (the operation) is this one's. `None`: it is made here.
pub(super) async fn create_elsewhere(
    app: &App,
    caller: &Caller,
    q: &HashMap<String, String>,
    scope: &ProjectScope,
    req: &mut InstanceCreate,
) -> Result<Option<Response>> {
    let target = q
        .get("target")
        .map(String::as_str)
        .filter(|t| !t.is_empty());
    if caller.forwarded() {
        // Another member chose this one: it is made here, and nowhere else.
        let me = app.cluster.me().await;
        return match (target, me) {
            (Some(t), Some(me)) if t != me => Err(Error::invalid(format!(
                "a request forwarded to {me} names another target ({t})"
            ))),
            _ => Ok(None),
        };
    }
    let (cpu, memory) = (
        req.limits.cpu.unwrap_or(0.0),
        req.limits.memory.unwrap_or(0),
    );
    let group = crate::cluster::group_of(scope.name(), &req.config);
    let to = app
        .cluster
        .choose(target, cpu, memory, group.as_deref())
        .await?;
    if let Some(fingerprint) = image_for(app, scope, &req.image, to.as_ref()).await? {
        req.image = fingerprint;
    }
    let Some(to) = to else {
        return Ok(None);
    };
    let uri = format!(
        "/1.0/instances?{}={}&target={}",
        vessel_api::PROJECT_QUERY,
        scope.name(),
        to.name
    );
    let body = serde_json::to_vec(&*req).map_err(|e| Error::internal(e.to_string()))?;
    let forwarded = axum::http::Request::builder()
        .method("POST")
        .uri(uri)
        .header(axum::http::header::CONTENT_TYPE, "application/json")
        .body(axum::body::Body::from(body))
        .map_err(|e| Error::internal(e.to_string()))?;
    let forwarded = super::guard::for_caller(
        forwarded,
        caller,
        scope.name(),
        vessel_api::endpoints::Scope::Project,
    );
    let (r, _) = app.cluster.forward(&to, forwarded).await?;
    Ok(Some(r))
}

/// In a cluster, makes sure the member an instance is made on (`to`, or this one) has its
/// image: one this member has goes along when `to` lacks it (as a move's does); one that
/// only another member has, by the name asked in the project's images, is fetched here
/// first (and goes on from here). `Some(fingerprint)`: the request names it so from then
/// on (an alias is this member's). `None`: left as asked (outside a cluster, or `to` has it
/// by that name, or no member has it: the answer says it is not found).
async fn image_for(
    app: &App,
    scope: &ProjectScope,
    key: &str,
    to: Option<&crate::cluster::Target>,
) -> Result<Option<String>> {
    // Outside a cluster the create reads the image itself: nothing to look up here.
    if app.cluster.me().await.is_none() {
        return Ok(None);
    }
    let images_project = app.projects.image_project(scope.name())?;
    let images = app.images.in_project(&images_project);
    let image = match images.get(key) {
        Ok(image) => image,
        Err(e) if e.kind == crate::error::ErrorKind::NotFound => {
            if let Some(t) = to {
                if app.cluster.has_image(t, &images_project, key).await? {
                    return Ok(None);
                }
            }
            let Some(fingerprint) = app.cluster.find_image(&images_project, key).await? else {
                return Ok(None);
            };
            if images.get(&fingerprint).is_err() {
                app.cluster
                    .fetch_image(&images_project, &fingerprint, Some(&images_project))
                    .await?;
            }
            images.get(&fingerprint)?
        }
        Err(e) => return Err(e),
    };
    if let Some(t) = to {
        if !app
            .cluster
            .has_image(t, &images_project, &image.fingerprint)
            .await?
        {
            app.cluster
                .send_image(&images, &images_project, &image.fingerprint, t)
                .await?;
        }
    }
    Ok(Some(image.fingerprint))
}

/// In a cluster, a listing of instances is every member's: this member's own with its
/// name as their location, each other online member's as it answers `path` (the same
/// request), and those of members that do not answer from the cluster's index, in the
/// `error` status with the reason. A member asked by another answers with its own only.
pub(super) async fn list_everywhere(
    app: &App,
    caller: &Caller,
    path: &str,
    project: Option<&str>,
    mut list: Vec<Instance>,
) -> Result<Vec<Instance>> {
    if caller.forwarded() {
        return Ok(list);
    }
    let Some(me) = app.cluster.me().await else {
        return Ok(list);
    };
    for i in &mut list {
        i.location = Some(me.clone());
    }
    let peers = app.cluster.peers().await?;
    // Asked as the caller: each member shows what the caller may see there.
    let (scope, in_project) = match project {
        Some(p) => (vessel_api::endpoints::Scope::Project, p),
        None => (
            vessel_api::endpoints::Scope::Server,
            caller.project.as_str(),
        ),
    };
    let answers = futures_util::future::join_all(peers.iter().map(|p| async move {
        let req = crate::cluster::get_request(path)?;
        let req = super::guard::for_caller(req, caller, in_project, scope);
        app.cluster.json_of::<Vec<Instance>>(p, req).await
    }))
    .await;
    let mut answered = BTreeSet::from([me]);
    let mut failed = HashMap::new();
    for (peer, answer) in peers.into_iter().zip(answers) {
        match answer {
            Ok(theirs) => {
                list.extend(theirs.into_iter().map(|mut i| {
                    i.location = Some(peer.name.clone());
                    i
                }));
                answered.insert(peer.name);
            }
            Err(e) => {
                tracing::warn!(member = %peer.name, error = %e, "member did not list its instances");
                failed.insert(peer.name, e.message);
            }
        }
    }
    for loc in app.cluster.locations().await? {
        if answered.contains(&loc.member) || project.is_some_and(|p| p != loc.project) {
            continue;
        }
        let why = failed.get(&loc.member).map_or_else(
            || format!("member {} is offline", loc.member),
            |e| format!("member {} did not answer: {e}", loc.member),
        );
        let shown_project = project.is_none().then_some(loc.project.as_str());
        list.push(out_of_reach(&loc.name, shown_project, &loc.member, &why)?);
    }
    list.sort_by(|a, b| (&a.project, &a.name).cmp(&(&b.project, &b.name)));
    Ok(list)
}

/// An instance on a member that does not answer: its name and place are all that is known.
fn out_of_reach(name: &str, project: Option<&str>, member: &str, why: &str) -> Result<Instance> {
    serde_json::from_value(serde_json::json!({
        "name": name,
        "project": project,
        "type": "container",
        "status": "error",
        "image": "",
        "privileged": false,
        "limits": {},
        "command": [],
        "environment": {},
        "created_at": "",
        "location": member,
        "error": format!("{why}: the instance's state is unknown"),
    }))
    .map_err(|e| Error::internal(e.to_string()))
}

/// `POST /1.0/instances/{name}/migrate`: answered by the member holding the instance (the
/// guard forwards it there).
pub async fn migrate(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<InstanceMigrate>,
) -> Result<Response> {
    let qualified = scope.q(&name)?;
    app.instances
        .get_stored(&qualified)
        .map_err(|e| scope.error(e))?;
    let Some(to) = app.cluster.choose(Some(&req.target), 0.0, 0, None).await? else {
        return Err(Error::conflict(format!(
            "instance {name} is on member {} already",
            req.target
        )));
    };
    let root = std::path::PathBuf::from(&app.info.root_dir);
    let op = app
        .instances
        .migrate(&qualified, to, app.cluster.clone(), root, None, req.live)
        .map_err(|e| scope.error(e))?;
    Ok(super::accepted(scope.operation(op)))
}

/// `POST /1.0/cluster/members/{name}/evacuate`: answered by the member itself (the guard
/// forwards it there).
pub async fn member_evacuate(
    State(app): State<App>,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<ClusterEvacuate>,
) -> Result<Response> {
    let action = req
        .action
        .as_deref()
        .map(crate::cluster::EvacuateAction::parse)
        .transpose()
        .map_err(|why| Error::invalid(format!("action: {why}")))?;
    if app.cluster.member_target(&name).await?.is_some() {
        return Err(Error::internal(format!(
            "the evacuation of {name} reached another member"
        )));
    }
    let (cluster, ops) = (app.cluster.clone(), app.ops.clone());
    let op = app.ops.spawn(
        format!("Evacuating member {name}"),
        vec![format!("/1.0/cluster/members/{name}")],
        false,
        move |op| async move { cluster.evacuate_here(&ops, action, &op).await },
    );
    Ok(super::accepted(op))
}

/// `POST /1.0/cluster/members/{name}/restore`: answered by the member itself.
pub async fn member_restore(State(app): State<App>, Path(name): Path<String>) -> Result<Response> {
    if app.cluster.member_target(&name).await?.is_some() {
        return Err(Error::internal(format!(
            "the restore of {name} reached another member"
        )));
    }
    let (cluster, ops) = (app.cluster.clone(), app.ops.clone());
    let op = app.ops.spawn(
        format!("Restoring member {name}"),
        vec![format!("/1.0/cluster/members/{name}")],
        false,
        move |op| async move { cluster.restore_here(&ops, &op).await },
    );
    Ok(super::accepted(op))
}
