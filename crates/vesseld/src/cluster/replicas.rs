//! Far copies of replicated pools, both ends.
//!
//! On the member that keeps a copy: a file `<root>/replicas/NAME.img` per copy, each served
//! by an NBD server of its own on a unix socket of the daemon (`replicas/NAME.sock`; ending
//! it cuts the primary off at once, as adopting the copy must), reached by the pool's member
//! through `GET /1.0/cluster/replicas/NAME/nbd` (upgraded, over the members' mutual TLS). On the pool's member: a relay, a unix socket
//! `<root>/replicas/relay-NAME.sock` whose every connection is carried to that endpoint;
//! the RAID engine opens it as an NBD member. The state of each copy is kept in etcd
//! (`replicas/NAME`: primary, keeper, out of date or not).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use vessel_api::ReplicaCreate;
use vessel_cluster::ReplicaState;
use vessel_nbd::{FileDevice, NbdExport, NbdServer, ServerHandle};

use super::{forward, from_cluster, ClusterService};
use crate::error::{Error, Result};

const DIR: &str = "replicas";
/// How long recording a copy's state in etcd may take before the write waiting on it fails.
const MARK_TIMEOUT: Duration = Duration::from_secs(5);

/// The far copies served here, and the relays to far copies elsewhere.
#[derive(Default)]
pub(super) struct Replicas {
    servers: HashMap<String, (NbdServer, ServerHandle)>,
    relays: HashMap<String, tokio::task::JoinHandle<()>>,
    /// Copies being adopted here (not deleted meanwhile).
    adopting: std::collections::HashSet<String>,
}

/// A far copy's name: `MEMBER.POOL` (neither has a '.', so no two pools share one).
fn valid_name(name: &str) -> Result<()> {
    let part = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    let ok = name.len() <= 127
        && name
            .split_once('.')
            .is_some_and(|(m, p)| part(m) && part(p));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "{name:?} is not a far copy's name (MEMBER.POOL)"
        )))
    }
}

/// The directory of far copies: root's alone (they hold other members' disks).
fn private_dir(dir: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .and_then(|()| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)))
        .map_err(|e| Error::internal(format!("{}: {e}", dir.display())))
}

impl ClusterService {
    fn replica_dir(&self) -> PathBuf {
        self.inner.root.join(DIR)
    }

    fn replica_file(&self, name: &str) -> PathBuf {
        self.replica_dir().join(format!("{name}.img"))
    }

    /// Serves far copy `name` kept here on a socket of its own.
    fn serve_replica(&self, r: &mut Replicas, name: &str) -> Result<()> {
        let dev = FileDevice::open(self.replica_file(name), false)
            .map_err(|e| Error::internal(format!("far copy {name}: {e}")))?;
        let server = NbdServer::new([NbdExport::new(name, Arc::new(dev))])
            .map_err(|e| Error::internal(format!("far copy {name}: {e}")))?;
        // A socket left by a daemon that was killed.
        let socket = self.replica_dir().join(format!("{name}.sock"));
        let _ = std::fs::remove_file(&socket);
        let handle = server
            .serve_unix(&socket)
            .map_err(|e| Error::internal(format!("far copy {name}: {e}")))?;
        r.servers.insert(name.to_string(), (server, handle));
        Ok(())
    }

    /// Serves the far copies kept here (at the daemon's start).
    pub fn serve_replicas(&self) {
        let mut r = self
            .inner
            .replicas
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for entry in std::fs::read_dir(self.replica_dir())
            .into_iter()
            .flatten()
            .flatten()
        {
            let p = entry.path();
            if p.extension().is_none_or(|e| e != "img") {
                continue;
            }
            let Some(name) = p.file_stem().and_then(|s| s.to_str()).map(str::to_string) else {
                continue;
            };
            if let Err(e) = self.serve_replica(&mut r, &name) {
                tracing::error!(name, error = %e.message, "far copy not served");
            }
        }
    }

    /// Keeps a far copy `req.name` of `req.size` bytes here (asked by its pool's member).
    pub fn replica_create(&self, req: &ReplicaCreate) -> Result<()> {
        valid_name(&req.name)?;
        if req.size == 0 {
            return Err(Error::invalid("a far copy needs a size"));
        }
        let mut r = self
            .inner
            .replicas
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let file = self.replica_file(&req.name);
        if r.servers.contains_key(&req.name) || file.exists() {
            return Err(Error::conflict(format!(
                "a far copy {} is kept here already",
                req.name
            )));
        }
        private_dir(&self.replica_dir())?;
        {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&file)
                .and_then(|f| f.set_len(req.size))
                .map_err(|e| Error::internal(format!("{}: {e}", file.display())))?;
        }
        if let Err(e) = self.serve_replica(&mut r, &req.name) {
            let _ = std::fs::remove_file(&file);
            return Err(e);
        }
        tracing::info!(name = %req.name, size = req.size, "keeping a far copy");
        Ok(())
    }

    /// Drops far copy `name` kept here.
    pub fn replica_delete(&self, name: &str) -> Result<()> {
        valid_name(name)?;
        let mut r = self
            .inner
            .replicas
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some((_, handle)) = r.servers.remove(name) {
            handle.shutdown();
        }
        match std::fs::remove_file(self.replica_file(name)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(Error::not_found(format!("no far copy {name} is kept here")))
            }
            Err(e) => Err(Error::internal(format!("far copy {name}: {e}"))),
        }
    }

    /// The socket of the NBD server of far copy `name` kept here.
    pub fn replica_socket(&self, name: &str) -> Result<PathBuf> {
        valid_name(name)?;
        let r = self
            .inner
            .replicas
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match r.servers.get(name) {
            Some((_, handle)) => handle
                .socket_path()
                .map(PathBuf::from)
                .ok_or_else(|| Error::internal("a far copy's server has no socket")),
            None => Err(Error::not_found(format!("no far copy {name} is kept here"))),
        }
    }

    /// Makes far copy `name` kept here this member's own, its primary lost: refused
    /// unless etcd says it is current. The roles swap in etcd first (from then on the old
    /// primary can mark nothing, so it writes nothing more), then the copy stops being
    /// served (a connection of the old primary ends at once) and its file is renamed
    /// `NAME.adopted`, no longer served at a restart. Returns that file and the old
    /// primary.
    pub async fn replica_adopt(&self, name: &str) -> Result<(PathBuf, String)> {
        valid_name(name)?;
        let Some((cluster, me)) = self.live_member().await else {
            return Err(Error::conflict(
                "adopting a far copy needs the cluster (etcd decides whether it is current)",
            ));
        };
        {
            let mut r = self
                .inner
                .replicas
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if !self.replica_file(name).exists() && !self.adopted_file(name).exists() {
                return Err(Error::not_found(format!("no far copy {name} is kept here")));
            }
            if !r.adopting.insert(name.to_string()) {
                return Err(Error::conflict(format!(
                    "far copy {name} is being adopted already"
                )));
            }
        }
        let adopted = self.adopt_steps(&cluster, name, &me).await;
        self.inner
            .replicas
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .adopting
            .remove(name);
        adopted
    }

    /// Where far copy `name` goes once adopted (until its pool is made of it).
    fn adopted_file(&self, name: &str) -> PathBuf {
        self.replica_dir().join(format!("{name}.adopted"))
    }

    async fn adopt_steps(
        &self,
        cluster: &vessel_cluster::Cluster,
        name: &str,
        me: &str,
    ) -> Result<(PathBuf, String)> {
        // An adoption that stopped before its pool was made (the roles swapped already):
        // taken up again.
        let adopted = self.adopted_file(name);
        if !self.replica_file(name).exists() && adopted.exists() {
            let state = cluster
                .replica(name)
                .await
                .map_err(from_cluster)?
                .ok_or_else(|| Error::not_found(format!("far copy {name} has no record")))?;
            if state.primary != me {
                return Err(Error::conflict(format!(
                    "far copy {name} was adopted here once, but {} holds it now",
                    state.primary
                )));
            }
            return Ok((adopted, state.member));
        }
        let before = cluster
            .adopt_replica(name, me)
            .await
            .map_err(from_cluster)?;
        let server = self
            .inner
            .replicas
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .servers
            .remove(name);
        if let Some((_, handle)) = server {
            tokio::task::spawn_blocking(move || handle.shutdown())
                .await
                .map_err(|e| Error::internal(format!("far copy task: {e}")))?;
        }
        std::fs::rename(self.replica_file(name), &adopted)
            .map_err(|e| Error::internal(format!("far copy {name}: {e}")))?;
        tracing::warn!(name, from = %before.primary, "far copy adopted: this member holds the pool now");
        Ok((adopted, before.primary))
    }

    /// On a pool's member: has `member` keep a far copy of `size` bytes for pool `pool`,
    /// records it in etcd (current, or `outdated` when it is yet to be rebuilt) and starts
    /// its relay; returns where it is (as slot `slot`) and the member URI the RAID engine
    /// opens.
    pub async fn replica_prepare(
        &self,
        pool: &str,
        member: &str,
        size: u64,
        slot: u32,
        outdated: bool,
    ) -> Result<(crate::storage::ReplicaRef, String)> {
        let Some((cluster, me)) = self.live_member().await else {
            return Err(Error::conflict(
                "a replicated pool needs a cluster: this server is not a live member of one",
            ));
        };
        if member == me {
            return Err(Error::invalid(format!(
                "the far copy must be on another member than this one ({me})"
            )));
        }
        let to = self
            .reachable(&cluster, member, "it keeps the far copy")
            .await?;
        let name = format!("{me}.{pool}");
        let body = serde_json::to_vec(&ReplicaCreate {
            name: name.clone(),
            size,
        })
        .map_err(|e| Error::internal(e.to_string()))?;
        self.call(
            &to,
            "POST",
            "/1.0/cluster/replicas",
            body,
            "keep the far copy",
        )
        .await?;
        let state = ReplicaState {
            primary: me,
            member: member.to_string(),
            outdated,
            id: uuid::Uuid::new_v4().simple().to_string(),
        };
        if let Err(e) = cluster.set_replica(&name, &state).await {
            // Not recorded: the copy just made goes again.
            self.drop_far_copy(&to, &name).await;
            return Err(from_cluster(e));
        }
        let socket = self.replica_relay(member, &name)?;
        let far = crate::storage::ReplicaRef {
            member: member.to_string(),
            name: name.clone(),
            slot,
            incomplete: false,
            id: state.id.clone(),
        };
        Ok((far, crate::storage::replica_uri(&name, &socket)))
    }

    /// On a pool's member: far copy `name` on `member` is no longer wanted (its pool is
    /// gone, or was not made): dropped there, its relay stopped, its record removed.
    pub async fn replica_forget(&self, member: &str, name: &str) {
        self.replica_unrelay(name);
        let Some((cluster, me)) = self.live_member().await else {
            tracing::warn!(
                name,
                member,
                "far copy left on its member: no cluster to reach it"
            );
            return;
        };
        match self
            .reachable(&cluster, member, "it keeps the far copy")
            .await
        {
            Ok(to) => self.drop_far_copy(&to, name).await,
            Err(e) => tracing::warn!(name, member, error = %e.message, "far copy not dropped"),
        }
        if let Err(e) = cluster.drop_replica(name, &me).await {
            tracing::warn!(name, error = %e, "far copy's record not removed");
        }
    }

    /// Has member `to` drop far copy `name` it keeps (a failure is logged).
    async fn drop_far_copy(&self, to: &super::forward::Target, name: &str) {
        let uri = format!("/1.0/cluster/replicas/{name}");
        if let Err(e) = self
            .call(to, "DELETE", &uri, Vec::new(), "drop the far copy")
            .await
        {
            tracing::warn!(name, member = %to.name, error = %e.message, "far copy not dropped");
        }
    }

    /// Stops the relay to far copy `name` (its pool is gone, or stale here).
    pub fn replica_unrelay(&self, name: &str) {
        if let Some(t) = self
            .inner
            .replicas
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .relays
            .remove(name)
        {
            t.abort();
        }
        let _ = std::fs::remove_file(self.relay_socket(name));
    }

    fn relay_socket(&self, name: &str) -> PathBuf {
        self.replica_dir().join(format!("relay-{name}.sock"))
    }

    /// The relay to far copy `name` on `member` (started if it is not running): its unix
    /// socket here.
    pub fn replica_relay(&self, member: &str, name: &str) -> Result<PathBuf> {
        valid_name(name)?;
        let socket = self.relay_socket(name);
        let mut r = self
            .inner
            .replicas
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if r.relays.get(name).is_some_and(|t| !t.is_finished()) {
            return Ok(socket);
        }
        private_dir(&self.replica_dir())?;
        let _ = std::fs::remove_file(&socket);
        let listener = {
            // Bound inside the runtime (the caller may be a blocking thread).
            let _enter = self.inner.runtime.enter();
            tokio::net::UnixListener::bind(&socket)
                .map_err(|e| Error::internal(format!("{}: {e}", socket.display())))?
        };
        let (svc, member, uri) = (
            self.clone(),
            member.to_string(),
            format!("/1.0/cluster/replicas/{name}/nbd"),
        );
        let task = self.inner.runtime.spawn(async move {
            while let Ok((mut local, _)) = listener.accept().await {
                let (svc, member, uri) = (svc.clone(), member.clone(), uri.clone());
                tokio::spawn(async move {
                    let Some((cluster, me)) = svc.live_member().await else {
                        return;
                    };
                    let to = match svc.reachable(&cluster, &member, "it keeps the far copy").await {
                        Ok(t) => t,
                        Err(e) => {
                            tracing::debug!(member = %member, error = %e.message, "far copy not reached");
                            return;
                        }
                    };
                    match forward::open(&svc.inner.root, &me, &to, &uri).await {
                        Ok(mut remote) => {
                            let _ = tokio::io::copy_bidirectional(&mut local, &mut remote).await;
                        }
                        Err(e) => {
                            tracing::debug!(member = %member, error = %e.message, "far copy not reached")
                        }
                    }
                });
            }
        });
        r.relays.insert(name.to_string(), task);
        Ok(socket)
    }

    /// Records far copy `name` (the one with `id`) out of date (or current), blocking until
    /// etcd answered or `MARK_TIMEOUT` passed: a write the copy missed waits on it.
    pub fn replica_mark(
        &self,
        name: &str,
        id: &str,
        outdated: bool,
    ) -> std::result::Result<(), String> {
        let (svc, name_, id) = (self.clone(), name.to_string(), id.to_string());
        let (tx, rx) = std::sync::mpsc::channel();
        self.inner.runtime.spawn(async move {
            let r = async {
                // A daemon just started may not be connected yet: it waits for that too.
                let until = tokio::time::Instant::now() + MARK_TIMEOUT;
                let (cluster, me) = loop {
                    if let Some(live) = svc.live_member().await {
                        break live;
                    }
                    if tokio::time::Instant::now() >= until {
                        return Err("etcd is out of reach".to_string());
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                };
                cluster
                    .mark_replica(&name_, &me, &id, outdated)
                    .await
                    .map_err(|e| e.to_string())
            }
            .await;
            let _ = tx.send(r);
        });
        match rx.recv_timeout(MARK_TIMEOUT + Duration::from_secs(1)) {
            Ok(r) => r,
            Err(_) => Err(format!(
                "etcd did not record far copy {name} in {} s",
                MARK_TIMEOUT.as_secs()
            )),
        }
    }
}

/// What a replicated pool needs of the cluster.
impl crate::storage::ReplicaLink for ClusterService {
    fn relay(&self, member: &str, name: &str) -> Result<PathBuf> {
        self.replica_relay(member, name)
    }

    fn mark(&self, name: &str, id: &str, outdated: bool) -> std::result::Result<(), String> {
        self.replica_mark(name, id, outdated)
    }

    fn unrelay(&self, name: &str) {
        self.replica_unrelay(name)
    }

    fn adopted_by(&self, name: &str) -> Option<String> {
        let (svc, name) = (self.clone(), name.to_string());
        let (tx, rx) = std::sync::mpsc::channel();
        self.inner.runtime.spawn(async move {
            let r = async {
                let (cluster, me) = svc.live_member().await?;
                let state = cluster.replica(&name).await.ok()??;
                (state.primary != me).then_some(state.primary)
            }
            .await;
            let _ = tx.send(r);
        });
        rx.recv_timeout(MARK_TIMEOUT).ok().flatten()
    }
}
