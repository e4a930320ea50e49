//! Memory of the break point: where the customer system last refused (a failure), how long to
//! stay below it, and the budget that makes probes above it rare.
//!
//! CUBIC's model, not BBR's: after a failure the limit returns to just under the break point and
//! stays there (CUBIC's plateau around W_max); it goes above only in a probe, one measurement
//! window long. BBR's probe cycles probe on a fixed schedule whatever the last probe found, which
//! against a hard cap that answers 429 with `Retry-After` buys a pause every cycle. Here a probe
//! must wait for the hold (which doubles after each failed probe, and is at least a multiple of
//! the `Retry-After` the system asked for) and for its budget: probes cost at most
//! `PROBE_SHARE` of the attempts sent, so thousands of tiny systems cannot each spend several
//! percent of their requests on probing. A probe that comes back clear moves the break point up
//! and the next may follow at once (the system really gained capacity).

use std::time::Duration;

use tokio::time::Instant;

use super::later;
use super::settings::{BREAK_HOLD, MAX_BREAK_HOLD, PROBE_SHARE, RETRY_AFTER_HOLD};

/// The last break point and the probing above it.
#[derive(Clone, Debug)]
pub(super) struct BreakPoint {
    /// Attempts in flight the system took when it last refused one more: the limit stays at or
    /// below this outside probes.
    pub(super) plateau: f64,
    /// No probe before this.
    hold_until: Instant,
    /// The current hold: `BREAK_HOLD`, doubled after each failed probe.
    hold: Duration,
    /// Attempts a probe may cost: `PROBE_SHARE` of every send, spent by a probe window.
    credit: f64,
    /// The current window is a probe above the plateau.
    pub(super) probing: bool,
    /// When the failure that set the plateau was seen: failures of attempts sent before it
    /// belong to the same episode and can only lower the plateau.
    since: Instant,
}

impl BreakPoint {
    /// A failure of an attempt sent with `in_flight` others under way. Returns the new memory.
    pub(super) fn on_failure(
        last: Option<Self>,
        now: Instant,
        sent_at: Instant,
        in_flight: usize,
        retry_after: Option<Duration>,
    ) -> Self {
        // `as` is exact for any realistic count; the limit is at most `max_limit`.
        let took = (in_flight as f64).max(1.0);
        let Some(mut last) = last else {
            return Self::fresh(now, took, BREAK_HOLD, retry_after);
        };
        if sent_at < last.since {
            // The same episode: an attempt sent before the failure that set the plateau.
            last.plateau = last.plateau.min(took);
            last.extend_hold(now, retry_after);
            return last;
        }
        let hold = if last.probing {
            last.hold.saturating_mul(2).min(MAX_BREAK_HOLD)
        } else {
            BREAK_HOLD
        };
        Self::fresh(now, took, hold, retry_after)
    }

    /// A break point carried over from a checkpoint: held as after a fresh failure, so a new
    /// owner does not probe above it at once.
    pub(super) fn remembered(now: Instant, plateau: f64) -> Self {
        Self::fresh(now, plateau, BREAK_HOLD, None)
    }

    fn fresh(now: Instant, plateau: f64, hold: Duration, retry_after: Option<Duration>) -> Self {
        let mut point = Self {
            plateau,
            hold_until: now,
            hold,
            credit: 0.0,
            probing: false,
            since: now,
        };
        point.extend_hold(now, retry_after);
        point
    }

    /// The hold runs from `now`, and lasts at least `RETRY_AFTER_HOLD` times the system's own
    /// `Retry-After`: "not above L for a long while".
    fn extend_hold(&mut self, now: Instant, retry_after: Option<Duration>) {
        let asked =
            retry_after.map_or(Duration::ZERO, |wait| wait.saturating_mul(RETRY_AFTER_HOLD));
        self.hold = self.hold.max(asked).min(MAX_BREAK_HOLD);
        self.hold_until = self.hold_until.max(later(now, self.hold));
    }

    /// One attempt sent at or below the plateau earns its share of a probe.
    pub(super) fn on_send(&mut self) {
        if !self.probing {
            // Bounded, so a long quiet spell does not save up for a volley of probes.
            self.credit = (self.credit + PROBE_SHARE).min(MAX_CREDIT);
        }
    }

    /// May a probe window of `cohort` attempts go above the plateau now? If so it starts.
    pub(super) fn try_probe(&mut self, now: Instant, cohort: f64) -> bool {
        if self.probing || now < self.hold_until || self.credit < cohort {
            return false;
        }
        self.credit -= cohort;
        self.probing = true;
        true
    }

    /// The probe window came back clear at `limit`: if it reached the limit, the system takes
    /// it (otherwise it tested nothing). The probe was free, and the next may follow at once.
    pub(super) fn probe_cleared(&mut self, limit: f64, cohort: f64, reached: bool) {
        if self.probing {
            if reached {
                self.plateau = self.plateau.max(limit);
                self.hold = BREAK_HOLD;
            }
            self.probing = false;
            self.credit = (self.credit + cohort).min(MAX_CREDIT);
        }
    }

    /// The probe window's RTT rose: no failure, but no room either. Hold as after a failure.
    pub(super) fn probe_congested(&mut self, now: Instant) {
        if self.probing {
            self.probing = false;
            self.hold = self.hold.saturating_mul(2).min(MAX_BREAK_HOLD);
            self.hold_until = later(now, self.hold);
        }
    }
}

/// Most probe credit ever saved, in attempts: a few probe windows' worth at large limits.
const MAX_CREDIT: f64 = 1000.0;
