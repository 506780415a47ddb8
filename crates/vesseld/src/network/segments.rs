//! VLAN segments: how this host builds them (VLAN filtering where the kernel has it, a
//! bridge per VLAN otherwise) and which way a given network's are built.

use vessel_api::NetworkSegment;
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
        recorded_mode(rec).unwrap_or_else(|| self.host_vlan_mode())
    }
}

/// The VLAN mode a network's record settles, if it does: the one recorded at its creation,
/// or a bridge per VLAN for an overlay (each segment has its own VNI).
pub(super) fn recorded_mode(rec: &NetworkRecord) -> Option<VlanMode> {
    match rec.vlan_mode.as_deref() {
        Some("vlan-filtering") => Some(VlanMode::VlanFiltering),
        Some(_) => Some(VlanMode::BridgePerVlan),
        None if rec.vni.is_some() => Some(VlanMode::BridgePerVlan),
        None => None,
    }
}

/// How a VLAN mode is recorded and shown.
pub(super) fn mode_name(mode: VlanMode) -> &'static str {
    match mode {
        VlanMode::VlanFiltering => "vlan-filtering",
        VlanMode::BridgePerVlan => "bridge-per-vlan",
    }
}

/// A network's segments as shown: each VLAN with its bridge (and VNI on an overlay).
pub(super) fn segments(rec: &NetworkRecord, mode: VlanMode) -> Vec<NetworkSegment> {
    rec.vlans
        .iter()
        .map(|v| NetworkSegment {
            vlan: *v,
            bridge: rec.segment_bridge(mode, *v),
            vni: rec.vni.map(|n| n + u32::from(*v)),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::record::fixture::network;
    use super::*;

    #[test]
    fn a_recorded_mode_wins_and_overlays_use_a_bridge_per_vlan() {
        let mut n = network("a", "10.0.0.0/24");
        assert_eq!(recorded_mode(&n), None, "a local network asks the host");
        n.vlan_mode = Some(mode_name(VlanMode::VlanFiltering).into());
        assert_eq!(recorded_mode(&n), Some(VlanMode::VlanFiltering));
        n.vlan_mode = Some(mode_name(VlanMode::BridgePerVlan).into());
        assert_eq!(recorded_mode(&n), Some(VlanMode::BridgePerVlan));
        n.vlan_mode = None;
        n.vni = Some(5000);
        assert_eq!(recorded_mode(&n), Some(VlanMode::BridgePerVlan));
    }

    #[test]
    fn segments_show_their_bridge_and_vni() {
        let mut n = network("a", "10.0.0.0/24");
        n.vlans = vec![10, 20];
        let s = segments(&n, VlanMode::VlanFiltering);
        assert_eq!(s.len(), 2);
        assert!(s.iter().all(|s| s.bridge == "vbr-a" && s.vni.is_none()));
        n.vni = Some(5000);
        let s = segments(&n, VlanMode::BridgePerVlan);
        assert_eq!((s[1].vlan, s[1].vni), (20, Some(5020)));
        assert_eq!(s[1].bridge, n.segment_bridge(VlanMode::BridgePerVlan, 20));
    }
}
