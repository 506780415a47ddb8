//! DHCP and DNS with dnsmasq inside a throw-away namespace, exercised by busybox's udhcpc and
//! nslookup from instance namespaces behind the bridge.

mod common;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{netns_list, require_tool, TestNs};
use vessel_net::{
    create_bridge, dnsmasq_pid, plug_veth, read_leases, stop_dnsmasq, Applied, BridgeSpec, DhcpDns,
    DnsmasqError, Links, MacAddr, StaticLease, Upstream, VethNic,
};

const GATEWAY: &str = "10.90.0.1";
const MAC1: [u8; 6] = [0x0a, 0x76, 0x73, 0, 0, 1];
const MAC2: [u8; 6] = [0x0a, 0x76, 0x73, 0, 0, 2];

/// Stops the test's dnsmasq and removes its state directory, also when the test fails.
/// Declared after the namespaces so that it runs first.
struct StateDir(PathBuf);

impl Drop for StateDir {
    fn drop(&mut self) {
        stop_dnsmasq(&self.0);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn lease(mac: [u8; 6], last: u8, name: &str) -> StaticLease {
    StaticLease {
        mac: MacAddr::new(mac),
        ip: Ipv4Addr::new(10, 90, 0, last),
        name: Some(name.into()),
        ipv6: None,
    }
}

fn plug(links: &mut Links, port: &str, inst: &TestNs, mac: [u8; 6]) {
    plug_veth(
        links,
        &VethNic {
            host_name: port.into(),
            bridge: "vbr-dns".into(),
            instance_ns: &inst.ns,
            instance_name: "eth0".into(),
            mac: Some(MacAddr::new(mac)),
            address: None,
            gateway: None,
            mtu: None,
        },
    )
    .expect("plug");
}

/// Runs busybox udhcpc once in `inst`; its script records what it was given and configures
/// the address. Returns "ip router dns domain".
fn udhcpc(inst: &TestNs, dir: &Path) -> Option<String> {
    let script = dir.join(format!("udhcpc-{}.sh", inst.name));
    let out = dir.join(format!("udhcpc-{}.out", inst.name));
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n[ \"$1\" = bound ] || exit 0\n\
             echo \"$ip $router $dns $domain\" > {out}\n\
             busybox ip addr add \"$ip/$mask\" dev \"$interface\"\n",
            out = out.display()
        ),
    )
    .expect("script");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let run = inst.exec(&[
        "busybox",
        "udhcpc",
        "-i",
        "eth0",
        "-f",
        "-q",
        "-n",
        "-t",
        "5",
        "-T",
        "1",
        "-s",
        &script.to_string_lossy(),
    ]);
    run.status.success().then(|| {
        std::fs::read_to_string(&out)
            .expect("udhcpc script output")
            .trim()
            .to_string()
    })
}

/// The address busybox nslookup finds for `name` at the gateway, if any.
fn lookup(inst: &TestNs, name: &str, server: &str) -> Option<Ipv4Addr> {
    let out = inst.exec(&["busybox", "nslookup", "-timeout=1", name, server]);
    let text = String::from_utf8_lossy(&out.stdout);
    // The answer section follows the server's lines; take the last address printed.
    let after_name = text.split("Name:").nth(1)?;
    after_name
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Address:"))
        .filter_map(|a| a.trim().parse().ok())
        .next_back()
}

/// Retries `lookup` for a moment: a reload after SIGHUP is asynchronous.
fn lookup_soon(inst: &TestNs, name: &str, want: Option<Ipv4Addr>) -> Option<Ipv4Addr> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = lookup(inst, name, GATEWAY);
        if got == want || Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn alive(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| !c.is_empty())
}

#[test]
fn dnsmasq_serves_static_leases_and_names_reloads_and_recovers() {
    require_tool("dnsmasq", "dnsmasq-base");
    require_tool("busybox", "busybox-static");
    let created;
    {
        let host = TestNs::new("dns-host");
        let c1 = TestNs::new("dns-c1");
        let c2 = TestNs::new("dns-c2");
        created = [&host, &c1, &c2].map(|n| n.name.clone());
        let state =
            StateDir(std::env::temp_dir().join(format!("vessel-dns-{}", std::process::id())));
        let dir = state.0.clone();
        let mut links = Links::open(&host.ns).expect("netlink");
        create_bridge(
            &mut links,
            &BridgeSpec {
                name: "vbr-dns".into(),
                subnet: "10.90.0.0/24".parse().expect("subnet"),
                mtu: None,
            },
        )
        .expect("bridge");
        plug(&mut links, "vdns1", &c1, MAC1);
        plug(&mut links, "vdns2", &c2, MAC2);

        let mut config = DhcpDns {
            bridge: "vbr-dns".into(),
            subnet: "10.90.0.0/24".parse().expect("subnet"),
            dynamic_range: None,
            lease_secs: 600,
            domain: "dns.vessel".into(),
            static_leases: vec![lease(MAC1, 10, "web1"), lease(MAC2, 20, "db")],
            remote_names: Vec::new(),
            upstream: Upstream::None,
            ipv6_gateway: None,
            state_dir: dir.clone(),
        };
        let Applied::Started(pid) = config.apply(&host.ns).expect("start") else {
            panic!("expected a fresh start");
        };
        assert_eq!(dnsmasq_pid(&dir), Some(pid));
        let ns_of = |pid: u32| std::fs::read_link(format!("/proc/{pid}/ns/net")).ok();
        let host_ns = host
            .ns
            .run(|| std::fs::read_link("/proc/thread-self/ns/net").ok())
            .expect("enter");
        assert_eq!(
            ns_of(pid),
            host_ns,
            "dnsmasq runs inside the network's namespace"
        );
        assert_ne!(
            ns_of(pid),
            ns_of(std::process::id()),
            "and not in the test's"
        );

        // DHCP: each instance gets its static lease, the gateway as router and DNS server.
        assert_eq!(
            udhcpc(&c1, &dir).as_deref(),
            Some("10.90.0.10 10.90.0.1 10.90.0.1 dns.vessel")
        );
        assert_eq!(
            udhcpc(&c2, &dir).as_deref(),
            Some("10.90.0.20 10.90.0.1 10.90.0.1 dns.vessel")
        );
        let leases = read_leases(&dir);
        assert!(
            leases
                .iter()
                .any(|l| l.mac == MacAddr::new(MAC1) && l.ip == Ipv4Addr::new(10, 90, 0, 10)),
            "{leases:?}"
        );
        assert!(c1.reaches("10.90.0.20"), "the leased addresses work");

        // DNS: instance names resolve, short and qualified; nothing else does.
        let web1 = Some(Ipv4Addr::new(10, 90, 0, 10));
        let db = Some(Ipv4Addr::new(10, 90, 0, 20));
        assert_eq!(lookup(&c2, "web1", GATEWAY), web1);
        assert_eq!(lookup(&c1, "db.dns.vessel", GATEWAY), db);
        assert_eq!(lookup(&c1, "nope.dns.vessel", GATEWAY), None);
        assert_eq!(
            lookup(&c1, "example.com", GATEWAY),
            None,
            "no upstream was given"
        );
        // Bound to the bridge only: nothing answers on the host namespace's loopback.
        host.exec(&["ip", "link", "set", "lo", "up"]);
        assert_eq!(lookup(&host, "web1", "127.0.0.1"), None);
        assert_eq!(lookup(&host, "web1", GATEWAY), web1);

        // A new instance: hosts and leases are re-read on SIGHUP, same process.
        config
            .static_leases
            .push(lease([0x0a, 0x76, 0x73, 0, 0, 3], 30, "cache"));
        assert_eq!(
            config.apply(&host.ns).expect("reload"),
            Applied::Reloaded(pid)
        );
        assert_eq!(
            lookup_soon(&c1, "cache", Some(Ipv4Addr::new(10, 90, 0, 30))),
            Some(Ipv4Addr::new(10, 90, 0, 30))
        );
        // Removing an instance that holds a lease forgets the lease too (a restart).
        config
            .static_leases
            .retain(|l| l.name.as_deref() != Some("db"));
        let Applied::Restarted(pid) = config.apply(&host.ns).expect("restart") else {
            panic!("expected a restart to drop the lease");
        };
        assert_eq!(
            lookup(&c1, "db", GATEWAY),
            None,
            "a removed instance's name goes"
        );
        assert!(read_leases(&dir)
            .iter()
            .all(|l| l.mac != MacAddr::new(MAC2)));
        assert_eq!(lookup(&c2, "web1", GATEWAY), web1);

        // A daemon restarting with the same network adopts the running server.
        let again = config.clone();
        assert_eq!(
            again.apply(&host.ns).expect("adopt"),
            Applied::Reloaded(pid)
        );

        // dnsmasq crashed: the pid file is stale, a new server starts.
        // SAFETY: kill(2) on the dnsmasq this test started.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        let deadline = Instant::now() + Duration::from_secs(3);
        while dnsmasq_pid(&dir).is_some() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(dnsmasq_pid(&dir), None, "a dead server is not believed");
        let Applied::Started(pid2) = config.apply(&host.ns).expect("restart") else {
            panic!("expected a fresh start after the crash");
        };
        assert_ne!(pid, pid2);
        assert_eq!(lookup(&c2, "web1", GATEWAY), web1);

        // A pid file naming an unrelated live process is not believed either.
        stop_dnsmasq(&dir);
        assert!(!alive(pid2));
        std::fs::write(dir.join("dnsmasq.pid"), std::process::id().to_string()).expect("pid");
        assert_eq!(dnsmasq_pid(&dir), None);
        let Applied::Started(pid3) = config.apply(&host.ns).expect("start") else {
            panic!("expected a fresh start");
        };

        // Changing the domain needs a restart; the old server is gone.
        config.domain = "other.vessel".into();
        let Applied::Restarted(pid4) = config.apply(&host.ns).expect("restart") else {
            panic!("expected a restart");
        };
        assert!(pid4 != pid3 && !alive(pid3));
        assert_eq!(lookup(&c2, "web1.other.vessel", GATEWAY), web1);
        assert_eq!(lookup(&c2, "web1.dns.vessel", GATEWAY), None);

        // A refused configuration leaves the running server alone.
        let mut bad = config.clone();
        bad.static_leases
            .push(lease([0x0a, 0x76, 0x73, 0, 0, 9], 10, "dup"));
        assert!(matches!(
            bad.apply(&host.ns),
            Err(DnsmasqError::Duplicate { .. })
        ));
        assert_eq!(dnsmasq_pid(&dir), Some(pid4));
        // A bridge that does not exist makes dnsmasq itself fail, loudly.
        let mut missing = config.clone();
        missing.bridge = "vbr-none".into();
        missing.state_dir = dir.join("missing");
        let err = missing.apply(&host.ns).expect_err("no such bridge");
        assert!(matches!(err, DnsmasqError::Failed(_)), "{err}");

        stop_dnsmasq(&dir);
        assert!(!alive(pid4) && dnsmasq_pid(&dir).is_none());
    }
    let after = netns_list();
    assert!(
        created.iter().all(|n| !after.contains(n)),
        "left behind: {after:?}"
    );
}
