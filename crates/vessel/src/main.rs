//! `vessel`, the command line client of the Vessel daemon.
//!
//! It speaks the REST API of `vessel-api` with hyper, over the daemon's unix socket or over
//! HTTPS to a remote daemon whose certificate it pins, waits for asynchronous operations with a progress bar, and carries
//! `exec` and `console` sessions over upgraded connections.

use clap::Parser;

mod cli;
mod cli_network;
mod cli_storage;
mod client;
mod commands;
mod encode;
mod limits;
mod operation;
mod output;
mod session;
mod terminal;
#[cfg(test)]
mod testutil;
mod tls;
mod transport;

/// Whether `e` asks for a quiet stop rather than an error message.
fn is_quiet_stop(e: &anyhow::Error) -> bool {
    e.is::<output::StdoutClosed>() || e.is::<operation::StoppedWaiting>()
}

fn main() {
    let cli = cli::Cli::parse();
    let status = match commands::run(cli) {
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
