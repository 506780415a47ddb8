//! Instance statuses the store could not record (its disk full, say): kept here and retried,
//! and shown in place of the stored ones meanwhile, so that a failed write never leaves an
//! instance in a transitional state that refuses every next command.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vessel_api::{Instance, InstanceStatus};

use crate::store::Store;

/// How often unrecorded statuses are written again.
const RETRY: Duration = Duration::from_secs(1);

/// A status change waiting to be recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Change {
    status: InstanceStatus,
    code: Option<i32>,
    error: Option<String>,
}

/// Status changes not yet in the store, by instance.
#[derive(Clone, Default)]
pub struct PendingStatus {
    changes: Arc<Mutex<HashMap<String, Change>>>,
    retrying: Arc<Mutex<bool>>,
}

impl PendingStatus {
    fn changes(&self) -> std::sync::MutexGuard<'_, HashMap<String, Change>> {
        self.changes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a status, or keeps it (and retries in the background) when the store fails.
    pub fn set(
        &self,
        store: &Arc<dyn Store>,
        name: &str,
        status: InstanceStatus,
        code: Option<i32>,
        error: Option<&str>,
    ) {
        match store.instance_set_status(name, status, code, error) {
            Ok(()) => {
                self.changes().remove(name);
            }
            Err(e) => {
                tracing::warn!(instance = name, error = %e, ?status, "could not record status; retrying");
                self.changes().insert(
                    name.to_string(),
                    Change {
                        status,
                        code,
                        error: error.map(String::from),
                    },
                );
                self.retry(store.clone());
            }
        }
    }

    /// Forgets an instance (deleted).
    pub fn forget(&self, name: &str) {
        self.changes().remove(name);
    }

    /// `inst` as it is: with a status the store could not record yet.
    pub fn apply(&self, mut inst: Instance) -> Instance {
        if let Some(c) = self.changes().get(&inst.name) {
            inst.status = c.status;
            inst.last_exit_code = c.code;
            inst.error = c.error.clone();
        }
        inst
    }

    /// Starts the background writer unless it runs.
    fn retry(&self, store: Arc<dyn Store>) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        {
            let mut running = self.retrying.lock().unwrap_or_else(|p| p.into_inner());
            if *running {
                return;
            }
            *running = true;
        }
        let this = self.clone();
        rt.spawn(async move {
            loop {
                tokio::time::sleep(RETRY).await;
                let todo: Vec<(String, Change)> = this
                    .changes()
                    .iter()
                    .map(|(n, c)| (n.clone(), c.clone()))
                    .collect();
                for (name, c) in todo {
                    let written =
                        store.instance_set_status(&name, c.status, c.code, c.error.as_deref());
                    let mut changes = this.changes();
                    match written {
                        // Only if nothing newer replaced it meanwhile.
                        Ok(()) if changes.get(&name) == Some(&c) => {
                            changes.remove(&name);
                            tracing::info!(instance = %name, status = ?c.status, "status recorded");
                        }
                        Err(crate::store::StoreError::NotFound(_)) => {
                            changes.remove(&name);
                        }
                        _ => {}
                    }
                }
                let mut running = this.retrying.lock().unwrap_or_else(|p| p.into_inner());
                if this.changes().is_empty() {
                    *running = false;
                    return;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use vessel_api::{Image, InstanceType, Operation};

    use super::*;
    use crate::store::{Result, SqliteStore, StoreError};

    /// A real store whose status writes fail while `full` is set, like a full disk.
    struct FullDisk {
        inner: SqliteStore,
        full: AtomicBool,
    }

    impl Store for FullDisk {
        fn image_insert(&self, p: &str, i: &Image) -> Result<()> {
            self.inner.image_insert(p, i)
        }
        fn image_hold(&self, p: &str, f: &str) -> Result<()> {
            self.inner.image_hold(p, f)
        }
        fn image_list(&self, p: Option<&str>) -> Result<Vec<Image>> {
            self.inner.image_list(p)
        }
        fn image_get(&self, p: Option<&str>, k: &str) -> Result<Image> {
            self.inner.image_get(p, k)
        }
        fn image_holders(&self, f: &str) -> Result<Vec<String>> {
            self.inner.image_holders(f)
        }
        fn image_release(&self, p: &str, f: &str) -> Result<bool> {
            self.inner.image_release(p, f)
        }
        fn image_alias_set(&self, p: &str, a: &str, f: &str) -> Result<()> {
            self.inner.image_alias_set(p, a, f)
        }
        fn image_alias_delete(&self, p: &str, a: &str) -> Result<String> {
            self.inner.image_alias_delete(p, a)
        }
        fn instance_insert(&self, i: &Instance) -> Result<()> {
            self.inner.instance_insert(i)
        }
        fn instance_insert_isolated(
            &self,
            i: &Instance,
            pool: crate::store::IdPool,
        ) -> Result<vessel_api::InstanceIdmap> {
            self.inner.instance_insert_isolated(i, pool)
        }
        fn instance_assign_isolated(
            &self,
            n: &str,
            pool: crate::store::IdPool,
        ) -> Result<vessel_api::InstanceIdmap> {
            self.inner.instance_assign_isolated(n, pool)
        }
        fn instance_set_idmap(&self, n: &str, m: &vessel_api::InstanceIdmap) -> Result<()> {
            self.inner.instance_set_idmap(n, m)
        }
        fn instance_list(&self) -> Result<Vec<Instance>> {
            self.inner.instance_list()
        }
        fn instance_get(&self, n: &str) -> Result<Instance> {
            self.inner.instance_get(n)
        }
        fn instance_set_status(
            &self,
            n: &str,
            s: InstanceStatus,
            c: Option<i32>,
            e: Option<&str>,
        ) -> Result<()> {
            if self.full.load(Ordering::SeqCst) {
                return Err(StoreError::Db(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
                    None,
                )));
            }
            self.inner.instance_set_status(n, s, c, e)
        }
        fn instance_set_exit(&self, n: &str, c: Option<i32>, r: Option<&str>) -> Result<()> {
            self.inner.instance_set_exit(n, c, r)
        }
        fn instance_set_config(
            &self,
            n: &str,
            l: &vessel_api::Limits,
            e: &std::collections::BTreeMap<String, String>,
            c: &std::collections::BTreeMap<String, String>,
            o: &std::collections::BTreeMap<String, String>,
        ) -> Result<()> {
            self.inner.instance_set_config(n, l, e, c, o)
        }
        fn instance_set_profile_devices(
            &self,
            n: &str,
            d: &vessel_api::ProfileDevices,
        ) -> Result<()> {
            self.inner.instance_set_profile_devices(n, d)
        }
        fn instance_set_limits(&self, n: &str, l: &vessel_api::Limits) -> Result<()> {
            self.inner.instance_set_limits(n, l)
        }
        fn instance_delete(&self, n: &str) -> Result<()> {
            self.inner.instance_delete(n)
        }
        fn instance_set_storage(&self, n: &str, p: Option<&str>) -> Result<()> {
            self.inner.instance_set_storage(n, p)
        }
        fn instance_rename(&self, o: &str, n: &str) -> Result<()> {
            self.inner.instance_rename(o, n)
        }
        fn instances_using_image(&self, f: &str) -> Result<Vec<String>> {
            self.inner.instances_using_image(f)
        }
        fn object_insert(&self, k: &str, key: &str, b: &str) -> Result<()> {
            self.inner.object_insert(k, key, b)
        }
        fn object_put(&self, k: &str, key: &str, b: &str) -> Result<()> {
            self.inner.object_put(k, key, b)
        }
        fn object_get(&self, k: &str, key: &str) -> Result<String> {
            self.inner.object_get(k, key)
        }
        fn object_list(&self, k: &str) -> Result<Vec<(String, String)>> {
            self.inner.object_list(k)
        }
        fn object_delete(&self, k: &str, key: &str) -> Result<()> {
            self.inner.object_delete(k, key)
        }
        fn operation_put(&self, op: &Operation) -> Result<()> {
            self.inner.operation_put(op)
        }
        fn operation_list(&self, l: usize) -> Result<Vec<Operation>> {
            self.inner.operation_list(l)
        }
        fn audit_append(&self, e: &vessel_api::AuditEntry) -> Result<i64> {
            self.inner.audit_append(e)
        }
        fn audit_list(
            &self,
            p: Option<&str>,
            s: Option<&str>,
            l: usize,
        ) -> Result<Vec<vessel_api::AuditEntry>> {
            self.inner.audit_list(p, s, l)
        }
        fn operations_fail_unfinished(&self, r: &str, n: &str) -> Result<Vec<Operation>> {
            self.inner.operations_fail_unfinished(r, n)
        }
    }

    #[tokio::test]
    async fn a_status_the_store_cannot_take_is_shown_and_recorded_later() {
        let dir = std::env::temp_dir().join(format!("vessel-status-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let disk = Arc::new(FullDisk {
            inner: SqliteStore::open(&dir.join("db")).unwrap(),
            full: AtomicBool::new(false),
        });
        let store: Arc<dyn Store> = disk.clone();
        let fp = "ab".repeat(32);
        store
            .image_insert(
                vessel_api::DEFAULT_PROJECT,
                &Image {
                    fingerprint: fp.clone(),
                    aliases: vec![],
                    source: "busybox".into(),
                    kind: vessel_api::ImageKind::Container,
                    size_bytes: 1,
                    layers: vec![],
                    command: vec!["sh".into()],
                    environment: vec![],
                    working_dir: None,
                    user: None,
                    exposed_ports: vec![],
                    stop_signal: "SIGTERM".into(),
                    created_at: "now".into(),
                    locations: Vec::new(),
                },
            )
            .unwrap();
        store
            .instance_insert(&Instance {
                project: None,
                name: "c1".into(),
                instance_type: InstanceType::Container,
                status: InstanceStatus::Starting,
                image: fp,
                privileged: false,
                limits: Default::default(),
                command: vec!["sh".into()],
                environment: Default::default(),
                config: Default::default(),
                profiles: Default::default(),
                own_config: Default::default(),
                from_profiles: Default::default(),
                ssh_keys: vec![],
                storage: None,
                created_at: "now".into(),
                last_exit_code: None,
                error: None,
                state: None,
                vm: None,
                root_disk: None,
                location: None,
                idmap: None,
                last_exit_reason: None,
                nics: Vec::new(),
                volumes: Vec::new(),
            })
            .unwrap();
        let pending = PendingStatus::default();
        disk.full.store(true, Ordering::SeqCst);
        pending.set(
            &store,
            "c1",
            InstanceStatus::Stopped,
            Some(1),
            Some("no space"),
        );
        // The store still says starting; what the service shows is the truth.
        assert_eq!(
            store.instance_get("c1").unwrap().status,
            InstanceStatus::Starting
        );
        let shown = pending.apply(store.instance_get("c1").unwrap());
        assert_eq!(shown.status, InstanceStatus::Stopped);
        assert_eq!(shown.last_exit_code, Some(1));
        // Space is back: the retry records it, and the override goes.
        disk.full.store(false, Ordering::SeqCst);
        tokio::time::sleep(RETRY * 3).await;
        assert_eq!(
            store.instance_get("c1").unwrap().status,
            InstanceStatus::Stopped
        );
        assert!(pending.changes().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
