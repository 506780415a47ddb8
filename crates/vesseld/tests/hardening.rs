//! Hardening through the real daemon: instances that end at once under load, and the other
//! regressions of the hardening work (one test per defect).

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{alive, Daemon};

/// Busy loops on every core until dropped: the load under which races show.
struct CpuLoad(Vec<Child>);

impl CpuLoad {
    fn start() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        CpuLoad(
            (0..cores * 2)
                .map(|_| {
                    Command::new("sh")
                        .args(["-c", "while :; do :; done"])
                        .stdin(Stdio::null())
                        .spawn()
                        .expect("a busy loop")
                })
                .collect(),
        )
    }
}

impl Drop for CpuLoad {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// An init that exits before its monitor serves (`-- true`) is reaped: under CPU load every
/// instance reaches `stopped` with exit code 0, none stays `running` with a zombie init, and
/// deleting them leaves nothing behind.
#[test]
fn instances_whose_init_exits_at_once_stop_under_load() {
    let d = Daemon::start();
    d.busybox();
    let load = CpuLoad::start();
    const N: usize = 40;
    let names: Vec<String> = (0..N).map(|i| format!("r{i}")).collect();
    // Four launches at a time, as a script would.
    for chunk in names.chunks(4) {
        let launches: Vec<Child> = chunk
            .iter()
            .map(|n| d.spawn_vessel(&["launch", "busybox", n, "--", "true"]))
            .collect();
        for (n, c) in chunk.iter().zip(launches) {
            let out = c.wait_with_output().expect("vessel launch");
            assert!(
                out.status.success(),
                "launch {n}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut stuck = Vec::new();
    for n in &names {
        loop {
            let info = d.info(n);
            if info["status"] == "stopped" {
                assert_eq!(info["last_exit_code"], 0, "{n}: {info}");
                break;
            }
            if Instant::now() > deadline {
                stuck.push(format!("{n}: {info}"));
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    drop(load);
    assert!(stuck.is_empty(), "never stopped:\n{}", stuck.join("\n"));
    assert!(d.monitor_pids().is_empty(), "monitors left running");
    let mut args = vec!["delete"];
    args.extend(names.iter().map(String::as_str));
    d.ok(&args);
    assert!(d.mounts().is_empty(), "{:?}", d.mounts());
    assert!(d.cgroup_pids().is_empty());
    assert!(d.monitor_pids().iter().all(|p| !alive(*p)));
}

/// Requests with out-of-range values are refused with 400 and a message, before anything
/// runs: an exec as uid 4294967295 (the kernel's "unchanged", so it ran as root), ids outside
/// an unprivileged container's map, a NUL byte in the command, limits that overflow or would
/// mean "unlimited".
#[test]
fn out_of_range_requests_are_refused_before_anything_runs() {
    let d = Daemon::start();
    d.busybox();
    d.ok(&["launch", "busybox", "c1"]);
    let exec =
        |body: &str| common::upgrade_refused(&d.socket, "POST", "/1.0/instances/c1/exec", body);
    for (body, want) in [
        (r#"{"command":["id","-u"],"uid":4294967295}"#, "4294967295"),
        (r#"{"command":["id","-u"],"gid":4294967295}"#, "4294967295"),
        (r#"{"command":["id","-u"],"uid":65536}"#, "65536"),
        (r#"{"command":["echo","a\u0000b"]}"#, "NUL"),
        (
            r#"{"command":["env"],"environment":{"A":"x\u0000"}}"#,
            "NUL",
        ),
    ] {
        let (code, resp) = exec(body);
        assert_eq!(code, 400, "{body}: {resp}");
        assert!(resp.contains(want), "{body}: {resp}");
    }
    // The same through the CLI: a refusal, not a command run as root.
    let err = d.fails(&["exec", "c1", "--user", "4294967295", "--", "id", "-u"]);
    assert!(err.contains("outside"), "{err}");
    assert_eq!(d.sh("c1", "id -u").1.trim(), "0");

    for limits in [
        r#"{"memory":9223372036854775808}"#,
        r#"{"memory":18446744073709551615}"#,
        r#"{"memory":67108864,"memory_swap":18446744073709551000}"#,
        r#"{"pids":18446744073709551615}"#,
    ] {
        let body = format!(r#"{{"name":"bad","image":"busybox","limits":{limits}}}"#);
        let (code, resp) = common::http(&d.socket, "POST", "/1.0/instances", Some(&body));
        assert_eq!(code, 400, "{limits}: {resp}");
        assert!(d.fails(&["info", "bad"]).contains("not found"));
    }
}

/// Pulling a FIFO (or a device) answers at once with a refusal, on a running and on a stopped
/// instance, and leaves the instance's lock free: start and delete work right after.
#[test]
fn pulling_a_fifo_is_refused_at_once() {
    let d = Daemon::start();
    d.busybox();
    d.ok(&["launch", "busybox", "c1"]);
    assert_eq!(d.sh("c1", "mkfifo /root/pipe; echo $?").1.trim(), "0");
    let out_dir = d.dir.join("pulled");
    std::fs::create_dir_all(&out_dir).unwrap();
    let dest = out_dir.join("x");
    let dest = dest.to_str().unwrap();
    let pull = |what: &str| {
        let t = Instant::now();
        let child = d.spawn_vessel(&["file", "pull", &format!("c1/root/{what}"), dest]);
        let (out, hung) = common::wait_bounded(child, Duration::from_secs(15));
        assert!(!hung, "pulling {what} hung");
        (t.elapsed(), out)
    };
    let (took, out) = pull("pipe");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a regular file"), "{err}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    d.ok(&["stop", "c1", "--force"]);
    let (took, out) = pull("pipe");
    assert!(
        !out.status.success(),
        "pulled a FIFO from a stopped instance"
    );
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert!(
        d.mounts().is_empty(),
        "the root stayed mounted: {:?}",
        d.mounts()
    );
    d.ok(&["start", "c1"]);
    d.ok(&["delete", "--force", "c1"]);
}
