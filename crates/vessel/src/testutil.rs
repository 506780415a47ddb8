//! Stand-ins for the daemon in unit tests: a unix socket that replays canned responses, and
//! a scripted server over a unix socket or over TLS with a self-signed certificate.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
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

/// A connection handler that reads the request, answers `response`, and reads what follows
/// until the client closes.
pub fn answer(response: Vec<u8>) -> impl FnOnce(UnixStream) -> Recorded + Send + 'static {
    move |stream| {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut req = read_request(&mut reader);
        let mut writer = stream;
        writer.write_all(&response).unwrap();
        writer.shutdown(Shutdown::Write).unwrap();
        let _ = reader.read_to_end(&mut req.after);
        req
    }
}

/// Reads one request (head and `Content-Length` body).
pub fn read_request<R: BufRead>(r: &mut R) -> Recorded {
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

/// A self-signed certificate and its key, as a test daemon or client uses them.
pub struct TestIdentity {
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_der: Vec<u8>,
    pub key_der: Vec<u8>,
    pub fingerprint: String,
}

impl TestIdentity {
    pub fn new() -> Self {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
            .expect("make a certificate");
        let cert_der = made.cert.der().to_vec();
        Self {
            cert_pem: made.cert.pem(),
            key_pem: made.key_pair.serialize_pem(),
            fingerprint: crate::tls::fingerprint(&cert_der),
            cert_der,
            key_der: made.key_pair.serialize_der(),
        }
    }

    /// Writes the PEM files into a fresh directory and returns them as a client identity.
    pub fn write_files(&self) -> crate::tls::ClientIdentity {
        let dir = temp_dir();
        let cert = dir.join("client.crt");
        let key = dir.join("client.key");
        std::fs::write(&cert, &self.cert_pem).expect("write the certificate");
        std::fs::write(&key, &self.key_pem).expect("write the key");
        crate::tls::ClientIdentity { cert, key }
    }
}

/// A fresh empty directory in the temporary directory.
pub fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "vessel-test-{}-{}.d",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("make a temporary directory");
    dir
}

/// What a scripted server saw of its one connection.
#[derive(Debug)]
pub struct Served<T> {
    /// The script's result, or why the connection failed before it ran (the TLS handshake).
    pub result: Result<T, String>,
    /// Fingerprint of the certificate the client presented (TLS with a client certificate).
    pub client_fingerprint: Option<String>,
}

/// A daemon stand-in for one connection, over a unix socket or over TLS on the loopback, run
/// by a synchronous script that reads and writes the connection's bytes. Over TLS the
/// decrypted stream is bridged to a unix socket pair, so one script serves both.
pub struct ScriptServer<T> {
    socket: Option<PathBuf>,
    tls: Option<(std::net::SocketAddr, String)>,
    handle: Option<JoinHandle<Served<T>>>,
}

type Script<T> = Box<dyn FnOnce(UnixStream) -> T + Send>;

impl<T: Send + 'static> ScriptServer<T> {
    /// Serves one connection on a unix socket.
    pub fn unix(script: impl FnOnce(UnixStream) -> T + Send + 'static) -> Self {
        let path = temp_socket_path();
        let listener = UnixListener::bind(&path).expect("bind the test socket");
        let handle = std::thread::spawn(move || {
            let (stream, _) = listener.accept().expect("accept");
            stream
                .set_read_timeout(Some(Duration::from_secs(20)))
                .expect("set a read timeout");
            Served {
                result: Ok(script(stream)),
                client_fingerprint: None,
            }
        });
        Self {
            socket: Some(path),
            tls: None,
            handle: Some(handle),
        }
    }

    /// Serves one TLS connection on 127.0.0.1 with `identity`'s certificate; a client
    /// certificate is asked for but not required.
    pub fn tls(
        identity: &TestIdentity,
        script: impl FnOnce(UnixStream) -> T + Send + 'static,
    ) -> Self {
        Self::tls_with_probes(identity, 0, script)
    }

    /// Like [`ScriptServer::tls`], after one connection that only completes the handshake
    /// (the probe of `remote add`).
    pub fn tls_after_probe(
        identity: &TestIdentity,
        script: impl FnOnce(UnixStream) -> T + Send + 'static,
    ) -> Self {
        Self::tls_with_probes(identity, 1, script)
    }

    fn tls_with_probes(
        identity: &TestIdentity,
        probes: usize,
        script: impl FnOnce(UnixStream) -> T + Send + 'static,
    ) -> Self {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_client_cert_verifier(std::sync::Arc::new(AnyClientCert(provider)))
            .with_single_cert(
                vec![CertificateDer::from(identity.cert_der.clone())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(identity.key_der.clone())),
            )
            .expect("server certificate");
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address");
        listener.set_nonblocking(true).expect("non-blocking");
        let script: Script<T> = Box::new(script);
        let handle = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("test runtime");
            rt.block_on(serve_tls(listener, acceptor, probes, script))
        });
        Self {
            socket: None,
            tls: Some((addr, identity.fingerprint.clone())),
            handle: Some(handle),
        }
    }

    /// A client of this server (over TLS: pinned to the server's certificate).
    pub fn client(&self, token: Option<&str>) -> crate::client::Client {
        self.client_with(token, None, None)
    }

    /// A client with another pin or a client certificate.
    pub fn client_with(
        &self,
        token: Option<&str>,
        pin: Option<&str>,
        identity: Option<&crate::tls::ClientIdentity>,
    ) -> crate::client::Client {
        match (&self.socket, &self.tls) {
            (Some(path), _) => crate::client::Client::new(path),
            (None, Some((addr, fingerprint))) => crate::client::Client::https(
                Some("test"),
                self.endpoint(addr),
                pin.unwrap_or(fingerprint),
                token,
                identity,
            )
            .expect("a client"),
            (None, None) => unreachable!("a server listens somewhere"),
        }
    }

    fn endpoint(&self, addr: &std::net::SocketAddr) -> crate::client::Endpoint {
        crate::client::Endpoint {
            host: addr.ip().to_string(),
            port: addr.port(),
        }
    }

    /// The server's URL (TLS only).
    pub fn url(&self) -> String {
        let (addr, _) = self.tls.as_ref().expect("a TLS server");
        format!("https://{addr}")
    }

    /// Waits for the connection to be served.
    pub fn finish(mut self) -> Served<T> {
        self.handle
            .take()
            .expect("finish is called once")
            .join()
            .expect("test server thread")
    }
}

impl<T> Drop for ScriptServer<T> {
    fn drop(&mut self) {
        if let Some(path) = &self.socket {
            let _ = std::fs::remove_file(path);
        }
    }
}

async fn serve_tls<T: Send + 'static>(
    listener: std::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    probes: usize,
    script: Script<T>,
) -> Served<T> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listener = tokio::net::TcpListener::from_std(listener).expect("register the listener");
    for _ in 0..probes {
        let (tcp, _) = listener.accept().await.expect("accept");
        if let Ok(mut tls) = acceptor.accept(tcp).await {
            let mut rest = Vec::new();
            let _ = tls.read_to_end(&mut rest).await;
        }
    }
    let accept = tokio::time::timeout(Duration::from_secs(20), listener.accept());
    let (tcp, _) = accept.await.expect("a client within 20s").expect("accept");
    let tls = match acceptor.accept(tcp).await {
        Ok(tls) => tls,
        Err(e) => {
            return Served {
                result: Err(e.to_string()),
                client_fingerprint: None,
            }
        }
    };
    let client_fingerprint = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| crate::tls::fingerprint(c));
    let (ours, theirs) = UnixStream::pair().expect("socket pair");
    ours.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("set a read timeout");
    theirs.set_nonblocking(true).expect("non-blocking");
    let theirs = tokio::net::UnixStream::from_std(theirs).expect("register");
    let (mut tls_in, mut tls_out) = tokio::io::split(tls);
    let (mut pair_in, mut pair_out) = theirs.into_split();
    let down = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut tls_in, &mut pair_out).await;
        let _ = pair_out.shutdown().await;
    });
    let up = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut pair_in, &mut tls_out).await;
        let _ = tls_out.shutdown().await;
    });
    let result = tokio::task::spawn_blocking(move || script(ours))
        .await
        .expect("the script");
    let _ = up.await;
    down.abort();
    Served {
        result: Ok(result),
        client_fingerprint,
    }
}

/// Accepts any client certificate (the test only records which one came).
#[derive(Debug)]
struct AnyClientCert(std::sync::Arc<rustls::crypto::CryptoProvider>);

impl rustls::server::danger::ClientCertVerifier for AnyClientCert {
    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        Ok(rustls::server::danger::ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
