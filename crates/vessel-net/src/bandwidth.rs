//! Bandwidth limits per NIC with `tc` (Debian package `iproute2`).
//!
//! Directions are the instance's, as a user sets them (`limits.ingress`/`limits.egress`):
//! - ingress (into the instance) is what the NIC's host-side device (veth or tap) transmits:
//!   a `tbf` root qdisc on that device;
//! - egress (out of the instance) is what the host-side device receives. The kernel cannot
//!   queue received packets, and the police action is not built on every host Vessel targets
//!   (the development hosts lack `act_police`), so received traffic is redirected by a
//!   match-all `u32` filter with `mirred` to an IFB device (`vifb<ifindex>`) whose root is a
//!   `tbf`. Shaping rather than dropping is also kinder to TCP.
//!
//! `tc` is used instead of netlink because tbf and filter requests need the kernel's rate
//! tables and tick conversions, which iproute2 already computes correctly; the engine runs it
//! inside the NIC's namespace like `nft`, and reads the result back with `tc -j`.

use std::process::Stdio;

use serde_json::Value;

use crate::link::{new_link_request, LinkError, Links, IFLA_INFO_KIND, IFLA_LINKINFO};
use crate::netns::NetNs;

/// Queueing latency allowed by the tbf (sets its byte limit together with the rate).
const TBF_LATENCY: &str = "50ms";
/// Smallest burst: a tbf whose bucket cannot hold one full frame passes nothing.
pub const MIN_BURST: u32 = 2048;
/// Smallest rate accepted, in bits per second.
pub const MIN_RATE: u64 = 8_000;

/// Errors setting or reading bandwidth limits.
#[derive(Debug, thiserror::Error)]
pub enum BandwidthError {
    /// The rate is below [`MIN_RATE`].
    #[error("rate {0} bit/s is below the minimum of 8000 bit/s")]
    RateTooLow(u64),
    /// The burst cannot hold a full frame.
    #[error("burst {0} bytes is below the minimum of 2048 bytes")]
    BurstTooSmall(u32),
    /// The `tc` binary could not be started.
    #[error("cannot run tc; install the Debian package `iproute2`")]
    Spawn(#[source] std::io::Error),
    /// tc refused a request.
    #[error("tc {args} failed: {stderr}")]
    Tc {
        /// The arguments given.
        args: String,
        /// What tc printed.
        stderr: String,
    },
    /// tc printed something that is not the JSON expected.
    #[error("cannot understand the output of tc {0}")]
    Output(String),
    /// A link operation failed.
    #[error(transparent)]
    Link(#[from] LinkError),
}

/// A token-bucket limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained rate, bits per second.
    pub rate_bps: u64,
    /// Bucket size in bytes: how much may pass at full speed after a quiet spell.
    pub burst_bytes: u32,
}

impl RateLimit {
    /// A limit at `rate_bps` with a burst of 10 ms of traffic, at least 16 KiB.
    pub fn new(rate_bps: u64) -> Self {
        let burst = (rate_bps / 8 / 100).clamp(16 * 1024, u64::from(u32::MAX));
        Self {
            rate_bps,
            burst_bytes: burst as u32,
        }
    }

    fn check(&self) -> Result<(), BandwidthError> {
        if self.rate_bps < MIN_RATE {
            return Err(BandwidthError::RateTooLow(self.rate_bps));
        }
        if self.burst_bytes < MIN_BURST {
            return Err(BandwidthError::BurstTooSmall(self.burst_bytes));
        }
        Ok(())
    }
}

/// The limits of one NIC, seen from the instance; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BandwidthLimits {
    /// Traffic into the instance.
    pub ingress: Option<RateLimit>,
    /// Traffic out of the instance.
    pub egress: Option<RateLimit>,
}

/// The IFB device carrying a NIC's egress limit, named after the NIC's interface index.
pub fn ifb_name(nic_index: u32) -> String {
    format!("vifb{nic_index}")
}

/// Makes the limits of `nic` (a host-side veth or tap in `ns`) equal to `limits`: sets,
/// changes or removes each direction. Changing a rate replaces the qdisc in place.
pub fn set_bandwidth(
    ns: &NetNs,
    nic: &str,
    limits: &BandwidthLimits,
) -> Result<(), BandwidthError> {
    for limit in [limits.ingress, limits.egress].into_iter().flatten() {
        limit.check()?;
    }
    let mut links = Links::open(ns)?;
    let index = links.index(nic)?;
    let current = read_bandwidth(ns, &mut links, nic, index)?;

    match limits.ingress {
        Some(limit) => replace_tbf(ns, nic, limit)?,
        None if current.ingress.is_some() => {
            tc(ns, &["qdisc", "del", "dev", nic, "root"])?;
        }
        None => {}
    }

    let ifb = ifb_name(index);
    match limits.egress {
        Some(limit) => {
            if links.find(&ifb)?.is_none() {
                let mut req = new_link_request(&ifb);
                req.begin_nest(IFLA_LINKINFO)
                    .attr_str(IFLA_INFO_KIND, "ifb")
                    .end_nest();
                links.call(&mut req, &format!("creation of ifb {ifb}"))?;
            }
            links.set_up(&ifb, true)?;
            replace_tbf(ns, &ifb, limit)?;
            if redirect_target(ns, nic)?.as_deref() != Some(ifb.as_str()) {
                let _ = tc(ns, &["qdisc", "del", "dev", nic, "ingress"]);
                tc(
                    ns,
                    &["qdisc", "add", "dev", nic, "handle", "ffff:", "ingress"],
                )?;
                tc(
                    ns,
                    &[
                        "filter", "add", "dev", nic, "parent", "ffff:", "protocol", "all", "prio",
                        "1", "u32", "match", "u32", "0", "0", "action", "mirred", "egress",
                        "redirect", "dev", &ifb,
                    ],
                )?;
            }
        }
        None => {
            if current.egress.is_some() || redirect_target(ns, nic)?.is_some() {
                tc(ns, &["qdisc", "del", "dev", nic, "ingress"])?;
            }
            if links.find(&ifb)?.is_some() {
                links.delete(&ifb)?;
            }
        }
    }
    tracing::info!(nic = %nic, ingress = ?limits.ingress, egress = ?limits.egress, "bandwidth limits set");
    Ok(())
}

/// Removes both limits of `nic` and its IFB device.
pub fn clear_bandwidth(ns: &NetNs, nic: &str) -> Result<(), BandwidthError> {
    set_bandwidth(ns, nic, &BandwidthLimits::default())
}

/// The limits applied to `nic` as the kernel reports them.
pub fn bandwidth(ns: &NetNs, nic: &str) -> Result<BandwidthLimits, BandwidthError> {
    let mut links = Links::open(ns)?;
    let index = links.index(nic)?;
    read_bandwidth(ns, &mut links, nic, index)
}

fn read_bandwidth(
    ns: &NetNs,
    links: &mut Links,
    nic: &str,
    index: u32,
) -> Result<BandwidthLimits, BandwidthError> {
    let ingress = root_tbf(ns, nic)?;
    let ifb = ifb_name(index);
    let egress = match redirect_target(ns, nic)? {
        Some(target) if target == ifb && links.find(&ifb)?.is_some() => root_tbf(ns, &ifb)?,
        _ => None,
    };
    Ok(BandwidthLimits { ingress, egress })
}

fn replace_tbf(ns: &NetNs, dev: &str, limit: RateLimit) -> Result<(), BandwidthError> {
    let rate = format!("{}bit", limit.rate_bps);
    let burst = limit.burst_bytes.to_string();
    tc(
        ns,
        &[
            "qdisc",
            "replace",
            "dev",
            dev,
            "root",
            "tbf",
            "rate",
            &rate,
            "burst",
            &burst,
            "latency",
            TBF_LATENCY,
        ],
    )?;
    Ok(())
}

/// The tbf at the root of `dev`, if that is what its root qdisc is.
fn root_tbf(ns: &NetNs, dev: &str) -> Result<Option<RateLimit>, BandwidthError> {
    let args = ["-j", "qdisc", "show", "dev", dev];
    let json = tc_json(ns, &args)?;
    let bad = || BandwidthError::Output(args.join(" "));
    for q in json.as_array().ok_or_else(bad)? {
        if q["root"] == Value::Bool(true) && q["kind"] == "tbf" {
            let bytes_per_sec = q["options"]["rate"].as_u64().ok_or_else(bad)?;
            let burst = q["options"]["burst"].as_u64().ok_or_else(bad)?;
            return Ok(Some(RateLimit {
                rate_bps: bytes_per_sec * 8,
                burst_bytes: u32::try_from(burst).map_err(|_| bad())?,
            }));
        }
    }
    Ok(None)
}

/// The device `nic`'s received traffic is redirected to, if any.
fn redirect_target(ns: &NetNs, nic: &str) -> Result<Option<String>, BandwidthError> {
    let args = ["-j", "filter", "show", "dev", nic, "ingress"];
    let json = tc_json(ns, &args)?;
    let filters = json
        .as_array()
        .ok_or_else(|| BandwidthError::Output(args.join(" ")))?;
    Ok(filters
        .iter()
        .filter_map(|f| f["options"]["actions"].as_array())
        .flatten()
        .find(|a| a["kind"] == "mirred" && a["mirred_action"] == "redirect")
        .and_then(|a| a["to_dev"].as_str().map(str::to_string)))
}

fn tc_json(ns: &NetNs, args: &[&str]) -> Result<Value, BandwidthError> {
    let out = tc(ns, args)?;
    if out.trim().is_empty() {
        return Ok(Value::Array(Vec::new()));
    }
    serde_json::from_str(&out).map_err(|_| BandwidthError::Output(args.join(" ")))
}

/// Runs tc inside `ns`; its standard output on success.
fn tc(ns: &NetNs, args: &[&str]) -> Result<String, BandwidthError> {
    let out = ns
        .command("tc")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(BandwidthError::Spawn)?;
    if !out.status.success() {
        return Err(BandwidthError::Tc {
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_burst_is_ten_milliseconds_and_at_least_16k() {
        assert_eq!(RateLimit::new(1_000_000).burst_bytes, 16 * 1024);
        assert_eq!(RateLimit::new(1_000_000_000).burst_bytes, 1_250_000);
        assert!(RateLimit::new(100).check().is_err());
        let tiny = RateLimit {
            rate_bps: 1_000_000,
            burst_bytes: 100,
        };
        assert!(matches!(
            tiny.check(),
            Err(BandwidthError::BurstTooSmall(100))
        ));
        assert_eq!(ifb_name(42), "vifb42");
    }
}
