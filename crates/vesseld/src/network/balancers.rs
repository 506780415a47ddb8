//! L4 load balancers: one nftables table each, kept in step with its backends' health by a
//! checker thread.

use std::net::Ipv4Addr;
use std::sync::Arc;

use vessel_api::{Network, NetworkLoadBalancer};
use vessel_net::{LbHealthChecker, NetNs};

use super::parse::protocol;
use super::record::NetworkRecord;
use super::NetworkService;
use crate::error::{chain, Error, Result};

impl NetworkService {
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
    pub(super) fn start_lb(&self, rec: &NetworkRecord, lb: &NetworkLoadBalancer) -> Result<()> {
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
