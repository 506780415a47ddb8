//! VXLAN overlays: one VXLAN device per network and host, bridged, with static unicast peers.

use std::net::Ipv4Addr;

use crate::link::{
    new_link_request, validate_ifname, LinkError, Links, IFLA_INFO_DATA, IFLA_INFO_KIND,
    IFLA_LINKINFO,
};
use crate::netlink::{
    Request, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_REPLACE, NLM_F_REQUEST,
};

/// Bytes a VXLAN encapsulation adds over IPv4 (outer IP 20 + UDP 8 + VXLAN 8 + inner Ethernet 14).
pub const VXLAN_OVERHEAD: u32 = 50;
/// The IANA VXLAN UDP port.
pub const VXLAN_PORT: u16 = 4789;
/// Largest VNI (24 bits).
pub const VNI_MAX: u32 = (1 << 24) - 1;

const IFLA_VXLAN_ID: u16 = 1;
const IFLA_VXLAN_LOCAL: u16 = 4;
const IFLA_VXLAN_LEARNING: u16 = 7;
const IFLA_VXLAN_PORT: u16 = 15;
const RTM_NEWNEIGH: u16 = 28;
const RTM_DELNEIGH: u16 = 29;
const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;
const NTF_SELF: u8 = 0x02;
const NUD_PERMANENT: u16 = 0x80;

/// Errors specific to VXLAN devices.
#[derive(Debug, thiserror::Error)]
pub enum VxlanError {
    /// The VNI is 0 or wider than 24 bits.
    #[error("invalid VNI {0}: must be 1 to 16777215")]
    InvalidVni(u32),
    /// The underlay MTU is too small to carry the overhead.
    #[error("underlay MTU {0} is too small for VXLAN's 50 bytes of overhead")]
    MtuTooSmall(u32),
    /// A link operation failed.
    #[error(transparent)]
    Link(#[from] LinkError),
}

/// One overlay endpoint on this host.
#[derive(Debug, Clone)]
pub struct VxlanSpec {
    /// VXLAN device name.
    pub name: String,
    /// Network identifier shared by every host of the overlay.
    pub vni: u32,
    /// This host's underlay address (source of the encapsulated packets).
    pub local: Ipv4Addr,
    /// UDP port, normally [`VXLAN_PORT`].
    pub port: u16,
    /// MTU of the underlay; the device gets 50 bytes less.
    pub underlay_mtu: u32,
    /// Bridge to attach the device to.
    pub bridge: String,
}

/// Creates the VXLAN device (no learning: peers are static), lowers its MTU by the overhead,
/// attaches it to the bridge and brings it up. On failure the device is deleted again.
pub fn create_vxlan(links: &mut Links, spec: &VxlanSpec) -> Result<u32, VxlanError> {
    validate_ifname(&spec.name)?;
    if spec.vni == 0 || spec.vni > VNI_MAX {
        return Err(VxlanError::InvalidVni(spec.vni));
    }
    let mtu = spec
        .underlay_mtu
        .checked_sub(VXLAN_OVERHEAD)
        .filter(|m| *m >= 68)
        .ok_or(VxlanError::MtuTooSmall(spec.underlay_mtu))?;
    let mut req = new_link_request(&spec.name);
    req.begin_nest(IFLA_LINKINFO)
        .attr_str(IFLA_INFO_KIND, "vxlan");
    req.begin_nest(IFLA_INFO_DATA)
        .attr_u32(IFLA_VXLAN_ID, spec.vni)
        .attr(IFLA_VXLAN_LOCAL, &spec.local.octets())
        .attr(IFLA_VXLAN_LEARNING, &[0])
        .attr(IFLA_VXLAN_PORT, &spec.port.to_be_bytes());
    req.end_nest().end_nest();
    links.call(
        &mut req,
        &format!("creation of vxlan {} (vni {})", spec.name, spec.vni),
    )?;
    let setup = (|| {
        links.set_mtu(&spec.name, mtu)?;
        links.set_master(&spec.name, Some(&spec.bridge))?;
        links.set_up(&spec.name, true)
    })();
    if let Err(e) = setup {
        let _ = links.delete(&spec.name);
        return Err(e.into());
    }
    tracing::info!(vxlan = %spec.name, vni = spec.vni, mtu, "vxlan ready");
    Ok(links.index(&spec.name)?)
}

/// Adds a static unicast peer: broadcast, unknown and multicast frames are sent to it
/// (an all-zero FDB entry, appended so that several peers can coexist).
pub fn add_vxlan_peer(links: &mut Links, device: &str, peer: Ipv4Addr) -> Result<(), VxlanError> {
    let mut req = fdb_request(
        links,
        device,
        RTM_NEWNEIGH,
        NLM_F_CREATE | NLM_F_APPEND,
        peer,
    )?;
    links.call(&mut req, &format!("vxlan peer {peer} on {device}"))?;
    Ok(())
}

/// Removes a static peer added with [`add_vxlan_peer`].
pub fn remove_vxlan_peer(
    links: &mut Links,
    device: &str,
    peer: Ipv4Addr,
) -> Result<(), VxlanError> {
    let mut req = fdb_request(links, device, RTM_DELNEIGH, 0, peer)?;
    links.call(
        &mut req,
        &format!("removal of vxlan peer {peer} on {device}"),
    )?;
    Ok(())
}

/// Sets a permanent neighbour (ARP) entry: `ip` is at `mac` on `device`. On an overlay whose
/// hosts share the gateway's MAC, a host cannot learn another host's instance by ARP (the
/// answer goes to the gateway MAC, which every host takes for its own): the host routes to
/// those instances through these entries.
pub fn set_neighbor(
    links: &mut Links,
    device: &str,
    ip: Ipv4Addr,
    mac: crate::MacAddr,
) -> Result<(), VxlanError> {
    let mut req = neighbor_request(
        links,
        device,
        RTM_NEWNEIGH,
        NLM_F_CREATE | NLM_F_REPLACE,
        ip,
    )?;
    req.attr(NDA_LLADDR, &mac.octets());
    links.call(&mut req, &format!("neighbour {ip} at {mac} on {device}"))?;
    Ok(())
}

/// Removes a neighbour entry set with [`set_neighbor`]; fine if it is gone already.
pub fn remove_neighbor(links: &mut Links, device: &str, ip: Ipv4Addr) -> Result<(), VxlanError> {
    let mut req = neighbor_request(links, device, RTM_DELNEIGH, 0, ip)?;
    match links.call(&mut req, &format!("removal of neighbour {ip} on {device}")) {
        Err(LinkError::Netlink(crate::NetlinkError::Refused { source, .. }))
            if source.raw_os_error() == Some(libc::ENOENT) =>
        {
            Ok(())
        }
        r => r.map_err(Into::into),
    }
}

fn neighbor_request(
    links: &mut Links,
    device: &str,
    msg_type: u16,
    flags: u16,
    ip: Ipv4Addr,
) -> Result<Request, VxlanError> {
    let index = links.index(device)?;
    let mut ndmsg = [0u8; 12];
    ndmsg[0] = libc::AF_INET as u8;
    ndmsg[4..8].copy_from_slice(&index.to_ne_bytes());
    ndmsg[8..10].copy_from_slice(&NUD_PERMANENT.to_ne_bytes());
    let mut req = Request::new(msg_type, NLM_F_REQUEST | NLM_F_ACK | flags, &ndmsg);
    req.attr(NDA_DST, &ip.octets());
    Ok(req)
}

fn fdb_request(
    links: &mut Links,
    device: &str,
    msg_type: u16,
    flags: u16,
    peer: Ipv4Addr,
) -> Result<Request, VxlanError> {
    let index = links.index(device)?;
    let mut ndmsg = [0u8; 12];
    ndmsg[0] = libc::AF_BRIDGE as u8;
    ndmsg[4..8].copy_from_slice(&index.to_ne_bytes());
    ndmsg[8..10].copy_from_slice(&NUD_PERMANENT.to_ne_bytes());
    ndmsg[10] = NTF_SELF;
    let mut req = Request::new(msg_type, NLM_F_REQUEST | NLM_F_ACK | flags, &ndmsg);
    req.attr(NDA_LLADDR, &[0; 6]).attr(NDA_DST, &peer.octets());
    Ok(req)
}
