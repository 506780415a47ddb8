//! Root disks through the real daemon: a container launched with `-l disk=SIZE` keeps its
//! writable layer on a disk of that size (an ext4 image on a loop device, a btrfs subvolume
//! with a quota, or an image in a dir pool), so writing past it fails inside the container
//! and costs the host no more than the disk; its files survive stop and start, file push,
//! pull and publish work on it stopped, it grows, and nothing of it (image, mount, loop
//! device, volume) is left after a delete, also after its daemon and monitor were SIGKILLed.
//! Bad sizes are refused with nothing made.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::Daemon;

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// Loop devices whose backing file lies under `dir`, as (device, file).
fn loops_under(dir: &Path) -> Vec<(String, String)> {
    let out = Command::new("losetup")
        .args(["-l", "-n", "-O", "NAME,BACK-FILE"])
        .output()
        .expect("losetup (util-linux) is needed");
    let prefix = dir.to_string_lossy().into_owned();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut cols = l.split_whitespace();
            Some((cols.next()?.to_string(), cols.next()?.to_string()))
        })
        .filter(|(_, f)| f.starts_with(&prefix))
        .collect()
}

/// Loop devices backing files of an instance's root disk (not a pool's own device).
fn root_loops(d: &Daemon) -> Vec<(String, String)> {
    loops_under(&d.dir)
        .into_iter()
        .filter(|(_, f)| !f.ends_with(".btrfs"))
        .collect()
}

/// Bytes allocated under `dir` on its own file system (`du -sx`).
fn allocated(dir: &Path) -> u64 {
    let out = Command::new("du")
        .args(["-sx", "-B1"])
        .arg(dir)
        .output()
        .expect("du");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("du said {out:?}"))
}

/// The mount options of the mount at `path`, if mounted.
fn mount_options(path: &Path) -> Option<String> {
    let p = path.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .map(|l| l.split(' ').collect::<Vec<_>>())
        .find(|f| f.get(4) == Some(&p.as_str()))
        .and_then(|f| f.get(5).map(|o| o.to_string()))
}

/// Mounts under an instance's directory.
fn instance_mounts(d: &Daemon, name: &str) -> Vec<String> {
    let dir = d.root().join("instances").join(name);
    let prefix = format!("{}/", dir.display());
    d.mounts()
        .into_iter()
        .filter(|m| m.starts_with(&prefix))
        .collect()
}

/// Waits until nothing of instance `name` is mounted and no loop device backs a root disk.
#[track_caller]
fn wait_released(d: &Daemon, name: &str) {
    d.wait_for(
        &format!("{name}'s mounts and loop devices to go"),
        Duration::from_secs(15),
        || instance_mounts(d, name).is_empty() && root_loops(d).is_empty(),
    );
}

/// The root disk as `vessel info` reports it.
fn root_disk(d: &Daemon, name: &str) -> serde_json::Value {
    d.info(name)["root_disk"].clone()
}

/// `dd` of `mib` MiB into the container: (exit code, what dd said).
fn fill(d: &Daemon, name: &str, path: &str, mib: u32) -> (i32, String) {
    d.sh(
        name,
        &format!("dd if=/dev/zero of={path} bs=1M count={mib} conv=fsync 2>&1"),
    )
}

fn monitor_pid(d: &Daemon, name: &str) -> i32 {
    std::fs::read_to_string(d.run().join("monitors").join(format!("{name}.pid")))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} has no monitor pid file"))
}

#[test]
fn a_sized_root_fills_up_inside_survives_restarts_and_goes_with_its_instance() {
    let d = Daemon::start();
    d.busybox();
    let image = d.root().join("instances/c1/root.img");
    let before = allocated(&d.dir);
    d.ok(&[
        "launch",
        "busybox",
        "c1",
        "-l",
        "disk=64MiB",
        "--",
        "sleep",
        "3600",
    ]);
    // A sparse, private ext4 image on an autoclear loop device, mounted nosuid,nodev.
    let md = std::fs::metadata(&image).expect("the root disk's image");
    assert_eq!(md.len(), 64 << 20);
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&md.permissions()) & 0o777,
        0o600
    );
    let loops = root_loops(&d);
    assert_eq!(loops.len(), 1, "{loops:?}");
    assert_eq!(loops[0].1, image.display().to_string());
    let autoclear = Command::new("losetup")
        .args(["-n", "-O", "AUTOCLEAR", &loops[0].0])
        .output()
        .expect("losetup");
    assert_eq!(String::from_utf8_lossy(&autoclear.stdout).trim(), "1");
    let opts = mount_options(&d.root().join("instances/c1/disk")).expect("the disk is mounted");
    assert!(opts.contains("nosuid") && opts.contains("nodev"), "{opts}");
    let disk = root_disk(&d, "c1");
    assert_eq!(disk["size_bytes"], 64 << 20);
    assert_eq!(disk["kind"], "ext4 image");
    assert!(disk["used_bytes"].as_u64().unwrap() < 1 << 20, "{disk}");

    // Writing past the size fails inside; the host paid for the image, no more.
    let (code, out) = fill(&d, "c1", "/big", 100);
    assert_ne!(code, 0, "100 MiB fit into a 64 MiB root: {out}");
    assert!(out.contains("No space left on device"), "{out}");
    let grown = allocated(&d.dir).saturating_sub(before);
    assert!(
        grown <= (64 << 20) + (4 << 20),
        "the daemon's directory grew by {grown} bytes for a 64 MiB root disk"
    );
    let used = root_disk(&d, "c1")["used_bytes"].as_u64().unwrap();
    assert!(used > 40 << 20 && used <= 64 << 20, "used {used}");
    // The daemon and other instances are unaffected.
    d.ok(&["launch", "busybox", "c2", "--", "sleep", "3600"]);
    assert_eq!(fill(&d, "c2", "/f", 8).0, 0);
    // Full to the last block, it starts again writable, and files can be removed.
    let (_, out) = d.sh(
        "c1",
        "i=0; while echo x > /f$i; do i=$((i+1)); done 2>&1; df /",
    );
    assert!(out.contains("100%"), "{out}");
    d.ok(&["restart", "c1", "--force"]);
    let (code, out) = d.sh("c1", "{ rm /big /f* && echo kept > /keep; } 2>&1");
    assert_eq!(code, 0, "{out}");

    // The files survive a stop and a start; the disk is unmounted while stopped.
    d.ok(&["stop", "c1", "--force"]);
    wait_released(&d, "c1");
    d.ok(&["start", "c1"]);
    assert_eq!(d.sh("c1", "cat /keep").1.trim(), "kept");
    d.ok(&["stop", "c1", "--force"]);
    wait_released(&d, "c1");

    // Stopped: push, pull and publish mount the disk and unmount it again.
    let local = d.dir.join("pushed");
    std::fs::write(&local, b"pushed").unwrap();
    d.ok(&["file", "push", local.to_str().unwrap(), "c1/pushed"]);
    wait_released(&d, "c1");
    assert_eq!(d.ok(&["file", "pull", "c1/keep", "-"]).trim(), "kept");
    wait_released(&d, "c1");
    d.ok(&["publish", "c1", "--alias", "c1-image"]);
    wait_released(&d, "c1");
    d.ok(&["launch", "c1-image", "c3", "--", "sleep", "3600"]);
    assert_eq!(d.sh("c3", "cat /keep /pushed").1, "kept\npushed");

    // It grows while stopped (an ext4 image never shrinks), and is used at its new size.
    let e = d.fails(&["resize", "c1", "32MiB"]);
    assert!(e.contains("only grows"), "{e}");
    d.ok(&["resize", "c1", "96MiB"]);
    wait_released(&d, "c1");
    assert_eq!(std::fs::metadata(&image).unwrap().len(), 96 << 20);
    let disk = root_disk(&d, "c1");
    assert_eq!(disk["size_bytes"], 96 << 20);
    assert!(disk["used_bytes"].as_u64().unwrap() < 1 << 20, "{disk}");
    d.ok(&["start", "c1"]);
    assert_eq!(d.sh("c1", "cat /keep").1.trim(), "kept");
    let (code, _) = fill(&d, "c1", "/big", 70);
    assert_eq!(code, 0, "70 MiB did not fit into the grown 96 MiB root");
    let (code, out) = fill(&d, "c1", "/big2", 40);
    assert_ne!(code, 0, "110 MiB fit into a 96 MiB root: {out}");
    let e = d.fails(&["resize", "c2", "1GiB"]);
    assert!(e.contains("no root disk of its own"), "{e}");

    // Deleting it leaves no image, mount or loop device.
    d.ok(&["delete", "--force", "c1", "c2", "c3"]);
    wait_released(&d, "c1");
    assert!(!image.exists());
    assert!(!d.root().join("instances/c1").exists());
}

#[test]
fn a_root_in_a_btrfs_pool_has_a_quota_and_one_in_a_dir_pool_an_image() {
    let d = Daemon::start();
    d.busybox();
    d.ok(&[
        "storage", "pool", "create", "fast", "btrfs", "--size", "300MiB",
    ]);
    d.ok(&[
        "launch",
        "busybox",
        "b1",
        "--storage",
        "fast",
        "-l",
        "disk=64MiB",
        "--",
        "sleep",
        "3600",
    ]);
    let vol = json(&d.ok(&[
        "storage", "volume", "info", "fast", "b1-root", "--format", "json",
    ]));
    assert_eq!(vol["content"], "filesystem");
    assert_eq!(vol["size_bytes"], 64 << 20);
    assert_eq!(vol["attached_to"][0]["instance"], "b1");
    let disk = root_disk(&d, "b1");
    assert_eq!(disk["kind"], "btrfs subvolume");
    assert_eq!(disk["pool"], "fast");
    // The subvolume is bound under the root: no loop device of its own.
    let opts = mount_options(&d.root().join("instances/b1/disk")).expect("bound");
    assert!(opts.contains("nosuid") && opts.contains("nodev"), "{opts}");
    assert!(root_loops(&d).is_empty());
    let (code, out) = fill(&d, "b1", "/big", 100);
    assert_ne!(code, 0, "100 MiB fit into a 64 MiB quota: {out}");
    assert!(
        out.contains("Disk quota exceeded") || out.contains("No space left on device"),
        "{out}"
    );
    let used = root_disk(&d, "b1")["used_bytes"].as_u64().unwrap();
    assert!(used > 40 << 20 && used <= 65 << 20, "used {used}");
    // The volume is the instance's alone.
    d.ok(&["create", "busybox", "other", "--", "sleep", "3600"]);
    let e = d.fails(&[
        "storage", "volume", "attach", "fast", "b1-root", "other", "/mnt",
    ]);
    assert!(e.contains("root disk of \"b1\""), "{e}");
    let e = d.fails(&["storage", "volume", "delete", "fast", "b1-root"]);
    assert!(e.contains("attached to b1"), "{e}");
    // A quota shrinks, but not below what it holds.
    d.ok(&["stop", "b1", "--force"]);
    wait_released(&d, "b1");
    let e = d.fails(&["resize", "b1", "32MiB"]);
    assert!(e.contains("holds"), "{e}");
    d.ok(&["start", "b1"]);
    // Started again with its quota full, it is writable (overlayfs got the reserve back for
    // its work directory), and files can be removed; btrfs frees them at its next commit.
    let (code, out) = d.sh(
        "b1",
        "{ rm /big && sync && echo kept > /keep && sync; } 2>&1",
    );
    assert_eq!(code, 0, "{out}");
    d.ok(&["stop", "b1", "--force"]);
    wait_released(&d, "b1");
    // The freed extents leave its qgroup once btrfs's cleaner has dropped the file, which a
    // loaded machine may do a few commits later.
    d.wait_for("btrfs to free /big", Duration::from_secs(60), || {
        root_disk(&d, "b1")["used_bytes"].as_u64().unwrap() < 30 << 20
    });
    d.ok(&["resize", "b1", "32MiB"]);
    assert_eq!(
        json(&d.ok(&["storage", "volume", "info", "fast", "b1-root", "--format", "json",]))
            ["size_bytes"],
        32 << 20
    );
    let local = d.dir.join("pushed");
    std::fs::write(&local, b"pushed").unwrap();
    d.ok(&["file", "push", local.to_str().unwrap(), "b1/pushed"]);
    assert_eq!(d.ok(&["file", "pull", "b1/keep", "-"]).trim(), "kept");
    d.ok(&["publish", "b1", "--alias", "b1-image"]);
    wait_released(&d, "b1");
    d.ok(&["start", "b1"]);
    assert_eq!(d.sh("b1", "cat /keep /pushed").1, "kept\npushed");
    let (code, out) = fill(&d, "b1", "/big", 40);
    assert_ne!(code, 0, "40 MiB fit into a 32 MiB quota: {out}");

    // A dir pool holds an ext4 image as a block volume.
    d.ok(&["storage", "pool", "create", "local", "dir"]);
    d.ok(&[
        "launch",
        "busybox",
        "d1",
        "--storage",
        "local",
        "-l",
        "disk=64MiB",
        "--",
        "sleep",
        "3600",
    ]);
    let raw = d.root().join("storage/local/block/d1-root.raw");
    let loops = root_loops(&d);
    assert_eq!(loops.len(), 1, "{loops:?}");
    assert_eq!(loops[0].1, raw.display().to_string());
    let (code, out) = fill(&d, "d1", "/big", 100);
    assert_ne!(code, 0, "100 MiB fit into a 64 MiB root: {out}");
    assert!(out.contains("No space left on device"), "{out}");
    assert_eq!(root_disk(&d, "d1")["pool"], "local");
    d.ok(&["stop", "d1", "--force"]);
    d.ok(&["resize", "d1", "80MiB"]);
    assert_eq!(std::fs::metadata(&raw).unwrap().len(), 80 << 20);

    // Deleting the instances deletes their root volumes, with nothing left mounted.
    d.ok(&["delete", "--force", "b1", "d1", "other"]);
    wait_released(&d, "b1");
    wait_released(&d, "d1");
    assert!(!raw.exists());
    assert!(!d.root().join("storage/fast/fs/b1-root").exists());
    for pool in ["fast", "local"] {
        let vols = json(&d.ok(&["storage", "volume", "list", pool, "--format", "json"]));
        assert_eq!(vols, serde_json::json!([]), "{pool}");
        d.ok(&["storage", "pool", "delete", pool]);
    }
    assert!(loops_under(&d.dir).is_empty(), "{:?}", loops_under(&d.dir));
}

#[test]
fn killed_daemons_and_monitors_leave_no_mount_or_loop_device() {
    let mut d = Daemon::start();
    d.busybox();
    d.ok(&[
        "launch",
        "busybox",
        "k1",
        "-l",
        "disk=32MiB",
        "--",
        "sleep",
        "3600",
    ]);
    assert_eq!(d.sh("k1", "echo kept > /keep").0, 0);

    // A SIGKILLed monitor: the daemon sees it go and removes what it left.
    let monitor = monitor_pid(&d, "k1");
    // SAFETY: kill takes plain integers; the pid is the instance's monitor.
    unsafe { libc::kill(monitor, libc::SIGKILL) };
    d.wait_for("k1 to stop", Duration::from_secs(20), || {
        d.info("k1")["status"] == "stopped"
    });
    wait_released(&d, "k1");
    assert!(d.cgroup_pids().is_empty(), "{:?}", d.cgroup_pids());
    d.ok(&["start", "k1"]);
    assert_eq!(d.sh("k1", "cat /keep").1.trim(), "kept");

    // A SIGKILLed daemon, then its monitor while it is away: the next daemon cleans up.
    d.kill(libc::SIGKILL);
    let monitor = monitor_pid(&d, "k1");
    // SAFETY: as above.
    unsafe { libc::kill(monitor, libc::SIGKILL) };
    assert!(
        !instance_mounts(&d, "k1").is_empty(),
        "the killed monitor's mounts stay until a daemon looks"
    );
    d.spawn();
    d.wait_for("k1 to be stopped", Duration::from_secs(20), || {
        d.info("k1")["status"] == "stopped"
    });
    wait_released(&d, "k1");
    assert!(d.cgroup_pids().is_empty(), "{:?}", d.cgroup_pids());

    // A SIGKILLed daemon that had a stopped instance's disk mounted (for file work): the
    // mount and its loop device go at the next start.
    d.kill(libc::SIGKILL);
    let image = d.root().join("instances/k1/root.img");
    let disk = d.root().join("instances/k1/disk");
    let out = Command::new("mount")
        .args(["-o", "loop,nosuid,nodev"])
        .arg(&image)
        .arg(&disk)
        .output()
        .expect("mount");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(root_loops(&d).len(), 1);
    d.spawn();
    wait_released(&d, "k1");

    // It still runs with its files, and a delete while it runs leaves nothing.
    d.ok(&["start", "k1"]);
    assert_eq!(d.sh("k1", "cat /keep").1.trim(), "kept");
    d.kill(libc::SIGKILL);
    d.spawn();
    assert_eq!(d.info("k1")["status"], "running");
    d.ok(&["delete", "--force", "k1"]);
    wait_released(&d, "k1");
    assert!(!d.root().join("instances/k1").exists());
    assert!(d.monitor_pids().is_empty());
}

#[test]
fn bad_sizes_and_places_are_refused_with_nothing_made() {
    let d = Daemon::start();
    d.busybox();
    d.ok(&[
        "storage",
        "pool",
        "create",
        "r",
        "raid",
        "--members",
        "2",
        "--size",
        "64MiB",
        "--level",
        "1",
    ]);
    d.ok(&[
        "storage", "pool", "create", "fast", "btrfs", "--size", "300MiB",
    ]);
    let instances = d.root().join("instances");
    let nothing_made = |what: &str| {
        let list = json(&d.ok(&["list", "--format", "json"]));
        assert_eq!(list, serde_json::json!([]), "{what}: {list}");
        let left: Vec<PathBuf> = std::fs::read_dir(&instances)
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{what}: {left:?}");
        for pool in ["r", "fast"] {
            let vols = json(&d.ok(&["storage", "volume", "list", pool, "--format", "json"]));
            assert_eq!(vols, serde_json::json!([]), "{what}: {pool}");
        }
        assert!(root_loops(&d).is_empty(), "{what}");
    };
    for (args, want) in [
        (vec!["-l", "disk=0"], "must be more than 0"),
        (vec!["-l", "disk=lots"], "unknown unit 'lots'"),
        (vec!["-l", "disk=8MiB"], "16 MiB"),
        (vec!["-l", "disk=100TiB"], "has free"),
        (vec!["-l", "disk=2PiB"], "unknown unit 'PiB'"),
        (vec!["--storage", "fast"], "-l disk=SIZE"),
        (
            vec!["--storage", "fast", "-l", "disk=10GiB"],
            "more than pool \"fast\" has free",
        ),
        (
            vec!["--storage", "nope", "-l", "disk=64MiB"],
            "pool \"nope\" not found",
        ),
        (
            vec!["--storage", "r", "-l", "disk=32MiB"],
            "no nbd, ublk or dm",
        ),
    ] {
        let mut cmd = vec!["launch", "busybox", "x1"];
        cmd.extend(&args);
        cmd.extend(["--", "sleep", "3600"]);
        let e = d.fails(&cmd);
        assert!(e.contains(want), "{args:?}: {want:?} not in {e}");
        nothing_made(&format!("{args:?}"));
    }
    // The API refuses what the CLI would not send.
    let (code, body) = common::http(
        &d.socket,
        "POST",
        "/1.0/instances",
        Some(r#"{"name":"x1","image":"busybox","limits":{"disk":0},"command":["sleep","1"]}"#),
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("16 MiB"), "{body}");
    let (code, body) = common::http(
        &d.socket,
        "POST",
        "/1.0/instances",
        Some(r#"{"name":"x1","image":"busybox","limits":{"disk":"2GiB"}}"#),
    );
    assert_eq!(code, 400, "{body}");
    nothing_made("the API");
    let e = d.fails(&["resize", "nope", "1GiB"]);
    assert!(e.contains("not found"), "{e}");
    d.ok(&[
        "launch",
        "busybox",
        "s1",
        "-l",
        "disk=32MiB",
        "--",
        "sleep",
        "3600",
    ]);
    let e = d.fails(&["resize", "s1", "0"]);
    assert!(e.contains("invalid size 0"), "{e}");
    let e = d.fails(&["resize", "s1", "100TiB"]);
    assert!(e.contains("has free"), "{e}");
    assert_eq!(root_disk(&d, "s1")["size_bytes"], 32 << 20);
    d.ok(&["delete", "--force", "s1"]);
    wait_released(&d, "s1");
    nothing_made("after s1");
}

/// `move --pool`: a stopped container's root disk goes from its own image into a dir pool,
/// then into a btrfs pool, its files (owners and all) along; the old root goes each time.
/// Refused: running, snapshots, no size, the pool it is in.
#[test]
fn a_stopped_containers_root_moves_between_pools_with_its_files() {
    let d = Daemon::start();
    d.busybox();
    d.ok(&["storage", "pool", "create", "slow", "dir"]);
    d.ok(&[
        "storage", "pool", "create", "fast", "btrfs", "--size", "300MiB",
    ]);
    d.ok(&[
        "create",
        "busybox",
        "m",
        "--no-network",
        "-l",
        "disk=64MiB",
        "--",
        "sleep",
        "3600",
    ]);
    d.ok(&["start", "m"]);
    let (code, out) = d.sh(
        "m",
        "echo kept > /root/f && mkdir -p /srv/x && chown 1234:5678 /srv/x && \
         test -e /bin/true && rm /bin/true",
    );
    assert_eq!(code, 0, "{out}");
    let e = d.fails(&["move", "m", "--pool", "slow"]);
    assert!(e.contains("stop it first"), "{e}");
    d.ok(&["stop", "-f", "m"]);
    d.ok(&["snapshot", "create", "m", "s"]);
    let e = d.fails(&["move", "m", "--pool", "slow"]);
    assert!(e.contains("snapshot"), "{e}");
    // Exported with --snapshots, the snapshot's root disk travels as its files and comes
    // back as a new image of the daemon's making, of the same size, whiteouts and owners
    // kept (moved to the new instance's ids). (That an image in an archive is refused is
    // `carried_list`'s unit test.)
    let file = d.dir.join("m.vessel");
    d.ok(&["export", "m", file.to_str().unwrap(), "--snapshots"]);
    d.ok(&["import", file.to_str().unwrap(), "m3"]);
    let snap = d.root().join("instances/m3/snapshots/s/root.img");
    assert_eq!(std::fs::metadata(&snap).unwrap().len(), 64 << 20);
    d.ok(&["start", "m3"]);
    let (code, out) = d.sh("m3", "echo later > /root/f && touch /bin/true");
    assert_eq!(code, 0, "{out}");
    d.ok(&["stop", "-f", "m3"]);
    d.ok(&["snapshot", "restore", "m3", "s", "--force"]);
    d.ok(&["start", "m3"]);
    let (code, out) = d.sh("m3", "cat /root/f && stat -c %u:%g /srv/x && ls /bin/true");
    assert!(
        code != 0,
        "/bin/true, deleted before the snapshot, is back: {out}"
    );
    assert!(out.contains("kept") && out.contains("1234:5678"), "{out}");
    d.ok(&["delete", "-f", "m3"]);
    d.ok(&["snapshot", "delete", "m", "s"]);
    let image = d.root().join("instances/m/root.img");
    assert!(image.exists());
    let check = |pool: &str| {
        assert_eq!(d.info("m")["storage"], pool);
        d.ok(&["start", "m"]);
        let (code, out) = d.sh("m", "cat /root/f && stat -c %u:%g /srv/x && ls /bin/true");
        assert!(code != 0, "/bin/true, deleted, is back: {out}");
        assert!(out.contains("kept") && out.contains("1234:5678"), "{out}");
        let disk = json(&d.ok(&["info", "m", "--format", "json"]))["root_disk"].clone();
        assert_eq!(disk["size_bytes"], 64 << 20, "{disk}");
        d.ok(&["stop", "-f", "m"]);
    };
    d.ok(&["move", "m", "--pool", "slow"]);
    assert!(!image.exists(), "the old root image is gone");
    check("slow");
    let e = d.fails(&["move", "m", "--pool", "slow"]);
    assert!(e.contains("already"), "{e}");
    d.ok(&["move", "m", "--pool", "fast"]);
    let e = d.fails(&["storage", "volume", "info", "slow", "m-root"]);
    assert!(e.contains("not found"), "the old root volume is gone: {e}");
    check("fast");
    // A copy of it gets a root volume of its own in the same pool, with the same files.
    d.ok(&["copy", "m", "m2"]);
    d.ok(&["storage", "volume", "info", "fast", "m2-root"]);
    d.ok(&["start", "m2"]);
    let (code, out) = d.sh("m2", "cat /root/f && stat -c %u:%g /srv/x && ls /bin/true");
    assert!(
        code != 0 && out.contains("kept") && out.contains("1234:5678"),
        "{out}"
    );
    d.ok(&["delete", "-f", "m2"]);
    // A container without a size has no root disk to move.
    d.ok(&["create", "busybox", "plain", "--no-network"]);
    let e = d.fails(&["move", "plain", "--pool", "slow"]);
    assert!(e.contains("limits.disk"), "{e}");
    for n in ["m", "plain"] {
        d.ok(&["delete", "-f", n]);
    }
}
