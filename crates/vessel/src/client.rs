//! The daemon's REST API, over its unix socket or over HTTPS to a remote: one request per
//! connection, carried by hyper (see `transport`); the commands use this synchronous API.

use std::fmt;
use std::io::{self, BufReader, Read};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use vessel_api::{stream::PROTOCOL, ErrorResponse};

use crate::tls::{self, ClientIdentity};
use crate::transport::{self, BodyReader, Https, OutBody, Target};
pub use crate::transport::{CertificateChanged, Endpoint, Unreachable};

/// Largest error body read from a failed response.
const MAX_ERROR_BODY: u64 = 1 << 20;

/// Bytes of an upload read at a time.
const UPLOAD_CHUNK: usize = 64 * 1024;

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

/// What a request carries after its head.
pub enum RequestBody<'a> {
    /// Nothing.
    Empty,
    /// A JSON document.
    Json(Vec<u8>),
    /// Raw bytes of a known length, streamed from a reader.
    Stream(&'a mut dyn Read, u64),
}

/// Status line and headers of a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// Status code.
    pub status: u16,
    /// Reason phrase.
    pub reason: String,
    /// Headers in arrival order.
    pub headers: Vec<(String, String)>,
}

impl ResponseHead {
    fn of(parts: &hyper::http::response::Parts) -> Self {
        let reason = match parts.extensions.get::<hyper::ext::ReasonPhrase>() {
            Some(r) => String::from_utf8_lossy(r.as_bytes()).into_owned(),
            None => parts.status.canonical_reason().unwrap_or("").to_string(),
        };
        Self {
            status: parts.status.as_u16(),
            reason,
            headers: parts
                .headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
        }
    }

    /// Value of the first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// A response whose status was checked and whose body is still to be read.
pub struct Response {
    /// Status line and headers.
    pub head: ResponseHead,
    /// The body, read as it arrives.
    pub body: BodyReader,
}

/// A connection switched to the framed stream protocol (or another upgraded protocol).
/// Both are ends of a local socket pair that the client's I/O thread bridges to the daemon's
/// connection: shutting the writer down reaches the daemon as the end of its input, and the
/// daemon's end of the stream reaches the reader as end of file.
pub struct Upgraded {
    /// Bytes from the daemon.
    pub reader: BufReader<UnixStream>,
    /// Bytes to the daemon.
    pub writer: UnixStream,
}

/// A client of one daemon.
#[derive(Debug, Clone)]
pub struct Client {
    target: Target,
    /// The project every request is about (`?project=`), if one was named.
    project: Option<String>,
}

impl Client {
    /// A client of the daemon listening on `socket`.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            target: Target::Socket(socket.into()),
            project: None,
        }
    }

    /// A client of a remote daemon at `endpoint` whose certificate has `fingerprint` (SHA-256
    /// of its DER, 64 lowercase hex characters): any other certificate is refused before a
    /// request is sent. `token` goes with every request as a bearer token; `identity` is a
    /// client certificate for mutual TLS. `remote` names it in messages.
    pub fn https(
        remote: Option<&str>,
        endpoint: Endpoint,
        fingerprint: &str,
        token: Option<&str>,
        identity: Option<&ClientIdentity>,
    ) -> Result<Self> {
        if let Some(t) = token {
            if t.is_empty() || HeaderValue::from_str(&format!("Bearer {t}")).is_err() {
                bail!("the token is empty or has characters an HTTP header cannot carry");
            }
        }
        let tls = tls::pinned_config(fingerprint, identity)?;
        Ok(Self {
            project: None,
            target: Target::Https(Arc::new(Https {
                remote: remote.map(str::to_string),
                endpoint,
                token: token.map(str::to_string),
                tls,
            })),
        })
    }

    /// The same client, with every request about `project` (none: the identity's own).
    pub fn in_project(mut self, project: Option<String>) -> Self {
        self.project = project;
        self
    }

    /// The project requests are about, if one was named.
    pub fn project(&self) -> Option<&str> {
        self.project.as_deref()
    }

    /// Sends one request and returns the response, its body left unread. A streamed upload
    /// is fed from this thread while the runtime sends it; when the daemon answers before
    /// taking all of it, the rest of the upload is left pending (its sender comes back with
    /// the response) so that the answer can still be read.
    fn exchange(
        &self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: RequestBody<'_>,
    ) -> Result<(hyper::Response<Incoming>, Option<UploadSender>)> {
        let verb = hyper::Method::from_bytes(method.as_bytes())
            .with_context(|| format!("invalid method '{method}'"))?;
        let scoped;
        let target = match &self.project {
            Some(p) => {
                let sep = if target.contains('?') { '&' } else { '?' };
                scoped = format!(
                    "{target}{sep}{}={}",
                    vessel_api::PROJECT_QUERY,
                    crate::encode::percent_encode(p)
                );
                scoped.as_str()
            }
            None => target,
        };
        let mut builder = hyper::Request::builder()
            .method(verb)
            .uri(target)
            .header(header::HOST, self.target.host())
            .header(
                header::USER_AGENT,
                concat!("vessel/", env!("CARGO_PKG_VERSION")),
            );
        if let Target::Https(h) = &self.target {
            if let Some(token) = &h.token {
                builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
            }
        }
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        let (out, upload) = match body {
            RequestBody::Empty => (OutBody::Full(None), None),
            RequestBody::Json(b) => {
                builder = builder.header(header::CONTENT_TYPE, "application/json");
                (OutBody::Full(Some(Bytes::from(b))), None)
            }
            RequestBody::Stream(reader, len) => {
                builder = builder.header(header::CONTENT_TYPE, "application/octet-stream");
                let (out, tx) = OutBody::channel(len);
                (out, Some((reader, len, tx)))
            }
        };
        let request = builder
            .body(out)
            .with_context(|| format!("invalid request {method} {target}"))?;
        let (answer_tx, mut answer_rx) = oneshot::channel();
        let to = self.target.clone();
        transport::runtime()?.spawn(async move {
            let _ = answer_tx.send(transport::send(to, request).await);
        });
        let mut pending_upload = None;
        let mut input_error = None;
        let early = match upload {
            None => None,
            Some((reader, len, tx)) => match pump_upload(reader, len, &tx, &mut answer_rx)? {
                Pumped::Answered(answer) => {
                    pending_upload = Some(tx);
                    Some(answer)
                }
                Pumped::InputFailed(e) => {
                    input_error = Some(e);
                    None
                }
                Pumped::Sent | Pumped::NotWanted => None,
            },
        };
        let answer = match early {
            Some(answer) => answer,
            None => answer_rx
                .blocking_recv()
                .map_err(|_| anyhow!("the I/O runtime dropped {method} {target}"))?,
        };
        match (answer, input_error) {
            (Ok(response), _) => Ok((response, pending_upload)),
            // The input failing explains a failed request better, unless the daemon was not
            // even reached.
            (Err(e), Some(input)) if !e.is::<Unreachable>() && !e.is::<CertificateChanged>() => {
                Err(input).context(format!("cannot send {method} {target} to the daemon"))
            }
            (Err(e), _) => Err(e),
        }
    }

    /// Sends a request and returns the response when its status is 2xx, the daemon's error
    /// otherwise.
    pub fn request(&self, method: &str, target: &str, body: RequestBody<'_>) -> Result<Response> {
        let (response, pending_upload) =
            self.exchange(method, target, &[("connection", "close")], body)?;
        let (head, mut body) = split(response)?;
        body.hold(pending_upload);
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
        let (response, _) = self.exchange(
            method,
            target,
            &[("connection", "Upgrade"), ("upgrade", protocol)],
            body,
        )?;
        let status = response.status().as_u16();
        if status != 101 {
            let (head, body) = split(response)?;
            if !head.is_success() {
                return Err(error_from_response(&head, body).into());
            }
            bail!("the daemon answered {status} instead of switching to {protocol}");
        }
        let stream = transport::block_on(transport::bridge_upgrade(response))?;
        let writer = stream
            .try_clone()
            .context("cannot duplicate the daemon connection")?;
        Ok(Upgraded {
            reader: BufReader::new(stream),
            writer,
        })
    }
}

/// The head of a response, and its body to be read as it arrives.
fn split(response: hyper::Response<Incoming>) -> Result<(ResponseHead, BodyReader)> {
    let (parts, body) = response.into_parts();
    Ok((ResponseHead::of(&parts), BodyReader::new(body)?))
}

/// Feeds a streamed upload to its request body.
type UploadSender = mpsc::Sender<io::Result<Bytes>>;

/// The daemon's answer to a request, from the runtime.
type Answer = Result<hyper::Response<Incoming>>;

/// How feeding an upload ended.
enum Pumped {
    /// All of it went.
    Sent,
    /// The answer came first.
    Answered(Answer),
    /// The body is no longer wanted (the request failed: its answer says why).
    NotWanted,
    /// The input failed; the request was aborted.
    InputFailed(io::Error),
}

/// Feeds `len` bytes of `reader` to a request body, a chunk at a time, until all went, the
/// daemon answered, or the body is no longer wanted.
fn pump_upload(
    reader: &mut dyn Read,
    len: u64,
    tx: &UploadSender,
    answer: &mut oneshot::Receiver<Answer>,
) -> Result<Pumped> {
    let handle = transport::runtime()?;
    // Sends one chunk (or error), unless the answer comes first.
    let mut send = |item: io::Result<Bytes>| -> Option<Pumped> {
        handle.block_on(async {
            tokio::select! {
                biased;
                answered = &mut *answer => Some(Pumped::Answered(answered.unwrap_or_else(|_| {
                    Err(anyhow!("the I/O runtime dropped the request"))
                }))),
                sent = tx.send(item) => sent.is_err().then_some(Pumped::NotWanted),
            }
        })
    };
    let mut left = len;
    while left > 0 {
        let size = usize::try_from(left)
            .unwrap_or(usize::MAX)
            .min(UPLOAD_CHUNK);
        let mut buf = vec![0u8; size];
        let failure = match reader.read(&mut buf) {
            Ok(0) => io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the input ended after {} of {len} bytes", len - left),
            ),
            Ok(n) => {
                buf.truncate(n);
                left -= n as u64;
                match send(Ok(Bytes::from(buf))) {
                    Some(end) => return Ok(end),
                    None => continue,
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => e,
        };
        // The request must not end as if complete: abort it with the error.
        let aborted = io::Error::new(failure.kind(), failure.to_string());
        return Ok(match send(Err(aborted)) {
            Some(Pumped::Answered(answer)) => Pumped::Answered(answer),
            _ => Pumped::InputFailed(failure),
        });
    }
    Ok(Pumped::Sent)
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

    // The same scenarios over the unix socket and over TLS.

    use std::io::{BufRead, Write};
    use std::net::Shutdown;
    use std::sync::mpsc;
    use std::time::Duration;

    use vessel_api::stream::{self, FrameKind};

    use crate::testutil::{answer, read_request, ScriptServer, TestIdentity};

    fn start<T: Send + 'static>(
        tls: bool,
        script: impl FnOnce(UnixStream) -> T + Send + 'static,
    ) -> ScriptServer<T> {
        if tls {
            ScriptServer::tls(&TestIdentity::new(), script)
        } else {
            ScriptServer::unix(script)
        }
    }

    fn json_get(tls: bool) {
        let server = start(tls, answer(json_response(200, r#"{"a":1}"#)));
        let got: serde_json::Value = server.client(Some("s3cret")).get("/1.0?x=1").unwrap();
        assert_eq!(got, serde_json::json!({"a": 1}));
        let req = server.finish().result.unwrap();
        assert_eq!(
            (req.method.as_str(), req.target.as_str()),
            ("GET", "/1.0?x=1")
        );
        assert!(req.header("user-agent").unwrap().starts_with("vessel/"));
        if tls {
            assert_eq!(req.header("authorization"), Some("Bearer s3cret"));
            assert!(req.header("host").unwrap().starts_with("127.0.0.1:"));
        } else {
            // The token belongs to remotes; the socket's permissions are its access control.
            assert_eq!(req.header("authorization"), None);
            assert_eq!(req.header("host"), Some("vessel"));
        }
    }

    #[test]
    fn json_get_over_the_socket() {
        json_get(false);
    }

    #[test]
    fn json_get_over_tls_with_the_pinned_certificate_and_token() {
        json_get(true);
    }

    #[test]
    fn tls_error_answer_gives_the_daemon_message() {
        let server = start(
            true,
            answer(json_response(
                401,
                r#"{"error":"missing or bad credentials","code":401}"#,
            )),
        );
        let err = server
            .client(None)
            .get::<serde_json::Value>("/1.0")
            .unwrap_err();
        assert_eq!(err.downcast_ref::<ApiError>().unwrap().status, 401);
        assert_eq!(err.to_string(), "missing or bad credentials");
        assert_eq!(
            server.finish().result.unwrap().header("authorization"),
            None
        );
    }

    #[test]
    fn another_certificate_is_refused_before_any_request() {
        let server = start(true, answer(json_response(200, "{}")));
        let pinned = TestIdentity::new().fingerprint;
        let err = server
            .client_with(Some("s3cret"), Some(&pinned), None)
            .get::<serde_json::Value>("/1.0")
            .unwrap_err();
        assert!(err.is::<CertificateChanged>(), "{err:#}");
        let msg = err.to_string();
        let served = server.finish();
        let presented = served.result.as_ref().map(|_| ()).unwrap_err();
        assert!(!presented.is_empty(), "the server saw the handshake fail");
        assert!(msg.contains("changed since it was trusted"), "{msg}");
        assert!(msg.contains(&pinned), "{msg}");
        assert!(msg.contains("vessel remote remove test"), "{msg}");
        assert!(
            msg.contains("vessel remote add test https://127.0.0.1:"),
            "{msg}"
        );
        // The presented fingerprint is the server's (64 hex characters, not the pin).
        let words: Vec<&str> = msg
            .split(|c: char| !c.is_ascii_hexdigit())
            .filter(|w| w.len() == 64)
            .collect();
        assert_eq!(words.len(), 2, "{msg}");
        assert!(words.contains(&pinned.as_str()));
        assert!(words.iter().any(|w| *w != pinned));
    }

    #[test]
    fn client_certificate_is_presented() {
        let id = TestIdentity::new();
        let files = id.write_files();
        let server = start(true, answer(json_response(200, "{}")));
        let _: serde_json::Value = server
            .client_with(None, None, Some(&files))
            .get("/1.0")
            .unwrap();
        assert_eq!(server.finish().client_fingerprint, Some(id.fingerprint));
    }

    #[test]
    fn fingerprint_of_a_server_is_fetched() {
        let id = TestIdentity::new();
        let server = ScriptServer::tls(&id, |_stream| ());
        let endpoint = Endpoint::parse(&server.url()).unwrap();
        let got = transport::fetch_fingerprint(&endpoint, None).unwrap();
        assert_eq!(got, id.fingerprint);
        assert!(server.finish().result.is_ok());
    }

    #[test]
    fn unreachable_remote_is_explained() {
        // A port nothing listens on: bound, then closed.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let endpoint = Endpoint {
            host: "127.0.0.1".into(),
            port,
        };
        let client = Client::https(Some("far"), endpoint, &"a".repeat(64), None, None).unwrap();
        let err = client.get::<serde_json::Value>("/1.0").unwrap_err();
        assert!(err.is::<Unreachable>());
        assert_eq!(
            err.to_string(),
            format!(
                "cannot reach the Vessel daemon of remote 'far' at https://127.0.0.1:{port} \
                 (Connection refused). Is it running, and listening there?"
            )
        );
    }

    fn upgrade_carries_frames_both_ways_and_eof(tls: bool) {
        let server = start(tls, |stream| {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let req = read_request(&mut reader);
            let mut writer = stream;
            let mut first =
                b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: vessel-stream/1\r\n\r\n"
                    .to_vec();
            first.extend(stream::encode(FrameKind::Stdout, b"hello"));
            writer.write_all(&first).unwrap();
            let mut got = Vec::new();
            while let Some((kind, payload)) = stream::read_frame(&mut reader).unwrap() {
                got.push((kind, payload));
                if kind == FrameKind::CloseStdin {
                    break;
                }
            }
            writer
                .write_all(&stream::encode(FrameKind::Exit, &7i32.to_be_bytes()))
                .unwrap();
            // The end of the daemon's side must reach the client as end of file.
            writer.shutdown(Shutdown::Write).unwrap();
            let mut rest = Vec::new();
            reader.read_to_end(&mut rest).unwrap();
            (req, got, rest)
        });
        let Upgraded {
            mut reader,
            mut writer,
        } = server
            .client(Some("tok"))
            .upgrade(
                "POST",
                "/1.0/instances/c1/exec",
                Some(&serde_json::json!({"k": 1})),
            )
            .unwrap();
        // A missing end of file fails the test instead of hanging it.
        reader
            .get_ref()
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let first = stream::read_frame(&mut reader).unwrap().unwrap();
        assert_eq!(first, (FrameKind::Stdout, b"hello".to_vec()));
        stream::write_frame(&mut writer, FrameKind::Stdin, b"typed").unwrap();
        stream::write_frame(&mut writer, FrameKind::CloseStdin, b"").unwrap();
        let exit = stream::read_frame(&mut reader).unwrap().unwrap();
        assert_eq!(exit, (FrameKind::Exit, 7i32.to_be_bytes().to_vec()));
        assert_eq!(
            stream::read_frame(&mut reader).unwrap(),
            None,
            "end of file"
        );
        writer.write_all(b"tail").unwrap();
        writer.shutdown(Shutdown::Write).unwrap();

        let (req, got, rest) = server.finish().result.unwrap();
        assert_eq!(req.method, "POST");
        assert_eq!(req.header("upgrade"), Some("vessel-stream/1"));
        assert_eq!(req.body, br#"{"k":1}"#);
        assert_eq!(
            got,
            vec![
                (FrameKind::Stdin, b"typed".to_vec()),
                (FrameKind::CloseStdin, Vec::new())
            ]
        );
        // The client's half-close reached the daemon after its last bytes.
        assert_eq!(rest, b"tail");
    }

    #[test]
    fn upgrade_over_the_socket() {
        upgrade_carries_frames_both_ways_and_eof(false);
    }

    #[test]
    fn upgrade_over_tls() {
        upgrade_carries_frames_both_ways_and_eof(true);
    }

    /// The server sends a first line, then waits (at most 10 s) for the test to say the client
    /// read it before sending the rest: a client that buffers the whole body fails.
    fn streamed_body_is_readable_before_it_ends(tls: bool) {
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let server = start(tls, move |stream| {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            read_request(&mut reader);
            let mut writer = stream;
            writer
                .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nfirst\n\r\n")
                .unwrap();
            let released = release_rx.recv_timeout(Duration::from_secs(10)).is_ok();
            writer.write_all(b"7\r\nsecond\n\r\n0\r\n\r\n").unwrap();
            writer.shutdown(Shutdown::Write).unwrap();
            released
        });
        let resp = server
            .client(None)
            .request("GET", "/1.0/events", RequestBody::Empty)
            .unwrap();
        let mut lines = BufReader::new(resp.body);
        let mut line = String::new();
        lines.read_line(&mut line).unwrap();
        assert_eq!(line, "first\n");
        let _ = release_tx.send(());
        line.clear();
        lines.read_line(&mut line).unwrap();
        assert_eq!(line, "second\n");
        line.clear();
        assert_eq!(lines.read_line(&mut line).unwrap(), 0);
        assert!(
            server.finish().result.unwrap(),
            "the first line was only readable once the body ended"
        );
    }

    #[test]
    fn streamed_body_over_the_socket() {
        streamed_body_is_readable_before_it_ends(false);
    }

    #[test]
    fn streamed_body_over_tls() {
        streamed_body_is_readable_before_it_ends(true);
    }

    /// Yields a pattern in uneven pieces, as a file or a pipe might.
    struct Pattern {
        left: usize,
        at: usize,
    }

    impl Read for Pattern {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.left).min(7919);
            for b in &mut buf[..n] {
                *b = (self.at % 251) as u8;
                self.at += 1;
            }
            self.left -= n;
            Ok(n)
        }
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    fn streamed_upload_arrives_whole(tls: bool) {
        const LEN: usize = 3 * 1024 * 1024 + 17;
        let server = start(tls, answer(json_response(200, "{}")));
        let mut input = Pattern { left: LEN, at: 0 };
        let _: serde_json::Value = server
            .client(None)
            .request(
                "POST",
                "/1.0/images",
                RequestBody::Stream(&mut input, LEN as u64),
            )
            .unwrap()
            .json()
            .unwrap();
        let req = server.finish().result.unwrap();
        assert_eq!(req.header("content-length"), Some(LEN.to_string().as_str()));
        assert_eq!(req.header("content-type"), Some("application/octet-stream"));
        assert!(req.body == pattern(LEN), "the upload arrived altered");
    }

    #[test]
    fn streamed_upload_over_the_socket() {
        streamed_upload_arrives_whole(false);
    }

    #[test]
    fn streamed_upload_over_tls() {
        streamed_upload_arrives_whole(true);
    }

    /// The daemon refuses an upload after its head, without reading the body, and closes:
    /// its answer is what the user must see, not the failed write.
    fn early_answer_to_an_upload_wins(tls: bool) {
        const LEN: usize = 8 * 1024 * 1024;
        let server = start(tls, |stream| {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap() > 2 {
                line.clear();
            }
            let mut writer = stream;
            writer
                .write_all(&json_response(
                    413,
                    r#"{"error":"the image is larger than the pool","code":413}"#,
                ))
                .unwrap();
            let _ = writer.shutdown(Shutdown::Both);
        });
        let mut input = Pattern { left: LEN, at: 0 };
        let err = server
            .client(None)
            .request(
                "POST",
                "/1.0/images",
                RequestBody::Stream(&mut input, LEN as u64),
            )
            .err()
            .unwrap();
        assert_eq!(format!("{err:#}"), "the image is larger than the pool");
        server.finish();
    }

    #[test]
    fn early_answer_to_an_upload_over_the_socket() {
        early_answer_to_an_upload_wins(false);
    }

    #[test]
    fn early_answer_to_an_upload_over_tls() {
        early_answer_to_an_upload_wins(true);
    }

    /// The daemon answers an upload early and neither reads the rest nor closes: the answer
    /// still comes through, without waiting for the connection's end.
    fn early_answer_without_close(tls: bool) {
        const LEN: usize = 64 * 1024 * 1024;
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let server = start(tls, move |stream| {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap() > 2 {
                line.clear();
            }
            let mut writer = stream;
            writer
                .write_all(&json_response(
                    409,
                    r#"{"error":"an image with that alias exists","code":409}"#,
                ))
                .unwrap();
            release_rx.recv_timeout(Duration::from_secs(10)).is_ok()
        });
        let mut input = Pattern { left: LEN, at: 0 };
        let err = server
            .client(None)
            .request(
                "POST",
                "/1.0/images",
                RequestBody::Stream(&mut input, LEN as u64),
            )
            .err()
            .unwrap();
        let _ = release_tx.send(());
        assert_eq!(format!("{err:#}"), "an image with that alias exists");
        assert!(input.left > 0, "the whole input was read");
        assert!(
            server.finish().result.unwrap(),
            "the answer came only once the daemon closed the connection"
        );
    }

    #[test]
    fn early_answer_without_close_over_the_socket() {
        early_answer_without_close(false);
    }

    #[test]
    fn early_answer_without_close_over_tls() {
        early_answer_without_close(true);
    }

    #[test]
    fn short_upload_input_is_an_error() {
        let server = ScriptServer::unix(|stream| {
            let mut reader = BufReader::new(stream);
            let mut all = Vec::new();
            let _ = reader.read_to_end(&mut all);
            all.len()
        });
        let mut input = Pattern { left: 10, at: 0 };
        let err = server
            .client(None)
            .request("PUT", "/1.0/x", RequestBody::Stream(&mut input, 100))
            .err()
            .unwrap();
        assert_eq!(
            format!("{err:#}"),
            "cannot send PUT /1.0/x to the daemon: the input ended after 10 of 100 bytes"
        );
        server.finish();
    }

    #[test]
    fn truncated_body_is_an_error() {
        let server = FakeServer::start(vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello".to_vec()
        ]);
        let mut resp = Client::new(server.path())
            .request("GET", "/1.0/x", RequestBody::Empty)
            .unwrap();
        let mut buf = Vec::new();
        let err = resp.body.read_to_end(&mut buf).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err}");
        assert_eq!(buf, b"hello");
    }

    #[test]
    fn no_answer_is_an_error() {
        let server = FakeServer::start(vec![Vec::new()]);
        let err = Client::new(server.path())
            .get::<serde_json::Value>("/1.0")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot read the daemon's answer to GET /1.0: the daemon closed the connection \
             without answering"
        );
    }
}
