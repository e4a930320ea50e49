//! Spacing between sends, and the `Retry-After` pause: the two waits that are about time, not
//! about attempts in flight.

use std::time::Duration;

use tokio::time::Instant;

use super::settings::{MAX_RETRY_AFTER, PACING_BURST};
use super::{Permit, later};

/// The pacer and the active `Retry-After` pause.
#[derive(Clone, Debug)]
pub(super) struct Pacer {
    /// Earliest instant the next attempt may go.
    next: Instant,
    /// End of the latest `Retry-After` pause, until a later instant has been seen.
    pub(super) retry_until: Option<Instant>,
}

impl Pacer {
    pub(super) const fn new(now: Instant) -> Self {
        Self {
            next: now,
            retry_until: None,
        }
    }

    /// `Send` once the pacing interval has passed.
    pub(super) fn permit(&self, now: Instant) -> Permit {
        if self.next > now {
            Permit::WaitUntil(self.next)
        } else {
            Permit::Send
        }
    }

    /// Moves the pacer one interval on, keeping at most `PACING_BURST` of unused credit.
    pub(super) fn advance(&mut self, now: Instant, interval: Duration) {
        let credit_floor = now.checked_sub(PACING_BURST).unwrap_or(now);
        self.next = later(self.next.max(credit_floor), interval);
    }

    /// No credit saved from before `now` (after a pause, or when the circuit closes).
    pub(super) fn catch_up(&mut self, now: Instant) {
        self.next = self.next.max(now);
    }

    /// Sends may go at once (the circuit just closed).
    pub(super) fn reset(&mut self, now: Instant) {
        self.next = now;
    }

    /// The active `Retry-After` pause's end, if it lies after `now`.
    pub(super) fn retry_pause(&self, now: Instant) -> Option<Instant> {
        self.retry_until.filter(|until| *until > now)
    }

    /// Nothing is sent before `now + wait` (capped at `MAX_RETRY_AFTER`); a shorter pause never
    /// shortens a longer one.
    pub(super) fn pause_for(&mut self, now: Instant, wait: Duration) {
        let until = later(now, wait.min(MAX_RETRY_AFTER));
        self.retry_until = self.retry_until.max(Some(until));
    }

    pub(super) fn expire_retry_pause(&mut self, now: Instant) {
        if self.retry_until.is_some_and(|until| until <= now) {
            self.retry_until = None;
        }
    }
}
