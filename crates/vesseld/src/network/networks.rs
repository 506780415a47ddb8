//! Creating and deleting networks.

use std::net::Ipv4Addr;

use vessel_api::{Network, NetworkCreate};
use vessel_net::{Address4, Links, NetNs, Subnet};

use super::parse::parse_prefix6;
use super::record::NetworkRecord;
use super::segments::mode_name;
use super::{net_err, NetworkService};
use crate::error::{Error, Result};
use crate::name::validate_name_within;

/// The longest network name: `vbr-NAME` must fit in an interface name (15 bytes).
const MAX_NAME: usize = 11;

impl NetworkService {
    /// Refuses what a project's operator may not give a network: an IPv4 subnet outside the
    /// private ranges (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16) or overlapping a route or
    /// an address of the host (its LAN, its router: the bridge would take the router's
    /// address), and an IPv6 prefix outside the unique local range (fc00::/7).
    pub fn check_tenant_subnets(&self, req: &NetworkCreate) -> Result<()> {
        let subnet: Subnet = req
            .subnet
            .parse()
            .map_err(|e| Error::invalid(format!("subnet {:?}: {e}", req.subnet)))?;
        let private = [
            (Ipv4Addr::new(10, 0, 0, 0), 8),
            (Ipv4Addr::new(172, 16, 0, 0), 12),
            (Ipv4Addr::new(192, 168, 0, 0), 16),
        ];
        let inside = private.iter().any(|&(net, len)| {
            subnet.prefix() >= len && vessel_net::Prefix4::new(net, len).overlaps(&subnet)
        });
        if !inside {
            return Err(Error::forbidden(format!(
                "subnet {subnet}: a project's network takes a private subnet (within \
                 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16); only an admin gives others"
            )));
        }
        let used = super::default::host_prefixes()?;
        // The host's routes to networks of its own (their records are checked apart).
        let own: Vec<Subnet> = self
            .records()?
            .iter()
            .filter_map(|r| r.subnet().ok())
            .collect();
        // (A route or address inside one of them is theirs; a wider route containing one,
        // a VPN's 10.0.0.0/8 say, is the host's.)
        let host = used.iter().find(|p| {
            p.overlaps(&subnet)
                && !own
                    .iter()
                    .any(|s| p.len >= s.prefix() && s.contains(p.network))
        });
        if let Some(p) = host {
            return Err(Error::conflict(format!(
                "subnet {subnet} overlaps {p}, a route or address of the host: choose another"
            )));
        }
        if let Some(text) = &req.ipv6 {
            let prefix = parse_prefix6(text)?;
            if prefix.segments()[0] & 0xfe00 != 0xfc00 {
                return Err(Error::forbidden(format!(
                    "IPv6 prefix {text}: a project's network takes a unique local prefix \
                     (within fc00::/7); only an admin gives others"
                )));
            }
            // The first IPv6 network turns on IPv6 forwarding for every interface of the
            // host, which then stops taking router advertisements (unless accept_ra=2): a
            // host that learns its own IPv6 route that way loses it. An admin's decision.
            let forwarding = std::fs::read_to_string("/proc/sys/net/ipv6/conf/all/forwarding")
                .unwrap_or_default();
            if forwarding.trim() != "1" {
                return Err(Error::forbidden(
                    "IPv6 forwarding is off on this host, and the first IPv6 network turns it \
                     on for every interface (a host taking its IPv6 route from router \
                     advertisements would lose it): an admin makes the first IPv6 network",
                ));
            }
        }
        Ok(())
    }

    /// Creates a network and its kernel objects.
    pub fn create(&self, req: NetworkCreate) -> Result<Network> {
        if req.cluster {
            return Err(Error::invalid(
                "a cluster network is made by the cluster (on a member of one)",
            ));
        }
        self.create_with(req, |_| {})
    }

    /// Creates a network whose record `adjust` completes (a cluster network's).
    pub(super) fn create_with(
        &self,
        req: NetworkCreate,
        adjust: impl FnOnce(&mut NetworkRecord),
    ) -> Result<Network> {
        let _g = self.busy();
        let host_has_ipv6 = std::path::Path::new("/proc/sys/net/ipv6").exists();
        let mut rec = plan_network(&req, &self.records()?, host_has_ipv6, crate::clock::now())?;
        adjust(&mut rec);
        if let Some(local) = &req.local {
            let held = Links::open(&NetNs::current())
                .and_then(|mut l| l.ipv4_addresses())
                .map_err(|e| net_err("reading the host's addresses")(&e))?;
            check_local(local, &held)?;
        }
        if !rec.vlans.is_empty() {
            rec.vlan_mode = Some(mode_name(self.vlan_mode(&rec)).into());
        }
        // Recorded first, so that a crash while the kernel objects are made leaves a note of
        // what to remove at the next start.
        self.inner.pending.put(&rec.name, &rec)?;
        if let Err(e) = self.realize(&rec) {
            self.teardown(&rec);
            let _ = self.inner.pending.delete(&rec.name);
            return Err(e);
        }
        self.inner.networks.insert(&rec.name, &rec)?;
        let _ = self.inner.pending.delete(&rec.name);
        self.inner
            .events
            .lifecycle("network-created", &format!("/1.0/networks/{}", rec.name));
        Ok(self.view(&rec))
    }

    /// Deletes a network without NICs.
    pub fn delete(&self, name: &str) -> Result<Network> {
        let _g = self.busy();
        let rec = self.record(name)?;
        if !rec.leases.is_empty() {
            let users: Vec<&str> = rec.leases.iter().map(|l| l.instance.as_str()).collect();
            return Err(Error::conflict(format!(
                "network {name:?} is used by {}; detach them first",
                users.join(", ")
            )));
        }
        let view = self.view(&rec);
        self.teardown(&rec);
        self.inner.networks.delete(name)?;
        self.inner
            .events
            .lifecycle("network-deleted", &format!("/1.0/networks/{name}"));
        Ok(view)
    }
}

/// Checks a creation request against the `others` networks and makes the record of the
/// network it asks for (without its VLAN mode, which depends on the host).
pub(super) fn plan_network(
    req: &NetworkCreate,
    others: &[NetworkRecord],
    host_has_ipv6: bool,
    created_at: String,
) -> Result<NetworkRecord> {
    // A network of a project other than default is `PROJECT.NAME`; its kernel objects are
    // named from a hash of that (`NetworkRecord::kname`), which no default name may mimic.
    let (project, short) = crate::project::split(&req.name);
    if req.name.contains('.') {
        validate_name_within("project", project, crate::project::MAX_PROJECT_NAME)?;
    } else if super::record::is_hashed_kname(short) {
        return Err(Error::invalid(format!(
            "invalid network name {short:?}: 'p' and ten hexadecimal digits are reserved"
        )));
    }
    validate_name_within("network", short, MAX_NAME)
        .map_err(|e| Error::invalid(format!("{} (it names the bridge vbr-NAME)", e.message)))?;
    if others.iter().any(|o| o.name == req.name) {
        return Err(Error::conflict(format!(
            "network {:?} already exists",
            req.name
        )));
    }
    let subnet: Subnet = req
        .subnet
        .parse()
        .map_err(|e| Error::invalid(format!("subnet {:?}: {e}", req.subnet)))?;
    if subnet.prefix() > 29 {
        return Err(Error::invalid(format!(
            "subnet {subnet} is too small: give a /29 or larger"
        )));
    }
    let subnets: Vec<(String, Subnet)> = others
        .iter()
        .filter_map(|r| r.subnet().ok().map(|s| (r.name.clone(), s)))
        .collect();
    if let Some((n, s)) = subnets.iter().find(|(_, s)| s.overlaps(&subnet)) {
        // Another project's network is not named to this one.
        let what = match crate::project::within(project, n) {
            Some(own) => format!("network {own:?} ({s})"),
            None => "a network of another project".to_string(),
        };
        return Err(Error::conflict(format!("subnet {subnet} overlaps {what}")));
    }
    if let Some(text) = &req.ipv6 {
        let prefix = parse_prefix6(text)?;
        if !host_has_ipv6 {
            return Err(Error::invalid(
                "IPv6 is disabled on this host (no /proc/sys/net/ipv6); leave out --ipv6",
            ));
        }
        for r in others {
            if r.subnet6().ok().flatten() == Some(prefix) {
                return Err(Error::conflict(format!(
                    "IPv6 prefix {prefix}/64 overlaps {}",
                    r.named_for(&req.name)
                )));
            }
        }
    }
    match req.vni {
        Some(v) if (1..=4095).contains(&v) || v > 16_777_215 || v == 0 => {
            return Err(Error::invalid(format!(
                "VNI {v} is not allowed: use 4096-16777215 (1-4095 are VLAN ids)"
            )))
        }
        Some(_) if req.local.is_none() => {
            return Err(Error::invalid(
                "an overlay needs this host's underlay address (--local ADDR)",
            ))
        }
        Some(_) => {}
        None if !req.peers.is_empty() || req.local.is_some() => {
            return Err(Error::invalid("peers and local are for overlays (--vni)"))
        }
        None => {}
    }
    for p in req.peers.iter().chain(req.local.iter()) {
        p.parse::<Ipv4Addr>()
            .map_err(|_| Error::invalid(format!("{p:?} is not an IPv4 address")))?;
    }
    crate::name::validate_user_keys("network", &req.config)?;
    if req.isolated_ports && !req.vlans.is_empty() {
        return Err(Error::invalid(
            "isolated ports and VLAN segments do not mix: a segment's bridge has no port \
             but its NICs, so isolated NICs on it could reach nobody",
        ));
    }
    if req.ipv6.is_some() && req.vni.is_some() {
        return Err(Error::invalid(
            "IPv6 on overlays is not built yet (every host would hold the same link-local \
             gateway address); leave out --ipv6 or --vni",
        ));
    }
    let mut vlans = req.vlans.clone();
    vlans.sort_unstable();
    vlans.dedup();
    if vlans.len() != req.vlans.len() {
        return Err(Error::invalid("a VLAN id is listed twice"));
    }
    if let Some(v) = vlans
        .iter()
        .find(|v| !(1..=vessel_net::VID_MAX).contains(*v))
    {
        return Err(Error::invalid(format!(
            "VLAN id {v} is not allowed: use 1-4094"
        )));
    }
    if let (Some(vni), Some(top)) = (req.vni, vlans.last()) {
        if vni + u32::from(*top) > 16_777_215 {
            return Err(Error::invalid(format!(
                "segment {top} would ride on VNI {}, above 16777215: use a smaller --vni",
                vni + u32::from(*top)
            )));
        }
    }
    let rec = NetworkRecord {
        name: req.name.clone(),
        subnet: subnet.to_string(),
        ipv6: req
            .ipv6
            .as_deref()
            .map(parse_prefix6)
            .transpose()?
            .map(|p| format!("{p}/64")),
        vni: req.vni,
        peers: req.peers.clone(),
        local: req.local.clone(),
        leases: Vec::new(),
        forwards: Vec::new(),
        acl: String::new(),
        vlan_mode: None,
        vlans,
        isolated_ports: req.isolated_ports,
        load_balancers: Vec::new(),
        description: req.description.clone(),
        config: req.config.clone(),
        created_at,
        cluster: false,
        ranges: Vec::new(),
        cluster_made: None,
        remote_names: Vec::new(),
        remote_macs: Default::default(),
    };
    // Kernel objects are named from short hashes of the name (`kname`, `tag`): a name whose
    // hash another network's has would share (and on delete remove) that one's bridge.
    if let Some(o) = others
        .iter()
        .find(|o| o.kname() == rec.kname() || o.tag() == rec.tag())
    {
        return Err(Error::conflict(format!(
            "network name {:?} would name its kernel objects as {} does (their names are \
             short hashes): choose another name",
            short,
            o.named_for(&req.name)
        )));
    }
    let ours = rec.vnis();
    for o in others {
        if let Some(v) = o.vnis().iter().find(|v| ours.contains(v)) {
            return Err(Error::conflict(format!(
                "VNI {v} is taken by {} (a network's segment V uses VNI vni+V)",
                o.named_for(&req.name)
            )));
        }
    }
    Ok(rec)
}

/// An overlay's `local` address must be one the host holds: VXLAN packets would otherwise
/// leave from an address nobody answers to, and the overlay would stay silent.
pub(super) fn check_local(local: &str, held: &[Address4]) -> Result<()> {
    let addr: Ipv4Addr = local
        .parse()
        .map_err(|_| Error::invalid(format!("{local:?} is not an IPv4 address")))?;
    if held.iter().any(|a| a.address == addr) {
        return Ok(());
    }
    let mut own: Vec<String> = held
        .iter()
        .filter(|a| !a.address.is_loopback() && !a.interface.starts_with("vbr-"))
        .map(|a| format!("{} ({})", a.address, a.interface))
        .collect();
    if own.is_empty() {
        own.push("none besides the loopback and Vessel's bridges".into());
    }
    Err(Error::invalid(format!(
        "{addr} is not an address of this host, so the overlay's packets could not leave          from it; give --local one of: {}",
        own.join(", ")
    )))
}

#[cfg(test)]
mod tests {
    use super::super::record::fixture::network;
    use super::*;
    use crate::error::ErrorKind;

    fn req(name: &str, subnet: &str) -> NetworkCreate {
        NetworkCreate {
            name: name.into(),
            subnet: subnet.into(),
            ipv6: None,
            vni: None,
            peers: Vec::new(),
            local: None,
            cluster: false,
            vlans: Vec::new(),
            isolated_ports: false,
            description: "d".into(),
            config: Default::default(),
        }
    }

    fn plan(r: &NetworkCreate, others: &[NetworkRecord]) -> Result<NetworkRecord> {
        plan_network(r, others, true, "now".into())
    }

    #[test]
    fn a_good_request_becomes_a_record() {
        let mut r = req("lan", "10.1.0.0/24");
        r.ipv6 = Some("fd42::/64".into());
        r.vlans = vec![20, 10];
        let rec = plan(&r, &[]).unwrap();
        assert_eq!(rec.name, "lan");
        assert_eq!(rec.ipv6.as_deref(), Some("fd42::/64"));
        assert_eq!(rec.vlans, vec![10, 20], "sorted");
        assert_eq!(rec.vlan_mode, None, "the caller asks the host");
        assert_eq!(
            (rec.created_at.as_str(), rec.description.as_str()),
            ("now", "d")
        );
        assert!(rec.leases.is_empty() && rec.load_balancers.is_empty());
    }

    /// Two names whose segment tags (28 bits of a hash) collide, found by the birthday
    /// paradox (some ten thousand names): the second is refused.
    #[test]
    fn a_name_whose_kernel_names_clash_with_anothers_is_refused() {
        let mut seen = std::collections::HashMap::new();
        let (a, b) = (0..1_000_000)
            .find_map(|i| {
                let name = format!("alpha.n{i}");
                let tag = network(&name, "10.1.0.0/24").tag();
                seen.insert(tag, name.clone()).map(|other| (other, name))
            })
            .expect("a clash within a million names");
        let first = network(&a, "10.1.0.0/24");
        let e = plan(&req(&b, "10.2.0.0/24"), &[first]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Conflict, "{e}");
        assert!(e.message.contains("choose another name"), "{e}");
        assert!(plan(
            &req("alpha.other", "10.2.0.0/24"),
            &[network(&a, "10.1.0.0/24")]
        )
        .is_ok());
    }

    #[test]
    fn bad_requests_say_why() {
        let lan = network("lan", "10.1.0.0/24");
        let invalid = |r: NetworkCreate, want: &str| {
            let e = plan(&r, std::slice::from_ref(&lan)).unwrap_err();
            assert_eq!(e.kind, ErrorKind::Invalid, "{e}");
            assert!(e.message.contains(want), "{want:?} not in {e}");
        };
        invalid(req("a_b", "10.2.0.0/24"), "vbr-NAME");
        invalid(req("abcdefghijkl", "10.2.0.0/24"), "1-11");
        invalid(req("b", "10.2.0.0"), "subnet");
        invalid(req("b", "10.2.0.0/30"), "/29 or larger");
        let mut r = req("b", "10.2.0.0/24");
        r.vni = Some(100);
        invalid(r, "1-4095 are VLAN ids");
        let mut r = req("b", "10.2.0.0/24");
        r.vni = Some(5000);
        invalid(r, "--local");
        let mut r = req("b", "10.2.0.0/24");
        r.peers = vec!["10.0.0.1".into()];
        invalid(r, "for overlays");
        let mut r = req("b", "10.2.0.0/24");
        r.vni = Some(5000);
        r.local = Some("host".into());
        invalid(r, "not an IPv4 address");
        let mut r = req("b", "10.2.0.0/24");
        r.isolated_ports = true;
        r.vlans = vec![10];
        invalid(r, "do not mix");
        let mut r = req("b", "10.2.0.0/24");
        r.vlans = vec![10, 10];
        invalid(r, "twice");
        let mut r = req("b", "10.2.0.0/24");
        r.vlans = vec![4095];
        invalid(r, "1-4094");
        let mut r = req("b", "10.2.0.0/24");
        r.vni = Some(16_777_000);
        r.local = Some("192.0.2.1".into());
        r.vlans = vec![1000];
        invalid(r, "above 16777215");
        let mut r = req("b", "10.2.0.0/24");
        r.vni = Some(5000);
        r.local = Some("192.0.2.1".into());
        r.ipv6 = Some("fd42::/64".into());
        invalid(r, "IPv6 on overlays");
        let mut r = req("b", "10.2.0.0/24");
        r.ipv6 = Some("fd42::/64".into());
        let e = plan_network(&r, &[], false, "now".into()).unwrap_err();
        assert!(e.message.contains("IPv6 is disabled"), "{e}");
    }

    #[test]
    fn an_overlay_leaves_from_an_address_the_host_has() {
        let held = [
            Address4 {
                interface: "lo".into(),
                address: Ipv4Addr::LOCALHOST,
                prefix: 8,
            },
            Address4 {
                interface: "eth0".into(),
                address: "198.51.100.2".parse().unwrap(),
                prefix: 24,
            },
            Address4 {
                interface: "vbr-lan".into(),
                address: "10.42.0.1".parse().unwrap(),
                prefix: 24,
            },
        ];
        check_local("198.51.100.2", &held).unwrap();
        let e = check_local("192.0.2.1", &held).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Invalid);
        assert!(
            e.message
                .contains("192.0.2.1 is not an address of this host")
                && e.message.contains("one of: 198.51.100.2 (eth0)")
                && !e.message.contains("vbr-lan"),
            "{e}"
        );
        assert!(check_local("host", &held).is_err());
    }

    #[test]
    fn conflicts_with_other_networks() {
        let mut lan = network("lan", "10.1.0.0/24");
        lan.ipv6 = Some("fd42::/64".into());
        lan.vni = Some(5000);
        lan.vlans = vec![10];
        let others = [lan];
        let conflict = |r: NetworkCreate, want: &str| {
            let e = plan(&r, &others).unwrap_err();
            assert_eq!(e.kind, ErrorKind::Conflict, "{e}");
            assert!(e.message.contains(want), "{want:?} not in {e}");
        };
        conflict(req("lan", "10.2.0.0/24"), "already exists");
        conflict(req("b", "10.1.0.128/25"), "overlaps network \"lan\"");
        let mut r = req("b", "10.2.0.0/24");
        r.ipv6 = Some("fd42::/64".into());
        conflict(r, "IPv6 prefix fd42::/64 overlaps");
        // Segment 10 of lan rides on VNI 5010.
        let mut r = req("b", "10.2.0.0/24");
        r.vni = Some(5010);
        r.local = Some("192.0.2.1".into());
        conflict(r, "VNI 5010 is taken");
        let mut r = req("b", "10.2.0.0/24");
        r.vni = Some(5005);
        r.local = Some("192.0.2.1".into());
        r.vlans = vec![5];
        conflict(r, "VNI 5010 is taken");
    }
}
