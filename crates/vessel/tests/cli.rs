//! Runs the built `vessel` binary: messages, exit statuses and wire handling against a
//! stand-in for the daemon (a unix socket replaying canned responses).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use vessel_api::stream::{self, FrameKind};

const START_HINT: &str = "Is it running? Start it with: vesseld --root-dir /var/lib/vessel";

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// This test process's scratch directory.
fn scratch_root() -> PathBuf {
    std::env::temp_dir().join(format!("vessel-cli-test-{}", std::process::id()))
}

/// Removes the scratch directory; run when the test binary exits, whether its tests passed
/// or failed (the harness exits through `exit`, which runs `atexit` handlers).
extern "C" fn remove_scratch() {
    let _ = std::fs::remove_dir_all(scratch_root());
}

/// A path that does not exist yet in this process's scratch directory (the commands under
/// test create configuration directories there, sockets are bound there).
fn temp_path(ext: &str) -> PathBuf {
    static MADE: std::sync::Once = std::sync::Once::new();
    MADE.call_once(|| {
        std::fs::create_dir_all(scratch_root()).expect("scratch directory");
        // SAFETY: registers a plain function that captures nothing and only removes files.
        let rc = unsafe { libc::atexit(remove_scratch) };
        assert_eq!(rc, 0, "atexit");
    });
    scratch_root().join(format!("{}.{ext}", COUNTER.fetch_add(1, Ordering::SeqCst)))
}

fn vessel(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vessel"));
    // A configuration directory of its own: never the real home's remotes.
    cmd.args(args)
        .env_remove("VESSEL_SOCKET")
        .env("VESSEL_CONFIG_DIR", temp_path("config"))
        .stdin(Stdio::null());
    cmd
}

/// A configuration directory holding `config.yml` with `text`.
fn config_dir(text: &str) -> PathBuf {
    let dir = temp_path("config");
    std::fs::create_dir_all(&dir).expect("config dir");
    std::fs::write(dir.join("config.yml"), text).expect("config file");
    dir
}

/// A TCP port on the loopback that nothing listens on.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("address")
        .port()
}

/// A configuration with the remote `prod` on `port` of the loopback.
fn prod_config(port: u16, default: &str) -> String {
    format!(
        "default_remote: {default}\nremotes:\n  prod:\n    url: https://127.0.0.1:{port}\n    \
         token: s3cret\n    fingerprint: {}\n",
        "ab".repeat(32)
    )
}

fn run(cmd: &mut Command) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("run vessel");
    (
        status.code().expect("exit status"),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

/// What the stand-in daemon received: request line, body, and bytes sent after the request.
struct Received {
    request_line: String,
    body: Vec<u8>,
    after: Vec<u8>,
}

/// Serves one canned response per connection, in order.
fn fake_daemon(responses: Vec<Vec<u8>>) -> (PathBuf, JoinHandle<Vec<Received>>) {
    fake_stream_daemon(responses.into_iter().map(|r| (r, Vec::new())).collect())
}

/// Like [`fake_daemon`], but each response may have a second part, sent once the client has
/// sent a CloseStdin frame (as a real command ends only after its input does).
fn fake_stream_daemon(responses: Vec<(Vec<u8>, Vec<u8>)>) -> (PathBuf, JoinHandle<Vec<Received>>) {
    let path = temp_path("sock");
    let listener = UnixListener::bind(&path).expect("bind");
    let handle = std::thread::spawn(move || {
        let mut got = Vec::new();
        for (response, after_stdin) in responses {
            let (stream, _) = listener.accept().expect("accept");
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut request_line = String::new();
            reader.read_line(&mut request_line).expect("request line");
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).expect("header");
                let line = line.trim_end();
                if line.is_empty() {
                    break;
                }
                if let Some((k, v)) = line.split_once(':') {
                    if k.eq_ignore_ascii_case("content-length") {
                        len = v.trim().parse().expect("length");
                    }
                }
            }
            let mut body = vec![0; len];
            reader.read_exact(&mut body).expect("body");
            let mut writer = stream;
            let _ = writer.write_all(&response);
            let mut after = Vec::new();
            if !after_stdin.is_empty() {
                while let Ok(Some((kind, payload))) = stream::read_frame(&mut reader) {
                    after.extend(stream::encode(kind, &payload));
                    if kind == FrameKind::CloseStdin {
                        break;
                    }
                }
                let _ = writer.write_all(&after_stdin);
            }
            let _ = writer.shutdown(Shutdown::Write);
            let _ = reader.read_to_end(&mut after);
            got.push(Received {
                request_line: request_line.trim_end().to_string(),
                body,
                after,
            });
        }
        got
    });
    (path, handle)
}

fn json(status: u16, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[test]
fn missing_daemon_is_explained() {
    let (code, out, err) = run(&mut vessel(&[
        "--socket",
        "/nonexistent/vessel.sock",
        "list",
    ]));
    assert_eq!(code, 1);
    assert_eq!(out, "");
    assert_eq!(
        err,
        format!(
            "Error: cannot reach the Vessel daemon at /nonexistent/vessel.sock \
             (No such file or directory). {START_HINT}\n"
        )
    );
}

#[test]
fn socket_from_the_environment() {
    let (code, _, err) = run(vessel(&["info"]).env("VESSEL_SOCKET", "/nonexistent/env.sock"));
    assert_eq!(code, 1);
    assert!(
        err.contains("daemon at /nonexistent/env.sock (No such file"),
        "{err}"
    );
}

#[test]
fn refused_connection_is_explained() {
    let path = temp_path("sock");
    drop(UnixListener::bind(&path).expect("bind"));
    let (code, _, err) = run(&mut vessel(&["--socket", path.to_str().unwrap(), "list"]));
    let _ = std::fs::remove_file(&path);
    assert_eq!(code, 1);
    assert!(
        err.contains("(Connection refused). Is it running?"),
        "{err}"
    );
}

#[test]
fn bad_limit_fails_before_any_request() {
    let (code, out, err) = run(&mut vessel(&[
        "--socket",
        "/nonexistent/vessel.sock",
        "launch",
        "busybox",
        "c1",
        "-l",
        "memory=12XB",
    ]));
    assert_eq!(code, 1);
    assert_eq!(out, "");
    assert!(
        err.starts_with(
            "Error: invalid limit 'memory=12XB': unknown unit 'XB'; use B, KiB, MiB, GiB"
        ),
        "{err}"
    );
}

#[test]
fn help_teaches_with_examples() {
    let (code, out, _) = run(&mut vessel(&["launch", "--help"]));
    assert_eq!(code, 0);
    assert!(
        out.contains("vessel launch busybox web -l memory=256MiB"),
        "{out}"
    );
    let (_, out, _) = run(&mut vessel(&["--help"]));
    assert!(out.contains("vessel exec c1 -- sh"), "{out}");
}

#[test]
fn list_renders_the_daemon_answer() {
    let body = r#"[{"name":"web","type":"container","status":"running","image":"0123456789abcdef",
        "privileged":false,"limits":{},"command":[],"environment":{},"created_at":"t",
        "state":{"pid":9,"cpu_usage_ns":0,"memory_usage_bytes":2048,"oom_kills":0,"pids":1}}]"#;
    let (path, server) = fake_daemon(vec![json(200, body), json(200, body)]);
    let sock = path.to_str().unwrap();
    let (code, out, err) = run(&mut vessel(&["--socket", sock, "list"]));
    assert_eq!((code, err.as_str()), (0, ""));
    assert!(
        out.contains(
            "| web  | container | RUNNING | -    | 9   | 0.00s | 2KiB   | 1    | 0123456789ab |"
        ),
        "{out}"
    );
    let (code, out, _) = run(&mut vessel(&["--socket", sock, "list", "--format", "yaml"]));
    assert_eq!(code, 0);
    assert!(out.contains("name: web\n"), "{out}");
    let got = server.join().unwrap();
    assert_eq!(
        got[0].request_line,
        "GET /1.0/instances?recursion=1 HTTP/1.1"
    );
    let _ = std::fs::remove_file(path);
}

#[test]
fn daemon_error_is_printed_and_fails() {
    let (path, server) = fake_daemon(vec![json(
        404,
        r#"{"error":"instance 'nope' not found","code":404}"#,
    )]);
    let (code, out, err) = run(&mut vessel(&[
        "--socket",
        path.to_str().unwrap(),
        "info",
        "nope",
    ]));
    assert_eq!((code, out.as_str()), (1, ""));
    assert_eq!(err, "Error: instance 'nope' not found\n");
    server.join().unwrap();
    let _ = std::fs::remove_file(path);
}

#[test]
fn failed_operation_fails_the_command() {
    let op = |status: &str, error: Option<&str>| {
        let mut v = serde_json::json!({
            "id": "op 1", "description": "Creating instance c1", "status": status,
            "resources": [], "may_cancel": false, "created_at": "t", "updated_at": "t"
        });
        if let Some(e) = error {
            v["error"] = e.into();
        }
        v.to_string()
    };
    let (path, server) = fake_daemon(vec![
        json(202, &op("pending", None)),
        json(200, &op("running", None)),
        json(200, &op("failure", Some("image 'nope' not found"))),
    ]);
    let (code, out, err) = run(&mut vessel(&[
        "--socket",
        path.to_str().unwrap(),
        "launch",
        "nope",
        "c1",
        "-l",
        "memory=256MiB",
    ]));
    assert_eq!(code, 1);
    assert_eq!(out, "Launching c1\n");
    assert_eq!(err, "Error: image 'nope' not found\n");
    let got = server.join().unwrap();
    assert_eq!(got[0].request_line, "POST /1.0/instances HTTP/1.1");
    let create: vessel_api::InstanceCreate = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(create.limits.memory, Some(256 << 20));
    assert!(create.start);
    assert_eq!(
        got[1].request_line,
        "GET /1.0/operations/op%201/wait?timeout=1 HTTP/1.1"
    );
    let _ = std::fs::remove_file(path);
}

#[test]
fn exec_passes_streams_and_exit_status_through() {
    let mut response =
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: vessel-stream/1\r\n\r\n"
            .to_vec();
    response.extend(stream::encode(FrameKind::Stdout, b"to stdout\n"));
    let mut rest = stream::encode(FrameKind::Stderr, b"to stderr\n");
    rest.extend(stream::encode(FrameKind::Exit, &7i32.to_be_bytes()));
    let (path, server) = fake_stream_daemon(vec![(response, rest)]);
    let mut child = vessel(&[
        "--socket",
        path.to_str().unwrap(),
        "exec",
        "c1",
        "--user",
        "1000:1000",
        "--",
        "cat",
    ])
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("spawn vessel");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"piped input")
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(out.stdout, b"to stdout\n");
    assert_eq!(out.stderr, b"to stderr\n");

    let got = server.join().unwrap();
    assert_eq!(got[0].request_line, "POST /1.0/instances/c1/exec HTTP/1.1");
    let req: vessel_api::ExecRequest = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(req.command, ["cat"]);
    assert!(!req.tty);
    assert_eq!((req.uid, req.gid), (Some(1000), Some(1000)));
    let mut sent = &got[0].after[..];
    let mut frames = Vec::new();
    while let Some(f) = stream::read_frame(&mut sent).unwrap() {
        frames.push(f);
    }
    assert_eq!(
        frames,
        vec![
            (FrameKind::Stdin, b"piped input".to_vec()),
            (FrameKind::CloseStdin, Vec::new()),
        ]
    );
    let _ = std::fs::remove_file(path);
}

#[test]
fn monitor_prints_streamed_events() {
    let events = [
        r#"{"kind":"lifecycle","timestamp":"T1","action":"instance-started","source":"/1.0/instances/c1"}"#,
        r#"{"kind":"lifecycle","timestamp":"T2","action":"instance-stopped","source":"/1.0/instances/c1"}"#,
    ];
    let mut response = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    // The first event split across two chunks, the second in one.
    let first = format!("{}\n", events[0]);
    let (a, b) = first.split_at(10);
    for chunk in [a.to_string(), b.to_string(), format!("{}\n", events[1])] {
        response.extend(format!("{:x}\r\n{chunk}\r\n", chunk.len()).into_bytes());
    }
    response.extend(b"0\r\n\r\n");
    let (path, server) = fake_daemon(vec![response.clone(), response]);
    let sock = path.to_str().unwrap();

    let (code, out, err) = run(&mut vessel(&["--socket", sock, "monitor"]));
    assert_eq!(code, 1);
    assert_eq!(
        out,
        "T1 lifecycle instance-started /1.0/instances/c1\n\
         T2 lifecycle instance-stopped /1.0/instances/c1\n"
    );
    assert_eq!(err, "Error: the daemon closed the event stream\n");

    let (_, out, _) = run(&mut vessel(&[
        "--socket", sock, "monitor", "--format", "json",
    ]));
    assert_eq!(out, format!("{}\n{}\n", events[0], events[1]));
    let got = server.join().unwrap();
    assert_eq!(got[0].request_line, "GET /1.0/events HTTP/1.1");
    let _ = std::fs::remove_file(path);
}

#[test]
fn several_names_report_each_failure() {
    let done = r#"{"id":"o2","description":"Stopping c2","status":"success","resources":[],
        "may_cancel":false,"created_at":"t","updated_at":"t"}"#;
    let (path, server) = fake_daemon(vec![
        json(404, r#"{"error":"instance 'c1' not found","code":404}"#),
        json(202, done),
    ]);
    let (code, out, err) = run(&mut vessel(&[
        "--socket",
        path.to_str().unwrap(),
        "stop",
        "c1",
        "c2",
        "--force",
        "--timeout",
        "5",
    ]));
    assert_eq!((code, out.as_str()), (1, ""));
    assert_eq!(err, "Error: c1: instance 'c1' not found\n");
    let got = server.join().unwrap();
    assert_eq!(got[1].request_line, "PUT /1.0/instances/c2/state HTTP/1.1");
    let change: vessel_api::StateChange = serde_json::from_slice(&got[1].body).unwrap();
    assert_eq!(change.action, vessel_api::StateAction::Stop);
    assert!(change.force);
    assert_eq!(change.timeout, Some(5));
    let _ = std::fs::remove_file(path);
}

#[test]
fn delete_force_and_file_pull_to_stdout() {
    let done = r#"{"id":"o3","description":"Deleting c1","status":"success","resources":[],
        "may_cancel":false,"created_at":"t","updated_at":"t"}"#;
    let (path, server) = fake_daemon(vec![
        json(202, done),
        b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nfile body".to_vec(),
    ]);
    let sock = path.to_str().unwrap();
    let (code, _, err) = run(&mut vessel(&["--socket", sock, "rm", "-f", "c1"]));
    assert_eq!((code, err.as_str()), (0, ""));
    let (code, out, _) = run(&mut vessel(&[
        "--socket",
        sock,
        "file",
        "pull",
        "c1/etc/a b",
        "-",
    ]));
    assert_eq!((code, out.as_str()), (0, "file body"));
    let got = server.join().unwrap();
    assert_eq!(
        got[0].request_line,
        "DELETE /1.0/instances/c1?force=1 HTTP/1.1"
    );
    assert_eq!(
        got[1].request_line,
        "GET /1.0/instances/c1/files?path=/etc/a%20b HTTP/1.1"
    );
    let _ = std::fs::remove_file(path);
}

#[test]
fn remote_prefixes_pick_the_daemon() {
    let done = r#"{"id":"o2","description":"Stopping c2","status":"success","resources":[],
        "may_cancel":false,"created_at":"t","updated_at":"t"}"#;
    let (path, server) = fake_daemon(vec![json(202, done), json(200, "[]")]);
    let sock = path.to_str().unwrap();
    let port = closed_port();
    let dir = config_dir(&prod_config(port, "local"));
    let with_config = |args: &[&str]| {
        let mut cmd = vessel(args);
        cmd.env("VESSEL_CONFIG_DIR", &dir);
        run(&mut cmd)
    };

    let (code, _, err) = with_config(&["--socket", sock, "stop", "local:c2", "--force"]);
    assert_eq!((code, err.as_str()), (0, ""));
    let (code, _, err) = with_config(&["--socket", sock, "list", "local:"]);
    assert_eq!((code, err.as_str()), (0, ""));
    let got = server.join().unwrap();
    assert_eq!(got[0].request_line, "PUT /1.0/instances/c2/state HTTP/1.1");
    assert_eq!(
        got[1].request_line,
        "GET /1.0/instances?recursion=1 HTTP/1.1"
    );

    let unreachable = format!(
        "Error: cannot reach the Vessel daemon of remote 'prod' at https://127.0.0.1:{port} \
         (Connection refused). Is it running, and listening there?\n"
    );
    for args in [
        &["start", "prod:c1"][..],
        &["list", "prod:"],
        &["--remote", "prod", "list"],
        &["info", "prod:"],
    ] {
        let (code, _, err) = with_config(args);
        assert_eq!((code, err.as_str()), (1, unreachable.as_str()), "{args:?}");
    }
    let (code, _, err) = with_config(&["start", "prod:c1", "local:c2"]);
    assert_eq!(code, 1);
    assert_eq!(
        err,
        "Error: one command goes to one remote, but 'prod:c1' names 'prod' and 'local:c2' \
         names 'local'\n"
    );
    let (code, _, err) = with_config(&["list", "nope"]);
    assert_eq!(code, 2);
    assert!(err.contains("expected a remote followed by ':'"), "{err}");
    let (code, _, err) = with_config(&["--remote", "nope", "list"]);
    assert_eq!(code, 1);
    assert!(
        err.starts_with("Error: no remote named 'nope' (remotes: local, prod)"),
        "{err}"
    );
    let _ = std::fs::remove_file(path);
}

#[test]
fn remote_commands_manage_the_configuration() {
    use std::os::unix::fs::PermissionsExt;

    let port = closed_port();
    let dir = config_dir(&prod_config(port, "local"));
    let file = dir.join("config.yml");
    let remote = |args: &[&str]| {
        let mut all = vec!["--socket", "/run/test.sock", "remote"];
        all.extend_from_slice(args);
        let mut cmd = vessel(&all);
        cmd.env("VESSEL_CONFIG_DIR", &dir);
        run(&mut cmd)
    };

    let (code, out, _) = remote(&["list", "--format", "json"]);
    assert_eq!(code, 0);
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rows[0]["name"], "local");
    assert_eq!(rows[0]["url"], "unix:///run/test.sock");
    assert_eq!(rows[0]["default"], true);
    assert_eq!(rows[1]["name"], "prod");
    assert_eq!(rows[1]["url"], format!("https://127.0.0.1:{port}"));
    assert_eq!(rows[1]["auth"], "token");
    assert!(!out.contains("s3cret"), "the token is never shown");
    let (code, out, _) = remote(&["list"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("| local (current) | unix:///run/test.sock"),
        "{out}"
    );

    let (code, _, _) = remote(&["switch", "prod"]);
    assert_eq!(code, 0);
    assert_eq!(remote(&["get-default"]).1, "prod\n");
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // Commands that name no remote now go to prod.
    let mut cmd = vessel(&["list"]);
    cmd.env("VESSEL_CONFIG_DIR", &dir);
    let (code, _, err) = run(&mut cmd);
    assert_eq!(code, 1);
    assert!(err.contains("remote 'prod' at https://127.0.0.1:"), "{err}");

    let before = std::fs::read_to_string(&file).unwrap();
    for (args, want) in [
        (
            &["remove", "prod"][..],
            "Error: 'prod' is the default remote",
        ),
        (
            &["remove", "local"],
            "Error: 'local' is this machine's daemon",
        ),
        (&["remove", "nope"], "Error: no remote named 'nope'"),
        (&["switch", "nope"], "Error: no remote named 'nope'"),
        (
            &["add", "prod", "https://h:8443"],
            "Error: there is already a remote named 'prod'",
        ),
        (
            &["add", "local", "https://h:8443"],
            "Error: 'local' is this machine's daemon",
        ),
        (
            &["add", "new", "http://h:8443"],
            "Error: invalid remote URL 'http://h:8443'",
        ),
        (
            &["add", "new", "h:8443"],
            "Error: invalid remote URL 'h:8443'",
        ),
    ] {
        let (code, _, err) = remote(args);
        assert_eq!(code, 1, "{args:?}");
        assert!(err.starts_with(want), "{args:?}: {err}");
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            before,
            "{args:?} changed it"
        );
    }
    let (code, _, err) = remote(&["add", "new", "https://127.0.0.1:1", "--client-cert", "x"]);
    assert_eq!(code, 2, "--client-cert needs --client-key: {err}");

    assert_eq!(remote(&["switch", "local"]).0, 0);
    assert_eq!(remote(&["remove", "prod"]).0, 0);
    let (_, out, _) = remote(&["list", "--format", "yaml"]);
    assert!(!out.contains("prod"), "{out}");
    assert_eq!(remote(&["get-default"]).1, "local\n");
}

#[test]
fn configuration_is_created_private() {
    use std::os::unix::fs::PermissionsExt;

    let dir = temp_path("config").join("vessel");
    let mut cmd = vessel(&["remote", "switch", "local"]);
    cmd.env("VESSEL_CONFIG_DIR", &dir);
    assert_eq!(run(&mut cmd).0, 0);
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("config.yml")), 0o600);
    // Without VESSEL_CONFIG_DIR, it is under $HOME.
    let home = temp_path("home");
    let mut cmd = vessel(&["remote", "switch", "local"]);
    cmd.env_remove("VESSEL_CONFIG_DIR").env("HOME", &home);
    assert_eq!(run(&mut cmd).0, 0);
    assert!(home.join(".config/vessel/config.yml").is_file());
}

#[test]
fn remote_help_has_examples() {
    let (code, out, _) = run(&mut vessel(&["remote", "--help"]));
    assert_eq!(code, 0);
    assert!(
        out.contains("vessel remote add prod https://10.0.0.5:8443 --token"),
        "{out}"
    );
    let (code, out, _) = run(&mut vessel(&["remote", "add", "--help"]));
    assert_eq!(code, 0);
    assert!(out.contains("--accept-certificate"), "{out}");
    assert!(out.contains("Trust") || out.contains("trust"), "{out}");
}

/// A daemon stand-in over TLS with a fresh self-signed certificate: the first connection is
/// the probe of `remote add` (a handshake only); each of the next ones gets one of
/// `responses`. Returns its URL, its certificate's fingerprint, and the request heads.
fn tls_daemon(responses: Vec<Vec<u8>>) -> (String, String, JoinHandle<Vec<String>>) {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    use std::sync::Arc;

    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let der = made.cert.der().to_vec();
    let fingerprint = vessel_tls::fingerprint(&der);
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![CertificateDer::from(der)],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(made.key_pair.serialize_der())),
    )
    .unwrap();
    let config = Arc::new(config);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        let mut heads = Vec::new();
        let accept = |listener: &std::net::TcpListener| {
            let (tcp, _) = listener.accept().unwrap();
            tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let conn = rustls::ServerConnection::new(config.clone()).unwrap();
            rustls::StreamOwned::new(conn, tcp)
        };
        let mut probe = accept(&listener);
        let _ = probe.read_to_end(&mut Vec::new());
        for response in responses {
            let mut tls = accept(&listener);
            let mut head = String::new();
            {
                let mut reader = BufReader::new(&mut tls);
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    head.push_str(&line);
                }
            }
            tls.write_all(&response).unwrap();
            tls.conn.send_close_notify();
            let _ = tls.flush();
            heads.push(head);
        }
        heads
    });
    (url, fingerprint, handle)
}

#[test]
fn remote_over_tls_from_add_to_list() {
    let body = r#"[{"name":"far","type":"container","status":"stopped","image":"0123456789abcdef",
        "privileged":false,"limits":{},"command":[],"environment":{},"created_at":"t"}]"#;
    let (url, fingerprint, server) = tls_daemon(vec![json(200, "{}"), json(200, body)]);
    let dir = temp_path("config");
    let with_config = |args: &[&str]| {
        let mut cmd = vessel(args);
        cmd.env("VESSEL_CONFIG_DIR", &dir);
        run(&mut cmd)
    };
    let (code, out, err) = with_config(&[
        "remote",
        "add",
        "far",
        &url,
        "--token",
        "s3cret",
        "--accept-certificate",
    ]);
    assert_eq!((code, err.as_str()), (0, ""), "{out}");
    assert!(
        out.starts_with(&format!("Certificate fingerprint: {fingerprint}\n")),
        "{out}"
    );
    let (code, out, err) = with_config(&["list", "far:"]);
    assert_eq!((code, err.as_str()), (0, ""));
    assert!(out.contains("| far  | container | STOPPED |"), "{out}");
    let heads = server.join().unwrap();
    assert!(
        heads[0].starts_with("GET /1.0 HTTP/1.1\r\n"),
        "{}",
        heads[0]
    );
    assert!(heads[1].starts_with("GET /1.0/instances?recursion=1 HTTP/1.1\r\n"));
    for head in &heads {
        assert!(
            head.to_ascii_lowercase()
                .contains("authorization: bearer s3cret\r\n"),
            "{head}"
        );
    }
    let text = std::fs::read_to_string(dir.join("config.yml")).unwrap();
    assert!(
        text.contains(&format!("fingerprint: {fingerprint}")),
        "{text}"
    );
}

#[test]
fn remote_add_without_a_terminal_asks_for_accept_certificate() {
    let (url, fingerprint, _server) = tls_daemon(Vec::new());
    let dir = temp_path("config");
    let mut cmd = vessel(&["remote", "add", "far", &url, "--token", "t"]);
    cmd.env("VESSEL_CONFIG_DIR", &dir);
    let (code, out, err) = run(&mut cmd);
    assert_eq!(code, 1);
    assert_eq!(out, format!("Certificate fingerprint: {fingerprint}\n"));
    assert!(err.contains("standard input is not a terminal"), "{err}");
    assert!(err.contains("--accept-certificate"), "{err}");
    assert!(!dir.join("config.yml").exists());
}
