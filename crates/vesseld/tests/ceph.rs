//! The `ceph` pool driver against a real one-host Ceph (Debian's packages: a monitor, a
//! manager, one OSD on a file): RBD volumes with snapshots, restores and clones checked
//! through librbd by qemu-io, a VM booting from its root disk in Ceph through QEMU's librbd
//! (its key handed to its own QEMU user, never on the command line), and what the driver
//! refuses.

mod common;

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use common::ceph::Ceph;
use common::{tool, wait_console, Daemon};

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

/// qemu-io on an RBD image through librbd: writes resp. checks a pattern.
fn qemu_io(uri: &str, cmd: &str) -> String {
    tool("qemu-io", &["-f", "raw", "-c", cmd, uri])
}

#[test]
fn rbd_volumes_and_a_vm_on_ceph() {
    let mut ceph = Ceph::start();
    let conf = ceph.conf().display().to_string();
    let mut d = Daemon::start();
    let conf_kv = format!("ceph.conf={conf}");

    // Bad input: nothing made.
    let err = d.fails(&[
        "storage",
        "pool",
        "create",
        "c",
        "ceph",
        "-c",
        "ceph.conf=/nonexistent/ceph.conf",
    ]);
    assert!(
        err.contains("no Ceph configuration at /nonexistent/ceph.conf"),
        "{err}"
    );
    let err = d.fails(&[
        "storage", "pool", "create", "c", "ceph", "-c", &conf_kv, "--size", "1GiB",
    ]);
    assert!(err.contains("from Ceph"), "{err}");
    let err = d.fails(&[
        "storage", "pool", "create", "c", "ceph", "-c", &conf_kv, "-c", "ceph.x=1",
    ]);
    assert!(err.contains("ceph.x"), "{err}");
    assert_eq!(
        d.ok(&["storage", "pool", "list", "--format", "json"])
            .trim(),
        "[]"
    );

    // The pool: Vessel makes the RADOS pool it names.
    d.ok(&[
        "storage", "pool", "create", "cp", "ceph", "--source", "vessel", "-c", &conf_kv,
    ]);
    assert!(ceph
        .ceph(&["osd", "pool", "ls"])
        .lines()
        .any(|l| l == "vessel"));
    let pool = json(&d.ok(&["storage", "pool", "info", "cp", "--format", "json"]));
    assert_eq!(pool["status"], "online", "{pool}");
    assert_eq!(pool["driver"], "ceph", "{pool}");
    assert!(pool["size_bytes"].as_u64().unwrap() > 1 << 30, "{pool}");

    // Block volumes only.
    let err = d.fails(&["storage", "volume", "create", "cp", "files"]);
    assert!(err.contains("rbd module"), "{err}");
    d.ok(&[
        "storage", "volume", "create", "cp", "disk1", "--type", "block", "--size", "64MiB",
    ]);
    let info = json(&ceph.rbd(&["info", "vessel/disk1", "--format", "json"]));
    assert_eq!(info["size"], 64 << 20, "{info}");
    let err = d.fails(&[
        "storage", "volume", "create", "cp", "disk1", "--type", "block", "--size", "1MiB",
    ]);
    assert!(err.contains("already exists"), "{err}");
    // A name Ceph has already (made by another user of the cluster) is never reused.
    ceph.rbd(&["create", "vessel/taken", "--size", "1M"]);
    let err = d.fails(&[
        "storage", "volume", "create", "cp", "taken", "--type", "block", "--size", "1MiB",
    ]);
    assert!(err.contains("already has an image \"taken\""), "{err}");
    assert!(d
        .fails(&["storage", "volume", "info", "cp", "taken"])
        .contains("not found"));
    ceph.rbd(&["rm", "--no-progress", "vessel/taken"]);

    // Snapshot, restore and clone, checked through librbd.
    let uri = ceph.qemu_uri("vessel", "disk1");
    qemu_io(&uri, "write -P 0x11 0 1M");
    d.ok(&["storage", "volume", "snapshot", "cp", "disk1", "s1"]);
    qemu_io(&uri, "write -P 0x22 0 1M");
    assert!(ceph.rbd(&["snap", "ls", "vessel/disk1"]).contains("s1"));
    d.ok(&["storage", "volume", "restore", "cp", "disk1", "s1"]);
    qemu_io(&uri, "read -P 0x11 0 1M");
    d.ok(&[
        "storage", "volume", "create", "cp", "copy1", "--type", "block", "--source", "disk1/s1",
    ]);
    let clone = json(&ceph.rbd(&["info", "vessel/copy1", "--format", "json"]));
    assert_eq!(clone["parent"]["snapshot"], "s1", "{clone}");
    qemu_io(&ceph.qemu_uri("vessel", "copy1"), "read -P 0x11 0 1M");
    let err = d.fails(&["storage", "volume", "delete-snapshot", "cp", "disk1", "s1"]);
    assert!(err.contains("copy1"), "{err}");
    d.ok(&["storage", "volume", "resize", "cp", "disk1", "128MiB"]);
    let info = json(&ceph.rbd(&["info", "vessel/disk1", "--format", "json"]));
    assert_eq!(info["size"], 128 << 20, "{info}");
    let vol = json(&d.ok(&[
        "storage", "volume", "info", "cp", "disk1", "--format", "json",
    ]));
    assert!(vol["used_bytes"].as_u64().unwrap() >= 1 << 20, "{vol}");

    // Ceph serves its images itself: no NBD export of them; no containers' disks.
    let sock = d.root().join("e1.sock").display().to_string();
    let err = d.fails(&[
        "storage",
        "export",
        "create",
        "e1",
        "cp",
        "disk1",
        "--protocol",
        "nbd",
        "--listen",
        &sock,
    ]);
    assert!(err.contains("RBD image"), "{err}");
    d.ok(&["image", "build", "busybox"]);
    let err = d.fails(&[
        "launch",
        "busybox",
        "c1",
        "--storage",
        "cp",
        "-l",
        "disk=1GiB",
    ]);
    assert!(err.contains("ceph pool"), "{err}");

    // A VM whose root disk is an RBD image, opened by its QEMU through librbd.
    d.ok(&["image", "build", "vm", "--layout", "disk"]);
    d.ok(&[
        "launch",
        "vm/busybox-disk",
        "r1",
        "--vm",
        "--storage",
        "cp",
        "-l",
        "memory=256MiB",
    ]);
    assert!(ceph.rbd(&["ls", "vessel"]).lines().any(|l| l == "r1-root"));
    let qemu = d.info("r1")["state"]["pid"].as_i64().unwrap();
    let cmdline = String::from_utf8_lossy(&std::fs::read(format!("/proc/{qemu}/cmdline")).unwrap())
        .into_owned();
    assert!(cmdline.contains("\"driver\":\"rbd\""), "{cmdline}");
    let key = tool(
        "ceph-authtool",
        &[
            "-p",
            "-n",
            "client.admin",
            &ceph.dir.join("keyring").display().to_string(),
        ],
    );
    assert!(
        !cmdline.contains(key.trim()),
        "the key is on QEMU's command line"
    );
    // The key file QEMU reads is its user's alone.
    let key_file = cmdline
        .split('\0')
        .flat_map(|a| a.split(','))
        .find_map(|kv| kv.strip_prefix("file="))
        .expect("a secret object with a file")
        .to_string();
    let md = std::fs::metadata(&key_file).unwrap();
    let qemu_uid = std::fs::metadata(format!("/proc/{qemu}")).unwrap().uid();
    assert_eq!((md.uid(), md.mode() & 0o777), (qemu_uid, 0o600));
    assert_ne!(qemu_uid, 0);
    wait_console(&d, "r1", "VESSEL-READY", Duration::from_secs(180));
    assert_eq!(
        d.sh("r1", "echo on-ceph > /root/f && sync && cat /root/f")
            .1
            .trim(),
        "on-ceph"
    );
    // The daemon restarts: QEMU keeps its image open; the pool opens again.
    d.kill(libc::SIGTERM);
    d.spawn();
    assert_eq!(d.sh("r1", "cat /root/f").1, "on-ceph\n");
    let pool = json(&d.ok(&["storage", "pool", "info", "cp", "--format", "json"]));
    assert_eq!(pool["status"], "online", "{pool}");
    d.ok(&["stop", "r1", "--force"]);
    // What is not built for RBD roots says so, and makes nothing.
    let err = d.fails(&["copy", "r1", "r2"]);
    assert!(
        err.contains("RBD image") && err.contains("not supported yet"),
        "{err}"
    );
    assert!(d.fails(&["info", "r2"]).contains("not found"));
    d.ok(&["start", "r1"]);
    d.wait_for("the agent after a reboot", Duration::from_secs(180), || {
        d.sh("r1", "cat /root/f").1 == "on-ceph\n"
    });
    d.ok(&["delete", "--force", "r1"]);
    assert!(!ceph.rbd(&["ls", "vessel"]).lines().any(|l| l == "r1-root"));
    assert!(
        !std::path::Path::new(&key_file).exists(),
        "the key outlived the VM"
    );

    // Ceph out of reach: the pool says so and why, changes are refused, nothing hangs;
    // all is well again once it answers.
    ceph.stop_monitor();
    let pool = json(&d.ok(&["storage", "pool", "info", "cp", "--format", "json"]));
    assert_eq!(pool["status"], "unavailable", "{pool}");
    let why = pool["error"].as_str().unwrap_or_default();
    assert!(
        why.contains("Ceph did not answer") && why.contains("timed out"),
        "{pool}"
    );
    let err = d.fails(&[
        "storage", "volume", "create", "cp", "disk2", "--type", "block", "--size", "1MiB",
    ]);
    assert!(err.contains("Ceph did not answer"), "{err}");
    eprintln!("Ceph away: the pool says {why:?}; a create: {err}");
    ceph.start_monitor();
    let pool = json(&d.ok(&["storage", "pool", "info", "cp", "--format", "json"]));
    assert_eq!(pool["status"], "online", "{pool}");
    assert!(d
        .fails(&["storage", "volume", "info", "cp", "disk2"])
        .contains("not found"));

    // The pool goes once its volumes have; the RADOS pool stays (it may hold more).
    let err = d.fails(&["storage", "pool", "delete", "cp"]);
    assert!(err.contains("still has volumes"), "{err}");
    d.ok(&["storage", "volume", "delete", "cp", "copy1"]);
    d.ok(&["storage", "volume", "delete-snapshot", "cp", "disk1", "s1"]);
    d.ok(&["storage", "volume", "delete", "cp", "disk1"]);
    assert_eq!(ceph.rbd(&["ls", "vessel"]).trim(), "");
    d.ok(&["storage", "pool", "delete", "cp"]);
    d.kill(libc::SIGTERM);
}
