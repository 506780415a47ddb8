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

/// `curl` over HTTPS with a bearer token, sending `body` (JSON) with `method`.
fn remote_send(
    d: &Daemon,
    port: u16,
    token: &str,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, String) {
    let mut c = Command::new("curl");
    c.args(["-sS", "--max-time", "20", "-o", "-", "-w", "\n%{http_code}"])
        .arg("--cacert")
        .arg(d.root().join("server.crt"))
        .arg("-H")
        .arg(format!("Authorization: Bearer {token}"))
        .args(["-X", method, "-H", "Content-Type: application/json"])
        .args(["--data-binary", body]);
    split(c.arg(format!("https://127.0.0.1:{port}{path}")))
}

fn split(c: &mut Command) -> (u16, String) {
    let out = c.stdin(Stdio::null()).output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
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
    // alpha uses default's images; beta has its own (new projects' default).
    d.ok(&["project", "create", "alpha", "-c", "features.images=false"]);
    d.ok(&[
        "project",
        "create",
        "beta",
        "--description",
        "the other tenant",
    ]);
    d.ok(&["image", "build", "busybox", "--project", "beta"]);
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
    let a = d.token("alpha-ops", "alpha", "operator");
    let (s, _) = remote(&d, port, &a, "/1.0/instances?all-projects=1");
    assert_eq!(s, 403, "an operator listed every project");
    // What reaches into the host is an admin's: a privileged container (its root is the
    // host's), one on the shared id range, an export at a host path or on a port below 1024
    // (where the host's own services listen), an overlay on the shared underlay. Not even
    // default's operator makes them.
    let o = d.token("default-ops", "default", "operator");
    for token in [&a, &o] {
        for (path, body, word) in [
            (
                "/1.0/instances",
                r#"{"name":"root","image":"busybox","privileged":true}"#,
                "privileged",
            ),
            (
                "/1.0/instances",
                r#"{"name":"shared","image":"busybox","idmap_isolated":false}"#,
                "shared id range",
            ),
            (
                "/1.0/storage/exports",
                r#"{"name":"x","pool":"p","volume":"v","protocol":"nbd","listen":"/run/vessel/vessel.sock"}"#,
                "only an admin",
            ),
            (
                "/1.0/storage/exports",
                r#"{"name":"x","pool":"p","volume":"v","protocol":"nfs","listen":"127.0.0.1:111"}"#,
                "below 1024",
            ),
            (
                "/1.0/networks",
                r#"{"name":"ov","subnet":"10.99.0.0/24","vni":4242}"#,
                "only an admin",
            ),
        ] {
            let (s, said) = remote_send(&d, port, token, "POST", path, body);
            assert_eq!(s, 403, "{said}");
            assert!(said.contains(word), "{said}");
        }
    }
    assert!(d.socket.exists(), "the daemon's socket is there still");
    assert!(!d.ok(&["list", "--all-projects"]).contains("root"));
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
    // The daemon subscribes the caller before it answers: once the answer's status line is
    // in (curl -v tells it on stderr, unbuffered), every event that follows is streamed.
    let mut events = Command::new("curl")
        .args(["-sS", "-N", "-v", "--max-time", "120"])
        .arg("--cacert")
        .arg(d.root().join("server.crt"))
        .arg("-H")
        .arg(format!("Authorization: Bearer {a}"))
        .arg(format!("https://127.0.0.1:{port}/1.0/events"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let told = lines_of(events.stderr.take().unwrap());
    let lines = lines_of(events.stdout.take().unwrap());
    let mut said = String::new();
    while !said.contains("< HTTP/1.1 200") {
        let line = told
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("no answer within 30 s: {said}"));
        said.push_str(&line);
    }
    let mut seen = String::new();
    let next_line = |what: &str, seen: &mut String| {
        let line = lines
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("no {what} within 30 s; the stream so far: {seen}"));
        seen.push_str(&line);
        line
    };
    d.ok(&["start", "db", "--project", "beta"]);
    d.ok(&["stop", "-f", "web", "--project", "alpha"]);
    // Events come in order: beta's (if it leaked) before alpha's.
    while !next_line("event of web (alpha's own)", &mut seen).contains("/1.0/instances/web") {}
    let _ = events.kill();
    let _ = events.wait();
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
        err.contains("instance web") && err.contains("instance db") && err.contains("image "),
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
    d.ok(&["image", "delete", "busybox", "--project", "beta"]);
    d.ok(&["project", "delete", "beta"]);
    // default's image is default's still.
    d.ok(&["create", "busybox", "after", "--no-network"]);
    d.ok(&["delete", "-f", "after"]);
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
        "features.images=false",
        "-c",
        "limits.instances=5",
        "-c",
        "limits.memory=1GiB",
    ]);
    // Each instance must say what it adds to a limited sum.
    let err = d.fails(&["create", "busybox", "m", "--project", "q"]);
    assert!(err.contains("-l memory"), "{err}");
    let body = r#"{"name":"NAME","image":"busybox","start":false,"limits":{"memory":67108864}}"#;
    let codes = post_at_once(&d, "/1.0/instances?project=q", body, "c", 20);
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
    // Copies at once for the one place left: one is made, the others are refused (each
    // waits for the quota lock until the one before has its row).
    d.ok(&["project", "set", "q", "limits.instances=6"]);
    let codes = post_at_once(
        &d,
        &format!("/1.0/instances/{}/copy?project=q", made[1]),
        r#"{"name":"NAME"}"#,
        "k",
        4,
    );
    assert_eq!(codes.iter().filter(|c| *c == "202").count(), 1, "{codes:?}");
    assert_eq!(codes.iter().filter(|c| *c == "409").count(), 3, "{codes:?}");
    d.wait_for("the copy in q", Duration::from_secs(60), || {
        names(&d.ok(&["list", "--project", "q", "--format", "json"])).len() == 6
    });
    let copy = names(&d.ok(&["list", "--project", "q", "--format", "json"]))
        .into_iter()
        .find(|n| n.starts_with('k'))
        .expect("the copy");
    d.ok(&["delete", "-f", &copy, "--project", "q"]);
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
        "memory=8MiB",
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
    for name in &made {
        d.ok(&["delete", "-f", name, "--project", "q"]);
    }
}

/// `n` creates at once over the socket, `body` with NAME replaced by `prefix` and a number:
/// their status codes.
fn post_at_once(d: &Daemon, path: &str, body: &str, prefix: &str, n: usize) -> Vec<String> {
    send_at_once(d, "POST", path, body, prefix, n)
}

/// `n` requests at once, `NAME` in the path and the body replaced by `PREFIXi`: their
/// status codes.
fn send_at_once(
    d: &Daemon,
    method: &str,
    path: &str,
    body: &str,
    prefix: &str,
    n: usize,
) -> Vec<String> {
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let socket = d.socket.clone();
            let name = format!("{prefix}{i}");
            let body = body.replace("NAME", &name);
            let url = format!("http://vessel{}", path.replace("NAME", &name));
            let method = method.to_string();
            std::thread::spawn(move || {
                let out = Command::new("curl")
                    .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}"])
                    .args(["-X", &method])
                    .arg("--unix-socket")
                    .arg(&socket)
                    .args([
                        "-H",
                        "Content-Type: application/json",
                        "--data-binary",
                        &body,
                    ])
                    .arg(url)
                    .output()
                    .unwrap();
                String::from_utf8_lossy(&out.stdout).trim().to_string()
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
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
    d.ok(&["project", "create", "alpha", "-c", "features.images=false"]);
    d.ok(&[
        "project",
        "create",
        "beta",
        "-c",
        "limits.networks=1",
        "-c",
        "features.images=false",
    ]);
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
    // An archive of beta's web names beta's lan: imported into alpha, the instance is on
    // alpha's lan (its network's name there), never on beta's.
    let file = d.dir.join("web.tar");
    d.ok(&["export", "web", file.to_str().unwrap(), "--project", "beta"]);
    d.ok(&[
        "import",
        file.to_str().unwrap(),
        "moved",
        "--project",
        "alpha",
    ]);
    let leased = |v: &serde_json::Value| -> Vec<String> {
        v["leases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["instance"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(leased(&info("alpha")).contains(&"moved".to_string()));
    assert!(!leased(&info("beta")).contains(&"moved".to_string()));
    d.ok(&["delete", "-f", "moved", "--project", "alpha"]);
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
        d.ok(&["project", "create", p, "-c", "features.images=false"]);
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
    // Growth counts too: a root disk grown by its configuration, a volume resized.
    d.ok(&[
        "create",
        "busybox",
        "r3",
        "--project",
        "beta",
        "--storage",
        "local",
        "-l",
        "disk=32MiB",
    ]);
    // An instance snapshot counts a snapshot of its root volume: 64 + 32 + 32 > 100 MiB.
    let err = d.fails(&["snapshot", "create", "r3", "s0", "--project", "beta"]);
    assert!(err.contains("limits.disk.pool.local"), "{err}");
    let err = d.fails(&[
        "config",
        "set",
        "r3",
        "limits.disk=48MiB",
        "--project",
        "beta",
    ]);
    assert!(err.contains("limits.disk.pool.local"), "{err}");
    let err = d.fails(&[
        "storage",
        "volume",
        "resize",
        "local",
        "blk",
        "70MiB",
        "--project",
        "beta",
    ]);
    assert!(err.contains("limits.disk.pool.local"), "{err}");
    d.ok(&[
        "config",
        "set",
        "r3",
        "limits.disk=36MiB",
        "--project",
        "beta",
    ]);
    // A copy's root volume counts: blk's 64MiB and r3's 36MiB leave no room for another.
    let err = d.fails(&["copy", "r3", "r3c", "--project", "beta"]);
    assert!(err.contains("limits.disk.pool.local"), "{err}");
    d.ok(&["delete", "r3", "--project", "beta"]);
    // A root disk moved into the pool counts too.
    d.ok(&[
        "create",
        "busybox",
        "r4",
        "--project",
        "beta",
        "-l",
        "disk=48MiB",
    ]);
    let err = d.fails(&["move", "r4", "--pool", "local", "--project", "beta"]);
    assert!(err.contains("limits.disk.pool.local"), "{err}");
    d.ok(&["delete", "r4", "--project", "beta"]);
    // A name with a '.' from a client of default is not another project's object.
    let err = d.fails(&["info", "beta.r2"]);
    assert!(err.contains("names have no '.'"), "{err}");
    let err = d.fails(&["storage", "volume", "info", "local", "beta.blk"]);
    assert!(err.contains("names have no '.'"), "{err}");
    // A snapshot counts as its volume's size (what it may pin; in a dir pool a whole
    // copy): blk's 64MiB and one snapshot go over 100MiB.
    let err = d.fails(&[
        "storage",
        "volume",
        "snapshot",
        "local",
        "blk",
        "s0",
        "--project",
        "beta",
    ]);
    assert!(err.contains("limits.disk.pool.local"), "{err}");
    d.ok(&["project", "set", "beta", "limits.disk.pool.local=200MiB"]);
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
    // A snapshot keeps counting the size its volume had when it was taken.
    d.ok(&[
        "storage",
        "volume",
        "resize",
        "local",
        "blk",
        "80MiB",
        "--project",
        "beta",
    ]);
    let blk: serde_json::Value = serde_json::from_str(&d.ok(&[
        "storage",
        "volume",
        "info",
        "local",
        "blk",
        "--project",
        "beta",
        "--format",
        "json",
    ]))
    .unwrap();
    assert_eq!(blk["snapshot_bytes"], 64 << 20, "{blk}");
    d.ok(&[
        "storage",
        "volume",
        "delete",
        "local",
        "blk",
        "--project",
        "beta",
    ]);
    d.ok(&["project", "set", "beta", "limits.disk.pool.local=100MiB"]);
    // Concurrent launches with root disks in the pool: the limit holds although each
    // launch's root volume is made later, by its operation.
    let body = r#"{"name":"NAME","image":"busybox","start":false,"storage":"local","limits":{"disk":31457280}}"#;
    let codes = post_at_once(&d, "/1.0/instances?project=beta", body, "s", 8);
    let admitted = codes.iter().filter(|c| *c == "202").count();
    assert!((1..8).contains(&admitted), "{codes:?}");
    assert_eq!(
        codes.iter().filter(|c| *c == "409").count(),
        8 - admitted,
        "{codes:?}"
    );
    let sizes = || -> Vec<u64> {
        let list: serde_json::Value = serde_json::from_str(&d.ok(&[
            "storage",
            "volume",
            "list",
            "local",
            "--project",
            "beta",
            "--format",
            "json",
        ]))
        .unwrap();
        list.as_array()
            .unwrap()
            .iter()
            .map(|v| v["size_bytes"].as_u64().unwrap())
            .collect()
    };
    d.wait_for(
        "the admitted launches' root volumes",
        Duration::from_secs(60),
        || {
            names(&d.ok(&["list", "--project", "beta", "--format", "json"]))
                .iter()
                .filter(|n| n.starts_with('s'))
                .count()
                == admitted
                && sizes().iter().filter(|s| **s == 31457280).count() == admitted
        },
    );
    let used: u64 = sizes().iter().sum();
    assert!(
        used <= 100 << 20,
        "{used} bytes in pool local over beta's 100MiB"
    );
    for i in 0..8 {
        let _ = d.vessel(&["delete", "-f", &format!("s{i}"), "--project", "beta"]);
    }
    // Moves and root disk resizes at once: each holds the project's quota lock until its
    // size is counted, so the limit holds for them as for launches: 4 instances PREFIX0..3
    // made with `extra`, then 4 requests at once of which 3 fit.
    let three_of_four = |prefix: &str, extra: &[&str], method: &str, path: &str, body: &str| {
        for i in 0..4 {
            let n = format!("{prefix}{i}");
            let mut args = vec!["create", "busybox", &n, "--project", "beta"];
            args.extend(extra);
            d.ok(&args);
        }
        let codes = send_at_once(&d, method, path, body, prefix, 4);
        assert_eq!(codes.iter().filter(|c| *c == "202").count(), 3, "{codes:?}");
        assert!(codes.iter().all(|c| c == "202" || c == "409"), "{codes:?}");
        d.wait_for("their operations", Duration::from_secs(120), || {
            let ops = d.ok(&["operation", "list", "--project", "beta", "--format", "json"]);
            !ops.contains("\"running\"") && !ops.contains("\"pending\"")
        });
        let used: u64 = sizes().iter().sum();
        assert!(
            used <= 100 << 20,
            "{used} bytes in pool local over beta's 100MiB after {method} {path} ({codes:?})"
        );
        for i in 0..4 {
            d.ok(&["delete", "-f", &format!("{prefix}{i}"), "--project", "beta"]);
        }
    };
    // 3 of 30MiB fit in 100MiB (data has no size).
    three_of_four(
        "m",
        &["-l", "disk=30MiB"],
        "POST",
        "/1.0/instances/NAME/move?project=beta",
        r#"{"pool":"local"}"#,
    );
    // 4 of 16MiB, 3 of them grown to 28MiB: 100MiB.
    three_of_four(
        "z",
        &["--storage", "local", "-l", "disk=16MiB"],
        "PUT",
        "/1.0/instances/NAME/root-disk?project=beta",
        r#"{"size":29360128}"#,
    );
    // A project holding a volume is not deleted, nor one with backups in the daemon's
    // store: a new project of its name would see them.
    let err = d.fails(&["project", "delete", "beta"]);
    assert!(err.contains("volume local/data"), "{err}");
    let b: serde_json::Value = serde_json::from_str(&d.ok(&[
        "backup",
        "create",
        "web",
        "--project",
        "beta",
        "--format",
        "json",
    ]))
    .unwrap();
    let id = b["id"].as_str().unwrap().to_string();
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
    }
    d.ok(&["project", "delete", "alpha"]);
    let err = d.fails(&["project", "delete", "beta"]);
    assert!(err.contains("1 backup of web"), "{err}");
    d.ok(&[
        "backup",
        "delete",
        &format!("web/{id}"),
        "--project",
        "beta",
    ]);
    d.ok(&["project", "delete", "beta"]);
}

/// The lines `out` gives, as they come (each with its line end), on a channel.
fn lines_of(out: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut r = std::io::BufReader::new(out);
        loop {
            let mut line = String::new();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) if tx.send(line).is_err() => break,
                Ok(_) => {}
            }
        }
    });
    rx
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
    b(&["image", "build", "busybox", "--alias", "xb"]);
    b(&["profile", "create", "xb", "-c", "user.x=1"]);
    b(&[
        "create",
        "xb",
        "xb",
        "--network",
        "xb",
        "--",
        "sleep",
        "3600",
    ]);
    b(&["storage", "volume", "create", "p", "xb"]);
    b(&["storage", "volume", "snapshot", "p", "xb", "s"]);
    b(&["snapshot", "create", "xb", "s"]);
    b(&["storage", "volume", "attach", "p", "xb", "xb", "/srv"]);
    b(&[
        "storage",
        "export",
        "create",
        "xb",
        "p",
        "xb",
        "--protocol",
        "nfs",
        "--listen",
        "127.0.0.1:2050",
    ]);
    let beta_backup = serde_json::from_str::<serde_json::Value>(&b(&[
        "backup", "create", "xb", "--format", "json",
    ]))
    .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let beta_image =
        serde_json::from_str::<serde_json::Value>(&b(&["image", "info", "xb", "--format", "json"]))
            .unwrap()["fingerprint"]
            .as_str()
            .unwrap()
            .to_string();
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
        b(&["image", "info", "xb", "--format", "json"]),
        b(&["storage", "export", "list", "--format", "json"]),
        b(&["backup", "list", "--format", "json"]),
        b(&["snapshot", "list", "xb", "--format", "json"]),
    );
    let token = d.token("alpha-ops", "alpha", "operator");
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
    let walk = ENDPOINTS
        .iter()
        .filter(|e| e.scope == Scope::Project && e.id != "events");
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
                    "{image}" | "{alias}" => name.to_string(),
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
        // A backup's id is its time: the same id answers for both names.
        let (theirs_id, nobodys_id) = if e.path.starts_with("/1.0/backups/") {
            (beta_backup.as_str(), beta_backup.as_str())
        } else {
            (beta_op.as_str(), unknown_op)
        };
        let (s1, theirs) = ask(
            e.method.as_str(),
            &(fill("xb", theirs_id) + query),
            body("xb").as_deref(),
            upgrade,
        );
        let (s2, nobodys) = ask(
            e.method.as_str(),
            &(fill("zq", nobodys_id) + query),
            body("zq").as_deref(),
            upgrade,
        );
        let norm = |s: &str, name: &str, op: &str| {
            let mut s = s.replace(name, "N").replace(op, "ID");
            // A new operation's id and times differ from call to call.
            for key in ["\"id\":\"", "\"created_at\":\"", "\"updated_at\":\""] {
                let mut from = 0;
                while let Some(i) = s[from..].find(key).map(|i| i + from + key.len()) {
                    let end = s[i..].find('"').map_or(s.len(), |e| i + e);
                    s.replace_range(i..end, "X");
                    from = i + 1;
                }
            }
            s.chars().take(400).collect::<String>()
        };
        assert_eq!(
            (s1, norm(&theirs, "xb", theirs_id)),
            (s2, norm(&nobodys, "zq", nobodys_id)),
            "{} {}: beta's names answer otherwise than unknown ones",
            e.method.as_str(),
            e.path
        );
        assert!(!theirs.contains("beta"), "{}: {theirs}", e.id);
        walked += 1;
    }
    assert!(walked > 50, "only {walked} endpoints walked");
    // beta's image by its fingerprint answers as a fingerprint nobody has.
    let unknown_fp = "0123456789ab".repeat(5) + "0123";
    let (s1, theirs) = ask("GET", &format!("/1.0/images/{beta_image}"), None, None);
    let (s2, nobodys) = ask("GET", &format!("/1.0/images/{unknown_fp}"), None, None);
    assert_eq!(
        (s1, theirs.replace(&beta_image, "F")),
        (s2, nobodys.replace(&unknown_fp, "F"))
    );
    let after = (
        b(&["info", "xb", "--format", "json"]),
        b(&["network", "info", "xb", "--format", "json"]),
        b(&["storage", "volume", "info", "p", "xb", "--format", "json"]),
        b(&["image", "info", "xb", "--format", "json"]),
        b(&["storage", "export", "list", "--format", "json"]),
        b(&["backup", "list", "--format", "json"]),
        b(&["snapshot", "list", "xb", "--format", "json"]),
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
    assert_eq!(before.3, after.3);
    assert_eq!(before.4, after.4);
    assert_eq!(before.5, after.5);
    assert_eq!(before.6, after.6);
    assert!(before.6.contains("\"s\""), "{}", before.6);
    assert!(before.5.contains(&beta_backup), "{}", before.5);
    b(&["storage", "export", "delete", "xb"]);
    b(&["storage", "volume", "detach", "p", "xb", "xb"]);
    b(&["delete", "-f", "xb"]);
    b(&["storage", "volume", "delete", "p", "xb"]);
    b(&["network", "delete", "xb"]);
    b(&["image", "delete", "xb"]);
    b(&["profile", "delete", "xb"]);
}

fn fingerprint(d: &Daemon, project: &str, image: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(&d.ok(&[
        "image",
        "info",
        image,
        "--project",
        project,
        "--format",
        "json",
    ]))
    .unwrap();
    v["fingerprint"].as_str().unwrap().to_string()
}

/// Images and aliases are a project's own (or default's, read-only, with
/// `features.images=false`), stored once whatever the number of holders; exports are a
/// project's own, on listeners no other project shares, served to real NBD clients.
#[test]
fn projects_have_images_and_exports_of_their_own() {
    let d = Daemon::start();
    d.busybox();
    let base = fingerprint(&d, "default", "busybox");
    d.ok(&["project", "create", "alpha"]);
    d.ok(&["project", "create", "beta", "-c", "features.images=false"]);
    let info: serde_json::Value =
        serde_json::from_str(&d.ok(&["project", "info", "alpha", "--format", "json"])).unwrap();
    assert_eq!(info["config"]["features.images"], "true");

    // alpha starts without images: default's are not its.
    let (s, body) = local(&d, "GET", "/1.0/images?project=alpha", None);
    assert_eq!((s, body.as_str()), (200, "[]"));
    let err = d.fails(&["create", "busybox", "x", "--project", "alpha"]);
    assert!(err.contains("not found"), "{err}");
    let err = d.fails(&["image", "info", &base, "--project", "alpha"]);
    assert!(err.contains("not found"), "{err}");
    // Nor does an archive that only names default's image (its index, none of its blobs):
    // knowing a digest is not having the content.
    let full = d.dir.join("busybox-oci.tar");
    d.ok(&["image", "export", "busybox", full.to_str().unwrap()]);
    let names = d.dir.join("names");
    std::fs::create_dir_all(&names).unwrap();
    let tar = |args: &[&str]| {
        let out = Command::new("tar").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    tar(&["-xf", full.to_str().unwrap(), "-C", names.to_str().unwrap()]);
    std::fs::remove_dir_all(names.join("blobs")).unwrap();
    let names_tar = d.dir.join("names.tar");
    tar(&[
        "-cf",
        names_tar.to_str().unwrap(),
        "-C",
        names.to_str().unwrap(),
        ".",
    ]);
    let err = d.fails(&[
        "image",
        "import",
        names_tar.to_str().unwrap(),
        "--project",
        "alpha",
    ]);
    assert!(err.contains("has no blobs/sha256/"), "{err}");
    let (_, body) = local(&d, "GET", "/1.0/images?project=alpha", None);
    assert_eq!(body, "[]");
    d.ok(&[
        "image",
        "build",
        "busybox",
        "--alias",
        "base",
        "--project",
        "alpha",
    ]);
    let alpha_base = fingerprint(&d, "alpha", "base");
    // The alias is alpha's: default has no `base`.
    assert!(d.fails(&["image", "info", "base"]).contains("not found"));
    d.ok(&[
        "create",
        "base",
        "x",
        "--project",
        "alpha",
        "--",
        "sh",
        "-c",
        "echo alpha > /mark; sleep 3600",
    ]);
    // Publishing in alpha makes alpha's image; its alias `busybox` names it in alpha only.
    d.ok(&["publish", "x", "--alias", "busybox", "--project", "alpha"]);
    let published = fingerprint(&d, "alpha", "busybox");
    assert_ne!(published, base);
    assert_eq!(fingerprint(&d, "default", "busybox"), base);
    let default_list = d.ok(&["image", "list", "--format", "json"]);
    assert!(!default_list.contains(&published), "{default_list}");
    let alpha_list = d.ok(&["image", "list", "--project", "alpha", "--format", "json"]);
    assert!(alpha_list.contains(&published) && alpha_list.contains(&alpha_base));
    // An image in use by alpha's instance stays.
    let err = d.fails(&["image", "delete", "base", "--project", "alpha"]);
    assert!(err.contains("used by instance(s) x"), "{err}");

    // beta uses default's images, read-only.
    assert_eq!(
        d.ok(&["image", "list", "--project", "beta", "--format", "json"]),
        default_list
    );
    d.ok(&["create", "busybox", "y", "--project", "beta"]);
    let err = d.fails(&["image", "build", "busybox", "--project", "beta"]);
    assert!(err.contains("uses the images of default"), "{err}");
    let err = d.fails(&["image", "delete", "busybox", "--project", "beta"]);
    assert!(err.contains("uses the images of default"), "{err}");
    let err = d.fails(&["project", "set", "beta", "features.images=true"]);
    assert!(err.contains("1 instance(s)"), "{err}");
    let err = d.fails(&["project", "set", "alpha", "features.images=maybe"]);
    assert!(err.contains("true or false"), "{err}");
    let err = d.fails(&["project", "set", "default", "features.images=false"]);
    assert!(err.contains("always has images"), "{err}");
    // default's image is used by beta's instance: default cannot delete it.
    let err = d.fails(&["image", "delete", "busybox"]);
    assert!(err.contains("used by instance(s) y"), "{err}");

    // Deleting alpha's images leaves default's files: default still launches from its own.
    d.ok(&["delete", "-f", "x", "--project", "alpha"]);
    d.ok(&["image", "delete", "busybox", "--project", "alpha"]);
    d.ok(&["image", "delete", "base", "--project", "alpha"]);
    let (_, body) = local(&d, "GET", "/1.0/images?project=alpha", None);
    assert_eq!(body, "[]");
    d.ok(&["create", "busybox", "z", "--no-network"]);
    d.ok(&["delete", "-f", "z"]);
    d.ok(&["delete", "-f", "y", "--project", "beta"]);

    // Exports: alpha's volume over NBD on a listener of alpha's own.
    d.ok(&["storage", "pool", "create", "p", "dir"]);
    for (p, v) in [("alpha", "disk"), ("default", "disk")] {
        d.ok(&[
            "storage",
            "volume",
            "create",
            "p",
            v,
            "--type",
            "block",
            "--size",
            "4MiB",
            "--project",
            p,
        ]);
    }
    let export = |project: &str, listen: Option<&str>| {
        let mut args = vec![
            "storage",
            "export",
            "create",
            "disk",
            "p",
            "disk",
            "--protocol",
            "nbd",
            "--project",
            project,
        ];
        if let Some(l) = listen {
            args.extend(["--listen", l]);
        }
        d.vessel(&args)
    };
    let stderr = |o: std::process::Output| String::from_utf8_lossy(&o.stderr).into_owned();
    let err = stderr(export("alpha", None));
    assert!(err.contains("give --listen"), "{err}");
    let sock = d.dir.join("alpha.sock");
    let err = stderr(export("alpha", Some(sock.to_str().unwrap())));
    assert!(err.contains("not on a unix socket"), "{err}");
    let (pa, pd) = (common::free_port(), common::free_port());
    let (la, ld) = (format!("127.0.0.1:{pa}"), format!("127.0.0.1:{pd}"));
    assert!(export("alpha", Some(&la)).status.success());
    // Another project's export may not share alpha's listener.
    let err = stderr(export("default", Some(&la)));
    assert!(err.contains("is in use"), "{err}");
    assert!(export("default", Some(&ld)).status.success());
    let list: serde_json::Value = serde_json::from_str(&d.ok(&[
        "storage",
        "export",
        "list",
        "--project",
        "alpha",
        "--format",
        "json",
    ]))
    .unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(
        (list[0]["name"].as_str(), list[0]["volume"].as_str()),
        (Some("disk"), Some("disk"))
    );
    let uri = list[0]["uri"].as_str().unwrap().to_string();
    let default_list = d.ok(&["storage", "export", "list", "--format", "json"]);
    assert!(!default_list.contains(&la), "{default_list}");
    // NBD over TCP takes TLS clients with credentials of an export. An NBD client on
    // alpha's listener sees alpha's export only, and reads what it wrote; default's
    // credentials see nothing there.
    let creds = |project: &str| {
        let dir = d.dir.join(format!("{project}-creds"));
        let out = d.ok(&[
            "storage",
            "export",
            "credentials",
            "disk",
            "--out",
            dir.to_str().unwrap(),
            "--project",
            project,
        ]);
        // QEMU's line names the export as the server serves it.
        let wire = if project == "default" {
            "disk".to_string()
        } else {
            format!("{project}.disk")
        };
        assert!(out.contains(&format!(",export={wire},")), "{out}");
        dir.to_str().unwrap().to_string()
    };
    let (alpha_creds, default_creds) = (creds("alpha"), creds("default"));
    let list_on = |creds: &str| {
        let out = Command::new("nbdinfo")
            .args([
                "--list",
                "--json",
                &format!("nbds://{la}?tls-certificates={creds}"),
            ])
            .output()
            .expect("nbdinfo: install it with scripts/setup.sh");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let foreign: serde_json::Value =
        serde_json::from_str(&list_on(&default_creds)).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        foreign["exports"].as_array().is_none_or(|a| a.is_empty()),
        "{foreign}"
    );
    let listed = list_on(&alpha_creds);
    let v: serde_json::Value =
        serde_json::from_str(&listed).unwrap_or_else(|e| panic!("{e}: {listed}"));
    let names: Vec<&str> = v["exports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["export-name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alpha.disk"], "{listed}");
    assert!(uri.ends_with("/alpha.disk"), "{uri}");
    let uri = format!("{uri}?tls-certificates={alpha_creds}");
    let data: Vec<u8> = (0..4u32 << 20).map(|i| (i % 251) as u8).collect();
    let (src, back) = (d.dir.join("src.raw"), d.dir.join("back.raw"));
    std::fs::write(&src, &data).unwrap();
    for (from, to) in [
        (src.to_str().unwrap(), uri.as_str()),
        (uri.as_str(), back.to_str().unwrap()),
    ] {
        let out = Command::new("nbdcopy")
            .args([from, to])
            .output()
            .expect("nbdcopy");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(std::fs::read(&back).unwrap() == data, "read back differs");
    // A project holding an export (and its volume) is not deleted.
    let err = d.fails(&["project", "delete", "alpha"]);
    assert!(
        err.contains("export disk") && err.contains("volume p/disk"),
        "{err}"
    );
    let err = d.fails(&["storage", "export", "delete", "nope", "--project", "alpha"]);
    assert!(
        err.contains("not found") && !err.contains("alpha."),
        "{err}"
    );
    for p in ["alpha", "default"] {
        d.ok(&["storage", "export", "delete", "disk", "--project", p]);
        d.ok(&["storage", "volume", "delete", "p", "disk", "--project", p]);
    }
    d.ok(&["project", "delete", "alpha"]);
    d.ok(&["project", "delete", "beta"]);
}

/// A daemon's store from before projects (schema 6: aliases without a project, no holders of
/// images) is opened by this daemon with everything in `default`: its image by alias, its
/// instance by name, started; another project sees none of it.
#[test]
fn a_store_from_before_projects_moves_into_default() {
    let mut d = Daemon::start();
    d.busybox();
    d.ok(&[
        "create",
        "busybox",
        "old",
        "--no-network",
        "--",
        "sleep",
        "3600",
    ]);
    let fp = fingerprint(&d, "default", "busybox");
    d.kill(libc::SIGTERM);
    {
        // The store as the daemon before projects left it.
        let db = rusqlite::Connection::open(d.root().join("vessel.db")).unwrap();
        db.execute_batch(
            "PRAGMA foreign_keys = OFF;
             CREATE TABLE image_aliases_old (
                 alias TEXT PRIMARY KEY,
                 fingerprint TEXT NOT NULL REFERENCES images(fingerprint) ON DELETE CASCADE
             );
             INSERT INTO image_aliases_old SELECT alias, fingerprint FROM image_aliases;
             DROP TABLE image_aliases;
             ALTER TABLE image_aliases_old RENAME TO image_aliases;
             DROP TABLE image_projects;
             PRAGMA user_version = 6;",
        )
        .unwrap();
    }
    d.spawn();
    assert_eq!(fingerprint(&d, "default", "busybox"), fp);
    assert_eq!(
        names(&d.ok(&["list", "--format", "json"])),
        ["old"],
        "the instance is default's"
    );
    d.ok(&["start", "old"]);
    assert_eq!(d.info("old")["status"], "running");
    d.ok(&["project", "create", "alpha"]);
    let (_, body) = local(&d, "GET", "/1.0/images?project=alpha", None);
    assert_eq!(body, "[]");
    assert!(names(&d.ok(&["list", "--project", "alpha", "--format", "json"])).is_empty());
    // default's image is default's to delete, once nothing uses it.
    d.ok(&["delete", "-f", "old"]);
    d.ok(&["image", "delete", "busybox"]);
    d.ok(&["project", "delete", "alpha"]);
}

/// A project's operator publishes (forwards, load balancers) on ports of 1024 and above, on
/// addresses of the host that are neither loopback nor another project's gateway; nobody,
/// admin included, publishes a port a service of the host listens on. Its networks take
/// private subnets the host does not use.
#[test]
fn an_operator_keeps_to_its_own_ports_and_subnets() {
    let sb = Sandbox::new(1);
    let ns = sb.hosts[0].clone();
    let d = Daemon::start_in_netns(&ns);
    for (p, subnet) in [("alpha", "10.61.0.0/24"), ("beta", "10.62.0.0/24")] {
        d.ok(&["project", "create", p, "-c", "features.images=false"]);
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
    let port = 8443;
    let (s, body) = local(
        &d,
        "PATCH",
        "/1.0/config",
        Some(&format!(r#"{{"core.https_address":"127.0.0.1:{port}"}}"#)),
    );
    assert_eq!(s, 200, "{body}");
    let token = d.token("alpha-ops", "alpha", "operator");
    let cert = d.root().join("server.crt");
    let post = |path: &str, body: &str| {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &ns, "curl", "-sS", "--max-time", "20"])
            .args(["-o", "-", "-w", "\n%{http_code}", "-X", "POST"])
            .arg("--cacert")
            .arg(&cert)
            .arg("-H")
            .arg(format!("Authorization: Bearer {token}"))
            .args([
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                body,
            ]);
        split(c.arg(format!("https://127.0.0.1:{port}{path}?project=alpha")))
    };
    let forward = |address: Option<&str>, listen: u16| {
        let mut f = serde_json::json!({
            "protocol": "tcp", "listen_port": listen, "instance": "web", "target_port": 80
        });
        if let Some(a) = address {
            f["listen_address"] = a.into();
        }
        post("/1.0/networks/lan/forwards", &f.to_string())
    };
    let balancer = |address: &str, protocol: &str, listen: u16| {
        let lb = serde_json::json!({
            "name": "front", "address": address, "backends": ["web"],
            "ports": [{"protocol": protocol, "listen_port": listen, "target_port": 80}],
        });
        post("/1.0/networks/lan/load-balancers", &lb.to_string())
    };
    let refused = |(status, body): (u16, String), want: &str| {
        assert!(
            status == 403 && body.contains(want),
            "want 403 {want:?}: {status} {body}"
        );
    };
    // The host's ports below 1024 (its SSH), its loopback (its resolver at 127.0.0.53),
    // another project's gateway (beta's DNS and DHCP), with any port.
    refused(forward(None, 22), "below 1024");
    refused(balancer("10.61.0.1", "tcp", 22), "below 1024");
    refused(forward(Some("127.0.0.1"), 8080), "loopback");
    refused(balancer("127.0.0.53", "udp", 5353), "loopback");
    refused(
        balancer("10.62.0.1", "udp", 5353),
        "gateway of a network of another project",
    );
    refused(
        forward(Some("10.62.0.1"), 8080),
        "gateway of a network of another project",
    );
    // Its storage exports alike: on TCP outside the networks, where a listener on the
    // host's loopback would answer the host's own clients of that port.
    let export = |listen: &str| {
        let e = serde_json::json!({
            "name": "x", "pool": "nopool", "volume": "v", "protocol": "nbd", "listen": listen,
        });
        post("/1.0/storage/exports", &e.to_string())
    };
    refused(export("127.0.0.1:20809"), "loopback");
    refused(export("[::1]:20809"), "loopback");
    refused(export("[::ffff:127.0.0.1]:20809"), "loopback");
    refused(export("0.0.0.0:20809"), "every address");
    refused(export("[::]:20809"), "every address");
    refused(
        export("[::ffff:10.62.0.1]:20809"),
        "gateway of a network of another project",
    );
    refused(
        export("10.62.0.1:20809"),
        "gateway of a network of another project",
    );
    // Past those checks, alpha's requests go on to its own (here: a backend it lacks, a
    // pool it does not have).
    let (status, body) = balancer("10.61.0.1", "tcp", 8080);
    assert!(status == 400 && body.contains("no NIC"), "{status} {body}");
    let (status, body) = export("10.61.0.1:20809");
    assert!(status == 404 && body.contains("nopool"), "{status} {body}");
    // A port a service of the host listens on (this daemon's API) is nobody's to take:
    // an admin's balancer on it used to be accepted and take its connections.
    let err = d.fails(&[
        "network",
        "lb",
        "add",
        "lan",
        "front",
        "--address",
        "127.0.0.1",
        "--port",
        &format!("tcp:{port}:80"),
        "--backend",
        "web",
        "--project",
        "alpha",
    ]);
    assert!(err.contains("in use on the host"), "{err}");
    let err = d.fails(&[
        "network",
        "forward",
        "add",
        "lan",
        "--port",
        &port.to_string(),
        "--to",
        "web:80",
        "--project",
        "alpha",
    ]);
    assert!(err.contains("in use on the host"), "{err}");
    // Subnets: private, and none of the host's (its LAN here: 192.168.77.0/24 on up0).
    let out = Command::new("ip")
        .args(["-n", &ns, "addr", "add", "192.168.77.5/24", "dev", "up0"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let network = |subnet: &str, ipv6: Option<&str>| {
        let mut n = serde_json::json!({"name": "more", "subnet": subnet});
        if let Some(p) = ipv6 {
            n["ipv6"] = p.into();
        }
        post("/1.0/networks", &n.to_string())
    };
    refused(network("128.0.0.0/1", None), "private subnet");
    refused(network("169.254.169.0/24", None), "private subnet");
    refused(network("198.51.100.0/24", None), "private subnet");
    refused(
        network("10.70.0.0/24", Some("2001:db8:5::/64")),
        "unique local",
    );
    for lan in ["192.168.77.0/24", "192.168.0.0/16", "192.168.77.128/25"] {
        let (status, body) = network(lan, None);
        assert!(
            status == 409 && body.contains("192.168.77.0/24, a route or address of the host"),
            "{lan}: {status} {body}"
        );
    }
    // beta's subnet is refused without naming it.
    let (status, body) = network("10.62.0.0/25", None);
    assert!(
        status == 409 && body.contains("another project") && !body.contains("route"),
        "{status} {body}"
    );
    // The host's first IPv6 network turns IPv6 forwarding on for all of it: an admin's.
    let forwarding = "/proc/sys/net/ipv6/conf/all/forwarding";
    let in_ns = |cmd: &str| {
        let out = Command::new("ip")
            .args(["netns", "exec", &ns, "sh", "-c", cmd])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(in_ns(&format!("cat {forwarding}")), "0");
    refused(
        network("10.70.0.0/24", Some("fd00:70::/64")),
        "an admin makes the first IPv6",
    );
    d.ok(&[
        "network",
        "create",
        "six",
        "--subnet",
        "10.71.0.0/24",
        "--ipv6",
        "fd00:71::/64",
        "--project",
        "alpha",
    ]);
    assert_eq!(in_ns(&format!("cat {forwarding}")), "1");
    let (status, body) = network("10.70.0.0/24", Some("fd00:70::/64"));
    assert_eq!(status, 201, "{body}");
    for n in ["more", "six"] {
        d.ok(&["network", "delete", n, "--project", "alpha"]);
    }
    // An admin's subnet is the admin's choice.
    d.ok(&[
        "network",
        "create",
        "wide",
        "--subnet",
        "100.64.0.0/24",
        "--project",
        "alpha",
    ]);
    d.ok(&["network", "delete", "wide", "--project", "alpha"]);
    // Health checks at most every 100 ms.
    let err = d.fails(&[
        "network",
        "lb",
        "add",
        "lan",
        "front",
        "--address",
        "10.61.0.1",
        "--port",
        "tcp:8080:80",
        "--backend",
        "web",
        "--check-interval-ms",
        "1",
        "--project",
        "alpha",
    ]);
    assert!(err.contains("every 100 to 60000 ms"), "{err}");
    d.ok(&["auth", "revoke", "alpha-ops"]);
    for p in ["alpha", "beta"] {
        d.ok(&["network", "delete", "lan", "--project", p]);
        d.ok(&["project", "delete", p]);
    }
}
