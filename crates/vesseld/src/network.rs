//! Networks: a bridge (optionally joined to a VXLAN overlay) with IPAM leases kept in the
//! store, DHCP and DNS from dnsmasq, outbound NAT and published ports in nftables, and ACLs.
//! Instances get NICs: veth pairs into containers (plugged right after the container
//! starts), tap devices for VMs. Everything is rebuilt from the store when the daemon starts.
//!
//! The kernel side is `vessel-net`; this service decides names, addresses and what exists.
//! It acts in the daemon's own network namespace.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use vessel_api::{
    InstanceStatus, InstanceType, Network, NetworkAclSet, NetworkCreate, NetworkForward,
    NetworkLease, NicAttach,
};
use vessel_net::{
    AclAction, DhcpDns, Ipam, Links, MacAddr, NatRules, NetNs, NetworkAcl, NicAcl, PortForward,
    Protocol, StaticLease, Subnet, Upstream,
};

use crate::error::{chain, Error, Result};
use crate::events::Events;
use crate::store::{Store, StoreError};

const NETWORK: &str = "network";

/// What the store keeps of a network.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct NetworkRecord {
    name: String,
    subnet: String,
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
}

/// The network service (cheap to clone).
#[derive(Clone)]
pub struct NetworkService {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    events: Events,
    /// `<run>/networks/<name>`: dnsmasq state.
    run: PathBuf,
    busy: Mutex<()>,
    errors: Mutex<BTreeMap<String, String>>,
}

fn to_json<T: Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::internal(format!("encoding a record: {e}")))
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
                store,
                events,
                run,
                busy: Mutex::default(),
                errors: Mutex::default(),
            }),
        }
    }

    fn busy(&self) -> std::sync::MutexGuard<'_, ()> {
        self.inner.busy.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn record(&self, name: &str) -> Result<NetworkRecord> {
        match self.inner.store.object_get(NETWORK, name) {
            Ok(b) => serde_json::from_str(&b)
                .map_err(|e| Error::internal(format!("stored network unreadable: {e}"))),
            Err(StoreError::NotFound(_)) => Err(Error::not_found(format!(
                "network {name:?} not found; see `vessel network list`"
            ))),
            Err(e) => Err(e.into()),
        }
    }

    fn records(&self) -> Result<Vec<NetworkRecord>> {
        self.inner
            .store
            .object_list(NETWORK)?
            .iter()
            .map(|(_, b)| {
                serde_json::from_str(b)
                    .map_err(|e| Error::internal(format!("stored network unreadable: {e}")))
            })
            .collect()
    }

    fn put(&self, r: &NetworkRecord) -> Result<()> {
        Ok(self
            .inner
            .store
            .object_put(NETWORK, &r.name, &to_json(r)?)?)
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
        Network {
            name: r.name.clone(),
            network_type: if r.vni.is_some() { "vxlan" } else { "bridge" }.into(),
            subnet: r.subnet.clone(),
            gateway,
            bridge: r.bridge(),
            vni: r.vni,
            peers: r.peers.clone(),
            mtu: r.mtu(),
            leases: r.leases.clone(),
            forwards: r.forwards.clone(),
            acl: r.acl.clone(),
            status: if error.is_some() { "failed" } else { "ok" }.into(),
            error,
            description: r.description.clone(),
            created_at: r.created_at.clone(),
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
        let ok = (1..=11).contains(&req.name.len())
            && req.name.starts_with(|c: char| c.is_ascii_alphabetic())
            && !req.name.ends_with('-')
            && req
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !ok {
            return Err(Error::invalid(format!(
                "invalid network name {:?}: use 1-11 letters, digits and '-', starting with a \
                 letter (it names the bridge vbr-NAME)",
                req.name
            )));
        }
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
        if let Some(v) = req.vni {
            if let Some(o) = self.records()?.iter().find(|r| r.vni == Some(v)) {
                return Err(Error::conflict(format!(
                    "VNI {v} is taken by network {:?}",
                    o.name
                )));
            }
        }
        let rec = NetworkRecord {
            name: req.name.clone(),
            subnet: subnet.to_string(),
            vni: req.vni,
            peers: req.peers.clone(),
            local: req.local.clone(),
            leases: Vec::new(),
            forwards: Vec::new(),
            acl: String::new(),
            description: req.description,
            created_at: crate::now(),
        };
        if let Err(e) = self.realize(&rec) {
            self.teardown(&rec);
            return Err(e);
        }
        self.inner
            .store
            .object_insert(NETWORK, &rec.name, &to_json(&rec)?)?;
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
        self.inner.store.object_delete(NETWORK, name)?;
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
        if let (Some(vni), Some(local)) = (rec.vni, rec.local.as_deref()) {
            let dev = rec.vxlan();
            if links
                .find(&dev)
                .map_err(|e| net_err("netlink")(&e))?
                .is_none()
            {
                vessel_net::create_vxlan(
                    &mut links,
                    &vessel_net::VxlanSpec {
                        name: dev.clone(),
                        vni,
                        local: local.parse().map_err(|_| Error::invalid("bad local"))?,
                        port: vessel_net::VXLAN_PORT,
                        underlay_mtu: 1500,
                        bridge: bridge.clone(),
                    },
                )
                .map_err(|e| net_err("creating the VXLAN device")(&e))?;
            }
            for p in &rec.peers {
                let peer: Ipv4Addr = p.parse().map_err(|_| Error::invalid("bad peer"))?;
                // An existing entry is fine (after a restart).
                let _ = vessel_net::add_vxlan_peer(&mut links, &dev, peer);
            }
        }
        // Container host ends left from before (a daemon restart) go back on the bridge.
        for l in &rec.leases {
            if links
                .find(&l.host_interface)
                .map_err(|e| net_err("netlink")(&e))?
                .is_some()
            {
                let _ = links.set_master(&l.host_interface, Some(&bridge));
                let _ = links.set_up(&l.host_interface, true);
            }
        }
        vessel_net::set_ipv4_forwarding(&ns, true).map_err(|e| net_err("ip_forward")(&e))?;
        self.apply_rules(rec)?;
        self.apply_dnsmasq(rec)?;
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
        }
        .apply(&ns)
        .map_err(|e| net_err("nftables")(&e))?;
        self.apply_acl(rec, &rec.acl)
    }

    fn apply_acl(&self, rec: &NetworkRecord, text: &str) -> Result<()> {
        let ns = NetNs::current();
        if text.trim().is_empty() {
            let _ = vessel_net::remove_acl(&ns, &rec.name);
            return Ok(());
        }
        let rules = vessel_net::parse_rules(text)
            .map_err(|e| Error::invalid(format!("ACL: {}", chain(&e))))?;
        let mut sets: BTreeMap<String, Vec<vessel_net::Cidr>> = BTreeMap::new();
        for l in &rec.leases {
            if let Ok(addr) = l.ip.parse::<Ipv4Addr>() {
                sets.entry(l.instance.clone())
                    .or_default()
                    .push(vessel_net::Cidr { addr, prefix: 32 });
            }
        }
        let acl = NetworkAcl {
            network: rec.name.clone(),
            gateway: rec.subnet().ok().map(|s| s.gateway()),
            default_ingress: AclAction::Allow,
            default_egress: AclAction::Allow,
            rules,
            nics: rec
                .leases
                .iter()
                .map(|l| NicAcl {
                    name: l.host_interface.clone(),
                    rules: Vec::new(),
                })
                .collect(),
            sets,
        };
        acl.apply(&ns, vessel_net::probe_acl_mode(&ns))
            .map_err(|e| Error::invalid(format!("ACL: {}", chain(&e))))
    }

    fn apply_dnsmasq(&self, rec: &NetworkRecord) -> Result<()> {
        let subnet = rec.subnet()?;
        let mut static_leases = Vec::new();
        for l in &rec.leases {
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
            state_dir: self.inner.run.join(&rec.name),
        }
        .apply(&NetNs::current())
        .map_err(|e| net_err("dnsmasq")(&e))?;
        Ok(())
    }

    fn teardown(&self, rec: &NetworkRecord) {
        let ns = NetNs::current();
        vessel_net::stop_dnsmasq(&self.inner.run.join(&rec.name));
        let _ = std::fs::remove_dir_all(self.inner.run.join(&rec.name));
        let _ = vessel_net::remove_table(&ns, &rec.name);
        let _ = vessel_net::remove_acl(&ns, &rec.name);
        if let Ok(mut links) = Links::open(&ns) {
            let _ = links.delete(&rec.vxlan());
            let _ = links.delete(&rec.bridge());
        }
    }

    /// Rebuilds every network's kernel objects from the store (after a crash or reboot).
    pub fn reconcile(&self) -> Result<()> {
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
        Ok(())
    }

    /// Gives a stopped instance a NIC on a network (plugged when it starts).
    pub fn attach(&self, network: &str, req: NicAttach) -> Result<Network> {
        let _g = self.busy();
        let mut rec = self.record(network)?;
        let inst =
            crate::instance::stored_stopped(self.inner.store.as_ref(), &req.instance, "NICs")?;
        if rec.leases.iter().any(|l| l.instance == req.instance) {
            return Err(Error::conflict(format!(
                "{:?} already has a NIC on {network:?}",
                req.instance
            )));
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
        let all_macs: Vec<String> = self
            .records()?
            .into_iter()
            .flat_map(|r| r.leases)
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
        let index = self
            .records()?
            .iter()
            .flat_map(|r| r.leases.iter())
            .filter(|l| l.instance == req.instance)
            .count();
        let prefix = if inst.instance_type == InstanceType::Vm {
            "vt"
        } else {
            "vh"
        };
        rec.leases.push(NetworkLease {
            instance: req.instance.clone(),
            interface: format!("eth{index}"),
            mac: mac.to_string(),
            ip: ip.to_string(),
            host_interface: ifname(prefix, &req.instance, network),
        });
        self.apply_dnsmasq(&rec)?;
        self.put(&rec)?;
        Ok(self.view(&rec))
    }

    /// Removes an instance's NIC from a network (the instance must be stopped).
    pub fn detach(&self, network: &str, instance: &str, check_stopped: bool) -> Result<Network> {
        let _g = self.busy();
        let mut rec = self.record(network)?;
        let Some(lease) = rec.leases.iter().find(|l| l.instance == instance).cloned() else {
            return Err(Error::not_found(format!(
                "{instance:?} has no NIC on {network:?}"
            )));
        };
        if check_stopped {
            if let Ok(i) = self.inner.store.instance_get(instance) {
                if i.status != InstanceStatus::Stopped {
                    return Err(Error::conflict(format!(
                        "instance {instance:?} is {:?}; stop it before changing its NICs",
                        i.status
                    )));
                }
            }
        }
        rec.forwards.retain(|f| f.instance != instance);
        rec.leases.retain(|l| l.instance != instance);
        if let Ok(mut links) = Links::open(&NetNs::current()) {
            let _ = links.delete(&lease.host_interface);
        }
        self.apply_rules(&rec)?;
        self.apply_dnsmasq(&rec)?;
        self.put(&rec)?;
        Ok(self.view(&rec))
    }

    /// An instance is gone: its NICs go.
    pub fn instance_deleted(&self, instance: &str) -> Result<()> {
        for rec in self.records()? {
            if rec.leases.iter().any(|l| l.instance == instance) {
                self.detach(&rec.name, instance, false)?;
            }
        }
        Ok(())
    }

    /// Plugs a started container's NICs into its network namespace (the init's `pid`).
    pub fn plug_container(&self, instance: &str, pid: i32) -> Result<()> {
        let nics: Vec<(NetworkRecord, NetworkLease)> = self
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
        if nics.is_empty() {
            return Ok(());
        }
        let ns = NetNs::from_pid(pid as u32).map_err(|e| net_err("instance namespace")(&e))?;
        let mut host = Links::open(&NetNs::current()).map_err(|e| net_err("netlink")(&e))?;
        for (rec, l) in nics {
            let subnet = rec.subnet()?;
            // A host end left from an earlier run of the instance goes first.
            let _ = host.delete(&l.host_interface);
            vessel_net::plug_veth(
                &mut host,
                &vessel_net::VethNic {
                    host_name: l.host_interface.clone(),
                    bridge: rec.bridge(),
                    instance_ns: &ns,
                    instance_name: l.interface.clone(),
                    mac: l.mac.parse().ok(),
                    address: Some((
                        l.ip.parse()
                            .map_err(|_| Error::internal("stored lease address"))?,
                        subnet.prefix(),
                    )),
                    gateway: Some(subnet.gateway()),
                    mtu: Some(rec.mtu()),
                },
            )
            .map_err(|e| net_err(&format!("plugging {instance} into {}", rec.name))(&e))?;
        }
        Ok(())
    }

    /// Tap devices (created here, owned by QEMU's user) and MACs for a VM's NICs.
    pub fn vm_nics(&self, instance: &str) -> Result<Vec<vessel_vm::Nic>> {
        let mut out = Vec::new();
        for rec in self.records()? {
            for l in rec.leases.iter().filter(|l| l.instance == instance) {
                let ns = NetNs::current();
                let _ = vessel_net::delete_tap(&ns, &l.host_interface);
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
        if !rec.leases.iter().any(|l| l.instance == f.instance) {
            return Err(Error::invalid(format!(
                "{:?} has no NIC on {network:?}; attach it first",
                f.instance
            )));
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
        self.apply_acl(&rec, &req.rules)?;
        rec.acl = req.rules;
        self.put(&rec)?;
        Ok(self.view(&rec))
    }
}
