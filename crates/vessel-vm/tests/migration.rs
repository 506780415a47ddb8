//! Live migration between two real QEMU processes on this host (TCG): the target started
//! with `-incoming defer`, a writable qcow2 overlay mirrored into the target's own overlay
//! of the same base, memory over multifd. A loop inside the guest counts on across the
//! switchover, what the guest wrote to its disk before and during the mirror is on the
//! target's disk, and a failed migration leaves the source running.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{boot_lock, QemuGuard, TempDir};
use vessel_api::ExecRequest;
use vessel_vm::{
    agent_exec, create_overlay, start, Accel, Disk, DiskFormat, MachineDef, Media, MigrationLinks,
    MigrationParams, MigrationPhase, Profile, RunningVm, VmStatus,
};

const BOOT_TIMEOUT: Duration = Duration::from_secs(90);

fn sh(vm: &RunningVm, script: &str) -> (i32, String) {
    let req: ExecRequest =
        serde_json::from_value(serde_json::json!({ "command": ["sh", "-c", script] }))
            .expect("exec request");
    let agent = vm.agent_socket.clone().expect("agent socket");
    // Right after the migration too: the agent client connects again while the guest does
    // not hear it (docs/vm.md, "The guest agent"), so one exec is enough.
    let out = agent_exec(&agent, &req, Duration::from_secs(30))
        .and_then(|s| s.output(b"", Duration::from_secs(30)))
        .expect("exec through the agent");
    (
        out.exit_code,
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    )
}

fn count(vm: &RunningVm) -> u64 {
    let (code, out) = sh(vm, "cat /tmp/count");
    assert_eq!(code, 0, "{out}");
    out.parse().unwrap_or_else(|_| panic!("count {out:?}"))
}

/// Waits up to 20 s (TCG under load) for the guest's counter to pass `x`, and returns it.
fn count_past(vm: &RunningVm, x: u64, what: &str) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        // (No file yet right after the loop's start: 0.)
        let now = sh(vm, "cat /tmp/count 2>/dev/null || echo 0").1;
        let now: u64 = now.parse().unwrap_or_else(|_| panic!("count {now:?}"));
        if now > x {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: the counter stays at {now}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn def_for(tmp: &Path, run: &str, image: &vessel_vmimage::VmImage, disk: &Path) -> MachineDef {
    let m = &image.manifest;
    let mut def = MachineDef::para(
        "mig",
        &tmp.join(run),
        &image.dir.join(&m.kernel),
        Some(&image.dir.join(&m.initrd)),
    );
    def.memory_mib = 256;
    def.accel = Accel::Tcg;
    if let Profile::Para(p) = &mut def.profile {
        p.cmdline = m.cmdline.clone();
    }
    def.disks.push(Disk {
        path: disk.to_path_buf(),
        format: DiskFormat::Qcow2,
        media: Media::Disk,
        read_only: false,
        nbd_export: None,
        rbd: None,
    });
    def
}

#[test]
fn a_running_guest_moves_to_another_qemu_with_its_disk() {
    common::require_tools();
    let _boot = boot_lock();
    let (kernel, modules) = common::host_kernel();
    let tmp = TempDir::new("migrate");
    let mut spec = vessel_vmimage::VmImageSpec::new(
        vessel_vmimage::KernelSource::Local {
            vmlinuz: kernel,
            modules_dir: modules,
        },
        vessel_vmimage::VmImageKind::Initramfs,
    );
    spec.agent = Some(common::static_agent());
    let image =
        vessel_vmimage::build_vm_image(&spec, &tmp.path().join("image")).expect("build image");
    // One base, an overlay for each side: the target's starts empty.
    let base = tmp.path().join("base.raw");
    let mut data = vec![0u8; 32 << 20];
    data[..10].copy_from_slice(b"BASE-IMAGE");
    std::fs::write(&base, &data).unwrap();
    let (src_disk, dst_disk) = (tmp.path().join("src.qcow2"), tmp.path().join("dst.qcow2"));
    create_overlay(&base, DiskFormat::Raw, &src_disk).unwrap();
    create_overlay(&base, DiskFormat::Raw, &dst_disk).unwrap();

    let src_def = def_for(tmp.path(), "src", &image, &src_disk);
    let mut src_guard = QemuGuard::new(&src_def.run_dir, None);
    let src = start(&src_def, None).expect("source starts");
    src_guard.watch(src.pid);
    src.wait_for_console(0, "VESSEL-READY", BOOT_TIMEOUT)
        .expect("source boots");
    // A counter ten times a second, and data on the disk (one write before the mirror
    // starts; a loop keeps writing during it).
    let (code, out) = sh(
        &src,
        "setsid sh -c 'i=0; while :; do i=$((i+1)); echo $i > /tmp/count.new; mv /tmp/count.new /tmp/count; \
         echo disk-$i | dd of=/dev/vda bs=512 seek=2048 conv=notrunc,fsync 2>/dev/null; \
         sleep 0.1; done' </dev/null >/dev/null 2>&1 & \
         echo MIGRATE-ME | dd of=/dev/vda bs=512 seek=4096 conv=notrunc,fsync 2>&1",
    );
    assert_eq!(code, 0, "{out}");
    let before = count_past(&src, 0, "the counter starts");

    // A target that refuses (no QEMU listening) fails the migration; the source runs on.
    let params = MigrationParams {
        timeout: Duration::from_secs(20),
        ..MigrationParams::default()
    };
    let nowhere = MigrationLinks {
        state: tmp.path().join("none-state.sock"),
        disks: tmp.path().join("none-disks.sock"),
    };
    let err = src
        .migrate_to(&nowhere, &params, &mut |_| {})
        .expect_err("no target");
    eprintln!("migration to nowhere: {err}");
    assert_eq!(src.status().unwrap(), VmStatus::Running);
    let after_failure = count(&src);
    count_past(&src, after_failure, "the source counts on");

    let mut dst_def = def_for(tmp.path(), "dst", &image, &dst_disk);
    dst_def.incoming = true;
    let mut dst_guard = QemuGuard::new(&dst_def.run_dir, None);
    let dst = start(&dst_def, None).expect("target starts");
    dst_guard.watch(dst.pid);
    let links = MigrationLinks {
        state: dst_def.run_dir.join("mig-state.sock"),
        disks: dst_def.run_dir.join("mig-disks.sock"),
    };
    dst.accept_migration(&links, &params)
        .expect("target listens");
    let t = Instant::now();
    let mut phases = Vec::new();
    let stats = src
        .migrate_to(&links, &params, &mut |p| {
            let name = match p {
                MigrationPhase::Disks { .. } => "disks",
                MigrationPhase::Memory { .. } => "memory",
                MigrationPhase::Switchover => "switchover",
            };
            if phases.last() != Some(&name) {
                phases.push(name);
            }
        })
        .expect("migrates");
    let switched = Instant::now();
    dst.finish_incoming(Duration::from_secs(30))
        .expect("target runs");
    eprintln!(
        "migrated in {:.2} s: {stats:?}; target running {} ms after the source finished; phases {phases:?}",
        t.elapsed().as_secs_f64(),
        switched.elapsed().as_millis()
    );
    assert_eq!(phases, ["disks", "memory", "switchover"]);
    assert!(stats.memory_bytes > 0 && stats.disk_bytes > 0, "{stats:?}");
    assert_eq!(dst.status().unwrap(), VmStatus::Running);
    assert!(matches!(
        src.status().unwrap(),
        VmStatus::Other(vessel_vm::qmp::RunState::Postmigrate)
    ));
    src.kill().unwrap();

    // The guest goes on where it was: the counter continues (no reboot), the disk holds
    // what it wrote before and during the mirror, and it keeps writing.
    let moved = count(&dst);
    assert!(moved >= before, "{moved} < {before}");
    count_past(&dst, moved, "the moved guest counts on");
    let (_, disk) = sh(
        &dst,
        "dd if=/dev/vda bs=512 skip=4096 count=1 2>/dev/null | head -c 10; echo; \
         dd if=/dev/vda bs=512 skip=2048 count=1 2>/dev/null | head -n1",
    );
    let mut lines = disk.lines();
    assert_eq!(lines.next(), Some("MIGRATE-ME"), "{disk}");
    let written: u64 = lines
        .next()
        .and_then(|l| l.strip_prefix("disk-"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("{disk}"));
    assert!(written >= moved, "{written} < {moved}");
    dst.kill().unwrap();
    assert!(dst.wait_exit(Duration::from_secs(10)), "QEMU did not exit");
    // What the target's overlay holds after its QEMU is gone (it holds the image's lock
    // until it has exited): the mirrored clusters, on
    // the same base.
    let raw = std::process::Command::new("qemu-img")
        .args(["convert", "-O", "raw"])
        .arg(&dst_disk)
        .arg(tmp.path().join("dst.raw"))
        .status()
        .unwrap();
    assert!(raw.success());
    let out = std::fs::read(tmp.path().join("dst.raw")).unwrap();
    assert_eq!(&out[..10], b"BASE-IMAGE");
    assert_eq!(&out[4096 * 512..4096 * 512 + 10], b"MIGRATE-ME");
}
