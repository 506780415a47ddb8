//! Where each instance lives: `instances/PROJECT/NAME` holds the member it is on. A member
//! claims a name before it makes the instance (a transaction that fails if another member
//! holds it: no name twice in a cluster), and keeps the index true of its own instances
//! (`sync_instances`: renamed, copied, imported, deleted ones), with what each asks for
//! (its CPU and memory limits): the scheduler's count of each member's commitments, current
//! from the moment a name is claimed. `stale/MEMBER/PROJECT/NAME` outlives the entry of an
//! instance failed over from `MEMBER` and deleted since: that member's copy is stale.

use std::collections::{BTreeMap, BTreeSet};

use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp};
use serde::{Deserialize, Serialize};

use crate::etcd::{json, key, parse};
use crate::{Cluster, Error, Result};

/// An instance's place in the cluster.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Location {
    /// Its project.
    #[serde(skip)]
    pub project: String,
    /// Its name in the project.
    #[serde(skip)]
    pub name: String,
    /// The member it lives on.
    pub member: String,
    /// What it asks for.
    #[serde(default)]
    pub asks: Asks,
    /// The member it was evacuated from (moved away, or stopped where it is), to which
    /// `restore` brings it back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// The member it was failed over from (taken over while that member was offline): that
    /// member's copy is stale and goes when it is back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_over_from: Option<String>,
    /// etcd's revision of this entry when it was read: what a change compares against, and
    /// for the member an instance was failed over to, its fencing token.
    #[serde(skip)]
    pub revision: i64,
    /// Said by `sync_instances` of a copy marked stale (`stale/...`): it goes whatever it
    /// is.
    #[serde(skip)]
    pub stale: bool,
}

/// What an instance asks of its member: its limits (none: nothing, a best-effort one) and
/// its anti-affinity group.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Asks {
    /// CPU cores.
    #[serde(default)]
    pub cpu: f64,
    /// Memory, bytes.
    #[serde(default)]
    pub memory: u64,
    /// Its placement group (`PROJECT/GROUP`): no two of a group on one member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// For an instance made highly available: what makes it again on another member when
    /// its own is lost (opaque here: the daemon's creation request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<serde_json::Value>,
    /// Beside `restart`: what the instance keeps of its profiles when it is made again (opaque
    /// here: the keys it set itself and the devices its profiles gave).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keeps: Option<serde_json::Value>,
    /// The far copies (`MEMBER.POOL`) of the replicated pools its volumes are on: it fails
    /// over only to the member keeping them, which adopts them first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<String>,
}

fn instance_key(project: &str, name: &str) -> String {
    key(&format!("instances/{project}/{name}"))
}

/// `stale/MEMBER/PROJECT/NAME`: the copy of `project`/`name` on `member` is stale (the
/// instance was failed over from it, and its entry, with that mark, has gone since): that
/// member never claims the name for it, and deletes it.
fn stale_key(member: &str, project: &str, name: &str) -> String {
    key(&format!("stale/{member}/{project}/{name}"))
}

/// What lets go of the entry `k` as `loc` is (read at its revision): its deletion, and if it
/// was failed over, the mark that the copy left on that member is stale, which outlives it.
fn release_ops(k: &str, loc: &Location) -> Vec<TxnOp> {
    let mut ops = vec![TxnOp::delete(k, None)];
    if let Some(from) = &loc.failed_over_from {
        ops.push(TxnOp::put(
            stale_key(from, &loc.project, &loc.name),
            loc.member.clone(),
            None,
        ));
    }
    ops
}

/// What keeps the mark that `loc`'s failover left when the entry is rewritten without it
/// (a move, a second failover): the copy on the member it was failed over from stays
/// stale, unless the instance goes back to that very member (`to`).
fn keep_stale(loc: &Location, to: &str) -> Option<TxnOp> {
    let from = loc.failed_over_from.as_deref().filter(|f| *f != to)?;
    Some(TxnOp::put(
        stale_key(from, &loc.project, &loc.name),
        loc.member.clone(),
        None,
    ))
}

fn location_of(kv: &etcd_client::KeyValue) -> Result<Location> {
    let k = kv.key_str().unwrap_or("?");
    let mut loc: Location = parse(k, kv.value())?;
    let rest = k.strip_prefix(&key("instances/")).unwrap_or_default();
    let (project, name) = rest.split_once('/').unwrap_or(("", rest));
    loc.project = project.to_string();
    loc.name = name.to_string();
    loc.revision = kv.mod_revision();
    Ok(loc)
}

impl Cluster {
    /// Claims `project`/`name` for `member`; refused if another member holds it.
    pub async fn claim_instance(
        &self,
        project: &str,
        name: &str,
        member: &str,
        asks: Asks,
    ) -> Result<()> {
        let k = instance_key(project, name);
        let rec = Location {
            project: project.into(),
            name: name.into(),
            member: member.into(),
            asks: asks.clone(),
            origin: None,
            failed_over_from: None,
            revision: 0,
            stale: false,
        };
        let stale = stale_key(member, project, name);
        let txn = Txn::new()
            .when([
                Compare::version(k.as_str(), CompareOp::Equal, 0),
                Compare::version(stale.as_str(), CompareOp::Equal, 0),
            ])
            .and_then([TxnOp::put(k.as_str(), json(&rec), None)]);
        if self.txn(txn).await?.succeeded() {
            return Ok(());
        }
        if !self.get(&stale, None).await?.kvs().is_empty() {
            return Err(Error::Conflict(format!(
                "instance {name} of project {project} was failed over from member {member} and \
                 deleted since: the copy there is stale and goes"
            )));
        }
        match self.locate_instance(project, name).await? {
            Some(l) if l.member == member => Ok(()),
            Some(l) => Err(Error::Conflict(format!(
                "an instance {name} exists already in project {project}, on member {}: names \
                 are unique across the cluster",
                l.member
            ))),
            // Deleted in between: try once more.
            None => Box::pin(self.claim_instance(project, name, member, asks.clone())).await,
        }
    }

    /// Hands `project`/`name` over from the member `from` to `to` (a migration's last
    /// step; `to` may be `from`), noting `origin` (the member it was evacuated from): only
    /// if `from` holds it still.
    pub async fn hand_over(
        &self,
        project: &str,
        name: &str,
        from: &str,
        to: &str,
        origin: Option<&str>,
    ) -> Result<()> {
        let k = instance_key(project, name);
        let resp = self.get(&k, None).await?;
        let Some(kv) = resp.kvs().first() else {
            return Err(Error::NotFound(format!(
                "instance {name} of project {project} is not in the cluster's index"
            )));
        };
        let loc = location_of(kv)?;
        // Handed over already, by this very call's first attempt whose answer was lost
        // (a timeout, a broken connection) or by one before it: done.
        let done = |l: &Location| from != to && l.member == to && l.origin.as_deref() == origin;
        if done(&loc) {
            return Ok(());
        }
        if loc.member != from {
            return Err(Error::Conflict(format!(
                "instance {name} is held by member {}, not {from}",
                loc.member
            )));
        }
        let rec = Location {
            member: to.into(),
            origin: origin.map(str::to_string),
            failed_over_from: None,
            ..loc.clone()
        };
        let mut ops = vec![TxnOp::put(k.as_str(), json(&rec), None)];
        ops.extend(keep_stale(&loc, to));
        let txn = Txn::new()
            .when([Compare::mod_revision(
                k.as_str(),
                CompareOp::Equal,
                kv.mod_revision(),
            )])
            .and_then(ops);
        if self.txn(txn).await?.succeeded() {
            return Ok(());
        }
        match self.locate_instance(project, name).await? {
            Some(l) if done(&l) => Ok(()),
            _ => Err(Error::Conflict(format!(
                "instance {name} changed hands while it was handed over to {to}"
            ))),
        }
    }

    /// Fails `loc` (as read, with its revision) over to the member `to`: only while the
    /// member holding it is offline (its heartbeat key is gone with its lease) and only if
    /// the entry is unchanged since it was read, in one transaction. Returns the revision of
    /// the change, the fencing token of the instance on `to`; `None` when another member
    /// took it first, or its member came back.
    pub async fn take_over(&self, loc: &Location, to: &str) -> Result<Option<i64>> {
        let k = instance_key(&loc.project, &loc.name);
        let alive = key(&format!("alive/{}", loc.member));
        let rec = Location {
            member: to.into(),
            origin: None,
            failed_over_from: Some(loc.member.clone()),
            ..loc.clone()
        };
        let txn = Txn::new()
            .when([
                Compare::mod_revision(k.as_str(), CompareOp::Equal, loc.revision),
                Compare::version(alive.as_str(), CompareOp::Equal, 0),
            ])
            .and_then(
                std::iter::once(TxnOp::put(k.as_str(), json(&rec), None))
                    .chain(keep_stale(loc, to))
                    .collect::<Vec<_>>(),
            );
        let resp = self.txn(txn).await?;
        if resp.succeeded() {
            return Ok(Some(resp.header().map_or(0, |h| h.revision())));
        }
        // Taken over already by an attempt of this member's whose answer was lost (a
        // timeout, a broken connection): the entry names it, failed over from the same
        // member, changed after the revision it was read at. Its revision is the token.
        Ok(self
            .locate_instance(&loc.project, &loc.name)
            .await?
            .filter(|l| {
                l.member == to
                    && l.failed_over_from.as_deref() == Some(loc.member.as_str())
                    && l.revision > loc.revision
            })
            .map(|l| l.revision))
    }

    /// Clears the mark of a failover on `project`/`name` if `member` holds it, before it
    /// moves to `to`: if that is the member it was failed over from, it takes the copy it
    /// receives for the moving one, not a stale one; otherwise that member's copy stays
    /// marked stale (`stale/...`).
    pub async fn settle_failover(
        &self,
        project: &str,
        name: &str,
        member: &str,
        to: &str,
    ) -> Result<()> {
        let cleared = self
            .clear_failover_note(project, name, to, |loc| {
                loc.member == member && loc.failed_over_from.is_some()
            })
            .await?;
        if cleared {
            Ok(())
        } else {
            Err(Error::Conflict(format!(
                "instance {name} changed in the cluster's index meanwhile; try again"
            )))
        }
    }

    /// Clears the note of `project`/`name`'s entry that it was failed over (if `applies`
    /// to the entry as read), keeping its member's copy marked stale unless the instance
    /// goes to that member (`to`). The member's own index upkeep may rewrite the entry
    /// meanwhile (a start or stop just seen): read again and retried a few times; `false`
    /// when it kept changing.
    async fn clear_failover_note(
        &self,
        project: &str,
        name: &str,
        to: &str,
        applies: impl Fn(&Location) -> bool,
    ) -> Result<bool> {
        let k = instance_key(project, name);
        for _ in 0..5 {
            let resp = self.get(&k, None).await?;
            let Some(kv) = resp.kvs().first() else {
                return Ok(true);
            };
            let loc = location_of(kv)?;
            if !applies(&loc) {
                return Ok(true);
            }
            let rec = Location {
                failed_over_from: None,
                ..loc.clone()
            };
            let mut ops = vec![TxnOp::put(k.as_str(), json(&rec), None)];
            ops.extend(keep_stale(&loc, to));
            let txn = Txn::new()
                .when([Compare::mod_revision(
                    k.as_str(),
                    CompareOp::Equal,
                    kv.mod_revision(),
                )])
                .and_then(ops);
            if self.txn(txn).await?.succeeded() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Lets `project`/`name` go if `member` holds it (its instance is gone).
    pub async fn release_instance(&self, project: &str, name: &str, member: &str) -> Result<()> {
        let k = instance_key(project, name);
        let resp = self.get(&k, None).await?;
        let Some(kv) = resp.kvs().first() else {
            return Ok(());
        };
        let loc = location_of(kv)?;
        if loc.member != member {
            return Ok(());
        }
        let txn = Txn::new()
            .when([Compare::mod_revision(
                k.as_str(),
                CompareOp::Equal,
                kv.mod_revision(),
            )])
            .and_then(release_ops(&k, &loc));
        self.txn(txn).await?;
        Ok(())
    }

    /// The instances whose copies on `member` are stale (failed over from it, deleted or
    /// moved on since): (project, name) and the member it went to.
    pub async fn stale_copies(&self, member: &str) -> Result<Vec<((String, String), String)>> {
        let prefix = key(&format!("stale/{member}/"));
        let resp = self
            .get(&prefix, Some(GetOptions::new().with_prefix()))
            .await?;
        Ok(resp
            .kvs()
            .iter()
            .filter_map(|kv| {
                let rest = kv.key_str().ok()?.strip_prefix(&prefix)?;
                let (p, n) = rest.split_once('/')?;
                let to = String::from_utf8_lossy(kv.value()).into_owned();
                Some(((p.to_string(), n.to_string()), to))
            })
            .collect())
    }

    /// `member` deleted its stale copy of `project`/`name`: its mark goes, and so does the
    /// entry's note that it was failed over from `member` (a later deletion then leaves no
    /// mark behind).
    pub async fn stale_dropped(&self, member: &str, project: &str, name: &str) -> Result<()> {
        self.forget_stale(member, project, name).await?;
        // (No mark kept: the note names `member` itself.)
        self.clear_failover_note(project, name, member, |loc| {
            loc.failed_over_from.as_deref() == Some(member)
        })
        .await
        .map(|_| ())
    }

    /// Forgets that `member`'s copy of `project`/`name` is stale (it is gone).
    pub async fn forget_stale(&self, member: &str, project: &str, name: &str) -> Result<()> {
        let k = stale_key(member, project, name);
        self.txn(Txn::new().and_then([TxnOp::delete(k.as_str(), None)]))
            .await?;
        Ok(())
    }

    /// etcd's current revision.
    pub async fn revision(&self) -> Result<i64> {
        let resp = self.get(&key("cluster"), None).await?;
        Ok(resp.header().map_or(0, |h| h.revision()))
    }

    /// The member holding `project`/`name`, if any.
    pub async fn locate_instance(&self, project: &str, name: &str) -> Result<Option<Location>> {
        let resp = self.get(&instance_key(project, name), None).await?;
        resp.kvs().first().map(location_of).transpose()
    }

    /// Every instance's place.
    pub async fn instance_locations(&self) -> Result<Vec<Location>> {
        let resp = self
            .get(&key("instances/"), Some(GetOptions::new().with_prefix()))
            .await?;
        resp.kvs().iter().map(location_of).collect()
    }

    /// Makes the index true of `member`'s instances: each of `keep` (project, name) is
    /// claimed with what it asks for, and the member's entries not in `keep` are released
    /// (each change only if the entry is unchanged since it was read). Names another member
    /// holds are left to it and returned.
    /// Entries made after revision `since` (claims newer than the caller's view of its
    /// instances) are never released.
    pub async fn sync_instances(
        &self,
        member: &str,
        keep: &BTreeMap<(String, String), Asks>,
        since: i64,
    ) -> Result<Vec<Location>> {
        let resp = self
            .get(&key("instances/"), Some(GetOptions::new().with_prefix()))
            .await?;
        // Copies here of instances failed over and deleted since: said as failed over from
        // here (the caller deletes them), never claimed.
        let stale: BTreeMap<(String, String), String> =
            self.stale_copies(member).await?.into_iter().collect();
        let (mut seen, mut mine) = (BTreeSet::new(), BTreeSet::new());
        let mut clashes = Vec::new();
        for kv in resp.kvs() {
            let loc = location_of(kv)?;
            let id = (loc.project.clone(), loc.name.clone());
            if loc.member == member {
                mine.insert(id.clone());
            }
            let k = kv.key_str().unwrap_or_default();
            let unchanged = Compare::mod_revision(k, CompareOp::Equal, kv.mod_revision());
            match keep.get(&id) {
                Some(asks) if loc.member == member && loc.asks != *asks => {
                    let rec = Location {
                        asks: asks.clone(),
                        ..loc.clone()
                    };
                    let txn =
                        Txn::new()
                            .when([unchanged])
                            .and_then([TxnOp::put(k, json(&rec), None)]);
                    self.txn(txn).await?;
                }
                Some(_) if loc.member != member => {
                    let mut loc = loc;
                    if stale.contains_key(&id) {
                        loc.failed_over_from = Some(member.to_string());
                        loc.stale = true;
                    }
                    clashes.push(loc)
                }
                Some(_) => {}
                None if loc.member == member && kv.create_revision() <= since => {
                    let txn = Txn::new().when([unchanged]).and_then(release_ops(k, &loc));
                    self.txn(txn).await?;
                }
                None => {}
            }
            seen.insert(id);
        }
        for (id, to) in &stale {
            let (project, name) = id;
            if !keep.contains_key(id) || mine.contains(id) {
                // Gone from here (or held here again, by a move): the mark has done its work.
                self.forget_stale(member, project, name).await?;
            } else if !seen.contains(id) {
                clashes.push(Location {
                    project: project.clone(),
                    name: name.clone(),
                    member: to.clone(),
                    asks: Asks::default(),
                    origin: None,
                    failed_over_from: Some(member.to_string()),
                    revision: 0,
                    stale: true,
                });
                seen.insert(id.clone());
            }
        }
        for ((project, name), asks) in keep.iter().filter(|(id, _)| !seen.contains(*id)) {
            if let Err(Error::Conflict(_)) = self
                .claim_instance(project, name, member, asks.clone())
                .await
            {
                if let Some(l) = self.locate_instance(project, name).await? {
                    clashes.push(l);
                }
            }
        }
        Ok(clashes)
    }
}
