//! VLAN support probing, bridge-per-VLAN segments and isolated bridge ports, with real pings
//! between instance namespaces.

mod common;

use std::net::Ipv4Addr;

use common::{netns_list, TestNs};
use vessel_net::{
    attach_to_segment, create_bridge, create_segment, plug_veth, port_isolated, probe_vlan_support,
    remove_segment, segment_bridge_name, set_port_isolated, BridgeSpec, Links, VethNic, VlanError,
    VlanMode,
};

/// Plugs `inst` into `bridge` through host port `port` with `addr`/24 (no gateway).
fn plug(links: &mut Links, bridge: &str, port: &str, inst: &TestNs, addr: Ipv4Addr) {
    plug_veth(
        links,
        &VethNic {
            host_name: port.into(),
            bridge: bridge.into(),
            instance_ns: &inst.ns,
            instance_name: "eth0".into(),
            mac: None,
            address: Some((addr, 24)),
            gateway: None,
            mtu: None,
        },
    )
    .expect("plug");
}

#[test]
fn probe_reports_a_mode_and_leaves_nothing_behind() {
    let host = TestNs::new("vlan-probe");
    let mut links = Links::open(&host.ns).expect("netlink");
    let support = probe_vlan_support(&mut links).expect("probe");
    let mode = support.mode();
    assert_eq!(mode == VlanMode::VlanFiltering, support.vlan_filtering);
    // The probe bridge is gone: only the loopback is left.
    let out = host.exec(&["ip", "-o", "link", "show"]);
    let links_left = String::from_utf8_lossy(&out.stdout).lines().count();
    assert_eq!(links_left, 1, "{}", String::from_utf8_lossy(&out.stdout));
    // Where the kernel cannot filter VLANs, asking for it fails cleanly.
    links.create_bridge("vbr-f").expect("bridge");
    let filtering = vessel_net::set_vlan_filtering(&mut links, "vbr-f", true);
    assert_eq!(filtering.is_ok(), support.vlan_filtering, "{filtering:?}");
}

#[test]
fn bridge_per_vlan_segments_keep_vlans_apart() {
    let created;
    {
        let host = TestNs::new("seg-host");
        let c = [
            TestNs::new("seg-c1"),
            TestNs::new("seg-c2"),
            TestNs::new("seg-c3"),
        ];
        created = [&host, &c[0], &c[1], &c[2]].map(|n| n.name.clone());
        let mut links = Links::open(&host.ns).expect("netlink");
        let mode = VlanMode::BridgePerVlan;
        // The network's base bridge; instances go onto its segments.
        links.create_bridge("vbr-seg").expect("base bridge");
        let addr = |i| Ipv4Addr::new(10, 120, 0, i);
        for (i, (vid, port)) in [(10, "vseg1"), (10, "vseg2"), (20, "vseg3")]
            .into_iter()
            .enumerate()
        {
            plug(&mut links, "vbr-seg", port, &c[i], addr(i as u8 + 2));
            attach_to_segment(&mut links, mode, "vbr-seg", port, vid).expect("attach");
        }
        let v10 = links.index("vbr-seg-v10").expect("segment 10 bridge");
        let v20 = links.index("vbr-seg-v20").expect("segment 20 bridge");
        assert_eq!(links.master("vseg1").expect("master"), Some(v10));
        assert_eq!(links.master("vseg2").expect("master"), Some(v10));
        assert_eq!(links.master("vseg3").expect("master"), Some(v20));
        assert_eq!(
            create_segment(&mut links, mode, "vbr-seg", 10).expect("exists"),
            "vbr-seg-v10"
        );

        // Same subnet, same base network: only the same VLAN talks.
        assert!(
            c[0].reaches("10.120.0.3"),
            "VLAN 10 members reach each other"
        );
        assert!(!c[0].ping("10.120.0.4"), "VLAN 10 must not reach VLAN 20");
        assert!(!c[2].ping("10.120.0.3"), "VLAN 20 must not reach VLAN 10");

        // Moving c3 to VLAN 10 joins it; removing VLAN 20 removes its bridge.
        attach_to_segment(&mut links, mode, "vbr-seg", "vseg3", 10).expect("move");
        assert!(c[2].reaches("10.120.0.2"));
        remove_segment(&mut links, mode, "vbr-seg", 20).expect("remove");
        assert!(links.find("vbr-seg-v20").expect("find").is_none());
        assert!(matches!(
            attach_to_segment(&mut links, mode, "vbr-seg", "vseg3", 4095),
            Err(VlanError::InvalidVid(4095))
        ));
        assert_eq!(
            segment_bridge_name("vbr-seg", 30).expect("name"),
            "vbr-seg-v30"
        );
    }
    let after = netns_list();
    assert!(
        created.iter().all(|n| !after.contains(n)),
        "left behind: {after:?}"
    );
}

#[test]
fn isolated_ports_reach_the_gateway_but_not_each_other() {
    let created;
    {
        let host = TestNs::new("iso-host");
        let c = [
            TestNs::new("iso-c1"),
            TestNs::new("iso-c2"),
            TestNs::new("iso-c3"),
        ];
        created = [&host, &c[0], &c[1], &c[2]].map(|n| n.name.clone());
        let mut links = Links::open(&host.ns).expect("netlink");
        create_bridge(
            &mut links,
            &BridgeSpec {
                name: "vbr-iso".into(),
                subnet: "10.121.0.0/24".parse().expect("subnet"),
                mtu: None,
            },
        )
        .expect("bridge");
        for (i, inst) in c.iter().enumerate() {
            let port = format!("viso{}", i + 1);
            plug(
                &mut links,
                "vbr-iso",
                &port,
                inst,
                Ipv4Addr::new(10, 121, 0, i as u8 + 2),
            );
        }
        assert!(
            c[0].reaches("10.121.0.3"),
            "before isolation the ports talk"
        );
        assert_eq!(
            port_isolated(&mut links, "viso1").expect("read"),
            Some(false)
        );

        set_port_isolated(&mut links, "viso1", true).expect("isolate 1");
        set_port_isolated(&mut links, "viso2", true).expect("isolate 2");
        assert_eq!(
            port_isolated(&mut links, "viso1").expect("read"),
            Some(true)
        );
        assert_eq!(
            port_isolated(&mut links, "viso3").expect("read"),
            Some(false)
        );
        assert_eq!(
            port_isolated(&mut links, "vbr-iso").expect("read"),
            None,
            "not a port"
        );

        assert!(!c[0].ping("10.121.0.3"), "two isolated ports cannot talk");
        assert!(!c[1].ping("10.121.0.2"), "in either direction");
        assert!(
            c[0].reaches("10.121.0.1") && c[1].reaches("10.121.0.1"),
            "both reach the gateway"
        );
        assert!(
            c[0].reaches("10.121.0.4"),
            "an isolated port reaches a non-isolated one"
        );

        set_port_isolated(&mut links, "viso2", false).expect("release 2");
        assert_eq!(
            port_isolated(&mut links, "viso2").expect("read"),
            Some(false)
        );
        assert!(c[0].reaches("10.121.0.3"), "isolation lifted");
    }
    let after = netns_list();
    assert!(
        created.iter().all(|n| !after.contains(n)),
        "left behind: {after:?}"
    );
}
