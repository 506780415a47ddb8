//! Cluster networks, the cluster's side: made and deleted in etcd (`vessel-cluster`), and
//! kept on this member by a loop: every cluster network exists here as a VXLAN overlay
//! whose peers are the other members (as membership changes), with address blocks claimed
//! for this member, its NICs written to etcd and the others' names given to its DNS; a
//! cluster network deleted in etcd goes here too.

use std::collections::BTreeMap;
use std::time::Duration;

use vessel_api::{Network, NetworkCreate};
use vessel_cluster::{Cluster, NetworkSpec};

use super::{from_cluster, ClusterService};
use crate::error::{Error, Result};
use crate::network::{ClusterNetworkSpec, NetworkService};

/// How often this member checks its cluster networks against etcd (sooner when asked).
const NETWORKS_EVERY: Duration = Duration::from_secs(2);
/// How long a create or delete waits for this member's copy to follow.
const FOLLOW: Duration = Duration::from_secs(15);
/// Free addresses under which a member claims another block.
const LOW_WATER: u32 = 4;

/// The block size of a subnet of `prefix`: sixteen blocks, none smaller than a /28 (a /28
/// or smaller subnet is one block).
fn block_prefix(prefix: u8) -> u8 {
    (prefix + 4).min(28).max(prefix)
}

/// Block `index` of `subnet` (CIDR), and how many blocks it has.
fn block(subnet: &str, index: u32) -> Result<(String, u32)> {
    let s: vessel_net::Subnet = subnet
        .parse()
        .map_err(|e| Error::invalid(format!("subnet {subnet}: {e}")))?;
    let bp = block_prefix(s.prefix());
    let count = 1u32 << (bp - s.prefix());
    let start = u32::from(s.network()) + index * (1u32 << (32 - u32::from(bp)));
    Ok((format!("{}/{bp}", std::net::Ipv4Addr::from(start)), count))
}

/// The IP of a member's `IP:PORT` address.
fn underlay(address: &str) -> Option<String> {
    address
        .parse::<std::net::SocketAddr>()
        .ok()
        .map(|a| a.ip().to_string())
}

impl ClusterService {
    fn networks_service(&self) -> Result<&NetworkService> {
        self.inner
            .networks
            .get()
            .ok_or_else(|| Error::internal("no network service"))
    }

    /// `POST /1.0/networks` with `cluster`: recorded in etcd, answered once this member's
    /// copy is made.
    pub async fn create_network(&self, req: NetworkCreate) -> Result<Network> {
        let Some((cluster, _)) = self.live_member().await else {
            return Err(Error::conflict(
                "a cluster network needs a cluster: this server is not a live member of one",
            ));
        };
        if req.vni.is_some() || req.local.is_some() || !req.peers.is_empty() {
            return Err(Error::invalid(
                "a cluster network's VNI, peers and local address are the cluster's: leave \
                 them out",
            ));
        }
        if !req.vlans.is_empty() || req.ipv6.is_some() || req.isolated_ports {
            return Err(Error::invalid(
                "cluster networks have no VLAN segments, IPv6 or isolated ports yet",
            ));
        }
        if req.name.contains('.') {
            return Err(Error::invalid(
                "cluster networks belong to the default project for now",
            ));
        }
        crate::name::validate_name_within("network", &req.name, 11)?;
        let subnet: vessel_net::Subnet = req
            .subnet
            .parse()
            .map_err(|e| Error::invalid(format!("subnet {:?}: {e}", req.subnet)))?;
        if subnet.prefix() > 29 || subnet.prefix() < 16 {
            return Err(Error::invalid(format!(
                "subnet {subnet}: a cluster network is a /16 to a /29"
            )));
        }
        let nets = self.networks_service()?;
        if nets.get(&req.name).is_ok() {
            return Err(Error::conflict(format!(
                "network {:?} exists on this member already",
                req.name
            )));
        }
        cluster
            .create_network(NetworkSpec {
                name: req.name.clone(),
                subnet: subnet.to_string(),
                vni: 0,
                description: req.description.clone(),
                created_at: crate::clock::now(),
            })
            .await
            .map_err(from_cluster)?;
        self.inner.networks_changed.notify_one();
        let deadline = std::time::Instant::now() + FOLLOW;
        loop {
            if let Ok(n) = nets.get(&req.name) {
                return Ok(n);
            }
            if std::time::Instant::now() > deadline {
                let why = self
                    .inner
                    .network_errors
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&req.name)
                    .cloned()
                    .unwrap_or_else(|| "see the daemon's log".into());
                return Err(Error::internal(format!(
                    "cluster network {} recorded, but not made on this member: {why}",
                    req.name
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `DELETE /1.0/networks/NAME` of a cluster network: deleted in etcd (refused while
    /// any member has a NIC on it), answered once this member's copy is gone.
    pub async fn delete_network(&self, name: &str) -> Result<()> {
        let Some((cluster, _)) = self.live_member().await else {
            return Err(Error::conflict(
                "a cluster network is deleted through the cluster: this member is not \
                 connected to etcd now",
            ));
        };
        let nets = self.networks_service()?;
        let here = nets.cluster_networks()?;
        if let Some(mine) = here.iter().find(|n| n.name == name) {
            if !mine.hosts.is_empty() {
                let users: Vec<&str> = mine.hosts.iter().map(|(_, n)| n.as_str()).collect();
                return Err(Error::conflict(format!(
                    "cluster network {name} is used by {} on this member; detach them first",
                    users.join(", ")
                )));
            }
        }
        cluster.delete_network(name).await.map_err(from_cluster)?;
        self.inner.networks_changed.notify_one();
        let deadline = std::time::Instant::now() + FOLLOW;
        while nets.get(name).is_ok() {
            if std::time::Instant::now() > deadline {
                return Err(Error::internal(format!(
                    "cluster network {name} deleted, but still here: see the daemon's log"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// Keeps this member's cluster networks as etcd says, every [`NETWORKS_EVERY`] or when
    /// told.
    pub(super) async fn keep_networks(self, cluster: Cluster, me: String) {
        loop {
            if let Err(e) = self.reconcile_networks(&cluster, &me).await {
                tracing::debug!(error = %e, "cluster networks not reconciled");
            }
            tokio::select! {
                _ = self.inner.networks_changed.notified() => {}
                _ = tokio::time::sleep(NETWORKS_EVERY) => {}
            }
        }
    }

    async fn reconcile_networks(&self, cluster: &Cluster, me: &str) -> Result<()> {
        let nets = self.networks_service()?.clone();
        let specs = cluster.networks().await.map_err(from_cluster)?;
        let members = cluster.members().await.map_err(from_cluster)?;
        let Some(local) = members
            .iter()
            .find(|m| m.record.name == me)
            .and_then(|m| underlay(&m.record.address))
        else {
            return Ok(());
        };
        let peers: Vec<String> = members
            .iter()
            .filter(|m| m.record.name != me)
            .filter_map(|m| underlay(&m.record.address))
            .collect();
        let mut here = nets.cluster_networks()?;
        let mut kept_old = std::collections::BTreeSet::new();
        // A copy of a network the cluster made again under the same name while this member
        // was away (cut off, or its daemon down) is of the old one: it goes (once no NIC is
        // on it) and the new one is made.
        for spec in &specs {
            let Some(state) = here.iter().find(|n| n.name == spec.name) else {
                continue;
            };
            let old = state.vni != Some(spec.vni)
                || state.subnet != spec.subnet
                || state.made.as_ref().is_some_and(|m| *m != spec.created_at);
            if !old {
                continue;
            }
            let (n, name) = (nets.clone(), spec.name.clone());
            let gone = tokio::task::spawn_blocking(move || n.delete(&name).map(|_| ()))
                .await
                .map_err(|e| Error::internal(format!("network task: {e}")))?;
            let mut errors = self
                .inner
                .network_errors
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            match gone {
                Ok(()) => {
                    tracing::warn!(network = %spec.name, "the cluster made this network again: the old copy here went, with its forwards and balancers");
                    here.retain(|n| n.name != spec.name);
                }
                Err(e) => {
                    let why = format!(
                        "the cluster made {} again while this member was away; its old copy \
                         here stays ({}; NICs on it must be detached first)",
                        spec.name, e.message
                    );
                    if errors.insert(spec.name.clone(), why.clone()).is_none() {
                        tracing::warn!(network = %spec.name, "{why}");
                    }
                    kept_old.insert(spec.name.clone());
                }
            }
        }
        for spec in &specs {
            if kept_old.contains(&spec.name) {
                continue; // an old copy that stays (said above)
            }
            let state = here.iter().find(|n| n.name == spec.name);
            let mut blocks: Vec<u32> = cluster
                .blocks(&spec.name)
                .await
                .map_err(from_cluster)?
                .into_iter()
                .filter(|(_, m)| m == me)
                .map(|(i, _)| i)
                .collect();
            let count = block(&spec.subnet, 0)?.1;
            if blocks.is_empty() || state.is_some_and(|s| s.free < LOW_WATER) {
                match cluster.claim_block(&spec.name, me, count).await {
                    Ok(i) => blocks.push(i),
                    Err(e) => {
                        tracing::warn!(network = %spec.name, error = %e, "no address block claimed")
                    }
                }
            }
            let ranges = blocks
                .iter()
                .map(|i| block(&spec.subnet, *i).map(|(b, _)| b))
                .collect::<Result<Vec<_>>>()?;
            let outcome = match state {
                None => {
                    let (n, made) = (
                        nets.clone(),
                        ClusterNetworkSpec {
                            name: spec.name.clone(),
                            subnet: spec.subnet.clone(),
                            vni: spec.vni,
                            local: local.clone(),
                            peers: peers.clone(),
                            ranges,
                            description: spec.description.clone(),
                            made: spec.created_at.clone(),
                        },
                    );
                    tokio::task::spawn_blocking(move || n.create_cluster(made).map(|_| ()))
                        .await
                        .map_err(|e| Error::internal(format!("network task: {e}")))?
                }
                Some(state) => {
                    let mine: BTreeMap<String, (String, String)> = state
                        .hosts
                        .iter()
                        .map(|(ip, name)| {
                            let mac = state.macs.get(ip).cloned().unwrap_or_default();
                            (ip.clone(), (name.clone(), mac))
                        })
                        .collect();
                    let all = cluster
                        .sync_hosts(&spec.name, me, &mine)
                        .await
                        .map_err(from_cluster)?;
                    let others: Vec<_> = all.into_iter().filter(|h| h.member != me).collect();
                    let macs: BTreeMap<String, String> = others
                        .iter()
                        .filter(|h| !h.mac.is_empty())
                        .map(|h| (h.ip.clone(), h.mac.clone()))
                        .collect();
                    let mut remote: Vec<(String, String)> =
                        others.into_iter().map(|h| (h.ip, h.name)).collect();
                    remote.sort();
                    let (n, name, p) = (nets.clone(), spec.name.clone(), peers.clone());
                    tokio::task::spawn_blocking(move || {
                        n.cluster_update(&name, p, ranges, remote, macs)
                    })
                    .await
                    .map_err(|e| Error::internal(format!("network task: {e}")))?
                }
            };
            let mut errors = self
                .inner
                .network_errors
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            match outcome {
                Ok(()) => {
                    errors.remove(&spec.name);
                }
                Err(e) => {
                    if errors
                        .insert(spec.name.clone(), e.message.clone())
                        .is_none()
                    {
                        tracing::warn!(network = %spec.name, error = %e, "cluster network not made or updated here");
                    }
                }
            }
        }
        // Deleted in etcd: gone here too (once no NIC is on it).
        for gone in here
            .iter()
            .filter(|n| !specs.iter().any(|s| s.name == n.name))
        {
            let (n, name) = (nets.clone(), gone.name.clone());
            let deleted = tokio::task::spawn_blocking(move || n.delete(&name).map(|_| ()))
                .await
                .map_err(|e| Error::internal(format!("network task: {e}")))?;
            if let Err(e) = deleted {
                tracing::warn!(network = %gone.name, error = %e, "a deleted cluster network stays here");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_split_a_subnet_in_sixteen_of_at_least_a_slash_28() {
        assert_eq!(
            block("10.77.0.0/24", 0).unwrap(),
            ("10.77.0.0/28".into(), 16)
        );
        assert_eq!(
            block("10.77.0.0/24", 3).unwrap(),
            ("10.77.0.48/28".into(), 16)
        );
        assert_eq!(
            block("10.0.0.0/16", 1).unwrap(),
            ("10.0.16.0/20".into(), 16)
        );
        assert_eq!(block("10.9.0.0/27", 1).unwrap(), ("10.9.0.16/28".into(), 2));
        assert_eq!(block("10.9.0.0/29", 0).unwrap(), ("10.9.0.0/29".into(), 1));
        assert!(block("nonsense", 0).is_err());
        assert_eq!(underlay("10.0.0.2:8443").as_deref(), Some("10.0.0.2"));
    }
}
