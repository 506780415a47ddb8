use std::collections::{HashMap, HashSet};
use std::time::Instant;

use super::*;
use crate::model::{Demand, Member};
use crate::sim::{self, Prng};

const GIB: u64 = 1 << 30;

/// Replays `plan`'s moves from where `instances` are: each lands below its member's line
/// and beside no other instance of its group; returns where each instance ends.
fn replay(members: &[Member], instances: &[Demand], plan: &Plan) -> HashMap<String, String> {
    let keep = 1.0 - plan.headroom;
    let cap: HashMap<&str, (f64, f64)> = members
        .iter()
        .map(|m| {
            (
                m.name.as_str(),
                (m.cpu_capacity * keep, m.memory_capacity as f64 * keep),
            )
        })
        .collect();
    let mut at: HashMap<String, String> = instances
        .iter()
        .map(|d| (d.name.clone(), d.member.clone()))
        .collect();
    let by_name: HashMap<&str, &Demand> = instances.iter().map(|d| (d.name.as_str(), d)).collect();
    let mut use_of: HashMap<String, (f64, u64)> = HashMap::new();
    let mut groups: HashMap<String, Vec<String>> = HashMap::new();
    for d in instances {
        if let Some(g) = &d.group {
            groups.entry(g.clone()).or_default().push(d.member.clone());
        }
        let u = use_of.entry(d.member.clone()).or_default();
        u.0 += d.cpu;
        u.1 += d.memory;
    }
    for mv in &plan.moves {
        let d = by_name[mv.instance.as_str()];
        assert_eq!(
            at[&d.name], mv.from,
            "{}: moved from where it is not",
            mv.instance
        );
        let to = use_of.entry(mv.to.clone()).or_default();
        to.0 += d.cpu;
        to.1 += d.memory;
        let (c, m) = cap[mv.to.as_str()];
        assert!(
            to.0 <= c + 1e-6 && to.1 as f64 <= m,
            "{}: {} overcommitted",
            mv.instance,
            mv.to
        );
        if let Some(g) = &d.group {
            let on = groups.entry(g.clone()).or_default();
            assert!(
                !on.contains(&mv.to),
                "{}: group {g} twice on {}",
                mv.instance,
                mv.to
            );
            if let Some(k) = on.iter().position(|m| *m == mv.from) {
                on.swap_remove(k);
            }
            on.push(mv.to.clone());
        }
        let from = use_of.entry(mv.from.clone()).or_default();
        from.0 -= d.cpu;
        from.1 -= d.memory;
        at.insert(d.name.clone(), mv.to.clone());
        assert_eq!(mv.cost_bytes, d.memory);
        assert!(
            mv.reason.starts_with(&format!("{}: ", d.name)),
            "{}",
            mv.reason
        );
    }
    at
}

/// Checks the end state: every kept member below its line, groups apart, emptied members
/// empty, and returns the count of members in use.
fn check_end(members: &[Member], instances: &[Demand], plan: &Plan) -> usize {
    let at = replay(members, instances, plan);
    let kept: HashSet<&str> = plan.kept.iter().map(String::as_str).collect();
    let mut used: HashSet<&str> = HashSet::new();
    let mut groups: HashSet<(&str, &str)> = HashSet::new();
    for d in instances {
        let m = at[&d.name].as_str();
        assert!(
            kept.contains(m),
            "{} ends on {m}, which is not kept",
            d.name
        );
        used.insert(m);
        if let Some(g) = &d.group {
            assert!(groups.insert((g.as_str(), m)), "group {g} twice on {m}");
        }
    }
    used.len()
}

#[test]
fn a_hundred_members_at_15_percent_pack_near_the_lower_bound() {
    for (seed, count) in [(1, 2_000), (2, 5_000), (3, 10_000)] {
        let mut rng = Prng::new(seed);
        let members = sim::members(100, 32.0, 128 * GIB);
        let (members, instances) = sim::fleet(&mut rng, members, count, 0.15);
        assert_eq!(instances.len(), count);
        let t = Instant::now();
        let plan = consolidate(&members, &instances, 0.2).expect("plan");
        let took = t.elapsed();
        let ffd = first_fit_decreasing(&members, &instances, 0.2).expect("ffd");
        let used = check_end(&members, &instances, &plan);
        let bound = (plan.lower_bound as f64 * 1.05).ceil() as usize;
        eprintln!(
            "{count} instances: plan {} (in use {used}), lower bound {}, ffd {ffd}, {} moves, {took:?}",
            plan.members_needed,
            plan.lower_bound,
            plan.moves.len()
        );
        assert!(plan.members_needed <= bound, "{plan:?}");
        assert!(
            plan.members_needed <= ffd,
            "plan {} ffd {ffd}",
            plan.members_needed
        );
        assert_eq!(plan.kept.len() + plan.emptied.len(), 100);
    }
}

fn member(name: &str, cpu: f64, gib: u64) -> Member {
    Member::new(name, cpu, gib * GIB)
}

fn demand(name: &str, on: &str, cpu: f64, gib: u64) -> Demand {
    Demand {
        name: name.to_string(),
        member: on.to_string(),
        cpu,
        memory: gib * GIB,
        group: None,
    }
}

fn grouped(d: Demand, group: &str) -> Demand {
    Demand {
        group: Some(group.to_string()),
        ..d
    }
}

#[test]
fn a_small_cluster_is_emptied_with_reasons_a_person_can_check() {
    let members = [
        member("a", 10.0, 100),
        member("b", 10.0, 100),
        member("c", 10.0, 100),
        member("d", 10.0, 100),
    ];
    let instances = [
        demand("web", "a", 4.0, 10),
        demand("db", "b", 5.0, 40),
        demand("cache", "c", 1.0, 2),
        demand("batch", "c", 2.0, 4),
    ];
    let plan = consolidate(&members, &instances, 0.2).expect("plan");
    // 12 cores of 8 usable per member: two members, and two suffice.
    assert_eq!(plan.lower_bound, 2);
    assert_eq!(plan.members_needed, 2);
    assert_eq!(plan.kept, ["a", "b"]);
    assert_eq!(plan.emptied, ["c", "d"]);
    check_end(&members, &instances, &plan);
    let moves: Vec<(&str, &str, &str)> = plan
        .moves
        .iter()
        .map(|m| (m.instance.as_str(), m.from.as_str(), m.to.as_str()))
        .collect();
    // Each on the member it fills best: b ends at its 8 cores.
    assert_eq!(moves, [("cache", "c", "b"), ("batch", "c", "b")]);
    assert_eq!(
        plan.moves[1].reason,
        "batch: c is emptied; b has 2 cores and 38 GiB free below its 80 % line for its \
         2 cores and 4 GiB"
    );
    assert_eq!(plan.kept.len() + plan.emptied.len(), 4);
    assert_eq!(
        plan.bytes_moved,
        plan.moves.iter().map(|m| m.cost_bytes).sum::<u64>()
    );
    assert!(
        plan.explanation[0].starts_with("4 instances on 4 online members need 2 below 80 %"),
        "{}",
        plan.explanation[0]
    );
    assert!(
        plan.explanation.iter().any(|l| l == "d: already empty"),
        "{:?}",
        plan.explanation
    );
    for m in &plan.moves {
        assert!(m.reason.contains("is emptied"), "{}", m.reason);
        assert!(
            m.reason.contains("free below its 80 % line"),
            "{}",
            m.reason
        );
    }
}

#[test]
fn an_instance_with_no_room_moves_another_aside_to_make_some() {
    // k1 holds web-1 of group web and is full but for 1 core; k2 has 2.5 cores free; e
    // holds web-2 (3 cores) and z. No member can be emptied by moving its instances alone.
    let members = [
        member("k1", 10.0, 100),
        member("k2", 10.0, 100),
        member("e", 10.0, 100),
    ];
    let instances = [
        demand("big", "k1", 7.0, 1),
        grouped(demand("web-1", "k1", 2.0, 1), "web"),
        demand("huge", "k2", 7.5, 1),
        grouped(demand("web-2", "e", 3.0, 1), "web"),
        demand("z", "e", 0.5, 1),
    ];
    let mut s = setup::setup(&members, &instances, 0.0).expect("setup");
    let mut causes = vec![None; instances.len()];
    for b in 0..3 {
        assert!(!empty(&mut s.fleet, b, false, &mut causes));
        assert_eq!(s.fleet.at, [0, 0, 1, 2, 2]);
        assert!(s.fleet.bins[b].open);
    }
    // Moving web-1 aside to k2 lets web-2 take its place on k1; z fills k2.
    assert!(empty(&mut s.fleet, 2, true, &mut causes));
    assert_eq!(s.fleet.at, [0, 1, 1, 0, 1]);
    assert_eq!(causes[1], Some(Cause::MakeRoom(3)));
    assert_eq!(causes[3], Some(Cause::Emptied));
    let plan = consolidate(&members, &instances, 0.0).expect("plan");
    assert_eq!(plan.members_needed, 2);
    check_end(&members, &instances, &plan);
    let reasons: Vec<&str> = plan.moves.iter().map(|m| m.reason.as_str()).collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with("web-1: it makes room on k1 for web-2;")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with("web-2: e is emptied;")),
        "{reasons:?}"
    );
}

#[test]
fn moves_that_wait_on_each_other_go_through_a_third_member() {
    // a and b are full and swap x and y; neither move can be first without help.
    let members = [
        member("a", 4.0, 100),
        member("b", 4.0, 100),
        member("c", 4.0, 100),
    ];
    let instances = [
        demand("x", "a", 3.0, 1),
        demand("p", "a", 1.0, 1),
        demand("y", "b", 3.0, 2),
        demand("q", "b", 1.0, 1),
    ];
    let mut s = setup::setup(&members, &instances, 0.0).expect("setup");
    s.fleet.relocate(0, 1);
    s.fleet.relocate(2, 0);
    s.fleet.commit();
    let home = [0, 0, 1, 1];
    let causes = vec![Some(Cause::Emptied); 4];
    let bin = |b: usize| members[b].name.clone();
    let item = |i: usize| instances[i].name.clone();
    let names = Names {
        bin: &bin,
        item: &item,
        groups: &[],
    };
    let moves = order(&s.fleet, &home, &causes, 0.0, &names).expect("order");
    let path: Vec<(&str, &str, &str)> = moves
        .iter()
        .map(|m| (m.instance.as_str(), m.from.as_str(), m.to.as_str()))
        .collect();
    assert_eq!(path, [("x", "a", "c"), ("y", "b", "a"), ("x", "c", "b")]);
    assert!(
        moves[0].reason.contains("waits on c"),
        "{}",
        moves[0].reason
    );
    assert!(
        moves[2].reason.contains("(after waiting on c)"),
        "{}",
        moves[2].reason
    );
    // With no third member, there is no order and the planner says so.
    let mut s = setup::setup(&members[..2], &instances, 0.0).expect("setup");
    s.fleet.relocate(0, 1);
    s.fleet.relocate(2, 0);
    let err = order(&s.fleet, &home, &causes, 0.0, &names).expect_err("no order");
    assert_eq!(
        err,
        PlanError::Unordered {
            instance: "x".into()
        }
    );
}

#[test]
fn members_above_their_line_or_holding_a_group_twice_are_put_right() {
    let members = [
        member("a", 10.0, 100),
        member("b", 10.0, 100),
        member("c", 10.0, 100),
    ];
    let instances = [
        demand("heavy", "a", 6.0, 10),
        demand("light", "a", 3.0, 1),
        grouped(demand("db-1", "b", 1.0, 8), "db"),
        grouped(demand("db-2", "b", 1.0, 4), "db"),
    ];
    let plan = consolidate(&members, &instances, 0.2).expect("plan");
    check_end(&members, &instances, &plan);
    let reason = |name: &str| {
        plan.moves
            .iter()
            .find(|m| m.instance == name)
            .map(|m| m.reason.clone())
            .unwrap_or_default()
    };
    // a needs 9 cores of its 8: the instance with fewer bytes leaves.
    assert!(
        reason("light").starts_with("light: a needs more than its 80 % line;"),
        "{plan:?}"
    );
    assert!(!plan.moves.iter().any(|m| m.instance == "heavy"));
    // The db replica with fewer bytes leaves b.
    assert!(
        reason("db-2")
            .starts_with("db-2: it shares anti-affinity group db with another instance on b;"),
        "{plan:?}"
    );
    assert_eq!(plan.members_needed, 2);
}

#[test]
fn the_lower_bound_takes_the_largest_members_first() {
    let members = [
        member("s", 16.0, 64),
        member("l", 64.0, 256),
        member("m", 32.0, 128),
    ];
    let instances: Vec<Demand> = (0..70)
        .map(|i| demand(&format!("i{i}"), "s", 1.0, 1))
        .collect();
    // 70 cores: 64 + 32 covers it; 16 alone would be an instance over its member's line,
    // so headroom 0 and the members sized for the plan.
    let s = setup::setup(&members, &instances, 0.0).expect("setup");
    assert_eq!(lower_bound(&s.fleet), 2);
    let plan = consolidate(&members, &instances, 0.0).expect("plan");
    assert_eq!(plan.members_needed, 2);
    assert_eq!(plan.kept, ["l", "m"]);
    check_end(&members, &instances, &plan);
    // A group of three needs three members whatever the sizes.
    let grouped_three: Vec<Demand> = ["a", "b", "c"]
        .iter()
        .map(|n| grouped(demand(n, "l", 0.1, 1), "g"))
        .collect();
    let s = setup::setup(&members, &grouped_three, 0.0).expect("setup");
    assert_eq!(lower_bound(&s.fleet), 3);
}

#[test]
fn bad_inputs_are_refused_with_what_to_do() {
    let members = [
        member("a", 8.0, 32),
        Member {
            online: false,
            ..member("off", 8.0, 32)
        },
    ];
    let ok = [demand("web", "a", 1.0, 1)];
    let err = consolidate(&members, &ok, 1.0).expect_err("headroom");
    assert_eq!(err, PlanError::Headroom(1.0));
    let err = consolidate(&members, &[demand("web", "gone", 1.0, 1)], 0.2).expect_err("unknown");
    assert_eq!(
        err.to_string(),
        "instance web is on gone, which is not a member of the cluster"
    );
    let err = consolidate(&members, &[demand("vast", "a", 7.0, 1)], 0.2).expect_err("too big");
    assert_eq!(
        err.to_string(),
        "instance vast needs 7 cores and 1 GiB: no online member has that room below 80 % of \
         its capacity; lower the headroom or add a larger member"
    );
    let err = consolidate(&members, &[demand("nan", "a", f64::NAN, 1)], 0.2).expect_err("nan");
    assert!(matches!(err, PlanError::InvalidDemand { .. }), "{err}");
    let pair = [
        grouped(demand("r1", "a", 1.0, 1), "r"),
        grouped(demand("r2", "a", 1.0, 1), "r"),
    ];
    let err = consolidate(&members, &pair, 0.2).expect_err("group");
    assert_eq!(
        err.to_string(),
        "anti-affinity group r has 2 instances but only 1 members are online"
    );
    assert_eq!(first_fit_decreasing(&members, &pair, 0.2), Err(err));
}

#[test]
fn offline_members_are_left_out_and_an_idle_cluster_needs_none() {
    let members = [
        member("a", 8.0, 32),
        member("b", 8.0, 32),
        Member {
            online: false,
            ..member("off", 8.0, 32)
        },
    ];
    let instances = [demand("web", "a", 1.0, 1), demand("stuck", "off", 1.0, 1)];
    let plan = consolidate(&members, &instances, 0.2).expect("plan");
    assert_eq!(plan.left_out, ["off"]);
    assert_eq!(plan.kept, ["a"]);
    assert!(plan.moves.is_empty());
    assert!(plan
        .explanation
        .iter()
        .any(|l| l == "off: offline, left out of the plan with its 1 instance"));
    let idle = consolidate(&members, &[], 0.2).expect("plan");
    assert_eq!(idle.members_needed, 0);
    assert_eq!(idle.emptied, ["a", "b"]);
    assert_eq!(first_fit_decreasing(&members, &[], 0.2), Ok(0));
}
