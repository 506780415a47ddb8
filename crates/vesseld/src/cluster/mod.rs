//! ClusterService: this server's membership of a cluster on etcd (`vessel-cluster` does the
//! etcd work). What it joined is kept in `<root>/cluster.json` (0600), so a restarted
//! daemon beats again as the same member; until etcd answers it keeps trying.

mod ended;
mod evacuate;
mod forward;
mod heal;
mod images;
mod instances;
mod join;
mod migration;
mod networks;
mod profiles;
mod replicas;
mod shared;
mod trust;
pub mod watchdog;

pub use evacuate::EvacuateAction;
pub use forward::Target;
pub use images::merge_images;
pub use instances::{get_request, group_of};
pub use profiles::HERE;

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use vessel_api::{
    ClusterInfo, ClusterMember, ClusterMemberUsage, ClusterPlacement, ClusterToken,
    ClusterTokenCreate,
};
use vessel_cluster::{Capacity, Cluster, Heartbeater, JoinToken, Usage};

use crate::error::{Error, Result};
use crate::store::Store;

/// A member's lease: offline this long after its last renewal (renewed every third).
pub const LEASE_TTL: Duration = Duration::from_secs(6);
/// A join token's lifetime unless one is given.
const TOKEN_LIFETIME: &str = "1h";
/// What the daemon keeps of its membership.
const FILE: &str = "cluster.json";

/// What `<root>/cluster.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Membership {
    id: String,
    name: String,
    address: String,
    etcd: Vec<String>,
    /// What of this server's own projects, identities and profiles is still to be added to
    /// the cluster's (a membership from before they were shared: all).
    #[serde(default)]
    shared_seed: SharedSeed,
    /// Whether its seed includes its profiles (`false`: a membership from before profiles
    /// were shared, whose profiles are still to be added once it is `Done`). A field of its
    /// own, so that an older daemon still reads the file.
    #[serde(default)]
    profiles_shared: bool,
}

/// What a member still has to add of its own to the cluster's shared objects.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum SharedSeed {
    /// Its projects, identities and profiles (the first member; a membership from before
    /// any were shared).
    #[default]
    All,
    /// Its projects and profiles (a server that joined: its identities are the cluster's).
    Projects,
    /// Nothing (but its profiles unless `profiles_shared`). (`shared`: what one build
    /// wrote for it.)
    #[serde(alias = "shared")]
    Done,
}

/// A live membership: the connection, the heartbeat, what watches its fence and what keeps
/// the members' certificates trusted.
struct Joined {
    cluster: Cluster,
    beat: Heartbeater,
    fence: tokio::task::JoinHandle<()>,
    trust: tokio::task::JoinHandle<()>,
    index: tokio::task::JoinHandle<()>,
    networks: tokio::task::JoinHandle<()>,
    heal: tokio::task::JoinHandle<()>,
    watchdog: tokio::task::JoinHandle<()>,
    /// Asks the watchdog task to tell the watchdog at once (none without a watchdog).
    tell_watchdog: Option<tokio::sync::mpsc::UnboundedSender<watchdog::TellNow>>,
}

/// How soon the members' certificates are read again when etcd cannot be watched.
const TRUST_REFRESH: Duration = Duration::from_secs(2);
/// How often they are read again while watched.
const TRUST_RECHECK: Duration = Duration::from_secs(30);

struct Inner {
    root: PathBuf,
    store: Arc<dyn Store>,
    membership: Mutex<Option<Membership>>,
    live: Mutex<Option<Joined>>,
    /// The instances, whose `cluster.ha` ones a fenced member stops.
    instances: std::sync::OnceLock<crate::instance::InstanceService>,
    /// Identities: the members' certificates are trusted as members.
    auth: std::sync::OnceLock<crate::auth::AuthService>,
    /// Whether it fenced itself before it had a lease since its start.
    fenced_at_start: std::sync::atomic::AtomicBool,
    /// Whether its fence watchdog runs (HA instances start only then).
    watchdog_ok: std::sync::atomic::AtomicBool,
    /// Names claimed in the cluster's index for instances being made, and when.
    claims: std::sync::Mutex<HashMap<(String, String), (std::time::Instant, vessel_cluster::Asks)>>,
    /// Operations forwarded to other members: their ids in the order seen, and where.
    ops: std::sync::Mutex<(VecDeque<String>, HashMap<String, Target>)>,
    /// Networks: cluster networks are kept on this member.
    networks: std::sync::OnceLock<crate::network::NetworkService>,
    /// Events: an instance made, renamed or deleted here is written to the index at once.
    events: std::sync::OnceLock<crate::events::Events>,
    /// Wakes the loop that keeps cluster networks (a create or delete just asked).
    networks_changed: tokio::sync::Notify,
    /// Why a cluster network is not made or updated here, by name.
    network_errors: std::sync::Mutex<HashMap<String, String>>,
    /// Far copies of replicated pools kept here, and relays to those elsewhere.
    replicas: std::sync::Mutex<replicas::Replicas>,
    /// The daemon's runtime (what blocking callers, such as the RAID engine's failure hook,
    /// run cluster work on).
    runtime: tokio::runtime::Handle,
    /// The store, whose shared kinds (projects, identities, profiles) live in etcd while
    /// this server is a member.
    shared: std::sync::OnceLock<crate::store::SharedStore>,
    /// Why the membership on file ended, found at start (`ended.rs`).
    ended: std::sync::Mutex<Option<String>>,
    /// Held by a join or an init from its check to its end (`join.rs`).
    joining: Mutex<()>,
}

/// This server's membership of a cluster.
#[derive(Clone)]
pub struct ClusterService {
    inner: Arc<Inner>,
}

pub(super) fn from_cluster(e: vessel_cluster::Error) -> Error {
    use vessel_cluster::Error as E;
    match e {
        E::Etcd(m) => Error::internal(format!("etcd: {m}")),
        E::Conflict(m) => Error::conflict(m),
        E::NotFound(m) => Error::not_found(m),
        E::Refused(m) => Error::forbidden(m),
        E::Invalid(m) => Error::invalid(m),
    }
}

/// This host's CPUs and memory.
fn capacity() -> Capacity {
    Capacity {
        cpus: std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1),
        memory: meminfo("MemTotal:").unwrap_or(0),
    }
}

/// A `/proc/meminfo` line's value in bytes.
fn meminfo(field: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn check_address(address: &str) -> Result<()> {
    address
        .parse::<std::net::SocketAddr>()
        .map(|_| ())
        .map_err(|_| {
            Error::invalid(format!(
                "{address:?} is not an address the other members can reach: give IP:PORT of this \
             server's HTTPS API (e.g. 10.0.0.2:8443)"
            ))
        })
}

impl ClusterService {
    /// The service of the daemon rooted at `root` (made inside the daemon's runtime).
    pub fn new(root: PathBuf, store: Arc<dyn Store>) -> Self {
        let file = root.join(FILE);
        let membership = match std::fs::read(&file) {
            Ok(b) => match serde_json::from_slice(&b) {
                Ok(m) => Some(m),
                Err(e) => {
                    tracing::error!(file = %file.display(), error = %e, "the cluster membership cannot be read: this server acts as in no cluster, and its cluster.ha instances do not start");
                    None
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                tracing::error!(file = %file.display(), error = %e, "the cluster membership cannot be read: this server acts as in no cluster, and its cluster.ha instances do not start");
                None
            }
        };
        Self {
            inner: Arc::new(Inner {
                root,
                store,
                membership: Mutex::new(membership),
                live: Mutex::new(None),
                instances: std::sync::OnceLock::new(),
                auth: std::sync::OnceLock::new(),
                fenced_at_start: std::sync::atomic::AtomicBool::new(false),
                watchdog_ok: std::sync::atomic::AtomicBool::new(false),
                claims: Default::default(),
                ops: Default::default(),
                networks: std::sync::OnceLock::new(),
                events: std::sync::OnceLock::new(),
                networks_changed: tokio::sync::Notify::new(),
                network_errors: Default::default(),
                replicas: Default::default(),
                runtime: tokio::runtime::Handle::current(),
                shared: std::sync::OnceLock::new(),
                ended: Default::default(),
                joining: Mutex::new(()),
            }),
        }
    }

    /// Gives the service the instances (made after it).
    pub fn set_instances(&self, instances: crate::instance::InstanceService) {
        let _ = self.inner.instances.set(instances);
    }

    /// Gives the service the event bus, whose instance events wake the index's pass.
    pub fn set_events(&self, events: crate::events::Events) {
        let _ = self.inner.events.set(events);
    }

    /// Gives the service the networks, whose cluster networks it keeps.
    pub fn set_networks(&self, networks: crate::network::NetworkService) {
        let _ = self.inner.networks.set(networks);
    }

    /// Gives the service the identities, whose member certificates it keeps current.
    pub fn set_auth(&self, auth: crate::auth::AuthService) {
        let _ = self.inner.auth.set(auth);
    }

    /// Fencing: this member's lease has not been renewed for half its TTL, so the others
    /// may soon take it for dead and start its `cluster.ha` instances elsewhere. It stops
    /// them first (forced: a fenced member must stop writing now, not after a clean
    /// shutdown's grace).
    async fn fence(&self, first: bool) {
        let Some(instances) = self.inner.instances.get() else {
            return;
        };
        let stopped = instances.stop_ha().await;
        if first || !stopped.is_empty() {
            tracing::warn!(stopped = ?stopped, "fenced: HA instances stopped");
        }
    }

    fn fingerprint(&self) -> Result<String> {
        let (certs, _) = crate::auth::tls::server_identity(&self.inner.root)?;
        let cert = certs
            .first()
            .ok_or_else(|| Error::internal("the server has no certificate"))?;
        Ok(crate::auth::tls::fingerprint(cert))
    }

    fn save(&self, m: &Membership) -> Result<()> {
        let body = serde_json::to_vec_pretty(m).map_err(|e| Error::internal(e.to_string()))?;
        crate::auth::tls::write_private(&self.inner.root.join(FILE), &body)
    }

    /// What the heartbeat says: the time and this host's usage.
    fn usage_source(&self) -> impl Fn() -> (String, Usage) + Send + Sync + 'static {
        let store = self.inner.store.clone();
        move || {
            let list = store.instance_list().unwrap_or_default();
            let running = list
                .iter()
                .filter(|i| i.status == vessel_api::InstanceStatus::Running)
                .count() as u64;
            let memory = match (meminfo("MemTotal:"), meminfo("MemAvailable:")) {
                (Some(t), Some(a)) => t.saturating_sub(a),
                _ => 0,
            };
            let load1 = std::fs::read_to_string("/proc/loadavg")
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse().ok())
                .unwrap_or(0.0);
            (
                crate::clock::now(),
                Usage {
                    instances: list.len() as u64,
                    running,
                    memory,
                    load1,
                    cpu_requested: list.iter().filter_map(|i| i.limits.cpu).sum(),
                    memory_requested: list.iter().filter_map(|i| i.limits.memory).sum(),
                },
            )
        }
    }

    /// Connects and starts beating as `m`'s member.
    async fn go_live(&self, m: &Membership) -> Result<()> {
        let cluster = Cluster::connect(&m.etcd).await.map_err(from_cluster)?;
        match cluster.id().await.map_err(from_cluster)? {
            Some(id) if id == m.id => {}
            other => {
                return Err(Error::conflict(format!(
                    "etcd at {} holds {}, not the cluster {} this server joined",
                    m.etcd.join(", "),
                    other.map_or("no cluster".to_string(), |o| format!("cluster {o}")),
                    m.id
                )))
            }
        }
        // What the member says of itself stays true: its address and capacity.
        if let Some(mut rec) = cluster.record(&m.name).await.map_err(from_cluster)? {
            if rec.fingerprint != self.fingerprint()? {
                return Err(Error::conflict(format!(
                    "member {name}'s record in the cluster holds another certificate than this \
                     server's: this server's certificate ({root}/server.crt) was replaced since \
                     it joined, or the member was removed meanwhile and its name given to \
                     another server. Put back the certificate and key it joined with and \
                     restart the daemon; or, if no other server is member {name}, remove it \
                     on a member (vessel cluster remove {name}) and join again",
                    name = m.name,
                    root = self.inner.root.display()
                )));
            }
            let (address, capacity) = (m.address.clone(), capacity());
            if rec.address != address || rec.capacity != capacity {
                rec.address = address;
                rec.capacity = capacity;
                cluster.update(&rec).await.map_err(from_cluster)?;
            }
        } else {
            tracing::warn!(member = %m.name, "this member was removed from the cluster; not beating");
            return Err(Error::conflict(format!(
                "member {} was removed from the cluster; join again with a new token",
                m.name
            )));
        }
        let beat = cluster.heartbeat(&m.name, LEASE_TTL, self.usage_source());
        self.inner.fenced_at_start.store(false, Ordering::SeqCst);
        let mut fenced = beat.fenced();
        let svc = self.clone();
        let fence = tokio::spawn(async move {
            let mut first = true;
            loop {
                if *fenced.borrow_and_update() {
                    // Again every second while fenced: an HA instance whose start was under
                    // way when the fence went up is stopped too.
                    svc.fence(first).await;
                    first = false;
                    tokio::select! {
                        changed = fenced.changed() => if changed.is_err() { break },
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                    continue;
                }
                // Live (again): what the fence or the watchdog stopped starts again where
                // the cluster still names this member.
                if let Some(instances) = svc.inner.instances.get().cloned() {
                    tokio::spawn(async move { instances.restart_lost_ha().await });
                }
                first = true;
                if fenced.changed().await.is_err() {
                    break;
                }
            }
        });
        let trust = match self.inner.auth.get() {
            Some(auth) => tokio::spawn(Self::keep_trust(cluster.clone(), auth.clone())),
            None => tokio::spawn(async {}),
        };
        let index = tokio::spawn(self.clone().keep_index(cluster.clone(), m.name.clone()));
        let networks = tokio::spawn(self.clone().keep_networks(cluster.clone(), m.name.clone()));
        let heal = tokio::spawn(self.clone().keep_healing(cluster.clone(), m.name.clone()));
        let (watchdog, tell_watchdog) = match watchdog::Watchdog::spawn(&self.inner.root) {
            Ok(dog) => {
                self.inner.watchdog_ok.store(true, Ordering::SeqCst);
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                (tokio::spawn(self.clone().keep_watchdog(dog, rx)), Some(tx))
            }
            Err(e) => {
                tracing::error!(error = %e, "no fence watchdog: HA instances do not start here");
                self.inner.watchdog_ok.store(false, Ordering::SeqCst);
                (tokio::spawn(async {}), None)
            }
        };
        *self.inner.live.lock().await = Some(Joined {
            cluster,
            beat,
            fence,
            trust,
            index,
            networks,
            heal,
            watchdog,
            tell_watchdog,
        });
        tracing::info!(member = %m.name, cluster = %m.id, "cluster member online");
        Ok(())
    }

    /// At the daemon's start: beat again as the member it joined, retrying until etcd
    /// answers. A member that cannot reach etcd within half a lease's TTL of its start
    /// fences itself as a beating one would (its HA instances ran on while the daemon was
    /// down, and the others may take it for dead by now).
    pub async fn resume(&self) {
        let Some(m) = self.inner.membership.lock().await.clone() else {
            return;
        };
        self.share(&m);
        // The fence does not wait for the attempts to connect, which can take long.
        let svc = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(vessel_cluster::fence_after(LEASE_TTL)).await;
            if svc.inner.live.lock().await.is_none() {
                tracing::warn!("no lease since the start: fenced");
                svc.inner.fenced_at_start.store(true, Ordering::SeqCst);
                svc.fence(true).await;
            }
        });
        let mut told = false;
        loop {
            match self.go_live(&m).await {
                Ok(()) => return,
                Err(e) if e.kind == crate::error::ErrorKind::Conflict => {
                    tracing::error!(error = %e, "cluster membership not resumed");
                    // Not a member (any more): what it holds is its own again.
                    if let Some(s) = self.inner.shared.get() {
                        s.detach();
                    }
                    self.set_ended(Some(e.message.clone()));
                    self.look_again(m).await;
                    return;
                }
                Err(e) => {
                    if !told {
                        tracing::warn!(error = %e, "etcd does not answer yet; retrying");
                        told = true;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    /// Stops beating: the member goes offline at once (a clean stop).
    pub async fn shutdown(&self) {
        if let Some(j) = self.inner.live.lock().await.take() {
            j.fence.abort();
            j.trust.abort();
            j.index.abort();
            j.networks.abort();
            j.heal.abort();
            // The watchdog hears no more: it stops the HA instances before the lease ends.
            j.watchdog.abort();
            if let Some(auth) = self.inner.auth.get() {
                auth.set_members(Default::default());
            }
            let ha_running = self
                .inner
                .instances
                .get()
                .is_some_and(|i| !i.ha_pids().is_empty());
            if ha_running {
                // Offline at once would let the others start them while they run here.
                j.beat.abandon().await;
            } else {
                j.beat.stop().await;
            }
        }
    }

    async fn cluster(&self) -> Result<Cluster> {
        if let Some(why) = self.ended() {
            return Err(Error::conflict(format!(
                "this server's membership ended: {why}"
            )));
        }
        if self.inner.membership.lock().await.is_none() {
            return Err(Error::conflict(
                "this server is not in a cluster: `vessel cluster init` makes one, `vessel \
                 cluster join TOKEN` joins one",
            ));
        }
        match self.inner.live.lock().await.as_ref() {
            Some(j) => Ok(j.cluster.clone()),
            None => Err(Error::internal(
                "etcd has not answered this member since it started; see the daemon's log",
            )),
        }
    }

    /// `GET /1.0/cluster`.
    pub async fn info(&self) -> Result<ClusterInfo> {
        let m = self.inner.membership.lock().await.clone();
        let (connected, fenced, cluster) = match self.inner.live.lock().await.as_ref() {
            Some(j) => {
                let fenced = *j.beat.fenced().borrow();
                (!fenced, fenced, Some(j.cluster.clone()))
            }
            None => (
                false,
                self.inner.fenced_at_start.load(Ordering::SeqCst),
                None,
            ),
        };
        // Asked of etcd only while it answers, and not for long: `cluster info` is what a
        // user runs to see why it does not.
        let (policy, healing_threshold) = match cluster.filter(|_| connected) {
            Some(c) => {
                let wait = Duration::from_millis(1500);
                (
                    tokio::time::timeout(wait, c.policy())
                        .await
                        .ok()
                        .and_then(|r| r.ok()),
                    tokio::time::timeout(wait, c.healing_threshold())
                        .await
                        .ok()
                        .and_then(|r| r.ok())
                        .flatten(),
                )
            }
            None => (None, None),
        };
        Ok(ClusterInfo {
            enabled: m.is_some(),
            id: m.as_ref().map(|m| m.id.clone()),
            name: m.as_ref().map(|m| m.name.clone()),
            address: m.as_ref().map(|m| m.address.clone()),
            etcd: m.map(|m| m.etcd).unwrap_or_default(),
            connected,
            fenced,
            shared_current: self
                .inner
                .shared
                .get()
                .and_then(|s| s.current())
                .unwrap_or(false),
            fingerprint: self.fingerprint()?,
            policy,
            healing_threshold,
            ended: self.ended(),
        })
    }

    /// `PATCH /1.0/cluster`: the cluster's settings.
    pub async fn update(&self, req: vessel_api::ClusterUpdate) -> Result<ClusterInfo> {
        let cluster = self.cluster().await?;
        if let Some(p) = &req.policy {
            let policy: vessel_placement::Policy = p
                .parse()
                .map_err(|e: vessel_placement::UnknownPolicy| Error::invalid(e.to_string()))?;
            cluster
                .set_policy(&policy.to_string())
                .await
                .map_err(from_cluster)?;
        }
        if let Some(t) = req.healing_threshold {
            // 0 ends failover.
            cluster
                .set_healing_threshold((t > 0).then_some(t))
                .await
                .map_err(from_cluster)?;
        }
        self.info().await
    }

    /// `POST /1.0/cluster/tokens`: a single-use token for the member `name`.
    pub async fn token(&self, req: ClusterTokenCreate) -> Result<ClusterToken> {
        let cluster = self.cluster().await?;
        let m = self
            .inner
            .membership
            .lock()
            .await
            .clone()
            .ok_or_else(|| Error::internal("no membership"))?;
        let lifetime =
            crate::auth::parse_lifetime(req.lifetime.as_deref().unwrap_or(TOKEN_LIFETIME))?;
        let secs = lifetime.whole_seconds().max(1) as u64;
        let (id, secret) = (crate::auth::random_hex(16)?, crate::auth::random_hex(32)?);
        cluster
            .issue_token(&id, &secret, &req.name, Duration::from_secs(secs))
            .await
            .map_err(from_cluster)?;
        let token = JoinToken {
            cluster: m.id.clone(),
            endpoints: m.etcd.clone(),
            id,
            secret,
            name: req.name.clone(),
            issuer: format!("{} ({})", m.name, m.address),
            fingerprint: self.fingerprint()?,
        };
        let expires = time::OffsetDateTime::now_utc() + lifetime;
        Ok(ClusterToken {
            name: req.name,
            token: token.encode(),
            expires_at: expires
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
        })
    }

    /// `GET /1.0/cluster/members`.
    pub async fn members(&self) -> Result<Vec<ClusterMember>> {
        let cluster = self.cluster().await?;
        Ok(cluster
            .members()
            .await
            .map_err(from_cluster)?
            .into_iter()
            .map(|m| ClusterMember {
                name: m.record.name,
                address: m.record.address,
                fingerprint: m.record.fingerprint,
                state: m.state,
                roles: m.record.roles,
                cpus: m.record.capacity.cpus,
                memory: m.record.capacity.memory,
                usage: m.heartbeat.as_ref().map(|h| ClusterMemberUsage {
                    instances: h.usage.instances,
                    running: h.usage.running,
                    memory: h.usage.memory,
                    load1: h.usage.load1,
                    cpu_requested: h.usage.cpu_requested,
                    memory_requested: h.usage.memory_requested,
                }),
                last_heartbeat: m.heartbeat.map(|h| h.at),
                joined_at: m.record.joined_at,
            })
            .collect())
    }

    /// `DELETE /1.0/cluster/members/NAME`.
    pub async fn remove(&self, name: &str, force: bool) -> Result<()> {
        let cluster = self.cluster().await?;
        let me = self
            .inner
            .membership
            .lock()
            .await
            .as_ref()
            .map(|m| m.name.clone());
        if me.as_deref() == Some(name) {
            return Err(Error::conflict(format!(
                "{name} is this server: remove it from another member"
            )));
        }
        cluster.remove(name, force).await.map_err(from_cluster)
    }

    /// `GET /1.0/cluster/placement`: the member the scheduler (`vessel-placement`) would
    /// choose for a new instance asking for `cpu` cores and `memory` bytes, from the members'
    /// capacity, what their instances ask for (the cluster's instance index, current from
    /// the moment a name is claimed) and whether they are online; `target`: whether that
    /// member can take it.
    pub async fn place(
        &self,
        cpu: f64,
        memory: u64,
        policy: Option<&str>,
        group: Option<&str>,
        target: Option<&str>,
    ) -> Result<ClusterPlacement> {
        let policy = match policy {
            Some(p) => p.to_string(),
            None => self.cluster().await?.policy().await.map_err(from_cluster)?,
        };
        let policy: vessel_placement::Policy = policy
            .parse()
            .map_err(|e: vessel_placement::UnknownPolicy| Error::invalid(e.to_string()))?;
        let list = self.members().await?;
        let mut members: Vec<vessel_placement::Member> = list
            .iter()
            .map(|m| vessel_placement::Member {
                name: m.name.clone(),
                online: m.state == "online",
                cpu_capacity: f64::from(m.cpus),
                memory_capacity: m.memory,
                cpu_used: 0.0,
                memory_used: 0,
                instances: 0,
                groups: Vec::new(),
            })
            .collect();
        for loc in self.locations().await? {
            if let Some(m) = members.iter_mut().find(|m| m.name == loc.member) {
                m.cpu_used += loc.asks.cpu;
                m.memory_used = m.memory_used.saturating_add(loc.asks.memory);
                m.instances += 1;
                m.groups.extend(loc.asks.group);
            }
        }
        let mut req = vessel_placement::Request::new("the new instance", "", cpu, memory);
        if let Some(g) = group {
            req = req.in_group(g);
        }
        let i = vessel_placement::place(&members, &req, policy, target)
            .map_err(|e| Error::conflict(e.to_string()))?;
        Ok(ClusterPlacement {
            member: members[i].name.clone(),
            policy: policy.to_string(),
            reason: vessel_placement::why_chosen(&members, i, policy),
        })
    }
}
