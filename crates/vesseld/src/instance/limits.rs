//! Validation of instance limits and their translation into an OCI resources block.

use oci_spec::runtime::{
    LinuxBlockIoBuilder, LinuxCpuBuilder, LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResources,
    LinuxResourcesBuilder, LinuxThrottleDeviceBuilder,
};
use vessel_api::Limits;
use vessel_cgroups::CgroupVersion;

use crate::error::{Error, Result};

/// CFS period used for cpu quotas, microseconds.
const CPU_PERIOD_US: u64 = 100_000;
/// Smallest memory limit accepted: below this not even busybox starts.
const MIN_MEMORY: u64 = 4 << 20;
/// Largest memory (and swap) limit accepted: 1 PiB, more than any host has. Bigger values
/// would overflow the kernel's signed counters or silently mean "unlimited"; leave the limit
/// out for that.
const MAX_MEMORY: u64 = 1 << 50;
/// Largest pids limit: the kernel's own ceiling on process ids (PID_MAX_LIMIT).
const MAX_PIDS: u64 = 4 << 20;
/// Largest I/O rate (bytes or operations per second): 2^50, about a PB/s.
const MAX_IO_RATE: u64 = 1 << 50;
/// Most devices one instance may throttle.
const MAX_IO_DEVICES: usize = 64;

/// Checks every limit; the message names the limit, the bad value and the accepted range.
pub fn validate(l: &Limits) -> Result<()> {
    let host_cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if let Some(cpu) = l.cpu {
        if !(cpu.is_finite() && (0.01..=host_cpus as f64 * 64.0).contains(&cpu)) {
            return Err(Error::invalid(format!(
                "invalid limit cpu={cpu}: give a number of cores from 0.01 to {}",
                host_cpus * 64
            )));
        }
    }
    if let Some(w) = l.cpu_weight {
        if !(1..=10_000).contains(&w) {
            return Err(Error::invalid(format!(
                "invalid limit cpu.weight={w}: use 1 to 10000 (100 is the default share)"
            )));
        }
    }
    if let Some(set) = &l.cpuset {
        let cpus = parse_cpuset(set).ok_or_else(|| {
            Error::invalid(format!(
                "invalid limit cpuset={set:?}: use a list like \"0\", \"0-1\" or \"0,2\""
            ))
        })?;
        if let Some(bad) = cpus.iter().find(|&&c| c >= host_cpus) {
            return Err(Error::invalid(format!(
                "invalid limit cpuset={set:?}: cpu {bad} does not exist; this host has cpus 0-{}",
                host_cpus - 1
            )));
        }
    }
    if let Some(m) = l.memory {
        if !(MIN_MEMORY..=MAX_MEMORY).contains(&m) {
            return Err(Error::invalid(format!(
                "invalid limit memory={m}: use 4 MiB ({MIN_MEMORY} bytes) to 1 PiB \
                 ({MAX_MEMORY} bytes); leave it out for no limit"
            )));
        }
    }
    if let Some(s) = l.memory_swap {
        let Some(m) = l.memory else {
            return Err(Error::invalid(
                "limit memory.swap needs a memory limit too: set memory as well",
            ));
        };
        if s > MAX_MEMORY || m + s > MAX_MEMORY {
            return Err(Error::invalid(format!(
                "invalid limit memory.swap={s}: memory and swap together may be at most 1 PiB \
                 ({MAX_MEMORY} bytes)"
            )));
        }
    }
    if let Some(p) = l.pids {
        if !(1..=MAX_PIDS).contains(&p) {
            return Err(Error::invalid(format!(
                "invalid limit pids={p}: use 1 to {MAX_PIDS}"
            )));
        }
    }
    if let Some(w) = l.io_weight {
        if !(10..=1000).contains(&w) {
            return Err(Error::invalid(format!(
                "invalid limit io.weight={w}: use 10 to 1000"
            )));
        }
    }
    if let Some(d) = l.disk {
        super::root_disk::check_size(d)?;
    }
    if l.io_throttle.len() > MAX_IO_DEVICES {
        return Err(Error::invalid(format!(
            "{} io throttle rules: at most {MAX_IO_DEVICES} devices",
            l.io_throttle.len()
        )));
    }
    for t in &l.io_throttle {
        parse_device(&t.device)?;
        for (what, v) in [
            ("read_bps", t.read_bps),
            ("write_bps", t.write_bps),
            ("read_iops", t.read_iops),
            ("write_iops", t.write_iops),
        ] {
            if let Some(v) = v.filter(|v| !(1..=MAX_IO_RATE).contains(v)) {
                return Err(Error::invalid(format!(
                    "invalid io throttle {what}={v} on {}: use 1 to {MAX_IO_RATE}",
                    crate::error::truncated(&t.device, 32)
                )));
            }
        }
    }
    Ok(())
}

/// Parses "0-2,4" into cpu numbers.
fn parse_cpuset(s: &str) -> Option<Vec<usize>> {
    let mut out = Vec::new();
    for part in s.split(',') {
        let part = part.trim();
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.parse().ok()?, b.parse().ok()?);
                if a > b || b - a > 4096 {
                    return None;
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().ok()?),
        }
    }
    (!out.is_empty()).then_some(out)
}

fn parse_device(d: &str) -> Result<(i64, i64)> {
    d.split_once(':')
        .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)))
        .map(|(a, b)| (i64::from(a), i64::from(b)))
        .ok_or_else(|| {
            Error::invalid(format!(
                "invalid io throttle device {:?}: use MAJOR:MINOR, e.g. 8:0 (see lsblk)",
                crate::error::truncated(d, 32)
            ))
        })
}

/// The OCI resources block for validated limits on a host with this cgroup layout.
///
/// `cpu.weight` keeps its meaning on both layouts: on v2 it is written as is (through the
/// spec's `unified` map), on v1 it becomes `cpu.shares` scaled so that the default weight 100
/// is the default share 1024.
pub fn to_oci(l: &Limits, cgroups: CgroupVersion) -> Result<LinuxResources> {
    let bad = |e: oci_spec::OciSpecError| Error::internal(format!("building resources: {e}"));
    let mut r = LinuxResourcesBuilder::default();
    let mut cpu = LinuxCpuBuilder::default();
    let mut any_cpu = false;
    if let Some(c) = l.cpu {
        cpu = cpu
            .quota((c * CPU_PERIOD_US as f64).round() as i64)
            .period(CPU_PERIOD_US);
        any_cpu = true;
    }
    let mut unified = std::collections::HashMap::new();
    if let Some(w) = l.cpu_weight {
        match cgroups {
            CgroupVersion::V1 => {
                cpu = cpu.shares((w * 1024 / 100).max(2));
                any_cpu = true;
            }
            CgroupVersion::V2 => {
                unified.insert("cpu.weight".to_string(), w.to_string());
            }
        }
    }
    if let Some(set) = &l.cpuset {
        cpu = cpu.cpus(set.clone());
        any_cpu = true;
    }
    if any_cpu {
        r = r.cpu(cpu.build().map_err(bad)?);
    }
    if let Some(m) = l.memory {
        let mut mem = LinuxMemoryBuilder::default().limit(m as i64);
        if let Some(s) = l.memory_swap {
            mem = mem.swap((m + s) as i64);
        }
        r = r.memory(mem.build().map_err(bad)?);
    }
    if let Some(p) = l.pids {
        r = r.pids(
            LinuxPidsBuilder::default()
                .limit(p as i64)
                .build()
                .map_err(bad)?,
        );
    }
    if l.io_weight.is_some() || !l.io_throttle.is_empty() {
        let mut bio = LinuxBlockIoBuilder::default();
        if let Some(w) = l.io_weight {
            bio = bio.weight(w);
        }
        let dev = |d: &str, rate: u64| -> Result<_> {
            let (major, minor) = parse_device(d)?;
            LinuxThrottleDeviceBuilder::default()
                .major(major)
                .minor(minor)
                .rate(rate)
                .build()
                .map_err(bad)
        };
        let (mut rb, mut wb, mut ri, mut wi) = (vec![], vec![], vec![], vec![]);
        for t in &l.io_throttle {
            if let Some(v) = t.read_bps {
                rb.push(dev(&t.device, v)?);
            }
            if let Some(v) = t.write_bps {
                wb.push(dev(&t.device, v)?);
            }
            if let Some(v) = t.read_iops {
                ri.push(dev(&t.device, v)?);
            }
            if let Some(v) = t.write_iops {
                wi.push(dev(&t.device, v)?);
            }
        }
        bio = bio
            .throttle_read_bps_device(rb)
            .throttle_write_bps_device(wb)
            .throttle_read_iops_device(ri)
            .throttle_write_iops_device(wi);
        r = r.block_io(bio.build().map_err(bad)?);
    }
    if !unified.is_empty() {
        r = r.unified(unified);
    }
    r.build().map_err(bad)
}

/// Default cpu weight (the kernel's own).
const DEFAULT_CPU_WEIGHT: u64 = 100;
/// Default v1 block-io weight (the kernel's own; v2's 100 once converted).
const DEFAULT_BLKIO_WEIGHT: u16 = 500;

/// The resources block that changes a live cgroup from limits `old` to `new`: `new`'s
/// limits, and every limit `old` had and `new` lacks lifted (-1) or back to its default
/// (a cpuset lifted is `all_cpus`, what the parent cgroup may use).
pub fn to_oci_update(
    old: &Limits,
    new: &Limits,
    cgroups: CgroupVersion,
    all_cpus: &str,
) -> Result<LinuxResources> {
    let mut r = to_oci(new, cgroups)?;
    let bad = |e: oci_spec::OciSpecError| Error::internal(format!("building resources: {e}"));
    let mut cpu = r.cpu().clone().unwrap_or_default();
    let mut cpu_changed = false;
    if old.cpu.is_some() && new.cpu.is_none() {
        cpu.set_quota(Some(-1));
        cpu.set_period(Some(CPU_PERIOD_US));
        cpu_changed = true;
    }
    if old.cpu_weight.is_some() && new.cpu_weight.is_none() {
        match cgroups {
            CgroupVersion::V1 => {
                cpu.set_shares(Some(1024));
                cpu_changed = true;
            }
            CgroupVersion::V2 => {
                let mut u = r.unified().clone().unwrap_or_default();
                u.insert("cpu.weight".into(), DEFAULT_CPU_WEIGHT.to_string());
                r.set_unified(Some(u));
            }
        }
    }
    if old.cpuset.is_some() && new.cpuset.is_none() {
        cpu.set_cpus(Some(all_cpus.to_string()));
        cpu_changed = true;
    }
    if cpu_changed {
        r.set_cpu(Some(cpu));
    }
    if new.memory.is_none() && old.memory.is_some() {
        r.set_memory(Some(
            LinuxMemoryBuilder::default()
                .limit(-1)
                .swap(-1)
                .build()
                .map_err(bad)?,
        ));
    } else if let (Some(m), None, Some(_)) = (new.memory, new.memory_swap, old.memory_swap) {
        r.set_memory(Some(
            LinuxMemoryBuilder::default()
                .limit(m as i64)
                .swap(-1)
                .build()
                .map_err(bad)?,
        ));
    }
    if new.pids.is_none() && old.pids.is_some() {
        r.set_pids(Some(
            LinuxPidsBuilder::default().limit(-1).build().map_err(bad)?,
        ));
    }
    if new.io_weight.is_none() && old.io_weight.is_some() {
        let mut bio = r.block_io().clone().unwrap_or_default();
        bio.set_weight(Some(DEFAULT_BLKIO_WEIGHT));
        r.set_block_io(Some(bio));
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_values_with_the_range() {
        let e = validate(&Limits {
            memory: Some(1000),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.message.contains("4 MiB"), "{}", e.message);
        let e = validate(&Limits {
            cpu: Some(-1.0),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.message.contains("cpu=-1"), "{}", e.message);
        assert!(validate(&Limits {
            cpuset: Some("0-x".into()),
            ..Default::default()
        })
        .is_err());
        assert!(validate(&Limits {
            cpuset: Some("9999".into()),
            ..Default::default()
        })
        .is_err());
        assert!(validate(&Limits {
            memory_swap: Some(0),
            ..Default::default()
        })
        .is_err());
        assert!(validate(&Limits {
            pids: Some(0),
            ..Default::default()
        })
        .is_err());
    }

    /// Values the kernel would read as negative, as "unlimited", or that overflow when added.
    #[test]
    fn refuses_values_that_overflow_or_mean_unlimited() {
        for m in [u64::MAX, 9_223_372_036_854_775_808, (1 << 50) + 1] {
            let e = validate(&Limits {
                memory: Some(m),
                ..Default::default()
            })
            .unwrap_err();
            assert!(e.message.contains("1 PiB"), "{}", e.message);
        }
        validate(&Limits {
            memory: Some(1 << 50),
            ..Default::default()
        })
        .unwrap();
        assert!(validate(&Limits {
            memory: Some(64 << 20),
            memory_swap: Some(u64::MAX - 1),
            ..Default::default()
        })
        .is_err());
        assert!(validate(&Limits {
            pids: Some(u64::MAX),
            ..Default::default()
        })
        .is_err());
        assert!(validate(&Limits {
            io_throttle: vec![vessel_api::IoThrottle {
                device: "8:0".into(),
                read_bps: Some(u64::MAX),
                ..Default::default()
            }],
            ..Default::default()
        })
        .is_err());
        assert!(validate(&Limits {
            io_throttle: vec![vessel_api::IoThrottle {
                device: "-1:0".into(),
                read_bps: Some(1),
                ..Default::default()
            }],
            ..Default::default()
        })
        .is_err());
    }

    #[test]
    fn translates_to_oci() {
        let l = Limits {
            cpu: Some(0.5),
            memory: Some(64 << 20),
            memory_swap: Some(0),
            pids: Some(50),
            ..Default::default()
        };
        validate(&l).unwrap();
        let r = to_oci(&l, CgroupVersion::V1).unwrap();
        let cpu = r.cpu().as_ref().unwrap();
        assert_eq!((cpu.quota(), cpu.period()), (Some(50_000), Some(100_000)));
        let mem = r.memory().as_ref().unwrap();
        assert_eq!((mem.limit(), mem.swap()), (Some(64 << 20), Some(64 << 20)));
        assert_eq!(r.pids().as_ref().unwrap().limit(), 50);
    }

    #[test]
    fn an_update_lifts_what_is_no_longer_limited() {
        let old = Limits {
            cpu: Some(0.5),
            cpu_weight: Some(200),
            memory: Some(64 << 20),
            memory_swap: Some(0),
            pids: Some(50),
            io_weight: Some(100),
            ..Default::default()
        };
        let new = Limits {
            memory: Some(128 << 20),
            ..Default::default()
        };
        let r = to_oci_update(&old, &new, CgroupVersion::V1, "0-3").unwrap();
        let cpu = r.cpu().as_ref().unwrap();
        assert_eq!((cpu.quota(), cpu.shares()), (Some(-1), Some(1024)));
        let mem = r.memory().as_ref().unwrap();
        assert_eq!((mem.limit(), mem.swap()), (Some(128 << 20), Some(-1)));
        assert_eq!(r.pids().as_ref().unwrap().limit(), -1);
        assert_eq!(r.block_io().as_ref().unwrap().weight(), Some(500));
        // Raising keeps the swap as it was asked: none besides memory.
        let r = to_oci_update(
            &old,
            &Limits {
                memory: Some(128 << 20),
                ..old.clone()
            },
            CgroupVersion::V1,
            "0-3",
        )
        .unwrap();
        let mem = r.memory().as_ref().unwrap();
        assert_eq!(
            (mem.limit(), mem.swap()),
            (Some(128 << 20), Some(128 << 20))
        );
        let all = to_oci_update(&old, &Limits::default(), CgroupVersion::V2, "0-3").unwrap();
        assert_eq!(all.memory().as_ref().unwrap().limit(), Some(-1));
        assert_eq!(all.unified().as_ref().unwrap()["cpu.weight"], "100");
    }

    #[test]
    fn cpu_weight_keeps_its_meaning_on_both_layouts() {
        let l = Limits {
            cpu_weight: Some(100),
            ..Default::default()
        };
        let v1 = to_oci(&l, CgroupVersion::V1).unwrap();
        assert_eq!(v1.cpu().as_ref().unwrap().shares(), Some(1024));
        let v2 = to_oci(&l, CgroupVersion::V2).unwrap();
        assert_eq!(v2.unified().as_ref().unwrap()["cpu.weight"], "100");
        assert!(v2.cpu().is_none());
    }
}
