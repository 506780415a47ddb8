//! Connections to etcd: one that breaks while a request is on it (a proxy or a peer goes
//! away) has the call tried again on a new connection instead of failing with "transport
//! error"; an idle one is not closed by etcd for being pinged too often; a guarded write
//! repeated after its first attempt applied (its answer lost) finds its own change. Against
//! a real etcd on loopback.

use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdListener};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use vessel_cluster::{Asks, Capacity, Cluster, Expect, MemberRecord, NetworkSpec, ReplicaState};

/// Two free loopback ports (bound together, so they differ, then released for etcd).
fn free_ports() -> (u16, u16) {
    let bind = || StdListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let (a, b) = (bind(), bind());
    let port = |l: &StdListener| l.local_addr().unwrap().port();
    (port(&a), port(&b))
}

/// One etcd member on loopback, killed and its data removed on drop.
struct Etcd {
    child: Child,
    dir: PathBuf,
    client: SocketAddr,
}

impl Etcd {
    fn start() -> Etcd {
        assert!(
            std::path::Path::new("/usr/bin/etcd").exists(),
            "etcd is missing: apt-get install etcd-server"
        );
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let dir = PathBuf::from(format!("/tmp/vcl-etcd-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (c, p) = free_ports();
        let client = format!("http://127.0.0.1:{c}");
        let peer = format!("http://127.0.0.1:{p}");
        let log = std::fs::File::create(dir.join("etcd.log")).unwrap();
        let mut child = Command::new("/usr/bin/etcd");
        child
            .args(["--name", "solo"])
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("solo={peer}")])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        // Killed with the test thread that started it, also when the test process is
        // killed (no drop runs then).
        // SAFETY: the closure only calls prctl and reads errno, both async-signal-safe, as
        // code between fork and exec must be.
        unsafe {
            child.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = child.spawn().expect("start etcd");
        let etcd = Etcd {
            child,
            dir,
            client: SocketAddr::from((Ipv4Addr::LOCALHOST, c)),
        };
        let until = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(etcd.client).is_err() {
            assert!(
                Instant::now() < until,
                "etcd did not listen on {}",
                etcd.client
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        etcd
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A TCP proxy to `to` that, while `cuts` is above zero, closes a connection (both ways)
/// instead of passing on an HTTP/2 HEADERS frame from the client: a request that was
/// sent but never reached etcd. `holds` counts requests down: the one that takes it to
/// zero is passed on, but etcd's bytes on its connection are held back for longer than the
/// client's request timeout: a request applied whose answer is lost. Its address.
async fn proxy(to: SocketAddr, cuts: Arc<AtomicUsize>, holds: Arc<AtomicUsize>) -> SocketAddr {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let at = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((from_client, _)) = l.accept().await {
            let (cuts, holds) = (cuts.clone(), holds.clone());
            tokio::spawn(async move {
                let Ok(to_etcd) = TcpStream::connect(to).await else {
                    return;
                };
                let (mut cr, mut cw) = from_client.into_split();
                let (mut er, mut ew) = to_etcd.into_split();
                let held = Arc::new(std::sync::Mutex::new(None::<tokio::time::Instant>));
                let until = held.clone();
                let back = tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n @ 1..) = er.read(&mut buf).await {
                        let wait = *until.lock().unwrap();
                        if let Some(t) = wait {
                            tokio::time::sleep_until(t).await;
                        }
                        if cw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
                // The client's bytes: the 24-byte preface, then frames of a 9-byte head
                // (24-bit length, type, flags, stream) and their payload.
                let mut seen: Vec<u8> = Vec::new();
                let mut at_frame = 24usize;
                let mut buf = vec![0u8; 64 * 1024];
                let take = |c: &AtomicUsize| {
                    c.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| c.checked_sub(1))
                        .is_ok()
                };
                loop {
                    let n = match cr.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    seen.extend_from_slice(&buf[..n]);
                    let mut request = false;
                    while seen.len() >= at_frame + 9 {
                        let h = &seen[at_frame..at_frame + 9];
                        let len = u32::from_be_bytes([0, h[0], h[1], h[2]]) as usize;
                        request |= h[3] == 0x1;
                        at_frame += 9 + len;
                    }
                    if request && take(&cuts) {
                        break;
                    }
                    if request && take(&holds) && holds.load(Ordering::SeqCst) == 0 {
                        let t = tokio::time::Instant::now() + Duration::from_millis(3500);
                        *held.lock().unwrap() = Some(t);
                    }
                    if ew.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                back.abort();
            });
        }
    });
    at
}

/// The local ports of this process's TCP connections to `to` that are established.
fn connections_to(to: SocketAddr) -> Vec<u16> {
    let mut sockets = std::collections::HashSet::new();
    for fd in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        if let Ok(l) = std::fs::read_link(fd.path()) {
            let l = l.to_string_lossy();
            if let Some(inode) = l.strip_prefix("socket:[").and_then(|i| i.strip_suffix(']')) {
                sockets.insert(inode.to_string());
            }
        }
    }
    let remote = format!("0100007F:{:04X}", to.port());
    let tcp = std::fs::read_to_string("/proc/net/tcp").unwrap();
    // sl local remote state ... inode (the tenth field); 01 is ESTABLISHED.
    tcp.lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f[2] == remote && f[3] == "01" && sockets.contains(f[9]))
        .map(|f| u16::from_str_radix(f[1].split(':').nth(1).unwrap(), 16).unwrap())
        .collect()
}

fn record(name: &str) -> MemberRecord {
    MemberRecord {
        name: name.into(),
        address: "127.0.0.1:8443".into(),
        fingerprint: "00".repeat(32),
        roles: Vec::new(),
        capacity: Capacity {
            cpus: 2,
            memory: 1 << 30,
        },
        joined_at: "2026-01-01T00:00:00Z".into(),
        evacuated: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_whose_connection_breaks_mid_request_is_answered() {
    let etcd = Etcd::start();
    let cuts = Arc::new(AtomicUsize::new(0));
    let proxy = proxy(etcd.client, cuts.clone(), Arc::default()).await;
    let cluster = Cluster::connect(&[format!("http://{proxy}")])
        .await
        .expect("connect through the proxy");

    // A read.
    cuts.store(1, Ordering::SeqCst);
    assert_eq!(cluster.id().await.expect("a read over a cut"), None);
    assert_eq!(cuts.load(Ordering::SeqCst), 0, "the proxy cut no request");

    // A put (a member's record rewritten), twice over, then read back.
    cuts.store(2, Ordering::SeqCst);
    cluster
        .update(&record("m0"))
        .await
        .expect("a put over two cuts");
    assert_eq!(
        cuts.load(Ordering::SeqCst),
        0,
        "the proxy cut fewer requests"
    );
    let got = cluster.record("m0").await.expect("read the record back");
    assert_eq!(got, Some(record("m0")));

    // A transaction is not tried again: etcd may have applied it before the connection
    // went, and a repeat would find its compare failed by the first attempt. The error
    // says what happened; here the proxy cut before etcd saw it, so nothing changed and
    // the caller's own retry goes through.
    cuts.store(1, Ordering::SeqCst);
    let err = cluster
        .init("c1", "2026-01-01T00:00:00Z", &record("m0"))
        .await
        .expect_err("a transaction over a cut");
    assert!(err.to_string().contains("transport error"), "{err}");
    assert_eq!(cluster.id().await.expect("a read"), None);
    cluster
        .init("c1", "2026-01-01T00:00:00Z", &record("m0"))
        .await
        .expect("the transaction again");
    assert_eq!(cluster.id().await.expect("a read").as_deref(), Some("c1"));
}

/// etcd (gRPC's keep-alive policy, `--grpc-keepalive-min-time`, 5 s by default) closes a
/// connection pinged more often than that with no request on it; the client pinged idle
/// connections twice a second, so every idle connection was closed within two seconds and
/// a request could be on it as it went.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_stays_open() {
    let etcd = Etcd::start();
    let cluster = Cluster::connect(&[format!("http://{}", etcd.client)])
        .await
        .expect("connect");
    let before = connections_to(etcd.client);
    assert_eq!(before.len(), 1, "one connection to etcd: {before:?}");
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        connections_to(etcd.client),
        before,
        "the idle connection was closed"
    );
    assert_eq!(cluster.id().await.expect("a read"), None);
    assert_eq!(connections_to(etcd.client), before, "a new connection");
}

/// A guarded write whose answer was lost (a request timeout, a broken connection) may have
/// been applied; its repeat (the call's own retry, or the caller's) must then find its own
/// change rather than report a conflict. Before, a repeated take-over answered "taken by
/// another", and the member that had taken the instance over did not make it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guarded_write_repeated_after_it_applied_finds_its_own_change() {
    let etcd = Etcd::start();
    let holds = Arc::new(AtomicUsize::new(0));
    let proxy = proxy(etcd.client, Arc::default(), holds.clone()).await;
    let c = Cluster::connect(&[format!("http://{proxy}")])
        .await
        .expect("connect");
    let now = "2026-01-01T00:00:00Z";

    // Applied, its answer held back past the request timeout: the call's own retry finds
    // its compare failed by the first attempt.
    holds.store(1, Ordering::SeqCst);
    c.init("c1", now, &record("m0"))
        .await
        .expect("init whose answer was lost");
    assert_eq!(holds.load(Ordering::SeqCst), 0, "the proxy held no answer");
    c.init("c1", now, &record("m0"))
        .await
        .expect("init repeated");
    let err = c
        .init("c2", now, &record("m0"))
        .await
        .expect_err("another init");
    assert!(
        err.to_string()
            .contains("already holds a Vessel cluster (id c1)"),
        "{err}"
    );

    c.issue_token("t1", "secret", "m1", Duration::from_secs(60))
        .await
        .expect("token");
    c.redeem("t1", "secret", &record("m1"))
        .await
        .expect("redeem");
    c.redeem("t1", "secret", &record("m1"))
        .await
        .expect("redeem repeated");
    let other = MemberRecord {
        fingerprint: "11".repeat(32),
        ..record("m1")
    };
    let err = c.redeem("t1", "secret", &other).await.expect_err("reused");
    assert!(err.to_string().contains("join token refused"), "{err}");

    // An instance on m1, which has no heartbeat (offline): m2 takes it over.
    c.claim_instance("p", "web", "m1", Asks::default())
        .await
        .expect("claim");
    let loc = c
        .locate_instance("p", "web")
        .await
        .unwrap()
        .expect("placed");
    let token = c.take_over(&loc, "m2").await.expect("take over");
    assert!(token.is_some(), "m2 takes it over");
    assert_eq!(
        c.take_over(&loc, "m2").await.expect("take over repeated"),
        token,
        "the repeat finds its own take-over, with the same fencing token"
    );
    assert_eq!(
        c.take_over(&loc, "m3").await.expect("another take over"),
        None,
        "another member finds it taken"
    );

    // Handed over from m2 to m3, twice; a hand-over from m2 elsewhere is refused then.
    c.hand_over("p", "web", "m2", "m3", None)
        .await
        .expect("hand over");
    c.hand_over("p", "web", "m2", "m3", None)
        .await
        .expect("hand over repeated");
    let err = c
        .hand_over("p", "web", "m2", "m4", None)
        .await
        .expect_err("from a member that holds it no more");
    assert!(err.to_string().contains("held by member m3"), "{err}");
    let at = c
        .locate_instance("p", "web")
        .await
        .unwrap()
        .expect("placed");
    assert_eq!(at.member, "m3");

    // A far copy of m1's pool kept by m2, adopted by m2 (m1 lost), twice; not by m3.
    let copy = ReplicaState {
        primary: "m1".into(),
        member: "m2".into(),
        outdated: false,
        id: "x1".into(),
    };
    c.set_replica("m1.data", &copy).await.expect("record");
    let before = c.adopt_replica("m1.data", "m2").await.expect("adopt");
    assert_eq!(before, copy);
    let again = c
        .adopt_replica("m1.data", "m2")
        .await
        .expect("adopt repeated");
    assert_eq!(
        again, copy,
        "the repeat answers with the state before its adoption"
    );
    let err = c
        .adopt_replica("m1.data", "m3")
        .await
        .expect_err("not its keeper");
    assert!(err.to_string().contains("kept by m1"), "{err}");
    // Recorded twice with the same state; another state under the name refused.
    c.set_replica("m1.data2", &copy).await.expect("record");
    c.set_replica("m1.data2", &copy)
        .await
        .expect("record repeated");
    let other = ReplicaState {
        id: "x2".into(),
        ..copy.clone()
    };
    let err = c.set_replica("m1.data2", &other).await.expect_err("taken");
    assert!(err.to_string().contains("recorded already"), "{err}");

    // A network made over a lost answer (its third request, after two reads): recorded
    // once, as the call answers.
    let spec = NetworkSpec {
        name: "ovl".into(),
        subnet: "10.99.0.0/24".into(),
        vni: 0,
        description: String::new(),
        created_at: now.into(),
    };
    holds.store(3, Ordering::SeqCst);
    let made = c
        .create_network(spec.clone())
        .await
        .expect("network whose answer was lost");
    assert_eq!(holds.load(Ordering::SeqCst), 0, "the proxy held no answer");
    assert_eq!(c.networks().await.unwrap(), vec![made]);
    let err = c.create_network(spec).await.expect_err("made again");
    assert!(err.to_string().contains("exists already"), "{err}");

    // A setting written over a lost answer (its second request, after the read): no
    // spurious "try again".
    holds.store(2, Ordering::SeqCst);
    c.set_policy("binpack")
        .await
        .expect("a setting whose answer was lost");
    assert_eq!(holds.load(Ordering::SeqCst), 0, "the proxy held no answer");
    assert_eq!(c.policy().await.unwrap(), "binpack");

    // An address block claimed over a lost answer (its second request, after the read):
    // the block it claimed, not a second one; another member's claim takes the next.
    assert!(c.blocks("ovl").await.unwrap().is_empty());
    holds.store(2, Ordering::SeqCst);
    let block = c
        .claim_block("ovl", "m1", 16)
        .await
        .expect("a claim whose answer was lost");
    assert_eq!(holds.load(Ordering::SeqCst), 0, "the proxy held no answer");
    assert_eq!(block, 0);
    assert_eq!(c.claim_block("ovl", "m2", 16).await.unwrap(), 1);
    let blocks: Vec<(u32, String)> = c.blocks("ovl").await.unwrap().into_iter().collect();
    assert_eq!(blocks, vec![(0, "m1".into()), (1, "m2".into())]);

    // Shared objects: a create and a rewrite repeated, a delete repeated.
    let r1 = c
        .put_shared("project", "p1", "{}", Expect::Absent)
        .await
        .unwrap();
    assert!(r1.is_some());
    assert_eq!(
        c.put_shared("project", "p1", "{}", Expect::Absent)
            .await
            .unwrap(),
        r1,
        "a create repeated finds its own object"
    );
    let r1 = r1.unwrap();
    let r2 = c
        .put_shared("project", "p1", r#"{"a":1}"#, Expect::Revision(r1))
        .await
        .unwrap();
    assert!(r2.is_some());
    assert_eq!(
        c.put_shared("project", "p1", r#"{"a":1}"#, Expect::Revision(r1))
            .await
            .unwrap(),
        r2
    );
    assert_eq!(
        c.put_shared("project", "p1", r#"{"a":2}"#, Expect::Revision(r1))
            .await
            .unwrap(),
        None,
        "another change from the same revision is refused"
    );
    let r2 = r2.unwrap();
    let d = c
        .delete_shared("project", "p1", Expect::Revision(r2))
        .await
        .unwrap();
    assert!(d.is_some());
    assert!(c
        .delete_shared("project", "p1", Expect::Revision(r2))
        .await
        .unwrap()
        .is_some());
}

/// A removed member's marks of stale copies (instances failed over from it and deleted
/// since) stay for the same server joining again under its name, and go when another
/// server takes the name: they would have it delete instances of its own that happen to
/// bear those names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_members_stale_marks_go_to_its_own_server_only() {
    let etcd = Etcd::start();
    let c = Cluster::connect(&[format!("http://{}", etcd.client)])
        .await
        .expect("connect");
    let now = "2026-01-01T00:00:00Z";
    c.init("c1", now, &record("m0")).await.expect("init");
    let join = |id: &'static str, rec: MemberRecord| {
        let c = &c;
        async move {
            c.issue_token(id, "secret", "m1", Duration::from_secs(60))
                .await
                .expect("token");
            c.redeem(id, "secret", &rec).await.expect("redeem");
        }
    };
    join("t1", record("m1")).await;
    // web, failed over from m1 (offline) to m2, then deleted: m1's copy is stale.
    c.claim_instance("p", "web", "m1", Asks::default())
        .await
        .expect("claim");
    let loc = c
        .locate_instance("p", "web")
        .await
        .unwrap()
        .expect("placed");
    assert!(c.take_over(&loc, "m2").await.expect("take over").is_some());
    c.release_instance("p", "web", "m2").await.expect("delete");
    let marks = || async { c.stale_copies("m1").await.expect("marks").len() };
    assert_eq!(marks().await, 1);
    // Removed, and back as the same server: the mark stays.
    c.remove("m1", false).await.expect("remove");
    assert_eq!(marks().await, 1);
    join("t2", record("m1")).await;
    assert_eq!(marks().await, 1, "the same server keeps its marks");
    // Removed again, and the name taken by another server: the mark goes.
    c.remove("m1", false).await.expect("remove");
    let other = MemberRecord {
        fingerprint: "22".repeat(32),
        ..record("m1")
    };
    join("t3", other).await;
    assert_eq!(marks().await, 0, "another server took the marks over");
    let made = c.claim_instance("p", "web", "m1", Asks::default()).await;
    assert!(made.is_ok(), "the new m1 may make its own web: {made:?}");
}
