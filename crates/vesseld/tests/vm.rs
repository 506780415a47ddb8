//! Virtual machines through the real daemon: QEMU under TCG here (KVM is probed and refused on
//! this host), the para profile with direct kernel boot and the guest agent, the full profile
//! booting an unmodified boot sector from firmware, and daemon restarts that re-adopt QEMU.

mod common;

use std::time::{Duration, Instant};

use common::{alive, wait_console, Daemon};

#[test]
fn para_vm_boots_runs_commands_and_outlives_the_daemon() {
    let mut d = Daemon::start();
    d.ok(&["image", "build", "vm"]);
    let t = Instant::now();
    let key = d.dir.join("id_ed25519.pub");
    std::fs::write(
        &key,
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBm0wO3HvKbGrEq0yTn3Cj7q3gS2jn2b3vbWm8vU0T1x test@vessel\n",
    )
    .unwrap();
    d.ok(&[
        "launch",
        "vm/busybox",
        "v1",
        "--vm",
        "-l",
        "memory=256MiB",
        "-l",
        "cpu=1",
        "--ssh-key",
        key.to_str().unwrap(),
    ]);
    let info = d.info("v1");
    assert_eq!(info["type"], "vm");
    assert_eq!(info["vm"]["profile"], "para");
    // This host's /dev/kvm cannot run the guest: the probe says so and why.
    assert_eq!(info["vm"]["accel"], "tcg", "{info}");
    assert!(!info["vm"]["accel_reason"].as_str().unwrap().is_empty());
    let log = wait_console(&d, "v1", "VESSEL-READY", Duration::from_secs(120));
    eprintln!("v1 ready after {:?}", t.elapsed());
    assert!(log.contains("VESSEL-AGENT started"), "{log}");

    // Commands through the guest agent; exit codes pass through.
    let (code, out) = d.sh("v1", "uname -r; hostname; exit 0");
    assert_eq!(code, 0);
    assert!(out.contains("cloud-amd64"), "{out}");
    assert!(out.contains("v1"), "{out}");
    let out = d.vessel(&["exec", "v1", "-T", "--", "sh", "-c", "exit 3"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The SSH key reached root's authorized_keys through the kernel command line.
    let keys = d.sh("v1", "cat /root/.ssh/authorized_keys").1;
    assert_eq!(keys, std::fs::read_to_string(&key).unwrap());
    // QEMU runs in the instance's cgroup with a memory limit above the guest's RAM.
    let usage = &d.info("v1")["state"];
    assert!(usage["memory_usage_bytes"].as_u64().unwrap() > 0, "{usage}");

    // QEMU runs as the VM's own unprivileged host uid (the first of its range), under its
    // seccomp sandbox.
    let qemu = d.info("v1")["state"]["pid"].as_i64().unwrap();
    let vm_uid = d.info("v1")["idmap"]["host_base"]
        .as_u64()
        .unwrap()
        .to_string();
    let status = std::fs::read_to_string(format!("/proc/{qemu}/status")).unwrap();
    let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        uid.split_whitespace().skip(1).all(|u| u == vm_uid),
        "{uid}, want {vm_uid}"
    );
    assert!(
        status.contains("Seccomp:\t2"),
        "QEMU runs without its sandbox"
    );

    // Pause and resume through QMP.
    d.ok(&["pause", "v1"]);
    assert_eq!(d.info("v1")["status"], "frozen");
    d.ok(&["resume", "v1"]);
    assert_eq!(d.info("v1")["status"], "running");

    // The daemon dies; QEMU keeps running and is adopted by the next daemon.
    let qemu = d.info("v1")["state"]["pid"].as_i64().unwrap() as i32;
    d.kill(libc::SIGKILL);
    assert!(alive(qemu));
    d.spawn();
    let info = d.info("v1");
    assert_eq!(info["status"], "running", "{info}");
    assert_eq!(info["state"]["pid"].as_i64().unwrap() as i32, qemu);
    assert_eq!(d.sh("v1", "echo still-here").1.trim(), "still-here");

    // A graceful stop presses the power button; the guest powers off by itself.
    let t = Instant::now();
    d.ok(&["stop", "v1", "--timeout", "30"]);
    assert!(
        t.elapsed() < Duration::from_secs(25),
        "stop took {:?}",
        t.elapsed()
    );
    assert_eq!(d.info("v1")["status"], "stopped");
    assert!(!alive(qemu));
    assert!(d.ok(&["logs", "v1"]).contains("VESSEL-SHUTDOWN"));
    d.ok(&["delete", "v1"]);
    assert!(d.qemu_pids().is_empty());
    assert!(d.cgroup_pids().is_empty());
}

#[test]
fn full_vm_boots_an_unmodified_disk_from_firmware() {
    let d = Daemon::start();
    let raw = d.dir.join("boot.raw");
    let mut disk = common::boot_sector("HELLO-FROM-FIRMWARE\r\n");
    disk.resize(1 << 20, 0);
    std::fs::write(&raw, &disk).unwrap();
    let qcow = d.dir.join("boot.qcow2");
    let out = std::process::Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "qcow2"])
        .arg(&raw)
        .arg(&qcow)
        .output()
        .expect("qemu-img from qemu-utils");
    assert!(out.status.success());
    d.ok(&[
        "image",
        "import",
        qcow.to_str().unwrap(),
        "--alias",
        "bootsector",
    ]);
    d.ok(&["launch", "bootsector", "f1", "--vm"]);
    assert_eq!(d.info("f1")["vm"]["profile"], "full");
    assert_eq!(d.info("f1")["vm"]["vnc"], true);
    wait_console(&d, "f1", "HELLO-FROM-FIRMWARE", Duration::from_secs(60));
    // The display is proxied by the daemon: the VNC server greets through the API.
    {
        use std::io::{BufRead, Read, Write};
        let mut s = std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
        write!(
            s,
            "GET /1.0/instances/f1/vnc HTTP/1.1\r\nHost: vessel\r\nConnection: Upgrade\r\nUpgrade: vessel-raw/1\r\n\r\n"
        )
        .unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut r = std::io::BufReader::new(s);
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert!(line.contains(" 101 "), "{line}");
        while line != "\r\n" {
            line.clear();
            r.read_line(&mut line).unwrap();
        }
        let mut greeting = [0u8; 12];
        r.read_exact(&mut greeting).unwrap();
        assert_eq!(&greeting[..4], b"RFB ", "{greeting:?}");
    }
    // `vessel console --type vga` serves that screen on a local port for a VNC viewer.
    {
        use std::io::Read;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let listen = format!("127.0.0.1:{port}");
        let mut cli = d.spawn_vessel(&["console", "f1", "--type", "vga", "--listen", &listen]);
        let mut greeting = [0u8; 12];
        let mut got = false;
        for _ in 0..100 {
            if let Ok(mut s) = std::net::TcpStream::connect(&listen) {
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                got = s.read_exact(&mut greeting).is_ok();
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = cli.kill();
        let _ = cli.wait();
        assert!(got && &greeting[..4] == b"RFB ", "{greeting:?}");
    }
    // The boot sector ignores the power button: the stop falls back to ending QEMU.
    d.ok(&["stop", "f1", "--timeout", "2"]);
    assert_eq!(d.info("f1")["status"], "stopped");
    // The image's disk was not written: the instance ran on its own overlay.
    let fp = d.info_image("bootsector")["fingerprint"]
        .as_str()
        .unwrap()
        .to_string();
    let (dg, _) = (
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
            std::fs::read(d.root().join("images").join(&fp).join("disk.qcow2")).unwrap(),
        )),
        (),
    );
    assert_eq!(dg, fp);
    let overlay = d.root().join("instances/f1/root.qcow2");
    assert!(overlay.is_file());
    // An overlay made before overlays were told their image's format records what the
    // image disk's bytes looked like then (say: raw, which QEMU would then boot as raw
    // bytes): the next start records the image's own.
    let backing_format = || {
        let out = std::process::Command::new("qemu-img")
            .args(["info", "-U", "--output=json"])
            .arg(&overlay)
            .output()
            .expect("qemu-img");
        let info: serde_json::Value = serde_json::from_slice(&out.stdout).expect("info");
        let format = info["backing-filename-format"].as_str().map(String::from);
        let file = info["backing-filename"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        (format, file)
    };
    let (format, backing) = backing_format();
    assert_eq!(format.as_deref(), Some("qcow2"));
    let out = std::process::Command::new("qemu-img")
        .args(["rebase", "-u", "-f", "qcow2", "-b", &backing, "-F", "raw"])
        .arg(&overlay)
        .output()
        .expect("qemu-img");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(backing_format().0.as_deref(), Some("raw"));
    d.ok(&["start", "f1"]);
    assert_eq!(backing_format(), (Some("qcow2".to_string()), backing));
    assert!(d.log().contains("recording the image's format"));
    d.ok(&["stop", "f1", "--timeout", "2"]);
    d.ok(&["delete", "f1"]);
    assert!(d.qemu_pids().is_empty());
}

#[test]
fn bad_vm_requests_are_refused_and_leave_nothing() {
    let d = Daemon::start();
    d.ok(&["image", "build", "vm"]);
    let err = d.fails(&[
        "launch",
        "vm/busybox",
        "big",
        "--vm",
        "-l",
        "memory=4096GiB",
    ]);
    assert!(err.contains("does not fit"), "{err}");
    d.busybox();
    let err = d.fails(&["launch", "busybox", "notvm", "--vm"]);
    assert!(err.contains("container image"), "{err}");
    // An image whose kernel went missing: a clear error, no instance, no QEMU.
    let fp = d.info_image("vm/busybox")["fingerprint"]
        .as_str()
        .unwrap()
        .to_string();
    std::fs::remove_file(d.root().join("images").join(&fp).join("vmlinuz")).unwrap();
    let err = d.fails(&["launch", "vm/busybox", "nokernel", "--vm"]);
    assert!(err.contains("vmlinuz"), "{err}");
    assert!(d.fails(&["info", "nokernel"]).contains("not found"));
    assert!(d.qemu_pids().is_empty());
    // A qcow2 whose contents were corrupted after import: QEMU's refusal is reported.
    let good = d.dir.join("g.qcow2");
    std::process::Command::new("qemu-img")
        .args(["create", "-f", "qcow2"])
        .arg(&good)
        .arg("16M")
        .output()
        .unwrap();
    d.ok(&["image", "import", good.to_str().unwrap(), "--alias", "g"]);
    let gfp = d.info_image("g")["fingerprint"]
        .as_str()
        .unwrap()
        .to_string();
    let stored = d.root().join("images").join(&gfp).join("disk.qcow2");
    let mut bytes = std::fs::read(&stored).unwrap();
    bytes[4..8].copy_from_slice(&[0, 0, 0, 99]); // an unknown qcow2 version
    std::fs::write(&stored, &bytes).unwrap();
    let err = d.fails(&["launch", "g", "broken", "--vm"]);
    assert!(err.contains("qcow2") || err.contains("version"), "{err}");
    assert!(d.fails(&["info", "broken"]).contains("not found"));
    assert!(d.qemu_pids().is_empty());
}

#[test]
fn vm_boots_from_a_raid_volume_and_keeps_running_without_a_member() {
    let mut d = Daemon::start();
    d.ok(&["image", "build", "vm", "--layout", "disk"]);
    d.ok(&[
        "storage",
        "pool",
        "create",
        "safe",
        "raid",
        "--level",
        "raid5",
        "--members",
        "3",
        "--size",
        "256MiB",
    ]);
    // The root disk goes into the pool, written from the image's disk over NBD.
    d.ok(&[
        "launch",
        "vm/busybox-disk",
        "r1",
        "--vm",
        "--storage",
        "safe",
        "-l",
        "memory=256MiB",
    ]);
    assert_eq!(d.info("r1")["storage"], "safe");
    assert!(
        !d.root().join("instances/r1/root.qcow2").exists(),
        "an overlay was made beside the instance"
    );
    let vols: serde_json::Value =
        serde_json::from_str(&d.ok(&["storage", "volume", "list", "safe", "--format", "json"]))
            .unwrap();
    assert_eq!(vols[0]["name"], "r1-root", "{vols}");
    assert_eq!(vols[0]["attached_to"][0]["instance"], "r1", "{vols}");
    assert!(vols[0]["used_bytes"].as_u64().unwrap() > 1 << 20, "{vols}");
    // QEMU reads its root disk from the daemon's NBD socket.
    let qemu = d.info("r1")["state"]["pid"].as_i64().unwrap();
    let cmdline = std::fs::read(format!("/proc/{qemu}/cmdline")).unwrap();
    let cmdline = String::from_utf8_lossy(&cmdline);
    assert!(cmdline.contains("\"driver\":\"nbd\""), "{cmdline}");
    wait_console(&d, "r1", "VESSEL-READY", Duration::from_secs(180));
    assert_eq!(d.sh("r1", "mount | grep ' / '; echo ok").0, 0);
    // Write through the guest, lose a member, keep going degraded.
    assert_eq!(
        d.sh("r1", "echo precious > /root/f && sync && cat /root/f")
            .1
            .trim(),
        "precious"
    );
    d.ok(&["storage", "pool", "repair", "safe", "fail", "--member", "1"]);
    assert_eq!(
        d.sh("r1", "echo more >> /root/f && sync && cat /root/f").1,
        "precious\nmore\n"
    );
    // The daemon restarts (QEMU reconnects to the re-served socket).
    d.kill(libc::SIGTERM);
    d.spawn();
    // QEMU reconnects to the re-served NBD socket after a short delay; until then the
    // guest's disk (and so a command the agent starts) waits.
    d.wait_for(
        "r1's agent after the restart",
        Duration::from_secs(60),
        || d.sh("r1", "true").0 == 0,
    );
    assert_eq!(d.sh("r1", "sync; cat /root/f").1, "precious\nmore\n");
    d.ok(&["stop", "r1", "--force"]);
    let err = d.fails(&["storage", "volume", "detach", "safe", "r1-root", "r1"]);
    assert!(err.contains("root disk"), "{err}");
    // A second boot reads what the first wrote, still degraded.
    d.ok(&["start", "r1"]);
    d.wait_for("the agent after a reboot", Duration::from_secs(180), || {
        d.sh("r1", "cat /root/f").1 == "precious\nmore\n"
    });
    d.ok(&["delete", "--force", "r1"]);
    let vols = d.ok(&["storage", "volume", "list", "safe", "--format", "json"]);
    assert_eq!(vols.trim(), "[]", "the root volume outlived its VM");
    // A VM never started moves into a dir pool from its image's disk, read as the format
    // the image records (never probed), and boots from there.
    d.ok(&["storage", "pool", "create", "plain", "dir"]);
    d.ok(&[
        "create",
        "vm/busybox-disk",
        "mv",
        "--vm",
        "-l",
        "memory=256MiB",
    ]);
    d.ok(&["move", "mv", "--pool", "plain"]);
    let vol: serde_json::Value = serde_json::from_str(&d.ok(&[
        "storage", "volume", "info", "plain", "mv-root", "--format", "json",
    ]))
    .unwrap();
    assert!(vol["used_bytes"].as_u64().unwrap() > 1 << 20, "{vol}");
    d.ok(&["start", "mv"]);
    wait_console(&d, "mv", "VESSEL-READY", Duration::from_secs(180));
    d.ok(&["delete", "--force", "mv"]);
    assert!(d.qemu_pids().is_empty());
}
