//! Projects: tenants sharing one daemon. Every instance belongs to one project; names are
//! unique within a project, not across them; an identity bound to a project reaches nothing
//! of another. Quotas (`limits.*`) bound what a project may hold.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The project that exists from the start and holds everything made before projects.
pub const DEFAULT_PROJECT: &str = "default";

/// Quota keys a project takes, with what each bounds.
pub const PROJECT_LIMITS: &[(&str, &str)] = &[
    ("limits.instances", "instances (containers and VMs)"),
    ("limits.containers", "containers"),
    ("limits.virtual-machines", "virtual machines"),
    (
        "limits.cpu",
        "the sum of the instances' cpu limits, in cores",
    ),
    (
        "limits.memory",
        "the sum of the instances' memory limits (e.g. 8GiB)",
    ),
    ("limits.processes", "the sum of the instances' pids limits"),
    (
        "limits.disk",
        "the sum of the containers' root disk sizes (e.g. 100GiB)",
    ),
    (
        "limits.disk.pool.NAME",
        "the sum of the sizes of the project's volumes (root disks included) in pool NAME",
    ),
    ("limits.networks", "networks"),
    ("limits.snapshots", "snapshots per volume"),
    (
        "features.images",
        "true: the project has images and aliases of its own (new projects' default); \
         false: it uses default's, read-only",
    ),
];

/// The project setting that gives a project images of its own.
pub const FEATURES_IMAGES: &str = "features.images";

/// A project as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct Project {
    /// Name.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Settings: `limits.*` quotas, `features.images`.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// What the project holds now, counted as its limits count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<ProjectUsage>,
    /// What it holds on the server asked that keeps it from being deleted (instances,
    /// networks, volumes, images, exports, profiles, identities), when asked (`?holds=1`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holds: Vec<String>,
}

/// What a project uses of its limits.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct ProjectUsage {
    /// Instances.
    pub instances: u64,
    /// Containers.
    pub containers: u64,
    /// Virtual machines.
    pub virtual_machines: u64,
    /// Sum of cpu limits, in cores.
    pub cpu: f64,
    /// Sum of memory limits, in bytes.
    pub memory: u64,
    /// Sum of pids limits.
    pub processes: u64,
    /// Sum of root disk sizes, in bytes.
    pub disk: u64,
    /// Networks.
    pub networks: u64,
}

/// Body of `POST /1.0/projects`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ProjectCreate {
    /// Name: letters, digits and '-', starting with a letter.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Settings: `limits.*` quotas, `features.images`.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
}

/// Body of `PATCH /1.0/projects/{name}`: keys to set (an empty value unsets one).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ProjectUpdate {
    /// New description, if given.
    #[serde(default)]
    pub description: Option<String>,
    /// Settings to change.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
}

/// Query parameter naming the project a request is about (default: the caller's own).
pub const PROJECT_QUERY: &str = "project";
