//! The circuit breaker: a run of failures opens it; after a cool-down one probe at a time goes;
//! a successful probe closes it and slow start begins again, a failed one doubles the cool-down.

use std::time::Duration;

use tokio::time::Instant;

use super::settings::{CIRCUIT_COOLDOWN, CIRCUIT_MAX_COOLDOWN, PROBE_TIMEOUT, RECHECK};
use super::signal::Failure;
use super::{Circuit, Controller, Permit, Tier, later};

/// Circuit breaker state.
#[derive(Clone, Debug)]
pub(super) struct Breaker {
    pub(super) state: Circuit,
    /// Consecutive failures by kind, while closed.
    run: [u32; 4],
    /// When the run's first failure was seen. Later failures extend the run only if their
    /// attempt was sent after that: a burst of failures for attempts already in flight (a queue
    /// that overflowed once) is one event, not a dead system.
    run_since: Option<Instant>,
    opened_at: Instant,
    pub(super) open_until: Instant,
    /// Cool-down after the next failed probe.
    next_cooldown: Duration,
    pub(super) probe_in_flight: bool,
    probe_sent_at: Instant,
    /// Rate before opening: slow start after closing stops at half of it.
    rate_before_open: f64,
}

impl Breaker {
    pub(super) const fn new(now: Instant) -> Self {
        Self {
            state: Circuit::Closed,
            run: [0; 4],
            run_since: None,
            opened_at: now,
            open_until: now,
            next_cooldown: CIRCUIT_COOLDOWN,
            probe_in_flight: false,
            probe_sent_at: now,
            rate_before_open: 0.0,
        }
    }

    /// Counts a failure toward the run, if it extends it (see `run_since`).
    pub(super) fn count_failure(&mut self, now: Instant, sent_at: Instant, kind: Failure) {
        let extends = self.run_since.is_none_or(|since| sent_at >= since);
        if extends {
            self.run_since.get_or_insert(now);
            let slot = &mut self.run[kind.index()];
            *slot = slot.saturating_add(1);
        }
    }

    pub(super) fn reset_run(&mut self) {
        self.run = [0; 4];
        self.run_since = None;
    }

    pub(super) fn run_total(&self) -> u32 {
        self.run.iter().fold(0, |sum, n| sum.saturating_add(*n))
    }

    /// "5 consecutive connection errors" or "5 consecutive failures (3 timeouts, 2 server errors)".
    fn describe_run(&self) -> String {
        let total = self.run_total();
        let kinds: Vec<(Failure, u32)> = Failure::ALL
            .iter()
            .map(|kind| (*kind, self.run[kind.index()]))
            .filter(|(_, n)| *n > 0)
            .collect();
        if let [(kind, _)] = kinds.as_slice() {
            return format!("{total} consecutive {}", kind.name(total != 1));
        }
        let parts: Vec<String> = kinds
            .iter()
            .map(|(kind, n)| format!("{n} {}", kind.name(*n != 1)))
            .collect();
        format!("{total} consecutive failures ({})", parts.join(", "))
    }

    /// The permit once the cool-down has passed: one probe at a time, whatever the limit.
    pub(super) fn probe_permit(&self, now: Instant, blocked_until: Option<Instant>) -> Permit {
        let probe_lost = later(self.probe_sent_at, PROBE_TIMEOUT);
        if let Some(until) = blocked_until {
            Permit::WaitUntil(until)
        } else if self.probe_in_flight && now < probe_lost {
            Permit::WaitUntil(later(now, RECHECK).min(probe_lost))
        } else {
            Permit::Send
        }
    }

    /// A probe went: the circuit is half-open until its outcome.
    pub(super) fn probe_sent(&mut self, now: Instant) {
        self.state = Circuit::HalfOpen;
        self.probe_in_flight = true;
        self.probe_sent_at = now;
    }

    /// Is an outcome the half-open circuit's probe? Only the probe can have been sent since the
    /// circuit opened; anything older was already in flight then.
    pub(super) fn is_probe(&self, sent_at: Instant) -> bool {
        self.probe_in_flight && sent_at >= self.opened_at
    }

    pub(super) fn open(&mut self, now: Instant, cooldown: Duration) {
        self.state = Circuit::Open;
        self.reset_run();
        self.opened_at = now;
        self.open_until = later(now, cooldown);
        self.next_cooldown = cooldown.saturating_mul(2).min(CIRCUIT_MAX_COOLDOWN);
        self.probe_in_flight = false;
    }
}

impl Controller {
    pub(super) fn open_circuit(&mut self, now: Instant) {
        let reason = format!("circuit opened after {}", self.breaker.describe_run());
        self.breaker.rate_before_open = self.rate();
        self.breaker.open(now, CIRCUIT_COOLDOWN);
        if !self.operator_paused {
            self.set_tier(now, Tier::CircuitOpen, reason);
        }
    }

    /// The probe's outcome (`note_return` has already freed its slot): success closes the
    /// circuit, failure reopens it for a longer cool-down.
    pub(super) fn on_probe(&mut self, now: Instant, sent_at: Instant, outcome: Option<Failure>) {
        if sent_at < self.breaker.opened_at {
            return;
        }
        match outcome {
            None => self.close_circuit(now),
            Some(_) => {
                let cooldown = self.breaker.next_cooldown;
                self.breaker.open(now, cooldown);
            }
        }
    }

    fn close_circuit(&mut self, now: Instant) {
        let b = &mut self.breaker;
        b.state = Circuit::Closed;
        b.reset_run();
        b.probe_in_flight = false;
        b.next_cooldown = CIRCUIT_COOLDOWN;
        let until = b.rate_before_open / 2.0;
        self.restart_slow_start(now, until);
        self.pacer.reset(now);
        if !self.operator_paused {
            let tier = self.rate_tier(self.rate());
            let reason = format!(
                "circuit closed after a successful probe; restarting at {:.1}/s",
                self.rate()
            );
            self.set_tier(now, tier, reason);
        }
    }
}
