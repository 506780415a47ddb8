//! `list`: every instance with its live usage.

use anyhow::Result;
use vessel_api::{Instance, InstanceType};

use crate::client::Client;
use crate::output::{format_bytes, format_cpu, print_document, short, Format, Table};

/// Characters of the image fingerprint shown in tables.
pub const FINGERPRINT_CHARS: usize = 12;

/// `list`.
pub fn run(client: &Client, format: Format) -> Result<i32> {
    let instances: Vec<Instance> = client.get("/1.0/instances?recursion=1")?;
    match format {
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
        "NAME", "TYPE", "STATUS", "PID", "CPU", "MEMORY", "PIDS", "IMAGE",
    ]);
    let dash = || "-".to_string();
    for i in instances {
        let state = i.state.as_ref();
        table.row(vec![
            i.name.clone(),
            type_name(i.instance_type).to_string(),
            i.status.as_str().to_uppercase(),
            state
                .and_then(|s| s.pid)
                .map_or_else(dash, |p| p.to_string()),
            state.map_or_else(dash, |s| format_cpu(s.cpu_usage_ns)),
            state.map_or_else(dash, |s| format_bytes(s.memory_usage_bytes)),
            state.map_or_else(dash, |s| s.pids.to_string()),
            short(&i.image, FINGERPRINT_CHARS),
        ]);
    }
    table
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
                       "memory_usage_bytes": 12582912, "oom_kills": 0, "pids": 3}},
            {"name": "db", "type": "vm", "status": "stopped",
             "image": "fedcba9876543210fedc", "privileged": true,
             "limits": {}, "command": [], "environment": {},
             "created_at": "2026-01-01T00:00:00Z", "last_exit_code": 0}
        ]"#,
        )
        .unwrap()
    }

    #[test]
    fn table_of_instances() {
        let want = "\
+------+-----------+---------+------+-------+--------+------+--------------+
| NAME |   TYPE    | STATUS  | PID  |  CPU  | MEMORY | PIDS |    IMAGE     |
+------+-----------+---------+------+-------+--------+------+--------------+
| web  | container | RUNNING | 4242 | 1.50s | 12MiB  | 3    | 0123456789ab |
+------+-----------+---------+------+-------+--------+------+--------------+
| db   | vm        | STOPPED | -    | -     | -      | -    | fedcba987654 |
+------+-----------+---------+------+-------+--------+------+--------------+
";
        assert_eq!(instances_table(&sample()).render(), want);
    }
}
