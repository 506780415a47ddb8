//! What a new user meets in the first hour, through the CLI against a real daemon: everyday
//! commands behaving as Docker and Incus users expect.

mod common;

use std::io::Read;
use std::time::{Duration, Instant};

use common::Daemon;

/// `logs --tail N` prints the last N lines; `logs -f` keeps printing new output and ends by
/// itself when the instance stops.
#[test]
fn logs_tail_and_follow() {
    let d = Daemon::start();
    d.busybox();
    d.ok(&[
        "launch",
        "busybox",
        "ticker",
        "--",
        "sh",
        "-c",
        "i=0; while :; do echo tick $i; i=$((i+1)); sleep 0.2; done",
    ]);
    d.wait_for("three ticks", Duration::from_secs(30), || {
        d.ok(&["logs", "ticker"]).contains("tick 3")
    });
    let tail = d.ok(&["logs", "ticker", "--tail", "2"]);
    let lines: Vec<&str> = tail.lines().collect();
    assert_eq!(lines.len(), 2, "{tail:?}");
    assert!(lines.iter().all(|l| l.starts_with("tick ")), "{tail:?}");
    assert!(d
        .fails(&["logs", "ticker", "--tail", "x"])
        .contains("invalid value"));

    let mut follow = d.spawn_vessel(&["logs", "-f", "-n", "1", "ticker"]);
    let mut out = follow.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&seen).into_owned()
    });
    // Lines written after the command started arrive while it runs.
    let before = last_tick(&d.ok(&["logs", "ticker", "--tail", "1"]));
    std::thread::sleep(Duration::from_secs(2));
    d.ok(&["stop", "ticker", "--force"]);
    let (status, hung) = {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(st)) = follow.try_wait() {
                break (Some(st), false);
            }
            if Instant::now() > deadline {
                let _ = follow.kill();
                break (None, true);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    assert!(!hung, "logs -f did not end when the instance stopped");
    assert!(status.unwrap().success());
    let followed = reader.join().unwrap();
    let last = last_tick(&followed);
    assert!(
        last >= before + 5,
        "followed output stopped early (before {before}, last {last}): {followed:?}"
    );
}

/// The number of the last "tick N" line in `text`.
fn last_tick(text: &str) -> u64 {
    text.lines()
        .rev()
        .find_map(|l| l.strip_prefix("tick ")?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no tick in {text:?}"))
}

/// `file push -p` makes missing directories; `-r` copies a tree (files, directories,
/// symbolic links, permission bits) in and out, on a running and a stopped instance.
#[test]
fn file_push_and_pull_trees() {
    use std::os::unix::fs::PermissionsExt;
    let d = Daemon::start();
    d.busybox();
    d.ok(&["launch", "busybox", "f1"]);
    let local = d.dir.join("www");
    std::fs::create_dir_all(local.join("css/deep")).unwrap();
    std::fs::write(local.join("index.html"), "<h1>hi</h1>\n").unwrap();
    std::fs::write(local.join("css/site.css"), "body{}\n").unwrap();
    std::fs::write(local.join("css/deep/run.sh"), "#!/bin/sh\necho ran\n").unwrap();
    std::fs::set_permissions(
        local.join("css/deep/run.sh"),
        std::fs::Permissions::from_mode(0o750),
    )
    .unwrap();
    std::os::unix::fs::symlink("index.html", local.join("home.html")).unwrap();

    // -p: /srv/a/b does not exist in busybox.
    let one = d.dir.join("one.txt");
    std::fs::write(&one, "one\n").unwrap();
    let err = d.fails(&["file", "push", one.to_str().unwrap(), "f1/srv/a/b/one.txt"]);
    assert!(err.contains("-p"), "{err}");
    d.ok(&[
        "file",
        "push",
        "-p",
        one.to_str().unwrap(),
        "f1/srv/a/b/one.txt",
    ]);
    assert_eq!(d.sh("f1", "cat /srv/a/b/one.txt").1, "one\n");

    // -r into an existing directory: the tree lands as /srv/www.
    let err = d.fails(&["file", "push", local.to_str().unwrap(), "f1/srv/"]);
    assert!(err.contains("-r"), "{err}");
    d.ok(&["file", "push", "-r", local.to_str().unwrap(), "f1/srv/"]);
    let (_, out) = d.sh(
        "f1",
        "cat /srv/www/index.html /srv/www/css/site.css; /srv/www/css/deep/run.sh; \
         readlink /srv/www/home.html; stat -c %a /srv/www/css/deep/run.sh",
    );
    assert_eq!(
        out, "<h1>hi</h1>\nbody{}\nran\nindex.html\n750\n",
        "{out:?}"
    );

    // Changed inside, pulled back out with -r (from a stopped instance too).
    d.sh(
        "f1",
        "echo changed > /srv/www/css/site.css; mkdir -p /srv/www/new",
    );
    d.ok(&["stop", "f1", "--force"]);
    let back = d.dir.join("back");
    std::fs::create_dir_all(&back).unwrap();
    let err = d.fails(&["file", "pull", "f1/srv/www", back.to_str().unwrap()]);
    assert!(err.contains("-r"), "{err}");
    d.ok(&["file", "pull", "-r", "f1/srv/www", back.to_str().unwrap()]);
    let got = back.join("www");
    assert_eq!(
        std::fs::read_to_string(got.join("index.html")).unwrap(),
        "<h1>hi</h1>\n"
    );
    assert_eq!(
        std::fs::read_to_string(got.join("css/site.css")).unwrap(),
        "changed\n"
    );
    assert!(got.join("new").is_dir());
    assert_eq!(
        std::fs::read_link(got.join("home.html")).unwrap(),
        std::path::PathBuf::from("index.html")
    );
    let mode = std::fs::metadata(got.join("css/deep/run.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o750);
    assert!(d.mounts().is_empty(), "{:?}", d.mounts());
}

/// `exec --user` takes names, looked up in the instance's own /etc/passwd and /etc/group
/// (not the host's), as well as ids.
#[test]
fn exec_as_a_user_by_name() {
    let d = Daemon::start();
    d.busybox();
    d.ok(&["launch", "busybox", "u1"]);
    d.sh(
        "u1",
        "echo 'web:x:1000:100:Web:/srv:/bin/sh' >> /etc/passwd; \
         echo 'users:x:100:' >> /etc/group; echo 'adm:x:4:web' >> /etc/group",
    );
    let id = |user: &str| d.ok(&["exec", "u1", "--user", user, "--", "id"]);
    assert!(
        id("web").starts_with("uid=1000(web) gid=100(users)"),
        "{}",
        id("web")
    );
    assert!(
        id("web:adm").starts_with("uid=1000(web) gid=4(adm)"),
        "{}",
        id("web:adm")
    );
    assert!(id("1000:4").starts_with("uid=1000(web) gid=4(adm)"));
    assert!(
        d.ok(&["exec", "u1", "-u", "0:adm", "--", "id", "-g"])
            .trim()
            == "4"
    );
    // The host has users the instance does not: they do not resolve.
    let err = d.fails(&["exec", "u1", "--user", "daemon", "--", "id"]);
    assert!(err.contains("has no user \"daemon\""), "{err}");
    let err = d.fails(&["exec", "u1", "--user", "web:nosuchgroup", "--", "id"]);
    assert!(err.contains("no group"), "{err}");
    // A hostile /etc/passwd (a link to a device) is refused, not read.
    d.sh("u1", "rm /etc/passwd; ln -s /dev/zero /etc/passwd");
    let err = d.fails(&["exec", "u1", "--user", "web", "--", "id"]);
    assert!(err.contains("passwd"), "{err}");
}

/// No silent surprises in storage: a dir pool refuses a size it cannot hold a filesystem
/// volume to, and says what to use instead; `pool repair` says what it did; the build of a
/// Debian image is called what it is.
#[test]
fn storage_and_images_say_what_they_do() {
    let d = Daemon::start();
    d.ok(&["storage", "pool", "create", "local", "dir"]);
    let err = d.fails(&[
        "storage", "volume", "create", "local", "data", "--size", "1GiB",
    ]);
    assert!(err.contains("btrfs"), "{err}");
    d.ok(&["storage", "volume", "create", "local", "data"]);
    let err = d.fails(&["storage", "volume", "resize", "local", "data", "2GiB"]);
    assert!(err.contains("btrfs"), "{err}");
    // A block volume on a dir pool is a file of that size: its size holds.
    d.ok(&[
        "storage", "volume", "create", "local", "blk", "--type", "block", "--size", "1MiB",
    ]);
    // The operation of a Debian build names Debian (it said "busybox").
    let (code, body) = common::http(
        &d.socket,
        "POST",
        "/1.0/images",
        Some(r#"{"source":"debian","release":"bookworm"}"#),
    );
    assert_eq!(code, 202, "{body}");
    let op: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        op["description"], "Building image \"debian/bookworm\"",
        "{op}"
    );
    let id = op["id"].as_str().unwrap();
    let _ = common::http(&d.socket, "DELETE", &format!("/1.0/operations/{id}"), None);
    // A container has no screen: `console --type vga` says so.
    d.busybox();
    d.ok(&["create", "busybox", "nodisplay"]);
    let err = d.fails(&["console", "nodisplay", "--type", "vga"]);
    assert!(err.contains("no display"), "{err}");
    // `vessel info` says how VMs would run, even before any did.
    let info = d.ok(&["info"]);
    assert!(info.contains("VM accelerator"), "{info}");
}

/// A command that does not exist in the instance exits 127, one that is not executable 126,
/// each with a plain message, as Docker does.
#[test]
fn exec_of_a_missing_or_unrunnable_command_says_so() {
    let d = Daemon::start();
    d.busybox();
    d.ok(&["launch", "busybox", "x1"]);
    let out = d.vessel(&["exec", "x1", "-T", "--", "/no/such/program"]);
    assert_eq!(out.status.code(), Some(127));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no such file or directory"), "{err}");
    d.sh(
        "x1",
        "echo 'echo hi' > /root/script; chmod 644 /root/script",
    );
    let out = d.vessel(&["exec", "x1", "-T", "--", "/root/script"]);
    assert_eq!(out.status.code(), Some(126));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("permission denied"), "{err}");
}
