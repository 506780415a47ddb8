//! `vessel-runc exec`: builds the process from `--process` or from the container's spec and
//! the flags, runs it, and waits for it unless `--detach`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use oci_spec::runtime::{Capabilities, Capability, Process};
use vessel_container::{Console, ExecOptions};

use crate::supervise;

/// Flags of `exec`.
#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// Allocate a terminal for the process.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Return once the process runs instead of waiting for it.
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Unix socket to send the terminal's master to.
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
    /// File to write the process's pid to.
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    /// JSON file with the OCI process to run (the other process flags are then ignored).
    #[arg(short = 'p', long)]
    pub process: Option<PathBuf>,
    /// Working directory in the container.
    #[arg(long)]
    pub cwd: Option<PathBuf>,
    /// Environment variable (KEY=value), repeatable.
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    /// UID[:GID] to run as.
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// Additional group ids, repeatable.
    #[arg(short = 'g', long = "additional-gids")]
    pub additional_gids: Vec<u32>,
    /// Capability to add (CAP_NET_ADMIN or NET_ADMIN), repeatable.
    #[arg(long = "cap")]
    pub caps: Vec<String>,
    /// Set no_new_privs for the process.
    #[arg(long)]
    pub no_new_privs: bool,
    /// Number of extra descriptors (3, 4, ...) passed to the process.
    #[arg(long, default_value_t = 0)]
    pub preserve_fds: u32,
    /// Accepted for compatibility; AppArmor is not supported.
    #[arg(long)]
    pub apparmor: Option<String>,
    /// Accepted for compatibility; SELinux is not supported.
    #[arg(long = "process-label")]
    pub process_label: Option<String>,
    /// Container id.
    pub id: String,
    /// Command and arguments (without --process).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

fn parse_cap(name: &str) -> Result<Capability> {
    let full = if name.starts_with("CAP_") {
        name.to_string()
    } else {
        format!("CAP_{name}")
    };
    serde_json::from_value(serde_json::Value::String(full.to_uppercase()))
        .with_context(|| format!("unknown capability {name:?}"))
}

fn build_process(root: &std::path::Path, args: &ExecArgs) -> Result<Process> {
    if let Some(path) = &args.process {
        let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        return serde_json::from_slice(&data)
            .with_context(|| format!("parsing the process in {}", path.display()));
    }
    if args.command.is_empty() {
        bail!("exec needs a command or --process FILE");
    }
    let spec = vessel_container::container_spec(root, &args.id)?;
    let mut p = spec
        .process()
        .clone()
        .context("the container's spec has no process")?;
    p.set_args(Some(args.command.clone()));
    p.set_terminal(Some(args.tty));
    let mut env = p.env().clone().unwrap_or_default();
    for e in &args.env {
        let key = e.split('=').next().unwrap_or_default();
        env.retain(|x| x.split('=').next() != Some(key));
        env.push(e.clone());
    }
    p.set_env(Some(env));
    if let Some(cwd) = &args.cwd {
        p.set_cwd(cwd.clone());
    }
    if let Some(user) = &args.user {
        let (uid, gid) = user.split_once(':').unwrap_or((user, "0"));
        let uid: u32 = uid
            .parse()
            .with_context(|| format!("--user {user:?}: UID must be a number"))?;
        let gid: u32 = gid
            .parse()
            .with_context(|| format!("--user {user:?}: GID must be a number"))?;
        p.user_mut().set_uid(uid);
        p.user_mut().set_gid(gid);
    }
    if !args.additional_gids.is_empty() {
        p.user_mut()
            .set_additional_gids(Some(args.additional_gids.clone()));
    }
    if !args.caps.is_empty() {
        let mut caps = p.capabilities().clone().unwrap_or_default();
        let add = |set: &Option<Capabilities>, extra: &[Capability]| {
            let mut s = set.clone().unwrap_or_default();
            s.extend(extra.iter().copied());
            Some(s)
        };
        let extra: Vec<Capability> = args
            .caps
            .iter()
            .map(|c| parse_cap(c))
            .collect::<Result<_>>()?;
        caps.set_bounding(add(caps.bounding(), &extra));
        caps.set_effective(add(caps.effective(), &extra));
        caps.set_permitted(add(caps.permitted(), &extra));
        p.set_capabilities(Some(caps));
    }
    if args.no_new_privs {
        p.set_no_new_privileges(Some(true));
    }
    Ok(p)
}

/// Runs `exec`; returns the exit code vessel-runc should exit with.
pub fn run(root: &std::path::Path, args: &ExecArgs) -> Result<i32> {
    let process = build_process(root, args)?;
    let terminal = process.terminal() == Some(true);
    let mut proxy = None;
    let console = match (&args.console_socket, terminal) {
        (Some(sock), true) => Console::Socket(sock.clone()),
        (Some(_), false) => bail!("--console-socket needs a terminal (--tty or terminal: true)"),
        (None, true) if args.detach => {
            bail!("a detached process with a terminal needs --console-socket")
        }
        (None, true) => {
            let pty = supervise::allocate_pty()?;
            proxy = Some(pty.master);
            Console::Pty(pty.slave)
        }
        (None, false) => Console::Inherit,
    };
    if !args.detach {
        supervise::block_signals()?;
    }
    let opts = ExecOptions {
        process,
        console,
        pid_file: args.pid_file.clone(),
        preserve_fds: args.preserve_fds,
    };
    let pid = vessel_container::exec(root, &args.id, opts)?;
    if args.detach {
        return Ok(0);
    }
    supervise::wait(pid, proxy)
}
