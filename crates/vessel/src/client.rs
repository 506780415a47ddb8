//! The daemon's REST API over its unix socket: one request per connection.

use std::fmt;
use std::io::{self, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;
use vessel_api::{stream::PROTOCOL, ErrorResponse};

use crate::http::{self, Body, ResponseHead};

/// Largest error body read from a failed response.
const MAX_ERROR_BODY: u64 = 1 << 20;

/// A non-2xx answer from the daemon, with its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status code.
    pub status: u16,
    /// The daemon's message, or a description of the unexpected answer.
    pub message: String,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ApiError {}

/// The daemon's socket could not be connected to.
#[derive(Debug)]
pub struct Unreachable {
    socket: PathBuf,
    source: io::Error,
}

impl fmt::Display for Unreachable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let reason = match self.source.raw_os_error() {
            Some(code) => nix::errno::Errno::from_raw(code).desc().to_string(),
            None => self.source.to_string(),
        };
        let socket = self.socket.display();
        match self.source.kind() {
            io::ErrorKind::PermissionDenied => write!(
                f,
                "cannot reach the Vessel daemon at {socket} ({reason}). \
                 Run vessel as root, or as a user allowed to open the socket"
            ),
            _ => write!(
                f,
                "cannot reach the Vessel daemon at {socket} ({reason}). Is it running? \
                 Start it with: vesseld --root-dir /var/lib/vessel"
            ),
        }
    }
}

impl std::error::Error for Unreachable {}

/// What a request carries after its head.
pub enum RequestBody<'a> {
    /// Nothing.
    Empty,
    /// A JSON document.
    Json(Vec<u8>),
    /// Raw bytes of a known length, streamed from a reader.
    Stream(&'a mut dyn Read, u64),
}

/// A response whose status was checked and whose body is still to be read.
pub struct Response {
    /// Status line and headers.
    pub head: ResponseHead,
    /// The body, decoded from its framing.
    pub body: Body<BufReader<UnixStream>>,
}

/// A connection switched to the framed stream protocol.
pub struct Upgraded {
    /// Frames from the daemon (may start with bytes already buffered after the 101 head).
    pub reader: BufReader<UnixStream>,
    /// Frames to the daemon.
    pub writer: UnixStream,
}

/// A client of one daemon.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
}

impl Client {
    /// A client of the daemon listening on `socket`.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
        }
    }

    fn connect(&self) -> Result<UnixStream> {
        UnixStream::connect(&self.socket).map_err(|source| {
            Unreachable {
                socket: self.socket.clone(),
                source,
            }
            .into()
        })
    }

    /// Sends one request and reads the response head; the body is left unread.
    fn exchange(
        &self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: RequestBody<'_>,
    ) -> Result<(ResponseHead, BufReader<UnixStream>)> {
        let mut stream = self.connect()?;
        let mut headers = headers.to_vec();
        let len = match &body {
            RequestBody::Empty => None,
            RequestBody::Json(b) => {
                headers.push(("Content-Type", "application/json"));
                Some(b.len() as u64)
            }
            RequestBody::Stream(_, n) => {
                headers.push(("Content-Type", "application/octet-stream"));
                Some(*n)
            }
        };
        let head = http::request_head(method, target, &headers, len);
        let sent = write_request(&mut stream, head.as_bytes(), body);
        let reader_stream = stream
            .try_clone()
            .context("cannot duplicate the daemon connection")?;
        let mut reader = BufReader::new(reader_stream);
        match http::read_head(&mut reader) {
            Ok(head) => Ok((head, reader)),
            // A daemon may answer (an error) and close before reading the whole body: the
            // answer matters more than the failed write.
            Err(read_err) => match sent {
                Err(write_err) => {
                    Err(write_err).context(format!("cannot send {method} {target} to the daemon"))
                }
                Ok(()) => Err(read_err).context(format!(
                    "cannot read the daemon's answer to {method} {target}"
                )),
            },
        }
    }

    /// Sends a request and returns the response when its status is 2xx, the daemon's error
    /// otherwise.
    pub fn request(&self, method: &str, target: &str, body: RequestBody<'_>) -> Result<Response> {
        let (head, reader) = self.exchange(method, target, &[("Connection", "close")], body)?;
        let framing = head.framing()?;
        let body = Body::new(reader, framing);
        if !head.is_success() {
            return Err(error_from_response(&head, body).into());
        }
        Ok(Response { head, body })
    }

    /// `GET` a JSON document.
    pub fn get<T: DeserializeOwned>(&self, target: &str) -> Result<T> {
        self.request("GET", target, RequestBody::Empty)?.json()
    }

    /// Sends a JSON body and reads a JSON answer.
    pub fn send<B: Serialize, T: DeserializeOwned>(
        &self,
        method: &str,
        target: &str,
        body: &B,
    ) -> Result<T> {
        let bytes = serde_json::to_vec(body).context("cannot encode the request")?;
        self.request(method, target, RequestBody::Json(bytes))?
            .json()
    }

    /// Sends a request without a body and reads a JSON answer.
    pub fn call<T: DeserializeOwned>(&self, method: &str, target: &str) -> Result<T> {
        self.request(method, target, RequestBody::Empty)?.json()
    }

    /// Asks for an upgrade to the framed stream protocol (exec, console).
    pub fn upgrade<B: Serialize>(
        &self,
        method: &str,
        target: &str,
        body: Option<&B>,
    ) -> Result<Upgraded> {
        self.upgrade_to(method, target, body, PROTOCOL)
    }

    /// [`Client::upgrade`] to another protocol (e.g. a VM's raw VNC stream).
    pub fn upgrade_to<B: Serialize>(
        &self,
        method: &str,
        target: &str,
        body: Option<&B>,
        protocol: &str,
    ) -> Result<Upgraded> {
        let body = match body {
            Some(b) => {
                RequestBody::Json(serde_json::to_vec(b).context("cannot encode the request")?)
            }
            None => RequestBody::Empty,
        };
        let (head, reader) = self.exchange(
            method,
            target,
            &[("Connection", "Upgrade"), ("Upgrade", protocol)],
            body,
        )?;
        if head.status != 101 {
            let framing = head.framing()?;
            let status = head.status;
            let body = Body::new(reader, framing);
            if !head.is_success() {
                return Err(error_from_response(&head, body).into());
            }
            bail!("the daemon answered {status} instead of switching to {protocol}");
        }
        let writer = reader
            .get_ref()
            .try_clone()
            .context("cannot duplicate the daemon connection")?;
        Ok(Upgraded { reader, writer })
    }
}

impl Response {
    /// Reads the whole body as a JSON document of type `T`.
    pub fn json<T: DeserializeOwned>(mut self) -> Result<T> {
        let mut buf = Vec::new();
        self.body
            .read_to_end(&mut buf)
            .context("cannot read the daemon's answer")?;
        serde_json::from_slice(&buf).with_context(|| {
            format!(
                "the daemon's answer is not the expected JSON: {}",
                snippet(&buf)
            )
        })
    }
}

fn write_request(stream: &mut UnixStream, head: &[u8], body: RequestBody<'_>) -> io::Result<()> {
    stream.write_all(head)?;
    match body {
        RequestBody::Empty => {}
        RequestBody::Json(b) => stream.write_all(&b)?,
        RequestBody::Stream(r, n) => {
            let copied = io::copy(&mut r.take(n), stream)?;
            if copied != n {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("the input ended after {copied} of {n} bytes"),
                ));
            }
        }
    }
    stream.flush()
}

/// First 200 characters of a body, for messages.
fn snippet(buf: &[u8]) -> String {
    let text = String::from_utf8_lossy(buf);
    let text = text.trim();
    if text.is_empty() {
        return "(empty)".into();
    }
    let mut s: String = text.chars().take(200).collect();
    if s.len() < text.len() {
        s.push_str("...");
    }
    s
}

/// Turns a non-2xx response into an [`ApiError`], preferring the daemon's own message.
pub fn error_from_response<R: Read>(head: &ResponseHead, body: R) -> ApiError {
    let mut buf = Vec::new();
    let read = body.take(MAX_ERROR_BODY).read_to_end(&mut buf);
    let message = match serde_json::from_slice::<ErrorResponse>(&buf) {
        Ok(e) if !e.error.is_empty() => e.error,
        _ => match read {
            Ok(_) => format!(
                "the daemon answered {} {}: {}",
                head.status,
                head.reason,
                snippet(&buf)
            ),
            Err(e) => format!(
                "the daemon answered {} {} (and the body could not be read: {e})",
                head.status, head.reason
            ),
        },
    };
    ApiError {
        status: head.status,
        message,
    }
}

#[cfg(test)]
mod tests {
    use vessel_api::ServerInfo;

    use super::*;
    use crate::testutil::{json_response, FakeServer};

    #[test]
    fn json_answer_and_request_shape() {
        let info = serde_json::json!({
            "api_version": "1.0", "server_version": "0.1.0", "pid": 42,
            "root_dir": "/var/lib/vessel", "store": "sqlite",
            "host": {"kernel": "6.1", "cgroup_version": "v2", "user_namespaces": true}
        });
        let server = FakeServer::start(vec![json_response(200, &info.to_string())]);
        let got: ServerInfo = Client::new(server.path()).get("/1.0").unwrap();
        assert_eq!(got.pid, 42);
        let requests = server.finish();
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0].method, "GET");
        assert_eq!(requests[0].target, "/1.0");
    }

    #[test]
    fn error_answer_gives_daemon_message() {
        let server = FakeServer::start(vec![json_response(
            404,
            r#"{"error":"instance 'c9' not found","code":404}"#,
        )]);
        let err = Client::new(server.path())
            .get::<serde_json::Value>("/1.0/instances/c9")
            .unwrap_err();
        let api = err.downcast_ref::<ApiError>().unwrap();
        assert_eq!(api.status, 404);
        assert_eq!(err.to_string(), "instance 'c9' not found");
    }

    #[test]
    fn error_answer_without_json_is_described() {
        let server = FakeServer::start(vec![
            b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 4\r\n\r\noops".to_vec(),
        ]);
        let err = Client::new(server.path())
            .get::<serde_json::Value>("/1.0")
            .unwrap_err();
        assert_eq!(err.to_string(), "the daemon answered 502 Bad Gateway: oops");
    }

    #[test]
    fn chunked_json_answer() {
        let server = FakeServer::start(vec![
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n[1,\r\n2\r\n2]\r\n0\r\n\r\n"
                .to_vec(),
        ]);
        let got: Vec<u32> = Client::new(server.path()).get("/1.0/x").unwrap();
        assert_eq!(got, vec![1, 2]);
    }

    #[test]
    fn json_body_is_sent_with_length() {
        let server = FakeServer::start(vec![json_response(200, "{}")]);
        let _: serde_json::Value = Client::new(server.path())
            .send("PUT", "/1.0/a", &serde_json::json!({"k": "v"}))
            .unwrap();
        let req = &server.finish()[0];
        assert_eq!(req.header("content-type"), Some("application/json"));
        assert_eq!(req.body, br#"{"k":"v"}"#);
    }

    #[test]
    fn missing_socket_is_unreachable() {
        let err = Client::new("/nonexistent/vessel-test.sock")
            .get::<serde_json::Value>("/1.0")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot reach the Vessel daemon at /nonexistent/vessel-test.sock \
             (No such file or directory). Is it running? \
             Start it with: vesseld --root-dir /var/lib/vessel"
        );
    }
}
