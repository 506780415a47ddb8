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
        prune_ifbs();
        Ok(())
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
