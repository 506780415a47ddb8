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
