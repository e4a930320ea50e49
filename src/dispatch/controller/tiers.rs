//! Tiers: the speed label (fast, medium, slow; paused, circuit-open) derived from the rate, with
//! hysteresis so a noisy RTT does not make it flap. Each change carries a reason for people.

use std::time::Duration;

use tokio::time::Instant;

use super::Controller;
use super::settings::{DEMOTE_AFTER, MAX_PENDING_TIER_CHANGES, PROMOTE_AFTER, TIER_HYSTERESIS};
use crate::telemetry::customer_stats::Tier;

/// One tier change, for the caller to log and count.
#[derive(Clone, Debug, PartialEq)]
pub struct TierChange {
    /// When it happened.
    pub at: Instant,
    /// The tier before.
    pub from: Tier,
    /// The tier after.
    pub to: Tier,
    /// Why, for people: "rate 4.2/s below medium threshold 10/s".
    pub reason: String,
}

/// Which way a pending tier move goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Move {
    Promote,
    Demote,
}

/// The tier and its hysteresis.
#[derive(Clone, Debug)]
pub(super) struct TierTrack {
    pub(super) current: Tier,
    /// A pending rate-tier move, and since when the rate has been beyond the band for it.
    pending: Option<(Move, Instant)>,
    pub(super) last: Option<TierChange>,
    pub(super) changes: Vec<TierChange>,
}

impl TierTrack {
    pub(super) const fn new() -> Self {
        Self {
            current: Tier::Fast,
            pending: None,
            last: None,
            changes: Vec::new(),
        }
    }
}

impl Controller {
    pub(super) fn rate_tier(&self, rate: f64) -> Tier {
        if rate >= self.settings.fast_threshold {
            Tier::Fast
        } else if rate >= self.settings.medium_threshold {
            Tier::Medium
        } else {
            Tier::Slow
        }
    }

    /// Lowest rate of a rate tier.
    fn threshold(&self, tier: Tier) -> f64 {
        match tier {
            Tier::Fast => self.settings.fast_threshold,
            Tier::Medium => self.settings.medium_threshold,
            Tier::Slow | Tier::Paused | Tier::CircuitOpen => 0.0,
        }
    }

    /// Moves between rate tiers with hysteresis: a tier the rate is clearly in (beyond the band)
    /// for long enough (`demote_after` down, `promote_after` up).
    pub(super) fn update_rate_tier(&mut self, now: Instant) {
        let current = self.tiers.current;
        let Some(rank) = current.rank() else { return };
        let rate = self.rate();
        let h = TIER_HYSTERESIS;
        let down = self.rate_tier(rate / (1.0 - h).max(f64::MIN_POSITIVE));
        let up = self.rate_tier(rate / (1.0 + h));
        let target = if down.rank() < Some(rank) {
            down
        } else if up.rank() > Some(rank) {
            up
        } else {
            self.tiers.pending = None;
            return;
        };
        let direction = if target.rank() > Some(rank) {
            Move::Promote
        } else {
            Move::Demote
        };
        if direction == Move::Demote && self.limiter.slow_start {
            // Slow start begins low by design: a rate still climbing is not a drop.
            self.tiers.pending = None;
            return;
        }
        let since = match self.tiers.pending {
            Some((pending, since)) if pending == direction => since,
            _ => {
                self.tiers.pending = Some((direction, now));
                now
            }
        };
        let dwell = if direction == Move::Promote && !self.limiter.slow_start {
            PROMOTE_AFTER
        } else {
            DEMOTE_AFTER
        };
        if now.saturating_duration_since(since) >= dwell {
            let reason = self.tier_reason(current, target, rate, dwell);
            self.set_tier(now, target, reason);
        }
    }

    fn tier_reason(&self, from: Tier, to: Tier, rate: f64, dwell: Duration) -> String {
        if to.rank() < from.rank() {
            format!(
                "rate {rate:.1}/s below {from} threshold {}/s",
                self.threshold(from)
            )
        } else {
            format!(
                "rate {rate:.1}/s above {to} threshold {}/s for {}s",
                self.threshold(to),
                dwell.as_secs()
            )
        }
    }

    pub(super) fn set_tier(&mut self, now: Instant, to: Tier, reason: String) {
        let from = self.tiers.current;
        self.tiers.pending = None;
        if from == to {
            return;
        }
        let change = TierChange {
            at: now,
            from,
            to,
            reason,
        };
        self.tiers.current = to;
        if self.tiers.changes.len() >= MAX_PENDING_TIER_CHANGES {
            self.tiers.changes.remove(0);
        }
        self.tiers.changes.push(change.clone());
        self.tiers.last = Some(change);
    }
}
