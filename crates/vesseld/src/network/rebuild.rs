//! Start-up reconciliation: networks whose creation a crash interrupted are removed, the
//! rest rebuilt from the store; IFB devices of gone NICs are pruned.

use vessel_net::{Links, NetNs};

use super::NetworkService;
use crate::error::Result;

impl NetworkService {
    /// Rebuilds every network's kernel objects from the store (after a crash or reboot) and
    /// removes what a crash left half-made.
    pub fn reconcile(&self) -> Result<()> {
        let _g = self.busy();
        for (name, rec) in self.inner.pending.entries()? {
            if matches!(self.inner.networks.contains(&name), Ok(false)) {
                if let Ok(rec) = rec {
                    tracing::warn!(network = %name, "removing a network whose creation was interrupted");
                    self.teardown(&rec);
                }
            }
            let _ = self.inner.pending.delete(&name);
        }
        for rec in self.records()? {
            let r = self.realize(&rec);
            let mut errors = self.inner.errors.lock().unwrap_or_else(|p| p.into_inner());
            match r {
                Ok(()) => {
                    errors.remove(&rec.name);
                }
                Err(e) => {
                    tracing::error!(network = %rec.name, error = %e.message, "network not rebuilt");
                    errors.insert(rec.name.clone(), e.message);
                }
            }
        }
        self.prune_orphan_nics();
        prune_ifbs();
        Ok(())
    }

    /// Removes host-side NICs (a container's veth end, a VM's tap) that belong to no lease and
    /// are ports of one of this daemon's bridges or of none: a detach or a delete interrupted
    /// between forgetting the lease and unplugging leaves one, and a plug interrupted before
    /// bridging it leaves one unbridged. Ports of other daemons' bridges are never touched.
    fn prune_orphan_nics(&self) {
        let Ok(recs) = self.records() else {
            return;
        };
        let ours: std::collections::HashSet<String> = recs
            .iter()
            .flat_map(|r| {
                let mut b = vec![r.bridge()];
                for mode in [
                    vessel_net::VlanMode::BridgePerVlan,
                    vessel_net::VlanMode::VlanFiltering,
                ] {
                    b.extend(r.vlans.iter().map(move |v| r.segment_bridge(mode, *v)));
                }
                b
            })
            .collect();
        let leased: std::collections::HashSet<&str> = recs
            .iter()
            .flat_map(|r| r.leases.iter().map(|l| l.host_interface.as_str()))
            .collect();
        let Ok(out) = std::process::Command::new("ip")
            .args(["-j", "-d", "link", "show"])
            .output()
        else {
            return;
        };
        let Ok(links) = serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout) else {
            return;
        };
        let Ok(mut nl) = Links::open(&NetNs::current()) else {
            return;
        };
        for l in &links {
            let Some(name) = l["ifname"].as_str() else {
                continue;
            };
            // Bridged to one of ours, or not bridged yet (a plug interrupted half-way).
            let master = l["master"].as_str();
            let kind = l["linkinfo"]["info_kind"].as_str().unwrap_or_default();
            let ours_by_name = (name.starts_with("vh") && kind == "veth")
                || (name.starts_with("vt") && kind == "tun");
            let ours_by_port = master.is_none_or(|m| ours.contains(m));
            if ours_by_name && ours_by_port && !leased.contains(name) {
                tracing::warn!(nic = name, bridge = ?master, "removing a NIC no lease names");
                let _ = vessel_net::clear_bandwidth(&NetNs::current(), name);
                let _ = nl.delete(name);
            }
        }
    }

    /// Removes IFB devices of NICs that are gone (see [`prune_ifbs`]), serialized with
    /// every change that makes one.
    pub fn prune_ifbs(&self) {
        let _g = self.busy();
        prune_ifbs();
    }
}

/// Removes IFB devices (`vifb<index>`, which carry a NIC's egress limit) whose NIC is gone:
/// a container's veth vanishes with its namespace when it stops, its IFB would stay. An IFB
/// whose NIC still exists is left alone, whoever owns it. Callers hold the service's lock,
/// so no IFB is being made for a NIC the link dump might not show yet.
pub(super) fn prune_ifbs() {
    let Ok(out) = std::process::Command::new("ip")
        .args(["-j", "link", "show"])
        .output()
    else {
        return;
    };
    let Ok(links) = serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout) else {
        return;
    };
    let indexes: Vec<u64> = links.iter().filter_map(|l| l["ifindex"].as_u64()).collect();
    // Only IFB devices: a link of another kind that happens to be called vifbN is not ours.
    let Ok(ifbs) = std::process::Command::new("ip")
        .args(["-j", "link", "show", "type", "ifb"])
        .output()
    else {
        return;
    };
    let Ok(ifbs) = serde_json::from_slice::<Vec<serde_json::Value>>(&ifbs.stdout) else {
        return;
    };
    let Ok(mut nl) = Links::open(&NetNs::current()) else {
        return;
    };
    for l in &ifbs {
        let Some(name) = l["ifname"].as_str() else {
            continue;
        };
        let Some(nic) = name
            .strip_prefix("vifb")
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        if !indexes.contains(&nic) {
            tracing::info!(ifb = name, "removing the IFB device of a gone NIC");
            let _ = nl.delete(name);
        }
    }
}
