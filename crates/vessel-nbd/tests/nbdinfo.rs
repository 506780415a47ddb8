//! `nbdinfo` against the server over a unix socket and TCP.

mod common;

use std::net::{Ipv4Addr, SocketAddr};

use common::*;

/// The export facts every `nbdinfo --json` must show for the fixture's `disk`.
fn assert_disk_info(json: &str) {
    assert!(json.contains("\"export-name\": \"disk\""), "{json}");
    assert!(
        json.contains(&format!("\"export-size\": {DISK_SIZE}")),
        "{json}"
    );
    assert!(json.contains("\"is_read_only\": false"), "{json}");
    assert!(json.contains("\"structured\": true"), "{json}");
    assert!(json.contains("\"base:allocation\""), "{json}");
    assert!(json.contains("\"can_multi_conn\": true"), "{json}");
    assert!(json.contains("\"can_trim\": true"), "{json}");
    assert!(json.contains("\"can_zero\": true"), "{json}");
    assert!(json.contains("\"can_fua\": true"), "{json}");
}

#[test]
fn nbdinfo_over_unix_socket_lists_and_describes_exports() {
    let fx = Fixture::new("info-unix");
    let list = run_ok("nbdinfo", &["--list", "--json", &fx.uri("")]);
    for name in ["\"disk\"", "\"ro\"", "\"small\"", "\"golden image\""] {
        assert!(list.contains(name), "{name} missing from: {list}");
    }
    assert_disk_info(&run_ok("nbdinfo", &["--json", &fx.uri("disk")]));
    let ro = run_ok("nbdinfo", &["--json", &fx.uri("ro")]);
    assert!(ro.contains("\"is_read_only\": true"), "{ro}");
    assert!(ro.contains(&format!("\"export-size\": {RO_SIZE}")), "{ro}");
    assert!(ro.contains("\"can_trim\": false"), "{ro}");
    assert_eq!(
        run_ok("nbdinfo", &["--size", &fx.uri("small")]).trim(),
        "65536"
    );
}

#[test]
fn nbdinfo_over_tcp_loopback() {
    let fx = Fixture::new("info-tcp");
    let tcp = fx
        .server
        .serve_tcp(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .expect("tcp");
    let addr = tcp.tcp_addr().expect("tcp address");
    let uri = format!("nbd://{addr}/disk");
    assert_disk_info(&run_ok("nbdinfo", &["--json", &uri]));
    let list = run_ok("nbdinfo", &["--list", &format!("nbd://{addr}")]);
    assert!(list.contains("export=\"ro\""), "{list}");
}

#[test]
fn unknown_export_is_refused_at_handshake() {
    let fx = Fixture::new("info-unknown");
    let out = run("nbdinfo", &[&fx.uri("nope")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "nbdinfo accepted an unknown export");
    assert!(
        stderr.contains("nope"),
        "error should name the export: {stderr}"
    );
    // qemu uses NBD_OPT_GO too; it must fail at open, not later.
    let out = run("qemu-img", &["info", &fx.uri("nope")]);
    assert!(!out.status.success(), "qemu-img opened an unknown export");
    // The server keeps serving the known exports afterwards.
    run_ok("nbdinfo", &["--size", &fx.uri("disk")]);
}

#[test]
fn exports_added_and_removed_while_serving() {
    let fx = Fixture::new("info-live");
    let extra = vessel_nbd::FileDevice::create(fx.dir.join("extra.img"), 2 << 20).expect("extra");
    assert!(!run("nbdinfo", &[&fx.uri("extra")]).status.success());
    fx.server
        .add_export(vessel_nbd::NbdExport::new(
            "extra",
            std::sync::Arc::new(extra),
        ))
        .expect("add");
    assert_eq!(
        run_ok("nbdinfo", &["--size", &fx.uri("extra")]).trim(),
        (2u64 << 20).to_string()
    );
    let dup = vessel_nbd::FileDevice::open(fx.dir.join("extra.img"), true).expect("dup");
    assert!(fx
        .server
        .add_export(vessel_nbd::NbdExport::new(
            "extra",
            std::sync::Arc::new(dup)
        ))
        .is_err());
    // Removing it closes its clients' connections, and only theirs.
    let mut on_extra = NbdSession::open(&fx.uri("extra"));
    let mut on_disk = NbdSession::open(&fx.uri("disk"));
    assert!(fx.server.remove_export("extra"));
    let said = on_extra.again();
    assert!(said.starts_with("closed:"), "{said}");
    assert_eq!(on_disk.again(), "read");
    assert!(!fx.server.remove_export("extra"));
    let out = run("nbdinfo", &[&fx.uri("extra")]);
    assert!(!out.status.success(), "a removed export is still served");
    assert!(!fx.server.export_names().contains(&"extra".to_string()));
}

#[test]
fn an_export_for_other_addresses_is_neither_listed_nor_opened_and_its_clients_are_cut_off() {
    use std::net::IpAddr;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let fx = Fixture::new("info-addr");
    let tcp = fx
        .server
        .serve_tcp(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .expect("tcp");
    let addr = tcp.tcp_addr().expect("tcp address");
    let theirs = vessel_nbd::FileDevice::create(fx.dir.join("theirs.img"), 1 << 20).expect("dev");
    let only = IpAddr::from([192, 0, 2, 7]);
    fx.server
        .add_export(
            vessel_nbd::NbdExport::new("theirs", Arc::new(theirs)).addresses(move |ip| ip == only),
        )
        .expect("add theirs");
    let open = Arc::new(AtomicBool::new(true));
    let still = open.clone();
    let ours = vessel_nbd::FileDevice::create(fx.dir.join("ours.img"), 1 << 20).expect("dev");
    fx.server
        .add_export(
            vessel_nbd::NbdExport::new("ours", Arc::new(ours))
                .addresses(move |ip| still.load(Ordering::SeqCst) && ip.is_loopback()),
        )
        .expect("add ours");
    // Over TCP from 127.0.0.1: the export for another address is not listed and does not
    // open (the answer for an export that does not exist); the others do.
    let list = run_ok("nbdinfo", &["--list", &format!("nbd://{addr}")]);
    assert!(list.contains("export=\"ours\""), "{list}");
    assert!(list.contains("export=\"disk\""), "{list}");
    assert!(!list.contains("theirs"), "{list}");
    let out = run("nbdinfo", &[&format!("nbd://{addr}/theirs")]);
    assert!(
        !out.status.success(),
        "a client from another address opened it"
    );
    run_ok("nbdinfo", &["--size", &format!("nbd://{addr}/ours")]);
    // A unix socket's clients are not asked: its file mode decides who connects.
    run_ok("nbdinfo", &["--size", &fx.uri("theirs")]);
    // A connected client whose address the export stops taking is cut off, the others
    // read on.
    let mut on_ours = NbdSession::open(&format!("nbd://{addr}/ours"));
    let mut on_disk = NbdSession::open(&format!("nbd://{addr}/disk"));
    let mut on_unix = NbdSession::open(&fx.uri("ours"));
    assert_eq!(fx.server.close_disallowed(), 0);
    assert_eq!(on_ours.again(), "read");
    open.store(false, Ordering::SeqCst);
    assert_eq!(fx.server.close_disallowed(), 1);
    let said = on_ours.again();
    assert!(said.starts_with("closed:"), "{said}");
    assert_eq!(on_disk.again(), "read");
    assert_eq!(on_unix.again(), "read");
    let out = run("nbdinfo", &[&format!("nbd://{addr}/ours")]);
    assert!(
        !out.status.success(),
        "a client whose address is no longer taken opened it"
    );
}
