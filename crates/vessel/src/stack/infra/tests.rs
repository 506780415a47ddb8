use super::*;
use crate::stack::parse;

const STACK: &str = "name: s
projects:
  acme:
    config: {limits.instances: 10}
pools:
  fast: {driver: raid, level: raid1, members: 2, size: 64MiB}
volumes:
  data: {pool: fast, size: 16MiB}
networks:
  front:
    subnet: 10.61.0.0/24
    forwards: [{listen_port: 8080, instance: web, target_port: 80}]
    balancers:
      lb: {address: 10.0.0.1, ports: [{listen_port: 80, target_port: 80}], backends: [web]}
images:
  bb: {pull: 127.0.0.1:5000/busybox:1, insecure: true}
instances:
  web: {image: bb, networks: [front]}
";

fn ours() -> BTreeMap<String, String> {
    [(OWNER_KEY.to_string(), "s".to_string())].into()
}

/// Everything of STACK there as declared.
fn there() -> World {
    let stack = parse(STACK, "s.yaml").unwrap();
    World {
        projects: vec![Project {
            name: "acme".into(),
            config: [
                ("limits.instances".to_string(), "10".to_string()),
                (OWNER_KEY.to_string(), "s".to_string()),
            ]
            .into(),
        }],
        pools: vec![Pool {
            name: "fast".into(),
            driver: Driver::Raid,
            level: Some("raid1".into()),
            sources: vec!["/a".into(), "/b".into()],
            labels: ours(),
        }],
        volumes: vec![Volume {
            pool: "fast".into(),
            name: "data".into(),
            content: Content::Filesystem,
            size: 16 << 20,
            labels: ours(),
        }],
        networks: vec![Network {
            name: "front".into(),
            subnet: "10.61.0.0/24".into(),
            labels: ours(),
            forwards: vec![forward_body(&stack.networks["front"].forwards[0])],
            balancers: vec![balancer_body(
                "lb",
                &stack.networks["front"].balancers["lb"],
            )],
            ..Network::default()
        }],
        images: vec![Image {
            fingerprint: "f".repeat(64),
            aliases: vec!["bb".into()],
            source: "pull 127.0.0.1:5000/busybox:1".into(),
        }],
    }
}

fn kinds(steps: &[Step]) -> Vec<(Object, &str, &'static str)> {
    steps
        .iter()
        .map(|s| (s.object, s.name.as_str(), s.action.verb()))
        .collect()
}

#[test]
fn from_nothing_everything_is_made_and_then_nothing_is_to_do() {
    let stack = parse(STACK, "s.yaml").unwrap();
    let steps = before_instances(&stack, &World::default(), true).unwrap();
    assert_eq!(
        kinds(&steps),
        vec![
            (Object::Project, "acme", "create"),
            (Object::Pool, "fast", "create"),
            (Object::Network, "front", "create"),
            (Object::Image, "bb", "create"),
            (Object::Volume, "fast/data", "create"),
        ]
    );
    let after = after_instances(&stack, &[], &BTreeSet::new(), true);
    assert_eq!(
        kinds(&after),
        vec![
            (Object::Forward, "front/tcp/8080", "create"),
            (Object::Balancer, "front/lb", "create"),
        ]
    );
    let w = there();
    assert_eq!(before_instances(&stack, &w, true).unwrap(), vec![]);
    assert_eq!(
        after_instances(&stack, &w.networks, &BTreeSet::new(), true),
        vec![]
    );
}

#[test]
fn changes_in_place_replacements_and_refusals() {
    let w = there();
    let changed = STACK
        .replace("limits.instances: 10", "limits.memory: 1GiB")
        .replace("size: 16MiB", "size: 32MiB")
        .replace(
            "subnet: 10.61.0.0/24",
            "subnet: 10.61.0.0/24\n    acl: 'allow tcp 80'",
        )
        .replace("busybox:1", "busybox:2");
    let stack = parse(&changed, "s.yaml").unwrap();
    let steps = before_instances(&stack, &w, false).unwrap();
    assert_eq!(
        kinds(&steps),
        vec![
            (Object::Project, "acme", "change in place"),
            (Object::Network, "front", "change in place"),
            (Object::Image, "bb", "replace"),
            (Object::Volume, "fast/data", "change in place"),
        ]
    );
    assert_eq!(
        steps[0].action,
        Action::Change(Change::Config {
            set: [("limits.memory".to_string(), "1GiB".to_string())].into(),
            unset: vec!["limits.instances".into()],
        })
    );
    assert_eq!(steps[3].action, Action::Change(Change::Size(32 << 20)));
    assert_eq!(steps[3].reason, "grows 16MiB → 32MiB");
    // A new subnet makes the network anew; 10.61.0.9/24 is the same subnet.
    let stack = parse(&STACK.replace("10.61.0.0/24", "10.61.0.9/24"), "s.yaml").unwrap();
    assert!(before_instances(&stack, &w, false).unwrap().is_empty());
    let stack = parse(&STACK.replace("10.61.0.0/24", "10.62.0.0/24"), "s.yaml").unwrap();
    let steps = before_instances(&stack, &w, false).unwrap();
    assert_eq!(kinds(&steps), vec![(Object::Network, "front", "replace")]);
    assert!(steps[0].reason.contains("its instances are made anew too"));
    // Pools and volumes are never replaced, nor volumes shrunk.
    for (from, to, want) in [
        ("level: raid1", "level: raid5", "level raid1 → raid5"),
        ("members: 2", "members: 3", "members 2 → 3"),
        ("size: 16MiB", "size: 8MiB", "never shrinks"),
        (
            "size: 16MiB}",
            "size: 16MiB, type: block}",
            "its type cannot change",
        ),
    ] {
        let stack = parse(&STACK.replace(from, to), "s.yaml").unwrap();
        let e = before_instances(&stack, &w, false).unwrap_err();
        assert!(e.contains(want), "{to}: {e}");
    }
}

#[test]
fn what_the_stack_does_not_own_is_refused_and_prune_takes_only_its_own() {
    let stack = parse(STACK, "s.yaml").unwrap();
    let mut w = there();
    w.networks[0].labels.clear();
    let e = before_instances(&stack, &w, false).unwrap_err();
    assert!(
        e.starts_with("network front exists and is not stack s's (user.stack is not set)"),
        "{e}"
    );
    let mut w = there();
    w.pools[0].labels.insert(OWNER_KEY.into(), "other".into());
    let e = before_instances(&stack, &w, false).unwrap_err();
    assert!(
        e.contains("pool fast exists and is not stack s's (user.stack is \"other\")"),
        "{e}"
    );

    // Emptied: everything of its own goes, nothing else.
    let mut w = there();
    w.networks.push(Network {
        name: "theirs".into(),
        labels: [(OWNER_KEY.to_string(), "t".to_string())].into(),
        ..Network::default()
    });
    w.volumes.push(Volume {
        pool: "fast".into(),
        name: "byhand".into(),
        content: Content::Block,
        size: 1,
        labels: BTreeMap::new(),
    });
    let empty = Stack {
        name: "s".into(),
        ..Stack::default()
    };
    assert!(before_instances(&empty, &w, false).unwrap().is_empty());
    let steps = before_instances(&empty, &w, true).unwrap();
    assert_eq!(
        kinds(&steps),
        vec![
            (Object::Volume, "fast/data", "delete"),
            (Object::Network, "front", "delete"),
            (Object::Pool, "fast", "delete"),
            (Object::Project, "acme", "delete"),
        ]
    );
}

#[test]
fn balancers_and_forwards_follow_their_instances() {
    let stack = parse(STACK, "s.yaml").unwrap();
    let w = there();
    let anew: BTreeSet<String> = ["instance web".to_string()].into();
    let steps = after_instances(&stack, &w.networks, &anew, false);
    assert_eq!(
        kinds(&steps),
        vec![
            (Object::Forward, "front/tcp/8080", "replace"),
            (Object::Balancer, "front/lb", "replace"),
        ]
    );
    assert_eq!(steps[1].reason, "backends made anew: web");
    // A backend the daemon dropped (its instance was deleted) is put back.
    let mut w = there();
    w.networks[0].balancers[0].backends.clear();
    let steps = after_instances(&stack, &w.networks, &BTreeSet::new(), false);
    assert_eq!(
        kinds(&steps),
        vec![(Object::Balancer, "front/lb", "replace")]
    );
    // A network made anew has none of them yet.
    let anew: BTreeSet<String> = ["network front".to_string()].into();
    let steps = after_instances(&stack, &there().networks, &anew, false);
    assert!(
        steps.iter().all(|s| s.action == Action::Create),
        "{steps:?}"
    );
    // Undeclared ones on the stack's network go with --prune only.
    let bare = parse(
        &STACK.replace(
            "    forwards: [{listen_port: 8080, instance: web, target_port: 80}]\n",
            "",
        ),
        "s.yaml",
    )
    .unwrap();
    assert!(after_instances(&bare, &w.networks, &BTreeSet::new(), false)
        .iter()
        .all(|s| s.object != Object::Forward));
    let steps = after_instances(&bare, &w.networks, &BTreeSet::new(), true);
    assert!(steps.contains(&Step::new(
        Object::Forward,
        "front/tcp/8080",
        Action::Delete,
        "on stack s's network, not declared"
    )));
}
