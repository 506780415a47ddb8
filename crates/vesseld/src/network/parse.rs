//! Values in network requests: IPv6 prefixes, rates and protocols.

use std::net::Ipv6Addr;

use vessel_api::NetworkLease;
use vessel_net::{BandwidthLimits, Protocol, RateLimit};

use crate::error::{Error, Result};

/// Parses an IPv6 /64 prefix (`fd42::/64`).
pub(super) fn parse_prefix6(text: &str) -> Result<Ipv6Addr> {
    let bad = || {
        Error::invalid(format!(
            "IPv6 prefix {text:?}: give a /64 such as fd42:1:2:3::/64 (instances take SLAAC \
             addresses inside it)"
        ))
    };
    let (addr, len) = text.split_once('/').ok_or_else(bad)?;
    let addr: Ipv6Addr = addr.parse().map_err(|_| bad())?;
    if len != "64" {
        return Err(bad());
    }
    if u128::from(addr) & u128::from(u64::MAX) != 0 {
        return Err(Error::invalid(format!(
            "IPv6 prefix {text:?} has host bits set: use {}/64",
            Ipv6Addr::from(u128::from(addr) & !u128::from(u64::MAX))
        )));
    }
    let first = addr.segments()[0];
    if addr.is_multicast() || (first & 0xffc0) == 0xfe80 || addr.is_unspecified() {
        return Err(Error::invalid(format!(
            "IPv6 prefix {text:?} is multicast, link-local or unspecified"
        )));
    }
    Ok(addr)
}

/// Parses a rate: bits per second with an optional unit `bit`, `kbit`, `Mbit` or `Gbit`.
pub(super) fn parse_rate(text: &str) -> Result<RateLimit> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let mult: f64 = match unit.to_ascii_lowercase().as_str() {
        "" | "bit" => 1.0,
        "kbit" => 1e3,
        "mbit" => 1e6,
        "gbit" => 1e9,
        _ => {
            return Err(Error::invalid(format!(
                "rate {text:?}: use a number of bits per second with kbit, Mbit or Gbit, \
                 e.g. 10Mbit"
            )))
        }
    };
    let n: f64 = num
        .parse()
        .map_err(|_| Error::invalid(format!("rate {text:?}: not a number, e.g. 10Mbit")))?;
    let bps = (n * mult) as u64;
    if bps < vessel_net::bandwidth::MIN_RATE {
        return Err(Error::invalid(format!(
            "rate {text:?} is below the minimum of 8kbit"
        )));
    }
    if bps > 100_000_000_000 {
        return Err(Error::invalid(format!(
            "rate {text:?} is above 100Gbit; leave it out for no limit"
        )));
    }
    Ok(RateLimit::new(bps))
}

pub(super) fn lease_limits(l: &NetworkLease) -> Result<BandwidthLimits> {
    Ok(BandwidthLimits {
        ingress: l.ingress.as_deref().map(parse_rate).transpose()?,
        egress: l.egress.as_deref().map(parse_rate).transpose()?,
    })
}

/// A NIC's limits after a change that names some directions: a named one becomes the rate
/// given (`none` lifts it), one left out stays as it was.
pub(super) fn changed_limits(
    current: (Option<String>, Option<String>),
    ingress: Option<String>,
    egress: Option<String>,
) -> Result<(Option<String>, Option<String>)> {
    let change = |now: Option<String>, asked: Option<String>| -> Result<Option<String>> {
        match asked {
            None => Ok(now),
            Some(v) if v.trim().eq_ignore_ascii_case("none") => Ok(None),
            Some(v) => {
                parse_rate(&v)?;
                Ok(Some(v.trim().to_string()))
            }
        }
    };
    Ok((change(current.0, ingress)?, change(current.1, egress)?))
}

pub(super) fn protocol(p: &str) -> Result<Protocol> {
    match p {
        "tcp" => Ok(Protocol::Tcp),
        "udp" => Ok(Protocol::Udp),
        _ => Err(Error::invalid(format!("protocol {p:?}: use tcp or udp"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn ipv6_prefixes_are_slaac_sized_unicast_and_clean() {
        assert_eq!(
            parse_prefix6("fd42:1:2:3::/64").unwrap(),
            "fd42:1:2:3::".parse::<Ipv6Addr>().unwrap()
        );
        for bad in [
            "fd42::",
            "fd42::/48",
            "zz::/64",
            "ff02::/64",
            "fe80::/64",
            "::/64",
        ] {
            let e = parse_prefix6(bad).unwrap_err();
            assert_eq!(e.kind, ErrorKind::Invalid, "{bad}: {e}");
        }
        let e = parse_prefix6("fd42::1/64").unwrap_err();
        assert!(e.message.contains("use fd42::/64"), "{e}");
    }

    #[test]
    fn rates_take_units_and_stay_in_bounds() {
        assert_eq!(parse_rate("10Mbit").unwrap().rate_bps, 10_000_000);
        assert_eq!(parse_rate(" 1.5gbit ").unwrap().rate_bps, 1_500_000_000);
        assert_eq!(parse_rate("64kbit").unwrap().rate_bps, 64_000);
        assert_eq!(parse_rate("100000").unwrap().rate_bps, 100_000);
        for bad in ["", "fast", "10MB", "1kbit", "101Gbit", "1.2.3Mbit"] {
            assert!(parse_rate(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn lease_limits_read_both_directions() {
        let mut l = super::super::record::fixture::lease("c1", "10.0.0.2");
        assert_eq!(lease_limits(&l).unwrap(), BandwidthLimits::default());
        l.egress = Some("1Mbit".into());
        let limits = lease_limits(&l).unwrap();
        assert_eq!(limits.egress.map(|r| r.rate_bps), Some(1_000_000));
        assert!(limits.ingress.is_none());
        l.ingress = Some("nope".into());
        assert!(lease_limits(&l).is_err());
    }

    #[test]
    fn a_limit_change_touches_only_what_it_names() {
        let now = (Some("50Mbit".to_string()), Some("10Mbit".to_string()));
        let c = |i: Option<&str>, e: Option<&str>| {
            changed_limits(now.clone(), i.map(String::from), e.map(String::from))
        };
        assert_eq!(
            c(Some("20Mbit"), None).unwrap(),
            (Some("20Mbit".into()), Some("10Mbit".into())),
            "egress kept"
        );
        assert_eq!(
            c(None, Some("none")).unwrap(),
            (Some("50Mbit".into()), None)
        );
        assert_eq!(c(Some("NONE"), Some("none")).unwrap(), (None, None));
        assert_eq!(c(None, None).unwrap(), now);
        assert!(c(Some("fast"), None).is_err());
    }

    #[test]
    fn protocols() {
        assert_eq!(protocol("tcp").unwrap(), Protocol::Tcp);
        assert_eq!(protocol("udp").unwrap(), Protocol::Udp);
        assert!(protocol("TCP").is_err() && protocol("icmp").is_err());
    }
}
