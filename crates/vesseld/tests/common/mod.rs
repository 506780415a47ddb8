//! Harness of the end-to-end tests: each test gets its own real `vesseld` (own root, run
//! directory, socket and cgroup parent) and drives it through the real `vessel` CLI or the raw
//! API. Everything the daemon made is removed on drop, also when the test fails.
#![allow(dead_code)]

pub mod ceph;
pub mod cluster;
pub mod etcd;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use vessel_api::stream::{self, FrameKind};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Directory holding the workspace's binaries.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target directory")
        .to_path_buf();
    for b in ["vessel", "vesseld", "vessel-monitor", "vessel-runc"] {
        assert!(
            dir.join(b).is_file(),
            "{} is missing: build the whole workspace first (cargo build --workspace)",
            dir.join(b).display()
        );
    }
    dir
}

/// The statically linked guest agent, built by `scripts/build-agent.sh`.
pub fn static_agent() -> PathBuf {
    let p = bin_dir()
        .parent()
        .expect("target directory")
        .join("agent/release/vessel-agent");
    assert!(
        p.is_file(),
        "{} is missing: build the static guest agent with scripts/build-agent.sh",
        p.display()
    );
    p
}

/// Fails loudly when the tests cannot run here.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the end-to-end tests need root (namespaces, cgroups, mounts): run them with sudo"
    );
    assert!(
        Path::new("/bin/busybox").is_file(),
        "/bin/busybox is missing: apt-get install busybox-static"
    );
}

/// One isolated daemon.
pub struct Daemon {
    pub dir: PathBuf,
    pub socket: PathBuf,
    child: Option<Child>,
    bins: PathBuf,
    /// The network namespace (made by the test) the daemon runs in, if any.
    netns: Option<String>,
    /// Run directory instead of `<dir>/run`.
    run_dir: Option<PathBuf>,
    /// Root directory instead of `<dir>/root`.
    root_dir: Option<PathBuf>,
    /// Run the daemon in a mount namespace of its own whose /sys/fs/cgroup is the host's
    /// cgroup2 hierarchy (a hybrid host's /sys/fs/cgroup/unified): a cgroup v2 layout.
    cgroup2: bool,
    /// Whether the daemon makes its default network on its first start (off unless a test
    /// asks: a daemon on the host's own namespace must not make bridges there).
    default_network: bool,
    /// More environment for the daemon (e.g. `http_proxy` for its downloads).
    env: Vec<(String, String)>,
    /// `--listen` for the HTTPS API.
    pub listen: Option<String>,
}

impl Daemon {
    /// Starts a daemon in a fresh directory and waits until it answers.
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// Starts a daemon whose root directory (store, images, instances) and/or run directory
    /// (monitor pid files, sockets, runtime state) are the given ones, e.g. small file systems
    /// a test fills.
    pub fn start_on(root_dir: Option<&Path>, run_dir: Option<&Path>) -> Self {
        let mut d = Self::start_with(None);
        d.kill(libc::SIGTERM);
        d.root_dir = root_dir.map(Path::to_path_buf);
        d.run_dir = run_dir.map(Path::to_path_buf);
        d.spawn();
        d
    }

    /// Restarts the daemon on the same directories in a mount namespace of its own where
    /// /sys/fs/cgroup is the host's cgroup2 hierarchy, so that it (and its instances) see a
    /// cgroup v2 host. Only on a hybrid host (which has that hierarchy at
    /// /sys/fs/cgroup/unified); its cgroups appear there on the host.
    pub fn restart_on_cgroup2(&mut self) {
        assert!(
            Path::new("/sys/fs/cgroup/unified/cgroup.procs").exists(),
            "a cgroup v2 layout can only be shown on a hybrid host (/sys/fs/cgroup/unified)"
        );
        self.kill(libc::SIGTERM);
        self.cgroup2 = true;
        self.spawn();
    }

    /// Starts a daemon inside the named network namespace (made and removed by the test).
    pub fn start_in_netns(netns: &str) -> Self {
        Self::start_with(Some(netns.to_string()))
    }

    /// Starts a daemon inside the named network namespace that also serves its HTTPS API
    /// on `listen` (an address of that namespace).
    pub fn start_in_netns_listening(netns: &str, listen: &str) -> Self {
        Self::start_listening(Some(netns.to_string()), Some(listen.to_string()))
    }

    /// Starts a daemon that also serves its HTTPS API on a free port of 127.0.0.1.
    pub fn start_https() -> (Self, u16) {
        let port = free_port();
        (
            Self::start_listening(None, Some(format!("127.0.0.1:{port}"))),
            port,
        )
    }

    fn start_with(netns: Option<String>) -> Self {
        Self::start_listening(netns, None)
    }

    fn start_listening(netns: Option<String>, listen: Option<String>) -> Self {
        require_root();
        let bins = bin_dir();
        let dir = PathBuf::from(format!(
            "/tmp/vt-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut d = Self {
            socket: dir.join("vessel.sock"),
            dir,
            child: None,
            bins,
            netns,
            run_dir: None,
            root_dir: None,
            cgroup2: false,
            default_network: false,
            env: Vec::new(),
            listen,
        };
        d.spawn();
        d
    }

    /// A bearer token of a new identity `name` bound to `project` with `role`.
    pub fn token(&self, name: &str, project: &str, role: &str) -> String {
        let out = self.ok(&[
            "auth",
            "token",
            "create",
            name,
            "--project",
            project,
            "--role",
            role,
            "--format",
            "json",
        ]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["token"].as_str().unwrap().to_string()
    }

    /// Restarts the daemon (SIGTERM, then a new one on the same directories) with one more
    /// environment variable.
    pub fn restart_with_env(&mut self, key: &str, value: &str) {
        self.kill(libc::SIGTERM);
        self.env.push((key.to_string(), value.to_string()));
        self.spawn();
    }

    /// The run directory handed to the daemon.
    pub fn run(&self) -> PathBuf {
        self.run_dir.clone().unwrap_or_else(|| self.dir.join("run"))
    }

    /// The root directory handed to the daemon.
    pub fn root(&self) -> PathBuf {
        self.root_dir
            .clone()
            .unwrap_or_else(|| self.dir.join("root"))
    }

    /// Starts (again) the daemon process on the same directories.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("vesseld.log"))
            .unwrap();
        let mut cmd = match &self.netns {
            // nsenter joins only the network namespace (`ip netns exec` would also give the
            // daemon its own /sys, without the cgroup mounts).
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{ns}"))
                    .arg("--")
                    .arg(self.bins.join("vesseld"));
                c
            }
            None if self.cgroup2 => {
                let mut c = Command::new("unshare");
                c.args(["--mount", "--propagation", "private", "sh", "-c"])
                    .arg("mount -t cgroup2 cgroup2 /sys/fs/cgroup && exec \"$0\" \"$@\"")
                    .arg(self.bins.join("vesseld"));
                c
            }
            None => Command::new(self.bins.join("vesseld")),
        };
        let child = cmd
            .arg("--root-dir")
            .arg(self.root())
            .arg("--run-dir")
            .arg(self.run())
            .arg("--socket")
            .arg(&self.socket)
            .args((!self.default_network).then_some("--no-default-network"))
            .args(self.listen.iter().flat_map(|a| ["--listen", a.as_str()]))
            .env("VESSEL_LIBEXEC", &self.bins)
            .env("VESSEL_AGENT", static_agent())
            .env("VESSEL_LOG", "debug")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start vesseld");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    panic!("vesseld exited with {st} at start:\n{}", self.log());
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("vesseld did not answer within 30 s:\n{}", self.log());
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("vesseld.log")).unwrap_or_default()
    }

    /// Pid of the daemon process.
    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(-1)
    }

    /// Stops the daemon with a signal and reaps it.
    pub fn kill(&mut self, sig: i32) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill takes plain integers.
            unsafe { libc::kill(c.id() as i32, sig) };
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Sends a signal to the daemon without waiting for it to exit, and hands its process to
    /// the caller (who waits on it), so that a next daemon can be spawned while it exits.
    pub fn signal_and_release(&mut self, sig: i32) -> Option<Child> {
        let c = self.child.take()?;
        // SAFETY: kill takes plain integers.
        unsafe { libc::kill(c.id() as i32, sig) };
        Some(c)
    }

    /// Runs the CLI against this daemon.
    pub fn vessel(&self, args: &[&str]) -> Output {
        Command::new(self.bins.join("vessel"))
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run vessel")
    }

    /// Runs the CLI with more environment (no `--socket`: a test of remotes picks them).
    pub fn vessel_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        Command::new(self.bins.join("vessel"))
            .env("VESSEL_SOCKET", &self.socket)
            .envs(env.iter().copied())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run vessel")
    }

    /// The path of one of the built binaries.
    pub fn bin(&self, name: &str) -> PathBuf {
        self.bins.join(name)
    }

    /// Starts the CLI against this daemon without waiting (stdout and stderr piped).
    pub fn spawn_vessel(&self, args: &[&str]) -> Child {
        Command::new(self.bins.join("vessel"))
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run vessel")
    }

    /// Runs the CLI and asserts success; returns stdout.
    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.vessel(args);
        assert!(
            out.status.success(),
            "vessel {} failed ({}):\nstdout: {}\nstderr: {}\n--- daemon log tail ---\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            tail(&self.log(), 40)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs the CLI and asserts failure; returns stderr.
    #[track_caller]
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.vessel(args);
        assert!(
            !out.status.success(),
            "vessel {} succeeded but should have failed:\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Builds the busybox image once.
    pub fn busybox(&self) {
        self.ok(&["image", "build", "busybox"]);
    }

    /// An instance as JSON.
    pub fn info(&self, name: &str) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["info", name, "--format", "json"])).expect("info json")
    }

    /// An image as JSON.
    pub fn info_image(&self, image: &str) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["image", "info", image, "--format", "json"]))
            .expect("image info json")
    }

    /// Waits until `f` holds (polling), or panics with `what`.
    #[track_caller]
    pub fn wait_for(&self, what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if f() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "timed out waiting for {what}\n--- daemon log tail ---\n{}",
            tail(&self.log(), 40)
        );
    }

    /// Runs `vessel exec NAME -- sh -c SCRIPT` and returns (exit code, stdout).
    pub fn sh(&self, name: &str, script: &str) -> (i32, String) {
        let out = self.vessel(&["exec", name, "-T", "--", "sh", "-c", script]);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    /// Parent cgroup of this daemon's instances.
    pub fn cgroup_parent(&self) -> String {
        let h = Sha256::digest(self.root().as_os_str().as_encoded_bytes());
        format!("vessel-{}", &hex::encode(h)[..10])
    }

    /// Directories of this daemon's cgroups in every mounted hierarchy.
    pub fn cgroup_dirs(&self) -> Vec<PathBuf> {
        let parent = self.cgroup_parent();
        let mut out = Vec::new();
        for entry in std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            let p = entry.path().join(&parent);
            if p.is_dir() {
                out.push(p);
            }
        }
        let unified = Path::new("/sys/fs/cgroup").join(&parent);
        if unified.is_dir() && !out.contains(&unified) {
            out.push(unified);
        }
        out
    }

    /// Whether `text` (a path, a command line) names this daemon's directory or a path in
    /// it: `/tmp/vt-PID-1` is named by `/tmp/vt-PID-1/root`, not by `/tmp/vt-PID-10`.
    pub fn names_dir(&self, text: &str) -> bool {
        let dir = self.dir.to_string_lossy();
        text.match_indices(dir.as_ref()).any(|(at, _)| {
            !text[at + dir.len()..]
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        })
    }

    /// Mount points under this daemon's directory.
    pub fn mounts(&self) -> Vec<String> {
        let prefix = self.dir.to_string_lossy().into_owned();
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
            .filter(|m| m.starts_with(&prefix) && self.names_dir(m))
            .collect()
    }

    /// Pids of live processes in this daemon's cgroups.
    pub fn cgroup_pids(&self) -> Vec<i32> {
        let mut pids = Vec::new();
        for d in self.cgroup_dirs() {
            collect_procs(&d, &mut pids);
        }
        pids.sort();
        pids.dedup();
        pids
    }

    /// Pids of the QEMU processes whose command line names this daemon's directory.
    pub fn qemu_pids(&self) -> Vec<i32> {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                    let c = String::from_utf8_lossy(&c);
                    c.contains("qemu-system") && self.names_dir(&c)
                })
            })
            .collect()
    }

    /// Pids of live monitors of this daemon.
    pub fn monitor_pids(&self) -> Vec<i32> {
        let mut pids = Vec::new();
        let dir = self.run().join("monitors");
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if e.path().extension().is_some_and(|x| x == "pid") {
                if let Some(pid) = std::fs::read_to_string(e.path())
                    .ok()
                    .and_then(|s| s.trim().parse::<i32>().ok())
                {
                    if Path::new(&format!("/proc/{pid}")).exists() {
                        pids.push(pid);
                    }
                }
            }
        }
        pids
    }
}

fn collect_procs(dir: &Path, out: &mut Vec<i32>) {
    if let Ok(s) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        out.extend(s.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    }
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            collect_procs(&e.path(), out);
        }
    }
}

fn remove_cgroup_tree(dir: &Path) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            remove_cgroup_tree(&e.path());
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// The last `n` lines of `s`.
/// Waits until `needle` is on the console of instance `name` (its log); returns the log.
pub fn wait_console(d: &Daemon, name: &str, needle: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let log = d.ok(&["logs", name]);
        if log.contains(needle) {
            return log;
        }
        assert!(
            Instant::now() < deadline,
            "{needle:?} not on the console of {name} within {timeout:?}:\n{}",
            tail(&log, 30)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Runs a host tool and asserts success; returns stdout.
#[track_caller]
pub fn tool(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd} ({e}): see scripts/debian-packages.txt"));
    assert!(
        out.status.success(),
        "{cmd} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // Kill every process of every instance; their monitors then clean up and exit.
        for _ in 0..50 {
            let pids = self.cgroup_pids();
            if pids.is_empty() {
                break;
            }
            for d in self.cgroup_dirs() {
                // Thaw v1 freezers so that SIGKILL lands.
                for e in walk_dirs(&d) {
                    let _ = std::fs::write(e.join("freezer.state"), "THAWED");
                    let _ = std::fs::write(e.join("cgroup.freeze"), "0");
                }
            }
            for pid in pids {
                // SAFETY: kill takes plain integers.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.monitor_pids().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        for pid in self.monitor_pids() {
            // SAFETY: kill takes plain integers.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let was_running = self.child.is_some();
        self.kill(libc::SIGTERM);
        // A daemon stopped with nothing left running removes its own parent cgroups: a test
        // that ends cleanly must leave none behind.
        let left = self.cgroup_dirs();
        if was_running && !left.is_empty() && !std::thread::panicking() {
            for d in &left {
                remove_cgroup_tree(d);
            }
            panic!("the daemon left its cgroups behind after a clean stop: {left:?}");
        }
        // Helpers the daemon started (dnsmasq, QEMU) name files of this directory.
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<i32>().ok()) else {
                continue;
            };
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if pid != std::process::id() as i32
                && self.names_dir(&String::from_utf8_lossy(&cmdline))
            {
                // SAFETY: kill takes plain integers.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        let mut mounts = self.mounts();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
        for d in self.cgroup_dirs() {
            remove_cgroup_tree(&d);
        }
        // Loop devices over files of this daemon (btrfs pools).
        if let Ok(out) = Command::new("losetup")
            .args(["-l", "-n", "-O", "NAME,BACK-FILE"])
            .output()
        {
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                let mut cols = line.split_whitespace();
                if let (Some(dev), Some(file)) = (cols.next(), cols.next()) {
                    if file.starts_with(&*self.dir.to_string_lossy()) && self.names_dir(file) {
                        let _ = Command::new("losetup").args(["-d", dev]).status();
                    }
                }
            }
        }
        if std::env::var_os("VESSEL_KEEP_TEST_DIRS").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn walk_dirs(d: &Path) -> Vec<PathBuf> {
    let mut out = vec![d.to_path_buf()];
    for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(walk_dirs(&e.path()));
        }
    }
    out
}

/// A raw HTTP request over the socket; returns (status, body).
pub fn http(socket: &Path, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let mut s = UnixStream::connect(socket).expect("connect");
    let body = body.unwrap_or("");
    // One write; a server that answers (a refusal) before reading the body may close its
    // end meanwhile: its answer is read all the same.
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: vessel\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    if let Err(e) = s.write_all(req.as_bytes()) {
        assert_eq!(
            e.kind(),
            std::io::ErrorKind::BrokenPipe,
            "writing the request: {e}"
        );
    }
    let mut resp = Vec::new();
    if let Err(e) = s.read_to_end(&mut resp) {
        // (The server's close with the request's end unread resets the connection after
        // its answer.)
        assert!(
            e.kind() == std::io::ErrorKind::ConnectionReset && !resp.is_empty(),
            "reading the answer to {method} {path}: {e}"
        );
    }
    let resp = String::from_utf8_lossy(&resp).into_owned();
    let status = resp
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_string();
    (status, body)
}

/// Waits for a spawned command at most `limit`, killing it past that; returns its output and
/// whether it had to be killed (a hang shows as a failed assertion, not a stuck test).
pub fn wait_bounded(mut child: Child, limit: Duration) -> (Output, bool) {
    let deadline = Instant::now() + limit;
    let mut killed = false;
    while child.try_wait().ok().flatten().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            killed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    (child.wait_with_output().expect("wait"), killed)
}

/// Sends `method path` asking for an upgrade, as `Framed::open` does, but returns the status
/// and body of an answer that refuses it (a 4xx with its JSON error).
pub fn upgrade_refused(socket: &Path, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = UnixStream::connect(socket).expect("connect");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: vessel\r\nConnection: Upgrade\r\nUpgrade: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        stream::PROTOCOL,
        body.len()
    )
    .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut r = BufReader::new(s);
    let mut status = String::new();
    r.read_line(&mut status).unwrap();
    let code = status
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    assert_ne!(code, 101, "the daemon accepted {method} {path} {body}");
    let mut len = 0usize;
    loop {
        let mut l = String::new();
        r.read_line(&mut l).unwrap();
        if let Some(v) = l.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
        if l == "\r\n" || l.is_empty() {
            break;
        }
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).unwrap();
    (code, String::from_utf8_lossy(&buf).into_owned())
}

/// An upgraded, framed stream to the daemon (exec or console).
pub struct Framed {
    s: BufReader<UnixStream>,
}

impl Framed {
    /// Opens `method path` with an upgrade; panics unless the daemon answers 101.
    pub fn open(socket: &Path, method: &str, path: &str, body: &str) -> Self {
        let mut s = UnixStream::connect(socket).expect("connect");
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: vessel\r\nConnection: Upgrade\r\nUpgrade: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            stream::PROTOCOL,
            body.len()
        )
        .unwrap();
        let mut r = BufReader::new(s);
        let mut status = String::new();
        r.read_line(&mut status).unwrap();
        if !status.contains(" 101 ") {
            // The daemon's message says why (its head, then its body).
            let mut rest = String::new();
            let _ = r.get_mut().set_read_timeout(Some(Duration::from_secs(5)));
            let _ = std::io::Read::read_to_string(&mut r, &mut rest);
            panic!("no upgrade: {status}{rest}");
        }
        loop {
            let mut l = String::new();
            r.read_line(&mut l).unwrap();
            if l == "\r\n" || l.is_empty() {
                break;
            }
        }
        r.get_ref()
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        Self { s: r }
    }

    /// Sets how long a read may wait before it fails.
    pub fn set_read_timeout(&self, timeout: Duration) {
        self.s.get_ref().set_read_timeout(Some(timeout)).unwrap();
    }

    /// Sends a frame, waiting at most `timeout` for the daemon to take it; an error when it
    /// does not (a client the daemon stopped reading from).
    pub fn try_send(
        &mut self,
        kind: FrameKind,
        payload: &[u8],
        timeout: Duration,
    ) -> std::io::Result<()> {
        self.s.get_ref().set_write_timeout(Some(timeout))?;
        stream::write_frame(self.s.get_mut(), kind, payload)
    }

    /// Sends a frame.
    pub fn send(&mut self, kind: FrameKind, payload: &[u8]) {
        stream::write_frame(self.s.get_mut(), kind, payload).unwrap();
    }

    /// Reads frames until the stdout seen so far contains `needle`; returns that output.
    pub fn read_until(&mut self, needle: &str) -> String {
        let mut out = String::new();
        while !out.contains(needle) {
            match stream::read_frame(&mut self.s) {
                Ok(Some((FrameKind::Stdout | FrameKind::Stderr, p))) => {
                    out.push_str(&String::from_utf8_lossy(&p))
                }
                Ok(Some((FrameKind::Exit, _))) | Ok(None) => break,
                Ok(Some(_)) => {}
                Err(e) => panic!("reading frames while waiting for {needle:?}: {e}; got {out:?}"),
            }
        }
        out
    }

    /// Reads frames until the exit frame; returns (output, exit code).
    pub fn wait_exit(&mut self) -> (String, i32) {
        let mut out = String::new();
        loop {
            match stream::read_frame(&mut self.s) {
                Ok(Some((FrameKind::Stdout | FrameKind::Stderr, p))) => {
                    out.push_str(&String::from_utf8_lossy(&p))
                }
                Ok(Some((FrameKind::Exit, p))) => {
                    return (out, stream::parse_i32(&p).unwrap_or(-1))
                }
                Ok(Some((FrameKind::Error, p))) => {
                    panic!("stream error: {}", String::from_utf8_lossy(&p))
                }
                Ok(Some(_)) => {}
                Ok(None) => panic!("stream ended without an exit frame; output {out:?}"),
                Err(e) => panic!("reading frames: {e}; output {out:?}"),
            }
        }
    }
}

/// Whether a process exists and has not exited (a zombie waiting for its reaper has).
pub fn alive(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the command name, which is in parentheses and may hold spaces.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    pid > 0 && !matches!(state, Some('Z') | Some('X') | None)
}

/// A network namespace of a test's own (for a daemon to run in), removed on drop.
pub struct TestNetns(pub String);

impl TestNetns {
    /// A fresh namespace with its loopback up, named after the test process and `tag`.
    pub fn new(tag: &str) -> TestNetns {
        let name = format!("vt{tag}{}", std::process::id());
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "ip netns add {name}");
        let ok = Command::new("ip")
            .args(["-n", &name, "link", "set", "lo", "up"])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "lo up in {name}");
        TestNetns(name)
    }

    /// Runs a command inside the namespace; its standard output.
    pub fn run(&self, args: &[&str]) -> String {
        let out = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.0))
            .arg("--")
            .args(args)
            .output()
            .expect("nsenter");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Names of the links in the namespace.
    pub fn links(&self) -> std::collections::BTreeSet<String> {
        let out = Command::new("ip")
            .args(["-n", &self.0, "-o", "link"])
            .output()
            .expect("ip");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .collect()
    }

    /// The MAC address of a link in the namespace.
    pub fn mac(&self, link: &str) -> String {
        let out = Command::new("ip")
            .args(["-n", &self.0, "-j", "link", "show", link])
            .output()
            .expect("ip");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v[0]["address"].as_str().unwrap_or_default().to_string()
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

// Network sandboxes (moved here from network.rs so that other test files share them).

static SANDBOXES: AtomicUsize = AtomicUsize::new(0);

/// Runs `ip` (iproute2) and asserts it succeeded.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("ip from iproute2");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Network namespaces made for one test and removed on drop (also on failure): `hosts`
/// (where daemons run) joined by an underlay bridge in `wan`, which also holds the
/// "internet" address 203.0.113.1. Host i has 198.51.100.(i+2) on the underlay.
pub struct Sandbox {
    /// The "wan" namespace: underlay bridge and the stand-in internet.
    pub wan: String,
    /// The hosts' namespaces.
    pub hosts: Vec<String>,
}

impl Sandbox {
    /// Makes `hosts` host namespaces joined by the wan's underlay.
    pub fn new(hosts: usize) -> Self {
        require_root();
        let tag = format!(
            "vn{}-{}",
            std::process::id(),
            SANDBOXES.fetch_add(1, Ordering::SeqCst)
        );
        let sb = Sandbox {
            wan: format!("{tag}-w"),
            hosts: (0..hosts).map(|i| format!("{tag}-h{i}")).collect(),
        };
        ip(&["netns", "add", &sb.wan]);
        ip(&["-n", &sb.wan, "link", "set", "lo", "up"]);
        ip(&["-n", &sb.wan, "link", "add", "ul", "type", "bridge"]);
        ip(&["-n", &sb.wan, "addr", "add", "198.51.100.1/24", "dev", "ul"]);
        ip(&["-n", &sb.wan, "addr", "add", "203.0.113.1/32", "dev", "lo"]);
        ip(&["-n", &sb.wan, "link", "set", "ul", "up"]);
        // IPv6 too: the underlay 2001:db8:1::/64 and an "internet" 2001:db8:ffff::1.
        ip(&[
            "-n",
            &sb.wan,
            "addr",
            "add",
            "2001:db8:1::1/64",
            "dev",
            "ul",
            "nodad",
        ]);
        ip(&[
            "-n",
            &sb.wan,
            "addr",
            "add",
            "2001:db8:ffff::1/128",
            "dev",
            "lo",
        ]);
        ip(&[
            "netns",
            "exec",
            &sb.wan,
            "sysctl",
            "-qw",
            "net.ipv6.conf.all.forwarding=1",
        ]);
        for (i, h) in sb.hosts.iter().enumerate() {
            ip(&["netns", "add", h]);
            ip(&["-n", h, "link", "set", "lo", "up"]);
            let peer = format!("p{i}");
            ip(&[
                "-n", h, "link", "add", "up0", "type", "veth", "peer", "name", &peer, "netns",
                &sb.wan,
            ]);
            ip(&["-n", &sb.wan, "link", "set", &peer, "master", "ul", "up"]);
            let addr = format!("198.51.100.{}/24", i + 2);
            ip(&["-n", h, "addr", "add", &addr, "dev", "up0"]);
            ip(&["-n", h, "link", "set", "up0", "up"]);
            ip(&["-n", h, "route", "add", "default", "via", "198.51.100.1"]);
            let addr6 = format!("2001:db8:1::{}/64", i + 2);
            ip(&["-n", h, "addr", "add", &addr6, "dev", "up0", "nodad"]);
            ip(&[
                "-n",
                h,
                "-6",
                "route",
                "add",
                "default",
                "via",
                "2001:db8:1::1",
            ]);
        }
        sb
    }

    /// Host i's underlay address.
    pub fn host_addr(i: usize) -> String {
        format!("198.51.100.{}", i + 2)
    }
}

/// A self-signed client certificate and its key, `DIR/NAME.crt` and `DIR/NAME.key`, made
/// by openssl (an EC P-256 key, valid two days).
pub fn self_signed(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (crt, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "2", "-subj", &format!("/CN={name}")])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl req: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (crt, key)
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        for h in self.hosts.iter().chain(std::iter::once(&self.wan)) {
            let _ = Command::new("ip").args(["netns", "del", h]).status();
        }
    }
}

impl Daemon {
    /// Starts a daemon inside the named network namespace as a fresh install runs it: its
    /// first start makes the default network (in that namespace only).
    pub fn start_in_netns_as_installed(netns: &str) -> Self {
        Self::start_in_netns_as_installed_with_env(netns, &[])
    }

    /// As [`Daemon::start_in_netns_as_installed`], with more environment for the daemon.
    pub fn start_in_netns_as_installed_with_env(netns: &str, env: &[(&str, &str)]) -> Self {
        let mut d = Self::start_with(Some(netns.to_string()));
        d.kill(libc::SIGTERM);
        d.default_network = true;
        d.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        d.spawn();
        d
    }
}

/// Runs `args` as the host user `uid` with gid `uid` and no supplementary groups; returns (exit
/// code, stderr). Through a shell: setpriv keeps root's capabilities until its own execve, so
/// the kernel would check the path of a program setpriv starts with root's capabilities.
pub fn as_host_user(uid: u32, args: &[&str]) -> (i32, String) {
    let out = Command::new("setpriv")
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={uid}"))
        .args(["--clear-groups", "--"])
        .args(["/bin/sh", "-c", "exec \"$@\"", "sh"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run setpriv (util-linux)");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `f` on a thread that has entered the network namespace `ns` (made by the test);
/// sockets it makes stay in that namespace whichever thread uses them later.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let fd = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        // SAFETY: setns on a namespace file we hold open; it changes this thread only.
        let rc = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&fd), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .expect("namespace thread")
}

/// A TCP port of 127.0.0.1 free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Debian's docker-registry serving plain HTTP on a loopback address, of the host or of a
/// network namespace the test made; killed on drop.
pub struct Registry {
    child: Child,
    /// Where it listens (`127.0.0.1:PORT`).
    pub addr: std::net::SocketAddr,
}

impl Registry {
    /// On a free port of the host's loopback, storing under `dir` (on another port again
    /// if the one free a moment ago was taken meanwhile).
    pub fn start(dir: &Path) -> Self {
        let mut tries = 0;
        loop {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("free port")
                .port();
            match Self::start_at(dir, None, port) {
                Ok(reg) => return reg,
                Err(e) if tries < 5 => eprintln!("docker-registry on port {port}: {e}; again"),
                Err(e) => panic!("docker-registry on port {port}: {e}"),
            }
            tries += 1;
        }
    }

    /// On `port` of the loopback of the namespace `ns`.
    pub fn start_in_netns(dir: &Path, ns: &str, port: u16) -> Self {
        Self::start_at(dir, Some(ns), port).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Started, once it answers as a registry (`GET /v2/`: not another process that holds
    /// the port); an error if it exits first.
    fn start_at(dir: &Path, ns: Option<&str>, port: u16) -> Result<Self, String> {
        assert!(
            Path::new("/usr/bin/docker-registry").exists(),
            "docker-registry is missing: apt-get install docker-registry"
        );
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
        std::fs::create_dir_all(dir).expect("registry dir");
        let config = dir.join("registry.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
                dir.join("data").display()
            ),
        )
        .expect("registry config");
        let mut cmd = match ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "/usr/bin/docker-registry"]);
                c
            }
            None => Command::new("/usr/bin/docker-registry"),
        };
        let child = cmd
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start docker-registry");
        let mut reg = Registry { child, addr };
        let answers = move || {
            use std::io::{Read, Write};
            let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
            else {
                return false;
            };
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut answer = String::new();
            s.write_all(b"GET /v2/ HTTP/1.0\r\n\r\n").is_ok()
                && s.read_to_string(&mut answer).is_ok()
                && answer.contains("Docker-Distribution-Api-Version")
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = reg.child.try_wait() {
                return Err(format!("docker-registry exited ({status})"));
            }
            let up = match ns {
                Some(ns) => in_netns(ns, answers),
                None => answers(),
            };
            if up {
                return Ok(reg);
            }
            if Instant::now() > deadline {
                return Err("docker-registry did not answer within 20 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A 512-byte boot sector that writes `msg` to COM1 and halts: an unmodified "guest OS" that
/// only firmware can start.
pub fn boot_sector(msg: &str) -> Vec<u8> {
    let mut s = vec![
        0xFA, 0x31, 0xC0, 0x8E, 0xD8, 0xBE, 0x16, 0x7C, 0xBA, 0xF8, 0x03, 0xAC, 0x84, 0xC0, 0x74,
        0x03, 0xEE, 0xEB, 0xF8, 0xF4, 0xEB, 0xFD,
    ];
    s.extend_from_slice(msg.as_bytes());
    s.push(0);
    s.resize(510, 0);
    s.extend_from_slice(&[0x55, 0xAA]);
    s
}
