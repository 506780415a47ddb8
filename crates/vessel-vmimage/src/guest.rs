//! What Vessel puts into every guest: busybox, the init script and its helpers, the agent.
//! The constants are the init's contract with the host (see docs/vm-images.md).

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Result, VmImageError};
use crate::tools::{run_command, Tool};

/// Printed on the console once the guest is up (network tried, agent started) and the root
/// shell is about to read from the console.
pub const READY_LINE: &str = "VESSEL-READY";
/// `VESSEL-NET IFACE ADDRESS/PREFIX`: printed when DHCP bound an address to the first NIC.
pub const NET_LINE_PREFIX: &str = "VESSEL-NET ";
/// `VESSEL-AGENT started PORT`, `VESSEL-AGENT absent PATH` or `VESSEL-AGENT no-port NAME`.
pub const AGENT_LINE_PREFIX: &str = "VESSEL-AGENT ";
/// `VESSEL-ROOT DEVICE`: the initramfs mounted the disk and is switching into it.
pub const ROOT_LINE_PREFIX: &str = "VESSEL-ROOT ";
/// `VESSEL-ERROR WHAT`: boot went wrong; the guest falls back to a shell in the initramfs.
pub const ERROR_LINE_PREFIX: &str = "VESSEL-ERROR ";
/// `VESSEL-SHUTDOWN poweroff|reboot`: the init is stopping processes and powering off.
pub const SHUTDOWN_LINE_PREFIX: &str = "VESSEL-SHUTDOWN ";
/// Kernel command-line parameter that names the guest (`vessel.hostname=web1`).
pub const HOSTNAME_PARAM: &str = "vessel.hostname";
/// Kernel command-line parameter that turns DHCP off (`vessel.dhcp=off`).
pub const DHCP_PARAM: &str = "vessel.dhcp";
/// Name of the virtio-serial port the agent talks through (`-device virtserialport,name=...`).
pub const AGENT_PORT_NAME: &str = "org.vessel.agent";
/// Where the agent lives in the guest; the init starts it only if it exists and the port too.
pub const AGENT_GUEST_PATH: &str = "/usr/bin/vessel-agent";

/// Directory of Vessel's own files in the guest; the init uses only the busybox in it, so
/// a disk's root file system need not contain busybox.
pub(crate) const GUEST_DIR: &str = "usr/lib/vessel";
/// Marker that tells the init it runs from the initramfs (stage one of a disk boot).
pub(crate) const INITRAMFS_MARKER: &str = "usr/lib/vessel/initramfs";
/// Module files to load, in order, relative to `lib/modules/<version>/`.
pub(crate) const MODULES_LIST: &str = "usr/lib/vessel/modules.list";

const INIT_SCRIPT: &str = include_str!("guest/init.sh");
const UDHCPC_SCRIPT: &str = include_str!("guest/udhcpc.sh");
const ACPI_POWER_SCRIPT: &str = include_str!("guest/acpi-power.sh");

/// A file Vessel adds to a guest, at a path relative to its root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GuestFile {
    pub path: String,
    pub data: Vec<u8>,
    pub mode: u32,
}

/// The init, its helpers, busybox for them and, when given, the agent.
pub(crate) fn vessel_files(busybox: &Busybox, agent: Option<Vec<u8>>) -> Vec<GuestFile> {
    let file = |path: &str, data: &[u8]| GuestFile {
        path: path.into(),
        data: data.to_vec(),
        mode: 0o755,
    };
    let mut files = vec![
        file("init", INIT_SCRIPT.as_bytes()),
        file(&format!("{GUEST_DIR}/busybox"), &busybox.data),
        file(
            &format!("{GUEST_DIR}/udhcpc.script"),
            UDHCPC_SCRIPT.as_bytes(),
        ),
        file(
            &format!("{GUEST_DIR}/acpi/PWRF/00000080"),
            ACPI_POWER_SCRIPT.as_bytes(),
        ),
    ];
    if let Some(agent) = agent {
        files.push(GuestFile {
            path: AGENT_GUEST_PATH.trim_start_matches('/').into(),
            data: agent,
            mode: 0o755,
        });
    }
    files
}

/// A static busybox and the applets it provides.
#[derive(Debug, Clone)]
pub(crate) struct Busybox {
    pub data: Vec<u8>,
    /// Install paths of the applets, relative (`usr/bin/awk`, `sbin/ifconfig`).
    pub applets: Vec<String>,
}

/// Reads the busybox at `path`, refusing a dynamically linked one (it would not run in the
/// guest), and asks it for its applets.
pub(crate) fn load_busybox(path: &Path) -> Result<Busybox> {
    if !path.is_file() {
        return Err(VmImageError::BusyboxMissing {
            path: path.to_path_buf(),
        });
    }
    let data = fs::read(path).map_err(VmImageError::io("read", path))?;
    if has_interpreter(&data) {
        return Err(VmImageError::BusyboxNotStatic {
            path: path.to_path_buf(),
        });
    }
    let tool = Tool {
        name: "busybox",
        package: "busybox-static",
    };
    let output = run_command(tool, Command::new(path).arg("--list-full"))?;
    let mut applets: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| l.trim().trim_start_matches('/').to_string())
        .filter(|l| !l.is_empty() && !l.contains("..") && !l.ends_with("/busybox"))
        .collect();
    applets.sort();
    applets.dedup();
    Ok(Busybox { data, applets })
}

/// Whether an ELF file asks for a dynamic loader (has a PT_INTERP program header).
fn has_interpreter(elf: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| {
        elf.get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    // Only little-endian ELF64 is inspected; anything else is left for the guest to judge.
    if elf.get(..5) != Some(b"\x7fELF\x02".as_slice()) || elf.get(5) != Some(&1) {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    (0..usize::from(phnum)).any(|i| {
        usize::try_from(phoff)
            .ok()
            .and_then(|off| off.checked_add(i * usize::from(phentsize)))
            .and_then(u32_at)
            == Some(PT_INTERP)
    })
}

/// Makes a minimal root file system of busybox in `dir` (`bin/busybox`, its applets as
/// symbolic links, `/etc/passwd`, empty mount points): enough for a disk image to boot into.
pub fn busybox_rootfs(dir: &Path, busybox: &Path) -> Result<()> {
    let busybox = load_busybox(busybox)?;
    let write = |relative: &str, data: &[u8], mode: u32| -> Result<()> {
        let path = dir.join(relative);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(VmImageError::io("create", parent))?;
        }
        fs::write(&path, data).map_err(VmImageError::io("write", &path))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))
            .map_err(VmImageError::io("chmod", &path))
    };
    write("bin/busybox", &busybox.data, 0o755)?;
    for applet in &busybox.applets {
        let link = dir.join(applet);
        if link.symlink_metadata().is_ok() {
            continue;
        }
        if let Some(parent) = link.parent() {
            fs::create_dir_all(parent).map_err(VmImageError::io("create", parent))?;
        }
        symlink("/bin/busybox", &link).map_err(VmImageError::io("link", &link))?;
    }
    for (relative, mode) in [
        ("proc", 0o555),
        ("sys", 0o555),
        ("dev", 0o755),
        ("run", 0o755),
        ("tmp", 0o1777),
        ("root", 0o700),
    ] {
        let path: PathBuf = dir.join(relative);
        fs::create_dir_all(&path).map_err(VmImageError::io("create", &path))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))
            .map_err(VmImageError::io("chmod", &path))?;
    }
    for (relative, data) in base_etc_files() {
        write(relative, data.as_bytes(), 0o644)?;
    }
    Ok(())
}

/// `/etc` files a root shell expects.
pub(crate) fn base_etc_files() -> [(&'static str, &'static str); 3] {
    [
        ("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
        ("etc/group", "root:x:0:\ntty:x:5:\n"),
        ("etc/hostname", "vessel\n"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_dynamic_elf() {
        let mut elf = vec![0u8; 0x200];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        elf[0x20..0x28].copy_from_slice(&0x40u64.to_le_bytes());
        elf[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        elf[0x38..0x3a].copy_from_slice(&2u16.to_le_bytes());
        elf[0x40..0x44].copy_from_slice(&1u32.to_le_bytes());
        assert!(!has_interpreter(&elf));
        elf[0x40 + 56..0x44 + 56].copy_from_slice(&3u32.to_le_bytes());
        assert!(has_interpreter(&elf));
        assert!(!has_interpreter(b"#!/bin/sh\n"));
    }

    #[test]
    fn host_tools_are_judged() {
        // /bin/sh on Debian is dash, dynamically linked.
        assert!(has_interpreter(&fs::read("/bin/sh").expect("read /bin/sh")));
    }
}
