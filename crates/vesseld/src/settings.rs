//! The server's settings (`vessel config`): known keys with their values, in the store.

use std::sync::Arc;

use vessel_api::{ServerConfig, CONFIG_KEYS};

use crate::error::{Error, Result};
use crate::store::{Records, Store};

/// The address of the HTTPS API.
pub const HTTPS_ADDRESS: &str = "core.https_address";

/// Settings in the store.
#[derive(Clone)]
pub struct Settings {
    records: Records<String>,
}

impl Settings {
    /// The settings kept in `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Settings {
            records: Records::new(store, "config"),
        }
    }

    /// Every key that has a value.
    pub fn all(&self) -> Result<ServerConfig> {
        let mut c = ServerConfig::default();
        for (k, v) in self.records.entries().map_err(store_err)? {
            c.values.insert(k, v.map_err(store_err)?);
        }
        Ok(c)
    }

    /// One key's value.
    pub fn get(&self, key: &str) -> Result<Option<String>> {
        self.records.get(key).map_err(store_err)
    }

    /// Sets `key` (empty: unsets it).
    pub fn set(&self, key: &str, value: &str) -> Result<()> {
        if value.is_empty() {
            self.records.delete(key)
        } else {
            self.records.put(key, &value.to_string())
        }
        .map_err(store_err)
    }
}

/// `key` if the server knows it, else an error listing the keys there are.
pub fn known_key(key: &str) -> Result<&'static str> {
    CONFIG_KEYS
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(k, _)| *k)
        .ok_or_else(|| {
            let keys: Vec<&str> = CONFIG_KEYS.iter().map(|(k, _)| *k).collect();
            Error::invalid(format!(
                "no setting {key:?}; the settings are: {}",
                keys.join(", ")
            ))
        })
}

/// The HTTPS address a value names (`None` for empty: not listening).
pub fn https_address(value: &str) -> Result<Option<std::net::SocketAddr>> {
    if value.is_empty() {
        return Ok(None);
    }
    value.parse().map(Some).map_err(|_| {
        Error::invalid(format!(
            "{HTTPS_ADDRESS}={value:?} is not an address and port, e.g. 0.0.0.0:8443 or [::]:8443"
        ))
    })
}

fn store_err(e: crate::store::StoreError) -> Error {
    Error::internal(format!("settings: {e}"))
}
