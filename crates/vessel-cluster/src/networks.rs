//! Cluster networks: one record per network (`networks/NAME`: subnet, VNI), the VNI taken in
//! the same transaction (`netvni/VNI`, so no two networks share one), the address blocks
//! each member hands out from (`netblocks/NAME/INDEX`: claimed one at a time, so no address
//! is given on two members), and the NICs each member has on it (`nethosts/NAME/IP`: what
//! the others resolve by name).

use std::collections::BTreeMap;

use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp};
use serde::{Deserialize, Serialize};

use crate::etcd::{json, key, parse};
use crate::{Cluster, Error, Result};

/// A cluster network as etcd holds it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NetworkSpec {
    /// Its name.
    pub name: String,
    /// IPv4 subnet (CIDR).
    pub subnet: String,
    /// Its VXLAN id.
    pub vni: u32,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// When it was made, RFC 3339.
    pub created_at: String,
}

/// A NIC on a cluster network.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NetHost {
    /// Its address.
    #[serde(skip)]
    pub ip: String,
    /// The name it answers to (its instance's).
    pub name: String,
    /// The member it is on.
    pub member: String,
    /// Its MAC (the other members route to it through a neighbour entry).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
}

/// The first VNI a cluster network gets (those below are left to networks made by hand).
const FIRST_VNI: u32 = 100_000;

fn last_segment(kv: &etcd_client::KeyValue) -> String {
    kv.key_str()
        .unwrap_or_default()
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string()
}

impl Cluster {
    /// Every cluster network.
    pub async fn networks(&self) -> Result<Vec<NetworkSpec>> {
        let resp = self
            .get(&key("networks/"), Some(GetOptions::new().with_prefix()))
            .await?;
        resp.kvs()
            .iter()
            .map(|kv| parse(kv.key_str().unwrap_or("?"), kv.value()))
            .collect()
    }

    /// Records a new cluster network with a VNI no network had before (`netvni-last`
    /// counts them, so a deleted network's VNI is not given again while a member may still
    /// hold its copy); refused if the name is taken. Returns it as recorded.
    pub async fn create_network(&self, mut spec: NetworkSpec) -> Result<NetworkSpec> {
        let lk = key("netvni-last");
        let mut tried: Option<NetworkSpec> = None;
        for _ in 0..8 {
            let existing = self.networks().await?;
            if let Some(n) = existing.iter().find(|n| n.name == spec.name) {
                // Recorded by the attempt before, whose answer was lost (a request
                // timeout, then the retry's compare failed): as it recorded it.
                if tried.as_ref() == Some(n) {
                    return Ok(n.clone());
                }
                return Err(Error::Conflict(format!(
                    "cluster network {} exists already",
                    spec.name
                )));
            }
            let last = self.get(&lk, None).await?;
            let (last_vni, last_rev) = match last.kvs().first() {
                Some(kv) => (
                    String::from_utf8_lossy(kv.value())
                        .parse::<u32>()
                        .unwrap_or(0),
                    kv.mod_revision(),
                ),
                None => (0, 0),
            };
            spec.vni = existing
                .iter()
                .map(|n| n.vni)
                .chain([last_vni])
                .max()
                .map_or(FIRST_VNI, |v| v + 1)
                .max(FIRST_VNI);
            let nk = key(&format!("networks/{}", spec.name));
            let vk = key(&format!("netvni/{}", spec.vni));
            let txn = Txn::new()
                .when([
                    Compare::version(nk.as_str(), CompareOp::Equal, 0),
                    Compare::version(vk.as_str(), CompareOp::Equal, 0),
                    Compare::mod_revision(lk.as_str(), CompareOp::Equal, last_rev),
                ])
                .and_then([
                    TxnOp::put(nk.as_str(), json(&spec), None),
                    TxnOp::put(vk.as_str(), spec.name.clone(), None),
                    TxnOp::put(lk.as_str(), spec.vni.to_string(), None),
                ]);
            if self.txn(txn).await?.succeeded() {
                return Ok(spec);
            }
            tried = Some(spec.clone());
        }
        Err(Error::Conflict(format!(
            "cluster network {} not recorded: other networks were being made at once; try \
             again",
            spec.name
        )))
    }

    /// Deletes a cluster network: refused while any member has a NIC on it.
    pub async fn delete_network(&self, name: &str) -> Result<()> {
        let Some(spec) = self.networks().await?.into_iter().find(|n| n.name == name) else {
            return Err(Error::NotFound(format!("no cluster network {name}")));
        };
        let hosts = self.hosts(name).await?;
        if !hosts.is_empty() {
            let users: Vec<String> = hosts
                .iter()
                .map(|h| format!("{} on {}", h.name, h.member))
                .collect();
            return Err(Error::Conflict(format!(
                "cluster network {name} is used by {}; detach them first",
                users.join(", ")
            )));
        }
        let txn = Txn::new().and_then([
            TxnOp::delete(key(&format!("networks/{name}")), None),
            TxnOp::delete(key(&format!("netvni/{}", spec.vni)), None),
            TxnOp::delete(
                key(&format!("netblocks/{name}/")),
                Some(etcd_client::DeleteOptions::new().with_prefix()),
            ),
        ]);
        self.txn(txn).await?;
        Ok(())
    }

    /// The address blocks of network `name` and the members holding them.
    pub async fn blocks(&self, name: &str) -> Result<BTreeMap<u32, String>> {
        Ok(self.blocks_at(name).await?.0)
    }

    /// [`Cluster::blocks`] and the store's revision they were read at.
    async fn blocks_at(&self, name: &str) -> Result<(BTreeMap<u32, String>, i64)> {
        let resp = self
            .get(
                &key(&format!("netblocks/{name}/")),
                Some(GetOptions::new().with_prefix()),
            )
            .await?;
        let blocks = resp
            .kvs()
            .iter()
            .filter_map(|kv| {
                let i = last_segment(kv).parse().ok()?;
                Some((i, String::from_utf8_lossy(kv.value()).into_owned()))
            })
            .collect();
        Ok((blocks, resp.header().map_or(0, |h| h.revision())))
    }

    /// Claims the lowest free block of `count` for `member`; returns its index.
    pub async fn claim_block(&self, name: &str, member: &str, count: u32) -> Result<u32> {
        for _ in 0..8 {
            let (taken, read_at) = self.blocks_at(name).await?;
            let Some(free) = (0..count).find(|i| !taken.contains_key(i)) else {
                return Err(Error::Conflict(format!(
                    "cluster network {name} has no address block left ({count} taken): make \
                     a larger one"
                )));
            };
            let k = key(&format!("netblocks/{name}/{free}"));
            let txn = Txn::new()
                .when([Compare::version(k.as_str(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(k.as_str(), member, None)]);
            if self.txn(txn).await?.succeeded() {
                return Ok(free);
            }
            // Taken since it was read free: by this very claim if it holds this member's
            // name (its answer was lost and the repeat's compare failed; no other member
            // writes this name), else by another member: the next free one.
            let resp = self.get(&k, None).await?;
            if resp
                .kvs()
                .first()
                .is_some_and(|kv| kv.value() == member.as_bytes() && kv.create_revision() > read_at)
            {
                return Ok(free);
            }
        }
        Err(Error::Conflict(format!(
            "no address block of {name} could be claimed: too many members at once; try again"
        )))
    }

    /// The NICs on network `name`, every member's.
    pub async fn hosts(&self, name: &str) -> Result<Vec<NetHost>> {
        let resp = self
            .get(
                &key(&format!("nethosts/{name}/")),
                Some(GetOptions::new().with_prefix()),
            )
            .await?;
        resp.kvs()
            .iter()
            .map(|kv| {
                let mut h: NetHost = parse(kv.key_str().unwrap_or("?"), kv.value())?;
                h.ip = last_segment(kv);
                Ok(h)
            })
            .collect()
    }

    /// Makes the index of network `name` true of `member`'s NICs (`mine`: address → name);
    /// answers every member's.
    pub async fn sync_hosts(
        &self,
        name: &str,
        member: &str,
        mine: &BTreeMap<String, (String, String)>,
    ) -> Result<Vec<NetHost>> {
        let all = self.hosts(name).await?;
        for h in all.iter().filter(|h| h.member == member) {
            if mine.get(&h.ip) != Some(&(h.name.clone(), h.mac.clone())) {
                let k = key(&format!("nethosts/{name}/{}", h.ip));
                let txn = Txn::new()
                    .when([Compare::value(
                        k.as_str(),
                        CompareOp::Equal,
                        json(&NetHost {
                            ip: String::new(),
                            name: h.name.clone(),
                            member: member.into(),
                            mac: h.mac.clone(),
                        }),
                    )])
                    .and_then([TxnOp::delete(k.as_str(), None)]);
                self.txn(txn).await?;
            }
        }
        for (ip, (host, mac)) in mine {
            if all
                .iter()
                .any(|h| &h.ip == ip && &h.name == host && &h.mac == mac && h.member == member)
            {
                continue;
            }
            let rec = NetHost {
                ip: String::new(),
                name: host.clone(),
                member: member.into(),
                mac: mac.clone(),
            };
            self.put(&key(&format!("nethosts/{name}/{ip}")), json(&rec), None)
                .await?;
        }
        self.hosts(name).await
    }
}
