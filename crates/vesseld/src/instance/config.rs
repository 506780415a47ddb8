//! An instance's configuration as keys (`vessel config set web limits.memory=1GiB`): the
//! keys read from the instance's fields, a change planned and checked whole before anything
//! is applied (`plan`, pure), then applied under the instance's lock: a running container's
//! cgroup takes its new limits at once, a root disk grows in place, the rest is kept for the
//! next start. Each changed key says which.

use std::collections::BTreeMap;

use vessel_api::size::{format_size, parse_size};
use vessel_api::{
    ConfigEffect, ConfigKeyChange, Instance, InstanceConfigChange, InstanceConfigPatch,
    InstanceStatus, InstanceType, Limits, INSTANCE_KEYS,
};

use super::InstanceService;
use crate::error::{Error, Result};

/// Longest value of a free (`user.*`) or environment key.
const MAX_VALUE: usize = 4096;
/// Longest key.
const MAX_KEY: usize = 128;
/// Most `user.*` keys on one instance.
const MAX_USER_KEYS: usize = 256;
/// Longest delay after an autostarted instance, seconds.
const MAX_AUTOSTART_DELAY: u64 = 3600;

/// A stopped instance of `kind` with no limits, environment or keys: what a profile's keys or
/// a create request are planned on before any instance exists.
pub fn blank(kind: InstanceType) -> Instance {
    Instance {
        project: None,
        name: String::new(),
        instance_type: kind,
        status: InstanceStatus::Stopped,
        image: String::new(),
        privileged: false,
        idmap: None,
        limits: Limits::default(),
        command: Vec::new(),
        environment: BTreeMap::new(),
        config: BTreeMap::new(),
        profiles: Vec::new(),
        own_config: BTreeMap::new(),
        from_profiles: Default::default(),
        ssh_keys: Vec::new(),
        storage: None,
        created_at: String::new(),
        last_exit_code: None,
        last_exit_reason: None,
        error: None,
        state: None,
        vm: None,
        nics: Vec::new(),
        volumes: Vec::new(),
        root_disk: None,
        location: None,
    }
}

/// The instance's configuration as keys and values.
pub fn view(inst: &Instance) -> BTreeMap<String, String> {
    let mut c = BTreeMap::new();
    let l = &inst.limits;
    let mut put = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            c.insert(k.to_string(), v);
        }
    };
    put("limits.cpu", l.cpu.map(|v| v.to_string()));
    put("limits.cpu.weight", l.cpu_weight.map(|v| v.to_string()));
    put("limits.cpuset", l.cpuset.clone());
    put("limits.memory", l.memory.map(format_size));
    put("limits.memory.swap", l.memory_swap.map(format_size));
    put("limits.processes", l.pids.map(|v| v.to_string()));
    put("limits.io.weight", l.io_weight.map(|v| v.to_string()));
    put("limits.disk", l.disk.map(format_size));
    put(
        "security.privileged",
        inst.privileged.then(|| "true".to_string()),
    );
    for (k, v) in &inst.environment {
        c.insert(format!("environment.{k}"), v.clone());
    }
    c.extend(inst.config.clone());
    c
}

/// An instance's settings after a change, and the keys whose value changed.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub limits: Limits,
    pub environment: BTreeMap<String, String>,
    pub config: BTreeMap<String, String>,
    /// Changed keys with their new values (`None`: unset).
    pub changed: Vec<(String, Option<String>)>,
}

impl Plan {
    /// Whether a limit other than the root disk's changed.
    pub fn cgroup_changed(&self, before: &Limits) -> bool {
        let strip = |l: &Limits| Limits {
            disk: None,
            ..l.clone()
        };
        strip(&self.limits) != strip(before)
    }
}

fn bad(key: &str, value: &str, why: impl std::fmt::Display) -> Error {
    Error::invalid(format!(
        "{key}={:?} is not accepted: {why}",
        crate::error::truncated(value, 64)
    ))
}

fn unknown(key: &str) -> Error {
    let keys: Vec<&str> = INSTANCE_KEYS.iter().map(|(k, _)| *k).collect();
    Error::invalid(format!(
        "no configuration key {:?}; the keys are: {} (io throttles are set at creation, with \
         -l io.read_bps=... and the like)",
        crate::error::truncated(key, 64),
        keys.join(", ")
    ))
}

fn number<T: std::str::FromStr>(key: &str, v: &str, what: &str) -> Result<T> {
    v.trim().parse().map_err(|_| bad(key, v, what))
}

fn size(key: &str, v: &str) -> Result<u64> {
    parse_size(v).map_err(|e| bad(key, v, e))
}

/// Checks a `user.*` or `environment.*` key's name part.
fn check_name(key: &str, name: &str, env: bool) -> Result<()> {
    let ok = !name.is_empty()
        && key.len() <= MAX_KEY
        && if env {
            !name.contains('=') && !name.contains('\0')
        } else {
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        };
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "invalid key {:?}: {} after the prefix, {MAX_KEY} characters in all",
            crate::error::truncated(key, 64),
            if env {
                "a name without '=' or NUL"
            } else {
                "letters, digits, '.', '-' and '_'"
            }
        )))
    }
}

/// Sets (`Some`) or unsets (`None`) one key on the settings being planned.
fn apply_key(
    key: &str,
    value: Option<&str>,
    l: &mut Limits,
    env: &mut BTreeMap<String, String>,
    config: &mut BTreeMap<String, String>,
) -> Result<()> {
    let v = value.unwrap_or_default();
    match key {
        "limits.cpu" => {
            l.cpu = value
                .map(|v| number(key, v, "give cores, e.g. 0.5 or 2"))
                .transpose()?
        }
        "limits.cpu.weight" => {
            l.cpu_weight = value
                .map(|v| number(key, v, "give 1 to 10000"))
                .transpose()?
        }
        "limits.cpuset" => l.cpuset = value.map(str::to_string),
        "limits.memory" => l.memory = value.map(|v| size(key, v)).transpose()?,
        "limits.memory.swap" => l.memory_swap = value.map(|v| size(key, v)).transpose()?,
        "limits.processes" => {
            l.pids = value
                .map(|v| number(key, v, "give a whole number"))
                .transpose()?
        }
        "limits.io.weight" => {
            l.io_weight = value
                .map(|v| number(key, v, "give 10 to 1000"))
                .transpose()?
        }
        "limits.disk" => {
            if value.is_none() {
                return Err(Error::invalid(
                    "limits.disk cannot be unset: a root disk is not taken away; give a size",
                ));
            }
            l.disk = Some(size(key, v)?);
        }
        "security.privileged" => {
            return Err(Error::invalid(
                "security.privileged is set at creation (--privileged): changing it would mean \
                 re-owning every file of the instance; make a new instance instead",
            ))
        }
        "boot.autostart" => {
            if value.is_some() && !matches!(v, "true" | "false") {
                return Err(bad(key, v, "give true or false"));
            }
            set_or_remove(config, key, value);
        }
        "boot.autostart.delay" => {
            if value.is_some() {
                let d: u64 = number(key, v, "give whole seconds")?;
                if d > MAX_AUTOSTART_DELAY {
                    return Err(bad(
                        key,
                        v,
                        format!("at most {MAX_AUTOSTART_DELAY} seconds"),
                    ));
                }
            }
            set_or_remove(config, key, value);
        }
        "boot.autostart.priority" => {
            if value.is_some() {
                let p: i64 = number(key, v, "give a whole number")?;
                if !(-10_000..=10_000).contains(&p) {
                    return Err(bad(key, v, "give -10000 to 10000"));
                }
            }
            set_or_remove(config, key, value);
        }
        "cluster.ha" => {
            if value.is_some() && !matches!(v, "true" | "false") {
                return Err(bad(key, v, "give true or false"));
            }
            set_or_remove(config, key, value);
        }
        "cluster.group" => {
            if value.is_some() {
                crate::name::validate_name("placement group", v)
                    .map_err(|e| bad(key, v, &e.message))?;
            }
            set_or_remove(config, key, value);
        }
        "cluster.evacuate" => {
            if value.is_some() {
                crate::cluster::EvacuateAction::parse(v).map_err(|why| bad(key, v, &why))?;
            }
            set_or_remove(config, key, value);
        }
        "snapshots.schedule" => {
            if value.is_some() {
                super::schedule::Schedule::parse(v).map_err(|why| bad(key, v, why))?;
            }
            set_or_remove(config, key, value);
        }
        "snapshots.expiry" => {
            if value.is_some() {
                super::schedule::expiry_secs(v).map_err(|why| bad(key, v, why))?;
            }
            set_or_remove(config, key, value);
        }
        _ if key.starts_with("user.") => {
            check_name(key, &key["user.".len()..], false)?;
            if v.len() > MAX_VALUE {
                return Err(bad(key, v, format!("at most {MAX_VALUE} bytes")));
            }
            set_or_remove(config, key, value);
        }
        _ if key.starts_with("environment.") => {
            let name = &key["environment.".len()..];
            check_name(key, name, true)?;
            if v.len() > MAX_VALUE || v.contains('\0') {
                return Err(bad(key, v, format!("at most {MAX_VALUE} bytes, no NUL")));
            }
            match value {
                Some(v) => env.insert(name.to_string(), v.to_string()),
                None => env.remove(name),
            };
        }
        _ => return Err(unknown(key)),
    }
    Ok(())
}

fn set_or_remove(config: &mut BTreeMap<String, String>, key: &str, value: Option<&str>) {
    match value {
        Some(v) => config.insert(key.to_string(), v.to_string()),
        None => config.remove(key),
    };
}

/// The settings `inst` would have after `patch`, every key and value checked (the limits as
/// a whole too): an error names the first bad one, and nothing is changed by it.
pub fn plan(inst: &Instance, patch: &InstanceConfigPatch) -> Result<Plan> {
    if let Some(k) = patch.unset.iter().find(|k| patch.set.contains_key(*k)) {
        return Err(Error::invalid(format!(
            "{k} is both set and unset in one change; do one"
        )));
    }
    let (mut limits, mut environment, mut config) = (
        inst.limits.clone(),
        inst.environment.clone(),
        inst.config.clone(),
    );
    for (k, v) in &patch.set {
        apply_key(k, Some(v), &mut limits, &mut environment, &mut config)?;
    }
    for k in &patch.unset {
        apply_key(k, None, &mut limits, &mut environment, &mut config)?;
    }
    if limits.memory_swap.is_some() && limits.memory.is_none() {
        return Err(Error::invalid(
            "limits.memory.swap needs limits.memory: set it too, or unset the swap limit",
        ));
    }
    super::limits::validate(&limits).map_err(|e| {
        Error::invalid(
            e.message
                .replace("limit pids", "limits.processes")
                .replace("limit ", "limits."),
        )
    })?;
    let users = config.keys().filter(|k| k.starts_with("user.")).count();
    if users > MAX_USER_KEYS {
        return Err(Error::invalid(format!(
            "at most {MAX_USER_KEYS} user.* keys per instance"
        )));
    }
    let next = Instance {
        limits: limits.clone(),
        environment: environment.clone(),
        config: config.clone(),
        ..inst.clone()
    };
    let (before, after) = (view(inst), view(&next));
    let mut changed: Vec<(String, Option<String>)> = after
        .iter()
        .filter(|(k, v)| before.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), Some(v.clone())))
        .collect();
    changed.extend(
        before
            .keys()
            .filter(|k| !after.contains_key(*k))
            .map(|k| (k.clone(), None)),
    );
    changed.sort();
    Ok(Plan {
        limits,
        environment,
        config,
        changed,
    })
}

/// Where a configuration change comes from.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    /// A person: the keys set become the instance's own, which its profiles do not override;
    /// a key unset falls back to the value its profiles give (here, merged), if any.
    User(BTreeMap<String, String>),
    /// The instance's profiles changed: its own keys are left as they are.
    Profiles,
}

/// The change `patch` from `source` as it applies to `inst`, and the instance's own keys after
/// it (pure).
pub fn sourced(
    inst: &Instance,
    patch: InstanceConfigPatch,
    source: &ConfigSource,
) -> Result<(InstanceConfigPatch, BTreeMap<String, String>)> {
    if let Some(k) = patch.unset.iter().find(|k| patch.set.contains_key(*k)) {
        return Err(Error::invalid(format!(
            "{k} is both set and unset in one change; do one"
        )));
    }
    let mut own = inst.own_config.clone();
    let ConfigSource::User(profiled) = source else {
        return Ok((patch, own));
    };
    if inst.profiles.is_empty() {
        return Ok((patch, own));
    }
    let mut out = InstanceConfigPatch {
        set: patch.set,
        unset: Vec::new(),
    };
    for (k, v) in &out.set {
        own.insert(k.clone(), v.clone());
    }
    for k in patch.unset {
        own.remove(&k);
        match profiled.get(&k) {
            Some(v) => {
                out.set.insert(k, v.clone());
            }
            None => out.unset.push(k),
        }
    }
    Ok((out, own))
}

/// When a changed key of `inst` takes effect, and why it waits if it does.
pub fn effect(inst: &Instance, key: &str) -> (ConfigEffect, Option<String>) {
    let running = matches!(
        inst.status,
        InstanceStatus::Running | InstanceStatus::Frozen
    );
    if key.starts_with("user.")
        || key.starts_with("boot.")
        || key.starts_with("snapshots.")
        || key.starts_with("cluster.")
    {
        return (ConfigEffect::Stored, None);
    }
    if key.starts_with("environment.") {
        return if running {
            (
                ConfigEffect::NextStart,
                Some("the environment of running processes does not change; restart it".into()),
            )
        } else {
            (ConfigEffect::NextStart, None)
        };
    }
    if key == "limits.disk" {
        return (ConfigEffect::Live, None);
    }
    match (inst.instance_type, running) {
        (InstanceType::Container, true) => (ConfigEffect::Live, None),
        (InstanceType::Container, false) => (ConfigEffect::NextStart, None),
        (InstanceType::Vm, true) => (
            ConfigEffect::NextStart,
            Some("a VM takes this limit at its next start; restart it".into()),
        ),
        (InstanceType::Vm, false) => (ConfigEffect::NextStart, None),
    }
}

impl InstanceService {
    /// The instance's configuration.
    pub fn config_get(&self, name: &str) -> Result<BTreeMap<String, String>> {
        Ok(view(&self.get_stored(name)?))
    }

    /// Applies a configuration change under the instance's lock: checked whole first, then
    /// a running container's cgroup, then the root disk (grown in place), then stored; a
    /// failure on the way leaves the instance as it was.
    pub async fn config_update(
        &self,
        name: &str,
        patch: InstanceConfigPatch,
        source: ConfigSource,
    ) -> Result<InstanceConfigChange> {
        let lock = self.lock_for(name);
        let _g = lock.lock().await;
        let inst = self.get_stored(name)?;
        let (patch, own) = sourced(&inst, patch, &source)?;
        let plan = plan(&inst, &patch)?;
        if plan.changed.is_empty() {
            if own != inst.own_config {
                self.store.instance_set_config(
                    name,
                    &inst.limits,
                    &inst.environment,
                    &inst.config,
                    &own,
                )?;
            }
            return Ok(InstanceConfigChange {
                config: view(&inst),
                changes: Vec::new(),
            });
        }
        let live = inst.instance_type == InstanceType::Container
            && matches!(
                inst.status,
                InstanceStatus::Running | InstanceStatus::Frozen
            );
        // The cgroup first: it is put back as it was if the disk cannot grow, while a grown
        // disk is not shrunk back.
        let cgroup = live && plan.cgroup_changed(&inst.limits);
        if cgroup {
            let (d, n, old, new) = (
                self.driver.clone(),
                name.to_string(),
                inst.limits.clone(),
                plan.limits.clone(),
            );
            tokio::task::spawn_blocking(move || d.update_limits(&n, &old, &new))
                .await
                .map_err(|e| Error::internal(format!("limits task: {e}")))??;
        }
        if let Some(size) = plan.limits.disk.filter(|s| Some(*s) != inst.limits.disk) {
            if let Err(e) = self.root_disk_resize_locked(&inst, size).await {
                if cgroup {
                    let _ = self.driver.update_limits(name, &plan.limits, &inst.limits);
                }
                return Err(e);
            }
        }
        // A running VM's memory changes live within the room it booted with.
        let mut memory_effect = None;
        let mut cpu_effect = None;
        if inst.instance_type == InstanceType::Vm && inst.status == InstanceStatus::Running {
            if plan.limits.memory != inst.limits.memory {
                memory_effect = Some(self.vm_memory(name, plan.limits.memory).await);
            }
            if plan.limits.cpu != inst.limits.cpu {
                cpu_effect = Some(self.vm_cpus(name, plan.limits.cpu).await);
            }
        }
        if let Err(e) = self.store.instance_set_config(
            name,
            &plan.limits,
            &plan.environment,
            &plan.config,
            &own,
        ) {
            if cgroup {
                let _ = self.driver.update_limits(name, &plan.limits, &inst.limits);
            }
            return Err(e.into());
        }
        let changes = plan
            .changed
            .iter()
            .map(|(key, value)| {
                let (effect, reason) = match (key.as_str(), &memory_effect, &cpu_effect) {
                    ("limits.memory", Some(m), _) => m.clone(),
                    ("limits.cpu", _, Some(c)) => c.clone(),
                    _ => effect(&inst, key),
                };
                ConfigKeyChange {
                    key: key.clone(),
                    value: value.clone(),
                    effect,
                    reason,
                }
            })
            .collect();
        tracing::info!(instance = %name, keys = ?plan.changed, "configuration changed");
        self.events
            .lifecycle("instance-updated", &super::path_of(name));
        Ok(InstanceConfigChange {
            config: view(&self.get_stored(name)?),
            changes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst() -> Instance {
        serde_json::from_value(serde_json::json!({
            "name": "web", "type": "container", "status": "running", "image": "x",
            "privileged": false, "limits": {"memory": 268435456u64}, "command": ["sh"],
            "environment": {"A": "1"}, "created_at": "t"
        }))
        .unwrap()
    }

    fn patch(set: &[(&str, &str)], unset: &[&str]) -> InstanceConfigPatch {
        InstanceConfigPatch {
            set: set
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            unset: unset.iter().map(|k| k.to_string()).collect(),
        }
    }

    #[test]
    fn keys_read_back_as_they_were_written() {
        let i = inst();
        let p = plan(
            &i,
            &patch(
                &[
                    ("limits.memory", "1GiB"),
                    ("limits.cpu", "1.5"),
                    ("limits.processes", "100"),
                    ("user.owner", "ops team"),
                    ("environment.B", "2"),
                    ("boot.autostart", "true"),
                ],
                &["environment.A"],
            ),
        )
        .unwrap();
        assert_eq!(p.limits.memory, Some(1 << 30));
        assert_eq!(p.limits.cpu, Some(1.5));
        assert_eq!(p.limits.pids, Some(100));
        let next = Instance {
            limits: p.limits.clone(),
            environment: p.environment.clone(),
            config: p.config.clone(),
            ..i.clone()
        };
        let v = view(&next);
        assert_eq!(v["limits.memory"], "1GiB");
        assert_eq!(v["limits.cpu"], "1.5");
        assert_eq!(v["user.owner"], "ops team");
        assert_eq!(v["environment.B"], "2");
        assert!(!v.contains_key("environment.A"));
        let keys: Vec<&str> = p.changed.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "boot.autostart",
                "environment.A",
                "environment.B",
                "limits.cpu",
                "limits.memory",
                "limits.processes",
                "user.owner"
            ]
        );
        assert!(p.cgroup_changed(&i.limits));
        // Setting what is set already changes nothing.
        let same = plan(&i, &patch(&[("limits.memory", "256MiB")], &[])).unwrap();
        assert!(same.changed.is_empty());
    }

    #[test]
    fn bad_keys_and_values_are_refused_whole() {
        let i = inst();
        for (set, unset, says) in [
            (vec![("limits.memory", "lots")], vec![], "limits.memory"),
            (vec![("limits.memory", "1MiB")], vec![], "limits.memory"),
            (vec![("limits.cpu", "fast")], vec![], "limits.cpu"),
            (vec![("limits.gpu", "1")], vec![], "no configuration key"),
            (
                vec![("security.privileged", "true")],
                vec![],
                "set at creation",
            ),
            (vec![("boot.autostart", "yes")], vec![], "true or false"),
            (vec![("boot.autostart.delay", "7200")], vec![], "at most"),
            (vec![("user.a b", "x")], vec![], "invalid key"),
            (
                vec![("limits.memory.swap", "0")],
                vec!["limits.memory"],
                "needs limits.memory",
            ),
            (vec![], vec!["limits.disk"], "cannot be unset"),
            (vec![("user.x", "1")], vec!["user.x"], "both set and unset"),
            (vec![("limits.processes", "0")], vec![], "limits.processes"),
        ] {
            let e = plan(&i, &patch(&set, &unset)).unwrap_err();
            assert!(e.message.contains(says), "{set:?} {unset:?}: {}", e.message);
        }
    }

    #[test]
    fn effects_say_live_or_next_start() {
        let mut i = inst();
        assert_eq!(effect(&i, "limits.memory").0, ConfigEffect::Live);
        assert_eq!(effect(&i, "environment.X").0, ConfigEffect::NextStart);
        assert!(effect(&i, "environment.X").1.is_some());
        assert_eq!(effect(&i, "user.x").0, ConfigEffect::Stored);
        i.status = InstanceStatus::Stopped;
        assert_eq!(effect(&i, "limits.memory"), (ConfigEffect::NextStart, None));
        i.instance_type = InstanceType::Vm;
        i.status = InstanceStatus::Running;
        let (e, why) = effect(&i, "limits.memory");
        assert_eq!(e, ConfigEffect::NextStart);
        assert!(why.unwrap().contains("next start"));
    }
}
