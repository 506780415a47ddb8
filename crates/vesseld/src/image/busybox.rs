//! Builds the minimal `busybox` image from Debian's `busybox-static`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use crate::error::{Error, Result};

/// Where Debian's `busybox-static` installs the binary.
pub const BUSYBOX: &str = "/bin/busybox";

/// Init command of the image: busybox init with a shell on the console.
pub const COMMAND: &[&str] = &["/sbin/init"];

/// busybox init powers off (runs shutdown actions, then ends every process) on SIGUSR2.
pub const STOP_SIGNAL: &str = "SIGUSR2";

const INITTAB: &str = "\
# Vessel busybox image: a shell on the console, clean shutdown on SIGUSR2 (poweroff).
::sysinit:/bin/mkdir -p /run /var/run /tmp
::respawn:-/bin/sh
::shutdown:/bin/sync
";

/// Fills `root` (an empty directory) with a busybox root file system.
pub fn build(root: &Path) -> Result<()> {
    let io = |what: &str, e: std::io::Error| {
        Error::internal(format!("building busybox image: {what}: {e}"))
    };
    let md = fs::metadata(BUSYBOX).map_err(|e| {
        Error::invalid(format!(
            "{BUSYBOX} is missing ({e}); install Debian's busybox-static package \
             (apt-get install busybox-static)"
        ))
    })?;
    if !md.is_file() {
        return Err(Error::invalid(format!("{BUSYBOX} is not a file")));
    }
    let list = Command::new(BUSYBOX)
        .arg("--list-full")
        .output()
        .map_err(|e| io("running busybox --list-full", e))?;
    if !list.status.success() {
        return Err(Error::internal(
            "busybox --list-full failed; is /bin/busybox from busybox-static?",
        ));
    }
    for (dir, mode) in [
        ("bin", 0o755),
        ("sbin", 0o755),
        ("usr/bin", 0o755),
        ("usr/sbin", 0o755),
        ("etc", 0o755),
        ("dev", 0o755),
        ("proc", 0o555),
        ("sys", 0o555),
        ("run", 0o755),
        ("tmp", 0o1777),
        ("root", 0o700),
        ("home", 0o755),
        ("mnt", 0o755),
        ("var/log", 0o755),
        ("var/tmp", 0o1777),
    ] {
        let p = root.join(dir);
        fs::create_dir_all(&p).map_err(|e| io(dir, e))?;
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).map_err(|e| io(dir, e))?;
    }
    fs::copy(BUSYBOX, root.join("bin/busybox")).map_err(|e| io("copy busybox", e))?;
    fs::set_permissions(root.join("bin/busybox"), fs::Permissions::from_mode(0o755))
        .map_err(|e| io("chmod busybox", e))?;
    let list = String::from_utf8_lossy(&list.stdout);
    for applet in list.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if applet == "bin/busybox" || applet.contains("..") || applet.starts_with('/') {
            continue;
        }
        let link = root.join(applet);
        if let Some(parent) = link.parent() {
            fs::create_dir_all(parent).map_err(|e| io(applet, e))?;
        }
        if fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink("/bin/busybox", &link).map_err(|e| io(applet, e))?;
        }
    }
    let files: &[(&str, &str, u32)] = &[
        (
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
            0o644,
        ),
        ("etc/group", "root:x:0:\nnogroup:x:65534:\n", 0o644),
        ("etc/inittab", INITTAB, 0o644),
        (
            "etc/profile",
            "export PATH=/usr/sbin:/usr/bin:/sbin:/bin\nexport PS1='\\h:\\w\\$ '\n",
            0o644,
        ),
        (
            "etc/os-release",
            "NAME=\"Vessel busybox\"\nID=busybox\nPRETTY_NAME=\"Vessel busybox image\"\n",
            0o644,
        ),
        ("etc/hosts", "127.0.0.1 localhost\n::1 localhost\n", 0o644),
    ];
    for (path, content, mode) in files {
        let p = root.join(path);
        fs::write(&p, content).map_err(|e| io(path, e))?;
        fs::set_permissions(&p, fs::Permissions::from_mode(*mode)).map_err(|e| io(path, e))?;
    }
    Ok(())
}
