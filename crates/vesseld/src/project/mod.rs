//! Projects: tenants of one daemon. An object of a project other than `default` is kept
//! under a qualified name, `PROJECT.NAME` (names have no '.', so the two parts are never
//! ambiguous), and everything the kernel sees of it is named from that (cgroups, directories,
//! runtime state, monitor files), so two projects' `web` never meet. Objects of `default` keep
//! their bare names: a store from before projects is `default`'s as it is. The API layer
//! qualifies names on the way in and takes the project off on the way out (`api/scope.rs`);
//! services see only qualified names. Quotas (`limits.*`) are checked before an instance is
//! made or grows, under one lock, so concurrent requests cannot overshoot.

pub mod quota;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use vessel_api::{Project, ProjectCreate, ProjectUpdate, DEFAULT_PROJECT};

use crate::error::{Error, Result};
use crate::store::{Records, Store};

/// The qualified name of `name` in `project`.
pub fn qualify(project: &str, name: &str) -> String {
    if project == DEFAULT_PROJECT {
        name.to_string()
    } else {
        format!("{project}.{name}")
    }
}

/// The project and the name within it of a qualified name.
pub fn split(qualified: &str) -> (&str, &str) {
    match qualified.split_once('.') {
        Some((p, n)) => (p, n),
        None => (DEFAULT_PROJECT, qualified),
    }
}

/// The name within `project` of `qualified`, if it belongs to `project`.
pub fn within<'a>(project: &str, qualified: &'a str) -> Option<&'a str> {
    let (p, n) = split(qualified);
    (p == project).then_some(n)
}

/// What the store keeps of a project.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ProjectRecord {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    config: BTreeMap<String, String>,
}

impl ProjectRecord {
    fn view(&self) -> Project {
        Project {
            name: self.name.clone(),
            description: self.description.clone(),
            config: self.config.clone(),
            usage: None,
            holds: Vec::new(),
        }
    }
}

/// Projects and their quotas.
type QuotaLock = Arc<tokio::sync::Mutex<()>>;

/// Takes a project's quota lock across the members of a cluster: what it returns holds it
/// (`None` outside a cluster).
pub type ClusterQuotaLock = Arc<
    dyn Fn(String) -> futures_util::future::BoxFuture<'static, Result<Option<Box<dyn Send + Sync>>>>
        + Send
        + Sync,
>;

/// Held across a check of what a project's instances use and the change it allowed: this
/// member's lock of the project, and in a cluster, when its limits count what every member
/// holds, the cluster's.
pub struct QuotaGuard {
    _cluster: Option<Box<dyn Send + Sync>>,
    _local: tokio::sync::OwnedMutexGuard<()>,
}

#[derive(Clone)]
pub struct ProjectService {
    records: Records<ProjectRecord>,
    /// Per project, held from a quota check to the insert or change it allows (a project's
    /// usage is its own instances' and volumes', so projects do not wait for each other).
    quota_locks: Arc<std::sync::Mutex<std::collections::HashMap<String, QuotaLock>>>,
    /// The cluster's side of the quota lock, once the daemon is assembled.
    cluster_lock: Arc<std::sync::OnceLock<ClusterQuotaLock>>,
}

/// The answer for a project that does not exist, and for one the caller may not see: the
/// same, so nothing tells them apart.
pub fn not_found(name: &str) -> Error {
    Error::not_found(format!(
        "project {name:?} not found; see `vessel project list`"
    ))
}

impl ProjectService {
    /// The projects kept in `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        ProjectService {
            records: Records::new(store, "project"),
            quota_locks: Arc::default(),
            cluster_lock: Arc::default(),
        }
    }

    fn record(&self, name: &str) -> Result<ProjectRecord> {
        self.versioned(name).map(|(r, _)| r)
    }

    /// A project's record with the version a change of it compares against (in a cluster,
    /// another member's change in between refuses it rather than being lost).
    fn versioned(&self, name: &str) -> Result<(ProjectRecord, Option<i64>)> {
        let stored = self.records.get_versioned(name).map_err(store_err)?;
        if name == DEFAULT_PROJECT {
            return Ok(stored.unwrap_or_else(|| {
                (
                    ProjectRecord {
                        name: DEFAULT_PROJECT.into(),
                        description: "The project that exists from the start".into(),
                        config: BTreeMap::new(),
                    },
                    None,
                )
            }));
        }
        stored.ok_or_else(|| not_found(name))
    }

    /// A project (without usage).
    pub fn get(&self, name: &str) -> Result<Project> {
        self.record(name).map(|r| r.view())
    }

    /// Whether `name` is a project.
    pub fn exists(&self, name: &str) -> bool {
        self.record(name).is_ok()
    }

    /// Every project, `default` first.
    pub fn list(&self) -> Result<Vec<Project>> {
        let mut out = vec![self.get(DEFAULT_PROJECT)?];
        for r in self.records.list().map_err(store_err)? {
            if r.name != DEFAULT_PROJECT {
                out.push(r.view());
            }
        }
        Ok(out)
    }

    /// Makes a project; its limits are checked first.
    pub fn create(&self, req: ProjectCreate) -> Result<Project> {
        crate::name::validate_name_within("project", &req.name, MAX_PROJECT_NAME)?;
        if req.name == DEFAULT_PROJECT {
            return Err(Error::conflict("the project default exists already"));
        }
        quota::Quota::parse(&req.config)?;
        let mut config = req.config;
        // New projects have images of their own unless told otherwise, as in Incus.
        config
            .entry(vessel_api::FEATURES_IMAGES.into())
            .or_insert_with(|| "true".into());
        let r = ProjectRecord {
            name: req.name,
            description: req.description,
            config,
        };
        self.records.insert(&r.name, &r).map_err(|e| match e {
            crate::store::StoreError::Exists(_) => {
                Error::conflict(format!("a project named {:?} exists already", r.name))
            }
            e => store_err(e),
        })?;
        Ok(r.view())
    }

    /// Changes a project's description and limits (an empty value unsets a limit). Lowering
    /// a limit below what the project uses is allowed: it blocks growth, it stops nothing.
    pub fn update(&self, name: &str, req: ProjectUpdate) -> Result<Project> {
        if name == DEFAULT_PROJECT && req.config.contains_key(vessel_api::FEATURES_IMAGES) {
            return Err(Error::invalid(
                "the project default always has images of its own; features.images is for \
                 other projects",
            ));
        }
        // The keys asked for are applied to the project as it is: a change another cluster
        // member made in between is read and kept (the write refused it; tried again).
        let mut tries = 0;
        loop {
            let (mut r, version) = self.versioned(name)?;
            for (k, v) in &req.config {
                if v.is_empty() {
                    r.config.remove(k);
                } else {
                    r.config.insert(k.clone(), v.clone());
                }
            }
            quota::Quota::parse(&r.config)?;
            if let Some(d) = &req.description {
                r.description = d.clone();
            }
            match self.records.put_if(name, &r, version) {
                Err(crate::store::StoreError::Changed(_)) if tries < 8 => {
                    tracing::info!(project = %name, "changed on another member meanwhile; applying the change again");
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(50 * tries));
                }
                stored => {
                    stored.map_err(store_err)?;
                    return Ok(r.view());
                }
            }
        }
    }

    /// Deletes a project that holds nothing (`holds` lists what it still has).
    pub fn delete(&self, name: &str, holds: &[String]) -> Result<Project> {
        if name == DEFAULT_PROJECT {
            return Err(Error::invalid("the project default cannot be deleted"));
        }
        let r = self.record(name)?;
        if !holds.is_empty() {
            return Err(Error::conflict(format!(
                "project {name:?} still has {}; delete them first",
                holds.join(", ")
            )));
        }
        self.records.delete(name).map_err(store_err)?;
        Ok(r.view())
    }

    /// The project whose images `name` uses: its own (`features.images`, unset or true), or
    /// `default`'s.
    pub fn image_project(&self, name: &str) -> Result<String> {
        let r = self.record(name)?;
        let own = r
            .config
            .get(vessel_api::FEATURES_IMAGES)
            .is_none_or(|v| v == "true");
        Ok(if own {
            name.to_string()
        } else {
            DEFAULT_PROJECT.to_string()
        })
    }

    /// The project's limits.
    pub fn quota(&self, name: &str) -> Result<quota::Quota> {
        quota::Quota::parse(&self.record(name)?.config)
    }

    /// Has quota guards take `lock` too (the cluster's).
    pub fn set_cluster_lock(&self, lock: ClusterQuotaLock) {
        let _ = self.cluster_lock.set(lock);
    }

    /// Taken across a quota check of `project` and the change it allowed, of what this
    /// member counts alone (networks, snapshots, volumes in its pools).
    pub async fn quota_guard(&self, project: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = self
            .quota_locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(project.to_string())
            .or_default()
            .clone();
        lock.lock_owned().await
    }

    /// As [`ProjectService::quota_guard`], for a check of what the project's instances use
    /// (a new one, one growing, one made from a backup or arriving): when its limits count
    /// them, every member's count, so the cluster's lock is taken too (a launch on another
    /// member waits for it; an error when it cannot be had).
    pub async fn instances_quota_guard(&self, project: &str) -> Result<QuotaGuard> {
        let local = self.quota_guard(project).await;
        let cluster = match self.cluster_lock.get() {
            Some(take) if self.quota(project).is_ok_and(|q| q.counts_instances()) => {
                take(project.to_string()).await?
            }
            _ => None,
        };
        Ok(QuotaGuard {
            _cluster: cluster,
            _local: local,
        })
    }
}

/// Longest project name: short enough that `PROJECT.NAME` stays a usable name everywhere.
pub const MAX_PROJECT_NAME: usize = 32;

fn store_err(e: crate::store::StoreError) -> Error {
    let mut e: Error = e.into();
    if e.kind == crate::error::ErrorKind::Internal {
        e.message = format!("projects: {}", e.message);
    }
    e
}

#[cfg(test)]
mod tests;
