//! ACLs on a bridge network: real TCP and ICMP between instances, allowed and denied by rules
//! applied atomically; refused rule sets leave the previous rules in force.

mod common;

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::thread::JoinHandle;
use std::time::Duration;

use common::{netns_list, require_tool, TestNs};
use vessel_net::{
    create_bridge, list_acl, parse_rules, plug_veth, probe_acl_mode, remove_acl, AclAction,
    AclError, BridgeSpec, Cidr, Links, NetNs, NetworkAcl, NicAcl, VethNic,
};

const C1: Ipv4Addr = Ipv4Addr::new(10, 110, 0, 2);
const C2: Ipv4Addr = Ipv4Addr::new(10, 110, 0, 3);
const C3: Ipv4Addr = Ipv4Addr::new(10, 110, 0, 4);

/// A TCP listener accepting (and closing) connections until dropped.
struct Server {
    fd: i32,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(ns: &NetNs, addr: Ipv4Addr, port: u16) -> Self {
        let listener = ns
            .run(|| TcpListener::bind((addr, port)))
            .expect("enter")
            .expect("bind");
        let fd = listener.as_raw_fd();
        let thread =
            std::thread::spawn(move || for _ in listener.incoming().map_while(Result::ok) {});
        Self {
            fd,
            thread: Some(thread),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: shutdown(2) on the listener its thread still owns; accept fails, the
        // thread ends and closes it.
        unsafe { libc::shutdown(self.fd, libc::SHUT_RDWR) };
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Whether a TCP connection from `from` to `to:port` is established within 600 ms.
fn connects(from: &TestNs, to: Ipv4Addr, port: u16) -> bool {
    from.ns
        .run(|| {
            TcpStream::connect_timeout(&SocketAddr::from((to, port)), Duration::from_millis(600))
        })
        .expect("enter")
        .is_ok()
}

/// Whether a TCP connection from `from` to `to:port` is established in one of up to
/// three tries: for what must connect (a first SYN may be lost on a loaded machine, and
/// the kernel sends its next only after a second). What must not is shown by one.
fn reaches_port(from: &TestNs, to: Ipv4Addr, port: u16) -> bool {
    (0..3).any(|_| connects(from, to, port))
}

fn rules(text: &str) -> Vec<vessel_net::AclRule> {
    parse_rules(text).expect("rules")
}

#[test]
fn acls_allow_and_deny_real_traffic_and_bad_rules_keep_the_old_ones() {
    require_tool("nft", "nftables");
    require_tool("busybox", "busybox-static");
    let created;
    {
        let host = TestNs::new("acl-host");
        let c = [
            TestNs::new("acl-c1"),
            TestNs::new("acl-c2"),
            TestNs::new("acl-c3"),
        ];
        created = [&host, &c[0], &c[1], &c[2]].map(|n| n.name.clone());
        let mut links = Links::open(&host.ns).expect("netlink");
        create_bridge(
            &mut links,
            &BridgeSpec {
                name: "vbr-acl".into(),
                subnet: "10.110.0.0/24".parse().expect("subnet"),
                mtu: None,
            },
        )
        .expect("bridge");
        for (i, addr) in [C1, C2, C3].into_iter().enumerate() {
            plug_veth(
                &mut links,
                &VethNic {
                    host_name: format!("vacl{}", i + 1),
                    bridge: "vbr-acl".into(),
                    instance_ns: &c[i].ns,
                    instance_name: "eth0".into(),
                    mac: None,
                    address: Some((addr, 24)),
                    gateway: Some(Ipv4Addr::new(10, 110, 0, 1)),
                    mtu: None,
                },
            )
            .expect("plug");
        }
        let _servers = [
            Server::start(&c[0].ns, C1, 80),
            Server::start(&c[1].ns, C2, 80),
            Server::start(&c[1].ns, C2, 81),
        ];
        // Without ACLs everything flows.
        assert!(
            reaches_port(&c[2], C2, 80)
                && reaches_port(&c[2], C2, 81)
                && reaches_port(&c[1], C1, 80)
        );
        assert!(c[2].reaches(&C2.to_string()));

        let mode = probe_acl_mode(&host.ns);
        let mut acl = NetworkAcl {
            network: "acl".into(),
            gateway: Some(Ipv4Addr::new(10, 110, 0, 1)),
            default_ingress: AclAction::Deny,
            default_egress: AclAction::Allow,
            rules: rules("allow ingress tcp from @web port 80\nallow ingress icmp"),
            nics: vec![
                NicAcl {
                    name: "vacl1".into(),
                    rules: vec![],
                },
                NicAcl {
                    name: "vacl2".into(),
                    rules: vec![],
                },
                NicAcl {
                    name: "vacl3".into(),
                    rules: rules("deny egress icmp"),
                },
            ],
            sets: [("web".to_string(), vec![Cidr::from(C1)])]
                .into_iter()
                .collect(),
        };
        acl.apply(&host.ns, mode).expect("apply");

        assert!(
            reaches_port(&c[0], C2, 80),
            "c1 is in @web: allowed to c2:80"
        );
        assert!(
            !connects(&c[2], C2, 80),
            "c3 is not in @web: denied by default"
        );
        assert!(!connects(&c[0], C2, 81), "port 81 is not allowed");
        assert!(!connects(&c[1], C1, 80), "c2 is not in @web either");
        assert!(
            c[0].reaches(&C2.to_string()),
            "icmp into instances is allowed"
        );
        assert!(!c[2].ping(&C2.to_string()), "c3's own rule denies its icmp");
        let applied = list_acl(&host.ns, "acl").expect("list").expect("table");
        assert!(
            applied.contains("jump nic2_out") && applied.contains("10.110.0.2"),
            "{applied}"
        );

        // A rule that does not parse never reaches the kernel; the error says where.
        let err = parse_rules("allow ingress tcp from @web port 80\nallow ingress tcp port http")
            .expect_err("bad port");
        assert_eq!((err.line, err.column), (2, 24), "{err}");
        // A rule naming an unknown set, or a NIC name nft could not quote, is refused before
        // anything is applied.
        let mut bad = acl.clone();
        bad.rules = rules("allow ingress tcp from @nobody port 81");
        assert!(matches!(
            bad.apply(&host.ns, mode),
            Err(AclError::UnknownSet(_))
        ));
        let mut bad = acl.clone();
        bad.nics[0].name = "vacl1*\"".into();
        assert!(matches!(
            bad.apply(&host.ns, mode),
            Err(AclError::InvalidNic(_))
        ));
        assert_eq!(
            list_acl(&host.ns, "acl").expect("list").as_deref(),
            Some(applied.as_str()),
            "the previous rules are still the ones in force"
        );
        assert!(reaches_port(&c[0], C2, 80) && !connects(&c[2], C2, 80));

        // Adding c3 to @web lets it in, in one transaction.
        acl.sets
            .insert("web".into(), vec![Cidr::from(C1), Cidr::from(C3)]);
        acl.apply(&host.ns, mode).expect("update");
        assert!(reaches_port(&c[2], C2, 80), "c3 joined @web");
        assert!(!connects(&c[2], C2, 81));

        // Default allow on ingress, explicit deny of one port.
        acl.default_ingress = AclAction::Allow;
        acl.rules = rules("deny ingress tcp port 81");
        acl.apply(&host.ns, mode).expect("allow by default");
        assert!(reaches_port(&c[1], C1, 80) && !connects(&c[2], C2, 81));

        remove_acl(&host.ns, "acl").expect("remove");
        assert!(list_acl(&host.ns, "acl").expect("list").is_none());
        assert!(reaches_port(&c[2], C2, 81) && c[2].reaches(&C2.to_string()));
    }
    let after = netns_list();
    assert!(
        created.iter().all(|n| !after.contains(n)),
        "left behind: {after:?}"
    );
}
