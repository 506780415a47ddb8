//! Builds images with the real Debian cloud kernel and boots them under QEMU (TCG): the
//! initramfs on a serial console, with a virtio NIC (DHCP from QEMU's user network), the
//! agent hook on a virtio-serial port with the console on hvc0 and an ACPI power-off, and a
//! qcow2 disk the initramfs switches into.

mod support;

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use support::{
    kernel_cache, report, require, ConsoleDevice, Qemu, TempDir, BOOT_TIMEOUT, COMMAND_TIMEOUT,
};
use vessel_vmimage::guest::{
    AGENT_LINE_PREFIX, AGENT_PORT_NAME, NET_LINE_PREFIX, READY_LINE, ROOT_LINE_PREFIX,
    SHUTDOWN_LINE_PREFIX,
};
use vessel_vmimage::{
    build_vm_image, busybox_rootfs, DiskFormat, GuestConsole, ImageKindName, KernelSource, VmImage,
    VmImageKind, VmImageSpec,
};

/// An agent for the hook test: says hello through its port, then stays up.
const TEST_AGENT: &str = "#!/bin/sh\n\
echo \"VESSEL-AGENT-HELLO $(hostname) $VESSEL_AGENT_PORT\" >\"$1\"\n\
exec sleep 100000\n";

fn kernel_source() -> KernelSource {
    require("apt-get", "apt");
    require("dpkg-deb", "dpkg");
    require("depmod", "kmod");
    KernelSource::DebianCloud {
        cache_dir: kernel_cache(),
    }
}

/// The initramfs image (with the test agent installed) and its directory.
struct SharedImage {
    image: VmImage,
    _dir: TempDir,
}

/// The initramfs image shared by the tests that run at the same time; the last one to let
/// go of it removes it (a static would never be dropped, leaving the directory behind).
fn initramfs_image() -> Arc<SharedImage> {
    static IMAGE: Mutex<Weak<SharedImage>> = Mutex::new(Weak::new());
    let mut slot = IMAGE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(shared) = slot.upgrade() {
        return shared;
    }
    let dir = TempDir::new("initramfs");
    let agent = dir.path().join("agent.sh");
    fs::write(&agent, TEST_AGENT).expect("write test agent");
    let mut spec = VmImageSpec::new(kernel_source(), VmImageKind::Initramfs);
    spec.agent = Some(agent);
    let started = Instant::now();
    let image = build_vm_image(&spec, &dir.path().join("image")).expect("build initramfs image");
    report(&format!(
        "vmimage: initramfs image built in {:?} ({})",
        started.elapsed(),
        image.fingerprint
    ));
    let shared = Arc::new(SharedImage { image, _dir: dir });
    *slot = Arc::downgrade(&shared);
    shared
}

fn boot_report(qemu: &Qemu, ready_after: Duration) {
    report(&format!(
        "vmimage: boot {}: {READY_LINE} after {ready_after:.1?}, powered off after {:.1?}",
        qemu.name,
        qemu.elapsed()
    ));
}

#[test]
fn initramfs_boots_on_serial_console_and_powers_off() {
    let shared = initramfs_image();
    let image = &shared.image;
    let run = TempDir::new("serial");
    let cmdline = format!("{} vessel.hostname=t1", image.manifest.cmdline);
    // A NIC on an empty hub: a network without a DHCP server must not hold the boot up.
    let extra = [
        "-netdev",
        "hubport,id=net0,hubid=0",
        "-device",
        "virtio-net-pci,netdev=net0",
    ]
    .map(String::from);
    let (mut qemu, mut console) = Qemu::start(
        "serial",
        run.path(),
        &image.kernel_path(),
        &image.initrd_path(),
        &cmdline,
        ConsoleDevice::Serial,
        &extra,
    );
    console.wait_for("Run /init as init process", BOOT_TIMEOUT);
    let init_started = Instant::now();
    console.wait_for(READY_LINE, BOOT_TIMEOUT);
    let ready_after = qemu.elapsed();
    let init_took = init_started.elapsed();
    report(&format!(
        "vmimage: boot serial: init to {READY_LINE} took {init_took:.1?} without a DHCP server"
    ));
    assert!(
        init_took < Duration::from_secs(30),
        "DHCP held the boot up for {init_took:?}"
    );
    let transcript = console.transcript();
    assert!(
        !transcript.contains(NET_LINE_PREFIX),
        "no DHCP server, so no address"
    );
    // The agent is installed but there is no port: the hook says so and boot goes on.
    assert!(
        transcript.contains(&format!("{AGENT_LINE_PREFIX}no-port {AGENT_PORT_NAME}")),
        "{transcript}"
    );

    console.send_line("echo H=$(hostname) K=$(uname -r) A=$((6*7))");
    let line = console.wait_for("A=42", COMMAND_TIMEOUT);
    assert_eq!(
        line.trim(),
        format!("H=t1 K={} A=42", image.manifest.kernel_version)
    );
    console.send_line("poweroff -f");
    let status = qemu.wait_exit(COMMAND_TIMEOUT);
    assert!(status.success(), "qemu exited with {status}");
    boot_report(&qemu, ready_after);
}

#[test]
fn initramfs_gets_dhcp_on_virtio_net_and_starts_the_agent_on_hvc0() {
    let shared = initramfs_image();
    let image = &shared.image;
    let run = TempDir::new("net-agent");
    let agent_socket = run.path().join("agent.sock");
    let extra: Vec<String> = [
        "-netdev",
        "user,id=net0",
        "-device",
        "virtio-net-pci,netdev=net0",
        "-chardev",
        &format!(
            "socket,id=agent0,path={},server=on,wait=off",
            agent_socket.display()
        ),
        "-device",
        &format!("virtserialport,chardev=agent0,bus=vser0.0,name={AGENT_PORT_NAME}"),
    ]
    .map(String::from)
    .to_vec();
    // Both consoles: the kernel logs to ttyS0 too, and the init must pick the last one.
    let cmdline = format!("{} console=hvc0 vessel.hostname=t2", image.manifest.cmdline);
    let (mut qemu, mut console) = Qemu::start(
        "net",
        run.path(),
        &image.kernel_path(),
        &image.initrd_path(),
        &cmdline,
        ConsoleDevice::Virtio,
        &extra,
    );
    let agent = qemu.connect(&agent_socket);

    let net = console.wait_for_message(NET_LINE_PREFIX, BOOT_TIMEOUT);
    assert_eq!(
        net.trim(),
        "VESSEL-NET eth0 10.0.2.15/24",
        "QEMU's user network leases 10.0.2.15"
    );
    let started = console.wait_for_message(AGENT_LINE_PREFIX, BOOT_TIMEOUT);
    assert_eq!(
        started.trim(),
        format!("VESSEL-AGENT started /dev/virtio-ports/{AGENT_PORT_NAME}")
    );
    console.wait_for(READY_LINE, BOOT_TIMEOUT);
    let ready_after = qemu.elapsed();

    agent
        .set_read_timeout(Some(COMMAND_TIMEOUT))
        .expect("agent timeout");
    let mut hello = String::new();
    BufReader::new(&agent)
        .read_line(&mut hello)
        .expect("read the agent's hello");
    assert_eq!(
        hello.trim(),
        format!("VESSEL-AGENT-HELLO t2 /dev/virtio-ports/{AGENT_PORT_NAME}")
    );

    console.send_line("echo TTY=$(tty) GW=$(ip route | awk '/^default/ {print $3}') DNS=$(awk '{print $2}' /etc/resolv.conf) HOST=$(hostname)");
    let line = console.wait_for("HOST=t2", COMMAND_TIMEOUT);
    assert_eq!(
        line.trim(),
        "TTY=/dev/hvc0 GW=10.0.2.2 DNS=10.0.2.3 HOST=t2"
    );

    // A clean stop from the host: the ACPI power button, handled by the init.
    let reply = qemu.qmp("system_powerdown");
    assert!(reply.contains("\"return\""), "system_powerdown: {reply}");
    console.wait_for(&format!("{SHUTDOWN_LINE_PREFIX}poweroff"), COMMAND_TIMEOUT);
    let status = qemu.wait_exit(COMMAND_TIMEOUT);
    assert!(status.success(), "qemu exited with {status}");
    boot_report(&qemu, ready_after);
}

#[test]
fn disk_image_switches_root_to_the_qcow2_disk() {
    require("mkfs.ext4", "e2fsprogs");
    require("qemu-img", "qemu-utils");
    let work = TempDir::new("disk");
    let rootfs = work.path().join("rootfs");
    busybox_rootfs(&rootfs, Path::new(vessel_vmimage::DEFAULT_BUSYBOX)).expect("busybox root tree");
    fs::write(rootfs.join("etc/disk-marker"), "only-on-the-disk\n").expect("write marker");
    fs::set_permissions(
        rootfs.join("etc/disk-marker"),
        fs::Permissions::from_mode(0o644),
    )
    .expect("chmod marker");

    let kind = VmImageKind::Disk {
        rootfs_dir: rootfs,
        size: 64 << 20,
        format: DiskFormat::Qcow2,
    };
    let started = Instant::now();
    let image = build_vm_image(
        &VmImageSpec::new(kernel_source(), kind),
        &work.path().join("image"),
    )
    .expect("build disk image");
    report(&format!(
        "vmimage: disk image built in {:?} ({})",
        started.elapsed(),
        image.fingerprint
    ));
    assert_eq!(image.manifest.kind, ImageKindName::Disk);
    assert_eq!(image.manifest.disk.as_deref(), Some("disk.qcow2"));
    let disk = image.disk_path().expect("disk path");
    let reopened = VmImage::open(&image.dir).expect("reopen the image");
    assert_eq!(reopened.fingerprint, image.fingerprint);
    reopened.verify().expect("digests match");

    let cmdline = image
        .manifest
        .cmdline_for("t3", GuestConsole::Serial)
        .expect("host name");
    let extra = [
        "-drive".to_string(),
        format!("file={},if=virtio,format=qcow2", disk.display()),
    ];
    let (mut qemu, mut console) = Qemu::start(
        "disk",
        work.path(),
        &image.kernel_path(),
        &image.initrd_path(),
        &cmdline,
        ConsoleDevice::Serial,
        &extra,
    );
    let root = console.wait_for_message(ROOT_LINE_PREFIX, BOOT_TIMEOUT);
    assert_eq!(root.trim(), "VESSEL-ROOT /dev/vda");
    console.wait_for(READY_LINE, BOOT_TIMEOUT);
    let ready_after = qemu.elapsed();

    console.send_line("echo M=$(cat /etc/disk-marker) R=$(awk '$2 == \"/\" {print $1 \"-\" $3}' /proc/mounts) I=$(test -e /usr/lib/vessel/initramfs && echo yes || echo no) H=$(hostname)");
    let line = console.wait_for("H=t3", COMMAND_TIMEOUT);
    assert_eq!(line.trim(), "M=only-on-the-disk R=/dev/vda-ext4 I=no H=t3");
    // busybox poweroff signals PID 1, which stops everything and remounts / read-only first.
    console.send_line("echo kept-across-boots >/root/note; poweroff");
    console.wait_for(&format!("{SHUTDOWN_LINE_PREFIX}poweroff"), COMMAND_TIMEOUT);
    let status = qemu.wait_exit(COMMAND_TIMEOUT);
    assert!(status.success(), "qemu exited with {status}");
    boot_report(&qemu, ready_after);
    drop(qemu);

    // Second boot of the same disk: the write survived and the file system was clean.
    let (mut qemu, mut console) = Qemu::start(
        "disk-again",
        work.path(),
        &image.kernel_path(),
        &image.initrd_path(),
        &cmdline,
        ConsoleDevice::Serial,
        &extra,
    );
    console.wait_for(READY_LINE, BOOT_TIMEOUT);
    let ready_after = qemu.elapsed();
    console.send_line("echo NOTE=$(cat /root/note)");
    let line = console.wait_for("NOTE=kept", COMMAND_TIMEOUT);
    assert_eq!(line.trim(), "NOTE=kept-across-boots");
    let transcript = console.transcript();
    assert!(
        !transcript.contains("recovery complete"),
        "the disk was not unmounted cleanly:\n{transcript}"
    );
    console.send_line("poweroff -f");
    let status = qemu.wait_exit(COMMAND_TIMEOUT);
    assert!(status.success(), "qemu exited with {status}");
    boot_report(&qemu, ready_after);
}

#[test]
fn builds_are_deterministic() {
    let shared = initramfs_image();
    let first = &shared.image;
    let dir = TempDir::new("again");
    let mut spec = VmImageSpec::new(kernel_source(), VmImageKind::Initramfs);
    spec.agent = Some(first.dir.parent().expect("image parent").join("agent.sh"));
    let second = build_vm_image(&spec, &dir.path().join("image")).expect("build again");
    assert_eq!(first.fingerprint, second.fingerprint);
    assert_eq!(
        fs::read(first.initrd_path()).expect("initrd"),
        fs::read(second.initrd_path()).expect("initrd")
    );
}
