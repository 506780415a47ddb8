//! An instance's configuration changed in place: a running container's memory limit raised and
//! lowered live (a hog is OOM-killed at the new limit, not the old), lowering below what it
//! holds refused with nothing killed, its cpu quota changed live and measured, keys that wait
//! for the next start saying so, bad values and unknown keys changing nothing, `config edit`
//! through $EDITOR, and project quotas holding against growth.

mod common;

use std::time::{Duration, Instant};

use common::{Daemon, Sandbox};

fn config(d: &Daemon, name: &str) -> serde_json::Value {
    serde_json::from_str(&d.ok(&["config", "show", name, "--format", "json"])).unwrap()
}

/// Sets keys; the answer as JSON.
fn set(d: &Daemon, name: &str, pairs: &[&str]) -> serde_json::Value {
    let mut args = vec!["config", "set", name];
    args.extend(pairs);
    args.extend(["--format", "json"]);
    serde_json::from_str(&d.ok(&args)).unwrap()
}

fn effect(answer: &serde_json::Value, key: &str) -> String {
    answer["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["key"] == key)
        .unwrap_or_else(|| panic!("{key} not among the changes: {answer}"))["effect"]
        .as_str()
        .unwrap()
        .to_string()
}

fn oom_kills(d: &Daemon, name: &str) -> u64 {
    d.info(name)["state"]["oom_kills"].as_u64().unwrap()
}

/// A hog of about 48 MiB: tail keeps a newline-free input whole.
const HOG: &str = "head -c 50000000 /dev/zero | tail > /dev/null";

#[test]
fn a_running_containers_memory_limit_changes_live() {
    let d = Daemon::start();
    d.busybox();
    d.ok(&[
        "launch",
        "busybox",
        "m",
        "-l",
        "memory=32MiB",
        "-l",
        "memory.swap=0",
    ]);
    // At 32 MiB the hog dies.
    let (code, _) = d.sh("m", HOG);
    assert_ne!(code, 0, "a 48 MiB hog lived under 32 MiB");
    let killed = oom_kills(&d, "m");
    assert!(killed >= 1);
    // Raised live: the same hog lives.
    let answer = set(&d, "m", &["limits.memory=128MiB"]);
    assert_eq!(effect(&answer, "limits.memory"), "live", "{answer}");
    assert_eq!(config(&d, "m")["limits.memory"], "128MiB");
    let (code, out) = d.sh("m", HOG);
    assert_eq!(code, 0, "the hog was killed under the raised limit: {out}");
    assert_eq!(oom_kills(&d, "m"), killed);
    // Something holding 40 MB: a limit below it is refused, and nothing is killed.
    d.sh(
        "m",
        "setsid sh -c '(head -c 40000000 /dev/zero; sleep 3600) | tail > /dev/null' \
         < /dev/null > /dev/null 2>&1 &",
    );
    d.wait_for("the holder's 40 MB", Duration::from_secs(20), || {
        d.info("m")["state"]["memory_usage_bytes"]
            .as_u64()
            .unwrap_or(0)
            > 40_000_000
    });
    let err = d.fails(&["config", "set", "m", "limits.memory=16MiB"]);
    assert!(
        err.contains("holds") && err.contains("nothing was changed"),
        "{err}"
    );
    assert_eq!(config(&d, "m")["limits.memory"], "128MiB");
    assert_eq!(
        oom_kills(&d, "m"),
        killed,
        "a refused limit killed something"
    );
    let (_, tails) = d.sh("m", "pidof tail");
    assert!(!tails.trim().is_empty(), "the holder is gone");
    // Once it lets go, lowered live: the hog dies at the new limit.
    d.sh("m", "killall tail sleep; true");
    // Killed is not yet gone: wait for its memory to be given back before lowering.
    d.wait_for("the holder to let go", Duration::from_secs(20), || {
        d.sh("m", "pidof tail").1.trim().is_empty()
            && d.info("m")["state"]["memory_usage_bytes"]
                .as_u64()
                .is_some_and(|u| u < 20 << 20)
    });
    let answer = set(&d, "m", &["limits.memory=24MiB"]);
    assert_eq!(effect(&answer, "limits.memory"), "live", "{answer}");
    let (code, _) = d.sh("m", HOG);
    assert_ne!(code, 0, "a 48 MiB hog lived under the lowered 24 MiB");
    assert!(oom_kills(&d, "m") > killed);
    // The init lives on, and a restart keeps the new limit.
    assert_eq!(d.info("m")["status"], "running");
    d.ok(&["restart", "m"]);
    let (code, _) = d.sh("m", HOG);
    assert_ne!(code, 0, "the limit was lost at restart");
    d.ok(&["delete", "-f", "m"]);
}

/// Cores of cpu time `name` gets over two seconds of a busy loop.
fn cpu_rate(d: &Daemon, name: &str) -> f64 {
    let used = || d.info(name)["state"]["cpu_usage_ns"].as_u64().unwrap_or(0);
    let (before, t) = (used(), Instant::now());
    d.sh(
        name,
        "yes > /dev/null & a=$!; yes > /dev/null & b=$!; sleep 2; kill $a $b",
    );
    (used() - before) as f64 / t.elapsed().as_nanos() as f64
}

#[test]
fn cpu_quota_processes_and_keys_for_the_next_start() {
    let d = Daemon::start();
    d.busybox();
    d.ok(&["launch", "busybox", "c", "-l", "cpu=0.2"]);
    let slow = cpu_rate(&d, "c");
    assert!(slow < 0.3, "{slow} cores under a 0.2 quota");
    let answer = set(&d, "c", &["limits.cpu=1.5"]);
    assert_eq!(effect(&answer, "limits.cpu"), "live", "{answer}");
    let fast = cpu_rate(&d, "c");
    // More than the old quota lets through (a loaded machine may give less than 1.5).
    assert!(
        fast > 0.35,
        "{fast} cores after raising the quota, {slow} before"
    );
    // Lifted: no quota at all.
    let answer: serde_json::Value =
        serde_json::from_str(&d.ok(&["config", "unset", "c", "limits.cpu", "--format", "json"]))
            .unwrap();
    assert_eq!(effect(&answer, "limits.cpu"), "live", "{answer}");
    assert!(config(&d, "c").get("limits.cpu").is_none());
    // pids, live: a limit of 5 holds the next fork.
    set(&d, "c", &["limits.processes=5"]);
    let (_, out) = d.sh(
        "c",
        "exec 2>&1; for i in 1 2 3 4 5 6 7 8; do sleep 30 & done",
    );
    assert!(out.contains("can't fork"), "{out}");
    let pids = d.info("c")["state"]["pids"].as_u64().unwrap();
    assert!(pids <= 5, "{pids} processes under a limit of 5");
    d.sh("c", "killall sleep; true");
    // Lifted again, so that the sleepers' reaping cannot starve the next execs.
    d.ok(&["config", "unset", "c", "limits.processes"]);
    // The environment waits for the next start, and says so.
    let answer = set(
        &d,
        "c",
        &["environment.GREETING=hello", "user.owner=ops team"],
    );
    assert_eq!(effect(&answer, "environment.GREETING"), "next-start");
    assert_eq!(effect(&answer, "user.owner"), "stored");
    let text = d.ok(&["config", "set", "c", "environment.GREETING=hi"]);
    assert!(
        text.contains("applies at the next start") && text.contains("restart it"),
        "{text}"
    );
    assert_eq!(d.sh("c", "echo ${GREETING:-none}").1.trim(), "none");
    d.ok(&["restart", "c"]);
    assert_eq!(d.sh("c", "echo $GREETING").1.trim(), "hi");
    assert_eq!(
        d.ok(&["config", "get", "c", "user.owner"]).trim(),
        "ops team"
    );
    // A stopped container keeps changes for its next start.
    d.ok(&["stop", "-f", "c"]);
    let answer = set(&d, "c", &["limits.memory=64MiB"]);
    assert_eq!(effect(&answer, "limits.memory"), "next-start");
    d.ok(&["start", "c"]);
    assert_eq!(d.info("c")["limits"]["memory"], 64u64 << 20);
    d.ok(&["delete", "-f", "c"]);
}

#[test]
fn bad_changes_change_nothing() {
    let d = Daemon::start();
    d.busybox();
    d.ok(&["launch", "busybox", "b", "-l", "memory=64MiB"]);
    let before = config(&d, "b");
    for (args, says) in [
        (vec!["limits.memory=lots"], "limits.memory"),
        (vec!["limits.gpu=1"], "no configuration key"),
        (vec!["security.privileged=true"], "set at creation"),
        (vec!["boot.autostart=sometimes"], "true or false"),
        // One bad key among good ones: none of them is applied.
        (
            vec!["limits.cpu=1", "user.x=1", "limits.processes=0"],
            "limits.processes",
        ),
        (vec!["limits.disk=1GiB"], "no root disk of its own"),
        (vec!["memory=1GiB"], "no configuration key"),
    ] {
        let mut a = vec!["config", "set", "b"];
        a.extend(&args);
        let err = d.fails(&a);
        assert!(err.contains(says), "{args:?}: {err}");
        assert_eq!(config(&d, "b"), before, "{args:?} changed something");
    }
    let err = d.fails(&["config", "set", "nope", "limits.memory=1GiB"]);
    assert!(err.contains("not found"), "{err}");
    // config edit: a refused edit is kept and changes nothing; a good one applies its diff.
    let script = d.dir.join("editor.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\nsed -i 's/^limits.memory: .*/limits.memory: plenty/' \"$1\"\n",
    )
    .unwrap();
    let run_edit = |editor: &str| {
        let out = d.vessel_env(&["config", "edit", "b"], &[("EDITOR", editor)]);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, out) = run_edit(&format!("sh {}", script.display()));
    assert!(!ok && out.contains("kept in"), "{out}");
    assert_eq!(config(&d, "b"), before);
    std::fs::write(
        &script,
        "#!/bin/sh\nsed -i 's/^limits.memory: .*/limits.memory: 96MiB/' \"$1\"\n\
         echo 'user.note: edited' >> \"$1\"\n",
    )
    .unwrap();
    let (ok, out) = run_edit(&format!("sh {}", script.display()));
    assert!(ok, "{out}");
    assert!(out.contains("limits.memory=96MiB: applied now"), "{out}");
    let after = config(&d, "b");
    assert_eq!(
        (after["limits.memory"].as_str(), after["user.note"].as_str()),
        (Some("96MiB"), Some("edited"))
    );
    d.ok(&["delete", "-f", "b"]);
}

#[test]
fn project_limits_hold_against_growth() {
    let d = Daemon::start();
    d.busybox();
    d.ok(&[
        "project",
        "create",
        "q",
        "-c",
        "features.images=false",
        "-c",
        "limits.memory=256MiB",
    ]);
    d.ok(&[
        "launch",
        "busybox",
        "a",
        "--project",
        "q",
        "-l",
        "memory=128MiB",
    ]);
    d.ok(&[
        "launch",
        "busybox",
        "b",
        "--project",
        "q",
        "-l",
        "memory=64MiB",
    ]);
    let err = d.fails(&[
        "config",
        "set",
        "a",
        "limits.memory=200MiB",
        "--project",
        "q",
    ]);
    assert!(err.contains("limits.memory"), "{err}");
    let err = d.fails(&["config", "unset", "a", "limits.memory", "--project", "q"]);
    assert!(err.contains("limits.memory"), "{err}");
    // Lowering the project's limit below use still lets instances shrink.
    d.ok(&["project", "set", "q", "limits.memory=64MiB"]);
    d.ok(&[
        "config",
        "set",
        "a",
        "limits.memory=100MiB",
        "--project",
        "q",
    ]);
    let v: serde_json::Value =
        serde_json::from_str(&d.ok(&["config", "show", "a", "--project", "q", "--format", "json"]))
            .unwrap();
    assert_eq!(v["limits.memory"], "100MiB");
    for n in ["a", "b"] {
        d.ok(&["delete", "-f", n, "--project", "q"]);
    }
}

/// `cluster.ha` on a server in no cluster: the instance starts, stops and starts again as
/// any other (the mark waits for a cluster); it failed at the start, the fence watchdog
/// "could not be told".
#[test]
fn an_ha_mark_outside_a_cluster_changes_nothing_until_one() {
    let mut d = Daemon::start();
    d.busybox();
    d.ok(&[
        "launch",
        "busybox",
        "ha",
        "--no-network",
        "-c",
        "cluster.ha=true",
        "--",
        "sleep",
        "3600",
    ]);
    assert_eq!(d.info("ha")["status"], "running");
    assert_eq!(config(&d, "ha")["cluster.ha"], "true");
    d.ok(&["restart", "ha"]);
    assert_eq!(d.info("ha")["status"], "running");
    // A membership file that cannot be read (cut short) is no way out of a cluster: the
    // HA instance does not start, not even for a moment (refused before its process
    // starts: a refusal after it would name the fence watchdog), and the error says what
    // to do.
    d.ok(&["stop", "ha", "--force"]);
    d.kill(libc::SIGTERM);
    std::fs::write(d.root().join("cluster.json"), "{\"id\": \"0a1b").unwrap();
    d.spawn();
    let err = d.fails(&["start", "ha"]);
    assert!(err.contains("cannot be read"), "{err}");
    assert!(err.contains("cluster.json"), "{err}");
    assert_eq!(d.info("ha")["status"], "stopped");
    assert!(d.log().contains("the cluster membership cannot be read"));
    // Removed (leaving the cluster for good), it starts as outside one.
    std::fs::remove_file(d.root().join("cluster.json")).unwrap();
    d.ok(&["start", "ha"]);
    assert_eq!(d.info("ha")["status"], "running");
    d.ok(&["delete", "ha", "--force"]);
}

/// `boot.autostart`: after a host boot (the daemon finds another boot id than at its last
/// start) the marked instances start, higher priority first, the next only after the
/// first's delay; a daemon restart on the same boot starts nothing.
#[test]
fn marked_instances_start_with_the_host_in_order() {
    let mut d = Daemon::start();
    d.busybox();
    for n in ["first", "second", "never"] {
        d.ok(&[
            "create",
            "busybox",
            n,
            "--no-network",
            "--",
            "sleep",
            "3600",
        ]);
    }
    set(
        &d,
        "first",
        &[
            "boot.autostart=true",
            "boot.autostart.priority=5",
            "boot.autostart.delay=4",
        ],
    );
    set(&d, "second", &["boot.autostart=true"]);
    let status = |d: &Daemon, n: &str| d.info(n)["status"].as_str().unwrap().to_string();
    // A restart on the same boot starts nothing.
    d.kill(libc::SIGTERM);
    d.spawn();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(status(&d, "first"), "stopped");
    // As after a host boot.
    d.kill(libc::SIGTERM);
    std::fs::write(d.root().join("boot_id"), "an earlier boot\n").unwrap();
    d.spawn();
    d.wait_for("first started", Duration::from_secs(30), || {
        status(&d, "first") == "running"
    });
    assert_eq!(
        status(&d, "second"),
        "stopped",
        "second did not wait first's delay"
    );
    d.wait_for("second started", Duration::from_secs(30), || {
        status(&d, "second") == "running"
    });
    assert_eq!(status(&d, "never"), "stopped");
    // The boot is recorded once the sequence is done (a daemon killed before would start
    // the rest again).
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    d.wait_for("the boot recorded", Duration::from_secs(10), || {
        std::fs::read_to_string(d.root().join("boot_id"))
            .ok()
            .as_deref()
            == Some(&*boot)
    });
    for n in ["first", "second", "never"] {
        d.ok(&["delete", "-f", n]);
    }
}

/// A filesystem volume's quota grown while its container runs: what did not fit fits.
#[test]
fn a_volume_grown_while_attached_is_seen_by_the_container() {
    let d = Daemon::start();
    d.busybox();
    d.ok(&[
        "storage", "pool", "create", "fast", "btrfs", "--size", "300MiB",
    ]);
    d.ok(&[
        "storage", "volume", "create", "fast", "data", "--size", "32MiB",
    ]);
    d.ok(&[
        "create",
        "busybox",
        "v",
        "--no-network",
        "--",
        "sleep",
        "3600",
    ]);
    d.ok(&["storage", "volume", "attach", "fast", "data", "v", "/data"]);
    d.ok(&["start", "v"]);
    let write = "dd if=/dev/zero of=/data/big bs=1M count=48 2>&1 && sync /data/big";
    let (code, out) = d.sh("v", write);
    assert_ne!(code, 0, "48 MiB fit in a 32 MiB volume: {out}");
    d.sh("v", "rm -f /data/big; sync");
    d.ok(&["storage", "volume", "resize", "fast", "data", "96MiB"]);
    assert_eq!(d.info("v")["status"], "running");
    let (code, out) = d.sh("v", write);
    assert_eq!(code, 0, "48 MiB did not fit after growing to 96 MiB: {out}");
    d.ok(&["delete", "-f", "v"]);
    d.ok(&["storage", "volume", "delete", "fast", "data"]);
    d.ok(&["storage", "pool", "delete", "fast"]);
}

/// A profile's keys reach the three running instances made with it, live; an instance's own
/// key stays; a profile in use is not deleted; a bad profile changes nothing.
#[test]
fn a_profile_change_reaches_every_instance_using_it() {
    let d = Daemon::start();
    d.busybox();
    d.ok(&["storage", "pool", "create", "p", "dir"]);
    d.ok(&["storage", "volume", "create", "p", "shared"]);
    d.ok(&[
        "profile",
        "create",
        "small",
        "--volume",
        "p/shared:/srv",
        "-c",
        "limits.memory=64MiB",
        "-c",
        "limits.processes=100",
        "-c",
        "user.tier=small",
        "--description",
        "the small ones",
    ]);
    for n in ["p1", "p2", "p3"] {
        d.ok(&["launch", "busybox", n, "--no-network", "--profile", "small"]);
    }
    // `own` sets its own memory: the profile's value does not reach it.
    d.ok(&[
        "launch",
        "busybox",
        "own",
        "--no-network",
        "--profile",
        "small",
        "-l",
        "memory=200MiB",
    ]);
    for n in ["p1", "p2", "p3"] {
        let c = config(&d, n);
        assert_eq!(
            (c["limits.memory"].as_str(), c["user.tier"].as_str()),
            (Some("64MiB"), Some("small")),
            "{n}: {c}"
        );
    }
    assert_eq!(config(&d, "own")["limits.memory"], "200MiB");
    // The profile's volume is every instance's.
    assert_eq!(
        d.sh("p1", "echo from-p1 > /srv/note && echo ok").1.trim(),
        "ok"
    );
    assert_eq!(d.sh("p2", "cat /srv/note").1.trim(), "from-p1");
    let v: serde_json::Value =
        serde_json::from_str(&d.ok(&["profile", "show", "small", "--format", "json"])).unwrap();
    assert_eq!(v["used_by"].as_array().unwrap().len(), 4, "{v}");
    // The change: memory raised, processes lifted, the tier renamed.
    let answer: serde_json::Value = serde_json::from_str(&d.ok(&[
        "profile",
        "set",
        "small",
        "limits.memory=128MiB",
        "user.tier=medium",
        "--format",
        "json",
    ]))
    .unwrap();
    for n in ["p1", "p2", "p3"] {
        let changes = answer["instances"][n]
            .as_array()
            .unwrap_or_else(|| panic!("{answer}"));
        let mem = changes
            .iter()
            .find(|c| c["key"] == "limits.memory")
            .unwrap();
        assert_eq!(mem["effect"], "live", "{n}: {answer}");
        let c = config(&d, n);
        assert_eq!(
            (c["limits.memory"].as_str(), c["user.tier"].as_str()),
            (Some("128MiB"), Some("medium"))
        );
        // The running container holds what it could not before: 96 MB under 128 MiB.
        let (code, out) = d.sh(n, "head -c 100000000 /dev/zero | tail > /dev/null");
        assert_eq!(code, 0, "{n}: {out}");
    }
    assert_eq!(config(&d, "own")["limits.memory"], "200MiB");
    assert_eq!(config(&d, "own")["user.tier"], "medium");
    d.ok(&["profile", "unset", "small", "limits.processes"]);
    assert!(config(&d, "p1").get("limits.processes").is_none());
    // An instance's own unset falls back to the profile's value.
    d.ok(&["config", "unset", "own", "limits.memory"]);
    assert_eq!(config(&d, "own")["limits.memory"], "128MiB");
    // A bad profile changes nothing.
    let err = d.fails(&["profile", "set", "small", "limits.memory=lots"]);
    assert!(err.contains("limits.memory"), "{err}");
    let err = d.fails(&["profile", "create", "bad", "-c", "limits.gpu=1"]);
    assert!(err.contains("no configuration key"), "{err}");
    assert!(d.fails(&["profile", "show", "bad"]).contains("not found"));
    assert_eq!(config(&d, "p1")["limits.memory"], "128MiB");
    let err = d.fails(&["launch", "busybox", "x", "--profile", "nope"]);
    assert!(err.contains("profile \"nope\" not found"), "{err}");
    // In use: not deleted.
    let err = d.fails(&["profile", "delete", "small"]);
    assert!(err.contains("used by instance(s)"), "{err}");
    for n in ["p1", "p2", "p3", "own"] {
        d.ok(&["delete", "-f", n]);
    }
    d.ok(&["profile", "delete", "small"]);
    d.ok(&["storage", "volume", "delete", "p", "shared"]);
}

/// A profile's networks and volumes follow it: a network added to it gives its running
/// container a NIC at once and taking it away removes that NIC; a volume added reaches a
/// stopped instance at once and a running one is told why not.
#[test]
fn a_profiles_networks_and_volumes_follow_it() {
    let sb = Sandbox::new(1);
    let d = Daemon::start_in_netns(&sb.hosts[0]);
    d.busybox();
    d.ok(&["network", "create", "lan", "--subnet", "10.71.0.0/24"]);
    d.ok(&["storage", "pool", "create", "p", "dir"]);
    d.ok(&["storage", "volume", "create", "p", "shared"]);
    d.ok(&["profile", "create", "dev", "-c", "user.team=dev"]);
    // a and b take their profile's networks (this daemon has no default network); c chose
    // none itself, and a network added to its profile later does not reach it.
    d.ok(&["launch", "busybox", "a", "--profile", "dev"]);
    d.ok(&["create", "busybox", "b", "--profile", "dev"]);
    d.ok(&["launch", "busybox", "c", "--no-network", "--profile", "dev"]);
    // `profile edit` with a sed program as the editor.
    let edit = |program: &str| {
        let script = d.dir.join("edit.sh");
        std::fs::write(&script, format!("#!/bin/sh\nsed -i {program} \"$1\"\n")).unwrap();
        let out = d.vessel_env(
            &["profile", "edit", "dev"],
            &[("EDITOR", &format!("sh {}", script.display()))],
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{text}");
        text
    };
    let nics = |n: &str| -> Vec<String> {
        d.info(n)["nics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["network"].as_str().unwrap().to_string())
            .collect()
    };
    edit("'s|^networks: \\[\\]|networks: [lan]|'");
    assert_eq!(nics("a"), ["lan"]);
    assert_eq!(nics("b"), ["lan"]);
    assert!(nics("c").is_empty(), "{:?}", nics("c"));
    let (code, out) = d.sh("a", "ip -o -4 addr show dev eth0");
    assert!(code == 0 && out.contains("10.71.0."), "{out}");
    // A volume: the stopped instance takes it, the running one says why not.
    let text = edit("'s|^volumes: \\[\\]|volumes: [{pool: p, volume: shared, path: /srv}]|'");
    assert!(
        text.contains("a: not changed") && text.contains("stop"),
        "{text}"
    );
    // A profile whose root disk size an instance without a root disk of its own cannot
    // take is refused whole.
    let err = d.fails(&["profile", "set", "dev", "limits.disk=64MiB"]);
    assert!(
        err.contains("cannot take this profile") && err.contains("no root disk"),
        "{err}"
    );
    assert!(config(&d, "b").get("limits.disk").is_none());
    let v: serde_json::Value =
        serde_json::from_str(&d.ok(&["profile", "show", "dev", "--format", "json"])).unwrap();
    assert!(v["config"].get("limits.disk").is_none(), "{v}");
    d.ok(&["start", "b"]);
    assert_eq!(d.sh("b", "echo hi > /srv/f && cat /srv/f").1.trim(), "hi");
    // Taken away: the NIC it gave goes, live.
    edit("-e '/^- lan$/d' -e 's|^networks:$|networks: []|'");
    assert!(nics("a").is_empty(), "{:?}", nics("a"));
    let (_, out) = d.sh("a", "ip -o link");
    assert!(!out.contains("eth0"), "{out}");
    for n in ["a", "b", "c"] {
        d.ok(&["delete", "-f", n]);
    }
    d.ok(&["profile", "delete", "dev"]);
    d.ok(&["storage", "volume", "delete", "p", "shared"]);
    d.ok(&["network", "delete", "lan"]);
}
