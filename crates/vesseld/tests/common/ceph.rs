//! A one-host Ceph for the `ceph` pool tests, from Debian's packages as Ceph's own
//! development set-up (vstart) makes it: a monitor, a manager and one OSD whose BlueStore is
//! a plain (sparse) file, all on loopback, cephx on. Killed and its files removed on drop,
//! also when the test fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::tool;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A running one-host Ceph.
pub struct Ceph {
    pub dir: PathBuf,
    children: Vec<(String, Child)>,
}

fn need(bin: &str) {
    assert!(
        Path::new(bin).exists(),
        "{bin} is missing: apt-get install ceph-mon ceph-mgr ceph-osd ceph-common \
         (scripts/debian-packages.txt)"
    );
}

/// A free TCP port on loopback.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on loopback")
}

impl Ceph {
    /// Starts the monitor, manager and OSD; returns once the OSD is up and the manager
    /// answers (about 15 s).
    pub fn start() -> Self {
        for bin in [
            "/usr/bin/ceph-mon",
            "/usr/bin/ceph-mgr",
            "/usr/bin/ceph-osd",
            "/usr/bin/ceph",
            "/usr/bin/rbd",
            "/usr/bin/monmaptool",
            "/usr/bin/ceph-authtool",
        ] {
            need(bin);
        }
        let dir = PathBuf::from(format!(
            "/tmp/vt-ceph-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        for sub in ["mon.a", "mgr.x", "osd.0", "run", "log"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let mut c = Ceph {
            dir,
            children: Vec::new(),
        };
        let d = c.dir.display().to_string();
        let port = free_port();
        let fsid = std::fs::read_to_string("/proc/sys/kernel/random/uuid")
            .unwrap()
            .trim()
            .to_string();
        std::fs::write(
            c.conf(),
            format!(
                "[global]
fsid = {fsid}
mon host = v2:127.0.0.1:{port}
mon initial members = a
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
keyring = {d}/keyring
run dir = {d}/run
admin socket = {d}/run/$name.asok
log file = {d}/log/$name.log
ms bind msgr1 = false
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
osd crush chooseleaf type = 0
[mon]
mon data = {d}/mon.$id
public addr = v2:127.0.0.1:{port}
[mgr]
mgr data = {d}/mgr.$id
[osd]
osd data = {d}/osd.$id
osd objectstore = bluestore
bluestore block create = true
bluestore block size = 4294967296
osd memory target = 536870912
bluestore cache autotune = false
bluestore cache size = 67108864
"
            ),
        )
        .unwrap();
        let conf = c.conf().display().to_string();
        let keyring = format!("{d}/keyring");
        tool(
            "ceph-authtool",
            &[
                "--create-keyring",
                &keyring,
                "--gen-key",
                "-n",
                "mon.",
                "--cap",
                "mon",
                "allow *",
            ],
        );
        tool(
            "ceph-authtool",
            &[
                &keyring,
                "--gen-key",
                "-n",
                "client.admin",
                "--cap",
                "mon",
                "allow *",
                "--cap",
                "osd",
                "allow *",
                "--cap",
                "mgr",
                "allow *",
            ],
        );
        let monmap = format!("{d}/monmap");
        tool(
            "monmaptool",
            &[
                "--create",
                "--clobber",
                "--fsid",
                &fsid,
                "--addv",
                "a",
                &format!("[v2:127.0.0.1:{port}]"),
                &monmap,
            ],
        );
        tool(
            "ceph-mon",
            &[
                "-c",
                &conf,
                "--mkfs",
                "-i",
                "a",
                "--monmap",
                &monmap,
                "--keyring",
                &keyring,
            ],
        );
        c.daemon("ceph-mon", &["-i", "a"]);
        c.wait("the monitor", |c| c.try_ceph(&["mon", "stat"]).is_some());
        // The manager: pool statistics (ceph df) come from it.
        let mgr_keyring = format!("{d}/mgr.x/keyring");
        c.ceph(&[
            "auth",
            "get-or-create",
            "mgr.x",
            "mon",
            "allow profile mgr",
            "osd",
            "allow *",
            "-o",
            &mgr_keyring,
        ]);
        c.daemon("ceph-mgr", &["-i", "x", "--keyring", &mgr_keyring]);
        // The OSD, its BlueStore a file.
        let uuid = std::fs::read_to_string("/proc/sys/kernel/random/uuid")
            .unwrap()
            .trim()
            .to_string();
        let id = c.ceph(&["osd", "new", &uuid]).trim().to_string();
        let osd_keyring = format!("{d}/osd.{id}/keyring");
        tool(
            "ceph-authtool",
            &[
                "--create-keyring",
                &osd_keyring,
                "--gen-key",
                "-n",
                &format!("osd.{id}"),
            ],
        );
        c.ceph(&[
            "auth",
            "add",
            &format!("osd.{id}"),
            "osd",
            "allow *",
            "mon",
            "allow profile osd",
            "-i",
            &osd_keyring,
        ]);
        tool(
            "ceph-osd",
            &[
                "-c",
                &conf,
                "-i",
                &id,
                "--mkfs",
                "--osd-uuid",
                &uuid,
                "--keyring",
                &osd_keyring,
            ],
        );
        c.daemon("ceph-osd", &["-i", &id, "--keyring", &osd_keyring]);
        c.wait("the OSD up", |c| {
            c.try_ceph(&["osd", "stat"])
                .is_some_and(|s| s.contains("1 up"))
        });
        c.wait("the manager", |c| {
            c.try_ceph(&["mgr", "stat", "--format", "json"])
                .is_some_and(|s| {
                    s.contains("\"available\": true") || s.contains("\"available\":true")
                })
        });
        c
    }

    /// The configuration file (which names the admin keyring).
    pub fn conf(&self) -> PathBuf {
        self.dir.join("ceph.conf")
    }

    /// Stops the monitor (SIGKILL): Ceph stops answering its clients.
    pub fn stop_monitor(&mut self) {
        let (_, mon) = &mut self.children[0];
        let _ = mon.kill();
        let _ = mon.wait();
    }

    /// Starts the monitor again and waits for it.
    pub fn start_monitor(&mut self) {
        self.daemon("ceph-mon", &["-i", "a"]);
        let mon = self.children.pop().unwrap();
        self.children[0] = mon;
        self.wait("the monitor back", |c| {
            c.try_ceph(&["osd", "stat"])
                .is_some_and(|s| s.contains("1 up"))
        });
    }

    fn daemon(&mut self, bin: &str, args: &[&str]) {
        let conf = self.conf().display().to_string();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("log").join(format!("{bin}.out")))
            .unwrap();
        let child = Command::new(bin)
            .args(["-f", "-c", &conf])
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        self.children.push((bin.to_string(), child));
    }

    fn wait(&mut self, what: &str, ready: impl Fn(&Ceph) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(90);
        while !ready(self) {
            for (bin, child) in &mut self.children {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "{bin} exited ({status}) while waiting for {what}: {}",
                        self.dir.join("log").display()
                    );
                }
            }
            assert!(
                Instant::now() < deadline,
                "Ceph: {what} not ready within 90 s (logs in {})",
                self.dir.join("log").display()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    fn try_ceph(&self, args: &[&str]) -> Option<String> {
        let conf = self.conf().display().to_string();
        let out = Command::new("ceph")
            .args(["--conf", &conf, "--connect-timeout", "5"])
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs `ceph` as client.admin; panics on failure.
    pub fn ceph(&self, args: &[&str]) -> String {
        let conf = self.conf().display().to_string();
        let mut all = vec!["--conf", conf.as_str(), "--connect-timeout", "10"];
        all.extend_from_slice(args);
        tool("ceph", &all)
    }

    /// Runs `rbd` as client.admin; panics on failure.
    pub fn rbd(&self, args: &[&str]) -> String {
        let conf = self.conf().display().to_string();
        let mut all = vec!["--conf", conf.as_str()];
        all.extend_from_slice(args);
        tool("rbd", &all)
    }

    /// QEMU's name of image `pool/image` (for qemu-io and qemu-img).
    pub fn qemu_uri(&self, pool: &str, image: &str) -> String {
        format!("rbd:{pool}/{image}:conf={}", self.conf().display())
    }
}

impl Drop for Ceph {
    fn drop(&mut self) {
        // The OSD first, the monitor last.
        for (_, child) in self.children.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::env::var_os("VESSEL_KEEP_TEST_DIRS").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
