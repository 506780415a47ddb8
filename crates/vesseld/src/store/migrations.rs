//! The SQLite store's schema, as the migrations that make it: a database at version `i`
//! (`PRAGMA user_version`) runs entries `i..` in order, each in its own transaction.

/// Schema migrations; entry `i` moves the schema from version `i` to `i + 1`.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: images, aliases, instances, operations.
    "CREATE TABLE images (
        fingerprint TEXT PRIMARY KEY,
        source TEXT NOT NULL,
        size_bytes INTEGER NOT NULL,
        command TEXT NOT NULL,
        stop_signal TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE image_aliases (
        alias TEXT PRIMARY KEY,
        fingerprint TEXT NOT NULL REFERENCES images(fingerprint) ON DELETE CASCADE
    );
    CREATE TABLE instances (
        name TEXT PRIMARY KEY,
        type TEXT NOT NULL,
        status TEXT NOT NULL,
        image TEXT NOT NULL REFERENCES images(fingerprint),
        privileged INTEGER NOT NULL,
        limits TEXT NOT NULL,
        command TEXT NOT NULL,
        environment TEXT NOT NULL,
        created_at TEXT NOT NULL,
        last_exit_code INTEGER,
        error TEXT
    );
    CREATE TABLE operations (
        id TEXT PRIMARY KEY,
        body TEXT NOT NULL,
        status TEXT NOT NULL,
        created_at TEXT NOT NULL
    );",
    // 2: image kind, layers and run configuration.
    "ALTER TABLE images ADD COLUMN meta TEXT NOT NULL DEFAULT '{}';",
    // 3: instance settings that grow (SSH keys for VM guests).
    "ALTER TABLE instances ADD COLUMN meta TEXT NOT NULL DEFAULT '{}';",
    // 4: every further kind of object (pools, volumes, exports, networks, ...) as JSON
    // bodies keyed by kind and name, so new kinds need no schema change (and map 1:1 onto
    // etcd keys in a cluster).
    "CREATE TABLE objects (
        kind TEXT NOT NULL,
        key TEXT NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (kind, key)
    );",
    // 5: each unprivileged container's host id range; an isolated range is one container's
    // only (the unique index is the last word on concurrent allocations). Rows from before
    // have none: the daemon records the shared base range for them at start.
    "ALTER TABLE instances ADD COLUMN idmap_base INTEGER;
    ALTER TABLE instances ADD COLUMN idmap_size INTEGER;
    ALTER TABLE instances ADD COLUMN idmap_isolated INTEGER NOT NULL DEFAULT 0;
    CREATE UNIQUE INDEX instances_idmap_isolated ON instances(idmap_base)
        WHERE idmap_isolated = 1;",
    // 6: the audit log: one row per change asked of the API, appended, never rewritten.
    "CREATE TABLE audit (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        time TEXT NOT NULL,
        identity TEXT NOT NULL,
        project TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        status INTEGER NOT NULL
    );
    CREATE INDEX audit_project_time ON audit(project, time);",
    // 7: images per project. An image's files are stored once (by fingerprint); each project
    // that has it holds it (`image_projects`), and aliases are a project's own. Everything
    // from before projects is `default`'s.
    "CREATE TABLE image_aliases_p (
        project TEXT NOT NULL,
        alias TEXT NOT NULL,
        fingerprint TEXT NOT NULL REFERENCES images(fingerprint) ON DELETE CASCADE,
        PRIMARY KEY (project, alias)
    );
    INSERT INTO image_aliases_p (project, alias, fingerprint)
        SELECT 'default', alias, fingerprint FROM image_aliases;
    DROP TABLE image_aliases;
    ALTER TABLE image_aliases_p RENAME TO image_aliases;
    CREATE TABLE image_projects (
        fingerprint TEXT NOT NULL REFERENCES images(fingerprint) ON DELETE CASCADE,
        project TEXT NOT NULL,
        PRIMARY KEY (fingerprint, project)
    );
    INSERT INTO image_projects (fingerprint, project) SELECT fingerprint, 'default' FROM images;",
];
