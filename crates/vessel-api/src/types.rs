//! Request and response bodies of the REST API.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Body of every error response: a message a person can act on and the HTTP status code.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct ErrorResponse {
    /// What went wrong and, where there is one, what to do about it.
    pub error: String,
    /// HTTP status code, repeated for clients that only see the body.
    pub code: u16,
}

/// What the daemon says about itself at `GET /1.0`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct ServerInfo {
    /// REST API version ("1.0").
    pub api_version: String,
    /// Version of the `vesseld` binary.
    pub server_version: String,
    /// Process id of the daemon.
    pub pid: u32,
    /// Directory holding the daemon's state.
    pub root_dir: String,
    /// State store backend ("sqlite").
    pub store: String,
    /// Host facts detected at start-up.
    pub host: HostInfo,
}

/// Host facts the daemon detected at start-up.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct HostInfo {
    /// Kernel release (`uname -r`).
    pub kernel: String,
    /// Cgroup layout in use: "v1" (legacy or hybrid) or "v2" (unified).
    pub cgroup_version: String,
    /// Whether unprivileged (user-namespaced) containers are available.
    pub user_namespaces: bool,
    /// The accelerator VMs run with ("kvm" or "tcg"), once a VM start has probed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_accelerator: Option<String>,
    /// Why that accelerator: what KVM did, or why it was not tried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_accelerator_reason: Option<String>,
}

/// Kind of instance.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum InstanceType {
    /// A system container run by Vessel's own runtime.
    #[default]
    Container,
    /// A virtual machine run by QEMU.
    Vm,
}

/// Lifecycle status of an instance.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum InstanceStatus {
    /// Being created by an operation.
    Creating,
    /// Not running.
    Stopped,
    /// Being started.
    Starting,
    /// Running.
    Running,
    /// Being stopped.
    Stopping,
    /// Frozen (paused) by the cgroup freezer.
    Frozen,
    /// Broken: a step failed; the message in `Instance::error` says which.
    Error,
}

impl InstanceStatus {
    /// Lower-case name as used on the wire and in tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Creating => "creating",
            Self::Stopped => "stopped",
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Stopping => "stopping",
            Self::Frozen => "frozen",
            Self::Error => "error",
        }
    }
}

/// Resource limits of an instance. Absent fields mean "no limit".
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// CPU quota in cores (e.g. 0.5 = half a core), enforced by CFS bandwidth control.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<f64>,
    /// Relative CPU weight, 1..=10000 (100 is the default share).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_weight: Option<u64>,
    /// CPUs the instance may run on, in cpuset list syntax ("0", "0-1", "0,2").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpuset: Option<String>,
    /// Memory limit in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<u64>,
    /// Swap allowed on top of `memory`, in bytes (0 forbids swap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_swap: Option<u64>,
    /// Maximum number of processes and threads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u64>,
    /// Relative block I/O weight, 10..=1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_weight: Option<u16>,
    /// Block I/O throttles per device.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub io_throttle: Vec<IoThrottle>,
    /// Size of a container's root disk in bytes: its writable layer lives on a file system
    /// of this size (an ext4 image, or a btrfs subvolume with a quota in the pool named by
    /// `storage`), so writing more fails inside the container with "no space" (EDQUOT on
    /// btrfs). Set at creation; changed with `PUT /1.0/instances/{name}/root-disk`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<u64>,
}

/// A bandwidth or IOPS ceiling on one block device.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct IoThrottle {
    /// Device as "MAJOR:MINOR".
    pub device: String,
    /// Read bytes per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_bps: Option<u64>,
    /// Write bytes per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_bps: Option<u64>,
    /// Read operations per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_iops: Option<u64>,
    /// Write operations per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_iops: Option<u64>,
}

/// Body of `POST /1.0/instances`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InstanceCreate {
    /// Instance name: 1-63 characters, letters, digits and '-', starting with a letter.
    pub name: String,
    /// Image alias or fingerprint (a unique prefix of at least 12 characters is enough).
    pub image: String,
    /// Container (default) or VM.
    #[serde(default, rename = "type")]
    pub instance_type: InstanceType,
    /// Run without a user namespace (container root is host root). Off by default.
    #[serde(default)]
    pub privileged: bool,
    /// Unprivileged containers (`security.idmap.isolated`): with true (the default) the
    /// container gets a host id range of its own; false shares the daemon's base range with
    /// every other container created so (their roots are then one host user). Refused for
    /// privileged containers and VMs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idmap_isolated: Option<bool>,
    /// Resource limits.
    #[serde(default)]
    pub limits: Limits,
    /// Start the instance once created (default true).
    #[serde(default = "default_true")]
    pub start: bool,
    /// Command to run as the instance's init instead of the image's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Extra environment for the init process.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub environment: BTreeMap<String, String>,
    /// SSH public keys (one `authorized_keys` line each) installed for root in a VM guest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ssh_keys: Vec<String>,
    /// The storage pool to hold the root disk. A VM's: a block volume `NAME-root` written
    /// from the image's disk (without it the root disk is a qcow2 overlay beside the
    /// instance). A container's (with `limits.disk`): a volume `NAME-root` holding its
    /// writable layer, a subvolume with a quota on btrfs, an ext4 image on dir (without it
    /// the image lies in the instance's directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<String>,
    /// Networks to give the instance a NIC on, in order (`eth0` first). Empty: the default
    /// network, when the daemon has one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<String>,
    /// No NIC at all, not even on the default network (only the loopback).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_network: bool,
    /// Profiles applied in order (their keys, then the limits and environment given here);
    /// their networks give NICs when `networks` names none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub profiles: Vec<String>,
    /// Other configuration keys (`boot.*`, `user.*`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,
    /// Volumes to attach before its first start (its profiles' too).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<crate::config::VolumeDevice>,
}

fn default_true() -> bool {
    true
}

/// An instance as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct Instance {
    /// Name, unique within its project.
    pub name: String,
    /// The project it belongs to (shown in listings of every project).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// Container or VM.
    #[serde(rename = "type")]
    pub instance_type: InstanceType,
    /// Current lifecycle status.
    pub status: InstanceStatus,
    /// Fingerprint of the image it was created from.
    pub image: String,
    /// Whether it runs without a user namespace.
    pub privileged: bool,
    /// The host ids an unprivileged container's ids 0-65535 map to; for a VM, the range whose
    /// first id (`host_base`) is the host uid and gid its QEMU runs as (none for privileged
    /// containers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idmap: Option<InstanceIdmap>,
    /// Resource limits.
    pub limits: Limits,
    /// Init command.
    pub command: Vec<String>,
    /// Extra environment for the init process.
    pub environment: BTreeMap<String, String>,
    /// Its other configuration keys (`boot.*`, `user.*`); limits and environment are the
    /// fields above.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,
    /// The profiles it was made with, in order; a change to one reaches it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub profiles: Vec<String>,
    /// The keys set on the instance itself, which its profiles do not override (the daemon's
    /// own bookkeeping, not shown).
    #[serde(skip)]
    pub own_config: BTreeMap<String, String>,
    /// The networks and volumes its profiles gave it (the daemon's own bookkeeping, not shown).
    #[serde(skip)]
    pub from_profiles: crate::config::ProfileDevices,
    /// SSH public keys installed for root in a VM guest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ssh_keys: Vec<String>,
    /// Storage pool holding the root disk (a VM's, or a container's writable layer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<String>,
    /// Creation time, RFC 3339.
    pub created_at: String,
    /// Exit code of the last run of the init process, if it has exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit_code: Option<i32>,
    /// How the last run ended, in words (a VM: the guest powered off, stopped, killed by a
    /// signal or the OOM killer, QEMU crashed); kept across daemon restarts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit_reason: Option<String>,
    /// Why the instance is in the `error` status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Live usage; present on `GET /1.0/instances/{name}` and in `?recursion=1` listings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<InstanceState>,
    /// How a running VM runs (profile, accelerator and why).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm: Option<VmDetails>,
    /// Its NICs, `eth0` first.
    #[serde(default)]
    pub nics: Vec<InstanceNic>,
    /// Volumes attached to it.
    #[serde(default)]
    pub volumes: Vec<InstanceVolume>,
    /// A container's root disk (with `limits.disk`): its size and use; present on
    /// `GET /1.0/instances/{name}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_disk: Option<RootDisk>,
    /// The cluster member it lives on (on a member of a cluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
}

/// A container's root disk: the file system its writable layer lives on.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct RootDisk {
    /// Its size in bytes (`limits.disk`).
    pub size_bytes: u64,
    /// Bytes its files use (without the file system's own metadata), when they could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_bytes: Option<u64>,
    /// What it is: "ext4 image" or "btrfs subvolume".
    pub kind: String,
    /// The storage pool holding it (none: the instance's own directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
}

/// One NIC of an instance.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct InstanceNic {
    /// The network it is on.
    pub network: String,
    /// Interface name inside the instance (`eth0`, ...).
    pub interface: String,
    /// MAC address.
    pub mac: String,
    /// IPv4 address (with the network's prefix length, e.g. `10.42.0.2/24`).
    pub ipv4: String,
    /// IPv6 address on a dual-stack network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<String>,
    /// The network's gateway, also its DNS server (none on a VLAN segment, which is layer 2
    /// only). The first NIC with one holds the default route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// VLAN segment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
}

/// One volume attached to an instance.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct InstanceVolume {
    /// Storage pool.
    pub pool: String,
    /// Volume name.
    pub volume: String,
    /// `filesystem` or `block`.
    pub content: String,
    /// Mount point inside a container; empty for a VM disk.
    #[serde(default)]
    pub path: String,
}

/// The host id range of an unprivileged container or a VM.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct InstanceIdmap {
    /// Host uid and gid of the container's root (its id 0), or of a VM's QEMU.
    pub host_base: u32,
    /// Number of ids mapped (65536).
    pub size: u32,
    /// Whether the range is the container's own (`security.idmap.isolated`) or shared with
    /// other containers.
    pub isolated: bool,
}

/// How a running virtual machine runs.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct VmDetails {
    /// `para` (direct kernel boot, virtio devices) or `full` (firmware, emulated devices).
    pub profile: String,
    /// `kvm` or `tcg`.
    pub accel: String,
    /// Why that accelerator: what the KVM probe found.
    pub accel_reason: String,
    /// Whether the guest agent's port is there (exec works through it).
    pub agent: bool,
    /// Whether a VNC display is served (the `full` profile).
    pub vnc: bool,
}

/// Live state of a running instance, read from its cgroups.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct InstanceState {
    /// Host pid of the init process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    /// Total CPU time consumed, nanoseconds.
    pub cpu_usage_ns: u64,
    /// Memory in use, bytes.
    pub memory_usage_bytes: u64,
    /// Highest memory use seen, bytes (where the cgroup records it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_peak_bytes: Option<u64>,
    /// Times the memory limit was hit and the OOM killer ran.
    pub oom_kills: u64,
    /// Processes and threads.
    pub pids: u64,
    /// Bytes read from block devices by the instance's processes (its cgroup's count).
    #[serde(default)]
    pub disk_read_bytes: u64,
    /// Bytes written to block devices by the instance's processes.
    #[serde(default)]
    pub disk_write_bytes: u64,
}

/// One sample of an instance's use, in `GET /1.0/instances/{name}/history`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct HistoryPoint {
    /// When, in seconds since the Unix epoch.
    pub time: i64,
    /// CPU time used since the instance started, seconds (cumulative: plot its rate).
    pub cpu_seconds: f64,
    /// Memory in use, bytes.
    pub memory_bytes: u64,
    /// Bytes read and written to block devices since the instance started (cumulative).
    #[serde(default)]
    pub disk_bytes: u64,
    /// Bytes received and sent by its NICs (cumulative; a NIC's counters start with it).
    #[serde(default)]
    pub network_bytes: u64,
}

/// The right size of one resource of an instance, from its recorded use.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct ResourceSizing {
    /// How many samples it rests on.
    pub samples: u64,
    /// The 95th percentile of the samples (nearest rank): cores, or bytes.
    pub p95: f64,
    /// The p95 with the headroom, rounded up (0.01 core, 1 MiB).
    pub recommended: f64,
    /// The instance's limit, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<f64>,
    /// `over` (limit more than twice the recommendation), `under` (p95 at 90 % of the
    /// limit or more), `fits`, or `nolimit`.
    pub verdict: String,
    /// One line with the figures, for a person to check.
    pub explanation: String,
}

/// The right sizes of one instance.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct InstanceSizing {
    /// Instance name.
    pub name: String,
    /// Cores, from the rate of its cpu time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<ResourceSizing>,
    /// Memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<ResourceSizing>,
    /// Why a size is missing (too few samples).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// Answer of `GET /1.0/plan/consolidate`: right sizes from the recorded use; on a cluster
/// (later) also the members the work needs and the migrations that get there.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct ConsolidationPlan {
    /// Headroom above the p95, as a fraction (0.2 is 20 %).
    pub headroom: f64,
    /// Seconds between the samples the sizes rest on.
    pub interval_seconds: u64,
    /// Per instance.
    pub instances: Vec<InstanceSizing>,
    /// What the plan covers: one host is right-sized only (no members to empty).
    pub scope: String,
}

/// The recent use of one instance, kept by the daemon (bounded; lost at a restart).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct InstanceHistory {
    /// Seconds between samples.
    pub interval_seconds: u64,
    /// Samples, oldest first.
    pub points: Vec<HistoryPoint>,
}

/// A lifecycle action on `PUT /1.0/instances/{name}/state`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StateAction {
    /// Start a stopped instance.
    Start,
    /// Stop: the stop signal, then SIGKILL after the timeout (or at once with `force`).
    Stop,
    /// Stop then start.
    Restart,
    /// Freeze every process.
    Pause,
    /// Thaw a frozen instance.
    Resume,
}

/// Body of `PUT /1.0/instances/{name}/state`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StateChange {
    /// What to do.
    pub action: StateAction,
    /// Seconds to wait for a graceful stop before killing (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
    /// Kill at once instead of asking the init to stop.
    #[serde(default)]
    pub force: bool,
}

/// Body of `POST /1.0/instances/{name}/exec`, sent as the upgrade request's JSON body.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    /// Program and arguments.
    pub command: Vec<String>,
    /// Extra environment.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub environment: BTreeMap<String, String>,
    /// Working directory inside the instance (default "/").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Allocate a pseudo-terminal (interactive use).
    #[serde(default)]
    pub tty: bool,
    /// Initial terminal width, with `tty`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u16>,
    /// Initial terminal height, with `tty`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u16>,
    /// User id inside the instance (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// Group id inside the instance (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    /// User by name or id, optionally with a group (`web`, `web:adm`, `1000:100`), looked up
    /// in the instance's own /etc/passwd and /etc/group; instead of `uid` and `gid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// Metadata of a file inside an instance, returned by a file push and in headers of a pull.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct FileInfo {
    /// Absolute path inside the instance.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// Owner uid as seen inside the instance.
    pub uid: u32,
    /// Owner gid as seen inside the instance.
    pub gid: u32,
}

/// The kind of a file inside an instance.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FileKind {
    /// A regular file.
    File,
    /// A directory.
    Directory,
    /// A symbolic link.
    Symlink,
    /// Anything else (FIFO, socket, device): listed, never read or written.
    Other,
}

impl FileKind {
    /// The lowercase name used on the wire and in the `type` query parameter.
    pub fn as_str(self) -> &'static str {
        match self {
            FileKind::File => "file",
            FileKind::Directory => "directory",
            FileKind::Symlink => "symlink",
            FileKind::Other => "other",
        }
    }
}

/// One entry of a directory inside an instance.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct FileEntry {
    /// Name within the directory.
    pub name: String,
    /// What it is.
    #[serde(rename = "type")]
    pub kind: FileKind,
    /// Size in bytes.
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// Owner uid as seen inside the instance.
    pub uid: u32,
    /// Owner gid as seen inside the instance.
    pub gid: u32,
    /// A symbolic link's target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// What an image is built from.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ImageSource {
    /// A minimal root file system from Debian's `busybox-static`.
    Busybox,
    /// A Debian root file system made by `debootstrap --variant=minbase`.
    Debian,
    /// A bootable virtual-machine image: Debian's cloud kernel with a busybox initramfs, or an
    /// ext4 disk made from the busybox tree.
    Vm,
}

/// Layout of a built VM image.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum VmLayout {
    /// Kernel and a busybox initramfs that runs from memory (boots in seconds under TCG).
    #[default]
    Initramfs,
    /// Kernel, a small initramfs and an ext4 root disk (qcow2).
    Disk,
}

/// Body of `POST /1.0/images`: build an image.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ImageBuild {
    /// What to build it from.
    pub source: ImageSource,
    /// Alias to give it (default: the source's name, e.g. "debian/bookworm").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// Debian release for the `debian` source (default "bookworm").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    /// Layout of a `vm` image (default `initramfs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_layout: Option<VmLayout>,
}

/// Body of `POST /1.0/images/pull`: pull an image from an OCI distribution registry.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ImagePull {
    /// `HOST[:PORT]/NAME[:TAG|@sha256:DIGEST]`.
    pub reference: String,
    /// Alias to give it (default: the reference without its host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// Talk plain HTTP to this registry (for a local registry without TLS).
    #[serde(default)]
    pub insecure: bool,
}

/// Body of `POST /1.0/images/{image}/aliases`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ImageAlias {
    /// The new name; an alias held by another image moves to this one.
    pub alias: String,
}

/// Body of `POST /1.0/instances/{name}/publish`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct InstancePublish {
    /// Alias of the new image.
    pub alias: String,
}

/// Body of `PUT /1.0/instances/{name}/root-disk`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RootDiskResize {
    /// The container's new `limits.disk`, in bytes. An ext4 image only grows (online where
    /// the daemon may); a btrfs subvolume's quota also shrinks, to no less than it holds.
    pub size: u64,
}

/// Kind of image.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ImageKind {
    /// A root file system for containers, as layers.
    #[default]
    Container,
    /// A bootable virtual machine: kernel, initramfs and optionally a disk.
    Vm,
}

/// An image, stored content-addressed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct Image {
    /// SHA-256 of the image's canonical content (for pulled or imported images, of its
    /// manifest), hex.
    pub fingerprint: String,
    /// Names that refer to it.
    pub aliases: Vec<String>,
    /// How it was made ("busybox", "debian/bookworm", "pull HOST/NAME:TAG", "import", ...).
    pub source: String,
    /// Container or VM image.
    #[serde(default)]
    pub kind: ImageKind,
    /// Size on disk, bytes.
    pub size_bytes: u64,
    /// Layers of a container image, bottom first, by the digest of their content.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<String>,
    /// Default init command (entrypoint then arguments).
    pub command: Vec<String>,
    /// Environment the image asks for (`KEY=value`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub environment: Vec<String>,
    /// Working directory of the command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// User the command runs as (`uid` or `uid:gid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Ports the image says it listens on ("80/tcp"), as metadata.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exposed_ports: Vec<String>,
    /// Signal that asks the image's init to shut down ("SIGTERM", "SIGUSR2", ...).
    pub stop_signal: String,
    /// Creation time, RFC 3339.
    pub created_at: String,
    /// In a cluster, the members holding it, in the list of every member's images
    /// (`GET /1.0/images?members=all`): a launch anywhere sends it along from one of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub locations: Vec<String>,
}

/// Status of an operation.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OperationStatus {
    /// Queued, not started.
    Pending,
    /// Under way.
    Running,
    /// Finished well.
    Success,
    /// Finished with an error (see `error`).
    Failure,
    /// Cancelled on request.
    Cancelled,
}

impl OperationStatus {
    /// Whether the operation has ended.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Success | Self::Failure | Self::Cancelled)
    }
}

/// A long task (launch, build, stop, ...) with progress and cancel.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct Operation {
    /// Unique id (UUID).
    pub id: String,
    /// What it does, for people ("Creating instance c1").
    pub description: String,
    /// Current status.
    pub status: OperationStatus,
    /// API paths of the objects it acts on.
    pub resources: Vec<String>,
    /// Completion, 0-100, where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<u8>,
    /// Current stage, for people ("unpacking", "starting").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    /// Error message of a failed operation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Whether `DELETE /1.0/operations/{id}` can cancel it now.
    pub may_cancel: bool,
    /// Creation time, RFC 3339.
    pub created_at: String,
    /// Last change, RFC 3339.
    pub updated_at: String,
}

/// Kind of an event on `/1.0/events`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// An object was created, started, stopped, deleted, ...
    Lifecycle,
    /// An operation was created or changed.
    Operation,
}

/// One line of the `/1.0/events` stream (newline-delimited JSON).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct Event {
    /// Kind of event.
    pub kind: EventKind,
    /// When it happened, RFC 3339.
    pub timestamp: String,
    /// For lifecycle events: what happened ("instance-started").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// For lifecycle events: API path of the object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// For operation events: the operation as it now is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<Operation>,
}
