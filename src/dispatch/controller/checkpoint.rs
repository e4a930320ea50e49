//! The controller's learned state as a checkpoint: what a new owner, a restarted node or a
//! re-started idle actor needs to resume at the learned pace instead of slow start.
//!
//! Only what was *learned* about the customer system is kept: the limit, the capacity and break
//! point it measured, the RTT baseline, and the protections under way (an open circuit, a
//! `Retry-After` pause) with their remaining time. Measurement windows and EWMAs start over; they
//! refill within one window. Times are stored as durations remaining, so a checkpoint means the
//! same on any node's clock.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::plateau::BreakPoint;
use super::settings::MIN_LIMIT;
use super::{Circuit, Controller, Tier};

/// A controller's learned state, stored as JSON beside the bucket's lease.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Concurrency limit.
    pub limit: f64,
    /// Queue-free limit measured at the last congestion.
    pub capacity: Option<f64>,
    /// The customer system's queue-free RTT, seconds.
    pub rtt_baseline: Option<f64>,
    /// Where the system last refused one more attempt.
    pub plateau: Option<f64>,
    /// Milliseconds left of an open circuit's cool-down (`Some(0)`: open, probe due now).
    pub circuit_open_ms: Option<u64>,
    /// Milliseconds left of a `Retry-After` pause.
    pub retry_pause_ms: Option<u64>,
}

impl Controller {
    /// The learned state now.
    pub fn checkpoint(&self, now: Instant) -> Checkpoint {
        let left = |until: Instant| {
            u64::try_from(until.saturating_duration_since(now).as_millis()).unwrap_or(u64::MAX)
        };
        Checkpoint {
            limit: self.limiter.limit,
            capacity: self.limiter.capacity,
            rtt_baseline: self.rtt.baseline,
            plateau: self.limiter.break_point.as_ref().map(|p| p.plateau),
            circuit_open_ms: (self.breaker.state != Circuit::Closed)
                .then(|| left(self.breaker.open_until)),
            retry_pause_ms: self.pacer.retry_pause(now).map(left),
        }
    }

    /// Resumes from a checkpoint: the learned limit without slow start, the RTT baseline, the
    /// break point (held as after a fresh failure, so the first probe above it waits), and what
    /// is left of an open circuit or a pause. Values out of range are ignored.
    pub fn resume(&mut self, now: Instant, checkpoint: &Checkpoint) {
        let max = self.settings.max_limit;
        let valid = |v: f64| v.is_finite() && v > 0.0;
        if valid(checkpoint.limit) {
            self.limiter.limit = checkpoint.limit.clamp(MIN_LIMIT, max);
            self.limiter.slow_start = false;
        }
        self.limiter.capacity = checkpoint.capacity.filter(|c| valid(*c));
        if let Some(baseline) = checkpoint.rtt_baseline.filter(|b| valid(*b)) {
            self.rtt.baseline = Some(baseline);
        }
        if let Some(plateau) = checkpoint.plateau.filter(|p| valid(*p)) {
            self.limiter.break_point = Some(BreakPoint::remembered(now, plateau));
        }
        if let Some(ms) = checkpoint.circuit_open_ms {
            self.breaker.open(now, Duration::from_millis(ms));
            if !self.operator_paused {
                self.set_tier(
                    now,
                    Tier::CircuitOpen,
                    "circuit still open at the last checkpoint".to_owned(),
                );
            }
        } else if !self.operator_paused {
            let rate = self.rate();
            let tier = self.rate_tier(rate);
            if tier != self.tier() {
                self.set_tier(
                    now,
                    tier,
                    format!("resumed from a checkpoint at {rate:.1}/s"),
                );
            }
        }
        if let Some(ms) = checkpoint.retry_pause_ms.filter(|ms| *ms > 0) {
            self.pacer.pause_for(now, Duration::from_millis(ms));
        }
        self.pacer.catch_up(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::controller::ControllerSettings;

    #[tokio::test(start_paused = true)]
    async fn a_resumed_controller_starts_at_the_learned_limit() {
        let now = Instant::now();
        let mut learned = Controller::new(ControllerSettings::default(), now, None, None);
        learned.limiter.limit = 37.0;
        learned.limiter.slow_start = false;
        learned.rtt.baseline = Some(0.020);
        learned.pacer.pause_for(now, Duration::from_secs(3));
        let saved = learned.checkpoint(now);
        let json = serde_json::to_string(&saved).expect("serialises");
        let restored: Checkpoint = serde_json::from_str(&json).expect("parses");
        assert_eq!(restored, saved);

        tokio::time::advance(Duration::from_secs(1)).await;
        let later = Instant::now();
        let mut fresh = Controller::new(ControllerSettings::default(), later, None, None);
        assert!(fresh.limit() < 37, "a fresh controller slow-starts");
        fresh.resume(later, &restored);
        assert_eq!(fresh.limit(), 37);
        assert_eq!(
            fresh.snapshot().rtt_baseline,
            Some(Duration::from_millis(20))
        );
        assert_eq!(fresh.paused_until(), Some(later + Duration::from_secs(3)));
        assert_eq!(fresh.tier(), Tier::Fast, "37 in flight at 20 ms is fast");
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_circuit_stays_open_for_what_was_left() {
        let now = Instant::now();
        let mut learned = Controller::new(ControllerSettings::default(), now, None, None);
        learned.breaker.open(now, Duration::from_secs(5));
        let saved = learned.checkpoint(now);
        assert_eq!(saved.circuit_open_ms, Some(5000));
        let mut fresh = Controller::new(ControllerSettings::default(), now, None, None);
        fresh.resume(now, &saved);
        assert_eq!(fresh.circuit(), Circuit::Open);
        assert_eq!(fresh.tier(), Tier::CircuitOpen);
    }

    #[tokio::test(start_paused = true)]
    async fn garbage_is_ignored() {
        let now = Instant::now();
        let mut fresh = Controller::new(ControllerSettings::default(), now, None, None);
        let before = fresh.limit();
        fresh.resume(
            now,
            &Checkpoint {
                limit: f64::NAN,
                capacity: Some(-1.0),
                rtt_baseline: Some(f64::INFINITY),
                plateau: None,
                circuit_open_ms: None,
                retry_pause_ms: None,
            },
        );
        assert_eq!(fresh.limit(), before);
        assert_eq!(fresh.snapshot().rtt_baseline, None);
    }
}
