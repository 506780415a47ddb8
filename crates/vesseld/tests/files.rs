//! File push and pull, with ownership mapped and no escape through symlinks.

mod common;

use std::os::unix::fs::MetadataExt;

use common::Daemon;

#[test]
fn push_pull_round_trip_and_ownership() {
    let d = Daemon::start();
    d.busybox();
    d.ok(&["launch", "busybox", "f1"]);
    let local = d.dir.join("payload.bin");
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&local, &data).unwrap();
    d.ok(&[
        "file",
        "push",
        local.to_str().unwrap(),
        "f1/root/payload.bin",
        "--mode",
        "0640",
        "--uid",
        "1000",
        "--gid",
        "1000",
    ]);
    let (_, ls) = d.sh("f1", "stat -c '%a %u %g %s' /root/payload.bin");
    assert_eq!(ls.trim(), "640 1000 1000 200000");
    // On the host the file belongs to the instance's own range (the first isolated one).
    let host = d.root().join("instances/f1/upper/root/payload.bin");
    let md = std::fs::metadata(&host).unwrap();
    assert_eq!((md.uid(), md.gid()), (1_066_536, 1_066_536));

    let back = d.dir.join("back.bin");
    d.ok(&[
        "file",
        "pull",
        "f1/root/payload.bin",
        back.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read(&back).unwrap(), data);

    // Missing files and directories give clear errors.
    let err = d.fails(&["file", "pull", "f1/no/such/file", back.to_str().unwrap()]);
    assert!(err.contains("/no/such/file"), "{err}");
    let err = d.fails(&["file", "push", local.to_str().unwrap(), "f1/no/such/dir/x"]);
    assert!(err.contains("/no/such/dir"), "{err}");
}

#[test]
fn symlinks_cannot_escape_the_container() {
    let d = Daemon::start();
    d.busybox();
    d.ok(&["launch", "busybox", "s1"]);
    let marker = format!("/tmp/vessel-escape-{}", std::process::id());
    let _ = std::fs::remove_file(&marker);
    std::fs::write(format!("{marker}-host"), "host secret").unwrap();
    // Links inside the container that point "outside": absolute, relative, and through /proc.
    assert_eq!(
        d.sh(
            "s1",
            &format!(
                "ln -s /tmp /root/tmplink; ln -s ../../../../../../..{marker}-host /root/rel; \
                 ln -s /proc/1/root/{marker}-host /root/magic; ln -s / /root/up"
            )
        )
        .0,
        0
    );
    let local = d.dir.join("x");
    std::fs::write(&local, "pushed").unwrap();
    // A push through a directory symlink lands inside the container.
    d.ok(&[
        "file",
        "push",
        local.to_str().unwrap(),
        &format!("s1/root/up{marker}"),
    ]);
    assert!(
        !std::path::Path::new(&marker).exists(),
        "push escaped to the host"
    );
    assert_eq!(d.sh("s1", &format!("cat {marker}")).1, "pushed");
    // Pulls through links read the container's files, never the host's.
    let out = d.dir.join("out");
    assert!(
        d.vessel(&["file", "pull", "s1/root/rel", out.to_str().unwrap()])
            .status
            .code()
            != Some(0)
    );
    assert!(!out.exists() || std::fs::read_to_string(&out).unwrap() != "host secret");
    let out2 = d.dir.join("out2");
    let r = d.vessel(&["file", "pull", "s1/root/magic", out2.to_str().unwrap()]);
    assert!(!r.status.success(), "a /proc magic link was followed");
    // The link's target exists inside the container only: pulling it gives that content.
    d.sh("s1", &format!("echo inside > {marker}-host"));
    d.ok(&["file", "pull", "s1/root/rel", out.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "inside\n");
    let _ = std::fs::remove_file(format!("{marker}-host"));
}

#[test]
fn files_move_in_and_out_of_a_stopped_instance() {
    let d = Daemon::start();
    d.busybox();
    d.ok(&["create", "busybox", "st1"]);
    assert_eq!(d.info("st1")["status"], "stopped");
    let local = d.dir.join("cfg");
    std::fs::write(&local, "configured before first boot\n").unwrap();
    d.ok(&["file", "push", local.to_str().unwrap(), "st1/etc/motd"]);
    // Nothing stays mounted for a stopped instance.
    assert!(d.mounts().is_empty(), "{:?}", d.mounts());
    let back = d.dir.join("motd");
    d.ok(&["file", "pull", "st1/etc/motd", back.to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(&back).unwrap(),
        "configured before first boot\n"
    );
    d.ok(&["start", "st1"]);
    assert_eq!(
        d.sh("st1", "cat /etc/motd").1,
        "configured before first boot\n"
    );
}

/// A figure of the daemon's `/proc/PID/status`, in KiB.
fn status_kib(pid: i32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(key)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A large file is streamed as read: the daemon's peak memory does not grow with it.
#[test]
fn a_large_pull_streams_through_the_daemon() {
    let d = Daemon::start();
    d.busybox();
    d.ok(&["launch", "busybox", "big"]);
    // 384 MiB, sparse in the instance's writable layer, its last byte set.
    let (code, _) = d.sh(
        "big",
        "truncate -s 402653183 /big && printf x >> /big && stat -c %s /big",
    );
    assert_eq!(code, 0);
    let pid = d.pid();
    // Restart the peak (VmHWM) from the resident size now.
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
    let before = status_kib(pid, "VmRSS:");
    let dest = d.dir.join("big.out");
    d.ok(&["file", "pull", "big/big", dest.to_str().unwrap()]);
    let peak = status_kib(pid, "VmHWM:");
    let md = std::fs::metadata(&dest).unwrap();
    assert_eq!(md.len(), 402_653_184);
    let mut f = std::fs::File::open(&dest).unwrap();
    use std::io::{Read, Seek};
    f.seek(std::io::SeekFrom::End(-1)).unwrap();
    let mut last = [0u8; 1];
    f.read_exact(&mut last).unwrap();
    assert_eq!(&last, b"x");
    std::fs::remove_file(&dest).unwrap();
    assert!(
        peak < before + 64 * 1024,
        "the daemon's peak grew from {before} KiB to {peak} KiB while 384 MiB went through"
    );
}
