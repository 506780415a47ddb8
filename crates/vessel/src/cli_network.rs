//! `vessel network ...`: the command line of networks, NICs, forwards and ACLs.

use std::path::PathBuf;

use clap::Subcommand;

use crate::output::Format;

const NETWORK_EXAMPLES: &str = "\
A network is a bridge with DHCP and DNS (instance names resolve as NAME and
NAME.NETWORK.vessel; containers get it as their resolver), outbound NAT and published ports;
with --vni it also joins a VXLAN overlay to the given peers. The network `default` (made by
the daemon's first start or `vessel admin init`) is the one new instances get.

Examples:
  vessel network create lan --subnet 10.48.0.0/24
  vessel network create dual --subnet 10.44.0.0/24 --ipv6 fd44::/64
  vessel network create ov --subnet 10.50.0.0/24 --vni 5001 --local \"$(hostname -I | cut -d' ' -f1)\" --peer 192.0.2.2
  vessel create busybox web --no-network && vessel network attach lan web && vessel start web
  vessel network attach lan db --ip 10.48.0.20
  vessel network forward add lan --port 8080 --to web:80
  vessel network acl set lan --rules 'deny ingress tcp port 22'
  vessel network create seg --subnet 10.60.0.0/24 --vlan 10 --vlan 20
  vessel network attach seg app --vlan 10       # layer 2 only: no gateway, DHCP or NAT
  vessel network create pods --subnet 10.61.0.0/24 --isolated-ports";

/// `vessel network ...`
#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    /// Create a network.
    #[command(after_help = NETWORK_EXAMPLES)]
    Create {
        /// Name (1-11 characters; the bridge is vbr-NAME).
        name: String,
        /// IPv4 subnet, e.g. 10.48.0.0/24 (the first address is the gateway).
        #[arg(long)]
        subnet: String,
        /// IPv6 prefix, a /64 such as fd42::/64 (dual stack: SLAAC, AAAA names, NAT66).
        #[arg(long, value_name = "PREFIX")]
        ipv6: Option<String>,
        /// VXLAN overlay id (4096-16777215).
        #[arg(long)]
        vni: Option<u32>,
        /// This host's underlay address (overlays): one of the host's own addresses.
        #[arg(long)]
        local: Option<String>,
        /// Another host of the overlay (repeatable).
        #[arg(long = "peer", value_name = "ADDR")]
        peers: Vec<String>,
        /// A VLAN segment (1-4094, repeatable): its own broadcast domain, layer 2 only.
        #[arg(long = "vlan", value_name = "ID")]
        vlans: Vec<u16>,
        /// Isolate NIC ports from each other (they still reach the gateway).
        #[arg(long)]
        isolated_ports: bool,
        /// On a member of a cluster: a cluster network, on every member (a VXLAN overlay
        /// whose peers follow membership, addresses unique across members, names resolved
        /// on all).
        #[arg(long, conflicts_with_all = ["vni", "local", "peers", "vlans"])]
        cluster: bool,
        /// Free text.
        #[arg(long, default_value = "")]
        description: String,
        /// A label, `user.KEY=VALUE` (repeatable).
        #[arg(short = 'c', long = "config", value_name = "user.KEY=VALUE")]
        config: Vec<String>,
    },
    /// List networks.
    #[command(visible_alias = "ls")]
    List {
        /// `REMOTE:` lists a remote's instead of the default remote's.
        #[arg(value_name = "REMOTE:", value_parser = crate::remote::parse_remote_only)]
        _remote: Option<String>,
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
    /// Give an instance a NIC on the network (a running container gets it at once; a VM
    /// must be stopped).
    #[command(
        after_help = "Examples:\n  vessel network attach lan web\n  vessel network attach lan db --ip 10.48.0.20 --ingress 100Mbit --egress 20Mbit\n  vessel network attach seg app --vlan 10"
    )]
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
        /// VLAN segment of the network.
        #[arg(long)]
        vlan: Option<u16>,
        /// Rate limit into the instance, e.g. 10Mbit (units: bit, kbit, Mbit, Gbit).
        #[arg(long)]
        ingress: Option<String>,
        /// Rate limit out of the instance, e.g. 10Mbit.
        #[arg(long)]
        egress: Option<String>,
    },
    /// Remove an instance's NIC (at once from a running container; a VM must be stopped).
    Detach {
        /// Network.
        network: String,
        /// Instance.
        instance: String,
    },
    /// Change a NIC's bandwidth limits, applied at once: only the directions named change
    /// (`none` lifts one); with neither, show them.
    #[command(
        after_help = "Examples:\n  vessel network limits lan web --ingress 50Mbit --egress 10Mbit\n  vessel network limits lan web --ingress 20Mbit      # egress stays 10Mbit\n  vessel network limits lan web --egress none         # lift the egress limit\n  vessel network limits lan web                       # show them"
    )]
    Limits {
        /// Network.
        network: String,
        /// Instance.
        instance: String,
        /// Into the instance, e.g. 50Mbit, or none.
        #[arg(long)]
        ingress: Option<String>,
        /// Out of the instance, e.g. 10Mbit, or none.
        #[arg(long)]
        egress: Option<String>,
    },
    /// L4 load balancers.
    #[command(subcommand, name = "lb")]
    Lb(LbCommand),
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
    /// Publish a host port to an instance port: it answers other hosts, the host itself
    /// (127.0.0.1, the gateway, any of its addresses) and instances of the network through
    /// the host's addresses, like Docker's published ports.
    #[command(
        after_help = "Examples:\n  vessel network forward add lan --port 8080 --to web:80\n  vessel network forward add lan --port 5353 --to web:53 --protocol udp\n  vessel network forward add lan --port 8443 --to web:443 --address 192.0.2.1"
    )]
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
        /// Host address to match: one of this host's (default: any of them).
        #[arg(long)]
        address: Option<String>,
    },
    /// Remove a published port.
    #[command(
        visible_alias = "rm",
        after_help = "Examples:\n  vessel network forward delete lan --port 8080\n  vessel network forward delete lan --port 5353 --protocol udp\n\nThe older form `vessel network forward delete lan tcp 8080` still works but is deprecated:\nuse --port and --protocol, as `forward add` does."
    )]
    Delete {
        /// Network.
        network: String,
        /// Host port.
        #[arg(long)]
        port: Option<u16>,
        /// tcp or udp.
        #[arg(long, default_value = "tcp")]
        protocol: String,
        /// Deprecated: the protocol as a word before the port (`tcp 8080`).
        #[arg(value_name = "PROTOCOL", hide = true)]
        legacy_protocol: Option<String>,
        /// Deprecated: the port after the protocol word.
        #[arg(value_name = "PORT", hide = true)]
        legacy_port: Option<u16>,
    },
    /// List published ports (of one network, or of all).
    #[command(
        visible_alias = "ls",
        after_help = "Examples:\n  vessel network forward list\n  vessel network forward list lan --format json"
    )]
    List {
        /// Network (default: every network).
        network: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}

/// `vessel network lb ...`
#[derive(Debug, Subcommand)]
pub enum LbCommand {
    /// Spread a listening address's ports over instances; backends failing a TCP health
    /// check get no new flows until they answer again.
    #[command(
        after_help = "Examples:\n  vessel network lb add lan web --address 192.0.2.10 --port tcp:80:8080 --backend web1 --backend web2\n  vessel network lb add lan dns --address 192.0.2.10 --port udp:53:53 --backend ns1 --backend ns2 --check-port 53"
    )]
    Add {
        /// Network.
        network: String,
        /// Balancer name (1-20 letters, digits, '-', '_').
        name: String,
        /// Address clients connect to: one of this host's (`hostname -I`).
        #[arg(long)]
        address: String,
        /// PROTOCOL:LISTEN:TARGET, e.g. tcp:80:8080 (repeatable).
        #[arg(long = "port", value_name = "PROTO:LISTEN:TARGET", required = true)]
        ports: Vec<String>,
        /// An instance on the network (repeatable).
        #[arg(long = "backend", value_name = "INSTANCE", required = true)]
        backends: Vec<String>,
        /// Milliseconds between health probes.
        #[arg(long, default_value_t = 2000)]
        check_interval_ms: u64,
        /// Probe timeout in milliseconds.
        #[arg(long, default_value_t = 1000)]
        check_timeout_ms: u64,
        /// Successes in a row that bring a backend back.
        #[arg(long, default_value_t = 2)]
        rise: u32,
        /// Failures in a row that take a backend out.
        #[arg(long, default_value_t = 2)]
        fall: u32,
        /// TCP port to probe instead of each target port (needed for UDP).
        #[arg(long)]
        check_port: Option<u16>,
    },
    /// Remove a load balancer.
    #[command(visible_alias = "rm")]
    Delete {
        /// Network.
        network: String,
        /// Balancer name.
        name: String,
    },
}

/// `vessel network acl ...`
#[derive(Debug, Subcommand)]
pub enum AclCommand {
    /// Replace the network's rules (all or nothing).
    #[command(
        after_help = "Rules, one per line:\n  allow|deny ingress|egress [tcp|udp|icmp|any] [port N[-M]] [from CIDR|@INSTANCE] [to CIDR|@INSTANCE]\nSee docs/networking.md.\n\nExamples:\n  vessel network acl set lan --rules 'deny ingress tcp port 22'\n  vessel network acl set lan --file lan.acl\n  vessel network acl set lan --rules ''        # no rules\n  vessel network acl set lan --instance db --file db.acl   # db's NIC only"
    )]
    Set {
        /// Network.
        network: String,
        /// Set the rules of this instance's NIC instead (checked before the network's).
        #[arg(long)]
        instance: Option<String>,
        /// Rules text.
        #[arg(long, conflicts_with = "file")]
        rules: Option<String>,
        /// A file of rules.
        #[arg(long)]
        file: Option<PathBuf>,
    },
}
