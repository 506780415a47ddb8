//! Bridges with a gateway address, and veth NICs plugged from a bridge into a container.

use std::net::Ipv4Addr;

use crate::ipam::{MacAddr, Subnet};
use crate::link::{LinkError, Links};
use crate::netns::NetNs;

/// A managed bridge: the virtual switch of one network, holding the gateway address.
#[derive(Debug, Clone)]
pub struct BridgeSpec {
    /// Bridge interface name.
    pub name: String,
    /// The network's subnet; the bridge takes its gateway (first host) address.
    pub subnet: Subnet,
    /// MTU, or the kernel default.
    pub mtu: Option<u32>,
}

/// Creates the bridge with a fixed MAC ([`bridge_mac`]), gives it the gateway address and
/// brings it up. On failure nothing is left behind.
///
/// A bridge whose MAC is not set takes the lowest MAC of its ports and changes it whenever
/// such a port joins or leaves: every instance's ARP entry for the gateway is then wrong for
/// seconds. A fixed MAC (as Docker and Incus give their bridges) never moves.
pub fn create_bridge(links: &mut Links, spec: &BridgeSpec) -> Result<u32, LinkError> {
    let index = links.create_bridge(&spec.name)?;
    let setup = (|| {
        links.set_mac(&spec.name, bridge_mac(&spec.name))?;
        if let Some(mtu) = spec.mtu {
            links.set_mtu(&spec.name, mtu)?;
        }
        links.add_address(&spec.name, spec.subnet.gateway(), spec.subnet.prefix())?;
        links.set_up(&spec.name, true)
    })();
    if let Err(e) = setup {
        let _ = links.delete(&spec.name);
        return Err(e);
    }
    tracing::info!(bridge = %spec.name, subnet = %spec.subnet, "bridge ready");
    Ok(index)
}

/// The fixed MAC of a bridge: locally administered, unicast, under a prefix of its own (not
/// Vessel's NIC prefix, so it never collides with an instance's), from a hash of the name.
pub fn bridge_mac(name: &str) -> MacAddr {
    // FNV-1a: stable across versions and hosts, which is all this needs.
    let h = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let b = h.to_be_bytes();
    MacAddr::new([0x0a, 0x56, 0xb0, b[0], b[1], b[2]])
}

/// A veth NIC: one end a bridge port on the host, the other inside an instance's namespace.
#[derive(Debug)]
pub struct VethNic<'a> {
    /// Host-side name (a bridge port).
    pub host_name: String,
    /// Bridge to attach the host side to.
    pub bridge: String,
    /// The instance's network namespace.
    pub instance_ns: &'a NetNs,
    /// Name inside the instance (`eth0`).
    pub instance_name: String,
    /// MAC address of the instance side.
    pub mac: Option<MacAddr>,
    /// Static address and prefix of the instance side (`None` leaves it to DHCP).
    pub address: Option<(Ipv4Addr, u8)>,
    /// Default gateway inside the instance.
    pub gateway: Option<Ipv4Addr>,
    /// MTU of both ends.
    pub mtu: Option<u32>,
}

/// Creates the veth pair with its instance end directly inside the instance namespace,
/// configures both ends and attaches the host end to the bridge. On failure the pair is
/// deleted again.
pub fn plug_veth(host: &mut Links, nic: &VethNic<'_>) -> Result<(), LinkError> {
    host.create_veth(&nic.host_name, &nic.instance_name, Some(nic.instance_ns))?;
    let setup = (|| {
        let mut inner = Links::open(nic.instance_ns)?;
        if let Some(mtu) = nic.mtu {
            host.set_mtu(&nic.host_name, mtu)?;
            inner.set_mtu(&nic.instance_name, mtu)?;
        }
        if let Some(mac) = nic.mac {
            inner.set_mac(&nic.instance_name, mac)?;
        }
        host.set_master(&nic.host_name, Some(&nic.bridge))?;
        host.set_up(&nic.host_name, true)?;
        inner.set_up("lo", true)?;
        if let Some((addr, prefix)) = nic.address {
            inner.add_address(&nic.instance_name, addr, prefix)?;
        }
        inner.set_up(&nic.instance_name, true)?;
        if let Some(gw) = nic.gateway {
            inner.add_default_route(gw)?;
        }
        Ok(())
    })();
    if let Err(e) = setup {
        let _ = host.delete(&nic.host_name);
        return Err(e);
    }
    tracing::info!(nic = %nic.host_name, bridge = %nic.bridge, ns = %nic.instance_ns.label(), "veth plugged");
    Ok(())
}

/// Removes a veth NIC by its host-side name (the instance end goes with it).
pub fn unplug_veth(host: &mut Links, host_name: &str) -> Result<(), LinkError> {
    host.delete(host_name)
}
