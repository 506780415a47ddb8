//! System containers boot a system: the Debian image's init is systemd, which an unprivileged
//! container boots to `running` (journald, logind, dbus, `systemctl`), with `ps` and `ip`, and
//! which `vessel stop` shuts down cleanly (systemd's own shutdown, not the SIGKILL fallback),
//! leaving no mount, cgroup or process behind. The old shell init is one `--` away.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{tail, Daemon};

/// How long systemd may take to boot (it takes about a second on an idle host).
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
/// The daemon's default graceful stop timeout, after which it kills.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// The host's cgroup layout, for the messages.
fn layout() -> &'static str {
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        "cgroup v2"
    } else if Path::new("/sys/fs/cgroup/unified").is_dir() {
        "cgroup v1 hybrid"
    } else {
        "cgroup v1"
    }
}

/// Runs a command in the instance; returns (exit code, stdout, stderr).
fn run(d: &Daemon, name: &str, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["exec", name, "-T", "--"];
    all.extend_from_slice(args);
    let out = d.vessel(&all);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Waits until systemd reports the system up (`running`, or `degraded` with failed units);
/// returns the state and how long it took. On a timeout, fails with the failed units and the
/// console.
fn wait_booted(d: &Daemon, name: &str) -> (String, Duration) {
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < BOOT_TIMEOUT {
        let (_, out, _) = run(d, name, &["systemctl", "is-system-running"]);
        last = out.trim().to_string();
        if last == "running" || last == "degraded" {
            return (last, start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let failed = run(d, name, &["systemctl", "--failed", "--no-pager"]).1;
    panic!(
        "systemd in {name} did not boot within {BOOT_TIMEOUT:?} on {}: is-system-running says \
         {last:?}\n--- systemctl --failed ---\n{failed}\n--- console ---\n{}\n--- daemon log ---\n{}",
        layout(),
        tail(&d.ok(&["logs", name]), 60),
        tail(&d.log(), 40)
    );
}

#[test]
fn debian_boots_systemd_unprivileged_and_stops_cleanly() {
    let mut d = Daemon::start();
    d.ok(&["image", "build", "debian", "--alias", "debian"]);
    let image = d.info_image("debian");
    assert_eq!(
        image["command"],
        serde_json::json!(["/sbin/init"]),
        "{image}"
    );
    assert_eq!(image["stop_signal"], "SIGRTMIN+3", "{image}");

    let t = Instant::now();
    d.ok(&["launch", "debian", "d1"]);
    let launched = t.elapsed();
    let (state, _) = wait_booted(&d, "d1");
    eprintln!(
        "d1 launched in {launched:?}, booted to {state} {:?} after the launch began, on {}",
        t.elapsed(),
        layout()
    );
    let info = d.info("d1");
    assert_eq!(info["privileged"], false, "{info}");
    if state == "degraded" {
        // Allowed, but say which units failed.
        eprintln!(
            "failed units:\n{}",
            run(&d, "d1", &["systemctl", "--failed", "--no-pager"]).1
        );
    }

    // Unprivileged: root inside is an unprivileged uid outside.
    let map = run(&d, "d1", &["cat", "/proc/self/uid_map"]).1;
    let fields: Vec<&str> = map.split_whitespace().collect();
    assert_eq!(fields.first(), Some(&"0"), "{map}");
    assert_ne!(fields.get(1), Some(&"0"), "{map}");

    // ps (procps) sees systemd as pid 1, and the services it started.
    let (code, ps, err) = run(&d, "d1", &["ps", "-e", "-o", "pid=,comm="]);
    assert_eq!(code, 0, "{err}");
    assert!(ps.lines().any(|l| l.trim() == "1 systemd"), "{ps}");
    for service in ["systemd-journal", "systemd-logind", "dbus-daemon"] {
        assert!(ps.contains(service), "{service} is not running:\n{ps}");
    }
    // ip (iproute2) works.
    let (code, ip, err) = run(&d, "d1", &["ip", "-o", "link", "show", "lo"]);
    assert_eq!(code, 0, "{err}");
    assert!(ip.contains("lo:"), "{ip}");
    // journald has the boot.
    let (code, journal, err) = run(&d, "d1", &["journalctl", "-b", "--no-pager", "-q"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        journal.lines().count() > 5 && journal.contains("Startup finished"),
        "journalctl -b:\n{journal}"
    );
    // systemd manages its own cgroups below the container's (delegated to its root).
    let cgroup = run(&d, "d1", &["cat", "/proc/1/cgroup"]).1;
    assert!(cgroup.contains("/init.scope"), "{cgroup}");
    let status = run(&d, "d1", &["systemctl", "status", "--no-pager"]).1;
    assert!(status.contains("system.slice"), "{status}");
    // Each instance makes its own machine id on its first boot; the image has none.
    let id = run(&d, "d1", &["cat", "/etc/machine-id"]).1;
    assert!(
        id.trim().len() == 32 && id.trim().chars().all(|c| c.is_ascii_hexdigit()),
        "{id:?}"
    );
    // The host name is the instance's name.
    assert_eq!(run(&d, "d1", &["hostname"]).1.trim(), "d1");

    // vessel stop: systemd shuts down on SIGRTMIN+3, well within the stop timeout, and the
    // init exits 0 (the SIGKILL fallback would show as 137 after 30 s).
    let t = Instant::now();
    d.ok(&["stop", "d1"]);
    let stop = t.elapsed();
    eprintln!("d1 stopped in {stop:?}");
    assert!(stop < STOP_TIMEOUT, "stop took {stop:?}");
    let info = d.info("d1");
    assert_eq!(info["status"], "stopped", "{info}");
    assert_eq!(info["last_exit_code"], 0, "{info}");
    let log = d.log();
    assert!(
        !log.contains("graceful stop timed out; killing instance=d1"),
        "{}",
        tail(&log, 40)
    );
    // systemd's shutdown, on the console the monitor keeps.
    let console = d.ok(&["logs", "d1"]);
    assert!(
        console.contains("Reached target") && console.contains("Exiting container"),
        "{}",
        tail(&console, 40)
    );
    // Nothing left: no process, no cgroup (systemd's sub-cgroups included), no mount.
    assert!(d.cgroup_pids().is_empty(), "{:?}", d.cgroup_pids());
    for dir in d.cgroup_dirs() {
        assert!(
            !dir.join("d1").exists(),
            "{} is left",
            dir.join("d1").display()
        );
    }
    let mounts: Vec<String> = d
        .mounts()
        .into_iter()
        .filter(|m| m.contains("/d1/"))
        .collect();
    assert!(mounts.is_empty(), "{mounts:?}");

    // It boots again, with the machine id it made the first time.
    d.ok(&["start", "d1"]);
    wait_booted(&d, "d1");
    assert_eq!(run(&d, "d1", &["cat", "/etc/machine-id"]).1, id);
    d.ok(&["stop", "d1"]);
    assert_eq!(d.info("d1")["last_exit_code"], 0);

    // The old shell init, asked for: bash is pid 1, without systemd's mounts, and it stops at
    // once on SIGHUP.
    d.ok(&["launch", "debian", "d2", "--", "/bin/bash", "-l"]);
    let (code, ps, err) = run(&d, "d2", &["ps", "-p", "1", "-o", "comm="]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(ps.trim(), "bash");
    assert_eq!(run(&d, "d2", &["cat", "/etc/machine-id"]).1, "");
    let t = Instant::now();
    d.ok(&["stop", "d2"]);
    // (Not killed at the stop timeout, 30 s.)
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());

    d.ok(&["delete", "d1"]);
    d.ok(&["delete", "d2"]);

    // The cgroup v2 path: on a hybrid host, the same daemon again with the host's cgroup2
    // hierarchy as its /sys/fs/cgroup (no controller is enabled there: they are all v1's).
    match layout() {
        "cgroup v1 hybrid" => boots_on_a_cgroup2_layout(&mut d),
        "cgroup v2" => eprintln!("cgroup v2 host: the boots above took the v2 path"),
        other => eprintln!("{other} host without cgroup2: the v2 path is only unit-tested here"),
    }
}

/// systemd boots in unified mode in its own delegated cgroup2 subtree and stops cleanly, with
/// the daemon seeing a cgroup v2 host.
fn boots_on_a_cgroup2_layout(d: &mut Daemon) {
    d.restart_on_cgroup2();
    d.ok(&["launch", "debian", "d3"]);
    let (state, _) = wait_booted(d, "d3");
    eprintln!("d3 booted to {state} on a cgroup v2 layout");
    let fs = run(d, "d3", &["stat", "-f", "-c", "%T", "/sys/fs/cgroup"]).1;
    assert_eq!(fs.trim(), "cgroup2fs", "systemd sees cgroup v2");
    // (The v1 hierarchies, which a cgroup v2 host would not have, list pid 1 at their root.)
    let cgroup = run(d, "d3", &["cat", "/proc/1/cgroup"]).1;
    assert!(cgroup.lines().any(|l| l == "0::/init.scope"), "{cgroup}");
    let status = run(d, "d3", &["systemctl", "status", "--no-pager"]).1;
    assert!(status.contains("system.slice"), "{status}");
    // On the host, the instance's cgroup2 directory is its root's, its other files are not.
    let dir = Path::new("/sys/fs/cgroup/unified")
        .join(d.cgroup_parent())
        .join("d3");
    use std::os::unix::fs::MetadataExt;
    let uid = |f: &str| std::fs::metadata(dir.join(f)).unwrap().uid();
    assert_ne!(uid(""), 0, "{} is not delegated", dir.display());
    assert_eq!(uid("cgroup.procs"), uid(""));
    assert_eq!(uid("cgroup.subtree_control"), uid(""));
    assert_eq!(uid("cgroup.freeze"), 0);
    assert!(dir.join("init.scope").is_dir());

    let t = Instant::now();
    d.ok(&["stop", "d3"]);
    eprintln!("d3 stopped in {:?}", t.elapsed());
    assert!(t.elapsed() < STOP_TIMEOUT, "{:?}", t.elapsed());
    assert_eq!(d.info("d3")["last_exit_code"], 0);
    assert!(!dir.exists(), "{} is left", dir.display());
    d.ok(&["delete", "d3"]);
}
