//! `vessel backup ...`: the command line of instance backups.

use clap::Subcommand;

use crate::output::Format;

pub const BACKUP_EXAMPLES: &str = "\
Backups are kept in a chunk store: every piece of data once, named by its SHA-256, compressed,
and checked on every read. A second backup of an instance stores only what changed (files
unchanged since are not even read), and instances made from the same image share its data.
A running instance is paused while its files or disk are read.

Examples:
  vessel backup create web                 (the daemon's own store)
  vessel backup list                       (every backup of the project)
  vessel backup list web
  vessel backup info web/20261203T120000Z
  vessel backup restore web/20261203T120000Z web2 --start
  vessel backup restore web                (its newest backup, as web, which must not exist)
  vessel backup verify                     (re-reads every chunk; damaged backups are marked)
  vessel backup prune web --keep-last 3 --keep-daily 7
  vessel backup delete web/20261203T120000Z
  vessel backup gc                         (frees chunks no backup names; admins)
An admin may keep backups elsewhere: --store /mnt/backups (a directory on the daemon's host,
e.g. another host's NFS export mounted there).";

/// `vessel backup ...`
#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Back an instance up (running ones are paused while read).
    #[command(after_help = BACKUP_EXAMPLES)]
    Create {
        /// The instance.
        instance: String,
        /// A store directory on the daemon's host (admins; default: the daemon's own).
        #[arg(long)]
        store: Option<String>,
        /// Print the backup (as `info`) once taken.
        #[arg(long, value_enum)]
        format: Option<Format>,
    },
    /// List backups (of one instance).
    #[command(visible_alias = "ls")]
    List {
        /// Only this instance's.
        instance: Option<String>,
        #[arg(long)]
        store: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// One backup: its archives and sizes.
    Info {
        /// INSTANCE/ID.
        backup: String,
        #[arg(long)]
        store: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Yaml)]
        format: Format,
    },
    /// Make an instance from a backup (INSTANCE/ID, or INSTANCE for its newest).
    Restore {
        /// INSTANCE/ID or INSTANCE.
        backup: String,
        /// The new instance's name (default: the backed-up instance's, which must not exist).
        name: Option<String>,
        /// Start it once restored.
        #[arg(long)]
        start: bool,
        #[arg(long)]
        store: Option<String>,
        /// Restore it on another host: the remote (see `vessel remote list`) the instance is
        /// made on; the backup travels as one portable archive, checked whole there before
        /// anything is made.
        #[arg(long, value_name = "REMOTE")]
        target: Option<String>,
    },
    /// Delete a backup (its chunks are freed by the next `gc`).
    #[command(visible_alias = "rm")]
    Delete {
        /// INSTANCE/ID.
        backup: String,
        #[arg(long)]
        store: Option<String>,
    },
    /// Re-read and re-hash every chunk of the project's backups (or an instance's, or one
    /// backup INSTANCE/ID); damaged ones are marked and listed.
    Verify {
        /// INSTANCE or INSTANCE/ID.
        what: Option<String>,
        #[arg(long)]
        store: Option<String>,
    },
    /// Delete an instance's backups a retention policy does not keep.
    Prune {
        /// The instance.
        instance: String,
        /// Keep the newest N.
        #[arg(long, default_value_t = 0)]
        keep_last: usize,
        /// Keep the newest backup of each of the newest N days (UTC).
        #[arg(long, default_value_t = 0)]
        keep_daily: usize,
        #[arg(long)]
        store: Option<String>,
    },
    /// Free the chunks no backup names (admins; safe while backups are being taken).
    Gc {
        #[arg(long)]
        store: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}

pub const SNAPSHOT_EXAMPLES: &str = "\
A snapshot keeps an instance as it is now, on the host: a container's files (its cgroup frozen
while they are copied, reflinked where the file system can) and attached volumes, a VM's disks
(inside its qcow2 disk, or the pool's own snapshot), and with --stateful a running VM's memory
and devices too, so that a restore resumes the guest where it was.

Examples:
  vessel snapshot create web                  (named snap0, snap1, ...)
  vessel snapshot create web before-upgrade
  vessel snapshot create vm1 warm --stateful
  vessel snapshot list web
  vessel snapshot restore web before-upgrade  (a running instance needs --force: stopped,
                                               restored, started again)
  vessel snapshot restore vm1 warm            (into the running guest)
  vessel snapshot delete web before-upgrade
Scheduled snapshots: vessel config set web snapshots.schedule=@daily snapshots.expiry=7d";

/// `vessel snapshot ...`
#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Snapshot an instance.
    #[command(after_help = SNAPSHOT_EXAMPLES)]
    Create {
        /// The instance.
        instance: String,
        /// The snapshot's name (default: the first free snapN).
        name: Option<String>,
        /// A running VM's memory and device state too.
        #[arg(long)]
        stateful: bool,
    },
    /// List an instance's snapshots.
    #[command(visible_alias = "ls")]
    List {
        /// The instance.
        instance: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// One snapshot.
    Info {
        instance: String,
        name: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Yaml)]
        format: Format,
    },
    /// Put an instance back as a snapshot has it.
    Restore {
        instance: String,
        name: String,
        /// Stop a running instance for the restore, and start it again after.
        #[arg(long)]
        force: bool,
    },
    /// Delete a snapshot.
    #[command(visible_alias = "rm")]
    Delete { instance: String, name: String },
}
