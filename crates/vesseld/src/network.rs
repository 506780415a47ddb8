//! Networks: a bridge (optionally joined to a VXLAN overlay) with IPAM leases kept in the
//! store, DHCP and DNS from dnsmasq, outbound NAT and published ports in nftables, L4 load
//! balancers with health checks, ACLs, VLAN segments and isolated ports. Instances get NICs:
//! veth pairs into containers (plugged right after the container starts, or hot-plugged
//! into a running one), tap devices for VMs, each with optional bandwidth limits. Everything
//! is rebuilt from the store when the daemon starts, and what a crash left half-made (a
//! network created but not recorded, a balancer table, an IFB device of a gone NIC) is
//! removed.
//!
//! The kernel side is `vessel-net`; this service decides names, addresses and what exists.
//! It acts in the daemon's own network namespace.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use vessel_api::{
    Instance, InstanceType, LbBackendStatus, Network, NetworkAclSet, NetworkCreate, NetworkForward,
    NetworkLease, NetworkLoadBalancer, NetworkSegment, NicAttach, NicLimits,
};
use vessel_net::{
    AclAction, BandwidthLimits, DhcpDns, Ipam, LbHealthChecker, Links, MacAddr, NatRules, NetNs,
    NetworkAcl, NicAcl, PortForward, Protocol, RateLimit, StaticLease, Subnet, Upstream, VlanMode,
};

use crate::error::{chain, Error, Result};
use crate::events::Events;
use crate::name::validate_name_within;
use crate::store::{Records, Store};

const NETWORK: &str = "network";
/// The longest network name: `vbr-NAME` must fit in an interface name.
const MAX_NAME: usize = 11;
/// A network being created: recorded before its kernel objects are made, removed once the
/// network itself is recorded. One left at start names objects a crash left behind.
const PENDING: &str = "network-pending";

/// What the store keeps of a network.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct NetworkRecord {
    name: String,
    subnet: String,
    #[serde(default)]
    ipv6: Option<String>,
    #[serde(default)]
    vni: Option<u32>,
    #[serde(default)]
    peers: Vec<String>,
    #[serde(default)]
    local: Option<String>,
    #[serde(default)]
    leases: Vec<NetworkLease>,
    #[serde(default)]
    forwards: Vec<NetworkForward>,
    #[serde(default)]
    acl: String,
    #[serde(default)]
    vlans: Vec<u16>,
    #[serde(default)]
    isolated_ports: bool,
    /// How its segments were built when it was created (`vlan-filtering` or
    /// `bridge-per-vlan`), kept so that a rebuild builds (and a delete finds) the same.
    #[serde(default)]
    vlan_mode: Option<String>,
    #[serde(default)]
    load_balancers: Vec<NetworkLoadBalancer>,
    #[serde(default)]
    description: String,
    created_at: String,
}

impl NetworkRecord {
    fn subnet(&self) -> Result<Subnet> {
        self.subnet
            .parse()
            .map_err(|e| Error::internal(format!("stored subnet {}: {e}", self.subnet)))
    }
    fn bridge(&self) -> String {
        format!("vbr-{}", self.name)
    }
    /// The IPv6 /64 prefix, if the network has one.
    fn subnet6(&self) -> Result<Option<Ipv6Addr>> {
        self.ipv6.as_deref().map(parse_prefix6).transpose()
    }
    fn gateway6(&self) -> Result<Option<Ipv6Addr>> {
        Ok(self.subnet6()?.map(|p| Ipv6Addr::from(u128::from(p) | 1)))
    }
    fn vxlan(&self) -> String {
        format!("vx-{}", self.name)
    }
    fn mtu(&self) -> u32 {
        if self.vni.is_some() {
            1500 - vessel_net::VXLAN_OVERHEAD
        } else {
            1500
        }
    }
    /// The gateway MAC of an overlay: derived from its VNI, so the same on every host
    /// whatever the network is called there.
    fn gateway_mac(&self) -> MacAddr {
        let h = Sha256::digest(format!("vni {:?} gateway", self.vni).as_bytes());
        MacAddr::new([0x0a, 0x56, 0xff, h[0], h[1], h[2]])
    }
    /// 7 hex digits naming this network's per-segment devices (the name itself is too long
    /// for `<name>-v<vid>` within 15 bytes).
    fn tag(&self) -> String {
        hex::encode(Sha256::digest(self.name.as_bytes()))[..7].to_string()
    }
    /// The base bridge of VLAN segments in `mode`.
    fn segment_base(&self, mode: VlanMode) -> String {
        match mode {
            VlanMode::VlanFiltering => self.bridge(),
            VlanMode::BridgePerVlan => format!("vs{}", self.tag()),
        }
    }
    /// The bridge a port on VLAN `vid` belongs to.
    fn segment_bridge(&self, mode: VlanMode, vid: u16) -> String {
        match mode {
            VlanMode::VlanFiltering => self.bridge(),
            VlanMode::BridgePerVlan => format!("vs{}-v{vid}", self.tag()),
        }
    }
    /// The VXLAN device of segment `vid` of an overlay.
    fn segment_vxlan(&self, vid: u16) -> String {
        format!("vy{}-{vid}", self.tag())
    }
    /// Every VNI the network uses: its own and one per segment.
    fn vnis(&self) -> Vec<u32> {
        match self.vni {
            Some(v) => std::iter::once(v)
                .chain(self.vlans.iter().map(|s| v + u32::from(*s)))
                .collect(),
            None => Vec::new(),
        }
    }
    /// A balancer's table name: `<network>_<lb>` (network names have no '_', so no two
    /// networks' balancers can share one).
    fn lb_table(&self, lb: &str) -> String {
        format!("{}_{lb}", self.name)
    }
}

/// Whether a network or any of its NICs has ACL rules.
fn has_acl(rec: &NetworkRecord) -> bool {
    !rec.acl.trim().is_empty() || rec.leases.iter().any(|l| !l.acl.trim().is_empty())
}

/// Parses an IPv6 /64 prefix (`fd42::/64`).
fn parse_prefix6(text: &str) -> Result<Ipv6Addr> {
    let bad = || {
        Error::invalid(format!(
            "IPv6 prefix {text:?}: give a /64 such as fd42:1:2:3::/64 (instances take SLAAC \
             addresses inside it)"
        ))
    };
    let (addr, len) = text.split_once('/').ok_or_else(bad)?;
    let addr: Ipv6Addr = addr.parse().map_err(|_| bad())?;
    if len != "64" {
        return Err(bad());
    }
    if u128::from(addr) & u128::from(u64::MAX) != 0 {
        return Err(Error::invalid(format!(
            "IPv6 prefix {text:?} has host bits set: use {}/64",
            Ipv6Addr::from(u128::from(addr) & !u128::from(u64::MAX))
        )));
    }
    let first = addr.segments()[0];
    if addr.is_multicast() || (first & 0xffc0) == 0xfe80 || addr.is_unspecified() {
        return Err(Error::invalid(format!(
            "IPv6 prefix {text:?} is multicast, link-local or unspecified"
        )));
    }
    Ok(addr)
}

/// The EUI-64 address of `mac` in the /64 `prefix`: what SLAAC gives that NIC.
fn eui64(prefix: Ipv6Addr, mac: MacAddr) -> Ipv6Addr {
    let m = mac.octets();
    let mut o = prefix.octets();
    o[8..16].copy_from_slice(&[m[0] ^ 0x02, m[1], m[2], 0xff, 0xfe, m[3], m[4], m[5]]);
    Ipv6Addr::from(o)
}

/// Parses a rate: bits per second with an optional unit `bit`, `kbit`, `Mbit` or `Gbit`.
fn parse_rate(text: &str) -> Result<RateLimit> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let mult: f64 = match unit.to_ascii_lowercase().as_str() {
        "" | "bit" => 1.0,
        "kbit" => 1e3,
        "mbit" => 1e6,
        "gbit" => 1e9,
        _ => {
            return Err(Error::invalid(format!(
                "rate {text:?}: use a number of bits per second with kbit, Mbit or Gbit, \
                 e.g. 10Mbit"
            )))
        }
    };
    let n: f64 = num
        .parse()
        .map_err(|_| Error::invalid(format!("rate {text:?}: not a number, e.g. 10Mbit")))?;
    let bps = (n * mult) as u64;
    if bps < vessel_net::bandwidth::MIN_RATE {
        return Err(Error::invalid(format!(
            "rate {text:?} is below the minimum of 8kbit"
        )));
    }
    if bps > 100_000_000_000 {
        return Err(Error::invalid(format!(
            "rate {text:?} is above 100Gbit; leave it out for no limit"
        )));
    }
    Ok(RateLimit::new(bps))
}

fn lease_limits(l: &NetworkLease) -> Result<BandwidthLimits> {
    Ok(BandwidthLimits {
        ingress: l.ingress.as_deref().map(parse_rate).transpose()?,
        egress: l.egress.as_deref().map(parse_rate).transpose()?,
    })
}

fn protocol(p: &str) -> Result<Protocol> {
    match p {
        "tcp" => Ok(Protocol::Tcp),
        "udp" => Ok(Protocol::Udp),
        _ => Err(Error::invalid(format!("protocol {p:?}: use tcp or udp"))),
    }
}

/// The network service (cheap to clone).
#[derive(Clone)]
pub struct NetworkService {
    inner: Arc<Inner>,
}

struct Inner {
    networks: Records<NetworkRecord>,
    /// Networks being created (see [`PENDING`]).
    pending: Records<NetworkRecord>,
    events: Events,
    /// `<run>/networks/<name>`: dnsmasq state.
    run: PathBuf,
    busy: Mutex<()>,
    errors: Mutex<BTreeMap<String, String>>,
    /// Health checkers of load balancers, by table name (`<network>-<lb>`).
    checkers: Mutex<BTreeMap<String, LbHealthChecker>>,
    /// How VLAN segments are built here (probed once).
    vlan_mode: std::sync::OnceLock<VlanMode>,
}

fn net_err<E: std::error::Error + 'static>(what: &str) -> impl Fn(&E) -> Error + '_ {
    move |e| Error::internal(format!("{what}: {}", chain(e)))
}

/// Short interface name for an instance's NIC on a network (`prefix` + 8 hex digits).
fn ifname(prefix: &str, instance: &str, network: &str) -> String {
    let h = Sha256::digest(format!("{instance}\0{network}").as_bytes());
    format!("{prefix}{}", &hex::encode(h)[..8])
}

/// A MAC derived from the instance and network (locally administered, unicast).
fn derived_mac(instance: &str, network: &str, salt: u8) -> MacAddr {
    let h = Sha256::digest(format!("{instance}\0{network}\0{salt}").as_bytes());
    MacAddr::new([0x0a, 0x56, h[0], h[1], h[2], h[3]])
}

impl NetworkService {
    /// A service keeping dnsmasq state under `run`.
    pub fn new(store: Arc<dyn Store>, events: Events, run: PathBuf) -> Self {
        Self {
            inner: Arc::new(Inner {
                networks: Records::new(store.clone(), NETWORK),
                pending: Records::new(store, PENDING),
                events,
                run,
                busy: Mutex::default(),
                errors: Mutex::default(),
                checkers: Mutex::default(),
                vlan_mode: std::sync::OnceLock::new(),
            }),
        }
    }

    fn busy(&self) -> std::sync::MutexGuard<'_, ()> {
        self.inner.busy.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn record(&self, name: &str) -> Result<NetworkRecord> {
        self.inner.networks.get(name)?.ok_or_else(|| {
            Error::not_found(format!(
                "network {name:?} not found; see `vessel network list`"
            ))
        })
    }

    fn records(&self) -> Result<Vec<NetworkRecord>> {
        Ok(self.inner.networks.list()?)
    }

    fn put(&self, r: &NetworkRecord) -> Result<()> {
        Ok(self.inner.networks.put(&r.name, r)?)
    }

    fn view(&self, r: &NetworkRecord) -> Network {
        let error = self
            .inner
            .errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&r.name)
            .cloned();
        let gateway = r
            .subnet()
            .map(|s| s.gateway().to_string())
            .unwrap_or_default();
        let mode = match (&r.vlan_mode, r.vlans.is_empty()) {
            (None, true) => VlanMode::BridgePerVlan,
            _ => self.vlan_mode(r),
        };
        let checkers = self
            .inner
            .checkers
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let load_balancers = r
            .load_balancers
            .iter()
            .map(|lb| {
                let health = checkers.get(&r.lb_table(&lb.name)).map(|c| c.health());
                let mut lb = lb.clone();
                lb.status = lb
                    .backends
                    .iter()
                    .map(|b| {
                        let address = r
                            .leases
                            .iter()
                            .find(|l| &l.instance == b)
                            .map(|l| l.ip.clone())
                            .unwrap_or_default();
                        let ip: Option<Ipv4Addr> = address.parse().ok();
                        let state = health.as_ref().and_then(|h| {
                            h.iter()
                                .find(|(k, _)| Some(k.address) == ip)
                                .map(|(_, v)| v.up)
                        });
                        LbBackendStatus {
                            instance: b.clone(),
                            address,
                            health: match state {
                                Some(true) => "up",
                                Some(false) => "down",
                                None => "unknown",
                            }
                            .into(),
                        }
                    })
                    .collect();
                lb
            })
            .collect();
        drop(checkers);
        Network {
            name: r.name.clone(),
            network_type: if r.vni.is_some() { "vxlan" } else { "bridge" }.into(),
            subnet: r.subnet.clone(),
            gateway,
            ipv6: r.ipv6.clone(),
            gateway6: r.gateway6().ok().flatten().map(|g| g.to_string()),
            bridge: r.bridge(),
            vni: r.vni,
            peers: r.peers.clone(),
            mtu: r.mtu(),
            leases: r.leases.clone(),
            forwards: r.forwards.clone(),
            acl: r.acl.clone(),
            load_balancers,
            segments: r
                .vlans
                .iter()
                .map(|v| NetworkSegment {
                    vlan: *v,
                    bridge: r.segment_bridge(mode, *v),
                    vni: r.vni.map(|n| n + u32::from(*v)),
                })
                .collect(),
            // Only a network with segments has a mode (probing the kernel on a read would
            // make a throw-away bridge).
            vlan_mode: match (r.vlans.is_empty(), mode) {
                (true, _) => "none",
                (false, VlanMode::VlanFiltering) => "vlan-filtering",
                (false, VlanMode::BridgePerVlan) => "bridge-per-vlan",
            }
            .into(),
            isolated_ports: r.isolated_ports,
            status: if error.is_some() { "failed" } else { "ok" }.into(),
            error,
            description: r.description.clone(),
            created_at: r.created_at.clone(),
        }
    }

    /// How this host builds VLAN segments of local networks: VLAN filtering where the
    /// kernel has it (probed once on a throw-away bridge), a bridge per VLAN otherwise.
    fn host_vlan_mode(&self) -> VlanMode {
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
    fn vlan_mode(&self, rec: &NetworkRecord) -> VlanMode {
        match rec.vlan_mode.as_deref() {
            Some("vlan-filtering") => VlanMode::VlanFiltering,
            Some(_) => VlanMode::BridgePerVlan,
            None if rec.vni.is_some() => VlanMode::BridgePerVlan,
            None => self.host_vlan_mode(),
        }
    }

    /// Every network.
    pub fn list(&self) -> Result<Vec<Network>> {
        Ok(self.records()?.iter().map(|r| self.view(r)).collect())
    }

    /// One network.
    pub fn get(&self, name: &str) -> Result<Network> {
        Ok(self.view(&self.record(name)?))
    }

    /// Creates a network and its kernel objects.
    pub fn create(&self, req: NetworkCreate) -> Result<Network> {
        let _g = self.busy();
        validate_name_within("network", &req.name, MAX_NAME)
            .map_err(|e| Error::invalid(format!("{} (it names the bridge vbr-NAME)", e.message)))?;
        if self.record(&req.name).is_ok() {
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
        let others: Vec<(String, Subnet)> = self
            .records()?
            .iter()
            .filter_map(|r| r.subnet().ok().map(|s| (r.name.clone(), s)))
            .collect();
        if let Some((n, s)) = others.iter().find(|(_, s)| s.overlaps(&subnet)) {
            return Err(Error::conflict(format!(
                "subnet {subnet} overlaps network {n:?} ({s})"
            )));
        }
        if let Some(text) = &req.ipv6 {
            let prefix = parse_prefix6(text)?;
            if !std::path::Path::new("/proc/sys/net/ipv6").exists() {
                return Err(Error::invalid(
                    "IPv6 is disabled on this host (no /proc/sys/net/ipv6); leave out --ipv6",
                ));
            }
            for r in self.records()? {
                if r.subnet6().ok().flatten() == Some(prefix) {
                    return Err(Error::conflict(format!(
                        "IPv6 prefix {prefix}/64 overlaps network {:?}",
                        r.name
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
            description: req.description,
            created_at: crate::clock::now(),
        };
        let mut rec = rec;
        if !rec.vlans.is_empty() {
            rec.vlan_mode = Some(
                match self.vlan_mode(&rec) {
                    VlanMode::VlanFiltering => "vlan-filtering",
                    VlanMode::BridgePerVlan => "bridge-per-vlan",
                }
                .into(),
            );
        }
        let ours = rec.vnis();
        for o in self.records()? {
            if let Some(v) = o.vnis().iter().find(|v| ours.contains(v)) {
                return Err(Error::conflict(format!(
                    "VNI {v} is taken by network {:?} (a network's segment V uses VNI vni+V)",
                    o.name
                )));
            }
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

    /// Creates (or brings back) the bridge, overlay, NAT, ACL and dnsmasq of a network.
    fn realize(&self, rec: &NetworkRecord) -> Result<()> {
        let ns = NetNs::current();
        let subnet = rec.subnet()?;
        let mut links = Links::open(&ns).map_err(|e| net_err("netlink")(&e))?;
        let bridge = rec.bridge();
        let exists = links
            .find(&bridge)
            .map_err(|e| net_err("netlink")(&e))?
            .is_some();
        if !exists {
            vessel_net::create_bridge(
                &mut links,
                &vessel_net::BridgeSpec {
                    name: bridge.clone(),
                    subnet,
                    mtu: Some(rec.mtu()),
                },
            )
            .map_err(|e| net_err("creating the bridge")(&e))?;
        }
        if let Some(gw6) = rec.gateway6()? {
            links
                .add_address6(&bridge, gw6, 64)
                .map_err(|e| net_err("the bridge's IPv6 address")(&e))?;
            std::fs::write("/proc/sys/net/ipv6/conf/all/forwarding", "1")
                .map_err(|e| Error::internal(format!("turning on IPv6 forwarding: {e}")))?;
        }
        if let Some(vni) = rec.vni {
            // Every host of an overlay holds the same gateway address; with the same MAC too
            // (an anycast gateway), an instance's ARP answer is the same whichever host sends
            // it, and its frames to the gateway stay on its own host's bridge.
            links
                .set_mac(&bridge, rec.gateway_mac())
                .map_err(|e| net_err("setting the gateway MAC")(&e))?;
            ensure_vxlan(&mut links, rec, &rec.vxlan(), vni, &bridge)?;
        }
        let mode = self.vlan_mode(rec);
        for &vid in &rec.vlans {
            let seg = vessel_net::create_segment(&mut links, mode, &rec.segment_base(mode), vid)
                .map_err(|e| net_err(&format!("creating VLAN segment {vid}"))(&e))?;
            if mode == VlanMode::BridgePerVlan {
                links
                    .set_mtu(&seg, rec.mtu())
                    .map_err(|e| net_err("segment MTU")(&e))?;
            }
            if let Some(vni) = rec.vni {
                let dev = rec.segment_vxlan(vid);
                ensure_vxlan(&mut links, rec, &dev, vni + u32::from(vid), &seg)?;
            }
        }
        // Host ends left from before (a daemon restart) go back on their bridge, with their
        // isolation and limits.
        for l in &rec.leases {
            if links
                .find(&l.host_interface)
                .map_err(|e| net_err("netlink")(&e))?
                .is_some()
            {
                let home = match l.vlan {
                    Some(v) => rec.segment_bridge(self.vlan_mode(rec), v),
                    None => bridge.clone(),
                };
                let _ = links.set_master(&l.host_interface, Some(&home));
                let _ = links.set_up(&l.host_interface, true);
                if let Err(e) = self.port_setup(&mut links, rec, l) {
                    tracing::warn!(nic = %l.host_interface, error = %e.message, "NIC settings not restored");
                }
            }
        }
        vessel_net::set_ipv4_forwarding(&ns, true).map_err(|e| net_err("ip_forward")(&e))?;
        self.apply_rules(rec)?;
        self.apply_dnsmasq(rec)?;
        self.prune_lb_tables(rec);
        let mut first_err = None;
        for lb in &rec.load_balancers {
            if let Err(e) = self.start_lb(rec, lb) {
                tracing::error!(lb = %lb.name, error = %e.message, "balancer not started");
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// What a NIC's host port needs beyond its bridge: its VLAN segment, isolation and
    /// bandwidth limits.
    fn port_setup(&self, links: &mut Links, rec: &NetworkRecord, l: &NetworkLease) -> Result<()> {
        if let Some(vid) = l.vlan {
            let mode = self.vlan_mode(rec);
            vessel_net::attach_to_segment(
                links,
                mode,
                &rec.segment_base(mode),
                &l.host_interface,
                vid,
            )
            .map_err(|e| net_err(&format!("putting {} on VLAN {vid}", l.instance))(&e))?;
        }
        if rec.isolated_ports {
            vessel_net::set_port_isolated(links, &l.host_interface, true)
                .map_err(|e| net_err("isolating the port")(&e))?;
        }
        let limits = lease_limits(l)?;
        if limits != BandwidthLimits::default() {
            vessel_net::set_bandwidth(&NetNs::current(), &l.host_interface, &limits)
                .map_err(|e| net_err("bandwidth limits")(&e))?;
        }
        Ok(())
    }

    fn apply_rules(&self, rec: &NetworkRecord) -> Result<()> {
        let ns = NetNs::current();
        let subnet = rec.subnet()?;
        let mut forwards = Vec::new();
        for f in &rec.forwards {
            let target = rec
                .leases
                .iter()
                .find(|l| l.instance == f.instance)
                .ok_or_else(|| {
                    Error::invalid(format!("{} has no NIC on {}", f.instance, rec.name))
                })?;
            forwards.push(PortForward {
                protocol: if f.protocol == "udp" {
                    Protocol::Udp
                } else {
                    Protocol::Tcp
                },
                listen_address: f
                    .listen_address
                    .as_deref()
                    .map(|a| a.parse().map_err(|_| Error::invalid("bad listen address")))
                    .transpose()?,
                listen_port: f.listen_port,
                target: target
                    .ip
                    .parse()
                    .map_err(|_| Error::internal("stored lease address"))?,
                target_port: f.target_port,
            });
        }
        NatRules {
            network: rec.name.clone(),
            bridge: rec.bridge(),
            subnet,
            forwards,
            subnet6: rec.subnet6()?.map(|p| (p, 64)),
        }
        .apply(&ns)
        .map_err(|e| net_err("nftables")(&e))?;
        self.apply_acl(rec)
    }

    /// Applies the network's rules and its NICs' own in one transaction; rules that do not
    /// parse or apply leave the previous ones in force.
    fn apply_acl(&self, rec: &NetworkRecord) -> Result<()> {
        let ns = NetNs::current();
        if !has_acl(rec) {
            let _ = vessel_net::remove_acl(&ns, &rec.name);
            return Ok(());
        }
        if rec.ipv6.is_some() {
            return Err(Error::invalid(format!(
                "network {:?} has IPv6, and ACLs filter IPv4 only: IPv6 traffic would pass \
                 them; use ACLs on IPv4-only networks",
                rec.name
            )));
        }
        let rules = vessel_net::parse_rules(&rec.acl)
            .map_err(|e| Error::invalid(format!("ACL: {}", chain(&e))))?;
        let mut sets: BTreeMap<String, Vec<vessel_net::Cidr>> = BTreeMap::new();
        for l in &rec.leases {
            if let Ok(addr) = l.ip.parse::<Ipv4Addr>() {
                sets.entry(l.instance.clone())
                    .or_default()
                    .push(vessel_net::Cidr { addr, prefix: 32 });
            }
        }
        let mut nics = Vec::new();
        for l in &rec.leases {
            nics.push(NicAcl {
                name: l.host_interface.clone(),
                rules: vessel_net::parse_rules(&l.acl).map_err(|e| {
                    Error::invalid(format!("ACL of {}'s NIC: {}", l.instance, chain(&e)))
                })?,
            });
        }
        // `@name` of an instance without a NIC here (detached, or not yet attached) matches
        // nothing rather than failing every later change.
        for r in rules.iter().chain(nics.iter().flat_map(|n| n.rules.iter())) {
            for m in r.from.iter().chain(r.to.iter()) {
                if let vessel_net::AddrMatch::Set(name) = m {
                    sets.entry(name.clone()).or_default();
                }
            }
        }
        let acl = NetworkAcl {
            network: rec.name.clone(),
            gateway: rec.subnet().ok().map(|s| s.gateway()),
            default_ingress: AclAction::Allow,
            default_egress: AclAction::Allow,
            rules,
            nics,
            sets,
        };
        acl.apply(&ns, vessel_net::probe_acl_mode(&ns))
            .map_err(|e| Error::invalid(format!("ACL: {}", chain(&e))))
    }

    fn apply_dnsmasq(&self, rec: &NetworkRecord) -> Result<()> {
        let subnet = rec.subnet()?;
        let mut static_leases = Vec::new();
        // NICs on VLAN segments are outside the gateway's broadcast domain.
        for l in rec.leases.iter().filter(|l| l.vlan.is_none()) {
            static_leases.push(StaticLease {
                mac: l
                    .mac
                    .parse()
                    .map_err(|_| Error::internal("stored lease MAC"))?,
                ip: l
                    .ip
                    .parse()
                    .map_err(|_| Error::internal("stored lease address"))?,
                name: Some(l.instance.clone()),
                ipv6: l.ipv6.as_deref().and_then(|a| a.parse().ok()),
            });
        }
        DhcpDns {
            bridge: rec.bridge(),
            subnet,
            dynamic_range: None,
            lease_secs: 3600,
            domain: format!("{}.vessel", rec.name),
            static_leases,
            upstream: Upstream::None,
            ipv6_gateway: rec.gateway6()?,
            state_dir: self.inner.run.join(&rec.name),
        }
        .apply(&NetNs::current())
        .map_err(|e| net_err("dnsmasq")(&e))?;
        Ok(())
    }

    fn teardown(&self, rec: &NetworkRecord) {
        let ns = NetNs::current();
        for lb in &rec.load_balancers {
            self.stop_lb(rec, &lb.name);
        }
        self.prune_lb_tables(&NetworkRecord {
            load_balancers: Vec::new(),
            ..rec.clone()
        });
        vessel_net::stop_dnsmasq(&self.inner.run.join(&rec.name));
        let _ = std::fs::remove_dir_all(self.inner.run.join(&rec.name));
        let _ = vessel_net::remove_table(&ns, &rec.name);
        let _ = vessel_net::remove_acl(&ns, &rec.name);
        if let Ok(mut links) = Links::open(&ns) {
            let mode = self.vlan_mode(rec);
            for &vid in &rec.vlans {
                let _ = links.delete(&rec.segment_vxlan(vid));
                let _ = vessel_net::remove_segment(&mut links, mode, &rec.segment_base(mode), vid);
            }
            let _ = links.delete(&rec.vxlan());
            let _ = links.delete(&rec.bridge());
        }
    }

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

    /// Gives an instance a NIC on a network. `pid` is the init of a running container: the
    /// NIC is plugged into its namespace at once (hot add); otherwise it is plugged when the
    /// instance starts. The caller holds the instance's lock and has checked its state.
    pub fn attach(
        &self,
        network: &str,
        req: NicAttach,
        inst: &Instance,
        pid: Option<i32>,
    ) -> Result<Network> {
        let _g = self.busy();
        let mut rec = self.record(network)?;
        if rec.leases.iter().any(|l| l.instance == req.instance) {
            return Err(Error::conflict(format!(
                "{:?} already has a NIC on {network:?}",
                req.instance
            )));
        }
        if let Some(v) = req.vlan {
            if !rec.vlans.contains(&v) {
                return Err(Error::invalid(format!(
                    "network {network:?} has no VLAN segment {v} (it has: {}); segments are \
                     set with --vlan when the network is created",
                    if rec.vlans.is_empty() {
                        "none".to_string()
                    } else {
                        rec.vlans
                            .iter()
                            .map(u16::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                )));
            }
        }
        for r in req.ingress.iter().chain(req.egress.iter()) {
            parse_rate(r)?;
        }
        let subnet = rec.subnet()?;
        let mut ipam = Ipam::new(subnet);
        for l in &rec.leases {
            if let Ok(ip) = l.ip.parse() {
                let _ = ipam.reserve(ip);
            }
        }
        let ip = match &req.ip {
            Some(s) => {
                let ip: Ipv4Addr = s
                    .parse()
                    .map_err(|_| Error::invalid(format!("{s:?} is not an IPv4 address")))?;
                if !subnet.contains(ip) {
                    return Err(Error::invalid(format!(
                        "{ip} is outside {network:?}'s subnet {subnet}"
                    )));
                }
                ipam.reserve(ip)
                    .map_err(|e| Error::conflict(format!("{ip}: {e}")))?;
                ip
            }
            None => ipam
                .allocate()
                .map_err(|e| Error::conflict(format!("network {network:?}: {e}")))?,
        };
        let all = self.records()?;
        let all_macs: Vec<String> = all
            .iter()
            .flat_map(|r| r.leases.iter())
            .map(|l| l.mac.to_lowercase())
            .collect();
        let mac = match &req.mac {
            Some(m) => {
                let mac: MacAddr = m
                    .parse()
                    .map_err(|e| Error::invalid(format!("MAC {m:?}: {e}")))?;
                if mac.is_multicast() {
                    return Err(Error::invalid(format!("MAC {mac} is a multicast address")));
                }
                if all_macs.contains(&mac.to_string().to_lowercase()) {
                    return Err(Error::conflict(format!("MAC {mac} is already in use")));
                }
                mac
            }
            None => (0u8..=255)
                .map(|salt| derived_mac(&req.instance, network, salt))
                .find(|m| !all_macs.contains(&m.to_string().to_lowercase()))
                .ok_or_else(|| Error::conflict("no free MAC address"))?,
        };
        // The lowest ethN the instance does not use yet.
        let used: Vec<String> = all
            .iter()
            .flat_map(|r| r.leases.iter())
            .filter(|l| l.instance == req.instance)
            .map(|l| l.interface.clone())
            .collect();
        let interface = (0..)
            .map(|i| format!("eth{i}"))
            .find(|n| !used.contains(n))
            .unwrap_or_default();
        let prefix = if inst.instance_type == InstanceType::Vm {
            "vt"
        } else {
            "vh"
        };
        let lease = NetworkLease {
            instance: req.instance.clone(),
            interface,
            mac: mac.to_string(),
            ip: ip.to_string(),
            ipv6: rec.subnet6()?.map(|p| eui64(p, mac).to_string()),
            host_interface: ifname(prefix, &req.instance, network),
            vlan: req.vlan,
            ingress: req.ingress.clone(),
            egress: req.egress.clone(),
            acl: String::new(),
        };
        if let Some(pid) = pid {
            let ns = NetNs::from_pid(pid as u32).map_err(|e| net_err("instance namespace")(&e))?;
            let first_routed = !all
                .iter()
                .flat_map(|r| r.leases.iter())
                .any(|l| l.instance == req.instance && l.vlan.is_none());
            self.plug_one(&rec, &lease, &ns, first_routed)?;
        }
        rec.leases.push(lease);
        // A network with rules re-applies them (the new NIC joins the filtered ports and its
        // address the `@NAME` sets); one without has no table to touch.
        let acl = if has_acl(&rec) {
            self.apply_acl(&rec)
        } else {
            Ok(())
        };
        let saved = acl
            .and_then(|()| self.apply_dnsmasq(&rec))
            .and_then(|()| self.put(&rec));
        if let Err(e) = saved {
            if pid.is_some() {
                self.unplug(&rec.leases[rec.leases.len() - 1]);
            }
            return Err(e);
        }
        self.inner
            .events
            .lifecycle("network-nic-attached", &format!("/1.0/networks/{network}"));
        Ok(self.view(&rec))
    }

    /// Removes an instance's NIC from a network (a running container's at once). The caller
    /// has checked the instance's state.
    pub fn detach(&self, network: &str, instance: &str) -> Result<Network> {
        let _g = self.busy();
        let mut rec = self.record(network)?;
        let Some(lease) = rec.leases.iter().find(|l| l.instance == instance).cloned() else {
            return Err(Error::not_found(format!(
                "{instance:?} has no NIC on {network:?}"
            )));
        };
        rec.forwards.retain(|f| f.instance != instance);
        rec.leases.retain(|l| l.instance != instance);
        let mut changed = Vec::new();
        for lb in &mut rec.load_balancers {
            let before = lb.backends.len();
            lb.backends.retain(|b| b != instance);
            if lb.backends.len() != before {
                changed.push(lb.clone());
            }
        }
        // What can fail comes first; the NIC goes once the rules no longer name it.
        self.apply_rules(&rec)?;
        self.apply_dnsmasq(&rec)?;
        self.put(&rec)?;
        self.unplug(&lease);
        for lb in &changed {
            if let Err(e) = self.start_lb(&rec, lb) {
                tracing::warn!(lb = %lb.name, error = %e.message, "balancer not updated");
            }
        }
        self.inner
            .events
            .lifecycle("network-nic-detached", &format!("/1.0/networks/{network}"));
        Ok(self.view(&rec))
    }

    /// Removes a NIC's host end (a veth's instance end goes with it) and its IFB device.
    fn unplug(&self, lease: &NetworkLease) {
        let ns = NetNs::current();
        if let Ok(mut links) = Links::open(&ns) {
            if links.find(&lease.host_interface).ok().flatten().is_some() {
                let _ = vessel_net::clear_bandwidth(&ns, &lease.host_interface);
                let _ = links.delete(&lease.host_interface);
            }
        }
    }

    /// Changes a NIC's bandwidth limits; applied at once when its host end exists.
    pub fn set_limits(&self, network: &str, instance: &str, req: NicLimits) -> Result<Network> {
        let _g = self.busy();
        let mut rec = self.record(network)?;
        let Some(i) = rec.leases.iter().position(|l| l.instance == instance) else {
            return Err(Error::not_found(format!(
                "{instance:?} has no NIC on {network:?}; attach it first"
            )));
        };
        let mut lease = rec.leases[i].clone();
        lease.ingress = req.ingress;
        lease.egress = req.egress;
        let limits = lease_limits(&lease)?;
        let ns = NetNs::current();
        let live = Links::open(&ns)
            .map_err(|e| net_err("netlink")(&e))?
            .find(&lease.host_interface)
            .map_err(|e| net_err("netlink")(&e))?
            .is_some();
        if live {
            vessel_net::set_bandwidth(&ns, &lease.host_interface, &limits)
                .map_err(|e| net_err("bandwidth limits")(&e))?;
        }
        rec.leases[i] = lease;
        self.put(&rec)?;
        Ok(self.view(&rec))
    }

    /// An instance is gone: its NICs go.
    pub fn instance_deleted(&self, instance: &str) -> Result<()> {
        for rec in self.records()? {
            if rec.leases.iter().any(|l| l.instance == instance) {
                self.detach(&rec.name, instance)?;
            }
        }
        Ok(())
    }

    /// Plugs a started container's NICs into its network namespace (the init's `pid`).
    pub fn plug_container(&self, instance: &str, pid: i32) -> Result<()> {
        let _g = self.busy();
        let mut nics: Vec<(NetworkRecord, NetworkLease)> = self
            .records()?
            .into_iter()
            .flat_map(|r| {
                r.leases
                    .iter()
                    .filter(|l| l.instance == instance)
                    .cloned()
                    .map(|l| (r.clone(), l))
                    .collect::<Vec<_>>()
            })
            .collect();
        prune_ifbs();
        if nics.is_empty() {
            return Ok(());
        }
        nics.sort_by_key(|(_, l)| l.interface.trim_start_matches("eth").parse::<u32>().ok());
        let ns = NetNs::from_pid(pid as u32).map_err(|e| net_err("instance namespace")(&e))?;
        let mut routed = false;
        for (rec, l) in nics {
            self.plug_one(&rec, &l, &ns, !routed)?;
            routed |= l.vlan.is_none();
        }
        Ok(())
    }

    /// Plugs one NIC into the namespace `ns`, and sets up its port. With `first_routed` (the
    /// instance has no NIC on a gateway's segment yet) a NIC off any VLAN segment also gets
    /// the default routes through the network's gateway; a segment NIC never does.
    fn plug_one(
        &self,
        rec: &NetworkRecord,
        l: &NetworkLease,
        ns: &NetNs,
        first_routed: bool,
    ) -> Result<()> {
        let gateway = first_routed && l.vlan.is_none();
        let subnet = rec.subnet()?;
        let mut host = Links::open(&NetNs::current()).map_err(|e| net_err("netlink")(&e))?;
        // A host end left from an earlier run of the instance goes first.
        if host.find(&l.host_interface).ok().flatten().is_some() {
            self.unplug(l);
        }
        let mode = self.vlan_mode(rec);
        vessel_net::plug_veth(
            &mut host,
            &vessel_net::VethNic {
                host_name: l.host_interface.clone(),
                bridge: match l.vlan {
                    Some(v) => rec.segment_bridge(mode, v),
                    None => rec.bridge(),
                },
                instance_ns: ns,
                instance_name: l.interface.clone(),
                mac: l.mac.parse().ok(),
                address: Some((
                    l.ip.parse()
                        .map_err(|_| Error::internal("stored lease address"))?,
                    subnet.prefix(),
                )),
                gateway: gateway.then(|| subnet.gateway()),
                mtu: Some(rec.mtu()),
            },
        )
        .map_err(|e| net_err(&format!("plugging {} into {}", l.instance, rec.name))(&e))?;
        let v6 = (|| -> Result<()> {
            if let Some(addr) = l.ipv6.as_deref().and_then(|a| a.parse().ok()) {
                let mut inner = Links::open(ns).map_err(|e| net_err("netlink")(&e))?;
                inner
                    .add_address6(&l.interface, addr, 64)
                    .map_err(|e| net_err("the NIC's IPv6 address")(&e))?;
                if let (true, Some(gw6)) = (gateway, rec.gateway6()?) {
                    inner
                        .add_default_route6(gw6)
                        .map_err(|e| net_err("the IPv6 default route")(&e))?;
                }
            }
            Ok(())
        })();
        if let Err(e) = v6.and_then(|()| self.port_setup(&mut host, rec, l)) {
            self.unplug(l);
            return Err(e);
        }
        Ok(())
    }

    /// Tap devices (created here, owned by QEMU's user) and MACs for a VM's NICs.
    pub fn vm_nics(&self, instance: &str) -> Result<Vec<vessel_vm::Nic>> {
        let _g = self.busy();
        let mut out = Vec::new();
        for rec in self.records()? {
            for l in rec.leases.iter().filter(|l| l.instance == instance) {
                let ns = NetNs::current();
                self.unplug(l);
                vessel_net::create_tap(
                    &ns,
                    &vessel_net::TapSpec {
                        name: l.host_interface.clone(),
                        owner: Some(65534),
                        group: None,
                        vnet_hdr: true,
                        multi_queue: false,
                        mac: None,
                        mtu: Some(rec.mtu()),
                        bridge: Some(rec.bridge()),
                    },
                )
                .map_err(|e| net_err("creating the tap device")(&e))?;
                let mut links = Links::open(&ns).map_err(|e| net_err("netlink")(&e))?;
                if let Err(e) = self.port_setup(&mut links, &rec, l) {
                    self.unplug(l);
                    return Err(e);
                }
                out.push(vessel_vm::Nic {
                    backend: vessel_vm::NicBackend::Tap {
                        ifname: l.host_interface.clone(),
                    },
                    mac: Some(l.mac.clone()),
                });
            }
        }
        Ok(out)
    }

    /// Publishes a port of an instance on the network.
    pub fn forward_add(&self, network: &str, f: NetworkForward) -> Result<Network> {
        let _g = self.busy();
        let mut rec = self.record(network)?;
        if !matches!(f.protocol.as_str(), "tcp" | "udp") {
            return Err(Error::invalid(format!(
                "protocol {:?}: use tcp or udp",
                f.protocol
            )));
        }
        if f.listen_port == 0 || f.target_port == 0 {
            return Err(Error::invalid("ports must be 1-65535"));
        }
        match rec.leases.iter().find(|l| l.instance == f.instance) {
            None => {
                return Err(Error::invalid(format!(
                    "{:?} has no NIC on {network:?}; attach it first",
                    f.instance
                )))
            }
            Some(l) if l.vlan.is_some() => {
                return Err(Error::invalid(format!(
                    "{:?} is on a VLAN segment, which the gateway does not reach",
                    f.instance
                )))
            }
            Some(_) => {}
        }
        for other in self.records()? {
            if let Some(lb) = other.load_balancers.iter().find(|lb| {
                lb.ports
                    .iter()
                    .any(|p| p.protocol == f.protocol && p.listen_port == f.listen_port)
            }) {
                return Err(Error::conflict(format!(
                    "{} port {} is load balancer {:?}'s on {:?}",
                    f.protocol, f.listen_port, lb.name, other.name
                )));
            }
        }
        if rec
            .forwards
            .iter()
            .any(|o| o.protocol == f.protocol && o.listen_port == f.listen_port)
        {
            return Err(Error::conflict(format!(
                "{} port {} is already forwarded",
                f.protocol, f.listen_port
            )));
        }
        rec.forwards.push(f);
        self.apply_rules(&rec)?;
        self.put(&rec)?;
        Ok(self.view(&rec))
    }

    /// Removes a published port.
    pub fn forward_delete(&self, network: &str, protocol: &str, port: u16) -> Result<Network> {
        let _g = self.busy();
        let mut rec = self.record(network)?;
        let before = rec.forwards.len();
        rec.forwards
            .retain(|f| !(f.protocol == protocol && f.listen_port == port));
        if rec.forwards.len() == before {
            return Err(Error::not_found(format!(
                "no {protocol} forward of port {port} on {network:?}"
            )));
        }
        self.apply_rules(&rec)?;
        self.put(&rec)?;
        Ok(self.view(&rec))
    }

    /// Replaces a network's ACL; a rule set that does not parse or apply leaves the old one.
    pub fn acl_set(&self, network: &str, req: NetworkAclSet) -> Result<Network> {
        let _g = self.busy();
        let mut rec = self.record(network)?;
        rec.acl = req.rules;
        self.apply_acl(&rec)?;
        self.put(&rec)?;
        Ok(self.view(&rec))
    }

    /// Replaces the rules of one NIC (checked before the network's); rules that do not
    /// parse or apply leave the old ones.
    pub fn nic_acl_set(
        &self,
        network: &str,
        instance: &str,
        req: NetworkAclSet,
    ) -> Result<Network> {
        let _g = self.busy();
        let mut rec = self.record(network)?;
        let Some(l) = rec.leases.iter_mut().find(|l| l.instance == instance) else {
            return Err(Error::not_found(format!(
                "{instance:?} has no NIC on {network:?}; attach it first"
            )));
        };
        l.acl = req.rules;
        self.apply_acl(&rec)?;
        self.put(&rec)?;
        Ok(self.view(&rec))
    }

    /// Adds a load balancer: its table applied with the backends that answer a first probe,
    /// then kept in step with their health.
    pub fn lb_add(&self, network: &str, mut req: NetworkLoadBalancer) -> Result<Network> {
        let _g = self.busy();
        let mut rec = self.record(network)?;
        let ok = (1..=20).contains(&req.name.len())
            && req
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !ok {
            return Err(Error::invalid(format!(
                "invalid load balancer name {:?}: use 1-20 letters, digits, '-' and '_'",
                req.name
            )));
        }
        if rec.load_balancers.iter().any(|l| l.name == req.name) {
            return Err(Error::conflict(format!(
                "network {network:?} already has a load balancer {:?}",
                req.name
            )));
        }
        let address: Ipv4Addr = req.address.parse().map_err(|_| {
            Error::invalid(format!("address {:?} is not an IPv4 address", req.address))
        })?;
        if address.is_unspecified() || address.is_broadcast() || address.is_multicast() {
            return Err(Error::invalid(format!(
                "address {address} cannot be a balancer's: give a unicast address of this host"
            )));
        }
        let hc = &req.health_check;
        if hc.interval_ms > 60_000 || hc.timeout_ms > 10_000 {
            return Err(Error::invalid(
                "health checks run at most every 60000 ms with a timeout of at most 10000 ms",
            ));
        }
        if req.ports.is_empty() {
            return Err(Error::invalid("a load balancer needs at least one port"));
        }
        if req.backends.is_empty() {
            return Err(Error::invalid("a load balancer needs at least one backend"));
        }
        for p in &req.ports {
            protocol(&p.protocol)?;
            if p.listen_port == 0 || p.target_port == 0 {
                return Err(Error::invalid("ports must be 1-65535"));
            }
        }
        let mut seen = Vec::new();
        for b in &req.backends {
            if seen.contains(&b) {
                return Err(Error::invalid(format!("backend {b:?} is listed twice")));
            }
            seen.push(b);
            match rec.leases.iter().find(|l| &l.instance == b) {
                None => {
                    return Err(Error::invalid(format!(
                        "backend {b:?} has no NIC on {network:?}; attach it first"
                    )))
                }
                Some(l) if l.vlan.is_some() => {
                    return Err(Error::invalid(format!(
                        "backend {b:?} is on a VLAN segment, which the gateway does not reach"
                    )))
                }
                Some(_) => {}
            }
        }
        for other in self.records()? {
            for lb in &other.load_balancers {
                let same_addr = lb.address.parse::<Ipv4Addr>().ok() == Some(address);
                for p in &req.ports {
                    if same_addr
                        && lb
                            .ports
                            .iter()
                            .any(|o| o.protocol == p.protocol && o.listen_port == p.listen_port)
                    {
                        return Err(Error::conflict(format!(
                            "{address} {} port {} is taken by load balancer {:?} of {:?}",
                            p.protocol, p.listen_port, lb.name, other.name
                        )));
                    }
                }
            }
            for f in &other.forwards {
                if req
                    .ports
                    .iter()
                    .any(|p| p.protocol == f.protocol && p.listen_port == f.listen_port)
                {
                    return Err(Error::conflict(format!(
                        "{} port {} is a forward of {:?}",
                        f.protocol, f.listen_port, other.name
                    )));
                }
            }
        }
        req.status.clear();
        self.start_lb(&rec, &req)?;
        rec.load_balancers.push(req);
        if let Err(e) = self.put(&rec) {
            let name = rec.load_balancers.pop().map(|l| l.name).unwrap_or_default();
            self.stop_lb(&rec, &name);
            return Err(e);
        }
        Ok(self.view(&rec))
    }

    /// Removes a load balancer and its table.
    pub fn lb_delete(&self, network: &str, name: &str) -> Result<Network> {
        let _g = self.busy();
        let mut rec = self.record(network)?;
        let before = rec.load_balancers.len();
        rec.load_balancers.retain(|l| l.name != name);
        if rec.load_balancers.len() == before {
            return Err(Error::not_found(format!(
                "network {network:?} has no load balancer {name:?}"
            )));
        }
        self.put(&rec)?;
        self.stop_lb(&rec, name);
        Ok(self.view(&rec))
    }

    /// Starts (or updates) the health checker and table of one load balancer.
    fn start_lb(&self, rec: &NetworkRecord, lb: &NetworkLoadBalancer) -> Result<()> {
        let address: Ipv4Addr = lb
            .address
            .parse()
            .map_err(|_| Error::internal("stored balancer address"))?;
        let mut ports = Vec::new();
        for p in &lb.ports {
            let backends = lb
                .backends
                .iter()
                .filter_map(|b| rec.leases.iter().find(|l| &l.instance == b))
                .filter_map(|l| l.ip.parse().ok())
                .map(|a| vessel_net::Backend {
                    address: a,
                    port: p.target_port,
                })
                .collect();
            ports.push(vessel_net::LbPort {
                protocol: protocol(&p.protocol)?,
                listen_port: p.listen_port,
                backends,
            });
        }
        let table = rec.lb_table(&lb.name);
        let spec = vessel_net::LoadBalancer {
            name: table.clone(),
            address,
            ports,
        };
        let hc = &lb.health_check;
        let check = vessel_net::HealthCheck {
            interval: std::time::Duration::from_millis(hc.interval_ms),
            timeout: std::time::Duration::from_millis(hc.timeout_ms),
            rise: hc.rise,
            fall: hc.fall,
            port: hc.port,
        };
        let running = self
            .inner
            .checkers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&table);
        let lb_err = |e: vessel_net::LbError| {
            Error::invalid(format!("load balancer {:?}: {}", lb.name, chain(&e)))
        };
        let c = match running {
            // A running checker keeps its backends' health; new ones start healthy.
            Some(c) => match c.update(spec) {
                Ok(()) => c,
                Err(e) => {
                    self.inner
                        .checkers
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(table, c);
                    return Err(lb_err(e));
                }
            },
            None => {
                LbHealthChecker::start(Arc::new(NetNs::current()), spec, check).map_err(lb_err)?
            }
        };
        self.inner
            .checkers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(table, c);
        Ok(())
    }

    /// Stops a balancer's health checker and removes its table.
    fn stop_lb(&self, rec: &NetworkRecord, name: &str) {
        let table = rec.lb_table(name);
        let running = self
            .inner
            .checkers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&table);
        if let Some(c) = running {
            c.stop();
        }
        let _ = vessel_net::LoadBalancer::remove(&NetNs::current(), &table);
    }

    /// Removes balancer tables of this network that its record does not name (left by a
    /// crash between applying a table and recording the balancer).
    fn prune_lb_tables(&self, rec: &NetworkRecord) {
        let Ok(tables) = vessel_net::list_tables(&NetNs::current(), "ip") else {
            return;
        };
        let prefix = format!("vlb-{}_", rec.name);
        for table in &tables {
            let Some(lb) = table.strip_prefix(&prefix) else {
                continue;
            };
            if !rec.load_balancers.iter().any(|l| l.name == lb) {
                tracing::warn!(table, "removing a stale load balancer table");
                let _ = vessel_net::LoadBalancer::remove(&NetNs::current(), &rec.lb_table(lb));
            }
        }
    }
}

/// Makes the VXLAN device `dev` of an overlay network exist on `bridge`, with the
/// network's peers (entries already there are fine, as after a restart).
fn ensure_vxlan(
    links: &mut Links,
    rec: &NetworkRecord,
    dev: &str,
    vni: u32,
    bridge: &str,
) -> Result<()> {
    let local = rec
        .local
        .as_deref()
        .and_then(|l| l.parse().ok())
        .ok_or_else(|| Error::internal("an overlay without its underlay address"))?;
    if links
        .find(dev)
        .map_err(|e| net_err("netlink")(&e))?
        .is_none()
    {
        vessel_net::create_vxlan(
            links,
            &vessel_net::VxlanSpec {
                name: dev.to_string(),
                vni,
                local,
                port: vessel_net::VXLAN_PORT,
                underlay_mtu: 1500,
                bridge: bridge.to_string(),
            },
        )
        .map_err(|e| net_err(&format!("creating VXLAN device {dev} (VNI {vni})"))(&e))?;
    }
    for p in &rec.peers {
        let peer: Ipv4Addr = p.parse().map_err(|_| Error::invalid("bad peer"))?;
        let _ = vessel_net::add_vxlan_peer(links, dev, peer);
    }
    Ok(())
}

impl NetworkService {
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
fn prune_ifbs() {
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
