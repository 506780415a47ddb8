//! Typed records: the JSON the store keeps in its columns and objects, and [`Records`], the
//! objects of one kind (networks, pools, volumes, exports, ...) each serialised as JSON under
//! its key, so a service reads and writes its own types and never a JSON string.

use std::marker::PhantomData;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{Result, Store, StoreError};

/// `v` as the JSON the store keeps; `what` names it in an error.
pub fn encode<T: Serialize>(what: &str, v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|source| StoreError::Encode {
        what: what.to_string(),
        source,
    })
}

/// The value of JSON the store kept; `what` names it in an error.
pub fn decode<T: DeserializeOwned>(what: &str, s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|source| StoreError::Json {
        what: what.to_string(),
        source,
    })
}

/// The objects of kind `kind`, each a `T` stored as JSON under its key (a name, or a path
/// such as `pool/volume` for objects named within another).
pub struct Records<T> {
    store: Arc<dyn Store>,
    kind: &'static str,
    _type: PhantomData<fn() -> T>,
}

impl<T> Clone for Records<T> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            kind: self.kind,
            _type: PhantomData,
        }
    }
}

impl<T: Serialize + DeserializeOwned> Records<T> {
    /// The objects of `kind` in `store`.
    pub fn new(store: Arc<dyn Store>, kind: &'static str) -> Self {
        Self {
            store,
            kind,
            _type: PhantomData,
        }
    }

    fn what(&self, key: &str) -> String {
        format!("{} {key:?}", self.kind)
    }

    /// The object under `key`, `None` when there is none.
    pub fn get(&self, key: &str) -> Result<Option<T>> {
        match self.store.object_get(self.kind, key) {
            Ok(body) => decode(&self.what(key), &body).map(Some),
            Err(StoreError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The object under `key` with the version a conditional write compares against
    /// ([`Records::put_if`]): a read-modify-write that another cluster member's change in
    /// between must not be lost to.
    pub fn get_versioned(&self, key: &str) -> Result<Option<(T, Option<i64>)>> {
        match self.store.object_get_versioned(self.kind, key) {
            Ok((body, version)) => Ok(Some((decode(&self.what(key), &body)?, version))),
            Err(StoreError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Replaces the object under `key` if it is still at `version`
    /// ([`Records::get_versioned`]; `None`: absent when read, or unversioned).
    pub fn put_if(&self, key: &str, v: &T, version: Option<i64>) -> Result<()> {
        let body = encode(&self.what(key), v)?;
        self.store.object_put_if(self.kind, key, &body, version)
    }

    /// Whether an object is stored under `key` (readable or not).
    pub fn contains(&self, key: &str) -> Result<bool> {
        match self.store.object_get(self.kind, key) {
            Ok(_) => Ok(true),
            Err(StoreError::NotFound(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Every object, ordered by key; fails when one cannot be read.
    pub fn list(&self) -> Result<Vec<T>> {
        self.entries()?.into_iter().map(|(_, v)| v).collect()
    }

    /// Every key with its object, or why that one cannot be read, ordered by key.
    pub fn entries(&self) -> Result<Vec<(String, Result<T>)>> {
        Ok(self
            .store
            .object_list(self.kind)?
            .into_iter()
            .map(|(key, body)| {
                let v = decode(&self.what(&key), &body);
                (key, v)
            })
            .collect())
    }

    /// Adds an object; fails with [`StoreError::Exists`] when `key` is taken.
    pub fn insert(&self, key: &str, v: &T) -> Result<()> {
        let body = encode(&self.what(key), v)?;
        self.store.object_insert(self.kind, key, &body)
    }

    /// Adds or replaces the object under `key`.
    pub fn put(&self, key: &str, v: &T) -> Result<()> {
        let body = encode(&self.what(key), v)?;
        self.store.object_put(self.kind, key, &body)
    }

    /// Removes the object under `key` (absent is fine).
    pub fn delete(&self, key: &str) -> Result<()> {
        self.store.object_delete(self.kind, key)
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;
    use crate::store::SqliteStore;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Thing {
        name: String,
        size: u64,
    }

    fn thing(name: &str, size: u64) -> Thing {
        Thing {
            name: name.into(),
            size,
        }
    }

    #[test]
    fn objects_of_one_kind_round_trip_by_key() {
        let dir = std::env::temp_dir().join(format!("vessel-records-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.join("db")).unwrap());
        let things = Records::<Thing>::new(store.clone(), "thing");
        let others = Records::<Thing>::new(store.clone(), "other");
        assert_eq!(things.get("a").unwrap(), None);
        things.insert("b", &thing("b", 2)).unwrap();
        things.insert("a", &thing("a", 1)).unwrap();
        assert!(matches!(
            things.insert("a", &thing("a", 9)),
            Err(StoreError::Exists(_))
        ));
        things.put("a", &thing("a", 3)).unwrap();
        assert_eq!(things.get("a").unwrap(), Some(thing("a", 3)));
        assert_eq!(things.list().unwrap(), vec![thing("a", 3), thing("b", 2)]);
        assert!(others.list().unwrap().is_empty(), "kinds are apart");
        assert!(things.contains("b").unwrap() && !others.contains("b").unwrap());
        // One unreadable object fails a listing, and is told apart in the entries.
        store.object_put("thing", "c", "{not json").unwrap();
        let err = things.list().unwrap_err().to_string();
        assert!(err.contains("thing \"c\""), "{err}");
        let entries = things.entries().unwrap();
        assert_eq!(entries.len(), 3);
        assert!(entries[0].1.is_ok() && entries[2].1.is_err());
        things.delete("c").unwrap();
        things.delete("c").unwrap();
        assert_eq!(things.list().unwrap().len(), 2);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
