//! Request and response bodies of the cluster API: membership on etcd.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Body of `POST /1.0/cluster`: make a cluster of this server, its first member.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClusterInit {
    /// This member's name in the cluster (1-63 letters, digits and '-').
    pub name: String,
    /// The address the other members reach this one's HTTPS API at, `HOST:PORT`.
    pub address: String,
    /// etcd's client URLs, e.g. `http://10.0.0.1:2379`.
    pub etcd: Vec<String>,
}

/// Body of `POST /1.0/cluster/join`: join the cluster a token is from.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClusterJoin {
    /// The token `vessel cluster add NAME` printed on a member (it names this member).
    pub token: String,
    /// The address the other members reach this one's HTTPS API at, `HOST:PORT`.
    pub address: String,
}

/// Body of `POST /1.0/cluster/replicas`, between members: keep a far copy of a pool of
/// the asking member (a file of `size` bytes here, served to it over NBD).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ReplicaCreate {
    /// The copy's name (the asking member's name and its pool's, `MEMBER.POOL`).
    pub name: String,
    /// Bytes.
    pub size: u64,
}

/// Body of `POST /1.0/cluster/tokens`: a single-use token for a new member.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClusterTokenCreate {
    /// The new member's name.
    pub name: String,
    /// How long the token stays valid (`30m`, `2h`; default 1h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifetime: Option<String>,
}

/// Body of `POST /1.0/cluster/members/{name}/evacuate`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClusterEvacuate {
    /// What to do with every instance (`migrate` or `stop`), whatever its own
    /// `cluster.evacuate` key says; without it, each as its key says (default: migrate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
}

/// A join token, shown once.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct ClusterToken {
    /// The member it is for.
    pub name: String,
    /// The token: give it to `vessel cluster join` on the new member.
    pub token: String,
    /// When it stops being valid, RFC 3339.
    pub expires_at: String,
}

/// This server's place in a cluster.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct ClusterInfo {
    /// Whether this server is a member of a cluster.
    pub enabled: bool,
    /// The cluster's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// This member's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// This member's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// etcd's client URLs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub etcd: Vec<String>,
    /// Whether etcd answers this member now.
    #[serde(default)]
    pub connected: bool,
    /// Whether this member has fenced itself: its lease has not been renewed for half its
    /// TTL, so it stopped its `cluster.ha` instances before the others can take it for dead.
    #[serde(default)]
    pub fenced: bool,
    /// Whether this member's copy of what the members share (projects, identities,
    /// profiles) follows
    /// etcd now; while not, they can be read but not changed here.
    #[serde(default)]
    pub shared_current: bool,
    /// SHA-256 of this server's certificate: what the other members pin.
    pub fingerprint: String,
    /// How the cluster places new instances: `spread` or `binpack`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// Seconds a member stays offline before its `cluster.ha` instances are made again on
    /// other members; none: they are not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healing_threshold: Option<u64>,
    /// Why this member's membership ended while it was away (removed from the cluster, or
    /// etcd holds another cluster now): it beats no more, its `cluster.ha` instances do not
    /// start, and it may join the same cluster again under the same name (it also takes
    /// the membership up again by itself where the reason passes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended: Option<String>,
}

/// Body of `PATCH /1.0/cluster`: the cluster's settings to change.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClusterUpdate {
    /// How new instances are placed: `spread` (the member with the most room left) or
    /// `binpack` (the one with the least room that fits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// Failover: seconds a member may stay offline before its `cluster.ha` instances are
    /// made again and started on other members; 0 ends it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healing_threshold: Option<u64>,
}

/// What a member uses, from its last heartbeat.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct ClusterMemberUsage {
    /// Instances it holds.
    pub instances: u64,
    /// Instances running.
    pub running: u64,
    /// Memory in use on the host, bytes.
    pub memory: u64,
    /// One-minute load average.
    pub load1: f64,
    /// CPUs its instances ask for (the sum of their `limits.cpu`).
    #[serde(default)]
    pub cpu_requested: f64,
    /// Memory its instances ask for (the sum of their `limits.memory`), bytes.
    #[serde(default)]
    pub memory_requested: u64,
}

/// Where the scheduler would put a new instance, and why.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct ClusterPlacement {
    /// The member chosen.
    pub member: String,
    /// `spread` (the most room left) or `binpack` (the least room that fits).
    pub policy: String,
    /// Why, in a line a person can check.
    pub reason: String,
}

/// A member of the cluster.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct ClusterMember {
    /// Name.
    pub name: String,
    /// Its HTTPS API, `HOST:PORT`.
    pub address: String,
    /// SHA-256 of its certificate.
    pub fingerprint: String,
    /// `online` (its lease in etcd is alive) or `offline`.
    pub state: String,
    /// Roles.
    #[serde(default)]
    pub roles: Vec<String>,
    /// CPUs.
    pub cpus: u32,
    /// Memory, bytes.
    pub memory: u64,
    /// Usage at its last heartbeat (online members).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<ClusterMemberUsage>,
    /// Its last heartbeat, RFC 3339 (online members).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat: Option<String>,
    /// When it joined, RFC 3339.
    pub joined_at: String,
}
