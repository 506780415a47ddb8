//! `list`: every instance with its live usage.

use anyhow::Result;
use vessel_api::{Instance, InstanceStatus, InstanceType};

use crate::client::Client;
use crate::output::{format_bytes, format_cpu, print_document, short, Format, Table};

/// Characters of the image fingerprint shown in tables.
pub const FINGERPRINT_CHARS: usize = 12;

/// `list`.
pub fn run(client: &Client, format: Format, all_projects: bool) -> Result<i32> {
    let path = if all_projects {
        "/1.0/instances?recursion=1&all-projects=1"
    } else {
        "/1.0/instances?recursion=1"
    };
    let instances: Vec<Instance> = client.get(path)?;
    match format {
        Format::Table if all_projects => {
            let mut t = instances_table(&instances);
            t.prepend_column(
                "PROJECT",
                instances
                    .iter()
                    .map(|i| i.project.clone().unwrap_or_default())
                    .collect(),
            );
            t.print()?
        }
        Format::Table => instances_table(&instances).print()?,
        _ => print_document(format, &instances)?,
    }
    Ok(0)
}

/// Name of an instance type for people.
pub fn type_name(t: InstanceType) -> &'static str {
    match t {
        InstanceType::Container => "container",
        InstanceType::Vm => "vm",
    }
}

/// The table `list` prints.
pub fn instances_table(instances: &[Instance]) -> Table {
    let mut table = Table::new(&[
        "NAME", "TYPE", "STATUS", "IPV4", "PID", "CPU", "MEMORY", "PIDS", "IMAGE",
    ]);
    let dash = || "-".to_string();
    for i in instances {
        let state = i.state.as_ref();
        table.row(vec![
            i.name.clone(),
            type_name(i.instance_type).to_string(),
            i.status.as_str().to_uppercase(),
            ipv4_cell(i),
            state
                .and_then(|s| s.pid)
                .map_or_else(dash, |p| p.to_string()),
            state.map_or_else(dash, |s| format_cpu(s.cpu_usage_ns)),
            state.map_or_else(dash, |s| format_bytes(s.memory_usage_bytes)),
            state.map_or_else(dash, |s| s.pids.to_string()),
            short(&i.image, FINGERPRINT_CHARS),
        ]);
    }
    // On a cluster: the member each lives on.
    if instances.iter().any(|i| i.location.is_some()) {
        table.append_column(
            "LOCATION",
            instances
                .iter()
                .map(|i| i.location.clone().unwrap_or_else(dash))
                .collect(),
        );
    }
    table
}

/// The IPv4 addresses of a running instance's NICs, as Incus shows them: `10.42.0.2 (eth0)`;
/// `-` when it is not running (its addresses answer nothing then).
pub fn ipv4_cell(i: &Instance) -> String {
    let live = matches!(i.status, InstanceStatus::Running | InstanceStatus::Frozen);
    if !live || i.nics.is_empty() {
        return "-".to_string();
    }
    i.nics
        .iter()
        .map(|n| {
            let addr = n.ipv4.split('/').next().unwrap_or(&n.ipv4);
            format!("{addr} ({})", n.interface)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Instance> {
        serde_json::from_str(
            r#"[
            {"name": "web", "type": "container", "status": "running",
             "image": "0123456789abcdef0123", "privileged": false,
             "limits": {"memory": 268435456}, "command": ["/sbin/init"], "environment": {},
             "created_at": "2026-01-01T00:00:00Z",
             "state": {"pid": 4242, "cpu_usage_ns": 1500000000,
                       "memory_usage_bytes": 12582912, "oom_kills": 0, "pids": 3},
             "nics": [{"network": "default", "interface": "eth0", "mac": "0a:56:00:00:00:01",
                       "ipv4": "10.42.0.2/24", "gateway": "10.42.0.1"},
                      {"network": "lan", "interface": "eth1", "mac": "0a:56:00:00:00:02",
                       "ipv4": "10.43.0.5/24", "gateway": "10.43.0.1"}]},
            {"name": "db", "type": "vm", "status": "stopped",
             "image": "fedcba9876543210fedc", "privileged": true,
             "limits": {}, "command": [], "environment": {},
             "created_at": "2026-01-01T00:00:00Z", "last_exit_code": 0,
             "nics": [{"network": "default", "interface": "eth0", "mac": "0a:56:00:00:00:03",
                       "ipv4": "10.42.0.3/24", "gateway": "10.42.0.1"}]}
        ]"#,
        )
        .unwrap()
    }

    #[test]
    fn table_of_instances() {
        let want = "\
+------+-----------+---------+------------------------------------+------+-------+--------+------+--------------+
| NAME |   TYPE    | STATUS  |                IPV4                | PID  |  CPU  | MEMORY | PIDS |    IMAGE     |
+------+-----------+---------+------------------------------------+------+-------+--------+------+--------------+
| web  | container | RUNNING | 10.42.0.2 (eth0), 10.43.0.5 (eth1) | 4242 | 1.50s | 12MiB  | 3    | 0123456789ab |
+------+-----------+---------+------------------------------------+------+-------+--------+------+--------------+
| db   | vm        | STOPPED | -                                  | -    | -     | -      | -    | fedcba987654 |
+------+-----------+---------+------------------------------------+------+-------+--------+------+--------------+
";
        assert_eq!(instances_table(&sample()).render(), want);
    }
}
