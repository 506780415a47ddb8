//! L4 load balancers: one nftables table each, kept in step with its backends' health by a
//! checker thread.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use vessel_api::{LbBackendStatus, Network, NetworkLoadBalancer};
use vessel_net::{Backend, BackendHealth, LbHealthChecker, NetNs};

use super::forwards::check_listener;
use super::parse::protocol;
use super::record::NetworkRecord;
use super::NetworkService;
use crate::error::{chain, Error, Result};

/// Most load balancers one network has (each has a table and a health-check thread).
const MAX_BALANCERS: usize = 32;
/// Most ports and backends one load balancer has.
const MAX_PORTS: usize = 32;
const MAX_BACKENDS: usize = 64;
/// Shortest time between health checks.
const MIN_INTERVAL_MS: u64 = 100;

impl NetworkService {
    /// Adds a load balancer: its table applied with the backends that answer a first probe,
    /// then kept in step with their health (`admin`: the caller may listen on the host's
    /// own ports and addresses, see [`check_listener`]).
    pub fn lb_add(
        &self,
        network: &str,
        mut req: NetworkLoadBalancer,
        admin: bool,
    ) -> Result<Network> {
        let _g = self.busy();
        let mut rec = self.record(network)?;
        if rec.load_balancers.len() >= MAX_BALANCERS {
            return Err(Error::invalid(format!(
                "{network:?} has {MAX_BALANCERS} load balancers, the most a network has: \
                 remove one first"
            )));
        }
        let others = self.records()?;
        if let Ok(address) = req.address.parse() {
            for p in &req.ports {
                check_listener(
                    &rec,
                    &others,
                    (&p.protocol, Some(address), p.listen_port),
                    admin,
                )?;
            }
        }
        // (`check_listener` bound each port on the address: one the host does not hold
        // was refused there.)
        check_balancer(&rec, &others, &req)?;
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
    pub(super) fn start_lb(&self, rec: &NetworkRecord, lb: &NetworkLoadBalancer) -> Result<()> {
        let (spec, check) = render_balancer(rec, lb)?;
        let table = spec.name.clone();
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
    pub(super) fn stop_lb(&self, rec: &NetworkRecord, name: &str) {
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
    pub(super) fn prune_lb_tables(&self, rec: &NetworkRecord) {
        let Ok(tables) = vessel_net::list_tables(&NetNs::current(), "ip") else {
            return;
        };
        for lb in stale_balancers(rec, &tables) {
            tracing::warn!(table = %format!("vlb-{}", rec.lb_table(lb)), "removing a stale load balancer table");
            let _ = vessel_net::LoadBalancer::remove(&NetNs::current(), &rec.lb_table(lb));
        }
    }
}

/// A balancer as shown: each backend with its address and its health as the checker last
/// saw it (`unknown` without a checker or before a probe).
pub(super) fn with_status(
    rec: &NetworkRecord,
    lb: &NetworkLoadBalancer,
    health: Option<&BTreeMap<Backend, BackendHealth>>,
) -> NetworkLoadBalancer {
    let mut lb = lb.clone();
    lb.status = lb
        .backends
        .iter()
        .map(|b| {
            let address = rec.address_of(b).unwrap_or_default();
            let ip: Option<Ipv4Addr> = address.parse().ok();
            let state = health.and_then(|h| {
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
}

/// Checks a new balancer `req` of network `rec` against the balancers and forwards of every
/// network (`others`, which may include `rec`).
pub(super) fn check_balancer(
    rec: &NetworkRecord,
    others: &[NetworkRecord],
    req: &NetworkLoadBalancer,
) -> Result<()> {
    let network = &rec.name;
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
    let address: Ipv4Addr = req
        .address
        .parse()
        .map_err(|_| Error::invalid(format!("address {:?} is not an IPv4 address", req.address)))?;
    if address.is_unspecified() || address.is_broadcast() || address.is_multicast() {
        return Err(Error::invalid(format!(
            "address {address} cannot be a balancer's: give a unicast address of this host"
        )));
    }
    let hc = &req.health_check;
    if hc.interval_ms > 60_000 || hc.interval_ms < MIN_INTERVAL_MS || hc.timeout_ms > 10_000 {
        return Err(Error::invalid(format!(
            "health checks run every {MIN_INTERVAL_MS} to 60000 ms with a timeout of at most \
             10000 ms"
        )));
    }
    if req.ports.len() > MAX_PORTS || req.backends.len() > MAX_BACKENDS {
        return Err(Error::invalid(format!(
            "a load balancer has at most {MAX_PORTS} ports and {MAX_BACKENDS} backends"
        )));
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
            // On a cluster network, an instance on another member.
            None if rec.remote_of(b).is_some() => {}
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
    for other in others {
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
                        "{address} {} port {} is taken by load balancer {:?} of {}",
                        p.protocol,
                        p.listen_port,
                        lb.name,
                        other.named_for(&rec.name)
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
                    "{} port {} is a forward of {}",
                    f.protocol,
                    f.listen_port,
                    other.named_for(&rec.name)
                )));
            }
        }
    }
    Ok(())
}

/// The table and health check of balancer `lb` of network `rec`: each port spread over the
/// addresses its backends have on the network (a backend without a NIC there is left out).
pub(super) fn render_balancer(
    rec: &NetworkRecord,
    lb: &NetworkLoadBalancer,
) -> Result<(vessel_net::LoadBalancer, vessel_net::HealthCheck)> {
    let address: Ipv4Addr = lb
        .address
        .parse()
        .map_err(|_| Error::internal("stored balancer address"))?;
    let mut ports = Vec::new();
    for p in &lb.ports {
        let backends = lb
            .backends
            .iter()
            .filter_map(|b| rec.address_of(b))
            .filter_map(|ip| ip.parse().ok())
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
    let spec = vessel_net::LoadBalancer {
        name: rec.lb_table(&lb.name),
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
    Ok((spec, check))
}

/// The balancers of network `rec` that have a table among `tables` (nftables `ip` tables)
/// but no record: what a crash between applying a table and recording it left.
pub(super) fn stale_balancers<'t>(rec: &NetworkRecord, tables: &'t [String]) -> Vec<&'t str> {
    let prefix = format!("vlb-{}_", rec.kname());
    tables
        .iter()
        .filter_map(|t| t.strip_prefix(&prefix))
        .filter(|lb| !rec.load_balancers.iter().any(|l| l.name == *lb))
        .collect()
}

#[cfg(test)]
mod tests {
    use vessel_api::{LbHealthCheckSpec, LbPortSpec, NetworkForward};

    use super::super::record::fixture::{lease, network};
    use super::*;

    fn lb(name: &str, address: &str, port: u16, backends: &[&str]) -> NetworkLoadBalancer {
        NetworkLoadBalancer {
            name: name.into(),
            address: address.into(),
            ports: vec![LbPortSpec {
                protocol: "tcp".into(),
                listen_port: port,
                target_port: 8080,
            }],
            backends: backends.iter().map(|b| b.to_string()).collect(),
            health_check: LbHealthCheckSpec::default(),
            status: Vec::new(),
        }
    }

    fn lan() -> NetworkRecord {
        let mut lan = network("lan", "10.1.0.0/24");
        lan.leases.push(lease("a", "10.1.0.2"));
        lan.leases.push(lease("b", "10.1.0.3"));
        let mut seg = lease("seg", "10.1.0.4");
        seg.vlan = Some(10);
        lan.leases.push(seg);
        lan
    }

    #[test]
    fn balancers_are_checked_against_every_network() {
        let mut lan = lan();
        lan.load_balancers.push(lb("web", "192.0.2.1", 80, &["a"]));
        let mut dmz = network("dmz", "10.2.0.0/24");
        dmz.forwards.push(NetworkForward {
            protocol: "tcp".into(),
            listen_address: None,
            listen_port: 8443,
            instance: "x".into(),
            target_port: 443,
        });
        let all = [lan.clone(), dmz];
        check_balancer(&lan, &all, &lb("api", "192.0.2.1", 81, &["a", "b"])).unwrap();
        check_balancer(&lan, &all, &lb("api", "192.0.2.2", 80, &["a"])).unwrap();
        let mut slow = lb("api", "192.0.2.2", 81, &["a"]);
        slow.health_check.interval_ms = 60_001;
        let mut eager = lb("api", "192.0.2.2", 81, &["a"]);
        eager.health_check.interval_ms = 99;
        let mut wide = lb("api", "192.0.2.2", 81, &["a"]);
        wide.ports = vec![wide.ports[0].clone(); 33];
        let mut no_ports = lb("api", "192.0.2.2", 81, &["a"]);
        no_ports.ports.clear();
        let mut udp0 = lb("api", "192.0.2.2", 81, &["a"]);
        udp0.ports[0].target_port = 0;
        for (req, want) in [
            (
                lb("a.b", "192.0.2.2", 81, &["a"]),
                "invalid load balancer name",
            ),
            (lb(&"x".repeat(21), "192.0.2.2", 81, &["a"]), "1-20"),
            (
                lb("web", "192.0.2.2", 81, &["a"]),
                "already has a load balancer",
            ),
            (lb("api", "host", 81, &["a"]), "not an IPv4 address"),
            (lb("api", "0.0.0.0", 81, &["a"]), "unicast"),
            (lb("api", "224.0.0.1", 81, &["a"]), "unicast"),
            (slow, "every 100 to 60000 ms"),
            (eager, "every 100 to 60000 ms"),
            (wide, "at most 32 ports"),
            (no_ports, "at least one port"),
            (lb("api", "192.0.2.2", 81, &[]), "at least one backend"),
            (udp0, "1-65535"),
            (lb("api", "192.0.2.2", 81, &["a", "a"]), "listed twice"),
            (lb("api", "192.0.2.2", 81, &["nobody"]), "no NIC on \"lan\""),
            (lb("api", "192.0.2.2", 81, &["seg"]), "VLAN segment"),
            (
                lb("api", "192.0.2.1", 80, &["a"]),
                "taken by load balancer \"web\"",
            ),
            (
                lb("api", "192.0.2.2", 8443, &["a"]),
                "forward of network \"dmz\"",
            ),
        ] {
            let e = check_balancer(&lan, &all, &req).unwrap_err();
            assert!(e.message.contains(want), "{want:?} not in {e}");
        }
    }

    #[test]
    fn a_balancer_spreads_each_port_over_its_backends_addresses() {
        let lan = lan();
        let mut web = lb("web", "192.0.2.1", 80, &["a", "b", "gone"]);
        web.health_check.port = Some(9000);
        let (spec, check) = render_balancer(&lan, &web).unwrap();
        assert_eq!(spec.name, "lan_web");
        assert_eq!(spec.address, "192.0.2.1".parse::<Ipv4Addr>().unwrap());
        assert_eq!(spec.ports.len(), 1);
        let to: Vec<String> = spec.ports[0]
            .backends
            .iter()
            .map(|b| format!("{}:{}", b.address, b.port))
            .collect();
        assert_eq!(
            to,
            ["10.1.0.2:8080", "10.1.0.3:8080"],
            "no address for gone"
        );
        assert_eq!(check.interval, std::time::Duration::from_millis(2000));
        assert_eq!(check.port, Some(9000));
    }

    #[test]
    fn stale_tables_are_this_networks_unrecorded_ones() {
        let mut lan = lan();
        lan.load_balancers.push(lb("web", "192.0.2.1", 80, &["a"]));
        let tables: Vec<String> = ["vlb-lan_web", "vlb-lan_old", "vlb-lan2_x", "vessel-lan"]
            .iter()
            .map(|t| t.to_string())
            .collect();
        assert_eq!(stale_balancers(&lan, &tables), ["old"]);
    }

    #[test]
    fn backends_show_their_address_and_health() {
        let lan = lan();
        let web = lb("web", "192.0.2.1", 80, &["a", "b", "gone"]);
        let unknown = with_status(&lan, &web, None);
        assert!(unknown.status.iter().all(|s| s.health == "unknown"));
        let mut health = BTreeMap::new();
        let key = |ip: &str| Backend {
            address: ip.parse().unwrap(),
            port: 8080,
        };
        health.insert(
            key("10.1.0.2"),
            BackendHealth {
                up: true,
                streak: 0,
            },
        );
        health.insert(
            key("10.1.0.3"),
            BackendHealth {
                up: false,
                streak: 1,
            },
        );
        let seen = with_status(&lan, &web, Some(&health));
        let got: Vec<(&str, &str, &str)> = seen
            .status
            .iter()
            .map(|s| (s.instance.as_str(), s.address.as_str(), s.health.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("a", "10.1.0.2", "up"),
                ("b", "10.1.0.3", "down"),
                ("gone", "", "unknown")
            ]
        );
    }
}
