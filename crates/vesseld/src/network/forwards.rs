//! Published ports: forwards from the host to an instance's NIC.

use vessel_api::{Network, NetworkForward};

use super::record::NetworkRecord;
use super::NetworkService;
use crate::error::{Error, Result};

/// Most forwards one network has (each is a rule in its table, applied again on changes).
const MAX_FORWARDS: usize = 256;

impl NetworkService {
    /// Publishes a port of an instance on the network (`admin`: the caller may publish on
    /// the host's own ports and addresses, see [`check_listener`]).
    pub fn forward_add(&self, network: &str, f: NetworkForward, admin: bool) -> Result<Network> {
        let _g = self.busy();
        let mut rec = self.record(network)?;
        if rec.forwards.len() >= MAX_FORWARDS {
            return Err(Error::invalid(format!(
                "{network:?} has {MAX_FORWARDS} forwards, the most a network has: remove one \
                 first"
            )));
        }
        let others = self.records()?;
        let address = match &f.listen_address {
            Some(a) => Some(a.parse().map_err(|_| {
                Error::invalid(format!("listen address {a:?} is not an IP address"))
            })?),
            None => None,
        };
        check_listener(&rec, &others, (&f.protocol, address, f.listen_port), admin)?;
        check_forward(&rec, &others, &f)?;
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
    // Another network's forward of the port on an address this one would match too (any
    // address matches every one): the host can send it to one of them only.
    let overlaps = |a: &Option<String>, b: &Option<String>| a.is_none() || b.is_none() || a == b;
    for other in others.iter().filter(|o| o.name != rec.name) {
        if other.forwards.iter().any(|o| {
            o.protocol == f.protocol
                && o.listen_port == f.listen_port
                && overlaps(&o.listen_address, &f.listen_address)
        }) {
            return Err(Error::conflict(format!(
                "{} port {} is forwarded on {} already",
                f.protocol,
                f.listen_port,
                other.named_for(&rec.name)
            )));
        }
    }
    Ok(())
}

/// Checks where a forward or a balancer of network `rec` listens: `protocol` port `port` on
/// `address` (every address of the host: `None`).
/// - Ports below 1024 and loopback addresses are the host's own services': only an admin
///   publishes there (`admin`).
/// - Another project's gateway address is its instances' way to the host (their DNS,
///   their DHCP): nobody else's forward or balancer listens there.
/// - The port must be free on the host ([`host_port_free`]).
pub(super) fn check_listener(
    rec: &NetworkRecord,
    others: &[NetworkRecord],
    (protocol, address, port): (&str, Option<std::net::IpAddr>, u16),
    admin: bool,
) -> Result<()> {
    if !admin && port < 1024 {
        return Err(Error::forbidden(format!(
            "{protocol} port {port}: ports below 1024 are the host's services'; only an admin \
             publishes one (use a port of 1024 or above)"
        )));
    }
    if let Some(a) = address {
        check_address(crate::project::split(&rec.name).0, others, a, admin)?;
    }
    host_port_free(protocol, address, port)
}

/// Refuses a listener of `project` on `address` when it is one of the host's loopback
/// addresses (its own services', unless the caller is an admin) or the gateway of
/// another project's network (that project's instances' way to the host).
fn check_address(
    project: &str,
    others: &[NetworkRecord],
    address: std::net::IpAddr,
    admin: bool,
) -> Result<()> {
    // `::ffff:127.0.0.1` listens on 127.0.0.1 (sockets are dual-stack): judged as that.
    let address = address.to_canonical();
    if !admin && address.is_loopback() {
        return Err(Error::forbidden(format!(
            "{address}: the host's loopback addresses are its own services'; only an admin \
             listens there (listen on your network's gateway or another address of the host)"
        )));
    }
    for other in others {
        let gateway = other.subnet().map(|s| std::net::IpAddr::V4(s.gateway()));
        if crate::project::split(&other.name).0 != project && gateway.ok() == Some(address) {
            return Err(Error::forbidden(format!(
                "{address} is the gateway of a network of another project: listen on another \
                 address of the host"
            )));
        }
    }
    Ok(())
}

impl NetworkService {
    /// Checks the address a listener of `project` outside the networks (a storage export)
    /// is to listen on, as a published port's (see [`check_address`]).
    pub fn check_listen_address(
        &self,
        project: &str,
        address: std::net::IpAddr,
        admin: bool,
    ) -> Result<()> {
        check_address(project, &self.records()?, address, admin)
    }
}

/// Refuses to publish a port the host itself serves (a service listens on it: SSH, this
/// daemon's API), or on an address the host does not hold (traffic the host sends to that
/// address elsewhere would be taken): tried by binding it, here, where the rules apply.
pub(super) fn host_port_free(
    protocol: &str,
    address: Option<std::net::IpAddr>,
    port: u16,
) -> Result<()> {
    let ip = address.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into());
    let bound = match protocol {
        "udp" => std::net::UdpSocket::bind((ip, port)).map(drop),
        _ => std::net::TcpListener::bind((ip, port)).map(drop),
    };
    match bound {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(Error::conflict(format!(
            "{protocol} port {port} is in use on the host (a service of the host listens on \
             it): publish another port"
        ))),
        Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => Err(Error::invalid(format!(
            "{ip} is not an address of this host: a published port listens on one of the \
             host's addresses (or on all of them, without --listen-address)"
        ))),
        Err(e) => Err(Error::internal(format!(
            "trying {protocol} port {port} on the host: {e}"
        ))),
    }
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
        dmz.forwards.push(NetworkForward {
            listen_address: Some("192.0.2.9".into()),
            ..fwd("tcp", 9000, "db")
        });
        let mut alpha = network("alpha.lan", "10.3.0.0/24");
        alpha.leases.push(lease("alpha.web", "10.3.0.2"));
        let all = [lan.clone(), dmz, alpha.clone()];
        check_forward(&lan, &all, &fwd("tcp", 8081, "web")).unwrap();
        // Another network's forward of the port, on an address this one matches too.
        let on = |addr: &str| NetworkForward {
            listen_address: Some(addr.into()),
            ..fwd("tcp", 9000, "web")
        };
        check_forward(&lan, &all, &on("192.0.2.10")).unwrap();
        for f in [on("192.0.2.9"), fwd("tcp", 9000, "web")] {
            let e = check_forward(&lan, &all, &f).unwrap_err();
            assert!(e.message.contains("forwarded on network \"dmz\""), "{e}");
        }
        // Another project's network is not named.
        let e = check_forward(&alpha, &all, &fwd("tcp", 8080, "alpha.web")).unwrap_err();
        assert!(e.message.contains("a network of another project"), "{e}");
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
