use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use super::*;
use crate::model::Budget;
use crate::placement::place;
use crate::sim::{self, Prng};

const GIB: u64 = 1 << 30;

#[test]
fn spread_lands_on_all_members_evenly() {
    let mut placer = Placer::new(sim::members(10, 16.0, 64 * GIB), Policy::Spread);
    let reqs: Vec<Request> = (0..100)
        .map(|i| Request::new(format!("i{i}"), "default", 0.5, GIB))
        .collect();
    assert!(placer.place_many(&reqs).iter().all(Result::is_ok));
    for m in placer.members() {
        assert_eq!(m.instances, 10, "{}", m.name);
        assert_eq!(m.cpu_used, 5.0);
    }
}

#[test]
fn binpack_fills_one_member_before_the_next() {
    let mut placer = Placer::new(sim::members(3, 4.0, 64 * GIB), Policy::Binpack);
    let reqs: Vec<Request> = (0..10)
        .map(|i| Request::new(format!("i{i}"), "default", 1.0, GIB))
        .collect();
    let got: Vec<usize> = placer
        .place_many(&reqs)
        .into_iter()
        .map(|r| r.expect("placed"))
        .collect();
    assert_eq!(got, [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]);
}

#[test]
fn replicas_of_a_group_never_share_a_member() {
    let mut placer = Placer::new(sim::members(3, 64.0, 64 * GIB), Policy::Binpack);
    let reqs: Vec<Request> = (0..4)
        .map(|i| Request::new(format!("db-{i}"), "default", 1.0, GIB).in_group("db"))
        .collect();
    let got = placer.place_many(&reqs);
    assert_eq!(got[..3], [Ok(0), Ok(1), Ok(2)]);
    let err = got[3].clone().expect_err("a fourth replica has no member");
    assert_eq!(
        err.to_string(),
        "no member fits db-3 (1 core and 1 GiB): m000 holds an instance of group db; m001 holds \
         an instance of group db; m002 holds an instance of group db"
    );
    assert_eq!(placer.members().iter().map(|m| m.instances).sum::<u32>(), 3);
}

#[test]
fn a_target_is_placed_on_and_recorded() {
    let mut placer = Placer::new(sim::members(2, 4.0, 8 * GIB), Policy::Spread);
    let req = Request::new("web", "default", 3.0, GIB).in_group("web");
    assert_eq!(placer.place(&req, Some("m001")), Ok(1));
    let again = Request::new("web-2", "default", 1.0, GIB).in_group("web");
    let err = placer.place(&again, Some("m001")).expect_err("group");
    assert!(matches!(err, PlaceError::GroupConflict { .. }), "{err}");
    let big = Request::new("big", "default", 2.0, GIB);
    let err = placer.place(&big, Some("m001")).expect_err("room");
    assert!(matches!(err, PlaceError::Lacks { .. }), "{err}");
    assert_eq!(placer.members()[1].cpu_used, 3.0);
    assert_eq!(placer.members()[1].groups, ["web"]);
}

#[test]
fn budgets_refuse_what_a_project_cannot_pay_for_and_shrink_as_it_places() {
    let budgets = BTreeMap::from([(
        "acme".to_string(),
        Budget {
            cpu: Some(3.0),
            memory: Some(4 * GIB),
            instances: Some(2),
        },
    )]);
    let mut placer =
        Placer::new(sim::members(2, 16.0, 64 * GIB), Policy::Spread).with_budgets(budgets);
    let err = placer
        .place(&Request::new("big", "acme", 4.0, GIB), None)
        .expect_err("cpu");
    assert_eq!(
        err.to_string(),
        "project acme has 3 cores left in its budget; big asks for 4 cores"
    );
    let err = placer
        .place(&Request::new("fat", "acme", 1.0, 5 * GIB), None)
        .expect_err("memory");
    assert_eq!(
        err.to_string(),
        "project acme has 4 GiB left in its budget; fat asks for 5 GiB"
    );
    assert!(placer.members().iter().all(|m| m.instances == 0));
    assert_eq!(placer.budgets()["acme"].cpu, Some(3.0));
    placer
        .place(&Request::new("a", "acme", 2.0, GIB), None)
        .expect("placed");
    assert_eq!(
        placer.budgets()["acme"],
        Budget {
            cpu: Some(1.0),
            memory: Some(3 * GIB),
            instances: Some(1)
        }
    );
    let err = placer
        .place(&Request::new("b", "acme", 1.5, GIB), None)
        .expect_err("cpu left");
    assert!(matches!(err, PlaceError::OverBudget { .. }), "{err}");
    placer
        .place(&Request::new("b", "acme", 1.0, GIB), None)
        .expect("placed");
    let err = placer
        .place(&Request::new("c", "acme", 0.0, 0), None)
        .expect_err("instances");
    assert_eq!(
        err.to_string(),
        "project acme has no instances left in its budget; c asks for one more instance"
    );
    // Another project has no budget and no limit.
    assert!(placer
        .place(&Request::new("d", "other", 8.0, GIB), None)
        .is_ok());
}

/// Random members (some offline, some used, some holding groups) and random requests
/// (some in groups): whatever either policy decides, capacity holds, offline members are
/// never chosen, no group is twice on a member, and a refusal means no member could take it.
#[test]
fn random_clusters_keep_every_rule() {
    let (mut placed, mut refused) = (0, 0);
    for seed in 0..200 {
        let mut rng = Prng::new(seed);
        let n = 1 + rng.below(12) as usize;
        let members: Vec<Member> = (0..n)
            .map(|i| {
                let cpu = [2.0, 4.0, 8.0][rng.below(3) as usize];
                let memory = [4, 8, 16][rng.below(3) as usize] * GIB;
                let mut m = Member::new(format!("m{i}"), cpu, memory);
                m.online = rng.below(5) != 0;
                m.cpu_used = cpu * rng.range(0.0, 0.5);
                m.memory_used = rng.below(memory / 2);
                if rng.below(3) == 0 {
                    m.groups.push(format!("g{}", rng.below(4)));
                }
                m
            })
            .collect();
        let policy = if seed % 2 == 0 {
            Policy::Spread
        } else {
            Policy::Binpack
        };
        let reqs: Vec<Request> = (0..40)
            .map(|i| {
                let r = Request::new(
                    format!("r{i}"),
                    "p",
                    [0.25, 0.5, 1.0, 2.0][rng.below(4) as usize],
                    [1, 2, 4][rng.below(3) as usize] * GIB / 2,
                );
                if rng.below(2) == 0 {
                    r.in_group(format!("g{}", rng.below(4)))
                } else {
                    r
                }
            })
            .collect();
        let mut placer = Placer::new(members.clone(), policy);
        let mut groups: HashSet<(String, usize)> = HashSet::new();
        for (i, m) in members.iter().enumerate() {
            for g in &m.groups {
                groups.insert((g.clone(), i));
            }
        }
        for req in &reqs {
            let before = placer.members().to_vec();
            match placer.place(req, None) {
                Ok(i) => {
                    placed += 1;
                    let m = &placer.members()[i];
                    assert!(m.online, "seed {seed}: offline {} chosen", m.name);
                    assert!(m.cpu_used <= m.cpu_capacity + 1e-9, "seed {seed}: cpu");
                    assert!(m.memory_used <= m.memory_capacity, "seed {seed}: memory");
                    if let Some(g) = &req.group {
                        assert!(groups.insert((g.clone(), i)), "seed {seed}: {g} twice");
                    }
                    // The free function agrees with the placer's choice.
                    assert_eq!(place(&before, req, policy, None), Ok(i), "seed {seed}");
                }
                Err(PlaceError::NoFit(no_fit)) => {
                    refused += 1;
                    assert_eq!(placer.members(), &before[..], "seed {seed}: changed");
                    assert_eq!(no_fit.excluded.len(), n);
                    for m in &before {
                        let takes = m.online
                            && req.group.as_ref().is_none_or(|g| !m.holds_group(g))
                            && m.cpu_used + req.cpu <= m.cpu_capacity + 1e-9
                            && m.memory_used + req.memory <= m.memory_capacity;
                        assert!(!takes, "seed {seed}: {} could take {}", m.name, req.name);
                    }
                }
                Err(other) => panic!("seed {seed}: {other}"),
            }
        }
    }
    assert!(
        placed > 1000 && refused > 1000,
        "placed {placed}, refused {refused}"
    );
}

#[test]
fn ten_thousand_instances_over_a_hundred_members_in_well_under_a_second() {
    let mut rng = Prng::new(42);
    let reqs = sim::requests(&mut rng, 10_000);
    for policy in [Policy::Spread, Policy::Binpack] {
        let mut placer = Placer::new(sim::members(100, 192.0, 768 * GIB), policy);
        let t = Instant::now();
        let placed = placer.place_many(&reqs);
        let took = t.elapsed();
        assert!(placed.iter().all(Result::is_ok), "{policy}: refused");
        for m in placer.members() {
            assert!(m.cpu_used <= m.cpu_capacity + 1e-6 && m.memory_used <= m.memory_capacity);
        }
        // A debug build is several times slower than the benchmark's release build.
        assert!(took.as_secs_f64() < 1.0, "{policy}: {took:?}");
    }
}
