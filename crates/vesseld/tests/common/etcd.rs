//! A real etcd cluster for the cluster tests: one Debian `etcd` per host namespace of a
//! [`super::Sandbox`], peers and clients on the underlay; killed and its data removed on
//! drop, also when the test fails.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One etcd member.
pub struct EtcdMember {
    pub name: String,
    pub netns: String,
    pub addr: String,
    dir: PathBuf,
    child: Option<Child>,
    initial_cluster: String,
}

/// An etcd cluster, one member per host namespace.
pub struct Etcd {
    pub members: Vec<EtcdMember>,
}

fn etcd_bin() -> &'static str {
    assert!(
        Path::new("/usr/bin/etcd").exists() && Path::new("/usr/bin/etcdctl").exists(),
        "etcd is missing: apt-get install etcd-server etcd-client"
    );
    "/usr/bin/etcd"
}

impl EtcdMember {
    /// Starts (again) this member's process.
    pub fn spawn(&mut self, state: &str) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("etcd.log"))
            .unwrap();
        let peer = format!("http://{}:2380", self.addr);
        let client = format!("http://{}:2379", self.addr);
        let mut child = Command::new("nsenter");
        child
            .arg(format!("--net=/run/netns/{}", self.netns))
            .arg("--")
            .arg(etcd_bin())
            .args(["--name", &self.name])
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-state", state])
            .args(["--initial-cluster-token", "vessel-test"])
            // Quick elections: the tests kill members.
            .args(["--heartbeat-interval", "100", "--election-timeout", "1000"])
            // A member back from a partition does not depose the leader with the terms it
            // counted up alone (an election the others' lease renewals would wait out).
            .arg("--pre-vote")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        // Killed with the test thread that started it, also when the test process is
        // killed (no drop runs then); nsenter execs etcd, which keeps the setting.
        // SAFETY: the closure only calls prctl and reads errno, both async-signal-safe, as
        // code between fork and exec must be.
        unsafe {
            child.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        self.child = Some(child.spawn().expect("start etcd"));
    }

    /// Kills this member's process (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Its client URL.
    pub fn url(&self) -> String {
        format!("http://{}:2379", self.addr)
    }

    /// The tail of its log.
    pub fn log(&self) -> String {
        let s = std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default();
        s.lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Etcd {
    /// One member in each of `hosts` (namespaces), member i at `addrs[i]`; waits until the
    /// cluster answers.
    pub fn start(hosts: &[String], addrs: &[String]) -> Self {
        let initial_cluster = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| format!("e{i}=http://{a}:2380"))
            .collect::<Vec<_>>()
            .join(",");
        let mut members: Vec<EtcdMember> = hosts
            .iter()
            .zip(addrs)
            .enumerate()
            .map(|(i, (h, a))| {
                let dir = PathBuf::from(format!("/tmp/vetcd-{}-{h}", std::process::id()));
                let _ = std::fs::remove_dir_all(&dir);
                std::fs::create_dir_all(&dir).unwrap();
                EtcdMember {
                    name: format!("e{i}"),
                    netns: h.clone(),
                    addr: a.clone(),
                    dir,
                    child: None,
                    initial_cluster: initial_cluster.clone(),
                }
            })
            .collect();
        for m in &mut members {
            m.spawn("new");
        }
        let etcd = Etcd { members };
        etcd.wait_healthy(Duration::from_secs(30));
        etcd
    }

    /// The client URLs, comma-separated.
    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(|m| m.url())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Runs `etcdctl ARGS` against the first running member (in its namespace) and returns
    /// what it printed; panics if it fails.
    pub fn ctl(&self, args: &[&str]) -> String {
        let m = self
            .members
            .iter()
            .find(|m| m.child.is_some())
            .expect("no etcd member runs");
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &m.netns,
                "etcdctl",
                "--endpoints",
                &m.url(),
            ])
            .args(args)
            .env("ETCDCTL_API", "3")
            .output()
            .expect("etcdctl runs");
        assert!(
            out.status.success(),
            "etcdctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits up to `within` for etcd's value at `key` to hold `needle` (what a daemon
    /// writes on its own time, as the cluster's instance index).
    pub fn wait_value(&self, key: &str, needle: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let value = self.ctl(&["get", key, "--print-value-only"]);
            if value.contains(needle) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "etcd's {key} holds no {needle} after {within:?}: {value}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until every running member answers `etcdctl endpoint health`.
    pub fn wait_healthy(&self, within: Duration) {
        let deadline = Instant::now() + within;
        for m in self.members.iter().filter(|m| m.child.is_some()) {
            loop {
                let ok = Command::new("ip")
                    .args([
                        "netns",
                        "exec",
                        &m.netns,
                        "etcdctl",
                        "--endpoints",
                        &m.url(),
                    ])
                    .args(["endpoint", "health"])
                    .env("ETCDCTL_API", "3")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                if ok {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "etcd member {} is not healthy:\n{}",
                    m.name,
                    m.log()
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for m in &mut self.members {
            m.kill();
            let _ = std::fs::remove_dir_all(&m.dir);
        }
    }
}
