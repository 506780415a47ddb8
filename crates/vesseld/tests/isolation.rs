//! Isolation of instances from host users and from each other: who may reach the daemon's
//! state, per-container id ranges, and image layers stacked through idmapped mounts.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::Daemon;
use sha2::{Digest, Sha256};

/// Runs `args` as the unprivileged host user nobody (no groups); returns (exit code, stderr).
/// Through a shell: setpriv keeps its capabilities until its own execve, so the kernel would
/// check the path of a program setpriv starts with root's capabilities.
fn as_nobody(args: &[&str]) -> (i32, String) {
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .args(["/bin/sh", "-c", "exec \"$@\"", "sh"])
        .args(args)
        .output()
        .expect("run setpriv (util-linux)");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Asserts that nobody's `args` fails with EACCES ("Permission denied").
#[track_caller]
fn refused(args: &[&str]) {
    let (code, err) = as_nobody(args);
    assert!(
        code != 0 && err.contains("Permission denied"),
        "{args:?} as nobody: exit {code}, {err:?} (want EACCES)"
    );
}

/// A docker-archive image of one layer holding privileged binaries: `usr/bin/suidcat`
/// (setuid root), `usr/bin/sgcat` (setgid shadow) and `usr/bin/capcat` (cap_dac_override),
/// copies of the host's cat, plus `home/app/file` owned by 1000:1000 and busybox as /bin.
fn hostile_archive(work: &Path) -> PathBuf {
    let root = work.join("rootfs");
    for d in ["bin", "usr/bin", "etc", "home/app"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    for a in ["sh", "cat", "sleep", "stat", "id", "touch", "ls"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(a)).unwrap();
    }
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(root.join("home/app/file"), "mine\n").unwrap();
    std::os::unix::fs::chown(root.join("home/app"), Some(1000), Some(1000)).unwrap();
    std::os::unix::fs::chown(root.join("home/app/file"), Some(1000), Some(1000)).unwrap();
    for (name, owner, group, mode) in [
        ("suidcat", 0, 0, 0o4755),
        ("sgcat", 0, 42, 0o2755),
        ("capcat", 0, 0, 0o755),
    ] {
        let p = root.join("usr/bin").join(name);
        std::fs::copy("/usr/bin/cat", &p).unwrap();
        std::os::unix::fs::chown(&p, Some(owner), Some(group)).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let st = Command::new("setcap")
        .args(["cap_dac_override+ep"])
        .arg(root.join("usr/bin/capcat"))
        .status()
        .expect("setcap (libcap2-bin)");
    assert!(st.success());
    let layer = work.join("layer.tar");
    let st = Command::new("tar")
        .args([
            "--xattrs",
            "--xattrs-include=security.capability",
            "--numeric-owner",
        ])
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&layer)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    let diff_id = hex::encode(Sha256::digest(std::fs::read(&layer).unwrap()));
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/bin/sh", "-c", "while :; do sleep 1; done"]},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{diff_id}")]},
    });
    std::fs::write(work.join("config.json"), config.to_string()).unwrap();
    let manifest = serde_json::json!([{
        "Config": "config.json", "RepoTags": ["localhost/hostile:1"], "Layers": ["layer.tar"],
    }]);
    std::fs::write(work.join("manifest.json"), manifest.to_string()).unwrap();
    let archive = work.join("hostile.tar");
    let st = Command::new("tar")
        .arg("-C")
        .arg(work)
        .arg("-cf")
        .arg(&archive)
        .args(["manifest.json", "config.json", "layer.tar"])
        .status()
        .unwrap();
    assert!(st.success());
    archive
}

/// The stored layer directory holding `rel`.
fn layer_with(d: &Daemon, rel: &str) -> PathBuf {
    std::fs::read_dir(d.root().join("images/layers"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.join(rel).exists())
        .unwrap_or_else(|| panic!("no stored layer has {rel}"))
}

/// The host uid range (first, count) of a running instance's init.
fn uid_map(d: &Daemon, name: &str) -> (u32, u32) {
    let pid = d.info(name)["state"]["pid"].as_i64().expect("init pid");
    let map = std::fs::read_to_string(format!("/proc/{pid}/uid_map")).unwrap();
    let f: Vec<u32> = map.split_whitespace().map(|x| x.parse().unwrap()).collect();
    assert_eq!(f[0], 0, "{map}");
    (f[1], f[2])
}

fn mode(p: &Path) -> (u32, u32) {
    let md = std::fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    (md.mode() & 0o7777, md.uid())
}

#[test]
fn host_users_reach_no_instance_layer_store_or_run_directory() {
    let d = Daemon::start();
    d.busybox();
    let work = d.dir.join("hostile");
    std::fs::create_dir_all(&work).unwrap();
    let archive = hostile_archive(&work);
    d.ok(&[
        "image",
        "import",
        archive.to_str().unwrap(),
        "--alias",
        "hostile",
    ]);
    d.ok(&["launch", "hostile", "h1"]);
    d.ok(&["launch", "busybox", "c2"]);
    d.ok(&["storage", "pool", "create", "local", "dir"]);
    d.ok(&["storage", "volume", "create", "local", "data"]);
    // Container root plants a setuid-root (in the container) copy of busybox.
    let (code, _) = d.sh("h1", "cp /bin/busybox /suid && chmod 4755 /suid");
    assert_eq!(code, 0);
    let root = d.root();
    let run = d.dir.join("run");
    let layer = layer_with(&d, "usr/bin/suidcat");
    // The privileged files are stored as the image has them: only the modes keep them away.
    assert_eq!(mode(&layer.join("usr/bin/suidcat")).0, 0o4755);
    let s = |p: &Path| p.to_str().unwrap().to_string();
    for bin in ["suidcat", "sgcat", "capcat"] {
        refused(&[&s(&layer.join("usr/bin").join(bin)), "/etc/shadow"]);
    }
    refused(&[&s(&root.join("instances/h1/upper/suid")), "id"]);
    refused(&[&s(&root.join("instances/h1/rootfs/suid")), "id"]);
    refused(&["cat", &s(&root.join("instances/c2/rootfs/etc/passwd"))]);
    refused(&["cat", &s(&root.join("instances/c2/upper/etc/passwd"))]);
    refused(&["touch", &s(&root.join("instances/c2/rootfs/etc/passwd"))]);
    for dir in [
        root.join("images"),
        root.join("images/layers"),
        root.join("images/blobs"),
        root.join("instances"),
        root.join("instances/h1"),
        root.join("storage"),
        root.join("storage/local/fs"),
        run.clone(),
        run.join("monitors"),
        run.join("runtime"),
    ] {
        refused(&["ls", &s(&dir)]);
    }
    refused(&["cat", &s(&root.join("vessel.db"))]);
    refused(&["cat", &s(&root.join("instances/h1/console.log"))]);

    // Every directory nobody can enter (search permission) from the root, and why:
    // the root and instances/ lead containers' roots and QEMU to their own files, storage/
    // and a dir pool's root and block/ lead QEMU to its disks (images/ is root's alone).
    let mut enterable = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        let (m, uid) = mode(&dir);
        let x = if uid == 65534 { m & 0o100 } else { m & 0o001 };
        if x == 0 {
            continue;
        }
        enterable.push(dir.strip_prefix(&root).unwrap().to_path_buf());
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
        }
    }
    enterable.sort();
    let want: Vec<PathBuf> = [
        "",
        "instances",
        "storage",
        "storage/local",
        "storage/local/block",
    ]
    .iter()
    .map(PathBuf::from)
    .collect();
    assert_eq!(enterable, want);
    // Each instance's directory is its root's alone; its files are root's.
    let (base, _) = uid_map(&d, "h1");
    assert_eq!(mode(&root.join("instances/h1")), (0o100, base));
    assert_eq!(mode(&root.join("instances/h1/mnt")), (0o711, 0));
    for f in ["config.json", "monitor.json", "monitor.log", "console.log"] {
        assert_eq!(mode(&root.join("instances/h1").join(f)), (0o600, 0), "{f}");
    }
    assert_eq!(mode(&root.join("vessel.db")), (0o600, 0));
}

/// A device node in a container's root: opened in a privileged container (its root is the
/// host's), a name only in an unprivileged one, whose root is mounted `nodev` (the devices
/// cgroup of a v1 host allows 1:5 to both; a v2 host's enforces no list).
#[test]
fn an_unprivileged_root_opens_no_device_node() {
    let d = Daemon::start();
    d.busybox();
    d.ok(&["create", "busybox", "u1", "--", "sleep", "3600"]);
    d.ok(&[
        "create",
        "busybox",
        "p1",
        "--privileged",
        "--",
        "sleep",
        "3600",
    ]);
    for c in ["u1", "p1"] {
        // Left in the writable layer (by whatever means): the container's root may not open it.
        let node = d.root().join(format!("instances/{c}/upper/zero"));
        nix::sys::stat::mknod(
            &node,
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o666),
            nix::sys::stat::makedev(1, 5),
        )
        .unwrap_or_else(|e| panic!("mknod {}: {e}", node.display()));
        std::fs::set_permissions(&node, std::fs::Permissions::from_mode(0o666)).unwrap();
    }
    d.ok(&["start", "u1", "p1"]);
    let read = "head -c 3 /zero | wc -c 2>&1; head -c 3 /zero 2>&1 >/dev/null";
    assert_eq!(
        d.sh("p1", read),
        (0, "3\n".into()),
        "the privileged root opens it"
    );
    let (code, out) = d.sh("u1", read);
    assert!(
        code != 0 && out.starts_with("0\n") && out.contains("Permission denied"),
        "the unprivileged root opened a device node: exit {code}, {out:?}"
    );
    assert!(
        d.sh("u1", "grep ' / / ' /proc/self/mountinfo")
            .1
            .contains("nodev"),
        "root not nodev"
    );
}

#[test]
fn each_container_has_its_own_id_range_and_shares_volumes() {
    let d = Daemon::start();
    d.busybox();
    d.ok(&["storage", "pool", "create", "local", "dir"]);
    d.ok(&["storage", "volume", "create", "local", "shared"]);
    for c in ["a1", "a2"] {
        d.ok(&["create", "busybox", c, "--", "sleep", "3600"]);
        d.ok(&[
            "storage", "volume", "attach", "local", "shared", c, "/shared",
        ]);
    }
    d.ok(&[
        "create",
        "busybox",
        "s1",
        "--idmap-shared",
        "--",
        "sleep",
        "3600",
    ]);
    d.ok(&["start", "a1", "a2", "s1"]);
    let (r1, n1) = uid_map(&d, "a1");
    let (r2, n2) = uid_map(&d, "a2");
    assert_eq!((n1, n2), (65536, 65536));
    assert!(r1 + n1 <= r2 || r2 + n2 <= r1, "{r1} and {r2} overlap");
    assert!(r1 >= 1_065_536 && r2 >= 1_065_536, "above the shared range");
    assert_eq!(
        uid_map(&d, "s1"),
        (1_000_000, 65536),
        "the shared base range"
    );
    assert_eq!(d.info("s1")["idmap"]["isolated"], false);
    assert_eq!(d.info("a1")["idmap"]["isolated"], true);
    // Files of container root belong to that container's range on the host.
    assert_eq!(d.sh("a1", "touch /made-here").0, 0);
    assert_eq!(mode(&d.root().join("instances/a1/upper/made-here")).1, r1);
    // The shared volume: stored with container ids, root's in both, writable by both.
    assert_eq!(d.sh("a1", "echo one > /shared/f").0, 0);
    assert_eq!(d.sh("a2", "stat -c %u:%g /shared/f").1.trim(), "0:0");
    assert_eq!(d.sh("a1", "stat -c %u /shared").1.trim(), "0");
    assert_eq!(
        d.sh("a2", "echo two >> /shared/f && chown 1000 /shared/f")
            .0,
        0
    );
    assert_eq!(
        d.sh("a1", "stat -c %u /shared/f; cat /shared/f").1,
        "1000\none\ntwo\n"
    );
    let stored = d.root().join("storage/local/fs/shared/f");
    assert_eq!(
        std::fs::metadata(&stored).unwrap().uid(),
        1000,
        "unshifted on disk"
    );
    assert!(
        d.mounts().iter().all(|m| !m.contains("/mnt/")),
        "{:?}",
        d.mounts()
    );

    // Ranges survive a restart and are not reused while their instance exists.
    let mut d = d;
    d.kill(libc::SIGKILL);
    d.spawn();
    assert_eq!(d.info("a1")["idmap"]["host_base"], r1);
    assert_eq!(d.info("a2")["idmap"]["host_base"], r2);
    d.ok(&["create", "busybox", "a3"]);
    let r3 = d.info("a3")["idmap"]["host_base"].as_u64().unwrap() as u32;
    assert!(![r1, r2, 1_000_000].contains(&r3));
    d.ok(&["delete", "a1", "--force"]);
    d.ok(&["create", "busybox", "a4"]);
    assert_eq!(
        d.info("a4")["idmap"]["host_base"],
        r1,
        "a deleted instance's range is free again"
    );
    // A privileged container has no map; asking for one is refused.
    let err = d.fails(&["create", "busybox", "p1", "--privileged", "--idmap-shared"]);
    assert!(err.contains("cannot be used with"), "{err}");

    // Ten concurrent creations get ten distinct ranges.
    let children: Vec<_> = (0..10)
        .map(|i| d.spawn_vessel(&["create", "busybox", &format!("n{i}")]))
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut bases: Vec<u64> = (0..10)
        .map(|i| {
            d.info(&format!("n{i}"))["idmap"]["host_base"]
                .as_u64()
                .unwrap()
        })
        .collect();
    bases.sort();
    bases.dedup();
    assert_eq!(bases.len(), 10, "{bases:?}");
}

#[test]
fn layers_are_idmapped_not_copied_and_nothing_stays_mounted() {
    let mut d = Daemon::start();
    d.busybox();
    // A shifted copy left by an earlier version goes at start.
    let stale = d.root().join("images/layers/0123.shifted-1000000");
    std::fs::create_dir_all(stale.join("bin")).unwrap();
    d.kill(libc::SIGTERM);
    d.spawn();
    assert!(!stale.exists(), "stale shifted copy kept");

    let work = d.dir.join("hostile");
    std::fs::create_dir_all(&work).unwrap();
    let archive = hostile_archive(&work);
    d.ok(&[
        "image",
        "import",
        archive.to_str().unwrap(),
        "--alias",
        "img",
    ]);
    d.ok(&["launch", "img", "i1"]);
    // The container sees the image's own owners.
    assert_eq!(d.sh("i1", "stat -c %u:%g /bin /etc/passwd").1, "0:0\n0:0\n");
    assert_eq!(d.sh("i1", "stat -c %u:%g /home/app/file").1, "1000:1000\n");
    assert_eq!(d.sh("i1", "stat -c %a /usr/bin/suidcat").1, "4755\n");
    let (base, _) = uid_map(&d, "i1");
    let mounts = d.mounts();
    assert_eq!(mounts.len(), 1, "only the root while running: {mounts:?}");

    // File push and pull on the stopped instance map owners both ways.
    d.ok(&["stop", "i1", "--force"]);
    assert!(d.mounts().is_empty(), "{:?}", d.mounts());
    let local = d.dir.join("pushed");
    std::fs::write(&local, "x").unwrap();
    d.ok(&[
        "file",
        "push",
        local.to_str().unwrap(),
        "i1/home/app/pushed",
        "--uid",
        "1000",
        "--gid",
        "1000",
    ]);
    let upper = d.root().join("instances/i1/upper/home/app/pushed");
    assert_eq!(std::fs::metadata(&upper).unwrap().uid(), base + 1000);
    let back = d.dir.join("back");
    d.ok(&["file", "pull", "i1/home/app/file", back.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&back).unwrap(), "mine\n");
    assert!(d.mounts().is_empty(), "{:?}", d.mounts());

    // Publish: the new layer holds the container's own ids.
    d.ok(&["publish", "i1", "--alias", "pub"]);
    let layer = layer_with(&d, "home/app/pushed");
    assert_eq!(mode(&layer.join("home/app/pushed")).1, 1000);
    d.ok(&["launch", "pub", "i2"]);
    assert_eq!(d.sh("i2", "stat -c %u /home/app/pushed").1, "1000\n");

    // No copy of any layer was made.
    let mut stack = vec![d.root().join("images")];
    while let Some(p) = stack.pop() {
        for e in std::fs::read_dir(&p).into_iter().flatten().flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            assert!(!n.contains("shifted"), "{}", e.path().display());
            if e.file_type().unwrap().is_dir() && p.ends_with("images") {
                stack.push(e.path());
            }
        }
    }

    // A killed monitor leaves nothing mounted.
    let monitor = d.monitor_pids()[0];
    // SAFETY: kill takes plain integers.
    unsafe { libc::kill(monitor, libc::SIGKILL) };
    d.wait_for("i2 to stop", std::time::Duration::from_secs(20), || {
        d.info("i2")["status"] == "stopped"
    });
    d.wait_for(
        "the root to be unmounted",
        std::time::Duration::from_secs(10),
        || d.mounts().is_empty(),
    );

    // A staged mount left by a crash is removed by the next daemon.
    let staged = d.root().join("instances/i2/mnt/layer-0");
    std::fs::create_dir_all(&staged).unwrap();
    let st = Command::new("mount")
        .args(["--bind", "-o", "ro"])
        .arg(&layer)
        .arg(&staged)
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(d.mounts().len(), 1);
    d.kill(libc::SIGKILL);
    d.spawn();
    assert!(d.mounts().is_empty(), "{:?}", d.mounts());
    d.ok(&["delete", "i2"]);
    assert!(
        layer.join("home/app/pushed").exists(),
        "the layer is intact"
    );
}
