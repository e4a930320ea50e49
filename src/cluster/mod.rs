//! The cluster: several nodes on one PostgreSQL database, and still exactly one controller per
//! customer system.
//!
//! Customer systems hash into a fixed number of [`buckets`]. Each bucket has one owner node,
//! recorded in a lease with an expiry and an epoch that rises on every change of owner (the
//! fencing token); only the owner runs the actors of that bucket's customers, so each customer
//! system is probed, paced and paused (`Retry-After`) by one controller, whichever node accepted
//! its notifications. Nodes heartbeat into a node table, and the live set decides owners by
//! rendezvous hashing ([`membership`]). [`Ownership`] is what the dispatcher asks on every wake,
//! claim and send. A notification accepted by a node that does not own its customer reaches the
//! owner through [`wakes`].
//!
//! A SQLite node is the whole cluster: it owns every bucket and has no lease table.
//! docs/cluster.md explains ownership, fencing and handover with a diagram.

pub mod buckets;
pub mod membership;
pub mod ownership;
pub mod wakes;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use membership::{BucketHolder, Membership, MembershipSettings};
pub use ownership::Ownership;
pub use wakes::{RemoteEvent, RemoteWakes};

/// What the dispatcher needs to know about the cluster it runs in.
#[derive(Debug, Clone)]
pub struct Placement {
    /// This node's id in the cluster (`None` on a single node).
    pub node_id: Option<String>,
    /// How long a node counts as live after its last heartbeat (see [`MembershipSettings`]).
    pub live_for: std::time::Duration,
    /// Which buckets this node owns now.
    pub ownership: Arc<Ownership>,
    /// Where wakes for customers this node does not own go; `None` on a single node.
    pub remote_wakes: Option<RemoteWakes>,
}

impl Placement {
    /// This node's place in the cluster now, for `/metrics` (`None` on a single node).
    pub fn view(&self) -> Option<crate::telemetry::cluster::ClusterView> {
        let node_id = self.node_id.clone()?;
        Some(crate::telemetry::cluster::ClusterView {
            node_id,
            buckets_owned: self.ownership.owned().len(),
            fenced: !self.ownership.within_deadline(tokio::time::Instant::now()),
        })
    }

    /// A node that is the whole cluster: it owns everything and never wakes another node.
    pub fn single() -> Self {
        Self {
            node_id: None,
            live_for: std::time::Duration::ZERO,
            ownership: Arc::new(Ownership::everything()),
            remote_wakes: None,
        }
    }
}

/// The node id could not be made safe to use.
#[derive(Debug, thiserror::Error)]
pub enum NodeIdError {
    #[error(
        "{path} is locked: another floodgate process uses this data directory, and so would use the same cluster node id; give each node its own --data-dir"
    )]
    Locked { path: PathBuf },
    #[error("cannot create {path}: {source}")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// This node's id and the lock that keeps it unique: `--node-id`, or the host name and a hash of
/// the data directory, so the same node keeps its id across restarts (and takes back its own
/// buckets at once) while two processes on one data directory are refused.
#[derive(Debug)]
pub struct NodeId {
    pub id: String,
    _lock: File,
}

impl NodeId {
    /// Locks `data_dir/node.lock` and decides the id.
    pub fn claim(data_dir: &Path, configured: Option<&str>) -> Result<Self, NodeIdError> {
        let path = data_dir.join("node.lock");
        let lock = File::create(&path).map_err(|source| NodeIdError::Create {
            path: path.clone(),
            source,
        })?;
        lock.try_lock()
            .map_err(|_| NodeIdError::Locked { path: path.clone() })?;
        let id = match configured {
            Some(id) => id.to_owned(),
            None => default_id(data_dir),
        };
        Ok(Self { id, _lock: lock })
    }
}

/// `host-1a2b3c4d`: the host name and a hash of the data directory's absolute path.
fn default_id(data_dir: &Path) -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".to_owned());
    let dir = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_owned());
    let hash = buckets::stable_hash(dir.to_string_lossy().as_bytes());
    format!("{host}-{:08x}", hash as u32)
}
