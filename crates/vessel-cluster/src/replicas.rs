//! Far copies of replicated pools: `replicas/NAME` says which member holds the pool (its
//! primary), which keeps the far copy, and whether that copy is out of date (the primary
//! went on writing without it). A primary writes `outdated` before it acknowledges a write
//! the far copy did not get, so that a copy missing acknowledged writes is never promoted;
//! it clears the mark once the copy is resynced.

use etcd_client::{Txn, TxnOp};
use serde::{Deserialize, Serialize};

use crate::etcd::{json, key, parse};
use crate::{Cluster, Result};

/// The state of one far copy.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReplicaState {
    /// The member whose pool it copies.
    pub primary: String,
    /// The member that keeps it.
    pub member: String,
    /// The primary acknowledged writes the copy does not have.
    pub outdated: bool,
}

fn replica_key(name: &str) -> String {
    key(&format!("replicas/{name}"))
}

impl Cluster {
    /// Records the state of far copy `name`.
    pub async fn set_replica(&self, name: &str, state: &ReplicaState) -> Result<()> {
        self.put(&replica_key(name), json(state), None).await
    }

    /// The state of far copy `name`, if recorded.
    pub async fn replica(&self, name: &str) -> Result<Option<ReplicaState>> {
        let k = replica_key(name);
        let resp = self.get(&k, None).await?;
        resp.kvs()
            .first()
            .map(|kv| parse(&k, kv.value()))
            .transpose()
    }

    /// Forgets far copy `name` (its pool is gone).
    pub async fn drop_replica(&self, name: &str) -> Result<()> {
        let k = replica_key(name);
        self.txn(Txn::new().and_then([TxnOp::delete(k.as_str(), None)]))
            .await
            .map(|_| ())
    }
}
