//! Which buckets this node owns right now, and until when it may send for them.
//!
//! Read on every wake, claim and send, so it is a lock-free table: one atomic epoch per bucket
//! (0: not owned) and one node-wide deadline. The deadline is the self-fencing rule: after each
//! successful lease renewal it moves to `renewal start + lease TTL − margin`, where the margin
//! covers the longest attempt. A node that cannot renew (the database is gone, the process was
//! paused) passes its deadline and stops starting sends *before* its leases can expire and
//! another node take them, and every attempt it had started ends before that too. The clock is
//! the monotonic one, which keeps running while a process is stopped (SIGSTOP), so a node that
//! wakes up after a long pause sees at once that its deadline has passed.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use tokio::time::Instant;

use super::buckets::{BUCKETS, bucket_of};

/// The ownership table of one node. A single node (SQLite, or PostgreSQL without clustering)
/// owns every bucket forever.
#[derive(Debug)]
pub struct Ownership {
    /// Per bucket, the epoch this node holds it with; 0 when it does not own it.
    epochs: Vec<AtomicI64>,
    /// Milliseconds after `origin` until which sends may start; `u64::MAX`: forever.
    send_deadline_ms: AtomicU64,
    origin: Instant,
}

impl Ownership {
    /// Owns every bucket, with no deadline: a node that is the whole cluster.
    pub fn everything() -> Self {
        let ownership = Self::nothing();
        for epoch in &ownership.epochs {
            epoch.store(1, Ordering::Relaxed);
        }
        ownership
            .send_deadline_ms
            .store(u64::MAX, Ordering::Relaxed);
        ownership
    }

    /// Owns nothing yet: a cluster member before its first takeover.
    pub fn nothing() -> Self {
        Self {
            epochs: (0..BUCKETS).map(|_| AtomicI64::new(0)).collect(),
            send_deadline_ms: AtomicU64::new(0),
            origin: Instant::now(),
        }
    }

    /// Whether this node owns the customer's bucket (it runs the customer's actors).
    pub fn owns(&self, customer_id: &str) -> bool {
        self.owns_bucket(bucket_of(customer_id))
    }

    /// Whether this node owns `bucket`.
    pub fn owns_bucket(&self, bucket: u16) -> bool {
        self.epoch(bucket) > 0
    }

    /// The epoch this node holds `bucket` with (0: not owned).
    pub fn epoch(&self, bucket: u16) -> i64 {
        self.epochs
            .get(usize::from(bucket))
            .map_or(0, |e| e.load(Ordering::Acquire))
    }

    /// Whether a send for this customer may start now: the bucket is owned and the node's
    /// leases are fresh enough that the attempt ends before they could expire.
    pub fn may_send(&self, customer_id: &str) -> bool {
        self.owns(customer_id) && self.within_deadline(Instant::now())
    }

    /// Whether `now` is before the self-fencing deadline.
    pub fn within_deadline(&self, now: Instant) -> bool {
        let deadline = self.send_deadline_ms.load(Ordering::Acquire);
        deadline == u64::MAX || self.since_origin(now) < deadline
    }

    /// Records that `bucket` is held with `epoch`.
    pub fn grant(&self, bucket: u16, epoch: i64) {
        if let Some(slot) = self.epochs.get(usize::from(bucket)) {
            slot.store(epoch.max(1), Ordering::Release);
        }
    }

    /// Records that `bucket` is no longer held (released or lost).
    pub fn revoke(&self, bucket: u16) {
        if let Some(slot) = self.epochs.get(usize::from(bucket)) {
            slot.store(0, Ordering::Release);
        }
    }

    /// Buckets held now.
    pub fn owned(&self) -> Vec<u16> {
        (0..BUCKETS).filter(|b| self.owns_bucket(*b)).collect()
    }

    /// Moves the send deadline to `until` (after a successful renewal).
    pub fn extend_deadline(&self, until: Instant) {
        self.send_deadline_ms
            .store(self.since_origin(until), Ordering::Release);
    }

    fn since_origin(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.origin).as_millis()).unwrap_or(u64::MAX - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_member_sends_only_for_owned_buckets_before_its_deadline() {
        let ownership = Ownership::nothing();
        let customer = "acme";
        let bucket = bucket_of(customer);
        assert!(!ownership.may_send(customer));
        ownership.grant(bucket, 3);
        // Owned, but no renewal yet: no deadline to send within.
        assert!(ownership.owns(customer) && !ownership.may_send(customer));
        ownership.extend_deadline(Instant::now() + Duration::from_secs(8));
        assert!(ownership.may_send(customer));
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(!ownership.may_send(customer), "past the deadline: fenced");
        ownership.extend_deadline(Instant::now() + Duration::from_secs(8));
        assert!(ownership.may_send(customer));
        ownership.revoke(bucket);
        assert!(!ownership.may_send(customer));
        assert_eq!(ownership.epoch(bucket), 0);
    }

    #[test]
    fn a_single_node_owns_everything_forever() {
        let ownership = Ownership::everything();
        assert_eq!(ownership.owned().len(), usize::from(BUCKETS));
        assert!(ownership.may_send("anyone"));
    }
}
