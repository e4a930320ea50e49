//! The `Cluster` service: which nodes are live and which customer systems each owns (admin
//! token only). Read straight from the node and lease tables, so every node answers the same.

use std::collections::HashMap;

use tonic::{Request, Response, Status};

use super::proto::cluster_server::Cluster;
use super::{ApiState, answer, convert, proto};
use crate::cluster::buckets::BUCKETS;
use crate::error::Error;
use crate::store::{LeaseRow, NodeRow};

pub(super) struct ClusterService {
    state: ApiState,
}

impl ClusterService {
    pub(super) fn new(state: ApiState) -> Self {
        Self { state }
    }
}

impl ClusterService {
    async fn status(&self) -> Result<proto::ClusterStatus, Error> {
        let placement = self.state.dispatcher().placement();
        let this_node = placement.node_id.clone().unwrap_or_default();
        let store = self.state.store();
        if store.is_single_node() {
            return Ok(single_node(this_node));
        }
        let (nodes, leases) = store.cluster_status().await?;
        let live_ms = u64::try_from(placement.live_for.as_millis()).unwrap_or(u64::MAX);
        Ok(status(this_node, &nodes, &leases, live_ms))
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn get_cluster_status(
        &self,
        _request: Request<proto::GetClusterStatusRequest>,
    ) -> Result<Response<proto::ClusterStatus>, Status> {
        answer(self.status().await)
    }
}

/// A SQLite node: the whole cluster, owning every bucket.
fn single_node(this_node: String) -> proto::ClusterStatus {
    proto::ClusterStatus {
        this_node,
        clustered: false,
        buckets: u32::from(BUCKETS),
        ..Default::default()
    }
}

/// The status from the two tables. A node is live while its heartbeat is younger than
/// `live_ms`, the same rule the nodes use to share out buckets.
fn status(
    this_node: String,
    nodes: &[NodeRow],
    leases: &[LeaseRow],
    live_ms: u64,
) -> proto::ClusterStatus {
    let mut owned: HashMap<&str, (u32, i64)> = HashMap::new();
    for lease in leases {
        if let Some(owner) = lease.owner.as_deref().filter(|_| lease.expires_in_ms > 0) {
            let entry = owned.entry(owner).or_default();
            entry.0 += 1;
            entry.1 = entry.1.max(lease.epoch);
        }
    }
    let mut listed: Vec<proto::ClusterNode> = nodes
        .iter()
        .map(|node| {
            let (buckets, epoch) = owned
                .get(node.node_id.as_str())
                .copied()
                .unwrap_or_default();
            let age = u64::try_from(node.heartbeat_age_ms).unwrap_or(0);
            proto::ClusterNode {
                node_id: node.node_id.clone(),
                started_at: Some(convert::timestamp(node.started_at)),
                heartbeat_age_ms: age,
                live: age < live_ms,
                buckets_owned: buckets,
                max_epoch: u64::try_from(epoch).unwrap_or(0),
            }
        })
        .collect();
    listed.sort_by(|a, b| b.live.cmp(&a.live).then_with(|| a.node_id.cmp(&b.node_id)));
    let held: u32 = owned.values().map(|(buckets, _)| buckets).sum();
    proto::ClusterStatus {
        this_node,
        clustered: true,
        nodes: listed,
        buckets: u32::try_from(leases.len()).unwrap_or(u32::MAX),
        unowned_buckets: u32::try_from(leases.len())
            .unwrap_or(u32::MAX)
            .saturating_sub(held),
        handovers_total: leases
            .iter()
            .map(|l| u64::try_from(l.handovers).unwrap_or(0))
            .sum(),
        takeovers_total: leases
            .iter()
            .map(|l| u64::try_from(l.takeovers).unwrap_or(0))
            .sum(),
    }
}

/// Each bucket's current owner (expired leases count as unowned); empty on SQLite.
pub(super) async fn owners(state: &ApiState) -> Result<HashMap<u16, String>, Error> {
    let store = state.store();
    if store.is_single_node() {
        return Ok(HashMap::new());
    }
    Ok(store.bucket_owners().await?.into_iter().collect())
}

/// The node owning the customer (empty on SQLite, or while no node owns it).
pub(super) async fn owner_of(state: &ApiState, customer_id: &str) -> Result<String, Error> {
    let store = state.store();
    if store.is_single_node() {
        return Ok(String::new());
    }
    let bucket = crate::cluster::buckets::bucket_of(customer_id);
    Ok(store.bucket_owner(bucket).await?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(bucket: u16, owner: Option<&str>, epoch: i64, expires_in_ms: i64) -> LeaseRow {
        LeaseRow {
            bucket,
            owner: owner.map(Into::into),
            epoch,
            expires_in_ms,
            handovers: 1,
            takeovers: 0,
        }
    }

    #[test]
    fn nodes_are_listed_live_first_with_their_buckets() {
        let nodes = [
            NodeRow {
                node_id: "b".into(),
                started_at: 0,
                heartbeat_age_ms: 200,
            },
            NodeRow {
                node_id: "a".into(),
                started_at: 0,
                heartbeat_age_ms: 60_000,
            },
        ];
        let leases = [
            lease(0, Some("b"), 3, 5_000),
            lease(1, Some("b"), 7, 5_000),
            lease(2, Some("a"), 2, -10),
            lease(3, None, 4, 0),
        ];
        let status = status("b".into(), &nodes, &leases, 3_000);
        assert_eq!(status.nodes[0].node_id, "b");
        assert!(status.nodes[0].live && !status.nodes[1].live);
        assert_eq!(status.nodes[0].buckets_owned, 2);
        assert_eq!(status.nodes[0].max_epoch, 7);
        assert_eq!(
            status.nodes[1].buckets_owned, 0,
            "an expired lease is not owned"
        );
        assert_eq!((status.buckets, status.unowned_buckets), (4, 2));
        assert_eq!(status.handovers_total, 4);
    }
}
