//! The per-customer controller: how many deliveries may be in flight to one customer system, and
//! how fast to send, decided from what the system's answers show, not from configuration.
//!
//! It is a pure state machine: no I/O, no clock, no randomness. The caller passes `now` to every
//! call, so tests drive it through simulated time (see `sim.rs`). One controller is a few hundred
//! bytes of fixed-size state; no field grows with traffic. docs/controller.md explains the
//! algorithm, its states and every constant.
//!
//! # Using it
//! Ask [`Controller::permit`] whenever an attempt could start; on [`Permit::Send`] start it and
//! keep the [`Ticket`] that [`Controller::on_send`] returns; when it ends, hand the ticket back
//! to [`Controller::observe`] with the attempt's RTT and how it ended. Ask again after every
//! outcome (room usually appears then) and at the instant a `WaitUntil` names.
//!
//! # Layout
//! - `settings`: the configurable part and every named constant;
//! - `measure`: RTT statistics, the measurement window (a cohort of sends) and its verdict;
//! - `limit`: the concurrency limit: slow start, growth, decreases;
//! - `plateau`: memory of the break point (where the system last refused), holds and probes;
//! - `pacer`: spacing between sends and `Retry-After` pauses;
//! - `breaker`: the circuit breaker;
//! - `tiers`: the speed label derived from the rate, with hysteresis.

mod breaker;
mod checkpoint;
mod limit;
mod measure;
mod pacer;
mod plateau;
mod settings;
mod signal;
mod tiers;

#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_offered;
#[cfg(test)]
mod tests_probe;
#[cfg(test)]
mod tests_sim;

use std::time::Duration;

use tokio::time::Instant;

pub use crate::telemetry::customer_stats::{Circuit, Tier};
use breaker::Breaker;
pub use checkpoint::Checkpoint;
use limit::Limiter;
use measure::{RttStats, Window};
use pacer::Pacer;
pub use settings::ControllerSettings;
use settings::{INITIAL_LIMIT, MAX_WAIT, MIN_LIMIT, RECHECK};
pub use signal::Signal;
pub use tiers::TierChange;
use tiers::TierTrack;

/// What the caller may do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Permit {
    /// Start one attempt now (and call [`Controller::on_send`]).
    Send,
    /// Ask again at this instant, or earlier when an attempt completes.
    WaitUntil(Instant),
}

/// One attempt the controller let go, handed back to [`Controller::observe`] when it ends. It
/// carries the attempt's real send time and the measurement window it was counted in, so the
/// controller never has to infer either from the RTT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use = "hand the ticket back to Controller::observe when the attempt ends"]
pub struct Ticket {
    sent_at: Instant,
    /// The window whose cohort this attempt belongs to, if any.
    window: Option<u32>,
    /// Attempts already in flight when this one was sent: if the system refuses it, that many
    /// is what it took.
    in_flight: usize,
}

impl Ticket {
    /// When the controller let the attempt go.
    pub fn sent_at(&self) -> Instant {
        self.sent_at
    }
}

/// The controller's state at a glance, for stats and dashboards.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    /// Concurrency limit.
    pub limit: usize,
    /// Pace, deliveries/s (see [`Controller::rate`]).
    pub rate: f64,
    /// The customer system's own queue-free RTT, once measured.
    pub rtt_baseline: Option<Duration>,
    /// Recent RTT of successful attempts (EWMA), once measured.
    pub rtt_recent: Option<Duration>,
    /// Current tier.
    pub tier: Tier,
    /// Circuit breaker state.
    pub circuit: Circuit,
    /// End of the latest `Retry-After` pause (see [`Controller::paused_until`]).
    pub paused_until: Option<Instant>,
    /// The latest tier change.
    pub last_tier_change: Option<TierChange>,
}

/// One customer system's controller. See docs/controller.md for the algorithm.
#[derive(Clone, Debug)]
pub struct Controller {
    settings: ControllerSettings,
    /// The customer's hard ceiling, deliveries/s.
    ceiling: Option<f64>,
    limiter: Limiter,
    rtt: RttStats,
    window: Window,
    pacer: Pacer,
    operator_paused: bool,
    breaker: Breaker,
    tiers: TierTrack,
}

impl Controller {
    /// A controller for one customer system. `ceiling`: its max deliveries/s (`None`, or a value
    /// that is not a positive number, means no ceiling). `start_tier`: a configured starting tier;
    /// `None` starts fast, in slow start from one attempt at a time. A rate tier starts at that
    /// tier's lowest rate and slow-starts up to the next tier's threshold; `Paused` starts
    /// operator-paused; `CircuitOpen` starts with the circuit open for one cool-down.
    pub fn new(
        settings: ControllerSettings,
        now: Instant,
        ceiling: Option<f64>,
        start_tier: Option<Tier>,
    ) -> Self {
        let mut controller = Self {
            ceiling: sanitize_ceiling(ceiling),
            limiter: Limiter::new(INITIAL_LIMIT.max(MIN_LIMIT), now),
            rtt: RttStats::default(),
            window: Window::new(0),
            pacer: Pacer::new(now),
            operator_paused: false,
            breaker: Breaker::new(now),
            tiers: TierTrack::new(),
            settings,
        };
        controller.apply_start_tier(now, start_tier);
        controller
    }

    /// Changes the customer's ceiling, deliveries/s (`None` or a non-positive value: none).
    pub fn set_ceiling(&mut self, ceiling: Option<f64>) {
        self.ceiling = sanitize_ceiling(ceiling);
    }

    /// Operator pause: while paused the tier is `Paused` and [`Self::permit`] never says `Send`.
    /// Outcomes of attempts already under way are still observed.
    pub fn set_paused(&mut self, paused: bool, now: Instant) {
        if paused == self.operator_paused {
            return;
        }
        self.operator_paused = paused;
        if paused {
            self.set_tier(now, Tier::Paused, "paused by operator".to_owned());
        } else if self.breaker.state == Circuit::Closed {
            let tier = self.rate_tier(self.rate());
            let reason = format!("resumed by operator at {:.1}/s", self.rate());
            self.set_tier(now, tier, reason);
        } else {
            let reason = "resumed by operator; circuit still open".to_owned();
            self.set_tier(now, Tier::CircuitOpen, reason);
        }
        self.pacer.catch_up(now);
    }

    /// May one more attempt start now, with `in_flight` attempts under way? `Send` only when
    /// not paused, no `Retry-After` pause is active, the circuit allows it (open: no; half-open:
    /// one probe at a time), `in_flight < limit()` and the pacing interval has passed. Otherwise
    /// `WaitUntil` the earliest instant worth asking again. When the wait is for an attempt to
    /// complete (limit reached, probe in flight) or for the operator, that instant is only a
    /// short recheck away: the caller should also ask again whenever an attempt completes.
    pub fn permit(&self, now: Instant, in_flight: usize) -> Permit {
        if self.operator_paused {
            return Permit::WaitUntil(later(now, RECHECK));
        }
        let mut blocked_until = self.pacer.retry_pause(now);
        match self.breaker.state {
            Circuit::Open if self.breaker.open_until > now => {
                blocked_until = blocked_until.max(Some(self.breaker.open_until));
            }
            Circuit::Open | Circuit::HalfOpen => {
                return self.breaker.probe_permit(now, blocked_until);
            }
            Circuit::Closed => {}
        }
        if let Some(until) = blocked_until {
            return Permit::WaitUntil(until);
        }
        if in_flight >= self.limit() {
            return Permit::WaitUntil(later(now, RECHECK));
        }
        self.pacer.permit(now)
    }

    /// Records that an attempt started; call it right after [`Permit::Send`], with the same
    /// `in_flight` passed to [`Self::permit`] (not counting this attempt). The ticket goes back
    /// to [`Self::observe`] when the attempt ends.
    pub fn on_send(&mut self, now: Instant, in_flight: usize) -> Ticket {
        self.pacer.expire_retry_pause(now);
        let mut ticket = Ticket {
            sent_at: now,
            window: None,
            in_flight,
        };
        match self.breaker.state {
            Circuit::Open if now < self.breaker.open_until => {}
            Circuit::Open | Circuit::HalfOpen => self.breaker.probe_sent(now),
            Circuit::Closed => {
                ticket.window = self.count_send(now, in_flight);
                if let Some(point) = &mut self.limiter.break_point {
                    point.on_send();
                }
                let interval = self.pacing_interval();
                self.pacer.advance(now, interval);
            }
        }
        ticket
    }

    /// Records one finished attempt: its ticket, its round-trip time (measured around the
    /// request itself; `None` when it never reached the customer system) and how it ended.
    /// Every attempt counts, retries included. An attempt that was never sent, or ended
    /// `Rejected`, moves nothing: it only marks the attempt as back (a window waits for its
    /// attempts; a half-open circuit may send its next probe). The customer system said nothing
    /// about its load, so the controller must not react to, say, our own store's hiccup.
    pub fn observe(&mut self, now: Instant, ticket: Ticket, rtt: Option<Duration>, signal: Signal) {
        let failure = signal.failure();
        let in_cohort = self.note_return(ticket, failure.is_some());
        let Some(rtt) = rtt.filter(|_| signal != Signal::Rejected) else {
            return;
        };
        self.pacer.expire_retry_pause(now);
        if let Signal::Overload {
            retry_after: Some(wait),
        } = signal
        {
            self.pacer.pause_for(now, wait);
        }
        match (self.breaker.state, failure) {
            (Circuit::Closed, None) => self.on_success(now, ticket, in_cohort, rtt),
            (Circuit::Closed, Some(kind)) => {
                self.on_failure(now, ticket, kind, signal);
                if self.breaker.state == Circuit::Closed {
                    self.judge_window(now);
                }
            }
            (Circuit::HalfOpen, outcome) => self.on_probe(now, ticket.sent_at, outcome),
            // An attempt sent before the circuit opened: the circuit has already reacted.
            (Circuit::Open, _) => {}
        }
        self.update_rate_tier(now);
    }

    /// Current concurrency limit (at least 1).
    pub fn limit(&self) -> usize {
        // `as` saturates; the limit is finite and at most `max_limit`.
        self.limiter.limit.round().max(1.0) as usize
    }

    /// Current pace, deliveries/s: the limit divided by the RTT baseline (what `limit` attempts
    /// deliver per second when each takes the baseline RTT), at least the minimum rate, never
    /// above the ceiling. The pacer spaces sends a little faster than this, never above the
    /// ceiling.
    pub fn rate(&self) -> f64 {
        self.rate_of(self.limiter.limit)
    }

    /// Current tier.
    pub fn tier(&self) -> Tier {
        self.tiers.current
    }

    /// Circuit breaker state. It stays `Open` through the cool-down until the probe is sent.
    pub fn circuit(&self) -> Circuit {
        self.breaker.state
    }

    /// End of the active `Retry-After` pause. Cleared when the controller next sees a later time
    /// (a send or an outcome), so it may name an instant just past.
    pub fn paused_until(&self) -> Option<Instant> {
        self.pacer.retry_until
    }

    /// Tier changes since the last call, oldest first (at most 16 are kept between calls).
    pub fn take_tier_changes(&mut self) -> Vec<TierChange> {
        std::mem::take(&mut self.tiers.changes)
    }

    /// The controller's state at a glance.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            limit: self.limit(),
            rate: self.rate(),
            rtt_baseline: self.rtt.baseline.and_then(duration),
            rtt_recent: self.rtt.recent.and_then(duration),
            tier: self.tier(),
            circuit: self.circuit(),
            paused_until: self.paused_until(),
            last_tier_change: self.tiers.last.clone(),
        }
    }
}

/// `t + d`, with `d` capped so that the sum cannot overflow.
fn later(t: Instant, d: Duration) -> Instant {
    // Falls back to `t` only if an Instant a day later is unrepresentable, which it never is.
    t.checked_add(d.min(MAX_WAIT)).unwrap_or(t)
}

fn duration(secs: f64) -> Option<Duration> {
    Duration::try_from_secs_f64(secs).ok()
}

fn sanitize_ceiling(ceiling: Option<f64>) -> Option<f64> {
    ceiling.filter(|c| c.is_finite() && *c > 0.0)
}
