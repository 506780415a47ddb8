//! Helpers of the cluster tests: init, join tokens, addresses, waiting.

use std::time::{Duration, Instant};

use super::Daemon;

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
