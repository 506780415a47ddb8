//! A VXLAN overlay between two "hosts" (namespaces joined by an underlay veth pair).

mod common;

use std::net::Ipv4Addr;

use common::{netns_list, TestNs};
use vessel_net::{
    add_vxlan_peer, create_vxlan, plug_veth, remove_vxlan_peer, Links, VethNic, VxlanError,
    VxlanSpec, VXLAN_PORT,
};

const H1: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 1);
const H2: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 2);

/// On `host`: a bridge plus a VXLAN device for `vni` whose only peer is `peer`.
fn overlay(links: &mut Links, vni: u32, local: Ipv4Addr, peer: Ipv4Addr) {
    let bridge = format!("vbr-{vni}");
    links.create_bridge(&bridge).expect("bridge");
    links.set_mtu(&bridge, 1450).expect("bridge mtu");
    links.set_up(&bridge, true).expect("bridge up");
    let spec = VxlanSpec {
        name: format!("vx{vni}"),
        vni,
        local,
        port: VXLAN_PORT,
        underlay_mtu: 1500,
        bridge,
    };
    create_vxlan(links, &spec).expect("vxlan");
    add_vxlan_peer(links, &spec.name, peer).expect("peer");
}

fn instance(links: &mut Links, vni: u32, port: &str, inst: &TestNs, addr: [u8; 4]) {
    plug_veth(
        links,
        &VethNic {
            host_name: port.into(),
            bridge: format!("vbr-{vni}"),
            instance_ns: &inst.ns,
            instance_name: "eth0".into(),
            mac: None,
            address: Some((addr.into(), 24)),
            gateway: None,
            mtu: Some(1450),
        },
    )
    .expect("plug");
}

#[test]
fn overlay_carries_traffic_between_hosts_on_one_vni_only() {
    let created;
    {
        let h1 = TestNs::new("vx-h1");
        let h2 = TestNs::new("vx-h2");
        let c1 = TestNs::new("vx-c1");
        let c2 = TestNs::new("vx-c2");
        let c3 = TestNs::new("vx-c3");
        created = [&h1, &h2, &c1, &c2, &c3].map(|n| n.name.clone());
        let mut l1 = Links::open(&h1.ns).expect("netlink h1");
        let mut l2 = Links::open(&h2.ns).expect("netlink h2");

        // Underlay between the two hosts.
        l1.create_veth("under", "under", Some(&h2.ns))
            .expect("underlay");
        l1.add_address("under", H1, 24).expect("addr");
        l2.add_address("under", H2, 24).expect("addr");
        l1.set_up("under", true).expect("up");
        l2.set_up("under", true).expect("up");

        for vni in [5001, 5002] {
            overlay(&mut l1, vni, H1, H2);
            overlay(&mut l2, vni, H2, H1);
        }
        let show =
            String::from_utf8_lossy(&h1.exec(&["ip", "-d", "link", "show", "vx5001"]).stdout)
                .to_string();
        assert!(
            show.contains("mtu 1450") && show.contains("vxlan id 5001"),
            "{show}"
        );

        instance(&mut l1, 5001, "c1", &c1, [10, 70, 0, 2]);
        instance(&mut l2, 5001, "c2", &c2, [10, 70, 0, 3]);
        instance(&mut l2, 5002, "c3", &c3, [10, 70, 0, 4]);

        assert!(c1.reaches("10.70.0.3"), "same VNI across hosts");
        assert!(c2.reaches("10.70.0.2"), "and back");
        assert!(
            !c3.ping("10.70.0.2"),
            "another VNI, same subnet, must not reach"
        );

        remove_vxlan_peer(&mut l1, "vx5001", H2).expect("remove peer");
        remove_vxlan_peer(&mut l2, "vx5001", H1).expect("remove peer");
        c1.exec(&["ip", "neigh", "flush", "dev", "eth0"]);
        assert!(!c1.ping("10.70.0.3"), "no peer, no overlay");

        let bad = VxlanSpec {
            name: "vxbad".into(),
            vni: 1 << 24,
            local: H1,
            port: VXLAN_PORT,
            underlay_mtu: 1500,
            bridge: "vbr-5001".into(),
        };
        assert!(matches!(
            create_vxlan(&mut l1, &bad),
            Err(VxlanError::InvalidVni(_))
        ));
        let orphan = VxlanSpec {
            vni: 7000,
            bridge: "missing0".into(),
            ..bad
        };
        assert!(create_vxlan(&mut l1, &orphan).is_err());
        assert!(!h1.has_link("vxbad"), "failed device removed again");
    }
    let after = netns_list();
    assert!(
        created.iter().all(|n| !after.contains(n)),
        "left behind: {after:?}"
    );
}
