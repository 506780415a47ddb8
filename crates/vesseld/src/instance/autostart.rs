//! `boot.autostart`: instances that start when the host boots. The daemon keeps the kernel's
//! boot id of its last start under its root; a different one at start means the host booted
//! since, and the stopped instances marked `boot.autostart=true` are started, highest
//! `boot.autostart.priority` first (then by name), each followed by its
//! `boot.autostart.delay` seconds before the next; the boot id is kept once the sequence is
//! done. A daemon restart on the same boot after that starts nothing: an instance someone
//! stopped stays stopped.

use std::path::Path;
use std::time::Duration;

use vessel_api::{Instance, InstanceStatus, StateAction, StateChange};

use super::InstanceService;

/// Where the daemon keeps the boot id of its last start.
const BOOT_ID_FILE: &str = "boot_id";
/// The kernel's id of the current boot.
const KERNEL_BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

/// The current boot's id if the host booted since the daemon last finished its autostart
/// under `root` (a first start counts: the host just came up as far as this daemon knows).
pub fn host_booted(root: &Path) -> Option<String> {
    let now = match std::fs::read_to_string(KERNEL_BOOT_ID) {
        Ok(id) => id.trim().to_string(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the boot id: no autostart");
            return None;
        }
    };
    let last = std::fs::read_to_string(root.join(BOOT_ID_FILE)).unwrap_or_default();
    (last.trim() != now).then_some(now)
}

/// Records that the autostart of boot `id` is done: a daemon killed before this starts the
/// sequence again (what it started already runs, and is skipped).
pub fn record_boot(root: &Path, id: &str) {
    let file = root.join(BOOT_ID_FILE);
    let tmp = root.join(format!("{BOOT_ID_FILE}.tmp"));
    let r = std::fs::write(&tmp, format!("{id}\n")).and_then(|()| std::fs::rename(&tmp, &file));
    if let Err(e) = r {
        tracing::warn!(path = %file.display(), error = %e, "cannot record the boot id");
    }
}

/// The instances to start at boot, in order, each with the seconds to wait after it.
pub fn order(instances: &[Instance]) -> Vec<(String, u64)> {
    let key = |i: &Instance, k: &str| i.config.get(k).cloned().unwrap_or_default();
    let mut marked: Vec<(i64, String, u64)> = instances
        .iter()
        .filter(|i| key(i, "boot.autostart") == "true" && i.status == InstanceStatus::Stopped)
        .map(|i| {
            (
                key(i, "boot.autostart.priority").parse().unwrap_or(0),
                i.name.clone(),
                key(i, "boot.autostart.delay").parse().unwrap_or(0),
            )
        })
        .collect();
    marked.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    marked.into_iter().map(|(_, n, d)| (n, d)).collect()
}

impl InstanceService {
    /// Starts the instances marked to start with the host, in order (see the module). A
    /// failure is logged and the next one started.
    pub async fn autostart(&self) {
        let list = match self.store.instance_list() {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "autostart: cannot list instances");
                return;
            }
        };
        for (name, delay) in order(&list) {
            tracing::info!(instance = %name, delay, "autostart");
            let change = StateChange {
                action: StateAction::Start,
                timeout: None,
                force: false,
            };
            let started = match self.change_state(&name, change) {
                Ok(op) => self.ops.wait(&op.id, None).await.map(|_| ()),
                Err(e) => Err(e),
            };
            if let Err(e) = started {
                tracing::warn!(instance = %name, error = %e, "autostart failed");
            }
            if delay > 0 {
                tokio::time::sleep(Duration::from_secs(delay)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(name: &str, status: &str, config: &[(&str, &str)]) -> Instance {
        let mut i: Instance = serde_json::from_value(serde_json::json!({
            "name": name, "type": "container", "status": status, "image": "x",
            "privileged": false, "limits": {}, "command": ["sh"], "environment": {},
            "created_at": "t"
        }))
        .unwrap();
        i.config = config
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        i
    }

    #[test]
    fn higher_priority_first_then_by_name_with_delays() {
        let list = [
            inst("b", "stopped", &[("boot.autostart", "true")]),
            inst(
                "db",
                "stopped",
                &[
                    ("boot.autostart", "true"),
                    ("boot.autostart.priority", "10"),
                    ("boot.autostart.delay", "3"),
                ],
            ),
            inst("a", "stopped", &[("boot.autostart", "true")]),
            inst("off", "stopped", &[("boot.autostart", "false")]),
            inst("plain", "stopped", &[]),
            inst("up", "running", &[("boot.autostart", "true")]),
            inst(
                "last",
                "stopped",
                &[
                    ("boot.autostart", "true"),
                    ("boot.autostart.priority", "-1"),
                ],
            ),
        ];
        assert_eq!(
            order(&list),
            [
                ("db".to_string(), 3),
                ("a".to_string(), 0),
                ("b".to_string(), 0),
                ("last".to_string(), 0)
            ]
        );
    }

    #[test]
    fn a_boot_is_told_by_its_id() {
        let dir = std::env::temp_dir().join(format!("vessel-boot-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let boot = host_booted(&dir).expect("a first start is a boot");
        assert_eq!(host_booted(&dir), Some(boot.clone()), "not done yet: again");
        record_boot(&dir, &boot);
        assert_eq!(host_booted(&dir), None, "the same boot, done");
        std::fs::write(dir.join(BOOT_ID_FILE), "another boot\n").unwrap();
        assert_eq!(host_booted(&dir), Some(boot));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
