//! Bridges and veth NICs on real kernel objects inside throw-away namespaces.

mod common;

use common::{netns_list, TestNs};
use vessel_net::{
    bridge_mac, create_bridge, plug_veth, set_ipv4_forwarding, unplug_veth, BridgeSpec, Ipam,
    Links, MacAddr, MacAllocator, Subnet, VethNic,
};

/// Plugs a veth NIC from `bridge` in `host` into `inst`, with the next address from `ipam`.
fn plug(
    host: &mut Links,
    bridge: &str,
    port: &str,
    inst: &TestNs,
    ipam: &mut Ipam,
    macs: &mut MacAllocator,
) -> String {
    let addr = ipam.allocate().expect("free address");
    plug_veth(
        host,
        &VethNic {
            host_name: port.into(),
            bridge: bridge.into(),
            instance_ns: &inst.ns,
            instance_name: "eth0".into(),
            mac: Some(macs.allocate()),
            address: Some((addr, ipam.subnet().prefix())),
            gateway: Some(ipam.subnet().gateway()),
            mtu: Some(1400),
        },
    )
    .expect("plug veth");
    addr.to_string()
}

#[test]
fn containers_on_one_bridge_reach_each_other_and_not_another_bridge() {
    let created;
    {
        let host = TestNs::new("br-host");
        let c1 = TestNs::new("br-c1");
        let c2 = TestNs::new("br-c2");
        let c3 = TestNs::new("br-c3");
        created = [&host, &c1, &c2, &c3].map(|n| n.name.clone());
        let during = netns_list();
        assert!(created.iter().all(|n| during.contains(n)));
        let mut links = Links::open(&host.ns).expect("netlink in host ns");
        // A new namespace inherits the host's ip_forward (devconf_inherit_init_net=0); this
        // test is about bridges alone, without a router between them.
        set_ipv4_forwarding(&host.ns, false).expect("forwarding off");
        let mut macs = MacAllocator::new(7);
        let net_a: Subnet = "10.42.0.0/24".parse().expect("subnet");
        let net_b: Subnet = "10.43.0.0/24".parse().expect("subnet");
        create_bridge(
            &mut links,
            &BridgeSpec {
                name: "vbr-a".into(),
                subnet: net_a,
                mtu: None,
            },
        )
        .expect("bridge a");
        create_bridge(
            &mut links,
            &BridgeSpec {
                name: "vbr-b".into(),
                subnet: net_b,
                mtu: None,
            },
        )
        .expect("bridge b");
        let mut ipam_a = Ipam::new(net_a);
        let mut ipam_b = Ipam::new(net_b);
        let a1 = plug(&mut links, "vbr-a", "va1", &c1, &mut ipam_a, &mut macs);
        let a2 = plug(&mut links, "vbr-a", "va2", &c2, &mut ipam_a, &mut macs);
        let b1 = plug(&mut links, "vbr-b", "vb1", &c3, &mut ipam_b, &mut macs);
        assert_eq!(
            (a1.as_str(), a2.as_str(), b1.as_str()),
            ("10.42.0.2", "10.42.0.3", "10.43.0.2")
        );

        // The bridge's MAC is fixed: a port with a lower MAC joining or leaving does not move
        // it (an unset bridge MAC follows its lowest port, breaking every ARP entry).
        let bridge_shown = |host: &TestNs| {
            String::from_utf8_lossy(&host.exec(&["ip", "link", "show", "vbr-a"]).stdout).to_string()
        };
        let fixed = bridge_mac("vbr-a").to_string();
        assert!(
            bridge_shown(&host).contains(&fixed),
            "{}",
            bridge_shown(&host)
        );
        links
            .set_mac("va1", MacAddr::new([0x02, 0, 0, 0, 0, 1]))
            .expect("a low MAC on a port");
        assert!(
            bridge_shown(&host).contains(&fixed),
            "{}",
            bridge_shown(&host)
        );
        assert_ne!(bridge_mac("vbr-a"), bridge_mac("vbr-b"));
        assert!(bridge_mac("vbr-a").is_local() && !bridge_mac("vbr-a").is_multicast());

        // The instance end got its MAC and MTU.
        let show =
            String::from_utf8_lossy(&c1.exec(&["ip", "link", "show", "eth0"]).stdout).to_string();
        assert!(
            show.contains("mtu 1400") && show.contains("link/ether 0a:76:73:"),
            "{show}"
        );

        assert!(c1.reaches(&a2), "c1 -> c2 on the same bridge");
        assert!(c2.reaches(&a1), "c2 -> c1 on the same bridge");
        assert!(c1.reaches("10.42.0.1"), "c1 -> gateway");
        assert!(!c3.ping(&a1), "bridge b must not reach bridge a");
        assert!(!c1.ping(&b1), "bridge a must not reach bridge b");

        unplug_veth(&mut links, "va2").expect("unplug");
        assert!(
            bridge_shown(&host).contains(&fixed),
            "{}",
            bridge_shown(&host)
        );
        assert!(
            !host.has_link("va2") && !c2.has_link("eth0"),
            "both veth ends gone"
        );
        assert!(!c1.ping(&a2), "unplugged NIC no longer answers");
        links.delete("vbr-b").expect("delete bridge");
        assert!(!host.has_link("vbr-b"));
    }
    let after = netns_list();
    assert!(
        created.iter().all(|n| !after.contains(n)),
        "test namespaces left behind: {after:?}"
    );
}

#[test]
fn link_errors_are_reported_and_leave_nothing_behind() {
    let host = TestNs::new("br-err");
    let mut links = Links::open(&host.ns).expect("netlink");
    let subnet: Subnet = "10.44.0.0/24".parse().expect("subnet");
    let spec = BridgeSpec {
        name: "vbr-e".into(),
        subnet,
        mtu: Some(1450),
    };
    create_bridge(&mut links, &spec).expect("bridge");
    assert!(
        create_bridge(&mut links, &spec).is_err(),
        "duplicate bridge refused"
    );
    assert!(links.find("nope0").expect("lookup").is_none());
    assert!(links.set_up("nope0", true).is_err());
    assert!(links.create_bridge("this-name-is-too-long").is_err());
    // A veth that cannot be attached (no such bridge) is deleted again.
    let inst = TestNs::new("br-err-i");
    let err = plug_veth(
        &mut links,
        &VethNic {
            host_name: "vx1".into(),
            bridge: "missing0".into(),
            instance_ns: &inst.ns,
            instance_name: "eth0".into(),
            mac: None,
            address: None,
            gateway: None,
            mtu: None,
        },
    );
    assert!(err.is_err());
    assert!(
        !host.has_link("vx1") && !inst.has_link("eth0"),
        "failed plug cleaned up"
    );

    // A pair created locally, one end then moved into the instance by namespace fd.
    links.create_veth("m0", "m1", None).expect("local veth");
    links.move_to("m1", &inst.ns).expect("move");
    assert!(!host.has_link("m1") && inst.has_link("m1"), "m1 moved");
    let mac: vessel_net::MacAddr = "0a:76:73:aa:bb:cc".parse().expect("mac");
    links.set_mac("m0", mac).expect("mac");
    links.set_up("m0", true).expect("up");
    links.set_up("m0", false).expect("down");
    let m0 = String::from_utf8_lossy(&host.exec(&["ip", "link", "show", "m0"]).stdout).to_string();
    assert!(
        m0.contains("0a:76:73:aa:bb:cc") && !m0.contains(",UP"),
        "{m0}"
    );
    let show = String::from_utf8_lossy(&host.exec(&["ip", "-4", "addr", "show", "vbr-e"]).stdout)
        .to_string();
    assert!(
        show.contains("mtu 1450") && show.contains("10.44.0.1/24") && show.contains("UP"),
        "{show}"
    );
}
