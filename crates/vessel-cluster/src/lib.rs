//! Cluster membership on etcd: who the members are, single-use join tokens, and a lease
//! per member that says it is alive. etcd does the consensus; this crate keeps no state of
//! its own and knows nothing of HTTP, projects or the daemon's store.
//!
//! Keys, under a prefix (`/vessel/`):
//! - `cluster`: the cluster's id and birth, written once by `init`;
//! - `members/NAME`: a member's record (address, certificate fingerprint, capacity);
//! - `alive/NAME`: its heartbeat, attached to its lease (TTL a few seconds, renewed at a
//!   third of it): a member whose key is gone is offline;
//! - `tokens/ID`: a join token's SHA-256, attached to a lease of its lifetime; redeemed
//!   (deleted) in the same transaction that writes the new member;
//! - `instances/PROJECT/NAME`: the member an instance lives on (no name twice in a cluster);
//! - `networks/NAME`, `netvni/VNI`, `netblocks/NAME/INDEX`, `nethosts/NAME/IP`: cluster
//!   networks, their VNIs, the address blocks each member hands out, the NICs on them;
//! - `objects/KIND/KEY`: the daemon's records every member shares (projects, identities,
//!   profiles), written by compare-and-swap on their revision;
//! - `locks/NAME`: a cluster-wide lock, held under its holder's lease (`locks.rs`);
//! - `stale/MEMBER/PROJECT/NAME`: the copy on MEMBER of an instance failed over from it and
//!   deleted since is stale.

mod etcd;
mod instances;
mod locks;
mod networks;
mod objects;
mod replicas;
mod token;

use serde::{Deserialize, Serialize};

pub use etcd::{fence_after, kill_after, Cluster, Heartbeater, MemberWatch};
pub use instances::{Asks, Location};
pub use locks::{ClusterLock, LOCK_TTL};
pub use networks::{NetHost, NetworkSpec};
pub use objects::{Expect, ObjectChange, ObjectWatch, SharedObject};
pub use replicas::ReplicaState;
pub use token::JoinToken;

/// Errors of the cluster engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// etcd could not be reached or answered an error.
    #[error("etcd: {0}")]
    Etcd(String),
    /// The request conflicts with what is there (a cluster exists, a name is taken).
    #[error("{0}")]
    Conflict(String),
    /// Something named is not there.
    #[error("{0}")]
    NotFound(String),
    /// A join token that is unknown, used, expired or of another cluster.
    #[error("{0}")]
    Refused(String),
    /// Input that does not parse.
    #[error("{0}")]
    Invalid(String),
}

impl From<etcd_client::Error> for Error {
    fn from(e: etcd_client::Error) -> Self {
        Error::Etcd(e.to_string())
    }
}

/// Results of the cluster engine.
pub type Result<T> = std::result::Result<T, Error>;

/// What a member can hold.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Capacity {
    /// CPUs.
    pub cpus: u32,
    /// Memory, bytes.
    pub memory: u64,
}

/// What a member uses, sent with each heartbeat.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Usage {
    /// Instances it holds.
    pub instances: u64,
    /// Instances running.
    pub running: u64,
    /// Memory in use on the host, bytes.
    pub memory: u64,
    /// One-minute load average.
    pub load1: f64,
    /// CPUs its instances ask for (the sum of their `limits.cpu`): what placement counts.
    #[serde(default)]
    pub cpu_requested: f64,
    /// Memory its instances ask for (the sum of their `limits.memory`), bytes.
    #[serde(default)]
    pub memory_requested: u64,
}

/// A member as the cluster records it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MemberRecord {
    /// Unique name.
    pub name: String,
    /// Its HTTPS API, `HOST:PORT`.
    pub address: String,
    /// SHA-256 of its server certificate (hex): what the others pin.
    pub fingerprint: String,
    /// Roles (`database-client`, …; none yet besides being a member).
    #[serde(default)]
    pub roles: Vec<String>,
    /// What it can hold.
    pub capacity: Capacity,
    /// When it joined, RFC 3339.
    pub joined_at: String,
    /// Evacuated (`vessel cluster evacuate`): nothing new is placed on it until it is
    /// restored.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub evacuated: bool,
}

/// A heartbeat, the value of `alive/NAME`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Heartbeat {
    /// When it was written, RFC 3339 (the writer's clock).
    pub at: String,
    /// Its usage then.
    pub usage: Usage,
    /// The lease it is attached to.
    pub lease: i64,
}

/// A member with its state, as `cluster list` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Member {
    /// The record.
    #[serde(flatten)]
    pub record: MemberRecord,
    /// `online` (its lease is alive) or `offline`.
    pub state: String,
    /// Its last heartbeat while online.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat: Option<Heartbeat>,
}

/// The members with their state: online where a heartbeat is there. Pure.
pub fn members_with_state(
    records: Vec<MemberRecord>,
    beats: &[(String, Heartbeat)],
) -> Vec<Member> {
    let mut out: Vec<Member> = records
        .into_iter()
        .map(|record| {
            let heartbeat = beats
                .iter()
                .find(|(n, _)| *n == record.name)
                .map(|(_, h)| h.clone());
            Member {
                state: match (&heartbeat, record.evacuated) {
                    (None, _) => "offline",
                    (Some(_), true) => "evacuated",
                    (Some(_), false) => "online",
                }
                .into(),
                heartbeat,
                record,
            }
        })
        .collect();
    out.sort_by(|a, b| a.record.name.cmp(&b.record.name));
    out
}

/// The SHA-256 a token secret is kept as.
pub fn secret_hash(secret: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(secret.as_bytes()))
}

/// Checks a member name: 1-63 letters, digits and '-', starting with a letter.
pub fn validate_name(name: &str) -> Result<()> {
    let ok = (1..=63).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && !name.ends_with('-')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "invalid member name {name:?}: use 1-63 letters, digits and '-', starting with a \
             letter"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str) -> MemberRecord {
        MemberRecord {
            name: name.into(),
            address: "10.0.0.1:8443".into(),
            fingerprint: "ab".into(),
            roles: Vec::new(),
            capacity: Capacity {
                cpus: 2,
                memory: 1 << 30,
            },
            joined_at: "2026-01-01T00:00:00Z".into(),
            evacuated: false,
        }
    }

    #[test]
    fn a_member_is_online_while_its_heartbeat_is_there() {
        let beat = Heartbeat {
            at: "2026-01-01T00:00:01Z".into(),
            usage: Usage::default(),
            lease: 7,
        };
        let m = members_with_state(
            vec![record("m2"), record("m1")],
            &[("m1".to_string(), beat.clone())],
        );
        assert_eq!(m[0].record.name, "m1");
        assert_eq!(m[0].state, "online");
        assert_eq!(m[0].heartbeat, Some(beat.clone()));
        assert_eq!(m[1].state, "offline");
        assert_eq!(m[1].heartbeat, None);
        // Evacuated: answering, but not a place for anything new; offline wins.
        let mut away = record("m1");
        away.evacuated = true;
        let m = members_with_state(
            vec![
                away.clone(),
                MemberRecord {
                    name: "m3".into(),
                    ..away
                },
            ],
            &[("m1".to_string(), beat)],
        );
        assert_eq!(m[0].state, "evacuated");
        assert_eq!(m[1].state, "offline");
    }

    #[test]
    fn names_are_one_dns_label() {
        validate_name("m-1").unwrap();
        for bad in ["", "1m", "m_1", "m-", &"m".repeat(64)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }
}
