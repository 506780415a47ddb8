//! End-to-end tests of vessel-runc on busybox containers (run as root).

mod common;

use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use common::{alive, cgroup_dirs, Bundle};
use serde_json::Value;

/// CapEff of the 14 default capabilities.
const DEFAULT_CAP_EFF: &str = "00000000a80425fb";

fn args(cfg: &mut Value, script: &str) {
    cfg["process"]["args"] = serde_json::json!(["sh", "-c", script]);
}

#[test]
fn lifecycle_and_confinement() {
    let b = Bundle::new("life", &[], |cfg| {
        cfg["hostname"] = "box1".into();
        args(
            cfg,
            "echo pid=$$; hostname; grep -E 'CapEff|NoNewPrivs|Seccomp:' /proc/self/status; \
             swapoff /nonexistent; echo swapoff=$?; \
             echo keys=$(wc -c < /proc/keys); \
             [ ! -e /proc/kcore ] || echo kcore=$(wc -c < /proc/kcore); \
             ls /proc/acpi | wc -l | sed 's/^/acpi=/'; \
             (echo x > /proc/sys/kernel/domainname) 2>&1 | grep -q 'Read-only' && echo procsys=ro; \
             echo done; exec sleep 1000",
        );
    });
    b.create("c1");
    let st = b.state("c1");
    assert_eq!(st["status"], "created");
    assert_eq!(st["ociVersion"], "1.0.2");
    let pid = st["pid"].as_i64().unwrap();
    assert!(alive(pid));
    let cgroup = st["cgroup_path"]
        .as_str()
        .expect("cgroup path in state")
        .to_string();
    assert_eq!(cgroup, "vessel/c1");
    assert!(!cgroup_dirs(&cgroup).is_empty(), "cgroup directories exist");
    assert_eq!(b.output("c1"), "", "nothing runs before start");

    b.ok(&["start", "c1"]);
    let out = b.wait_output("c1", "done");
    assert!(out.contains("pid=1\n"), "{out}");
    assert!(out.contains("box1\n"), "{out}");
    assert!(
        out.contains(&format!("CapEff:\t{DEFAULT_CAP_EFF}")),
        "{out}"
    );
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    assert!(out.contains("Seccomp:\t2"), "{out}");
    assert!(
        out.contains("Operation not permitted") && out.contains("swapoff=1"),
        "swapoff denied with EPERM: {out}"
    );
    assert!(out.contains("keys=0\n"), "/proc/keys masked: {out}");
    if std::path::Path::new("/proc/kcore").exists() {
        assert!(out.contains("kcore=0\n"), "/proc/kcore masked: {out}");
    }
    assert!(out.contains("acpi=0\n"), "/proc/acpi masked: {out}");
    assert!(out.contains("procsys=ro"), "/proc/sys read-only: {out}");
    b.wait_status("c1", "running");

    let list = b.ok(&["list", "--format", "json"]);
    let list: Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list[0]["id"], "c1");
    let ps: Vec<i64> = serde_json::from_str(&b.ok(&["ps", "--format", "json", "c1"])).unwrap();
    assert_eq!(ps, vec![pid]);

    let refused = b.runc(&["delete", "c1"]);
    assert!(
        !refused.status.success(),
        "delete of a running container needs --force"
    );
    assert!(String::from_utf8_lossy(&refused.stderr).contains("running"));

    b.ok(&["kill", "c1", "KILL"]);
    b.wait_status("c1", "stopped");
    b.ok(&["delete", "c1"]);
    assert!(!b.root.join("c1").exists(), "state directory removed");
    assert!(
        cgroup_dirs(&cgroup).is_empty(),
        "cgroup removed: {:?}",
        cgroup_dirs(&cgroup)
    );
    let again = b.runc(&["delete", "c1"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("does not exist"));
}

#[test]
fn exec_codes_users_and_errors() {
    let b = Bundle::new("exec", &[], |cfg| args(cfg, "exec sleep 1000"));
    b.create("e1");
    b.ok(&["start", "e1"]);

    let out = b.runc(&["exec", "e1", "sh", "-c", "echo $$ $(hostname); exit 7"]);
    assert_eq!(out.status.code(), Some(7), "exit code passes through");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stdout.starts_with("1 "),
        "exec'd process is not pid 1: {stdout}"
    );

    let out = b.ok(&[
        "exec",
        "--user",
        "1000:1000",
        "--env",
        "FOO=bar",
        "e1",
        "sh",
        "-c",
        "echo $(id -u):$(id -g):$FOO; grep CapEff /proc/self/status",
    ]);
    assert!(out.starts_with("1000:1000:bar\n"), "{out}");
    assert!(
        out.contains("CapEff:\t0000000000000000"),
        "a non-root user has no effective capabilities: {out}"
    );

    let out = b.ok(&[
        "exec",
        "e1",
        "sh",
        "-c",
        "grep -E 'Seccomp:|NoNewPrivs' /proc/self/status; cat /proc/1/cmdline",
    ]);
    assert!(
        out.contains("Seccomp:\t2") && out.contains("NoNewPrivs:\t1"),
        "{out}"
    );
    assert!(out.contains("sleep"), "sees the container's pid 1: {out}");

    let out = b.runc(&["exec", "e1", "no-such-command"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("executable file not found in $PATH"), "{err}");

    let out = b.runc(&["exec", "--process", "/nonexistent.json", "e1"]);
    assert!(!out.status.success());

    // A detached exec keeps running and writes its pid file.
    let pid_file = b.path().join("exec.pid");
    // (Its stdio must not be the test's pipe, which would stay open.)
    let status = std::process::Command::new(common::RUNC)
        .arg("--root")
        .arg(&b.root)
        .args([
            "exec",
            "--detach",
            "--pid-file",
            pid_file.to_str().unwrap(),
            "e1",
            "sleep",
            "1000",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let pid: i64 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(alive(pid));
    let ps: Vec<i64> = serde_json::from_str(&b.ok(&["ps", "--format", "json", "e1"])).unwrap();
    assert!(
        ps.contains(&pid),
        "exec'd process is in the container's cgroup: {ps:?}"
    );
    b.ok(&["delete", "--force", "e1"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!alive(pid), "delete --force killed the exec'd process");
}

#[test]
fn rootless_user_namespace() {
    let b = Bundle::new(
        "userns",
        &[
            "--rootless",
            "--uid-base",
            "200000",
            "--gid-base",
            "200000",
            "--id-count",
            "65536",
        ],
        |cfg| {
            args(cfg, "cat /proc/self/uid_map; id -u; touch /data/made-inside; echo done; exec sleep 1000")
        },
    );
    let rootfs = b.path().join("rootfs");
    let out = std::process::Command::new("chown")
        .args(["-R", "200000:200000"])
        .arg(&rootfs)
        .status()
        .unwrap();
    assert!(out.success());
    b.create("u1");
    b.ok(&["start", "u1"]);
    let out = b.wait_output("u1", "done");
    let map: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(map, ["0", "200000", "65536"], "{out}");
    assert!(out.contains("\n0\n"), "root inside: {out}");
    let md = std::fs::metadata(rootfs.join("data/made-inside")).unwrap();
    assert_eq!(
        (md.uid(), md.gid()),
        (200000, 200000),
        "owned by the mapped ids on the host"
    );
    let exec = b.ok(&["exec", "u1", "sh", "-c", "cat /proc/self/uid_map; id -u"]);
    assert!(exec.contains("200000") && exec.ends_with("0\n"), "{exec}");
    let st = b.state("u1");
    assert!(st["namespace_paths"]["user"].is_string());
    b.ok(&["delete", "--force", "u1"]);
}

#[test]
fn killing_the_init_reaps_the_pid_namespace() {
    let b = Bundle::new("pidns", &[], |cfg| {
        args(cfg, "sleep 1000 & sleep 1000 & echo started; wait")
    });
    b.create("p1");
    b.ok(&["start", "p1"]);
    b.wait_output("p1", "started");
    let deadline = Instant::now() + Duration::from_secs(5);
    let pids = loop {
        let pids: Vec<i64> =
            serde_json::from_str(&b.ok(&["ps", "--format", "json", "p1"])).unwrap();
        if pids.len() >= 3 || Instant::now() > deadline {
            break pids;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(pids.len() >= 3, "init and two sleeps: {pids:?}");
    let init = b.state("p1")["pid"].as_i64().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(init as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while pids.iter().any(|p| alive(*p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        pids.iter().all(|p| !alive(*p)),
        "every process of the pid namespace is gone"
    );
    b.wait_status("p1", "stopped");
    let cgroup = b.state("p1")["cgroup_path"].as_str().unwrap().to_string();
    b.ok(&["delete", "p1"]);
    assert!(cgroup_dirs(&cgroup).is_empty());
}

#[test]
fn kill_all_pause_and_resume() {
    let b = Bundle::new("pause", &[], |cfg| {
        args(cfg, "trap '' TERM; sleep 1000 & echo started; wait")
    });
    b.create("k1");
    b.ok(&["start", "k1"]);
    b.wait_output("k1", "started");
    b.ok(&["pause", "k1"]);
    assert_eq!(b.state("k1")["status"], "paused");
    let refused = b.runc(&["pause", "k1"]);
    assert!(!refused.status.success());
    b.ok(&["resume", "k1"]);
    assert_eq!(b.state("k1")["status"], "running");
    b.ok(&["kill", "--all", "k1", "9"]);
    b.wait_status("k1", "stopped");
    let refused = b.runc(&["kill", "k1", "TERM"]);
    assert!(
        !refused.status.success(),
        "nothing to signal in a stopped container"
    );
    b.ok(&["delete", "k1"]);
}

#[test]
fn run_waits_and_returns_the_exit_code() {
    let b = Bundle::new("run", &[], |cfg| args(cfg, "echo hello from run; exit 5"));
    let out = b.runc(&["run", "--bundle", b.path().to_str().unwrap(), "r1"]);
    assert_eq!(
        out.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("hello from run"));
    assert!(
        !b.root.join("r1").exists(),
        "run deletes the container after it exits"
    );
}

#[test]
fn errors_are_logged_as_json_for_podman() {
    let b = Bundle::new("logjson", &[], |cfg| {
        cfg["process"]["args"] = serde_json::json!(["no-such-binary"])
    });
    let log = b.path().join("runtime.log");
    let out = std::process::Command::new(common::RUNC)
        .arg("--root")
        .arg(&b.root)
        .args(["--log-format", "json", "--log"])
        .arg(&log)
        .args(["create", "--bundle"])
        .arg(b.path())
        .arg("bad")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("executable file not found"));
    let text = std::fs::read_to_string(&log).unwrap();
    let last: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(last["level"], "error");
    assert!(
        last["msg"]
            .as_str()
            .unwrap()
            .contains("executable file not found in $PATH"),
        "{last}"
    );
    assert!(last["time"].as_str().unwrap().contains('T'));
    assert!(
        !b.root.join("bad").exists(),
        "a failed create leaves no state"
    );
    assert!(
        cgroup_dirs("vessel/bad").is_empty(),
        "a failed create leaves no cgroup"
    );
}

#[test]
fn features_and_version() {
    let b = Bundle::new("features", &[], |_| {});
    let f: Value = serde_json::from_str(&b.ok(&["features"])).unwrap();
    assert!(f["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n == "user"));
    assert!(f["linux"]["seccomp"]["enabled"].as_bool().unwrap());
    assert!(f["mountOptions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|o| o == "rbind"));
    assert!(b.ok(&["--version"]).starts_with("vessel-runc version"));
    let again = b.runc(&["spec", "--bundle", b.path().to_str().unwrap()]);
    assert!(
        !again.status.success(),
        "spec refuses to overwrite config.json"
    );
}

#[test]
fn i386_syscalls_pass_the_default_seccomp_profile() {
    let b = Bundle::new("i386", &[], |cfg| {
        cfg["process"]["args"] = serde_json::json!(["/i386"]);
    });
    common::build_i386_program(&b.path().join("rootfs/i386"));
    let out = b.runc(&["run", "--bundle", b.path().to_str().unwrap(), "i386"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "getpid through int $0x80 was refused: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "i386 ok\n");
    // The filter was there.
    let spec: Value =
        serde_json::from_slice(&std::fs::read(b.path().join("config.json")).unwrap()).unwrap();
    assert!(spec["linux"]["seccomp"]["architectures"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a == "SCMP_ARCH_X86"));
}

#[test]
fn real_time_signals_reach_the_init() {
    // SIGRTMIN+3 is 37 with glibc; podman stops a systemd container with `kill ID 37`.
    let b = Bundle::new("rtsig", &[], |cfg| {
        args(
            cfg,
            "trap 'echo got 37; exit 3' 37; echo ready; while :; do sleep 0.1; done",
        )
    });
    for (id, signal) in [("s1", "SIGRTMIN+3"), ("s2", "37")] {
        b.create(id);
        b.ok(&["start", id]);
        b.wait_output(id, "ready");
        b.ok(&["kill", id, signal]);
        b.wait_output(id, "got 37");
        b.wait_status(id, "stopped");
        b.ok(&["delete", id]);
    }
    let refused = b.runc(&["kill", "s1", "RTMIN+99"]);
    assert!(!refused.status.success());
}

/// A rootless bundle (ids from 300000) whose /sys/fs/cgroup mount has `options`.
fn userns_bundle(tag: &str, cgroup_options: &[&str], script: &str) -> Bundle {
    let b = Bundle::new(
        tag,
        &[
            "--rootless",
            "--uid-base",
            "300000",
            "--gid-base",
            "300000",
            "--id-count",
            "65536",
        ],
        |cfg| {
            args(cfg, script);
            for m in cfg["mounts"].as_array_mut().unwrap() {
                if m["destination"] == "/sys/fs/cgroup" {
                    m["options"] = serde_json::json!(cgroup_options);
                }
            }
        },
    );
    let ok = std::process::Command::new("chown")
        .args(["-R", "300000:300000"])
        .arg(b.path().join("rootfs"))
        .status()
        .unwrap();
    assert!(ok.success());
    b
}

/// In the container: make a cgroup in the hierarchy systemd would use (name=systemd on v1,
/// the cgroup2 root on v2), move the shell there, and try to raise its own pids limit.
const DELEGATION_PROBE: &str = "\
    d=/sys/fs/cgroup/systemd; [ -d $d ] || d=/sys/fs/cgroup; \
    if mkdir $d/sub && echo $$ > $d/sub/cgroup.procs; then echo delegated; \
    else echo not-delegated; fi; \
    grep -q sub /proc/self/cgroup && echo moved; \
    p=/sys/fs/cgroup/pids/pids.max; [ -e $p ] || p=/sys/fs/cgroup/pids.max; \
    if echo 7 > $p; then echo limit-changed; else echo limit-kept; fi; \
    echo done; exec sleep 1000";

#[test]
fn a_user_namespace_with_a_writable_cgroupfs_owns_its_cgroup_but_not_its_limits() {
    assert!(
        std::path::Path::new("/sys/fs/cgroup/systemd").is_dir()
            || std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists(),
        "this test needs a name=systemd hierarchy (cgroup v1/hybrid) or cgroup v2"
    );
    let b = userns_bundle(
        "delegate",
        &["nosuid", "noexec", "nodev", "rw"],
        DELEGATION_PROBE,
    );
    b.create("d1");
    let dirs = cgroup_dirs("vessel/d1");
    let owned: Vec<_> = dirs
        .iter()
        .filter(|d| std::fs::metadata(d).unwrap().uid() == 300000)
        .collect();
    assert!(!owned.is_empty(), "no cgroup directory delegated: {dirs:?}");
    // On v1 only name=systemd and the hybrid cgroup2, never a controller's hierarchy.
    if !std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        for d in &owned {
            let name = d.to_string_lossy();
            assert!(
                name.starts_with("/sys/fs/cgroup/systemd/")
                    || name.starts_with("/sys/fs/cgroup/unified/"),
                "{name} delegated"
            );
        }
    }
    for d in &dirs {
        if let Ok(md) = std::fs::metadata(d.join("pids.max")) {
            assert_eq!(md.uid(), 0, "{} stays root's", d.display());
        }
    }
    b.ok(&["start", "d1"]);
    let out = b.wait_output("d1", "done");
    assert!(out.contains("delegated\nmoved\n"), "{out}");
    assert!(out.contains("limit-kept"), "{out}");
    b.ok(&["delete", "--force", "d1"]);
    assert!(
        cgroup_dirs("vessel/d1").is_empty(),
        "the cgroup and the one made inside are removed: {:?}",
        cgroup_dirs("vessel/d1")
    );

    // A read-only cgroup mount (the default) delegates nothing.
    let b = userns_bundle(
        "nodelegate",
        &["nosuid", "noexec", "nodev", "ro"],
        DELEGATION_PROBE,
    );
    b.create("d2");
    for d in cgroup_dirs("vessel/d2") {
        assert_eq!(std::fs::metadata(&d).unwrap().uid(), 0, "{}", d.display());
    }
    b.ok(&["start", "d2"]);
    let out = b.wait_output("d2", "done");
    assert!(out.contains("not-delegated"), "{out}");
    assert!(out.contains("limit-kept"), "{out}");
    b.ok(&["delete", "--force", "d2"]);
}
