//! The state store: every object the daemon keeps, behind one trait so that a cluster can swap
//! the embedded SQLite backend for etcd without touching the services.

mod idmap;
mod migrations;
mod record;
mod shared;
mod sqlite;
mod sqlite_rows;

pub use record::{decode, encode, Records};
pub use shared::{missed as profile_missed, Seed, SharedStore, PROFILE_MISSED};
pub use sqlite::SqliteStore;
use vessel_api::{AuditEntry, Image, Instance, InstanceIdmap, InstanceStatus, Operation};

/// Errors of the state store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database reported an error.
    #[error("state database: {0}")]
    Db(#[from] rusqlite::Error),
    /// A stored JSON column or object could not be read back.
    #[error("state database holds unreadable JSON in {what}")]
    Json {
        /// Which column or object.
        what: String,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
    /// A value could not be written as JSON.
    #[error("cannot encode {what} as JSON")]
    Encode {
        /// Which column or object.
        what: String,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
    /// The database was written by a newer Vessel.
    #[error(
        "state database schema version {found} is newer than this vesseld understands ({known}); \
         run a newer vesseld"
    )]
    TooNew {
        /// Version found.
        found: u32,
        /// Newest version this binary knows.
        known: u32,
    },
    /// An object with that key exists already.
    #[error("{0} already exists")]
    Exists(String),
    /// No object with that key.
    #[error("{0} not found")]
    NotFound(String),
    /// Nothing is left to allocate.
    #[error("{0}")]
    Exhausted(String),
    /// The store that holds the object does not answer (a cluster member's etcd).
    #[error("{0}")]
    Unavailable(String),
    /// The object changed since it was read (on another member).
    #[error("{0}")]
    Changed(String),
}

/// Where isolated host id ranges come from: ranges of `size` ids stacked above the shared
/// range that starts at `shared_base`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdPool {
    /// First host id of the shared range (the daemon's `--idmap-base`).
    pub shared_base: u32,
    /// Ids per range.
    pub size: u32,
}

/// Result of store calls.
pub type Result<T> = std::result::Result<T, StoreError>;

/// Persistent state of the daemon.
pub trait Store: Send + Sync {
    /// Adds an image, held by `project` with its aliases there; fails with
    /// [`StoreError::Exists`] when the image is stored already (then [`Store::image_hold`]).
    fn image_insert(&self, project: &str, image: &Image) -> Result<()>;
    /// Lets `project` hold a stored image too.
    fn image_hold(&self, project: &str, fingerprint: &str) -> Result<()>;
    /// The images `project` holds, with its aliases; every image (no aliases) for `None`.
    fn image_list(&self, project: Option<&str>) -> Result<Vec<Image>>;
    /// The image of `project` whose alias there or fingerprint is `key` (a fingerprint
    /// prefix of 12+ hex characters is enough when unique); for `None`, any stored image by
    /// fingerprint (no aliases).
    fn image_get(&self, project: Option<&str>, key: &str) -> Result<Image>;
    /// The projects holding an image.
    fn image_holders(&self, fingerprint: &str) -> Result<Vec<String>>;
    /// Ends `project`'s hold of an image and removes its aliases there; the image itself
    /// goes with its last holder (then `true`).
    fn image_release(&self, project: &str, fingerprint: &str) -> Result<bool>;
    /// Gives an image `project` holds an alias there, moving it if another image had it.
    fn image_alias_set(&self, project: &str, alias: &str, fingerprint: &str) -> Result<()>;
    /// Removes an alias of `project`; returns the fingerprint it named.
    fn image_alias_delete(&self, project: &str, alias: &str) -> Result<String>;

    /// Adds an instance (with the id range it names, if any); fails with
    /// [`StoreError::Exists`] for a taken name.
    fn instance_insert(&self, instance: &Instance) -> Result<()>;
    /// Adds an instance with a host id range of its own from `pool`, picked and recorded in
    /// one transaction so that concurrent creations never get the same range; the range is
    /// free again only once the row is deleted.
    fn instance_insert_isolated(&self, instance: &Instance, pool: IdPool) -> Result<InstanceIdmap>;
    /// Gives an instance stored without an id range (a VM made before VMs had host ids of
    /// their own) an isolated range of `pool`, picked and recorded in one transaction; an
    /// instance that has a range keeps it (and gets it back).
    fn instance_assign_isolated(&self, name: &str, pool: IdPool) -> Result<InstanceIdmap>;
    /// Records the id range of an instance stored without one (made before ranges were
    /// recorded).
    fn instance_set_idmap(&self, name: &str, idmap: &InstanceIdmap) -> Result<()>;
    /// Every instance (without live state).
    fn instance_list(&self) -> Result<Vec<Instance>>;
    /// One instance.
    fn instance_get(&self, name: &str) -> Result<Instance>;
    /// Sets an instance's status, exit code and error.
    fn instance_set_status(
        &self,
        name: &str,
        status: InstanceStatus,
        last_exit_code: Option<i32>,
        error: Option<&str>,
    ) -> Result<()>;
    /// Records how an instance's last run ended: its exit code (`None`: unknown, replacing the
    /// previous run's) and the reason in words (kept in the meta column).
    fn instance_set_exit(&self, name: &str, code: Option<i32>, reason: Option<&str>) -> Result<()>;
    /// Replaces an instance's limits (a container's root disk changed size).
    fn instance_set_limits(&self, name: &str, limits: &vessel_api::Limits) -> Result<()>;
    /// Replaces an instance's limits, environment and other configuration keys at once.
    fn instance_set_config(
        &self,
        name: &str,
        limits: &vessel_api::Limits,
        environment: &std::collections::BTreeMap<String, String>,
        config: &std::collections::BTreeMap<String, String>,
        own: &std::collections::BTreeMap<String, String>,
    ) -> Result<()>;
    /// Records the networks and volumes an instance's profiles gave it.
    fn instance_set_profile_devices(
        &self,
        name: &str,
        devices: &vessel_api::ProfileDevices,
    ) -> Result<()>;
    /// Removes an instance.
    fn instance_delete(&self, name: &str) -> Result<()>;
    /// Records the pool instance `name`'s root disk is in (`None`: its own directory).
    fn instance_set_storage(&self, name: &str, pool: Option<&str>) -> Result<()>;
    /// Gives instance `old` the name `new` (which no instance may have).
    fn instance_rename(&self, old: &str, new: &str) -> Result<()>;
    /// Names of the instances created from an image.
    fn instances_using_image(&self, fingerprint: &str) -> Result<Vec<String>>;

    /// Adds an object of `kind` (JSON `body`); fails with [`StoreError::Exists`] for a taken key.
    fn object_insert(&self, kind: &str, key: &str, body: &str) -> Result<()>;
    /// Inserts or replaces an object.
    fn object_put(&self, kind: &str, key: &str, body: &str) -> Result<()>;
    /// One object's body; [`StoreError::NotFound`] when absent.
    fn object_get(&self, kind: &str, key: &str) -> Result<String>;
    /// Every object of `kind` as (key, body), ordered by key.
    fn object_list(&self, kind: &str) -> Result<Vec<(String, String)>>;
    /// Removes an object (absent is fine).
    fn object_delete(&self, kind: &str, key: &str) -> Result<()>;
    /// One object's body and the version a conditional write compares against (`None`:
    /// this store keeps no versions of `kind`, and a write replaces whatever is there).
    fn object_get_versioned(&self, kind: &str, key: &str) -> Result<(String, Option<i64>)> {
        Ok((self.object_get(kind, key)?, None))
    }
    /// Replaces an object if it is still at `version` (as [`Store::object_get_versioned`]
    /// said; `None`: whatever is there): [`StoreError::Changed`] if it changed since.
    fn object_put_if(&self, kind: &str, key: &str, body: &str, version: Option<i64>) -> Result<()> {
        let _ = version;
        self.object_put(kind, key, body)
    }

    /// Appends one entry to the audit log (its `seq` is ignored); returns its position.
    fn audit_append(&self, entry: &AuditEntry) -> Result<i64>;
    /// The latest `limit` audit entries (of `project`, at or after `since`), oldest first.
    fn audit_list(
        &self,
        project: Option<&str>,
        since: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>>;

    /// Inserts or replaces an operation record.
    fn operation_put(&self, op: &Operation) -> Result<()>;
    /// Every recorded operation, newest first (at most `limit`).
    fn operation_list(&self, limit: usize) -> Result<Vec<Operation>>;
    /// Marks operations left pending or running by a previous daemon as failed.
    fn operations_fail_unfinished(&self, reason: &str, now: &str) -> Result<Vec<Operation>>;
}
