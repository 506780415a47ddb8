//! NFS clients against the daemon's export: handles of a re-created export, group root, and
//! floods of idle and half-sent connections.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::Daemon;
use crate::corpus::{self, Image};
use crate::{rpc, watch};

/// A loopback port of its own per test process and test.
fn nfs_port(offset: u16) -> u16 {
    21000 + (std::process::id() % 15000) as u16 + offset * 15000 / 4
}

/// The host directory of a volume of the `dir` pool `local`.
fn volume_dir(d: &Daemon, volume: &str) -> PathBuf {
    d.root().join("storage/local/fs").join(volume)
}

#[test]
fn nfs_handles_of_a_recreated_export_are_stale_and_group_root_is_squashed() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let d = Daemon::start();
    d.ok(&["storage", "pool", "create", "local", "dir"]);
    d.ok(&["storage", "volume", "create", "local", "vol-a"]);
    d.ok(&["storage", "volume", "create", "local", "vol-b"]);
    let (a, b) = (volume_dir(&d, "vol-a"), volume_dir(&d, "vol-b"));
    std::fs::write(a.join("f"), "volume a").expect("write");
    std::fs::write(b.join("f"), "volume b").expect("write");
    let port = nfs_port(0);
    let listen = format!("127.0.0.1:{port}");
    let addr: SocketAddr = listen.parse().expect("address");
    let create = |vol: &str| {
        d.ok(&[
            "storage",
            "export",
            "create",
            "share",
            "local",
            vol,
            "--protocol",
            "nfs",
            "--listen",
            &listen,
        ]);
    };
    create("vol-a");
    let mut c = rpc::Client::connect(addr);
    let root = rpc::mount(&mut c, "/share");
    let f = rpc::lookup(&mut c, &root, "f");
    assert_eq!(rpc::read_as(&mut c, (0, 0, &[]), &f).1, b"volume a");

    // Deleted, and created again on another volume.
    d.ok(&["storage", "export", "delete", "share"]);
    create("vol-b");
    let mut c = rpc::Client::connect(addr);
    for (what, fh) in [("root", &root), ("file", &f)] {
        assert_eq!(
            rpc::status(&c.call(rpc::NFS, 1, &rpc::fh_args(fh))),
            rpc::STALE,
            "GETATTR of the old {what}"
        );
    }
    assert_eq!(rpc::read_as(&mut c, (0, 0, &[]), &f).0, rpc::STALE);
    assert_eq!(rpc::write_as(&mut c, (0, 0, &[]), &f, b"EVIL"), rpc::STALE);
    assert_eq!(
        rpc::status(&c.call(rpc::NFS, 3, &rpc::dirop(&root, "f"))),
        rpc::STALE
    );
    assert_eq!(std::fs::read(a.join("f")).expect("a"), b"volume a");
    let new_root = rpc::mount(&mut c, "/share");
    let nf = rpc::lookup(&mut c, &new_root, "f");
    assert_eq!(rpc::read_as(&mut c, (0, 0, &[]), &nf).1, b"volume b");
    // The new handles survive a daemon restart (same key, same export).
    drop(c);
    let mut d = d;
    d.kill(libc::SIGTERM);
    d.spawn();
    let mut c = rpc::Client::connect(addr);
    assert_eq!(rpc::read_as(&mut c, (0, 0, &[]), &nf).1, b"volume b");
    // Re-created on the same volume, the same way: a new export, so the old handles go stale.
    drop(c);
    d.ok(&["storage", "export", "delete", "share"]);
    d.ok(&[
        "storage",
        "export",
        "create",
        "share",
        "local",
        "vol-b",
        "--protocol",
        "nfs",
        "--listen",
        &listen,
    ]);
    let mut c = rpc::Client::connect(addr);
    assert_eq!(rpc::read_as(&mut c, (0, 0, &[]), &nf).0, rpc::STALE);
    let new_root = rpc::mount(&mut c, "/share");

    // Group root is squashed: a root:root 0660 file is not readable as uid 1234 with gid 0.
    std::fs::write(b.join("secret"), "root:root 0660").expect("write");
    std::fs::set_permissions(b.join("secret"), std::fs::Permissions::from_mode(0o660))
        .expect("chmod");
    std::fs::set_permissions(&b, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let secret = rpc::lookup(&mut c, &new_root, "secret");
    for who in [(1234, 0, &[][..]), (1234, 5, &[0][..])] {
        assert_eq!(
            rpc::read_as(&mut c, who, &secret).0,
            rpc::ACCES,
            "read as {who:?}"
        );
        assert_eq!(
            rpc::write_as(&mut c, who, &secret, b"x"),
            rpc::ACCES,
            "write as {who:?}"
        );
    }
    let mut args = rpc::dirop(&new_root, "made");
    args.u32(0).bool(true).u32(0o664);
    for _ in 0..5 {
        args.bool(false);
    }
    assert_eq!(
        rpc::status(&c.call_as((1234, 0, &[0]), rpc::NFS, 8, &args)),
        0
    );
    let md = std::fs::metadata(b.join("made")).expect("made");
    assert_eq!(
        (md.uid(), md.gid()),
        (1234, 65534),
        "a file owned by group 0 was created"
    );
    assert_eq!(
        std::fs::read(b.join("secret")).expect("secret"),
        b"root:root 0660"
    );
}

/// Server-side sockets on `port` in the daemon's network namespace, by state (01
/// established, 08 close-wait: a descriptor kept for a connection its client closed).
fn server_sockets(pid: i32, port: u16) -> Vec<String> {
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).expect("tcp table");
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            let local = cols.get(1)?.rsplit(':').next()?;
            (u16::from_str_radix(local, 16).ok()? == port)
                .then(|| cols.get(3).map(|s| s.to_string()))?
        })
        .filter(|st| st == "01" || st == "08")
        .collect()
}

#[test]
fn nfs_floods_do_not_starve_the_daemon_and_are_reclaimed() {
    let d = Daemon::start();
    d.ok(&["storage", "pool", "create", "local", "dir"]);
    d.ok(&["storage", "volume", "create", "local", "share"]);
    std::fs::write(volume_dir(&d, "share").join("hello.txt"), "still served").expect("write");
    let port = nfs_port(1);
    let listen = format!("127.0.0.1:{port}");
    let addr: SocketAddr = listen.parse().expect("address");
    d.ok(&[
        "storage",
        "export",
        "create",
        "share",
        "local",
        "share",
        "--protocol",
        "nfs",
        "--listen",
        &listen,
    ]);
    let uri = format!("nfs://127.0.0.1/share/hello.txt?nfsport={port}&mountport={port}");
    let nfs_cat = || {
        let out = Command::new("nfs-cat")
            .arg(&uri)
            .output()
            .expect("nfs-cat: apt-get install libnfs-utils");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    assert_eq!(nfs_cat(), (true, "still served".into()));
    let pid = d.pid();
    let fds_before = watch::open_fds(pid);
    let rss_before = watch::status_bytes(pid, "VmRSS");
    let limit = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .expect("limit")
        .0;

    // Six hostile addresses, 60 connections each: idle ones, and ones holding an almost
    // complete 1 MiB record.
    let started = Instant::now();
    let mut idle = Vec::new();
    let mut held = Vec::new();
    for a in 2..8u8 {
        let src = Ipv4Addr::new(127, 0, 0, a);
        for i in 0..60 {
            let mut s = rpc::connect_from(src, addr);
            if i % 2 == 0 {
                use std::io::Write;
                let _ = s.write_all(&(((1 << 20) + 1000) as u32 | 1 << 31).to_be_bytes());
                let _ = s.write_all(&vec![0u8; 1 << 20]);
                held.push(s);
            } else {
                idle.push(s);
            }
        }
    }
    std::thread::sleep(Duration::from_secs(1));
    let fds_flood = watch::open_fds(pid);
    let rss_flood = watch::status_bytes(pid, "VmRSS");
    eprintln!(
        "flood of 360 connections: daemon fds {fds_before} -> {fds_flood} (limit {limit}), VmRSS {} -> {} MiB",
        rss_before >> 20,
        rss_flood >> 20
    );
    // At most 32 per address kept, 2 descriptors each; far below the process's limit.
    assert!(
        fds_flood <= fds_before + 6 * 32 * 2 + 16,
        "{fds_flood} descriptors"
    );
    assert!((fds_flood as u64) < limit / 2);
    // Held records are within the 32 MiB budget, plus the connections' own buffers and
    // stacks and the allocator's slack.
    assert!(
        rss_flood < rss_before + (96 << 20),
        "VmRSS grew by {} MiB",
        (rss_flood - rss_before) >> 20
    );

    // The daemon serves its API, other NFS clients and image imports meanwhile.
    d.ok(&["list"]);
    d.ok(&["storage", "export", "list"]);
    assert_eq!(nfs_cat(), (true, "still served".into()));
    let good = d.dir.join("good.tar");
    Image::of(vec![corpus::busybox_layer()]).oci_archive(&good);
    d.ok(&[
        "image",
        "import",
        good.to_str().expect("path"),
        "--alias",
        "good",
    ]);
    let mut c = rpc::Client::from(Ipv4Addr::new(127, 0, 0, 1), addr);
    let root = rpc::mount(&mut c, "/share");
    let hello = rpc::lookup(&mut c, &root, "hello.txt");
    assert_eq!(rpc::read_as(&mut c, (0, 0, &[]), &hello).1, b"still served");
    drop(c);

    // Half-sent records go after 15 s, idle connections after 60 s; their descriptors with
    // them, without waiting for another connection to be accepted.
    let closed = |s: &mut TcpStream, within: Duration| {
        use std::io::Read;
        s.set_read_timeout(Some(within)).expect("timeout");
        let mut b = [0u8; 1];
        !matches!(s.read(&mut b), Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut))
    };
    for s in &mut held {
        let left = Duration::from_secs(25)
            .saturating_sub(started.elapsed())
            .max(Duration::from_millis(10));
        assert!(
            closed(s, left),
            "a half-sent record was kept open after {:?}",
            started.elapsed()
        );
    }
    eprintln!("half-sent records closed after {:?}", started.elapsed());
    for s in &mut idle {
        let left = Duration::from_secs(80)
            .saturating_sub(started.elapsed())
            .max(Duration::from_millis(10));
        assert!(
            closed(s, left),
            "an idle connection was kept open after {:?}",
            started.elapsed()
        );
    }
    eprintln!("idle connections closed after {:?}", started.elapsed());
    let deadline = Instant::now() + Duration::from_secs(5);
    while !server_sockets(pid, port).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let left = server_sockets(pid, port);
    assert!(left.is_empty(), "server sockets still open: {left:?}");
    let fds_after = watch::open_fds(pid);
    eprintln!("daemon fds after: {fds_after}");
    assert!(
        fds_after <= fds_before + 4,
        "{fds_before} -> {fds_after} descriptors"
    );
    assert_eq!(nfs_cat(), (true, "still served".into()));
}
