//! What `apply` must do to bring the instances in line with a stack: pure, from what is
//! declared and what is there.

use std::collections::{BTreeMap, BTreeSet};

use vessel_api::config::VolumeDevice;
use vessel_api::Limits;

use super::step::{not_ours, Action, Change, Object, Step};
use super::{Kind, OWNER_KEY};

/// An instance as the stack declares it, its image resolved to a fingerprint.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    pub name: String,
    pub image: String,
    pub kind: Kind,
    pub limits: Limits,
    /// The limits as `launch -l` takes them, in the stack's order.
    pub limit_args: Vec<String>,
    pub command: Vec<String>,
    pub environment: BTreeMap<String, String>,
    pub networks: Vec<String>,
    /// Volumes attached at its creation.
    pub volumes: Vec<VolumeDevice>,
    /// Configuration keys it should have (`snapshots.*`, `boot.*`, `user.*`).
    pub config: BTreeMap<String, String>,
}

/// An instance as it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Current {
    pub name: String,
    pub image: String,
    pub kind: Kind,
    pub limits: Limits,
    pub command: Vec<String>,
    pub environment: BTreeMap<String, String>,
    pub networks: Vec<String>,
    pub volumes: Vec<VolumeDevice>,
    pub config: BTreeMap<String, String>,
}

/// What this apply makes anew before the instances: networks replaced, image aliases
/// pulled or built again. An instance on such a network or of such an alias is replaced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Remade {
    pub networks: BTreeSet<String>,
    pub images: BTreeSet<String>,
}

/// The volumes of a desired instance in the form they are compared in.
fn mounts(v: &[VolumeDevice]) -> BTreeSet<(String, String, String)> {
    v.iter()
        .map(|d| (d.pool.clone(), d.volume.clone(), d.path.clone()))
        .collect()
}

/// The configuration key of a `launch -l` limit that can change in place, if it can.
fn config_key(limit: &str) -> Option<String> {
    match limit {
        "pids" => Some("limits.processes".into()),
        "cpu" | "cpu.weight" | "cpuset" | "memory" | "memory.swap" | "io.weight" | "disk" => {
            Some(format!("limits.{limit}"))
        }
        _ => None,
    }
}

/// The in-place keys of limits that are set in `l`.
fn set_limit_keys(l: &Limits) -> Vec<&'static str> {
    let mut keys = Vec::new();
    for (on, key) in [
        (l.cpu.is_some(), "limits.cpu"),
        (l.cpu_weight.is_some(), "limits.cpu.weight"),
        (l.cpuset.is_some(), "limits.cpuset"),
        (l.memory.is_some(), "limits.memory"),
        (l.memory_swap.is_some(), "limits.memory.swap"),
        (l.pids.is_some(), "limits.processes"),
        (l.io_weight.is_some(), "limits.io.weight"),
        (l.disk.is_some(), "limits.disk"),
    ] {
        if on {
            keys.push(key);
        }
    }
    keys
}

/// The steps that make `current` what `desired` declares for the stack `stack`; `prune`
/// deletes what the stack owns and no longer declares. An instance of the name that the
/// stack does not own is an error: apply never takes over what it did not make. `aliases`
/// maps each desired instance to the image alias it names (for `remade`).
pub fn plan(
    stack: &str,
    desired: &[Desired],
    current: &[Current],
    remade: &Remade,
    aliases: &BTreeMap<String, String>,
    prune: bool,
) -> Result<Vec<Step>, String> {
    let by_name: BTreeMap<&str, &Current> = current.iter().map(|c| (c.name.as_str(), c)).collect();
    let owner = |c: &Current| c.config.get(OWNER_KEY).cloned();
    let mut steps = Vec::new();
    for d in desired {
        let Some(c) = by_name.get(d.name.as_str()) else {
            steps.push(Step::new(
                Object::Instance,
                &d.name,
                Action::Create,
                "declared, not there",
            ));
            continue;
        };
        match owner(c) {
            Some(o) if o == stack => {}
            other => return Err(not_ours(Object::Instance, &d.name, stack, other.as_ref())),
        }
        let mut replace = Vec::new();
        for n in d.networks.iter().filter(|n| remade.networks.contains(*n)) {
            replace.push(format!("network {n} is made anew"));
        }
        if let Some(a) = aliases.get(&d.name).filter(|a| remade.images.contains(*a)) {
            replace.push(format!("image {a} is pulled or built anew"));
        }
        if mounts(&d.volumes) != mounts(&c.volumes) {
            replace.push("volumes".into());
        }
        if c.image != d.image {
            replace.push(format!("image {} → {}", short(&c.image), short(&d.image)));
        }
        if c.kind != d.kind {
            replace.push(format!("type {:?} → {:?}", c.kind, d.kind).to_lowercase());
        }
        if !d.command.is_empty() && c.command != d.command {
            replace.push("command".into());
        }
        if c.networks != d.networks {
            replace.push(format!(
                "networks [{}] → [{}]",
                c.networks.join(", "),
                d.networks.join(", ")
            ));
        }
        let in_place: Vec<(String, String)> = d
            .limit_args
            .iter()
            .filter_map(|a| a.split_once('='))
            .filter_map(|(k, v)| config_key(k).map(|k| (k, v.to_string())))
            .collect();
        if c.limits != d.limits && in_place.len() != d.limit_args.len() {
            replace.push("limits that cannot change in place (io.*_bps, io.*_iops)".into());
        }
        if !replace.is_empty() {
            steps.push(Step::new(
                Object::Instance,
                &d.name,
                Action::Replace,
                replace.join("; "),
            ));
            continue;
        }
        let mut set = BTreeMap::new();
        let mut unset = Vec::new();
        let mut why = Vec::new();
        if c.limits != d.limits {
            set.extend(in_place.iter().cloned());
            let declared: Vec<&str> = in_place.iter().map(|(k, _)| k.as_str()).collect();
            unset.extend(
                set_limit_keys(&c.limits)
                    .into_iter()
                    .filter(|k| !declared.contains(k))
                    .map(String::from),
            );
            why.push("limits".to_string());
        }
        if c.environment != d.environment {
            for (k, v) in &d.environment {
                if c.environment.get(k) != Some(v) {
                    set.insert(format!("environment.{k}"), v.clone());
                }
            }
            for k in c
                .environment
                .keys()
                .filter(|k| !d.environment.contains_key(*k))
            {
                unset.push(format!("environment.{k}"));
            }
            why.push("environment (from its next start)".to_string());
        }
        // Declared keys are set; the snapshot schedule is the stack's alone (unset when left
        // out); other keys left out stay as they are.
        let mut keys = Vec::new();
        for (k, v) in &d.config {
            if c.config.get(k) != Some(v) {
                set.insert(k.clone(), v.clone());
                keys.push(k.clone());
            }
        }
        for k in ["snapshots.schedule", "snapshots.expiry"] {
            if c.config.contains_key(k) && !d.config.contains_key(k) {
                unset.push(k.to_string());
                keys.push(k.to_string());
            }
        }
        if !keys.is_empty() {
            why.push(format!("config {}", keys.join(", ")));
        }
        if !set.is_empty() || !unset.is_empty() {
            steps.push(Step::new(
                Object::Instance,
                &d.name,
                Action::Change(Change::Config { set, unset }),
                why.join(", "),
            ));
        }
    }
    if prune {
        for c in current {
            let declared = desired.iter().any(|d| d.name == c.name);
            if !declared && owner(c).as_deref() == Some(stack) {
                steps.push(Step::new(
                    Object::Instance,
                    &c.name,
                    Action::Delete,
                    format!("stack {stack}'s, no longer declared"),
                ));
            }
        }
    }
    Ok(steps)
}

fn short(fingerprint: &str) -> &str {
    &fingerprint[..fingerprint.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plan with nothing made anew before the instances.
    fn plain(
        stack: &str,
        want: &[Desired],
        there: &[Current],
        prune: bool,
    ) -> Result<Vec<Step>, String> {
        plan(
            stack,
            want,
            there,
            &Remade::default(),
            &BTreeMap::new(),
            prune,
        )
    }

    fn desired(name: &str) -> Desired {
        Desired {
            name: name.into(),
            image: "aaaa".into(),
            kind: Kind::Container,
            limits: crate::limits::parse_limits(&["memory=64MiB".into()]).unwrap(),
            limit_args: vec!["memory=64MiB".into()],
            command: Vec::new(),
            environment: BTreeMap::new(),
            networks: Vec::new(),
            volumes: Vec::new(),
            config: BTreeMap::new(),
        }
    }

    fn current(d: &Desired, owner: Option<&str>) -> Current {
        Current {
            name: d.name.clone(),
            image: d.image.clone(),
            kind: d.kind,
            limits: d.limits.clone(),
            command: vec!["sh".into()],
            environment: d.environment.clone(),
            networks: d.networks.clone(),
            volumes: d.volumes.clone(),
            config: owner
                .map(|o| [(OWNER_KEY.to_string(), o.to_string())].into())
                .unwrap_or_default(),
        }
    }

    #[test]
    fn from_nothing_then_nothing_to_do() {
        let want = vec![desired("a"), desired("b")];
        let steps = plain("s", &want, &[], false).unwrap();
        assert_eq!(
            steps.iter().filter(|s| s.action == Action::Create).count(),
            2
        );
        let there: Vec<_> = want.iter().map(|d| current(d, Some("s"))).collect();
        assert_eq!(plain("s", &want, &there, true).unwrap(), vec![]);
    }

    #[test]
    fn a_limit_changes_in_place_and_an_image_replaces() {
        let mut want = vec![desired("a"), desired("b")];
        let there: Vec<_> = want.iter().map(|d| current(d, Some("s"))).collect();
        want[0].limit_args = vec!["memory=128MiB".into(), "cpu=0.5".into()];
        want[0].limits = crate::limits::parse_limits(&want[0].limit_args).unwrap();
        want[1].image = "bbbb".into();
        let steps = plain("s", &want, &there, false).unwrap();
        assert_eq!(
            steps[0].action,
            Action::Change(Change::Config {
                set: [
                    ("limits.cpu".to_string(), "0.5".to_string()),
                    ("limits.memory".into(), "128MiB".into())
                ]
                .into(),
                unset: vec![]
            })
        );
        assert_eq!(steps[1].action, Action::Replace);
        assert!(
            steps[1].reason.contains("image aaaa → bbbb"),
            "{}",
            steps[1].reason
        );
    }

    #[test]
    fn prune_deletes_only_what_the_stack_owns() {
        let want = vec![desired("a")];
        let mut there = vec![current(&want[0], Some("s"))];
        there.push(current(&desired("gone"), Some("s")));
        there.push(current(&desired("theirs"), Some("other")));
        there.push(current(&desired("nobodys"), None));
        let steps = plain("s", &want, &there, true).unwrap();
        assert_eq!(
            steps,
            vec![Step::new(
                Object::Instance,
                "gone",
                Action::Delete,
                "stack s's, no longer declared"
            )]
        );
        assert!(plain("s", &want, &there, false).unwrap().is_empty());
    }

    #[test]
    fn an_instance_the_stack_does_not_own_is_never_taken_over() {
        let want = vec![desired("a")];
        let there = vec![current(&want[0], None)];
        let e = plain("s", &want, &there, false).unwrap_err();
        assert!(e.contains("instance a exists and is not stack s's"), "{e}");
    }

    #[test]
    fn what_is_made_anew_carries_its_instances_and_keys_change_in_place() {
        let mut want = vec![desired("a"), desired("b"), desired("c")];
        want[0].networks = vec!["lan".into()];
        let there: Vec<_> = want.iter().map(|d| current(d, Some("s"))).collect();
        let remade = Remade {
            networks: ["lan".to_string()].into(),
            images: ["bb".to_string()].into(),
        };
        let aliases: BTreeMap<String, String> = [("b".to_string(), "bb".to_string())].into();
        want[2].config = [("snapshots.schedule".to_string(), "@daily".to_string())].into();
        let steps = plan("s", &want, &there, &remade, &aliases, false).unwrap();
        assert_eq!(steps.len(), 3, "{steps:?}");
        assert_eq!(steps[0].action, Action::Replace);
        assert_eq!(steps[0].reason, "network lan is made anew");
        assert_eq!(steps[1].reason, "image bb is pulled or built anew");
        assert_eq!(
            steps[2].action,
            Action::Change(Change::Config {
                set: [("snapshots.schedule".to_string(), "@daily".to_string())].into(),
                unset: vec![]
            })
        );
        // The schedule taken out of the stack is unset; a volume added replaces.
        let mut there = there;
        there[2]
            .config
            .insert("snapshots.schedule".into(), "@daily".into());
        want[2].config.clear();
        want[1].volumes = vec![VolumeDevice {
            pool: "p".into(),
            volume: "v".into(),
            path: "/data".into(),
        }];
        let steps = plan("s", &want, &there, &Remade::default(), &aliases, false).unwrap();
        assert_eq!(
            (steps[0].action.verb(), steps[0].reason.as_str()),
            ("replace", "volumes")
        );
        assert_eq!(
            steps[1].action,
            Action::Change(Change::Config {
                set: BTreeMap::new(),
                unset: vec!["snapshots.schedule".into()]
            })
        );
    }
}
