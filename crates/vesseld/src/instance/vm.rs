//! The VM driver: boots VM images with QEMU through `vessel-vm` — the `para` profile (direct
//! kernel boot, virtio devices) for images with a kernel, the `full` profile (firmware, emulated
//! devices) for imported disks and ISOs — and keeps each running QEMU's handle. QEMU outlives
//! the daemon; a restarted daemon adopts it through its pid file and QMP socket.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vessel_api::{Image, Instance, InstanceState, VmDetails};
use vessel_vm::{
    Accel, Disk, DiskFormat, LogSink, MachineDef, Media, RunningVm, StaleVm, VmExit, VmPaths,
};

use super::driver::write_private;
use super::vm_files::{link_image_file, qemu_user};
use crate::error::{chain, Error, Result};
use crate::image::import::{FirmwareBoot, FIRMWARE_FILE};

/// Guest memory when the instance sets no memory limit.
const DEFAULT_MEMORY_MIB: u64 = 256;
/// How many times the memory (and the vCPUs) it booted with a para VM may grow to while it
/// runs.
pub const MEMORY_GROWTH: u64 = 4;
/// The most vCPUs a VM may grow to while it runs.
const MAX_VCPUS: u32 = 32;

/// The host's memory, MiB.
fn host_memory_mib() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: u64 = info
        .lines()
        .find(|l| l.starts_with("MemTotal:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb >> 10)
}

/// Longest SSH key text the kernel command line carries (it has 2048 bytes in all).
const MAX_SSH_KEYS: usize = 1024;

/// Checks SSH public keys: one `authorized_keys` line each, within the command line's room.
pub fn check_ssh_keys(keys: &[String]) -> Result<()> {
    for k in keys {
        let kind = k.split_whitespace().next().unwrap_or_default();
        let known =
            kind.starts_with("ssh-") || kind.starts_with("ecdsa-") || kind.starts_with("sk-");
        if !known || k.contains('\n') || k.split_whitespace().count() < 2 {
            return Err(Error::invalid(format!(
                "{:?} is not an SSH public key line (like `ssh-ed25519 AAAA... user@host`)",
                k.chars().take(40).collect::<String>()
            )));
        }
    }
    let total: usize = keys.iter().map(|k| k.len() + 1).sum();
    if total > MAX_SSH_KEYS {
        return Err(Error::invalid(format!(
            "the SSH keys take {total} bytes; at most {MAX_SSH_KEYS} fit on the guest's kernel \
             command line: use ed25519 keys, or fewer"
        )));
    }
    Ok(())
}

/// The kernel parameter carrying SSH keys to the guest init (base64 of authorized_keys).
fn ssh_keys_param(keys: &[String]) -> Option<String> {
    use base64_engine::encode;
    if keys.is_empty() {
        return None;
    }
    let text: String = keys.iter().map(|k| format!("{k}\n")).collect();
    Some(format!("vessel.ssh_keys={}", encode(text.as_bytes())))
}

/// Standard base64, enough for the kernel command line.
mod base64_engine {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    /// Encodes with padding.
    pub fn encode(data: &[u8]) -> String {
        let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
        for chunk in data.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(TABLE[((n >> (18 - 6 * i)) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    #[cfg(test)]
    #[test]
    fn matches_known_vectors() {
        assert_eq!(encode(b""), "");
        assert_eq!(encode(b"f"), "Zg==");
        assert_eq!(encode(b"fo"), "Zm8=");
        assert_eq!(encode(b"foo"), "Zm9v");
        assert_eq!(encode(b"foobar"), "Zm9vYmFy");
    }
}

/// Host paths and running VMs.
pub struct VmDriver {
    /// `<run>/vms`: per-VM run directories (QMP, console, agent sockets, pid file).
    pub run_dir: PathBuf,
    /// `<root>/instances`: per-instance files (the root disk overlay).
    pub instances_dir: PathBuf,
    /// Cache of the accelerator probe.
    pub accel_cache: PathBuf,
    /// Parent cgroup of this daemon's instances.
    pub cgroup_parent: String,
    /// `vessel-monitor`, which keeps each VM's console log bounded (`--console-log`).
    pub console_log_sink: Option<PathBuf>,
    vms: Mutex<HashMap<String, Arc<RunningVm>>>,
    /// The probe's answer, once known: (accelerator, reason).
    accel: Mutex<Option<(Accel, String)>>,
    /// Set when the daemon shuts down: VM starts in progress give up and leave nothing.
    cancel: Arc<AtomicBool>,
    /// One console attach per VM (QEMU serves one client): a new one takes over.
    consoles: Mutex<HashMap<String, ConsoleSlot>>,
}

/// The console of one VM: held by the attach that has QEMU's console connection; a new
/// attach kicks the holder out and waits for the slot.
#[derive(Clone, Default)]
pub struct ConsoleSlot {
    /// Held while an attach has QEMU's console connection.
    pub holder: Arc<tokio::sync::Mutex<()>>,
    /// Tells the holder to let go.
    pub kick: Arc<tokio::sync::Notify>,
}

/// The disk an image boots from (a VM image's root disk, or an imported disk), if it has one.
pub fn image_disk(image_dir: &Path) -> Option<PathBuf> {
    image_disk_format(image_dir).map(|(p, _)| p)
}

/// [`image_disk`] and its format as the image records it (`raw` or `qcow2`), for tools run
/// on it as root: never probed, since a raw disk's bytes are anyone's and may look like
/// another format's header naming host files.
pub fn image_disk_format(image_dir: &Path) -> Option<(PathBuf, &'static str)> {
    if image_dir.join(vessel_vmimage::MANIFEST_FILE).is_file() {
        let vm = vessel_vmimage::VmImage::open(image_dir).ok()?;
        let path = vm.disk_path()?;
        let format = match vm.manifest.disk_format {
            Some(f) => f.qemu_name(),
            None if path.extension().is_some_and(|e| e == "qcow2") => "qcow2",
            None => "raw",
        };
        return Some((path, format));
    }
    let desc: FirmwareBoot =
        serde_json::from_slice(&std::fs::read(image_dir.join(FIRMWARE_FILE)).ok()?).ok()?;
    let format = if desc.format == "qcow2" {
        "qcow2"
    } else {
        "raw"
    };
    (desc.boot != "cdrom").then(|| (image_dir.join(&desc.file), format))
}

/// The format a recorded name (`image_disk_format`, a firmware image's `format`) stands
/// for: qcow2, or raw for anything else.
pub(super) fn disk_format(name: &str) -> DiskFormat {
    if name == "qcow2" {
        DiskFormat::Qcow2
    } else {
        DiskFormat::Raw
    }
}

fn vm_err(what: &str) -> impl Fn(vessel_vm::VmError) -> Error + '_ {
    move |e| Error::internal(format!("{what}: {}", chain(&e)))
}

impl VmDriver {
    /// The driver.
    pub fn new(
        run_dir: PathBuf,
        instances_dir: PathBuf,
        accel_cache: PathBuf,
        cgroup_parent: String,
    ) -> Self {
        Self {
            run_dir,
            instances_dir,
            accel_cache,
            cgroup_parent,
            console_log_sink: None,
            vms: Mutex::default(),
            accel: Mutex::default(),
            cancel: Arc::default(),
            consoles: Mutex::default(),
        }
    }

    /// The daemon is shutting down: VM starts in progress give up (killing their QEMU) at
    /// their next step.
    pub fn shutting_down(&self) {
        self.cancel.store(true, Ordering::SeqCst);
    }

    /// The console slot of a VM.
    pub fn console_slot(&self, name: &str) -> ConsoleSlot {
        self.consoles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name.to_string())
            .or_default()
            .clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<RunningVm>>> {
        self.vms.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The running VM of an instance.
    pub fn get(&self, name: &str) -> Option<Arc<RunningVm>> {
        self.lock().get(name).cloned()
    }

    /// Forgets a VM that has exited and removes its run files and cgroup; returns how it
    /// ended (blocking: waits up to 2 s for QMP's last events).
    pub fn forget(&self, name: &str) -> Option<VmExit> {
        let vm = self.lock().remove(name)?;
        let exit = vm.exit_reason();
        self.keep_console_log(name);
        if let Err(e) = vm.cleanup() {
            tracing::warn!(instance = name, error = %chain(&e), "cleaning up after a VM");
        }
        exit
    }

    /// The console log outlives the run directory, for `vessel logs`: the rotated and the
    /// current file (at most 1 MiB each) are kept together beside the instance.
    fn keep_console_log(&self, name: &str) {
        let kept = self.instances_dir.join(name).join("console.log");
        let text = self.run_console_log(name);
        if text.is_empty() || !kept.parent().is_some_and(Path::is_dir) {
            return;
        }
        if let Err(e) = write_private(&kept, &text) {
            tracing::debug!(instance = name, error = %e, "no console log to keep");
        }
    }

    /// `console.log.1` then `console.log` of a VM's run directory.
    fn run_console_log(&self, name: &str) -> Vec<u8> {
        let log = VmPaths::new(&self.vm_dir(name)).console_log;
        let mut out = std::fs::read(vessel_monitor::log::rotated_path(&log)).unwrap_or_default();
        out.extend(std::fs::read(&log).unwrap_or_default());
        out
    }

    /// Cleans up after a VM that is not running (adoption failed): kills the QEMU of a start
    /// that never finished, removes its cgroup, sockets, pid file and `vm.json`, keeps its
    /// console log. Returns how its last run ended when it ran while the daemon was away; an
    /// error when a recorded QEMU still runs there (nothing is touched then).
    pub fn cleanup_orphan(&self, name: &str) -> Result<Option<VmExit>> {
        let dir = self.vm_dir(name);
        if !dir.exists() && !self.cgroup_exists(name) {
            return Ok(None);
        }
        let cgroup = self.cgroup(name);
        match vessel_vm::reap_stale(&dir, Some(&cgroup)).map_err(vm_err("cleaning up the VM"))? {
            StaleVm::Running { pid } => Err(Error::conflict(format!(
                "QEMU (pid {pid}) of VM {name} still runs but could not be adopted; see the \
                 daemon's log"
            ))),
            StaleVm::Reaped { exit } => {
                self.keep_console_log(name);
                Ok(exit)
            }
        }
    }

    fn cgroup(&self, name: &str) -> String {
        format!("{}/{name}", self.cgroup_parent)
    }

    fn cgroup_exists(&self, name: &str) -> bool {
        vessel_cgroups::manager(&self.cgroup(name)).is_ok_and(|c| c.exists())
    }

    /// Names of the VMs that have a run directory.
    pub fn run_dirs(&self) -> Vec<String> {
        std::fs::read_dir(&self.run_dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    }

    fn vm_dir(&self, name: &str) -> PathBuf {
        self.run_dir.join(name)
    }

    /// Which accelerator VMs use here, probing once (booting the image's kernel under KVM
    /// with a short timeout) and caching the answer.
    fn accel(&self, kernel: &Path, initrd: Option<&Path>) -> (Accel, String) {
        let mut cached = self.accel.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(a) = cached.as_ref() {
            return a.clone();
        }
        let answer = match vessel_vm::probe_accel(
            kernel,
            initrd,
            Duration::from_secs(5),
            Some(&self.accel_cache),
        ) {
            Ok(p) => (p.accel, p.reason),
            Err(e) => (Accel::Tcg, format!("the KVM probe failed: {}", chain(&e))),
        };
        tracing::info!(accel = ?answer.0, reason = %answer.1, "VM accelerator");
        *cached = Some(answer.clone());
        answer
    }

    /// Builds the machine for an instance from its image (blocking: runs `qemu-img`): QEMU
    /// runs as the VM's own host user and reads the image's files through links in the
    /// instance directory (see `vm_files`).
    pub fn machine(
        &self,
        inst: &Instance,
        image: &Image,
        image_dir: &Path,
        volumes: Vec<Disk>,
    ) -> Result<(MachineDef, String)> {
        // With a root volume (first of `volumes`) the image's disk is not overlaid.
        let root_volume = inst.storage.is_some() && !volumes.is_empty();
        let name = &inst.name;
        let run = self.vm_dir(name);
        let user = qemu_user(inst)?;
        let inst_dir = self.prepare(inst)?;
        let memory_mib = inst
            .limits
            .memory
            .map(|m| (m >> 20).max(64))
            .unwrap_or(DEFAULT_MEMORY_MIB);
        let vcpus = inst
            .limits
            .cpu
            .map(|c| c.ceil().max(1.0) as u32)
            .unwrap_or(1);
        let (mut def, profile) = if image_dir.join(vessel_vmimage::MANIFEST_FILE).is_file() {
            let vm = vessel_vmimage::VmImage::open(image_dir).map_err(|e| {
                Error::internal(format!("image {}: {}", image.fingerprint, chain(&e)))
            })?;
            let (kernel, initrd) = (vm.kernel_path(), vm.initrd_path());
            let mut def = MachineDef::para(
                name,
                &run,
                &link_image_file(&inst_dir, &kernel)?,
                Some(&link_image_file(&inst_dir, &initrd)?),
            );
            let cmdline = vm
                .manifest
                .cmdline_for(name, vessel_vmimage::GuestConsole::Serial)
                .map_err(|e| Error::internal(format!("kernel command line: {}", chain(&e))))?;
            let cmdline = match ssh_keys_param(&inst.ssh_keys) {
                Some(param) => format!("{cmdline} {param}"),
                None => cmdline,
            };
            if let vessel_vm::Profile::Para(p) = &mut def.profile {
                p.cmdline = cmdline;
            }
            if let Some((disk, format)) = image_disk_format(image_dir).filter(|_| !root_volume) {
                let disk = link_image_file(&inst_dir, &disk)?;
                let backing = (disk.as_path(), disk_format(format));
                def.disks
                    .push(self.root_disk(&inst_dir, backing, Media::Disk)?);
            }
            let (accel, _) = self.accel(&kernel, Some(&initrd));
            def.accel = accel;
            (def, "para")
        } else {
            let desc: FirmwareBoot = serde_json::from_slice(
                &std::fs::read(image_dir.join(FIRMWARE_FILE))
                    .map_err(|e| Error::internal(format!("image {}: {e}", image.fingerprint)))?,
            )
            .map_err(|e| Error::internal(format!("{FIRMWARE_FILE}: {e}")))?;
            let file = image_dir.join(&desc.file);
            let (media, disk) = if desc.boot == "cdrom" {
                (
                    Media::Cdrom,
                    Disk {
                        path: link_image_file(&inst_dir, &file)?,
                        format: DiskFormat::Raw,
                        media: Media::Cdrom,
                        read_only: true,
                        nbd_export: None,
                        rbd: None,
                    },
                )
            } else if root_volume {
                (Media::Disk, volumes[0].clone())
            } else {
                let file = link_image_file(&inst_dir, &file)?;
                let backing = (file.as_path(), disk_format(&desc.format));
                (
                    Media::Disk,
                    self.root_disk(&inst_dir, backing, Media::Disk)?,
                )
            };
            let mut def = MachineDef::full(name, &run, media);
            def.disks.push(disk);
            // Firmware boots have no kernel to probe KVM with: use what the probe found.
            def.accel = self
                .accel
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .map_or(Accel::Tcg, |a| a.0);
            (def, "full")
        };
        let skip = usize::from(root_volume && profile == "full");
        def.disks.extend(volumes.into_iter().skip(skip));
        def.vcpus = vcpus;
        def.memory_mib = memory_mib.div_ceil(2) * 2;
        // A para guest (our kernel, our command line) can grow live up to MEMORY_GROWTH times
        // what it booted with, within the host's memory.
        if profile == "para" {
            let host = host_memory_mib().unwrap_or(0) / 2 * 2;
            let max = (def.memory_mib * MEMORY_GROWTH).min(host);
            def.memory_max_mib = (max > def.memory_mib).then_some(max);
            // vCPUs too (the guest agent brings plugged ones online).
            def.vcpus_max = Some((vcpus * MEMORY_GROWTH as u32).min(MAX_VCPUS).max(vcpus));
        }
        def.cgroup = Some(self.cgroup(name));
        def.console_log_sink = self.console_log_sink.as_ref().map(|p| LogSink {
            program: p.clone(),
            args: vec!["--console-log".into()],
        });
        // QEMU runs as the VM's own host user: it reads the linked image files and writes
        // its run directory and disks, which the engine hands over (0700, 0600).
        def.run_as = Some(user);
        Ok((def, profile.into()))
    }

    /// Starts QEMU (blocking); returns the running VM.
    pub fn start(&self, def: &MachineDef) -> Result<Arc<RunningVm>> {
        let vm = Arc::new(
            vessel_vm::start_cancellable(def, None, &self.cancel).map_err(|e| {
                Error::internal(format!("cannot start VM {}: {}", def.name, chain(&e)))
            })?,
        );
        self.lock().insert(def.name.clone(), vm.clone());
        Ok(vm)
    }

    /// Adopts the QEMU of an instance left running by a previous daemon (blocking).
    pub fn adopt(&self, name: &str) -> Option<Arc<RunningVm>> {
        let paths = VmPaths::new(&self.vm_dir(name));
        if !paths.pidfile.exists() {
            return None;
        }
        match vessel_vm::adopt(&paths.pidfile, &paths.qmp, None) {
            Ok(vm) => {
                let vm = Arc::new(vm);
                self.lock().insert(name.to_string(), vm.clone());
                Some(vm)
            }
            Err(e) => {
                tracing::warn!(instance = name, error = %chain(&e), "could not adopt a VM");
                None
            }
        }
    }

    /// Removes what a VM instance keeps: its run directory, its cgroup and its root disk.
    pub fn remove_files(&self, name: &str) -> Result<()> {
        self.forget(name);
        // A cgroup left by a daemon that died while stopping the VM goes too.
        self.cleanup_orphan(name)?;
        for d in [self.vm_dir(name), self.instances_dir.join(name)] {
            if d.exists() {
                std::fs::remove_dir_all(&d)
                    .map_err(|e| Error::internal(format!("removing {}: {e}", d.display())))?;
            }
        }
        Ok(())
    }

    /// Where the console log is: the live one (with its rotated `.1` beside it) while QEMU
    /// runs, the kept copy after.
    pub fn console_log_path(&self, name: &str) -> PathBuf {
        match self.get(name) {
            Some(_) => VmPaths::new(&self.vm_dir(name)).console_log,
            None => self.instances_dir.join(name).join("console.log"),
        }
    }

    /// Live usage of a VM.
    pub fn usage(&self, name: &str) -> InstanceState {
        let Some(vm) = self.get(name) else {
            return InstanceState::default();
        };
        let stats = vm.cgroup_stats().ok().flatten().unwrap_or_default();
        InstanceState {
            pid: Some(vm.pid),
            cpu_usage_ns: stats.cpu_usage_ns,
            memory_usage_bytes: stats.memory_usage_bytes,
            memory_peak_bytes: stats.memory_peak_bytes,
            oom_kills: stats.oom_kills,
            pids: stats.pids,
            disk_read_bytes: stats.io_read_bytes,
            disk_write_bytes: stats.io_write_bytes,
        }
    }

    /// The accelerator VMs run with and why: this daemon's probe, else the last answer in
    /// the probe's cache; `None` before any VM started here.
    pub fn accel_summary(&self) -> Option<(String, String)> {
        if let Some((a, why)) = self.accel.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            return Some((a.to_string(), why));
        }
        let text = std::fs::read_to_string(&self.accel_cache).ok()?;
        let all: std::collections::BTreeMap<String, vessel_vm::AccelProbe> =
            serde_json::from_str(&text).ok()?;
        all.into_values()
            .next_back()
            .map(|p| (p.accel.to_string(), p.reason))
    }

    /// What a VM instance runs with.
    pub fn details(&self, name: &str) -> Option<VmDetails> {
        let vm = self.get(name)?;
        let accel = self.accel.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Some(VmDetails {
            profile: vm.record.profile.clone(),
            accel: accel
                .as_ref()
                .map_or("tcg".into(), |a| format!("{:?}", a.0).to_lowercase()),
            accel_reason: accel.map(|a| a.1).unwrap_or_default(),
            agent: vm.agent_socket.is_some(),
            vnc: vm.vnc_socket.is_some(),
        })
    }
}
