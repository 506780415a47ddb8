//! A project's limits (`limits.*`, Incus' keys), what its instances use of them, and the
//! check a new or growing instance must pass.

use std::collections::BTreeMap;

use vessel_api::{Instance, InstanceType, Limits, ProjectUsage, PROJECT_LIMITS};

use crate::error::{Error, Result};

/// Parsed limits; `None` is no limit.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Quota {
    pub instances: Option<u64>,
    pub containers: Option<u64>,
    pub virtual_machines: Option<u64>,
    pub cpu: Option<f64>,
    pub memory: Option<u64>,
    pub processes: Option<u64>,
    pub disk: Option<u64>,
    pub networks: Option<u64>,
    pub snapshots: Option<u64>,
    /// `limits.disk.pool.NAME`: bytes of volumes (root disks included) in pool NAME.
    pub disk_pool: BTreeMap<String, u64>,
}

impl Quota {
    /// Whether any limit counts the project's instances (what other cluster members hold
    /// of the project counts then too).
    pub fn counts_instances(&self) -> bool {
        self.instances.is_some()
            || self.containers.is_some()
            || self.virtual_machines.is_some()
            || self.cpu.is_some()
            || self.memory.is_some()
            || self.processes.is_some()
            || self.disk.is_some()
    }

    /// The limits of a project's settings; an unknown key or a value that does not parse is
    /// an error naming it.
    pub fn parse(config: &BTreeMap<String, String>) -> Result<Quota> {
        let mut q = Quota::default();
        crate::name::validate_user_keys(
            "project",
            config.iter().filter(|(k, _)| k.starts_with("user.")),
        )?;
        for (k, v) in config {
            let count = || {
                v.parse::<u64>().map_err(|_| {
                    Error::invalid(format!("{k}={v:?} does not parse: give a whole number"))
                })
            };
            let size = || {
                vessel_api::size::parse_size(v)
                    .map_err(|e| Error::invalid(format!("{k}={v:?} does not parse: {e}")))
            };
            match k.as_str() {
                "limits.instances" => q.instances = Some(count()?),
                "limits.containers" => q.containers = Some(count()?),
                "limits.virtual-machines" => q.virtual_machines = Some(count()?),
                "limits.processes" => q.processes = Some(count()?),
                "limits.networks" => q.networks = Some(count()?),
                "limits.snapshots" => q.snapshots = Some(count()?),
                "limits.memory" => q.memory = Some(size()?),
                vessel_api::FEATURES_IMAGES => {
                    if !matches!(v.as_str(), "true" | "false") {
                        return Err(Error::invalid(format!(
                            "{k}={v:?} does not parse: give true or false"
                        )));
                    }
                }
                "limits.disk" => q.disk = Some(size()?),
                "limits.cpu" => {
                    let c: f64 = v
                        .parse()
                        .ok()
                        .filter(|c: &f64| c.is_finite() && *c >= 0.0)
                        .ok_or_else(|| {
                            Error::invalid(format!(
                                "{k}={v:?} does not parse: give cores, e.g. 4 or 2.5"
                            ))
                        })?;
                    q.cpu = Some(c);
                }
                // Labels, checked above.
                _ if k.starts_with("user.") => {}
                _ if k.starts_with("limits.disk.pool.") && k.len() > "limits.disk.pool.".len() => {
                    let pool = &k["limits.disk.pool.".len()..];
                    q.disk_pool.insert(pool.to_string(), size()?);
                }
                _ => {
                    let keys: Vec<&str> = PROJECT_LIMITS.iter().map(|(k, _)| *k).collect();
                    return Err(Error::invalid(format!(
                        "no project setting {k:?}; the settings are: {}",
                        keys.join(", ")
                    )));
                }
            }
        }
        Ok(q)
    }

    /// Checks that an instance of `kind` with `limits` may be added to a project that uses
    /// `usage` (`replacing`: the limits it had before, for a change of an existing one).
    pub fn admits(
        &self,
        usage: &ProjectUsage,
        kind: InstanceType,
        limits: &Limits,
        replacing: Option<&Limits>,
    ) -> Result<()> {
        let new = replacing.is_none();
        let over = |what: &str, used: String, limit: String| {
            Error::conflict(format!(
                "the project's {what} limit is {limit} and it uses {used}: this would go \
                 over it; free some, or ask an admin to raise the limit"
            ))
        };
        if new {
            if let Some(l) = self.instances {
                if usage.instances + 1 > l {
                    return Err(over(
                        "limits.instances",
                        usage.instances.to_string(),
                        l.to_string(),
                    ));
                }
            }
            let (used, limit, key) = match kind {
                InstanceType::Container => (usage.containers, self.containers, "limits.containers"),
                InstanceType::Vm => (
                    usage.virtual_machines,
                    self.virtual_machines,
                    "limits.virtual-machines",
                ),
            };
            if let Some(l) = limit {
                if used + 1 > l {
                    return Err(over(key, used.to_string(), l.to_string()));
                }
            }
        }
        let before = replacing.cloned().unwrap_or_default();
        // Each limited sum needs the instance to say what it adds to it.
        let need = |has: bool, project_key: &str, flag: &str| {
            if has {
                Ok(())
            } else {
                Err(Error::invalid(format!(
                    "the project limits {project_key}: give the instance a limit too ({flag})"
                )))
            }
        };
        if let Some(l) = self.cpu {
            need(limits.cpu.is_some(), "limits.cpu", "-l cpu=CORES")?;
            let after = usage.cpu - before.cpu.unwrap_or(0.0) + limits.cpu.unwrap_or(0.0);
            if after > l + 1e-9 {
                return Err(over(
                    "limits.cpu",
                    format!("{} cores", usage.cpu),
                    format!("{l} cores"),
                ));
            }
        }
        if let Some(l) = self.memory {
            need(limits.memory.is_some(), "limits.memory", "-l memory=SIZE")?;
            let after = usage.memory - before.memory.unwrap_or(0) + limits.memory.unwrap_or(0);
            if after > l {
                return Err(over("limits.memory", bytes(usage.memory), bytes(l)));
            }
        }
        if let Some(l) = self.processes {
            need(limits.pids.is_some(), "limits.processes", "-l pids=N")?;
            let after = usage.processes - before.pids.unwrap_or(0) + limits.pids.unwrap_or(0);
            if after > l {
                return Err(over(
                    "limits.processes",
                    usage.processes.to_string(),
                    l.to_string(),
                ));
            }
        }
        if let Some(l) = self.disk {
            if kind == InstanceType::Container {
                need(limits.disk.is_some(), "limits.disk", "-l disk=SIZE")?;
            }
            let after = usage.disk - before.disk.unwrap_or(0) + limits.disk.unwrap_or(0);
            if after > l {
                return Err(over("limits.disk", bytes(usage.disk), bytes(l)));
            }
        }
        Ok(())
    }
}

impl Quota {
    /// Checks that `adding` bytes more in `pool` keep a project that has volumes of
    /// `sizes` there (`None`: of no size given) within `limits.disk.pool.POOL`.
    pub fn admits_in_pool(
        &self,
        pool: &str,
        sizes: &[Option<u64>],
        adding: Option<u64>,
    ) -> Result<()> {
        let Some(limit) = self.disk_pool.get(pool).copied() else {
            return Ok(());
        };
        let key = format!("limits.disk.pool.{pool}");
        let adding = adding.ok_or_else(|| {
            Error::invalid(format!(
                "the project limits {key}: give the volume a size (--size, or -l disk= for a \
                 root disk)"
            ))
        })?;
        let used: u64 = sizes.iter().map(|s| s.unwrap_or(0)).sum();
        if used + adding > limit {
            return Err(Error::conflict(format!(
                "the project's {key} limit is {} and it uses {}: this would go over it; free \
                 some, or ask an admin to raise the limit",
                bytes(limit),
                bytes(used)
            )));
        }
        Ok(())
    }
}

fn bytes(n: u64) -> String {
    if n >= 1 << 30 {
        format!("{:.2}GiB", n as f64 / (1u64 << 30) as f64)
    } else if n >= 1 << 20 {
        format!("{:.1}MiB", n as f64 / (1u64 << 20) as f64)
    } else {
        format!("{n}B")
    }
}

/// What instances of one project (their kinds and limits) use of its limits.
pub fn usage<'a>(
    instances: impl IntoIterator<Item = (InstanceType, &'a Limits)>,
    networks: u64,
) -> ProjectUsage {
    let mut u = ProjectUsage {
        networks,
        ..ProjectUsage::default()
    };
    for (kind, limits) in instances {
        u.instances += 1;
        match kind {
            InstanceType::Container => u.containers += 1,
            InstanceType::Vm => u.virtual_machines += 1,
        }
        u.cpu += limits.cpu.unwrap_or(0.0);
        u.memory += limits.memory.unwrap_or(0);
        u.processes += limits.pids.unwrap_or(0);
        u.disk += limits.disk.unwrap_or(0);
    }
    u
}

/// `more` (what a project uses elsewhere: on other cluster members) added to `u`.
/// Networks are not: each member's are its own, and cluster networks are on every member
/// (`limits.networks` counts a member's).
pub fn add(u: &mut ProjectUsage, more: &ProjectUsage) {
    u.instances += more.instances;
    u.containers += more.containers;
    u.virtual_machines += more.virtual_machines;
    u.cpu += more.cpu;
    u.memory += more.memory;
    u.processes += more.processes;
    u.disk += more.disk;
}

/// What `instances` of `project` (qualified names, any project) use of its limits.
pub fn usage_of(project: &str, instances: &[Instance], networks: u64) -> ProjectUsage {
    usage(
        instances
            .iter()
            .filter(|i| super::within(project, &i.name).is_some())
            .map(|i| (i.instance_type, &i.limits)),
        networks,
    )
}
