//! Bandwidth limits on a NIC, measured with real TCP transfers between namespaces.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::{netns_list, require_tool, TestNs};
use vessel_net::{
    bandwidth, clear_bandwidth, create_bridge, ifb_name, plug_veth, set_bandwidth, BandwidthError,
    BandwidthLimits, BridgeSpec, Links, NetNs, RateLimit, VethNic,
};

const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 80, 0, 1);
const INSTANCE: Ipv4Addr = Ipv4Addr::new(10, 80, 0, 2);
const PAYLOAD: usize = 512 * 1024;

/// Sends PAYLOAD bytes from `from` to a listener at `to_addr` inside `to`; returns how long
/// the receiver took to get all of it.
fn transfer(from: &NetNs, to: &NetNs, to_addr: Ipv4Addr, port: u16) -> Duration {
    let listener = to
        .run(|| TcpListener::bind((to_addr, port)))
        .expect("enter")
        .expect("bind");
    let receiver = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        let start = Instant::now();
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0;
        while total < PAYLOAD {
            let n = conn.read(&mut buf).expect("read");
            assert!(n > 0, "connection closed early");
            total += n;
        }
        start.elapsed()
    });
    let mut stream = from
        .run(|| TcpStream::connect_timeout(&(to_addr, port).into(), Duration::from_secs(2)))
        .expect("enter")
        .expect("connect");
    stream.write_all(&vec![7u8; PAYLOAD]).expect("send");
    receiver.join().expect("receiver")
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

#[test]
fn limits_shape_real_traffic_both_ways_and_read_back() {
    require_tool("tc", "iproute2");
    let created;
    {
        let host = TestNs::new("bw-host");
        let inst = TestNs::new("bw-c1");
        created = [host.name.clone(), inst.name.clone()];
        let mut links = Links::open(&host.ns).expect("netlink");
        create_bridge(
            &mut links,
            &BridgeSpec {
                name: "vbr-bw".into(),
                subnet: "10.80.0.0/24".parse().expect("subnet"),
                mtu: None,
            },
        )
        .expect("bridge");
        plug_veth(
            &mut links,
            &VethNic {
                host_name: "vbw1".into(),
                bridge: "vbr-bw".into(),
                instance_ns: &inst.ns,
                instance_name: "eth0".into(),
                mac: None,
                address: Some((INSTANCE, 24)),
                gateway: Some(GATEWAY),
                mtu: None,
            },
        )
        .expect("plug");
        let ifb = ifb_name(links.index("vbw1").expect("index"));
        assert!(inst.reaches(&GATEWAY.to_string()));

        let free_in = transfer(&host.ns, &inst.ns, INSTANCE, 9001);
        let free_out = transfer(&inst.ns, &host.ns, GATEWAY, 9002);
        assert!(
            secs(free_in) < 0.4 && secs(free_out) < 0.4,
            "{free_in:?} {free_out:?}"
        );
        assert_eq!(
            bandwidth(&host.ns, "vbw1").expect("read"),
            BandwidthLimits::default()
        );

        // 4 Mbit/s both ways: 512 KiB take about a second each way.
        let four = RateLimit {
            rate_bps: 4_000_000,
            burst_bytes: 16 * 1024,
        };
        let limits = BandwidthLimits {
            ingress: Some(four),
            egress: Some(four),
        };
        set_bandwidth(&host.ns, "vbw1", &limits).expect("set");
        assert_eq!(bandwidth(&host.ns, "vbw1").expect("read"), limits);
        assert!(host.has_link(&ifb));
        let expected = (PAYLOAD * 8) as f64 / 4_000_000.0;
        let t_in = secs(transfer(&host.ns, &inst.ns, INSTANCE, 9003));
        let t_out = secs(transfer(&inst.ns, &host.ns, GATEWAY, 9004));
        for (what, t) in [("into", t_in), ("out of", t_out)] {
            assert!(
                t > expected * 0.75 && t < expected * 2.0,
                "{what} the instance: {t:.2}s, expected about {expected:.2}s"
            );
        }

        // Changing one direction and removing the other; applying twice changes nothing.
        let sixteen = RateLimit::new(16_000_000);
        let changed = BandwidthLimits {
            ingress: Some(sixteen),
            egress: None,
        };
        set_bandwidth(&host.ns, "vbw1", &changed).expect("change");
        set_bandwidth(&host.ns, "vbw1", &changed).expect("idempotent");
        assert_eq!(bandwidth(&host.ns, "vbw1").expect("read"), changed);
        assert!(!host.has_link(&ifb), "the ifb goes with the egress limit");
        let t_in = secs(transfer(&host.ns, &inst.ns, INSTANCE, 9005));
        let expected_in = expected / 4.0;
        assert!(
            t_in > expected_in * 0.6 && t_in < expected_in * 2.5,
            "{t_in:.2}s, expected about {expected_in:.2}s"
        );
        assert!(secs(transfer(&inst.ns, &host.ns, GATEWAY, 9006)) < 0.4);

        // Bad limits are refused and leave the current ones.
        let err = set_bandwidth(
            &host.ns,
            "vbw1",
            &BandwidthLimits {
                ingress: Some(RateLimit {
                    rate_bps: 1_000_000,
                    burst_bytes: 10,
                }),
                egress: None,
            },
        )
        .expect_err("tiny burst");
        assert!(matches!(err, BandwidthError::BurstTooSmall(10)));
        assert_eq!(bandwidth(&host.ns, "vbw1").expect("read"), changed);

        clear_bandwidth(&host.ns, "vbw1").expect("clear");
        assert_eq!(
            bandwidth(&host.ns, "vbw1").expect("read"),
            BandwidthLimits::default()
        );
        assert!(secs(transfer(&host.ns, &inst.ns, INSTANCE, 9007)) < 0.4);
        assert!(set_bandwidth(&host.ns, "nosuchnic", &limits).is_err());
    }
    let after = netns_list();
    assert!(
        created.iter().all(|n| !after.contains(n)),
        "left behind: {after:?}"
    );
}
