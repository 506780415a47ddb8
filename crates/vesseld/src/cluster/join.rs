//! Making a cluster and joining one: one at a time (a second waits for the first, then
//! finds this server a member), and only while this server is no member of one (or its
//! membership ended: `ended.rs`).

use std::time::Duration;

use vessel_api::{ClusterInfo, ClusterInit, ClusterJoin};
use vessel_cluster::{Cluster, JoinToken};

use super::{check_address, from_cluster, ClusterService, Membership, SharedSeed, LEASE_TTL};
use crate::error::{Error, Result};

impl ClusterService {
    /// `POST /1.0/cluster`: a new cluster with this server its first member.
    pub async fn init(&self, req: ClusterInit) -> Result<ClusterInfo> {
        let _one = self.inner.joining.lock().await;
        self.refuse_if_member(None).await?;
        vessel_cluster::validate_name(&req.name).map_err(from_cluster)?;
        check_address(&req.address)?;
        let cluster = Cluster::connect(&req.etcd).await.map_err(from_cluster)?;
        let id = crate::auth::random_hex(16)?;
        let me = self.record(&req.name, &req.address)?;
        cluster
            .init(&id, &crate::clock::now(), &me)
            .await
            .map_err(from_cluster)?;
        self.joined(Membership {
            id,
            name: req.name,
            address: req.address,
            etcd: req.etcd,
            shared_seed: SharedSeed::All,
            profiles_shared: true,
        })
        .await
    }

    /// Keeps a membership etcd has recorded and starts beating. The membership stands
    /// whatever happens next: if etcd stops answering meanwhile, the heartbeat starts when
    /// it answers again (`cluster info` says connected: no until then).
    async fn joined(&self, m: Membership) -> Result<ClusterInfo> {
        self.save(&m)?;
        self.set_ended(None);
        *self.inner.membership.lock().await = Some(m.clone());
        self.share(&m);
        if let Err(e) = self.go_live(&m).await {
            tracing::warn!(error = %e, "joined, but not beating yet; retrying");
            let svc = self.clone();
            tokio::spawn(async move { svc.resume().await });
        } else {
            // Answered once the others see it online (its first heartbeat, within moments).
            let deadline = std::time::Instant::now() + LEASE_TTL;
            while std::time::Instant::now() < deadline {
                let online = self
                    .members()
                    .await
                    .is_ok_and(|all| all.iter().any(|x| x.name == m.name && x.state == "online"));
                if online {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        self.info().await
    }

    /// `POST /1.0/cluster/join`: this server joins the cluster the token is from.
    pub async fn join(&self, req: ClusterJoin) -> Result<ClusterInfo> {
        let token = JoinToken::decode(&req.token).map_err(from_cluster)?;
        let _one = self.inner.joining.lock().await;
        self.refuse_if_member(Some((&token.cluster, &token.name)))
            .await?;
        check_address(&req.address)?;
        let cluster = Cluster::connect(&token.endpoints)
            .await
            .map_err(from_cluster)?;
        if cluster.id().await.map_err(from_cluster)?.as_deref() != Some(token.cluster.as_str()) {
            return Err(Error::forbidden(format!(
                "the token is from cluster {}, which etcd at {} does not hold",
                token.cluster,
                token.endpoints.join(", ")
            )));
        }
        // The issuer must be a member still, with the certificate the token names.
        let members = cluster.members().await.map_err(from_cluster)?;
        if !members
            .iter()
            .any(|m| m.record.fingerprint == token.fingerprint)
        {
            return Err(Error::forbidden(format!(
                "the token's issuer {} is no longer a member of the cluster",
                token.issuer
            )));
        }
        let me = self.record(&token.name, &req.address)?;
        cluster
            .redeem(&token.id, &token.secret, &me)
            .await
            .map_err(from_cluster)?;
        self.joined(Membership {
            id: token.cluster,
            name: token.name,
            address: req.address,
            etcd: token.endpoints,
            shared_seed: SharedSeed::Projects,
            profiles_shared: true,
        })
        .await
    }
}
