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
