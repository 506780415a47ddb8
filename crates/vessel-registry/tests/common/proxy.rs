//! A loopback HTTP/1.1 forwarder in front of a test registry: records every request, and on
//! demand drops a blob answer after N bytes, trickles it, redirects it, strips `Range`, or
//! demands bearer or basic auth.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// A request as the client sent it, with the status the proxy answered.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub status: u16,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What the proxy does besides forwarding.
#[derive(Debug, Clone, Default)]
pub struct Behaviour {
    /// Cut the next answer whose path contains this after that many body bytes (once).
    pub drop_after: Option<(String, u64)>,
    /// Remove `Range` before forwarding (a registry that ignores ranges).
    pub strip_range: bool,
    /// Demand `Authorization: Bearer <token>`, served from `/token`.
    pub bearer: Option<String>,
    /// Demand `Authorization: Basic <this>`.
    pub basic: Option<String>,
    /// Answer `/token` with this token (a token server for a registry with token auth).
    pub serve_token: Option<String>,
    /// Send answers whose path contains this one body byte per interval.
    pub trickle: Option<(String, Duration)>,
    /// Answer requests whose path contains this with `302 Found` to `Location: {1}` (`{path}`
    /// in it is replaced by the request's path).
    pub redirect: Option<(String, String)>,
}

pub struct Proxy {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    pub behaviour: Arc<Mutex<Behaviour>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Proxy {
    pub fn start(upstream: SocketAddr, behaviour: Behaviour) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("proxy address");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let behaviour = Arc::new(Mutex::new(behaviour));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, b, st) = (seen.clone(), behaviour.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            // Bounded: the test drops the proxy, which sets `stop`.
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let (s, b) = (s.clone(), b.clone());
                        std::thread::spawn(move || {
                            let _ = serve(conn, upstream, addr, &s, &b);
                        });
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(10))
                    }
                    Err(_) => break,
                }
            }
        });
        Self {
            addr,
            seen,
            behaviour,
            stop,
            thread: Some(thread),
        }
    }

    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Requests so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("seen").clone()
    }

    /// Forgets the requests so far.
    pub fn clear(&self) {
        self.seen.lock().expect("seen").clear();
    }

    /// Blob requests so far (`GET .../blobs/sha256:...`).
    pub fn blob_gets(&self) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|r| r.method == "GET" && r.path.contains("/blobs/"))
            .collect()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn read_head(r: &mut impl BufRead) -> io::Result<Vec<String>> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let line = line.trim_end_matches(['\r', '\n']).to_string();
        if line.is_empty() {
            return Ok(lines);
        }
        lines.push(line);
        if lines.len() > 200 {
            return Err(io::ErrorKind::InvalidData.into());
        }
    }
}

fn respond(
    conn: &mut TcpStream,
    status: &str,
    headers: &[(&str, String)],
    body: &str,
) -> io::Result<()> {
    write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    )?;
    for (k, v) in headers {
        write!(conn, "{k}: {v}\r\n")?;
    }
    write!(conn, "\r\n{body}")?;
    conn.flush()
}

fn serve(
    conn: TcpStream,
    upstream: SocketAddr,
    me: SocketAddr,
    seen: &Mutex<Vec<Seen>>,
    behaviour: &Mutex<Behaviour>,
) -> io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut client = BufReader::new(conn.try_clone()?);
    let mut conn = conn;
    let head = read_head(&mut client)?;
    let mut parts = head.first().map(|l| l.split(' ')).into_iter().flatten();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let headers: Vec<(String, String)> = head[1..]
        .iter()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut req = Seen {
        method,
        path,
        headers,
        status: 0,
    };
    let b = behaviour.lock().expect("behaviour").clone();
    let record = |req: &Seen| seen.lock().expect("seen").push(req.clone());

    if let Some(token) = b.serve_token.as_ref().or(b.bearer.as_ref()) {
        if req.path.starts_with("/token") {
            req.status = 200;
            record(&req);
            return respond(
                &mut conn,
                "200 OK",
                &[("Content-Type", "application/json".into())],
                &format!(r#"{{"token":"{token}","expires_in":300}}"#),
            );
        }
    }
    if let Some(token) = &b.bearer {
        if req.header("authorization") != Some(&format!("Bearer {token}")) {
            req.status = 401;
            record(&req);
            let challenge = format!(
                r#"Bearer realm="http://{me}/token",service="test-registry",scope="repository:test/busybox:pull""#
            );
            return respond(
                &mut conn,
                "401 Unauthorized",
                &[("WWW-Authenticate", challenge)],
                r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
            );
        }
    }
    if let Some(basic) = &b.basic {
        if req.header("authorization") != Some(&format!("Basic {basic}")) {
            req.status = 401;
            record(&req);
            return respond(
                &mut conn,
                "401 Unauthorized",
                &[("WWW-Authenticate", r#"Basic realm="test""#.into())],
                "",
            );
        }
    }

    if let Some((pat, to)) = &b.redirect {
        if req.path.contains(pat.as_str()) {
            req.status = 302;
            record(&req);
            return respond(
                &mut conn,
                "302 Found",
                &[("Location", to.replace("{path}", &req.path))],
                "",
            );
        }
    }

    let mut up = TcpStream::connect_timeout(&upstream, Duration::from_secs(5))?;
    up.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(up, "{} {} HTTP/1.1\r\n", req.method, req.path)?;
    for (k, v) in &req.headers {
        let k_l = k.to_ascii_lowercase();
        if k_l == "connection" || k_l == "authorization" || (b.strip_range && k_l == "range") {
            continue;
        }
        write!(up, "{k}: {v}\r\n")?;
    }
    write!(up, "Connection: close\r\n\r\n")?;
    up.flush()?;

    let mut upr = BufReader::new(up);
    let resp_head = read_head(&mut upr)?;
    req.status = resp_head
        .first()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    record(&req);
    let mut out = resp_head.join("\r\n");
    out.push_str("\r\n\r\n");
    conn.write_all(out.as_bytes())?;

    let cut = match &b.drop_after {
        Some((pat, n)) if req.path.contains(pat.as_str()) && req.method == "GET" => {
            behaviour.lock().expect("behaviour").drop_after = None;
            Some(*n)
        }
        _ => None,
    };
    let slow = match &b.trickle {
        Some((pat, every)) if req.path.contains(pat.as_str()) && req.method == "GET" => {
            Some(*every)
        }
        _ => None,
    };
    if let Some(every) = slow {
        // Bounded: ends when the client gives up (a write fails) or the body is sent.
        let mut byte = [0u8; 1];
        while upr.read(&mut byte)? == 1 {
            conn.write_all(&byte)?;
            conn.flush()?;
            std::thread::sleep(every);
        }
        return Ok(());
    }
    match cut {
        Some(n) => {
            let mut limited = upr.take(n);
            io::copy(&mut limited, &mut conn)?;
            conn.flush()?;
            // Like a network failure: close both ways mid-body.
            conn.shutdown(Shutdown::Both)?;
        }
        None => {
            io::copy(&mut upr, &mut conn)?;
            conn.flush()?;
        }
    }
    Ok(())
}
