//! First-fit decreasing, the baseline a plan is compared with: every instance placed afresh,
//! largest first, on the first member (largest first) with room below its line and no
//! other instance of its group.

use super::setup::setup;
use super::PlanError;
use crate::model::{Demand, Member};
use crate::placement::pair;
use crate::units;

/// How many members first-fit decreasing needs for `instances` on `members` with
/// `headroom`, ignoring where the instances run now.
pub fn first_fit_decreasing(
    members: &[Member],
    instances: &[Demand],
    headroom: f64,
) -> Result<usize, PlanError> {
    let s = setup(members, instances, headroom)?;
    let fleet = &s.fleet;
    let mut bins: Vec<usize> = (0..fleet.bins.len()).collect();
    let share = |b: usize| {
        let bin = &fleet.bins[b];
        (bin.cpu_cap as f64 / fleet.reference().0).max(bin.memory_cap as f64 / fleet.reference().1)
    };
    bins.sort_by(|&a, &b| share(b).total_cmp(&share(a)).then(a.cmp(&b)));
    let mut items: Vec<usize> = (0..fleet.items.len()).collect();
    items.sort_by(|&a, &b| {
        fleet.items[b]
            .size
            .total_cmp(&fleet.items[a].size)
            .then(a.cmp(&b))
    });
    let mut cpu = vec![0u64; bins.len()];
    let mut memory = vec![0u64; bins.len()];
    let mut holders: Vec<Vec<usize>> = vec![Vec::new(); s.group_names.len()];
    let mut used = vec![false; bins.len()];
    for i in items {
        let it = &fleet.items[i];
        let slot = bins.iter().position(|&b| {
            let bin = &fleet.bins[b];
            cpu[b] + it.cpu <= bin.cpu_cap
                && memory[b] + it.memory <= bin.memory_cap
                && it.group.is_none_or(|g| !holders[g].contains(&b))
        });
        let Some(k) = slot else {
            let d = &instances[s.item_demand[i]];
            return Err(PlanError::NoRoom {
                instance: d.name.clone(),
                needs: pair(d.cpu, d.memory),
                line: units::percent(1.0 - headroom),
            });
        };
        let b = bins[k];
        cpu[b] += it.cpu;
        memory[b] += it.memory;
        if let Some(g) = it.group {
            holders[g].push(b);
        }
        used[k] = true;
    }
    Ok(used.iter().filter(|&&u| u).count())
}
