//! Live migration of a running VM to another QEMU, as libvirt does it for disks that are
//! not shared: the target QEMU starts with `-incoming defer` and exports its (empty) disks
//! over NBD; the source mirrors each writable disk into those exports (`blockdev-mirror`,
//! `sync: top`: a qcow2 overlay over the same image needs only its own clusters) until the
//! mirrors keep up, then sends memory and device state (`migrate`, optionally multifd,
//! bounded by `downtime-limit` and `max-bandwidth`). With `pause-before-switchover` the
//! source stops in `pre-switchover`, its vCPUs stopped: the mirrors are ended there with the
//! target in step (`block-job-cancel` of a ready mirror), then the device state goes and the
//! target runs. A failure at any point before the switchover leaves the source running.
//!
//! Both sides speak over unix sockets ([`MigrationLinks`]); carrying them between hosts is
//! the caller's (the daemon splices them through its members' mutual TLS).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::error::{Result, VmError};
use crate::qmp::{
    BlockExportAdd, BlockJobCancel, BlockJobInfo, BlockdevAdd, BlockdevDel, BlockdevMirror,
    Migrate, MigrateCancel, MigrateContinue, MigrateIncoming, MigrateSetCapabilities,
    MigrateSetParameters, MigrationCapability, MigrationInfo, NbdServerStart, NbdServerStop,
    QueryBlock, QueryBlockJobs, QueryMigrate,
};
use crate::vm::RunningVm;

/// Where the two streams of a migration meet: the target listens on both paths (its
/// QEMU's), the source connects to them (or to what relays them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationLinks {
    /// Memory and device state.
    pub state: PathBuf,
    /// The NBD server exporting the target's disks (each by its node name, `diskN`).
    pub disks: PathBuf,
}

/// How a migration may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MigrationParams {
    /// The longest the guest may be stopped at the switchover, ms (QEMU's
    /// `downtime-limit`; it keeps copying dirtied memory until what is left fits).
    pub downtime_ms: u64,
    /// Bytes per second the state may take; 0: unbounded.
    pub max_bandwidth: u64,
    /// Parallel connections for memory (multifd); 0: one, without multifd. Both sides
    /// must use the same.
    pub multifd_channels: u8,
    /// How long the whole may take before it is given up.
    pub timeout: Duration,
}

impl Default for MigrationParams {
    fn default() -> Self {
        MigrationParams {
            downtime_ms: 300,
            max_bandwidth: 0,
            multifd_channels: 2,
            timeout: Duration::from_secs(600),
        }
    }
}

/// Where a migration is, for progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MigrationPhase {
    /// Disks being mirrored: bytes copied of bytes to copy.
    Disks {
        /// Copied.
        done: u64,
        /// To copy.
        total: u64,
    },
    /// Memory being sent: bytes left, of the guest's memory; how many passes so far.
    Memory {
        /// Left to send.
        remaining: u64,
        /// The guest's memory.
        total: u64,
        /// Passes over dirtied memory.
        passes: u64,
    },
    /// The guest is stopped: the last state goes.
    Switchover,
}

/// What a finished migration took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MigrationStats {
    /// From the start of the mirrors to the state all sent, ms.
    pub total_ms: u64,
    /// What QEMU counts as the guest stopped on this side, ms (the target's start comes on
    /// top).
    pub downtime_ms: u64,
    /// Memory bytes sent.
    pub memory_bytes: u64,
    /// Disk bytes mirrored.
    pub disk_bytes: u64,
}

fn capabilities(caps: &[(&str, bool)]) -> MigrateSetCapabilities {
    MigrateSetCapabilities {
        capabilities: caps
            .iter()
            .map(|(c, on)| MigrationCapability {
                capability: (*c).to_string(),
                state: *on,
            })
            .collect(),
    }
}

fn utf8(p: &std::path::Path) -> Result<&str> {
    p.to_str()
        .ok_or_else(|| VmError::InvalidDefinition(format!("{} is not UTF-8", p.display())))
}

fn failed(what: &str, why: impl std::fmt::Display) -> VmError {
    VmError::Command {
        command: format!("live migration: {what}"),
        message: why.to_string(),
    }
}

/// The mirror job (and target node) of disk node `node`.
fn job_of(node: &str) -> String {
    format!("mig-{node}")
}

impl RunningVm {
    /// The node names of the disks the guest may write (`diskN`).
    fn writable_disks(&self) -> Result<Vec<String>> {
        Ok(self
            .qmp()
            .execute(&QueryBlock)?
            .into_iter()
            .filter_map(|b| b.inserted)
            .filter(|i| !i.ro)
            .filter_map(|i| i.node_name)
            .collect())
    }

    /// On the target (started with [`crate::MachineDef::incoming`]): exports its writable
    /// disks on `links.disks` and listens for the state on `links.state`.
    pub fn accept_migration(&self, links: &MigrationLinks, params: &MigrationParams) -> Result<()> {
        let qmp = self.qmp();
        qmp.execute(&capabilities(&[("multifd", params.multifd_channels > 0)]))?;
        if params.multifd_channels > 0 {
            qmp.execute(&MigrateSetParameters(serde_json::json!({
                "multifd-channels": params.multifd_channels,
            })))?;
        }
        qmp.execute(&NbdServerStart {
            // QEMU's older SocketAddressLegacy form.
            addr: serde_json::json!({"type": "unix", "data": {"path": utf8(&links.disks)?}}),
        })?;
        for node in self.writable_disks()? {
            qmp.execute(&BlockExportAdd(serde_json::json!({
                "type": "nbd",
                "id": job_of(&node),
                "node-name": node,
                "name": node,
                "writable": true,
            })))?;
        }
        qmp.execute(&MigrateIncoming {
            uri: format!("unix:{}", utf8(&links.state)?),
        })?;
        Ok(())
    }

    /// On the target, once the source has sent everything: waits (up to `timeout`) for
    /// the state to be loaded, stops exporting the disks and runs the guest.
    pub fn finish_incoming(&self, timeout: Duration) -> Result<()> {
        let qmp = self.qmp();
        let until = Instant::now() + timeout;
        loop {
            // A QEMU that cannot load the state exits: what it said is in its log.
            let info = qmp.execute(&QueryMigrate).map_err(|e| {
                failed(
                    "the state did not load",
                    format!(
                        "{e}; QEMU's log: {}",
                        crate::vm::log_tail_from(
                            &self.record.paths.qemu_log,
                            self.record.qemu_log_offset,
                            "nothing",
                        )
                    ),
                )
            })?;
            match info.status.as_deref() {
                Some("completed") => break,
                Some("failed" | "cancelled") => {
                    return Err(failed(
                        "the state did not load",
                        info.error_desc.unwrap_or_else(|| "see qemu.log".into()),
                    ))
                }
                _ if Instant::now() > until => {
                    return Err(failed(
                        "the state did not arrive",
                        format!("not all there after {} s", timeout.as_secs()),
                    ))
                }
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        qmp.execute(&NbdServerStop)?;
        qmp.cont()?;
        tracing::info!(vm = %self.name, "migrated in: running");
        Ok(())
    }

    /// On the source: mirrors the writable disks to `links.disks` and sends memory and
    /// device state to `links.state` (see the module), telling `progress` where it is.
    /// Returns once the target holds everything: this QEMU is then stopped for good
    /// (`postmigrate`) and the caller runs the target ([`RunningVm::finish_incoming`]) and
    /// ends this one. On an error this VM runs on as before.
    pub fn migrate_to(
        &self,
        links: &MigrationLinks,
        params: &MigrationParams,
        progress: &mut dyn FnMut(MigrationPhase),
    ) -> Result<MigrationStats> {
        let started = Instant::now();
        let disks = self.writable_disks()?;
        let outcome = self.migrate_steps(links, params, &disks, started, progress);
        if outcome.is_err() {
            self.migrate_cleanup(&disks);
        }
        outcome
    }

    fn migrate_steps(
        &self,
        links: &MigrationLinks,
        params: &MigrationParams,
        disks: &[String],
        started: Instant,
        progress: &mut dyn FnMut(MigrationPhase),
    ) -> Result<MigrationStats> {
        let qmp = self.qmp();
        let until = started + params.timeout;
        let late = |what: &str| {
            failed(
                what,
                format!("given up after {} s", params.timeout.as_secs()),
            )
        };
        // 1. The disks: mirrored until they keep up.
        for node in disks {
            let job = job_of(node);
            qmp.execute(&BlockdevAdd(serde_json::json!({
                "driver": "nbd",
                "node-name": job,
                "server": {"type": "unix", "path": utf8(&links.disks)?},
                "export": node,
            })))?;
            qmp.execute(&BlockdevMirror(serde_json::json!({
                "job-id": job,
                "device": node,
                "target": job,
                "sync": "top",
            })))?;
        }
        let disk_bytes = loop {
            let jobs = self.mirror_jobs(disks)?;
            if let Some(e) = jobs.iter().find_map(|j| j.error.clone()) {
                return Err(failed("a disk could not be mirrored", e));
            }
            if jobs.len() < disks.len() {
                return Err(failed(
                    "a disk could not be mirrored",
                    "its mirror ended early; see qemu.log",
                ));
            }
            let (done, total) = jobs
                .iter()
                .fold((0, 0), |(d, t), j| (d + j.offset, t + j.len));
            progress(MigrationPhase::Disks { done, total });
            if jobs.iter().all(|j| j.ready) {
                break total;
            }
            if Instant::now() > until {
                return Err(late("the disks did not catch up"));
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        // 2. Memory and devices, stopping before the switchover to end the mirrors.
        qmp.execute(&capabilities(&[
            ("pause-before-switchover", true),
            ("multifd", params.multifd_channels > 0),
        ]))?;
        let mut p = serde_json::json!({"downtime-limit": params.downtime_ms});
        p["max-bandwidth"] = params.max_bandwidth.into();
        if params.multifd_channels > 0 {
            p["multifd-channels"] = params.multifd_channels.into();
        }
        qmp.execute(&MigrateSetParameters(p))?;
        qmp.execute(&Migrate {
            uri: format!("unix:{}", utf8(&links.state)?),
        })?;
        // Once switched over, what is left (`device`) is no longer memory to report.
        let mut switched = false;
        let info: MigrationInfo = loop {
            let info = qmp.execute(&QueryMigrate)?;
            match info.status.as_deref() {
                // QEMU may still say so for a moment after it was told to continue.
                Some("pre-switchover") if switched => std::thread::sleep(Duration::from_millis(5)),
                Some("pre-switchover") => {
                    switched = true;
                    progress(MigrationPhase::Switchover);
                    self.end_mirrors(disks, Duration::from_secs(60))?;
                    qmp.execute(&MigrateContinue {
                        state: "pre-switchover".into(),
                    })?;
                }
                Some("completed") => break info,
                Some("failed" | "cancelled") => {
                    return Err(failed(
                        "the state was not sent",
                        info.error_desc.unwrap_or_else(|| "see qemu.log".into()),
                    ))
                }
                _ => {
                    if let Some(ram) = info.ram.as_ref().filter(|_| !switched) {
                        progress(MigrationPhase::Memory {
                            remaining: ram.remaining,
                            total: ram.total,
                            passes: ram.dirty_sync_count,
                        });
                    }
                    if Instant::now() > until {
                        return Err(late("the memory did not converge"));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        };
        for node in disks {
            let _ = qmp.execute(&BlockdevDel {
                node_name: job_of(node),
            });
        }
        let stats = MigrationStats {
            total_ms: started.elapsed().as_millis() as u64,
            downtime_ms: info.downtime.unwrap_or(0),
            memory_bytes: info.ram.map_or(0, |r| r.transferred),
            disk_bytes,
        };
        tracing::info!(vm = %self.name, ?stats, "migrated out");
        Ok(stats)
    }

    /// The mirror jobs of `disks` that exist.
    fn mirror_jobs(&self, disks: &[String]) -> Result<Vec<BlockJobInfo>> {
        let ours: Vec<String> = disks.iter().map(|d| job_of(d)).collect();
        Ok(self
            .qmp()
            .execute(&QueryBlockJobs)?
            .into_iter()
            .filter(|j| ours.contains(&j.device))
            .collect())
    }

    /// Ends the ready mirrors with their targets in step, and waits for them to go.
    fn end_mirrors(&self, disks: &[String], timeout: Duration) -> Result<()> {
        for node in disks {
            self.qmp().execute(&BlockJobCancel {
                device: job_of(node),
                force: false,
            })?;
        }
        let until = Instant::now() + timeout;
        while !self.mirror_jobs(disks)?.is_empty() {
            if Instant::now() > until {
                return Err(failed(
                    "the disk mirrors did not finish",
                    format!("still running after {} s", timeout.as_secs()),
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// After a failed migration: the migration cancelled, mirrors stopped at once and
    /// their nodes removed; the guest runs (QEMU resumes it when the migration fails).
    fn migrate_cleanup(&self, disks: &[String]) {
        let qmp = self.qmp();
        let _ = qmp.execute(&MigrateCancel);
        for node in disks {
            let _ = qmp.execute(&BlockJobCancel {
                device: job_of(node),
                force: true,
            });
        }
        let until = Instant::now() + Duration::from_secs(10);
        while self.mirror_jobs(disks).is_ok_and(|j| !j.is_empty()) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
        for node in disks {
            let _ = qmp.execute(&BlockdevDel {
                node_name: job_of(node),
            });
        }
    }
}
