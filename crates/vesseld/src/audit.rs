//! The audit log: every change asked of the API (who, in which project, which endpoint, on
//! what, with what answer, when), appended to the store and never rewritten. Admins read all
//! of it; an operator reads its own project's.

use std::sync::Arc;

use vessel_api::{AuditEntry, Role};

use crate::auth::Caller;
use crate::error::{Error, Result};
use crate::store::Store;

/// Most entries one read returns.
pub const MAX_READ: usize = 10_000;

/// The audit log in the store.
#[derive(Clone)]
pub struct AuditLog {
    store: Arc<dyn Store>,
}

impl AuditLog {
    /// The log kept in `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        AuditLog { store }
    }

    /// Appends one change. A log that cannot be written is reported in the daemon's log; the
    /// answer already given stands.
    pub fn record(&self, caller: &Caller, action: &str, target: String, status: u16) {
        let entry = AuditEntry {
            seq: 0,
            time: crate::clock::now(),
            identity: caller.name.clone(),
            project: caller.project.clone(),
            action: action.into(),
            target,
            status,
        };
        if let Err(e) = self.store.audit_append(&entry) {
            tracing::error!(error = %e, ?entry, "cannot append to the audit log");
        }
    }

    /// What `caller` may read of the log: `project`'s entries (an operator's own project
    /// only), at or after `since`, the latest `limit`.
    pub fn read(
        &self,
        caller: &Caller,
        project: Option<&str>,
        since: Option<&str>,
        limit: Option<usize>,
    ) -> Result<Vec<AuditEntry>> {
        let project = match (caller.role, project) {
            (r, p) if r >= Role::Admin => p,
            (_, None) => Some(caller.project.as_str()),
            (_, Some(p)) if p == caller.project => Some(p),
            // Another project's log is as absent as the project.
            (_, Some(p)) => return Err(Error::not_found(format!("project {p:?} not found"))),
        };
        if let Some(t) = since {
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                .map_err(|e| {
                    Error::invalid(format!(
                        "since={t:?} is not an RFC 3339 time (e.g. 2026-12-03T10:00:00Z): {e}"
                    ))
                })?;
        }
        let limit = limit.unwrap_or(1000).min(MAX_READ);
        self.store
            .audit_list(project, since, limit)
            .map_err(|e| Error::internal(format!("reading the audit log: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;

    #[test]
    fn entries_are_appended_and_read_by_project_and_time() {
        let dir = std::env::temp_dir().join(format!("vessel-audit-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = AuditLog::new(Arc::new(SqliteStore::open(&dir.join("db")).unwrap()));
        let root = Caller::host_root();
        log.record(&root, "instances_create", "POST /1.0/instances".into(), 202);
        let mut op = Caller {
            name: "ops".into(),
            role: Role::Operator,
            ..Caller::host_root()
        };
        log.record(
            &op,
            "instance_delete",
            "DELETE /1.0/instances/web".into(),
            409,
        );
        let all = log.read(&root, None, None, None).unwrap();
        assert_eq!(all.len(), 2);
        assert!(all[0].seq < all[1].seq);
        assert_eq!((all[1].identity.as_str(), all[1].status), ("ops", 409));
        assert_eq!(
            log.read(&root, None, None, Some(1)).unwrap()[0].action,
            "instance_delete"
        );
        assert!(log
            .read(&root, None, Some("2999-01-01T00:00:00Z"), None)
            .unwrap()
            .is_empty());
        assert_eq!(log.read(&op, None, None, None).unwrap().len(), 2);
        assert!(log
            .read(&root, Some("other"), None, None)
            .unwrap()
            .is_empty());
        assert!(log.read(&root, None, Some("yesterday"), None).is_err());
        op.project = "other".into();
        assert!(log.read(&op, None, None, None).unwrap().is_empty());
        assert_eq!(
            log.read(&op, Some("default"), None, None).unwrap_err().kind,
            crate::error::ErrorKind::NotFound
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
