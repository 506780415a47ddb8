//! Limits are real: a fork bomb is held by the pids limit, a memory hog is OOM-killed inside
//! its own cgroup while its neighbour and the daemon carry on, and a cpu quota holds.

mod common;

use std::time::Duration;

use common::{alive, Daemon};

#[test]
fn fork_bomb_is_held_by_the_pids_limit() {
    let d = Daemon::start();
    d.busybox();
    d.ok(&["launch", "busybox", "bomb", "-l", "pids=40"]);
    let counter = d
        .cgroup_dirs()
        .into_iter()
        .map(|p| p.join("bomb/pids.current"))
        .find(|p| p.exists())
        .expect("the instance has a pids cgroup");
    // A process flood that keeps every child alive (a classic `f | f &` bomb collapses on
    // itself once forks fail, so on a loaded machine its peak is a matter of luck): 200
    // sleepers are asked for, the cap lets ~40 exist, and the count must sit at the cap.
    let mut bomb = std::process::Command::new(common::bin_dir().join("vessel"))
        .arg("--socket")
        .arg(&d.socket)
        .args([
            "exec",
            "bomb",
            "-T",
            "--",
            "sh",
            "-c",
            "i=0; while [ $i -lt 200 ]; do sleep 60 & i=$((i+1)); done; sleep 60",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Sample until the flood has hit the cap (a loaded machine forks slowly), then a second
    // more to see it stay there; 20 s at most.
    let mut max = 0u64;
    let mut capped_at = None;
    let t = std::time::Instant::now();
    while t.elapsed() < Duration::from_secs(20) {
        if let Ok(n) = std::fs::read_to_string(&counter) {
            max = max.max(n.trim().parse().unwrap_or(0));
        }
        if max >= 38 && capped_at.is_none() {
            capped_at = Some(std::time::Instant::now());
        }
        if capped_at.is_some_and(|c| c.elapsed() > Duration::from_secs(1)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // The daemon answers while the bomb rages.
    d.ok(&["list"]);
    let _ = bomb.kill();
    let _ = bomb.wait();
    assert!(max <= 40, "{max} processes, over the limit of 40");
    assert!(
        max >= 38,
        "the bomb never reached the limit in 20 s (max {max})"
    );
    // The instance can still be killed cleanly.
    d.ok(&["delete", "--force", "bomb"]);
    assert!(d.cgroup_pids().is_empty());
}

#[test]
fn memory_hog_is_oom_killed_inside_its_cgroup() {
    let mut d = Daemon::start();
    d.busybox();
    d.ok(&[
        "launch",
        "busybox",
        "hog",
        "-l",
        "memory=48MiB",
        "-l",
        "memory.swap=0",
    ]);
    d.ok(&["launch", "busybox", "neighbour"]);
    let neighbour_pid = d.info("neighbour")["state"]["pid"].as_i64().unwrap() as i32;
    // tail keeps all of a newline-free input in memory.
    let (code, _) = d.sh("hog", "head -c 200000000 /dev/zero | tail > /dev/null");
    assert_ne!(code, 0, "the hog was not killed");
    let info = d.info("hog");
    assert!(info["state"]["oom_kills"].as_u64().unwrap() >= 1, "{info}");
    // Its init, its neighbour and the daemon carry on.
    assert_eq!(info["status"], "running");
    assert_eq!(d.sh("hog", "echo alive").1.trim(), "alive");
    assert!(alive(neighbour_pid));
    assert_eq!(d.sh("neighbour", "echo fine").1.trim(), "fine");
    assert!(alive(d.pid()));
    let _ = &mut d;
}

#[test]
fn cpu_quota_holds() {
    let d = Daemon::start();
    d.busybox();
    d.ok(&["launch", "busybox", "slow", "-l", "cpu=0.2"]);
    let before = d.info("slow")["state"]["cpu_usage_ns"].as_u64().unwrap();
    let t = std::time::Instant::now();
    // Two busy loops for 3 s of wall time.
    d.sh(
        "slow",
        "for i in 1 2; do (timeout 3 sh -c 'while :; do :; done' &) ; done; sleep 3.2",
    );
    let wall = t.elapsed().as_secs_f64();
    let used = (d.info("slow")["state"]["cpu_usage_ns"].as_u64().unwrap() - before) as f64 / 1e9;
    // 0.2 cores over the wall time, with slack for the period boundaries.
    assert!(
        used < 0.2 * wall + 0.3,
        "used {used:.2}s of cpu in {wall:.2}s at 0.2 cores"
    );
    // (Of the loops' own 3 s: the wall time also holds the exec's start and end.)
    assert!(
        used > 0.2 * 3.0 * 0.4,
        "the loops did not run: {used:.2}s in {wall:.2}s"
    );
    std::thread::sleep(Duration::from_millis(10));
}
