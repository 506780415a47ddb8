//! The store of a cluster member: the embedded SQLite store, with the kinds of object every
//! member shares (projects, identities, profiles) kept in etcd.
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

use vessel_cluster::{Cluster, Expect, ObjectChange, SharedObject};

use super::{Result, Store, StoreError};

/// The kinds of object every member of a cluster shares. (A profile's change reaches the
/// instances using it through each one's member: `cluster/profiles.rs`.)
pub const SHARED_KINDS: &[&str] = &["project", "identity", "profile"];

/// This member's own kind (never shared) of the notes that its instances using a profile
/// may have missed changes of it: the key `PROFILE/ID`, the body what they had of it (a
/// profile's record as the store keeps it; one note per distinct content). Kept until
/// the instances here have taken the profile as it is now (`api/profile_catch_up.rs`).
pub const PROFILE_MISSED: &str = "profile-missed";

/// What a member new to the cluster's shared objects adds of its own where the cluster has
/// none of that kind and key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seed {
    /// Nothing: it has read them before.
    Nothing,
    /// Its projects and profiles (a server joining: its identities are replaced by the
    /// cluster's, so that joining grants nobody access to the other members).
    Projects,
    /// Its profiles (a member from before profiles were shared).
    Profiles,
    /// Every shared kind (the cluster's first member, or a member of a cluster made before
    /// its objects were shared).
    All,
}

impl Seed {
    fn kinds(self) -> &'static [&'static str] {
        match self {
            Seed::Nothing => &[],
            Seed::Projects => &["project", "profile"],
            Seed::Profiles => &["profile"],
            Seed::All => SHARED_KINDS,
        }
    }
}

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
        "projects, identities and profiles are the cluster's and etcd {why}; they can be read \
         but not changed until it answers again (see `vessel cluster info`)"
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

/// Notes in `store` that the instances here using profile `key` may have missed its
/// changes since `before` (its record as the store kept it), unless a note of that content
/// stands.
pub fn missed(store: &dyn Store, key: &str, before: &str) -> Result<()> {
    let prefix = format!("{key}/");
    let noted = store.object_list(PROFILE_MISSED)?;
    if noted
        .iter()
        .any(|(k, body)| k.starts_with(&prefix) && body == before)
    {
        return Ok(());
    }
    let id = uuid::Uuid::new_v4().simple().to_string();
    store.object_put(PROFILE_MISSED, &format!("{prefix}{id}"), before)
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

    /// Writes shared `kind` while linked, by etcd's compare-and-swap (`expect`); `refused`
    /// is the answer when etcd holds something else.
    fn put_shared(
        &self,
        kind: &str,
        key: &str,
        body: &str,
        expect: Expect,
        refused: StoreError,
    ) -> Result<()> {
        let op = Op::Put {
            kind: kind.into(),
            key: key.into(),
            body: body.into(),
            expect,
        };
        self.done(op, refused)
    }

    /// Asks the link for `op`: `refused` when etcd held something else than expected.
    fn done(&self, op: Op, refused: StoreError) -> Result<()> {
        match self.ask(op)? {
            Some(_) => Ok(()),
            None => Err(refused),
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
            "{kind} {key:?} was changed on another member meanwhile; read it again and retry"
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
                let before = local.remove(&o.key);
                if before.as_deref() != Some(o.body.as_str()) {
                    // A profile changed while this member was not watching: its instances
                    // may not have been told (noted first: a crash in between loses nothing).
                    if let (Some(before), true) = (&before, *kind == "profile") {
                        missed(self.inner.local.as_ref(), &o.key, before)?;
                    }
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
                    tracing::warn!(
                        kind,
                        key,
                        mine = %body,
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

#[path = "shared_store.rs"]
mod store_impl;

#[cfg(test)]
#[path = "shared_tests.rs"]
mod tests;
