//! A running VM's resources changed in place: a disk whose image grew is resized under the
//! guest (which sees the new capacity at once, as virtio-blk reports a config change), and
//! its memory grows or shrinks within the room it booted with, through its virtio-mem device
//! (the guest onlines what is plugged, movable, so that it can be unplugged again).

use std::path::Path;
use std::time::{Duration, Instant};

use crate::cmdline::MEMORY_DEVICE;
use crate::error::{Result, VmError};
use crate::qmp::{BlockResize, DeviceAdd, QomGet, QomSet, QueryBlock, QueryHotpluggableCpus};
use crate::vm::RunningVm;

/// How long a guest may take to online memory it was given.
const PLUG_WAIT: Duration = Duration::from_secs(15);
/// How long a guest may take to give memory back.
const UNPLUG_WAIT: Duration = Duration::from_secs(30);

/// How much memory changed, and whether the guest has all of what was asked yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryChange {
    /// Guest RAM before, MiB.
    pub before_mib: u64,
    /// Guest RAM asked for, MiB.
    pub after_mib: u64,
    /// Whether the guest took (or gave back) all of it in the time allowed; a shrink may go
    /// on after.
    pub complete: bool,
}

impl RunningVm {
    /// Tells QEMU that the image at `path` (a raw file a disk of this VM reads) is now `size`
    /// bytes, so that the guest's disk grows; `false` when no disk of the VM reads that file
    /// (for instance one served over NBD, whose size QEMU learns at its next connection).
    pub fn grow_disk(&self, path: &Path, size: u64) -> Result<bool> {
        let want = path.to_string_lossy();
        let node = self
            .qmp()
            .execute(&QueryBlock)?
            .into_iter()
            .filter_map(|b| b.inserted)
            .find(|i| i.file == want)
            .and_then(|i| i.node_name);
        let Some(node_name) = node else {
            return Ok(false);
        };
        self.qmp().execute(&BlockResize { node_name, size })?;
        tracing::info!(vm = %self.name, file = %want, size, "disk grown");
        Ok(true)
    }

    /// Guest RAM now, MiB: what it booted with and what is plugged.
    pub fn memory_mib(&self) -> Result<u64> {
        Ok(self.record.memory_mib + (self.plugged()? >> 20))
    }

    /// Changes guest RAM to `total_mib` (rounded up to 2 MiB) while the VM runs, within what
    /// it booted with and its maximum: the cgroup's limit is raised before memory is plugged
    /// and lowered once it is unplugged. A guest that does not take plugged memory (no
    /// `virtio_mem` in its kernel) is an error, and the change is undone.
    pub fn set_memory(&self, total_mib: u64) -> Result<MemoryChange> {
        let base = self.record.memory_mib;
        let Some(max) = self.record.memory_max_mib.filter(|m| *m > base) else {
            return Err(VmError::InvalidDefinition(format!(
                "the memory of {} is fixed: it booted without room to grow",
                self.name
            )));
        };
        let total = total_mib.div_ceil(2) * 2;
        if total < base || total > max {
            return Err(VmError::InvalidDefinition(format!(
                "{total} MiB is outside what {} can have while it runs: {base} to {max} MiB",
                self.name
            )));
        }
        let current = self.plugged()?;
        let before_mib = base + (current >> 20);
        let requested = (total - base) << 20;
        let growing = requested > current;
        if growing {
            self.limit_memory(total)?;
        }
        self.request(requested)?;
        let wait = if growing { PLUG_WAIT } else { UNPLUG_WAIT };
        let deadline = Instant::now() + wait;
        let complete = loop {
            if self.plugged()? == requested {
                break true;
            }
            if Instant::now() >= deadline {
                break false;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        if growing && !complete {
            // Asked back; the cgroup's limit comes down only once the guest has given back
            // what it took meanwhile (QEMU over a lowered limit would be killed).
            let _ = self.request(current);
            let back = Instant::now() + UNPLUG_WAIT;
            while Instant::now() < back {
                if self.plugged().is_ok_and(|p| p <= current) {
                    let _ = self.limit_memory(before_mib);
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            return Err(VmError::Timeout {
                what: format!(
                    "the guest of {} to take {} MiB more (does its kernel have virtio_mem?)",
                    self.name,
                    (requested - current) >> 20
                ),
                secs: wait.as_secs_f64(),
            });
        }
        if !growing && complete {
            self.limit_memory(total)?;
        }
        tracing::info!(vm = %self.name, before_mib, after_mib = total, complete, "memory changed");
        Ok(MemoryChange {
            before_mib,
            after_mib: total,
            complete,
        })
    }

    /// What the guest holds now: its vCPUs (`None` when not known: a record from before
    /// they were kept) and its memory in MiB, plugged memory included.
    pub fn held(&self) -> Result<(Option<u32>, u64)> {
        let vcpus = if self.record.vcpus_max.is_some() {
            let slots = self.qmp().execute(&QueryHotpluggableCpus)?;
            Some(slots.iter().filter(|c| c.qom_path.is_some()).count() as u32)
        } else {
            Some(self.record.vcpus).filter(|n| *n > 0)
        };
        Ok((vcpus, self.record.memory_mib + (self.plugged()? >> 20)))
    }

    fn device(&self) -> String {
        format!("/machine/peripheral/{MEMORY_DEVICE}")
    }

    /// Bytes the virtio-mem device has plugged.
    fn plugged(&self) -> Result<u64> {
        if self.record.memory_max_mib.is_none() {
            return Ok(0);
        }
        let v = self.qmp().execute(&QomGet {
            path: self.device(),
            property: "size".into(),
        })?;
        v.as_u64().ok_or_else(|| {
            VmError::InvalidDefinition(format!("the memory device's size is not a number: {v}"))
        })
    }

    fn request(&self, bytes: u64) -> Result<()> {
        self.qmp().execute(&QomSet {
            path: self.device(),
            property: "requested-size".into(),
            value: bytes.into(),
        })?;
        Ok(())
    }

    /// Sets the cgroup's memory limit for `guest_mib` of guest RAM.
    fn limit_memory(&self, guest_mib: u64) -> Result<()> {
        let bytes = (guest_mib + self.record.memory_overhead_mib) << 20;
        self.apply_limits(crate::cgroup::limits(None, Some(bytes))?)
    }

    /// Sets the cgroup's cpu quota for `vcpus` cores.
    fn limit_cpu(&self, vcpus: u32) -> Result<()> {
        self.apply_limits(crate::cgroup::limits(Some(vcpus), None)?)
    }

    fn apply_limits(&self, res: oci_spec::runtime::LinuxResources) -> Result<()> {
        let Some(cg) = self.cgroup() else {
            return Ok(());
        };
        cg.apply(&res).map_err(|source| VmError::Cgroup {
            path: cg.path().to_string(),
            source,
        })
    }

    /// Plugs vCPUs until the VM has `n` (within the most it booted able to take); the cgroup's
    /// cpu quota grows first, a core per vCPU. The guest brings them online (Vessel's agent
    /// does). Fewer vCPUs than it has is an error: they go at the next start.
    pub fn add_vcpus(&self, n: u32) -> Result<u32> {
        let Some(max) = self.record.vcpus_max else {
            return Err(VmError::InvalidDefinition(format!(
                "the vCPUs of {} are fixed: it booted without room for more",
                self.name
            )));
        };
        let slots = self.qmp().execute(&QueryHotpluggableCpus)?;
        let have = slots.iter().filter(|c| c.qom_path.is_some()).count() as u32;
        if n < have || n > max {
            return Err(VmError::InvalidDefinition(format!(
                "{n} vCPUs is outside what {} can have while it runs: {have} to {max}",
                self.name
            )));
        }
        if n == have {
            return Ok(have);
        }
        self.limit_cpu(n)?;
        let mut free: Vec<_> = slots.into_iter().filter(|c| c.qom_path.is_none()).collect();
        // Lowest place first.
        free.sort_by_key(|c| {
            c.props
                .values()
                .map(|v| v.as_i64().unwrap_or(0))
                .collect::<Vec<_>>()
        });
        for slot in free.into_iter().take((n - have) as usize) {
            let place: Vec<String> = slot.props.values().map(|v| v.to_string()).collect();
            self.qmp().execute(&DeviceAdd {
                driver: slot.cpu_type.clone(),
                id: format!("vcpu-{}", place.join("-")),
                props: slot.props.clone(),
            })?;
        }
        tracing::info!(vm = %self.name, before = have, after = n, "vCPUs added");
        Ok(n)
    }
}
