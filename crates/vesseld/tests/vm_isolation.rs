//! VMs isolated from host users and from each other: each VM's QEMU and console log sink run
//! as a host uid of their own (never `nobody`), everything QEMU opens is that uid's alone or
//! root's, VM images are root's (QEMU reaches its own image's files only), and the VMs still
//! boot, run commands, serve their console, survive a daemon restart and leave nothing of
//! theirs when deleted. QEMU runs under TCG here.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{as_host_user, Daemon, Framed};

/// The unprivileged host user attackers are tested as.
const NOBODY: u32 = 65534;

/// Connects to a unix socket as the host user `uid` (no groups); Python because no tool of
/// the base system connects to a unix socket.
fn connect_as(uid: u32, socket: &Path) -> (i32, String) {
    as_host_user(
        uid,
        &[
            "/usr/bin/python3",
            "-c",
            "import socket, sys\ns = socket.socket(socket.AF_UNIX)\ns.connect(sys.argv[1])",
            socket.to_str().unwrap(),
        ],
    )
}

/// Reads the first byte of a file as the host user `uid` (no groups).
fn read_as(uid: u32, file: &Path) -> (i32, String) {
    as_host_user(uid, &["head", "-c", "1", file.to_str().unwrap()])
}

/// What the test found wrong, reported together at the end (so a run against code without
/// the isolation names every breach, not only the first).
#[derive(Default)]
struct Findings(Vec<String>);

impl Findings {
    fn check(&mut self, ok: bool, what: impl Into<String>) {
        if !ok {
            self.0.push(what.into());
        }
    }

    /// `uid` must be refused (EACCES) doing what `result` reports.
    fn refused(&mut self, uid: u32, what: &str, result: (i32, String)) {
        let (code, err) = result;
        self.check(
            code != 0 && err.contains("Permission denied"),
            format!(
                "uid {uid} {what}: exit {code}, {:?} (want EACCES)",
                err.trim()
            ),
        );
    }

    /// `uid` must succeed doing what `result` reports (the checks above are not vacuous).
    fn allowed(&mut self, uid: u32, what: &str, result: (i32, String)) {
        let (code, err) = result;
        self.check(
            code == 0,
            format!(
                "uid {uid} {what}: exit {code}, {:?} (want success)",
                err.trim()
            ),
        );
    }
}

/// (mode bits, uid) of a path, or `None` when it is gone.
fn mode(p: &Path) -> Option<(u32, u32)> {
    std::fs::symlink_metadata(p)
        .ok()
        .map(|m| (m.mode() & 0o7777, m.uid()))
}

/// Real, effective, saved and file-system uid (or gid) of a process, from its status line.
fn ids(pid: i32, key: &str) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .map(|l| {
            l.split_whitespace()
                .skip(1)
                .filter_map(|x| x.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn qemu_pid(d: &Daemon, name: &str) -> i32 {
    let info = d.info(name);
    info["state"]["pid"]
        .as_i64()
        .unwrap_or_else(|| panic!("{name} has no QEMU pid: {info}")) as i32
}

/// The pid of the VM's console log sink, from its `vm.json`.
fn sink_pid(d: &Daemon, name: &str) -> Option<i32> {
    let rec: serde_json::Value = serde_json::from_slice(
        &std::fs::read(d.run().join("vms").join(name).join("vm.json")).ok()?,
    )
    .ok()?;
    rec["log_sink"]["pid"].as_i64().map(|p| p as i32)
}

fn wait_ready(d: &Daemon, name: &str) {
    d.wait_for(&format!("{name} to boot"), Duration::from_secs(240), || {
        String::from_utf8_lossy(&d.vessel(&["logs", name]).stdout).contains("VESSEL-READY")
    });
}

/// Every file and directory under `dir` owned by one of `uids`.
fn owned_by(dir: &Path, uids: &[u32]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(md) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if uids.contains(&md.uid()) || uids.contains(&md.gid()) {
            out.push(p.clone());
        }
        if md.is_dir() {
            for e in std::fs::read_dir(&p).into_iter().flatten().flatten() {
                stack.push(e.path());
            }
        }
    }
    out
}

/// Live processes of this daemon (their command line names its directory, as QEMU's and the
/// log sink's do) running as one of `uids`, with their command lines. (Other daemons on the
/// host allocate from the same id base: their processes may have the same uids.)
fn processes_of(d: &Daemon, uids: &[u32]) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| common::alive(*pid) && ids(*pid, "Uid:").iter().any(|u| uids.contains(u)))
        .filter_map(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            d.names_dir(&cmd).then(|| format!("{pid}: {cmd}"))
        })
        .collect()
}

#[test]
fn each_vm_runs_as_its_own_host_user_and_reaches_only_its_own_files() {
    let mut d = Daemon::start();
    let mut f = Findings::default();
    d.ok(&["image", "build", "vm"]);
    d.ok(&["image", "build", "vm", "--layout", "disk"]);
    // v1 boots from its initramfs and has a raid volume, served over a private NBD socket;
    // v2 boots from a qcow2 overlay of its image's disk and has a file of a dir pool.
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
        "64MiB",
    ]);
    d.ok(&[
        "storage", "volume", "create", "safe", "v1data", "--type", "block", "--size", "16MiB",
    ]);
    d.ok(&["storage", "pool", "create", "local", "dir"]);
    d.ok(&[
        "storage", "volume", "create", "local", "v2data", "--type", "block", "--size", "16MiB",
    ]);
    d.ok(&["create", "vm/busybox", "v1", "--vm", "-l", "memory=256MiB"]);
    d.ok(&[
        "create",
        "vm/busybox-disk",
        "v2",
        "--vm",
        "-l",
        "memory=256MiB",
    ]);
    d.ok(&["storage", "volume", "attach", "safe", "v1data", "v1"]);
    d.ok(&["storage", "volume", "attach", "local", "v2data", "v2"]);
    d.ok(&["start", "v1"]);
    d.ok(&["start", "v2"]);
    let (q1, q2) = (qemu_pid(&d, "v1"), qemu_pid(&d, "v2"));

    // Each QEMU and its log sink run as the VM's own uid and gid (the one recorded with the
    // instance), with no group but its own and kvm.
    let kvm = std::fs::metadata("/dev/kvm").map(|m| m.gid()).ok();
    let mut uids = Vec::new();
    for (name, qemu) in [("v1", q1), ("v2", q2)] {
        let info = d.info(name);
        let recorded = info["idmap"]["host_base"].as_u64().map(|u| u as u32);
        let uid = ids(qemu, "Uid:");
        let gid = ids(qemu, "Gid:");
        f.check(
            uid.len() == 4 && uid.iter().all(|u| *u == uid[0]),
            format!("{name}: QEMU uids {uid:?}"),
        );
        let uid = uid.first().copied().unwrap_or(0);
        f.check(uid != NOBODY, format!("{name}: QEMU runs as nobody"));
        f.check(uid != 0, format!("{name}: QEMU runs as root"));
        f.check(
            recorded == Some(uid),
            format!(
                "{name}: QEMU's uid {uid} is not the recorded one: {}",
                info["idmap"]
            ),
        );
        f.check(
            gid.iter().all(|g| *g == uid),
            format!("{name}: QEMU gids {gid:?}, want {uid}"),
        );
        let groups = ids(qemu, "Groups:");
        f.check(
            groups.iter().all(|g| *g == uid || Some(*g) == kvm),
            format!("{name}: QEMU has the groups {groups:?}"),
        );
        match sink_pid(&d, name) {
            Some(sink) => f.check(
                ids(sink, "Uid:").iter().all(|u| *u == uid),
                format!(
                    "{name}: the log sink runs as {:?}, QEMU as {uid}",
                    ids(sink, "Uid:")
                ),
            ),
            None => f.check(false, format!("{name}: no console log sink")),
        }
        uids.push(uid);
    }
    let (u1, u2) = (uids[0], uids[1]);
    f.check(u1 != u2, format!("both QEMUs run as {u1}"));

    // What QEMU opens is its own (0600/0700) or root's.
    let root = d.root();
    let run = d.run();
    let (run1, run2) = (run.join("vms/v1"), run.join("vms/v2"));
    f.check(
        mode(&run1) == Some((0o700, u1)),
        format!("v1's run directory: {:?}", mode(&run1)),
    );
    f.check(
        mode(&run2) == Some((0o700, u2)),
        format!("v2's run directory: {:?}", mode(&run2)),
    );
    let inst2 = root.join("instances/v2");
    f.check(
        mode(&inst2) == Some((0o100, u2)),
        format!("v2's instance directory: {:?}", mode(&inst2)),
    );
    let disk2 = inst2.join("root.qcow2");
    f.check(
        mode(&disk2) == Some((0o600, u2)),
        format!("v2's root disk: {:?}", mode(&disk2)),
    );
    let vol2 = root.join("storage/local/block/v2data.raw");
    f.check(
        mode(&vol2) == Some((0o600, u2)),
        format!("v2's volume: {:?}", mode(&vol2)),
    );
    let nbd1 = run.join("storage/disks/v1--safe--v1data.sock");
    f.check(
        mode(&nbd1).map(|m| m.1) == Some(u1) && mode(&nbd1).is_some_and(|m| m.0 & 0o077 == 0),
        format!("v1's NBD socket: {:?}", mode(&nbd1)),
    );
    let inst1 = root.join("instances/v1");
    f.check(
        mode(&inst1) == Some((0o100, u1)),
        format!("v1's instance directory: {:?}", mode(&inst1)),
    );
    f.check(
        mode(&root.join("images")) == Some((0o700, 0)),
        format!("images/: {:?}", mode(&root.join("images"))),
    );

    // The image files: every file of both VM images.
    let mut image_files = Vec::new();
    for alias in ["vm/busybox", "vm/busybox-disk"] {
        let fp = d.info_image(alias)["fingerprint"]
            .as_str()
            .unwrap()
            .to_string();
        for e in std::fs::read_dir(root.join("images").join(&fp))
            .unwrap()
            .flatten()
        {
            if e.file_type().unwrap().is_file() {
                image_files.push(e.path());
            }
        }
    }
    assert!(image_files.len() >= 4, "{image_files:?}");

    let sockets = |dir: &Path| ["qmp.sock", "console.sock", "agent.sock"].map(|s| dir.join(s));
    // nobody reaches no VM's sockets, disks or image files, and cannot list images/.
    for s in sockets(&run1)
        .iter()
        .chain(sockets(&run2).iter())
        .chain([&nbd1])
    {
        f.refused(
            NOBODY,
            &format!("connects to {}", s.display()),
            connect_as(NOBODY, s),
        );
    }
    for file in [&disk2, &vol2].into_iter().chain(image_files.iter()) {
        f.refused(
            NOBODY,
            &format!("reads {}", file.display()),
            read_as(NOBODY, file),
        );
    }
    f.refused(
        NOBODY,
        "lists images/",
        as_host_user(NOBODY, &["ls", root.join("images").to_str().unwrap()]),
    );
    // One VM's uid reaches none of the other's; it reaches its own (the checks bite).
    for s in sockets(&run2).iter() {
        f.refused(
            u1,
            &format!("connects to {}", s.display()),
            connect_as(u1, s),
        );
    }
    for s in sockets(&run1).iter().chain([&nbd1]) {
        f.refused(
            u2,
            &format!("connects to {}", s.display()),
            connect_as(u2, s),
        );
    }
    // Whatever the instance directories hold (root disks, the image files QEMU reads).
    for (dir, other) in [(&inst1, u2), (&inst2, u1)] {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let file = e.path();
            f.refused(
                NOBODY,
                &format!("reads {}", file.display()),
                read_as(NOBODY, &file),
            );
            f.refused(
                other,
                &format!("reads {}", file.display()),
                read_as(other, &file),
            );
        }
    }
    f.refused(u1, "reads v2's root disk", read_as(u1, &disk2));
    f.refused(u1, "reads v2's volume", read_as(u1, &vol2));
    for file in &image_files {
        f.refused(u1, &format!("reads {}", file.display()), read_as(u1, file));
    }
    f.allowed(u2, "reads its root disk", read_as(u2, &disk2));
    f.allowed(
        u1,
        "connects to its agent socket",
        connect_as(u1, &run1.join("agent.sock")),
    );

    // Both boot; exec goes through the agent; the volumes are the guests' disks.
    wait_ready(&d, "v1");
    wait_ready(&d, "v2");
    assert_eq!(d.sh("v1", "hostname").1.trim(), "v1");
    assert_eq!(d.sh("v2", "hostname").1.trim(), "v2");
    let write = "dd if=/dev/urandom of=/dev/vdb bs=4096 count=16 conv=fsync 2>/dev/null && echo ok";
    assert_eq!(d.sh("v1", write).1.trim(), "ok", "v1 writes its NBD volume");
    let disk = "dd if=/dev/urandom of=/dev/vdb bs=4096 count=16 conv=fsync 2>/dev/null && \
                echo data > /root/f && sync && cat /root/f";
    assert_eq!(d.sh("v2", disk).1.trim(), "data", "v2 writes its disks");
    // The console.
    {
        let mut console = Framed::open(&d.socket, "GET", "/1.0/instances/v2/console", "");
        console.set_read_timeout(Duration::from_secs(30));
        d.sh("v2", "sleep 1; echo MARK-$((6*7)) > /dev/console");
        assert!(console.read_until("MARK-42").contains("MARK-42"));
    }

    // A daemon restart: QEMU is adopted, the NBD socket is served again to v1 alone.
    d.kill(libc::SIGKILL);
    d.spawn();
    assert_eq!((qemu_pid(&d, "v1"), qemu_pid(&d, "v2")), (q1, q2));
    assert_eq!(d.info("v1")["status"], "running");
    f.check(
        mode(&nbd1).map(|m| m.1) == Some(u1),
        format!("v1's NBD socket after the restart: {:?}", mode(&nbd1)),
    );
    f.refused(
        NOBODY,
        "connects to v1's NBD socket after a restart",
        connect_as(NOBODY, &nbd1),
    );
    assert_eq!(
        d.sh("v1", write).1.trim(),
        "ok",
        "v1 writes its NBD volume again"
    );
    // Under load a TCG guest may take longer than the agent's 10 s to take its first
    // command after the restart: wait for it to answer, then check what it kept.
    d.wait_for(
        "v2's agent after the restart",
        Duration::from_secs(60),
        || d.sh("v2", "true").0 == 0,
    );
    let (code, out) = d.sh("v2", "cat /root/f");
    assert_eq!(
        out.trim(),
        "data",
        "v2's exec after the restart: exit {code}"
    );

    // Stop and delete: nothing of theirs is left, and the volume is root's again.
    d.ok(&["stop", "v1", "--timeout", "30"]);
    d.ok(&["stop", "v2", "--timeout", "30"]);
    d.ok(&["delete", "v1"]);
    d.ok(&["delete", "v2"]);
    let left = owned_by(&d.dir, &[u1, u2]);
    f.check(
        left.is_empty(),
        format!("files of the deleted VMs' uids: {left:?}"),
    );
    let procs = processes_of(&d, &[u1, u2]);
    f.check(
        procs.is_empty(),
        format!("processes of the deleted VMs' uids: {procs:?}"),
    );
    f.check(
        mode(&vol2) == Some((0o600, 0)),
        format!("the detached volume: {:?}", mode(&vol2)),
    );
    f.check(!run1.exists() && !run2.exists(), "run directories left");
    // The freed uid goes to the next VM.
    d.ok(&["create", "vm/busybox", "v3", "--vm"]);
    let v3 = d.info("v3")["idmap"]["host_base"]
        .as_u64()
        .map(|u| u as u32);
    f.check(
        v3 == Some(u1.min(u2)),
        format!("v3 got {v3:?}, not the freed {}", u1.min(u2)),
    );

    // A VM stored without a host uid (made by an earlier version) gets one at daemon start.
    d.kill(libc::SIGTERM);
    {
        let db = rusqlite::Connection::open(root.join("vessel.db")).unwrap();
        db.execute(
            "UPDATE instances SET idmap_base = NULL, idmap_size = NULL, idmap_isolated = 0 \
             WHERE name = 'v3'",
            [],
        )
        .unwrap();
    }
    d.spawn();
    let v3 = &d.info("v3")["idmap"];
    f.check(
        v3["isolated"] == true && v3["host_base"].as_u64().is_some(),
        format!("v3 after a restart: {v3}"),
    );
    d.ok(&["delete", "v3"]);

    assert!(
        f.0.is_empty(),
        "{} findings:\n{}\n--- daemon log tail ---\n{}",
        f.0.len(),
        f.0.join("\n"),
        common::tail(&d.log(), 20)
    );
}
