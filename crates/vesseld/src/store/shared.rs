//! The store of a cluster member: the embedded SQLite store, with the kinds of object every
//! member shares (projects, identities) kept in etcd.
//!
//! Outside a cluster every call goes to SQLite. In one, a write of a shared kind is a
//! compare-and-swap in etcd on the revision of the object as this member last saw it (a
//! change another member made meanwhile refuses it: read again and retry), and, once etcd
//! has it, is written to SQLite too; reads are answered from SQLite, which a watch on etcd
//! keeps current. So a member keeps answering reads through an etcd outage (writes of
//! shared kinds are refused until etcd answers again) and catches up from the watch, or by
//! reading everything again when the watch cannot resume.
//!
//! etcd is reached from a thread of its own with its own runtime: the store is called from
//! the daemon's runtime threads, which must not wait on tasks of that same runtime.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use vessel_api::{AuditEntry, Image, Instance, InstanceIdmap, InstanceStatus, Operation};
use vessel_cluster::{Cluster, Expect, ObjectChange, SharedObject};

use super::{IdPool, Result, Store, StoreError};

/// The kinds of object every member of a cluster shares. (Profiles are not among them: a
/// profile's change is applied to the instances using it, which only their member can do.)
pub const SHARED_KINDS: &[&str] = &["project", "identity"];

/// What a member new to the cluster's shared objects adds of its own where the cluster has
/// none of that kind and key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seed {
    /// Nothing: it has read them before.
    Nothing,
    /// Its projects (a server joining: its identities are replaced by the cluster's, so
    /// that joining grants nobody access to the other members).
    Projects,
    /// Every shared kind (the cluster's first member, or a member of a cluster made before
    /// its objects were shared).
    All,
}

impl Seed {
    fn kinds(self) -> &'static [&'static str] {
        match self {
            Seed::Nothing => &[],
            Seed::Projects => &["project"],
            Seed::All => SHARED_KINDS,
        }
    }
}

/// What an error of a write refused by the compare-and-swap says.
pub const CHANGED_MEANWHILE: &str = "changed on another member meanwhile";

/// How long connecting and reading everything may take before it is tried again.
const SESSION_WAIT: Duration = Duration::from_secs(10);

/// How long a write waits for etcd's answer.
const ANSWER_WAIT: Duration = Duration::from_secs(5);

/// Told the kind of each shared object another member changed (called on a thread of its
/// own, after the change is in SQLite).
pub type ChangeHook = Arc<dyn Fn(&str) + Send + Sync>;

fn shared(kind: &str) -> bool {
    SHARED_KINDS.contains(&kind)
}

fn unavailable(why: &str) -> StoreError {
    StoreError::Unavailable(format!(
        "projects and identities are the cluster's and etcd {why}; they can be read but not \
         changed until it answers again (see `vessel cluster info`)"
    ))
}

enum Op {
    Put {
        kind: String,
        key: String,
        body: String,
        expect: Expect,
    },
    Delete {
        kind: String,
        key: String,
        expect: Expect,
    },
}

struct Request {
    op: Op,
    /// Past it the caller has given up: the write is not made.
    deadline: std::time::Instant,
    reply: std::sync::mpsc::Sender<std::result::Result<Option<i64>, String>>,
}

/// What the member knows of the shared objects.
#[derive(Default)]
struct Known {
    /// The link to etcd while in a cluster.
    link: Option<tokio::sync::mpsc::UnboundedSender<Request>>,
    /// Whether the link has read everything and is watching.
    current: bool,
    /// Counts the links: a link that was replaced changes nothing any more.
    generation: u64,
    /// The revision that last wrote (or deleted) each shared object this member has seen.
    revisions: HashMap<(String, String), i64>,
}

struct Inner {
    local: Arc<dyn Store>,
    known: Mutex<Known>,
    /// The kinds changed by other members go to the hook's thread (one, in order).
    hook: OnceLock<std::sync::mpsc::Sender<BTreeSet<String>>>,
}

/// The daemon's store: see the module's documentation.
#[derive(Clone)]
pub struct SharedStore {
    inner: Arc<Inner>,
}

impl SharedStore {
    /// Over `local` (SQLite), outside any cluster until [`SharedStore::attach`].
    pub fn new(local: Arc<dyn Store>) -> Self {
        SharedStore {
            inner: Arc::new(Inner {
                local,
                known: Mutex::default(),
                hook: OnceLock::new(),
            }),
        }
    }

    fn known(&self) -> std::sync::MutexGuard<'_, Known> {
        self.inner.known.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Has `hook` told of the changes other members make, on a thread of its own (a hook
    /// may wait for a lock whose holder waits for the link).
    pub fn on_change(&self, hook: ChangeHook) {
        let (tx, rx) = std::sync::mpsc::channel::<BTreeSet<String>>();
        if self.inner.hook.set(tx).is_err() {
            return;
        }
        let spawned = std::thread::Builder::new()
            .name("vessel-shared-hook".into())
            .spawn(move || {
                while let Ok(mut kinds) = rx.recv() {
                    // What queued meanwhile is told once.
                    while let Ok(more) = rx.try_recv() {
                        kinds.extend(more);
                    }
                    for k in &kinds {
                        hook(k);
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "no thread for the shared objects' hook");
        }
    }

    /// Keeps the shared kinds in the etcd at `endpoints`, which must hold the cluster
    /// `cluster_id`, from now on (nothing if already): changes of them are refused until the
    /// link has read etcd's. `seed`: what this member adds of its own where the cluster has
    /// none (the cluster's win where both have one); `seeded` is called once that is done.
    pub fn attach(
        &self,
        endpoints: &[String],
        cluster_id: &str,
        seed: Seed,
        seeded: Box<dyn FnOnce() + Send>,
    ) {
        let mut known = self.known();
        if known.link.is_some() {
            return;
        }
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        known.link = Some(tx);
        known.current = false;
        known.generation += 1;
        let link = Link {
            endpoints: endpoints.to_vec(),
            cluster_id: cluster_id.to_string(),
            generation: known.generation,
        };
        drop(known);
        let me = self.clone();
        let spawned = std::thread::Builder::new()
            .name("vessel-shared".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(error = %e, "no runtime for the shared objects' link");
                        return;
                    }
                };
                rt.block_on(me.link(link, seed, seeded, rx));
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "no thread for the shared objects' link");
        }
    }

    /// Keeps every kind in SQLite only from now on (what is there stays).
    pub fn detach(&self) {
        let mut known = self.known();
        known.link = None;
        known.current = false;
        known.generation += 1;
        known.revisions.clear();
    }

    /// `None` outside a cluster; in one, whether this member reads etcd's current objects.
    pub fn current(&self) -> Option<bool> {
        let known = self.known();
        known.link.as_ref().map(|_| known.current)
    }

    /// Asks the link to write and waits for etcd's answer.
    fn ask(&self, op: Op) -> Result<Option<i64>> {
        let link = self.known().link.clone();
        let Some(link) = link else {
            return Err(unavailable("is not linked"));
        };
        let (reply, answer) = std::sync::mpsc::channel();
        let deadline = std::time::Instant::now() + ANSWER_WAIT;
        link.send(Request {
            op,
            deadline,
            reply,
        })
        .map_err(|_| unavailable("is not linked"))?;
        match answer.recv_timeout(ANSWER_WAIT + Duration::from_secs(1)) {
            Ok(Ok(rev)) => Ok(rev),
            Ok(Err(why)) => Err(unavailable(&why)),
            Err(_) => Err(unavailable(
                "did not answer in time (the change may have been made)",
            )),
        }
    }

    /// What a write of `(kind, key)` expects etcd to hold: what this member last saw.
    fn expected(&self, kind: &str, key: &str) -> Expect {
        let known = self.known();
        match known.revisions.get(&(kind.to_string(), key.to_string())) {
            Some(&rev) if self.inner.local.object_get(kind, key).is_ok() => Expect::Revision(rev),
            _ => Expect::Absent,
        }
    }

    fn linked(&self) -> bool {
        self.known().link.is_some()
    }

    fn changed_meanwhile(kind: &str, key: &str) -> StoreError {
        StoreError::Changed(format!(
            "{kind} {key:?} was {CHANGED_MEANWHILE}; read it again and retry"
        ))
    }

    /// Records in SQLite a write etcd holds at `rev`, unless a later one is known already.
    fn apply_put(&self, gen: u64, kind: &str, key: &str, body: &str, rev: i64) -> Result<bool> {
        let mut known = self.known();
        let id = (kind.to_string(), key.to_string());
        if known.generation != gen || known.revisions.get(&id).is_some_and(|&r| r >= rev) {
            return Ok(false);
        }
        self.inner.local.object_put(kind, key, body)?;
        known.revisions.insert(id, rev);
        Ok(true)
    }

    fn apply_delete(&self, gen: u64, kind: &str, key: &str, rev: i64) -> Result<bool> {
        let mut known = self.known();
        let id = (kind.to_string(), key.to_string());
        if known.generation != gen || known.revisions.get(&id).is_some_and(|&r| r >= rev) {
            return Ok(false);
        }
        self.inner.local.object_delete(kind, key)?;
        known.revisions.insert(id, rev);
        Ok(true)
    }

    /// Makes SQLite hold exactly what etcd held at `rev`; the kinds that changed.
    fn replace_all(
        &self,
        gen: u64,
        rev: i64,
        objects: Vec<SharedObject>,
    ) -> Result<BTreeSet<String>> {
        let mut changed = BTreeSet::new();
        let mut known = self.known();
        if known.generation != gen {
            return Ok(changed);
        }
        known.revisions.clear();
        for kind in SHARED_KINDS {
            let mut local: HashMap<String, String> =
                self.inner.local.object_list(kind)?.into_iter().collect();
            for o in objects.iter().filter(|o| o.kind == *kind) {
                if local.remove(&o.key).as_deref() != Some(o.body.as_str()) {
                    self.inner.local.object_put(kind, &o.key, &o.body)?;
                    changed.insert(kind.to_string());
                }
                known
                    .revisions
                    .insert((o.kind.clone(), o.key.clone()), o.revision);
            }
            for gone in local.into_keys() {
                self.inner.local.object_delete(kind, &gone)?;
                known.revisions.insert((kind.to_string(), gone), rev);
                changed.insert(kind.to_string());
            }
        }
        known.current = true;
        Ok(changed)
    }

    fn tell(&self, kinds: BTreeSet<String>) {
        if let (Some(hook), false) = (self.inner.hook.get(), kinds.is_empty()) {
            let _ = hook.send(kinds);
        }
    }

    /// Answers a write asked while etcd is out of reach, or ends the link (`false`) when
    /// the store let go of it.
    fn refuse(req: Option<Request>) -> bool {
        match req {
            Some(r) => {
                let _ = r.reply.send(Err("is out of reach".into()));
                true
            }
            None => false,
        }
    }

    /// Refuses the writes waiting for a connection whose callers are about to give up.
    fn expire(pending: &mut Vec<Request>) {
        let soon = std::time::Instant::now() + Duration::from_millis(300);
        let (gone, keep): (Vec<_>, Vec<_>) = pending.drain(..).partition(|r| r.deadline <= soon);
        *pending = keep;
        for r in gone {
            Self::refuse(Some(r));
        }
    }

    /// The link: connects, checks it is the cluster's etcd, adds this member's objects as
    /// `seed` says (once), reads everything, then answers writes and follows the watch;
    /// again from the start whenever etcd is lost or the watch cannot go on.
    async fn link(
        self,
        link: Link,
        mut seed: Seed,
        seeded: Box<dyn FnOnce() + Send>,
        mut rx: tokio::sync::mpsc::UnboundedReceiver<Request>,
    ) {
        let mut seeded = Some(seeded);
        let mut told = false;
        let mut pending: Vec<Request> = Vec::new();
        loop {
            self.known().current = false;
            let seeding = seed;
            let session = async {
                let cluster = Cluster::connect_for_watching(&link.endpoints).await?;
                let id = cluster.id().await?;
                if id.as_deref() != Some(link.cluster_id.as_str()) {
                    return Err(vessel_cluster::Error::Etcd(format!(
                        "it holds {}, not the cluster {} this server is a member of",
                        id.map_or("no cluster".to_string(), |i| format!("cluster {i}")),
                        link.cluster_id
                    )));
                }
                self.seed(&cluster, seeding).await?;
                let (rev, objects) = cluster.shared_objects().await?;
                let watch = cluster.watch_shared(rev + 1).await?;
                Ok::<_, vessel_cluster::Error>((cluster, rev, objects, watch))
            };
            // (Its calls have no timeout of their own: the connection's would end the watch.)
            let session = async {
                tokio::time::timeout(SESSION_WAIT, session)
                    .await
                    .unwrap_or_else(|_| {
                        Err(vessel_cluster::Error::Etcd(format!(
                            "no answer within {} s",
                            SESSION_WAIT.as_secs()
                        )))
                    })
            };
            // Writes asked meanwhile wait for it, as long as their callers do.
            tokio::pin!(session);
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            let connected = loop {
                tokio::select! {
                    r = &mut session => break r,
                    req = rx.recv() => match req {
                        Some(r) => pending.push(r),
                        None => return,
                    },
                    _ = tick.tick() => Self::expire(&mut pending),
                }
            };
            let (cluster, rev, objects, mut watch) = match connected {
                Ok(c) => c,
                Err(e) => {
                    for r in pending.drain(..) {
                        Self::refuse(Some(r));
                    }
                    if !told {
                        tracing::warn!(error = %e, "shared objects: etcd out of reach; retrying");
                        told = true;
                    }
                    let wait = tokio::time::sleep(Duration::from_secs(1));
                    tokio::pin!(wait);
                    loop {
                        tokio::select! {
                            _ = &mut wait => break,
                            req = rx.recv() => if !Self::refuse(req) { return },
                        }
                    }
                    continue;
                }
            };
            if seed != Seed::Nothing {
                seed = Seed::Nothing;
                if let Some(f) = seeded.take() {
                    f();
                }
            }
            told = false;
            match self.replace_all(link.generation, rev, objects) {
                Ok(kinds) => self.tell(kinds),
                Err(e) => {
                    tracing::error!(error = %e, "shared objects not copied into the store");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            }
            tracing::info!(revision = rev, "shared objects read from etcd; watching");
            for req in pending.drain(..) {
                if std::time::Instant::now() < req.deadline {
                    let answer = self
                        .write(&cluster, link.generation, req.op, req.deadline)
                        .await;
                    let _ = req.reply.send(answer);
                }
            }
            loop {
                tokio::select! {
                    req = rx.recv() => {
                        let Some(req) = req else { return };
                        if std::time::Instant::now() >= req.deadline {
                            // Its caller was told it failed: it must not happen after all.
                            continue;
                        }
                        let answer = self.write(&cluster, link.generation, req.op, req.deadline).await;
                        let _ = req.reply.send(answer);
                    }
                    changes = watch.changes() => match changes {
                        Ok(changes) => match self.apply(link.generation, changes) {
                            Ok(kinds) => self.tell(kinds),
                            Err(e) => {
                                tracing::error!(error = %e, "a shared object's change not stored; reading everything again");
                                break;
                            }
                        },
                        Err(e) => {
                            tracing::warn!(error = %e, "shared objects: watch lost; reading again");
                            break;
                        }
                    }
                }
                if self.known().generation != link.generation {
                    return;
                }
            }
        }
    }

    /// Applies the watch's changes to SQLite; the kinds that changed.
    fn apply(&self, gen: u64, changes: Vec<ObjectChange>) -> Result<BTreeSet<String>> {
        let mut kinds = BTreeSet::new();
        for c in changes {
            let (kind, applied) = match &c {
                ObjectChange::Put(o) if shared(&o.kind) => (
                    &o.kind,
                    self.apply_put(gen, &o.kind, &o.key, &o.body, o.revision)?,
                ),
                ObjectChange::Delete {
                    kind,
                    key,
                    revision,
                } if shared(kind) => (kind, self.apply_delete(gen, kind, key, *revision)?),
                _ => continue,
            };
            if applied {
                kinds.insert(kind.clone());
            }
        }
        Ok(kinds)
    }

    /// Adds this member's objects of the kinds `seed` names that the cluster lacks.
    async fn seed(&self, cluster: &Cluster, seed: Seed) -> vessel_cluster::Result<()> {
        for kind in seed.kinds() {
            let mine = self
                .inner
                .local
                .object_list(kind)
                .map_err(|e| vessel_cluster::Error::Etcd(format!("reading the store: {e}")))?;
            for (key, body) in mine {
                if cluster
                    .put_shared(kind, &key, &body, Expect::Absent)
                    .await?
                    .is_none()
                {
                    tracing::info!(
                        kind,
                        key,
                        "the cluster has its own; this member's copy goes"
                    );
                }
            }
        }
        Ok(())
    }

    /// One write in etcd, then in SQLite: its revision, `None` when etcd held something
    /// else than expected, `Err` when etcd did not answer before `deadline`.
    async fn write(
        &self,
        cluster: &Cluster,
        gen: u64,
        op: Op,
        deadline: std::time::Instant,
    ) -> std::result::Result<Option<i64>, String> {
        let deadline = tokio::time::Instant::from_std(deadline);
        let done = match &op {
            Op::Put {
                kind,
                key,
                body,
                expect,
            } => {
                tokio::time::timeout_at(deadline, cluster.put_shared(kind, key, body, *expect))
                    .await
            }
            Op::Delete { kind, key, expect } => {
                tokio::time::timeout_at(deadline, cluster.delete_shared(kind, key, *expect)).await
            }
        };
        let rev = match done {
            Ok(Ok(rev)) => rev,
            Ok(Err(e)) => return Err(format!("failed: {e}")),
            Err(_) => {
                return Err(format!(
                    "did not answer within {} s (the change may have been made)",
                    ANSWER_WAIT.as_secs()
                ))
            }
        };
        if let Some(rev) = rev {
            let stored = match &op {
                Op::Put {
                    kind, key, body, ..
                } => self.apply_put(gen, kind, key, body, rev),
                Op::Delete { kind, key, .. } => self.apply_delete(gen, kind, key, rev),
            };
            if let Err(e) = stored {
                return Err(format!(
                    "holds the change, but this member's store failed: {e}"
                ));
            }
        }
        Ok(rev)
    }
}

/// Where a link goes.
struct Link {
    endpoints: Vec<String>,
    cluster_id: String,
    generation: u64,
}

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
        let op = Op::Put {
            kind: kind.into(),
            key: key.into(),
            body: body.into(),
            expect: Expect::Absent,
        };
        match self.ask(op)? {
            Some(_) => Ok(()),
            None => Err(StoreError::Exists(format!("{kind} {key:?}"))),
        }
    }

    fn object_put(&self, kind: &str, key: &str, body: &str) -> Result<()> {
        if !shared(kind) || !self.linked() {
            return self.inner.local.object_put(kind, key, body);
        }
        let op = Op::Put {
            kind: kind.into(),
            key: key.into(),
            body: body.into(),
            expect: self.expected(kind, key),
        };
        match self.ask(op)? {
            Some(_) => Ok(()),
            None => Err(Self::changed_meanwhile(kind, key)),
        }
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
        let op = Op::Put {
            kind: kind.into(),
            key: key.into(),
            body: body.into(),
            expect,
        };
        match self.ask(op)? {
            Some(_) => Ok(()),
            None => Err(Self::changed_meanwhile(kind, key)),
        }
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
        match self.ask(op)? {
            Some(_) => Ok(()),
            None => Err(Self::changed_meanwhile(kind, key)),
        }
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

#[cfg(test)]
mod tests {
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
                ],
            )
            .unwrap();
        assert_eq!(
            changed.into_iter().collect::<Vec<_>>(),
            ["identity", "project"]
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
        assert_eq!(keys("profile"), ["mine"], "not a shared kind");
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
}
