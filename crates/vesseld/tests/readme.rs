//! The README runs as written: every `sh` block under "Using it", "Storage:", "Networks:" and
//! "Remote access and projects:" is taken from README.md and run top to bottom, in order, by
//! bash at a terminal, against a private daemon in a network namespace of the test's own
//! (`common::Sandbox`), as a new user would type it. So the documentation cannot drift from the product.
//!
//! What a user's machine has and a test machine stands in for:
//! - the registry `registry.example.org` is Debian's docker-registry, started by the test in
//!   the namespace on 127.0.0.1:5000, holding `team/app:1.2`;
//! - the Debian mirror (debootstrap, the VM image's kernel) is reached through a forwarding
//!   HTTP proxy the test serves inside the namespace (`http_proxy` for the daemon), which
//!   relays to `*.debian.org` and the hosts of this machine's apt sources only;
//! - the files the blocks name are in the working directory: `./index.html`, a disk image
//!   `debian-12.qcow2` (a boot sector that firmware starts, for the full-profile VM), and
//!   `~/.ssh/id_ed25519.pub`;
//! - the user at the terminal: when a console says "To detach: Ctrl-a q" the test types
//!   Ctrl-a q, and at an interactive shell's prompt it types `exit`.

mod common;
#[allow(dead_code)]
#[path = "hostile/corpus.rs"]
mod corpus;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{in_netns, Daemon, Registry, Sandbox};

/// The README's example blocks this test runs, by the line that leads to each.
const BLOCKS: [&str; 4] = [
    "## Using it",
    "Storage:",
    "Networks:",
    "Remote access and projects:",
];
/// Where the test's registry listens inside the namespace.
const REGISTRY: &str = "127.0.0.1:5000";
const REGISTRY_PORT: u16 = 5000;
/// Where the test's proxy to the Debian mirror listens inside the namespace.
const PROXY: &str = "127.0.0.1:3128";

/// The `sh` block that follows the line `lead` in the README.
fn block(readme: &str, lead: &str) -> String {
    let mut lines = readme.lines().skip_while(|l| l.trim_end() != lead);
    assert!(lines.next().is_some(), "README.md has no line {lead:?}");
    let mut lines = lines.skip_while(|l| l.trim() != "```sh");
    assert!(
        lines.next().is_some(),
        "README.md has no sh block after {lead:?}"
    );
    let body: Vec<&str> = lines.take_while(|l| l.trim() != "```").collect();
    assert!(!body.is_empty(), "the block after {lead:?} is empty");
    body.join("\n") + "\n"
}

/// A forwarding HTTP proxy listening inside a namespace and connecting out from the host's,
/// for `*.debian.org` only: one request per connection (it asks for `Connection: close`).
struct Proxy {
    stop: Arc<AtomicBool>,
    served: Arc<Mutex<Vec<String>>>,
}

impl Proxy {
    fn start(ns: &str) -> Self {
        let listener = in_netns(ns, || TcpListener::bind(PROXY).expect("bind the proxy"));
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(Mutex::new(Vec::new()));
        let (s, log) = (stop.clone(), served.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let log = log.clone();
                        std::thread::spawn(move || {
                            if let Some(line) = relay(conn) {
                                log.lock().unwrap().push(line);
                            }
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Proxy { stop, served }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Hosts of the apt sources this machine uses (`apt-get download` of the VM image's kernel
/// goes to them): `deb URL` lines of `*.list` files and `URIs:` of `*.sources` files.
fn apt_hosts() -> Vec<String> {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(rd) = std::fs::read_dir("/etc/apt/sources.list.d") {
        files.extend(
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "list" || x == "sources")),
        );
    }
    let mut hosts = Vec::new();
    for f in files {
        for line in std::fs::read_to_string(f).unwrap_or_default().lines() {
            let line = line.trim();
            let urls: Vec<&str> = if let Some(rest) = line.strip_prefix("URIs:") {
                rest.split_whitespace().collect()
            } else if line.starts_with("deb ") || line.starts_with("deb-src ") {
                line.split_whitespace()
                    .filter(|w| w.contains("://"))
                    .take(1)
                    .collect()
            } else {
                Vec::new()
            };
            for u in urls {
                if let Some(h) = u
                    .split_once("://")
                    .and_then(|(_, rest)| rest.split(['/', ':']).next())
                {
                    hosts.push(h.to_string());
                }
            }
        }
    }
    hosts
}

/// Serves one proxied request; returns its request line.
fn relay(mut client: TcpStream) -> Option<String> {
    client.set_nonblocking(false).ok()?;
    client
        .set_read_timeout(Some(Duration::from_secs(60)))
        .ok()?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 64 * 1024 || client.read(&mut byte).ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.split("\r\n");
    let request = lines.next()?.to_string();
    let mut parts = request.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    let refuse = |mut c: TcpStream, why: &str| {
        let _ = write!(
            c,
            "HTTP/1.1 403 Forbidden\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{why}",
            why.len()
        );
    };
    let (authority, path) = if method == "CONNECT" {
        (target.to_string(), String::new())
    } else {
        let rest = target.strip_prefix("http://")?;
        let slash = rest.find('/').unwrap_or(rest.len());
        (rest[..slash].to_string(), rest[slash..].to_string())
    };
    let host = authority.split(':').next().unwrap_or_default().to_string();
    if !(host == "debian.org" || host.ends_with(".debian.org") || apt_hosts().contains(&host)) {
        refuse(
            client,
            "the test's proxy relays to *.debian.org and the host's apt mirrors only",
        );
        return Some(format!("refused {request}"));
    }
    let addr = if authority.contains(':') {
        authority.clone()
    } else {
        format!("{authority}:80")
    };
    let mut upstream = match TcpStream::connect(&addr) {
        Ok(u) => u,
        Err(e) => {
            refuse(client, &format!("cannot reach {addr}: {e}"));
            return Some(format!("unreachable {request}"));
        }
    };
    if method == "CONNECT" {
        client
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .ok()?;
    } else {
        let mut out = format!("{method} {path} {version}\r\n");
        for l in lines.filter(|l| !l.is_empty()) {
            let name = l.split(':').next().unwrap_or_default().to_ascii_lowercase();
            if name != "connection" && name != "proxy-connection" && name != "keep-alive" {
                out.push_str(l);
                out.push_str("\r\n");
            }
        }
        out.push_str("Connection: close\r\n\r\n");
        upstream.write_all(out.as_bytes()).ok()?;
    }
    let (mut c2, mut u2) = (client.try_clone().ok()?, upstream.try_clone().ok()?);
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut c2, &mut u2);
        let _ = u2.shutdown(std::net::Shutdown::Write);
    });
    let _ = std::io::copy(&mut upstream, &mut client);
    let _ = client.shutdown(std::net::Shutdown::Both);
    let _ = upstream.shutdown(std::net::Shutdown::Both);
    let _ = up.join();
    Some(request)
}

/// A 1 MiB qcow2 whose first sector prints a line on COM1 and halts: a disk image that only
/// firmware can start, standing in for a downloaded cloud image.
fn boot_disk(path: &Path) {
    let mut s = common::boot_sector("booted from firmware\r\n");
    s.resize(1 << 20, 0);
    let raw = path.with_extension("raw");
    std::fs::write(&raw, &s).unwrap();
    let out = Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "qcow2"])
        .arg(&raw)
        .arg(path)
        .output()
        .expect("qemu-img (qemu-utils)");
    assert!(out.status.success(), "{out:?}");
    std::fs::remove_file(raw).unwrap();
}

/// Text as a terminal shows it: escape sequences and carriage returns dropped.
fn plain(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                // CSI: ESC [ parameters final-byte; other escapes: ESC and one more.
                if chars.next_if_eq(&'[').is_some() {
                    for p in chars.by_ref() {
                        if p.is_ascii_alphabetic() || p == '~' {
                            break;
                        }
                    }
                } else {
                    chars.next();
                }
            }
            '\r' | '\x07' => {}
            c => out.push(c),
        }
    }
    out
}

/// What a block printed and how it ended.
struct Run {
    code: Option<i32>,
    output: String,
}

/// Runs a block with bash at a terminal (util-linux `script` gives it a pseudo-terminal)
/// inside the namespace, typing what a user would: Ctrl-a q at a console, `exit` at a shell
/// prompt.
fn run_block(ns: &str, script: &Path, cwd: &Path, env: &[(&str, String)], limit: Duration) -> Run {
    let mut child = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{ns}"))
        .args(["--", "script", "-qefc"])
        .arg(format!("bash -ex {}", script.display()))
        .arg("/dev/null")
        .current_dir(cwd)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nsenter and script (util-linux)");
    let out = Arc::new(Mutex::new(Vec::<u8>::new()));
    let mut readers = Vec::new();
    for mut pipe in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let out = out.clone();
        readers.push(std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                out.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        }));
    }
    let mut input = child.stdin.take().unwrap();
    let start = Instant::now();
    // Output up to here has been answered; when output last changed.
    let (mut answered, mut seen, mut changed) = (0usize, 0usize, Instant::now());
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
        let text = String::from_utf8_lossy(&out.lock().unwrap()).into_owned();
        if text.len() != seen {
            (seen, changed) = (text.len(), Instant::now());
        }
        let fresh = plain(&text[answered.min(text.len())..]);
        let quiet = changed.elapsed();
        if fresh.contains("To detach: Ctrl-a q") && quiet > Duration::from_secs(2) {
            let _ = input.write_all(b"\x01q");
            answered = text.len();
        } else if quiet > Duration::from_millis(1500)
            && (fresh.ends_with("# ") || fresh.ends_with("$ "))
        {
            let _ = input.write_all(b"exit\r");
            answered = text.len();
        }
    };
    drop(input);
    for r in readers {
        let _ = r.join();
    }
    let output = String::from_utf8_lossy(&out.lock().unwrap()).into_owned();
    Run { code, output }
}

/// Removes what the blocks made, through the CLI, so that the daemon stops with nothing left.
fn clean_up(d: &Daemon) {
    let list: serde_json::Value =
        serde_json::from_str(&d.ok(&["list", "--format", "json"])).unwrap_or_default();
    let names: Vec<String> = list
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["name"].as_str().map(str::to_string))
        .collect();
    if !names.is_empty() {
        let mut args = vec!["delete", "-f"];
        args.extend(names.iter().map(String::as_str));
        d.ok(&args);
    }
    for kind in ["export", "pool"] {
        let list: serde_json::Value =
            serde_json::from_str(&d.ok(&["storage", kind, "list", "--format", "json"]))
                .unwrap_or_default();
        for item in list.as_array().into_iter().flatten() {
            let name = item["name"].as_str().unwrap_or_default().to_string();
            if kind == "export" {
                d.ok(&["storage", "export", "delete", &name]);
            } else {
                let vols: serde_json::Value = serde_json::from_str(
                    &d.ok(&["storage", "volume", "list", &name, "--format", "json"]),
                )
                .unwrap_or_default();
                for v in vols.as_array().into_iter().flatten() {
                    let v = v["name"].as_str().unwrap_or_default();
                    d.ok(&["storage", "volume", "delete", &name, v]);
                }
                d.ok(&["storage", "pool", "delete", &name]);
            }
        }
    }
}

#[test]
fn the_readme_runs_as_written() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .expect("README.md");
    let sb = Sandbox::new(1);
    let ns = sb.hosts[0].clone();
    let proxy = Proxy::start(&ns);
    let d = Daemon::start_in_netns_as_installed_with_env(
        &ns,
        &[
            ("http_proxy", &format!("http://{PROXY}")),
            ("no_proxy", "127.0.0.1,localhost"),
        ],
    );
    let registry = Registry::start_in_netns(&d.dir.join("registry"), &ns, REGISTRY_PORT);
    let addr: SocketAddr = REGISTRY.parse().unwrap();
    in_netns(&ns, move || {
        corpus::Image::of(vec![corpus::busybox_layer()]).push_as(addr, "team/app", "1.2")
    });

    // The user's working directory and home.
    let work = d.dir.join("work");
    let home = d.dir.join("home");
    std::fs::create_dir_all(home.join(".ssh")).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(work.join("index.html"), "<h1>hello from vessel</h1>\n").unwrap();
    boot_disk(&work.join("debian-12.qcow2"));
    std::fs::write(
        home.join(".ssh/id_ed25519.pub"),
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl user@readme\n",
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        common::bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let env = [
        ("PATH", path),
        ("HOME", home.display().to_string()),
        ("VESSEL_SOCKET", d.socket.display().to_string()),
        ("TERM", "xterm".to_string()),
    ];

    let mut failed = None;
    for lead in BLOCKS {
        let text = block(&readme, lead).replace("registry.example.org", REGISTRY);
        let script: PathBuf = d.dir.join(format!(
            "block-{}.sh",
            lead.trim_start_matches('#')
                .trim()
                .trim_end_matches(':')
                .replace(' ', "-")
        ));
        std::fs::write(&script, &text).unwrap();
        let t = Instant::now();
        let run = run_block(&ns, &script, &work, &env, Duration::from_secs(20 * 60));
        eprintln!(
            "README block {lead:?}: exit {:?} after {:?}",
            run.code,
            t.elapsed()
        );
        if run.code != Some(0) {
            failed = Some(format!(
                "the README block after {lead:?} failed (exit {:?}); its last output:\n{}\n\nproxied: {:?}\n\ndaemon log:\n{}",
                run.code,
                common::tail(&run.output, 60),
                proxy.served.lock().unwrap(),
                common::tail(&d.log(), 40)
            ));
            break;
        }
        // bash -x traced the block's last command: it ran to the end.
        let last = text
            .lines()
            .rfind(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
            .unwrap();
        let words: Vec<&str> = last.split_whitespace().take(3).collect();
        let traced = format!("+ {}", words.join(" "));
        assert!(
            plain(&run.output).contains(&traced),
            "the block after {lead:?} exited 0 without running its last line {last:?}"
        );
    }
    clean_up(&d);
    drop(registry);
    if let Some(f) = failed {
        panic!("{f}");
    }
    let left = d.mounts();
    assert!(left.is_empty(), "mounts left after clean-up: {left:?}");
}
