//! A live move seen from the member a VM leaves: what it asks of the member it moves to
//! (make the waiting copy, end the move) and the relay that carries QEMU's two streams
//! (state, disks) from unix sockets here through the members' mutual TLS to the waiting
//! QEMU there.

use std::path::{Path, PathBuf};

use axum::body::Body;
use axum::extract::Request;
use axum::http::StatusCode;
use tokio::task::JoinHandle;
use vessel_api::{MigrationEnd, MigrationIncoming};

use super::forward::{self, Target};
use super::instances::error_text;
use super::ClusterService;
use crate::error::{Error, Result};

/// Unix sockets here whose connections go to a waiting QEMU on another member; the
/// relays stop when it is dropped (at once: a failed move), or once what QEMU wrote has
/// gone through ([`Relay::finish`], a move QEMU calls complete).
pub struct Relay {
    /// Where this member's QEMU connects: memory and device state.
    pub state: PathBuf,
    /// Where it connects for the disks' NBD exports.
    pub disks: PathBuf,
    /// The loops taking QEMU's connections.
    tasks: Vec<JoinHandle<()>>,
    /// Per connection of the state: what carries QEMU's bytes there (ends once QEMU closed
    /// its end and all it wrote went out) and what carries the answers back.
    conns: Conns,
    /// The same of the disks' connections, which end with the relay.
    cut: Conns,
}

/// The two tasks of one relayed connection: out to the other member, and back.
type ConnTasks = (JoinHandle<()>, JoinHandle<()>);

/// The tasks of each relayed connection.
#[derive(Clone, Default)]
struct Conns(std::sync::Arc<std::sync::Mutex<Vec<ConnTasks>>>);

impl Conns {
    fn take(&self) -> Vec<ConnTasks> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Relay {
    /// Ends the relay once each connection's bytes from QEMU went through (QEMU closes
    /// them when the migration completes) or `limit` passed. The source QEMU calls a
    /// migration complete once it wrote its last bytes to the socket, which is here, not
    /// there yet: cut at once, the tail of the state is lost and the waiting QEMU fails to
    /// load it (or waits for it for ever).
    pub async fn finish(mut self, limit: std::time::Duration) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
        let until = tokio::time::Instant::now() + limit;
        let started = std::time::Instant::now();
        let mut cut = 0;
        for (out, back) in self.conns.take() {
            let aborter = out.abort_handle();
            if tokio::time::timeout_at(until, out).await.is_err() {
                aborter.abort();
                cut += 1;
            }
            back.abort();
        }
        if cut > 0 {
            tracing::warn!(
                connections = cut,
                "migration relay: QEMU did not close its connections in time; cut"
            );
        } else {
            tracing::info!(
                ms = started.elapsed().as_millis() as u64,
                "migration relay: the state went through"
            );
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        for (out, back) in self.conns.take().into_iter().chain(self.cut.take()) {
            out.abort();
            back.abort();
        }
        let _ = std::fs::remove_file(&self.state);
        let _ = std::fs::remove_file(&self.disks);
    }
}

impl ClusterService {
    /// Sends `body` to `to` as `method` `uri` and expects a success without a body.
    pub(super) async fn call(
        &self,
        to: &Target,
        method: &str,
        uri: &str,
        body: Vec<u8>,
        what: &str,
    ) -> Result<()> {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header(axum::http::header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .map_err(|e| Error::internal(e.to_string()))?;
        let (resp, _) = self.forward(to, req).await?;
        let status = resp.status();
        if status == StatusCode::OK {
            return Ok(());
        }
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap_or_default();
        Err(Error::conflict(format!(
            "member {} did not {what}: {}",
            to.name,
            error_text(&bytes)
        )))
    }

    /// Whether the project's `limits.disk.pool.*` leave room on `to` for what a cold move
    /// brings into each of its pools (`adding`: bytes by pool), counted as `to` counts
    /// them (the project's volumes in its pool): asked before anything stops, and checked
    /// again by `to` when the archive arrives.
    pub async fn pool_room_on(
        &self,
        to: &Target,
        project: &str,
        quota: &crate::project::quota::Quota,
        adding: &std::collections::BTreeMap<String, u64>,
    ) -> Result<()> {
        let q = vessel_api::PROJECT_QUERY;
        for (pool, bytes) in adding
            .iter()
            .filter(|(p, _)| quota.disk_pool.contains_key(*p))
        {
            let path = format!("/1.0/storage/pools/{pool}/volumes?{q}={project}");
            let there: Vec<vessel_api::StorageVolume> = self.get_json(to, &path).await?;
            let sizes: Vec<Option<u64>> = there
                .iter()
                .map(|v| Some(v.size_bytes + v.snapshot_bytes))
                .collect();
            quota
                .admits_in_pool(pool, &sizes, Some(*bytes))
                .map_err(|e| {
                    Error::conflict(format!(
                        "member {} cannot take the instance: {}",
                        to.name, e.message
                    ))
                })?;
        }
        Ok(())
    }

    /// Whether `to` can take carried volume `c` (of `project`): it has a pool of that name
    /// that can hold such a volume (not unavailable; a `dir` pool takes no filesystem
    /// volume with a size; `raid` pools hold block volumes only; a `ceph` pool none that
    /// travel), and no volume of that name in it.
    pub async fn volume_room_on(
        &self,
        to: &Target,
        project: &str,
        c: &crate::storage::CarriedVolume,
    ) -> Result<()> {
        use vessel_api::{PoolDriver, VolumeContent};
        let q = vessel_api::PROJECT_QUERY;
        let (pool, name) = (&c.pool, crate::project::split(&c.name).1);
        let member = &to.name;
        let pool_path = format!("/1.0/storage/pools/{pool}?{q}={project}");
        let there: vessel_api::StoragePool = match self.get_json(to, &pool_path).await {
            Ok(p) => p,
            Err(e) if e.kind == crate::error::ErrorKind::NotFound => {
                return Err(Error::conflict(format!(
                    "member {member} has no pool {pool:?} for volume {name}, which moves \
                     with the instance: create the pool there first"
                )))
            }
            Err(e) => return Err(e),
        };
        let unfit = match (there.driver, c.content) {
            _ if there.status == "unavailable" => Some(format!(
                "its pool {pool:?} is unavailable ({})",
                there.error.clone().unwrap_or_default()
            )),
            (PoolDriver::Ceph, _) => Some(format!(
                "its pool {pool:?} is a ceph pool, which takes no volume from a move"
            )),
            (PoolDriver::Raid, VolumeContent::Filesystem) => Some(format!(
                "its pool {pool:?} is a raid pool, which holds block volumes only"
            )),
            (PoolDriver::Dir, VolumeContent::Filesystem) if c.size > 0 => Some(format!(
                "its pool {pool:?} is a dir pool, which cannot hold a filesystem volume to a \
                 size (volume {name} has one)"
            )),
            _ => None,
        };
        if let Some(why) = unfit {
            return Err(Error::conflict(format!(
                "member {member} cannot take volume {name}, which moves with the instance: \
                 {why}"
            )));
        }
        let volume_path = format!("/1.0/storage/pools/{pool}/volumes/{name}?{q}={project}");
        match self
            .get_json::<vessel_api::StorageVolume>(to, &volume_path)
            .await
        {
            Err(e) if e.kind == crate::error::ErrorKind::NotFound => Ok(()),
            Ok(_) => Err(Error::conflict(format!(
                "member {member} has a volume {name} in pool {pool:?} already: delete or \
                 rename one of the two first"
            ))),
            Err(e) => Err(e),
        }
    }

    /// Whether each of `carried` is on `to` now, attached to `project`/`instance` where it
    /// was here; an error naming the first that is not.
    pub async fn volumes_arrived_on(
        &self,
        to: &Target,
        project: &str,
        instance: &str,
        carried: &[crate::storage::CarriedVolume],
    ) -> Result<()> {
        let q = vessel_api::PROJECT_QUERY;
        for c in carried {
            let vol = crate::project::split(&c.name).1;
            let path = format!("/1.0/storage/pools/{}/volumes/{vol}?{q}={project}", c.pool);
            let there: vessel_api::StorageVolume = self.get_json(to, &path).await?;
            let attached = there
                .attached_to
                .iter()
                .any(|a| crate::project::split(&a.instance).1 == instance && a.path == c.path);
            if !attached {
                return Err(Error::conflict(format!(
                    "member {} made {instance} without its volume {vol} attached (is its \
                     daemon older, one that does not carry volumes?)",
                    to.name
                )));
            }
        }
        Ok(())
    }

    /// Asks `to` to make `project`/`name` from `req` and start its QEMU waiting.
    pub async fn incoming_on(
        &self,
        to: &Target,
        project: &str,
        name: &str,
        req: &MigrationIncoming,
    ) -> Result<()> {
        let q = vessel_api::PROJECT_QUERY;
        let body = serde_json::to_vec(req).map_err(|e| Error::internal(e.to_string()))?;
        let uri = format!("/1.0/instances/{name}/incoming?{q}={project}");
        self.call(to, "POST", &uri, body, "get ready for the move")
            .await
    }

    /// Ends the move of `project`/`name` on `to`: it runs there (`run`) or its copy goes.
    pub async fn incoming_end_on(
        &self,
        to: &Target,
        project: &str,
        name: &str,
        run: bool,
    ) -> Result<()> {
        let q = vessel_api::PROJECT_QUERY;
        let body = serde_json::to_vec(&MigrationEnd { run })
            .map_err(|e| Error::internal(e.to_string()))?;
        let uri = format!("/1.0/instances/{name}/incoming?{q}={project}");
        let what = if run {
            "run the guest"
        } else {
            "drop its copy"
        };
        self.call(to, "PUT", &uri, body, what).await
    }

    /// Listens in `dir` (owned by `uid`, QEMU's user) for this member's QEMU and relays
    /// each connection to the waiting QEMU of `project`/`name` on `to`.
    pub fn relay(
        &self,
        dir: &Path,
        uid: u32,
        to: &Target,
        project: &str,
        name: &str,
    ) -> Result<Relay> {
        let mut relay = Relay {
            state: dir.join("mig-out-state.sock"),
            disks: dir.join("mig-out-disks.sock"),
            tasks: Vec::new(),
            conns: Conns::default(),
            cut: Conns::default(),
        };
        for (path, stream) in [
            (relay.state.clone(), "state"),
            (relay.disks.clone(), "disks"),
        ] {
            let _ = std::fs::remove_file(&path);
            let listener = tokio::net::UnixListener::bind(&path)
                .map_err(|e| Error::internal(format!("{}: {e}", path.display())))?;
            std::os::unix::fs::chown(&path, Some(uid), None)
                .map_err(|e| Error::internal(format!("{}: {e}", path.display())))?;
            let q = vessel_api::PROJECT_QUERY;
            let uri = format!("/1.0/instances/{name}/incoming/{stream}?{q}={project}");
            // The disks' stream is NBD: each write is answered before QEMU counts it done,
            // so only the state's connections are waited for.
            let conns = if stream == "state" {
                relay.conns.clone()
            } else {
                relay.cut.clone()
            };
            let (svc, to) = (self.clone(), to.clone());
            relay.tasks.push(tokio::spawn(async move {
                svc.relay_each(listener, to, uri, conns).await;
            }));
        }
        Ok(relay)
    }

    /// Carries each connection of `listener` to `uri` on `to`, both ways. The connections
    /// reach the other side in the order QEMU made them (each is opened there before the
    /// next is taken): a QEMU 7 receiving memory over several channels takes the first
    /// connection for the main one.
    async fn relay_each(
        &self,
        listener: tokio::net::UnixListener,
        to: Target,
        uri: String,
        conns: Conns,
    ) {
        use tokio::io::AsyncWriteExt;
        let me = self.me().await.unwrap_or_default();
        let root = self.inner.root.clone();
        while let Ok((local, _)) = listener.accept().await {
            let remote = match forward::open(&root, &me, &to, &uri).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(member = %to.name, error = %e, "migration stream not opened");
                    continue;
                }
            };
            let (mut local_in, mut local_out) = local.into_split();
            let (mut remote_in, mut remote_out) = tokio::io::split(remote);
            let name = to.name.clone();
            let out = tokio::spawn(async move {
                // Everything QEMU writes, flushed, then the end of it told there.
                let sent = tokio::io::copy(&mut local_in, &mut remote_out).await;
                let shut = remote_out.shutdown().await;
                if let Err(e) = sent.and(shut.map(|_| 0)) {
                    tracing::debug!(member = %name, error = %e, "migration stream ended");
                }
            });
            let back = tokio::spawn(async move {
                let _ = tokio::io::copy(&mut remote_in, &mut local_out).await;
            });
            conns
                .0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((out, back));
        }
    }
}
