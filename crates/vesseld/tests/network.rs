//! Networks through the real daemon, which runs inside a network namespace the test makes
//! (never on the host's own network): instances on a bridge reach each other and, through
//! NAT, a namespace standing in for the internet; two networks cannot reach each other;
//! DHCP and DNS answer; a forward publishes a port; an ACL blocks and allows; an overlay
//! joins two "hosts", each with its own daemon; bad input changes nothing.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{ip, Daemon, Sandbox};

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// One field (`ip`, `ipv6`) of an instance's lease on a network.
fn lease_field(d: &Daemon, network: &str, instance: &str, field: &str) -> String {
    let n = json(&d.ok(&["network", "info", network, "--format", "json"]));
    n["leases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["instance"] == instance)
        .and_then(|l| l[field].as_str())
        .unwrap_or_else(|| panic!("{instance} has no {field} lease: {n}"))
        .to_string()
}

fn lease_ip(d: &Daemon, network: &str, instance: &str) -> String {
    lease_field(d, network, instance, "ip")
}

/// A stopped container renamed keeps its files, snapshots, volume, NIC address and
/// forward, and its network's DNS answers its new name (and no longer the old one).
#[test]
fn a_renamed_instance_keeps_its_files_snapshots_volume_address_and_forward() {
    let sb = Sandbox::new(1);
    let d = Daemon::start_in_netns(&sb.hosts[0]);
    d.busybox();
    d.ok(&["network", "create", "lan", "--subnet", "10.47.0.0/24"]);
    d.ok(&["storage", "pool", "create", "p", "dir"]);
    d.ok(&["storage", "volume", "create", "p", "data"]);
    d.ok(&["create", "busybox", "old", "--", "sleep", "3600"]);
    d.ok(&["network", "attach", "lan", "old"]);
    d.ok(&["storage", "volume", "attach", "p", "data", "old", "/srv"]);
    d.ok(&["start", "old"]);
    instances(&d, &[("peer", "lan")]);
    d.ok(&[
        "network", "forward", "add", "lan", "--port", "18081", "--to", "old:8080",
    ]);
    let ip = lease_ip(&d, "lan", "old");
    assert_eq!(d.sh("old", "echo kept > /root/f").0, 0);
    d.ok(&["snapshot", "create", "old", "s1"]);
    // Refused: running, or to a name taken.
    let err = d.fails(&["rename", "old", "new"]);
    assert!(err.contains("stop it first"), "{err}");
    d.ok(&["stop", "-f", "old"]);
    let err = d.fails(&["rename", "old", "peer"]);
    assert!(err.contains("already exists"), "{err}");
    let err = d.fails(&["rename", "old", "bad.name"]);
    assert!(!err.is_empty());
    d.ok(&["rename", "old", "new"]);
    assert!(d.fails(&["info", "old"]).contains("not found"));
    assert_eq!(lease_ip(&d, "lan", "new"), ip, "the address stays");
    let net = json(&d.ok(&["network", "info", "lan", "--format", "json"]));
    assert_eq!(net["forwards"][0]["instance"], "new", "{net}");
    let vol = json(&d.ok(&["storage", "volume", "info", "p", "data", "--format", "json"]));
    assert!(vol.to_string().contains("\"new\""), "{vol}");
    let snaps = json(&d.ok(&["snapshot", "list", "new", "--format", "json"]));
    assert_eq!(snaps[0]["name"], "s1", "{snaps}");
    d.ok(&["start", "new"]);
    assert_eq!(d.sh("new", "cat /root/f").1.trim(), "kept");
    assert_eq!(
        d.sh("new", "grep -q ' /srv ' /proc/mounts").0,
        0,
        "the volume is attached"
    );
    assert!(d.sh("new", "ip -4 addr show eth0").1.contains(&ip));
    let (code, out) = d.sh("peer", "nslookup new 10.47.0.1");
    assert!(code == 0 && out.contains(&ip), "{out}");
    let (code, out) = d.sh("peer", "nslookup old 10.47.0.1");
    assert!(
        code != 0 || !out.contains(&ip),
        "the old name still resolves: {out}"
    );
    // A new instance under the old name gets NICs of its own (host-side names derive from
    // the name: the renamed one's were renamed too), and both are reachable.
    let before = json(&d.ok(&["network", "info", "lan", "--format", "json"]));
    d.ok(&["create", "busybox", "old", "--", "sleep", "3600"]);
    d.ok(&["network", "attach", "lan", "old"]);
    d.ok(&["start", "old"]);
    let after = json(&d.ok(&["network", "info", "lan", "--format", "json"]));
    let host_if = |n: &serde_json::Value, who: &str| {
        n["leases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["instance"] == who)
            .map(|l| l["host_interface"].to_string())
            .unwrap_or_default()
    };
    assert!(!host_if(&before, "new").is_empty(), "{before}");
    assert_ne!(host_if(&after, "old"), host_if(&before, "new"), "{after}");
    let ip_old = lease_ip(&d, "lan", "old");
    assert!(pings(&d, "peer", &ip) && pings(&d, "peer", &ip_old));
    d.ok(&["delete", "-f", "old"]);
    // Its snapshot restores under the new name.
    d.ok(&["stop", "-f", "new"]);
    d.ok(&["snapshot", "restore", "new", "s1"]);
    for n in ["new", "peer"] {
        d.ok(&["delete", "-f", n]);
    }
}

/// The nftables tables of a namespace, as `nft list tables` prints them.
fn nft_tables(ns: &str) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "list", "tables"])
        .output()
        .expect("nft (Debian package nftables)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether `to` answers one of up to three pings from `from`, one after the other: for
/// what must reach (a first packet may wait for ARP, or be lost on a loaded machine).
fn pings(d: &Daemon, from: &str, to: &str) -> bool {
    let script =
        format!("for i in 1 2 3; do ping -c 1 -W 2 {to} >/dev/null && exit 0; done; exit 1");
    d.sh(from, &script).0 == 0
}

/// Whether `to` answers one ping from `from`: for what must not reach.
fn pings_once(d: &Daemon, from: &str, to: &str) -> bool {
    d.sh(from, &format!("ping -c 1 -W 2 {to} >/dev/null")).0 == 0
}

/// Starts instances that sleep, each on the given network.
fn instances(d: &Daemon, list: &[(&str, &str)]) {
    for (name, net) in list {
        d.ok(&["create", "busybox", name, "--", "sleep", "3600"]);
        d.ok(&["network", "attach", net, name]);
        d.ok(&["start", name]);
    }
}

#[test]
fn bridge_networks_give_dhcp_dns_nat_isolation_forwards_and_acls() {
    let sb = Sandbox::new(1);
    let mut d = Daemon::start_in_netns(&sb.hosts[0]);
    d.busybox();
    d.ok(&["network", "create", "lan", "--subnet", "10.42.0.0/24"]);
    d.ok(&["network", "create", "lan2", "--subnet", "10.43.0.0/24"]);
    instances(&d, &[("c1", "lan"), ("c2", "lan"), ("c3", "lan2")]);
    let (ip1, ip2, ip3) = (
        lease_ip(&d, "lan", "c1"),
        lease_ip(&d, "lan", "c2"),
        lease_ip(&d, "lan2", "c3"),
    );
    assert!(ip1.starts_with("10.42.0.") && ip3.starts_with("10.43.0."));
    // Same network: reachable; the internet through NAT; the other network: not.
    assert!(pings(&d, "c1", &ip2), "c1 cannot reach c2");
    assert!(pings(&d, "c1", "203.0.113.1"), "no way out through NAT");
    assert!(pings(&d, "c3", "203.0.113.1"), "no way out from lan2");
    assert!(!pings_once(&d, "c1", &ip3), "lan reaches lan2");
    assert!(!pings_once(&d, "c3", &ip1), "lan2 reaches lan");
    // DNS: instance names resolve at the gateway.
    let (code, out) = d.sh("c1", "nslookup c2 10.42.0.1");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&ip2), "{out}");
    // DHCP: busybox udhcpc gets the same static lease for the NIC's MAC.
    let (code, out) = d.sh("c2", "udhcpc -i eth0 -n -q -f -t 5 -s /bin/true 2>&1");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&ip2), "{out}");
    // A forward publishes c2:8080 on the host's port 18080; the internet reaches it.
    d.sh("c2", "echo hello-from-c2 > /tmp/index.html");
    let mut server = Command::new(common::bin_dir().join("vessel"))
        .arg("--socket")
        .arg(&d.socket)
        .args([
            "exec",
            "c2",
            "-T",
            "--",
            "sh",
            "-c",
            "while true; do nc -l -p 8080 < /tmp/index.html; done",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    d.ok(&[
        "network", "forward", "add", "lan", "--port", "18080", "--to", "c2:8080",
    ]);
    let host = Sandbox::host_addr(0);
    let mut got = String::new();
    for _ in 0..20 {
        let out = Command::new("ip")
            .args([
                "netns", "exec", &sb.wan, "busybox", "nc", "-w", "2", &host, "18080",
            ])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        got = String::from_utf8_lossy(&out.stdout).into_owned();
        if got.contains("hello-from-c2") {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        got.contains("hello-from-c2"),
        "the forward did not answer: {got:?}"
    );
    let _ = server.kill();
    let _ = server.wait();
    // ACL: a rule that does not parse is refused and changes nothing; deny blocks; allow passes.
    let err = d.fails(&[
        "network",
        "acl",
        "set",
        "lan",
        "--rules",
        "deny sideways icmp",
    ]);
    assert!(err.contains("ACL"), "{err}");
    // Bounded: 1,024 rules (each is a rule in every NIC's chain), 64 KiB of text.
    let many = "deny ingress icmp to @c2\n".repeat(1025);
    let err = d.fails(&["network", "acl", "set", "lan", "--rules", &many]);
    assert!(err.contains("at most 1024 rules"), "{err}");
    let long = format!("# {}\n", "x".repeat(70_000));
    let err = d.fails(&["network", "acl", "set", "lan", "--rules", &long]);
    assert!(err.contains("at most 65536 are kept"), "{err}");
    assert!(pings(&d, "c1", &ip2));
    d.ok(&[
        "network",
        "acl",
        "set",
        "lan",
        "--rules",
        "deny ingress icmp to @c2",
    ]);
    assert!(
        !pings_once(&d, "c1", &ip2),
        "the deny rule let a ping through"
    );
    d.ok(&[
        "network",
        "acl",
        "set",
        "lan",
        "--rules",
        "allow ingress icmp from @c1 to @c2\ndeny ingress icmp to @c2",
    ]);
    assert!(pings(&d, "c1", &ip2), "the allow rule did not pass");
    d.ok(&["network", "acl", "set", "lan", "--rules", ""]);
    // A NIC's own rules: c2 takes no ping from c1, while c1 still reaches the gateway and c2
    // still reaches c1; a bad NIC rule is refused and the old ones stay.
    d.ok(&[
        "network",
        "acl",
        "set",
        "lan",
        "--instance",
        "c2",
        "--rules",
        "deny ingress icmp from @c1",
    ]);
    assert!(
        !pings_once(&d, "c1", &ip2),
        "the NIC's deny rule let a ping through"
    );
    assert!(pings(&d, "c1", "10.42.0.1"));
    assert!(
        pings(&d, "c2", &ip1),
        "the NIC's ingress rule blocked its egress"
    );
    let err = d.fails(&[
        "network",
        "acl",
        "set",
        "lan",
        "--instance",
        "c2",
        "--rules",
        "deny upwards",
    ]);
    assert!(err.contains("c2's NIC"), "{err}");
    assert!(
        !pings_once(&d, "c1", &ip2),
        "a refused rule set replaced the old one"
    );
    let info = json(&d.ok(&["network", "info", "lan", "--format", "json"]));
    assert!(
        info["leases"][1]["acl"].as_str().unwrap().contains("@c1"),
        "{info}"
    );
    d.ok(&[
        "network",
        "acl",
        "set",
        "lan",
        "--instance",
        "c2",
        "--rules",
        "",
    ]);
    assert!(pings(&d, "c1", &ip2));
    // A daemon restart rebuilds what a crash took away: the bridge goes, and comes back.
    d.kill(libc::SIGKILL);
    ip(&["-n", &sb.hosts[0], "link", "del", "vbr-lan"]);
    d.spawn();
    d.wait_for("lan to come back", Duration::from_secs(20), || {
        pings(&d, "c1", &ip2)
    });
    assert!(pings(&d, "c1", "203.0.113.1"));
    // Bad input: an overlapping subnet, an address outside the subnet, a taken MAC.
    let before = d.ok(&["network", "list", "--format", "json"]);
    let err = d.fails(&["network", "create", "big", "--subnet", "10.42.0.0/16"]);
    assert!(err.contains("overlaps"), "{err}");
    d.ok(&["create", "busybox", "c4", "--", "sleep", "60"]);
    let err = d.fails(&["network", "attach", "lan", "c4", "--ip", "10.99.0.5"]);
    assert!(err.contains("outside"), "{err}");
    let mac = json(&d.ok(&["network", "info", "lan", "--format", "json"]))["leases"][0]["mac"]
        .as_str()
        .unwrap()
        .to_string();
    let err = d.fails(&["network", "attach", "lan", "c4", "--mac", &mac]);
    assert!(err.contains("already in use"), "{err}");
    let err = d.fails(&["network", "attach", "lan", "c4", "--ip", &ip1]);
    assert!(err.contains(&ip1), "{err}");
    assert_eq!(d.ok(&["network", "list", "--format", "json"]), before);
    // Deleting instances frees their NICs; then the networks go.
    let err = d.fails(&["network", "delete", "lan"]);
    assert!(err.contains("used by"), "{err}");
    d.ok(&["delete", "--force", "c1", "c2", "c3", "c4"]);
    d.ok(&["network", "delete", "lan"]);
    d.ok(&["network", "delete", "lan2"]);
    let out = Command::new("ip")
        .args(["-n", &sb.hosts[0], "-o", "link"])
        .output()
        .unwrap();
    let links = String::from_utf8_lossy(&out.stdout);
    assert!(!links.contains("vbr-"), "{links}");
    assert!(!links.contains("vh"), "host ends left: {links}");
}

#[test]
fn an_overlay_joins_instances_on_two_hosts_and_not_across_vnis() {
    let sb = Sandbox::new(2);
    let d0 = Daemon::start_in_netns(&sb.hosts[0]);
    let d1 = Daemon::start_in_netns(&sb.hosts[1]);
    let (a0, a1) = (Sandbox::host_addr(0), Sandbox::host_addr(1));
    for (d, local, peer) in [(&d0, &a0, &a1), (&d1, &a1, &a0)] {
        d.busybox();
        d.ok(&[
            "network",
            "create",
            "ov",
            "--subnet",
            "10.50.0.0/24",
            "--vni",
            "5001",
            "--local",
            local,
            "--peer",
            peer,
            "--vlan",
            "10",
            "--vlan",
            "20",
        ]);
        d.ok(&[
            "network",
            "create",
            "ov2",
            "--subnet",
            "10.51.0.0/24",
            "--vni",
            "5002",
            "--local",
            local,
            "--peer",
            peer,
        ]);
    }
    let n = json(&d0.ok(&["network", "info", "ov", "--format", "json"]));
    assert_eq!(n["mtu"], 1450, "{n}");
    // One gateway address on every host, and one MAC for it (an anycast gateway).
    let mac = |h: &str| {
        let out = Command::new("ip")
            .args(["-n", h, "-j", "link", "show", "vbr-ov"])
            .output()
            .unwrap();
        json(&String::from_utf8_lossy(&out.stdout))[0]["address"].clone()
    };
    assert_eq!(mac(&sb.hosts[0]), mac(&sb.hosts[1]));
    // Addresses are per daemon: give the second host's instances their own.
    d0.ok(&["create", "busybox", "x0", "--", "sleep", "3600"]);
    d0.ok(&["network", "attach", "ov", "x0", "--ip", "10.50.0.10"]);
    d0.ok(&["start", "x0"]);
    d1.ok(&["create", "busybox", "x1", "--", "sleep", "3600"]);
    d1.ok(&["network", "attach", "ov", "x1", "--ip", "10.50.0.11"]);
    d1.ok(&["start", "x1"]);
    d1.ok(&["create", "busybox", "y1", "--", "sleep", "3600"]);
    d1.ok(&["network", "attach", "ov2", "y1", "--ip", "10.51.0.11"]);
    d1.ok(&["start", "y1"]);
    assert!(
        pings(&d0, "x0", "10.50.0.11"),
        "no traffic across the overlay"
    );
    assert!(pings(&d1, "x1", "10.50.0.10"));
    // TCP across hosts.
    let mut server = Command::new(common::bin_dir().join("vessel"))
        .arg("--socket")
        .arg(&d1.socket)
        .args([
            "exec",
            "x1",
            "-T",
            "--",
            "sh",
            "-c",
            "echo over-vxlan | nc -l -p 7000",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut got = String::new();
    for _ in 0..20 {
        got = d0.sh("x0", "nc -w 2 10.50.0.11 7000").1;
        if got.contains("over-vxlan") {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = server.kill();
    let _ = server.wait();
    assert!(got.contains("over-vxlan"), "{got:?}");
    // Another VNI is another segment: no path from ov to ov2's instance.
    assert!(!pings_once(&d0, "x0", "10.51.0.11"), "traffic crossed VNIs");
    // VLAN segments of an overlay span the hosts on VNIs of their own.
    let segs = &n["segments"];
    assert_eq!(segs[0]["vni"], 5011, "{n}");
    assert_eq!(segs[1]["vni"], 5021, "{n}");
    let err = d0.fails(&[
        "network",
        "create",
        "ov3",
        "--subnet",
        "10.52.0.0/24",
        "--vni",
        "5011",
        "--local",
        &a0,
    ]);
    assert!(err.contains("VNI 5011 is taken"), "{err}");
    for (d, name, vlan, ip) in [
        (&d0, "s0", "10", "10.50.0.20"),
        (&d1, "s1", "10", "10.50.0.21"),
        (&d1, "t1", "20", "10.50.0.22"),
    ] {
        d.ok(&["launch", "busybox", name, "--", "sleep", "3600"]);
        d.ok(&["network", "attach", "ov", name, "--vlan", vlan, "--ip", ip]);
    }
    assert!(
        pings(&d0, "s0", "10.50.0.21"),
        "a VLAN segment does not span the hosts"
    );
    assert!(
        !pings_once(&d0, "s0", "10.50.0.22"),
        "traffic crossed VLAN segments"
    );
    assert!(
        !pings_once(&d0, "s0", "10.50.0.11"),
        "a segment reaches the untagged network"
    );
}

#[test]
fn a_vm_on_a_tap_gets_its_lease_by_dhcp_and_reaches_a_container() {
    // The sandbox has no way to Debian's mirror: a daemon outside builds the VM image and
    // hands it over as a bundle.
    let builder = Daemon::start();
    builder.ok(&["image", "build", "vm"]);
    let bundle = builder.dir.join("vm.tar");
    builder.ok(&["image", "export", "vm/busybox", bundle.to_str().unwrap()]);
    let sb = Sandbox::new(1);
    let d = Daemon::start_in_netns(&sb.hosts[0]);
    d.busybox();
    d.ok(&[
        "image",
        "import",
        bundle.to_str().unwrap(),
        "--alias",
        "vm/busybox",
    ]);
    drop(builder);
    d.ok(&["network", "create", "lan", "--subnet", "10.44.0.0/24"]);
    instances(&d, &[("c1", "lan")]);
    d.ok(&["create", "vm/busybox", "v1", "--vm", "-l", "memory=256MiB"]);
    d.ok(&["network", "attach", "lan", "v1", "--ip", "10.44.0.50"]);
    d.ok(&["start", "v1"]);
    let tap = json(&d.ok(&["network", "info", "lan", "--format", "json"]))["leases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["instance"] == "v1")
        .unwrap()["host_interface"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(tap.starts_with("vt"), "{tap}");
    // QEMU (as nobody) never opened /dev/net/tun: it inherited a queue of the tap that the
    // daemon opened, so the device node's mode (0600 on a fresh Debian) does not matter.
    let qemu = std::fs::read_to_string(d.dir.join("run/vms/v1/qemu.pid"))
        .expect("QEMU's pid file")
        .trim()
        .parse::<i32>()
        .expect("a pid");
    let cmdline = std::fs::read_to_string(format!("/proc/{qemu}/cmdline")).expect("cmdline");
    assert!(
        cmdline.contains("tap,id=net0,fd=") && !cmdline.contains("ifname="),
        "{cmdline:?}"
    );
    let holds_tap = std::fs::read_dir(format!("/proc/{qemu}/fdinfo"))
        .expect("fdinfo")
        .flatten()
        .any(|f| {
            std::fs::read_to_string(f.path())
                .is_ok_and(|t| t.lines().any(|l| l == format!("iff:\t{tap}")))
        });
    assert!(holds_tap, "QEMU holds no queue of {tap}");
    // The guest's init asks DHCP; dnsmasq answers with the static lease.
    d.wait_for("the VM's DHCP lease", Duration::from_secs(180), || {
        d.sh("v1", "ip -4 addr show eth0").1.contains("10.44.0.50")
    });
    let c1 = lease_ip(&d, "lan", "c1");
    assert!(pings(&d, "v1", &c1), "the VM cannot reach the container");
    assert!(
        pings(&d, "c1", "10.44.0.50"),
        "the container cannot reach the VM"
    );
    assert!(
        pings(&d, "v1", "203.0.113.1"),
        "the VM has no way out through NAT"
    );
    d.ok(&["delete", "--force", "v1", "c1"]);
    let out = Command::new("ip")
        .args(["-n", &sb.hosts[0], "-o", "link"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains(&tap),
        "the tap outlived its VM"
    );
}

/// The host pid of a running container's init.
fn init_pid(d: &Daemon, name: &str) -> i32 {
    let info = d.info(name);
    info["state"]["pid"]
        .as_i64()
        .unwrap_or_else(|| panic!("{name} has no pid: {info}")) as i32
}

fn links_in(ns: &str) -> String {
    let out = Command::new("ip")
        .args(["-n", ns, "-o", "link"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// TCP throughput from container `from` to `to_ip` (container `to`), bits per second,
/// measured with the host's iperf3 inside the containers' network namespaces.
fn throughput(d: &Daemon, from: &str, to: &str, to_ip: &str) -> f64 {
    let ns = |name: &str| format!("--net=/proc/{}/ns/net", init_pid(d, name));
    let mut server = Command::new("nsenter")
        .args([&ns(to), "iperf3", "-s", "-1", "-p", "5201"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("iperf3 (Debian package iperf3) and nsenter");
    let mut last = String::new();
    for _ in 0..50 {
        let out = Command::new("nsenter")
            .args([
                &ns(from),
                "iperf3",
                "-c",
                to_ip,
                "-p",
                "5201",
                "-t",
                "3",
                "-J",
            ])
            .output()
            .expect("iperf3 (Debian package iperf3)");
        last = String::from_utf8_lossy(&out.stdout).into_owned();
        // iperf3 3.12 with -J exits 0 when it could not connect (the server not listening
        // yet): its JSON then has an "error".
        let connected = serde_json::from_str::<serde_json::Value>(&last)
            .is_ok_and(|v| v.get("error").is_none());
        if out.status.success() && connected {
            let _ = server.wait();
            let v = json(&last);
            return v["end"]["sum_received"]["bits_per_second"]
                .as_f64()
                .unwrap_or_else(|| panic!("no throughput in {v}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = server.kill();
    let _ = server.wait();
    panic!("iperf3 from {from} to {to} never ran: {last}");
}

#[test]
fn nics_hot_plug_with_limits_and_networks_split_by_isolated_ports_and_vlans() {
    let sb = Sandbox::new(1);
    let h = &sb.hosts[0];
    let d = Daemon::start_in_netns(h);
    d.busybox();
    d.ok(&["network", "create", "lan", "--subnet", "10.70.0.0/24"]);
    for c in ["c1", "c2"] {
        d.ok(&["launch", "busybox", c, "--", "sleep", "3600"]);
    }
    // Hot add: running containers get their NICs at once.
    let out = d.ok(&["network", "attach", "lan", "c1"]);
    assert!(out.contains("eth0"), "{out}");
    d.ok(&["network", "attach", "lan", "c2", "--ingress", "3Mbit"]);
    let (ip1, ip2) = (lease_ip(&d, "lan", "c1"), lease_ip(&d, "lan", "c2"));
    assert!(pings(&d, "c1", &ip2), "hot-plugged NICs do not talk");
    assert!(
        pings(&d, "c1", "203.0.113.1"),
        "no default route on a hot-plugged NIC"
    );
    // Limits: c2's ingress holds at 3 Mbit/s; lifted, the same path runs far faster.
    let limited = throughput(&d, "c1", "c2", &ip2);
    assert!(
        limited < 4.5e6,
        "ingress limit of 3Mbit let {limited} bit/s through"
    );
    d.ok(&["network", "limits", "lan", "c2", "--ingress", "none"]);
    let free = throughput(&d, "c1", "c2", &ip2);
    assert!(
        free > 5.0 * limited,
        "lifting the limit did not help: {free} vs {limited}"
    );
    // Egress of c1 through its IFB device; the IFB goes when c1's NIC goes.
    d.ok(&["network", "limits", "lan", "c1", "--egress", "2Mbit"]);
    let limited = throughput(&d, "c1", "c2", &ip2);
    assert!(
        limited < 3.0e6,
        "egress limit of 2Mbit let {limited} bit/s through"
    );
    assert!(links_in(h).contains("vifb"), "{}", links_in(h));
    let info = json(&d.ok(&["network", "info", "lan", "--format", "json"]));
    assert_eq!(info["leases"][0]["egress"], "2Mbit", "{info}");
    d.ok(&["stop", "c1"]);
    d.wait_for(
        "the IFB of a stopped container to go",
        Duration::from_secs(10),
        || !links_in(h).contains("vifb"),
    );
    d.ok(&["start", "c1"]);
    assert!(links_in(h).contains("vifb"), "limits not restored at start");
    assert!(pings(&d, "c1", &ip2));
    // Hot remove: c2 loses its NIC while running; a new one comes back as eth0.
    d.ok(&["network", "detach", "lan", "c2"]);
    assert!(!pings_once(&d, "c1", &ip2), "a detached NIC still answers");
    assert_ne!(d.sh("c2", "ip link show eth0").0, 0, "eth0 is still in c2");
    d.ok(&["network", "attach", "lan", "c2", "--ip", &ip2]);
    assert!(pings(&d, "c2", &ip1));
    let info = json(&d.ok(&["network", "info", "lan", "--format", "json"]));
    let c2 = info["leases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["instance"] == "c2")
        .unwrap();
    assert_eq!(c2["interface"], "eth0", "{info}");
    // An ACL may name an instance before it has a NIC here; the rule takes hold the moment
    // a hot-plugged NIC arrives, and naming it does not stop it from leaving.
    d.ok(&[
        "network",
        "acl",
        "set",
        "lan",
        "--rules",
        "deny ingress icmp to @c8",
    ]);
    d.ok(&["launch", "busybox", "c8", "--", "sleep", "3600"]);
    d.ok(&["network", "attach", "lan", "c8"]);
    let ip8 = lease_ip(&d, "lan", "c8");
    assert!(pings(&d, "c8", &ip1), "c8's NIC does not work");
    assert!(
        !pings_once(&d, "c1", &ip8),
        "a hot-plugged NIC escapes the ACL"
    );
    assert!(pings(&d, "c1", &ip2), "the ACL blocks more than it names");
    d.ok(&["network", "detach", "lan", "c8"]);
    d.ok(&["network", "acl", "set", "lan", "--rules", ""]);
    // Bad input changes nothing.
    let before = d.ok(&["network", "info", "lan", "--format", "json"]);
    d.ok(&["launch", "busybox", "c9", "--", "sleep", "3600"]);
    let err = d.fails(&["network", "attach", "lan", "c9", "--ingress", "fast"]);
    assert!(err.contains("Mbit"), "{err}");
    let err = d.fails(&["network", "attach", "lan", "c9", "--vlan", "10"]);
    assert!(err.contains("no VLAN segment"), "{err}");
    let err = d.fails(&["network", "limits", "lan", "c9", "--egress", "1Mbit"]);
    assert!(err.contains("has no NIC"), "{err}");
    let err = d.fails(&["network", "limits", "lan", "c1", "--egress", "1bit"]);
    assert!(err.contains("minimum"), "{err}");
    assert_eq!(
        d.ok(&["network", "info", "lan", "--format", "json"]),
        before
    );
    assert_ne!(
        d.sh("c9", "ip link show eth0").0,
        0,
        "a refused NIC was plugged"
    );

    // Isolated ports: instances reach the gateway and the outside, not each other.
    d.ok(&[
        "network",
        "create",
        "iso",
        "--subnet",
        "10.71.0.0/24",
        "--isolated-ports",
    ]);
    instances(&d, &[("i1", "iso"), ("i2", "iso")]);
    let ip_i2 = lease_ip(&d, "iso", "i2");
    assert!(
        pings(&d, "i1", "10.71.0.1"),
        "isolated port cannot reach the gateway"
    );
    assert!(pings(&d, "i1", "203.0.113.1"));
    assert!(
        !pings_once(&d, "i1", &ip_i2),
        "isolated ports reach each other"
    );
    let info = json(&d.ok(&["network", "info", "iso", "--format", "json"]));
    assert_eq!(info["isolated_ports"], true);

    // VLAN segments: each its own broadcast domain.
    let err = d.fails(&[
        "network",
        "create",
        "bad",
        "--subnet",
        "10.73.0.0/24",
        "--vlan",
        "5000",
    ]);
    assert!(err.contains("1-4094"), "{err}");
    let err = d.fails(&[
        "network",
        "create",
        "bad",
        "--subnet",
        "10.73.0.0/24",
        "--vlan",
        "5",
        "--isolated-ports",
    ]);
    assert!(err.contains("do not mix"), "{err}");
    d.ok(&[
        "network",
        "create",
        "seg",
        "--subnet",
        "10.72.0.0/24",
        "--vlan",
        "10",
        "--vlan",
        "20",
    ]);
    for (c, v) in [("v1", "10"), ("v2", "10"), ("v3", "20")] {
        d.ok(&["create", "busybox", c, "--", "sleep", "3600"]);
        d.ok(&["network", "attach", "seg", c, "--vlan", v]);
        d.ok(&["start", c]);
    }
    let (a2, a3) = (lease_ip(&d, "seg", "v2"), lease_ip(&d, "seg", "v3"));
    assert!(pings(&d, "v1", &a2), "one segment does not carry traffic");
    assert!(
        !pings_once(&d, "v1", &a3),
        "two VLAN segments reach each other"
    );
    assert!(
        !pings_once(&d, "v3", &a2),
        "two VLAN segments reach each other"
    );
    // A segment NIC hot-plugged as an instance's first gets no default route (the gateway
    // is not on its segment); the same instance's next NIC off the segments gets it.
    d.ok(&["launch", "busybox", "v4", "--", "sleep", "3600"]);
    d.ok(&["network", "attach", "seg", "v4", "--vlan", "20"]);
    let (_, routes) = d.sh("v4", "ip route");
    assert!(!routes.contains("default"), "{routes}");
    assert!(pings(&d, "v4", &a3), "v4 does not reach its segment");
    d.ok(&["network", "attach", "lan", "v4"]);
    let (_, routes) = d.sh("v4", "ip route");
    assert!(routes.contains("default via 10.70.0.1"), "{routes}");
    let info = json(&d.ok(&["network", "info", "seg", "--format", "json"]));
    let mode = info["vlan_mode"].as_str().unwrap();
    assert!(
        mode == "bridge-per-vlan" || mode == "vlan-filtering",
        "{info}"
    );
    let segs = info["segments"].as_array().unwrap();
    assert_eq!(segs.len(), 2, "{info}");
    if mode == "bridge-per-vlan" {
        for s in segs {
            let br = s["bridge"].as_str().unwrap();
            assert!(links_in(h).contains(br), "segment bridge {br} missing");
        }
        assert_ne!(segs[0]["bridge"], segs[1]["bridge"]);
    }
    let table = d.ok(&["network", "info", "seg"]);
    assert!(
        table.contains("VLAN mode") && table.contains("vlan 10"),
        "{table}"
    );

    // Everything goes with the instances and networks.
    d.ok(&[
        "delete", "--force", "c1", "c2", "c8", "c9", "i1", "i2", "v1", "v2", "v3", "v4",
    ]);
    for n in ["lan", "iso", "seg"] {
        d.ok(&["network", "delete", n]);
    }
    let links = links_in(h);
    for stale in ["vbr-", "vh", "vs", "vifb"] {
        assert!(!links.contains(stale), "{stale} left: {links}");
    }
}

/// Serves `name` over HTTP on port 80 inside a container (busybox httpd, in the background).
fn serve_name(d: &Daemon, name: &str) {
    let (code, out) = d.sh(
        name,
        &format!("mkdir -p /www && echo {name} > /www/index.html && httpd -p 80 -h /www"),
    );
    assert_eq!(code, 0, "{out}");
}

/// One HTTP GET from the stand-in internet; the body, or "" when nothing answered.
fn fetch(sb: &Sandbox, url: &str) -> String {
    let out = Command::new("ip")
        .args([
            // busybox 1.35's wget crashes with -T; timeout(1) bounds it instead.
            "netns", "exec", &sb.wan, "timeout", "5", "busybox", "wget", "-O", "-", url,
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn backend_health(d: &Daemon, net: &str, lb: &str, instance: &str) -> String {
    let n = json(&d.ok(&["network", "info", net, "--format", "json"]));
    let lbs = n["load_balancers"].as_array().cloned().unwrap_or_default();
    let lb = lbs
        .iter()
        .find(|l| l["name"] == lb)
        .unwrap_or_else(|| panic!("no balancer {lb}: {n}"));
    lb["status"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["instance"] == instance)
        .unwrap()["health"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Fetches `url` 12 times and returns how many different backends answered; every answer
/// must be one of `want`.
fn spread(d: &Daemon, sb: &Sandbox, url: &str, want: &[&str]) -> usize {
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..12 {
        let got = fetch(sb, url);
        assert!(
            want.contains(&got.as_str()),
            "answer {got:?}, want one of {want:?}\n{}",
            d.ok(&["network", "info", "web"])
        );
        seen.insert(got);
    }
    seen.len()
}

#[test]
fn a_load_balancer_spreads_over_healthy_backends_and_survives_a_restart() {
    let sb = Sandbox::new(1);
    let h = sb.hosts[0].clone();
    let mut d = Daemon::start_in_netns(&h);
    d.busybox();
    d.ok(&["network", "create", "web", "--subnet", "10.80.0.0/24"]);
    instances(&d, &[("w1", "web"), ("w2", "web"), ("w3", "web")]);
    serve_name(&d, "w1");
    serve_name(&d, "w2");
    let host = Sandbox::host_addr(0);
    // w3 serves nothing: its first probe fails and it never gets a flow.
    d.ok(&[
        "network",
        "lb",
        "add",
        "web",
        "front",
        "--address",
        &host,
        "--port",
        "tcp:8080:80",
        "--backend",
        "w1",
        "--backend",
        "w2",
        "--backend",
        "w3",
        "--check-interval-ms",
        "300",
        "--check-timeout-ms",
        "300",
        "--rise",
        "1",
        // (One probe lost on a loaded machine takes no serving backend out.)
        "--fall",
        "3",
    ]);
    assert_eq!(backend_health(&d, "web", "front", "w3"), "down");
    assert_eq!(
        backend_health(&d, "web", "front", "w1"),
        "up",
        "{}",
        d.ok(&["network", "info", "web"])
    );
    let url = format!("http://{host}:8080/");
    assert_eq!(
        spread(&d, &sb, &url, &["w1", "w2"]),
        2,
        "flows are not spread"
    );
    // w2 stops serving: it is taken out and every flow goes to w1.
    d.sh("w2", "killall httpd");
    d.wait_for("w2 to be marked down", Duration::from_secs(10), || {
        backend_health(&d, "web", "front", "w2") == "down"
    });
    assert_eq!(spread(&d, &sb, &url, &["w1"]), 1);
    // w3 starts serving: it comes in.
    serve_name(&d, "w3");
    d.wait_for("w3 to be marked up", Duration::from_secs(10), || {
        backend_health(&d, "web", "front", "w3") == "up"
    });
    assert_eq!(spread(&d, &sb, &url, &["w1", "w3"]), 2);
    // Bad input changes nothing.
    let before = d.ok(&["network", "info", "web", "--format", "json"]);
    for (args, want) in [
        (vec!["--port", "tcp:8080:80", "--backend", "w1"], "taken"),
        (
            vec!["--port", "tcp:9090", "--backend", "w1"],
            "PROTOCOL:LISTEN:TARGET",
        ),
        (vec!["--port", "udp:53:53", "--backend", "w1"], "UDP"),
        (
            vec!["--port", "tcp:9090:80", "--backend", "nobody"],
            "no NIC",
        ),
    ] {
        let mut cmd = vec!["network", "lb", "add", "web", "other", "--address", &host];
        cmd.extend(args);
        let err = d.fails(&cmd);
        assert!(err.contains(want), "{err}");
    }
    let err = d.fails(&[
        "network", "forward", "add", "web", "--port", "8080", "--to", "w1:80",
    ]);
    assert!(err.contains("load balancer"), "{err}");
    assert_eq!(
        d.ok(&["network", "info", "web", "--format", "json"]),
        before
    );
    // A daemon killed and started again brings the balancer back with its checker, and
    // drops a balancer table nobody recorded.
    d.kill(libc::SIGKILL);
    // As after a reboot, the balancer's table is gone; a stray one is there. And as after a
    // crash in the middle of creating network "ghost": its bridge and table exist, the store
    // has only the note written before they were made.
    for script in [
        "delete table ip vlb-web_front",
        "add table ip vlb-web_ghost",
        // Not this network's (another network, "web-x", may own it): left alone.
        "add table ip vlb-web-x_other",
        "add table ip vessel-ghost",
    ] {
        let st = Command::new("ip")
            .args(["netns", "exec", &h, "nft", script])
            .status()
            .unwrap();
        assert!(st.success(), "nft {script}");
    }
    ip(&["-n", &h, "link", "add", "vbr-ghost", "type", "bridge"]);
    {
        let db = rusqlite::Connection::open(d.root().join("vessel.db")).unwrap();
        db.execute(
            "INSERT INTO objects (kind, key, body) VALUES ('network-pending', 'ghost', ?)",
            [r#"{"name":"ghost","subnet":"10.99.0.0/24","created_at":"2026-01-01T00:00:00Z"}"#],
        )
        .unwrap();
    }
    d.spawn();
    d.wait_for(
        "the balancer to answer again",
        Duration::from_secs(20),
        || matches!(fetch(&sb, &url).as_str(), "w1" | "w3"),
    );
    let tables = nft_tables(&h);
    assert!(!tables.contains("ghost"), "{tables}");
    assert!(tables.contains("vlb-web_front"), "{tables}");
    assert!(tables.contains("vlb-web-x_other"), "{tables}");
    assert!(!links_in(&h).contains("vbr-ghost"), "{}", links_in(&h));
    let nets = d.ok(&["network", "list", "--format", "json"]);
    assert!(!nets.contains("ghost"), "{nets}");
    d.sh("w2", "mkdir -p /www && httpd -p 80 -h /www");
    d.wait_for("w2 to be marked up", Duration::from_secs(10), || {
        backend_health(&d, "web", "front", "w2") == "up"
    });
    // Detaching a backend takes it out of the balancer; deleting the balancer its table.
    d.ok(&["network", "detach", "web", "w1"]);
    assert_eq!(spread(&d, &sb, &url, &["w2", "w3"]), 2);
    d.ok(&["network", "lb", "delete", "web", "front"]);
    assert_eq!(fetch(&sb, &url), "");
    d.ok(&["delete", "--force", "w1", "w2", "w3"]);
    d.ok(&["network", "delete", "web"]);
    assert!(!nft_tables(&h).contains("vlb-web_"));
}

fn lease_ip6(d: &Daemon, network: &str, instance: &str) -> String {
    lease_field(d, network, instance, "ipv6")
}

fn pings6(d: &Daemon, from: &str, to: &str) -> bool {
    d.sh(from, &format!("ping -6 -c 1 -W 2 {to} >/dev/null")).0 == 0
}

#[test]
fn dual_stack_networks_route_ipv6_through_nat66_resolve_aaaa_and_stay_apart() {
    let sb = Sandbox::new(1);
    let h = &sb.hosts[0];
    let d = Daemon::start_in_netns(h);
    d.busybox();
    d.ok(&[
        "network",
        "create",
        "six",
        "--subnet",
        "10.44.0.0/24",
        "--ipv6",
        "fd44::/64",
    ]);
    d.ok(&[
        "network",
        "create",
        "seven",
        "--subnet",
        "10.47.0.0/24",
        "--ipv6",
        "fd47::/64",
    ]);
    instances(&d, &[("a1", "six"), ("a3", "seven")]);
    // Hot-plugged too.
    d.ok(&["launch", "busybox", "a2", "--", "sleep", "3600"]);
    d.ok(&["network", "attach", "six", "a2"]);
    let n = json(&d.ok(&["network", "info", "six", "--format", "json"]));
    assert_eq!(n["gateway6"], "fd44::1", "{n}");
    let (v1, v2, v3) = (
        lease_ip6(&d, "six", "a1"),
        lease_ip6(&d, "six", "a2"),
        lease_ip6(&d, "seven", "a3"),
    );
    assert!(v2.starts_with("fd44::"), "{v2}");
    // The address is the EUI-64 of the NIC's MAC (what SLAAC gives a VM).
    let mac = n["leases"][1]["mac"].as_str().unwrap().to_string();
    let m: Vec<u8> = mac
        .split(':')
        .map(|x| u8::from_str_radix(x, 16).unwrap())
        .collect();
    let want: std::net::Ipv6Addr = format!(
        "fd44::{:x}:{:x}:{:x}:{:x}",
        u16::from(m[0] ^ 2) << 8 | u16::from(m[1]),
        u16::from(m[2]) << 8 | 0xff,
        0xfe00 | u16::from(m[3]),
        u16::from(m[4]) << 8 | u16::from(m[5])
    )
    .parse()
    .unwrap();
    assert_eq!(v2.parse::<std::net::Ipv6Addr>().unwrap(), want, "{mac}");
    let (code, out) = d.sh("a2", "ip -6 addr show dev eth0");
    assert!(code == 0 && out.contains(&v2), "{out}");
    assert!(pings6(&d, "a1", &v2), "no IPv6 between instances");
    assert!(pings6(&d, "a2", "fd44::1"), "no IPv6 gateway");
    // The stand-in internet has no route back to fd44::/64: only NAT66 gets answers home.
    assert!(pings6(&d, "a1", "2001:db8:ffff::1"), "no way out over IPv6");
    assert!(pings(&d, "a1", "203.0.113.1"), "no way out over IPv4");
    // Networks stay apart over IPv6 too.
    assert!(!pings6(&d, "a1", &v3), "six reaches seven over IPv6");
    assert!(!pings6(&d, "a3", &v1), "seven reaches six over IPv6");
    // AAAA names.
    let (code, out) = d.sh("a1", "nslookup -type=AAAA a2 10.44.0.1");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&v2), "{out}");
    // Bad input changes nothing.
    let before = d.ok(&["network", "list", "--format", "json"]);
    for (args, want) in [
        (
            ["--subnet", "10.48.0.0/24", "--ipv6", "fd44::/64"],
            "overlaps",
        ),
        (["--subnet", "10.48.0.0/24", "--ipv6", "fd48::/48"], "/64"),
        (
            ["--subnet", "10.48.0.0/24", "--ipv6", "fd48::1/64"],
            "host bits",
        ),
        (
            ["--subnet", "10.48.0.0/24", "--ipv6", "fe80::/64"],
            "link-local",
        ),
        (
            ["--subnet", "10.48.0.0/24", "--ipv6", "10.48.0.0/24"],
            "/64",
        ),
    ] {
        let mut cmd = vec!["network", "create", "eight"];
        cmd.extend(args);
        let err = d.fails(&cmd);
        assert!(err.contains(want), "{err}");
    }
    let err = d.fails(&[
        "network",
        "create",
        "eight",
        "--subnet",
        "10.48.0.0/24",
        "--ipv6",
        "fd48::/64",
        "--vni",
        "6000",
        "--local",
        "198.51.100.2",
    ]);
    assert!(err.contains("overlays"), "{err}");
    let err = d.fails(&[
        "network",
        "acl",
        "set",
        "six",
        "--rules",
        "deny ingress icmp",
    ]);
    assert!(err.contains("IPv6"), "{err}");
    assert_eq!(d.ok(&["network", "list", "--format", "json"]), before);
    // A restart keeps it all; deleting takes the IPv6 tables too.
    d.ok(&["restart", "a1"]);
    assert!(pings6(&d, "a1", &v2), "no IPv6 after a restart");
    d.ok(&["delete", "--force", "a1", "a2", "a3"]);
    d.ok(&["network", "delete", "six"]);
    d.ok(&["network", "delete", "seven"]);
    let tables = nft_tables(h);
    assert!(!tables.contains("vessel-"), "{tables}");
}
