//! `vessel-monitor CONFIG`: see the crate documentation in `lib.rs`.

mod serve;

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use vessel_monitor::log::{run_sink, LOG_LIMIT};
use vessel_monitor::{receive_console, MonitorConfig, Ready};

fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: vessel-monitor CONFIG.json | --console-log LOG (started by vesseld)");
        std::process::exit(2);
    };
    if path == "--console-log" {
        console_log_sink();
    }
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
    if let Err(e) = serve::block_signals() {
        report(&Ready::Failed {
            error: format!("blocking signals: {e}"),
        });
        std::process::exit(1);
    }
    // Detach from the daemon's session so that signals to it do not reach us.
    let _ = nix::unistd::setsid();
    if let Err(e) = std::fs::write(&config.pid_file, std::process::id().to_string()) {
        eprintln!("vessel-monitor: writing {}: {e}", config.pid_file.display());
        report(&Ready::Failed {
            // The daemon shows this to users: say what, not where (the log has the path).
            error: format!("writing the monitor's pid file: {e}"),
        });
        std::process::exit(1);
    }
    match launch(&config) {
        Ok((pid, master)) => {
            // Clients attach through this socket: bound before the daemon hears that the
            // container runs, so that a console attach right after the start finds it.
            let listener = match serve::bind(&config) {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("vessel-monitor: binding {}: {e}", config.socket.display());
                    // SAFETY: kill takes plain integers; the init must not outlive us.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    cleanup(&config);
                    report(&Ready::Failed {
                        error: format!("binding the console socket: {e}"),
                    });
                    std::process::exit(1);
                }
            };
            report(&Ready::Running { pid });
            // Whatever happens while serving, the container's leftovers are removed.
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                serve::run(&config, pid, master, listener)
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

/// `vessel-monitor --console-log LOG`: a VM's console log arrives on stdin (a pipe QEMU writes
/// into) and is kept in LOG and LOG.1, at most [`LOG_LIMIT`] bytes each, until QEMU exits.
fn console_log_sink() -> ! {
    let Some(log) = std::env::args_os().nth(2) else {
        eprintln!("usage: vessel-monitor --console-log LOG");
        std::process::exit(2);
    };
    match run_sink(
        std::io::stdin().lock(),
        std::path::Path::new(&log),
        LOG_LIMIT,
    ) {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("vessel-monitor: console log sink: {e}");
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

/// Mounts the root, then has the OCI runtime create and start the container; returns the init
/// pid and the terminal's master side. The runtime exits after `create`, so its child, the
/// container's init, is re-parented to us (a subreaper) and we reap it like conmon does.
fn launch(c: &MonitorConfig) -> Result<(i32, OwnedFd)> {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes an integer argument and touches no memory.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if let Some(o) = &c.overlay {
        o.mount()
            .map_err(logged)
            .context("mounting the instance's root file system")?;
    }
    vessel_monitor::stage_binds(&c.binds)
        .map_err(logged)
        .context("mounting the instance's volumes")?;
    let console = c.socket.with_extension("console");
    let init_pid = c.socket.with_extension("init");
    let _ = std::fs::remove_file(&console);
    let listener = UnixListener::bind(&console).context("binding the console socket")?;
    let mut create = runtime(c)
        .arg("create")
        .arg("--bundle")
        .arg(&c.bundle)
        .arg("--console-socket")
        .arg(&console)
        .arg("--pid-file")
        .arg(&init_pid)
        .arg(&c.id)
        .stderr(Stdio::piped())
        .spawn()
        .context("running the container runtime")?;
    let master = receive_console(&listener, Duration::from_secs(120), || {
        matches!(create.try_wait(), Ok(Some(_)))
    });
    let _ = std::fs::remove_file(&console);
    let out = create.wait_with_output();
    // The container has bound its volumes into its own mount namespace (or failed to).
    vessel_monitor::unstage_binds(&c.binds);
    let out = out.context("waiting for the runtime")?;
    if !out.status.success() {
        bail!("{}", runtime_error(&out.stderr));
    }
    let master = master.context("receiving the container's terminal")?;
    let state = runtime(c)
        .arg("state")
        .arg(&c.id)
        .output()
        .context("reading the container's state")?;
    let state: serde_json::Value = serde_json::from_slice(&state.stdout)
        .with_context(|| format!("runtime state: {}", runtime_error(&state.stderr)))?;
    // An instance's limits are part of what it is: never run one without its cgroup.
    if let Some(why) = state.get("cgroup_error").and_then(|v| v.as_str()) {
        bail!("the instance's cgroup could not be set up, so its limits cannot be enforced: {why}");
    }
    // The init waits to be started: its loopback is up before its first instruction.
    let pid = std::fs::read_to_string(&init_pid)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .ok_or_else(|| anyhow!("the runtime wrote no init pid"))?;
    vessel_monitor::loopback_up(pid).context("bringing up the container's loopback interface")?;
    let start = runtime(c)
        .arg("start")
        .arg(&c.id)
        .stderr(Stdio::piped())
        .output()
        .context("starting the container")?;
    if !start.status.success() {
        bail!("{}", runtime_error(&start.stderr));
    }
    let _ = std::fs::remove_file(&init_pid);
    Ok((pid, master))
}

/// Writes a mount failure with its host path to the log; the daemon hears it without.
fn logged(e: vessel_monitor::IdmapError) -> vessel_monitor::IdmapError {
    eprintln!(
        "vessel-monitor: {} ({}): {:?}",
        e,
        e.path().display(),
        std::error::Error::source(&e)
    );
    e
}

/// The runtime's command line, with its state root.
fn runtime(c: &MonitorConfig) -> Command {
    let mut cmd = Command::new(&c.runtime);
    cmd.arg("--root")
        .arg(&c.state_root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    cmd
}

/// The runtime's error message: its last non-empty line of stderr, without its name prefix.
fn runtime_error(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let line = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("the runtime failed");
    line.trim_start_matches("vessel-runc: ").trim().to_string()
}

/// Removes the container and its cgroup and unmounts the root; each step is best effort and
/// logged, so that a partial launch leaves nothing behind.
fn cleanup(c: &MonitorConfig) {
    match runtime(c)
        .arg("delete")
        .arg("--force")
        .arg(&c.id)
        .stderr(Stdio::piped())
        .output()
    {
        Ok(o) if !o.status.success() => eprintln!(
            "vessel-monitor: removing container {}: {}",
            c.id,
            runtime_error(&o.stderr)
        ),
        Err(e) => eprintln!(
            "vessel-monitor: running the runtime to remove {}: {e}",
            c.id
        ),
        Ok(_) => {}
    }
    vessel_monitor::unstage_binds(&c.binds);
    if let Some(o) = &c.overlay {
        if let Err(e) = o.unmount() {
            logged(e);
        }
    }
    let _ = std::fs::remove_file(&c.socket);
    let _ = std::fs::remove_file(&c.pid_file);
}
