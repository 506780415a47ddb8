//! `vessel auth ...`, `vessel audit` and `vessel config ...`: who may use the daemon, what
//! they changed, and the daemon's settings.

use std::path::PathBuf;

use clap::Subcommand;

use crate::output::Format;

pub const AUTH_EXAMPLES: &str = "\
Identities let others use this daemon over HTTPS (`vessel config set core.https_address
0.0.0.0:8443`). Each is bound to a project and has a role:
  viewer    reads: lists, details, state, events, operations
  user      a viewer that also uses instances: exec, console, files, logs, start and stop
  operator  a user that also manages instances, images, volumes, snapshots, networks,
            exports, and reads its project's audit log
  admin     everything, in every project, and the server: pools, identities, settings
The unix socket is the host's root and needs no identity.

Examples:
  vessel auth token create ci --role operator --expires 30d    (prints the token once)
  vessel auth trust add laptop.crt --role user                 (mutual TLS, by fingerprint)
  vessel auth list
  vessel auth revoke ci          (its next request fails; its open consoles close)
  vessel remote add prod https://host:8443 --token vessel_...   (on the client)";

/// `vessel auth ...`
#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// Bearer tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Trusted client certificates (mutual TLS).
    #[command(subcommand)]
    Trust(TrustCommand),
    /// List identities (tokens and trusted certificates; never a secret).
    #[command(alias = "ls")]
    List {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Revoke an identity: its next request fails, its open streams close within seconds.
    Revoke {
        /// The identity's name.
        name: String,
    },
    /// Who the daemon takes this client for.
    Whoami {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}

/// `vessel auth token ...`
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token; it is printed once and the daemon keeps only its hash.
    #[command(after_help = AUTH_EXAMPLES)]
    Create {
        /// Name of the identity.
        name: String,
        /// Role: viewer, user, operator or admin.
        #[arg(long)]
        role: String,
        /// Project it is bound to.
        #[arg(long, default_value = "default")]
        project: String,
        /// Lifetime: a number and a unit (s, m, h, d), e.g. 30d; without it, until revoked.
        #[arg(long)]
        expires: Option<String>,
        /// Output format (json and yaml carry the token too).
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}

/// `vessel auth trust ...`
#[derive(Debug, Subcommand)]
pub enum TrustCommand {
    /// Trust a client certificate (PEM) by its SHA-256 fingerprint.
    #[command(after_help = AUTH_EXAMPLES)]
    Add {
        /// The certificate file (PEM).
        certificate: PathBuf,
        /// Name of the identity (default: the file's name without its extension).
        #[arg(long)]
        name: Option<String>,
        /// Role: viewer, user, operator or admin.
        #[arg(long)]
        role: String,
        /// Project it is bound to.
        #[arg(long, default_value = "default")]
        project: String,
        /// Lifetime: a number and a unit (s, m, h, d), e.g. 365d.
        #[arg(long)]
        expires: Option<String>,
    },
}

pub const AUDIT_EXAMPLES: &str = "\
Every change asked of the API is recorded: when, who (an identity, or host-root for the unix
socket), in which project, which endpoint, on what, and the answer's status (2xx done or
accepted, 4xx refused, 5xx failed). Admins read all of it, operators their project's.

Examples:
  vessel audit
  vessel audit --since 2026-12-01T00:00:00Z --format json
  vessel audit --project default --limit 50";

pub const PROJECT_EXAMPLES: &str = "\
A project is a tenant: its instances have names of their own (two projects may both have
`web`) and reach nothing of another project's. An identity bound to a project sees only it;
admins reach every project with --project. Limits (Incus' keys) bound what a project holds:
  limits.instances  limits.containers  limits.virtual-machines   counts
  limits.cpu (cores)  limits.memory  limits.processes  limits.disk   sums of the instances'
  limits.networks  limits.snapshots
With a sum limited, each instance must declare that limit (-l cpu=, -l memory=, ...).
Lowering a limit below use blocks growth; it stops nothing. A project's networks are its
own, and so are its volumes (in shared pools), its exports (on listeners of its own) and its
images and aliases (features.images=true, the default; with false it uses default's images,
read-only); the default network is default's.

Examples:
  vessel project create acme -c limits.instances=5 -c limits.memory=4GiB
  vessel auth token create acme-ops --project acme --role operator
  vessel network create lan --subnet 10.70.0.0/24 --project acme
  vessel image build busybox --project acme
  vessel launch busybox web --project acme --network lan -l memory=256MiB
  vessel project switch acme          (later commands are about acme)
  vessel project info acme            (limits and what is used of them)
  vessel project set acme limits.instances=10
  vessel project delete acme          (once it holds nothing)";

/// `vessel project ...`
#[derive(Debug, Subcommand)]
pub enum ProjectCommand {
    /// Create a project.
    #[command(after_help = PROJECT_EXAMPLES)]
    Create {
        /// Name.
        name: String,
        /// A limit, KEY=VALUE (repeatable).
        #[arg(short = 'c', long = "config", value_name = "KEY=VALUE")]
        config: Vec<String>,
        /// Free text.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List projects (with their use).
    #[command(alias = "ls")]
    List {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// A project's limits and what it uses of them.
    Info {
        /// Name (default: the current project).
        name: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Set limits, KEY=VALUE (an empty value unsets).
    #[command(after_help = PROJECT_EXAMPLES)]
    Set {
        /// Name.
        name: String,
        /// KEY=VALUE pairs.
        #[arg(required = true, value_name = "KEY=VALUE")]
        pairs: Vec<String>,
    },
    /// Unset a limit.
    Unset {
        /// Name.
        name: String,
        /// Key.
        key: String,
    },
    /// Delete a project that holds nothing.
    Delete {
        /// Name.
        name: String,
    },
    /// Make later commands (on this remote) about this project.
    Switch {
        /// Name (`default` to go back).
        name: String,
    },
}
