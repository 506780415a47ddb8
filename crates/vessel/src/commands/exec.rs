//! `exec`, `console` and `logs`.

use std::io::{IsTerminal, Read};

use anyhow::{bail, Context, Result};
use vessel_api::ExecRequest;

use super::instance_path;
use crate::cli::ExecArgs;
use crate::client::{Client, RequestBody};
use crate::limits::parse_env;
use crate::output::write_stdout;
use crate::session::{self, Options, Outcome};
use crate::terminal::{self, RawMode};

/// Parses `--user UID[:GID]` into ids; `None` when either side is a name, which the daemon
/// looks up in the instance's own /etc/passwd and /etc/group.
pub fn parse_user(user: &str) -> Result<Option<(u32, Option<u32>)>> {
    let (uid, gid) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    if uid.is_empty() || gid.is_some_and(str::is_empty) {
        anyhow::bail!("invalid --user '{user}': use NAME, UID, NAME:GROUP or UID:GID");
    }
    let (Ok(u), Ok(g)) = (uid.parse::<u32>(), gid.map(str::parse::<u32>).transpose()) else {
        return Ok(None);
    };
    Ok(Some((u, g)))
}

/// `exec`.
pub fn exec(client: &Client, args: ExecArgs) -> Result<i32> {
    let environment = parse_env(&args.env)?;
    let (uid, gid, user) = match &args.user {
        Some(u) => match parse_user(u)? {
            Some((uid, gid)) => (Some(uid), gid, None),
            None => (None, None, Some(u.clone())),
        },
        None => (None, None, None),
    };
    let stdin_tty = std::io::stdin().is_terminal();
    let tty = if args.tty {
        true
    } else if args.no_tty {
        false
    } else {
        stdin_tty && std::io::stdout().is_terminal()
    };
    let size = if tty {
        terminal::size(libc::STDOUT_FILENO).or_else(|| terminal::size(libc::STDIN_FILENO))
    } else {
        None
    };
    let req = ExecRequest {
        command: args.command,
        environment,
        cwd: args.cwd,
        tty,
        width: size.map(|(c, _)| c),
        height: size.map(|(_, r)| r),
        uid,
        user,
        gid,
    };
    let conn = client.upgrade(
        "POST",
        &format!("{}/exec", instance_path(&args.name)),
        Some(&req),
    )?;
    let raw = if tty && stdin_tty {
        Some(RawMode::enable().context("cannot put the terminal in raw mode")?)
    } else {
        None
    };
    let outcome = session::run(
        conn,
        Options {
            resize: tty,
            forward_signals: true,
            signals: true,
            detach_keys: false,
        },
        Box::new(std::io::stdin()),
        Box::new(std::io::stdout()),
        Box::new(std::io::stderr()),
    );
    drop(raw);
    match outcome? {
        Outcome::Exit(code) => Ok(code),
        Outcome::Interrupted(sig) => Ok(128 + sig),
        Outcome::Detached => Ok(0),
        Outcome::Closed => {
            bail!("the daemon closed the stream before the command's exit status arrived")
        }
    }
}

/// `console`.
pub fn console(client: &Client, name: &str) -> Result<i32> {
    let conn = client.upgrade::<()>("GET", &format!("{}/console", instance_path(name)), None)?;
    eprintln!("To detach: Ctrl-a q");
    let raw = if std::io::stdin().is_terminal() {
        Some(RawMode::enable().context("cannot put the terminal in raw mode")?)
    } else {
        None
    };
    let outcome = session::run(
        conn,
        Options {
            resize: true,
            forward_signals: false,
            signals: true,
            detach_keys: true,
        },
        Box::new(std::io::stdin()),
        Box::new(std::io::stdout()),
        Box::new(std::io::stderr()),
    );
    drop(raw);
    match outcome? {
        Outcome::Detached | Outcome::Interrupted(_) => eprintln!(),
        Outcome::Exit(_) | Outcome::Closed => {
            eprintln!("\nThe console closed: {name} stopped or the daemon went away.")
        }
    }
    Ok(0)
}

/// `console --type vga`: serves a full-profile VM's screen (its VNC stream, through the
/// daemon) on a local TCP port until interrupted; every viewer that connects gets its own
/// stream.
pub fn vga(client: &Client, name: &str, listen: &str) -> Result<i32> {
    let path = format!("{}/vnc", instance_path(name));
    // Ask once up front, so that a container or a VM without a display fails at once.
    let first = client.upgrade_to::<()>("GET", &path, None, vessel_api::stream::RAW_PROTOCOL)?;
    let listener = std::net::TcpListener::bind(listen)
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr().context("the listening address")?;
    eprintln!(
        "The screen of {name} is served on {addr}: connect a VNC viewer to it \
         (e.g. `vncviewer {addr}`, or remmina/tigervnc). Ctrl-C stops."
    );
    let mut pending = Some(first);
    for conn in listener.incoming() {
        let tcp = match conn {
            Ok(t) => t,
            Err(e) => {
                eprintln!("accepting a viewer: {e}");
                continue;
            }
        };
        let up = match pending.take() {
            Some(u) => u,
            None => {
                match client.upgrade_to::<()>("GET", &path, None, vessel_api::stream::RAW_PROTOCOL)
                {
                    Ok(u) => u,
                    Err(e) => {
                        eprintln!("{e:#}");
                        continue;
                    }
                }
            }
        };
        std::thread::spawn(move || splice(tcp, up));
    }
    Ok(0)
}

/// Copies bytes both ways between a viewer and the daemon's stream until either side ends.
fn splice(tcp: std::net::TcpStream, up: crate::client::Upgraded) {
    let crate::client::Upgraded {
        mut reader,
        mut writer,
    } = up;
    let (Ok(mut from_viewer), Ok(mut to_viewer)) = (tcp.try_clone(), tcp.try_clone()) else {
        return;
    };
    let down = std::thread::spawn(move || {
        let _ = std::io::copy(&mut reader, &mut to_viewer);
        let _ = to_viewer.shutdown(std::net::Shutdown::Both);
    });
    let _ = std::io::copy(&mut from_viewer, &mut writer);
    let _ = writer.shutdown(std::net::Shutdown::Both);
    let _ = down.join();
}

/// `logs`: everything kept, or the last `tail` lines; with `follow`, new output as it comes
/// until the instance stops.
pub fn logs(client: &Client, name: &str, tail: Option<usize>, follow: bool) -> Result<i32> {
    let mut query = Vec::new();
    if let Some(n) = tail {
        query.push(format!("tail={n}"));
    }
    if follow {
        query.push("follow=1".to_string());
    }
    let mut path = format!("{}/logs", instance_path(name));
    if !query.is_empty() {
        path = format!("{path}?{}", query.join("&"));
    }
    let mut resp = client.request("GET", &path, RequestBody::Empty)?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = resp.body.read(&mut buf).context("cannot read the logs")?;
        if n == 0 {
            return Ok(0);
        }
        write_stdout(&buf[..n])?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids() {
        assert_eq!(parse_user("1000").unwrap(), Some((1000, None)));
        assert_eq!(parse_user("1000:100").unwrap(), Some((1000, Some(100))));
        assert_eq!(parse_user("alice").unwrap(), None);
        assert_eq!(parse_user("1:x").unwrap(), None);
        assert!(parse_user("").is_err());
        assert!(parse_user("a:").is_err());
    }
}
