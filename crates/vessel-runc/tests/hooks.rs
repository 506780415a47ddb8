//! OCI hooks: every kind runs at its point of the lifecycle, in its namespace, with the state
//! on stdin; failing and timed-out hooks fail create (leaving nothing behind) or start, and
//! only warn at poststart and poststop.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{cgroup_dirs, processes_mentioning, Bundle};
use serde_json::{json, Value};

/// The hook every test uses: saves its stdin to $1, appends "KIND env=… mnt=…" to $2, and for
/// a pid in the state that it can see, saves that process's command line to $1.cmdline.
const HOOK: &str = r#"#!/bin/sh
cat > "$1"
echo "$3 env=$HOOK_ENV mnt=$(readlink /proc/self/ns/mnt)" >> "$2"
pid=$(sed -n 's/.*"pid":\([0-9]*\).*/\1/p' "$1")
[ -n "$pid" ] && tr '\0' ' ' < /proc/$pid/cmdline > "$1.cmdline" 2>/dev/null
exit 0
"#;

fn args(cfg: &mut Value, script: &str) {
    cfg["process"]["args"] = json!(["sh", "-c", script]);
}

fn write_script(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A hook entry running `script` that records into `data` (a path as the hook sees it).
fn recording_hook(kind: &str, script: &Path, data: &Path) -> Value {
    json!({
        "path": script,
        "args": ["hook", data.join(format!("{kind}.json")), data.join("order.log"), kind],
        "env": ["PATH=/usr/bin:/bin", format!("HOOK_ENV=env-{kind}")],
    })
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{} was not written: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}: {text}", path.display()))
}

fn own_mount_namespace() -> PathBuf {
    std::fs::read_link("/proc/self/ns/mnt").unwrap()
}

#[test]
fn every_hook_kind_runs_in_order_with_the_state_on_stdin() {
    let b = Bundle::new("hooks", &[], |cfg| {
        args(cfg, "exec sleep 1000");
        cfg["annotations"] = json!({"org.example.test": "hooks"});
    });
    let host_script = b.path().join("hook.sh");
    write_script(&host_script, HOOK);
    write_script(&b.path().join("rootfs/hook.sh"), HOOK);
    let data = b.path().join("rootfs/data");
    b.edit(|cfg| {
        let host = |kind| recording_hook(kind, &host_script, &data);
        cfg["hooks"] = json!({
            "prestart": [host("prestart")],
            "createRuntime": [host("createRuntime")],
            "createContainer": [host("createContainer")],
            // Resolved and run in the container, after pivot_root.
            "startContainer": [recording_hook("startContainer", Path::new("/hook.sh"), Path::new("/data"))],
            "poststart": [host("poststart")],
            "poststop": [host("poststop")],
        });
    });
    let bundle = std::fs::canonicalize(b.path()).unwrap();
    let check = |kind: &str, status: &str, pid: Option<i64>| {
        let s = read_json(&data.join(format!("{kind}.json")));
        assert_eq!(s["status"], status, "{kind}: {s}");
        assert_eq!(s["id"], "h1", "{kind}: {s}");
        assert_eq!(s["ociVersion"], "1.0.2", "{kind}: {s}");
        assert_eq!(s["bundle"], bundle.to_str().unwrap(), "{kind}: {s}");
        assert_eq!(s["annotations"]["org.example.test"], "hooks", "{kind}: {s}");
        assert_eq!(s["pid"].as_i64(), pid, "{kind}: {s}");
    };

    b.create("h1");
    let pid = b.state("h1")["pid"].as_i64().unwrap();
    for kind in ["prestart", "createRuntime", "createContainer"] {
        check(kind, "creating", Some(pid));
    }
    assert!(
        !data.join("startContainer.json").exists(),
        "startContainer waits for start"
    );
    let container_mnt = std::fs::read_link(format!("/proc/{pid}/ns/mnt")).unwrap();

    b.ok(&["start", "h1"]);
    check("startContainer", "created", Some(pid));
    check("poststart", "running", Some(pid));
    let cmdline = std::fs::read_to_string(data.join("poststart.json.cmdline")).unwrap();
    assert!(
        cmdline.starts_with("sleep 1000"),
        "poststart runs once the user process is executed: {cmdline:?}"
    );

    b.ok(&["kill", "h1", "KILL"]);
    b.wait_status("h1", "stopped");
    b.ok(&["delete", "h1"]);
    check("poststop", "stopped", None);

    let order = std::fs::read_to_string(data.join("order.log")).unwrap();
    let lines: Vec<&str> = order.lines().collect();
    let kinds: Vec<&str> = lines.iter().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "prestart",
            "createRuntime",
            "createContainer",
            "startContainer",
            "poststart",
            "poststop"
        ],
        "{order}"
    );
    let own = format!("mnt={}", own_mount_namespace().display());
    let inside = format!("mnt={}", container_mnt.display());
    for line in &lines {
        let kind = line.split(' ').next().unwrap();
        assert!(
            line.contains(&format!("env=env-{kind} ")),
            "hook env: {line}"
        );
        let want = if kind.ends_with("Container") {
            &inside
        } else {
            &own
        };
        assert!(
            line.ends_with(want.as_str()),
            "{kind} runs in the wrong mount namespace: {line} (want {want})"
        );
    }
}

/// Asserts that nothing of container `id` is left: no state, no cgroup, no process.
fn nothing_left(b: &Bundle, id: &str) {
    assert!(
        !b.root.join(id).exists(),
        "state directory of {id} left behind"
    );
    let cgroup = format!("vessel/{id}");
    assert!(
        cgroup_dirs(&cgroup).is_empty(),
        "cgroup left behind: {:?}",
        cgroup_dirs(&cgroup)
    );
    assert!(
        processes_mentioning(id).is_empty(),
        "processes of {id} left: {:?}",
        processes_mentioning(id)
    );
}

fn shell_hook(script: &str, timeout: Option<i64>) -> Value {
    let mut h = json!({"path": "/bin/sh", "args": ["sh", "-c", script]});
    if let Some(t) = timeout {
        h["timeout"] = t.into();
    }
    h
}

#[test]
fn a_failing_create_hook_fails_create_and_leaves_nothing_behind() {
    let b = Bundle::new("hookfail", &[], |cfg| args(cfg, "exec sleep 1000"));
    for (kind, id) in [
        ("prestart", "hookfail-prestart"),
        ("createRuntime", "hookfail-runtime"),
        ("createContainer", "hookfail-container"),
    ] {
        b.edit(|cfg| {
            cfg["hooks"] =
                json!({ kind: [shell_hook("echo out-of-hook; echo bad hook >&2; exit 3", None)] });
        });
        let (code, err) = b.try_create(id);
        assert_eq!(code, Some(1), "{kind}: {err}");
        assert!(
            err.contains(&format!("{kind} hook #0 (/bin/sh) failed: exit status 3, stdout: out-of-hook, stderr: bad hook")),
            "{kind}: {err}"
        );
        nothing_left(&b, id);
    }
}

#[test]
fn a_hook_past_its_timeout_is_killed_and_fails_create() {
    let b = Bundle::new("hooktimeout", &[], |cfg| args(cfg, "exec sleep 1000"));
    b.edit(|cfg| cfg["hooks"] = json!({ "createRuntime": [shell_hook("exec sleep 37", Some(1))] }));
    let t = Instant::now();
    let (code, err) = b.try_create("slow");
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("createRuntime hook #0 (/bin/sh) failed: ran past its timeout of 1s"),
        "{err}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t.elapsed()
    );
    assert!(
        processes_mentioning("sleep 37").is_empty(),
        "the hook was killed"
    );
    nothing_left(&b, "slow");
}

#[test]
fn start_container_failure_fails_start_while_poststart_and_poststop_only_warn() {
    let b = Bundle::new("hookstart", &[], |cfg| args(cfg, "exec sleep 1000"));
    // startContainer runs in the container: /bin/sh is busybox there.
    b.edit(|cfg| {
        cfg["hooks"] = json!({ "startContainer": [shell_hook("echo no start >&2; exit 5", None)] })
    });
    b.create("s1");
    let out = b.runc(&["start", "s1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "start must fail");
    assert!(
        err.contains("startContainer hook #0 (/bin/sh) failed: exit status 5"),
        "{err}"
    );
    assert!(err.contains("no start"), "{err}");
    b.wait_status("s1", "stopped");
    b.ok(&["delete", "s1"]);

    let marker = b.path().join("poststop-ran");
    b.edit(|cfg| {
        cfg["hooks"] = json!({
            "poststart": [shell_hook("exit 7", None)],
            "poststop": [
                shell_hook("exec sleep 30", Some(1)),
                shell_hook(&format!("touch {}", marker.display()), None),
            ],
        })
    });
    b.create("s2");
    let out = b.runc(&["start", "s2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("exit status 7"),
        "the failure is a warning"
    );
    b.wait_status("s2", "running");
    let t = Instant::now();
    let out = b.runc(&["delete", "--force", "s2"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("ran past its timeout of 1s"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(10));
    assert!(
        marker.exists(),
        "the poststop hooks after a failed one still run"
    );
    assert!(!b.root.join("s2").exists());
}
