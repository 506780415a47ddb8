//! The store's calls on a [`SharedStore`]: SQLite's, but for the writes of the shared kinds
//! while linked (etcd first) and versioned reads.

use vessel_api::{AuditEntry, Image, Instance, InstanceIdmap, InstanceStatus, Operation};
use vessel_cluster::Expect;

use super::{shared, Op, SharedStore};
use crate::store::{IdPool, Result, Store, StoreError};

impl Store for SharedStore {
    fn image_insert(&self, project: &str, image: &Image) -> Result<()> {
        self.inner.local.image_insert(project, image)
    }
    fn image_hold(&self, project: &str, fingerprint: &str) -> Result<()> {
        self.inner.local.image_hold(project, fingerprint)
    }
    fn image_list(&self, project: Option<&str>) -> Result<Vec<Image>> {
        self.inner.local.image_list(project)
    }
    fn image_get(&self, project: Option<&str>, key: &str) -> Result<Image> {
        self.inner.local.image_get(project, key)
    }
    fn image_holders(&self, fingerprint: &str) -> Result<Vec<String>> {
        self.inner.local.image_holders(fingerprint)
    }
    fn image_release(&self, project: &str, fingerprint: &str) -> Result<bool> {
        self.inner.local.image_release(project, fingerprint)
    }
    fn image_alias_set(&self, project: &str, alias: &str, fingerprint: &str) -> Result<()> {
        self.inner
            .local
            .image_alias_set(project, alias, fingerprint)
    }
    fn image_alias_delete(&self, project: &str, alias: &str) -> Result<String> {
        self.inner.local.image_alias_delete(project, alias)
    }
    fn instance_insert(&self, instance: &Instance) -> Result<()> {
        self.inner.local.instance_insert(instance)
    }
    fn instance_insert_isolated(&self, instance: &Instance, pool: IdPool) -> Result<InstanceIdmap> {
        self.inner.local.instance_insert_isolated(instance, pool)
    }
    fn instance_assign_isolated(&self, name: &str, pool: IdPool) -> Result<InstanceIdmap> {
        self.inner.local.instance_assign_isolated(name, pool)
    }
    fn instance_set_idmap(&self, name: &str, idmap: &InstanceIdmap) -> Result<()> {
        self.inner.local.instance_set_idmap(name, idmap)
    }
    fn instance_list(&self) -> Result<Vec<Instance>> {
        self.inner.local.instance_list()
    }
    fn instance_get(&self, name: &str) -> Result<Instance> {
        self.inner.local.instance_get(name)
    }
    fn instance_set_status(
        &self,
        name: &str,
        status: InstanceStatus,
        last_exit_code: Option<i32>,
        error: Option<&str>,
    ) -> Result<()> {
        self.inner
            .local
            .instance_set_status(name, status, last_exit_code, error)
    }
    fn instance_set_exit(&self, name: &str, code: Option<i32>, reason: Option<&str>) -> Result<()> {
        self.inner.local.instance_set_exit(name, code, reason)
    }
    fn instance_set_limits(&self, name: &str, limits: &vessel_api::Limits) -> Result<()> {
        self.inner.local.instance_set_limits(name, limits)
    }
    fn instance_set_config(
        &self,
        name: &str,
        limits: &vessel_api::Limits,
        environment: &std::collections::BTreeMap<String, String>,
        config: &std::collections::BTreeMap<String, String>,
        own: &std::collections::BTreeMap<String, String>,
    ) -> Result<()> {
        self.inner
            .local
            .instance_set_config(name, limits, environment, config, own)
    }
    fn instance_set_profile_devices(
        &self,
        name: &str,
        devices: &vessel_api::ProfileDevices,
    ) -> Result<()> {
        self.inner.local.instance_set_profile_devices(name, devices)
    }
    fn instance_delete(&self, name: &str) -> Result<()> {
        self.inner.local.instance_delete(name)
    }
    fn instance_set_storage(&self, name: &str, pool: Option<&str>) -> Result<()> {
        self.inner.local.instance_set_storage(name, pool)
    }
    fn instance_rename(&self, old: &str, new: &str) -> Result<()> {
        self.inner.local.instance_rename(old, new)
    }
    fn instances_using_image(&self, fingerprint: &str) -> Result<Vec<String>> {
        self.inner.local.instances_using_image(fingerprint)
    }

    fn object_insert(&self, kind: &str, key: &str, body: &str) -> Result<()> {
        if !shared(kind) || !self.linked() {
            return self.inner.local.object_insert(kind, key, body);
        }
        let exists = StoreError::Exists(format!("{kind} {key:?}"));
        self.put_shared(kind, key, body, Expect::Absent, exists)
    }

    fn object_put(&self, kind: &str, key: &str, body: &str) -> Result<()> {
        if !shared(kind) || !self.linked() {
            return self.inner.local.object_put(kind, key, body);
        }
        let expect = self.expected(kind, key);
        self.put_shared(kind, key, body, expect, Self::changed_meanwhile(kind, key))
    }

    fn object_get(&self, kind: &str, key: &str) -> Result<String> {
        self.inner.local.object_get(kind, key)
    }

    fn object_get_versioned(&self, kind: &str, key: &str) -> Result<(String, Option<i64>)> {
        // Body and revision read together: the link writes both under this lock.
        let known = self.known();
        let body = self.inner.local.object_get(kind, key)?;
        let version = if shared(kind) && known.link.is_some() {
            known
                .revisions
                .get(&(kind.to_string(), key.to_string()))
                .copied()
        } else {
            None
        };
        Ok((body, version))
    }

    fn object_put_if(&self, kind: &str, key: &str, body: &str, version: Option<i64>) -> Result<()> {
        if !shared(kind) || !self.linked() {
            return self.inner.local.object_put(kind, key, body);
        }
        let expect = match version {
            Some(v) => Expect::Revision(v),
            None => Expect::Absent,
        };
        self.put_shared(kind, key, body, expect, Self::changed_meanwhile(kind, key))
    }

    fn object_list(&self, kind: &str) -> Result<Vec<(String, String)>> {
        self.inner.local.object_list(kind)
    }

    fn object_delete(&self, kind: &str, key: &str) -> Result<()> {
        if !shared(kind) || !self.linked() {
            return self.inner.local.object_delete(kind, key);
        }
        let expect = match self.expected(kind, key) {
            Expect::Absent => Expect::Any,
            e => e,
        };
        let op = Op::Delete {
            kind: kind.into(),
            key: key.into(),
            expect,
        };
        self.done(op, Self::changed_meanwhile(kind, key))
    }

    fn audit_append(&self, entry: &AuditEntry) -> Result<i64> {
        self.inner.local.audit_append(entry)
    }
    fn audit_list(
        &self,
        project: Option<&str>,
        since: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>> {
        self.inner.local.audit_list(project, since, limit)
    }
    fn operation_put(&self, op: &Operation) -> Result<()> {
        self.inner.local.operation_put(op)
    }
    fn operation_list(&self, limit: usize) -> Result<Vec<Operation>> {
        self.inner.local.operation_list(limit)
    }
    fn operations_fail_unfinished(&self, reason: &str, now: &str) -> Result<Vec<Operation>> {
        self.inner.local.operations_fail_unfinished(reason, now)
    }
}
