//! The moves from where instances are to where the plan puts them, in an order in which
//! each lands on a member with room below its line and no other instance of its group;
//! where none is possible, one instance waits on a third member.

use std::collections::HashMap;

use super::fleet::{Fleet, MICRO};
use super::{Move, PlanError};
use crate::placement::pair;
use crate::units;

/// Why the plan moves an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cause {
    /// Its member is emptied.
    Emptied,
    /// Its member is above its line.
    Over,
    /// Its member holds another instance of its group.
    Group,
    /// It makes room on its member for this instance.
    MakeRoom(usize),
}

/// Names of the members, instances and groups, for the reasons.
pub(super) struct Names<'a> {
    /// Each bin's member.
    pub bin: &'a dyn Fn(usize) -> String,
    /// Each item's instance.
    pub item: &'a dyn Fn(usize) -> String,
    /// Each group.
    pub groups: &'a [String],
}

/// A move not made yet.
struct Pending {
    item: usize,
    from: usize,
    to: usize,
    waited_on: Option<usize>,
}

/// The members' use as the moves are made.
struct Replay<'a> {
    fleet: &'a Fleet,
    cpu: Vec<u64>,
    memory: Vec<u64>,
    groups: HashMap<(usize, usize), u32>,
}

impl Replay<'_> {
    fn room(&self, item: usize, b: usize) -> bool {
        let it = &self.fleet.items[item];
        let bin = &self.fleet.bins[b];
        self.cpu[b] + it.cpu <= bin.cpu_cap
            && self.memory[b] + it.memory <= bin.memory_cap
            && it
                .group
                .is_none_or(|g| self.groups.get(&(g, b)).copied().unwrap_or(0) == 0)
    }

    fn free(&self, b: usize) -> String {
        let bin = &self.fleet.bins[b];
        pair(
            bin.cpu_cap.saturating_sub(self.cpu[b]) as f64 / MICRO,
            bin.memory_cap.saturating_sub(self.memory[b]),
        )
    }

    fn shift(&mut self, item: usize, from: usize, to: usize) {
        let it = &self.fleet.items[item];
        self.cpu[from] -= it.cpu;
        self.memory[from] -= it.memory;
        self.cpu[to] += it.cpu;
        self.memory[to] += it.memory;
        if let Some(g) = it.group {
            if let Some(n) = self.groups.get_mut(&(g, from)) {
                *n -= 1;
            }
            *self.groups.entry((g, to)).or_default() += 1;
        }
    }
}

/// The moves that take every instance from `home` to where `fleet` has it, each with its
/// reason, moves off kept members first (they make room), then by member and instance.
pub(super) fn order(
    fleet: &Fleet,
    home: &[usize],
    causes: &[Option<Cause>],
    headroom: f64,
    names: &Names<'_>,
) -> Result<Vec<Move>, PlanError> {
    let nb = fleet.bins.len();
    let mut replay = Replay {
        fleet,
        cpu: vec![0; nb],
        memory: vec![0; nb],
        groups: HashMap::new(),
    };
    for (i, &b) in home.iter().enumerate() {
        let it = &fleet.items[i];
        replay.cpu[b] += it.cpu;
        replay.memory[b] += it.memory;
        if let Some(g) = it.group {
            *replay.groups.entry((g, b)).or_default() += 1;
        }
    }
    let mut pending: Vec<Pending> = (0..home.len())
        .filter(|&i| fleet.at[i] != home[i])
        .map(|i| Pending {
            item: i,
            from: home[i],
            to: fleet.at[i],
            waited_on: None,
        })
        .collect();
    pending.sort_by_key(|p| (!fleet.bins[p.from].open, p.from, p.item));
    let line = units::percent(1.0 - headroom);
    let mut out = Vec::with_capacity(pending.len());
    let mut waits_left = pending.len() + 1;
    while !pending.is_empty() {
        let before = pending.len();
        let mut rest = Vec::with_capacity(pending.len());
        for p in pending {
            if replay.room(p.item, p.to) {
                let reason = reason(&replay, &p, home, causes, &line, names);
                out.push(made(fleet, &p, p.to, reason, names));
                replay.shift(p.item, p.from, p.to);
            } else {
                rest.push(p);
            }
        }
        pending = rest;
        if pending.len() < before || pending.is_empty() {
            continue;
        }
        // Every remaining move waits on another: one instance waits on a third member.
        let stuck = &mut pending[0];
        let stage = (0..nb)
            .filter(|&s| s != stuck.from && s != stuck.to && replay.room(stuck.item, s))
            .max_by_key(|&s| fleet.bins[s].memory_cap.saturating_sub(replay.memory[s]));
        let (Some(s), true) = (stage, waits_left > 0) else {
            return Err(PlanError::Unordered {
                instance: (names.item)(stuck.item),
            });
        };
        waits_left -= 1;
        let reason = format!(
            "{}: {} has no room for it until other moves are made; it waits on {}, which has \
             {} free below its {line} line",
            (names.item)(stuck.item),
            (names.bin)(stuck.to),
            (names.bin)(s),
            replay.free(s),
        );
        out.push(made(fleet, stuck, s, reason, names));
        replay.shift(stuck.item, stuck.from, s);
        stuck.from = s;
        stuck.waited_on = Some(s);
    }
    Ok(out)
}

fn made(fleet: &Fleet, p: &Pending, to: usize, reason: String, names: &Names<'_>) -> Move {
    Move {
        instance: (names.item)(p.item),
        from: (names.bin)(p.from),
        to: (names.bin)(to),
        cost_bytes: fleet.items[p.item].memory,
        reason,
    }
}

/// "i042: m017 is emptied; m003 has 3.2 cores and 12 GiB free below its 80 % line for its
/// 0.12 cores and 512 MiB".
fn reason(
    replay: &Replay<'_>,
    p: &Pending,
    home: &[usize],
    causes: &[Option<Cause>],
    line: &str,
    names: &Names<'_>,
) -> String {
    let it = &replay.fleet.items[p.item];
    let from = (names.bin)(home[p.item]);
    let group = it.group.and_then(|g| names.groups.get(g));
    let why = match causes[p.item] {
        Some(Cause::Emptied) | None => format!("{from} is emptied"),
        Some(Cause::Over) => format!("{from} needs more than its {line} line"),
        Some(Cause::Group) => format!(
            "it shares anti-affinity group {} with another instance on {from}",
            group.map_or("", String::as_str)
        ),
        Some(Cause::MakeRoom(other)) => {
            format!("it makes room on {from} for {}", (names.item)(other))
        }
    };
    let waited = p
        .waited_on
        .map(|s| format!(" (after waiting on {})", (names.bin)(s)))
        .unwrap_or_default();
    let no_group = group
        .map(|g| format!(" and holds no other instance of group {g}"))
        .unwrap_or_default();
    format!(
        "{}: {why}{waited}; {} has {} free below its {line} line for its {}{no_group}",
        (names.item)(p.item),
        (names.bin)(p.to),
        replay.free(p.to),
        pair(it.cpu as f64 / MICRO, it.memory),
    )
}
