//! Vessel's network engine: the kernel side of Vessel networks.
//!
//! Everything here is scoped to a network namespace chosen by the caller ([`NetNs`]): the
//! daemon passes its own, tests pass a throw-away one. The engine knows nothing of projects,
//! the store or HTTP; the daemon records networks and leases and drives these pieces:
//! - [`Links`]: bridges, veth pairs, addresses, routes, MTU and MACs over rtnetlink;
//! - [`create_bridge`], [`plug_veth`]: a network's bridge and its instances' veth NICs;
//! - [`NatRules`]: masquerade and port forwards, one nftables table per network, atomic;
//! - [`create_vxlan`], [`add_vxlan_peer`]: overlays spanning hosts with static unicast peers;
//! - [`create_tap`]: persistent tap devices for VMs, owned by QEMU's user, bridged;
//! - [`set_bandwidth`]: per-NIC rate limits (tbf, and IFB for traffic out of an instance);
//! - [`DhcpDns`]: DHCP (static leases) and DNS (instance names) per network with dnsmasq;
//! - [`LoadBalancer`], [`LbHealthChecker`]: L4 balancing with nft `numgen`, health checked;
//! - [`NetworkAcl`]: allow/deny rules per network and NIC, one bridge table, atomic;
//! - [`probe_vlan_support`], [`attach_to_segment`], [`set_port_isolated`]: VLAN segments
//!   (VLAN filtering or a bridge per VLAN) and isolated bridge ports;
//! - [`Ipam`], [`MacAllocator`], [`Subnet`]: address management, pure logic;
//! - [`Links::used_prefixes`], [`first_free_subnet`]: the routes and addresses a namespace
//!   already uses, and a subnet that collides with none of them.

pub mod acl;
pub mod bandwidth;
pub mod dnsmasq;
pub mod host;
pub mod ipam;
pub mod lb;
pub mod link;
pub mod nat;
mod netlink;
pub mod netns;
pub mod nic;
pub mod tap;
pub mod vlan;
pub mod vxlan;

pub use acl::{
    acl_table_name, list_acl, parse_rules, probe_acl_mode, remove_acl, AclAction, AclError,
    AclMode, AclProtocol, AclRule, AddrMatch, Cidr, Direction, NetworkAcl, NicAcl, ParseError,
    PortRange,
};
pub use bandwidth::{
    bandwidth, clear_bandwidth, ifb_name, set_bandwidth, BandwidthError, BandwidthLimits, RateLimit,
};
pub use dnsmasq::{
    dnsmasq_pid, read_leases, stop_dnsmasq, Applied, DhcpDns, DnsmasqError, DnsmasqFiles, Lease,
    StaticLease, Upstream,
};
pub use host::{first_free_subnet, Address4, Prefix4, Route4};
pub use ipam::{check_overlap, Ipam, IpamError, MacAddr, MacAllocator, Subnet};
pub use lb::{
    lb_table_name, Backend, BackendHealth, HealthCheck, LbError, LbHealthChecker, LbPort,
    LoadBalancer,
};
pub use link::{validate_ifname, LinkError, Links};
pub use nat::{
    apply_script, keep_dhcp_local, list_table, list_tables, remove_dhcp_local, remove_table,
    render_dhcp_local, set_ipv4_forwarding, set_route_localnet, table_name, NatRules, NftError,
    Overlay, PortForward, Protocol,
};
pub use netlink::NetlinkError;
pub use netns::{NetNs, NetNsError};
pub use nic::{bridge_mac, create_bridge, plug_veth, unplug_veth, BridgeSpec, VethNic};
pub use tap::{create_tap, delete_tap, open_tap, tap_info, TapError, TapInfo, TapSpec};
pub use vlan::{
    attach_to_segment, create_segment, port_hairpin, port_isolated, probe_vlan_support,
    remove_segment, segment_bridge_name, set_port_hairpin, set_port_isolated, set_vlan_filtering,
    VlanError, VlanMode, VlanSupport, VID_MAX,
};
pub use vxlan::{
    add_vxlan_peer, create_vxlan, remove_neighbor, remove_vxlan_peer, set_neighbor, VxlanError,
    VxlanSpec, VXLAN_OVERHEAD, VXLAN_PORT,
};
