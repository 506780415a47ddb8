//! Masquerade and port forwards through nftables, with a namespace standing in for the internet.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use common::{netns_list, require_tool, TestNs};
use vessel_net::{
    apply_script, create_bridge, list_table, plug_veth, remove_table, set_ipv4_forwarding,
    BridgeSpec, Links, NatRules, NetNs, PortForward, Protocol, Subnet, VethNic,
};

const UPLINK_HOST: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
const INTERNET: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);

/// host <-> internet over a veth pair; the internet has no route back to instance subnets.
fn wire_internet(links: &mut Links, inet: &TestNs) {
    links
        .create_veth("uplink", "eth0", Some(&inet.ns))
        .expect("uplink veth");
    links
        .add_address("uplink", UPLINK_HOST, 24)
        .expect("uplink address");
    links.set_up("uplink", true).expect("uplink up");
    let mut far = Links::open(&inet.ns).expect("netlink in internet ns");
    far.add_address("eth0", INTERNET, 24)
        .expect("internet address");
    far.set_up("eth0", true).expect("internet up");
    far.set_up("lo", true).expect("lo up");
}

/// A network with one bridge and one instance; returns the instance address.
fn network(links: &mut Links, name: &str, subnet: &str, inst: &TestNs, addr_host: u8) -> Ipv4Addr {
    let subnet: Subnet = subnet.parse().expect("subnet");
    let bridge = format!("vbr-{name}");
    create_bridge(
        links,
        &BridgeSpec {
            name: bridge.clone(),
            subnet,
            mtu: None,
        },
    )
    .expect("bridge");
    let addr = Ipv4Addr::from(u32::from(subnet.network()) + u32::from(addr_host));
    plug_veth(
        links,
        &VethNic {
            host_name: format!("v{name}0"),
            bridge,
            instance_ns: &inst.ns,
            instance_name: "eth0".into(),
            mac: None,
            address: Some((addr, subnet.prefix())),
            gateway: Some(subnet.gateway()),
            mtu: None,
        },
    )
    .expect("plug");
    addr
}

fn nat(name: &str, subnet: &str, forwards: Vec<PortForward>) -> NatRules {
    NatRules {
        subnet6: None,
        network: name.into(),
        bridge: format!("vbr-{name}"),
        subnet: subnet.parse().expect("subnet"),
        forwards,
        overlay: None,
    }
}

fn listen_tcp(ns: &NetNs, addr: Ipv4Addr, port: u16) -> TcpListener {
    ns.run(|| TcpListener::bind((addr, port)))
        .expect("enter ns")
        .expect("bind listener")
}

/// Connects from inside `ns`; on success, the far side reports the peer address it saw.
/// The address `listener` saw a connection to `to` from `ns` come from; `None` if none got
/// through within 3 s (800 ms was too short once on a loaded host: a first contact's
/// neighbour resolution and NAT set-up while another test binary ran beside it).
fn connect_and_report(ns: &NetNs, to: SocketAddr, listener: &TcpListener) -> Option<Ipv4Addr> {
    let stream = ns
        .run(|| TcpStream::connect_timeout(&to, Duration::from_secs(3)))
        .expect("enter ns");
    let mut stream = stream.ok()?;
    let (mut conn, peer) = listener.accept().expect("accept");
    conn.write_all(peer.ip().to_string().as_bytes())
        .expect("report peer");
    drop(conn);
    let mut seen = String::new();
    stream.read_to_string(&mut seen).expect("read report");
    seen.parse().ok()
}

#[test]
fn masquerade_reaches_the_internet_and_a_broken_ruleset_keeps_the_old_rules() {
    require_tool("nft", "nftables");
    let created;
    {
        let host = TestNs::new("nat-host");
        let inst = TestNs::new("nat-c1");
        let inet = TestNs::new("nat-inet");
        created = [&host, &inst, &inet].map(|n| n.name.clone());
        let mut links = Links::open(&host.ns).expect("netlink");
        wire_internet(&mut links, &inet);
        network(&mut links, "web", "10.50.0.0/24", &inst, 2);
        set_ipv4_forwarding(&host.ns, true).expect("forwarding");
        let listener = listen_tcp(&inet.ns, INTERNET, 7001);
        let far = SocketAddr::from((INTERNET, 7001));

        assert_eq!(
            connect_and_report(&inst.ns, far, &listener),
            None,
            "no NAT, no way back"
        );

        let rules = nat("web", "10.50.0.0/24", vec![]);
        rules.apply(&host.ns).expect("apply nat");
        assert_eq!(
            connect_and_report(&inst.ns, far, &listener),
            Some(UPLINK_HOST),
            "the internet sees the host's address"
        );
        rules
            .apply(&host.ns)
            .expect("re-applying replaces the table");

        let broken = "table ip vessel-web {}\ndelete table ip vessel-web\n\
                      table ip vessel-web { chain postrouting { type nat hook postrouting priority srcnat; masquerade-ish } }\n";
        let err = apply_script(&host.ns, broken).expect_err("broken ruleset refused");
        assert!(err.to_string().contains("previous rules kept"), "{err}");
        let table = list_table(&host.ns, "web")
            .expect("list")
            .expect("table still there");
        assert!(table.contains("masquerade"), "{table}");
        assert_eq!(
            vessel_net::list_tables(&host.ns, "ip").expect("tables"),
            vec!["vessel-web".to_string()]
        );
        assert_eq!(
            connect_and_report(&inst.ns, far, &listener),
            Some(UPLINK_HOST)
        );

        remove_table(&host.ns, "web").expect("remove");
        assert!(list_table(&host.ns, "web").expect("list").is_none());
        assert!(vessel_net::list_tables(&host.ns, "ip")
            .expect("tables")
            .is_empty());
        remove_table(&host.ns, "web").expect("removing twice is fine");
        assert_eq!(
            connect_and_report(&inst.ns, far, &listener),
            None,
            "rules removed"
        );
        // The host's own namespace was never touched.
        assert!(list_table(&NetNs::current(), "web")
            .expect("list host")
            .is_none());
    }
    let after = netns_list();
    assert!(
        created.iter().all(|n| !after.contains(n)),
        "left behind: {after:?}"
    );
}

#[test]
fn port_forwards_reach_instances_and_networks_stay_apart() {
    require_tool("nft", "nftables");
    let host = TestNs::new("fwd-host");
    let inst_a = TestNs::new("fwd-a");
    let inst_b = TestNs::new("fwd-b");
    let inet = TestNs::new("fwd-inet");
    let mut links = Links::open(&host.ns).expect("netlink");
    wire_internet(&mut links, &inet);
    let a = network(&mut links, "fa", "10.60.0.0/24", &inst_a, 2);
    let b = network(&mut links, "fb", "10.61.0.0/24", &inst_b, 2);
    set_ipv4_forwarding(&host.ns, true).expect("forwarding");
    let forwards = vec![
        PortForward {
            protocol: Protocol::Tcp,
            listen_address: Some(UPLINK_HOST),
            listen_port: 8080,
            target: a,
            target_port: 80,
        },
        PortForward {
            protocol: Protocol::Udp,
            listen_address: None,
            listen_port: 5353,
            target: a,
            target_port: 53,
        },
    ];
    nat("fa", "10.60.0.0/24", forwards)
        .apply(&host.ns)
        .expect("nat a");
    nat("fb", "10.61.0.0/24", vec![])
        .apply(&host.ns)
        .expect("nat b");

    // TCP: the internet connects to the host's port and lands on instance a, port 80.
    let web = listen_tcp(&inst_a.ns, a, 80);
    let seen = connect_and_report(&inet.ns, SocketAddr::from((UPLINK_HOST, 8080)), &web);
    assert_eq!(
        seen,
        Some(INTERNET),
        "forwarded TCP keeps the client address"
    );

    // UDP: a datagram to the host's port arrives at instance a, port 53.
    let dns = inst_a
        .ns
        .run(|| UdpSocket::bind((a, 53)))
        .expect("enter")
        .expect("bind udp");
    dns.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let client = inet
        .ns
        .run(|| UdpSocket::bind((INTERNET, 0)))
        .expect("enter")
        .expect("bind");
    client.send_to(b"query", (UPLINK_HOST, 5353)).expect("send");
    let mut buf = [0u8; 16];
    let (n, from) = dns.recv_from(&mut buf).expect("forwarded datagram");
    assert_eq!(
        (&buf[..n], from.ip()),
        (&b"query"[..], std::net::IpAddr::V4(INTERNET))
    );

    // With forwarding on, the two networks still cannot reach each other.
    assert!(!inst_b.ping(&a.to_string()), "network fb must not reach fa");
    assert!(!inst_a.ping(&b.to_string()), "network fa must not reach fb");
    assert!(
        inst_a.reaches(&INTERNET.to_string()),
        "but both reach the internet"
    );

    // The isolation comes from the tables: without them the host routes between networks.
    remove_table(&host.ns, "fa").expect("remove fa");
    remove_table(&host.ns, "fb").expect("remove fb");
    assert!(
        inst_b.reaches(&a.to_string()),
        "without rules the host would route fb to fa"
    );
}

#[test]
fn forwards_answer_the_host_itself_and_instances_of_their_own_network() {
    require_tool("nft", "nftables");
    let host = TestNs::new("fwdh-host");
    let inst_a = TestNs::new("fwdh-a");
    let inst_b = TestNs::new("fwdh-b");
    let inet = TestNs::new("fwdh-inet");
    let mut links = Links::open(&host.ns).expect("netlink");
    links.set_up("lo", true).expect("lo up");
    wire_internet(&mut links, &inet);
    let a = network(&mut links, "fh", "10.62.0.0/24", &inst_a, 2);
    let b = Ipv4Addr::new(10, 62, 0, 3);
    plug_veth(
        &mut links,
        &VethNic {
            host_name: "vfh1".into(),
            bridge: "vbr-fh".into(),
            instance_ns: &inst_b.ns,
            instance_name: "eth0".into(),
            mac: None,
            address: Some((b, 24)),
            gateway: Some(Ipv4Addr::new(10, 62, 0, 1)),
            mtu: None,
        },
    )
    .expect("plug b");
    set_ipv4_forwarding(&host.ns, true).expect("forwarding");
    vessel_net::set_route_localnet(&host.ns, "vbr-fh", true).expect("route_localnet");
    let forwards = vec![PortForward {
        protocol: Protocol::Tcp,
        listen_address: None,
        listen_port: 8080,
        target: a,
        target_port: 80,
    }];
    nat("fh", "10.62.0.0/24", forwards)
        .apply(&host.ns)
        .expect("nat");
    let web = listen_tcp(&inst_a.ns, a, 80);
    let gateway = Ipv4Addr::new(10, 62, 0, 1);
    // The host itself, on its loopback, its uplink address and the gateway.
    for to in [Ipv4Addr::LOCALHOST, UPLINK_HOST, gateway] {
        assert!(
            connect_and_report(&host.ns, SocketAddr::from((to, 8080)), &web).is_some(),
            "the host cannot reach its own forward on {to}"
        );
    }
    // Another instance of the network, through the host's addresses: masqueraded to the
    // gateway, so that the reply comes back the way it went.
    for to in [UPLINK_HOST, gateway] {
        assert_eq!(
            connect_and_report(&inst_b.ns, SocketAddr::from((to, 8080)), &web),
            Some(gateway),
            "hairpin through {to}"
        );
    }
    // An instance reaching its own forward comes back through the port it left by: the
    // port needs hairpin mode.
    vessel_net::set_port_hairpin(&mut links, "vfh0", true).expect("hairpin");
    assert_eq!(
        vessel_net::port_hairpin(&mut links, "vfh0").expect("read back"),
        Some(true)
    );
    assert_eq!(
        connect_and_report(&inst_a.ns, SocketAddr::from((gateway, 8080)), &web),
        Some(gateway),
        "an instance through its own forward"
    );
    // The internet still gets in, with its own address.
    assert_eq!(
        connect_and_report(&inet.ns, SocketAddr::from((UPLINK_HOST, 8080)), &web),
        Some(INTERNET)
    );
    // An instance's own connections to port 8080 elsewhere are not taken.
    let far = listen_tcp(&inet.ns, INTERNET, 8080);
    assert_eq!(
        connect_and_report(&inst_b.ns, SocketAddr::from((INTERNET, 8080)), &far),
        Some(UPLINK_HOST),
        "only what is for the host is forwarded"
    );
}

#[test]
fn used_prefixes_are_the_namespaces_routes_and_addresses() {
    let host = TestNs::new("used-host");
    let inet = TestNs::new("used-inet");
    let inst = TestNs::new("used-c");
    let mut links = Links::open(&host.ns).expect("netlink");
    wire_internet(&mut links, &inet);
    network(&mut links, "us", "10.42.0.0/24", &inst, 2);
    assert!(host
        .exec(&["ip", "route", "add", "10.43.0.0/16", "via", "203.0.113.2"])
        .status
        .success());
    assert!(host
        .exec(&[
            "ip",
            "route",
            "add",
            "10.44.0.0/23",
            "via",
            "203.0.113.2",
            "table",
            "7"
        ])
        .status
        .success());
    assert!(host
        .exec(&["ip", "route", "add", "default", "via", "203.0.113.2"])
        .status
        .success());
    let used = links.used_prefixes().expect("used");
    let candidates =
        (42..=46).map(|o| Subnet::new(Ipv4Addr::new(10, o, 0, 0), 24).expect("subnet"));
    assert_eq!(
        vessel_net::first_free_subnet(candidates, &used),
        Some("10.45.0.0/24".parse().expect("subnet")),
        "10.42 is a bridge's, 10.43 routed, 10.44 in another table: {used:?}"
    );
    let addrs = links.ipv4_addresses().expect("addresses");
    assert!(
        addrs
            .iter()
            .any(|a| a.interface == "uplink" && a.address == UPLINK_HOST && a.prefix == 24),
        "{addrs:?}"
    );
}
