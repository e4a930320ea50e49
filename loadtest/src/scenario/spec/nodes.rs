//! The floodgate nodes of a scenario: how many start, which are killed and added during the
//! run, and the cluster timing every node gets.

use std::time::Duration;

use anyhow::{Result, ensure};
use serde::Deserialize;

use super::{Scenario, Span};

/// Most floodgate nodes a scenario may start, joins included: more would only share the same
/// cores.
const MAX_NODES: usize = 8;

/// At `at`, node `node` (numbered from 0 in the order the nodes started, joins included) is
/// SIGKILLed and not restarted.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KillNode {
    pub(crate) at: Span,
    pub(crate) node: usize,
}

/// At `at`, one more node starts (numbered after every node before it).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AddNode {
    pub(crate) at: Span,
}

/// floodgate's cluster timing flags; an unset one keeps floodgate's default. They decide how long
/// a killed node's buckets wait for a new owner (about `lease_ttl`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ClusterTiming {
    /// `--cluster-lease-ttl`.
    pub(crate) lease_ttl: Option<Span>,
    /// `--cluster-heartbeat`.
    pub(crate) heartbeat: Option<Span>,
    /// `--webhook-timeout`: a node stops sending this long (plus a heartbeat) before its leases
    /// expire, so `lease_ttl` must be at least this plus three heartbeats.
    pub(crate) webhook_timeout: Option<Span>,
}

impl ClusterTiming {
    /// The flags for `floodgate serve`.
    pub(crate) fn flags(&self) -> Vec<String> {
        [
            ("--cluster-lease-ttl", self.lease_ttl),
            ("--cluster-heartbeat", self.heartbeat),
            ("--webhook-timeout", self.webhook_timeout),
        ]
        .into_iter()
        .filter_map(|(flag, span)| {
            span.map(|span| {
                [
                    flag.to_owned(),
                    humantime::format_duration(span.0).to_string(),
                ]
            })
        })
        .flatten()
        .collect()
    }

    /// Checks the timing as floodgate would, with its defaults for what is unset.
    fn check(&self) -> Result<()> {
        let mut config = floodgate::config::ServeConfig::defaults();
        // Nodes share a PostgreSQL database, where floodgate checks the cluster timing.
        config.database_url = Some("postgres://cluster-nodes/floodgate".to_owned());
        if let Some(ttl) = self.lease_ttl {
            config.cluster_lease_ttl = ttl.0;
        }
        if let Some(heartbeat) = self.heartbeat {
            config.cluster_heartbeat = heartbeat.0;
        }
        if let Some(timeout) = self.webhook_timeout {
            config.webhook_timeout = timeout.0;
        }
        config
            .validate()
            .map_err(|err| anyhow::anyhow!("[cluster]: {err}"))
    }
}

/// A change to the set of running nodes, in the order the run makes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NodeEvent {
    /// SIGKILL this node.
    Kill(usize),
    /// Start the node with this number.
    Add(usize),
}

impl Scenario {
    /// Checks the node count, that every kill names a node running at that time, and that a
    /// node always runs.
    pub(super) fn check_nodes(&self) -> Result<()> {
        ensure!(self.nodes >= 1, "nodes must be at least 1");
        let events = self.node_events();
        for (at, _) in &events {
            ensure!(
                *at < self.duration.0,
                "kill_node and add_node must be inside the load phase"
            );
        }
        let mut running: Vec<usize> = (0..self.nodes).collect();
        for (at, event) in events {
            match event {
                NodeEvent::Kill(node) => {
                    ensure!(
                        running.contains(&node),
                        "kill_node at {}: node {node} is not running then",
                        humantime::format_duration(at)
                    );
                    running.retain(|n| *n != node);
                    ensure!(
                        !running.is_empty(),
                        "kill_node at {}: no node would be left running",
                        humantime::format_duration(at)
                    );
                }
                NodeEvent::Add(node) => running.push(node),
            }
        }
        ensure!(
            self.nodes_started() <= MAX_NODES,
            "at most {MAX_NODES} nodes (nodes + add_node)"
        );
        self.cluster.check()
    }

    /// Whether the run has more than one node at some point, and so needs PostgreSQL.
    pub(crate) fn is_cluster(&self) -> bool {
        self.nodes > 1 || !self.add_node.is_empty()
    }

    /// Nodes killed and added, in time order (a kill before an add at the same time), with the
    /// time since the load started.
    pub(crate) fn node_events(&self) -> Vec<(Duration, NodeEvent)> {
        let mut events: Vec<(Duration, NodeEvent)> = self
            .kill_node
            .iter()
            .map(|kill| (kill.at.0, NodeEvent::Kill(kill.node)))
            .collect();
        let mut adds: Vec<Duration> = self.add_node.iter().map(|add| add.at.0).collect();
        adds.sort();
        events.extend(
            adds.into_iter()
                .enumerate()
                .map(|(k, at)| (at, NodeEvent::Add(self.nodes + k))),
        );
        // Stable: kills keep their file order at equal times, and sort before adds.
        events.sort_by_key(|(at, event)| (*at, matches!(event, NodeEvent::Add(_))));
        events
    }

    /// Nodes the run starts, at the start and later.
    pub(crate) fn nodes_started(&self) -> usize {
        self.nodes + self.add_node.len()
    }
}
