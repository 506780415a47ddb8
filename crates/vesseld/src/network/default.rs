//! The default network, as Docker's `docker0` and Incus's `incusbr0`: made on the daemon's
//! first start (or by `vessel admin init`) on a subnet that none of the routes or addresses
//! of the daemon's network namespace overlaps, and given to every new instance that does not
//! ask otherwise. The choice is recorded in the store, so a user who deletes the network is
//! not given it back at the next start.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
use vessel_api::{AdminInitResult, NetworkCreate};
use vessel_net::{Links, NetNs, Prefix4, Subnet};

use super::{net_err, NetworkService};
use crate::error::{Error, Result};

/// Name of the network `vessel admin init` and the first start make.
pub(super) const DEFAULT_NETWORK: &str = "default";
/// Record kind of the choice.
pub(super) const DEFAULT_KIND: &str = "network-default";
/// Its one key.
const KEY: &str = "default";

/// What the store keeps of the default network.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct DefaultChoice {
    /// The network new instances get.
    pub(super) network: String,
    /// When it was chosen, RFC 3339.
    pub(super) chosen_at: String,
}

impl NetworkService {
    /// The network new instances get a NIC on: the recorded default, while it exists.
    pub fn default_network(&self) -> Result<Option<String>> {
        let Some(choice) = self.inner.default.get(KEY)? else {
            return Ok(None);
        };
        Ok(self
            .inner
            .networks
            .contains(&choice.network)?
            .then_some(choice.network))
    }

    /// Makes the default network (on `subnet`, or on the first candidate subnet the host does
    /// not use) and records it; when a default network exists already, only says so (a
    /// different `subnet` is refused: its instances keep their addresses).
    pub fn init_default(&self, subnet: Option<String>) -> Result<AdminInitResult> {
        let _g = self.inner.init.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(name) = self.default_network()? {
            let network = self.get(&name)?;
            if let Some(want) = subnet.as_deref() {
                let want: Subnet = want
                    .parse()
                    .map_err(|e| Error::invalid(format!("subnet {want:?}: {e}")))?;
                if want.to_string() != network.subnet {
                    return Err(Error::conflict(format!(
                        "the default network {name:?} exists on {}; delete it first (`vessel \
                         network delete {name}`, after detaching its instances) to make it \
                         on {want}",
                        network.subnet
                    )));
                }
            }
            return Ok(AdminInitResult {
                created: false,
                network,
            });
        }
        // A network already called `default` (made by hand) becomes the default as it is.
        if self.inner.networks.contains(DEFAULT_NETWORK)? && subnet.is_none() {
            self.record_default(DEFAULT_NETWORK)?;
            return Ok(AdminInitResult {
                created: false,
                network: self.get(DEFAULT_NETWORK)?,
            });
        }
        let subnet = match subnet {
            Some(s) => s,
            None => self.free_subnet()?.to_string(),
        };
        let network = self.create(NetworkCreate {
            name: DEFAULT_NETWORK.into(),
            subnet,
            ipv6: None,
            vni: None,
            peers: Vec::new(),
            local: None,
            cluster: false,
            vlans: Vec::new(),
            isolated_ports: false,
            description: "the default network: new instances get a NIC on it".into(),
            config: Default::default(),
        })?;
        self.record_default(DEFAULT_NETWORK)?;
        tracing::info!(network = DEFAULT_NETWORK, subnet = %network.subnet, "default network made");
        Ok(AdminInitResult {
            created: true,
            network: self.get(DEFAULT_NETWORK)?,
        })
    }

    /// On the daemon's first start (nothing recorded yet), makes the default network. A
    /// failure is logged and tried again at the next start; the daemon serves anyway.
    pub fn first_start(&self) {
        match self.inner.default.get(KEY) {
            Ok(Some(_)) => {}
            Ok(None) => {
                if let Err(e) = self.init_default(None) {
                    tracing::error!(error = %e, "the default network could not be made; new instances get no NIC until `vessel admin init` succeeds");
                }
            }
            Err(e) => tracing::error!(error = %e, "reading the default network's record"),
        }
    }

    fn record_default(&self, network: &str) -> Result<()> {
        Ok(self.inner.default.put(
            KEY,
            &DefaultChoice {
                network: network.to_string(),
                chosen_at: crate::clock::now(),
            },
        )?)
    }

    /// The first candidate subnet that neither the daemon's namespace (routes of every
    /// table, addresses) nor another network uses.
    fn free_subnet(&self) -> Result<Subnet> {
        let mut used = host_prefixes()?;
        for r in self.records()? {
            if let Ok(s) = r.subnet() {
                used.push(Prefix4::new(s.network(), s.prefix()));
            }
        }
        vessel_net::first_free_subnet(candidates(), &used).ok_or_else(|| {
            Error::conflict(
                "every candidate subnet (10.42.0.0/24 to 10.254.0.0/24, 172.31.0.0/24 to \
                 172.16.0.0/24, 192.168.255.0/24 to 192.168.100.0/24) overlaps a route or \
                 address of this host; choose one with `vessel admin init --subnet CIDR`",
            )
        })
    }
}

/// The IPv4 prefixes the daemon's namespace uses: its routes (of every table) and its
/// addresses' networks.
pub(super) fn host_prefixes() -> Result<Vec<Prefix4>> {
    Links::open(&NetNs::current())
        .and_then(|mut l| l.used_prefixes())
        .map_err(|e| net_err("reading the host's routes")(&e))
}

/// The subnets the default network may take, in order of preference: `10.42.0.0/24` up to
/// `10.254.0.0/24` (as k3s and Incus pick from 10/8), then from the top of 172.16/12 and of
/// 192.168/16, where home and office LANs are rarest.
pub(super) fn candidates() -> impl Iterator<Item = Subnet> {
    let ten = (42..=254).map(|b| Ipv4Addr::new(10, b, 0, 0));
    let private = (16..=31).rev().map(|b| Ipv4Addr::new(172, b, 0, 0));
    let home = (100..=255).rev().map(|c| Ipv4Addr::new(192, 168, c, 0));
    ten.chain(private)
        .chain(home)
        .filter_map(|a| Subnet::new(a, 24).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_start_at_10_42_and_stay_private() {
        let all: Vec<Subnet> = candidates().collect();
        assert_eq!(all[0].to_string(), "10.42.0.0/24");
        assert_eq!(all[1].to_string(), "10.43.0.0/24");
        assert!(all.iter().all(|s| s.prefix() == 24));
        assert!(all
            .iter()
            .all(|s| s.network().is_private() && !s.network().is_loopback()));
        // A host on 10/8 (a VPN, say) still gets one.
        let used = [Prefix4::new(Ipv4Addr::new(10, 0, 0, 0), 8)];
        assert_eq!(
            vessel_net::first_free_subnet(candidates(), &used).map(|s| s.to_string()),
            Some("172.31.0.0/24".to_string())
        );
    }
}
