//! Tap devices for virtual machines: persistent, bridged, and reachable by root only.
//!
//! A tap is created through `/dev/net/tun` (TUNSETIFF) on a helper thread inside the target
//! namespace, so the device is born there, and made persistent and owned by root
//! (TUNSETOWNER 0): only root or a process with CAP_NET_ADMIN may attach to it. A tap with no
//! owner and no group is open to any user who can open `/dev/net/tun`, which is mode 0666 on
//! a Debian host with systemd (`static-nodes-permissions.conf`). The caller (root) opens a
//! queue with
//! [`open_tap`] and hands the descriptor to an unprivileged QEMU (`-netdev tap,fd=N`), as
//! libvirt and Incus do, so neither QEMU's user nor the mode of `/dev/net/tun` matters.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;

use crate::ipam::MacAddr;
use crate::link::{
    validate_ifname, LinkError, Links, IFLA_INFO_DATA, IFLA_INFO_KIND, IFLA_LINKINFO,
};
use crate::netlink::{attr_u32, find_attr, parse_attrs};
use crate::netns::{NetNs, NetNsError};

const TUN_PATH: &str = "/dev/net/tun";
const IFLA_TUN_OWNER: u16 = 1;
const IFLA_TUN_GROUP: u16 = 2;
const IFLA_TUN_TYPE: u16 = 3;
const IFLA_TUN_VNET_HDR: u16 = 5;
const IFLA_TUN_PERSIST: u16 = 6;
const IFLA_TUN_MULTI_QUEUE: u16 = 7;

/// Errors creating, opening or inspecting tap devices.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// `/dev/net/tun` could not be opened (module `tun` missing, or no permission).
    #[error("cannot open /dev/net/tun; is the `tun` module loaded?")]
    OpenTun(#[source] std::io::Error),
    /// A tun ioctl failed.
    #[error("{op} on tap {name} failed")]
    Ioctl {
        /// Which ioctl.
        op: &'static str,
        /// The tap's name.
        name: String,
        /// Underlying error (EPERM: the caller lacks CAP_NET_ADMIN).
        #[source]
        source: std::io::Error,
    },
    /// A link of that name already exists (TUNSETIFF would attach to it instead).
    #[error("a link named {0:?} already exists")]
    AlreadyExists(String),
    /// The link exists but is not a tap device.
    #[error("link {0:?} is not a tap device")]
    NotATap(String),
    /// A link operation failed.
    #[error(transparent)]
    Link(#[from] LinkError),
    /// The namespace could not be entered.
    #[error(transparent)]
    Namespace(#[from] NetNsError),
}

/// A VM NIC's tap device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapSpec {
    /// Interface name.
    pub name: String,
    /// Frames carry a `virtio_net_hdr` (what QEMU's virtio-net wants for offloads).
    pub vnet_hdr: bool,
    /// One queue per vCPU; QEMU must then open it with `queues=N`.
    pub multi_queue: bool,
    /// MAC address of the host side (the guest's MAC is set in QEMU); `None` for random.
    pub mac: Option<MacAddr>,
    /// MTU, or the kernel default.
    pub mtu: Option<u32>,
    /// Bridge to attach the tap to; `None` leaves it unattached.
    pub bridge: Option<String>,
}

/// A tap device as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapInfo {
    /// Owner uid, if set.
    pub owner: Option<u32>,
    /// Group gid, if set.
    pub group: Option<u32>,
    /// Survives the last file descriptor being closed.
    pub persistent: bool,
    /// The current flags include IFF_VNET_HDR (the last attacher decides this).
    pub vnet_hdr: bool,
    /// Created with IFF_MULTI_QUEUE.
    pub multi_queue: bool,
    /// Interface index of the bridge it is a port of.
    pub master: Option<u32>,
}

/// Creates a persistent, root-only tap in `ns` with its MAC and MTU, attaches it to the bridge
/// and brings it up. Refuses an existing name; on failure nothing is left behind.
pub fn create_tap(ns: &NetNs, spec: &TapSpec) -> Result<u32, TapError> {
    validate_ifname(&spec.name)?;
    let mut links = Links::open(ns)?;
    if links.find(&spec.name)?.is_some() {
        return Err(TapError::AlreadyExists(spec.name.clone()));
    }
    let flags = tap_flags(spec.vnet_hdr, spec.multi_queue);
    ns.run(|| -> Result<(), TapError> {
        let file = tun_attach(&spec.name, flags)?;
        // Owned by root before it persists: no moment where another user may attach.
        ioctl(
            file.as_raw_fd(),
            libc::TUNSETOWNER,
            0,
            "TUNSETOWNER",
            &spec.name,
        )?;
        ioctl(
            file.as_raw_fd(),
            libc::TUNSETPERSIST,
            1,
            "TUNSETPERSIST",
            &spec.name,
        )
    })??;
    let setup = (|| -> Result<(), LinkError> {
        if let Some(mac) = spec.mac {
            links.set_mac(&spec.name, mac)?;
        }
        if let Some(mtu) = spec.mtu {
            links.set_mtu(&spec.name, mtu)?;
        }
        if let Some(bridge) = &spec.bridge {
            links.set_master(&spec.name, Some(bridge))?;
        }
        links.set_up(&spec.name, true)
    })();
    if let Err(e) = setup {
        let _ = links.delete(&spec.name);
        return Err(e.into());
    }
    tracing::info!(tap = %spec.name, bridge = ?spec.bridge, "tap ready");
    Ok(links.index(&spec.name)?)
}

/// Deletes a tap device (a QEMU still attached sees its queue fail).
pub fn delete_tap(ns: &NetNs, name: &str) -> Result<(), TapError> {
    let mut links = Links::open(ns)?;
    if tap_info(&mut links, name)?.is_none() {
        return Err(match links.find(name)? {
            Some(_) => TapError::NotATap(name.to_string()),
            None => LinkError::NotFound {
                name: name.to_string(),
                ns: links.ns_label().to_string(),
            }
            .into(),
        });
    }
    links.delete(name)?;
    Ok(())
}

/// The tap's owner, group and flags, or `None` if `name` does not exist or is no tap.
pub fn tap_info(links: &mut Links, name: &str) -> Result<Option<TapInfo>, TapError> {
    let Some(body) = links.get_link(name)? else {
        return Ok(None);
    };
    let attrs = parse_attrs(&body[16..]);
    let master = find_attr(&attrs, crate::link::IFLA_MASTER)
        .and_then(attr_u32)
        .filter(|i| *i != 0);
    let Some(info) = find_attr(&attrs, IFLA_LINKINFO) else {
        return Ok(None);
    };
    let info = parse_attrs(info);
    if find_attr(&info, IFLA_INFO_KIND) != Some(&b"tun\0"[..]) {
        return Ok(None);
    }
    let data = parse_attrs(find_attr(&info, IFLA_INFO_DATA).unwrap_or_default());
    let flag = |kind| find_attr(&data, kind).and_then(|v| v.first().copied()) == Some(1);
    let is_tap = find_attr(&data, IFLA_TUN_TYPE).and_then(|v| v.first().copied())
        == Some(libc::IFF_TAP as u8);
    if !is_tap {
        return Ok(None);
    }
    Ok(Some(TapInfo {
        owner: find_attr(&data, IFLA_TUN_OWNER).and_then(attr_u32),
        group: find_attr(&data, IFLA_TUN_GROUP).and_then(attr_u32),
        persistent: flag(IFLA_TUN_PERSIST),
        vnet_hdr: flag(IFLA_TUN_VNET_HDR),
        multi_queue: flag(IFLA_TUN_MULTI_QUEUE),
        master,
    }))
}

/// Opens a queue of an existing tap in `ns`: read and write Ethernet frames (each preceded by
/// a 10-byte `virtio_net_hdr` when `vnet_hdr`); the descriptor is what QEMU gets. Fails for a
/// caller without CAP_NET_ADMIN (EACCES on `/dev/net/tun`, or EPERM on the tap).
pub fn open_tap(
    ns: &NetNs,
    name: &str,
    vnet_hdr: bool,
    multi_queue: bool,
) -> Result<File, TapError> {
    validate_ifname(name)?;
    ns.run(|| tun_attach(name, tap_flags(vnet_hdr, multi_queue)))?
}

fn tap_flags(vnet_hdr: bool, multi_queue: bool) -> libc::c_short {
    let mut flags = libc::IFF_TAP | libc::IFF_NO_PI;
    if vnet_hdr {
        flags |= libc::IFF_VNET_HDR;
    }
    if multi_queue {
        flags |= libc::IFF_MULTI_QUEUE;
    }
    flags as libc::c_short
}

/// Opens `/dev/net/tun` on the calling thread (so in its namespace) and binds it to `name`,
/// creating the device if it does not exist.
fn tun_attach(name: &str, flags: libc::c_short) -> Result<File, TapError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(TUN_PATH)
        .map_err(TapError::OpenTun)?;
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    ifr.ifr_ifru.ifru_flags = flags;
    // SAFETY: TUNSETIFF reads and writes one `struct ifreq`, which `ifr` is, for the
    // duration of the call; the fd is open.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut ifr) };
    if rc != 0 {
        return Err(TapError::Ioctl {
            op: "TUNSETIFF",
            name: name.to_string(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(file)
}

fn ioctl(
    fd: libc::c_int,
    request: libc::Ioctl,
    arg: libc::c_ulong,
    op: &'static str,
    name: &str,
) -> Result<(), TapError> {
    // SAFETY: TUNSETPERSIST and TUNSETOWNER take their argument by value, not a
    // pointer; the fd is an open tun file.
    let rc = unsafe { libc::ioctl(fd, request, arg) };
    if rc != 0 {
        return Err(TapError::Ioctl {
            op,
            name: name.to_string(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}
