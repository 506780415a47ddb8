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

fn temp_path(ext: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "vessel-cli-test-{}-{}.{ext}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    ))
}

fn vessel(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vessel"));
    cmd.args(args)
        .env_remove("VESSEL_SOCKET")
        .stdin(Stdio::null());
    cmd
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
