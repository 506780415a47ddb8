//! Typed QMP commands, replies and events (the subset Vessel uses).
//!
//! Each command is a type implementing [`QmpCommand`]: its wire name, its arguments (the
//! type itself, serialised) and its reply type. The client never pastes strings together.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A QMP command: `{"execute": NAME, "arguments": self}` answered by `Reply`.
pub trait QmpCommand: Serialize {
    /// The command's name on the wire.
    const NAME: &'static str;
    /// What `"return"` holds.
    type Reply: DeserializeOwned;
    /// Whether the command has arguments (`false` leaves out `"arguments"`).
    const HAS_ARGUMENTS: bool = false;
}

/// An empty `{}` reply.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct Empty {}

macro_rules! no_arg_command {
    ($(#[$doc:meta])* $ty:ident, $name:literal, $reply:ty) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, Default, Serialize)]
        pub struct $ty;
        impl QmpCommand for $ty {
            const NAME: &'static str = $name;
            type Reply = $reply;
        }
    };
}

no_arg_command!(
    /// Leaves capabilities negotiation mode; the first command of every session.
    QmpCapabilities, "qmp_capabilities", Empty
);
no_arg_command!(
    /// The run state of the VM.
    QueryStatus, "query-status", StatusInfo
);
no_arg_command!(
    /// Presses the ACPI power button (a graceful shutdown request to the guest).
    SystemPowerdown, "system_powerdown", Empty
);
no_arg_command!(
    /// Pauses all vCPUs.
    Stop, "stop", Empty
);
no_arg_command!(
    /// Resumes all vCPUs (also starts a VM started with `-S`).
    Cont, "cont", Empty
);
no_arg_command!(
    /// Resets the VM like a hardware reset button.
    SystemReset, "system_reset", Empty
);
no_arg_command!(
    /// Ends QEMU at once (the guest gets no chance to shut down).
    Quit, "quit", Empty
);
no_arg_command!(
    /// The VNC server's state.
    QueryVnc, "query-vnc", VncInfo
);
no_arg_command!(
    /// QEMU's version.
    QueryVersion, "query-version", VersionInfo
);
no_arg_command!(
    /// The character devices and their connection state.
    QueryChardev, "query-chardev", Vec<ChardevInfo>
);
no_arg_command!(
    /// Which accelerator runs the guest (KVM or TCG).
    QueryKvm, "query-kvm", KvmInfo
);

/// `human-monitor-command`: a line for the human monitor, for what QMP lacks (debugging).
#[derive(Debug, Clone, Serialize)]
pub struct HumanMonitorCommand {
    /// The command line.
    #[serde(rename = "command-line")]
    pub command_line: String,
}

impl QmpCommand for HumanMonitorCommand {
    const NAME: &'static str = "human-monitor-command";
    type Reply = String;
    const HAS_ARGUMENTS: bool = true;
}

/// Reply of `query-status`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct StatusInfo {
    /// Whether vCPUs run.
    pub running: bool,
    /// The run state.
    pub status: RunState,
}

/// QEMU's run states (`RunState` in the QAPI schema).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum RunState {
    /// Debug session.
    Debug,
    /// Waiting for an incoming migration.
    Inmigrate,
    /// An internal error happened.
    InternalError,
    /// An I/O error paused the guest.
    IoError,
    /// Paused (`stop`).
    Paused,
    /// Migration finished, guest paused.
    Postmigrate,
    /// Started with `-S`, not yet `cont`ed.
    Prelaunch,
    /// Migration in progress.
    FinishMigrate,
    /// Restoring a snapshot.
    RestoreVm,
    /// Running.
    Running,
    /// Saving a snapshot.
    SaveVm,
    /// The guest shut down (with `-no-shutdown`).
    Shutdown,
    /// Suspended to RAM.
    Suspended,
    /// A watchdog fired.
    Watchdog,
    /// The guest panicked.
    GuestPanicked,
    /// Colo replication.
    Colo,
}

/// Reply of `query-vnc`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct VncInfo {
    /// Whether a VNC server runs.
    pub enabled: bool,
    /// Where it listens (`host` is the socket path for a unix socket).
    #[serde(default)]
    pub host: Option<String>,
    /// Address family (`unix`, `ipv4`, ...).
    #[serde(default)]
    pub family: Option<String>,
    /// Authentication scheme.
    #[serde(default)]
    pub auth: Option<String>,
    /// Connected clients.
    #[serde(default)]
    pub clients: Vec<serde_json::Value>,
}

/// Reply of `query-version`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct VersionInfo {
    /// Version numbers.
    pub qemu: VersionTriple,
    /// Distribution package string.
    #[serde(default)]
    pub package: String,
}

/// major.minor.micro.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub struct VersionTriple {
    /// Major.
    pub major: u32,
    /// Minor.
    pub minor: u32,
    /// Micro.
    pub micro: u32,
}

/// One entry of `query-chardev`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct ChardevInfo {
    /// The chardev id.
    pub label: String,
    /// Its backend, e.g. `unix:/run/x.sock,server=on`.
    pub filename: String,
    /// Whether a frontend (device) has it open.
    #[serde(rename = "frontend-open")]
    pub frontend_open: bool,
}

/// Reply of `query-kvm`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub struct KvmInfo {
    /// Whether KVM runs the guest.
    pub enabled: bool,
    /// Whether KVM is available.
    pub present: bool,
}

/// The greeting QEMU sends when a client connects.
#[derive(Debug, Clone, Deserialize)]
pub struct Greeting {
    /// Version and capabilities.
    #[serde(rename = "QMP")]
    pub qmp: GreetingBody,
}

/// Body of the greeting.
#[derive(Debug, Clone, Deserialize)]
pub struct GreetingBody {
    /// QEMU's version.
    pub version: VersionInfo,
    /// Protocol capabilities offered.
    #[serde(default)]
    pub capabilities: Vec<String>,
}

/// An asynchronous event from QEMU.
#[derive(Debug, Clone, PartialEq)]
pub struct QmpEvent {
    /// What happened.
    pub kind: EventKind,
    /// When, in microseconds since the epoch (QEMU's clock).
    pub timestamp_us: u64,
}

/// The events Vessel acts on, and the rest by name.
#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    /// The VM shut down (`guest` is true when the guest itself asked).
    Shutdown {
        /// Whether the guest initiated it.
        guest: bool,
        /// QEMU's reason (`guest-shutdown`, `host-qmp-quit`, ...).
        reason: String,
    },
    /// The ACPI power button was pressed (`system_powerdown`).
    Powerdown,
    /// The VM was reset.
    Reset {
        /// Whether the guest initiated it.
        guest: bool,
        /// QEMU's reason.
        reason: String,
    },
    /// vCPUs stopped.
    Stop,
    /// vCPUs resumed.
    Resume,
    /// Not from QEMU: the QMP connection closed (QEMU exited, or the client was dropped).
    /// No event follows it.
    Closed,
    /// Any other event, with its data.
    Other {
        /// Event name.
        name: String,
        /// Its `data`, or null.
        data: serde_json::Value,
    },
}

#[derive(Deserialize)]
struct ShutdownData {
    #[serde(default)]
    guest: bool,
    #[serde(default)]
    reason: String,
}

impl QmpEvent {
    /// Builds an event from its wire form `{"event": .., "data": .., "timestamp": ..}`.
    pub(crate) fn from_wire(name: &str, data: serde_json::Value, ts: &serde_json::Value) -> Self {
        let secs = ts.get("seconds").and_then(|v| v.as_u64()).unwrap_or(0);
        let micros = ts.get("microseconds").and_then(|v| v.as_u64()).unwrap_or(0);
        let shutdown_like = || {
            serde_json::from_value::<ShutdownData>(data.clone()).unwrap_or(ShutdownData {
                guest: false,
                reason: String::new(),
            })
        };
        let kind = match name {
            "SHUTDOWN" => {
                let d = shutdown_like();
                EventKind::Shutdown {
                    guest: d.guest,
                    reason: d.reason,
                }
            }
            "RESET" => {
                let d = shutdown_like();
                EventKind::Reset {
                    guest: d.guest,
                    reason: d.reason,
                }
            }
            "POWERDOWN" => EventKind::Powerdown,
            "STOP" => EventKind::Stop,
            "RESUME" => EventKind::Resume,
            _ => EventKind::Other {
                name: name.to_string(),
                data,
            },
        };
        QmpEvent {
            kind,
            timestamp_us: secs * 1_000_000 + micros,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_and_events_parse() {
        let s: StatusInfo =
            serde_json::from_str(r#"{"status":"running","singlestep":false,"running":true}"#)
                .unwrap();
        assert_eq!(s.status, RunState::Running);
        let s: StatusInfo =
            serde_json::from_str(r#"{"status":"prelaunch","running":false}"#).unwrap();
        assert_eq!(s.status, RunState::Prelaunch);
        let e = QmpEvent::from_wire(
            "SHUTDOWN",
            serde_json::json!({"guest": true, "reason": "guest-shutdown"}),
            &serde_json::json!({"seconds": 2, "microseconds": 5}),
        );
        assert_eq!(
            e,
            QmpEvent {
                kind: EventKind::Shutdown {
                    guest: true,
                    reason: "guest-shutdown".into()
                },
                timestamp_us: 2_000_005
            }
        );
        let v: VncInfo = serde_json::from_str(
            r#"{"enabled":true,"host":"/run/v.sock","family":"unix","auth":"none","clients":[]}"#,
        )
        .unwrap();
        assert_eq!(v.family.as_deref(), Some("unix"));
    }
}

/// One block device as `query-block` shows it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct BlockInfo {
    /// The legacy drive name (empty for `-blockdev` nodes).
    #[serde(default)]
    pub device: String,
    /// The guest device's qdev path.
    #[serde(default)]
    pub qdev: Option<String>,
    /// The medium, when one is inserted.
    #[serde(default)]
    pub inserted: Option<BlockInserted>,
}

/// The medium of a block device.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct BlockInserted {
    /// The file (or URI) the top node reads.
    pub file: String,
    /// The top node's name.
    #[serde(default, rename = "node-name")]
    pub node_name: Option<String>,
    /// Whether the guest may not write it.
    #[serde(default)]
    pub ro: bool,
    /// The dirty bitmaps on that node.
    #[serde(default, rename = "dirty-bitmaps")]
    pub dirty_bitmaps: Vec<DirtyBitmap>,
}

/// A dirty bitmap: which clusters of a node were written since it started.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct DirtyBitmap {
    /// Its name.
    #[serde(default)]
    pub name: String,
    /// Bytes it marks dirty.
    #[serde(default)]
    pub count: u64,
    /// Bytes each bit stands for.
    #[serde(default)]
    pub granularity: u64,
    /// Whether it records writes now.
    #[serde(default)]
    pub recording: bool,
    /// Whether a job uses it now.
    #[serde(default)]
    pub busy: bool,
    /// Whether it cannot be trusted (a persistent one whose QEMU did not close it).
    #[serde(default)]
    pub inconsistent: bool,
}

no_arg_command!(
    /// The block devices and their media.
    QueryBlock, "query-block", Vec<BlockInfo>
);

/// `block_resize`: tells a node (and the guest's device on it) its image's new size.
#[derive(Debug, Clone, Serialize)]
pub struct BlockResize {
    /// The node.
    #[serde(rename = "node-name")]
    pub node_name: String,
    /// New size, bytes.
    pub size: u64,
}

impl QmpCommand for BlockResize {
    const NAME: &'static str = "block_resize";
    type Reply = Empty;
    const HAS_ARGUMENTS: bool = true;
}

/// `qom-set`: sets a property of a QOM object (a device's, by `/machine/peripheral/ID`).
#[derive(Debug, Clone, Serialize)]
pub struct QomSet {
    /// The object's path.
    pub path: String,
    /// The property.
    pub property: String,
    /// Its new value.
    pub value: serde_json::Value,
}

impl QmpCommand for QomSet {
    const NAME: &'static str = "qom-set";
    type Reply = Empty;
    const HAS_ARGUMENTS: bool = true;
}

/// `qom-get`: reads a property of a QOM object.
#[derive(Debug, Clone, Serialize)]
pub struct QomGet {
    /// The object's path.
    pub path: String,
    /// The property.
    pub property: String,
}

impl QmpCommand for QomGet {
    const NAME: &'static str = "qom-get";
    type Reply = serde_json::Value;
    const HAS_ARGUMENTS: bool = true;
}

/// A vCPU slot as `query-hotpluggable-cpus` shows it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct HotpluggableCpu {
    /// The CPU device type to add there (e.g. `max-x86_64-cpu`).
    #[serde(rename = "type")]
    pub cpu_type: String,
    /// Where the slot is (`socket-id`, `core-id`, `thread-id`, ...), as `device_add` takes it.
    pub props: serde_json::Map<String, serde_json::Value>,
    /// The plugged CPU's path; none for an empty slot.
    #[serde(default, rename = "qom-path")]
    pub qom_path: Option<String>,
}

no_arg_command!(
    /// The vCPU slots, plugged or not.
    QueryHotpluggableCpus, "query-hotpluggable-cpus", Vec<HotpluggableCpu>
);

/// `device_add`: plugs a device (here, a vCPU into a slot).
#[derive(Debug, Clone, Serialize)]
pub struct DeviceAdd {
    /// The device type.
    pub driver: String,
    /// Its id.
    pub id: String,
    /// Its properties.
    #[serde(flatten)]
    pub props: serde_json::Map<String, serde_json::Value>,
}

impl QmpCommand for DeviceAdd {
    const NAME: &'static str = "device_add";
    type Reply = Empty;
    const HAS_ARGUMENTS: bool = true;
}

/// `blockdev-snapshot-internal-sync`: an internal snapshot of one qcow2 node (its disk only).
#[derive(Debug, Clone, Serialize)]
pub struct BlockdevSnapshotInternalSync {
    /// The node.
    pub device: String,
    /// The snapshot's name.
    pub name: String,
}

impl QmpCommand for BlockdevSnapshotInternalSync {
    const NAME: &'static str = "blockdev-snapshot-internal-sync";
    type Reply = Empty;
    const HAS_ARGUMENTS: bool = true;
}

/// `blockdev-snapshot-delete-internal-sync`: deletes an internal snapshot of one node.
#[derive(Debug, Clone, Serialize)]
pub struct BlockdevSnapshotDeleteInternalSync {
    /// The node.
    pub device: String,
    /// The snapshot's name.
    pub name: String,
}

impl QmpCommand for BlockdevSnapshotDeleteInternalSync {
    const NAME: &'static str = "blockdev-snapshot-delete-internal-sync";
    type Reply = serde_json::Value;
    const HAS_ARGUMENTS: bool = true;
}

/// `transaction`: several block actions done at one point in time (all or none).
#[derive(Debug, Clone, Serialize)]
pub struct Transaction {
    /// The actions, in order.
    pub actions: Vec<TransactionAction>,
}

/// One action of a [`Transaction`].
#[derive(Debug, Clone, Serialize)]
pub struct TransactionAction {
    /// Its command's name (`blockdev-backup`, `block-dirty-bitmap-add`, ...).
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// That command's arguments.
    pub data: serde_json::Value,
}

impl QmpCommand for Transaction {
    const NAME: &'static str = "transaction";
    type Reply = Empty;
    const HAS_ARGUMENTS: bool = true;
}

/// `blockdev-add`: a new block node, its options as QEMU's schema spells them.
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub struct BlockdevAdd(pub serde_json::Value);

impl QmpCommand for BlockdevAdd {
    const NAME: &'static str = "blockdev-add";
    type Reply = Empty;
    const HAS_ARGUMENTS: bool = true;
}

/// `blockdev-del`: removes a node that nothing uses.
#[derive(Debug, Clone, Serialize)]
pub struct BlockdevDel {
    /// The node.
    #[serde(rename = "node-name")]
    pub node_name: String,
}

impl QmpCommand for BlockdevDel {
    const NAME: &'static str = "blockdev-del";
    type Reply = Empty;
    const HAS_ARGUMENTS: bool = true;
}

/// `block-dirty-bitmap-remove`.
#[derive(Debug, Clone, Serialize)]
pub struct BlockDirtyBitmapRemove {
    /// The node it is on.
    pub node: String,
    /// Its name.
    pub name: String,
}

impl QmpCommand for BlockDirtyBitmapRemove {
    const NAME: &'static str = "block-dirty-bitmap-remove";
    type Reply = Empty;
    const HAS_ARGUMENTS: bool = true;
}

/// A background job as `query-jobs` shows it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct JobInfo {
    /// Its id.
    pub id: String,
    /// `created`, `running`, ..., `concluded`.
    pub status: String,
    /// Progress: work done of `total`.
    #[serde(default, rename = "current-progress")]
    pub current: u64,
    /// The work it has to do.
    #[serde(default, rename = "total-progress")]
    pub total: u64,
    /// Why it failed, once concluded.
    #[serde(default)]
    pub error: Option<String>,
}

no_arg_command!(
    /// The background jobs (block copies and the like).
    QueryJobs, "query-jobs", Vec<JobInfo>
);

/// `job-dismiss`: forgets a concluded job.
#[derive(Debug, Clone, Serialize)]
pub struct JobDismiss {
    /// Its id.
    pub id: String,
}

impl QmpCommand for JobDismiss {
    const NAME: &'static str = "job-dismiss";
    type Reply = Empty;
    const HAS_ARGUMENTS: bool = true;
}

/// `job-cancel`: stops a job (it concludes with an error).
#[derive(Debug, Clone, Serialize)]
pub struct JobCancel {
    /// Its id.
    pub id: String,
}

impl QmpCommand for JobCancel {
    const NAME: &'static str = "job-cancel";
    type Reply = Empty;
    const HAS_ARGUMENTS: bool = true;
}
