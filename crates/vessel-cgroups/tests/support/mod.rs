//! Helpers for tests on the host's real cgroups: a guard that always cleans up, and real
//! processes started inside a cgroup before they do their work.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use vessel_cgroups::{CgroupManager, CgroupVersion};

/// The parent of every test cgroup.
pub const PARENT: &str = "vessel-test";

static SERIAL: Mutex<()> = Mutex::new(());

/// Runs the real-cgroup tests one at a time: they measure cpu time and memory, and they reap
/// orphaned processes, which must not race with another test's children.
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Fails (never skips) when the tests cannot run here.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "these tests create cgroups under /sys/fs/cgroup and need root; run them as root \
         (CI does)"
    );
}

/// A cgroup `vessel-test/<name>-<pid>` that is destroyed when dropped, also when the test
/// panics, together with the parent directories it had to create.
pub struct TestCgroup {
    pub cg: Box<dyn CgroupManager>,
    pub path: String,
    made_parents: Vec<PathBuf>,
}

impl TestCgroup {
    pub fn new(name: &str) -> Self {
        require_root();
        // Orphans (the background children of a shell that exited) come to this process, which
        // reaps them on drop, instead of piling up as zombies under a pid 1 that may not reap.
        nix::sys::prctl::set_child_subreaper(true).expect("PR_SET_CHILD_SUBREAPER");
        let path = format!("{PARENT}/{name}-{}", std::process::id());
        let version = vessel_cgroups::detect().expect("detect the host's cgroup layout");
        let parents: Vec<PathBuf> = match version {
            CgroupVersion::V2 => vec![PathBuf::from(vessel_cgroups::CGROUP_ROOT).join(PARENT)],
            // Every hierarchy the backend uses, name=systemd and a hybrid cgroup2 included.
            CgroupVersion::V1 => vessel_cgroups::V1Manager::new(PARENT)
                .expect("a v1 manager for the parent")
                .dirs(),
        };
        sweep_stale(&parents);
        let made_parents = parents.into_iter().filter(|d| !d.exists()).collect();
        let cg = vessel_cgroups::manager(&path).expect("a cgroup manager for this host");
        if cg.exists() {
            // Left over by an earlier run that was killed before it could clean up.
            cg.destroy().expect("remove a stale test cgroup");
        }
        let guard = TestCgroup {
            cg,
            path,
            made_parents,
        };
        guard.cg.create().expect("create the test cgroup");
        guard
    }
}

impl TestCgroup {
    /// A guard for a manager built by the test itself (e.g. a v2 manager on another mount),
    /// with the parent directories that it may create (those missing now are removed on drop).
    pub fn custom(cg: Box<dyn CgroupManager>, path: String, parents: Vec<PathBuf>) -> Self {
        require_root();
        nix::sys::prctl::set_child_subreaper(true).expect("PR_SET_CHILD_SUBREAPER");
        if cg.exists() {
            cg.destroy().expect("remove a stale test cgroup");
        }
        let made_parents = parents.into_iter().filter(|d| !d.exists()).collect();
        let guard = TestCgroup {
            cg,
            path,
            made_parents,
        };
        guard.cg.create().expect("create the test cgroup");
        guard
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        if let Err(e) = self.cg.destroy() {
            eprintln!("cleanup: destroying {} failed: {e} ({e:?})", self.path);
        }
        for dir in &self.made_parents {
            // Fails harmlessly while another test cgroup still lives below it.
            let _ = std::fs::remove_dir(dir);
        }
        reap_orphans();
    }
}

/// Destroys test cgroups left by test processes that no longer run (killed before their
/// guards could clean up): names end in `-<pid>` of the test process.
fn sweep_stale(parents: &[PathBuf]) {
    let mut names: Vec<String> = parents
        .iter()
        .filter_map(|p| std::fs::read_dir(p).ok())
        .flatten()
        .flatten()
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    names.dedup();
    for name in names {
        let Some(pid) = name
            .rsplit_once('-')
            .and_then(|(_, p)| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() || std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        if let Ok(cg) = vessel_cgroups::manager(&format!("{PARENT}/{name}")) {
            match cg.destroy() {
                Ok(()) => eprintln!("removed stale test cgroup {PARENT}/{name}"),
                Err(e) => eprintln!("could not remove stale test cgroup {PARENT}/{name}: {e}"),
            }
        }
    }
}

/// Reaps every exited child (orphans re-parented to this subreaper included).
pub fn reap_orphans() {
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => break,
            Ok(_) => {}
        }
    }
}

/// A `/bin/sh -c` process that was moved into a cgroup before it started its work.
pub struct Proc {
    pub child: Child,
    pub stdin: ChildStdin,
    pub stdout: BufReader<ChildStdout>,
}

impl Proc {
    /// Starts `sh -c 'read go; <script>'`, moves it into `cg`, then lets it go. stderr goes to
    /// `stderr`.
    pub fn start_in(cg: &dyn CgroupManager, script: &str, stderr: Stdio) -> Proc {
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg(format!("read go; {script}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn /bin/sh");
        let pid = i32::try_from(child.id()).expect("pid fits i32");
        cg.add_process(pid).expect("move the shell into the cgroup");
        let mut stdin = child.stdin.take().expect("piped stdin");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        writeln!(stdin, "go").expect("start the shell's work");
        Proc {
            child,
            stdin,
            stdout,
        }
    }

    /// The shell's pid.
    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pid fits i32")
    }

    /// Sends a line to the shell's stdin and reads one line back.
    pub fn ask(&mut self, line: &str) -> String {
        writeln!(self.stdin, "{line}").expect("write to the shell");
        let mut answer = String::new();
        self.stdout
            .read_line(&mut answer)
            .expect("read from the shell");
        answer.trim().to_owned()
    }

    /// Waits for the shell to exit, at most `timeout`.
    pub fn wait_for_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "process {} still running after {timeout:?}",
                self.pid()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the shell still runs.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }
}

/// Whether a process is gone or a zombie (killed, not yet reaped).
pub fn dead(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // "pid (comm) S ..." - the state follows the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']))
            .unwrap_or(false),
    }
}

/// Cpu time of a cgroup, seconds.
pub fn cpu_seconds(cg: &dyn CgroupManager) -> f64 {
    cg.stats().expect("stats").cpu_usage_ns as f64 / 1e9
}

/// Waits up to 10 s (a loaded machine gives a busy loop little of a CPU) for `cg`'s CPU
/// time to pass `at_least` seconds; panics with `what` if it does not.
pub fn cpu_passes(cg: &dyn CgroupManager, at_least: f64, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let used = cpu_seconds(cg);
        if used > at_least {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: {used:.4} s of CPU after 10 s, not past {at_least:.4}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
