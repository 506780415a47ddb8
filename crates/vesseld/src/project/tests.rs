use super::quota::{usage, Quota};
use super::*;
use vessel_api::{InstanceType, Limits, ProjectUsage};

fn config(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn qualified_names_keep_projects_apart() {
    assert_eq!(qualify("default", "web"), "web");
    assert_eq!(qualify("acme", "web"), "acme.web");
    assert_eq!(split("acme.web"), ("acme", "web"));
    assert_eq!(split("web"), ("default", "web"));
    assert_eq!(within("acme", "acme.web"), Some("web"));
    assert_eq!(within("default", "acme.web"), None);
    assert_eq!(within("acme", "web"), None);
    assert_eq!(within("default", "web"), Some("web"));
}

#[test]
fn limits_parse_or_say_which_key_is_wrong() {
    let q = Quota::parse(&config(&[
        ("limits.instances", "5"),
        ("limits.memory", "2GiB"),
        ("limits.cpu", "1.5"),
    ]))
    .unwrap();
    assert_eq!(q.instances, Some(5));
    assert_eq!(q.memory, Some(2 << 30));
    assert_eq!(q.cpu, Some(1.5));
    for (k, v, says) in [
        ("limits.instances", "five", "whole number"),
        ("limits.memory", "lots", "does not parse"),
        ("limits.cpu", "-1", "cores"),
        ("limits.gpus", "1", "no project setting"),
        ("limits.disk.pool.", "1GiB", "no project setting"),
        ("limits.disk.pool.fast", "big", "does not parse"),
    ] {
        let e = Quota::parse(&config(&[(k, v)])).unwrap_err();
        assert!(
            e.message.contains(says) && e.message.contains(k),
            "{}",
            e.message
        );
    }
}

#[test]
fn quotas_admit_up_to_the_limit() {
    let q = Quota::parse(&config(&[
        ("limits.instances", "2"),
        ("limits.memory", "1GiB"),
    ]))
    .unwrap();
    let mem = |m: u64| Limits {
        memory: Some(m),
        ..Limits::default()
    };
    let empty = ProjectUsage::default();
    q.admits(&empty, InstanceType::Container, &mem(512 << 20), None)
        .unwrap();
    let e = q
        .admits(&empty, InstanceType::Container, &Limits::default(), None)
        .unwrap_err();
    assert!(e.message.contains("-l memory"), "{}", e.message);
    let half = ProjectUsage {
        instances: 1,
        containers: 1,
        memory: 768 << 20,
        ..ProjectUsage::default()
    };
    assert!(q
        .admits(&half, InstanceType::Container, &mem(512 << 20), None)
        .is_err());
    let full = ProjectUsage {
        instances: 2,
        ..half.clone()
    };
    let e = q
        .admits(&full, InstanceType::Vm, &mem(1), None)
        .unwrap_err();
    assert!(e.message.contains("limits.instances"), "{}", e.message);
    // A change counts what the instance had before.
    q.admits(
        &half,
        InstanceType::Container,
        &mem(1 << 30),
        Some(&mem(768 << 20)),
    )
    .unwrap();
}

#[test]
fn pool_limits_count_the_volumes_there() {
    let q = Quota::parse(&config(&[("limits.disk.pool.fast", "1GiB")])).unwrap();
    q.admits_in_pool("fast", &[Some(512 << 20)], Some(512 << 20))
        .unwrap();
    let e = q
        .admits_in_pool("fast", &[Some(512 << 20), None], Some(600 << 20))
        .unwrap_err();
    assert!(e.message.contains("limits.disk.pool.fast"), "{}", e.message);
    assert!(q
        .admits_in_pool("fast", &[], None)
        .unwrap_err()
        .message
        .contains("size"));
    q.admits_in_pool("slow", &[], None).unwrap();
}

#[test]
fn usage_sums_the_instances() {
    let a = Limits {
        memory: Some(100),
        cpu: Some(0.5),
        ..Limits::default()
    };
    let b = Limits {
        memory: Some(50),
        ..Limits::default()
    };
    let u = usage([(InstanceType::Container, &a), (InstanceType::Vm, &b)], 3);
    assert_eq!((u.instances, u.containers, u.virtual_machines), (2, 1, 1));
    assert_eq!((u.memory, u.cpu, u.networks), (150, 0.5, 3));
}

#[test]
fn projects_are_made_changed_and_deleted_with_checks() {
    let dir = std::env::temp_dir().join(format!("vessel-projects-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let store: Arc<dyn Store> = Arc::new(crate::store::SqliteStore::open(&dir.join("db")).unwrap());
    let p = ProjectService::new(store);
    assert_eq!(p.list().unwrap()[0].name, "default");
    let create = |name: &str, cfg: &[(&str, &str)]| {
        p.create(ProjectCreate {
            name: name.into(),
            description: String::new(),
            config: config(cfg),
        })
    };
    create("acme", &[("limits.instances", "5")]).unwrap();
    assert!(create("acme", &[]).is_err());
    assert!(create("default", &[]).is_err());
    assert!(create("bad.name", &[]).is_err());
    assert!(create("other", &[("limits.instances", "x")]).is_err());
    assert!(!p.exists("other"), "a project with a bad limit was kept");
    let e = p
        .update(
            "acme",
            ProjectUpdate {
                description: None,
                config: config(&[("limits.memory", "nope")]),
            },
        )
        .unwrap_err();
    assert!(e.message.contains("limits.memory"));
    assert_eq!(p.quota("acme").unwrap().instances, Some(5));
    p.update(
        "acme",
        ProjectUpdate {
            description: Some("tenant".into()),
            config: config(&[("limits.instances", "")]),
        },
    )
    .unwrap();
    assert_eq!(p.quota("acme").unwrap().instances, None);
    let e = p.delete("acme", &["instance web".into()]).unwrap_err();
    assert!(e.message.contains("instance web"));
    assert!(p.exists("acme"));
    p.delete("acme", &[]).unwrap();
    assert!(!p.exists("acme"));
    assert!(p.delete("default", &[]).is_err());
    assert_eq!(
        p.get("nope").unwrap_err().message,
        not_found("nope").message
    );
    std::fs::remove_dir_all(dir).unwrap();
}
