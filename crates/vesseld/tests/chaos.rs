//! Chaos: concurrent launches, starts, stops and deletes of containers and a VM, network
//! creates, attaches, forwards and balancers, while the daemon is SIGKILLed at random points
//! (a third of the time within the first 100 ms of the operations) under CPU load. After every
//! restart the kernel's state matches the store and nothing is transitional; at the end,
//! deleting everything leaves nothing behind.
//!
//! `VESSEL_CHAOS_ITERATIONS` (default 30) and `VESSEL_CHAOS_SEED` (default: the clock; printed,
//! so a failure can be replayed) tune it; `bench/chaos.sh` runs it longer.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::{alive, Daemon, TestNetns};

/// A small deterministic generator (xorshift64*), so a seed replays a run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> Option<&'a T> {
        (!v.is_empty()).then(|| &v[self.below(v.len() as u64) as usize])
    }
}

/// Busy loops on every core while alive.
struct Load(Vec<Child>);

impl Load {
    fn start() -> Load {
        let n = std::thread::available_parallelism().map_or(2, |n| n.get());
        Load(
            (0..n)
                .map(|_| {
                    Command::new("sh")
                        .args(["-c", "while :; do :; done"])
                        .spawn()
                        .unwrap()
                })
                .collect(),
        )
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Names of the nftables tables in the namespace.
fn tables(ns: &TestNetns) -> BTreeSet<String> {
    ns.run(&["nft", "list", "tables"])
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2).map(String::from))
        .collect()
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

/// The instances by name, as the daemon lists them.
fn instances(d: &Daemon) -> BTreeMap<String, serde_json::Value> {
    json(&d.ok(&["list", "--format", "json"]))
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["name"].as_str().unwrap().to_string(), i.clone()))
        .collect()
}

fn networks(d: &Daemon) -> Vec<serde_json::Value> {
    json(&d.ok(&["network", "list", "--format", "json"]))
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Processes whose command line names the daemon's directory (dnsmasq, monitors, QEMU).
fn helpers(d: &Daemon, what: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let c = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let c = String::from_utf8_lossy(&c);
            d.names_dir(&c) && c.contains(what)
        })
        .collect()
}

/// What must hold after a restart; `Err` says what does not.
fn check(d: &Daemon, ns: &TestNetns) -> Result<(), String> {
    let insts = instances(d);
    let mut running = BTreeSet::new();
    for (name, i) in &insts {
        let status = i["status"].as_str().unwrap_or_default();
        match status {
            "running" => {
                running.insert(name.clone());
            }
            "stopped" | "error" => {}
            other => return Err(format!("{name} is {other}")),
        }
    }
    // Every running container has a live init that answers exec; a VM its QEMU.
    for name in &running {
        let i = &insts[name];
        let pid = d.info(name)["state"]["pid"].as_i64().unwrap_or(0) as i32;
        if pid <= 0 || !alive(pid) {
            return Err(format!("{name} is running without a live process: {i}"));
        }
        if i["type"] == "container" {
            let out = d.vessel(&["exec", name, "-T", "--", "true"]);
            if !out.status.success() {
                return Err(format!(
                    "exec in running {name}: {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
    }
    let vms = running.iter().filter(|n| insts[*n]["type"] == "vm").count();
    // VMs' QEMUs (with a pid file); the accelerator probe's QEMU, which a start may be
    // running for a few seconds, is the daemon's child and ends with it.
    let qemus = helpers(d, "qemu-system")
        .into_iter()
        .filter(|pid| {
            let c = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            String::from_utf8_lossy(&c).contains("-pidfile")
        })
        .count();
    if qemus != vms {
        return Err(format!("{qemus} QEMU processes for {vms} running VMs"));
    }
    let containers: BTreeSet<String> = running
        .iter()
        .filter(|n| insts[*n]["type"] == "container")
        .cloned()
        .collect();
    // One monitor per running container, no more; a root mount per running container.
    let monitors = d.monitor_pids().len();
    if monitors != containers.len() {
        return Err(format!(
            "{monitors} monitors for {} running containers",
            containers.len()
        ));
    }
    let rootfs: BTreeSet<String> = d
        .mounts()
        .iter()
        .filter_map(|m| m.strip_suffix("/rootfs"))
        .filter_map(|m| m.rsplit('/').next().map(String::from))
        .collect();
    if rootfs != containers {
        return Err(format!("root mounts {rootfs:?}, running {containers:?}"));
    }
    // A cgroup only for what runs.
    let parent = d.cgroup_parent();
    let mut cgroups = BTreeSet::new();
    for h in ["pids", "memory", "unified"] {
        for e in std::fs::read_dir(format!("/sys/fs/cgroup/{h}/{parent}"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                cgroups.insert(e.file_name().to_string_lossy().into_owned());
            }
        }
    }
    let extra: Vec<&String> = cgroups
        .iter()
        .filter(|c| !running.iter().any(|r| c.ends_with(r.as_str())))
        .collect();
    if !extra.is_empty() {
        return Err(format!("cgroups of nothing running: {extra:?}"));
    }
    // Networks: a bridge, a table and a dnsmasq each; nothing of a network that is gone; a
    // host-side NIC only for a lease of something running (containers) or of a VM.
    let nets = networks(d);
    let links = ns.links();
    let tables = tables(ns);
    let mut leased = BTreeSet::new();
    for n in &nets {
        let name = n["name"].as_str().unwrap();
        if !links.contains(&format!("vbr-{name}")) {
            return Err(format!("network {name} has no bridge: {links:?}"));
        }
        if !tables.contains(&format!("vessel-{name}")) {
            return Err(format!("network {name} has no nft table: {tables:?}"));
        }
        for l in n["leases"].as_array().into_iter().flatten() {
            let inst = l["instance"].as_str().unwrap_or_default();
            let host = l["host_interface"].as_str().unwrap_or_default().to_string();
            let up = running.contains(inst);
            let container = insts.get(inst).is_some_and(|i| i["type"] == "container");
            if container && up && !links.contains(&host) {
                return Err(format!("{inst} runs without its NIC {host}"));
            }
            leased.insert(host);
        }
    }
    for l in &links {
        let ours = l.starts_with("vbr-") || l.starts_with("vx-") || l.starts_with("vifb");
        if l.starts_with("vbr-")
            && !nets
                .iter()
                .any(|n| format!("vbr-{}", n["name"].as_str().unwrap()) == *l)
        {
            return Err(format!("a bridge of no network: {l}"));
        }
        if !ours && l != "lo" && !leased.contains(l) {
            return Err(format!("a link of no lease: {l} (links {links:?})"));
        }
    }
    for t in &tables {
        if let Some(net) = t.strip_prefix("vessel-") {
            if !nets.iter().any(|n| n["name"] == net) {
                return Err(format!("an nft table of no network: {t}"));
            }
        }
    }
    let dns = helpers(d, "dnsmasq").len();
    if dns != nets.len() {
        return Err(format!("{dns} dnsmasq for {} networks", nets.len()));
    }
    Ok(())
}

/// Waits (a bounded while) for `check` to hold: a restarted daemon follows what it adopted
/// in the background.
fn settle(d: &Daemon, ns: &TestNetns, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match check(d, ns) {
            Ok(()) => return,
            Err(e) if Instant::now() > deadline => {
                panic!(
                    "{what}: {e}\n--- daemon log tail ---\n{}",
                    common::tail(&d.log(), 60)
                )
            }
            Err(_) => std::thread::sleep(Duration::from_millis(300)),
        }
    }
}

#[test]
fn the_daemon_killed_at_random_points_leaves_a_consistent_host() {
    let iterations: usize = std::env::var("VESSEL_CHAOS_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let seed: u64 = std::env::var("VESSEL_CHAOS_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    eprintln!("chaos: {iterations} iterations, VESSEL_CHAOS_SEED={seed}");
    let mut rng = Rng(seed);
    // The namespace has no way to Debian's mirror: a daemon outside builds the VM image.
    let builder = Daemon::start();
    builder.ok(&["image", "build", "vm"]);
    let bundle = builder.dir.join("vm.tar");
    builder.ok(&["image", "export", "vm/busybox", bundle.to_str().unwrap()]);
    let ns = TestNetns::new("ch");
    let mut d = Daemon::start_in_netns(&ns.0);
    d.busybox();
    d.ok(&[
        "image",
        "import",
        bundle.to_str().unwrap(),
        "--alias",
        "vm/busybox",
    ]);
    drop(builder);
    d.ok(&["network", "create", "lan", "--subnet", "10.77.0.0/24"]);
    d.ok(&["create", "vm/busybox", "vm1", "--vm", "-l", "memory=192MiB"]);
    d.ok(&["network", "attach", "lan", "vm1"]);
    let load = Load::start();
    let started = Instant::now();
    let mut next = 0usize;
    let mut kills_early = 0;
    for it in 0..iterations {
        let insts = instances(&d);
        let names: Vec<String> = insts.keys().cloned().collect();
        let containers: Vec<String> = insts
            .iter()
            .filter(|(_, i)| i["type"] == "container")
            .map(|(n, _)| n.clone())
            .collect();
        let mut actions: Vec<Vec<String>> = Vec::new();
        for _ in 0..(2 + rng.below(4)) {
            let a: Vec<String> = match rng.below(13) {
                0 | 1 if containers.len() < 8 => {
                    next += 1;
                    let n = format!("c{next}");
                    if rng.below(2) == 0 {
                        vec!["launch", "busybox", &n, "--network", "lan"]
                    } else {
                        vec!["launch", "busybox", &n]
                    }
                    .into_iter()
                    .map(String::from)
                    .collect()
                }
                2 => match rng.pick(&names) {
                    Some(n) => vec!["start".into(), n.clone()],
                    None => continue,
                },
                3 => match rng.pick(&names) {
                    Some(n) if rng.below(2) == 0 => vec!["stop".into(), n.clone()],
                    Some(n) => vec!["stop".into(), "--force".into(), n.clone()],
                    None => continue,
                },
                4 => match rng.pick(&containers) {
                    Some(n) => vec!["restart".into(), "--force".into(), n.clone()],
                    None => continue,
                },
                5 => match rng.pick(&containers) {
                    Some(n) => vec!["delete".into(), "--force".into(), n.clone()],
                    None => continue,
                },
                6 => match rng.pick(&containers) {
                    Some(n) => vec!["network".into(), "attach".into(), "lan".into(), n.clone()],
                    None => continue,
                },
                7 => match rng.pick(&containers) {
                    Some(n) => vec!["network".into(), "detach".into(), "lan".into(), n.clone()],
                    None => continue,
                },
                8 => match rng.pick(&containers) {
                    Some(n) => [
                        "network",
                        "forward",
                        "add",
                        "lan",
                        "--port",
                        &(20000 + rng.below(20)).to_string(),
                        "--to",
                        &format!("{n}:80"),
                    ]
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
                    None => continue,
                },
                9 => match rng.pick(&containers) {
                    Some(n) => [
                        "network",
                        "lb",
                        "add",
                        "lan",
                        &format!("lb{}", rng.below(3)),
                        "--address",
                        "10.77.0.1",
                        "--port",
                        &format!("tcp:{}:80", 21000 + rng.below(3)),
                        "--backend",
                        n,
                    ]
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
                    None => continue,
                },
                10 => vec![
                    "network".into(),
                    "lb".into(),
                    "delete".into(),
                    "lan".into(),
                    format!("lb{}", rng.below(3)),
                ],
                11 => {
                    let k = rng.below(2);
                    if rng.below(2) == 0 {
                        vec![
                            "network".into(),
                            "create".into(),
                            format!("tmp{k}"),
                            "--subnet".into(),
                            format!("10.78.{k}.0/24"),
                        ]
                    } else {
                        vec!["network".into(), "delete".into(), format!("tmp{k}")]
                    }
                }
                _ => match rng.below(2) {
                    0 => vec!["start".into(), "vm1".into()],
                    _ => vec!["stop".into(), "--force".into(), "vm1".into()],
                },
            };
            actions.push(a);
        }
        let children: Vec<Child> = actions
            .iter()
            .map(|a| {
                let args: Vec<&str> = a.iter().map(String::as_str).collect();
                d.spawn_vessel(&args)
            })
            .collect();
        let early = rng.below(3) == 0;
        let delay = if early {
            kills_early += 1;
            rng.below(100)
        } else {
            100 + rng.below(1400)
        };
        std::thread::sleep(Duration::from_millis(delay));
        d.kill(libc::SIGKILL);
        for c in children {
            let _ = common::wait_bounded(c, Duration::from_secs(30));
        }
        d.spawn();
        settle(
            &d,
            &ns,
            &format!("iteration {it} (killed {delay} ms into {actions:?})"),
        );
    }
    drop(load);
    let insts = instances(&d);
    let running = insts.values().filter(|i| i["status"] == "running").count();
    eprintln!(
        "chaos: {iterations} kills ({kills_early} within 100 ms) in {:.0?}; {} instances made, \
         {} left ({running} running), {} networks",
        started.elapsed(),
        next,
        insts.len(),
        networks(&d).len()
    );
    // Everything deleted: nothing left on the host.
    let all: Vec<String> = instances(&d).into_keys().collect();
    if !all.is_empty() {
        let mut args = vec!["delete", "--force"];
        args.extend(all.iter().map(String::as_str));
        d.ok(&args);
    }
    for n in networks(&d) {
        d.ok(&["network", "delete", n["name"].as_str().unwrap()]);
    }
    settle(&d, &ns, "after deleting everything");
    assert!(d.mounts().is_empty(), "{:?}", d.mounts());
    assert!(d.monitor_pids().is_empty());
    assert!(helpers(&d, "dnsmasq").is_empty());
    assert!(helpers(&d, "qemu-system").is_empty());
    let links: Vec<String> = ns.links().into_iter().filter(|l| l != "lo").collect();
    assert!(links.is_empty(), "links left: {links:?}");
    let tables = tables(&ns);
    assert!(tables.is_empty(), "nft tables left: {tables:?}");
    let left: Vec<_> = std::fs::read_dir(d.root().join("instances"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "instance files left: {left:?}");
    d.kill(libc::SIGTERM);
    assert!(
        d.cgroup_dirs().is_empty(),
        "cgroups left: {:?}",
        d.cgroup_dirs()
    );
}
