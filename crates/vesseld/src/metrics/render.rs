//! The Prometheus text of a [`Snapshot`] as one caller may see it: pure, so the names, labels
//! and the project filter are unit-tested without a daemon.

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

use super::collect::Snapshot;

pub type Labels = Vec<(&'static str, String)>;
type FCounter = Family<Labels, Counter<f64, AtomicU64>>;
type ICounter = Family<Labels, Counter<u64, AtomicU64>>;
type IGauge = Family<Labels, Gauge<i64>>;
type FGauge = Family<Labels, Gauge<f64, AtomicU64>>;

/// Which projects a caller sees: every one (admins) or one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Seen {
    /// Every project, and the server's own metrics (pools, requests).
    All,
    /// One project's instances and usage; `pools` too when the caller's role reads pools.
    Project { name: String, pools: bool },
}

impl Seen {
    fn project(&self, p: &str) -> bool {
        match self {
            Seen::All => true,
            Seen::Project { name, .. } => name == p,
        }
    }

    fn pools(&self) -> bool {
        match self {
            Seen::All => true,
            Seen::Project { pools, .. } => *pools,
        }
    }
}

fn add<M: prometheus_client::registry::Metric + Clone>(
    reg: &mut Registry,
    name: &str,
    help: &str,
    m: &M,
) {
    reg.register(name, help, m.clone());
}

/// The daemon's request latencies, by endpoint and status class.
pub type Requests = Family<Labels, prometheus_client::metrics::histogram::Histogram>;

/// Renders `snap` as `seen` may see it, with the daemon's `requests` (given for admins).
pub fn render(snap: &Snapshot, seen: &Seen, requests: Option<&Requests>) -> String {
    let mut reg = Registry::default();
    let cpu = FCounter::default();
    let mem = IGauge::default();
    let mem_peak = IGauge::default();
    let mem_limit = IGauge::default();
    let cpu_limit = FGauge::default();
    let procs = IGauge::default();
    let oom = ICounter::default();
    let running = IGauge::default();
    let disk_read = ICounter::default();
    let disk_written = ICounter::default();
    let net_rx = ICounter::default();
    let net_tx = ICounter::default();
    let net_rx_packets = ICounter::default();
    let net_tx_packets = ICounter::default();
    for i in snap.instances.iter().filter(|i| seen.project(&i.project)) {
        let l = || -> Labels {
            vec![
                ("name", i.name.clone()),
                ("project", i.project.clone()),
                ("type", i.kind.to_string()),
            ]
        };
        running.get_or_create(&l()).set(i.running as i64);
        if let Some(c) = i.limits_cpu {
            cpu_limit.get_or_create(&l()).set(c);
        }
        if let Some(m) = i.limits_memory {
            mem_limit.get_or_create(&l()).set(m as i64);
        }
        if !i.running {
            continue;
        }
        cpu.get_or_create(&l()).inc_by(i.cpu_ns as f64 / 1e9);
        mem.get_or_create(&l()).set(i.memory as i64);
        if let Some(p) = i.memory_peak {
            mem_peak.get_or_create(&l()).set(p as i64);
        }
        procs.get_or_create(&l()).set(i.pids as i64);
        oom.get_or_create(&l()).inc_by(i.oom_kills);
        disk_read.get_or_create(&l()).inc_by(i.disk_read);
        disk_written.get_or_create(&l()).inc_by(i.disk_written);
        for n in &i.nics {
            let mut nl = l();
            nl.push(("device", n.device.clone()));
            net_rx.get_or_create(&nl).inc_by(n.rx_bytes);
            net_tx.get_or_create(&nl).inc_by(n.tx_bytes);
            net_rx_packets.get_or_create(&nl).inc_by(n.rx_packets);
            net_tx_packets.get_or_create(&nl).inc_by(n.tx_packets);
        }
    }
    add(
        &mut reg,
        "vessel_cpu_seconds",
        "CPU time used by the instance, in seconds",
        &cpu,
    );
    add(
        &mut reg,
        "vessel_cpu_limit_cores",
        "The instance's cpu limit, in cores",
        &cpu_limit,
    );
    add(&mut reg, "vessel_memory_usage_bytes", "Memory in use", &mem);
    add(
        &mut reg,
        "vessel_memory_peak_bytes",
        "Highest memory use seen",
        &mem_peak,
    );
    add(
        &mut reg,
        "vessel_memory_limit_bytes",
        "The instance's memory limit",
        &mem_limit,
    );
    add(
        &mut reg,
        "vessel_procs_total",
        "Processes and threads in the instance",
        &procs,
    );
    add(
        &mut reg,
        "vessel_oom_kills",
        "Times the OOM killer ran in the instance",
        &oom,
    );
    add(
        &mut reg,
        "vessel_instance_running",
        "1 when the instance runs",
        &running,
    );
    add(
        &mut reg,
        "vessel_disk_read_bytes",
        "Bytes read from block devices",
        &disk_read,
    );
    add(
        &mut reg,
        "vessel_disk_written_bytes",
        "Bytes written to block devices",
        &disk_written,
    );
    add(
        &mut reg,
        "vessel_network_receive_bytes",
        "Bytes the NIC received",
        &net_rx,
    );
    add(
        &mut reg,
        "vessel_network_transmit_bytes",
        "Bytes the NIC sent",
        &net_tx,
    );
    add(
        &mut reg,
        "vessel_network_receive_packets",
        "Packets the NIC received",
        &net_rx_packets,
    );
    add(
        &mut reg,
        "vessel_network_transmit_packets",
        "Packets the NIC sent",
        &net_tx_packets,
    );

    let usage = FGauge::default();
    let limit = FGauge::default();
    for p in snap.projects.iter().filter(|p| seen.project(&p.name)) {
        for (resource, used, lim) in &p.resources {
            let l: Labels = vec![
                ("project", p.name.clone()),
                ("resource", resource.to_string()),
            ];
            usage.get_or_create(&l).set(*used);
            if let Some(lim) = lim {
                limit.get_or_create(&l).set(*lim);
            }
        }
    }
    add(
        &mut reg,
        "vessel_project_usage",
        "What a project's instances hold of a resource",
        &usage,
    );
    add(
        &mut reg,
        "vessel_project_limit",
        "A project's limit of a resource",
        &limit,
    );

    if seen.pools() {
        let size = IGauge::default();
        let used = IGauge::default();
        let healthy = IGauge::default();
        let member = IGauge::default();
        let csum = ICounter::default();
        let rebuild = FGauge::default();
        for p in &snap.pools {
            let l: Labels = vec![("pool", p.name.clone()), ("driver", p.driver.clone())];
            size.get_or_create(&l).set(p.size as i64);
            used.get_or_create(&l).set(p.used as i64);
            healthy
                .get_or_create(&l)
                .set((p.status == "healthy") as i64);
            for m in &p.members {
                let ml: Labels = vec![
                    ("pool", p.name.clone()),
                    ("member", m.index.to_string()),
                    ("state", m.state.clone()),
                ];
                member.get_or_create(&ml).set(1);
                let cl: Labels = vec![("pool", p.name.clone()), ("member", m.index.to_string())];
                csum.get_or_create(&cl).inc_by(m.checksum_errors);
            }
            if let Some(r) = p.rebuild_percent {
                let rl: Labels = vec![("pool", p.name.clone())];
                rebuild.get_or_create(&rl).set(r as f64 / 100.0);
            }
        }
        add(
            &mut reg,
            "vessel_storage_pool_size_bytes",
            "A pool's size",
            &size,
        );
        add(
            &mut reg,
            "vessel_storage_pool_used_bytes",
            "What a pool's volumes use",
            &used,
        );
        add(
            &mut reg,
            "vessel_storage_pool_healthy",
            "1 when the pool is healthy",
            &healthy,
        );
        add(
            &mut reg,
            "vessel_raid_member_state",
            "1 for a raid member's current state",
            &member,
        );
        add(
            &mut reg,
            "vessel_raid_member_checksum_errors",
            "Checksum errors found on a raid member",
            &csum,
        );
        add(
            &mut reg,
            "vessel_raid_rebuild_ratio",
            "How far a raid pool's rebuild has come, 0 to 1",
            &rebuild,
        );
    }
    if let Some(r) = requests {
        add(
            &mut reg,
            "vessel_api_request_duration_seconds",
            "Time the daemon took to answer an API request, by endpoint",
            r,
        );
    }
    let mut out = String::new();
    // Formatting into a String does not fail.
    let _ = prometheus_text::encode(&mut out, &reg);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::collect::{InstanceSample, NicSample, PoolSample, ProjectSample};

    fn snapshot() -> Snapshot {
        let inst = |project: &str, name: &str, running: bool| InstanceSample {
            qualified: crate::project::qualify(project, name),
            name: name.into(),
            project: project.into(),
            kind: "container",
            running,
            cpu_ns: 2_500_000_000,
            memory: 4096,
            pids: 3,
            limits_memory: Some(1 << 20),
            nics: vec![NicSample {
                device: "eth0".into(),
                rx_bytes: 10,
                tx_bytes: 20,
                rx_packets: 1,
                tx_packets: 2,
            }],
            ..Default::default()
        };
        Snapshot {
            instances: vec![
                inst("default", "web", true),
                inst("acme", "db", true),
                inst("acme", "off", false),
            ],
            projects: vec![ProjectSample {
                name: "acme".into(),
                resources: vec![("instances", 2.0, Some(5.0)), ("cpu", 0.0, None)],
            }],
            pools: vec![PoolSample {
                name: "r".into(),
                driver: "raid".into(),
                status: "degraded".into(),
                size: 100,
                used: 10,
                members: vec![vessel_api::PoolMember {
                    index: 1,
                    path: "/x".into(),
                    state: "rebuilding".into(),
                    checksum_errors: 4,
                }],
                rebuild_percent: Some(25),
            }],
        }
    }

    #[test]
    fn an_admin_sees_everything_with_the_names_of_incus_and_node_exporter() {
        let text = render(&snapshot(), &Seen::All, None);
        for line in [
            r#"vessel_cpu_seconds_total{name="web",project="default",type="container"} 2.5"#,
            r#"vessel_memory_usage_bytes{name="db",project="acme",type="container"} 4096"#,
            r#"vessel_memory_limit_bytes{name="off",project="acme",type="container"} 1048576"#,
            r#"vessel_procs_total{name="db",project="acme",type="container"} 3"#,
            r#"vessel_network_receive_bytes_total{name="db",project="acme",type="container",device="eth0"} 10"#,
            r#"vessel_network_transmit_packets_total{name="web",project="default",type="container",device="eth0"} 2"#,
            r#"vessel_instance_running{name="off",project="acme",type="container"} 0"#,
            r#"vessel_project_usage{project="acme",resource="instances"} 2.0"#,
            r#"vessel_project_limit{project="acme",resource="instances"} 5.0"#,
            r#"vessel_storage_pool_healthy{pool="r",driver="raid"} 0"#,
            r#"vessel_raid_member_state{pool="r",member="1",state="rebuilding"} 1"#,
            r#"vessel_raid_member_checksum_errors_total{pool="r",member="1"} 4"#,
            r#"vessel_raid_rebuild_ratio{pool="r"} 0.25"#,
            "# TYPE vessel_cpu_seconds_total counter",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        // A stopped instance shows as stopped, with no usage figures.
        assert!(
            !text.contains(r#"vessel_cpu_seconds_total{name="off""#),
            "{text}"
        );
        // No limit set, no limit shown.
        assert!(!text.contains(r#"vessel_project_limit{project="acme",resource="cpu"}"#));
    }

    #[test]
    fn a_project_sees_its_own_and_pools_only_when_its_role_reads_them() {
        let seen = Seen::Project {
            name: "acme".into(),
            pools: false,
        };
        let text = render(&snapshot(), &seen, None);
        assert!(text.contains(r#"name="db",project="acme""#), "{text}");
        assert!(
            !text.contains("web") && !text.contains(r#"project="default""#),
            "{text}"
        );
        assert!(!text.contains("vessel_storage_pool"), "{text}");
        let seen = Seen::Project {
            name: "acme".into(),
            pools: true,
        };
        assert!(render(&snapshot(), &seen, None).contains("vessel_raid_member_state"));
    }
}
