//! Failover of `cluster.ha` instances (a real 3-member etcd, three daemons in their own
//! network namespaces): a member whose daemon is killed and whose network is cut has its
//! HA container stopped by its watchdog and started on another member (which fetches the
//! image from a third), timed from the kill to the instance answering; a member cut off
//! from etcd but alive fences itself and the instance moves again; a member that comes back
//! deletes its stale copy but keeps the copy of a later move to it, and deletes it too when
//! the instance was deleted while it was away; an instance is never seen running twice (its process is counted
//! on the host ten times a second throughout; all members share this kernel).

mod common;

use std::time::{Duration, Instant};

use common::cluster::{
    answering, json, members, nft, processes, wait, Watch, CUT_ALL, CUT_ETCD, UNCUT,
};
use common::Daemon;

/// The HA instance's process: `sleep` with this argument, in whichever copy runs.
const MARK: &str = "86399";

/// How many processes on the host are the HA instance's.
fn copies() -> usize {
    processes(|args| args.len() == 2 && args[0].ends_with(b"sleep") && args[1] == MARK.as_bytes())
}

/// How many instances named `ha1` `d`'s list shows, and where.
fn listed(d: &Daemon) -> Vec<String> {
    let v = json(&d.ok(&["list", "--format", "json"]));
    v.as_array()
        .unwrap()
        .iter()
        .filter(|i| i["name"] == "ha1")
        .map(|i| i["location"].as_str().unwrap_or("-").to_string())
        .collect()
}

#[test]
fn ha_instances_fail_over_with_fencing_and_never_run_twice() {
    let (sb, etcd, mut d) = members(3);
    // The image on m1 and m2, not on m0: a failover to m0 fetches it from m2.
    d[1].busybox();
    d[2].busybox();

    // Failover is off until set; bad values are refused with what to give.
    let out = d[0].ok(&["cluster", "healing"]);
    assert!(out.contains("off"), "{out}");
    let err = d[0].fails(&["cluster", "healing", "soon"]);
    assert!(err.contains("seconds") && err.contains("off"), "{err}");
    let out = d[1].ok(&["cluster", "healing", "2"]);
    assert!(out.contains("2 s"), "{out}");
    let info = json(&d[2].ok(&["cluster", "info", "--format", "json"]));
    assert_eq!(info["healing_threshold"], 2, "{info}");

    // An anchor of the same placement group on m2 keeps ha1 off m2: its failover goes to
    // m0, which must fetch the image.
    d[2].ok(&[
        "launch",
        "busybox",
        "anchor",
        "--no-network",
        "--target",
        "m2",
        "-c",
        "cluster.group=g",
        "--",
        "sleep",
        "86398",
    ]);
    // ha1 takes keys from a profile (the cluster's) and sets one itself.
    d[1].ok(&["profile", "create", "hap"]);
    d[1].ok(&["profile", "set", "hap", "user.tier=a", "user.mine=profile"]);
    d[1].ok(&[
        "launch",
        "busybox",
        "ha1",
        "--no-network",
        "--target",
        "m1",
        "--profile",
        "hap",
        "-c",
        "user.mine=own",
        "-c",
        "cluster.ha=true",
        "-c",
        "cluster.group=g",
        "--",
        "sh",
        "-c",
        &format!("trap 'exit 0' TERM; sleep {MARK} & wait"),
    ]);
    assert_eq!(answering(&d[0], "ha1").as_deref(), Some("m1"));
    // ha2, also HA on m1, has a volume of a pool without a far copy: it cannot fail over.
    d[1].ok(&["storage", "pool", "create", "local", "dir"]);
    d[1].ok(&["storage", "volume", "create", "local", "keep"]);
    d[1].ok(&[
        "create",
        "busybox",
        "ha2",
        "--no-network",
        "--target",
        "m1",
        "-c",
        "cluster.ha=true",
        "--",
        "sleep",
        "86397",
    ]);
    d[1].ok(&[
        "storage", "volume", "attach", "local", "keep", "ha2", "/srv",
    ]);
    d[1].ok(&["start", "ha2"]);
    let watch = Watch::start(copies);
    // The index holds what makes it again, its volume too (written within the index's
    // next pass).
    etcd.wait_value(
        "/vessel/instances/default/ha2",
        "\"keep\"",
        Duration::from_secs(30),
    );

    // m1's daemon killed and its network cut.
    d[1].kill(libc::SIGKILL);
    nft(&sb.hosts[1], CUT_ALL);
    let killed = Instant::now();
    wait(
        "the old copy stopped by m1's watchdog",
        Duration::from_secs(10),
        || copies() == 0,
    );
    let stopped_after = killed.elapsed();
    let mut at = None;
    let deadline = killed + Duration::from_secs(40);
    while at.is_none() {
        assert!(
            Instant::now() < deadline,
            "ha1 not running elsewhere 40 s after the kill\nm0:\n{}\nm2:\n{}",
            d[0].log(),
            d[2].log()
        );
        at = answering(&d[2], "ha1");
        std::thread::sleep(Duration::from_millis(100));
    }
    let failover = killed.elapsed();
    eprintln!(
        "failover: the old copy stopped {:.1} s after the kill, ha1 answers on {} {:.1} s after it",
        stopped_after.as_secs_f64(),
        at.as_deref().unwrap_or("?"),
        failover.as_secs_f64()
    );
    assert_eq!(
        at.as_deref(),
        Some("m0"),
        "the placement group keeps it off m2"
    );
    assert!(
        stopped_after < Duration::from_secs(6),
        "the watchdog stopped the old copy only after the lease's TTL: {stopped_after:?}"
    );
    assert!(
        failover < Duration::from_secs(30),
        "failover took {failover:?}"
    );
    assert!(
        d[0].log().contains("Fetching image") || d[0].log().contains("healing: taken over"),
        "{}",
        d[0].log()
    );
    assert_eq!(copies(), 1);
    // Made again with its profile and its own key.
    let info = d[0].info("ha1");
    assert_eq!(info["profiles"], serde_json::json!(["hap"]), "{info}");
    assert_eq!(info["config"]["user.tier"], "a", "{info}");
    assert_eq!(info["config"]["user.mine"], "own", "{info}");
    // ha2 stays where its volume is, and the members say why.
    wait("ha2 refused a failover", Duration::from_secs(10), || {
        d[0].log()
            .contains("its volume local/keep is on a pool without a far copy")
    });
    let v = json(&d[2].ok(&["list", "--format", "json"]));
    let ha2 = v.as_array().unwrap().iter().find(|i| i["name"] == "ha2");
    assert_eq!(ha2.map(|i| i["location"].clone()), Some("m1".into()), "{v}");

    // m1 back (its network, then its daemon): its copy is stale and goes; ha1 stays on m0.
    nft(&sb.hosts[1], UNCUT);
    d[1].spawn();
    wait("m1's stale copy deleted", Duration::from_secs(30), || {
        d[1].log().contains("deleting the stale copy")
            && listed(&d[1]) == ["m0"]
            && listed(&d[0]) == ["m0"]
    });
    assert_eq!(copies(), 1);
    // A change to its profile reaches it where it was failed over to; its own key stays.
    d[2].ok(&["profile", "set", "hap", "user.tier=b", "user.mine=changed"]);
    let info = d[0].info("ha1");
    assert_eq!(info["config"]["user.tier"], "b", "{info}");
    assert_eq!(info["config"]["user.mine"], "own", "{info}");

    // m0 cut off from etcd, alive: it fences itself (the copy there stops before m0 can be
    // taken for dead) and ha1 moves to m1 (m2 still excluded by the group).
    // (Watched from the cut: the moment with no copy, between m0's stop and m1's start,
    // can be over before a slow profile change below returns. Seen once in a full run.)
    let gap = Watch::start(copies);
    nft(&sb.hosts[0], CUT_ETCD);
    let cut = Instant::now();
    // A change of its profile now reaches m0 over HTTPS, but not the cluster's index (m0
    // cannot write it): the copy made elsewhere from the index takes it there.
    d[2].ok(&["profile", "set", "hap", "user.tier=c"]);
    while gap.least() != 0 {
        assert!(
            cut.elapsed() < Duration::from_secs(10),
            "m0 did not fence itself within 10 s of the cut"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(gap);
    let fenced_after = cut.elapsed();
    let mut at = None;
    let deadline = cut + Duration::from_secs(40);
    while at.is_none() {
        assert!(
            Instant::now() < deadline,
            "ha1 not running elsewhere 40 s after m0 was cut off\nm1:\n{}",
            d[1].log()
        );
        at = answering(&d[2], "ha1");
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "partition: m0 fenced {:.1} s after the cut, ha1 answers on {} {:.1} s after it",
        fenced_after.as_secs_f64(),
        at.as_deref().unwrap_or("?"),
        cut.elapsed().as_secs_f64()
    );
    assert_eq!(at.as_deref(), Some("m1"));
    wait(
        "the profile's change missed by the index reaches ha1 on m1",
        Duration::from_secs(15),
        || d[1].info("ha1")["config"]["user.tier"] == "c",
    );
    assert_eq!(d[1].info("ha1")["config"]["user.mine"], "own");
    nft(&sb.hosts[0], UNCUT);
    wait("m0's stale copy deleted", Duration::from_secs(30), || {
        d[0].log().contains("deleting the stale copy") && listed(&d[0]) == ["m1"]
    });
    assert_eq!(copies(), 1);

    // Moved (cold) back to the member it was failed over from: that member keeps the copy
    // it receives (a copy is stale only if the member held it when it came back).
    wait("m0 online again", Duration::from_secs(20), || {
        json(&d[2].ok(&["cluster", "list", "--format", "json"]))
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == "m0" && m["state"] == "online")
    });
    // Moved at once: m0 is online to the others once its lease is in etcd again, but lowers
    // its own fence at its lease watchdog's next look, which can come after; the start
    // waits for that rather than failing.
    d[2].ok(&["move", "ha1", "--target", "m0"]);
    wait("ha1 on m0 after the move", Duration::from_secs(30), || {
        answering(&d[2], "ha1").as_deref() == Some("m0")
    });
    assert_eq!(copies(), 1);
    assert_eq!(
        watch.most(),
        1,
        "two copies of ha1 ran at once at some moment"
    );
    drop(watch);

    // Turned off, nothing fails over: m0's daemon killed, ha1 is stopped by its watchdog
    // and not started elsewhere; m0 back starts it again.
    d[1].ok(&["cluster", "healing", "off"]);
    d[0].kill(libc::SIGKILL);
    let killed = Instant::now();
    wait(
        "the copy stopped by m0's watchdog",
        Duration::from_secs(10),
        || copies() == 0,
    );
    std::thread::sleep(Duration::from_secs(12).saturating_sub(killed.elapsed()));
    assert_eq!(copies(), 0, "failed over while failover is off");
    d[0].spawn();
    wait("m0 back", Duration::from_secs(20), || {
        json(&d[0].ok(&["cluster", "info", "--format", "json"]))["connected"] == true
    });
    // Back, m0 starts again what its watchdog stopped: the index still names it. (Within a
    // minute: under the full suite's load 30 s were once not enough; alone it takes a few.)
    // (Failed twice in full runs, never alone: m0's log tells why if it fails again.)
    let deadline = Instant::now() + Duration::from_secs(60);
    while answering(&d[2], "ha1").as_deref() != Some("m0") {
        if Instant::now() >= deadline {
            let log = d[0].log();
            let lines: Vec<&str> = log.lines().filter(|l| !l.contains(" DEBUG ")).collect();
            panic!(
                "ha1 not running again on m0 within 60 s; the end of m0's log:\n{}",
                lines[lines.len().saturating_sub(150)..].join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(copies(), 1);

    // Failed over, then deleted while the member it came from is away: that member's copy
    // stays stale (the mark outlives the index entry), is deleted when it is back and never
    // starts; the name is free again after.
    d[1].ok(&["cluster", "healing", "2"]);
    let dropped = |d: &Daemon| d.log().matches("deleting the stale copy").count();
    let dropped_before = dropped(&d[0]);
    nft(&sb.hosts[0], CUT_ETCD);
    wait(
        "ha1 failed over to m1 again",
        Duration::from_secs(40),
        || answering(&d[2], "ha1").as_deref() == Some("m1"),
    );
    d[2].ok(&["delete", "ha1", "--force"]);
    wait("ha1 gone from the cluster", Duration::from_secs(10), || {
        listed(&d[2]).is_empty()
    });
    assert_eq!(copies(), 0);
    let watch = Watch::start(copies);
    nft(&sb.hosts[0], UNCUT);
    wait("m0's stale copy deleted", Duration::from_secs(30), || {
        dropped(&d[0]) > dropped_before && listed(&d[0]).is_empty()
    });
    // A few index passes more: nothing claims the name for the stale copy, nothing runs.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        watch.most(),
        0,
        "the deleted instance's stale copy ran again"
    );
    assert!(listed(&d[2]).is_empty(), "{:?}", listed(&d[2]));
    drop(watch);
    // (Launched through m2, which sends its image along: m0 has it under no alias.)
    d[2].ok(&[
        "launch",
        "busybox",
        "ha1",
        "--no-network",
        "--target",
        "m0",
        "--",
        "sleep",
        "86396",
    ]);
    d[0].ok(&["delete", "ha1", "--force"]);
    d[2].ok(&["delete", "anchor", "--force"]);
    d[1].ok(&["delete", "ha2", "--force"]);
}
