//! VMs under abuse and daemon deaths: a guest flooding its console, QEMU dying while the daemon
//! is away or in the middle of a delete, QEMU's end explained, and SIGTERM to the daemon while
//! a VM starts. QEMU runs under TCG here.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{alive, wait_console, Daemon, Framed};
use vessel_api::stream::FrameKind;

/// A console log file never grows past this (the sink rotates at 1 MiB).
const LOG_LIMIT: u64 = 1 << 20;

/// Waits until the console log holds `needle`.
/// Launches a para VM and waits until its guest is up.
fn launch_ready(d: &Daemon, name: &str) {
    d.ok(&["launch", "vm/busybox", name, "--vm", "-l", "memory=256MiB"]);
    wait_console(d, name, "VESSEL-READY", Duration::from_secs(180));
}

/// Pids of live processes of this daemon's directory whose command line contains `what`.
fn processes(d: &Daemon, what: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let c = String::from_utf8_lossy(&c);
                c.contains(what) && d.names_dir(&c)
            }) && alive(*pid)
        })
        .collect()
}

/// QEMU processes of the VM `name` (its run directory is on their command line).
fn qemus_of(d: &Daemon, name: &str) -> Vec<i32> {
    processes(d, &format!("vms/{name}/qemu.pid"))
        .into_iter()
        .filter(|p| processes(d, "qemu-system").contains(p))
        .collect()
}

/// Console log sinks of the VM `name`.
fn sinks_of(d: &Daemon, name: &str) -> Vec<i32> {
    processes(d, &format!("vms/{name}/console.log"))
        .into_iter()
        .filter(|p| processes(d, "--console-log").contains(p))
        .collect()
}

fn run_dir(d: &Daemon, name: &str) -> PathBuf {
    d.dir.join("run/vms").join(name)
}

/// The VM's cgroup directories that exist, in every hierarchy.
fn vm_cgroups(d: &Daemon, name: &str) -> Vec<PathBuf> {
    d.cgroup_dirs()
        .into_iter()
        .map(|p| p.join(name))
        .filter(|p| p.is_dir())
        .collect()
}

fn qemu_pid(d: &Daemon, name: &str) -> i32 {
    let info = d.info(name);
    info["state"]["pid"]
        .as_i64()
        .unwrap_or_else(|| panic!("{name} has no QEMU pid: {info}")) as i32
}

/// (status, last exit code, last exit reason) of an instance.
fn exit_of(d: &Daemon, name: &str) -> (String, Option<i64>, String) {
    let i = d.info(name);
    (
        i["status"].as_str().unwrap_or_default().to_string(),
        i["last_exit_code"].as_i64(),
        i["last_exit_reason"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

fn wait_stopped(d: &Daemon, name: &str) {
    d.wait_for(
        &format!("{name} to be stopped"),
        Duration::from_secs(60),
        || d.info(name)["status"] == "stopped",
    );
}

fn kill(pid: i32, sig: i32) {
    // SAFETY: kill takes plain integers.
    unsafe { libc::kill(pid, sig) };
}

fn size(p: &Path) -> u64 {
    std::fs::metadata(p).map_or(0, |m| m.len())
}

/// The console log and its rotated predecessor each stay within the limit.
#[track_caller]
fn assert_log_bounded(run: &Path) {
    let (cur, prev) = (run.join("console.log"), run.join("console.log.1"));
    assert!(
        size(&cur) <= LOG_LIMIT && size(&prev) <= LOG_LIMIT,
        "console logs of {} and {} bytes",
        size(&cur),
        size(&prev)
    );
}

/// Runs `script` in the guest in a session of its own, which outlives the exec (the agent
/// kills the exec's process group when it ends): returns once it has started.
fn in_background(d: &Daemon, name: &str, script: &str) {
    let (code, out) = d.sh(
        name,
        &format!(
            "rm -f /run/bg.started; setsid sh -c 'touch /run/bg.started; {script}' \
             </dev/null >/dev/null 2>&1 & \
             while [ ! -e /run/bg.started ]; do sleep 0.1; done"
        ),
    );
    assert_eq!(code, 0, "{out}");
}

/// The pid of the guest's console shell (`/bin/sh -l`, started by the init on the console).
fn console_shell(d: &Daemon, name: &str) -> String {
    let (code, out) = d.sh(
        name,
        "for p in /proc/[0-9]*; do \
           [ \"$(tr '\\0' ' ' < $p/cmdline 2>/dev/null)\" = '/bin/sh -l ' ] && echo ${p#/proc/}; \
         done; true",
    );
    assert_eq!(code, 0, "{out}");
    out.lines()
        .next()
        .expect("a console shell")
        .trim()
        .to_string()
}

#[test]
fn a_console_flood_is_bounded_and_leaves_the_agent_and_the_console_working() {
    let mut d = Daemon::start();
    d.ok(&["image", "build", "vm"]);
    launch_ready(&d, "f1");
    let run = run_dir(&d, "f1");

    // A client that attached to the console and reads nothing stays there during the flood.
    let stuck = Framed::open(&d.socket, "GET", "/1.0/instances/f1/console", "");
    let t = Instant::now();
    let (code, out) = d.sh(
        "f1",
        "head -c 8000000 /dev/zero | tr '\\0' x > /dev/console; echo flooded",
    );
    eprintln!("8 MB through the console in {:?}", t.elapsed());
    assert_eq!((code, out.trim()), (0, "flooded"));
    drop(stuck);
    assert_log_bounded(&run);
    assert!(
        size(&run.join("console.log.1")) > 0,
        "the log never rotated"
    );

    // The bound holds while the daemon is down too: the sink outlives it.
    in_background(
        &d,
        "f1",
        "sleep 2; head -c 6000000 /dev/zero | tr \"\\0\" y > /dev/hvc0; echo FLOOD-END > /dev/hvc0",
    );
    d.kill(libc::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(180);
    while !String::from_utf8_lossy(&std::fs::read(run.join("console.log")).unwrap_or_default())
        .contains("FLOOD-END")
    {
        assert_log_bounded(&run);
        assert!(Instant::now() < deadline, "the flood did not end");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_log_bounded(&run);
    d.spawn();
    assert_eq!(d.info("f1")["status"], "running");
    let logs = d.vessel(&["logs", "f1"]).stdout;
    assert!(
        logs.len() as u64 <= 2 * LOG_LIMIT,
        "{} bytes of logs",
        logs.len()
    );
    assert!(String::from_utf8_lossy(&logs).contains("FLOOD-END"));

    // The agent answers after the floods.
    assert_eq!(d.sh("f1", "echo alive").1.trim(), "alive");

    // The console works again after a client left while the guest took no console input (the
    // daemon's proxy used to wait on the guest, miss the client leaving, and keep QEMU's only
    // console connection, so that every later attach waited forever).
    let shell = console_shell(&d, "f1");
    assert_eq!(d.sh("f1", &format!("kill -STOP {shell}")).0, 0);
    {
        let mut typist = Framed::open(&d.socket, "GET", "/1.0/instances/f1/console", "");
        let line = format!("{}\n", "z".repeat(999));
        for _ in 0..32 {
            // The daemon may stop taking input the guest does not read: the client leaves.
            let sent = typist.try_send(
                FrameKind::Stdin,
                line.repeat(64).as_bytes(),
                Duration::from_secs(5),
            );
            if sent.is_err() {
                break;
            }
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    std::thread::sleep(Duration::from_secs(1));
    let mut next = Framed::open(&d.socket, "GET", "/1.0/instances/f1/console", "");
    next.set_read_timeout(Duration::from_secs(20));
    d.sh("f1", "sleep 1; echo MARK-$((6*7)) > /dev/console");
    assert!(next.read_until("MARK-42").contains("MARK-42"));

    // A client that holds the console and reads nothing does not lock others out: a new
    // attach takes the console over.
    let mut newest = Framed::open(&d.socket, "GET", "/1.0/instances/f1/console", "");
    newest.set_read_timeout(Duration::from_secs(20));
    d.sh("f1", "sleep 1; echo MARK-$((7*7)) > /dev/console");
    assert!(newest.read_until("MARK-49").contains("MARK-49"));
    drop(next);

    d.ok(&["delete", "--force", "f1"]);
    assert!(qemus_of(&d, "f1").is_empty());
    assert!(sinks_of(&d, "f1").is_empty());
}

#[test]
fn restart_removes_what_a_vm_that_died_meanwhile_left() {
    let mut d = Daemon::start();
    d.ok(&["image", "build", "vm"]);
    d.ok(&["launch", "vm/busybox", "g1", "--vm"]);
    let qemu = qemu_pid(&d, "g1");
    let run = run_dir(&d, "g1");
    let runtime_files = [
        "qmp.sock",
        "console.sock",
        "agent.sock",
        "qemu.pid",
        "vm.json",
    ];
    for f in runtime_files {
        assert!(run.join(f).exists(), "{f} missing while the VM runs");
    }
    d.kill(libc::SIGKILL);
    kill(qemu, libc::SIGKILL);
    d.wait_for("QEMU to die", Duration::from_secs(10), || !alive(qemu));
    assert!(!vm_cgroups(&d, "g1").is_empty());
    d.spawn();
    assert_eq!(d.info("g1")["status"], "stopped");
    for f in runtime_files {
        assert!(!run.join(f).exists(), "{f} left after the restart");
    }
    assert!(
        vm_cgroups(&d, "g1").is_empty(),
        "{:?}",
        vm_cgroups(&d, "g1")
    );
    assert!(sinks_of(&d, "g1").is_empty());
    // It starts again as usual.
    d.ok(&["start", "g1"]);
    d.ok(&["delete", "--force", "g1"]);

    // The daemon killed at various points of `delete --force`: whatever point it was, the
    // next daemon leaves no QEMU, sink or cgroup behind, and a second delete finishes it.
    for (i, delay_ms) in [0u64, 40, 120, 250, 500].into_iter().enumerate() {
        let name = format!("k{i}");
        d.ok(&["launch", "vm/busybox", &name, "--vm"]);
        let mut del = d.spawn_vessel(&["delete", "--force", &name]);
        std::thread::sleep(Duration::from_millis(delay_ms));
        d.kill(libc::SIGKILL);
        let _ = del.kill();
        let _ = del.wait();
        d.spawn();
        if d.vessel(&["info", &name]).status.success() {
            // Killed before the delete began (still running, adopted) or during it (stopped).
            let status = d.info(&name)["status"].clone();
            assert!(
                status == "stopped" || status == "running",
                "{status} after {delay_ms} ms"
            );
            d.ok(&["delete", "--force", &name]);
        }
        assert!(
            qemus_of(&d, &name).is_empty(),
            "QEMU left after {delay_ms} ms"
        );
        assert!(
            sinks_of(&d, &name).is_empty(),
            "sink left after {delay_ms} ms"
        );
        assert!(
            vm_cgroups(&d, &name).is_empty(),
            "cgroup left after {delay_ms} ms: {:?}",
            vm_cgroups(&d, &name)
        );
        assert!(
            !run_dir(&d, &name).exists(),
            "run directory left after {delay_ms} ms"
        );
    }
}

#[test]
fn a_vm_that_ended_says_how() {
    let mut d = Daemon::start();
    d.ok(&["image", "build", "vm"]);

    // Killed: no shutdown event, the QMP connection just drops.
    d.ok(&["launch", "vm/busybox", "w1", "--vm"]);
    kill(qemu_pid(&d, "w1"), libc::SIGKILL);
    wait_stopped(&d, "w1");
    let (_, code, reason) = exit_of(&d, "w1");
    assert!(reason.contains("killed (SIGKILL) or crashed"), "{reason}");
    assert_eq!(code, None);
    let text = d.ok(&["info", "w1"]);
    assert!(text.contains("Last exit: QEMU ended without"), "{text}");

    // Terminated by a signal QEMU handles: its log names the signal and the sender.
    d.ok(&["start", "w1"]);
    kill(qemu_pid(&d, "w1"), libc::SIGTERM);
    wait_stopped(&d, "w1");
    let (_, code, reason) = exit_of(&d, "w1");
    assert!(reason.contains("signal 15 (SIGTERM) from pid"), "{reason}");
    assert_eq!(code, Some(143));

    // The guest powers itself off.
    d.ok(&["start", "w1"]);
    wait_console(&d, "w1", "VESSEL-READY", Duration::from_secs(180));
    in_background(&d, "w1", "sleep 1; poweroff");
    wait_stopped(&d, "w1");
    assert_eq!(
        exit_of(&d, "w1"),
        ("stopped".into(), Some(0), "the guest powered off".into())
    );

    // Stopped by the user.
    d.ok(&["start", "w1"]);
    d.ok(&["stop", "--force", "w1"]);
    assert_eq!(
        exit_of(&d, "w1"),
        (
            "stopped".into(),
            Some(137),
            "stopped: QEMU was killed (forced)".into()
        )
    );

    // Killed while the daemon was away: said so, and the reason survives restarts.
    d.ok(&["start", "w1"]);
    let qemu = qemu_pid(&d, "w1");
    d.kill(libc::SIGKILL);
    kill(qemu, libc::SIGKILL);
    d.wait_for("QEMU to die", Duration::from_secs(10), || !alive(qemu));
    d.spawn();
    let (status, code, reason) = exit_of(&d, "w1");
    assert_eq!(status, "stopped");
    assert!(reason.contains("while vesseld was not running"), "{reason}");
    assert_eq!(code, None, "the previous run's code is not this run's");
    d.kill(libc::SIGTERM);
    d.spawn();
    assert_eq!(exit_of(&d, "w1").2, reason);
    d.ok(&["delete", "w1"]);
}

#[test]
fn sigterm_during_a_vm_start_stops_the_daemon_promptly_and_the_next_one_does_not_race_it() {
    let mut d = Daemon::start();
    d.ok(&["image", "build", "vm"]);
    // The first VM start of a daemon probes KVM first (a 5 s boot under KVM here, which
    // fails): the daemon is told to stop in the middle of it.
    let mut launch = d.spawn_vessel(&["launch", "vm/busybox", "s1", "--vm"]);
    d.wait_for("the start to begin", Duration::from_secs(30), || {
        d.log().contains("Creating instance s1")
    });
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    let mut old = d.signal_and_release(libc::SIGTERM).expect("a daemon");
    // The next daemon is started at once, while the old one may still be exiting.
    d.spawn();
    let deadline = Instant::now() + Duration::from_secs(60);
    let took = loop {
        if let Ok(Some(_)) = old.try_wait() {
            break t.elapsed();
        }
        assert!(Instant::now() < deadline, "the old daemon did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    eprintln!("the daemon exited {took:?} after SIGTERM");
    assert!(took < Duration::from_secs(4), "exit took {took:?}");
    let _ = launch.wait();
    // `spawn` may have been answered by the old daemon's socket: wait for the new one.
    d.wait_for("the next daemon to answer", Duration::from_secs(30), || {
        d.vessel(&["list"]).status.success()
    });
    // Whatever the old daemon left is the new one's: the start finished and was adopted, or
    // it was undone. No QEMU, sink or probe runs that the daemon does not account for.
    std::thread::sleep(Duration::from_secs(2));
    match d.vessel(&["info", "s1", "--format", "json"]) {
        out if out.status.success() => {
            let i: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            if i["status"] == "running" {
                let pid = i["state"]["pid"].as_i64().unwrap() as i32;
                assert_eq!(qemus_of(&d, "s1"), vec![pid]);
            } else {
                assert_eq!(i["status"], "stopped", "{i}");
                assert!(qemus_of(&d, "s1").is_empty());
                assert!(sinks_of(&d, "s1").is_empty());
            }
        }
        _ => {
            assert!(qemus_of(&d, "s1").is_empty(), "a QEMU nobody knows runs");
            assert!(sinks_of(&d, "s1").is_empty());
            assert!(vm_cgroups(&d, "s1").is_empty());
        }
    }
    assert!(
        processes(&d, "earlyprintk").is_empty(),
        "the probe outlived its daemon"
    );
    // The new daemon works.
    d.ok(&["launch", "vm/busybox", "s2", "--vm"]);
    d.ok(&["delete", "--force", "s2"]);
}
