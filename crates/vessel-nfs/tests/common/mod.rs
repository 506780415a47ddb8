//! Shared fixtures for the real-client tests: temp dirs, the server binary, network
//! namespaces and the libnfs-utils runner.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn unique(tag: &str) -> String {
    format!(
        "{tag}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// A temp directory removed on drop, also when a test fails.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("vessel-nfs-{}", unique(tag)));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A network namespace with loopback up, deleted on drop (also on panic).
pub struct Netns(pub String);

impl Netns {
    pub fn new() -> Self {
        let name = format!("vnfs-{}", unique("ns"));
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .unwrap_or_else(|e| panic!("cannot run ip ({e}): install Debian package iproute2"));
        assert!(
            ok.success(),
            "ip netns add {name} failed (run the tests as root)"
        );
        let ns = Netns(name);
        let up = Command::new("ip")
            .args(["netns", "exec", &ns.0, "ip", "link", "set", "lo", "up"])
            .status()
            .expect("ip netns exec");
        assert!(up.success(), "bringing lo up in {} failed", ns.0);
        ns
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// `vessel-nfs` running as a child process, killed on drop.
pub struct Server {
    child: Child,
    pub nfs_port: u16,
    pub portmap: bool,
}

impl Server {
    /// Start the binary with `args`, inside `netns` if given, and wait for its ready line.
    pub fn start(netns: Option<&Netns>, args: &[&str]) -> Self {
        let bin = env!("CARGO_BIN_EXE_vessel-nfs");
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &ns.0, bin]);
                c
            }
            None => Command::new(bin),
        };
        let mut child = cmd
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn vessel-nfs");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        let n = BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read ready line");
        if n == 0 {
            let status = child.wait().expect("wait");
            panic!("vessel-nfs {args:?} exited before listening: {status}");
        }
        // listening nfs=ADDR portmap=ADDR|none
        let nfs = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("nfs="))
            .unwrap_or_else(|| panic!("bad ready line {line:?}"));
        let nfs_port = nfs
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("bad nfs address in {line:?}"));
        Server {
            child,
            nfs_port,
            portmap: !line.contains("portmap=none"),
        }
    }

    /// `nfs://127.0.0.1/PATH` naming the ports, so no portmapper is needed.
    pub fn url(&self, path: &str) -> String {
        self.url_with(path, "")
    }

    /// Like [`Server::url`] with more URL arguments (e.g. `uid=1000&gid=1000`).
    pub fn url_with(&self, path: &str, extra: &str) -> String {
        let mut u = format!(
            "nfs://127.0.0.1{path}?nfsport={p}&mountport={p}",
            p = self.nfs_port
        );
        if !extra.is_empty() {
            u.push('&');
            u.push_str(extra);
        }
        u
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run a libnfs-utils tool (inside `netns` if given) to completion, at most 60 s; a missing
/// tool fails the test naming the package to install.
pub fn run_in(netns: Option<&Netns>, tool: &str, args: &[&str]) -> Output {
    let found = Command::new(tool)
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if let Err(e) = found {
        panic!("cannot run {tool} ({e}): install Debian package libnfs-utils");
    }
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", &ns.0, tool]);
            c
        }
        None => Command::new(tool),
    };
    let mut child = cmd
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {tool} ({e}): install Debian package libnfs-utils"));
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stdout.read_to_end(&mut v);
        v
    });
    let err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stderr.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{tool} {args:?} did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}

pub fn run(tool: &str, args: &[&str]) -> Output {
    run_in(None, tool, args)
}

/// Run a tool and require success; returns stdout as text.
pub fn run_ok_in(netns: Option<&Netns>, tool: &str, args: &[&str]) -> String {
    let out = run_in(netns, tool, args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{tool} {args:?} failed: {}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

pub fn run_ok(tool: &str, args: &[&str]) -> String {
    run_ok_in(None, tool, args)
}

/// Run a tool and require failure; returns stderr as text.
pub fn run_fail(tool: &str, args: &[&str]) -> String {
    let out = run(tool, args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "{tool} {args:?} should have failed\nstdout: {}\nstderr: {stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    stderr
}

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

/// Names listed by `nfs-ls` (last column of each line).
pub fn listed_names(ls: &str) -> Vec<String> {
    ls.lines()
        .filter_map(|l| l.split_whitespace().last())
        .map(str::to_string)
        .collect()
}
