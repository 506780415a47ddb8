//! Cluster-wide objects: records every member shares (`objects/KIND/KEY`, the body as the
//! daemon's store keeps it). Each write says what it expects to replace, by etcd's
//! modification revision, so two members changing one object at once cannot both win; a
//! watch from a revision tells a member every change after what it has read.

use etcd_client::{Compare, CompareOp, EventType, GetOptions, Txn, TxnOp, WatchOptions};

use crate::etcd::key;
use crate::{Cluster, Error, Result};

const OBJECTS: &str = "objects/";

/// One shared object as etcd holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedObject {
    /// Its kind (`project`, `identity`, ...).
    pub kind: String,
    /// Its key within the kind.
    pub key: String,
    /// Its body.
    pub body: String,
    /// The revision that last wrote it.
    pub revision: i64,
}

/// A change to a shared object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectChange {
    /// Written (made or replaced).
    Put(SharedObject),
    /// Deleted, at `revision`.
    Delete {
        /// Its kind.
        kind: String,
        /// Its key.
        key: String,
        /// The revision that deleted it.
        revision: i64,
    },
}

/// What a conditional write expects to find.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// No object under the key.
    Absent,
    /// The object as the revision wrote it.
    Revision(i64),
    /// Whatever is there.
    Any,
}

/// Whether an object at `revision` was written after what `expect` expected.
fn newer(revision: i64, expect: Expect) -> bool {
    match expect {
        Expect::Absent | Expect::Any => true,
        Expect::Revision(r) => revision > r,
    }
}

fn object_key(kind: &str, k: &str) -> String {
    key(&format!("{OBJECTS}{kind}/{k}"))
}

/// `(kind, key)` of a full etcd key under `objects/`.
fn split(full: &str) -> Option<(String, String)> {
    let rest = full.strip_prefix(&key(OBJECTS))?;
    let (kind, k) = rest.split_once('/')?;
    Some((kind.to_string(), k.to_string()))
}

fn object_of(kv: &etcd_client::KeyValue) -> Option<SharedObject> {
    let (kind, key) = split(kv.key_str().ok()?)?;
    Some(SharedObject {
        kind,
        key,
        body: String::from_utf8_lossy(kv.value()).into_owned(),
        revision: kv.mod_revision(),
    })
}

impl Cluster {
    /// Every shared object, with the revision etcd answered at (watch from the next one to
    /// miss nothing).
    pub async fn shared_objects(&self) -> Result<(i64, Vec<SharedObject>)> {
        let resp = self
            .get(&key(OBJECTS), Some(GetOptions::new().with_prefix()))
            .await?;
        let revision = resp.header().map_or(0, |h| h.revision());
        Ok((revision, resp.kvs().iter().filter_map(object_of).collect()))
    }

    /// The shared object `kind`/`k` as etcd holds it now (`None`: there is none).
    pub async fn shared_object(&self, kind: &str, k: &str) -> Result<Option<SharedObject>> {
        let resp = self.get(&object_key(kind, k), None).await?;
        Ok(resp.kvs().iter().find_map(object_of))
    }

    /// Writes a shared object if what is there is what `expect` says: its new revision, or
    /// `None` when something else is there (another member changed it first).
    pub async fn put_shared(
        &self,
        kind: &str,
        k: &str,
        body: &str,
        expect: Expect,
    ) -> Result<Option<i64>> {
        let full = object_key(kind, k);
        let put = TxnOp::put(full.as_str(), body.as_bytes().to_vec(), None);
        let txn = match expect {
            Expect::Absent => Txn::new()
                .when([Compare::version(full.as_str(), CompareOp::Equal, 0)])
                .and_then([put]),
            Expect::Revision(r) => Txn::new()
                .when([Compare::mod_revision(full.as_str(), CompareOp::Equal, r)])
                .and_then([put]),
            Expect::Any => Txn::new().and_then([put]),
        };
        let resp = self.txn(txn).await?;
        if !resp.succeeded() {
            // Written by this call's first attempt, whose answer was lost (a request
            // timeout, then the retry's compare failed): the body is there, newer.
            let now = self.shared_object(kind, k).await?;
            return Ok(now
                .filter(|o| o.body == body && newer(o.revision, expect))
                .map(|o| o.revision));
        }
        Ok(Some(resp.header().map_or(0, |h| h.revision())))
    }

    /// Deletes a shared object (absent is fine); `expect` as for [`Cluster::put_shared`].
    /// `None` when something else was there.
    pub async fn delete_shared(&self, kind: &str, k: &str, expect: Expect) -> Result<Option<i64>> {
        let full = object_key(kind, k);
        let del = TxnOp::delete(full.as_str(), None);
        let txn = match expect {
            Expect::Revision(r) => Txn::new()
                .when([Compare::mod_revision(full.as_str(), CompareOp::Equal, r)])
                .and_then([del]),
            Expect::Absent | Expect::Any => Txn::new().and_then([del]),
        };
        let resp = self.txn(txn).await?;
        if !resp.succeeded() {
            // Deleted by this call's first attempt, whose answer was lost: it is gone.
            if self.shared_object(kind, k).await?.is_none() {
                return Ok(Some(resp.header().map_or(0, |h| h.revision())));
            }
            return Ok(None);
        }
        Ok(Some(resp.header().map_or(0, |h| h.revision())))
    }

    /// Watches the shared objects from `revision` on.
    pub async fn watch_shared(&self, revision: i64) -> Result<ObjectWatch> {
        let mut c = self.client();
        let stream = c
            .watch(
                key(OBJECTS),
                Some(
                    WatchOptions::new()
                        .with_prefix()
                        .with_start_revision(revision),
                ),
            )
            .await?;
        Ok(ObjectWatch { stream })
    }
}

/// A watch on the shared objects.
pub struct ObjectWatch {
    stream: etcd_client::WatchStream,
}

impl ObjectWatch {
    /// The next changes, in order; an error when the watch ended or the revision it started
    /// from is compacted away (read everything again then).
    pub async fn changes(&mut self) -> Result<Vec<ObjectChange>> {
        let Some(resp) = self.stream.message().await? else {
            return Err(Error::Etcd("the watch on the shared objects ended".into()));
        };
        if resp.compact_revision() > 0 {
            return Err(Error::Etcd(format!(
                "the shared objects' history before revision {} is compacted",
                resp.compact_revision()
            )));
        }
        if resp.canceled() {
            return Err(Error::Etcd(format!(
                "the watch on the shared objects was cancelled: {}",
                resp.cancel_reason()
            )));
        }
        Ok(resp
            .events()
            .iter()
            .filter_map(|ev| {
                let kv = ev.kv()?;
                match ev.event_type() {
                    EventType::Put => object_of(kv).map(ObjectChange::Put),
                    EventType::Delete => {
                        let (kind, key) = split(kv.key_str().ok()?)?;
                        Some(ObjectChange::Delete {
                            kind,
                            key,
                            revision: kv.mod_revision(),
                        })
                    }
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_split_into_kind_and_key_with_slashes_kept_in_the_key() {
        assert_eq!(
            split(&object_key("profile", "web/base")),
            Some(("profile".into(), "web/base".into()))
        );
        assert_eq!(split(&key("members/m0")), None);
        assert_eq!(split(&key("objects/nokey")), None);
    }
}
