//! `vessel network ...`: the command line of networks, NICs, forwards and ACLs.

use std::path::PathBuf;

use clap::Subcommand;

use crate::output::Format;

const NETWORK_EXAMPLES: &str = "\
A network is a bridge with DHCP and DNS (instance names resolve as NAME and
NAME.NETWORK.vessel), outbound NAT and published ports; with --vni it also joins a VXLAN
overlay to the given peers.

Examples:
  vessel network create lan --subnet 10.42.0.0/24
  vessel network create ov --subnet 10.50.0.0/24 --vni 5001 --local 192.0.2.1 --peer 192.0.2.2
  vessel create busybox web && vessel network attach lan web && vessel start web
  vessel network attach lan db --ip 10.42.0.20
  vessel network forward add lan --port 8080 --to web:80
  vessel network acl set lan --rules 'deny ingress tcp port 22'";

/// `vessel network ...`
#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    /// Create a network.
    #[command(after_help = NETWORK_EXAMPLES)]
    Create {
        /// Name (1-11 characters; the bridge is vbr-NAME).
        name: String,
        /// IPv4 subnet, e.g. 10.42.0.0/24 (the first address is the gateway).
        #[arg(long)]
        subnet: String,
        /// VXLAN overlay id (4096-16777215).
        #[arg(long)]
        vni: Option<u32>,
        /// This host's underlay address (overlays).
        #[arg(long)]
        local: Option<String>,
        /// Another host of the overlay (repeatable).
        #[arg(long = "peer", value_name = "ADDR")]
        peers: Vec<String>,
        /// Free text.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List networks.
    #[command(visible_alias = "ls")]
    List {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Show one network with its NICs.
    Info {
        /// Network.
        name: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Delete a network no instance uses.
    #[command(visible_alias = "rm")]
    Delete {
        /// Network.
        name: String,
    },
    /// Give a stopped instance a NIC on the network.
    Attach {
        /// Network.
        network: String,
        /// Instance.
        instance: String,
        /// Static address (default: the next free one).
        #[arg(long)]
        ip: Option<String>,
        /// MAC address (default: allocated).
        #[arg(long)]
        mac: Option<String>,
    },
    /// Remove a stopped instance's NIC.
    Detach {
        /// Network.
        network: String,
        /// Instance.
        instance: String,
    },
    /// Published ports.
    #[command(subcommand)]
    Forward(ForwardCommand),
    /// Access control rules.
    #[command(subcommand)]
    Acl(AclCommand),
}

/// `vessel network forward ...`
#[derive(Debug, Subcommand)]
pub enum ForwardCommand {
    /// Publish a host port to an instance port.
    Add {
        /// Network.
        network: String,
        /// Host port.
        #[arg(long)]
        port: u16,
        /// INSTANCE:PORT.
        #[arg(long)]
        to: String,
        /// tcp or udp.
        #[arg(long, default_value = "tcp")]
        protocol: String,
        /// Host address to match (default: any).
        #[arg(long)]
        address: Option<String>,
    },
    /// Remove a published port.
    #[command(visible_alias = "rm")]
    Delete {
        /// Network.
        network: String,
        /// tcp or udp.
        protocol: String,
        /// Host port.
        port: u16,
    },
}

/// `vessel network acl ...`
#[derive(Debug, Subcommand)]
pub enum AclCommand {
    /// Replace the network's rules (all or nothing).
    #[command(
        after_help = "Rules, one per line:\n  allow|deny ingress|egress [tcp|udp|icmp|any] [port N[-M]] [from CIDR|@INSTANCE] [to CIDR|@INSTANCE]\nSee docs/networking.md.\n\nExamples:\n  vessel network acl set lan --rules 'deny ingress tcp port 22'\n  vessel network acl set lan --file lan.acl\n  vessel network acl set lan --rules ''        # no rules"
    )]
    Set {
        /// Network.
        network: String,
        /// Rules text.
        #[arg(long, conflicts_with = "file")]
        rules: Option<String>,
        /// A file of rules.
        #[arg(long)]
        file: Option<PathBuf>,
    },
}
