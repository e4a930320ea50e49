//! The dashboard's memory: every few seconds, each running customer actor's figures are sampled
//! into a short ring per customer, so a freshly opened page can draw the last minutes at once and
//! the per-customer view can show the controller move. Bounded: [`KEEP`] of history per
//! customer, and a customer whose actor has stopped ages out.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::dispatch::{CustomerStats, Dispatcher};
use crate::model::{EpochMillis, now_millis};

/// How often the actors are sampled: the dashboard's refresh promise.
pub(crate) const SAMPLE_EVERY: Duration = Duration::from_secs(2);
/// How much history is kept per customer.
const KEEP: Duration = Duration::from_secs(600);
/// Tier changes kept per customer.
const KEEP_CHANGES: usize = 50;

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

#[derive(Debug, Default)]
struct Customer {
    samples: VecDeque<Sample>,
    changes: VecDeque<TierChange>,
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

    /// Adds one sample per actor, and forgets what is older than [`KEEP`].
    pub(crate) fn record(&self, actors: &[CustomerStats], now: EpochMillis) {
        let mut customers = lock(&self.customers);
        for stats in actors {
            let customer = customers.entry(stats.customer_id.clone()).or_default();
            customer.samples.push_back(sample(stats, now));
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
        let oldest = now.saturating_sub(i64::try_from(KEEP.as_millis()).unwrap_or(i64::MAX));
        customers.retain(|_, customer| {
            while customer.samples.front().is_some_and(|s| s.t_ms < oldest) {
                customer.samples.pop_front();
            }
            !customer.samples.is_empty()
        });
    }

    /// Each customer's delivered/s over time, as `[t_ms, delivered_per_sec]` pairs.
    pub(crate) fn throughput(&self) -> HashMap<String, Vec<(EpochMillis, f64)>> {
        lock(&self.customers)
            .iter()
            .map(|(id, customer)| {
                let points = customer
                    .samples
                    .iter()
                    .map(|s| (s.t_ms, s.delivered_per_sec))
                    .collect();
                (id.clone(), points)
            })
            .collect()
    }

    /// One customer's samples and tier changes, oldest first.
    pub(crate) fn customer(&self, id: &str) -> Option<(Vec<Sample>, Vec<TierChange>)> {
        let customers = lock(&self.customers);
        let customer = customers.get(id)?;
        Some((
            customer.samples.iter().cloned().collect(),
            customer.changes.iter().cloned().collect(),
        ))
    }
}

fn sample(stats: &CustomerStats, now: EpochMillis) -> Sample {
    Sample {
        t_ms: now,
        delivered_per_sec: stats.delivered_per_sec,
        limit: stats.limit,
        rate: stats.rate,
        rtt_p99_ms: stats.rtt_p99.map(|rtt| rtt.as_secs_f64() * 1000.0),
        error_rate: stats.error_rate,
        in_flight: stats.in_flight,
        tier: stats.tier.as_str(),
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
        assert_eq!(history.throughput()["b"], vec![(1_000, 5.0)]);

        // Ten minutes later only the customer still sampled remains.
        let later = 3_000 + KEEP.as_millis() as i64;
        history.record(&[stats("a", 3.0, change)], later);
        assert!(history.customer("b").is_none());
        assert_eq!(history.customer("a").unwrap().0.len(), 2);
    }
}
