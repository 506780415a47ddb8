//! What a VM is made of: the machine definition the caller fills in, and the files of a
//! running VM under its run directory.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Result, VmError};
use crate::spawn::RunAs;

/// Which hypervisor accelerator runs the guest (see [`crate::probe_accel`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// Hardware virtualisation through /dev/kvm.
    Kvm,
    /// QEMU's binary translator: slower, works everywhere.
    Tcg,
}

impl std::fmt::Display for Accel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        })
    }
}

/// The device model and boot path of a VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// Paravirtualised (the default): q35 without legacy devices, direct kernel boot, virtio
    /// everywhere, console and agent on virtio-serial. For Vessel's own VM images.
    Para(ParaBoot),
    /// Full emulation: firmware, e1000, AHCI disks and cdroms, standard VGA behind VNC, a
    /// serial console. For unmodified operating systems.
    Full(FullBoot),
}

/// Direct kernel boot of the `para` profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParaBoot {
    /// The kernel (`vmlinuz`).
    pub kernel: PathBuf,
    /// The initramfs, if any.
    pub initrd: Option<PathBuf>,
    /// Kernel command line from the image; the engine adds `console=hvc0` and
    /// `vessel.hostname=<name>` unless present.
    pub cmdline: String,
    /// Also give the guest an ISA serial port logging to `kernel.log`, with `console=ttyS0`
    /// first, so the kernel's messages before the virtio console driver loads are kept
    /// (debugging; it is the one legacy device of this profile).
    #[serde(default)]
    pub kernel_log: bool,
}

/// Firmware boot of the `full` profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FullBoot {
    /// BIOS or UEFI.
    pub firmware: Firmware,
    /// Which kind of device to boot from: the first disk of that media.
    pub boot_from: Media,
}

/// Firmware of the `full` profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Firmware {
    /// SeaBIOS (legacy BIOS), the default.
    Bios,
    /// OVMF (UEFI, no Secure Boot); each VM gets its own copy of the variable store.
    Uefi,
}

/// What a disk is to the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Media {
    /// A hard disk (virtio-blk in `para`, AHCI in `full`).
    Disk,
    /// A read-only cdrom (AHCI, `full` only).
    Cdrom,
}

/// Image format of a disk file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskFormat {
    /// qcow2 (overlays and images).
    Qcow2,
    /// Raw bytes (ISOs, plain images).
    Raw,
}

impl DiskFormat {
    /// QEMU's name of the format.
    pub fn as_str(&self) -> &'static str {
        match self {
            DiskFormat::Qcow2 => "qcow2",
            DiskFormat::Raw => "raw",
        }
    }
}

/// One disk or cdrom.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disk {
    /// The image file (usually an overlay made by [`crate::create_overlay`]).
    pub path: PathBuf,
    /// Its format.
    pub format: DiskFormat,
    /// Disk or cdrom.
    pub media: Media,
    /// Whether the guest may not write it (always true for a cdrom).
    #[serde(default)]
    pub read_only: bool,
    /// When set, the disk is this export of an NBD server listening on the unix socket at
    /// `path` (a storage volume served by the daemon), not a file. QEMU reconnects when the
    /// server restarts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbd_export: Option<String>,
    /// When set, the disk is this RBD image of a Ceph cluster, opened through QEMU's librbd
    /// (`path` is not used).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rbd: Option<RbdSource>,
}

/// An RBD image as QEMU opens it: the files are readable by QEMU's user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RbdSource {
    /// The RADOS pool.
    pub pool: String,
    /// The image.
    pub image: String,
    /// The Ceph user (without `client.`).
    pub user: String,
    /// A Ceph configuration naming the monitors.
    pub conf: PathBuf,
    /// A file holding the user's key (base64, as in a keyring); it reaches QEMU as a secret
    /// object, never on its command line.
    pub key_file: PathBuf,
}

/// Where a NIC's packets go on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NicBackend {
    /// An existing tap device (the network engine creates it and plugs it into a bridge).
    Tap {
        /// Interface name.
        ifname: String,
    },
    /// QEMU's user-mode network (slirp). For tests only: slow, and outside Vessel's networks.
    User,
}

/// One network interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nic {
    /// Host side.
    pub backend: NicBackend,
    /// MAC address `xx:xx:xx:xx:xx:xx`; derived from the VM's name and the NIC's index
    /// (under QEMU's 52:54:00 prefix) when not given.
    #[serde(default)]
    pub mac: Option<String>,
}

/// Everything needed to start one VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineDef {
    /// Instance name: 1–63 characters of `A-Z a-z 0-9 - _ .`, not starting with `.` or `-`.
    pub name: String,
    /// Directory of the VM's sockets, logs and pid file (created if missing). Keep it short:
    /// unix socket paths are limited to 107 bytes.
    pub run_dir: PathBuf,
    /// Device model and boot path.
    pub profile: Profile,
    /// Virtual CPUs at boot.
    pub vcpus: u32,
    /// The most vCPUs it may have while it runs (more are plugged with `device_add`; the guest
    /// brings them online, Vessel's agent does). `None`: fixed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpus_max: Option<u32>,
    /// Guest RAM at boot, MiB. Refused when more than the host's MemAvailable.
    pub memory_mib: u64,
    /// The most guest RAM can grow to while the VM runs, MiB (a virtio-mem device holds what
    /// is above `memory_mib`; the guest kernel needs its `virtio_mem` module, and onlines what
    /// is plugged by `memhp_default_state`, which the para profile passes). Both sizes are
    /// multiples of 2 MiB. `None`: the memory is fixed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_max_mib: Option<u64>,
    /// Accelerator (from [`crate::probe_accel`]).
    pub accel: Accel,
    /// Disks and cdroms, in order.
    #[serde(default)]
    pub disks: Vec<Disk>,
    /// Network interfaces, in order.
    #[serde(default)]
    pub nics: Vec<Nic>,
    /// Run QEMU and the console log sink as this user (numeric ids, see [`RunAs::ids`], or a
    /// host user by name, [`RunAs::lookup`]) instead of root. The engine switches user itself
    /// before QEMU starts, because QEMU's own `-runas` is refused by the sandbox
    /// (`elevateprivileges=deny`): so the kernel, initrd, firmware and disk images (with
    /// their backing files) must be readable by that user; the engine hands the run
    /// directory (0700) and the writable disks and UEFI variables it is given (0600) to the
    /// user, and QEMU and the sink make their files with umask 077.
    #[serde(default)]
    pub run_as: Option<RunAs>,
    /// Cgroup (path relative to each hierarchy's root, e.g. `vessel/vm1`) that QEMU is placed
    /// into before the guest runs, with a cpu quota of `vcpus` and a memory limit of the guest
    /// RAM plus QEMU's overhead. `None`: no cgroup.
    #[serde(default)]
    pub cgroup: Option<String>,
    /// vsock context id; a `vhost-vsock-pci` device is added when given and the host has
    /// /dev/vhost-vsock.
    #[serde(default)]
    pub vsock_cid: Option<u32>,
    /// The program that keeps `console.log` bounded (QEMU's own `logfile=` never rotates, so a
    /// guest could fill the disk through its console). `None`: QEMU writes the log itself,
    /// without bound (for tests and callers without a sink).
    #[serde(default)]
    pub console_log_sink: Option<LogSink>,
    /// Start as the target of a live migration (`-incoming defer`): the guest does not run;
    /// [`crate::RunningVm::accept_migration`] waits for the state and
    /// [`crate::RunningVm::finish_incoming`] runs it.
    #[serde(default)]
    pub incoming: bool,
}

/// A console log sink: run as `program args... LOG` (detached, as the VM's user, in the VM's
/// cgroup) with the console's bytes on its stdin, a pipe QEMU writes the log into, until
/// end-of-file (QEMU exited). Vessel's is `vessel-monitor --console-log`, which keeps `LOG`
/// and `LOG.1` of at most 1 MiB each.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogSink {
    /// The program.
    pub program: PathBuf,
    /// Arguments before the log's path.
    #[serde(default)]
    pub args: Vec<String>,
}

impl MachineDef {
    /// Whether the VM's memory can grow while it runs (a virtio-mem device of some size).
    pub fn memory_hotplug(&self) -> bool {
        self.memory_max_mib.is_some_and(|m| m > self.memory_mib)
    }

    /// A `para` VM with 1 vCPU, 512 MiB, TCG, no disks or NICs.
    pub fn para(name: &str, run_dir: &Path, kernel: &Path, initrd: Option<&Path>) -> MachineDef {
        MachineDef {
            name: name.into(),
            run_dir: run_dir.into(),
            profile: Profile::Para(ParaBoot {
                kernel: kernel.into(),
                initrd: initrd.map(Into::into),
                cmdline: String::new(),
                kernel_log: false,
            }),
            vcpus: 1,
            vcpus_max: None,
            memory_mib: 512,
            memory_max_mib: None,
            accel: Accel::Tcg,
            disks: Vec::new(),
            nics: Vec::new(),
            run_as: None,
            cgroup: None,
            vsock_cid: None,
            console_log_sink: None,
            incoming: false,
        }
    }

    /// A `full` VM booting from its first disk with SeaBIOS, 1 vCPU, 512 MiB, TCG.
    pub fn full(name: &str, run_dir: &Path, boot_from: Media) -> MachineDef {
        MachineDef {
            profile: Profile::Full(FullBoot {
                firmware: Firmware::Bios,
                boot_from,
            }),
            ..MachineDef::para(name, run_dir, Path::new(""), None)
        }
    }

    /// Checks names, counts and the combination of devices (not the files; see `start`).
    pub fn validate(&self) -> Result<()> {
        validate_name(&self.name)?;
        if !(1..=255).contains(&self.vcpus) {
            return Err(invalid(format!(
                "vcpus={} is out of range: give 1 to 255",
                self.vcpus
            )));
        }
        if let Some(max) = self.vcpus_max {
            if max < self.vcpus || max > 255 {
                return Err(invalid(format!(
                    "vcpus_max={max} must lie between vcpus ({}) and 255",
                    self.vcpus
                )));
            }
        }
        if self.memory_mib > 1 << 24 {
            return Err(invalid(format!(
                "memory={} MiB is out of range: give at most 16 TiB",
                self.memory_mib
            )));
        }
        if self.memory_mib < 32 {
            return Err(invalid(format!(
                "memory={} MiB is too small: give at least 32 MiB",
                self.memory_mib
            )));
        }
        if let Some(max) = self.memory_max_mib {
            if max < self.memory_mib || max > 1 << 24 {
                return Err(invalid(format!(
                    "memory_max={max} MiB must lie between memory ({} MiB) and 16 TiB",
                    self.memory_mib
                )));
            }
            if !max.is_multiple_of(2) || !self.memory_mib.is_multiple_of(2) {
                return Err(invalid(
                    "memory and memory_max must be multiples of 2 MiB when memory can grow",
                ));
            }
        }
        for (i, d) in self.disks.iter().enumerate() {
            if d.media == Media::Cdrom && matches!(self.profile, Profile::Para(_)) {
                return Err(invalid(format!(
                    "disk {i} is a cdrom, which only the full profile has: use a disk"
                )));
            }
        }
        if let Profile::Full(f) = &self.profile {
            if !self.disks.iter().any(|d| d.media == f.boot_from) {
                return Err(invalid(format!(
                    "the full profile boots from a {:?} but the VM has none",
                    f.boot_from
                )));
            }
            if self.disks.len() > 6 {
                return Err(invalid(
                    "the full profile has 6 AHCI ports: give at most 6 disks",
                ));
            }
        }
        for (i, n) in self.nics.iter().enumerate() {
            if let Some(mac) = &n.mac {
                if !is_mac(mac) {
                    return Err(invalid(format!(
                        "nic {i}: MAC address {mac:?} is not of the form 52:54:00:12:34:56"
                    )));
                }
            }
            if let NicBackend::Tap { ifname } = &n.backend {
                if ifname.is_empty()
                    || ifname.len() > 15
                    || !ifname
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
                {
                    return Err(invalid(format!(
                        "nic {i}: tap name {ifname:?} is not a valid interface name"
                    )));
                }
            }
        }
        if let Some(user) = &self.run_as {
            // (uid_t)-1 means "no change" to setuid and friends.
            if user.uid == u32::MAX || user.gid == u32::MAX {
                return Err(invalid(format!(
                    "run_as {}:{} is not a user: -1 means no id",
                    user.uid as i32, user.gid as i32
                )));
            }
        }
        let paths = VmPaths::new(&self.run_dir);
        for sock in [&paths.qmp, &paths.console, &paths.agent, &paths.vnc] {
            if sock.as_os_str().len() > 107 {
                return Err(invalid(format!(
                    "run directory {} is too long for unix socket paths (107 bytes): use a \
                     shorter one",
                    self.run_dir.display()
                )));
            }
        }
        Ok(())
    }

    /// The MAC address of NIC `index`: the given one, or one derived from the name.
    pub fn mac(&self, index: usize) -> String {
        if let Some(mac) = self.nics.get(index).and_then(|n| n.mac.clone()) {
            return mac;
        }
        // FNV-1a over name and index: stable across restarts, distinct between VMs.
        let mut h: u32 = 0x811c_9dc5;
        for b in self.name.bytes().chain((index as u32).to_be_bytes()) {
            h ^= b as u32;
            h = h.wrapping_mul(0x0100_0193);
        }
        let b = h.to_be_bytes();
        format!("52:54:00:{:02x}:{:02x}:{:02x}", b[1], b[2], b[3])
    }
}

fn invalid(msg: impl Into<String>) -> VmError {
    VmError::InvalidDefinition(msg.into())
}

/// Checks an instance name (it becomes part of QEMU's arguments and of file names).
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "name {name:?} is invalid: use 1 to 63 characters from A-Z a-z 0-9 - _ . (not \
             starting with '.' or '-')"
        )))
    }
}

fn is_mac(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The files of a VM under its run directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmPaths {
    /// The run directory.
    pub dir: PathBuf,
    /// QMP socket.
    pub qmp: PathBuf,
    /// Console socket (virtio console in `para`, serial port in `full`).
    pub console: PathBuf,
    /// Everything the console printed in this run (QEMU appends to it; the previous run's
    /// log is kept as `console.log.1`).
    pub console_log: PathBuf,
    /// Guest agent socket (`para`).
    pub agent: PathBuf,
    /// VNC socket (`full`).
    pub vnc: PathBuf,
    /// QEMU's pid file.
    pub pidfile: PathBuf,
    /// QEMU's own messages (stderr).
    pub qemu_log: PathBuf,
    /// Early kernel messages (`para` with `kernel_log`).
    pub kernel_log: PathBuf,
    /// The VM's UEFI variable store (`full` with UEFI).
    pub uefi_vars: PathBuf,
    /// What [`crate::adopt`] reads back: the running VM's description.
    pub state: PathBuf,
}

impl VmPaths {
    /// The files under `dir`.
    pub fn new(dir: &Path) -> VmPaths {
        VmPaths {
            dir: dir.into(),
            qmp: dir.join("qmp.sock"),
            console: dir.join("console.sock"),
            console_log: dir.join("console.log"),
            agent: dir.join("agent.sock"),
            vnc: dir.join("vnc.sock"),
            pidfile: dir.join("qemu.pid"),
            qemu_log: dir.join("qemu.log"),
            kernel_log: dir.join("kernel.log"),
            uefi_vars: dir.join("uefi-vars.fd"),
            state: dir.join("vm.json"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_macs() {
        assert!(validate_name("web-1.prod_a").is_ok());
        for bad in ["", ".x", "-x", "a b", "a,b", "a/b", &"x".repeat(64)] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
        let d = MachineDef::para("vm1", Path::new("/run/v"), Path::new("/k"), None);
        assert_eq!(d.mac(0), d.mac(0));
        assert_ne!(d.mac(0), d.mac(1));
        assert!(is_mac(&d.mac(0)) && d.mac(0).starts_with("52:54:00:"));
    }

    #[test]
    fn definitions_are_checked() {
        let mut d = MachineDef::para("vm1", Path::new("/run/v"), Path::new("/k"), None);
        assert!(d.validate().is_ok());
        d.vcpus = 0;
        assert!(d.validate().is_err());
        d.vcpus = 1;
        d.disks.push(Disk {
            path: "/x.iso".into(),
            format: DiskFormat::Raw,
            media: Media::Cdrom,
            read_only: true,
            nbd_export: None,
            rbd: None,
        });
        assert!(d.validate().is_err(), "cdrom in para");
        let mut f = MachineDef::full("vm1", Path::new("/run/v"), Media::Disk);
        assert!(f.validate().is_err(), "full without a boot disk");
        f.disks.push(Disk {
            path: "/d.qcow2".into(),
            format: DiskFormat::Qcow2,
            media: Media::Disk,
            read_only: false,
            nbd_export: None,
            rbd: None,
        });
        assert!(f.validate().is_ok());
        f.run_as = Some(RunAs::ids(u32::MAX, 5));
        assert!(f.validate().is_err(), "uid -1");
        f.run_as = Some(RunAs::ids(2_000_000, 2_000_000));
        assert!(f.validate().is_ok());
        f.run_dir = PathBuf::from("/".to_string() + &"d".repeat(100));
        assert!(f.validate().is_err(), "long socket paths");
    }
}
