//! `vessel storage ...`: the command line of pools, volumes and exports.

use std::path::PathBuf;

use clap::{Subcommand, ValueEnum};

use crate::output::Format;

const POOL_EXAMPLES: &str = "\
Drivers:
  dir     a directory (default: under /var/lib/vessel/storage); snapshots are copies
  btrfs   btrfs over disks or files (or one loop file Vessel creates with --size);
          subvolumes with quotas, btrfs snapshots
  raid    Vessel's own RAID 0/1/5/6 over member files or disks, thin block volumes,
          rebuild and scrub (vessel storage pool repair)
  ceph    RBD images in a RADOS pool of a Ceph cluster you run: block volumes for VMs
          (QEMU opens them through librbd), RBD snapshots and clones

Examples:
  vessel storage pool create local dir
  vessel storage pool create fast btrfs --size 10GiB
  vessel storage pool create safe raid --level raid5 --members 4 --size 2GiB
  vessel storage pool create safe raid --level raid6 --source /dev/sdb --source /dev/sdc \\
      --source /dev/sdd --source /dev/sde --chunk-size 128KiB
  # In a cluster: a second copy on member m1, written with every write
  vessel storage pool create rp raid --level raid1 --size 10GiB --replica m1
  # On m1, once m0 is lost for good: its pool from the copy kept here
  vessel storage pool create rp raid --adopt m0.rp
  # Ceph: images in RADOS pool vms (made if missing), as client.vessel
  vessel storage pool create cephvms ceph --source vms -c ceph.user.name=vessel \
      -c ceph.conf=/etc/ceph/ceph.conf";

const VOLUME_EXAMPLES: &str = "\
Examples:
  vessel storage volume create local data                      # a filesystem volume
  vessel storage volume create fast data --size 1GiB           # ... held to 1 GiB (btrfs)
  vessel storage volume create safe disk1 --type block --size 8GiB
  vessel storage volume attach local data c1 /srv/data         # c1 must be stopped
  vessel storage volume attach safe disk1 vm1                  # a second disk for vm1
  vessel storage volume snapshot local data before-upgrade
  vessel storage volume restore local data before-upgrade      # its users stopped
  vessel storage volume create local data2 --source data/before-upgrade   # clone
  vessel storage volume import safe disk1 ./debian.qcow2";

const EXPORT_EXAMPLES: &str = "\
NBD over TCP requires TLS with a client certificate: one per client, from
`vessel storage export credentials`. A unix socket (--listen /PATH) admits whom its file
mode lets in; --no-tls serves plain NBD to anyone who reaches the address.

Examples:
  vessel storage export create disk1 safe disk1 --protocol nbd --listen 127.0.0.1:10809
  vessel storage export credentials disk1 --out ./disk1-creds
  nbdinfo 'nbds://127.0.0.1:10809/disk1?tls-certificates=./disk1-creds'
  vessel storage export create disk2 safe disk2 --protocol nbd --listen /run/disk2.sock
  nbdinfo 'nbd+unix:///disk2?socket=/run/disk2.sock'
  vessel storage export create share local data --protocol nfs --listen 127.0.0.1:2049
  nfs-ls 'nfs://127.0.0.1/share?nfsport=2049&mountport=2049'   # no portmapper needed
  vessel storage export create lab local data --protocol nfs --listen 0.0.0.0:2050 \\
    --allow 10.0.5.0/24,192.0.2.7   # others cannot mount it nor see it";

const EXPORT_SET_EXAMPLES: &str = "\
An NFS client left out loses access at its next request, the file handles it holds
included; an NBD client left out is disconnected.

Examples:
  vessel storage export set lab --allow 10.0.5.0/24 --allow 10.0.6.0/24
  vessel storage export set lab --allow-all";

const CREDENTIALS_EXAMPLES: &str = "\
The directory gets ca-cert.pem, client-cert.pem and client-key.pem, the names libnbd and
QEMU look for. Each call makes one more client (up to 64 an export); --revoke ends them
all (their open connections are closed at once).

Examples:
  vessel storage export credentials disk1 --out ./disk1-creds
  nbdcopy disk.raw 'nbds://127.0.0.1:10809/disk1?tls-certificates=./disk1-creds'
  qemu-img info --object tls-creds-x509,id=tls0,dir=./disk1-creds,endpoint=client \\
      --image-opts driver=nbd,server.type=inet,server.host=127.0.0.1,server.port=10809,\\
export=disk1,tls-creds=tls0
  vessel storage export credentials disk1 --revoke";

/// `vessel storage ...`
#[derive(Debug, Subcommand)]
pub enum StorageCommand {
    /// Storage pools: where volumes live.
    #[command(subcommand)]
    Pool(PoolCommand),
    /// Volumes: filesystems for containers, disks for VMs.
    #[command(subcommand)]
    Volume(VolumeCommand),
    /// Serve volumes over the network: NBD (block) or NFS (files).
    #[command(subcommand)]
    Export(ExportCommand),
}

/// Pool driver on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DriverArg {
    /// A directory.
    Dir,
    /// btrfs over disks or files.
    Btrfs,
    /// Vessel's RAID engine.
    Raid,
    /// RBD images in a Ceph cluster you run (block volumes for VMs).
    Ceph,
}

/// `vessel storage pool ...`
#[derive(Debug, Subcommand)]
pub enum PoolCommand {
    /// Create a pool (formats its sources).
    #[command(after_help = POOL_EXAMPLES)]
    Create {
        /// Pool name.
        name: String,
        /// Driver.
        #[arg(value_enum)]
        driver: DriverArg,
        /// A directory (dir), disk or file (btrfs, raid), repeatable; ceph: the RADOS pool
        /// (default: the pool's name; made if Ceph has none).
        #[arg(long = "source", value_name = "PATH")]
        sources: Vec<PathBuf>,
        /// Size of the loop file (btrfs) or of each member file (raid) Vessel creates.
        #[arg(long)]
        size: Option<String>,
        /// raid: number of member files to create with --size.
        #[arg(long)]
        members: Option<u32>,
        /// raid: raid0, raid1, raid5 or raid6; btrfs: single, raid0, raid1, raid10.
        #[arg(long)]
        level: Option<String>,
        /// raid: chunk size (a power of two, default 64KiB).
        #[arg(long)]
        chunk_size: Option<String>,
        /// raid1 in a cluster: the member that keeps the second copy (one file of --size
        /// here and one there; every write reaches both before it is acknowledged).
        #[arg(long, value_name = "MEMBER")]
        replica: Option<String>,
        /// raid in a cluster: make the pool of far copy NAME kept on this member (its
        /// primary, the MEMBER of MEMBER.POOL, is lost), volumes and all; refused unless the
        /// cluster records the copy current.
        #[arg(long, value_name = "NAME", conflicts_with_all = ["replica", "sources", "size", "members", "level"])]
        adopt: Option<String>,
        /// Free text.
        #[arg(long, default_value = "")]
        description: String,
        /// A label, `user.KEY=VALUE` (repeatable); ceph pools also take
        /// `ceph.conf=PATH` (default /etc/ceph/ceph.conf) and `ceph.user.name=NAME`
        /// (default admin); raid pools `raid.cache=none|writeback` (members with O_DIRECT,
        /// the default, or through the host's page cache: faster reads of recent data and
        /// writes held in memory until the next flush, for NBD exports and containers; VM
        /// disks cache for themselves).
        #[arg(short = 'c', long = "config", value_name = "user.KEY=VALUE")]
        config: Vec<String>,
    },
    /// List pools with capacity and usage.
    #[command(visible_alias = "ls")]
    List {
        /// `REMOTE:` lists a remote's instead of the default remote's.
        #[arg(value_name = "REMOTE:", value_parser = crate::remote::parse_remote_only)]
        _remote: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Show one pool.
    Info {
        /// Pool name.
        name: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Health: members, rebuild progress, last scrub.
    Status {
        /// Pool name.
        name: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// raid pools: take a member out, rebuild one onto a new disk, or scrub.
    #[command(
        after_help = "Examples:\n  vessel storage pool repair safe fail --member 2\n  vessel storage pool repair safe replace --member 2 --path /srv/disks/new.img\n  vessel storage pool repair safe scrub\n  vessel storage pool repair rp replace --member 0 --replica m2   # a far copy on member m2 (cluster)"
    )]
    Repair {
        /// Pool name.
        name: String,
        /// What to do.
        #[arg(value_enum)]
        action: RepairAction,
        /// Member slot (fail, replace).
        #[arg(long)]
        member: Option<u32>,
        /// The replacement disk or file (replace); a file is created when missing.
        #[arg(long)]
        path: Option<PathBuf>,
        /// replace, in a cluster, instead of --path: the member to keep the new member as a
        /// far copy (a raid1 pool without one, such as one adopted from a far copy).
        #[arg(long, value_name = "MEMBER", conflicts_with = "path")]
        replica: Option<String>,
        /// replace: rebuild at most this many bytes per second (e.g. 50MB).
        #[arg(long)]
        rate: Option<String>,
        /// fail: also a member the level cannot do without (its data becomes unreadable;
        /// for tests of that).
        #[arg(long)]
        force: bool,
    },
    /// Delete a pool without volumes (files Vessel created for it go too).
    #[command(visible_alias = "rm")]
    Delete {
        /// Pool name.
        name: String,
    },
}

/// Repair actions.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RepairAction {
    /// Take a member out of service.
    Fail,
    /// Rebuild a failed member onto a new disk or file.
    Replace,
    /// Check every stripe and repair what disagrees.
    Scrub,
}

/// Volume content on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ContentArg {
    /// A file tree for containers (and NFS).
    Filesystem,
    /// A disk for VMs (and NBD).
    Block,
}

/// `vessel storage volume ...`
#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// Create a volume, empty or as a clone.
    #[command(after_help = VOLUME_EXAMPLES)]
    Create {
        /// Pool.
        pool: String,
        /// Volume name.
        name: String,
        /// What it holds.
        #[arg(long = "type", value_enum, default_value_t = ContentArg::Filesystem)]
        content: ContentArg,
        /// Disk size (block) or quota (filesystem; btrfs and raid pools, not dir), e.g. 1GiB.
        #[arg(long)]
        size: Option<String>,
        /// Clone VOLUME or VOLUME/SNAPSHOT of the same pool.
        #[arg(long)]
        source: Option<String>,
        /// A label, `user.KEY=VALUE` (repeatable).
        #[arg(short = 'c', long = "config", value_name = "user.KEY=VALUE")]
        config: Vec<String>,
    },
    /// List the volumes of a pool.
    #[command(visible_alias = "ls")]
    List {
        /// Pool.
        pool: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Show one volume.
    Info {
        /// Pool.
        pool: String,
        /// Volume.
        name: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Change a volume's size (block) or quota (filesystem, on btrfs).
    Resize {
        /// Pool.
        pool: String,
        /// Volume.
        name: String,
        /// New size, e.g. 2GiB.
        size: String,
    },
    /// Delete a detached volume and its snapshots.
    #[command(visible_alias = "rm")]
    Delete {
        /// Pool.
        pool: String,
        /// Volume.
        name: String,
    },
    /// Take a read-only snapshot.
    Snapshot {
        /// Pool.
        pool: String,
        /// Volume.
        name: String,
        /// Snapshot name.
        snapshot: String,
    },
    /// Delete a snapshot.
    DeleteSnapshot {
        /// Pool.
        pool: String,
        /// Volume.
        name: String,
        /// Snapshot name.
        snapshot: String,
    },
    /// Roll a volume back to a snapshot (instances using it must be stopped).
    Restore {
        /// Pool.
        pool: String,
        /// Volume.
        name: String,
        /// Snapshot name.
        snapshot: String,
    },
    /// Attach to a stopped instance: a mount (containers) or a disk (VMs).
    Attach {
        /// Pool.
        pool: String,
        /// Volume.
        name: String,
        /// Instance.
        instance: String,
        /// Mount point inside a container.
        path: Option<String>,
    },
    /// Detach from a stopped instance.
    Detach {
        /// Pool.
        pool: String,
        /// Volume.
        name: String,
        /// Instance.
        instance: String,
    },
    /// Write a raw or qcow2 disk image into a block volume.
    Import {
        /// Pool.
        pool: String,
        /// Volume.
        name: String,
        /// The image file.
        file: PathBuf,
    },
}

/// Export protocol on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ProtocolArg {
    /// Block export (block volumes).
    Nbd,
    /// File export (filesystem volumes).
    Nfs,
}

/// `vessel storage export ...`
#[derive(Debug, Subcommand)]
pub enum ExportCommand {
    /// Export a volume.
    #[command(after_help = EXPORT_EXAMPLES)]
    Create {
        /// Export name (the NBD export name, or the NFS path /NAME).
        name: String,
        /// Pool.
        pool: String,
        /// Volume.
        volume: String,
        /// Protocol.
        #[arg(long, value_enum)]
        protocol: ProtocolArg,
        /// HOST:PORT, or a socket path for NBD (default 127.0.0.1:10809 / 127.0.0.1:2049).
        #[arg(long)]
        listen: Option<String>,
        /// Serve read-only.
        #[arg(long)]
        read_only: bool,
        /// NBD over TCP: serve plain NBD, without TLS, to anyone who reaches the address.
        #[arg(long)]
        no_tls: bool,
        /// On TCP: only clients in these networks may use the export (an address, or
        /// ADDRESS/PREFIX; repeat or separate with commas), others can neither open it nor
        /// see it listed. Default: every client that reaches the address (and, for NBD
        /// with TLS, holds credentials).
        #[arg(long, value_name = "NET", value_delimiter = ',')]
        allow: Vec<String>,
    },
    /// Change which client networks may use an export on TCP, while it serves.
    #[command(after_help = EXPORT_SET_EXAMPLES)]
    Set {
        /// Export name.
        name: String,
        /// Only clients in these networks (an address, or ADDRESS/PREFIX; repeat or
        /// separate with commas).
        #[arg(
            long,
            value_name = "NET",
            value_delimiter = ',',
            required_unless_present = "allow_all"
        )]
        allow: Vec<String>,
        /// Every client that reaches the address.
        #[arg(long, conflicts_with = "allow")]
        allow_all: bool,
    },
    /// Give one more client access to a TLS export: its credentials, in a directory.
    #[command(after_help = CREDENTIALS_EXAMPLES)]
    Credentials {
        /// Export name.
        name: String,
        /// Directory to write them to (made if missing, readable by you only).
        #[arg(long, value_name = "DIR", required_unless_present = "revoke")]
        out: Option<PathBuf>,
        /// Revoke every credential of the export instead.
        #[arg(long, conflicts_with = "out")]
        revoke: bool,
    },
    /// List exports.
    #[command(visible_alias = "ls")]
    List {
        /// `REMOTE:` lists a remote's instead of the default remote's.
        #[arg(value_name = "REMOTE:", value_parser = crate::remote::parse_remote_only)]
        _remote: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Stop serving an export (its NBD clients are disconnected).
    #[command(visible_alias = "rm")]
    Delete {
        /// Export name.
        name: String,
    },
}
