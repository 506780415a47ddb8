//! An L4 load balancer in front of real TCP and UDP servers in backend namespaces, with the
//! health checker dropping and re-adding a backend as it dies and comes back.

mod common;

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{netns_list, require_tool, TestNs};
use vessel_net::{
    create_bridge, plug_veth, set_ipv4_forwarding, Backend, BridgeSpec, HealthCheck,
    LbHealthChecker, LbPort, Links, LoadBalancer, NetNs, Protocol, VethNic,
};

const VIP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
const CLIENT: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);

/// A TCP server in a backend namespace that answers every connection with its name.
struct Server {
    listener_fd: i32,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(ns: &NetNs, addr: Ipv4Addr, name: &'static str) -> Self {
        let listener = ns
            .run(|| TcpListener::bind((addr, 80)))
            .expect("enter")
            .expect("bind backend");
        let listener_fd = listener.as_raw_fd();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                match conn {
                    Ok(mut c) => {
                        let _ = c.write_all(name.as_bytes());
                    }
                    Err(_) => return,
                }
            }
        });
        Self {
            listener_fd,
            thread: Some(thread),
        }
    }

    /// Closes the listening socket: new connections are refused.
    fn kill(&mut self) {
        if let Some(t) = self.thread.take() {
            // SAFETY: shutdown(2) on the listener the thread still owns; it makes the
            // blocked accept fail, the thread returns and drops (closes) the socket.
            unsafe { libc::shutdown(self.listener_fd, libc::SHUT_RDWR) };
            t.join().expect("server thread");
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A UDP server answering every datagram with its name; stops when its socket is shut down.
fn udp_server(ns: &NetNs, addr: Ipv4Addr, name: &'static str) -> (i32, JoinHandle<()>) {
    let sock = ns
        .run(|| UdpSocket::bind((addr, 53)))
        .expect("enter")
        .expect("bind udp");
    let fd = sock.as_raw_fd();
    let thread = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while let Ok((len, from)) = sock.recv_from(&mut buf) {
            if len == 0 {
                return;
            }
            let _ = sock.send_to(name.as_bytes(), from);
        }
    });
    (fd, thread)
}

/// Opens `n` TCP connections from the client to the VIP; counts answers per backend name.
/// A refused connection counts as "refused".
fn spread(client: &NetNs, n: usize) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        let conn = client
            .run(|| {
                TcpStream::connect_timeout(&SocketAddr::from((VIP, 80)), Duration::from_secs(2))
            })
            .expect("enter");
        let key = match conn {
            Ok(mut s) => {
                let mut name = String::new();
                s.read_to_string(&mut name).expect("read");
                name
            }
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => "refused".into(),
            Err(e) => format!("error: {e}"),
        };
        *seen.entry(key).or_insert(0) += 1;
    }
    seen
}

/// Sends one datagram from each of `n` fresh sockets (fresh flows) to VIP:53.
fn udp_spread(client: &NetNs, n: usize) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        let sock = client
            .run(|| UdpSocket::bind((CLIENT, 0)))
            .expect("enter")
            .expect("bind");
        sock.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        sock.send_to(b"?", (VIP, 53)).expect("send");
        let mut buf = [0u8; 64];
        let key = match sock.recv_from(&mut buf) {
            Ok((len, _)) => String::from_utf8_lossy(&buf[..len]).into_owned(),
            Err(e) => format!("error: {e}"),
        };
        *seen.entry(key).or_insert(0) += 1;
    }
    seen
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn balancer_spreads_flows_and_follows_backend_health() {
    require_tool("nft", "nftables");
    let created;
    {
        let host = TestNs::new("lb-host");
        let client = TestNs::new("lb-client");
        let be = [
            TestNs::new("lb-be1"),
            TestNs::new("lb-be2"),
            TestNs::new("lb-be3"),
        ];
        created = [&host, &client, &be[0], &be[1], &be[2]].map(|n| n.name.clone());
        let mut links = Links::open(&host.ns).expect("netlink");
        links
            .create_veth("uplink", "eth0", Some(&client.ns))
            .expect("uplink");
        links.add_address("uplink", VIP, 24).expect("vip");
        links.set_up("uplink", true).expect("up");
        let mut far = Links::open(&client.ns).expect("netlink client");
        far.add_address("eth0", CLIENT, 24).expect("client addr");
        far.set_up("eth0", true).expect("up");
        far.set_up("lo", true).expect("lo");
        create_bridge(
            &mut links,
            &BridgeSpec {
                name: "vbr-lb".into(),
                subnet: "10.100.0.0/24".parse().expect("subnet"),
                mtu: None,
            },
        )
        .expect("bridge");
        let names = ["be1", "be2", "be3"];
        let addrs: Vec<Ipv4Addr> = (2..5).map(|i| Ipv4Addr::new(10, 100, 0, i)).collect();
        for i in 0..3 {
            plug_veth(
                &mut links,
                &VethNic {
                    host_name: format!("vlb{i}"),
                    bridge: "vbr-lb".into(),
                    instance_ns: &be[i].ns,
                    instance_name: "eth0".into(),
                    mac: None,
                    address: Some((addrs[i], 24)),
                    gateway: Some(Ipv4Addr::new(10, 100, 0, 1)),
                    mtu: None,
                },
            )
            .expect("plug backend");
        }
        set_ipv4_forwarding(&host.ns, true).expect("forwarding");
        let mut servers: Vec<Server> = (0..3)
            .map(|i| Server::start(&be[i].ns, addrs[i], names[i]))
            .collect();
        let udp_servers: Vec<_> = (0..3)
            .map(|i| udp_server(&be[i].ns, addrs[i], names[i]))
            .collect();

        let backends = |port| {
            addrs
                .iter()
                .map(|&address| Backend { address, port })
                .collect::<Vec<_>>()
        };
        let lb = LoadBalancer {
            name: "web".into(),
            address: VIP,
            ports: vec![
                LbPort {
                    protocol: Protocol::Tcp,
                    listen_port: 80,
                    backends: backends(80),
                },
                LbPort {
                    protocol: Protocol::Udp,
                    listen_port: 53,
                    backends: backends(53),
                },
            ],
        };
        let check = HealthCheck {
            interval: Duration::from_millis(200),
            timeout: Duration::from_millis(150),
            rise: 2,
            fall: 2,
            port: Some(80),
        };
        let host_ns = Arc::new(NetNs::named(&host.name).expect("open host ns"));
        let checker = LbHealthChecker::start(host_ns, lb.clone(), check).expect("start");
        assert!(checker.health().values().all(|h| h.up));

        // Round robin: nine connections, three per backend; UDP flows spread too.
        let seen = spread(&client.ns, 9);
        assert_eq!(
            seen,
            names
                .iter()
                .map(|n| (n.to_string(), 3))
                .collect::<BTreeMap<_, _>>()
        );
        let udp = udp_spread(&client.ns, 6);
        assert_eq!(
            udp.keys().cloned().collect::<Vec<_>>(),
            names.map(String::from),
            "{udp:?}"
        );

        // be2 dies: it drops out and gets no more flows, and nothing is lost.
        servers[1].kill();
        let be2 = Backend {
            address: addrs[1],
            port: 80,
        };
        wait_until("be2 is marked down", || !checker.health()[&be2].up);
        let table =
            String::from_utf8_lossy(&host.exec(&["nft", "list", "table", "ip", "vlb-web"]).stdout)
                .to_string();
        assert!(
            table.contains("numgen inc mod 2") && !table.contains("10.100.0.3 . 80"),
            "{table}"
        );
        let seen = spread(&client.ns, 6);
        assert_eq!(
            seen,
            [("be1".to_string(), 3), ("be3".to_string(), 3)]
                .into_iter()
                .collect(),
        );

        // Everything dies: clients are refused at once, not sent to a dead backend.
        servers[0].kill();
        servers[2].kill();
        wait_until("all backends are down", || {
            checker.health().values().all(|h| !h.up)
        });
        let started = Instant::now();
        assert_eq!(
            spread(&client.ns, 3),
            [("refused".to_string(), 3)].into_iter().collect()
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "refusals are immediate (no connect waits for a timeout)"
        );

        // be2 comes back after `rise` good probes and takes all flows.
        servers[1] = Server::start(&be[1].ns, addrs[1], "be2");
        wait_until("be2 is back", || checker.health()[&be2].up);
        assert_eq!(
            spread(&client.ns, 4),
            [("be2".to_string(), 4)].into_iter().collect()
        );
        assert_eq!(checker.last_error(), None);

        // Changing the backends applies at once; removing the balancer removes its table.
        let mut smaller = lb.clone();
        smaller.ports.truncate(1);
        smaller.ports[0].backends.truncate(2);
        checker.update(smaller).expect("update");
        assert_eq!(checker.health().len(), 2);
        checker.stop();
        LoadBalancer::remove(&host.ns, "web").expect("remove");
        assert!(!host
            .exec(&["nft", "list", "table", "ip", "vlb-web"])
            .status
            .success());
        drop(servers);
        for (fd, thread) in udp_servers {
            // SAFETY: shutdown(2) on a socket its thread still owns; recv_from returns.
            unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
            thread.join().expect("udp server");
        }
    }
    let after = netns_list();
    assert!(
        created.iter().all(|n| !after.contains(n)),
        "left behind: {after:?}"
    );
}
