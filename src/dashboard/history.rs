//! The dashboard's memory: every few seconds, each running customer actor's figures are sampled
//! into a short ring per customer, so a freshly opened page can draw the last minutes at once and
//! the per-customer view can show the controller move. Bounded: [`KEEP`] of history per
//! customer, and a customer whose actor has stopped ages out.
//!
//! With thousands of running customers this is most of what the dashboard costs, so samples are
//! kept compact ([`Kept`], 40 bytes) in rings that grow by doubling but never past [`KEEP`]: at
//! most 12 KB per customer, where [`Sample`]s (80 bytes) in rings doubled to 512 took 40 KB, so
//! 400 MB for 10,000 customers.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::dispatch::{CustomerStats, Dispatcher};
use crate::model::{EpochMillis, now_millis};
use crate::telemetry::customer_stats::Tier;

/// How often the actors are sampled: the dashboard's refresh promise.
pub(crate) const SAMPLE_EVERY: Duration = Duration::from_secs(2);
/// How much history is kept per customer.
const KEEP: Duration = Duration::from_secs(600);
/// Tier changes kept per customer.
const KEEP_CHANGES: usize = 50;
/// Samples in [`KEEP`]: the most a customer's ring is grown to.
const RING: usize = (KEEP.as_secs() / SAMPLE_EVERY.as_secs()) as usize + 1;

/// One customer's figures at one moment.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Sample {
    pub t_ms: EpochMillis,
    pub delivered_per_sec: f64,
    pub limit: usize,
    pub rate: f64,
    pub rtt_p99_ms: Option<f64>,
    pub error_rate: f64,
    pub in_flight: usize,
    pub tier: &'static str,
}

/// One tier change, as the controller explained it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct TierChange {
    pub at_ms: EpochMillis,
    pub from: &'static str,
    pub to: &'static str,
    pub reason: String,
}

/// One sample as the ring keeps it: the figures a chart draws, at the precision a chart needs.
#[derive(Debug, Clone, Copy)]
struct Kept {
    t_ms: EpochMillis,
    delivered_per_sec: f32,
    rate: f32,
    /// NaN while the customer has no RTT yet.
    rtt_p99_ms: f32,
    error_rate: f32,
    limit: u32,
    in_flight: u32,
    tier: Tier,
}

impl Kept {
    /// The figures of `stats` at `now`; `as f32` keeps seven digits, more than a chart draws.
    fn of(stats: &CustomerStats, now: EpochMillis) -> Self {
        let rtt_ms = stats.rtt_p99.map(|rtt| rtt.as_secs_f64() * 1000.0);
        Self {
            t_ms: now,
            delivered_per_sec: stats.delivered_per_sec as f32,
            rate: stats.rate as f32,
            rtt_p99_ms: rtt_ms.map_or(f32::NAN, |ms| ms as f32),
            error_rate: stats.error_rate as f32,
            limit: u32::try_from(stats.limit).unwrap_or(u32::MAX),
            in_flight: u32::try_from(stats.in_flight).unwrap_or(u32::MAX),
            tier: stats.tier,
        }
    }

    fn sample(self) -> Sample {
        Sample {
            t_ms: self.t_ms,
            delivered_per_sec: f64::from(self.delivered_per_sec),
            limit: self.limit as usize,
            rate: f64::from(self.rate),
            rtt_p99_ms: (!self.rtt_p99_ms.is_nan()).then_some(f64::from(self.rtt_p99_ms)),
            error_rate: f64::from(self.error_rate),
            in_flight: self.in_flight as usize,
            tier: self.tier.as_str(),
        }
    }
}

#[derive(Debug, Default)]
struct Customer {
    samples: VecDeque<Kept>,
    changes: VecDeque<TierChange>,
}

impl Customer {
    /// Adds a sample, growing the ring by doubling (a short-lived actor's stays small) but never
    /// past [`RING`], where a plain `VecDeque` would double to 512.
    fn push(&mut self, kept: Kept) {
        if self.samples.len() == self.samples.capacity() {
            let target = (self.samples.capacity() * 2).clamp(4, RING);
            self.samples
                .reserve_exact(target.saturating_sub(self.samples.len()));
        }
        self.samples.push_back(kept);
    }

    fn forget_before(&mut self, oldest: EpochMillis) {
        while self.samples.front().is_some_and(|s| s.t_ms < oldest) {
            self.samples.pop_front();
        }
    }
}

/// Every customer's recent samples.
#[derive(Debug, Default)]
pub(crate) struct History {
    customers: Mutex<HashMap<String, Customer>>,
}

/// A poisoned lock only means a panic elsewhere mid-update; the samples are still usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl History {
    /// Samples `dispatcher` every [`SAMPLE_EVERY`] until `stop` is cancelled.
    pub(crate) async fn run(&self, dispatcher: Dispatcher, stop: CancellationToken) {
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => self.record(&dispatcher.all_stats().await, now_millis()),
            }
        }
    }

    /// Adds one sample per actor, and forgets what is older than [`KEEP`] (first, so a full
    /// ring never grows past [`RING`]).
    pub(crate) fn record(&self, actors: &[CustomerStats], now: EpochMillis) {
        let oldest = now.saturating_sub(i64::try_from(KEEP.as_millis()).unwrap_or(i64::MAX));
        let mut customers = lock(&self.customers);
        for stats in actors {
            let customer = customers.entry(stats.customer_id.clone()).or_default();
            customer.forget_before(oldest);
            customer.push(Kept::of(stats, now));
            if let Some(last) = &stats.last_tier_change {
                let change = TierChange {
                    at_ms: last.at,
                    from: last.from.as_str(),
                    to: last.to.as_str(),
                    reason: last.reason.clone(),
                };
                if customer.changes.back() != Some(&change) {
                    customer.changes.push_back(change);
                    if customer.changes.len() > KEEP_CHANGES {
                        customer.changes.pop_front();
                    }
                }
            }
        }
        customers.retain(|_, customer| {
            customer.forget_before(oldest);
            !customer.samples.is_empty()
        });
    }

    /// The delivered/s over time of each of `ids` that has samples, as `[t_ms,
    /// delivered_per_sec]` pairs.
    pub(crate) fn throughput(&self, ids: &[&str]) -> HashMap<String, Vec<(EpochMillis, f64)>> {
        let customers = lock(&self.customers);
        ids.iter()
            .filter_map(|id| {
                let customer = customers.get(*id)?;
                let points = customer
                    .samples
                    .iter()
                    .map(|s| (s.t_ms, f64::from(s.delivered_per_sec)))
                    .collect();
                Some(((*id).to_owned(), points))
            })
            .collect()
    }

    /// One customer's samples and tier changes, oldest first.
    pub(crate) fn customer(&self, id: &str) -> Option<(Vec<Sample>, Vec<TierChange>)> {
        let customers = lock(&self.customers);
        let customer = customers.get(id)?;
        Some((
            customer.samples.iter().map(|kept| kept.sample()).collect(),
            customer.changes.iter().cloned().collect(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::controller::{Circuit, Tier};

    fn stats(id: &str, delivered: f64, change: Option<(EpochMillis, Tier, Tier)>) -> CustomerStats {
        CustomerStats {
            customer_id: id.into(),
            tier: Tier::Fast,
            limit: 4,
            rate: 100.0,
            delivered_per_sec: delivered,
            rtt_p50: None,
            rtt_p99: Some(Duration::from_millis(12)),
            rtt_baseline: None,
            error_rate: 0.0,
            in_flight: 2,
            window: [0, 0],
            circuit: Circuit::Closed,
            last_tier_change: change.map(|(at, from, to)| crate::dispatch::LastTierChange {
                at,
                from,
                to,
                reason: "because".into(),
            }),
            delivered_total: 0,
            failed_total: 0,
            tier_changes_total: 0,
        }
    }

    #[test]
    fn keeps_recent_samples_and_each_tier_change_once() {
        let history = History::default();
        let change = Some((500, Tier::Medium, Tier::Fast));
        history.record(&[stats("a", 1.0, change), stats("b", 5.0, None)], 1_000);
        history.record(&[stats("a", 2.0, change)], 3_000);
        let (samples, changes) = history.customer("a").unwrap();
        assert_eq!(samples.len(), 2);
        assert_eq!(samples[1].rtt_p99_ms, Some(12.0));
        assert_eq!(
            changes.len(),
            1,
            "the same change sampled twice is one change"
        );
        assert_eq!(changes[0].to, "fast");
        assert_eq!(history.throughput(&["b"])["b"], vec![(1_000, 5.0)]);
        let only_a = history.throughput(&["a", "nobody"]);
        assert_eq!(
            only_a.keys().collect::<Vec<_>>(),
            ["a"],
            "only the customers asked for, and only with samples"
        );

        // A sample reads back as recorded, with no RTT still none.
        let mut quiet = stats("q", 0.25, None);
        quiet.rtt_p99 = None;
        history.record(&[quiet], 3_000);
        let (samples, _) = history.customer("q").unwrap();
        assert_eq!(samples[0].delivered_per_sec, 0.25);
        assert_eq!((samples[0].limit, samples[0].in_flight), (4, 2));
        assert_eq!((samples[0].rtt_p99_ms, samples[0].tier), (None, "fast"));

        // Ten minutes later only the customer still sampled remains.
        let later = 3_000 + KEEP.as_millis() as i64;
        history.record(&[stats("a", 3.0, change)], later);
        assert!(history.customer("b").is_none());
        assert_eq!(history.customer("a").unwrap().0.len(), 2);
    }

    #[test]
    fn a_ring_starts_small_and_never_grows_past_ten_minutes() {
        let history = History::default();
        let every = i64::try_from(SAMPLE_EVERY.as_millis()).unwrap();
        history.record(&[stats("a", 1.0, None)], 0);
        assert!(lock(&history.customers)["a"].samples.capacity() <= 4);
        for i in 1..1_000 {
            history.record(&[stats("a", 1.0, None)], i * every);
        }
        let customers = lock(&history.customers);
        let ring = &customers["a"].samples;
        assert_eq!(
            ring.len(),
            RING,
            "ten minutes of samples, both ends included"
        );
        assert_eq!(
            ring.capacity(),
            RING,
            "grown to ten minutes, not doubled past it"
        );
        assert_eq!(
            std::mem::size_of::<Kept>(),
            40,
            "what the module docs promise"
        );
    }
}
