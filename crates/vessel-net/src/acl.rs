//! Network ACLs: a small rule language, rendered per network and per NIC into one nftables
//! `bridge` table that is replaced in a single transaction.
//!
//! A rule reads `ACTION DIRECTION [PROTOCOL] [from LIST] [to LIST] [port LIST]`, e.g.
//! `allow ingress tcp from 10.0.0.0/8,@web port 80,8000-8080`. Directions are the instance's
//! (ingress = into it). `from`/`to` take CIDRs, addresses and `@set` names that the caller
//! resolves to addresses (instance sets); `port` (destination ports, with tcp or udp) takes
//! ports and ranges.
//!
//! Filtering happens on the bridge ports (the NICs' host-side devices) in the `bridge` family:
//! frames coming from a NIC are its egress (`prerouting`, `iifname`), frames leaving through a
//! NIC are its ingress (`postrouting`, `oifname`), so traffic between two instances of one
//! bridge is filtered as well as traffic to the gateway. Each NIC's chain holds its own rules,
//! then the network's, then the network's default action. ARP, DHCP and DNS to the gateway
//! always pass. Where the kernel tracks connections on bridges (`nf_conntrack_bridge`), replies
//! pass by connection state; where it does not ([`AclMode::Stateless`]), a rule only governs
//! who may open a TCP connection (segments other than the initial SYN always pass) and ICMP
//! replies and errors always pass; UDP replies need their own rule.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::net::Ipv4Addr;
use std::str::FromStr;

use crate::link::validate_ifname;
use crate::nat::{apply_script, list_table_in, remove_script_in, NftError};
use crate::netns::NetNs;

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AclAction {
    /// Let the traffic pass.
    Allow,
    /// Drop it.
    Deny,
}

/// Seen from the instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Into the instance.
    Ingress,
    /// Out of the instance.
    Egress,
}

/// Protocol a rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AclProtocol {
    /// Every protocol.
    Any,
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// ICMP.
    Icmp,
}

/// An IPv4 network in CIDR form (/0 to /32), without host bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cidr {
    /// Network address.
    pub addr: Ipv4Addr,
    /// Prefix length.
    pub prefix: u8,
}

impl Cidr {
    fn mask(self) -> u32 {
        u32::MAX
            .checked_shl(32 - u32::from(self.prefix))
            .unwrap_or(0)
    }

    /// Whether `other` lies entirely inside this network.
    pub fn contains(self, other: Cidr) -> bool {
        other.prefix >= self.prefix && u32::from(other.addr) & self.mask() == u32::from(self.addr)
    }
}

impl From<Ipv4Addr> for Cidr {
    fn from(addr: Ipv4Addr) -> Self {
        Self { addr, prefix: 32 }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.prefix == 32 {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.prefix)
        }
    }
}

/// One element of a `from`/`to` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddrMatch {
    /// A network or single address.
    Cidr(Cidr),
    /// A named set of instances, resolved by the caller ([`NetworkAcl::sets`]).
    Set(String),
}

/// A destination port or inclusive range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    /// First port.
    pub start: u16,
    /// Last port (equal to `start` for a single port).
    pub end: u16,
}

/// One ACL rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclRule {
    /// Allow or deny.
    pub action: AclAction,
    /// Into or out of the instance.
    pub direction: Direction,
    /// Protocol matched.
    pub protocol: AclProtocol,
    /// Source addresses; empty matches any.
    pub from: Vec<AddrMatch>,
    /// Destination addresses; empty matches any.
    pub to: Vec<AddrMatch>,
    /// Destination ports (tcp and udp only); empty matches any.
    pub ports: Vec<PortRange>,
}

/// Why a rule could not be parsed: where, what was expected and what was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: expected {expected}, found {found}")]
pub struct ParseError {
    /// Line, from 1.
    pub line: usize,
    /// Column (characters), from 1.
    pub column: usize,
    /// What the parser wanted there.
    pub expected: String,
    /// What it found (quoted), or "end of rule".
    pub found: String,
}

struct Token<'a> {
    text: &'a str,
    column: usize,
}

fn tokens(line: &str) -> Vec<Token<'_>> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in line
        .char_indices()
        .chain(std::iter::once((line.len(), ' ')))
    {
        match (c.is_whitespace(), start) {
            (true, Some(s)) => {
                out.push(Token {
                    text: &line[s..i],
                    column: line[..s].chars().count() + 1,
                });
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    out
}

struct Parser<'a> {
    toks: Vec<Token<'a>>,
    pos: usize,
    line: usize,
    end_column: usize,
}

impl<'a> Parser<'a> {
    fn error(&self, expected: impl Into<String>, at: Option<(&str, usize)>) -> ParseError {
        let (found, column) = match at {
            Some((text, column)) => (format!("{text:?}"), column),
            None => ("end of rule".to_string(), self.end_column),
        };
        ParseError {
            line: self.line,
            column,
            expected: expected.into(),
            found,
        }
    }

    fn next(&mut self) -> Option<&Token<'a>> {
        let t = self.toks.get(self.pos);
        self.pos += 1;
        t
    }

    fn word(&mut self, expected: &str) -> Result<(&'a str, usize), ParseError> {
        match self.toks.get(self.pos) {
            Some(t) => {
                self.pos += 1;
                Ok((t.text, t.column))
            }
            None => Err(self.error(expected, None)),
        }
    }

    /// A comma-separated list, which may continue over tokens that end with a comma.
    fn list(&mut self, expected: &str) -> Result<Vec<(&'a str, usize)>, ParseError> {
        let mut items = Vec::new();
        loop {
            let (text, column) = self.word(expected)?;
            let mut offset = 0;
            for part in text.split(',') {
                if !part.is_empty() {
                    items.push((part, column + text[..offset].chars().count()));
                } else if offset + part.len() < text.len() || text == part {
                    return Err(self.error(
                        expected,
                        Some(("", column + text[..offset].chars().count())),
                    ));
                }
                offset += part.len() + 1;
            }
            if !text.ends_with(',') {
                return Ok(items);
            }
        }
    }
}

impl AclRule {
    /// Parses one rule; `line` is used in errors.
    pub fn parse_line(text: &str, line: usize) -> Result<Self, ParseError> {
        let mut p = Parser {
            toks: tokens(text),
            pos: 0,
            line,
            end_column: text.chars().count() + 1,
        };
        let (w, c) = p.word("allow or deny")?;
        let action = match w {
            "allow" => AclAction::Allow,
            "deny" => AclAction::Deny,
            _ => return Err(p.error("allow or deny", Some((w, c)))),
        };
        let (w, c) = p.word("ingress or egress")?;
        let direction = match w {
            "ingress" => Direction::Ingress,
            "egress" => Direction::Egress,
            _ => return Err(p.error("ingress or egress", Some((w, c)))),
        };
        let mut rule = AclRule {
            action,
            direction,
            protocol: AclProtocol::Any,
            from: Vec::new(),
            to: Vec::new(),
            ports: Vec::new(),
        };
        let proto = match p.toks.get(p.pos).map(|t| t.text) {
            Some("tcp") => Some(AclProtocol::Tcp),
            Some("udp") => Some(AclProtocol::Udp),
            Some("icmp") => Some(AclProtocol::Icmp),
            Some("any") => Some(AclProtocol::Any),
            _ => None,
        };
        if let Some(proto) = proto {
            rule.protocol = proto;
            p.pos += 1;
        }
        let mut seen: Vec<&str> = Vec::new();
        while let Some(t) = p.next() {
            let (kw, column) = (t.text, t.column);
            let expected = if proto.is_none() && seen.is_empty() {
                "a protocol (tcp, udp, icmp, any), from, to or port"
            } else {
                "from, to or port"
            };
            if !matches!(kw, "from" | "to" | "port") {
                return Err(p.error(expected, Some((kw, column))));
            }
            if seen.contains(&kw) {
                return Err(p.error(
                    format!("{kw} at most once (list several values with commas)"),
                    Some((kw, column)),
                ));
            }
            seen.push(kw);
            if kw == "port" {
                if !matches!(rule.protocol, AclProtocol::Tcp | AclProtocol::Udp) {
                    return Err(p.error("ports only after protocol tcp or udp", Some((kw, column))));
                }
                const WANT: &str = "a port or range (1-65535, N-M with N <= M)";
                for (item, col) in p.list(WANT)? {
                    let range =
                        parse_port_range(item).ok_or_else(|| p.error(WANT, Some((item, col))))?;
                    rule.ports.push(range);
                }
            } else {
                const WANT: &str = "an address, a CIDR without host bits, or @set";
                let mut out = Vec::new();
                for (item, col) in p.list(WANT)? {
                    out.push(parse_addr_match(item).map_err(|why| {
                        p.error(why.unwrap_or(WANT.to_string()), Some((item, col)))
                    })?);
                }
                if kw == "from" {
                    rule.from = out;
                } else {
                    rule.to = out;
                }
            }
        }
        Ok(rule)
    }
}

impl FromStr for AclRule {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AclRule::parse_line(s, 1)
    }
}

/// Most rules one text holds (each becomes a rule in every NIC's chain).
pub const MAX_RULES: usize = 1024;

/// Parses rules one per line; blank lines and `#` comments are skipped. More than
/// [`MAX_RULES`] rules are refused.
pub fn parse_rules(text: &str) -> Result<Vec<AclRule>, ParseError> {
    let rules: Vec<AclRule> = text
        .lines()
        .enumerate()
        .filter_map(|(i, line)| {
            let line = line.split('#').next().unwrap_or_default();
            (!line.trim().is_empty()).then(|| AclRule::parse_line(line, i + 1))
        })
        .take(MAX_RULES + 1)
        .collect::<Result<_, _>>()?;
    if rules.len() > MAX_RULES {
        let line = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.split('#').next().unwrap_or_default().trim().is_empty())
            .nth(MAX_RULES)
            .map_or(0, |(i, _)| i + 1);
        return Err(ParseError {
            line,
            column: 1,
            expected: format!("at most {MAX_RULES} rules"),
            found: format!("rule {}", MAX_RULES + 1),
        });
    }
    Ok(rules)
}

fn parse_port_range(s: &str) -> Option<PortRange> {
    let port = |p: &str| p.parse::<u16>().ok().filter(|p| *p != 0);
    let (start, end) = match s.split_once('-') {
        Some((a, b)) => (port(a)?, port(b)?),
        None => (port(s)?, port(s)?),
    };
    (start <= end).then_some(PortRange { start, end })
}

/// `Err(Some(why))` for a specific complaint, `Err(None)` for "not an address at all".
fn parse_addr_match(s: &str) -> Result<AddrMatch, Option<String>> {
    if let Some(name) = s.strip_prefix('@') {
        return if valid_set_name(name) {
            Ok(AddrMatch::Set(name.to_string()))
        } else {
            Err(Some(
                "a set name of a-z, A-Z, 0-9, '-' and '_' after @".into(),
            ))
        };
    }
    let (addr, prefix) = match s.split_once('/') {
        Some((a, p)) => (a, p.parse::<u8>().ok().filter(|p| *p <= 32).ok_or(None)?),
        None => (s, 32),
    };
    let addr: Ipv4Addr = addr.parse().map_err(|_| None)?;
    let cidr = Cidr { addr, prefix };
    let network = Ipv4Addr::from(u32::from(addr) & cidr.mask());
    if network != addr {
        return Err(Some(format!(
            "a CIDR without host bits ({network}/{prefix})"
        )));
    }
    Ok(AddrMatch::Cidr(cidr))
}

fn valid_set_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Errors rendering or applying a network's ACLs.
#[derive(Debug, thiserror::Error)]
pub enum AclError {
    /// A rule names a set the caller did not resolve.
    #[error("rule refers to unknown set @{0}")]
    UnknownSet(String),
    /// A NIC name is not a valid interface name.
    #[error("invalid NIC name {0:?}")]
    InvalidNic(String),
    /// A NIC is listed twice.
    #[error("NIC {0:?} is listed twice")]
    DuplicateNic(String),
    /// nft refused the table (the previous rules stay) or could not run.
    #[error(transparent)]
    Nft(#[from] NftError),
}

/// How replies are recognised, depending on what the kernel offers on bridges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AclMode {
    /// Connection tracking on bridges: replies of allowed flows pass by state.
    Stateful,
    /// No bridge conntrack: rules govern TCP connection opening (SYN) and non-reply ICMP.
    Stateless,
}

/// The ACLs of one NIC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicAcl {
    /// The NIC's host-side device (bridge port).
    pub name: String,
    /// Rules checked before the network's.
    pub rules: Vec<AclRule>,
}

/// Everything filtered on one network: the table `bridge vacl-<network>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkAcl {
    /// Network name.
    pub network: String,
    /// The network's gateway (DNS to it always passes), if it has one.
    pub gateway: Option<Ipv4Addr>,
    /// What happens to traffic into an instance that no rule matched.
    pub default_ingress: AclAction,
    /// What happens to traffic out of an instance that no rule matched.
    pub default_egress: AclAction,
    /// Rules for every NIC of the network (after the NIC's own).
    pub rules: Vec<AclRule>,
    /// The filtered NICs; ports of the bridge not listed here are not filtered.
    pub nics: Vec<NicAcl>,
    /// Named sets, resolved by the caller to the instances' addresses.
    pub sets: BTreeMap<String, Vec<Cidr>>,
}

/// The nftables table of a network's ACLs.
pub fn acl_table_name(network: &str) -> Result<String, AclError> {
    Ok(crate::nat::table_name(network)?.replacen("vessel-", "vacl-", 1))
}

impl NetworkAcl {
    /// Renders the whole table (one nft transaction: create, delete, define again).
    pub fn render(&self, mode: AclMode) -> Result<String, AclError> {
        let table = acl_table_name(&self.network)?;
        let mut seen = Vec::new();
        for nic in &self.nics {
            validate_ifname(&nic.name).map_err(|_| AclError::InvalidNic(nic.name.clone()))?;
            if seen.contains(&&nic.name) {
                return Err(AclError::DuplicateNic(nic.name.clone()));
            }
            seen.push(&nic.name);
        }
        let mut s = format!(
            "table bridge {table} {{}}\ndelete table bridge {table}\ntable bridge {table} {{\n"
        );
        for (dir, hook, key, tag) in [
            (Direction::Egress, "prerouting", "iifname", "out"),
            (Direction::Ingress, "postrouting", "oifname", "in"),
        ] {
            let _ = writeln!(
                s,
                "\tchain {tag} {{\n\t\ttype filter hook {hook} priority filter; policy accept;"
            );
            if !self.nics.is_empty() {
                let map = self
                    .nics
                    .iter()
                    .enumerate()
                    .map(|(i, n)| format!("\"{}\" : jump nic{i}_{tag}", n.name))
                    .collect::<Vec<_>>()
                    .join(", ");
                let _ = writeln!(s, "\t\t{key} vmap {{ {map} }}");
            }
            s.push_str("\t}\n");
            for (i, nic) in self.nics.iter().enumerate() {
                let _ = writeln!(s, "\tchain nic{i}_{tag} {{");
                self.render_chain(&mut s, nic, dir, mode)?;
                s.push_str("\t}\n");
            }
        }
        s.push_str("}\n");
        Ok(s)
    }

    fn render_chain(
        &self,
        s: &mut String,
        nic: &NicAcl,
        dir: Direction,
        mode: AclMode,
    ) -> Result<(), AclError> {
        s.push_str("\t\tether type arp accept\n");
        match mode {
            AclMode::Stateful => {
                s.push_str("\t\tct state established,related accept\n\t\tct state invalid drop\n")
            }
            AclMode::Stateless => s.push_str(
                "\t\tip protocol tcp tcp flags & (syn | ack) != syn accept\n\
                 \t\tip protocol icmp icmp type { echo-reply, destination-unreachable, time-exceeded, parameter-problem } accept\n",
            ),
        }
        match dir {
            Direction::Egress => {
                s.push_str("\t\tip protocol udp udp sport 68 udp dport 67 accept\n");
                if let Some(gw) = self.gateway {
                    let _ = writeln!(
                        s,
                        "\t\tip daddr {gw} meta l4proto {{ tcp, udp }} th dport 53 accept"
                    );
                }
            }
            Direction::Ingress => {
                s.push_str("\t\tip protocol udp udp sport 67 udp dport 68 accept\n");
                if let Some(gw) = self.gateway {
                    let _ = writeln!(
                        s,
                        "\t\tip saddr {gw} meta l4proto {{ tcp, udp }} th sport 53 accept"
                    );
                }
            }
        }
        for rule in nic.rules.iter().chain(&self.rules) {
            if rule.direction != dir {
                continue;
            }
            if let Some(line) = self.render_rule(rule)? {
                let _ = writeln!(s, "\t\t{line}");
            }
        }
        let default = match dir {
            Direction::Ingress => self.default_ingress,
            Direction::Egress => self.default_egress,
        };
        let _ = writeln!(s, "\t\t{}", verdict(default));
        Ok(())
    }

    /// One nft rule, or `None` when an address list resolved to nothing (it can never match).
    fn render_rule(&self, rule: &AclRule) -> Result<Option<String>, AclError> {
        let mut parts = Vec::new();
        for (list, key) in [(&rule.from, "saddr"), (&rule.to, "daddr")] {
            if list.is_empty() {
                continue;
            }
            let mut cidrs = Vec::new();
            for m in list {
                match m {
                    AddrMatch::Cidr(c) => cidrs.push(*c),
                    AddrMatch::Set(name) => cidrs.extend(
                        self.sets
                            .get(name)
                            .ok_or_else(|| AclError::UnknownSet(name.clone()))?,
                    ),
                }
            }
            let cidrs = merge(cidrs);
            if cidrs.is_empty() {
                return Ok(None);
            }
            let text = cidrs
                .iter()
                .map(Cidr::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            parts.push(format!("ip {key} {{ {text} }}"));
        }
        match rule.protocol {
            AclProtocol::Any => {}
            AclProtocol::Icmp => parts.push("ip protocol icmp".into()),
            AclProtocol::Tcp | AclProtocol::Udp => {
                let p = if rule.protocol == AclProtocol::Tcp {
                    "tcp"
                } else {
                    "udp"
                };
                parts.push(format!("ip protocol {p}"));
                if !rule.ports.is_empty() {
                    let ports = rule
                        .ports
                        .iter()
                        .map(|r| {
                            if r.start == r.end {
                                r.start.to_string()
                            } else {
                                format!("{}-{}", r.start, r.end)
                            }
                        })
                        .collect::<Vec<_>>()
                        .join(", ");
                    parts.push(format!("{p} dport {{ {ports} }}"));
                }
            }
        }
        parts.push(verdict(rule.action).to_string());
        Ok(Some(parts.join(" ")))
    }

    /// Renders and applies the table in `ns` in one transaction: on any error the previous
    /// rules stay in force, and no NIC is ever without its rules.
    pub fn apply(&self, ns: &NetNs, mode: AclMode) -> Result<(), AclError> {
        apply_script(ns, &self.render(mode)?)?;
        tracing::info!(network = %self.network, nics = self.nics.len(), ?mode, "acl applied");
        Ok(())
    }
}

/// The current text of a network's ACL table in `ns`, or `None` if it has none.
pub fn list_acl(ns: &NetNs, network: &str) -> Result<Option<String>, AclError> {
    Ok(list_table_in(ns, "bridge", &acl_table_name(network)?)?)
}

/// Removes a network's ACL table; succeeds when it is already gone.
pub fn remove_acl(ns: &NetNs, network: &str) -> Result<(), AclError> {
    let table = acl_table_name(network)?;
    apply_script(ns, &remove_script_in("bridge", &table))?;
    Ok(())
}

/// Whether the kernel tracks connections of bridged traffic in `ns` (a throw-away table with
/// a `ct` rule is loaded and deleted in one transaction).
pub fn probe_acl_mode(ns: &NetNs) -> AclMode {
    let script =
        "table bridge vacl-_probe {\n\tchain c {\n\t\tct state established accept\n\t}\n}\n\
                  delete table bridge vacl-_probe\n";
    match apply_script(ns, script) {
        Ok(()) => AclMode::Stateful,
        Err(_) => AclMode::Stateless,
    }
}

fn verdict(action: AclAction) -> &'static str {
    match action {
        AclAction::Allow => "accept",
        AclAction::Deny => "drop",
    }
}

/// Removes duplicates and networks inside others (nft refuses overlapping set elements).
fn merge(mut cidrs: Vec<Cidr>) -> Vec<Cidr> {
    cidrs.sort_by_key(|c| (c.prefix, c.addr));
    let mut out: Vec<Cidr> = Vec::new();
    for c in cidrs {
        if !out.iter().any(|o| o.contains(c)) {
            out.push(c);
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        match parse_addr_match(s) {
            Ok(AddrMatch::Cidr(c)) => c,
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn rules_parse_with_lists_ranges_and_sets() {
        let r: AclRule = "allow ingress tcp from 10.0.0.0/8, @web to 10.1.2.3 port 80,8000-8080"
            .parse()
            .expect("parse");
        assert_eq!(r.action, AclAction::Allow);
        assert_eq!(r.direction, Direction::Ingress);
        assert_eq!(r.protocol, AclProtocol::Tcp);
        assert_eq!(
            r.from,
            vec![
                AddrMatch::Cidr(cidr("10.0.0.0/8")),
                AddrMatch::Set("web".into())
            ]
        );
        assert_eq!(r.to, vec![AddrMatch::Cidr(cidr("10.1.2.3"))]);
        assert_eq!(
            r.ports,
            vec![
                PortRange { start: 80, end: 80 },
                PortRange {
                    start: 8000,
                    end: 8080
                }
            ]
        );
        let r: AclRule = "deny egress".parse().expect("parse");
        assert_eq!(
            (r.protocol, r.from.len(), r.ports.len()),
            (AclProtocol::Any, 0, 0)
        );
        let rules =
            parse_rules("# comment\n\nallow ingress icmp\n  deny egress udp port 53 # dns\n")
                .expect("parse");
        assert_eq!(rules.len(), 2);
    }

    #[test]
    fn more_than_max_rules_are_refused_where_they_pass_it() {
        let text = "# header\n".to_string() + &"allow ingress\n".repeat(MAX_RULES);
        assert_eq!(parse_rules(&text).unwrap().len(), MAX_RULES);
        let err = parse_rules(&(text + "\ndeny egress\n")).unwrap_err();
        assert_eq!(err.line, MAX_RULES + 3, "{err}");
        assert!(err.to_string().contains("at most 1024 rules"), "{err}");
    }

    #[test]
    fn parse_errors_say_where_and_what_was_expected() {
        let err = |s: &str| s.parse::<AclRule>().expect_err(s);
        let e = err("permit ingress");
        assert_eq!(
            (e.column, e.expected.as_str(), e.found.as_str()),
            (1, "allow or deny", "\"permit\"")
        );
        let e = err("allow");
        assert_eq!((e.column, e.found.as_str()), (6, "end of rule"));
        assert_eq!(e.expected, "ingress or egress");
        let e = err("allow ingress tcp port 80,http");
        assert_eq!((e.column, e.found.as_str()), (27, "\"http\""));
        assert!(e.expected.starts_with("a port or range"));
        let e = err("allow ingress tcp port 90-80");
        assert_eq!(e.column, 24);
        let e = err("allow ingress icmp port 80");
        assert_eq!(
            (e.column, e.expected.as_str()),
            (20, "ports only after protocol tcp or udp")
        );
        let e = err("allow ingress from 10.0.0.5/24");
        assert_eq!(e.column, 20);
        assert_eq!(e.expected, "a CIDR without host bits (10.0.0.0/24)");
        let e = err("allow ingress from 10.0.0.0/33");
        assert!(e.expected.starts_with("an address"));
        let e = err("allow ingress tcp from");
        assert_eq!(e.found, "end of rule");
        let e = err("allow ingress sctp");
        assert_eq!(
            e.expected,
            "a protocol (tcp, udp, icmp, any), from, to or port"
        );
        let e = err("allow ingress from @bad!name");
        assert!(e.expected.contains("set name"));
        let e = err("allow ingress from 10.0.0.1 from 10.0.0.2");
        assert_eq!(e.column, 29);
        let e = err("allow ingress tcp port 80,,81");
        assert_eq!((e.column, e.found.as_str()), (27, "\"\""));
        let e = parse_rules("allow ingress\n\ndeny sideways").expect_err("line 3");
        assert_eq!((e.line, e.column), (3, 6));
        assert_eq!(
            e.to_string(),
            "line 3, column 6: expected ingress or egress, found \"sideways\""
        );
    }

    fn acl() -> NetworkAcl {
        NetworkAcl {
            network: "web".into(),
            gateway: Some(Ipv4Addr::new(10, 0, 0, 1)),
            default_ingress: AclAction::Deny,
            default_egress: AclAction::Allow,
            rules: parse_rules(
                "allow ingress tcp from @front,10.0.0.0/24 port 80\nallow ingress icmp",
            )
            .expect("rules"),
            nics: vec![
                NicAcl {
                    name: "vn1".into(),
                    rules: parse_rules("deny egress icmp").expect("rules"),
                },
                NicAcl {
                    name: "vn2".into(),
                    rules: vec![],
                },
            ],
            sets: [(
                "front".to_string(),
                vec![cidr("10.0.0.2"), cidr("192.168.0.0/16")],
            )]
            .into_iter()
            .collect(),
        }
    }

    #[test]
    fn renders_one_bridge_table_with_a_chain_per_nic_and_direction() {
        let text = acl().render(AclMode::Stateless).expect("render");
        assert!(text.starts_with("table bridge vacl-web {}\ndelete table bridge vacl-web\n"));
        assert!(text.contains("iifname vmap { \"vn1\" : jump nic0_out, \"vn2\" : jump nic1_out }"));
        assert!(text.contains("oifname vmap { \"vn1\" : jump nic0_in, \"vn2\" : jump nic1_in }"));
        // 10.0.0.2 lies inside 10.0.0.0/24, so the set is merged.
        let rule =
            "ip saddr { 10.0.0.0/24, 192.168.0.0/16 } ip protocol tcp tcp dport { 80 } accept";
        assert_eq!(text.matches(rule).count(), 2, "{text}");
        let nic0_out = text
            .split("chain nic0_out {")
            .nth(1)
            .expect("chain")
            .split("\t}")
            .next();
        assert!(nic0_out.is_some_and(|c| c.contains("ip protocol icmp drop")));
        assert!(text.contains("ip daddr 10.0.0.1 meta l4proto { tcp, udp } th dport 53 accept"));
        assert!(text.contains("tcp flags & (syn | ack) != syn accept"));
        assert!(!text.contains("ct state"));
        let stateful = acl().render(AclMode::Stateful).expect("render");
        assert!(stateful.contains("ct state established,related accept"));

        let mut a = acl();
        a.sets.clear();
        assert!(
            matches!(a.render(AclMode::Stateless), Err(AclError::UnknownSet(s)) if s == "front")
        );
        let mut a = acl();
        a.nics[1].name = "vn1".into();
        assert!(matches!(
            a.render(AclMode::Stateless),
            Err(AclError::DuplicateNic(_))
        ));
        let mut a = acl();
        a.sets.insert("front".into(), vec![]);
        a.rules = parse_rules("allow ingress from @front").expect("rules");
        let text = a.render(AclMode::Stateless).expect("render");
        assert!(
            !text.contains("ip saddr {"),
            "an empty set never matches:\n{text}"
        );
    }
}
