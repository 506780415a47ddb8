//! Tap devices for VMs: created persistent and root-only in a throw-away namespace, refused to
//! an unprivileged user, opened by root (whose descriptor QEMU inherits), bridged, carrying
//! real frames.

mod common;

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use common::{current_ns_has_link, netns_list, TestNs};
use vessel_net::{
    create_bridge, create_tap, delete_tap, open_tap, tap_info, BridgeSpec, Links, MacAddr, NetNs,
    TapError, TapSpec,
};

const NOBODY: u32 = 65534;
const GUEST_MAC: [u8; 6] = [0x0a, 0x76, 0x73, 0, 0, 0x99];
const GUEST_IP: Ipv4Addr = Ipv4Addr::new(10, 70, 0, 9);
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 70, 0, 1);
const VNET_HDR_LEN: usize = 10;

fn spec(name: &str) -> TapSpec {
    TapSpec {
        name: name.into(),
        vnet_hdr: true,
        multi_queue: false,
        mac: None,
        mtu: Some(1400),
        bridge: Some("vbr-vm".into()),
    }
}

/// Opens the tap from a thread of `ns` that has dropped to `uid`/`gid` with no capabilities
/// (raw syscalls change only the calling thread's credentials).
fn open_as(ns: &NetNs, name: &str, uid: u32, gid: u32) -> Result<File, TapError> {
    ns.run(|| {
        open_tun_as_0666();
        // SAFETY: plain credential syscalls on this helper thread only; no memory is shared.
        unsafe {
            assert_eq!(
                libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()),
                0
            );
            assert_eq!(libc::syscall(libc::SYS_setresgid, gid, gid, gid), 0);
            assert_eq!(libc::syscall(libc::SYS_setresuid, uid, uid, uid), 0);
        }
        open_tap(&NetNs::current(), name, true, false)
    })
    .expect("enter ns")
}

/// Gives this helper thread a mount namespace of its own where `/dev/net/tun` is mode 0666,
/// as on a Debian host with systemd: the attach is then refused by the tap itself, not by
/// the node's mode, whatever the host's node is.
fn open_tun_as_0666() {
    use std::ffi::CString;
    let dir = std::env::temp_dir().join(format!("vessel-tun-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let node = dir.join("tun");
    let _ = std::fs::remove_file(&node);
    let c = |p: &std::path::Path| CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: unshare, mknod, chmod and mount with valid C strings, on this thread only
    // (CLONE_FS gives it a file system context of its own for the new mount namespace).
    unsafe {
        assert_eq!(libc::unshare(libc::CLONE_FS | libc::CLONE_NEWNS), 0);
        let root = CString::new("/").unwrap();
        assert_eq!(
            libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null()
            ),
            0
        );
        assert_eq!(
            libc::mknod(
                c(&node).as_ptr(),
                libc::S_IFCHR | 0o666,
                libc::makedev(10, 200)
            ),
            0
        );
        assert_eq!(libc::chmod(c(&node).as_ptr(), 0o666), 0);
        let tun = CString::new("/dev/net/tun").unwrap();
        assert_eq!(
            libc::mount(
                c(&node).as_ptr(),
                tun.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null()
            ),
            0
        );
    }
    let _ = std::fs::remove_file(&node);
    let _ = std::fs::remove_dir(&dir);
}

/// An ARP request "who has GATEWAY, tell GUEST_IP" from the guest's MAC, behind a zeroed
/// virtio_net_hdr.
fn arp_request() -> Vec<u8> {
    let mut f = vec![0u8; VNET_HDR_LEN];
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&GUEST_MAC);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&GUEST_MAC);
    f.extend_from_slice(&GUEST_IP.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&GATEWAY.octets());
    f
}

/// Asks for the gateway's MAC as a guest would (re-sending every 200 ms while the bridge port
/// comes up) and waits for the ARP reply; returns the gateway's MAC.
fn arp_for_gateway(tap: &mut File) -> Option<[u8; 6]> {
    // SAFETY: F_SETFL with O_NONBLOCK on an open fd owned by `tap`.
    unsafe { libc::fcntl(tap.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut next_send = Instant::now();
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline {
        if Instant::now() >= next_send {
            tap.write_all(&arp_request()).expect("write frame");
            next_send = Instant::now() + Duration::from_millis(200);
        }
        match tap.read(&mut buf) {
            Ok(n) if n >= VNET_HDR_LEN + 42 => {
                let f = &buf[VNET_HDR_LEN..n];
                let is_reply = f[0..6] == GUEST_MAC
                    && f[12..14] == [0x08, 0x06]
                    && f[20..22] == [0, 2]
                    && f[28..32] == GATEWAY.octets();
                if is_reply {
                    let mut mac = [0u8; 6];
                    mac.copy_from_slice(&f[22..28]);
                    return Some(mac);
                }
            }
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => panic!("read from tap: {e}"),
        }
    }
    None
}

#[test]
fn taps_are_persistent_root_only_bridged_and_carry_frames() {
    let created;
    {
        let host = TestNs::new("tap-host");
        created = host.name.clone();
        let mut links = Links::open(&host.ns).expect("netlink");
        create_bridge(
            &mut links,
            &BridgeSpec {
                name: "vbr-vm".into(),
                subnet: "10.70.0.0/24".parse().expect("subnet"),
                mtu: None,
            },
        )
        .expect("bridge");
        let bridge = links.index("vbr-vm").expect("bridge index");

        let mut s = spec("tap-vm1");
        s.mac = Some(MacAddr::new([0x0a, 0x76, 0x73, 1, 2, 3]));
        create_tap(&host.ns, &s).expect("create tap");
        assert!(host.has_link("tap-vm1"));
        assert!(
            !current_ns_has_link("tap-vm1"),
            "the tap must be born inside the namespace"
        );
        let info = tap_info(&mut links, "tap-vm1")
            .expect("info")
            .expect("is a tap");
        assert_eq!(info.owner, Some(0), "no user may attach but root");
        assert_eq!(info.group, None);
        assert!(info.persistent && info.vnet_hdr && !info.multi_queue);
        assert_eq!(info.master, Some(bridge));
        let shown = String::from_utf8_lossy(&host.exec(&["ip", "link", "show", "tap-vm1"]).stdout)
            .to_string();
        assert!(
            shown.contains("mtu 1400") && shown.contains("0a:76:73:01:02:03"),
            "{shown}"
        );

        // Not a tap, or already there: refused.
        assert!(tap_info(&mut links, "vbr-vm").expect("info").is_none());
        assert!(matches!(
            create_tap(&host.ns, &s),
            Err(TapError::AlreadyExists(_))
        ));
        assert!(matches!(
            delete_tap(&host.ns, "vbr-vm"),
            Err(TapError::NotATap(_))
        ));

        // An unprivileged user cannot attach to it even where /dev/net/tun is 0666 (Debian
        // with systemd): EPERM from TUNSETIFF, since root owns the tap. Root can, and hands
        // that descriptor to QEMU.
        let err = open_as(&host.ns, "tap-vm1", NOBODY, NOBODY).expect_err("nobody is refused");
        let refused = matches!(&err,
            TapError::Ioctl { source, .. } if source.raw_os_error() == Some(libc::EPERM));
        assert!(refused, "{err:?}");
        let mut tap = open_tap(&host.ns, "tap-vm1", true, false).expect("root opens the tap");

        // A frame from the "guest" crosses the bridge and the gateway answers it.
        let gw_mac = arp_for_gateway(&mut tap).expect("the gateway answers ARP through the bridge");
        let bridge_shown =
            String::from_utf8_lossy(&host.exec(&["ip", "link", "show", "vbr-vm"]).stdout)
                .to_string();
        let gw_mac_text = gw_mac
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":");
        assert!(
            bridge_shown.contains(&gw_mac_text),
            "{bridge_shown} vs {gw_mac_text}"
        );

        // Persistent: closing the last descriptor keeps the device.
        drop(tap);
        assert!(host.has_link("tap-vm1"));

        // A missing bridge fails the creation and leaves nothing behind.
        let mut bad = spec("tap-bad");
        bad.bridge = Some("vbr-none".into());
        assert!(create_tap(&host.ns, &bad).is_err());
        assert!(!host.has_link("tap-bad"));

        delete_tap(&host.ns, "tap-vm1").expect("delete");
        assert!(!host.has_link("tap-vm1"));
        assert!(delete_tap(&host.ns, "tap-vm1").is_err());
    }
    assert!(!netns_list().contains(&created), "namespace left behind");
}
