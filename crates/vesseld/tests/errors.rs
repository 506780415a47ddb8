//! Bad input gets a clear error and changes nothing.

mod common;

use common::{bin_dir, http, Daemon};

#[test]
fn bad_requests_are_refused_and_change_nothing() {
    let d = Daemon::start();
    d.busybox();
    let before = d.ok(&["list", "--format", "json"]);

    let err = d.fails(&["launch", "nosuchimage", "x1"]);
    assert!(
        err.contains("nosuchimage") && err.contains("image"),
        "{err}"
    );
    let err = d.fails(&["launch", "busybox", "1bad"]);
    assert!(err.contains("invalid instance name"), "{err}");
    let err = d.fails(&["launch", "busybox", "x2", "-l", "memory=1KiB"]);
    assert!(err.contains("memory"), "{err}");
    let err = d.fails(&["launch", "busybox", "x3", "-l", "cpu=-1"]);
    assert!(err.contains("cpu"), "{err}");
    let err = d.fails(&["launch", "busybox", "x4", "-l", "pids=0"]);
    assert!(err.contains("pids"), "{err}");
    let err = d.fails(&["launch", "busybox", "x5", "-l", "cpuset=99"]);
    assert!(err.contains("cpuset"), "{err}");
    let err = d.fails(&["launch", "busybox", "x6", "--", "/does/not/exist"]);
    assert!(err.contains("/does/not/exist"), "{err}");
    assert_eq!(
        d.ok(&["list", "--format", "json"]),
        before,
        "a failed launch left something"
    );
    assert!(d.mounts().is_empty());
    assert!(d.cgroup_pids().is_empty());

    d.ok(&["launch", "busybox", "dup"]);
    let err = d.fails(&["launch", "busybox", "dup"]);
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(d.info("dup")["status"], "running");

    // Malformed API bodies get JSON errors with the parser's message.
    let (code, body) = http(&d.socket, "POST", "/1.0/instances", Some("{\"name\": 5}"));
    assert_eq!(code, 400);
    let e: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(e["code"], 400);
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .contains("invalid request body"),
        "{body}"
    );
    let (code, body) = http(&d.socket, "GET", "/1.0/nope", None);
    assert_eq!(code, 404, "{body}");

    // Images in use cannot be deleted.
    let err = d.fails(&["image", "delete", "busybox"]);
    assert!(err.contains("dup"), "{err}");
}

#[test]
fn cli_says_how_to_start_a_daemon_that_is_not_running() {
    let out = std::process::Command::new(bin_dir().join("vessel"))
        .args(["--socket", "/tmp/vessel-no-daemon-here.sock", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("vesseld"), "{err}");
    assert!(err.contains("/tmp/vessel-no-daemon-here.sock"), "{err}");
}

#[test]
fn daemon_refuses_a_root_dir_unprivileged_containers_cannot_reach() {
    common::require_root();
    let dir = std::path::PathBuf::from(format!("/tmp/vt-closed-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let out = std::process::Command::new(bin_dir().join("vesseld"))
        .arg("--root-dir")
        .arg(dir.join("root"))
        .arg("--run-dir")
        .arg(dir.join("run"))
        .arg("--socket")
        .arg(dir.join("s.sock"))
        .arg("--no-default-network")
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("chmod o+x"), "{err}");
    assert!(!err.contains("backtrace"), "{err}");
}
