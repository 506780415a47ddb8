//! Storage through the real daemon: dir, btrfs and raid pools, volumes mounted into
//! containers, snapshots, restore and clones, NBD exports read and written by real clients,
//! raid member failure and rebuild, and bad input that changes nothing.

mod common;
#[path = "../../vessel-nbd/tests/common/nbdsh.rs"]
mod nbdsh;

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{tool, Daemon};
use nbdsh::NbdSession;

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

fn pool_names(d: &Daemon) -> Vec<String> {
    json(&d.ok(&["storage", "pool", "list", "--format", "json"]))
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn dir_pool_volumes_are_shared_snapshotted_restored_and_cloned() {
    let d = Daemon::start();
    d.busybox();
    d.ok(&["storage", "pool", "create", "local", "dir"]);
    let pool = json(&d.ok(&["storage", "pool", "info", "local", "--format", "json"]));
    assert_eq!(pool["status"], "online");
    assert!(pool["size_bytes"].as_u64().unwrap() > 0);
    d.ok(&["storage", "volume", "create", "local", "data"]);
    for c in ["c1", "c2"] {
        d.ok(&["create", "busybox", c, "--", "sleep", "3600"]);
    }
    d.ok(&[
        "storage",
        "volume",
        "attach",
        "local",
        "data",
        "c1",
        "/srv/data",
    ]);
    d.ok(&[
        "storage",
        "volume",
        "attach",
        "local",
        "data",
        "c2",
        "/mnt/shared",
    ]);
    d.ok(&["start", "c1", "c2"]);
    // Unprivileged container root writes, the neighbour reads the same file.
    let (code, _) = d.sh(
        "c1",
        "echo v1 > /srv/data/note && head -c 200000 /dev/urandom > /srv/data/blob",
    );
    assert_eq!(code, 0);
    let (code, out) = d.sh("c2", "cat /mnt/shared/note");
    assert_eq!((code, out.trim()), (0, "v1"));
    let vol = json(&d.ok(&[
        "storage", "volume", "info", "local", "data", "--format", "json",
    ]));
    assert!(vol["used_bytes"].as_u64().unwrap() >= 200_000, "{vol}");
    assert_eq!(vol["attached_to"].as_array().unwrap().len(), 2);
    // Attached volumes cannot be deleted; running users block a restore.
    let err = d.fails(&["storage", "volume", "delete", "local", "data"]);
    assert!(err.contains("attached to c1, c2"), "{err}");
    d.ok(&["storage", "volume", "snapshot", "local", "data", "first"]);
    assert_eq!(d.sh("c1", "echo v2 > /srv/data/note").0, 0);
    let err = d.fails(&["storage", "volume", "restore", "local", "data", "first"]);
    assert!(err.contains("stop them"), "{err}");
    d.ok(&["stop", "c1", "c2", "--force"]);
    // Project data's volumes old and restoring (stored as data.old and data.restoring)
    // are not in the way of default's volume data being restored.
    d.ok(&["project", "create", "data"]);
    let theirs = |v: &str| d.root().join(format!("storage/local/fs/data.{v}/keep"));
    for v in ["old", "restoring"] {
        d.ok(&[
            "storage",
            "volume",
            "create",
            "local",
            v,
            "--project",
            "data",
        ]);
        std::fs::write(theirs(v), v).unwrap();
    }
    d.ok(&["storage", "volume", "restore", "local", "data", "first"]);
    for v in ["old", "restoring"] {
        assert_eq!(
            std::fs::read_to_string(theirs(v)).ok().as_deref(),
            Some(v),
            "restoring default's volume data removed project data's volume {v}"
        );
        d.ok(&[
            "storage",
            "volume",
            "delete",
            "local",
            v,
            "--project",
            "data",
        ]);
    }
    d.ok(&["project", "delete", "data"]);
    // A clone of the snapshot is its own volume.
    d.ok(&[
        "storage",
        "volume",
        "create",
        "local",
        "copy",
        "--source",
        "data/first",
    ]);
    d.ok(&[
        "storage", "volume", "attach", "local", "copy", "c2", "/copy",
    ]);
    d.ok(&["start", "c1", "c2"]);
    assert_eq!(d.sh("c1", "cat /srv/data/note").1.trim(), "v1");
    assert_eq!(
        d.sh("c2", "echo mine > /copy/note && cat /mnt/shared/note")
            .1
            .trim(),
        "v1"
    );
    assert_eq!(d.sh("c1", "cat /srv/data/note").1.trim(), "v1");
    // Deleting an instance detaches its volumes; the data stays.
    d.ok(&["delete", "--force", "c1", "c2"]);
    let vol = json(&d.ok(&[
        "storage", "volume", "info", "local", "data", "--format", "json",
    ]));
    assert!(vol["attached_to"].as_array().unwrap().is_empty(), "{vol}");
    let err = d.fails(&["storage", "pool", "delete", "local"]);
    assert!(err.contains("still has volumes"), "{err}");
    for v in ["copy", "data"] {
        d.ok(&["storage", "volume", "delete", "local", v]);
    }
    d.ok(&["storage", "pool", "delete", "local"]);
    assert!(pool_names(&d).is_empty());
    assert!(!d.root().join("storage/local").exists());
}

#[test]
fn btrfs_pool_enforces_quotas_and_snapshots_subvolumes() {
    let d = Daemon::start();
    d.busybox();
    d.ok(&[
        "storage", "pool", "create", "fast", "btrfs", "--size", "300MiB",
    ]);
    let pool = json(&d.ok(&["storage", "pool", "info", "fast", "--format", "json"]));
    assert_eq!(pool["driver"], "btrfs");
    assert!(pool["size_bytes"].as_u64().unwrap() > 200 << 20, "{pool}");
    d.ok(&[
        "storage", "volume", "create", "fast", "logs", "--size", "16MiB",
    ]);
    d.ok(&[
        "create",
        "busybox",
        "c1",
        "--privileged",
        "--",
        "sleep",
        "3600",
    ]);
    d.ok(&["storage", "volume", "attach", "fast", "logs", "c1", "/logs"]);
    d.ok(&["start", "c1"]);
    assert_eq!(d.sh("c1", "echo keep > /logs/a && sync").0, 0);
    d.ok(&["storage", "volume", "snapshot", "fast", "logs", "s1"]);
    // The qgroup limit holds: 40 MiB do not fit in 16.
    let (code, _) = d.sh(
        "c1",
        "dd if=/dev/zero of=/logs/big bs=1M count=40 conv=fsync 2>/dev/null",
    );
    assert_ne!(code, 0, "a 40 MiB write fit into a 16 MiB quota");
    let used = json(&d.ok(&[
        "storage", "volume", "info", "fast", "logs", "--format", "json",
    ]))["used_bytes"]
        .as_u64()
        .unwrap();
    assert!(used > 1 << 20 && used <= 17 << 20, "usage {used}");
    // A quota below what the files take frees nothing: neither a copy (a clone holds them
    // all) nor a resize may give one, or the size would undercount the pool's use.
    let err = d.fails(&[
        "storage", "volume", "create", "fast", "small", "--source", "logs", "--size", "1MiB",
    ]);
    assert!(err.contains("give the copy a size of at least"), "{err}");
    let err = d.fails(&["storage", "volume", "resize", "fast", "logs", "1MiB"]);
    assert!(err.contains("frees nothing"), "{err}");
    d.ok(&["stop", "c1", "--force"]);
    d.ok(&["storage", "volume", "restore", "fast", "logs", "s1"]);
    d.ok(&["start", "c1"]);
    assert_eq!(d.sh("c1", "ls /logs").1.trim(), "a");
    // Block volumes are raw files in subvolumes.
    block_disk(&d, "fast", "8MiB");
    let disk = d.root().join("storage/fast/block/disk/disk.raw");
    assert_eq!(std::fs::metadata(&disk).unwrap().len(), 8 << 20);
    // The pool comes back after a daemon restart (mounted again if needed).
    d.ok(&["delete", "--force", "c1"]);
    for v in ["logs", "disk"] {
        d.ok(&["storage", "volume", "delete", "fast", v]);
    }
    d.ok(&["storage", "pool", "delete", "fast"]);
    assert!(!d.root().join("storage/fast.btrfs").exists());
    assert!(!d.mounts().iter().any(|m| m.contains("storage/fast")));
}

/// Exports the volume `disk` of `pool` as `disk` over NBD on the unix socket `sock`; the
/// export's URI.
fn export_disk(d: &Daemon, pool: &str, sock: &str) -> String {
    d.ok(&[
        "storage",
        "export",
        "create",
        "disk",
        pool,
        "disk",
        "--protocol",
        "nbd",
        "--listen",
        sock,
    ]);
    format!("nbd+unix:///disk?socket={sock}")
}

/// Creates raid pool `name` of `members` member files of `size` at `level` (`raidN`).
fn raid_pool(d: &Daemon, name: &str, level: &str, members: u32, size: &str, extra: &[&str]) {
    let members = members.to_string();
    let mut args = vec![
        "storage",
        "pool",
        "create",
        name,
        "raid",
        "--level",
        level,
        "--members",
        &members,
        "--size",
        size,
    ];
    args.extend_from_slice(extra);
    d.ok(&args);
}

/// Creates block volume `disk` of `size` in `pool`.
fn block_disk(d: &Daemon, pool: &str, size: &str) {
    d.ok(&[
        "storage", "volume", "create", pool, "disk", "--type", "block", "--size", size,
    ]);
}

/// Writes `data` whole through the export `uri` and flushes it (`nbdcopy --flush`), from
/// the file `name` in `d`'s directory.
fn write_flushed(d: &Daemon, name: &str, uri: &str, data: &[u8]) {
    let src = d.dir.join(name);
    std::fs::write(&src, data).unwrap();
    tool("nbdcopy", &["--flush", src.to_str().unwrap(), uri]);
}

/// A pattern of `len` bytes derived from `seed`.
fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2654435761).to_le_bytes()[1] ^ seed)
        .collect()
}

#[test]
fn raid_pool_serves_volumes_over_nbd_and_survives_a_lost_member() {
    let mut d = Daemon::start();
    raid_pool(&d, "safe", "raid5", 4, "48MiB", &["--chunk-size", "64KiB"]);
    let pool = json(&d.ok(&["storage", "pool", "info", "safe", "--format", "json"]));
    assert_eq!(pool["status"], "online");
    block_disk(&d, "safe", "24MiB");
    let err = d.fails(&["storage", "volume", "create", "safe", "files"]);
    assert!(err.contains("block volumes"), "{err}");
    let sock = d.dir.join("nbd.sock");
    let sock_s = sock.to_str().unwrap();
    let out = d.ok(&[
        "storage",
        "export",
        "create",
        "disk",
        "safe",
        "disk",
        "--protocol",
        "nbd",
        "--listen",
        sock_s,
    ]);
    let uri = format!("nbd+unix:///disk?socket={sock_s}");
    assert!(out.contains(&uri), "{out}");
    assert_eq!(
        tool("nbdinfo", &["--size", &uri]).trim(),
        (24u64 << 20).to_string()
    );
    // Write 24 MiB of known data with nbdcopy, read it back.
    let data = pattern(7, 24 << 20);
    let src = d.dir.join("src.raw");
    std::fs::write(&src, &data).unwrap();
    tool("nbdcopy", &[src.to_str().unwrap(), &uri]);
    let back = d.dir.join("back.raw");
    tool("nbdcopy", &[&uri, back.to_str().unwrap()]);
    assert!(std::fs::read(&back).unwrap() == data, "read back differs");
    // Thin: the volume holds data now; a snapshot and a clone share it.
    d.ok(&["storage", "volume", "snapshot", "safe", "disk", "s1"]);
    d.ok(&[
        "storage", "volume", "create", "safe", "copy", "--type", "block", "--source", "disk/s1",
    ]);
    tool("qemu-io", &["-f", "raw", "-c", "write -P 0xab 0 1M", &uri]);
    d.ok(&[
        "storage",
        "export",
        "create",
        "copy",
        "safe",
        "copy",
        "--protocol",
        "nbd",
        "--listen",
        sock_s,
        "--read-only",
    ]);
    let copy_uri = format!("nbd+unix:///copy?socket={sock_s}");
    let copy_back = d.dir.join("copy.raw");
    tool("nbdcopy", &[&copy_uri, copy_back.to_str().unwrap()]);
    assert!(
        std::fs::read(&copy_back).unwrap() == data,
        "the clone saw a later write"
    );
    let ro = Command::new("qemu-io")
        .args(["-f", "raw", "-c", "write 0 4k", &copy_uri])
        .output()
        .unwrap();
    assert!(
        !ro.status.success() || String::from_utf8_lossy(&ro.stdout).contains("failed"),
        "a read-only export took a write"
    );
    // Lose a member: everything still reads, the pool says degraded (and the command says so).
    let said = d.ok(&["storage", "pool", "repair", "safe", "fail", "--member", "2"]);
    assert!(
        said.contains("Member 2") && said.contains("degraded"),
        "{said:?}"
    );
    let status = json(&d.ok(&["storage", "pool", "status", "safe", "--format", "json"]));
    assert_eq!(status["status"], "degraded", "{status}");
    assert_eq!(status["members"][2]["state"], "failed", "{status}");
    tool("nbdcopy", &[&copy_uri, copy_back.to_str().unwrap()]);
    assert!(
        std::fs::read(&copy_back).unwrap() == data,
        "degraded read differs"
    );
    // Replace it; the rebuild runs as an operation; a scrub then finds nothing to fix.
    let new = d.dir.join("new-member.img");
    d.ok(&[
        "storage",
        "pool",
        "repair",
        "safe",
        "replace",
        "--member",
        "2",
        "--path",
        new.to_str().unwrap(),
    ]);
    let status = json(&d.ok(&["storage", "pool", "status", "safe", "--format", "json"]));
    assert_eq!(status["status"], "online", "{status}");
    assert_eq!(status["members"][2]["path"], new.to_str().unwrap());
    d.ok(&["storage", "pool", "repair", "safe", "scrub"]);
    let status = json(&d.ok(&["storage", "pool", "status", "safe", "--format", "json"]));
    assert_eq!(status["last_scrub"]["mismatches"], 0, "{status}");
    assert!(status["last_scrub"]["rows_checked"].as_u64().unwrap() > 0);
    // After a daemon restart the pool reassembles with the new member and exports are back.
    d.kill(libc::SIGTERM);
    d.spawn();
    d.wait_for(
        "the export to be served again",
        Duration::from_secs(20),
        || Path::new(sock_s).exists(),
    );
    tool("nbdcopy", &[&copy_uri, copy_back.to_str().unwrap()]);
    assert!(
        std::fs::read(&copy_back).unwrap() == data,
        "data changed over a restart"
    );
    let mut head = vec![0u8; 1 << 20];
    tool("nbdcopy", &[&uri, back.to_str().unwrap()]);
    head.copy_from_slice(&std::fs::read(&back).unwrap()[..1 << 20]);
    assert!(
        head.iter().all(|&b| b == 0xab),
        "the acknowledged write is gone"
    );
    // Exported volumes cannot be deleted.
    let err = d.fails(&["storage", "volume", "delete", "safe", "disk"]);
    assert!(err.contains("exported as disk"), "{err}");
    for e in ["disk", "copy"] {
        d.ok(&["storage", "export", "delete", e]);
    }
    assert!(
        !Path::new(sock_s).exists(),
        "the listener outlived its exports"
    );
    d.ok(&["storage", "volume", "delete", "safe", "copy"]);
    d.ok(&["storage", "volume", "delete", "safe", "disk"]);
    d.ok(&["storage", "pool", "delete", "safe"]);
    // The member file Vessel made for the replacement goes with the pool.
    assert!(!new.exists(), "{} outlived its pool", new.display());
}

#[test]
fn bad_storage_requests_are_refused_and_change_nothing() {
    let d = Daemon::start();
    let files: Vec<String> = (0..4)
        .map(|i| {
            let p = d.dir.join(format!("m{i}.img"));
            std::fs::File::create(&p)
                .unwrap()
                .set_len(32 << 20)
                .unwrap();
            p.display().to_string()
        })
        .collect();
    let small = d.dir.join("small.img");
    std::fs::File::create(&small)
        .unwrap()
        .set_len(64 << 10)
        .unwrap();
    let src = |list: &[&str]| -> Vec<String> {
        list.iter()
            .flat_map(|f| ["--source".to_string(), f.to_string()])
            .collect()
    };
    let run = |extra: Vec<String>| {
        let mut args = vec!["storage", "pool", "create", "p", "raid"];
        args.extend(extra.iter().map(String::as_str));
        d.fails(&args)
    };
    // Wrong member count for the level.
    let mut a = vec!["--level".to_string(), "raid5".into()];
    a.extend(src(&[&files[0], &files[1]]));
    assert!(run(a).contains("at least 3 members"));
    let mut a = vec!["--level".to_string(), "raid6".into()];
    a.extend(src(&[&files[0], &files[1], &files[2]]));
    assert!(run(a).contains("at least 4 members"));
    // A member too small.
    let mut a = vec!["--level".to_string(), "raid1".into()];
    a.extend(src(&[&files[0], small.to_str().unwrap()]));
    let err = run(a);
    assert!(err.contains("small"), "{err}");
    // A level that does not exist, a missing member.
    let mut a = vec!["--level".to_string(), "raid7".into()];
    a.extend(src(&[&files[0], &files[1]]));
    assert!(run(a).contains("unknown raid level"));
    let mut a = vec!["--level".to_string(), "raid1".into()];
    a.extend(src(&[&files[0], "/nonexistent/disk"]));
    assert!(run(a).contains("does not exist"));
    assert!(pool_names(&d).is_empty(), "a failed creation left a pool");
    // A member of another pool: known to this daemon, and only known to its superblock.
    d.ok(&[
        "storage", "pool", "create", "a", "raid", "--level", "raid1", "--source", &files[0],
        "--source", &files[1],
    ]);
    let err = d.fails(&[
        "storage", "pool", "create", "b", "raid", "--level", "raid1", "--source", &files[1],
        "--source", &files[2],
    ]);
    assert!(
        err.contains("already belongs to another storage pool"),
        "{err}"
    );
    d.ok(&["storage", "pool", "delete", "a"]);
    // The member files were the user's: they stay, with pool a's superblocks on them.
    assert!(Path::new(&files[0]).exists());
    let err = d.fails(&[
        "storage", "pool", "create", "b", "raid", "--level", "raid1", "--source", &files[1],
        "--source", &files[2],
    ]);
    assert!(err.contains("already belongs to pool"), "{err}");
    assert!(pool_names(&d).is_empty());
    // A volume bigger than its pool, a block volume without size, bad names.
    d.ok(&["storage", "pool", "create", "local", "dir"]);
    let err = d.fails(&[
        "storage", "volume", "create", "local", "huge", "--type", "block", "--size", "64TiB",
    ]);
    assert!(err.contains("more than pool"), "{err}");
    let err = d.fails(&[
        "storage", "volume", "create", "local", "nosize", "--type", "block",
    ]);
    assert!(err.contains("needs a size"), "{err}");
    let err = d.fails(&["storage", "volume", "create", "local", "../etc"]);
    assert!(err.contains("invalid volume name"), "{err}");
    let vols = json(&d.ok(&["storage", "volume", "list", "local", "--format", "json"]));
    assert!(vols.as_array().unwrap().is_empty(), "{vols}");
    // Exports of the wrong kind, to a bad address.
    d.ok(&["storage", "volume", "create", "local", "fs"]);
    let err = d.fails(&[
        "storage",
        "export",
        "create",
        "e",
        "local",
        "fs",
        "--protocol",
        "nbd",
    ]);
    assert!(err.contains("over NFS"), "{err}");
    d.ok(&[
        "storage", "volume", "create", "local", "blk", "--type", "block", "--size", "1MiB",
    ]);
    let err = d.fails(&[
        "storage",
        "export",
        "create",
        "e",
        "local",
        "blk",
        "--protocol",
        "nbd",
        "--listen",
        "nowhere",
    ]);
    assert!(err.contains("HOST:PORT"), "{err}");
    // Client networks are for TCP listeners, and must be networks.
    let sock = d.dir.join("blk.sock");
    let err = d.fails(&[
        "storage",
        "export",
        "create",
        "e",
        "local",
        "blk",
        "--protocol",
        "nbd",
        "--listen",
        sock.to_str().unwrap(),
        "--allow",
        "10.0.0.0/8",
    ]);
    assert!(err.contains("its file mode"), "{err}");
    let err = d.fails(&[
        "storage",
        "export",
        "create",
        "e",
        "local",
        "fs",
        "--protocol",
        "nfs",
        "--allow",
        "10.0.0.0/8,everyone",
    ]);
    assert!(err.contains("not a client network"), "{err}");
    let exports = json(&d.ok(&["storage", "export", "list", "--format", "json"]));
    assert!(exports.as_array().unwrap().is_empty(), "{exports}");
    // Mount points that would escape or shadow the system.
    d.busybox();
    d.ok(&["create", "busybox", "c1", "--", "sleep", "60"]);
    for bad in ["relative", "/", "/proc/x", "/a/../b"] {
        let err = d.fails(&["storage", "volume", "attach", "local", "fs", "c1", bad]);
        assert!(
            err.contains("mount point") || err.contains("under /proc"),
            "{bad}: {err}"
        );
    }
    let err = d.fails(&["storage", "volume", "attach", "local", "blk", "c1", "/x"]);
    assert!(err.contains("attach to VMs"), "{err}");
}

#[test]
fn filesystem_volume_is_served_over_nfs_to_real_clients() {
    let mut d = Daemon::start();
    d.busybox();
    d.ok(&["storage", "pool", "create", "local", "dir"]);
    d.ok(&["storage", "volume", "create", "local", "share"]);
    d.ok(&[
        "create",
        "busybox",
        "c1",
        "--privileged",
        "--",
        "sleep",
        "3600",
    ]);
    d.ok(&[
        "storage", "volume", "attach", "local", "share", "c1", "/share",
    ]);
    d.ok(&["start", "c1"]);
    assert_eq!(
        d.sh("c1", "mkdir /share/docs && echo from-container > /share/docs/hello.txt && chmod -R a+rwX /share").0,
        0
    );
    // A loopback port of its own per test process.
    let port = 20000 + (std::process::id() % 20000) as u16;
    let listen = format!("127.0.0.1:{port}");
    let out = d.ok(&[
        "storage",
        "export",
        "create",
        "share",
        "local",
        "share",
        "--protocol",
        "nfs",
        "--listen",
        &listen,
    ]);
    let uri = format!("nfs://127.0.0.1/share?nfsport={port}&mountport={port}");
    assert!(out.contains(&uri), "{out}");
    let list = tool("nfs-ls", &["-R", &uri]);
    assert!(list.contains("hello.txt"), "{list}");
    let cat_uri = format!("nfs://127.0.0.1/share/docs/hello.txt?nfsport={port}&mountport={port}");
    assert_eq!(tool("nfs-cat", &[&cat_uri]).trim(), "from-container");
    // A file copied in over NFS is what the container reads.
    let data = pattern(3, 3 << 20);
    let src = d.dir.join("in.bin");
    std::fs::write(&src, &data).unwrap();
    let dst = format!("nfs://127.0.0.1/share/docs/in.bin?nfsport={port}&mountport={port}");
    tool("nfs-cp", &[src.to_str().unwrap(), &dst]);
    let (code, sum) = d.sh("c1", "md5sum /share/docs/in.bin");
    assert_eq!(code, 0);
    let want = tool("md5sum", &[src.to_str().unwrap()]);
    assert_eq!(
        sum.split_whitespace().next(),
        want.split_whitespace().next()
    );
    // Only the networks it names may use it: a client elsewhere can neither mount it nor
    // see it, and the list is kept over a restart.
    let out = d.ok(&[
        "storage",
        "export",
        "set",
        "share",
        "--allow",
        "192.0.2.0/24,10.1.2.3/8",
    ]);
    assert!(out.contains("clients in 192.0.2.0/24, 10.0.0.0/8"), "{out}");
    let refused = || {
        let out = Command::new("nfs-cat").arg(&cat_uri).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        !out.status.success() && err.contains("MNT3ERR_NOENT")
    };
    assert!(refused(), "a client outside the export's networks read it");
    let listed = json(&d.ok(&["storage", "export", "list", "--format", "json"]));
    assert_eq!(
        listed[0]["allow"],
        serde_json::json!(["192.0.2.0/24", "10.0.0.0/8"])
    );
    let table = d.ok(&["storage", "export", "list"]);
    assert!(table.contains("192.0.2.0/24,10.0.0.0/8"), "{table}");
    let err = d.fails(&[
        "storage",
        "export",
        "set",
        "share",
        "--allow",
        "10.0.0.0/33",
    ]);
    assert!(err.contains("not a client network"), "{err}");
    d.kill(libc::SIGTERM);
    d.spawn();
    assert!(refused(), "the export's networks were lost over a restart");
    // Served again after the restart, with the same handles, once this client is in.
    d.ok(&["storage", "export", "set", "share", "--allow", "127.0.0.1"]);
    assert_eq!(tool("nfs-cat", &[&cat_uri]).trim(), "from-container");
    // An empty list is refused: every client is said so (a script that filtered out its
    // last network does not open the export to everyone).
    let patch = |body: &str| {
        let out = Command::new("curl")
            .args(["-s", "-w", "\n%{http_code}", "-X", "PATCH", "--unix-socket"])
            .arg(&d.socket)
            .args(["-H", "Content-Type: application/json", "-d", body])
            .arg("http://vessel/1.0/storage/exports/share")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let said = patch(r#"{"allow": []}"#);
    assert!(
        said.ends_with("400") && said.contains("--allow-all"),
        "{said}"
    );
    let said = patch(r#"{"allow": ["10.0.0.0/8"], "allow_all": true}"#);
    assert!(said.ends_with("400") && said.contains("not both"), "{said}");
    assert_eq!(tool("nfs-cat", &[&cat_uri]).trim(), "from-container");
    d.ok(&["storage", "export", "set", "share", "--allow-all"]);
    // A read-only export refuses writes.
    d.ok(&["storage", "export", "delete", "share"]);
    d.ok(&[
        "storage",
        "export",
        "create",
        "ro",
        "local",
        "share",
        "--protocol",
        "nfs",
        "--listen",
        &listen,
        "--read-only",
    ]);
    let ro_dst = format!("nfs://127.0.0.1/ro/docs/new.bin?nfsport={port}&mountport={port}");
    let out = Command::new("nfs-cp")
        .args([src.to_str().unwrap(), &ro_dst])
        .output()
        .unwrap();
    assert!(!out.status.success(), "a read-only export took a file");
    assert!(!d
        .root()
        .join("storage/local/fs/share/docs/new.bin")
        .exists());
    d.ok(&["storage", "export", "delete", "ro"]);
    let gone = Command::new("nfs-ls").arg(&uri).output().unwrap();
    assert!(!gone.status.success(), "a deleted export still answers");
}

#[test]
fn raid_rebuild_is_throttled_and_resumes_after_a_daemon_crash() {
    let mut d = Daemon::start();
    raid_pool(&d, "safe", "raid6", 4, "40MiB", &[]);
    block_disk(&d, "safe", "32MiB");
    let sock = d.dir.join("nbd.sock");
    let sock_s = sock.to_str().unwrap();
    let uri = export_disk(&d, "safe", sock_s);
    let data = pattern(11, 32 << 20);
    // Flushed: the daemon is killed later and the data must be there.
    write_flushed(&d, "src.raw", &uri, &data);
    // RAID 6 loses two members and still has every byte.
    d.ok(&["storage", "pool", "repair", "safe", "fail", "--member", "0"]);
    d.ok(&["storage", "pool", "repair", "safe", "fail", "--member", "3"]);
    let back = d.dir.join("back.raw");
    tool("nbdcopy", &[&uri, back.to_str().unwrap()]);
    assert!(
        std::fs::read(&back).unwrap() == data,
        "doubly degraded read differs"
    );
    // A slow rebuild, started without waiting, then the daemon is killed in the middle.
    let new = d.dir.join("new0.img");
    let body = format!(
        r#"{{"action":"replace","member":0,"path":"{}","rate":4000000}}"#,
        new.display()
    );
    let (code, resp) = common::http(
        &d.socket,
        "POST",
        "/1.0/storage/pools/safe/repair",
        Some(&body),
    );
    assert_eq!(code, 202, "{resp}");
    d.wait_for(
        "the rebuild to make progress",
        Duration::from_secs(30),
        || {
            let s = json(&d.ok(&["storage", "pool", "status", "safe", "--format", "json"]));
            s["rebuild_percent"].as_u64().is_some_and(|p| p > 5)
        },
    );
    let s = json(&d.ok(&["storage", "pool", "status", "safe", "--format", "json"]));
    assert!(
        s["rebuild_percent"].as_u64().unwrap() < 90,
        "the rate limit did not hold: {s}"
    );
    assert_eq!(s["members"][0]["state"], "rebuilding", "{s}");
    d.kill(libc::SIGKILL);
    d.spawn();
    // The next daemon finishes it from its checkpoint, at full speed.
    d.wait_for(
        "the resumed rebuild to finish",
        Duration::from_secs(60),
        || {
            let s = json(&d.ok(&["storage", "pool", "status", "safe", "--format", "json"]));
            s["members"][0]["state"] == "active"
        },
    );
    // Lose another original (member 3 is still out): the rebuilt member must carry its share.
    d.ok(&["storage", "pool", "repair", "safe", "fail", "--member", "1"]);
    tool("nbdcopy", &[&uri, back.to_str().unwrap()]);
    assert!(
        std::fs::read(&back).unwrap() == data,
        "the rebuilt member holds wrong data"
    );
    // A third member out is more than RAID 6 survives: refused, unless forced.
    let err = d.fails(&["storage", "pool", "repair", "safe", "fail", "--member", "2"]);
    assert!(err.contains("force"), "{err}");
    d.ok(&[
        "storage", "pool", "repair", "safe", "fail", "--member", "2", "--force",
    ]);
    let s = json(&d.ok(&["storage", "pool", "status", "safe", "--format", "json"]));
    assert_eq!(s["status"], "unavailable", "{s}");
    let out = Command::new("nbdcopy")
        .args([&uri, back.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "a read with three of four members out succeeded"
    );
    // After a restart the export says why it does not serve.
    d.kill(libc::SIGKILL);
    d.spawn();
    let exports = json(&d.ok(&["storage", "export", "list", "--format", "json"]));
    assert_eq!(exports[0]["status"], "failed", "{exports}");
    // An unavailable pool can always be deleted (its volumes' records go with it, once no
    // export uses them), and the member files Vessel made for it go too, replacements
    // included.
    let err = d.fails(&["storage", "pool", "delete", "safe"]);
    assert!(err.contains("export disk"), "{err}");
    d.ok(&["storage", "export", "delete", "disk"]);
    d.ok(&["storage", "pool", "delete", "safe"]);
    assert!(!new.exists(), "the replacement member file was left behind");
    // Its volumes' records went with it: a new pool of that name has none.
    d.ok(&["storage", "pool", "create", "safe", "dir"]);
    let vols = json(&d.ok(&["storage", "volume", "list", "safe", "--format", "json"]));
    assert_eq!(vols.as_array().map(Vec::len), Some(0), "{vols}");
    d.ok(&["storage", "pool", "delete", "safe"]);
}

/// A volume attached while its container starts is either mounted in the running container
/// or refused as a conflict and not recorded; it is never recorded without being mounted.
/// Each round fires the attach a little later after the start request, sweeping the start
/// from its first step to the container running.
#[test]
fn a_volume_attached_while_its_container_starts_is_mounted_or_refused() {
    const ROUNDS: u64 = 60;
    let d = Daemon::start();
    d.busybox();
    d.ok(&["storage", "pool", "create", "local", "dir"]);
    d.ok(&["storage", "volume", "create", "local", "data"]);
    d.ok(&["create", "busybox", "c1", "--", "sleep", "3600"]);
    let marker = d.root().join("storage/local/fs/data/marker");
    let attached = |d: &Daemon| {
        json(&d.ok(&[
            "storage", "volume", "info", "local", "data", "--format", "json",
        ]))["attached_to"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["instance"] == "c1")
    };
    let (mut mounted, mut refused) = (0, 0);
    for round in 0..ROUNDS {
        std::fs::write(&marker, format!("round {round}")).unwrap();
        let socket = d.socket.clone();
        let delay = Duration::from_micros(round * 100);
        let attach = std::thread::spawn(move || {
            std::thread::sleep(delay);
            common::http(
                &socket,
                "POST",
                "/1.0/storage/pools/local/volumes/data/attach",
                Some(r#"{"instance":"c1","path":"/data"}"#),
            )
        });
        let (code, body) = common::http(
            &d.socket,
            "PUT",
            "/1.0/instances/c1/state",
            Some(r#"{"action":"start"}"#),
        );
        assert_eq!(code, 202, "start: {body}");
        let op = json(&body)["id"].as_str().unwrap().to_string();
        let (attach_code, attach_body) = attach.join().unwrap();
        let (code, body) = common::http(
            &d.socket,
            "GET",
            &format!("/1.0/operations/{op}/wait?timeout=60"),
            None,
        );
        assert_eq!(code, 200, "{body}");
        assert_eq!(json(&body)["status"], "success", "round {round}: {body}");
        let recorded = attached(&d);
        match attach_code {
            200 => {
                assert!(
                    recorded,
                    "round {round}: attach answered 200 but is not recorded"
                );
                let (code, out) = d.sh("c1", "cat /data/marker");
                assert_eq!(
                    (code, out.trim()),
                    (0, format!("round {round}").as_str()),
                    "round {round}: the volume was attached during the start but is not \
                     mounted in the running container"
                );
                mounted += 1;
            }
            409 => {
                assert!(
                    !recorded,
                    "round {round}: the attach was refused ({attach_body}) but recorded"
                );
                assert!(attach_body.contains("stop it"), "{attach_body}");
                refused += 1;
            }
            other => panic!("round {round}: attach answered {other}: {attach_body}"),
        }
        d.ok(&["stop", "c1", "--force"]);
        if recorded {
            d.ok(&["storage", "volume", "detach", "local", "data", "c1"]);
        }
    }
    eprintln!("{mounted} attaches mounted, {refused} refused, of {ROUNDS}");
    assert_eq!(mounted + refused, ROUNDS);
}

/// For each descriptor the daemon `pid` holds on `path`: whether it was opened `O_DIRECT`,
/// and whether for writing.
fn direct_flags(pid: i32, path: &Path) -> Vec<(bool, bool)> {
    let path = std::fs::canonicalize(path).unwrap();
    let mut out = Vec::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
    {
        if std::fs::read_link(e.path()).ok().as_deref() != Some(path.as_path()) {
            continue;
        }
        let fd = e.file_name();
        let Ok(info) =
            std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{}", fd.to_string_lossy()))
        else {
            continue;
        };
        let flags = info
            .lines()
            .find_map(|l| l.strip_prefix("flags:"))
            .map(|f| u32::from_str_radix(f.trim(), 8).unwrap())
            .expect("fdinfo has flags");
        out.push((
            flags & libc::O_DIRECT as u32 != 0,
            flags & libc::O_ACCMODE as u32 != libc::O_RDONLY as u32,
        ));
    }
    out
}

/// Whether the file system of `dir` takes `O_DIRECT`, as the RAID engine finds it when it
/// opens a member there (`Member::open` probes it).
fn direct_probe(dir: &Path) -> bool {
    let path = dir.join("direct-probe");
    std::fs::write(&path, vec![0u8; 8192]).unwrap();
    let takes = vessel_raid::member::Member::open(&path)
        .expect("open the probe")
        .is_direct();
    std::fs::remove_file(&path).unwrap();
    takes
}

/// How the daemon reads and writes each member of `pool`: `O_DIRECT` (true) or through the
/// page cache. A member held through the page cache is also held read-only with `O_DIRECT`
/// where the file system takes it (`takes`): what a scrub, a rebuild and a resync read.
fn members_direct(d: &Daemon, pool: &str, takes: bool) -> Vec<bool> {
    let info = json(&d.ok(&["storage", "pool", "info", pool, "--format", "json"]));
    info["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let held = direct_flags(d.pid(), Path::new(s.as_str().unwrap()));
            let rw: Vec<bool> = held.iter().filter(|h| h.1).map(|h| h.0).collect();
            assert_eq!(rw.len(), 1, "{s}: the daemon holds it {held:?}");
            let past_cache: Vec<bool> = held.iter().filter(|h| !h.1).map(|h| h.0).collect();
            let expect = if !rw[0] && takes { vec![true] } else { vec![] };
            assert_eq!(past_cache, expect, "{s}: the daemon holds it {held:?}");
            rw[0]
        })
        .collect()
}

#[test]
fn a_raid_pool_through_the_page_cache_keeps_flushed_data_over_a_daemon_kill() {
    let mut d = Daemon::start();
    fn create<'a>(name: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
        let mut args = vec![
            "storage",
            "pool",
            "create",
            name,
            "raid",
            "--level",
            "raid1",
            "--members",
            "2",
            "--size",
            "24MiB",
        ];
        args.extend_from_slice(extra);
        args
    }
    // Bad cache modes and keys are refused, nothing made.
    let err = d.fails(&create("cached", &["-c", "raid.cache=sometimes"]));
    assert!(err.contains("none") && err.contains("writeback"), "{err}");
    let err = d.fails(&[
        "storage",
        "pool",
        "create",
        "plain",
        "dir",
        "-c",
        "raid.cache=writeback",
    ]);
    assert!(err.contains("raid.cache"), "{err}");
    assert!(pool_names(&d).is_empty());

    d.ok(&create("cached", &["-c", "raid.cache=writeback"]));
    d.ok(&create("direct", &[]));
    let info = json(&d.ok(&["storage", "pool", "info", "cached", "--format", "json"]));
    assert_eq!(info["config"]["raid.cache"], "writeback", "{info}");
    // The default is O_DIRECT where the file system takes it (members fall back to the page
    // cache where it does not: tmpfs before Linux 6.6).
    let takes = direct_probe(&d.dir);
    assert_eq!(members_direct(&d, "cached", takes), [false, false]);
    assert_eq!(members_direct(&d, "direct", takes), [takes, takes]);

    block_disk(&d, "cached", "8MiB");
    let sock = d.dir.join("cached.sock");
    let uri = export_disk(&d, "cached", sock.to_str().unwrap());
    let data = pattern(11, 8 << 20);
    write_flushed(&d, "cached-src.raw", &uri, &data);

    // Killed: the flushed data is there when the pool is assembled again, the same way.
    d.kill(libc::SIGKILL);
    d.spawn();
    d.wait_for(
        "the export to be served again",
        Duration::from_secs(20),
        || sock.exists(),
    );
    assert_eq!(members_direct(&d, "cached", takes), [false, false]);
    let back = d.dir.join("cached-back.raw");
    tool("nbdcopy", &[&uri, back.to_str().unwrap()]);
    assert!(std::fs::read(&back).unwrap() == data, "flushed data lost");
    let status = json(&d.ok(&["storage", "pool", "info", "cached", "--format", "json"]));
    assert_eq!(status["status"], "online", "{status}");

    d.ok(&["storage", "export", "delete", "disk"]);
    d.ok(&["storage", "volume", "delete", "cached", "disk"]);
    d.ok(&["storage", "pool", "delete", "cached"]);
    d.ok(&["storage", "pool", "delete", "direct"]);
}

/// A client process killed when dropped (also when the test fails).
struct Client(Child);

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A daemon told to stop (SIGTERM) with a client connected that wrote without asking for a
/// flush closes the export and the pool cleanly: the next daemon assembles the pool with
/// nothing to resync, and the bytes are there.
#[test]
fn a_daemon_told_to_stop_closes_a_raid_pool_cleanly_under_a_connected_client() {
    let mut d = Daemon::start();
    raid_pool(&d, "tank", "raid1", 2, "24MiB", &[]);
    block_disk(&d, "tank", "8MiB");
    let sock = d.dir.join("tank.sock");
    let uri = export_disk(&d, "tank", sock.to_str().unwrap());
    // 4 MiB written, no flush asked, and the connection held open.
    // Debian's libnbd binding, under Debian's own python3 (the one first on PATH may be
    // another build).
    let script = "import sys, time, nbd\nh = nbd.NBD()\nh.connect_uri(sys.argv[1])\nh.pwrite(b'\\x5a' * (4 << 20), 0)\nprint('written', flush=True)\ntime.sleep(300)\n";
    let mut client = Client(
        Command::new("/usr/bin/python3")
            .args(["-c", script, &uri])
            .stdout(Stdio::piped())
            .spawn()
            .expect("/usr/bin/python3 (Debian's python3-libnbd)"),
    );
    let mut line = String::new();
    std::io::BufReader::new(client.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "written", "the libnbd client did not write");

    let before = d.log().len();
    let t0 = Instant::now();
    d.kill(libc::SIGTERM);
    let took = t0.elapsed();
    assert!(
        took < Duration::from_secs(15),
        "the daemon took {took:?} to stop (killed after 20 s)"
    );
    assert!(
        client.0.try_wait().unwrap().is_none(),
        "the client should still be running (it sleeps)"
    );
    drop(client);
    d.spawn();
    d.wait_for(
        "the export to be served again",
        Duration::from_secs(20),
        || sock.exists(),
    );
    let log = d.log()[before..].to_string();
    assert!(
        !log.contains("not shut down cleanly"),
        "the pool was left dirty:\n{}",
        common::tail(&log, 40)
    );
    let back = d.dir.join("tank-back.raw");
    tool("nbdcopy", &[&uri, back.to_str().unwrap()]);
    let got = std::fs::read(&back).unwrap();
    assert!(
        got[..4 << 20].iter().all(|b| *b == 0x5a),
        "unflushed writes lost over a clean stop"
    );
    d.ok(&["storage", "export", "delete", "disk"]);
    d.ok(&["storage", "volume", "delete", "tank", "disk"]);
    d.ok(&["storage", "pool", "delete", "tank"]);
}

/// Runs a client tool and returns its output, success or not.
fn attempt(cmd: &str, args: &[&str]) -> std::process::Output {
    Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd} ({e}): see scripts/debian-packages.txt"))
}

#[test]
fn nbd_over_tcp_takes_only_clients_with_credentials_of_the_export() {
    let mut d = Daemon::start();
    d.ok(&["storage", "pool", "create", "local", "dir"]);
    for v in ["disk", "other", "open"] {
        d.ok(&[
            "storage", "volume", "create", "local", v, "--type", "block", "--size", "4MiB",
        ]);
    }
    let port = common::free_port();
    let listen = format!("127.0.0.1:{port}");
    let create = |name: &str, extra: &[&str]| {
        let mut args = vec![
            "storage",
            "export",
            "create",
            name,
            "local",
            name,
            "--protocol",
            "nbd",
            "--listen",
            &listen,
        ];
        args.extend_from_slice(extra);
        d.ok(&args)
    };
    // TLS by default on TCP; the listener's exports share it.
    let out = create("disk", &[]);
    let uri = format!("nbds://{listen}/disk");
    assert!(
        out.contains(&uri) && out.contains("export credentials disk"),
        "{out}"
    );
    create("other", &[]);
    // A plain export cannot share a TLS listener, nor TLS go on a unix socket or NFS.
    let err = d.fails(&[
        "storage",
        "export",
        "create",
        "open",
        "local",
        "open",
        "--protocol",
        "nbd",
        "--listen",
        &listen,
        "--no-tls",
    ]);
    assert!(err.contains("with TLS"), "{err}");
    let (s, body) = common::http(
        &d.socket,
        "POST",
        "/1.0/storage/exports",
        Some(&format!(
            r#"{{"name":"open","pool":"local","volume":"open","protocol":"nbd","listen":"{}","tls":true}}"#,
            d.dir.join("x.sock").display()
        )),
    );
    assert!(s == 400 && body.contains("unix socket"), "{s} {body}");
    let list: serde_json::Value =
        serde_json::from_str(&d.ok(&["storage", "export", "list", "--format", "json"])).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
    assert!(list[0]["tls"] == true && list[0]["clients"] == 0, "{list}");

    // Without credentials nothing is served.
    let plain = format!("nbd://{listen}/disk");
    let out = attempt("nbdinfo", &["--size", &plain]);
    assert!(!out.status.success(), "a plain client read the export");

    // A client with the export's credentials writes and reads it.
    let creds = d.dir.join("disk-creds");
    let creds_s = creds.to_str().unwrap();
    let out = d.ok(&["storage", "export", "credentials", "disk", "--out", creds_s]);
    assert!(out.contains("tls-certificates="), "{out}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(creds.join("client-key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "the key is readable by others: {mode:o}");
    let err = d.fails(&["storage", "export", "credentials", "disk", "--out", creds_s]);
    assert!(err.contains("holds credentials already"), "{err}");
    let with = |uri: &str, creds: &str| format!("{uri}?tls-certificates={creds}");
    let data = pattern(3, 4 << 20);
    write_flushed(&d, "src.raw", &with(&uri, creds_s), &data);
    let back = d.dir.join("back.raw");
    tool("nbdcopy", &[&with(&uri, creds_s), back.to_str().unwrap()]);
    assert!(std::fs::read(&back).unwrap() == data, "read back differs");
    // QEMU too, with the same directory.
    let qemu = |export: &str, creds: &str| {
        attempt(
            "qemu-img",
            &[
                "info",
                "--object",
                &format!("tls-creds-x509,id=tls0,dir={creds},endpoint=client"),
                "--image-opts",
                &format!(
                    "driver=nbd,server.type=inet,server.host=127.0.0.1,server.port={port},\
                     export={export},tls-creds=tls0"
                ),
            ],
        )
    };
    let out = qemu("disk", creds_s);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // disk's credentials do not open other, nor list it.
    let out = attempt(
        "nbdinfo",
        &["--size", &with(&format!("nbds://{listen}/other"), creds_s)],
    );
    assert!(!out.status.success(), "disk's client opened other");
    assert!(
        !qemu("other", creds_s).status.success(),
        "qemu opened other"
    );
    let listed = tool(
        "nbdinfo",
        &[
            "--list",
            "--json",
            &with(&format!("nbds://{listen}"), creds_s),
        ],
    );
    assert!(
        listed.contains("\"disk\"") && !listed.contains("\"other\""),
        "{listed}"
    );

    // The credentials hold over a restart (the authority and the export's clients kept).
    d.kill(libc::SIGTERM);
    d.spawn();
    assert_eq!(
        tool("nbdinfo", &["--size", &with(&uri, creds_s)]).trim(),
        (4u64 << 20).to_string()
    );
    let list: serde_json::Value =
        serde_json::from_str(&d.ok(&["storage", "export", "list", "--format", "json"])).unwrap();
    assert_eq!(list[0]["clients"], 1, "{list}");

    // Revoked: a client connected with them is cut off, new connections are refused; new
    // credentials work.
    let mut session = NbdSession::open(&with(&uri, creds_s));
    assert_eq!(session.again(), "read");
    d.ok(&["storage", "export", "credentials", "disk", "--revoke"]);
    let said = session.again();
    assert!(said.starts_with("closed:"), "{said}");
    drop(session);
    let out = attempt("nbdinfo", &["--size", &with(&uri, creds_s)]);
    assert!(!out.status.success(), "a revoked client got in");
    let fresh = d.dir.join("fresh");
    d.ok(&[
        "storage",
        "export",
        "credentials",
        "disk",
        "--out",
        fresh.to_str().unwrap(),
    ]);
    tool("nbdinfo", &["--size", &with(&uri, fresh.to_str().unwrap())]);
    // At most 64 clients' credentials: the 65th is refused with what to do.
    let issue = format!(
        "for i in $(seq 63); do curl -s -o /dev/null -w '%{{http_code}} ' --unix-socket {} \
         -X POST http://vessel/1.0/storage/exports/disk/credentials; done",
        d.socket.display()
    );
    let codes = Command::new("sh").args(["-c", &issue]).output().unwrap();
    let codes = String::from_utf8_lossy(&codes.stdout).into_owned();
    assert_eq!(codes.trim(), ["201"; 63].join(" "), "{codes}");
    let err = d.fails(&[
        "storage",
        "export",
        "credentials",
        "disk",
        "--out",
        d.dir.join("more").to_str().unwrap(),
    ]);
    assert!(
        err.contains("64 clients") && err.contains("--revoke"),
        "{err}"
    );
    // The ones issued still work.
    tool("nbdinfo", &["--size", &with(&uri, fresh.to_str().unwrap())]);

    // --no-tls serves plain NBD (on a listener of its own), and has no credentials.
    let open_listen = format!("127.0.0.1:{}", common::free_port());
    let out = d.ok(&[
        "storage",
        "export",
        "create",
        "open",
        "local",
        "open",
        "--protocol",
        "nbd",
        "--listen",
        &open_listen,
        "--no-tls",
    ]);
    assert!(out.contains(&format!("nbd://{open_listen}/open")), "{out}");
    tool("nbdinfo", &["--size", &format!("nbd://{open_listen}/open")]);
    let err = d.fails(&[
        "storage",
        "export",
        "credentials",
        "open",
        "--out",
        d.dir.join("o").to_str().unwrap(),
    ]);
    assert!(err.contains("without TLS"), "{err}");
    // Over TCP an NBD export admits the networks it names: a client connected from
    // elsewhere is cut off and cannot come back until the list takes it again.
    let open_uri = format!("nbd://{open_listen}/open");
    let mut on_open = NbdSession::open(&open_uri);
    let out = d.ok(&[
        "storage",
        "export",
        "set",
        "open",
        "--allow",
        "192.0.2.0/24",
    ]);
    assert!(out.contains("clients in 192.0.2.0/24"), "{out}");
    let said = on_open.again();
    assert!(said.starts_with("closed:"), "{said}");
    let refused = Command::new("nbdinfo")
        .args(["--size", &open_uri])
        .output()
        .unwrap();
    assert!(
        !refused.status.success(),
        "a client outside the export's networks opened it"
    );
    d.ok(&["storage", "export", "set", "open", "--allow", "127.0.0.0/8"]);
    tool("nbdinfo", &["--size", &open_uri]);
    // An export deleted while a client is connected cuts it off (the listener stays, other
    // is still on it).
    let mut session = NbdSession::open(&with(&uri, fresh.to_str().unwrap()));
    d.ok(&["storage", "export", "delete", "disk"]);
    let said = session.again();
    assert!(said.starts_with("closed:"), "{said}");
    for e in ["other", "open"] {
        d.ok(&["storage", "export", "delete", e]);
    }
}
