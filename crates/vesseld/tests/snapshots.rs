//! Instance snapshots and copies over the real daemon: files changed after a snapshot come
//! back with its restore (containers on every kind of root, attached volumes, VMs), a
//! stateful VM snapshot resumes its guest with its uptime still counting, the schedule takes
//! and expires snapshots, and a copy of a running container is of one moment.

mod common;

use std::time::{Duration, Instant};

use common::*;

fn snapshots(d: &Daemon, name: &str) -> Vec<serde_json::Value> {
    serde_json::from_str(&d.ok(&["snapshot", "list", name, "--format", "json"])).unwrap()
}

#[test]
fn a_containers_files_and_volumes_come_back_from_its_snapshot() {
    let d = Daemon::start();
    d.busybox();
    d.ok(&["storage", "pool", "create", "p", "dir"]);
    d.ok(&["storage", "volume", "create", "p", "data"]);
    // One container whose layer lies on the daemon's file system, one with a disk of its own.
    for (name, extra) in [("plain", None), ("disk", Some("disk=64MiB"))] {
        let mut args = vec!["create", "busybox", name, "--no-network"];
        if let Some(l) = extra {
            args.extend(["-l", l]);
        }
        // Stops at once when asked (a restore of a running container stops it).
        args.extend([
            "--",
            "sh",
            "-c",
            "trap 'exit 0' TERM; while :; do sleep 1; done",
        ]);
        d.ok(&args);
    }
    d.ok(&["storage", "volume", "attach", "p", "data", "plain", "/srv"]);
    for name in ["plain", "disk"] {
        d.ok(&["start", name]);
        let (code, out) = d.sh(
            name,
            "echo one > /etc/note && mkdir -p /var/keep && echo kept > /var/keep/f && \
             (test ! -d /srv || echo vol-one > /srv/v)",
        );
        assert_eq!(code, 0, "{out}");
        d.ok(&["snapshot", "create", name, "s1"]);
        assert_eq!(d.info(name)["status"], "running", "{name} runs on");
        let (code, out) = d.sh(
            name,
            "echo two > /etc/note && rm -r /var/keep && echo new > /etc/added && \
             (test ! -d /srv || echo vol-two > /srv/v)",
        );
        assert_eq!(code, 0, "{out}");
        // Running: refused without --force, and nothing changed.
        let err = d.fails(&["snapshot", "restore", name, "s1"]);
        assert!(err.contains("--force"), "{err}");
        assert_eq!(d.sh(name, "cat /etc/note").1.trim(), "two");
        d.ok(&["snapshot", "restore", name, "s1", "--force"]);
        assert_eq!(d.info(name)["status"], "running", "started again");
        let (_, out) = d.sh(
            name,
            "cat /etc/note /var/keep/f; test -e /etc/added && echo still-there; \
             test ! -d /srv || cat /srv/v",
        );
        assert!(out.contains("one") && out.contains("kept"), "{name}: {out}");
        assert!(!out.contains("still-there"), "{name}: {out}");
        if name == "plain" {
            assert!(out.contains("vol-one"), "{out}");
        }
    }
    let s = &snapshots(&d, "plain")[0];
    assert_eq!(s["name"], "s1");
    assert_eq!(s["volumes"][0], "p/data", "{s}");
    // Names: default ones, taken ones refused, bad ones refused.
    d.ok(&["snapshot", "create", "plain"]);
    assert_eq!(snapshots(&d, "plain")[1]["name"], "snap0");
    assert!(d
        .fails(&["snapshot", "create", "plain", "s1"])
        .contains("already"));
    assert!(d
        .fails(&["snapshot", "create", "plain", "../x"])
        .contains("invalid"));
    assert!(d
        .fails(&["snapshot", "create", "plain", "x", "--stateful"])
        .contains("VM"));
    d.ok(&["snapshot", "delete", "plain", "snap0"]);
    assert_eq!(snapshots(&d, "plain").len(), 1);
    // Deleting the instance deletes its snapshots, its volume's too.
    for name in ["plain", "disk"] {
        d.ok(&["delete", "-f", name]);
    }
    let v: serde_json::Value = serde_json::from_str(
        &d.ok(&["storage", "volume", "info", "p", "data", "--format", "json"]),
    )
    .unwrap();
    assert!(
        v["snapshots"].as_array().is_none_or(|a| a.is_empty()),
        "{v}"
    );
    d.ok(&["storage", "volume", "delete", "p", "data"]);
}

#[test]
fn the_schedule_takes_snapshots_and_expiry_deletes_them() {
    let d = Daemon::start();
    d.busybox();
    d.ok(&["launch", "busybox", "c", "--no-network"]);
    let err = d.fails(&["config", "set", "c", "snapshots.schedule=every day"]);
    assert!(err.contains("five fields"), "{err}");
    let err = d.fails(&["config", "set", "c", "snapshots.expiry=7x"]);
    assert!(err.contains("unit"), "{err}");
    // In a project whose limits.disk.pool a snapshot would pass (its 32 MiB root disk and
    // a snapshot of it, in 48 MiB), the schedule takes none, as the API would not.
    d.ok(&["storage", "pool", "create", "sp", "dir"]);
    d.ok(&["project", "create", "q", "-c", "features.images=false"]);
    d.ok(&["project", "set", "q", "limits.disk.pool.sp=48MiB"]);
    let q = ["--project", "q"];
    let full = [
        &[
            "create",
            "busybox",
            "full",
            "--no-network",
            "--storage",
            "sp",
        ][..],
        &["-l", "disk=32MiB"],
        &q,
    ]
    .concat();
    d.ok(&full);
    let err = d.fails(&[&["snapshot", "create", "full"][..], &q].concat());
    assert!(err.contains("limits.disk.pool.sp"), "{err}");
    for name in ["c", "full"] {
        d.ok(&[
            &[
                "config",
                "set",
                name,
                "snapshots.schedule=* * * * *",
                "snapshots.expiry=1M",
            ][..],
            if name == "c" { &[] } else { &q },
        ]
        .concat());
    }
    d.wait_for("a scheduled snapshot", Duration::from_secs(80), || {
        snapshots(&d, "c")
            .iter()
            .any(|s| s["name"].as_str().unwrap().starts_with("auto-"))
    });
    d.wait_for(
        "the schedule refusing a snapshot past the limit",
        Duration::from_secs(20),
        || {
            d.log().lines().any(|l| {
                l.contains("scheduled snapshot not taken")
                    && l.contains("q.full")
                    && l.contains("limits.disk.pool.sp")
            })
        },
    );
    let taken = d.ok(&[&["snapshot", "list", "full", "--format", "json"][..], &q].concat());
    assert_eq!(taken.trim(), "[]", "past its project's limit: {taken}");
    d.ok(&[&["delete", "-f", "full"][..], &q].concat());
    d.ok(&["config", "unset", "c", "snapshots.schedule"]);
    let s = snapshots(&d, "c");
    assert!(s[0]["expires_at"].is_string(), "{s:?}");
    let start = Instant::now();
    d.wait_for("the snapshot expired", Duration::from_secs(150), || {
        snapshots(&d, "c").is_empty()
    });
    assert!(start.elapsed() > Duration::from_secs(5));
    d.ok(&["delete", "-f", "c"]);
}

fn uptime(d: &Daemon, name: &str) -> f64 {
    let (code, out) = d.sh(name, "cut -d' ' -f1 /proc/uptime");
    assert_eq!(code, 0, "{out}");
    out.trim().parse().unwrap()
}

#[test]
fn a_vms_disk_and_a_running_guest_come_back_from_snapshots() {
    let d = Daemon::start();
    d.ok(&["image", "build", "vm", "--layout", "disk"]);
    d.ok(&[
        "launch",
        "vm/busybox-disk",
        "g",
        "--vm",
        "-l",
        "memory=256MiB",
    ]);
    wait_console(&d, "g", "VESSEL-READY", Duration::from_secs(180));
    // Disks only, taken while it runs.
    assert_eq!(d.sh("g", "echo one > /root/f && sync").0, 0);
    d.ok(&["snapshot", "create", "g", "disk1"]);
    assert_eq!(d.sh("g", "echo two > /root/f && sync").0, 0);
    d.ok(&["snapshot", "restore", "g", "disk1", "--force"]);
    wait_console(&d, "g", "VESSEL-READY", Duration::from_secs(180));
    assert_eq!(d.sh("g", "cat /root/f").1.trim(), "one");
    // Stateful: the guest resumes where it was, its uptime counting on from then.
    std::thread::sleep(Duration::from_secs(2));
    // (Read before: the guest's uptime at the snapshot is at least this.)
    let before_snapshot = uptime(&d, "g");
    d.ok(&["snapshot", "create", "g", "warm", "--stateful"]);
    assert_eq!(d.sh("g", "echo after > /tmp/marker").0, 0);
    std::thread::sleep(Duration::from_secs(6));
    let before_restore = uptime(&d, "g");
    d.ok(&["snapshot", "restore", "g", "warm"]);
    let after = uptime(&d, "g");
    assert!(
        after < before_restore && after >= before_snapshot,
        "uptime {before_snapshot} before the snapshot, {before_restore} before the restore, \
         {after} after"
    );
    assert!(
        d.sh("g", "cat /tmp/marker").0 != 0,
        "memory from after the snapshot survived"
    );
    let s = snapshots(&d, "g");
    assert_eq!(s[1]["stateful"], true, "{s:?}");
    d.ok(&["snapshot", "delete", "g", "warm"]);
    // A copy from its disk snapshot boots with the disk as it was then.
    d.ok(&["copy", "g/disk1", "g2", "--start"]);
    wait_console(&d, "g2", "VESSEL-READY", Duration::from_secs(180));
    assert_eq!(d.sh("g2", "cat /root/f").1.trim(), "one");
    // Renamed (stopped): its disk, which names its image's disk by path, its snapshots and
    // its backups of the stopped disk follow.
    let err = d.fails(&["rename", "g", "h"]);
    assert!(err.contains("stop it first"), "{err}");
    d.ok(&["stop", "g"]);
    d.ok(&["rename", "g", "h"]);
    let err = d.fails(&["info", "g"]);
    assert!(err.contains("not found"), "{err}");
    assert_eq!(snapshots(&d, "h")[0]["name"], "disk1");
    d.ok(&["backup", "create", "h"]);
    d.ok(&["start", "h"]);
    wait_console(&d, "h", "VESSEL-READY", Duration::from_secs(180));
    assert_eq!(d.sh("h", "cat /root/f").1.trim(), "one");
    // Moved into a pool (stopped, its snapshot deleted first): its disk goes along.
    d.ok(&["stop", "-f", "h"]);
    d.ok(&["snapshot", "delete", "h", "disk1"]);
    d.ok(&["storage", "pool", "create", "p", "dir"]);
    d.ok(&["move", "h", "--pool", "p"]);
    assert_eq!(d.info("h")["storage"], "p");
    assert!(!d.root().join("instances/h/root.qcow2").exists());
    d.ok(&["start", "h"]);
    wait_console(&d, "h", "VESSEL-READY", Duration::from_secs(180));
    assert_eq!(d.sh("h", "cat /root/f").1.trim(), "one");
    // A copy of the running VM in the pool: a root volume of its own, the same disk.
    d.ok(&["copy", "h", "h2", "--start"]);
    assert_eq!(d.info("h2")["storage"], "p");
    wait_console(&d, "h2", "VESSEL-READY", Duration::from_secs(180));
    assert_eq!(d.sh("h2", "cat /root/f").1.trim(), "one");
    d.ok(&["delete", "-f", "h2"]);
    for n in ["h", "g2"] {
        d.ok(&["delete", "-f", n]);
    }
}

/// A copy of a container that writes all the time is of one moment: its counter and its
/// log (64 KiB appended after each count) agree, as a frozen cgroup leaves them; copied
/// while it kept writing, the log would be read at another moment than the counter.
#[test]
fn a_copy_of_a_running_container_is_consistent() {
    let d = Daemon::start();
    d.busybox();
    d.ok(&[
        "launch",
        "busybox",
        "busy",
        "--no-network",
        "--",
        "sh",
        "-c",
        "i=0; while :; do i=$((i+1)); echo $i > /x.tmp; mv /x.tmp /x; \
         head -c 65536 /dev/zero >> /log; done",
    ]);
    const STEP: u64 = 65536;
    for n in 0..3 {
        d.wait_for("the log to grow", Duration::from_secs(60), || {
            d.sh("busy", "wc -c < /log")
                .1
                .trim()
                .parse::<u64>()
                .unwrap_or(0)
                > (n + 1) * (24 << 20)
        });
        let name = format!("copy{n}");
        // Not started: its files are as copied.
        d.ok(&["copy", "busy", &name]);
        let dir = d.root().join("instances").join(&name).join("upper");
        let x: u64 = std::fs::read_to_string(dir.join("x"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let len = std::fs::metadata(dir.join("log")).unwrap().len();
        assert!(
            (x - 1) * STEP <= len && len <= x * STEP,
            "copy {n}: counter {x}, log {len} bytes ({} steps)",
            len / STEP
        );
        d.ok(&["delete", "-f", &name]);
    }
    // From a snapshot, and refused onto an existing name.
    d.ok(&["snapshot", "create", "busy", "s"]);
    d.ok(&["copy", "busy/s", "from-snap"]);
    assert!(d
        .fails(&["copy", "busy", "from-snap"])
        .contains("already exists"));
    assert!(d.fails(&["copy", "busy/nope", "x"]).contains("no snapshot"));
    for n in ["busy", "from-snap"] {
        d.ok(&["delete", "-f", n]);
    }
}
