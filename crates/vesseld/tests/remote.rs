//! The HTTPS API against real clients: curl (and openssl for client certificates) on
//! 127.0.0.1 against a daemon with its own certificate. Every endpoint of the endpoint table
//! answers each role exactly as the table says; tokens expire and are revoked (also on an
//! open stream); client certificates authenticate by fingerprint; failures are rate-limited;
//! idle connections do not lock others out; the listener moves at run time.

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Daemon;
use vessel_api::endpoints::{Method, Role, ENDPOINTS};

/// A client of one daemon's HTTPS API and its unix socket, through curl.
struct Api<'a> {
    d: &'a Daemon,
    port: u16,
}

/// Status and body of an answer.
struct Answer {
    status: u16,
    body: String,
}

impl Api<'_> {
    fn cert(&self) -> PathBuf {
        self.d.root().join("server.crt")
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    /// One request over HTTPS, the server's certificate checked against its file.
    fn https(&self, token: Option<&str>, method: &str, path: &str, body: Option<&str>) -> Answer {
        self.https_with(token, method, path, body, &[])
    }

    fn https_with(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        body: Option<&str>,
        extra: &[&str],
    ) -> Answer {
        let mut c = Command::new("curl");
        c.args(["-sS", "--max-time", "20", "-o", "-", "-w", "\n%{http_code}"])
            .arg("--cacert")
            .arg(self.cert())
            .args(["-X", method])
            .args(extra);
        if let Some(t) = token {
            c.arg("-H").arg(format!("Authorization: Bearer {t}"));
        }
        if let Some(b) = body {
            c.args(["-H", "Content-Type: application/json", "--data-binary", b]);
        }
        answer(c.arg(self.url(path)))
    }

    /// One request over the unix socket (host root).
    fn local(&self, method: &str, path: &str, body: Option<&str>) -> Answer {
        let mut c = Command::new("curl");
        c.args(["-sS", "--max-time", "20", "-o", "-", "-w", "\n%{http_code}"])
            .arg("--unix-socket")
            .arg(&self.d.socket)
            .args(["-X", method]);
        if let Some(b) = body {
            c.args(["-H", "Content-Type: application/json", "--data-binary", b]);
        }
        answer(c.arg(format!("http://vessel{path}")))
    }

    /// Waits (10 s at most) until the HTTPS listener answers.
    #[track_caller]
    fn wait_serving(&self, what: &str) {
        let t = Instant::now();
        while self.https(None, "GET", "/1.0", None).status != 401 {
            assert!(t.elapsed() < Duration::from_secs(10), "{what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A new token of `role`, made over the socket.
    fn token(&self, name: &str, role: &str, expires: Option<&str>) -> String {
        let body = match expires {
            Some(e) => format!(r#"{{"name":"{name}","role":"{role}","expires":"{e}"}}"#),
            None => format!(r#"{{"name":"{name}","role":"{role}"}}"#),
        };
        let a = self.local("POST", "/1.0/auth/tokens", Some(&body));
        assert_eq!(a.status, 201, "{}", a.body);
        a.json()["token"].as_str().unwrap().to_string()
    }
}

impl Answer {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

#[track_caller]
fn answer(c: &mut Command) -> Answer {
    let out = c.stdin(Stdio::null()).output().expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    Answer {
        status: code.trim().parse().unwrap_or(0),
        body: body.to_string(),
    }
}

/// `path` with every `{param}` filled with a name nothing has.
fn concrete(path: &str) -> String {
    path.split('/')
        .map(|s| if s.starts_with('{') { "zz-none" } else { s })
        .collect::<Vec<_>>()
        .join("/")
}

/// Every endpoint, for every role: 403 below the endpoint's role, anything but 401 and 403
/// from it up; no answer to a remote client names the daemon's directories. Without
/// credentials every endpoint is 401, until the address has failed too often: then 429.
#[test]
fn every_endpoint_answers_each_role_as_the_table_says() {
    let (d, port) = Daemon::start_https();
    let api = Api { d: &d, port };
    let tokens: Vec<(Role, String)> = Role::ALL
        .iter()
        .map(|r| (*r, api.token(&format!("t-{r}"), r.as_str(), None)))
        .collect();
    let root = d.root().display().to_string();
    let mut checked = 0;
    for e in ENDPOINTS {
        let path = concrete(e.path);
        let body = match e.id {
            // A subnet that does not parse: admin init answers 400 before it would make a
            // network in the host's namespace.
            "admin_init" => Some(r#"{"subnet":"not-a-subnet"}"#),
            _ if e.method == Method::Get || e.method == Method::Delete => None,
            _ => Some("{}"),
        };
        // The event stream does not end by itself: its head is what is checked.
        let extra: &[&str] = if e.id == "events" {
            &["--max-time", "2"]
        } else {
            &[]
        };
        for (role, token) in &tokens {
            let a = api.https_with(Some(token), e.method.as_str(), &path, body, extra);
            if *role < e.role {
                assert_eq!(
                    a.status,
                    403,
                    "{role} on {} {} ({}): {}",
                    e.method.as_str(),
                    e.path,
                    e.id,
                    a.body
                );
                assert!(a.body.contains(e.role.as_str()), "{}", a.body);
            } else {
                assert!(
                    a.status != 401 && a.status != 403 && a.status != 0,
                    "{role} on {} {} ({}): {} {}",
                    e.method.as_str(),
                    e.path,
                    e.id,
                    a.status,
                    a.body
                );
            }
            assert!(!a.body.contains(&root), "{} leaks {root}: {}", e.id, a.body);
            checked += 1;
        }
    }
    assert_eq!(checked, ENDPOINTS.len() * 4);
    // What a viewer was refused is in the audit log, under its name.
    let log = api.local("GET", "/1.0/audit", None).json();
    let refused = log
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["identity"] == "t-viewer" && e["action"] == "instance_delete")
        .unwrap_or_else(|| panic!("no refusal of t-viewer in {log}"));
    assert_eq!(refused["status"], 403);
    assert_eq!(refused["target"], "DELETE /1.0/instances/zz-none");
    // Reads are not audited.
    assert!(!log.to_string().contains("instances_list"));

    // Without credentials: 401 until the address has failed 20 times within a minute.
    let mut statuses = Vec::new();
    for e in ENDPOINTS.iter().filter(|e| e.id != "events").take(25) {
        let a = api.https(None, e.method.as_str(), &concrete(e.path), None);
        statuses.push(a.status);
    }
    assert!(statuses[..20].iter().all(|s| *s == 401), "{statuses:?}");
    assert!(statuses[20..].iter().all(|s| *s == 429), "{statuses:?}");
    // Even a good token waits now, from this address; the socket is unaffected.
    let a = api.https(Some(&tokens[3].1), "GET", "/1.0", None);
    assert_eq!(a.status, 429, "{}", a.body);
    assert_eq!(api.local("GET", "/1.0", None).status, 200);
}

/// A token's lifetime ends its access; revoking one fails its next request and closes its
/// open event stream within seconds; the socket's root sees who did what.
#[test]
fn tokens_expire_and_revocation_closes_open_streams() {
    let (d, port) = Daemon::start_https();
    let api = Api { d: &d, port };
    let short = api.token("short", "viewer", Some("6s"));
    assert_eq!(
        api.https(Some(&short), "GET", "/1.0/instances", None)
            .status,
        200
    );
    let me = api
        .https(Some(&short), "GET", "/1.0/auth/self", None)
        .json();
    assert_eq!(
        (me["name"].as_str(), me["role"].as_str()),
        (Some("short"), Some("viewer"))
    );
    assert!(me["expires_at"].is_string(), "{me}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let a = loop {
        let a = api.https(Some(&short), "GET", "/1.0/instances", None);
        if a.status != 200 {
            break a;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the 6 s token still works after 30 s"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(a.status, 401);
    assert!(a.body.contains("expired"), "{}", a.body);

    let token = api.token("watcher", "user", None);
    let stream = |path: &str| {
        Command::new("curl")
            .args(["-sS", "-N", "--max-time", "60"])
            .arg("--cacert")
            .arg(api.cert())
            .arg("-H")
            .arg(format!("Authorization: Bearer {token}"))
            .arg(api.url(path))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut events = stream("/1.0/events");
    // An instance's log followed is a stream too.
    d.busybox();
    d.ok(&[
        "launch",
        "busybox",
        "w",
        "--no-network",
        "--",
        "sleep",
        "3600",
    ]);
    let mut logs = stream("/1.0/instances/w/logs?follow=1");
    // The streams are open.
    std::thread::sleep(Duration::from_millis(800));
    assert!(
        events.try_wait().unwrap().is_none(),
        "the event stream ended early"
    );
    assert!(
        logs.try_wait().unwrap().is_none(),
        "the log stream ended early"
    );
    let revoked = api.local("DELETE", "/1.0/auth/identities/watcher", None);
    assert_eq!(revoked.status, 200, "{}", revoked.body);
    let t = Instant::now();
    loop {
        if logs.try_wait().unwrap().is_some() {
            break;
        }
        if t.elapsed() > Duration::from_secs(5) {
            let _ = logs.kill();
            panic!("the revoked identity's log stream is still open after 5 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = loop {
        if let Some(s) = events.try_wait().unwrap() {
            break s;
        }
        if t.elapsed() > Duration::from_secs(5) {
            let _ = events.kill();
            panic!("the revoked identity's event stream is still open after 5 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // curl's 18: the chunked body ended before its last chunk (the connection was closed).
    assert!(
        status.code() != Some(28),
        "curl ran into its own timeout: {status}"
    );
    let a = api.https(Some(&token), "GET", "/1.0", None);
    assert_eq!(a.status, 401);
    let mut out = String::new();
    events
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();

    let log = api.local("GET", "/1.0/audit", None).json();
    let actions: Vec<(&str, &str, u64)> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["identity"].as_str().unwrap(),
                e["action"].as_str().unwrap(),
                e["status"].as_u64().unwrap(),
            )
        })
        .collect();
    assert!(
        actions.contains(&("host-root", "auth_tokens_create", 201)),
        "{actions:?}"
    );
    assert!(
        actions.contains(&("host-root", "auth_identity_delete", 200)),
        "{actions:?}"
    );
    // An operator reads its project's log, a viewer none of it.
    let op = api.token("op", "operator", None);
    assert_eq!(api.https(Some(&op), "GET", "/1.0/audit", None).status, 200);
    let a = api.https(Some(&op), "GET", "/1.0/audit?project=other", None);
    assert_eq!(a.status, 404, "{}", a.body);
    let viewer = api.token("v", "viewer", None);
    assert_eq!(
        api.https(Some(&viewer), "GET", "/1.0/audit", None).status,
        403
    );

    // Bad requests change nothing.
    for (body, says) in [
        (r#"{"name":"x","role":"root"}"#, "no role"),
        (
            r#"{"name":"x","role":"viewer","expires":"soon"}"#,
            "does not parse",
        ),
        (
            r#"{"name":"x","role":"viewer","project":"nope"}"#,
            "not found",
        ),
        (r#"{"name":"op","role":"viewer"}"#, "exists already"),
    ] {
        let a = api.local("POST", "/1.0/auth/tokens", Some(body));
        assert!(
            a.status >= 400 && a.body.contains(says),
            "{body}: {} {}",
            a.status,
            a.body
        );
    }
    let ids = api.local("GET", "/1.0/auth/identities", None).json();
    let names: Vec<&str> = ids
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["op", "short", "v"]);
    assert!(!ids.to_string().contains(&op), "a listing shows a token");
}

/// A client certificate trusted by an admin authenticates over mutual TLS; an untrusted one
/// does not.
#[test]
fn trusted_client_certificates_authenticate() {
    let (d, port) = Daemon::start_https();
    let api = Api { d: &d, port };
    let make = |name: &str| common::self_signed(&d.dir, name);
    let (crt, key) = make("laptop");
    let pem = std::fs::read_to_string(&crt).unwrap();
    let body = serde_json::json!({"name": "laptop", "certificate": pem, "role": "user"});
    let a = api.local("POST", "/1.0/auth/certificates", Some(&body.to_string()));
    assert_eq!(a.status, 201, "{}", a.body);
    let fp = a.json()["fingerprint"].as_str().unwrap().to_string();
    assert_eq!(fp.len(), 64);
    let with = |crt: &PathBuf, key: &PathBuf| {
        let (c, k) = (crt.display().to_string(), key.display().to_string());
        api.https_with(
            None,
            "GET",
            "/1.0/auth/self",
            None,
            &["--cert", &c, "--key", &k],
        )
    };
    let me = with(&crt, &key);
    assert_eq!(me.status, 200, "{}", me.body);
    assert_eq!(me.json()["name"], "laptop");
    assert_eq!(me.json()["kind"], "certificate");
    let (other, other_key) = make("stranger");
    let a = with(&other, &other_key);
    assert_eq!(a.status, 401, "{}", a.body);
    assert!(a.body.contains("not trusted"), "{}", a.body);
    // Revoked, the trusted one is a stranger too.
    assert_eq!(
        api.local("DELETE", "/1.0/auth/identities/laptop", None)
            .status,
        200
    );
    assert_eq!(with(&crt, &key).status, 401);
}

/// 500 connections that never send a byte do not keep others from being served, and are
/// dropped once the header timeout passes.
#[test]
fn idle_connections_do_not_lock_others_out() {
    let (d, port) = Daemon::start_https();
    let api = Api { d: &d, port };
    let token = api.token("busy", "viewer", None);
    let idle: Vec<TcpStream> = (0..500)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).expect("connect"))
        .collect();
    let t = Instant::now();
    let a = api.https(Some(&token), "GET", "/1.0/instances", None);
    assert_eq!(a.status, 200, "{}", a.body);
    // Well before the header timeout would have freed a slot (10 s).
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "served after {:?}",
        t.elapsed()
    );
    // The header timeout (10 s) closes them: a read sees the end.
    let mut first = &idle[0];
    first
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut buf = [0u8; 16];
    let n = first.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "an idle connection got data");
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "closed after {:?}",
        t.elapsed()
    );
    // A request body over the limit is refused before it is read.
    let big = format!(r#"{{"name":"{}"}}"#, "x".repeat(2 << 20));
    let path = d.dir.join("big.json");
    std::fs::write(&path, big).unwrap();
    let admin = api.token("admin", "admin", None);
    let a = api.https_with(
        Some(&admin),
        "POST",
        "/1.0/auth/tokens",
        None,
        &[
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &format!("@{}", path.display()),
        ],
    );
    assert_eq!(a.status, 413, "{}", a.body);
}

/// `core.https_address` moves the listener at once, is kept across restarts, and a bad
/// address leaves the listener where it was; the certificate stays the same.
#[test]
fn the_https_address_is_set_at_run_time_and_kept() {
    let mut d = Daemon::start();
    let port = common::free_port();
    let mut api = Api { d: &d, port };
    // Not listening until told.
    assert_eq!(api.https(None, "GET", "/1.0", None).status, 0);
    let set = |api: &Api, value: &str| {
        api.local(
            "PATCH",
            "/1.0/config",
            Some(&format!(r#"{{"core.https_address":"{value}"}}"#)),
        )
    };
    let a = set(&api, &format!("127.0.0.1:{port}"));
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(api.https(None, "GET", "/1.0", None).status, 401);
    let fingerprint = std::fs::read(api.cert()).unwrap();

    for bad in ["not-an-address", "203.0.113.7:8443"] {
        let a = set(&api, bad);
        assert_eq!(a.status, 400, "{bad}: {}", a.body);
    }
    let a = api.local("PATCH", "/1.0/config", Some(r#"{"core.nope":"1"}"#));
    assert_eq!(a.status, 400);
    assert!(a.body.contains("core.https_address"), "{}", a.body);
    assert_eq!(
        api.https(None, "GET", "/1.0", None).status,
        401,
        "the listener moved"
    );
    let config = api.local("GET", "/1.0/config", None).json();
    assert_eq!(config["core.https_address"], format!("127.0.0.1:{port}"));

    let moved = common::free_port();
    d.ok(&[
        "config",
        "set",
        &format!("core.https_address=127.0.0.1:{moved}"),
    ]);
    assert_eq!(
        api.https(None, "GET", "/1.0", None).status,
        0,
        "the old port still answers"
    );
    api.port = moved;
    assert_eq!(api.https(None, "GET", "/1.0", None).status, 401);

    d.kill(libc::SIGTERM);
    d.spawn();
    let api = Api { d: &d, port: moved };
    api.wait_serving("not listening after a restart");
    assert_eq!(
        std::fs::read(api.cert()).unwrap(),
        fingerprint,
        "a new certificate"
    );
    // An operator's own certificate and key replace the daemon's at the next start.
    let st = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args([
            "-subj",
            "/CN=vessel.example",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(d.root().join("server.key"))
        .arg("-out")
        .arg(d.root().join("server.crt"))
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let theirs = std::fs::read(api.cert()).unwrap();
    assert_ne!(theirs, fingerprint);
    d.kill(libc::SIGTERM);
    d.spawn();
    let api = Api { d: &d, port: moved };
    api.wait_serving("not serving its own certificate");
    assert_eq!(
        std::fs::read(api.cert()).unwrap(),
        theirs,
        "the daemon replaced it"
    );
    // Unset: not listening.
    assert_eq!(
        d.ok(&["config", "get", "core.https_address"]).trim(),
        format!("127.0.0.1:{moved}")
    );
    d.ok(&["config", "unset", "core.https_address"]);
    assert_eq!(api.https(None, "GET", "/1.0", None).status, 0);
    assert_eq!(api.local("GET", "/1.0/config", None).body.trim(), "{}");
}

/// The CLI as a remote client: trust on first use pins the daemon's certificate, commands
/// reach instances as `REMOTE:NAME` (exec and console streams too), a changed certificate is
/// refused loudly, and revoking the identity closes its open console.
#[test]
fn the_cli_uses_a_remote_over_https() {
    let (mut d, port) = Daemon::start_https();
    let client_dir = d.dir.join("client");
    let config_dir = client_dir.display().to_string();
    let cli = |d: &Daemon, args: &[&str]| d.vessel_env(args, &[("VESSEL_CONFIG_DIR", &config_dir)]);
    let token = String::from_utf8(
        d.vessel(&[
            "auth", "token", "create", "ops", "--role", "operator", "--format", "json",
        ])
        .stdout,
    )
    .unwrap();
    let token: serde_json::Value = serde_json::from_str(&token).unwrap();
    let token = token["token"].as_str().unwrap().to_string();
    let url = format!("https://127.0.0.1:{port}");
    // Without a terminal, trusting needs to be said.
    let out = cli(&d, &["remote", "add", "far", &url, "--token", &token]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--accept-certificate"));
    let out = cli(
        &d,
        &[
            "remote",
            "add",
            "far",
            &url,
            "--token",
            &token,
            "--accept-certificate",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pem = std::fs::read(d.root().join("server.crt")).unwrap();
    let shown = String::from_utf8_lossy(&out.stdout).into_owned();
    let fp = openssl_fingerprint(&pem);
    assert!(shown.contains(&fp), "{shown} does not show {fp}");
    // A bad token is refused before anything is stored.
    let out = cli(
        &d,
        &[
            "remote",
            "add",
            "bad",
            &url,
            "--token",
            "vessel_00",
            "--accept-certificate",
        ],
    );
    assert!(!out.status.success());

    d.busybox();
    d.ok(&[
        "launch",
        "busybox",
        "c1",
        "--no-network",
        "--",
        "sleep",
        "3600",
    ]);
    let out = cli(&d, &["list", "far:", "--format", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list[0]["name"], "c1");
    let out = cli(
        &d,
        &[
            "exec",
            "far:c1",
            "--",
            "sh",
            "-c",
            "echo over-https; exit 7",
        ],
    );
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "over-https\n");
    let out = cli(&d, &["auth", "list", "--remote", "far"]);
    assert!(!out.status.success(), "an operator listed identities");
    assert!(String::from_utf8_lossy(&out.stderr).contains("admin"));

    // A console held open by a user is closed when the user is revoked.
    let user = String::from_utf8(
        d.vessel(&[
            "auth", "token", "create", "u1", "--role", "user", "--format", "json",
        ])
        .stdout,
    )
    .unwrap();
    let user: serde_json::Value = serde_json::from_str(&user).unwrap();
    // The token from the environment, out of the process list.
    let out = d.vessel_env(
        &["remote", "add", "u", &url, "--accept-certificate"],
        &[
            ("VESSEL_CONFIG_DIR", &config_dir),
            ("VESSEL_TOKEN", user["token"].as_str().unwrap()),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut console = Command::new(d.bin("vessel"))
        .env("VESSEL_CONFIG_DIR", &client_dir)
        .args(["console", "u:c1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        console.try_wait().unwrap().is_none(),
        "the console ended early"
    );
    d.ok(&["auth", "revoke", "u1"]);
    let t = Instant::now();
    while console.try_wait().unwrap().is_none() {
        if t.elapsed() > Duration::from_secs(5) {
            let _ = console.kill();
            panic!("the revoked user's console is still open after 5 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    // A daemon with another certificate is refused, loudly, and nothing is sent.
    d.kill(libc::SIGTERM);
    std::fs::remove_file(d.root().join("server.crt")).unwrap();
    std::fs::remove_file(d.root().join("server.key")).unwrap();
    d.spawn();
    let out = cli(&d, &["list", "far:"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&fp) && err.contains("changed"), "{err}");
    assert!(err.contains("vessel remote remove far"), "{err}");
    d.ok(&["delete", "-f", "c1"]);
}

/// SHA-256 of a PEM certificate's DER, as openssl computes it.
fn openssl_fingerprint(pem: &[u8]) -> String {
    use std::io::Write;
    let mut c = Command::new("openssl")
        .args(["x509", "-outform", "DER"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(pem).unwrap();
    let der = c.wait_with_output().unwrap().stdout;
    let out = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut s| {
            s.stdin.take().unwrap().write_all(&der)?;
            s.wait_with_output()
        })
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}
