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

/// A small file system mounted by a test, unmounted on drop.
struct SmallFs(std::path::PathBuf);

impl SmallFs {
    fn new(path: std::path::PathBuf, size: &str) -> Self {
        std::fs::create_dir_all(&path).unwrap();
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(&path)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mounting a tmpfs at {}", path.display());
        SmallFs(path)
    }

    /// Fills the file system to the last byte with one file; returns its path.
    fn fill(&self) -> std::path::PathBuf {
        let f = self.0.join("filler");
        let _ = Command::new("dd")
            .args(["if=/dev/zero", "bs=64k"])
            .arg(format!("of={}", f.display()))
            .stderr(Stdio::null())
            .status();
        f
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// A start that fails half-way (no space left for the monitor's files) rolls the instance
/// back to `stopped`, with the reason in the error; once space is free again start, exec and
/// delete work, and nothing of the failed start stays behind.
#[test]
fn a_start_that_fails_for_lack_of_space_rolls_back() {
    let run = std::path::PathBuf::from(format!("/tmp/vt-small-{}", std::process::id()));
    let fs = SmallFs::new(run.clone(), "4m");
    let mut d = Daemon::start_on(None, Some(&run));
    d.busybox();
    d.ok(&["create", "busybox", "s1"]);
    let filler = fs.fill();
    let err = d.fails(&["start", "s1"]);
    assert!(err.to_lowercase().contains("space"), "{err}");
    assert!(
        !err.contains(run.to_str().unwrap()),
        "a host path in the error: {err}"
    );
    let info = d.info("s1");
    assert_eq!(info["status"], "stopped", "{info}");
    assert!(d.monitor_pids().is_empty());
    assert!(d.cgroup_pids().is_empty());
    std::fs::remove_file(&filler).unwrap();
    d.ok(&["start", "s1"]);
    assert_eq!(d.sh("s1", "echo up").1, "up\n");
    d.ok(&["delete", "--force", "s1"]);
    assert!(d.mounts().is_empty(), "{:?}", d.mounts());
    d.kill(libc::SIGTERM);
    drop(d);
    drop(fs);
    let _ = std::fs::remove_dir(&run);
}

/// With the store's own disk full, a start fails and the instance still accepts the next
/// command: its status is never left `starting`, and once space is free again start, exec and
/// delete work — without a daemon restart.
#[test]
fn a_full_store_disk_never_wedges_an_instance() {
    let disk = std::path::PathBuf::from(format!("/tmp/vt-fullroot-{}", std::process::id()));
    let fs = SmallFs::new(disk.clone(), "48m");
    // Store, instances and run directory on the one disk that fills up.
    let (root, run) = (disk.join("root"), disk.join("run"));
    let mut d = Daemon::start_on(Some(&root), Some(&run));
    d.busybox();
    d.ok(&["create", "busybox", "f1"]);
    d.ok(&["launch", "busybox", "f2"]);
    let filler = fs.fill();
    let out = d.vessel(&["start", "f1"]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !err.contains(disk.to_str().unwrap()),
        "a host path in the error: {err}"
    );
    // Whatever the start did, f1 is not in a transitional state.
    let st = d.info("f1")["status"].as_str().unwrap().to_string();
    assert!(st == "stopped" || st == "running", "f1 is {st} ({err})");
    let out = d.vessel(&["stop", "f2", "--force"]);
    let _ = out;
    let st = d.info("f2")["status"].as_str().unwrap().to_string();
    assert!(st == "stopped" || st == "running", "f2 is {st}");
    std::fs::remove_file(&filler).unwrap();
    // Space is back: everything answers, no restart needed.
    d.wait_for("f1 and f2 settled", Duration::from_secs(20), || {
        ["f1", "f2"].iter().all(|n| {
            let s = d.info(n)["status"].as_str().unwrap_or_default().to_string();
            s == "stopped" || s == "running"
        })
    });
    if d.info("f1")["status"] == "stopped" {
        d.ok(&["start", "f1"]);
    }
    assert_eq!(d.sh("f1", "echo up").1, "up\n");
    d.ok(&["delete", "--force", "f1", "f2"]);
    // An upload stops before it takes the store's last GiB (this one has 48 MiB in all).
    let upload = std::path::PathBuf::from(format!("/tmp/vt-upload-{}.tar", std::process::id()));
    std::fs::write(&upload, vec![0u8; 4 << 20]).unwrap();
    let out = d.vessel(&["image", "import", upload.to_str().unwrap()]);
    let _ = std::fs::remove_file(&upload);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success() && err.contains("MiB free: the upload stopped"),
        "{err}"
    );
    assert!(d.mounts().is_empty(), "{:?}", d.mounts());
    d.kill(libc::SIGTERM);
    drop(d);
    drop(fs);
    let _ = std::fs::remove_dir(&disk);
}

/// Open descriptors of a process.
fn fd_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// The socket's listener is bounded: thousands of idle and half-sent connections neither
/// exhaust the daemon's descriptors nor stop it serving others, and they are dropped after
/// the idle timeout; bodies are bounded per endpoint (413 before a byte of the excess is
/// read); no answer echoes an unbounded field back.
#[test]
fn the_listener_survives_idle_floods_and_oversized_input() {
    use std::io::Write;
    use std::os::unix::net::UnixStream;
    let d = Daemon::start();
    d.busybox();
    let pid = d.pid();
    let base = fd_count(pid);
    // 3,000 connections: half send nothing, half stop in the middle of a header.
    let mut held = Vec::new();
    for i in 0..3000 {
        let mut s = UnixStream::connect(&d.socket).expect("connect");
        if i % 2 == 1 {
            let _ = s.write_all(b"GET /1.0/instances HTTP/1.1\r\nHost: vess");
        }
        held.push(s);
    }
    // Others are still served, promptly.
    let t = Instant::now();
    d.ok(&["list"]);
    d.ok(&["launch", "busybox", "w1"]);
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "took {:?}",
        t.elapsed()
    );
    let during = fd_count(pid);
    assert!(
        during >= base + 2000,
        "the connections were not even accepted ({during})"
    );
    // The idle timeout reclaims them all.
    d.wait_for("idle connections dropped", Duration::from_secs(40), || {
        fd_count(pid) < base + 50
    });
    drop(held);

    // A JSON endpoint refuses a body over its bound without reading it.
    let mut s = UnixStream::connect(&d.socket).unwrap();
    s.write_all(
        b"POST /1.0/instances HTTP/1.1\r\nHost: v\r\nContent-Type: application/json\r\n\
          Content-Length: 1073741824\r\nConnection: close\r\n\r\n{\"name\":",
    )
    .unwrap();
    let mut resp = String::new();
    use std::io::Read;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.read_to_string(&mut resp);
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
    // Big fields within the bound are refused and never echoed whole.
    let long = "n".repeat(500_000);
    let body = format!(r#"{{"name":"{long}","image":"busybox"}}"#);
    let (code, resp) = common::http(&d.socket, "POST", "/1.0/instances", Some(&body));
    assert_eq!(code, 400, "{}", &resp[..resp.len().min(300)]);
    assert!(resp.len() < 1000, "echoed {} bytes", resp.len());
    let env: String = (0..200)
        .map(|i| format!(r#""V{i}":"{}""#, "x".repeat(4000)))
        .collect::<Vec<_>>()
        .join(",");
    let body = format!(r#"{{"name":"big","image":"busybox","environment":{{{env}}}}}"#);
    let (code, resp) = common::http(&d.socket, "POST", "/1.0/instances", Some(&body));
    assert_eq!(code, 400, "{resp}");
    assert!(resp.contains("environment"), "{resp}");
    assert!(d.fails(&["info", "big"]).contains("not found"));
    d.ok(&["delete", "--force", "w1"]);
}

/// Stop timeouts are bounded, and a forced stop or delete wins over a graceful stop in
/// progress at once (it waited for the graceful one's whole timeout, or forever).
#[test]
fn a_forced_stop_overtakes_a_graceful_one() {
    let d = Daemon::start();
    d.busybox();
    let stubborn = "trap '' TERM HUP INT USR1 USR2 PWR; while :; do sleep 1; done";
    d.ok(&["launch", "busybox", "s1", "--", "sh", "-c", stubborn]);
    let (code, resp) = common::http(
        &d.socket,
        "PUT",
        "/1.0/instances/s1/state",
        Some(r#"{"action":"stop","timeout":18446744073709551615}"#),
    );
    assert_eq!(code, 400, "{resp}");
    assert_eq!(d.info("s1")["status"], "running");

    for forced in [["stop", "--force", "s1"], ["delete", "--force", "s1"]] {
        if d.vessel(&["info", "s1"]).status.success() && d.info("s1")["status"] != "running" {
            d.ok(&["start", "s1"]);
        }
        if !d.vessel(&["info", "s1"]).status.success() {
            d.ok(&["launch", "busybox", "s1", "--", "sh", "-c", stubborn]);
        }
        let graceful = d.spawn_vessel(&["stop", "s1", "--timeout", "3000"]);
        d.wait_for(
            "the graceful stop to begin",
            Duration::from_secs(20),
            || d.info("s1")["status"] == "stopping",
        );
        let t = Instant::now();
        d.ok(&forced);
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "{forced:?} waited {:?} for the graceful stop",
            t.elapsed()
        );
        let (out, hung) = common::wait_bounded(graceful, Duration::from_secs(20));
        assert!(!hung, "the graceful stop never ended");
        let _ = out;
    }
    assert!(d.fails(&["info", "s1"]).contains("not found"));
    assert!(d.mounts().is_empty() && d.cgroup_pids().is_empty());
}

/// A daemon stopped after its last instance is gone leaves no cgroup behind; one stopped
/// while an instance runs leaves that instance (and its parent) alone, and the next daemon
/// adopts it.
#[test]
fn a_stopped_daemon_leaves_no_empty_cgroups() {
    let mut d = Daemon::start();
    d.busybox();
    d.ok(&["launch", "busybox", "k1"]);
    d.kill(libc::SIGTERM);
    assert!(
        !d.cgroup_dirs().is_empty(),
        "k1's cgroup went with the daemon"
    );
    assert!(!d.cgroup_pids().is_empty(), "k1 stopped with the daemon");
    d.spawn();
    assert_eq!(d.info("k1")["status"], "running");
    d.ok(&["delete", "--force", "k1"]);
    d.kill(libc::SIGTERM);
    assert!(
        d.cgroup_dirs().is_empty(),
        "left behind: {:?}",
        d.cgroup_dirs()
    );
}

/// A restarted daemon checks the init, not only the monitor: a monitor that holds a dead
/// (zombie) init is ended and the instance marked stopped, instead of re-adopted as running
/// forever; it then starts again normally.
#[test]
fn a_restart_does_not_adopt_a_monitor_whose_init_is_gone() {
    let mut d = Daemon::start();
    d.busybox();
    d.ok(&["launch", "busybox", "z1"]);
    let init = d.info("z1")["state"]["pid"].as_i64().unwrap() as i32;
    let monitor = *d.monitor_pids().first().expect("a monitor");
    // The monitor cannot reap (stopped), so the killed init stays a zombie under it.
    // SAFETY: kill takes plain integers; both pids belong to this test's instance.
    unsafe {
        libc::kill(monitor, libc::SIGSTOP);
        libc::kill(init, libc::SIGKILL);
    }
    d.wait_for("the init to be a zombie", Duration::from_secs(10), || {
        std::fs::read_to_string(format!("/proc/{init}/stat"))
            .is_ok_and(|s| s.split(") ").nth(1).is_some_and(|r| r.starts_with('Z')))
    });
    d.kill(libc::SIGKILL);
    d.spawn();
    let info = d.info("z1");
    assert_eq!(info["status"], "stopped", "{info}");
    assert!(!alive(monitor), "the wedged monitor was left running");
    assert!(d.mounts().is_empty(), "{:?}", d.mounts());
    d.ok(&["start", "z1"]);
    assert_eq!(d.sh("z1", "echo back").1, "back\n");
    d.ok(&["delete", "--force", "z1"]);
}

/// A network's gateway keeps its MAC while NICs come and go (a bridge without a fixed MAC
/// takes its lowest port's, and every instance's ARP entry for the gateway went stale).
#[test]
fn the_gateway_mac_holds_while_nics_come_and_go() {
    let ns = common::TestNetns::new("mac");
    let d = Daemon::start_in_netns(&ns.0);
    d.busybox();
    d.ok(&["network", "create", "lan", "--subnet", "10.79.0.0/24"]);
    let gw = ns.mac("vbr-lan");
    assert!(!gw.is_empty());
    for n in ["m1", "m2", "m3"] {
        d.ok(&["launch", "busybox", n]);
        d.ok(&["network", "attach", "lan", n]);
        assert_eq!(
            ns.mac("vbr-lan"),
            gw,
            "the gateway MAC moved when {n} joined"
        );
    }
    // Host ends with the lowest MACs there are, then one leaves: still the same gateway.
    for (i, l) in ns
        .links()
        .iter()
        .filter(|l| l.starts_with("vh"))
        .enumerate()
    {
        ns.run(&[
            "ip",
            "link",
            "set",
            l,
            "address",
            &format!("02:00:00:00:00:0{}", i + 1),
        ]);
    }
    assert_eq!(ns.mac("vbr-lan"), gw, "a port with a lower MAC moved it");
    d.ok(&["network", "detach", "lan", "m2"]);
    assert_eq!(ns.mac("vbr-lan"), gw, "the gateway MAC moved when m2 left");
    d.ok(&["delete", "--force", "m1", "m2", "m3"]);
    d.ok(&["network", "delete", "lan"]);
}
