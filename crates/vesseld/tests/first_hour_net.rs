//! Networking in a new user's first hour, through the CLI against real daemons: a default
//! network that new instances get (names resolve, the internet is reached through NAT, with
//! no network command typed), a live loopback, addresses shown by `list` and `info`,
//! forwards that answer like Docker's published ports, and limit and overlay changes that do
//! only what they say. Daemons with networks run in network namespaces the tests make
//! (`common::Sandbox`), never on the host's own network.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{ip, Daemon, Sandbox};

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// Starts a busybox container that sleeps (`extra` are more `launch` arguments).
fn sleeper(d: &Daemon, name: &str, extra: &[&str]) {
    let mut args = vec!["launch", "busybox", name];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--", "sleep", "3600"]);
    d.ok(&args);
}

/// Whether `to` answers one of up to three pings from `from`, one after the other: for
/// what must reach (a first packet may wait for ARP, or be lost on a loaded machine).
fn pings(d: &Daemon, from: &str, to: &str) -> bool {
    let script =
        format!("for i in 1 2 3; do ping -c 1 -W 2 {to} >/dev/null && exit 0; done; exit 1");
    d.sh(from, &script).0 == 0
}

/// The body of an HTTP GET run inside the namespace `ns` (busybox wget; "" when nothing
/// answered).
fn fetch_in(ns: &str, url: &str) -> String {
    let out = Command::new("ip")
        .args([
            // busybox 1.35's wget crashes with -T; timeout(1) bounds it instead.
            "netns", "exec", ns, "timeout", "5", "busybox", "wget", "-q", "-O", "-", url,
        ])
        .stdin(Stdio::null())
        .output()
        .expect("ip netns exec");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The body of an HTTP GET from inside instance `from`.
fn fetch_from(d: &Daemon, from: &str, url: &str) -> String {
    d.sh(from, &format!("timeout 5 wget -q -O - {url}"))
        .1
        .trim()
        .to_string()
}

/// `ip -o link` of a namespace.
fn links_in(ns: &str) -> String {
    let out = Command::new("ip")
        .args(["-n", ns, "-o", "link"])
        .output()
        .expect("ip");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The loopback is up in a container's own namespace before its first instruction, with or
/// without NICs.
#[test]
fn the_loopback_is_up_from_a_containers_first_instruction() {
    let d = Daemon::start();
    d.busybox();
    d.ok(&[
        "launch",
        "busybox",
        "lo1",
        "--no-network",
        "--",
        "sh",
        "-c",
        "if ping -c 1 -W 2 127.0.0.1 >/dev/null; then echo LO-UP; else echo LO-DOWN; fi; \
         sleep 3600",
    ]);
    d.wait_for("the init's first line", Duration::from_secs(20), || {
        d.ok(&["logs", "lo1"]).contains("LO-")
    });
    let log = d.ok(&["logs", "lo1"]);
    assert!(
        log.contains("LO-UP"),
        "the init found its loopback down: {log}"
    );
    let (code, out) = d.sh("lo1", "ip -o link show lo");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("UP"), "{out}");
    let (code, out) = d.sh("lo1", "ip -o link");
    assert_eq!(
        (code, out.lines().count()),
        (0, 1),
        "only the loopback: {out}"
    );
    // Restarted, it comes back up.
    d.ok(&["restart", "lo1", "--force"]);
    assert!(pings(&d, "lo1", "127.0.0.1"));
}

/// The last point: on a fresh install, with no network command typed, a new
/// container pings another by name and reaches the internet stand-in through NAT.
#[test]
fn a_fresh_install_resolves_names_and_reaches_the_internet_with_no_network_command() {
    let sb = Sandbox::new(1);
    let d = Daemon::start_in_netns_as_installed(&sb.hosts[0]);
    d.busybox();
    sleeper(&d, "alpha", &[]);
    sleeper(&d, "beta", &[]);
    assert!(pings(&d, "alpha", "beta"), "alpha cannot ping beta by name");
    assert!(pings(&d, "beta", "alpha.default.vessel"));
    assert!(pings(&d, "alpha", "203.0.113.1"), "no way out through NAT");
    // The default network the first start made: the first candidate, as the host's
    // namespace has no route into 10.42.0.0/24.
    let nets = json(&d.ok(&["network", "list", "--format", "json"]));
    assert_eq!(nets.as_array().map(Vec::len), Some(1), "{nets}");
    assert_eq!(nets[0]["name"], "default", "{nets}");
    assert_eq!(nets[0]["subnet"], "10.42.0.0/24", "{nets}");
    assert_eq!(nets[0]["default"], true, "{nets}");
    assert!(d.ok(&["network", "list"]).contains("| yes "));
    // The resolver is the network's, with its domain.
    let (_, conf) = d.sh("alpha", "cat /etc/resolv.conf");
    assert!(
        conf.contains("nameserver 10.42.0.1") && conf.contains("search default.vessel"),
        "{conf}"
    );
    // A VM gets the same by DHCP: the offer names the gateway as DNS server and the domain.
    let (code, out) = d.sh(
        "alpha",
        "printf '#!/bin/sh\\necho \"dns=$dns domain=$domain router=$router\"\\n' > /tmp/show \
         && chmod +x /tmp/show && udhcpc -i eth0 -n -q -f -t 5 -s /tmp/show 2>/dev/null",
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("dns=10.42.0.1 domain=default.vessel router=10.42.0.1"),
        "{out}"
    );
    // admin init finds it there; another subnet is refused, naming the one it has.
    let out = d.ok(&["admin", "init"]);
    assert!(
        out.contains("already there") && out.contains("10.42.0.0/24"),
        "{out}"
    );
    let r = json(&d.ok(&[
        "admin",
        "init",
        "--subnet",
        "10.42.0.0/24",
        "--format",
        "json",
    ]));
    assert_eq!(r["created"], false, "{r}");
    let err = d.fails(&["admin", "init", "--subnet", "10.99.0.0/24"]);
    assert!(err.contains("exists on 10.42.0.0/24"), "{err}");
    // A restart neither makes a second one nor moves it.
    let mut d = d;
    d.kill(libc::SIGTERM);
    d.spawn();
    let again = json(&d.ok(&["network", "list", "--format", "json"]));
    assert_eq!(again.as_array().map(Vec::len), Some(1), "{again}");
    assert!(pings(&d, "alpha", "beta"));
}

/// The default subnet avoids the routes and addresses of the daemon's namespace; instances
/// choose their networks with --network (repeatable) or none with --no-network; a deleted
/// default network stays deleted until `vessel admin init`.
#[test]
fn the_default_network_avoids_host_routes_and_instances_choose_theirs() {
    let sb = Sandbox::new(1);
    let h = &sb.hosts[0];
    // The host already uses 10.42.0.0/16 (a route) and 10.43.0.0/24 (an address).
    ip(&[
        "-n",
        h,
        "route",
        "add",
        "10.42.0.0/16",
        "via",
        "198.51.100.1",
    ]);
    ip(&["-n", h, "addr", "add", "10.43.0.1/24", "dev", "up0"]);
    let mut d = Daemon::start_in_netns_as_installed(h);
    d.busybox();
    let n = json(&d.ok(&["network", "info", "default", "--format", "json"]));
    assert_eq!(n["subnet"], "10.44.0.0/24", "{n}");
    d.ok(&["network", "create", "lan", "--subnet", "10.60.0.0/24"]);
    sleeper(&d, "multi", &["--network", "lan", "--network", "default"]);
    let nics = json(&d.ok(&["info", "multi", "--format", "json"]))["nics"].clone();
    assert_eq!(nics[0]["network"], "lan", "{nics}");
    assert_eq!(nics[0]["interface"], "eth0", "{nics}");
    assert_eq!(nics[1]["network"], "default", "{nics}");
    assert_eq!(nics[1]["interface"], "eth1", "{nics}");
    let (_, conf) = d.sh("multi", "cat /etc/resolv.conf");
    assert!(
        conf.contains("nameserver 10.60.0.1") && conf.contains("search lan.vessel"),
        "the first NIC's network answers names: {conf}"
    );
    sleeper(&d, "alone", &["--no-network"]);
    assert_eq!(d.info("alone")["nics"], serde_json::json!([]));
    let (_, out) = d.sh("alone", "ip -o link");
    assert_eq!(out.lines().count(), 1, "only the loopback: {out}");
    let (_, conf) = d.sh("alone", "cat /etc/resolv.conf 2>&1");
    assert!(
        !conf.contains("nameserver"),
        "no network, no resolver: {conf}"
    );
    // Bad choices are refused before anything is made.
    let err = d.fails(&["launch", "busybox", "x1", "--network", "nope"]);
    assert!(err.contains("\"nope\" not found"), "{err}");
    let err = d.fails(&[
        "launch",
        "busybox",
        "x2",
        "--network",
        "lan",
        "--no-network",
    ]);
    assert!(err.contains("cannot be used with"), "{err}");
    let err = d.fails(&[
        "create",
        "busybox",
        "x3",
        "--network",
        "lan",
        "--network",
        "lan",
    ]);
    assert!(err.contains("named twice"), "{err}");
    let list = d.ok(&["list", "--format", "json"]);
    assert!(
        !list.contains("\"x1\"") && !list.contains("\"x3\""),
        "{list}"
    );
    // A deleted default network is not made again by a restart; admin init makes it.
    d.ok(&["delete", "--force", "multi"]);
    d.ok(&["network", "delete", "default"]);
    d.kill(libc::SIGTERM);
    d.spawn();
    let names = json(&d.ok(&["network", "list", "--format", "json"]));
    assert!(
        names
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["name"] != "default"),
        "{names}"
    );
    sleeper(&d, "after", &[]);
    assert_eq!(d.info("after")["nics"], serde_json::json!([]));
    let out = d.ok(&["admin", "init", "--subnet", "10.77.0.0/24"]);
    assert!(
        out.contains("made") && out.contains("10.77.0.0/24"),
        "{out}"
    );
    sleeper(&d, "later", &[]);
    let nic = &d.info("later")["nics"][0];
    assert_eq!(nic["ipv4"], "10.77.0.2/24", "{nic}");
    assert_eq!(nic["gateway"], "10.77.0.1", "{nic}");
}

/// A daemon started without its default network (another daemon's namespace, say) makes
/// none, and `vessel admin init` makes it on demand.
#[test]
fn admin_init_makes_the_default_network_on_demand() {
    let sb = Sandbox::new(1);
    let d = Daemon::start_in_netns(&sb.hosts[0]);
    d.busybox();
    assert_eq!(d.ok(&["network", "list", "--format", "json"]).trim(), "[]");
    sleeper(&d, "before", &[]);
    assert_eq!(d.info("before")["nics"], serde_json::json!([]));
    let r = json(&d.ok(&["admin", "init", "--format", "json"]));
    assert_eq!(r["created"], true, "{r}");
    assert_eq!(r["network"]["subnet"], "10.42.0.0/24", "{r}");
    let err = d.fails(&["admin", "init", "--subnet", "10.42.0.0/33"]);
    assert!(
        err.contains("exists on 10.42.0.0/24") || err.contains("subnet"),
        "{err}"
    );
    sleeper(&d, "after", &[]);
    assert!(pings(&d, "after", "203.0.113.1"));
}

/// A container keeps a resolv.conf it brings on purpose (its own layer or its image), and
/// gets the network's in place of the build host's copy.
#[test]
fn a_resolver_brought_on_purpose_is_kept() {
    let sb = Sandbox::new(1);
    let d = Daemon::start_in_netns_as_installed(&sb.hosts[0]);
    d.busybox();
    d.ok(&["create", "busybox", "own", "--", "sleep", "3600"]);
    let mine = d.dir.join("resolv.mine");
    std::fs::write(&mine, "nameserver 192.0.2.53\nsearch example.test\n").unwrap();
    d.ok(&[
        "file",
        "push",
        "-p",
        mine.to_str().unwrap(),
        "own/etc/resolv.conf",
    ]);
    d.ok(&["start", "own"]);
    let (_, conf) = d.sh("own", "cat /etc/resolv.conf");
    assert_eq!(conf, "nameserver 192.0.2.53\nsearch example.test\n");
    // Published into an image, it stays the image's own.
    d.ok(&["stop", "own", "--force"]);
    d.ok(&["publish", "own", "--alias", "own-dns"]);
    d.ok(&["launch", "own-dns", "child", "--", "sleep", "3600"]);
    let (_, conf) = d.sh("child", "cat /etc/resolv.conf");
    assert!(conf.contains("192.0.2.53"), "{conf}");
    // The host's own file, as debootstrap copies it into the images it builds, is replaced.
    let host_copy = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    if host_copy.lines().any(|l| l.starts_with("nameserver")) {
        d.ok(&["create", "busybox", "copied", "--", "sleep", "3600"]);
        d.ok(&[
            "file",
            "push",
            "-p",
            "/etc/resolv.conf",
            "copied/etc/resolv.conf",
        ]);
        d.ok(&["start", "copied"]);
        let (_, conf) = d.sh("copied", "cat /etc/resolv.conf");
        assert!(conf.contains("nameserver 10.42.0.1"), "{conf}");
    }
}

/// `list` shows a running instance's addresses (an IPV4 column, like Incus), `info` its NICs
/// and volumes, and both carry them in JSON and YAML.
#[test]
fn list_and_info_show_addresses_nics_and_volumes() {
    let sb = Sandbox::new(1);
    let d = Daemon::start_in_netns_as_installed(&sb.hosts[0]);
    d.busybox();
    sleeper(&d, "web", &[]);
    d.ok(&["create", "busybox", "idle", "--", "sleep", "3600"]);
    d.ok(&["storage", "pool", "create", "local", "dir"]);
    d.ok(&["storage", "volume", "create", "local", "data"]);
    d.ok(&[
        "storage",
        "volume",
        "attach",
        "local",
        "data",
        "idle",
        "/srv/data",
    ]);
    let ip = d.info("web")["nics"][0]["ipv4"]
        .as_str()
        .expect("web has an address")
        .to_string();
    let addr = ip.split('/').next().unwrap().to_string();
    let table = d.ok(&["list"]);
    assert!(table.contains("IPV4"), "{table}");
    assert!(table.contains(&format!("{addr} (eth0)")), "{table}");
    let idle_row = table.lines().find(|l| l.contains(" idle ")).unwrap();
    assert!(
        idle_row.contains("| -"),
        "a stopped instance shows no address: {idle_row}"
    );
    let list = json(&d.ok(&["list", "--format", "json"]));
    let web = list
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "web")
        .unwrap();
    assert_eq!(web["nics"][0]["network"], "default", "{web}");
    assert_eq!(web["nics"][0]["gateway"], "10.42.0.1", "{web}");
    let info = d.ok(&["info", "web"]);
    assert!(
        info.contains("eth0: network default, MAC ") && info.contains(&ip),
        "{info}"
    );
    let info = d.ok(&["info", "idle"]);
    assert!(
        info.contains("local/data: /srv/data (filesystem)"),
        "{info}"
    );
    let yaml = d.ok(&["info", "idle", "--format", "yaml"]);
    assert!(
        yaml.contains("volumes:") && yaml.contains("pool: local") && yaml.contains("nics:"),
        "{yaml}"
    );
    // Attaching and detaching NICs shows at once.
    d.ok(&["network", "detach", "default", "idle"]);
    assert_eq!(d.info("idle")["nics"], serde_json::json!([]));
    assert!(d.ok(&["info", "idle"]).contains("NICs: none"));
}

/// A forward answers the host itself (127.0.0.1, the gateway, its own address), instances
/// of its own network through the host's address, and other hosts; `forward delete` takes
/// the same --port/--protocol as `add` (the older positional form still works) and
/// `forward list` shows them.
#[test]
fn forwards_answer_like_published_ports() {
    let sb = Sandbox::new(1);
    let h = &sb.hosts[0];
    let host = Sandbox::host_addr(0);
    let d = Daemon::start_in_netns_as_installed(h);
    d.busybox();
    sleeper(&d, "web", &[]);
    sleeper(&d, "client", &[]);
    let (code, out) = d.sh(
        "web",
        "mkdir -p /www && echo hello-web > /www/index.html && httpd -p 80 -h /www",
    );
    assert_eq!(code, 0, "{out}");
    d.ok(&[
        "network", "forward", "add", "default", "--port", "8080", "--to", "web:80",
    ]);
    let want = "hello-web";
    // The host (the daemon's namespace) on its loopback, the gateway and its own address.
    for url in [
        "http://127.0.0.1:8080/",
        "http://10.42.0.1:8080/",
        &format!("http://{host}:8080/"),
    ] {
        assert_eq!(fetch_in(h, url), want, "the host through {url}");
    }
    // Another instance of the network, through the host's addresses (hairpin).
    for url in [
        format!("http://{host}:8080/"),
        "http://10.42.0.1:8080/".into(),
    ] {
        assert_eq!(fetch_from(&d, "client", &url), want, "client through {url}");
    }
    // And itself.
    assert_eq!(fetch_from(&d, "web", "http://10.42.0.1:8080/"), want);
    // Other hosts, as before.
    assert_eq!(fetch_in(&sb.wan, &format!("http://{host}:8080/")), want);
    // Listed, in every format.
    let table = d.ok(&["network", "forward", "list"]);
    assert!(
        table.contains("| default | tcp      | *:8080 | web:80 (10.42.0.2) |"),
        "{table}"
    );
    let rows = json(&d.ok(&["network", "forward", "list", "default", "--format", "json"]));
    assert_eq!(rows[0]["listen_port"], 8080, "{rows}");
    assert_eq!(rows[0]["instance"], "web", "{rows}");
    let yaml = d.ok(&["network", "forward", "list", "--format", "yaml"]);
    assert!(yaml.contains("target_port: 80"), "{yaml}");
    // Deleted with the same flags as add; the older positional form still works.
    let err = d.fails(&["network", "forward", "delete", "default"]);
    assert!(err.contains("--port"), "{err}");
    d.ok(&["network", "forward", "delete", "default", "--port", "8080"]);
    assert_eq!(fetch_in(h, "http://127.0.0.1:8080/"), "");
    d.ok(&[
        "network",
        "forward",
        "add",
        "default",
        "--port",
        "8081",
        "--to",
        "web:80",
        "--protocol",
        "tcp",
    ]);
    assert_eq!(fetch_in(h, "http://127.0.0.1:8081/"), want);
    d.ok(&["network", "forward", "delete", "default", "tcp", "8081"]);
    let rows = json(&d.ok(&["network", "forward", "list", "--format", "json"]));
    assert_eq!(rows, serde_json::json!([]));
    let help = d.ok(&["network", "forward", "delete", "--help"]);
    assert!(help.contains("deprecated"), "{help}");
}

/// `network limits` changes only the direction it names (`none` lifts one), in the store
/// and in the kernel; an overlay's --local must be one of the host's addresses.
#[test]
fn limit_changes_and_overlay_addresses_do_what_they_say() {
    let sb = Sandbox::new(1);
    let h = &sb.hosts[0];
    let d = Daemon::start_in_netns_as_installed(h);
    d.busybox();
    sleeper(&d, "c1", &["--no-network"]);
    d.ok(&[
        "network",
        "attach",
        "default",
        "c1",
        "--ingress",
        "50Mbit",
        "--egress",
        "10Mbit",
    ]);
    let lease = |d: &Daemon| {
        json(&d.ok(&["network", "info", "default", "--format", "json"]))["leases"][0].clone()
    };
    let ifb = || links_in(h).contains("vifb");
    assert!(ifb(), "an egress limit shapes through an IFB");
    let out = d.ok(&["network", "limits", "default", "c1", "--ingress", "20Mbit"]);
    assert!(out.contains("ingress 20Mbit, egress 10Mbit"), "{out}");
    let l = lease(&d);
    assert_eq!(
        (l["ingress"].clone(), l["egress"].clone()),
        ("20Mbit".into(), "10Mbit".into())
    );
    assert!(ifb(), "the egress limit went with an ingress change");
    d.ok(&["network", "limits", "default", "c1", "--egress", "none"]);
    let l = lease(&d);
    assert_eq!(l["ingress"], "20Mbit", "{l}");
    assert!(l.get("egress").is_none(), "{l}");
    assert!(!ifb(), "the egress limit is still applied");
    let out = d.ok(&["network", "limits", "default", "c1"]);
    assert!(out.contains("ingress 20Mbit, egress none"), "{out}");
    let err = d.fails(&["network", "limits", "default", "c1", "--ingress", "fast"]);
    assert!(err.contains("rate"), "{err}");
    // An overlay leaving from an address the host does not have is refused, naming those
    // it has; nothing is made.
    let before = d.ok(&["network", "list", "--format", "json"]);
    let err = d.fails(&[
        "network",
        "create",
        "ov",
        "--subnet",
        "10.50.0.0/24",
        "--vni",
        "5001",
        "--local",
        "192.0.2.1",
        "--peer",
        "192.0.2.2",
    ]);
    assert!(
        err.contains("192.0.2.1 is not an address of this host")
            && err.contains("198.51.100.2 (up0)"),
        "{err}"
    );
    assert_eq!(d.ok(&["network", "list", "--format", "json"]), before);
    assert!(!links_in(h).contains("vbr-ov"));
    d.ok(&[
        "network",
        "create",
        "ov",
        "--subnet",
        "10.50.0.0/24",
        "--vni",
        "5001",
        "--local",
        "198.51.100.2",
        "--peer",
        "198.51.100.3",
    ]);
}
