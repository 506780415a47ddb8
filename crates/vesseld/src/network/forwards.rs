//! Published ports: forwards from the host to an instance's NIC.

use vessel_api::{Network, NetworkForward};

use super::NetworkService;
use crate::error::{Error, Result};

impl NetworkService {
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
}
