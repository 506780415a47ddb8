//! Times the placement engine on simulated members: 10,000 new instances over 100 members
//! (spread and binpack), and a consolidation plan for 10,000 running instances on 100
//! members at 15 % utilisation against the lower bound and first-fit decreasing.
//!
//! `cargo run --release -p vessel-placement --example placement-bench`; prints a table,
//! then one JSON document on the last line.

use std::time::{Duration, Instant};

use serde_json::json;
use vessel_placement::sim::{self, Prng};
use vessel_placement::{consolidate, first_fit_decreasing, Placer, Policy};

const GIB: u64 = 1 << 30;
const RUNS: usize = 5;
const MEMBERS: usize = 100;
const INSTANCES: usize = 10_000;

/// The median of `RUNS` timings of `f`, and its last result.
fn timed<T>(mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut times = Vec::with_capacity(RUNS);
    let mut last = None;
    for _ in 0..RUNS {
        let t = Instant::now();
        last = Some(f());
        times.push(t.elapsed());
    }
    times.sort();
    let out = last.expect("RUNS is not zero");
    (times[RUNS / 2], out)
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e5).round() / 100.0
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut rng = Prng::new(2024);
    let reqs = sim::requests(&mut rng, INSTANCES);
    let mut rows = Vec::new();
    for policy in [Policy::Spread, Policy::Binpack] {
        let (took, results) = timed(|| {
            let mut placer = Placer::new(sim::members(MEMBERS, 192.0, 768 * GIB), policy);
            placer.place_many(&reqs)
        });
        let placed = results.iter().filter(|r| r.is_ok()).count();
        rows.push((policy, placed, ms(took)));
    }
    let placement: Vec<_> = rows
        .iter()
        .map(|&(policy, placed, ms)| {
            json!({
                "policy": policy.to_string(),
                "members": MEMBERS,
                "instances": INSTANCES,
                "placed": placed,
                "refused": INSTANCES - placed,
                "ms": ms,
            })
        })
        .collect();

    let (members, instances) = sim::fleet(
        &mut rng,
        sim::members(MEMBERS, 32.0, 128 * GIB),
        INSTANCES,
        0.15,
    );
    let (plan_took, plan) = timed(|| consolidate(&members, &instances, 0.2));
    let plan = plan?;
    let (ffd_took, ffd) = timed(|| first_fit_decreasing(&members, &instances, 0.2));
    let ffd = ffd?;
    let planner = json!({
        "members": MEMBERS,
        "instances": instances.len(),
        "utilisation": 0.15,
        "headroom": 0.2,
        "members_needed": plan.members_needed,
        "lower_bound": plan.lower_bound,
        "first_fit_decreasing": ffd,
        "moves": plan.moves.len(),
        "bytes_moved": plan.bytes_moved,
        "ms": ms(plan_took),
        "ffd_ms": ms(ffd_took),
    });

    println!("placement: {INSTANCES} instances over {MEMBERS} members of 192 cores, 768 GiB");
    println!(
        "{:<8} {:>8} {:>8} {:>10}",
        "policy", "placed", "refused", "ms"
    );
    for &(policy, placed, ms) in &rows {
        let refused = INSTANCES - placed;
        println!(
            "{:<8} {placed:>8} {refused:>8} {ms:>10}",
            policy.to_string()
        );
    }
    println!(
        "consolidation: {} instances on {MEMBERS} members of 32 cores, 128 GiB at 15 %, \
         20 % headroom",
        instances.len()
    );
    println!("{:<22} {:>8} {:>10}", "", "members", "ms");
    println!("{:<22} {:>8} {:>10}", "lower bound", plan.lower_bound, "");
    println!(
        "{:<22} {:>8} {:>10}",
        "plan",
        plan.members_needed,
        ms(plan_took)
    );
    println!(
        "{:<22} {:>8} {:>10}",
        "first-fit decreasing",
        ffd,
        ms(ffd_took)
    );
    println!(
        "plan: {} moves, {:.1} GiB copied",
        plan.moves.len(),
        plan.bytes_moved as f64 / GIB as f64
    );
    println!(
        "{}",
        json!({ "runs": RUNS, "statistic": "median", "placement": placement, "planner": planner })
    );
    Ok(())
}
