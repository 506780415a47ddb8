//! Simulated fleets for the tests and `examples/placement-bench.rs`: a small deterministic
//! random generator, members of one size, requests of a realistic spread of sizes with
//! anti-affinity groups of replicas, and recorded demand at a chosen utilisation.

use crate::model::{Demand, Member, Policy, Request};
use crate::placer::Placer;

/// SplitMix64: a deterministic generator, good enough to simulate fleets; not for secrets.
#[derive(Debug, Clone)]
pub struct Prng(u64);

impl Prng {
    /// A generator whose sequence is fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        Prng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `[0, n)`; 0 when `n` is 0.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            ((self.next_u64() as u128 * n as u128) >> 64) as u64
        }
    }

    /// A number in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A number in `[lo, hi)`.
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }
}

const GIB: u64 = 1 << 30;

/// Instance sizes as a cloud's catalogue has them (cores, GiB, how common in 100).
const SHAPES: [(f64, u64, u64); 8] = [
    (0.25, 1, 20),
    (0.5, 1, 25),
    (1.0, 2, 25),
    (2.0, 4, 15),
    (2.0, 8, 6),
    (4.0, 8, 5),
    (4.0, 16, 3),
    (8.0, 32, 1),
];

/// `count` online, empty members named `m000`, `m001`, ... of `cpu` cores and `memory`
/// bytes each.
pub fn members(count: usize, cpu: f64, memory: u64) -> Vec<Member> {
    (0..count)
        .map(|i| Member::new(format!("m{i:03}"), cpu, memory))
        .collect()
}

/// `count` requests of the catalogue's sizes over five projects; about one in ten belongs to
/// an anti-affinity group of two or three replicas of one size.
pub fn requests(rng: &mut Prng, count: usize) -> Vec<Request> {
    let mut out = Vec::with_capacity(count);
    let mut groups = 0;
    while out.len() < count {
        let mut pick = rng.below(100);
        let (cpu, gib, _) = SHAPES
            .iter()
            .copied()
            .find(|&(_, _, w)| {
                let hit = pick < w;
                pick = pick.saturating_sub(w);
                hit
            })
            .unwrap_or(SHAPES[0]);
        let project = format!("p{}", rng.below(5));
        let replicas = if rng.below(10) == 0 {
            2 + rng.below(2) as usize
        } else {
            1
        };
        let group = (replicas > 1).then(|| {
            groups += 1;
            format!("g{groups}")
        });
        for _ in 0..replicas.min(count - out.len()) {
            let name = format!("i{:05}", out.len());
            let req = Request::new(name, project.clone(), cpu, gib * GIB);
            out.push(match &group {
                Some(g) => req.in_group(g.clone()),
                None => req,
            });
        }
    }
    out
}

/// A fleet in use: `count` instances from [`requests`], each busy at its own level (most
/// nearly idle, a few busy), their demand scaled so that cpu and memory are each
/// `utilisation` of the members' capacity (never above an instance's own size, so a fleet
/// of too few instances falls short of it), spread over `members` as the `spread` policy
/// would (an instance that fits nowhere is left out). Returns the members with that use and every instance's demand and member.
pub fn fleet(
    rng: &mut Prng,
    members: Vec<Member>,
    count: usize,
    utilisation: f64,
) -> (Vec<Member>, Vec<Demand>) {
    let reqs = requests(rng, count);
    let mut demand: Vec<(f64, f64)> = reqs
        .iter()
        .map(|r| {
            let u = rng.unit();
            let cpu = r.cpu * (0.02 + 0.8 * u * u);
            let memory = r.memory as f64 * rng.range(0.3, 0.9);
            (cpu, memory)
        })
        .collect();
    let cpu_total: f64 = demand.iter().map(|d| d.0).sum();
    let memory_total: f64 = demand.iter().map(|d| d.1).sum();
    let cpu_capacity: f64 = members.iter().map(|m| m.cpu_capacity).sum();
    let memory_capacity: f64 = members.iter().map(|m| m.memory_capacity as f64).sum();
    let cpu_scale = utilisation * cpu_capacity / cpu_total.max(f64::MIN_POSITIVE);
    let memory_scale = utilisation * memory_capacity / memory_total.max(f64::MIN_POSITIVE);
    for (d, r) in demand.iter_mut().zip(&reqs) {
        d.0 = (d.0 * cpu_scale).min(r.cpu);
        d.1 = (d.1 * memory_scale).min(r.memory as f64);
    }
    let mut placer = Placer::new(members, Policy::Spread);
    let mut out = Vec::with_capacity(count);
    for (r, (cpu, memory)) in reqs.into_iter().zip(demand) {
        let cpu = (cpu * 1000.0).round() / 1000.0;
        let memory = (memory as u64 >> 20) << 20;
        let req = Request { cpu, memory, ..r };
        if let Ok(i) = placer.place(&req, None) {
            out.push(Demand {
                name: req.name,
                member: placer.members()[i].name.clone(),
                cpu,
                memory,
                group: req.group,
            });
        }
    }
    (placer.into_members(), out)
}
