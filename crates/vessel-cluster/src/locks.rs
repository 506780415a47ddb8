//! Cluster-wide locks for short sections that span members (a project's quota check and the
//! change it lets through, a profile's change): `locks/NAME` held under a lease of its
//! holder, made only where there is none (a transaction), the lease renewed from the moment
//! it is granted (also while waiting), and gone with the lease when the holder dies or is
//! cut off (within [`LOCK_TTL`]). Such a lock orders work; it is no fencing token (what it
//! guards must stay safe if a holder cut off runs on for the TTL): a holder can ask whether
//! it lost it ([`ClusterLock::lost`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp, TxnOpResponse};

use crate::etcd::{key, Cluster};
use crate::{Error, Result};

/// Seconds a lock outlives a holder that stopped renewing it.
pub const LOCK_TTL: i64 = 10;

/// How often a waiter looks again (each look is a transaction etcd commits).
const POLL: Duration = Duration::from_millis(200);

/// How often the lease is renewed, and how long one renewal may take.
const RENEW_EVERY: Duration = Duration::from_secs(2);

/// A held lock: released when dropped (its lease revoked; at once if the runtime can, else
/// within [`LOCK_TTL`]).
pub struct ClusterLock {
    client: etcd_client::Client,
    lease: i64,
    keeper: tokio::task::JoinHandle<()>,
    lost: Arc<AtomicBool>,
}

impl ClusterLock {
    /// Whether etcd said the lease is gone (the lock may be another's now).
    pub fn lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }
}

impl Drop for ClusterLock {
    fn drop(&mut self) {
        self.keeper.abort();
        let (mut c, lease) = (self.client.clone(), self.lease);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = c.lease_revoke(lease).await;
            });
        }
    }
}

/// Renews `lease` every [`RENEW_EVERY`] (sooner again after a renewal that failed) until
/// etcd says it is gone, which `lost` then tells.
fn keep(
    client: etcd_client::Client,
    lease: i64,
    name: String,
    lost: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let mut c = client.clone();
            // Each renewal on a stream of its own (the client's request timeout ends
            // streams); opening it renews once and fails if the lease is gone.
            match tokio::time::timeout(RENEW_EVERY, c.lease_keep_alive(lease)).await {
                Ok(Ok(_)) => tokio::time::sleep(RENEW_EVERY).await,
                Ok(Err(etcd_client::Error::LeaseKeepAliveError(why))) => {
                    tracing::warn!(lock = %name, lease, %why, "a cluster lock's lease is gone");
                    lost.store(true, Ordering::SeqCst);
                    return;
                }
                _ => tokio::time::sleep(Duration::from_millis(300)).await,
            }
        }
    })
}

impl Cluster {
    /// Takes the lock `name` for `holder` (said to whoever waits for it), waiting `wait` at
    /// most: `Conflict` naming the holder when it is still held then.
    pub async fn lock(&self, name: &str, holder: &str, wait: Duration) -> Result<ClusterLock> {
        let client = self.client();
        let lease = self.grant(LOCK_TTL).await?;
        let lost = Arc::new(AtomicBool::new(false));
        let keeper = keep(client.clone(), lease, name.to_string(), lost.clone());
        let lock = ClusterLock {
            client,
            lease,
            keeper,
            lost,
        };
        let k = key(&format!("locks/{name}"));
        let until = Instant::now() + wait;
        loop {
            let txn = Txn::new()
                .when([Compare::version(k.as_str(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(
                    k.as_str(),
                    holder,
                    Some(PutOptions::new().with_lease(lease)),
                )])
                .or_else([TxnOp::get(k.as_str(), None)]);
            // Dropping `lock` on an error revokes the lease (and a key made under it).
            let r = self.txn(txn).await?;
            if r.succeeded() {
                return Ok(lock);
            }
            // Held: by this very lease (an attempt that timed out but was made), or another.
            let held = r.op_responses().into_iter().find_map(|o| match o {
                TxnOpResponse::Get(g) => g
                    .kvs()
                    .first()
                    .map(|kv| (kv.lease(), String::from_utf8_lossy(kv.value()).into_owned())),
                _ => None,
            });
            if let Some((l, _)) = &held {
                if *l == lease {
                    return Ok(lock);
                }
            }
            if lock.lost() {
                return Err(Error::Etcd(format!(
                    "the lease of a wait for {name} is gone"
                )));
            }
            if Instant::now() >= until {
                let by = held.map_or_else(|| "another member".into(), |(_, by)| by);
                return Err(Error::Conflict(format!(
                    "{name} is held by {by} for more than {} s",
                    wait.as_secs()
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// A new lease of `ttl` seconds.
    async fn grant(&self, ttl: i64) -> Result<i64> {
        let c = self.client();
        let granted =
            crate::etcd::call(&c, |mut c| async move { c.lease_grant(ttl, None).await }).await?;
        Ok(granted.id())
    }
}
