//! Load balancers and forwards on a cluster network (a real 3-member etcd, three daemons in
//! their own network namespaces): a balancer on m0 spreads over web servers on all three
//! members, a forward on m1 reaches an instance on m0, clients connect from m2's namespace to
//! m0's and m1's addresses, and an instance on m1 reaches the balancer on m0 too. A backend
//! moved to another member is followed there, a stopped one is taken out by the health
//! check and back once it runs again.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::time::Duration;

use common::cluster::{address_on, json, members, wait};
use common::{in_netns, Daemon, Sandbox};

/// The body of `GET /` from `addr` (IP:PORT), connecting from namespace `ns`; `None` when
/// refused or unanswered.
fn get(ns: &str, addr: &str) -> Option<String> {
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    in_netns(ns, move || {
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        s.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        out.split("\r\n\r\n").nth(1).map(|b| b.trim().to_string())
    })
}

/// Who answers `n` requests to `addr` from `ns` (an unanswered one as `-`).
fn answers(ns: &str, addr: &str, n: usize) -> BTreeSet<String> {
    (0..n)
        .map(|_| get(ns, addr).unwrap_or_else(|| "-".into()))
        .collect()
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// A web server on `member` answering its own name on port 8080, and the address a
/// client comes from at `/cgi-bin/ip`.
fn web(d: &Daemon, name: &str, member: &str) {
    d.ok(&[
        "launch",
        "busybox",
        name,
        "--network",
        "cn",
        "--target",
        member,
        "--",
        "sh",
        "-c",
        &format!(
            "mkdir -p /www/cgi-bin && echo {name} > /www/index.html && \
             printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\necho $REMOTE_ADDR\\n' \
               > /www/cgi-bin/ip && chmod +x /www/cgi-bin/ip && exec httpd -f -p 8080 -h /www"
        ),
    ]);
}

#[test]
fn balancers_and_forwards_on_a_cluster_network_reach_and_follow_instances_on_every_member() {
    let (sb, _etcd, d) = members(3);
    for di in &d {
        di.busybox();
    }
    d[0].ok(&[
        "network",
        "create",
        "cn",
        "--subnet",
        "10.78.0.0/24",
        "--cluster",
    ]);
    for di in &d {
        wait("cn on every member", Duration::from_secs(15), || {
            di.vessel(&["network", "info", "cn"]).status.success()
        });
    }
    web(&d[0], "w0", "m0");
    web(&d[1], "w1", "m1");
    web(&d[2], "w2", "m2");
    let (host0, host1) = (Sandbox::host_addr(0), Sandbox::host_addr(1));
    let client = sb.hosts[2].clone();

    // A balancer on m0 over all three: the others' NICs are known there within a pass.
    let lb = [
        "network",
        "lb",
        "add",
        "cn",
        "web",
        "--address",
        &host0,
        "--port",
        "tcp:80:8080",
        "--backend",
        "w0",
        "--backend",
        "w1",
        "--backend",
        "w2",
    ];
    wait("the balancer made on m0", Duration::from_secs(15), || {
        d[0].vessel(&lb).status.success()
    });
    let vip = format!("{host0}:80");
    wait("every backend answers", Duration::from_secs(30), || {
        answers(&client, &vip, 9) == names(&["w0", "w1", "w2"])
    });
    let info = json(&d[0].ok(&["network", "info", "cn", "--format", "json"]));
    let status = &info["load_balancers"][0]["status"];
    assert_eq!(
        status
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| b["health"] == "up")
            .count(),
        3,
        "{info}"
    );
    for b in status.as_array().unwrap() {
        let name = b["instance"].as_str().unwrap();
        let member = &d[name[1..].parse::<usize>().unwrap()];
        assert_eq!(
            b["address"].as_str().unwrap(),
            address_on(member, name, "cn"),
            "{info}"
        );
    }

    // A forward on m1 to w0 on m0 (to an instance on no member: refused).
    let e = d[1].fails(&[
        "network",
        "forward",
        "add",
        "cn",
        "--port",
        "8081",
        "--to",
        "nope:8080",
    ]);
    assert!(e.contains("has no NIC"), "{e}");
    d[1].ok(&[
        "network", "forward", "add", "cn", "--port", "8081", "--to", "w0:8080",
    ]);
    wait(
        "the forward on m1 reaches w0",
        Duration::from_secs(15),
        || get(&client, &format!("{host1}:8081")).as_deref() == Some("w0"),
    );
    // An instance on m1 reaches the balancer on m0.
    d[1].ok(&[
        "launch",
        "busybox",
        "c1",
        "--network",
        "cn",
        "--target",
        "m1",
        "--",
        "sleep",
        "3600",
    ]);
    let mut seen = BTreeSet::new();
    wait("c1 reaches the balancer", Duration::from_secs(30), || {
        // (busybox's wget crashes: nc speaks the HTTP.)
        let (code, out) = d[1].sh(
            "c1",
            &format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {host0} 80"),
        );
        if let Some(body) = out.lines().last().filter(|_| code == 0) {
            seen.insert(body.trim().to_string());
        }
        seen.len() >= 2 && seen.is_subset(&names(&["w0", "w1", "w2"]))
    });

    // Instances on different members talk to each other as they are: c1 reaches w0 with
    // its own address (only what a member routes to another's instances is translated).
    let (w0, c1) = (address_on(&d[0], "w0", "cn"), address_on(&d[1], "c1", "cn"));
    let (code, out) = d[1].sh(
        "c1",
        &format!("printf 'GET /cgi-bin/ip HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {w0} 8080"),
    );
    // (busybox's httpd says `[::ffff:A.B.C.D]`)
    let from = out.lines().last().unwrap_or_default().trim();
    let from = from.trim_matches(['[', ']']).trim_start_matches("::ffff:");
    assert_eq!((code, from), (0, c1.as_str()), "{out}");

    // w2 moved to m1: the balancer follows it to its new address.
    let before = address_on(&d[2], "w2", "cn");
    d[0].ok(&["move", "w2", "--target", "m1"]);
    wait("w2 on m1", Duration::from_secs(30), || {
        json(&d[0].ok(&["info", "w2", "--format", "json"]))["location"] == "m1"
    });
    let after = address_on(&d[1], "w2", "cn");
    assert_ne!(before, after, "a move the balancer need not follow");
    wait("w2 answers from m1", Duration::from_secs(30), || {
        answers(&client, &vip, 9) == names(&["w0", "w1", "w2"])
    });

    // w1 stopped: taken out by the health check (no request fails), back once started.
    d[1].ok(&["stop", "w1", "--force"]);
    wait("w1 taken out", Duration::from_secs(30), || {
        answers(&client, &vip, 6) == names(&["w0", "w2"])
    });
    d[1].ok(&["start", "w1"]);
    wait("w1 back", Duration::from_secs(30), || {
        answers(&client, &vip, 9) == names(&["w0", "w1", "w2"])
    });

    d[0].ok(&["network", "lb", "delete", "cn", "web"]);
    assert_eq!(get(&client, &vip), None, "the balancer is gone");
    d[1].ok(&["network", "forward", "delete", "cn", "--port", "8081"]);
    for (di, name) in [(&d[0], "w0"), (&d[1], "w1"), (&d[1], "w2"), (&d[1], "c1")] {
        di.ok(&["delete", name, "--force"]);
    }
    // Deleted once every member's index pass has let go of their NICs.
    wait("cn deleted", Duration::from_secs(20), || {
        d[0].vessel(&["network", "delete", "cn"]).status.success()
    });
}
