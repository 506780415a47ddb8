//! Link management inside one network namespace: bridges, veth pairs, addresses, routes.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::ipam::MacAddr;
use crate::netlink::{
    attr_u32, find_attr, ifinfo_index, ifinfomsg, parse_attrs, Netlink, NetlinkError, Request,
    NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST,
};
use crate::netns::NetNs;

const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;
const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
pub(crate) const IFLA_MASTER: u16 = 10;
pub(crate) const IFLA_LINKINFO: u16 = 18;
const IFLA_NET_NS_FD: u16 = 28;
pub(crate) const IFLA_INFO_KIND: u16 = 1;
pub(crate) const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_ADDRESS: u16 = 1;
const IFA_BROADCAST: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const IFA_F_NODAD: u8 = 0x02;
const IFNAMSIZ: usize = 16;

/// Errors from link operations.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// A netlink request failed.
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    /// No link of that name exists in the namespace.
    #[error("no link named {name:?} in namespace {ns}")]
    NotFound {
        /// Link name asked for.
        name: String,
        /// Namespace label.
        ns: String,
    },
    /// The interface name is empty, too long (15 bytes max) or has `/`, `:`, quotes or spaces.
    #[error("invalid interface name {0:?}: 1 to 15 printable ASCII bytes, no '/', ':', quotes or spaces")]
    InvalidName(String),
    /// The address prefix length is larger than 32.
    #[error("invalid IPv4 prefix length {0}")]
    InvalidPrefix(u8),
}

/// Checks an interface name: the kernel's `dev_valid_name` rules, plus printable ASCII without
/// quotes so that names can be placed in nftables scripts safely.
pub fn validate_ifname(name: &str) -> Result<(), LinkError> {
    let ok = !name.is_empty()
        && name.len() < IFNAMSIZ
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'/' | b':' | b'"' | b'\\'));
    if ok {
        Ok(())
    } else {
        Err(LinkError::InvalidName(name.to_string()))
    }
}

/// Link operations scoped to one network namespace (the daemon's own, or a test's).
#[derive(Debug)]
pub struct Links {
    nl: Netlink,
    ns_label: String,
}

impl Links {
    /// Opens a netlink socket in `ns`; every operation on the result acts inside `ns`.
    pub fn open(ns: &NetNs) -> Result<Self, LinkError> {
        Ok(Self {
            nl: Netlink::open(ns)?,
            ns_label: ns.label().to_string(),
        })
    }

    /// The interface index of `name`, or `None` if no such link exists.
    pub fn find(&mut self, name: &str) -> Result<Option<u32>, LinkError> {
        validate_ifname(name)?;
        let mut req = Request::new(RTM_GETLINK, NLM_F_REQUEST, &ifinfomsg(0, 0, 0, 0));
        req.attr_str(IFLA_IFNAME, name);
        match self.nl.call(&mut req, &format!("lookup of link {name}")) {
            Ok(body) => Ok(ifinfo_index(&body)),
            Err(NetlinkError::Refused { source, .. })
                if source.raw_os_error() == Some(libc::ENODEV) =>
            {
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The interface index of `name`; an error if it does not exist.
    pub fn index(&mut self, name: &str) -> Result<u32, LinkError> {
        self.find(name)?.ok_or_else(|| LinkError::NotFound {
            name: name.to_string(),
            ns: self.ns_label.clone(),
        })
    }

    /// The attributes of link `name` as the kernel reports them (the RTM_NEWLINK body:
    /// ifinfomsg then attributes), or `None` if it does not exist.
    pub(crate) fn get_link(&mut self, name: &str) -> Result<Option<Vec<u8>>, LinkError> {
        validate_ifname(name)?;
        let mut req = Request::new(RTM_GETLINK, NLM_F_REQUEST, &ifinfomsg(0, 0, 0, 0));
        req.attr_str(IFLA_IFNAME, name);
        match self.nl.call(&mut req, &format!("lookup of link {name}")) {
            Ok(body) if body.len() >= 16 => Ok(Some(body)),
            Ok(_) => Err(NetlinkError::Malformed(format!("lookup of link {name}")).into()),
            Err(NetlinkError::Refused { source, .. })
                if source.raw_os_error() == Some(libc::ENODEV) =>
            {
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The bridge `name` is a port of (its interface index), or `None`.
    pub fn master(&mut self, name: &str) -> Result<Option<u32>, LinkError> {
        let body = self.get_link(name)?.ok_or_else(|| LinkError::NotFound {
            name: name.to_string(),
            ns: self.ns_label.clone(),
        })?;
        let attrs = parse_attrs(&body[16..]);
        Ok(find_attr(&attrs, IFLA_MASTER)
            .and_then(attr_u32)
            .filter(|i| *i != 0))
    }

    /// The label of the namespace this handle acts in (for errors and logs).
    pub fn ns_label(&self) -> &str {
        &self.ns_label
    }

    /// Creates a Linux bridge named `name` (down; see [`Links::set_up`]).
    pub fn create_bridge(&mut self, name: &str) -> Result<u32, LinkError> {
        validate_ifname(name)?;
        let mut req = new_link_request(name);
        req.begin_nest(IFLA_LINKINFO)
            .attr_str(IFLA_INFO_KIND, "bridge")
            .end_nest();
        self.nl
            .call(&mut req, &format!("creation of bridge {name}"))?;
        tracing::debug!(bridge = %name, ns = %self.ns_label, "created bridge");
        self.index(name)
    }

    /// Creates a veth pair `name` <-> `peer`; the peer end is created directly in `peer_ns`
    /// (a container's namespace) when given, otherwise next to `name`.
    pub fn create_veth(
        &mut self,
        name: &str,
        peer: &str,
        peer_ns: Option<&NetNs>,
    ) -> Result<u32, LinkError> {
        validate_ifname(name)?;
        validate_ifname(peer)?;
        let mut req = new_link_request(name);
        req.begin_nest(IFLA_LINKINFO)
            .attr_str(IFLA_INFO_KIND, "veth");
        req.begin_nest(IFLA_INFO_DATA).begin_nest(VETH_INFO_PEER);
        req.raw(&ifinfomsg(0, 0, 0, 0)).attr_str(IFLA_IFNAME, peer);
        if let Some(fd) = peer_ns.and_then(NetNs::fd) {
            req.attr_u32(IFLA_NET_NS_FD, std::os::fd::AsRawFd::as_raw_fd(&fd) as u32);
        }
        req.end_nest().end_nest().end_nest();
        self.nl
            .call(&mut req, &format!("creation of veth pair {name}/{peer}"))?;
        tracing::debug!(veth = %name, peer = %peer, ns = %self.ns_label, "created veth pair");
        self.index(name)
    }

    /// Deletes a link (a veth's peer goes with it; a bridge's ports are released).
    pub fn delete(&mut self, name: &str) -> Result<(), LinkError> {
        let index = self.index(name)?;
        let mut req = Request::new(
            RTM_DELLINK,
            NLM_F_REQUEST | NLM_F_ACK,
            &ifinfomsg(0, index as i32, 0, 0),
        );
        self.nl
            .call(&mut req, &format!("deletion of link {name}"))?;
        Ok(())
    }

    /// Brings a link up or down.
    pub fn set_up(&mut self, name: &str, up: bool) -> Result<(), LinkError> {
        let flags = if up { libc::IFF_UP as u32 } else { 0 };
        self.set_link(name, flags, libc::IFF_UP as u32, |_| {})
    }

    /// Sets a link's MTU.
    pub fn set_mtu(&mut self, name: &str, mtu: u32) -> Result<(), LinkError> {
        self.set_link(name, 0, 0, |req| {
            req.attr_u32(IFLA_MTU, mtu);
        })
    }

    /// Sets a link's MAC address.
    pub fn set_mac(&mut self, name: &str, mac: MacAddr) -> Result<(), LinkError> {
        self.set_link(name, 0, 0, |req| {
            req.attr(IFLA_ADDRESS, &mac.octets());
        })
    }

    /// Attaches a link to `bridge` as a port, or detaches it with `None`.
    pub fn set_master(&mut self, name: &str, bridge: Option<&str>) -> Result<(), LinkError> {
        let master = match bridge {
            Some(b) => self.index(b)?,
            None => 0,
        };
        self.set_link(name, 0, 0, |req| {
            req.attr_u32(IFLA_MASTER, master);
        })
    }

    /// Moves a link into another namespace (it disappears from this one).
    pub fn move_to(&mut self, name: &str, ns: &NetNs) -> Result<(), LinkError> {
        let Some(fd) = ns.fd() else {
            return Ok(());
        };
        let raw = std::os::fd::AsRawFd::as_raw_fd(&fd) as u32;
        self.set_link(name, 0, 0, |req| {
            req.attr_u32(IFLA_NET_NS_FD, raw);
        })
    }

    /// Adds an IPv4 address with its prefix length to a link.
    pub fn add_address(&mut self, name: &str, addr: Ipv4Addr, prefix: u8) -> Result<(), LinkError> {
        if prefix > 32 {
            return Err(LinkError::InvalidPrefix(prefix));
        }
        let index = self.index(name)?;
        let mut fixed = [0u8; 8];
        fixed[0] = libc::AF_INET as u8;
        fixed[1] = prefix;
        fixed[4..8].copy_from_slice(&index.to_ne_bytes());
        let mut req = Request::new(
            RTM_NEWADDR,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
            &fixed,
        );
        req.attr(IFA_LOCAL, &addr.octets())
            .attr(IFA_ADDRESS, &addr.octets());
        if prefix < 31 {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            let bcast = Ipv4Addr::from(u32::from(addr) | !mask);
            req.attr(IFA_BROADCAST, &bcast.octets());
        }
        self.nl
            .call(&mut req, &format!("address {addr}/{prefix} on {name}"))?;
        Ok(())
    }

    /// Adds an IPv6 address with its prefix length to a link, without duplicate address
    /// detection (the daemon allocates addresses without collisions, and DAD would leave the
    /// address unusable for a second or more).
    pub fn add_address6(
        &mut self,
        name: &str,
        addr: Ipv6Addr,
        prefix: u8,
    ) -> Result<(), LinkError> {
        if prefix > 128 {
            return Err(LinkError::InvalidPrefix(prefix));
        }
        let index = self.index(name)?;
        let mut fixed = [0u8; 8];
        fixed[0] = libc::AF_INET6 as u8;
        fixed[1] = prefix;
        fixed[2] = IFA_F_NODAD;
        fixed[4..8].copy_from_slice(&index.to_ne_bytes());
        let mut req = Request::new(
            RTM_NEWADDR,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
            &fixed,
        );
        req.attr(IFA_LOCAL, &addr.octets())
            .attr(IFA_ADDRESS, &addr.octets());
        self.nl
            .call(&mut req, &format!("address {addr}/{prefix} on {name}"))?;
        Ok(())
    }

    /// Adds the default IPv6 route via `gateway`.
    pub fn add_default_route6(&mut self, gateway: Ipv6Addr) -> Result<(), LinkError> {
        let fixed = [
            libc::AF_INET6 as u8,
            0,
            0,
            0,
            libc::RT_TABLE_MAIN,
            libc::RTPROT_BOOT,
            libc::RT_SCOPE_UNIVERSE,
            libc::RTN_UNICAST,
            0,
            0,
            0,
            0,
        ];
        let mut req = Request::new(
            RTM_NEWROUTE,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
            &fixed,
        );
        req.attr(RTA_GATEWAY, &gateway.octets());
        self.nl
            .call(&mut req, &format!("default route via {gateway}"))?;
        Ok(())
    }

    /// Adds the default IPv4 route via `gateway` (a container's route to its bridge).
    pub fn add_default_route(&mut self, gateway: Ipv4Addr) -> Result<(), LinkError> {
        let fixed = [
            libc::AF_INET as u8,
            0,                       // dst_len
            0,                       // src_len
            0,                       // tos
            libc::RT_TABLE_MAIN,     // table
            libc::RTPROT_BOOT,       // protocol
            libc::RT_SCOPE_UNIVERSE, // scope
            libc::RTN_UNICAST,       // type
            0,
            0,
            0,
            0, // flags
        ];
        let mut req = Request::new(
            RTM_NEWROUTE,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
            &fixed,
        );
        req.attr(RTA_GATEWAY, &gateway.octets());
        self.nl
            .call(&mut req, &format!("default route via {gateway}"))?;
        Ok(())
    }

    /// Sends a prepared request in this namespace (device families in other modules).
    pub(crate) fn call(&mut self, req: &mut Request, what: &str) -> Result<(), LinkError> {
        self.nl.call(req, what)?;
        Ok(())
    }

    /// Sends a prepared dump request in this namespace; the bodies of the replies of `kind`.
    pub(crate) fn dump(
        &mut self,
        req: &mut Request,
        kind: u16,
        what: &str,
    ) -> Result<Vec<Vec<u8>>, LinkError> {
        Ok(self.nl.dump(req, kind, what)?)
    }

    fn set_link(
        &mut self,
        name: &str,
        flags: u32,
        change: u32,
        attrs: impl FnOnce(&mut Request),
    ) -> Result<(), LinkError> {
        let index = self.index(name)?;
        let mut req = Request::new(
            RTM_NEWLINK,
            NLM_F_REQUEST | NLM_F_ACK,
            &ifinfomsg(0, index as i32, flags, change),
        );
        attrs(&mut req);
        self.nl.call(&mut req, &format!("change of link {name}"))?;
        Ok(())
    }
}

/// An RTM_NEWLINK request that creates `name` (fails if it exists).
pub(crate) fn new_link_request(name: &str) -> Request {
    let mut req = Request::new(
        RTM_NEWLINK,
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        &ifinfomsg(0, 0, 0, 0),
    );
    req.attr_str(IFLA_IFNAME, name);
    req
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_follow_kernel_rules() {
        assert!(validate_ifname("vbr-net1").is_ok());
        assert!(validate_ifname("").is_err());
        assert!(validate_ifname("sixteen-chars-xx").is_err());
        assert!(validate_ifname("a/b").is_err());
        assert!(validate_ifname("a b").is_err());
        assert!(validate_ifname("..").is_err());
        assert!(validate_ifname("br\"0").is_err());
    }
}
