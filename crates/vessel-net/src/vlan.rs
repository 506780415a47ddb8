//! VLAN segments and isolated bridge ports: layer-2 separation inside one network.
//!
//! Kernels differ: some have bridge VLAN filtering and `8021q`, the development hosts have
//! neither. [`probe_vlan_support`] finds out (on a throw-away bridge in the target namespace)
//! and [`VlanSupport::mode`] picks how segments are built:
//! - [`VlanMode::VlanFiltering`]: one bridge with `vlan_filtering` on; each port is an untagged
//!   member of its VLAN (PVID), so frames carry real tags inside the bridge and on trunks;
//! - [`VlanMode::BridgePerVlan`]: a bridge of its own per VLAN id, named by
//!   [`segment_bridge_name`] (`<base>-v<vid>`), so segments cannot see each other's frames.
//!   There are no tags on the wire; a segment spanning hosts rides on a VXLAN per segment.

use crate::link::{
    new_link_request, LinkError, Links, IFLA_INFO_DATA, IFLA_INFO_KIND, IFLA_LINKINFO,
};
use crate::netlink::{find_attr, ifinfomsg, parse_attrs, Request, NLM_F_ACK, NLM_F_REQUEST};

const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_SETLINK: u16 = 19;
const IFLA_LINK: u16 = 5;
const IFLA_AF_SPEC: u16 = 26;
const IFLA_INFO_SLAVE_KIND: u16 = 4;
const IFLA_INFO_SLAVE_DATA: u16 = 5;
const IFLA_BR_VLAN_FILTERING: u16 = 7;
const IFLA_BRPORT_MODE: u16 = 4;
const IFLA_BRPORT_ISOLATED: u16 = 33;
const IFLA_BRIDGE_VLAN_INFO: u16 = 2;
const IFLA_VLAN_ID: u16 = 1;
const BRIDGE_VLAN_INFO_PVID: u16 = 0x2;
const BRIDGE_VLAN_INFO_UNTAGGED: u16 = 0x4;
/// The VLAN every bridge port is an untagged member of by default.
const DEFAULT_VID: u16 = 1;
/// Largest usable VLAN id (4095 is reserved).
pub const VID_MAX: u16 = 4094;

/// Errors building VLAN segments or changing bridge ports.
#[derive(Debug, thiserror::Error)]
pub enum VlanError {
    /// The VLAN id is 0 or above 4094.
    #[error("invalid VLAN id {0}: must be 1 to 4094")]
    InvalidVid(u16),
    /// The segment bridge's name would exceed 15 bytes.
    #[error("segment bridge name for {base:?} and VLAN {vid} is longer than 15 bytes; use a shorter base name")]
    NameTooLong {
        /// Base bridge name.
        base: String,
        /// VLAN id.
        vid: u16,
    },
    /// A link operation failed.
    #[error(transparent)]
    Link(#[from] LinkError),
}

/// What the kernel offers for VLANs in a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VlanSupport {
    /// Bridges accept `vlan_filtering` (CONFIG_BRIDGE_VLAN_FILTERING).
    pub vlan_filtering: bool,
    /// VLAN devices can be created (the `8021q` module).
    pub vlan_devices: bool,
}

/// How a network builds its VLAN segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VlanMode {
    /// One VLAN-aware bridge, ports tagged by VLAN id.
    VlanFiltering,
    /// One bridge per VLAN id.
    BridgePerVlan,
}

impl VlanSupport {
    /// The mode to use: VLAN filtering where the kernel has it, a bridge per VLAN otherwise.
    pub fn mode(&self) -> VlanMode {
        if self.vlan_filtering {
            VlanMode::VlanFiltering
        } else {
            VlanMode::BridgePerVlan
        }
    }
}

/// Tries VLAN filtering and a VLAN device on a throw-away bridge in the namespace of `links`
/// (removed again) and reports what worked.
pub fn probe_vlan_support(links: &mut Links) -> Result<VlanSupport, VlanError> {
    let probe = format!("vprobe{}", std::process::id() % 100_000);
    let index = links.create_bridge(&probe)?;
    let vlan_filtering = set_vlan_filtering(links, &probe, true).is_ok();
    let vlan_name = format!("{probe}.9");
    let mut req = new_link_request(&vlan_name);
    req.attr_u32(IFLA_LINK, index);
    req.begin_nest(IFLA_LINKINFO)
        .attr_str(IFLA_INFO_KIND, "vlan")
        .begin_nest(IFLA_INFO_DATA)
        .attr(IFLA_VLAN_ID, &9u16.to_ne_bytes())
        .end_nest()
        .end_nest();
    let vlan_devices = links
        .call(&mut req, "creation of a probe VLAN device")
        .is_ok();
    let _ = links.delete(&probe);
    let support = VlanSupport {
        vlan_filtering,
        vlan_devices,
    };
    tracing::info!(ns = %links.ns_label(), ?support, "probed VLAN support");
    Ok(support)
}

/// The bridge that carries VLAN `vid` of the network bridge `base` in
/// [`VlanMode::BridgePerVlan`]: `<base>-v<vid>`.
pub fn segment_bridge_name(base: &str, vid: u16) -> Result<String, VlanError> {
    check_vid(vid)?;
    let name = format!("{base}-v{vid}");
    if name.len() > 15 {
        return Err(VlanError::NameTooLong {
            base: base.to_string(),
            vid,
        });
    }
    Ok(name)
}

/// Makes VLAN `vid` of network bridge `base` exist and returns the bridge its ports attach to:
/// the segment's own bridge (created, up, no address) or `base` with VLAN filtering on.
pub fn create_segment(
    links: &mut Links,
    mode: VlanMode,
    base: &str,
    vid: u16,
) -> Result<String, VlanError> {
    check_vid(vid)?;
    match mode {
        VlanMode::BridgePerVlan => {
            let name = segment_bridge_name(base, vid)?;
            if links.find(&name)?.is_none() {
                links.create_bridge(&name)?;
                if let Err(e) = links.set_up(&name, true) {
                    let _ = links.delete(&name);
                    return Err(e.into());
                }
                tracing::info!(bridge = %name, vid, "VLAN segment bridge ready");
            }
            Ok(name)
        }
        VlanMode::VlanFiltering => {
            set_vlan_filtering(links, base, true)?;
            Ok(base.to_string())
        }
    }
}

/// Removes VLAN `vid`'s bridge ([`VlanMode::BridgePerVlan`]); with VLAN filtering a segment is
/// only a tag on ports, so there is nothing to remove.
pub fn remove_segment(
    links: &mut Links,
    mode: VlanMode,
    base: &str,
    vid: u16,
) -> Result<(), VlanError> {
    if mode == VlanMode::BridgePerVlan {
        let name = segment_bridge_name(base, vid)?;
        if links.find(&name)?.is_some() {
            links.delete(&name)?;
        }
    }
    Ok(())
}

/// Puts `port` (a NIC's host-side device) on VLAN `vid` of network bridge `base`: attached
/// to the segment's bridge, or to `base` as an untagged member of `vid` only (PVID).
pub fn attach_to_segment(
    links: &mut Links,
    mode: VlanMode,
    base: &str,
    port: &str,
    vid: u16,
) -> Result<(), VlanError> {
    let bridge = create_segment(links, mode, base, vid)?;
    links.set_master(port, Some(&bridge))?;
    if mode == VlanMode::VlanFiltering {
        let index = links.index(port)?;
        let mut add = port_vlan_request(
            RTM_SETLINK,
            index,
            vid,
            BRIDGE_VLAN_INFO_PVID | BRIDGE_VLAN_INFO_UNTAGGED,
        );
        links.call(&mut add, &format!("VLAN {vid} on port {port}"))?;
        if vid != DEFAULT_VID {
            let mut del = port_vlan_request(RTM_DELLINK, index, DEFAULT_VID, 0);
            links.call(&mut del, &format!("removal of VLAN 1 from port {port}"))?;
        }
    }
    Ok(())
}

/// Makes bridge port `port` isolated or not (`IFLA_BRPORT_ISOLATED`): isolated ports exchange
/// no frames with each other, only with non-isolated ports (the bridge itself among them).
pub fn set_port_isolated(links: &mut Links, port: &str, isolated: bool) -> Result<(), VlanError> {
    set_port_flag(links, port, IFLA_BRPORT_ISOLATED, isolated, "isolation")
}

/// Whether bridge port `port` is isolated, as the kernel reports it (`None`: not a port).
pub fn port_isolated(links: &mut Links, port: &str) -> Result<Option<bool>, VlanError> {
    port_flag(links, port, IFLA_BRPORT_ISOLATED)
}

/// Turns hairpin mode of bridge port `port` on or off (`IFLA_BRPORT_MODE`): with it on, the
/// bridge may send a frame back out of the port it came from, which an instance reaching
/// itself through a published port of the host (DNAT back to its own address) needs.
pub fn set_port_hairpin(links: &mut Links, port: &str, on: bool) -> Result<(), VlanError> {
    set_port_flag(links, port, IFLA_BRPORT_MODE, on, "hairpin mode")
}

/// Whether bridge port `port` is in hairpin mode, as the kernel reports it (`None`: not a
/// port).
pub fn port_hairpin(links: &mut Links, port: &str) -> Result<Option<bool>, VlanError> {
    port_flag(links, port, IFLA_BRPORT_MODE)
}

/// Sets a one-byte flag of the bridge port data of `port`.
fn set_port_flag(
    links: &mut Links,
    port: &str,
    attr: u16,
    on: bool,
    what: &str,
) -> Result<(), VlanError> {
    let index = links.index(port)?;
    let mut req = Request::new(
        RTM_NEWLINK,
        NLM_F_REQUEST | NLM_F_ACK,
        &ifinfomsg(0, index as i32, 0, 0),
    );
    req.begin_nest(IFLA_LINKINFO)
        .attr_str(IFLA_INFO_SLAVE_KIND, "bridge")
        .begin_nest(IFLA_INFO_SLAVE_DATA)
        .attr(attr, &[u8::from(on)])
        .end_nest()
        .end_nest();
    links.call(&mut req, &format!("{what} of bridge port {port}"))?;
    Ok(())
}

/// A one-byte flag of the bridge port data of `port` (`None`: not a bridge port).
fn port_flag(links: &mut Links, port: &str, attr: u16) -> Result<Option<bool>, VlanError> {
    let body = links.get_link(port)?.ok_or_else(|| LinkError::NotFound {
        name: port.to_string(),
        ns: links.ns_label().to_string(),
    })?;
    let attrs = parse_attrs(&body[16..]);
    let Some(info) = find_attr(&attrs, IFLA_LINKINFO) else {
        return Ok(None);
    };
    let info = parse_attrs(info);
    if find_attr(&info, IFLA_INFO_SLAVE_KIND) != Some(&b"bridge\0"[..]) {
        return Ok(None);
    }
    let data = parse_attrs(find_attr(&info, IFLA_INFO_SLAVE_DATA).unwrap_or_default());
    Ok(Some(
        find_attr(&data, attr).and_then(|v| v.first().copied()) == Some(1),
    ))
}

/// Turns `vlan_filtering` on or off on a bridge (EOPNOTSUPP where the kernel lacks it).
pub fn set_vlan_filtering(links: &mut Links, bridge: &str, on: bool) -> Result<(), VlanError> {
    let index = links.index(bridge)?;
    let mut req = Request::new(
        RTM_NEWLINK,
        NLM_F_REQUEST | NLM_F_ACK,
        &ifinfomsg(0, index as i32, 0, 0),
    );
    req.begin_nest(IFLA_LINKINFO)
        .attr_str(IFLA_INFO_KIND, "bridge")
        .begin_nest(IFLA_INFO_DATA)
        .attr(IFLA_BR_VLAN_FILTERING, &[u8::from(on)])
        .end_nest()
        .end_nest();
    links.call(&mut req, &format!("vlan_filtering on bridge {bridge}"))?;
    Ok(())
}

/// An AF_BRIDGE request adding (RTM_SETLINK) or removing (RTM_DELLINK) one VLAN on a port.
fn port_vlan_request(msg_type: u16, port_index: u32, vid: u16, flags: u16) -> Request {
    let mut req = Request::new(
        msg_type,
        NLM_F_REQUEST | NLM_F_ACK,
        &ifinfomsg(libc::AF_BRIDGE as u8, port_index as i32, 0, 0),
    );
    let mut info = [0u8; 4];
    info[0..2].copy_from_slice(&flags.to_ne_bytes());
    info[2..4].copy_from_slice(&vid.to_ne_bytes());
    req.begin_nest(IFLA_AF_SPEC)
        .attr(IFLA_BRIDGE_VLAN_INFO, &info)
        .end_nest();
    req
}

fn check_vid(vid: u16) -> Result<(), VlanError> {
    if vid == 0 || vid > VID_MAX {
        return Err(VlanError::InvalidVid(vid));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_and_vids_are_checked() {
        assert_eq!(
            segment_bridge_name("vbr-web", 10).expect("name"),
            "vbr-web-v10"
        );
        assert!(matches!(
            segment_bridge_name("vbr-web", 0),
            Err(VlanError::InvalidVid(0))
        ));
        assert!(matches!(
            segment_bridge_name("vbr-web", 4095),
            Err(VlanError::InvalidVid(4095))
        ));
        assert!(matches!(
            segment_bridge_name("vbr-longname", 4000),
            Err(VlanError::NameTooLong { .. })
        ));
        let support = VlanSupport {
            vlan_filtering: false,
            vlan_devices: true,
        };
        assert_eq!(support.mode(), VlanMode::BridgePerVlan);
        let support = VlanSupport {
            vlan_filtering: true,
            vlan_devices: false,
        };
        assert_eq!(support.mode(), VlanMode::VlanFiltering);
    }

    #[test]
    fn port_vlan_requests_carry_pvid_untagged_vlan_info() {
        let mut req = port_vlan_request(
            RTM_SETLINK,
            7,
            100,
            BRIDGE_VLAN_INFO_PVID | BRIDGE_VLAN_INFO_UNTAGGED,
        );
        let msg = req.finish_for_test();
        // nlmsghdr (16) + ifinfomsg (16), then IFLA_AF_SPEC { IFLA_BRIDGE_VLAN_INFO }.
        assert_eq!(msg[16], libc::AF_BRIDGE as u8);
        assert_eq!(i32::from_ne_bytes([msg[20], msg[21], msg[22], msg[23]]), 7);
        let attrs = parse_attrs(&msg[32..]);
        let spec = parse_attrs(find_attr(&attrs, IFLA_AF_SPEC).expect("af_spec"));
        let info = find_attr(&spec, IFLA_BRIDGE_VLAN_INFO).expect("vlan info");
        assert_eq!(u16::from_ne_bytes([info[0], info[1]]), 0x6);
        assert_eq!(u16::from_ne_bytes([info[2], info[3]]), 100);
    }
}
