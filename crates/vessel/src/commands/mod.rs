//! One module per group of verbs; each returns the process's exit status.

use std::path::PathBuf;

use anyhow::Result;

use crate::cli::{Cli, Command};
use crate::remote::Config;

mod auth;
mod backup;
mod cluster;
pub mod config;
mod exec;
mod file;
mod image;
mod info;
mod instance;
mod list;
mod monitor;
mod network;
mod operation;
mod plan;
mod profile;
mod remote;
mod snapshot;
mod stack;
mod storage;

/// Runs the parsed command line and returns the exit status. `config` is the client's
/// configuration (read from `config_path`), `routed` the remote that `REMOTE:` prefixes or
/// `--remote` named.
pub fn run(
    cli: Cli,
    config: &Config,
    config_path: Result<PathBuf>,
    routed: Option<String>,
) -> Result<i32> {
    let Cli {
        socket,
        remote: flag,
        project,
        command,
    } = cli;
    if let Command::Remote(cmd) = command {
        return remote::run(cmd, &config_path?, &socket);
    }
    let name = crate::remote::chosen(routed.as_deref().or(flag.as_deref()), config)?;
    let project = project.or_else(|| config.projects.get(name).cloned());
    if let Command::Project(crate::cli_auth::ProjectCommand::Switch { name: p }) = &command {
        return auth::project_switch(&config.client(name, &socket)?, name, p, &config_path?);
    }
    let client = config.client(name, &socket)?.in_project(project.clone());
    if let Command::Backup(crate::cli_backup::BackupCommand::Restore {
        backup,
        name: new_name,
        start,
        store,
        target: Some(t),
    }) = &command
    {
        let p = project.or_else(|| config.projects.get(t.as_str()).cloned());
        let target = config.client(t, &socket)?.in_project(p);
        return backup::restore_to(&client, &target, backup, new_name.as_deref(), *start, store);
    }
    match command {
        Command::Launch(args) => instance::create(&client, args, true),
        Command::Create(args) => instance::create(&client, args, false),
        Command::Start(args) => {
            instance::change_state(&client, &args.names, instance::Change::Start)
        }
        Command::Pause(args) => {
            instance::change_state(&client, &args.names, instance::Change::Pause)
        }
        Command::Resume(args) => {
            instance::change_state(&client, &args.names, instance::Change::Resume)
        }
        Command::Stop(args) => instance::change_state(
            &client,
            &args.names,
            instance::Change::Stop {
                force: args.force,
                timeout: args.timeout,
            },
        ),
        Command::Restart(args) => instance::change_state(
            &client,
            &args.names,
            instance::Change::Restart {
                force: args.force,
                timeout: args.timeout,
            },
        ),
        Command::Delete(args) => instance::delete(&client, &args.names, args.force, args.volumes),
        Command::List(args) => list::run(&client, args.format, args.all_projects),
        // `info REMOTE:` describes that remote's daemon.
        Command::Info(args) => match args.name.filter(|n| !n.is_empty()) {
            Some(name) => info::instance(&client, &name, args.format),
            None => info::server(&client, args.format),
        },
        Command::Exec(args) => exec::exec(&client, args),
        Command::Console(args) => match args.kind {
            crate::cli::ConsoleType::Console => exec::console(&client, &args.name),
            crate::cli::ConsoleType::Vga => exec::vga(&client, &args.name, &args.listen),
        },
        Command::Logs(args) => exec::logs(&client, &args.name, args.tail, args.follow),
        Command::File(cmd) => file::run(&client, cmd),
        Command::Image(cmd) => image::run(&client, cmd),
        Command::Storage(cmd) => storage::run(&client, cmd),
        Command::Network(cmd) => network::run(&client, cmd),
        Command::Admin(crate::cli::AdminCommand::Init { subnet, format }) => {
            network::admin_init(&client, subnet, format)
        }
        Command::Publish { name, alias } => image::publish(&client, &name, alias),
        Command::Export {
            name,
            file,
            snapshots,
        } => snapshot::export(&client, &name, &file, snapshots),
        Command::Import { file, name, start } => {
            snapshot::import(&client, &file, name.as_deref(), start)
        }
        Command::Copy {
            source,
            name,
            start,
        } => snapshot::copy(&client, &source, &name, start),
        Command::Rename { name, new_name } => snapshot::rename(&client, &name, &new_name),
        Command::Move {
            name,
            pool,
            target,
            live,
            cold,
        } => match (pool, target) {
            (Some(pool), _) => snapshot::move_to_pool(&client, &name, &pool),
            (None, Some(target)) => {
                let live = (live || cold).then_some(live);
                snapshot::migrate(&client, &name, &target, live)
            }
            (None, None) => unreachable!("clap requires --pool or --target"),
        },
        Command::Resize { name, size } => instance::resize(&client, &name, &size),
        Command::Operation(cmd) => operation::run(&client, cmd),
        Command::Monitor(args) => monitor::run(&client, args.format),
        Command::Remote(_) => unreachable!("handled above"),
        Command::Auth(cmd) => auth::run(&client, cmd),
        Command::Audit {
            project,
            since,
            limit,
            format,
        } => auth::audit(&client, project, since, limit, format),
        Command::Config(cmd) => config::run(&client, cmd),
        Command::Project(cmd) => auth::project(&client, cmd),
        Command::Profile(cmd) => profile::run(&client, cmd),
        Command::Plan(args) => match (args.command, args.file) {
            (Some(cmd), _) => plan::run(&client, cmd),
            (None, Some(file)) => stack::plan(&client, &file, args.prune, args.format),
            (None, None) => anyhow::bail!(
                "vessel plan needs a stack (-f STACK.yaml) or a subcommand (consolidate, schema); see vessel plan --help"
            ),
        },
        Command::Apply(args) => stack::apply(&client, &args.file, args.prune, args.format),
        Command::Destroy(args) => stack::destroy(&client, &args.file),
        Command::Backup(cmd) => backup::run(&client, cmd),
        Command::Cluster(cmd) => cluster::run(&client, cmd),
        Command::Snapshot(cmd) => snapshot::run(&client, cmd),
    }
}

/// Runs `f` for each name. With one name its error is the command's; with several, each
/// failure is reported with its name, the rest still run, and the status is 1 if any failed.
pub fn for_each_name(names: &[String], mut f: impl FnMut(&str) -> Result<()>) -> Result<i32> {
    if let [name] = names {
        f(name)?;
        return Ok(0);
    }
    let mut status = 0;
    for name in names {
        if let Err(e) = f(name) {
            if crate::is_quiet_stop(&e) {
                return Err(e);
            }
            eprintln!("Error: {name}: {e:#}");
            status = 1;
        }
    }
    Ok(status)
}

/// `/1.0/instances/{name}` with the name percent-encoded.
pub fn instance_path(name: &str) -> String {
    format!("/1.0/instances/{}", crate::encode::encode_segment(name))
}
