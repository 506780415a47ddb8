//! Tests of the SQLite store.

use std::collections::BTreeMap;

use vessel_api::{InstanceType, Limits};

use super::*;

fn image(fp: &str) -> Image {
    Image {
        fingerprint: fp.into(),
        aliases: vec!["busybox".into()],
        source: "busybox".into(),
        kind: ImageKind::Container,
        size_bytes: 10,
        layers: vec!["ab".repeat(32)],
        command: vec!["/sbin/init".into()],
        environment: vec!["A=1".into()],
        working_dir: Some("/srv".into()),
        user: Some("1000".into()),
        exposed_ports: vec!["80/tcp".into()],
        stop_signal: "SIGUSR2".into(),
        created_at: "2026-01-01T00:00:00Z".into(),
        locations: Vec::new(),
    }
}

fn instance(name: &str, image: &str) -> Instance {
    Instance {
        project: None,
        name: name.into(),
        instance_type: InstanceType::Container,
        status: InstanceStatus::Creating,
        image: image.into(),
        privileged: false,
        limits: Limits {
            memory: Some(1 << 28),
            ..Default::default()
        },
        command: vec!["/bin/sh".into()],
        environment: BTreeMap::new(),
        config: BTreeMap::new(),
        profiles: Vec::new(),
        own_config: BTreeMap::new(),
        from_profiles: Default::default(),
        ssh_keys: vec!["ssh-ed25519 AAAA test".into()],
        storage: None,
        idmap: None,
        created_at: "2026-01-01T00:00:00Z".into(),
        last_exit_code: None,
        last_exit_reason: None,
        error: None,
        state: None,
        vm: None,
        nics: Vec::new(),
        volumes: Vec::new(),
        root_disk: None,
        location: None,
    }
}

#[test]
fn state_survives_reopen_and_migrations_are_versioned() {
    let dir = tempdir();
    let path = dir.join("vessel.db");
    let fp = "ab".repeat(32);
    {
        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(s.schema_version().unwrap(), MIGRATIONS.len() as u32);
        s.image_insert("default", &image(&fp)).unwrap();
        s.instance_insert(&instance("c1", &fp)).unwrap();
        s.instance_set_status("c1", InstanceStatus::Running, None, None)
            .unwrap();
        s.instance_set_status("c1", InstanceStatus::Running, Some(137), None)
            .unwrap();
        s.instance_set_exit("c1", None, Some("the guest powered off"))
            .unwrap();
        assert!(s.instance_set_exit("nope", None, None).is_err());
    }
    let s = SqliteStore::open(&path).unwrap();
    let i = s.instance_get("c1").unwrap();
    assert_eq!(i.status, InstanceStatus::Running);
    assert_eq!(i.last_exit_reason.as_deref(), Some("the guest powered off"));
    assert_eq!(
        i.last_exit_code, None,
        "an unknown code replaces the last one"
    );
    assert_eq!(i.ssh_keys, vec!["ssh-ed25519 AAAA test".to_string()]);
    assert_eq!(i.limits.memory, Some(1 << 28));
    let mut limits = i.limits.clone();
    limits.disk = Some(64 << 20);
    s.instance_set_limits(&i.name, &limits).unwrap();
    assert_eq!(s.instance_get(&i.name).unwrap().limits, limits);
    assert!(s.instance_set_limits("nope", &limits).is_err());
    assert_eq!(
        s.image_get(Some("default"), "busybox").unwrap().fingerprint,
        fp
    );
    assert_eq!(s.image_get(Some("default"), "busybox").unwrap(), {
        let mut i = image(&fp);
        i.aliases = vec!["busybox".into()];
        i
    });
    assert_eq!(
        s.image_get(Some("default"), &fp[..12]).unwrap().fingerprint,
        fp
    );
    assert!(matches!(
        s.image_get(Some("default"), "abab"),
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(s.instances_using_image(&fp).unwrap(), vec!["c1"]);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn duplicate_names_are_refused() {
    let dir = tempdir();
    let s = SqliteStore::open(&dir.join("db")).unwrap();
    let fp = "cd".repeat(32);
    s.image_insert("default", &image(&fp)).unwrap();
    s.instance_insert(&instance("c1", &fp)).unwrap();
    assert!(matches!(
        s.instance_insert(&instance("c1", &fp)),
        Err(StoreError::Exists(_))
    ));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn refuses_a_newer_schema() {
    let dir = tempdir();
    let path = dir.join("db");
    {
        let c = Connection::open(&path).unwrap();
        c.pragma_update(None, "user_version", 99).unwrap();
    }
    assert!(matches!(
        SqliteStore::open(&path),
        Err(StoreError::TooNew { found: 99, .. })
    ));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn unfinished_operations_are_failed() {
    let dir = tempdir();
    let s = SqliteStore::open(&dir.join("db")).unwrap();
    let op = Operation {
        id: "1".into(),
        description: "x".into(),
        status: OperationStatus::Running,
        resources: vec![],
        progress: None,
        stage: None,
        error: None,
        may_cancel: true,
        created_at: "t".into(),
        updated_at: "t".into(),
    };
    s.operation_put(&op).unwrap();
    let failed = s
        .operations_fail_unfinished("daemon restarted", "t2")
        .unwrap();
    assert_eq!(failed.len(), 1);
    let ops = s.operation_list(10).unwrap();
    assert_eq!(ops[0].status, OperationStatus::Failure);
    assert_eq!(ops[0].error.as_deref(), Some("daemon restarted"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn isolated_ranges_are_distinct_survive_reopen_and_free_on_delete() {
    let dir = tempdir();
    let path = dir.join("vessel.db");
    let fp = "ab".repeat(32);
    let pool = IdPool {
        shared_base: 1_000_000,
        size: 65_536,
    };
    {
        let s = std::sync::Arc::new(SqliteStore::open(&path).unwrap());
        s.image_insert("default", &image(&fp)).unwrap();
        // A legacy row gets the shared range recorded; isolated ones never take it.
        s.instance_insert(&instance("old", &fp)).unwrap();
        assert_eq!(s.instance_get("old").unwrap().idmap, None);
        let shared = InstanceIdmap {
            host_base: pool.shared_base,
            size: pool.size,
            isolated: false,
        };
        s.instance_set_idmap("old", &shared).unwrap();
        assert_eq!(s.instance_get("old").unwrap().idmap, Some(shared));
        let threads: Vec<_> = (0..10)
            .map(|i| {
                let (s, fp) = (s.clone(), fp.clone());
                std::thread::spawn(move || {
                    s.instance_insert_isolated(&instance(&format!("c{i}"), &fp), pool)
                        .unwrap()
                })
            })
            .collect();
        let mut bases: Vec<u32> = threads
            .into_iter()
            .map(|t| t.join().unwrap().host_base)
            .collect();
        bases.sort();
        let want: Vec<u32> = (1..=10).map(|k| pool.shared_base + k * pool.size).collect();
        assert_eq!(bases, want, "ten distinct ranges above the shared one");
        // A taken name takes no range.
        assert!(matches!(
            s.instance_insert_isolated(&instance("c3", &fp), pool),
            Err(StoreError::Exists(_))
        ));
    }
    let s = SqliteStore::open(&path).unwrap();
    let c4 = s.instance_get("c4").unwrap().idmap.unwrap();
    assert!(c4.isolated);
    s.instance_delete("c4").unwrap();
    let again = s
        .instance_insert_isolated(&instance("n", &fp), pool)
        .unwrap();
    assert_eq!(again.host_base, c4.host_base, "freed only by the deletion");
    // An instance stored without a range (a VM of an earlier version) gets the lowest
    // free one, once; another instance's range is never taken.
    s.instance_insert(&instance("vm", &fp)).unwrap();
    let c7 = s.instance_get("c7").unwrap().idmap.unwrap().host_base;
    s.instance_delete("c7").unwrap();
    let given = s.instance_assign_isolated("vm", pool).unwrap();
    assert_eq!((given.host_base, given.isolated), (c7, true));
    assert_eq!(s.instance_get("vm").unwrap().idmap, Some(given));
    assert_eq!(s.instance_assign_isolated("vm", pool).unwrap(), given);
    let shared = s.instance_get("old").unwrap().idmap;
    assert_eq!(s.instance_assign_isolated("old", pool).ok(), shared);
    assert!(matches!(
        s.instance_assign_isolated("nope", pool),
        Err(StoreError::NotFound(_))
    ));
    std::fs::remove_dir_all(dir).unwrap();
}

fn tempdir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "vessel-store-test-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A store written before projects (schema 6) opens with everything in `default`: its
/// images held by `default` with their aliases, its instances named as they were.
#[test]
fn a_store_from_before_projects_becomes_defaults() {
    let dir = tempdir();
    let path = dir.join("vessel.db");
    let fp = "ef".repeat(32);
    {
        let c = Connection::open(&path).unwrap();
        for sql in &MIGRATIONS[..6] {
            c.execute_batch(sql).unwrap();
        }
        c.pragma_update(None, "user_version", 6).unwrap();
        c.execute(
            "INSERT INTO images (fingerprint, source, size_bytes, command, stop_signal,
             created_at) VALUES (?, 'busybox', 1, '[\"sh\"]', 'SIGTERM', 't')",
            [&fp],
        )
        .unwrap();
        c.execute(
            "INSERT INTO image_aliases (alias, fingerprint) VALUES ('busybox', ?)",
            [&fp],
        )
        .unwrap();
        c.execute(
            "INSERT INTO instances (name, type, status, image, privileged, limits, command,
             environment, created_at) VALUES ('web', 'container', 'stopped', ?, 0, '{}',
             '[\"sh\"]', '{}', 't')",
            [&fp],
        )
        .unwrap();
    }
    let s = SqliteStore::open(&path).unwrap();
    assert_eq!(s.schema_version().unwrap(), MIGRATIONS.len() as u32);
    let img = s.image_get(Some("default"), "busybox").unwrap();
    assert_eq!(
        (img.fingerprint.as_str(), img.aliases),
        (fp.as_str(), vec!["busybox".to_string()])
    );
    assert_eq!(s.image_holders(&fp).unwrap(), vec!["default"]);
    assert_eq!(s.image_list(Some("default")).unwrap().len(), 1);
    assert!(s.image_list(Some("alpha")).unwrap().is_empty());
    assert!(matches!(
        s.image_get(Some("alpha"), "busybox"),
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        s.image_get(Some("alpha"), &fp),
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(s.instance_get("web").unwrap().image, fp);
    std::fs::remove_dir_all(dir).unwrap();
}

/// Aliases are a project's own; an image stays stored while any project holds it.
#[test]
fn images_are_held_per_project_and_go_with_their_last_holder() {
    let dir = tempdir();
    let s = SqliteStore::open(&dir.join("db")).unwrap();
    let (a, b) = ("a1".repeat(32), "b2".repeat(32));
    s.image_insert("default", &image(&a)).unwrap();
    s.image_insert("alpha", &image(&b)).unwrap();
    // The same alias names another image in each project.
    assert_eq!(
        s.image_get(Some("default"), "busybox").unwrap().fingerprint,
        a
    );
    assert_eq!(
        s.image_get(Some("alpha"), "busybox").unwrap().fingerprint,
        b
    );
    assert!(matches!(
        s.image_get(Some("alpha"), &a),
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        s.image_insert("alpha", &image(&a)),
        Err(StoreError::Exists(_))
    ));
    s.image_hold("alpha", &a).unwrap();
    s.image_alias_set("alpha", "old", &a).unwrap();
    assert_eq!(
        s.image_get(Some("alpha"), &a[..12]).unwrap().aliases,
        vec!["old"]
    );
    assert_eq!(
        s.image_get(Some("default"), &a).unwrap().aliases,
        vec!["busybox"]
    );
    assert_eq!(s.image_holders(&a).unwrap(), vec!["alpha", "default"]);
    assert!(matches!(
        s.image_alias_delete("default", "old"),
        Err(StoreError::NotFound(_))
    ));
    // Released by one holder: still stored for the other, without the released aliases.
    assert!(!s.image_release("alpha", &a).unwrap());
    assert!(matches!(
        s.image_get(Some("alpha"), "old"),
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(s.image_get(None, &a).unwrap().fingerprint, a);
    assert!(s.image_release("default", &a).unwrap());
    assert!(matches!(
        s.image_get(None, &a),
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        s.image_release("default", &a),
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        s.image_hold("default", &a),
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(s.image_list(None).unwrap().len(), 1);
    std::fs::remove_dir_all(dir).unwrap();
}
