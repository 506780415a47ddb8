use super::*;
use crate::store::SqliteStore;

/// Removes its directory when dropped.
struct Dir(std::path::PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn store() -> (Dir, SharedStore) {
    let dir = std::env::temp_dir().join(format!("vessel-shared-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let local = SqliteStore::open(&dir.join("vessel.db")).unwrap();
    (Dir(dir), SharedStore::new(Arc::new(local)))
}

#[test]
fn outside_a_cluster_every_kind_is_local() {
    let (_d, s) = store();
    s.object_insert("project", "p", "{}").unwrap();
    assert!(matches!(
        s.object_insert("project", "p", "{}"),
        Err(StoreError::Exists(_))
    ));
    s.object_put("network", "n", "{}").unwrap();
    assert_eq!(s.object_get("project", "p").unwrap(), "{}");
    assert_eq!(s.current(), None);
}

#[test]
fn changes_apply_in_revision_order_whatever_order_they_arrive_in() {
    let (_d, s) = store();
    assert!(s.apply_put(0, "project", "p", "v5", 5).unwrap());
    // An older write (a watch event behind this member's own write) changes nothing.
    assert!(!s.apply_put(0, "project", "p", "v4", 4).unwrap());
    assert_eq!(s.object_get("project", "p").unwrap(), "v5");
    assert!(s.apply_delete(0, "project", "p", 6).unwrap());
    // Nor does it bring a deleted object back.
    assert!(!s.apply_put(0, "project", "p", "v5", 5).unwrap());
    assert!(matches!(
        s.object_get("project", "p"),
        Err(StoreError::NotFound(_))
    ));
    assert!(s.apply_put(0, "project", "p", "v7", 7).unwrap());
    assert_eq!(s.object_get("project", "p").unwrap(), "v7");
    // A link replaced since (another generation) changes nothing.
    assert!(!s.apply_put(1, "project", "p", "v8", 8).unwrap());
    assert_eq!(s.object_get("project", "p").unwrap(), "v7");
}

#[test]
fn reading_everything_again_replaces_the_shared_kinds_only() {
    let (_d, s) = store();
    let local = &s.inner.local;
    local.object_put("project", "gone", "{}").unwrap();
    local.object_put("project", "same", "1").unwrap();
    local.object_put("identity", "old", "1").unwrap();
    local.object_put("network", "mine", "{}").unwrap();
    local.object_put("profile", "mine", "{}").unwrap();
    local.object_put("profile", "web", "old").unwrap();
    local.object_put("profile", "same", "1").unwrap();
    local.object_put("pool", "mine", "{}").unwrap();
    let obj = |kind: &str, key: &str, body: &str, revision| SharedObject {
        kind: kind.into(),
        key: key.into(),
        body: body.into(),
        revision,
    };
    let changed = s
        .replace_all(
            0,
            9,
            vec![
                obj("project", "same", "1", 3),
                obj("identity", "old", "2", 8),
                obj("project", "new", "{}", 4),
                obj("profile", "web", "{}", 5),
                obj("profile", "same", "1", 6),
            ],
        )
        .unwrap();
    assert_eq!(
        changed.into_iter().collect::<Vec<_>>(),
        ["identity", "profile", "project"]
    );
    let keys = |kind| -> Vec<String> {
        local
            .object_list(kind)
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect()
    };
    assert_eq!(keys("project"), ["new", "same"]);
    assert_eq!(local.object_get("identity", "old").unwrap(), "2");
    assert_eq!(keys("profile"), ["same", "web"]);
    // A profile it held that etcd has another version of is noted with what it held (one
    // it lacked, or one etcd has the same of, is not): a note per content.
    let notes = || -> Vec<(String, String)> {
        let mut n: Vec<(String, String)> = local
            .object_list(super::PROFILE_MISSED)
            .unwrap()
            .into_iter()
            .map(|(k, body)| (k.split('/').next().unwrap().to_string(), body))
            .collect();
        n.sort();
        n
    };
    assert_eq!(notes(), [("web".to_string(), "old".to_string())]);
    super::missed(local.as_ref(), "web", "old").unwrap();
    assert_eq!(notes().len(), 1, "the same content is noted once");
    super::missed(local.as_ref(), "web", "newer").unwrap();
    assert_eq!(
        notes(),
        [
            ("web".to_string(), "newer".to_string()),
            ("web".to_string(), "old".to_string())
        ]
    );
    assert_eq!(keys("pool"), ["mine"], "not a shared kind");
    assert_eq!(keys("network"), ["mine"], "not a shared kind");
    // The deleted one is known deleted at the revision read: an older write stays out.
    assert!(!s.apply_put(0, "project", "gone", "{}", 9).unwrap());
    // What a change of a known object expects: the revision it was read at.
    assert_eq!(s.expected("project", "same"), Expect::Revision(3));
    assert_eq!(s.expected("project", "gone"), Expect::Absent);
}

#[test]
fn a_member_whose_etcd_does_not_answer_reads_but_refuses_changes() {
    let (_d, s) = store();
    s.object_put("project", "p", "{}").unwrap();
    // Nothing listens there: the link never reads everything.
    s.attach(
        &["http://127.0.0.1:9".to_string()],
        "c",
        Seed::Nothing,
        Box::new(|| {}),
    );
    assert_eq!(s.current(), Some(false));
    assert_eq!(s.object_get("project", "p").unwrap(), "{}");
    let err = s.object_put("project", "p", "{\"x\":1}").unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    assert!(err.to_string().contains("not changed"), "{err}");
    assert!(matches!(
        s.object_delete("identity", "i"),
        Err(StoreError::Unavailable(_))
    ));
    // Kinds of this member alone are written as ever.
    s.object_put("network", "n", "{}").unwrap();
    s.detach();
    s.object_put("project", "p", "{\"x\":1}").unwrap();
}
