//! What the engine decides about: members with their capacity and use, requests for new
//! instances, the cluster's policy, projects' budgets, and recorded demand for plans.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A cluster member as the scheduler sees it: its size, what is in use, and the
/// anti-affinity groups of the instances it holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    /// The member's name in the cluster.
    pub name: String,
    /// Whether the member answers; an offline member is never chosen.
    pub online: bool,
    /// Cores it offers to instances.
    pub cpu_capacity: f64,
    /// Bytes of memory it offers to instances.
    pub memory_capacity: u64,
    /// Cores its instances ask for.
    pub cpu_used: f64,
    /// Bytes of memory its instances ask for.
    pub memory_used: u64,
    /// How many instances it holds.
    pub instances: u32,
    /// The anti-affinity groups of the instances it holds.
    #[serde(default)]
    pub groups: Vec<String>,
}

impl Member {
    /// An online, empty member of the given size.
    pub fn new(name: impl Into<String>, cpu_capacity: f64, memory_capacity: u64) -> Self {
        Member {
            name: name.into(),
            online: true,
            cpu_capacity,
            memory_capacity,
            cpu_used: 0.0,
            memory_used: 0,
            instances: 0,
            groups: Vec::new(),
        }
    }

    /// Cores not yet asked for (negative when the member is overcommitted).
    pub fn cpu_free(&self) -> f64 {
        self.cpu_capacity - self.cpu_used
    }

    /// Bytes of memory not yet asked for (zero when the member is overcommitted).
    pub fn memory_free(&self) -> u64 {
        self.memory_capacity.saturating_sub(self.memory_used)
    }

    /// Whether one of its instances belongs to anti-affinity group `group`.
    pub fn holds_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }
}

/// A new instance to place: what it asks for, whose it is, and its anti-affinity group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// The instance's name.
    pub name: String,
    /// The project it belongs to (its budget, if any, pays for it).
    pub project: String,
    /// Cores it asks for (`limits.cpu`).
    pub cpu: f64,
    /// Bytes of memory it asks for (`limits.memory`).
    pub memory: u64,
    /// Anti-affinity group: no two instances of a group share a member.
    #[serde(default)]
    pub group: Option<String>,
}

impl Request {
    /// A request of project `project` without a group.
    pub fn new(name: impl Into<String>, project: impl Into<String>, cpu: f64, memory: u64) -> Self {
        Request {
            name: name.into(),
            project: project.into(),
            cpu,
            memory,
            group: None,
        }
    }

    /// The same request in anti-affinity group `group`.
    pub fn in_group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }
}

/// How a cluster chooses among the members a new instance fits on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// The least loaded member: load evens out and a lost member costs least.
    Spread,
    /// The most loaded member that still fits: members fill one by one and empty ones can
    /// be powered down.
    Binpack,
}

impl Policy {
    /// Every policy's name, as `FromStr` reads it.
    pub const NAMES: [&'static str; 2] = ["spread", "binpack"];
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Policy::Spread => "spread",
            Policy::Binpack => "binpack",
        })
    }
}

/// A policy name that is not one of [`Policy::NAMES`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown placement policy {0:?}: choose spread or binpack")]
pub struct UnknownPolicy(pub String);

impl FromStr for Policy {
    type Err = UnknownPolicy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "spread" => Ok(Policy::Spread),
            "binpack" => Ok(Policy::Binpack),
            other => Err(UnknownPolicy(other.to_string())),
        }
    }
}

/// What a project may still use; `None` is no limit. Placing an instance consumes it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    /// Cores it may still ask for.
    pub cpu: Option<f64>,
    /// Bytes of memory it may still ask for.
    pub memory: Option<u64>,
    /// Instances it may still create.
    pub instances: Option<u32>,
}

/// Budgets by project name; a project that is not in the map has no limits.
pub type Budgets = BTreeMap<String, Budget>;

/// An existing instance as the consolidation planner sees it: where it runs and what it
/// needs (from its recorded use, e.g. p95 plus headroom).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Demand {
    /// The instance's name.
    pub name: String,
    /// The member it runs on now.
    pub member: String,
    /// Cores it needs.
    pub cpu: f64,
    /// Bytes of memory it needs; also what a live migration of it copies.
    pub memory: u64,
    /// Anti-affinity group: no two instances of a group share a member.
    #[serde(default)]
    pub group: Option<String>,
}
