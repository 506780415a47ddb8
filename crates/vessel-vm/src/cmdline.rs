//! Machine definition → QEMU command line.
//!
//! Option values are escaped QEMU's way (a `,` inside a value is doubled) and block devices
//! are given as JSON, so no path can inject options. The guest starts paused (`-S`): the
//! engine connects QMP and places QEMU into its cgroup before the first instruction runs.

use std::ffi::OsString;
use std::os::fd::RawFd;
use std::path::Path;

use crate::error::{Result, VmError};
use crate::machine::{Accel, Firmware, MachineDef, Media, NicBackend, ParaBoot, Profile, VmPaths};

/// The sandbox every VM runs under: no obsolete syscalls, no privilege changes, no new
/// processes, no scheduler/affinity changes.
pub const SANDBOX: &str = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny";

/// Size of TCG's translation cache, MiB (QEMU's default is 1 GiB per VM, which would dominate
/// the memory limit of a small guest).
pub const TCG_TB_SIZE_MIB: u64 = 128;

/// Id of the virtio-mem device that holds a VM's memory above what it booted with.
pub const MEMORY_DEVICE: &str = "vmem";
/// Id of its memory backend.
pub const MEMORY_BACKEND: &str = "vmem-ram";

/// Name of the virtio-serial port of the guest agent.
pub const AGENT_PORT: &str = "org.vessel.agent";
/// Name of the virtio console port.
pub const CONSOLE_PORT: &str = "org.vessel.console";

/// Descriptors QEMU inherits for one tap NIC: a queue of the tap, opened by the (root) caller,
/// and `/dev/vhost-net` when the kernel's vhost accelerates it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TapFds {
    /// The tap queue (`-netdev tap,fd=N`).
    pub tap: RawFd,
    /// The vhost-net device (`vhostfd=N`), or `None` for QEMU's own virtio-net backend.
    pub vhost: Option<RawFd>,
}

/// The fd set QEMU finds the console log's pipe in (`logfile=/dev/fdset/N`).
pub const CONSOLE_LOG_FDSET: u32 = 1;

/// Builds QEMU's arguments (without the program name). `taps` holds, for each NIC of the
/// definition in order, the descriptors of a tap NIC (`None` for other backends).
/// `console_log` is the write end of the pipe to the console log sink, inherited by QEMU;
/// without it QEMU writes `console.log` itself.
pub fn qemu_args(
    def: &MachineDef,
    paths: &VmPaths,
    taps: &[Option<TapFds>],
    console_log: Option<RawFd>,
) -> Result<Vec<OsString>> {
    let mut a = Args::default();
    if let Some(fd) = console_log {
        // Passed before any -chardev: QEMU dups it when the console's logfile is opened.
        a.push("-add-fd");
        a.push(format!(
            "fd={fd},set={CONSOLE_LOG_FDSET},opaque=console-log"
        ));
    }
    a.push("-name");
    a.push(opts(&[
        ("guest", &def.name),
        ("process", &format!("vessel-{}", def.name)),
        ("debug-threads", "on"),
    ]));
    a.push("-nodefaults");
    a.push("-no-user-config");
    a.push("-display");
    a.push("none");
    a.push("-msg");
    a.push("timestamp=on");
    let machine = match &def.profile {
        // No PS/2 controller, VMware port, SATA, SMBus or USB: nothing the guest does not use.
        Profile::Para(_) => "q35,i8042=off,vmport=off,sata=off,smbus=off,usb=off,graphics=off",
        Profile::Full(_) => "q35,vmport=off,usb=off",
    };
    a.push("-machine");
    a.push(machine);
    match def.accel {
        Accel::Kvm => {
            a.push("-accel");
            a.push("kvm");
            a.push("-cpu");
            a.push("host");
        }
        Accel::Tcg => {
            a.push("-accel");
            a.push(format!("tcg,tb-size={TCG_TB_SIZE_MIB}"));
            a.push("-cpu");
            a.push("max");
        }
    }
    a.push("-smp");
    match def.vcpus_max.filter(|m| *m > def.vcpus) {
        Some(max) => a.push(format!("cpus={},maxcpus={max}", def.vcpus)),
        None => a.push(def.vcpus.to_string()),
    }
    a.push("-m");
    match def.memory_max_mib.filter(|_| def.memory_hotplug()) {
        Some(max) => {
            a.push(format!("size={}M,maxmem={max}M", def.memory_mib));
            // Only what the guest has plugged is ever touched (reserve=off: no swap reserved).
            a.push("-object");
            a.push(opts(&[
                ("qom-type", "memory-backend-ram"),
                ("id", MEMORY_BACKEND),
                ("size", &format!("{}M", max - def.memory_mib)),
                ("reserve", "off"),
            ]));
            a.push("-device");
            a.push(opts(&[
                ("driver", "virtio-mem-pci"),
                ("id", MEMORY_DEVICE),
                ("memdev", MEMORY_BACKEND),
                ("requested-size", "0"),
            ]));
        }
        None => a.push(format!("size={}M", def.memory_mib)),
    }
    rbd_secrets(&mut a, def)?;
    match &def.profile {
        Profile::Para(p) => para(&mut a, def, p, paths, taps, console_log)?,
        Profile::Full(f) => full(
            &mut a,
            def,
            f.firmware,
            f.boot_from,
            paths,
            taps,
            console_log,
        )?,
    }
    if let Some(cid) = def.vsock_cid {
        if Path::new("/dev/vhost-vsock").exists() {
            a.push("-device");
            a.push(opts(&[
                ("driver", "vhost-vsock-pci"),
                ("guest-cid", &cid.to_string()),
            ]));
        } else {
            tracing::warn!(vm = %def.name, "no /dev/vhost-vsock on this host: the VM gets no vsock");
        }
    }
    a.push("-chardev");
    a.push(opts(&[
        ("backend", "socket"),
        ("id", "qmp"),
        ("path", utf8(&paths.qmp)?),
        ("server", "on"),
        ("wait", "off"),
    ]));
    a.push("-mon");
    a.push("chardev=qmp,mode=control");
    a.push("-sandbox");
    a.push(SANDBOX);
    a.push("-pidfile");
    a.push(&paths.pidfile);
    a.push("-S");
    if def.incoming {
        a.push("-incoming");
        a.push("defer");
    }
    Ok(a.0)
}

fn para(
    a: &mut Args,
    def: &MachineDef,
    p: &ParaBoot,
    paths: &VmPaths,
    taps: &[Option<TapFds>],
    console_log: Option<RawFd>,
) -> Result<()> {
    a.push("-kernel");
    a.push(&p.kernel);
    if let Some(initrd) = &p.initrd {
        a.push("-initrd");
        a.push(initrd);
    }
    a.push("-append");
    a.push(kernel_cmdline(def, p));
    if p.kernel_log {
        a.push("-chardev");
        a.push(opts(&[
            ("backend", "file"),
            ("id", "kernel-log"),
            ("path", utf8(&paths.kernel_log)?),
        ]));
        a.push("-serial");
        a.push("chardev:kernel-log");
    }
    a.push("-device");
    a.push("virtio-serial-pci,id=vser0");
    a.push("-chardev");
    a.push(console_chardev(paths, console_log)?);
    a.push("-device");
    a.push(opts(&[
        ("driver", "virtconsole"),
        ("bus", "vser0.0"),
        ("chardev", "console"),
        ("name", CONSOLE_PORT),
    ]));
    a.push("-chardev");
    a.push(opts(&[
        ("backend", "socket"),
        ("id", "agent"),
        ("path", utf8(&paths.agent)?),
        ("server", "on"),
        ("wait", "off"),
    ]));
    a.push("-device");
    a.push(opts(&[
        ("driver", "virtserialport"),
        ("bus", "vser0.0"),
        ("chardev", "agent"),
        ("name", AGENT_PORT),
    ]));
    a.push("-object");
    a.push("rng-random,id=rng0,filename=/dev/urandom");
    a.push("-device");
    a.push("virtio-rng-pci,rng=rng0");
    for (i, d) in def.disks.iter().enumerate() {
        a.push("-blockdev");
        a.push(blockdev(i, d, d.read_only)?);
        a.push("-device");
        a.push(opts(&[
            ("driver", "virtio-blk-pci"),
            ("drive", &format!("disk{i}")),
            ("id", &format!("vd{i}")),
            ("serial", &format!("vessel-disk{i}")),
        ]));
    }
    nics(a, def, taps, "virtio-net-pci")
}

fn full(
    a: &mut Args,
    def: &MachineDef,
    firmware: Firmware,
    boot_from: Media,
    paths: &VmPaths,
    taps: &[Option<TapFds>],
    console_log: Option<RawFd>,
) -> Result<()> {
    match firmware {
        Firmware::Bios => {
            a.push("-bios");
            a.push(crate::host::SEABIOS);
        }
        Firmware::Uefi => {
            a.push("-drive");
            a.push(opts(&[
                ("if", "pflash"),
                ("format", "raw"),
                ("unit", "0"),
                ("readonly", "on"),
                ("file", crate::host::OVMF_CODE),
            ]));
            a.push("-drive");
            a.push(opts(&[
                ("if", "pflash"),
                ("format", "raw"),
                ("unit", "1"),
                ("file", utf8(&paths.uefi_vars)?),
            ]));
        }
    }
    a.push("-chardev");
    a.push(console_chardev(paths, console_log)?);
    a.push("-serial");
    a.push("chardev:console");
    a.push("-device");
    a.push("VGA");
    a.push("-vnc");
    a.push(format!("unix:{}", utf8(&paths.vnc)?.replace(',', ",,")));
    a.push("-device");
    a.push("qemu-xhci,id=xhci");
    a.push("-device");
    a.push("usb-tablet,bus=xhci.0");
    let mut boot_given = false;
    for (i, d) in def.disks.iter().enumerate() {
        let cdrom = d.media == Media::Cdrom;
        a.push("-blockdev");
        a.push(blockdev(i, d, d.read_only || cdrom)?);
        let mut o = vec![
            (
                "driver",
                if cdrom { "ide-cd" } else { "ide-hd" }.to_string(),
            ),
            ("drive", format!("disk{i}")),
            // The q35 AHCI controller has one device per port.
            ("bus", format!("ide.{i}")),
        ];
        if d.media == boot_from && !boot_given {
            o.push(("bootindex", "1".into()));
            boot_given = true;
        }
        let o: Vec<(&str, &str)> = o.iter().map(|(k, v)| (*k, v.as_str())).collect();
        a.push("-device");
        a.push(opts(&o));
    }
    nics(a, def, taps, "e1000")
}

fn nics(a: &mut Args, def: &MachineDef, taps: &[Option<TapFds>], model: &str) -> Result<()> {
    for (i, n) in def.nics.iter().enumerate() {
        let id = format!("net{i}");
        let netdev = match &n.backend {
            NicBackend::Tap { ifname } => {
                let fds = taps.get(i).copied().flatten().ok_or_else(|| {
                    VmError::InvalidDefinition(format!(
                        "nic {i}: tap {ifname} has no open descriptor to hand to QEMU"
                    ))
                })?;
                let tap = fds.tap.to_string();
                match fds.vhost {
                    Some(v) => opts(&[
                        ("type", "tap"),
                        ("id", &id),
                        ("fd", &tap),
                        ("vhost", "on"),
                        ("vhostfd", &v.to_string()),
                    ]),
                    None => opts(&[("type", "tap"), ("id", &id), ("fd", &tap), ("vhost", "off")]),
                }
            }
            NicBackend::User => opts(&[("type", "user"), ("id", &id)]),
        };
        a.push("-netdev");
        a.push(netdev);
        a.push("-device");
        a.push(opts(&[
            ("driver", model),
            ("netdev", &id),
            ("mac", &def.mac(i)),
        ]));
    }
    Ok(())
}

/// The console's chardev. Its log goes to the sink's pipe when there is one (QEMU's own
/// `logfile=` grows without bound); `logappend=on` keeps QEMU from truncating either.
fn console_chardev(paths: &VmPaths, console_log: Option<RawFd>) -> Result<String> {
    let fdset = format!("/dev/fdset/{CONSOLE_LOG_FDSET}");
    let logfile = match console_log {
        Some(_) => fdset.as_str(),
        None => utf8(&paths.console_log)?,
    };
    Ok(opts(&[
        ("backend", "socket"),
        ("id", "console"),
        ("path", utf8(&paths.console)?),
        ("server", "on"),
        ("wait", "off"),
        ("logfile", logfile),
        ("logappend", "on"),
    ]))
}

/// The kernel command line: the image's without its `console=` (the console belongs to the
/// profile's devices: `hvc0`, after `ttyS0` with `kernel_log`), then `vessel.hostname=` unless
/// the caller gave one.
pub fn kernel_cmdline(def: &MachineDef, p: &ParaBoot) -> String {
    let mut words: Vec<String> = p
        .cmdline
        .split_whitespace()
        .filter(|w| !w.starts_with("console="))
        .map(String::from)
        .collect();
    if p.kernel_log {
        words.push("console=ttyS0".into());
    }
    // The last console= is /dev/console, the one the init talks on.
    words.push("console=hvc0".into());
    if !words.iter().any(|w| w.starts_with("vessel.hostname=")) {
        words.push(format!("vessel.hostname={}", def.name));
    }
    // Images built before their line carried it: under TCG on a busy host the kernel's
    // boot-time check of its IO-APIC timer can fail and panic the guest.
    if !words.iter().any(|w| w == "no_timer_check") {
        words.push("no_timer_check".into());
    }
    // Memory plugged while the guest runs comes online by itself, in the movable zone, so
    // that it can be unplugged again.
    if def.memory_hotplug() && !words.iter().any(|w| w.starts_with("memhp_default_state=")) {
        words.push("memhp_default_state=online_movable".into());
    }
    words.join(" ")
}

/// A `-blockdev` in JSON: format node `diskN` over a file node (or an NBD client node for a
/// volume served over NBD). Backing files of overlays are opened read-only by QEMU from the
/// image header.
fn blockdev(i: usize, d: &crate::machine::Disk, read_only: bool) -> Result<String> {
    let mut file = match (&d.nbd_export, &d.rbd) {
        (_, Some(rbd)) => serde_json::json!({
            "driver": "rbd",
            "pool": rbd.pool,
            "image": rbd.image,
            "conf": utf8(&rbd.conf)?,
            "user": rbd.user,
            "key-secret": rbd_secret(i),
        }),
        (None, None) => serde_json::json!({
            "driver": "file",
            "filename": utf8(&d.path)?,
        }),
        (Some(export), None) => serde_json::json!({
            "driver": "nbd",
            "server": { "type": "unix", "path": utf8(&d.path)? },
            "export": export,
            "reconnect-delay": 10,
        }),
    };
    let mut node = serde_json::json!({
        "driver": d.format.as_str(),
        "node-name": format!("disk{i}"),
        "read-only": read_only,
    });
    if !read_only {
        if d.nbd_export.is_none() && d.rbd.is_none() {
            file["discard"] = "unmap".into();
        }
        node["discard"] = "unmap".into();
    }
    node["file"] = file;
    Ok(node.to_string())
}

/// The id of the secret object holding disk `i`'s RBD key.
fn rbd_secret(i: usize) -> String {
    format!("disk{i}-key")
}

/// The secret objects of the RBD disks' keys, read by QEMU from their files.
fn rbd_secrets(a: &mut Args, def: &MachineDef) -> Result<()> {
    for (i, d) in def.disks.iter().enumerate() {
        if let Some(rbd) = &d.rbd {
            a.push("-object");
            a.push(opts(&[
                ("qom-type", "secret"),
                ("id", &rbd_secret(i)),
                ("file", utf8(&rbd.key_file)?),
                ("format", "base64"),
            ]));
        }
    }
    Ok(())
}

/// `k=v,k=v` with commas in values doubled; a `backend`/`driver`/`type` value (always the
/// first pair) is written as the bare leading word, QEMU's usual form.
fn opts(pairs: &[(&str, &str)]) -> String {
    let mut out = Vec::with_capacity(pairs.len());
    for (k, v) in pairs {
        let v = v.replace(',', ",,");
        if matches!(*k, "backend" | "driver" | "type" | "qom-type") {
            out.push(v);
        } else {
            out.push(format!("{k}={v}"));
        }
    }
    out.join(",")
}

fn utf8(p: &Path) -> Result<&str> {
    p.to_str()
        .ok_or_else(|| VmError::InvalidDefinition(format!("path {} is not UTF-8", p.display())))
}

#[derive(Default)]
struct Args(Vec<OsString>);

impl Args {
    fn push(&mut self, s: impl AsRef<std::ffi::OsStr>) {
        self.0.push(s.as_ref().to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::{Disk, DiskFormat, Nic};

    const TAPS: [Option<TapFds>; 1] = [Some(TapFds {
        tap: 7,
        vhost: None,
    })];

    fn strings(args: &[OsString]) -> Vec<String> {
        args.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn nbd_disks_are_nbd_client_nodes() {
        let mut d = MachineDef::para("vm1", Path::new("/run/vm1"), Path::new("/k"), None);
        d.disks.push(Disk {
            path: "/run/vessel/volumes/vm1-data.sock".into(),
            format: DiskFormat::Raw,
            media: Media::Disk,
            read_only: false,
            nbd_export: Some("pool1/data".into()),
            rbd: None,
        });
        let args = strings(&qemu_args(&d, &VmPaths::new(&d.run_dir), &TAPS, None).unwrap());
        let node: serde_json::Value = args
            .windows(2)
            .find(|w| w[0] == "-blockdev")
            .map(|w| serde_json::from_str(&w[1]).unwrap())
            .expect("a -blockdev");
        assert_eq!(node["driver"], "raw");
        assert_eq!(node["file"]["driver"], "nbd");
        assert_eq!(node["file"]["export"], "pool1/data");
        assert_eq!(node["file"]["server"]["type"], "unix");
        assert_eq!(
            node["file"]["server"]["path"],
            "/run/vessel/volumes/vm1-data.sock"
        );
        assert!(node["file"].get("filename").is_none());
    }

    #[test]
    fn rbd_disks_are_librbd_nodes_with_their_key_in_a_secret_file() {
        let mut d = MachineDef::para("vm1", Path::new("/run/vm1"), Path::new("/k"), None);
        d.disks.push(Disk {
            path: Default::default(),
            format: DiskFormat::Raw,
            media: Media::Disk,
            read_only: false,
            nbd_export: None,
            rbd: Some(crate::machine::RbdSource {
                pool: "vms".into(),
                image: "vm1-root".into(),
                user: "vessel".into(),
                conf: "/run/vessel/disks/vm1.ceph.conf".into(),
                key_file: "/run/vessel/disks/vm1,x.ceph.key".into(),
            }),
        });
        let args = strings(&qemu_args(&d, &VmPaths::new(&d.run_dir), &TAPS, None).unwrap());
        let node: serde_json::Value = args
            .windows(2)
            .find(|w| w[0] == "-blockdev")
            .map(|w| serde_json::from_str(&w[1]).unwrap())
            .expect("a -blockdev");
        assert_eq!(node["driver"], "raw");
        let file = &node["file"];
        assert_eq!(
            (
                &file["driver"],
                &file["pool"],
                &file["image"],
                &file["user"]
            ),
            (
                &"rbd".into(),
                &"vms".into(),
                &"vm1-root".into(),
                &"vessel".into()
            )
        );
        assert_eq!(file["conf"], "/run/vessel/disks/vm1.ceph.conf");
        assert_eq!(file["key-secret"], "disk0-key");
        assert!(file.get("discard").is_none());
        let secret = args
            .windows(2)
            .find(|w| w[0] == "-object" && w[1].starts_with("secret,"))
            .map(|w| w[1].clone())
            .expect("a secret object");
        assert_eq!(
            secret,
            "secret,id=disk0-key,file=/run/vessel/disks/vm1,,x.ceph.key,format=base64"
        );
    }

    #[test]
    fn para_command_line() {
        let mut d = MachineDef::para(
            "vm1",
            Path::new("/run/vm,1"),
            Path::new("/img/vmlinuz"),
            Some(Path::new("/img/initrd.img")),
        );
        d.disks.push(Disk {
            path: "/pool/a,b.qcow2".into(),
            format: DiskFormat::Qcow2,
            media: Media::Disk,
            read_only: false,
            nbd_export: None,
            rbd: None,
        });
        d.nics.push(Nic {
            backend: NicBackend::Tap {
                ifname: "vtap0".into(),
            },
            mac: Some("52:54:00:00:00:01".into()),
        });
        let args = strings(&qemu_args(&d, &VmPaths::new(&d.run_dir), &TAPS, None).unwrap());
        let joined = args.join(" ");
        assert!(joined.contains(
            "-sandbox on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"
        ));
        assert!(joined.contains("-machine q35,i8042=off"));
        assert!(joined.contains("-accel tcg,tb-size=128"));
        assert!(joined.contains("socket,id=qmp,path=/run/vm,,1/qmp.sock,server=on,wait=off"));
        assert!(joined.contains("name=org.vessel.agent"));
        assert!(joined.contains("console=hvc0 vessel.hostname=vm1"));
        assert!(!joined.contains("maxmem") && !joined.contains("memhp_default_state"));
        if let Profile::Para(p) = &d.profile {
            let mut p = p.clone();
            p.cmdline = "console=ttyS0 root=/dev/vda vessel.hostname=web".into();
            p.kernel_log = true;
            assert_eq!(
                kernel_cmdline(&d, &p),
                "root=/dev/vda vessel.hostname=web console=ttyS0 console=hvc0 no_timer_check"
            );
            p.cmdline = "panic=-1 no_timer_check".into();
            assert_eq!(
                kernel_cmdline(&d, &p).matches("no_timer_check").count(),
                1,
                "given once"
            );
        }
        assert!(joined.contains("tap,id=net0,fd=7,vhost=off"), "{joined}");
        assert!(joined.contains("mac=52:54:00:00:00:01"));
        let bd = args
            .iter()
            .position(|a| a == "-blockdev")
            .map(|i| &args[i + 1])
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(bd).unwrap();
        assert_eq!(v["file"]["filename"], "/pool/a,b.qcow2");
        assert!(args.iter().any(|a| a == "-S"));
        assert!(!args.iter().any(|a| a == "-daemonize" || a == "-runas"));
    }

    #[test]
    fn memory_that_grows_is_a_virtio_mem_device() {
        let mut d = MachineDef::para("vm1", Path::new("/r"), Path::new("/k"), None);
        d.memory_mib = 256;
        d.memory_max_mib = Some(1024);
        d.validate().unwrap();
        let joined =
            strings(&qemu_args(&d, &VmPaths::new(&d.run_dir), &[], None).unwrap()).join(" ");
        assert!(joined.contains("-m size=256M,maxmem=1024M"), "{joined}");
        assert!(joined.contains("-object memory-backend-ram,id=vmem-ram,size=768M,reserve=off"));
        assert!(joined.contains("-device virtio-mem-pci,id=vmem,memdev=vmem-ram,requested-size=0"));
        assert!(joined.contains("memhp_default_state=online_movable"));
        d.vcpus_max = Some(4);
        let joined =
            strings(&qemu_args(&d, &VmPaths::new(&d.run_dir), &[], None).unwrap()).join(" ");
        assert!(joined.contains("-smp cpus=1,maxcpus=4"), "{joined}");
        d.memory_max_mib = Some(255);
        assert!(d.validate().is_err());
        d.memory_max_mib = Some(1023);
        assert!(d.validate().is_err());
    }

    #[test]
    fn console_log_goes_to_the_sink_pipe() {
        let d = MachineDef::para("vm1", Path::new("/run/v"), Path::new("/k"), None);
        let paths = VmPaths::new(&d.run_dir);
        let args = strings(&qemu_args(&d, &paths, &[], Some(9)).unwrap());
        let joined = args.join(" ");
        assert!(
            joined.starts_with("-add-fd fd=9,set=1,opaque=console-log "),
            "{joined}"
        );
        assert!(
            joined.contains("logfile=/dev/fdset/1,logappend=on"),
            "{joined}"
        );
        assert!(!joined.contains("console.log"), "{joined}");
        let without = strings(&qemu_args(&d, &paths, &[], None).unwrap()).join(" ");
        assert!(without.contains("logfile=/run/v/console.log,logappend=on"));
        assert!(!without.contains("-add-fd"));
    }

    #[test]
    fn full_command_line() {
        let mut d = MachineDef::full("win", Path::new("/run/w"), Media::Cdrom);
        d.disks.push(Disk {
            path: "/pool/w.qcow2".into(),
            format: DiskFormat::Qcow2,
            media: Media::Disk,
            read_only: false,
            nbd_export: None,
            rbd: None,
        });
        d.disks.push(Disk {
            path: "/iso/setup.iso".into(),
            format: DiskFormat::Raw,
            media: Media::Cdrom,
            read_only: true,
            nbd_export: None,
            rbd: None,
        });
        d.nics.push(Nic {
            backend: NicBackend::User,
            mac: None,
        });
        let joined =
            strings(&qemu_args(&d, &VmPaths::new(&d.run_dir), &TAPS, None).unwrap()).join(" ");
        assert!(joined.contains("-bios /usr/share/seabios/bios-256k.bin"));
        assert!(joined.contains("-vnc unix:/run/w/vnc.sock"));
        assert!(joined.contains("ide-hd,drive=disk0,bus=ide.0 "));
        assert!(joined.contains("ide-cd,drive=disk1,bus=ide.1,bootindex=1"));
        assert!(joined.contains("-device e1000,netdev=net0"));
        assert!(joined.contains("-serial chardev:console"));
        assert!(!joined.contains("-kernel"));
    }
}
