//! A small lying registry on loopback (plain `std::net`): honest manifests and configs, and
//! layer blobs that never end, trickle, are longer than announced, or redirect elsewhere.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How a blob is served.
#[derive(Clone)]
pub enum Blob {
    /// As it is.
    Honest(Vec<u8>),
    /// Zeros without end (no length, the connection never closes first).
    Endless,
    /// The bytes, one every `every`.
    Trickle(Vec<u8>, Duration),
    /// The bytes, with a `Content-Length` that many bytes longer (and those bytes sent).
    Longer(Vec<u8>, usize),
    /// `302 Found` to this location.
    Redirect(String),
}

/// A repository: its manifest (served for any tag) and blobs by digest.
#[derive(Clone)]
pub struct Repo {
    pub manifest: Vec<u8>,
    pub blobs: HashMap<String, Blob>,
}

pub struct Lying {
    pub addr: SocketAddr,
    /// Bytes sent as blob bodies, in all.
    pub sent: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Lying {
    pub fn start(repos: HashMap<String, Repo>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind lying registry");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("address");
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let repos = Arc::new(Mutex::new(repos));
        let (st, se) = (stop.clone(), sent.clone());
        let thread = std::thread::spawn(move || {
            // Bounded: the test drops the registry, which sets `stop`.
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let (r, st, se) = (repos.clone(), st.clone(), se.clone());
                        std::thread::spawn(move || {
                            let _ = serve(conn, &r, &st, &se);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Self {
            addr,
            sent,
            stop,
            thread: Some(thread),
        }
    }

    pub fn host(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for Lying {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(
    conn: TcpStream,
    repos: &Mutex<HashMap<String, Repo>>,
    stop: &AtomicBool,
    sent: &AtomicU64,
) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    conn.set_write_timeout(Some(Duration::from_secs(30)))?;
    let mut r = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    r.read_line(&mut line)?;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 || h == "\r\n" {
            break;
        }
    }
    let path = line.split(' ').nth(1).unwrap_or_default().to_string();
    let mut conn = conn;
    let reply = |conn: &mut TcpStream,
                 status: &str,
                 headers: &[(&str, String)],
                 body: &[u8]|
     -> std::io::Result<()> {
        write!(
            conn,
            "HTTP/1.1 {status}\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        )?;
        for (k, v) in headers {
            write!(conn, "{k}: {v}\r\n")?;
        }
        write!(conn, "\r\n")?;
        conn.write_all(body)
    };
    if path == "/v2/" {
        return reply(
            &mut conn,
            "200 OK",
            &[("Content-Type", "application/json".into())],
            b"{}",
        );
    }
    let Some(rest) = path.strip_prefix("/v2/") else {
        return reply(&mut conn, "404 Not Found", &[], b"");
    };
    let (repo, kind, key) = match (rest.rfind("/manifests/"), rest.rfind("/blobs/")) {
        (Some(i), _) => (&rest[..i], "manifest", &rest[i + 11..]),
        (_, Some(i)) => (&rest[..i], "blob", &rest[i + 7..]),
        _ => return reply(&mut conn, "404 Not Found", &[], b""),
    };
    let Some(repo) = repos.lock().expect("repos").get(repo).cloned() else {
        return reply(&mut conn, "404 Not Found", &[], b"");
    };
    if kind == "manifest" {
        return reply(
            &mut conn,
            "200 OK",
            &[(
                "Content-Type",
                "application/vnd.oci.image.manifest.v1+json".into(),
            )],
            &repo.manifest,
        );
    }
    let Some(blob) = repo.blobs.get(key) else {
        return reply(&mut conn, "404 Not Found", &[], b"");
    };
    match blob {
        Blob::Honest(b) => {
            sent.fetch_add(b.len() as u64, Ordering::Relaxed);
            reply(&mut conn, "200 OK", &[], b)
        }
        Blob::Longer(b, extra) => {
            let mut body = b.clone();
            body.extend(vec![0u8; *extra]);
            sent.fetch_add(body.len() as u64, Ordering::Relaxed);
            reply(&mut conn, "200 OK", &[], &body)
        }
        Blob::Redirect(to) => reply(&mut conn, "302 Found", &[("Location", to.clone())], b""),
        Blob::Endless => {
            write!(conn, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")?;
            let chunk = vec![0u8; 64 << 10];
            // Bounded: ends when the client closes (a write fails) or the test stops.
            while !stop.load(Ordering::Relaxed) {
                conn.write_all(&chunk)?;
                sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
            Ok(())
        }
        Blob::Trickle(b, every) => {
            write!(
                conn,
                "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
                b.len()
            )?;
            // Bounded: ends when the client closes (a write fails) or the test stops.
            for byte in b {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                conn.write_all(&[*byte])?;
                conn.flush()?;
                sent.fetch_add(1, Ordering::Relaxed);
                let mut left = *every;
                while !left.is_zero() && !stop.load(Ordering::Relaxed) {
                    let step = left.min(Duration::from_millis(100));
                    std::thread::sleep(step);
                    left -= step;
                }
            }
            Ok(())
        }
    }
}
