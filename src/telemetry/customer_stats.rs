//! A customer's delivery figures as its actors report them, and the tier and circuit words they
//! use. Dispatch produces them; the metrics page, the dashboard and the API show them. They live
//! here, below dispatch, so telemetry never reaches up into the dispatcher for its vocabulary.

use std::fmt;
use std::time::Duration;

use crate::model::EpochMillis;

/// A customer system's speed class: a label for people and dashboards, derived from the rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tier {
    /// Rate at or above the fast threshold.
    Fast,
    /// Rate at or above the medium threshold.
    Medium,
    /// Rate below the medium threshold.
    Slow,
    /// Paused by an operator: nothing is sent.
    Paused,
    /// The circuit is open (or half-open, probing): nothing but probes is sent.
    CircuitOpen,
}

impl Tier {
    /// Every tier, for metrics that list them all.
    pub const ALL: [Tier; 5] = [
        Self::Fast,
        Self::Medium,
        Self::Slow,
        Self::Paused,
        Self::CircuitOpen,
    ];

    /// The tier's name in logs, metrics and the API.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Fast => "fast",
            Self::Medium => "medium",
            Self::Slow => "slow",
            Self::Paused => "paused",
            Self::CircuitOpen => "circuit_open",
        }
    }

    /// Speed order of the rate tiers (slow 0, medium 1, fast 2); other tiers have none. The
    /// controller's hysteresis moves along it.
    pub(crate) const fn rank(self) -> Option<u8> {
        match self {
            Self::Slow => Some(0),
            Self::Medium => Some(1),
            Self::Fast => Some(2),
            Self::Paused | Self::CircuitOpen => None,
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The circuit breaker's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Circuit {
    /// Normal sending.
    Closed,
    /// Nothing is sent until the cool-down has passed; then one probe may go.
    Open,
    /// One probe is (or may be) in flight; its outcome closes or reopens the circuit.
    HalfOpen,
}

/// A customer system's delivery figures as its actor sees them now.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomerStats {
    pub customer_id: String,
    pub tier: Tier,
    /// Concurrency limit: deliveries allowed in flight at once.
    pub limit: usize,
    /// Pacing rate, deliveries/s.
    pub rate: f64,
    /// Deliveries per second over the last 10 s.
    pub delivered_per_sec: f64,
    pub rtt_p50: Option<Duration>,
    pub rtt_p99: Option<Duration>,
    /// The controller's RTT baseline: the customer system's own queue-free RTT, once measured
    /// (`None` under the baseline policies). RTTs far above it mean a queue.
    pub rtt_baseline: Option<Duration>,
    /// Share of attempts in the last 10 s that met overload, timeouts, connection or server errors.
    pub error_rate: f64,
    pub in_flight: usize,
    /// Claimed notifications held in memory, per lane (transactional, bulk).
    pub window: [usize; 2],
    pub circuit: Circuit,
    /// The last tier change: when (epoch ms), from, to and why.
    pub last_tier_change: Option<LastTierChange>,
    /// Totals since the actor started.
    pub delivered_total: u64,
    pub failed_total: u64,
    /// Tier changes since the actor started (each is also logged with its reason).
    pub tier_changes_total: u64,
}

/// A customer's last tier change as its stats report it: the controller's record, with the
/// moment on the wall clock so it can be shown and compared across nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastTierChange {
    /// When, in epoch milliseconds.
    pub at: EpochMillis,
    pub from: Tier,
    pub to: Tier,
    /// Why, as logged.
    pub reason: String,
}

impl CustomerStats {
    /// One customer's figures from its per-channel actors: rates, limits and counts add up; the
    /// error rate, RTTs, tier and circuit are the worst channel's, so a struggling provider shows.
    /// `None` when no actor is running.
    pub fn merge(parts: Vec<CustomerStats>) -> Option<CustomerStats> {
        parts.into_iter().reduce(|mut all, part| {
            all.limit += part.limit;
            all.rate += part.rate;
            all.delivered_per_sec += part.delivered_per_sec;
            all.rtt_p50 = all.rtt_p50.max(part.rtt_p50);
            all.rtt_p99 = all.rtt_p99.max(part.rtt_p99);
            all.rtt_baseline = all.rtt_baseline.max(part.rtt_baseline);
            all.error_rate = all.error_rate.max(part.error_rate);
            all.in_flight += part.in_flight;
            all.window = [
                all.window[0] + part.window[0],
                all.window[1] + part.window[1],
            ];
            if tier_rank(part.tier) > tier_rank(all.tier) {
                all.tier = part.tier;
            }
            if circuit_rank(part.circuit) > circuit_rank(all.circuit) {
                all.circuit = part.circuit;
            }
            if part.last_tier_change.as_ref().map(|c| c.at)
                > all.last_tier_change.as_ref().map(|c| c.at)
            {
                all.last_tier_change = part.last_tier_change;
            }
            all.delivered_total += part.delivered_total;
            all.failed_total += part.failed_total;
            all.tier_changes_total += part.tier_changes_total;
            all
        })
    }
}

/// Slower tiers rank higher.
fn tier_rank(tier: Tier) -> u8 {
    match tier {
        Tier::Fast => 0,
        Tier::Medium => 1,
        Tier::Slow => 2,
        Tier::Paused => 3,
        Tier::CircuitOpen => 4,
    }
}

/// Less open circuits rank lower.
fn circuit_rank(circuit: Circuit) -> u8 {
    match circuit {
        Circuit::Closed => 0,
        Circuit::HalfOpen => 1,
        Circuit::Open => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(tier: Tier, limit: usize, error_rate: f64, delivered_total: u64) -> CustomerStats {
        CustomerStats {
            customer_id: "acme".into(),
            tier,
            limit,
            rate: limit as f64,
            delivered_per_sec: 1.0,
            rtt_p50: Some(Duration::from_millis(limit as u64)),
            rtt_p99: None,
            rtt_baseline: Some(Duration::from_millis(limit as u64)),
            error_rate,
            in_flight: 1,
            window: [1, 2],
            circuit: Circuit::Closed,
            last_tier_change: None,
            delivered_total,
            failed_total: 0,
            tier_changes_total: 0,
        }
    }

    #[test]
    fn channels_merge_into_one_customer() {
        assert_eq!(CustomerStats::merge(Vec::new()), None);
        let one = stats(Tier::Fast, 8, 0.0, 3);
        assert_eq!(CustomerStats::merge(vec![one.clone()]), Some(one.clone()));
        let merged = CustomerStats::merge(vec![one, stats(Tier::Slow, 2, 0.5, 4)]).unwrap();
        assert_eq!(merged.limit, 10);
        assert_eq!(merged.tier, Tier::Slow);
        assert_eq!(merged.error_rate, 0.5);
        assert_eq!(merged.delivered_total, 7);
        assert_eq!(merged.window, [2, 4]);
        assert_eq!(merged.rtt_p50, Some(Duration::from_millis(8)));
        assert_eq!(merged.rtt_baseline, Some(Duration::from_millis(8)));
    }
}
