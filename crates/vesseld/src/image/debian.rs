//! Builds Debian images with `debootstrap --variant=minbase` plus systemd: the image boots a
//! system (journald, logind, dbus, `systemctl`) like an Incus Debian image, and carries `ps`
//! and `ip`.

use std::path::Path;
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::error::{Error, Result};
use crate::operations::OpHandle;

/// Releases debootstrap knows how to build here.
const RELEASES: &[&str] = &["bookworm", "trixie", "bullseye", "sid"];

/// Packages added to minbase: systemd as the init (`/sbin/init` from systemd-sysv), dbus for
/// logind, hostnamectl and friends, procps (`ps`, `top`) and iproute2 (`ip`, `ss`).
const PACKAGES: &str = "systemd,systemd-sysv,dbus,procps,iproute2";

/// Init command of Debian images: systemd. `vessel launch IMAGE NAME -- /bin/bash -l` still
/// runs a login shell as the init instead.
pub const COMMAND: &[&str] = &["/sbin/init"];

/// systemd powers off on SIGRTMIN+3 (what `poweroff` sends it).
pub const STOP_SIGNAL: &str = "SIGRTMIN+3";

/// The mirror to build from: `VESSEL_DEBIAN_MIRROR`, else Debian's own.
fn mirror() -> String {
    std::env::var("VESSEL_DEBIAN_MIRROR").unwrap_or_else(|_| "http://deb.debian.org/debian".into())
}

/// Checks a release name before anything runs.
pub fn validate_release(release: &str) -> Result<()> {
    if RELEASES.contains(&release) {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "unknown Debian release {release:?}: use one of {}",
            RELEASES.join(", ")
        )))
    }
}

/// Fills `root` (an empty directory) with a minimal Debian, reporting progress.
pub async fn build(root: &Path, release: &str, op: &OpHandle) -> Result<()> {
    let mut child = tokio::process::Command::new("debootstrap")
        .args(["--variant=minbase", "--arch=amd64"])
        .arg(format!("--include={PACKAGES}"))
        .arg(release)
        .arg(root)
        .arg(mirror())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: debootstrap is a shell script whose downloads and dpkg runs
        // must end with it when the build is cancelled or fails.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            Error::invalid(format!(
                "cannot run debootstrap ({e}); install it with apt-get install debootstrap"
            ))
        })?;
    let mut group = ProcessGroup(child.id());
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let err_task = tokio::spawn(async move {
        let mut out = String::new();
        if let Some(e) = stderr {
            let mut lines = BufReader::new(e).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                out.push_str(&l);
                out.push('\n');
            }
        }
        out
    });
    let mut last = String::new();
    if let Some(o) = stdout {
        let mut lines = BufReader::new(o).lines();
        let mut retrieved = 0u32;
        loop {
            tokio::select! {
                line = lines.next_line() => {
                    let Ok(Some(line)) = line else { break };
                    let (pct, stage) = stage_of(&line, &mut retrieved);
                    if let Some(pct) = pct {
                        op.progress(Some(pct), stage);
                    }
                    last = line;
                }
                _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
            }
            if op.is_cancelled() {
                drop(group);
                let _ = child.wait().await;
                return Err(Error::conflict("operation cancelled"));
            }
        }
    }
    let status = child.wait().await;
    // Reaped: the group's id may be reused from here on, so it is no longer ours to kill.
    group.0 = None;
    let status = status.map_err(|e| Error::internal(format!("waiting for debootstrap: {e}")))?;
    let errors = err_task.await.unwrap_or_default();
    if !status.success() {
        let tail: Vec<&str> = errors.lines().rev().take(3).collect();
        return Err(Error::internal(format!(
            "debootstrap {release} failed ({status}): {} {last}",
            tail.into_iter().rev().collect::<Vec<_>>().join(" ")
        )));
    }
    // Downloaded packages are not part of the image.
    let cache = root.join("var/cache/apt/archives");
    if let Ok(rd) = std::fs::read_dir(&cache) {
        for e in rd.flatten() {
            if e.path().extension().is_some_and(|x| x == "deb") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    // No host name of its own (debootstrap copies the build host's): an instance's host name
    // is its name, which the runtime sets and systemd keeps when /etc/hostname names none (a
    // fixed name made systemd try, and fail, to rename every instance).
    std::fs::write(root.join("etc/hostname"), "")
        .map_err(|e| Error::internal(format!("writing /etc/hostname: {e}")))?;
    forget_machine_id(root)
}

/// Empties the machine id debootstrap generated, so that every instance's systemd makes its
/// own on its first boot (and keeps it in the instance's writable layer); dbus reads the same
/// id through a link, as on systemd distributions.
fn forget_machine_id(root: &Path) -> Result<()> {
    let io = |what: &str, e: std::io::Error| Error::internal(format!("{what}: {e}"));
    std::fs::write(root.join("etc/machine-id"), "")
        .map_err(|e| io("emptying /etc/machine-id", e))?;
    let dbus = root.join("var/lib/dbus/machine-id");
    match std::fs::remove_file(&dbus) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("removing /var/lib/dbus/machine-id", e)),
    }
    if dbus.parent().is_some_and(Path::is_dir) {
        std::os::unix::fs::symlink("/etc/machine-id", &dbus)
            .map_err(|e| io("linking /var/lib/dbus/machine-id", e))?;
    }
    Ok(())
}

/// Kills a whole process group when dropped (on cancel, or when the build's future is dropped)
/// while its leader is not yet reaped.
struct ProcessGroup(Option<u32>);

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            // SAFETY: killpg has no memory effects; the group is the one we made for the
            // child, whose leader we have not reaped yet, so its id cannot have been reused.
            unsafe { libc::killpg(pgid as libc::pid_t, libc::SIGKILL) };
        }
    }
}

/// Maps a debootstrap output line to progress.
fn stage_of(line: &str, retrieved: &mut u32) -> (Option<u8>, &'static str) {
    let l = line.trim_start_matches("I: ");
    if l.starts_with("Retrieving Release") || l.starts_with("Retrieving Packages") {
        (Some(5), "fetching package lists")
    } else if l.starts_with("Resolving dependencies") || l.starts_with("Found ") {
        (Some(10), "resolving packages")
    } else if l.starts_with("Retrieving ") {
        *retrieved += 1;
        (
            Some((10 + *retrieved / 3).min(45) as u8),
            "downloading packages",
        )
    } else if l.starts_with("Extracting ") {
        (Some(50), "extracting")
    } else if l.starts_with("Installing core packages") || l.starts_with("Unpacking ") {
        (Some(65), "installing")
    } else if l.starts_with("Configuring ") {
        (Some(80), "configuring")
    } else if l.starts_with("Base system installed") {
        (Some(90), "finishing")
    } else {
        (None, "")
    }
}
