//! Checking an OCI resources block and turning it into backend-neutral values. Everything here
//! is pure: nothing is written until the whole block has been checked, so a refused block
//! leaves the cgroup as it was.

use oci_spec::runtime::{LinuxDeviceType, LinuxResources, LinuxThrottleDevice};

use crate::{CgroupError, Result};

/// The kernel's smallest CFS quota and period, microseconds.
pub const MIN_CFS_US: u64 = 1_000;
/// The kernel's largest CFS period, microseconds.
pub const MAX_CFS_PERIOD_US: u64 = 1_000_000;
/// The period the kernel uses unless told otherwise, microseconds.
pub const DEFAULT_CFS_PERIOD_US: u64 = 100_000;
/// Smallest and largest cgroup v1 `cpu.shares`.
pub const SHARES_RANGE: (u64, u64) = (2, 262_144);
/// Smallest and largest block-io weight in the OCI (and v1 `blkio.weight`) scale.
pub const BLKIO_WEIGHT_RANGE: (u16, u16) = (10, 1_000);

/// A limit: a number, or no limit at all (`max` on v2, `-1` on v1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Limit {
    /// No limit.
    Max,
    /// This many units.
    Value(u64),
}

impl Limit {
    /// The v2 spelling: `max` or the number.
    pub(crate) fn v2(self) -> String {
        match self {
            Limit::Max => "max".to_owned(),
            Limit::Value(v) => v.to_string(),
        }
    }

    /// The v1 spelling: `-1` or the number.
    pub(crate) fn v1(self) -> String {
        match self {
            Limit::Max => "-1".to_owned(),
            Limit::Value(v) => v.to_string(),
        }
    }
}

/// Checked cpu and cpuset settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct CpuPlan {
    pub shares: Option<u64>,
    /// Microseconds per period.
    pub quota: Option<Limit>,
    pub period: Option<u64>,
    pub burst: Option<u64>,
    pub idle: Option<i64>,
    pub rt_runtime: Option<i64>,
    pub rt_period: Option<u64>,
    pub cpus: Option<String>,
    pub mems: Option<String>,
}

/// Checked memory settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct MemoryPlan {
    pub limit: Option<Limit>,
    /// Memory plus swap, as OCI and v1 count it.
    pub swap: Option<Limit>,
    pub reservation: Option<Limit>,
    pub swappiness: Option<u64>,
    pub disable_oom_killer: bool,
}

/// One throttle: device and rate (0 lifts the limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Throttle {
    pub major: u64,
    pub minor: u64,
    pub rate: u64,
}

/// Checked block-io settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct BlockIoPlan {
    /// OCI scale, 10..=1000.
    pub weight: Option<u16>,
    /// (major, minor, weight in the OCI scale).
    pub weight_devices: Vec<(u64, u64, u16)>,
    pub read_bps: Vec<Throttle>,
    pub write_bps: Vec<Throttle>,
    pub read_iops: Vec<Throttle>,
    pub write_iops: Vec<Throttle>,
}

impl BlockIoPlan {
    fn is_empty(&self) -> bool {
        self == &BlockIoPlan::default()
    }
}

/// One device rule in v1 `devices.allow`/`devices.deny` form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeviceRule {
    pub allow: bool,
    /// `a b c 1:3 rwm`-style line: type, `major:minor`, access.
    pub line: String,
}

/// A checked resources block.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    pub cpu: Option<CpuPlan>,
    pub memory: Option<MemoryPlan>,
    pub pids: Option<Limit>,
    pub block_io: Option<BlockIoPlan>,
    pub devices: Vec<DeviceRule>,
    pub unified: Vec<(String, String)>,
}

fn invalid(msg: String) -> CgroupError {
    CgroupError::InvalidLimit(msg)
}

/// Checks every value of `r` that both backends share and converts it.
pub(crate) fn plan(r: &LinuxResources) -> Result<Plan> {
    if r.hugepage_limits().as_ref().is_some_and(|h| !h.is_empty()) {
        return Err(CgroupError::Unsupported(
            "hugepage limits (linux.resources.hugepageLimits) are not supported by Vessel yet; \
             remove them from the spec"
                .into(),
        ));
    }
    if r.rdma().as_ref().is_some_and(|h| !h.is_empty()) {
        return Err(CgroupError::Unsupported(
            "rdma limits (linux.resources.rdma) are not supported by Vessel yet; remove them \
             from the spec"
                .into(),
        ));
    }
    if let Some(net) = r.network() {
        if net.class_id().is_some() || net.priorities().as_ref().is_some_and(|p| !p.is_empty()) {
            return Err(CgroupError::Unsupported(
                "network class ids and priorities (linux.resources.network) are not supported \
                 by Vessel; remove them from the spec"
                    .into(),
            ));
        }
    }
    let mut unified: Vec<(String, String)> = r
        .unified()
        .as_ref()
        .map(|u| u.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    unified.sort();
    for (key, _) in &unified {
        if key.is_empty() || key.contains('/') || key.starts_with('.') || !key.contains('.') {
            return Err(invalid(format!(
                "unified key {key:?} is not a cgroup file name like \"memory.high\""
            )));
        }
        if key.starts_with("cgroup.") {
            return Err(invalid(format!(
                "unified key {key:?} is a cgroup core file; only controller files may be set"
            )));
        }
    }
    Ok(Plan {
        cpu: r.cpu().as_ref().map(plan_cpu).transpose()?,
        memory: r.memory().as_ref().map(plan_memory).transpose()?,
        pids: r.pids().as_ref().and_then(|p| plan_pids(p.limit())),
        block_io: r
            .block_io()
            .as_ref()
            .map(plan_block_io)
            .transpose()?
            .filter(|b| !b.is_empty()),
        devices: r
            .devices()
            .as_ref()
            .map(|d| d.iter().map(plan_device).collect::<Result<Vec<_>>>())
            .transpose()?
            .unwrap_or_default(),
        unified,
    })
}

fn plan_cpu(c: &oci_spec::runtime::LinuxCpu) -> Result<CpuPlan> {
    let shares = match c.shares() {
        None | Some(0) => None,
        Some(s) if s < SHARES_RANGE.0 || s > SHARES_RANGE.1 => {
            return Err(invalid(format!(
                "cpu shares {s} is outside the kernel's range of {} to {}",
                SHARES_RANGE.0, SHARES_RANGE.1
            )))
        }
        Some(s) => Some(s),
    };
    let quota = match c.quota() {
        None | Some(0) => None,
        Some(-1) => Some(Limit::Max),
        Some(q) if q < 0 => {
            return Err(invalid(format!(
                "cpu quota {q} is negative; use -1 for no limit"
            )))
        }
        Some(q) if (q as u64) < MIN_CFS_US => {
            return Err(invalid(format!(
                "cpu quota {q} is below the kernel's minimum of {MIN_CFS_US} microseconds"
            )))
        }
        Some(q) => Some(Limit::Value(q as u64)),
    };
    let period = match c.period() {
        None | Some(0) => None,
        Some(p) if !(MIN_CFS_US..=MAX_CFS_PERIOD_US).contains(&p) => {
            return Err(invalid(format!(
                "cpu period {p} is outside the kernel's range of {MIN_CFS_US} to \
                 {MAX_CFS_PERIOD_US} microseconds"
            )))
        }
        Some(p) => Some(p),
    };
    if let (Some(b), Some(Limit::Value(q))) = (c.burst(), quota) {
        if b > q {
            return Err(invalid(format!(
                "cpu burst {b} is above the cpu quota {q}; the kernel allows at most the quota"
            )));
        }
    }
    let idle = match c.idle() {
        None => None,
        Some(i @ (0 | 1)) => Some(i),
        Some(i) => return Err(invalid(format!("cpu idle {i} is neither 0 nor 1"))),
    };
    let rt_runtime = match c.realtime_runtime() {
        None | Some(0) => None,
        Some(r) if r < -1 => {
            return Err(invalid(format!(
                "realtime runtime {r} is negative; use -1 for no limit"
            )))
        }
        Some(r) => Some(r),
    };
    let rt_period = c.realtime_period().filter(|p| *p != 0);
    let cpus = checked_list(c.cpus().as_deref(), "cpuset cpus")?;
    let mems = checked_list(c.mems().as_deref(), "cpuset mems")?;
    Ok(CpuPlan {
        shares,
        quota,
        period,
        burst: c.burst(),
        idle,
        rt_runtime,
        rt_period,
        cpus,
        mems,
    })
}

fn checked_list(list: Option<&str>, what: &str) -> Result<Option<String>> {
    match list.map(str::trim) {
        None | Some("") => Ok(None),
        Some(l) => {
            parse_list(l).map_err(|e| invalid(format!("{what} {l:?}: {e}")))?;
            Ok(Some(l.to_owned()))
        }
    }
}

fn plan_memory(m: &oci_spec::runtime::LinuxMemory) -> Result<MemoryPlan> {
    let bytes = |v: Option<i64>, what: &str| -> Result<Option<Limit>> {
        match v {
            None | Some(0) => Ok(None),
            Some(-1) => Ok(Some(Limit::Max)),
            Some(b) if b < 0 => Err(invalid(format!(
                "{what} {b} is negative; use -1 for no limit"
            ))),
            Some(b) => Ok(Some(Limit::Value(b as u64))),
        }
    };
    let limit = bytes(m.limit(), "memory limit")?;
    let mut swap = bytes(m.swap(), "memory+swap limit")?;
    let reservation = bytes(m.reservation(), "memory reservation")?;
    // An unlimited memory limit without a swap figure lifts the swap limit too (as runc does):
    // v1 refuses memory.limit_in_bytes above memory.memsw.limit_in_bytes.
    if limit == Some(Limit::Max) && swap.is_none() {
        swap = Some(Limit::Max);
    }
    match (limit, swap) {
        (Some(Limit::Value(l)), Some(Limit::Value(s))) if s < l => {
            return Err(invalid(format!(
                "memory+swap limit {s} is below the memory limit {l}; OCI's memory.swap counts \
                 memory plus swap, so it must be at least the memory limit (equal means no swap)"
            )))
        }
        (Some(Limit::Max), Some(Limit::Value(s))) => {
            return Err(invalid(format!(
                "memory+swap limit {s} is set but the memory limit is unlimited; set a memory \
                 limit no higher than {s} as well"
            )))
        }
        _ => {}
    }
    if let (Some(Limit::Value(r)), Some(Limit::Value(l))) = (reservation, limit) {
        if r > l {
            return Err(invalid(format!(
                "memory reservation {r} is above the memory limit {l}"
            )));
        }
    }
    let swappiness = match m.swappiness() {
        None => None,
        Some(s) if s > 100 => {
            return Err(invalid(format!(
                "memory swappiness {s} is outside the range 0 to 100"
            )))
        }
        Some(s) => Some(s),
    };
    if m.kernel().is_some() || m.kernel_tcp().is_some() {
        tracing::warn!("kernel memory limits are deprecated by the kernel and are ignored");
    }
    Ok(MemoryPlan {
        limit,
        swap,
        reservation,
        swappiness,
        disable_oom_killer: m.disable_oom_killer().unwrap_or(false),
    })
}

/// OCI pids limit, following runc: positive is a limit, negative is no limit, 0 leaves the
/// current setting alone.
fn plan_pids(limit: i64) -> Option<Limit> {
    match limit {
        0 => None,
        l if l < 0 => Some(Limit::Max),
        l => Some(Limit::Value(l as u64)),
    }
}

fn device_number(v: i64, what: &str) -> Result<u64> {
    u64::try_from(v).map_err(|_| invalid(format!("block device {what} number {v} is negative")))
}

fn check_weight(w: u16, what: &str) -> Result<u16> {
    if w < BLKIO_WEIGHT_RANGE.0 || w > BLKIO_WEIGHT_RANGE.1 {
        return Err(invalid(format!(
            "{what} {w} is outside the range {} to {}",
            BLKIO_WEIGHT_RANGE.0, BLKIO_WEIGHT_RANGE.1
        )));
    }
    Ok(w)
}

fn throttles(list: &Option<Vec<LinuxThrottleDevice>>) -> Result<Vec<Throttle>> {
    list.iter()
        .flatten()
        .map(|t| {
            Ok(Throttle {
                major: device_number(t.major(), "major")?,
                minor: device_number(t.minor(), "minor")?,
                rate: t.rate(),
            })
        })
        .collect()
}

fn plan_block_io(b: &oci_spec::runtime::LinuxBlockIo) -> Result<BlockIoPlan> {
    let weight = match b.weight() {
        None | Some(0) => None,
        Some(w) => Some(check_weight(w, "block io weight")?),
    };
    if b.leaf_weight().is_some() {
        tracing::warn!("block io leaf weight is not supported by current kernels and is ignored");
    }
    let mut weight_devices = Vec::new();
    for d in b.weight_device().iter().flatten() {
        let major = device_number(d.major(), "major")?;
        let minor = device_number(d.minor(), "minor")?;
        if let Some(w) = d.weight() {
            let what = format!("block io weight for device {major}:{minor}");
            weight_devices.push((major, minor, check_weight(w, &what)?));
        }
    }
    Ok(BlockIoPlan {
        weight,
        weight_devices,
        read_bps: throttles(b.throttle_read_bps_device())?,
        write_bps: throttles(b.throttle_write_bps_device())?,
        read_iops: throttles(b.throttle_read_iops_device())?,
        write_iops: throttles(b.throttle_write_iops_device())?,
    })
}

fn plan_device(d: &oci_spec::runtime::LinuxDeviceCgroup) -> Result<DeviceRule> {
    let typ = match d.typ() {
        None | Some(LinuxDeviceType::A) => 'a',
        Some(LinuxDeviceType::B) => 'b',
        Some(LinuxDeviceType::C) | Some(LinuxDeviceType::U) => 'c',
        Some(LinuxDeviceType::P) => {
            return Err(invalid(
                "device rule of type p (fifo): the devices cgroup only knows a, b and c".into(),
            ))
        }
    };
    let number = |n: Option<i64>, what: &str| -> Result<String> {
        match n {
            None | Some(-1) => Ok("*".into()),
            Some(v) if v < 0 => Err(invalid(format!(
                "device rule {what} number {v} is negative"
            ))),
            Some(v) => Ok(v.to_string()),
        }
    };
    let access = d.access().clone().unwrap_or_else(|| "rwm".into());
    if access.is_empty() || !access.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
        return Err(invalid(format!(
            "device rule access {access:?} must be made of r, w and m"
        )));
    }
    let line = if typ == 'a' {
        format!("a *:* {access}")
    } else {
        format!(
            "{typ} {}:{} {access}",
            number(d.major(), "major")?,
            number(d.minor(), "minor")?
        )
    };
    Ok(DeviceRule {
        allow: d.allow(),
        line,
    })
}

/// OCI/v1 cpu shares to v2 `cpu.weight`, as runc and crun convert them:
/// 2..=262144 maps onto 1..=10000.
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    let shares = shares.clamp(SHARES_RANGE.0, SHARES_RANGE.1);
    1 + ((shares - 2) * 9999) / 262_142
}

/// OCI/v1 block-io weight (10..=1000) to v2 `io.weight` (1..=10000), as runc converts it.
pub fn blkio_weight_to_io_weight(weight: u16) -> u64 {
    if weight == 0 {
        return 0;
    }
    let w = u64::from(weight.clamp(BLKIO_WEIGHT_RANGE.0, BLKIO_WEIGHT_RANGE.1));
    1 + ((w - 10) * 9999) / 990
}

/// Parses a kernel cpu/node list such as `0-3,8,10-11` into sorted, merged inclusive ranges.
pub(crate) fn parse_list(list: &str) -> std::result::Result<Vec<(u32, u32)>, String> {
    let mut ranges = Vec::new();
    let list = list.trim();
    if list.is_empty() {
        return Ok(ranges);
    }
    for item in list.split(',') {
        let item = item.trim();
        let num = |s: &str| {
            s.trim().parse::<u32>().map_err(|_| {
                format!("{item:?} is not a number or a range like 0-3 (lists look like 0-3,5)")
            })
        };
        let (a, b) = match item.split_once('-') {
            Some((a, b)) => (num(a)?, num(b)?),
            None => {
                let a = num(item)?;
                (a, a)
            }
        };
        if a > b {
            return Err(format!("range {item:?} runs backwards"));
        }
        ranges.push((a, b));
    }
    ranges.sort_unstable();
    let mut merged: Vec<(u32, u32)> = Vec::with_capacity(ranges.len());
    for (a, b) in ranges {
        match merged.last_mut() {
            Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
            _ => merged.push((a, b)),
        }
    }
    Ok(merged)
}

/// Checks that every cpu or node of `wanted` is in `available` (both kernel lists). Returns a
/// message for an `InvalidLimit` when not.
pub(crate) fn check_subset(wanted: &str, available: &str, what: &str) -> Result<()> {
    let want = parse_list(wanted).map_err(|e| invalid(format!("{what} {wanted:?}: {e}")))?;
    // An unreadable list of what is available is not the caller's fault: let the kernel judge.
    let Ok(have) = parse_list(available) else {
        return Ok(());
    };
    let covered = want
        .iter()
        .all(|(a, b)| have.iter().any(|(x, y)| x <= a && b <= y));
    if !covered {
        return Err(invalid(format!(
            "{what} {wanted:?} asks for some that this cgroup may not use; available: {:?}",
            available.trim()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{
        LinuxBlockIoBuilder, LinuxCpuBuilder, LinuxDeviceCgroupBuilder, LinuxMemoryBuilder,
        LinuxPidsBuilder, LinuxResourcesBuilder, LinuxThrottleDeviceBuilder,
    };

    fn cpu(b: LinuxCpuBuilder) -> Result<Plan> {
        plan(
            &LinuxResourcesBuilder::default()
                .cpu(b.build().unwrap())
                .build()
                .unwrap(),
        )
    }

    fn mem(b: LinuxMemoryBuilder) -> Result<Plan> {
        plan(
            &LinuxResourcesBuilder::default()
                .memory(b.build().unwrap())
                .build()
                .unwrap(),
        )
    }

    fn err_text(r: Result<Plan>) -> String {
        match r {
            Err(CgroupError::InvalidLimit(m)) => m,
            other => panic!("expected InvalidLimit, got {other:?}"),
        }
    }

    #[test]
    fn shares_convert_like_runc() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(512), 20);
        assert_eq!(shares_to_weight(0), 0);
    }

    #[test]
    fn blkio_weight_converts_like_runc() {
        assert_eq!(blkio_weight_to_io_weight(10), 1);
        assert_eq!(blkio_weight_to_io_weight(1000), 10_000);
        assert_eq!(blkio_weight_to_io_weight(500), 4950);
        assert_eq!(blkio_weight_to_io_weight(0), 0);
    }

    #[test]
    fn cpu_quota_below_minimum_is_refused_with_the_minimum() {
        let m = err_text(cpu(LinuxCpuBuilder::default().quota(500)));
        assert_eq!(
            m,
            "cpu quota 500 is below the kernel's minimum of 1000 microseconds"
        );
        let m = err_text(cpu(LinuxCpuBuilder::default().period(100u64)));
        assert!(m.contains("1000 to 1000000"), "{m}");
        let m = err_text(cpu(LinuxCpuBuilder::default().shares(1u64)));
        assert!(m.contains("2 to 262144"), "{m}");
        let m = err_text(cpu(LinuxCpuBuilder::default().quota(-5)));
        assert!(m.contains("use -1"), "{m}");
        let m = err_text(cpu(LinuxCpuBuilder::default().cpus("0-a")));
        assert!(m.contains("cpuset cpus"), "{m}");
    }

    #[test]
    fn cpu_values_pass_through() {
        let p = cpu(LinuxCpuBuilder::default()
            .quota(20_000)
            .period(100_000u64)
            .shares(512u64)
            .cpus("0"))
        .unwrap()
        .cpu
        .unwrap();
        assert_eq!(p.quota, Some(Limit::Value(20_000)));
        assert_eq!(p.period, Some(100_000));
        assert_eq!(p.shares, Some(512));
        assert_eq!(p.cpus.as_deref(), Some("0"));
        let p = cpu(LinuxCpuBuilder::default().quota(-1))
            .unwrap()
            .cpu
            .unwrap();
        assert_eq!(p.quota, Some(Limit::Max));
    }

    #[test]
    fn memory_swap_rules() {
        let m = err_text(mem(LinuxMemoryBuilder::default().limit(100).swap(50)));
        assert!(m.contains("at least the memory limit"), "{m}");
        let m = err_text(mem(LinuxMemoryBuilder::default().limit(-1).swap(50)));
        assert!(m.contains("unlimited"), "{m}");
        let m = err_text(mem(LinuxMemoryBuilder::default().limit(-7)));
        assert!(m.contains("negative"), "{m}");
        let m = err_text(mem(LinuxMemoryBuilder::default().swappiness(101u64)));
        assert!(m.contains("0 to 100"), "{m}");
        let p = mem(LinuxMemoryBuilder::default().limit(-1))
            .unwrap()
            .memory
            .unwrap();
        assert_eq!(p.swap, Some(Limit::Max), "unlimited memory lifts swap too");
        let p = mem(LinuxMemoryBuilder::default().limit(64 << 20).swap(64 << 20))
            .unwrap()
            .memory
            .unwrap();
        assert_eq!(p.limit, Some(Limit::Value(64 << 20)));
        assert_eq!(p.swap, Some(Limit::Value(64 << 20)));
    }

    #[test]
    fn pids_follow_runc() {
        let p = |l| {
            plan(
                &LinuxResourcesBuilder::default()
                    .pids(LinuxPidsBuilder::default().limit(l).build().unwrap())
                    .build()
                    .unwrap(),
            )
            .unwrap()
            .pids
        };
        assert_eq!(p(20), Some(Limit::Value(20)));
        assert_eq!(p(-1), Some(Limit::Max));
        assert_eq!(p(0), None);
    }

    #[test]
    fn block_io_and_devices() {
        let bio = LinuxBlockIoBuilder::default().weight(5u16).build().unwrap();
        let r = LinuxResourcesBuilder::default()
            .block_io(bio)
            .build()
            .unwrap();
        assert!(err_text(plan(&r)).contains("10 to 1000"));
        let bio = LinuxBlockIoBuilder::default()
            .throttle_read_bps_device(vec![LinuxThrottleDeviceBuilder::default()
                .major(-1)
                .minor(0)
                .rate(1u64)
                .build()
                .unwrap()])
            .build()
            .unwrap();
        let r = LinuxResourcesBuilder::default()
            .block_io(bio)
            .build()
            .unwrap();
        assert!(err_text(plan(&r)).contains("negative"));

        let devs = vec![
            LinuxDeviceCgroupBuilder::default()
                .allow(false)
                .access("rwm")
                .build()
                .unwrap(),
            LinuxDeviceCgroupBuilder::default()
                .allow(true)
                .typ(LinuxDeviceType::C)
                .major(1)
                .minor(3)
                .access("rw")
                .build()
                .unwrap(),
            LinuxDeviceCgroupBuilder::default()
                .allow(true)
                .typ(LinuxDeviceType::C)
                .major(136)
                .access("rwm")
                .build()
                .unwrap(),
        ];
        let r = LinuxResourcesBuilder::default()
            .devices(devs)
            .build()
            .unwrap();
        let lines: Vec<(bool, String)> = plan(&r)
            .unwrap()
            .devices
            .into_iter()
            .map(|d| (d.allow, d.line))
            .collect();
        assert_eq!(
            lines,
            vec![
                (false, "a *:* rwm".to_owned()),
                (true, "c 1:3 rw".to_owned()),
                (true, "c 136:* rwm".to_owned()),
            ]
        );
    }

    #[test]
    fn lists_parse_and_merge() {
        assert_eq!(parse_list("0-3,5,4").unwrap(), vec![(0, 5)]);
        assert_eq!(parse_list("8,0-1").unwrap(), vec![(0, 1), (8, 8)]);
        assert_eq!(parse_list("").unwrap(), vec![]);
        assert!(parse_list("3-1").is_err());
        assert!(parse_list("1,,2").is_err());
        assert!(check_subset("0-1", "0-3", "cpus").is_ok());
        assert!(check_subset("0,2", "0-1,2", "cpus").is_ok());
        let e = check_subset("0-7", "0-1", "cpuset cpus")
            .unwrap_err()
            .to_string();
        assert!(e.contains("available: \"0-1\""), "{e}");
    }

    #[test]
    fn unsupported_and_bad_unified_keys() {
        let mut u = std::collections::HashMap::new();
        u.insert("../x".to_owned(), "1".to_owned());
        let r = LinuxResourcesBuilder::default().unified(u).build().unwrap();
        assert!(err_text(plan(&r)).contains("not a cgroup file name"));
        let mut u = std::collections::HashMap::new();
        u.insert("cgroup.procs".to_owned(), "1".to_owned());
        let r = LinuxResourcesBuilder::default().unified(u).build().unwrap();
        assert!(err_text(plan(&r)).contains("core file"));
    }
}
