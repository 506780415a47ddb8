//! NICs: addresses and MACs allocated on attach, veths plugged into containers (at start or
//! at once into a running one), taps for VMs, bandwidth limits, and detaching.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use vessel_api::{
    Instance, InstanceNic, InstanceType, Network, NetworkLease, NicAttach, NicLimits,
};
use vessel_net::{Ipam, Links, MacAddr, NetNs};

use super::parse::{changed_limits, lease_limits, parse_rate};
use super::rebuild::prune_ifbs;
use super::record::{derived_mac, eui64, has_acl, ifname, NetworkRecord};
use super::{net_err, NetworkService};
use crate::error::{Error, Result};

impl NetworkService {
    /// Gives an instance a NIC on a network. `pid` is the init of a running container: the
    /// NIC is plugged into its namespace at once (hot add); otherwise it is plugged when the
    /// instance starts. The caller holds the instance's lock and has checked its state.
    pub fn attach(
        &self,
        network: &str,
        req: NicAttach,
        inst: &Instance,
        pid: Option<i32>,
    ) -> Result<Network> {
        let _g = self.busy();
        let mut rec = self.record(network)?;
        let all = self.records()?;
        let lease = plan_lease(&rec, &all, &req, inst.instance_type)?;
        if let Some(pid) = pid {
            let ns = NetNs::from_pid(pid as u32).map_err(|e| net_err("instance namespace")(&e))?;
            self.plug_one(&rec, &lease, &ns, !has_routed_nic(&all, &req.instance))?;
        }
        rec.leases.push(lease);
        // A network with rules re-applies them (the new NIC joins the filtered ports and its
        // address the `@NAME` sets); one without has no table to touch.
        let acl = if has_acl(&rec) {
            self.apply_acl(&rec)
        } else {
            Ok(())
        };
        let saved = acl
            .and_then(|()| self.apply_dnsmasq(&rec))
            .and_then(|()| self.put(&rec));
        if let Err(e) = saved {
            if pid.is_some() {
                self.unplug(&rec.leases[rec.leases.len() - 1]);
            }
            return Err(e);
        }
        self.inner
            .events
            .lifecycle("network-nic-attached", &format!("/1.0/networks/{network}"));
        Ok(self.view(&rec))
    }

    /// Removes an instance's NIC from a network (a running container's at once). The caller
    /// has checked the instance's state.
    pub fn detach(&self, network: &str, instance: &str) -> Result<Network> {
        let _g = self.busy();
        let mut rec = self.record(network)?;
        let Some(lease) = rec.leases.iter().find(|l| l.instance == instance).cloned() else {
            return Err(Error::not_found(format!(
                "{instance:?} has no NIC on {network:?}"
            )));
        };
        rec.forwards.retain(|f| f.instance != instance);
        rec.leases.retain(|l| l.instance != instance);
        let mut changed = Vec::new();
        for lb in &mut rec.load_balancers {
            let before = lb.backends.len();
            lb.backends.retain(|b| b != instance);
            if lb.backends.len() != before {
                changed.push(lb.clone());
            }
        }
        // What can fail comes first; the NIC goes once the rules no longer name it.
        self.apply_rules(&rec)?;
        self.apply_dnsmasq(&rec)?;
        self.put(&rec)?;
        self.unplug(&lease);
        for lb in &changed {
            if let Err(e) = self.start_lb(&rec, lb) {
                tracing::warn!(lb = %lb.name, error = %e.message, "balancer not updated");
            }
        }
        self.inner
            .events
            .lifecycle("network-nic-detached", &format!("/1.0/networks/{network}"));
        Ok(self.view(&rec))
    }

    /// Removes a NIC's host end (a veth's instance end goes with it) and its IFB device.
    fn unplug(&self, lease: &NetworkLease) {
        let ns = NetNs::current();
        if let Ok(mut links) = Links::open(&ns) {
            if links.find(&lease.host_interface).ok().flatten().is_some() {
                let _ = vessel_net::clear_bandwidth(&ns, &lease.host_interface);
                let _ = links.delete(&lease.host_interface);
            }
        }
    }

    /// Changes the bandwidth limits a request names (`none` lifts one; one left out stays);
    /// applied at once when the NIC's host end exists.
    pub fn set_limits(&self, network: &str, instance: &str, req: NicLimits) -> Result<Network> {
        let _g = self.busy();
        let mut rec = self.record(network)?;
        let Some(i) = rec.leases.iter().position(|l| l.instance == instance) else {
            return Err(Error::not_found(format!(
                "{instance:?} has no NIC on {network:?}; attach it first"
            )));
        };
        let mut lease = rec.leases[i].clone();
        (lease.ingress, lease.egress) = changed_limits(
            (lease.ingress.take(), lease.egress.take()),
            req.ingress,
            req.egress,
        )?;
        let limits = lease_limits(&lease)?;
        let ns = NetNs::current();
        let live = Links::open(&ns)
            .map_err(|e| net_err("netlink")(&e))?
            .find(&lease.host_interface)
            .map_err(|e| net_err("netlink")(&e))?
            .is_some();
        if live {
            vessel_net::set_bandwidth(&ns, &lease.host_interface, &limits)
                .map_err(|e| net_err("bandwidth limits")(&e))?;
        }
        rec.leases[i] = lease;
        self.put(&rec)?;
        Ok(self.view(&rec))
    }

    /// An instance is gone: its NICs go.
    pub fn instance_deleted(&self, instance: &str) -> Result<()> {
        for rec in self.records()? {
            if rec.leases.iter().any(|l| l.instance == instance) {
                self.detach(&rec.name, instance)?;
            }
        }
        Ok(())
    }

    /// Gives an instance's leases, forwards and balancer backends its new name (a stopped
    /// instance: its NICs are not plugged), and DNS the new name.
    pub fn instance_renamed(&self, old: &str, new: &str) -> Result<()> {
        let _g = self.busy();
        // The new host end names, checked before anything changes: one another NIC has
        // would be taken from it at the next plug (see `plan_lease`).
        let all = self.records()?;
        for rec in &all {
            for l in rec.leases.iter().filter(|l| l.instance == old) {
                let prefix: String = l.host_interface.chars().take(2).collect();
                let name = super::record::ifname(&prefix, new, &rec.name);
                let taken = all
                    .iter()
                    .flat_map(|r| r.leases.iter())
                    .any(|o| o.instance != old && o.host_interface == name);
                if taken {
                    return Err(Error::conflict(format!(
                        "renamed {new:?}, the instance's NIC would be named {name} on the \
                         host, as another NIC is (its name is a short hash): choose another \
                         name"
                    )));
                }
            }
        }
        for mut rec in all {
            let names = rec.leases.iter().any(|l| l.instance == old)
                || rec
                    .load_balancers
                    .iter()
                    .any(|lb| lb.backends.iter().any(|b| b == old));
            if !names {
                continue;
            }
            let rename = |n: &mut String| {
                if n == old {
                    *n = new.to_string();
                }
            };
            let network = rec.name.clone();
            for l in rec.leases.iter_mut().filter(|l| l.instance == old) {
                l.instance = new.to_string();
                // Host-side names derive from the instance's name: a later instance taking
                // the old one must not get this NIC's name.
                let prefix: String = l.host_interface.chars().take(2).collect();
                l.host_interface = super::record::ifname(&prefix, new, &network);
            }
            rec.forwards
                .iter_mut()
                .for_each(|f| rename(&mut f.instance));
            let mut changed = Vec::new();
            for lb in &mut rec.load_balancers {
                if lb.backends.iter().any(|b| b == old) {
                    lb.backends.iter_mut().for_each(rename);
                    changed.push(lb.clone());
                }
            }
            self.apply_rules(&rec)?;
            self.apply_dnsmasq(&rec)?;
            self.put(&rec)?;
            for lb in &changed {
                if let Err(e) = self.start_lb(&rec, lb) {
                    tracing::warn!(lb = %lb.name, error = %e.message, "balancer not updated");
                }
            }
        }
        Ok(())
    }

    /// The instances that hold a lease on some network.
    pub fn lease_owners(&self) -> Result<std::collections::BTreeSet<String>> {
        Ok(self
            .records()?
            .iter()
            .flat_map(|r| r.leases.iter().map(|l| l.instance.clone()))
            .collect())
    }

    /// An instance's leases with their networks, `eth0` first.
    fn leases_in_order(&self, instance: &str) -> Result<Vec<(NetworkRecord, NetworkLease)>> {
        let mut nics: Vec<(NetworkRecord, NetworkLease)> = self
            .records()?
            .into_iter()
            .flat_map(|r| {
                r.leases
                    .iter()
                    .filter(|l| l.instance == instance)
                    .cloned()
                    .map(|l| (r.clone(), l))
                    .collect::<Vec<_>>()
            })
            .collect();
        nics.sort_by_key(|(_, l)| l.interface.trim_start_matches("eth").parse::<u32>().ok());
        Ok(nics)
    }

    /// Plugs a started container's NICs into its network namespace (the init's `pid`).
    pub fn plug_container(&self, instance: &str, pid: i32) -> Result<()> {
        let _g = self.busy();
        let nics = self.leases_in_order(instance)?;
        prune_ifbs();
        if nics.is_empty() {
            return Ok(());
        }
        let ns = NetNs::from_pid(pid as u32).map_err(|e| net_err("instance namespace")(&e))?;
        let mut routed = false;
        for (rec, l) in nics {
            self.plug_one(&rec, &l, &ns, !routed)?;
            routed |= l.vlan.is_none();
        }
        Ok(())
    }

    /// Plugs the NICs of a running container that are missing (a daemon stopped between
    /// starting it and plugging them); the ones that are there are left as they are.
    pub fn plug_missing(&self, instance: &str, pid: i32) -> Result<()> {
        let _g = self.busy();
        let nics = self.leases_in_order(instance)?;
        if nics.is_empty() {
            return Ok(());
        }
        let mut host = Links::open(&NetNs::current()).map_err(|e| net_err("netlink")(&e))?;
        let present = |host: &mut Links, name: &str| host.find(name).ok().flatten().is_some();
        let mut routed = nics
            .iter()
            .any(|(_, l)| l.vlan.is_none() && present(&mut host, &l.host_interface));
        let ns = NetNs::from_pid(pid as u32).map_err(|e| net_err("instance namespace")(&e))?;
        for (rec, l) in nics {
            if present(&mut host, &l.host_interface) {
                continue;
            }
            tracing::info!(instance, nic = %l.host_interface, "plugging a NIC a restart found missing");
            self.plug_one(&rec, &l, &ns, !routed)?;
            routed |= l.vlan.is_none();
        }
        Ok(())
    }

    /// Plugs one NIC into the namespace `ns`, and sets up its port. With `first_routed` (the
    /// instance has no NIC on a gateway's segment yet) a NIC off any VLAN segment also gets
    /// the default routes through the network's gateway; a segment NIC never does.
    fn plug_one(
        &self,
        rec: &NetworkRecord,
        l: &NetworkLease,
        ns: &NetNs,
        first_routed: bool,
    ) -> Result<()> {
        let gateway = first_routed && l.vlan.is_none();
        let subnet = rec.subnet()?;
        let mut host = Links::open(&NetNs::current()).map_err(|e| net_err("netlink")(&e))?;
        // A host end left from an earlier run of the instance goes first.
        if host.find(&l.host_interface).ok().flatten().is_some() {
            self.unplug(l);
        }
        let mode = self.vlan_mode(rec);
        vessel_net::plug_veth(
            &mut host,
            &vessel_net::VethNic {
                host_name: l.host_interface.clone(),
                bridge: match l.vlan {
                    Some(v) => rec.segment_bridge(mode, v),
                    None => rec.bridge(),
                },
                instance_ns: ns,
                instance_name: l.interface.clone(),
                mac: l.mac.parse().ok(),
                address: Some((
                    l.ip.parse()
                        .map_err(|_| Error::internal("stored lease address"))?,
                    subnet.prefix(),
                )),
                gateway: gateway.then(|| subnet.gateway()),
                mtu: Some(rec.mtu()),
            },
        )
        .map_err(|e| net_err(&format!("plugging {} into {}", l.instance, rec.name))(&e))?;
        let v6 = (|| -> Result<()> {
            if let Some(addr) = l.ipv6.as_deref().and_then(|a| a.parse().ok()) {
                let mut inner = Links::open(ns).map_err(|e| net_err("netlink")(&e))?;
                inner
                    .add_address6(&l.interface, addr, 64)
                    .map_err(|e| net_err("the NIC's IPv6 address")(&e))?;
                if let (true, Some(gw6)) = (gateway, rec.gateway6()?) {
                    inner
                        .add_default_route6(gw6)
                        .map_err(|e| net_err("the IPv6 default route")(&e))?;
                }
            }
            Ok(())
        })();
        if let Err(e) = v6.and_then(|()| self.port_setup(&mut host, rec, l)) {
            self.unplug(l);
            return Err(e);
        }
        Ok(())
    }

    /// Tap devices (created here, root-only: the VM engine opens them and QEMU inherits the
    /// descriptors) and MACs for a VM's NICs.
    pub fn vm_nics(&self, instance: &str) -> Result<Vec<vessel_vm::Nic>> {
        let _g = self.busy();
        let mut out = Vec::new();
        for rec in self.records()? {
            for l in rec.leases.iter().filter(|l| l.instance == instance) {
                let ns = NetNs::current();
                self.unplug(l);
                vessel_net::create_tap(
                    &ns,
                    &vessel_net::TapSpec {
                        name: l.host_interface.clone(),
                        vnet_hdr: true,
                        multi_queue: false,
                        mac: None,
                        mtu: Some(rec.mtu()),
                        bridge: Some(rec.bridge()),
                    },
                )
                .map_err(|e| net_err("creating the tap device")(&e))?;
                let mut links = Links::open(&ns).map_err(|e| net_err("netlink")(&e))?;
                if let Err(e) = self.port_setup(&mut links, &rec, l) {
                    self.unplug(l);
                    return Err(e);
                }
                out.push(vessel_vm::Nic {
                    backend: vessel_vm::NicBackend::Tap {
                        ifname: l.host_interface.clone(),
                    },
                    mac: Some(l.mac.clone()),
                });
            }
        }
        Ok(out)
    }

    /// Every instance's NICs, by instance, `eth0` first.
    pub fn nics_by_instance(&self) -> Result<BTreeMap<String, Vec<InstanceNic>>> {
        let mut out: BTreeMap<String, Vec<InstanceNic>> = BTreeMap::new();
        for rec in self.records()? {
            for l in &rec.leases {
                out.entry(l.instance.clone())
                    .or_default()
                    .push(nic_view(&rec, l));
            }
        }
        for nics in out.values_mut() {
            nics.sort_by_key(|n| interface_number(&n.interface));
        }
        Ok(out)
    }

    /// Every instance's NICs as (interface inside, host end), by instance: where the traffic
    /// counters of each NIC are read (the host end of a veth or a VM's tap).
    pub fn host_ends(&self) -> Result<BTreeMap<String, Vec<(String, String)>>> {
        let mut out: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
        for rec in self.records()? {
            for l in rec.leases {
                out.entry(l.instance)
                    .or_default()
                    .push((l.interface, l.host_interface));
            }
        }
        Ok(out)
    }

    /// The DNS server and search domain of an instance: its first NIC with a gateway's.
    pub fn instance_dns(&self, instance: &str) -> Result<Option<(Ipv4Addr, String)>> {
        let mut first: Option<(u32, Ipv4Addr, String)> = None;
        for rec in self.records()? {
            for l in rec
                .leases
                .iter()
                .filter(|l| l.instance == instance && l.vlan.is_none())
            {
                let n = interface_number(&l.interface);
                if first.as_ref().is_none_or(|(m, _, _)| n < *m) {
                    first = Some((n, rec.subnet()?.gateway(), rec.domain()));
                }
            }
        }
        Ok(first.map(|(_, gw, domain)| (gw, domain)))
    }
}

/// The number of `ethN` (unknown names last).
fn interface_number(name: &str) -> u32 {
    name.strip_prefix("eth")
        .and_then(|n| n.parse().ok())
        .unwrap_or(u32::MAX)
}

/// A lease of network `rec` as its instance shows it.
fn nic_view(rec: &NetworkRecord, l: &NetworkLease) -> InstanceNic {
    let subnet = rec.subnet().ok();
    InstanceNic {
        network: rec.name.clone(),
        interface: l.interface.clone(),
        mac: l.mac.clone(),
        ipv4: match subnet {
            Some(s) => format!("{}/{}", l.ip, s.prefix()),
            None => l.ip.clone(),
        },
        ipv6: l.ipv6.as_ref().map(|a| format!("{a}/64")),
        gateway: subnet
            .filter(|_| l.vlan.is_none())
            .map(|s| s.gateway().to_string()),
        vlan: l.vlan,
    }
}

/// The lease a new NIC of `req.instance` (of `instance_type`) gets on network `rec`, given
/// every network (`all`): the address asked for or the lowest free one, the MAC asked for or
/// one derived from the names that no NIC uses, the lowest free `ethN` of the instance, and
/// the host-side name.
pub(super) fn plan_lease(
    rec: &NetworkRecord,
    all: &[NetworkRecord],
    req: &NicAttach,
    instance_type: InstanceType,
) -> Result<NetworkLease> {
    let network = &rec.name;
    if rec.leases.iter().any(|l| l.instance == req.instance) {
        return Err(Error::conflict(format!(
            "{:?} already has a NIC on {network:?}",
            req.instance
        )));
    }
    if let Some(v) = req.vlan {
        if !rec.vlans.contains(&v) {
            return Err(Error::invalid(format!(
                "network {network:?} has no VLAN segment {v} (it has: {}); segments are \
                 set with --vlan when the network is created",
                if rec.vlans.is_empty() {
                    "none".to_string()
                } else {
                    rec.vlans
                        .iter()
                        .map(u16::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            )));
        }
    }
    for r in req.ingress.iter().chain(req.egress.iter()) {
        parse_rate(r)?;
    }
    let subnet = rec.subnet()?;
    let plain = crate::project::split(&req.instance).1;
    let mut ipam = Ipam::new(subnet);
    for l in &rec.leases {
        if let Ok(ip) = l.ip.parse() {
            let _ = ipam.reserve(ip);
        }
    }
    // A cluster network: this member hands out the addresses of its own blocks only, so no
    // address is given on two members.
    let blocks: Vec<vessel_net::Subnet> =
        rec.ranges.iter().filter_map(|r| r.parse().ok()).collect();
    let in_blocks = |ip: Ipv4Addr| blocks.iter().any(|b| b.contains(ip));
    if rec.cluster {
        if blocks.is_empty() {
            return Err(Error::conflict(format!(
                "cluster network {network:?} has no address block on this member yet; try \
                 again in a few seconds"
            )));
        }
        let (first, last) = (u32::from(subnet.network()), u32::from(subnet.broadcast()));
        for n in first + 1..last {
            let ip = Ipv4Addr::from(n);
            if !in_blocks(ip) {
                let _ = ipam.reserve(ip);
            }
        }
        // Addresses of this member's blocks that instances took along to other members.
        for (ip, _) in rec.remote_names.iter().filter(|(_, n)| *n != plain) {
            if let Ok(ip) = ip.parse() {
                let _ = ipam.reserve(ip);
            }
        }
    }
    let ip = match &req.ip {
        Some(s) => {
            let ip: Ipv4Addr = s
                .parse()
                .map_err(|_| Error::invalid(format!("{s:?} is not an IPv4 address")))?;
            if !subnet.contains(ip) {
                return Err(Error::invalid(format!(
                    "{ip} is outside {network:?}'s subnet {subnet}"
                )));
            }
            // An instance moving here live keeps the address it has on another member,
            // which that member's record of it names.
            let moving_in = rec
                .remote_names
                .iter()
                .any(|(a, n)| *n == plain && a.parse() == Ok(ip));
            if rec.cluster && !in_blocks(ip) && !moving_in {
                return Err(Error::invalid(format!(
                    "{ip} is not in this member's blocks of cluster network {network:?} ({}): \
                     launch on the member whose block holds it",
                    rec.ranges.join(", ")
                )));
            }
            let moving_in = rec.cluster && moving_in && !in_blocks(ip);
            if moving_in && rec.leases.iter().any(|l| l.ip.parse() == Ok(ip)) {
                return Err(Error::conflict(format!("{ip} is in use on {network:?}")));
            } else if !moving_in {
                ipam.reserve(ip)
                    .map_err(|e| Error::conflict(format!("{ip}: {e}")))?;
            }
            ip
        }
        None => ipam
            .allocate()
            .map_err(|e| Error::conflict(format!("network {network:?}: {e}")))?,
    };
    let all_macs: Vec<String> = all
        .iter()
        .flat_map(|r| r.leases.iter())
        .map(|l| l.mac.to_lowercase())
        .collect();
    let mac = match &req.mac {
        Some(m) => {
            let mac: MacAddr = m
                .parse()
                .map_err(|e| Error::invalid(format!("MAC {m:?}: {e}")))?;
            if mac.is_multicast() {
                return Err(Error::invalid(format!("MAC {mac} is a multicast address")));
            }
            if all_macs.contains(&mac.to_string().to_lowercase()) {
                return Err(Error::conflict(format!("MAC {mac} is already in use")));
            }
            mac
        }
        None => (0u8..=255)
            .map(|salt| derived_mac(&req.instance, network, salt))
            .find(|m| !all_macs.contains(&m.to_string().to_lowercase()))
            .ok_or_else(|| Error::conflict("no free MAC address"))?,
    };
    // The lowest ethN the instance does not use yet.
    let used: Vec<String> = all
        .iter()
        .flat_map(|r| r.leases.iter())
        .filter(|l| l.instance == req.instance)
        .map(|l| l.interface.clone())
        .collect();
    let interface = (0..)
        .map(|i| format!("eth{i}"))
        .find(|n| !used.contains(n))
        .unwrap_or_default();
    let prefix = if instance_type == InstanceType::Vm {
        "vt"
    } else {
        "vh"
    };
    // The host end's name is a short hash of instance and network: one another NIC has
    // would be taken from it (a plug removes a link of its name first).
    let host_interface = ifname(prefix, &req.instance, network);
    if all
        .iter()
        .flat_map(|r| r.leases.iter())
        .any(|l| l.host_interface == host_interface)
    {
        return Err(Error::conflict(format!(
            "the NIC's host interface would be named {host_interface}, as another NIC's is \
             (its name is a short hash of the instance's and the network's): rename the \
             instance"
        )));
    }
    Ok(NetworkLease {
        instance: req.instance.clone(),
        interface,
        mac: mac.to_string(),
        ip: ip.to_string(),
        ipv6: rec.subnet6()?.map(|p| eui64(p, mac).to_string()),
        host_interface,
        vlan: req.vlan,
        ingress: req.ingress.clone(),
        egress: req.egress.clone(),
        acl: String::new(),
    })
}

/// Whether `instance` has a NIC off any VLAN segment on one of the networks `all`: that one
/// holds its default routes.
pub(super) fn has_routed_nic(all: &[NetworkRecord], instance: &str) -> bool {
    all.iter()
        .flat_map(|r| r.leases.iter())
        .any(|l| l.instance == instance && l.vlan.is_none())
}

#[cfg(test)]
mod tests {
    use super::super::record::fixture::{lease, network};
    use super::*;
    use crate::error::ErrorKind;

    fn nic(instance: &str) -> NicAttach {
        NicAttach {
            instance: instance.into(),
            ip: None,
            mac: None,
            vlan: None,
            ingress: None,
            egress: None,
        }
    }

    #[test]
    fn a_new_nic_gets_the_lowest_free_address_and_interface() {
        let mut lan = network("lan", "10.1.0.0/24");
        lan.ipv6 = Some("fd42::/64".into());
        lan.leases.push(lease("c1", "10.1.0.2"));
        let mut dmz = network("dmz", "10.2.0.0/24");
        let mut other = lease("c2", "10.2.0.2");
        other.mac = "0a:56:00:00:00:02".into();
        dmz.leases.push(other);
        let all = [lan.clone(), dmz];
        let l = plan_lease(&lan, &all, &nic("c2"), InstanceType::Container).unwrap();
        assert_eq!(l.ip, "10.1.0.3", "the gateway and c1 hold .1 and .2");
        assert_eq!(l.interface, "eth1", "c2 has eth0 on dmz");
        assert_eq!(l.host_interface, ifname("vh", "c2", "lan"));
        assert_eq!(l.mac, derived_mac("c2", "lan", 0).to_string());
        let mac: MacAddr = l.mac.parse().unwrap();
        assert_eq!(
            l.ipv6,
            Some(eui64("fd42::".parse().unwrap(), mac).to_string())
        );
        let vm = plan_lease(&lan, &all, &nic("v1"), InstanceType::Vm).unwrap();
        assert!(vm.host_interface.starts_with("vt"), "{}", vm.host_interface);
        assert_eq!(vm.interface, "eth0");
    }

    /// A NIC whose host interface name (32 bits of a hash) another NIC has is refused; the
    /// clash is found by the birthday paradox over instance names.
    #[test]
    fn a_nic_whose_host_name_clashes_with_anothers_is_refused() {
        let mut seen = std::collections::HashMap::new();
        let (a, b) = (0..2_000_000)
            .find_map(|i| {
                let name = format!("c{i}");
                seen.insert(ifname("vh", &name, "lan"), name.clone())
                    .map(|other| (other, name))
            })
            .expect("a clash within two million names");
        let mut lan = network("lan", "10.1.0.0/16");
        let mut first = lease(&a, "10.1.0.2");
        first.host_interface = ifname("vh", &a, "lan");
        lan.leases.push(first);
        let all = [lan.clone()];
        let e = plan_lease(&lan, &all, &nic(&b), InstanceType::Container).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Conflict, "{e}");
        assert!(e.message.contains("rename the instance"), "{e}");
        assert!(plan_lease(&lan, &all, &nic("other"), InstanceType::Container).is_ok());
    }

    #[test]
    fn asked_for_addresses_and_macs_are_checked() {
        let mut lan = network("lan", "10.1.0.0/24");
        lan.vlans = vec![10];
        lan.leases.push(lease("c1", "10.1.0.2"));
        let all = [lan.clone()];
        let fails = |req: NicAttach, kind: ErrorKind, want: &str| {
            let e = plan_lease(&lan, &all, &req, InstanceType::Container).unwrap_err();
            assert_eq!(e.kind, kind, "{e}");
            assert!(e.message.contains(want), "{want:?} not in {e}");
        };
        fails(nic("c1"), ErrorKind::Conflict, "already has a NIC");
        let mut r = nic("c2");
        r.ip = Some("10.1.0.2".into());
        fails(r, ErrorKind::Conflict, "10.1.0.2");
        let mut r = nic("c2");
        r.ip = Some("10.9.0.2".into());
        fails(r, ErrorKind::Invalid, "outside");
        let mut r = nic("c2");
        r.mac = Some("0A:56:00:00:00:01".into());
        fails(r, ErrorKind::Conflict, "already in use");
        let mut r = nic("c2");
        r.mac = Some("01:00:5e:00:00:01".into());
        fails(r, ErrorKind::Invalid, "multicast");
        let mut r = nic("c2");
        r.vlan = Some(20);
        fails(r, ErrorKind::Invalid, "has no VLAN segment 20 (it has: 10)");
        let mut r = nic("c2");
        r.egress = Some("lots".into());
        fails(r, ErrorKind::Invalid, "rate");
        let mut r = nic("c2");
        r.ip = Some("10.1.0.9".into());
        r.mac = Some("0a:56:00:00:00:09".into());
        r.vlan = Some(10);
        let l = plan_lease(&lan, &all, &r, InstanceType::Container).unwrap();
        assert_eq!(
            (l.ip.as_str(), l.mac.as_str(), l.vlan),
            ("10.1.0.9", "0a:56:00:00:00:09", Some(10))
        );
    }

    #[test]
    fn only_a_nic_off_segments_routes() {
        let mut lan = network("lan", "10.1.0.0/24");
        let mut seg = lease("c1", "10.1.0.2");
        seg.vlan = Some(10);
        lan.leases.push(seg);
        let all = [lan];
        assert!(!has_routed_nic(&all, "c1"));
        assert!(!has_routed_nic(&all, "c2"));
        let mut all = all.to_vec();
        all[0].leases.push(lease("c2", "10.1.0.3"));
        assert!(has_routed_nic(&all, "c2"));
    }
}
