//! A network's kernel objects: its bridge, overlay and segments, NAT and forward rules and
//! dnsmasq made (or brought back) from its record, and removed with it.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use vessel_api::NetworkLease;
use vessel_net::{
    BandwidthLimits, DhcpDns, Links, NatRules, NetNs, Overlay, PortForward, Protocol, StaticLease,
    Upstream, VlanMode,
};

use super::parse::lease_limits;
use super::record::NetworkRecord;
use super::{net_err, NetworkService};
use crate::error::{Error, Result};

impl NetworkService {
    /// Creates (or brings back) the bridge, overlay, NAT, ACL and dnsmasq of a network.
    pub(super) fn realize(&self, rec: &NetworkRecord) -> Result<()> {
        let ns = NetNs::current();
        let subnet = rec.subnet()?;
        let mut links = Links::open(&ns).map_err(|e| net_err("netlink")(&e))?;
        let bridge = rec.bridge();
        let exists = links
            .find(&bridge)
            .map_err(|e| net_err("netlink")(&e))?
            .is_some();
        if !exists {
            vessel_net::create_bridge(
                &mut links,
                &vessel_net::BridgeSpec {
                    name: bridge.clone(),
                    subnet,
                    mtu: Some(rec.mtu()),
                },
            )
            .map_err(|e| net_err("creating the bridge")(&e))?;
        }
        if let Some(gw6) = rec.gateway6()? {
            links
                .add_address6(&bridge, gw6, 64)
                .map_err(|e| net_err("the bridge's IPv6 address")(&e))?;
            std::fs::write("/proc/sys/net/ipv6/conf/all/forwarding", "1")
                .map_err(|e| Error::internal(format!("turning on IPv6 forwarding: {e}")))?;
        }
        if let Some(vni) = rec.vni {
            // Every host of an overlay holds the same gateway address; with the same MAC too
            // (an anycast gateway), an instance's ARP answer is the same whichever host sends
            // it, and its frames to the gateway stay on its own host's bridge.
            links
                .set_mac(&bridge, rec.gateway_mac())
                .map_err(|e| net_err("setting the gateway MAC")(&e))?;
            ensure_vxlan(&mut links, rec, &rec.vxlan(), vni, &bridge)?;
            super::cluster::set_neighbors(&mut links, rec)?;
            // Each host's dnsmasq answers its own instances only.
            vessel_net::keep_dhcp_local(&ns, &rec.kname(), &rec.vxlan())
                .map_err(|e| net_err("keeping DHCP on this host")(&e))?;
        }
        let mode = self.vlan_mode(rec);
        for &vid in &rec.vlans {
            let seg = vessel_net::create_segment(&mut links, mode, &rec.segment_base(mode), vid)
                .map_err(|e| net_err(&format!("creating VLAN segment {vid}"))(&e))?;
            if mode == VlanMode::BridgePerVlan {
                links
                    .set_mtu(&seg, rec.mtu())
                    .map_err(|e| net_err("segment MTU")(&e))?;
            }
            if let Some(vni) = rec.vni {
                let dev = rec.segment_vxlan(vid);
                ensure_vxlan(&mut links, rec, &dev, vni + u32::from(vid), &seg)?;
            }
        }
        // Host ends left from before (a daemon restart) go back on their bridge, with their
        // isolation and limits.
        for l in &rec.leases {
            if links
                .find(&l.host_interface)
                .map_err(|e| net_err("netlink")(&e))?
                .is_some()
            {
                let home = match l.vlan {
                    Some(v) => rec.segment_bridge(self.vlan_mode(rec), v),
                    None => bridge.clone(),
                };
                let _ = links.set_master(&l.host_interface, Some(&home));
                let _ = links.set_up(&l.host_interface, true);
                if let Err(e) = self.port_setup(&mut links, rec, l) {
                    tracing::warn!(nic = %l.host_interface, error = %e.message, "NIC settings not restored");
                }
            }
        }
        vessel_net::set_ipv4_forwarding(&ns, true).map_err(|e| net_err("ip_forward")(&e))?;
        // Published ports answer the host's own 127.0.0.1 (see `NatRules`).
        vessel_net::set_route_localnet(&ns, &bridge, true)
            .map_err(|e| net_err("route_localnet")(&e))?;
        self.apply_rules(rec)?;
        self.apply_dnsmasq(rec)?;
        self.prune_lb_tables(rec);
        let mut first_err = None;
        for lb in &rec.load_balancers {
            if let Err(e) = self.start_lb(rec, lb) {
                tracing::error!(lb = %lb.name, error = %e.message, "balancer not started");
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// What a NIC's host port needs beyond its bridge: its VLAN segment, isolation, hairpin
    /// mode and bandwidth limits.
    pub(super) fn port_setup(
        &self,
        links: &mut Links,
        rec: &NetworkRecord,
        l: &NetworkLease,
    ) -> Result<()> {
        if let Some(vid) = l.vlan {
            let mode = self.vlan_mode(rec);
            vessel_net::attach_to_segment(
                links,
                mode,
                &rec.segment_base(mode),
                &l.host_interface,
                vid,
            )
            .map_err(|e| net_err(&format!("putting {} on VLAN {vid}", l.instance))(&e))?;
        }
        if rec.isolated_ports {
            vessel_net::set_port_isolated(links, &l.host_interface, true)
                .map_err(|e| net_err("isolating the port")(&e))?;
        }
        if l.vlan.is_none() {
            // An instance reaching its own published port through the host comes back
            // through the port it left by.
            vessel_net::set_port_hairpin(links, &l.host_interface, true)
                .map_err(|e| net_err("hairpin mode of the port")(&e))?;
        }
        let limits = lease_limits(l)?;
        if limits != BandwidthLimits::default() {
            vessel_net::set_bandwidth(&NetNs::current(), &l.host_interface, &limits)
                .map_err(|e| net_err("bandwidth limits")(&e))?;
        }
        Ok(())
    }

    pub(super) fn apply_rules(&self, rec: &NetworkRecord) -> Result<()> {
        render_nat(rec)?
            .apply(&NetNs::current())
            .map_err(|e| net_err("nftables")(&e))?;
        self.apply_acl(rec)
    }

    pub(super) fn apply_dnsmasq(&self, rec: &NetworkRecord) -> Result<()> {
        render_dhcp(rec, self.inner.run.join(&rec.name))?
            .apply(&NetNs::current())
            .map_err(|e| net_err("dnsmasq")(&e))?;
        Ok(())
    }

    pub(super) fn teardown(&self, rec: &NetworkRecord) {
        let ns = NetNs::current();
        for lb in &rec.load_balancers {
            self.stop_lb(rec, &lb.name);
        }
        self.prune_lb_tables(&NetworkRecord {
            load_balancers: Vec::new(),
            ..rec.clone()
        });
        vessel_net::stop_dnsmasq(&self.inner.run.join(&rec.name));
        let _ = std::fs::remove_dir_all(self.inner.run.join(&rec.name));
        let _ = vessel_net::remove_table(&ns, &rec.kname());
        let _ = vessel_net::remove_acl(&ns, &rec.kname());
        let _ = vessel_net::remove_dhcp_local(&ns, &rec.kname());
        if let Ok(mut links) = Links::open(&ns) {
            let mode = self.vlan_mode(rec);
            for &vid in &rec.vlans {
                let _ = links.delete(&rec.segment_vxlan(vid));
                let _ = vessel_net::remove_segment(&mut links, mode, &rec.segment_base(mode), vid);
            }
            let _ = links.delete(&rec.vxlan());
            let _ = links.delete(&rec.bridge());
        }
    }
}

/// Makes the VXLAN device `dev` of an overlay network exist on `bridge`, with the
/// network's peers (entries already there are fine, as after a restart).
fn ensure_vxlan(
    links: &mut Links,
    rec: &NetworkRecord,
    dev: &str,
    vni: u32,
    bridge: &str,
) -> Result<()> {
    let local = rec
        .local
        .as_deref()
        .and_then(|l| l.parse().ok())
        .ok_or_else(|| Error::internal("an overlay without its underlay address"))?;
    if links
        .find(dev)
        .map_err(|e| net_err("netlink")(&e))?
        .is_none()
    {
        vessel_net::create_vxlan(
            links,
            &vessel_net::VxlanSpec {
                name: dev.to_string(),
                vni,
                local,
                port: vessel_net::VXLAN_PORT,
                underlay_mtu: 1500,
                bridge: bridge.to_string(),
            },
        )
        .map_err(|e| net_err(&format!("creating VXLAN device {dev} (VNI {vni})"))(&e))?;
    }
    for p in &rec.peers {
        let peer: Ipv4Addr = p.parse().map_err(|_| Error::invalid("bad peer"))?;
        let _ = vessel_net::add_vxlan_peer(links, dev, peer);
    }
    Ok(())
}

/// The NAT rules of network `rec`: masquerade of its subnets and its published ports, each
/// to the address its instance has on the network.
pub(super) fn render_nat(rec: &NetworkRecord) -> Result<NatRules> {
    let subnet = rec.subnet()?;
    let mut forwards = Vec::new();
    for f in &rec.forwards {
        let Some(target) = rec.address_of(&f.instance) else {
            // On a cluster network an instance may be between members (moving, failing
            // over): its forward waits for it.
            if rec.cluster {
                tracing::info!(network = %rec.name, instance = %f.instance, "forward target on no member now; left out");
                continue;
            }
            return Err(Error::invalid(format!(
                "{} has no NIC on {}",
                f.instance, rec.name
            )));
        };
        forwards.push(PortForward {
            protocol: if f.protocol == "udp" {
                Protocol::Udp
            } else {
                Protocol::Tcp
            },
            listen_address: f
                .listen_address
                .as_deref()
                .map(|a| a.parse().map_err(|_| Error::invalid("bad listen address")))
                .transpose()?,
            listen_port: f.listen_port,
            target: target
                .parse()
                .map_err(|_| Error::internal("stored lease address"))?,
            target_port: f.target_port,
        });
    }
    let addrs = |list: &mut dyn Iterator<Item = &String>| -> Vec<Ipv4Addr> {
        list.filter_map(|a| a.parse().ok()).collect()
    };
    let overlay = match (&rec.local, rec.cluster) {
        (Some(local), true) => Some(Overlay {
            gateway: subnet.gateway(),
            local: local
                .parse()
                .map_err(|_| Error::internal("stored underlay address"))?,
            peers: addrs(&mut rec.peers.iter()),
            remote: addrs(&mut rec.remote_names.iter().map(|(ip, _)| ip)),
        }),
        _ => None,
    };
    Ok(NatRules {
        network: rec.kname(),
        bridge: rec.bridge(),
        subnet,
        forwards,
        subnet6: rec.subnet6()?.map(|p| (p, 64)),
        overlay,
    })
}

/// The DHCP and DNS service of network `rec`, keeping its state in `state_dir`: a static
/// lease and a name for each NIC on the gateway's segment.
pub(super) fn render_dhcp(rec: &NetworkRecord, state_dir: PathBuf) -> Result<DhcpDns> {
    let subnet = rec.subnet()?;
    let mut static_leases = Vec::new();
    // NICs on VLAN segments are outside the gateway's broadcast domain.
    for l in rec.leases.iter().filter(|l| l.vlan.is_none()) {
        static_leases.push(StaticLease {
            mac: l
                .mac
                .parse()
                .map_err(|_| Error::internal("stored lease MAC"))?,
            ip: l
                .ip
                .parse()
                .map_err(|_| Error::internal("stored lease address"))?,
            // The name the instance has in its project.
            name: Some(crate::project::split(&l.instance).1.to_string()),
            ipv6: l.ipv6.as_deref().and_then(|a| a.parse().ok()),
        });
    }
    Ok(DhcpDns {
        bridge: rec.bridge(),
        subnet,
        dynamic_range: None,
        lease_secs: 3600,
        domain: rec.domain(),
        static_leases,
        remote_names: rec
            .remote_names
            .iter()
            .filter_map(|(ip, name)| Some((ip.parse().ok()?, name.clone())))
            .collect(),
        // Names outside the network's domain go to the host's resolvers, so that instances
        // given the gateway as their DNS server still resolve the rest of the world.
        upstream: Upstream::HostResolvConf,
        ipv6_gateway: rec.gateway6()?,
        state_dir,
    })
}

#[cfg(test)]
mod tests {
    use vessel_api::NetworkForward;

    use super::super::record::fixture::{lease, network};
    use super::*;

    #[test]
    fn nat_publishes_forwards_to_their_instance() {
        let mut lan = network("lan", "10.1.0.0/24");
        lan.ipv6 = Some("fd42::/64".into());
        lan.leases.push(lease("web", "10.1.0.2"));
        lan.forwards.push(NetworkForward {
            protocol: "udp".into(),
            listen_address: Some("192.0.2.1".into()),
            listen_port: 53,
            instance: "web".into(),
            target_port: 5353,
        });
        let nat = render_nat(&lan).unwrap();
        assert_eq!(
            (nat.network.as_str(), nat.bridge.as_str()),
            ("lan", "vbr-lan")
        );
        assert_eq!(nat.subnet6, Some(("fd42::".parse().unwrap(), 64)));
        assert_eq!(
            nat.forwards,
            vec![PortForward {
                protocol: Protocol::Udp,
                listen_address: Some("192.0.2.1".parse().unwrap()),
                listen_port: 53,
                target: "10.1.0.2".parse().unwrap(),
                target_port: 5353,
            }]
        );
        lan.forwards[0].instance = "gone".into();
        assert!(render_nat(&lan).is_err());
    }

    #[test]
    fn dhcp_serves_the_nics_the_gateway_reaches() {
        let mut lan = network("lan", "10.1.0.0/24");
        lan.leases.push(lease("web", "10.1.0.2"));
        let mut seg = lease("seg", "10.1.0.3");
        seg.vlan = Some(10);
        lan.leases.push(seg);
        let dhcp = render_dhcp(&lan, PathBuf::from("/run/x")).unwrap();
        assert_eq!(dhcp.domain, "lan.vessel");
        assert_eq!(dhcp.bridge, "vbr-lan");
        assert_eq!(dhcp.state_dir, PathBuf::from("/run/x"));
        assert_eq!(dhcp.static_leases.len(), 1, "not the segment's NIC");
        assert_eq!(dhcp.static_leases[0].name.as_deref(), Some("web"));
        assert_eq!(dhcp.ipv6_gateway, None);
        assert_eq!(dhcp.upstream, Upstream::HostResolvConf);
    }
}
