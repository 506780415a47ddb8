//! What one scrape reads from the services and the kernel: every instance's usage and NIC
//! counters, every project's usage against its limits, every pool's state. Read once per
//! cache period, whatever number of callers asks.

use std::path::Path;

use vessel_api::{InstanceStatus, InstanceType};

use crate::error::Result;
use crate::instance::InstanceService;
use crate::network::NetworkService;
use crate::project::{self, quota, ProjectService};
use crate::storage::StorageService;

/// One reading of everything the metrics show.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub instances: Vec<InstanceSample>,
    pub projects: Vec<ProjectSample>,
    pub pools: Vec<PoolSample>,
}

/// One instance's figures.
#[derive(Debug, Default, Clone)]
pub struct InstanceSample {
    /// Qualified name (the history's key).
    pub qualified: String,
    /// Name within its project.
    pub name: String,
    pub project: String,
    pub kind: &'static str,
    pub running: bool,
    pub cpu_ns: u64,
    pub memory: u64,
    pub memory_peak: Option<u64>,
    pub pids: u64,
    pub oom_kills: u64,
    pub disk_read: u64,
    pub disk_written: u64,
    pub limits_cpu: Option<f64>,
    pub limits_memory: Option<u64>,
    pub nics: Vec<NicSample>,
}

/// One NIC's counters, as the instance sees them (its received is what the host end sent).
#[derive(Debug, Default, Clone)]
pub struct NicSample {
    pub device: String,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub tx_packets: u64,
}

/// One project's use of each resource and its limit.
#[derive(Debug, Default)]
pub struct ProjectSample {
    pub name: String,
    pub resources: Vec<(&'static str, f64, Option<f64>)>,
}

/// One pool's size and health.
#[derive(Debug, Default)]
pub struct PoolSample {
    pub name: String,
    pub driver: String,
    pub status: String,
    pub size: u64,
    pub used: u64,
    pub members: Vec<vessel_api::PoolMember>,
    pub rebuild_percent: Option<u8>,
}

/// The services a scrape reads.
#[derive(Clone)]
pub struct Sources {
    pub instances: InstanceService,
    pub networks: NetworkService,
    pub storage: StorageService,
    pub projects: ProjectService,
}

/// A counter of a host interface, 0 when it cannot be read (the NIC is being unplugged).
fn counter(ifname: &str, name: &str) -> u64 {
    let path = Path::new("/sys/class/net")
        .join(ifname)
        .join("statistics")
        .join(name);
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

impl Sources {
    /// Reads everything (blocking: cgroup and sysfs files, the store).
    pub fn collect(&self) -> Result<Snapshot> {
        let list = self.instances.list(true)?;
        let ends = self.networks.host_ends()?;
        let mut snap = Snapshot::default();
        for inst in &list {
            let (project, name) = project::split(&inst.name);
            let state = inst.state.clone().unwrap_or_default();
            let running = matches!(
                inst.status,
                InstanceStatus::Running | InstanceStatus::Frozen | InstanceStatus::Stopping
            );
            let nics = if running {
                ends.get(&inst.name)
                    .into_iter()
                    .flatten()
                    .map(|(device, host)| NicSample {
                        device: device.clone(),
                        // The host end's transmit is the instance's receive.
                        rx_bytes: counter(host, "tx_bytes"),
                        tx_bytes: counter(host, "rx_bytes"),
                        rx_packets: counter(host, "tx_packets"),
                        tx_packets: counter(host, "rx_packets"),
                    })
                    .collect()
            } else {
                Vec::new()
            };
            snap.instances.push(InstanceSample {
                qualified: inst.name.clone(),
                name: name.to_string(),
                project: project.to_string(),
                kind: match inst.instance_type {
                    InstanceType::Container => "container",
                    InstanceType::Vm => "virtual-machine",
                },
                running,
                cpu_ns: state.cpu_usage_ns,
                memory: state.memory_usage_bytes,
                memory_peak: state.memory_peak_bytes,
                pids: state.pids,
                oom_kills: state.oom_kills,
                disk_read: state.disk_read_bytes,
                disk_written: state.disk_write_bytes,
                limits_cpu: inst.limits.cpu,
                limits_memory: inst.limits.memory,
                nics,
            });
        }
        let networks: Vec<String> = self.networks.list()?.into_iter().map(|n| n.name).collect();
        for p in self.projects.list()? {
            let count = networks
                .iter()
                .filter(|n| project::within(&p.name, n).is_some())
                .count() as u64;
            let u = quota::usage_of(&p.name, &list, count);
            let q = self.projects.quota(&p.name)?;
            let f = |v: Option<u64>| v.map(|v| v as f64);
            snap.projects.push(ProjectSample {
                name: p.name.clone(),
                resources: vec![
                    ("instances", u.instances as f64, f(q.instances)),
                    ("containers", u.containers as f64, f(q.containers)),
                    (
                        "virtual-machines",
                        u.virtual_machines as f64,
                        f(q.virtual_machines),
                    ),
                    ("cpu", u.cpu, q.cpu),
                    ("memory", u.memory as f64, f(q.memory)),
                    ("processes", u.processes as f64, f(q.processes)),
                    ("disk", u.disk as f64, f(q.disk)),
                    ("networks", u.networks as f64, f(q.networks)),
                ],
            });
        }
        for pool in self.storage.pools_list()? {
            let status = self.storage.pool_status(&pool.name).ok();
            snap.pools.push(PoolSample {
                name: pool.name.clone(),
                driver: format!("{:?}", pool.driver).to_lowercase(),
                status: pool.status.clone(),
                size: pool.size_bytes,
                used: pool.used_bytes,
                members: status
                    .as_ref()
                    .map(|s| s.members.clone())
                    .unwrap_or_default(),
                rebuild_percent: status.and_then(|s| s.rebuild_percent),
            });
        }
        Ok(snap)
    }
}
