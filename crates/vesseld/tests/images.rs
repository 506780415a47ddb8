//! Images through the daemon: publish, aliases, layers shared and collected.

mod common;

use common::Daemon;

#[test]
fn publish_a_stopped_instance_and_launch_from_it() {
    let d = Daemon::start();
    d.busybox();
    d.ok(&["launch", "busybox", "base"]);
    d.sh(
        "base",
        "echo made-in-base > /root/note; rm /etc/os-release; mkdir -p /srv/www",
    );
    // Publishing needs a stopped instance.
    let err = d.fails(&["publish", "base", "--alias", "mine"]);
    assert!(err.contains("stop it first"), "{err}");
    d.ok(&["stop", "base", "--force"]);
    d.ok(&["publish", "base", "--alias", "mine"]);

    let img: serde_json::Value =
        serde_json::from_str(&d.ok(&["image", "info", "mine", "--format", "json"])).unwrap();
    assert_eq!(img["layers"].as_array().unwrap().len(), 2, "{img}");
    assert_eq!(img["source"], "publish base");

    d.ok(&["launch", "mine", "child"]);
    assert_eq!(d.sh("child", "cat /root/note").1.trim(), "made-in-base");
    // The deletion in the published layer hides the file of the layer below.
    assert_ne!(d.sh("child", "test -e /etc/os-release").0, 0);
    assert_eq!(d.sh("child", "test -d /srv/www").0, 0);
    // Ownership inside is the container's own, not the host's shifted ids.
    assert_eq!(d.sh("child", "stat -c %u:%g /root/note").1.trim(), "0:0");

    // The base image can go once no instance uses it; its layer stays for "mine".
    d.ok(&["delete", "--force", "base"]);
    d.ok(&["image", "delete", "busybox"]);
    d.ok(&["restart", "child", "--force"]);
    assert_eq!(d.sh("child", "cat /root/note").1.trim(), "made-in-base");
    // Deleting the last user of the layers removes them.
    d.ok(&["delete", "--force", "child"]);
    d.ok(&["image", "delete", "mine"]);
    let layers = std::fs::read_dir(d.root().join("images/layers"))
        .map(|rd| rd.count())
        .unwrap_or(0);
    assert_eq!(layers, 0, "unused layers were left behind");
}

#[test]
fn aliases_move_and_go() {
    let d = Daemon::start();
    d.busybox();
    d.ok(&["image", "alias", "add", "busybox", "tiny"]);
    let img: serde_json::Value =
        serde_json::from_str(&d.ok(&["image", "info", "tiny", "--format", "json"])).unwrap();
    assert_eq!(img["aliases"], serde_json::json!(["busybox", "tiny"]));
    d.ok(&["image", "alias", "delete", "tiny"]);
    assert!(d.fails(&["image", "info", "tiny"]).contains("not found"));
    let err = d.fails(&["image", "alias", "delete", "tiny"]);
    assert!(err.contains("tiny"), "{err}");
    let err = d.fails(&["image", "alias", "add", "busybox", "../bad"]);
    assert!(err.contains("invalid image alias"), "{err}");
}

#[test]
fn debian_image_from_debootstrap() {
    let d = Daemon::start();
    let out = d.ok(&["image", "build", "debian", "--release", "bookworm"]);
    assert!(out.contains("debian/bookworm"), "{out}");
    let err = d.fails(&["image", "build", "debian", "--release", "hamm"]);
    assert!(err.contains("unknown Debian release"), "{err}");
    d.ok(&["launch", "debian/bookworm", "deb"]);
    let (_, v) = d.sh("deb", "cat /etc/debian_version; apt-get --version | head -n1");
    assert!(v.starts_with("12."), "{v}");
    assert!(v.contains("apt 2."), "{v}");
    // Set-id bits and owners survive the unprivileged copy.
    assert_eq!(d.sh("deb", "stat -c %A:%u /usr/bin/passwd").1.trim(), "-rwsr-xr-x:0");
    // The image's stop signal ends its init at once.
    let t = std::time::Instant::now();
    d.ok(&["stop", "deb"]);
    assert!(t.elapsed() < std::time::Duration::from_secs(5), "{:?}", t.elapsed());
}
