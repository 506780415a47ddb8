//! Request and response bodies of the network API: networks, NICs, forwards, ACLs.

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
    /// VXLAN overlay: the VNI (outside 1-4095); without it the network is a local bridge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vni: Option<u32>,
    /// VXLAN overlay: the other hosts' underlay addresses (static unicast peers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<String>,
    /// VXLAN overlay: this host's underlay address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<String>,
    /// Free text.
    #[serde(default)]
    pub description: String,
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
    /// Host side of the NIC (veth or tap).
    pub host_interface: String,
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
    /// `ok`, or `failed` with `error` (its kernel objects could not be made).
    pub status: String,
    /// Why the network is failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
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
}

/// Body of `PUT /1.0/networks/{name}/acl`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NetworkAclSet {
    /// Rules, one per line, in the ACL language of `docs/networking.md`; empty removes them.
    pub rules: String,
}
