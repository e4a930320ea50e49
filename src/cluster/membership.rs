//! The membership loop: heartbeats, lease renewal, planned handovers and takeovers.
//!
//! Every `heartbeat` the node:
//! 1. writes its heartbeat into the node table;
//! 2. renews every lease it holds, and on success moves its send deadline to
//!    `tick start + lease TTL − margin` (self-fencing, see [`Ownership`]); a bucket the renewal no
//!    longer returns was taken by another node after the lease expired, so its actors stop at once;
//! 3. reads the live set (nodes with a fresh heartbeat) and computes each bucket's owner by
//!    rendezvous hashing;
//! 4. hands over the buckets it holds but no longer wins (a node joined): it stops starting
//!    sends for them, waits for their attempts under way, writes their controllers' checkpoints
//!    and only then releases the lease — so the next owner starts after the last send of this
//!    one, with the learned limit, and nothing is sent twice;
//! 5. takes the buckets it wins that are free or whose lease has expired (a node left or died),
//!    raising each lease's epoch and returning the former owner's in-flight notifications to
//!    pending in the same transaction.
//!
//! Nothing here relies on a connection staying open (no advisory locks, no LISTEN for
//! correctness), so it works behind PgBouncer in transaction mode.

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::buckets::{BUCKETS, bucket_of, owner_of};
use super::ownership::Ownership;
use crate::model::now_millis;
use crate::store::{HeldBucket, Store};
use crate::telemetry::metrics::Metrics;

/// What the dispatcher does when buckets change hands (implemented by the dispatcher, so this
/// module never depends on it).
pub trait BucketHolder: Clone + Send + Sync + 'static {
    /// Stops the actors of `buckets`' customers after their attempts under way have ended (at
    /// most `within`), and writes their outcomes and controller checkpoints.
    fn drain_buckets(&self, buckets: Vec<u16>, within: Duration)
    -> impl Future<Output = ()> + Send;

    /// Stops the actors of `buckets`' customers now: the buckets were lost.
    fn drop_buckets(&self, buckets: Vec<u16>);

    /// Newly owned buckets: look for their due work now rather than at the next sweep.
    fn buckets_taken(&self) -> impl Future<Output = ()> + Send;
}

/// Timing of the membership protocol. See docs/cluster.md for how they bound takeover time.
#[derive(Debug, Clone)]
pub struct MembershipSettings {
    /// This node's id in the node and lease tables; unique per running process.
    pub node_id: String,
    /// How long a lease lasts without renewal.
    pub lease_ttl: Duration,
    /// How often heartbeats and renewals run.
    pub heartbeat: Duration,
    /// How long before its lease expires a node stops starting sends: longer than any attempt.
    pub fence_margin: Duration,
}

impl MembershipSettings {
    /// A node is counted live while its last heartbeat is younger than this: three heartbeats
    /// may be missed before the others plan to take its buckets (they still wait for its leases
    /// to expire before taking them).
    pub fn node_ttl(&self) -> Duration {
        self.heartbeat * 3
    }
}

/// The running protocol of one node.
pub struct Membership<H: BucketHolder> {
    settings: MembershipSettings,
    store: Store,
    ownership: Arc<Ownership>,
    holder: H,
    metrics: Arc<Metrics>,
    started_at: i64,
    /// Buckets being handed over (drained, then released) by a task.
    releasing: Arc<Mutex<HashSet<u16>>>,
}

impl<H: BucketHolder> Membership<H> {
    /// Joins the cluster: creates the lease rows if missing, writes the first heartbeat and takes
    /// over whatever a previous process with this node id still held (its leases are not
    /// waited out: the data directory lock says that process is gone).
    pub async fn join(
        settings: MembershipSettings,
        store: Store,
        ownership: Arc<Ownership>,
        holder: H,
        metrics: Arc<Metrics>,
    ) -> Result<Self, crate::store::Error> {
        let membership = Self {
            metrics,
            started_at: now_millis(),
            settings,
            store,
            ownership,
            holder,
            releasing: Arc::default(),
        };
        membership.store.ensure_buckets(BUCKETS).await?;
        membership
            .store
            .heartbeat(&membership.settings.node_id, membership.started_at)
            .await?;
        // Whatever a previous process with this node id still holds: it is gone (the data
        // directory is locked), so its leases are released now rather than waited out.
        let every: Vec<u16> = (0..BUCKETS).collect();
        let stale = membership
            .store
            .release_buckets(&membership.settings.node_id, &every)
            .await?;
        if stale > 0 {
            tracing::info!(
                buckets = stale,
                "released the leases a previous process with this node id held"
            );
        }
        // The first round now, so a node that is alone owns its buckets before it serves.
        membership.tick(false).await?;
        Ok(membership)
    }

    /// Runs the protocol, one round per heartbeat, until `stop`. Once `leaving` is cancelled
    /// (a clean shutdown has begun) it only renews the leases it holds while the dispatcher
    /// drains: no heartbeat, so the others plan without it, and no takeover.
    pub async fn run(self, leaving: CancellationToken, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.settings.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {
                    if let Err(err) = self.tick(leaving.is_cancelled()).await {
                        tracing::warn!(error = %err, "cluster heartbeat failed; sends stop at the fencing deadline unless the next one succeeds");
                    }
                }
            }
        }
    }

    /// One round of the protocol.
    async fn tick(&self, leaving: bool) -> Result<(), crate::store::Error> {
        let started = Instant::now();
        let node = self.settings.node_id.as_str();
        if !leaving {
            self.store.heartbeat(node, self.started_at).await?;
        }
        let held = self
            .store
            .renew_leases(node, millis(self.settings.lease_ttl))
            .await?;
        let deadline = started
            + self
                .settings
                .lease_ttl
                .saturating_sub(self.settings.fence_margin);
        self.ownership.extend_deadline(deadline);
        self.forget_lost(&held);
        if leaving {
            return Ok(());
        }

        let mut live = self
            .store
            .live_nodes(millis(self.settings.node_ttl()))
            .await?;
        if !live.iter().any(|n| n == node) {
            live.push(node.to_owned());
        }
        let wins: HashSet<u16> = (0..BUCKETS)
            .filter(|b| owner_of(*b, &live) == Some(node))
            .collect();
        self.hand_over(&held, &wins);
        self.take(&held, &wins).await
    }

    /// Buckets this node thought it held that the renewal did not return: another node took
    /// them (this node's lease had expired), so their actors stop at once.
    fn forget_lost(&self, held: &[HeldBucket]) {
        let still: HashSet<u16> = held.iter().map(|h| h.bucket).collect();
        let releasing = self.releasing_now();
        let lost: Vec<u16> = self
            .ownership
            .owned()
            .into_iter()
            .filter(|b| !still.contains(b) && !releasing.contains(b))
            .collect();
        if lost.is_empty() {
            return;
        }
        tracing::warn!(
            buckets = lost.len(),
            "lost buckets to another node after this node's leases expired; stopping their actors"
        );
        for bucket in &lost {
            self.ownership.revoke(*bucket);
        }
        self.metrics.cluster().lost(lost.len());
        self.holder.drop_buckets(lost);
    }

    /// Starts a handover of every held bucket this node no longer wins, in a task: stop sending,
    /// drain, checkpoint, release.
    fn hand_over(&self, held: &[HeldBucket], wins: &HashSet<u16>) {
        let mut releasing = self.releasing.lock().unwrap_or_else(|e| e.into_inner());
        let leaving: Vec<u16> = held
            .iter()
            .map(|h| h.bucket)
            .filter(|b| !wins.contains(b) && !releasing.contains(b))
            .collect();
        if leaving.is_empty() {
            return;
        }
        releasing.extend(leaving.iter().copied());
        drop(releasing);
        for bucket in &leaving {
            self.ownership.revoke(*bucket);
        }
        tracing::info!(
            buckets = leaving.len(),
            "handing buckets over to a node that joined"
        );
        let (store, holder, node) = (
            self.store.clone(),
            self.holder.clone(),
            self.settings.node_id.clone(),
        );
        let (within, releasing) = (self.settings.fence_margin, self.releasing.clone());
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            holder.drain_buckets(leaving.clone(), within).await;
            match store.release_buckets(&node, &leaving).await {
                Ok(_) => metrics.cluster().handed_over(leaving.len()),
                Err(err) => {
                    tracing::warn!(error = %err, "could not release handed-over buckets; their leases will expire")
                }
            }
            let mut releasing = releasing.lock().unwrap_or_else(|e| e.into_inner());
            for bucket in &leaving {
                releasing.remove(bucket);
            }
        });
    }

    /// Takes the buckets this node wins but does not hold, where they are free or expired.
    async fn take(
        &self,
        held: &[HeldBucket],
        wins: &HashSet<u16>,
    ) -> Result<(), crate::store::Error> {
        let held: HashSet<u16> = held.iter().map(|h| h.bucket).collect();
        let mut wanted: Vec<u16> = wins.iter().copied().filter(|b| !held.contains(b)).collect();
        if wanted.is_empty() {
            return Ok(());
        }
        wanted.sort_unstable();
        let takeover = self
            .store
            .take_buckets(
                &self.settings.node_id,
                &wanted,
                millis(self.settings.lease_ttl),
                now_millis(),
                |customer, taken| {
                    let bucket = bucket_of(customer);
                    taken.iter().any(|t| t.bucket == bucket)
                },
            )
            .await?;
        if takeover.taken.is_empty() {
            return Ok(());
        }
        for held in &takeover.taken {
            self.ownership.grant(held.bucket, held.epoch);
        }
        self.metrics
            .cluster()
            .taken(takeover.taken.len(), takeover.released);
        tracing::info!(
            buckets = takeover.taken.len(),
            redelivered = takeover.released,
            "took ownership of buckets"
        );
        self.holder.buckets_taken().await;
        Ok(())
    }

    /// Starts leaving (a clean shutdown, before the dispatcher drains): the node row goes, so the
    /// other nodes stop counting this one and plan to take its buckets once it releases them.
    pub async fn announce_leaving(store: &Store, node_id: &str) {
        if let Err(err) = store.leave_cluster(node_id).await {
            tracing::warn!(error = %err, "could not remove this node from the node table");
        }
    }

    /// Finishes leaving, after the dispatcher has drained and the last outcomes and checkpoints
    /// are written: every lease is released, so the others take the buckets at their next
    /// heartbeat instead of waiting for the leases to expire.
    pub async fn release_all(store: &Store, node_id: &str, ownership: &Ownership) {
        let owned = ownership.owned();
        for bucket in &owned {
            ownership.revoke(*bucket);
        }
        match store.release_buckets(node_id, &owned).await {
            Ok(released) => tracing::info!(released, "released this node's buckets"),
            Err(err) => {
                tracing::warn!(error = %err, "could not release this node's buckets; the others take them when the leases expire")
            }
        }
    }

    fn releasing_now(&self) -> HashSet<u16> {
        self.releasing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// A duration in whole milliseconds, saturating.
fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
