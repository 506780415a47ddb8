//! `vessel-monitor CONFIG`: see the crate documentation in `lib.rs`.

mod serve;

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use anyhow::{anyhow, Context, Result};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use vessel_container::{Console, CreateOptions};
use vessel_monitor::{MonitorConfig, Ready};

fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: vessel-monitor CONFIG.json (started by vesseld)");
        std::process::exit(2);
    };
    let config: MonitorConfig = match std::fs::read(&path)
        .map_err(anyhow::Error::from)
        .and_then(|b| serde_json::from_slice(&b).map_err(anyhow::Error::from))
    {
        Ok(c) => c,
        Err(e) => {
            report(&Ready::Failed {
                error: format!("monitor config {path}: {e}"),
            });
            std::process::exit(1);
        }
    };
    // Detach from the daemon's session so that signals to it do not reach us.
    let _ = nix::unistd::setsid();
    if let Err(e) = std::fs::write(&config.pid_file, std::process::id().to_string()) {
        report(&Ready::Failed {
            error: format!("writing {}: {e}", config.pid_file.display()),
        });
        std::process::exit(1);
    }
    match launch(&config) {
        Ok((pid, master)) => {
            report(&Ready::Running { pid });
            // Whatever happens while serving, the container's leftovers are removed.
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                serve::run(&config, pid, master)
            }))
            .unwrap_or_else(|_| {
                // SAFETY: kill takes plain integers; the init must not outlive its monitor.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                70
            });
            cleanup(&config);
            std::process::exit(code);
        }
        Err(e) => {
            cleanup(&config);
            report(&Ready::Failed {
                error: format!("{e:#}"),
            });
            std::process::exit(1);
        }
    }
}

/// Prints the ready line on stdout (a pipe to the daemon), then points stdout at /dev/null so
/// that the daemon going away cannot hurt us.
fn report(r: &Ready) {
    let mut out = std::io::stdout();
    let _ = serde_json::to_writer(&mut out, r);
    let _ = out.write_all(b"\n");
    let _ = out.flush();
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2(null.as_raw_fd(), 1);
    }
}

/// Mounts the root, creates and starts the container; returns the init pid and the
/// terminal's master side.
fn launch(c: &MonitorConfig) -> Result<(i32, OwnedFd)> {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes an integer argument and touches no memory.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if let Some(o) = &c.overlay {
        mount(
            Some("overlay"),
            &o.target,
            Some("overlay"),
            MsFlags::empty(),
            Some(o.options().as_str()),
        )
        .with_context(|| format!("mounting the instance's root at {}", o.target.display()))?;
    }
    let pty = nix::pty::openpty(None, None).context("allocating a terminal")?;
    let mut opts = CreateOptions::new(c.id.clone(), c.bundle.clone());
    opts.state_root = c.state_root.clone();
    opts.console = Console::Pty(pty.slave);
    let state = vessel_container::create(opts).map_err(|e| anyhow!("{}", error_chain(&e)))?;
    // An instance's limits are part of what it is: never run one without its cgroup.
    if let Some(why) = &state.cgroup_error {
        return Err(anyhow!(
            "the instance's cgroup could not be set up, so its limits cannot be enforced: {why}"
        ));
    }
    vessel_container::start(&c.state_root, &c.id).map_err(|e| anyhow!("{}", error_chain(&e)))?;
    Ok((state.pid, pty.master))
}

/// Removes the container and its cgroup and unmounts the root; each step is best effort and
/// logged, so that a partial launch leaves nothing behind.
fn cleanup(c: &MonitorConfig) {
    if let Err(e) = vessel_container::delete(&c.state_root, &c.id, true) {
        eprintln!(
            "vessel-monitor: removing container {}: {}",
            c.id,
            error_chain(&e)
        );
    }
    if let Some(o) = &c.overlay {
        if is_mountpoint(&o.target) {
            if let Err(e) = umount2(&o.target, MntFlags::MNT_DETACH) {
                eprintln!("vessel-monitor: unmounting {}: {e}", o.target.display());
            }
        }
    }
    let _ = std::fs::remove_file(&c.socket);
    let _ = std::fs::remove_file(&c.pid_file);
}

fn is_mountpoint(p: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let p = p.to_string_lossy();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|m| m == p)
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        src = c.source();
    }
    s
}
