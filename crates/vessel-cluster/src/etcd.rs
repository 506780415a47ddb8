//! The cluster's state in etcd, through the etcd-client crate.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, PutOptions, Txn, TxnOp,
};
use serde::{Deserialize, Serialize};

use crate::{
    members_with_state, secret_hash, Error, Heartbeat, Member, MemberRecord, Result, Usage,
};

/// Where everything of Vessel lives in etcd.
pub(crate) const PREFIX: &str = "/vessel/";

/// What `cluster` holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct ClusterRecord {
    id: String,
    created_at: String,
    /// How new instances are placed (`spread`, `binpack`); none: spread.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    policy: Option<String>,
    /// Seconds a member stays offline before its HA instances are failed over; none: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    healing_threshold: Option<u64>,
}

/// What `tokens/ID` holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct TokenRecord {
    name: String,
    secret_sha256: String,
}

pub(crate) fn key(rest: &str) -> String {
    format!("{PREFIX}{rest}")
}

/// `removed/NAME`: the certificate fingerprint of member `NAME`, removed (kept until a
/// server joins under that name again).
fn removed_key(name: &str) -> String {
    key(&format!("removed/{name}"))
}

pub(crate) fn json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("records are JSON")
}

pub(crate) fn parse<T: for<'de> Deserialize<'de>>(k: &str, v: &[u8]) -> Result<T> {
    serde_json::from_slice(v).map_err(|e| Error::Etcd(format!("{k} does not parse: {e}")))
}

/// Whether an error is etcd being out of reach for a moment (one endpoint down, a leader
/// election) rather than an answer: such a call is tried again, on another endpoint.
fn transient(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::TransportError(_) => true,
        etcd_client::Error::GRpcStatus(s) => {
            matches!(
                s.code(),
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded
            ) || never_sent(s)
        }
        _ => false,
    }
}

/// Whether the request was never sent: queued on a connection that closed before it went
/// out (hyper's "canceled", which tonic reports as `Cancelled`, as it does the client's
/// own timeout, which is not this).
fn never_sent(s: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(s);
    while let Some(e) = source {
        if e.downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_canceled)
        {
            return true;
        }
        source = e.source();
    }
    false
}

/// Whether the connection broke under the request: a status made here from the
/// connection's failure ("transport error", a broken pipe or a reset underneath), not sent
/// by etcd (a status etcd sends has no source). etcd may have applied the request before
/// the connection went, so only a call that can be repeated safely is tried again on it:
/// reads, puts and deletes, lease calls, not a transaction whose compare a repeat would
/// find failed by its own first attempt.
fn broken(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(s) => {
            s.code() == tonic::Code::Unknown && std::error::Error::source(s).is_some()
        }
        _ => false,
    }
}

/// Tries a call that can be repeated safely until it answers, a few times over a few
/// seconds while etcd is out of reach or the connection breaks under it.
pub(crate) async fn call<T, F, Fut>(client: &Client, f: F) -> Result<T>
where
    F: Fn(Client) -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
{
    call_retrying(client, f, |e| transient(e) || broken(e)).await
}

/// Tries a call until it answers or fails with an error `retry` does not take.
async fn call_retrying<T, F, Fut>(
    client: &Client,
    f: F,
    retry: impl Fn(&etcd_client::Error) -> bool,
) -> Result<T>
where
    F: Fn(Client) -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
{
    let mut tries = 0u64;
    loop {
        match f(client.clone()).await {
            Ok(v) => return Ok(v),
            Err(e) if retry(&e) && tries < 10 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(50 * tries)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// A connection to the cluster's etcd.
#[derive(Clone)]
pub struct Cluster {
    client: Client,
    endpoints: Vec<String>,
}

impl Cluster {
    /// Connects to etcd at `endpoints` (client URLs); fails if none answers in a few
    /// seconds.
    pub async fn connect(endpoints: &[String]) -> Result<Self> {
        Self::connect_with(
            endpoints,
            false,
            Some(Duration::from_secs(3)),
            Duration::from_millis(500),
        )
        .await
    }

    /// As [`Cluster::connect`], for a watch that lasts: no request timeout (it would end
    /// the watch's stream after it; the caller bounds its other calls), HTTP/2 pings every
    /// 5 s (etcd closes a connection pinged more often, `--grpc-keepalive-min-time`, and
    /// the watch with it), and every request refused by an etcd member that has no leader
    /// (cut off from the others' quorum) rather than answered from its own, possibly old,
    /// data: what a copy of etcd's data kept by a watch needs.
    pub async fn connect_for_watching(endpoints: &[String]) -> Result<Self> {
        Self::connect_with(endpoints, true, None, Duration::from_secs(5)).await
    }

    async fn connect_with(
        endpoints: &[String],
        require_leader: bool,
        timeout: Option<Duration>,
        ping: Duration,
    ) -> Result<Self> {
        if endpoints.is_empty() {
            return Err(Error::Invalid(
                "no etcd endpoint given: name its client URLs, e.g. http://10.0.0.1:2379".into(),
            ));
        }
        // HTTP/2 pings twice a second on every connection that has a request or stream on
        // it: a connection to an etcd member whose packets are silently dropped (its host
        // cut off) is closed within a second, its call tried again elsewhere, and the
        // balancer sends nothing more its way until it connects again. Without them, every
        // call that the balancer gave that member waited for the whole request timeout,
        // lease renewals included, and one member cut off made the others fence
        // themselves. Not while idle: etcd (`--grpc-keepalive-min-time`, gRPC's policy)
        // closes a connection pinged with nothing on it, so every idle connection went
        // within two seconds, sometimes with a request on it.
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_keep_alive(ping, Duration::from_millis(500).max(ping / 2))
            .with_keep_alive_while_idle(false)
            .with_require_leader(require_leader);
        if let Some(t) = timeout {
            opts = opts.with_timeout(t);
        }
        let client = Client::connect(endpoints, Some(opts))
            .await
            .map_err(|e| Error::Etcd(format!("cannot reach {}: {e}", endpoints.join(", "))))?;
        // The connection is lazy: a status call says whether anyone answers.
        call(&client, |mut c| async move { c.status().await })
            .await
            .map_err(|e| Error::Etcd(format!("no answer from {}: {e}", endpoints.join(", "))))?;
        Ok(Cluster {
            client,
            endpoints: endpoints.to_vec(),
        })
    }

    pub(crate) fn client(&self) -> Client {
        self.client.clone()
    }

    pub(crate) async fn get(
        &self,
        k: &str,
        opts: Option<GetOptions>,
    ) -> Result<etcd_client::GetResponse> {
        call(&self.client, |mut c| {
            let (k, opts) = (k.to_string(), opts.clone());
            async move { c.get(k, opts).await }
        })
        .await
    }

    pub(crate) async fn put(&self, k: &str, v: Vec<u8>, opts: Option<PutOptions>) -> Result<()> {
        call(&self.client, |mut c| {
            let (k, v, opts) = (k.to_string(), v.clone(), opts.clone());
            async move { c.put(k, v, opts).await }
        })
        .await
        .map(|_| ())
    }

    /// Runs a transaction; tried again only while etcd is out of reach, not when the
    /// connection broke under it (see [`broken`]): that error goes to the caller.
    pub(crate) async fn txn(&self, txn: Txn) -> Result<etcd_client::TxnResponse> {
        let f = |mut c: Client| {
            let txn = txn.clone();
            async move { c.txn(txn).await }
        };
        call_retrying(&self.client, f, transient).await
    }

    /// Rewrites the JSON record at `k` with `change`, in a transaction that holds only if
    /// the record is unchanged since it was read: `Ok(false)` when it changed meanwhile (the
    /// caller may try again), `NotFound` (`what`) when there is none, and `change`'s error
    /// as it is.
    pub(crate) async fn rewrite<T, F>(&self, k: &str, what: &str, change: F) -> Result<bool>
    where
        T: Serialize + for<'de> Deserialize<'de>,
        F: FnOnce(&mut T) -> Result<()>,
    {
        let resp = self.get(k, None).await?;
        let Some(kv) = resp.kvs().first() else {
            return Err(Error::NotFound(what.to_string()));
        };
        let mut rec: T = parse(k, kv.value())?;
        change(&mut rec)?;
        let txn = Txn::new()
            .when([Compare::mod_revision(
                k,
                CompareOp::Equal,
                kv.mod_revision(),
            )])
            .and_then([TxnOp::put(k, json(&rec), None)]);
        Ok(self.txn(txn).await?.succeeded())
    }

    /// The cluster's id, if etcd holds one.
    pub async fn id(&self) -> Result<Option<String>> {
        let k = key("cluster");
        let resp = self.get(&k, None).await?;
        match resp.kvs().first() {
            Some(kv) => Ok(Some(parse::<ClusterRecord>(&k, kv.value())?.id)),
            None => Ok(None),
        }
    }

    /// The cluster's record (its settings).
    async fn cluster_record(&self) -> Result<ClusterRecord> {
        let k = key("cluster");
        let resp = self.get(&k, None).await?;
        let Some(kv) = resp.kvs().first() else {
            return Err(Error::NotFound("etcd holds no cluster".into()));
        };
        parse::<ClusterRecord>(&k, kv.value())
    }

    /// Changes the cluster's record with `change` (a setting: the last writer's stays).
    async fn set_cluster_record(&self, change: impl Fn(&mut ClusterRecord)) -> Result<()> {
        self.settle(
            &key("cluster"),
            "etcd holds no cluster",
            change,
            "the cluster's record kept changing; try again",
        )
        .await
    }

    /// Applies `change` (a setting: applied twice, it changes nothing more) to the record
    /// at `k`, read and written back unless it changed in between, then again. So a write
    /// in between (another setting) is not lost, and an attempt that applied but whose
    /// answer was lost (its repeat's compare failed) is found applied by the next one.
    async fn settle<T>(
        &self,
        k: &str,
        what: &str,
        change: impl Fn(&mut T),
        busy: &str,
    ) -> Result<()>
    where
        T: Serialize + for<'de> Deserialize<'de>,
    {
        for _ in 0..8 {
            let set = |rec: &mut T| {
                change(rec);
                Ok(())
            };
            if self.rewrite(k, what, set).await? {
                return Ok(());
            }
        }
        Err(Error::Conflict(busy.into()))
    }

    /// How new instances are placed (`spread` unless set).
    pub async fn policy(&self) -> Result<String> {
        Ok(self
            .cluster_record()
            .await?
            .policy
            .unwrap_or_else(|| "spread".into()))
    }

    /// Sets how new instances are placed (the caller checked the name).
    pub async fn set_policy(&self, policy: &str) -> Result<()> {
        self.set_cluster_record(|rec| rec.policy = Some(policy.to_string()))
            .await
    }

    /// Seconds a member stays offline before its `ha` instances are failed over (none: they
    /// are not).
    pub async fn healing_threshold(&self) -> Result<Option<u64>> {
        Ok(self.cluster_record().await?.healing_threshold)
    }

    /// Sets (or with `None` ends) failover after `seconds` offline.
    pub async fn set_healing_threshold(&self, seconds: Option<u64>) -> Result<()> {
        self.set_cluster_record(|rec| rec.healing_threshold = seconds)
            .await
    }

    /// Makes the cluster with `me` its first member; refused if etcd holds one already.
    pub async fn init(&self, id: &str, now: &str, me: &MemberRecord) -> Result<()> {
        let ck = key("cluster");
        let mk = key(&format!("members/{}", me.name));
        let rec = ClusterRecord {
            id: id.into(),
            created_at: now.into(),
            policy: None,
            healing_threshold: None,
        };
        let txn = Txn::new()
            .when([Compare::version(ck.as_str(), CompareOp::Equal, 0)])
            .and_then([
                TxnOp::put(ck.as_str(), json(&rec), None),
                TxnOp::put(mk.as_str(), json(me), None),
            ]);
        if self.txn(txn).await?.succeeded() {
            return Ok(());
        }
        // Made by this call's first attempt, whose answer was lost: the same cluster, with
        // this member in it.
        let other = self.id().await?.unwrap_or_default();
        if other == rec.id && self.recorded_as(me).await? {
            return Ok(());
        }
        Err(Error::Conflict(format!(
            "etcd at {} already holds a Vessel cluster (id {other}): join it with a token from \
             one of its members (`vessel cluster add NAME` there)",
            self.endpoints.join(", ")
        )))
    }

    /// Records a join token for the member `name`, valid `ttl`; refused if a member of that
    /// name exists.
    pub async fn issue_token(
        &self,
        id: &str,
        secret: &str,
        name: &str,
        ttl: Duration,
    ) -> Result<()> {
        crate::validate_name(name)?;
        if self.record(name).await?.is_some() {
            return Err(Error::Conflict(format!(
                "member {name} exists already: choose another name, or `vessel cluster remove \
                 {name}` first"
            )));
        }
        let secs = ttl.as_secs().max(1) as i64;
        let lease = call(&self.client, |mut c| async move {
            c.lease_grant(secs, None).await
        })
        .await?;
        let rec = TokenRecord {
            name: name.into(),
            secret_sha256: secret_hash(secret),
        };
        self.put(
            &key(&format!("tokens/{id}")),
            json(&rec),
            Some(PutOptions::new().with_lease(lease.id())),
        )
        .await
    }

    /// Redeems the token `id` with `secret` for `member`: the token is deleted and the member
    /// written in one transaction, so a token makes one member at most.
    pub async fn redeem(&self, id: &str, secret: &str, member: &MemberRecord) -> Result<()> {
        let refused = || {
            Error::Refused(
                "join token refused: it is unknown, used or expired; ask a member for a new one \
                 (`vessel cluster add NAME`)"
                    .into(),
            )
        };
        let tk = key(&format!("tokens/{id}"));
        let resp = self.get(&tk, None).await?;
        let Some(kv) = resp.kvs().first() else {
            // Redeemed by this call's first attempt, whose answer was lost: the token is
            // gone and the member written as given.
            if self.recorded_as(member).await? {
                return Ok(());
            }
            return Err(refused());
        };
        let rec: TokenRecord = parse(&tk, kv.value())?;
        if rec.secret_sha256 != secret_hash(secret) {
            return Err(refused());
        }
        if rec.name != member.name {
            return Err(Error::Refused(format!(
                "this join token is for a member named {}, not {}",
                rec.name, member.name
            )));
        }
        let mk = key(&format!("members/{}", member.name));
        // A member of that name removed before: the same server (its certificate) keeps
        // the marks of its stale copies, another server takes the name without them (they
        // would have it delete instances of its own that happen to bear those names).
        let rk = removed_key(&member.name);
        let removed = self.get(&rk, None).await?;
        let removed = removed.kvs().first();
        let mut ops = vec![
            TxnOp::delete(tk.as_str(), None),
            TxnOp::put(mk.as_str(), json(member), None),
        ];
        if let Some(r) = removed {
            ops.push(TxnOp::delete(rk.as_str(), None));
            if r.value() != member.fingerprint.as_bytes() {
                ops.push(TxnOp::delete(
                    key(&format!("stale/{}/", member.name)),
                    Some(DeleteOptions::new().with_prefix()),
                ));
            }
        }
        let txn = Txn::new()
            .when([
                Compare::mod_revision(tk.as_str(), CompareOp::Equal, kv.mod_revision()),
                Compare::version(mk.as_str(), CompareOp::Equal, 0),
                Compare::mod_revision(
                    rk.as_str(),
                    CompareOp::Equal,
                    removed.map_or(0, |r| r.mod_revision()),
                ),
            ])
            .and_then(ops);
        if self.txn(txn).await?.succeeded() {
            return Ok(());
        }
        let gone = self.get(&tk, None).await?.kvs().is_empty();
        if gone && self.recorded_as(member).await? {
            return Ok(());
        }
        Err(refused())
    }

    /// Whether etcd holds `me`'s record as `me` writes it: the same name, address and
    /// certificate (what it says of itself may have been rewritten since, when it joined
    /// not).
    async fn recorded_as(&self, me: &MemberRecord) -> Result<bool> {
        Ok(self
            .record(&me.name)
            .await?
            .is_some_and(|r| r.address == me.address && r.fingerprint == me.fingerprint))
    }

    /// The record of the member `name`, if there is one.
    pub async fn record(&self, name: &str) -> Result<Option<MemberRecord>> {
        let k = key(&format!("members/{name}"));
        let resp = self.get(&k, None).await?;
        resp.kvs()
            .first()
            .map(|kv| parse(&k, kv.value()))
            .transpose()
    }

    /// Replaces a member's record (its address, capacity): as it says of itself.
    pub async fn update(&self, member: &MemberRecord) -> Result<()> {
        self.put(
            &key(&format!("members/{}", member.name)),
            json(member),
            None,
        )
        .await
    }

    /// Marks the member `name` evacuated (nothing new placed on it) or not.
    pub async fn set_evacuated(&self, name: &str, evacuated: bool) -> Result<()> {
        self.settle(
            &key(&format!("members/{name}")),
            &format!("no member {name} in the cluster"),
            |rec: &mut MemberRecord| rec.evacuated = evacuated,
            &format!("member {name}'s record kept changing; try again"),
        )
        .await
    }

    /// Every member with its state.
    pub async fn members(&self) -> Result<Vec<Member>> {
        let recs = self
            .get(&key("members/"), Some(GetOptions::new().with_prefix()))
            .await?;
        let beats = self
            .get(&key("alive/"), Some(GetOptions::new().with_prefix()))
            .await?;
        let records = recs
            .kvs()
            .iter()
            .map(|kv| parse::<MemberRecord>(kv.key_str().unwrap_or("?"), kv.value()))
            .collect::<Result<Vec<_>>>()?;
        let beats = beats
            .kvs()
            .iter()
            .map(|kv| {
                let k = kv.key_str().unwrap_or("?");
                let name = k.rsplit('/').next().unwrap_or_default().to_string();
                parse::<Heartbeat>(k, kv.value()).map(|h| (name, h))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(members_with_state(records, &beats))
    }

    /// Removes the member `name`; an online one only with `force` (its daemon would go on
    /// beating and answering as a member otherwise). The marks of its copies that are stale
    /// (`stale/NAME/…`: instances failed over from it and deleted since) stay, with a note
    /// of its certificate (`removed/NAME`): should the same server join again under that
    /// name, they keep it from claiming those instances back; another server that takes
    /// the name drops them (`redeem`).
    pub async fn remove(&self, name: &str, force: bool) -> Result<()> {
        let Some(rec) = self.record(name).await? else {
            return Err(Error::NotFound(format!("no member {name} in the cluster")));
        };
        let alive = self.get(&key(&format!("alive/{name}")), None).await?;
        if !alive.kvs().is_empty() && !force {
            return Err(Error::Conflict(format!(
                "member {name} is online: stop its daemon first (or remove it with --force)"
            )));
        }
        let note = removed_key(name);
        let fingerprint = rec.fingerprint.clone();
        call(&self.client, |mut c| {
            let (note, fingerprint) = (note.clone(), fingerprint.clone());
            async move { c.put(note, fingerprint, None).await }
        })
        .await?;
        let mut gone = vec![
            key(&format!("members/{name}")),
            key(&format!("alive/{name}")),
        ];
        gone.extend(self.held_by(name).await?);
        for k in gone {
            call(&self.client, |mut c| {
                let k = k.clone();
                async move { c.delete(k, None).await }
            })
            .await?;
        }
        Ok(())
    }

    /// The keys of what the member `name` holds on cluster networks: its address blocks
    /// and its NICs (given back when it is removed).
    async fn held_by(&self, name: &str) -> Result<Vec<String>> {
        let mut keys = Vec::new();
        let blocks = self
            .get(&key("netblocks/"), Some(GetOptions::new().with_prefix()))
            .await?;
        for kv in blocks.kvs() {
            if kv.value() == name.as_bytes() {
                keys.push(kv.key_str().unwrap_or_default().to_string());
            }
        }
        let hosts = self
            .get(&key("nethosts/"), Some(GetOptions::new().with_prefix()))
            .await?;
        for kv in hosts.kvs() {
            let held = serde_json::from_slice::<crate::NetHost>(kv.value())
                .is_ok_and(|h| h.member == name);
            if held {
                keys.push(kv.key_str().unwrap_or_default().to_string());
            }
        }
        Ok(keys)
    }

    /// Starts beating for the member `name`: a lease of `ttl` renewed every third of it,
    /// `alive/NAME` attached to it and rewritten at each renewal with what `now_and_usage`
    /// says. A lost lease (etcd unreachable longer than the TTL) is replaced by a new one
    /// once etcd answers again.
    pub fn heartbeat<F>(&self, name: &str, ttl: Duration, now_and_usage: F) -> Heartbeater
    where
        F: Fn() -> (String, Usage) + Send + Sync + 'static,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let lease = Arc::new(Mutex::new(None));
        let renewed = Arc::new(Mutex::new(std::time::Instant::now()));
        let (fence_tx, fenced) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(beat(Beat {
            client: self.client.clone(),
            name: name.to_string(),
            ttl,
            source: Arc::new(now_and_usage),
            stop: stop.clone(),
            held: lease.clone(),
            renewed: renewed.clone(),
        }));
        let watchdog = tokio::spawn(watchdog(name.to_string(), ttl, renewed.clone(), fence_tx));
        Heartbeater {
            client: self.client.clone(),
            name: name.to_string(),
            fenced,
            watchdog,
            task,
            stop,
            lease,
            renewed,
        }
    }
}

/// A member's running heartbeat.
pub struct Heartbeater {
    client: Client,
    name: String,
    fenced: tokio::sync::watch::Receiver<bool>,
    watchdog: tokio::task::JoinHandle<()>,
    task: tokio::task::JoinHandle<()>,
    stop: Arc<AtomicBool>,
    lease: Arc<Mutex<Option<i64>>>,
    renewed: Arc<Mutex<std::time::Instant>>,
}

impl Heartbeater {
    /// Whether this member is fenced now: its last lease renewal is older than half the
    /// TTL, so the others may soon take it for dead. Changes are seen through
    /// [`tokio::sync::watch::Receiver::changed`].
    pub fn fenced(&self) -> tokio::sync::watch::Receiver<bool> {
        self.fenced.clone()
    }

    /// The lease held now, if any.
    fn lease(&self) -> Option<i64> {
        *self.lease.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How long ago the last renewal etcd confirmed was asked; `None` while no lease is held.
    pub fn renewed_ago(&self) -> Option<Duration> {
        self.lease()?;
        Some(
            self.renewed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .elapsed(),
        )
    }

    /// Stops beating without giving the lease up: the member goes offline when the lease
    /// expires, a TTL after its last renewal (a stop while HA instances run, which the
    /// member's watchdog stops before that).
    pub async fn abandon(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.task.abort();
        self.watchdog.abort();
        let _ = (&mut self.task).await;
        tracing::info!("cluster heartbeat stopped; the lease expires by itself");
    }

    /// Stops beating and revokes the lease (which deletes `alive/NAME`): the member is
    /// offline at once.
    pub async fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.task.abort();
        self.watchdog.abort();
        // Wait for the task to be gone: a write of it in flight would bring the key back.
        let _ = (&mut self.task).await;
        // The key goes in any case: the lease held may have been given up after an error
        // (a new one on its way) while the key still hangs on the old one.
        let alive = key(&format!("alive/{}", self.name));
        let deleted = call(&self.client, |mut c| {
            let k = alive.clone();
            async move { c.delete(k, None).await }
        })
        .await;
        if let Err(e) = deleted {
            tracing::warn!(error = %e, "deleting the heartbeat failed; it expires with its lease");
        }
        if let Some(id) = self.lease() {
            match call(
                &self.client,
                |mut c| async move { c.lease_revoke(id).await },
            )
            .await
            {
                Ok(_) => tracing::info!(lease = id, "cluster heartbeat stopped, lease revoked"),
                Err(e) => {
                    tracing::warn!(lease = id, error = %e, "revoking the lease failed; it expires by itself")
                }
            }
        }
    }
}

impl Drop for Heartbeater {
    fn drop(&mut self) {
        self.task.abort();
        self.watchdog.abort();
    }
}

/// When a member fences itself: this long after its last renewal that etcd confirmed. etcd
/// expires the lease a TTL after the renewal it received (a little before the answer came
/// back), so a member fenced at half the TTL has stopped what it must stop well before the
/// others can see it offline.
pub fn fence_after(ttl: Duration) -> Duration {
    ttl / 2
}

/// When a member's HA processes are killed if its daemon has fallen silent: this long after
/// the last renewal etcd confirmed. Later than [`fence_after`] (a daemon that is alive
/// fences itself first, and a renewal late by a leader election does not kill them), and a
/// quarter of the TTL before the lease can expire.
pub fn kill_after(ttl: Duration) -> Duration {
    ttl * 3 / 4
}

/// Raises the fence when renewals stop coming, lowers it when they come again.
async fn watchdog(
    name: String,
    ttl: Duration,
    renewed: Arc<Mutex<std::time::Instant>>,
    fence: tokio::sync::watch::Sender<bool>,
) {
    let limit = fence_after(ttl);
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let since = renewed.lock().unwrap_or_else(|p| p.into_inner()).elapsed();
        let now_fenced = since > limit;
        if now_fenced != *fence.borrow() {
            if now_fenced {
                tracing::warn!(member = %name, since_ms = since.as_millis() as u64, "no lease renewal: fenced");
            } else {
                tracing::info!(member = %name, "lease renewed again: fence lowered");
            }
            let _ = fence.send(now_fenced);
        }
    }
}

type Source = Arc<dyn Fn() -> (String, Usage) + Send + Sync>;

/// What a heartbeat task works with.
struct Beat {
    client: Client,
    name: String,
    ttl: Duration,
    source: Source,
    stop: Arc<AtomicBool>,
    /// The lease held now.
    held: Arc<Mutex<Option<i64>>>,
    /// When the last renewal etcd confirmed was asked.
    renewed: Arc<Mutex<std::time::Instant>>,
}

async fn beat(b: Beat) {
    let mut told = false;
    while !b.stop.load(Ordering::SeqCst) {
        match beat_on_one_lease(&b).await {
            Ok(()) => return,
            Err(e) => {
                if !told {
                    tracing::warn!(member = %b.name, error = %e, "cluster heartbeat interrupted; retrying");
                    told = true;
                }
                // The lease is kept while it may still live: an etcd member gone makes
                // calls fail for a moment, which is no reason to give up the lease (its
                // key would vanish when it expires while a new one is not yet written).
                let renewed = b
                    .renewed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .elapsed();
                if renewed >= b.ttl {
                    *b.held.lock().unwrap_or_else(|p| p.into_inner()) = None;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// How long a renewal's answer is waited for before it is asked again on a new stream.
const ANSWER_WAIT: Duration = Duration::from_millis(800);

/// Why a call of the heartbeat did not answer.
enum Miss {
    /// No answer in the time given.
    Late,
    /// An error that is an answer (not etcd out of reach for a moment).
    Failed(etcd_client::Error),
}

impl From<Miss> for Error {
    fn from(m: Miss) -> Self {
        match m {
            Miss::Late => Error::Etcd("etcd did not answer the heartbeat in time".into()),
            Miss::Failed(e) => e.into(),
        }
    }
}

/// Calls `f` until it answers or `wait` has passed, again at once after a transient error:
/// the client's balancer may hand a call to an etcd member that is gone (the call fails to
/// connect), the next one to another.
async fn within<T, F, Fut>(wait: Duration, mut f: F) -> std::result::Result<T, Miss>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
{
    let until = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(until, f()).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) if transient(&e) || broken(&e) => {
                let next = tokio::time::Instant::now() + Duration::from_millis(50);
                if next >= until {
                    return Err(Miss::Late);
                }
                tokio::time::sleep_until(next).await;
            }
            Ok(Err(e)) => return Err(Miss::Failed(e)),
            Err(_) => return Err(Miss::Late),
        }
    }
}

/// Beats on one lease until it is lost (an error) or `stop` is set (Ok). The lease held
/// is taken up again if it may still live; otherwise a new one is granted.
async fn beat_on_one_lease(b: &Beat) -> Result<()> {
    let (client, name, ttl, source, stop, held, renewed) = (
        &b.client, &b.name, b.ttl, &b.source, &b.stop, &b.held, &b.renewed,
    );
    let period = ttl / 3;
    let c = client.clone();
    let kept = *held.lock().unwrap_or_else(|p| p.into_inner());
    let lease = match kept {
        Some(lease) => lease,
        None => {
            let asked = std::time::Instant::now();
            let lease = within(period, || {
                let mut c = c.clone();
                async move { c.lease_grant(ttl.as_secs().max(1) as i64, None).await }
            })
            .await?
            .id();
            *renewed.lock().unwrap_or_else(|p| p.into_inner()) = asked;
            *held.lock().unwrap_or_else(|p| p.into_inner()) = Some(lease);
            tracing::info!(member = %name, lease, "cluster heartbeat on a new lease");
            lease
        }
    };
    let keep_alive = || {
        let mut c = c.clone();
        async move { c.lease_keep_alive(lease).await }
    };
    let (mut keeper, mut stream) = within(ANSWER_WAIT, keep_alive).await?;
    let k = key(&format!("alive/{name}"));
    let mut first = true;
    loop {
        let (at, usage) = source();
        let beat = Heartbeat { at, usage, lease };
        let put = within(ANSWER_WAIT, || {
            let mut c = c.clone();
            let (k, v) = (k.clone(), json(&beat));
            async move { c.put(k, v, Some(PutOptions::new().with_lease(lease))).await }
        });
        // The key must be there at first; later a put that is late (etcd busy electing a
        // leader) only delays the usage figures, never the renewal.
        match put.await {
            Ok(_) => {}
            Err(Miss::Late) if !first => {
                tracing::debug!(member = %name, "heartbeat key not rewritten in time");
            }
            Err(Miss::Failed(e)) => {
                // The lease is gone (etcd says so) or the key refused: start again.
                *held.lock().unwrap_or_else(|p| p.into_inner()) = None;
                return Err(e.into());
            }
            Err(Miss::Late) => return Err(Error::Etcd("the heartbeat key was not written".into())),
        }
        first = false;
        tokio::time::sleep(period).await;
        if stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        // The renewal counts from when it was asked: etcd renewed it after that. A renewal
        // not answered soon is asked again on a new stream (which the balancer gives a
        // connection that answers), on the same lease, as long as it may still live.
        let asked = std::time::Instant::now();
        loop {
            let answer = match keeper.keep_alive().await {
                Ok(()) => tokio::time::timeout(ANSWER_WAIT, stream.message()).await,
                Err(e) => Ok(Err(e)),
            };
            match answer {
                Ok(Ok(Some(r))) if r.ttl() > 0 => {
                    *renewed.lock().unwrap_or_else(|p| p.into_inner()) = asked;
                    break;
                }
                Ok(Ok(Some(_))) => {
                    *held.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    return Err(Error::Etcd(format!("lease {lease} expired")));
                }
                _ if renewed.lock().unwrap_or_else(|p| p.into_inner()).elapsed() < ttl => {
                    tracing::debug!(member = %name, lease, "lease renewal unanswered; asking again on a new stream");
                    match within(ANSWER_WAIT, keep_alive).await {
                        Ok((k2, s2)) => {
                            keeper = k2;
                            stream = s2;
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
                Ok(Err(e)) => return Err(e.into()),
                _ => {
                    return Err(Error::Etcd(format!(
                        "lease {lease}: no answer to a renewal"
                    )))
                }
            }
        }
    }
}

/// A watch on the members' records: it says when one may have changed (joined, removed,
/// its certificate or address rewritten).
pub struct MemberWatch(etcd_client::WatchStream);

impl MemberWatch {
    /// Waits for a change; an error when the watch ended (etcd out of reach): watch again.
    pub async fn changed(&mut self) -> Result<()> {
        match self.0.message().await? {
            Some(_) => Ok(()),
            None => Err(Error::Etcd("the watch on the members ended".into())),
        }
    }
}

impl Cluster {
    /// Starts watching the members' records (the first change it says is its start).
    pub async fn watch_members(&self) -> Result<MemberWatch> {
        let mut c = self.client.clone();
        let stream = c
            .watch(
                key("members/"),
                Some(etcd_client::WatchOptions::new().with_prefix()),
            )
            .await?;
        Ok(MemberWatch(stream))
    }
}
