//! Embedded SQLite backend of the state store: WAL journal, versioned migrations.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};
use vessel_api::{
    AuditEntry, Image, ImageKind, Instance, InstanceIdmap, InstanceStatus, Operation,
    OperationStatus,
};

use super::{decode, encode, IdPool, Result, Store, StoreError};

use super::migrations::MIGRATIONS;
use super::sqlite_rows::{
    free_range, insert_instance, instance_from_cols, instance_from_row, InstanceMeta,
    INSTANCE_COLUMNS,
};

/// Image fields kept as one JSON column.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct ImageMeta {
    #[serde(default)]
    kind: ImageKind,
    #[serde(default)]
    layers: Vec<String>,
    #[serde(default)]
    environment: Vec<String>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    exposed_ports: Vec<String>,
}

/// The SQLite store.
pub struct SqliteStore {
    conn: Mutex<Connection>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and migrates it to the current schema.
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let store = Self {
            conn: Mutex::new(conn),
        };
        store.migrate()?;
        Ok(store)
    }

    /// Schema version of the open database.
    #[cfg(test)]
    pub fn schema_version(&self) -> Result<u32> {
        let conn = self.lock();
        Ok(conn.pragma_query_value(None, "user_version", |r| r.get(0))?)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (transactions roll back),
        // so a poisoned lock is still usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn migrate(&self) -> Result<()> {
        let mut conn = self.lock();
        let version: u32 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let known = MIGRATIONS.len() as u32;
        if version > known {
            return Err(StoreError::TooNew {
                found: version,
                known,
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as u32)?;
            tx.commit()?;
            tracing::info!(version = i + 1, "migrated state database");
        }
        Ok(())
    }

    /// `project`'s aliases of an image (none for `None`).
    fn aliases(conn: &Connection, project: Option<&str>, fingerprint: &str) -> Result<Vec<String>> {
        let Some(project) = project else {
            return Ok(Vec::new());
        };
        let mut stmt = conn.prepare_cached(
            "SELECT alias FROM image_aliases WHERE project = ? AND fingerprint = ? ORDER BY alias",
        )?;
        let rows = stmt.query_map([project, fingerprint], |r| r.get(0))?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// An image with `project`'s aliases of it.
    fn image_row(
        conn: &Connection,
        project: Option<&str>,
        fingerprint: &str,
    ) -> Result<Option<Image>> {
        let row = conn
            .query_row(
                "SELECT fingerprint, source, size_bytes, command, stop_signal, created_at, meta
                 FROM images WHERE fingerprint = ?",
                [fingerprint],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, String>(5)?,
                        r.get::<_, String>(6)?,
                    ))
                },
            )
            .optional()?;
        let Some((fingerprint, source, size, command, stop_signal, created_at, meta)) = row else {
            return Ok(None);
        };
        let meta: ImageMeta = decode("images.meta", &meta)?;
        Ok(Some(Image {
            aliases: Self::aliases(conn, project, &fingerprint)?,
            fingerprint,
            source,
            kind: meta.kind,
            size_bytes: size as u64,
            layers: meta.layers,
            command: decode("images.command", &command)?,
            environment: meta.environment,
            working_dir: meta.working_dir,
            user: meta.user,
            exposed_ports: meta.exposed_ports,
            stop_signal,
            created_at,
            locations: Vec::new(),
        }))
    }
}

impl Store for SqliteStore {
    fn image_insert(&self, project: &str, image: &Image) -> Result<()> {
        let command = encode("images.command", &image.command)?;
        let meta = encode(
            "images.meta",
            &ImageMeta {
                kind: image.kind,
                layers: image.layers.clone(),
                environment: image.environment.clone(),
                working_dir: image.working_dir.clone(),
                user: image.user.clone(),
                exposed_ports: image.exposed_ports.clone(),
            },
        )?;
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO images (fingerprint, source, size_bytes, command, stop_signal, created_at,
             meta) VALUES (?, ?, ?, ?, ?, ?, ?)",
            params![
                image.fingerprint,
                image.source,
                image.size_bytes as i64,
                command,
                image.stop_signal,
                image.created_at,
                meta
            ],
        )
        .map_err(|e| match e {
            rusqlite::Error::SqliteFailure(f, _)
                if f.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                StoreError::Exists(format!("image {}", image.fingerprint))
            }
            e => e.into(),
        })?;
        tx.execute(
            "INSERT INTO image_projects (fingerprint, project) VALUES (?, ?)",
            params![image.fingerprint, project],
        )?;
        for alias in &image.aliases {
            tx.execute(
                "INSERT OR REPLACE INTO image_aliases (project, alias, fingerprint)
                 VALUES (?, ?, ?)",
                params![project, alias, image.fingerprint],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    fn image_hold(&self, project: &str, fingerprint: &str) -> Result<()> {
        let conn = self.lock();
        conn.execute(
            "INSERT OR IGNORE INTO image_projects (fingerprint, project) VALUES (?, ?)",
            params![fingerprint, project],
        )
        .map_err(|e| match e {
            rusqlite::Error::SqliteFailure(f, _)
                if f.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                StoreError::NotFound(format!("image {fingerprint}"))
            }
            e => e.into(),
        })?;
        Ok(())
    }

    fn image_list(&self, project: Option<&str>) -> Result<Vec<Image>> {
        let conn = self.lock();
        let fps: Vec<String> = match project {
            Some(p) => conn
                .prepare(
                    "SELECT i.fingerprint FROM images i JOIN image_projects p
                     ON p.fingerprint = i.fingerprint WHERE p.project = ? ORDER BY i.created_at",
                )?
                .query_map([p], |r| r.get(0))?
                .collect::<std::result::Result<_, _>>()?,
            None => conn
                .prepare("SELECT fingerprint FROM images ORDER BY created_at")?
                .query_map([], |r| r.get(0))?
                .collect::<std::result::Result<_, _>>()?,
        };
        fps.iter()
            .filter_map(|fp| Self::image_row(&conn, project, fp).transpose())
            .collect()
    }

    fn image_get(&self, project: Option<&str>, key: &str) -> Result<Image> {
        let conn = self.lock();
        let by_alias: Option<String> = match project {
            Some(p) => conn
                .query_row(
                    "SELECT fingerprint FROM image_aliases WHERE project = ? AND alias = ?",
                    [p, key],
                    |r| r.get(0),
                )
                .optional()?,
            None => None,
        };
        let fp = match by_alias {
            Some(fp) => Some(fp),
            None if key.len() >= 12 && key.chars().all(|c| c.is_ascii_hexdigit()) => {
                let prefix = format!("{}%", key.to_ascii_lowercase());
                let hits: Vec<String> = match project {
                    Some(p) => conn
                        .prepare(
                            "SELECT fingerprint FROM image_projects
                             WHERE project = ? AND fingerprint LIKE ? LIMIT 2",
                        )?
                        .query_map([p, prefix.as_str()], |r| r.get(0))?
                        .collect::<std::result::Result<_, _>>()?,
                    None => conn
                        .prepare("SELECT fingerprint FROM images WHERE fingerprint LIKE ? LIMIT 2")?
                        .query_map([prefix.as_str()], |r| r.get(0))?
                        .collect::<std::result::Result<_, _>>()?,
                };
                (hits.len() == 1).then(|| hits[0].clone())
            }
            None => None,
        };
        fp.and_then(|fp| Self::image_row(&conn, project, &fp).transpose())
            .unwrap_or_else(|| Err(StoreError::NotFound(format!("image {key:?}"))))
    }

    fn image_holders(&self, fingerprint: &str) -> Result<Vec<String>> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare("SELECT project FROM image_projects WHERE fingerprint = ? ORDER BY project")?;
        let rows = stmt.query_map([fingerprint], |r| r.get(0))?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    fn image_release(&self, project: &str, fingerprint: &str) -> Result<bool> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let n = tx.execute(
            "DELETE FROM image_projects WHERE project = ? AND fingerprint = ?",
            [project, fingerprint],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("image {fingerprint}")));
        }
        tx.execute(
            "DELETE FROM image_aliases WHERE project = ? AND fingerprint = ?",
            [project, fingerprint],
        )?;
        let left: i64 = tx.query_row(
            "SELECT COUNT(*) FROM image_projects WHERE fingerprint = ?",
            [fingerprint],
            |r| r.get(0),
        )?;
        if left == 0 {
            tx.execute("DELETE FROM images WHERE fingerprint = ?", [fingerprint])?;
        }
        tx.commit()?;
        Ok(left == 0)
    }

    fn image_alias_set(&self, project: &str, alias: &str, fingerprint: &str) -> Result<()> {
        let conn = self.lock();
        conn.execute(
            "INSERT OR REPLACE INTO image_aliases (project, alias, fingerprint) VALUES (?, ?, ?)",
            params![project, alias, fingerprint],
        )?;
        Ok(())
    }

    fn image_alias_delete(&self, project: &str, alias: &str) -> Result<String> {
        let conn = self.lock();
        let fp: Option<String> = conn
            .query_row(
                "SELECT fingerprint FROM image_aliases WHERE project = ? AND alias = ?",
                [project, alias],
                |r| r.get(0),
            )
            .optional()?;
        let fp = fp.ok_or_else(|| StoreError::NotFound(format!("image alias {alias:?}")))?;
        conn.execute(
            "DELETE FROM image_aliases WHERE project = ? AND alias = ?",
            [project, alias],
        )?;
        Ok(fp)
    }

    fn instance_insert(&self, i: &Instance) -> Result<()> {
        let conn = self.lock();
        insert_instance(&conn, i)
    }

    fn instance_insert_isolated(&self, i: &Instance, pool: IdPool) -> Result<InstanceIdmap> {
        let mut conn = self.lock();
        // IMMEDIATE: the ranges read are the ones still there when the row goes in.
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let idmap = free_range(&tx, pool)?;
        insert_instance(
            &tx,
            &Instance {
                idmap: Some(idmap),
                ..i.clone()
            },
        )?;
        tx.commit()?;
        Ok(idmap)
    }

    fn instance_assign_isolated(&self, name: &str, pool: IdPool) -> Result<InstanceIdmap> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let idmap = free_range(&tx, pool)?;
        let n = tx.execute(
            "UPDATE instances SET idmap_base = ?, idmap_size = ?, idmap_isolated = 1
             WHERE name = ? AND idmap_base IS NULL",
            params![idmap.host_base, idmap.size, name],
        )?;
        if n == 0 {
            // Gone, or it has a range already (which it keeps).
            let kept = tx
                .query_row(
                    "SELECT idmap_base, idmap_size, idmap_isolated FROM instances WHERE name = ?",
                    [name],
                    |r| {
                        Ok(InstanceIdmap {
                            host_base: r.get(0)?,
                            size: r.get(1)?,
                            isolated: r.get(2)?,
                        })
                    },
                )
                .optional()?;
            return kept.ok_or_else(|| StoreError::NotFound(format!("instance {name:?}")));
        }
        tx.commit()?;
        Ok(idmap)
    }

    fn instance_set_idmap(&self, name: &str, idmap: &InstanceIdmap) -> Result<()> {
        let conn = self.lock();
        let n = conn.execute(
            "UPDATE instances SET idmap_base = ?, idmap_size = ?, idmap_isolated = ? WHERE name = ?",
            params![idmap.host_base, idmap.size, idmap.isolated, name],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("instance {name:?}")));
        }
        Ok(())
    }

    fn instance_list(&self) -> Result<Vec<Instance>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(&format!(
            "SELECT {INSTANCE_COLUMNS} FROM instances ORDER BY name"
        ))?;
        let rows: Vec<_> = stmt
            .query_map([], instance_from_row)?
            .collect::<std::result::Result<_, _>>()?;
        rows.into_iter().map(instance_from_cols).collect()
    }

    fn instance_get(&self, name: &str) -> Result<Instance> {
        let conn = self.lock();
        let row = conn
            .query_row(
                &format!("SELECT {INSTANCE_COLUMNS} FROM instances WHERE name = ?"),
                [name],
                instance_from_row,
            )
            .optional()?;
        match row {
            Some(c) => instance_from_cols(c),
            None => Err(StoreError::NotFound(format!("instance {name:?}"))),
        }
    }

    fn instance_set_status(
        &self,
        name: &str,
        status: InstanceStatus,
        last_exit_code: Option<i32>,
        error: Option<&str>,
    ) -> Result<()> {
        let conn = self.lock();
        let n = conn.execute(
            "UPDATE instances SET status = ?, last_exit_code = COALESCE(?, last_exit_code),
             error = ? WHERE name = ?",
            params![status.as_str(), last_exit_code, error, name],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("instance {name:?}")));
        }
        Ok(())
    }

    fn instance_set_exit(&self, name: &str, code: Option<i32>, reason: Option<&str>) -> Result<()> {
        let conn = self.lock();
        let meta: Option<String> = conn
            .query_row("SELECT meta FROM instances WHERE name = ?", [name], |r| {
                r.get(0)
            })
            .optional()?;
        let Some(meta) = meta else {
            return Err(StoreError::NotFound(format!("instance {name:?}")));
        };
        let mut meta: InstanceMeta = decode("instances.meta", &meta)?;
        meta.last_exit_reason = reason.map(str::to_string);
        let meta = encode("instances.meta", &meta)?;
        conn.execute(
            "UPDATE instances SET last_exit_code = ?, meta = ? WHERE name = ?",
            params![code, meta, name],
        )?;
        Ok(())
    }

    fn instance_set_limits(&self, name: &str, limits: &vessel_api::Limits) -> Result<()> {
        let limits = encode("instances.limits", limits)?;
        let conn = self.lock();
        let n = conn.execute(
            "UPDATE instances SET limits = ? WHERE name = ?",
            params![limits, name],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("instance {name:?}")));
        }
        Ok(())
    }

    fn instance_set_config(
        &self,
        name: &str,
        limits: &vessel_api::Limits,
        environment: &std::collections::BTreeMap<String, String>,
        config: &std::collections::BTreeMap<String, String>,
        own: &std::collections::BTreeMap<String, String>,
    ) -> Result<()> {
        let limits = encode("instances.limits", limits)?;
        let environment = encode("instances.environment", environment)?;
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let meta: Option<String> = tx
            .query_row("SELECT meta FROM instances WHERE name = ?", [name], |r| {
                r.get(0)
            })
            .optional()?;
        let Some(meta) = meta else {
            return Err(StoreError::NotFound(format!("instance {name:?}")));
        };
        let mut meta: InstanceMeta = decode("instances.meta", &meta)?;
        meta.config = config.clone();
        meta.own_config = own.clone();
        let meta = encode("instances.meta", &meta)?;
        tx.execute(
            "UPDATE instances SET limits = ?, environment = ?, meta = ? WHERE name = ?",
            params![limits, environment, meta, name],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn instance_set_profile_devices(
        &self,
        name: &str,
        devices: &vessel_api::ProfileDevices,
    ) -> Result<()> {
        let conn = self.lock();
        let meta: Option<String> = conn
            .query_row("SELECT meta FROM instances WHERE name = ?", [name], |r| {
                r.get(0)
            })
            .optional()?;
        let Some(meta) = meta else {
            return Err(StoreError::NotFound(format!("instance {name:?}")));
        };
        let mut meta: InstanceMeta = decode("instances.meta", &meta)?;
        meta.from_profiles = devices.clone();
        let meta = encode("instances.meta", &meta)?;
        conn.execute(
            "UPDATE instances SET meta = ? WHERE name = ?",
            params![meta, name],
        )?;
        Ok(())
    }

    fn instance_delete(&self, name: &str) -> Result<()> {
        let conn = self.lock();
        conn.execute("DELETE FROM instances WHERE name = ?", [name])?;
        Ok(())
    }

    fn instance_set_storage(&self, name: &str, pool: Option<&str>) -> Result<()> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let meta: Option<String> = tx
            .query_row("SELECT meta FROM instances WHERE name = ?", [name], |r| {
                r.get(0)
            })
            .optional()?;
        let Some(meta) = meta else {
            return Err(StoreError::NotFound(format!("instance {name:?}")));
        };
        let mut meta: InstanceMeta = decode("instances.meta", &meta)?;
        meta.storage = pool.map(str::to_string);
        let meta = encode("instances.meta", &meta)?;
        tx.execute(
            "UPDATE instances SET meta = ? WHERE name = ?",
            params![meta, name],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn instance_rename(&self, old: &str, new: &str) -> Result<()> {
        let conn = self.lock();
        match conn.execute("UPDATE instances SET name = ? WHERE name = ?", [new, old]) {
            Ok(0) => Err(StoreError::NotFound(format!("instance {old}"))),
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(StoreError::Exists(format!("instance {new}")))
            }
            Err(e) => Err(e.into()),
        }
    }

    fn object_insert(&self, kind: &str, key: &str, body: &str) -> Result<()> {
        let conn = self.lock();
        match conn.execute(
            "INSERT INTO objects (kind, key, body) VALUES (?, ?, ?)",
            [kind, key, body],
        ) {
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(StoreError::Exists(format!("{kind} {key:?}")))
            }
            Err(e) => Err(e.into()),
        }
    }

    fn object_put(&self, kind: &str, key: &str, body: &str) -> Result<()> {
        let conn = self.lock();
        conn.execute(
            "INSERT INTO objects (kind, key, body) VALUES (?, ?, ?)
             ON CONFLICT (kind, key) DO UPDATE SET body = excluded.body",
            [kind, key, body],
        )?;
        Ok(())
    }

    fn object_get(&self, kind: &str, key: &str) -> Result<String> {
        let conn = self.lock();
        conn.query_row(
            "SELECT body FROM objects WHERE kind = ? AND key = ?",
            [kind, key],
            |r| r.get(0),
        )
        .optional()?
        .ok_or_else(|| StoreError::NotFound(format!("{kind} {key:?}")))
    }

    fn object_list(&self, kind: &str) -> Result<Vec<(String, String)>> {
        let conn = self.lock();
        let mut stmt = conn.prepare("SELECT key, body FROM objects WHERE kind = ? ORDER BY key")?;
        let rows = stmt
            .query_map([kind], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<std::result::Result<_, _>>()?;
        Ok(rows)
    }

    fn object_delete(&self, kind: &str, key: &str) -> Result<()> {
        let conn = self.lock();
        conn.execute(
            "DELETE FROM objects WHERE kind = ? AND key = ?",
            [kind, key],
        )?;
        Ok(())
    }

    fn instances_using_image(&self, fingerprint: &str) -> Result<Vec<String>> {
        let conn = self.lock();
        let mut stmt = conn.prepare("SELECT name FROM instances WHERE image = ? ORDER BY name")?;
        let names = stmt
            .query_map([fingerprint], |r| r.get(0))?
            .collect::<std::result::Result<_, _>>()?;
        Ok(names)
    }

    fn audit_append(&self, e: &AuditEntry) -> Result<i64> {
        let conn = self.lock();
        conn.execute(
            "INSERT INTO audit (time, identity, project, action, target, status)
             VALUES (?, ?, ?, ?, ?, ?)",
            params![e.time, e.identity, e.project, e.action, e.target, e.status],
        )?;
        Ok(conn.last_insert_rowid())
    }

    fn audit_list(
        &self,
        project: Option<&str>,
        since: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT seq, time, identity, project, action, target, status FROM (
                SELECT * FROM audit
                WHERE (?1 IS NULL OR project = ?1) AND (?2 IS NULL OR time >= ?2)
                ORDER BY seq DESC LIMIT ?3
             ) ORDER BY seq",
        )?;
        let rows = stmt
            .query_map(params![project, since, limit as i64], |r| {
                Ok(AuditEntry {
                    seq: r.get(0)?,
                    time: r.get(1)?,
                    identity: r.get(2)?,
                    project: r.get(3)?,
                    action: r.get(4)?,
                    target: r.get(5)?,
                    status: r.get(6)?,
                })
            })?
            .collect::<std::result::Result<_, _>>()?;
        Ok(rows)
    }

    fn operation_put(&self, op: &Operation) -> Result<()> {
        let body = encode("operations.body", op)?;
        let status = encode("operations.status", &op.status)?;
        let conn = self.lock();
        conn.execute(
            "INSERT OR REPLACE INTO operations (id, body, status, created_at) VALUES (?, ?, ?, ?)",
            params![op.id, body, status, op.created_at],
        )?;
        Ok(())
    }

    fn operation_list(&self, limit: usize) -> Result<Vec<Operation>> {
        let conn = self.lock();
        let mut stmt =
            conn.prepare("SELECT body FROM operations ORDER BY created_at DESC, id LIMIT ?")?;
        let bodies: Vec<String> = stmt
            .query_map([limit as i64], |r| r.get(0))?
            .collect::<std::result::Result<_, _>>()?;
        bodies
            .iter()
            .map(|b| decode("operations.body", b))
            .collect()
    }

    fn operations_fail_unfinished(&self, reason: &str, now: &str) -> Result<Vec<Operation>> {
        let unfinished: Vec<Operation> = self
            .operation_list(usize::MAX >> 1)?
            .into_iter()
            .filter(|o| !o.status.is_final())
            .collect();
        let mut failed = Vec::new();
        for mut op in unfinished {
            op.status = OperationStatus::Failure;
            op.error = Some(reason.to_string());
            op.may_cancel = false;
            op.updated_at = now.to_string();
            self.operation_put(&op)?;
            failed.push(op);
        }
        Ok(failed)
    }
}

#[cfg(test)]
#[path = "sqlite_tests.rs"]
mod tests;
