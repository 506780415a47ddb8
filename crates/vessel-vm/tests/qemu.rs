//! The VM engine against real QEMU (TCG on hosts where KVM cannot run guests), as root.
//! One boot at a time; every QEMU is killed and every temporary directory removed on drop.

mod common;

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use common::{boot_lock, QemuGuard, TempDir};
use vessel_api::ExecRequest;
use vessel_vm::qmp::{EventKind, QmpEvent};
use vessel_vm::{
    adopt, agent_exec, backing_file, create_overlay, image_info, probe_accel, rebase_overlay,
    start, Accel, Disk, DiskFormat, Firmware, LogSink, MachineDef, Media, Nic, NicBackend, Profile,
    RunAs, ShutdownHow, VmError, VmExit, VmStatus,
};

/// A host uid and gid with no entry in the user database, for QEMU to run as.
const VM_ID: u32 = 3_000_000;

const BOOT_TIMEOUT: Duration = Duration::from_secs(90);

fn exec(cmd: &[&str]) -> ExecRequest {
    // Through JSON, so that fields added to the request later keep their defaults here.
    serde_json::from_value(serde_json::json!({ "command": cmd })).expect("exec request")
}

/// A QMP event sink and the receiving end of what it is given.
fn event_channel() -> (vessel_vm::qmp::EventSink, Receiver<QmpEvent>) {
    let (tx, rx) = std::sync::mpsc::channel();
    (
        Box::new(move |e| {
            let _ = tx.send(e);
        }),
        rx,
    )
}

/// Waits for an event matching `want`, skipping others.
fn wait_event(rx: &Receiver<QmpEvent>, what: &str, want: impl Fn(&EventKind) -> bool) -> QmpEvent {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(e) if want(&e.kind) => return e,
            Ok(_) => {}
            Err(e) => panic!("no {what} event: {e}"),
        }
    }
}

fn para_def(dir: &Path, kernel: &Path, initrd: &Path, name: &str) -> MachineDef {
    let mut def = MachineDef::para(name, &dir.join("run"), kernel, Some(initrd));
    def.memory_mib = 256;
    def.accel = Accel::Tcg;
    if let Profile::Para(p) = &mut def.profile {
        p.cmdline = "panic=-1 quiet".into();
        p.kernel_log = true;
    }
    def
}

/// How long an exec waits for the guest agent: a TCG guest on a loaded 2-core machine can
/// take seconds to accept the next session.
const AGENT_WAIT: Duration = Duration::from_secs(30);

#[test]
fn probe_answers_tcg_with_a_reason_and_caches_it() {
    common::require_tools();
    let _boot = boot_lock();
    let (kernel, _) = common::host_kernel();
    let tmp = TempDir::new("probe");
    let cache = tmp.path().join("accel.json");
    let t = Instant::now();
    let probe = probe_accel(&kernel, None, Duration::from_secs(5), Some(&cache)).expect("probe");
    eprintln!(
        "probe: {:?} in {:.1} s: {}",
        probe.accel,
        t.elapsed().as_secs_f64(),
        probe.reason
    );
    assert_eq!(
        probe.accel,
        Accel::Tcg,
        "this host cannot run guests under KVM: {}",
        probe.reason
    );
    assert!(!probe.reason.is_empty());
    assert!(
        t.elapsed() < Duration::from_secs(12),
        "the probe must answer within a few seconds"
    );
    assert!(!probe.cached);
    let again =
        probe_accel(&kernel, None, Duration::from_secs(5), Some(&cache)).expect("cached probe");
    assert!(again.cached && again.accel == Accel::Tcg && again.reason == probe.reason);
    let text = std::fs::read_to_string(&cache).expect("cache file");
    assert!(text.contains(&vessel_vm::kernel_version(&kernel).expect("kernel version")));
    // No QEMU of the probe is left: it was our child.
    assert!(
        own_children().is_empty(),
        "probe QEMU left running: {:?}",
        own_children()
    );
}

/// Pids of this process's live children (any thread's).
fn own_children() -> Vec<String> {
    let mut out = Vec::new();
    for task in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        if let Ok(list) = std::fs::read_to_string(task.path().join("children")) {
            out.extend(list.split_whitespace().map(String::from));
        }
    }
    out
}

/// Entry point of the helper process of `para_vm_lifecycle`: starts the VM described in
/// `VESSEL_VM_TEST_START` and exits, leaving QEMU running. A no-op in a normal test run.
#[test]
fn starter_for_adoption() {
    let Ok(def) = std::env::var("VESSEL_VM_TEST_START") else {
        return;
    };
    let def: MachineDef = serde_json::from_str(&def).expect("definition");
    let vm = start(&def, None).expect("start the VM");
    println!("STARTED {}", vm.pid);
}

#[test]
fn para_vm_lifecycle() {
    common::require_tools();
    let _boot = boot_lock();
    let (kernel, modules) = common::host_kernel();
    let tmp = TempDir::new("para");
    let initrd = tmp.path().join("initrd.img");
    common::build_initramfs(&initrd, &modules);
    let base = tmp.path().join("base.raw");
    std::fs::write(&base, vec![0u8; 8 << 20]).expect("base image");
    let overlay = tmp.path().join("disk0.qcow2");
    let info = create_overlay(&base, DiskFormat::Raw, &overlay).expect("overlay");
    assert_eq!((info.format.as_str(), info.chain_length), ("qcow2", 2));
    assert!(
        info.actual_size.unwrap_or(0) < 1 << 20,
        "an overlay is small"
    );
    // The overlay names its backing file; rebased onto a hard link of it (same content, a
    // path of its own), it names the link and still has the whole chain.
    assert_eq!(backing_file(&overlay).expect("header"), Some(base.clone()));
    let link = tmp.path().join("base-link.raw");
    std::fs::hard_link(&base, &link).expect("link");
    assert_eq!(
        vessel_vm::backing_format(&overlay).expect("header"),
        Some(DiskFormat::Raw)
    );
    rebase_overlay(&overlay, &link, DiskFormat::Raw).expect("rebase");
    assert_eq!(backing_file(&overlay).expect("header"), Some(link.clone()));
    let info = image_info(&overlay, Some(DiskFormat::Qcow2)).expect("info");
    assert_eq!(
        (info.backing_format.as_deref(), info.chain_length),
        (Some("raw"), 2)
    );
    assert!(
        backing_file(&base).is_err(),
        "a raw file has no qcow2 header"
    );

    // QEMU runs as an unprivileged uid: it reads the kernel from the test's own directory, as
    // the daemon hands a VM its image's files in its instance directory (the kernel cache
    // lies in the checkout, which may sit under a 0700 /root).
    let own_kernel = tmp.path().join("vmlinuz");
    std::fs::copy(&kernel, &own_kernel).expect("copy the kernel");
    let mut def = para_def(tmp.path(), &own_kernel, &initrd, "vm-para");
    // Numeric ids without a passwd entry: QEMU and the sink run as them.
    def.run_as = Some(RunAs::ids(VM_ID, VM_ID));
    def.cgroup = Some(format!("vessel-test-vm-{}", std::process::id()));
    def.disks.push(Disk {
        path: overlay.clone(),
        format: DiskFormat::Qcow2,
        media: Media::Disk,
        read_only: false,
        nbd_export: None,
        rbd: None,
    });
    def.nics.push(Nic {
        backend: NicBackend::User,
        mac: None,
    });
    // The console log goes through a sink QEMU writes into a pipe (here plain `cat`).
    def.console_log_sink = Some(LogSink {
        program: "/bin/sh".into(),
        args: vec!["-c".into(), "exec cat >> \"$0\"".into()],
    });
    let run = def.run_dir.clone();
    let mut guard = QemuGuard::new(&run, def.cgroup.as_deref());

    // Started by another process, which exits: QEMU must survive it.
    let t0 = Instant::now();
    let out = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "starter_for_adoption",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(
            "VESSEL_VM_TEST_START",
            serde_json::to_string(&def).expect("json"),
        )
        .output()
        .expect("run the starter");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "starter failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pid: i32 = stdout
        .lines()
        .find_map(|l| l.split("STARTED ").nth(1))
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("starter printed no pid: {stdout}"));
    guard.watch(pid);

    let (sink, events) = event_channel();
    let vm = adopt(&run.join("qemu.pid"), &run.join("qmp.sock"), Some(sink)).expect("adopt");
    assert_eq!(vm.pid, pid);
    assert!(vm.exit_fd().is_some(), "a pidfd to await the exit");
    let ready = vm
        .wait_for_console(0, "VESSEL-READY", BOOT_TIMEOUT)
        .expect("guest boots");
    eprintln!(
        "para: booted to VESSEL-READY in {:.1} s (TCG)",
        t0.elapsed().as_secs_f64()
    );
    assert!(
        ready.contains("VESSEL-READY vm-para"),
        "hostname from the command line: {ready:?}"
    );
    // QEMU runs as the VM's ids; its run directory and writable disk are that user's alone,
    // and so are the sockets QEMU made.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let uid_line = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .unwrap_or_default()
        .to_string();
    assert_eq!(
        uid_line
            .split_whitespace()
            .skip(1)
            .map(String::from)
            .collect::<Vec<_>>(),
        vec![VM_ID.to_string(); 4],
        "QEMU's uids: {uid_line}"
    );
    {
        use std::os::unix::fs::MetadataExt;
        let owner = |p: &Path| {
            let m = std::fs::symlink_metadata(p).expect("stat");
            (m.mode() & 0o777, m.uid())
        };
        assert_eq!(owner(&run), (0o700, VM_ID));
        assert_eq!(owner(&overlay), (0o600, VM_ID));
        assert_eq!(owner(&run.join("qmp.sock")).1, VM_ID);
        assert_eq!(owner(&run.join("qmp.sock")).0 & 0o077, 0, "umask 077");
    }

    // The agent: output, exit code, sequential execs, stdin, the disk.
    let agent = vm.agent_socket.clone().expect("agent socket");
    let t = Instant::now();
    let out = agent_exec(
        &agent,
        &exec(&["sh", "-c", "echo hi; echo err >&2; exit 3"]),
        Duration::from_secs(20),
    )
    .and_then(|s| s.output(b"", Duration::from_secs(30)))
    .expect("exec");
    eprintln!(
        "para: first exec through the agent in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(
        (out.stdout.as_slice(), out.stderr.as_slice(), out.exit_code),
        (&b"hi\n"[..], &b"err\n"[..], 3)
    );
    let out = agent_exec(&agent, &exec(&["cat", "/sys/block/vda/size"]), AGENT_WAIT)
        .and_then(|s| s.output(b"", Duration::from_secs(30)))
        .expect("second exec");
    assert_eq!(
        (String::from_utf8_lossy(&out.stdout).trim(), out.exit_code),
        ("16384", 0),
        "8 MiB disk"
    );
    let out = agent_exec(&agent, &exec(&["tr", "a-z", "A-Z"]), AGENT_WAIT)
        .and_then(|s| s.output(b"stdin works", Duration::from_secs(30)))
        .expect("exec with stdin");
    assert_eq!(out.stdout, b"STDIN WORKS");
    let err = agent_exec(&agent, &exec(&["/no/such/program"]), AGENT_WAIT)
        .and_then(|s| s.output(b"", Duration::from_secs(30)))
        .expect_err("a missing program");
    assert!(err.to_string().contains("not found"), "{err}");

    // Pause and resume through QMP.
    assert_eq!(vm.status().expect("status"), VmStatus::Running);
    vm.pause().expect("pause");
    assert_eq!(vm.status().expect("status"), VmStatus::Paused);
    wait_event(&events, "STOP", |k| *k == EventKind::Stop);
    vm.resume().expect("resume");
    assert_eq!(vm.status().expect("status"), VmStatus::Running);
    wait_event(&events, "RESUME", |k| *k == EventKind::Resume);

    // The cgroup holds QEMU and the log sink (found again through vm.json), and limits
    // their memory.
    let cg = vm.cgroup().expect("cgroup");
    let sink = vm.record.log_sink.expect("the log sink is recorded");
    assert!(
        cg.pids().expect("cgroup pids").contains(&pid),
        "QEMU is in its cgroup"
    );
    assert!(
        cg.pids().expect("cgroup pids").contains(&sink.pid),
        "the log sink is in the cgroup"
    );
    {
        use std::os::unix::fs::MetadataExt;
        let sink_uid = std::fs::metadata(format!("/proc/{}", sink.pid)).map(|m| m.uid());
        assert_eq!(
            sink_uid.ok(),
            Some(VM_ID),
            "the log sink runs as the VM's user"
        );
    }
    let limit = read_memory_limit(cg.path());
    assert_eq!(limit, Some(vessel_vm::memory_limit(&def)), "memory limit");
    let stats = vm.cgroup_stats().expect("stats").expect("some stats");
    eprintln!(
        "para: QEMU uses {} MiB (limit {} MiB)",
        stats.memory_usage_bytes >> 20,
        vessel_vm::memory_limit(&def) >> 20
    );

    // Reset: the guest boots again.
    let from = vm.console_offset();
    let t = Instant::now();
    vm.reset().expect("reset");
    wait_event(&events, "RESET", |k| matches!(k, EventKind::Reset { .. }));
    vm.wait_for_console(from, "VESSEL-READY", BOOT_TIMEOUT)
        .expect("guest boots after reset");
    eprintln!(
        "para: rebooted after reset in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    // Graceful shutdown: ACPI power button → acpid → poweroff.
    let outcome = vm.shutdown(Duration::from_secs(30)).expect("shutdown");
    eprintln!(
        "para: graceful shutdown in {:.1} s",
        outcome.took.as_secs_f64()
    );
    assert_eq!(outcome.how, ShutdownHow::Graceful);
    wait_event(&events, "POWERDOWN", |k| *k == EventKind::Powerdown);
    wait_event(&events, "SHUTDOWN", |k| {
        matches!(k, EventKind::Shutdown { guest: true, .. })
    });
    assert!(!vm.is_alive());
    assert_eq!(vm.status().expect("status"), VmStatus::Stopped);
    assert_eq!(
        vm.exit_reason(),
        Some(VmExit::Stopped(ShutdownHow::Graceful))
    );
    assert_ne!(
        vessel_vm::host::start_time(sink.pid),
        Some(sink.start_time),
        "the log sink ended with QEMU"
    );
    assert!(!cg.exists(), "the cgroup is removed");
    for f in [
        "qmp.sock",
        "agent.sock",
        "console.sock",
        "qemu.pid",
        "vm.json",
    ] {
        assert!(!run.join(f).exists(), "{f} is removed after shutdown");
    }
    assert!(run.join("console.log").exists(), "the console log stays");
}

/// The memory limit of a cgroup, v1 or v2.
fn read_memory_limit(path: &str) -> Option<u64> {
    let path = path.trim_start_matches('/');
    for f in [
        format!("/sys/fs/cgroup/memory/{path}/memory.limit_in_bytes"),
        format!("/sys/fs/cgroup/{path}/memory.max"),
    ] {
        if let Ok(s) = std::fs::read_to_string(&f) {
            return s.trim().parse().ok();
        }
    }
    None
}

fn read_rfb(vnc: &Path) -> String {
    let mut s = UnixStream::connect(vnc).expect("connect VNC socket");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).expect("RFB version");
    String::from_utf8_lossy(&buf).into_owned()
}

fn full_boot(tmp: &TempDir, name: &str, disk: Disk, boot_from: Media, msg: &str) {
    let mut def = MachineDef::full(name, &tmp.path().join("run"), boot_from);
    def.memory_mib = 128;
    def.disks.push(disk);
    def.nics.push(Nic {
        backend: NicBackend::User,
        mac: None,
    });
    let mut guard = QemuGuard::new(&def.run_dir, None);
    let t = Instant::now();
    let vm = start(&def, None).expect("start");
    guard.watch(vm.pid);
    let line = vm
        .wait_for_console(0, msg, Duration::from_secs(60))
        .expect("boot message on serial");
    eprintln!(
        "full: {name} printed {:?} {:.1} s after start (SeaBIOS, TCG)",
        line.trim(),
        t.elapsed().as_secs_f64()
    );
    let vnc = vm.vnc_socket.clone().expect("vnc socket");
    assert_eq!(read_rfb(&vnc), "RFB 003.008\n");
    let info = vm.qmp().query_vnc().expect("query-vnc");
    assert!(
        info.enabled && info.family.as_deref() == Some("unix"),
        "{info:?}"
    );
    assert_eq!(vm.status().expect("status"), VmStatus::Running);
    // The boot sector halts with interrupts off: ACPI is ignored, so QEMU is told to quit.
    let outcome = vm.shutdown(Duration::from_secs(1)).expect("shutdown");
    assert_eq!(outcome.how, ShutdownHow::Quit);
    assert!(!vm.is_alive());
}

#[test]
fn full_boots_a_disk_with_seabios_and_serves_vnc() {
    common::require_tools();
    common::require(vessel_vm::host::SEABIOS, "seabios");
    let _boot = boot_lock();
    let tmp = TempDir::new("full");
    let raw = tmp.path().join("boot.raw");
    let mut image = common::boot_sector("VESSEL-BOOT-OK\r\n");
    image.resize(1 << 20, 0);
    std::fs::write(&raw, image).expect("write disk");
    let overlay = tmp.path().join("boot.qcow2");
    create_overlay(&raw, DiskFormat::Raw, &overlay).expect("overlay");
    let disk = Disk {
        path: overlay,
        format: DiskFormat::Qcow2,
        media: Media::Disk,
        read_only: false,
        nbd_export: None,
        rbd: None,
    };
    full_boot(&tmp, "vm-full", disk, Media::Disk, "VESSEL-BOOT-OK");
}

#[test]
fn full_boots_an_iso_from_cdrom() {
    common::require_tools();
    common::require(vessel_vm::host::SEABIOS, "seabios");
    let _boot = boot_lock();
    let tmp = TempDir::new("iso");
    let iso = tmp.path().join("boot.iso");
    std::fs::write(&iso, common::boot_iso("VESSEL-CDROM-OK\r\n")).expect("write iso");
    let disk = Disk {
        path: iso,
        format: DiskFormat::Raw,
        media: Media::Cdrom,
        read_only: true,
        nbd_export: None,
        rbd: None,
    };
    full_boot(&tmp, "vm-iso", disk, Media::Cdrom, "VESSEL-CDROM-OK");
}

/// Every bad input fails with a clear message before or while QEMU starts, and leaves no
/// run directory, file or process behind.
#[test]
fn bad_input_is_refused_and_leaves_nothing() {
    common::require_tools();
    let _boot = boot_lock();
    let (kernel, _) = common::host_kernel();
    let tmp = TempDir::new("bad");
    let initrd = tmp.path().join("initrd.img");
    std::fs::write(&initrd, b"not really an initrd").expect("initrd");
    let run = tmp.path().join("run");
    let nothing_left = |what: &str| assert!(!run.exists(), "{what}: run directory left behind");
    let name = format!("vm-bad-{}", std::process::id());

    let mut def = para_def(tmp.path(), &kernel, &initrd, &name);
    def.memory_mib = 1 << 20; // 1 TiB
    let err = start(&def, None).expect_err("too much memory");
    assert!(matches!(err, VmError::NotEnoughMemory { .. }), "{err}");
    assert!(err.to_string().contains("MemAvailable"), "{err}");
    nothing_left("memory");

    let def = para_def(
        tmp.path(),
        Path::new("/boot/no-such-vmlinuz"),
        &initrd,
        &name,
    );
    let err = start(&def, None).expect_err("missing kernel");
    assert!(
        err.to_string()
            .contains("kernel /boot/no-such-vmlinuz cannot be used"),
        "{err}"
    );
    nothing_left("kernel");

    // A qcow2 image with a damaged header.
    let good = tmp.path().join("good.qcow2");
    let st = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&good)
        .arg("16M")
        .status()
        .expect("qemu-img");
    assert!(st.success());
    let bad = tmp.path().join("bad.qcow2");
    let mut bytes = std::fs::read(&good).expect("read");
    bytes[4..8].copy_from_slice(&99u32.to_be_bytes()); // version 99
    std::fs::write(&bad, &bytes).expect("write");
    let mut def = para_def(tmp.path(), &kernel, &initrd, &name);
    def.disks.push(Disk {
        path: bad.clone(),
        format: DiskFormat::Qcow2,
        media: Media::Disk,
        read_only: false,
        nbd_export: None,
        rbd: None,
    });
    let err = start(&def, None).expect_err("corrupted disk");
    assert!(matches!(err, VmError::BadImage { .. }), "{err}");
    eprintln!("corrupted image: {err}");
    nothing_left("disk");
    // Truncated L1 table: the header is fine, the metadata is not.
    let truncated = tmp.path().join("truncated.qcow2");
    let mut bytes = std::fs::read(&good).expect("read");
    bytes[40..48].copy_from_slice(&(1u64 << 40).to_be_bytes()); // l1_table_offset far away
    std::fs::write(&truncated, &bytes).expect("write");
    let overlay = tmp.path().join("over.qcow2");
    let err = create_overlay(&truncated, DiskFormat::Qcow2, &overlay)
        .expect_err("overlay over a broken image");
    eprintln!("broken backing: {err}");
    assert!(!overlay.exists(), "no overlay left behind");
    // A raw file given as qcow2.
    let raw = tmp.path().join("plain.raw");
    std::fs::write(&raw, vec![0u8; 1 << 20]).expect("raw");
    let err = vessel_vm::image_info(&raw, Some(DiskFormat::Qcow2)).expect_err("raw as qcow2");
    assert!(matches!(err, VmError::BadImage { .. }), "{err}");

    // QEMU itself refuses (the kernel is unreadable for the user it runs as): its message is
    // reported, QEMU is gone and the run directory removed.
    let private = tmp.path().join("private");
    std::fs::create_dir(&private).expect("mkdir");
    std::fs::copy(&kernel, private.join("vmlinuz")).expect("copy kernel");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    }
    let mut def = para_def(tmp.path(), &private.join("vmlinuz"), &initrd, &name);
    def.run_as = Some(RunAs::lookup("nobody").expect("the user nobody"));
    let _guard = QemuGuard::new(&run, None);
    let err = start(&def, None).expect_err("QEMU cannot read the kernel");
    eprintln!("QEMU refused: {err}");
    assert!(matches!(err, VmError::StartFailed(_)), "{err}");
    assert!(
        err.to_string().contains("vmlinuz"),
        "QEMU's own message: {err}"
    );
    nothing_left("QEMU failure");
    let left = Command::new("pgrep")
        .args(["-f", "guest=vm-bad"])
        .output()
        .expect("pgrep");
    assert!(left.stdout.is_empty(), "QEMU left running");
}

#[test]
fn uefi_firmware_starts() {
    common::require_tools();
    common::require(vessel_vm::host::OVMF_CODE, "ovmf");
    let _boot = boot_lock();
    let tmp = TempDir::new("uefi");
    let iso = tmp.path().join("boot.iso");
    std::fs::write(&iso, common::boot_iso("unused\r\n")).expect("iso");
    let mut def = MachineDef::full("vm-uefi", &tmp.path().join("run"), Media::Cdrom);
    if let Profile::Full(f) = &mut def.profile {
        f.firmware = Firmware::Uefi;
    }
    def.memory_mib = 256;
    def.disks.push(Disk {
        path: iso,
        format: DiskFormat::Raw,
        media: Media::Cdrom,
        read_only: true,
        nbd_export: None,
        rbd: None,
    });
    let mut guard = QemuGuard::new(&def.run_dir, None);
    let t = Instant::now();
    let vm = start(&def, None).expect("start");
    guard.watch(vm.pid);
    // OVMF mirrors its console on the serial port; its boot manager names what it tries.
    let line = vm
        .wait_for_console(0, "BdsDxe", Duration::from_secs(90))
        .expect("OVMF output");
    eprintln!(
        "uefi: OVMF reached its boot manager in {:.1} s: {:?}",
        t.elapsed().as_secs_f64(),
        line.rfind("BdsDxe").map_or("", |i| line[i..].trim())
    );
    assert!(PathBuf::from(&def.run_dir).join("uefi-vars.fd").exists());
    vm.kill().expect("kill");
    assert!(!vm.is_alive());
}

/// A guest built by `vessel-vmimage` (its init, not the test one): ready line, host name
/// from the command line, the agent started by the init, ACPI power-off.
#[test]
fn vmimage_guest_runs_the_agent_and_powers_off() {
    common::require_tools();
    let _boot = boot_lock();
    let (kernel, modules) = common::host_kernel();
    let tmp = TempDir::new("vmimage");
    let mut spec = vessel_vmimage::VmImageSpec::new(
        vessel_vmimage::KernelSource::Local {
            vmlinuz: kernel.clone(),
            modules_dir: modules,
        },
        vessel_vmimage::VmImageKind::Initramfs,
    );
    spec.agent = Some(common::static_agent());
    let image =
        vessel_vmimage::build_vm_image(&spec, &tmp.path().join("image")).expect("build image");
    let m = &image.manifest;
    let mut def = para_def(
        tmp.path(),
        &image.dir.join(&m.kernel),
        &image.dir.join(&m.initrd),
        "img-guest",
    );
    if let Profile::Para(p) = &mut def.profile {
        p.cmdline = m.cmdline.clone();
    }
    let mut guard = QemuGuard::new(&def.run_dir, None);
    let t = Instant::now();
    let vm = start(&def, None).expect("start");
    guard.watch(vm.pid);
    vm.wait_for_console(0, "VESSEL-READY", BOOT_TIMEOUT)
        .expect("image boots");
    eprintln!(
        "vmimage: booted to VESSEL-READY in {:.1} s (TCG)",
        t.elapsed().as_secs_f64()
    );
    let agent = vm.agent_socket.clone().expect("agent socket");
    let out = agent_exec(&agent, &exec(&["hostname"]), Duration::from_secs(20))
        .and_then(|s| s.output(b"", Duration::from_secs(30)))
        .expect("exec through the image's agent");
    assert_eq!(
        (String::from_utf8_lossy(&out.stdout).trim(), out.exit_code),
        ("img-guest", 0)
    );
    let outcome = vm.shutdown(Duration::from_secs(30)).expect("shutdown");
    eprintln!(
        "vmimage: graceful shutdown in {:.2} s",
        outcome.took.as_secs_f64()
    );
    assert_eq!(outcome.how, ShutdownHow::Graceful);
}

/// A shutdown asked for while the guest boots: the first press of the power button comes
/// before the guest handles ACPI and is lost; the press repeated while the shutdown waits
/// powers the guest off gracefully instead of leaving it to be quit at the end of the wait.
#[test]
fn a_power_button_pressed_while_the_guest_boots_is_pressed_again() {
    common::require_tools();
    let _boot = boot_lock();
    let (kernel, modules) = common::host_kernel();
    let tmp = TempDir::new("early-stop");
    let initrd = tmp.path().join("initrd.img");
    common::build_initramfs(&initrd, &modules);
    let def = para_def(tmp.path(), &kernel, &initrd, "vm-early-stop");
    let (sink, events) = event_channel();
    let mut guard = QemuGuard::new(&def.run_dir, None);
    let vm = start(&def, Some(sink)).expect("start");
    guard.watch(vm.pid);
    // At once: under TCG the guest takes seconds to reach its init (3 s here when idle).
    let outcome = vm.shutdown(Duration::from_secs(60)).expect("shutdown");
    let console = std::fs::read_to_string(&vm.console_log).unwrap_or_default();
    let presses = events
        .try_iter()
        .filter(|e| e.kind == EventKind::Powerdown)
        .count();
    eprintln!(
        "early stop: {:?} in {:.1} s after {presses} presses",
        outcome.how,
        outcome.took.as_secs_f64()
    );
    // (A press handled between acpid's start and VESSEL-READY powers it off before that.)
    assert!(
        console.contains("VESSEL-ACPI"),
        "the guest booted before it powered off: {console}"
    );
    assert_eq!(outcome.how, ShutdownHow::Graceful, "console: {console}");
    assert!(
        presses >= 2,
        "the first press came before the guest could handle it ({presses} presses)"
    );
}
