//! `vessel-runc update` changes a live container's limits in its cgroup, with runc's flags or
//! a resources file, refuses what the kernel would not take, and records the new values.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::{Bundle, RUNC};
use serde_json::{json, Value};

/// A file of the container's cgroup, read on the host.
fn cgroup_file(b: &Bundle, id: &str, controller: &str, file: &str) -> String {
    let path = b.state(id)["cgroup_path"].as_str().unwrap().to_string();
    let full = std::path::Path::new("/sys/fs/cgroup")
        .join(controller)
        .join(path)
        .join(file);
    std::fs::read_to_string(&full)
        .unwrap_or_else(|e| panic!("{}: {e}", full.display()))
        .trim()
        .to_string()
}

/// `vessel-runc update` with `stdin` on its standard input.
fn update_from_stdin(b: &Bundle, id: &str, stdin: &str) -> std::process::Output {
    let mut child = Command::new(RUNC)
        .arg("--root")
        .arg(&b.root)
        .args(["update", "--resources", "-", id])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn update_changes_limits_of_a_running_container() {
    let b = Bundle::new("update", &[], |cfg| {
        cfg["process"]["args"] = json!(["sleep", "1000"]);
        cfg["linux"]["resources"] = json!({"memory": {"limit": 67108864}, "pids": {"limit": 100}});
    });
    b.create("up1");
    b.ok(&["start", "up1"]);
    assert_eq!(
        cgroup_file(&b, "up1", "memory", "memory.limit_in_bytes"),
        "67108864"
    );

    b.ok(&[
        "update",
        "--memory",
        "128m",
        "--pids-limit",
        "50",
        "--cpu-quota",
        "50000",
        "--cpu-period",
        "100000",
        "--cpu-share",
        "512",
        "up1",
    ]);
    assert_eq!(
        cgroup_file(&b, "up1", "memory", "memory.limit_in_bytes"),
        "134217728"
    );
    assert_eq!(cgroup_file(&b, "up1", "pids", "pids.max"), "50");
    assert_eq!(cgroup_file(&b, "up1", "cpu", "cpu.cfs_quota_us"), "50000");
    assert_eq!(cgroup_file(&b, "up1", "cpu", "cpu.cfs_period_us"), "100000");
    assert_eq!(cgroup_file(&b, "up1", "cpu", "cpu.shares"), "512");
    // The container sees its new limit.
    let inside = b.ok(&[
        "exec",
        "up1",
        "cat",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]);
    assert_eq!(inside.trim(), "134217728");

    // A resources block on stdin; what it leaves out stays as it is, -1 lifts a limit.
    let out = update_from_stdin(
        &b,
        "up1",
        r#"{"memory": {"limit": 104857600}, "cpu": {"quota": -1}}"#,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        cgroup_file(&b, "up1", "memory", "memory.limit_in_bytes"),
        "104857600"
    );
    assert_eq!(cgroup_file(&b, "up1", "cpu", "cpu.cfs_quota_us"), "-1");
    assert_eq!(cgroup_file(&b, "up1", "pids", "pids.max"), "50");
    // --cpu-shares is accepted too (the brief's spelling of runc's --cpu-share).
    b.ok(&["update", "--cpu-shares", "256", "up1"]);
    assert_eq!(cgroup_file(&b, "up1", "cpu", "cpu.shares"), "256");

    // A value the kernel would not take is refused, and nothing changes.
    let out = b.runc(&["update", "--cpu-quota", "10", "--memory", "256m", "up1"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("below the kernel's minimum"), "{err}");
    assert_eq!(
        cgroup_file(&b, "up1", "memory", "memory.limit_in_bytes"),
        "104857600"
    );
    let out = b.runc(&["update", "--memory", "12x", "up1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--memory"));
    let out = b.runc(&["update", "up1"]);
    assert!(!out.status.success(), "update without anything to change");

    // The new values are recorded in the container's copy of its spec.
    let spec: Value =
        serde_json::from_slice(&std::fs::read(b.root.join("up1/config.json")).unwrap()).unwrap();
    let res = &spec["linux"]["resources"];
    assert_eq!(res["memory"]["limit"], 104857600);
    assert_eq!(res["pids"]["limit"], 50);
    assert_eq!(res["cpu"]["shares"], 256);

    b.ok(&["kill", "up1", "KILL"]);
    b.wait_status("up1", "stopped");
    let out = b.runc(&["update", "--memory", "64m", "up1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("stopped"));
    let out = b.runc(&["update", "--memory", "64m", "no-such-container"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
}
