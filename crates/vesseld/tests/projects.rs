//! Projects as tenants: two projects each run an instance called `web` at once; an identity of
//! one reaches nothing of the other (another project's name answers exactly as an unknown
//! one, over the CLI and over HTTPS with curl); quotas hold under 20 concurrent creates; bad
//! input changes nothing; what existed before projects is `default`'s.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Daemon, Sandbox};

/// `curl` over the daemon's socket: status and body.
fn local(d: &Daemon, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let mut c = Command::new("curl");
    c.args(["-sS", "--max-time", "60", "-o", "-", "-w", "\n%{http_code}"])
        .arg("--unix-socket")
        .arg(&d.socket)
        .args(["-X", method]);
    if let Some(b) = body {
        c.args(["-H", "Content-Type: application/json", "--data-binary", b]);
    }
    split(c.arg(format!("http://vessel{path}")))
}

/// `curl` over HTTPS with a bearer token.
fn remote(d: &Daemon, port: u16, token: &str, path: &str) -> (u16, String) {
    let mut c = Command::new("curl");
    c.args(["-sS", "--max-time", "20", "-o", "-", "-w", "\n%{http_code}"])
        .arg("--cacert")
        .arg(d.root().join("server.crt"))
        .arg("-H")
        .arg(format!("Authorization: Bearer {token}"));
    split(c.arg(format!("https://127.0.0.1:{port}{path}")))
}

fn split(c: &mut Command) -> (u16, String) {
    let out = c.stdin(Stdio::null()).output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn token(d: &Daemon, name: &str, project: &str, role: &str) -> String {
    let out = d.ok(&[
        "auth",
        "token",
        "create",
        name,
        "--project",
        project,
        "--role",
        role,
        "--format",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["token"].as_str().unwrap().to_string()
}

fn names(json: &str) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"));
    v.as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn two_projects_each_run_web_and_see_nothing_of_each_other() {
    let (d, port) = Daemon::start_https();
    d.busybox();
    // What exists before projects are made is default's.
    d.ok(&[
        "launch",
        "busybox",
        "web",
        "--no-network",
        "--",
        "sleep",
        "3600",
    ]);
    d.ok(&["project", "create", "alpha"]);
    d.ok(&[
        "project",
        "create",
        "beta",
        "--description",
        "the other tenant",
    ]);
    for p in ["alpha", "beta"] {
        d.ok(&[
            "launch",
            "busybox",
            "web",
            "--project",
            p,
            "--",
            "sh",
            "-c",
            "sleep 3600",
        ]);
    }
    let mut pids = Vec::new();
    for p in ["default", "alpha", "beta"] {
        let list = d.ok(&["list", "--project", p, "--format", "json"]);
        assert_eq!(names(&list), ["web"], "{p}: {list}");
        let v: serde_json::Value = serde_json::from_str(&list).unwrap();
        assert_eq!(v[0]["status"], "running", "{p}: {list}");
        pids.push(v[0]["state"]["pid"].as_i64().unwrap_or(-1));
        // The instance knows itself by its name in its project.
        assert_eq!(
            d.ok(&["exec", "web", "--project", p, "--", "hostname"])
                .trim(),
            "web"
        );
    }
    // Three instances, three inits: nothing shared.
    assert!(pids[0] > 0 && pids[1] > 0 && pids[2] > 0, "{pids:?}");
    assert!(
        pids[0] != pids[1] && pids[1] != pids[2] && pids[0] != pids[2],
        "{pids:?}"
    );

    // An admin lists every project's, each with its project.
    let all: serde_json::Value =
        serde_json::from_str(&d.ok(&["list", "--all-projects", "--format", "json"])).unwrap();
    let mut seen: Vec<(String, String)> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["project"].as_str().unwrap().to_string(),
                i["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    seen.sort();
    let want: Vec<(String, String)> = ["alpha", "beta", "default"]
        .iter()
        .map(|p| (p.to_string(), "web".to_string()))
        .collect();
    assert_eq!(seen, want);

    // An operator of alpha, over HTTPS.
    let a = token(&d, "alpha-ops", "alpha", "operator");
    let (s, _) = remote(&d, port, &a, "/1.0/instances?all-projects=1");
    assert_eq!(s, 403, "an operator listed every project");
    let (s, body) = remote(&d, port, &a, "/1.0/instances");
    assert_eq!(s, 200);
    assert_eq!(names(&body), ["web"]);
    // The name of an instance only beta has answers as a name nobody has, before and after.
    let (s1, unknown) = remote(&d, port, &a, "/1.0/instances/db");
    d.ok(&["create", "busybox", "db", "--project", "beta"]);
    let (s2, theirs) = remote(&d, port, &a, "/1.0/instances/db");
    assert_eq!((s1, s2), (404, 404));
    assert_eq!(unknown, theirs);
    assert!(!theirs.contains("beta"), "{theirs}");
    // Another project by name answers as a project that does not exist.
    let (s1, other) = remote(&d, port, &a, "/1.0/instances?project=beta");
    let (s2, none) = remote(&d, port, &a, "/1.0/instances?project=nope");
    assert_eq!((s1, s2), (404, 404));
    assert_eq!(other.replace("beta", "X"), none.replace("nope", "X"));
    let (s, _) = remote(&d, port, &a, "/1.0/projects/beta");
    assert_eq!(s, 404);
    let (_, projects) = remote(&d, port, &a, "/1.0/projects");
    assert_eq!(names(&projects), ["alpha"]);
    // beta's operations and events are not alpha's.
    let (_, ops) = remote(&d, port, &a, "/1.0/operations");
    assert!(!ops.contains("instances/db"), "{ops}");
    let beta_ops = local(&d, "GET", "/1.0/operations?project=beta", None).1;
    let id = serde_json::from_str::<serde_json::Value>(&beta_ops).unwrap()[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (s1, theirs) = remote(&d, port, &a, &format!("/1.0/operations/{id}"));
    let (s2, unknown) = remote(
        &d,
        port,
        &a,
        "/1.0/operations/00000000-0000-0000-0000-000000000000",
    );
    assert_eq!((s1, s2), (404, 404));
    assert_eq!(
        theirs.replace(&id, "X"),
        unknown.replace("00000000-0000-0000-0000-000000000000", "X")
    );
    let mut events = Command::new("curl")
        .args(["-sS", "-N", "--max-time", "4"])
        .arg("--cacert")
        .arg(d.root().join("server.crt"))
        .arg("-H")
        .arg(format!("Authorization: Bearer {a}"))
        .arg(format!("https://127.0.0.1:{port}/1.0/events"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    d.ok(&["start", "db", "--project", "beta"]);
    d.ok(&["stop", "-f", "web", "--project", "alpha"]);
    let seen = String::from_utf8_lossy(&events.wait_with_output_ref()).into_owned();
    assert!(
        seen.contains("/1.0/instances/web"),
        "alpha's own event is missing: {seen}"
    );
    assert!(
        !seen.contains("instances/db") && !seen.contains("beta."),
        "{seen}"
    );
    // A console of beta's instance from alpha: there is none to reach.
    let console = |name: &str| {
        let mut c = Command::new("curl");
        c.args(["-sS", "--max-time", "10", "-o", "-", "-w", "\n%{http_code}"])
            .arg("--cacert")
            .arg(d.root().join("server.crt"))
            .args([
                "-H",
                "Connection: Upgrade",
                "-H",
                "Upgrade: vessel-stream/1",
            ])
            .arg("-H")
            .arg(format!("Authorization: Bearer {a}"))
            .arg(format!(
                "https://127.0.0.1:{port}/1.0/instances/{name}/console"
            ));
        split(&mut c)
    };
    let (s1, theirs) = console("db");
    let (s2, unknown) = console("zz");
    assert_eq!((s1, s2), (404, 404));
    assert_eq!(theirs.replace("db", "X"), unknown.replace("zz", "X"));

    // Deleting a project that holds things is refused and changes nothing.
    let err = d.fails(&["project", "delete", "beta"]);
    assert!(
        err.contains("instance web") && err.contains("instance db"),
        "{err}"
    );
    let err = d.fails(&["project", "delete", "alpha"]);
    assert!(err.contains("identity alpha-ops"), "{err}");
    assert_eq!(
        names(&d.ok(&["list", "--project", "beta", "--format", "json"])).len(),
        2
    );
    for p in ["default", "alpha", "beta"] {
        d.ok(&["delete", "-f", "web", "--project", p]);
    }
    d.ok(&["delete", "-f", "db", "--project", "beta"]);
    d.ok(&["project", "delete", "beta"]);
    assert!(d
        .fails(&["list", "--project", "beta"])
        .contains("not found"));
}

#[test]
fn quotas_hold_under_concurrent_creates() {
    let d = Daemon::start();
    d.busybox();
    d.ok(&[
        "project",
        "create",
        "q",
        "-c",
        "limits.instances=5",
        "-c",
        "limits.memory=1GiB",
    ]);
    // Each instance must say what it adds to a limited sum.
    let err = d.fails(&["create", "busybox", "m", "--project", "q"]);
    assert!(err.contains("-l memory"), "{err}");
    let body = r#"{"name":"NAME","image":"busybox","start":false,"limits":{"memory":67108864}}"#;
    let threads: Vec<_> = (0..20)
        .map(|i| {
            let socket = d.socket.clone();
            let body = body.replace("NAME", &format!("c{i}"));
            std::thread::spawn(move || {
                let out = Command::new("curl")
                    .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}"])
                    .arg("--unix-socket")
                    .arg(&socket)
                    .args([
                        "-H",
                        "Content-Type: application/json",
                        "--data-binary",
                        &body,
                    ])
                    .arg("http://vessel/1.0/instances?project=q")
                    .output()
                    .unwrap();
                String::from_utf8_lossy(&out.stdout).trim().to_string()
            })
        })
        .collect();
    let codes: Vec<String> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(codes.iter().filter(|c| *c == "202").count(), 5, "{codes:?}");
    assert_eq!(
        codes.iter().filter(|c| *c == "409").count(),
        15,
        "{codes:?}"
    );
    // The creations finish; five exist.
    d.wait_for("five instances in q", Duration::from_secs(60), || {
        let list = d.ok(&["list", "--project", "q", "--format", "json"]);
        let v: serde_json::Value = serde_json::from_str(&list).unwrap();
        v.as_array().unwrap().len() == 5
            && v.as_array()
                .unwrap()
                .iter()
                .all(|i| i["status"] == "stopped")
    });
    let info: serde_json::Value =
        serde_json::from_str(&d.ok(&["project", "info", "q", "--format", "json"])).unwrap();
    assert_eq!(info["usage"]["instances"], 5);
    assert_eq!(info["usage"]["memory"], 5 * 67108864u64);
    let made = names(&d.ok(&["list", "--project", "q", "--format", "json"]));
    // Lowering a limit below use blocks growth and stops nothing.
    let first = made[0].as_str();
    d.ok(&["start", first, "--project", "q"]);
    d.ok(&["project", "set", "q", "limits.instances=2"]);
    let v: serde_json::Value =
        serde_json::from_str(&d.ok(&["info", first, "--project", "q", "--format", "json"]))
            .unwrap();
    assert_eq!(v["status"], "running");
    let err = d.fails(&[
        "create",
        "busybox",
        "c99",
        "--project",
        "q",
        "-l",
        "memory=1MiB",
    ]);
    assert!(err.contains("limits.instances"), "{err}");
    // Bad input changes nothing.
    let err = d.fails(&["project", "set", "q", "limits.memory=lots"]);
    assert!(err.contains("limits.memory"), "{err}");
    let err = d.fails(&["project", "set", "q", "limits.gpus=1"]);
    assert!(err.contains("no project setting"), "{err}");
    let err = d.fails(&["project", "create", "bad", "-c", "limits.cpu=fast"]);
    assert!(err.contains("limits.cpu"), "{err}");
    assert!(d.fails(&["project", "info", "bad"]).contains("not found"));
    assert!(d
        .fails(&["list", "--project", "nope"])
        .contains("not found"));
    let err = d.fails(&[
        "auth",
        "token",
        "create",
        "t",
        "--project",
        "nope",
        "--role",
        "user",
    ]);
    assert!(err.contains("not found"), "{err}");
    let info: serde_json::Value =
        serde_json::from_str(&d.ok(&["project", "info", "q", "--format", "json"])).unwrap();
    assert_eq!(info["config"]["limits.memory"], "1GiB");
    assert_eq!(info["config"]["limits.instances"], "2");
    // The default network is default's: another project does not reach it by name.
    d.ok(&["project", "set", "q", "limits.instances=10"]);
    let err = d.fails(&[
        "create",
        "busybox",
        "n1",
        "--project",
        "q",
        "--network",
        "default",
        "-l",
        "memory=4MiB",
    ]);
    assert!(err.contains("not found") && !err.contains("q."), "{err}");
    let (s, body) = local(&d, "GET", "/1.0/networks?project=q", None);
    assert_eq!((s, body.as_str()), (200, "[]"));
    // Exports serve default only for now: an empty list, and a refusal that says so.
    let (s, body) = local(&d, "GET", "/1.0/storage/exports?project=q", None);
    assert_eq!((s, body.as_str()), (200, "[]"));
    let (s, body) = local(&d, "POST", "/1.0/storage/exports?project=q", Some("{}"));
    assert_eq!(s, 400, "{body}");
    assert!(body.contains("serves only the project default"), "{body}");
    for name in &made {
        d.ok(&["delete", "-f", name, "--project", "q"]);
    }
}

/// A shell command in an instance of a project: exit status and output.
fn sh(d: &Daemon, project: &str, name: &str, cmd: &str) -> (i32, String) {
    let out = d.vessel(&["exec", name, "--project", project, "--", "sh", "-c", cmd]);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn projects_have_networks_of_their_own_apart_from_each_other() {
    let sb = Sandbox::new(1);
    let d = Daemon::start_in_netns(&sb.hosts[0]);
    d.busybox();
    d.ok(&["project", "create", "alpha"]);
    d.ok(&["project", "create", "beta", "-c", "limits.networks=1"]);
    for (p, subnet) in [("alpha", "10.61.0.0/24"), ("beta", "10.62.0.0/24")] {
        d.ok(&[
            "network",
            "create",
            "lan",
            "--subnet",
            subnet,
            "--project",
            p,
        ]);
    }
    let err = d.fails(&[
        "network",
        "create",
        "lan2",
        "--subnet",
        "10.63.0.0/24",
        "--project",
        "beta",
    ]);
    assert!(err.contains("limits.networks"), "{err}");
    // A subnet another project uses is refused without naming that project's network.
    let err = d.fails(&[
        "network",
        "create",
        "lan3",
        "--subnet",
        "10.62.0.0/24",
        "--project",
        "alpha",
    ]);
    assert!(
        err.contains("another project") && !err.contains("beta"),
        "{err}"
    );
    for p in ["alpha", "beta"] {
        d.ok(&[
            "launch",
            "busybox",
            "web",
            "--project",
            p,
            "--network",
            "lan",
            "--",
            "sleep",
            "3600",
        ]);
    }
    let info = |p: &str| -> serde_json::Value {
        serde_json::from_str(&d.ok(&["network", "info", "lan", "--project", p, "--format", "json"]))
            .unwrap()
    };
    let (a, b) = (info("alpha"), info("beta"));
    assert_eq!(a["name"], "lan");
    assert_eq!(a["leases"][0]["instance"], "web");
    assert_eq!(b["leases"][0]["instance"], "web");
    let (ba, bb) = (a["bridge"].as_str().unwrap(), b["bridge"].as_str().unwrap());
    assert!(
        ba != bb && ba.starts_with("vbr-p") && ba.len() <= 15,
        "{ba} {bb}"
    );
    let ip = |v: &serde_json::Value| v["leases"][0]["ip"].as_str().unwrap().to_string();
    let (ipa, ipb) = (ip(&a), ip(&b));
    assert!(
        ipa.starts_with("10.61.0.") && ipb.starts_with("10.62.0."),
        "{ipa} {ipb}"
    );
    // Within a project its names resolve; across projects nothing reaches.
    let (code, out) = sh(&d, "alpha", "web", "nslookup web 10.61.0.1");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&ipa), "{out}");
    let (code, _) = sh(&d, "alpha", "web", &format!("ping -c 1 -W 2 {ipb}"));
    assert_ne!(code, 0, "alpha's web reaches beta's");
    let (code, _) = sh(&d, "beta", "web", &format!("ping -c 1 -W 2 {ipa}"));
    assert_ne!(code, 0, "beta's web reaches alpha's");
    let (code, out) = sh(&d, "beta", "web", "ping -c 1 -W 2 10.62.0.1");
    assert_eq!(code, 0, "beta's web does not reach its gateway: {out}");
    // Each project lists its own network only.
    let lans = d.ok(&["network", "list", "--project", "alpha", "--format", "json"]);
    assert_eq!(names(&lans), ["lan"]);
    assert!(!lans.contains("10.62."), "{lans}");
    for p in ["alpha", "beta"] {
        d.ok(&["delete", "-f", "web", "--project", p]);
        d.ok(&["network", "delete", "lan", "--project", p]);
        d.ok(&["project", "delete", p]);
    }
}

#[test]
fn projects_have_volumes_of_their_own() {
    let d = Daemon::start();
    d.busybox();
    d.ok(&["storage", "pool", "create", "local", "dir"]);
    for p in ["alpha", "beta"] {
        d.ok(&["project", "create", p]);
        d.ok(&[
            "storage",
            "volume",
            "create",
            "local",
            "data",
            "--project",
            p,
        ]);
        d.ok(&[
            "create",
            "busybox",
            "web",
            "--project",
            p,
            "--",
            "sleep",
            "3600",
        ]);
        d.ok(&[
            "storage",
            "volume",
            "attach",
            "local",
            "data",
            "web",
            "/srv/data",
            "--project",
            p,
        ]);
        d.ok(&["start", "web", "--project", p]);
    }
    let (code, out) = sh(
        &d,
        "alpha",
        "web",
        "echo alpha-only > /srv/data/f && cat /srv/data/f",
    );
    assert_eq!((code, out.trim()), (0, "alpha-only"));
    let (code, out) = sh(&d, "beta", "web", "ls -A /srv/data");
    assert_eq!(code, 0, "{out}");
    assert!(
        out.trim().is_empty(),
        "beta's volume shows alpha's file: {out}"
    );
    let list = d.ok(&[
        "storage",
        "volume",
        "list",
        "local",
        "--project",
        "alpha",
        "--format",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(v[0]["name"], "data");
    assert_eq!(v[0]["attached_to"][0]["instance"], "web");
    // The socket's default project has none of them.
    let list = d.ok(&["storage", "volume", "list", "local", "--format", "json"]);
    assert_eq!(list.trim(), "[]");
    // A root disk in a pool is a volume of the instance's project.
    d.ok(&[
        "launch",
        "busybox",
        "r1",
        "--project",
        "alpha",
        "--storage",
        "local",
        "-l",
        "disk=64MiB",
        "--",
        "sleep",
        "3600",
    ]);
    let list = d.ok(&[
        "storage",
        "volume",
        "list",
        "local",
        "--project",
        "alpha",
        "--format",
        "json",
    ]);
    let names_in = |list: &str| -> Vec<String> {
        let v: serde_json::Value = serde_json::from_str(list).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names_in(&list), ["data", "r1-root"], "{list}");
    let (code, out) = sh(&d, "alpha", "r1", "df -k / | tail -1");
    assert_eq!(code, 0, "{out}");
    d.ok(&["delete", "-f", "r1", "--project", "alpha"]);
    // limits.disk.pool.NAME counts the project's volumes there, root disks included.
    d.ok(&["project", "set", "beta", "limits.disk.pool.local=100MiB"]);
    let err = d.fails(&[
        "storage",
        "volume",
        "create",
        "local",
        "more",
        "--project",
        "beta",
    ]);
    assert!(err.contains("--size"), "{err}");
    d.ok(&[
        "storage",
        "volume",
        "create",
        "local",
        "blk",
        "--type",
        "block",
        "--size",
        "64MiB",
        "--project",
        "beta",
    ]);
    let err = d.fails(&[
        "storage",
        "volume",
        "create",
        "local",
        "blk2",
        "--type",
        "block",
        "--size",
        "64MiB",
        "--project",
        "beta",
    ]);
    assert!(err.contains("limits.disk.pool.local"), "{err}");
    let err = d.fails(&[
        "create",
        "busybox",
        "r2",
        "--project",
        "beta",
        "--storage",
        "local",
        "-l",
        "disk=64MiB",
    ]);
    assert!(err.contains("limits.disk.pool.local"), "{err}");
    d.ok(&["project", "set", "beta", "limits.snapshots=1"]);
    d.ok(&[
        "storage",
        "volume",
        "snapshot",
        "local",
        "blk",
        "s1",
        "--project",
        "beta",
    ]);
    let err = d.fails(&[
        "storage",
        "volume",
        "snapshot",
        "local",
        "blk",
        "s2",
        "--project",
        "beta",
    ]);
    assert!(err.contains("limits.snapshots"), "{err}");
    d.ok(&[
        "storage",
        "volume",
        "delete",
        "local",
        "blk",
        "--project",
        "beta",
    ]);
    // A project holding a volume is not deleted.
    let err = d.fails(&["project", "delete", "beta"]);
    assert!(err.contains("volume local/data"), "{err}");
    for p in ["alpha", "beta"] {
        d.ok(&["delete", "-f", "web", "--project", p]);
        d.ok(&[
            "storage",
            "volume",
            "delete",
            "local",
            "data",
            "--project",
            p,
        ]);
        d.ok(&["project", "delete", p]);
    }
}

/// Reads a child's whole stdout after it ends (curl ends at its own timeout).
trait WaitRef {
    fn wait_with_output_ref(&mut self) -> Vec<u8>;
}

impl WaitRef for std::process::Child {
    fn wait_with_output_ref(&mut self) -> Vec<u8> {
        use std::io::Read;
        let mut out = Vec::new();
        if let Some(mut s) = self.stdout.take() {
            let _ = s.read_to_end(&mut out);
        }
        let _ = self.wait();
        out
    }
}

/// Point 7 of the tenancy work, over the whole endpoint table: for every project-scoped
/// endpoint, an operator of `alpha` asking about names that exist only in `beta` gets exactly
/// the answer it gets for names that exist nowhere, and `beta`'s objects are untouched.
#[test]
fn every_project_endpoint_answers_another_projects_names_as_unknown_ones() {
    use vessel_api::endpoints::{Body, Method, Scope, ENDPOINTS};
    let sb = Sandbox::new(1);
    let ns = sb.hosts[0].clone();
    let d = Daemon::start_in_netns(&ns);
    d.busybox();
    d.ok(&["storage", "pool", "create", "p", "dir"]);
    d.ok(&["project", "create", "alpha"]);
    d.ok(&["project", "create", "beta"]);
    // beta's objects, all called xb.
    let b = |args: &[&str]| {
        let mut a = vec!["--project", "beta"];
        a.extend(args);
        d.ok(&a)
    };
    b(&["network", "create", "xb", "--subnet", "10.64.0.0/24"]);
    b(&[
        "create",
        "busybox",
        "xb",
        "--network",
        "xb",
        "--",
        "sleep",
        "3600",
    ]);
    b(&["storage", "volume", "create", "p", "xb"]);
    b(&["storage", "volume", "snapshot", "p", "xb", "s"]);
    b(&["storage", "volume", "attach", "p", "xb", "xb", "/srv"]);
    let beta_op = serde_json::from_str::<serde_json::Value>(
        &local(&d, "GET", "/1.0/operations?project=beta", None).1,
    )
    .unwrap()[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let before = (
        b(&["info", "xb", "--format", "json"]),
        b(&["network", "info", "xb", "--format", "json"]),
        b(&["storage", "volume", "info", "p", "xb", "--format", "json"]),
    );
    let token = token(&d, "alpha-ops", "alpha", "operator");
    let port = 8443;
    let (s, body) = local(
        &d,
        "PATCH",
        "/1.0/config",
        Some(&format!(r#"{{"core.https_address":"127.0.0.1:{port}"}}"#)),
    );
    assert_eq!(s, 200, "{body}");
    let cert = d.root().join("server.crt");
    let ask = |method: &str, path: &str, body: Option<&str>, upgrade: Option<&str>| {
        let mut c = Command::new("ip");
        c.args([
            "netns",
            "exec",
            &ns,
            "curl",
            "-sS",
            "--max-time",
            "20",
            "-o",
            "-",
        ])
        .args(["-w", "\n%{http_code}", "-X", method])
        .arg("--cacert")
        .arg(&cert)
        .arg("-H")
        .arg(format!("Authorization: Bearer {token}"));
        if let Some(u) = upgrade {
            c.args(["-H", "Connection: Upgrade", "-H", &format!("Upgrade: {u}")]);
        }
        if let Some(b) = body {
            c.args(["-H", "Content-Type: application/json", "--data-binary", b]);
        }
        split(c.arg(format!("https://127.0.0.1:{port}{path}")))
    };
    let mut walked = 0;
    // Images are a catalogue every project shares (by design, for now): not walked here.
    let walk = ENDPOINTS.iter().filter(|e| {
        e.scope == Scope::Project && e.id != "events" && !e.path.starts_with("/1.0/images")
    });
    for e in walk {
        let fill = |name: &str, op: &str| {
            e.path
                .split('/')
                .map(|s| match s {
                    "{name}" | "{instance}" => name.to_string(),
                    "{pool}" => "p".into(),
                    "{snapshot}" => "s".into(),
                    "{protocol}" => "tcp".into(),
                    "{port}" => "8080".into(),
                    "{lb}" => "lb".into(),
                    "{id}" => op.into(),
                    "{image}" | "{alias}" => "busybox".into(),
                    other => other.into(),
                })
                .collect::<Vec<_>>()
                .join("/")
        };
        let body = |name: &str| match e.request {
            Body::Json(_) if e.id.ends_with("attach") || e.id.ends_with("detach") => {
                Some(format!(r#"{{"instance":"{name}","path":"/mnt"}}"#))
            }
            Body::Json(_) | Body::JsonList(_) => Some("{}".to_string()),
            _ if e.method != Method::Get && e.method != Method::Delete => Some(String::new()),
            _ => None,
        };
        let upgrade = match e.id {
            "instance_vnc" => Some(vessel_api::stream::RAW_PROTOCOL),
            "instance_exec" | "instance_console" => Some(vessel_api::stream::PROTOCOL),
            _ => None,
        };
        let query = if e.path.ends_with("/files") {
            "?path=/etc/hostname"
        } else {
            ""
        };
        let unknown_op = "00000000-0000-4000-8000-000000000000";
        let (s1, theirs) = ask(
            e.method.as_str(),
            &(fill("xb", &beta_op) + query),
            body("xb").as_deref(),
            upgrade,
        );
        let (s2, nobodys) = ask(
            e.method.as_str(),
            &(fill("zq", unknown_op) + query),
            body("zq").as_deref(),
            upgrade,
        );
        let norm = |s: &str, name: &str, op: &str| {
            let s = s.replace(name, "N").replace(op, "ID");
            s.chars().take(400).collect::<String>()
        };
        assert_eq!(
            (s1, norm(&theirs, "xb", &beta_op)),
            (s2, norm(&nobodys, "zq", unknown_op)),
            "{} {}: beta's names answer otherwise than unknown ones",
            e.method.as_str(),
            e.path
        );
        assert!(!theirs.contains("beta"), "{}: {theirs}", e.id);
        walked += 1;
    }
    assert!(walked > 40, "only {walked} endpoints walked");
    let after = (
        b(&["info", "xb", "--format", "json"]),
        b(&["network", "info", "xb", "--format", "json"]),
        b(&["storage", "volume", "info", "p", "xb", "--format", "json"]),
    );
    let strip = |s: &str| -> serde_json::Value {
        let mut v: serde_json::Value = serde_json::from_str(s).unwrap();
        // Usage moves by itself; what was made and attached must not.
        if let Some(o) = v.as_object_mut() {
            o.remove("state");
            o.remove("used_bytes");
            o.remove("status");
        }
        v
    };
    assert_eq!(strip(&before.0), strip(&after.0));
    assert_eq!(strip(&before.1), strip(&after.1));
    assert_eq!(strip(&before.2), strip(&after.2));
    b(&["storage", "volume", "detach", "p", "xb", "xb"]);
    b(&["delete", "-f", "xb"]);
    b(&["storage", "volume", "delete", "p", "xb"]);
    b(&["network", "delete", "xb"]);
}
