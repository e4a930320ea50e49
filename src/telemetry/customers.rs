//! Per-customer figures on the `/metrics` page: the delivery counters each customer keeps in the
//! registry (they outlive its actors), and the state of every running actor, read at scrape time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::customer_stats::{Circuit, CustomerStats, Tier};
use super::exposition::{Exposition, Kind};
use super::histogram::{Histogram, LATENCY_BUCKETS};
use crate::model::Lane;

/// How a delivery attempt ended, as the `result` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptResult {
    /// 2xx: the notification is delivered.
    Delivered,
    /// A retryable failure: the notification waits for another attempt.
    Retried,
    /// A permanent failure, or the retry budget ran out: the notification is failed.
    Failed,
}

impl AttemptResult {
    const ALL: [AttemptResult; 3] = [Self::Delivered, Self::Retried, Self::Failed];

    fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Retried => "retried",
            Self::Failed => "failed",
        }
    }
}

/// One customer's counters, shared by its actor and its delivery tasks.
#[derive(Debug)]
pub struct CustomerCounters {
    /// `[lane][result]`.
    attempts: [[AtomicU64; 3]; 2],
    rtt: Histogram,
    tier_changes: AtomicU64,
}

impl CustomerCounters {
    pub(super) fn new() -> Self {
        Self {
            attempts: Default::default(),
            rtt: Histogram::new(LATENCY_BUCKETS),
            tier_changes: AtomicU64::new(0),
        }
    }

    /// Counts one finished attempt and its round-trip time (`None`: nothing was sent).
    pub fn attempt(&self, lane: Lane, result: AttemptResult, rtt: Option<Duration>) {
        self.attempts[lane_index(lane)][result as usize].fetch_add(1, Ordering::Relaxed);
        if let Some(rtt) = rtt {
            self.rtt.observe_duration(rtt);
        }
    }

    /// Counts one tier change.
    pub fn tier_changed(&self) {
        self.tier_changes.fetch_add(1, Ordering::Relaxed);
    }
}

fn lane_index(lane: Lane) -> usize {
    match lane {
        Lane::Transactional => 0,
        Lane::Bulk => 1,
    }
}

/// Every customer's counters (sorted by customer id).
pub(super) fn render_counters(
    page: &mut Exposition,
    customers: &[(String, Arc<CustomerCounters>)],
) {
    page.family(
        "floodgate_customer_attempts_total",
        Kind::Counter,
        "Delivery attempts per customer, lane and result (delivered, retried, failed).",
    );
    for (id, counters) in customers {
        for (lane, by_result) in ["transactional", "bulk"].iter().zip(&counters.attempts) {
            for (result, count) in AttemptResult::ALL.iter().zip(by_result) {
                page.sample(
                    "floodgate_customer_attempts_total",
                    &[
                        ("customer", id),
                        ("lane", lane),
                        ("result", result.as_str()),
                    ],
                    count.load(Ordering::Relaxed) as f64,
                );
            }
        }
    }
    page.family(
        "floodgate_customer_rtt_seconds",
        Kind::Histogram,
        "Round-trip time of delivery attempts per customer.",
    );
    for (id, counters) in customers {
        page.histogram(
            "floodgate_customer_rtt_seconds",
            &[("customer", id)],
            &counters.rtt,
        );
    }
    page.family(
        "floodgate_customer_tier_changes_total",
        Kind::Counter,
        "Tier changes per customer.",
    );
    for (id, counters) in customers {
        page.sample(
            "floodgate_customer_tier_changes_total",
            &[("customer", id)],
            counters.tier_changes.load(Ordering::Relaxed) as f64,
        );
    }
}

/// The controller's state of every running actor.
pub(super) fn render_actors(page: &mut Exposition, actors: &[CustomerStats]) {
    type Gauge = (&'static str, &'static str, fn(&CustomerStats) -> f64);
    let gauges: [Gauge; 3] = [
        (
            "floodgate_customer_in_flight",
            "Deliveries under way per customer.",
            |s| s.in_flight as f64,
        ),
        (
            "floodgate_customer_concurrency_limit",
            "The controller's concurrency limit per customer.",
            |s| s.limit as f64,
        ),
        (
            "floodgate_customer_pacing_rate",
            "The controller's pacing rate per customer, deliveries/s.",
            |s| s.rate,
        ),
    ];
    for (name, help, value) in gauges {
        page.family(name, Kind::Gauge, help);
        for stats in actors {
            page.sample(name, &[("customer", &stats.customer_id)], value(stats));
        }
    }
    page.family(
        "floodgate_customer_rtt_baseline_seconds",
        Kind::Gauge,
        "The controller's RTT baseline per customer: the system's own queue-free round trip.",
    );
    for stats in actors {
        if let Some(baseline) = stats.rtt_baseline {
            page.sample(
                "floodgate_customer_rtt_baseline_seconds",
                &[("customer", &stats.customer_id)],
                baseline.as_secs_f64(),
            );
        }
    }
    page.family(
        "floodgate_customer_tier",
        Kind::Gauge,
        "1 for the tier each customer is in, 0 for the others.",
    );
    for stats in actors {
        for tier in Tier::ALL {
            let value = if stats.tier == tier { 1.0 } else { 0.0 };
            page.sample(
                "floodgate_customer_tier",
                &[("customer", &stats.customer_id), ("tier", tier.as_str())],
                value,
            );
        }
    }
    page.family(
        "floodgate_customer_circuit_open",
        Kind::Gauge,
        "1 while a customer's circuit breaker is open or half-open (probing), else 0.",
    );
    for stats in actors {
        let open = if stats.circuit == Circuit::Closed {
            0.0
        } else {
            1.0
        };
        page.sample(
            "floodgate_customer_circuit_open",
            &[("customer", &stats.customer_id)],
            open,
        );
    }
}
