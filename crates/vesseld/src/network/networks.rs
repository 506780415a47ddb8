//! Creating and deleting networks.

use std::net::Ipv4Addr;

use vessel_api::{Network, NetworkCreate};
use vessel_net::{Subnet, VlanMode};

use super::parse::parse_prefix6;
use super::record::NetworkRecord;
use super::{NetworkService, MAX_NAME};
use crate::error::{Error, Result};
use crate::name::validate_name_within;

impl NetworkService {
    /// Creates a network and its kernel objects.
    pub fn create(&self, req: NetworkCreate) -> Result<Network> {
        let _g = self.busy();
        validate_name_within("network", &req.name, MAX_NAME)
            .map_err(|e| Error::invalid(format!("{} (it names the bridge vbr-NAME)", e.message)))?;
        if self.record(&req.name).is_ok() {
            return Err(Error::conflict(format!(
                "network {:?} already exists",
                req.name
            )));
        }
        let subnet: Subnet = req
            .subnet
            .parse()
            .map_err(|e| Error::invalid(format!("subnet {:?}: {e}", req.subnet)))?;
        if subnet.prefix() > 29 {
            return Err(Error::invalid(format!(
                "subnet {subnet} is too small: give a /29 or larger"
            )));
        }
        let others: Vec<(String, Subnet)> = self
            .records()?
            .iter()
            .filter_map(|r| r.subnet().ok().map(|s| (r.name.clone(), s)))
            .collect();
        if let Some((n, s)) = others.iter().find(|(_, s)| s.overlaps(&subnet)) {
            return Err(Error::conflict(format!(
                "subnet {subnet} overlaps network {n:?} ({s})"
            )));
        }
        if let Some(text) = &req.ipv6 {
            let prefix = parse_prefix6(text)?;
            if !std::path::Path::new("/proc/sys/net/ipv6").exists() {
                return Err(Error::invalid(
                    "IPv6 is disabled on this host (no /proc/sys/net/ipv6); leave out --ipv6",
                ));
            }
            for r in self.records()? {
                if r.subnet6().ok().flatten() == Some(prefix) {
                    return Err(Error::conflict(format!(
                        "IPv6 prefix {prefix}/64 overlaps network {:?}",
                        r.name
                    )));
                }
            }
        }
        match req.vni {
            Some(v) if (1..=4095).contains(&v) || v > 16_777_215 || v == 0 => {
                return Err(Error::invalid(format!(
                    "VNI {v} is not allowed: use 4096-16777215 (1-4095 are VLAN ids)"
                )))
            }
            Some(_) if req.local.is_none() => {
                return Err(Error::invalid(
                    "an overlay needs this host's underlay address (--local ADDR)",
                ))
            }
            Some(_) => {}
            None if !req.peers.is_empty() || req.local.is_some() => {
                return Err(Error::invalid("peers and local are for overlays (--vni)"))
            }
            None => {}
        }
        for p in req.peers.iter().chain(req.local.iter()) {
            p.parse::<Ipv4Addr>()
                .map_err(|_| Error::invalid(format!("{p:?} is not an IPv4 address")))?;
        }
        if req.isolated_ports && !req.vlans.is_empty() {
            return Err(Error::invalid(
                "isolated ports and VLAN segments do not mix: a segment's bridge has no port \
                 but its NICs, so isolated NICs on it could reach nobody",
            ));
        }
        if req.ipv6.is_some() && req.vni.is_some() {
            return Err(Error::invalid(
                "IPv6 on overlays is not built yet (every host would hold the same link-local \
                 gateway address); leave out --ipv6 or --vni",
            ));
        }
        let mut vlans = req.vlans.clone();
        vlans.sort_unstable();
        vlans.dedup();
        if vlans.len() != req.vlans.len() {
            return Err(Error::invalid("a VLAN id is listed twice"));
        }
        if let Some(v) = vlans
            .iter()
            .find(|v| !(1..=vessel_net::VID_MAX).contains(*v))
        {
            return Err(Error::invalid(format!(
                "VLAN id {v} is not allowed: use 1-4094"
            )));
        }
        if let (Some(vni), Some(top)) = (req.vni, vlans.last()) {
            if vni + u32::from(*top) > 16_777_215 {
                return Err(Error::invalid(format!(
                    "segment {top} would ride on VNI {}, above 16777215: use a smaller --vni",
                    vni + u32::from(*top)
                )));
            }
        }
        let rec = NetworkRecord {
            name: req.name.clone(),
            subnet: subnet.to_string(),
            ipv6: req
                .ipv6
                .as_deref()
                .map(parse_prefix6)
                .transpose()?
                .map(|p| format!("{p}/64")),
            vni: req.vni,
            peers: req.peers.clone(),
            local: req.local.clone(),
            leases: Vec::new(),
            forwards: Vec::new(),
            acl: String::new(),
            vlan_mode: None,
            vlans,
            isolated_ports: req.isolated_ports,
            load_balancers: Vec::new(),
            description: req.description,
            created_at: crate::clock::now(),
        };
        let mut rec = rec;
        if !rec.vlans.is_empty() {
            rec.vlan_mode = Some(
                match self.vlan_mode(&rec) {
                    VlanMode::VlanFiltering => "vlan-filtering",
                    VlanMode::BridgePerVlan => "bridge-per-vlan",
                }
                .into(),
            );
        }
        let ours = rec.vnis();
        for o in self.records()? {
            if let Some(v) = o.vnis().iter().find(|v| ours.contains(v)) {
                return Err(Error::conflict(format!(
                    "VNI {v} is taken by network {:?} (a network's segment V uses VNI vni+V)",
                    o.name
                )));
            }
        }
        // Recorded first, so that a crash while the kernel objects are made leaves a note of
        // what to remove at the next start.
        self.inner.pending.put(&rec.name, &rec)?;
        if let Err(e) = self.realize(&rec) {
            self.teardown(&rec);
            let _ = self.inner.pending.delete(&rec.name);
            return Err(e);
        }
        self.inner.networks.insert(&rec.name, &rec)?;
        let _ = self.inner.pending.delete(&rec.name);
        self.inner
            .events
            .lifecycle("network-created", &format!("/1.0/networks/{}", rec.name));
        Ok(self.view(&rec))
    }

    /// Deletes a network without NICs.
    pub fn delete(&self, name: &str) -> Result<Network> {
        let _g = self.busy();
        let rec = self.record(name)?;
        if !rec.leases.is_empty() {
            let users: Vec<&str> = rec.leases.iter().map(|l| l.instance.as_str()).collect();
            return Err(Error::conflict(format!(
                "network {name:?} is used by {}; detach them first",
                users.join(", ")
            )));
        }
        let view = self.view(&rec);
        self.teardown(&rec);
        self.inner.networks.delete(name)?;
        self.inner
            .events
            .lifecycle("network-deleted", &format!("/1.0/networks/{name}"));
        Ok(view)
    }
}
