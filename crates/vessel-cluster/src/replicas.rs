//! Far copies of replicated pools: `replicas/NAME` says which member holds the pool (its
//! primary), which keeps the far copy, and whether that copy is out of date (the primary
//! went on writing without it). A primary writes `outdated` before it acknowledges a write
//! the far copy did not get, so that a copy missing acknowledged writes is never promoted;
//! it clears the mark once the copy is resynced. Every change is a transaction on the
//! record as read: a primary whose copy was adopted by its keeper (the roles swapped) can
//! no longer mark anything, so its writes stay held back.

use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use serde::{Deserialize, Serialize};

use crate::etcd::{json, key, parse};
use crate::{Cluster, Error, Result};

/// The state of one far copy.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReplicaState {
    /// The member whose pool it copies.
    pub primary: String,
    /// The member that keeps it.
    pub member: String,
    /// The primary acknowledged writes the copy does not have.
    pub outdated: bool,
    /// This copy's own id (a new copy of the same name has another): a mark meant for
    /// an earlier copy of the name changes nothing.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
}

fn replica_key(name: &str) -> String {
    key(&format!("replicas/{name}"))
}

impl Cluster {
    /// Records the state of a new far copy `name`; refused if one of that name is
    /// recorded (an adopted copy's record stays with its adopter).
    pub async fn set_replica(&self, name: &str, state: &ReplicaState) -> Result<()> {
        let k = replica_key(name);
        let txn = Txn::new()
            .when([Compare::version(k.as_str(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(k.as_str(), json(state), None)]);
        if self.txn(txn).await?.succeeded() {
            return Ok(());
        }
        // Recorded by this call's first attempt, whose answer was lost: the same state.
        if self.replica(name).await?.as_ref() == Some(state) {
            return Ok(());
        }
        Err(Error::Conflict(format!(
            "a far copy {name} is recorded already (see `etcdctl get` of its key); \
             give the pool another name"
        )))
    }

    /// The state of far copy `name` with its revision, if recorded.
    async fn replica_rev(&self, name: &str) -> Result<Option<(ReplicaState, i64)>> {
        let k = replica_key(name);
        let resp = self.get(&k, None).await?;
        resp.kvs()
            .first()
            .map(|kv| parse(&k, kv.value()).map(|s| (s, kv.mod_revision())))
            .transpose()
    }

    /// The state of far copy `name`, if recorded.
    pub async fn replica(&self, name: &str) -> Result<Option<ReplicaState>> {
        Ok(self.replica_rev(name).await?.map(|(s, _)| s))
    }

    /// Rewrites far copy `name`'s record with `change` if `check` holds of it, in a
    /// transaction against the record as read (retried when it changed meanwhile); returns
    /// the record as it was.
    async fn change_replica(
        &self,
        name: &str,
        check: impl Fn(&ReplicaState) -> Result<()>,
        change: impl Fn(&mut ReplicaState),
    ) -> Result<ReplicaState> {
        let k = replica_key(name);
        let missing = format!("no far copy {name} is recorded");
        for _ in 0..5 {
            let mut before = None;
            let done = self
                .rewrite(&k, &missing, |s: &mut ReplicaState| {
                    check(s)?;
                    before = Some(s.clone());
                    change(s);
                    Ok(())
                })
                .await?;
            if let (true, Some(before)) = (done, before) {
                return Ok(before);
            }
        }
        Err(Error::Conflict(format!(
            "far copy {name}'s record keeps changing; try again"
        )))
    }

    /// The primary `primary` records far copy `name` out of date (or current again);
    /// refused once it is no longer the primary.
    /// (`id`: the copy's own, as its primary knows it; empty: any copy of the name.)
    pub async fn mark_replica(
        &self,
        name: &str,
        primary: &str,
        id: &str,
        outdated: bool,
    ) -> Result<()> {
        self.change_replica(
            name,
            |s| {
                if !id.is_empty() && s.id != id {
                    Err(Error::Conflict(format!(
                        "far copy {name} is another copy now (a pool of that name was made again)"
                    )))
                } else if s.primary == primary {
                    Ok(())
                } else {
                    Err(Error::Conflict(format!(
                        "{primary} is no longer the primary of {name}: {} adopted it",
                        s.primary
                    )))
                }
            },
            |s| s.outdated = outdated,
        )
        .await
        .map(|_| ())
    }

    /// The keeper `me` of far copy `name` makes it its own (its primary is lost): only if
    /// it keeps it and it is current. The roles swap: `me` is the primary, the old primary's
    /// copy is the out-of-date one. Returns the state before.
    pub async fn adopt_replica(&self, name: &str, me: &str) -> Result<ReplicaState> {
        let adopted = self
            .change_replica(
                name,
                |s| {
                    if s.member != me {
                        return Err(Error::Conflict(format!(
                            "far copy {name} is kept by {}, not by {me}",
                            s.member
                        )));
                    }
                    if s.outdated {
                        return Err(Error::Conflict(format!(
                            "far copy {name} is out of date: {} acknowledged writes it does not \
                         have after it went out; it is not adopted (the data is on {})",
                            s.primary, s.primary
                        )));
                    }
                    Ok(())
                },
                |s| {
                    let old = std::mem::replace(&mut s.primary, me.to_string());
                    s.member = old;
                    s.outdated = true;
                },
            )
            .await;
        let Err(Error::Conflict(why)) = adopted else {
            return adopted;
        };
        // Adopted already by this member's own attempt whose answer was lost (a request
        // timeout, then the compare of the retry failed; or the caller's repeat): the roles
        // are swapped as it swaps them. The state before is the one the swap undoes.
        match self.replica(name).await? {
            Some(s) if s.primary == me && s.member != me && s.outdated => Ok(ReplicaState {
                primary: s.member,
                member: me.to_string(),
                outdated: false,
                id: s.id,
            }),
            _ => Err(Error::Conflict(why)),
        }
    }

    /// Forgets far copy `name` if `primary` is still its primary (its pool is gone), or if
    /// it was `primary`'s and another member adopted it.
    pub async fn drop_replica(&self, name: &str, primary: &str) -> Result<()> {
        let Some((state, rev)) = self.replica_rev(name).await? else {
            return Ok(());
        };
        // Its own copy, or the record of its pool's copy another member adopted (which
        // only told it that its pool is stale: once that pool is deleted, nothing needs it,
        // and the name is free for a new copy).
        let adopted_from_it = state.member == primary && name.starts_with(&format!("{primary}."));
        if state.primary != primary && !adopted_from_it {
            return Ok(());
        }
        let k = replica_key(name);
        self.txn(
            Txn::new()
                .when([Compare::mod_revision(k.as_str(), CompareOp::Equal, rev)])
                .and_then([TxnOp::delete(k.as_str(), None)]),
        )
        .await
        .map(|_| ())
    }
}
