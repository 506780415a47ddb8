//! `vessel`, the command line client of the Vessel daemon.
//!
//! It speaks the REST API of `vessel-api` with hyper, over the daemon's unix socket or over
//! HTTPS to a remote daemon whose certificate it pins (see `remote`), waits for asynchronous
//! operations with a progress bar, and carries `exec` and `console` sessions over upgraded
//! connections.

use clap::Parser;

mod cli;
mod cli_auth;
mod cli_backup;
mod cli_cluster;
mod cli_config;
mod cli_network;
mod cli_plan;
mod cli_storage;
mod client;
mod commands;
mod encode;
mod limits;
mod operation;
mod output;
mod remote;
mod session;
mod stack;
mod terminal;
#[cfg(test)]
mod testutil;
mod tls;
mod transport;

/// Whether `e` asks for a quiet stop rather than an error message.
fn is_quiet_stop(e: &anyhow::Error) -> bool {
    e.is::<output::StdoutClosed>() || e.is::<operation::StoppedWaiting>()
}

/// Reads the configuration, takes `REMOTE:` prefixes off the arguments, parses them and runs
/// the command.
fn run() -> anyhow::Result<i32> {
    let config_path = remote::config_path();
    let config = match &config_path {
        Ok(path) => remote::Config::load(path)?,
        // Without a home there are no remotes; `remote` commands will say why.
        Err(_) => remote::Config::default(),
    };
    let routed = remote::route(std::env::args_os().collect(), &config)?;
    let cli = cli::Cli::parse_from(routed.args);
    commands::run(cli, &config, config_path, routed.remote)
}

fn main() {
    let status = match run() {
        Ok(status) => status,
        Err(e) if e.is::<output::StdoutClosed>() => 0,
        Err(e) if e.is::<operation::StoppedWaiting>() => 130,
        Err(e) => {
            eprintln!("Error: {e:#}");
            1
        }
    };
    std::process::exit(status);
}
