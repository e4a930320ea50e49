//! Measurement: the RTT statistics, the window (a cohort of sends judged once all are back) and
//! its verdict, clear or congested. The limit's reaction to a verdict lives in `limit.rs`.

use tokio::time::Instant;

use super::settings::{
    BASELINE_FALL, BASELINE_WEIGHT, DRAIN, MIN_QUEUE, MIN_RTT_SECS, RTT_EWMA_ALPHA,
    RTT_NOISE_ALLOWANCE, RTT_TOLERANCE, STRAGGLER_RTTS, WINDOW_FILL, WINDOW_MAX_FILL,
    WINDOW_MIN_SAMPLES,
};
use super::{Circuit, Controller, MAX_WAIT, Ticket, later};
use std::time::Duration;

/// RTT figures, in seconds.
#[derive(Clone, Debug, Default)]
pub(super) struct RttStats {
    /// The customer system's queue-free RTT.
    pub(super) baseline: Option<f64>,
    /// EWMA of successful attempts' RTT.
    pub(super) recent: Option<f64>,
    /// EWMA of (rtt − recent)²: the RTT's variance.
    variance: f64,
}

impl RttStats {
    fn record(&mut self, rtt: f64) {
        let Some(recent) = self.recent else {
            self.recent = Some(rtt);
            return;
        };
        let deviation = rtt - recent;
        self.variance += RTT_EWMA_ALPHA * (deviation * deviation - self.variance);
        self.recent = Some(recent + RTT_EWMA_ALPHA * deviation);
    }

    /// Standard deviation of one RTT relative to the recent RTT (coefficient of variation).
    fn variation(&self) -> f64 {
        self.recent
            .filter(|recent| *recent > 0.0)
            .map_or(0.0, |recent| self.variance.sqrt() / recent)
    }
}

/// The measurement window: a cohort, the first attempts sent after the window opened, judged
/// once they have all come back.
#[derive(Clone, Debug)]
pub(super) struct Window {
    /// Numbers the windows, so a ticket names the cohort it was counted in.
    epoch: u32,
    /// Attempts sent into the cohort.
    pub(super) sent: u32,
    /// When the cohort's last attempt was sent; later sends belong to no window.
    closed_at: Option<Instant>,
    /// Cohort attempts that have come back, whatever their outcome.
    returned: u32,
    /// Cohort attempts that failed (overload, timeout, connection or server error).
    pub(super) failures: u32,
    /// Cohort successes and the sum of their RTTs (seconds).
    pub(super) samples: u32,
    rtt_sum: f64,
    /// In-flight attempts reached the limit while the cohort was sent.
    pub(super) reached: bool,
    /// The limit was already set anew in this window (a slow-start round trip, or the first
    /// baseline rescaling a start tier's limit): its verdict does not grow it again.
    pub(super) resized: bool,
}

impl Window {
    pub(super) const fn new(epoch: u32) -> Self {
        Self {
            epoch,
            sent: 0,
            closed_at: None,
            returned: 0,
            failures: 0,
            samples: 0,
            rtt_sum: 0.0,
            reached: false,
            resized: false,
        }
    }

    fn mean(&self) -> f64 {
        self.rtt_sum / f64::from(self.samples.max(1))
    }
}

impl Controller {
    /// Opens a new window; attempts counted in the old one no longer count.
    pub(super) fn open_window(&mut self) {
        self.window = Window::new(self.window.epoch.wrapping_add(1));
    }

    /// Counts a send into the window's cohort until the cohort is complete; returns the window
    /// it was counted in, for the ticket. Notes whether the send found the limit reached, for
    /// the window and for slow start's round trip.
    pub(super) fn count_send(&mut self, now: Instant, in_flight: usize) -> Option<u32> {
        let reached = in_flight.saturating_add(1) >= self.limit();
        let round = &mut self.limiter.round_reached_at;
        if reached && round.is_none() {
            *round = Some(now);
        }
        if self.window.closed_at.is_some() {
            return None;
        }
        self.window.sent = self.window.sent.saturating_add(1);
        self.window.reached |= reached;
        if self.window.sent >= self.samples_needed() {
            self.window.closed_at = Some(now);
        }
        Some(self.window.epoch)
    }

    /// Notes that an attempt is back, whatever its outcome: in the window's cohort, or as the
    /// half-open circuit's probe. Returns whether it belongs to the cohort.
    pub(super) fn note_return(&mut self, ticket: Ticket, failed: bool) -> bool {
        match self.breaker.state {
            Circuit::Closed if ticket.window == Some(self.window.epoch) => {
                let w = &mut self.window;
                w.returned = w.returned.saturating_add(1);
                w.failures = w.failures.saturating_add(u32::from(failed));
                true
            }
            Circuit::HalfOpen if self.breaker.is_probe(ticket.sent_at) => {
                self.breaker.probe_in_flight = false;
                false
            }
            Circuit::Closed | Circuit::Open | Circuit::HalfOpen => false,
        }
    }

    pub(super) fn on_success(
        &mut self,
        now: Instant,
        ticket: Ticket,
        in_cohort: bool,
        rtt: Duration,
    ) {
        self.breaker.reset_run();
        let secs = rtt.as_secs_f64().max(MIN_RTT_SECS);
        self.rtt.record(secs);
        self.slow_start_round(now, ticket.sent_at, secs);
        if in_cohort {
            self.window.samples = self.window.samples.saturating_add(1);
            self.window.rtt_sum += secs;
            let samples = self.window.samples;
            if samples >= WINDOW_MIN_SAMPLES && samples.is_power_of_two() {
                self.early_look(now);
            }
        }
        self.judge_window(now);
    }

    /// Looks before the cohort is back, at `WINDOW_MIN_SAMPLES` successes and at every doubling
    /// after that: a large limit over a system that just lost most of its capacity is cut after
    /// a few round trips rather than after hundreds of slow attempts, even when the drop came
    /// after the window's first look. The noise allowance for so few samples is
    /// wide, and these are the cohort's quickest attempts, so only a clear rise qualifies.
    fn early_look(&mut self, now: Instant) {
        let Some(baseline) = self.rtt.baseline else {
            return;
        };
        let (mean, samples) = (self.window.mean(), self.window.samples);
        if self.window.sent > samples && self.congested(mean, baseline, samples) {
            self.window_congested(now, mean, baseline);
        }
    }

    /// Judges the window once its cohort is back (or its stragglers are overdue: an attempt
    /// that is never reported must not stall the controller).
    pub(super) fn judge_window(&mut self, now: Instant) {
        let Some(closed_at) = self.window.closed_at else {
            return;
        };
        let overdue = later(
            closed_at,
            Duration::try_from_secs_f64(self.straggler_wait()).unwrap_or(MAX_WAIT),
        );
        if self.window.returned < self.window.sent && now < overdue {
            return;
        }
        let samples = self.window.samples;
        if samples < WINDOW_MIN_SAMPLES.div_ceil(2).max(1) {
            // Mostly failures or rejections: nothing to learn about the RTT.
            self.open_window();
            return;
        }
        let mean = self.window.mean();
        let Some(baseline) = self.rtt.baseline else {
            self.first_baseline(mean);
            self.window_clear(now, mean, mean);
            return;
        };
        if self.congested(mean, baseline, samples) {
            self.window_congested(now, mean, baseline);
        } else {
            self.window_clear(now, mean, baseline);
        }
    }

    /// How long after the cohort's last send its stragglers are waited for, in seconds.
    fn straggler_wait(&self) -> f64 {
        STRAGGLER_RTTS * self.baseline().max(self.rtt.recent.unwrap_or(0.0))
    }

    /// Cohort size: one round trip of sends (`WINDOW_FILL` × limit), at least
    /// `WINDOW_MIN_SAMPLES`, and more when RTTs are noisy: enough for the noise allowance to
    /// shrink to the RTT tolerance, `(z · cv / tolerance)²` samples, up to `WINDOW_MAX_FILL` ×
    /// limit. A noisy system is judged less often but not on noise.
    pub(super) fn samples_needed(&self) -> u32 {
        let limit = self.limiter.limit;
        let fill = limit * WINDOW_FILL;
        let precise = (RTT_NOISE_ALLOWANCE * self.rtt.variation() / RTT_TOLERANCE).powi(2);
        let wanted = fill.max(precise.min(limit * WINDOW_MAX_FILL));
        // The first window only measures the baseline, at the starting limit, where every
        // round trip of a short cohort is slow: the fewest samples `judge_window` learns from.
        let least = match self.rtt.baseline {
            Some(_) => WINDOW_MIN_SAMPLES,
            None => WINDOW_MIN_SAMPLES.div_ceil(2),
        };
        // `as` saturates; `wanted` is finite (limit ≤ max_limit) and non-negative.
        (wanted.ceil() as u32).max(least).max(1)
    }

    /// Congested: the window's mean RTT is clearly above the baseline (beyond the tolerance and
    /// the noise allowance) and the rise means at least `MIN_QUEUE` attempts waiting (Vegas's
    /// queue estimate `limit × (1 − baseline / rtt)`), so noise at low limits is not congestion.
    fn congested(&self, mean: f64, baseline: f64, samples: u32) -> bool {
        mean > baseline * (1.0 + self.tolerance(samples)) && self.queued(mean, baseline)
    }

    /// An RTT of `rtt` means at least `MIN_QUEUE` of our attempts waiting in the system's queue,
    /// by Vegas's estimate `limit × (1 − baseline / rtt)`.
    pub(super) fn queued(&self, rtt: f64, baseline: f64) -> bool {
        self.concurrency().max(1.0) * (1.0 - baseline / rtt) >= MIN_QUEUE
    }

    /// How far above the baseline a mean of `samples` RTTs may lie and still be no queue.
    pub(super) fn tolerance(&self, samples: u32) -> f64 {
        RTT_TOLERANCE + RTT_NOISE_ALLOWANCE * self.standard_error(samples)
    }

    /// Standard error of a mean of `samples` RTTs, relative to the RTT.
    fn standard_error(&self, samples: u32) -> f64 {
        self.rtt.variation() / f64::from(samples.max(1)).sqrt()
    }

    /// Moves the baseline toward a judged window's mean RTT. A queue-free window always counts,
    /// whatever its verdict, its mean capped at the congestion threshold: leaving out the ones
    /// that came out high would bias the baseline low, and a low baseline breeds false alarms.
    /// The cap bounds how far one window at a real capacity drop can push the baseline up.
    /// Other windows only lower it, and only when clearly faster.
    pub(super) fn update_baseline(&mut self, mean: f64, baseline: f64, congested: bool) {
        let threshold = 1.0 + self.tolerance(self.window.samples);
        let (weight, target) = if self.queue_free() {
            (BASELINE_WEIGHT, mean.min(baseline * threshold))
        } else if !congested && mean < baseline * (2.0 - threshold) {
            (BASELINE_FALL, mean)
        } else {
            return;
        };
        self.rtt.baseline = Some(baseline + weight * (target - baseline));
    }

    /// Attempts in flight at the limit: the rounded limit, or below 1 the paced share of one.
    pub(super) fn concurrency(&self) -> f64 {
        let limit = self.limiter.limit;
        if limit >= 1.0 { limit.round() } else { limit }
    }

    /// The current limit is one the customer system takes without queueing: slow start before
    /// any congestion, at most `DRAIN` × the measured capacity, or one attempt at a time.
    fn queue_free(&self) -> bool {
        self.concurrency() <= 1.0
            || self
                .limiter
                .capacity
                .is_none_or(|capacity| self.limiter.limit <= capacity * DRAIN * 1.001)
    }
}
