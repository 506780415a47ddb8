//! Lifecycle of a container through the real daemon and CLI: launch, list, info, exec,
//! console, logs, stop, start, restart, pause, resume, delete.

mod common;

use std::time::Duration;

use common::{alive, Daemon, Framed};
use vessel_api::stream::{self, FrameKind};

#[test]
fn launch_exec_stop_start_delete() {
    let d = Daemon::start();
    d.busybox();
    d.ok(&["launch", "busybox", "c1"]);

    let info = d.info("c1");
    assert_eq!(info["status"], "running", "{info}");
    let pid = info["state"]["pid"].as_i64().expect("pid") as i32;
    assert!(alive(pid));

    // The init is pid 1 of its own namespace, with the instance's name as hostname.
    let (code, out) = d.sh("c1", "echo $$; hostname; cat /proc/1/comm");
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[1], "c1", "{out}");
    assert_eq!(lines[2], "init", "{out}");

    // Exit codes pass through.
    assert_eq!(d.sh("c1", "exit 7").0, 7);
    let out = d.vessel(&["exec", "c1", "-T", "--", "/no/such/program"]);
    assert!(!out.status.success());

    // Unprivileged: root inside is an unprivileged uid outside, from a range of its own
    // (the first above the shared base range).
    let (_, map) = d.sh("c1", "cat /proc/self/uid_map");
    let fields: Vec<&str> = map.split_whitespace().collect();
    assert_eq!(&fields[..3], &["0", "1065536", "65536"], "{map}");
    assert_eq!(d.info("c1")["idmap"]["host_base"], 1_065_536);

    // Listing in every format.
    let list: serde_json::Value =
        serde_json::from_str(&d.ok(&["list", "--format", "json"])).unwrap();
    assert_eq!(list[0]["name"], "c1");
    assert!(list[0]["state"]["memory_usage_bytes"].as_u64().unwrap() > 0);
    assert!(list[0]["state"]["pids"].as_u64().unwrap() >= 1);
    let yaml = d.ok(&["list", "--format", "yaml"]);
    assert!(yaml.contains("name: c1"), "{yaml}");
    let table = d.ok(&["list"]);
    assert!(table.contains("c1") && table.contains("RUNNING"), "{table}");

    // Graceful stop: busybox init powers off on its stop signal well before the timeout.
    let t = std::time::Instant::now();
    d.ok(&["stop", "c1", "--timeout", "20"]);
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "stop took {:?}",
        t.elapsed()
    );
    assert_eq!(d.info("c1")["status"], "stopped");
    assert!(!alive(pid));
    assert!(
        d.mounts().is_empty(),
        "root still mounted: {:?}",
        d.mounts()
    );
    assert!(d.cgroup_pids().is_empty());

    // Start again; the writable layer survived.
    d.ok(&["start", "c1"]);
    d.sh("c1", "echo kept > /root/note");
    d.ok(&["restart", "c1", "--force"]);
    assert_eq!(d.sh("c1", "cat /root/note").1.trim(), "kept");

    // Delete refuses a running instance without --force, then removes everything.
    let err = d.fails(&["delete", "c1"]);
    assert!(err.contains("--force"), "{err}");
    d.ok(&["delete", "--force", "c1"]);
    assert!(d.fails(&["info", "c1"]).contains("not found"));
    assert!(d.mounts().is_empty());
    assert!(d.cgroup_pids().is_empty());
    assert!(!d.root().join("instances/c1").exists());
}

#[test]
fn pause_freezes_and_resume_thaws() {
    let d = Daemon::start();
    d.busybox();
    d.ok(&[
        "launch",
        "busybox",
        "p1",
        "--",
        "sh",
        "-c",
        "while :; do echo tick >> /tmp/ticks; sleep 0.2; done",
    ]);
    d.wait_for("ticks", Duration::from_secs(10), || {
        d.sh("p1", "test -s /tmp/ticks").0 == 0
    });
    d.ok(&["pause", "p1"]);
    assert_eq!(d.info("p1")["status"], "frozen");
    let pid = d.info("p1")["state"]["pid"].as_i64().unwrap();
    let st = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // A frozen task sleeps in the freezer (state D or S), never runs.
    let cpu1 = d.info("p1")["state"]["cpu_usage_ns"].as_u64().unwrap();
    std::thread::sleep(Duration::from_millis(800));
    let cpu2 = d.info("p1")["state"]["cpu_usage_ns"].as_u64().unwrap();
    assert_eq!(cpu1, cpu2, "cpu time grew while frozen ({st})");
    // exec is refused while frozen, with a hint.
    assert!(d.fails(&["exec", "p1", "--", "true"]).contains("resume"));
    d.ok(&["resume", "p1"]);
    assert_eq!(d.info("p1")["status"], "running");
    let n1 = d
        .sh("p1", "wc -l < /tmp/ticks")
        .1
        .trim()
        .parse::<u32>()
        .unwrap();
    d.wait_for("more ticks", Duration::from_secs(10), || {
        d.sh("p1", "wc -l < /tmp/ticks")
            .1
            .trim()
            .parse::<u32>()
            .unwrap_or(0)
            > n1
    });
    // A frozen instance can be stopped.
    d.ok(&["pause", "p1"]);
    d.ok(&["stop", "p1", "--timeout", "2"]);
    assert_eq!(d.info("p1")["status"], "stopped");
}

#[test]
fn console_attach_and_logs() {
    let d = Daemon::start();
    d.busybox();
    d.ok(&["launch", "busybox", "k1"]);
    let mut con = Framed::open(&d.socket, "GET", "/1.0/instances/k1/console", "");
    con.send(FrameKind::Resize, &stream::resize_payload(100, 30));
    con.send(FrameKind::Stdin, b"echo con$((6*7))sole; stty size\n");
    let out = con.read_until("30 100");
    assert!(out.contains("con42sole"), "{out}");
    assert!(out.contains("30 100"), "terminal size not applied: {out}");
    drop(con);
    // The console output was recorded.
    let logs = d.ok(&["logs", "k1"]);
    assert!(logs.contains("con42sole"), "{logs}");
}

#[test]
fn exec_with_a_terminal_and_stdin() {
    let d = Daemon::start();
    d.busybox();
    d.ok(&["launch", "busybox", "e1"]);
    let req = r#"{"command":["sh","-c","tty; read x; echo got:$x; exit 3"],"tty":true,"width":90,"height":20}"#;
    let mut ex = Framed::open(&d.socket, "POST", "/1.0/instances/e1/exec", req);
    let out = ex.read_until("/dev/pts/");
    assert!(out.contains("/dev/pts/"), "{out}");
    ex.send(FrameKind::Stdin, b"hello\n");
    let (out, code) = ex.wait_exit();
    assert!(out.contains("got:hello"), "{out}");
    assert_eq!(code, 3);

    // Without a terminal: separate streams and stdin through to EOF.
    let req = r#"{"command":["sh","-c","cat; echo err >&2; exit 5"]}"#;
    let mut ex = Framed::open(&d.socket, "POST", "/1.0/instances/e1/exec", req);
    ex.send(FrameKind::Stdin, b"piped input\n");
    ex.send(FrameKind::CloseStdin, b"");
    let (out, code) = ex.wait_exit();
    assert!(out.contains("piped input") && out.contains("err"), "{out}");
    assert_eq!(code, 5);
}

#[test]
fn privileged_containers_run_without_a_user_namespace() {
    let d = Daemon::start();
    d.busybox();
    d.ok(&["launch", "busybox", "priv", "--privileged"]);
    let (_, map) = d.sh("priv", "cat /proc/self/uid_map");
    let fields: Vec<&str> = map.split_whitespace().collect();
    assert_eq!(&fields[..3], &["0", "0", "4294967295"], "{map}");
    d.sh("priv", "touch /root/made-by-root");
    let md = std::fs::metadata(d.root().join("instances/priv/upper/root/made-by-root")).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&md), 0);
    assert_eq!(d.info("priv")["privileged"], true);
    // Still confined: the default capability set and seccomp filter apply.
    let (_, status) = d.sh("priv", "grep -E 'CapEff|Seccomp:' /proc/self/status");
    assert!(
        status.contains("00000000a80425fb") && status.contains("Seccomp:\t2"),
        "{status}"
    );
}

/// The CLI's interactive paths under a real terminal (util-linux `script` provides one).
#[test]
fn cli_exec_with_a_terminal_and_console_detach() {
    let d = Daemon::start();
    d.busybox();
    d.ok(&["launch", "busybox", "t1"]);
    let vessel = format!(
        "{} --socket {}",
        common::bin_dir().join("vessel").display(),
        d.socket.display()
    );
    let out = std::process::Command::new("script")
        .args([
            "-qec",
            &format!("{vessel} exec -t t1 -- sh -c 'tty; exit 6'"),
            "/dev/null",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("script from util-linux");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("/dev/pts/"), "{text}");
    assert_eq!(out.status.code(), Some(6), "{text}");

    // Console: type a command, then detach with Ctrl-a q; the instance keeps running.
    let mut child = std::process::Command::new("script")
        .args(["-qec", &format!("{vessel} console t1"), "/dev/null"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // What the console shows, as it comes.
    let (tx, shown) = std::sync::mpsc::channel::<Vec<u8>>();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        use std::io::Read;
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = stdout.read(&mut buf) {
            let _ = tx.send(buf[..n].to_vec());
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    use std::io::Write;
    stdin.write_all(b"echo console-$((40+2))\n").unwrap();
    // (The typed line shows `console-$((40+2))`; only the shell's answer says 42.)
    let mut text = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !text.contains("console-42") {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match shown.recv_timeout(left) {
            Ok(b) => text.push_str(&String::from_utf8_lossy(&b)),
            Err(_) => panic!("no answer on the console within 30 s: {text}"),
        }
    }
    stdin.write_all(b"\x01q").unwrap();
    let status = child.wait().unwrap();
    reader.join().unwrap();
    text.extend(
        shown
            .try_iter()
            .map(|b| String::from_utf8_lossy(&b).into_owned()),
    );
    assert!(status.success(), "{text}");
    assert_eq!(d.info("t1")["status"], "running");
}
