//! A running VM grown in place: a disk volume resized while attached shows its new size in
//! the guest at once; its memory raised with `vessel config set` shows in the guest's
//! /proc/meminfo (virtio-mem), and a size beyond what it can take live waits for its next start;
//! a vCPU plugged live comes online in the guest.

mod common;

use std::time::Duration;

use common::{wait_console, Daemon};

/// Waits until the console log holds `needle`.
/// The guest's virtio disks and their sizes, 512-byte sectors.
fn disks(d: &Daemon, name: &str) -> Vec<(String, u64)> {
    let (code, out) = d.sh(
        name,
        "for b in /sys/block/vd*; do echo ${b##*/} $(cat $b/size); done",
    );
    assert_eq!(code, 0, "{out}");
    out.lines()
        .filter_map(|l| {
            let (dev, size) = l.split_once(' ')?;
            Some((dev.to_string(), size.trim().parse().ok()?))
        })
        .collect()
}

#[test]
fn a_running_vm_grows_its_disk_memory_and_vcpus() {
    let d = Daemon::start();
    d.ok(&["image", "build", "vm"]);
    d.ok(&["storage", "pool", "create", "p", "dir"]);
    d.ok(&[
        "storage", "volume", "create", "p", "disk", "--type", "block", "--size", "16MiB",
    ]);
    d.ok(&[
        "create",
        "vm/busybox",
        "g",
        "--vm",
        "-l",
        "memory=256MiB",
        "-l",
        "cpu=1",
    ]);
    d.ok(&["storage", "volume", "attach", "p", "disk", "g"]);
    d.ok(&["start", "g"]);
    wait_console(&d, "g", "VESSEL-READY", Duration::from_secs(180));
    let before = disks(&d, "g");
    let dev = before
        .iter()
        .find(|(_, s)| *s == 16 << 11)
        .unwrap_or_else(|| panic!("no 16 MiB disk in the guest: {before:?}"))
        .0
        .clone();
    d.ok(&["storage", "volume", "resize", "p", "disk", "32MiB"]);
    d.wait_for(
        "the guest's disk at 32 MiB",
        Duration::from_secs(20),
        || disks(&d, "g").contains(&(dev.clone(), 32 << 11)),
    );
    // The guest writes into the new space.
    let (code, out) = d.sh(
        "g",
        &format!("dd if=/dev/zero of=/dev/{dev} bs=1M seek=30 count=2 2>&1 && echo wrote"),
    );
    assert!(code == 0 && out.contains("wrote"), "{out}");

    // Memory: 256 MiB at boot, grown live to 512 MiB.
    let total = |d: &Daemon| -> u64 {
        let (_, out) = d.sh("g", "grep MemTotal /proc/meminfo");
        out.split_whitespace()
            .nth(1)
            .and_then(|k| k.parse().ok())
            .unwrap_or_else(|| panic!("{out:?}"))
    };
    let before = total(&d);
    let answer: serde_json::Value = serde_json::from_str(&d.ok(&[
        "config",
        "set",
        "g",
        "limits.memory=512MiB",
        "--format",
        "json",
    ]))
    .unwrap();
    assert_eq!(answer["changes"][0]["effect"], "live", "{answer}");
    d.wait_for(
        "the guest's memory grown by 256 MiB",
        Duration::from_secs(20),
        || total(&d) >= before + 256 * 1024,
    );
    // Beyond four times what it booted with: at the next start, and it says so.
    let answer: serde_json::Value = serde_json::from_str(&d.ok(&[
        "config",
        "set",
        "g",
        "limits.memory=2GiB",
        "--format",
        "json",
    ]))
    .unwrap();
    assert_eq!(answer["changes"][0]["effect"], "next-start", "{answer}");
    let why = answer["changes"][0]["reason"].as_str().unwrap_or_default();
    assert!(why.contains("256 to 1024 MiB"), "{answer}");
    assert!(total(&d) < before + 512 * 1024);

    // vCPUs: one at boot, a second plugged live and brought online by the guest's agent.
    let nproc = |d: &Daemon| d.sh("g", "nproc").1.trim().to_string();
    assert_eq!(nproc(&d), "1");
    let answer: serde_json::Value =
        serde_json::from_str(&d.ok(&["config", "set", "g", "limits.cpu=2", "--format", "json"]))
            .unwrap();
    assert_eq!(answer["changes"][0]["effect"], "live", "{answer}");
    d.wait_for(
        "the guest's second vCPU online",
        Duration::from_secs(90),
        || nproc(&d) == "2",
    );
    // Lowered, the vCPU stays until the next start, and the project's usage counts what the
    // VM holds, not the lowered limit (lowering frees no quota before it frees the cores).
    let answer: serde_json::Value =
        serde_json::from_str(&d.ok(&["config", "set", "g", "limits.cpu=1", "--format", "json"]))
            .unwrap();
    assert_eq!(answer["changes"][0]["effect"], "next-start", "{answer}");
    let usage: serde_json::Value =
        serde_json::from_str(&d.ok(&["project", "info", "default", "--format", "json"])).unwrap();
    assert_eq!(usage["usage"]["cpu"], 2.0, "{usage}");
    d.ok(&["delete", "-f", "g"]);
    d.ok(&["storage", "volume", "delete", "p", "disk"]);
}
