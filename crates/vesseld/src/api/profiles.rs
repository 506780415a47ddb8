//! Instance configuration and profiles: a person's change to one instance, profiles made,
//! changed and deleted, and what a profile's change does to every instance using it (through
//! the instance service, under each instance's lock, checked against the project's limits
//! first).

use std::collections::{BTreeMap, HashMap};

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use vessel_api::{
    Instance, InstanceConfigPatch, InstanceCreate, NicAttach, Profile, ProfileApply, ProfileChange,
    ProfileDevices, ProfilePut, VolumeAttach, VolumeDevice,
};

use super::scope::ProjectScope;
use super::{ApiJson, App};
use crate::error::{Error, Result};
use crate::instance::config::{self, ConfigSource};
use crate::profile;

/// Whether `new` asks more than `old` of what project limits count (a limit lifted asks
/// more; lowering always passes, even in a project over a lowered quota).
fn grows(old: &vessel_api::Limits, new: &vessel_api::Limits) -> bool {
    fn more(o: Option<f64>, n: Option<f64>) -> bool {
        match (o, n) {
            (Some(_), None) => true,
            (Some(a), Some(b)) => b > a,
            (None, _) => false,
        }
    }
    let f = |v: Option<u64>| v.map(|v| v as f64);
    more(old.cpu, new.cpu)
        || more(f(old.memory), f(new.memory))
        || more(f(old.pids), f(new.pids))
        || more(f(old.disk), f(new.disk))
}

/// The profiles (qualified names) an instance names, each as it is now (`replaced`: a profile
/// about to change, with its new content).
fn profiles_of(app: &App, names: &[String], replaced: Option<&Profile>) -> Result<Vec<Profile>> {
    names
        .iter()
        .map(|n| match replaced {
            Some(p) if p.name == *n => Ok(p.clone()),
            _ => app.profiles.get(n),
        })
        .collect()
}

/// The keys `inst`'s profiles give it now (`replaced`: one of them as given).
fn profiled(
    app: &App,
    inst: &Instance,
    replaced: Option<&Profile>,
) -> Result<BTreeMap<String, String>> {
    let ps = profiles_of(app, &inst.profiles, replaced)?;
    Ok(profile::merged(&ps.iter().collect::<Vec<_>>()))
}

pub async fn instance_config_get(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    Path(name): Path<String>,
) -> Result<Response> {
    let config = app
        .instances
        .config_get(&scope.q(&name)?)
        .map_err(|e| scope.error(e))?;
    Ok(Json(vessel_api::InstanceConfig { config }).into_response())
}

pub async fn instance_config_update(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    Path(name): Path<String>,
    ApiJson(patch): ApiJson<InstanceConfigPatch>,
) -> Result<Response> {
    let name = scope.q(&name)?;
    let quota = app.projects.quota(scope.name())?;
    // Planned first without the project's quota lock; a change that grows something is
    // planned again and checked under it, held until the change is stored.
    let plan_with = |all: &[Instance]| -> Result<Option<(Instance, vessel_api::Limits)>> {
        let Some(inst) = all.iter().find(|i| i.name == name) else {
            return Ok(None);
        };
        let source = ConfigSource::User(profiled(&app, inst, None)?);
        let (p, _) = config::sourced(inst, patch.clone(), &source).map_err(|e| scope.error(e))?;
        let plan = config::plan(inst, &p).map_err(|e| scope.error(e))?;
        Ok(Some((inst.clone(), plan.limits)))
    };
    let mut held = None;
    if let Some((inst, after)) = plan_with(&app.instances.held_records().await?)? {
        if grows(&inst.limits, &after) {
            held = Some(app.projects.instances_quota_guard(scope.name()).await?);
            let all = app.instances.held_records().await?;
            if let Some((inst, after)) = plan_with(&all)? {
                admit_growth(
                    &app,
                    &scope,
                    &quota,
                    &all,
                    &inst,
                    &after,
                    &mut Growth::default(),
                )
                .await?;
            }
        }
    }
    let source = match app.instances.get_stored(&name) {
        Ok(inst) => ConfigSource::User(profiled(&app, &inst, None)?),
        Err(_) => ConfigSource::User(BTreeMap::new()),
    };
    let change = app
        .instances
        .config_update(&name, patch, source)
        .await
        .map_err(|e| scope.error(e))?;
    drop(held);
    Ok(Json(change).into_response())
}

/// What one change has admitted so far, over the instances it grows.
#[derive(Default)]
pub(super) struct Growth {
    /// What root disks grow by in each pool.
    pools: BTreeMap<String, u64>,
    /// What the project uses on other cluster members (asked once).
    elsewhere: Option<vessel_api::ProjectUsage>,
}

/// Checks that instance `inst` (as project limits count it, among `all`) may have limits
/// `after` in its project: the project's limits when it asks more of them, and
/// `limits.disk.pool.POOL` when its root disk in a pool grows (`growth`: what other
/// root disks of the same change grow by in each pool, added to as this one is admitted,
/// and what the project uses on other cluster members, asked once per change).
pub(super) async fn admit_growth(
    app: &App,
    scope: &ProjectScope,
    quota: &crate::project::quota::Quota,
    all: &[Instance],
    inst: &Instance,
    after: &vessel_api::Limits,
    growth: &mut Growth,
) -> Result<()> {
    let (pool_growth, elsewhere) = (&mut growth.pools, &mut growth.elsewhere);
    if grows(&inst.limits, after) {
        let mut usage = crate::project::quota::usage_of(scope.name(), all, 0);
        // What the project uses on other cluster members: asked once per change.
        if elsewhere.is_none() {
            let counted = app
                .cluster
                .project_usage(scope.name(), Default::default(), quota)
                .await?;
            *elsewhere = Some(counted);
        }
        if let Some(more) = elsewhere.as_ref() {
            crate::project::quota::add(&mut usage, more);
        }
        quota.admits(&usage, inst.instance_type, after, Some(&inst.limits))?;
    }
    if let (Some(pool), Some(new)) = (&inst.storage, after.disk) {
        let old = inst.limits.disk.unwrap_or(0);
        if new > old && quota.disk_pool.contains_key(pool) {
            let root = crate::storage::root_volume(&inst.name);
            let sizes = super::storage::own_sizes(app, scope, pool, Some(&root)).await?;
            let others = pool_growth.entry(pool.clone()).or_default();
            quota.admits_in_pool(pool, &sizes, Some(new + *others))?;
            *others += new - old;
        }
    }
    Ok(())
}

/// Applies `req.profiles` (the project's, in order) to a create request: their keys where the
/// request sets none of its own, their networks (as the project names them) when it names
/// none. Returns the keys the
/// request set itself (the instance's own). Every key is checked, also without profiles.
pub(super) fn for_create(
    app: &App,
    scope: &ProjectScope,
    req: &mut InstanceCreate,
) -> Result<(BTreeMap<String, String>, ProfileDevices)> {
    let mut from = ProfileDevices::default();
    // The limits as given first, named as `-l` names them.
    crate::instance::limits::validate(&req.limits)?;
    let mut probe = config::blank(req.instance_type);
    probe.limits = req.limits.clone();
    probe.environment = req.environment.clone();
    let own_keys = InstanceConfigPatch {
        set: req.config.clone(),
        unset: Vec::new(),
    };
    let own_plan = config::plan(&probe, &own_keys)?;
    let mut own = config::view(&Instance {
        limits: own_plan.limits.clone(),
        environment: own_plan.environment.clone(),
        config: own_plan.config.clone(),
        ..probe.clone()
    });
    own.remove("security.privileged");
    req.profiles = req
        .profiles
        .iter()
        .map(|p| scope.q(p))
        .collect::<Result<_>>()?;
    let ps = profiles_of(app, &req.profiles, None).map_err(|e| scope.error(e))?;
    let merged = profile::merged(&ps.iter().collect::<Vec<_>>());
    let patch = InstanceConfigPatch {
        set: merged
            .into_iter()
            .filter(|(k, _)| !own.contains_key(k))
            .chain(req.config.clone())
            .collect(),
        unset: Vec::new(),
    };
    let plan = config::plan(&probe, &patch)?;
    req.limits = plan.limits;
    req.environment = plan.environment;
    req.config = plan.config;
    for p in &ps {
        for v in &p.volumes {
            if !req
                .volumes
                .iter()
                .any(|w| w.pool == v.pool && w.volume == v.volume)
            {
                req.volumes.push(v.clone());
                from.volumes.push(v.clone());
            }
        }
    }
    // Volumes as the project names them, checked to exist before anything is made.
    for v in &mut req.volumes {
        v.volume = scope.q(&v.volume)?;
        app.storage
            .volume_get(&v.pool, &v.volume)
            .map_err(|e| scope.error(e))?;
    }
    if !req.networks.is_empty() || req.no_network {
        from.own_networks = true;
    } else {
        for p in &ps {
            for n in &p.networks {
                if !req.networks.contains(n) {
                    req.networks.push(n.clone());
                    from.networks.push(n.clone());
                }
            }
        }
    }
    let own = if req.profiles.is_empty() {
        BTreeMap::new()
    } else {
        own
    };
    Ok((own, from))
}

/// `p` as its project's clients see it, with the instances using it.
fn shown(app: &App, scope: &ProjectScope, mut p: Profile) -> Result<Profile> {
    p.used_by = app
        .instances
        .records()?
        .into_iter()
        .filter(|i| i.profiles.contains(&p.name))
        .filter_map(|i| scope.own(&i.name))
        .collect();
    p.name = scope.own(&p.name).unwrap_or(p.name);
    Ok(p)
}

/// Adds to `shown` profiles' `used_by` the instances of the other members using them (in
/// a cluster; not when a member asks for this member's own: with `here`, or a member
/// asking as itself, which an older one does without it).
async fn with_users_elsewhere(
    app: &App,
    scope: &ProjectScope,
    caller: &crate::auth::Caller,
    q: &HashMap<String, String>,
    shown: &mut [Profile],
) {
    let a_member = caller.kind == vessel_api::IdentityKind::Member && caller.via.is_none();
    if q.contains_key(crate::cluster::HERE) || a_member || shown.is_empty() {
        return;
    }
    let mut elsewhere = app.cluster.profile_users(scope.name()).await;
    for p in shown {
        if let Some(more) = elsewhere.remove(&p.name) {
            p.used_by.extend(more);
            p.used_by.sort();
            p.used_by.dedup();
        }
    }
}

pub async fn list(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    Extension(caller): Extension<crate::auth::Caller>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response> {
    let mut out = Vec::new();
    for p in app.profiles.list()? {
        if scope.own(&p.name).is_some() {
            out.push(shown(&app, &scope, p)?);
        }
    }
    with_users_elsewhere(&app, &scope, &caller, &q, &mut out).await;
    Ok(Json(out).into_response())
}

pub async fn get(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    Extension(caller): Extension<crate::auth::Caller>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response> {
    crate::name::validate_name("profile", &name)?;
    let p = app
        .profiles
        .get(&scope.q(&name)?)
        .map_err(|e| scope.error(e))?;
    let mut one = [shown(&app, &scope, p)?];
    with_users_elsewhere(&app, &scope, &caller, &q, &mut one).await;
    let [p] = one;
    Ok(Json(p).into_response())
}

pub async fn create(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    ApiJson(p): ApiJson<Profile>,
) -> Result<Response> {
    crate::name::validate_name("profile", &p.name)?;
    let name = scope.q(&p.name)?;
    let made = app
        .profiles
        .create(&name, p.into())
        .map_err(|e| scope.error(e))?;
    Ok((StatusCode::CREATED, Json(shown(&app, &scope, made)?)).into_response())
}

pub async fn put(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<ProfilePut>,
) -> Result<Response> {
    crate::name::validate_name("profile", &name)?;
    let plain = name;
    let name = scope.q(&plain)?;
    profile::ProfileService::check(&req.config)?;
    // Its own task: a client that goes away does not cut the change short half-way.
    tokio::spawn(async move {
        let answer = put_everywhere(&app, &scope, &plain, &name, req).await?;
        Ok(Json(answer).into_response())
    })
    .await
    .map_err(|e| Error::internal(format!("profile change task: {e}")))?
}

/// Changes profile `name` (`plain` as its project names it) to `req` here and on every
/// other member, one change of it at a time in the whole cluster (its lock held from
/// reading what it was to the last member's answer: no change is based on a version
/// another change replaced, and every member takes them in the same order).
async fn put_everywhere(
    app: &App,
    scope: &ProjectScope,
    plain: &str,
    name: &str,
    req: ProfilePut,
) -> Result<ProfileChange> {
    let _serial = app.cluster.lock(&format!("profile/{name}")).await?;
    let before = app.profiles.get(name).map_err(|e| scope.error(e))?;
    let change = ProfileApply {
        before: before.clone().into(),
        after: req.clone(),
    };
    let mut answer = apply(app, scope, name, &before, req, true).await?;
    // The profile is the cluster's: the other members' instances using it take it too.
    for (member, there) in app
        .cluster
        .profile_applied_elsewhere(scope.name(), plain, &change)
        .await
    {
        match there {
            Ok(c) => {
                answer.instances.extend(c.instances);
                answer.errors.extend(c.errors);
            }
            Err(e) => {
                answer.errors.insert(
                    format!("member {member}"),
                    format!(
                        "its instances using the profile did not take the change ({}): they \
                         keep what they had; see `vessel config show` there",
                        e.message
                    ),
                );
            }
        }
    }
    Ok(answer)
}

/// `POST /1.0/profiles/{name}/apply`: a change of the profile made on another member, for
/// this member's instances using it.
pub async fn apply_here(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<ProfileApply>,
) -> Result<Response> {
    crate::name::validate_name("profile", &name)?;
    let name = scope.q(&name)?;
    profile::ProfileService::check(&req.after.config)?;
    let before = named(&name, req.before);
    // Its own task: the member asking may give up waiting, the change is not cut short.
    tokio::spawn(async move {
        let answer = apply(&app, &scope, &name, &before, req.after, false).await?;
        Ok(Json(answer).into_response())
    })
    .await
    .map_err(|e| Error::internal(format!("profile change task: {e}")))?
}

/// Brings every instance here using profile `name` from what it gave as `before` to what
/// it gives as `req`, and keeps the profile so when `keep` (the member the change was
/// asked of; the others have it from the cluster).
pub(super) async fn apply(
    app: &App,
    scope: &ProjectScope,
    name: &str,
    before: &Profile,
    req: ProfilePut,
    keep: bool,
) -> Result<ProfileChange> {
    let name = name.to_string();
    let after = named(&name, req.clone());
    // Every instance using it is planned first, against the project's limits with all of
    // them grown: a change one of them cannot take is refused before anything is kept.
    let quota = app.projects.quota(scope.name())?;
    // The cluster's lock of the project's limits only when the change grows an instance
    // here (what the other members count then changes); this member's otherwise.
    let grows_here = app.instances.held_records().await?.iter().any(|inst| {
        if !inst.profiles.contains(&name) {
            return false;
        }
        let (Ok(old), Ok(new)) = (
            profiled(app, inst, Some(before)),
            profiled(app, inst, Some(&after)),
        ) else {
            return false;
        };
        let patch = profile::patch_for(&config::view(inst), &inst.own_config, &old, &new);
        config::plan(inst, &patch).is_ok_and(|plan| grows(&inst.limits, &plan.limits))
    });
    let _held: Box<dyn Send> = if grows_here {
        Box::new(app.projects.instances_quota_guard(scope.name()).await?)
    } else {
        Box::new(app.projects.quota_guard(scope.name()).await)
    };
    let mut all = app.instances.held_records().await?;
    let mut growth = Growth::default();
    let mut work = Vec::new();
    for i in 0..all.len() {
        let inst = all[i].clone();
        if !inst.profiles.contains(&name) {
            continue;
        }
        let (old, new) = (
            profiled(app, &inst, Some(before))?,
            profiled(app, &inst, Some(&after))?,
        );
        let patch = profile::patch_for(&config::view(&inst), &inst.own_config, &old, &new);
        let plan = config::plan(&inst, &patch).map_err(|e| {
            scope.error(Error::invalid(format!(
                "instance {} cannot take this profile: {}",
                inst.name, e.message
            )))
        })?;
        if let Some(size) = plan.limits.disk.filter(|s| Some(*s) != inst.limits.disk) {
            crate::instance::root_disk::resize_check(&inst, size).map_err(|e| {
                scope.error(Error::invalid(format!(
                    "instance {} cannot take this profile: {}",
                    inst.name, e.message
                )))
            })?;
        }
        admit_growth(app, scope, &quota, &all, &inst, &plan.limits, &mut growth).await?;
        if grows(&inst.limits, &plan.limits) {
            all[i].limits = plan.limits.clone();
        }
        work.push((inst.name.clone(), patch));
    }
    // The networks and volumes each instance gets or loses with it.
    let mut devices = Vec::new();
    for inst in all.iter().filter(|i| i.profiles.contains(&name)) {
        let was = profiles_of(app, &inst.profiles, Some(before))?;
        let now = profiles_of(app, &inst.profiles, Some(&after))?;
        devices.push((inst.name.clone(), device_sets(&was), device_sets(&now)));
    }
    let kept = if keep {
        app.profiles.put(&name, req).map_err(|e| scope.error(e))?
    } else {
        after
    };
    let mut change = ProfileChange {
        profile: shown(app, scope, kept)?,
        instances: BTreeMap::new(),
        errors: BTreeMap::new(),
    };
    for (inst, patch) in work {
        let shown_name = scope.own(&inst).unwrap_or_else(|| inst.clone());
        match app
            .instances
            .config_update(&inst, patch, ConfigSource::Profiles)
            .await
        {
            Ok(c) => {
                change.instances.insert(shown_name, c.changes);
            }
            Err(e) => {
                change.errors.insert(shown_name, scope.error(e).message);
            }
        }
    }
    for (inst, before, after) in devices {
        let errors = follow_devices(app, scope, &inst, before, after).await;
        if !errors.is_empty() {
            let shown_name = scope.own(&inst).unwrap_or_else(|| inst.clone());
            let e = change.errors.entry(shown_name).or_default();
            for m in errors {
                if !e.is_empty() {
                    e.push_str("; ");
                }
                e.push_str(&m);
            }
        }
    }
    Ok(change)
}

/// Profile `name` with content `p`.
fn named(name: &str, p: ProfilePut) -> Profile {
    Profile {
        name: name.to_string(),
        description: p.description,
        config: p.config,
        networks: p.networks,
        volumes: p.volumes,
        used_by: Vec::new(),
    }
}

/// The networks and volumes `profiles` give, in order, each once.
fn device_sets(profiles: &[Profile]) -> ProfileDevices {
    let mut d = ProfileDevices::default();
    for p in profiles {
        for n in &p.networks {
            if !d.networks.contains(n) {
                d.networks.push(n.clone());
            }
        }
        for v in &p.volumes {
            if !d
                .volumes
                .iter()
                .any(|w| w.pool == v.pool && w.volume == v.volume)
            {
                d.volumes.push(v.clone());
            }
        }
    }
    d
}

/// Gives instance `inst` the networks and volumes its profiles give now and takes away those
/// they gave and no longer do (never one it got otherwise), each through the instance's
/// lock: NICs live on a running container, volumes while it is stopped. Returns what could
/// not be done, with the reason.
async fn follow_devices(
    app: &App,
    scope: &ProjectScope,
    inst: &str,
    before: ProfileDevices,
    after: ProfileDevices,
) -> Vec<String> {
    let mut errors = Vec::new();
    let current = match app.instances.get(inst) {
        Ok(i) => i,
        Err(e) => return vec![scope.error(e).message],
    };
    let mut from = current.from_profiles.clone();
    // An instance that chose its networks itself gets none from its profiles.
    let (before_networks, after_networks) = if from.own_networks {
        (Vec::new(), Vec::new())
    } else {
        (before.networks.clone(), after.networks.clone())
    };
    for n in after_networks
        .iter()
        .filter(|n| !before_networks.contains(n))
    {
        let q = match scope.q(n) {
            Ok(q) => q,
            Err(e) => {
                errors.push(format!("network {n}: {}", e.message));
                continue;
            }
        };
        if current.nics.iter().any(|nic| nic.network == q) {
            continue;
        }
        let req = NicAttach {
            instance: inst.to_string(),
            ip: None,
            mac: None,
            vlan: None,
            ingress: None,
            egress: None,
        };
        match app.instances.nic_attach(q, req).await {
            Ok(_) => from.networks.push(n.clone()),
            Err(e) => errors.push(format!("network {n}: {}", scope.error(e).message)),
        }
    }
    for n in before_networks
        .iter()
        .filter(|n| !after_networks.contains(n))
    {
        if !from.networks.contains(n) {
            continue;
        }
        let detached = match scope.q(n) {
            Ok(q) => app.instances.nic_detach(q, inst.to_string()).await,
            Err(e) => Err(e),
        };
        match detached {
            Ok(_) => from.networks.retain(|m| m != n),
            Err(e) => errors.push(format!("network {n}: {}", scope.error(e).message)),
        }
    }
    let same = |a: &VolumeDevice, b: &VolumeDevice| a.pool == b.pool && a.volume == b.volume;
    for v in after
        .volumes
        .iter()
        .filter(|v| !before.volumes.iter().any(|b| same(b, v)))
    {
        let q = match scope.q(&v.volume) {
            Ok(q) => q,
            Err(e) => {
                errors.push(format!("volume {}/{}: {}", v.pool, v.volume, e.message));
                continue;
            }
        };
        if current
            .volumes
            .iter()
            .any(|w| w.pool == v.pool && w.volume == q)
        {
            continue;
        }
        let req = VolumeAttach {
            instance: inst.to_string(),
            path: v.path.clone(),
        };
        match app.instances.volume_attach(v.pool.clone(), q, req).await {
            Ok(_) => from.volumes.push(v.clone()),
            Err(e) => errors.push(format!(
                "volume {}/{}: {}",
                v.pool,
                v.volume,
                scope.error(e).message
            )),
        }
    }
    for v in before
        .volumes
        .iter()
        .filter(|v| !after.volumes.iter().any(|a| same(a, v)))
    {
        if !from.volumes.iter().any(|f| same(f, v)) {
            continue;
        }
        let detached = match scope.q(&v.volume) {
            Ok(q) => {
                app.instances
                    .volume_detach(v.pool.clone(), q, inst.to_string())
                    .await
            }
            Err(e) => Err(e),
        };
        match detached {
            Ok(_) => from.volumes.retain(|f| !same(f, v)),
            Err(e) => errors.push(format!(
                "volume {}/{}: {}",
                v.pool,
                v.volume,
                scope.error(e).message
            )),
        }
    }
    if from != current.from_profiles {
        if let Err(e) = app.instances.set_profile_devices(inst, &from) {
            errors.push(scope.error(e).message);
        }
    }
    errors
}

pub async fn delete(
    State(app): State<App>,
    Extension(scope): Extension<ProjectScope>,
    Path(name): Path<String>,
) -> Result<Response> {
    crate::name::validate_name("profile", &name)?;
    let name = scope.q(&name)?;
    // Under the project's quota lock, which a create holds from reading its profiles to its
    // instance's row: no instance is made with a profile deleted meanwhile.
    let _held = app.projects.quota_guard(scope.name()).await;
    let users: Vec<String> = app
        .instances
        .records()?
        .into_iter()
        .filter(|i| i.profiles.contains(&name))
        .map(|i| scope.own(&i.name).unwrap_or(i.name))
        .chain(
            app.cluster
                .profile_users_elsewhere(scope.name(), crate::project::split(&name).1)
                .await?,
        )
        .collect();
    let p = app
        .profiles
        .delete(&name, &users)
        .map_err(|e| scope.error(e))?;
    let mut p = p;
    p.name = scope.own(&p.name).unwrap_or(p.name);
    Ok(Json(p).into_response())
}
