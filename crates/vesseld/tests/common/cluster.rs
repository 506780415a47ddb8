//! Helpers of the cluster tests: init, join tokens, addresses, waiting.

use std::time::{Duration, Instant};

use super::etcd::Etcd;
use super::{Daemon, Sandbox};

pub fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

/// `vessel cluster init NAME --address ADDRESS --etcd ETCD` on `d`: its output when it
/// succeeds (`ok`), its error when it fails (and must).
pub fn init(d: &Daemon, name: &str, address: &str, etcd: &str, ok: bool) -> String {
    let args = [
        "cluster",
        "init",
        name,
        "--address",
        address,
        "--etcd",
        etcd,
    ];
    if ok {
        d.ok(&args)
    } else {
        d.fails(&args)
    }
}

pub fn token(d: &Daemon, name: &str) -> String {
    let t = json(&d.ok(&["cluster", "add", name, "--format", "json"]));
    t["token"].as_str().unwrap().to_string()
}

pub fn address_on(d: &Daemon, name: &str, network: &str) -> String {
    let v = json(&d.ok(&["list", "--format", "json"]));
    let i = v
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == name)
        .unwrap_or_else(|| panic!("{name} not listed: {v}"));
    let nic = i["nics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["network"] == network)
        .unwrap_or_else(|| panic!("{name} has no NIC on {network}: {i}"));
    nic["ipv4"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string()
}

pub fn wait(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Where the daemon on host `i` of a cluster sandbox serves HTTPS: port 8443 on its
/// underlay address.
pub fn listen(i: usize) -> String {
    format!("{}:8443", Sandbox::host_addr(i))
}

/// `hosts` network namespaces, each with an etcd member, and a daemon on each of the first
/// `daemons` (HTTPS on [`listen`]), in no cluster yet. Bound in this order (`let (sb, etcd,
/// d) = …`), the daemons go first, then etcd, then the namespaces.
pub fn unjoined(hosts: usize, daemons: usize) -> (Sandbox, Etcd, Vec<Daemon>) {
    let sb = Sandbox::new(hosts);
    let addrs: Vec<String> = (0..hosts).map(Sandbox::host_addr).collect();
    let etcd = Etcd::start(&sb.hosts, &addrs);
    let d: Vec<Daemon> = (0..daemons)
        .map(|i| Daemon::start_in_netns_listening(&sb.hosts[i], &listen(i)))
        .collect();
    (sb, etcd, d)
}

/// A cluster of `n` members, each its own network namespace, etcd member and daemon (HTTPS on
/// the underlay, port 8443): `m0` made it, the others joined with tokens. Bound in this order
/// (`let (sb, etcd, d) = …`), the daemons go first, then etcd, then the namespaces.
pub fn members(n: usize) -> (Sandbox, Etcd, Vec<Daemon>) {
    let (sb, etcd, d) = unjoined(n, n);
    init(&d[0], "m0", &listen(0), &etcd.endpoints(), true);
    for (i, di) in d.iter().enumerate().skip(1) {
        let t = token(&d[0], &format!("m{i}"));
        di.ok(&["cluster", "join", &t, "--address", &listen(i)]);
    }
    (sb, etcd, d)
}

/// Loads the nft `script` in the namespace `ns`.
pub fn nft(ns: &str, script: &str) {
    let mut child = std::process::Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("nft");
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), script.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success(), "nft -f - failed: {script}");
}

/// Every packet into and out of the namespace dropped (loopback too: its etcd member is cut
/// off from the others).
pub const CUT_ALL: &str = "table inet vessel_test_cut {\n chain in {\n  type filter hook input priority -300; policy drop;\n }\n chain out {\n  type filter hook output priority -300; policy drop;\n }\n}\n";
/// Only the way to etcd's clients dropped: the member is alive but cut off from etcd.
pub const CUT_ETCD: &str = "table inet vessel_test_cut {\n chain out {\n  type filter hook output priority 0;\n  tcp dport 2379 drop\n }\n}\n";
/// Takes a cut away again.
pub const UNCUT: &str = "delete table inet vessel_test_cut\n";

/// Counts ten times a second with `count` until dropped (an instance's processes on the
/// host); the most seen at once.
pub struct Watch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    most: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    least: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watch {
    pub fn start(count: fn() -> usize) -> Watch {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let most = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let least = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(usize::MAX));
        let (s, m, l) = (stop.clone(), most.clone(), least.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let n = count();
                m.fetch_max(n, Ordering::SeqCst);
                l.fetch_min(n, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Watch {
            stop,
            most,
            least,
            thread: Some(thread),
        }
    }

    /// The highest count seen since the start.
    pub fn most(&self) -> usize {
        self.most.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The lowest count seen since the start (`usize::MAX` before the first look).
    pub fn least(&self) -> usize {
        self.least.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// How many processes on the host have a command line (its NUL-separated arguments) that
/// `matches`.
pub fn processes(matches: impl Fn(&[&[u8]]) -> bool) -> usize {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .filter(|e| {
            let raw = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = raw.split(|&b| b == 0).filter(|a| !a.is_empty()).collect();
            matches(&args)
        })
        .count()
}

/// Where instance `name` runs and whether it answers, as `d` sees it: its member once it
/// is running and an exec through `d` works.
pub fn answering(d: &Daemon, name: &str) -> Option<String> {
    let info = d.vessel(&["info", name, "--format", "json"]);
    if !info.status.success() {
        return None;
    }
    let v = json(&String::from_utf8_lossy(&info.stdout));
    if v["status"] != "running" {
        return None;
    }
    let exec = d.vessel(&["exec", name, "-T", "--", "true"]);
    exec.status
        .success()
        .then(|| v["location"].as_str().unwrap_or("?").to_string())
}
