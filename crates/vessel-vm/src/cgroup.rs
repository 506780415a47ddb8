//! The VM's cgroup: QEMU is placed into it while the guest is still paused (`-S`), so every
//! instruction the guest runs is accounted and limited.

use oci_spec::runtime::{
    LinuxCpuBuilder, LinuxMemoryBuilder, LinuxResources, LinuxResourcesBuilder,
};
use vessel_cgroups::CgroupManager;

use crate::cmdline::TCG_TB_SIZE_MIB;
use crate::error::{Result, VmError};
use crate::machine::{Accel, MachineDef};

/// CFS period of the cpu quota, microseconds.
pub const CPU_PERIOD_US: u64 = 100_000;

/// What QEMU itself needs on top of guest RAM, MiB: its code, device state, I/O buffers and
/// page tables (measured at about 60–120 MiB resident for the profiles here), with headroom.
/// TCG adds its translation cache ([`TCG_TB_SIZE_MIB`]).
pub const QEMU_OVERHEAD_MIB: u64 = 192;

/// Memory limit of a VM's cgroup, bytes: guest RAM plus QEMU's overhead.
pub fn memory_limit(def: &MachineDef) -> u64 {
    let tcg = if def.accel == Accel::Tcg {
        TCG_TB_SIZE_MIB
    } else {
        0
    };
    (def.memory_mib + QEMU_OVERHEAD_MIB + tcg) << 20
}

/// The cgroup limits of a VM: a cpu quota of one core per vCPU, and [`memory_limit`].
pub fn resources(def: &MachineDef) -> Result<LinuxResources> {
    limits(Some(def.vcpus), Some(memory_limit(def)))
}

/// A resources block with a cpu quota of `vcpus` cores and a memory limit of `memory` bytes,
/// each where given.
pub(crate) fn limits(vcpus: Option<u32>, memory: Option<u64>) -> Result<LinuxResources> {
    let bad = |e: oci_spec::OciSpecError| VmError::InvalidDefinition(format!("cgroup limits: {e}"));
    let mut r = LinuxResourcesBuilder::default();
    if let Some(n) = vcpus {
        r = r.cpu(
            LinuxCpuBuilder::default()
                .quota((u64::from(n) * CPU_PERIOD_US) as i64)
                .period(CPU_PERIOD_US)
                .build()
                .map_err(bad)?,
        );
    }
    if let Some(bytes) = memory {
        r = r.memory(
            LinuxMemoryBuilder::default()
                .limit(bytes as i64)
                .build()
                .map_err(bad)?,
        );
    }
    r.build().map_err(bad)
}

/// Creates the cgroup at `path`, applies the VM's limits and moves `pid` (all its threads)
/// into it. On failure the cgroup is removed again (QEMU is not killed here).
pub fn place(path: &str, def: &MachineDef, pid: i32) -> Result<Box<dyn CgroupManager>> {
    let err = |source| VmError::Cgroup {
        path: path.to_string(),
        source,
    };
    let cg = vessel_cgroups::manager(path).map_err(err)?;
    let res = resources(def)?;
    let placed = cg
        .create()
        .and_then(|_| cg.apply(&res))
        .and_then(|_| cg.add_process(pid));
    if let Err(e) = placed {
        let _ = remove_empty(cg.as_ref());
        return Err(err(e));
    }
    Ok(cg)
}

/// Removes a cgroup that must hold no process any more (its QEMU has exited); does nothing
/// when processes are still in it, rather than killing them.
pub fn remove_empty(cg: &dyn CgroupManager) -> Result<()> {
    if !cg.exists() {
        return Ok(());
    }
    let err = |source| VmError::Cgroup {
        path: cg.path().to_string(),
        source,
    };
    if !cg.pids().map_err(err)?.is_empty() {
        return Ok(());
    }
    cg.destroy().map_err(err)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn limits_follow_the_definition() {
        let mut d = MachineDef::para("vm", Path::new("/r"), Path::new("/k"), None);
        d.vcpus = 2;
        d.memory_mib = 1024;
        let r = resources(&d).unwrap();
        let cpu = r.cpu().as_ref().unwrap();
        assert_eq!(cpu.quota(), Some(200_000));
        assert_eq!(cpu.period(), Some(100_000));
        assert_eq!(
            r.memory().as_ref().unwrap().limit(),
            Some(((1024 + QEMU_OVERHEAD_MIB + TCG_TB_SIZE_MIB) << 20) as i64)
        );
        d.accel = Accel::Kvm;
        assert_eq!(memory_limit(&d), (1024 + QEMU_OVERHEAD_MIB) << 20);
    }
}
