//! `update`: changes the resource limits of a live container through its cgroup, like
//! `runc update` (podman update uses it, and the daemon will for live resizing).

use std::path::Path;

use oci_spec::runtime::{LinuxBlockIo, LinuxCpu, LinuxMemory, LinuxPids, LinuxResources};

use crate::cgroup;
use crate::error::{Error, Result};
use crate::exec::container_spec;
use crate::state::{State, Status, CONFIG_FILE};

/// Changes the limits of container `id` (created, running or paused) to `resources`. As with
/// runc, only these settings change, others in the block are ignored: memory limit,
/// reservation and swap; cpu shares, quota, period, burst, idle, realtime runtime and period,
/// cpus and mems; the block-io weight; the pids limit; unified (cgroup v2) keys. A value of 0
/// (or an empty list of cpus) leaves a setting as it is, -1 lifts a limit. The block is
/// checked whole before anything is written (see `vessel_cgroups::CgroupManager::apply`); the
/// new values are recorded in the container's copy of its spec.
pub fn update(root: &Path, id: &str, resources: &LinuxResources) -> Result<()> {
    let (state, dir) = State::load(root, id)?;
    if state.status == Status::Stopped {
        return Err(Error::WrongState {
            id: id.to_string(),
            status: state.status,
            hint: "only a created, running or paused container can be updated",
        });
    }
    let cg = cgroup::of_state(&state)?;
    let change = updatable(resources);
    cg.apply(&change)
        .map_err(cgroup::err("update the limits", cg.path()))?;
    let mut spec = container_spec(root, id)?;
    if let Some(linux) = spec.linux_mut() {
        let mut stored = linux.resources().clone().unwrap_or_default();
        merge(&mut stored, &change);
        linux.set_resources(Some(stored));
        let path = dir.join(CONFIG_FILE);
        spec.save(&path).map_err(|e| {
            Error::Init(format!(
                "recording the new limits in {}: {e}",
                path.display()
            ))
        })?;
    }
    tracing::info!(container = %id, "limits updated");
    Ok(())
}

/// The settings of `r` that `update` changes.
pub(crate) fn updatable(r: &LinuxResources) -> LinuxResources {
    let mut out = LinuxResources::default();
    if let Some(m) = r.memory() {
        out.set_memory(Some(memory(m.limit(), m.reservation(), m.swap())));
    }
    if let Some(c) = r.cpu() {
        let mut cpu = LinuxCpu::default();
        cpu.set_shares(c.shares());
        cpu.set_quota(c.quota());
        cpu.set_period(c.period());
        cpu.set_burst(c.burst());
        cpu.set_idle(c.idle());
        cpu.set_realtime_runtime(c.realtime_runtime());
        cpu.set_realtime_period(c.realtime_period());
        cpu.set_cpus(c.cpus().clone().filter(|s| !s.is_empty()));
        cpu.set_mems(c.mems().clone().filter(|s| !s.is_empty()));
        out.set_cpu(Some(cpu));
    }
    if let Some(weight) = r.block_io().as_ref().and_then(|b| b.weight()) {
        let mut bio = LinuxBlockIo::default();
        bio.set_weight(Some(weight));
        out.set_block_io(Some(bio));
    }
    if let Some(p) = r.pids() {
        let mut pids = LinuxPids::default();
        pids.set_limit(p.limit());
        out.set_pids(Some(pids));
    }
    out.set_unified(r.unified().clone().filter(|u| !u.is_empty()));
    out
}

/// Memory settings with only a limit, a reservation and a swap limit.
fn memory(limit: Option<i64>, reservation: Option<i64>, swap: Option<i64>) -> LinuxMemory {
    with_memory_limits(&LinuxMemory::default(), limit, reservation, swap)
}

/// `old` with its limit, reservation and swap limit replaced (LinuxMemory has no setters; its
/// other settings are kept through its JSON form).
fn with_memory_limits(
    old: &LinuxMemory,
    limit: Option<i64>,
    reservation: Option<i64>,
    swap: Option<i64>,
) -> LinuxMemory {
    let mut v = serde_json::to_value(old).unwrap_or_else(|_| serde_json::json!({}));
    if let Some(obj) = v.as_object_mut() {
        for (key, value) in [
            ("limit", limit),
            ("reservation", reservation),
            ("swap", swap),
        ] {
            match value {
                Some(x) => obj.insert(key.into(), x.into()),
                None => obj.remove(key),
            };
        }
    }
    serde_json::from_value(v).unwrap_or(*old)
}

/// Records the settings `change` sets (not 0, not empty) in `stored`.
pub(crate) fn merge(stored: &mut LinuxResources, change: &LinuxResources) {
    fn set<T: Copy + PartialEq + Default>(into: &mut Option<T>, from: Option<T>) {
        if let Some(v) = from.filter(|v| *v != T::default()) {
            *into = Some(v);
        }
    }
    if let Some(m) = change.memory() {
        let old = stored.memory().unwrap_or_default();
        let (mut limit, mut reservation, mut swap) = (old.limit(), old.reservation(), old.swap());
        set(&mut limit, m.limit());
        set(&mut reservation, m.reservation());
        set(&mut swap, m.swap());
        stored.set_memory(Some(with_memory_limits(&old, limit, reservation, swap)));
    }
    if let Some(c) = change.cpu() {
        let mut cpu = stored.cpu().clone().unwrap_or_default();
        let mut shares = cpu.shares();
        set(&mut shares, c.shares());
        cpu.set_shares(shares);
        let mut quota = cpu.quota();
        set(&mut quota, c.quota());
        cpu.set_quota(quota);
        let mut period = cpu.period();
        set(&mut period, c.period());
        cpu.set_period(period);
        let mut burst = cpu.burst();
        set(&mut burst, c.burst());
        cpu.set_burst(burst);
        if c.idle().is_some() {
            cpu.set_idle(c.idle());
        }
        let mut rt_runtime = cpu.realtime_runtime();
        set(&mut rt_runtime, c.realtime_runtime());
        cpu.set_realtime_runtime(rt_runtime);
        let mut rt_period = cpu.realtime_period();
        set(&mut rt_period, c.realtime_period());
        cpu.set_realtime_period(rt_period);
        if c.cpus().as_deref().is_some_and(|s| !s.is_empty()) {
            cpu.set_cpus(c.cpus().clone());
        }
        if c.mems().as_deref().is_some_and(|s| !s.is_empty()) {
            cpu.set_mems(c.mems().clone());
        }
        stored.set_cpu(Some(cpu));
    }
    if let Some(weight) = change.block_io().as_ref().and_then(|b| b.weight()) {
        let mut bio = stored.block_io().clone().unwrap_or_default();
        bio.set_weight(Some(weight));
        stored.set_block_io(Some(bio));
    }
    if let Some(p) = change.pids().as_ref().filter(|p| p.limit() != 0) {
        let mut pids = stored.pids().unwrap_or_default();
        pids.set_limit(p.limit());
        stored.set_pids(Some(pids));
    }
    if let Some(u) = change.unified() {
        let mut unified = stored.unified().clone().unwrap_or_default();
        unified.extend(u.iter().map(|(k, v)| (k.clone(), v.clone())));
        stored.set_unified(Some(unified));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resources(json: &str) -> LinuxResources {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn only_what_runc_updates_is_taken() {
        let r = resources(
            r#"{"memory":{"limit":1000,"swappiness":10},"devices":[{"allow":false,"access":"rwm"}],
                "blockIO":{"weight":300,"throttleReadBpsDevice":[{"major":8,"minor":0,"rate":1}]},
                "pids":{"limit":50},"cpu":{"cpus":""},"hugepageLimits":[{"pageSize":"2MB","limit":1}]}"#,
        );
        let u = updatable(&r);
        let v = serde_json::to_value(&u).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"memory": {"limit": 1000}, "blockIO": {"weight": 300},
                "pids": {"limit": 50}, "cpu": {}})
        );
    }

    #[test]
    fn merge_keeps_what_is_not_changed() {
        let mut stored = resources(
            r#"{"memory":{"limit":1000,"swap":2000},"cpu":{"shares":1024,"quota":50000,"period":100000,"cpus":"0"},
                "pids":{"limit":100},"devices":[{"allow":false,"access":"rwm"}]}"#,
        );
        merge(
            &mut stored,
            &updatable(&resources(
                r#"{"memory":{"limit":4000,"swap":0},"cpu":{"quota":-1,"period":0,"cpus":""},"pids":{"limit":0},"blockIO":{"weight":500}}"#,
            )),
        );
        let v = serde_json::to_value(&stored).unwrap();
        assert_eq!(
            v["memory"],
            serde_json::json!({"limit": 4000, "swap": 2000})
        );
        assert_eq!(
            v["cpu"],
            serde_json::json!({"shares": 1024, "quota": -1, "period": 100000, "cpus": "0"})
        );
        assert_eq!(v["pids"]["limit"], 100);
        assert_eq!(v["blockIO"]["weight"], 500);
        assert_eq!(v["devices"].as_array().unwrap().len(), 1);
    }
}
