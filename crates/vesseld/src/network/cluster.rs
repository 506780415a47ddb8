//! Cluster networks, this member's side: its copy of a network every member has (a VXLAN
//! overlay), with the VNI, peers, address blocks and other members' names the cluster
//! service gives it (`cluster/networks.rs` reads them from etcd).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use vessel_api::{Network, NetworkCreate};
use vessel_net::{Links, NetNs};

use super::record::NetworkRecord;
use super::{net_err, NetworkService};
use crate::error::{Error, Result};

/// A cluster network as this member makes it.
#[derive(Debug, Clone)]
pub struct ClusterNetworkSpec {
    /// Its name.
    pub name: String,
    /// IPv4 subnet.
    pub subnet: String,
    /// Its VXLAN id.
    pub vni: u32,
    /// This member's underlay address.
    pub local: String,
    /// The other members' underlay addresses.
    pub peers: Vec<String>,
    /// This member's address blocks (CIDR).
    pub ranges: Vec<String>,
    /// Free text.
    pub description: String,
    /// When the cluster made it.
    pub made: String,
}

/// What this member has of a cluster network.
#[derive(Debug, Clone)]
pub struct ClusterNetworkState {
    /// Its name.
    pub name: String,
    /// Its NICs here: address and the name it answers to.
    pub hosts: Vec<(String, String)>,
    /// Their MACs, by address.
    pub macs: std::collections::BTreeMap<String, String>,
    /// Addresses of its blocks not given yet.
    pub free: u32,
    /// The network it is a copy of: its VNI, subnet and when the cluster made it (`None`:
    /// a copy made before that was kept).
    pub vni: Option<u32>,
    pub subnet: String,
    pub made: Option<String>,
}

impl NetworkService {
    /// Makes this member's copy of a cluster network.
    pub fn create_cluster(&self, spec: ClusterNetworkSpec) -> Result<Network> {
        let req = NetworkCreate {
            name: spec.name,
            subnet: spec.subnet,
            ipv6: None,
            vni: Some(spec.vni),
            peers: spec.peers,
            local: Some(spec.local),
            vlans: Vec::new(),
            isolated_ports: false,
            cluster: false,
            description: spec.description,
            config: Default::default(),
        };
        let (ranges, made) = (spec.ranges, spec.made);
        self.create_with(req, move |rec| {
            rec.cluster = true;
            rec.ranges = ranges;
            rec.cluster_made = Some(made);
        })
    }

    /// Brings this member's copy of cluster network `name` up to what the cluster says:
    /// its peers (forwarding entries added and removed), its blocks, the other members'
    /// names (dnsmasq reloaded).
    pub fn cluster_update(
        &self,
        name: &str,
        peers: Vec<String>,
        ranges: Vec<String>,
        remote_names: Vec<(String, String)>,
        remote_macs: std::collections::BTreeMap<String, String>,
    ) -> Result<()> {
        let _g = self.busy();
        let mut rec = self.record(name)?;
        if !rec.cluster {
            return Err(Error::conflict(format!("{name} is not a cluster network")));
        }
        let mut changed = false;
        let peers_changed = peers != rec.peers;
        if peers_changed {
            let mut links = Links::open(&NetNs::current()).map_err(|e| net_err("netlink")(&e))?;
            let (old, new): (BTreeSet<&String>, BTreeSet<&String>) =
                (rec.peers.iter().collect(), peers.iter().collect());
            for p in new.difference(&old) {
                if let Ok(ip) = p.parse::<Ipv4Addr>() {
                    vessel_net::add_vxlan_peer(&mut links, &rec.vxlan(), ip)
                        .map_err(|e| net_err("adding a VXLAN peer")(&e))?;
                }
            }
            for p in old.difference(&new) {
                if let Ok(ip) = p.parse::<Ipv4Addr>() {
                    let _ = vessel_net::remove_vxlan_peer(&mut links, &rec.vxlan(), ip);
                }
            }
            rec.peers = peers;
            changed = true;
        }
        if ranges != rec.ranges {
            rec.ranges = ranges;
            changed = true;
        }
        if remote_macs != rec.remote_macs {
            let mut links = Links::open(&NetNs::current()).map_err(|e| net_err("netlink")(&e))?;
            for ip in rec
                .remote_macs
                .keys()
                .filter(|ip| !remote_macs.contains_key(*ip))
            {
                if let Ok(ip) = ip.parse::<Ipv4Addr>() {
                    let _ = vessel_net::remove_neighbor(&mut links, &rec.bridge(), ip);
                }
            }
            rec.remote_macs = remote_macs;
            set_neighbors(&mut links, &rec)?;
            changed = true;
        }
        let routed = peers_changed || remote_names != rec.remote_names;
        if remote_names != rec.remote_names {
            rec.remote_names = remote_names;
            self.apply_dnsmasq(&rec)?;
            changed = true;
        }
        if changed {
            self.put(&rec)?;
        }
        // The other members' instances moved, came or went: forwards and balancers follow
        // them, and what this member routes to them is sent from its underlay address.
        if routed {
            if let Err(e) = self.apply_rules(&rec) {
                // Seen as a change again at the next pass, which tries again.
                rec.remote_names.clear();
                let _ = self.put(&rec);
                return Err(e);
            }
            for lb in &rec.load_balancers {
                if let Err(e) = self.start_lb(&rec, lb) {
                    tracing::warn!(network = %name, balancer = %lb.name, error = %e, "balancer not updated");
                }
            }
        }
        Ok(())
    }

    /// This member's cluster networks.
    pub fn cluster_networks(&self) -> Result<Vec<ClusterNetworkState>> {
        Ok(self
            .records()?
            .into_iter()
            .filter(|r| r.cluster)
            .map(|r| {
                let hosts: Vec<(String, String)> = r
                    .leases
                    .iter()
                    .map(|l| {
                        let name = crate::project::split(&l.instance).1.to_string();
                        (l.ip.clone(), name)
                    })
                    .collect();
                let blocks = r
                    .ranges
                    .iter()
                    .filter_map(|b| b.parse::<vessel_net::Subnet>().ok())
                    .map(|b| 1u32 << (32 - u32::from(b.prefix())))
                    .sum::<u32>();
                let macs = r
                    .leases
                    .iter()
                    .map(|l| (l.ip.clone(), l.mac.clone()))
                    .collect();
                ClusterNetworkState {
                    vni: r.vni,
                    subnet: r.subnet,
                    made: r.cluster_made,
                    name: r.name,
                    macs,
                    free: blocks.saturating_sub(hosts.len() as u32 + 2),
                    hosts,
                }
            })
            .collect())
    }
}

/// Sets the neighbour entries of the other members' NICs on cluster network `rec`'s bridge.
pub(super) fn set_neighbors(links: &mut Links, rec: &NetworkRecord) -> Result<()> {
    for (ip, mac) in &rec.remote_macs {
        let (Ok(ip), Ok(mac)) = (ip.parse::<Ipv4Addr>(), mac.parse::<vessel_net::MacAddr>()) else {
            continue;
        };
        vessel_net::set_neighbor(links, &rec.bridge(), ip, mac)
            .map_err(|e| net_err("a neighbour entry")(&e))?;
    }
    Ok(())
}
