//! What the members of a cluster share through etcd: projects, identities and profiles. Made on one
//! member, there on the others; the first member's own added at init, a joining member's
//! projects (the cluster's win where both have one) but not its identities; changes by
//! compare-and-swap (two members making one name at once: one wins; two changing one
//! project at once: none lost); a token revoked on one member refused on the others; a
//! project holding something on another member (or with a member that cannot say) not
//! deleted; a member cut off from etcd answers reads, refuses changes, and catches up once
//! back; a project's limits count its instances on every member; an image only another
//! member has is fetched from it for a launch; a profile's change reaches the instances
//! using it on every member, and it is not deleted while one on any member uses it.

mod common;

use std::time::Duration;

use common::cluster::{init, json, listen, nft, token, unjoined, wait, CUT_ETCD, UNCUT};
use common::Daemon;

fn projects(d: &Daemon) -> Vec<String> {
    let v = json(&d.ok(&["project", "list", "--format", "json"]));
    let mut names: Vec<String> = v
        .as_array()
        .unwrap_or_else(|| panic!("{v}"))
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

fn limit(d: &Daemon, project: &str, key: &str) -> Option<String> {
    let v = json(&d.ok(&["project", "info", project, "--format", "json"]));
    v["config"][key].as_str().map(str::to_string)
}

/// The HTTP status of `GET /1.0/instances` on `listen` with `token`, from namespace `ns`.
fn status_with(ns: &str, listen: &str, token: &str) -> String {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", ns, "curl", "-sk", "--max-time", "10"])
        .args(["-o", "/dev/null", "-w", "%{http_code}"])
        .arg("-H")
        .arg(format!("Authorization: Bearer {token}"))
        .arg(format!("https://{listen}/1.0/instances"))
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn projects_and_identities_are_the_clusters() {
    let (sb, etcd, mut d) = unjoined(3, 2);

    // Before the cluster: each server has its own.
    d[0].ok(&[
        "project",
        "create",
        "alpha",
        "-c",
        "features.images=false",
        "-c",
        "limits.instances=5",
    ]);
    let ops = d[0].token("ops", "default", "admin");
    let own = d[1].token("own", "default", "admin");
    d[1].ok(&["project", "create", "alpha", "-c", "limits.instances=1"]);
    d[1].ok(&["project", "create", "beta"]);
    d[1].ok(&["profile", "create", "small"]);

    init(&d[0], "m0", &listen(0), &etcd.endpoints(), true);
    let t = token(&d[0], "m1");
    d[1].ok(&["cluster", "join", &t, "--address", &listen(1)]);
    let info = json(&d[1].ok(&["cluster", "info", "--format", "json"]));
    assert_eq!(info["shared_current"], true, "{info}");

    // Each member's projects added; the cluster's alpha won over m1's.
    for di in &d {
        wait("alpha and beta everywhere", Duration::from_secs(5), || {
            projects(di) == ["alpha", "beta", "default"]
        });
        assert_eq!(limit(di, "alpha", "limits.instances").as_deref(), Some("5"));
    }
    // m0's token is good on m1's API; m1's own identities gave way to the cluster's.
    assert_eq!(status_with(&sb.hosts[1], &listen(1), &ops), "200");
    assert_eq!(status_with(&sb.hosts[1], &listen(1), &own), "401");
    assert_eq!(status_with(&sb.hosts[0], &listen(0), &own), "401");
    // Profiles are the cluster's too: m1's own added.
    wait("m1's profile on m0", Duration::from_secs(5), || {
        d[0].vessel(&["profile", "show", "small"]).status.success()
    });

    // A change on one member is on the other within moments.
    d[1].ok(&["project", "set", "alpha", "limits.instances=7"]);
    wait("alpha's new limit on m0", Duration::from_secs(5), || {
        limit(&d[0], "alpha", "limits.instances").as_deref() == Some("7")
    });

    // One project changed on both members at once: both changes kept (a write based on
    // what the other member has changed since is refused by etcd, and the member applies
    // its keys again to the project as it is then).
    for round in 0..5 {
        let (cpu, mem) = (
            format!("limits.cpu={}", round + 2),
            format!("limits.memory={}GiB", round + 2),
        );
        std::thread::scope(|s| {
            let a = s.spawn(|| d[0].ok(&["project", "set", "beta", &cpu]));
            let b = s.spawn(|| d[1].ok(&["project", "set", "beta", &mem]));
            a.join().unwrap();
            b.join().unwrap();
        });
        for (key, set) in [("limits.cpu", &cpu), ("limits.memory", &mem)] {
            let want = set.split_once('=').unwrap().1;
            wait(
                "both changes on both members",
                Duration::from_secs(5),
                || {
                    d.iter()
                        .all(|di| limit(di, "beta", key).as_deref() == Some(want))
                },
            );
        }
    }
    let retried = d
        .iter()
        .map(|di| di.log().matches("changed on another member").count())
        .sum::<usize>();
    eprintln!("concurrent changes of one project: {retried} writes refused and applied again");
    // Revoked on m1: refused on m0 too.
    d[1].ok(&["auth", "revoke", "ops"]);
    wait("ops refused on m0", Duration::from_secs(5), || {
        status_with(&sb.hosts[0], &listen(0), &ops) == "401"
    });

    // A project with an instance on another member is not deleted from under it.
    // (The image is m0's only: it goes along to m1.)
    d[0].busybox();
    d[0].ok(&[
        "launch",
        "busybox",
        "w1",
        "--no-network",
        "--target",
        "m1",
        "--project",
        "alpha",
        "--",
        "sleep",
        "100000",
    ]);
    d[1].ok(&["storage", "pool", "create", "local", "dir"]);
    d[1].ok(&[
        "storage",
        "volume",
        "create",
        "local",
        "data",
        "--project",
        "alpha",
    ]);
    let err = d[0].fails(&["project", "delete", "alpha"]);
    assert!(
        err.contains("instance w1 (on m1)") && err.contains("volume local/data (on m1)"),
        "{err}"
    );
    d[0].ok(&["delete", "--force", "w1", "--project", "alpha"]);
    d[1].ok(&[
        "storage",
        "volume",
        "delete",
        "local",
        "data",
        "--project",
        "alpha",
    ]);

    // An image only another member has, by its alias, is fetched from it: m0 publishes
    // one; a launch through m1 onto m1 finds it on m0.
    d[0].ok(&[
        "launch",
        "busybox",
        "src",
        "--no-network",
        "--target",
        "m0",
        "--",
        "sleep",
        "1",
    ]);
    d[0].ok(&["stop", "src", "--force"]);
    d[0].ok(&["publish", "src", "--alias", "pub0"]);
    d[0].ok(&["delete", "src"]);
    assert!(!d[1].vessel(&["image", "info", "pub0"]).status.success());
    // The list of images, asked of any member, names every member's, and where each is.
    let where_is = |listed: &serde_json::Value, alias: &str| {
        listed
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["aliases"].as_array().unwrap().iter().any(|a| a == alias))
            .map(|i| i["locations"].clone())
            .unwrap_or_else(|| panic!("no {alias} in {listed}"))
    };
    let listed = json(&d[1].ok(&["image", "list", "--format", "json"]));
    assert_eq!(where_is(&listed, "pub0"), serde_json::json!(["m0"]));
    let table = d[1].ok(&["image", "list"]);
    assert!(table.contains("LOCATION"), "{table}");
    d[1].ok(&[
        "launch",
        "pub0",
        "w3",
        "--no-network",
        "--target",
        "m1",
        "--",
        "sleep",
        "100000",
    ]);
    let listed = json(&d[1].ok(&["list", "--format", "json"]));
    let w3 = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "w3")
        .unwrap_or_else(|| panic!("{listed}"));
    assert_eq!(w3["location"], "m1", "{w3}");
    assert_eq!(w3["status"], "running", "{w3}");
    // Now both hold it: listed once, with both.
    let listed = json(&d[0].ok(&["image", "list", "--format", "json"]));
    assert_eq!(where_is(&listed, "pub0"), serde_json::json!(["m0", "m1"]));
    d[1].ok(&["delete", "--force", "w3"]);
    // An image no member has: said so.
    let err = d[1].fails(&["launch", "nowhere", "w4", "--no-network"]);
    assert!(err.contains("not found"), "{err}");

    // A project's limits count its instances on every member.
    d[0].ok(&[
        "project",
        "create",
        "quota",
        "-c",
        "features.images=false",
        "-c",
        "limits.instances=2",
    ]);
    for (name, on) in [("q0", "m0"), ("q1", "m1")] {
        d[0].ok(&[
            "launch",
            "busybox",
            name,
            "--no-network",
            "--target",
            on,
            "--project",
            "quota",
            "--",
            "sh",
            "-c",
            "trap 'exit 0' TERM; sleep 100000 & wait",
        ]);
    }
    for di in &d {
        let err = di.fails(&[
            "launch",
            "busybox",
            "q2",
            "--no-network",
            "--project",
            "quota",
            "--",
            "sleep",
            "1",
        ]);
        assert!(
            err.contains("limits.instances limit is 2 and it uses 2"),
            "{err}"
        );
        let info = json(&di.ok(&["project", "info", "quota", "--format", "json"]));
        assert_eq!(info["usage"]["instances"], 2, "{info}");
    }
    // A move adds nothing to what the project holds: allowed at the limit.
    d[0].ok(&["move", "q1", "--target", "m0", "--project", "quota"]);
    let listed = json(&d[1].ok(&["list", "--format", "json", "--project", "quota"]));
    let places: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["location"].as_str().unwrap())
        .collect();
    assert_eq!(places, ["m0", "m0"], "{listed}");
    d[0].ok(&["delete", "--force", "q0", "q1", "--project", "quota"]);
    // Launches on both members at the same moment into the last place: the cluster's lock
    // of the project's limits lets exactly one through, every round.
    d[0].ok(&["project", "set", "quota", "limits.instances=1"]);
    for round in 0..5 {
        let launch = |di: &Daemon, name: String, on: &str| {
            di.vessel(&[
                "create",
                "busybox",
                &name,
                "--no-network",
                "--target",
                on,
                "--project",
                "quota",
            ])
        };
        let (a, b) = std::thread::scope(|s| {
            let a = s.spawn(|| launch(&d[0], format!("r{round}a"), "m0"));
            let b = s.spawn(|| launch(&d[1], format!("r{round}b"), "m1"));
            (a.join().unwrap(), b.join().unwrap())
        });
        let made: Vec<bool> = [&a, &b].iter().map(|o| o.status.success()).collect();
        assert_eq!(
            made.iter().filter(|m| **m).count(),
            1,
            "round {round}: {made:?}\n{}\n{}",
            String::from_utf8_lossy(&a.stderr),
            String::from_utf8_lossy(&b.stderr)
        );
        let refused = if made[0] { &b } else { &a };
        let err = String::from_utf8_lossy(&refused.stderr);
        assert!(err.contains("limits.instances"), "{err}");
        let winner = if made[0] {
            format!("r{round}a")
        } else {
            format!("r{round}b")
        };
        d[0].ok(&["delete", &winner, "--project", "quota"]);
    }
    // The lock held elsewhere (here by etcdctl, under a lease of 12 s, longer than a
    // waiter's own lease lives unrenewed) is waited for and then taken; one held past the
    // wait is named.
    let etcdctl = |args: &[&str]| -> String {
        let endpoints = etcd.endpoints();
        let mut all = vec![
            "netns",
            "exec",
            sb.hosts[0].as_str(),
            "etcdctl",
            "--endpoints",
        ];
        all.push(&endpoints);
        all.extend(args);
        common::tool("ip", &all)
    };
    let hold = |ttl: &str| -> String {
        let granted = etcdctl(&["lease", "grant", ttl]);
        let id = granted.split_whitespace().nth(1).unwrap().to_string();
        etcdctl(&[
            "put",
            "--lease",
            &id,
            "/vessel/locks/quota/quota",
            "etcdctl",
        ]);
        id
    };
    hold("12");
    let started = std::time::Instant::now();
    d[1].ok(&[
        "create",
        "busybox",
        "late",
        "--no-network",
        "--target",
        "m1",
        "--project",
        "quota",
    ]);
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(8), "no wait: {waited:?}");
    d[0].ok(&["delete", "late", "--project", "quota"]);
    let id = hold("60");
    let err = d[1].fails(&[
        "create",
        "busybox",
        "never",
        "--no-network",
        "--target",
        "m1",
        "--project",
        "quota",
    ]);
    assert!(err.contains("held by etcdctl"), "{err}");
    etcdctl(&["lease", "revoke", &id]);
    d[1].ok(&["project", "delete", "quota"]);

    // A profile made on one member is used by a launch on the other; its change reaches
    // the instances using it on every member (their own keys kept), and it is not deleted
    // while an instance on any member uses it.
    d[1].ok(&[
        "profile",
        "create",
        "web",
        "-c",
        "limits.memory=96MiB",
        "-c",
        "user.tier=a",
    ]);
    d[1].ok(&[
        "create",
        "busybox",
        "pw0",
        "--no-network",
        "--target",
        "m0",
        "--profile",
        "web",
    ]);
    d[0].ok(&[
        "create",
        "busybox",
        "pw1",
        "--no-network",
        "--target",
        "m1",
        "--profile",
        "web",
        "-c",
        "user.tier=own",
    ]);
    let config = |di: &Daemon, name: &str| -> serde_json::Value {
        json(&di.ok(&["config", "show", name, "--format", "json"]))
    };
    assert_eq!(config(&d[1], "pw0")["limits.memory"], "96MiB");
    // Its users are every member's, on any member.
    for di in [&d[0], &d[1]] {
        let shown = json(&di.ok(&["profile", "show", "web", "--format", "json"]));
        assert_eq!(
            shown["used_by"],
            serde_json::json!(["pw0", "pw1"]),
            "{shown}"
        );
        let listed = json(&di.ok(&["profile", "list", "--format", "json"]));
        let web = listed
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "web");
        assert_eq!(
            web.map(|p| p["used_by"].clone()),
            Some(serde_json::json!(["pw0", "pw1"])),
            "{listed}"
        );
    }
    let changed = json(&d[0].ok(&[
        "profile",
        "set",
        "web",
        "limits.memory=112MiB",
        "user.tier=b",
        "--format",
        "json",
    ]));
    assert!(changed["instances"]["pw0"].is_array(), "{changed}");
    assert!(changed["instances"]["pw1"].is_array(), "{changed}");
    assert!(changed.get("errors").is_none(), "{changed}");
    for (di, name, tier) in [(&d[1], "pw0", "b"), (&d[0], "pw1", "own")] {
        let c = config(di, name);
        assert_eq!(c["limits.memory"], "112MiB", "{name}: {c}");
        assert_eq!(c["user.tier"], tier, "{name}: {c}");
    }
    // Moved to the other member, an instance keeps its profile and its own keys.
    d[0].ok(&["move", "pw1", "--target", "m0"]);
    d[1].ok(&["profile", "unset", "web", "user.tier"]);
    assert!(config(&d[1], "pw0").get("user.tier").is_none());
    assert_eq!(config(&d[1], "pw1")["user.tier"], "own");
    d[1].ok(&["profile", "set", "web", "limits.memory=120MiB"]);
    for name in ["pw0", "pw1"] {
        assert_eq!(config(&d[1], name)["limits.memory"], "120MiB", "{name}");
    }
    d[0].ok(&["delete", "pw0"]);
    d[0].ok(&["move", "pw1", "--target", "m1"]);
    let err = d[0].fails(&["profile", "delete", "web"]);
    assert!(err.contains("pw1 (on m1)"), "{err}");
    d[0].ok(&["delete", "pw1"]);
    d[0].ok(&["profile", "delete", "web"]);
    wait("web gone on m1", Duration::from_secs(5), || {
        !d[1].vessel(&["profile", "show", "web"]).status.success()
    });

    // m1 cut off from etcd: it reads, refuses changes with a reason, catches up once back.
    nft(&sb.hosts[1], CUT_ETCD);
    wait("m1 not current", Duration::from_secs(15), || {
        json(&d[1].ok(&["cluster", "info", "--format", "json"]))["shared_current"] == false
    });
    assert_eq!(projects(&d[1]), ["alpha", "beta", "default"]);
    let err = d[1].fails(&["project", "create", "gamma"]);
    assert!(err.contains("etcd") && err.contains("not changed"), "{err}");
    d[0].ok(&["project", "create", "delta"]);
    d[0].ok(&["project", "delete", "beta"]);
    nft(&sb.hosts[1], UNCUT);
    wait("m1 caught up", Duration::from_secs(20), || {
        projects(&d[1]) == ["alpha", "default", "delta"]
    });
    wait("m1 current", Duration::from_secs(10), || {
        json(&d[1].ok(&["cluster", "info", "--format", "json"]))["shared_current"] == true
    });
    d[1].ok(&["project", "create", "gamma"]);
    wait("gamma on m0", Duration::from_secs(5), || {
        projects(&d[0]) == ["alpha", "default", "delta", "gamma"]
    });

    // A daemon restarted reads etcd's again (what changed while it was down included). A
    // project is not deleted while a member cannot say what it holds of it. A profile's
    // change it missed reaches its instances once it is back.
    wait("m1 online again", Duration::from_secs(20), || {
        json(&d[0].ok(&["cluster", "list", "--format", "json"]))
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == "m1" && m["state"] == "online")
    });
    d[0].ok(&["profile", "create", "away"]);
    d[0].ok(&["profile", "set", "away", "user.tier=a", "user.gone=soon"]);
    d[0].ok(&[
        "create",
        "busybox",
        "pa",
        "--no-network",
        "--target",
        "m1",
        "--profile",
        "away",
    ]);
    assert_eq!(config(&d[1], "pa")["user.gone"], "soon");
    d[1].kill(libc::SIGKILL);
    let out = d[0].ok(&["profile", "set", "away", "user.tier=b"]);
    assert!(out.contains("member m1: not changed"), "{out}");
    d[0].ok(&["profile", "unset", "away", "user.gone"]);
    d[0].ok(&["project", "create", "epsilon"]);
    d[0].ok(&["project", "set", "delta", "limits.instances=3"]);
    let err = d[0].fails(&["project", "delete", "gamma"]);
    assert!(err.contains("what member m1 holds"), "{err}");
    d[1].spawn();
    wait(
        "m1 current after its restart",
        Duration::from_secs(20),
        || {
            let out = d[1].vessel(&["cluster", "info", "--format", "json"]);
            out.status.success()
                && json(&String::from_utf8_lossy(&out.stdout))["shared_current"] == true
        },
    );
    assert_eq!(
        projects(&d[1]),
        ["alpha", "default", "delta", "epsilon", "gamma"]
    );
    assert_eq!(
        limit(&d[1], "delta", "limits.instances").as_deref(),
        Some("3")
    );
    wait(
        "pa took the changes of away",
        Duration::from_secs(20),
        || {
            let c = config(&d[1], "pa");
            c["user.tier"] == "b" && c.get("user.gone").is_none()
        },
    );
    assert!(
        d[1].log()
            .contains("a profile change made while this member was away"),
        "{}",
        d[1].log()
    );
    d[0].ok(&["delete", "pa"]);
    d[0].ok(&["profile", "delete", "away"]);
    d[0].ok(&["project", "delete", "gamma"]);
    d[0].ok(&["project", "delete", "epsilon"]);
}
