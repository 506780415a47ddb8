//! `vessel config ...`: an instance's configuration, or the daemon's settings. A first
//! argument with a '.' or '=' is a daemon setting (`core.https_address`); anything else names
//! an instance (instance names have neither).

use clap::Subcommand;

use crate::output::Format;

pub const CONFIG_EXAMPLES: &str = "\
An instance's keys (`vessel config show NAME` lists what is set):
  limits.cpu  limits.cpu.weight  limits.cpuset  limits.memory  limits.memory.swap
  limits.processes  limits.io.weight     live on a running container, else at the next start
  limits.disk                            a container's root disk, grown in place
  environment.NAME                       the next start's environment
  boot.autostart  boot.autostart.delay  boot.autostart.priority
                                         start with the host (higher priority first, then
                                         wait DELAY seconds before the next)
  cluster.ha                             true: stopped by its member when that member is cut
                                         off from the cluster's etcd (fencing)
  user.NAME                              free text of yours
Every change is checked whole first: a bad key or value changes nothing. The answer says,
key by key, whether it took effect at once (live) or at the next start, and why. Lowering
memory below what a container holds is refused with the reason; nothing is killed for it.

The daemon's settings:
  core.https_address   address and port of the HTTPS API, e.g. 0.0.0.0:8443 or [::]:8443
                       (applied at once; empty or `unset` stops listening)
The daemon's certificate is <root>/server.crt with its key server.key (made at the first
start); replace both with your own and restart the daemon to use another.

Examples:
  vessel config set web limits.memory=1GiB limits.cpu=2
  vessel config set web limits.processes 200
  vessel config unset web limits.cpu
  vessel config get web limits.memory
  vessel config show web --format yaml
  vessel config edit web                 (opens $EDITOR on the keys; checked before saving)
  vessel config set core.https_address 0.0.0.0:8443
  vessel config get core.https_address
  vessel config show";

/// `vessel config ...`
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Set keys: INSTANCE KEY=VALUE... (or INSTANCE KEY VALUE), or a daemon setting KEY VALUE.
    #[command(after_help = CONFIG_EXAMPLES)]
    Set {
        /// INSTANCE KEY=VALUE..., INSTANCE KEY VALUE, KEY VALUE or KEY=VALUE.
        #[arg(required = true, num_args = 1..)]
        args: Vec<String>,
        /// Output format of the answer.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Print one key's value (empty when unset): [INSTANCE] KEY.
    Get {
        /// [INSTANCE] KEY.
        #[arg(required = true, num_args = 1..=2)]
        args: Vec<String>,
    },
    /// Unset keys (a limit unset is lifted): INSTANCE KEY..., or a daemon setting KEY.
    Unset {
        /// INSTANCE KEY... or KEY.
        #[arg(required = true, num_args = 1..)]
        args: Vec<String>,
        /// Output format of the answer.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Every key that is set: of an instance, or the daemon's.
    Show {
        /// Instance (none: the daemon's settings).
        instance: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Edit an instance's keys in $EDITOR (YAML); checked whole before anything changes.
    Edit {
        /// Instance.
        instance: String,
    },
}

/// Whether a first argument names a daemon setting rather than an instance.
pub fn is_server_key(arg: &str) -> bool {
    arg.contains('.') || arg.contains('=')
}

pub const PROFILE_EXAMPLES: &str = "\
A profile holds instance keys (those of `vessel config set --help`), networks and volumes.
An instance made with profiles (`--profile P`, repeatable) takes their keys in order, its own
-l/-e/-c keys winning, their networks when it names none, and their volumes. A change to a
profile's keys reaches every instance using it, live where the instance allows (the answer
says, per instance and key); keys set on an instance itself stay. A network added gives every
instance using it a NIC (live on a running container), one taken away removes the NIC it gave;
a volume added is attached to stopped instances (running ones are told why not). A profile in
use is not deleted.

Examples:
  vessel profile create small -c limits.memory=128MiB -c limits.cpu=0.5 --network lan \\
      --volume local/shared:/srv
  vessel launch busybox web1 --profile small
  vessel profile set small limits.memory=256MiB     (every instance using it, live)
  vessel profile unset small limits.cpu
  vessel profile show small
  vessel profile edit small                         ($EDITOR on its YAML)
  vessel profile list
  vessel profile delete small                       (once no instance uses it)";

/// `vessel profile ...`
#[derive(Debug, Subcommand)]
pub enum ProfileCommand {
    /// Make a profile.
    #[command(after_help = PROFILE_EXAMPLES)]
    Create {
        /// Name.
        name: String,
        /// An instance key, KEY=VALUE (repeatable).
        #[arg(short = 'c', long = "config", value_name = "KEY=VALUE")]
        config: Vec<String>,
        /// A network its instances get a NIC on (repeatable).
        #[arg(long = "network", value_name = "NETWORK")]
        networks: Vec<String>,
        /// A volume its instances get attached, POOL/VOLUME[:PATH] (a container's mount
        /// point; none for a VM's disk; repeatable).
        #[arg(long = "volume", value_name = "POOL/VOLUME[:PATH]")]
        volumes: Vec<String>,
        /// Free text.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List the profiles, with the instances using each.
    #[command(visible_alias = "ls")]
    List {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Show one profile.
    Show {
        /// Name.
        name: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Yaml)]
        format: Format,
    },
    /// Set keys (KEY=VALUE...); every instance using the profile takes them.
    Set {
        /// Name.
        name: String,
        /// KEY=VALUE pairs.
        #[arg(required = true)]
        pairs: Vec<String>,
        /// Output format of the answer.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Unset keys; instances using the profile lose them (unless set on themselves).
    Unset {
        /// Name.
        name: String,
        /// Keys.
        #[arg(required = true)]
        keys: Vec<String>,
        /// Output format of the answer.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Edit the profile in $EDITOR (YAML: description, config, networks, volumes).
    Edit {
        /// Name.
        name: String,
    },
    /// Delete a profile no instance uses.
    #[command(visible_alias = "rm")]
    Delete {
        /// Name.
        name: String,
    },
}
