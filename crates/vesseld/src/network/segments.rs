//! VLAN segments: how this host builds them (VLAN filtering where the kernel has it, a
//! bridge per VLAN otherwise) and which way a given network's are built.

use vessel_net::{Links, NetNs, VlanMode};

use super::record::NetworkRecord;
use super::NetworkService;
use crate::error::chain;

impl NetworkService {
    /// How this host builds VLAN segments of local networks: VLAN filtering where the
    /// kernel has it (probed once on a throw-away bridge), a bridge per VLAN otherwise.
    pub(super) fn host_vlan_mode(&self) -> VlanMode {
        *self.inner.vlan_mode.get_or_init(|| {
            match Links::open(&NetNs::current())
                .map_err(vessel_net::VlanError::from)
                .and_then(|mut l| vessel_net::probe_vlan_support(&mut l))
            {
                Ok(s) => s.mode(),
                Err(e) => {
                    tracing::warn!(error = %chain(&e), "VLAN probe failed; using a bridge per VLAN");
                    VlanMode::BridgePerVlan
                }
            }
        })
    }

    /// The VLAN mode of a network: overlays always use a bridge (and a VNI) per segment.
    pub(super) fn vlan_mode(&self, rec: &NetworkRecord) -> VlanMode {
        match rec.vlan_mode.as_deref() {
            Some("vlan-filtering") => VlanMode::VlanFiltering,
            Some(_) => VlanMode::BridgePerVlan,
            None if rec.vni.is_some() => VlanMode::BridgePerVlan,
            None => self.host_vlan_mode(),
        }
    }
}
