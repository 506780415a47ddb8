use super::*;
use crate::model::{Member, Policy, Request};

const GIB: u64 = 1 << 30;

fn cluster() -> Vec<Member> {
    let mut members = vec![
        Member::new("m1", 8.0, 32 * GIB),
        Member::new("m2", 8.0, 32 * GIB),
        Member::new("m3", 8.0, 32 * GIB),
    ];
    members[0].cpu_used = 6.5;
    members[0].memory_used = 8 * GIB;
    members[1].online = false;
    members[2].cpu_used = 1.0;
    members[2].memory_used = 30 * GIB;
    members[2].groups = vec!["db".to_string()];
    members[2].instances = 1;
    members
}

#[test]
fn policies_parse_from_their_names_and_list_the_choices() {
    assert_eq!("spread".parse(), Ok(Policy::Spread));
    assert_eq!("binpack".parse(), Ok(Policy::Binpack));
    let err = "pack".parse::<Policy>().expect_err("unknown");
    assert_eq!(
        err.to_string(),
        "unknown placement policy \"pack\": choose spread or binpack"
    );
    for name in Policy::NAMES {
        assert_eq!(
            name.parse::<Policy>().map(|p| p.to_string()),
            Ok(name.to_string())
        );
    }
}

#[test]
fn spread_takes_the_least_loaded_and_binpack_the_fullest_that_fits() {
    let members = vec![
        Member {
            cpu_used: 2.0,
            ..Member::new("a", 8.0, 32 * GIB)
        },
        Member {
            cpu_used: 1.0,
            ..Member::new("b", 8.0, 32 * GIB)
        },
        Member {
            cpu_used: 7.5,
            ..Member::new("c", 8.0, 32 * GIB)
        },
    ];
    let req = Request::new("web", "default", 1.0, GIB);
    assert_eq!(place(&members, &req, Policy::Spread, None), Ok(1));
    assert_eq!(place(&members, &req, Policy::Binpack, None), Ok(0));
    // Load is the larger fraction: a's memory makes it the fuller one.
    let mut members = members;
    members[1].memory_used = 30 * GIB;
    assert_eq!(place(&members, &req, Policy::Spread, None), Ok(0));
    assert_eq!(place(&members, &req, Policy::Binpack, None), Ok(1));
    // Ties go by name.
    let same = [Member::new("y", 4.0, GIB), Member::new("x", 4.0, GIB)];
    let small = Request::new("s", "default", 1.0, 0);
    assert_eq!(place(&same, &small, Policy::Spread, None), Ok(1));
    assert_eq!(place(&same, &small, Policy::Binpack, None), Ok(1));
}

#[test]
fn a_target_is_taken_or_refused_with_the_reason() {
    let members = cluster();
    let req = Request::new("web", "default", 2.0, 4 * GIB).in_group("db");
    let err = |target| place(&members, &req, Policy::Spread, Some(target)).expect_err("refused");
    assert_eq!(
        err("m9").to_string(),
        "no member named m9; the members are m1, m2, m3"
    );
    assert_eq!(
        err("m2").to_string(),
        "member m2 is offline: choose another member, or none to let the scheduler choose"
    );
    assert_eq!(
        err("m1").to_string(),
        "member m1 lacks room for web: it needs 2 cores and 4 GiB, m1 has 1.5 cores and 24 GiB free"
    );
    assert_eq!(
        err("m3").to_string(),
        "member m3 already holds an instance of anti-affinity group db: web must go to another member"
    );
    let fits = Request::new("web", "default", 1.0, GIB);
    assert_eq!(place(&members, &fits, Policy::Spread, Some("m3")), Ok(2));
    let many: Vec<Member> = (0..12)
        .map(|i| Member::new(format!("n{i}"), 1.0, GIB))
        .collect();
    let err = place(&many, &fits, Policy::Spread, Some("zz")).expect_err("unknown");
    assert_eq!(
        err.to_string(),
        "no member named zz; the members are n0, n1, n2, n3, n4, n5, n6, n7 and 4 more"
    );
}

#[test]
fn no_fit_names_each_member_in_a_small_cluster() {
    let members = cluster();
    let req = Request::new("web", "default", 2.0, 4 * GIB).in_group("db");
    let err = place(&members, &req, Policy::Binpack, None).expect_err("no fit");
    assert_eq!(
        err.to_string(),
        "no member fits web (2 cores and 4 GiB): m1 has 1.5 cores and 24 GiB free; m2 is \
         offline; m3 holds an instance of group db"
    );
    let PlaceError::NoFit(no_fit) = err else {
        panic!("not a NoFit: {err:?}");
    };
    assert_eq!(no_fit.excluded.len(), 3);
    assert_eq!(no_fit.closest().map(|e| e.member.as_str()), Some("m1"));
    let none = place(&[], &req, Policy::Spread, None).expect_err("empty");
    assert_eq!(
        none.to_string(),
        "no member to place web on: the cluster has none"
    );
}

#[test]
fn no_fit_summarises_a_large_cluster_with_the_closest_member() {
    let mut members: Vec<Member> = (0..100)
        .map(|i| Member {
            cpu_used: 7.0,
            memory_used: 16 * GIB,
            ..Member::new(format!("m{i:02}"), 8.0, 32 * GIB)
        })
        .collect();
    for m in &mut members[..3] {
        m.online = false;
    }
    members[3].groups.push("web".to_string());
    for m in &mut members[4..10] {
        m.cpu_used = 0.0;
        m.memory_used = 31 * GIB;
    }
    for m in &mut members[10..12] {
        m.memory_used = 31 * GIB;
    }
    members[50].cpu_used = 6.5;
    let req = Request::new("api", "default", 2.0, 4 * GIB).in_group("web");
    let err = place(&members, &req, Policy::Spread, None).expect_err("no fit");
    assert_eq!(
        err.to_string(),
        "no member of 100 fits api (2 cores and 4 GiB): 3 offline, 1 hold its anti-affinity \
         group, 88 short of cpu, 6 short of memory, 2 short of both; closest: m50 has 1.5 \
         cores and 16 GiB free"
    );
    let line = err.to_string();
    assert!(line.len() < 240, "{} characters", line.len());
}

#[test]
fn requests_that_are_not_numbers_are_refused() {
    let members = cluster();
    for cpu in [f64::NAN, -1.0, f64::INFINITY] {
        let req = Request::new("bad", "default", cpu, 0);
        let err = place(&members, &req, Policy::Spread, None).expect_err("invalid");
        assert!(matches!(err, PlaceError::InvalidRequest { .. }), "{err}");
    }
}

#[test]
fn members_and_requests_round_trip_as_json() {
    let members = cluster();
    let text = serde_json::to_string(&members).expect("json");
    let back: Vec<Member> = serde_json::from_str(&text).expect("parse");
    assert_eq!(back, members);
    let req: Request =
        serde_json::from_str(r#"{"name":"w","project":"p","cpu":0.5,"memory":1024}"#)
            .expect("parse");
    assert_eq!(req, Request::new("w", "p", 0.5, 1024));
    assert_eq!(
        serde_json::to_string(&Policy::Binpack).expect("json"),
        "\"binpack\""
    );
}

#[test]
fn the_choice_is_explained_with_the_figures() {
    let mut a = Member::new("a", 2.0, 4 << 30);
    a.cpu_used = 1.5;
    a.memory_used = 3 << 30;
    let b = Member::new("b", 2.0, 4 << 30);
    let mut c = Member::new("c", 8.0, 64 << 30);
    c.online = false;
    let members = vec![a, b, c];
    let req = Request::new("web", "p", 0.5, 512 << 20);
    let i = place(&members, &req, Policy::Spread, None).unwrap();
    assert_eq!(
        why_chosen(&members, i, Policy::Spread),
        "spread (the most room left): b has 2 cores and 4 GiB free of 2 cores and 4 GiB; 2 of 3 members online"
    );
    let i = place(&members, &req, Policy::Binpack, None).unwrap();
    assert_eq!(
        why_chosen(&members, i, Policy::Binpack),
        "binpack (the least room that fits): a has 0.5 cores and 1 GiB free of 2 cores and 4 GiB; 2 of 3 members online"
    );
}
