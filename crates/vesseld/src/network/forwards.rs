//! Published ports: forwards from the host to an instance's NIC.

use vessel_api::{Network, NetworkForward};

use super::record::NetworkRecord;
use super::NetworkService;
use crate::error::{Error, Result};

impl NetworkService {
    /// Publishes a port of an instance on the network.
    pub fn forward_add(&self, network: &str, f: NetworkForward) -> Result<Network> {
        let _g = self.busy();
        let mut rec = self.record(network)?;
        check_forward(&rec, &self.records()?, &f)?;
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

/// Checks a new forward `f` of network `rec` against its forwards and the balancers of every
/// network (`others`).
pub(super) fn check_forward(
    rec: &NetworkRecord,
    others: &[NetworkRecord],
    f: &NetworkForward,
) -> Result<()> {
    let network = &rec.name;
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
        // On a cluster network, an instance on another member.
        None if rec.remote_of(&f.instance).is_some() => {}
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
    for other in others {
        if let Some(lb) = other.load_balancers.iter().find(|lb| {
            lb.ports
                .iter()
                .any(|p| p.protocol == f.protocol && p.listen_port == f.listen_port)
        }) {
            return Err(Error::conflict(format!(
                "{} port {} is load balancer {:?}'s on {}",
                f.protocol,
                f.listen_port,
                lb.name,
                other.named_for(&rec.name)
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
    Ok(())
}

#[cfg(test)]
mod tests {
    use vessel_api::{LbPortSpec, NetworkLoadBalancer};

    use super::super::record::fixture::{lease, network};
    use super::*;

    fn fwd(protocol: &str, port: u16, instance: &str) -> NetworkForward {
        NetworkForward {
            protocol: protocol.into(),
            listen_address: None,
            listen_port: port,
            instance: instance.into(),
            target_port: 80,
        }
    }

    #[test]
    fn forwards_need_a_routed_nic_and_a_free_port() {
        let mut lan = network("lan", "10.1.0.0/24");
        lan.leases.push(lease("web", "10.1.0.2"));
        let mut seg = lease("seg", "10.1.0.3");
        seg.vlan = Some(10);
        lan.leases.push(seg);
        lan.forwards.push(fwd("tcp", 8080, "web"));
        let mut dmz = network("dmz", "10.2.0.0/24");
        dmz.load_balancers.push(NetworkLoadBalancer {
            name: "lb".into(),
            address: "192.0.2.1".into(),
            ports: vec![LbPortSpec {
                protocol: "tcp".into(),
                listen_port: 443,
                target_port: 443,
            }],
            backends: vec!["x".into()],
            health_check: Default::default(),
            status: Vec::new(),
        });
        let all = [lan.clone(), dmz];
        check_forward(&lan, &all, &fwd("tcp", 8081, "web")).unwrap();
        check_forward(&lan, &all, &fwd("udp", 8080, "web")).unwrap();
        for (f, want) in [
            (fwd("sctp", 1, "web"), "use tcp or udp"),
            (fwd("tcp", 0, "web"), "1-65535"),
            (fwd("tcp", 81, "nobody"), "no NIC on \"lan\""),
            (fwd("tcp", 81, "seg"), "VLAN segment"),
            (fwd("tcp", 443, "web"), "load balancer \"lb\""),
            (fwd("tcp", 8080, "web"), "already forwarded"),
        ] {
            let e = check_forward(&lan, &all, &f).unwrap_err();
            assert!(e.message.contains(want), "{want:?} not in {e}");
        }
    }
}
