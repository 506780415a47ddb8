//! What a namespace already uses: its IPv4 routes (from every routing table) and addresses,
//! read over rtnetlink, and the first candidate subnet that collides with none of them. The
//! daemon picks its default network's subnet this way, as Docker and Incus do, so that a
//! new network never hides a LAN, a VPN or a route the host depends on.

use std::net::Ipv4Addr;

use crate::ipam::Subnet;
use crate::link::{LinkError, Links};
use crate::netlink::{find_attr, parse_attrs, Request, NLM_F_DUMP, NLM_F_REQUEST};

const RTM_NEWADDR: u16 = 20;
const RTM_GETADDR: u16 = 22;
const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_LABEL: u16 = 3;
const RTA_DST: u16 = 1;
const RTA_TABLE: u16 = 15;

/// An IPv4 prefix as the kernel holds it (routes and addresses may be /31 or /32, which a
/// [`Subnet`] is not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix4 {
    /// First address (the host bits cleared).
    pub network: Ipv4Addr,
    /// Prefix length, 0 to 32.
    pub len: u8,
}

impl Prefix4 {
    /// The prefix of `addr/len` (host bits cleared; lengths above 32 count as 32).
    pub fn new(addr: Ipv4Addr, len: u8) -> Self {
        let len = len.min(32);
        let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
        Self {
            network: Ipv4Addr::from(u32::from(addr) & mask),
            len,
        }
    }

    fn mask(&self) -> u32 {
        u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0)
    }

    /// Whether the two share an address.
    pub fn overlaps(&self, subnet: &Subnet) -> bool {
        let other = Prefix4::new(subnet.network(), subnet.prefix());
        let mask = self.mask() & other.mask();
        u32::from(self.network) & mask == u32::from(other.network) & mask
    }
}

impl std::fmt::Display for Prefix4 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.len)
    }
}

/// An IPv4 route of the namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route4 {
    /// Its destination.
    pub destination: Prefix4,
    /// The routing table holding it (254 is `main`, 255 `local`).
    pub table: u32,
}

/// An IPv4 address held by an interface of the namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address4 {
    /// The interface (its label, which is its name unless an alias was given).
    pub interface: String,
    /// The address.
    pub address: Ipv4Addr,
    /// Its prefix length.
    pub prefix: u8,
}

impl Links {
    /// Every IPv4 route of every routing table of the namespace.
    pub fn ipv4_routes(&mut self) -> Result<Vec<Route4>, LinkError> {
        // struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags.
        let mut fixed = [0u8; 12];
        fixed[0] = libc::AF_INET as u8;
        let mut req = Request::new(RTM_GETROUTE, NLM_F_REQUEST | NLM_F_DUMP, &fixed);
        let bodies = self.dump(&mut req, RTM_NEWROUTE, "dump of IPv4 routes")?;
        Ok(bodies.iter().filter_map(|b| parse_route(b)).collect())
    }

    /// Every IPv4 address of the namespace.
    pub fn ipv4_addresses(&mut self) -> Result<Vec<Address4>, LinkError> {
        // struct ifaddrmsg: family, prefixlen, flags, scope, index.
        let mut fixed = [0u8; 8];
        fixed[0] = libc::AF_INET as u8;
        let mut req = Request::new(RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, &fixed);
        let bodies = self.dump(&mut req, RTM_NEWADDR, "dump of IPv4 addresses")?;
        Ok(bodies.iter().filter_map(|b| parse_address(b)).collect())
    }

    /// The prefixes the namespace already reaches by a route of its own or holds an address
    /// in: every route but default routes (which cover everything), and every address with
    /// its prefix.
    pub fn used_prefixes(&mut self) -> Result<Vec<Prefix4>, LinkError> {
        let mut used: Vec<Prefix4> = self
            .ipv4_routes()?
            .into_iter()
            .map(|r| r.destination)
            .filter(|p| p.len > 0)
            .collect();
        used.extend(
            self.ipv4_addresses()?
                .into_iter()
                .map(|a| Prefix4::new(a.address, a.prefix)),
        );
        Ok(used)
    }
}

fn ipv4(payload: &[u8]) -> Option<Ipv4Addr> {
    let b: [u8; 4] = payload.get(..4)?.try_into().ok()?;
    Some(Ipv4Addr::from(b))
}

/// One RTM_NEWROUTE body: the rtmsg, then attributes.
fn parse_route(body: &[u8]) -> Option<Route4> {
    if body.len() < 12 || body[0] != libc::AF_INET as u8 {
        return None;
    }
    let attrs = parse_attrs(&body[12..]);
    let dst = find_attr(&attrs, RTA_DST)
        .and_then(ipv4)
        .unwrap_or(Ipv4Addr::UNSPECIFIED);
    let table = find_attr(&attrs, RTA_TABLE)
        .and_then(crate::netlink::attr_u32)
        .unwrap_or(u32::from(body[4]));
    Some(Route4 {
        destination: Prefix4::new(dst, body[1]),
        table,
    })
}

/// One RTM_NEWADDR body: the ifaddrmsg, then attributes.
fn parse_address(body: &[u8]) -> Option<Address4> {
    if body.len() < 8 || body[0] != libc::AF_INET as u8 {
        return None;
    }
    let attrs = parse_attrs(&body[8..]);
    let address = find_attr(&attrs, IFA_LOCAL)
        .or_else(|| find_attr(&attrs, IFA_ADDRESS))
        .and_then(ipv4)?;
    let interface = find_attr(&attrs, IFA_LABEL)
        .map(|l| {
            String::from_utf8_lossy(l)
                .trim_end_matches('\0')
                .to_string()
        })
        .unwrap_or_default();
    Some(Address4 {
        interface,
        address,
        prefix: body[1],
    })
}

/// The first of `candidates` that overlaps none of `used`.
pub fn first_free_subnet(
    candidates: impl IntoIterator<Item = Subnet>,
    used: &[Prefix4],
) -> Option<Subnet> {
    candidates
        .into_iter()
        .find(|c| !used.iter().any(|u| u.overlaps(c)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Prefix4 {
        let (a, l) = s.split_once('/').expect("prefix");
        Prefix4::new(a.parse().expect("address"), l.parse().expect("length"))
    }

    fn subnet(s: &str) -> Subnet {
        s.parse().expect("subnet")
    }

    #[test]
    fn prefixes_overlap_subnets_both_ways() {
        assert_eq!(p("10.42.0.77/24").to_string(), "10.42.0.0/24");
        assert!(p("10.0.0.0/8").overlaps(&subnet("10.42.0.0/24")));
        assert!(p("10.42.0.5/32").overlaps(&subnet("10.42.0.0/24")));
        assert!(!p("10.43.0.5/32").overlaps(&subnet("10.42.0.0/24")));
        assert!(!p("192.168.1.0/24").overlaps(&subnet("10.42.0.0/24")));
        assert!(p("0.0.0.0/0").overlaps(&subnet("10.42.0.0/24")));
    }

    #[test]
    fn the_first_candidate_no_route_or_address_uses_wins() {
        let candidates = || ["10.42.0.0/24", "10.43.0.0/24", "10.44.0.0/24"].map(subnet);
        assert_eq!(
            first_free_subnet(candidates(), &[]),
            Some(subnet("10.42.0.0/24"))
        );
        let used = [p("10.42.0.0/16"), p("10.43.0.1/32")];
        assert_eq!(
            first_free_subnet(candidates(), &used),
            Some(subnet("10.44.0.0/24"))
        );
        assert_eq!(first_free_subnet(candidates(), &[p("10.0.0.0/8")]), None);
    }

    #[test]
    fn route_and_address_messages_are_read() {
        // rtmsg: AF_INET, /24, table main; RTA_DST 10.42.0.0; RTA_TABLE 254.
        let mut route = vec![libc::AF_INET as u8, 24, 0, 0, 254, 0, 0, 1, 0, 0, 0, 0];
        route.extend_from_slice(&[8, 0, 1, 0, 10, 42, 0, 0]);
        route.extend_from_slice(&[8, 0, 15, 0]);
        route.extend_from_slice(&254u32.to_ne_bytes());
        let r = parse_route(&route).expect("route");
        assert_eq!((r.destination, r.table), (p("10.42.0.0/24"), 254));
        // A default route has no RTA_DST.
        let default = [libc::AF_INET as u8, 0, 0, 0, 254, 0, 0, 1, 0, 0, 0, 0];
        assert_eq!(
            parse_route(&default).expect("default").destination,
            p("0.0.0.0/0")
        );
        // ifaddrmsg: AF_INET, /24; IFA_LOCAL 192.0.2.7; IFA_LABEL "eth0".
        let mut addr = vec![libc::AF_INET as u8, 24, 0, 0, 2, 0, 0, 0];
        addr.extend_from_slice(&[8, 0, 2, 0, 192, 0, 2, 7]);
        addr.extend_from_slice(&[9, 0, 3, 0, b'e', b't', b'h', b'0', 0, 0, 0, 0]);
        let a = parse_address(&addr).expect("address");
        assert_eq!(
            a,
            Address4 {
                interface: "eth0".into(),
                address: "192.0.2.7".parse().expect("ip"),
                prefix: 24
            }
        );
        assert!(parse_route(&[libc::AF_INET6 as u8; 12]).is_none());
    }
}
