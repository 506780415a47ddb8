//! What the store keeps of a network, and the names of the kernel objects derived from it:
//! bridges, VXLAN devices, segment devices, balancer tables, NIC names and MACs.

use std::net::Ipv6Addr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use vessel_api::{NetworkForward, NetworkLease, NetworkLoadBalancer};
use vessel_net::{MacAddr, Subnet, VlanMode};

use super::parse::parse_prefix6;
use crate::error::{Error, Result};

/// Whether a name has the shape of a hashed kernel name (`NetworkRecord::kname`).
pub(super) fn is_hashed_kname(name: &str) -> bool {
    name.len() == 11
        && name.starts_with('p')
        && name[1..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

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
    /// Labels (`user.*` keys).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub(super) config: std::collections::BTreeMap<String, String>,
    pub(super) created_at: String,
    /// A cluster network: this member's copy of a network every member has (its VNI and
    /// peers are the cluster's).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(super) cluster: bool,
    /// On a cluster network: the address blocks (CIDR) this member hands out from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) ranges: Vec<String>,
    /// On a cluster network: when the cluster made the network this copy is of (a network
    /// of the same name made again is another one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) cluster_made: Option<String>,
    /// On a cluster network: the other members' NICs on it (address, name), for DNS.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) remote_names: Vec<(String, String)>,
    /// On a cluster network: the MACs of the other members' NICs, by address (this member
    /// reaches them through neighbour entries).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub(super) remote_macs: std::collections::BTreeMap<String, String>,
}

impl NetworkRecord {
    /// The address of `instance`'s NIC on this network: its lease here, or on a cluster
    /// network another member's NIC of that name.
    pub(super) fn address_of(&self, instance: &str) -> Option<String> {
        if let Some(l) = self.leases.iter().find(|l| l.instance == instance) {
            return Some(l.ip.clone());
        }
        self.remote_of(instance)
    }

    /// On a cluster network: the address of `instance`'s NIC on another member.
    pub(super) fn remote_of(&self, instance: &str) -> Option<String> {
        if !self.cluster {
            return None;
        }
        let plain = crate::project::split(instance).1;
        self.remote_names
            .iter()
            .find(|(_, n)| n == plain)
            .map(|(ip, _)| ip.clone())
    }

    pub(super) fn subnet(&self) -> Result<Subnet> {
        self.subnet
            .parse()
            .map_err(|e| Error::internal(format!("stored subnet {}: {e}", self.subnet)))
    }
    /// The name kernel objects are named from: the network's own for `default`'s networks,
    /// `p` and ten hex digits of a hash of `PROJECT.NAME` for other projects' (a bridge name
    /// has 15 bytes, nftables tables take no '.').
    pub(super) fn kname(&self) -> String {
        if self.name.contains('.') {
            format!(
                "p{}",
                &hex::encode(Sha256::digest(self.name.as_bytes()))[..10]
            )
        } else {
            self.name.clone()
        }
    }
    /// How this network is named in a message to a client of the project of `asker` (a
    /// qualified network name): by its name in that project, or not at all when it is another
    /// project's.
    pub(super) fn named_for(&self, asker: &str) -> String {
        let project = crate::project::split(asker).0;
        match crate::project::within(project, &self.name) {
            Some(n) => format!("network {n:?}"),
            None => "a network of another project".to_string(),
        }
    }
    pub(super) fn bridge(&self) -> String {
        format!("vbr-{}", self.kname())
    }
    /// The IPv6 /64 prefix, if the network has one.
    pub(super) fn subnet6(&self) -> Result<Option<Ipv6Addr>> {
        self.ipv6.as_deref().map(parse_prefix6).transpose()
    }
    pub(super) fn gateway6(&self) -> Result<Option<Ipv6Addr>> {
        Ok(self.subnet6()?.map(|p| Ipv6Addr::from(u128::from(p) | 1)))
    }
    /// The DNS domain of its instances' names (`NAME.<domain>`).
    pub(super) fn domain(&self) -> String {
        format!("{}.vessel", crate::project::split(&self.name).1)
    }
    pub(super) fn vxlan(&self) -> String {
        format!("vx-{}", self.kname())
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
        format!("{}_{lb}", self.kname())
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

/// Records and leases for the unit tests of the network module.
#[cfg(test)]
pub(super) mod fixture {
    use vessel_api::NetworkLease;

    use super::NetworkRecord;

    /// A bridge network without NICs.
    pub fn network(name: &str, subnet: &str) -> NetworkRecord {
        NetworkRecord {
            name: name.into(),
            subnet: subnet.into(),
            ipv6: None,
            vni: None,
            peers: Vec::new(),
            local: None,
            leases: Vec::new(),
            forwards: Vec::new(),
            acl: String::new(),
            vlans: Vec::new(),
            isolated_ports: false,
            vlan_mode: None,
            load_balancers: Vec::new(),
            description: String::new(),
            config: Default::default(),
            created_at: "2024-01-01T00:00:00Z".into(),
            cluster: false,
            ranges: Vec::new(),
            cluster_made: None,
            remote_names: Vec::new(),
            remote_macs: Default::default(),
        }
    }

    /// A NIC of `instance` with address `ip`.
    pub fn lease(instance: &str, ip: &str) -> NetworkLease {
        NetworkLease {
            instance: instance.into(),
            interface: "eth0".into(),
            mac: "0a:56:00:00:00:01".into(),
            ip: ip.into(),
            ipv6: None,
            host_interface: format!("vh-{instance}"),
            vlan: None,
            ingress: None,
            egress: None,
            acl: String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixture::{lease, network};
    use super::*;

    #[test]
    fn another_projects_network_is_named_from_a_hash() {
        let n = network("a-long-project-name.abcdefghijk", "10.0.0.0/24");
        let k = n.kname();
        assert!(is_hashed_kname(&k), "{k}");
        assert_eq!(n.bridge(), format!("vbr-{k}"));
        assert!(n.bridge().len() <= 15 && n.vxlan().len() <= 15);
        assert_eq!(n.domain(), "abcdefghijk.vessel");
        assert_ne!(k, network("other.abcdefghijk", "10.0.0.0/24").kname());
        // default's keep their names, and none can take the shape of a hashed one.
        assert_eq!(network("lan", "10.0.0.0/24").kname(), "lan");
        assert!(!is_hashed_kname("lan") && !is_hashed_kname("p0123456789x"));
        assert!(is_hashed_kname("p0123456789"));
    }

    #[test]
    fn kernel_names_fit_in_an_interface_name() {
        let mut n = network("abcdefghijk", "10.0.0.0/24");
        assert_eq!(n.bridge(), "vbr-abcdefghijk");
        assert_eq!(n.vxlan(), "vx-abcdefghijk");
        assert_eq!(n.tag().len(), 7);
        assert_eq!(n.segment_base(VlanMode::VlanFiltering), n.bridge());
        assert_eq!(n.segment_bridge(VlanMode::VlanFiltering, 4094), n.bridge());
        let seg = n.segment_bridge(VlanMode::BridgePerVlan, 4094);
        assert_eq!(seg, format!("vs{}-v4094", n.tag()));
        assert_eq!(
            n.segment_base(VlanMode::BridgePerVlan),
            format!("vs{}", n.tag())
        );
        n.vni = Some(16_000_000);
        for name in [n.bridge(), n.vxlan(), seg, n.segment_vxlan(4094)] {
            assert!(name.len() <= 15, "{name} is too long for an interface");
        }
        assert_eq!(n.lb_table("web_1"), "abcdefghijk_web_1");
        let nic = ifname("vh", "an-instance-with-a-long-name", "abcdefghijk");
        assert_eq!(nic.len(), 10);
        assert_eq!(
            nic,
            ifname("vh", "an-instance-with-a-long-name", "abcdefghijk")
        );
        assert_ne!(nic, ifname("vh", "an-instance-with-a-long-name", "other"));
    }

    #[test]
    fn overlays_share_their_gateway_mac_and_lose_mtu() {
        let mut a = network("a", "10.0.0.0/24");
        assert_eq!(a.mtu(), 1500);
        assert!(a.vnis().is_empty());
        a.vni = Some(5000);
        a.vlans = vec![10, 20];
        let mut b = network("b", "10.0.0.0/24");
        b.vni = Some(5000);
        assert_eq!(
            a.gateway_mac(),
            b.gateway_mac(),
            "same VNI, same gateway MAC"
        );
        assert!(!a.gateway_mac().is_multicast());
        b.vni = Some(5001);
        assert_ne!(a.gateway_mac(), b.gateway_mac());
        assert_eq!(a.mtu(), 1500 - vessel_net::VXLAN_OVERHEAD);
        assert_eq!(a.vnis(), vec![5000, 5010, 5020]);
    }

    #[test]
    fn ipv6_gateway_and_eui64_addresses() {
        let mut n = network("a", "10.0.0.0/24");
        assert_eq!(n.gateway6().unwrap(), None);
        n.ipv6 = Some("fd42:1:2:3::/64".into());
        assert_eq!(
            n.gateway6().unwrap(),
            Some("fd42:1:2:3::1".parse().unwrap())
        );
        let mac: MacAddr = "0a:56:12:34:56:78".parse().unwrap();
        assert_eq!(
            eui64("fd42:1:2:3::".parse().unwrap(), mac),
            "fd42:1:2:3:856:12ff:fe34:5678".parse::<Ipv6Addr>().unwrap()
        );
    }

    #[test]
    fn derived_macs_are_local_unicast_and_stable() {
        let m = derived_mac("c1", "lan", 0);
        assert_eq!(m, derived_mac("c1", "lan", 0));
        assert_ne!(m, derived_mac("c1", "lan", 1));
        assert_ne!(m, derived_mac("c2", "lan", 0));
        assert!(!m.is_multicast());
        assert_eq!(m.octets()[0] & 0x02, 0x02, "locally administered");
    }

    #[test]
    fn acl_rules_anywhere_count() {
        let mut n = network("a", "10.0.0.0/24");
        n.leases.push(lease("c1", "10.0.0.2"));
        assert!(!has_acl(&n));
        n.acl = "  \n".into();
        assert!(!has_acl(&n), "blank rules are none");
        n.leases[0].acl = "deny ingress".into();
        assert!(has_acl(&n));
        n.leases[0].acl.clear();
        n.acl = "deny ingress".into();
        assert!(has_acl(&n));
    }
}
