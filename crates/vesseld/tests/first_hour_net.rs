//! Networking in a new user's first hour, through the CLI against real daemons: a live
//! loopback in every container.

mod common;

use std::time::Duration;

use common::Daemon;

fn pings(d: &Daemon, from: &str, to: &str) -> bool {
    d.sh(from, &format!("ping -c 1 -W 2 {to} >/dev/null")).0 == 0
}

/// The loopback is up in a container's own namespace before its first instruction, with or
/// without NICs.
#[test]
fn the_loopback_is_up_from_a_containers_first_instruction() {
    let d = Daemon::start();
    d.busybox();
    d.ok(&[
        "launch",
        "busybox",
        "lo1",
        "--",
        "sh",
        "-c",
        "if ping -c 1 -W 2 127.0.0.1 >/dev/null; then echo LO-UP; else echo LO-DOWN; fi; \
         sleep 3600",
    ]);
    d.wait_for("the init's first line", Duration::from_secs(20), || {
        d.ok(&["logs", "lo1"]).contains("LO-")
    });
    let log = d.ok(&["logs", "lo1"]);
    assert!(
        log.contains("LO-UP"),
        "the init found its loopback down: {log}"
    );
    let (code, out) = d.sh("lo1", "ip -o link show lo");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("UP"), "{out}");
    let (code, out) = d.sh("lo1", "ip -o link");
    assert_eq!(
        (code, out.lines().count()),
        (0, 1),
        "only the loopback: {out}"
    );
    // Restarted, it comes back up.
    d.ok(&["restart", "lo1", "--force"]);
    assert!(pings(&d, "lo1", "127.0.0.1"));
}
