//! Join tokens: what a new member needs to join, in one opaque string.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

const PREFIX: &str = "vessel-join-";

/// What a join token carries: where the cluster's etcd is, which cluster it is (its id,
/// checked after connecting), which token to redeem with which secret, the name the new
/// member is to have, and the issuing member's certificate fingerprint.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JoinToken {
    /// The cluster's id.
    pub cluster: String,
    /// etcd's client URLs.
    pub endpoints: Vec<String>,
    /// The token's id (its key under `tokens/`).
    pub id: String,
    /// The secret; etcd keeps its SHA-256 only.
    pub secret: String,
    /// The name the joining member gets.
    pub name: String,
    /// The issuer's name and address, to say where it came from.
    pub issuer: String,
    /// The issuer's certificate fingerprint.
    pub fingerprint: String,
}

impl JoinToken {
    /// The token as one string.
    pub fn encode(&self) -> String {
        let json = serde_json::to_vec(self).expect("a token is JSON");
        format!("{PREFIX}{}", hex::encode(json))
    }

    /// The token a string holds, or why it does not hold one.
    pub fn decode(s: &str) -> Result<Self> {
        let bad = || {
            Error::Invalid(
                "this is not a join token: give the whole string `vessel cluster add NAME` \
                 printed on a member"
                    .into(),
            )
        };
        let hex_part = s.trim().strip_prefix(PREFIX).ok_or_else(bad)?;
        let bytes = hex::decode(hex_part).map_err(|_| bad())?;
        serde_json::from_slice(&bytes).map_err(|_| bad())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_goes_through_a_string_and_garbage_is_refused() {
        let t = JoinToken {
            cluster: "c".into(),
            endpoints: vec!["http://10.0.0.1:2379".into()],
            id: "id".into(),
            secret: "s".into(),
            name: "m1".into(),
            issuer: "m0 (10.0.0.1:8443)".into(),
            fingerprint: "ab".into(),
        };
        let s = t.encode();
        assert!(s.starts_with("vessel-join-"));
        assert_eq!(JoinToken::decode(&format!(" {s}\n")).unwrap(), t);
        for bad in ["", "vessel-join-zz", "vessel-join-7b7d", &s[..s.len() - 2]] {
            let e = JoinToken::decode(bad).unwrap_err().to_string();
            assert!(e.contains("not a join token"), "{bad}: {e}");
        }
    }
}
