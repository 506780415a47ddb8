//! The QMP commands of live migration: the memory and device state (`migrate`,
//! `migrate-incoming`), and the disks mirrored to the target's NBD exports
//! (`blockdev-mirror`, `nbd-server-start`, `block-export-add`).

use serde::{Deserialize, Serialize};

use super::{Empty, QmpCommand};

macro_rules! command {
    ($ty:ident, $name:literal, $reply:ty) => {
        impl QmpCommand for $ty {
            const NAME: &'static str = $name;
            type Reply = $reply;
            const HAS_ARGUMENTS: bool = true;
        }
    };
}

/// One migration capability on or off.
#[derive(Debug, Clone, Serialize)]
pub struct MigrationCapability {
    /// Its name (`multifd`, `pause-before-switchover`, ...).
    pub capability: String,
    /// On or off.
    pub state: bool,
}

/// `migrate-set-capabilities`.
#[derive(Debug, Clone, Serialize)]
pub struct MigrateSetCapabilities {
    /// The capabilities to set.
    pub capabilities: Vec<MigrationCapability>,
}
command!(MigrateSetCapabilities, "migrate-set-capabilities", Empty);

/// `migrate-set-parameters`: its parameters as QEMU's schema spells them.
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub struct MigrateSetParameters(pub serde_json::Value);
command!(MigrateSetParameters, "migrate-set-parameters", Empty);

/// `migrate`: sends the state to `uri` (`unix:PATH`, `tcp:HOST:PORT`).
#[derive(Debug, Clone, Serialize)]
pub struct Migrate {
    /// Where the target listens.
    pub uri: String,
}
command!(Migrate, "migrate", Empty);

/// `migrate-incoming`: a QEMU started with `-incoming defer` listens on `uri`.
#[derive(Debug, Clone, Serialize)]
pub struct MigrateIncoming {
    /// Where to listen.
    pub uri: String,
}
command!(MigrateIncoming, "migrate-incoming", Empty);

/// `migrate-continue`: goes on from a state the `pause-before-switchover` capability
/// stopped in.
#[derive(Debug, Clone, Serialize)]
pub struct MigrateContinue {
    /// The state it waits in (`pre-switchover`).
    pub state: String,
}
command!(MigrateContinue, "migrate-continue", Empty);

/// `migrate_cancel`.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct MigrateCancel;
impl QmpCommand for MigrateCancel {
    const NAME: &'static str = "migrate_cancel";
    type Reply = Empty;
}

/// `query-migrate`.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct QueryMigrate;
impl QmpCommand for QueryMigrate {
    const NAME: &'static str = "query-migrate";
    type Reply = MigrationInfo;
}

/// Where a migration is.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct MigrationInfo {
    /// `setup`, `active`, `pre-switchover`, `device`, `completed`, `failed`, `cancelled`,
    /// ...; absent before any migration.
    #[serde(default)]
    pub status: Option<String>,
    /// The memory sent so far.
    #[serde(default)]
    pub ram: Option<RamStats>,
    /// Milliseconds since it started (its whole time, once completed).
    #[serde(default, rename = "total-time")]
    pub total_time: Option<u64>,
    /// Milliseconds the guest was stopped, once completed.
    #[serde(default)]
    pub downtime: Option<u64>,
    /// Why it failed.
    #[serde(default, rename = "error-desc")]
    pub error_desc: Option<String>,
}

/// Memory sent by a migration.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct RamStats {
    /// Bytes sent.
    #[serde(default)]
    pub transferred: u64,
    /// Bytes left to send.
    #[serde(default)]
    pub remaining: u64,
    /// The guest's memory, bytes.
    #[serde(default)]
    pub total: u64,
    /// Rounds of sending what the guest dirtied.
    #[serde(default, rename = "dirty-sync-count")]
    pub dirty_sync_count: u64,
}

/// `nbd-server-start`: QEMU's own NBD server, listening on `addr` (a SocketAddress).
#[derive(Debug, Clone, Serialize)]
pub struct NbdServerStart {
    /// `{"type": "unix", "data": {"path": ...}}` (QEMU's SocketAddressLegacy).
    pub addr: serde_json::Value,
}
command!(NbdServerStart, "nbd-server-start", Empty);

/// `nbd-server-stop`.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct NbdServerStop;
impl QmpCommand for NbdServerStop {
    const NAME: &'static str = "nbd-server-stop";
    type Reply = Empty;
}

/// `block-export-add`: an export of the running NBD server, its options as QEMU's schema
/// spells them.
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub struct BlockExportAdd(pub serde_json::Value);
command!(BlockExportAdd, "block-export-add", Empty);

/// `blockdev-mirror`: copies a node to another and keeps it in step, its options as
/// QEMU's schema spells them.
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub struct BlockdevMirror(pub serde_json::Value);
command!(BlockdevMirror, "blockdev-mirror", Empty);

/// `block-job-cancel`: of a mirror that is ready, ends it with the target in step (no
/// pivot); `force` ends it at once.
#[derive(Debug, Clone, Serialize)]
pub struct BlockJobCancel {
    /// The job's id.
    pub device: String,
    /// Stop at once, the target left behind.
    pub force: bool,
}
command!(BlockJobCancel, "block-job-cancel", Empty);

/// `query-block-jobs`.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct QueryBlockJobs;
impl QmpCommand for QueryBlockJobs {
    const NAME: &'static str = "query-block-jobs";
    type Reply = Vec<BlockJobInfo>;
}

/// A block job as `query-block-jobs` shows it.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct BlockJobInfo {
    /// Its id.
    pub device: String,
    /// Bytes to copy (grows while the guest writes).
    #[serde(default)]
    pub len: u64,
    /// Bytes copied.
    #[serde(default)]
    pub offset: u64,
    /// Whether a mirror has caught up (it keeps the target in step from then on).
    #[serde(default)]
    pub ready: bool,
    /// `running`, `ready`, `concluded`, ...
    #[serde(default)]
    pub status: String,
    /// Why it failed.
    #[serde(default)]
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_parse_as_qemu_sends_them() {
        let m: MigrationInfo = serde_json::from_str(
            r#"{"status":"completed","total-time":2041,"downtime":31,"setup-time":2,
               "ram":{"transferred":1024,"remaining":0,"total":268435456,"duplicate":5,
               "dirty-sync-count":3,"mbps":100.5}}"#,
        )
        .unwrap();
        assert_eq!(m.status.as_deref(), Some("completed"));
        assert_eq!(m.downtime, Some(31));
        assert_eq!(m.ram.unwrap().dirty_sync_count, 3);
        let none: MigrationInfo = serde_json::from_str("{}").unwrap();
        assert_eq!(none.status, None);
        let jobs: Vec<BlockJobInfo> = serde_json::from_str(
            r#"[{"device":"mig-disk0","len":65536,"offset":4096,"ready":false,
                "status":"running","type":"mirror","busy":true,"paused":false,"speed":0,
                "io-status":"ok","auto-finalize":true,"auto-dismiss":true}]"#,
        )
        .unwrap();
        assert_eq!(jobs[0].device, "mig-disk0");
        assert!(!jobs[0].ready);
    }

    #[test]
    fn commands_serialise_as_qemu_reads_them() {
        let c = serde_json::to_value(BlockJobCancel {
            device: "mig-disk0".into(),
            force: false,
        })
        .unwrap();
        assert_eq!(
            c,
            serde_json::json!({"device": "mig-disk0", "force": false})
        );
        let c = serde_json::to_value(MigrateSetCapabilities {
            capabilities: vec![MigrationCapability {
                capability: "multifd".into(),
                state: true,
            }],
        })
        .unwrap();
        assert_eq!(
            c,
            serde_json::json!({"capabilities": [{"capability": "multifd", "state": true}]})
        );
    }
}
