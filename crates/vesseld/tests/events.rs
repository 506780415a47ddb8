//! The event stream and operations endpoints.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::{http, Daemon};

#[test]
fn lifecycle_and_operation_events_stream_as_they_happen() {
    let d = Daemon::start();
    d.busybox();
    let mut s = UnixStream::connect(&d.socket).unwrap();
    write!(s, "GET /1.0/events HTTP/1.1\r\nHost: vessel\r\n\r\n").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut r = BufReader::new(s);
    let mut head = String::new();
    while r.read_line(&mut head).unwrap() > 0 && !head.ends_with("\r\n\r\n") {}
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");

    d.ok(&["launch", "busybox", "ev1"]);
    d.ok(&["stop", "ev1", "--force"]);
    let mut actions = Vec::new();
    let mut op_statuses = Vec::new();
    while !actions.contains(&"instance-stopped".to_string()) {
        let mut line = String::new();
        r.read_line(&mut line).expect("an event");
        // Chunked framing: skip the size lines.
        let Ok(ev) = serde_json::from_str::<serde_json::Value>(line.trim()) else {
            continue;
        };
        if let Some(a) = ev["action"].as_str() {
            assert_eq!(ev["source"], "/1.0/instances/ev1");
            actions.push(a.to_string());
        }
        if let Some(st) = ev["operation"]["status"].as_str() {
            op_statuses.push(st.to_string());
        }
    }
    assert_eq!(
        actions,
        ["instance-created", "instance-started", "instance-stopped"],
        "{actions:?}"
    );
    assert!(op_statuses.contains(&"running".into()), "{op_statuses:?}");
    assert!(op_statuses.contains(&"success".into()), "{op_statuses:?}");
}

#[test]
fn operations_can_be_listed_waited_for_and_refuse_late_cancels() {
    let d = Daemon::start();
    d.busybox();
    let (code, body) = http(
        &d.socket,
        "POST",
        "/1.0/instances",
        Some(r#"{"name":"op1","image":"busybox","limits":{"pids":64}}"#),
    );
    assert_eq!(code, 202, "{body}");
    let op: serde_json::Value = serde_json::from_str(&body).unwrap();
    let id = op["id"].as_str().unwrap();
    assert_eq!(op["resources"][0], "/1.0/instances/op1");
    let (code, body) = http(
        &d.socket,
        "GET",
        &format!("/1.0/operations/{id}/wait?timeout=30"),
        None,
    );
    assert_eq!(code, 200);
    let done: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(done["status"], "success", "{done}");
    assert_eq!(done["progress"], 100);

    let (_, list) = http(&d.socket, "GET", "/1.0/operations", None);
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert!(list.as_array().unwrap().iter().any(|o| o["id"] == id));

    let (code, body) = http(&d.socket, "DELETE", &format!("/1.0/operations/{id}"), None);
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("already ended"), "{body}");
    let (code, body) = http(&d.socket, "GET", "/1.0/operations/nope", None);
    assert_eq!(code, 404, "{body}");
    let (code, _) = http(
        &d.socket,
        "GET",
        &format!("/1.0/operations/{id}/wait?timeout=x"),
        None,
    );
    assert_eq!(code, 400);

    // The CLI shows operations too.
    let out = d.ok(&["operation", "list", "--format", "json"]);
    assert!(out.contains(id), "{out}");
}

#[test]
fn limits_reach_the_cgroup_files() {
    let d = Daemon::start();
    d.busybox();
    d.ok(&[
        "launch",
        "busybox",
        "lim",
        "-l",
        "cpu=0.5",
        "-l",
        "cpuset=0",
        "-l",
        "memory=96MiB",
        "-l",
        "pids=77",
        "-l",
        "cpu.weight=200",
    ]);
    let read = |controller_file: &str| -> String {
        let (ctl, file) = controller_file.split_once('/').unwrap();
        let dir = d
            .cgroup_dirs()
            .into_iter()
            .find(|p| p.parent().is_some_and(|c| c.ends_with(ctl)))
            .unwrap_or_else(|| panic!("no {ctl} hierarchy"));
        std::fs::read_to_string(dir.join("lim").join(file))
            .unwrap_or_else(|e| panic!("{ctl}/{file}: {e}"))
            .trim()
            .to_string()
    };
    if d.info("lim")["state"]["pid"].is_null() {
        panic!("not running");
    }
    let server: serde_json::Value =
        serde_json::from_str(&d.ok(&["info", "--format", "json"])).unwrap();
    match server["host"]["cgroup_version"].as_str() {
        Some("v1") => {
            assert_eq!(read("cpu/cpu.cfs_quota_us"), "50000");
            assert_eq!(read("cpu/cpu.cfs_period_us"), "100000");
            assert_eq!(read("cpuset/cpuset.cpus"), "0");
            assert_eq!(
                read("memory/memory.limit_in_bytes"),
                (96u64 << 20).to_string()
            );
            assert_eq!(read("pids/pids.max"), "77");
            // Weight 200 is twice the default weight 100, whose share is 1024.
            assert_eq!(read("cpu/cpu.shares"), "2048");
        }
        other => panic!("unexpected cgroup layout {other:?} on the test host"),
    }
    // Inside, the container sees its own cgroup as the root.
    let (_, cg) = d.sh("lim", "cat /proc/self/cgroup");
    assert!(cg.lines().all(|l| l.ends_with(":/")), "{cg}");
}

#[test]
fn a_long_operation_can_be_cancelled_and_leaves_nothing() {
    let d = Daemon::start();
    let (code, body) = http(
        &d.socket,
        "POST",
        "/1.0/images",
        Some(r#"{"source":"debian","release":"bookworm","alias":"cancelled"}"#),
    );
    assert_eq!(code, 202, "{body}");
    let op: serde_json::Value = serde_json::from_str(&body).unwrap();
    let id = op["id"].as_str().unwrap().to_string();
    // Wait until debootstrap is under way, then cancel.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (_, body) = http(&d.socket, "GET", &format!("/1.0/operations/{id}"), None);
        let op: serde_json::Value = serde_json::from_str(&body).unwrap();
        if op["progress"].as_u64().unwrap_or(0) >= 10 {
            break;
        }
        assert_eq!(op["status"], "running", "{op}");
        assert!(
            std::time::Instant::now() < deadline,
            "the build never made progress: {op}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (code, body) = http(&d.socket, "DELETE", &format!("/1.0/operations/{id}"), None);
    assert_eq!(code, 200, "{body}");
    let (_, body) = http(
        &d.socket,
        "GET",
        &format!("/1.0/operations/{id}/wait?timeout=60"),
        None,
    );
    let op: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(op["status"], "cancelled", "{op}");
    // No image, no staging tree, no debootstrap left running.
    assert!(d
        .fails(&["image", "info", "cancelled"])
        .contains("not found"));
    let leftovers: Vec<_> = std::fs::read_dir(d.root().join("images"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".staging"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let marker = d.root().to_string_lossy().into_owned();
    let running = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .any(|c| {
            let c = String::from_utf8_lossy(&c);
            c.contains("debootstrap") && c.contains(&marker)
        });
    assert!(!running, "debootstrap still runs after the cancel");
}
