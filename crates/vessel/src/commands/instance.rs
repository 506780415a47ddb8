//! `launch`, `create`, lifecycle changes (`start`, `stop`, ...) and `delete`.

use anyhow::Result;
use vessel_api::{InstanceCreate, InstanceType, Operation, StateAction, StateChange};

use super::{for_each_name, instance_path};
use crate::cli::CreateArgs;
use crate::client::{Client, RequestBody};
use crate::limits::{parse_env, parse_limits};
use crate::operation;
use crate::output::println;

/// `launch` (with `start`) and `create`.
pub fn create(client: &Client, args: CreateArgs, start: bool) -> Result<i32> {
    // Everything the user typed is checked before the daemon hears of it.
    let path = match &args.target {
        Some(member) => format!(
            "/1.0/instances?target={}",
            crate::encode::encode_segment(member)
        ),
        None => "/1.0/instances".to_string(),
    };
    let body = InstanceCreate {
        limits: parse_limits(&args.limits)?,
        environment: parse_env(&args.env)?,
        ssh_keys: read_ssh_keys(&args.ssh_keys)?,
        name: args.name,
        image: args.image,
        instance_type: if args.vm {
            InstanceType::Vm
        } else {
            InstanceType::Container
        },
        privileged: args.privileged,
        idmap_isolated: args.idmap_shared.then_some(false),
        storage: args.storage,
        networks: args.networks,
        no_network: args.no_network,
        profiles: args.profiles,
        volumes: Vec::new(),
        config: crate::commands::config::key_values(&args.config)?,
        start,
        command: (!args.command.is_empty()).then_some(args.command),
    };
    let verb = if start { "Launching" } else { "Creating" };
    println(format!("{verb} {}", body.name))?;
    let op: Operation = client.send("POST", &path, &body)?;
    operation::wait(client, op)?;
    Ok(0)
}

/// `resize NAME SIZE`.
pub fn resize(client: &Client, name: &str, size: &str) -> Result<i32> {
    let size = crate::limits::parse_size(size)
        .map_err(|e| anyhow::anyhow!("invalid size '{size}': {e}"))?;
    if size == 0 {
        anyhow::bail!("invalid size 0: a root disk needs a size (e.g. 4GiB)");
    }
    println(format!("Resizing the root disk of {name}"))?;
    let op: Operation = client.send(
        "PUT",
        &format!("{}/root-disk", instance_path(name)),
        &vessel_api::RootDiskResize { size },
    )?;
    operation::wait(client, op)?;
    Ok(0)
}

/// A lifecycle change asked for on the command line.
#[derive(Debug, Clone, Copy)]
pub enum Change {
    Start,
    Stop { force: bool, timeout: Option<u64> },
    Restart { force: bool, timeout: Option<u64> },
    Pause,
    Resume,
}

impl Change {
    fn body(self) -> StateChange {
        let (action, force, timeout) = match self {
            Self::Start => (StateAction::Start, false, None),
            Self::Stop { force, timeout } => (StateAction::Stop, force, timeout),
            Self::Restart { force, timeout } => (StateAction::Restart, force, timeout),
            Self::Pause => (StateAction::Pause, false, None),
            Self::Resume => (StateAction::Resume, false, None),
        };
        StateChange {
            action,
            timeout,
            force,
        }
    }
}

/// `start`, `stop`, `restart`, `pause`, `resume`.
pub fn change_state(client: &Client, names: &[String], change: Change) -> Result<i32> {
    let body = change.body();
    for_each_name(names, |name| {
        let op: Operation = client.send("PUT", &format!("{}/state", instance_path(name)), &body)?;
        operation::wait(client, op)?;
        Ok(())
    })
}

/// `delete`.
pub fn delete(client: &Client, names: &[String], force: bool, volumes: bool) -> Result<i32> {
    for_each_name(names, |name| {
        let mut target = instance_path(name);
        let query: Vec<&str> = [(force, "force=1"), (volumes, "volumes=1")]
            .into_iter()
            .filter_map(|(on, q)| on.then_some(q))
            .collect();
        if !query.is_empty() {
            target.push('?');
            target.push_str(&query.join("&"));
        }
        let op: Operation = client
            .request("DELETE", &target, RequestBody::Empty)?
            .json()?;
        operation::wait(client, op)?;
        Ok(())
    })
}

/// The key lines of SSH public key files (blank lines and comments left out).
fn read_ssh_keys(files: &[std::path::PathBuf]) -> Result<Vec<String>> {
    let mut keys = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f)
            .map_err(|e| anyhow::anyhow!("cannot read SSH key file {}: {e}", f.display()))?;
        keys.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(String::from),
        );
    }
    Ok(keys)
}
