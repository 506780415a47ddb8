//! Outbound NAT and port forwards: one nftables table per network, replaced atomically.
//!
//! A ruleset is rendered as text and handed to `nft -f` (Debian package `nftables`) in the
//! caller's namespace. The file creates the table if needed, deletes it and defines it
//! again; nft applies a file as one transaction, so a ruleset the kernel refuses leaves the
//! previous table exactly as it was, and a NIC is never left without its rules.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::process::Stdio;

use crate::ipam::Subnet;
use crate::link::{validate_ifname, LinkError};
use crate::netns::{NetNs, NetNsError};

/// Errors rendering or applying nftables rules.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// The network name cannot be used in a table name.
    #[error("invalid network name {0:?}: 1 to 32 characters from a-z, A-Z, 0-9, '-' and '_'")]
    InvalidNetworkName(String),
    /// The bridge name is not a valid interface name.
    #[error(transparent)]
    InvalidBridge(#[from] LinkError),
    /// A forward's target is not inside the network's subnet.
    #[error("forward target {target} is outside subnet {subnet}")]
    TargetOutsideSubnet {
        /// The target address.
        target: Ipv4Addr,
        /// The network's subnet.
        subnet: Subnet,
    },
    /// A port of 0 was given.
    #[error("port 0 is not a valid forward port")]
    ZeroPort,
    /// The `nft` binary could not be started.
    #[error("cannot run nft; install the Debian package `nftables`")]
    Spawn(#[source] std::io::Error),
    /// nft refused the ruleset; the previous rules are unchanged.
    #[error("nft refused the ruleset (previous rules kept): {stderr}")]
    Refused {
        /// What nft printed.
        stderr: String,
    },
    /// The namespace could not be entered.
    #[error(transparent)]
    Namespace(#[from] NetNsError),
    /// A sysctl could not be written.
    #[error("cannot write {path}")]
    Sysctl {
        /// The sysctl file.
        path: &'static str,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// Transport protocol of a port forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    pub(crate) fn keyword(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// Publishes `listen_port` on the host to `target:target_port` inside the network (DNAT).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortForward {
    /// TCP or UDP.
    pub protocol: Protocol,
    /// Host address to listen on; `None` for every address of the host.
    pub listen_address: Option<Ipv4Addr>,
    /// Host port.
    pub listen_port: u16,
    /// Instance address.
    pub target: Ipv4Addr,
    /// Instance port.
    pub target_port: u16,
}

/// The NAT rules of one bridge network.
#[derive(Debug, Clone)]
pub struct NatRules {
    /// Network name; the table is `vessel-<network>`.
    pub network: String,
    /// The network's bridge.
    pub bridge: String,
    /// The network's subnet, masqueraded when leaving it.
    pub subnet: Subnet,
    /// Published ports.
    pub forwards: Vec<PortForward>,
    /// The network's IPv6 prefix and its length, if it has one: masqueraded when leaving it
    /// (table `ip6 vessel-<network>`, in the same transaction), with the same isolation.
    pub subnet6: Option<(Ipv6Addr, u8)>,
    /// An overlay spanning hosts: what this host routes into it for the other hosts'
    /// instances. See [`Overlay`].
    pub overlay: Option<Overlay>,
}

/// The routed traffic of an overlay network whose hosts share its gateway (address and
/// MAC): an instance answers whatever reaches it through its own host's gateway, so a
/// connection this host routes (a published port or a balancer: translated; or its own,
/// from the gateway address) to an instance on another host is sent from this host's
/// underlay address (`local`), where the answer comes back through that host; and this
/// host's instances reach the other hosts' underlay addresses (`peers`) unmasqueraded, so
/// such answers arrive as they left. Instances talking to each other across hosts are
/// bridged and keep their addresses (also where the bridge hands its frames to these hooks,
/// `br_netfilter`: neither rule matches them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overlay {
    /// The gateway address every host holds.
    pub gateway: Ipv4Addr,
    /// This host's underlay address.
    pub local: Ipv4Addr,
    /// The other hosts' underlay addresses.
    pub peers: Vec<Ipv4Addr>,
    /// The addresses of the instances on the other hosts.
    pub remote: Vec<Ipv4Addr>,
}

/// `{ a, b, ... }`.
fn nft_set(addrs: &[Ipv4Addr]) -> String {
    let list: Vec<String> = addrs.iter().map(Ipv4Addr::to_string).collect();
    format!("{{ {} }}", list.join(", "))
}

/// The nftables table name of a network.
pub fn table_name(network: &str) -> Result<String, NftError> {
    let ok = !network.is_empty()
        && network.len() <= 32
        && network
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(format!("vessel-{network}"))
    } else {
        Err(NftError::InvalidNetworkName(network.to_string()))
    }
}

impl NatRules {
    /// Renders the nft script that atomically replaces this network's table.
    pub fn render(&self) -> Result<String, NftError> {
        let table = table_name(&self.network)?;
        validate_ifname(&self.bridge)?;
        let (br, net) = (&self.bridge, &self.subnet);
        let mut s =
            format!("table ip {table} {{}}\ndelete table ip {table}\ntable ip {table} {{\n");
        // Published ports: what arrives for the host (from elsewhere, from another network or
        // from an instance of this one: hairpin) in prerouting, what the host itself sends
        // (to 127.0.0.1, the gateway or any of its addresses) in output, as Docker does.
        let mut dnat = String::new();
        for f in &self.forwards {
            if f.listen_port == 0 || f.target_port == 0 {
                return Err(NftError::ZeroPort);
            }
            if !net.contains(f.target) {
                return Err(NftError::TargetOutsideSubnet {
                    target: f.target,
                    subnet: *net,
                });
            }
            let daddr = match f.listen_address {
                Some(a) => format!("ip daddr {a}"),
                None => "fib daddr type local".to_string(),
            };
            let _ = writeln!(
                dnat,
                "\t\t{daddr} {proto} dport {lp} dnat to {t}:{tp}",
                proto = f.protocol.keyword(),
                lp = f.listen_port,
                t = f.target,
                tp = f.target_port,
            );
        }
        let _ = write!(
            s,
            "\tchain prerouting {{\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n{dnat}\t}}\n\
             \tchain output {{\n\t\ttype nat hook output priority -100; policy accept;\n{dnat}\t}}\n"
        );
        // The host reaches a published port on 127.0.0.1 only if the bridge routes loopback
        // sources (`route_localnet`, set by the daemon); nothing from the bridge may then
        // address the host's loopback (checked before connection tracking undoes the NAT of
        // replies, so those still pass).
        let _ = write!(
            s,
            "\tchain guard {{\n\t\ttype filter hook prerouting priority raw; policy accept;\n\
             \t\tiifname \"{br}\" ip daddr 127.0.0.0/8 drop\n\t}}\n"
        );
        let mut overlay = String::new();
        if let Some(o) = &self.overlay {
            if !o.remote.is_empty() {
                let remote = nft_set(&o.remote);
                let _ = writeln!(
                    overlay,
                    "\t\toifname \"{br}\" ip daddr {remote} ct status dnat snat to {local}\n\
                     \t\toifname \"{br}\" ip saddr {gw} ip daddr {remote} snat to {local}",
                    local = o.local,
                    gw = o.gateway,
                );
            }
            if !o.peers.is_empty() {
                let _ = writeln!(
                    overlay,
                    "\t\tip saddr {net} ip daddr {} accept",
                    nft_set(&o.peers)
                );
            }
        }
        let _ = write!(
            s,
            "\tchain postrouting {{\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n\
             {overlay}\
             \t\tip saddr {net} ip daddr != {net} masquerade\n\
             \t\tip saddr {net} ip daddr {net} ct status dnat masquerade\n\
             \t\toifname \"{br}\" ip saddr 127.0.0.0/8 masquerade\n\t}}\n\
             \tchain forward {{\n\t\ttype filter hook forward priority filter; policy accept;\n\
             \t\toifname \"{br}\" ct state established,related accept\n\
             \t\toifname \"{br}\" ct status dnat accept\n\
             \t\toifname \"{br}\" iifname != \"{br}\" drop\n\t}}\n}}\n"
        );
        // The IPv6 table: made, or removed, in the same transaction.
        s.push_str(&remove_script_in("ip6", &table));
        if let Some((prefix, len)) = self.subnet6 {
            let net6 = format!("{prefix}/{len}");
            let _ = write!(
                s,
                "table ip6 {table} {{\n\
                 \tchain postrouting {{\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n\
                 \t\tip6 saddr {net6} ip6 daddr != {net6} masquerade\n\t}}\n\
                 \tchain forward {{\n\t\ttype filter hook forward priority filter; policy accept;\n\
                 \t\toifname \"{br}\" ct state established,related accept\n\
                 \t\toifname \"{br}\" iifname != \"{br}\" drop\n\t}}\n}}\n"
            );
        }
        Ok(s)
    }

    /// Renders and applies the rules inside `ns`; on any error the previous table stays.
    pub fn apply(&self, ns: &NetNs) -> Result<(), NftError> {
        let script = self.render()?;
        apply_script(ns, &script)?;
        tracing::info!(network = %self.network, forwards = self.forwards.len(), "nat rules applied");
        Ok(())
    }
}

/// Removes a network's tables (IPv4 and IPv6) from `ns`; succeeds when they are already gone.
pub fn remove_table(ns: &NetNs, network: &str) -> Result<(), NftError> {
    let table = table_name(network)?;
    apply_script(
        ns,
        &format!(
            "{}{}",
            remove_script(&table),
            remove_script_in("ip6", &table)
        ),
    )
}

/// A script that deletes the `ip` table `table` whether or not it exists.
pub(crate) fn remove_script(table: &str) -> String {
    remove_script_in("ip", table)
}

/// A script that deletes `table` of `family` whether or not it exists.
pub(crate) fn remove_script_in(family: &str, table: &str) -> String {
    format!("table {family} {table} {{}}\ndelete table {family} {table}\n")
}

/// The current text of `table` of `family` in `ns`, or `None` if it does not exist.
pub(crate) fn list_table_in(
    ns: &NetNs,
    family: &str,
    table: &str,
) -> Result<Option<String>, NftError> {
    nft(ns, &["list", "table", family, table], None)
}

/// The names of the tables of `family` (`ip`, `ip6`, `bridge`, ...) in `ns`.
pub fn list_tables(ns: &NetNs, family: &str) -> Result<Vec<String>, NftError> {
    let out = nft(ns, &["list", "tables", family], None)?.unwrap_or_default();
    let prefix = format!("table {family} ");
    Ok(out
        .lines()
        .filter_map(|l| l.trim().strip_prefix(&prefix).map(str::to_string))
        .collect())
}

/// The current text of a network's table in `ns`, or `None` if it does not exist.
pub fn list_table(ns: &NetNs, network: &str) -> Result<Option<String>, NftError> {
    let table = table_name(network)?;
    let out = nft(ns, &["list", "table", "ip", &table], None)?;
    Ok(out)
}

/// Applies an nft script in `ns` as one transaction (`nft -f -`): all of it, or none of it.
pub fn apply_script(ns: &NetNs, script: &str) -> Result<(), NftError> {
    nft(ns, &["-f", "-"], Some(script)).and_then(|out| match out {
        Some(_) => Ok(()),
        None => Err(NftError::Refused {
            stderr: "nft failed".into(),
        }),
    })
}

/// Turns IPv4 forwarding on or off inside `ns` (needed for NAT and forwards).
pub fn set_ipv4_forwarding(ns: &NetNs, on: bool) -> Result<(), NftError> {
    const PATH: &str = "/proc/sys/net/ipv4/ip_forward";
    // /proc/sys/net is resolved against the opening thread's namespace.
    ns.run(|| std::fs::write(PATH, if on { "1" } else { "0" }))?
        .map_err(|source| NftError::Sysctl { path: PATH, source })
}

/// Turns `route_localnet` on or off for interface `ifname` inside `ns`: with it on, the
/// kernel routes packets with a loopback source out of (and back in through) that interface,
/// which a published port needs to answer the host's own connections to 127.0.0.1.
pub fn set_route_localnet(ns: &NetNs, ifname: &str, on: bool) -> Result<(), NftError> {
    validate_ifname(ifname)?;
    let path = format!("/proc/sys/net/ipv4/conf/{ifname}/route_localnet");
    ns.run(|| std::fs::write(&path, if on { "1" } else { "0" }))?
        .map_err(|source| NftError::Sysctl {
            path: "/proc/sys/net/ipv4/conf/IFNAME/route_localnet",
            source,
        })
}

/// Runs nft inside `ns`. `Ok(Some(stdout))` on success; for a lookup (`stdin` is `None`) a
/// failure means "no such object" and gives `Ok(None)`; for a script it is `Refused`.
fn nft(ns: &NetNs, args: &[&str], stdin: Option<&str>) -> Result<Option<String>, NftError> {
    let mut cmd = ns.command("nft");
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(NftError::Spawn)?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes()).map_err(NftError::Spawn)?;
    }
    let out = child.wait_with_output().map_err(NftError::Spawn)?;
    if out.status.success() {
        return Ok(Some(String::from_utf8_lossy(&out.stdout).into_owned()));
    }
    if stdin.is_none() {
        return Ok(None);
    }
    Err(NftError::Refused {
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    })
}

/// The name of the bridge table that keeps DHCP on each host of an overlay network.
fn dhcp_local_table(network: &str) -> Result<String, NftError> {
    Ok(table_name(network)?.replacen("vessel-", "vdhcp-", 1))
}

/// The table that keeps DHCP and DHCPv6 on each host of overlay network `network`, whose
/// VXLAN device is `vxlan`: every host's bridge is the same (anycast) gateway with its own
/// dnsmasq, which knows only that host's instances and is authoritative, so a request that
/// crossed to another host would be refused there. Neither requests nor answers cross
/// `vxlan`.
pub fn render_dhcp_local(network: &str, vxlan: &str) -> Result<String, NftError> {
    let table = dhcp_local_table(network)?;
    crate::link::validate_ifname(vxlan)
        .map_err(|_| NftError::InvalidNetworkName(vxlan.to_string()))?;
    let ports = "{ 67, 68, 546, 547 }";
    Ok(format!(
        "{}table bridge {table} {{\n\
         \tchain input {{\n\t\ttype filter hook input priority 0; policy accept;\n\
         \t\tiifname \"{vxlan}\" udp dport {ports} drop\n\t}}\n\
         \tchain forward {{\n\t\ttype filter hook forward priority 0; policy accept;\n\
         \t\tiifname \"{vxlan}\" udp dport {ports} drop\n\
         \t\toifname \"{vxlan}\" udp dport {ports} drop\n\t}}\n\
         \tchain output {{\n\t\ttype filter hook output priority 0; policy accept;\n\
         \t\toifname \"{vxlan}\" udp dport {ports} drop\n\t}}\n}}\n",
        remove_script_in("bridge", &table)
    ))
}

/// Applies [`render_dhcp_local`] in `ns` (replacing what was there).
pub fn keep_dhcp_local(ns: &NetNs, network: &str, vxlan: &str) -> Result<(), NftError> {
    apply_script(ns, &render_dhcp_local(network, vxlan)?)
}

/// Removes the table of [`keep_dhcp_local`]; succeeds when it is already gone.
pub fn remove_dhcp_local(ns: &NetNs, network: &str) -> Result<(), NftError> {
    apply_script(ns, &remove_script_in("bridge", &dhcp_local_table(network)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> NatRules {
        NatRules {
            subnet6: None,
            network: "web".into(),
            bridge: "vbr-web".into(),
            subnet: "10.42.0.0/24".parse().expect("subnet"),
            forwards: vec![PortForward {
                protocol: Protocol::Udp,
                listen_address: Some(Ipv4Addr::new(192, 0, 2, 1)),
                listen_port: 5353,
                target: Ipv4Addr::new(10, 42, 0, 2),
                target_port: 53,
            }],
            overlay: None,
        }
    }

    #[test]
    fn an_overlay_sends_what_it_routes_to_other_hosts_from_its_underlay_address() {
        let mut r = rules();
        r.overlay = Some(Overlay {
            gateway: Ipv4Addr::new(10, 42, 0, 1),
            local: Ipv4Addr::new(198, 51, 100, 2),
            peers: vec![
                Ipv4Addr::new(198, 51, 100, 3),
                Ipv4Addr::new(198, 51, 100, 4),
            ],
            remote: vec![Ipv4Addr::new(10, 42, 0, 20)],
        });
        let text = r.render().expect("render");
        // Translated connections and the host's own only: instances' own traffic to each
        // other is untouched, also when the bridge hands it to these hooks.
        let snat =
            "oifname \"vbr-web\" ip daddr { 10.42.0.20 } ct status dnat snat to 198.51.100.2";
        let own =
            "oifname \"vbr-web\" ip saddr 10.42.0.1 ip daddr { 10.42.0.20 } snat to 198.51.100.2";
        assert!(text.contains(own), "{text}");
        assert!(
            !text.contains("oifname \"vbr-web\" ip daddr { 10.42.0.20 } snat"),
            "{text}"
        );
        let peers = "ip saddr 10.42.0.0/24 ip daddr { 198.51.100.3, 198.51.100.4 } accept";
        let masq = "ip saddr 10.42.0.0/24 ip daddr != 10.42.0.0/24 masquerade";
        let at = |rule: &str| text.find(rule).unwrap_or_else(|| panic!("{rule}:\n{text}"));
        assert!(at(snat) < at(peers) && at(peers) < at(masq), "{text}");
        // Nothing to send elsewhere, no empty set.
        r.overlay = Some(Overlay {
            gateway: Ipv4Addr::new(10, 42, 0, 1),
            local: Ipv4Addr::new(198, 51, 100, 2),
            peers: Vec::new(),
            remote: Vec::new(),
        });
        let text = r.render().expect("render");
        assert!(!text.contains("snat") && !text.contains("{  }"), "{text}");
    }

    #[test]
    fn an_ipv6_prefix_gets_its_own_table_in_the_same_script() {
        let mut r = rules();
        let without = r.render().expect("render");
        assert!(without.contains("delete table ip6 vessel-web"));
        assert!(!without.contains("table ip6 vessel-web {\n"));
        r.subnet6 = Some(("fd42::".parse().expect("v6"), 64));
        let with = r.render().expect("render");
        assert!(with.contains("table ip6 vessel-web {\n"));
        assert!(with.contains("ip6 saddr fd42::/64 ip6 daddr != fd42::/64 masquerade"));
        assert!(with.contains("oifname \"vbr-web\" iifname != \"vbr-web\" drop"));
    }

    #[test]
    fn render_replaces_the_table_and_masquerades_the_subnet() {
        let text = rules().render().expect("render");
        assert!(text.starts_with("table ip vessel-web {}\ndelete table ip vessel-web\n"));
        assert!(text.contains("ip saddr 10.42.0.0/24 ip daddr != 10.42.0.0/24 masquerade"));
        // Hairpin: an instance reaching a published port of its own network.
        assert!(
            text.contains("ip saddr 10.42.0.0/24 ip daddr 10.42.0.0/24 ct status dnat masquerade")
        );
        // The forward answers in prerouting and, for the host's own connections, in output.
        let rule = "ip daddr 192.0.2.1 udp dport 5353 dnat to 10.42.0.2:53";
        assert_eq!(text.matches(rule).count(), 2, "{text}");
        assert!(text.contains("type nat hook output priority -100"));
        assert!(text.contains("oifname \"vbr-web\" iifname != \"vbr-web\" drop"));
    }

    #[test]
    fn forwards_without_an_address_take_what_is_for_the_host() {
        let mut r = rules();
        r.forwards[0].listen_address = None;
        let text = r.render().expect("render");
        let rule = "fib daddr type local udp dport 5353 dnat to 10.42.0.2:53";
        assert_eq!(text.matches(rule).count(), 2, "{text}");
        // The host's own 127.0.0.1 reaches the instance: masqueraded onto the bridge, and
        // nothing from the bridge may address the host's loopback.
        assert!(text.contains("oifname \"vbr-web\" ip saddr 127.0.0.0/8 masquerade"));
        assert!(text.contains("iifname \"vbr-web\" ip daddr 127.0.0.0/8 drop"));
        assert!(
            !text.contains("iifname != \"vbr-web\" fib"),
            "hairpin from the bridge too"
        );
    }

    #[test]
    fn render_refuses_bad_input() {
        let mut r = rules();
        r.network = "bad name;".into();
        assert!(matches!(r.render(), Err(NftError::InvalidNetworkName(_))));
        let mut r = rules();
        r.bridge = "br\"0".into();
        assert!(matches!(r.render(), Err(NftError::InvalidBridge(_))));
        r.bridge = "a bridge".into();
        assert!(matches!(r.render(), Err(NftError::InvalidBridge(_))));
        let mut r = rules();
        r.forwards[0].target = Ipv4Addr::new(10, 9, 0, 2);
        assert!(matches!(
            r.render(),
            Err(NftError::TargetOutsideSubnet { .. })
        ));
        let mut r = rules();
        r.forwards[0].listen_port = 0;
        assert!(matches!(r.render(), Err(NftError::ZeroPort)));
    }

    #[test]
    fn dhcp_stays_on_each_host_of_an_overlay() {
        let t = render_dhcp_local("cn", "vx-cn").unwrap();
        assert!(t.starts_with("table bridge vdhcp-cn {}\ndelete table bridge vdhcp-cn\n"));
        for chain in ["input", "forward", "output"] {
            assert!(t.contains(&format!("chain {chain} {{")), "{t}");
        }
        assert!(
            t.contains("iifname \"vx-cn\" udp dport { 67, 68, 546, 547 } drop"),
            "{t}"
        );
        assert!(
            t.contains("oifname \"vx-cn\" udp dport { 67, 68, 546, 547 } drop"),
            "{t}"
        );
        assert!(render_dhcp_local("cn", "bad name\"").is_err());
        assert!(render_dhcp_local("no/slash", "vx").is_err());
    }
}
