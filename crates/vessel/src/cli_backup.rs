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
