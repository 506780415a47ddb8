//! `vessel-runc update`: runc's flags (or a resources file) turned into an OCI resources block
//! for `vessel_container::update`.

use std::io::Read;

use anyhow::{bail, Context, Result};
use oci_spec::runtime::LinuxResources;
use serde_json::{json, Map, Value};

/// Flags of `update`, as runc has them.
#[derive(Debug, clap::Args)]
pub struct UpdateArgs {
    /// File with the resources to set (OCI linux.resources JSON), or - for standard input; the
    /// other flags are then ignored.
    #[arg(short = 'r', long)]
    pub resources: Option<String>,
    /// Block IO weight, 10 to 1000.
    #[arg(long)]
    pub blkio_weight: Option<u16>,
    /// CPU CFS period in microseconds.
    #[arg(long)]
    pub cpu_period: Option<u64>,
    /// CPU CFS quota in microseconds per period (-1: no limit).
    #[arg(long, allow_negative_numbers = true)]
    pub cpu_quota: Option<i64>,
    /// CPU shares (relative weight).
    #[arg(long = "cpu-share", visible_alias = "cpu-shares")]
    pub cpu_share: Option<u64>,
    /// CPU realtime period in microseconds.
    #[arg(long)]
    pub cpu_rt_period: Option<u64>,
    /// CPU realtime runtime in microseconds per period.
    #[arg(long, allow_negative_numbers = true)]
    pub cpu_rt_runtime: Option<i64>,
    /// CPUs to run on (0-3, 0,1).
    #[arg(long)]
    pub cpuset_cpus: Option<String>,
    /// Memory nodes to use.
    #[arg(long)]
    pub cpuset_mems: Option<String>,
    /// Memory limit (bytes, or with a unit: 64m, 1g; -1: no limit).
    #[arg(long, allow_hyphen_values = true)]
    pub memory: Option<String>,
    /// Memory soft limit (bytes or with a unit).
    #[arg(long, allow_hyphen_values = true)]
    pub memory_reservation: Option<String>,
    /// Memory plus swap limit (bytes or with a unit; -1: unlimited swap).
    #[arg(long, allow_hyphen_values = true)]
    pub memory_swap: Option<String>,
    /// Maximum number of processes (-1: no limit).
    #[arg(long, allow_negative_numbers = true)]
    pub pids_limit: Option<i64>,
    /// Container id.
    pub id: String,
}

/// The resources block the flags (or the file) ask for.
pub fn resources(args: &UpdateArgs) -> Result<LinuxResources> {
    if let Some(source) = &args.resources {
        let mut text = String::new();
        if source == "-" {
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading the resources from standard input")?;
        } else {
            text = std::fs::read_to_string(source)
                .with_context(|| format!("reading the resources file {source}"))?;
        }
        return serde_json::from_str(&text).with_context(|| {
            format!("parsing the resources in {source} (OCI linux.resources JSON)")
        });
    }
    let mut memory = Map::new();
    for (key, value, flag) in [
        ("limit", &args.memory, "--memory"),
        (
            "reservation",
            &args.memory_reservation,
            "--memory-reservation",
        ),
        ("swap", &args.memory_swap, "--memory-swap"),
    ] {
        if let Some(v) = value {
            memory.insert(
                key.into(),
                json!(parse_bytes(v).with_context(|| format!("{flag} {v:?}"))?),
            );
        }
    }
    let mut cpu = Map::new();
    let numbers: [(&str, Option<Value>); 5] = [
        ("shares", args.cpu_share.map(Value::from)),
        ("quota", args.cpu_quota.map(Value::from)),
        ("period", args.cpu_period.map(Value::from)),
        ("realtimeRuntime", args.cpu_rt_runtime.map(Value::from)),
        ("realtimePeriod", args.cpu_rt_period.map(Value::from)),
    ];
    for (key, value) in numbers {
        if let Some(v) = value {
            cpu.insert(key.into(), v);
        }
    }
    if let Some(c) = &args.cpuset_cpus {
        cpu.insert("cpus".into(), json!(c));
    }
    if let Some(m) = &args.cpuset_mems {
        cpu.insert("mems".into(), json!(m));
    }
    let mut block = Map::new();
    if !memory.is_empty() {
        block.insert("memory".into(), Value::Object(memory));
    }
    if !cpu.is_empty() {
        block.insert("cpu".into(), Value::Object(cpu));
    }
    if let Some(w) = args.blkio_weight {
        block.insert("blockIO".into(), json!({ "weight": w }));
    }
    if let Some(p) = args.pids_limit {
        block.insert("pids".into(), json!({ "limit": p }));
    }
    if block.is_empty() {
        bail!("update needs --resources FILE or at least one limit flag (see vessel-runc update --help)");
    }
    Ok(serde_json::from_value(Value::Object(block))?)
}

/// A size like runc (docker's `RAMInBytes`) reads it: a number of bytes, optionally with a
/// binary unit `k`, `m`, `g`, `t` or `p` (`kb`, `KiB` alike); `-1` is no limit.
pub fn parse_bytes(text: &str) -> Result<i64> {
    let t = text.trim();
    if t == "-1" {
        return Ok(-1);
    }
    let lower = t.to_ascii_lowercase();
    let lower = lower.strip_suffix('b').unwrap_or(&lower);
    let lower = lower.strip_suffix('i').unwrap_or(lower);
    let (number, shift) = match lower.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c {
                'k' => 10,
                'm' => 20,
                'g' => 30,
                't' => 40,
                'p' => 50,
                _ => bail!("{text:?}: unknown unit {c:?} (use k, m, g, t or p)"),
            };
            (lower[..i].trim_end(), shift)
        }
        _ => (lower, 0),
    };
    let value: f64 = number
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite() && *v >= 0.0)
        .with_context(|| format!("{text:?} is not a size (like 67108864, 64m or 1g)"))?;
    let bytes = value * (1u64 << shift) as f64;
    if bytes > i64::MAX as f64 {
        bail!("{text:?} is too large");
    }
    Ok(bytes as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_like_runc() {
        assert_eq!(parse_bytes("67108864").unwrap(), 67108864);
        assert_eq!(parse_bytes("64m").unwrap(), 64 << 20);
        assert_eq!(parse_bytes("64M").unwrap(), 64 << 20);
        assert_eq!(parse_bytes("1g").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("512kb").unwrap(), 512 << 10);
        assert_eq!(parse_bytes("1.5k").unwrap(), 1536);
        assert_eq!(parse_bytes("-1").unwrap(), -1);
        for bad in ["", "m", "12x", "-5", "abc"] {
            assert!(parse_bytes(bad).is_err(), "{bad:?} accepted");
        }
    }
}
