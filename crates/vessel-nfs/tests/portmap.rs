//! Clients that know no ports find MOUNT and NFS through the portmapper on port 111. Port
//! 111 is privileged and the host's own, so server and clients run in a network namespace
//! created for the test.

mod common;

use common::*;

#[test]
fn plain_urls_work_through_the_portmapper() {
    let dir = TempDir::new("pmap");
    let local = TempDir::new("pmap-local");
    std::fs::write(dir.join("hello.txt"), b"via portmap\n").expect("write");
    let ns = Netns::new();
    let _srv = Server::start(
        Some(&ns),
        &[
            "--export",
            &format!("/vol1={}", path_str(&dir.0)),
            "--export",
            &format!("/vol2={}", path_str(&local.0)),
            "--listen",
            "127.0.0.1:2049",
            "--portmap",
            "127.0.0.1:111",
            "--squash",
            "none",
        ],
    );
    let ls = run_ok_in(Some(&ns), "nfs-ls", &["nfs://127.0.0.1/vol1"]);
    assert!(listed_names(&ls).contains(&"hello.txt".to_string()), "{ls}");
    assert_eq!(
        run_ok_in(Some(&ns), "nfs-cat", &["nfs://127.0.0.1/vol1/hello.txt"]),
        "via portmap\n"
    );
    // Discovery lists every export (MOUNT EXPORT through the portmapper).
    let exports = run_ok_in(Some(&ns), "nfs-ls", &["-D", "nfs://127.0.0.1"]);
    assert!(exports.contains("nfs://127.0.0.1/vol1"), "{exports}");
    assert!(exports.contains("nfs://127.0.0.1/vol2"), "{exports}");
    let data = random_bytes(3 << 20, 7);
    std::fs::write(local.join("src"), &data).expect("write");
    run_ok_in(
        Some(&ns),
        "nfs-cp",
        &[path_str(&local.join("src")), "nfs://127.0.0.1/vol1/copy"],
    );
    assert!(std::fs::read(dir.join("copy")).expect("copied") == data);
}

#[test]
fn without_a_portmapper_plain_urls_fail_and_say_so() {
    let dir = TempDir::new("nopmap");
    let ns = Netns::new();
    let _srv = Server::start(
        Some(&ns),
        &[
            "--export",
            &format!("/vol1={}", path_str(&dir.0)),
            "--listen",
            "127.0.0.1:2049",
        ],
    );
    let out = run_in(Some(&ns), "nfs-ls", &["nfs://127.0.0.1/vol1"]);
    assert!(
        !out.status.success(),
        "nfs-ls found the server without a portmapper"
    );
    // With the ports in the URL, the same server is reachable.
    run_ok_in(
        Some(&ns),
        "nfs-ls",
        &["nfs://127.0.0.1/vol1?nfsport=2049&mountport=2049"],
    );
}
