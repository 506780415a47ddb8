//! `vessel-runc`: an OCI runtime with runc's command line, on Vessel's container runtime
//! library. Podman and conmon can use it as `--runtime`.

mod exec;
mod logging;
mod supervise;
mod update;

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use vessel_container::spec::{default_spec, IdMap, SpecOptions};
use vessel_container::{Console, CreateOptions};

use crate::logging::{Log, LogFormat};

#[derive(Debug, Parser)]
#[command(
    name = "vessel-runc",
    about = "OCI container runtime (runc-compatible command line)",
    disable_version_flag = true
)]
struct Cli {
    /// Directory for container states.
    #[arg(long, global = true, default_value = vessel_container::DEFAULT_STATE_ROOT)]
    root: PathBuf,
    /// Log file (default: stderr, warnings and errors only).
    #[arg(long, global = true)]
    log: Option<PathBuf>,
    /// Log line format.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Log debug messages.
    #[arg(long, global = true)]
    debug: bool,
    /// Accepted for compatibility: systemd-style cgroupsPath values (slice:prefix:name) are
    /// always understood and created through the cgroup filesystem.
    #[arg(long, global = true)]
    systemd_cgroup: bool,
    /// Accepted for compatibility (true|false|auto; before the command).
    #[arg(long = "rootless", id = "global_rootless")]
    global_rootless: Option<String>,
    /// Print the version.
    #[arg(short = 'v', long)]
    version: bool,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Debug, clap::Args)]
struct CreateArgs {
    /// Bundle directory.
    #[arg(short = 'b', long, default_value = ".")]
    bundle: PathBuf,
    /// Unix socket to send the terminal's master to.
    #[arg(long)]
    console_socket: Option<PathBuf>,
    /// File to write the init's pid to.
    #[arg(long)]
    pid_file: Option<PathBuf>,
    /// Use MS_MOVE and chroot instead of pivot_root.
    #[arg(long)]
    no_pivot: bool,
    /// Accepted for compatibility (no session keyring is created).
    #[arg(long)]
    no_new_keyring: bool,
    /// Number of extra descriptors (3, 4, ...) passed to the init.
    #[arg(long, default_value_t = 0)]
    preserve_fds: u32,
    /// Container id.
    id: String,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Create a container (its process waits for `start`).
    Create(CreateArgs),
    /// Start a created container's process.
    Start { id: String },
    /// Create, start and wait for a container; exit with its exit code.
    Run {
        #[command(flatten)]
        create: CreateArgs,
        /// Return once it runs.
        #[arg(short = 'd', long)]
        detach: bool,
        /// Keep the container after it exits.
        #[arg(long)]
        keep: bool,
    },
    /// Print a container's state as JSON.
    State { id: String },
    /// List containers.
    List {
        /// table or json.
        #[arg(short = 'f', long, default_value = "table")]
        format: String,
        /// Print ids only.
        #[arg(short = 'q', long)]
        quiet: bool,
    },
    /// Send a signal to a container's init (or every process with --all).
    Kill {
        #[arg(short = 'a', long)]
        all: bool,
        id: String,
        /// TERM, SIGTERM or 15.
        #[arg(default_value = "SIGTERM")]
        signal: String,
    },
    /// Delete a container.
    Delete {
        /// Kill it if it still runs.
        #[arg(short = 'f', long)]
        force: bool,
        id: String,
    },
    /// Run a process in a container.
    Exec(exec::ExecArgs),
    /// Freeze a container.
    Pause { id: String },
    /// Thaw a container.
    Resume { id: String },
    /// List a container's processes.
    Ps {
        /// table or json.
        #[arg(short = 'f', long, default_value = "table")]
        format: String,
        id: String,
        /// Ignored (runc passes these to ps).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        ps_args: Vec<String>,
    },
    /// Change a container's resource limits (runc's flags, or --resources FILE|-).
    Update(update::UpdateArgs),
    /// Print the OCI features document.
    Features,
    /// Write a default config.json.
    Spec {
        /// Like runc spec --rootless: a user namespace mapping container root to --uid-base.
        #[arg(long)]
        rootless: bool,
        /// Bundle directory.
        #[arg(short = 'b', long, default_value = ".")]
        bundle: PathBuf,
        /// Host uid of container uid 0 with --rootless (default: the caller's).
        #[arg(long)]
        uid_base: Option<u32>,
        /// Host gid of container gid 0 with --rootless (default: the caller's).
        #[arg(long)]
        gid_base: Option<u32>,
        /// Number of ids mapped with --rootless.
        #[arg(long, default_value_t = 1)]
        id_count: u32,
    },
}

/// A signal number from a number or a name, real-time signals included (podman stops a
/// systemd container with `kill ID 37`, SIGRTMIN+3).
fn parse_signal(s: &str) -> Result<i32> {
    vessel_container::parse_signal(s).with_context(|| format!("{s:?} is not a signal"))
}

fn print_json(v: &impl serde::Serialize) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v)?;
    writeln!(out)?;
    Ok(())
}

/// Creates the container; returns its init's pid and, with `proxy`, the master of the pty
/// allocated for it.
fn create(
    cli: &Cli,
    args: &CreateArgs,
    proxy: bool,
) -> Result<(i32, Option<std::os::fd::OwnedFd>)> {
    let mut opts = CreateOptions::new(args.id.clone(), args.bundle.clone());
    opts.state_root = cli.root.clone();
    opts.pid_file = args.pid_file.clone();
    opts.preserve_fds = args.preserve_fds;
    opts.no_pivot = args.no_pivot;
    let mut master = None;
    if let Some(sock) = &args.console_socket {
        opts.console = Console::Socket(sock.clone());
    } else if proxy {
        let spec = oci_spec::runtime::Spec::load(args.bundle.join("config.json"))
            .with_context(|| format!("loading {}/config.json", args.bundle.display()))?;
        if spec.process().as_ref().and_then(|p| p.terminal()) == Some(true) {
            let pty = supervise::allocate_pty()?;
            master = Some(pty.master);
            opts.console = Console::Pty(pty.slave);
        }
        opts.spec = Some(spec);
    }
    let state = vessel_container::create(opts)?;
    Ok((state.pid, master))
}

fn run(cli: &Cli) -> Result<i32> {
    let Some(cmd) = &cli.cmd else {
        bail!("no command given: see vessel-runc --help");
    };
    let root = cli.root.as_path();
    match cmd {
        Cmd::Create(args) => {
            create(cli, args, false)?;
        }
        Cmd::Start { id } => vessel_container::start(root, id)?,
        Cmd::Run {
            create: args,
            detach,
            keep,
        } => {
            if !detach {
                supervise::block_signals()?;
            }
            let (pid, master) = create(cli, args, !detach)?;
            let started = vessel_container::start(root, &args.id);
            if let Err(e) = started {
                let _ = vessel_container::delete(root, &args.id, true);
                return Err(e.into());
            }
            if *detach {
                return Ok(0);
            }
            // The pid from create: the state reads 0 once a quick process has exited.
            let code = supervise::wait(nix::unistd::Pid::from_raw(pid), master)?;
            if !keep {
                vessel_container::delete(root, &args.id, true)?;
            }
            return Ok(code);
        }
        Cmd::State { id } => print_json(&vessel_container::state(root, id)?)?,
        Cmd::List { format, quiet } => {
            let states: Vec<_> = vessel_container::list(root)?
                .into_iter()
                .filter_map(|s| match s {
                    Ok(s) => Some(s),
                    Err(e) => {
                        tracing::warn!(error = %e.chain(), "skipping a container");
                        None
                    }
                })
                .collect();
            if *quiet {
                for s in &states {
                    println!("{}", s.id);
                }
            } else if format == "json" {
                print_json(&states)?;
            } else {
                println!(
                    "{:<24} {:<8} {:<10} {:<40} CREATED",
                    "ID", "PID", "STATUS", "BUNDLE"
                );
                for s in &states {
                    println!(
                        "{:<24} {:<8} {:<10} {:<40} {}",
                        s.id,
                        s.pid,
                        s.status,
                        s.bundle.display(),
                        s.created
                    );
                }
            }
        }
        Cmd::Kill { all, id, signal } => {
            vessel_container::kill(root, id, parse_signal(signal)?, *all)?
        }
        Cmd::Delete { force, id } => match vessel_container::delete(root, id, *force) {
            // Like runc: forcing the deletion of what is already gone succeeds.
            Err(vessel_container::Error::NotFound { .. }) if *force => {}
            r => r?,
        },
        Cmd::Exec(args) => return exec::run(root, args),
        Cmd::Pause { id } => vessel_container::pause(root, id)?,
        Cmd::Resume { id } => vessel_container::resume(root, id)?,
        Cmd::Ps { format, id, .. } => {
            let pids = vessel_container::ps(root, id)?;
            if format == "json" {
                print_json(&pids)?;
            } else {
                println!("{:>8} CMD", "PID");
                for pid in pids {
                    let cmd = std::fs::read(format!("/proc/{pid}/cmdline"))
                        .map(|b| {
                            String::from_utf8_lossy(&b)
                                .replace('\0', " ")
                                .trim()
                                .to_string()
                        })
                        .unwrap_or_default();
                    println!("{pid:>8} {cmd}");
                }
            }
        }
        Cmd::Update(args) => vessel_container::update(root, &args.id, &update::resources(args)?)?,
        Cmd::Features => print_json(&vessel_container::features())?,
        Cmd::Spec {
            rootless,
            bundle,
            uid_base,
            gid_base,
            id_count,
        } => write_spec(bundle, *rootless, *uid_base, *gid_base, *id_count)?,
    }
    Ok(0)
}

fn write_spec(
    bundle: &Path,
    rootless: bool,
    uid: Option<u32>,
    gid: Option<u32>,
    count: u32,
) -> Result<()> {
    let path = bundle.join("config.json");
    if path.exists() {
        bail!("{} already exists: remove it first", path.display());
    }
    let opts = SpecOptions {
        terminal: true,
        user_namespace: rootless.then(|| IdMap {
            host_uid_base: uid.unwrap_or_else(|| nix::unistd::geteuid().as_raw()),
            host_gid_base: gid.unwrap_or_else(|| nix::unistd::getegid().as_raw()),
            size: count.max(1),
        }),
        ..SpecOptions::default()
    };
    let spec = default_spec(&opts);
    let data = serde_json::to_vec_pretty(&spec)?;
    std::fs::write(&path, data).with_context(|| format!("writing {}", path.display()))
}

fn main() {
    let cli = Cli::parse();
    if cli.version {
        println!("vessel-runc version {}", env!("CARGO_PKG_VERSION"));
        println!("spec: {}", vessel_container::OCI_VERSION);
        return;
    }
    let log = match Log::init(cli.log.as_deref(), cli.log_format, cli.debug) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("vessel-runc: {e:#}");
            std::process::exit(1);
        }
    };
    let _ = cli.systemd_cgroup;
    match run(&cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            let msg = match e.downcast_ref::<vessel_container::Error>() {
                Some(err) => err.chain(),
                None => format!("{e:#}"),
            };
            log.error(&msg);
            eprintln!("vessel-runc: {msg}");
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse() {
        assert_eq!(parse_signal("TERM").unwrap(), libc::SIGTERM);
        assert_eq!(parse_signal("SIGKILL").unwrap(), libc::SIGKILL);
        assert_eq!(parse_signal("kill").unwrap(), libc::SIGKILL);
        assert_eq!(parse_signal("9").unwrap(), libc::SIGKILL);
        assert_eq!(parse_signal("37").unwrap(), libc::SIGRTMIN() + 3);
        assert_eq!(parse_signal("SIGRTMIN+3").unwrap(), libc::SIGRTMIN() + 3);
        assert!(parse_signal("NOPE").is_err());
    }

    #[test]
    fn status_display() {
        assert_eq!(vessel_container::Status::Running.to_string(), "running");
    }
}
