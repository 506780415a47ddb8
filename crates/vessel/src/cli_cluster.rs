//! `vessel cluster ...`: several servers as one, on etcd.

use crate::output::Format;

/// Examples of `vessel cluster`.
pub const CLUSTER_EXAMPLES: &str = "Examples:\n  # on the first server (etcd runs on three hosts):\n  vessel cluster init m0 --address 10.0.0.2:8443 --etcd http://10.0.0.2:2379,http://10.0.0.3:2379,http://10.0.0.4:2379\n  vessel cluster add m1              # prints a single-use join token for m1\n  # on the new server:\n  vessel cluster join vessel-join-7b22... --address 10.0.0.3:8443\n  vessel cluster list                # every member: address, state, capacity, last heartbeat\n  vessel cluster place --cpu 1 --memory 1GiB   # where the scheduler would put it, and why\n  vessel cluster evacuate m1         # its instances moved (or stopped) elsewhere\n  vessel cluster restore m1          # and brought back\n  vessel cluster remove m1           # an offline member (--force for an online one)";

/// `vessel cluster ...`.
#[derive(Debug, clap::Subcommand)]
pub enum ClusterCommand {
    /// Make a cluster of this server, its first member. etcd must run already (Debian's
    /// etcd-server); its client URLs are given here and kept.
    Init {
        /// This member's name.
        name: String,
        /// The address the other members reach this server's HTTPS API at (IP:PORT).
        #[arg(long)]
        address: String,
        /// etcd's client URLs, comma-separated (or the option repeated).
        #[arg(long, value_delimiter = ',', required = true)]
        etcd: Vec<String>,
    },
    /// A single-use join token for a new member called NAME (valid an hour by default).
    Add {
        /// The new member's name.
        name: String,
        /// How long the token stays valid (30m, 2h, 1d).
        #[arg(long)]
        lifetime: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Join the cluster a token (from `vessel cluster add NAME` on a member) is from.
    Join {
        /// The join token.
        token: String,
        /// The address the other members reach this server's HTTPS API at (IP:PORT).
        #[arg(long)]
        address: String,
    },
    /// The members: address, state (online while their lease in etcd lives), capacity,
    /// usage and last heartbeat.
    #[command(visible_alias = "ls")]
    List {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// The member the scheduler would choose for a new instance of this size, and why: from
    /// the members' capacity and what their instances ask for (`limits.cpu`,
    /// `limits.memory`), online members only.
    Place {
        /// Cores the instance asks for.
        #[arg(long, default_value = "0")]
        cpu: String,
        /// Memory it asks for, e.g. 512MiB.
        #[arg(long, default_value = "0")]
        memory: String,
        /// `spread` (the most room left) or `binpack` (the least room that fits); default:
        /// the cluster's policy.
        #[arg(long)]
        policy: Option<String>,
        /// Its placement group (`cluster.group`): no member holding one of the group.
        #[arg(long)]
        group: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// How new instances are placed: `spread` (the member with the most room left, the
    /// default) or `binpack` (the one with the least room that fits). Without a value, the
    /// cluster's policy now. Instances with the same `cluster.group` never share a member.
    Policy {
        /// `spread` or `binpack`.
        policy: Option<String>,
    },
    /// Failover: how many seconds a member may stay offline before its instances marked
    /// `cluster.ha=true` are made again (from their image and configuration) and started on
    /// other members; `off` ends it. Without a value, the setting now. The member cut off
    /// stops those instances itself before they start elsewhere.
    Healing {
        /// Seconds (e.g. 10), or `off`.
        threshold: Option<String>,
    },
    /// This server's place in the cluster.
    Info {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Remove a member (offline; --force for an online one).
    Remove {
        /// The member.
        name: String,
        /// Remove it even while it is online.
        #[arg(long)]
        force: bool,
    },
    /// Empty a member for maintenance: nothing new is placed on it, and each of its
    /// instances is moved to another member (running VMs live, the rest cold) or stopped
    /// where it is, as its `cluster.evacuate` key says (auto, migrate, live-migrate, stop)
    /// unless --action says for all.
    Evacuate {
        /// The member.
        name: String,
        /// What to do with every instance: auto (live if it can, else cold), migrate
        /// (cold), live-migrate (live or fail) or stop.
        #[arg(long)]
        action: Option<String>,
    },
    /// End a member's evacuation: its instances come back, those stopped are started.
    Restore {
        /// The member.
        name: String,
    },
}
