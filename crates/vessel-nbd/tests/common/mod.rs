//! Shared fixtures for the real-client tests: temp dirs, servers, client runner.

#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vessel_nbd::{FileDevice, NbdExport, NbdServer, ServerHandle};

mod nbdsh;
mod raw;
#[allow(unused_imports)] // not every test binary holds sessions
pub use nbdsh::NbdSession;
#[allow(unused_imports)] // nor raw clients
pub use raw::Raw;

/// A temp directory removed on drop, also when a test fails.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let base = std::env::temp_dir();
        let n = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = base.join(format!("vessel-nbd-{tag}-{}-{n}", std::process::id()));
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

/// A server on a unix socket with a writable `disk`, a read-only `ro` and a small `small`.
/// Field order matters: the server stops before the temp dir goes.
pub struct Fixture {
    pub unix: ServerHandle,
    pub server: NbdServer,
    pub dir: TempDir,
}

pub const DISK_SIZE: u64 = 8 << 20;
pub const RO_SIZE: u64 = 1 << 20;

impl Fixture {
    pub fn new(tag: &str) -> Self {
        let dir = TempDir::new(tag);
        let disk = FileDevice::create(dir.join("disk.img"), DISK_SIZE).expect("disk");
        std::fs::write(dir.join("ro.img"), vec![0x5a; RO_SIZE as usize]).expect("ro image");
        let ro = FileDevice::open(dir.join("ro.img"), true).expect("ro");
        let small = FileDevice::create(dir.join("small.img"), 64 << 10).expect("small");
        let server = NbdServer::new([
            NbdExport::new("disk", Arc::new(disk)).description("scratch disk"),
            NbdExport::new("ro", Arc::new(ro))
                .read_only(true)
                .description("golden image"),
            NbdExport::new("small", Arc::new(small)),
        ])
        .expect("server");
        let unix = server.serve_unix(dir.join("nbd.sock")).expect("serve unix");
        Fixture { unix, server, dir }
    }

    /// `nbd+unix:///NAME?socket=PATH` for an export of this fixture.
    pub fn uri(&self, export: &str) -> String {
        format!(
            "nbd+unix:///{export}?socket={}",
            self.dir.join("nbd.sock").display()
        )
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("nbd.sock")
    }
}

/// Debian package that ships each client tool, for the failure message.
fn package_of(tool: &str) -> &'static str {
    match tool {
        "nbdinfo" | "nbdcopy" => "libnbd-bin",
        "nbdsh" => "libnbd-bin python3-libnbd",
        "qemu-img" | "qemu-io" => "qemu-utils",
        "fio" => "fio",
        _ => "(unknown)",
    }
}

/// Run a client tool to completion (at most 30 s); a missing tool fails naming its package.
pub fn run(tool: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(tool);
    if tool == "nbdsh" {
        // nbdsh runs `python3` from PATH; the Debian module lives with the system python, so
        // prefer it over any python earlier in PATH (pyenv and the like).
        let path = std::env::var("PATH").unwrap_or_default();
        cmd.env("PATH", format!("/usr/bin:{path}"));
    }
    let mut child = cmd
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {tool} ({e}): install Debian package {}",
                package_of(tool)
            )
        });
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out_thread = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stdout.read_to_end(&mut v);
        v
    });
    let err_thread = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stderr.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{tool} {args:?} did not finish within 30 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let stderr = err_thread.join().expect("stderr reader");
    if String::from_utf8_lossy(&stderr).contains("No module named nbd") {
        panic!("{tool} cannot import nbd: install Debian package python3-libnbd");
    }
    Output {
        status,
        stdout: out_thread.join().expect("stdout reader"),
        stderr,
    }
}

/// Run a tool and require success; returns stdout as text.
pub fn run_ok(tool: &str, args: &[&str]) -> String {
    let out = run(tool, args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{tool} {args:?} failed: {}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
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
