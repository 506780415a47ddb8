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

mod acls;
mod balancers;
mod cluster;
mod default;
mod forwards;
mod kernel;
mod networks;
mod nics;
mod parse;
mod rebuild;
mod record;
mod segments;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use vessel_api::Network;
use vessel_net::{LbHealthChecker, VlanMode};

use crate::error::{chain, Error, Result};
use crate::events::Events;
use crate::store::{Records, Store};
use record::NetworkRecord;

pub use cluster::ClusterNetworkSpec;

const NETWORK: &str = "network";
/// A network being created: recorded before its kernel objects are made, removed once the
/// network itself is recorded. One left at start names objects a crash left behind.
const PENDING: &str = "network-pending";

/// The network service (cheap to clone).
#[derive(Clone)]
pub struct NetworkService {
    inner: Arc<Inner>,
}

struct Inner {
    networks: Records<NetworkRecord>,
    /// Networks being created (see [`PENDING`]).
    pending: Records<NetworkRecord>,
    /// Which network new instances get (see `default.rs`).
    default: Records<default::DefaultChoice>,
    /// Held while the default network is made, so two requests make one.
    init: Mutex<()>,
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

impl NetworkService {
    /// A service keeping dnsmasq state under `run`.
    pub fn new(store: Arc<dyn Store>, events: Events, run: PathBuf) -> Self {
        Self {
            inner: Arc::new(Inner {
                networks: Records::new(store.clone(), NETWORK),
                pending: Records::new(store.clone(), PENDING),
                default: Records::new(store, default::DEFAULT_KIND),
                init: Mutex::default(),
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
                balancers::with_status(r, lb, health.as_ref())
            })
            .collect();
        drop(checkers);
        Network {
            name: r.name.clone(),
            network_type: match (r.cluster, r.vni.is_some()) {
                (true, _) => "cluster",
                (false, true) => "vxlan",
                (false, false) => "bridge",
            }
            .into(),
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
            segments: segments::segments(r, mode),
            // Only a network with segments has a mode (probing the kernel on a read would
            // make a throw-away bridge).
            vlan_mode: if r.vlans.is_empty() {
                "none"
            } else {
                segments::mode_name(mode)
            }
            .into(),
            isolated_ports: r.isolated_ports,
            default: self.default_network().ok().flatten().as_deref() == Some(r.name.as_str()),
            status: if error.is_some() { "failed" } else { "ok" }.into(),
            error,
            description: r.description.clone(),
            config: r.config.clone(),
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
}
