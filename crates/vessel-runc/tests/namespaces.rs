//! A spec that leaves out the mount namespace: the runtime spec says the container then
//! inherits the runtime's, and runc runs it so (its mounts made in the runtime's mount
//! namespace, chroot instead of pivot_root), refusing only masked and read-only paths. The
//! same bundle is run by runc and by vessel-runc.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::Bundle;
use serde_json::Value;

/// Mount points at or below `dir` in this process's mount namespace.
fn mounts_under(dir: &Path) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(String::from))
        .filter(|p| Path::new(p).starts_with(dir))
        .collect()
}

fn without_mount_namespace(cfg: &mut Value) {
    let ns = cfg["linux"]["namespaces"].as_array_mut().unwrap();
    ns.retain(|n| n["type"] != "mount");
}

fn runc(b: &Bundle, args: &[&str]) -> std::process::Output {
    Command::new("runc")
        .arg("--root")
        .arg(b.path().join("runc-state"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("runc is missing: apt-get install runc")
}

#[test]
fn without_a_mount_namespace_the_container_shares_the_runtimes_like_runc() {
    let b = Bundle::new("nomnt", &[], |cfg| {
        without_mount_namespace(cfg);
        let linux = cfg["linux"].as_object_mut().unwrap();
        linux.remove("maskedPaths");
        linux.remove("readonlyPaths");
        cfg["process"]["args"] = serde_json::json!([
            "sh", "-c",
            "readlink /proc/self/ns/mnt; ls /; hostname; echo $$; grep -c ' /proc ' /proc/self/mountinfo"
        ]);
    });
    let bundle = b.path().to_str().unwrap().to_string();
    let rootfs = std::fs::canonicalize(b.path().join("rootfs")).unwrap();
    let own_mnt = std::fs::read_link("/proc/self/ns/mnt").unwrap();

    let ours = b.runc(&["run", "--bundle", &bundle, "nomnt-vessel"]);
    let out = String::from_utf8_lossy(&ours.stdout).into_owned();
    assert!(
        ours.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&ours.stderr)
    );
    let first = out.lines().next().unwrap();
    assert_eq!(
        first,
        own_mnt.to_str().unwrap(),
        "runs in the runtime's mount namespace"
    );
    assert!(
        out.contains("\nbin\ndata\ndev\netc\nproc\nsys\ntmp\nvessel\n1\n"),
        "chrooted into the rootfs, with its own hostname and pid namespace: {out}"
    );
    assert!(
        mounts_under(&rootfs).is_empty(),
        "delete detaches the mounts made for the container: {:?}",
        mounts_under(&rootfs)
    );

    // runc gives the same view (and leaves its mounts behind; the bundle's drop detaches them).
    let reference = runc(&b, &["run", "--bundle", &bundle, "nomnt-runc"]);
    assert!(
        reference.status.success(),
        "{}",
        String::from_utf8_lossy(&reference.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&reference.stdout), out);
}

#[test]
fn exec_without_a_mount_namespace_gets_the_containers_root() {
    let b = Bundle::new("nomntexec", &[], |cfg| {
        without_mount_namespace(cfg);
        let linux = cfg["linux"].as_object_mut().unwrap();
        linux.remove("maskedPaths");
        linux.remove("readonlyPaths");
        cfg["root"]["readonly"] = true.into();
        cfg["process"]["args"] = serde_json::json!(["sleep", "1000"]);
    });
    let rootfs = std::fs::canonicalize(b.path().join("rootfs")).unwrap();
    b.create("x1");
    b.ok(&["start", "x1"]);
    // (runc leaves an exec'd process in the runtime's root; it belongs in the container's.)
    let out = b.ok(&[
        "exec",
        "x1",
        "sh",
        "-c",
        "ls /; touch /x 2>&1 || echo read-only",
    ]);
    assert!(
        out.starts_with("bin\ndata\ndev\netc\nproc\nsys\ntmp\n"),
        "{out}"
    );
    assert!(
        out.contains("Read-only file system"),
        "root.readonly holds: {out}"
    );
    assert!(
        !mounts_under(&rootfs).is_empty(),
        "the container's mounts while it runs"
    );
    b.ok(&["delete", "--force", "x1"]);
    assert!(
        mounts_under(&rootfs).is_empty(),
        "{:?}",
        mounts_under(&rootfs)
    );
}

#[test]
fn what_cannot_work_without_a_mount_namespace_is_refused_clearly() {
    // Masked and read-only paths: runc refuses them too.
    let b = Bundle::new("nomntmask", &[], without_mount_namespace);
    let bundle = b.path().to_str().unwrap().to_string();
    let reference = runc(&b, &["run", "--bundle", &bundle, "mask-runc"]);
    assert!(!reference.status.success());
    assert!(String::from_utf8_lossy(&reference.stderr).contains("without a private MNT namespace"));
    let (code, err) = b.try_create("mask-vessel");
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("unable to restrict sys entries without a private mount namespace"),
        "{err}"
    );
    assert!(!b.root.join("mask-vessel").exists());

    // A user namespace may not mount in the runtime's mount namespace.
    let b = Bundle::new(
        "nomntuser",
        &[
            "--rootless",
            "--uid-base",
            "200000",
            "--gid-base",
            "200000",
            "--id-count",
            "65536",
        ],
        |cfg| {
            without_mount_namespace(cfg);
            let linux = cfg["linux"].as_object_mut().unwrap();
            linux.remove("maskedPaths");
            linux.remove("readonlyPaths");
        },
    );
    let (code, err) = b.try_create("user");
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("a user namespace needs a mount namespace too"),
        "{err}"
    );
}
