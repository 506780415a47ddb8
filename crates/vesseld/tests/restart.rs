//! Instances outlive the daemon: a restart (clean or SIGKILL) re-adopts running containers,
//! and a launch interrupted by SIGKILL leaves the store consistent and nothing orphaned.

mod common;

use std::time::Duration;

use common::{alive, http, Daemon};

#[test]
fn daemon_restart_keeps_containers_running_and_readopts_them() {
    let mut d = Daemon::start();
    d.busybox();
    d.ok(&["launch", "busybox", "r1"]);
    d.ok(&["launch", "busybox", "r2", "-l", "memory=64MiB"]);
    d.ok(&["stop", "r2"]);
    let pid = d.info("r1")["state"]["pid"].as_i64().unwrap() as i32;
    d.sh("r1", "echo before > /root/mark");

    // Clean stop of the daemon: the container keeps running.
    d.kill(libc::SIGTERM);
    assert!(alive(pid), "container died with the daemon");
    d.spawn();
    let info = d.info("r1");
    assert_eq!(info["status"], "running", "{info}");
    assert_eq!(info["state"]["pid"].as_i64().unwrap() as i32, pid);
    assert_eq!(d.info("r2")["status"], "stopped");

    // SIGKILL of the daemon: same.
    d.kill(libc::SIGKILL);
    assert!(alive(pid));
    d.spawn();
    assert_eq!(d.info("r1")["status"], "running");
    // The re-adopted container is fully usable: exec, console log, stop.
    assert_eq!(d.sh("r1", "cat /root/mark").1.trim(), "before");
    d.ok(&["stop", "r1"]);
    assert!(!alive(pid));
    assert_eq!(d.info("r1")["status"], "stopped");

    // An instance that stops while the daemon is away is seen as stopped afterwards.
    d.ok(&["start", "r1"]);
    let pid = d.info("r1")["state"]["pid"].as_i64().unwrap() as i32;
    d.kill(libc::SIGKILL);
    // SAFETY: kill takes plain integers.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    d.wait_for("monitor to finish", Duration::from_secs(10), || {
        d.monitor_pids().is_empty()
    });
    d.spawn();
    let info = d.info("r1");
    assert_eq!(info["status"], "stopped", "{info}");
    assert_eq!(info["last_exit_code"], 137, "{info}");
    assert!(d.mounts().is_empty(), "{:?}", d.mounts());
    assert!(d.cgroup_pids().is_empty());
}

#[test]
fn sigkill_during_launch_leaves_a_consistent_store() {
    let mut d = Daemon::start();
    d.busybox();
    // Several rounds, killing the daemon at different moments of a launch.
    for (round, delay_ms) in [0u64, 30, 120, 400].into_iter().enumerate() {
        let name = format!("k{round}");
        let (code, body) = http(
            &d.socket,
            "POST",
            "/1.0/instances",
            Some(&format!(r#"{{"name":"{name}","image":"busybox"}}"#)),
        );
        assert_eq!(code, 202, "{body}");
        let op: serde_json::Value = serde_json::from_str(&body).unwrap();
        let op_id = op["id"].as_str().unwrap().to_string();
        std::thread::sleep(Duration::from_millis(delay_ms));
        d.kill(libc::SIGKILL);
        d.spawn();

        // The operation ended: success if it finished before the kill, failure otherwise.
        let (code, body) = http(&d.socket, "GET", &format!("/1.0/operations/{op_id}"), None);
        assert_eq!(code, 200, "{body}");
        let op: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(
            op["status"] == "success" || op["status"] == "failure",
            "round {round}: operation left as {op}"
        );
        // The instance either runs (re-adopted) or does not exist; nothing in between.
        let (code, body) = http(&d.socket, "GET", &format!("/1.0/instances/{name}"), None);
        match code {
            200 => {
                let i: serde_json::Value = serde_json::from_str(&body).unwrap();
                assert_eq!(i["status"], "running", "round {round}: {i}");
                assert_eq!(d.sh(&name, "echo ok").1.trim(), "ok");
                d.ok(&["delete", "--force", &name]);
            }
            404 => {
                assert!(op["status"] == "failure", "round {round}: {op}");
                assert!(!d.root().join("instances").join(&name).exists());
            }
            other => panic!("round {round}: unexpected {other}: {body}"),
        }
        // No orphans: mounts, processes, monitors.
        assert!(d.mounts().is_empty(), "round {round}: {:?}", d.mounts());
        d.wait_for("no leftover processes", Duration::from_secs(10), || {
            d.cgroup_pids().is_empty() && d.monitor_pids().is_empty()
        });
    }
}
