//! A PostgreSQL node's part in the cluster, from claiming its node id to releasing its leases:
//! the steps `run` takes around the dispatcher's start and shutdown.

use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::AppError;
use super::drain::finish_by;
use crate::cluster::{Membership, NodeId, Ownership, Placement, RemoteWakes};
use crate::config::ServeConfig;
use crate::dispatch::Dispatcher;
use crate::store::Store;
use crate::telemetry::metrics::Metrics;

/// A cluster member before it joins: its locked node id and what the dispatcher needs.
pub(super) struct ClusterNode {
    node: NodeId,
    pub(super) placement: Placement,
    stop: CancellationToken,
    remote_sender: JoinHandle<()>,
}

/// A cluster member that has joined: its protocol and wake listener run until [`stop`].
///
/// [`stop`]: RunningCluster::stop
pub(super) struct RunningCluster {
    node: NodeId,
    ownership: Arc<Ownership>,
    leaving: CancellationToken,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

/// What is left of a cluster member after it stopped: enough to release its leases.
pub(super) struct LeftCluster {
    pub(super) id: String,
    pub(super) ownership: Arc<Ownership>,
    _node: NodeId,
}

impl ClusterNode {
    /// Locks the node id and starts the sender of wakes to other nodes.
    pub(super) fn prepare(cfg: &ServeConfig, store: &Store) -> Result<Self, AppError> {
        let node = NodeId::claim(&cfg.data_dir, cfg.node_id.as_deref())?;
        let stop = CancellationToken::new();
        let (remote, remote_sender) = RemoteWakes::spawn(store.clone(), stop.clone());
        let placement = Placement {
            node_id: Some(node.id.clone()),
            live_for: cfg.membership_settings(node.id.clone()).node_ttl(),
            ownership: Arc::new(Ownership::nothing()),
            remote_wakes: Some(remote),
        };
        Ok(Self {
            node,
            placement,
            stop,
            remote_sender,
        })
    }

    /// Joins (the first round takes this node's buckets) and starts the protocol and the wake
    /// listener.
    pub(super) async fn join(
        self,
        cfg: &ServeConfig,
        store: &Store,
        dispatcher: &Dispatcher,
        metrics: Arc<Metrics>,
    ) -> Result<RunningCluster, AppError> {
        let ownership = self.placement.ownership.clone();
        let membership = Membership::join(
            cfg.membership_settings(self.node.id.clone()),
            store.clone(),
            ownership.clone(),
            dispatcher.clone(),
            metrics,
        )
        .await?;
        tracing::info!(node_id = %self.node.id, buckets = ownership.owned().len(), "joined the cluster");
        let leaving = CancellationToken::new();
        let protocol = tokio::spawn(membership.run(leaving.clone(), self.stop.clone()));
        let on_event = {
            let dispatcher = dispatcher.clone();
            move |event, customer: &str| dispatcher.remote_event(event, customer)
        };
        let listener = tokio::spawn(crate::cluster::wakes::listen(
            cfg.database_url(),
            ownership.clone(),
            on_event,
            self.stop.clone(),
        ));
        Ok(RunningCluster {
            node: self.node,
            ownership,
            leaving,
            stop: self.stop,
            tasks: vec![protocol, listener, self.remote_sender],
        })
    }
}

impl RunningCluster {
    /// A clean shutdown begins: the others stop counting this node; it keeps renewing its leases
    /// while the dispatcher drains, and takes nothing new.
    pub(super) async fn start_leaving(&self, store: &Store) {
        self.leaving.cancel();
        Membership::<Dispatcher>::announce_leaving(store, &self.node.id).await;
    }

    /// Stops the protocol and the wake tasks (they hold the dispatcher) by `end`.
    pub(super) async fn stop(mut self, end: tokio::time::Instant) -> LeftCluster {
        self.stop.cancel();
        for task in &mut self.tasks {
            finish_by(task, end, "a cluster task").await;
        }
        LeftCluster {
            id: self.node.id.clone(),
            ownership: self.ownership,
            _node: self.node,
        }
    }
}
