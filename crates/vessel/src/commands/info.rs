//! `info NAME` (one instance) and `info` (the daemon).

use anyhow::Result;
use vessel_api::{Instance, ServerInfo};

use super::instance_path;
use super::list::type_name;
use crate::client::Client;
use crate::limits::describe;
use crate::output::{format_bytes, format_cpu, print_document, yes_no, Block, Format};

/// `info NAME`.
pub fn instance(client: &Client, name: &str, format: Format) -> Result<i32> {
    let inst: Instance = client.get(&instance_path(name))?;
    match format {
        Format::Table => instance_block(&inst).print()?,
        _ => print_document(format, &inst)?,
    }
    Ok(0)
}

/// `info` without a name.
pub fn server(client: &Client, format: Format) -> Result<i32> {
    let info: ServerInfo = client.get("/1.0")?;
    match format {
        Format::Table => server_block(&info).print()?,
        _ => print_document(format, &info)?,
    }
    Ok(0)
}

/// What `info NAME` prints for people.
pub fn instance_block(i: &Instance) -> Block {
    let mut b = Block::new();
    b.field("Name", &i.name)
        .field("Status", i.status.as_str().to_uppercase())
        .field("Type", type_name(i.instance_type))
        .field("Image", &i.image)
        .field("Privileged", yes_no(i.privileged));
    if let (Some(m), vessel_api::InstanceType::Vm) = (&i.idmap, i.instance_type) {
        // A VM's QEMU runs as the first id of its range.
        b.field("QEMU user", format!("uid and gid {}", m.host_base));
    } else if let Some(m) = &i.idmap {
        b.field(
            "Id map",
            format!(
                "0-{} -> {}-{} ({})",
                m.size.saturating_sub(1),
                m.host_base,
                m.host_base.saturating_add(m.size.saturating_sub(1)),
                if m.isolated { "isolated" } else { "shared" }
            ),
        );
    }
    if let Some(member) = &i.location {
        b.field("Location", member);
    }
    b.field("Created", &i.created_at);
    if !i.command.is_empty() {
        b.field("Command", i.command.join(" "));
    }
    let env: Vec<(String, String)> = i
        .environment
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if !env.is_empty() {
        b.section("Environment", &env, "none");
    }
    b.section("Limits", &describe(&i.limits), "none");
    let nics: Vec<(String, String)> = i
        .nics
        .iter()
        .map(|n| {
            let mut v = format!("network {}, MAC {}, {}", n.network, n.mac, n.ipv4);
            if let Some(a) = &n.ipv6 {
                v.push_str(&format!(", {a}"));
            }
            match (&n.gateway, n.vlan) {
                (_, Some(vid)) => v.push_str(&format!(", VLAN {vid}")),
                (Some(gw), None) => v.push_str(&format!(", gateway {gw}")),
                (None, None) => {}
            }
            (n.interface.clone(), v)
        })
        .collect();
    b.section("NICs", &nics, "none");
    let volumes: Vec<(String, String)> = i
        .volumes
        .iter()
        .map(|v| {
            let at = if v.path.is_empty() {
                "disk".to_string()
            } else {
                v.path.clone()
            };
            (
                format!("{}/{}", v.pool, v.volume),
                format!("{} ({})", at, v.content),
            )
        })
        .collect();
    b.section("Volumes", &volumes, "none");
    if let Some(d) = &i.root_disk {
        let used = d.used_bytes.map_or_else(
            || "use unknown".to_string(),
            |u| format!("{} used", format_bytes(u)),
        );
        let place = match &d.pool {
            Some(p) => format!("{} in pool {p}", d.kind),
            None => d.kind.clone(),
        };
        b.field(
            "Root disk",
            format!("{}, {used} ({place})", format_bytes(d.size_bytes)),
        );
    }
    if let Some(vm) = &i.vm {
        let details = vec![
            ("Profile".to_string(), vm.profile.clone()),
            (
                "Accelerator".to_string(),
                format!("{} ({})", vm.accel, vm.accel_reason),
            ),
            ("Guest agent".to_string(), yes_no(vm.agent).to_string()),
            ("VNC".to_string(), yes_no(vm.vnc).to_string()),
        ];
        b.section("Virtual machine", &details, "none");
    }
    if let Some(s) = &i.state {
        let mut usage = Vec::new();
        if let Some(pid) = s.pid {
            usage.push(("PID".to_string(), pid.to_string()));
        }
        usage.push(("Processes".to_string(), s.pids.to_string()));
        usage.push(("CPU time".to_string(), format_cpu(s.cpu_usage_ns)));
        let mut memory = format_bytes(s.memory_usage_bytes);
        if let Some(peak) = s.memory_peak_bytes {
            memory.push_str(&format!(" (peak {})", format_bytes(peak)));
        }
        usage.push(("Memory".to_string(), memory));
        usage.push(("OOM kills".to_string(), s.oom_kills.to_string()));
        b.section("Resources", &usage, "none");
    }
    if let Some(code) = i.last_exit_code {
        b.field("Last exit code", code);
    }
    if let Some(reason) = &i.last_exit_reason {
        b.field("Last exit", reason);
    }
    if let Some(e) = &i.error {
        b.field("Error message", e);
    }
    b
}

/// What `info` prints for people.
pub fn server_block(s: &ServerInfo) -> Block {
    let mut b = Block::new();
    b.field("API version", &s.api_version)
        .field("Server version", &s.server_version)
        .field("Client version", env!("CARGO_PKG_VERSION"))
        .field("PID", s.pid)
        .field("Root directory", &s.root_dir)
        .field("Store", &s.store)
        .section(
            "Host",
            &[
                ("Kernel".to_string(), s.host.kernel.clone()),
                ("Cgroups".to_string(), s.host.cgroup_version.clone()),
                (
                    "User namespaces".to_string(),
                    yes_no(s.host.user_namespaces).to_string(),
                ),
                (
                    "VM accelerator".to_string(),
                    match (&s.host.vm_accelerator, &s.host.vm_accelerator_reason) {
                        (Some(a), Some(why)) => format!("{a} ({why})"),
                        (Some(a), None) => a.clone(),
                        _ => "not probed yet: the first VM start tries KVM, else TCG".into(),
                    },
                ),
            ],
            "unknown",
        );
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_block_text() {
        let mut i: Instance = serde_json::from_value(serde_json::json!({
            "name": "web", "type": "container", "status": "running",
            "image": "0123456789abcdef", "privileged": false,
            "limits": {"memory": 268435456, "cpu": 0.5}, "command": ["/bin/sh"],
            "environment": {"MODE": "x"}, "created_at": "2026-01-01T00:00:00Z",
            "last_exit_code": 137,
            "state": {"pid": 7, "cpu_usage_ns": 2000000000, "memory_usage_bytes": 1048576,
                      "memory_peak_bytes": 2097152, "oom_kills": 1, "pids": 2},
            "nics": [{"network": "default", "interface": "eth0", "mac": "0a:56:00:00:00:01",
                      "ipv4": "10.42.0.2/24", "gateway": "10.42.0.1"}],
            "volumes": [{"pool": "local", "volume": "data", "content": "filesystem",
                         "path": "/srv/data"}]
        }))
        .unwrap();
        let want = "\
Name: web
Status: RUNNING
Type: container
Image: 0123456789abcdef
Privileged: no
Created: 2026-01-01T00:00:00Z
Command: /bin/sh
Environment:
  MODE: x
Limits:
  cpu: 0.5
  memory: 256MiB
NICs:
  eth0: network default, MAC 0a:56:00:00:00:01, 10.42.0.2/24, gateway 10.42.0.1
Volumes:
  local/data: /srv/data (filesystem)
Resources:
  PID: 7
  Processes: 2
  CPU time: 2.00s
  Memory: 1MiB (peak 2MiB)
  OOM kills: 1
Last exit code: 137
";
        assert_eq!(instance_block(&i).render(), want);
        i.last_exit_reason = Some("the guest powered off".into());
        assert!(instance_block(&i)
            .render()
            .ends_with("Last exit code: 137\nLast exit: the guest powered off\n"));
        i.root_disk = Some(vessel_api::RootDisk {
            size_bytes: 64 << 20,
            used_bytes: Some(3 << 20),
            kind: "btrfs subvolume".into(),
            pool: Some("fast".into()),
        });
        assert!(instance_block(&i)
            .render()
            .contains("  local/data: /srv/data (filesystem)\nRoot disk: 64MiB, 3MiB used (btrfs subvolume in pool fast)\nResources:"));
        i.state = None;
        i.error = Some("init failed".into());
        i.limits = Default::default();
        i.nics.clear();
        let text = instance_block(&i).render();
        assert!(text.contains("Limits: none\n"));
        assert!(text.contains("NICs: none\n"));
        assert!(!text.contains("Resources"));
        assert!(text.ends_with("Error message: init failed\n"));
    }
}
