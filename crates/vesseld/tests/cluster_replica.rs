//! A replicated pool (a real 3-member etcd, three daemons in their own network namespaces):
//! a raid1 pool on m0 whose second member is a far copy on m1, reached over the members'
//! mutual TLS. What a client writes through an NBD export is on both copies once
//! acknowledged; m1's daemon killed, m0 records the copy out of date in etcd and goes on
//! degraded; m1 back, m0 re-adds the copy and resyncs only what it missed, and records it
//! current; m0's daemon killed and started again takes the copy back the same way. A copy
//! out of date is not adopted; a current one is, by m1 once m0 is lost: the pool made of it
//! holds every acknowledged write, and m0 back can write there no more. Bad requests change
//! nothing.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::cluster::{json, members, wait};
use common::{tool, Daemon};

/// The far copy's record in etcd, as `etcdctl` in `ns` reads it.
fn record(ns: &str, endpoints: &str, name: &str) -> serde_json::Value {
    let out = tool(
        "ip",
        &[
            "netns",
            "exec",
            ns,
            "etcdctl",
            "--endpoints",
            endpoints,
            "get",
            "--prefix",
            "",
        ],
    );
    let mut lines = out.lines();
    while let Some(k) = lines.next() {
        let v = lines.next().unwrap_or_default();
        if k.ends_with(&format!("replicas/{name}")) {
            return json(v);
        }
    }
    serde_json::Value::Null
}

/// The members' states of pool `pool`, by index.
fn states(d: &Daemon, pool: &str) -> Vec<String> {
    let s = json(&d.ok(&["storage", "pool", "status", pool, "--format", "json"]));
    s["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["state"].as_str().unwrap().to_string())
        .collect()
}

/// Writes `len` bytes of `byte` at `at` through the export `uri` (qemu-io), and the same
/// into `want`, what the volume must hold.
fn write(uri: &str, want: &mut [u8], byte: u8, at: usize, len: usize) {
    let cmd = format!("write -P {byte:#x} {at} {len}");
    tool("qemu-io", &["-f", "raw", "-c", &cmd, uri]);
    want[at..at + len].fill(byte);
}

/// Whether a write of `len` bytes of `byte` at `at` through the export `uri` is refused
/// (a refused write may still have reached some copy: its bytes are undefined).
fn refused(uri: &str, byte: u8, at: usize, len: usize) -> bool {
    let cmd = format!("write -P {byte:#x} {at} {len}");
    !Command::new("qemu-io")
        .args(["-f", "raw", "-c", &cmd, uri])
        .output()
        .unwrap()
        .status
        .success()
}

/// Whether the export `uri`, read whole into `file`, holds `want`.
fn holds(uri: &str, file: &Path, want: &[u8]) -> bool {
    tool("nbdcopy", &[uri, file.to_str().unwrap()]);
    std::fs::read(file).unwrap() == want
}

/// Whether `d` answers for pool `pool` with both copies in.
fn both_in(d: &Daemon, pool: &str) -> bool {
    d.vessel(&["storage", "pool", "status", pool, "--format", "json"])
        .status
        .success()
        && states(d, pool) == ["active", "active"]
}

/// The data and checksums of a raid1 member (everything after its 1 MiB header).
fn body(path: &Path) -> Vec<u8> {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    b[1 << 20..].to_vec()
}

#[test]
fn a_replicated_pool_keeps_its_far_copy_on_another_member_and_resyncs_it() {
    let (sb, etcd, mut d) = members(3);
    let endpoints = etcd.endpoints();

    // Bad requests first: nothing is made.
    let bad = |args: &[&str], says: &str| {
        let mut all = vec!["storage", "pool", "create", "rp", "raid"];
        all.extend_from_slice(args);
        let e = d[0].fails(&all);
        assert!(e.contains(says), "{e}");
    };
    bad(
        &["--level", "raid1", "--size", "96MiB", "--replica", "m0"],
        "another member",
    );
    bad(
        &["--level", "raid1", "--size", "96MiB", "--replica", "m9"],
        "m9",
    );
    bad(
        &["--level", "raid5", "--size", "96MiB", "--replica", "m1"],
        "raid1",
    );
    bad(&["--level", "raid1", "--replica", "m1"], "--size");
    assert!(d[0]
        .fails(&["storage", "pool", "info", "rp"])
        .contains("rp"));
    assert!(!d[1].root().join("replicas/m0.rp.img").exists());

    d[0].ok(&[
        "storage",
        "pool",
        "create",
        "rp",
        "raid",
        "--level",
        "raid1",
        "--size",
        "96MiB",
        "--replica",
        "m1",
    ]);
    let far_file = d[1].root().join("replicas/m0.rp.img");
    assert!(far_file.exists());
    let near_file: PathBuf = d[0].root().join("storage/rp/member0.img");
    assert!(near_file.exists(), "{}", near_file.display());
    assert_eq!(states(&d[0], "rp"), ["active", "active"]);
    assert_eq!(record(&sb.hosts[0], &endpoints, "m0.rp")["outdated"], false);

    // A volume, exported over NBD, written by a client.
    d[0].ok(&[
        "storage", "volume", "create", "rp", "disk", "--type", "block", "--size", "16MiB",
    ]);
    let sock = d[0].dir.join("rp.sock");
    let sock_s = sock.to_str().unwrap();
    d[0].ok(&[
        "storage",
        "export",
        "create",
        "disk",
        "rp",
        "disk",
        "--protocol",
        "nbd",
        "--listen",
        sock_s,
    ]);
    let uri = format!("nbd+unix:///disk?socket={sock_s}");
    let data: Vec<u8> = (0..16u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let src = d[0].dir.join("src.raw");
    std::fs::write(&src, &data).unwrap();
    tool("nbdcopy", &["--flush", src.to_str().unwrap(), &uri]);
    let back = d[0].dir.join("back.raw");
    assert!(holds(&uri, &back, &data), "read back differs");
    let mut want = data.clone();
    // Acknowledged and flushed (`nbdcopy --flush`): the same bytes on both copies.
    assert!(body(&near_file) == body(&far_file), "the far copy differs");

    // m1's daemon dies (and with it the far copy's server): the next write marks the copy
    // out of date in etcd and goes on without it.
    d[1].kill(libc::SIGKILL);
    write(&uri, &mut want, 0xcd, 4 << 20, 1 << 20);
    assert_eq!(states(&d[0], "rp"), ["active", "failed"]);
    assert_eq!(
        json(&d[0].ok(&["storage", "pool", "info", "rp", "--format", "json"]))["status"],
        "degraded"
    );
    let r = record(&sb.hosts[0], &endpoints, "m0.rp");
    assert_eq!(
        (r["outdated"].clone(), r["member"].clone()),
        (true.into(), "m1".into()),
        "{r}"
    );
    write(&uri, &mut want, 0xef, 9 << 20, 64 << 10);

    // m1 back: m0 gives the copy its slot back and resyncs what it missed.
    d[1].spawn();
    wait("the far copy re-added", Duration::from_secs(60), || {
        states(&d[0], "rp") == ["active", "active"]
    });
    wait(
        "the far copy recorded current",
        Duration::from_secs(10),
        || record(&sb.hosts[0], &endpoints, "m0.rp")["outdated"] == false,
    );
    assert!(d[0].log().contains("far copy back: resynced and current"));
    assert!(
        holds(&uri, &back, &want),
        "read back differs after the re-add"
    );
    d[0].ok(&["storage", "pool", "status", "rp"]);
    assert!(
        body(&near_file) == body(&far_file),
        "the far copy was not resynced"
    );

    // The copy on m0 failing stops writes (the far copy alone would leave m0's stale, and a
    // restart could assemble from it); replaced and rebuilt from the far copy, they go on.
    d[0].ok(&["storage", "pool", "repair", "rp", "fail", "--member", "0"]);
    assert!(
        refused(&uri, 0x31, 1 << 20, 64 << 10),
        "a write went to the far copy alone"
    );
    assert!(d[0]
        .log()
        .contains("does not go on with its far copy alone"));
    // (A file Vessel creates, as large as a member must be: the other member is no file
    // here to measure.)
    let fresh = d[0].dir.join("near-new.img");
    d[0].ok(&[
        "storage",
        "pool",
        "repair",
        "rp",
        "replace",
        "--member",
        "0",
        "--path",
        fresh.to_str().unwrap(),
    ]);
    wait("m0's copy rebuilt", Duration::from_secs(60), || {
        both_in(&d[0], "rp")
    });
    write(&uri, &mut want, 0x31, 1 << 20, 64 << 10);
    assert!(
        holds(&uri, &back, &want),
        "read back differs after the replacement"
    );

    // m0's daemon killed and started again: the pool comes up without its far copy (the
    // relay is not there before the cluster is), then takes it back; nothing is lost.
    d[0].kill(libc::SIGKILL);
    d[0].spawn();
    wait(
        "the far copy back after m0's restart",
        Duration::from_secs(60),
        || both_in(&d[0], "rp"),
    );
    assert!(
        holds(&uri, &back, &want),
        "read back differs after the restart"
    );

    // A far copy out of date is not adopted: m1 dies, m0 writes on without it, then m0
    // dies too; m1 back finds its copy out of date and refuses to make a pool of it.
    d[1].kill(libc::SIGKILL);
    write(&uri, &mut want, 0x42, 2 << 20, 64 << 10);
    d[0].kill(libc::SIGKILL);
    d[1].spawn();
    wait("m1 back in the cluster", Duration::from_secs(20), || {
        json(&d[1].ok(&["cluster", "info", "--format", "json"]))["connected"] == true
    });
    let e = d[1].fails(&[
        "storage", "pool", "create", "rp", "raid", "--adopt", "m0.rp",
    ]);
    assert!(e.contains("out of date"), "{e}");
    assert!(d[1]
        .fails(&["storage", "pool", "info", "rp"])
        .contains("rp"));
    // m0 back: the copy is resynced and current again; then m0 is lost for good (its
    // daemon killed), and m1 adopts the copy: every acknowledged write is there.
    d[0].spawn();
    wait(
        "the far copy current again",
        Duration::from_secs(60),
        || both_in(&d[0], "rp") && record(&sb.hosts[0], &endpoints, "m0.rp")["outdated"] == false,
    );
    write(&uri, &mut want, 0x77, 12 << 20, 128 << 10);
    d[0].kill(libc::SIGKILL);
    d[1].ok(&[
        "storage", "pool", "create", "rp2", "raid", "--adopt", "m0.rp",
    ]);
    assert_eq!(
        json(&d[1].ok(&["storage", "pool", "info", "rp2", "--format", "json"]))["status"],
        "degraded"
    );
    let r = record(&sb.hosts[1], &endpoints, "m0.rp");
    assert_eq!(
        (
            r["primary"].clone(),
            r["member"].clone(),
            r["outdated"].clone()
        ),
        ("m1".into(), "m0".into(), true.into()),
        "{r}"
    );
    let sock1 = d[1].dir.join("rp2.sock");
    let sock1_s = sock1.to_str().unwrap();
    d[1].ok(&[
        "storage",
        "export",
        "create",
        "disk2",
        "rp2",
        "disk",
        "--protocol",
        "nbd",
        "--listen",
        sock1_s,
    ]);
    let uri1 = format!("nbd+unix:///disk2?socket={sock1_s}");
    let back1 = d[1].dir.join("back1.raw");
    assert!(
        holds(&uri1, &back1, &want),
        "the adopted copy lacks acknowledged writes"
    );
    // The old primary back can write there no more: its far copy is gone, and etcd no
    // longer lets it mark it out of date, so its writes are held back.
    d[0].spawn();
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        refused(&uri, 0x99, 0, 64 << 10),
        "the old primary acknowledged a write"
    );
    assert!(
        holds(&uri1, &back1, &want),
        "the old primary wrote to the adopted copy"
    );

    // The adopted pool gets a far copy of its own, on m2, in the lost copy's slot (bad
    // requests first); once rebuilt and recorded current, m1 can be lost in turn: m2 adopts
    // it with every acknowledged write.
    let repair = |d: &Daemon, args: &[&str]| {
        let mut all = vec!["storage", "pool", "repair", "rp2", "replace"];
        all.extend_from_slice(args);
        d.vessel(&all)
    };
    let e = repair(&d[1], &["--member", "1", "--replica", "m2"]);
    assert!(
        String::from_utf8_lossy(&e.stderr).contains("in use"),
        "{e:?}"
    );
    let e = repair(&d[1], &["--member", "0", "--replica", "m1"]);
    assert!(
        String::from_utf8_lossy(&e.stderr).contains("another member"),
        "{e:?}"
    );
    let made = repair(&d[1], &["--member", "0", "--replica", "m2"]);
    assert!(made.status.success(), "{made:?}");
    wait(
        "rp2's new far copy rebuilt and current",
        Duration::from_secs(60),
        || both_in(&d[1], "rp2") && record(&sb.hosts[1], &endpoints, "m1.rp2")["outdated"] == false,
    );
    let r = record(&sb.hosts[1], &endpoints, "m1.rp2");
    assert_eq!(
        (r["primary"].clone(), r["member"].clone()),
        ("m1".into(), "m2".into()),
        "{r}"
    );
    write(&uri1, &mut want, 0x55, 14 << 20, 256 << 10);
    d[1].kill(libc::SIGKILL);
    d[2].ok(&[
        "storage", "pool", "create", "rp3", "raid", "--adopt", "m1.rp2",
    ]);
    let sock2 = d[2].dir.join("rp3.sock");
    let sock2_s = sock2.to_str().unwrap();
    d[2].ok(&[
        "storage",
        "export",
        "create",
        "disk3",
        "rp3",
        "disk",
        "--protocol",
        "nbd",
        "--listen",
        sock2_s,
    ]);
    let uri2 = format!("nbd+unix:///disk3?socket={sock2_s}");
    assert!(
        holds(&uri2, &d[2].dir.join("back2.raw"), &want),
        "the copy adopted a second time lacks acknowledged writes"
    );
    d[2].ok(&["storage", "export", "delete", "disk3"]);
    d[2].ok(&["storage", "volume", "delete", "rp3", "disk"]);
    d[2].ok(&["storage", "pool", "delete", "rp3"]);
    // m1 back finds its pool stale and deletes it.
    d[1].spawn();
    wait("m1's pool stale", Duration::from_secs(20), || {
        d[1].ok(&["storage", "pool", "info", "rp2"])
            .contains("stale")
    });
    d[1].ok(&["storage", "export", "delete", "disk2"]);
    d[1].ok(&["storage", "pool", "delete", "rp2"]);

    // On the old primary the pool is stale (unavailable, saying why) and can only go; the
    // record of its adopted copy goes with it, and the name is free again.
    wait(
        "the old primary's pool stale",
        Duration::from_secs(20),
        || {
            json(&d[0].ok(&["storage", "pool", "info", "rp", "--format", "json"]))["status"]
                == "unavailable"
        },
    );
    let info = d[0].ok(&["storage", "pool", "info", "rp"]);
    assert!(info.contains("stale"), "{info}");
    d[0].ok(&["storage", "export", "delete", "disk"]);
    assert_eq!(record(&sb.hosts[0], &endpoints, "m0.rp")["primary"], "m1");
    d[0].ok(&["storage", "pool", "delete", "rp"]);
    assert!(!far_file.exists());
    assert!(record(&sb.hosts[0], &endpoints, "m0.rp").is_null());
    d[0].ok(&[
        "storage",
        "pool",
        "create",
        "rp",
        "raid",
        "--level",
        "raid1",
        "--size",
        "32MiB",
        "--replica",
        "m2",
    ]);
    assert_eq!(record(&sb.hosts[0], &endpoints, "m0.rp")["member"], "m2");
    d[0].ok(&["storage", "pool", "delete", "rp"]);
    // A replicated pool deleted drops its far copy and its record.
    d[0].ok(&[
        "storage",
        "pool",
        "create",
        "rq",
        "raid",
        "--level",
        "raid1",
        "--size",
        "32MiB",
        "--replica",
        "m2",
    ]);
    let rq = d[2].root().join("replicas/m0.rq.img");
    assert!(rq.exists());
    d[0].ok(&["storage", "pool", "delete", "rq"]);
    assert!(!rq.exists());
    assert!(record(&sb.hosts[0], &endpoints, "m0.rq").is_null());
}
