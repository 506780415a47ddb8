//! IP address and MAC address management: pure logic, no kernel calls.

use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// Errors from address management.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    /// The text is not `A.B.C.D/N`.
    #[error("invalid subnet {0:?}: expected A.B.C.D/N with N from 0 to 30")]
    InvalidSubnet(String),
    /// The subnet has host bits set (`10.0.0.5/24`).
    #[error("subnet {0} has host bits set; did you mean its network address?")]
    HostBitsSet(String),
    /// The address does not belong to the subnet.
    #[error("address {addr} is outside subnet {subnet}")]
    OutsideSubnet {
        /// Address asked for.
        addr: Ipv4Addr,
        /// The network's subnet.
        subnet: Subnet,
    },
    /// The address is the network, gateway or broadcast address.
    #[error("address {0} is reserved (network, gateway or broadcast)")]
    Reserved(Ipv4Addr),
    /// The address is already leased.
    #[error("address {0} is already in use")]
    Taken(Ipv4Addr),
    /// The address was not leased, so it cannot be released.
    #[error("address {0} is not allocated")]
    NotAllocated(Ipv4Addr),
    /// Every host address of the subnet is in use.
    #[error("subnet {0} has no free addresses left")]
    Exhausted(Subnet),
    /// Two networks' subnets share addresses.
    #[error("subnet {new} overlaps subnet {existing}")]
    Overlap {
        /// The subnet being added.
        new: Subnet,
        /// The subnet already in use.
        existing: Subnet,
    },
    /// The text is not a MAC address `aa:bb:cc:dd:ee:ff`.
    #[error("invalid MAC address {0:?}")]
    InvalidMac(String),
    /// The MAC address is already assigned to another NIC.
    #[error("MAC address {0} is already in use")]
    DuplicateMac(MacAddr),
    /// A MAC address must be unicast (lowest bit of the first octet clear).
    #[error("MAC address {0} is multicast; NICs need a unicast address")]
    MulticastMac(MacAddr),
}

/// An IPv4 subnet in CIDR form, always stored as its network address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Subnet {
    network: Ipv4Addr,
    prefix: u8,
}

impl Subnet {
    /// A subnet from its network address and prefix length (0..=30, so it has hosts).
    pub fn new(network: Ipv4Addr, prefix: u8) -> Result<Self, IpamError> {
        if prefix > 30 {
            return Err(IpamError::InvalidSubnet(format!("{network}/{prefix}")));
        }
        let s = Self { network, prefix };
        if u32::from(network) & !s.mask() != 0 {
            return Err(IpamError::HostBitsSet(format!("{network}/{prefix}")));
        }
        Ok(s)
    }

    /// The network address.
    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    fn mask(&self) -> u32 {
        u32::MAX
            .checked_shl(32 - u32::from(self.prefix))
            .unwrap_or(0)
    }

    /// The broadcast address (last of the subnet).
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !self.mask())
    }

    /// The gateway: by convention the first host address, held by the bridge.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }

    /// Whether `addr` lies inside the subnet (network and broadcast included).
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        u32::from(addr) & self.mask() == u32::from(self.network)
    }

    /// Whether the two subnets share any address.
    pub fn overlaps(&self, other: &Subnet) -> bool {
        self.contains(other.network) || other.contains(self.network)
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl FromStr for Subnet {
    type Err = IpamError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || IpamError::InvalidSubnet(s.to_string());
        let (addr, prefix) = s.trim().split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        Self::new(addr, prefix)
    }
}

/// Refuses `new` if it overlaps any subnet in `existing`.
pub fn check_overlap<'a>(
    new: &Subnet,
    existing: impl IntoIterator<Item = &'a Subnet>,
) -> Result<(), IpamError> {
    match existing.into_iter().find(|e| e.overlaps(new)) {
        Some(e) => Err(IpamError::Overlap {
            new: *new,
            existing: *e,
        }),
        None => Ok(()),
    }
}

/// Address leases of one network: hands out host addresses, skipping network, gateway and
/// broadcast. The daemon rebuilds it from the store with [`Ipam::reserve`].
#[derive(Debug, Clone)]
pub struct Ipam {
    subnet: Subnet,
    leased: BTreeSet<Ipv4Addr>,
}

impl Ipam {
    /// An empty lease table for `subnet`.
    pub fn new(subnet: Subnet) -> Self {
        Self {
            subnet,
            leased: BTreeSet::new(),
        }
    }

    /// The subnet being managed.
    pub fn subnet(&self) -> Subnet {
        self.subnet
    }

    /// Addresses currently leased, in order.
    pub fn leased(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.leased.iter().copied()
    }

    fn check(&self, addr: Ipv4Addr) -> Result<(), IpamError> {
        if !self.subnet.contains(addr) {
            return Err(IpamError::OutsideSubnet {
                addr,
                subnet: self.subnet,
            });
        }
        if addr == self.subnet.network()
            || addr == self.subnet.gateway()
            || addr == self.subnet.broadcast()
        {
            return Err(IpamError::Reserved(addr));
        }
        if self.leased.contains(&addr) {
            return Err(IpamError::Taken(addr));
        }
        Ok(())
    }

    /// Leases a specific address (a static IP, or a lease reloaded from the store).
    pub fn reserve(&mut self, addr: Ipv4Addr) -> Result<(), IpamError> {
        self.check(addr)?;
        self.leased.insert(addr);
        Ok(())
    }

    /// Leases the lowest free host address.
    pub fn allocate(&mut self) -> Result<Ipv4Addr, IpamError> {
        let first = u32::from(self.subnet.gateway()) + 1;
        let last = u32::from(self.subnet.broadcast());
        let addr = (first..last)
            .map(Ipv4Addr::from)
            .find(|a| !self.leased.contains(a))
            .ok_or(IpamError::Exhausted(self.subnet))?;
        self.leased.insert(addr);
        Ok(addr)
    }

    /// Returns a leased address to the pool.
    pub fn release(&mut self, addr: Ipv4Addr) -> Result<(), IpamError> {
        if self.leased.remove(&addr) {
            Ok(())
        } else {
            Err(IpamError::NotAllocated(addr))
        }
    }
}

/// An Ethernet MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr([u8; 6]);

impl MacAddr {
    /// The locally administered unicast prefix Vessel allocates NIC addresses under.
    pub const VESSEL_PREFIX: [u8; 3] = [0x0a, 0x76, 0x73];

    /// A MAC address from its six octets.
    pub fn new(octets: [u8; 6]) -> Self {
        Self(octets)
    }

    /// The six octets.
    pub fn octets(&self) -> [u8; 6] {
        self.0
    }

    /// Whether the multicast bit is set.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 1 == 1
    }

    /// Whether the locally administered bit is set.
    pub fn is_local(&self) -> bool {
        self.0[0] & 2 == 2
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            o[0], o[1], o[2], o[3], o[4], o[5]
        )
    }
}

impl FromStr for MacAddr {
    type Err = IpamError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || IpamError::InvalidMac(s.to_string());
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for o in out.iter_mut() {
            let p = parts.next().ok_or_else(bad)?;
            if p.len() != 2 {
                return Err(bad());
            }
            *o = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(Self(out))
    }
}

/// Hands out MAC addresses under [`MacAddr::VESSEL_PREFIX`] without collisions.
#[derive(Debug, Clone)]
pub struct MacAllocator {
    used: BTreeSet<MacAddr>,
    state: u64,
}

impl MacAllocator {
    /// An allocator whose pseudo-random sequence starts from `seed` (use something unique per
    /// host, e.g. a hash of the host name, so two hosts of a cluster rarely pick the same).
    pub fn new(seed: u64) -> Self {
        Self {
            used: BTreeSet::new(),
            state: seed | 1,
        }
    }

    /// Records an address already in use (a user-given MAC, or one from the store).
    pub fn reserve(&mut self, mac: MacAddr) -> Result<(), IpamError> {
        if mac.is_multicast() {
            return Err(IpamError::MulticastMac(mac));
        }
        if !self.used.insert(mac) {
            return Err(IpamError::DuplicateMac(mac));
        }
        Ok(())
    }

    /// Returns an address to the pool.
    pub fn release(&mut self, mac: MacAddr) {
        self.used.remove(&mac);
    }

    /// Allocates a fresh address not in use.
    pub fn allocate(&mut self) -> MacAddr {
        loop {
            // xorshift64: cheap, and collisions are retried anyway.
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            let b = self.state.to_le_bytes();
            let p = MacAddr::VESSEL_PREFIX;
            let mac = MacAddr([p[0], p[1], p[2], b[0], b[1], b[2]]);
            if self.used.insert(mac) {
                return mac;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Subnet {
        s.parse().expect("test subnet")
    }

    #[test]
    fn allocation_skips_network_gateway_and_broadcast() {
        let mut ipam = Ipam::new(net("10.42.0.0/30"));
        assert_eq!(ipam.allocate(), Ok(Ipv4Addr::new(10, 42, 0, 2)));
        assert_eq!(
            ipam.allocate(),
            Err(IpamError::Exhausted(net("10.42.0.0/30")))
        );
        ipam.release(Ipv4Addr::new(10, 42, 0, 2)).expect("release");
        assert_eq!(ipam.allocate(), Ok(Ipv4Addr::new(10, 42, 0, 2)));
    }

    #[test]
    fn reserve_refuses_outside_reserved_and_taken() {
        let mut ipam = Ipam::new(net("10.42.0.0/24"));
        let outside = Ipv4Addr::new(10, 43, 0, 5);
        assert!(matches!(
            ipam.reserve(outside),
            Err(IpamError::OutsideSubnet { .. })
        ));
        for r in [[10, 42, 0, 0], [10, 42, 0, 1], [10, 42, 0, 255]] {
            assert_eq!(ipam.reserve(r.into()), Err(IpamError::Reserved(r.into())));
        }
        ipam.reserve(Ipv4Addr::new(10, 42, 0, 2))
            .expect("static lease");
        assert_eq!(
            ipam.reserve(Ipv4Addr::new(10, 42, 0, 2)),
            Err(IpamError::Taken(Ipv4Addr::new(10, 42, 0, 2)))
        );
        assert_eq!(ipam.allocate(), Ok(Ipv4Addr::new(10, 42, 0, 3)));
        assert_eq!(
            ipam.release(Ipv4Addr::new(10, 42, 0, 9)),
            Err(IpamError::NotAllocated(Ipv4Addr::new(10, 42, 0, 9)))
        );
        assert_eq!(ipam.leased().count(), 2);
    }

    #[test]
    fn subnet_parsing_and_overlap() {
        assert!(matches!(
            "10.0.0.5/24".parse::<Subnet>(),
            Err(IpamError::HostBitsSet(_))
        ));
        assert!(matches!(
            "10.0.0.0".parse::<Subnet>(),
            Err(IpamError::InvalidSubnet(_))
        ));
        assert!(matches!(
            "10.0.0.0/31".parse::<Subnet>(),
            Err(IpamError::InvalidSubnet(_))
        ));
        let a = net("10.42.0.0/16");
        let b = net("10.42.7.0/24");
        let c = net("10.43.0.0/24");
        assert!(a.overlaps(&b) && b.overlaps(&a));
        assert!(!a.overlaps(&c));
        assert_eq!(
            check_overlap(&b, [&a, &c]),
            Err(IpamError::Overlap {
                new: b,
                existing: a
            })
        );
        assert_eq!(check_overlap(&c, [&b]), Ok(()));
        assert_eq!(a.broadcast(), Ipv4Addr::new(10, 42, 255, 255));
        assert_eq!(a.to_string(), "10.42.0.0/16");
    }

    #[test]
    fn macs_are_local_unicast_and_unique() {
        let mut alloc = MacAllocator::new(42);
        let mut seen = BTreeSet::new();
        for _ in 0..5000 {
            let mac = alloc.allocate();
            assert!(mac.is_local() && !mac.is_multicast());
            assert!(seen.insert(mac), "duplicate {mac}");
        }
        let first = *seen.iter().next().expect("one mac");
        assert_eq!(alloc.reserve(first), Err(IpamError::DuplicateMac(first)));
        alloc.release(first);
        assert_eq!(alloc.reserve(first), Ok(()));
        let mc: MacAddr = "01:00:5e:00:00:01".parse().expect("mac");
        assert_eq!(alloc.reserve(mc), Err(IpamError::MulticastMac(mc)));
        assert_eq!(
            "0a:76:73:01:02:03"
                .parse::<MacAddr>()
                .map(|m| m.to_string())
                .as_deref(),
            Ok("0a:76:73:01:02:03")
        );
        assert!("0a:76:73:01:02".parse::<MacAddr>().is_err());
    }
}
