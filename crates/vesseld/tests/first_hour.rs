//! What a new user meets in the first hour, through the CLI against a real daemon: everyday
//! commands behaving as Docker and Incus users expect.

mod common;

use std::io::Read;
use std::time::{Duration, Instant};

use common::Daemon;

/// `logs --tail N` prints the last N lines; `logs -f` keeps printing new output and ends by
/// itself when the instance stops.
#[test]
fn logs_tail_and_follow() {
    let d = Daemon::start();
    d.busybox();
    d.ok(&[
        "launch",
        "busybox",
        "ticker",
        "--",
        "sh",
        "-c",
        "i=0; while :; do echo tick $i; i=$((i+1)); sleep 0.2; done",
    ]);
    d.wait_for("three ticks", Duration::from_secs(30), || {
        d.ok(&["logs", "ticker"]).contains("tick 3")
    });
    let tail = d.ok(&["logs", "ticker", "--tail", "2"]);
    let lines: Vec<&str> = tail.lines().collect();
    assert_eq!(lines.len(), 2, "{tail:?}");
    assert!(lines.iter().all(|l| l.starts_with("tick ")), "{tail:?}");
    assert!(d
        .fails(&["logs", "ticker", "--tail", "x"])
        .contains("invalid value"));

    let mut follow = d.spawn_vessel(&["logs", "-f", "-n", "1", "ticker"]);
    let mut out = follow.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&seen).into_owned()
    });
    // Lines written after the command started arrive while it runs.
    let before = last_tick(&d.ok(&["logs", "ticker", "--tail", "1"]));
    std::thread::sleep(Duration::from_secs(2));
    d.ok(&["stop", "ticker", "--force"]);
    let (status, hung) = {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(st)) = follow.try_wait() {
                break (Some(st), false);
            }
            if Instant::now() > deadline {
                let _ = follow.kill();
                break (None, true);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    assert!(!hung, "logs -f did not end when the instance stopped");
    assert!(status.unwrap().success());
    let followed = reader.join().unwrap();
    let last = last_tick(&followed);
    assert!(
        last >= before + 5,
        "followed output stopped early (before {before}, last {last}): {followed:?}"
    );
}

/// The number of the last "tick N" line in `text`.
fn last_tick(text: &str) -> u64 {
    text.lines()
        .rev()
        .find_map(|l| l.strip_prefix("tick ")?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no tick in {text:?}"))
}
