//! Membership of a cluster on a real 3-member etcd: three Vessel members, each with its own
//! daemon, root and network namespace (as the overlay tests do), etcd on the underlay.
//! Join with a single-use token (a wrong, reused or foreign one refused), every member seen
//! online with its capacity from any member, a killed member offline once its lease
//! expires and online again when its daemon is back, an etcd member killed and restarted
//! changing nothing, removal.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{
    address_on, init, json, listen, nft, token, unjoined, wait, CUT_ETCD, UNCUT,
};
use common::{Daemon, Sandbox};

/// Each member's name with what `pick` reads of its entry in `cluster list`.
fn per_member<T>(d: &Daemon, pick: impl Fn(&serde_json::Value) -> T) -> Vec<(String, T)> {
    let v = json(&d.ok(&["cluster", "list", "--format", "json"]));
    v.as_array()
        .unwrap()
        .iter()
        .map(|m| (m["name"].as_str().unwrap().to_string(), pick(m)))
        .collect()
}

fn states(d: &Daemon) -> Vec<(String, String)> {
    per_member(d, |m| m["state"].as_str().unwrap().to_string())
}

/// Each member's lease, as its heartbeat says.
fn leases(d: &Daemon) -> Vec<(String, i64)> {
    per_member(d, |m| m["heartbeat"]["lease"].as_i64().unwrap_or(0))
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn members_join_with_a_token_beat_and_go_offline_when_they_die() {
    let (sb, mut etcd, mut d) = unjoined(3, 3);

    // Not in a cluster yet: the commands say what to do.
    let err = d[0].fails(&["cluster", "list"]);
    assert!(err.contains("vessel cluster init"), "{err}");
    // An etcd that does not answer is named.
    let err = init(&d[0], "m0", &listen(0), "http://198.51.100.2:2999", false);
    assert!(err.contains("198.51.100.2:2999"), "{err}");
    assert!(
        !json(&d[0].ok(&["cluster", "info", "--format", "json"]))["enabled"]
            .as_bool()
            .unwrap()
    );

    let endpoints = etcd.endpoints();
    let out = init(&d[0], "m0", &listen(0), &endpoints, true);
    assert!(out.contains("Member m0 of cluster"), "{out}");
    // A second init into the same etcd is refused.
    let err = init(&d[1], "m1", &listen(1), &endpoints, false);
    assert!(err.contains("already holds a Vessel cluster"), "{err}");

    // Join: a good token once; the same token again, a wrong secret, or one for another
    // name, refused.
    let t1 = token(&d[0], "m1");
    d[1].ok(&["cluster", "join", &t1, "--address", &listen(1)]);
    let err = d[2].fails(&["cluster", "join", &t1, "--address", &listen(2)]);
    assert!(err.contains("join token refused"), "{err}");
    let t2 = token(&d[0], "m2");
    let forged = {
        // Same token, another secret (the format is hex of JSON).
        let bytes = hex::decode(t2.strip_prefix("vessel-join-").unwrap()).unwrap();
        let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        v["secret"] = "0".repeat(64).into();
        format!(
            "vessel-join-{}",
            hex::encode(serde_json::to_vec(&v).unwrap())
        )
    };
    let err = d[2].fails(&["cluster", "join", &forged, "--address", &listen(2)]);
    assert!(err.contains("join token refused"), "{err}");
    let err = d[2].fails(&["cluster", "join", "nonsense", "--address", &listen(2)]);
    assert!(err.contains("not a join token"), "{err}");
    let err = d[0].fails(&["cluster", "add", "m1"]);
    assert!(err.contains("member m1 exists already"), "{err}");
    // The good token for m2 still works after the forged attempt.
    d[2].ok(&["cluster", "join", &t2, "--address", &listen(2)]);

    // Any member lists all three, online, with capacity and a recent heartbeat.
    let all_online = pairs(&[("m0", "online"), ("m1", "online"), ("m2", "online")]);
    for di in &d {
        assert_eq!(states(di), all_online);
    }
    let list = json(&d[1].ok(&["cluster", "list", "--format", "json"]));
    for m in list.as_array().unwrap() {
        assert!(m["cpus"].as_u64().unwrap() >= 1, "{m}");
        assert!(m["memory"].as_u64().unwrap() > 0, "{m}");
        assert!(m["last_heartbeat"].is_string(), "{m}");
        assert_eq!(m["fingerprint"].as_str().unwrap().len(), 64, "{m}");
    }
    let table = d[2].ok(&["cluster", "list"]);
    for needle in ["m0", "m1", "m2", &listen(1), "online"] {
        assert!(table.contains(needle), "{needle} missing:\n{table}");
    }

    // Members' mutual TLS: a member's own certificate (the one its record pins) is that
    // member (role `member`: an administrator's and the calls between members) on every
    // other member; any other certificate is refused.
    let as_member = |from: usize, cert: &std::path::Path, key: &std::path::Path, to: usize| {
        let out = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &sb.hosts[from],
                "curl",
                "-sk",
                "--max-time",
                "5",
            ])
            .arg("--cert")
            .arg(cert)
            .arg("--key")
            .arg(key)
            .args(["-w", "\n%{http_code}"])
            .arg(format!("https://{}/1.0/auth/self", listen(to)))
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let (cert1, key1) = (
        d[1].root().join("server.crt"),
        d[1].root().join("server.key"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let me = loop {
        let out = as_member(1, &cert1, &key1, 0);
        if out.ends_with("200") {
            break out;
        }
        assert!(
            Instant::now() < deadline,
            "m1's certificate not trusted on m0: {out}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let who = json(me.rsplit_once('\n').unwrap().0);
    assert_eq!(
        (
            who["name"].as_str(),
            who["kind"].as_str(),
            who["role"].as_str()
        ),
        (Some("m1"), Some("member"), Some("member")),
        "{who}"
    );
    let (crt, key) = common::self_signed(&d[0].dir, "stranger");
    let out = as_member(1, &crt, &key, 0);
    assert!(out.ends_with("401"), "{out}");

    // The scheduler, from what the members' instances ask for: m0 and m2 each hold an
    // instance asking for 1 core and 1 GiB, m1 none. Spread picks m1; binpack one of the
    // others; what no member can hold is refused with the reason.
    for i in [0, 2] {
        d[i].busybox();
        d[i].ok(&[
            "launch",
            "busybox",
            &format!("big{i}"),
            "--no-network",
            "--target",
            &format!("m{i}"),
            "-l",
            "cpu=1",
            "-l",
            "memory=1GiB",
        ]);
    }
    let requested = |d: &Daemon, name: &str| {
        let v = json(&d.ok(&["cluster", "list", "--format", "json"]));
        v.as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == name)
            .and_then(|m| m["usage"]["memory_requested"].as_u64())
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while requested(&d[1], "m0") != 1 << 30 || requested(&d[1], "m2") != 1 << 30 {
        assert!(
            Instant::now() < deadline,
            "the heartbeats never carried the requests"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let place = |d: &Daemon, policy: &str| {
        let p = json(&d.ok(&[
            "cluster", "place", "--cpu", "0.5", "--memory", "256MiB", "--policy", policy,
            "--format", "json",
        ]));
        (
            p["member"].as_str().unwrap().to_string(),
            p["reason"].as_str().unwrap().to_string(),
        )
    };
    let (member, reason) = place(&d[0], "spread");
    assert_eq!(member, "m1", "{reason}");
    assert!(
        reason.starts_with("spread (the most room left): m1 has"),
        "{reason}"
    );
    let (member, reason) = place(&d[1], "binpack");
    assert!(member == "m0" || member == "m2", "{member}: {reason}");
    let err = d[0].fails(&["cluster", "place", "--memory", "64TiB"]);
    assert!(err.contains("64") && err.contains("m0"), "{err}");
    eprintln!("placement: {reason}\nrefused: {err}");
    let err = d[0].fails(&["cluster", "place", "--policy", "random"]);
    assert!(err.contains("spread"), "{err}");

    // m2's daemon killed: offline once its lease runs out (TTL 6 s), not before 2 s.
    d[2].kill(libc::SIGKILL);
    let killed = Instant::now();
    let offline = pairs(&[("m0", "online"), ("m1", "online"), ("m2", "offline")]);
    while states(&d[0]) != offline {
        assert!(
            killed.elapsed() < Duration::from_secs(15),
            "m2 still online: {:?}",
            states(&d[0])
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let took = killed.elapsed();
    assert!(
        took >= Duration::from_secs(2),
        "offline after {took:?}: sooner than its lease"
    );
    eprintln!("m2 seen offline {took:?} after its daemon was killed");
    // An offline member is never chosen.
    let (member, reason) = place(&d[0], "binpack");
    assert_eq!(member, "m0", "{reason}");
    assert!(reason.contains("2 of 3 members online"), "{reason}");
    // Back: the restarted daemon beats again as m2, from what it kept.
    d[2].spawn();
    let deadline = Instant::now() + Duration::from_secs(15);
    while states(&d[0]) != all_online {
        assert!(
            Instant::now() < deadline,
            "m2 not back: {:?}",
            states(&d[0])
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // etcd that lost the cluster while m2 was away (wiped, to be restored from a snapshot):
    // m2 says its membership ended, and takes it up again by itself once etcd holds the
    // cluster again, without a restart.
    d[2].kill(libc::SIGTERM);
    let record = etcd.ctl(&["get", "/vessel/cluster", "--print-value-only"]);
    let record = record.trim();
    assert!(record.starts_with('{'), "{record}");
    etcd.ctl(&["del", "/vessel/cluster"]);
    d[2].spawn();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let info = json(&d[2].ok(&["cluster", "info", "--format", "json"]));
        if let Some(why) = info["ended"].as_str() {
            assert!(why.contains("holds no cluster"), "{why}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "m2 does not say its membership ended: {info}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    etcd.ctl(&["put", "/vessel/cluster", record]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while states(&d[0]) != all_online
        || !json(&d[2].ok(&["cluster", "info", "--format", "json"]))["ended"].is_null()
    {
        assert!(
            Instant::now() < deadline,
            "m2 not back once etcd holds the cluster again: {:?}",
            states(&d[0])
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // An etcd member killed and restarted changes nothing: the members stay online through
    // it (a majority is left), and after it, each on the lease it had (calls that its
    // client hands to the dead etcd member fail for a while; no reason to drop a lease).
    let before = leases(&d[0]);
    etcd.members[1].kill();
    std::thread::sleep(Duration::from_secs(8));
    assert_eq!(states(&d[1]), all_online);
    etcd.members[1].spawn("existing");
    etcd.wait_healthy(Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(2));
    for di in &d {
        assert_eq!(states(di), all_online);
    }
    assert_eq!(leases(&d[0]), before, "a lease was replaced");

    // Removal: an online member only with --force; not oneself; a stopped one.
    let err = d[0].fails(&["cluster", "remove", "m2"]);
    assert!(err.contains("is online"), "{err}");
    let err = d[0].fails(&["cluster", "remove", "m0"]);
    assert!(err.contains("is this server"), "{err}");
    d[2].busybox();
    d[2].ok(&[
        "create",
        "busybox",
        "h2",
        "--no-network",
        "--target",
        "m2",
        "-c",
        "cluster.ha=true",
        "--",
        "sleep",
        "600",
    ]);
    d[2].kill(libc::SIGTERM);
    // A clean stop revokes the lease: offline at once.
    assert_eq!(
        states(&d[0]),
        pairs(&[("m0", "online"), ("m1", "online"), ("m2", "offline")])
    );
    d[0].ok(&["cluster", "remove", "m2"]);
    assert_eq!(states(&d[1]), pairs(&[("m0", "online"), ("m1", "online")]));
    // A removed member's certificate is refused from then on.
    let (cert2, key2) = (
        d[2].root().join("server.crt"),
        d[2].root().join("server.key"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !as_member(2, &cert2, &key2, 0).ends_with("401") {
        assert!(
            Instant::now() < deadline,
            "m2's certificate still trusted after its removal"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let err = d[0].fails(&["cluster", "remove", "m2"]);
    assert!(err.contains("no member m2"), "{err}");

    // Back after its removal: it says its membership ended, beats no more, does not start
    // its HA instance as if outside a cluster, and joins again with a new token.
    d[2].spawn();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let info = json(&d[2].ok(&["cluster", "info", "--format", "json"]));
        if let Some(why) = info["ended"].as_str() {
            assert!(why.contains("was removed"), "{why}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "m2 does not say its membership ended: {info}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let said = d[2].ok(&["cluster", "info"]);
    assert!(said.contains("join a cluster again"), "{said}");
    // Not "etcd does not answer" (it does), nor "catching up" (its own again).
    assert!(said.contains("no (the membership ended, above)"), "{said}");
    assert!(said.contains("this server's own again"), "{said}");
    let err = d[2].fails(&["start", "h2"]);
    assert!(err.contains("membership ended"), "{err}");
    assert_eq!(states(&d[0]), pairs(&[("m0", "online"), ("m1", "online")]));
    // Only as m2, into the cluster its HA instance belongs to.
    let err = d[2].fails(&[
        "cluster",
        "join",
        &token(&d[0], "m7"),
        "--address",
        &listen(2),
    ]);
    assert!(err.contains("again as m2 only"), "{err}");
    let t = token(&d[0], "m2");
    d[2].ok(&["cluster", "join", &t, "--address", &listen(2)]);
    let deadline = Instant::now() + Duration::from_secs(15);
    while states(&d[0]) != all_online {
        assert!(
            Instant::now() < deadline,
            "m2 not back after joining again: {:?}",
            states(&d[0])
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let info = json(&d[2].ok(&["cluster", "info", "--format", "json"]));
    assert!(info["ended"].is_null(), "{info}");
    // The index still names m2 for h2 (nothing failed it over): it starts there again.
    d[2].ok(&["start", "h2"]);
    assert_eq!(status(&d[2], "h2"), "running");
    assert!(d[2]
        .fails(&[
            "cluster",
            "join",
            &token(&d[0], "m9"),
            "--address",
            &listen(2)
        ])
        .contains("already"));
}

/// Runs `nft` in the namespace `ns` with `script` on its standard input.
fn status(d: &Daemon, name: &str) -> String {
    d.info(name)["status"].as_str().unwrap().to_string()
}

#[test]
fn a_member_cut_off_from_etcd_fences_itself_before_the_others_see_it_offline() {
    let (sb, _etcd, mut d) = unjoined(3, 2);
    let endpoints = _etcd.endpoints();
    init(&d[0], "m0", &listen(0), &endpoints, true);
    let t = token(&d[0], "m1");
    d[1].ok(&["cluster", "join", &t, "--address", &listen(1)]);
    d[1].busybox();
    d[1].ok(&[
        "launch",
        "busybox",
        "ha",
        "--no-network",
        "--target",
        "m1",
        "-c",
        "cluster.ha=true",
        "--",
        "sleep",
        "100000",
    ]);
    d[1].ok(&[
        "launch",
        "busybox",
        "plain",
        "--no-network",
        "--target",
        "m1",
        "--",
        "sleep",
        "100000",
    ]);
    let err = d[1].fails(&["config", "set", "plain", "cluster.ha=maybe"]);
    assert!(err.contains("true or false"), "{err}");
    assert_eq!(states(&d[0]), pairs(&[("m0", "online"), ("m1", "online")]));

    // m1 cut off from every etcd member (its own included) without being killed.
    nft(&sb.hosts[1], CUT_ETCD);
    let cut = Instant::now();
    let (mut stopped_at, mut offline_at) = (None, None);
    while stopped_at.is_none() || offline_at.is_none() {
        assert!(
            cut.elapsed() < Duration::from_secs(30),
            "after 30 s: ha stopped at {stopped_at:?}, m1 offline at {offline_at:?}\n{}",
            d[1].log()
        );
        if stopped_at.is_none() && status(&d[1], "ha") == "stopped" {
            stopped_at = Some(cut.elapsed());
        }
        if offline_at.is_none() && states(&d[0]) == pairs(&[("m0", "online"), ("m1", "offline")]) {
            offline_at = Some(cut.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let (stopped_at, offline_at) = (stopped_at.unwrap(), offline_at.unwrap());
    eprintln!("cut off: ha stopped after {stopped_at:?}, m1 seen offline after {offline_at:?}");
    assert!(
        stopped_at < offline_at,
        "the HA instance ran on after the others could take m1 for dead: stopped {stopped_at:?}, offline {offline_at:?}"
    );
    assert_eq!(
        status(&d[1], "plain"),
        "running",
        "only HA instances are fenced"
    );
    let info = json(&d[1].ok(&["cluster", "info", "--format", "json"]));
    assert_eq!(info["fenced"], true, "{info}");

    // Reconnected: a new lease, online again, the fence lowered; the HA instance, not failed
    // over (failover is off here), starts again on this member.
    nft(&sb.hosts[1], UNCUT);
    let deadline = Instant::now() + Duration::from_secs(20);
    while states(&d[0]) != pairs(&[("m0", "online"), ("m1", "online")]) {
        assert!(
            Instant::now() < deadline,
            "m1 not back: {:?}",
            states(&d[0])
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while json(&d[1].ok(&["cluster", "info", "--format", "json"]))["fenced"] != false {
        assert!(Instant::now() < deadline, "the fence stayed up");
        std::thread::sleep(Duration::from_millis(100));
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while status(&d[1], "ha") != "running" {
        assert!(
            Instant::now() < deadline,
            "the HA instance did not start again after the fence: {}\n{}",
            status(&d[1], "ha"),
            d[1].log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // A member whose daemon restarts while it is cut off (its HA instance ran on without
    // it) fences itself half a TTL after its start.
    nft(&sb.hosts[1], CUT_ETCD);
    d[1].kill(libc::SIGKILL);
    d[1].spawn();
    let started = Instant::now();
    while status(&d[1], "ha") != "stopped" {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the restarted, cut-off member did not fence:\n{}",
            d[1].log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "restarted while cut off: ha stopped {:?} after the start",
        started.elapsed()
    );
    assert_eq!(status(&d[1], "plain"), "running");
    // (The killed daemon's watchdog may have stopped it first, 4.5 s after the last
    // renewal; the new daemon says it is fenced half a TTL after its start.)
    let deadline = Instant::now() + Duration::from_secs(10);
    while json(&d[1].ok(&["cluster", "info", "--format", "json"]))["fenced"] != true {
        assert!(
            Instant::now() < deadline,
            "the restarted, cut-off member does not say it is fenced"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    nft(&sb.hosts[1], UNCUT);
    let deadline = Instant::now() + Duration::from_secs(20);
    while json(&d[1].ok(&["cluster", "info", "--format", "json"]))["connected"] != true {
        assert!(
            Instant::now() < deadline,
            "m1 did not come back after its restart"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    d[1].ok(&["delete", "ha", "plain", "--force"]);
}

/// The member each instance lives on, as `vessel list` on `d` shows them.
fn locations(d: &Daemon) -> std::collections::BTreeMap<String, (String, String)> {
    let v = json(&d.ok(&["list", "--format", "json"]));
    v.as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["name"].as_str().unwrap().to_string(),
                (
                    i["location"].as_str().unwrap_or("-").to_string(),
                    i["status"].as_str().unwrap().to_string(),
                ),
            )
        })
        .collect()
}

#[test]
fn instances_are_placed_over_the_members_and_reached_from_any() {
    use common::Framed;
    use vessel_api::stream::FrameKind;

    let (_sb, etcd, mut d) = unjoined(3, 3);
    init(&d[0], "m0", &listen(0), &etcd.endpoints(), true);
    for i in 1..3 {
        let t = token(&d[0], &format!("m{i}"));
        d[i].ok(&["cluster", "join", &t, "--address", &listen(i)]);
    }
    for di in &d {
        di.busybox();
    }
    let members = |names: &[&str]| {
        names
            .iter()
            .map(|s| s.to_string())
            .collect::<std::collections::BTreeSet<_>>()
    };

    // Spread: three launches from one member land one on each.
    for name in ["a", "b", "c"] {
        d[0].ok(&[
            "launch",
            "busybox",
            name,
            "--no-network",
            "-l",
            "memory=64MiB",
        ]);
    }
    let at = locations(&d[1]);
    let placed: std::collections::BTreeSet<String> = at.values().map(|(m, _)| m.clone()).collect();
    assert_eq!(placed, members(&["m0", "m1", "m2"]), "{at:?}");
    // Each runs where it is said to: its process is in that member's daemon's cgroups.
    for (name, (member, status)) in &at {
        assert_eq!(status, "running", "{name}: {at:?}");
        let pid = d[2].info(name)["state"]["pid"].as_i64().unwrap() as i32;
        let i: usize = member[1..].parse().unwrap();
        assert!(
            d[i].cgroup_pids().contains(&pid),
            "{name} (pid {pid}) is not in {member}'s cgroups"
        );
    }
    let table = d[2].ok(&["list"]);
    assert!(table.contains("LOCATION"), "{table}");
    for (name, (member, _)) in &at {
        assert_eq!(d[0].info(name)["location"], member.as_str(), "{name}");
    }

    // --target: on the member named, from any other.
    d[1].ok(&[
        "launch",
        "busybox",
        "t2",
        "--no-network",
        "--target",
        "m2",
        "--",
        "sleep",
        "100000",
    ]);
    assert_eq!(locations(&d[0])["t2"].0, "m2");
    // No name twice in the cluster, wherever it is made.
    let elsewhere = at.iter().find(|(_, (m, _))| m != "m2").unwrap().0.clone();
    let err = d[2].fails(&[
        "launch",
        "busybox",
        &elsewhere,
        "--no-network",
        "--target",
        "m2",
    ]);
    assert!(err.contains("exists already"), "{err}");
    let err = d[1].fails(&["copy", "a", "b"]);
    assert!(err.contains("exists already"), "{err}");
    let err = d[2].fails(&["rename", "a", "c"]);
    assert!(err.contains("exists already"), "{err}");
    // Nor a backup restored under a name another member holds.
    d[2].ok(&["backup", "create", "t2"]);
    let err = d[2].fails(&["backup", "restore", "t2", &elsewhere]);
    assert!(err.contains("exists already"), "{err}");
    assert_eq!(locations(&d[0])[&elsewhere].0, at[&elsewhere].0);
    let err = d[0].fails(&["launch", "busybox", "x", "--no-network", "--target", "m9"]);
    assert!(err.contains("no member m9"), "{err}");
    // A placement that fits nowhere: refused with each member's room, nothing made.
    let err = d[0].fails(&[
        "launch",
        "busybox",
        "huge",
        "--no-network",
        "-l",
        "memory=64TiB",
    ]);
    assert!(err.contains("no member fits"), "{err}");
    assert!(!locations(&d[0]).contains_key("huge"));

    // Any member answers for an instance on another: exec, console, state changes.
    let on = |member: &str| {
        locations(&d[0])
            .into_iter()
            .find(|(_, (m, _))| m == member)
            .unwrap()
            .0
    };
    let (on_m1, on_m2) = (on("m1"), on("m2"));
    let out = d[0].ok(&[
        "exec",
        &on_m1,
        "-T",
        "--",
        "sh",
        "-c",
        "echo from-$(hostname)",
    ]);
    assert!(out.contains(&format!("from-{on_m1}")), "{out}");
    let req = r#"{"command":["sh","-c","read x; echo got:$x; exit 7"]}"#;
    let mut ex = Framed::open(
        &d[2].socket,
        "POST",
        &format!("/1.0/instances/{on_m1}/exec"),
        req,
    );
    ex.send(FrameKind::Stdin, b"across\n");
    let (out, code) = ex.wait_exit();
    assert!(out.contains("got:across"), "{out}");
    assert_eq!(code, 7);
    let mut con = Framed::open(
        &d[0].socket,
        "GET",
        &format!("/1.0/instances/{on_m2}/console"),
        "",
    );
    con.send(FrameKind::Stdin, b"echo con$((6*7))sole\n");
    let out = con.read_until("con42sole");
    assert!(out.contains("con42sole"), "{out}");
    drop(con);
    d[1].ok(&["stop", &on_m2, "--force"]);
    assert_eq!(locations(&d[0])[&on_m2].1, "stopped");
    d[0].ok(&["start", &on_m2]);
    assert_eq!(d[1].info(&on_m2)["status"], "running");

    // Moved, cold, to another member (asked of a third): its files go with it, it runs
    // there and only there, and any member finds it at its new place.
    d[0].ok(&["exec", &on_m1, "-T", "--", "sh", "-c", "echo kept > /mark"]);
    d[2].ok(&["snapshot", "create", &on_m1, "before"]);
    let moved = Instant::now();
    d[2].ok(&["move", &on_m1, "--target", "m0"]);
    eprintln!("cold move of a running container: {:?}", moved.elapsed());
    assert_eq!(
        locations(&d[1])[&on_m1],
        ("m0".to_string(), "running".to_string())
    );
    let out = d[1].ok(&["exec", &on_m1, "-T", "--", "cat", "/mark"]);
    assert!(out.contains("kept"), "{out}");
    let pid = d[1].info(&on_m1)["state"]["pid"].as_i64().unwrap() as i32;
    assert!(d[0].cgroup_pids().contains(&pid));
    assert!(!d[1].cgroup_pids().contains(&pid));
    let snaps = d[2].ok(&["snapshot", "list", &on_m1]);
    assert!(snaps.contains("before"), "{snaps}");
    let err = d[1].fails(&["move", &on_m1, "--target", "m0"]);
    assert!(err.contains("on member m0 already"), "{err}");
    let err = d[1].fails(&["move", &on_m1, "--target", "m9"]);
    assert!(err.contains("no member m9"), "{err}");
    assert_eq!(locations(&d[2])[&on_m1].0, "m0");
    // A move the other member cannot take (its root disk's pool is not there): nothing is
    // left there, and it runs on here.
    d[0].ok(&["storage", "pool", "create", "local", "dir"]);
    d[0].ok(&[
        "launch",
        "busybox",
        "pooled",
        "--no-network",
        "--target",
        "m0",
        "--storage",
        "local",
        "-l",
        "disk=64MiB",
    ]);
    let err = d[1].fails(&["move", "pooled", "--target", "m2"]);
    assert!(err.contains("local"), "{err}");
    assert_eq!(
        locations(&d[2])["pooled"],
        ("m0".to_string(), "running".to_string())
    );
    d[0].ok(&["delete", "--force", "pooled"]);
    // A container with a volume of its own moves with it: the volume is made in the pool
    // of the same name there, filled (owners and all) and attached at the same place, and
    // deleted here. A member without that pool or with a volume of that name, and a volume
    // another instance also has, are refused before anything stops.
    d[0].ok(&["storage", "volume", "create", "local", "data"]);
    d[0].ok(&[
        "create",
        "busybox",
        "holder",
        "--no-network",
        "--target",
        "m0",
    ]);
    d[0].ok(&[
        "storage", "volume", "attach", "local", "data", "holder", "/data",
    ]);
    d[0].ok(&["start", "holder"]);
    d[0].ok(&[
        "exec",
        "holder",
        "-T",
        "--",
        "sh",
        "-c",
        "echo carried > /data/mark && mkdir /data/sub && chown 1000:1000 /data/sub",
    ]);
    let running_on_m0 = ("m0".to_string(), "running".to_string());
    let err = d[1].fails(&["move", "holder", "--target", "m2"]);
    assert!(err.contains("no pool \"local\""), "{err}");
    assert_eq!(locations(&d[2])["holder"], running_on_m0);
    d[2].ok(&["storage", "pool", "create", "local", "dir"]);
    d[2].ok(&["storage", "volume", "create", "local", "data"]);
    let err = d[1].fails(&["move", "holder", "--target", "m2"]);
    assert!(err.contains("has a volume data"), "{err}");
    d[2].ok(&["storage", "volume", "delete", "local", "data"]);
    d[0].ok(&[
        "create",
        "busybox",
        "sharer",
        "--no-network",
        "--target",
        "m0",
    ]);
    d[0].ok(&[
        "storage", "volume", "attach", "local", "data", "sharer", "/d",
    ]);
    let err = d[1].fails(&["move", "holder", "--target", "m2"]);
    assert!(err.contains("also attached to sharer"), "{err}");
    assert_eq!(locations(&d[2])["holder"], running_on_m0);
    let err = d[0].fails(&["delete", "--volumes", "sharer"]);
    assert!(err.contains("also attached to holder"), "{err}");
    d[0].ok(&["delete", "sharer"]);
    // The target fails to make the volume (a stray file where it would go): the move fails
    // with the reason, nothing stays there, and the instance runs on here with its data.
    let pool = json(&d[2].ok(&["storage", "pool", "info", "local", "--format", "json"]));
    let stray = std::path::Path::new(pool["sources"][0].as_str().unwrap()).join("fs/data");
    std::fs::write(&stray, "in the way").unwrap();
    let err = d[1].fails(&["move", "holder", "--target", "m2"]);
    assert!(err.contains("member m2") && err.contains("data"), "{err}");
    assert_eq!(locations(&d[1])["holder"], running_on_m0);
    let on_m2 = json(&d[2].ok(&["storage", "volume", "list", "local", "--format", "json"]));
    assert_eq!(on_m2.as_array().map(Vec::len), Some(0), "{on_m2}");
    let out = d[0].ok(&["exec", "holder", "-T", "--", "cat", "/data/mark"]);
    assert!(out.contains("carried"), "{out}");
    std::fs::remove_file(&stray).unwrap();
    let moved = Instant::now();
    d[1].ok(&["move", "holder", "--target", "m2"]);
    eprintln!("cold move with a volume: {:?}", moved.elapsed());
    assert_eq!(
        locations(&d[0])["holder"],
        ("m2".to_string(), "running".to_string())
    );
    let out = d[0].ok(&[
        "exec",
        "holder",
        "-T",
        "--",
        "sh",
        "-c",
        "cat /data/mark; stat -c %u /data/sub",
    ]);
    assert!(out.contains("carried") && out.contains("1000"), "{out}");
    let vol = json(&d[2].ok(&[
        "storage", "volume", "info", "local", "data", "--format", "json",
    ]));
    assert_eq!(vol["attached_to"][0]["instance"], "holder", "{vol}");
    assert_eq!(vol["attached_to"][0]["path"], "/data", "{vol}");
    let err = d[0].fails(&["storage", "volume", "info", "local", "data"]);
    assert!(err.contains("not found"), "{err}");
    // Deleted with its volumes.
    d[2].ok(&["delete", "--force", "--volumes", "holder"]);
    let err = d[2].fails(&["storage", "volume", "info", "local", "data"]);
    assert!(err.contains("not found"), "{err}");
    d[2].ok(&["storage", "pool", "delete", "local"]);
    // An instance of an image only its member has: the image goes along.
    d[1].ok(&["create", "busybox", "src", "--no-network", "--target", "m1"]);
    d[1].ok(&["publish", "src", "--alias", "mine"]);
    let mine = d[1].info_image("mine")["fingerprint"]
        .as_str()
        .unwrap()
        .to_string();
    d[1].ok(&["launch", "mine", "custom", "--no-network", "--target", "m1"]);
    // (image info is the member's own; image list names every member's.)
    assert!(!d[2].vessel(&["image", "info", &mine]).status.success());
    d[0].ok(&["move", "custom", "--target", "m2"]);
    assert_eq!(
        locations(&d[0])["custom"],
        ("m2".to_string(), "running".to_string())
    );
    assert!(d[2].vessel(&["image", "info", &mine]).status.success());

    // Evacuation of m1 (asked of another member): nothing new goes there; each of its
    // instances moved (running ones run on elsewhere, stopped ones stay stopped) or stopped
    // in place as its key says. Restore brings them back as they were.
    d[1].ok(&[
        "launch",
        "busybox",
        "mover",
        "--no-network",
        "--target",
        "m1",
    ]);
    d[1].ok(&[
        "launch",
        "busybox",
        "stays",
        "--no-network",
        "--target",
        "m1",
        "-c",
        "cluster.evacuate=stop",
    ]);
    let err = d[1].fails(&["config", "set", "stays", "cluster.evacuate=sideways"]);
    assert!(err.contains("auto, migrate, live-migrate or stop"), "{err}");
    let before = locations(&d[0]);
    assert_eq!(before["src"], ("m1".to_string(), "stopped".to_string()));
    let evacuated = Instant::now();
    d[0].ok(&["cluster", "evacuate", "m1"]);
    eprintln!("evacuated m1 (3 instances) in {:?}", evacuated.elapsed());
    assert_eq!(
        states(&d[2]),
        pairs(&[("m0", "online"), ("m1", "evacuated"), ("m2", "online")])
    );
    let during = locations(&d[2]);
    for (name, status) in [("mover", "running"), ("src", "stopped")] {
        assert_ne!(during[name].0, "m1", "{name}: {during:?}");
        assert_eq!(during[name].1, status, "{name}: {during:?}");
    }
    assert_eq!(during["stays"], ("m1".to_string(), "stopped".to_string()));
    let err = d[2].fails(&["launch", "busybox", "y", "--no-network", "--target", "m1"]);
    assert!(err.contains("m1 is evacuated"), "{err}");
    d[2].ok(&["launch", "busybox", "newbie", "--no-network"]);
    assert_ne!(locations(&d[0])["newbie"].0, "m1");
    d[2].ok(&["cluster", "restore", "m1"]);
    let after = locations(&d[0]);
    for name in ["mover", "src", "stays"] {
        let want = if name == "src" { "stopped" } else { "running" };
        assert_eq!(
            after[name],
            ("m1".to_string(), want.to_string()),
            "{name}: {after:?}"
        );
    }
    assert_eq!(
        states(&d[0]),
        pairs(&[("m0", "online"), ("m1", "online"), ("m2", "online")])
    );

    // The cluster's policy and placement groups: binpack puts new instances together, but
    // never two of one group on a member; a fourth of a group fits nowhere on three.
    d[0].ok(&["cluster", "policy", "binpack"]);
    let info = json(&d[1].ok(&["cluster", "info", "--format", "json"]));
    assert_eq!(info["policy"], "binpack", "{info}");
    let err = d[1].fails(&["cluster", "policy", "random"]);
    assert!(err.contains("spread"), "{err}");
    for name in ["p1", "p2"] {
        d[2].ok(&["launch", "busybox", name, "--no-network"]);
    }
    let at = locations(&d[0]);
    assert_eq!(at["p1"].0, at["p2"].0, "binpack: {at:?}");
    for name in ["r1", "r2", "r3"] {
        d[2].ok(&[
            "launch",
            "busybox",
            name,
            "--no-network",
            "-c",
            "cluster.group=db",
        ]);
    }
    let at = locations(&d[0]);
    let spread: std::collections::BTreeSet<&String> =
        ["r1", "r2", "r3"].iter().map(|n| &at[*n].0).collect();
    assert_eq!(spread.len(), 3, "a group shares no member: {at:?}");
    let err = d[2].fails(&[
        "launch",
        "busybox",
        "r4",
        "--no-network",
        "-c",
        "cluster.group=db",
    ]);
    assert!(err.contains("no member fits"), "{err}");
    let err = d[2].fails(&["config", "set", "r1", "cluster.group=no good"]);
    assert!(err.contains("cluster.group"), "{err}");
    d[0].ok(&["cluster", "policy", "spread"]);

    // A member down: its instances are listed with their place and no state; nothing is
    // launched onto it, and requests for its instances say where they are.
    d[2].kill(libc::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(15);
    while states(&d[0]) != pairs(&[("m0", "online"), ("m1", "online"), ("m2", "offline")]) {
        assert!(
            Instant::now() < deadline,
            "m2 not offline: {:?}",
            states(&d[0])
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let at = locations(&d[0]);
    assert_eq!(at["t2"], ("m2".to_string(), "error".to_string()), "{at:?}");
    let err = d[0].fails(&["launch", "busybox", "y", "--no-network", "--target", "m2"]);
    assert!(err.contains("member m2 is offline"), "{err}");
    let err = d[1].fails(&["exec", "t2", "-T", "--", "true"]);
    assert!(err.contains("member m2 is offline"), "{err}");
    d[2].spawn();
    let deadline = Instant::now() + Duration::from_secs(20);
    while locations(&d[0])["t2"].1 != "running" {
        assert!(
            Instant::now() < deadline,
            "t2 not back: {:?}",
            locations(&d[0])
        );
        std::thread::sleep(Duration::from_millis(300));
    }

    // Deleted through any member; the name is free again once it is gone.
    let names: Vec<String> = locations(&d[0]).into_keys().collect();
    let mut args = vec!["delete", "--force"];
    args.extend(names.iter().map(String::as_str));
    d[1].ok(&args);
    assert!(locations(&d[2]).is_empty());
    // Let go as the deletion ends: usable again at once, on another member.
    d[2].ok(&["launch", "busybox", "t2", "--no-network", "--target", "m0"]);
    assert_eq!(locations(&d[1])["t2"].0, "m0");
    d[0].ok(&["delete", "--force", "t2"]);
}

/// The address of `name`'s NIC on `network`, as `vessel list` on `d` shows it.
#[test]
fn a_cluster_network_spans_the_members_as_they_join() {
    let (sb, etcd, d) = unjoined(3, 3);
    init(&d[0], "m0", &listen(0), &etcd.endpoints(), true);
    let t = token(&d[0], "m1");
    d[1].ok(&["cluster", "join", &t, "--address", &listen(1)]);
    for di in &d {
        di.busybox();
    }

    // Made through one member, on every member, peered with the others.
    let err = d[0].fails(&[
        "network",
        "create",
        "cn",
        "--subnet",
        "10.77.0.0/24",
        "--cluster",
        "--vni",
        "5000",
    ]);
    assert!(err.contains("--vni"), "{err}");
    d[0].ok(&[
        "network",
        "create",
        "cn",
        "--subnet",
        "10.77.0.0/24",
        "--cluster",
    ]);
    let info = |d: &Daemon| json(&d.ok(&["network", "info", "cn", "--format", "json"]));
    wait("cn on m1", Duration::from_secs(10), || {
        d[1].vessel(&["network", "info", "cn"]).status.success()
    });
    for (i, other) in [(0, 1), (1, 0)] {
        let n = info(&d[i]);
        assert_eq!(n["type"], "cluster", "{n}");
        assert_eq!(
            n["peers"],
            serde_json::json!([Sandbox::host_addr(other)]),
            "{n}"
        );
    }
    let err = d[1].fails(&[
        "network",
        "create",
        "cn",
        "--subnet",
        "10.78.0.0/24",
        "--cluster",
    ]);
    assert!(err.contains("exists"), "{err}");
    for (i, name) in [(0, "c0"), (1, "c1")] {
        d[i].ok(&[
            "launch",
            "busybox",
            name,
            "--network",
            "cn",
            "--target",
            &format!("m{i}"),
        ]);
    }

    // A member joining later gets the network, and the others peer with it.
    let t = token(&d[0], "m2");
    d[2].ok(&["cluster", "join", &t, "--address", &listen(2)]);
    wait("cn on m2", Duration::from_secs(10), || {
        d[2].vessel(&["network", "info", "cn"]).status.success()
    });
    wait("m2 a peer of m0's cn", Duration::from_secs(10), || {
        info(&d[0])["peers"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!(Sandbox::host_addr(2)))
    });
    d[2].ok(&[
        "launch",
        "busybox",
        "c2",
        "--network",
        "cn",
        "--target",
        "m2",
    ]);

    // One address space: no address twice, each member's from its own block.
    let ips: Vec<String> = ["c0", "c1", "c2"]
        .iter()
        .map(|n| address_on(&d[1], n, "cn"))
        .collect();
    let distinct: std::collections::BTreeSet<&String> = ips.iter().collect();
    assert_eq!(distinct.len(), 3, "{ips:?}");
    let blocks: std::collections::BTreeSet<u8> = ips
        .iter()
        .map(|ip| ip.rsplit('.').next().unwrap().parse::<u8>().unwrap() / 16)
        .collect();
    assert_eq!(blocks.len(), 3, "one block per member: {ips:?}");
    eprintln!("cluster network addresses: {ips:?}");

    // Traffic across members over the overlay, by names that resolve everywhere.
    for (i, from, to) in [(0, "c0", "c2"), (2, "c2", "c1"), (1, "c1", "c0")] {
        wait(
            &format!("{from} pinging {to} by name"),
            Duration::from_secs(20),
            || {
                d[i].vessel(&["exec", from, "-T", "--", "ping", "-c", "1", "-W", "2", to])
                    .status
                    .success()
            },
        );
    }
    let out = d[0].ok(&["exec", "c0", "-T", "--", "nslookup", "c2"]);
    assert!(out.contains(&ips[2]), "{out}");

    // A project-bound caller reaching another member's instance through this one is that
    // caller there: its project's instance, not default's of the same name, and only its
    // project's in a listing.
    // (Projects are the cluster's: made on one member, there on the others.)
    d[0].ok(&["project", "create", "p1", "-c", "features.images=false"]);
    wait("p1 on m1", Duration::from_secs(5), || {
        d[1].vessel(&["project", "info", "p1"]).status.success()
    });
    d[0].ok(&[
        "launch",
        "busybox",
        "web",
        "--no-network",
        "--target",
        "m1",
        "-c",
        "user.which=default",
    ]);
    d[0].ok(&[
        "launch",
        "busybox",
        "web",
        "--no-network",
        "--target",
        "m1",
        "--project",
        "p1",
        "-c",
        "user.which=p1",
    ]);
    let user = d[0].token("alice", "p1", "user");
    let as_user = |path: &str| {
        let out = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &sb.hosts[0],
                "curl",
                "-sk",
                "--max-time",
                "10",
            ])
            .arg("-H")
            .arg(format!("Authorization: Bearer {user}"))
            .arg(format!("https://{}{path}", listen(0)))
            .output()
            .expect("curl");
        json(&String::from_utf8_lossy(&out.stdout))
    };
    let web = as_user("/1.0/instances/web");
    assert_eq!(web["config"]["user.which"], "p1", "{web}");
    let listed = as_user("/1.0/instances");
    let names: Vec<&str> = listed
        .as_array()
        .unwrap_or_else(|| panic!("{listed}"))
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["web"], "only p1's: {listed}");
    assert_eq!(listed[0]["config"]["user.which"], "p1", "{listed}");
    // Its role there is its own: a user may not delete.
    let out = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &sb.hosts[0],
            "curl",
            "-sk",
            "--max-time",
            "10",
            "-X",
            "DELETE",
        ])
        .arg("-H")
        .arg(format!("Authorization: Bearer {user}"))
        .args(["-w", "\n%{http_code}"])
        .arg(format!("https://{}/1.0/instances/web", listen(0)))
        .output()
        .expect("curl");
    let out = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.ends_with("403"), "{out}");
    d[0].ok(&["delete", "--force", "web"]);
    d[0].ok(&["delete", "--force", "web", "--project", "p1"]);

    // Deleted through any member once no member has a NIC on it; gone everywhere.
    let err = d[2].fails(&["network", "delete", "cn"]);
    assert!(err.contains("used by"), "{err}");
    d[1].ok(&["delete", "--force", "c0", "c1", "c2"]);
    wait("cn deleted", Duration::from_secs(15), || {
        d[2].vessel(&["network", "delete", "cn"]).status.success()
    });
    for di in &d {
        wait("cn gone", Duration::from_secs(10), || {
            !di.vessel(&["network", "info", "cn"]).status.success()
        });
    }

    // Made again under the same name while m2 is cut off from etcd: once back, m2 drops its
    // copy of the old network and makes the new one.
    let subnet = |di: &Daemon| -> Option<String> {
        let out = di.vessel(&["network", "info", "again", "--format", "json"]);
        out.status.success().then(|| {
            json(&String::from_utf8_lossy(&out.stdout))["subnet"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
    };
    d[0].ok(&[
        "network",
        "create",
        "again",
        "--subnet",
        "10.78.0.0/24",
        "--cluster",
    ]);
    wait("again on m2", Duration::from_secs(15), || {
        subnet(&d[2]).as_deref() == Some("10.78.0.0/24")
    });
    nft(&sb.hosts[2], CUT_ETCD);
    d[0].ok(&["network", "delete", "again"]);
    d[0].ok(&[
        "network",
        "create",
        "again",
        "--subnet",
        "10.79.0.0/24",
        "--cluster",
    ]);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(subnet(&d[2]).as_deref(), Some("10.78.0.0/24"), "m2 cut off");
    nft(&sb.hosts[2], UNCUT);
    wait("the new again on m2", Duration::from_secs(30), || {
        subnet(&d[2]).as_deref() == Some("10.79.0.0/24")
    });
    d[0].ok(&["network", "delete", "again"]);
}
