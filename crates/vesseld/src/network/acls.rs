//! ACLs: a network's rules and each NIC's own, applied in one transaction.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use vessel_api::{Network, NetworkAclSet};
use vessel_net::{AclAction, NetNs, NetworkAcl, NicAcl};

use super::record::{has_acl, NetworkRecord};
use super::NetworkService;
use crate::error::{chain, Error, Result};

impl NetworkService {
    /// Applies the network's rules and its NICs' own in one transaction; rules that do not
    /// parse or apply leave the previous ones in force.
    pub(super) fn apply_acl(&self, rec: &NetworkRecord) -> Result<()> {
        let ns = NetNs::current();
        if !has_acl(rec) {
            let _ = vessel_net::remove_acl(&ns, &rec.kname());
            return Ok(());
        }
        let acl = render_acl(rec)?;
        acl.apply(&ns, vessel_net::probe_acl_mode(&ns))
            .map_err(|e| Error::invalid(format!("ACL: {}", chain(&e))))
    }

    /// Replaces a network's ACL; a rule set that does not parse or apply leaves the old one.
    pub fn acl_set(&self, network: &str, req: NetworkAclSet) -> Result<Network> {
        check_size(&req)?;
        let _g = self.busy();
        let mut rec = self.record(network)?;
        rec.acl = req.rules;
        self.apply_acl(&rec)?;
        self.put(&rec)?;
        Ok(self.view(&rec))
    }

    /// Replaces the rules of one NIC (checked before the network's); rules that do not
    /// parse or apply leave the old ones.
    pub fn nic_acl_set(
        &self,
        network: &str,
        instance: &str,
        req: NetworkAclSet,
    ) -> Result<Network> {
        check_size(&req)?;
        let _g = self.busy();
        let mut rec = self.record(network)?;
        let Some(l) = rec.leases.iter_mut().find(|l| l.instance == instance) else {
            return Err(Error::not_found(format!(
                "{instance:?} has no NIC on {network:?}; attach it first"
            )));
        };
        l.acl = req.rules;
        self.apply_acl(&rec)?;
        self.put(&rec)?;
        Ok(self.view(&rec))
    }
}

/// The ACL of network `rec` (which has rules: see [`has_acl`]): its rules, each NIC's own,
/// and for each `@NAME` the addresses that instance has here (none for an instance without
/// a NIC here). Refused on a network with IPv6, which the rules would not filter.
pub(super) fn render_acl(rec: &NetworkRecord) -> Result<NetworkAcl> {
    if rec.ipv6.is_some() {
        return Err(Error::invalid(format!(
            "network {:?} has IPv6, and ACLs filter IPv4 only: IPv6 traffic would pass \
             them; use ACLs on IPv4-only networks",
            rec.name
        )));
    }
    let rules = vessel_net::parse_rules(&rec.acl)
        .map_err(|e| Error::invalid(format!("ACL: {}", chain(&e))))?;
    let mut sets: BTreeMap<String, Vec<vessel_net::Cidr>> = BTreeMap::new();
    for l in &rec.leases {
        if let Ok(addr) = l.ip.parse::<Ipv4Addr>() {
            // By the name the network's project knows it by (its instances are that
            // project's): `@web` in a rule of project alpha's network is alpha's web.
            let (_, name) = crate::project::split(&l.instance);
            sets.entry(name.to_string())
                .or_default()
                .push(vessel_net::Cidr { addr, prefix: 32 });
        }
    }
    let mut nics = Vec::new();
    for l in &rec.leases {
        nics.push(NicAcl {
            name: l.host_interface.clone(),
            rules: vessel_net::parse_rules(&l.acl).map_err(|e| {
                Error::invalid(format!("ACL of {}'s NIC: {}", l.instance, chain(&e)))
            })?,
        });
    }
    // `@name` of an instance without a NIC here (detached, or not yet attached) matches
    // nothing rather than failing every later change.
    for r in rules.iter().chain(nics.iter().flat_map(|n| n.rules.iter())) {
        for m in r.from.iter().chain(r.to.iter()) {
            if let vessel_net::AddrMatch::Set(name) = m {
                sets.entry(name.clone()).or_default();
            }
        }
    }
    Ok(NetworkAcl {
        network: rec.kname(),
        gateway: rec.subnet().ok().map(|s| s.gateway()),
        default_ingress: AclAction::Allow,
        default_egress: AclAction::Allow,
        rules,
        nics,
        sets,
    })
}

/// Longest rule text kept for a network or a NIC (its rules become rules of every NIC's
/// chain; the parser takes at most `vessel_net::acl::MAX_RULES` of them).
const MAX_ACL_TEXT: usize = 64 << 10;

fn check_size(req: &NetworkAclSet) -> Result<()> {
    if req.rules.len() > MAX_ACL_TEXT {
        return Err(Error::invalid(format!(
            "the rules are {} bytes; at most {MAX_ACL_TEXT} are kept (use address sets and \
             lists instead of a rule per address)",
            req.rules.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::record::fixture::{lease, network};
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn rules_with_instance_sets_and_nic_rules() {
        let mut lan = network("lan", "10.1.0.0/24");
        lan.leases.push(lease("web", "10.1.0.2"));
        lan.leases.push(lease("db", "10.1.0.3"));
        lan.leases[1].acl = "allow ingress tcp from @web port 5432\ndeny ingress".into();
        lan.acl = "deny ingress from @gone".into();
        let acl = render_acl(&lan).unwrap();
        assert_eq!(acl.network, "lan");
        assert_eq!(acl.gateway, Some("10.1.0.1".parse().unwrap()));
        assert_eq!(acl.rules.len(), 1);
        assert_eq!(acl.nics.len(), 2, "every NIC is filtered");
        assert_eq!(acl.nics[1].name, "vh-db");
        assert_eq!(acl.nics[1].rules.len(), 2);
        let web: Vec<Ipv4Addr> = acl.sets["web"].iter().map(|c| c.addr).collect();
        assert_eq!(web, vec!["10.1.0.2".parse::<Ipv4Addr>().unwrap()]);
        assert!(acl.sets["gone"].is_empty(), "@gone matches nothing");
    }

    /// In a project's network, `@web` is that project's web (stored as `alpha.web`); it
    /// matched nothing, and a deny rule naming it let everything through.
    #[test]
    fn sets_name_instances_as_their_project_does() {
        let mut lan = network("alpha.lan", "10.1.0.0/24");
        lan.leases.push(lease("alpha.web", "10.1.0.2"));
        lan.acl = "deny ingress icmp to @web".into();
        let acl = render_acl(&lan).unwrap();
        let web: Vec<Ipv4Addr> = acl.sets["web"].iter().map(|c| c.addr).collect();
        assert_eq!(web, vec!["10.1.0.2".parse::<Ipv4Addr>().unwrap()]);
        assert!(!acl.sets.contains_key("alpha.web"));
    }

    #[test]
    fn bad_rules_and_ipv6_networks_are_refused() {
        let mut lan = network("lan", "10.1.0.0/24");
        lan.leases.push(lease("web", "10.1.0.2"));
        lan.acl = "permit everything".into();
        let e = render_acl(&lan).unwrap_err();
        assert!(e.message.starts_with("ACL: "), "{e}");
        lan.acl.clear();
        lan.leases[0].acl = "allow sideways".into();
        let e = render_acl(&lan).unwrap_err();
        assert!(e.message.starts_with("ACL of web's NIC"), "{e}");
        lan.leases[0].acl = "deny ingress".into();
        lan.ipv6 = Some("fd42::/64".into());
        let e = render_acl(&lan).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Invalid);
        assert!(e.message.contains("IPv4 only"), "{e}");
    }
}
