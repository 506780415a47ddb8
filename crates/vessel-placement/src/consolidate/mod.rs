//! `vessel plan consolidate`: the fewest members that hold a cluster's work with headroom,
//! which members could be emptied, and the live migrations that get there, in order.
//!
//! Every member keeps its instances' needs (cpu and memory, from recorded use) below its
//! headroom line, `capacity × (1 − headroom)`, and no two instances of an anti-affinity
//! group share a member, at the end and after every move. The planner:
//! 1. moves instances off members that are already above their line or hold two of a group
//!    (the fewest bytes first);
//! 2. empties members, the cheapest to empty first (fewest bytes to copy), each one's
//!    instances placed largest first on the kept member they fill best (best-fit
//!    decreasing); a member whose instances do not all fit stays as it was;
//! 3. while more members are kept than the lower bound, tries again the least loaded,
//!    now allowed to move one instance of a kept member to a third to make room.
//!
//! The lower bound counts members largest first until their capacity below the line covers
//! the total cpu, and likewise memory (for identical members:
//! `ceil(max(total cpu / usable cpu, total memory / usable memory))`); it is at least the
//! largest group's size. Offline members are left out with their instances.

mod ffd;
mod fleet;
mod moves;
mod setup;
#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

pub use self::ffd::first_fit_decreasing;
use self::fleet::{Fleet, MICRO};
use self::moves::{order, Cause, Names};
use self::setup::{lower_bound, setup, Setup};
use crate::model::{Demand, Member};
use crate::units;

/// A live migration in a plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Move {
    /// The instance.
    pub instance: String,
    /// The member it leaves.
    pub from: String,
    /// The member it goes to.
    pub to: String,
    /// Bytes a live migration copies: its memory.
    pub cost_bytes: u64,
    /// One line saying why, with figures a person can check.
    pub reason: String,
}

/// What `vessel plan consolidate` recommends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The share of each member's capacity kept free.
    pub headroom: f64,
    /// Members that hold the work after the moves.
    pub members_needed: usize,
    /// No plan can use fewer members (see the module's documentation).
    pub lower_bound: usize,
    /// Members that keep instances.
    pub kept: Vec<String>,
    /// Online members left without instances.
    pub emptied: Vec<String>,
    /// Offline members, left out of the plan with their instances.
    pub left_out: Vec<String>,
    /// The migrations, in an order in which each lands on a member with room.
    pub moves: Vec<Move>,
    /// Bytes all the moves copy.
    pub bytes_moved: u64,
    /// The plan in a few lines: the count and its bound, then each member emptied.
    pub explanation: Vec<String>,
}

/// Why there is no plan.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    /// The headroom is not a fraction below one.
    #[error("headroom {0} must be a fraction of at least 0 and below 1 (0.2 is 20 %)")]
    Headroom(f64),
    /// An instance's demand is not usable.
    #[error("instance {instance}: {why}")]
    InvalidDemand {
        /// The instance.
        instance: String,
        /// What is wrong.
        why: String,
    },
    /// An instance runs on a member the cluster does not list.
    #[error("instance {instance} is on {member}, which is not a member of the cluster")]
    UnknownMember {
        /// The instance.
        instance: String,
        /// The member it names.
        member: String,
    },
    /// An instance fits on no online member below the headroom line.
    #[error(
        "instance {instance} needs {needs}: no online member has that room below {line} \
         of its capacity; lower the headroom or add a larger member"
    )]
    NoRoom {
        /// The instance.
        instance: String,
        /// What it needs.
        needs: String,
        /// The line, e.g. "80 %".
        line: String,
    },
    /// An anti-affinity group has more instances than there are online members.
    #[error(
        "anti-affinity group {group} has {size} instances but only {members} members are online"
    )]
    GroupTooLarge {
        /// The group.
        group: String,
        /// Its instances.
        size: usize,
        /// Online members.
        members: usize,
    },
    /// No order of the moves keeps every member below its line.
    #[error("no order of the moves lands {instance} on a member with room; lower the headroom")]
    Unordered {
        /// The instance that could not move.
        instance: String,
    },
}

/// Plans the consolidation of `instances` (their current member and recorded demand) on
/// `members` with `headroom` (0.2 keeps 20 % of each member free). Changes nothing.
pub fn consolidate(
    members: &[Member],
    instances: &[Demand],
    headroom: f64,
) -> Result<Plan, PlanError> {
    let Setup {
        mut fleet,
        bin_member,
        item_demand,
        group_names,
        offline,
    } = setup(members, instances, headroom)?;
    let home = fleet.at.clone();
    let lower = lower_bound(&fleet);
    let mut causes: Vec<Option<Cause>> = vec![None; fleet.items.len()];

    repair(&mut fleet, &mut causes, &item_demand, instances, headroom)?;
    // Work that needs nothing still needs one member to run on.
    let target = lower.max(usize::from(!fleet.items.is_empty()));
    let mut open = fleet.bins.len();
    let mut by_cost: Vec<usize> = (0..fleet.bins.len()).collect();
    by_cost.sort_by_key(|&b| {
        let bytes: u64 = fleet.bins[b]
            .items
            .iter()
            .map(|&i| fleet.items[i].memory)
            .sum();
        (bytes, fleet.bins[b].items.len(), b)
    });
    for b in by_cost {
        if open <= target && !fleet.bins[b].items.is_empty() {
            break;
        }
        if empty(&mut fleet, b, false, &mut causes) {
            open -= 1;
        }
    }
    while open > target {
        let mut by_load: Vec<usize> = (0..fleet.bins.len())
            .filter(|&b| fleet.bins[b].open)
            .collect();
        by_load.sort_by(|&a, &b| load(&fleet, a).total_cmp(&load(&fleet, b)).then(a.cmp(&b)));
        match by_load
            .into_iter()
            .find(|&b| empty(&mut fleet, b, true, &mut causes))
        {
            Some(_) => open -= 1,
            None => break,
        }
    }

    let name = |b: usize| members[bin_member[b]].name.clone();
    let instance = |i: usize| instances[item_demand[i]].name.clone();
    let names = Names {
        bin: &name,
        item: &instance,
        groups: &group_names,
    };
    let moves = order(&fleet, &home, &causes, headroom, &names)?;
    let kept: Vec<String> = (0..fleet.bins.len())
        .filter(|&b| fleet.bins[b].open)
        .map(name)
        .collect();
    let emptied: Vec<String> = (0..fleet.bins.len())
        .filter(|&b| !fleet.bins[b].open)
        .map(name)
        .collect();
    let bytes_moved = moves.iter().map(|m| m.cost_bytes).sum();
    let mut plan = Plan {
        headroom,
        members_needed: kept.len(),
        lower_bound: lower,
        kept,
        emptied,
        left_out: offline
            .iter()
            .map(|&(m, _)| members[m].name.clone())
            .collect(),
        moves,
        bytes_moved,
        explanation: Vec::new(),
    };
    plan.explanation = explain(&plan, &fleet, &home, &offline, members, &bin_member);
    Ok(plan)
}

/// A member's load: the larger of its cpu and memory shares of its line.
fn load(fleet: &Fleet, b: usize) -> f64 {
    let bin = &fleet.bins[b];
    let c = bin.cpu as f64 / bin.cpu_cap.max(1) as f64;
    let m = bin.memory as f64 / bin.memory_cap.max(1) as f64;
    c.max(m)
}

/// Moves instances off members above their line or holding two of a group: the second of
/// a group with fewer bytes, then the fewest bytes until the member is below its line.
fn repair(
    fleet: &mut Fleet,
    causes: &mut [Option<Cause>],
    item_demand: &[usize],
    instances: &[Demand],
    headroom: f64,
) -> Result<(), PlanError> {
    for b in 0..fleet.bins.len() {
        let mut items = fleet.bins[b].items.clone();
        items.sort_by_key(|&i| std::cmp::Reverse(fleet.items[i].memory));
        let mut evict = Vec::new();
        for &i in &items {
            if fleet.group_count(i, b) > 0 && !evict.contains(&i) {
                let g = fleet.items[i].group;
                let first = items.iter().find(|&&j| fleet.items[j].group == g);
                if first != Some(&i) {
                    evict.push(i);
                    causes[i] = Some(Cause::Group);
                }
            }
        }
        let (mut cpu, mut memory) = (fleet.bins[b].cpu, fleet.bins[b].memory);
        for &i in &evict {
            cpu -= fleet.items[i].cpu;
            memory -= fleet.items[i].memory;
        }
        for &i in items.iter().rev() {
            let bin = &fleet.bins[b];
            if cpu <= bin.cpu_cap && memory <= bin.memory_cap {
                break;
            }
            let it = &fleet.items[i];
            let helps =
                (cpu > bin.cpu_cap && it.cpu > 0) || (memory > bin.memory_cap && it.memory > 0);
            if helps && !evict.contains(&i) {
                cpu -= it.cpu;
                memory -= it.memory;
                evict.push(i);
                causes[i] = Some(Cause::Over);
            }
        }
        evict.sort_by(|&a, &b| fleet.items[b].size.total_cmp(&fleet.items[a].size));
        for i in evict {
            match fleet.place(i, true) {
                Some(Some(j)) => {
                    causes[j].get_or_insert(Cause::MakeRoom(i));
                }
                Some(None) => {}
                None => {
                    let d = &instances[item_demand[i]];
                    return Err(PlanError::NoRoom {
                        instance: d.name.clone(),
                        needs: crate::placement::pair(d.cpu, d.memory),
                        line: units::percent(1.0 - headroom),
                    });
                }
            }
        }
        fleet.commit();
    }
    Ok(())
}

/// Empties member `b` onto the kept members, largest instance first on the best fit; with
/// `eject`, an instance with no room may move one instance of a kept member to a third.
/// Keeps the result and closes `b` when every instance fits, otherwise undoes it all.
fn empty(fleet: &mut Fleet, b: usize, eject: bool, causes: &mut [Option<Cause>]) -> bool {
    if !fleet.bins[b].open {
        return false;
    }
    fleet.bins[b].open = false;
    let mut items = fleet.bins[b].items.clone();
    items.sort_by(|&x, &y| {
        fleet.items[y]
            .size
            .total_cmp(&fleet.items[x].size)
            .then(x.cmp(&y))
    });
    let mut made_room = Vec::new();
    for &i in &items {
        match fleet.place(i, eject) {
            Some(Some(j)) => made_room.push((j, i)),
            Some(None) => {}
            None => {
                fleet.rollback();
                fleet.bins[b].open = true;
                return false;
            }
        }
    }
    fleet.commit();
    for i in items {
        causes[i].get_or_insert(Cause::Emptied);
    }
    for (j, i) in made_room {
        causes[j].get_or_insert(Cause::MakeRoom(i));
    }
    true
}

/// The plan's lines: the count against its bound, the moves, each member emptied or left out.
fn explain(
    plan: &Plan,
    fleet: &Fleet,
    home: &[usize],
    offline: &[(usize, usize)],
    members: &[Member],
    bin_member: &[usize],
) -> Vec<String> {
    let line = units::percent(1.0 - plan.headroom);
    let cpu: u64 = fleet.items.iter().map(|i| i.cpu).sum();
    let memory: u64 = fleet.items.iter().map(|i| i.memory).sum();
    let mut out = vec![format!(
        "{} on {} need {} below {line} of their capacity; lower bound {}: the fewest members, \
         largest first, whose capacity below that line holds {} and {}",
        units::count(fleet.items.len(), "instance"),
        units::count(fleet.bins.len(), "online member"),
        plan.members_needed,
        plan.lower_bound,
        units::cores(cpu as f64 / MICRO),
        units::bytes(memory),
    )];
    out.push(format!(
        "keep {}, empty {}: {} copying {}",
        units::count(plan.kept.len(), "member"),
        plan.emptied.len(),
        units::count(plan.moves.len(), "move"),
        units::bytes(plan.bytes_moved),
    ));
    if plan.members_needed > plan.lower_bound.max(1) {
        out.push(format!(
            "{} more than the lower bound: no other kept member's instances fit in the room \
             the rest have left, even moving one instance aside for each",
            plan.members_needed - plan.lower_bound
        ));
    }
    for b in (0..fleet.bins.len()).filter(|&b| !fleet.bins[b].open) {
        let name = &members[bin_member[b]].name;
        let leaving: Vec<usize> = (0..home.len()).filter(|&i| home[i] == b).collect();
        if leaving.is_empty() {
            out.push(format!("{name}: already empty"));
        } else {
            let cpu: u64 = leaving.iter().map(|&i| fleet.items[i].cpu).sum();
            let memory: u64 = leaving.iter().map(|&i| fleet.items[i].memory).sum();
            out.push(format!(
                "{name}: can be emptied: its {} ({}) fit below the line on the kept members",
                units::count(leaving.len(), "instance"),
                crate::placement::pair(cpu as f64 / MICRO, memory),
            ));
        }
    }
    for &(m, n) in offline {
        out.push(format!(
            "{}: offline, left out of the plan with its {}",
            members[m].name,
            units::count(n, "instance")
        ));
    }
    out
}
