//! The floodgate a run talks to — nodes the harness started, or a `--target` — and the node
//! kills and additions a scenario makes to it.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::path::PathBuf;

use anyhow::{Context as _, Result, bail, ensure};
use floodgate::api::proto;
use floodgate::api::proto::customers_client::CustomersClient;
use tokio::time::Instant;

use super::entrances::Entrances;
use super::ownership::NodeChange;
use super::spec::{NodeEvent, Scenario};
use crate::client::{self, AuthedChannel};
use crate::cluster::{Cluster, node_id};

/// The floodgate a policy's run talks to.
pub(super) enum Server {
    /// One node, or several on one database.
    Started(Box<Cluster>),
    Target {
        url: String,
        token: String,
        tls_ca: Option<PathBuf>,
    },
}

impl Server {
    /// A connection to one running node.
    pub(super) async fn connect(&self) -> Result<AuthedChannel> {
        match self {
            Server::Started(cluster) => {
                let (i, _) = cluster
                    .live()
                    .next()
                    .context("no floodgate node is running")?;
                cluster.connect(i).await
            }
            Server::Target { url, token, tls_ca } => {
                client::connect(url, token, tls_ca.as_deref()).await
            }
        }
    }

    /// A connection to every running node, with its number.
    pub(super) async fn connect_all(&self) -> Result<Vec<(usize, AuthedChannel)>> {
        match self {
            Server::Started(cluster) => cluster.connect_all().await,
            Server::Target { .. } => Ok(vec![(0, self.connect().await?)]),
        }
    }

    pub(super) fn describe(&self) -> String {
        match self {
            Server::Started(cluster) => cluster.describe(),
            Server::Target { url, .. } => format!("floodgate at {url}"),
        }
    }

    /// The nodes the harness started, to kill and add.
    pub(super) fn cluster(&mut self) -> Result<&mut Cluster> {
        match self {
            Server::Started(cluster) => Ok(cluster),
            Server::Target { .. } => bail!("cannot kill or add nodes of a --target floodgate"),
        }
    }

    /// The PostgreSQL database of started nodes, whose lease table says who owns what.
    pub(super) fn database_url(&self) -> Option<&str> {
        match self {
            Server::Started(cluster) => cluster.database_url(),
            Server::Target { .. } => None,
        }
    }

    pub(super) async fn stop(self) -> Result<()> {
        match self {
            Server::Started(cluster) => cluster.stop().await,
            Server::Target { .. } => Ok(()),
        }
    }
}

/// Makes the scenario's crash, or its node kills and additions, at their times; returns the
/// changes as made. A node leaves the entrances before it is killed and joins them once it
/// answers calls.
pub(super) async fn change_nodes(
    scenario: &Scenario,
    server: &mut Server,
    entrances: &Entrances,
    start: Instant,
) -> Result<Vec<NodeChange>> {
    if let Some(at) = scenario.crash_at {
        tokio::time::sleep_until(start + at.0).await;
        server.cluster()?.kill_and_restart(0).await?;
    }
    let mut changes = Vec::new();
    for (at, event) in scenario.node_events() {
        tokio::time::sleep_until(start + at).await;
        let cluster = server.cluster()?;
        match event {
            NodeEvent::Kill(node) => {
                entrances.close(node);
                cluster.kill(node).await?;
                changes.push(NodeChange::Killed {
                    node: node_id(node),
                    at: start.elapsed(),
                });
            }
            NodeEvent::Add(planned) => {
                let began = Instant::now();
                let node = cluster.add().await?;
                ensure!(
                    node == planned,
                    "started node {node}, but the scenario numbers it {planned}"
                );
                let ready = began.elapsed();
                entrances.open(node, cluster.connect(node).await?);
                eprintln!("{} joined", node_id(node));
                changes.push(NodeChange::Added {
                    node: node_id(node),
                    at: began - start,
                    ready,
                    running: cluster.live().map(|(i, _)| node_id(i)).collect(),
                });
            }
        }
    }
    Ok(changes)
}

/// Every customer's stats, by id, from the node running its controller.
pub(super) async fn stats(server: &Server) -> Result<HashMap<String, proto::CustomerStats>> {
    let mut merged = HashMap::new();
    for (_, channel) in server.connect_all().await? {
        let answer = CustomersClient::new(channel)
            .list_customer_stats(proto::ListCustomerStatsRequest {})
            .await
            .context("ListCustomerStats failed")?;
        merge_stats(&mut merged, answer.into_inner().stats);
    }
    Ok(merged)
}

/// Adds one node's stats to `merged`. Only the node that owns a customer runs its controller;
/// every other node reports it idle, so a live controller's stats win over idle ones.
fn merge_stats(
    merged: &mut HashMap<String, proto::CustomerStats>,
    stats: Vec<proto::CustomerStats>,
) {
    let idle = proto::Tier::Idle as i32;
    for one in stats {
        match merged.entry(one.customer_id.clone()) {
            Entry::Vacant(entry) => {
                entry.insert(one);
            }
            Entry::Occupied(mut entry) => {
                if entry.get().tier == idle && one.tier != idle {
                    entry.insert(one);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(customer: &str, tier: proto::Tier, limit: u32) -> proto::CustomerStats {
        proto::CustomerStats {
            customer_id: customer.into(),
            tier: tier as i32,
            concurrency_limit: limit,
            ..proto::CustomerStats::default()
        }
    }

    #[test]
    fn a_customers_stats_come_from_the_node_running_its_controller() {
        let mut merged = HashMap::new();
        // Node 0 owns a; node 1 owns b; both report the other's customer idle.
        merge_stats(
            &mut merged,
            vec![
                stats("a", proto::Tier::Fast, 40),
                stats("b", proto::Tier::Idle, 0),
                stats("c", proto::Tier::Idle, 0),
            ],
        );
        merge_stats(
            &mut merged,
            vec![
                stats("a", proto::Tier::Idle, 0),
                stats("b", proto::Tier::Slow, 3),
                stats("c", proto::Tier::Idle, 0),
            ],
        );
        assert_eq!(merged["a"].concurrency_limit, 40);
        assert_eq!(merged["b"].tier, proto::Tier::Slow as i32);
        assert_eq!(merged["b"].concurrency_limit, 3);
        assert_eq!(merged["c"].tier, proto::Tier::Idle as i32);
        assert_eq!(merged.len(), 3);
    }
}
