//! A VM moved live between members of a cluster (a real 3-member etcd, three daemons in
//! their own network namespaces): a loop inside it counts on across the move, a TCP
//! connection to it from a container on a third member stays open, the pause is measured
//! from both sides, its image goes along, and it runs on one member only; a VM with a root
//! disk keeps what it wrote before and during the move; evacuation moves a running VM live
//! and restore brings it back.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{address_on, json, members, wait};
use common::Daemon;

/// `script` run in the VM `vm` through its agent: (exit code, output). Right after a live
/// move too, at the first try (the agent client connects again while the guest does not
/// hear it: docs/vm.md, "The guest agent").
fn agent_sh(d: &Daemon, vm: &str, script: &str) -> (i32, String) {
    let out = d.vessel(&["exec", vm, "-T", "--", "sh", "-c", script]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        eprintln!("{vm}: {script}: {}", String::from_utf8_lossy(&out.stderr));
    }
    (out.status.code().unwrap_or(-1), text)
}

/// The guest's count.
fn count(d: &Daemon, vm: &str) -> u64 {
    let (code, out) = agent_sh(d, vm, "cat /tmp/count");
    assert_eq!(code, 0, "{out}");
    out.trim()
        .parse()
        .unwrap_or_else(|_| panic!("count {out:?}"))
}

/// The lines the client got: (host uptime when it got it, the guest's count).
fn received(d: &Daemon, client: &str) -> Vec<(f64, u64)> {
    d.sh(client, "cat /tmp/got")
        .1
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some((w.next()?.parse().ok()?, w.next()?.parse().ok()?))
        })
        .collect()
}

#[test]
fn a_running_vm_moves_live_keeping_its_count_and_its_tcp_connection() {
    // The sandbox has no way to Debian's mirror: a daemon outside builds the VM image and
    // hands it over as a bundle.
    let builder = Daemon::start();
    builder.ok(&["image", "build", "vm"]);
    builder.ok(&["image", "build", "vm", "--layout", "disk"]);
    let bundle = builder.dir.join("vm.tar");
    builder.ok(&["image", "export", "vm/busybox", bundle.to_str().unwrap()]);
    let disk_bundle = builder.dir.join("vm-disk.tar");
    builder.ok(&[
        "image",
        "export",
        "vm/busybox-disk",
        disk_bundle.to_str().unwrap(),
    ]);

    let (_sb, _etcd, d) = members(3);
    // The image is on m0 only: the move takes it along.
    d[0].ok(&[
        "image",
        "import",
        bundle.to_str().unwrap(),
        "--alias",
        "vm/busybox",
    ]);
    d[0].ok(&[
        "image",
        "import",
        disk_bundle.to_str().unwrap(),
        "--alias",
        "vm/busybox-disk",
    ]);
    drop(builder);
    d[0].busybox();
    d[2].busybox();
    d[0].ok(&[
        "network",
        "create",
        "cn",
        "--subnet",
        "10.79.0.0/24",
        "--cluster",
    ]);
    for di in &d {
        wait("cn on every member", Duration::from_secs(15), || {
            di.vessel(&["network", "info", "cn"]).status.success()
        });
    }
    d[0].ok(&[
        "launch",
        "vm/busybox",
        "v1",
        "--vm",
        "-l",
        "memory=256MiB",
        "--network",
        "cn",
        "--target",
        "m0",
    ]);
    let ip = address_on(&d[0], "v1", "cn");
    d[0].wait_for("the VM's DHCP lease", Duration::from_secs(180), || {
        d[0].sh("v1", "ip -4 addr show eth0").1.contains(&ip)
    });
    // In the guest: a counter ten times a second, and a TCP server sending it as often.
    let (code, out) = d[0].sh(
        "v1",
        "printf '#!/bin/sh\\nwhile :; do read n < /tmp/count; echo $n; sleep 0.1; done\\n' \
           > /tmp/tick && \
         chmod +x /tmp/tick && \
         setsid sh -c 'i=0; while :; do i=$((i+1)); echo $i > /tmp/count.new; mv /tmp/count.new /tmp/count; sleep 0.1; done' \
           </dev/null >/dev/null 2>&1 & \
         setsid nc -l -p 7000 -e /tmp/tick </dev/null >/dev/null 2>&1 & sleep 1; echo started",
    );
    assert_eq!((code, out.trim()), (0, "started"));
    // On a third member, a client of that server, stamping each line with the time.
    d[2].ok(&[
        "launch",
        "busybox",
        "client",
        "--network",
        "cn",
        "--target",
        "m2",
        "--",
        "sleep",
        "3600",
    ]);
    let (code, out) = d[2].sh(
        "client",
        &format!(
            "setsid sh -c 'nc {ip} 7000 | while read n; do read up _ < /proc/uptime; \
             echo \"$up $n\"; done > /tmp/got' </dev/null >/dev/null 2>&1 & sleep 2; \
             wc -l < /tmp/got"
        ),
    );
    assert_eq!(code, 0, "{out}");
    wait("the client receives", Duration::from_secs(30), || {
        received(&d[2], "client").len() > 5
    });
    let before = count(&d[0], "v1");

    // Bad input first: a live move of what cannot move live, to where it is, or nowhere.
    d[0].ok(&[
        "launch", "busybox", "c0", "--target", "m0", "--", "sleep", "3600",
    ]);
    let err = d[0].fails(&["move", "c0", "--target", "m1", "--live"]);
    assert!(err.contains("only a running VM moves live"), "{err}");
    let err = d[0].fails(&["move", "v1", "--target", "m0"]);
    assert!(err.contains("already"), "{err}");
    let err = d[0].fails(&["move", "v1", "--target", "m9"]);
    assert!(err.contains("m9"), "{err}");
    // The endpoints between members are refused to anyone else.
    let (code, body) = common::http(
        &d[0].socket,
        "PUT",
        "/1.0/instances/v1/incoming",
        Some("{\"run\": true}"),
    );
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("needs the role member"), "{body}");

    // Asked of m1, which forwards it to m0, where v1 runs.
    let t = Instant::now();
    let out = d[1].ok(&["move", "v1", "--target", "m1"]);
    let took = t.elapsed();
    eprintln!(
        "live move: {out} ({:.1} s by the clock)",
        took.as_secs_f64()
    );
    assert!(out.contains("live") && out.contains("paused"), "{out}");

    // It runs on m1 only, where the index says.
    assert_eq!(d[0].info("v1")["location"], "m1");
    assert_eq!(
        json(&d[1].ok(&["info", "v1", "--format", "json"]))["status"],
        "running"
    );
    assert_eq!(d[0].qemu_pids().len(), 0, "a QEMU of v1 is left on m0");
    assert_eq!(d[1].qemu_pids().len(), 1);
    // The guest went on: its counter (no reboot), its server, the client's connection.
    let moved = count(&d[0], "v1");
    assert!(moved > before, "{moved} <= {before}");
    d[1].wait_for("v1's counter to go on", Duration::from_secs(30), || {
        count(&d[1], "v1") > moved
    });
    std::thread::sleep(Duration::from_secs(2));
    let got = received(&d[2], "client");
    let (last_t, last_n) = *got.last().unwrap();
    let later = count(&d[1], "v1");
    assert!(
        last_n >= moved,
        "the TCP connection broke: the client's last line {last_n} < {moved}"
    );
    let up: f64 = d[2]
        .sh("client", "cut -d' ' -f1 /proc/uptime")
        .1
        .trim()
        .parse()
        .unwrap();
    // (Lines come ten times a second; a TCG guest on a loaded machine may lag a little.)
    assert!(
        up - last_t < 5.0,
        "nothing received for {:.1} s",
        up - last_t
    );
    // The pause as the client saw it: the longest gap between lines.
    let gap = got
        .windows(2)
        .map(|w| w[1].0 - w[0].0)
        .fold(0.0f64, f64::max);
    eprintln!(
        "live move: the client saw its longest gap of {:.2} s over {} lines",
        gap,
        got.len()
    );
    assert!(gap < 5.0, "the guest was away {gap:.1} s");
    // It moves back the same way; the image went to m1 under its fingerprint.
    let out = d[1].ok(&["move", "v1", "--target", "m0"]);
    assert!(out.contains("live"), "{out}");
    assert_eq!(d[1].qemu_pids().len(), 0);
    assert!(count(&d[0], "v1") > later);
    let fingerprint = d[0].info_image("vm/busybox")["fingerprint"]
        .as_str()
        .unwrap()
        .to_string();
    d[1].ok(&["image", "info", &fingerprint]);

    // A VM with a root disk: what it wrote before the move and what it writes during it
    // are on the other member's copy (mirrored through the members' TLS), and it writes on.
    d[0].ok(&[
        "launch",
        "vm/busybox-disk",
        "d1",
        "--vm",
        "-l",
        "memory=256MiB",
        "--no-network",
        "--target",
        "m0",
    ]);
    d[0].wait_for("d1's agent", Duration::from_secs(180), || {
        d[0].sh("d1", "true").0 == 0
    });
    // Its root file system is on the disk (not in memory), and a loop writes to it.
    let (code, out) = agent_sh(&d[0], "d1", "grep ' / ' /proc/mounts");
    assert!(code == 0 && out.contains("ext4"), "{out}");
    let (code, out) = d[0].sh(
        "d1",
        "echo precious > /root/f && sync && cat /root/f && \
         (setsid sh -c 'i=0; while :; do i=$((i+1)); echo $i > /root/n.new; mv /root/n.new /root/n; sync; sleep 0.1; done' \
           </dev/null >/dev/null 2>&1 &) && sleep 1 && cat /root/n",
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("precious\n"), "{out}");
    let out = d[0].ok(&["move", "d1", "--target", "m2"]);
    eprintln!("live move with a disk: {out}");
    assert!(out.contains("live"), "{out}");
    assert!(d[2].root().join("instances/d1/root.qcow2").is_file());
    let written = |d: &Daemon| -> (String, u64) {
        let (code, out) = agent_sh(d, "d1", "cat /root/f /root/n");
        assert_eq!(code, 0, "{out}");
        let mut lines = out.lines();
        let f = lines.next().unwrap_or_default().to_string();
        (f, lines.next().and_then(|n| n.parse().ok()).unwrap_or(0))
    };
    let (f, n) = written(&d[2]);
    assert_eq!(f, "precious");
    assert!(n > 0, "the guest wrote nothing");
    let mut n2 = n;
    d[2].wait_for("d1 to write on", Duration::from_secs(30), || {
        n2 = written(&d[2]).1;
        n2 > n
    });

    // Evacuating m2 moves d1 live (cluster.evacuate auto) and the client cold; restore
    // brings both back.
    d[0].ok(&["cluster", "evacuate", "m2"]);
    let away = d[0].info("d1")["location"].as_str().unwrap().to_string();
    assert_ne!(away, "m2");
    assert_eq!(d[2].qemu_pids().len(), 0);
    let (_, n3) = written(&d[0]);
    assert!(n3 > n2, "{n3} <= {n2}");
    d[0].ok(&["cluster", "restore", "m2"]);
    assert_eq!(d[0].info("d1")["location"], "m2");
    assert_eq!(d[0].info("client")["location"], "m2");
    let (f, n4) = written(&d[0]);
    assert_eq!((f.as_str(), n4 > n3), ("precious", true));

    d[0].ok(&["delete", "--force", "v1", "c0", "d1", "client"]);

    // A stopped VM with a volume of a raid pool moves cold with it: the volume is made in
    // the raid pool of the same name there (a thin volume: only what holds data written),
    // with every byte, and is gone here.
    for di in [&d[0], &d[2]] {
        di.ok(&[
            "storage",
            "pool",
            "create",
            "rr",
            "raid",
            "--level",
            "raid1",
            "--members",
            "2",
            "--size",
            "48MiB",
        ]);
    }
    d[0].ok(&[
        "storage", "volume", "create", "rr", "vdisk", "--type", "block", "--size", "8MiB",
    ]);
    let mut data: Vec<u8> = (0..3u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    data.resize(8 << 20, 0);
    let src = d[0].dir.join("vdisk.raw");
    std::fs::write(&src, &data).unwrap();
    let through_nbd = |di: &Daemon, from_file: bool, file: &std::path::Path| {
        let sock = di.dir.join("vdisk.sock");
        let sock_s = sock.to_str().unwrap();
        di.ok(&[
            "storage",
            "export",
            "create",
            "vd",
            "rr",
            "vdisk",
            "--protocol",
            "nbd",
            "--listen",
            sock_s,
        ]);
        let uri = format!("nbd+unix:///vd?socket={sock_s}");
        let file_s = file.to_str().unwrap();
        let (a, b) = if from_file {
            (file_s, uri.as_str())
        } else {
            (uri.as_str(), file_s)
        };
        let out = std::process::Command::new("nbdcopy")
            .args([a, b])
            .output()
            .expect("nbdcopy (libnbd-bin) runs");
        assert!(out.status.success(), "{out:?}");
        di.ok(&["storage", "export", "delete", "vd"]);
    };
    through_nbd(&d[0], true, &src);
    d[0].ok(&[
        "create",
        "vm/busybox",
        "vv",
        "--vm",
        "--no-network",
        "--target",
        "m0",
    ]);
    d[0].ok(&["storage", "volume", "attach", "rr", "vdisk", "vv"]);
    // The project's limit of the pool, as each member counts it: what m2 holds there and
    // the volume coming would go over it; the move is refused and nothing changed.
    d[2].ok(&[
        "storage", "volume", "create", "rr", "other", "--type", "block", "--size", "4MiB",
    ]);
    d[0].ok(&["project", "set", "default", "limits.disk.pool.rr=10MiB"]);
    let err = d[1].fails(&["move", "vv", "--target", "m2"]);
    assert!(err.contains("limits.disk.pool.rr"), "{err}");
    assert_eq!(d[0].info("vv")["location"], "m0");
    d[0].ok(&["storage", "volume", "info", "rr", "vdisk"]);
    let err = d[2].fails(&["storage", "volume", "info", "rr", "vdisk"]);
    assert!(err.contains("not found"), "{err}");
    d[2].ok(&["storage", "volume", "delete", "rr", "other"]);
    d[1].ok(&["move", "vv", "--target", "m2"]);
    assert_eq!(d[0].info("vv")["location"], "m2");
    let err = d[0].fails(&["storage", "volume", "info", "rr", "vdisk"]);
    assert!(err.contains("not found"), "{err}");
    let vol = json(&d[2].ok(&[
        "storage", "volume", "info", "rr", "vdisk", "--format", "json",
    ]));
    assert_eq!(vol["attached_to"][0]["instance"], "vv", "{vol}");
    d[2].ok(&["storage", "volume", "detach", "rr", "vdisk", "vv"]);
    let back = d[2].dir.join("vdisk.back");
    through_nbd(&d[2], false, &back);
    assert!(
        std::fs::read(&back).unwrap() == data,
        "the moved volume differs"
    );
    d[2].ok(&["delete", "vv"]);
    d[2].ok(&["storage", "volume", "delete", "rr", "vdisk"]);
    d[0].ok(&["project", "unset", "default", "limits.disk.pool.rr"]);
    for di in [&d[0], &d[2]] {
        di.ok(&["storage", "pool", "delete", "rr"]);
    }
}
