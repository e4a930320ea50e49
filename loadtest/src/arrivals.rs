//! What webhook receivers saw: each notification counted once by its `webhook-id` (a redelivery
//! is a duplicate, not a second delivery), first arrivals per second since the epoch (the
//! timeline a report draws), and the end-to-end latency of stamped notifications per lane — from
//! the send time in their payload (see [`crate::caller::stamped_payload`]) to their arrival.
//! Sender and receivers run in this one process, so both sides read the same monotonic clock.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use anyhow::Result;
use hdrhistogram::Histogram;
use serde::Deserialize;
use tokio::time::Instant;

use crate::report;

/// Every arrival, counted and timed.
pub(crate) struct Arrivals {
    /// Stamps count µs from here.
    epoch: Instant,
    /// Latency is recorded only for notifications sent at or after this stamp (after the warmup).
    measure_from_us: AtomicU64,
    /// Every webhook id seen. The `webhook-id` is an opaque string, so it is kept as one.
    seen: Mutex<HashSet<Box<str>>>,
    /// First arrivals; an `Arc` so a window counter can watch it.
    unique: Arc<AtomicU64>,
    /// Arrivals of an id already seen.
    duplicates: AtomicU64,
    /// Arrivals without a `webhook-id` header (floodgate always sends one).
    without_id: AtomicU64,
    /// End-to-end latency in µs of first arrivals whose payload carried a stamp, per lane
    /// (transactional, bulk).
    latency: Mutex<[Histogram<u64>; 2]>,
    /// First arrivals in each second since the epoch.
    timeline: Mutex<Vec<u32>>,
}

/// A webhook's lane, as its body names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Lane {
    Transactional,
    Bulk,
}

/// Only a summary: the set of ids can hold millions.
impl std::fmt::Debug for Arrivals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Arrivals")
            .field("unique", &self.unique())
            .field("duplicates", &self.duplicates())
            .finish_non_exhaustive()
    }
}

/// The part of the webhook body read here: the payload's stamp, if it has one.
#[derive(Deserialize)]
struct Body {
    lane: Option<Lane>,
    payload: Stamp,
}

#[derive(Deserialize)]
struct Stamp {
    t_us: Option<u64>,
}

impl Arrivals {
    /// Starts counting, with the stamp epoch at now.
    pub(crate) fn new() -> Result<Arc<Self>> {
        Self::since(Instant::now())
    }

    /// Starts counting, with stamps and the timeline counted from `epoch` (shared by the
    /// receivers of one run).
    pub(crate) fn since(epoch: Instant) -> Result<Arc<Self>> {
        Ok(Arc::new(Self {
            epoch,
            measure_from_us: AtomicU64::new(0),
            seen: Mutex::new(HashSet::new()),
            unique: Arc::new(AtomicU64::new(0)),
            duplicates: AtomicU64::new(0),
            without_id: AtomicU64::new(0),
            latency: Mutex::new([report::new_histogram()?, report::new_histogram()?]),
            timeline: Mutex::new(Vec::new()),
        }))
    }

    /// Where the stamps in payloads count from: hand it to [`crate::caller::Plan::stamped`].
    pub(crate) fn epoch(&self) -> Instant {
        self.epoch
    }

    /// Records latency only for notifications sent at or after `at`, so the warmup's (a cold
    /// server's) deliveries do not count.
    pub(crate) fn measure_from(&self, at: Instant) {
        let us =
            u64::try_from(at.saturating_duration_since(self.epoch).as_micros()).unwrap_or(u64::MAX);
        self.measure_from_us.store(us, Ordering::Relaxed);
    }

    /// Takes one webhook: its `webhook-id` header, if any, and its body.
    pub(crate) fn record(&self, id: Option<&str>, body: &[u8]) {
        let now_us = u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX);
        let Some(id) = id else {
            self.without_id.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if !lock(&self.seen).insert(id.into()) {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.unique.fetch_add(1, Ordering::Relaxed);
        let second = usize::try_from(now_us / 1_000_000).unwrap_or(usize::MAX);
        {
            let mut timeline = lock(&self.timeline);
            if timeline.len() <= second {
                timeline.resize(second + 1, 0);
            }
            timeline[second] += 1;
        }
        let Ok(body) = serde_json::from_slice::<Body>(body) else {
            return;
        };
        if let Some(sent_us) = body.payload.t_us
            && sent_us >= self.measure_from_us.load(Ordering::Relaxed)
        {
            let lane = body.lane.unwrap_or(Lane::Transactional) as usize;
            lock(&self.latency)[lane].saturating_record(now_us.saturating_sub(sent_us).max(1));
        }
    }

    /// Whether notification `id` has arrived.
    pub(crate) fn contains(&self, id: &str) -> bool {
        lock(&self.seen).contains(id)
    }

    /// First arrivals in each second since the epoch, up to the last second with one.
    pub(crate) fn timeline(&self) -> Vec<u32> {
        lock(&self.timeline).clone()
    }

    /// Notifications that arrived, each counted once.
    pub(crate) fn unique(&self) -> u64 {
        self.unique.load(Ordering::Relaxed)
    }

    /// Arrivals of a notification that had already arrived.
    pub(crate) fn duplicates(&self) -> u64 {
        self.duplicates.load(Ordering::Relaxed)
    }

    /// Arrivals that could not be told apart (no `webhook-id`).
    pub(crate) fn without_id(&self) -> u64 {
        self.without_id.load(Ordering::Relaxed)
    }

    /// A copy of the end-to-end latencies so far, both lanes together, in µs.
    pub(crate) fn latency(&self) -> Histogram<u64> {
        let [transactional, bulk] = &*lock(&self.latency);
        let mut all = transactional.clone();
        // Both come from `report::new_histogram`, so their ranges agree and adding cannot fail.
        let _ = all.add(bulk);
        all
    }

    /// A copy of one lane's end-to-end latencies so far, in µs.
    pub(crate) fn lane_latency(&self, lane: Lane) -> Histogram<u64> {
        lock(&self.latency)[lane as usize].clone()
    }
}

/// A poisoned lock only means another receiver task panicked mid-record; the counts it guards
/// are still the best there are.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::caller::stamped_payload;

    fn webhook(payload: &[u8]) -> Vec<u8> {
        let payload = std::str::from_utf8(payload).unwrap();
        format!(r#"{{"id":"1","customer_id":"c-0","lane":"bulk","payload":{payload},"attempt":1}}"#)
            .into_bytes()
    }

    #[tokio::test]
    async fn ids_count_once_and_stamps_give_latency() {
        let arrivals = Arrivals::new().unwrap();
        let sent = arrivals.epoch() + Duration::from_millis(1);
        let body = webhook(&stamped_payload(arrivals.epoch(), sent, 100));
        arrivals.record(Some("1"), &body);
        arrivals.record(Some("1"), &body);
        arrivals.record(Some("2"), &webhook(br#"{"loadtest":true}"#));
        arrivals.record(None, &body);
        assert_eq!(arrivals.unique(), 2);
        assert_eq!(arrivals.duplicates(), 1);
        assert_eq!(arrivals.without_id(), 1);
        assert_eq!(arrivals.latency().len(), 1);
        assert_eq!(arrivals.lane_latency(Lane::Bulk).len(), 1);
        assert_eq!(arrivals.lane_latency(Lane::Transactional).len(), 0);
        assert!(arrivals.contains("2") && !arrivals.contains("3"));
        assert_eq!(arrivals.timeline(), [2]);
    }

    #[tokio::test]
    async fn the_warmup_is_not_timed() {
        let arrivals = Arrivals::new().unwrap();
        arrivals.measure_from(arrivals.epoch() + Duration::from_secs(1));
        let early = stamped_payload(arrivals.epoch(), arrivals.epoch(), 100);
        arrivals.record(Some("1"), &webhook(&early));
        assert_eq!(arrivals.unique(), 1);
        assert_eq!(arrivals.latency().len(), 0);
    }
}
