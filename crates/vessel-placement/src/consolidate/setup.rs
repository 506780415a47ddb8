//! From the members and the recorded demand to the planner's state: the inputs checked,
//! offline members set aside, capacities cut to the headroom line, groups interned.

use std::collections::HashMap;

use super::fleet::{Bin, Fleet, Item, MICRO};
use super::PlanError;
use crate::model::{Demand, Member};
use crate::placement::pair;
use crate::units;

/// The checked inputs as the planner works on them.
pub(super) struct Setup {
    /// Online members, as bins at their current use.
    pub fleet: Fleet,
    /// The member of each bin.
    pub bin_member: Vec<usize>,
    /// The demand of each item.
    pub item_demand: Vec<usize>,
    /// Group names by interned number.
    pub group_names: Vec<String>,
    /// Offline members and how many instances they hold.
    pub offline: Vec<(usize, usize)>,
}

/// Checks `headroom` and turns `members` and `instances` into the planner's state.
pub(super) fn setup(
    members: &[Member],
    instances: &[Demand],
    headroom: f64,
) -> Result<Setup, PlanError> {
    if !(headroom.is_finite() && (0.0..1.0).contains(&headroom)) {
        return Err(PlanError::Headroom(headroom));
    }
    let keep = 1.0 - headroom;
    let mut bin_of = HashMap::new();
    let mut offline_of = HashMap::new();
    let mut bins = Vec::new();
    let mut bin_member = Vec::new();
    let mut offline = Vec::new();
    for (mi, m) in members.iter().enumerate() {
        if m.online {
            bin_of.entry(m.name.as_str()).or_insert(bins.len());
            bins.push(Bin {
                cpu_cap: micro(m.cpu_capacity * keep),
                memory_cap: (m.memory_capacity as f64 * keep).floor() as u64,
                cpu: 0,
                memory: 0,
                items: Vec::new(),
                open: true,
            });
            bin_member.push(mi);
        } else {
            offline_of.entry(m.name.as_str()).or_insert(offline.len());
            offline.push((mi, 0));
        }
    }
    let reference = (
        bins.iter().map(|b| b.cpu_cap).max().unwrap_or(0).max(1) as f64,
        bins.iter().map(|b| b.memory_cap).max().unwrap_or(0).max(1) as f64,
    );
    let mut groups: HashMap<&str, usize> = HashMap::new();
    let mut group_names = Vec::new();
    let mut group_sizes: Vec<usize> = Vec::new();
    let mut items = Vec::new();
    let mut at = Vec::new();
    let mut item_demand = Vec::new();
    for (di, d) in instances.iter().enumerate() {
        if !(d.cpu.is_finite() && d.cpu >= 0.0) {
            return Err(PlanError::InvalidDemand {
                instance: d.name.clone(),
                why: format!("{} cores is not a number of cores of at least 0", d.cpu),
            });
        }
        let b = match bin_of.get(d.member.as_str()) {
            Some(&b) => b,
            None => match offline_of.get(d.member.as_str()) {
                Some(&o) => {
                    offline[o].1 += 1;
                    continue;
                }
                None => {
                    return Err(PlanError::UnknownMember {
                        instance: d.name.clone(),
                        member: d.member.clone(),
                    })
                }
            },
        };
        let group = d.group.as_deref().map(|g| {
            *groups.entry(g).or_insert_with(|| {
                group_names.push(g.to_string());
                group_sizes.push(0);
                group_names.len() - 1
            })
        });
        if let Some(g) = group {
            group_sizes[g] += 1;
        }
        let cpu = micro(d.cpu);
        let item = Item {
            cpu,
            memory: d.memory,
            group,
            size: (cpu as f64 / reference.0).max(d.memory as f64 / reference.1),
        };
        if !bins
            .iter()
            .any(|b| item.cpu <= b.cpu_cap && item.memory <= b.memory_cap)
        {
            return Err(PlanError::NoRoom {
                instance: d.name.clone(),
                needs: pair(d.cpu, d.memory),
                line: units::percent(keep),
            });
        }
        items.push(item);
        at.push(b);
        item_demand.push(di);
    }
    if let Some((g, &size)) = group_sizes.iter().enumerate().max_by_key(|(_, s)| **s) {
        if size > bins.len() {
            return Err(PlanError::GroupTooLarge {
                group: group_names[g].clone(),
                size,
                members: bins.len(),
            });
        }
    }
    let fleet = Fleet::new(items, bins, at, group_names.len(), reference);
    Ok(Setup {
        fleet,
        bin_member,
        item_demand,
        group_names,
        offline,
    })
}

/// Cores as whole micro-cores (to the nearest), zero for what is not a positive number.
pub(super) fn micro(cores: f64) -> u64 {
    if cores.is_finite() && cores > 0.0 {
        (cores * MICRO).round() as u64
    } else {
        0
    }
}

/// The fewest members that could hold the work: members taken largest first until their
/// capacity below the headroom line covers the total cpu, and likewise for memory; at least
/// the size of the largest anti-affinity group.
pub(super) fn lower_bound(fleet: &Fleet) -> usize {
    let cpu: u64 = fleet.items.iter().map(|i| i.cpu).sum();
    let memory: u64 = fleet.items.iter().map(|i| i.memory).sum();
    let fewest = |mut caps: Vec<u64>, total: u64| {
        caps.sort_unstable_by(|a, b| b.cmp(a));
        let mut sum = 0u64;
        let mut n = 0;
        for c in caps {
            if sum >= total {
                break;
            }
            sum = sum.saturating_add(c);
            n += 1;
        }
        n
    };
    let by_cpu = fewest(fleet.bins.iter().map(|b| b.cpu_cap).collect(), cpu);
    let by_memory = fewest(fleet.bins.iter().map(|b| b.memory_cap).collect(), memory);
    let mut group_sizes: HashMap<usize, usize> = HashMap::new();
    for g in fleet.items.iter().filter_map(|i| i.group) {
        *group_sizes.entry(g).or_default() += 1;
    }
    let by_group = group_sizes.values().copied().max().unwrap_or(0);
    by_cpu.max(by_memory).max(by_group)
}
