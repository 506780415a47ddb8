//! `KEY=VALUE` arguments: resource limits (`-l memory=256MiB`) and environment (`-e K=V`).

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use vessel_api::{IoThrottle, Limits};

use crate::output::format_bytes;

/// Keys accepted by `--limit`, for help and error messages.
pub const KEYS: &str = "cpu, cpu.weight, cpuset, memory, memory.swap, pids, io.weight, \
                        io.read_bps, io.write_bps, io.read_iops, io.write_iops, disk";

/// Parses every `--limit KEY=VALUE` into one [`Limits`]; a repeated key keeps the last value.
pub fn parse_limits(args: &[String]) -> Result<Limits> {
    let mut limits = Limits::default();
    for arg in args {
        if let Err(e) = apply(&mut limits, arg) {
            bail!("invalid limit '{arg}': {e}");
        }
    }
    Ok(limits)
}

fn apply(limits: &mut Limits, arg: &str) -> Result<(), String> {
    let (key, value) = arg
        .split_once('=')
        .ok_or("expected KEY=VALUE, e.g. memory=256MiB")?;
    let (key, value) = (key.trim(), value.trim());
    if value.is_empty() {
        return Err(format!("no value for '{key}'"));
    }
    match key {
        "cpu" => {
            let cores: f64 = value
                .parse()
                .map_err(|_| format!("'{value}' is not a number of cores (e.g. 0.5 or 2)"))?;
            if !cores.is_finite() || cores <= 0.0 {
                return Err("the number of cores must be more than 0".into());
            }
            limits.cpu = Some(cores);
        }
        "cpu.weight" => limits.cpu_weight = Some(ranged(value, 1, 10_000)?),
        "cpuset" => {
            check_cpuset(value)?;
            limits.cpuset = Some(value.to_string());
        }
        "memory" => {
            let bytes = parse_size(value)?;
            if bytes == 0 {
                return Err("the memory limit must be more than 0".into());
            }
            limits.memory = Some(bytes);
        }
        "memory.swap" => limits.memory_swap = Some(parse_size(value)?),
        "disk" => {
            let bytes = parse_size(value)?;
            if bytes == 0 {
                return Err("the root disk's size must be more than 0 (e.g. disk=2GiB)".into());
            }
            limits.disk = Some(bytes);
        }
        "pids" => limits.pids = Some(ranged(value, 1, u64::MAX)?),
        "io.weight" => {
            let w = ranged(value, 10, 1000)?;
            limits.io_weight = Some(u16::try_from(w).map_err(|_| "io.weight is too large")?);
        }
        "io.read_bps" | "io.write_bps" | "io.read_iops" | "io.write_iops" => {
            let (device, amount) = value
                .split_once('=')
                .ok_or_else(|| format!("expected {key}=MAJOR:MINOR=AMOUNT, e.g. {key}=8:0=10MB"))?;
            let device = device.trim();
            check_device(device)?;
            let amount = amount.trim();
            let amount = if key.ends_with("_bps") {
                parse_size(amount)?
            } else {
                ranged(amount, 1, u64::MAX)?
            };
            let throttle = match limits.io_throttle.iter_mut().find(|t| t.device == device) {
                Some(t) => t,
                None => {
                    limits.io_throttle.push(IoThrottle {
                        device: device.to_string(),
                        ..IoThrottle::default()
                    });
                    let last = limits.io_throttle.len() - 1;
                    &mut limits.io_throttle[last]
                }
            };
            let slot = match key {
                "io.read_bps" => &mut throttle.read_bps,
                "io.write_bps" => &mut throttle.write_bps,
                "io.read_iops" => &mut throttle.read_iops,
                _ => &mut throttle.write_iops,
            };
            *slot = Some(amount);
        }
        _ => return Err(format!("unknown key '{key}'; known keys: {KEYS}")),
    }
    Ok(())
}

fn ranged(value: &str, min: u64, max: u64) -> Result<u64, String> {
    let n: u64 = value
        .parse()
        .map_err(|_| format!("'{value}' is not a whole number"))?;
    if n < min || n > max {
        return Err(if max == u64::MAX {
            format!("{n} is too small; use at least {min}")
        } else {
            format!("{n} is out of range; use {min} to {max}")
        });
    }
    Ok(n)
}

fn check_cpuset(value: &str) -> Result<(), String> {
    let bad = || format!("'{value}' is not a CPU list; use e.g. 0, 0-1 or 0,2-3");
    for item in value.split(',') {
        let (lo, hi) = item.split_once('-').unwrap_or((item, item));
        let lo: u32 = lo.trim().parse().map_err(|_| bad())?;
        let hi: u32 = hi.trim().parse().map_err(|_| bad())?;
        if lo > hi {
            return Err(format!("range '{item}' runs backwards in '{value}'"));
        }
    }
    Ok(())
}

fn check_device(device: &str) -> Result<(), String> {
    let ok = device
        .split_once(':')
        .is_some_and(|(maj, min)| maj.parse::<u32>().is_ok() && min.parse::<u32>().is_ok());
    if !ok {
        return Err(format!(
            "'{device}' is not a device number; use MAJOR:MINOR as `lsblk` shows it (e.g. 8:0)"
        ));
    }
    Ok(())
}

pub use vessel_api::size::parse_size;

/// Parses `-e KEY=VALUE` arguments into an environment.
pub fn parse_env(args: &[String]) -> Result<BTreeMap<String, String>> {
    let mut env = BTreeMap::new();
    for arg in args {
        let Some((k, v)) = arg.split_once('=') else {
            bail!("invalid environment variable '{arg}': expected KEY=VALUE, e.g. LANG=C.UTF-8");
        };
        if k.is_empty() {
            bail!("invalid environment variable '{arg}': the name is empty");
        }
        env.insert(k.to_string(), v.to_string());
    }
    Ok(env)
}

/// The limits as `KEY=VALUE` pairs in `--limit` syntax, for people.
pub fn describe(limits: &Limits) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut push = |k: &str, v: String| out.push((k.to_string(), v));
    if let Some(v) = limits.cpu {
        push("cpu", format!("{v}"));
    }
    if let Some(v) = limits.cpu_weight {
        push("cpu.weight", v.to_string());
    }
    if let Some(v) = &limits.cpuset {
        push("cpuset", v.clone());
    }
    if let Some(v) = limits.memory {
        push("memory", format_bytes(v));
    }
    if let Some(v) = limits.memory_swap {
        push("memory.swap", format_bytes(v));
    }
    if let Some(v) = limits.pids {
        push("pids", v.to_string());
    }
    if let Some(v) = limits.io_weight {
        push("io.weight", v.to_string());
    }
    if let Some(v) = limits.disk {
        push("disk", format_bytes(v));
    }
    for t in &limits.io_throttle {
        let d = &t.device;
        if let Some(v) = t.read_bps {
            push("io.read_bps", format!("{d}={}/s", format_bytes(v)));
        }
        if let Some(v) = t.write_bps {
            push("io.write_bps", format!("{d}={}/s", format_bytes(v)));
        }
        if let Some(v) = t.read_iops {
            push("io.read_iops", format!("{d}={v}"));
        }
        if let Some(v) = t.write_iops {
            push("io.write_iops", format!("{d}={v}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(args: &[&str]) -> Result<Limits> {
        parse_limits(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("10B"), Ok(10));
        assert_eq!(parse_size("2KB"), Ok(2000));
        assert_eq!(parse_size("2KiB"), Ok(2048));
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("10MB"), Ok(10_000_000));
        assert_eq!(parse_size("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
        assert_eq!(parse_size("2TiB"), Ok(2 << 40));
        assert!(parse_size("12XB")
            .unwrap_err()
            .starts_with("unknown unit 'XB'"));
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("1.2.3MiB").is_err());
        assert!(parse_size("0.3B").is_err());
        assert!(parse_size("99999999999TiB").is_err());
        assert!(parse_size("-1").is_err());
    }

    #[test]
    fn good_limits() {
        let l = limits(&[
            "cpu=0.5",
            "cpu.weight=200",
            "cpuset=0-1,3",
            "memory=256MiB",
            "memory.swap=0",
            "pids=100",
            "io.weight=500",
            "io.read_bps=8:0=10MB",
            "io.write_iops=8:0=300",
            "io.write_bps=253:1=1MiB",
            "disk=1.5GiB",
        ])
        .unwrap();
        assert_eq!(l.cpu, Some(0.5));
        assert_eq!(l.cpu_weight, Some(200));
        assert_eq!(l.cpuset.as_deref(), Some("0-1,3"));
        assert_eq!(l.memory, Some(256 << 20));
        assert_eq!(l.memory_swap, Some(0));
        assert_eq!(l.pids, Some(100));
        assert_eq!(l.io_weight, Some(500));
        assert_eq!(l.disk, Some(3 << 29));
        assert_eq!(
            l.io_throttle,
            vec![
                IoThrottle {
                    device: "8:0".into(),
                    read_bps: Some(10_000_000),
                    write_iops: Some(300),
                    ..IoThrottle::default()
                },
                IoThrottle {
                    device: "253:1".into(),
                    write_bps: Some(1 << 20),
                    ..IoThrottle::default()
                },
            ]
        );
        assert_eq!(limits(&[]).unwrap(), Limits::default());
    }

    #[test]
    fn bad_limits() {
        let cases = [
            (
                "memory=12XB",
                "invalid limit 'memory=12XB': unknown unit 'XB'; use B, KiB, MiB, GiB",
            ),
            ("memory", "invalid limit 'memory': expected KEY=VALUE"),
            ("memory=", "invalid limit 'memory=': no value for 'memory'"),
            ("memory=0", "the memory limit must be more than 0"),
            ("cpu=abc", "'abc' is not a number of cores"),
            ("cpu=0", "must be more than 0"),
            ("cpu=NaN", "must be more than 0"),
            ("cpu.weight=0", "0 is out of range; use 1 to 10000"),
            ("cpu.weight=20000", "out of range"),
            ("cpuset=a-b", "is not a CPU list"),
            ("cpuset=3-1", "runs backwards"),
            ("pids=0", "0 is too small; use at least 1"),
            ("pids=-5", "'-5' is not a whole number"),
            ("io.weight=5", "5 is out of range; use 10 to 1000"),
            (
                "io.read_bps=10MB",
                "expected io.read_bps=MAJOR:MINOR=AMOUNT",
            ),
            ("io.read_bps=sda=10MB", "'sda' is not a device number"),
            ("io.read_iops=8:0=fast", "'fast' is not a whole number"),
            ("disk=0", "the root disk's size must be more than 0"),
            ("disk=2GB1", "unknown unit 'GB1'"),
            ("disk=lots", "unknown unit 'lots'"),
            ("size=10GiB", "unknown key 'size'; known keys: cpu, "),
        ];
        for (arg, want) in cases {
            let err = limits(&[arg]).unwrap_err().to_string();
            assert!(err.contains(want), "{arg}: got '{err}', want '{want}'");
            assert!(
                err.starts_with(&format!("invalid limit '{arg}': ")),
                "{err}"
            );
        }
    }

    #[test]
    fn env_pairs() {
        let env = parse_env(&["A=1".into(), "B=x=y".into(), "C=".into()]).unwrap();
        assert_eq!(env["A"], "1");
        assert_eq!(env["B"], "x=y");
        assert_eq!(env["C"], "");
        assert!(parse_env(&["NOEQUALS".into()]).is_err());
        assert!(parse_env(&["=v".into()]).is_err());
    }

    #[test]
    fn describe_round_trips_keys() {
        let l = limits(&[
            "memory=256MiB",
            "io.read_bps=8:0=1MiB",
            "cpu=1.5",
            "disk=2GiB",
        ])
        .unwrap();
        let d = describe(&l);
        assert_eq!(
            d,
            vec![
                ("cpu".to_string(), "1.5".to_string()),
                ("memory".to_string(), "256MiB".to_string()),
                ("disk".to_string(), "2GiB".to_string()),
                ("io.read_bps".to_string(), "8:0=1MiB/s".to_string()),
            ]
        );
    }
}
