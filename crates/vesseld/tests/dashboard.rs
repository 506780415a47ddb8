//! The dashboard: its WebSockets (exec, console, events, a VM's display) driven by a real
//! WebSocket client, the credentials a browser sends in a subprotocol, and the dashboard
//! itself driven by Debian's chromium through playwright-core (`ui/tests/dashboard.mjs`).

mod common;

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Daemon;
use tungstenite::client::IntoClientRequest;
use tungstenite::http::header::SEC_WEBSOCKET_PROTOCOL;
use tungstenite::{Message, WebSocket};
use vessel_api::stream::{encode, parse_header, parse_i32, FrameKind};

/// A WebSocket to `path` over the daemon's unix socket (host root), offering `vessel.v1`.
fn ws(d: &Daemon, path: &str) -> WebSocket<UnixStream> {
    let s = UnixStream::connect(&d.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!("ws://vessel{path}").into_client_request().unwrap();
    req.headers_mut()
        .insert(SEC_WEBSOCKET_PROTOCOL, "vessel.v1".parse().unwrap());
    let (ws, resp) = tungstenite::client(req, s).expect("WebSocket handshake");
    assert_eq!(
        resp.headers().get(SEC_WEBSOCKET_PROTOCOL).unwrap(),
        "vessel.v1"
    );
    ws
}

/// One frame of a binary message (each message holds exactly one).
fn frame(m: &Message) -> (FrameKind, Vec<u8>) {
    let Message::Binary(b) = m else {
        panic!("not a binary message: {m:?}")
    };
    let head: [u8; 5] = b[..5].try_into().unwrap();
    let (kind, len) = parse_header(&head).unwrap();
    assert_eq!(b.len(), 5 + len, "one whole frame per message");
    (kind, b[5..].to_vec())
}

#[test]
fn websockets_carry_exec_console_and_events() {
    let d = Daemon::start();
    d.busybox();
    let mut events = ws(&d, "/1.0/events/websocket");
    d.ok(&["launch", "busybox", "w1"]);

    // Events: text messages of one event each.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let Message::Text(t) = events.read().expect("an event") else {
            continue;
        };
        let ev: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
        if ev["action"] == "instance-started" {
            assert_eq!(ev["source"], "/1.0/instances/w1");
            break;
        }
        assert!(Instant::now() < deadline, "no instance-started event");
    }
    drop(events);

    // Exec: the request first, then frames; output, then the exit code.
    let mut ex = ws(&d, "/1.0/instances/w1/exec/websocket");
    ex.send(Message::text(
        r#"{"command":["sh","-c","read x; echo got-$x; echo err >&2; exit 3"]}"#,
    ))
    .unwrap();
    ex.send(Message::binary(encode(FrameKind::Stdin, b"42\n")))
        .unwrap();
    let (mut out, mut err, mut code) = (String::new(), String::new(), None);
    while code.is_none() {
        let (kind, p) = frame(&ex.read().expect("exec frames until the exit"));
        match kind {
            FrameKind::Stdout => out.push_str(&String::from_utf8_lossy(&p)),
            FrameKind::Stderr => err.push_str(&String::from_utf8_lossy(&p)),
            FrameKind::Exit => code = parse_i32(&p),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        (out.as_str(), err.as_str(), code),
        ("got-42\n", "err\n", Some(3))
    );

    // An exec that cannot start says why in an Error frame.
    let mut bad = ws(&d, "/1.0/instances/w1/exec/websocket");
    bad.send(Message::text(r#"{"command":[]}"#)).unwrap();
    let (kind, p) = frame(&bad.read().unwrap());
    assert_eq!(kind, FrameKind::Error, "{}", String::from_utf8_lossy(&p));

    // A terminal: resize, then the size is what the shell sees.
    let mut tty = ws(&d, "/1.0/instances/w1/exec/websocket");
    tty.send(Message::text(
        r#"{"command":["sh"],"tty":true,"width":80,"height":24}"#,
    ))
    .unwrap();
    tty.send(Message::binary(encode(
        FrameKind::Resize,
        &vessel_api::stream::resize_payload(101, 33),
    )))
    .unwrap();
    tty.send(Message::binary(encode(
        FrameKind::Stdin,
        b"stty size; exit 0\n",
    )))
    .unwrap();
    let mut seen = String::new();
    loop {
        let (kind, p) = frame(&tty.read().expect("terminal output"));
        match kind {
            FrameKind::Stdout => seen.push_str(&String::from_utf8_lossy(&p)),
            FrameKind::Exit => break,
            _ => {}
        }
    }
    assert!(seen.contains("33 101"), "{seen:?}");

    // A browser that closes its terminal: the close is answered at once and the process on
    // the terminal is hung up (a shell left behind would live on).
    let mut hup = ws(&d, "/1.0/instances/w1/exec/websocket");
    hup.send(Message::text(r#"{"command":["sleep","1234"],"tty":true}"#))
        .unwrap();
    let sleeping = || d.sh("w1", "ps").1.contains("sleep 1234");
    d.wait_for("the exec's process", Duration::from_secs(10), sleeping);
    hup.close(None).unwrap();
    let t0 = Instant::now();
    loop {
        match hup.read() {
            Ok(_) => {}
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => panic!("the close was not answered: {e}"),
        }
    }
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    d.wait_for("the hang-up", Duration::from_secs(10), || !sleeping());

    // The console: what is typed reaches the init's terminal.
    let mut con = ws(&d, "/1.0/instances/w1/console/websocket");
    con.send(Message::binary(encode(
        FrameKind::Stdin,
        b"echo console-$((6*7))\n",
    )))
    .unwrap();
    let mut seen = String::new();
    while !seen.contains("console-42") {
        let (kind, p) = frame(&con.read().expect("console output"));
        if kind == FrameKind::Stdout {
            seen.push_str(&String::from_utf8_lossy(&p));
        }
    }

    // Not a WebSocket, or no such instance: plain HTTP answers.
    let (code, body) = common::http(
        &d.socket,
        "GET",
        "/1.0/instances/w1/console/websocket",
        None,
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("WebSocket"), "{body}");
    let (code, body) = common::http(&d.socket, "GET", "/1.0/instances/nope/exec/websocket", None);
    assert_eq!(code, 404, "{body}");
}

/// The head of a WebSocket handshake over HTTPS sent by curl, as a browser sends it:
/// (status, the subprotocol selected).
fn handshake(d: &Daemon, port: u16, path: &str, protocols: &str) -> (u16, String) {
    handshake_from(d, port, path, protocols, None)
}

/// [`handshake`] from a page of `origin`.
fn handshake_from(
    d: &Daemon,
    port: u16,
    path: &str,
    protocols: &str,
    origin: Option<&str>,
) -> (u16, String) {
    let mut c = Command::new("curl");
    if let Some(o) = origin {
        c.arg("-H").arg(format!("Origin: {o}"));
    }
    let out = c
        .args([
            "-sS",
            "--max-time",
            "3",
            "-o",
            "/dev/null",
            "-D",
            "-",
            "--http1.1",
        ])
        .arg("--cacert")
        .arg(d.root().join("server.crt"))
        .args(["-H", "Connection: Upgrade", "-H", "Upgrade: websocket"])
        .args(["-H", "Sec-WebSocket-Version: 13"])
        .args(["-H", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="])
        .arg("-H")
        .arg(format!("Sec-WebSocket-Protocol: {protocols}"))
        .arg(format!("https://127.0.0.1:{port}{path}"))
        .stdin(Stdio::null())
        .output()
        .expect("curl");
    let head = String::from_utf8_lossy(&out.stdout).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let proto = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("sec-websocket-protocol")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    (status, proto)
}

#[test]
fn a_browsers_token_rides_in_a_websocket_subprotocol() {
    let (d, port) = Daemon::start_https();
    d.busybox();
    d.ok(&["project", "create", "beta", "-c", "features.images=false"]);
    d.ok(&["launch", "busybox", "s1"]);
    d.ok(&["launch", "busybox", "theirs", "--project", "beta"]);
    let user = d.token("u", "default", "user");
    let viewer = d.token("v", "default", "viewer");
    let with = |t: &str| format!("vessel.v1, vessel.token.{t}");
    let path = "/1.0/instances/s1/console/websocket";
    assert_eq!(
        handshake(&d, port, path, &with(&user)),
        (101, "vessel.v1".into())
    );
    assert_eq!(handshake(&d, port, path, &with("vessel_00")).0, 401);
    assert_eq!(handshake(&d, port, path, "vessel.v1").0, 401);
    assert_eq!(
        handshake(&d, port, path, &with(&viewer)).0,
        403,
        "a viewer has no console"
    );
    assert_eq!(
        handshake(&d, port, "/1.0/events/websocket", &with(&viewer)),
        (101, "vessel.v1".into())
    );
    // Another project's instance is not found, as any unknown one.
    let theirs = "/1.0/instances/theirs/console/websocket";
    assert_eq!(handshake(&d, port, theirs, &with(&user)).0, 404);
    // A page of another site may not use the browser's credentials (cross-site WebSocket
    // hijacking); the server's own page may.
    let own = format!("https://127.0.0.1:{port}");
    assert_eq!(
        handshake_from(&d, port, path, &with(&user), Some(&own)),
        (101, "vessel.v1".into())
    );
    for evil in ["https://evil.example", "null", "http://127.0.0.1"] {
        assert_eq!(
            handshake_from(&d, port, path, &with(&user), Some(evil)).0,
            403,
            "{evil}"
        );
    }
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT"])
        .arg("--cacert")
        .arg(d.root().join("server.crt"))
        .args(["-H", "Origin: https://evil.example"])
        .arg("-H")
        .arg(format!("Authorization: Bearer {user}"))
        .args([
            "-H",
            "Content-Type: application/json",
            "-d",
            r#"{"action":"stop"}"#,
        ])
        .arg(format!("https://127.0.0.1:{port}/1.0/instances/s1/state"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "403");
    // Opening a console is in the audit log, as an exec is.
    let audit = d.ok(&["audit", "--format", "json"]);
    assert!(audit.contains("instance_console_websocket"), "{audit}");
    // Nothing was changed on the server by the refusals: the instance still runs, alone.
    assert_eq!(d.info("s1")["status"], "running");
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Where the screenshots stay after the test, for a person to look at.
fn artifacts() -> PathBuf {
    let dir = repo().join("target/dashboard-artifacts");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn a_browser_drives_the_dashboard() {
    let ui = repo().join("ui");
    let test = ui.join("tests/dashboard.mjs");
    for (need, what) in [
        (
            ui.join("node_modules/playwright-core"),
            "run ui/build.sh (npm ci in ui/)",
        ),
        (
            PathBuf::from("/usr/bin/chromium"),
            "install Debian's chromium",
        ),
        (test.clone(), "the browser test"),
    ] {
        assert!(need.exists(), "{} missing: {what}", need.display());
    }
    let (mut d, port) = Daemon::start_https();
    let url = format!("https://127.0.0.1:{port}");
    let page = Command::new("curl")
        .args(["-sS", "-k", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("{url}/ui/"))
        .output()
        .unwrap();
    let code = String::from_utf8_lossy(&page.stdout);
    assert_ne!(
        code,
        "000",
        "the HTTPS API did not answer once the daemon's socket did: {}",
        String::from_utf8_lossy(&page.stderr)
    );
    assert_eq!(
        code, "200",
        "the dashboard is not built into vesseld: run ui/build.sh, then cargo build"
    );
    d.busybox();
    // A full-profile VM whose firmware finds nothing to boot: its screen says so.
    let disk = d.dir.join("blank.qcow2");
    let out = Command::new("qemu-img")
        .args(["create", "-f", "qcow2"])
        .arg(&disk)
        .arg("16M")
        .output()
        .expect("qemu-img from qemu-utils");
    assert!(out.status.success());
    d.ok(&[
        "image",
        "import",
        disk.to_str().unwrap(),
        "--alias",
        "blank",
    ]);
    d.ok(&["launch", "blank", "f1", "--vm"]);
    assert_eq!(d.info("f1")["vm"]["vnc"], true);
    // The display over a WebSocket greets as a VNC server.
    {
        let mut w = ws(&d, "/1.0/instances/f1/vnc/websocket");
        let Message::Binary(b) = w.read().expect("the RFB greeting") else {
            panic!("not binary")
        };
        assert!(b.starts_with(b"RFB "), "{b:?}");
    }
    d.ok(&["project", "create", "other", "-c", "features.images=false"]);
    d.ok(&["launch", "busybox", "o1", "--project", "other"]);
    // The admin works in `default`; the viewer too.
    let admin = d.token("ui-admin", "default", "admin");
    let viewer = d.token("ui-viewer", "default", "viewer");
    // What the refused inputs (a wrong token, an expired one, another project's console)
    // must leave as it is.
    let others = |d: &Daemon| {
        let v: serde_json::Value =
            serde_json::from_str(&d.ok(&["list", "--project", "other", "--format", "json"]))
                .unwrap();
        let names: Vec<(String, String)> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|i| (i["name"].to_string(), i["status"].to_string()))
            .collect();
        (names, d.info("f1")["status"].to_string())
    };
    let before = others(&d);
    // A client certificate an admin trusts as a viewer: the browser that presents it is
    // logged in without a token.
    let (crt, key) = common::self_signed(&d.dir, "browser");
    d.ok(&[
        "auth",
        "trust",
        "add",
        crt.to_str().unwrap(),
        "--name",
        "ui-cert",
        "--role",
        "viewer",
    ]);
    let art = artifacts();
    let restart_done = d.dir.join("restarted");
    let mut child = Command::new("node")
        .arg(&test)
        .current_dir(&ui)
        .env("VESSEL_URL", &url)
        .env("VESSEL_ADMIN_TOKEN", &admin)
        .env("VESSEL_VIEWER_TOKEN", &viewer)
        .env("VESSEL_IMAGE", "busybox")
        .env("VESSEL_VM", "f1")
        .env("VESSEL_OTHER_INSTANCE", "o1")
        .env("VESSEL_ARTIFACTS", &art)
        .env("VESSEL_RESTART_DONE", &restart_done)
        .env("VESSEL_CLIENT_CERT", &crt)
        .env("VESSEL_CLIENT_KEY", &key)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node (the machine's Node.js)");
    // The test's lines as they come: it asks for a daemon restart with one of them.
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let stderr = child.stderr.take().unwrap();
    let errors = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut std::io::BufReader::new(stderr), &mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut lines = Vec::new();
    let status = loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                if line.trim() == "RESTART-DAEMON" {
                    d.kill(libc::SIGTERM);
                    d.spawn();
                    std::fs::write(&restart_done, "").unwrap();
                }
                lines.push(line);
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                break child.wait().unwrap();
            }
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the browser test hung:\n{}", lines.join("\n"));
        }
    };
    let _ = reader.join();
    let text = format!(
        "{}\n{}",
        lines.join("\n"),
        errors.join().unwrap_or_default()
    );
    assert!(
        status.success(),
        "the browser test failed:\n{text}\n{}",
        common::tail(&d.log(), 40)
    );
    let shots = std::fs::read_dir(&art).unwrap().count();
    assert!(shots >= 10, "{shots} screenshots in {}", art.display());
    // The dashboard deleted what it made, and changed nothing else.
    assert!(d.fails(&["info", "ui-c1"]).contains("not found"));
    assert_eq!(others(&d), before);
}
