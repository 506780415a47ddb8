//! `network ...`.

use anyhow::{anyhow, Context, Result};
use vessel_api::{
    AdminInit, AdminInitResult, LbHealthCheckSpec, LbPortSpec, Network, NetworkAclSet,
    NetworkCreate, NetworkForward, NetworkLoadBalancer, NicAttach, NicLimits,
};

use crate::cli_network::{AclCommand, ForwardCommand, LbCommand, NetworkCommand};
use crate::client::Client;
use crate::encode::encode_segment;
use crate::output::{print_document, println, Block, Format, Table};

/// The API path of the network `name`.
pub(crate) fn path(name: &str) -> String {
    format!("/1.0/networks/{}", encode_segment(name))
}

/// `network ...`.
pub fn run(client: &Client, cmd: NetworkCommand) -> Result<i32> {
    match cmd {
        NetworkCommand::Create {
            name,
            subnet,
            ipv6,
            vni,
            local,
            peers,
            vlans,
            isolated_ports,
            cluster,
            description,
            config,
        } => {
            let n: Network = client.send(
                "POST",
                "/1.0/networks",
                &NetworkCreate {
                    name,
                    subnet,
                    ipv6,
                    vni,
                    peers,
                    local,
                    vlans,
                    isolated_ports,
                    cluster,
                    description,
                    config: super::config::key_values(&config)?,
                },
            )?;
            println(format!(
                "Network {} ready: bridge {}, gateway {}",
                n.name, n.bridge, n.gateway
            ))?;
            Ok(0)
        }
        NetworkCommand::List { format, .. } => {
            let nets: Vec<Network> = client.get("/1.0/networks")?;
            match format {
                Format::Table => {
                    let mut t =
                        Table::new(&["NAME", "TYPE", "SUBNET", "NICS", "DEFAULT", "STATUS"]);
                    for n in &nets {
                        t.row(vec![
                            n.name.clone(),
                            match n.vni {
                                Some(v) => format!("vxlan {v}"),
                                None => n.network_type.clone(),
                            },
                            n.subnet.clone(),
                            n.leases.len().to_string(),
                            if n.default { "yes" } else { "" }.to_string(),
                            n.status.clone(),
                        ]);
                    }
                    t.print()?;
                }
                _ => print_document(format, &nets)?,
            }
            Ok(0)
        }
        NetworkCommand::Info { name, format } => {
            let n: Network = client.get(&path(&name))?;
            match format {
                Format::Table => {
                    let mut b = Block::new();
                    b.field("Name", &n.name)
                        .field("Type", &n.network_type)
                        .field("Subnet", &n.subnet)
                        .field("Gateway", &n.gateway)
                        .field("Bridge", &n.bridge)
                        .field("MTU", n.mtu)
                        .field("IPv6", n.ipv6.as_deref().unwrap_or("none"))
                        .field("IPv6 gateway", n.gateway6.as_deref().unwrap_or("none"))
                        .field("Default", if n.default { "yes" } else { "no" })
                        .field("VLAN mode", &n.vlan_mode)
                        .field(
                            "Isolated ports",
                            if n.isolated_ports { "yes" } else { "no" },
                        )
                        .field("Status", &n.status);
                    if let Some(v) = n.vni {
                        b.field("VNI", v).field("Peers", n.peers.join(", "));
                    }
                    if let Some(e) = &n.error {
                        b.field("Error", e);
                    }
                    let nics: Vec<(String, String)> = n
                        .leases
                        .iter()
                        .map(|l| {
                            (
                                format!("{} {}", l.instance, l.interface),
                                format!(
                                    "{}{} {} (host {}){}{}{}",
                                    l.ip,
                                    l.ipv6.as_ref().map(|a| format!(" {a}")).unwrap_or_default(),
                                    l.mac,
                                    l.host_interface,
                                    l.vlan.map(|v| format!(" vlan {v}")).unwrap_or_default(),
                                    l.ingress
                                        .as_ref()
                                        .map(|r| format!(" in {r}"))
                                        .unwrap_or_default(),
                                    l.egress
                                        .as_ref()
                                        .map(|r| format!(" out {r}"))
                                        .unwrap_or_default(),
                                ),
                            )
                        })
                        .collect();
                    b.section("NICs", &nics, "none");
                    let segs: Vec<(String, String)> = n
                        .segments
                        .iter()
                        .map(|s| {
                            (
                                format!("vlan {}", s.vlan),
                                match s.vni {
                                    Some(v) => format!("bridge {} vni {v}", s.bridge),
                                    None => format!("bridge {}", s.bridge),
                                },
                            )
                        })
                        .collect();
                    b.section("VLAN segments", &segs, "none");
                    let fwd: Vec<(String, String)> = n
                        .forwards
                        .iter()
                        .map(|f| {
                            (
                                format!("{} {}", f.protocol, f.listen_port),
                                format!("{}:{}", f.instance, f.target_port),
                            )
                        })
                        .collect();
                    b.section("Forwards", &fwd, "none");
                    let lbs: Vec<(String, String)> = n
                        .load_balancers
                        .iter()
                        .map(|lb| {
                            let ports: Vec<String> = lb
                                .ports
                                .iter()
                                .map(|p| {
                                    format!("{}:{}->{}", p.protocol, p.listen_port, p.target_port)
                                })
                                .collect();
                            let backends: Vec<String> = lb
                                .status
                                .iter()
                                .map(|b| format!("{} {} {}", b.instance, b.address, b.health))
                                .collect();
                            (
                                lb.name.clone(),
                                format!(
                                    "{} {}; backends: {}",
                                    lb.address,
                                    ports.join(" "),
                                    backends.join(", ")
                                ),
                            )
                        })
                        .collect();
                    b.section("Load balancers", &lbs, "none");
                    b.print()?;
                }
                _ => print_document(format, &n)?,
            }
            Ok(0)
        }
        NetworkCommand::Delete { name } => {
            let _: Network = client.call("DELETE", &path(&name))?;
            Ok(0)
        }
        NetworkCommand::Attach {
            network,
            instance,
            ip,
            mac,
            vlan,
            ingress,
            egress,
        } => {
            let n: Network = client.send(
                "POST",
                &format!("{}/attach", path(&network)),
                &NicAttach {
                    instance: instance.clone(),
                    ip,
                    mac,
                    vlan,
                    ingress,
                    egress,
                },
            )?;
            if let Some(l) = n.leases.iter().find(|l| l.instance == instance) {
                println(format!("{instance} {}: {} {}", l.interface, l.ip, l.mac))?;
            }
            Ok(0)
        }
        NetworkCommand::Detach { network, instance } => {
            let _: Network = client.send(
                "POST",
                &format!("{}/detach", path(&network)),
                &NicAttach {
                    instance,
                    ip: None,
                    mac: None,
                    vlan: None,
                    ingress: None,
                    egress: None,
                },
            )?;
            Ok(0)
        }
        NetworkCommand::Limits {
            network,
            instance,
            ingress,
            egress,
        } => {
            let n: Network = if ingress.is_none() && egress.is_none() {
                client.get(&path(&network))?
            } else {
                client.send(
                    "PUT",
                    &format!(
                        "{}/nics/{}/limits",
                        path(&network),
                        encode_segment(&instance)
                    ),
                    &NicLimits { ingress, egress },
                )?
            };
            let lease = n
                .leases
                .iter()
                .find(|l| l.instance == instance)
                .ok_or_else(|| anyhow!("{instance} has no NIC on {network}"))?;
            println(format!(
                "{instance} on {network}: ingress {}, egress {}",
                lease.ingress.as_deref().unwrap_or("none"),
                lease.egress.as_deref().unwrap_or("none")
            ))?;
            Ok(0)
        }
        NetworkCommand::Lb(LbCommand::Add {
            network,
            name,
            address,
            ports,
            backends,
            check_interval_ms,
            check_timeout_ms,
            rise,
            fall,
            check_port,
        }) => {
            let ports = ports
                .iter()
                .map(|p| {
                    let parts: Vec<&str> = p.split(':').collect();
                    let [proto, listen, target] = parts[..] else {
                        return Err(anyhow!(
                            "--port takes PROTOCOL:LISTEN:TARGET, e.g. tcp:80:8080, not {p:?}"
                        ));
                    };
                    let port = |s: &str| {
                        s.parse::<u16>()
                            .map_err(|_| anyhow!("{s:?} in --port {p:?} is not a port number"))
                    };
                    Ok(LbPortSpec {
                        protocol: proto.to_string(),
                        listen_port: port(listen)?,
                        target_port: port(target)?,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let n: Network = client.send(
                "POST",
                &format!("{}/load-balancers", path(&network)),
                &NetworkLoadBalancer {
                    name: name.clone(),
                    address,
                    ports,
                    backends,
                    health_check: LbHealthCheckSpec {
                        interval_ms: check_interval_ms,
                        timeout_ms: check_timeout_ms,
                        rise,
                        fall,
                        port: check_port,
                    },
                    status: Vec::new(),
                },
            )?;
            if let Some(lb) = n.load_balancers.iter().find(|l| l.name == name) {
                for b in &lb.status {
                    println(format!("{} {}: {}", b.instance, b.address, b.health))?;
                }
            }
            Ok(0)
        }
        NetworkCommand::Lb(LbCommand::Delete { network, name }) => {
            let _: Network = client.call(
                "DELETE",
                &format!(
                    "{}/load-balancers/{}",
                    path(&network),
                    encode_segment(&name)
                ),
            )?;
            Ok(0)
        }
        NetworkCommand::Forward(ForwardCommand::Add {
            network,
            port,
            to,
            protocol,
            address,
        }) => {
            let (instance, target) = to
                .rsplit_once(':')
                .ok_or_else(|| anyhow!("--to takes INSTANCE:PORT, not {to:?}"))?;
            let target_port: u16 = target
                .parse()
                .map_err(|_| anyhow!("{target:?} is not a port number"))?;
            let _: Network = client.send(
                "POST",
                &format!("{}/forwards", path(&network)),
                &NetworkForward {
                    protocol,
                    listen_address: address,
                    listen_port: port,
                    instance: instance.into(),
                    target_port,
                },
            )?;
            Ok(0)
        }
        NetworkCommand::Forward(ForwardCommand::Delete {
            network,
            port,
            protocol,
            legacy_protocol,
            legacy_port,
        }) => {
            let (protocol, port) = delete_target(port, protocol, legacy_protocol, legacy_port)?;
            let _: Network = client.call(
                "DELETE",
                &format!(
                    "{}/forwards/{}/{port}",
                    path(&network),
                    encode_segment(&protocol)
                ),
            )?;
            Ok(0)
        }
        NetworkCommand::Forward(ForwardCommand::List { network, format }) => {
            // `forward list REMOTE:` lists every network of that remote.
            let nets: Vec<Network> = match network.filter(|n| !n.is_empty()) {
                Some(n) => vec![client.get(&path(&n))?],
                None => client.get("/1.0/networks")?,
            };
            let rows: Vec<ForwardRow> = nets
                .iter()
                .flat_map(|n| {
                    n.forwards.iter().map(|f| ForwardRow {
                        network: n.name.clone(),
                        protocol: f.protocol.clone(),
                        listen_address: f.listen_address.clone(),
                        listen_port: f.listen_port,
                        instance: f.instance.clone(),
                        target_port: f.target_port,
                        target_address: n
                            .leases
                            .iter()
                            .find(|l| l.instance == f.instance)
                            .map(|l| l.ip.clone()),
                    })
                })
                .collect();
            match format {
                Format::Table => forwards_table(&rows).print()?,
                _ => print_document(format, &rows)?,
            }
            Ok(0)
        }
        NetworkCommand::Acl(AclCommand::Set {
            network,
            instance,
            rules,
            file,
        }) => {
            let rules = match (rules, file) {
                (Some(r), _) => r,
                (None, Some(f)) => std::fs::read_to_string(&f)
                    .with_context(|| format!("cannot read {}", f.display()))?,
                (None, None) => return Err(anyhow!("give --rules TEXT or --file FILE")),
            };
            let target = match instance {
                Some(i) => format!("{}/nics/{}/acl", path(&network), encode_segment(&i)),
                None => format!("{}/acl", path(&network)),
            };
            let _: Network = client.send("PUT", &target, &NetworkAclSet { rules })?;
            Ok(0)
        }
    }
}

/// One published port, as `forward list` shows it.
#[derive(Debug, serde::Serialize)]
struct ForwardRow {
    network: String,
    protocol: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    listen_address: Option<String>,
    listen_port: u16,
    instance: String,
    target_port: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    target_address: Option<String>,
}

fn forwards_table(rows: &[ForwardRow]) -> Table {
    let mut t = Table::new(&["NETWORK", "PROTOCOL", "LISTEN", "TARGET"]);
    for r in rows {
        t.row(vec![
            r.network.clone(),
            r.protocol.clone(),
            format!(
                "{}:{}",
                r.listen_address.as_deref().unwrap_or("*"),
                r.listen_port
            ),
            match &r.target_address {
                Some(a) => format!("{}:{} ({a})", r.instance, r.target_port),
                None => format!("{}:{}", r.instance, r.target_port),
            },
        ]);
    }
    t
}

/// What `forward delete` removes: `--port N [--protocol P]`, or the older positional
/// `PROTOCOL PORT` (still taken).
fn delete_target(
    port: Option<u16>,
    protocol: String,
    legacy_protocol: Option<String>,
    legacy_port: Option<u16>,
) -> Result<(String, u16)> {
    match (port, legacy_protocol, legacy_port) {
        (Some(p), None, None) => Ok((protocol, p)),
        (None, Some(proto), Some(p)) => Ok((proto, p)),
        (None, Some(word), None) => match word.parse::<u16>() {
            // `forward delete lan 8080`: a port alone, TCP unless --protocol says otherwise.
            Ok(p) => Ok((protocol, p)),
            Err(_) => Err(anyhow!(
                "give the port: vessel network forward delete NETWORK --port PORT [--protocol {word}]"
            )),
        },
        (Some(_), Some(_), _) => Err(anyhow!(
            "give the port once: --port PORT (with --protocol), or the older PROTOCOL PORT"
        )),
        _ => Err(anyhow!(
            "give the port: vessel network forward delete NETWORK --port PORT [--protocol udp]"
        )),
    }
}

/// `admin init`.
pub fn admin_init(client: &Client, subnet: Option<String>, format: Format) -> Result<i32> {
    let r: AdminInitResult = client.send("POST", "/1.0/admin/init", &AdminInit { subnet })?;
    match format {
        Format::Table => println(format!(
            "Default network {} {}: subnet {}, gateway {}, bridge {}",
            r.network.name,
            if r.created { "made" } else { "already there" },
            r.network.subnet,
            r.network.gateway,
            r.network.bridge
        ))?,
        _ => print_document(format, &r)?,
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_delete_takes_flags_and_the_older_positional_form() {
        let t = |port, proto: &str, lp: Option<&str>, lport| {
            delete_target(port, proto.into(), lp.map(String::from), lport)
        };
        assert_eq!(
            t(Some(8080), "tcp", None, None).unwrap(),
            ("tcp".into(), 8080)
        );
        assert_eq!(t(Some(53), "udp", None, None).unwrap(), ("udp".into(), 53));
        assert_eq!(
            t(None, "tcp", Some("udp"), Some(53)).unwrap(),
            ("udp".into(), 53)
        );
        assert_eq!(
            t(None, "tcp", Some("8080"), None).unwrap(),
            ("tcp".into(), 8080)
        );
        assert!(t(None, "tcp", Some("udp"), None).is_err());
        assert!(t(None, "tcp", None, None).is_err());
        assert!(t(Some(1), "tcp", Some("udp"), Some(2)).is_err());
    }

    #[test]
    fn forwards_table_shows_listen_and_target() {
        let rows = [ForwardRow {
            network: "lan".into(),
            protocol: "tcp".into(),
            listen_address: None,
            listen_port: 8080,
            instance: "web".into(),
            target_port: 80,
            target_address: Some("10.42.0.2".into()),
        }];
        let text = forwards_table(&rows).render();
        assert!(
            text.contains("| lan     | tcp      | *:8080 | web:80 (10.42.0.2) |"),
            "{text}"
        );
    }
}
