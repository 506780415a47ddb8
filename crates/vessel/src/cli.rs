//! The command line: every verb, its arguments and its help.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::output::Format;

const MAIN_EXAMPLES: &str = "\
Examples:
  vessel image build busybox                 Build the busybox image (once)
  vessel launch busybox c1                   Create and start container c1
  vessel list                                What exists and what it uses
  vessel exec c1 -- sh                       A shell inside c1
  vessel stop c1 && vessel delete c1         Stop it, then remove it
  vessel image build vm                      A bootable VM image (Debian's cloud kernel)
  vessel launch vm/busybox v1 --vm           Create and start virtual machine v1

The daemon listens on /run/vessel/vessel.sock; point elsewhere with --socket or VESSEL_SOCKET.
Other daemons are remotes (see `vessel remote --help`): REMOTE:NAME names an instance on one,
e.g. `vessel exec prod:c1 -- sh`, and `vessel list prod:` lists its instances.";

const REMOTE_EXAMPLES: &str = "\
A remote is a Vessel daemon reached over HTTPS. Its certificate is self-signed, so it is
trusted by its SHA-256 fingerprint, shown when the remote is added; a different certificate
later is refused. The remote `local` is this machine's daemon on its unix socket.

Once added, REMOTE:NAME names an object on a remote in any command, and `--remote NAME`
or `vessel remote switch NAME` pick one for commands that name nothing. The configuration
is $VESSEL_CONFIG_DIR/config.yml, or ~/.config/vessel/config.yml.

Examples:
  vessel remote add prod https://10.0.0.5:8443 --token $TOKEN
  vessel remote add lab https://lab.example.org --client-cert me.crt --client-key me.key
  vessel remote add ci https://10.0.0.9:8443 --token $TOKEN --accept-certificate   (scripts)
  vessel remote list
  vessel list prod:                  Instances on prod
  vessel launch busybox prod:web     Create and start web on prod
  vessel exec prod:web -- sh
  vessel remote switch prod          prod becomes the default (`local` switches back)
  vessel remote remove prod";

const REMOTE_ADD_EXAMPLES: &str = "\
The server's certificate fingerprint is printed and, on a terminal, you are asked whether to
trust it: compare it with the one the daemon's host shows. Without a terminal,
--accept-certificate is required. Then one GET /1.0 checks that the credentials work;
nothing is stored unless it does.

Examples:
  vessel remote add prod https://10.0.0.5:8443 --token $TOKEN
  vessel remote add lab https://lab.example.org:8443 --client-cert me.crt --client-key me.key
  vessel remote add ci https://10.0.0.9 --token $TOKEN --accept-certificate   (port 8443)";

const LAUNCH_EXAMPLES: &str = "\
Limits (-l KEY=VALUE, repeatable):
  cpu=0.5            CPU quota in cores          cpu.weight=200   relative share (1-10000)
  cpuset=0-1         CPUs it may run on          pids=100         processes and threads
  memory=256MiB      memory (B, KiB, MiB, GiB; KB, MB, GB are powers of 1000)
  memory.swap=0      swap on top of memory       io.weight=500    relative I/O share (10-1000)
  io.read_bps=8:0=10MB, io.write_bps=..., io.read_iops=8:0=1000, io.write_iops=...
                     per-device throttles; the device is MAJOR:MINOR as `lsblk` shows it
  disk=2GiB          containers: the root disk's size; writes past it fail with ENOSPC
                     inside (an ext4 image in the instance's directory, or with --storage
                     a btrfs subvolume with a quota or an ext4 image in a dir pool)

Networks: a new instance gets a NIC on the default network (made by the daemon's first start
or `vessel admin init`); --network NET instead puts it on NET (repeatable: eth0, eth1, ...)
and --no-network leaves it with its loopback only.

Examples:
  vessel launch busybox web -l memory=256MiB -l cpu=0.5
  vessel launch busybox box -l disk=2GiB
  vessel launch busybox box2 -l disk=1GiB --storage fast   (a btrfs pool)
  vessel launch busybox job -e MODE=batch -- sh -c 'echo hi; sleep 60'
  vessel launch busybox root-box --privileged
  vessel launch busybox legacy --idmap-shared   (the daemon's base id range, shared)
  vessel launch busybox offline --no-network
  vessel launch busybox web2 --network default
  vessel launch vm/busybox vm1 --vm -l memory=512MiB -l cpu=2 --ssh-key ~/.ssh/id_ed25519.pub";

const RESIZE_EXAMPLES: &str = "\
A root disk in an ext4 image (the default, or a dir pool) only grows: at once while the
instance is stopped, online while it runs where the daemon has CAP_SYS_RESOURCE. A root disk
in a btrfs pool is a quota: it also shrinks, to no less than what it holds.

Examples:
  vessel launch busybox c1 -l disk=1GiB
  vessel resize c1 4GiB
  vessel info c1                       (Root disk: size and use)";

const EXEC_EXAMPLES: &str = "\
A terminal is used when standard input and output are both terminals; -t forces one, -T
turns it off (for pipes and scripts). The exit status is the remote command's.

Examples:
  vessel exec c1 -- sh                          Interactive shell
  vessel exec c1 -- ls -l /etc                  One command
  echo hello | vessel exec c1 -T -- cat         Pipe data in
  vessel exec c1 --user 1000:1000 --cwd /tmp -e LANG=C -- id
  vessel exec c1 --user www-data -- id            (a name from the instance's /etc/passwd)";

const FILE_EXAMPLES: &str = "\
Examples:
  vessel file push ./app.conf c1/etc/app.conf --mode 0600
  vessel file push ./script.sh c1/usr/local/bin/      (keeps the file's name)
  vessel file push -p ./site.conf c1/etc/site/conf.d/site.conf   (makes missing directories)
  vessel file push -r ./www c1/srv/                   (the tree lands in /srv/www)
  vessel file pull c1/etc/hostname ./hostname
  vessel file pull -r c1/etc/apt ./backup/            (the tree lands in ./backup/apt)
  vessel file pull c1/var/log/messages - | tail";

/// The Vessel client: containers and virtual machines behind one daemon.
#[derive(Debug, Parser)]
#[command(name = "vessel", version, after_help = MAIN_EXAMPLES)]
pub struct Cli {
    /// Path of the daemon's unix socket.
    #[arg(
        long,
        global = true,
        env = "VESSEL_SOCKET",
        value_name = "PATH",
        default_value = vessel_api::DEFAULT_SOCKET
    )]
    pub socket: PathBuf,

    /// The remote to send the command to (default: `vessel remote get-default`); a
    /// REMOTE:NAME argument picks it too.
    #[arg(long, global = true, value_name = "REMOTE")]
    pub remote: Option<String>,

    /// The project the command is about (default: `vessel project switch`'s, else the
    /// identity's own; `default` over the socket).
    #[arg(long, global = true, env = "VESSEL_PROJECT", value_name = "PROJECT")]
    pub project: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

/// Every verb.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create and start an instance from an image.
    #[command(after_help = LAUNCH_EXAMPLES)]
    Launch(CreateArgs),
    /// Create an instance from an image without starting it.
    #[command(after_help = "Example:\n  vessel create busybox c1 -l pids=50 && vessel start c1")]
    Create(CreateArgs),
    /// Start instances.
    #[command(after_help = "Example:\n  vessel start c1 c2")]
    Start(NamesArgs),
    /// Stop instances: the image's stop signal, then SIGKILL after the timeout.
    #[command(
        after_help = "Examples:\n  vessel stop c1\n  vessel stop c1 --timeout 5\n  vessel stop c1 --force"
    )]
    Stop(StopArgs),
    /// Stop, then start instances.
    #[command(after_help = "Example:\n  vessel restart c1 --timeout 10")]
    Restart(StopArgs),
    /// Freeze every process of instances.
    #[command(after_help = "Example:\n  vessel pause c1 && vessel resume c1")]
    Pause(NamesArgs),
    /// Thaw paused instances.
    Resume(NamesArgs),
    /// Delete instances (running ones only with --force).
    #[command(
        visible_alias = "rm",
        after_help = "Examples:\n  vessel delete c1\n  vessel delete -f c1 c2   (stops them first)"
    )]
    Delete(DeleteArgs),
    /// List instances with their live usage.
    #[command(
        visible_alias = "ls",
        after_help = "Examples:\n  vessel list\n  vessel list --format json\n  vessel list prod:          (the instances of remote prod)\n  vessel list --project acme (a project's; --all-projects: every project's, for admins)"
    )]
    List(ListArgs),
    /// Show one instance in detail, or the daemon when no name is given.
    #[command(
        after_help = "Examples:\n  vessel info c1\n  vessel info c1 --format yaml\n  vessel info            (the daemon and host)"
    )]
    Info(InfoArgs),
    /// Run a command inside an instance.
    #[command(after_help = EXEC_EXAMPLES)]
    Exec(ExecArgs),
    /// Attach to an instance's console (detach with Ctrl-a q).
    #[command(
        after_help = "Examples:\n  vessel console c1\n  vessel console vm2 --type vga            # a full-profile VM's screen, for a VNC viewer\n  vessel console vm2 --type vga --listen 127.0.0.1:5901\n\nPress Ctrl-a q to detach from a text console; Ctrl-a Ctrl-a sends a literal Ctrl-a."
    )]
    Console(ConsoleArgs),
    /// Print the console output recorded for an instance (a VM: its console).
    #[command(
        after_help = "Examples:\n  vessel logs c1\n  vessel logs c1 --tail 20\n  vessel logs -f c1             # keep printing new output until c1 stops (Ctrl-C to quit)"
    )]
    Logs(LogsArgs),
    /// Copy files into and out of instances.
    #[command(subcommand)]
    File(FileCommand),
    /// Build, pull, import, export, list and delete images.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Follow and cancel long-running operations.
    #[command(subcommand)]
    Operation(OperationCommand),
    /// Print the daemon's events as they happen.
    #[command(after_help = "Examples:\n  vessel monitor\n  vessel monitor --format json | jq .")]
    Monitor(MonitorArgs),
    /// Networks: bridges with DHCP/DNS and NAT, overlays, VLAN segments, NICs and their limits, forwards, load balancers, ACLs.
    #[command(subcommand)]
    Network(crate::cli_network::NetworkCommand),
    /// Storage pools, volumes, snapshots and NBD/NFS exports.
    #[command(subcommand)]
    Storage(crate::cli_storage::StorageCommand),
    /// Remote daemons over HTTPS: add, list, remove, pick the default.
    #[command(subcommand, after_help = REMOTE_EXAMPLES)]
    Remote(RemoteCommand),
    /// Who may use the daemon over HTTPS: tokens, trusted client certificates, roles.
    #[command(subcommand, after_help = crate::cli_auth::AUTH_EXAMPLES)]
    Auth(crate::cli_auth::AuthCommand),
    /// The audit log: every change asked of the daemon, by whom, with what answer.
    #[command(after_help = crate::cli_auth::AUDIT_EXAMPLES)]
    Audit {
        /// Only this project's entries (operators see only their own).
        #[arg(long)]
        project: Option<String>,
        /// Only entries at or after this time (RFC 3339, e.g. 2026-12-03T10:00:00Z).
        #[arg(long)]
        since: Option<String>,
        /// At most this many entries, the latest (default 1000).
        #[arg(long)]
        limit: Option<u32>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// A cluster: several servers as one, on etcd (membership, join tokens, heartbeats).
    #[command(subcommand, after_help = crate::cli_cluster::CLUSTER_EXAMPLES)]
    Cluster(crate::cli_cluster::ClusterCommand),
    /// Projects: tenants with their own instances and limits.
    #[command(subcommand, after_help = crate::cli_auth::PROJECT_EXAMPLES)]
    Project(crate::cli_auth::ProjectCommand),
    /// Snapshots of instances: taken, listed, restored, deleted.
    #[command(subcommand, after_help = crate::cli_backup::SNAPSHOT_EXAMPLES)]
    Snapshot(crate::cli_backup::SnapshotCommand),
    /// Backups of instances: taken, listed, verified, restored, pruned.
    #[command(subcommand, after_help = crate::cli_backup::BACKUP_EXAMPLES)]
    Backup(crate::cli_backup::BackupCommand),
    /// Profiles: named sets of keys, networks and volumes that instances are made with.
    #[command(subcommand, after_help = crate::cli_config::PROFILE_EXAMPLES)]
    Profile(crate::cli_config::ProfileCommand),
    /// Plans: what `apply -f STACK` would change, or right sizes from recorded use.
    #[command(after_help = crate::cli_plan::APPLY_EXAMPLES)]
    Plan(crate::cli_plan::PlanArgs),
    /// Bring the instances a stack file declares about (idempotent; see `plan -f`).
    #[command(after_help = crate::cli_plan::APPLY_EXAMPLES)]
    Apply(crate::cli_plan::ApplyArgs),
    /// Delete everything a stack owns.
    #[command(after_help = crate::cli_plan::APPLY_EXAMPLES)]
    Destroy(crate::cli_plan::ApplyArgs),
    /// An instance's configuration (limits, environment, boot, user keys; live where it can
    /// be), or the daemon's settings (core.https_address).
    #[command(subcommand, after_help = crate::cli_config::CONFIG_EXAMPLES)]
    Config(crate::cli_config::ConfigCommand),
    /// Set the daemon up: its default network.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Change a container's root disk size (its limits.disk, given at creation).
    #[command(after_help = RESIZE_EXAMPLES)]
    Resize {
        /// Instance name.
        name: String,
        /// The new size (B, KiB, MiB, GiB, TiB; KB, MB, GB, TB are powers of 1000).
        size: String,
    },
    /// Turn a stopped instance into a new image.
    #[command(
        after_help = "Example:\n  vessel stop web && vessel publish web --alias web-base && vessel launch web-base web2"
    )]
    Publish {
        /// Instance name.
        name: String,
        /// Alias of the new image.
        #[arg(long)]
        alias: String,
    },
    /// Write an instance to one portable archive file (its record and data, every piece
    /// checksummed), which `vessel import` makes an instance from on this or another host.
    #[command(
        after_help = "Example:\n  vessel export web web.vessel && vessel import web.vessel web-copy --start"
    )]
    Export {
        /// The instance (a running one is paused while read).
        name: String,
        /// The file to write.
        file: std::path::PathBuf,
        /// Its snapshots too (copies of a container's files, a VM's disk snapshots; pool
        /// snapshots and saved VM state stay behind); `import` makes them again.
        #[arg(long)]
        snapshots: bool,
    },
    /// Make an instance from an archive of `vessel export` (checked whole before anything is
    /// made).
    Import {
        /// The archive.
        file: std::path::PathBuf,
        /// The new instance's name (default: the exported one's).
        name: Option<String>,
        /// Start it once made.
        #[arg(long)]
        start: bool,
    },
    /// Make a new instance as one is now (a running one is paused while its files are
    /// copied) or as one of its snapshots has it (SOURCE/SNAPSHOT).
    #[command(
        after_help = "Examples:\n  vessel copy web web2 --start\n  vessel copy web/before-upgrade web-old"
    )]
    Copy {
        /// INSTANCE or INSTANCE/SNAPSHOT.
        source: String,
        /// The new instance's name.
        name: String,
        /// Start it once made.
        #[arg(long)]
        start: bool,
    },
    /// Give a stopped instance a new name: its files, snapshots, volumes, NICs (their
    /// addresses kept) and DNS name follow. Its backups keep the name they were taken under.
    #[command(
        after_help = "Example:\n  vessel stop web && vessel rename web shop && vessel start shop"
    )]
    Rename {
        /// The instance.
        name: String,
        /// Its new name.
        new_name: String,
    },
    /// Move an instance: its root disk into a storage pool (--pool; stopped instances; its
    /// name, NICs and volumes stay; a container needs `limits.disk`, and snapshots must be
    /// deleted first), or the whole instance to another member of the cluster (--target): a
    /// running VM live (its disk mirrored and its memory sent while it runs, then a pause of
    /// a fraction of a second; its TCP connections stay open), anything else cold (stopped,
    /// sent with its snapshots and the volumes attached to it alone, which go into the pool
    /// of the same name there, started there if it ran).
    #[command(
        after_help = "Examples:\n  vessel stop web && vessel move web --pool fast && \
                       vessel start web\n  vessel move web --target m2\n  \
                       vessel move vm1 --target m2 --cold    # stopped, moved, started there"
    )]
    Move {
        /// The instance.
        name: String,
        /// The pool its root disk moves into.
        #[arg(long, required_unless_present = "target", conflicts_with = "target")]
        pool: Option<String>,
        /// The cluster member it moves to (see `vessel cluster list`).
        #[arg(long, value_name = "MEMBER")]
        target: Option<String>,
        /// Move a running VM live, or fail (the default for a running VM).
        #[arg(long, requires = "target", conflicts_with = "cold")]
        live: bool,
        /// Move it cold even if it could move live: stopped, moved, started there.
        #[arg(long, requires = "target")]
        cold: bool,
    },
}

/// Arguments of `launch` and `create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Image alias or fingerprint (see `vessel image list`).
    pub image: String,
    /// Name of the new instance: letters, digits and '-', starting with a letter.
    pub name: String,
    /// Make a virtual machine instead of a container.
    #[arg(long)]
    pub vm: bool,
    /// Run without a user namespace: root inside is root on the host.
    #[arg(long)]
    pub privileged: bool,
    /// Share the daemon's base id range with other containers launched so, instead of a
    /// range of its own (security.idmap.isolated=false; for files shared by uid).
    #[arg(long, conflicts_with_all = ["privileged", "vm"])]
    pub idmap_shared: bool,
    /// A resource limit as KEY=VALUE (repeatable; see below).
    #[arg(short = 'l', long = "limit", value_name = "KEY=VALUE")]
    pub limits: Vec<String>,
    /// An environment variable for the init process (repeatable).
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// A file of SSH public keys to install for root in a VM guest (repeatable).
    #[arg(long = "ssh-key", value_name = "FILE")]
    pub ssh_keys: Vec<std::path::PathBuf>,
    /// Put the root disk into this storage pool, as a volume NAME-root: a VM's disk, or a
    /// container's writable layer (with -l disk=SIZE: a btrfs subvolume with a quota, or an
    /// ext4 image in a dir pool).
    #[arg(long, value_name = "POOL")]
    pub storage: Option<String>,
    /// On a member of a cluster: the member to make it on (see `vessel cluster list`);
    /// without it the scheduler chooses from its limits (-l cpu=, -l memory=) and the
    /// members' room.
    #[arg(long, value_name = "MEMBER")]
    pub target: Option<String>,
    /// A network to give the instance a NIC on (repeatable, eth0 first; default: the
    /// default network).
    #[arg(long = "network", value_name = "NETWORK")]
    pub networks: Vec<String>,
    /// No NIC, not even on the default network (only the loopback).
    #[arg(long, conflicts_with = "networks")]
    pub no_network: bool,
    /// A profile to apply (repeatable, in order): its keys where -l/-e/-c set none, its
    /// networks when --network names none; a later change to it reaches this instance.
    #[arg(short = 'p', long = "profile", value_name = "PROFILE")]
    pub profiles: Vec<String>,
    /// A configuration key, KEY=VALUE (repeatable): boot.autostart, user.*, ... (see `vessel
    /// config set --help`).
    #[arg(short = 'c', long = "config", value_name = "KEY=VALUE")]
    pub config: Vec<String>,
    /// Command to run as init instead of the image's, after `--`.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// One or more instance names.
#[derive(Debug, Args)]
pub struct NamesArgs {
    /// Instance names.
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,
}

/// Arguments of `stop` and `restart`.
#[derive(Debug, Args)]
pub struct StopArgs {
    /// Instance names.
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,
    /// Kill at once instead of asking the init to stop.
    #[arg(short, long)]
    pub force: bool,
    /// Seconds to wait for a clean stop before killing (daemon default: 30).
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<u64>,
}

/// Arguments of `delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Instance names.
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,
    /// Stop running instances first.
    #[arg(short, long)]
    pub force: bool,
    /// Also delete the volumes attached to each (their snapshots too); refused for a
    /// volume another instance also has.
    #[arg(long)]
    pub volumes: bool,
}

/// One instance name.
#[derive(Debug, Args)]
pub struct NameArgs {
    /// Instance name.
    pub name: String,
}

/// Which console.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum ConsoleType {
    /// The text console (a container's terminal, a VM's serial console).
    #[default]
    Console,
    /// A VM's screen over VNC, served on a local TCP port for a VNC viewer.
    Vga,
}

/// Arguments of `console`.
#[derive(Debug, Args)]
pub struct ConsoleArgs {
    /// Instance name.
    pub name: String,
    /// The text console, or a VM's screen (`vga`, full profile only).
    #[arg(long = "type", value_enum, default_value_t)]
    pub kind: ConsoleType,
    /// With `--type vga`: the local address to serve VNC on (a free port by default).
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:0")]
    pub listen: String,
}

/// Arguments of `logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Instance name.
    pub name: String,
    /// Keep printing new output as it comes, until the instance stops.
    #[arg(short, long)]
    pub follow: bool,
    /// Only the last N lines.
    #[arg(short = 'n', long, value_name = "N")]
    pub tail: Option<usize>,
}

/// Arguments of `list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// `REMOTE:` lists a remote's instead of the default remote's.
    #[arg(value_name = "REMOTE:", value_parser = crate::remote::parse_remote_only)]
    pub _remote: Option<String>,
    /// Every project's instances, with a PROJECT column (admins).
    #[arg(long)]
    pub all_projects: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// A `--format` option, and `REMOTE:` to list a remote's objects.
#[derive(Debug, Args)]
pub struct FormatArgs {
    /// `REMOTE:` lists a remote's instead of the default remote's.
    #[arg(value_name = "REMOTE:", value_parser = crate::remote::parse_remote_only)]
    pub _remote: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// Arguments of `info`.
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Instance name; without it, the daemon is described.
    pub name: Option<String>,
    /// Output format (`table` is a block of fields).
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// Arguments of `exec`.
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Instance name.
    pub name: String,
    /// Force a pseudo-terminal (raw mode, one stream).
    #[arg(short = 't', long = "force-interactive", conflicts_with = "no_tty")]
    pub tty: bool,
    /// Never use a pseudo-terminal (separate stdout and stderr, stdin piped).
    #[arg(short = 'T', long = "force-noninteractive")]
    pub no_tty: bool,
    /// An environment variable (repeatable).
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Working directory inside the instance.
    #[arg(long, value_name = "DIR")]
    pub cwd: Option<String>,
    /// User (and group) to run as inside the instance: names (looked up in the instance's own
    /// /etc/passwd and /etc/group) or ids.
    #[arg(short = 'u', long, value_name = "USER[:GROUP]")]
    pub user: Option<String>,
    /// Program and arguments (put `--` before them when they start with '-').
    #[arg(
        required = true,
        value_name = "COMMAND",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub command: Vec<String>,
}

/// `vessel file ...`
#[derive(Debug, Subcommand)]
pub enum FileCommand {
    /// Copy a local file (or, with -r, a directory tree) into an instance.
    #[command(after_help = FILE_EXAMPLES)]
    Push(PushArgs),
    /// Copy a file (or, with -r, a directory tree) out of an instance (`-` writes a file to
    /// standard output).
    #[command(after_help = FILE_EXAMPLES)]
    Pull(PullArgs),
}

/// Arguments of `file push`.
#[derive(Debug, Args)]
pub struct PushArgs {
    /// Local file (`-` reads standard input), or a directory with -r.
    pub source: PathBuf,
    /// NAME/PATH inside the instance; a PATH ending in '/' keeps the local file's name. With
    /// -r, the directory the tree is copied into.
    pub target: String,
    /// Make missing parent directories inside the instance (0755, owned by root).
    #[arg(short = 'p', long)]
    pub parents: bool,
    /// Copy a directory and everything in it (files, directories, symbolic links), keeping
    /// permission bits.
    #[arg(short = 'r', long)]
    pub recursive: bool,
    /// Octal permission bits (default: the local file's, or 0644 from standard input).
    #[arg(long, value_name = "OCTAL")]
    pub mode: Option<String>,
    /// Owner inside the instance (default 0).
    #[arg(long, value_name = "N")]
    pub uid: Option<u32>,
    /// Group inside the instance (default 0).
    #[arg(long, value_name = "N")]
    pub gid: Option<u32>,
}

/// Arguments of `file pull`.
#[derive(Debug, Args)]
pub struct PullArgs {
    /// NAME/PATH inside the instance.
    pub source: String,
    /// Local file or directory, or `-` for standard output.
    pub target: PathBuf,
    /// Copy a directory and everything in it (files, directories, symbolic links), keeping
    /// permission bits; into TARGET when it is a directory, else as TARGET.
    #[arg(short = 'r', long)]
    pub recursive: bool,
}

/// What an image can be built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ImageSourceArg {
    /// A minimal root file system from Debian's busybox-static.
    Busybox,
    /// A minimal Debian made by debootstrap (--release picks which).
    Debian,
    /// A bootable VM image: Debian's cloud kernel and a busybox initramfs or disk.
    Vm,
}

/// Layout of a built VM image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum VmLayoutArg {
    /// Kernel and a busybox initramfs (boots in seconds, even without KVM).
    Initramfs,
    /// Kernel, initramfs and an ext4 root disk.
    Disk,
}

/// `vessel image alias ...`
#[derive(Debug, Subcommand)]
pub enum AliasCommand {
    /// Give an image another alias (moving it from another image that had it).
    Add {
        /// Alias or fingerprint of the image.
        image: String,
        /// The new alias.
        alias: String,
    },
    /// Remove an alias; the image stays.
    #[command(visible_alias = "rm")]
    Delete {
        /// The alias.
        alias: String,
    },
}

/// `vessel image ...`
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Build an image.
    #[command(
        after_help = "Examples:\n  vessel image build busybox\n  vessel image build busybox --alias tiny"
    )]
    Build {
        /// What to build it from.
        #[arg(value_enum)]
        source: ImageSourceArg,
        /// Alias to give it (default: the source's name).
        #[arg(long)]
        alias: Option<String>,
        /// Debian release, with `debian` (default bookworm).
        #[arg(long)]
        release: Option<String>,
        /// Layout of a `vm` image (default initramfs).
        #[arg(long, value_enum)]
        layout: Option<VmLayoutArg>,
    },
    /// Pull an image from an OCI registry.
    #[command(
        after_help = "Examples:\n  vessel image pull registry.example.org/team/app:1.2\n  vessel image pull 127.0.0.1:5000/test/busybox:1 --alias bb   (loopback: plain HTTP)\n  vessel image pull reg.lan:5000/app:1 --insecure"
    )]
    Pull {
        /// HOST[:PORT]/NAME[:TAG|@sha256:DIGEST]
        reference: String,
        /// Alias to give it (default: the reference without its host).
        #[arg(long)]
        alias: Option<String>,
        /// Talk plain HTTP to the registry (one without TLS; registries on loopback
        /// addresses and localhost always are).
        #[arg(long)]
        insecure: bool,
    },
    /// Import an OCI image layout or a `docker save`/`podman save` archive.
    #[command(
        after_help = "Examples:\n  podman save -o app.tar app && vessel image import app.tar --alias app"
    )]
    Import {
        /// The archive (a tar file), or a qcow2, raw or ISO image for a VM.
        file: PathBuf,
        /// Alias to give it.
        #[arg(long)]
        alias: Option<String>,
        /// The file is a raw disk image for a virtual machine.
        #[arg(long)]
        vm: bool,
    },
    /// Write an image as an OCI archive that `vessel image import` and `podman load` accept.
    #[command(
        after_help = "Examples:\n  vessel image export busybox busybox.tar && podman load -i busybox.tar"
    )]
    Export {
        /// Alias or fingerprint.
        image: String,
        /// The archive to write.
        file: PathBuf,
    },
    /// Manage aliases.
    #[command(subcommand)]
    Alias(AliasCommand),
    /// List images.
    #[command(visible_alias = "ls")]
    List(FormatArgs),
    /// Show one image.
    Info {
        /// Alias or fingerprint.
        image: String,
        /// Output format (`table` is a block of fields).
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Delete images no instance uses.
    #[command(visible_alias = "rm")]
    Delete {
        /// Aliases or fingerprints.
        #[arg(required = true, value_name = "IMAGE")]
        images: Vec<String>,
    },
}

/// `vessel operation ...`
#[derive(Debug, Subcommand)]
pub enum OperationCommand {
    /// List operations.
    #[command(visible_alias = "ls")]
    List(FormatArgs),
    /// Show one operation.
    Show {
        /// Operation id.
        id: String,
        /// Output format (`table` is a block of fields).
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Wait for an operation to end, with progress; Ctrl-C cancels it.
    Wait {
        /// Operation id.
        id: String,
    },
    /// Cancel an operation.
    Cancel {
        /// Operation id.
        id: String,
    },
}

/// `vessel remote ...`
#[derive(Debug, Subcommand)]
pub enum RemoteCommand {
    /// Add a remote: show its certificate's fingerprint, trust it, check the credentials.
    #[command(after_help = REMOTE_ADD_EXAMPLES)]
    Add(RemoteAddArgs),
    /// List the remotes (`local` is this machine's daemon).
    #[command(
        visible_alias = "ls",
        after_help = "Examples:\n  vessel remote list\n  vessel remote list --format yaml"
    )]
    List {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Forget a remote (its credentials and trusted certificate).
    #[command(
        visible_alias = "rm",
        after_help = "Example:\n  vessel remote remove prod"
    )]
    Remove {
        /// Remote name.
        name: String,
    },
    /// Make a remote the default one, for commands that name none.
    #[command(after_help = "Examples:\n  vessel remote switch prod\n  vessel remote switch local")]
    Switch {
        /// Remote name (`local`: this machine's daemon).
        name: String,
    },
    /// Print the default remote's name.
    #[command(after_help = "Example:\n  vessel remote get-default")]
    GetDefault,
}

/// Arguments of `remote add`.
#[derive(Debug, Args)]
pub struct RemoteAddArgs {
    /// Name for the remote: a letter, then letters, digits, '-' and '_'.
    pub name: String,
    /// https://HOST[:PORT] (port 8443 when none is given).
    #[arg(value_hint = clap::ValueHint::Url)]
    pub url: String,
    /// Bearer token the daemon gave (sent with every request). From the environment
    /// (VESSEL_TOKEN) it stays out of the process list.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "VESSEL_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// A client certificate (PEM) for mutual TLS, trusted by the daemon.
    #[arg(long, value_name = "FILE", requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "client_cert")]
    pub client_key: Option<PathBuf>,
    /// Trust the server's certificate without asking (required without a terminal; check
    /// the printed fingerprint).
    #[arg(long)]
    pub accept_certificate: bool,
}

/// `vessel admin ...`
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Make the default network new instances get, unless there is one (the daemon's
    /// first start makes it too, and a deleted one stays deleted until this runs). Its
    /// subnet is the first of 10.42.0.0/24, 10.43.0.0/24, ... that no route or address of
    /// the host uses, or the one given with --subnet (refused when a default network exists
    /// on another one).
    #[command(
        after_help = "Examples:\n  vessel admin init                   # make it, or say where it is\n  vessel admin init --format yaml"
    )]
    Init {
        /// IPv4 subnet of the default network, e.g. 10.99.0.0/24.
        #[arg(long)]
        subnet: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}

/// How `monitor` prints events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum MonitorFormat {
    /// One line per event, for people.
    #[default]
    Pretty,
    /// One JSON object per line, as the API sends them.
    Json,
}

/// Arguments of `monitor`.
#[derive(Debug, Args)]
pub struct MonitorArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = MonitorFormat::Pretty)]
    pub format: MonitorFormat,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn exec_takes_the_command_after_double_dash() {
        let cli = Cli::try_parse_from(["vessel", "exec", "c1", "-T", "--", "ls", "-l"]).unwrap();
        let Command::Exec(args) = cli.command else {
            panic!("not exec")
        };
        assert!(args.no_tty);
        assert_eq!(args.command, ["ls", "-l"]);
        let cli = Cli::try_parse_from(["vessel", "exec", "c1", "sh", "-c", "id"]).unwrap();
        let Command::Exec(args) = cli.command else {
            panic!("not exec")
        };
        assert_eq!(args.command, ["sh", "-c", "id"]);
        assert!(Cli::try_parse_from(["vessel", "exec", "c1", "-t", "-T", "sh"]).is_err());
    }

    #[test]
    fn launch_with_limits_and_command() {
        let cli = Cli::try_parse_from([
            "vessel",
            "launch",
            "busybox",
            "c1",
            "-l",
            "memory=1GiB",
            "--limit",
            "cpu=1",
            "-e",
            "A=1",
            "--",
            "sleep",
            "60",
        ])
        .unwrap();
        let Command::Launch(args) = cli.command else {
            panic!("not launch")
        };
        assert_eq!(args.limits, ["memory=1GiB", "cpu=1"]);
        assert_eq!(args.env, ["A=1"]);
        assert_eq!(args.command, ["sleep", "60"]);
    }
}
