//! An instance's configuration as keys and values, Incus' names where they fit: its limits
//! (`limits.memory`, `limits.cpu`, ...), its environment (`environment.NAME`), when it starts
//! (`boot.autostart`, `boot.autostart.delay`, `boot.autostart.priority`) and free keys of the
//! user's (`user.*`). A change says, key by key, whether it took effect at once or at the next
//! start.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Keys an instance's configuration takes, with what each means.
pub const INSTANCE_KEYS: &[(&str, &str)] = &[
    (
        "limits.cpu",
        "cores of cpu time (e.g. 0.5 or 2); live for containers",
    ),
    (
        "limits.cpu.weight",
        "cpu share, 1 to 10000 (100 is the default); live for containers",
    ),
    (
        "limits.cpuset",
        "cpus to run on (e.g. 0-1 or 0,2); live for containers",
    ),
    ("limits.memory", "memory (e.g. 256MiB); live for containers"),
    (
        "limits.memory.swap",
        "swap besides memory (e.g. 0); live for containers",
    ),
    (
        "limits.processes",
        "processes and threads; live for containers",
    ),
    (
        "limits.io.weight",
        "block I/O weight, 10 to 1000; live for containers",
    ),
    (
        "limits.disk",
        "a container's root disk size (e.g. 2GiB); grows live",
    ),
    (
        "environment.NAME",
        "an environment variable of the instance's processes; next start",
    ),
    ("boot.autostart", "true: started when the host boots"),
    (
        "boot.autostart.delay",
        "seconds to wait after starting it before the next one",
    ),
    ("boot.autostart.priority", "higher starts first (default 0)"),
    (
        "snapshots.schedule",
        "when the daemon snapshots it: cron's five fields in UTC (e.g. 0 */6 * * *) or \
         @hourly, @daily, @weekly, @monthly",
    ),
    (
        "snapshots.expiry",
        "how long a scheduled snapshot is kept (e.g. 7d, 1d 12H; units M H d w m y)",
    ),
    (
        "security.privileged",
        "read only: set at creation (--privileged)",
    ),
    (
        "cluster.ha",
        "true: in a cluster, its member stops it when cut off from etcd (fencing)",
    ),
    (
        "cluster.group",
        "its placement group in a cluster: no two instances of a group on one member",
    ),
    (
        "cluster.evacuate",
        "what `vessel cluster evacuate` does with it: auto or migrate (moved to another \
         member, cold), stop (stopped where it is, started again by restore)",
    ),
    ("user.NAME", "free text of yours"),
];

/// An instance's configuration: every key that is set.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct InstanceConfig {
    /// Keys and values.
    pub config: BTreeMap<String, String>,
}

/// Body of `PATCH /1.0/instances/{name}/config`: keys to set and keys to unset, all checked
/// before any is applied; a bad one changes nothing.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct InstanceConfigPatch {
    /// Keys to set, with their new values.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Keys to unset (a limit unset is lifted).
    #[serde(default)]
    pub unset: Vec<String>,
}

/// When a changed key took effect.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ConfigEffect {
    /// At once, on the running instance.
    Live,
    /// Kept; the instance runs with it from its next start.
    NextStart,
    /// Kept; nothing runs from it (free keys, start order).
    Stored,
}

/// One key a change touched.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct ConfigKeyChange {
    /// The key.
    pub key: String,
    /// Its new value; none when it was unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// When it took effect.
    pub effect: ConfigEffect,
    /// Why it waits for the next start, where it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Answer of a configuration change: the configuration now, and what changed.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct InstanceConfigChange {
    /// Every key set now.
    pub config: BTreeMap<String, String>,
    /// The keys whose value changed, and when each took effect.
    pub changes: Vec<ConfigKeyChange>,
}

/// A volume an instance is made with: attached before its first start (a mount point for a
/// container's filesystem volume; none for a VM's disk).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct VolumeDevice {
    /// Pool.
    pub pool: String,
    /// Volume.
    pub volume: String,
    /// Mount point inside a container.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path: String,
}

/// The networks and volumes an instance got from its profiles (the daemon's bookkeeping: a
/// profile that drops one takes away only what it gave).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct ProfileDevices {
    /// Networks it got a NIC on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<String>,
    /// Volumes attached to it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeDevice>,
    /// Whether it chose its networks itself at creation (named them, or none): its
    /// profiles' networks, then and later, are not its.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub own_networks: bool,
}

impl ProfileDevices {
    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.networks.is_empty() && self.volumes.is_empty() && !self.own_networks
    }
}

/// A profile: a named set of configuration keys and networks that instances are made with,
/// applied in order (an instance's own keys win); a change reaches every instance using it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct Profile {
    /// Name.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Instance keys (`limits.*`, `environment.*`, `boot.*`, `user.*`).
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// Networks an instance made with it gets a NIC on (when its launch names none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<String>,
    /// Volumes an instance made with it gets attached.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeDevice>,
    /// Instances using it (in answers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub used_by: Vec<String>,
}

/// Body of `PUT /1.0/profiles/{name}`: the profile's new content, whole.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ProfilePut {
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Instance keys.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// Networks.
    #[serde(default)]
    pub networks: Vec<String>,
    /// Volumes.
    #[serde(default)]
    pub volumes: Vec<VolumeDevice>,
}

impl From<Profile> for ProfilePut {
    /// A profile's content (its name and users left out).
    fn from(p: Profile) -> Self {
        ProfilePut {
            description: p.description,
            config: p.config,
            networks: p.networks,
            volumes: p.volumes,
        }
    }
}

/// Body of `POST /1.0/profiles/{name}/apply` (between members): a profile's change made
/// on another member, for this member's instances using it to take.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ProfileApply {
    /// The profile before the change.
    pub before: ProfilePut,
    /// The profile as changed.
    pub after: ProfilePut,
}

/// Answer of a profile change: the profile, and what changed on each instance using it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct ProfileChange {
    /// The profile now.
    pub profile: Profile,
    /// Per instance, the keys that changed and when each took effect.
    pub instances: BTreeMap<String, Vec<ConfigKeyChange>>,
    /// Instances that could not take the change, with the reason (the profile is kept; they
    /// keep what they had).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub errors: BTreeMap<String, String>,
}
