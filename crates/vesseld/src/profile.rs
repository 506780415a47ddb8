//! Profiles: named sets of instance keys and networks, kept per project (as `PROJECT.NAME`
//! outside `default`). This service owns their records; what a change does to the instances
//! using a profile goes through the instance service (`InstanceService::config_update`,
//! under each instance's lock), driven by the API layer.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use vessel_api::{InstanceConfigPatch, Profile, ProfilePut};

use crate::error::{Error, Result};
use crate::store::{Records, Store, StoreError};

/// What the store keeps of a profile (its qualified name is the key).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
struct ProfileRecord {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    config: BTreeMap<String, String>,
    #[serde(default)]
    networks: Vec<String>,
    #[serde(default)]
    volumes: Vec<vessel_api::VolumeDevice>,
}

/// What the instances here using a profile may have missed of its changes.
#[derive(Debug, Clone)]
pub struct Missed {
    /// Everything they may have had of it (each note's keys, networks and volumes).
    pub before: Profile,
    /// The notes (their keys) this stands for.
    pub notes: Vec<String>,
}

/// The profiles of every project.
#[derive(Clone)]
pub struct ProfileService {
    records: Records<ProfileRecord>,
    /// Where the notes of missed changes are (this member's own kind).
    store: Arc<dyn Store>,
}

fn store_err(e: StoreError) -> Error {
    e.into()
}

/// The answer for a profile that does not exist.
pub fn not_found(name: &str) -> Error {
    Error::not_found(format!(
        "profile {name:?} not found; see `vessel profile list`"
    ))
}

impl ProfileService {
    /// The profiles kept in `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        ProfileService {
            records: Records::new(store.clone(), "profile"),
            store,
        }
    }

    fn view(r: ProfileRecord) -> Profile {
        Profile {
            name: r.name,
            description: r.description,
            config: r.config,
            networks: r.networks,
            volumes: r.volumes,
            used_by: Vec::new(),
        }
    }

    /// Every profile (qualified names), sorted by name.
    pub fn list(&self) -> Result<Vec<Profile>> {
        Ok(self
            .records
            .list()
            .map_err(store_err)?
            .into_iter()
            .map(Self::view)
            .collect())
    }

    /// One profile by qualified name.
    pub fn get(&self, name: &str) -> Result<Profile> {
        self.records
            .get(name)
            .map_err(store_err)?
            .map(Self::view)
            .ok_or_else(|| not_found(name))
    }

    /// Notes that the instances here using profile `name` may have missed its changes
    /// since `before` (unless a note of that content stands): see
    /// `api/profile_catch_up.rs`.
    pub fn note_missed(&self, name: &str, before: &Profile) -> Result<()> {
        let r = Self::stored(name, before.clone().into());
        let body = serde_json::to_string(&r)
            .map_err(|e| Error::internal(format!("a profile's record: {e}")))?;
        crate::store::profile_missed(self.store.as_ref(), name, &body).map_err(store_err)
    }

    /// The profiles whose changes the instances here may have missed, by name, each with
    /// everything they may have had of it (the notes' contents together: a change from
    /// that reaches each of them, whichever it had) and the notes said so (see
    /// [`ProfileService::note_missed`]).
    pub fn missed(&self) -> Result<BTreeMap<String, Missed>> {
        let mut out = BTreeMap::<String, Missed>::new();
        for (note, body) in self
            .store
            .object_list(crate::store::PROFILE_MISSED)
            .map_err(store_err)?
        {
            let name = note.rsplit_once('/').map_or(note.as_str(), |(n, _)| n);
            let had = match Self::parse(&body) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(profile = %name, error = %e.message, "a note of a missed profile change does not parse: dropped");
                    self.caught_up(std::slice::from_ref(&note))?;
                    continue;
                }
            };
            let m = out.entry(name.to_string()).or_insert_with(|| Missed {
                before: Profile {
                    name: name.to_string(),
                    ..Default::default()
                },
                notes: Vec::new(),
            });
            for (k, v) in had.config {
                m.before.config.entry(k).or_insert(v);
            }
            for n in had.networks {
                if !m.before.networks.contains(&n) {
                    m.before.networks.push(n);
                }
            }
            for v in had.volumes {
                if !m.before.volumes.contains(&v) {
                    m.before.volumes.push(v);
                }
            }
            m.notes.push(note);
        }
        Ok(out)
    }

    /// The instances here have taken what `notes` said they may have missed.
    pub fn caught_up(&self, notes: &[String]) -> Result<()> {
        for note in notes {
            match self.store.object_delete(crate::store::PROFILE_MISSED, note) {
                Ok(()) | Err(StoreError::NotFound(_)) => {}
                Err(e) => return Err(store_err(e)),
            }
        }
        Ok(())
    }

    /// The profile a record's body (as the store keeps it) holds.
    pub fn parse(body: &str) -> Result<Profile> {
        serde_json::from_str::<ProfileRecord>(body)
            .map(Self::view)
            .map_err(|e| Error::internal(format!("a profile's record does not parse: {e}")))
    }

    /// Checks a profile's keys as an instance would take them (each key and value, the
    /// limits as a whole).
    pub fn check(config: &BTreeMap<String, String>) -> Result<()> {
        let probe = crate::instance::config::blank(vessel_api::InstanceType::Container);
        let patch = InstanceConfigPatch {
            set: config.clone(),
            unset: Vec::new(),
        };
        crate::instance::config::plan(&probe, &patch).map(|_| ())
    }

    /// The record of profile `name` with content `p`, its keys checked.
    fn record(name: &str, p: ProfilePut) -> Result<ProfileRecord> {
        Self::check(&p.config)?;
        for n in &p.networks {
            crate::name::validate_name("network", n)?;
        }
        for v in &p.volumes {
            crate::name::validate_name("pool", &v.pool)?;
            crate::name::validate_name("volume", &v.volume)?;
        }
        Ok(Self::stored(name, p))
    }

    /// The record of profile `name` with content `p`, as it is.
    fn stored(name: &str, p: ProfilePut) -> ProfileRecord {
        ProfileRecord {
            name: name.to_string(),
            description: p.description,
            config: p.config,
            networks: p.networks,
            volumes: p.volumes,
        }
    }

    /// Makes a profile (qualified `name`).
    pub fn create(&self, name: &str, p: ProfilePut) -> Result<Profile> {
        let r = Self::record(name, p)?;
        self.records.insert(name, &r).map_err(|e| match e {
            StoreError::Exists(_) => Error::conflict(format!(
                "a profile named {:?} exists already",
                crate::project::split(name).1
            )),
            e => store_err(e),
        })?;
        Ok(Self::view(r))
    }

    /// Replaces an existing profile's content.
    pub fn put(&self, name: &str, p: ProfilePut) -> Result<Profile> {
        self.get(name)?;
        let r = Self::record(name, p)?;
        self.records.put(name, &r).map_err(store_err)?;
        Ok(Self::view(r))
    }

    /// Deletes a profile no instance uses (`users`: those that do).
    pub fn delete(&self, name: &str, users: &[String]) -> Result<Profile> {
        let p = self.get(name)?;
        if !users.is_empty() {
            return Err(Error::conflict(format!(
                "profile {:?} is used by instance(s) {}; delete them first",
                crate::project::split(name).1,
                users.join(", ")
            )));
        }
        self.records.delete(name).map_err(store_err)?;
        Ok(p)
    }
}

/// The keys of `profiles` applied in order (a later one's value wins).
pub fn merged(profiles: &[&Profile]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for p in profiles {
        out.extend(p.config.clone());
    }
    out
}

/// The change that brings an instance from what profiles gave it (`before`) to what they give
/// now (`after`), leaving the keys set on the instance itself (`own`) alone; `current` is the
/// instance's configuration now.
pub fn patch_for(
    current: &BTreeMap<String, String>,
    own: &BTreeMap<String, String>,
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
) -> InstanceConfigPatch {
    let mut patch = InstanceConfigPatch::default();
    for k in before.keys().chain(after.keys()) {
        if own.contains_key(k) || patch.set.contains_key(k) || patch.unset.contains(k) {
            continue;
        }
        match after.get(k) {
            Some(v) if current.get(k) != Some(v) => {
                patch.set.insert(k.clone(), v.clone());
            }
            Some(_) => {}
            None if current.contains_key(k) => patch.unset.push(k.clone()),
            None => {}
        }
    }
    patch
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn missed_changes_are_noted_once_per_content_and_read_together() {
        let dir = std::env::temp_dir().join(format!("vessel-profile-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let store: Arc<dyn Store> =
            Arc::new(crate::store::SqliteStore::open(&dir.join("db")).unwrap());
        let svc = ProfileService::new(store);
        let had = |config: &[(&str, &str)], networks: &[&str]| Profile {
            name: "web".into(),
            config: map(config),
            networks: networks.iter().map(|n| n.to_string()).collect(),
            ..Default::default()
        };
        let v0 = had(&[("user.a", "0")], &["n0"]);
        let v1 = had(&[("user.a", "1"), ("user.k", "1")], &["n0", "n1"]);
        svc.note_missed("web", &v0).unwrap();
        svc.note_missed("web", &v0).unwrap();
        svc.note_missed("web", &v1).unwrap();
        svc.note_missed("acme.db", &v0).unwrap();
        let missed = svc.missed().unwrap();
        assert_eq!(missed.keys().collect::<Vec<_>>(), ["acme.db", "web"]);
        let web = &missed["web"];
        assert_eq!(web.notes.len(), 2, "one note per content");
        // Every key and network any of them had: a change from it reaches each instance.
        assert_eq!(
            web.before.config.keys().collect::<Vec<_>>(),
            ["user.a", "user.k"]
        );
        let mut nets = web.before.networks.clone();
        nets.sort();
        assert_eq!(nets, ["n0", "n1"]);
        // A note made after they were read stays when they go.
        svc.note_missed("web", &had(&[("user.z", "2")], &[]))
            .unwrap();
        svc.caught_up(&web.notes).unwrap();
        let left = svc.missed().unwrap();
        assert_eq!(left["web"].notes.len(), 1);
        assert_eq!(
            left["web"].before.config.keys().collect::<Vec<_>>(),
            ["user.z"]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_profile_change_leaves_the_instances_own_keys() {
        let current = map(&[
            ("limits.memory", "64MiB"),
            ("limits.cpu", "2"),
            ("user.tier", "small"),
        ]);
        let own = map(&[("limits.cpu", "2")]);
        let before = map(&[
            ("limits.memory", "64MiB"),
            ("limits.cpu", "1"),
            ("user.tier", "small"),
        ]);
        let after = map(&[("limits.memory", "128MiB"), ("limits.cpu", "4")]);
        let p = patch_for(&current, &own, &before, &after);
        assert_eq!(p.set, map(&[("limits.memory", "128MiB")]));
        assert_eq!(p.unset, ["user.tier"]);
    }

    #[test]
    fn later_profiles_win() {
        let a = Profile {
            config: map(&[("limits.memory", "64MiB"), ("user.a", "1")]),
            ..Default::default()
        };
        let b = Profile {
            config: map(&[("limits.memory", "128MiB")]),
            ..Default::default()
        };
        assert_eq!(
            merged(&[&a, &b]),
            map(&[("limits.memory", "128MiB"), ("user.a", "1")])
        );
    }

    #[test]
    fn bad_keys_are_refused() {
        assert!(ProfileService::check(&map(&[("limits.memory", "lots")])).is_err());
        assert!(ProfileService::check(&map(&[("nope", "1")])).is_err());
        ProfileService::check(&map(&[("limits.memory", "1GiB"), ("user.x", "y")])).unwrap();
    }
}
