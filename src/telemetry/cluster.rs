//! What a cluster node counts: buckets taken and handed over, buckets lost after its own leases
//! expired, notifications returned for redelivery by takeovers, and whether it is fenced. An SRE
//! watching a rolling deploy sees handovers; a node that cannot reach the database shows up as
//! fenced, then as lost buckets.

use std::sync::atomic::{AtomicU64, Ordering};

use super::exposition::{Exposition, Kind};

/// Counters of the membership protocol on this node.
#[derive(Debug, Default)]
pub struct ClusterCounters {
    taken: AtomicU64,
    handed_over: AtomicU64,
    lost: AtomicU64,
    redelivered: AtomicU64,
}

impl ClusterCounters {
    /// Buckets this node took over (free, or expired after their owner died).
    pub fn taken(&self, buckets: usize, redelivered: u64) {
        self.taken.fetch_add(buckets as u64, Ordering::Relaxed);
        self.redelivered.fetch_add(redelivered, Ordering::Relaxed);
    }

    /// Buckets this node handed to a node that joined.
    pub fn handed_over(&self, buckets: usize) {
        self.handed_over
            .fetch_add(buckets as u64, Ordering::Relaxed);
    }

    /// Buckets another node took after this node's leases expired.
    pub fn lost(&self, buckets: usize) {
        self.lost.fetch_add(buckets as u64, Ordering::Relaxed);
    }
}

/// This node's place in the cluster at scrape time (also shown in the dashboard's header).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ClusterView {
    pub node_id: String,
    pub buckets_owned: usize,
    /// Past its fencing deadline: it could not renew its leases and sends nothing.
    pub fenced: bool,
}

impl ClusterCounters {
    /// The cluster families, labelled with this node's id.
    pub(super) fn render(&self, page: &mut Exposition, view: &ClusterView) {
        let node = [("node", view.node_id.as_str())];
        let gauges = [
            (
                "floodgate_cluster_buckets_owned",
                "Buckets of customer systems this node owns (of 1,024) and runs the actors of.",
                view.buckets_owned as f64,
            ),
            (
                "floodgate_cluster_fenced",
                "1 while this node could not renew its leases in time and starts no sends.",
                f64::from(u8::from(view.fenced)),
            ),
        ];
        for (name, help, value) in gauges {
            page.family(name, Kind::Gauge, help);
            page.sample(name, &node, value);
        }
        let counters = [
            (
                "floodgate_cluster_buckets_taken_total",
                "Buckets this node took: free ones, or expired ones whose owner died.",
                &self.taken,
            ),
            (
                "floodgate_cluster_buckets_handed_over_total",
                "Buckets this node drained and released to a node that joined.",
                &self.handed_over,
            ),
            (
                "floodgate_cluster_buckets_lost_total",
                "Buckets another node took after this node's leases expired.",
                &self.lost,
            ),
            (
                "floodgate_cluster_redelivered_total",
                "Notifications a takeover returned to pending because the former owner held them in flight.",
                &self.redelivered,
            ),
        ];
        for (name, help, value) in counters {
            page.family(name, Kind::Counter, help);
            page.sample(name, &node, value.load(Ordering::Relaxed) as f64);
        }
    }
}
