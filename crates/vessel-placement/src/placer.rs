//! Placing many instances in a row: the members' use, the groups they hold and the
//! projects' budgets kept up to date as each instance lands.

use std::collections::HashMap;

use crate::model::{Budget, Budgets, Member, Policy, Request};
use crate::placement::{choose, validate, PlaceError, CPU_EPSILON};
use crate::units;

/// A cluster's members with their use, the policy that chooses among them and what each
/// project may still use; each placement updates them.
#[derive(Debug, Clone)]
pub struct Placer {
    members: Vec<Member>,
    policy: Policy,
    budgets: Budgets,
    /// For each anti-affinity group, the members holding one of its instances.
    holders: HashMap<String, Vec<usize>>,
    /// Members by name, for `--target`.
    by_name: HashMap<String, usize>,
}

impl Placer {
    /// A placer over `members` as they are now, choosing by `policy`, without budgets.
    pub fn new(members: Vec<Member>, policy: Policy) -> Self {
        let mut holders: HashMap<String, Vec<usize>> = HashMap::new();
        let mut by_name = HashMap::with_capacity(members.len());
        for (i, m) in members.iter().enumerate() {
            by_name.entry(m.name.clone()).or_insert(i);
            for g in &m.groups {
                let h = holders.entry(g.clone()).or_default();
                if !h.contains(&i) {
                    h.push(i);
                }
            }
        }
        Placer {
            members,
            policy,
            budgets: Budgets::new(),
            holders,
            by_name,
        }
    }

    /// The same placer, with what each project may still use; projects not in `budgets`
    /// have no limits.
    pub fn with_budgets(mut self, budgets: Budgets) -> Self {
        self.budgets = budgets;
        self
    }

    /// The members with the use of everything placed so far.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The members, giving up the placer.
    pub fn into_members(self) -> Vec<Member> {
        self.members
    }

    /// What each project may still use.
    pub fn budgets(&self) -> &Budgets {
        &self.budgets
    }

    /// Places `req` (on `target` when it is given) and records it: the member's use and
    /// groups, the project's budget. Returns the member's index; on an error nothing changed.
    pub fn place(&mut self, req: &Request, target: Option<&str>) -> Result<usize, PlaceError> {
        validate(req)?;
        if let Some(budget) = self.budgets.get(&req.project) {
            over_budget(budget, req)?;
        }
        let empty = Vec::new();
        let holders = req
            .group
            .as_ref()
            .and_then(|g| self.holders.get(g))
            .unwrap_or(&empty);
        let by_name = &self.by_name;
        let i = choose(
            &self.members,
            req,
            self.policy,
            target,
            |i| holders.contains(&i),
            |name| by_name.get(name).copied(),
        )?;
        self.record(i, req);
        Ok(i)
    }

    /// Places each request in turn, as [`Placer::place`] without a target; a refused
    /// request leaves the state as it was and the next ones go on.
    pub fn place_many(&mut self, reqs: &[Request]) -> Vec<Result<usize, PlaceError>> {
        reqs.iter().map(|r| self.place(r, None)).collect()
    }

    /// Adds `req` to member `i` and takes it from its project's budget.
    fn record(&mut self, i: usize, req: &Request) {
        let m = &mut self.members[i];
        m.cpu_used += req.cpu;
        m.memory_used = m.memory_used.saturating_add(req.memory);
        m.instances = m.instances.saturating_add(1);
        if let Some(g) = &req.group {
            if !m.holds_group(g) {
                m.groups.push(g.clone());
            }
            let h = self.holders.entry(g.clone()).or_default();
            if !h.contains(&i) {
                h.push(i);
            }
        }
        if let Some(b) = self.budgets.get_mut(&req.project) {
            if let Some(cpu) = &mut b.cpu {
                *cpu = (*cpu - req.cpu).max(0.0);
            }
            if let Some(memory) = &mut b.memory {
                *memory = memory.saturating_sub(req.memory);
            }
            if let Some(n) = &mut b.instances {
                *n = n.saturating_sub(1);
            }
        }
    }
}

/// Refuses `req` when it asks for more than its project's `budget` has left.
fn over_budget(budget: &Budget, req: &Request) -> Result<(), PlaceError> {
    let refuse = |asked: String, left: String| PlaceError::OverBudget {
        project: req.project.clone(),
        instance: req.name.clone(),
        asked,
        left,
    };
    if let Some(n) = budget.instances {
        if n == 0 {
            return Err(refuse(
                "one more instance".to_string(),
                "no instances".to_string(),
            ));
        }
    }
    if let Some(cpu) = budget.cpu {
        if req.cpu > cpu + CPU_EPSILON {
            return Err(refuse(units::cores(req.cpu), units::cores(cpu)));
        }
    }
    if let Some(memory) = budget.memory {
        if req.memory > memory {
            return Err(refuse(units::bytes(req.memory), units::bytes(memory)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
