//! A stand-in for the daemon in unit tests: a unix socket that replays canned responses.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// A request as the fake server received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Whatever the client sent after the request (frames of an upgraded connection).
    pub after: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Serves one canned response per connection, in order, then stops.
pub struct FakeServer {
    path: PathBuf,
    handle: Option<JoinHandle<Vec<Recorded>>>,
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A fresh socket path in the temporary directory.
pub fn temp_socket_path() -> PathBuf {
    std::env::temp_dir().join(format!(
        "vessel-test-{}-{}.sock",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    ))
}

impl FakeServer {
    pub fn start(responses: Vec<Vec<u8>>) -> Self {
        let path = temp_socket_path();
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).expect("bind the fake daemon's socket");
        let handle = std::thread::spawn(move || {
            let mut recorded = Vec::new();
            for response in responses {
                let Ok((stream, _)) = listener.accept() else {
                    break;
                };
                stream
                    .set_read_timeout(Some(Duration::from_secs(10)))
                    .expect("set a read timeout");
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut req = read_request(&mut reader);
                let mut writer = stream;
                let _ = writer.write_all(&response);
                let _ = writer.shutdown(Shutdown::Write);
                let _ = reader.read_to_end(&mut req.after);
                recorded.push(req);
            }
            recorded
        });
        Self {
            path,
            handle: Some(handle),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits for every canned response to be served and returns the requests.
    pub fn finish(mut self) -> Vec<Recorded> {
        self.handle
            .take()
            .expect("finish is called once")
            .join()
            .expect("fake daemon thread")
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn read_request<R: BufRead>(r: &mut R) -> Recorded {
    let mut line = String::new();
    r.read_line(&mut line).expect("request line");
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line).expect("header line");
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let mut rec = Recorded {
        method,
        target,
        headers,
        body: Vec::new(),
        after: Vec::new(),
    };
    let len: usize = rec
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    rec.body = vec![0; len];
    r.read_exact(&mut rec.body).expect("request body");
    rec
}

/// A complete response with a JSON body.
pub fn json_response(status: u16, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// An operation as JSON with the given status and progress.
pub fn operation_json(id: &str, status: &str, progress: Option<u8>, error: Option<&str>) -> String {
    let mut op = serde_json::json!({
        "id": id,
        "description": "Creating instance c1",
        "status": status,
        "resources": ["/1.0/instances/c1"],
        "may_cancel": true,
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:01Z",
    });
    if let Some(p) = progress {
        op["progress"] = p.into();
        op["stage"] = "unpacking".into();
    }
    if let Some(e) = error {
        op["error"] = e.into();
    }
    op.to_string()
}
