//! Cluster-wide locks for short sections that span members (a project's quota check and the
//! change it lets through): `locks/NAME` held under a lease of its holder, made only where
//! there is none (a transaction), kept alive while held, and gone with the lease when the
//! holder dies or is cut off (within [`LOCK_TTL`]). Such a lock orders work; it is no
//! fencing token (what it guards must stay safe if a holder cut off runs on for the TTL).

use std::time::{Duration, Instant};

use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp};

use crate::etcd::{key, Cluster};
use crate::{Error, Result};

/// Seconds a lock outlives a holder that stopped renewing it.
pub const LOCK_TTL: i64 = 10;

/// How often a waiter looks again.
const POLL: Duration = Duration::from_millis(50);

/// A held lock: released when dropped (its lease revoked; at once if the runtime can, else
/// within [`LOCK_TTL`]).
pub struct ClusterLock {
    client: etcd_client::Client,
    lease: i64,
    keeper: tokio::task::JoinHandle<()>,
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

impl Cluster {
    /// Takes the lock `name` for `holder` (said to whoever waits for it), waiting `wait` at
    /// most: `Conflict` naming the holder when it is still held then.
    pub async fn lock(&self, name: &str, holder: &str, wait: Duration) -> Result<ClusterLock> {
        let client = self.client();
        let lease = self.grant(LOCK_TTL).await?;
        let k = key(&format!("locks/{name}"));
        let until = Instant::now() + wait;
        let taken = loop {
            let txn = Txn::new()
                .when([Compare::version(k.as_str(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(
                    k.as_str(),
                    holder,
                    Some(PutOptions::new().with_lease(lease)),
                )]);
            match self.txn(txn).await {
                Ok(r) if r.succeeded() => break Ok(()),
                Ok(_) if Instant::now() < until => tokio::time::sleep(POLL).await,
                Ok(_) => {
                    let by = self
                        .get(&k, None)
                        .await
                        .ok()
                        .and_then(|r| r.kvs().first().map(|kv| kv.value().to_vec()))
                        .map(|v| String::from_utf8_lossy(&v).into_owned())
                        .unwrap_or_else(|| "another member".into());
                    break Err(Error::Conflict(format!(
                        "{name} is held by {by} for more than {} s",
                        wait.as_secs()
                    )));
                }
                Err(e) => break Err(e),
            }
        };
        if let Err(e) = taken {
            let mut c = client.clone();
            let _ = c.lease_revoke(lease).await;
            return Err(e);
        }
        let mut c = client.clone();
        // Each renewal on a stream of its own: the client's request timeout ends streams.
        let keeper = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(LOCK_TTL as u64 / 3)).await;
                let Ok((mut keeper, mut answers)) = c.lease_keep_alive(lease).await else {
                    continue;
                };
                if keeper.keep_alive().await.is_err() {
                    continue;
                }
                if let Ok(Some(a)) = answers.message().await {
                    if a.ttl() <= 0 {
                        return; // gone: nothing left to keep
                    }
                }
            }
        });
        Ok(ClusterLock {
            client,
            lease,
            keeper,
        })
    }

    /// A new lease of `ttl` seconds.
    async fn grant(&self, ttl: i64) -> Result<i64> {
        let c = self.client();
        let granted =
            crate::etcd::call(&c, |mut c| async move { c.lease_grant(ttl, None).await }).await?;
        Ok(granted.id())
    }
}
