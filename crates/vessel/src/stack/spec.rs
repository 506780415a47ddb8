//! The stack document's types. The published JSON Schema (`vessel stack schema`,
//! `docs/stack.schema.json`) is generated from them, so a field's doc comment is what an
//! editor shows for it.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A stack: infrastructure declared in one document. `vessel apply -f` brings it about;
/// everything it makes carries the label `user.stack: NAME`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Stack {
    /// The stack's name (letters, digits and '-', starting with a letter): what its objects
    /// are labelled with.
    pub name: String,
    /// The project the stack's networks, volumes and instances live in (default: the one
    /// the command line uses, `--project` or the identity's own). It may be one the stack
    /// declares under `projects`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// Projects (administrators only), by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub projects: BTreeMap<String, ProjectSpec>,
    /// Storage pools (administrators only), by name. A pool is never replaced by `apply`:
    /// a change that would need it is refused (its volumes' data would go).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pools: BTreeMap<String, PoolSpec>,
    /// Storage volumes, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub volumes: BTreeMap<String, VolumeSpec>,
    /// Networks, by name (at most 12 characters), with their forwards and balancers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub networks: BTreeMap<String, NetworkSpec>,
    /// Images by the alias instances name them with: pulled or built when the alias is
    /// missing (or its source changed). Images are a shared cache: never deleted by a stack.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub images: BTreeMap<String, ImageSpec>,
    /// Instances, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub instances: BTreeMap<String, InstanceSpec>,
}

/// A number, a string with a unit or a truth value: `0.5`, `2`, `128MiB`, `false`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(untagged)]
pub enum Scalar {
    /// true or false.
    Bool(bool),
    /// A number.
    Number(f64),
    /// Text, e.g. a size with its unit.
    Text(String),
}

impl Scalar {
    /// The value as a command line takes it (`2`, not `2.0`).
    pub fn text(&self) -> String {
        match self {
            Scalar::Number(n) if n.fract() == 0.0 && n.abs() < 1e15 => format!("{}", *n as i64),
            Scalar::Number(n) => n.to_string(),
            Scalar::Bool(b) => b.to_string(),
            Scalar::Text(s) => s.clone(),
        }
    }
}

/// A project.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProjectSpec {
    /// Free text.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Settings: quotas (`limits.instances`, `limits.memory`, `limits.disk.pool.NAME`, …)
    /// and `features.images`. Changed in place; a setting left out is unset.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, Scalar>,
}

/// A pool's driver.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    /// A directory.
    Dir,
    /// A btrfs file system.
    Btrfs,
    /// Vessel's RAID engine.
    Raid,
    /// RBD images in a Ceph cluster (block volumes for VMs).
    Ceph,
}

/// A storage pool.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PoolSpec {
    /// `dir`, `btrfs` or `raid`.
    pub driver: Driver,
    /// `raid`: raid0, raid1, raid5 or raid6; `btrfs`: its data profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    /// `raid`: how many member files to make (when no `sources` are given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<u32>,
    /// The size of each member file (`raid`) or of the loop file (`btrfs`), e.g. `1GiB`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<Scalar>,
    /// Devices, files or a directory to use instead of files under the daemon's root.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<String>,
    /// `raid`: chunk size, a power of two (default 64KiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk_size: Option<Scalar>,
}

/// What a volume holds.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Content {
    /// A file system, mounted into containers (the default).
    #[default]
    Filesystem,
    /// A block device, a disk of VMs.
    Block,
}

/// A storage volume.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeSpec {
    /// The pool it lives in (one of the stack's or an existing one).
    pub pool: String,
    /// Its size, e.g. `1GiB` (a block volume's disk, a file system's quota). Grows in place;
    /// a volume never shrinks and is never replaced by `apply`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<Scalar>,
    /// `filesystem` (default) or `block`.
    #[serde(default, rename = "type")]
    pub content: Content,
}

/// A network.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    /// IPv4 subnet, e.g. `10.50.0.0/24` (the first address is the gateway).
    pub subnet: String,
    /// IPv6 /64 prefix, e.g. `fd50::/64`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<String>,
    /// VLAN segments (ids 1-4094).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vlans: Vec<u16>,
    /// Isolate NIC ports from each other.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub isolated_ports: bool,
    /// ACL rules, as `vessel network acl set` takes them. Changed in place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acl: Option<String>,
    /// Published ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forwards: Vec<ForwardSpec>,
    /// Load balancers, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub balancers: BTreeMap<String, BalancerSpec>,
}

fn tcp() -> String {
    "tcp".into()
}

/// A published port: traffic to the host's `listen_port` goes to an instance.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ForwardSpec {
    /// `tcp` (default) or `udp`.
    #[serde(default = "tcp")]
    pub protocol: String,
    /// Host port.
    pub listen_port: u16,
    /// Host address to listen on (default: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen_address: Option<String>,
    /// The instance (it needs a NIC on this network).
    pub instance: String,
    /// The port inside it.
    pub target_port: u16,
}

/// One port of a balancer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BalancerPort {
    /// `tcp` (default) or `udp`.
    #[serde(default = "tcp")]
    pub protocol: String,
    /// Port on the balancer's address.
    pub listen_port: u16,
    /// Port on each backend.
    pub target_port: u16,
}

/// Health checks of a balancer's backends (defaults as `vessel network lb add`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthSpec {
    /// Between probes (default 2000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_ms: Option<u64>,
    /// Connect timeout (default 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Successes that bring a backend back (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rise: Option<u32>,
    /// Failures that take it out (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fall: Option<u32>,
    /// TCP port to probe instead of each port's target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

/// An L4 load balancer: new flows to `address` go round-robin to the healthy backends.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BalancerSpec {
    /// The address clients connect to (this host's, or routed to it).
    pub address: String,
    /// Its ports.
    pub ports: Vec<BalancerPort>,
    /// Backend instances (each needs a NIC on this network).
    pub backends: Vec<String>,
    /// Health checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthSpec>,
}

/// Where an image comes from: exactly one of `pull` and `build`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageSpec {
    /// Pull from an OCI registry: `HOST[:PORT]/NAME[:TAG|@sha256:DIGEST]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull: Option<String>,
    /// With `pull`: talk plain HTTP to the registry.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
    /// Build one: `busybox` or `debian` (as `vessel image build` does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<String>,
    /// With `build: debian`: the release (default bookworm).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
}

/// Whether an instance is a container or a VM.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A system container (the default).
    #[default]
    Container,
    /// A virtual machine.
    Vm,
}

/// A volume attached to an instance.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MountSpec {
    /// The volume (one of the stack's, or an existing one with `pool`).
    pub volume: String,
    /// Its pool (default: the stack volume's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// Mount point in a container (empty for a VM's disk).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path: String,
}

/// Scheduled snapshots of an instance.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SnapshotsSpec {
    /// When, as cron's five fields (`0 3 * * *`) or `@hourly`, `@daily`, ….
    pub schedule: String,
    /// How long a scheduled snapshot is kept, e.g. `7d`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry: Option<String>,
}

/// An instance.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InstanceSpec {
    /// Image: an alias (one of `images`, or an existing one) or a fingerprint.
    pub image: String,
    /// `container` (default) or `vm`.
    #[serde(default, rename = "type")]
    pub kind: Kind,
    /// Limits as `vessel launch -l` takes them: `cpu: 0.5`, `memory: 128MiB`, `pids: 100`.
    /// Those with a configuration key change in place.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub limits: BTreeMap<String, Scalar>,
    /// The init command instead of the image's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Environment of the init (changed in place, from its next start).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub environment: BTreeMap<String, String>,
    /// Networks to give it a NIC on, `eth0` first; none: no NIC.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<String>,
    /// Volumes to attach.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<MountSpec>,
    /// Scheduled snapshots (changed in place).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshots: Option<SnapshotsSpec>,
    /// Other configuration keys (`boot.*`, `cluster.ha`, `user.*`), set in place. A key taken out of the
    /// stack is left as it is.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,
}

impl InstanceSpec {
    /// The limits as `KEY=VALUE` arguments.
    pub fn limit_args(&self) -> Vec<String> {
        self.limits
            .iter()
            .map(|(k, v)| format!("{k}={}", v.text()))
            .collect()
    }
}
