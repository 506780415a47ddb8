//! Request and response bodies of the network API: networks, VLAN segments, NICs and their
//! limits, forwards, load balancers, ACLs.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Body of `POST /1.0/networks`. Traffic leaving the subnet is masqueraded; new
/// connections into it come only from inside, from published ports, or as replies.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NetworkCreate {
    /// Network name: 1-12 letters, digits and '-', starting with a letter (it names the
    /// bridge and the nftables table).
    pub name: String,
    /// IPv4 subnet in CIDR form, e.g. 10.42.0.0/24; the first address is the gateway.
    pub subnet: String,
    /// IPv6 prefix, a /64 (e.g. fd42::/64): the gateway is `::1`, instances get their
    /// EUI-64 address (SLAAC from router advertisements; set directly in containers), and
    /// traffic leaving it is masqueraded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<String>,
    /// VXLAN overlay: the VNI (outside 1-4095); without it the network is a local bridge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vni: Option<u32>,
    /// VXLAN overlay: the other hosts' underlay addresses (static unicast peers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<String>,
    /// VXLAN overlay: this host's underlay address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<String>,
    /// On a member of a cluster: a cluster network, on every member (a VXLAN overlay whose
    /// peers follow membership, addresses unique across members, names resolved on all).
    /// The VNI, peers and local address are the cluster's to choose.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cluster: bool,
    /// VLAN segments (ids 1-4094): each its own broadcast domain, layer 2 only (no gateway,
    /// DHCP or NAT; NICs on a segment get static addresses). On an overlay, segment V rides
    /// on VNI `vni + V`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vlans: Vec<u16>,
    /// Isolated bridge ports: instances reach the gateway (and through it the outside) but
    /// not each other at layer 2.
    #[serde(default)]
    pub isolated_ports: bool,
    /// Labels: `user.*` keys, free-form (a stack marks what it made with `user.stack`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub config: std::collections::BTreeMap<String, String>,
    /// Free text.
    #[serde(default)]
    pub description: String,
}

/// One VLAN segment of a network.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct NetworkSegment {
    /// VLAN id.
    pub vlan: u16,
    /// The bridge its NICs are ports of (the network's own bridge with VLAN filtering).
    pub bridge: String,
    /// The segment's VNI on an overlay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vni: Option<u32>,
}

/// One NIC of an instance on a network.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct NetworkLease {
    /// Instance name.
    pub instance: String,
    /// Interface name inside the instance (eth0, eth1, ...).
    pub interface: String,
    /// MAC address.
    pub mac: String,
    /// IPv4 address (static, also handed out by DHCP to this MAC).
    pub ip: String,
    /// IPv6 address on an IPv6 network (EUI-64 of the MAC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<String>,
    /// Host side of the NIC (veth or tap).
    pub host_interface: String,
    /// VLAN segment of the NIC (none: the network's untagged segment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    /// Rate limit of traffic into the instance, as given (e.g. `10Mbit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<String>,
    /// Rate limit of traffic out of the instance, as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<String>,
    /// The NIC's own ACL rules (checked before the network's), as given.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub acl: String,
}

/// A published port: traffic to the host's `listen_port` goes to an instance.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NetworkForward {
    /// `tcp` or `udp`.
    pub protocol: String,
    /// Host address to match (default: any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen_address: Option<String>,
    /// Host port.
    pub listen_port: u16,
    /// Instance with a NIC on this network.
    pub instance: String,
    /// Port inside the instance.
    pub target_port: u16,
}

/// A network as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct Network {
    /// Unique name.
    pub name: String,
    /// `bridge` or `vxlan`.
    #[serde(rename = "type")]
    pub network_type: String,
    /// IPv4 subnet.
    pub subnet: String,
    /// Gateway (the bridge's address).
    pub gateway: String,
    /// IPv6 prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<String>,
    /// IPv6 gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway6: Option<String>,
    /// The Linux bridge.
    pub bridge: String,
    /// VNI of an overlay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vni: Option<u32>,
    /// Overlay peers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<String>,
    /// MTU of the bridge (lowered by the VXLAN overhead on overlays).
    pub mtu: u32,
    /// Every NIC on the network.
    pub leases: Vec<NetworkLease>,
    /// Published ports.
    pub forwards: Vec<NetworkForward>,
    /// The network's ACL rules, as given.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub acl: String,
    /// L4 load balancers, with each backend's health.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub load_balancers: Vec<NetworkLoadBalancer>,
    /// VLAN segments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub segments: Vec<NetworkSegment>,
    /// How the network's VLAN segments are built: `vlan-filtering` (one VLAN-aware bridge,
    /// 802.1Q tags), `bridge-per-vlan` (the kernel has no bridge VLAN filtering, or the
    /// network is an overlay), or `none` when it has no segments.
    pub vlan_mode: String,
    /// Whether NIC ports are isolated from each other.
    #[serde(default)]
    pub isolated_ports: bool,
    /// Whether this is the default network, which new instances get a NIC on.
    #[serde(default)]
    pub default: bool,
    /// `ok`, or `failed` with `error` (its kernel objects could not be made).
    pub status: String,
    /// Why the network is failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Labels: `user.*` keys, free-form (a stack marks what it made with `user.stack`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub config: std::collections::BTreeMap<String, String>,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Creation time, RFC 3339.
    pub created_at: String,
}

/// Body of `POST /1.0/networks/{name}/attach` and `.../detach`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NicAttach {
    /// Instance name.
    pub instance: String,
    /// Static IPv4 address (default: the next free one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// MAC address (default: allocated without collisions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// VLAN segment (one of the network's `vlans`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    /// Rate limit into the instance: bits per second with an optional unit (`kbit`,
    /// `Mbit`, `Gbit`), e.g. `10Mbit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<String>,
    /// Rate limit out of the instance, same form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<String>,
}

/// Body of `PUT /1.0/networks/{name}/nics/{instance}/limits`: changes the directions it
/// names and leaves the others as they are (absent or null: unchanged; `none`: unlimited).
/// Applied at once to a running instance.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NicLimits {
    /// Into the instance, e.g. `10Mbit`, or `none` to lift it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<String>,
    /// Out of the instance, e.g. `10Mbit`, or `none` to lift it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<String>,
}

/// Body of `POST /1.0/admin/init`: make the default network new instances get, unless it
/// exists (the daemon makes it on its first start too).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AdminInit {
    /// IPv4 subnet of the default network (default: the first of 10.42.0.0/24,
    /// 10.43.0.0/24, ... that none of the host's routes or addresses overlaps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<String>,
}

/// What `POST /1.0/admin/init` found or did.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct AdminInitResult {
    /// Whether the default network was made now (false: it was there already).
    pub created: bool,
    /// The default network.
    pub network: Network,
}

/// One listening port of a load balancer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LbPortSpec {
    /// `tcp` or `udp`.
    pub protocol: String,
    /// Port on the balancer's address.
    pub listen_port: u16,
    /// Port on each backend.
    pub target_port: u16,
}

/// Health checking of a load balancer's backends: a TCP connect every `interval_ms`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LbHealthCheckSpec {
    /// Time between probes (default 2000).
    #[serde(default = "default_interval")]
    pub interval_ms: u64,
    /// Connect timeout (default 1000, at most the interval).
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// Successes in a row that bring a backend back (default 2).
    #[serde(default = "default_rise_fall")]
    pub rise: u32,
    /// Failures in a row that take a backend out (default 2).
    #[serde(default = "default_rise_fall")]
    pub fall: u32,
    /// TCP port to probe instead of each port's target (required with UDP ports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

fn default_interval() -> u64 {
    2000
}
fn default_timeout() -> u64 {
    1000
}
fn default_rise_fall() -> u32 {
    2
}

impl Default for LbHealthCheckSpec {
    fn default() -> Self {
        Self {
            interval_ms: default_interval(),
            timeout_ms: default_timeout(),
            rise: default_rise_fall(),
            fall: default_rise_fall(),
            port: None,
        }
    }
}

/// A backend as `GET` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct LbBackendStatus {
    /// Instance.
    pub instance: String,
    /// Its address on the network.
    pub address: String,
    /// `up` (receives new flows), `down` (failed its health check) or `unknown`.
    pub health: String,
}

/// Body of `POST /1.0/networks/{name}/load-balancers`, and a balancer as shown: new flows
/// to `address` on each listen port go round-robin to the healthy backends.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NetworkLoadBalancer {
    /// Name, unique in the network: 1-20 letters, digits, '-' and '_'.
    pub name: String,
    /// The address clients connect to (this host's, or routed to it).
    pub address: String,
    /// Listening ports.
    pub ports: Vec<LbPortSpec>,
    /// Instances with a NIC on the network.
    pub backends: Vec<String>,
    /// Health checking.
    #[serde(default)]
    pub health_check: LbHealthCheckSpec,
    /// Output only: each backend's state.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub status: Vec<LbBackendStatus>,
}

/// Body of `PUT /1.0/networks/{name}/acl` and `PUT /1.0/networks/{name}/nics/{instance}/acl`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NetworkAclSet {
    /// Rules, one per line, in the ACL language of `docs/networking.md`; empty removes them.
    pub rules: String,
}
