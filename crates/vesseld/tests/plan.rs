//! `vessel plan consolidate` on one host: right sizes from the recorded history, over- and
//! under-provisioned instances each explained; the history kept across a daemon restart.

mod common;

use std::time::{Duration, Instant};

use common::Daemon;

fn plan(d: &Daemon, args: &[&str]) -> serde_json::Value {
    let mut a = vec!["plan", "consolidate", "--format", "json"];
    a.extend_from_slice(args);
    serde_json::from_str(&d.ok(&a)).unwrap()
}

fn sizing<'a>(p: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    p["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in {p}"))
}

#[test]
fn right_sizes_come_from_recorded_use_and_outlive_a_restart() {
    let mut d = Daemon::start();
    // A sample a second, so that the test need not wait minutes.
    d.restart_with_env("VESSEL_HISTORY_SECONDS", "1");
    d.busybox();
    // busy spins against a limit of a quarter core; idle sleeps under 2 cores and 256 MiB.
    d.ok(&[
        "launch",
        "busybox",
        "busy",
        "-l",
        "cpu=0.25",
        "--",
        "sh",
        "-c",
        "while :; do :; done",
    ]);
    d.ok(&[
        "launch",
        "busybox",
        "idle",
        "-l",
        "cpu=2",
        "-l",
        "memory=256MiB",
    ]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let p = loop {
        let p = plan(&d, &[]);
        let ready = ["busy", "idle"].iter().all(|n| {
            sizing(&p, n)["cpu"]["samples"]
                .as_u64()
                .is_some_and(|s| s >= 8)
        });
        if ready {
            break p;
        }
        assert!(Instant::now() < deadline, "too few samples in 60 s: {p}");
        std::thread::sleep(Duration::from_secs(1));
    };
    assert_eq!(p["headroom"], 0.2);
    assert_eq!(p["interval_seconds"], 1);
    let busy = &sizing(&p, "busy")["cpu"];
    assert_eq!(busy["verdict"], "under", "{busy}");
    assert!(busy["p95"].as_f64().unwrap() > 0.2, "{busy}");
    assert_eq!(busy["limit"], 0.25);
    let idle = sizing(&p, "idle");
    assert_eq!(idle["cpu"]["verdict"], "over", "{idle}");
    assert_eq!(idle["memory"]["verdict"], "over", "{idle}");
    assert!(
        idle["memory"]["recommended"].as_f64().unwrap() < (64u64 << 20) as f64,
        "{idle}"
    );
    // The table explains each over- and under-provisioned size in a line with its figures.
    let table = d.ok(&["plan", "consolidate", "--headroom", "50"]);
    for needle in [
        "busy",
        "idle",
        "50 % headroom",
        "under-provisioned",
        "over-provisioned",
    ] {
        assert!(table.contains(needle), "{needle} missing from:\n{table}");
    }
    // --apply sets each over- or under-provisioned limit to its right size, in place.
    let out = d.ok(&["plan", "consolidate", "--apply"]);
    assert!(out.contains("limit(s) set to their right size"), "{out}");
    let busy = d.info("busy");
    let cpu = busy["limits"]["cpu"].as_f64().unwrap_or(0.0);
    assert!(cpu > 0.25, "busy still at a quarter core: {busy}\n{out}");
    let idle = d.info("idle");
    assert!(
        idle["limits"]["cpu"].as_f64().is_some_and(|c| c < 2.0),
        "idle's cpu: {idle}\n{out}"
    );
    assert!(
        idle["limits"]["memory"]
            .as_u64()
            .is_some_and(|m| (4 << 20..256 << 20).contains(&m)),
        "idle's memory: {idle}\n{out}"
    );
    assert_eq!(idle["status"], "running", "changed in place");
    // Bad headroom: refused, with what to give.
    let err = d.fails(&["plan", "consolidate", "--headroom", "lots"]);
    assert!(err.contains("percentage"), "{err}");

    // The history outlives the daemon.
    let before = |d: &Daemon| {
        let (code, body) = common::http(&d.socket, "GET", "/1.0/instances/busy/history", None);
        assert_eq!(code, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["points"].as_array().unwrap().len()
    };
    let n = before(&d);
    d.kill(libc::SIGTERM);
    d.spawn();
    assert!(before(&d) >= n, "the history was lost at the restart");
    // The host is sampled beside them: its cpu time grows (busy spins), memory is in use.
    let (code, body) = common::http(&d.socket, "GET", "/1.0/history/host", None);
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let pts = v["points"].as_array().unwrap();
    assert!(pts.len() >= 8, "{body}");
    let (a, b) = (&pts[0], &pts[pts.len() - 1]);
    assert!(
        b["cpu_seconds"].as_f64() > a["cpu_seconds"].as_f64(),
        "{a} {b}"
    );
    assert!(b["memory_bytes"].as_u64().unwrap() > 0, "{b}");
    let (code, _) = common::http(&d.socket, "GET", "/1.0/instances/@host/history", None);
    assert_ne!(code, 200, "the host's history is not an instance's");
    d.ok(&["delete", "busy", "idle", "--force"]);
}
