//! Where a new instance goes: the member a request fits on, chosen by the cluster's policy,
//! or the reason none will take it.
//!
//! A member fits a request when it is online, holds no instance of the request's
//! anti-affinity group, and its capacity minus what its instances ask for covers the
//! request's cores and memory. `spread` chooses the fitting member whose load after placing
//! (the larger of its cpu and memory fractions) is lowest, ties to the member with fewer
//! instances, then by name; `binpack` the one whose load after placing is highest, ties by
//! name.

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::model::{Member, Policy, Request};
use crate::units;

/// Slack in comparisons of cores, so that sums of decimal fractions still fit exactly.
pub(crate) const CPU_EPSILON: f64 = 1e-9;

/// Members named in full in a message before it summarises them.
const NAMED_IN_FULL: usize = 4;

/// Why a request was not placed; nothing was changed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlaceError {
    /// The request's figures are not usable.
    #[error("instance {instance} asks for {what}: {why}")]
    InvalidRequest {
        /// The instance.
        instance: String,
        /// What it asks for, as given.
        what: String,
        /// What a valid request looks like.
        why: String,
    },
    /// `--target` names no member of the cluster.
    #[error("no member named {member}; the members are {known}")]
    UnknownMember {
        /// The name given.
        member: String,
        /// The members there are, listed (summarised when many).
        known: String,
    },
    /// `--target` names a member that does not answer.
    #[error(
        "member {member} is offline: choose another member, or none to let the scheduler choose"
    )]
    Offline {
        /// The member.
        member: String,
    },
    /// `--target` names a member without room for the request.
    #[error(
        "member {member} lacks room for {instance}: it needs {}, {member} has {} free",
        pair(*cpu, *memory),
        pair(*cpu_free, *memory_free)
    )]
    Lacks {
        /// The member.
        member: String,
        /// The instance.
        instance: String,
        /// Cores asked for.
        cpu: f64,
        /// Bytes asked for.
        memory: u64,
        /// Cores free on the member.
        cpu_free: f64,
        /// Bytes free on the member.
        memory_free: u64,
    },
    /// `--target` names a member that holds an instance of the request's group.
    #[error(
        "member {member} already holds an instance of anti-affinity group {group}: \
         {instance} must go to another member"
    )]
    GroupConflict {
        /// The member.
        member: String,
        /// The instance.
        instance: String,
        /// The group.
        group: String,
    },
    /// The request exceeds what its project may still use.
    #[error("project {project} has {left} left in its budget; {instance} asks for {asked}")]
    OverBudget {
        /// The project.
        project: String,
        /// The instance.
        instance: String,
        /// What it asks for of the exhausted resource.
        asked: String,
        /// What the project has left of it.
        left: String,
    },
    /// No member will take the request.
    #[error(transparent)]
    NoFit(#[from] NoFit),
}

/// Why one member cannot take a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "reason")]
pub enum Exclusion {
    /// The member does not answer.
    Offline,
    /// The member holds an instance of the request's anti-affinity group.
    Group {
        /// The group.
        group: String,
    },
    /// The member lacks cores, memory or both.
    Short {
        /// Cores free.
        cpu_free: f64,
        /// Bytes free.
        memory_free: u64,
        /// Whether the cores fall short.
        cpu_short: bool,
        /// Whether the memory falls short.
        memory_short: bool,
    },
}

/// One member left out, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Excluded {
    /// The member.
    pub member: String,
    /// Why it cannot take the request.
    pub reason: Exclusion,
}

/// No member takes a request: every member and why it was left out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
pub struct NoFit {
    /// The instance.
    pub instance: String,
    /// Cores it asks for.
    pub cpu: f64,
    /// Bytes it asks for.
    pub memory: u64,
    /// Every member, in the cluster's order, with its reason.
    pub excluded: Vec<Excluded>,
}

impl NoFit {
    /// Members left out for being offline, for a group, and for lacking cpu only, memory
    /// only, or both.
    pub fn counts(&self) -> ReasonCounts {
        let mut c = ReasonCounts::default();
        for e in &self.excluded {
            match &e.reason {
                Exclusion::Offline => c.offline += 1,
                Exclusion::Group { .. } => c.group += 1,
                Exclusion::Short {
                    cpu_short: true,
                    memory_short: true,
                    ..
                } => c.short_both += 1,
                Exclusion::Short {
                    cpu_short: true, ..
                } => c.short_cpu += 1,
                Exclusion::Short { .. } => c.short_memory += 1,
            }
        }
        c
    }

    /// The member closest to fitting: the online one, outside the group, whose shortfall
    /// is the smallest share of the request.
    pub fn closest(&self) -> Option<&Excluded> {
        let share = |e: &Excluded| match e.reason {
            Exclusion::Short {
                cpu_free,
                memory_free,
                ..
            } => {
                let cpu = if self.cpu > 0.0 {
                    ((self.cpu - cpu_free) / self.cpu).max(0.0)
                } else {
                    0.0
                };
                let mem = if self.memory > 0 {
                    self.memory.saturating_sub(memory_free) as f64 / self.memory as f64
                } else {
                    0.0
                };
                Some(cpu.max(mem))
            }
            _ => None,
        };
        self.excluded
            .iter()
            .filter_map(|e| share(e).map(|s| (s, e)))
            .min_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, e)| e)
    }
}

/// How many members were left out for each reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReasonCounts {
    /// Offline.
    pub offline: usize,
    /// Holding an instance of the group.
    pub group: usize,
    /// Short of cores only.
    pub short_cpu: usize,
    /// Short of memory only.
    pub short_memory: usize,
    /// Short of both.
    pub short_both: usize,
}

impl fmt::Display for NoFit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let asked = pair(self.cpu, self.memory);
        if self.excluded.is_empty() {
            return write!(
                f,
                "no member to place {} on: the cluster has none",
                self.instance
            );
        }
        if self.excluded.len() <= NAMED_IN_FULL {
            write!(f, "no member fits {} ({asked}): ", self.instance)?;
            let each: Vec<String> = self.excluded.iter().map(describe).collect();
            return f.write_str(&each.join("; "));
        }
        let c = self.counts();
        let mut parts = Vec::new();
        if c.offline > 0 {
            parts.push(format!("{} offline", c.offline));
        }
        if c.group > 0 {
            parts.push(format!("{} hold its anti-affinity group", c.group));
        }
        for (n, what) in [
            (c.short_cpu, "short of cpu"),
            (c.short_memory, "short of memory"),
            (c.short_both, "short of both"),
        ] {
            if n > 0 {
                parts.push(format!("{n} {what}"));
            }
        }
        write!(
            f,
            "no member of {} fits {} ({asked}): {}",
            self.excluded.len(),
            self.instance,
            parts.join(", ")
        )?;
        if let Some(e) = self.closest() {
            write!(f, "; closest: {}", describe(e))?;
        }
        Ok(())
    }
}

/// One member's reason, as a clause: "m2 has 1.5 cores and 8 GiB free".
fn describe(e: &Excluded) -> String {
    match &e.reason {
        Exclusion::Offline => format!("{} is offline", e.member),
        Exclusion::Group { group } => format!("{} holds an instance of group {group}", e.member),
        Exclusion::Short {
            cpu_free,
            memory_free,
            ..
        } => format!("{} has {} free", e.member, pair(*cpu_free, *memory_free)),
    }
}

/// "2 cores and 4 GiB".
pub(crate) fn pair(cpu: f64, memory: u64) -> String {
    format!(
        "{} and {}",
        units::cores(cpu.max(0.0)),
        units::bytes(memory)
    )
}

/// Refuses a request whose cores are not a number of at least zero.
pub(crate) fn validate(req: &Request) -> Result<(), PlaceError> {
    if !req.cpu.is_finite() || req.cpu < 0.0 {
        return Err(PlaceError::InvalidRequest {
            instance: req.name.clone(),
            what: format!("{} cores", req.cpu),
            why: "cpu must be a number of cores of at least 0".to_string(),
        });
    }
    Ok(())
}

/// `used / capacity`, infinite when something is used of nothing.
fn fraction(used: f64, capacity: f64) -> f64 {
    if capacity > 0.0 {
        used / capacity
    } else if used > 0.0 {
        f64::INFINITY
    } else {
        0.0
    }
}

/// The member's load after taking `req` (the larger of its cpu and memory fractions), or
/// why it cannot take it. `holds_group` says whether it holds an instance of `req`'s group.
pub(crate) fn check(member: &Member, holds_group: bool, req: &Request) -> Result<f64, Exclusion> {
    if !member.online {
        return Err(Exclusion::Offline);
    }
    if holds_group {
        return Err(Exclusion::Group {
            group: req.group.clone().unwrap_or_default(),
        });
    }
    let cpu_after = member.cpu_used + req.cpu;
    let memory_after = member.memory_used.saturating_add(req.memory);
    // A capacity that is not a number fits nothing.
    let cpu_short = cpu_after
        .partial_cmp(&(member.cpu_capacity + CPU_EPSILON))
        .is_none_or(|o| o == Ordering::Greater);
    let memory_short = memory_after > member.memory_capacity;
    if cpu_short || memory_short {
        return Err(Exclusion::Short {
            cpu_free: member.cpu_free(),
            memory_free: member.memory_free(),
            cpu_short,
            memory_short,
        });
    }
    let cpu = fraction(cpu_after, member.cpu_capacity);
    let memory = fraction(memory_after as f64, member.memory_capacity as f64);
    Ok(cpu.max(memory))
}

/// Whether candidate `a` (member, load after placing) beats the best so far `b`.
fn better(policy: Policy, a: (&Member, f64), b: (&Member, f64)) -> bool {
    let by_load = match policy {
        Policy::Spread => a.1.total_cmp(&b.1),
        Policy::Binpack => b.1.total_cmp(&a.1),
    };
    let by_count = match policy {
        Policy::Spread => a.0.instances.cmp(&b.0.instances),
        Policy::Binpack => Ordering::Equal,
    };
    by_load.then(by_count).then_with(|| a.0.name.cmp(&b.0.name)) == Ordering::Less
}

/// The member for `req`: `target` when it is given and takes it, otherwise the best fitting
/// member by `policy`. `holds(i)` says whether member `i` holds an instance of the request's
/// group; `find` looks a member up by name.
pub(crate) fn choose(
    members: &[Member],
    req: &Request,
    policy: Policy,
    target: Option<&str>,
    holds: impl Fn(usize) -> bool,
    find: impl Fn(&str) -> Option<usize>,
) -> Result<usize, PlaceError> {
    if let Some(name) = target {
        let i = find(name).ok_or_else(|| PlaceError::UnknownMember {
            member: name.to_string(),
            known: listed(members),
        })?;
        let m = &members[i];
        return match check(m, holds(i), req) {
            Ok(_) => Ok(i),
            Err(Exclusion::Offline) => Err(PlaceError::Offline {
                member: m.name.clone(),
            }),
            Err(Exclusion::Group { group }) => Err(PlaceError::GroupConflict {
                member: m.name.clone(),
                instance: req.name.clone(),
                group,
            }),
            Err(Exclusion::Short {
                cpu_free,
                memory_free,
                ..
            }) => Err(PlaceError::Lacks {
                member: m.name.clone(),
                instance: req.name.clone(),
                cpu: req.cpu,
                memory: req.memory,
                cpu_free,
                memory_free,
            }),
        };
    }
    let mut best: Option<(usize, f64)> = None;
    for (i, m) in members.iter().enumerate() {
        let has_group = req.group.is_some() && holds(i);
        if let Ok(load) = check(m, has_group, req) {
            if best.is_none_or(|(b, bl)| better(policy, (m, load), (&members[b], bl))) {
                best = Some((i, load));
            }
        }
    }
    match best {
        Some((i, _)) => Ok(i),
        None => Err(no_fit(members, req, holds).into()),
    }
}

/// Every member's reason for refusing `req`.
fn no_fit(members: &[Member], req: &Request, holds: impl Fn(usize) -> bool) -> NoFit {
    let excluded = members
        .iter()
        .enumerate()
        .filter_map(|(i, m)| {
            check(m, req.group.is_some() && holds(i), req)
                .err()
                .map(|reason| Excluded {
                    member: m.name.clone(),
                    reason,
                })
        })
        .collect();
    NoFit {
        instance: req.name.clone(),
        cpu: req.cpu,
        memory: req.memory,
        excluded,
    }
}

/// The members' names for a message, the first few and a count of the rest.
fn listed(members: &[Member]) -> String {
    const SHOWN: usize = 8;
    if members.is_empty() {
        return "none".to_string();
    }
    let names: Vec<&str> = members
        .iter()
        .take(SHOWN)
        .map(|m| m.name.as_str())
        .collect();
    let mut s = names.join(", ");
    if members.len() > SHOWN {
        s.push_str(&format!(" and {} more", members.len() - SHOWN));
    }
    s
}

/// Why `members[chosen]` was chosen under `policy`, in one line a person can check against
/// `vessel cluster list`.
pub fn why_chosen(members: &[Member], chosen: usize, policy: Policy) -> String {
    let m = &members[chosen];
    let rule = match policy {
        Policy::Spread => "the most room left",
        Policy::Binpack => "the least room that fits",
    };
    format!(
        "{policy} ({rule}): {} has {} and {} free of {} and {}; {} of {} members online",
        m.name,
        units::cores(m.cpu_free().max(0.0)),
        units::bytes(m.memory_free()),
        units::cores(m.cpu_capacity),
        units::bytes(m.memory_capacity),
        members.iter().filter(|m| m.online).count(),
        members.len()
    )
}

/// Chooses the member for `req` among `members` by `policy`, or `target` when it is given
/// (`--target MEMBER`); returns its index. Changes nothing: see [`crate::Placer`] to place
/// many in a row.
pub fn place(
    members: &[Member],
    req: &Request,
    policy: Policy,
    target: Option<&str>,
) -> Result<usize, PlaceError> {
    validate(req)?;
    let group = req.group.as_deref();
    choose(
        members,
        req,
        policy,
        target,
        |i| group.is_some_and(|g| members[i].holds_group(g)),
        |name| members.iter().position(|m| m.name == name),
    )
}

#[cfg(test)]
mod tests;
