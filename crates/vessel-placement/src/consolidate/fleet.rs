//! The planner's working state: every instance's member, every member's use below its
//! headroom line, and which anti-affinity groups each holds, in whole micro-cores and bytes
//! so that sums never drift. Changes go through a journal so that a failed attempt is undone.

/// Micro-cores per core: cores are kept as whole numbers of these.
pub(super) const MICRO: f64 = 1e6;

/// One instance.
#[derive(Debug, Clone)]
pub(super) struct Item {
    /// Micro-cores it needs.
    pub cpu: u64,
    /// Bytes it needs.
    pub memory: u64,
    /// Its anti-affinity group, interned.
    pub group: Option<usize>,
    /// Its size as a share of the reference member, for decreasing orders.
    pub size: f64,
}

/// One member.
#[derive(Debug, Clone)]
pub(super) struct Bin {
    /// Micro-cores below its headroom line.
    pub cpu_cap: u64,
    /// Bytes below its headroom line.
    pub memory_cap: u64,
    /// Micro-cores its instances need.
    pub cpu: u64,
    /// Bytes its instances need.
    pub memory: u64,
    /// Its instances.
    pub items: Vec<usize>,
    /// Whether it is kept (takes instances).
    pub open: bool,
}

/// Instances on members.
#[derive(Debug, Clone)]
pub(super) struct Fleet {
    pub items: Vec<Item>,
    pub bins: Vec<Bin>,
    /// The member each instance is on.
    pub at: Vec<usize>,
    /// Where each instance sits in its member's `items`.
    pos: Vec<usize>,
    /// For each group, the members holding its instances (once per instance).
    holders: Vec<Vec<usize>>,
    /// Reference capacity (micro-cores, bytes) that sizes are shares of.
    reference: (f64, f64),
    /// Moves made since the last [`Fleet::commit`]: (instance, member it came from).
    journal: Vec<(usize, usize)>,
}

impl Fleet {
    /// `items` on members `at`, `groups` groups in all; `reference` sizes the scores.
    pub fn new(
        items: Vec<Item>,
        mut bins: Vec<Bin>,
        at: Vec<usize>,
        groups: usize,
        reference: (f64, f64),
    ) -> Self {
        let mut holders = vec![Vec::new(); groups];
        let mut pos = vec![0; items.len()];
        for (i, (item, &b)) in items.iter().zip(&at).enumerate() {
            let bin = &mut bins[b];
            pos[i] = bin.items.len();
            bin.items.push(i);
            bin.cpu += item.cpu;
            bin.memory += item.memory;
            if let Some(g) = item.group {
                holders[g].push(b);
            }
        }
        Fleet {
            items,
            bins,
            at,
            pos,
            holders,
            reference,
            journal: Vec::new(),
        }
    }

    /// The capacity (micro-cores, bytes) that sizes are shares of: the largest member's.
    pub fn reference(&self) -> (f64, f64) {
        self.reference
    }

    /// How many instances of `item`'s group member `b` holds, `item` itself left out.
    pub fn group_count(&self, item: usize, b: usize) -> usize {
        let Some(g) = self.items[item].group else {
            return 0;
        };
        let n = self.holders[g].iter().filter(|&&h| h == b).count();
        if self.at[item] == b {
            n - 1
        } else {
            n
        }
    }

    /// Whether kept member `b` takes `item` without passing its headroom line or holding
    /// two of a group.
    pub fn fits(&self, item: usize, b: usize) -> bool {
        let bin = &self.bins[b];
        let it = &self.items[item];
        bin.open
            && self.at[item] != b
            && bin.cpu + it.cpu <= bin.cpu_cap
            && bin.memory + it.memory <= bin.memory_cap
            && self.group_count(item, b) == 0
    }

    /// The kept member `item` fits best: the one left fullest after it (the smallest sum
    /// of squares of its free cpu and memory as shares of the reference), ties to the lower
    /// index.
    pub fn best_fit(&self, item: usize) -> Option<usize> {
        let it = &self.items[item];
        let mut best: Option<(f64, usize)> = None;
        for (b, bin) in self.bins.iter().enumerate() {
            if !self.fits(item, b) {
                continue;
            }
            let c = (bin.cpu_cap - bin.cpu - it.cpu) as f64 / self.reference.0;
            let m = (bin.memory_cap - bin.memory - it.memory) as f64 / self.reference.1;
            let score = c * c + m * m;
            if best.is_none_or(|(s, _)| score < s) {
                best = Some((score, b));
            }
        }
        best.map(|(_, b)| b)
    }

    /// Moves `item` to member `to`, journaled.
    pub fn relocate(&mut self, item: usize, to: usize) {
        let from = self.at[item];
        self.shift(item, to);
        self.journal.push((item, from));
    }

    fn shift(&mut self, item: usize, to: usize) {
        let from = self.at[item];
        if from == to {
            return;
        }
        let (cpu, memory, group) = {
            let it = &self.items[item];
            (it.cpu, it.memory, it.group)
        };
        let p = self.pos[item];
        let src = &mut self.bins[from];
        src.items.swap_remove(p);
        if let Some(&moved) = src.items.get(p) {
            self.pos[moved] = p;
        }
        src.cpu -= cpu;
        src.memory -= memory;
        let dst = &mut self.bins[to];
        self.pos[item] = dst.items.len();
        dst.items.push(item);
        dst.cpu += cpu;
        dst.memory += memory;
        self.at[item] = to;
        if let Some(g) = group {
            let h = &mut self.holders[g];
            if let Some(k) = h.iter().position(|&x| x == from) {
                h[k] = to;
            }
        }
    }

    /// Keeps the moves made since the last commit.
    pub fn commit(&mut self) {
        self.journal.clear();
    }

    /// Undoes the moves made since the last commit.
    pub fn rollback(&mut self) {
        while let Some((item, from)) = self.journal.pop() {
            self.shift(item, from);
        }
    }

    /// Places `item` (its member is being emptied or must shed it) on the kept member it
    /// fits best; failing that, with `eject`, moves one instance of a kept member to a third
    /// to make room. `None` when it fits nowhere, `Some(Some(j))` when `j` made room.
    pub fn place(&mut self, item: usize, eject: bool) -> Option<Option<usize>> {
        if let Some(b) = self.best_fit(item) {
            self.relocate(item, b);
            return Some(None);
        }
        if !eject {
            return None;
        }
        self.eject_for(item).map(Some)
    }

    /// Finds a kept member `k` and an instance `j` on it such that `j` fits on a third kept
    /// member and `item` then fits on `k`, choosing the `j` with the fewest bytes; makes both
    /// moves and returns `j`.
    fn eject_for(&mut self, item: usize) -> Option<usize> {
        let it = self.items[item].clone();
        let mut best: Option<(u64, usize, usize, usize)> = None;
        for k in 0..self.bins.len() {
            let bin = &self.bins[k];
            if !bin.open || self.at[item] == k {
                continue;
            }
            let need_cpu = (bin.cpu + it.cpu).saturating_sub(bin.cpu_cap);
            let need_memory = (bin.memory + it.memory).saturating_sub(bin.memory_cap);
            // A member holding two of the group cannot be helped by moving one.
            let clash = match self.group_count(item, k) {
                0 => false,
                1 => true,
                _ => continue,
            };
            for &j in &bin.items {
                let jt = &self.items[j];
                if jt.cpu < need_cpu || jt.memory < need_memory {
                    continue;
                }
                if clash && (jt.group != it.group) {
                    continue;
                }
                if best.is_some_and(|(bytes, ..)| jt.memory >= bytes) {
                    continue;
                }
                let third = (0..self.bins.len()).find(|&l| l != k && self.fits(j, l));
                if let Some(l) = third {
                    best = Some((jt.memory, j, k, l));
                }
            }
        }
        let (_, j, k, l) = best?;
        self.relocate(j, l);
        self.relocate(item, k);
        Some(j)
    }
}
