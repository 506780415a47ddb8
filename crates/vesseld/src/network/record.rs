//! What the store keeps of a network, and the names of the kernel objects derived from it:
//! bridges, VXLAN devices, segment devices, balancer tables, NIC names and MACs.

use std::net::Ipv6Addr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use vessel_api::{NetworkForward, NetworkLease, NetworkLoadBalancer};
use vessel_net::{MacAddr, Subnet, VlanMode};

use super::parse::parse_prefix6;
use crate::error::{Error, Result};

/// What the store keeps of a network.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct NetworkRecord {
    pub(super) name: String,
    pub(super) subnet: String,
    #[serde(default)]
    pub(super) ipv6: Option<String>,
    #[serde(default)]
    pub(super) vni: Option<u32>,
    #[serde(default)]
    pub(super) peers: Vec<String>,
    #[serde(default)]
    pub(super) local: Option<String>,
    #[serde(default)]
    pub(super) leases: Vec<NetworkLease>,
    #[serde(default)]
    pub(super) forwards: Vec<NetworkForward>,
    #[serde(default)]
    pub(super) acl: String,
    #[serde(default)]
    pub(super) vlans: Vec<u16>,
    #[serde(default)]
    pub(super) isolated_ports: bool,
    /// How its segments were built when it was created (`vlan-filtering` or
    /// `bridge-per-vlan`), kept so that a rebuild builds (and a delete finds) the same.
    #[serde(default)]
    pub(super) vlan_mode: Option<String>,
    #[serde(default)]
    pub(super) load_balancers: Vec<NetworkLoadBalancer>,
    #[serde(default)]
    pub(super) description: String,
    pub(super) created_at: String,
}

impl NetworkRecord {
    pub(super) fn subnet(&self) -> Result<Subnet> {
        self.subnet
            .parse()
            .map_err(|e| Error::internal(format!("stored subnet {}: {e}", self.subnet)))
    }
    pub(super) fn bridge(&self) -> String {
        format!("vbr-{}", self.name)
    }
    /// The IPv6 /64 prefix, if the network has one.
    pub(super) fn subnet6(&self) -> Result<Option<Ipv6Addr>> {
        self.ipv6.as_deref().map(parse_prefix6).transpose()
    }
    pub(super) fn gateway6(&self) -> Result<Option<Ipv6Addr>> {
        Ok(self.subnet6()?.map(|p| Ipv6Addr::from(u128::from(p) | 1)))
    }
    pub(super) fn vxlan(&self) -> String {
        format!("vx-{}", self.name)
    }
    pub(super) fn mtu(&self) -> u32 {
        if self.vni.is_some() {
            1500 - vessel_net::VXLAN_OVERHEAD
        } else {
            1500
        }
    }
    /// The gateway MAC of an overlay: derived from its VNI, so the same on every host
    /// whatever the network is called there.
    pub(super) fn gateway_mac(&self) -> MacAddr {
        let h = Sha256::digest(format!("vni {:?} gateway", self.vni).as_bytes());
        MacAddr::new([0x0a, 0x56, 0xff, h[0], h[1], h[2]])
    }
    /// 7 hex digits naming this network's per-segment devices (the name itself is too long
    /// for `<name>-v<vid>` within 15 bytes).
    pub(super) fn tag(&self) -> String {
        hex::encode(Sha256::digest(self.name.as_bytes()))[..7].to_string()
    }
    /// The base bridge of VLAN segments in `mode`.
    pub(super) fn segment_base(&self, mode: VlanMode) -> String {
        match mode {
            VlanMode::VlanFiltering => self.bridge(),
            VlanMode::BridgePerVlan => format!("vs{}", self.tag()),
        }
    }
    /// The bridge a port on VLAN `vid` belongs to.
    pub(super) fn segment_bridge(&self, mode: VlanMode, vid: u16) -> String {
        match mode {
            VlanMode::VlanFiltering => self.bridge(),
            VlanMode::BridgePerVlan => format!("vs{}-v{vid}", self.tag()),
        }
    }
    /// The VXLAN device of segment `vid` of an overlay.
    pub(super) fn segment_vxlan(&self, vid: u16) -> String {
        format!("vy{}-{vid}", self.tag())
    }
    /// Every VNI the network uses: its own and one per segment.
    pub(super) fn vnis(&self) -> Vec<u32> {
        match self.vni {
            Some(v) => std::iter::once(v)
                .chain(self.vlans.iter().map(|s| v + u32::from(*s)))
                .collect(),
            None => Vec::new(),
        }
    }
    /// A balancer's table name: `<network>_<lb>` (network names have no '_', so no two
    /// networks' balancers can share one).
    pub(super) fn lb_table(&self, lb: &str) -> String {
        format!("{}_{lb}", self.name)
    }
}

/// Whether a network or any of its NICs has ACL rules.
pub(super) fn has_acl(rec: &NetworkRecord) -> bool {
    !rec.acl.trim().is_empty() || rec.leases.iter().any(|l| !l.acl.trim().is_empty())
}

/// Short interface name for an instance's NIC on a network (`prefix` + 8 hex digits).
pub(super) fn ifname(prefix: &str, instance: &str, network: &str) -> String {
    let h = Sha256::digest(format!("{instance}\0{network}").as_bytes());
    format!("{prefix}{}", &hex::encode(h)[..8])
}

/// A MAC derived from the instance and network (locally administered, unicast).
pub(super) fn derived_mac(instance: &str, network: &str, salt: u8) -> MacAddr {
    let h = Sha256::digest(format!("{instance}\0{network}\0{salt}").as_bytes());
    MacAddr::new([0x0a, 0x56, h[0], h[1], h[2], h[3]])
}

/// The EUI-64 address of `mac` in the /64 `prefix`: what SLAAC gives that NIC.
pub(super) fn eui64(prefix: Ipv6Addr, mac: MacAddr) -> Ipv6Addr {
    let m = mac.octets();
    let mut o = prefix.octets();
    o[8..16].copy_from_slice(&[m[0] ^ 0x02, m[1], m[2], 0xff, 0xfe, m[3], m[4], m[5]]);
    Ipv6Addr::from(o)
}
