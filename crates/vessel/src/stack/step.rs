//! A plan's steps: what to do with one object, and why.

use std::collections::BTreeMap;

/// The kinds of object a stack declares, in the order they are made (deleted in reverse).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Object {
    Project,
    Pool,
    Network,
    Image,
    Volume,
    Instance,
    Forward,
    Balancer,
}

impl Object {
    /// As the plan shows it.
    pub fn name(self) -> &'static str {
        match self {
            Object::Project => "project",
            Object::Pool => "pool",
            Object::Network => "network",
            Object::Image => "image",
            Object::Volume => "volume",
            Object::Instance => "instance",
            Object::Forward => "forward",
            Object::Balancer => "balancer",
        }
    }
}

/// A change made in place.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// An instance's or a project's configuration keys: to set and to unset.
    Config {
        set: BTreeMap<String, String>,
        unset: Vec<String>,
    },
    /// A volume grown to this many bytes.
    Size(u64),
    /// A network's ACL rules.
    Acl(String),
}

/// What to do with one object.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Make it (an image: pull or build it).
    Create,
    /// Change it in place.
    Change(Change),
    /// Delete it and make it anew (what it is made from changed).
    Replace,
    /// Delete it (the stack owns it and no longer declares it; with `--prune` or `destroy`).
    Delete,
}

impl Action {
    /// As the plan shows it.
    pub fn verb(&self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Change(_) => "change in place",
            Action::Replace => "replace",
            Action::Delete => "delete",
        }
    }
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub object: Object,
    /// Its name: `NETWORK/PORT` for a forward, `NETWORK/NAME` for a balancer,
    /// `POOL/NAME` for a volume.
    pub name: String,
    pub action: Action,
    /// Why, in words a person can check.
    pub reason: String,
}

impl Step {
    pub fn new(
        object: Object,
        name: impl Into<String>,
        action: Action,
        reason: impl Into<String>,
    ) -> Self {
        Step {
            object,
            name: name.into(),
            action,
            reason: reason.into(),
        }
    }
}

/// The error for an object of the declared name that the stack does not own.
pub fn not_ours(object: Object, name: &str, stack: &str, owner: Option<&String>) -> String {
    format!(
        "{} {name} exists and is not stack {stack}'s ({} is {}): rename it, delete it, or take \
         it out of the stack",
        object.name(),
        super::OWNER_KEY,
        owner.map_or("not set".to_string(), |o| format!("{o:?}"))
    )
}
